"""hgsmi.aio: AsyncGuest and AsyncHost on asyncio, for both doorbell backends.

The 10,000-call test has the host in a child process (an AsyncHost); the
8-guest test has the guests in child processes and the AsyncHost here; the
cancellation storm and the lifetime checks run both sides on one loop.
"""
from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import hgsmi
from hgsmi.aio import AsyncGuest, AsyncHost

from support.processes import stop_host

ROOT = Path(__file__).parent.parent
BACKENDS = ["eventfd", "semaphore"]
CH_REV, CH_AREV, CH_NEVER, CH_BARRIER, CH_PUSH = 0x20, 0x21, 0x22, 0x30, 0x31

pytestmark = pytest.mark.timeout(60)

# A host in its own process: 0x20 replies reversed + info (plain handler),
# 0x21 the same from a coroutine, 0x22 never answers.
HOST_PEER = textwrap.dedent("""
    import asyncio, sys
    from hgsmi.aio import AsyncHost

    def rev(m):
        return bytes(m.data)[::-1] + m.info.to_bytes(2, "little")

    async def arev(m):
        await asyncio.sleep(0)
        return rev(m)

    async def never(m):
        await asyncio.Event().wait()

    async def main(name, doorbell):
        async with AsyncHost(name, doorbell=doorbell) as host:
            host.register(0x20, rev)
            host.register(0x21, arev)
            host.register(0x22, never)
            print("ready", flush=True)
            await host.serve()  # until SIGTERM

    asyncio.run(main(*sys.argv[1:3]))
""")

# A guest in its own process, for the 8-guest test: meets the others at the
# barrier, makes CALLS concurrent calls and takes PUSHES host commands.
GUEST_PEER = textwrap.dedent("""
    import asyncio, sys
    from hgsmi.aio import AsyncGuest

    async def main(name, gid, calls, pushes):
        got = []
        done = asyncio.Event()

        async def on_push(msg):
            await asyncio.sleep(0)
            got.append((msg.info, bytes(msg.data)))
            if len(got) == pushes:
                done.set()

        async with AsyncGuest(name) as g:
            g.register(0x31, on_push)
            assert await g.call(0x30, gid, b"", reply_size=2) == b"go"
            datas = [b"%d:%d:" % (gid, i) * (1 + i % 7) for i in range(calls)]
            replies = await asyncio.gather(*(g.call(0x20, i, d, reply_size=len(d) + 2)
                                           for i, d in enumerate(datas)))
            for i, (d, r) in enumerate(zip(datas, replies)):
                assert r == d[::-1] + bytes([gid, i & 0xFF]), (i, r)
            await asyncio.wait_for(done.wait(), 20)
            assert sorted(got) == [(i, b"push %d %d" % (gid, i)) for i in range(pushes)]
            assert g.stats()["guest_heap"]["used"] == 0
        print("ok", gid, flush=True)

    asyncio.run(main(sys.argv[1], *map(int, sys.argv[2:5])))
""")


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


def start_host(name: str, doorbell: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOST_PEER, name, doorbell],
                         stdout=subprocess.PIPE, env=_env(), text=True)
    assert p.stdout.readline().strip() == "ready", "host peer did not start"
    return p


def payload(i: int) -> bytes:
    return (i.to_bytes(4, "little") + b"hgsmi-aio") * (1 + i % 13)


def expect(i: int, data: bytes) -> bytes:
    return data[::-1] + (i & 0xFFFF).to_bytes(2, "little")


