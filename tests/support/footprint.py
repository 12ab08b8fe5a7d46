"""What a process holds: open fds and memory, for the leak checks of the
re-attach tests (both the test process and tests/peers/robust_peer.py)."""
from __future__ import annotations

import ctypes
import os


def fd_count() -> int:
    """Open file descriptors of this process."""
    return len(os.listdir("/proc/self/fd"))


def mem_kib() -> int:
    """This process's memory: the RSS, or under ASan (whose quarantine keeps
    freed memory resident) the live heap."""
    try:
        live = ctypes.CDLL(None).__sanitizer_get_current_allocated_bytes
    except AttributeError:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    live.restype = ctypes.c_size_t
    return live() // 1024
