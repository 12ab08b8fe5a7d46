"""The host: owns the VRAM segments, serves channels, posts to guests."""
from __future__ import annotations

import asyncio
import collections
import errno
import functools
import inspect
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any

from . import _kept
from ._native import ffi, lib
from ._ratelog import RateLog
from ._totals import Departed
from ._util import (
    as_buffer,
    backend_id,
    buffer_arrays,
    check_channel,
    check_int,
    check_name,
    segment_id,
    socket_too_long,
    struct_dict,
    timeout_ms,
)
from ._wire import (
    CH_SETUP,
    DOORBELLS_PER_S_DEFAULT,
    GUEST_HEAP_PERCENT_DEFAULT,
    MAX_GUESTS_DEFAULT,
    PENDING_PER_PID_DEFAULT,
    RING_ENTRIES_DEFAULT,
    SEGMENT_SIZE_DEFAULT,
    SOCKET_MODE_DEFAULT,
    SPIN_US_DEFAULT,
    UNLIMITED,
)
from .errors import HgsmiError, PeerGone, Timeout, check, error
from .heap import with_fragmentation
from .lease import Windows
from .message import Message
from .reply import BadReply, HeldBack, ReplyTooLarge, fail_status, msg_array, serve_batch

log = logging.getLogger("hgsmi.host")

Handler = Callable[[Message], Any]

#: how long serve() sleeps at most between checks of stop() (signals wake it at once)
_SERVE_SLICE = 0.25
#: batches one guest may have served per round before the next guest's turn
_BATCHES_PER_ROUND = 4
#: accept outcomes handled per pass: a flood of connections waits while guests are served
_ACCEPTS_PER_PASS = 64
#: lines a burst of guests attaching or leaving logs before thinning to one a second
_LIFECYCLE_BURST = 64
#: what a post waits out: host heap full (acks free it), FIFO full
_NO_ROOM = (-errno.ENOMEM, -errno.EAGAIN)


