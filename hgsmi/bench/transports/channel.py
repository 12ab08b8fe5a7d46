# SPDX-License-Identifier: MIT
"""
One peer's end of a connected transport, and the four loops every Python
transport runs on it.

A transport only says how to send and receive one message (:class:`Channel`);
the loops that send, receive, time and check are shared. All transports
therefore pay the same per-message Python overhead, and a comparison
measures the transports themselves, not their loops.

Roles: ``stream_send`` and ``stream_recv`` for streams (the receiver
measures), ``rtt_client`` (the guest, which measures) and ``rtt_server``
(the host, which checks the request and echoes it back).
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod

from .base import Job, StreamResult, markers, pattern_buffer

#: What a channel sends: bytes-like, ``len()`` and indexing give bytes.
Message = bytes | bytearray | memoryview


class Channel(ABC):
    """One peer's end of a connected transport, inside a child process.

    ``recv`` returns a view that stays valid until the next ``recv`` or
    ``call``; ``None`` means the peer sent its end marker.
    """

    def payload(self, size: int) -> Message:
        """The message the sending loops send, filled with the check
        pattern (a page-aligned view unless the transport prefers another
        type)."""
        return memoryview(pattern_buffer(size))[:size]

    @abstractmethod
    def send(self, msg: Message) -> None:
        """Send one message."""

    @abstractmethod
    def send_end(self) -> None:
        """Tell the peer that no more messages follow."""

    @abstractmethod
    def recv(self) -> Message | None:
        """Receive one message, or None at the peer's end marker."""

    def call(self, msg: Message) -> Message:
        """One synchronous request/reply (default: send, then recv)."""
        self.send(msg)
        reply = self.recv()
        if reply is None:
            raise EOFError("peer ended the stream instead of replying")
        return reply

    def close(self) -> None:  # noqa: B027 - a hook: most channels hold nothing to release
        """Release the channel after a successful run."""


class BytesChannel(Channel):
    """A channel that sends ``bytes`` objects, for transports that take
    their messages as objects (queues pickle them) rather than views."""

    def payload(self, size: int) -> Message:
        return bytes(pattern_buffer(size)[:size])


def _bad(msg: Message, size: int) -> RuntimeError:
    got = bytes(msg[:1]) + b".." + bytes(msg[-1:]) if len(msg) else b""
    return RuntimeError(f"corrupt message: {len(msg)} bytes {got!r}, expected {size}")


def stream_send(chan: Channel, job: Job) -> None:
    """Send ``job.size``-byte messages until the count or time bound, then
    the end marker."""
    msg = chan.payload(job.size)
    send, clock = chan.send, time.perf_counter
    count, end = job.max_count, clock() + job.max_seconds
    n = 0
    while n < count and clock() < end:
        send(msg)
        n += 1
    chan.send_end()


def stream_recv(chan: Channel, job: Job) -> StreamResult:
    """Receive until the end marker, checking the first and last byte of
    every message; time from the first message to the end marker."""
    size = job.size
    first, last = markers(size)
    recv, clock = chan.recv, time.perf_counter
    msg = recv()
    t0 = clock()
    if msg is None:
        raise RuntimeError("the stream ended before its first message")
    n = -1
    while msg is not None:
        if len(msg) != size or msg[0] != first or msg[-1] != last:
            raise _bad(msg, size)
        n += 1
        msg = recv()
    seconds = clock() - t0
    return {"msgs": n, "bytes": n * size, "seconds": seconds}


def rtt_client(chan: Channel, job: Job) -> list[float]:
    """Make ``job.warmup`` untimed calls, then up to ``job.count`` timed
    ones (fewer if ``job.seconds`` runs out); return latencies in seconds."""
    size = job.size
    first, last = markers(size)
    msg = chan.payload(size)
    call, clock = chan.call, time.perf_counter
    for _ in range(job.warmup):
        reply = call(msg)
        if len(reply) != size or reply[0] != first or reply[-1] != last:
            raise _bad(reply, size)
    lat: list[float] = []
    append = lat.append
    end = clock() + job.max_seconds
    for _ in range(job.max_count):
        t0 = clock()
        reply = call(msg)
        t1 = clock()
        if len(reply) != size or reply[0] != first or reply[-1] != last:
            raise _bad(reply, size)
        append(t1 - t0)
        if t1 >= end:
            break
    chan.send_end()
    return lat


def rtt_server(chan: Channel, job: Job) -> None:
    """Answer each request with itself until the end marker, checking it."""
    size = job.size
    first, last = markers(size)
    recv, send = chan.recv, chan.send
    req = recv()
    while req is not None:
        if len(req) != size or req[0] != first or req[-1] != last:
            raise _bad(req, size)
        send(req)
        req = recv()