@pytest.mark.multiprocess
@pytest.mark.parametrize("doorbell", BACKENDS)
def test_10000_concurrent_calls_host_in_another_process(name, runtime_dir, no_leaks, doorbell):
    p = start_host(name, doorbell)
    try:
        async def main():
            threads = threading.active_count()
            async with AsyncGuest(name) as g:
                # eventfd: no thread at all; semaphore: exactly one waiter
                assert threading.active_count() == threads + (doorbell == "semaphore")
                n = 10_000
                t0 = time.perf_counter()
                replies = await asyncio.gather(*(
                    g.call(CH_REV if i % 2 else CH_AREV, i & 0xFFFF, payload(i),
                           reply_size=len(payload(i)) + 2) for i in range(n)))
                rate = n / (time.perf_counter() - t0)
                for i, r in enumerate(replies):
                    assert r == expect(i, payload(i)), i
                st = g.stats()
                assert st["inflight"] == 0 and st["guest_heap"]["used"] == 0
                assert g.pending == 0
                # batched: far fewer doorbells rung than calls
                assert st["doorbells"] < n / 10, st
                print(f"\n{doorbell}: {rate:,.0f} async calls/s across processes, "
                      f"{st['doorbells']} doorbells, {st['irqs']} IRQs")
        asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        assert stop_host(p) == 0


@pytest.mark.multiprocess
@pytest.mark.parametrize("doorbell", BACKENDS)
def test_host_death_fails_pending_calls(name, runtime_dir, doorbell):
    p = start_host(name, doorbell)
    try:
        async def main():
            async with AsyncGuest(name) as g:
                assert await g.call(CH_REV, 1, b"ab", reply_size=4) == b"ba\x01\x00"
                pending = [asyncio.ensure_future(g.call(CH_NEVER, 0, b"x")) for _ in range(10)]
                await asyncio.sleep(0.05)
                p.kill()  # kill -9: no goodbye
                t0 = time.monotonic()
                for f in pending:
                    with pytest.raises(hgsmi.PeerGone):
                        await f
                assert time.monotonic() - t0 < 2.0
                with pytest.raises(hgsmi.PeerGone):
                    await g.call(CH_REV, 0, b"late")
        asyncio.run(asyncio.wait_for(main(), 20))
    finally:
        p.kill()
        p.wait()
    with hgsmi.Host(name):  # the next host of the name removes what the dead one left
        pass


@pytest.mark.multiprocess
def test_async_host_serves_8_guests_at_once(name, runtime_dir, no_leaks):
    n_guests, calls, pushes = 8, 500, 100

    async def main():
        arrived = 0
        everyone = asyncio.Event()

        async def barrier(msg):
            # Only a host that serves all guests at once gets past this.
            nonlocal arrived
            arrived += 1
            if arrived == n_guests:
                everyone.set()
            await everyone.wait()
            asyncio.get_running_loop().create_task(push(msg.guest, msg.info))
            return b"go"

        async def push(conn, gid):
            for i in range(pushes):
                await host.post(CH_PUSH, i, b"push %d %d" % (gid, i), guest=conn)

        ids: dict[int, int] = {}  # GuestConn.id -> the guest's own number

        def rev(msg):  # a plain handler beside the async ones
            return bytes(msg.data)[::-1] + bytes([ids[msg.guest.id], msg.info & 0xFF])

        def barrier_id(msg):
            ids[msg.guest.id] = msg.info
            return barrier(msg)

        async with AsyncHost(name, size=4 << 20) as host:
            host.register(CH_BARRIER, barrier_id)
            host.register(CH_REV, rev)
            procs = [await asyncio.create_subprocess_exec(
                sys.executable, "-c", GUEST_PEER, name, str(i), str(calls), str(pushes),
                stdout=asyncio.subprocess.PIPE, env=_env()) for i in range(n_guests)]
            outs = await asyncio.wait_for(asyncio.gather(*(q.communicate() for q in procs)), 35)
            assert [q.returncode for q in procs] == [0] * n_guests
            assert sorted(o.decode().split()[1] for o, _ in outs) == [str(i) for i in range(8)]
            assert arrived == n_guests and host.handler_errors == 0
            deadline = time.monotonic() + 5
            while host.guests and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert host.guests == []
            assert len(host.departed) == n_guests
            for st in host.departed:
                assert st["msgs_in"] == calls + 1 and st["msgs_out"] == pushes
                assert st["errors_handler"] == 0

    asyncio.run(main())


