"""The ``hgsmi`` command end to end, as subprocesses: host, guest, stat, drivers, cleanup."""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import hgsmi
from hgsmi._util import shm_prefix
from hgsmi.services.clients import BlobClient

pytestmark = pytest.mark.multiprocess

ROOT = Path(__file__).resolve().parent.parent
HGSMI = [sys.executable, "-m", "hgsmi"]


# -- helpers -------------------------------------------------------------------------
def shm_of(name: str) -> list[str]:
    prefix = shm_prefix(name)
    return sorted(e for e in os.listdir("/dev/shm")
                  if e.startswith(prefix) or e.startswith("sem." + prefix))


@pytest.fixture
def inst(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A unique instance name and a private socket dir; asserts nothing is left."""
    name = "t" + secrets.token_hex(4)
    rundir = tmp_path / "cli-run"
    rundir.mkdir(mode=0o700)
    monkeypatch.setenv("HGSMI_RUNTIME_DIR", str(rundir))
    monkeypatch.chdir(tmp_path)
    yield name, rundir
    left = shm_of(name)
    for e in left:
        os.unlink(os.path.join("/dev/shm", e))
    assert not left, f"left in /dev/shm: {left}"
    assert not list(rundir.iterdir()), f"left in the socket dir: {list(rundir.iterdir())}"


class HostProc:
    """``hgsmi host`` in a subprocess, killed on exit whatever happens."""

    def __init__(self, *args: str, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(HGSMI + ["host", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.ready = self._ready(timeout)

    def _ready(self, timeout: float) -> dict[str, str]:
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            if self.proc.poll() is not None:
                raise AssertionError(f"host exited {self.proc.returncode}: "
                                     f"{self.proc.stderr.read().decode()}")
            assert time.monotonic() < deadline, "host not ready in time"
            if select.select([fd], [], [], 0.1)[0]:
                buf += os.read(fd, 4096)
        line = buf.decode().splitlines()[0]
        assert line.startswith("ready"), line
        return dict(f.split("=", 1) for f in line.split()[1:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def __enter__(self) -> HostProc:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


def hgsmi_cmd(*args: str, timeout: float = 30.0, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(HGSMI + list(args), capture_output=True, text=True,
                          timeout=timeout, **kw)


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# -- end to end ------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_send_fetch_stat_sigterm(inst, tmp_path):
    name, rundir = inst
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        block = os.urandom(1 << 20)
        for i in range(50):
            f.write(block[i:] + block[:i])
    digest = sha256_file(big)
    with HostProc("--name", name, "--size", "8M", "--store", str(tmp_path / "store")) as h:
        assert h.ready["name"] == name
        assert h.ready["socket"] == str(rundir / f"{name}.sock")
        r = hgsmi_cmd("guest", "--name", name, "send", str(big))
        assert r.returncode == 0, r.stderr
        assert digest in r.stdout and "verified" in r.stdout
        assert sha256_file(tmp_path / "store" / "big.bin") == digest
        r = hgsmi_cmd("guest", "--name", name, "fetch", "big.bin", "-o", str(tmp_path / "back"))
        assert r.returncode == 0, r.stderr
        assert sha256_file(tmp_path / "back") == digest
        time.sleep(0.3)  # the host republishes its figures every 0.25 s
        r = hgsmi_cmd("stat", "--name", name, "--json")
        assert r.returncode == 0, r.stderr
        st = json.loads(r.stdout)
        assert st["name"] == name and st["guests_total"] == 2
        assert st["blob"]["stored"] == 1 and st["blob"]["bytes_stored"] == 50 << 20
        assert st["blob"]["bytes_fetched"] == 50 << 20
        blob_ch = st["channels"][str(hgsmi.CH_BLOB)]
        assert blob_ch["bytes_in"] > 50 << 20 and blob_ch["bytes_out"] > 50 << 20
        r = hgsmi_cmd("stat", "--name", name)
        assert r.returncode == 0 and "blob" in r.stdout, r.stderr
        assert h.stop(signal.SIGTERM) == 0
        assert "Traceback" not in h.proc.stderr.read().decode()


@pytest.mark.timeout(60)
def test_echo_load_and_peer_gone(inst):
    name, rundir = inst
    with HostProc("--name", name, "--size", "2M", "--store", "store") as h:
        r = hgsmi_cmd("guest", "--name", name, "echo", "--count", "200", "--size", "1k")
        assert r.returncode == 0, r.stderr
        assert "p50" in r.stdout and "p99" in r.stdout
        r = hgsmi_cmd("guest", "--name", name, "load", "--seconds", "0.3", "--size", "16k")
        assert r.returncode == 0, r.stderr
        assert "g2h" in r.stdout and "h2g" in r.stdout
        with hgsmi.Guest(name) as g:
            assert g.call(hgsmi.CH_ECHO, 0, b"ping") == b"ping"
            assert h.stop(signal.SIGINT) == 0
            with pytest.raises(hgsmi.PeerGone):
                for _ in range(100):
                    g.call(hgsmi.CH_ECHO, 0, b"ping", timeout=1.0)
                    time.sleep(0.01)


# -- many guests -----------------------------------------------------------------------
GUEST_SCRIPT = textwrap.dedent("""
    import hashlib, io, os, sys
    import hgsmi
    from hgsmi.services.clients import BlobClient
    name, idx = sys.argv[1], sys.argv[2]
    with hgsmi.Guest(name) as g:
        print("attached", flush=True)
        sys.stdin.readline()  # go
        data = os.urandom(1 << 20) * 2 + idx.encode()
        bc = BlobClient(g)
        r = bc.send(io.BytesIO(data), f"g{idx}.bin", len(data))
        assert r["sha256"] == hashlib.sha256(data).hexdigest()
        out = io.BytesIO()
        r = bc.fetch(f"g{idx}.bin", out)
        assert out.getvalue() == data, "fetched bytes differ"
        assert g.call(hgsmi.CH_ECHO, 0, idx.encode() * 100) == idx.encode() * 100
    print("ok", flush=True)
""")


@pytest.mark.timeout(60)
def test_sixteen_guests_at_once(inst, tmp_path):
    name, _ = inst
    with HostProc("--name", name, "--size", "2M", "--store", "store") as h:
        kids = [subprocess.Popen([sys.executable, "-c", GUEST_SCRIPT, name, str(i)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for i in range(16)]
        try:
            for k in kids:
                assert k.stdout.readline().strip() == "attached", k.stderr.read()
            time.sleep(0.3)
            st = json.loads(hgsmi_cmd("stat", "--name", name, "--json").stdout)
            assert len(st["guests"]) == 16
            for k in kids:
                k.stdin.write("go\n")
                k.stdin.flush()
            for k in kids:
                out, err = k.communicate(timeout=40)
                assert k.returncode == 0 and out.strip() == "ok", err
        finally:
            for k in kids:
                if k.poll() is None:
                    k.kill()
                    k.wait()
        assert len(list((tmp_path / "store").iterdir())) == 16
        assert h.stop() == 0


# -- drivers from a config ----------------------------------------------------------------
C_DRIVER = r"""
#include <errno.h>
#include "hgsmi.h"

int upper(void *ctx, const struct hgsmi_msg *msg, void *data, uint32_t *reply_len)
{
	unsigned char *p = data;
	uint32_t n = msg->size;

	(void)ctx;
	for (uint32_t i = 0; i < n; i++)
		if (p[i] >= 'a' && p[i] <= 'z')
			p[i] -= 'a' - 'A';
	*reply_len = n;
	return 0;
}

int refuse(void *ctx, const struct hgsmi_msg *msg, void *data, uint32_t *reply_len)
{
	(void)ctx; (void)msg; (void)data; (void)reply_len;
	return -EIO;
}
"""

PY_DRIVER = """
calls = 0

def reverse(msg):
    global calls
    calls += 1
    return bytes(msg.data)[::-1]

def broken(msg):
    raise RuntimeError("this driver is broken")
"""


@pytest.mark.timeout(60)
def test_python_and_c_drivers_from_config(inst, tmp_path):
    name, _ = inst
    src = tmp_path / "drv.c"
    src.write_text(C_DRIVER)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-I", str(ROOT / "native" / "include"),
                    "-o", str(tmp_path / "libdrv.so"), str(src)], check=True, timeout=60)
    (tmp_path / "mydrivers.py").write_text(PY_DRIVER)
    cfg = tmp_path / "host.toml"
    cfg.write_text(textwrap.dedent(f"""
        name = "{name}"
        size = "1M"
        store = "store"
        [limits]
        ring_entries = 256
        [channels.16]
        driver = "mydrivers:reverse"
        name = "reverse"
        [channels.17]
        driver = "./libdrv.so:upper"
        name = "upper"
        [channels.18]
        driver = "mydrivers:broken"
        [channels.19]
        driver = "{tmp_path}/libdrv.so:refuse"
    """))
    with HostProc("--config", str(cfg)) as h:
        with hgsmi.Guest(name) as g:
            for _ in range(3):
                assert g.call(16, 0, b"hello world") == b"dlrow olleh"
                assert g.call(17, 0, b"hello world") == b"HELLO WORLD"
                with pytest.raises(hgsmi.RemoteError):
                    g.call(18, 0, b"x")
                with pytest.raises(hgsmi.RemoteError):
                    g.call(19, 0, b"x")
            big = bytes(range(97, 123)) * 10000
            assert g.call(17, 0, big) == big.upper()
            assert g.call(hgsmi.CH_ECHO, 0, b"still serving") == b"still serving"
            time.sleep(0.3)
            st = json.loads(hgsmi_cmd("stat", "--name", name, "--json").stdout)
        ch = st["channels"]
        assert ch["16"]["name"] == "reverse" and ch["16"]["msgs_in"] == 3
        assert ch["17"]["driver"].startswith("c ") and ch["18"]["msgs_in"] == 3
        assert st["handler_errors"] == 3
        assert h.stop() == 0
        err = h.proc.stderr.read().decode()
        assert "this driver is broken" in err and "Traceback" not in err


# -- stale resources -----------------------------------------------------------------------
@pytest.mark.timeout(60)
@pytest.mark.parametrize("segment", ["posix", "memfd"])
def test_kill9_host_is_cleaned_up_by_the_next(inst, segment):
    name, rundir = inst
    with HostProc("--name", name, "--size", "1M", "--store", "store", "--segment", segment) as h:
        g = hgsmi.Guest(name)
        assert g.call(hgsmi.CH_ECHO, 0, b"x") == b"x"
        h.proc.kill()
        h.proc.wait()
    if segment == "posix":
        assert shm_of(name), "the killed host should have left its segment"
    else:  # a memfd goes with the last process that maps it
        assert shm_of(name) == []
    assert (rundir / f"{name}.sock").exists()
    g.close()
    with HostProc("--name", name, "--size", "1M", "--store", "store") as h2:
        assert shm_of(name) == [], "stale segments not removed"
        with hgsmi.Guest(name) as g2:
            assert g2.call(hgsmi.CH_ECHO, 0, b"again") == b"again"
        assert h2.stop(signal.SIGINT) == 0


@pytest.mark.timeout(60)
def test_semaphore_doorbell(inst, tmp_path):
    name, _ = inst
    with HostProc("--name", name, "--size", "1M", "--doorbell", "semaphore",
                  "--store", "store") as h:
        data = tmp_path / "d"
        data.write_bytes(os.urandom(3 << 20))
        r = hgsmi_cmd("guest", "--name", name, "send", str(data), "--as", "sem.bin")
        assert r.returncode == 0, r.stderr
        r = subprocess.run(HGSMI + ["guest", "--name", name, "fetch", "sem.bin", "-o", "-"],
                           capture_output=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert r.stdout == data.read_bytes()
        assert h.stop() == 0


# -- errors: one line, non-zero, no traceback -------------------------------------------------
@pytest.mark.timeout(60)
def test_errors_are_one_line(inst, tmp_path):
    name, rundir = inst
    bad = tmp_path / "bad.toml"
    cases = {
        'size = "lots"\n': "size",
        'colour = "blue"\n': "unknown key 'colour'",
        '[limits]\nring_entries = 1000\n': "power of two",
        '[channels.16]\ndriver = "no_such_module_xyz:f"\n': "no module named 'no_such_module_xyz'",
        '[channels.16]\ndriver = "/nonexistent/lib.so:f"\n': "no such library",
        '[channels.1]\ndriver = "os:getpid"\n': "channels.1",
        'name = \n': "not valid TOML",
    }
    for text, expected in cases.items():
        bad.write_text(text)
        line = one_line_error(hgsmi_cmd("host", "--name", name, "--config", str(bad)))
        assert expected in line, (text, line)
    (tmp_path / "raising_drv.py").write_text("raise ImportError('cannot load the widget')\n")
    bad.write_text('[channels.20]\ndriver = "raising_drv:f"\n')
    line = one_line_error(hgsmi_cmd("host", "--name", name, "--config", str(bad)))
    assert "cannot load the widget" in line
    assert "no host" in one_line_error(hgsmi_cmd("guest", "--name", name, "echo"))
    assert "no host" in one_line_error(hgsmi_cmd("stat", "--name", name))
    line = one_line_error(hgsmi_cmd("host", "--name", "bad/name"))
    assert "instance name" in line
    with HostProc("--name", name, "--size", "1M", "--store", "store") as h:
        line = one_line_error(hgsmi_cmd("host", "--name", name, "--store", "store"))
        assert "already running" in line
        line = one_line_error(hgsmi_cmd("guest", "--name", name, "send", "/nonexistent/f"))
        assert "/nonexistent/f" in line
        line = one_line_error(hgsmi_cmd("guest", "--name", name, "fetch", "missing"))
        assert "no blob 'missing'" in line
        line = one_line_error(hgsmi_cmd("guest", "--name", name, "fetch", ".."))
        assert "'..'" in line
        assert h.stop() == 0
    r = hgsmi_cmd("bench", "--help")
    assert r.returncode == 0 and "bench" in r.stdout
    r = hgsmi_cmd("--help")
    for command in ("host", "guest", "stat", "demo", "bench"):
        assert command in r.stdout


def test_blob_names_are_checked_by_the_host(inst):
    """A guest that skips the client-side check still cannot escape the store."""
    name, _ = inst
    with HostProc("--name", name, "--size", "1M", "--store", "store") as h:
        with hgsmi.Guest(name) as g:
            BlobClient(g)
            from hgsmi.services import blob_protocol as blob
            for bad in (b"../x", b"a/b", b"..", b"x\0y", b".hidden", b"\xff"):
                rep = g.call(hgsmi.CH_BLOB, blob.BEGIN, blob.BEGIN_REQ.pack(1) + bad,
                             blob.REPLY_MAX)
                status, _, why = blob.parse(blob.BEGIN_REP, rep)
                assert status != 0, bad
                rep = g.call(hgsmi.CH_BLOB, blob.FETCH, bad, blob.REPLY_MAX)
                assert blob.parse(blob.FETCH_REP, rep)[0] != 0
        assert h.stop() == 0
    assert os.listdir("store") == []


@pytest.mark.timeout(60)
def test_guest_vanishing_mid_transfer(inst, tmp_path):
    """Partial uploads are discarded and streams to a dead guest dropped; the host serves on."""
    from hgsmi.services import blob_protocol as blob

    name, _ = inst
    store = tmp_path / "store"
    with HostProc("--name", name, "--size", "1M", "--store", str(store)) as h:
        with hgsmi.Guest(name) as g:
            bc = BlobClient(g)
            import io
            bc.send(io.BytesIO(os.urandom(3 << 20)), "whole.bin")
        g = hgsmi.Guest(name)
        rep = g.call(hgsmi.CH_BLOB, blob.BEGIN, blob.BEGIN_REQ.pack(1 << 20) + b"half.bin",
                     blob.REPLY_MAX)
        status, tid, _ = blob.parse(blob.BEGIN_REP, rep)
        assert status == 0
        with g.alloc(hgsmi.CH_BLOB, blob.CHUNK, 16 + 4096) as buf:
            blob.CHUNK_HDR.pack_into(buf.data, 0, tid, 4096, 0)
            g.call_buffer(buf, timeout=5)
        assert any(p.name.endswith(".part") for p in store.iterdir())
        rep = g.call(hgsmi.CH_BLOB, blob.FETCH, b"whole.bin", blob.REPLY_MAX)
        assert blob.parse(blob.FETCH_REP, rep)[0] == 0  # the host starts streaming...
        g.close()  # ...to a guest that is gone
        deadline = time.monotonic() + 5
        while any(p.name.endswith(".part") for p in store.iterdir()):
            assert time.monotonic() < deadline, "partial upload not discarded"
            time.sleep(0.05)
        with hgsmi.Guest(name) as g2:
            assert g2.call(hgsmi.CH_ECHO, 0, b"alive") == b"alive"
        assert [p.name for p in store.iterdir()] == ["whole.bin"]
        assert h.stop() == 0


@pytest.mark.timeout(60)
def test_demo(inst):
    r = hgsmi_cmd("demo", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "nothing left in /dev/shm or the socket directory" in r.stdout
    assert "identical to the original" in r.stdout and "p99" in r.stdout
    assert r.stderr == ""
