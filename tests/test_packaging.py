"""What a user gets from a wheel, an sdist and a clone: tags, metadata, typing, no junk,
a transport that stands apart from its tools, and ``hgsmi bench`` from an installed wheel.

The wheel is built once per module and installed into a fresh venv outside the
tree; the checks then run from a temporary directory, so nothing of the source
tree can be imported by accident.
"""
from __future__ import annotations

import ast
import email
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Build outputs that have no place in the repository or in a wheel.  The one
# shared object a wheel carries, the extension, is allowed by name below.
ARTEFACT = re.compile(
    r"(^|/)(build|dist|__pycache__|\.pytest_cache|\.hypothesis|\.benchmarks|[^/]*\.egg-info)/"
    r"|\.(o|a|d|so(\.[0-9.]+)?|whl|pyc|pyo|egg|tar\.gz)$"
)


def run(cmd: list[str], timeout: float = 240, **kw) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert out.returncode == 0, (cmd, out.stdout[-4000:], out.stderr[-4000:])
    return out


def clean_copy(dest: Path) -> Path:
    """The source files of this tree, as a fresh clone has them, copied to ``dest``.

    Built from there, not from the tree: setuptools reuses build/ in place, and a
    stale build/lib would hide a file the package no longer ships.
    """
    files = run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, timeout=30)
    for rel in files.stdout.splitlines():
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    return clean_copy(tmp_path_factory.mktemp("src"))


