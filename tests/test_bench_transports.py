# SPDX-License-Identifier: MIT
"""The benchmark's hgsmi-c and hgsmi-async transports run and report sane,
well-formed figures, and ``hgsmi bench``'s rows get their ratios.

Benchmarks are measured, not asserted: nothing here checks a speed. Each
run is a few thousand messages, so the file takes a few seconds.
"""
from __future__ import annotations

import os
import time

import pytest

from hgsmi.bench import runner as bench
from hgsmi.bench.transports import thirdparty
from hgsmi.bench.transports.hgsmi_async import HgsmiAsync
from hgsmi.bench.transports.hgsmi_c import HgsmiC

pytestmark = pytest.mark.multiprocess
CPUS = sorted(os.sched_getaffinity(0))
PIN = (CPUS[0], CPUS[-1])


@pytest.mark.parametrize("direction", ["g2h", "h2g"])
@pytest.mark.parametrize("size", [64, 65536])
def test_hgsmi_c_stream_counts_every_message(direction, size):
    r = HgsmiC(spin_us=20).stream(direction, size, count=3000, seconds=None, cpus=PIN,
                                  timeout=30)
    assert r["msgs"] == 2999 and r["bytes"] == 2999 * size and r["seconds"] > 0


@pytest.mark.parametrize("spin", [0, 50])
def test_hgsmi_c_rtt_gives_one_latency_per_call(spin):
    lat = HgsmiC(spin).rtt(64, 200, warmup=10, cpus=PIN, timeout=30)
    assert len(lat) == 200 and all(0 < x < 30 for x in lat)


def test_hgsmi_c_fails_loudly():
    with pytest.raises(RuntimeError, match="size must be"):
        HgsmiC().stream("g2h", 32 << 20, count=10, seconds=None, timeout=30)


@pytest.mark.parametrize("direction", ["g2h", "h2g"])
def test_hgsmi_async_stream_counts_every_message(direction):
    r = HgsmiAsync().stream(direction, 4096, count=2000, seconds=None, cpus=PIN, timeout=30)
    assert r["msgs"] == 1999 and r["seconds"] > 0


def test_hgsmi_async_rtt_and_concurrent_calls():
    t = HgsmiAsync()
    assert len(t.rtt(64, 100, warmup=5, cpus=PIN, timeout=30)) == 100
    r = t.concurrent(64, 32, count=1000, seconds=5.0, cpus=PIN, timeout=30)
    # the workers stop at the count, each after its call in flight
    assert 1000 <= r["msgs"] < 1000 + 32 and r["seconds"] > 0


def test_ratios_and_table_cover_the_new_rows():
    rows = [
        {"transport": "c-ceiling", "workload": "g2h-stream", "size": 64,
         "msgs_per_s": 4e7, "mb_per_s": 2560.0},
        {"transport": "hgcm", "workload": "g2h-stream", "size": 64,
         "msgs_per_s": 1e4, "mb_per_s": 0.64},
        {"transport": "hgsmi-c", "workload": "g2h-stream", "size": 64,
         "msgs_per_s": 1e7, "mb_per_s": 640.0, "spin_us": 50},
        {"transport": "c-ceiling", "workload": "call-rtt", "size": 64, "p50_us": 50.0,
         "p99_us": 90.0},
        {"transport": "hgcm", "workload": "call-rtt", "size": 64, "p50_us": 100.0,
         "p99_us": 200.0},
        {"transport": "hgsmi-c", "workload": "call-rtt", "size": 64, "p50_us": 0.5,
         "p99_us": 0.7, "spin_us": 50},
        {"transport": "hgsmi-async", "workload": "call-concurrent", "size": 64,
         "msgs_per_s": 1e5, "mb_per_s": 6.4, "inflight": 256},
    ]
    bench.add_ratios(rows)
    assert rows[2]["pct_c_ceiling"] == 25.0 and rows[2]["x_hgcm"] == 1000.0
    assert rows[5]["x_hgcm"] == 200.0 and rows[5]["pct_c_ceiling"] == 10000.0
    text = bench.format_matrix({"machine": {}, "results": rows})
    assert "hgsmi-c" in text and "call-concurrent" in text


# -- the peers written by others (hgsmi/bench/transports/thirdparty.py) -------
PEERS = {t.name: t for t in (thirdparty.Iceoryx2(), thirdparty.Iceoryx2Event(),
                             thirdparty.FasterFifo(), thirdparty.Pyzmq())}


def _peer(name):
    why = thirdparty.available().get(name)
    if why:
        pytest.skip(why)
    return PEERS[name]


@pytest.mark.parametrize("name", sorted(PEERS))
@pytest.mark.parametrize("direction", ["g2h", "h2g"])
@pytest.mark.parametrize("size", [64, 65536])
def test_peer_stream_loses_nothing(name, direction, size):
    """Every message arrives, checked, with the end marker last: a peer that
    dropped or reordered would fail here rather than look fast."""
    r = _peer(name).stream(direction, size, count=1000, seconds=None, cpus=PIN, timeout=60)
    assert r["msgs"] == 999 and r["bytes"] == 999 * size and r["seconds"] > 0


