"""Floods are counted, not logged line by line (issue #11, class 5).

Hostile guests make the host's handlers fail as fast as they can (and a
scribbler corrupts its segment besides).  The host used to log one line
per failed buffer: thousands a second.  Now each (guest, kind) logs a
few lines, then one a second saying how many like it were suppressed;
the counters stay exact.
"""
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import hgsmi

PEERS = Path(__file__).parent / "peers"
ROOT = Path(__file__).parent.parent
SECONDS = 4
CH_FAIL, CH_RAISE = 0x20, 0x21  # an HgsmiError (one line), any other exception (a traceback)


class Lines(logging.Handler):
    """Every record the hgsmi loggers emit, formatted (tracebacks included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def fail(msg: hgsmi.Message) -> None:
    raise hgsmi.ProtocolError(71, "junk request")


def boom(msg: hgsmi.Message) -> None:
    raise ValueError("junk request")


@pytest.mark.timeout(90)
def test_a_flood_of_failures_is_counted_exactly_and_logged_sparingly(name, runtime_dir,
                                                                     no_leaks):
    logger = logging.getLogger("hgsmi")
    lines, level = Lines(), logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    try:
        with hgsmi.Host(name, size=4 << 20) as host:
            host.register(CH_FAIL, fail)
            host.register(CH_RAISE, boom)
            stop = threading.Event()

            def serve() -> None:
                while not stop.is_set():
                    host.poll(0.05)

            t = threading.Thread(target=serve)
            t.start()
            floods = [subprocess.Popen([sys.executable, str(PEERS / "error_flood.py"), name,
                                        str(SECONDS), hex(CH_FAIL), hex(CH_RAISE)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                       env=env)
                      for _ in range(2)]
            scribbler = None
            try:
                # All attached before any floods: the old host, busy logging,
                # let no one else attach in time.
                for p in floods:
                    assert p.stdout.readline().strip() == "attached"
                scribbler = subprocess.Popen([sys.executable, str(PEERS / "hostile_guest.py"),
                                              name, str(SECONDS), "7"], env=env)
                for p in floods:
                    p.stdin.write("go\n")
                    p.stdin.flush()
                outs = [p.communicate(timeout=60)[0].split() for p in floods]
                for p in floods:
                    assert p.returncode == 0
                scribbler.wait(60)  # it exits 0 when cut off; its garbage is C's to count
            finally:
                for p in floods + ([scribbler] if scribbler else []):
                    p.kill()
                    p.wait()
                while host.guests and t.is_alive():  # let the host reap them
                    stop.wait(0.05)
                stop.set()
                t.join(10)
            assert not t.is_alive()
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
    sent = [int(o[1]) for o in outs]
    failed = [int(o[3]) for o in outs]
    # The floods got through and every failure reached its sender ...
    assert failed == sent and min(sent) > 1000, outs
    # ... and the host counted each exactly (the scribbler's fail too).
    assert host.handler_errors >= sum(failed)
    records = [ln for ln in lines.lines if not ln.startswith("INFO")]
    text = "\n".join(lines.lines)
    print(f"{host.handler_errors} failures in {SECONDS} s: {len(lines.lines)} log lines, "
          f"{len(text)} bytes")
    # Per guest and kind: a burst of 5, then about one a second, then one
    # summary when the guest goes; 3 guests x 2 kinds, generous for a slow run.
    assert len(records) <= 3 * 2 * (5 + 2 * SECONDS + 1), len(records)
    assert len(text) < 200_000
    assert any("suppressed" in ln for ln in records), "no line says what was left out"


def test_ratelog_lets_a_burst_through_then_one_line_a_period():
    """The limiter alone, on a fake clock: burst, thinning, summaries, forgetting."""
    from hgsmi._ratelog import RateLog

    now = [0.0]
    lines = Lines()
    logger = logging.getLogger("hgsmi.test_ratelog")
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        rl = RateLog(logger, burst=3, period=1.0, clock=lambda: now[0])
        written = [rl.log(7, "kind", logging.WARNING, "bad %d", i) for i in range(100)]
        assert written == [True] * 3 + [False] * 97
        assert rl.log(8, "kind", logging.WARNING, "other guest")  # keys are per guest
        now[0] = 1.0  # a period on: one line, carrying the count
        assert rl.log(7, "kind", logging.WARNING, "bad %d", 100)
        assert "97 more like it suppressed" in lines.lines[-1]
        assert not rl.log(7, "kind", logging.WARNING, "bad %d", 101)
        now[0] = 2.5
        rl.flush()  # the flood stopped: its count is logged without a new line
        assert "1 more kind lines suppressed" in lines.lines[-1]
        n = len(lines.lines)
        rl.flush()
        assert len(lines.lines) == n
        rl.forget(7)
        rl.forget(8)
        assert len(rl) == 0
        now[0] = 100.0  # a quiet key earns its burst back (a fresh record here)
        assert all(rl.log(7, "kind", logging.WARNING, "again") for _ in range(3))
    finally:
        logger.removeHandler(lines)
