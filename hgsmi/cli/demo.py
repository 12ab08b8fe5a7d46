"""``hgsmi demo``: a host process and a guest (this process) moving real data, then a report.

No config: the host runs on the embedded defaults in a private temporary
directory (socket and blob store), which is removed at the end.  The demo
checks every digest and, after the host's SIGTERM, that nothing is left in
/dev/shm or the socket directory.  (The default segments are memfds, which
never appear in /dev/shm and go with the last process that maps them; the
check still covers semaphores, a ``posix`` segment and the socket.)
"""
from __future__ import annotations

import hashlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, TextIO

from .._util import shm_prefix
from .._wire import CONF_GUEST_HEAP_SIZE, CONF_HOST_HEAP_SIZE, CONF_MAX_MESSAGE
from ..errors import HgsmiError
from ..guest import Guest
from ..services.clients import BlobClient, echo, load
from .progress import human, rate
from .stat import query

READY_TIMEOUT = 15.0


def _ready(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, str]:
    """Wait for the host's ``ready`` line (``proc`` has stdout=PIPE); its key=value fields."""
    if proc.stdout is None:
        raise ValueError("_ready: the host was started without stdout=PIPE")
    deadline = time.monotonic() + timeout
    buf = b""
    fd = proc.stdout.fileno()
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise HgsmiError(0, f"the demo host did not start (exit status {proc.poll()})")
        if select.select([fd], [], [], min(left, 0.1))[0]:
            chunk = os.read(fd, 4096)
            if not chunk:
                continue
            buf += chunk
    line = buf.split(b"\n", 1)[0].decode()
    if not line.startswith("ready"):
        raise HgsmiError(0, f"the demo host said {line!r}")
    return dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)


def leftovers(name: str, rundir: str) -> list[str]:
    """What a host called ``name`` left in /dev/shm and in ``rundir``."""
    prefix = shm_prefix(name)
    shm = [e for e in os.listdir("/dev/shm")
           if e.startswith(prefix) or e.startswith("sem." + prefix)]
    return sorted(shm) + sorted(os.listdir(rundir))


def _files(where: str) -> list[tuple[str, str]]:
    """A few files to move: text, random bytes, and one larger than a heap."""
    out = []
    specs = [("hello.txt", b"hello from the hgsmi demo guest\n" * 3),
             ("random-1M.bin", os.urandom(1 << 20)),
             ("big-24M.bin", os.urandom(1 << 20) * 24)]
    for name, data in specs:
        path = os.path.join(where, name)
        with open(path, "wb") as f:
            f.write(data)
        out.append((name, path))
    return out


def _sha(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def run(size: int = 16 << 20, out: TextIO = sys.stdout) -> int:
    def say(text: str) -> None:
        print(text, file=out, flush=True)

    t_start = time.perf_counter()
    name = f"demo-{os.getpid()}"
    tmp = tempfile.mkdtemp(prefix="hgsmi-demo-")
    rundir, store, files = (os.path.join(tmp, d) for d in ("run", "store", "files"))
    os.mkdir(rundir, 0o700)
    os.mkdir(files)
    cmd = [sys.executable, "-m", "hgsmi", "host", "--name", name, "--size", str(size),
           "--store", store, "--runtime-dir", rundir, "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    try:
        ready = _ready(proc, READY_TIMEOUT)
        say("hgsmi demo: a host process and a guest (this process), embedded defaults")
        say(f"  host   {name}, pid {proc.pid}: {human(size)} segment per guest, "
            f"socket {ready.get('socket')}")
        moved = {"g2h": 0, "h2g": 0}
        with Guest(name, runtime_dir=rundir) as g:
            gh, hh, mm = (g.query_conf(i) for i in (CONF_GUEST_HEAP_SIZE, CONF_HOST_HEAP_SIZE,
                                                    CONF_MAX_MESSAGE))
            say(f"  guest  attached: guest heap {human(gh)}, host heap {human(hh)}, "
                f"largest message {human(mm)}")
            bc = BlobClient(g)
            sent = []
            for blob_name, path in _files(files):
                with open(path, "rb", buffering=0) as src:
                    r = bc.send(src, blob_name, os.fstat(src.fileno()).st_size)
                if r["sha256"] != _sha(path):
                    raise HgsmiError(0, f"{blob_name}: the local digest changed")
                moved["g2h"] += r["bytes"]
                sent.append((blob_name, path, r["sha256"]))
                say(f"  send   {blob_name:<14} {human(r['bytes']):>10} in "
                    f"{r['seconds'] * 1e3:7.1f} ms ({rate(r['bytes'], r['seconds'])}), "
                    f"sha256 {r['sha256'][:16]}... confirmed by the host")
            for blob_name, path, digest in sent:
                back = path + ".back"
                with open(back, "wb", buffering=0) as dst:
                    r = bc.fetch(blob_name, dst)
                if r["sha256"] != digest or _sha(back) != digest:
                    raise HgsmiError(0, f"{blob_name}: fetched bytes differ from the original")
                moved["h2g"] += r["bytes"]
                say(f"  fetch  {blob_name:<14} {human(r['bytes']):>10} in "
                    f"{r['seconds'] * 1e3:7.1f} ms ({rate(r['bytes'], r['seconds'])}), "
                    f"identical to the original")
            e = echo(g, 2000, 64)
            lat = e["latency_us"]
            say(f"  echo   {e['count']} calls of 64 B: p50 {lat['p50']:.1f} µs, "
                f"p90 {lat['p90']:.1f} µs, p99 {lat['p99']:.1f} µs "
                f"({e['calls_per_s']:.0f} calls/s)")
            ld = load(g, 0.5, 64 << 10, "both")
            moved["g2h"] += ld["g2h"]["bytes"]
            moved["h2g"] += ld["h2g"]["bytes"]
            say(f"  load   {ld['seconds']:.1f} s both ways in 64 KiB messages: guest->host "
                f"{rate(ld['g2h']['bytes'], ld['seconds'])}, host->guest "
                f"{rate(ld['h2g']['bytes'], ld['seconds'])}")
            time.sleep(0.3)  # let the host publish its latest figures
            _host_view(say, query(name, rundir), g.stats())
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(10)
        left = leftovers(name, rundir)
        say(f"  stop   SIGTERM: the host exited with status {rc}; "
            + (f"LEFT BEHIND: {', '.join(left)}" if left
               else "nothing left in /dev/shm or the socket directory"))
        total = time.perf_counter() - t_start
        nbytes = sum(os.path.getsize(p) for _, p, _ in sent)
        say(f"done in {total:.1f} s: {len(sent)} files ({human(nbytes)}) to the host and back "
            f"with every SHA-256 verified; {human(moved['g2h'])} guest->host and "
            f"{human(moved['h2g'])} host->guest in all")
        return 0 if rc == 0 and not left else 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _host_view(say: Any, st: dict[str, Any], mine: dict[str, Any]) -> None:
    g = st["guests"][0] if st["guests"] else None
    if g is None:
        return
    errs = sum(g["errors"].values())
    say(f"  stat   the host saw {g['msgs_in']} buffers ({human(g['bytes_in'])}) in and "
        f"{g['msgs_out']} ({human(g['bytes_out'])}) out, {g['doorbells']} doorbell wake-ups, "
        f"{g['irqs']} IRQs ({g['irqs_suppressed']} suppressed), host heap peak "
        f"{human(g['heap']['peak'])}, {errs} errors")
    say(f"         the guest rang {mine['doorbells']} doorbells "
        f"({mine['doorbells_suppressed']} suppressed: the host was awake), "
        f"guest heap peak {human(mine['guest_heap']['peak'])}")
