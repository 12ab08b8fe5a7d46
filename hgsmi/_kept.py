"""Segments left mapped after their peer closed, while views of them live.

Closing a connection (host) or detaching (guest) unmaps the segment, and a
view into it would then fault instead of raising.  Closing revokes every
view it can; one that something still exports from (a numpy array, a slice)
cannot be revoked, so the closing side asks the C core to leave the mapping
(``hgsmi_*_keep_mapping``) and leaves it here with checks that say when
those views are gone.  Each later close and each host or guest poll unmaps
what has become free (:func:`sweep`); the memory is what the peer last
wrote, and nothing faults.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ._native import lib

Gone = Callable[[], bool]

#: (base, size, checks not yet true); changed in place only, so a poll can test
#: it for emptiness without a call (``if KEPT: sweep()``)
KEPT: list[tuple[Any, int, list[Gone]]] = []
_lock = threading.Lock()


def keep(base: Any, size: int, checks: list[Gone]) -> None:
    """Leave ``size`` bytes at ``base`` mapped until every check is true."""
    with _lock:
        KEPT.append((base, size, list(checks)))


def sweep() -> int:
    """Unmap the kept segments whose views are all gone; return how many stay."""
    with _lock:
        still = []
        for base, size, checks in KEPT:
            checks[:] = [gone for gone in checks if not gone()]
            if checks:
                still.append((base, size, checks))
            else:
                lib.hgsmi_unmap(base, size)
        KEPT[:] = still
        return len(still)


def pending() -> int:
    """How many segments are kept mapped for live views."""
    return len(KEPT)
