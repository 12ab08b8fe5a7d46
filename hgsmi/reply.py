"""How a handler's outcome goes back to the buffer's owner: one place for host, guest and asyncio.

A received buffer is handed back by a completion (host, for guest buffers)
or an ack (guest, for host commands).  Either lets the owner free and reuse
the memory, so it must wait while a handler's view of the buffer still
lives (see :mod:`hgsmi.lease`).  :func:`serve_batch` runs the handlers of a
received batch and sorts out what may go back now; :class:`HeldBack` keeps
the rest until their views are gone.  The sync ``Guest``/``Host`` and
``hgsmi.aio`` all use these two, and differ only in when they look again.
"""
from __future__ import annotations

import asyncio
import errno
import inspect
import logging
import math
import struct
from collections.abc import Callable
from typing import Any

from ._native import ffi
from ._ratelog import RateLog
from ._views import HELD, REFS
from .errors import HgsmiError, MessageTooLarge
from .lease import Lease, Windows
from .message import Message

#: ``start_async(msg, m, awaitable)``: a handler returned an awaitable; run
#: it and return False (``m`` finishes later: its owner hands it back through
#: :meth:`HeldBack.settle`), or raise (a sync peer: the buffer fails).
StartAsync = Callable[[Message, Any, Any], bool]
#: ``failed(m, exc)``: a handler raised; set ``m``'s status, count and log.
Failed = Callable[[Any, BaseException], None]

#: struct hgsmi_msg, to unpack a batch's fields in one go
_MSG = struct.Struct("=IIIIBBHiI")
assert _MSG.size == ffi.sizeof("struct hgsmi_msg")


#: replies that are never awaitable, told by their exact type
_PLAIN = frozenset((bytes, bytearray, memoryview))
#: the most of a failed handler's "Type: message" that goes back to the caller
REASON_MAX = 200


class BadReply(TypeError):
    """A handler returned something that is neither None nor bytes-like."""


class ReplyTooLarge(MessageTooLarge):
    """A handler's reply is longer than its buffer's capacity (errno EOVERFLOW).

    Raised by :func:`fill_reply` so that it reaches the peer's ``failed``,
    which logs it rate-limited (the capacity is the sender's to choose) but
    does not count it as a handler that raised.
    """


def fill_reply(base: Any, m: Any, reply: Any) -> None:
    """Write a handler's reply (None: results left in place) into the buffer of ``m``.

    Raises :class:`BadReply` (a ``TypeError``) if ``reply`` is not
    bytes-like, and :class:`ReplyTooLarge` for a reply longer than the
    buffer's capacity: the caller's ``failed`` fails the buffer with
    EOVERFLOW and logs it.
    """
    if reply is None:
        return
    src: bytes | memoryview
    if type(reply) is bytes:  # the common reply: memmove reads it as it is (no view made)
        src, n = reply, len(reply)
    else:
        try:
            view = memoryview(reply).cast("B")
        except TypeError:
            raise BadReply(f"the channel {m.channel} handler returned {type(reply).__name__}, "
                           "not bytes-like or None") from None
        src, n = view, view.nbytes
    if n > m.capacity:
        raise ReplyTooLarge(errno.EOVERFLOW, f"reply of {n} bytes exceeds capacity {m.capacity}")
    ffi.memmove(base + m.data, src, n)
    m.size = n


def fail_status(m: Any, exc: BaseException) -> None:
    """Fail ``m`` with the errno of an HgsmiError, ECANCELED, or EIO for anything else."""
    code = exc.errno if isinstance(exc, HgsmiError) and exc.errno else errno.EIO
    if isinstance(exc, asyncio.CancelledError):
        code = errno.ECANCELED
    m.status, m.size = -code, 0


def report_failure(ratelog: RateLog, m: Any, exc: BaseException, who: str = "") -> bool:
    """Fail ``m`` with ``exc`` (:func:`fail_status`) and log it, thinned per (sender, channel).

    ``who`` prefixes the line (the host names the guest).  A cancelled handler is not
    logged: returns False for it, True for a failure the caller counts.
    """
    fail_status(m, exc)
    if isinstance(exc, asyncio.CancelledError):
        return False
    if isinstance(exc, (HgsmiError, BadReply)):  # no traceback: it says what happened
        ratelog.log(m.guest, f"channel {m.channel} handler failed", logging.WARNING,
                    "%schannel %d handler failed: %s", who, m.channel, exc)
    else:
        ratelog.log(m.guest, f"channel {m.channel} handler raised", logging.ERROR,
                    "%schannel %d handler raised", who, m.channel, exc_info=exc)
    return True


