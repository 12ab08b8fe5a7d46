# SPDX-License-Identifier: MIT
"""
"hgcm": VirtualBox HGCM's classic call path (reference/hgsmi-protocol.md §5),
between two processes, as the baseline hgsmi has to beat.

The "guest RAM" the host can read is a memfd both peers map: page 0 holds
the request descriptor, and the bounce area starts on page 1. The guest's
kick (the ``outl``) and the host's IRQ are two eventfds. The guest's user
buffers and the host's private buffer are page-aligned anonymous mmaps, so
every copy below runs at delta 0 mod 4096 (see base.py on 4K aliasing).

One call, with its copies, notifications and thread hop:

1. guest ``HgcmGuest._call``: **copy 1** (``_bounce[:n] = msg``), the caller's
   buffer into the bounce buffer (``copy_from_user`` into the kvmalloc'ed
   bounce), for TO_HOST parameters; then the request descriptor (VMMDev
   header, HGCM header, call header, one PageList parameter) is written.
2. guest: ``eventfd_write(kick)``, **notification 1** (VM exit #1).
3. host receiving thread ``HgcmHost._receive`` (the EMT): copies the
   descriptor out of shared memory, validates it from that copy only, sets
   ``rc = VINF_HGCM_ASYNC_EXECUTE``, then **copy 2**
   (``_host_view[:n] = _bounce[:n]``), bounce into the host-private buffer
   (``PDMDevHlpPhysRead``).
4. ``SimpleQueue.put``: **the thread hop** to the service thread (the host
   child's main thread, running the service loop) (``hgcmMsgPost``).
5. service: works on the host copy (checks its first and last byte).
6. completion ``HgcmHost._complete`` on the service thread: **copy 3**
   (``_bounce[:m] = out``), host buffer into the bounce area
   (``PhysWrite``), for FROM_HOST parameters; then the request image is
   written back (rc, result, size), then ``flags |= DONE`` as a separate,
   later write, then ``eventfd_write(irq)``, **notification 2** (the IRQ).
7. guest: ``eventfd_read(irq)`` returns; it checks DONE and does **copy 4**
   (``_user[:m] = _bounce[:m]``), bounce into the caller's buffer
   (``copy_to_user``).

So an rtt call (one IN/OUT parameter) does four payload copies, two
notifications and one thread hop. A one-way stream is a sequence of calls,
because HGCM has no streaming: g2h is WRITE calls (IN parameter: copies 1
and 2), and h2g is READ calls (OUT parameter: copies 3 and 4), answered
with ``VERR_EOF`` at the end.

This baseline is kinder than VirtualBox, never a strawman. It has no
per-call allocations (bounce, host buffer and command are reused), no page
translation, no ``AcknowledgeEvents`` exit, and one request in flight.
"""
from __future__ import annotations

import contextlib
import mmap
import os
import queue
import struct
import threading
from collections.abc import Iterator
from typing import Any

from .base import Job, page_buffer
from .channel import Channel, Message
from .peers import PassedFd, PeerTransport, closing_fds

# VMMDevRequestHeader (24 B) + HGCM header (8 B) + call header (12 B) + one
# parameter {type, size, offset, direction} (16 B), little-endian, packed.
_REQ = struct.Struct("<IIIiII" "Ii" "III" "IIII")
assert _REQ.size == 60
_F_RC, _F_FLAGS, _F_RESULT, _F_FN, _F_PSIZE, _F_PDIR = 3, 6, 7, 9, 12, 14
_RC = struct.Struct("<i")
_RC_OFF = 12
_FLAGS = struct.Struct("<I")
_FLAGS_OFF = 24

_VERSION = 0x10001
_REQ_CALL64 = 63
_CLIENT_ID = 1
_PARM_PAGELIST = 10
_TO_HOST, _FROM_HOST, _BOTH = 1, 2, 3
_REQ_DONE = 0x1
_VINF_SUCCESS = 0
_VINF_HGCM_ASYNC_EXECUTE = 2903
_VERR_INVALID_PARAMETER = -2
_VERR_EOF = -110

# Service functions and the parameter direction each one takes.
FN_WRITE, FN_READ, FN_ECHO, FN_END = 1, 2, 3, 4
_FN_DIR = {FN_WRITE: _TO_HOST, FN_READ: _FROM_HOST, FN_ECHO: _BOTH, FN_END: 0}

_PAGE = 4096
_BOUNCE_OFF = _PAGE


