"""The host's faces: :class:`Host` blocks in C to wait; :class:`GuestConn` is its handle on a guest.

State and dispatch live in :mod:`hgsmi.core.host`; :class:`HostFace` is
what the blocking and the asyncio face (:class:`hgsmi.aio.AsyncHost`) share.
"""
from __future__ import annotations

import collections
import inspect
import math
import os
import signal
import threading
from collections.abc import Callable, Generator, Iterable
from typing import Any

from . import _kept
from ._kept import KEPT
from ._native import ffi, lib
from ._totals import Departed
from ._util import timeout_ms
from ._wire import (
    DOORBELLS_PER_S_DEFAULT,
    GUEST_HEAP_PERCENT_DEFAULT,
    MAX_GUESTS_DEFAULT,
    PENDING_PER_PID_DEFAULT,
    RING_ENTRIES_DEFAULT,
    SEGMENT_SIZE_DEFAULT,
    SOCKET_MODE_DEFAULT,
    SPIN_US_DEFAULT,
)
from .core.host import OPTIONS, ConnCore, HostCore, OnAwaitable
from .errors import check, error
from .message import Handler, Message

__all__ = ["GuestConn", "Handler", "Host", "HostFace"]

#: how long serve() sleeps at most between checks of stop() (signals wake it at once)
_SERVE_SLICE = 0.25
# what poll calls every round, looked up once (cffi's lib is fixed once loaded)
_wait, _alive, _EV_ACCEPT = lib.hgsmi_host_wait, lib.hgsmi_conn_alive, lib.HGSMI_EV_ACCEPT


class GuestConn:
    """The host's handle on one attached guest: its segment, rings and doorbells.

    ``wait_room()`` is how its host's face waits while a post finds no room:
    a blocking host serves a round, an asyncio one raises ``TypeError``.
    """

    def __init__(self, core: ConnCore, wait_room: Callable[[], object]) -> None:
        self.core = core  #: the guest's state (hgsmi.core.host)
        self.id = core.id
        self._c = core.c  # the C conn, for tests and drivers that call the C API
        self._wait_room = wait_room

    @property
    def alive(self) -> bool:
        return self.core.alive

    def post(self, channel: int, info: int, data: Any, timeout: float | None = None) -> int:
        """Send ``data`` to this guest through the host FIFO and the IRQ.

        Copies once into the host heap.  With a full heap or FIFO it keeps
        serving (acks free host buffers) until ``timeout`` (None: forever,
        0: raise at once).  Returns the buffer's offset.  Raises
        :class:`HeapExhausted` / :class:`RingFull` (timeout 0),
        :class:`Timeout`, :class:`PeerGone`, :class:`MessageTooLarge`.
        """
        off = self.core.post_at_once(channel, info, data, timeout)
        if off is not None:
            return off
        return self._drive(self.core.post_steps(channel, info, data, timeout))

    def post_many(self, channel: int, info: int, datas: Iterable[Any],
                  timeout: float | None = None) -> int:
        """:meth:`post` for many messages, batched: one IRQ per batch.

        Fire and forget: each is copied once into the host heap, and the
        buffer goes back to it when the guest acks.  With a full heap or
        FIFO it keeps serving until all are queued or ``timeout`` (None:
        forever; 0: queue what fits now).  Returns how many were queued.
        Raises :class:`HeapExhausted` / :class:`RingFull` (timeout 0 and
        none fits), :class:`Timeout` (not all queued in time),
        :class:`PeerGone`, :class:`MessageTooLarge`.
        """
        return self._drive(self.core.post_many_steps(channel, info, datas, timeout))

    def try_post(self, channel: int, info: int, data: Any) -> int:
        """:meth:`post` that neither waits nor raises: the offset, or ``-errno``.

        ``-ENOMEM`` / ``-EAGAIN`` while the host heap or FIFO is full (the
        guest's acks make room: see :meth:`unacked`), ``-EPIPE`` once the
        guest is gone.  For callers that meet a full guest every round
        (host-to-guest streams), where an exception a round would cost more
        than the post.  Raises ``ValueError``/``TypeError`` for bad arguments.
        """
        return self.core.try_post(channel, info, data)

    def unacked(self) -> int:
        """Host posts this guest has not acked yet (0 once closed); O(1).

        Acks are taken in at every serve round and post, so a drop in this
        count means room was freed in the host heap and FIFO.
        """
        return self.core.unacked()

    def stats(self) -> dict[str, Any]:
        """Counters, errors by kind, ring depth and host-heap figures of this guest.

        :class:`PeerGone` once closed: the C conn is freed with its segment
        (``Host.departed`` keeps the last figures of guests that left).
        """
        return self.core.stats()

    def close(self) -> None:
        """Disconnect the guest (it sees PeerGone) and reclaim everything it had."""
        self.core.close()

    def _drive(self, steps: Generator[Any, None, int]) -> int:
        """Run a post loop, letting the host serve (acks free room) whenever it waits."""
        try:
            while True:
                next(steps)
                self._wait_room()
        except StopIteration as done:
            result: int = done.value  # the steps' declared return
            return result

    def __repr__(self) -> str:
        return f"<hgsmi.GuestConn id={self.id} {'alive' if self.alive else 'gone'}>"


