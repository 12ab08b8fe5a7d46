#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""
Run every baseline transport once, briefly, and print a table.

    python3 bench/run_baselines.py                      # g2h 64 B..1 MiB, rtt 64 B
    python3 bench/run_baselines.py --seconds 1 --direction h2g --only hgcm socket-rpc
    python3 bench/run_baselines.py --pin same           # both peers on one CPU

Each cell is one stream of ``--seconds`` seconds: MB/s (1e6 bytes per second)
and messages per second, as measured by the receiver. rtt is ``--rtt-count``
synchronous 64 B calls, median and p99 in microseconds. The second table
divides each transport by hgcm from the same run. The machine is shared and
noisy: compare within one run, never across runs, and only under the same
``--pin``: "none" lets the scheduler place the peers, "same" pins both to
one CPU, "split" pins host and guest to two different CPUs. On this VM a
blocking wake-up across vCPUs costs tens of microseconds, so the placement
changes rtt and synchronous transports several-fold (see
hgsmi/bench/transports/base.py, ``Cpus``).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from hgsmi.bench.runner import SIZES, human_size, percentile, placement
from hgsmi.bench.transports import DIRECTIONS, Transport, baselines


def measure(t: Transport, args: argparse.Namespace) -> dict[str, object]:
    """One transport's row: stream results by size, then rtt; errors are
    recorded in place so that the other rows still run."""
    row: dict[str, object] = {}
    for size in args.sizes:
        try:
            row[size] = t.stream(args.direction, size, seconds=args.seconds, cpus=args.cpus)
        except Exception as exc:  # a failed cell must not hide the others
            row[size] = exc
    try:
        lat = t.rtt(64, args.rtt_count, cpus=args.cpus)
        row["rtt"] = (percentile(lat, 50) * 1e6, percentile(lat, 99) * 1e6)
    except Exception as exc:
        row["rtt"] = exc
    return row


def rate(cell: object) -> tuple[float, float] | None:
    """(MB/s, msgs/s) of a stream cell, or None if it failed."""
    if isinstance(cell, dict) and cell["seconds"] > 0:
        return cell["bytes"] / cell["seconds"] / 1e6, cell["msgs"] / cell["seconds"]
    return None


def fmt_count(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


def print_tables(rows: dict[str, dict[str, object]], args: argparse.Namespace) -> None:
    heads = [f"{args.direction} {human_size(s)}" for s in args.sizes] + ["rtt p50 us", "rtt p99 us"]
    width = max(len(n) for n in rows) + 2
    print("\n" + "transport".ljust(width) + "".join(h.rjust(22) for h in heads))
    for name, row in rows.items():
        cells = []
        for size in args.sizes:
            r = rate(row[size])
            cells.append(f"{r[0]:.0f} MB/s {fmt_count(r[1])}/s" if r else "ERROR")
        rtt = row["rtt"]
        cells += [f"{v:.1f}" for v in rtt] if isinstance(rtt, tuple) else ["ERROR", "ERROR"]
        print(name.ljust(width) + "".join(c.rjust(22) for c in cells))
    base = rows.get("hgcm")
    if base is None:
        return
    print("\nx hgcm (throughput: higher is better; rtt p50: lower is better)")
    for name, row in rows.items():
        cells = []
        for size in args.sizes:
            r, b = rate(row[size]), rate(base[size])
            cells.append(f"{r[0] / b[0]:.2f}x" if r and b and b[0] else "-")
        rtt, brtt = row["rtt"], base["rtt"]
        ok = isinstance(rtt, tuple) and isinstance(brtt, tuple)
        cells.append(f"{rtt[0] / brtt[0]:.2f}x" if ok else "-")  # type: ignore[index]
        print(name.ljust(width) + "".join(c.rjust(22) for c in cells))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=0.5, help="per stream (default 0.5)")
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--direction", choices=DIRECTIONS, default="g2h")
    ap.add_argument("--rtt-count", type=int, default=2000)
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these transports")
    ap.add_argument("--pin", choices=("none", "same", "split"), default="none",
                    help="peer placement (default: none, the scheduler decides)")
    args = ap.parse_args(argv)
    args.cpus = placement(args.pin)

    transports = [t for t in baselines() if not args.only or t.name in args.only]
    print(f"placement: --pin {args.pin} (host, guest cpus: {args.cpus}); "
          f"load average before: {' '.join(open('/proc/loadavg').read().split()[:3])}")
    start = time.monotonic()
    rows: dict[str, dict[str, object]] = {}
    for t in transports:
        t0 = time.monotonic()
        rows[t.name] = measure(t, args)
        print(f"  {t.name}: {time.monotonic() - t0:.1f} s", flush=True)
    print_tables(rows, args)
    errors = [(n, k, v) for n, row in rows.items() for k, v in row.items()
              if isinstance(v, Exception)]
    for name, key, exc in errors:
        print(f"\n{name} {key}: {exc}", file=sys.stderr)
    print(f"\ntotal {time.monotonic() - start:.1f} s; load average after: "
          f"{' '.join(open('/proc/loadavg').read().split()[:3])}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
