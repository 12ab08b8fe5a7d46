"""Per-guest host limits, and a host that no stalled client can hold up.

- a doorbell flood from one guest (a second process writing its eventfd in a
  tight loop) is throttled to max_doorbells_per_s: counted, and a good guest
  next to it completes verified calls with no errors in bounded time;
- the host takes no more than max_inflight guest buffers before completing
  some: the rest wait in the guest's own ring;
- a buffer over max_message fails with MessageTooLarge and is counted;
- silent or half-hello connections wait in the epoll set, not in accept: a
  good guest attaches next to five of them at once, and they are dropped at
  their deadline with no fd left behind;
- Guest.wait honours its timeout even when the IRQ line keeps being raised.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import hgsmi
from hgsmi._native import ffi, lib
from hgsmi._paths import socket_path

from support.footprint import fd_count
from support.processes import readline, reap
from support.pump import Pump

ROOT = Path(__file__).parent.parent
FLOOD = Path(__file__).parent / "peers" / "doorbell_flood.py"
CH_ECHO = 0x20


def conn_stats(host: hgsmi.Host, guest_id: int) -> dict:
    return next(c.stats() for c in host.guests if c.id == guest_id)


@pytest.mark.timeout(60)
def test_doorbell_flood_is_throttled_and_others_served(name, runtime_dir, no_leaks):
    with hgsmi.Host(name, size=1 << 20, max_doorbells_per_s=2000) as host:
        host.register(CH_ECHO, lambda m: bytes(m.data)[::-1])
        pump = Pump(host)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        p = subprocess.Popen([sys.executable, str(FLOOD), host.socket_path, "3"],
                             stdout=subprocess.PIPE, text=True, env=env)
        try:
            assert readline(p) == "ready"
            time.sleep(0.3)  # the flood is on
            with hgsmi.Guest(name) as g:
                worst, t0 = 0.0, time.monotonic()
                for i in range(300):
                    data = os.urandom(64) + i.to_bytes(4, "little")
                    t = time.monotonic()
                    assert g.call(CH_ECHO, 1, data, timeout=5) == data[::-1]
                    worst = max(worst, time.monotonic() - t)
                    time.sleep(0.001)  # a well-behaved guest: < 1000 doorbells/s
                took = time.monotonic() - t0
                st = g.stats()
                good = conn_stats(host, st["guest_id"])
            flooder = next(c.stats() for c in host.guests if c.id != st["guest_id"])
            assert p.wait(10) == 0
            rings = int(p.stdout.readline())
        finally:
            reap(p)
            pump.stop()
    assert st["errors"] == 0 and st["remote_errors"] == 0
    assert good["doorbells_throttled"] == 0, good
    assert good["msgs_in"] >= 300
    assert took < 10.0 and worst < 0.5, f"good guest: {took:.2f} s, worst call {worst:.3f} s"
    assert flooder["doorbells_throttled"] > 0, flooder
    # The flooder's wake-ups are held near the rate, whatever it wrote.
    assert flooder["doorbells"] < 2000 * 3 * 1.5 + 200, (flooder["doorbells"], rings)
    print(f"flood: {rings} writes -> {flooder['doorbells']} wake-ups, "
          f"{flooder['doorbells_throttled']} throttled; good: 300 calls in {took:.2f} s, "
          f"worst {worst * 1e3:.1f} ms")


@pytest.mark.timeout(30)
def test_host_holds_no_more_than_max_inflight(name, runtime_dir, no_leaks):
    kept: list[memoryview] = []
    handled = [0]

    def keep(msg):  # a view that outlives the handler holds the completion
        kept.append(msg.data[:1])
        handled[0] += 1

    with hgsmi.Host(name, size=1 << 20, max_inflight=4) as host:
        host.register(CH_ECHO, keep)
        pump = Pump(host)
        try:
            with hgsmi.Guest(name) as g:
                assert g.query_conf(5) == 4  # CONF_MAX_INFLIGHT
                assert g.send_many(CH_ECHO, 0, [b"m%d" % i for i in range(32)], timeout=5) == 32
                deadline = time.monotonic() + 5
                while len(kept) < 4 and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.2)  # give the host every chance to take more
                st = host.guests[0].stats()
                assert len(kept) == 4, len(kept)
                assert st["inflight_guest"] == 4 and st["inflight_guest_peak"] == 4, st
                assert st["submit_depth"] == 28, st  # the rest wait in the guest's ring
                assert g.stats()["inflight"] == 32
                while handled[0] < 32 and time.monotonic() < deadline + 5:
                    kept.clear()  # completes the held ones: room for more
                    time.sleep(0.02)
                assert handled[0] == 32
                kept.clear()
                deadline = time.monotonic() + 5
                while g.stats()["inflight"] and time.monotonic() < deadline:
                    g.wait(0.05)
                assert g.stats()["inflight"] == 0
                st = host.guests[0].stats()
                assert st["msgs_in"] == 33 and st["inflight_guest_peak"] == 4, st  # + query_conf
        finally:
            pump.stop()


@pytest.mark.timeout(30)
def test_message_over_max_message_fails(name, runtime_dir, no_leaks):
    with hgsmi.Host(name, size=1 << 20, max_message=1024) as host:
        host.register(CH_ECHO, lambda m: None)
        pump = Pump(host)
        try:
            with hgsmi.Guest(name) as g:
                assert g.query_conf(2) == 1024  # CONF_MAX_MESSAGE
                assert g.call(CH_ECHO, 0, bytes(1024), timeout=5) == bytes(1024)
                with pytest.raises(hgsmi.MessageTooLarge):
                    g.call(CH_ECHO, 0, bytes(1025), timeout=5)
                assert g.call(CH_ECHO, 0, b"still", timeout=5) == b"still"
                st = host.guests[0].stats()
        finally:
            pump.stop()
    assert st["errors_size"] == 1 and st["msgs_in"] == 4, st  # with query_conf


@pytest.mark.timeout(30)
@pytest.mark.parametrize("payload", [b"", b"HGSC\x01"], ids=["silent", "partial-hello"])
def test_stalled_clients_do_not_delay_a_guest(name, runtime_dir, no_leaks, payload):
    with hgsmi.Host(name, size=1 << 20) as host:
        host.register(CH_ECHO, lambda m: None)
        pump = Pump(host)
        stalled = []
        try:
            fds0 = fd_count()
            for _ in range(5):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(5)
                s.connect(host.socket_path)
                s.sendall(payload)
                stalled.append(s)
            time.sleep(0.05)  # the host has taken them in
            t0 = time.monotonic()
            with hgsmi.Guest(name, connect_timeout=4) as g:
                assert g.call(CH_ECHO, 0, b"next", timeout=5) == b"next"
                served = time.monotonic() - t0
            for s in stalled:
                assert s.recv(64) == b""  # dropped at the deadline, no welcome
            dropped = time.monotonic() - t0
            deadline = time.monotonic() + 2
            while host.refused < 5 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert host.refused == 5
            for s in stalled:
                s.close()
            stalled.clear()
            time.sleep(0.1)
            assert fd_count() == fds0, "a dropped connection left an fd"
        finally:
            for s in stalled:
                s.close()
            pump.stop()
    assert served < 0.2, f"the good guest waited {served:.3f} s"
    assert 0.5 < dropped < 2.0, f"stalled clients dropped after {dropped:.2f} s"


@pytest.mark.timeout(20)
def test_wait_honours_timeout_under_a_raised_irq(name, runtime_dir, no_leaks):
    """A host that keeps the IRQ line up (here: the flag rewritten in a loop,
    as a hostile host could) must not keep Guest.wait past its timeout."""
    with hgsmi.Host(name, size=1 << 20) as host:
        pump = Pump(host)
        try:
            with hgsmi.Guest(name) as g:
                hdr = ffi.cast("struct hgsmi_segment_header *", g._base)
                flags = ffi.cast("uint32_t *", ffi.addressof(hdr.host_flags, "value"))
                stop = threading.Event()

                def raise_irq():
                    while not stop.is_set():
                        flags[0] |= lib.HGSMI_HOSTFLAGS_IRQ

                t = threading.Thread(target=raise_irq, daemon=True)
                t.start()
                try:
                    for timeout in (0.0, 0.05, 0.2):
                        t0 = time.monotonic()
                        g.wait(timeout)
                        took = time.monotonic() - t0
                        assert took < timeout + 0.15, f"wait({timeout}) took {took:.3f} s"
                finally:
                    stop.set()
                    t.join(5)
        finally:
            pump.stop()


FD_STARVED_HOST = r"""
import os, resource, sys, time
import hgsmi
name = sys.argv[1]
host = hgsmi.Host(name, size=1 << 20)
host.register(0x20, lambda m: None)
used = len(os.listdir("/proc/self/fd"))
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (used + 12, hard))
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    host.poll(0.05)
cpu = resource.getrusage(resource.RUSAGE_SELF)
print(cpu.ru_utime + cpu.ru_stime, host.refused, flush=True)
host.close()
"""


def test_out_of_fds_the_host_pauses_accepting_and_serves_on(name, runtime_dir, no_leaks):
    """accept4 failing with EMFILE leaves the client in the backlog: the host
    must neither spin on its listen fd nor stop serving attached guests."""
    p = subprocess.Popen([sys.executable, "-c", FD_STARVED_HOST, name, "3"],
                         stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent)))
    socks = []
    try:
        assert readline(p) == "ready"
        with hgsmi.Guest(name) as g:  # takes 3 of the 12 spare fds (socket, memfd, eventfds)
            path = socket_path(name)
            for _ in range(40):  # far more than the fds left: accept4 runs out
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(path)
                socks.append(s)
            t0 = time.monotonic()
            for i in range(100):
                assert g.call(0x20, i, b"still served", timeout=5) == b"still served"
            assert time.monotonic() - t0 < 3
        cpu, refused = readline(p, 15).split()
        # 3 s of a host that sleeps in epoll: well under a second of CPU
        # (spinning on the level-triggered listen fd would burn about 3 s).
        assert float(cpu) < 1.0, cpu
        assert int(refused) > 0
        assert p.wait(10) == 0
    finally:
        for s in socks:
            s.close()
        reap(p)
