"""Fair admission: one process cannot keep other guests out of a host.

A hostile peer (tests/peers/admission_flood.py, a process of its own) floods
the control socket with silent, garbage, half-hello or held valid
connections.  Next to it, a good guest (this process: another pid) must
attach within 1 s and make verified calls, and the host says which limit it
hit in each refusal and counts them.  The same good guest is measured before
the flood in the same run, for the figures.
"""
from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

import hgsmi
import hgsmi.aio

from support.footprint import fd_count, mem_kib
from support.processes import readline, reap
from support.pump import Pump

ROOT = Path(__file__).parent.parent
FLOOD = Path(__file__).parent / "peers" / "admission_flood.py"
CH_ECHO = 0x20
CALLS = 200


def good_guest(name: str) -> dict[str, float]:
    """Attach, make CALLS verified echo calls, detach: the figures."""
    t = time.monotonic()
    with hgsmi.Guest(name, connect_timeout=2.0) as g:
        attach = time.monotonic() - t
        lat = []
        for i in range(CALLS):
            data = os.urandom(48) + i.to_bytes(4, "little")
            t = time.monotonic()
            assert g.call(CH_ECHO, 1, data, timeout=5) == data[::-1]
            lat.append(time.monotonic() - t)
        st = g.stats()
    lat.sort()
    return {"attach": attach, "p99": lat[int(len(lat) * 0.99) - 1],
            "errors": st["errors"] + st["remote_errors"]}


def host_cpu() -> float:
    """CPU seconds of this process but its main thread (the good guest's):
    the host's serving thread."""
    return time.process_time() - time.thread_time()


T = TypeVar("T")


def during_flood(host: hgsmi.Host, args: list[str],
                 during: Callable[[], T]) -> tuple[T, dict[str, Any]]:
    """Run the flooder (``peers/admission_flood.py`` with ``args``) against
    ``host``; once it is flooding, call ``during()``; return its result and
    the flooder's report."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, str(FLOOD), host.socket_path, *args],
                         stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert readline(p) == "ready"
        time.sleep(0.3)  # the flood is on
        got = during()
        flood: dict[str, Any] = json.loads(readline(p, 30))
        assert p.wait(10) == 0
    finally:
        reap(p)
    return got, flood


# mode -> (the refusal the flooder must have been told, the host counter for it)
EXPECT = {
    "silent": (-errno.ETOOMANYREFS, "refused_pending_per_pid"),
    "garbage": (-errno.EPROTO, "refused_protocol"),
    "half": (-errno.ETOOMANYREFS, "refused_pending_per_pid"),
    "held": (-errno.EDQUOT, "refused_guests_per_pid"),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("mode", list(EXPECT))
def test_a_flooding_process_does_not_keep_a_good_guest_out(name, runtime_dir, no_leaks, mode):
    with hgsmi.Host(name, size=1 << 20) as host:
        host.register(CH_ECHO, lambda m: bytes(m.data)[::-1])
        pump = Pump(host)
        try:
            base = good_guest(name)
            fds0, rss0 = fd_count(), mem_kib()

            def measured() -> tuple[dict[str, Any], float, int, int]:
                cpu0, t0 = host_cpu(), time.monotonic()
                under = good_guest(name)
                cpu = (host_cpu() - cpu0) / (time.monotonic() - t0)
                return under, cpu, fd_count(), mem_kib()  # the flood still on

            (under, cpu, fds1, rss1), flood = during_flood(host, [mode, "3"], measured)
            adm = host.stats()["admission"]
        finally:
            pump.stop()
    figures = (f"{mode}: attach {base['attach'] * 1e3:.1f} -> {under['attach'] * 1e3:.1f} ms, "
               f"p99 call {base['p99'] * 1e3:.2f} -> {under['p99'] * 1e3:.2f} ms, errors "
               f"{under['errors']}; host fds +{fds1 - fds0}, RSS +{rss1 - rss0} KiB, "
               f"host CPU {cpu * 100:.0f}%; flood {flood}; host {adm}")
    print(figures)
    assert under["attach"] < 1.0, figures
    assert under["errors"] == 0 and base["errors"] == 0, figures
    assert under["p99"] < max(0.25, 20 * base["p99"]), figures
    status, counter = EXPECT[mode]
    assert flood["statuses"].get(str(status), 0) > 0, figures  # told which limit
    assert adm[counter] > 0, figures
    if mode == "held":
        assert flood["held"] == adm["max_guests_per_pid"], figures
    assert fds1 - fds0 < 100, figures  # the flood costs the host a bounded number of fds


async def _aio_attach(name: str) -> None:
    async with hgsmi.aio.AsyncGuest.connect(name):
        pass


@pytest.mark.timeout(30)
def test_refusals_raise_distinct_exceptions(name, runtime_dir, no_leaks):
    """Per-process guest cap and the host's maximum: two exceptions, two texts."""
    with hgsmi.Host(name, size=1 << 20, max_guests=3, max_guests_per_pid=2) as host:
        pump = Pump(host)
        try:
            with hgsmi.Guest(name), hgsmi.Guest(name):
                with pytest.raises(hgsmi.TooManyGuests) as e:
                    hgsmi.Guest(name)
                assert e.value.errno == errno.EDQUOT and "this process" in str(e.value)
                assert isinstance(e.value, hgsmi.Refused)
                with pytest.raises(hgsmi.TooManyGuests):  # the same through asyncio
                    asyncio.run(_aio_attach(name))
                # Another process takes the host's last slot, then is refused
                # for the host's maximum, which is not the per-process cap.
                code = ("import hgsmi, sys\n"
                        f"g = hgsmi.Guest({name!r})\n"
                        "try:\n"
                        f"    hgsmi.Guest({name!r})\n"
                        "except hgsmi.HostFull as e:\n"
                        "    print(type(e).__name__, e.errno, e.strerror)\n")
                out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                     text=True, timeout=20,
                                     env=dict(os.environ, PYTHONPATH=str(ROOT)))
                assert out.stdout.startswith(f"HostFull {errno.EUSERS}"), out
                assert "maximum number of guests" in out.stdout, out
            adm = host.stats()["admission"]
        finally:
            pump.stop()
    assert adm["refused_guests_per_pid"] == 2 and adm["refused_host_full"] == 1, adm


@pytest.mark.timeout(60)
def test_a_full_pending_table_evicts_the_process_holding_most(name, runtime_dir, no_leaks):
    """With its per-process cap lifted, one process fills all 256 handshake
    slots: a newcomer still gets in, and the flood's oldest pays for it."""
    with hgsmi.Host(name, size=1 << 20, max_pending_per_pid=1000) as host:
        host.register(CH_ECHO, lambda m: bytes(m.data)[::-1])
        pump = Pump(host)
        try:
            (full, under), flood = during_flood(
                host, ["silent", "2", "300"],
                lambda: (host.stats()["admission"], good_guest(name)))
            adm = host.stats()["admission"]
        finally:
            pump.stop()
    assert full["pending_peak"] == 256, full
    assert under["attach"] < 1.0 and under["errors"] == 0, (under, adm)
    assert adm["evicted_pending"] > 0, adm
    assert flood["statuses"].get(str(-errno.ETOOMANYREFS), 0) > 0, flood
