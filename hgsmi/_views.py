"""Views over memory that is taken back: the one place that knows how the interpreter tells.

A view of a buffer must not outlive its ownership (design §3, Views): before
a completion, an ack or a free, the library must know whether a view of the
buffer, or anything derived from it (a slice, a numpy array), is alive.
Python has no public "this export is gone" signal for the memoryviews a
C exporter (a cffi buffer) hands out, so this module picks, once at import,
one of three mechanisms (:data:`MECHANISM`), each behind the same
shapes: a :func:`Region` (many views, one at a time or revoked together),
a :func:`BatchRegion` (many views, only revoked together: a loan's) and a
:class:`Single` (a Lease: one view).

``refcount`` (CPython 3.11 to 3.13, GIL builds): views are slices of one
    memoryview over the exporter; every live slice holds one reference to
    their shared managed buffer (found with ``gc.get_referents``), and the
    exporter loses the managed buffer's reference once no view is left.
    CPython internals: used only on the versions whose behaviour
    tests/test_views.py checks (its self-check runs under each one found).
``release`` (CPython 3.14+, GIL builds; 3.12+ with ``HGSMI_VIEWS``): PEP
    688.  Every view is ``memoryview(exporter)`` of a Python exporter whose
    ``__buffer__`` hands out a slice and whose ``__release_buffer__``
    CPython calls once the last view sharing that managed buffer (slices
    included) is released or collected.  Documented public API; no
    reference counts, but two Python-level calls and a managed buffer per
    view: 3x the cost of ``refcount``, so 3.12 and 3.13 keep the counts.
``copy`` (anything else: PyPy, free-threaded builds; or forced): a view is
    of a private ``bytearray`` copied in when it is made and copied back when
    it is settled (unless the memory changed under it meanwhile: a reply was
    written there).  Nothing a handler keeps can reach the shared memory, so
    nothing is ever held back and nothing refuses a submit; the cost is the
    copies (two in, one compare and one out per view) and no zero copy.

``HGSMI_VIEWS=release|refcount|copy`` in the environment forces one
(``release`` needs 3.12+; an unknown or impossible name raises at import).

Cost, ns per message, this project's 2-core VM under load from other work
(minimum of 3 x 15 repeats; ``python tests/support/views_check.py measure``):
"message" is a 64-byte view taken from a kept window and settled (the sync
peers' per-message work, batches of 64); "window" a window made, closed and
found free (once per held message); "lease" one made and released (each
message of the async peers, each guest buffer):

=========  ==================  ==================  ==================
mechanism  3.11 msg/win/lease  3.12 msg/win/lease  3.13 msg/win/lease
=========  ==================  ==================  ==================
refcount   203 / 928 / 510     232 / 1158 / 659    229 / 1088 / 594
release    n/a                 750 / 1152 / 1315   693 / 1085 / 1236
copy       1613 / 955 / 2787   1730 / 1150 / 3281  1645 / 1093 / 4027
=========  ==================  ==================  ==================

Through the real ``reply.serve_batch`` (64 x 64-byte messages, handler
returning None; CPU time, minimum of alternated runs), ns per message,
before this module -> after: 3.11 sync 505 -> 509, async 1382 -> 1350;
3.12 sync 500 -> 543, async 1666 -> 1518.  3.12 forced to ``release``:
sync 1094, async 2298 (which is why 3.12 and 3.13 stay on ``refcount``).
"""
from __future__ import annotations

import math
import os
import sys
import sysconfig
from collections.abc import Callable
from gc import get_referents
from sys import getrefcount
from typing import Any

#: what :meth:`Region.settle` says of a view its user is done with
FREE = 0  #: nothing derived from it lives: its memory may go back now
HELD = 1  #: something derived from it lives: wait for :meth:`Region.free`
SPENT = 2  #: free, but take no more views from this region (close it, make another)

MECHANISMS = ("release", "refcount", "copy")
#: the first CPython whose reference counts tests/test_views.py has not checked
VERIFIED = (3, 14)


def native_mechanism() -> str:
    """The mechanism this interpreter supports best (ignoring ``HGSMI_VIEWS``)."""
    if sys.implementation.name != "cpython" or sysconfig.get_config_var("Py_GIL_DISABLED"):
        return "copy"  # no trustworthy export tracking: views of copies
    if sys.version_info >= VERIFIED:
        return "release"  # counts unverified here (3.14 borrows stack references): public API
    return "refcount"


