"""The C ABI: libhgsmi installed into a prefix, the C examples built through
pkg-config, the exported symbols equal to the documented API, the header
clean as C99 and C++17, and a C host talking to a C guest.

Needs make, cc, c++ and pkg-config; never imports hgsmi (no Python peer).
"""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from support.native_examples import CC, EXAMPLE_CFLAGS, NATIVE, run, start, stop, summary

pytestmark = pytest.mark.multiprocess
BACKENDS = ["eventfd", "semaphore"]


# -- the documented API, read from the sources -------------------------------------
def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def header_functions() -> set[str]:
    """Every function declared with HGSMI_API in include/hgsmi.h."""
    text = _strip_comments((NATIVE / "include" / "hgsmi.h").read_text())
    text = re.sub(r"^\s*#(?:[^\n]*\\\n)*[^\n]*", " ", text, flags=re.M)  # preprocessor
    names = re.findall(r"\bHGSMI_API\s[^;{]*?\b(hgsmi_\w+)\s*\(", text)
    assert len(names) == len(re.findall(r"\bHGSMI_API\b", text)), "unparsed HGSMI_API"
    assert len(names) == len(set(names)), "a function is declared twice"
    return set(names)


def map_functions() -> set[str]:
    """The global: symbols of every version node of hgsmi.map."""
    text = _strip_comments((NATIVE / "hgsmi.map").read_text())
    names: set[str] = set()
    for block in re.findall(r"global:(.*?)(?:local:|\})", text, flags=re.S):
        names |= set(re.findall(r"([A-Za-z_]\w*)\s*;", block))
    return names


def exported(lib: Path) -> set[str]:
    """Functions and data the shared library exports (version nodes left out)."""
    out = run(["nm", "-D", "--defined-only", str(lib)]).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] != "A":
            names.add(parts[2].split("@")[0])
    return names


def header_version() -> str:
    text = (NATIVE / "include" / "hgsmi.h").read_text()
    return ".".join(re.search(rf"#define HGSMI_VERSION_{p}\s+(\d+)", text).group(1)
                    for p in ("MAJOR", "MINOR", "PATCH"))


# -- install and pkg-config --------------------------------------------------------
def test_install_layout_and_pkg_config(c_examples):
    p = c_examples.prefix
    major = header_version().split(".")[0]
    for f in ["include/hgsmi.h", "include/hgsmi/defs.h", "lib/libhgsmi.a",
              "lib/libhgsmi.so", f"lib/libhgsmi.so.{major}",
              f"lib/libhgsmi.so.{header_version()}", "lib/pkgconfig/hgsmi.pc"]:
        assert (p / f).exists(), f"make install did not install {f}"
    assert c_examples.pkg_config("--modversion") == [header_version()]
    assert f"-I{p}/include" in c_examples.pkg_config("--cflags")
    libs = c_examples.pkg_config("--libs")
    assert f"-L{p}/lib" in libs and "-lhgsmi" in libs
    soname = run(["objdump", "-p", str(p / "lib" / "libhgsmi.so")]).stdout
    assert re.search(rf"SONAME\s+libhgsmi\.so\.{major}\b", soname)


def test_no_libpython_at_run_time(c_examples):
    lib = c_examples.prefix / "lib" / "libhgsmi.so"
    for exe in (c_examples.host, c_examples.guest, lib):
        deps = run(["ldd", str(exe)], env=c_examples.run_env()).stdout
        assert "libpython" not in deps, f"{exe.name} needs libpython:\n{deps}"
        if exe != lib:
            assert str(c_examples.prefix / "lib" / "libhgsmi.so.") in deps, deps
    # The library asks for nothing beyond the C runtime.
    needed = re.findall(r"NEEDED\s+(\S+)", run(["objdump", "-p", str(lib)]).stdout)
    assert needed and all(re.match(r"(libc|librt|libpthread|libm|libdl|ld-linux[\w.-]*)\.so", n)
                          for n in needed), needed


def test_static_link(c_examples, tmp_path):
    """The examples also link the static archive: no libhgsmi.so at run time."""
    exe = tmp_path / "guest-static"
    cflags = c_examples.pkg_config("--cflags")
    static_libs = [a for a in c_examples.pkg_config("--static", "--libs") if a != "-lhgsmi"]
    run([CC, *EXAMPLE_CFLAGS, *cflags,
         str(NATIVE / "examples" / "guest.c"),
         str(c_examples.prefix / "lib" / "libhgsmi.a"), *static_libs, "-o", str(exe)])
    deps = run(["ldd", str(exe)]).stdout
    assert "libhgsmi" not in deps
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "usage" in r.stderr


# -- the exported API ---------------------------------------------------------------
def test_exported_symbols_equal_the_documented_api(c_examples):
    declared = header_functions()
    assert len(declared) >= 60
    assert map_functions() == declared, "hgsmi.map and hgsmi.h disagree"
    for lib in (NATIVE / "build" / "libhgsmi.so", c_examples.prefix / "lib" / "libhgsmi.so"):
        got = exported(lib)
        assert got - declared == set(), f"{lib} leaks internal symbols"
        assert declared - got == set(), f"{lib} lacks documented functions"


