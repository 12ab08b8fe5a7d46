# SPDX-License-Identifier: MIT
"""
The adaptive spin's targets (issue #13), measured in one run:

- the default ``Guest.call`` round trip (64 B) on an idle machine, p50/p99,
  beside the same with the spin off (``spin_us=0``);
- the same two with one busy-loop hog process per CPU: the adaptive spin must
  back off, so its RTT stays within 1.2x of the no-spin RTT;
- the CPU an idle, attached host and guest burn (default spin), over a few
  seconds, from /proc (the transports' ``idle_cpu``).

The spin and no-spin runs alternate (``--rounds`` pairs) so that drift in
the machine's load hits both alike; the figures are medians over rounds.
Run it when the machine is otherwise quiet:

    .venv/bin/python bench/spin_check.py [--count 3000] [--rounds 3] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

from hgsmi._native import lib
from hgsmi.bench.hogs import hogs
from hgsmi.bench.transports.hgsmi_transports import HgsmiCopy

DEFAULT = int(lib.HGSMI_SPIN_US_DEFAULT)


def rtt_us(spin: int, count: int) -> tuple[float, float]:
    """p50 and p99 (µs) of ``count`` 64 B calls with ``spin_us=spin`` on both sides."""
    lat = sorted(x * 1e6 for x in HgsmiCopy(spin).rtt(64, count, warmup=200, timeout=120))
    return lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]


def compare(count: int, rounds: int, label: str) -> dict[str, float]:
    """Alternate default-spin and no-spin runs; medians of their p50s and p99s."""
    runs: dict[int, list[tuple[float, float]]] = {DEFAULT: [], 0: []}
    for r in range(rounds):
        for spin in ((DEFAULT, 0) if r % 2 == 0 else (0, DEFAULT)):
            runs[spin].append(rtt_us(spin, count))
            p50, p99 = runs[spin][-1]
            print(f"  {label} round {r} spin_us={spin:<3} p50 {p50:7.1f} µs  p99 {p99:8.1f} µs",
                  file=sys.stderr, flush=True)

    def med(spin: int, i: int) -> float:
        return statistics.median(x[i] for x in runs[spin])

    out = {"spin_p50_us": med(DEFAULT, 0), "spin_p99_us": med(DEFAULT, 1),
           "nospin_p50_us": med(0, 0), "nospin_p99_us": med(0, 1)}
    out["ratio_p50"] = out["spin_p50_us"] / out["nospin_p50_us"]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=3000, help="calls per run (default 3000)")
    p.add_argument("--rounds", type=int, default=3, help="spin/no-spin pairs (default 3)")
    p.add_argument("--idle-seconds", type=float, default=5.0)
    p.add_argument("--skip", action="append", default=[], choices=("idle", "loaded", "cpu"),
                   help="leave a part out (repeatable)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args()
    ncpu = os.cpu_count() or 1
    res: dict[str, object] = {"spin_us_default": DEFAULT, "cpus": ncpu,
                              "loadavg_before": os.getloadavg()[0]}
    if "idle" not in args.skip:
        res["idle"] = compare(args.count, args.rounds, "idle")
    if "loaded" not in args.skip:
        with hogs(ncpu):
            res["loaded"] = compare(args.count, args.rounds, f"{ncpu} hogs")
    if "cpu" not in args.skip:
        cpu = HgsmiCopy(DEFAULT).idle_cpu(args.idle_seconds)
        res["idle_cpu_percent"] = {k: 100 * v / args.idle_seconds for k, v in cpu.items()}
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    print(f"spin_us default {DEFAULT}, {ncpu} CPUs, "
          f"load average before {res['loadavg_before']:.2f}")
    for part, target in (("idle", "p50 <= 5 µs"), ("loaded", "ratio <= 1.2")):
        r = res.get(part)
        if isinstance(r, dict):
            print(f"{part:7} default p50 {r['spin_p50_us']:7.1f} p99 {r['spin_p99_us']:8.1f} | "
                  f"spin off p50 {r['nospin_p50_us']:7.1f} p99 {r['nospin_p99_us']:8.1f} | "
                  f"ratio {r['ratio_p50']:.2f}x  (target: {target})")
    c = res.get("idle_cpu_percent")
    if isinstance(c, dict):
        print(f"idle CPU: host {c['host']:.3f}%  guest {c['guest']:.3f}%  (target: < 1% each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
