# SPDX-License-Identifier: MIT
"""
The interface every benchmark transport implements, and the helpers they share.

A transport moves messages between a **host** and a **guest** process. The
runner asks it for two measurements:

- ``stream(direction, size, seconds=..., count=...)``: one-way messages of
  ``size`` bytes, ``"g2h"`` (guest sends, host receives) or ``"h2g"``. The
  receiver touches (checks) the first and last byte of every message and
  times the steady state: the clock starts when the first message arrives
  and stops when the end marker arrives, so ``msgs`` excludes the first one.
- ``rtt(size, count)``: synchronous calls from guest to host, a request of
  ``size`` bytes answered by a reply of ``size`` bytes; the guest times each
  call, after ``warmup`` untimed ones.

Both take ``timeout`` (children are killed when it passes) and ``cpus``
(where the two peers run; see :data:`Cpus`).

Timings never include process start-up. Every payload is a pattern whose
first and last bytes the receiver checks (:func:`markers`), so a transport
that drops or misframes data fails instead of looking fast.

**4K aliasing.** On this CPU (AMD EPYC, Zen 3, KVM; glibc 2.36 memcpy) a copy
of 4 KiB..256 KiB whose destination lies 1..31 bytes above its source modulo
4096 (1..127 at 16 KiB) runs at about 2-3 GB/s instead of 36-95 GB/s:
measured 64 KiB at +16: 2.8 GB/s against 45 GB/s at +0 or +64, i.e. 16x
slower; 1 MiB and 2 KiB copies are unaffected. A Python ``bytearray`` of
128 KiB or more is malloc'ed by mmap and starts at 16 mod 4096, so copying
page-aligned shared memory into one hits the trap (256 KiB: 2.9 against
36 GB/s). Every buffer the baselines own is therefore an anonymous mmap from
:func:`page_buffer` (offset 0 mod 4096), and every shared-memory payload area
starts on a page, so each copy runs at delta 0. The kernel's page-by-page
copies for pipes and sockets hit it too when the user buffer sits 1..31 bytes
off a page (socket, send buffer at 4080: 1.6 against 3.6 GB/s at 64 KiB); for
the pipe framing that this causes, see ``stdlib.OsPipeChannel.send``.
"""
from __future__ import annotations

import math
import mmap
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal, TypedDict

Direction = Literal["g2h", "h2g"]
DIRECTIONS: tuple[Direction, ...] = ("g2h", "h2g")

#: Default bound on one measurement, start-up included; children are killed
#: when it passes.
DEFAULT_TIMEOUT = 60.0
#: Untimed calls before an rtt measurement.
DEFAULT_WARMUP = 50
#: Largest message any baseline accepts (64 MiB).
MAX_SIZE = 64 << 20

#: (host CPU, guest CPU), or None for no pinning. On this 2-vCPU KVM guest a
#: blocking wake-up of a peer on the other vCPU costs ~20-50 us, and varies
#: from run to run with the host's scheduling; on the same vCPU it is a
#: local context switch (C eventfd round trip: 5-8 us pinned together,
#: 6-100 us unpinned). Compare transports only under the same placement.
Cpus = tuple[int, int] | None


class StreamResult(TypedDict):
    """What ``Transport.stream`` returns: counted messages, their bytes and
    the receiver's steady-state seconds."""
    msgs: int
    bytes: int
    seconds: float


