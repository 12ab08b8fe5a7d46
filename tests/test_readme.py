"""The README's examples run as they are written: Python, C, shell and TOML."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
@pytest.mark.timeout(60)
def test_readme_example_runs(code, tmp_path, runtime_dir):
    if "numpy" in code:
        pytest.importorskip("numpy")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=50)
    assert out.returncode == 0, out.stderr
    # A "print(...)  # ... b'...'" or "[...]" comment shows what that line prints.
    for comment in re.findall(r"print\(.*\)\s+# ([^\n]+)", code):
        shown = re.search(r"b'[^']*'|\[[^\]]*\]", comment)
        if shown:
            assert shown.group(0) in out.stdout, (shown.group(0), out.stdout)


# -- the shell, C and TOML blocks ------------------------------------------------------
SH_BLOCKS = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
ROOT = README.parent


def sh_block(marker: str) -> str:
    """The one ```sh block that contains ``marker``."""
    (block,) = [b for b in SH_BLOCKS if marker in b]
    return block


def run_block(script: str, cwd: Path, env: dict[str, str],
              timeout: float) -> subprocess.CompletedProcess[str]:
    # -e: a failing line fails the block, as a user would notice it.
    return subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.multiprocess
@pytest.mark.timeout(240)
def test_readme_c_block_runs_as_pasted(tmp_path, runtime_dir):
    """The C section, pasted into a shell at the clone's root: the guest waits for the
    host, verifies, and nothing is left in the clone (HOME is a temporary one)."""
    if not shutil.which("cc") or not shutil.which("pkg-config"):
        pytest.skip("needs cc and pkg-config")
    block = sh_block("native/examples/guest.c")
    before = set(git_untracked())
    # The Python host is the tree's: .venv/bin/python is whatever runs the tests.
    script = block.replace(".venv/bin/python", shlex.quote(sys.executable))
    env = dict(os.environ, HOME=str(tmp_path), TMPDIR=str(tmp_path))
    out = run_block(script, ROOT, env, 200)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "verify: 100 calls" in out.stdout and "100 pushes" in out.stdout, out.stdout
    assert "cannot attach" not in out.stderr
    assert set(git_untracked()) == before, set(git_untracked()) - before


@pytest.mark.multiprocess
@pytest.mark.timeout(120)
def test_readme_cli_block_runs_as_pasted(tmp_path, runtime_dir):
    """The CLI section in a fresh directory: host in the background, every guest
    command against it at once (the first one waits), then a clean SIGTERM."""
    block = sh_block("hgsmi host --name vram0")
    (tmp_path / "big.iso").write_bytes(os.urandom(3 << 20))
    bindir = os.path.dirname(sys.executable)
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "data"),
               PATH=bindir + os.pathsep + os.environ.get("PATH", ""))
    assert shutil.which("hgsmi", path=env["PATH"]), "hgsmi is not installed next to python"
    # The guest workloads as written, but `load` for 1 s instead of 5 and `demo` on its
    # own instance name (it must not meet the running vram0).
    script = block.replace("--seconds 5", "--seconds 1") + "\nwait %1\n"
    out = run_block(script, tmp_path, env, 100)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "copy.iso").read_bytes() == (tmp_path / "big.iso").read_bytes()
    assert "verified by the host" in out.stdout and "echo: 10000 calls" in out.stdout
    assert not list(runtime_dir.iterdir())  # the host removed its socket


def test_readme_toml_example_is_a_valid_config_that_locks_nobody_out(tmp_path):
    from hgsmi.daemon import config as config_mod

    (toml,) = re.findall(r"```toml\n(.*?)```", README.read_text(), re.S)
    data = tomllib.loads(toml)
    # Copied as is, the allow-list is the host's own uid (a literal uid locks out others).
    assert "allowed_uids" not in data
    # Everything but the drivers (their modules are the reader's own) is accepted.
    del data["channels"]
    path = tmp_path / "host.toml"
    path.write_text(re.sub(r"(?ms)^\[channels\.\d+\].*?(?=^\[|\Z)", "", toml))
    cfg = config_mod.load(str(path))
    assert cfg.name == "vram0" and cfg.size == 16 << 20


def test_readme_make_targets_exist():
    """The make lines of the README name targets the Makefile has (dry run)."""
    targets = set()
    for block in SH_BLOCKS:
        for m in re.finditer(r"^make(?: -C native)? ([a-z-]+)", block, re.M):
            targets.add(m.group(1))
    assert {"demo", "test", "bench"} <= targets
    out = subprocess.run(["make", "-n", *sorted(targets - {"install"})], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert "No rule to make target" not in out.stderr, out.stderr


def git_untracked() -> list[str]:
    if not (ROOT / ".git").exists():
        return []
    return subprocess.run(["git", "ls-files", "--others", "--exclude-standard"], cwd=ROOT,
                          capture_output=True, text=True, timeout=30).stdout.split()
