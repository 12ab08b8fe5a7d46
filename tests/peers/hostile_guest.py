"""A hostile guest: attaches through the real control socket, then scribbles.

usage: hostile_guest.py NAME SECONDS SEED [index]

It writes random and adversarial values over its whole segment (header, host
flags, ring indices and slots, both heaps), queues bogus offsets on the submit
and ack rings, and rings the doorbell at will.  It exits 0 when its time is up
or the host cuts it off (PeerGone), which is the expected outcome.

With ``index`` it first moves its submit ring's tail half the index space
ahead and waits until the host cuts it off for that hostile index.
(Random scribbling may instead hit the epoch word first, and a guest that
sees the epoch move believes itself reset and hangs up before the host
counts its garbage: a test that needs a cut-off asks for this one.)
"""
import random
import struct
import sys
import time

import hgsmi
from hgsmi._native import ffi, lib

EDGES = [0, 1, 63, 64, 0x7FFFFFFF, 0x80000000, 0xFFFFFFC0, 0xFFFFFFFF, 0xFFFFFFFE]


def main() -> int:
    name, seconds, seed = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    g = hgsmi.Guest(name)
    base = ffi.cast("uint8_t *", lib.hgsmi_guest_base(g._g))
    size = lib.hgsmi_guest_size(g._g)
    seg = ffi.buffer(base, size)
    hdr = ffi.cast("struct hgsmi_segment_header *", base)
    regions = [(hdr.regions[i].offset, hdr.regions[i].size) for i in range(6)]
    deadline = time.monotonic() + seconds
    try:
        if sys.argv[4:] == ["index"]:
            submit = ffi.cast("struct hgsmi_ring_header *", base + regions[0][0])
            submit.tail = submit.head + 0x80000000
            # Then wait, scribbling nothing, until the host cuts us off: its
            # next round over this guest reads the index (a doorbell is not
            # needed, and a send would store a sane tail over it), while a
            # scribble could put the index back or move the epoch first, and
            # then this guest hangs up uncounted.
            while time.monotonic() < deadline:
                try:
                    g.poll(0.05)
                except hgsmi.PeerGone:
                    raise
                except hgsmi.HgsmiError:
                    time.sleep(0.05)
        while time.monotonic() < deadline:
            what = rng.randrange(6)
            if what == 0:  # random bytes anywhere
                off = rng.randrange(size - 64)
                seg[off:off + 64] = rng.randbytes(64)
            elif what == 1:  # the header and the notify words
                off = rng.randrange(0, ffi.sizeof("struct hgsmi_segment_header"), 4)
                seg[off:off + 4] = struct.pack("<I", rng.choice(EDGES + [rng.getrandbits(32)]))
            elif what in (2, 3):  # bogus offsets queued on the submit or ack ring
                roff, _ = regions[0 if what == 2 else 3]
                ring = ffi.cast("struct hgsmi_ring_header *", base + roff)
                slots = ffi.cast("uint32_t *", base + roff + ffi.sizeof("struct hgsmi_ring_header"))
                tail = ring.tail
                for i in range(rng.randint(1, 16)):
                    heap_off, heap_size = regions[rng.choice([4, 5])]
                    slots[(tail + i) & 1023] = rng.choice(
                        EDGES + [heap_off + rng.randrange(0, heap_size, 64),
                                 heap_off + heap_size - 24, rng.getrandbits(32)])
                ring.tail = tail + i + 1 if rng.random() < 0.9 else rng.getrandbits(32)
            elif what == 4:  # a well-formed buffer, then corrupt it mid-flight
                try:
                    b = g.alloc(0x20, 0, rng.randint(1, 4096))
                    off = b.offset
                    g.submit(b)
                    seg[off + rng.randrange(16)] = rng.randbytes(1)  # header, mid-flight
                except hgsmi.HgsmiError:
                    pass
            try:  # ring the doorbell
                g.send(0x20, 0, b"x")
            except (hgsmi.HeapExhausted, hgsmi.RingFull, hgsmi.Timeout, hgsmi.ProtocolError):
                pass
    except hgsmi.PeerGone:
        return 0  # the host cut us off: what should happen
    finally:
        try:
            g.close()
        except Exception:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
