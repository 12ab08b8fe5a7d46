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
"""
from __future__ import annotations

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