def choose(forced: str | None = None) -> str:
    """The mechanism to use: ``forced`` (or ``HGSMI_VIEWS``), else :func:`native_mechanism`.

    Raises ``ValueError`` for an unknown name, or ``release`` where PEP 688
    is missing, or ``refcount`` outside CPython.
    """
    name = forced or os.environ.get("HGSMI_VIEWS") or native_mechanism()
    if name not in MECHANISMS:
        raise ValueError(f"HGSMI_VIEWS={name!r}: not one of {', '.join(MECHANISMS)}")
    if name == "release" and (sys.version_info < (3, 12) or sys.implementation.name != "cpython"):
        raise ValueError("HGSMI_VIEWS=release needs CPython 3.12+ (PEP 688)")
    if name == "refcount" and sys.implementation.name != "cpython":
        raise ValueError("HGSMI_VIEWS=refcount needs CPython")
    return name


class _Region:
    """Views of one exporter's bytes, and whether any is left.

    ``Region(exporter)`` takes a fresh buffer object over the memory that
    nobody else references (``ffi.buffer(ptr, size)``).  :meth:`view` makes
    views; :meth:`settle` revokes one its user is done with and says whether
    anything derived from it lives (only one view may be out while settle
    is used so); :meth:`revoke` revokes many at once; :meth:`close` makes no
    more; :meth:`free` says, then and later, whether none is left.
    """

    __slots__ = ("views",)

    #: ``views[lo:hi]`` is :meth:`view` ``(lo, hi)``: a plain memoryview for
    #: ``refcount`` (slicing it costs no Python call: the sync hot path)
    views: Any

    def view(self, lo: int, hi: int) -> memoryview:  # pragma: no cover - abstract
        """A writable view of bytes ``lo:hi``."""
        raise NotImplementedError

    def settle(self, view: memoryview) -> int:  # pragma: no cover - abstract
        """Revoke ``view`` (the caller's name holds it): :data:`FREE`, :data:`HELD` or
        :data:`SPENT`.  After anything but FREE, take no more views from this region."""
        raise NotImplementedError

    def revoke(self, views: list[memoryview]) -> bool:  # pragma: no cover - abstract
        """Revoke ``views`` and close: True if no view of the region is left.  May be
        asked again with the same views (False: ask later)."""
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover - abstract
        """Make no more views."""
        raise NotImplementedError

    def free(self) -> bool:  # pragma: no cover - abstract
        """Revoke what can be; True once no view of the region is left (after :meth:`close`)."""
        raise NotImplementedError


def _revoke_into(stuck: list[memoryview], views: list[memoryview]) -> None:
    """Release ``views``; add those something exports from to ``stuck`` (once each)."""
    have = {id(v) for v in stuck} if stuck else ()  # (a loan's publish: none stuck)
    for view in views:
        try:
            view.release()
        except BufferError:
            if id(view) not in have:
                stuck.append(view)


def _release_stuck(stuck: list[memoryview]) -> list[memoryview]:
    """The views of ``stuck`` that still cannot be released (something exports from them)."""
    left = []
    for view in stuck:
        try:
            view.release()
        except BufferError:
            left.append(view)
    return left


class _Tracked(_Region):
    """A region whose views share the memory: what :meth:`settle` could not
    release waits in ``_stuck``; :meth:`_none_left` says the rest."""

    __slots__ = ("_whole", "_stuck")

    def __init__(self, exporter: Any) -> None:
        self._whole = memoryview(exporter)
        self._stuck: list[memoryview] = []

    def revoke(self, views: list[memoryview]) -> bool:
        _revoke_into(self._stuck, views)
        self._whole.release()  # close() and free() inline: a loan's publish calls this
        if self._stuck:
            self._stuck = _release_stuck(self._stuck)
        return not self._stuck and self._none_left()

    def close(self) -> None:
        self._whole.release()

    def free(self) -> bool:
        self._stuck = _release_stuck(self._stuck)
        return not self._stuck and self._none_left()

    def _none_left(self) -> bool:  # pragma: no cover - abstract
        """Is no view left, the stuck ones aside?"""
        raise NotImplementedError


class _CountedBatch(_Tracked):
    """``refcount``, views revoked together (a loan's): slices of one memoryview;
    the exporter's reference count says when none is left.  No :meth:`settle`,
    so none of what it needs is made: a stream makes one of these a loan."""

    __slots__ = ("_exporter",)

    def __init__(self, exporter: Any) -> None:
        # (_Tracked.__init__ inline: a call costs, once a loan)
        self.views = self._whole = memoryview(exporter)
        self._stuck: list[memoryview] = []
        self._exporter = exporter

    def view(self, lo: int, hi: int) -> memoryview:
        return self._whole[lo:hi]

    def _none_left(self) -> bool:
        # Our slot and getrefcount's argument; the managed buffer drops its
        # reference when its last view is released.
        return getrefcount(self._exporter) <= 2


