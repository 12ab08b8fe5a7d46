# SPDX-License-Identifier: MIT
"""
The hgsmi transports, behind the same :class:`~.base.Transport` interface as
the baselines, with the host and the guest in two spawned processes.

- ``hgsmi-copy``: ``Guest.send(bytes)`` (g2h), ``GuestConn.post(bytes)``
  (h2g) and ``Guest.call(bytes)`` (rtt): one copy into the VRAM each way.
- ``hgsmi-zerocopy``: ``Guest.loan`` of up to :func:`loan_batch_for` buffers +
  fill in place + ``publish`` (g2h), or ``alloc`` + ``call_buffer`` (rtt).
  The stream fills every byte of each buffer in the VRAM (the work a
  producer does there, and what the copy modes and iceoryx2's loan do); the
  rtt writes only the two bytes the receiver checks. The host has no Python
  alloc API, so h2g falls back to ``post`` (reported as not applicable).
- ``hgsmi-batch``: ``Guest.send_many`` (g2h) and ``GuestConn.post_many``
  (h2g): up to :func:`batch_for` messages per doorbell or IRQ (rtt is one
  call).

Unlike the channel-based baselines, hgsmi delivers messages to handlers, so
it runs its own loops (below), with the same rules: the receiver touches the
first and last byte of every message from Python, the clock starts at the
first message and stops at the end marker, and rtt echoes the request
(in place: the handler returns None and the reply is the request buffer).

The end marker is a synchronous ``call`` on another channel (g2h, rtt) so the
guest cannot detach before the host has seen everything; for h2g the host
posts the marker and then serves until the guest has detached.

``spin_us`` is passed to both ``Host`` and ``Guest`` (adaptive spin before
sleeping); 0 is sleep only.
"""
from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Iterator
from typing import Any

from .base import DEFAULT_TIMEOUT, Cpus, Job, StreamResult, markers, pattern_buffer
from .peers import Loop, Opened, PeerTransport, temp_dir

DATA_CH, END_CH, GO_CH = 16, 17, 18
#: bytes per guest segment: room for several 1 MiB messages in flight
SEGMENT = 64 << 20


