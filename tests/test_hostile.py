"""Hostile guests scribble over their segments while a good guest runs verified traffic.

The host must not crash, must not let the garbage reach the good guest, and
must account for it in its counters (docs/design.md §1).
"""
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import hgsmi

PEER = Path(__file__).parent / "peers" / "hostile_guest.py"


@pytest.mark.parametrize("doorbell", ["eventfd", "semaphore"])
def test_hostile_guests_do_not_disturb_a_good_one(name, runtime_dir, no_leaks, doorbell):
    with hgsmi.Host(name, size=4 << 20, doorbell=doorbell) as host:
        host.register(0x20, lambda m: None)
        host.register(0x21, lambda m: bytes(m.data)[::-1])
        stop = threading.Event()

        def serve():
            while not stop.is_set():
                host.poll(0.05)

        t = threading.Thread(target=serve)
        t.start()
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent))
        bad = [subprocess.Popen([sys.executable, str(PEER), name, "6", str(seed)], env=env)
               for seed in (1, 2)]
        try:
            good_calls = 0
            with hgsmi.Guest(name) as g:
                deadline = time.monotonic() + 6
                while time.monotonic() < deadline:
                    data = os.urandom(1 + good_calls % 3000)
                    assert g.call(0x21, good_calls & 0xFFFF, data, timeout=5) == data[::-1]
                    good_calls += 1
                assert g.stats()["errors"] == 0 and g.stats()["remote_errors"] == 0
                mine = [c.stats() for c in host.guests if c.stats()["msgs_in"] >= good_calls]
                assert mine and all(
                    mine[0][k] == 0 for k in ("errors_offset", "errors_checksum",
                                              "errors_protocol", "errors_channel"))
            for p in bad:
                assert p.wait(30) == 0, "the hostile guest itself crashed"
            time.sleep(0.3)
        finally:
            for p in bad:
                p.kill()
                p.wait()
            stop.set()
            t.join(10)
        assert t.is_alive() is False
        assert good_calls > 100
        seen = list(host.departed) + [c.stats() for c in host.guests]
        garbage = sum(s["errors_offset"] + s["errors_checksum"] + s["errors_protocol"]
                      for s in seen)
        assert garbage > 0, "the hostile guests' garbage was not counted"
