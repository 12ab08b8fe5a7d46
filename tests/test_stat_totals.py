"""``hgsmi stat`` remembers (issue #11, class 6), and the daemon's log stays small.

A host daemon serves a scribbler (cut off for its garbage), a flood of
failing requests to the blob service, a good guest and a client with a bad
hello.  Once they are all gone, ``hgsmi stat`` still shows their traffic,
their errors by kind, the cut-off and the refusal; and the host's own RSS,
fds and CPU time.  The flood leaves a few log lines, not one per buffer.
"""
import errno
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hgsmi
from hgsmi._paths import socket_path
from hgsmi.cli import stat

PEERS = Path(__file__).parent / "peers"
ROOT = Path(__file__).parent.parent
HELLO = struct.Struct("<IHHII4I")  # struct hgsmi_hello
CTL_MAGIC = 0x43534748


def bad_hello(path: str) -> None:
    """A client speaking ABI 2: the host refuses it (EPROTO)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        s.sendall(HELLO.pack(CTL_MAGIC, 2, 0, 1, 0, 0, 0, 0, 0))
        s.recv(144)


def query_until(name: str, ok, timeout: float = 10.0) -> dict:
    """The host's stat reply, once ``ok(reply)`` (it republishes every 0.25 s)."""
    deadline = time.monotonic() + timeout
    while True:
        st = stat.query(name)
        if ok(st) or time.monotonic() > deadline:
            return st
        time.sleep(0.1)


@pytest.mark.timeout(120)
def test_stat_keeps_what_departed_guests_did(name, runtime_dir, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    err = open(tmp_path / "host.err", "w+")
    host = subprocess.Popen([sys.executable, "-m", "hgsmi", "host", "--name", name, "--size", "4M",
                             "--store", str(tmp_path / "store"), "--log-level", "info"],
                            stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    try:
        assert host.stdout.readline().startswith("ready"), err.read()
        flood = subprocess.Popen([sys.executable, str(PEERS / "error_flood.py"), name, "3",
                                  str(hgsmi.CH_BLOB)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True, env=env)
        # "index": a hostile submit index, for which the host cuts it off for
        # certain (see hostile_guest.py)
        scribbler = subprocess.Popen([sys.executable, str(PEERS / "hostile_guest.py"), name,
                                      "10", "11", "index"], env=env)
        try:
            assert flood.stdout.readline().strip() == "attached"
            # The scribbler attached (maybe cut off already) before the flood
            # starts: the old host, busy logging it, let no one attach in time.
            query_until(name, lambda s: len(s["guests"]) + s.get("left", {}).get("guests", 0) >= 2)
            flood.stdin.write("go\n")
            flood.stdin.flush()
            with hgsmi.Guest(name) as g:
                for i in range(100):
                    assert g.call(hgsmi.CH_ECHO, 0, b"x" * i, timeout=10) == b"x" * i
            bad_hello(socket_path(name))
            out = flood.communicate(timeout=60)[0].split()
            assert scribbler.wait(60) == 0
        finally:
            for p in (flood, scribbler):
                p.kill()
                p.wait()
        sent, failed = int(out[1]), int(out[3])
        assert failed == sent > 1000
        st = query_until(name, lambda s: not s["guests"] and s["left"]["guests"] == 3)
        human = subprocess.run([sys.executable, "-m", "hgsmi", "stat", "--name", name],
                               capture_output=True, text=True, env=env, timeout=30)
    finally:
        host.send_signal(signal.SIGTERM)
        try:
            host.wait(20)
        finally:
            host.kill()
    print(json.dumps({k: st[k] for k in ("left", "refusals", "process", "handler_errors")}))
    left = st["left"]
    # Every guest is gone, and what they did is still there.
    assert st["guests"] == [] and left["guests"] == 3
    assert left["cut_off"] == 1  # the scribbler; the flood and the good guest hung up
    assert left["msgs_in"] >= 100 + sent and left["bytes_in"] >= sum(range(100))
    assert left["errors"]["protocol"] + left["errors"]["offset"] > 0, left
    assert st["handler_errors"] == sent  # the blob service failed each junk request
    assert st["refused"] == 1 and st["refusals"] == {errno.errorcode[errno.EPROTO]: 1}
    # The host process's own figures.
    p = st["process"]
    assert p["rss"] > 1 << 20 and p["private"] > 1 << 20 and p["fds"] >= 3
    assert p["cpu_user_s"] + p["cpu_system_s"] > 0
    assert human.returncode == 0, human.stderr
    for text in ("left    3 guests (1 cut off)", "refused 1 guests: EPROTO 1", "process rss"):
        assert text in human.stdout, human.stdout
    # The flood's failures were counted, not logged one by one.
    err.seek(0)
    log = err.read()
    err.close()
    assert len(log.splitlines()) < 100, log[-3000:]
    assert "suppressed" in log
