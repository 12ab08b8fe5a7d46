"""The built-in services against hostile guests (issue #11, classes 1 and 2).

- a guest that rewrites its upload chunk while the host serves it
  (tests/peers/blob_rewriter.py) never gets a stored blob that differs from
  the digest the host confirmed: the blob store reads shared memory once;
- a guest that asks for far more than its share (tests/peers/service_flood.py:
  300 fetches of a 4 MiB blob it never acks, or 2,000 load-source streams and
  then SIGSTOP) is refused with EBUSY past its quota, and another guest's
  echo p99 stays within 3x of its baseline while the host's RSS and fds stay
  bounded; what the host held for it goes when it goes;
- the guest-side client raises ``Busy`` for a refused fetch or load source;
- the quota keys of ``[limits]`` are parsed and checked.
"""
from __future__ import annotations

import errno
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import hgsmi
from hgsmi.cli import stat
from hgsmi.daemon import config
from hgsmi.services import blob_protocol as blob
from hgsmi.services.builtin import CH_ECHO
from hgsmi.services.clients import BlobClient, load, percentiles
from hgsmi.services.quota import Quotas, ServiceLimits

pytestmark = pytest.mark.multiprocess

ROOT = Path(__file__).resolve().parent.parent
PEERS = Path(__file__).parent / "peers"
TICK = os.sysconf("SC_CLK_TCK")


def env() -> dict[str, str]:
    """The environment for a child: now, with the test's private runtime dir."""
    return dict(os.environ, PYTHONPATH=str(ROOT))


