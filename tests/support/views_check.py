"""Self-check of hgsmi/_views.py under the interpreter that runs it (tests/test_views.py).

Run as ``python views_check.py [mechanism]``: loads ``hgsmi/_views.py`` by
path (no package import, so no cffi extension is needed), checks the
mechanism it selects (or ``mechanism``, forced through ``HGSMI_VIEWS``)
against shared memory (one memfd mapped twice: the region's exporter and
an observer), and prints ``ok <mechanism>``.  ``python views_check.py
measure`` prints what each mechanism costs here (the figures in
``hgsmi/_views.py``'s docstring).  Safety is checked as a
property that holds for every mechanism: while anything made from a view
lives, either the region says it is not free, or that thing does not alias
the shared memory; and once everything made from it is gone, it is free.
"""
from __future__ import annotations

import ctypes
import importlib.util
import mmap
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

SIZE = 4096


def load_views() -> Any:
    """hgsmi/_views.py as a module of its own."""
    path = Path(__file__).resolve().parents[2] / "hgsmi" / "_views.py"
    spec = importlib.util.spec_from_file_location("_views_checked", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Memory:
    """One memfd mapped twice: ``exporter()`` makes fresh region exporters, ``seen`` observes."""

    def __init__(self) -> None:
        self.fd = os.memfd_create("views_check")
        os.ftruncate(self.fd, SIZE)
        self.seen = mmap.mmap(self.fd, SIZE)

    def exporter(self) -> mmap.mmap:
        return mmap.mmap(self.fd, SIZE)


def aliases(thing: memoryview, mem: Memory, at: int) -> bool:
    """Does ``thing`` (byte 0 of it is byte ``at`` of the memory) show the shared memory?"""
    old = mem.seen[at]
    mem.seen[at] = old ^ 0x5A
    try:
        return bool(thing[0] == old ^ 0x5A)
    finally:
        mem.seen[at] = old


def check(views: Any, region: Callable[[Any], Any]) -> None:
    mem = Memory()
    FREE, HELD = views.FREE, views.HELD

    # A plain view: written in place, released, free.
    r = region(mem.exporter())
    v = r.view(16, 48)
    assert len(v) == 32 and not v.readonly
    v[0] = 7
    assert r.settle(v) == FREE
    assert mem.seen[16] == 7, "a write through a view reaches the memory"
    r.close()
    assert r.free()

    # A slice kept: not free (or not aliasing) until it is deleted.
    r = region(mem.exporter())
    v = r.view(64, 96)
    s = v[4:12]
    got = r.settle(v)
    del v
    r.close()
    assert got == HELD or not aliases(s, mem, 68), "a live slice aliases freed memory"
    assert got != HELD or not r.free()
    del s
    assert r.free(), "free once the slice is gone"

    # A slice of a slice, kept in a list (a handler's own state).
    r = region(mem.exporter())
    v = r.view(128, 160)
    keep = [v[1:][2:5]]
    got = r.settle(v)
    del v
    r.close()
    assert got == HELD or not aliases(keep[0], mem, 131)
    keep.clear()
    assert r.free()

    # An export kept (as numpy does): ctypes' from_buffer holds one.
    r = region(mem.exporter())
    v = r.view(256, 288)
    arr = (ctypes.c_ubyte * 8).from_buffer(v, 8)
    got = r.settle(v)
    r.close()
    assert got == HELD or not aliases(memoryview(arr).cast("B"), mem, 264)
    assert got != HELD or not r.free()
    del arr
    assert r.free(), "free once the export is gone"
    del v

    # The released view itself kept: harmless (it raises), never held.
    r = region(mem.exporter())
    v = r.view(320, 352)
    kept = v
    assert r.settle(v) != HELD
    try:
        kept[0]
    except ValueError:
        pass
    else:
        raise AssertionError("a settled view still reads")
    del v, kept
    r.close()
    assert r.free()

    # One region, views one at a time (a window): only the one with a live
    # slice is held, and a new region starts after anything but FREE.
    r = region(mem.exporter())
    results, kept_slices = [], []
    for i in range(4):
        v = r.view(512 + 32 * i, 544 + 32 * i)
        if i == 2:
            kept_slices.append(v[1:3])
        got = r.settle(v)
        del v
        results.append(got)
        if got != FREE:
            r.close()
            held, r = r, region(mem.exporter())
    assert results[:2] == [FREE, FREE] and results[3] == FREE
    if results[2] == HELD:
        assert not held.free()
        kept_slices.clear()
        assert held.free()
    else:
        assert not aliases(kept_slices[0], mem, 512 + 64 + 1)
    r.close()
    assert r.free()

    # A reply written into the memory while the view was out is not undone.
    r = region(mem.exporter())
    v = r.view(1024, 1056)
    v[0] = 1
    mem.seen[1024:1027] = b"abc"
    assert r.settle(v) == FREE
    assert mem.seen[1024:1027] == b"abc"
    r.close()

    check_batch(views, region)


def check_batch(views: Any, region: Callable[[Any], Any]) -> None:
    """Many views revoked at once (a loan's): a Region, or a BatchRegion."""
    mem = Memory()
    # Refused while one has a slice; free once it is gone.
    r = region(mem.exporter())
    many = [r.view(2048 + 64 * i, 2048 + 64 * i + 16) for i in range(4)]
    for i, w in enumerate(many):
        w[0] = i + 1
    s = many[1][0:4]
    ok = r.revoke(many)
    assert [mem.seen[2048 + 64 * i] for i in range(4)] == [1, 2, 3, 4]
    assert not ok or not aliases(s, mem, 2048 + 64)
    del s
    many.clear()
    assert r.free()

    # An export kept (numpy's): refused, asked again once it is gone.
    r = region(mem.exporter())
    many = [r.view(2560 + 64 * i, 2560 + 64 * i + 16) for i in range(3)]
    arr = (ctypes.c_ubyte * 4).from_buffer(many[2], 4)
    ok = r.revoke(many)
    assert not ok or not aliases(memoryview(arr).cast("B"), mem, 2692)
    del arr
    assert r.revoke(many), "revoked once the export is gone (asked again)"

    # The released views themselves kept (a loop's name, the list): harmless.
    r = region(mem.exporter())
    many = [r.view(3072 + 64 * i, 3072 + 64 * i + 16) for i in range(3)]
    last = many[-1]
    assert r.revoke(many)
    try:
        last[0]
    except ValueError:
        pass
    else:
        raise AssertionError("a revoked view still reads")


def check_single(views: Any, mechanism: str) -> None:
    """The same rules for a Lease: one view of a whole exporter."""
    mem = Memory()
    lease = views.single_class(lambda ptr, size: mem.exporter(), mechanism)

    one = lease(None, SIZE)
    one.view[5] = 9
    assert one.release() and mem.seen[5] == 9

    one = lease(None, SIZE)
    s = one.view[100:108]
    got = one.release()
    assert not got or not aliases(s, mem, 100), "a live slice of a released lease aliases"
    del s
    assert one.release(), "free once the slice is gone (asked again)"

    one = lease(None, SIZE)
    arr = (ctypes.c_ubyte * 4).from_buffer(one.view, 200)
    got = one.release()
    assert not got or not aliases(memoryview(arr).cast("B"), mem, 200)
    del arr
    assert one.release()


def measure(views: Any, mechanism: str, n: int = 64) -> dict[str, float]:
    """Nanoseconds per message of ``mechanism``: a window's view made and settled
    (batches of ``n`` 64-byte views), a window made, closed and found free,
    and a lease made and released; over a bytearray (no cffi needed)."""
    import timeit

    region = views.region_class(mechanism)
    lease = views.single_class(lambda ptr, size: bytearray(size), mechanism)
    win = region(bytearray(1 << 20))
    slicer, settle = win.views, win.settle

    def batch() -> None:
        for lo in range(4096, 4096 + 256 * n, 256):
            view = slicer[lo:lo + 64]
            settle(view)

    def window() -> None:
        w = region(bytearray(64))
        w.close()
        w.free()

    def one() -> None:
        lease(None, 64).release()

    def best(fn: Callable[[], None], per: int, number: int) -> float:
        return min(timeit.repeat(fn, number=number, repeat=15)) / number / per * 1e9

    return {"message": best(batch, n, 200), "window": best(window, 1, 5000),
            "lease": best(one, 1, 5000)}


def main() -> int:
    if sys.argv[1:2] == ["measure"]:
        views = load_views()
        for mech in views.MECHANISMS:
            try:
                got = measure(views, mech)
            except ValueError:
                continue
            print(f"{sys.version_info[0]}.{sys.version_info[1]} {mech:9}",
                  "  ".join(f"{k} {v:6.0f} ns" for k, v in got.items()))
        return 0
    if len(sys.argv) > 1:
        os.environ["HGSMI_VIEWS"] = sys.argv[1]
    views = load_views()
    check(views, views.Region)
    check_batch(views, views.BatchRegion)
    check_single(views, views.MECHANISM)
    print("ok", views.MECHANISM)
    return 0


if __name__ == "__main__":
    sys.exit(main())
