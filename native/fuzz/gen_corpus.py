#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Write the seed corpora of the fuzz harnesses: a few valid inputs each.

    python3 fuzz/gen_corpus.py            (from native/; rewrites fuzz/corpus/*/seed-*)

The formats are documented at the top of each fuzz/fuzz_*.c; the wire
structs are those of include/hgsmi/defs.h.  The checksum is computed here
independently (docs/design.md section 3, with its known answers checked), so a
seed that verifies also cross-checks the C implementation.  Files the fuzzer
found and `make fuzz-merge` kept are named by their hash and left alone.
"""
from __future__ import annotations

import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"

SEGMENT_MAGIC = 0x4D534748
ENDIAN_MARK = 0x01020304
CTL_MAGIC = 0x43534748
HEADER_SIZE = 320  # struct hgsmi_segment_header
RING_HEADER = 128  # struct hgsmi_ring_header
F_REPLY_CAP = 0x10

CH_SETUP, CH_ECHO, CH_HANDLER, CH_DEFERRED = 0x01, 0x02, 0x10, 0x11
CC_HOST_FLAGS_LOCATION, CC_QUERY_CONF = 0, 1

PASS, POST, SUBMIT = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD


def oaat(data: bytes, h: int = 0) -> int:
    for b in data:
        h = (h + b) & 0xFFFFFFFF
        h = (h + (h << 10)) & 0xFFFFFFFF
        h ^= h >> 6
    return h


def checksum(offset: int, header: bytes, tail_reserved: int = 0) -> int:
    h = oaat(struct.pack("<I", offset) + header + struct.pack("<I", tail_reserved))
    h = (h + (h << 3)) & 0xFFFFFFFF
    h ^= h >> 11
    return (h + (h << 15)) & 0xFFFFFFFF


def header(size: int, channel: int, info: int = 0, reply_cap: int = 0) -> bytes:
    flags, u0 = (F_REPLY_CAP, reply_cap) if reply_cap > size else (0, 0)
    return struct.pack("<IBBHII", size, flags, channel, info, u0, 0)


def buffer(offset: int, data: bytes, channel: int, info: int = 0, reply_cap: int = 0) -> bytes:
    """A sealed buffer (header, data, room for the reply, tail) at offset."""
    h = header(len(data), channel, info, reply_cap)
    room = max(len(data), reply_cap) - len(data)
    return h + data + struct.pack("<II", 0, checksum(offset, h)) + bytes(room)


for off, size, ch, info, want in [(0, 8, 1, 0, 0x4E7DDD50), (0x00FF0000, 8, 2, 1, 0x8228766E),
                                  (0x00FF0020, 8, 2, 12, 0xEAF0D496)]:
    assert checksum(off, header(size, ch, info)) == want, "checksum known answer"


def write(harness: str, name: str, data: bytes) -> None:
    d = CORPUS / harness
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data)


# ---- fuzz_verify: u32 area_off, u32 offset, u8 mode, area bytes ------------
def verify_seeds() -> None:
    area_off = 0x1000
    for name, rel, buf in [
        ("plain", 0, buffer(area_off, b"hello, host!", CH_ECHO, 7)),
        ("replycap", 64, buffer(area_off + 64, b"abc", CH_HANDLER, 1, reply_cap=40)),
        ("empty", 0, buffer(area_off, b"", CH_SETUP, CC_HOST_FLAGS_LOCATION)),
    ]:
        area = bytearray(256)
        area[rel:rel + len(buf)] = buf
        write("fuzz_verify", name, struct.pack("<IIB", area_off, rel, 1) + bytes(area))
    # Exactly filling the area, absolute offset, sealed by the harness.
    buf = buffer(0x40, bytes(40), CH_DEFERRED)
    write("fuzz_verify", "exact-fit", struct.pack("<IIB", 0x40, 0x40, 2) + buf)
    # An area that ends at 2^32.
    buf = buffer(0xFFFFFF00, bytes(16), CH_ECHO)
    write("fuzz_verify", "top", struct.pack("<IIB", 0xFFFFFF00, 0, 1)
          + buf + bytes(256 - len(buf)))


# ---- fuzz_ring: u8 flags, u16 image_len, image, ops ------------------------
def ring_image(entries: int, submits: list[tuple[int, bytes]], heap: int = 1024,
               acks: list[int] = ()) -> tuple[bytes, dict]:
    """A compact valid segment: rings right after the header, then heaps."""
    ring = (RING_HEADER + 4 * entries + 63) & ~63
    regions, off = [], HEADER_SIZE
    for _ in range(4):
        regions.append((off, ring))
        off += ring
    regions += [(off, heap), (off + heap, heap)]
    size = off + 2 * heap
    img = bytearray(size)
    hdr = struct.pack("<IHHIIIIIIII6I", SEGMENT_MAGIC, 1, 0, ENDIAN_MARK, HEADER_SIZE, size,
                      0x3, 1, entries, 0, 7, *([0] * 6))
    hdr += b"".join(struct.pack("<II", *r) for r in regions) + bytes(16)
    img[:len(hdr)] = hdr
    # Buffers in the guest heap, their offsets on the submit ring.
    goff, at = regions[4][0], regions[4][0]
    slots = []
    for _data, buf_fn in submits:
        b = buf_fn(at)
        img[at:at + len(b)] = b
        slots.append(at)
        at += (len(b) + 63) & ~63
    assert at <= goff + heap

    def fill(region: int, offs: list[int]) -> None:
        base = regions[region][0]
        struct.pack_into("<I", img, base, len(offs))  # tail; head stays 0
        for i, o in enumerate(offs):
            struct.pack_into("<I", img, base + RING_HEADER + 4 * i, o)

    fill(0, slots)
    fill(3, list(acks))
    return bytes(img), {"regions": regions, "size": size}


def ring_input(flags: int, img: bytes, ops: list[tuple[int, int]]) -> bytes:
    return (struct.pack("<BH", flags, len(img)) + img
            + b"".join(struct.pack("<II", w, v) for w, v in ops))


def ring_seeds() -> None:
    q = struct.pack("<II", 2, 0)  # QUERY_CONF max message
    subs = [
        (q, lambda o: buffer(o, q, CH_SETUP, CC_QUERY_CONF)),
        (b"", lambda o: buffer(o, b"", CH_SETUP, CC_HOST_FLAGS_LOCATION, reply_cap=8)),
        (b"x" * 20, lambda o: buffer(o, b"x" * 20, CH_HANDLER, 3, reply_cap=48)),
        (b"\xee" * 4, lambda o: buffer(o, b"\xee" * 4, CH_ECHO)),
        (b"def", lambda o: buffer(o, b"def", CH_DEFERRED, 9, reply_cap=16)),
        (b"nobody", lambda o: buffer(o, b"nobody", 0x42)),
    ]
    img, lay = ring_image(8, subs)
    write("fuzz_ring", "served", ring_input(0, img, [(PASS, 0)]))
    # Host posts, the guest acks the first host buffer (the host heap's
    # first block), then once more (a double ack), with passes between.
    hh = lay["regions"][5][0]
    ack_ring = lay["regions"][3][0]
    img, lay = ring_image(4, subs[:2])
    write("fuzz_ring", "post-ack", ring_input(0, img, [
        (POST, 0x10_0002_20), (POST, 0x08_0001_21), (PASS, 0),
        (ack_ring + RING_HEADER, hh), (ack_ring, 1), (PASS, 0),
        (ack_ring + RING_HEADER + 4, hh), (ack_ring, 2), (PASS, 0),
        (SUBMIT, hh), (SUBMIT, 12345)]))
    # Hostile: a submit tail far ahead, then a garbage offset.
    img, lay = ring_image(4, subs[2:4])
    sub_ring = lay["regions"][0][0]
    write("fuzz_ring", "hostile-tail", ring_input(1, img, [
        (PASS, 0), (sub_ring, 0x7FFFFFFF), (PASS, 0)]))
    img, lay = ring_image(2, subs[4:6], heap=512)
    sub_ring = lay["regions"][0][0]
    write("fuzz_ring", "small", ring_input(3, img, [(PASS, 0), (sub_ring, 0), (PASS, 0)]))


# ---- fuzz_handshake ---------------------------------------------------------
# The real segment the harness makes: 64 KiB, 16 entries, epoch 5; rings at
# 4096, 8192, 12288, 16384 (one page each), guest heap [20480, 40960), host
# heap [40960, 65536) (segment.c layout()).
HS_SUBMIT, HS_GCOMPLETE, HS_HOSTFIFO, HS_HOSTACK = 4096, 8192, 12288, 16384
HS_GHEAP, HS_HHEAP = 20480, 40960
GUEST_WORK, GUEST_SEND, GUEST_CALL, HOST_IRQ = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD, 0xFFFFFFFC


F_POSIX, F_ALL = 0x3, 0x7  # HGSMI_F_ALL without and with HGSMI_F_SEGMENT_FD


def hello(kind: int = 1, magic: int = CTL_MAGIC, major: int = 1, features: int = F_ALL) -> bytes:
    return struct.pack("<IHHII4I", magic, major, 1, kind, features, 0, 0, 0, 0)


def welcome(status: int = 0, backend: int = 1, nfds: int = 2, segment: bytes = b"@",
            epoch: int = 5, size: int = 65536, sems: tuple[bytes, bytes] = (b"", b""),
            features: int = F_POSIX) -> bytes:
    w = struct.pack("<IHHiIIIIII3I", CTL_MAGIC, 1, 0, status, features, 3, epoch, size,
                    backend, nfds, 0, 0, 0)
    for name in (segment, *sems):
        w += name.ljust(32, b"\0")
    assert len(w) == 144
    return w


def hs_ops(ops: list[tuple[int, int]]) -> bytes:
    return b"".join(struct.pack("<II", w, v) for w, v in ops)


def store_bytes(at: int, data: bytes) -> list[tuple[int, int]]:
    """Ops that make the host store data (a multiple of 4 bytes) at `at`."""
    return [(at + i, struct.unpack_from("<I", data, i)[0]) for i in range(0, len(data), 4)]


def handshake_seeds() -> None:
    write("fuzz_handshake", "hello-attach", bytes([0, 0]) + hello())
    write("fuzz_handshake", "hello-stat", bytes([0, 0]) + hello(kind=2))
    write("fuzz_handshake", "hello-fds-trailing", bytes([0, 2]) + hello() + b"more bytes")
    write("fuzz_handshake", "hello-abi2", bytes([0, 1]) + hello(major=2))
    # A guest that cannot take the segment as an fd: refused by a memfd host.
    write("fuzz_handshake", "hello-no-segment-fd", bytes([0, 0]) + hello(features=F_POSIX))
    all_real = 2 | 4 | 8 | 16  # two eventfds; real name, epoch and size
    w = welcome()
    write("fuzz_handshake", "welcome-attach", bytes([1, all_real, len(w), 0]) + w)
    write("fuzz_handshake", "welcome-refused",
          bytes([1, 0, 144, 0]) + welcome(status=-13, nfds=0))
    write("fuzz_handshake", "welcome-sem",
          bytes([1, 4 | 8 | 16, 144, 0]) + welcome(backend=2, nfds=0,
                                                   sems=(b"/hgsmi-nx.db", b"/hgsmi-nx.1i")))
    # Attached: the guest sends; the host completes it, then posts a sealed
    # command on the FIFO and raises the IRQ; the guest serves both.
    hb = buffer(HS_HHEAP, b"host cmd", 0x33, 4)
    ops = [(GUEST_SEND, 0x08_02), (GUEST_WORK, 0),
           (HS_GCOMPLETE + RING_HEADER, HS_GHEAP), (HS_GCOMPLETE, 1)]
    ops += store_bytes(HS_HHEAP, hb)
    ops += [(HS_HOSTFIFO + RING_HEADER, HS_HHEAP), (HS_HOSTFIFO, 1), (HOST_IRQ, 0),
            (GUEST_WORK, 0), (GUEST_CALL, 0x10_02), (GUEST_WORK, 0)]
    write("fuzz_handshake", "welcome-traffic", bytes([1, all_real, len(w), 0]) + w + hs_ops(ops))
    # The same over a sealed memfd passed as the first fd (ctl bit 5).
    mw = welcome(features=F_ALL, nfds=3)
    write("fuzz_handshake", "welcome-memfd", bytes([1, all_real | 32, len(mw), 0]) + mw)
    write("fuzz_handshake", "welcome-memfd-traffic",
          bytes([1, all_real | 32, len(mw), 0]) + mw + hs_ops(ops))
    # The welcome says memfd, but the first fd is an eventfd (not sealed).
    write("fuzz_handshake", "welcome-memfd-not-sealed",
          bytes([1, 3 | 8 | 16, len(mw), 0]) + mw)


# ---- fuzz_welcome -------------------------------------------------------------
# fd kinds (enum fd_kind in fuzz_welcome.c) and the welcome's fix-up bits.
FD_NONE, FD_EVENTFD, FD_EVENTFD_BLOCKING, FD_EVENTFD_FULL, FD_EVENTFD_SEM = range(5)
FD_PIPE_READ, FD_PIPE_WRITE_FULL, FD_FILE, FD_MEMFD, FD_MEMFD_UNSEALED = range(5, 10)
FD_MEMFD_BIG, FD_MEMFD_SMALL, FD_MEMFD_SHRINK_ONLY, FD_SOCKET, FD_DEVNULL, FD_DIR = range(10, 16)
FIX_ALL = 1 | 2 | 4
W_WAIT, W_SEND, W_CALL, W_RECV, W_DISARM, W_ARM, W_IRQ, W_STORE = range(8)


def welcome_input(kinds: tuple[int, int, int], ops: bytes = b"", fix: int = FIX_ALL) -> bytes:
    w = welcome(features=F_ALL, nfds=3, epoch=9)
    return bytes([*kinds, fix, len(w)]) + w + ops


def welcome_seeds() -> None:
    traffic = bytes([W_SEND, W_IRQ, W_WAIT, W_CALL, W_DISARM, W_RECV, W_ARM, W_WAIT])
    # Host flags: IRQ raised for ever, and the ack ring index far ahead.
    hostile = bytes([W_STORE]) + struct.pack("<II", 128, 0x7) + bytes([W_WAIT, W_ARM])
    hostile += bytes([W_STORE]) + struct.pack("<II", HS_HOSTACK, 0x40000000)
    hostile += bytes([W_RECV, W_CALL, W_DISARM])
    write("fuzz_welcome", "good", welcome_input((FD_MEMFD, FD_EVENTFD, FD_EVENTFD), traffic))
    write("fuzz_welcome", "blocking", welcome_input(
        (FD_MEMFD, FD_EVENTFD_FULL, FD_EVENTFD_BLOCKING), traffic + hostile))
    for name, kinds in [("pipe", (FD_MEMFD, FD_PIPE_WRITE_FULL, FD_PIPE_READ)),
                        ("file", (FD_MEMFD, FD_FILE, FD_FILE)),
                        ("semaphore", (FD_MEMFD, FD_EVENTFD, FD_EVENTFD_SEM)),
                        ("socket", (FD_MEMFD, FD_SOCKET, FD_DEVNULL)),
                        ("unsealed", (FD_MEMFD_UNSEALED, FD_EVENTFD, FD_EVENTFD)),
                        ("big", (FD_MEMFD_BIG, FD_EVENTFD, FD_EVENTFD)),
                        ("small", (FD_MEMFD_SMALL, FD_EVENTFD, FD_EVENTFD)),
                        ("shrink-only", (FD_MEMFD_SHRINK_ONLY, FD_EVENTFD, FD_EVENTFD)),
                        ("dir", (FD_DIR, FD_EVENTFD, FD_EVENTFD)),
                        ("two-fds", (FD_MEMFD, FD_EVENTFD, FD_NONE))]:
        write("fuzz_welcome", name, welcome_input(kinds, traffic))


# ---- regressions: inputs that crashed, one per bug ------------------------
# Each is named <harness>-<what>.bin and replayed by `make fuzz-smoke`.  The
# ones made here are hand-written equivalents of what the fuzzer found (the
# comments say what each must no longer do); a crash the fuzzer finds later
# is copied in as it is (after libFuzzer's -minimize_crash=1).
REGRESSIONS = HERE / "regressions"


def regression(name: str, data: bytes) -> None:
    REGRESSIONS.mkdir(exist_ok=True)
    (REGRESSIONS / f"{name}.bin").write_bytes(data)


def regressions() -> None:
    all_real = 2 | 4 | 8 | 16
    w = welcome()
    # A host whose header gives its heap 16 bytes: the guest's check of where
    # it may write a status (writable_host_header) computed size - 24 in
    # unsigned arithmetic and let the host aim an 8-byte write anywhere above
    # the heap, here into the page after the guest's mapping.
    pre = [(64 + 8 * 5 + 4, 16)]  # regions[HOST_HEAP].size = 16
    regression("fuzz_handshake-small-host-heap",
               bytes([1, all_real, len(w), len(pre)]) + w + hs_ops(pre + [
                   (HS_HOSTFIFO + RING_HEADER, HS_HHEAP + 64 * 385), (HS_HOSTFIFO, 1),
                   (GUEST_WORK, 0)]))
    # The same unsigned wrap on the host side (writable_header), reached
    # through a layout with a 16-byte guest heap: the host wrote a completion
    # status past the end of the segment.
    img, lay = ring_image(4, [], heap=1024)
    img = bytearray(img)
    regs = lay["regions"]
    struct.pack_into("<I", img, 64 + 8 * 4 + 4, 16)  # regions[GUEST_HEAP].size = 16
    sub = regs[0][0]
    struct.pack_into("<I", img, sub, 1)  # submit tail
    struct.pack_into("<I", img, sub + RING_HEADER, len(img))  # just past the image
    regression("fuzz_ring-small-guest-heap", ring_input(0, bytes(img), [(PASS, 0)]))
    # A welcome whose segment name (and the two names after it) has no NUL:
    # the guest ran strlen() off the end of its stack copy of the welcome.
    bad = bytearray(welcome())
    bad[48:144] = b"/" + b"A" * 95
    regression("fuzz_handshake-unterminated-name", bytes([1, 2 | 8 | 16, 144, 0]) + bytes(bad))
    # A call while a host command waits, unserved, on the host FIFO: the
    # call's wait saw "work" at once, forever, and neither its timeout (0
    # here) nor a dead host ended it (a busy loop; libFuzzer's -timeout).
    hb = buffer(HS_HHEAP, b"host cmd", 0x33, 4)
    ops = store_bytes(HS_HHEAP, hb)
    ops += [(HS_HOSTFIFO + RING_HEADER, HS_HHEAP), (HS_HOSTFIFO, 1), (GUEST_CALL, 0x08_02)]
    regression("fuzz_handshake-call-ignores-timeout",
               bytes([1, all_real, len(w), 0]) + w + hs_ops(ops))
    # A host that passes blocking eventfds, the doorbell at its maximum
    # count, and asks to be rung: the guest's doorbell write() and its
    # disarm's read() of the IRQ blocked for ever (libFuzzer's -timeout).
    ring_me = bytes([W_STORE]) + struct.pack("<II", 256, 1)  # host_waiting
    regression("fuzz_welcome-blocking-eventfds", welcome_input(
        (FD_MEMFD, FD_EVENTFD_FULL, FD_EVENTFD_BLOCKING),
        ring_me + bytes([W_SEND, W_DISARM, W_SEND, W_DISARM])))


if __name__ == "__main__":
    verify_seeds()
    ring_seeds()
    handshake_seeds()
    welcome_seeds()
    regressions()
