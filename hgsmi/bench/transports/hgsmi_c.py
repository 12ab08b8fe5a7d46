# SPDX-License-Identifier: MIT
"""
"hgsmi-c": the hgsmi workloads driven from C through libhgsmi, with no Python
in either peer: ``hgsmi_c`` (``hgsmi/bench/c/hgsmi_c.c``: see its header
comment), built on first use where libhgsmi is available (:mod:`.cbuild`).

The host is the program's parent process, the guest a forked child, each
pinned as ``cpus`` says (the same placement as the other transports). g2h
streams with ``hgsmi_guest_send`` (many messages per doorbell), h2g with
``hgsmi_conn_alloc`` + ``hgsmi_conn_submit_many`` (many per IRQ); rtt is
``hgsmi_guest_call``. The library checksums and verifies every buffer, as
for any user. ``spin_us`` is the library's adaptive spin on both sides.
"""
from __future__ import annotations

from . import cbuild
from .base import DEFAULT_TIMEOUT, DEFAULT_WARMUP, Cpus, Direction, Job, StreamResult, Transport
from .c_ceiling import pin_args, run_program


class HgsmiC(Transport):
    """libhgsmi from C (see module docstring)."""

    name = "hgsmi-c"

    def __init__(self, spin_us: int = 0, batch: int = 0) -> None:
        self.spin_us = spin_us
        self.batch = batch  # messages per doorbell; 0: the program's choice

    def unavailable(self) -> str | None:
        """Why hgsmi_c cannot be built here (no compiler, no libhgsmi), or None."""
        return cbuild.unbuildable("hgsmi_c")

    def stream(self, direction: Direction, size: int, *,
               seconds: float | None = 0.5, count: int | None = None,
               timeout: float = DEFAULT_TIMEOUT, cpus: Cpus = None) -> StreamResult:
        job = Job("stream", direction, size, seconds, count, timeout=timeout, cpus=cpus)
        out = run_program("hgsmi_c", ["-m", direction, "-s", str(size), "-n", str(count or 0),
                                      "-t", repr(seconds or 0.0), "-S", str(self.spin_us),
                                      "-b", str(self.batch),
                                      *pin_args(job, "host", "guest")], timeout)
        return {"msgs": out["msgs"], "bytes": out["bytes"], "seconds": out["seconds"]}

    def rtt(self, size: int = 64, count: int = 2000, *,
            seconds: float | None = None, warmup: int = DEFAULT_WARMUP,
            timeout: float = DEFAULT_TIMEOUT, cpus: Cpus = None) -> list[float]:
        job = Job("rtt", "g2h", size, seconds, count, warmup, timeout, cpus)
        out = run_program("hgsmi_c", ["-m", "rtt", "-s", str(size), "-n", str(count),
                                      "-w", str(warmup), "-t", repr(seconds or 0.0),
                                      "-S", str(self.spin_us),
                                      *pin_args(job, "host", "guest")], timeout)
        return [us * 1e-6 for us in out["samples_us"]]
