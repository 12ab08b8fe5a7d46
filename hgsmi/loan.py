"""Loaned buffers: zero copy as a stream (:meth:`Guest.loan`), made and owned by the guest's core.

A loan is a batch of buffers in the guest heap, filled in place and then
published with one crossing into C and one doorbell.  Published buffers are
fire and forget: the C core frees each when the host completes it, so a
stream makes no Python object per completion and never calls ``free``.

The views of a loan come from one region made for the loan (a slice each,
not a cffi buffer each, where the interpreter allows: :mod:`hgsmi._views`).
Publishing revokes them, and the region says whether something derived
from them (a slice of a view, a numpy array) lives on; then the loan is not
published (:class:`BufferError`), as :meth:`Guest.submit` refuses a buffer
whose view is still in use.  No view outlives its buffer.
"""
from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from . import _views
from ._native import ffi, lib
from .errors import Timeout, error

if TYPE_CHECKING:  # pragma: no cover
    from .core.guest import GuestCore

#: how a face waits for room: ``wait(seconds or None)`` (see Guest.wait)
Wait = Callable[[float | None], bool]

# Looked up once (a stream makes and publishes a loan per batch): an attribute
# of ``ffi`` is a new bound method each time, one of ``lib`` a lookup
_buffer, _unpack, _publish = ffi.buffer, ffi.unpack, lib.hgsmi_guest_publish


class Loan:
    """Buffers of ``size`` bytes loaned by :meth:`Guest.loan`, to fill and publish.

    Iterate it, or index it, for each buffer's writable view (in the VRAM,
    no copy).  :meth:`publish` hands them to the host; :meth:`cancel` (or
    leaving its ``with`` block) gives back what was not published.
    """

    __slots__ = ("_core", "_wait", "_offs", "_n", "_sent", "_region", "views",
                 "size", "channel", "info", "__weakref__")

    def __init__(self, core: GuestCore, wait: Wait | None, offs: Any, n: int, size: int,
                 channel: int, info: int) -> None:
        self._core = core
        self._wait = wait  # None: publish never waits (an event loop's guest)
        self._offs = offs
        self._n = n
        self._sent = 0
        self.size, self.channel, self.info = size, channel, info
        # One region for the whole loan: a view is a slice of it.
        self._region = _views.BatchRegion(_buffer(core.base, core.size))
        whole = self._region.views
        #: the buffers' views, in order; revoked by publish and cancel
        self.views: list[memoryview]
        if n == 1:  # (a comprehension is a call, and was a quarter of a loan of one)
            o = offs[0] + 16
            self.views = [whole[o:o + size]]
        else:
            self.views = [whole[o + 16:o + 16 + size] for o in _unpack(offs, n)]

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[memoryview]:
        return iter(self.views)

    def __getitem__(self, i: int) -> memoryview:
        return self.views[i]

    @property
    def published(self) -> int:
        """How many of the buffers the host has (a prefix)."""
        return self._sent

    def publish(self, timeout: float | None = None) -> int:
        """Hand every buffer to the host, with one doorbell; returns how many.

        The views are revoked first.  While the submit ring is full it waits
        for room, up to ``timeout`` (0: only what fits now).  The host's
        completions free the buffers: nothing to reap or free.  Raises
        :class:`BufferError` while a view (or something made from one, such
        as a numpy array) is still in use, and then publishes nothing;
        :class:`RingFull` (``timeout=0``) or :class:`Timeout` with the rest
        still loaned (publish again, or cancel); :class:`PeerGone`.
        """
        core = self._core
        if self._sent == self._n:
            return 0
        if not self._region.revoke(self.views):
            raise BufferError("a view of a loaned buffer is still in use; "
                              "release it before publishing")
        first, g = self._sent, core.handle
        if first == 0 and g is not None and core.gone is None:
            # A stream's case, once a batch: all of it fits at once.
            rc = _publish(g, self._offs, self._n)
            if rc == self._n:
                self._sent = self._n
                core.loan_settled(self, self._offs)
                return self._n
            if rc > 0:
                self._sent = rc
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._sent < self._n:
            g = core.handle
            if g is None or core.gone is not None:
                g = core.check_open()  # raises
            rc = _publish(g, self._offs + self._sent if self._sent else self._offs,
                          self._n - self._sent)
            if rc > 0:
                self._sent += rc
                continue
            if rc != -errno.EAGAIN or timeout == 0 or self._wait is None:
                raise error(rc, "publish")
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Timeout(errno.ETIMEDOUT, f"publish: {self._sent} of {self._n} "
                              "published, the ring is full")
            self._wait(left)
        core.loan_settled(self, self._offs)
        return self._sent - first

    def cancel(self) -> bool:
        """Give back the buffers not published; idempotent.

        Returns False if a view is still in use: the memory is then held
        back (never reused under the view) until the guest sees it go.
        """
        core = self._core
        if self._sent == self._n:
            return True
        if not self._region.revoke(self.views):  # (False: something made from one lives)
            core.loan_held(self)
            return False
        core.unloan(self._offs + self._sent, self._n - self._sent)
        self._sent = self._n
        core.loan_settled(self, self._offs)
        return True

    def __enter__(self) -> Loan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    def __repr__(self) -> str:
        return (f"<hgsmi.Loan channel={self.channel} {self._n} x {self.size} bytes, "
                f"{self._sent} published>")