class _Counted(_CountedBatch):
    """``refcount``, views settled one at a time too (a window's): reference
    counts say what lives."""

    __slots__ = ("_mbuf", "_base")

    def __init__(self, exporter: Any) -> None:
        super().__init__(exporter)
        # The managed buffer every slice of _whole shares: each live slice,
        # released or not, holds one reference to it.
        self._mbuf = get_referents(self._whole)[0]
        # Its count with one view out: _whole, our slot, getrefcount's argument, the view.
        self._base = getrefcount(self._mbuf) + 1

    def settle(self, view: memoryview) -> int:
        try:
            view.release()
        except BufferError:  # something exports from it: a numpy array
            self._stuck.append(view)
            return HELD
        if getrefcount(self._mbuf) > self._base:  # a slice of it lives on
            return HELD
        # The caller's name, our parameter, getrefcount's argument.  More: the
        # user kept the (released, harmless) view, whose reference to the managed
        # buffer would hide the next view's slice: start a new region.
        return SPENT if getrefcount(view) > 3 else FREE


class _Exporter:
    """PEP 688 exporter: counts the views made of it that are not released yet.

    ``memoryview(e)`` calls :meth:`__buffer__`, which hands out ``next`` (a
    slice prepared by :class:`_ToldSlicer`); CPython calls
    :meth:`__release_buffer__` with that slice once the last view sharing
    its managed buffer is released or collected.
    """

    __slots__ = ("next", "current", "live")

    def __init__(self) -> None:
        self.next: memoryview | None = None
        self.current: memoryview | None = None  # the slice of the view last made
        self.live = 0

    def __buffer__(self, flags: int) -> memoryview:
        view = self.next
        if view is None:  # memoryview(v.obj) by a user: nothing to give
            raise BufferError("hgsmi views cannot be re-exported from their exporter")
        self.next = None
        self.live += 1
        self.current = view
        return view

    def __release_buffer__(self, view: memoryview) -> None:
        # (``view`` goes with CPython's wrapper that held it: no release needed)
        self.live -= 1
        if view is self.current:
            self.current = None


class _Slicer:
    """``views[lo:hi]`` for a region whose views are not plain slices."""

    __slots__ = ("_view",)

    def __init__(self, view: Callable[[int, int], memoryview]) -> None:
        self._view = view

    def __getitem__(self, at: slice) -> memoryview:
        return self._view(at.start, at.stop)


class _ToldSlicer:
    """``views[lo:hi]`` of a ``release`` region: the slice, through its exporter."""

    __slots__ = ("_whole", "_exp")

    def __init__(self, whole: memoryview, exp: _Exporter) -> None:
        self._whole, self._exp = whole, exp

    def __getitem__(self, at: slice) -> memoryview:
        exp = self._exp
        exp.next = self._whole[at]
        return memoryview(exp)


class _Told(_Tracked):
    """``release``: each view is ``memoryview`` of a PEP 688 exporter, told when it goes."""

    __slots__ = ("_exp",)

    def __init__(self, exporter: Any) -> None:
        super().__init__(exporter)
        self._exp = _Exporter()
        self.views = _ToldSlicer(self._whole, self._exp)

    def view(self, lo: int, hi: int) -> memoryview:
        return self.views[lo:hi]  # type: ignore[no-any-return]

    def settle(self, view: memoryview) -> int:
        try:
            view.release()
        except BufferError:
            self._stuck.append(view)
            return HELD
        # Released with nothing derived: __release_buffer__ has run already.
        return FREE if self._exp.current is None else HELD

    def _none_left(self) -> bool:
        return self._exp.live == 0


class _Copied(_Region):
    """``copy``: views of private copies, copied back when settled; nothing is held."""

    __slots__ = ("_whole", "_out", "size")

    def __init__(self, exporter: Any) -> None:
        self._whole = memoryview(exporter)
        self.size = self._whole.nbytes
        # id(view) -> (view, lo, the bytes it was made from, its bytearray)
        self._out: dict[int, tuple[memoryview, int, bytes, bytearray]] = {}
        self.views = _Slicer(self.view)

    def view(self, lo: int, hi: int) -> memoryview:
        orig = bytes(self._whole[lo:hi])
        buf = bytearray(orig)
        view = memoryview(buf)
        self._out[id(view)] = (view, lo, orig, buf)
        return view

    def _back(self, view: memoryview) -> None:
        """Copy ``view``'s bytes back, unless a reply was written there meanwhile."""
        got = self._out.pop(id(view), None)
        if got is None:
            return
        _, lo, orig, buf = got
        if self._whole[lo:lo + len(orig)] == orig:
            self._whole[lo:lo + len(buf)] = buf
        try:
            view.release()
        except BufferError:  # a numpy array of the copy: harmless, it is ours
            pass

    def settle(self, view: memoryview) -> int:
        self._back(view)
        return FREE

    def revoke(self, views: list[memoryview]) -> bool:
        for view in views:
            self._back(view)
        self.close()
        return True

    def close(self) -> None:
        for view, *_ in list(self._out.values()):
            self._back(view)
        self._whole.release()

    def free(self) -> bool:
        return True


