"""Wire numbers and defaults come from the C side, and mean one thing everywhere.

hgsmi/_wire.py reads them from the C headers (through cffi); the public
names, the services, Host(), AsyncHost() and the TOML config take them from
there.  ``max_doorbells_per_s = 0`` means the default in C, in Python and in
TOML alike, and UNLIMITED (``"unlimited"`` in TOML) means no limit.
"""
from __future__ import annotations

import inspect

import pytest

import hgsmi
from hgsmi import _wire
from hgsmi._native import ffi, lib
from hgsmi.aio import AsyncHost
from hgsmi.daemon import config
from hgsmi.services import builtin as services


def test_public_channels_are_the_headers():
    for name in ("CH_SETUP", "CH_ECHO", "CH_SINK", "CH_BLOB", "CH_USER_FIRST"):
        assert getattr(hgsmi, name) == getattr(lib, "HGSMI_" + name), name
    for name in ("CH_SETUP", "CH_ECHO", "CH_SINK", "CH_BLOB"):
        assert getattr(services, name) == getattr(lib, "HGSMI_" + name), name
    assert hgsmi.UNLIMITED == lib.HGSMI_UNLIMITED == 0xFFFFFFFF


def test_buffer_data_follows_its_header():
    assert _wire.BUFFER_HEADER_SIZE == ffi.sizeof("struct hgsmi_buffer_header") == 16
    assert _wire.BUFFER_OVERHEAD == _wire.BUFFER_HEADER_SIZE + ffi.sizeof(
        "struct hgsmi_buffer_tail")


def test_host_config_and_toml_defaults_are_the_c_defaults():
    want = {"size": _wire.SEGMENT_SIZE_DEFAULT, "ring_entries": _wire.RING_ENTRIES_DEFAULT,
            "guest_heap_percent": _wire.GUEST_HEAP_PERCENT_DEFAULT,
            "max_guests": _wire.MAX_GUESTS_DEFAULT, "socket_mode": _wire.SOCKET_MODE_DEFAULT,
            "max_doorbells_per_s": _wire.DOORBELLS_PER_S_DEFAULT,
            "max_pending_per_pid": _wire.PENDING_PER_PID_DEFAULT}
    params = inspect.signature(hgsmi.Host).parameters
    assert {k: params[k].default for k in want} == want
    assert inspect.signature(AsyncHost).parameters["size"].default == want["size"]
    cfg = config.HostConfig()
    assert cfg.size == want["size"]
    assert {k: v for k, v in cfg.limits().items() if k in want} == {
        k: v for k, v in want.items() if k in cfg.limits()}
    assert set(config.DOORBELLS) == set(_wire.BACKENDS)
    assert set(config.SEGMENTS) == set(_wire.SEGMENTS)


def _doorbell_limit(name: str, **limits: int) -> int:
    with hgsmi.Host(name, size=1 << 20, **limits) as host:
        return int(host.admission_stats()["max_doorbells_per_s"])


@pytest.mark.timeout(30)
def test_zero_doorbells_per_s_means_the_default_everywhere(name, no_leaks):
    default = _wire.DOORBELLS_PER_S_DEFAULT
    assert _doorbell_limit(name) == default
    assert _doorbell_limit(name, max_doorbells_per_s=0) == default  # was: no limit
    assert _doorbell_limit(name, max_doorbells_per_s=2000) == 2000
    assert _doorbell_limit(name, max_doorbells_per_s=hgsmi.UNLIMITED) == hgsmi.UNLIMITED
    # The TOML key: 0 is the default there too, and "unlimited" is no limit.
    zero = config.from_dict({"limits": {"max_doorbells_per_s": 0}}).limits()
    assert _doorbell_limit(name, **zero) == default
    none = config.from_dict({"limits": {"max_doorbells_per_s": "unlimited"}}).limits()
    assert _doorbell_limit(name, **none) == hgsmi.UNLIMITED


def test_unlimited_is_only_a_keyword_in_toml():
    with pytest.raises(config.ConfigError, match="max_doorbells_per_s: expected an integer"):
        config.from_dict({"limits": {"max_doorbells_per_s": "none"}})
    with pytest.raises(config.ConfigError, match="max_guests: expected an integer"):
        config.from_dict({"limits": {"max_guests": "unlimited"}})
