"""Views over buffers in the VRAM that can be taken back.

A buffer belongs to whoever holds its offset; when it is completed or freed,
its memory goes back to the owner and is reused.  A Python view must not
outlive that, so every buffer's view is exported by an object of its own (a
cffi buffer), and completion releases the view.  Then:

* using the view itself raises ``ValueError`` (a released memoryview);
* a numpy array or other export *of* the view makes ``release()`` fail
  (``BufferError``);
* a slice taken from the view keeps the exporter alive, which its reference
  count shows.

In the last two cases the lease reports that it is still held, and the
library holds back the completion (or the free) until it is let go, so
memory is never reused under a live view.  The cost is one cffi buffer and
one memoryview per message, and a reference count check at completion.

A :class:`Window` does the same for the sync peers at about half the cost
per message: one exporter over the whole mapping, kept from batch to batch,
and each message's view is a slice of it.  Slices of one view share one
managed buffer, which holds a reference for every live slice, so a view
that a handler kept (or a slice of it, or a numpy array of it) shows as one
reference too many once the handler returns.  The message that kept it is
held back until every view of its window is gone, and the next batch slices
a fresh window.  Async handlers finish later, when that count means nothing:
they get a Lease each.
"""
from __future__ import annotations

import gc
import sys
from typing import Any

from ._native import ffi


class Lease:
    """A revocable view of ``size`` bytes at ``ptr``."""

    __slots__ = ("_exporter", "view")

    def __init__(self, ptr: Any, size: int) -> None:
        self._exporter = ffi.buffer(ptr, size)
        self.view = memoryview(self._exporter)

    def release(self) -> bool:
        """Revoke the view; False while something derived from it lives on."""
        try:
            self.view.release()
        except BufferError:
            return False
        # References: our slot and getrefcount's argument.  More means a
        # slice's managed buffer still points at the exporter.
        return sys.getrefcount(self._exporter) <= 2


class Window:
    """One exporter over ``size`` bytes at ``ptr``, sliced into messages' views.

    The server slices :attr:`whole`, counts references to :attr:`mbuf` around
    each handler (see the module docstring), hands a view that cannot be
    released to :meth:`keep`, and calls :meth:`close` when it slices no
    more.  :meth:`free` says when no view of the window is left.
    """

    __slots__ = ("_exporter", "whole", "mbuf", "_stuck")

    def __init__(self, ptr: Any, size: int) -> None:
        self._exporter = ffi.buffer(ptr, size)
        self.whole = memoryview(self._exporter)
        # The managed buffer that every slice of `whole` shares; each live
        # slice, released or not, holds one reference to it.
        self.mbuf = gc.get_referents(self.whole)[0]
        self._stuck: list[memoryview] = []

    def keep(self, view: memoryview) -> None:
        """Remember a view that something still exports from (a numpy array)."""
        self._stuck.append(view)

    def close(self) -> None:
        """No more slices."""
        self.whole.release()

    def free(self) -> bool:
        """Release what can be; True once no view of the window is left."""
        stuck = []
        for view in self._stuck:
            try:
                view.release()
            except BufferError:
                stuck.append(view)
        self._stuck = stuck
        # Our slot and getrefcount's argument; the managed buffer drops its
        # reference when its last view is released.
        return not stuck and sys.getrefcount(self._exporter) <= 2


class Windows:
    """A sync peer's current :class:`Window`, kept until a handler holds a view."""

    __slots__ = ("_ptr", "_size", "_current")

    def __init__(self, ptr: Any, size: int) -> None:
        self._ptr, self._size = ptr, size
        self._current: Window | None = None

    def get(self) -> Window:
        """The window to slice from (a new one after :meth:`retire`)."""
        if self._current is None:
            self._current = Window(self._ptr, self._size)
        return self._current

    def retire(self) -> None:
        """Slice no more from the current window: its held views are waited for."""
        if self._current is not None:
            self._current.close()
            self._current = None
