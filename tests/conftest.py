"""Fixtures shared by the tests: unique names, private runtime dirs, leak checks."""
from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pytest


def shm_entries(name: str) -> list[str]:
    """What instance ``name`` has in /dev/shm (segments and semaphores)."""
    prefix = f"hgsmi-{name}."
    return sorted(e for e in os.listdir("/dev/shm")
                  if e.startswith(prefix) or e.startswith("sem." + prefix))


@pytest.fixture
def name() -> str:
    """A fresh instance name, unique across concurrent runs."""
    return "t" + secrets.token_hex(5)


def _hgsmi_shm() -> set[str]:
    # Test instances are named "t<hex>"; other sessions' runs are not ours.
    return {e for e in os.listdir("/dev/shm") if e.startswith(("hgsmi-t", "sem.hgsmi-t"))}


@pytest.fixture(autouse=True)
def _nothing_left_in_dev_shm():
    """Every test: no new hgsmi segment or semaphore may outlive it."""
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
    """Fail the test if it leaves anything of ``name`` behind; clean up anyway."""
    yield
    left = shm_entries(name)
    sockets = list(runtime_dir.iterdir())
    for e in left:
        os.unlink(os.path.join("/dev/shm", e))
    assert not left, f"left in /dev/shm: {left}"
    assert not sockets, f"left in the socket directory: {sockets}"
