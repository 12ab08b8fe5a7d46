"""The host daemon's configuration: defaults, a TOML file, command-line overrides.

A config file (every key optional)::

    name = "vram0"                 # instance: [A-Za-z0-9_-]{1,16}
    size = "16M"                   # bytes per guest segment: int or "64k", "16M", "1G"
    doorbell = "eventfd"           # or "semaphore"
    segment = "memfd"              # sealed memfd passed to the guest; or "posix" (/dev/shm,
                                   # trusts the guest not to truncate it)
    allowed_uids = [1000, 1001]    # guests' uids; default: the host's own uid only
    store = "/var/lib/hgsmi"       # blob store directory (relative: to this file)
    ivshmem = "/run/hgsmi/vm.sock" # also an ivshmem server for QEMU VMs (size: a power of 2)

    [limits]
    ring_entries = 1024            # power of two
    max_guests = 64
    max_inflight = 0               # per guest; 0: ring_entries
    spin_us = 200                  # cap of the adaptive spin before sleeping (µs); 0: never
    guest_heap_percent = 50        # share of each segment's heaps for the guest
    max_message = 0                # bytes of data in one guest buffer; 0: what the heap holds
    max_doorbells_per_s = 100000   # per guest; 0: this default; "unlimited": no limit
    max_pending_per_pid = 8        # handshakes under way from one process
    max_guests_per_pid = 0         # guests attached from one process; 0: max(16, max_guests/4)
    # What the built-in services hold at most for one guest (0: no limit);
    # past one a request is refused at once with EBUSY (hgsmi.Busy):
    max_fetches = 4                # blob fetches streaming at once
    max_open_files = 16            # files open for it: uploads and fetches
    max_streams = 8                # host-to-guest streams: fetches, load sources
    max_buffered = "64M"           # bytes of private host buffers held for it

    [channels.16]                  # channel number 2..255 (2-15 replace a built-in)
    driver = "mypkg.drivers:upper" # Python: handler(msg) -> reply | None
    name = "upper"                 # optional label for stats and logs

    [channels.17]
    driver = "./libdriver.so:rot13"  # C: int fn(void *ctx, const struct hgsmi_msg *,
                                     #           void *data, uint32_t *reply_len)

Anything else is an error (:class:`ConfigError`, a ``ValueError``) naming
the file and the key.
"""
from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from typing import Any

from .. import _wire
from .._util import check_name as _check_name
from ..services.quota import ServiceLimits

DEFAULT_NAME = "hgsmi"
DEFAULT_SIZE = _wire.SEGMENT_SIZE_DEFAULT
DOORBELLS = tuple(_wire.BACKENDS)
SEGMENTS = tuple(_wire.SEGMENTS)

_SIZE_RE = re.compile(r"\s*(\d+)\s*([kKmMgG]?)(i?[bB])?\s*\Z")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


class ConfigError(ValueError):
    """A bad configuration value or file; the message names the problem."""


@dataclasses.dataclass
class ChannelConfig:
    number: int
    driver: str
    name: str


