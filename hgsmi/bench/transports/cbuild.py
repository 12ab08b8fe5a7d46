# SPDX-License-Identifier: MIT
"""
The bench's C programs (``hgsmi/bench/c/*.c``, shipped as package data),
compiled on first use into a per-user cache, never into the package.

``ceiling_ring`` and ``ceiling_eventfd`` need only a C compiler (``$CC``,
default ``cc``); ``hgsmi_c`` also needs libhgsmi: the source tree's
``native/build`` (built with ``make -C native lib`` if it is missing, as a
checkout's ``make lib`` would), else an installed one that ``pkg-config
hgsmi`` finds.  Each program lands in ``$XDG_CACHE_HOME/hgsmi/bench-<key>/``
(default ``~/.cache``), where the key hashes its sources, the compiler and
every flag: a changed source, compiler or libhgsmi gets a fresh directory,
and an unchanged one is reused by every later run.

What cannot be built here raises :class:`Unavailable` with one line that
says why and what would fix it; ``hgsmi bench`` reports those rows as
skipped.  Outcomes are remembered per process, so each program is looked at
once.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import shlex
import shutil
import subprocess
from pathlib import Path

#: the programs' sources, inside the installed package
C_DIR = Path(__file__).resolve().parent.parent / "c"
#: the project's C standard; not overridable ($CFLAGS/$LDFLAGS add to them)
CFLAGS = ("-std=c11", "-Wall", "-Wextra", "-Werror", "-O2")
LDLIBS = ("-lrt",)
#: the programs that need libhgsmi
NEEDS_LIBHGSMI = frozenset({"hgsmi_c"})

_done: dict[str, Path | Unavailable] = {}


class Unavailable(RuntimeError):
    """A program cannot be built here: no compiler, no libhgsmi, or its build failed."""


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/hgsmi``, by default ``~/.cache/hgsmi``.  Raises nothing."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hgsmi"


def compiler() -> list[str]:
    """The compiler command (``$CC``, default ``cc``) as an argv.

    Raises :class:`Unavailable` if it is not on PATH.
    """
    cc = shlex.split(os.environ.get("CC") or "cc")
    if not cc or shutil.which(cc[0]) is None:
        raise Unavailable(f"no C compiler: {' '.join(cc) or '$CC'!r} not found "
                          "(install one, or set CC)")
    return cc


def _source_tree_native() -> Path | None:
    """``native/`` of the checkout this package runs from (editable install), if any."""
    native = Path(__file__).resolve().parents[3] / "native"
    ok = (native / "Makefile").is_file() and (native / "include" / "hgsmi.h").is_file()
    return native if ok else None


def libhgsmi() -> tuple[list[str], list[str], bytes]:
    """Compile flags, link flags and a fingerprint for a program that links libhgsmi.

    The source tree's ``native/build/libhgsmi.so`` first (built if missing),
    then ``pkg-config hgsmi``.  Raises :class:`Unavailable` if neither is there.
    """
    native = _source_tree_native()
    if native is not None:
        lib = native / "build" / "libhgsmi.so"
        if not lib.exists() and shutil.which("make"):
            subprocess.run(["make", "--no-print-directory", "-s", "-C", str(native), "lib"],
                           capture_output=True, text=True, timeout=300)
        if lib.exists():
            headers = sorted((native / "include").rglob("*.h"))
            # The binary bakes in the headers' layouts; the library itself is
            # found at run time through the rpath.
            print_ = b"".join(h.read_bytes() for h in headers) + bytes(lib.parent)
            return ([f"-I{native / 'include'}"],
                    [f"-L{lib.parent}", f"-Wl,-rpath,{lib.parent}", "-lhgsmi"], print_)
    if shutil.which("pkg-config"):
        pc = [subprocess.run(["pkg-config", what, "hgsmi"], capture_output=True, text=True,
                             timeout=30) for what in ("--cflags", "--libs", "--modversion")]
        if all(p.returncode == 0 for p in pc):
            cflags, ldflags = shlex.split(pc[0].stdout), shlex.split(pc[1].stdout)
            # An rpath for each -L: a PREFIX outside the loader's path still runs.
            ldflags += [f"-Wl,-rpath,{f[2:]}" for f in ldflags if f.startswith("-L")]
            return cflags, ldflags, "\0".join(p.stdout for p in pc).encode()
    raise Unavailable("needs libhgsmi: not run from a source checkout, and `pkg-config "
                      "hgsmi` finds none (make install from a clone provides it)")


def program(name: str) -> Path:
    """The path of the built program ``name`` (``ceiling_ring``, ``ceiling_eventfd``,
    ``hgsmi_c``), compiled now if this exact build is not in the cache yet.

    Raises :class:`Unavailable` (no compiler, no libhgsmi, a failed compile).
    """
    done = _done.get(name)
    if done is None:
        try:
            done = _build(name)
        except Unavailable as e:
            done = e
        _done[name] = done
    if isinstance(done, Unavailable):
        raise done
    return done


def unbuildable(*names: str) -> str | None:
    """The first reason one of the programs ``names`` cannot be built here, or
    None once all are built.  Raises nothing."""
    for name in names:
        try:
            program(name)
        except Unavailable as e:
            return str(e)
    return None


def _build(name: str) -> Path:
    cc = compiler()
    cflags, ldflags, extra = libhgsmi() if name in NEEDS_LIBHGSMI else ([], [], b"")
    cflags = [*CFLAGS, *cflags, *shlex.split(os.environ.get("CFLAGS", ""))]
    ldflags = [*shlex.split(os.environ.get("LDFLAGS", "")), *ldflags, *LDLIBS]
    sources = [C_DIR / f"{name}.c", C_DIR / "bench_common.h"]
    key = hashlib.sha256()
    for part in (*[s.read_bytes() for s in sources], extra,
                 "\0".join([*cc, *cflags, *ldflags]).encode()):
        key.update(hashlib.sha256(part).digest())
    where = cache_root() / f"bench-{key.hexdigest()[:16]}"
    exe = where / name
    if exe.is_file() and os.access(exe, os.X_OK):
        return exe
    try:
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise Unavailable(f"cannot create the build cache {where}: {e.strerror}") from None
    # Built under a private name and renamed into place: a concurrent run
    # sees either no program or a whole one.
    tmp = str(where / f".{name}-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        out = subprocess.run([*cc, *cflags, "-o", tmp, str(sources[0]), *ldflags],
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            lines = (out.stderr or out.stdout).strip().splitlines() or ["(no output)"]
            first = next((line for line in lines if "error" in line), lines[0])
            raise Unavailable(f"compiling {name}.c failed: {first.strip()}")
        os.replace(tmp, exe)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return exe
