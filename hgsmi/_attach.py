"""Attach a guest: the handshake (:func:`attach`) and the one line a failed one says."""
from __future__ import annotations

import errno
import os
from typing import Any

from ._native import ffi, lib
from ._paths import socket_path
from ._util import check_name, socket_too_long, timeout_ms
from ._wire import SPIN_US_DEFAULT
from .errors import HostNotFound, check


def attach(name: str, *, runtime_dir: str | os.PathLike[str] | None = None,
           spin_us: int = SPIN_US_DEFAULT, connect_timeout: float = 2.0,
           wait: float = 0.0) -> Any:
    """Attach to the host ``name`` (or a socket path); return the C guest handle.

    Blocks for the handshake (up to ``connect_timeout`` seconds, and up to
    ``wait`` seconds for a host that is not there yet), so the asyncio face
    runs it in a thread.  Raises ValueError for a bad name or ``wait``,
    :class:`HostNotFound`, :class:`AccessDenied`, :class:`ProtocolError`,
    :class:`Timeout` (see :class:`hgsmi.Guest`).
    """
    raw_name = check_name(name, path_ok=True)
    cfg = ffi.new("struct hgsmi_guest_config *")
    rundir = None
    if runtime_dir is not None:
        rundir = ffi.new("char[]", os.fsencode(runtime_dir))  # alive until attached
        cfg.runtime_dir = rundir
    cfg.spin_us = spin_us
    cfg.connect_timeout_ms = max(1, timeout_ms(connect_timeout))
    if not isinstance(wait, (int, float)) or not 0 <= wait < 1 << 21:
        raise ValueError(f"wait must be 0 to {1 << 21} seconds, not {wait!r}")
    cfg.wait_ms = max(1, timeout_ms(wait)) if wait > 0 else 0
    out = ffi.new("struct hgsmi_guest **")
    rc = lib.hgsmi_guest_attach(raw_name, cfg, out)
    del rundir
    if rc == -errno.ENOENT:
        raise HostNotFound(errno.ENOENT, no_host_message(name, runtime_dir, wait))
    if rc == -errno.ENAMETOOLONG and "/" not in os.fsdecode(raw_name):
        raise ValueError(socket_too_long(name, runtime_dir))
    if rc in (-errno.EINVAL, -errno.ENAMETOOLONG):
        raise ValueError(f"bad host name {name!r}: "
                         f"{ffi.string(lib.hgsmi_strerror(rc)).decode()}")
    check(rc, f"attach to {name!r}")
    return out[0]


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