@pytest.mark.parametrize("name", sorted(n for n, t in PEERS.items() if t.supports("rtt")))
def test_peer_rtt_gives_one_latency_per_call(name):
    lat = _peer(name).rtt(64, 100, warmup=5, cpus=PIN, timeout=60)
    assert len(lat) == 100 and all(0 < x < 30 for x in lat)


def test_missing_peers_are_named_with_the_fix():
    for why in thirdparty.available().values():
        assert "pip install 'hgsmi[bench]'" in why


def test_runs_are_interleaved_so_drift_hits_every_figure_alike():
    """Each figure's runs are taken round-robin with the figures it is compared
    with (first runs of all, then second runs...), a failed run is left out and
    logged, and a job with fewer runs stops early."""
    import argparse

    order: list[str] = []

    def job(key: str, fail_on: int = -1):
        def run():
            order.append(key)
            if order.count(key) == fail_on:
                raise RuntimeError(f"{key} broke\nlast line")
            return len(order)
        return run

    args = argparse.Namespace(silent=True)
    got = bench._interleaved([("a", 3, job("a")), ("b", 2, job("b", fail_on=2)),
                              ("c", 3, job("c"))], "g2h-stream", args)
    assert order == ["a", "b", "c", "a", "b", "c", "a", "c"]
    assert got == {"a": [1, 4, 7], "b": [2], "c": [3, 6, 8]}


def test_loaded_rows_run_under_a_hog_per_cpu_and_give_the_ratio(monkeypatch):
    """call-rtt-loaded: the spin's and the no-spin's calls are measured while a
    busy loop runs on every CPU (seen from here as processes of ours using
    CPU), alternated, and the spin row carries its p50 over the no-spin p50;
    no hog outlives the rows."""
    import argparse

    from hgsmi.bench.transports.hgsmi_transports import hgsmi_transports

    seen: list[list[int]] = []
    cpu: list[float] = []
    real = bench.hogs

    class Watching:
        """The real hogs; records their pids, and the CPU each used before its kill."""

        def __init__(self, n):
            self._cm = real(n)

        def __enter__(self):
            seen.append(self._cm.__enter__())
            return seen[-1]

        def __exit__(self, *exc):
            for pid in seen[-1]:
                with open(f"/proc/{pid}/stat") as f:  # utime + stime
                    ticks = sum(int(x) for x in f.read().split(") ")[1].split()[11:13])
                cpu.append(ticks / os.sysconf("SC_CLK_TCK"))
            return self._cm.__exit__(*exc)

    monkeypatch.setattr(bench, "hogs", Watching)
    monkeypatch.setattr(bench, "LOADED_RUNS", 2)  # two runs a figure: a few seconds
    args = argparse.Namespace(silent=True, runs=1, rtt_count=200, cpus=PIN, spin_us=200)
    ts = {spin: {t.name: t for t in hgsmi_transports(spin)}["hgsmi-copy"] for spin in (0, 200)}
    t0 = time.monotonic()
    rows = bench.loaded_rows(ts, args)
    took = time.monotonic() - t0
    assert len(seen) == 1 and len(seen[0]) == (os.cpu_count() or 1)
    # each hog ran through the rows (about half a CPU each beside the calls'
    # two processes: 0.55 measured), not only started
    assert all(c > 0.2 * took for c in cpu), (cpu, took)
    for pid in seen[0]:  # killed and reaped
        assert not os.path.exists(f"/proc/{pid}"), f"hog {pid} outlived the rows"
    assert [(r["workload"], r["spin_us"], r["runs"]) for r in rows] == [
        ("call-rtt-loaded", 200, 2), ("call-rtt-loaded-nospin", 0, 2)]
    assert rows[0]["x_nospin"] == round(rows[0]["p50_us"] / rows[1]["p50_us"], 2)
    bench.add_ratios(rows)  # no idle reference is taken for them
    assert all("x_hgcm" not in r for r in rows)
    text = bench.format_matrix({"machine": {}, "results": rows})
    assert f"the spin's p50 is {rows[0]['x_nospin']:.2f}x the no-spin p50" in text


def test_loaded_rows_are_left_out_not_the_run_when_no_hog_starts(monkeypatch):
    """A busy loop that cannot start (OSError) costs the loaded rows only: no
    row, no call made without the load, and the bench goes on."""
    import argparse
    import contextlib

    from hgsmi.bench.transports.hgsmi_transports import hgsmi_transports

    @contextlib.contextmanager
    def no_hogs(n):
        raise OSError(11, "fork: resource temporarily unavailable")
        yield []

    monkeypatch.setattr(bench, "hogs", no_hogs)
    args = argparse.Namespace(silent=True, runs=3, rtt_count=10, cpus=PIN, spin_us=200)
    ts = {spin: {t.name: t for t in hgsmi_transports(spin)}["hgsmi-copy"] for spin in (0, 200)}
    t0 = time.monotonic()
    assert bench.loaded_rows(ts, args) == []
    assert time.monotonic() - t0 < 1, "a run was made without the load"
