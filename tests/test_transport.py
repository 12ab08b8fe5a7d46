"""Two real processes over one segment, for both doorbell backends.

The host runs in a child process (peers/host_peer.py); this process is the
guest.  Data is checked by hashing everything each side saw.
"""
from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hgsmi

from support.processes import stop_host
from support.pump import Pump

sys.path.insert(0, str(Path(__file__).parent / "peers"))
from messages import stream  # noqa: E402

PEER = Path(__file__).parent / "peers" / "host_peer.py"
BACKENDS = ["eventfd", "semaphore"]
CH_HASH, CH_DIGEST, CH_PUSH, CH_PUSHED = 0x20, 0x21, 0x22, 0x23
CH_PUSH_MANY, CH_HEAP = 0x24, 0x25
COUNT = 20_000


def start_host(name: str, doorbell: str, size: int = 16 << 20) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent))
    p = subprocess.Popen([sys.executable, str(PEER), name, doorbell, str(size)],
                         stdout=subprocess.PIPE, env=env, text=True)
    assert p.stdout.readline().strip() == "ready", "host peer did not start"
    return p


@pytest.fixture(params=BACKENDS)
def host(request, name, runtime_dir, no_leaks):
    p = start_host(name, request.param)
    try:
        yield name
    finally:
        assert stop_host(p) == 0


def digest(datas) -> tuple[bytes, int]:
    h, n = hashlib.blake2b(digest_size=16), 0
    for d in datas:
        h.update(d)
        n += 1
    return h.digest(), n


@pytest.mark.timeout(240)
def test_20000_messages_guest_to_host(host):
    with hgsmi.Guest(host) as g:
        for i in range(0, COUNT, 500):  # batches: one doorbell per batch
            g.send_many(CH_HASH, 0, list(stream(7, COUNT))[i:i + 500], timeout=30)
        reply = g.call(CH_DIGEST, 0, b"", reply_size=24, timeout=60)
        assert (reply[:16], int.from_bytes(reply[16:], "little")) == digest(stream(7, COUNT))
        assert g.stats()["remote_errors"] == 0


def receive_pushed_stream(g: hgsmi.Guest, ch: int, seed: int, info_of) -> None:
    """Ask the host peer on ``ch`` to push stream ``seed`` (COUNT messages) to
    ``g``; poll until all came (200 s at most) and check that every byte came,
    in order (message i has info ``info_of(i)``), and the guest saw no error."""
    h, seen = hashlib.blake2b(digest_size=16), []

    def on_pushed(msg):
        assert msg.info == info_of(len(seen))  # in order
        h.update(msg.data)
        seen.append(len(msg.data))

    g.register(CH_PUSHED, on_pushed)
    g.call(ch, 0, f"{seed} {COUNT}".encode())
    deadline = time.monotonic() + 200
    while len(seen) < COUNT and time.monotonic() < deadline:
        g.poll(1.0)
    assert (h.digest(), len(seen)) == digest(stream(seed, COUNT))
    assert g.stats()["errors"] == 0


@pytest.mark.timeout(240)
def test_20000_messages_host_to_guest(host):
    with hgsmi.Guest(host) as g:
        receive_pushed_stream(g, CH_PUSH, 11, lambda i: i & 0xFFFF)