@dataclass(frozen=True)
class Job:
    """One measurement, as both peers see it.

    :param kind: ``"stream"`` or ``"rtt"``.
    :param direction: stream direction; ``"g2h"`` for rtt (the guest calls).
    :param size: payload bytes per message, request or reply.
    :param seconds: the sender stops after this long (None: no time bound).
    :param count: the sender stops after this many messages or calls.
    :param warmup: untimed rtt calls before the timed ones.
    :param timeout: hard bound in seconds on the whole measurement.
    :param cpus: (host CPU, guest CPU) to pin each peer to, or None to let
        the scheduler place them. Placement dominates latency on this VM
        (see :data:`Cpus`).
    """
    kind: Literal["stream", "rtt"]
    direction: Direction
    size: int
    seconds: float | None
    count: int | None
    warmup: int = 0
    timeout: float = DEFAULT_TIMEOUT
    cpus: Cpus = None

    def __post_init__(self) -> None:
        if self.kind not in ("stream", "rtt"):
            raise ValueError(f"kind must be 'stream' or 'rtt', not {self.kind!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be 'g2h' or 'h2g', not {self.direction!r}")
        if not 1 <= self.size <= MAX_SIZE:
            raise ValueError(f"size must be in 1..{MAX_SIZE}, not {self.size}")
        if self.seconds is None and self.count is None:
            raise ValueError("give seconds, count or both")
        if self.seconds is not None and not 0 < self.seconds < self.timeout:
            raise ValueError("seconds must be positive and below timeout")
        if self.count is not None and self.count < 2:
            raise ValueError("count must be at least 2")
        if self.warmup < 0 or not self.timeout > 0:
            raise ValueError("warmup must be >= 0 and timeout > 0")
        if self.cpus is not None and (len(self.cpus) != 2 or min(self.cpus) < 0):
            raise ValueError("cpus must be (host cpu, guest cpu)")

    def cpu(self, role: Literal["host", "guest"]) -> int | None:
        """The CPU ``role`` is pinned to, if any."""
        return None if self.cpus is None else self.cpus[0 if role == "host" else 1]

    @property
    def max_count(self) -> int:
        """The count bound, or effectively none."""
        return self.count if self.count is not None else 1 << 62

    @property
    def max_seconds(self) -> float:
        """The time bound, or effectively none."""
        return self.seconds if self.seconds is not None else math.inf


class Transport(ABC):
    """A way of moving messages between a host and a guest process."""

    #: Short name used in tables, e.g. ``"socket-rpc"``.
    name: ClassVar[str]

    def supports(self, workload: str) -> bool:
        """Whether this transport runs ``workload`` (``"g2h"``, ``"h2g"``,
        ``"rtt"``); every one unless a transport says otherwise."""
        return True

    def unavailable(self) -> str | None:
        """Why this transport cannot run on this machine (one line), or None.
        ``hgsmi bench`` reports its rows as skipped with that line."""
        return None

    @abstractmethod
    def stream(self, direction: Direction, size: int, *,
               seconds: float | None = 0.5, count: int | None = None,
               timeout: float = DEFAULT_TIMEOUT, cpus: Cpus = None) -> StreamResult:
        """Send ``size``-byte messages one way until ``seconds`` or ``count``
        runs out and return the receiver's steady-state measurement."""

    @abstractmethod
    def rtt(self, size: int = 64, count: int = 2000, *,
            seconds: float | None = None, warmup: int = DEFAULT_WARMUP,
            timeout: float = DEFAULT_TIMEOUT, cpus: Cpus = None) -> list[float]:
        """Make ``count`` synchronous guest->host calls (``size`` bytes each
        way) and return each call's latency in seconds; fewer when
        ``seconds`` runs out first."""


def page_buffer(size: int) -> mmap.mmap:
    """A private, zeroed, page-aligned buffer of ``size`` bytes (at least 1)
    whose start is 0 mod 4096; see the module note on 4K aliasing."""
    return mmap.mmap(-1, max(size, 1))


def markers(size: int) -> tuple[int, int]:
    """The first and last byte of the :func:`pattern_buffer` of ``size``."""
    return _PATTERN[0], _PATTERN[(size - 1) % 256]


def pattern_buffer(size: int) -> mmap.mmap:
    """A :func:`page_buffer` filled with the check pattern."""
    buf = page_buffer(size)
    reps = -(-size // 256)
    buf[:size] = (_PATTERN * reps)[:size]
    return buf


_PATTERN = bytes((i + 0x5A) & 0xFF for i in range(256))
