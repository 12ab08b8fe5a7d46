"""Log lines a peer can trigger, rate-limited per (guest, kind): floods are counted, not logged.

A guest that sends garbage as fast as it can makes one failure per buffer;
logging each one filled the host's log at 12,000 lines a second.  A
:class:`RateLog` lets the first ``burst`` lines of a key through, then one
a ``period``: that line says how many like it were suppressed since.  Quiet
keys earn their burst back.  The counters that matter (``handler_errors``,
the C error counters) stay exact; only the log is thinned.

The record per key is a few numbers; :meth:`RateLog.forget` drops a
guest's records when it leaves (logging what was still suppressed).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from typing import Any

#: lines of one key let through before thinning
BURST = 5
#: seconds per line of one key once its burst is spent
PERIOD = 1.0


class _Key:
    __slots__ = ("tokens", "stamp", "suppressed", "since", "level", "what")

    def __init__(self, burst: int, now: float) -> None:
        self.tokens = float(burst)
        self.stamp = now
        self.suppressed = 0
        self.since = now  # the first suppressed line's time
        self.level = logging.INFO
        self.what = ""


class RateLog:
    """A logger's lines per ``(guest, kind)`` key: ``burst`` at once, then one per ``period``."""

    def __init__(self, logger: logging.Logger, burst: int = BURST, period: float = PERIOD,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.burst = burst
        self.period = period
        self._clock = clock
        self._keys: dict[tuple[Any, Hashable], _Key] = {}
        #: the keys with lines suppressed: :meth:`flush` has work only while
        #: this is not empty (a server's round tests it without a call)
        self.holding: set[tuple[Any, Hashable]] = set()

    def __len__(self) -> int:
        """How many keys have a record."""
        return len(self._keys)

    def log(self, guest: Any, kind: Hashable, level: int, msg: str, *args: Any,
            exc_info: BaseException | None = None) -> bool:
        """Log ``msg % args`` at ``level`` unless ``(guest, kind)`` is over its rate.

        Returns whether the line was written.  A line let through after some
        were suppressed ends with how many.  Never raises for a flood.
        """
        if not self.logger.isEnabledFor(level):
            return False
        now = self._clock()
        k = self._keys.get((guest, kind))
        if k is None:
            k = self._keys[(guest, kind)] = _Key(self.burst, now)
        k.tokens = min(float(self.burst), k.tokens + (now - k.stamp) / self.period)
        k.stamp = now
        if k.tokens < 1.0:
            if not k.suppressed:
                k.since = now
            k.suppressed += 1
            k.level, k.what = level, str(kind)
            self.holding.add((guest, kind))
            return False
        k.tokens -= 1.0
        if k.suppressed:
            msg += " (and %d more like it suppressed in the last %.1f s)"
            args += (k.suppressed, now - k.since)
            k.suppressed = 0
            self.holding.discard((guest, kind))
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def flush(self) -> None:
        """Log the count of every key that has held lines back for a ``period``
        with none let through since (a flood that stopped).  Cheap when none is."""
        if not self.holding:
            return
        now = self._clock()
        for key in [key for key in self.holding if now - self._keys[key].since >= self.period]:
            self._summary(key, self._keys[key], now)

    def keep_only(self, live: set[Any]) -> None:
        """Forget every guest not in ``live`` (the host's own lines, guest None, stay)."""
        for guest in {key[0] for key in self._keys} - live - {None}:
            self.forget(guest)

    def forget(self, guest: Any) -> None:
        """Drop ``guest``'s records, first logging one line per key still holding back."""
        now = self._clock()
        for key in [key for key in self._keys if key[0] == guest]:
            self._summary(key, self._keys.pop(key), now)

    def _summary(self, key: tuple[Any, Hashable], k: _Key, now: float) -> None:
        self.holding.discard(key)
        if k.suppressed:
            who = "host" if key[0] is None else f"guest {key[0]}"
            self.logger.log(k.level, "%s: %d more %s lines suppressed in the last %.1f s",
                            who, k.suppressed, k.what, now - k.since)
            k.suppressed = 0
