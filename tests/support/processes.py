"""Child processes (peers, hosts) that never hang a test."""
from __future__ import annotations

import select
import signal
import subprocess


def readline(p: subprocess.Popen, timeout: float = 10.0) -> str:
    """The next line the child prints, or fail after ``timeout`` (never hang)."""
    ready, _, _ = select.select([p.stdout], [], [], timeout)
    assert ready, f"peer {p.args[2:]} printed nothing in {timeout} s"
    return p.stdout.readline().strip()


def reap(p: subprocess.Popen) -> None:
    """Kill the child if it still runs, wait for it, close its stdout."""
    if p.poll() is None:
        p.kill()
    p.wait(10)
    if p.stdout:
        p.stdout.close()


def stop_host(p: subprocess.Popen) -> int:
    """SIGTERM a host child and return its exit status; kill it after 10 s."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        return p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        raise
