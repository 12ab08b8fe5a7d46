"""A hostile guest that makes the host's handlers fail as fast as it can.

usage: error_flood.py NAME SECONDS CHANNEL...

Prints "attached", waits for a line on stdin, then sends junk
fire-and-forget (batches of 64) round-robin to the channels, whose
handlers fail on it, until its time is up; then waits for every buffer to
come back and prints "sent N failed M" (M: buffers the host failed, as the
guest counted them).  Exits 0.
"""
import os
import sys
import time

import hgsmi


def main() -> int:
    name, seconds, channels = sys.argv[1], float(sys.argv[2]), [int(c, 0) for c in sys.argv[3:]]
    sent = 0
    with hgsmi.Guest(name) as g:
        print("attached", flush=True)
        sys.stdin.readline()
        junk = [os.urandom(1 + i % 200) for i in range(64)]
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ch = channels[sent // 64 % len(channels)]
            try:
                sent += g.send_many(ch, 0, junk, timeout=1)
            except (hgsmi.HeapExhausted, hgsmi.RingFull, hgsmi.Timeout):
                pass
        deadline = time.monotonic() + 30
        while g.stats()["inflight"] and time.monotonic() < deadline:
            g.poll(0.01)
        print(f"sent {sent} failed {g.stats()['remote_errors']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
