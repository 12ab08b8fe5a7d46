"""What the host keeps of guests that left: totals that outlive them.

A guest's counters live in its C conn, which is freed with its segment
when the guest leaves or is cut off.  :class:`Departed` folds each one's
last figures into host-level totals first, so that ``hgsmi stat`` still
shows the errors of a guest that was cut off for them.
"""
from __future__ import annotations

from typing import Any

#: per-guest counters (struct hgsmi_conn_stats) summed as they are
COUNTERS = ("msgs_in", "bytes_in", "msgs_out", "bytes_out", "doorbells",
            "doorbells_throttled", "irqs", "irqs_suppressed")


class Departed:
    """Totals over every guest that has left: traffic, errors by kind, cut-offs."""

    def __init__(self) -> None:
        self.guests = 0   #: guests that left, on their own or cut off
        self.cut_off = 0  #: of those, the ones the host cut off
        self.counts = dict.fromkeys(COUNTERS, 0)
        self.errors: dict[str, int] = {}  #: by kind: offset, checksum, protocol, ...

    def add(self, stats: dict[str, Any], cut_off: bool) -> None:
        """Fold one departed guest's last ``GuestConn.stats()`` in."""
        self.guests += 1
        self.cut_off += bool(cut_off)
        for k in COUNTERS:
            self.counts[k] += int(stats.get(k, 0))
        for k, v in stats.items():
            if k.startswith("errors_"):
                kind = k[len("errors_"):]
                self.errors[kind] = self.errors.get(kind, 0) + int(v)

    def as_dict(self) -> dict[str, Any]:
        """The totals as plain JSON-able data."""
        return {"guests": self.guests, "cut_off": self.cut_off, **self.counts,
                "errors": dict(self.errors)}
