"""Serve a host from a thread while a test drives the guest in its own thread."""
from __future__ import annotations

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
