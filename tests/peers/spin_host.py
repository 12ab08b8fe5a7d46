"""A host in its own process, for the adaptive-spin tests.

usage: spin_host.py NAME SPIN_US

Channel 0x20 echoes the request.  Prints "ready" once it accepts guests;
exits 0 on SIGTERM.  Its own process, so the test can SIGSTOP it and read
its CPU time from /proc.
"""
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(__file__))
import hgsmi  # noqa: E402


def main() -> int:
    name, spin_us = sys.argv[1], int(sys.argv[2])
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with hgsmi.Host(name, size=1 << 20, spin_us=spin_us) as host:
        host.register(0x20, lambda m: bytes(m.data))
        print("ready", flush=True)
        while not stop:
            host.poll(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
