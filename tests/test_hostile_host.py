"""A guest never hangs, spins or crashes because of its host (issue #11, class 4).

The host here is tests/peers/hostile_host.py: a separate process that speaks
the real handshake on a real socket and passes real fds, but none of it
through hgsmi's own host.  For every way it misbehaves, the guest must fail
with PeerGone, ProtocolError or Timeout, within its timeout plus 100 ms, and
sleep rather than spin while it waits:

- hostile fds: a pipe, a regular file, an eventfd in semaphore mode, an
  unsealed or oversized segment memfd are refused at attach; a blocking
  eventfd at its maximum count is made non-blocking, so neither call() nor
  AsyncGuest() blocks in write() or read();
- a stray byte on the control socket, then death: PeerGone (not a spin until
  Timeout); a stray byte from a live host: ProtocolError;
- a full ack ring: poll(0.5) takes 0.5 s and says Timeout (the acks it could
  not hand back are counted), instead of 2 s at 100% CPU and silence;
- what already held, kept here: bad FIFO offsets, a host that never
  completes, unknown completions, an IRQ raised for ever, hostile ring
  indices.
"""
from __future__ import annotations

import asyncio
import glob
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import hgsmi
from hgsmi.aio import AsyncGuest

PEER = Path(__file__).parent / "peers" / "hostile_host.py"
ROOT = Path(__file__).parent.parent
SLACK = 0.1  # the bound: a call returns within its timeout plus 100 ms
CH = 0x20
BACKENDS = ["eventfd", "semaphore"]

pytestmark = [pytest.mark.multiprocess, pytest.mark.timeout(30)]


