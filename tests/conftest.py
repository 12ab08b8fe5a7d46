"""Fixtures shared by the tests: unique names, private runtime dirs, leak checks."""
from __future__ import annotations

import os
import secrets
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


@pytest.fixture
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private socket directory, also exported for child processes."""
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
