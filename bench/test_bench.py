# SPDX-License-Identifier: MIT
"""
The pytest-benchmark suite: ``make bench`` (writes bench/report.json).

Each benchmark is one short measurement (a stream or an rtt run, host and
guest in separate processes), repeated ``rounds`` times by pytest-benchmark.
The wall time pytest-benchmark reports includes process start-up; the
figures that matter (MB/s, msgs/s, p50/p99 µs of the median round) are in
each benchmark's ``extra_info`` and thus in the JSON report. For the full
side-by-side comparison with ratios, run ``hgsmi bench``.
"""
from __future__ import annotations

import os
import statistics

import pytest

from hgsmi.bench.transports import baselines
from hgsmi.bench.transports.hgsmi_async import HgsmiAsync
from hgsmi.bench.transports.hgsmi_c import HgsmiC
from hgsmi.bench.transports.hgsmi_transports import hgsmi_transports

pytest.importorskip("pytest_benchmark")

SECONDS = float(os.environ.get("HGSMI_BENCH_SECONDS", "0.2"))
ROUNDS = int(os.environ.get("HGSMI_BENCH_ROUNDS", "3"))
_CPUS = sorted(os.sched_getaffinity(0))
PIN = (_CPUS[0], _CPUS[-1])
SPIN_US = 50

#: hgsmi streams with the adaptive spin, as in `hgsmi bench` (the ceiling busy-polls)
TRANSPORTS = {t.name: t for t in baselines() + hgsmi_transports(SPIN_US) + [HgsmiC(SPIN_US),
                                                                             HgsmiAsync(SPIN_US)]}
STREAM_CASES = [(name, d, size)
                for name, t in TRANSPORTS.items()
                for d in ("g2h", "h2g")
                for size in (64, 4096, 65536, 1 << 20)
                if t.supports(d)]
RTT_CASES = [(name, 0) for name, t in TRANSPORTS.items()
             if t.supports("rtt")]
RTT_CASES += [(t.name, SPIN_US) for t in hgsmi_transports(SPIN_US) + [HgsmiC(), HgsmiAsync()]
              if t.supports("rtt")]


@pytest.mark.parametrize("name,direction,size", STREAM_CASES,
                         ids=[f"{n}-{d}-{s}" for n, d, s in STREAM_CASES])
def test_stream(benchmark, name, direction, size):
    t = TRANSPORTS[name]
    if why := t.unavailable():  # a C program with no compiler or libhgsmi here
        pytest.skip(why)
    rates = []

    def once():
        r = t.stream(direction, size, seconds=SECONDS, cpus=PIN, timeout=60)
        assert r["msgs"] > 0 and r["seconds"] > 0
        rates.append(r["msgs"] / r["seconds"])

    benchmark.group = f"{direction}-stream {size} B"
    benchmark.pedantic(once, rounds=ROUNDS, iterations=1)
    mps = statistics.median(rates)
    benchmark.extra_info.update(transport=name, workload=f"{direction}-stream", size=size,
                                msgs_per_s=mps, mb_per_s=mps * size / 1e6)


@pytest.mark.parametrize("name,spin", RTT_CASES, ids=[f"{n}-spin{s}" for n, s in RTT_CASES])
def test_call_rtt(benchmark, name, spin):
    t = type(TRANSPORTS[name])(spin) if hasattr(TRANSPORTS[name], "spin_us") else TRANSPORTS[name]
    if why := t.unavailable():
        pytest.skip(why)
    p50, p99 = [], []

    def once():
        lat = sorted(t.rtt(64, 1000, cpus=PIN, timeout=60))
        p50.append(lat[len(lat) // 2] * 1e6)
        p99.append(lat[int(len(lat) * 0.99) - 1] * 1e6)

    benchmark.group = "call-rtt 64 B"
    benchmark.pedantic(once, rounds=ROUNDS, iterations=1)
    benchmark.extra_info.update(transport=name, workload="call-rtt", size=64, spin_us=spin,
                                p50_us=statistics.median(p50), p99_us=statistics.median(p99))


def test_call_concurrent(benchmark):
    """hgsmi-async: 256 coroutines with a 64 B call in flight each (calls/s)."""
    t = HgsmiAsync(0)
    rates = []

    def once():
        r = t.concurrent(64, 256, seconds=SECONDS, cpus=PIN, timeout=60)
        assert r["msgs"] > 0 and r["seconds"] > 0
        rates.append(r["msgs"] / r["seconds"])

    benchmark.group = "call-concurrent 64 B"
    benchmark.pedantic(once, rounds=ROUNDS, iterations=1)
    mps = statistics.median(rates)
    benchmark.extra_info.update(transport=t.name, workload="call-concurrent", size=64,
                                inflight=256, msgs_per_s=mps, mb_per_s=mps * 64 / 1e6)


def test_idle_cpu(benchmark):
    t = hgsmi_transports(SPIN_US)[0]
    out = []
    benchmark.group = "idle-cpu"
    benchmark.pedantic(lambda: out.append(t.idle_cpu(5.0, cpus=PIN)), rounds=1, iterations=1)
    benchmark.extra_info.update(workload="idle-cpu", seconds=5.0, spin_us=SPIN_US,
                                host_cpu_s=out[0]["host"], guest_cpu_s=out[0]["guest"])
    assert out[0]["host"] < 0.05 and out[0]["guest"] < 0.05, "an idle peer busy-polls"
