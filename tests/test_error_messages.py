"""Errors that say what happened: at the caller of a failed call, and from the CLI."""
from __future__ import annotations

import logging
import subprocess
import sys

import pytest

import hgsmi

from support.pump import Pump

HGSMI = [sys.executable, "-m", "hgsmi"]


@pytest.fixture
def served(name, runtime_dir):
    """A host in this process with a few ill-behaved handlers, and a guest of it."""
    host = hgsmi.Host(name)

    def raises(msg: hgsmi.Message) -> bytes:
        raise KeyError("no such frame " + "x" * 1000)

    host.register(0x11, raises)
    host.register(0x12, lambda msg: "a str")
    host.register(0x13, lambda msg: 42)
    host.register(0x14, lambda msg: b"y" * 100)
    host.register(0x15, lambda msg: b"z" * 5000)
    pump = Pump(host)
    try:
        with hgsmi.Guest(name) as g:
            yield g
    finally:
        pump.stop()
        host.close()


@pytest.mark.timeout(30)
def test_unregistered_channel(served):
    with pytest.raises(hgsmi.ChannelNotRegistered,
                       match="call on channel 16: the host has no handler registered"):
        served.call(0x10, 0, b"hi", timeout=5)


@pytest.mark.timeout(30)
def test_remote_error_carries_the_handlers_exception(served):
    with pytest.raises(hgsmi.RemoteError) as ei:
        served.call(0x11, 0, b"hi", timeout=5)
    text = str(ei.value)
    assert "the host's handler raised KeyError: 'no such frame xxx" in text, text
    assert len(text) < 300  # bounded, not the whole message
    # the same through a buffer (zero copy)
    with served.alloc(0x11, 0, 64) as buf:
        with pytest.raises(hgsmi.RemoteError, match="raised KeyError"):
            served.call_buffer(buf, timeout=5)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("channel,typ", [(0x12, "str"), (0x13, "int")])
def test_wrong_reply_type_is_one_line_at_the_host(served, caplog, channel, typ):
    with caplog.at_level(logging.WARNING, logger="hgsmi"):
        with pytest.raises(hgsmi.RemoteError,
                           match=f"TypeError: the channel {channel} handler returned {typ}, "
                                 "not bytes-like or None"):
            served.call(channel, 0, b"hi", timeout=5)
    recs = [r for r in caplog.records if f"channel {channel}" in r.getMessage()]
    assert len(recs) == 1 and recs[0].exc_info is None, [r.getMessage() for r in recs]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("channel,size", [(0x14, 100), (0x15, 5000)])
def test_reply_larger_than_the_request_asks_for_reply_size(served, channel, size):
    with pytest.raises(hgsmi.ProtocolError, match="larger than the room for it.*reply_size="):
        served.call(channel, 0, b"hi", timeout=5)
    assert served.call(channel, 0, b"hi", reply_size=size, timeout=5) == bytes(
        [b"y"[0] if channel == 0x14 else b"z"[0]]) * size


def cli(*args: str, timeout: float = 30) -> str:
    """Run ``hgsmi ARGS`` that must fail: its one stderr line."""
    r = subprocess.run(HGSMI + list(args), capture_output=True, text=True, timeout=timeout)
    assert r.returncode != 0, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@pytest.mark.timeout(60)
def test_cli_refuses_an_empty_name(runtime_dir):
    assert "--name" in cli("guest", "--name", "", "echo")
    assert "--name" in cli("host", "--name", "")
    assert "--name" in cli("stat", "--name", "")


@pytest.mark.timeout(60)
def test_cli_store_on_a_file(runtime_dir, tmp_path, name):
    f = tmp_path / "afile"
    f.write_text("")
    assert f"store: {f} is a file, not a directory" in cli("host", "--name", name,
                                                           "--store", str(f))


@pytest.mark.timeout(60)
def test_cli_checks_sizes_and_paths_before_working(runtime_dir, tmp_path, name):
    host = hgsmi.Host(name, size=1 << 20)
    pump = Pump(host)
    try:
        line = cli("guest", "--name", name, "echo", "--size", "1G", timeout=10)
        assert "more than the host's largest message" in line, line
        missing = tmp_path / "nodir" / "out"
        line = cli("guest", "--name", name, "fetch", "blob", "-o", str(missing))
        assert f"directory {missing.parent} does not exist" in line and ".part" not in line
    finally:
        pump.stop()
        host.close()


@pytest.mark.timeout(60)
def test_cli_host_not_found_says_which(runtime_dir, tmp_path, name):
    assert "no socket" in cli("guest", "--name", name, "echo")
    line = cli("guest", "--name", name, "--runtime-dir", str(tmp_path / "a" / "b"), "echo")
    assert "runtime directory" in line and "does not exist" in line
    assert "(waited 0.2 s)" in cli("guest", "--name", name, "--wait", "0.2", "echo")