class Single:
    """One revocable view (``view``) of ``size`` bytes at ``ptr``; ``release()`` revokes it.

    The classes :func:`single_class` makes derive from this one, whose
    ``buffer(ptr, size)`` is the exporter factory (``ffi.buffer``); typed
    here for :class:`hgsmi.lease.Lease`.
    """

    __slots__ = ("view",)

    view: memoryview

    #: ``buffer(ptr, size)``: a fresh exporter of those bytes that nobody else holds
    buffer: Callable[[Any, int], Any]

    def __init__(self, ptr: Any, size: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def release(self) -> bool:  # pragma: no cover - abstract
        """Revoke the view; False while something derived from it lives on (ask again)."""
        raise NotImplementedError


class _CountedSingle(Single):
    __slots__ = ("_exporter",)

    def __init__(self, ptr: Any, size: int) -> None:
        self._exporter = self.buffer(ptr, size)
        self.view = memoryview(self._exporter)

    def release(self) -> bool:
        try:
            self.view.release()
        except BufferError:
            return False
        # Our slot and getrefcount's argument.  More: a slice's managed
        # buffer (the view's own) still holds the exporter.
        return getrefcount(self._exporter) <= 2


class _ToldSingle(Single):
    __slots__ = ("_exp",)

    def __init__(self, ptr: Any, size: int) -> None:
        exp = self._exp = _Exporter()
        exp.next = memoryview(self.buffer(ptr, size))
        self.view = memoryview(exp)

    def release(self) -> bool:
        try:
            self.view.release()
        except BufferError:
            return False
        return self._exp.live == 0


class _CopiedSingle(Single):
    __slots__ = ("_region",)

    def __init__(self, ptr: Any, size: int) -> None:
        region = self._region = _Copied(self.buffer(ptr, size))
        self.view = region.view(0, region.size)

    def release(self) -> bool:
        return self._region.revoke([self.view])


_SINGLES: dict[str, type[Single]] = {
    "release": _ToldSingle, "refcount": _CountedSingle, "copy": _CopiedSingle}


def single_class(buffer: Callable[[Any, int], Any], mechanism: str | None = None) -> type[Single]:
    """The :class:`Single` of ``mechanism`` (default: :data:`MECHANISM`) over ``buffer(ptr, size)``.

    Raises ``ValueError`` as :func:`choose` does."""
    base = _SINGLES[choose(mechanism) if mechanism else MECHANISM]
    return type("Lease", (base,), {"__slots__": (), "buffer": staticmethod(buffer)})


_CLASSES: dict[str, Callable[[Any], _Region]] = {
    "release": _Told, "refcount": _Counted, "copy": _Copied}
#: the regions whose views are only revoked together (no settle)
_BATCH_CLASSES: dict[str, Callable[[Any], _Region]] = {
    "release": _Told, "refcount": _CountedBatch, "copy": _Copied}

#: the mechanism in use (module docstring)
MECHANISM = choose()
#: ``Region(exporter)``: the :class:`_Region` of :data:`MECHANISM`
Region: Callable[[Any], _Region] = _CLASSES[MECHANISM]
#: ``BatchRegion(exporter)``: a Region whose views are only revoked together
#: (:meth:`_Region.revoke`, never settled one by one): a loan's
BatchRegion: Callable[[Any], _Region] = _BATCH_CLASSES[MECHANISM]


def region_class(mechanism: str, batch: bool = False) -> Callable[[Any], _Region]:
    """The Region (``batch``: the BatchRegion) of ``mechanism`` (checked as
    :func:`choose` does), for tests and measurements."""
    return (_BATCH_CLASSES if batch else _CLASSES)[choose(mechanism)]


def _unknown(obj: object) -> float:
    """NaN: equal to nothing, not even itself, so no two counts ever agree."""
    return math.nan


#: ``REFS(obj)``: obj's reference count where it is exact (CPython with a GIL,
#: up to 3.13), else NaN.  Only for reusing an object while nobody else holds
#: it (the sync server's Message): ``REFS(o) == mine`` (``mine = REFS(o)``
#: taken when o was made) says nobody took a reference since; with NaN it is
#: never true, and nothing is reused.  Never for safety.
REFS: Callable[[Any], float] = (
    getrefcount if sys.implementation.name == "cpython" and sys.version_info < (3, 14)
    and not sysconfig.get_config_var("Py_GIL_DISABLED") else _unknown)
