"""Fixtures shared by the tests: unique names, private runtime dirs, leak checks."""
from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pytest

from support.leaks import memfds, shm_entries

# The session fixture that builds the C examples once, for test_c_abi and test_interop.
from support.native_examples import c_examples  # noqa: F401


@pytest.fixture
def name() -> str:
    """A fresh instance name, unique across concurrent runs."""
    return "t" + secrets.token_hex(5)


def _ours(entry: str) -> bool:
    """Was this segment created by this test process or one of its children?

    The segment header records its host's pid (offset 32); another test run on
    the same machine is not ours to judge.  Semaphores carry no owner: the
    per-name ``no_leaks`` fixture checks those.
    """
    try:
        with open(os.path.join("/dev/shm", entry), "rb") as f:
            head = f.read(36)
    except OSError:
        return False
    if len(head) < 36 or head[:4] != b"HGSM":
        return False
    pid = int.from_bytes(head[32:36], "little")
    if pid == os.getpid():
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid()
    except (OSError, ValueError, IndexError):
        return False


def _hgsmi_shm() -> set[str]:
    return {e for e in os.listdir("/dev/shm") if e.startswith("hgsmi-t") and _ours(e)}


@pytest.fixture(autouse=True)
def _nothing_left_in_dev_shm():
    """Every test: no segment this process (or a live child) made may outlive it."""
    before = _hgsmi_shm()
    yield
    left = _hgsmi_shm() - before
    if left:  # a child may still be on its way out
        time.sleep(0.5)
        left = _hgsmi_shm() - before
    for e in left:
        try:
            os.unlink(os.path.join("/dev/shm", e))
        except FileNotFoundError:
            pass
    assert not left, f"left in /dev/shm: {sorted(left)}"


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private socket directory for every test, also exported to children."""
    d = tmp_path / "run"
    d.mkdir(mode=0o700)
    monkeypatch.setenv("HGSMI_RUNTIME_DIR", str(d))
    return d


@pytest.fixture
def no_leaks(name: str, runtime_dir: Path):
    """Fail the test if it leaves anything of ``name`` behind; clean up anyway.

    Named segments and semaphores in /dev/shm, sockets, and memfd segments
    still mapped or open in this process (a memfd is gone with those).
    """
    yield
    left = shm_entries(name)
    held = memfds(name)
    sockets = list(runtime_dir.iterdir())
    for e in left:
        os.unlink(os.path.join("/dev/shm", e))
    assert not left, f"left in /dev/shm: {left}"
    assert not held, f"memfd segments still mapped or open: {held}"
    assert not sockets, f"left in the socket directory: {sockets}"
