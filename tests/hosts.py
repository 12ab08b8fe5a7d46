"""Hosts for tests: served from a thread (:class:`Pump`), or a child process (:func:`stop_host`)."""
from __future__ import annotations

import signal
import subprocess
import threading

import hgsmi


class Pump:
    """``host.serve()`` in a daemon thread until :meth:`stop`."""

    def __init__(self, host: hgsmi.Host) -> None:
        self.host = host
        self.t = threading.Thread(target=host.serve, daemon=True)
        self.t.start()

    def stop(self) -> None:
        self.host.stop()
        self.t.join(5)


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