@pytest.mark.timeout(240)
def test_20000_messages_host_to_guest_post_many(host):
    """GuestConn.post_many (hgsmi_conn_send): every byte arrives, in order,
    and every host buffer is back in the host heap once the guest acked."""
    def host_heap_used(g) -> int:
        return int.from_bytes(g.call(CH_HEAP, 0, b"", reply_size=8, timeout=30), "little")

    with hgsmi.Guest(host) as g:
        baseline = host_heap_used(g)
        receive_pushed_stream(g, CH_PUSH_MANY, 13, lambda i: i // 500)  # batches of 500
        assert host_heap_used(g) == baseline


def test_call_reply_longer_than_request_and_zero_copy(name, runtime_dir, no_leaks):
    with hgsmi.Host(name, size=4 << 20) as host:
        host.register(0x30, lambda m: bytes(m.data) * 3)
        host.register(0x31, lambda m: m.data.__setitem__(slice(None), bytes(m.data).upper()))
        pump = Pump(host)
        with hgsmi.Guest(name) as g:
            assert g.call(0x30, 1, b"ab", reply_size=6) == b"ababab"
            with g.alloc(0x31, 0, 5) as buf:
                buf.data[:] = b"hello"
                view = g.call_buffer(buf)
                assert bytes(view) == b"HELLO"
            with pytest.raises(ValueError):
                view[0]  # the reply view died with the buffer
            with pytest.raises(hgsmi.BufferReleased):
                buf.data
            assert g.stats()["guest_heap"]["used"] == 0
            pump.stop()


def test_errors_reach_the_caller(name, runtime_dir, no_leaks):
    def boom(msg):
        raise RuntimeError("driver bug")

    with hgsmi.Host(name, size=4 << 20) as host:
        host.register(0x30, boom)
        host.register(0x31, lambda m: bytes(m.capacity + 1))
        pump = Pump(host)
        with hgsmi.Guest(name) as g:
            with pytest.raises(hgsmi.RemoteError):
                g.call(0x30, 0, b"x")
            with pytest.raises(hgsmi.ChannelNotRegistered):
                g.call(0x77, 0, b"x")
            with pytest.raises(hgsmi.ProtocolError):
                g.call(0x31, 0, b"x")  # reply larger than the buffer
            with pytest.raises(hgsmi.MessageTooLarge):
                g.call(0x30, 0, bytes(8 << 20))
            assert g.query_conf(3) == 1024  # RING_ENTRIES on the setup channel
            assert g.stats()["guest_heap"]["used"] == 0
        pump.stop()
        assert host.handler_errors == 1


def test_async_submit_and_completions(name, runtime_dir, no_leaks):
    with hgsmi.Host(name, size=4 << 20) as host:
        host.register(0x30, lambda m: bytes(m.data)[::-1])
        pump = Pump(host)
        with hgsmi.Guest(name) as g:
            bufs = []
            for i in range(200):
                b = g.alloc(0x30, 0, 8)
                b.data[:] = i.to_bytes(8, "little")
                bufs.append(b)
            g.submit_many(bufs)
            done = []
            while len(done) < 200:
                done += g.completions(timeout=5)
            for b in done:
                assert b.status == 0
                assert int.from_bytes(bytes(b.reply)[::-1], "little") < 200
                b.free()
            assert g.stats()["inflight"] == 0 and g.stats()["guest_heap"]["used"] == 0
        pump.stop()


@pytest.mark.parametrize("doorbell", BACKENDS)
def test_host_death_gives_peer_gone(name, runtime_dir, doorbell):
    p = start_host(name, doorbell)
    try:
        with hgsmi.Guest(name) as g:
            g.call(CH_HASH, 0, b"x")
            p.kill()  # kill -9: no goodbye
            t0 = time.monotonic()
            with pytest.raises(hgsmi.PeerGone):
                g.poll(timeout=None)  # blocked waiting for the IRQ
            assert time.monotonic() - t0 < 2.0
    finally:
        p.kill()
        p.wait()
    # The next host of the name removes what the dead one left.
    with hgsmi.Host(name):
        pass
    from conftest import shm_entries
    assert shm_entries(name) == []


@pytest.mark.parametrize("doorbell", BACKENDS)
def test_no_lost_wakeups(name, runtime_dir, no_leaks, doorbell):
    """Bursts of 1-64 messages while the consumer keeps going to sleep."""
    rng = random.Random(3)
    p = start_host(name, doorbell)
    try:
        with hgsmi.Guest(name) as g:
            total = 0
            for _ in range(400):
                burst = rng.randint(1, 64)
                g.send_many(CH_HASH, 0, [b"w" * rng.randint(1, 64)] * burst, timeout=5)
                total += burst
                if rng.random() < 0.5:
                    time.sleep(rng.random() / 2000)  # let the host fall asleep
                # the host is asleep or about to be: a synchronous call must get through
                if rng.random() < 0.25:
                    g.call(CH_HASH, 0, b"x", timeout=5)
                    total += 1
            reply = g.call(CH_DIGEST, 0, b"", reply_size=24, timeout=5)
            assert int.from_bytes(reply[16:], "little") == total
    finally:
        assert stop_host(p) == 0


@pytest.mark.parametrize("doorbell", BACKENDS)
def test_host_disconnects_a_live_guest(name, runtime_dir, no_leaks, doorbell):
    """The guest keeps its eventfds after the host drops it; ringing them is harmless."""
    with hgsmi.Host(name, size=4 << 20, doorbell=doorbell) as host:
        host.register(0x30, lambda m: None)
        pump = Pump(host)
        with hgsmi.Guest(name) as g:
            g.call(0x30, 0, b"x")
            pump.stop()
            host.guests[0].close()
            with pytest.raises(hgsmi.PeerGone):
                for _ in range(100):
                    g.send(0x30, 0, b"y")
            pump = Pump(host)
            with hgsmi.Guest(name) as g2:  # the host serves on, and a new guest attaches
                assert g2.call(0x30, 0, b"z") == b"z"
        pump.stop()


def test_guest_holds_an_ack_while_a_view_lives(name, runtime_dir, no_leaks):
    """The host reuses a host buffer once acked: a kept view must delay the ack."""
    kept = []
    with hgsmi.Host(name, size=4 << 20) as host:
        pump = Pump(host)
        with hgsmi.Guest(name) as g:
            g.register(0x40, lambda m: kept.append(m.data[0:4]))  # a slice outlives the call
            pump.stop()
            conn = host.guests[0]
            conn.post(0x40, 0, b"abcdefgh")
            assert g.poll(2) == 1
            host.poll(0.05)
            assert conn.stats()["inflight_host"] == 1  # not acked: the view is alive
            assert bytes(kept[0]) == b"abcd"
            kept.clear()  # let go of the view
            g.poll(0)
            host.poll(0.05)
            assert conn.stats()["inflight_host"] == 0


def test_host_holds_exactly_the_completions_whose_views_live(name, runtime_dir, no_leaks):
    """A batch's views are slices of one window: a kept slice holds back its
    own buffer only, a kept (released) view holds back nothing and raises."""
    slices, views = [], []

    def handler(m: hgsmi.Message) -> None:
        tag = bytes(m.data[:4])
        if tag == b"keep":
            slices.append(m.data[4:8])  # derived: must hold this buffer back
        elif tag == b"view":
            views.append(m.data)  # the view itself: released at completion

    with hgsmi.Host(name, size=4 << 20) as host:
        host.register(0x41, handler)
        pump = Pump(host)
        with hgsmi.Guest(name) as g:
            pump.stop()  # attached: this thread serves from here on
            bufs = []
            for tag in (b"pass", b"keep", b"view", b"pass"):
                buf = g.alloc(0x41, 0, 8)
                buf.data[:] = tag + b"1234"
                bufs.append(buf)
            for buf in bufs:
                g.submit(buf)  # one doorbell per submit: one or more host batches
            deadline = time.monotonic() + 5
            done: list = []
            while len(done) < 3 and time.monotonic() < deadline:
                host.poll(0.05)
                done += g.completions(0)
            want = sorted(b.offset for b in bufs if b is not bufs[1])
            assert sorted(b.offset for b in done) == want
            assert host.guests[0].stats()["held_completions"] == 1
            assert bytes(slices[0]) == b"1234"  # the guest's memory, not reused
            with pytest.raises(ValueError):
                views[0][0]
            slices.clear()
            host.poll(0.05)
            assert g.completions(5) == [bufs[1]]
            assert host.guests[0].stats()["held_completions"] == 0
            for buf in bufs:
                buf.free()


def test_views_outlive_a_closed_peer_without_a_fault(name, runtime_dir, no_leaks):
    """A view kept past its peer's close reads what the peer last wrote (the
    mapping stays until the view goes), instead of faulting on unmapped memory."""
    from hgsmi import _kept
    kept = []
    with hgsmi.Host(name, size=4 << 20) as host:
        host.register(0x42, lambda m: kept.append(m.data[2:6]))
        pump = Pump(host)
        g = hgsmi.Guest(name)
        pump.stop()
        buf = g.alloc(0x42, 0, 8)
        buf.data[:] = b"abcdefgh"
        g.submit(buf)
        host.poll(1)
        filling = g.alloc(0x42, 0, 4)
        filling.data[:] = b"wxyz"
        mine = filling.data[1:3]  # the guest's own view of a buffer it never sent
        g.close()  # the host sees the guest go and closes its side
        deadline = time.monotonic() + 5
        while host.guests and time.monotonic() < deadline:
            host.poll(0.05)
        assert not host.guests and _kept.pending() == 2
        assert bytes(kept[0]) == b"cdef" and bytes(mine) == b"xy"  # mapped: no fault
        kept.clear()
        del mine
        host.poll(0)  # sweeps: both segments are unmapped now
        assert _kept.pending() == 0


def test_call_waits_for_room_behind_sent_messages(name, runtime_dir, no_leaks):
    """send() may fill the ring; a call after it waits for room (timeout 0: raises)."""
    import threading
    with hgsmi.Host(name, size=4 << 20, ring_entries=8) as host:
        host.register(0x43, lambda m: None)
        pump = Pump(host)
        with hgsmi.Guest(name) as g:
            pump.stop()  # nobody serves: the ring fills
            for _ in range(8):
                g.send(0x43, 0, b"x" * 32)
            with pytest.raises(hgsmi.RingFull):
                g.call(0x43, 0, b"call", timeout=0)
            pumps: list = []
            threading.Timer(0.2, lambda: pumps.append(Pump(host))).start()  # serve again
            t0 = time.monotonic()
            try:
                assert g.call(0x43, 0, b"call", timeout=10) == b"call"
                assert 0.15 < time.monotonic() - t0 < 5
            finally:
                time.sleep(0.25 - min(0.25, time.monotonic() - t0))
                for p in pumps:
                    p.stop()
