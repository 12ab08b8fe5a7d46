"""The protocol of the C examples (native/examples/host.c and guest.c), in Python.

Channels: 0x02 echo, 0x03 sink, 0x30 push request (u32 count, u32 size,
u32 seed, little-endian; answered at once, then ``count`` messages of
``size`` bytes posted on 0x31 with info = index), 0x32 invert (reply with
every byte XOR 0xff).  The bytes and sizes are the deterministic functions
documented in host.c and guest.c; this module must agree with them exactly.
Imports nothing from hgsmi, so tests that only run the C programs can use it.
"""
from __future__ import annotations

import struct

CH_ECHO, CH_SINK = 0x02, 0x03
CH_PUSH_REQUEST, CH_PUSH, CH_INVERT = 0x30, 0x31, 0x32
CALL_SEED, PUSH_SEED = 0x5EED, 0x9054
MIB = 1 << 20
_M32 = 0xFFFFFFFF

#: bytes.translate table for the invert channel (b ^ 0xff == 255 - b)
INVERT = bytes(range(255, -1, -1))

_PAT: bytes | None = None


def _pat() -> bytes:
    # pat(x) = ((x * 0x9e3779b1) mod 2^32) >> 24 for every x a message can
    # reach: start < 2^16 and p < 1 MiB.  Built once (about 0.25 s).
    global _PAT
    if _PAT is None:
        _PAT = bytes(((x * 0x9E3779B1) & _M32) >> 24 for x in range(65536 + MIB))
    return _PAT


def pattern(seed: int, i: int, size: int) -> bytes:
    """Message ``i`` of the stream ``seed``: byte p is example_byte(seed, i, p)."""
    if size > MIB:
        raise ValueError("patterns are at most 1 MiB")
    start = ((seed * 0x9E3779B1 + i * 0x85EBCA6B) & _M32) >> 16
    return _pat()[start:start + size]


def example_size(i: int) -> int:
    """guest.c's example_size(): log-uniform-ish sizes from 1 B to 1 MiB."""
    b = i % 22
    if b == 0:
        return 1
    if b == 21:
        return MIB
    h = ((i * 0x9E3779B1) & _M32) >> 8
    return (1 << (b - 1)) + h % (1 << (b - 1))


def push_request(count: int, size: int, seed: int) -> bytes:
    return struct.pack("<III", count, size, seed)


def push_plan(n: int):
    """guest.c's --verify push requests: (count, size, seed) covering n messages."""
    i = j = 0
    while i < n:
        count = min(1 + j % 8, n - i)
        yield count, example_size(j), PUSH_SEED + j
        i += count
        j += 1


def first_difference(got: bytes, want: bytes) -> str:
    """A short description of where two byte strings differ (never a 1 MiB diff)."""
    if len(got) != len(want):
        return f"{len(got)} bytes, want {len(want)}"
    for p, (a, b) in enumerate(zip(got, want, strict=True)):
        if a != b:
            return f"byte {p} of {len(got)} is 0x{a:02x}, want 0x{b:02x}"
    return "equal"