@pytest.fixture(scope="module")
def wheel(source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip wheel .` builds from a clean copy of this tree."""
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
         "--disable-pip-version-check", "-w", str(out), str(source)])
    (whl,) = out.glob("hgsmi-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv outside the tree with only the wheel (and its dependencies)."""
    where = tmp_path_factory.mktemp("venv") / "v"
    run([sys.executable, "-m", "venv", str(where)])
    run([str(where / "bin" / "pip"), "install", "--quiet",
         "--disable-pip-version-check", str(wheel)])
    yield where
    shutil.rmtree(where, ignore_errors=True)


pytestmark = pytest.mark.timeout(300)


@pytest.mark.slow
def test_wheel_is_abi3_and_carries_no_build_artefacts(wheel: Path) -> None:
    # cp311-abi3: pip installs it on 3.11 and every later CPython.
    assert re.fullmatch(r"hgsmi-[0-9.]+-cp311-abi3-linux_\w+\.whl", wheel.name), wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    assert "hgsmi/py.typed" in names
    assert "hgsmi/_native.abi3.so" in names
    # hgsmi bench's transports and the C sources it compiles on first use
    for shipped in ("hgsmi/bench/transports/base.py", "hgsmi/bench/c/bench_common.h",
                    "hgsmi/bench/c/ceiling_ring.c", "hgsmi/bench/c/ceiling_eventfd.c",
                    "hgsmi/bench/c/hgsmi_c.c"):
        assert shipped in names, shipped
    junk = [n for n in names if ARTEFACT.search(n) and n != "hgsmi/_native.abi3.so"]
    assert not junk, junk
    assert not [n for n in names if not n.startswith(("hgsmi/", "hgsmi-"))], names


@pytest.mark.slow
def test_wheel_metadata(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(z.read(meta_name))
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in z.namelist())
    assert meta["Requires-Python"] == ">=3.11"          # tomllib is 3.11+
    assert meta["License"] == "MIT"
    requires = meta.get_all("Requires-Dist") or []
    assert not [r for r in requires if "posix_ipc" in r], requires
    assert meta["Description-Content-Type"] == "text/markdown"
    assert "## Security model" in meta.get_payload()    # the README is the description


@pytest.mark.slow
def test_installed_wheel_runs_outside_the_tree(venv: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HGSMI_RUNTIME_DIR"] = str(tmp_path)
    help_ = run([str(venv / "bin" / "hgsmi"), "--help"], cwd=tmp_path, env=env)
    assert "usage: hgsmi" in help_.stdout
    script = tmp_path / "hello.py"
    script.write_text(textwrap.dedent(f"""\
        import os, hgsmi
        assert hgsmi.__file__.startswith({str(venv)!r}), hgsmi.__file__
        host = hgsmi.Host("pk{os.getpid()}", runtime_dir={str(tmp_path)!r})
        host.register(0x10, lambda msg: bytes(msg.data).upper())
        pid = os.fork()
        if pid == 0:
            with hgsmi.Guest("pk{os.getpid()}", runtime_dir={str(tmp_path)!r}) as g:
                os._exit(0 if g.call(0x10, 0, b"wheel") == b"WHEEL" else 1)
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            host.poll(0.1)
        host.close()
        print("ok")
        """))
    out = run([str(venv / "bin" / "python"), str(script)], cwd=tmp_path, env=env, timeout=60)
    assert out.stdout.strip() == "ok"


def _bench_json(venv: Path, tmp_path: Path, only: list[str],
                **env_extra: str) -> dict[str, Any]:
    """``hgsmi bench --quick --json`` of the installed wheel, run outside the tree, with a
    private build cache; its one JSON object."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), **env_extra)
    out = run([str(venv / "bin" / "hgsmi"), "bench", "--quick", "--sizes", "64", "--runs", "3",
               "--json", "--only", *only], cwd=tmp_path, env=env, timeout=240)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@pytest.mark.slow
@pytest.mark.multiprocess
def test_bench_runs_from_the_installed_wheel(venv: Path, tmp_path: Path) -> None:
    """The transports are the installed package's, the C ceiling is compiled on first use
    into the user's cache (not into site-packages), and hgsmi-c, with no libhgsmi beside
    a wheel, is reported as skipped with the reason."""
    if shutil.which("cc") is None:
        pytest.skip("needs cc")
    result = _bench_json(venv, tmp_path, ["c-ceiling", "hgsmi-c", "hgsmi-zerocopy"])
    rows = {(r["transport"], r["workload"]): r for r in result["results"]}
    assert rows["hgsmi-zerocopy", "g2h-stream"]["msgs_per_s"] > 0
    assert rows["hgsmi-zerocopy", "call-rtt"]["p50_us"] > 0
    for wl in ("g2h-stream", "h2g-stream"):
        assert rows["c-ceiling", wl]["mb_per_s"] > 0, rows["c-ceiling", wl]
    assert rows["c-ceiling", "call-rtt"]["p50_us"] > 0
    built = sorted(p.name for p in (tmp_path / "cache" / "hgsmi").glob("bench-*/*"))
    assert {"ceiling_ring", "ceiling_eventfd"} <= set(built), built
    site = next((venv / "lib").glob("python3*/site-packages/hgsmi/bench/c"))
    assert sorted(p.suffix for p in site.iterdir()) == [".c", ".c", ".c", ".h"]
    installed_lib = shutil.which("pkg-config") and \
        subprocess.run(["pkg-config", "--exists", "hgsmi"]).returncode == 0
    if not installed_lib:  # else hgsmi-c builds against it and runs
        why = result["machine"]["skipped"]["hgsmi-c"]
        assert "libhgsmi" in why, why
        skipped = [r for r in result["results"] if r["transport"] == "hgsmi-c"]
        assert skipped and all(r["skipped"] == why for r in skipped), skipped


@pytest.mark.slow
def test_bench_without_a_compiler_skips_the_c_rows(venv: Path, tmp_path: Path) -> None:
    result = _bench_json(venv, tmp_path, ["c-ceiling"], CC=str(tmp_path / "no-such-cc"))
    why = result["machine"]["skipped"]["c-ceiling"]
    assert "no C compiler" in why and "no-such-cc" in why, why
    rows = result["results"]
    assert {r["workload"] for r in rows} == {"g2h-stream", "h2g-stream", "call-rtt"}, rows
    assert all(r["transport"] == "c-ceiling" and r["skipped"] == why for r in rows), rows
    assert not (tmp_path / "cache" / "hgsmi").exists() or \
        not list((tmp_path / "cache" / "hgsmi").glob("bench-*/*"))


@pytest.mark.slow
def test_user_code_type_checks_against_the_installed_package(venv: Path,
                                                             tmp_path: Path) -> None:
    """py.typed ships: mypy --strict accepts a user script that uses hgsmi's API."""
    pytest.importorskip("mypy")
    user = tmp_path / "user.py"
    user.write_text(textwrap.dedent("""\
        import hgsmi

        def ask(name: str) -> bytes:
            with hgsmi.Guest(name) as guest:
                reply: bytes = guest.call(0x10, 0, b"hi", timeout=1.0)
                return reply

        def serve(msg: hgsmi.Message) -> bytes:
            return bytes(msg.data).upper()
        """))
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--python-executable", str(venv / "bin" / "python"), str(user)],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "MYPYPATH"})
    assert out.returncode == 0, out.stdout + out.stderr
    # Without py.typed mypy would say "missing library stubs or py.typed marker".
    assert "py.typed" not in out.stdout


@pytest.mark.slow
def test_sdist_builds_from_source_without_a_partial_test_suite(source: Path,
                                                             tmp_path: Path) -> None:
    run([sys.executable, "setup.py", "--quiet", "sdist", "-d", str(tmp_path)], cwd=source)
    (sdist,) = tmp_path.glob("hgsmi-*.tar.gz")
    with tarfile.open(sdist) as t:
        names = [n.split("/", 1)[1] for n in t.getnames() if "/" in n]
    for needed in ("LICENSE", "README.md", "setup.py", "pyproject.toml", "hgsmi/py.typed",
                   "native/ffi_build.py", "native/hgsmi.cdef", "native/src/guest.c",
                   "native/include/hgsmi.h", "hgsmi/bench/c/ceiling_ring.c"):
        assert needed in names, needed
    # Either the whole suite or none of it: the sdist leaves the tests to a clone.
    assert not [n for n in names if n.startswith(("tests/", "native/tests/"))], names
    junk = [n for n in names if ARTEFACT.search(n) and not n.startswith("hgsmi.egg-info/")]
    assert not junk, junk


#: the tools' subpackages: applications of the transport, which never imports them
TOOLS = ("hgsmi.cli", "hgsmi.daemon", "hgsmi.services", "hgsmi.bench")


def _imports(path: Path, package: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module) of every import in ``path``, a module of ``package``,
    those inside functions included."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = ".".join(parts[:len(parts) - node.level + 1] if node.level else [])
            mod = ".".join(p for p in (base, node.module or "") if p)
            yield node.lineno, mod
            for alias in node.names:  # `from . import services` names a module too
                yield node.lineno, f"{mod}.{alias.name}"


def test_the_transport_imports_no_tool() -> None:
    """The modules at the top of hgsmi/ and hgsmi.aio import nothing of the CLI, daemon,
    services or bench, not even lazily, and ``import hgsmi, hgsmi.aio`` loads none."""
    found = []
    for package, where in (("hgsmi", ROOT / "hgsmi"), ("hgsmi.aio", ROOT / "hgsmi" / "aio")):
        for path in sorted(where.glob("*.py")):
            if path.name == "__main__.py":  # `python -m hgsmi` is the CLI
                continue
            found += [f"{path.relative_to(ROOT)}:{line}: {mod}"
                      for line, mod in _imports(path, package)
                      if mod.startswith(tuple(t + "." for t in TOOLS)) or mod in TOOLS]
    assert not found, found
    code = ("import sys, hgsmi, hgsmi.aio\n"
            f"print([m for m in sys.modules if m.startswith({TOOLS!r})])")
    out = run([sys.executable, "-c", code], cwd=ROOT, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout


def test_repository_tracks_no_build_artefacts() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = run(["git", "ls-files"], cwd=ROOT, timeout=30).stdout.split()
    junk = [f for f in files if ARTEFACT.search(f)]
    assert not junk, junk


def test_c_test_runner_that_finds_no_tests_fails(tmp_path: Path) -> None:
    if shutil.which("make") is None or shutil.which("cc") is None:
        pytest.skip("needs make and cc")
    out = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT / "native"), "test",
                          "TESTS=", f"OBJDIR={tmp_path}"],
                         capture_output=True, text=True, timeout=60)
    assert "0 passed" in out.stdout
    assert out.returncode != 0, out.stdout + out.stderr
