"""The wire format: checksum vectors, struct sizes, and verification of every field."""
import errno
import struct

import pytest

from hgsmi._native import ffi, lib

VECTORS = [  # offset, data_size, channel, info, checksum (docs/design.md §3)
    (0x00000000, 8, 1, 0, 0x4E7DDD50),
    (0x00FF0000, 8, 2, 1, 0x8228766E),
    (0x00FF0020, 8, 2, 12, 0xEAF0D496),
]


def oaat(data: bytes) -> int:
    """An independent one-at-a-time hash, from the published algorithm."""
    h = 0
    for b in data:
        h = (h + b) & 0xFFFFFFFF
        h = (h + (h << 10)) & 0xFFFFFFFF
        h ^= h >> 6
    h = (h + (h << 3)) & 0xFFFFFFFF
    h ^= h >> 11
    return (h + (h << 15)) & 0xFFFFFFFF


@pytest.mark.parametrize("off,size,ch,info,want", VECTORS)
def test_checksum_vectors(off, size, ch, info, want):
    hdr = ffi.new("struct hgsmi_buffer_header *", {"data_size": size, "channel": ch,
                                                   "channel_info": info})
    tail = ffi.new("struct hgsmi_buffer_tail *")
    assert lib.hgsmi_checksum(off, hdr, tail) == want
    raw = struct.pack("<I", off) + struct.pack("<IBBH8x", size, 0, ch, info) + bytes(4)
    assert oaat(raw) == want


@pytest.mark.parametrize("typ,size", [
    ("struct hgsmi_buffer_header", 16), ("struct hgsmi_buffer_tail", 8),
    ("struct hgsmi_conf32", 8), ("struct hgsmi_buffer_location", 8),
    ("struct hgsmi_segment_header", 320), ("struct hgsmi_ring_header", 128),
    ("struct hgsmi_hello", 32), ("struct hgsmi_welcome", 144),
])
def test_wire_struct_sizes(typ, size):
    assert ffi.sizeof(typ) == size


AREA_OFF, AREA_SIZE = 4096, 8192


def sealed(off=AREA_OFF + 64, size=40, ch=0x20, info=7, reply_cap=0):
    seg = ffi.new("uint8_t[]", AREA_OFF + AREA_SIZE)
    assert lib.hgsmi_buffer_init(seg, off, size, ch, info, reply_cap) == 0
    return seg


def verify(seg, off=AREA_OFF + 64):
    m = ffi.new("struct hgsmi_msg *")
    return lib.hgsmi_buffer_verify(seg, AREA_OFF, AREA_SIZE, off, m), m


def test_verify_accepts_a_sealed_buffer():
    rc, m = verify(sealed(reply_cap=100))
    assert rc == 0
    assert (m.size, m.capacity, m.channel, m.info) == (40, 100, 0x20, 7)
    assert m.data == AREA_OFF + 64 + 16


@pytest.mark.parametrize("byte", range(16 + 8))
def test_every_header_and_tail_bit_flip_is_caught(byte):
    for bit in range(8):
        seg = sealed()
        base = AREA_OFF + 64
        pos = base + byte if byte < 16 else base + 16 + 40 + (byte - 16)
        seg[pos] ^= 1 << bit
        rc, _ = verify(seg)
        assert rc in (-errno.EBADMSG, -errno.EPROTO, -errno.ERANGE), (byte, bit, rc)


@pytest.mark.parametrize("off,want", [
    (AREA_OFF + 65, -errno.EINVAL),                 # misaligned
    (0, -errno.ERANGE),                              # below the area
    (AREA_OFF + AREA_SIZE, -errno.ERANGE),           # past the end
    (AREA_OFF + AREA_SIZE - 64, -errno.EBADMSG),     # in range, but nothing sealed there
    (0xFFFFFFC0, -errno.ERANGE),                     # wraps
])
def test_bad_offsets(off, want):
    rc, _ = verify(sealed(), off)
    assert rc == want


def test_oversized_data_and_reserved_fields():
    seg = sealed()
    hdr = ffi.cast("struct hgsmi_buffer_header *", seg + AREA_OFF + 64)
    hdr.data_size = 0xFFFFFFF0
    assert verify(seg)[0] == -errno.ERANGE
    seg = sealed()
    ffi.cast("struct hgsmi_buffer_header *", seg + AREA_OFF + 64).flags = 0x01  # SEQ_START
    assert verify(seg)[0] == -errno.EPROTO


def test_a_header_moved_elsewhere_fails_its_checksum():
    seg = sealed()
    ffi.memmove(seg + AREA_OFF + 128, seg + AREA_OFF + 64, 16 + 40 + 8)
    assert verify(seg, AREA_OFF + 128)[0] == -errno.EBADMSG
