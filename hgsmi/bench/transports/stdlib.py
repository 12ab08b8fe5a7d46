# SPDX-License-Identifier: MIT
"""
Three stdlib transports, each used the way its documentation suggests.

- "stdlib-mp-queue": ``multiprocessing.Queue`` of ``bytes`` objects
  (pickled, fed by a background thread over an ``os.pipe``, bounded to
  about 16 MiB in flight); the end marker is ``None``. This is what most
  users write first. Its throughput halves from 60 KiB to 64 KiB messages
  because a pickled message no longer fits the 64 KiB pipe and the peers
  start sleeping on each other (checked with perf: not 4K aliasing, which
  shifting the receiver's heap does not change).
- "stdlib-mp-pipe": ``multiprocessing.Pipe()`` (a socketpair) with
  ``send_bytes(view)`` and ``recv_bytes_into(buffer)`` into a preallocated
  page-aligned buffer; an empty message is the end marker. (CPython still
  reads each message into fresh bytes objects and copies them into the
  buffer, which is the stdlib's own cost.)
- "stdlib-os-pipe": two raw ``os.pipe()`` pairs (one per direction), each
  grown to 1 MiB with ``F_SETPIPE_SZ``; a frame is a u32 length and the
  payload, read with ``os.readv`` into a preallocated page-aligned buffer;
  length 0 is the end marker. Below one page a frame is one ``os.writev``;
  from one page on, the header and payload are two writes (see
  ``OsPipeChannel.send``).
"""
from __future__ import annotations

import contextlib
import fcntl
import multiprocessing as mp
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from .base import Job, page_buffer
from .channel import BytesChannel, Channel, Message
from .framed import HDR, FramedChannel
from .peers import PassedFd, PeerTransport, QueueEachWay, closing_fds, one_each_way

_CTX = mp.get_context("spawn")


# -- multiprocessing.Queue ----------------------------------------------------

class MpQueueChannel(BytesChannel):
    """Messages as ``bytes`` through a pair of ``multiprocessing.Queue``."""

    def __init__(self, tx: Any, rx: Any) -> None:
        self._tx, self._rx = tx, rx

    def send(self, msg: Message) -> None:
        self._tx.put(msg)

    def send_end(self) -> None:
        self._tx.put(None)

    def recv(self) -> bytes | None:
        msg: bytes | None = self._rx.get()
        return msg


class MpQueue(QueueEachWay):
    """``multiprocessing.Queue`` (see module docstring)."""

    name = "stdlib-mp-queue"

    def endpoints(self, job: Job) -> AbstractContextManager[tuple[Any, Any]]:
        maxsize = max(4, min(1024, (16 << 20) // job.size))
        return one_each_way(MpQueueChannel, lambda: _CTX.Queue(maxsize), _close_queue)


def _close_queue(q: Any) -> None:
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

    def recv(self) -> memoryview | None:
        n = self._conn.recv_bytes_into(self._buf)
        return self._view[:n] if n else None

    def close(self) -> None:
        self._conn.close()


def _open_mp_pipe(end: Any, job: Job) -> MpPipeChannel:
    return MpPipeChannel(end, job.size)


class MpPipe(PeerTransport):
    """``multiprocessing.Pipe`` (see module docstring)."""

    name = "stdlib-mp-pipe"
    open_host = open_guest = staticmethod(_open_mp_pipe)

    @contextlib.contextmanager
    def endpoints(self, job: Job) -> Iterator[tuple[Any, Any]]:
        """Both ends of one duplex Pipe."""
        host, guest = _CTX.Pipe(duplex=True)
        with host, guest:
            yield host, guest


# -- raw os.pipe --------------------------------------------------------------

_PIPE_SIZE = 1 << 20
_PAGE = 4096


def _write_all(fd: int, parts: list[Message], sent: int = 0) -> None:
    """Write what is left of ``parts`` after ``sent`` bytes went out."""
    for part in parts:
        view = memoryview(part)
        skip = min(sent, len(view))
        sent -= skip
        view = view[skip:]
        while view:
            view = view[os.write(fd, view):]


class OsPipeChannel(FramedChannel):
    """Length-prefixed frames over a pair of raw pipes."""

    def __init__(self, tx: int, rx: int, size: int) -> None:
        super().__init__(size)
        self._tx, self._rx = tx, rx

    def send(self, msg: Message) -> None:
        n = len(msg)
        HDR.pack_into(self._hdr_out, 0, n)
        if n < _PAGE:
            sent = os.writev(self._tx, [self._hdr_out, msg])
            if sent != n + HDR.size:
                _write_all(self._tx, [self._hdr_out, msg], sent)
        else:
            # Two writes, so that the payload starts a fresh pipe page. One
            # writev would put it 4 bytes into a page whenever the pipe is
            # empty, and every later page copy in the kernel would run at
            # +4 mod 4096: 1.4 against 3.0 GB/s at 64 KiB (module base).
            os.write(self._tx, self._hdr_out)
            sent = os.write(self._tx, msg)
            if sent != n:
                _write_all(self._tx, [msg], sent)

    def _write_all(self, data: Message) -> None:
        _write_all(self._tx, [data])

    def _read_exactly(self, view: memoryview) -> None:
        fd, got, want = self._rx, 0, len(view)
        while got < want:
            n = os.readv(fd, [view[got:]])
            if n == 0:
                raise EOFError("pipe closed mid-frame")
            got += n

    def close(self) -> None:
        os.close(self._tx)
        os.close(self._rx)


def _open_os_pipe(end: tuple[PassedFd, PassedFd], job: Job) -> OsPipeChannel:
    return OsPipeChannel(end[0].fd, end[1].fd, job.size)


class OsPipe(PeerTransport):
    """Raw ``os.pipe`` with length prefixes (see module docstring)."""

    name = "stdlib-os-pipe"
    open_host = open_guest = staticmethod(_open_os_pipe)

    @contextlib.contextmanager
    def endpoints(self, job: Job) -> Iterator[tuple[Any, Any]]:
        """Two pipes; each end is (tx fd, rx fd)."""
        with closing_fds() as fds:
            g2h_r, g2h_w = os.pipe()
            fds += (g2h_r, g2h_w)
            h2g_r, h2g_w = os.pipe()
            fds += (h2g_r, h2g_w)
            for fd in (g2h_w, h2g_w):
                with contextlib.suppress(OSError):
                    fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
            yield ((PassedFd(h2g_w), PassedFd(g2h_r)),
                   (PassedFd(g2h_w), PassedFd(h2g_r)))