class Daemon:
    """``hgsmi host`` in a subprocess with a config file; killed on exit whatever happens."""

    def __init__(self, name: str, tmp: Path, limits: dict[str, int] | None = None) -> None:
        self.name = name
        tmp.mkdir(exist_ok=True)
        self.store = tmp / "store"
        cfg = tmp / "host.toml"
        lines = [f'name = "{name}"', f'store = "{self.store}"', "[limits]"]
        lines += [f"{k} = {v}" for k, v in (limits or {}).items()]
        cfg.write_text("\n".join(lines) + "\n")
        self.log = open(tmp / "host.log", "w+b")
        self.proc = subprocess.Popen([sys.executable, "-m", "hgsmi", "host", "--config", str(cfg),
                                      "--log-level", "warning"],
                                     stdout=subprocess.PIPE, stderr=self.log, env=env())
        line = readline(self.proc, 15)
        assert line.startswith("ready"), line
        self.pid = self.proc.pid

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def fd_targets(self) -> list[str]:
        """What each open fd is (sockets, memfds, files), for a failure's message."""
        out = []
        for fd in sorted(os.listdir(f"/proc/{self.pid}/fd"), key=int):
            try:
                out.append(f"{fd}:{os.readlink(f'/proc/{self.pid}/fd/{fd}')}")
            except OSError:
                pass
        return out

    def cpu_s(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.log.close()


def readline(p: subprocess.Popen, timeout: float = 10.0) -> str:
    """One line of ``p``'s stdout within ``timeout``, or fail the test."""
    fd = p.stdout.fileno()
    buf = b""
    deadline = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0, f"no line from {p.args} in {timeout} s: {buf!r}"
        if select.select([fd], [], [], min(left, 0.1))[0]:
            b = os.read(fd, 1)
            if not b:
                raise AssertionError(f"{p.args} exited {p.wait()} before a line")
            buf += b
    return buf.decode().strip()


def reap(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.kill()  # SIGKILL works on a stopped process too
    p.wait(10)
    if p.stdout:
        p.stdout.close()
    if p.stdin:
        p.stdin.close()


@pytest.fixture
def daemon(name, runtime_dir, tmp_path, request):
    limits = getattr(request, "param", None)
    d = Daemon(name, tmp_path, limits)
    yield d
    d.close()


def echo_p99(g: hgsmi.Guest, control: hgsmi.Guest, calls: int = 3000,
             seconds: float = 6.0) -> tuple[dict[str, float], dict[str, float], int, int]:
    """(percentiles of ``g``, of ``control`` in µs, calls to ``g``, errors) of 64-byte echo calls.

    The calls alternate between ``g`` and ``control`` (a guest of a second,
    untouched host), so both see the same load of this shared machine: the
    control's p99 is the baseline, measured at the same time.
    """
    payload = bytes(range(64))
    lat: list[float] = []
    ref: list[float] = []
    errors = 0
    end = time.monotonic() + seconds
    clock = time.perf_counter_ns
    while len(lat) < calls and time.monotonic() < end:
        for guest, out in ((g, lat), (control, ref)):
            t = clock()
            try:
                ok = guest.call(CH_ECHO, 0, payload, timeout=5) == payload
            except hgsmi.HgsmiError:
                ok = False
            out.append((clock() - t) / 1000)
            errors += not ok
    return percentiles(lat, (50, 99)), percentiles(ref, (50, 99)), len(lat), errors


def published(name: str, ready: Callable[[dict[str, Any]], Any],
              meanwhile: Callable[[float], Any] = time.sleep) -> dict[str, Any]:
    """The daemon's stat document once ``ready(doc)`` (it is refreshed every 0.25 s)."""
    deadline = time.monotonic() + 20
    while not ready(st := stat.query(name)):
        assert time.monotonic() < deadline, st
        meanwhile(0.05)
    return st


def stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


# -- class 1: read shared memory once ---------------------------------------------------------
@pytest.mark.timeout(90)
def test_rewritten_upload_stores_what_the_host_confirmed(daemon, name):
    p = subprocess.Popen([sys.executable, str(PEERS / "blob_rewriter.py"), name,
                          str(daemon.store), "4"], stdout=subprocess.PIPE, env=env())
    try:
        out = json.loads(readline(p, 60))
        assert p.wait(10) == 0
    finally:
        reap(p)
    print(f"rewriter: {out}")
    assert out["confirmed"] >= 5, out  # the flips leave the host something to confirm
    assert out["mismatched"] == 0, f"stored blobs differ from the confirmed digest: {out}"


# -- class 2: per-guest quotas ----------------------------------------------------------------
FLOODS = {  # mode: (requests, argument, what the default quota lets through)
    "fetch": (300, "big", 4),  # max_fetches
    "source": (2000, str(64 << 10), 8),  # max_streams
}


def flood_and_measure(daemon: Daemon, g: hgsmi.Guest, c: hgsmi.Guest, mode: str, count: int,
                      arg: str) -> dict[str, Any]:
    """Echo from ``g`` (and the control ``c``) before, under and after a flood; the figures."""
    # Larger than the flooder's host heap: no fetch of it can finish unacked.
    (daemon.store / "big").write_bytes(os.urandom(16 << 20))
    echo_p99(g, c, 300)  # warm up
    rss0, fds0, cpu0, t0 = daemon.rss_kib(), daemon.fds(), daemon.cpu_s(), time.monotonic()
    fds_start = daemon.fd_targets()
    base, base_ref, n_base, err_base = echo_p99(g, c)
    cpu_base = (daemon.cpu_s() - cpu0) / n_base
    load_base = (daemon.cpu_s() - cpu0) / (time.monotonic() - t0)
    p = subprocess.Popen([sys.executable, str(PEERS / "service_flood.py"), daemon.name, mode,
                          str(count), arg], stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                         env=env())
    try:
        _, taken, busy, other = readline(p, 180).split()
        deadline = time.monotonic() + 5
        while mode == "source" and not stopped(p.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # whatever the host took is blocked now
        cpu1, t1 = daemon.cpu_s(), time.monotonic()
        flood, flood_ref, n_flood, err_flood = echo_p99(g, c)
        cpu_flood = (daemon.cpu_s() - cpu1) / n_flood
        load_flood = (daemon.cpu_s() - cpu1) / (time.monotonic() - t1)
        rss1, fds1 = daemon.rss_kib(), daemon.fds()
        if mode == "fetch":  # another guest's fetch is not held up by the flooder's quota
            with open(daemon.store.parent / "copy", "wb", buffering=0) as f:
                BlobClient(g).fetch("big", f)
            assert (daemon.store.parent / "copy").read_bytes() == \
                (daemon.store / "big").read_bytes()
    finally:
        reap(p)
    # Gone: everything held for it goes with it (its segment, files, streams).
    # A leak stays; the wait ends as soon as the count is back.  (3 s was once
    # too short in a fresh-clone CI run, with the rest of the suite on both CPUs:
    # one fd over, and the held-state counts at 0 right after.)
    deadline = time.monotonic() + 10
    while daemon.fds() > fds0 and time.monotonic() < deadline:
        time.sleep(0.02)
    fds2 = daemon.fds()
    fds_left = daemon.fd_targets() if fds2 > fds0 else []  # which, if one stayed
    left = published(daemon.name, lambda st: len(st["guests"]) == 1)
    after, after_ref, _, err_after = echo_p99(g, c)
    return {"taken": int(taken), "busy": int(busy), "other": int(other),
            "base": base["p99"], "base_ref": base_ref["p99"], "flood": flood["p99"],
            "flood_ref": flood_ref["p99"], "after": after["p99"], "after_ref": after_ref["p99"],
            "flood_p50": flood["p50"], "flood_ref_p50": flood_ref["p50"], "n_flood": n_flood,
            "errors": err_base + err_flood + err_after, "cpu_base": cpu_base * 1e6,
            "cpu_flood": cpu_flood * 1e6, "load_base": load_base, "load_flood": load_flood,
            "rss0": rss0, "rss1": rss1, "fds0": fds0, "fds1": fds1, "fds2": fds2,
            "held_after": left["guests"][0].get("held", {}),
            "fds_start": fds_start if fds_left else [], "fds_left": fds_left}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("mode", sorted(FLOODS))
def test_a_flooding_guest_is_refused_and_others_keep_their_latency(daemon, name, tmp_path,
                                                                    mode):
    count, arg, quota = FLOODS[mode]
    control = Daemon(name + "c", tmp_path / "control")
    # Both hosts on one CPU: the scheduler's load on this shared machine is then
    # the same for both, and the control's p99 a fair baseline.
    cpu = max(os.sched_getaffinity(0))
    for pid in (daemon.pid, control.pid):
        os.sched_setaffinity(pid, {cpu})
    try:
        with hgsmi.Guest(name) as g, hgsmi.Guest(name + "c") as c:
            f = flood_and_measure(daemon, g, c, mode, count, arg)
    finally:
        control.close()
    print(f"{mode} flood: taken {f['taken']}, busy {f['busy']}, other {f['other']}; good guest "
          f"p99 (control) {f['base']:.0f} ({f['base_ref']:.0f}) -> {f['flood']:.0f} "
          f"({f['flood_ref']:.0f}) -> {f['after']:.0f} ({f['after_ref']:.0f}) us, p50 under the "
          f"flood {f['flood_p50']:.0f} ({f['flood_ref_p50']:.0f}) us, "
          f"{f['n_flood']} calls under the flood, errors {f['errors']}; host RSS {f['rss0']} -> "
          f"{f['rss1']} KiB, fds {f['fds0']} -> {f['fds1']} -> {f['fds2']}, CPU/call "
          f"{f['cpu_base']:.0f} -> {f['cpu_flood']:.0f} us, CPU {f['load_base']:.0%} -> "
          f"{f['load_flood']:.0%}")
    assert f["taken"] <= quota and f["busy"] == count - f["taken"] and f["other"] == 0, f
    assert f["errors"] == 0, f
    # Within 3x of the baseline: the same calls to an untouched host, interleaved
    # with these; a floor of 300 µs for the jitter of a loaded 2-core machine (a
    # host that pumps what it holds for the flooder every round makes it ms).
    assert f["flood"] <= 3 * max(f["flood_ref"], 300), f
    # Sharing a CPU, a host that burns it delays the control too; the median
    # shows which host does the burning.
    assert f["flood_p50"] <= 3 * max(f["flood_ref_p50"], 100), f
    # The host's own work per good call: blocked streams must cost it next to nothing.
    assert f["cpu_flood"] <= 3 * f["cpu_base"] + 20, f
    assert f["rss1"] - f["rss0"] < 48 << 10, f"host RSS grew by {f['rss1'] - f['rss0']} KiB"
    assert f["fds1"] - f["fds0"] <= quota + 8, f
    assert f["fds2"] <= f["fds0"], f"host fds after the flooder left: {f}"
    assert not any(f["held_after"].values()), f


# -- the guest side: Busy -----------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("daemon", [{"max_fetches": 1, "max_streams": 1, "max_open_files": 1}],
                         indirect=True)
def test_the_client_raises_busy_and_the_quota_comes_back(daemon, name, tmp_path):
    (daemon.store / "big").write_bytes(os.urandom(16 << 20))
    src = tmp_path / "small"
    src.write_bytes(b"x" * 1000)
    with hgsmi.Guest(name) as g:
        blobs = BlobClient(g)
        # A fetch the guest does not take in yet: it holds the one fetch, stream and file.
        rep = g.call(hgsmi.CH_BLOB, blob.FETCH, b"big", blob.REPLY_MAX, timeout=5)
        status, tid, _, _ = blob.parse(blob.FETCH_REP, rep)
        assert status == 0
        held = published(name, lambda st: st["guests"][0]["held"]["streams"])["guests"][0]["held"]
        assert held["fetches"] == held["files"] == held["streams"] == 1, held
        assert held["buffered"] > 0, held
        with open(tmp_path / "out", "wb", buffering=0) as out:
            with pytest.raises(hgsmi.Busy) as fetch_busy:
                blobs.fetch("big", out)
        assert isinstance(fetch_busy.value, blob.BlobError)
        assert "max_fetches" in str(fetch_busy.value)
        with open(src, "rb", buffering=0) as f, pytest.raises(blob.BlobBusy) as send_busy:
            blobs.send(f, "small")
        assert "max_open_files" in str(send_busy.value)
        with pytest.raises(hgsmi.Busy) as load_busy:
            load(g, seconds=0.2, direction="h2g")
        assert load_busy.value.errno == errno.EBUSY and "max_streams" in str(load_busy.value)
        # Taking the fetch in (unknown to the client: its chunks are acked and dropped)
        # ends it, and the quota comes back.
        published(name, lambda st: not st["guests"][0]["held"]["streams"], g.poll)
        with open(tmp_path / "out", "wb", buffering=0) as out:
            assert blobs.fetch("big", out)["bytes"] == 16 << 20
        with open(src, "rb", buffering=0) as f:
            assert blobs.send(f, "small")["bytes"] == 1000
        assert load(g, seconds=0.2, direction="h2g")["h2g"]["msgs"] > 0
        assert published(name, lambda st: st["busy"])["busy"] == 3


def test_quota_keys_in_limits():
    cfg = config.from_dict({"limits": {"max_fetches": 2, "max_open_files": 3, "max_streams": 0,
                                       "max_buffered": "1M", "max_guests": 4}})
    assert cfg.service_limits() == ServiceLimits(2, 3, 0, 1 << 20)
    assert "max_fetches" not in cfg.limits()  # not a Host() argument
    assert config.HostConfig().service_limits() == ServiceLimits(4, 16, 8, 64 << 20)
    with pytest.raises(config.ConfigError, match="limits.max_streams"):
        config.from_dict({"limits": {"max_streams": -1}})
    with pytest.raises(config.ConfigError, match="limits.max_buffered"):
        config.from_dict({"limits": {"max_buffered": "lots"}})
    with pytest.raises(config.ConfigError, match="unknown key 'limits.max_fetch'"):
        config.from_dict({"limits": {"max_fetch": 1}})


def test_a_refused_claim_takes_nothing_and_a_release_counts_once():
    q = Quotas(ServiceLimits(max_fetches=1, max_open_files=2, max_streams=0, max_buffered=100))
    closed = []
    a = q.claim(7, "fetch", fetches=1, files=1, streams=5, buffered=60)  # streams: no limit
    a.on_release(lambda: closed.append("a"))
    with pytest.raises(hgsmi.Busy, match="limits.max_buffered") as e:
        q.claim(7, "upload", files=1, buffered=41)
    assert e.value.errno == errno.EBUSY and q.refused == 1
    assert q.held(7) == {"fetches": 1, "files": 1, "streams": 5, "buffered": 60}
    assert q.held(8) == dict.fromkeys(("fetches", "files", "streams", "buffered"), 0)
    q.claim(8, "fetch", fetches=1)  # another guest's quota
    b = q.claim(7, "upload", files=1, buffered=40)
    a.release()
    a.release()
    assert closed == ["a"]
    assert q.held(7) == {"fetches": 0, "files": 1, "streams": 0, "buffered": 40}
    b.release()
    assert not any(q.held(7).values())