@pytest.mark.parametrize("doorbell", BACKENDS)
def test_cancellation_storm(name, runtime_dir, no_leaks, doorbell):
    rng = random.Random(6)

    async def slow_rev(msg):
        data = bytes(msg.data)
        if rng.random() < 0.5:
            await asyncio.sleep(rng.random() * 0.003)
        return data[::-1]

    async def main():
        loop = asyncio.get_running_loop()
        async with AsyncHost(name, size=4 << 20, doorbell=doorbell, ring_entries=256) as host:
            host.register(CH_REV, lambda m: bytes(m.data)[::-1])
            host.register(CH_AREV, slow_rev)
            async with AsyncGuest.connect(name) as g:
                base = g.stats()["guest_heap"]["used"]

                async def copy_call(i):
                    data = payload(i)
                    ch = CH_AREV if i % 3 else CH_REV
                    return data, await g.call(ch, 0, data)

                async def zero_copy(i):
                    data = payload(i)
                    with await g.alloc_wait(CH_AREV, 0, len(data)) as buf:
                        buf.data[:] = data
                        return data, bytes(await g.call_buffer(buf))

                async def with_timeout(i):
                    data = payload(i)
                    try:
                        return data, await g.call(CH_AREV, 0, data, timeout=0.001)
                    except hgsmi.Timeout:
                        raise asyncio.CancelledError from None

                kinds = [copy_call, zero_copy, with_timeout]
                done = cancelled = 0
                for _ in range(6):
                    tasks = []
                    for i in range(600):
                        t = loop.create_task(kinds[i % 3](i))
                        tasks.append(t)
                        r = rng.random()
                        if r < 0.1:
                            t.cancel()  # before it ever runs
                        elif r < 0.2:
                            loop.call_soon(t.cancel)  # queued, not yet on the ring
                        elif r < 0.5:
                            loop.call_later(rng.random() * 0.01, t.cancel)  # in flight
                    for t in tasks:
                        try:
                            data, reply = await t
                        except asyncio.CancelledError:
                            cancelled += 1
                            continue
                        assert reply == data[::-1]
                        done += 1
                assert done > 1000 and cancelled > 1000, (done, cancelled)
                # No lost completion: every buffer comes back, and is freed.
                deadline = time.monotonic() + 10
                while (g.pending or g.stats()["inflight"]) and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                st = g.stats()
                assert g.pending == 0 and st["inflight"] == 0, st
                assert st["guest_heap"]["used"] == base, st["guest_heap"]
                # The ring still works: a clean burst after the storm.
                replies = await asyncio.gather(*(g.call(CH_REV, 0, payload(i))
                                                 for i in range(2000)))
                assert replies == [payload(i)[::-1] for i in range(2000)]
                assert g.stats()["guest_heap"]["used"] == base
            assert host.handler_errors == 0

    asyncio.run(asyncio.wait_for(main(), 30))


def test_use_after_completion_raises(name, runtime_dir, no_leaks):
    kept = []

    async def keep(msg):
        kept.append((msg, msg.data))  # the message and its view, past completion
        await asyncio.sleep(0)
        return bytes(msg.data).upper()

    async def main():
        async with AsyncHost(name, size=4 << 20) as host:
            host.register(CH_AREV, keep)
            async with AsyncGuest.connect(name) as g:
                with g.alloc(CH_AREV, 0, 5) as buf:
                    buf.data[:] = b"hello"
                    fut = g.submit(buf)
                    with pytest.raises(hgsmi.BufferReleased):
                        buf.data  # the host has it now
                    assert (await fut) is buf and buf.status == 0
                    reply = buf.reply
                    assert bytes(reply) == b"HELLO"
                with pytest.raises(hgsmi.BufferReleased):
                    buf.reply  # freed
                with pytest.raises(ValueError):
                    reply[0]  # the view died with the buffer
                msg, view = kept[0]
                with pytest.raises(hgsmi.BufferReleased):
                    msg.data
                with pytest.raises(ValueError):
                    view[0]
                # Guest side: a host command's message after the async handler.
                seen = []
                got = asyncio.Event()

                async def on_cmd(m):
                    seen.append((m, m.data))
                    got.set()

                g.register(CH_PUSH, on_cmd)
                await host.post(CH_PUSH, 7, b"cmd")
                await asyncio.wait_for(got.wait(), 5)
                await asyncio.sleep(0.01)
                m, v = seen[0]
                with pytest.raises(hgsmi.BufferReleased):
                    m.data
                with pytest.raises(ValueError):
                    v[0]
                # The blocking methods are not there on the loop: AsyncGuest is
                # no Guest and AsyncHost no Host (issue #12).
                for blocking in ("poll", "completions", "wait"):
                    assert not hasattr(g, blocking)
                assert not hasattr(host, "poll")
                assert await g.query_conf(3) == 1024
                assert g.stats()["guest_heap"]["used"] == 0

    asyncio.run(asyncio.wait_for(main(), 20))