class HostFace:
    """What both faces of a host share: configuration, figures and guests, all
    through the core.  How to wait is each face's own (``poll``/``serve``)."""

    _core: HostCore

    def _make_core(self, name: str, size: int, doorbell: str, windowed: bool,
                   on_awaitable: OnAwaitable, options: dict[str, Any]) -> None:
        self._stop = threading.Event()
        core = self._core = HostCore(name, size, doorbell, windowed=windowed,
                                     on_awaitable=on_awaitable, options=options)
        self.name, self.doorbell, self.segment, self.size = name, doorbell, core.segment, size
        #: the ivshmem-server socket QEMU VMs connect to, or None
        self.ivshmem = core.ivshmem
        #: of the guests refused at the handshake, how many by reason (EACCES, EUSERS, ...)
        self.refusals: dict[str, int] = core.refusals
        #: the last stats of guests that left or were cut off
        self.departed: collections.deque[dict[str, Any]] = core.departed
        #: totals over every guest that left (``departed`` keeps only the last few)
        self.left: Departed = core.left

    @property
    def refused(self) -> int:
        """Guests refused at the handshake."""
        return self._core.refused

    @property
    def handler_errors(self) -> int:
        """Python handlers that raised."""
        return self._core.handler_errors

    @property
    def socket_path(self) -> str:
        """The control socket guests connect to."""
        return self._core.socket_path()

    def register(self, channel: int, handler: Handler) -> None:
        """Serve ``channel`` with ``handler(msg)``.

        The handler gets a :class:`Message` and returns None (results, if
        any, left in place in ``msg.data``) or a bytes-like reply of at most
        ``msg.capacity`` bytes.  An exception fails that buffer (the caller
        sees :class:`RemoteError`); the host keeps serving.  Channels 0 and 1
        are reserved: ``ValueError``; registered twice: :class:`HgsmiError`.
        """
        self._core.register(channel, handler)

    def register_c(self, channel: int, fn: Any, ctx: Any = ffi.NULL) -> None:
        """Serve ``channel`` with a C handler: an ``hgsmi_handler_fn`` pointer.

        Its buffers are served inside the C core's drain and never enter
        Python.  ``fn`` (and ``ctx``) must stay valid while the host lives;
        the host keeps a reference to both.  Errors as :meth:`register`.
        """
        self._core.register_c(channel, fn, ctx)

    def unregister(self, channel: int) -> None:
        """Stop serving ``channel``; its buffers then fail with ChannelNotRegistered."""
        self._core.unregister(channel)

    @property
    def guests(self) -> list[GuestConn]:
        """The guests attached now."""
        return [conn.peer for conn in self._core.conns.values()]

    def fileno(self) -> int:
        """An epoll fd that is readable when the host has something to do."""
        return int(lib.hgsmi_host_fileno(self._core.h))

    def stop(self) -> None:
        """Make ``serve`` return (from a handler, another thread or a signal)."""
        self._stop.set()

    def stats(self) -> dict[str, Any]:
        """The host's figures: name, socket, backend, admission, every guest's
        stats, refusals by reason and the totals of the guests that left."""
        core = self._core
        return {"name": self.name, "socket": self.socket_path, "doorbell": self.doorbell,
                "segment": self.segment, "segment_size": self.size, "refused": core.refused,
                "refusals": dict(core.refusals), "handler_errors": core.handler_errors,
                "admission": self.admission_stats(), "left": core.left.as_dict(),
                "guests": [c.stats() for c in core.conns.values()]}

    def admission_stats(self) -> dict[str, int]:
        """Refusals counted by the limit hit (``refused_*``, ``evicted_pending``,
        ``hello_timeouts``), the handshakes under way (``pending``,
        ``pending_peak``) and the limits in force (``max_pending_per_pid``,
        ``max_guests_per_pid``, ``max_doorbells_per_s``)."""
        return self._core.admission_stats()

    def set_stat_reply(self, data: bytes) -> None:
        """The bytes a stat request on the control socket is answered with."""
        check(lib.hgsmi_host_set_stat_reply(self._core.h, data, len(data)), "stat reply")

    def _wait_room(self) -> None:  # pragma: no cover - each face's own
        """How a guest's post waits for room (GuestConn)."""
        raise NotImplementedError

    def _peer(self, conn: ConnCore) -> GuestConn:
        """The handle on a guest that just attached."""
        return GuestConn(conn, self._wait_room)

    def _only_guest(self) -> GuestConn:
        """The one attached guest's handle (see :meth:`HostCore.only_guest`)."""
        peer: GuestConn = self._core.only_guest().peer
        return peer

    def __repr__(self) -> str:
        return f"<hgsmi.{type(self).__name__} {self.name!r} guests={len(self._core.conns)}>"


