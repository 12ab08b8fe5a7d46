"""A host in its own process whose private memory the footprint test watches.

usage: churn_host.py NAME SIZE

Channel 0x20 (echo): replies with the request reversed.
Channel 0x22 (post): payload "<count> <size>": posts ``count`` messages of
``size`` bytes to the guest on channel 0x23 (host heap, FIFO, acks).
Everything it posts is cut from one pool made before "ready", so that its
own Python allocations do not move with the guests.  Exits 0 on SIGTERM.
"""
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(__file__))
import hgsmi  # noqa: E402

POOL = bytes(range(256)) * 4096  # 1 MiB


def main() -> int:
    name, size = sys.argv[1], int(sys.argv[2])
    todo = []

    def on_post(msg):
        count, n = (int(x) for x in bytes(msg.data).split())
        todo.append((msg.guest, count, n))

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    with hgsmi.Host(name, size=size) as host:
        host.register(0x20, lambda m: bytes(m.data)[::-1])
        host.register(0x22, on_post)
        print("ready", flush=True)
        while not stop:
            host.poll(0.05)
            while todo:
                conn, count, n = todo.pop()
                for i in range(count):
                    if conn.alive:
                        conn.post(0x23, i, memoryview(POOL)[i:i + n], timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
