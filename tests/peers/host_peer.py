"""A host in its own process, for the transport tests.

usage: host_peer.py NAME DOORBELL SIZE

Channel 0x20 (hash): hashes every request into a running BLAKE2b.
Channel 0x21 (digest): replies with the digest so far and the count, then resets.
Channel 0x22 (push): payload "<seed> <count>": replies at once, then posts
``count`` messages host -> guest on channel 0x23 from messages.stream(seed).
Channel 0x24 (push many): as 0x22, with post_many in batches of 500 (info:
the batch's number).
Channel 0x25 (heap): replies with the host-heap bytes in use for this guest.
Prints "ready" once it accepts guests; exits 0 on SIGTERM after a clean stop.
"""
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from messages import stream  # noqa: E402

import hgsmi  # noqa: E402


def main() -> int:
    name, doorbell, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    state = {"h": hashlib.blake2b(digest_size=16), "n": 0, "push": None}

    def on_hash(msg):
        state["h"].update(msg.data)
        state["n"] += 1

    def on_digest(msg):
        out = state["h"].digest() + state["n"].to_bytes(8, "little")
        state["h"], state["n"] = hashlib.blake2b(digest_size=16), 0
        return out

    def on_push(msg):
        seed, count = bytes(msg.data).split()
        state["push"] = (msg.guest, int(seed), int(count), msg.channel == 0x24)

    def on_heap(msg):
        return msg.guest.stats()["host_heap"]["used"].to_bytes(8, "little")

    with hgsmi.Host(name, size=size, doorbell=doorbell) as host:
        host.register(0x20, on_hash)
        host.register(0x21, on_digest)
        host.register(0x22, on_push)
        host.register(0x24, on_push)
        host.register(0x25, on_heap)
        print("ready", flush=True)
        import signal
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        while not stop:
            host.poll(0.1)
            if state["push"]:
                conn, seed, count, many = state["push"]
                state["push"] = None
                if many:
                    datas = list(stream(seed, count))
                    for i in range(0, count, 500):
                        assert conn.post_many(0x23, i // 500, datas[i:i + 500],
                                              timeout=30) == len(datas[i:i + 500])
                    continue
                for i, data in enumerate(stream(seed, count)):
                    conn.post(0x23, i & 0xFFFF, data, timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
