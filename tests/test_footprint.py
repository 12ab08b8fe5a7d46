"""Host memory per guest is what the guest uses (issue #11, class 7).

A host's per-guest bookkeeping (the host heap's node array, the in-flight
bitmaps) is one entry per 64-byte granule: 2 MiB for a 16 MiB segment.
Allocated with calloc, glibc serves it from reused heap memory and zeroes
all of it, so every guest slot the host ever had stays resident.  Mapped
privately and anonymously, only the pages in use become resident and
munmap gives them back at once.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hgsmi

PEER = Path(__file__).parent / "peers" / "churn_host.py"
ROOT = Path(__file__).parent.parent
SIZE = 16 << 20  # the default segment: an 8 MiB host heap, 2 MiB of nodes
AT_ONCE = 8      # guests attached together, so that their tables coexist
CYCLES = 200     # attach, work, leave


def private_kib(pid: int) -> int:
    """Private memory of ``pid`` (clean + dirty; shared memfd segments only
    count while mapped, and the test reads this with no guest attached)."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return sum(int(fields[k].split()[0]) for k in ("Private_Clean", "Private_Dirty"))


def work(g: hgsmi.Guest, got: list[int]) -> None:
    """Both directions, both heaps: calls of a few sizes, then posts from the host."""
    for n in (1, 4000, 200_000):
        data = bytes([n & 0xFF]) * n
        assert g.call(0x20, 0, data, timeout=10) == data[::-1]
    got.clear()
    g.call(0x22, 0, b"16 50000", timeout=10)
    deadline = time.monotonic() + 10
    while len(got) < 16 and time.monotonic() < deadline:
        g.poll(0.05)
    assert len(got) == 16


def settle(pid: int) -> int:
    """The host's private KiB once it has reaped the guests that left."""
    time.sleep(0.3)
    return private_kib(pid)


@pytest.mark.timeout(240)
def test_host_private_memory_follows_what_guests_use(name, runtime_dir, no_leaks):
    """200 guests attach, work and leave, at most AT_ONCE at a time, each
    replaced as it goes (the soak's pattern): the host's private memory with
    AT_ONCE guests attached, and once all have left, stays near the start."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, str(PEER), name, str(SIZE)], stdout=subprocess.PIPE,
                         env=env, text=True)
    live: list[hgsmi.Guest] = []
    try:
        assert p.stdout.readline().strip() == "ready"
        start = settle(p.pid)
        for _ in range(CYCLES):
            if len(live) == AT_ONCE:
                live.pop(0).close()
            g = hgsmi.Guest(name)
            live.append(g)
            got: list[int] = []
            g.register(0x23, lambda m, got=got: got.append(len(m.data)))
            work(g, got)
        attached = settle(p.pid)
        while live:
            live.pop().close()
        end = settle(p.pid)
    finally:
        for g in live:
            g.close()
        p.terminate()
        p.wait(10)
    print(f"host private RSS: start {start} KiB, {attached} KiB with {AT_ONCE} guests, "
          f"end {end} KiB after {CYCLES} attach/work/leave cycles")
    # calloc'd tables: ~2 MiB resident per guest slot, whether used or not;
    # mapped ones: the few pages the guest's buffers touched.
    assert attached - start < AT_ONCE * 512, (start, attached, end)
    assert end - start < 4 << 10, (start, attached, end)