class GuestConn:
    """The host's handle on one attached guest: its segment, rings and doorbells."""

    def __init__(self, host: Host, conn: Any) -> None:
        self._host = host
        self._c = conn
        self.id: int = lib.hgsmi_conn_id(conn)
        self._base = ffi.cast("char *", lib.hgsmi_conn_base(conn))
        self._msgs = ffi.new("struct hgsmi_msg[]", host._batch)
        self._held = HeldBack()  # completions waiting for a view to go
        # serve_batch's start_async: the host's, for this guest
        self._start_async = functools.partial(host._start_async, self)
        # what a sync host's views are sliced from (hgsmi/lease.py)
        self._size = int(lib.hgsmi_conn_size(conn))
        self._windows = (Windows(self._base, self._size)
                         if host._windowed else None)
        self._orphans: list[Callable[[], bool]] = []  # views revoked at close, if they can be
        self._closed = False
        self._unacked_st: Any = None  # unacked()'s stats struct, made on first use

    @property
    def alive(self) -> bool:
        return not self._closed and bool(lib.hgsmi_conn_alive(self._c))

    def post(self, channel: int, info: int, data: Any, timeout: float | None = None) -> int:
        """Send ``data`` to this guest through the host FIFO and the IRQ.

        Copies once into the host heap.  With a full heap or FIFO it keeps
        serving (acks free host buffers) until ``timeout`` (None: forever,
        0: raise at once).  Returns the buffer's offset.  Raises
        :class:`HeapExhausted` / :class:`RingFull` (timeout 0),
        :class:`Timeout`, :class:`PeerGone`, :class:`MessageTooLarge`.
        """
        return self._serve_until_done(self._post_steps(channel, info, data, timeout))

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
        return self._serve_until_done(self._post_many_steps(channel, info, datas, timeout))

    def try_post(self, channel: int, info: int, data: Any) -> int:
        """:meth:`post` that neither waits nor raises: the offset, or ``-errno``.

        ``-ENOMEM`` / ``-EAGAIN`` while the host heap or FIFO is full (the
        guest's acks make room: see :meth:`unacked`), ``-EPIPE`` once the
        guest is gone.  For callers that meet a full guest every round
        (host-to-guest streams), where an exception a round would cost more
        than the post.  Raises ``ValueError``/``TypeError`` for bad arguments.
        """
        check_channel(channel, info)
        if self._closed:
            return -errno.EPIPE
        src = as_buffer(data)
        return int(lib.hgsmi_conn_post(self._c, channel, info, src, len(src)))

    def unacked(self) -> int:
        """Host posts this guest has not acked yet (0 once closed); O(1).

        Acks are taken in at every serve round and post, so a drop in this
        count means room was freed in the host heap and FIFO.
        """
        if self._closed:
            return 0
        st = self._unacked_st
        if st is None:
            st = self._unacked_st = ffi.new("struct hgsmi_conn_stats *")
        lib.hgsmi_conn_stats(self._c, st)
        return int(st.inflight_host)

    def _serve_until_done(self, steps: Generator[Any, None, int]) -> int:
        """Run a post loop, serving the host (acks free room) whenever it waits."""
        try:
            while True:
                next(steps)
                self._host.poll(0.001)
        except StopIteration as done:
            result: int = done.value  # the steps' declared return
            return result

    def _post_steps(self, channel: int, info: int, data: Any,
                    timeout: float | None) -> Generator[tuple[int, float | None], None, int]:
        """The post loop, for Host and AsyncHost alike (see :meth:`_room_steps`).
        Returns the offset; raises as :meth:`post`."""
        check_channel(channel, info)
        src = as_buffer(data)
        return (yield from self._room_steps(
            "post", lambda: lib.hgsmi_conn_post(self._c, channel, info, src, len(src)),
            timeout))

    def _post_many_steps(self, channel: int, info: int, datas: Iterable[Any],
                         timeout: float | None
                         ) -> Generator[tuple[int, float | None], None, int]:
        """The post_many loop, for Host and AsyncHost alike (see
        :meth:`_room_steps`).  Returns how many; raises as :meth:`post_many`."""
        check_channel(channel, info)
        n, ptrs, lens, _keep = buffer_arrays(datas)
        if not n:
            return 0
        sent = 0

        def attempt() -> int | None:
            nonlocal sent
            rc: int = lib.hgsmi_conn_send(self._c, channel, info, ptrs + sent, lens + sent,
                                          n - sent)
            if rc > 0:
                sent += rc
                return sent if sent == n else None  # None: more, try again now
            if sent and timeout == 0 and rc in _NO_ROOM:
                return sent  # timeout 0: what fitted
            return rc

        return (yield from self._room_steps("post_many", attempt, timeout))

    def _room_steps(self, what: str, attempt: Callable[[], int | None],
                    timeout: float | None) -> Generator[tuple[int, float | None], None, int]:
        """The one wait-for-room loop of post and post_many.

        Calls ``attempt()`` (``>= 0``: done, the result; ``None``: progress,
        call again; ``-errno``: failed) until done.  While the host heap or
        the FIFO is full it yields ``(rc, seconds left or None)`` and its
        driver serves (acks free room) before the next try.  Raises
        :class:`HeapExhausted` / :class:`RingFull` with timeout 0,
        :class:`Timeout` when it runs out, and ``error(rc)`` for any other
        failure.
        """
        timeout_ms(timeout)  # None or >= 0, else ValueError
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._check_open()
            rc = attempt()
            if rc is None:
                continue
            if rc >= 0:
                return int(rc)
            if rc not in _NO_ROOM:
                raise error(rc, what)
            if deadline is not None and time.monotonic() >= deadline:
                if timeout == 0:
                    raise error(rc, what)
                raise Timeout(errno.ETIMEDOUT, f"{what}: no room in the host heap or FIFO")
            yield rc, None if deadline is None else deadline - time.monotonic()

    def stats(self) -> dict[str, Any]:
        """Counters, errors by kind, ring depth and host-heap figures of this guest.

        :class:`PeerGone` once closed: the C conn is freed with its segment
        (``Host.departed`` keeps the last figures of guests that left).
        """
        if self._closed:
            raise PeerGone(errno.EPIPE, f"guest {self.id} is closed")
        st = ffi.new("struct hgsmi_conn_stats *")
        lib.hgsmi_conn_stats(self._c, st)
        out = struct_dict(st[0])
        out["host_heap"] = with_fragmentation(out["host_heap"])
        out["held_completions"] = len(self._held)
        return out

    def close(self) -> None:
        """Disconnect the guest (it sees PeerGone) and reclaim everything it had."""
        if not self._closed:
            self._closed = True
            self._host._conns.pop(self.id, None)
            if self._windows is not None:
                self._windows.retire()
            left = self._held.drop() + [gone for gone in self._orphans if not gone()]
            if left:  # a view lives on: unmapped only once it goes
                lib.hgsmi_conn_keep_mapping(self._c)
                _kept.keep(self._base, self._size, left)
            lib.hgsmi_conn_close(self._c)
        if _kept.pending():
            _kept.sweep()

    def _check_open(self) -> None:
        if not self.alive:
            raise PeerGone(errno.EPIPE, f"guest {self.id} is gone")

    def _serve(self) -> int:
        """Serve up to a few batches of this guest; return how many buffers.

        The cap keeps one busy guest from starving the others: the host's
        wait returns at once while any guest has work left.  A buffer whose
        handler kept a view is completed by a later round, once it is gone.
        """
        served = 0
        if self._held:
            self._complete_ready()
        msgs, cap = self._msgs, len(self._msgs)
        for _ in range(_BATCHES_PER_ROUND):
            n: int = lib.hgsmi_conn_recv(self._c, msgs, cap)
            if n <= 0:
                return served
            k = serve_batch(msgs, n, self._base, self, self._host._handlers, self._start_async,
                            self._host._handler_failed, self._held, self._windows)
            if k:
                lib.hgsmi_conn_complete(self._c, msgs, k)
            served += n
            if n < cap:  # drained; what came since makes the host's wait return at once
                return served
        return served

    def _complete_ready(self) -> None:
        """Complete the buffers held back by a view that is now gone (one IRQ)."""
        ready = self._held.ready()
        if ready:
            lib.hgsmi_conn_complete(self._c, msg_array(ready), len(ready))

    def __repr__(self) -> str:
        return f"<hgsmi.GuestConn id={self.id} {'alive' if self.alive else 'gone'}>"


