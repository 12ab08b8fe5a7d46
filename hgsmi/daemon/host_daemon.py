"""``hgsmi host``: the host daemon.

It loads the drivers a config names, creates the host (socket, and a segment
per guest as they attach), registers the built-in services and the drivers,
prints one ``ready`` line on stdout, and serves every guest from one event
loop until SIGTERM or SIGINT.  Host-to-guest streams (blob fetches, the load
source) are pumped between polls, posting only what each guest's host heap
and FIFO can take.  What the services hold for each guest is bounded by the
quotas of ``cfg.service_limits()`` (:mod:`hgsmi.services.quota`), and released as
soon as the guest goes.  Every :data:`STAT_PERIOD` it publishes its statistics as
JSON for ``hgsmi stat``.  On a signal it fails what is in flight, removes
every segment, the socket and partial uploads, and returns 0.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import signal
import sys
import time
from typing import Any, TextIO

from .._paths import socket_path
from ..errors import NameInUse
from ..host import Host
from ..services.blob_files import remove_stale_uploads
from ..services.blob_store import BlobStore
from ..services.builtin import CH_BLOB, CH_ECHO, CH_SINK, Counters, Sink, Streams, echo
from ..services.quota import Quotas
from . import drivers
from ._procstat import process_stats
from .config import HostConfig, default_name, default_store

log = logging.getLogger("hgsmi.host")

STAT_PERIOD = 0.25  #: seconds between refreshes of the published statistics


class HostDaemon:
    """A configured host with its services; :meth:`run` serves until a signal."""

    def __init__(self, cfg: HostConfig, runtime_dir: str | None = None) -> None:
        # Everything that can fail on the user's input fails before the host exists.
        loaded = {n: (c, drivers.load(c.driver, cfg.base_dir)) for n, c in cfg.channels.items()}
        cfg.name = cfg.name or default_name()
        self.store = os.path.abspath(cfg.store or default_store(cfg.name))
        os.makedirs(self.store, mode=0o700, exist_ok=True)
        if (stale := remove_stale_uploads(self.store)):  # of a host killed mid-upload
            log.info("removed %d unfinished upload(s) from %s", stale, self.store)
        try:
            self.host = Host(cfg.name, cfg.size, cfg.doorbell, runtime_dir=runtime_dir,
                             segment=cfg.segment, ivshmem=cfg.ivshmem,
                             allowed_uids=cfg.allowed_uids, **cfg.limits())
        except NameInUse:
            raise NameInUse(errno.EADDRINUSE, f"a host named {cfg.name!r} is already running "
                            f"(socket {socket_path(cfg.name, runtime_dir)})") from None
        self.cfg = cfg
        self.started = time.monotonic()
        self.counters = Counters()
        self.quotas = Quotas(cfg.service_limits())
        self.streams = Streams(self.counters)
        self.blobs = BlobStore(self.store, self.streams, self.quotas)
        self.channels: dict[int, dict[str, str]] = {}
        self._seen: set[int] = set()
        try:
            builtins = {CH_ECHO: ("echo", echo), CH_SINK: ("sink", Sink(self.streams, self.quotas)),
                        CH_BLOB: ("blob", self.blobs)}
            for ch, (label, handler) in builtins.items():
                if ch not in loaded:
                    self._register(ch, label, "builtin", handler)
            for ch, (c, drv) in sorted(loaded.items()):
                if ch in builtins:
                    log.info("channel %d: %s replaces the built-in %s", ch, c.driver,
                             builtins[ch][0])
                if drv.kind == "c":
                    self.host.register_c(ch, drv.fn)
                    self.channels[ch] = {"name": c.name, "driver": f"c {c.driver}"}
                else:
                    self._register(ch, c.name, f"python {c.driver}", drv.handler)
            self._drivers = loaded  # C libraries stay loaded while the host lives
        except BaseException:
            self.host.close()
            raise

    def _register(self, ch: int, label: str, driver: str, handler: Any) -> None:
        self.host.register(ch, self.counters.wrap(ch, handler))
        self.channels[ch] = {"name": label, "driver": driver}

    # -- serving ------------------------------------------------------------------
    def run(self, out: TextIO = sys.stdout) -> int:
        """Serve until SIGTERM/SIGINT; then clean up and return 0."""
        stop: list[int] = []
        handlers = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            handlers[sig] = signal.signal(sig, lambda signum, _frame: stop.append(signum))
        try:
            self.publish()
            print(f"ready name={self.cfg.name} socket={self.host.socket_path} "
                  f"store={self.store} pid={os.getpid()}", file=out, flush=True)
            log.info("serving %r on %s: %s segments, %s doorbells, channels %s",
                     self.cfg.name, self.host.socket_path, self.cfg.size, self.cfg.doorbell,
                     ", ".join(f"{ch} {c['name']}" for ch, c in sorted(self.channels.items())))
            next_publish = time.monotonic() + STAT_PERIOD
            attached: set[int] = set()
            while not stop:
                busy = self.streams.pump()
                self.host.poll(0 if busy else STAT_PERIOD)
                now = time.monotonic()
                # A guest that left (or came): what was held for it goes at once.
                live = {c.id for c in self.host.guests}
                if now >= next_publish or live != attached:
                    attached = live
                    self.publish()
                    next_publish = now + STAT_PERIOD
            log.info("%s: stopping", signal.Signals(stop[0]).name)
        finally:
            for sig, old in handlers.items():
                signal.signal(sig, old)
            self.close()
        return 0

    def publish(self) -> None:
        """Reap what departed guests left and refresh the stat reply."""
        live = {c.id for c in self.host.guests}
        self._seen |= live
        for gone in set(self.counters.by_guest) - live:
            self.counters.forget(gone)
        self.streams.reap(live)
        self.blobs.reap(live)
        self.host.set_stat_reply(json.dumps(self.stats(), separators=(",", ":")).encode())

    def stats(self) -> dict[str, Any]:
        """The document ``hgsmi stat`` shows."""
        guests = []
        for c in self.host.guests:
            s = c.stats()
            heap = s["host_heap"]
            guests.append({
                "id": c.id, "epoch": s["epoch"],
                "heap": {k: heap[k] for k in ("capacity", "used", "peak", "largest_free",
                                              "free_bytes", "fragmentation", "failures")},
                "submit_depth": s["submit_depth"], "inflight_host": s["inflight_host"],
                **{k: s[k] for k in ("doorbells", "irqs", "irqs_suppressed", "msgs_in",
                                     "bytes_in", "msgs_out", "bytes_out")},
                "errors": {k[len("errors_"):]: v for k, v in s.items()
                           if k.startswith("errors_")},
                "channels": Counters.as_dict(self.counters.by_guest.get(c.id, {})),
                "held": self.quotas.held(c.id),
            })
        totals = Counters.as_dict(self.counters.total)
        channels = {str(ch): {**meta, **totals.get(str(ch), {})}
                    for ch, meta in sorted(self.channels.items())}
        return {"name": self.cfg.name, "pid": os.getpid(), "socket": self.host.socket_path,
                "doorbell": self.cfg.doorbell, "segment": self.cfg.segment,
                "segment_size": self.cfg.size,
                "uptime_s": round(time.monotonic() - self.started, 3),
                "guests_total": len(self._seen), "refused": self.host.refused,
                "handler_errors": self.host.handler_errors,
                "admission": self.host.admission_stats(), "channels": channels,
                "blob": self.blobs.stats(), "busy": self.quotas.refused,
                "quotas": dataclasses.asdict(self.quotas.limits), "guests": guests,
                # what outlives the guests, and the host's own footprint
                "left": self.host.left.as_dict(), "refusals": dict(self.host.refusals),
                "process": process_stats()}

    def close(self) -> None:
        """Fail in-flight work, disconnect guests, remove segments, socket, partial uploads."""
        self.streams.close()
        self.blobs.close()
        self.host.close()
