"""What an instance left behind: entries in /dev/shm, memfd segments still held."""
from __future__ import annotations

import os

from hgsmi._util import shm_prefix


def shm_entries(name: str) -> list[str]:
    """What instance ``name`` has in /dev/shm (segments and semaphores)."""
    prefix = shm_prefix(name)
    return sorted(e for e in os.listdir("/dev/shm")
                  if e.startswith(prefix) or e.startswith("sem." + prefix))


def memfds(name: str) -> list[str]:
    """Memfd segments of instance ``name`` this process still maps or holds an fd of.

    A memfd has no name in /dev/shm: it lives while any fd or mapping of it
    does, and /proc shows those as ``/memfd:hgsmi-<key>.<id> (deleted)``
    (the key is the name, or its short form: :func:`hgsmi._util.shm_prefix`).
    """
    tag = "memfd:" + shm_prefix(name)
    with open("/proc/self/maps") as f:
        found = [line.split(None, 5)[-1].strip() for line in f if tag in line]
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if tag in target:
            found.append(f"fd {fd}: {target}")
    return found
