"""Busy-loop processes, one per CPU: the load under which the adaptive spin must back off.

Issue #13's target: with both CPUs busy, a spinning call's RTT stays within
1.2x of the no-spin RTT.  ``hgsmi bench`` measures it (the
``call-rtt-loaded`` rows) and so does ``bench/spin_check.py``.  The hogs are
children that the caller waits for, so :mod:`hgsmi.bench.busy` counts their
CPU as the run's own, not as other processes'.
"""
from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

#: how long the scheduler gets to spread the hogs over the CPUs before a run
SETTLE_S = 0.5


@contextlib.contextmanager
def hogs(n: int) -> Iterator[list[int]]:
    """``n`` busy-loop processes for the ``with`` block (their pids), killed and
    reaped on the way out, whatever raised.  Raises OSError if one cannot start."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen([sys.executable, "-c", "while 1: pass"]))
        time.sleep(SETTLE_S)
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
        for p in procs:
            p.wait()