def batch_for(size: int) -> int:
    """Messages per doorbell for hgsmi-batch: 256 small ones, at most ~2 MiB."""
    return max(1, min(256, (2 << 20) // size))


#: the most bytes of buffers one zero-copy loan holds: a stream keeps two to
#: four loans' buffers in flight and refills them as the host frees them, so
#: this keeps what the producer writes within a core's L2 (1.25 MiB on the
#: Xeon measured in docs/performance.md, "Loan batches": 8 x 64 KiB ran at
#: 0.9-1.05x ``send``, 32 x 64 KiB at 0.75x)
LOAN_BYTES = 512 << 10


def loan_batch_for(size: int) -> int:
    """Buffers per loan for hgsmi-zerocopy: :func:`batch_for`, within
    :data:`LOAN_BYTES` a loan, and two where that allows none (1 MiB)."""
    most = batch_for(size)
    return max(min(2, most), min(most, LOAN_BYTES // size))


class _Peer:
    """What a child holds: the Host or Guest object."""

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def close(self) -> None:
        self.obj.close()


# Both return Opened, not _Peer: a subclass's opener may return another end
# (hgsmi-async's guest), and every loop here takes what its opener gave.
def _open_host(end: tuple[str, str, int, int], job: Job) -> Opened:
    from hgsmi import Host
    name, rundir, spin, segment = end
    return _Peer(Host(name, size=segment, runtime_dir=rundir, spin_us=spin))


def _open_guest(end: tuple[str, str, int, int], job: Job) -> Opened:
    from hgsmi import Guest
    from hgsmi.errors import HostNotFound
    name, rundir, spin, _ = end
    deadline = time.monotonic() + min(job.timeout, 20.0)
    while True:
        try:
            return _Peer(Guest(name, runtime_dir=rundir, spin_us=spin))
        except (HostNotFound, ConnectionRefusedError, FileNotFoundError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _end_call(g: Any) -> None:
    """The synchronous end marker, retried while the ring or heap is full."""
    from hgsmi.errors import HeapExhausted, RingFull
    while True:
        try:
            g.call(END_CH, 0, b"end")
            return
        except (RingFull, HeapExhausted):
            for b in g.completions(0.001):
                b.free()


def _source(size: int) -> memoryview:
    """The sender's payload: a pattern at ``$HGSMI_BENCH_SRC_OFFSET`` bytes
    past a page (default 0), to study 4K aliasing of the copy into the VRAM."""
    off = int(os.environ.get("HGSMI_BENCH_SRC_OFFSET", "0")) % 4096
    if not off:
        return memoryview(pattern_buffer(size))[:size]
    buf = memoryview(pattern_buffer(size + off))
    buf[off:off + size] = bytes(buf[:size])
    return buf[off:off + size]


def _bad(size: int, data: Any) -> RuntimeError:
    return RuntimeError(f"corrupt message: {len(data)} bytes, expected {size}")


class StreamCounter:
    """The receiving end of a stream, as handlers: ``on_data`` checks the
    first and last byte of each message, ``on_end`` notes an end marker;
    the clock runs from the first message to the last end marker, and the
    first message is not counted (as in every transport)."""

    __slots__ = ("size", "first", "last", "n", "t0", "t1", "ends")

    def __init__(self, size: int) -> None:
        self.size = size
        self.first, self.last = markers(size)
        self.n, self.t0, self.t1, self.ends = -1, 0.0, 0.0, 0

    def on_data(self, msg: Any) -> None:
        d = msg.data
        if len(d) != self.size or d[0] != self.first or d[-1] != self.last:
            raise _bad(self.size, d)
        if self.n < 0:
            self.t0 = time.perf_counter()
        self.n += 1

    def on_end(self, msg: Any) -> None:
        self.t1 = time.perf_counter()
        self.ends += 1

    def register(self, peer: Any) -> None:
        """Serve DATA_CH and END_CH of a Host or Guest with this counter."""
        peer.register(DATA_CH, self.on_data)
        peer.register(END_CH, self.on_end)

    def result(self) -> StreamResult:
        if self.n < 1:
            raise RuntimeError("the stream ended before its second message")
        return {"msgs": self.n, "bytes": self.n * self.size, "seconds": self.t1 - self.t0}


def _drain_guests(host: Any, seconds: float) -> None:
    """Serve until every guest has detached (their end calls complete)."""
    end = time.monotonic() + seconds
    while host.guests and time.monotonic() < end:
        host.poll(0.05)


# -- g2h and rtt: the host serves -------------------------------------------

def host_recv(peer: _Peer, job: Job) -> StreamResult | None:
    """Serve the data channel (check first/last byte of each message) until
    the end call; for streams return the steady-state measurement."""
    return host_recv_n(1, peer, job)


def _await_go(g: Any, timeout: float) -> None:
    """Wait for the host's start signal (GO_CH), so that several guests
    stream at the same time."""
    go = []
    g.register(GO_CH, lambda msg: go.append(1))
    deadline = time.monotonic() + timeout
    while not go:
        if time.monotonic() > deadline:
            raise TimeoutError("no start signal from the host")
        g.poll(0.1)


def guest_send(mode: str, peer: _Peer, job: Job, barrier: bool = False) -> None:
    """Stream job.size-byte messages to the host in ``mode``, then end."""
    g = peer.obj
    if barrier:
        _await_go(g, job.timeout)
    size = job.size
    clock = time.perf_counter
    count, end = job.max_count, clock() + job.max_seconds
    n = 0
    if mode == "copy":
        msg = _source(size)
        send = g.send
        while n < count and clock() < end:
            send(DATA_CH, 0, msg)
            n += 1
    elif mode == "batch":
        msg = _source(size)
        b = batch_for(size)
        many = g.send_many
        full = [msg] * b
        while n < count and clock() < end:
            k = min(b, count - n)
            many(DATA_CH, 0, full if k == b else full[:k])
            n += k
    elif mode == "zerocopy":
        # Loan a batch, fill it in place, publish it: one crossing into C
        # each way per batch, and the completions free themselves.  Every
        # byte is written, as a producer would and as the copy modes and
        # iceoryx2's loan do, so the rows compare the same work: the fill
        # is CPython's memcpy (memoryview slice assignment of contiguous
        # bytes) from the same page-aligned source that copy mode's C
        # memcpy reads.
        msg = _source(size)
        b = loan_batch_for(size)
        loan = g.loan
        while n < count and clock() < end:
            batch = loan(DATA_CH, 0, size, min(b, count - n))
            for d in batch.views:
                d[:] = msg
            batch.publish()
            n += len(batch)
    else:
        raise ValueError(mode)
    _end_call(g)


def guest_rtt(mode: str, peer: _Peer, job: Job) -> list[float]:
    """Synchronous echo calls; the guest checks every reply."""
    g = peer.obj
    size = job.size
    first, last = markers(size)
    clock = time.perf_counter
    if mode == "zerocopy":
        alloc, call_buffer = g.alloc, g.call_buffer

        def call() -> Any:
            buf = alloc(DATA_CH, 0, size, size)
            d = buf.data
            d[0] = first
            d[-1] = last
            del d
            r = call_buffer(buf)
            ok = len(r) == size and r[0] == first and r[-1] == last
            del r
            buf.free()
            return ok
    else:
        msg = memoryview(pattern_buffer(size))[:size]
        gcall = g.call

        def call() -> Any:
            r = gcall(DATA_CH, 0, msg, size)
            return len(r) == size and r[0] == first and r[-1] == last

    for _ in range(job.warmup):
        if not call():
            raise RuntimeError("corrupt reply")
    lat: list[float] = []
    append = lat.append
    end = clock() + job.max_seconds
    for _ in range(job.max_count):
        t0 = clock()
        ok = call()
        t1 = clock()
        if not ok:
            raise RuntimeError("corrupt reply")
        append(t1 - t0)
        if t1 >= end:
            break
    _end_call(g)
    return lat


def host_recv_n(nguests: int, peer: _Peer, job: Job,
                go: bool = False) -> StreamResult | None:
    """Serve ``nguests`` guests' data channel until each has sent its end
    call; the aggregate runs from the first message of any guest to the last
    end marker. With ``go``, each guest is told to start (GO_CH) once all
    are attached, so that they stream at the same time."""
    host = peer.obj
    rx = StreamCounter(job.size)
    rx.register(host)
    conns = host.wait_for_guests(nguests, timeout=job.timeout)
    if go:
        for conn in conns:
            conn.post(GO_CH, 0, b"go")
    poll = host.poll
    while rx.ends < nguests:
        poll(0.5)
    _drain_guests(host, 5)
    return None if job.kind == "rtt" else rx.result()


def _cpu_seconds() -> float:
    import resource
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def idle_host(peer: _Peer, job: Job) -> float:
    """Serve an attached, idle guest for job.seconds; return CPU seconds."""
    host = peer.obj
    host.wait_for_guests(1, timeout=job.timeout)
    c0, end = _cpu_seconds(), time.monotonic() + job.max_seconds
    while time.monotonic() < end:
        host.poll(max(0.0, min(1.0, end - time.monotonic())))
    used = _cpu_seconds() - c0
    _drain_guests(host, 10)
    return used


def idle_guest(peer: _Peer, job: Job) -> float:
    """Stay attached and waiting for the IRQ for job.seconds; CPU seconds."""
    g = peer.obj
    c0, end = _cpu_seconds(), time.monotonic() + job.max_seconds
    while time.monotonic() < end:
        g.poll(max(0.0, min(1.0, end - time.monotonic())))
    return _cpu_seconds() - c0


# -- h2g: the host posts, the guest serves -----------------------------------

def host_post(peer: _Peer, job: Job, ready_call: bool = False, mode: str = "copy") -> None:
    """Post job.size-byte messages to the guest, then the end marker, then
    serve until the guest detaches. With ``ready_call``, first wait for the
    guest's call on GO_CH: a guest that serves host commands as soon as it
    attaches (asyncio) would fail messages for channels it has not yet
    registered.  ``mode`` "batch" posts up to :func:`batch_for` a call with
    ``post_many`` (one IRQ each), anything else one ``post`` each."""
    host = peer.obj
    size = job.size
    ready: list[int] = []
    host.register(GO_CH, lambda msg: ready.append(1))
    conn = host.wait_for_guests(1, timeout=job.timeout)[0]
    deadline = time.monotonic() + job.timeout
    while ready_call and not ready:
        if time.monotonic() > deadline:
            raise TimeoutError("the guest never said it was ready")
        host.poll(0.1)
    msg = memoryview(pattern_buffer(size))[:size]
    clock = time.perf_counter
    count, end = job.max_count, clock() + job.max_seconds
    post = conn.post
    n = 0
    if mode == "batch":
        b = batch_for(size)
        many = conn.post_many
        full = [msg] * b
        while n < count and clock() < end:
            k = min(b, count - n)
            n += many(DATA_CH, 0, full if k == b else full[:k])
    else:
        while n < count and clock() < end:
            post(DATA_CH, 0, msg)
            n += 1
    post(END_CH, 0, b"end")
    _drain_guests(host, job.timeout)


def guest_recv(peer: _Peer, job: Job) -> StreamResult:
    """Serve host commands (check first/last byte) until the end marker."""
    g = peer.obj
    rx = StreamCounter(job.size)
    rx.register(g)
    poll = g.poll
    while not rx.ends:
        poll(0.5)
    return rx.result()



class HgsmiTransport(PeerTransport):
    """hgsmi between a Host and a Guest process, in one of three modes."""

    mode = "copy"
    open_host = staticmethod(_open_host)
    open_guest = staticmethod(_open_guest)

    def __init__(self, spin_us: int = 0, segment: int = SEGMENT) -> None:
        self.spin_us = spin_us
        self.segment = segment

    @contextlib.contextmanager
    def endpoints(self, job: Job) -> Iterator[tuple[Any, Any]]:
        with temp_dir("hgsmi-bench-") as rundir:
            end = (f"b{os.getpid() % 100000}x{time.monotonic_ns() % 10**6}", rundir, self.spin_us,
                   self.segment)
            yield end, end

    def loops(self, job: Job) -> tuple[Loop, Loop]:
        if job.kind == "rtt":
            return host_recv, functools.partial(guest_rtt, self.mode)
        if job.direction == "g2h":
            return host_recv, functools.partial(guest_send, self.mode)
        return functools.partial(host_post, mode=self.mode), guest_recv

    def idle_cpu(self, seconds: float = 5.0, cpus: Cpus = None) -> dict[str, float]:
        """CPU seconds (user+sys) the host and an attached guest use while
        idle for ``seconds``, each measured with getrusage in its own process."""
        job = Job("stream", "g2h", 64, seconds, None, timeout=seconds + 30, cpus=cpus)
        r = self.run_peers(job, idle_host, idle_guest)
        return {"host": r["host"], "guest": r["guest"]}

    def guests_n(self, n: int, size: int, seconds: float = 0.5,
                 timeout: float = DEFAULT_TIMEOUT) -> StreamResult:
        """Aggregate g2h throughput of ``n`` guests streaming to one host."""
        job = Job("stream", "g2h", size, seconds, None, timeout=timeout)
        guest_loop = functools.partial(guest_send, self.mode, barrier=True)
        host_loop = functools.partial(host_recv_n, n, go=True)
        r = self.run_peers(job, host_loop, guest_loop, guests=n)
        result: StreamResult = r["host"]
        return result


class HgsmiCopy(HgsmiTransport):
    name = "hgsmi-copy"
    mode = "copy"


class HgsmiZeroCopy(HgsmiTransport):
    name = "hgsmi-zerocopy"
    mode = "zerocopy"

    def supports(self, workload: str) -> bool:
        return workload in ("g2h", "rtt")


class HgsmiBatch(HgsmiTransport):
    name = "hgsmi-batch"
    mode = "batch"

    def supports(self, workload: str) -> bool:
        return workload in ("g2h", "h2g")


def hgsmi_transports(spin_us: int = 0) -> list[HgsmiTransport]:
    """One instance of each hgsmi transport."""
    return [HgsmiCopy(spin_us), HgsmiZeroCopy(spin_us), HgsmiBatch(spin_us)]