def test_static_archive_keeps_to_its_namespace(c_examples):
    """Every global the archive defines starts with hgsmi_ (static users link it all)."""
    out = run(["nm", "-g", "--defined-only", str(c_examples.prefix / "lib" / "libhgsmi.a")])
    names = [ln.split()[2] for ln in out.stdout.splitlines() if len(ln.split()) == 3]
    assert names and [n for n in names if not n.startswith("hgsmi_")] == []


# -- the header ----------------------------------------------------------------------
HEADER_USE = r"""
#include <hgsmi.h>
#include <hgsmi.h> /* include guards */

/* The wire structs are public and complete; the objects are opaque. */
static int use(struct hgsmi_guest *g, struct hgsmi_host *h)
{
	struct hgsmi_buffer_header hdr = {0, 0, HGSMI_CH_ECHO, 0, 0, 0};
	struct hgsmi_msg m = {0, 0, 0, 0, 0, 0, 0, 0, 0};
	struct hgsmi_segment_header seg;
	hgsmi_handler_fn fn = 0;

	(void)fn;
	(void)seg;
	return hgsmi_guest_call(g, m.channel, 0, &hdr, (uint32_t)sizeof(hdr), 0, 0, -1) +
		hgsmi_host_poll(h, 0) + (int)sizeof(struct hgsmi_welcome) +
		(int)HGSMI_BUFFER_OVERHEAD;
}

int main(void)
{
	return use(0, 0) > 0 && hgsmi_version()[0] == '0';
}
"""

COMPILERS = {
    "c99": ["gcc", "-x", "c", "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror"],
    "c11": ["gcc", "-x", "c", "-std=c11", "-Wall", "-Wextra", "-pedantic", "-Werror"],
    "c++17": ["g++", "-x", "c++", "-std=c++17", "-Wall", "-Wextra", "-Werror"],
    "c++17-pedantic": ["g++", "-x", "c++", "-std=c++17", "-Wall", "-Wextra", "-pedantic",
                       "-Werror"],
}


@pytest.mark.parametrize("lang", COMPILERS)
def test_header_compiles(lang, c_examples, tmp_path):
    src = tmp_path / "use.txt"
    src.write_text(HEADER_USE)
    cmd = COMPILERS[lang]
    run([*cmd, f"-I{c_examples.prefix}/include", "-c", str(src), "-o", str(tmp_path / "use.o")])
    # defs.h alone is self-contained too
    defs = tmp_path / "defs.txt"
    defs.write_text("#include <hgsmi/defs.h>\nint x = (int)sizeof(struct hgsmi_buffer_header);\n")
    run([*cmd, f"-I{c_examples.prefix}/include", "-c", str(defs), "-o", str(tmp_path / "d.o")])


# -- a C host and a C guest ----------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_c_host_and_c_guest(c_examples, name, runtime_dir, no_leaks, backend, tmp_path):
    env = c_examples.run_env()
    data = os.urandom(3_000_000)
    (tmp_path / "a.bin").write_bytes(data)
    (tmp_path / "empty").write_bytes(b"")
    host = start(c_examples.host_cmd(name, backend), env)
    try:
        assert host.args[1] == name
        out = c_examples.run_guest(name, tmp_path / "a.bin", tmp_path / "empty", "-",
                                   input="x" * 100_000, env=env).stdout
        assert f"sent {tmp_path / 'a.bin'}: 3000000 bytes in 46 messages" in out
        assert f"sent {tmp_path / 'empty'}: 0 bytes in 0 messages" in out
        assert "sent -: 100000 bytes in 2 messages" in out
        assert "echo: 5 calls" in out and f"guest {name}: ok" in out
        c_examples.verify(name, 300, env)
    finally:
        rc, out, err = stop(host)
    assert rc == 0, f"host exited {rc}:\n{out}\n{err}"
    s = summary(out)
    assert s["sink_msgs"] == 48 and s["sink_bytes"] == 3_100_000
    assert s["echo"] == 5 and s["invert"] == 300 and s["pushed_msgs"] == 300
    assert err == ""


@pytest.mark.timeout(30)
def test_c_guest_without_host(c_examples, name, runtime_dir):
    g = subprocess.run([str(c_examples.guest), name], capture_output=True, text=True,
                       timeout=10, env=c_examples.run_env())
    assert g.returncode == 1
    assert g.stderr.count("\n") == 1 and f"cannot attach to {name}" in g.stderr


@pytest.mark.timeout(30)
def test_c_host_refuses_a_taken_name(c_examples, name, runtime_dir, no_leaks):
    env = c_examples.run_env()
    host = start([c_examples.host, name], env)
    try:
        second = subprocess.run([str(c_examples.host), name], capture_output=True,
                                text=True, timeout=10, env=env)
        assert second.returncode == 1 and "cannot create" in second.stderr
    finally:
        rc, out, err = stop(host)
    assert rc == 0, err
