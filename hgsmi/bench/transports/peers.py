# SPDX-License-Identifier: MIT
"""
Run a transport's host and guest as two spawned Python processes.

Every Python transport uses the ``spawn`` start method: each peer is a
fresh interpreter, whatever the runner has imported or started (threads,
cffi libraries) before. The parent only orchestrates. It builds the
endpoints, starts both peers, waits for their results up to the job's
timeout, and kills both when anything goes wrong. Each child also has two
safety nets of its own: ``PR_SET_PDEATHSIG`` (it dies with the parent) and
``alarm(timeout)``. A child that fails reports its traceback and exits
without closing its channel, because closing might wait for a dead peer.
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
import time
import traceback
from abc import abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from multiprocessing import reduction
from multiprocessing.connection import Connection, wait
from typing import Any, Literal, Protocol, TypeVar, cast

from .base import DEFAULT_TIMEOUT, DEFAULT_WARMUP, Cpus, Direction, Job, StreamResult, Transport
from .channel import Channel, rtt_client, rtt_server, stream_recv, stream_send


class Opened(Protocol):
    """What a child's opener returns and its loop runs on: a :class:`Channel`,
    or a transport's own end (hgsmi's peers hold a Host or a Guest)."""

    def close(self) -> None:
        """Release it, once the loop has returned."""


#: Opens one peer's end from its endpoint (runs in the child).
Opener = Callable[[Any, Job], Opened]
#: Runs one peer on what its opener returned: one of the loops in
#: :mod:`.channel`, or a transport's own.  Its first parameter is Any because
#: each loop takes the type its own transport's opener returns.
Loop = Callable[[Any, Job], Any]
Role = Literal["host", "guest"]

_CTX = mp.get_context("spawn")
#: Seconds a peer may take to exit after reporting success.
_EXIT_GRACE = 5.0
_PR_SET_PDEATHSIG = 1


class PassedFd:
    """A file descriptor that a ``spawn`` child receives under the same
    number (multiprocessing passes it with ``pass_fds``). Only picklable
    while a process is being started."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Callable[[Any], PassedFd], tuple[Any]]:
        return _rebuild_fd, (reduction.DupFd(self.fd),)


def _rebuild_fd(dup: Any) -> PassedFd:
    return PassedFd(dup.detach())


_T = TypeVar("_T")


# -- what endpoints() are made of ----------------------------------------------

