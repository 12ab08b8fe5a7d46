"""`hgsmi list` and `hgsmi blob ls|rm`, and the host clearing stale uploads at start."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import hgsmi

from support.pump import Pump

pytestmark = pytest.mark.timeout(60)
HGSMI = [sys.executable, "-m", "hgsmi"]


def hg(*args: str, ok: bool = True, **kw) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(HGSMI + list(args), capture_output=True, text=True, timeout=30, **kw)
    assert (r.returncode == 0) == ok, r.stdout + r.stderr
    return r


def test_list_shows_running_hosts_and_skips_stale_sockets(name, runtime_dir):
    assert hg("list").stdout.strip() == "no host is running"
    # a socket nobody listens on (a host that was killed) is not a running host
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(runtime_dir / "dead.sock"))
    s.close()
    host = hgsmi.Host(name)  # a bare Host: no statistics, shown with '-'
    pump = Pump(host)
    try:
        with hgsmi.Guest(name):
            rows = json.loads(hg("list", "--json").stdout)
            out = hg("list").stdout
    finally:
        pump.stop()
        host.close()
    assert [r["name"] for r in rows] == [name], rows
    assert rows[0]["socket"] == str(runtime_dir / f"{name}.sock")
    assert out.splitlines()[0].split() == ["NAME", "PID", "GUESTS", "UPTIME", "SOCKET"]
    assert name in out and "dead" not in out


def test_list_with_a_daemon_shows_pid_guests_uptime(name, runtime_dir, tmp_path):
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "data"))
    p = subprocess.Popen(HGSMI + ["host", "--name", name], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=env, text=True)
    try:
        assert p.stdout.readline().startswith("ready")
        with hgsmi.Guest(name):
            (row,) = json.loads(hg("list", "--json").stdout)
        assert row["pid"] == p.pid and row["guests"] == 1 and row["uptime_s"] >= 0
    finally:
        p.terminate()
        p.wait(10)
        p.stdout.close()


def test_blob_ls_and_rm_on_the_store(name, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / "a.bin").write_bytes(b"x" * 1000)
    (store / "b.bin").write_bytes(b"")
    (store / ".upload-1-1.part").write_bytes(b"half")
    rows = json.loads(hg("blob", "ls", "--store", str(store), "--json").stdout)
    assert [(r["name"], r["size"]) for r in rows] == [("a.bin", 1000), ("b.bin", 0)]
    assert "removed a.bin" in hg("blob", "rm", "--store", str(store), "a.bin").stdout
    assert "no blob 'a.bin'" in hg("blob", "rm", "--store", str(store), "a.bin", ok=False).stderr
    # the default store is $XDG_DATA_HOME/hgsmi/NAME
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "data"))
    err = hg("blob", "ls", "--name", name, ok=False, env=env).stderr
    assert f"no store {tmp_path / 'data' / 'hgsmi' / name}" in err


def test_host_removes_stale_uploads_at_start(name, runtime_dir, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    dead = _dead_pid()
    (store / f".upload-{dead}-7.part").write_bytes(b"half an upload")
    (store / f".upload-{os.getpid()}-7.part").write_bytes(b"a live one")
    (store / "kept.bin").write_bytes(b"a blob")
    p = subprocess.Popen(HGSMI + ["host", "--name", name, "--store", str(store)],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert p.stdout.readline().startswith("ready")
    finally:
        p.terminate()
        p.wait(10)
        p.stdout.close()
    assert sorted(os.listdir(store)) == sorted([f".upload-{os.getpid()}-7.part", "kept.bin"])


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid
