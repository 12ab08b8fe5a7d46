# SPDX-License-Identifier: MIT
"""
Build ``hgsmi._native``: cffi out-of-line API mode over the C core.

setup.py names this file in ``cffi_modules`` ("native/ffi_build.py:ffibuilder").
The C sources in ``native/src`` are compiled into the extension, so Python
needs no installed libhgsmi.  The declarations cffi sees are in
``native/hgsmi.cdef``.

Environment:

``HGSMI_SANITIZE``
    Comma-separated sanitizers (``address,undefined``, ``thread``, ...) to
    build the extension with.  Loading an ASan-built extension into an
    uninstrumented python needs ``LD_PRELOAD=$(gcc -print-file-name=libasan.so)``.
``HGSMI_USE_SYSTEM_LIB``
    ``1``: compile no C sources and link against an installed ``libhgsmi``
    instead (``HGSMI_LIB_DIR`` adds a library directory and its rpath).
``HGSMI_NO_WERROR``
    ``1``: drop ``-Werror`` (for a compiler or cffi that warns where gcc 12
    and cffi 2 do not).

Run directly (``python native/ffi_build.py``) it runs ``setup.py build_ext
--inplace``, which puts ``hgsmi/_native*.so`` into the source tree.  The
helpers are pure functions, importable without building, so
tests/test_ffi_build.py can check them.
"""

import glob
import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

MODULE = "hgsmi._native"
CDEF_PATH = os.path.join(HERE, "hgsmi.cdef")
MAP_PATH = os.path.join(HERE, "hgsmi.map")
HEADER_PATH = os.path.join(HERE, "include", "hgsmi.h")
LIBRARIES = ["rt", "pthread"]
# The same warnings as native/Makefile.  -Werror too: cffi's generated module
# builds clean with these under gcc 12 and cffi 2.0.  HGSMI_NO_WERROR=1 drops
# it for a compiler or cffi that warns where ours does not.
COMPILE_ARGS = ["-std=c11", "-Wall", "-Wextra", "-Werror"]
KNOWN_SANITIZERS = frozenset(
    ["address", "undefined", "thread", "leak", "pointer-compare",
     "pointer-subtract", "float-divide-by-zero", "bounds", "alignment"]
)


