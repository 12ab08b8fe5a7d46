# SPDX-License-Identifier: MIT
"""
Three stdlib transports, each used the way its documentation suggests.

- "stdlib-mp-queue": ``multiprocessing.Queue`` of ``bytes`` objects
  (pickled, fed by a background thread, bounded to about 16 MiB in flight);
  the end marker is ``None``. This is what most users write first.
- "stdlib-mp-pipe": ``multiprocessing.Pipe()`` (a socketpair) with
  ``send_bytes(view)`` and ``recv_bytes_into(buffer)`` into a preallocated
  page-aligned buffer; an empty message is the end marker. (CPython still
  reads each message into a fresh bytes object and copies it into the
  buffer, which is the stdlib's own cost.)
- "stdlib-os-pipe": two raw ``os.pipe()`` pairs (one per direction), each
  grown to 1 MiB with ``F_SETPIPE_SZ``; a frame is a u32 length and the
  payload, written with one ``os.writev`` and read with ``os.readv`` into a
  preallocated page-aligned buffer; length 0 is the end marker.
"""
from __future__ import annotations

import contextlib
import fcntl
import multiprocessing as mp
import os
import struct
from typing import Any, Iterator, Optional

from .base import Job, page_buffer, pattern_buffer
from .channel import Channel, Message
from .peers import PassedFd, PeerTransport

_CTX = mp.get_context("spawn")


# -- multiprocessing.Queue ----------------------------------------------------

class MpQueueChannel(Channel):
    """Messages as ``bytes`` through a pair of ``multiprocessing.Queue``."""

    def __init__(self, tx: Any, rx: Any) -> None:
        self._tx, self._rx = tx, rx

    def payload(self, size: int) -> bytes:
        return bytes(pattern_buffer(size)[:size])

    def send(self, msg: Message) -> None:
        self._tx.put(msg)

    def send_end(self) -> None:
        self._tx.put(None)

    def recv(self) -> Optional[bytes]:
        return self._rx.get()


def _open_queues(end: tuple[Any, Any], job: Job) -> MpQueueChannel:
    return MpQueueChannel(*end)


class MpQueue(PeerTransport):
    """``multiprocessing.Queue`` (see module docstring)."""

    name = "stdlib-mp-queue"
    open_host = staticmethod(_open_queues)
    open_guest = staticmethod(_open_queues)

    @contextlib.contextmanager
    def endpoints(self, job: Job) -> Iterator[tuple[Any, Any]]:
        """One queue per direction; each end is (tx, rx)."""
        maxsize = max(4, min(1024, (16 << 20) // job.size))
        g2h, h2g = _CTX.Queue(maxsize), _CTX.Queue(maxsize)
        try:
            yield (h2g, g2h), (g2h, h2g)
        finally:
            for q in (g2h, h2g):
                q.close()
                q.join_thread()


# -- multiprocessing.Pipe -----------------------------------------------------

class MpPipeChannel(Channel):
    """``send_bytes`` / ``recv_bytes_into`` on a ``multiprocessing`` Connection."""

    def __init__(self, conn: Any, size: int) -> None:
        self._conn = conn
        self._buf = page_buffer(size)
        self._view = memoryview(self._buf)

    def send(self, msg: Message) -> None:
        self._conn.send_bytes(msg)

    def send_end(self) -> None:
        self._conn.send_bytes(b"")

    def recv(self) -> Optional[memoryview]:
        n = self._conn.recv_bytes_into(self._buf)
        return self._view[:n] if n else None

    def close(self) -> None:
        self._conn.close()


def _open_mp_pipe(conn: Any, job: Job) -> MpPipeChannel:
    return MpPipeChannel(conn, job.size)


class MpPipe(PeerTransport):
    """``multiprocessing.Pipe`` (see module docstring)."""

    name = "stdlib-mp-pipe"
    open_host = staticmethod(_open_mp_pipe)
    open_guest = staticmethod(_open_mp_pipe)

    @contextlib.contextmanager
    def endpoints(self, job: Job) -> Iterator[tuple[Any, Any]]:
        """Both ends of one duplex Pipe."""
        host, guest = _CTX.Pipe(duplex=True)
        try:
            yield host, guest
        finally:
            host.close()
            guest.close()


# -- raw os.pipe --------------------------------------------------------------

_HDR = struct.Struct("<I")
_PIPE_SIZE = 1 << 20


def _read_exactly(fd: int, view: memoryview) -> None:
    """Fill ``view`` from ``fd``; EOFError if the writer closes first."""
    got, want = 0, len(view)
    while got < want:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            raise EOFError("pipe closed mid-frame")
        got += n


class OsPipeChannel(Channel):
    """Length-prefixed frames over a pair of raw pipes."""

    def __init__(self, tx: int, rx: int, size: int) -> None:
        self._tx, self._rx, self._cap = tx, rx, size
        self._hdr_out = bytearray(_HDR.size)
        self._hdr_in = bytearray(_HDR.size)
        self._hdr_view = memoryview(self._hdr_in)
        self._buf = memoryview(page_buffer(size))

    def send(self, msg: Message) -> None:
        n = len(msg)
        _HDR.pack_into(self._hdr_out, 0, n)
        sent = os.writev(self._tx, [self._hdr_out, msg])
        if sent != n + _HDR.size:
            self._write_rest(msg, sent)

    def _write_rest(self, msg: Message, sent: int) -> None:
        frame = [memoryview(self._hdr_out), memoryview(msg)]
        for part in frame:
            skip = min(sent, len(part))
            sent -= skip
            part = part[skip:]
            while part:
                part = part[os.write(self._tx, part):]

    def send_end(self) -> None:
        _HDR.pack_into(self._hdr_out, 0, 0)
        self._write_rest(b"", 0)

    def recv(self) -> Optional[memoryview]:
        _read_exactly(self._rx, self._hdr_view)
        (n,) = _HDR.unpack_from(self._hdr_in)
        if n == 0:
            return None
        if n > self._cap:
            raise ValueError(f"frame of {n} bytes exceeds the buffer of {self._cap}")
        view = self._buf[:n]
        _read_exactly(self._rx, view)
        return view

    def close(self) -> None:
        os.close(self._tx)
        os.close(self._rx)


def _open_os_pipe(end: tuple[PassedFd, PassedFd], job: Job) -> OsPipeChannel:
    return OsPipeChannel(end[0].fd, end[1].fd, job.size)


class OsPipe(PeerTransport):
    """Raw ``os.pipe`` with length prefixes (see module docstring)."""

    name = "stdlib-os-pipe"
    open_host = staticmethod(_open_os_pipe)
    open_guest = staticmethod(_open_os_pipe)

    @contextlib.contextmanager
    def endpoints(self, job: Job) -> Iterator[tuple[Any, Any]]:
        """Two pipes; each end is (tx fd, rx fd)."""
        fds: list[int] = []
        try:
            g2h_r, g2h_w = os.pipe()
            fds += (g2h_r, g2h_w)
            h2g_r, h2g_w = os.pipe()
            fds += (h2g_r, h2g_w)
            for fd in (g2h_w, h2g_w):
                with contextlib.suppress(OSError):
                    fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
            yield ((PassedFd(h2g_w), PassedFd(g2h_r)),
                   (PassedFd(g2h_w), PassedFd(h2g_r)))
        finally:
            for fd in fds:
                os.close(fd)
