"""Attaching as a new user meets it: waiting for a host, and why there is none."""
from __future__ import annotations

import os
import socket
import threading
import time

import pytest

import hgsmi

from support.pump import Pump


@pytest.mark.timeout(30)
def test_guest_waits_for_a_host_that_starts_later(name, runtime_dir, no_leaks):
    """wait= covers a socket that does not exist yet: the host appears 0.5 s later."""
    box: dict[str, hgsmi.Host] = {}

    def start_late() -> None:
        time.sleep(0.5)
        host = hgsmi.Host(name)
        host.register(0x10, lambda msg: bytes(msg.data).upper())
        box["host"] = host
        box["pump"] = Pump(host)  # type: ignore[assignment]

    t = threading.Thread(target=start_late)
    t0 = time.monotonic()
    t.start()
    try:
        with hgsmi.Guest(name, wait=10) as g:
            waited = time.monotonic() - t0
            assert g.call(0x10, 0, b"late", timeout=5) == b"LATE"
        assert 0.4 < waited < 8, waited
    finally:
        t.join()
        if "pump" in box:
            box["pump"].stop()  # type: ignore[attr-defined]
            box["host"].close()


@pytest.mark.timeout(30)
def test_guest_wait_runs_out_with_host_not_found(name, runtime_dir):
    t0 = time.monotonic()
    with pytest.raises(hgsmi.HostNotFound, match=r"no host .* is running \(waited 0\.3 s\): "
                                                 r"no socket "):
        hgsmi.Guest(name, wait=0.3)
    assert 0.25 < time.monotonic() - t0 < 5


@pytest.mark.timeout(30)
def test_no_wait_fails_at_once(name, runtime_dir):
    t0 = time.monotonic()
    with pytest.raises(hgsmi.HostNotFound):
        hgsmi.Guest(name)
    assert time.monotonic() - t0 < 0.25


@pytest.mark.timeout(30)
def test_host_not_found_says_which_of_three(name, runtime_dir, tmp_path):
    # 1. no socket: no host of that name
    with pytest.raises(hgsmi.HostNotFound, match=rf"no host '{name}' is running: no socket "):
        hgsmi.Guest(name)
    # 2. a socket nobody listens on: a host that has gone
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(runtime_dir / f"{name}.sock"))
    stale.close()
    try:
        with pytest.raises(hgsmi.HostNotFound, match="nobody listens on"):
            hgsmi.Guest(name)
    finally:
        os.unlink(runtime_dir / f"{name}.sock")
    # 3. a runtime directory that does not exist (mistyped --runtime-dir)
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(hgsmi.HostNotFound, match=f"runtime directory {missing} does not exist"):
        hgsmi.Guest(name, runtime_dir=missing)


def test_wait_must_be_seconds(name, runtime_dir):
    with pytest.raises(ValueError, match="wait"):
        hgsmi.Guest(name, wait=-1)


@pytest.mark.timeout(30)
def test_async_guest_waits_too(name, runtime_dir):
    from hgsmi.aio import AsyncGuest

    box: dict[str, object] = {}

    def start_late() -> None:
        time.sleep(0.5)
        host = hgsmi.Host(name)
        host.register(0x10, lambda msg: bytes(msg.data).upper())
        box["host"], box["pump"] = host, Pump(host)

    async def main() -> bytes:
        async with AsyncGuest.connect(name, wait=10) as g:  # the wait runs in a thread
            return await g.call(0x10, 0, b"aio", timeout=5)

    t = threading.Thread(target=start_late)
    t.start()
    try:
        import asyncio
        assert asyncio.run(main()) == b"AIO"
    finally:
        t.join()
        if "pump" in box:
            box["pump"].stop()  # type: ignore[attr-defined]
            box["host"].close()  # type: ignore[attr-defined]