@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[str]:
    """A new private directory, removed with all it holds on exit."""
    path = tempfile.mkdtemp(prefix=prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def closing_fds() -> Iterator[list[int]]:
    """A list to put each fd in as soon as it is made; all are closed on exit."""
    fds: list[int] = []
    try:
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


@contextlib.contextmanager
def one_each_way(channel: Callable[[Any, Any], Channel], make: Callable[[], _T],
                 close: Callable[[_T], None]) -> Iterator[tuple[Any, Any]]:
    """A queue (or the like) for each direction, both closed on exit. Each
    end names ``channel`` and its (tx, rx): the host's (h2g, g2h), the
    guest's (g2h, h2g); :func:`open_each_way` opens it."""
    g2h, h2g = make(), make()
    try:
        yield (channel, h2g, g2h), (channel, g2h, h2g)
    finally:
        for q in (g2h, h2g):
            close(q)


def open_each_way(end: tuple[Callable[[Any, Any], Channel], Any, Any], job: Job) -> Channel:
    """The channel of an end from :func:`one_each_way` (in the child)."""
    channel, tx, rx = end
    return channel(tx, rx)


def _loops(job: Job) -> tuple[Loop, Loop]:
    """The (host, guest) loops of a job."""
    if job.kind == "rtt":
        return rtt_server, rtt_client
    if job.direction == "g2h":
        return stream_recv, stream_send
    return stream_send, stream_recv


class PeerTransport(Transport):
    """A transport whose host and guest are spawned Python processes.

    A subclass gives ``endpoints(job)``, a context manager that yields the
    picklable ``(host_end, guest_end)`` and frees them on exit, and two
    module-level functions, ``open_host`` and ``open_guest``, that turn an
    end into a :class:`Channel` inside the child (assign them wrapped in
    ``staticmethod``; they are pickled by reference).
    """

    @staticmethod
    @abstractmethod
    def open_host(end: Any, job: Job) -> Opened:
        """Open the host's channel from its end (in the host child)."""

    @staticmethod
    @abstractmethod
    def open_guest(end: Any, job: Job) -> Opened:
        """Open the guest's channel from its end (in the guest child)."""

    @abstractmethod
    def endpoints(self, job: Job) -> AbstractContextManager[tuple[Any, Any]]:
        """Create the connection's shared objects for one job."""

    def stream(self, direction: Direction, size: int, *,
               seconds: float | None = 0.5, count: int | None = None,
               timeout: float = DEFAULT_TIMEOUT, cpus: Cpus = None) -> StreamResult:
        job = Job("stream", direction, size, seconds, count, timeout=timeout, cpus=cpus)
        host, guest = self.run(job)
        result: StreamResult = host if direction == "g2h" else guest
        return result

    def rtt(self, size: int = 64, count: int = 2000, *,
            seconds: float | None = None, warmup: int = DEFAULT_WARMUP,
            timeout: float = DEFAULT_TIMEOUT, cpus: Cpus = None) -> list[float]:
        job = Job("rtt", "g2h", size, seconds, count, warmup, timeout, cpus)
        latencies: list[float] = self.run(job)[1]
        return latencies

    def loops(self, job: Job) -> tuple[Loop, Loop]:
        """The (host, guest) loops of a job: by default the shared ones of
        :mod:`.channel`."""
        return _loops(job)

    def run(self, job: Job) -> tuple[Any, Any]:
        """Run one job in two fresh processes; return (host, guest) results."""
        results = self.run_peers(job, *self.loops(job))
        return results["host"], results["guest"]

    def run_peers(self, job: Job, host_loop: Loop, guest_loop: Loop,
                  guests: int = 1) -> dict[str, Any]:
        """Run a host and ``guests`` guests (roles host, guest, guest1..),
        each in a fresh process, and return each role's result."""
        deadline = time.monotonic() + job.timeout
        procs: list[mp.process.BaseProcess] = []
        conns: dict[Connection, str] = {}
        ok = False
        with self.endpoints(job) as (host_end, guest_end):
            peers: list[tuple[str, Role, Opener, Loop, Any]] = [
                ("host", "host", type(self).open_host, host_loop, host_end)]
            peers += [("guest" if i == 0 else f"guest{i}", "guest", type(self).open_guest,
                       guest_loop, guest_end) for i in range(guests)]
            try:
                for name, role, opener, loop, end in peers:
                    rx, tx = _CTX.Pipe(duplex=False)
                    proc = _CTX.Process(
                        target=_child, name=f"{self.name}-{name}", daemon=True,
                        args=(opener, loop, end, job, job.cpu(role), tx, os.getpid()))
                    conns[rx] = name
                    proc.start()
                    procs.append(proc)
                    tx.close()
                results = _collect(dict(conns), procs, deadline)
                ok = True
            finally:
                _reap(procs, _EXIT_GRACE if ok else 0.0)
                for rx in conns:
                    rx.close()
        return results


class QueueEachWay(PeerTransport):
    """A transport of one queue per direction: ``endpoints`` returns
    :func:`one_each_way` of its channel class and queues."""

    open_host = open_guest = staticmethod(open_each_way)


def _collect(conns: dict[Connection, str], procs: list[mp.process.BaseProcess],
             deadline: float) -> dict[str, Any]:
    """Each role's result; raises on the first failure, death or timeout."""
    results: dict[str, Any] = {}
    while conns:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"peers {sorted(conns.values())} did not finish in time")
        for ready in wait(list(conns), left):
            rx = cast(Connection, ready)
            role = conns.pop(rx)
            try:
                status, value = rx.recv()
            except EOFError:
                codes = {p.name: p.exitcode for p in procs}
                raise RuntimeError(f"{role} peer died without a result {codes}") from None
            if status != "ok":
                raise RuntimeError(f"{role} peer failed:\n{value}")
            results[role] = value
    return results


def _reap(procs: list[mp.process.BaseProcess], grace: float) -> None:
    """Join every child, killing any still alive after ``grace`` seconds."""
    end = time.monotonic() + grace
    for proc in procs:
        proc.join(max(0.0, end - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()
        proc.close()


def _child(opener: Opener, loop: Loop, end: Any, job: Job, cpu: int | None,
           tx: Connection, parent: int) -> None:
    """A peer's body: pin it, open the channel, run the loop, report the
    result. (Threads the channel starts inherit the pinning.)"""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)
    signal.alarm(math.ceil(job.timeout) + 1)
    try:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        chan = opener(end, job)
        result = loop(chan, job)
        chan.close()
    except BaseException:
        with contextlib.suppress(OSError):
            tx.send(("err", traceback.format_exc()))
        os._exit(1)
    tx.send(("ok", result))
