"""The blocking guest, :class:`Guest`: a :class:`~hgsmi.core.guest.GuestCore` that waits in C."""
from __future__ import annotations

import errno
import functools
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from . import _kept
from ._attach import attach
from ._call_error import call_error, too_long
from ._native import ffi, lib
from ._util import from_buffer, not_bytes_like, timeout_ms
from ._wire import SPIN_US_DEFAULT
from .core.guest import NO_ROOM, GuestCore
from .errors import PeerGone, Timeout, check, error
from .loan import Loan
from .message import Buffer, Handler
from .reply import REASON_MAX

__all__ = ["Guest", "Handler"]

T = TypeVar("T")

# The crossings of send and call, looked up once: an attribute of ``lib``
# or ``ffi`` is a lookup every time (41 against 17 ns for a global, timeit)
_send, _call, _NULL = lib.hgsmi_guest_send, lib.hgsmi_guest_call, ffi.NULL


class Guest:
    """A guest attached to the host ``name`` (or to a socket path).

    A name follows :class:`Host`'s rule (1 to 64 of ``[A-Za-z0-9_.-]``, and
    its socket path within sun_path's 107 bytes): ValueError otherwise.

    ``handlers`` maps channels to handlers, registered as by
    :meth:`register` before anything is served.  Raises
    :class:`HostNotFound` if nobody listens, :class:`AccessDenied` if the
    host refuses this uid, :class:`ProtocolError` on an ABI mismatch,
    :class:`Timeout` if the handshake stalls.

    ``wait`` (seconds, default 0) waits that long for a host that is not
    there yet (no socket, or nobody listening on it), so that a guest can be
    started together with its host; ``connect_timeout`` (seconds, default 2)
    bounds the handshake once connected.  ``batch`` (default 64) is how many
    host commands one serve round takes.

    ``spin_us`` caps the adaptive spin before a wait sleeps on the IRQ (0:
    never spin).  It spins only while the host is awake and recent spins
    paid off, and pauses when it finds itself preempted (busy CPUs), so the
    default costs an idle or loaded machine nearly nothing.

    The state (buffers, loans, handlers, held-back acks) is its core's; this
    face only waits, blocking in the C core with the GIL released.
    """

    def __init__(self, name: str, *, runtime_dir: str | os.PathLike[str] | None = None,
                 spin_us: int = SPIN_US_DEFAULT, connect_timeout: float = 2.0,
                 batch: int = 64, handlers: Mapping[int, Handler] | None = None,
                 wait: float = 0.0) -> None:
        handle = attach(name, runtime_dir=runtime_dir, spin_us=spin_us,
                        connect_timeout=connect_timeout, wait=wait)
        core = self._core = GuestCore(handle, name, self, batch=batch)
        self.name = name
        # The hot paths' copy of the core's handle (None once closed) and
        # their scratch arrays, made once: looked up per call, never rebuilt.
        # (_g and _base are also how tests and peers reach the C API and the mapping.)
        self._g: Any = handle
        self._base = core.base
        self._one = ffi.new("struct hgsmi_msg *")
        self._offs = ffi.new("uint32_t[]", batch)
        self._send_ptr = ffi.new("void *[1]")  # send()'s one-message arrays
        self._send_len = ffi.new("uint32_t[1]")
        self._new_reply(4096)
        for channel, handler in (handlers or {}).items():
            self.register(channel, handler)

    def _new_reply(self, size: int) -> None:
        """A reply buffer of ``size`` bytes for :meth:`call`, its C memory and a
        cffi buffer over it made once: a slice of that buffer is the reply's
        ``bytes`` in one step (0.11 µs, where a memoryview slice then
        ``bytes`` cost 0.2)."""
        self._reply_ptr = ffi.new("char[]", size)
        self._reply = ffi.buffer(self._reply_ptr)

    # -- calls ----------------------------------------------------------------
    def call(self, channel: int, info: int, data: Any, reply_size: int = 0,
             timeout: float | None = None) -> bytes:
        """Synchronous call, copy mode: send ``data`` and return the reply.

        The reply may be up to ``max(len(data), reply_size)`` bytes.  While
        the heap or ring is full (of buffers sent before) it waits for room,
        within ``timeout`` (0: raises :class:`HeapExhausted` or
        :class:`RingFull` at once).  The wait releases the GIL.  Raises
        :class:`Timeout`, :class:`PeerGone`, :class:`ChannelNotRegistered`,
        :class:`RemoteError` (the handler failed), :class:`MessageTooLarge`.
        """
        src, cap = self._core.call_args(channel, info, data, reply_size)
        # Room for a failed handler's reason too; a reply beyond cap is refused below.
        # (Tests, not calls, where a call costs as much: this path is the call RTT.)
        room = cap if cap > REASON_MAX else REASON_MAX + 1
        if len(self._reply) < room:
            self._new_reply(room)
        ms = -1 if timeout is None else timeout_ms(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            g = self._g
            if g is None:
                raise PeerGone(errno.EPIPE, "guest is closed")
            rc = _call(g, channel, info, src, len(src), self._reply_ptr, room, ms)
            if rc not in NO_ROOM or timeout == 0:
                break
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Timeout(errno.ETIMEDOUT, f"call on channel {channel}: no room")
                ms = timeout_ms(left)
            self._wait(None if deadline is None else left)
        if rc < 0:
            raise call_error(rc, channel, self._reply)
        if rc > cap:
            raise too_long(channel, cap, rc)
        reply: bytes = self._reply[0:rc]
        return reply

    def loan(self, channel: int, info: int, size: int, n: int = 1,
             timeout: float | None = None) -> Loan:
        """Zero copy as a stream: up to ``n`` buffers of ``size`` bytes to fill in place.

        Returns a :class:`Loan` of at least one buffer (fewer than ``n``
        while the heap is short): iterate it for each buffer's view, fill
        them, then ``publish()`` all with one doorbell.  Buffers over 2 KiB
        are placed so that a copy into them from a page-aligned source
        (mmap, large malloc, bytes) does not suffer 4K aliasing, as
        :meth:`send` places its copies.  Published buffers
        go back to the heap by themselves when the host completes them;
        there is nothing to reap or free.  A loan neither published nor
        cancelled stays loaned until the guest closes.  While the heap is
        full this waits for completions, up to ``timeout`` (None, the
        default: no limit; 0: raises at once).  Raises
        :class:`HeapExhausted` (full, and nothing in flight that would
        free itself: see :meth:`alloc`), :class:`Timeout`,
        :class:`MessageTooLarge`, :class:`PeerGone`.
        """
        core = self._core
        ln = core.loan(channel, info, size, n, self._wait)
        if ln is None:
            ln = self._until_room(lambda: core.loan(channel, info, size, n, self._wait),
                                  timeout, f"loan of {n} x {size} bytes")
        return ln

    def alloc(self, channel: int, info: int, size: int, reply_size: int = 0,
              timeout: float | None = None) -> Buffer:
        """A buffer of ``size`` bytes in the guest heap, to fill in place.

        While the heap is full it waits for completions, up to ``timeout``
        (None, the default: no limit, as :meth:`send` and :meth:`call`;
        0: raises at once).  It waits only for buffers that free themselves
        (sends, published loans): one you submitted comes back to you
        (:meth:`completions`), and only your ``free`` makes its room.  For
        a stream, :meth:`loan` is cheaper.  Raises :class:`HeapExhausted`
        (full, and nothing in flight that would free itself),
        :class:`Timeout`, :class:`MessageTooLarge`, :class:`PeerGone`.
        """
        core = self._core
        buf = core.alloc(channel, info, size, reply_size)
        if buf is None:
            buf = self._until_room(lambda: core.alloc(channel, info, size, reply_size),
                                   timeout, "alloc")
        return buf

    def call_buffer(self, buf: Buffer, timeout: float | None = None) -> memoryview:
        """Submit ``buf`` and wait for its completion; return the reply in place.

        The returned view is ``buf.reply``, valid until the buffer is freed.
        Raises as :meth:`call`.
        """
        core = self._core
        g = core.check_open()
        core.hand_over(buf)
        m = self._one
        rc = lib.hgsmi_guest_call_buffer(g, buf.offset, timeout_ms(timeout), m)
        if rc == -errno.EAGAIN:
            core.take_back(buf)
            raise error(rc, "call_buffer")
        if rc == -errno.ETIMEDOUT:
            core.track(buf.offset, buf)  # it comes back via completions()
            raise error(rc, "call_buffer")
        if rc < 0:  # a failed handler's reason is in the buffer: read it before it goes
            exc = call_error(rc, buf.channel, ffi.buffer(core.base + m.data, m.size))
        core.complete(buf, m)
        if rc < 0:
            raise exc
        return buf.reply

    def submit(self, buf: Buffer, timeout: float | None = None) -> None:
        """Asynchronous: hand ``buf`` to the host; it returns via :meth:`completions`.

        While the rings are full (as many buffers in flight as they hold)
        it waits for room, up to ``timeout`` (None, the default: no limit,
        as :meth:`send`; 0: raises at once).  Raises :class:`RingFull`
        (``timeout=0``), :class:`Timeout`,
        :class:`PeerGone` if the host is gone, :class:`BufferError` while
        a view of the buffer is in use.
        """
        self.submit_many([buf], timeout)

    def submit_many(self, bufs: Iterable[Buffer], timeout: float | None = None) -> int:
        """Submit several buffers with one doorbell; returns how many went.

        It waits for room for all of them, up to ``timeout`` (None, the
        default: no limit); with ``timeout`` 0, as many as the rings hold
        now.  Raises as :meth:`submit`.
        """
        core = self._core
        bufs = list(bufs)
        if len(bufs) > len(self._offs):
            self._offs = ffi.new("uint32_t[]", len(bufs))
        offs = self._offs
        sent, n, rc = 0, 0, 0
        try:
            for b in bufs:
                core.hand_over(b)
                offs[n] = b.offset
                n += 1
            while sent < n:
                rc = core.submit(bufs, offs, sent)
                if rc == 0 and timeout != 0:
                    rc = self._until_room(
                        functools.partial(_some, core.submit, bufs, offs, sent),
                        timeout, "submit", -errno.EAGAIN)
                if rc <= 0:
                    break
                sent += rc
                if timeout == 0:
                    break
        finally:
            for b in bufs[sent:n]:
                core.take_back(b)
        if sent == 0:
            raise error(rc if rc < 0 else -errno.EAGAIN, "submit")
        return sent

    def send(self, channel: int, info: int, data: Any) -> None:
        """Fire and forget, copy mode: queue ``data`` with one doorbell.

        The buffer is freed when the host completes it (failures are counted
        in ``stats()["remote_errors"]``).  With a full heap or ring this
        waits for completions.  Raises :class:`PeerGone`, :class:`MessageTooLarge`.
        """
        # One message with room for it, the common case, in one FFI call:
        # no lists and no ffi.new per message (measured: 0.6 us of argument
        # marshalling here against 2.9 us for send_many's lists and arrays).
        # Anything else (bad arguments, full heap or ring, errors, closed)
        # takes send_many's path, which checks, waits and raises.
        # (The lookups and the as_buffer frame this skips: 0.1-0.2 µs of a
        # 1.3-2.4 µs send warm, 0.3-0.5 µs of 3-7 cold, as each 1 MiB send runs.)
        if (type(channel) is int and type(info) is int and 0 < channel < 256
                and 0 <= info <= 0xFFFF and self._g is not None):
            try:
                src = from_buffer(data)
            except TypeError:
                raise not_bytes_like(data) from None
            ptr, n = self._send_ptr, self._send_len
            ptr[0] = src
            n[0] = len(src)
            rc = _send(self._g, channel, info, ptr, n, 1)
            ptr[0] = _NULL
            if rc > 0:
                return
        self.send_many(channel, info, [data])

    def send_many(self, channel: int, info: int, datas: Iterable[Any],
                  timeout: float | None = None) -> int:
        """:meth:`send` for many messages, batched: one doorbell per batch.

        Waits for room while the heap or ring is full (up to ``timeout``).
        Returns how many were sent.  Raises :class:`Timeout`,
        :class:`PeerGone`, :class:`MessageTooLarge`.
        """
        steps = self._core.send_steps(channel, info, datas, timeout)
        try:
            while True:
                _, left = next(steps)
                self._wait(left)
        except StopIteration as done:
            sent: int = done.value  # send_steps returns the count
            return sent

    def completions(self, timeout: float | None = 0) -> list[Buffer]:
        """Buffers the host has completed since the last call.

        Waits up to ``timeout`` for at least one (0: only look).  Each
        returned buffer has ``status`` (0 or -errno) and ``reply``; free it
        (or leave its ``with`` block) when done.
        """
        timeout_ms(timeout)  # None or >= 0, else ValueError
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            out = self._core.completed()
            if out:
                return out
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return out
            if not self._wait(left):
                return out

    # -- host commands --------------------------------------------------------
    def register(self, channel: int, handler: Handler) -> None:
        """Serve host commands on ``channel`` with ``handler(msg)`` (see Host.register)."""
        self._core.register(channel, handler)

    def poll(self, timeout: float | None = None) -> int:
        """Wait up to ``timeout`` for the IRQ, then serve the host FIFO.

        A host command is acked when its handler returns, unless the
        handler kept a view of it: then the ack waits for a later poll that
        finds the view gone (the host reuses the memory once acked).
        Returns how many host commands were served.  Raises :class:`PeerGone`,
        :class:`ProtocolError` (the host broke the protocol), or
        :class:`Timeout` if the host kept its ack ring full past ``timeout``
        (the acks it never took are counted in ``stats()["acks_dropped"]``).
        """
        if _kept.pending():
            _kept.sweep()
        deadline = None if timeout is None else time.monotonic() + timeout
        self._wait(timeout)
        core = self._core
        core.flush_acks(deadline)
        return core.serve(deadline)

    # -- misc ------------------------------------------------------------------
    def fileno(self) -> int:
        """The IRQ eventfd, for selectors/asyncio.  ``OSError`` for semaphores."""
        return self._core.fileno()

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until the host raises the IRQ (work is waiting); False on timeout."""
        return self._wait(timeout)

    def query_conf(self, index: int) -> int:
        """Ask the setup channel (QUERY_CONF) for a value: heap sizes, limits."""
        v = ffi.new("uint32_t *")
        check(lib.hgsmi_guest_query_conf(self._core.check_open(), index, v), "query_conf")
        return int(v[0])

    def stats(self) -> dict[str, Any]:
        """Counters, in-flight buffers and guest-heap figures."""
        return self._core.stats()

    def close(self) -> None:
        """Detach; the host reclaims whatever was in flight.  Idempotent."""
        self._g = None
        self._core.close()

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- waiting ---------------------------------------------------------------
    def _wait(self, timeout: float | None) -> bool:
        """Block until the IRQ (True) or ``timeout`` (False).  Raises PeerGone."""
        rc: int = lib.hgsmi_guest_wait(self._core.check_open(), timeout_ms(timeout))
        if rc < 0:
            raise error(rc, "wait")
        return rc > 0

    def _until_room(self, attempt: Callable[[], T | None], timeout: float | None,
                    what: str, full: int = -errno.ENOMEM) -> T:
        """Retry ``attempt`` while it finds no room (None), waiting for completions.

        Waits up to ``timeout`` (0: one attempt), and not at all when no
        completion could make room: for the ring (``full`` -EAGAIN), nothing
        in flight; for the heap, nothing in flight that frees itself
        (GuestCore.heap_room_coming).  Raises :class:`HeapExhausted`
        (``full``: :class:`RingFull`) or :class:`Timeout`.
        """
        timeout_ms(timeout)  # None or >= 0, else ValueError
        deadline = None if timeout is None else time.monotonic() + timeout
        core = self._core
        coming = core.in_flight if full == -errno.EAGAIN else core.heap_room_coming
        while True:
            got = attempt()
            if got is not None:
                return got
            if timeout == 0:
                raise error(full, what)
            if not coming():
                # What coming() collected on its way may have made room.
                got = attempt()
                if got is not None:
                    return got
                raise error(full, what)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Timeout(errno.ETIMEDOUT, f"{what}: no room")
            self._wait(left)


def _some(attempt: Callable[..., int], *args: Any) -> int | None:
    """``attempt(*args)``, or None for 0 (no room): for Guest._until_room."""
    return attempt(*args) or None
