"""``hgsmi bench``: hgsmi against HGCM-style copying, the stdlib and the
machine's own C ceiling, side by side in one run (README: Benchmarks).

    hgsmi bench [--quick] [--json] [--plot FILE.png] [--pin split|same|none]
                [--only NAME ...]

The transports are :mod:`hgsmi.bench.transports`, installed with the
package.  Besides the Python transports, ``c-ceiling`` (plain C over shm)
and ``hgsmi-c`` (the same workloads from C through libhgsmi,
``hgsmi/bench/c/hgsmi_c.c``) are compiled on first use into a per-user
cache; where that cannot be done (no compiler; for hgsmi-c, no libhgsmi)
their rows are reported as skipped, with the reason, and the run goes on.
``hgsmi-async`` runs the workloads with an asyncio guest (hgsmi.aio.AsyncGuest;
its spin_us is the host's only), including ``call-concurrent``: calls/s with
ASYNC_INFLIGHT coroutines calling at once.  ``call-rtt-loaded`` is hgsmi-copy's
call with a busy loop on every CPU, with the spin and without
(:func:`loaded_rows`).

Every figure is the median of ``--runs`` runs (at least 3; the 64 B c-ceiling
and hgsmi-c figures at least 5). Ratios (x hgcm, % of c-ceiling) are taken
within the run. Progress goes to stderr, so ``--json`` prints exactly one
JSON object on stdout.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .._wire import SPIN_US_DEFAULT
from . import busy
from .hogs import hogs

if TYPE_CHECKING:  # the transports are imported when a run starts, not with the CLI
    from .transports import Transport
    from .transports.hgsmi_transports import HgsmiTransport

SIZES = (64, 4096, 65536, 1 << 20)
STREAMS = ("g2h-stream", "h2g-stream")
#: the adaptive spin's cap (µs) of the hgsmi rows: the library's default, what
#: a new user gets (docs/performance.md, "The spin cap")
DEFAULT_SPIN_US = SPIN_US_DEFAULT
#: coroutines with a call in flight in the hgsmi-async call-concurrent row
ASYNC_INFLIGHT = 256
#: runs of each call-rtt-loaded figure (at least): with a hog per CPU one
#: run's p50 swings 0.35x-2.7x with how the hogs happened to be scheduled
#: (docs/performance.md, "The spin cap"), so its median takes more
LOADED_RUNS = 7
#: hgsmi-async stream sizes under --quick (every spawned Python run costs
#: ~0.3 s of start-up, more than the 0.1 s it measures)
QUICK_ASYNC_SIZES = (64, 65536)
#: the peers that --quick runs at those two sizes only; iceoryx2-poll, the one
#: the zero-copy targets compare with, runs at every size
QUICK_TWO_SIZES = ("iceoryx2-event", "faster-fifo", "pyzmq")


class BenchError(Exception):
    """A one-line failure of the benchmark front end."""


def human_size(n: int) -> str:
    """64 B, 4 KiB, 1 MiB."""
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted samples."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def placement(pin: str) -> tuple[int, int] | None:
    """The (host, guest) CPUs for a --pin choice: "split" puts them on two
    CPUs (one, if only one is available), "same" on one, "none" unpinned."""
    cpus = sorted(os.sched_getaffinity(0))
    if pin == "none":
        return None
    if pin == "same" or len(cpus) < 2:
        return cpus[-1], cpus[-1]
    return cpus[0], cpus[1]


def machine(args: argparse.Namespace) -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        load = open("/proc/loadavg").read().split()[:3]
    except OSError:
        load = []
    return {"cpu": model or platform.processor(), "cpus": os.cpu_count(),
            "kernel": platform.release(), "python": platform.python_version(),
            "pin": args.pin, "placement": placement(args.pin), "spin_us": args.spin_us,
            "runs": args.runs, "seconds": args.seconds, "quick": args.quick,
            "loadavg_before": load, "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def _log(args: argparse.Namespace, text: str) -> None:
    """A progress line on stderr, stamped with the seconds since the start
    (which section eats the --quick budget shows at a glance)."""
    if not args.silent:
        t = time.monotonic() - getattr(args, "t_start", time.monotonic())
        print(f"[{t:5.1f} s] {text}", file=sys.stderr, flush=True)


def _repeat(n: int, fn: Callable[[], Any], what: str,
            args: argparse.Namespace) -> list[Any]:
    out: list[Any] = []
    for _ in range(n):
        _once(out, fn, what, args)
    return out


def _once(out: list[Any], fn: Callable[[], Any], what: str, args: argparse.Namespace) -> None:
    """Append ``fn()`` to ``out``; a failed run is logged and left out."""
    try:
        out.append(fn())
    except Exception as e:  # one failed run must not sink the table
        _log(args, f"  {what}: run failed: {str(e).strip().splitlines()[-1]}")


def _interleaved(jobs: list[tuple[Any, int, Callable[[], Any]]], what: str,
                 args: argparse.Namespace) -> dict[Any, list[Any]]:
    """Run each ``(key, runs, fn)`` job ``runs`` times, round-robin: the first
    run of every job, then the second... Each figure is a median over its
    runs, and figures are compared as ratios; on a shared machine the load
    drifts over seconds, so the runs of the figures compared are spread over
    the same stretch of time rather than taken one transport after another."""
    out: dict[Any, list[Any]] = {key: [] for key, _, _ in jobs}
    for r in range(max((n for _, n, _ in jobs), default=0)):
        _log(args, f"{what}: round {r + 1}")
        for key, n, fn in jobs:
            if r < n:
                _once(out[key], fn, f"{what} {key}", args)
    return out


def rate_row(res: list[Any], transport: str, workload: str, size: int,
             **extra: Any) -> dict[str, Any] | None:
    """The row of the median msgs/s (and MB/s) of stream results; None if none ran."""
    res = [r for r in res if r["seconds"] > 0 and r["msgs"] > 0]
    if not res:
        return None
    mps = statistics.median(r["msgs"] / r["seconds"] for r in res)
    return {"transport": transport, "workload": workload, "size": size,
            "msgs_per_s": round(mps, 1), "mb_per_s": round(mps * size / 1e6, 2),
            **extra, "runs": len(res)}


def stream_run(t: Any, workload: str, size: int,
               args: argparse.Namespace) -> Callable[[], Any]:
    """One stream run of ``t`` (a job for :func:`_interleaved`)."""
    return functools.partial(t.stream, workload[:3], size, seconds=args.seconds,
                             cpus=args.cpus, timeout=60)


def rtt_run(t: Any, args: argparse.Namespace) -> Callable[[], Any]:
    """One call-rtt run of ``t`` (64 B): its latencies."""
    return functools.partial(t.rtt, 64, args.rtt_count, cpus=args.cpus, timeout=60)


def rtt_row(res: list[Any], transport: str, workload: str) -> dict[str, Any] | None:
    """The row of the median p50 and p99 of rtt runs; None if none ran."""
    if not res:
        return None
    return {"transport": transport, "workload": workload, "size": 64,
            "p50_us": round(statistics.median(percentile(r, 50) for r in res) * 1e6, 2),
            "p99_us": round(statistics.median(percentile(r, 99) for r in res) * 1e6, 2),
            "runs": len(res)}


def concurrent_row(t: Any, args: argparse.Namespace) -> dict[str, Any] | None:
    """hgsmi-async with ASYNC_INFLIGHT coroutines calling at once (64 B echo)."""
    res = _repeat(args.runs, lambda: t.concurrent(64, ASYNC_INFLIGHT, seconds=args.seconds,
                                                  cpus=args.cpus, timeout=60),
                  f"{t.name} call-concurrent", args)
    return rate_row(res, t.name, "call-concurrent", 64, inflight=ASYNC_INFLIGHT)


def transport_names() -> set[str]:
    """Every transport's name, the peers' that are not installed included."""
    from .transports import baselines, thirdparty
    from .transports.hgsmi_async import HgsmiAsync
    from .transports.hgsmi_c import HgsmiC
    from .transports.hgsmi_transports import hgsmi_transports

    ts = [*baselines(), *hgsmi_transports(), HgsmiC(), HgsmiAsync()]
    return {t.name for t in ts} | set(thirdparty.available())


def selected(only: Sequence[str] | None) -> set[str]:
    """The transport names ``--only`` picks (every one without it).
    Raises BenchError for a name no transport has."""
    known = transport_names()
    if not only:
        return known
    picked = {n for arg in only for n in arg.split(",") if n}
    unknown = picked - known
    if unknown:
        raise BenchError(f"--only: no transport {', '.join(sorted(unknown))} (there are: "
                         f"{', '.join(sorted(known))})")
    return picked


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every selected transport on every workload; the machine and the rows.
    Raises BenchError (a bad --only)."""
    from .transports import baselines, thirdparty
    from .transports.hgsmi_async import HgsmiAsync
    from .transports.hgsmi_c import HgsmiC
    from .transports.hgsmi_transports import hgsmi_transports

    t_start = args.t_start = time.monotonic()
    args.cpus = placement(args.pin)
    info = machine(args)
    base = baselines()
    names = {t.name: t for t in base}
    hg = {spin: {t.name: t for t in hgsmi_transports(spin)}
          for spin in (0, args.spin_us)}
    # hgsmi streams with the adaptive spin, from C and from Python: the C
    # ceiling they are compared with busy-polls, and a user streaming would
    # configure the spin (it costs nothing idle: see idle-cpu).
    hgc = HgsmiC(args.spin_us)
    hga = HgsmiAsync(args.spin_us)
    missing = thirdparty.available()
    only = selected(args.only)
    info["peers_missing"] = {n: why for n, why in missing.items() if n in only}
    for name, why in info["peers_missing"].items():
        _log(args, f"{name}: left out: {why}")
    # A transport that cannot run here (no C compiler, no libhgsmi) keeps its
    # rows, marked skipped with the reason, so that a table or a JSON reader
    # sees it was left out and why.
    info["skipped"] = {}
    for t in (names["c-ceiling"], hgc):
        why = t.unavailable() if t.name in only else None
        if why:
            info["skipped"][t.name] = why
            _log(args, f"{t.name}: skipped: {why}")
    rows: list[dict[str, Any]] = []

    def add(row: dict[str, Any] | None, **extra: Any) -> None:
        if row is not None:
            row.update(extra)
            rows.append(row)

    def runs(t: Transport, workload: str) -> bool:
        """Whether ``t`` is measured on ``workload``; a row says so if it is skipped."""
        if t.name not in only or not t.supports(workload):
            return False
        return t.name not in info["skipped"]

    def skip(t: Transport, workload: str, size: int) -> None:
        if t.name in only and t.name in info["skipped"]:
            rows.append({"transport": t.name, "workload": workload, "size": size,
                         "skipped": info["skipped"][t.name]})

    # the rows of the transports that spin say how much
    spinning: dict[Transport, int] = {hgc: hgc.spin_us}
    spinning.update((t, t.spin_us) for t in [hga, *hg[args.spin_us].values()])
    stream_ts = [names["c-ceiling"], hgc] + list(hg[args.spin_us].values()) + [hga] + \
        [t for t in base if t.name != "c-ceiling"]
    for workload in STREAMS:
        jobs: list[tuple[Any, int, Callable[[], Any]]] = []
        for t in stream_ts:
            # --quick: the async guest and most peers only at the two regimes
            # (per-message cost, bulk copy), to keep the run short.
            two = t is hga or t.name in QUICK_TWO_SIZES
            sizes = [z for z in args.sizes if z in QUICK_ASYNC_SIZES] \
                if two and args.quick else args.sizes
            if not runs(t, workload[:3]):
                for size in sizes or args.sizes:
                    skip(t, workload, size)
                continue
            for size in sizes or args.sizes:
                small_c = size == 64 and t.name in ("c-ceiling", "hgsmi-c")
                jobs.append(((t.name, size), max(args.runs, 5) if small_c else args.runs,
                             stream_run(t, workload, size, args)))
        # A size's transports one after another: the figures a ratio compares
        # are then taken seconds apart, not a whole round (stable: the table's order)
        jobs.sort(key=lambda job: job[0][1])
        by_name = {t.name: t for t in stream_ts}
        for (name, size), res in _interleaved(jobs, workload, args).items():
            t = by_name[name]
            add(rate_row(res, name, workload, size),
                **({"spin_us": spinning[t]} if t in spinning else {}))
    # call-rtt: baselines once (they never spin); hgsmi with spin, and without.
    rtt_jobs: list[tuple[Any, int, Callable[[], Any]]] = []
    for t in base:
        if not runs(t, "rtt"):
            skip(t, "call-rtt", 64)
            continue
        rtt_jobs.append(((t.name, "call-rtt", None),
                         max(args.runs, 5) if t.name == "c-ceiling" else args.runs,
                         rtt_run(t, args)))
    for spin, wl in ((args.spin_us, "call-rtt"), (0, "call-rtt-nospin")):
        ts: list[Transport] = [HgsmiC(spin), *hg[spin].values(), HgsmiAsync(spin)]
        for t in ts:
            if not runs(t, "rtt"):
                skip(t, wl, 64)
                continue
            rtt_jobs.append(((t.name, wl, spin), args.runs, rtt_run(t, args)))
    for (name, wl, spin), res in _interleaved(rtt_jobs, "call-rtt", args).items():
        add(rtt_row(res, name, wl), **({} if spin is None else {"spin_us": spin}))
    # call-rtt-loaded: the same call with every CPU busy, the spin against none.
    if args.spin_us and runs(hg[0]["hgsmi-copy"], "rtt"):
        rows += loaded_rows({spin: ts["hgsmi-copy"] for spin, ts in hg.items()}, args)
    # Many calls in flight from one asyncio guest (issue 6): calls/s.
    if runs(hga, "rtt"):
        _log(args, f"call-concurrent: hgsmi-async ({ASYNC_INFLIGHT} in flight)")
        add(concurrent_row(hga, args))
    # idle-cpu: the adaptive-spin configuration, attached and idle.
    if "hgsmi-copy" in only:
        rows += idle_rows(hg[args.spin_us]["hgsmi-copy"], args)
    # guests-8: aggregate g2h at 64 KiB.
    for name in ("hgsmi-copy", "hgsmi-batch"):
        if name not in only:
            continue
        _log(args, f"guests-8: {name}, 64 KiB")
        g8 = {t.name: t for t in hgsmi_transports(0)}[name]
        g8.segment = 8 << 20
        res = _repeat(args.runs, functools.partial(g8.guests_n, 8, 65536, seconds=args.seconds),
                      f"guests-8 {name}", args)
        add(rate_row(res, name, "guests-8", 65536, spin_us=0))
    add_ratios(rows)
    info["elapsed_s"] = round(time.monotonic() - t_start, 1)
    try:
        info["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
    except OSError:
        pass
    return {"machine": info, "results": rows}


def idle_rows(t: HgsmiTransport, args: argparse.Namespace) -> list[dict[str, Any]]:
    """idle-cpu: the CPU a host and an attached guest use while idle, one row each."""
    _log(args, f"idle-cpu: hgsmi ({args.idle_seconds:g} s x {args.runs})")
    # the runs are idle, so they run side by side (each pair is measured alone
    # by getrusage in its own processes)
    with ThreadPoolExecutor(args.runs) as ex:
        futs = [ex.submit(t.idle_cpu, args.idle_seconds, args.cpus) for _ in range(args.runs)]
        idles = []
        for fut in futs:
            try:
                idles.append(fut.result())
            except Exception as e:
                _log(args, f"  idle-cpu: run failed: {e}")
    rows = []
    for role in ("host", "guest") if idles else ():
        cpu = statistics.median(r[role] for r in idles)
        rows.append({"transport": f"hgsmi-{role}", "workload": "idle-cpu",
                     "seconds": args.idle_seconds, "cpu_s": round(cpu, 4),
                     "cpu_percent": round(100 * cpu / args.idle_seconds, 3),
                     "spin_us": args.spin_us, "runs": len(idles)})
    return rows


def loaded_rows(ts: dict[int, HgsmiTransport], args: argparse.Namespace) -> list[dict[str, Any]]:
    """call-rtt-loaded and -nospin: hgsmi-copy's 64 B call with a busy-loop hog
    on every CPU, with the spin (``args.spin_us``) and without, alternated.

    The adaptive spin must back off under load, so that the spin row's p50
    stays within 1.2x of the no-spin row's (issue #13): its ``x_nospin``.
    No rows (logged) if a hog cannot start: one part must not sink the table."""
    n = os.cpu_count() or 1
    _log(args, f"call-rtt-loaded: hgsmi-copy, a busy loop on each of {n} CPUs")
    jobs: list[tuple[Any, int, Callable[[], Any]]] = [
        ((spin, wl), max(args.runs, LOADED_RUNS), rtt_run(ts[spin], args))
        for spin, wl in ((args.spin_us, "call-rtt-loaded"), (0, "call-rtt-loaded-nospin"))]
    try:
        with hogs(n):  # (_interleaved catches each run's failure itself)
            res = _interleaved(jobs, "call-rtt-loaded", args)
    except OSError as e:
        _log(args, f"  call-rtt-loaded: no busy loops: {e}")
        return []
    rows = []
    for (spin, wl), lat in res.items():
        row = rtt_row(lat, "hgsmi-copy", wl)
        if row is not None:
            rows.append({**row, "spin_us": spin, "cpu_hogs": n})
    if len(rows) == 2:
        rows[0]["x_nospin"] = round(rows[0]["p50_us"] / rows[1]["p50_us"], 2)
    return rows


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """x_hgcm and pct_c_ceiling for each row, against the same workload and
    size of this run (rtt: hgcm p50 / p50; the no-spin rtt is compared with
    the C eventfd ping-pong of call-rtt)."""
    idx = {(r["transport"], r["workload"], r.get("size")): r for r in rows}
    for r in rows:
        wl, size = r["workload"], r.get("size")
        if wl.startswith("call-rtt-loaded"):
            continue  # (x_nospin: the idle references would say nothing of it)
        ref_wl = "call-rtt" if wl.startswith("call-rtt") else wl
        hg = idx.get(("hgcm", ref_wl, size))
        cc = idx.get(("c-ceiling", ref_wl, size))
        if "mb_per_s" in r:
            if hg and hg.get("mb_per_s"):
                r["x_hgcm"] = round(r["mb_per_s"] / hg["mb_per_s"], 2)
            if cc and cc.get("mb_per_s"):
                r["pct_c_ceiling"] = round(100 * r["mb_per_s"] / cc["mb_per_s"], 1)
        elif "p50_us" in r:
            if hg:
                r["x_hgcm"] = round(hg["p50_us"] / r["p50_us"], 2)
            if cc:
                r["pct_c_ceiling"] = round(100 * cc["p50_us"] / r["p50_us"], 1)


def format_table(result: dict[str, Any]) -> str:
    """A markdown table: one line per row, with ratios."""
    head = ("| transport | workload | size | msgs/s | MB/s | p50 µs | p99 µs | CPU s | "
            "x hgcm | % c-ceiling |")
    lines = [head, "|" + "---|" * 10]

    def f(v: Any, fmt: str) -> str:
        return "" if v is None else format(v, fmt)

    for r in result["results"]:
        size = r.get("size")
        lines.append("| " + " | ".join([
            r["transport"] + (f" (spin {r['spin_us']})" if r.get("spin_us") else ""),
            r["workload"], human_size(size) if size else f"{r.get('seconds', '')} s",
            "skipped" if "skipped" in r else f(r.get("msgs_per_s"), ",.0f"),
            f(r.get("mb_per_s"), ",.1f"),
            f(r.get("p50_us"), ".1f"), f(r.get("p99_us"), ".1f"),
            f(r.get("cpu_s"), ".3f"),
            f(r.get("x_hgcm"), ".2f") + ("x" if "x_hgcm" in r else ""),
            f(r.get("pct_c_ceiling"), ".1f") + ("%" if "pct_c_ceiling" in r else ""),
        ]) + " |")
    return "\n".join(lines)


def format_matrix(result: dict[str, Any]) -> str:
    """Markdown: streams as transport x size (MB/s, x hgcm, % of c-ceiling),
    then the rtt, idle and guests-8 rows."""
    rows = result["results"]
    out = []
    for wl in STREAMS:
        sizes = sorted({r["size"] for r in rows if r["workload"] == wl})
        if not sizes:
            continue
        out.append(f"**{wl}** (MB/s; x hgcm; % of c-ceiling)\n")
        out.append("| transport | " + " | ".join(human_size(s) for s in sizes) + " |")
        out.append("|---|" + "---|" * len(sizes))
        names = list(dict.fromkeys(r["transport"] for r in rows if r["workload"] == wl))
        idx = {(r["transport"], r["size"]): r for r in rows if r["workload"] == wl}
        for n in names:
            cells = []
            for s in sizes:
                r = idx.get((n, s))
                cells.append("" if r is None else "skipped" if "skipped" in r else
                             f"{r['mb_per_s']:,.1f}; {r.get('x_hgcm', 0):.1f}x; "
                             f"{r.get('pct_c_ceiling', 0):.1f}%")
            out.append(f"| {n} | " + " | ".join(cells) + " |")
        out.append("")
    out.append("**call-rtt, idle-cpu, guests-8**\n")
    other = {"machine": result["machine"],
             "results": [r for r in rows if r["workload"] not in STREAMS]}
    out.append(format_table(other))
    out += [f"\ncall-rtt-loaded ({r['cpu_hogs']} CPUs, each running a busy loop): the "
            f"spin's p50 is {r['x_nospin']:.2f}x the no-spin p50" for r in rows if "x_nospin" in r]
    skipped = result["machine"].get("skipped", {})
    out += [""] * bool(skipped) + [f"{name} skipped: {why}" for name, why in skipped.items()]
    return "\n".join(out)


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, or BenchError (checked before any run)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchError("--plot needs matplotlib: pip install 'hgsmi[bench]'") from None
    return plt


def plot(result: dict[str, Any], path: str) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, wl in zip(axes, STREAMS, strict=True):
        by: dict[str, list[tuple[int, float]]] = {}
        for r in result["results"]:
            if r["workload"] == wl and r.get("mb_per_s"):
                by.setdefault(r["transport"], []).append((r["size"], r["mb_per_s"]))
        for name, pts in by.items():
            pts.sort()
            style = "-" if name.startswith("hgsmi") or name == "c-ceiling" else "--"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("message size (bytes)")
        ax.set_title(wl)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("MB/s (receiver, median)")
    axes[1].legend(fontsize=8, loc="lower right")
    m = result["machine"]
    fig.suptitle(f"hgsmi bench: {m['cpu']}, {m['cpus']} vCPU, kernel {m['kernel']}, "
                 f"--pin {m['pin']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(prog="hgsmi bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short runs: under 2 minutes")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--plot", metavar="FILE.png", help="draw MB/s against size (matplotlib)")
    p.add_argument("--pin", choices=("split", "same", "none"), default="split",
                   help="peer placement: host and guest on two CPUs (default), one, or unpinned")
    p.add_argument("--spin-us", type=int, default=DEFAULT_SPIN_US,
                   help=f"adaptive spin for the spin rtt run (default {DEFAULT_SPIN_US})")
    p.add_argument("--runs", type=int, default=3, help="runs per figure (>= 3)")
    p.add_argument("--seconds", type=float, help="per stream run (default 0.5; quick 0.1)")
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), metavar="BYTES",
                   help="message sizes of the stream runs")
    p.add_argument("--only", nargs="+", metavar="NAME",
                   help="only these transports (names as in the table, space- or "
                        "comma-separated); idle-cpu, call-rtt-loaded and guests-8 run "
                        "with hgsmi-copy (guests-8 also with hgsmi-batch)")
    return p


