# SPDX-License-Identifier: MIT
"""
"c-ceiling": what plain C gets on this machine, as an upper bound.

``stream`` runs ``bench/c/build/ceiling_ring``: an SPSC ring of slots in
POSIX shm between two forked processes, busy-polling, where the producer
memcpy()s each payload in and the consumer checks the first and last byte.
``rtt`` runs ``bench/c/build/ceiling_eventfd``: blocking eventfd ping-pong
between two forked processes with the payload in shm. The programs are
built with ``make -C bench/c`` when needed, and each run is one process
group that is killed as a whole on timeout or error.

The ring is symmetric (both peers are the same code), so ``direction`` only
labels the run.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
from typing import Any, Literal

from .base import DEFAULT_TIMEOUT, DEFAULT_WARMUP, Cpus, Direction, Job, StreamResult, Transport

C_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "c")
_built = False


def build() -> None:
    """``make -C bench/c`` once per process (make skips what is fresh); it
    builds the ceiling programs and hgsmi_c (which needs libhgsmi)."""
    global _built
    if _built:
        return
    proc = subprocess.run(["make", "--no-print-directory", "-s", "-C", C_DIR],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"building bench/c failed:\n{proc.stdout}{proc.stderr}")
    _built = True


def run_program(name: str, args: list[str], timeout: float) -> dict[str, Any]:
    """Run one bench/c program and parse the JSON line it prints; the
    whole process group is killed if it fails or overruns."""
    build()
    exe = os.path.join(C_DIR, "build", name)
    proc = subprocess.Popen([exe, *args, "-T", str(int(timeout) + 1)],
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

    def stream(self, direction: Direction, size: int, *,
               seconds: float | None = 0.5, count: int | None = None,
               timeout: float = DEFAULT_TIMEOUT, cpus: Cpus = None) -> StreamResult:
        job = Job("stream", direction, size, seconds, count, timeout=timeout, cpus=cpus)
        # The producer (parent) is the sender, the consumer (child) the receiver.
        sender, receiver = ("guest", "host") if direction == "g2h" else ("host", "guest")
        pin = pin_args(job, sender, receiver)
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
