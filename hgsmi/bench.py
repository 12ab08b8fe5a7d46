"""``hgsmi bench``: hgsmi against HGCM-style copying, the stdlib and the
machine's own C ceiling, side by side in one run (README: Benchmarks).

    hgsmi bench [--quick] [--json] [--plot FILE.png] [--pin split|same|none]

The transports live in the source tree's ``bench/`` directory (not part of
the installed package); this module finds it next to the package (flat,
editable layout) and says so in one line if it is absent.

Besides the Python transports, ``hgsmi-c`` runs the same workloads from C
through libhgsmi (bench/c/hgsmi_c.c), and ``hgsmi-async`` with an asyncio
guest (hgsmi.aio.AsyncGuest; its spin_us is the host's only), including
``call-concurrent``: calls/s with ASYNC_INFLIGHT coroutines calling at once.

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
from typing import Any

from . import busy

SIZES = (64, 4096, 65536, 1 << 20)
STREAMS = ("g2h-stream", "h2g-stream")
#: the adaptive spin (µs) for the call-rtt "spin" run, chosen by measurement:
#: with the peers on two vCPUs, 50 µs covers a round trip (8 µs median) while
#: 10 µs does not (37 µs); see README "Benchmarks".
DEFAULT_SPIN_US = 50
#: coroutines with a call in flight in the hgsmi-async call-concurrent row
ASYNC_INFLIGHT = 256
#: hgsmi-async stream sizes under --quick (every spawned Python run costs
#: ~0.3 s of start-up, more than the 0.1 s it measures)
QUICK_ASYNC_SIZES = (64, 65536)
#: the peers that --quick runs at those two sizes only; iceoryx2-poll, the one
#: the zero-copy targets compare with, runs at every size
QUICK_TWO_SIZES = ("iceoryx2-event", "faster-fifo", "pyzmq")


class BenchError(Exception):
    """A one-line failure of the benchmark front end."""


def bench_dir() -> str:
    """The source tree's bench/ directory, or BenchError."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(here, "bench")
    if not os.path.isfile(os.path.join(path, "transports", "base.py")):
        raise BenchError(f"the benchmark suite is not installed: no {path}/transports "
                         "(run from a source checkout: pip install -e . in the repository)")
    return path


def _import_transports() -> Any:
    path = bench_dir()
    if path not in sys.path:
        sys.path.insert(0, path)
    import transports  # noqa: F401
    from transports import hgsmi_transports
    return transports, hgsmi_transports


def _extra_transports() -> tuple[Any, Any]:
    """The hgsmi-c and hgsmi-async transport classes (after _import_transports)."""
    from transports.hgsmi_async import HgsmiAsync
    from transports.hgsmi_c import HgsmiC
    return HgsmiC, HgsmiAsync


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
    out = []
    for _ in range(n):
        try:
            out.append(fn())
        except Exception as e:  # one failed run must not sink the table
            _log(args, f"  {what}: run failed: {str(e).strip().splitlines()[-1]}")
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


def stream_row(t: Any, workload: str, size: int, args: argparse.Namespace,
               runs: int) -> dict[str, Any] | None:
    direction = workload[:3]
    res = _repeat(runs, lambda: t.stream(direction, size, seconds=args.seconds,
                                         cpus=args.cpus, timeout=60),
                  f"{t.name} {workload} {size}", args)
    return rate_row(res, t.name, workload, size)


def rtt_row(t: Any, workload: str, args: argparse.Namespace,
            runs: int) -> dict[str, Any] | None:
    res = _repeat(runs, lambda: t.rtt(64, args.rtt_count, cpus=args.cpus, timeout=60),
                  f"{t.name} {workload}", args)
    if not res:
        return None
    return {"transport": t.name, "workload": workload, "size": 64,
            "p50_us": round(statistics.median(percentile(r, 50) for r in res) * 1e6, 2),
            "p99_us": round(statistics.median(percentile(r, 99) for r in res) * 1e6, 2),
            "runs": len(res)}


def concurrent_row(t: Any, args: argparse.Namespace) -> dict[str, Any] | None:
    """hgsmi-async with ASYNC_INFLIGHT coroutines calling at once (64 B echo)."""
    res = _repeat(args.runs, lambda: t.concurrent(64, ASYNC_INFLIGHT, seconds=args.seconds,
                                                  cpus=args.cpus, timeout=60),
                  f"{t.name} call-concurrent", args)
    return rate_row(res, t.name, "call-concurrent", 64, inflight=ASYNC_INFLIGHT)


