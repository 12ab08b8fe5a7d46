"""Where a host's control socket is: the runtime directory and the socket path.

Resolved as the C core resolves them (``native/src/names.c``), so that the
transport's messages and the tools name the same file.
"""
from __future__ import annotations

import os


def runtime_dir(given: str | None = None) -> str:
    """The socket directory: ``given``, else ``$HGSMI_RUNTIME_DIR``, else
    ``$XDG_RUNTIME_DIR/hgsmi``, else ``/tmp/hgsmi-<euid>``.  Raises nothing."""
    if given:
        return given
    if os.environ.get("HGSMI_RUNTIME_DIR"):
        return os.environ["HGSMI_RUNTIME_DIR"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "hgsmi")
    return f"/tmp/hgsmi-{os.geteuid()}"


def socket_path(name: str, rundir: str | None = None) -> str:
    """The control socket of host ``name`` (a name containing '/' is a path).
    Raises nothing."""
    return name if "/" in name else os.path.join(runtime_dir(rundir), name + ".sock")
