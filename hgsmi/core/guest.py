"""GuestCore: one guest's state and dispatch, with no waiting (sans IO).

It owns the C guest handle and all that lives as long as it: the buffers and
their states (filling, in-flight, completed, held, freed), the submissions in
flight, the loans, the channel handlers, the host commands finished later or
held back by a view, and the serving of host commands
(:func:`hgsmi.reply.serve_batch`).  Every method does what can be done now
and says "no room" or "nothing yet" by its return value; the faces decide
how to wait: :class:`hgsmi.Guest` blocks in the C core,
:class:`hgsmi.aio.AsyncGuest` awaits its event loop.
"""
from __future__ import annotations

import errno
import inspect
import logging
import time
import weakref
from collections.abc import Callable, Generator, Iterable
from typing import Any

from .. import _kept, reply
from .._native import ffi, lib
from .._ratelog import RateLog
from .._util import (
    as_buffer,
    backend_name,
    buffer_arrays,
    check_channel,
    check_int,
    struct_dict,
    timeout_ms,
)
from .._wire import BUFFER_HEADER_SIZE
from ..buffer import Buffer
from ..errors import MessageTooLarge, PeerGone, Timeout, check, error
from ..heap import with_fragmentation
from ..lease import Lease, Windows
from ..loan import Loan, Wait
from ..message import Handler, Message
from ..reply import HeldBack, StartAsync

#: what the C core returns while the heap (ENOMEM) or the ring (EAGAIN) is full
NO_ROOM = (-errno.ENOMEM, -errno.EAGAIN)
#: the longest offsets array a guest keeps from a settled loan for the next (4 KiB)
SPARE_OFFS_MAX = 1024
#: a loan's crossing, looked up once (an attribute of ``lib`` is a lookup each time)
_loan = lib.hgsmi_guest_loan


def left_ms(deadline: float | None) -> int:
    """Milliseconds until ``deadline`` (monotonic), 0 once past, -1 for None.

    0 is always past: the asyncio face's "only the C core's short grace".
    """
    if deadline is None:
        return -1
    if deadline == 0:
        return 0
    return max(0, timeout_ms(max(0.0, deadline - time.monotonic())))


def _refuse_async(msg: Message, m: Any, aw: Any) -> bool:
    """A handler returned an awaitable on a face that cannot run it."""
    if inspect.iscoroutine(aw):
        aw.close()
    raise TypeError(f"channel {m.channel}: an async handler needs hgsmi.aio.AsyncGuest")


