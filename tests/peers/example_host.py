"""A Python host that speaks the protocol of native/examples/host.c.

usage: example_host.py NAME DOORBELL

Serves echo, sink, invert and push requests (see example_proto.py) so that
the C guest example (guest NAME --verify N) can run against a Python host.
Prints "ready NAME SOCKETPATH" once guests can attach; on SIGTERM or SIGINT
prints one summary line like host.c's and exits 0 after a clean stop.
"""
import collections
import os
import signal
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from example_proto import CH_ECHO, CH_INVERT, CH_PUSH, CH_PUSH_REQUEST, CH_SINK, INVERT, pattern  # noqa: E402

import hgsmi  # noqa: E402


def main() -> int:
    name, doorbell = sys.argv[1], sys.argv[2]
    count = collections.Counter()
    pushes = collections.deque()  # (conn, count, size, seed)
    stop = []

    def on_echo(msg):
        count["echo"] += 1  # None: the request, left in place, is the reply

    def on_sink(msg):
        count["sink"] += 1
        count["sink_bytes"] += len(msg.data)
        return b""

    def on_invert(msg):
        count["invert"] += 1
        return bytes(msg.data).translate(INVERT)

    def on_push_request(msg):
        # Only recorded: the guest waits for this completion before it
        # serves pushes, so posting from here could fill the host heap.
        n, size, seed = struct.unpack_from("<III", msg.data)
        if n > 65536:
            raise ValueError("at most 65536 pushes: the index is the u16 info")
        pushes.append((msg.guest, n, size, seed))
        return b""

    with hgsmi.Host(name, doorbell=doorbell) as host:
        host.register(CH_ECHO, on_echo)
        host.register(CH_SINK, on_sink)
        host.register(CH_INVERT, on_invert)
        host.register(CH_PUSH_REQUEST, on_push_request)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.append(1))
        print("ready", name, host.socket_path, flush=True)
        while not stop:
            host.poll(0.05)
            while pushes and not stop:
                conn, n, size, seed = pushes.popleft()
                try:
                    for i in range(n):
                        # Waits (serving acks) while the host heap or FIFO is full.
                        conn.post(CH_PUSH, i, pattern(seed, i, size), timeout=10)
                        count["pushed"] += 1
                        count["pushed_bytes"] += size
                except hgsmi.PeerGone:
                    pass
        print(f"host {name}: echo {count['echo']}, invert {count['invert']}, "
              f"sink {count['sink']} msgs {count['sink_bytes']} bytes, "
              f"pushed {count['pushed']} msgs {count['pushed_bytes']} bytes, "
              f"handler errors {host.handler_errors}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