@dataclasses.dataclass
class HostConfig:
    name: str | None = None  #: None: default_name()
    size: int = DEFAULT_SIZE
    doorbell: str = "eventfd"
    segment: str = "memfd"
    allowed_uids: list[int] | None = None
    store: str | None = None  #: None: default_store(name)
    ivshmem: str | None = None  #: ivshmem-server socket for QEMU VMs, or None
    ring_entries: int = _wire.RING_ENTRIES_DEFAULT
    max_guests: int = _wire.MAX_GUESTS_DEFAULT
    max_inflight: int = 0
    spin_us: int = _wire.SPIN_US_DEFAULT
    guest_heap_percent: int = _wire.GUEST_HEAP_PERCENT_DEFAULT
    max_message: int = 0
    max_doorbells_per_s: int = _wire.DOORBELLS_PER_S_DEFAULT  #: 0 too; _wire.UNLIMITED: none
    max_pending_per_pid: int = _wire.PENDING_PER_PID_DEFAULT
    max_guests_per_pid: int = 0
    max_fetches: int = ServiceLimits.max_fetches
    max_open_files: int = ServiceLimits.max_open_files
    max_streams: int = ServiceLimits.max_streams
    max_buffered: int = ServiceLimits.max_buffered
    channels: dict[int, ChannelConfig] = dataclasses.field(default_factory=dict)
    base_dir: str = "."  #: where relative paths (store, driver .so) are resolved

    def limits(self) -> dict[str, int]:
        """The Host() keyword arguments for the limits."""
        return {k: getattr(self, k) for k in _LIMITS}

    def service_limits(self) -> ServiceLimits:
        """The per-guest quotas of the built-in services (:mod:`hgsmi.services.quota`)."""
        return ServiceLimits(**{k: getattr(self, k) for k in _SERVICE_LIMITS})


_LIMITS = {  # key: (min, max, extra check)
    "ring_entries": (2, 1 << 20),
    "max_guests": (1, 4096),
    "max_inflight": (0, 1 << 20),
    "spin_us": (0, 1_000_000),
    "guest_heap_percent": (1, 99),
    "max_message": (0, (1 << 31) - 1),
    "max_doorbells_per_s": (0, 0xFFFFFFFE),
    "max_pending_per_pid": (1, 256),
    "max_guests_per_pid": (0, 4096),
}
#: [limits] keys that also take "unlimited" (0 means the default in them, as in C)
_UNLIMITABLE = {"max_doorbells_per_s"}
_SERVICE_LIMITS = {  # [limits] keys of the built-in services' quotas: (min, max)
    "max_fetches": (0, 1 << 16),
    "max_open_files": (0, 1 << 20),
    "max_streams": (0, 1 << 16),
    "max_buffered": (0, 1 << 48),
}
_TOP = {"name", "size", "doorbell", "segment", "allowed_uids", "store", "ivshmem", "limits",
        "channels"}


def default_name() -> str:
    """``$HGSMI_NAME`` or ``hgsmi``: the instance every command uses by default."""
    return os.environ.get("HGSMI_NAME") or DEFAULT_NAME


def default_store(name: str) -> str:
    """``$XDG_DATA_HOME/hgsmi/<name>`` (``~/.local/share/hgsmi/<name>``)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"),
                                                           ".local", "share")
    return os.path.join(base, "hgsmi", name)


def check_name(name: Any, where: str = "name") -> str:
    """``name`` if it is a valid instance name (see :func:`hgsmi._util.check_name`);
    ConfigError naming ``where`` and the rule it breaks otherwise."""
    if not isinstance(name, str):
        raise ConfigError(f"{where}: {name!r} is not a valid instance name (a string)")
    try:
        _check_name(name)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    return name


def parse_size(value: Any, where: str = "size") -> int:
    """Bytes from an int or a string like ``"64k"``, ``"16M"``, ``"1GiB"``."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a size, not {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and (m := _SIZE_RE.match(value)):
        n = int(m.group(1)) * _UNITS[m.group(2).lower()]
    else:
        raise ConfigError(f"{where}: {value!r} is not a size (like 65536, 64k, 16M, 1G)")
    if n <= 0:
        raise ConfigError(f"{where}: must be positive, not {value!r}")
    return n


def check_segment_size(n: int, where: str = "size") -> int:
    if not (64 << 10) <= n < 1 << 31:
        raise ConfigError(f"{where}: {n} bytes is out of range (64 KiB to 2 GiB)")
    return n


def check_doorbell(value: Any, where: str = "doorbell") -> str:
    if value not in DOORBELLS:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(DOORBELLS)}")
    return str(value)


def check_segment(value: Any, where: str = "segment") -> str:
    if value not in SEGMENTS:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(SEGMENTS)}")
    return str(value)


