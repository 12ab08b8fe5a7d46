"""Per-guest quotas on what the built-in services hold for a guest.

A guest's requests make the host hold things for it: an open file per
upload or fetch, a stream per fetch or load source, and private buffers
(a fetch's read buffer, a load source's payload).  :class:`Quotas` counts
them per guest against :class:`ServiceLimits`; a request that would go past
any limit is refused at once with :class:`Busy` and takes nothing.  What a
request took is a :class:`Claim`, given back once (idempotent) when the
upload, fetch or stream ends, or when its guest goes.
"""
from __future__ import annotations

import dataclasses
import errno
from collections.abc import Callable

from ..errors import Busy

#: the resources counted, in the order of :class:`ServiceLimits`' fields
KINDS = ("fetches", "files", "streams", "buffered")


@dataclasses.dataclass(frozen=True)
class ServiceLimits:
    """What the built-in services hold at most for one guest (0: no limit)."""

    max_fetches: int = 4  #: blob fetches being streamed at once
    max_open_files: int = 16  #: files open for it: uploads and fetches in progress
    max_streams: int = 8  #: host-to-guest streams at once: fetches and load sources
    max_buffered: int = 64 << 20  #: bytes of private host memory held for it

    def limit(self, kind: str) -> int:
        return {"fetches": self.max_fetches, "files": self.max_open_files,
                "streams": self.max_streams, "buffered": self.max_buffered}[kind]


class Claim:
    """What one request holds for a guest; :meth:`release` gives it back (once)."""

    __slots__ = ("_quotas", "guest", "amounts", "_closers")

    def __init__(self, quotas: Quotas, guest: int, amounts: dict[str, int]) -> None:
        self._quotas: Quotas | None = quotas
        self.guest = guest
        self.amounts = amounts
        self._closers: list[Callable[[], object]] = []

    def on_release(self, close: Callable[[], object]) -> None:
        """Call ``close`` (an idempotent close of what is counted: a file) at release."""
        self._closers.append(close)

    def release(self) -> None:
        """Close what was registered and give back what this claim holds; once."""
        q, self._quotas = self._quotas, None
        if q is None:
            return
        closers, self._closers = self._closers, []
        try:
            for close in closers:
                close()
        finally:
            q._give_back(self.guest, self.amounts)


class Quotas:
    """Per-guest counts of what the services hold, checked against ``limits``."""

    def __init__(self, limits: ServiceLimits | None = None) -> None:
        self.limits = limits or ServiceLimits()
        self._held: dict[int, dict[str, int]] = {}
        self.refused = 0  #: requests refused with Busy, all guests

    def claim(self, guest: int, what: str, *, fetches: int = 0, files: int = 0,
              streams: int = 0, buffered: int = 0) -> Claim:
        """Take these amounts for ``guest``, or take nothing and raise :class:`Busy`.

        ``what`` names the request in the error message.
        """
        amounts = {"fetches": fetches, "files": files, "streams": streams,
                   "buffered": buffered}
        held = self._held.get(guest)
        now = held or dict.fromkeys(KINDS, 0)
        for kind, n in amounts.items():
            limit = self.limits.limit(kind)
            if n and limit and now[kind] + n > limit:
                self.refused += 1
                raise Busy(errno.EBUSY, f"{what}: guest {guest} holds {now[kind]} of its "
                           f"{limit} {_UNITS[kind]} (limits.{_KEYS[kind]})")
        if held is None:
            held = self._held[guest] = now
        for kind, n in amounts.items():
            held[kind] += n
        return Claim(self, guest, amounts)

    def _give_back(self, guest: int, amounts: dict[str, int]) -> None:
        held = self._held.get(guest)
        if held is None:
            return
        for kind, n in amounts.items():
            held[kind] -= n
        if not any(held.values()):
            del self._held[guest]

    def held(self, guest: int) -> dict[str, int]:
        """What is held for ``guest`` now, by kind."""
        return dict(self._held.get(guest) or dict.fromkeys(KINDS, 0))


_KEYS = {"fetches": "max_fetches", "files": "max_open_files", "streams": "max_streams",
         "buffered": "max_buffered"}
_UNITS = {"fetches": "concurrent fetches", "files": "open files",
          "streams": "concurrent streams", "buffered": "bytes of host buffers"}
