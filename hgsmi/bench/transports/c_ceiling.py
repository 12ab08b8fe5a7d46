# SPDX-License-Identifier: MIT
"""
"c-ceiling": what plain C gets on this machine, as an upper bound.

``stream`` runs ``ceiling_ring`` (``hgsmi/bench/c/ceiling_ring.c``): an
SPSC ring of slots in POSIX shm between two forked processes, busy-polling,
where the producer memcpy()s each payload in and the consumer checks the
first and last byte. ``rtt`` runs ``ceiling_eventfd``: blocking eventfd
ping-pong between two forked processes with the payload in shm. The
programs are compiled on first use into a per-user cache (:mod:`.cbuild`);
without a compiler :meth:`CCeiling.unavailable` says so and ``hgsmi bench``
skips its rows. Each run is one process group that is killed as a whole on
timeout or error.

The ring is symmetric (both peers are the same code), so ``direction`` only
labels the run.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
from typing import Any, Literal

from . import cbuild
from .base import DEFAULT_TIMEOUT, DEFAULT_WARMUP, Cpus, Direction, Job, StreamResult, Transport


def run_program(name: str, args: list[str], timeout: float) -> dict[str, Any]:
    """Run one of the bench's C programs (compiled first if need be) and
    parse the JSON line it prints; the whole process group is killed if it
    fails or overruns.  Raises :class:`~.cbuild.Unavailable` if the program
    cannot be built here, RuntimeError if it fails."""
    exe = cbuild.program(name)
    proc = subprocess.Popen([str(exe), *args, "-T", str(int(timeout) + 1)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout + 5)
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{name} {' '.join(args)} failed ({proc.returncode}): {err.strip()}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def pin_args(job: Job, parent: Literal["host", "guest"],
         child: Literal["host", "guest"]) -> list[str]:
    """``-p parent_cpu,child_cpu`` for a pinned job, else nothing."""
    if job.cpus is None:
        return []
    return ["-p", f"{job.cpu(parent)},{job.cpu(child)}"]


class CCeiling(Transport):
    """Plain C over shm (see module docstring)."""

    name = "c-ceiling"

    def unavailable(self) -> str | None:
        """Why the ceiling programs cannot be built here (no compiler), or None."""
        return cbuild.unbuildable("ceiling_ring", "ceiling_eventfd")

    def stream(self, direction: Direction, size: int, *,
               seconds: float | None = 0.5, count: int | None = None,
               timeout: float = DEFAULT_TIMEOUT, cpus: Cpus = None) -> StreamResult:
        job = Job("stream", direction, size, seconds, count, timeout=timeout, cpus=cpus)
        # The producer (parent) is the sender, the consumer (child) the receiver.
        pin = pin_args(job, "guest", "host") if direction == "g2h" else \
            pin_args(job, "host", "guest")
        out = run_program("ceiling_ring", ["-s", str(size), "-n", str(count or 0),
                                           "-t", repr(seconds or 0.0), *pin], timeout)
        return {"msgs": out["msgs"], "bytes": out["bytes"], "seconds": out["seconds"]}

    def rtt(self, size: int = 64, count: int = 2000, *,
            seconds: float | None = None, warmup: int = DEFAULT_WARMUP,
            timeout: float = DEFAULT_TIMEOUT, cpus: Cpus = None) -> list[float]:
        job = Job("rtt", "g2h", size, seconds, count, warmup, timeout, cpus)
        # The caller (parent) is the guest, the server (child) the host.
        out = run_program("ceiling_eventfd", ["-s", str(size), "-n", str(count),
                                              "-w", str(warmup), "-t", repr(seconds or 0.0),
                                              *pin_args(job, "guest", "host")], timeout)
        return [us * 1e-6 for us in out["samples_us"]]