def _int(value: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer, not {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{where}: {value} is out of range {lo}..{hi}")
    return value


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table, not {type(value).__name__}")
    return value


def _unknown(table: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"unknown key '{prefix}{extra[0]}'"
                          f" (allowed: {', '.join(sorted(allowed))})")


def _channels(table: dict[str, Any]) -> dict[int, ChannelConfig]:
    out = {}
    for key, value in table.items():
        where = f"channels.{key}"
        if not key.isdigit():
            raise ConfigError(f"{where}: the channel must be a number 2..255")
        number = _int(int(key), where, 2, 255)
        if isinstance(value, str):
            value = {"driver": value}
        value = _table(value, where)
        _unknown(value, {"driver", "name"}, where)
        driver = value.get("driver")
        if not isinstance(driver, str) or ":" not in driver:
            raise ConfigError(f"{where}.driver: expected \"package.module:function\" or "
                              f"\"/path/lib.so:symbol\", not {driver!r}")
        label = value.get("name", f"ch{number}")
        if not isinstance(label, str) or not label:
            raise ConfigError(f"{where}.name: expected a non-empty string")
        out[number] = ChannelConfig(number, driver, label)
    return out


def from_dict(data: dict[str, Any], base_dir: str = ".") -> HostConfig:
    """Validate a parsed TOML document into a :class:`HostConfig`."""
    _unknown(data, _TOP, "")
    cfg = HostConfig(base_dir=base_dir)
    if "name" in data:
        cfg.name = check_name(data["name"])
    if "size" in data:
        cfg.size = check_segment_size(parse_size(data["size"]))
    if "doorbell" in data:
        cfg.doorbell = check_doorbell(data["doorbell"])
    if "segment" in data:
        cfg.segment = check_segment(data["segment"])
    if "allowed_uids" in data:
        uids = data["allowed_uids"]
        if not isinstance(uids, list) or not uids:
            raise ConfigError("allowed_uids: expected a non-empty list of uids")
        cfg.allowed_uids = [_int(u, "allowed_uids", 0, 2**32 - 2) for u in uids]
    if "store" in data:
        if not isinstance(data["store"], str) or not data["store"]:
            raise ConfigError("store: expected a directory path")
        cfg.store = os.path.join(base_dir, os.path.expanduser(data["store"]))
    if "ivshmem" in data:
        if not isinstance(data["ivshmem"], str) or not data["ivshmem"]:
            raise ConfigError("ivshmem: expected a socket path")
        cfg.ivshmem = os.path.join(base_dir, os.path.expanduser(data["ivshmem"]))
    if "limits" in data:
        limits = _table(data["limits"], "limits")
        _unknown(limits, set(_LIMITS) | set(_SERVICE_LIMITS), "limits")
        for key, (lo, hi) in _LIMITS.items():
            if key in limits:
                value = limits[key]
                if key in _UNLIMITABLE and value == "unlimited":
                    value = _wire.UNLIMITED  # what Host() and the C core take for it
                else:
                    value = _int(value, f"limits.{key}", lo, hi)
                setattr(cfg, key, value)
        for key, (lo, hi) in _SERVICE_LIMITS.items():
            if key in limits:
                value = limits[key]
                if key == "max_buffered" and isinstance(value, str):
                    value = parse_size(value, f"limits.{key}")
                setattr(cfg, key, _int(value, f"limits.{key}", lo, hi))
        if cfg.ring_entries & (cfg.ring_entries - 1):
            raise ConfigError(f"limits.ring_entries: {cfg.ring_entries} is not a power of two")
    if "channels" in data:
        cfg.channels = _channels(_table(data["channels"], "channels"))
    return cfg


def load(path: str) -> HostConfig:
    """Read and validate a TOML config file; :class:`ConfigError` names any problem."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    try:
        return from_dict(data, os.path.dirname(os.path.abspath(path)))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
