"""A guest that asks a host daemon's built-in services for more than its share and never acks.

    python service_flood.py NAME fetch COUNT BLOB   # COUNT fetches of BLOB, none acked
    python service_flood.py NAME source COUNT SIZE  # COUNT load-source streams of SIZE bytes

It makes its requests with raw calls (which never serve the host FIFO, so
nothing the host posts is ever acked), prints one line ``ready ACCEPTED
BUSY OTHER`` (how many the host took, refused with EBUSY, refused otherwise),
then stops itself with SIGSTOP (``source``), or waits for stdin to close
(``fetch``): either way the host is left holding whatever it agreed to.
"""
from __future__ import annotations

import errno
import os
import signal
import struct
import sys

import hgsmi
from hgsmi.services import blob_protocol as blob
from hgsmi.services.builtin import CH_BLOB, CH_SINK, SINK_SOURCE, SOURCE_REQ

STATUS = struct.Struct("<i")


def main() -> int:
    name, mode, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    arg = sys.argv[4]
    taken = busy = other = 0
    with hgsmi.Guest(name) as g:
        for _ in range(count):
            if mode == "fetch":
                rep = g.call(CH_BLOB, blob.FETCH, arg.encode(), blob.REPLY_MAX, timeout=10)
            else:
                rep = g.call(CH_SINK, SINK_SOURCE, SOURCE_REQ.pack(600.0, int(arg)), 512,
                             timeout=10)
            (status,) = STATUS.unpack_from(rep)
            if status == 0:
                taken += 1
            elif status == errno.EBUSY:
                busy += 1
            else:
                other += 1
        print("ready", taken, busy, other, flush=True)
        if mode == "source":
            os.kill(os.getpid(), signal.SIGSTOP)  # the host's streams can go nowhere now
        sys.stdin.read()  # hold on until the test lets go
    return 0


if __name__ == "__main__":
    sys.exit(main())
