"""This process's own footprint, for ``hgsmi stat``: memory, fds, CPU time.

An operator watching a host for a leak or a flood wants these next to the
guests' counters; they come from /proc/self and ``os.times()``.
"""
from __future__ import annotations

import os
from typing import Any


def _kib_fields(path: str, keys: tuple[str, ...]) -> dict[str, int]:
    out = {}
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in keys:
                    out[k] = int(v.split()[0])
    except OSError:  # not Linux, or /proc not mounted: report what there is
        pass
    return out


def process_stats() -> dict[str, Any]:
    """RSS and private memory (bytes), open fds, threads and CPU seconds of this process.

    Private memory excludes shared mappings, so the guests' segments (shared
    memfds) do not count.  Fields that cannot be read are left out.
    """
    out: dict[str, Any] = {}
    st = _kib_fields("/proc/self/status", ("VmRSS", "Threads"))
    if "VmRSS" in st:
        out["rss"] = st["VmRSS"] * 1024
    if "Threads" in st:  # not KiB: a plain count, same line format
        out["threads"] = st["Threads"]
    priv = _kib_fields("/proc/self/smaps_rollup", ("Private_Clean", "Private_Dirty"))
    if priv:
        out["private"] = sum(priv.values()) * 1024
    try:
        out["fds"] = len(os.listdir("/proc/self/fd")) - 1  # less listdir's own
    except OSError:
        pass
    t = os.times()
    out["cpu_user_s"] = round(t.user, 3)
    out["cpu_system_s"] = round(t.system, 3)
    return out
