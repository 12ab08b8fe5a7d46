"""Is the machine quiet enough to benchmark?  Load average, other processes' CPU, steal.

`hgsmi bench` samples before the run and compares counters over it; figures
measured while something else ran, or while the hypervisor took the vCPUs
(steal time), are marked unreliable.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

#: thresholds: more than this is "busy"
LOAD_PER_CPU = 0.5        # 1-minute load average per CPU, before a run
OTHERS_SHARE = 0.15       # CPU used by other processes, as a share of all CPUs
STEAL_SHARE = 0.02        # time the hypervisor ran something else on our vCPUs


@dataclass
class Snapshot:
    """/proc/stat's aggregate CPU line and this process tree's CPU seconds, at one time."""
    busy: float    # seconds of all CPUs not idle (steal excluded)
    total: float   # seconds of all CPUs
    steal: float
    own: float     # this process and its waited-for children
    at: float

    @classmethod
    def take(cls) -> Snapshot:
        hz = os.sysconf("SC_CLK_TCK")
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal [guest guest_nice: in user]
        fields += [0] * (8 - len(fields))
        idle, steal = fields[3] + fields[4], fields[7]
        total = sum(fields[:8])
        t = os.times()
        return cls(busy=(total - idle - steal) / hz, total=total / hz, steal=steal / hz,
                   own=t.user + t.system + t.children_user + t.children_system,
                   at=time.monotonic())


def compare(a: Snapshot, b: Snapshot) -> dict[str, float]:
    """Shares of all CPU time between two snapshots: others (not us) and steal."""
    total = max(b.total - a.total, 1e-9)
    others = max(0.0, (b.busy - a.busy) - (b.own - a.own))
    return {"others": others / total, "steal": (b.steal - a.steal) / total}


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def quiet_check(sample_s: float = 0.5) -> list[str]:
    """Reasons the machine is busy now ([] if it looks quiet); samples ``sample_s``."""
    reasons = []
    try:
        cpus = os.cpu_count() or 1
        load = loadavg()
        if load > LOAD_PER_CPU * cpus:
            reasons.append(f"load average {load:.2f} on {cpus} CPUs")
        a = Snapshot.take()
        time.sleep(sample_s)
        reasons += _judge(compare(a, Snapshot.take()))
    except (OSError, ValueError):
        pass  # not Linux: nothing to say
    return reasons


def _judge(shares: dict[str, float]) -> list[str]:
    out = []
    if shares["others"] > OTHERS_SHARE:
        out.append(f"other processes used {100 * shares['others']:.0f}% of the CPUs")
    if shares["steal"] > STEAL_SHARE:
        out.append(f"steal time {100 * shares['steal']:.1f}% (the hypervisor ran others)")
    return out


class Watch:
    """Counters from :meth:`start` to :meth:`stop`: what else ran during a benchmark."""

    def __init__(self) -> None:
        self._a: Snapshot | None = None

    def start(self) -> None:
        try:
            self._a = Snapshot.take()
        except (OSError, ValueError):
            self._a = None

    def stop(self) -> dict[str, Any]:
        """``{"others": share, "steal": share, "reasons": [...]}`` over the run."""
        if self._a is None:
            return {"reasons": []}
        try:
            shares = compare(self._a, Snapshot.take())
        except (OSError, ValueError):
            return {"reasons": []}
        return {**{k: round(v, 4) for k, v in shares.items()}, "reasons": _judge(shares)}