@contextmanager
def hostile(runtime_dir: Path, mode: str,
            backend: str = "eventfd") -> Iterator[tuple[str, subprocess.Popen]]:
    """Run the hostile host in ``mode``; yield its socket path and process."""
    path = str(runtime_dir / f"hostile-{mode}.sock")
    p = subprocess.Popen([sys.executable, str(PEER), path, mode, backend],
                         stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        ready, _, _ = select.select([p.stdout], [], [], 10)
        assert ready and p.stdout.readline().strip() == "ready", "the hostile host did not start"
        yield path, p
    finally:
        if p.poll() is None:
            p.kill()
        p.wait(10)
        p.stdout.close()
        if os.path.exists(path):
            os.unlink(path)
        for sem in glob.glob(f"/dev/shm/sem.hgsmi-hh{p.pid}.*"):  # left by a SIGKILL
            os.unlink(sem)


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """Run ``fn``: (its result or the exception it raised, wall seconds, CPU seconds)."""
    t0, c0 = time.monotonic(), time.thread_time()
    try:
        out: Any = fn()
    except Exception as e:  # the outcome under test
        out = e
    return out, time.monotonic() - t0, time.thread_time() - c0


def expect(outcome: tuple[Any, float, float], exc: type[BaseException], timeout: float,
           what: str, sleeps: bool = True) -> None:
    """``outcome`` (of :func:`timed` or :func:`async_call`: result, wall and CPU
    seconds) is ``exc``, within ``timeout`` + SLACK; a sleeping wait uses little CPU."""
    out, wall, cpu = outcome
    assert isinstance(out, exc), f"{what}: {out!r}, not {exc.__name__}"
    assert wall <= timeout + SLACK, f"{what}: {wall:.3f} s for a {timeout} s timeout"
    if sleeps:  # a spin burns the whole wait; a sleep, a few ms
        assert cpu <= 0.1 * timeout + 0.05, f"{what}: {cpu:.3f} s CPU in {wall:.3f} s"


# -- hostile fds -----------------------------------------------------------------
@pytest.mark.parametrize("mode", ["pipe", "file", "eventfd-sem", "unsealed", "oversize"])
def test_hostile_fds_are_refused_at_attach(runtime_dir, mode):
    """Not an eventfd (or one in semaphore mode), or a segment that is not a
    memfd sealed at the announced size: ProtocolError at once, nothing leaked."""
    fds = len(os.listdir("/proc/self/fd"))
    with hostile(runtime_dir, mode) as (path, _):
        expect(timed(lambda: hgsmi.Guest(path, connect_timeout=1)),
               hgsmi.ProtocolError, 1.0, f"attach ({mode})")
        expect(timed(lambda: asyncio.run(_async_attach(path))),
               hgsmi.ProtocolError, 1.0, f"AsyncGuest ({mode})")
    assert len(os.listdir("/proc/self/fd")) == fds, "an fd of the welcome leaked"


def async_call(path: str, data: bytes, timeout: float) -> tuple[Any, float, float]:
    """An AsyncGuest's call: (its result or exception, wall and CPU seconds of the call).

    The attach and the close are left out: closing a semaphore guest joins its
    waiter thread, which sleeps in 200 ms slices.
    """
    async def run() -> tuple[Any, float, float]:
        async with AsyncGuest(path, connect_timeout=1) as ag:
            t0, c0 = time.monotonic(), time.thread_time()
            try:
                out: Any = await ag.call(CH, 0, data, timeout=timeout)
            except Exception as e:  # the outcome under test
                out = e
            return out, time.monotonic() - t0, time.thread_time() - c0

    return asyncio.run(run())


async def _async_attach(path: str) -> None:
    g = AsyncGuest(path, connect_timeout=1)
    await g.aclose()


def test_blocking_eventfd_at_its_maximum_neither_blocks_call_nor_async_guest(runtime_dir):
    """The doorbell is a blocking eventfd at its maximum count and the host asks
    to be rung: the guest's write would block for ever.  Made non-blocking at
    attach, the call times out as asked, and AsyncGuest() (whose first round
    reads the blocking IRQ eventfd) comes up."""
    with hostile(runtime_dir, "eventfd-max") as (path, _):
        with hgsmi.Guest(path, connect_timeout=1) as g:
            expect(timed(lambda: g.call(CH, 0, b"ring", timeout=1)), hgsmi.Timeout, 1.0, "call")

        expect(async_call(path, b"ring", 1), hgsmi.Timeout, 1.0, "AsyncGuest call")


# -- a stray byte on the control socket ---------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_stray_byte_then_death_is_peer_gone_not_a_spin(runtime_dir, backend):
    """The host writes one byte after the welcome and dies: the guest reads the
    byte and the EOF behind it, and says PeerGone at once (it used to spin on
    the readable socket until its timeout and say Timeout)."""
    with hostile(runtime_dir, "stray-die", backend) as (path, p):
        with hgsmi.Guest(path, connect_timeout=1) as g:
            assert p.wait(10) == 0
            expect(timed(lambda: g.call(CH, 0, b"x", timeout=2)), hgsmi.PeerGone, 0.0, "call")
            expect(timed(lambda: g.poll(None)), hgsmi.PeerGone, 0.0, "poll(None) after")


@pytest.mark.parametrize("backend", BACKENDS)
def test_stray_byte_then_death_ends_an_async_guest(runtime_dir, backend):
    """The same for AsyncGuest, which used to stop watching the socket at the
    first byte and so missed the death: its pending call now fails with PeerGone."""
    with hostile(runtime_dir, "stray-die", backend) as (path, p):
        expect(async_call(path, b"x", 2), hgsmi.PeerGone, 0.0, "AsyncGuest call")


@pytest.mark.parametrize("backend", BACKENDS)
def test_stray_byte_from_a_live_host_is_a_protocol_error(runtime_dir, backend):
    """The host writes one byte while the guest sleeps in a call, and stays:
    ProtocolError at once, then the connection is over (PeerGone)."""
    with hostile(runtime_dir, "stray-alive", backend) as (path, _):
        with hgsmi.Guest(path, connect_timeout=1) as g:
            expect(timed(lambda: g.call(CH, 0, b"x", timeout=2)), hgsmi.ProtocolError, 0.0, "call")
            expect(timed(lambda: g.call(CH, 0, b"again", timeout=2)),
                   hgsmi.PeerGone, 0.0, "the next call")

        expect(async_call(path, b"x", 2), hgsmi.ProtocolError, 0.0, "AsyncGuest call")


# -- a full ack ring ------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_full_ack_ring_honours_the_poll_timeout_and_says_so(runtime_dir, backend):
    """Bad host buffers on the FIFO must be acked, and the host keeps the ack
    ring full: poll(0.5) gives up at 0.5 s, sleeping, with Timeout, and counts
    the acks it could not hand back (it took 2 s at 100% CPU and said nothing)."""
    with hostile(runtime_dir, "ack-full", backend) as (path, _):
        with hgsmi.Guest(path, connect_timeout=1) as g:
            expect(timed(lambda: g.poll(0.5)), hgsmi.Timeout, 0.5, "poll")
            assert g.stats()["acks_dropped"] > 0

        expect(async_call(path, b"x", 1), hgsmi.ProtocolError, 0.0, "AsyncGuest call")


# -- what already held ------------------------------------------------------------------
def test_bad_fifo_offsets_are_counted_and_every_poll_keeps_its_timeout(runtime_dir):
    with hostile(runtime_dir, "bad-fifo") as (path, _):
        with hgsmi.Guest(path, connect_timeout=1) as g:
            for i in range(5):
                out, wall, cpu = timed(lambda: g.poll(0.3))
                assert out == 0, f"poll {i}: {out!r}"
                assert wall <= 0.3 + SLACK, f"poll {i}: {wall:.3f} s"
            assert g.stats()["errors"] > 0


@pytest.mark.parametrize("mode", ["never", "unknown", "irq-forever"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_host_that_never_answers_cannot_stretch_a_call(runtime_dir, mode, backend):
    """Submissions taken and never completed, completions of offsets never
    sent, an IRQ raised without pause: Timeout, on time."""
    with hostile(runtime_dir, mode, backend) as (path, _):
        with hgsmi.Guest(path, connect_timeout=1) as g:
            # The IRQ storm wakes the guest at the host's pace: CPU is the host's doing.
            sleeps = mode != "irq-forever"
            expect(timed(lambda: g.call(CH, 0, b"x", timeout=0.5)),
                   hgsmi.Timeout, 0.5, f"call ({mode})", sleeps)
            out, wall, cpu = timed(lambda: g.wait(0.5))
            assert out in (True, False) and wall <= 0.5 + SLACK, f"wait: {out!r} {wall:.3f} s"
            out, wall, cpu = timed(lambda: g.poll(0.5))
            assert out == 0 and wall <= 0.5 + SLACK, f"poll: {out!r} {wall:.3f} s"
            if mode == "unknown":
                assert g.stats()["errors"] > 0


def test_hostile_ring_indices_are_a_protocol_error(runtime_dir):
    with hostile(runtime_dir, "indices") as (path, _):
        with hgsmi.Guest(path, connect_timeout=1) as g:
            expect(timed(lambda: g.call(CH, 0, b"x", timeout=1)), hgsmi.ProtocolError, 0.0, "call")
            expect(timed(lambda: g.poll(1)), hgsmi.ProtocolError, 0.0, "poll")
