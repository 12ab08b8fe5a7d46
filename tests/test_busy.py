"""`hgsmi bench`'s busy-machine check sees another process eating a CPU."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from hgsmi.bench import busy


@pytest.mark.timeout(30)
def test_a_cpu_hog_makes_the_machine_busy():
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start spinning
        w = busy.Watch()
        w.start()
        reasons = busy.quiet_check(0.5)
        during = w.stop()
    finally:
        hog.kill()
        hog.wait()
    # One busy CPU of os.cpu_count() is far over the threshold (15% of all CPUs
    # up to 6 CPUs; the hog is not a waited-for child, so it counts as "others").
    if (busy.os.cpu_count() or 1) <= 6:
        assert any("other processes" in r for r in reasons), reasons
        assert during["others"] > busy.OTHERS_SHARE and during["reasons"], during


def test_shares_are_computed_from_deltas():
    a = busy.Snapshot(busy=10.0, total=100.0, steal=1.0, own=2.0, at=0.0)
    b = busy.Snapshot(busy=30.0, total=200.0, steal=6.0, own=7.0, at=1.0)
    shares = busy.compare(a, b)
    assert shares == pytest.approx({"others": 0.15, "steal": 0.05})
    assert busy._judge({"others": 0.5, "steal": 0.0}) == [
        "other processes used 50% of the CPUs"]
    assert busy._judge({"others": 0.0, "steal": 0.0}) == []
