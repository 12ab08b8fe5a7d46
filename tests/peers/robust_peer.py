"""Peers for the robustness tests (tests/test_robustness.py).

usage: robust_peer.py MODE NAME [ARGS]

host NAME DOORBELL   a host: 0x20 echoes, 0x24 prints "sleeping" and sleeps a
                     minute (a call the test then strands with kill -9).
                     Prints "ready" once it accepts guests.
send NAME            a guest that streams send_many batches to 0x20 forever.
recv NAME            a guest that serves host posts on 0x23 forever.
cycles NAME N        a guest that attaches, makes one call on 0x20 and
                     detaches N times, then prints one JSON line: its fd
                     count before and after, its memory (RSS, or the
                     live heap under ASan) after 10 and after N cycles, and the seconds taken.

send and recv print "attached <guest id>" once they are attached; they are
meant to be killed with SIGKILL in the middle of their transfers.
"""
import json
import os
import sys
import time

# tests/, for the helpers the tests share (the test process measures itself alike)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import hgsmi

from support.footprint import fd_count, mem_kib  # noqa: E402

CH_ECHO, CH_SLEEP, CH_PUSHED = 0x20, 0x24, 0x23


def host(name: str, doorbell: str, segment: str = "memfd") -> int:
    def sleep(msg):
        print("sleeping", flush=True)
        time.sleep(60)

    with hgsmi.Host(name, size=1 << 20, doorbell=doorbell, segment=segment) as h:
        h.register(CH_ECHO, lambda m: bytes(m.data))
        h.register(CH_SLEEP, sleep)
        print("ready", flush=True)
        h.serve()
    return 0


def send(name: str) -> int:
    g = hgsmi.Guest(name)
    print("attached", g.stats()["guest_id"], flush=True)
    chunk = bytes(range(256)) * 16  # 4 KiB
    i = 0
    while True:
        g.send_many(CH_ECHO, i & 0xFFFF, [chunk] * 32, timeout=10)
        i += 1


def recv(name: str) -> int:
    g = hgsmi.Guest(name)
    g.register(CH_PUSHED, lambda m: None)
    print("attached", g.stats()["guest_id"], flush=True)
    while True:
        g.poll(1.0)


def cycles(name: str, n: int) -> int:
    fd0 = fd_count()
    t0 = time.monotonic()
    mem_warm = 0
    for i in range(n):
        with hgsmi.Guest(name) as g:
            if g.call(CH_ECHO, i & 0xFFFF, b"cycle %d" % i, timeout=5) != b"cycle %d" % i:
                print(json.dumps({"error": f"bad reply in cycle {i}"}), flush=True)
                return 1
        if i == 9:
            mem_warm = mem_kib()
    print(json.dumps({"fds_before": fd0, "fds_after": fd_count(), "mem_warm_kib": mem_warm,
                      "mem_after_kib": mem_kib(), "seconds": time.monotonic() - t0}),
          flush=True)
    return 0


def main() -> int:
    mode, name = sys.argv[1], sys.argv[2]
    if mode == "host":
        return host(name, *sys.argv[3:5])
    if mode == "send":
        return send(name)
    if mode == "recv":
        return recv(name)
    if mode == "cycles":
        return cycles(name, int(sys.argv[3]))
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main())