class GuestCore:
    """The state of one attached guest, driven by a face (Guest or AsyncGuest).

    ``handle`` is the C guest (None once closed); ``peer`` the face, handed
    to handlers as ``msg.peer`` (kept weakly: the face owns the core).
    ``windowed``: views of host commands are slices of a Window (handlers
    never defer, see :mod:`hgsmi.lease`).  ``start_async`` runs a handler's
    awaitable (default: refuse it); ``on_held`` is told when something is
    held back by a view, so that its face looks again later.
    """

    def __init__(self, handle: Any, name: str, peer: object, *, batch: int = 64,
                 windowed: bool = True, start_async: StartAsync | None = None,
                 on_held: Callable[[], None] | None = None) -> None:
        self.handle: Any = handle
        self.name = name
        self.base = ffi.cast("char *", lib.hgsmi_guest_base(handle))
        self.size: int = lib.hgsmi_guest_size(handle)
        #: why the guest is unusable although not closed (the host died); see fail()
        self.gone: BaseException | None = None
        #: submissions the host has, by offset: what reap hands back with each
        self.inflight: dict[int, Any] = {}
        #: host commands done and due to be acked together (flush_acks)
        self.acks: list[Any] = []
        self.held_acks = HeldBack()  # host commands served, a view still alive
        self.handlers: list[Handler | None] = [None] * 256
        self._bufs: dict[int, Buffer] = {}  # every buffer not yet freed, by offset
        self._held: list[Buffer] = []  # freed while a view was still exported
        self._loans: set[Loan] = set()  # loaned, not all published or cancelled
        self._held_loans: set[Loan] = set()  # cancelled while a view was in use
        # The offsets array of the last loan settled, for the next loan: an
        # ffi.new a loan was an eighth of its Python (a stream loans, fills
        # and publishes one loan at a time, so one spare covers it).  Up to
        # SPARE_OFFS_MAX entries: one huge loan does not pin its array.
        self._spare_offs: Any = None
        self._live: dict[int, Message] = {}  # host commands an async handler still serves
        self._done: list[Buffer] = []  # completed Buffers that completed() hands out next
        self._msgs = ffi.new("struct hgsmi_msg[]", batch)
        self._one = ffi.new("struct hgsmi_msg *")
        self._st = ffi.new("struct hgsmi_guest_stats *")  # the room waits' in-flight count
        # a host's flood of failing commands: thinned
        self._ratelog = RateLog(logging.getLogger("hgsmi.guest"))
        self._windows = Windows(self.base, self.size) if windowed else None
        self._peer = weakref.ref(peer)
        self._start_async = start_async or _refuse_async
        self._on_held = on_held

    # -- state ------------------------------------------------------------------
    def check_open(self) -> Any:
        """The C handle; raises why there is none: the host's death, or PeerGone once closed."""
        if self.gone is not None:
            raise self.gone
        g = self.handle
        if g is None:
            raise PeerGone(errno.EPIPE, "guest is closed")
        return g

    def fail(self, exc: BaseException) -> bool:
        """The host is gone (``exc`` says how): every later use raises it.  True the first time."""
        if self.gone is not None:
            return False
        self.gone = exc
        return True

    def in_flight(self) -> bool:
        """Has the host buffers of ours (whose taking would make ring room)?"""
        return self._inflight() > 0

    def _inflight(self) -> int:
        """The C core's count of our buffers with the host (no allocation: a wait loop asks)."""
        lib.hgsmi_guest_stats(self.check_open(), self._st)
        return int(self._st.inflight)

    def heap_room_coming(self) -> bool:
        """Would waiting make heap room?  Only if a buffer that frees itself
        (a send, a published loan, a timed-out call) is still with the host:
        a submitted buffer comes back to its caller, who frees it.

        Reaps the submitted buffers' completions first (:meth:`completed`
        returns them next), so that the rest in flight is exactly those that
        free themselves, and a wait does not wake at once for a completion
        it cannot use.  Raises :class:`PeerGone`.
        """
        check(self.reap(self._done_one), "completions")
        return self._inflight() > len(self.inflight)

    def stats(self) -> dict[str, Any]:
        """Counters, in-flight buffers and guest-heap figures."""
        st = ffi.new("struct hgsmi_guest_stats *")
        lib.hgsmi_guest_stats(self.check_open(), st)
        out = struct_dict(st[0])
        out["guest_heap"] = with_fragmentation(out["guest_heap"])
        out["backend"] = backend_name(out["backend"])
        return out

    def fileno(self) -> int:
        """The IRQ eventfd.  ``OSError`` for semaphores."""
        return check(lib.hgsmi_guest_fileno(self.check_open()), "fileno")

    # -- buffers ----------------------------------------------------------------
    def call_args(self, channel: int, info: int, data: Any,
                  reply_size: int) -> tuple[Any, int]:
        """A copy-mode call's checks, for both faces: ``(data as bytes or a cffi buffer, cap)``.

        ``cap``, ``max(len(data), reply_size)``, is the most the reply may
        be.  Raises TypeError/ValueError for bad arguments,
        :class:`MessageTooLarge` if ``cap`` can never fit the guest heap.
        """
        if not (type(channel) is int and type(info) is int and 0 < channel < 256
                and 0 <= info <= 0xFFFF):
            check_channel(channel, info)
        # bytes, the common request, goes to C as it is: a cffi argument takes
        # its pointer for the call, where from_buffer makes an object (0.3 µs).
        src = data if type(data) is bytes else as_buffer(data)
        if type(reply_size) is not int or reply_size < 0:
            check_int("reply_size", reply_size, 0, 1 << 63)
        cap = len(src)
        if reply_size > cap:  # (max() is a call: 0.1 µs of a call's RTT)
            cap = reply_size
        if cap > self.size:
            raise MessageTooLarge(errno.EMSGSIZE, f"call on channel {channel}: "
                                  f"{cap} bytes can never fit in the guest heap")
        return src, cap

    def alloc_copy(self, channel: int, info: int, src: Any, reply_size: int) -> int | None:
        """A buffer holding a copy of ``src`` (checked by call_args): its offset, None
        while the heap is full.  Its completion is the caller's to free (free_offset)."""
        m, g = self._one, self.handle
        if g is None or self.gone is not None:
            g = self.check_open()  # raises
        rc = lib.hgsmi_guest_alloc(g, len(src), reply_size, channel, info, m)
        if rc < 0:
            if rc == -errno.ENOMEM:
                return None
            raise error(rc, f"call on channel {channel}")
        ffi.memmove(self.base + m.data, src, len(src))
        return int(m.offset)

    def free_offset(self, offset: int) -> None:
        """Free a buffer of alloc_copy (its reply copied out)."""
        if self.handle is not None:
            lib.hgsmi_guest_free(self.handle, offset)

    def alloc(self, channel: int, info: int, size: int, reply_size: int = 0) -> Buffer | None:
        """A :class:`Buffer` of ``size`` bytes to fill in place; None while the heap is full.

        Raises TypeError/ValueError for bad arguments, :class:`MessageTooLarge`,
        :class:`PeerGone`.
        """
        if self._held:
            self.retry_held()
        m = self._one
        g = self.handle
        # The common case in one FFI call, without check_int's calls.
        if (type(channel) is int and type(info) is int and type(size) is int
                and type(reply_size) is int and 0 < channel < 256 and 0 <= info <= 0xFFFF
                and 0 <= size <= 0xFFFFFFFF and 0 <= reply_size <= 0xFFFFFFFF
                and g is not None):
            rc = lib.hgsmi_guest_alloc(g, size, reply_size, channel, info, m)
        else:
            check_channel(channel, info)
            check_int("size", size, 0, 1 << 63)
            check_int("reply_size", reply_size, 0, 1 << 63)
            if max(size, reply_size) > 0xFFFFFFFF:
                raise MessageTooLarge(errno.EMSGSIZE, f"alloc: {max(size, reply_size)} bytes "
                                      "can never fit in the guest heap")
            rc = lib.hgsmi_guest_alloc(self.check_open(), size, reply_size, channel, info, m)
        if rc == -errno.ENOMEM:
            return None
        check(rc, "alloc")
        buf = self._bufs[m.offset] = Buffer(self, m.offset, channel, info, size, m.capacity,
                                            Lease(self.base + m.data, size))
        return buf

    def hand_over(self, buf: Buffer) -> None:
        """filling -> in-flight: the buffer's view is revoked, the host may have it.

        Raises ValueError for a buffer that is not this guest's or not
        filling, BufferError while a view of it is in use.
        """
        if buf._core is not self or buf.state != "filling":
            raise ValueError(f"cannot submit a buffer that is {buf.state}")
        if buf._lease is not None and not buf._lease.release():
            raise BufferError("a view of the buffer is still in use; release it before submitting")
        buf._lease = None
        buf.state = "in-flight"

    def take_back(self, buf: Buffer) -> None:
        """in-flight -> filling: the host never got it (ring full, refused, cancelled)."""
        buf._lease = Lease(self.base + buf.offset + BUFFER_HEADER_SIZE, buf.size)
        buf.state = "filling"

    def complete(self, buf: Buffer, m: Any) -> None:
        """in-flight -> completed, with the status and reply of the completion ``m``."""
        buf.status = m.status
        buf._reply_at = (m.data, m.size if m.status >= 0 else 0)
        buf.state = "completed"

    def track(self, offset: int, ticket: Any) -> None:
        """The host has the buffer at ``offset``: reap hands ``ticket`` back with its completion."""
        self.inflight[offset] = ticket

    def free(self, buf: Buffer) -> None:
        """Give ``buf`` back to the heap (idempotent); held back while a view of it lives.

        Raises ValueError while the host still has it.
        """
        if buf.state == "freed":
            return
        if buf.state == "in-flight":
            raise ValueError("the host still has this buffer; wait for its completion")
        for lease in (buf._lease, buf._reply):
            if lease is not None and not lease.release():
                # Memory under a live view is never reused: hold it back
                # (retry_held frees it once the view is gone).
                if buf.state != "held":
                    self._held.append(buf)
                    buf.state = "held"
                    if self._on_held is not None:
                        self._on_held()
                return
        if buf.state == "held":
            self._held.remove(buf)
        buf._lease = buf._reply = buf._reply_at = None
        self._bufs.pop(buf.offset, None)
        if self.handle is not None:
            check(lib.hgsmi_guest_free(self.handle, buf.offset), "free")
        buf.state = "freed"

    def retry_held(self) -> None:
        """Free the buffers held back by a view, now that the view is gone."""
        for buf in list(self._held):
            self.free(buf)

    def holding(self) -> bool:
        """Is anything held back by a view (a buffer's free, a host command's ack)?"""
        return bool(self._held or self.held_acks)

    # -- submitting and reaping ------------------------------------------------------------
    def submit(self, tickets: list[Any], offs: Any, start: int = 0) -> int:
        """Push ``offs[start:len(tickets)]`` onto the submit ring, with one doorbell.

        Each that went is in flight: :meth:`reap` hands back its ticket.
        Returns how many went (0: the ring is full) or -errno.
        """
        g = self.handle
        if g is None or self.gone is not None:
            g = self.check_open()  # raises
        rc: int = lib.hgsmi_guest_submit(g, offs + start, len(tickets) - start)
        if rc > 0:
            inflight = self.inflight
            for i in range(start, start + rc):
                inflight[offs[i]] = tickets[i]
        return rc

    def reap(self, done: Callable[[Any, Any], None]) -> int:
        """Take every completion the host has made: ``done(ticket, m)`` for each
        submission in flight (``m`` its struct hgsmi_msg, valid during the call).

        Published loans and sends are freed by the C core.  Returns 0 or -errno.
        """
        if self._held:
            self.retry_held()
        msgs, g, inflight = self._msgs, self.handle, self.inflight
        if g is None or self.gone is not None:
            g = self.check_open()  # raises
        cap = len(msgs)
        while True:
            n: int = lib.hgsmi_guest_reap(g, msgs, cap)
            if n < 0:
                return n
            for i in range(n):
                m = msgs[i]
                ticket = inflight.pop(m.offset, None)
                if ticket is not None:
                    done(ticket, m)
            if n < cap:
                return 0

    def _done_one(self, buf: Buffer, m: Any) -> None:
        """reap's ``done`` for Buffers submitted as their own tickets."""
        self.complete(buf, m)
        self._done.append(buf)

    def completed(self) -> list[Buffer]:
        """:meth:`reap` for Buffers submitted as their own tickets: those completed
        (with any reaped before by :meth:`heap_room_coming`)."""
        check(self.reap(self._done_one), "completions")
        out, self._done = self._done, []
        return out

    def drop_inflight(self) -> list[Any]:
        """Forget every submission in flight (the host is gone); return their tickets."""
        tickets = list(self.inflight.values())
        self.inflight.clear()
        return tickets

    def send_steps(self, channel: int, info: int, datas: Iterable[Any],
                   timeout: float | None) -> Generator[tuple[int, float | None], None, int]:
        """send_many for both faces: queue copies of ``datas``, one doorbell per batch.

        Sends what fits; while the heap or ring is full it yields ``(rc,
        seconds left or None)`` and its face waits for room.  Returns how many
        were sent; raises :class:`Timeout`, :class:`PeerGone`,
        :class:`MessageTooLarge`.
        """
        check_channel(channel, info)
        n, ptrs, lens, _keep = buffer_arrays(datas)
        if not n:
            return 0
        timeout_ms(timeout)  # None or >= 0, else ValueError
        deadline = None if timeout is None else time.monotonic() + timeout
        sent = 0
        while sent < n:
            rc = lib.hgsmi_guest_send(self.check_open(), channel, info, ptrs + sent,
                                      lens + sent, n - sent)
            if rc > 0:
                sent += rc
                continue
            if rc not in NO_ROOM:
                raise error(rc, "send")
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Timeout(errno.ETIMEDOUT, f"send: {sent} of {n} sent, no room")
            yield rc, left
        return sent

    # -- loans ------------------------------------------------------------------
    def loan(self, channel: int, info: int, size: int, n: int, wait: Wait | None) -> Loan | None:
        """A :class:`Loan` of 1 to ``n`` buffers of ``size`` bytes; None while the heap is full.

        ``wait`` is how its publish waits for ring room (None: it raises).
        Raises TypeError/ValueError, :class:`MessageTooLarge`, :class:`PeerGone`.
        """
        if self._held_loans:
            for held in list(self._held_loans):
                held.cancel()
        g = self.handle
        if not (type(channel) is int and type(info) is int and type(size) is int
                and type(n) is int and 0 < channel < 256 and 0 <= info <= 0xFFFF
                and 0 <= size <= 0xFFFFFFFF and 0 < n <= 1 << 20 and g is not None):
            check_channel(channel, info)
            check_int("size", size, 0, 0xFFFFFFFF)
            check_int("n", n, 1, 1 << 20)
            g = self.check_open()
        offs, self._spare_offs = self._spare_offs, None
        if offs is None or len(offs) < n:  # (longer is fine: a loan counts its own)
            offs = ffi.new("uint32_t[]", n)
        rc = _loan(g, channel, info, size, n, offs)  # the one crossing into C
        if rc > 0:
            ln = Loan(self, wait, offs, rc, size, channel, info)
            self._loans.add(ln)
            return ln
        self._keep_offs(offs)
        if rc == -errno.ENOMEM:
            return None
        raise error(rc, f"loan of {n} x {size} bytes")

    def loan_settled(self, ln: Loan, offs: Any) -> None:
        """``ln`` is all published or given back: forget it, and keep its
        ``offs`` (which it never reads again) for the next loan."""
        self._loans.discard(ln)
        self._keep_offs(offs)
        if self._held_loans:  # (a publish's common case: none)
            self._held_loans.discard(ln)

    def _keep_offs(self, offs: Any) -> None:
        """Keep ``offs`` for the next loan, unless it is longer than SPARE_OFFS_MAX."""
        if len(offs) <= SPARE_OFFS_MAX:
            self._spare_offs = offs

    def loan_held(self, ln: Loan) -> None:
        """``ln`` was cancelled while a view of it lives: cancel it again later."""
        self._held_loans.add(ln)

    def unloan(self, offs: Any, n: int) -> None:
        """Give loaned, unpublished buffers back to the heap (a no-op once closed)."""
        if self.handle is not None:
            lib.hgsmi_guest_unloan(self.handle, offs, n)

    # -- host commands ------------------------------------------------------------
    def register(self, channel: int, handler: Handler) -> None:
        """Serve host commands on ``channel`` with ``handler(msg)``."""
        check_channel(channel)
        if not callable(handler):
            raise TypeError("handler must be callable")
        check(lib.hgsmi_guest_register(self.check_open(), channel, ffi.NULL, ffi.NULL),
              f"register channel {channel}")
        self.handlers[channel] = handler

    def serve(self, deadline: float | None) -> int:
        """Serve the host commands in the FIFO now; never waits for more.

        Each handler's outcome is acked when it returns, unless it keeps a
        view (held back, ``on_held`` told) or finishes later (start_async;
        see :meth:`finish`).  Acks wait for room in the host's ack ring
        until ``deadline`` (monotonic; None: no limit; 0: only the C core's
        short grace).  Returns how many were served.  Raises
        :class:`PeerGone`, :class:`ProtocolError`, :class:`Timeout` (the
        host kept its ack ring full).
        """
        msgs, g = self._msgs, self.handle
        if g is None or self.gone is not None:
            g = self.check_open()  # raises
        cap = len(msgs)
        served = 0
        while True:
            n = lib.hgsmi_guest_recv_timeout(g, msgs, cap,
                                             0 if deadline == 0 else left_ms(deadline))
            if n < 0:
                raise error(n, "poll")
            if n == 0:
                break
            k = reply.serve_batch(msgs, n, self.base, self._peer(), self.handlers,
                            self._start_async, self.failed, self.held_acks, self._windows)
            if k:
                check(lib.hgsmi_guest_ack_timeout(g, msgs, k, left_ms(deadline)), "poll: ack")
            served += n
        if self.held_acks and self._on_held is not None:
            self._on_held()
        return served

    def defer(self, msg: Message, m: Any) -> Any:
        """A handler of ``msg`` finishes later: returns the copy of ``m`` to :meth:`finish` with."""
        mc = ffi.new("struct hgsmi_msg *", m)
        self._live[m.offset] = msg
        return mc

    def finish(self, mc: Any, result: Callable[[], Any]) -> bool:
        """A deferred host command's handler is done: ``result()`` is its reply (or raises).

        Writes the reply or the failure; True if its ack is now due
        (:meth:`flush_acks`), False if closed meanwhile or held back by a view.
        """
        msg = self._live.pop(mc.offset, None)
        if msg is None:  # closed meanwhile
            return False
        try:
            reply.fill_reply(self.base, mc, result())
        except BaseException as e:  # noqa: B036 - CancelledError too
            self.failed(mc, e)
        if self.held_acks.settle(mc, msg):
            self.acks.append(mc)
            return True
        if self._on_held is not None:  # a view outlived the handler
            self._on_held()
        return False

    def flush_acks(self, deadline: float | None) -> None:
        """Ack the host commands that are done and free of views, in one call.

        Waits for ack ring room until ``deadline`` (as :meth:`serve`).
        Raises :class:`PeerGone`, :class:`Timeout`.
        """
        if self.held_acks:
            self.acks.extend(self.held_acks.ready())
        acks, g = self.acks, self.handle
        if not acks or g is None or self.gone is not None:
            return
        self.acks = []
        check(lib.hgsmi_guest_ack_timeout(g, reply.msg_array(acks), len(acks), left_ms(deadline)),
              "poll: ack")

    def failed(self, m: Any, e: BaseException) -> None:
        """A handler raised ``e``: fail ``m`` with its errno and log it, thinned."""
        reply.report_failure(self._ratelog, m, e)

    # -- lifetime ---------------------------------------------------------------
    def close(self) -> None:
        """Detach; the host reclaims whatever was in flight.  Idempotent.

        Every view is revoked; while one that cannot be lives on, the
        mapping stays (:mod:`hgsmi._kept`).
        """
        g = self.handle
        if g is not None:
            self.handle = None
            left = self.held_acks.drop()
            left += [msg.release for msg in self._live.values() if not msg.release()]
            self._live.clear()
            for ln in self._loans | self._held_loans:
                if not ln.cancel():  # with the handle gone it only revokes the views
                    left.append(ln.cancel)
            self._loans.clear()
            self._held_loans.clear()
            for buf in self._bufs.values():
                for lease in (buf._lease, buf._reply):
                    if lease is not None and not lease.release():
                        left.append(lease.release)
                buf._lease = buf._reply = buf._reply_at = None
                buf.state = "freed"
            self._bufs.clear()
            self.inflight.clear()
            self._done.clear()
            self._held.clear()
            self.acks = []
            if self._windows is not None:
                self._windows.retire()
            if left:  # a view lives on: unmapped only once it goes
                lib.hgsmi_guest_keep_mapping(g)
                _kept.keep(self.base, self.size, left)
            lib.hgsmi_guest_detach(g)
        if _kept.pending():
            _kept.sweep()

    def __del__(self) -> None:
        self.close()
