"""Copy paths place their buffers against 4K aliasing (issue 7).

On the development CPU a memcpy whose destination lies 1..31 bytes above its
source modulo 4096 runs 10-15x slower (native/src/internal.h, HGSMI_PLACE_MIN).
So ``Guest.send``/``call`` and ``GuestConn.post`` place a copy of more than
2 KiB so that the data lands 0..63 bytes *below* the source modulo a page,
whatever the source's alignment; smaller copies take any block.  Both
mappings start on a page, so the receiver sees the sender's phase.
"""
from __future__ import annotations

import mmap

import pytest

import hgsmi
from hgsmi._native import ffi

from support.pump import Pump

CH = 0x30
PAGE = 4096
SIZES = [64, 2048, 2049, 5000, 65536, 300_000]
SHIFTS = [0, 8, 16, 24, 48, 1000, 4080]


def address(view) -> int:
    with ffi.from_buffer(view) as p:
        return int(ffi.cast("uintptr_t", p))


def source(size: int, shift: int) -> tuple[memoryview, int]:
    """A payload ``shift`` bytes past a page, and its address."""
    buf = mmap.mmap(-1, size + PAGE)
    view = memoryview(buf)[shift:shift + size]
    view[:] = bytes((i * 7 + shift) & 0xFF for i in range(256)) * (size // 256) + bytes(size % 256)
    return view, address(view)


def placed(dst: int, src: int) -> bool:
    """The data lies 0..63 bytes below the source, modulo a page."""
    return (src - dst) % PAGE < 64


def test_send_and_call_place_large_copies(name, runtime_dir, no_leaks):
    seen = []

    def on_data(msg):
        seen.append((address(msg.data), bytes(msg.data)))

    with hgsmi.Host(name, size=16 << 20) as host:
        host.register(CH, on_data)
        pump = Pump(host)
        try:
            with hgsmi.Guest(name) as g:
                for size in SIZES:
                    for shift in SHIFTS:
                        src, at = source(size, shift)
                        for how in ("send", "call"):
                            seen.clear()
                            if how == "send":
                                g.send(CH, 0, src)
                                while not seen:
                                    g.completions(0.01)
                            else:
                                g.call(CH, 0, src)
                            dst, data = seen[0]
                            assert data == bytes(src), (how, size, shift)
                            if size > 2048:
                                assert placed(dst, at), (how, size, shift, (dst - at) % PAGE)
                        del src
                assert g.stats()["remote_errors"] == 0
        finally:
            pump.stop()


def test_post_places_large_copies(name, runtime_dir, no_leaks):
    seen = []

    def on_data(msg):
        seen.append((address(msg.data), bytes(msg.data)))

    with hgsmi.Host(name, size=16 << 20) as host:
        pump = Pump(host)  # serves the attach only
        try:
            g = hgsmi.Guest(name)
        finally:
            pump.stop()
        with g:
            g.register(CH, on_data)
            conn = host.guests[0]
            for size in SIZES:
                for shift in SHIFTS:
                    src, at = source(size, shift)
                    seen.clear()
                    conn.post(CH, 0, src, timeout=5)
                    while not seen:
                        g.poll(0.1)
                        host.poll(0)
                    dst, data = seen[0]
                    assert data == bytes(src), (size, shift)
                    if size > 2048:
                        assert placed(dst, at), (size, shift, (dst - at) % PAGE)
                    del src
            for _ in range(10):  # let the acks free the host heap
                host.poll(0.01)
            assert conn.stats()["host_heap"]["used"] == 0


def assert_heap_whole(g: hgsmi.Guest) -> None:
    """Once what is in flight has come back, the guest heap is empty, in one
    free block (placed blocks' leading trims coalesced back)."""
    for _ in range(100):
        g.completions(0.01)
        heap = g.stats()["guest_heap"]
        if heap["used"] == 0:
            break
    assert heap["used"] == 0 and heap["free_blocks"] == 1


@pytest.mark.parametrize("size", [5000, 65536])
def test_placed_sends_keep_the_heap_whole(name, runtime_dir, no_leaks, size):
    """Many placed sends, completed and freed: the guest heap ends empty, in
    one free block (the leading trims coalesced back)."""
    got = []
    with hgsmi.Host(name, size=4 << 20) as host:
        host.register(CH, lambda msg: got.append(len(msg.data)))
        pump = Pump(host)
        try:
            with hgsmi.Guest(name) as g:
                src, _ = source(size, 16)
                for i in range(500):
                    g.send(CH, 0, src[: size - (i % 3) * 64])
                while len(got) < 500:
                    g.completions(0.01)
                assert_heap_whole(g)
        finally:
            pump.stop()


@pytest.mark.parametrize("size", [64, 2048, 2049, 5000, 65536, 300_000])
def test_loans_place_large_buffers_as_for_a_page_aligned_source(name, runtime_dir, no_leaks,
                                                                size):
    """A loan cannot see what its buffers are filled from, so a large one is
    placed as a copy from a page-aligned source would be (the common case:
    mmap, large malloc'd and bytes payloads start 0..64 past a page): its data
    48 bytes below a page, never 1..63 above such a source.  Published and
    completed, the heap ends empty and whole."""
    got = []
    with hgsmi.Host(name, size=8 << 20) as host:
        host.register(CH, lambda msg: got.append(bytes(msg.data[:1])))
        with Pump(host), hgsmi.Guest(name) as g:
            want = []
            for i in range(40):
                batch = g.loan(CH, 0, size - (i % 3) * 64 * (size > 4096), 1 + i % 4, timeout=10)
                for v in batch:
                    at = address(v)
                    if size > 2048:
                        assert placed(at, 0), (size, at % PAGE)
                        for shift in (16, 48, 64, 3984):  # never 1..63 above these either
                            assert not 0 < (at - shift) % PAGE < 64, (size, at % PAGE, shift)
                    v[0] = i
                    want.append(bytes([i]))
                assert batch.publish(timeout=10) == len(batch)
            while len(got) < len(want):
                g.wait(0.01)
            assert got == want
            assert_heap_whole(g)
