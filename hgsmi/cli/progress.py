"""Progress lines on a terminal, and the rates and sizes the CLI prints."""
from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

from .stat import human

__all__ = ["Progress", "human", "rate"]  # human: the CLI's sizes, from stat


def rate(nbytes: float, seconds: float) -> str:
    """'123.4 MiB/s'."""
    return human(nbytes / seconds if seconds > 0 else 0.0, "B/s")


class Progress:
    """One self-overwriting line on ``stream`` if it is a terminal; silent otherwise."""

    def __init__(self, label: str, stream: TextIO = sys.stderr, period: float = 0.1) -> None:
        self.label = label
        self.stream = stream
        self.enabled = stream.isatty()
        self.period = period
        self.t0 = self._last = time.monotonic()
        self._width = 0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < self.period:
            return
        self._last = now
        if total:
            text = (f"{self.label}  {human(done)} / {human(total)}  {100 * done / total:5.1f}%"
                    f"  {rate(done, now - self.t0)}")
        else:
            text = f"{self.label}  {human(done)}  {rate(done, now - self.t0)}"
        self.show(text)

    def show(self, text: str) -> None:
        """Rewrite the line with ``text``, cut to the terminal's width: a line that
        wrapped could not be rewritten with a carriage return."""
        if self.enabled:
            text = text[:max(10, shutil.get_terminal_size().columns - 1)]
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self.stream.flush()
            self._width = len(text)

    def done(self) -> None:
        """Erase the line."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
