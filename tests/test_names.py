"""Instance names of up to 64 characters (issue #14).

The socket keeps the whole name; shm and semaphore names, which the ABI 1
welcome carries in 32-byte fields, use a short key with a hash of the name
(``hgsmi_shm_prefix``).  Here: the longest name end to end on every backend,
a C guest on it, the stale cleanup after ``kill -9`` that finds a long name's
leftovers and spares another long name with the same first characters, and
the limits refused with messages that name them.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import hgsmi
from hgsmi._native import lib
from hgsmi._util import NAME_MAX, shm_prefix

from support.leaks import shm_entries
from support.native_examples import start, stop
from support.pump import Pump

pytestmark = pytest.mark.timeout(60)
HGSMI = [sys.executable, "-m", "hgsmi"]


def long_name(tail: str = "") -> str:
    """A fresh name of exactly NAME_MAX characters, with a '.' in it."""
    head = "t" + secrets.token_hex(5) + "-emulator-display."
    return head + "0" * (NAME_MAX - len(head) - len(tail)) + tail


@pytest.fixture
def name() -> str:
    """Overrides conftest's: the longest name (no_leaks checks it)."""
    return long_name()


@pytest.fixture
def runtime_dir(monkeypatch: pytest.MonkeyPatch):
    """A short socket directory: pytest's tmp_path leaves no room for 64
    characters in sun_path."""
    d = Path(tempfile.mkdtemp(prefix="hgn-", dir="/tmp"))
    monkeypatch.setenv("HGSMI_RUNTIME_DIR", str(d))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_shm_prefix_is_the_name_or_a_hashed_short_form():
    assert shm_prefix("hgsmi") == "hgsmi-hgsmi."
    assert shm_prefix("a" * 16) == "hgsmi-" + "a" * 16 + "."
    b = long_name("b")
    a = b[:-1] + "a"  # the same 63 characters
    pa, pb = shm_prefix(a), shm_prefix(b)
    assert pa == shm_prefix(a), "a later run must find the same segments"
    assert pa[:14] == pb[:14] == "hgsmi-" + a[:7] + "~" and pa != pb
    # '.' would end the key early: "a.b" must not match the prefix of "a"
    assert not shm_prefix("a.b").startswith(shm_prefix("a"))
    for n in (a, "a.b", "a" * 17):  # what the C side sizes its buffers by
        assert len(shm_prefix(n)) < lib.HGSMI_SHM_PREFIX_MAX


@pytest.mark.parametrize("doorbell,segment", [("eventfd", "memfd"), ("semaphore", "posix"),
                                              ("eventfd", "posix"), ("semaphore", "memfd")])
def test_longest_name_end_to_end(name, runtime_dir, no_leaks, doorbell, segment):
    assert len(name) == NAME_MAX
    with hgsmi.Host(name, size=1 << 20, doorbell=doorbell, segment=segment) as host:
        host.register(hgsmi.CH_ECHO, lambda m: None)
        pump = Pump(host)
        try:
            assert host.socket_path == str(runtime_dir / f"{name}.sock")
            with hgsmi.Guest(name) as g:
                assert g.call(hgsmi.CH_ECHO, 0, b"long names") == b"long names"
                entries = shm_entries(name)
                if segment == "posix":
                    assert f"hgsmi-{name[:7]}~" in entries[0], entries
                if doorbell == "semaphore":
                    assert any(e.startswith("sem.") for e in entries), entries
        finally:
            pump.stop()


def test_c_guest_attaches_with_the_longest_name(c_examples, name, runtime_dir, no_leaks):
    """The C guest example on a Python host: semaphores named by the short key."""
    env = dict(c_examples.run_env(), PYTHONPATH=str(Path(__file__).parent.parent))
    peer = Path(__file__).parent / "peers" / "example_host.py"
    host = start([sys.executable, peer, name, "semaphore"], env, ready_timeout=20)
    try:
        c_examples.verify(name, 50, env, timeout=40)
    finally:
        rc, out, err = stop(host)
    assert rc == 0, f"Python host exited {rc}:\n{out}\n{err}"


class HostProc:
    """``hgsmi host`` in a child, ready when it says so; killed on exit."""

    def __init__(self, name: str, *args: str) -> None:
        self.proc = subprocess.Popen(HGSMI + ["host", "--name", name, "--size", "1M", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("ready"), (line, self.proc.stderr.read())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.proc.stdout.close()
        self.proc.stderr.close()


def test_kill9_cleanup_finds_a_long_name_and_spares_its_neighbour(runtime_dir, tmp_path):
    """Two names equal but for their last character: the short keys share
    their 7 characters and differ in the hash, so restarting one after
    kill -9 removes its leftovers and not the live other's segments."""
    b = long_name("b")
    a = b[:-1] + "a"  # the same 63 characters
    args = ["--segment", "posix", "--doorbell", "semaphore", "--store", str(tmp_path / "s")]
    hb = HostProc(b, *args)
    ha = HostProc(a, *args)
    ga = gb = h2 = None
    try:
        gb = hgsmi.Guest(b)
        ga = hgsmi.Guest(a)
        assert ga.call(hgsmi.CH_ECHO, 0, b"a") == b"a"
        assert gb.call(hgsmi.CH_ECHO, 0, b"b") == b"b"
        ha.proc.send_signal(signal.SIGKILL)
        ha.proc.wait(10)
        ga.close()
        stale, neighbour = shm_entries(a), shm_entries(b)
        assert len(stale) == 3 and len(neighbour) == 3, (stale, neighbour)  # seg, irq, db
        assert (runtime_dir / f"{a}.sock").exists()
        h2 = hgsmi.Host(a, size=1 << 20)  # eventfd + memfd: nothing of its own in /dev/shm
        assert shm_entries(a) == [], "the killed host's segment and semaphores are stale"
        assert shm_entries(b) == neighbour, "another name's live segments were removed"
        assert gb.call(hgsmi.CH_ECHO, 0, b"still here") == b"still here"
    finally:
        for x in (ga, gb, h2):
            if x is not None:
                x.close()
        hb.proc.send_signal(signal.SIGTERM)
        assert hb.proc.wait(10) == 0
        for p in (ha, hb):
            p.close()
        left = shm_entries(a) + shm_entries(b)
        for e in left:
            try:
                os.unlink(os.path.join("/dev/shm", e))
            except FileNotFoundError:  # listed under both names
                pass
    assert not left, f"left in /dev/shm: {left}"


def test_limits_are_refused_with_their_reason(runtime_dir, tmp_path):
    over = "t" * (NAME_MAX + 1)
    for make in (hgsmi.Host, hgsmi.Guest):
        with pytest.raises(ValueError, match=r"too long: 65 characters, at most 64 "
                                             r"\(HGSMI_INSTANCE_NAME_MAX\)"):
            make(over)
    # The runtime directory counts too: refused before it is made.
    deep = runtime_dir / ("d" * 40)
    for make in (hgsmi.Host, hgsmi.Guest):
        with pytest.raises(ValueError, match=r"sun_path holds at most 107: in this runtime "
                                             r"directory a name may have at most \d+ characters"):
            make("t" * NAME_MAX, runtime_dir=deep)
    assert not deep.exists()
    r = subprocess.run(HGSMI + ["host", "--name", over, "--store", str(tmp_path / "s")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "at most 64" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