def main(argv: Sequence[str] | None = None,
         args: argparse.Namespace | None = None) -> int:
    if args is None:
        args = build_parser().parse_args(argv)
    args.runs = max(3, args.runs)
    if args.seconds is None:
        args.seconds = 0.1 if args.quick else 0.5
    args.rtt_count = 500 if args.quick else 3000
    args.idle_seconds = 5.0
    args.silent = False
    try:
        selected(args.only)  # a mistyped name fails now, not after the quiet check
        if args.plot:
            _pyplot()  # and a missing matplotlib now, not after minutes of runs
    except BenchError as e:
        print(f"hgsmi bench: error: {e}", file=sys.stderr)
        return 1
    before = busy.quiet_check()
    if before:
        print("hgsmi bench: warning: the machine is busy (" + "; ".join(before) +
              "): the figures will be unreliable", file=sys.stderr)
    watch = busy.Watch()
    watch.start()
    try:
        result = run(args)
        if args.plot:
            plot(result, args.plot)
    except BenchError as e:
        print(f"hgsmi bench: error: {e}", file=sys.stderr)
        return 1
    during = watch.stop()
    reasons = before + [f"during the run: {r}" for r in during.pop("reasons")]
    result["machine"].update(busy_during=during, unreliable=bool(reasons),
                             unreliable_reasons=reasons)
    if reasons:
        print("hgsmi bench: warning: UNRELIABLE results: " + "; ".join(reasons),
              file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    else:
        m = result["machine"]
        print(f"{m['cpu']}, {m['cpus']} CPUs, kernel {m['kernel']}; --pin {m['pin']} "
              f"{m['placement']}; {m['runs']} runs per figure; {m['elapsed_s']} s")
        if reasons:
            print("UNRELIABLE (the machine was busy): " + "; ".join(reasons))
        print(format_matrix(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
