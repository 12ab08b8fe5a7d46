"""The guest: attaches to a host, calls and submits buffers, serves host commands."""
from __future__ import annotations

import asyncio
import errno
import functools
import inspect
import logging
import os
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from typing import Any

from . import _kept
from ._attach import no_host_message
from ._call_error import call_error, too_long
from ._native import ffi, lib
from ._ratelog import RateLog
from ._util import (
    as_buffer,
    backend_name,
    buffer_arrays,
    check_channel,
    check_int,
    check_name,
    socket_too_long,
    struct_dict,
    timeout_ms,
)
from ._wire import BUFFER_HEADER_SIZE, SPIN_US_DEFAULT
from .errors import HostNotFound, MessageTooLarge, PeerGone, Timeout, check, error
from .heap import with_fragmentation
from .lease import Lease, Windows
from .loan import Loan, loan as _loan
from .message import Buffer, Message
from .reply import (
    REASON_MAX,
    BadReply,
    HeldBack,
    ReplyTooLarge,
    fail_status,
    msg_array,
    serve_batch,
)

log = logging.getLogger("hgsmi.guest")

Handler = Callable[[Message], Any]
#: what the core returns while the heap (ENOMEM) or the ring (EAGAIN) is full
_NO_ROOM = (-errno.ENOMEM, -errno.EAGAIN)


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
    """

    #: views of host commands are sliced from a Window (handlers never defer)
    _windowed = True
    #: alloc, submit, loan and publish may sleep for room (not on an event loop)
    _may_block = True

    def __init__(self, name: str, *, runtime_dir: str | os.PathLike[str] | None = None,
                 spin_us: int = SPIN_US_DEFAULT, connect_timeout: float = 2.0,
                 batch: int = 64, handlers: Mapping[int, Handler] | None = None,
                 wait: float = 0.0) -> None:
        self._g = None
        raw_name = check_name(name, path_ok=True)
        self._keep = []
        cfg = ffi.new("struct hgsmi_guest_config *")
        if runtime_dir is not None:
            self._keep.append(ffi.new("char[]", os.fsencode(runtime_dir)))
            cfg.runtime_dir = self._keep[-1]
        cfg.spin_us = spin_us
        cfg.connect_timeout_ms = max(1, timeout_ms(connect_timeout))
        if not isinstance(wait, (int, float)) or not 0 <= wait < 1 << 21:
            raise ValueError(f"wait must be 0 to {1 << 21} seconds, not {wait!r}")
        cfg.wait_ms = max(1, timeout_ms(wait)) if wait > 0 else 0
        out = ffi.new("struct hgsmi_guest **")
        rc = lib.hgsmi_guest_attach(raw_name, cfg, out)
        if rc == -errno.ENOENT:
            raise HostNotFound(errno.ENOENT, no_host_message(name, runtime_dir, wait))
        if rc == -errno.ENAMETOOLONG and "/" not in os.fsdecode(raw_name):
            raise ValueError(socket_too_long(name, runtime_dir))
        if rc in (-errno.EINVAL, -errno.ENAMETOOLONG):
            raise ValueError(f"bad host name {name!r}: "
                             f"{ffi.string(lib.hgsmi_strerror(rc)).decode()}")
        check(rc, f"attach to {name!r}")
        self._g = out[0]
        self.name = name
        self._base = ffi.cast("char *", lib.hgsmi_guest_base(self._g))
        self._size = lib.hgsmi_guest_size(self._g)
        self._loans: set[Loan] = set()  # loaned, not all published or cancelled
        self._held_loans: set[Loan] = set()  # cancelled while a view was in use
        self._handlers: list[Handler | None] = [None] * 256
        self._msgs = ffi.new("struct hgsmi_msg[]", batch)
        self._one = ffi.new("struct hgsmi_msg *")
        self._offs = ffi.new("uint32_t[]", batch)
        self._send_ptr = ffi.new("void *[1]")  # send()'s one-message arrays
        self._send_len = ffi.new("uint32_t[1]")
        self._reply = bytearray(4096)
        self._reply_ptr = ffi.from_buffer(self._reply)  # made once: 0.2 us a call otherwise
        self._inflight: dict[int, Buffer] = {}
        self._held: list[Buffer] = []  # freed while a view was still exported
        self._bufs: dict[int, Buffer] = {}  # every buffer not yet freed, by offset
        self._orphans: list[Callable[[], bool]] = []  # views revoked at close, if they can be
        self._held_acks = HeldBack()  # host commands, ditto: their acks
        self._ratelog = RateLog(log)  # a host's flood of failing commands: thinned
        # what a sync guest's views of host commands are sliced from (hgsmi/lease.py)
        self._windows = (Windows(self._base, lib.hgsmi_guest_size(self._g))
                         if self._windowed else None)
        for channel, handler in (handlers or {}).items():
            self.register(channel, handler)

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
        check_channel(channel, info)
        src = as_buffer(data)
        check_int("reply_size", reply_size, 0, 1 << 63)
        cap = max(len(src), reply_size)
        # Room for a failed handler's reason too; a reply beyond cap is refused below.
        room = max(cap, REASON_MAX + 1)
        if len(self._reply) < room:
            if cap > lib.hgsmi_guest_size(self._g):  # before allocating the reply room
                raise MessageTooLarge(errno.EMSGSIZE, f"call on channel {channel}: "
                                      f"{cap} bytes can never fit in the guest heap")
            self._reply = bytearray(room)
            self._reply_ptr = ffi.from_buffer(self._reply)
        ms = timeout_ms(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._check_open()
            rc = lib.hgsmi_guest_call(self._g, channel, info, src, len(src),
                                      self._reply_ptr, room, ms)
            if rc not in _NO_ROOM or timeout == 0:
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
        return bytes(memoryview(self._reply)[:rc])

    def loan(self, channel: int, info: int, size: int, n: int = 1,
             timeout: float | None = None) -> Loan:
        """Zero copy as a stream: up to ``n`` buffers of ``size`` bytes to fill in place.

        Returns a :class:`Loan` of at least one buffer (fewer than ``n``
        while the heap is short): iterate it for each buffer's view, fill
        them, then ``publish()`` all with one doorbell.  Published buffers
        go back to the heap by themselves when the host completes them;
        there is nothing to reap or free.  A loan neither published nor
        cancelled stays loaned until the guest closes.  While the heap is
        full this waits for completions, up to ``timeout`` (0: raises at
        once).  Raises :class:`HeapExhausted` (full, and nothing in flight
        to wait for), :class:`Timeout`, :class:`MessageTooLarge`,
        :class:`PeerGone`.
        """
        if self._held_loans:
            for held in list(self._held_loans):
                held.cancel()
        if (type(channel) is int and type(info) is int and type(size) is int
                and type(n) is int and 0 < channel < 256 and 0 <= info <= 0xFFFF
                and 0 <= size <= 0xFFFFFFFF and 0 < n <= 1 << 20 and self._g is not None):
            offs = ffi.new("uint32_t[]", n)  # the one crossing into C of the fast path
            rc = lib.hgsmi_guest_loan(self._g, channel, info, size, n, offs)
            if rc > 0:
                return Loan(self, offs, rc, size, channel, info)
        return _loan(self, channel, info, size, n, timeout)

    def alloc(self, channel: int, info: int, size: int, reply_size: int = 0,
              timeout: float | None = 0) -> Buffer:
        """A buffer of ``size`` bytes in the guest heap, to fill in place.

        While the heap is full it waits for completions, up to ``timeout``
        (default 0: raises at once; None: no limit).  For a stream,
        :meth:`loan` is cheaper.  Raises :class:`HeapExhausted` (full, and
        nothing in flight to wait for), :class:`Timeout`,
        :class:`MessageTooLarge`.
        """
        if self._held:
            self._retry_held()
        m = self._one
        # The common case in one FFI call, without check_int's calls.
        if (type(channel) is int and type(info) is int and type(size) is int
                and type(reply_size) is int and 0 < channel < 256 and 0 <= info <= 0xFFFF
                and 0 <= size <= 0xFFFFFFFF and 0 <= reply_size <= 0xFFFFFFFF
                and self._g is not None):
            rc = lib.hgsmi_guest_alloc(self._g, size, reply_size, channel, info, m)
        else:
            check_channel(channel, info)
            check_int("size", size, 0, 1 << 63)
            check_int("reply_size", reply_size, 0, 1 << 63)
            if max(size, reply_size) > 0xFFFFFFFF:
                raise MessageTooLarge(errno.EMSGSIZE, f"alloc: {max(size, reply_size)} bytes "
                                      "can never fit in the guest heap")
            self._check_open()
            rc = -errno.ENOMEM
        if rc == -errno.ENOMEM:
            rc = self._retry_for_room(lambda: lib.hgsmi_guest_alloc(self._g, size, reply_size,
                                                          channel, info, m),
                            -errno.ENOMEM, timeout, "alloc")
        check(rc, "alloc")
        buf = self._bufs[m.offset] = Buffer(self, m.offset, channel, info, size, m.capacity,
                                            Lease(self._base + m.data, size))
        return buf

    def _retry_for_room(self, attempt: Callable[[], int], full: int, timeout: float | None,
              what: str) -> int:
        """Retry ``attempt`` while it returns ``full``, waiting for completions.

        Returns its last result.  Waits up to ``timeout`` (0: one attempt),
        and not at all with nothing in flight: no completion could make room.
        """
        timeout_ms(timeout)  # None or >= 0, else ValueError
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._check_open()
            rc = attempt()
            if rc != full or timeout == 0 or not self._may_block or not self._in_flight():
                return rc
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Timeout(errno.ETIMEDOUT, f"{what}: no room")
            self._wait(left)

    def call_buffer(self, buf: Buffer, timeout: float | None = None) -> memoryview:
        """Submit ``buf`` and wait for its completion; return the reply in place.

        The returned view is ``buf.reply``, valid until the buffer is freed.
        Raises as :meth:`call`.
        """
        self._hand_over(buf)
        rc = lib.hgsmi_guest_call_buffer(self._g, buf.offset, timeout_ms(timeout), self._one)
        if rc == -errno.ETIMEDOUT or rc == -errno.EAGAIN:
            if rc == -errno.EAGAIN:
                self._take_back(buf)
            else:
                self._inflight[buf.offset] = buf  # it will come back via completions()
            raise error(rc, "call_buffer")
        if rc < 0:  # a failed handler's reason is in the buffer: read it before it goes
            m = self._one
            exc = call_error(rc, buf.channel, ffi.buffer(self._base + m.data, m.size))
        self._complete(buf, self._one)
        if rc < 0:
            raise exc
        return buf.reply

    def submit(self, buf: Buffer, timeout: float | None = 0) -> None:
        """Asynchronous: hand ``buf`` to the host; it returns via :meth:`completions`.

        While the rings are full (as many buffers in flight as they hold)
        it waits for room, up to ``timeout`` (default 0: raises at once;
        None: no limit).  Raises :class:`RingFull`, :class:`Timeout`,
        :class:`PeerGone` if the host is gone, :class:`BufferError` while
        a view of the buffer is in use.
        """
        self._hand_over(buf)
        offs = self._offs
        offs[0] = buf.offset
        rc = lib.hgsmi_guest_submit(self._g, offs, 1)
        if rc == 0 and timeout != 0:
            try:
                rc = self._retry_for_room(lambda: lib.hgsmi_guest_submit(self._g, offs, 1), 0,
                                timeout, "submit")
            except BaseException:
                self._take_back(buf)
                raise
        if rc <= 0:
            self._take_back(buf)
            raise error(rc if rc < 0 else -errno.EAGAIN, "submit")
        self._inflight[buf.offset] = buf

    def submit_many(self, bufs: Iterable[Buffer], timeout: float | None = 0) -> int:
        """Submit several buffers with one doorbell; returns how many went.

        With ``timeout`` 0 (the default) as many as the rings hold now;
        otherwise it waits for room for all of them, up to ``timeout``
        (None: no limit).  Raises as :meth:`submit`.
        """
        bufs = list(bufs)
        if len(bufs) > len(self._offs):
            self._offs = ffi.new("uint32_t[]", len(bufs))
        offs = self._offs
        for i, b in enumerate(bufs):
            self._hand_over(b)
            offs[i] = b.offset
        sent, n, rc = 0, len(bufs), 0
        try:
            while sent < n:
                rc = lib.hgsmi_guest_submit(self._g, offs + sent, n - sent)
                if rc == 0 and timeout != 0:
                    rc = self._retry_for_room(
                        functools.partial(lib.hgsmi_guest_submit, self._g, offs + sent, n - sent),
                        0, timeout, "submit")
                if rc <= 0:
                    break
                sent += rc
                if timeout == 0:
                    break
        finally:
            for b in bufs[sent:]:
                self._take_back(b)
            for b in bufs[:sent]:
                self._inflight[b.offset] = b
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
        if (type(channel) is int and type(info) is int and 0 < channel < 256
                and 0 <= info <= 0xFFFF and self._g is not None):
            src = as_buffer(data)
            ptr, n = self._send_ptr, self._send_len
            ptr[0] = src
            n[0] = len(src)
            rc = lib.hgsmi_guest_send(self._g, channel, info, ptr, n, 1)
            ptr[0] = ffi.NULL
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
        steps = self._send_steps(channel, info, datas, timeout)
        try:
            while True:
                _, left = next(steps)
                self._wait(left)
        except StopIteration as done:
            sent: int = done.value  # _send_steps returns the count
            return sent

    def _send_steps(self, channel: int, info: int, datas: Iterable[Any],
                    timeout: float | None) -> Generator[tuple[int, float | None], None, int]:
        """The send_many loop, for the sync and asyncio guests alike.

        Sends what fits; while the heap or ring is full it yields
        ``(rc, seconds left or None)`` and its driver waits for room (the
        sync guest sleeps on the IRQ, hgsmi.aio awaits the next round).
        Returns how many were sent; raises as :meth:`send_many`.
        """
        check_channel(channel, info)
        n, ptrs, lens, _keep = buffer_arrays(datas)
        if not n:
            return 0
        timeout_ms(timeout)  # None or >= 0, else ValueError
        deadline = None if timeout is None else time.monotonic() + timeout
        sent = 0
        while sent < n:
            self._check_open()
            rc = lib.hgsmi_guest_send(self._g, channel, info, ptrs + sent, lens + sent, n - sent)
            if rc > 0:
                sent += rc
                continue
            if rc not in _NO_ROOM:
                raise error(rc, "send")
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Timeout(errno.ETIMEDOUT, f"send: {sent} of {n} sent, no room")
            yield rc, left
        return sent

    def completions(self, timeout: float | None = 0) -> list[Buffer]:
        """Buffers the host has completed since the last call.

        Waits up to ``timeout`` for at least one (0: only look).  Each
        returned buffer has ``status`` (0 or -errno) and ``reply``; free it
        (or leave its ``with`` block) when done.
        """
        out: list[Buffer] = []
        timeout_ms(timeout)  # None or >= 0, else ValueError
        if self._held:
            self._retry_held()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            n = lib.hgsmi_guest_reap(self._g, self._msgs, len(self._msgs))
            if n < 0:
                raise error(n, "completions")
            for i in range(n):
                m = self._msgs[i]
                buf = self._inflight.pop(m.offset, None)
                if buf is not None:
                    self._complete(buf, m)
                    out.append(buf)
            if out or n == len(self._msgs):
                if n < len(self._msgs):
                    return out
                continue
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return out
            if not self._wait(left):
                return out

    # -- host commands --------------------------------------------------------
    def register(self, channel: int, handler: Handler) -> None:
        """Serve host commands on ``channel`` with ``handler(msg)`` (see Host.register)."""
        check_channel(channel)
        if not callable(handler):
            raise TypeError("handler must be callable")
        check(lib.hgsmi_guest_register(self._g, channel, ffi.NULL, ffi.NULL),
              f"register channel {channel}")
        self._handlers[channel] = handler

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
        check(self._ack_ready(self._left_ms(deadline)), "poll: ack")
        served = 0
        msgs = self._msgs
        while True:
            # Acks (here and inside recv) share the caller's deadline.
            n = lib.hgsmi_guest_recv_timeout(self._g, msgs, len(msgs), self._left_ms(deadline))
            if n < 0:
                raise error(n, "poll")
            if n == 0:
                return served
            k = serve_batch(msgs, n, self._base, self, self._handlers, self._start_async,
                            self._handler_failed, self._held_acks, self._windows)
            if k:
                check(lib.hgsmi_guest_ack_timeout(self._g, msgs, k, self._left_ms(deadline)),
                      "poll: ack")
            served += n

    @staticmethod
    def _left_ms(deadline: float | None) -> int:
        """Milliseconds until ``deadline`` (monotonic), 0 once past, -1 for None."""
        if deadline is None:
            return -1
        return max(0, timeout_ms(max(0.0, deadline - time.monotonic())))

    def _ack_ready(self, ms: int = 0) -> int:
        """Ack the host commands held back by a view that is now gone; -errno or >= 0.

        A full ack ring is waited for up to ``ms`` (at least 20 ms, the C core's grace).
        """
        ready = self._held_acks.ready() if self._held_acks else None
        if not ready:
            return 0
        return int(lib.hgsmi_guest_ack_timeout(self._g, msg_array(ready), len(ready), ms))

    def _start_async(self, msg: Message, m: Any, aw: Any) -> bool:
        """A handler returned an awaitable: only hgsmi.aio can run it."""
        if inspect.iscoroutine(aw):
            aw.close()
        raise TypeError(f"channel {m.channel}: an async handler needs hgsmi.aio.AsyncGuest")

    def _handler_failed(self, m: Any, e: BaseException) -> None:
        fail_status(m, e)
        if isinstance(e, (ReplyTooLarge, BadReply)):  # no traceback: it says what happened
            self._ratelog.log(None, m.channel, logging.WARNING, "channel %d handler failed: %s",
                              m.channel, e)
        elif not isinstance(e, asyncio.CancelledError):
            self._ratelog.log(None, m.channel, logging.ERROR, "channel %d handler raised",
                              m.channel, exc_info=e)

    # -- misc ------------------------------------------------------------------
    def fileno(self) -> int:
        """The IRQ eventfd, for selectors/asyncio.  ``OSError`` for semaphores."""
        return check(lib.hgsmi_guest_fileno(self._g), "fileno")

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until the host raises the IRQ (work is waiting); False on timeout."""
        return self._wait(timeout)

    def query_conf(self, index: int) -> int:
        """Ask the setup channel (QUERY_CONF) for a value: heap sizes, limits."""
        v = ffi.new("uint32_t *")
        check(lib.hgsmi_guest_query_conf(self._g, index, v), "query_conf")
        return int(v[0])

    def stats(self) -> dict[str, Any]:
        """Counters, in-flight buffers and guest-heap figures."""
        st = ffi.new("struct hgsmi_guest_stats *")
        lib.hgsmi_guest_stats(self._g, st)
        out = struct_dict(st[0])
        out["guest_heap"] = with_fragmentation(out["guest_heap"])
        out["backend"] = backend_name(out["backend"])
        return out

    def close(self) -> None:
        """Detach; the host reclaims whatever was in flight.  Idempotent."""
        if getattr(self, "_g", None) is not None:
            left = self._held_acks.drop() + self._orphans
            for ln in self._loans | self._held_loans:
                if not ln._abandon():
                    left.append(ln._revoke)
            self._loans.clear()
            self._held_loans.clear()
            for buf in self._bufs.values():
                for lease in (buf._lease, buf._reply):
                    if lease is not None and not lease.release():
                        left.append(lease.release)
                buf._lease = buf._reply = buf._reply_at = None
                buf.state = "freed"
            self._bufs.clear()
            self._inflight.clear()
            self._held.clear()
            if self._windows is not None:
                self._windows.retire()
            if left:  # a view lives on: unmapped only once it goes
                lib.hgsmi_guest_keep_mapping(self._g)
                _kept.keep(self._base, lib.hgsmi_guest_size(self._g), left)
            lib.hgsmi_guest_detach(self._g)
            self._g = None
        if _kept.pending():
            _kept.sweep()

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    # -- buffer ownership -------------------------------------------------------
    def _in_flight(self) -> bool:
        """Has the host buffers of ours (whose completions would make room)?"""
        st = ffi.new("struct hgsmi_guest_stats *")
        lib.hgsmi_guest_stats(self._g, st)
        return bool(st.inflight)

    def _check_open(self) -> None:
        if self._g is None:
            raise PeerGone(errno.EPIPE, "guest is closed")

    def _wait(self, timeout: float | None) -> bool:
        self._check_open()
        rc: int = lib.hgsmi_guest_wait(self._g, timeout_ms(timeout))
        if rc < 0:
            raise error(rc, "wait")
        return rc > 0

    def _hand_over(self, buf: Buffer) -> None:
        if buf._guest is not self or buf.state != "filling":
            raise ValueError(f"cannot submit a buffer that is {buf.state}")
        if buf._lease is not None and not buf._lease.release():
            raise BufferError("a view of the buffer is still in use; release it before submitting")
        buf._lease = None
        buf.state = "in-flight"

    def _retry_held(self) -> None:
        """Free the buffers held back by a view, now that the view is gone."""
        for buf in list(self._held):
            self._free_buffer(buf)

    def _take_back(self, buf: Buffer) -> None:
        buf._lease = Lease(self._base + buf.offset + BUFFER_HEADER_SIZE, buf.size)
        buf.state = "filling"

    def _complete(self, buf: Buffer, m: Any) -> None:
        buf.status = m.status
        buf._reply_at = (m.data, m.size if m.status >= 0 else 0)
        buf.state = "completed"

    def _free_buffer(self, buf: Buffer) -> None:
        if buf.state == "freed":
            return
        if buf.state == "in-flight":
            raise ValueError("the host still has this buffer; wait for its completion")
        for lease in (buf._lease, buf._reply):
            if lease is not None and not lease.release():
                # Memory under a live view is never reused: hold it back
                # (_retry_held frees it once the view is gone).
                if buf.state != "held":
                    self._held.append(buf)
                    buf.state = "held"
                return
        if buf.state == "held":
            self._held.remove(buf)
        buf._lease = buf._reply = buf._reply_at = None
        self._bufs.pop(buf.offset, None)
        if self._g is not None:
            check(lib.hgsmi_guest_free(self._g, buf.offset), "free")
        buf.state = "freed"