def write_reason(base: Any, m: Any, exc: BaseException) -> None:
    """Put "Type: message" of a handler's exception, bounded and NUL-terminated, into
    the failed buffer ``m`` (status -EIO), so that the caller's RemoteError says it."""
    if m.status != -errno.EIO or m.capacity < 2:
        return
    text = f"{type(exc).__name__}: {exc}" if not isinstance(exc, BadReply) else \
        f"TypeError: {exc}"
    raw = text.encode("utf-8", "replace")[:min(REASON_MAX, m.capacity - 1)] + b"\0"
    ffi.memmove(base + m.data, raw, len(raw))
    m.size = len(raw)


def read_reason(raw: Any) -> str:
    """The reason :func:`write_reason` left in a failed reply ("" if none)."""
    text = bytes(raw[:REASON_MAX + 1]).split(b"\0", 1)
    if len(text) < 2 or not text[0]:
        return ""
    return text[0].decode("utf-8", "replace")


class HeldBack:
    """Buffers whose completion (or ack) waits until a handler's view of them is gone.

    Views are not watched (:mod:`hgsmi._views` tells only when asked), so
    the owner of a ``HeldBack`` calls :meth:`ready` now and then (each poll
    or serve round; ``hgsmi.aio`` every few ms while anything is held).
    ``len()`` is how many are held.
    """

    __slots__ = ("items",)

    def __init__(self) -> None:
        #: (copy of its hgsmi_msg, a check that is True once no view is left);
        #: changed in place only, so that a server's round can keep it and
        #: test it for emptiness without a call
        self.items: list[tuple[Any, Callable[[], bool]]] = []

    def __len__(self) -> int:
        return len(self.items)

    def settle(self, m: Any, msg: Message) -> bool:
        """Revoke ``msg``'s view: True if ``m`` (a struct or a pointer to one) may go back now.

        Otherwise a copy of ``m`` is kept (with its status and reply size)
        until :meth:`ready` finds the view gone, and False is returned.
        """
        if msg.release():
            return True
        self.hold(m, msg.release)
        return False

    def hold(self, m: Any, gone: Callable[[], bool]) -> None:
        """Keep a copy of ``m`` until ``gone()`` says its views are gone."""
        if ffi.typeof(m).kind == "pointer":  # already a copy of its own (an async handler's)
            m = m[0]
        self.items.append((ffi.new("struct hgsmi_msg *", m), gone))

    def ready(self) -> list[Any]:
        """Take out the held buffers whose views are gone (``struct hgsmi_msg *`` each)."""
        out, still = [], []
        for mc, gone in self.items:
            if gone():
                out.append(mc)
            else:
                still.append((mc, gone))
        self.items[:] = still
        return out

    def drop(self) -> list[Callable[[], bool]]:
        """Forget every held buffer (its peer or segment is gone); revoke what
        can be, and return the checks of the views that live on."""
        left = [gone for _, gone in self.items if not gone()]
        self.items.clear()
        return left


def serve_batch(msgs: Any, n: int, base: Any, peer: Any, handlers: list[Any],
                start_async: StartAsync, failed: Failed, held: HeldBack,
                windows: Windows | None = None) -> int:
    """Run the handlers of ``msgs[0:n]``; return ``k``: ``msgs[0:k]`` may go back now.

    Each buffer becomes a :class:`Message` over ``base`` for its channel's
    handler (none: the results are what is in place); the handler's return
    value is the reply, an awaitable goes to ``start_async``, an exception
    to ``failed``.  The final buffers whose views are gone are moved to the
    front of ``msgs`` (complete or ack them in one call); those with a view
    still alive go to ``held``; those deferred to ``start_async`` are the
    caller's.  A sync peer passes its ``windows`` and never defers (see
    :mod:`hgsmi.lease`); an async one gets a Lease per buffer.  A peer that
    serves batch after batch into the same array keeps a :class:`Sliced`
    instead (the same dispatch, its setup made once).
    """
    if windows is not None:
        return Sliced(msgs, base, peer, handlers, start_async, failed, held, windows).serve(n)
    k = 0
    for i in range(n):
        m = msgs[i]
        lease = Lease(base + m.data, m.size)
        msg = Message(m.channel, m.info, m.capacity, lease.view, peer, lease)
        handler = handlers[m.channel]
        final = True
        try:
            reply = handler(msg) if handler is not None else None
            if reply is not None:  # None, the common case: results left in place
                final = _outcome(base, m, msg, reply, start_async)
        except Exception as e:
            failed(m, e)
            write_reason(base, m, e)
        if final and held.settle(m, msg):
            if k != i:
                msgs[k] = m
            k += 1
    return k


def _outcome(base: Any, m: Any, msg: Message, reply: Any, start_async: StartAsync) -> bool:
    """A handler's result other than None: False if it finishes later."""
    # (isawaitable is an ABC check, 0.35 us: not for the replies that are bytes)
    if type(reply) not in _PLAIN and inspect.isawaitable(reply):
        return start_async(msg, m, reply)
    fill_reply(base, m, reply)
    return True