def _refuse_awaitable(conn: ConnCore, msg: Message, m: Any, aw: Any) -> bool:
    """A handler returned an awaitable: only hgsmi.aio can run it."""
    if inspect.iscoroutine(aw):
        aw.close()
    raise TypeError(f"channel {m.channel}: an async handler needs hgsmi.aio.AsyncHost")


class Host(HostFace):
    """A host: listens for guests, gives each its own VRAM segment, serves channels.

    ``Host(name, size=16 << 20, doorbell="eventfd")`` creates the control
    socket under ``runtime_dir`` (default ``$HGSMI_RUNTIME_DIR``,
    ``$XDG_RUNTIME_DIR/hgsmi`` or ``/tmp/hgsmi-<uid>``) with ``socket_mode``
    (0o600).  A stale socket or segment of a dead host of the same name is
    removed.  ``name`` is 1 to 64 of ``[A-Za-z0-9_.-]``, not starting with
    ``.``, and ``RUNTIME_DIR/NAME.sock`` must fit in 107 bytes (sun_path):
    ValueError, saying which bound, otherwise.

    ``segment`` is where each guest's VRAM lives: ``"memfd"`` (default), a
    memfd sealed against shrinking and growing and passed to the guest over
    the socket, so a guest cannot truncate it under the host; or
    ``"posix"``, a named segment in /dev/shm, which trusts the guest not to
    ``ftruncate`` it (that would kill the host with SIGBUS).

    Per-guest limits: ``max_inflight`` guest buffers taken from the submit
    ring and not yet completed (0: ``ring_entries``; the rest wait in the
    guest's ring), ``max_message`` bytes of data in one guest buffer (0: what
    the heap holds; bigger ones fail with :class:`MessageTooLarge`), and
    ``max_doorbells_per_s`` wake-ups a guest's doorbell may cause per second
    (default and 0: 100,000; :data:`hgsmi.UNLIMITED`: no limit; over it the
    doorbell is ignored for a tick, its ring is still served then).

    Tuning: ``ring_entries`` (1024, a power of two) is the depth of each
    ring; ``guest_heap_percent`` (50) is the guest heap's share of each
    segment, the rest is the host heap for ``post``; ``max_guests`` (64)
    guests at once; ``batch`` (64) buffers taken per serve round.

    Admission is fair per peer process (the pid the kernel reports for the
    socket, SO_PEERCRED): ``max_pending_per_pid`` handshakes under way at
    once (default 8; more are refused at accept), ``max_guests_per_pid``
    guests attached at once (0: max(16, max_guests / 4)).  A guest refused
    for a limit gets :class:`TooManyPending`, :class:`TooManyGuests` or
    :class:`HostFull` (max_guests); :meth:`stats` counts them under
    ``admission``.

    ``spin_us`` caps the adaptive spin after serving, before the host
    sleeps (0: never spin).  It spins only while some guest is awake and
    recent spins paid off, and pauses when it finds itself preempted, so an
    idle host sleeps at once and a loaded machine is not made slower.

    ``ivshmem`` (a socket path) also makes the host an ivshmem server: a QEMU
    VM started with ``-chardev socket,path=PATH,id=iv -device
    ivshmem-doorbell,chardev=iv,vectors=1`` becomes one more guest, with its
    own segment as the device's BAR2 (``size`` must then be a power of two),
    the same limits and stats; inside the VM it attaches with
    ``hgsmi_guest_attach_pci``.  The VM's exit is its detach.

    Raises :class:`NameInUse` if a live host has the name,
    ``ValueError``/``TypeError`` for bad arguments, :class:`HgsmiError` for
    the rest.
    """


    def __init__(self, name: str, size: int = SEGMENT_SIZE_DEFAULT, doorbell: str = "eventfd", *,
                 runtime_dir: str | os.PathLike[str] | None = None,
                 ring_entries: int = RING_ENTRIES_DEFAULT,
                 guest_heap_percent: int = GUEST_HEAP_PERCENT_DEFAULT,
                 max_guests: int = MAX_GUESTS_DEFAULT, max_inflight: int = 0,
                 spin_us: int = SPIN_US_DEFAULT,
                 allowed_uids: Iterable[int] | None = None, batch: int = 64,
                 socket_mode: int = SOCKET_MODE_DEFAULT, segment: str = "memfd",
                 max_message: int = 0,
                 max_doorbells_per_s: int = DOORBELLS_PER_S_DEFAULT,
                 max_pending_per_pid: int = PENDING_PER_PID_DEFAULT,
                 max_guests_per_pid: int = 0,
                 ivshmem: str | os.PathLike[str] | None = None) -> None:
        # This signature is the one list of the options and their defaults (host_options).
        args = locals()
        self._make_core(name, size, doorbell, True, _refuse_awaitable,
                        {k: args[k] for k in OPTIONS})
        # poll's last timeout and its milliseconds (NaN: none yet, equal to nothing)
        self._poll_last: tuple[float | None, int] = (math.nan, 0)

    # -- serving --------------------------------------------------------------
    def poll(self, timeout: float | None = None) -> int:
        """Wait up to ``timeout`` for guests, then serve one round of everything.

        Accepts new guests, reaps dead ones (reclaiming their buffers), and
        serves every guest's waiting buffers.  Returns the number of buffers
        served.  The wait releases the GIL.
        """
        # A round costs what serving costs: the bookkeeping below is a test
        # each (no call) unless it has work, and the wait's timeout is
        # converted once for the timeout a serving loop passes every time.
        if KEPT:
            _kept.sweep()
        core = self._core
        held_lines, held_life = core.log_holds
        if held_lines or held_life:
            core.flush_logs()
        last = self._poll_last  # one tuple: threads polling at once never mix two pairs
        if last[0] != timeout:
            last = self._poll_last = (timeout, timeout_ms(timeout))
        ev = _wait(core.h, last[1])
        if ev < 0:
            raise error(ev, "wait")
        if ev & _EV_ACCEPT:  # the listen fd (or a handshake) was ready: the C side says
            core.accept(self._peer)
        served = 0
        for conn in core.serving:
            served += conn.serve()
            if not _alive(conn.c):
                core.depart(conn)
                core.retire(conn)
        return served

    def _wait_room(self) -> None:
        """A post waits for room: serve a round (the guest's acks free it)."""
        self.poll(0.001)

    def serve(self) -> None:
        """Serve until :meth:`stop` or SIGTERM/SIGINT (in the main thread)."""
        self._stop.clear()
        restore = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                restore[sig] = signal.signal(sig, lambda *_: self._stop.set())
        try:
            while not self._stop.is_set():
                self.poll(_SERVE_SLICE)
        finally:
            for sig, old in restore.items():
                signal.signal(sig, old)

    def post(self, channel: int, info: int, data: Any, timeout: float | None = None) -> int:
        """:meth:`GuestConn.post` to the only attached guest.

        Raises :class:`PeerGone` with no guest and ``ValueError`` with several.
        """
        return self._only_guest().post(channel, info, data, timeout)

    def post_many(self, channel: int, info: int, datas: Iterable[Any],
                  timeout: float | None = None) -> int:
        """:meth:`GuestConn.post_many` to the only attached guest.

        Raises :class:`PeerGone` with no guest and ``ValueError`` with several.
        """
        return self._only_guest().post_many(channel, info, datas, timeout)

    def wait_for_guests(self, n: int = 1, timeout: float | None = 10.0) -> list[GuestConn]:
        """Serve until ``n`` guests are attached; :class:`Timeout` after ``timeout``."""
        for left in self._core.guests_steps(n, timeout):
            self.poll(0.05 if left is None else min(left, 0.05))
        return self.guests

    # -- lifetime -------------------------------------------------------------
    def close(self) -> None:
        """Disconnect every guest, remove segments and socket.  Idempotent."""
        self._core.close()

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def host_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` as :class:`Host` takes them, with its defaults; TypeError for an unknown one."""
    bound = inspect.signature(Host).bind_partial(**kwargs)
    bound.apply_defaults()
    return {k: bound.arguments[k] for k in OPTIONS}
