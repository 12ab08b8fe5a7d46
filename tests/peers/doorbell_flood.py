"""A guest that attaches by hand and rings its doorbell in a tight loop.

    python doorbell_flood.py SOCKET_PATH SECONDS

Prints ``ready`` once attached, then writes the doorbell eventfd as fast as
it can for SECONDS (or until the host hangs up) and prints the count.
"""
from __future__ import annotations

import os
import socket
import struct
import sys
import time

HELLO = struct.Struct("<IHHII4I")
CTL_MAGIC, F_ALL, WELCOME_SIZE = 0x43534748, 0x07, 144


def main() -> int:
    path, seconds = sys.argv[1], float(sys.argv[2])
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    s.sendall(HELLO.pack(CTL_MAGIC, 1, 1, 1, F_ALL, 0, 0, 0, 0))
    w, fds, _flags, _addr = socket.recv_fds(s, WELCOME_SIZE, 4)
    status, = struct.unpack_from("<i", w, 8)
    if status != 0 or len(fds) != 3:
        print(f"refused {status} {len(fds)}", flush=True)
        return 1
    doorbell = fds[1]  # segment, doorbell, IRQ
    print("ready", flush=True)
    one = (1).to_bytes(8, "little")
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(256):
            os.write(doorbell, one)
        n += 256
    print(n, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
