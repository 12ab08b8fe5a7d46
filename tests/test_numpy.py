"""numpy, zero copy: frames as arrays over the VRAM, and their lifetime rules.

The host reads (and rewrites) in place a 1920x1080 RGBA frame that the guest
filled in place; the test proves no copy was made by the arrays' data
addresses, which lie inside the mapped segment on both sides.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hgsmi
from hgsmi._native import ffi, lib
from hgsmi.aio import AsyncGuest, AsyncHost

from support.pump import Pump

np = pytest.importorskip("numpy")

SHAPE = (1080, 1920, 4)
FRAME = 1080 * 1920 * 4
CH_FRAME, CH_KEEP = 0x40, 0x41
SEGMENT = 32 << 20  # the guest heap (half of it) holds a whole frame


def expected_frame():
    y = np.arange(SHAPE[0], dtype=np.uint32)[:, None, None]
    x = np.arange(SHAPE[1], dtype=np.uint32)[None, :, None]
    c = np.arange(SHAPE[2], dtype=np.uint32)[None, None, :]
    return ((y * 7 + x * 3 + c * 61) & 0xFF).astype(np.uint8)


def addr(arr) -> int:
    return arr.__array_interface__["data"][0]


def inside(arr, base, size) -> bool:
    start = int(ffi.cast("uintptr_t", base))
    return start <= addr(arr) and addr(arr) + arr.nbytes <= start + size


def frame_handler(seen):
    def handler(msg):
        a = msg.array(np.uint8, SHAPE)  # no copy: a view of the guest's segment
        conn = msg.guest
        seen.append((inside(a, lib.hgsmi_conn_base(conn._c), lib.hgsmi_conn_size(conn._c)),
                     bool(np.array_equal(a, expected_frame()))))
        np.subtract(255, a, out=a)  # the reply, written in place
        return None
    return handler


def check_guest_frame(g, buf):
    arr = buf.array(np.uint8, SHAPE)  # fill in place
    arr[...] = expected_frame()
    g_base, g_size = lib.hgsmi_guest_base(g._g), lib.hgsmi_guest_size(g._g)
    assert inside(arr, g_base, g_size)
    return arr, g_base, g_size


def test_frame_round_trip_without_a_copy(name, runtime_dir, no_leaks):
    seen = []
    with hgsmi.Host(name, size=SEGMENT) as host:
        host.register(CH_FRAME, frame_handler(seen))
        with Pump(host):
            with hgsmi.Guest(name) as g:
                with g.alloc(CH_FRAME, 0, FRAME) as buf:
                    arr, g_base, g_size = check_guest_frame(g, buf)
                    filled_at = addr(arr)
                    del arr  # a live view would refuse the submit (BufferError)
                    reply = np.frombuffer(g.call_buffer(buf, timeout=10), np.uint8).reshape(SHAPE)
                    # the reply is the very memory the guest filled, rewritten by the host
                    assert addr(reply) == filled_at and inside(reply, g_base, g_size)
                    assert np.array_equal(reply, 255 - expected_frame())
                    del reply
                assert g.stats()["guest_heap"]["used"] == 0
    assert seen == [(True, True)]


def test_frame_round_trip_async(name, runtime_dir, no_leaks):
    seen = []

    async def main():
        async def handler(msg):
            await asyncio.sleep(0)  # msg.data stays valid across awaits
            return frame_handler(seen)(msg)

        async with AsyncHost(name, size=SEGMENT) as host:
            host.register(CH_FRAME, handler)
            async with AsyncGuest.connect(name) as g:
                for _ in range(3):
                    with await g.alloc_wait(CH_FRAME, 0, FRAME) as buf:
                        arr, g_base, g_size = check_guest_frame(g, buf)
                        del arr
                        reply = np.frombuffer(await g.call_buffer(buf), np.uint8)
                        assert inside(reply, g_base, g_size)
                        assert np.array_equal(reply.reshape(SHAPE), 255 - expected_frame())
                        del reply
                assert g.stats()["guest_heap"]["used"] == 0

    asyncio.run(asyncio.wait_for(main(), 30))
    assert seen == [(True, True)] * 3


def test_a_view_kept_past_completion_holds_the_buffer_back(name, runtime_dir, no_leaks):
    kept = []
    with hgsmi.Host(name, size=4 << 20) as host:
        host.register(CH_KEEP, lambda m: kept.append(m.array(np.uint32)))
        with Pump(host):
            with hgsmi.Guest(name) as g:
                # Host side: the handler keeps an array; the completion waits for it.
                buf = g.alloc(CH_KEEP, 0, 16)
                buf.array(np.uint32)[:] = [1, 2, 3, 4]
                with pytest.raises(hgsmi.Timeout):
                    g.call_buffer(buf, timeout=0.5)
                assert host.guests[0].stats()["held_completions"] == 1
                assert kept[0].tolist() == [1, 2, 3, 4]  # still the guest's memory, intact
                kept.clear()  # let go: the next round completes it
                done = g.completions(timeout=5)
                assert done == [buf] and buf.status == 0
                assert host.guests[0].stats()["held_completions"] == 0
                # Guest side: a view of the reply holds the free back.
                reply = np.frombuffer(buf.reply, np.uint32)
                buf.free()
                assert buf.state == "held" and g.stats()["guest_heap"]["used"] > 0
                assert reply.tolist() == [1, 2, 3, 4]  # the memory was not reused
                del reply
                with g.alloc(CH_KEEP, 0, 8) as other:  # frees what was held back
                    assert buf.state == "freed"
                    view = other.array(np.uint8)
                    with pytest.raises(BufferError):
                        g.submit(other)  # a live view cannot go to the host
                    del view
                assert g.stats()["guest_heap"]["used"] == 0


def test_async_host_holds_a_completion_back_until_the_view_goes(name, runtime_dir, no_leaks):
    kept = []

    async def keep(msg):
        await asyncio.sleep(0)
        kept.append(msg.array(np.uint32))

    async def main():
        async with AsyncHost(name, size=4 << 20) as host:
            host.register(CH_KEEP, keep)
            async with AsyncGuest.connect(name) as g:
                buf = g.alloc(CH_KEEP, 0, 16)
                buf.array(np.uint32)[:] = [5, 6, 7, 8]
                fut = g.submit(buf)
                done, _ = await asyncio.wait([fut], timeout=0.3)
                assert not done and host.guests[0].stats()["held_completions"] == 1
                assert kept[0].tolist() == [5, 6, 7, 8]
                kept.clear()  # the loop notices within a few ms and completes it
                assert (await asyncio.wait_for(fut, 5)) is buf and buf.status == 0
                assert host.guests[0].stats()["held_completions"] == 0
                # Given up while held back: reclaimed when it finally completes.
                with g.alloc(CH_KEEP, 0, 16) as buf2:
                    fut = g.submit(buf2)
                    with pytest.raises(hgsmi.Timeout):
                        await g.call_buffer(g.alloc(CH_KEEP, 0, 4), timeout=0.2)
                    fut.cancel()
                await asyncio.sleep(0.1)
                assert g.stats()["guest_heap"]["used"] > 0  # still held by the host's views
                kept.clear()
                for _ in range(200):
                    await asyncio.sleep(0.01)
                    if g.stats()["inflight"] == 0 and g.stats()["guest_heap"]["used"] == 16 + 48:
                        break
                assert g.stats()["inflight"] == 0
                buf.free()
                assert g.stats()["guest_heap"]["used"] == 0

    asyncio.run(asyncio.wait_for(main(), 20))


def test_use_after_completion_raises_for_views(name, runtime_dir, no_leaks):
    with hgsmi.Host(name, size=4 << 20) as host:
        host.register(CH_FRAME, lambda m: None)
        with Pump(host):
            with hgsmi.Guest(name) as g:
                with g.alloc(CH_FRAME, 0, 64) as buf:
                    data = buf.data
                    g.call_buffer(buf, timeout=5)
                    with pytest.raises(ValueError):
                        data[0]  # released at submit
                    with pytest.raises(hgsmi.BufferReleased):
                        buf.array()
                    reply = buf.reply
                with pytest.raises(ValueError):
                    np.frombuffer(reply, np.uint8)  # released at free
                with pytest.raises(hgsmi.BufferReleased):
                    buf.reply


def test_hgsmi_imports_without_numpy(tmp_path):
    code = textwrap.dedent("""
        import sys
        sys.modules["numpy"] = None  # any import of numpy now fails
        import hgsmi, hgsmi.aio
        from hgsmi._native import ffi
        from hgsmi.lease import Lease
        lease = Lease(ffi.new("char[8]"), 8)
        msg = hgsmi.Message(0x10, 0, 8, lease.view, None, lease)
        assert bytes(msg.data) == bytes(8)
        try:
            msg.array()
        except ImportError:
            print("ok")
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert "numpy" not in out.stderr
