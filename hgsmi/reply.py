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
import logging
from typing import Any, Callable

from ._native import ffi
from .errors import HgsmiError
from .lease import Lease
from .message import Message

log = logging.getLogger("hgsmi")

#: ``dispatch(handler, msg, m)``: run the handler, write its outcome into
#: ``m``; True if ``m`` is final now, False if it finishes later (an async
#: handler, whose owner hands it back through :meth:`HeldBack.settle`).
Dispatch = Callable[[Any, Message, Any], bool]


def fill_reply(base: Any, m: Any, reply: Any) -> None:
    """Write a handler's reply (None: results left in place) into the buffer of ``m``.

    A reply longer than the buffer's capacity fails the buffer with EOVERFLOW.
    Raises ``TypeError`` if ``reply`` is not bytes-like.
    """
    if reply is None:
        return
    src = memoryview(reply).cast("B")
    if src.nbytes > m.capacity:
        m.status, m.size = -errno.EOVERFLOW, 0
        log.warning("channel %d reply of %d bytes exceeds capacity %d",
                    m.channel, src.nbytes, m.capacity)
        return
    ffi.memmove(base + m.data, src, src.nbytes)
    m.size = src.nbytes


def fail_status(m: Any, exc: BaseException) -> None:
    """Fail ``m`` with the errno of an HgsmiError, ECANCELED, or EIO for anything else."""
    code = exc.errno if isinstance(exc, HgsmiError) and exc.errno else errno.EIO
    if isinstance(exc, asyncio.CancelledError):
        code = errno.ECANCELED
    m.status, m.size = -code, 0


class HeldBack:
    """Buffers whose completion (or ack) waits until a handler's view of them is gone.

    Python has no hook for "the last export of a buffer went away", so the
    owner of a ``HeldBack`` calls :meth:`ready` now and then (each poll or
    serve round; ``hgsmi.aio`` every few ms while anything is held).
    ``len()`` is how many are held.
    """

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: list[tuple[Any, Message]] = []  # (copy of its hgsmi_msg, message)

    def __len__(self) -> int:
        return len(self._items)

    def settle(self, m: Any, msg: Message) -> bool:
        """Revoke ``msg``'s view: True if ``m`` (a struct or a pointer to one) may go back now.

        Otherwise a copy of ``m`` is kept (with its status and reply size)
        until :meth:`ready` finds the view gone, and False is returned.
        """
        if msg._release():
            return True
        if ffi.typeof(m).kind == "pointer":  # already a copy of its own (an async handler's)
            m = m[0]
        self._items.append((ffi.new("struct hgsmi_msg *", m), msg))
        return False

    def ready(self) -> list[Any]:
        """Take out the held buffers whose views are gone (``struct hgsmi_msg *`` each)."""
        out, still = [], []
        for mc, msg in self._items:
            if msg._release():
                out.append(mc)
            else:
                still.append((mc, msg))
        self._items = still
        return out

    def drop(self) -> None:
        """Forget every held buffer (its peer or segment is gone); revoke what can be."""
        for _, msg in self._items:
            msg._release()
        self._items = []


def serve_batch(msgs: Any, n: int, base: Any, peer: Any, handlers: list[Any],
                dispatch: Dispatch, held: HeldBack) -> int:
    """Run the handlers of ``msgs[0:n]``; return ``k``: ``msgs[0:k]`` may go back now.

    Each buffer becomes a :class:`Message` over ``base``; ``dispatch`` serves
    it.  The final ones whose views are gone are moved to the front of
    ``msgs`` (complete or ack them in one call); those with a view still
    alive go to ``held``; those ``dispatch`` deferred are the caller's.
    """
    k = 0
    for i in range(n):
        m = msgs[i]
        msg = Message(m.channel, m.info, m.capacity, Lease(base + m.data, m.size), peer)
        if dispatch(handlers[m.channel], msg, m) and held.settle(m, msg):
            if k != i:
                msgs[k] = m
            k += 1
    return k


def msg_array(mcs: list[Any]) -> Any:
    """A ``struct hgsmi_msg[]`` of the ``struct hgsmi_msg *`` in ``mcs``, to hand back at once."""
    arr = ffi.new("struct hgsmi_msg[]", len(mcs))
    for i, mc in enumerate(mcs):
        arr[i] = mc[0]
    return arr
