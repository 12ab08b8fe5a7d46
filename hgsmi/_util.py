"""Small private helpers shared by the host and guest wrappers."""
from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from typing import Any

from ._native import ffi, lib
from ._paths import socket_path
from ._wire import BACKENDS, NUMBER_OF_CHANNELS, SEGMENTS


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
        return BACKENDS[doorbell]
    except KeyError:
        raise ValueError(f"doorbell must be one of {sorted(BACKENDS)}, not {doorbell!r}") from None


def segment_id(segment: str) -> int:
    """The C constant for a segment kind: ``"memfd"`` or ``"posix"``; else ValueError."""
    try:
        return SEGMENTS[segment]
    except (KeyError, TypeError):
        raise ValueError(f"segment must be one of {sorted(SEGMENTS)}, not {segment!r}") from None


def backend_name(backend: int) -> str:
    return {v: k for k, v in BACKENDS.items()}.get(backend, str(backend))


def check_channel(channel: int, info: int = 0) -> None:
    """Reject a channel or info that does not fit the wire format."""
    check_int("channel", channel, 1, NUMBER_OF_CHANNELS - 1)
    check_int("info", info, 0, 0xFFFF)


def check_int(what: str, value: Any, lo: int, hi: int) -> int:
    """``value`` if it is an int in lo..hi: TypeError if not an int, ValueError if out of range."""
    if not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__} {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{what} must be an int in {lo}..{hi}, not {value!r}")
    return value


#: characters in an instance name (the C core's HGSMI_INSTANCE_NAME_MAX)
NAME_MAX: int = lib.HGSMI_INSTANCE_NAME_MAX
#: bytes of a socket path: sun_path's 108, less the NUL
SOCKET_PATH_MAX = 107
_NAME = re.compile(rb"[A-Za-z0-9_.-]+")


def check_name(name: Any, path_ok: bool = False) -> bytes:
    """An instance name (or, with ``path_ok``, a socket path) as bytes for C.

    A name is 1 to :data:`NAME_MAX` (64) of ``[A-Za-z0-9_.-]``, not starting
    with ``.``; its socket ``RUNTIME_DIR/NAME.sock`` must also fit in
    :data:`SOCKET_PATH_MAX` bytes (checked when the host or guest starts).
    TypeError for a non-path type, ValueError otherwise.
    """
    if not isinstance(name, (str, bytes, os.PathLike)):
        raise TypeError(f"the instance name must be a str, not {type(name).__name__}")
    raw = os.fsencode(name)
    if b"\0" in raw:
        raise ValueError(f"instance name {name!r} contains a NUL byte")
    if path_ok and b"/" in raw:
        return raw
    if not raw:
        raise ValueError(f"the instance name is empty (1 to {NAME_MAX} characters)")
    if len(raw) > NAME_MAX:
        raise ValueError(f"instance name {name!r} is too long: {len(raw)} characters, "
                         f"at most {NAME_MAX} (HGSMI_INSTANCE_NAME_MAX)")
    if not _NAME.fullmatch(raw):
        raise ValueError(f"instance name {name!r} may only contain letters, digits, "
                         "'_', '-' and '.' (no '/')")
    if raw.startswith(b"."):
        raise ValueError(f"instance name {name!r} may not start with '.'")
    return raw


def shm_prefix(name: str) -> str:
    """What instance ``name`` creates in /dev/shm starts with this (its
    semaphores with ``sem.`` and this): ``hgsmi-NAME.`` for a name of up to
    16 characters without ``.``, else a short form with a hash of the name.
    ValueError/TypeError for a bad name, as :func:`check_name`."""
    out = ffi.new("char[]", lib.HGSMI_SHM_PREFIX_MAX)
    n = lib.hgsmi_shm_prefix(check_name(name), out, len(out))
    if n < 0:  # check_name has the same rule: only a bug gets here
        raise ValueError(f"instance name {name!r}: {ffi.string(lib.hgsmi_strerror(n)).decode()}")
    return str(ffi.string(out, n).decode())


def socket_too_long(name: str, runtime_dir: str | os.PathLike[str] | None) -> str:
    """Why the socket path of ``name`` does not fit: the message for -ENAMETOOLONG."""
    path = socket_path(name, None if runtime_dir is None else os.fsdecode(runtime_dir))
    room = SOCKET_PATH_MAX - (len(os.fsencode(path)) - len(os.fsencode(name)))
    return (f"the socket path {path!r} is {len(os.fsencode(path))} bytes, and sun_path "
            f"holds at most {SOCKET_PATH_MAX}: in this runtime directory a name may have "
            f"at most {max(room, 0)} characters (use a shorter name, or a shorter "
            "--runtime-dir / $HGSMI_RUNTIME_DIR)")


#: ``ffi.from_buffer``, bound once: ``ffi.from_buffer`` makes a bound method
#: each time (hot paths call this inline, and raise :func:`not_bytes_like` on
#: its TypeError, without :func:`as_buffer`'s frame)
from_buffer = ffi.from_buffer


def not_bytes_like(data: Any, what: str = "data") -> TypeError:
    """The TypeError for ``data`` that ``ffi.from_buffer`` refused."""
    return TypeError(f"{what} must be bytes-like (bytes, bytearray, memoryview, "
                     f"array), not {type(data).__name__}")


def as_buffer(data: Any, what: str = "data") -> Any:
    """``ffi.from_buffer(data)``, with a clear TypeError for non-bytes-like data."""
    try:
        return from_buffer(data)
    except TypeError:
        raise not_bytes_like(data, what) from None


def buffer_arrays(datas: Iterable[Any]) -> tuple[int, Any, Any, list[Any]]:
    """``(n, void *[n], uint32_t[n], keep)``: pointers to and lengths of
    bytes-like ``datas``, for the batch calls; ``keep`` holds the buffers
    alive while the arrays are used.  TypeError as :func:`as_buffer`."""
    items = datas if type(datas) in (list, tuple) else list(datas)
    try:
        # map, not as_buffer an item: no Python call an item (bytes: 216 against 285 ns)
        keep = list(map(from_buffer, items))
    except TypeError:
        keep = [as_buffer(d) for d in items]  # raises, naming the item's type
    if not keep:
        return 0, None, None, keep
    return len(keep), ffi.new("void *[]", keep), ffi.new("uint32_t[]", list(map(len, keep))), keep


def struct_dict(cdata: Any) -> dict[str, Any]:
    """A plain dict of a C struct's fields (nested structs included)."""
    out: dict[str, Any] = {}
    for name, field in ffi.typeof(cdata).fields:
        value = getattr(cdata, name)
        out[name] = struct_dict(value) if field.type.kind == "struct" else value
    return out


def as_array(view: memoryview, dtype: Any, shape: Any) -> Any:
    """``view`` as a numpy array, no copy (numpy is optional: only this imports it)."""
    import numpy

    arr = numpy.frombuffer(view, dtype=dtype)
    return arr if shape is None else arr.reshape(shape)
