"""Why an attach found no host: the one line a guest's HostNotFound says."""
from __future__ import annotations

import os

from ._paths import socket_path


def no_host_message(name: str, runtime_dir: str | os.PathLike[str] | None,
                    wait: float) -> str:
    """Say which of the cases behind the core's -ENOENT this is.

    The runtime directory does not exist (a mistyped ``--runtime-dir``), no
    socket is there (no host of that name), or a socket is there that nobody
    listens on (a host that died without removing it).
    """
    rundir = None if runtime_dir is None else os.fsdecode(runtime_dir)
    path = socket_path(name, rundir)
    where = os.path.dirname(path) or "."
    if not os.path.isdir(where):
        return f"no host {name!r}: the runtime directory {where} does not exist"
    waited = f" (waited {wait:g} s)" if wait > 0 else ""
    if os.path.exists(path):
        return (f"no host {name!r} is running{waited}: nobody listens on {path} "
                "(its host has gone)")
    return f"no host {name!r} is running{waited}: no socket {path}"
