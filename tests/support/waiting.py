"""Waiting for a condition with a deadline, so a test fails instead of hanging."""
from __future__ import annotations

import time
from collections.abc import Callable

import hgsmi


def wait_for(cond: Callable[[], object], seconds: float = 5.0, what: str = "the condition",
             step: Callable[[], object] = lambda: time.sleep(0.005)) -> float:
    """Run ``step`` (a 5 ms sleep) until ``cond()`` is true; fail the test if
    it is not within ``seconds``.  Returns the seconds it took."""
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < seconds, f"{what}: not within {seconds} s"
        step()
    return time.monotonic() - t0


def serve_until(host: hgsmi.Host, cond: Callable[[], object], seconds: float = 5.0,
                what: str = "the condition") -> float:
    """Poll ``host`` in this thread (10 ms slices) until ``cond()``; fail the
    test if it is not within ``seconds``.  Returns the seconds it took."""
    return wait_for(cond, seconds, what, lambda: host.poll(0.01))