def _capacity(size: int) -> int:
    """Bounce and host buffer bytes for messages of ``size`` (whole pages)."""
    return -(-size // _PAGE) * _PAGE


class _HgcmEnd(Channel):
    """What each side holds: the guest RAM mapped (page 0 the request, then
    the bounce area), a private page-aligned buffer of the same capacity
    (the guest's user buffer, the host's copy), and the two eventfds."""

    def __init__(self, shm_fd: int, kick: int, irq: int, size: int) -> None:
        self._cap = _capacity(size)
        self._shm = mmap.mmap(shm_fd, _BOUNCE_OFF + self._cap)
        self._bounce = memoryview(self._shm)[_BOUNCE_OFF:]
        self._private = memoryview(page_buffer(self._cap))
        self._kick, self._irq = kick, irq
        self._ended = False


class HgcmGuest(_HgcmEnd):
    """The guest's side: every message is one synchronous HGCM call."""

    def __init__(self, shm_fd: int, kick: int, irq: int, size: int) -> None:
        super().__init__(shm_fd, kick, irq, size)
        self._user = self._private

    def _call(self, fn: int, msg: Message | None, n: int) -> tuple[int, int]:
        """Post one call with an n-byte parameter; return (result, size out)."""
        direction = _FN_DIR[fn]
        if direction & _TO_HOST:
            assert msg is not None
            self._bounce[:n] = msg                                  # copy 1
        _REQ.pack_into(self._shm, 0, _REQ.size, _VERSION, _REQ_CALL64, 0, 0, 0,
                       0, 0, _CLIENT_ID, fn, 1 if direction else 0,
                       _PARM_PAGELIST, n, _BOUNCE_OFF, direction)
        os.eventfd_write(self._kick, 1)                             # notification 1
        while True:
            os.eventfd_read(self._irq)                              # notification 2
            if _FLAGS.unpack_from(self._shm, _FLAGS_OFF)[0] & _REQ_DONE:
                break
        req = _REQ.unpack_from(self._shm, 0)
        if req[_F_RC] < 0:
            raise RuntimeError(f"HGCM call {fn} failed: rc={req[_F_RC]}")
        size_out = req[_F_PSIZE] if direction & _FROM_HOST else 0
        if size_out > n:
            raise RuntimeError(f"host returned {size_out} bytes for a {n}-byte buffer")
        return req[_F_RESULT], size_out

    def send(self, msg: Message) -> None:
        self._call(FN_WRITE, msg, len(msg))

    def recv(self) -> memoryview | None:
        result, m = self._call(FN_READ, None, self._cap)
        if result == _VERR_EOF:
            return None
        out = self._user[:m]
        out[:] = self._bounce[:m]                                   # copy 4
        return out

    def call(self, msg: Message) -> memoryview:
        n = len(msg)
        _, m = self._call(FN_ECHO, msg, n)
        out = self._user[:m]
        out[:] = self._bounce[:m]                                   # copy 4
        return out

    def send_end(self) -> None:
        self._call(FN_END, None, 0)
        self._ended = True

    def close(self) -> None:
        if not self._ended:
            self.send_end()


class HgcmHost(_HgcmEnd):
    """The host's side: a receiving thread (the EMT) feeding the service,
    which is whoever drives this channel, through one SimpleQueue."""

    def __init__(self, shm_fd: int, kick: int, irq: int, size: int) -> None:
        super().__init__(shm_fd, kick, irq, size)
        self._host_view = self._private
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending: tuple[Any, ...] | None = None
        self._emt = threading.Thread(target=self._receive, name="hgcm-emt", daemon=True)
        self._emt.start()

    # -- the receiving thread ------------------------------------------------

    def _receive(self) -> None:
        """Take one request per kick, copy it in, hand it to the service."""
        try:
            while True:
                os.eventfd_read(self._kick)
                req = _REQ.unpack_from(self._shm, 0)   # the only read of the header
                n = self._validate(req)
                if n < 0:
                    self._finish(req, _VERR_INVALID_PARAMETER, 0, 0)
                    continue
                _RC.pack_into(self._shm, _RC_OFF, _VINF_HGCM_ASYNC_EXECUTE)
                if req[_F_PDIR] & _TO_HOST:
                    self._host_view[:n] = self._bounce[:n]         # copy 2
                self._queue.put(req)                               # the thread hop
                if req[_F_FN] == FN_END:
                    return
        except BaseException as exc:
            self._queue.put(exc)

    def _validate(self, req: tuple[Any, ...]) -> int:
        """The parameter size of a well-formed request, or -1."""
        (size, version, rtype, _rc, _r1, _who, _flags, _res, client, fn, cparms,
         ptype, psize, poff, pdir) = req
        if (size != _REQ.size or version != _VERSION or rtype != _REQ_CALL64
                or client != _CLIENT_ID or fn not in _FN_DIR or pdir != _FN_DIR[fn]
                or cparms != (1 if pdir else 0)):
            return -1
        if pdir and (ptype != _PARM_PAGELIST or poff != _BOUNCE_OFF or psize > self._cap):
            return -1
        return psize if pdir else 0

    # -- the service thread --------------------------------------------------

    def _next(self) -> tuple[Any, ...]:
        item: Any = self._queue.get()
        if isinstance(item, BaseException):
            raise RuntimeError("the receiving thread failed") from item
        req: tuple[Any, ...] = item
        return req

    def _finish(self, req: tuple[Any, ...], rc: int, result: int, size_out: int) -> None:
        """Write the request image back, then DONE, then raise the IRQ."""
        _REQ.pack_into(self._shm, 0, *req[:_F_RC], rc, *req[_F_RC + 1:_F_RESULT],
                       result, *req[_F_RESULT + 1:_F_PSIZE], size_out,
                       *req[_F_PSIZE + 1:])
        _FLAGS.pack_into(self._shm, _FLAGS_OFF, req[_F_FLAGS] | _REQ_DONE)
        os.eventfd_write(self._irq, 1)                            # notification 2

    def _complete(self, result: int = _VINF_SUCCESS, out: Message | None = None) -> None:
        """Complete the pending call, copying ``out`` back (FROM_HOST)."""
        req, self._pending = self._pending, None
        assert req is not None
        m = 0
        if out is not None:
            m = len(out)
            self._bounce[:m] = out                                # copy 3
        self._finish(req, _VINF_SUCCESS, result, m)

    def _expect(self, *fns: int) -> tuple[Any, ...]:
        """Complete any pending call, then take the next one (one of fns)."""
        if self._pending is not None:
            self._complete()
        req = self._next()
        self._pending = req
        if req[_F_FN] == FN_END:
            self._complete()
            self._ended = True
        elif req[_F_FN] not in fns:
            self._finish(req, _VERR_INVALID_PARAMETER, 0, 0)
            raise RuntimeError(f"unexpected HGCM function {req[_F_FN]}")
        return req

    def recv(self) -> memoryview | None:
        req = self._expect(FN_WRITE, FN_ECHO)
        return None if self._ended else self._host_view[:req[_F_PSIZE]]

    def send(self, msg: Message) -> None:
        if self._pending is not None and self._pending[_F_FN] == FN_ECHO:
            self._complete(out=msg)
            return
        req = self._expect(FN_READ)
        if self._ended:
            raise EOFError("the guest disconnected")
        if len(msg) > req[_F_PSIZE]:
            raise ValueError("message larger than the guest's buffer")
        self._complete(out=msg)

    def send_end(self) -> None:
        self._expect(FN_READ)
        if not self._ended:
            self._complete(result=_VERR_EOF)

    def close(self) -> None:
        while not self._ended:
            if self._expect(FN_READ)[_F_FN] == FN_READ:
                self._complete(result=_VERR_EOF)
        self._emt.join()


def _open_host(end: tuple[PassedFd, PassedFd, PassedFd], job: Job) -> HgcmHost:
    shm, kick, irq = end
    return HgcmHost(shm.fd, kick.fd, irq.fd, job.size)


def _open_guest(end: tuple[PassedFd, PassedFd, PassedFd], job: Job) -> HgcmGuest:
    shm, kick, irq = end
    return HgcmGuest(shm.fd, kick.fd, irq.fd, job.size)


class Hgcm(PeerTransport):
    """HGCM's copying call path (see module docstring)."""

    name = "hgcm"
    open_host = staticmethod(_open_host)
    open_guest = staticmethod(_open_guest)

    @contextlib.contextmanager
    def endpoints(self, job: Job) -> Iterator[tuple[Any, Any]]:
        """A memfd ("guest RAM") and the kick and IRQ eventfds, for both."""
        with closing_fds() as fds:
            shm = os.memfd_create("hgsmi-bench-hgcm", os.MFD_CLOEXEC)
            fds.append(shm)
            os.ftruncate(shm, _BOUNCE_OFF + _capacity(job.size))
            for _ in range(2):
                fds.append(os.eventfd(0, os.EFD_CLOEXEC))
            end = tuple(PassedFd(fd) for fd in fds)
            yield end, end
