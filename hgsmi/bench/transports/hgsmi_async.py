# SPDX-License-Identifier: MIT
"""
"hgsmi-async": the guest is an :class:`hgsmi.aio.AsyncGuest` in an asyncio
loop (its IRQ eventfd in the loop, no thread); the host is the ordinary
Python ``Host`` of the other hgsmi transports, in its own process.

- ``g2h``: ``await g.send_many(...)``, :func:`~.hgsmi_transports.batch_for`
  messages per call (one doorbell each).
- ``h2g``: the host posts (once the guest has called to say its handlers
  are registered); a plain handler on the AsyncGuest checks each message,
  served from the loop.
- ``rtt``: sequential ``await g.call(...)``, each timed.
- :meth:`HgsmiAsync.concurrent`: ``inflight`` coroutines calling at once
  (their submissions of one loop iteration share a doorbell); calls/s as
  the guest sees them.

The guest cannot spin (it sleeps in the event loop); ``spin_us`` applies to
the host only. The end marker is an awaited call on another channel, as in
the other hgsmi transports.
"""
from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

from .base import DEFAULT_TIMEOUT, Job, StreamResult, markers, pattern_buffer
from .hgsmi_transports import (
    DATA_CH,
    END_CH,
    GO_CH,
    HgsmiTransport,
    StreamCounter,
    _source,
    batch_for,
    host_post,
    host_recv,
)
from .peers import Loop

#: coroutines with a call in flight at once in :meth:`HgsmiAsync.concurrent`
DEFAULT_INFLIGHT = 256


class _GuestEnd:
    """The guest child's end: the AsyncGuest is made inside ``asyncio.run``."""

    def __init__(self, end: tuple[str, str, int, int]) -> None:
        self.end = end

    def close(self) -> None:
        """The loop closed the AsyncGuest already."""


def _open_guest_end(end: tuple[str, str, int, int], job: Job) -> _GuestEnd:
    return _GuestEnd(end)


async def _attach(end: tuple[str, str, int, int], job: Job) -> Any:
    """An AsyncGuest of the host ``end``, retried until the host listens."""
    from hgsmi.aio import AsyncGuest
    from hgsmi.errors import HostNotFound
    name, rundir, _, _ = end
    deadline = time.monotonic() + min(job.timeout, 20.0)
    while True:
        try:
            return AsyncGuest(name, runtime_dir=rundir)
        except (HostNotFound, ConnectionRefusedError, FileNotFoundError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.005)


def run_in_loop(body: Any, peer: _GuestEnd, job: Job) -> Any:
    """A guest loop: ``await body(g, job)`` with an attached guest, then the
    synchronous end marker; the guest is closed either way. (Bind ``body``
    with functools.partial: the loop is pickled into the spawned child.)"""
    async def main() -> Any:
        g = await _attach(peer.end, job)
        try:
            result = await body(g, job)
            await g.call(END_CH, 0, b"end")
            return result
        finally:
            await g.aclose()
    return asyncio.run(main())


async def _send(g: Any, job: Job) -> None:
    size = job.size
    msg = _source(size)
    b = batch_for(size)
    full = [msg] * b
    count, clock = job.max_count, time.perf_counter
    end = clock() + job.max_seconds
    n = 0
    while n < count and clock() < end:
        k = min(b, count - n)
        n += await g.send_many(DATA_CH, 0, full if k == b else full[:k])


def _checker(size: int) -> Any:
    """A reply check: length, first and last byte."""
    first, last = markers(size)

    def ok(r: Any) -> bool:
        return len(r) == size and r[0] == first and r[-1] == last
    return ok


async def _rtt(g: Any, job: Job) -> list[float]:
    size = job.size
    msg = memoryview(pattern_buffer(size))[:size]
    ok, call, clock = _checker(size), g.call, time.perf_counter
    for _ in range(job.warmup):
        if not ok(await call(DATA_CH, 0, msg, size)):
            raise RuntimeError("corrupt reply")
    lat: list[float] = []
    end = clock() + job.max_seconds
    for _ in range(job.max_count):
        t0 = clock()
        r = await call(DATA_CH, 0, msg, size)
        t1 = clock()
        if not ok(r):
            raise RuntimeError("corrupt reply")
        lat.append(t1 - t0)
        if t1 >= end:
            break
    return lat


async def _concurrent(inflight: int, g: Any, job: Job) -> StreamResult:
    """``inflight`` workers call until the time or count bound; every reply
    is checked. Timed from when all workers have started."""
    size = job.size
    msg = memoryview(pattern_buffer(size))[:size]
    ok, call, clock = _checker(size), g.call, time.perf_counter
    done = 0
    stop = clock() + job.max_seconds

    async def worker() -> None:
        nonlocal done
        while done < job.max_count and clock() < stop:
            if not ok(await call(DATA_CH, 0, msg, size)):
                raise RuntimeError("corrupt reply")
            done += 1

    # one untimed round trip per worker: attach costs stay out of the figure
    await asyncio.gather(*(call(DATA_CH, 0, msg, size) for _ in range(inflight)))
    t0 = clock()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return {"msgs": done, "bytes": done * size, "seconds": clock() - t0}


async def _recv(g: Any, job: Job) -> StreamResult:
    """Serve host commands from the loop until the end marker."""
    rx = StreamCounter(job.size)
    ended = asyncio.Event()

    def on_end(msg: Any) -> None:
        rx.on_end(msg)
        ended.set()

    g.register(DATA_CH, rx.on_data)
    g.register(END_CH, on_end)
    await g.call(GO_CH, 0, b"ready")  # the host posts only from now on
    await asyncio.wait_for(ended.wait(), job.timeout)
    return rx.result()


def _recv_loop(peer: _GuestEnd, job: Job) -> StreamResult:
    """h2g: the host ends with a posted marker, so no end call here."""
    async def main() -> StreamResult:
        g = await _attach(peer.end, job)
        try:
            return await _recv(g, job)
        finally:
            await g.aclose()
    return asyncio.run(main())


class HgsmiAsync(HgsmiTransport):
    """hgsmi with an asyncio guest (see module docstring)."""

    name = "hgsmi-async"
    mode = "async"
    open_guest = staticmethod(_open_guest_end)

    def loops(self, job: Job) -> tuple[Loop, Loop]:
        if job.kind == "rtt":
            return host_recv, functools.partial(run_in_loop, _rtt)
        if job.direction == "g2h":
            return host_recv, functools.partial(run_in_loop, _send)
        return functools.partial(host_post, ready_call=True), _recv_loop

    def supports(self, workload: str) -> bool:
        return workload in ("g2h", "h2g", "rtt")

    def concurrent(self, size: int = 64, inflight: int = DEFAULT_INFLIGHT, *,
                   seconds: float | None = 0.5, count: int | None = None,
                   timeout: float = DEFAULT_TIMEOUT,
                   cpus: tuple[int, int] | None = None) -> StreamResult:
        """Calls/s with ``inflight`` coroutines calling at once (echo of
        ``size`` bytes), as the guest measures it."""
        job = Job("rtt", "g2h", size, seconds, count, timeout=timeout, cpus=cpus)
        guest = functools.partial(run_in_loop, functools.partial(_concurrent, inflight))
        result: StreamResult = self.run_peers(job, host_recv, guest)["guest"]
        return result

    def guests_n(self, n: int, size: int, seconds: float = 0.5,
                 timeout: float = DEFAULT_TIMEOUT) -> StreamResult:
        raise NotImplementedError("guests-8 runs the synchronous transports")