def test_same_loop_both_backends_and_failures(name, runtime_dir, no_leaks):
    async def boom(msg):
        await asyncio.sleep(0)
        raise RuntimeError("driver bug")

    async def main(doorbell, inst):
        async with AsyncHost(inst, size=4 << 20, doorbell=doorbell) as host:
            host.register(CH_AREV, boom)
            host.register(CH_REV, lambda m: bytes(m.capacity + 1))
            async with AsyncGuest.connect(inst) as g:
                with pytest.raises(hgsmi.RemoteError):
                    await g.call(CH_AREV, 0, b"x")
                with pytest.raises(hgsmi.ProtocolError):
                    await g.call(CH_REV, 0, b"x")  # reply larger than the buffer
                with pytest.raises(hgsmi.ChannelNotRegistered):
                    await g.call(0x77, 0, b"x")
                with pytest.raises(hgsmi.MessageTooLarge):
                    await g.call(CH_AREV, 0, bytes(8 << 20))
                with g.alloc(CH_AREV, 0, 1) as buf:
                    with pytest.raises(hgsmi.RemoteError):
                        await g.call_buffer(buf)
                await g.send_many(CH_AREV, 0, [b"y"] * 300)  # fire and forget
                deadline = time.monotonic() + 5
                while g.stats()["inflight"] and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
                st = g.stats()
                assert st["inflight"] == 0 and st["remote_errors"] == 300
                assert st["guest_heap"]["used"] == 0
            assert host.handler_errors == 302

    asyncio.run(asyncio.wait_for(main("eventfd", name), 20))
    asyncio.run(asyncio.wait_for(main("semaphore", name), 20))


