"""Build helpers for the C ABI tests: libhgsmi installed into a temporary
prefix, the C examples compiled against it through pkg-config, and the
processes that run them.  Imports nothing from hgsmi.

A session fixture builds once: ``c_examples`` (conftest.py offers it to every test).
"""
from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # tests/support/ -> the repository
NATIVE = ROOT / "native"
EXAMPLES = NATIVE / "examples"
CC = os.environ.get("CC", "cc")
#: the flags the examples must compile clean with
EXAMPLE_CFLAGS = ["-std=c11", "-Wall", "-Wextra", "-pedantic", "-Werror", "-O2"]


def run(cmd, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run ``cmd``; on failure, fail the test with its output."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if p.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {p.returncode}\n"
                    f"--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}")
    return p


@dataclass
class Built:
    prefix: Path
    host: Path
    guest: Path
    env: dict  # PKG_CONFIG_PATH and LD_LIBRARY_PATH for the prefix

    def pkg_config(self, *args: str) -> list[str]:
        out = run(["pkg-config", *args, "hgsmi"], env=self.env).stdout
        return out.split()

    def run_env(self) -> dict:
        """The environment for an example: the current one plus the prefix."""
        return dict(os.environ, LD_LIBRARY_PATH=self.env["LD_LIBRARY_PATH"])

    def host_cmd(self, name: str, backend: str) -> list:
        """The C host example's command line for ``name`` on the ``backend`` doorbell."""
        return [self.host, name] + (["--semaphore"] if backend == "semaphore" else [])

    def run_guest(self, *args, env: dict, timeout: float = 30,
                  input: str | None = None) -> subprocess.CompletedProcess:
        """Run the C guest example with ``args`` (text output); fail the test
        with its output unless it exits 0."""
        g = subprocess.run([str(self.guest), *map(str, args)], input=input,
                           capture_output=True, text=True, timeout=timeout, env=env)
        assert g.returncode == 0, \
            f"C guest {args} exited {g.returncode}:\n{g.stdout}\n{g.stderr}"
        return g

    def verify(self, name: str, n: int, env: dict, timeout: float = 30) -> None:
        """``guest NAME --verify n`` against the host ``name``: n INVERT calls
        and n pushes, every byte checked by the guest; fail unless it says so."""
        out = self.run_guest(name, "--verify", n, env=env, timeout=timeout).stdout
        assert f"verify: {n} calls" in out and f"{n} pushes" in out, out


def build(base: Path) -> Built:
    """``make -C native install PREFIX=base/prefix``, then both examples."""
    for tool in ("make", CC, "pkg-config"):
        assert shutil.which(tool), f"{tool} is needed to build the C examples"
    prefix = base / "prefix"
    run(["make", "-C", str(NATIVE), "install", f"PREFIX={prefix}"], timeout=600)
    env = dict(os.environ, PKG_CONFIG_PATH=str(prefix / "lib" / "pkgconfig"),
               LD_LIBRARY_PATH=str(prefix / "lib"))
    env.pop("PKG_CONFIG_LIBDIR", None)
    built = Built(prefix, base / "host", base / "guest", env)
    flags = built.pkg_config("--cflags", "--libs")
    for exe in (built.host, built.guest):
        run([CC, *EXAMPLE_CFLAGS, str(EXAMPLES / f"{exe.name}.c"), *flags, "-o", str(exe)],
            env=env)
    return built


_built: dict[str, Built] = {}


@pytest.fixture(scope="session")
def c_examples(tmp_path_factory) -> Built:
    """libhgsmi in a temporary prefix and the examples built against it (once)."""
    if "b" not in _built:
        _built["b"] = build(tmp_path_factory.mktemp("c-abi"))
    return _built["b"]


# -- processes -------------------------------------------------------------------
def read_line(p: subprocess.Popen, timeout: float) -> str:
    """The next line of ``p``'s stdout, or fail after ``timeout`` seconds."""
    with selectors.DefaultSelector() as sel:
        sel.register(p.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            p.kill()
            out, err = p.communicate(timeout=5)
            pytest.fail(f"no line from {p.args} in {timeout} s\n{out}\n{err}")
    return p.stdout.readline()


def start(cmd, env: dict, ready_timeout: float = 10) -> subprocess.Popen:
    """Start a host that prints "ready NAME SOCKETPATH"; return once it has."""
    p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    line = read_line(p, ready_timeout)
    if not line.startswith("ready "):
        p.kill()
        out, err = p.communicate(timeout=5)
        pytest.fail(f"{cmd} did not get ready: {line!r}\n{out}\n{err}")
    return p


def stop(p: subprocess.Popen, timeout: float = 10) -> tuple[int, str, str]:
    """SIGTERM, then wait; SIGKILL if it does not stop.  (rc, stdout, stderr)."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate(timeout=5)
        pytest.fail(f"{p.args} did not stop on SIGTERM in {timeout} s\n{out}\n{err}")
    return p.returncode, out, err


def summary(text: str) -> dict[str, int]:
    """The counters of a host summary line ("... echo 5, invert 300, sink 2 msgs ...")."""
    line = [ln for ln in text.splitlines() if ln.startswith("host ")][-1]
    out = {}
    for key, pat in {"echo": r"echo (\d+)", "invert": r"invert (\d+)",
                     "sink_msgs": r"sink (\d+) msgs", "sink_bytes": r"sink \d+ msgs (\d+) bytes",
                     "pushed_msgs": r"pushed (\d+) msgs",
                     "pushed_bytes": r"pushed \d+ msgs (\d+) bytes"}.items():
        m = re.search(pat, line)
        assert m, f"no {key} in {line!r}"
        out[key] = int(m.group(1))
    return out