class Host:
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

    #: views of guest buffers are sliced from a Window (handlers never defer)
    _windowed = True

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
        self._h = None
        raw_name = check_name(name)
        if not isinstance(size, int) or size <= 0 or size >= 1 << 31:
            raise ValueError(f"size must be a positive int below 2 GiB, not {size!r}")
        check_int("ring_entries", ring_entries, 2, 1 << 20)
        if ring_entries & (ring_entries - 1):
            raise ValueError(f"ring_entries must be a power of two, not {ring_entries}")
        check_int("guest_heap_percent", guest_heap_percent, 1, 99)
        for what, v in (("max_guests", max_guests), ("max_inflight", max_inflight),
                        ("spin_us", spin_us), ("max_message", max_message),
                        ("max_pending_per_pid", max_pending_per_pid),
                        ("max_guests_per_pid", max_guests_per_pid)):
            check_int(what, v, 0, 0xFFFFFFFF)
        check_int("max_doorbells_per_s", max_doorbells_per_s, 0, UNLIMITED)
        seg_kind = segment_id(segment)
        check_int("batch", batch, 1, 1 << 16)
        check_int("socket_mode", socket_mode, 1, 0o777)
        if ivshmem is not None and (size & (size - 1) or segment != "memfd"
                                    or doorbell != "eventfd"):
            raise ValueError("ivshmem needs a power-of-two size (a PCI BAR), the memfd "
                             f"segment and eventfd doorbells, not size={size}, "
                             f"segment={segment!r}, doorbell={doorbell!r}")
        self._keep = [ffi.new("char[]", raw_name)]
        cfg = ffi.new("struct hgsmi_host_config *")
        cfg.name = self._keep[0]
        if runtime_dir is not None:
            self._keep.append(ffi.new("char[]", os.fsencode(runtime_dir)))
            cfg.runtime_dir = self._keep[-1]
        cfg.segment_size = size
        cfg.ring_entries = ring_entries
        cfg.guest_heap_percent = guest_heap_percent
        cfg.backend = backend_id(doorbell)
        cfg.max_guests = max_guests
        cfg.max_inflight = max_inflight
        cfg.spin_us = spin_us
        cfg.socket_mode = socket_mode
        cfg.segment = seg_kind
        cfg.max_message = max_message
        cfg.max_doorbells_per_s = max_doorbells_per_s  # 0: the C core's default, as here
        cfg.max_pending_per_pid = max_pending_per_pid
        cfg.max_guests_per_pid = max_guests_per_pid
        if ivshmem is not None:
            self._keep.append(ffi.new("char[]", os.fsencode(ivshmem)))
            cfg.ivshmem_path = self._keep[-1]
        if allowed_uids is not None:
            uids = [check_int("allowed uid", u, 0, 0xFFFFFFFF) for u in allowed_uids]
            self._keep.append(ffi.new("uint32_t[]", uids))
            cfg.allowed_uids = self._keep[-1]
            cfg.n_allowed_uids = len(uids)
        out = ffi.new("struct hgsmi_host **")
        rc = lib.hgsmi_host_create(cfg, out)
        # The name and every field were checked above: what is left is the layout.
        if rc == -errno.EINVAL:
            raise ValueError(f"size {size} is too small for the segment layout of {name!r}: "
                             f"a 4 KiB header, 4 rings of {ring_entries} entries and two "
                             f"heaps of at least 4 KiB (guest share {guest_heap_percent}%)")
        if rc == -errno.ENAMETOOLONG:
            if ivshmem is not None and len(os.fsencode(ivshmem)) > 107:
                raise ValueError(f"ivshmem {ivshmem!r} is too long for a socket path "
                                 "(at most 107 bytes)")
            raise ValueError(socket_too_long(name, runtime_dir))
        check(rc, f"host {name!r}")
        self._h = out[0]
        self.name = name
        self.doorbell = doorbell
        self.segment = segment
        self.size = size
        #: the ivshmem-server socket QEMU VMs connect to, or None
        self.ivshmem = os.fspath(ivshmem) if ivshmem is not None else None
        self._batch = batch
        self._handlers: list[Handler | None] = [None] * 256
        self._conns: dict[int, GuestConn] = {}
        self._conn_out = ffi.new("struct hgsmi_conn **")
        self._stop = threading.Event()
        self.refused = 0  #: guests refused at the handshake
        #: of those, how many by reason (the errno's name: EACCES, EUSERS, ...)
        self.refusals: dict[str, int] = {}
        self.handler_errors = 0  #: Python handlers that raised
        #: the last stats of guests that left or were cut off
        self.departed: collections.deque[dict[str, Any]] = collections.deque(maxlen=64)
        #: totals over every guest that left (``departed`` keeps only the last few)
        self.left = Departed()
        # What a guest can make the host log, per (guest, kind): floods are
        # counted (handler_errors, the C counters), not logged line by line.
        self._ratelog = RateLog(log)
        self._lifelog = RateLog(log, burst=_LIFECYCLE_BURST)

    # -- configuration --------------------------------------------------------
    @property
    def socket_path(self) -> str:
        """The control socket guests connect to."""
        path: bytes = ffi.string(lib.hgsmi_host_socket_path(self._h))
        return path.decode()

    def register(self, channel: int, handler: Handler) -> None:
        """Serve ``channel`` with ``handler(msg)``.

        The handler gets a :class:`Message` and returns None (results, if
        any, left in place in ``msg.data``) or a bytes-like reply of at most
        ``msg.capacity`` bytes.  An exception fails that buffer (the caller
        sees :class:`RemoteError`); the host keeps serving.  Channels 0 and 1
        are reserved: ``ValueError``; registered twice: :class:`HgsmiError`.
        """
        check_channel(channel)
        if channel == CH_SETUP:
            raise ValueError("channel 1 is the setup channel, served by the host itself")
        if not callable(handler):
            raise TypeError("handler must be callable")
        check(lib.hgsmi_host_register(self._h, channel, ffi.NULL, ffi.NULL),
              f"register channel {channel}")
        self._handlers[channel] = handler

    def register_c(self, channel: int, fn: Any, ctx: Any = ffi.NULL) -> None:
        """Serve ``channel`` with a C handler: an ``hgsmi_handler_fn`` pointer.

        Its buffers are served inside the C core's drain and never enter
        Python.  ``fn`` (and ``ctx``) must stay valid while the host lives;
        the host keeps a reference to both.  Errors as :meth:`register`.
        """
        check_channel(channel)
        if channel == CH_SETUP:
            raise ValueError("channel 1 is the setup channel, served by the host itself")
        fn = ffi.cast("hgsmi_handler_fn", fn)
        if fn == ffi.NULL:
            raise ValueError("fn must be a non-NULL hgsmi_handler_fn")
        check(lib.hgsmi_host_register(self._h, channel, fn, ctx),
              f"register channel {channel}")
        self._keep.append((fn, ctx))

    def unregister(self, channel: int) -> None:
        """Stop serving ``channel``; its buffers then fail with ChannelNotRegistered."""
        check_channel(channel)
        check(lib.hgsmi_host_unregister(self._h, channel), f"unregister {channel}")
        self._handlers[channel] = None

    # -- serving --------------------------------------------------------------
    @property
    def guests(self) -> list[GuestConn]:
        """The guests attached now."""
        return list(self._conns.values())

    def fileno(self) -> int:
        """An epoll fd that is readable when :meth:`poll` has something to do."""
        return int(lib.hgsmi_host_fileno(self._h))

    def poll(self, timeout: float | None = None) -> int:
        """Wait up to ``timeout`` for guests, then serve one round of everything.

        Accepts new guests, reaps dead ones (reclaiming their buffers), and
        serves every guest's waiting buffers.  Returns the number of buffers
        served.  The wait releases the GIL.
        """
        if _kept.pending():
            _kept.sweep()
        self._flush_logs()
        ev = lib.hgsmi_host_wait(self._h, timeout_ms(timeout))
        if ev < 0:
            raise error(ev, "wait")
        if ev & lib.HGSMI_EV_ACCEPT:
            self._accept_all()
        served = 0
        for conn in list(self._conns.values()):
            served += conn._serve()
            if not lib.hgsmi_conn_alive(conn._c):
                self._gone(conn)
                self._departing(conn)
                conn.close()
        return served

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

    def stop(self) -> None:
        """Make :meth:`serve` return (from a handler, another thread or a signal)."""
        self._stop.set()

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
        for left in self._guests_steps(n, timeout):
            self.poll(0.05 if left is None else min(left, 0.05))
        return self.guests

    def _guests_steps(self, n: int, timeout: float | None) -> Iterator[float | None]:
        """The wait_for_guests loop: yields the seconds left (None: no limit)
        while fewer than ``n`` guests are attached; raises :class:`Timeout`."""
        timeout_ms(timeout)  # None or >= 0, else ValueError
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self._conns) < n:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Timeout(errno.ETIMEDOUT, f"{len(self._conns)} of {n} guests attached")
            yield left

    def stats(self) -> dict[str, Any]:
        """The host's figures: name, socket, backend, admission, every guest's
        stats, refusals by reason and the totals of the guests that left."""
        return {"name": self.name, "socket": self.socket_path, "doorbell": self.doorbell,
                "segment": self.segment, "segment_size": self.size, "refused": self.refused,
                "refusals": dict(self.refusals), "handler_errors": self.handler_errors,
                "admission": self.admission_stats(), "left": self.left.as_dict(),
                "guests": [c.stats() for c in self._conns.values()]}

    def admission_stats(self) -> dict[str, int]:
        """Refusals counted by the limit hit (``refused_*``, ``evicted_pending``,
        ``hello_timeouts``), the handshakes under way (``pending``,
        ``pending_peak``) and the limits in force (``max_pending_per_pid``,
        ``max_guests_per_pid``, ``max_doorbells_per_s``)."""
        out = ffi.new("struct hgsmi_host_stats *")
        lib.hgsmi_host_stats(self._h, out)
        return struct_dict(out[0])

    def set_stat_reply(self, data: bytes) -> None:
        """The bytes a stat request on the control socket is answered with."""
        check(lib.hgsmi_host_set_stat_reply(self._h, data, len(data)), "stat reply")

    def _start_async(self, conn: GuestConn, msg: Message, m: Any, aw: Any) -> bool:
        """A handler returned an awaitable: only hgsmi.aio can run it."""
        if inspect.iscoroutine(aw):
            aw.close()
        raise TypeError(f"channel {m.channel}: an async handler needs hgsmi.aio.AsyncHost")

    def _handler_failed(self, m: Any, e: BaseException) -> None:
        fail_status(m, e)
        if isinstance(e, asyncio.CancelledError):
            return
        if not isinstance(e, ReplyTooLarge):  # over the guest's capacity: failed, not raised
            self.handler_errors += 1
        # m.guest: the sender, so one guest's flood thins only its own lines
        if isinstance(e, (HgsmiError, BadReply)):  # no traceback: it says what happened
            self._ratelog.log(m.guest, f"channel {m.channel} handler failed", logging.WARNING,
                              "guest %d: channel %d handler failed: %s", m.guest, m.channel, e)
        else:
            self._ratelog.log(m.guest, f"channel {m.channel} handler raised", logging.ERROR,
                              "guest %d: channel %d handler raised", m.guest, m.channel,
                              exc_info=e)

    def _flush_logs(self) -> None:
        """Log the counts of floods that stopped (each serving round; cheap when none)."""
        self._ratelog.flush()
        self._lifelog.flush()

    def _gone(self, conn: GuestConn) -> None:
        """Log that ``conn``'s guest went (thinned: a guest can reconnect in a loop)."""
        how = "cut off" if lib.hgsmi_conn_cut_off(conn._c) else "gone"
        self._lifelog.log(None, f"guest {how}", logging.INFO,
                          "guest %d %s; reclaiming its buffers", conn.id, how)

    def _departing(self, conn: GuestConn) -> None:
        """Keep what ``conn`` leaves behind (its last stats, folded into
        :attr:`left`) and drop its log records; before ``conn.close()``."""
        st = conn.stats()
        self.departed.append(st)
        self.left.add(st, bool(lib.hgsmi_conn_cut_off(conn._c)))
        self._ratelog.forget(conn.id)

    def _only_guest(self) -> GuestConn:
        """The one attached guest: :class:`PeerGone` with none, ``ValueError`` with several."""
        conns = self.guests
        if not conns:
            raise PeerGone(errno.ENOTCONN, "no guest attached")
        if len(conns) > 1:
            raise ValueError("several guests attached: pass the guest "
                             "(host.guests[i].post(), or guest= on AsyncHost.post)")
        return conns[0]

    def _accept_all(self) -> None:
        # Bounded: under a flood of connections the guests are served between
        # passes (the listen fd stays readable, so the next wait comes back).
        for _ in range(_ACCEPTS_PER_PASS):
            rc = lib.hgsmi_host_accept(self._h, self._conn_out)
            if rc in (-errno.EAGAIN, -errno.EINPROGRESS):  # nobody (else) ready yet
                return
            if rc == -errno.EPIPE:  # connected and left: a probe for a live host
                continue
            if rc < 0:
                self.refused += 1
                why = errno.errorcode.get(-rc, str(-rc))
                self.refusals[why] = self.refusals.get(why, 0) + 1
                self._ratelog.log(None, f"refused {why}", logging.WARNING,
                                  "guest refused: %s", error(rc).strerror)
                continue
            c = self._conn_out[0]
            if c != ffi.NULL:
                conn = GuestConn(self, c)
                self._conns[conn.id] = conn
                self._lifelog.log(None, "guest attached", logging.INFO,
                                  "guest %d attached", conn.id)

    # -- lifetime -------------------------------------------------------------
    def close(self) -> None:
        """Disconnect every guest, remove segments and socket.  Idempotent."""
        if getattr(self, "_h", None) is not None:
            for conn in list(self._conns.values()):
                conn.close()
            lib.hgsmi_host_destroy(self._h)
            self._h = None

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<hgsmi.Host {self.name!r} guests={len(self._conns)}>"


