"""The allocator on its own: for tests, diagnostics and tools."""
from __future__ import annotations

from typing import Any

from ._native import ffi, lib
from ._util import struct_dict
from .errors import check


class Heap:
    """A TLSF heap over offsets [base, base + size); metadata is private memory.

    It never touches the memory it manages.  Raises :class:`HeapExhausted`
    when no block fits, ``ValueError``-like :class:`HgsmiError` on misuse.
    """

    def __init__(self, base: int, size: int) -> None:
        out = ffi.new("struct hgsmi_heap **")
        check(lib.hgsmi_heap_create(base, size, out), "heap")
        self._h = ffi.gc(out[0], lib.hgsmi_heap_destroy)
        self._off = ffi.new("uint32_t *")

    def alloc(self, size: int) -> int:
        """Allocate ``size`` bytes; return the block's offset (64-aligned)."""
        check(lib.hgsmi_heap_alloc(self._h, size, self._off), "alloc")
        return int(self._off[0])

    def free(self, offset: int) -> None:
        """Free a live block; :class:`HgsmiError` (EINVAL) for anything else."""
        check(lib.hgsmi_heap_free(self._h, offset), "free")

    def block_size(self, offset: int) -> int:
        """Usable bytes of the live block at ``offset``."""
        return check(lib.hgsmi_heap_block_size(self._h, offset), "block_size")

    @property
    def max_alloc(self) -> int:
        return int(lib.hgsmi_heap_max_alloc(self._h))

    def stats(self) -> dict[str, Any]:
        """capacity, used, peak, largest_free, free_bytes, counters and fragmentation."""
        st = ffi.new("struct hgsmi_heap_stats *")
        lib.hgsmi_heap_stats(self._h, st)
        return with_fragmentation(struct_dict(st[0]))

    def check(self) -> None:
        """Walk the allocator's structures; raise :class:`HgsmiError` if inconsistent."""
        check(lib.hgsmi_heap_check(self._h), "heap check")


def with_fragmentation(st: dict[str, Any]) -> dict[str, Any]:
    """Add ``fragmentation``: the share of free bytes not in the largest block."""
    free = st["free_bytes"]
    st["fragmentation"] = 0.0 if free == 0 else round(1 - st["largest_free"] / free, 4)
    return st
