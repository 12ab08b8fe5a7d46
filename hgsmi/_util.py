"""Small private helpers shared by the host and guest wrappers."""
from __future__ import annotations

import math
from typing import Any

from ._native import ffi

_BACKENDS = {"eventfd": 1, "semaphore": 2}


def timeout_ms(timeout: float | None) -> int:
    """Seconds (None: forever, 0: only try) to the C core's milliseconds."""
    if timeout is None:
        return -1
    if timeout < 0:
        raise ValueError("timeout must be None or >= 0")
    return min(int(math.ceil(timeout * 1000)), 2**31 - 1)


def backend_id(doorbell: str) -> int:
    """The C constant for a doorbell backend name."""
    try:
        return _BACKENDS[doorbell]
    except KeyError:
        raise ValueError(f"doorbell must be one of {sorted(_BACKENDS)}, not {doorbell!r}") from None


def backend_name(backend: int) -> str:
    return {v: k for k, v in _BACKENDS.items()}.get(backend, str(backend))


def check_channel(channel: int, info: int = 0) -> None:
    """Reject a channel or info that does not fit the wire format."""
    if not isinstance(channel, int) or not 1 <= channel <= 255:
        raise ValueError(f"channel must be an int in 1..255, not {channel!r}")
    if not isinstance(info, int) or not 0 <= info <= 0xFFFF:
        raise ValueError(f"info must be an int in 0..65535, not {info!r}")


def struct_dict(cdata: Any) -> dict[str, Any]:
    """A plain dict of a C struct's fields (nested structs included)."""
    out: dict[str, Any] = {}
    for name, field in ffi.typeof(cdata).fields:
        value = getattr(cdata, name)
        out[name] = struct_dict(value) if field.type.kind == "struct" else value
    return out