class Sliced:
    """:func:`serve_batch` of a sync peer, over one ``struct hgsmi_msg[]`` it
    receives into again and again: ``sliced.serve(n)`` serves ``msgs[0:n]``
    and returns ``k`` as serve_batch does.

    Views are slices of one window; the fields come out of one unpack over
    a buffer of the whole array made once; one :class:`Message` is refilled
    from message to message and from batch to batch while no handler keeps
    it.  Made once per peer (the host's :class:`~hgsmi.core.host.ConnCore`),
    a batch costs one call and no setup: what a one-message round (a call)
    pays per round.  ``peer`` may be set after it is made.
    """

    __slots__ = ("msgs", "peer", "_rows", "_base", "_handlers", "_start_async", "_failed",
                 "_held", "_windows", "_msg", "_mine")

    def __init__(self, msgs: Any, base: Any, peer: Any, handlers: list[Any],
                 start_async: StartAsync, failed: Failed, held: HeldBack,
                 windows: Windows) -> None:
        if ffi.typeof(msgs).kind != "array":  # a pointer's buffer would be one row
            raise TypeError("Sliced needs a struct hgsmi_msg[] array, not a pointer")
        self.msgs = msgs
        self.peer = peer  #: ``msg.peer`` of every message
        self._rows = ffi.buffer(msgs)  # the whole array: a batch stops after its n rows
        self._base, self._handlers, self._start_async = base, handlers, start_async
        self._failed, self._held, self._windows = failed, held, windows
        # The Message refilled while nobody else holds it, and its reference
        # count then (NaN until one is made: equal to nothing)
        self._msg: Message | None = None
        self._mine = math.nan

    def serve(self, n: int) -> int:
        """Serve ``msgs[0:n]``; return ``k`` as :func:`serve_batch` does.  (A method,
        not ``__call__``: a bound method is called in half the time, 0.05 µs a round.)"""
        msgs, base, windows = self.msgs, self._base, self._windows
        win = windows.current or windows.get()
        views, settle = win.views, win.settle
        handlers, refs = self._handlers, REFS
        k = 0
        view: memoryview | None  # dropped once settled: settle counts the caller's name
        # Taken out of the slot, so that the count compared is what it was
        # when made (only a local name): a Message a handler kept has more.
        msg: Message = self._msg  # type: ignore[assignment]  # None: refs(None) != NaN
        mine, self._msg = self._mine, None
        # The rows run to the array's end: range(n) stops the batch after n.
        # A one-message batch (a call's round) unpacks its row alone: the
        # iterator costs more to set up (0.65 µs) than the rest of its dispatch.
        rows = ((0, _MSG.unpack_from(self._rows)),) if n == 1 else zip(
            range(n), _MSG.iter_unpack(self._rows), strict=False)
        for i, (_, data, size, capacity, channel, _, info, _, _) in rows:
            view = views[data:data + size]
            # A constructor call per message was a third of the dispatch.
            # A kept one stays revoked, and the next gets a new object.
            if refs(msg) == mine:
                msg.channel, msg.info, msg.capacity, msg.view = channel, info, capacity, view
            else:
                msg = Message(channel, info, capacity, view, self.peer)
                mine = refs(msg)
            handler = handlers[channel]
            try:
                reply = handler(msg) if handler is not None else None
                # The request's own view (``return msg.data``) is its reply in place.
                if reply is not None and reply is not view and not _outcome(
                        base, msgs[i], msg, reply, self._start_async):
                    raise AssertionError("a sync peer deferred a buffer")  # start_async raises
            except Exception as e:
                self._failed(msgs[i], e)
                write_reason(base, msgs[i], e)
                # (leaving the except clause drops e, whose traceback would hold msg)
            msg.view = reply = None  # revoked: data raises (Message.view, no call a message)
            got = settle(view)
            view = None
            if got:  # held or spent: the next message's view comes from a fresh window
                if got == HELD:  # a view derived from this one lives on
                    self._held.hold(msgs[i], win.free)
                windows.retire()
                win = windows.get()
                views, settle = win.views, win.settle
                if got == HELD:
                    continue
            if k != i:
                msgs[k] = msgs[i]
            k += 1
        if refs(msg) == mine:  # nobody kept it: the next batch refills it
            self._msg, self._mine = msg, mine
        return k


def msg_array(mcs: list[Any]) -> Any:
    """A ``struct hgsmi_msg[]`` of the ``struct hgsmi_msg *`` in ``mcs``, to hand back at once."""
    arr = ffi.new("struct hgsmi_msg[]", len(mcs))
    for i, mc in enumerate(mcs):
        arr[i] = mc[0]
    return arr