async def _until(cond, timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``cond()`` from the loop until true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_async_guest_holds_an_ack_while_a_view_lives(name, runtime_dir, no_leaks):
    """The host reuses a host buffer once acked: a handler's kept view delays the ack."""
    seen = []  # (message, its own view, a slice that outlives the handler)

    def keep(m):
        seen.append((m, m.data, m.data[0:4]))

    async def akeep(m):
        await asyncio.sleep(0)
        seen.append((m, m.data, m.data[4:8]))

    async def main():
        async with AsyncHost(name, size=4 << 20) as host:
            async with AsyncGuest.connect(name) as g:
                g.register(CH_PUSH, keep)
                g.register(CH_PUSH + 1, akeep)
                conn = host.guests[0]
                base = conn.stats()["host_heap"]["used"]
                for ch, part in ((CH_PUSH, b"abcd"), (CH_PUSH + 1, b"efgh")):
                    await host.post(ch, 0, b"abcdefgh")
                    await _until(lambda: seen, what="the handler")
                    await asyncio.sleep(0.1)  # several rounds and held-retries
                    assert conn.stats()["inflight_host"] == 1  # not acked: a view lives
                    msg, view, kept = seen.pop()
                    assert bytes(kept) == part  # still the host's bytes, not reused
                    del kept  # let go: the loop notices within a few ms
                    await _until(lambda: conn.stats()["inflight_host"] == 0, what="the ack")
                    with pytest.raises(hgsmi.BufferReleased):
                        msg.data
                    with pytest.raises(ValueError):
                        view[0]  # the view itself died with the ack
                    assert conn.stats()["host_heap"]["used"] == base
                # Several held at once, released in reverse order: all acked.
                for i in range(5):
                    await host.post(CH_PUSH, i, b"%8d" % i)
                await _until(lambda: len(seen) == 5, what="five commands")
                await asyncio.sleep(0.05)
                assert conn.stats()["inflight_host"] == 5
                while seen:
                    n = len(seen)
                    seen.pop()
                    await _until(lambda n=n: conn.stats()["inflight_host"] == n - 1,
                                 what="an ack")
                assert conn.stats()["host_heap"]["used"] == base
            assert host.handler_errors == 0

    asyncio.run(asyncio.wait_for(main(), 20))


@pytest.mark.parametrize("doorbell", BACKENDS)
def test_async_host_holds_a_completion_while_a_view_lives(name, runtime_dir, no_leaks, doorbell):
    """A guest buffer is reused once completed: a handler's kept view delays it."""
    seen = []

    def keep(m):
        seen.append((m, m.data, m.data[0:2]))  # results left in place

    async def akeep(m):
        await asyncio.sleep(0)
        seen.append((m, m.data, m.data[0:2]))

    async def main():
        async with AsyncHost(name, size=4 << 20, doorbell=doorbell) as host:
            host.register(CH_REV, keep)
            host.register(CH_AREV, akeep)
            async with AsyncGuest.connect(name) as g:
                conn = host.guests[0]
                base = g.stats()["guest_heap"]["used"]
                for ch in (CH_REV, CH_AREV):
                    call = asyncio.ensure_future(g.call(ch, 0, b"hi there"))
                    with g.alloc(ch, 0, 4) as buf:  # zero copy too
                        buf.data[:] = b"zero"
                        fut = g.submit(buf)
                        await _until(lambda: len(seen) == 2, what="both handlers")
                        done, _ = await asyncio.wait([call, fut], timeout=0.2)
                        assert not done  # neither completed: their views live
                        assert conn.stats()["held_completions"] == 2
                        assert sorted(bytes(k) for _, _, k in seen) == [b"hi", b"ze"]
                        views = [(m, v) for m, v, _ in seen]
                        seen.clear()  # drops the slices: both complete
                        assert await asyncio.wait_for(call, 5) == b"hi there"
                        assert (await asyncio.wait_for(fut, 5)) is buf
                        assert bytes(buf.reply) == b"zero"
                    assert conn.stats()["held_completions"] == 0
                    for m, v in views:
                        with pytest.raises(hgsmi.BufferReleased):
                            m.data
                        with pytest.raises(ValueError):
                            v[0]
                    assert g.stats()["guest_heap"]["used"] == base
                    assert g.stats()["inflight"] == 0
            assert host.handler_errors == 0

    asyncio.run(asyncio.wait_for(main(), 20))


def test_a_silent_client_does_not_stall_the_async_host(name, runtime_dir, no_leaks):
    """A client that connects and says nothing must not hold up an attached guest."""
    worst = []  # the slowest call while the silent client is connected
    stop, silent = threading.Event(), threading.Event()
    failed = []

    def caller():  # an ordinary guest in its own thread, timing its calls
        try:
            with hgsmi.Guest(name) as g:
                while not stop.is_set():
                    t0 = time.monotonic()
                    assert g.call(CH_REV, 0, b"ping", timeout=5) == b"gnip"
                    if silent.is_set():
                        worst.append(time.monotonic() - t0)
                    time.sleep(0.005)
        except BaseException as e:  # noqa: B036 - reported by the test
            failed.append(e)

    async def main():
        async with AsyncHost(name, size=4 << 20) as host:
            host.register(CH_REV, lambda m: bytes(m.data)[::-1])
            t = threading.Thread(target=caller, name="hgsmi-test-caller")
            t.start()
            try:
                await host.wait_for_guests(1, timeout=10)
                await asyncio.sleep(0.1)
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as quiet:
                    quiet.setblocking(False)
                    quiet.connect(host.socket_path)  # a Unix connect completes at once
                    silent.set()
                    await asyncio.sleep(1.5)  # longer than the C side's hello timeout
                    silent.clear()
            finally:
                stop.set()
                await asyncio.get_running_loop().run_in_executor(None, t.join, 10)
            assert not failed, failed
            assert worst, "no call completed while the silent client was connected"
            # The stall to catch is a whole second; 0.3 s leaves room for a busy machine.
            assert max(worst) < 0.3, f"a call took {max(worst):.3f} s"

    asyncio.run(asyncio.wait_for(main(), 30))


def test_handlers_given_at_attach_miss_no_early_command(name, runtime_dir, no_leaks):
    """A host may post the moment a guest attaches: handlers= are in place first."""
    got = []
    with hgsmi.Host(name, size=4 << 20) as host:
        stop = threading.Event()

        def pump():  # post 100 commands as soon as the guest is there
            while not host.guests and not stop.is_set():
                host.poll(0.01)
            for i in range(100):
                host.post(CH_PUSH, i, b"%d" % i, timeout=5)
            while not stop.is_set():
                host.poll(0.01)

        t = threading.Thread(target=pump, daemon=True)
        t.start()

        async def main():
            async with AsyncGuest.connect(name, handlers={CH_PUSH: lambda m: got.append(m.info)}):
                await _until(lambda: len(got) == 100, what="100 commands")

        try:
            asyncio.run(asyncio.wait_for(main(), 20))
        finally:
            stop.set()
            t.join(5)
        assert got == list(range(100)) and host.handler_errors == 0


def test_async_host_post_many_waits_for_room(name, runtime_dir, no_leaks):
    """5,000 host commands in batches through a 16-entry FIFO: all arrive, in order."""
    got = []

    async def main():
        async with AsyncHost(name, size=4 << 20, ring_entries=16) as host:
            handlers = {CH_PUSH: lambda m: got.append(bytes(m.data))}
            async with AsyncGuest.connect(name, handlers=handlers):
                await host.wait_for_guests(1)
                base = host.guests[0].stats()["host_heap"]["used"]
                for start in range(0, 5000, 500):
                    assert await host.post_many(CH_PUSH, 0, [b"%d" % i for i in range(500)]) == 500
                    await _until(lambda start=start: len(got) == start + 500, what="a batch")
                await _until(lambda: host.guests[0].stats()["host_heap"]["used"] == base,
                             what="the acks")

    asyncio.run(asyncio.wait_for(main(), 30))
    assert got == [b"%d" % i for i in range(500)] * 10


def test_both_faces_share_the_call_checks(name, runtime_dir, no_leaks):
    """AsyncGuest is no Guest: both faces compose one GuestCore, so their calls refuse
    the same arguments with the same errors, before anything reaches the host."""
    assert not issubclass(AsyncGuest, hgsmi.Guest)

    async def main():
        async with AsyncHost(name, size=1 << 20) as host:
            host.register(CH_REV, lambda m: bytes(m.data)[::-1])
            async with AsyncGuest.connect(name) as ag:
                loop = asyncio.get_running_loop()
                with await loop.run_in_executor(None, hgsmi.Guest, name) as g:
                    segment = hgsmi._native.lib.hgsmi_guest_size(ag._g)
                    for args, exc in [((CH_REV, 0, b"x", segment + 1), hgsmi.MessageTooLarge),
                                      ((0, 0, b"x"), ValueError),
                                      ((CH_REV, 0, b"x", "8"), TypeError),
                                      ((CH_REV, 0, "text"), TypeError)]:
                        with pytest.raises(exc) as sync_err:
                            g.call(*args)
                        with pytest.raises(exc) as async_err:
                            await ag.call(*args)
                        assert str(async_err.value) == str(sync_err.value)
                    assert await ag.call(CH_REV, 0, b"abc") == b"cba"

    asyncio.run(asyncio.wait_for(main(), 30))
