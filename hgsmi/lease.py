"""Views over buffers in the VRAM that can be taken back.

A buffer belongs to whoever holds its offset; when it is completed or freed,
its memory goes back to the owner and is reused.  A Python view must not
outlive that: completion revokes the view, and while something derived
from it lives on (a slice, a numpy array) the library holds back the
completion (or the free) until it is let go, so memory is never reused
under a live view.  Using a revoked view itself raises ``ValueError``.

How a live view is told is the interpreter's business and lives in
:mod:`hgsmi._views` (reference counts on CPython 3.11 to 3.13, PEP 688 from
3.14, private copies elsewhere); this module gives it the two shapes the
peers use:

* a :class:`Lease` is one view with an exporter of its own: a message of
  an async peer (whose handler finishes later), a guest's own buffer;
* a :class:`Window` is one exporter over the whole mapping that a sync
  peer takes each message's view from, in turn, kept from batch to batch
  at about half the cost of a Lease per message.  The message whose view
  lives on is held back until the window's views are all gone, and the
  next message is served from a fresh window (:meth:`Windows.retire`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _views
from ._native import ffi

if TYPE_CHECKING:
    class Lease(_views.Single):
        """A revocable view of ``size`` bytes at ``ptr``: :attr:`view`, and :meth:`release`.

        ``release()`` revokes the view and returns False while something
        derived from it lives on (ask again later), True once nothing does.
        """
else:
    # The mechanism's class itself, over cffi buffers: no wrapper per message.
    Lease = _views.single_class(ffi.buffer)


class Window:
    """One exporter over ``size`` bytes at ``ptr``, which messages' views are taken from.

    The server takes a view with :attr:`views` ``[lo:hi]``, hands it to a
    handler, and gives it back to :attr:`settle` (:data:`hgsmi._views.FREE`, ``HELD`` or
    ``SPENT``: after anything but FREE it retires the window).  It calls
    :meth:`close` when it takes no more; :meth:`free` says when no view of
    the window is left.
    """

    __slots__ = ("_region", "views", "settle")

    def __init__(self, ptr: Any, size: int) -> None:
        region = self._region = _views.Region(ffi.buffer(ptr, size))
        #: ``views[lo:hi]``: a message's view of bytes ``lo:hi`` of the mapping
        self.views = region.views
        #: ``settle(view)``: revoke it (the caller's name holds it); see :mod:`hgsmi._views`
        self.settle = region.settle

    def close(self) -> None:
        """No more views."""
        self._region.close()

    def free(self) -> bool:
        """Release what can be; True once no view of the window is left."""
        return self._region.free()


class Windows:
    """A sync peer's current :class:`Window`, kept until a handler holds a view."""

    __slots__ = ("_ptr", "_size", "current")

    def __init__(self, ptr: Any, size: int) -> None:
        self._ptr, self._size = ptr, size
        #: the window views are taken from now; None after :meth:`retire` (a
        #: server reads it, and calls :meth:`get` only when it is None)
        self.current: Window | None = None

    def get(self) -> Window:
        """The window to take views from (a new one after :meth:`retire`)."""
        if self.current is None:
            self.current = Window(self._ptr, self._size)
        return self.current

    def retire(self) -> None:
        """Take no more views from the current window: its held views are waited for."""
        if self.current is not None:
            self.current.close()
            self.current = None