def strip_c_comments(text):
    """Return C text without /* */ and // comments (strings are not parsed)."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def declared_functions(text):
    """
    Names of the ``hgsmi_*`` functions declared in C text (hgsmi.h or the
    cdef): identifiers directly followed by ``(`` outside comments.  The
    ``(*hgsmi_handler_fn)`` typedef does not count.
    """
    return set(re.findall(r"\b(hgsmi_[A-Za-z0-9_]+)\s*\(", strip_c_comments(text)))


def map_symbols(text):
    """The symbols of every ``global:`` list in a linker version script."""
    names = set()
    for block in re.findall(r"global\s*:(.*?)(?:local\s*:|\})",
                            strip_c_comments(text), flags=re.S):
        names.update(s.strip() for s in block.split(";") if s.strip())
    return names


def map_nodes(text):
    """``(major, minor)`` of every ``HGSMI_<major>.<minor>`` node a linker
    version script defines, in order (a suffix after the minor is allowed)."""
    return [(int(a), int(b)) for a, b in
            re.findall(r"\bHGSMI_(\d+)\.(\d+)\w*\s*\{", strip_c_comments(text))]


def header_version(text):
    """``"major.minor.patch"`` from the HGSMI_VERSION_* macros of hgsmi.h."""
    parts = []
    for part in ("MAJOR", "MINOR", "PATCH"):
        m = re.search(rf"^#define\s+HGSMI_VERSION_{part}\s+(\d+)", text, re.M)
        if m is None:
            raise ValueError(f"hgsmi.h defines no HGSMI_VERSION_{part}")
        parts.append(m.group(1))
    return ".".join(parts)


def sanitize_flags(value):
    """
    Compiler and linker flags for a comma-separated list of sanitizers.

    ``""`` or ``None`` gives no flags.  Unknown names and thread combined
    with address or leak raise ValueError (gcc refuses those mixes).
    """
    names = [n.strip() for n in (value or "").split(",") if n.strip()]
    if not names:
        return []
    unknown = sorted(set(names) - KNOWN_SANITIZERS)
    if unknown:
        raise ValueError("unknown sanitizer(s): " + ", ".join(unknown))
    if "thread" in names and {"address", "leak"} & set(names):
        raise ValueError("thread cannot be combined with address or leak")
    return [
        "-fsanitize=" + ",".join(names),
        "-fno-omit-frame-pointer",
        "-fno-sanitize-recover=all",
    ]


def env_flag(value):
    """True for 1/yes/true/on (any case), False for empty and 0/no/false/off."""
    v = (value or "").strip().lower()
    if v in ("", "0", "no", "false", "off"):
        return False
    if v in ("1", "yes", "true", "on"):
        return True
    raise ValueError(f"not a boolean: {value!r}")


def source_path(path, base=ROOT, cwd=None):
    """
    ``path`` relative to ``base`` when the build runs from ``base`` (setuptools
    wants relative sources there), else absolute.
    """
    cwd = os.path.abspath(cwd if cwd is not None else os.getcwd())
    path = os.path.abspath(path)
    if cwd == os.path.abspath(base):
        return os.path.relpath(path, base)
    return path


def c_sources(src_dir=None, cwd=None):
    """Every ``*.c`` of ``src_dir`` (native/src), sorted, as source_path() gives them."""
    if src_dir is None:
        src_dir = os.path.join(HERE, "src")
    return [source_path(p, cwd=cwd)
            for p in sorted(glob.glob(os.path.join(src_dir, "*.c")))]


def header_files(cwd=None):
    """Headers the extension depends on (rebuild when one changes)."""
    pats = [os.path.join(HERE, "include", "*.h"),
            os.path.join(HERE, "include", "*", "*.h"),
            os.path.join(HERE, "src", "*.h")]
    return [source_path(p, cwd=cwd)
            for pat in pats for p in sorted(glob.glob(pat))] + [
        source_path(CDEF_PATH, cwd=cwd)]


def read_text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def extension_kwargs(environ=None, cwd=None):
    """The keyword arguments of set_source() for this environment."""
    environ = os.environ if environ is None else environ
    san = sanitize_flags(environ.get("HGSMI_SANITIZE"))
    cflags = list(COMPILE_ARGS)
    if env_flag(environ.get("HGSMI_NO_WERROR")):
        cflags.remove("-Werror")
    kwargs = {
        "include_dirs": [source_path(os.path.join(HERE, "include"), cwd=cwd)],
        "extra_compile_args": cflags + san,
        "extra_link_args": list(san),
        "libraries": list(LIBRARIES),
        "depends": header_files(cwd=cwd),
    }
    if env_flag(environ.get("HGSMI_USE_SYSTEM_LIB")):
        kwargs["sources"] = []
        kwargs["libraries"] = ["hgsmi"] + kwargs["libraries"]
        libdir = environ.get("HGSMI_LIB_DIR")
        if libdir:
            kwargs["library_dirs"] = [libdir]
            kwargs["runtime_library_dirs"] = [libdir]
    else:
        kwargs["sources"] = c_sources(cwd=cwd)
    return kwargs


def make_ffibuilder(environ=None, cwd=None):
    ffi = FFI()
    ffi.cdef(read_text(CDEF_PATH))
    ffi.set_source(MODULE, '#include "hgsmi.h"\n',
                   **extension_kwargs(environ, cwd))
    return ffi


ffibuilder = make_ffibuilder()

if __name__ == "__main__":
    # One build path only: the same build_ext --inplace that `make ext` runs,
    # so hgsmi/ never holds two differently named modules.
    import subprocess
    import sys

    sys.exit(subprocess.call(
        [sys.executable, "setup.py", "build_ext", "--inplace"], cwd=ROOT))