def run(args: argparse.Namespace) -> dict[str, Any]:
    transports, ht = _import_transports()
    args.cpus = placement(args.pin)
    info = machine(args)
    base = transports.baselines()
    info["peers_missing"] = transports.thirdparty.available()
    for name, why in info["peers_missing"].items():
        _log(args, f"{name}: left out: {why}")
    names = {t.name: t for t in base}
    hg = {spin: {t.name: t for t in ht.hgsmi_transports(spin)}
          for spin in (0, args.spin_us)}
    HgsmiC, HgsmiAsync = _extra_transports()
    # hgsmi streams with the adaptive spin, from C and from Python: the C
    # ceiling they are compared with busy-polls, and a user streaming would
    # configure the spin (it costs nothing idle: see idle-cpu).
    hgc = HgsmiC(args.spin_us)
    hga = HgsmiAsync(args.spin_us)
    rows: list[dict[str, Any]] = []
    t_start = args.t_start = time.monotonic()

    def add(row: dict[str, Any] | None, **extra: Any) -> None:
        if row is not None:
            row.update(extra)
            rows.append(row)

    spinning = [hgc, hga] + list(hg[args.spin_us].values())
    stream_ts = [names["c-ceiling"], hgc] + list(hg[args.spin_us].values()) + [hga] + \
        [t for t in base if t.name != "c-ceiling"]
    for workload in STREAMS:
        for t in stream_ts:
            if hasattr(t, "supports") and not t.supports(workload[:3]):
                continue
            _log(args, f"{workload}: {t.name}")
            # --quick: the async guest and most peers only at the two regimes
            # (per-message cost, bulk copy), to keep the run short.
            two = t is hga or t.name in QUICK_TWO_SIZES
            sizes = [z for z in args.sizes if z in QUICK_ASYNC_SIZES] \
                if two and args.quick else args.sizes
            for size in sizes or args.sizes:
                small_c = size == 64 and t.name in ("c-ceiling", "hgsmi-c")
                add(stream_row(t, workload, size, args,
                               max(args.runs, 5) if small_c else args.runs),
                    **({"spin_us": t.spin_us} if t in spinning else {}))
    # call-rtt: baselines once (they never spin); hgsmi with spin, and without.
    for t in base:
        if hasattr(t, "supports") and not t.supports("rtt"):
            continue
        _log(args, f"call-rtt: {t.name}")
        add(rtt_row(t, "call-rtt", args,
                    max(args.runs, 5) if t.name == "c-ceiling" else args.runs))
    for spin, wl in ((args.spin_us, "call-rtt"), (0, "call-rtt-nospin")):
        ts = [HgsmiC(spin)] + [t for t in hg[spin].values() if t.supports("rtt")] + \
            [HgsmiAsync(spin)]
        for t in ts:
            _log(args, f"{wl}: {t.name} (spin_us={spin})")
            add(rtt_row(t, wl, args, args.runs), spin_us=spin)
    # Many calls in flight from one asyncio guest (issue 6): calls/s.
    _log(args, f"call-concurrent: hgsmi-async ({ASYNC_INFLIGHT} in flight)")
    add(concurrent_row(hga, args))
    # idle-cpu: the adaptive-spin configuration, attached and idle.
    _log(args, f"idle-cpu: hgsmi ({args.idle_seconds:g} s x {args.runs})")
    t = hg[args.spin_us]["hgsmi-copy"]
    # the runs are idle, so they run side by side (each pair is measured alone
    # by getrusage in its own processes)
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(args.runs) as ex:
        futs = [ex.submit(t.idle_cpu, args.idle_seconds, args.cpus) for _ in range(args.runs)]
        idles = []
        for fut in futs:
            try:
                idles.append(fut.result())
            except Exception as e:
                _log(args, f"  idle-cpu: run failed: {e}")
    if idles:
        for role in ("host", "guest"):
            cpu = statistics.median(r[role] for r in idles)
            rows.append({"transport": f"hgsmi-{role}", "workload": "idle-cpu",
                         "seconds": args.idle_seconds, "cpu_s": round(cpu, 4),
                         "cpu_percent": round(100 * cpu / args.idle_seconds, 3),
                         "spin_us": args.spin_us, "runs": len(idles)})
    # guests-8: aggregate g2h at 64 KiB.
    _log(args, "guests-8: hgsmi-copy and hgsmi-batch, 64 KiB")
    for name in ("hgsmi-copy", "hgsmi-batch"):
        t = ht.hgsmi_transports(0)[["hgsmi-copy", "hgsmi-zerocopy", "hgsmi-batch"].index(name)]
        t.segment = 8 << 20
        res = _repeat(args.runs, functools.partial(t.guests_n, 8, 65536, seconds=args.seconds),
                      f"guests-8 {name}", args)
        add(rate_row(res, name, "guests-8", 65536, spin_us=0))
    add_ratios(rows)
    info["elapsed_s"] = round(time.monotonic() - t_start, 1)
    try:
        info["loadavg_after"] = open("/proc/loadavg").read().split()[:3]
    except OSError:
        pass
    return {"machine": info, "results": rows}


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """x_hgcm and pct_c_ceiling for each row, against the same workload and
    size of this run (rtt: hgcm p50 / p50; the no-spin rtt is compared with
    the C eventfd ping-pong of call-rtt)."""
    idx = {(r["transport"], r["workload"], r.get("size")): r for r in rows}
    for r in rows:
        wl, size = r["workload"], r.get("size")
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
            f(r.get("msgs_per_s"), ",.0f"), f(r.get("mb_per_s"), ",.1f"),
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
                cells.append("" if r is None else
                             f"{r['mb_per_s']:,.1f}; {r.get('x_hgcm', 0):.1f}x; "
                             f"{r.get('pct_c_ceiling', 0):.1f}%")
            out.append(f"| {n} | " + " | ".join(cells) + " |")
        out.append("")
    out.append("**call-rtt, idle-cpu, guests-8**\n")
    other = {"machine": result["machine"],
             "results": [r for r in rows if r["workload"] not in STREAMS]}
    out.append(format_table(other))
    return "\n".join(out)


def plot(result: dict[str, Any], path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchError("--plot needs matplotlib: pip install -e '.[bench]'") from None
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
