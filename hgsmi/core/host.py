"""The host's state and dispatch, without waiting: :class:`HostCore` and :class:`ConnCore`.

``HostCore`` owns the C host, the handler table and the host's figures;
one ``ConnCore`` per attached guest owns its segment, its batch array and
what goes back to it later (held-back completions, deferred handlers).
Nothing here sleeps: the faces, :class:`hgsmi.Host` (blocks in C) and
:class:`hgsmi.aio.AsyncHost` (the asyncio loop), decide when to call in.
"""
from __future__ import annotations

import collections
import errno
import functools
import logging
import os
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from typing import Any

from .. import _kept
from .._native import ffi, lib
from .._ratelog import RateLog
from .._totals import Departed
from .._util import (
    as_buffer,
    backend_id,
    buffer_arrays,
    check_channel,
    check_int,
    check_name,
    from_buffer,
    not_bytes_like,
    segment_id,
    socket_too_long,
    struct_dict,
    timeout_ms,
)
from .._wire import (
    CH_SETUP,
    UNLIMITED,
)
from ..errors import PeerGone, Timeout, check, error
from ..heap import with_fragmentation
from ..lease import Windows
from ..message import Handler, Message
from ..reply import (
    HeldBack,
    ReplyTooLarge,
    Sliced,
    fill_reply,
    msg_array,
    report_failure,
    serve_batch,
)

log = logging.getLogger("hgsmi.host")

#: ``on_awaitable(conn, msg, m, awaitable)``: a handler returned an awaitable.
#: The face runs it (``conn.defer``, later ``conn.finish``) and returns False,
#: or raises (the buffer fails with that exception).
OnAwaitable = Callable[["ConnCore", Message, Any, Any], bool]
#: ``make_peer(conn)``: the face's handle on a new guest (``msg.peer``).
MakePeer = Callable[["ConnCore"], Any]
#: what a post loop yields while there is no room: (-errno, seconds left or None)
RoomSteps = Generator[tuple[int, float | None], None, int]

#: batches one guest may have served per round before the next guest's turn
_BATCHES_PER_ROUND = 4
# the C calls of a serving round, looked up once (cffi's lib is fixed once loaded)
_recv, _complete, _post = lib.hgsmi_conn_recv, lib.hgsmi_conn_complete, lib.hgsmi_conn_post
#: accept outcomes handled per pass: a flood of connections waits while guests are served
_ACCEPTS_PER_PASS = 64
#: lines a burst of guests attaching or leaving logs before thinning to one a second
_LIFECYCLE_BURST = 64
#: what a post waits out: host heap full (acks free it), FIFO full
_NO_ROOM = (-errno.ENOMEM, -errno.EAGAIN)


class ConnCore:
    """One attached guest: its C conn, segment, batch array and what goes back later.

    ``peer`` is the face's handle (a :class:`hgsmi.GuestConn`), given to
    handlers as ``msg.peer``.
    """

    def __init__(self, host: HostCore, c: Any) -> None:
        self.c = c  #: the C conn (freed by :meth:`close`)
        self.id: int = lib.hgsmi_conn_id(c)
        self.base = ffi.cast("char *", lib.hgsmi_conn_base(c))
        self.size = int(lib.hgsmi_conn_size(c))
        self._peer: Any = None
        self._serve_no_more = host.serve_no_more  # close() takes this guest out
        self._handlers = host.handlers  # the host's list, changed in place by register
        self._failed = host.handler_failed
        self._start_async = functools.partial(host.on_awaitable, self)
        self._msgs = ffi.new("struct hgsmi_msg[]", host.batch)
        self._cap = host.batch
        # what a sync host's views are sliced from (hgsmi/lease.py)
        self._windows = Windows(self.base, self.size) if host.windowed else None
        self._held = HeldBack()  # completions waiting for a view to go
        self._held_items = self._held.items  # the same list, tested each round
        # ``dispatch(n)``: serve_batch of msgs[0:n], its setup made once (a
        # sync host's Sliced), so that a round is recv, one call, complete
        self._sliced: Sliced | None = None
        self._dispatch: Callable[[int], int] = self._serve_leased
        if self._windows is not None:
            self._sliced = Sliced(
                self._msgs, self.base, None, self._handlers, self._start_async, self._failed,
                self._held, self._windows)
            self._dispatch = self._sliced.serve
        self._done: list[Any] = []  # finished later (deferred, released), to go back together
        self._live: dict[int, Message] = {}  # deferred handlers running, by offset
        self._closed = False
        self._unacked_st: Any = None  # unacked()'s stats struct, made on first use

    @property
    def peer(self) -> Any:
        """The face's handle on this guest (``msg.peer`` of its messages)."""
        return self._peer

    @peer.setter
    def peer(self, peer: Any) -> None:
        self._peer = peer
        if self._sliced is not None:
            self._sliced.peer = peer

    @property
    def alive(self) -> bool:
        """Attached: not closed, and the C core has not seen it go."""
        return not self._closed and bool(lib.hgsmi_conn_alive(self.c))

    @property
    def cut_off(self) -> bool:
        """Cut off by the host for its errors (rather than gone by itself)."""
        return not self._closed and bool(lib.hgsmi_conn_cut_off(self.c))

    @property
    def holding(self) -> bool:
        """A view holds a completion back (look again later)."""
        return bool(self._held)

    # -- serving ----------------------------------------------------------------
    def serve(self) -> int:
        """Hand back what finished since, then serve up to a few batches; return
        how many buffers were served.

        The cap keeps one busy guest from starving the others: the host's
        wait returns at once while any guest has work left.  A buffer whose
        handler kept a view goes back in a later round, once it is gone.
        """
        if self._held_items or self._done:
            self.flush()
        c, msgs, cap, dispatch = self.c, self._msgs, self._cap, self._dispatch
        served = 0
        # recv, dispatch, complete: the completion (and its IRQ) goes before
        # anything else, as a waiting caller's latency is what it ends.
        while served < _BATCHES_PER_ROUND * cap:
            n: int = _recv(c, msgs, cap)
            if n <= 0:
                return served
            k = dispatch(n)
            if k:
                _complete(c, msgs, k)
            served += n
            if n < cap:  # drained; what came since makes the host's wait return at once
                return served
        return served

    def _serve_leased(self, n: int) -> int:
        """An async host's dispatch of ``msgs[0:n]``: a Lease per message (serve_batch)."""
        return serve_batch(self._msgs, n, self.base, self._peer, self._handlers,
                           self._start_async, self._failed, self._held, None)

    def flush(self) -> None:
        """Complete (one IRQ) what finished since and what a view held back and is now free."""
        done = self._done
        if self._held_items:
            done += self._held.ready()
        if done:
            self._done = []
            if self.alive:
                lib.hgsmi_conn_complete(self.c, msg_array(done), len(done))

    def defer(self, m: Any, msg: Message) -> Any:
        """A handler of ``m`` finishes later: keep ``msg`` (its view stays valid)
        and return the copy of ``m`` to :meth:`finish` with."""
        mc = ffi.new("struct hgsmi_msg *", m)
        self._live[m.offset] = msg
        return mc

    def finish(self, mc: Any, result: Any, exc: BaseException | None) -> bool:
        """A deferred handler ended with ``result`` or ``exc``: write the reply (or
        fail the buffer).  True if it now waits for :meth:`flush`; False if a
        view holds it back (look again later) or the guest was closed meanwhile."""
        msg = self._live.pop(mc.offset, None)
        if msg is None:
            return False
        if self.alive:
            if exc is None:
                try:
                    fill_reply(self.base, mc, result)
                except Exception as e:
                    exc = e
            if exc is not None:
                self._failed(mc, exc)
        if self._held.settle(mc, msg):
            self._done.append(mc)
            return True
        return False

    def forget(self) -> bool:
        """The guest is gone: drop what was to go back to it.  True once no
        view holds its segment (it may be closed)."""
        self._done.clear()
        self._held.ready()
        return not self._held

    # -- posting ------------------------------------------------------------------
    def try_post(self, channel: int, info: int, data: Any) -> int:
        """One post, no waiting: the offset, or ``-errno`` (see ``GuestConn.try_post``)."""
        # (GuestConn.post's first try: the checks as tests, no call, unless they fail)
        if not (type(channel) is int and type(info) is int and 0 < channel < 256
                and 0 <= info <= 0xFFFF):
            check_channel(channel, info)
        if self._closed:
            return -errno.EPIPE
        try:
            src = from_buffer(data)
        except TypeError:
            raise not_bytes_like(data) from None
        rc: int = _post(self.c, channel, info, src, len(src))
        return rc

    def post_at_once(self, channel: int, info: int, data: Any,
                     timeout: float | None) -> int | None:
        """A post's first try, for both faces: the offset if it went at once (room,
        no timeout: one crossing, no generator), else None: run :meth:`post_steps`,
        which tries again and raises or waits as its result says."""
        if timeout is None:
            rc = self.try_post(channel, info, data)
            if rc >= 0:
                return rc
        return None

    def post_steps(self, channel: int, info: int, data: Any, timeout: float | None) -> RoomSteps:
        """The post loop (see :meth:`room_steps`): returns the offset; raises as
        ``GuestConn.post``."""
        check_channel(channel, info)
        src = as_buffer(data)
        return (yield from self.room_steps(
            "post", lambda: lib.hgsmi_conn_post(self.c, channel, info, src, len(src)), timeout))

    def post_many_steps(self, channel: int, info: int, datas: Iterable[Any],
                        timeout: float | None) -> RoomSteps:
        """The post_many loop (see :meth:`room_steps`): returns how many were
        queued; raises as ``GuestConn.post_many``."""
        check_channel(channel, info)
        n, ptrs, lens, _keep = buffer_arrays(datas)
        if not n:
            return 0
        sent = 0

        def attempt() -> int | None:
            nonlocal sent
            rc: int = lib.hgsmi_conn_send(self.c, channel, info, ptrs + sent, lens + sent,
                                          n - sent)
            if rc > 0:
                sent += rc
                return sent if sent == n else None  # None: more, try again now
            if sent and timeout == 0 and rc in _NO_ROOM:
                return sent  # timeout 0: what fitted
            return rc

        return (yield from self.room_steps("post_many", attempt, timeout))

    def room_steps(self, what: str, attempt: Callable[[], int | None],
                   timeout: float | None) -> RoomSteps:
        """The one wait-for-room loop of post and post_many.

        Calls ``attempt()`` (``>= 0``: done, the result; ``None``: progress,
        call again; ``-errno``: failed) until done.  While the host heap or
        the FIFO is full it yields ``(rc, seconds left or None)``; its driver
        (the face) serves a round, so acks free room, before the next try.
        Raises :class:`HeapExhausted` / :class:`RingFull` with timeout 0,
        :class:`Timeout` when it runs out, :class:`PeerGone`, and
        ``error(rc)`` for any other failure.
        """
        timeout_ms(timeout)  # None or >= 0, else ValueError
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if not self.alive:
                raise PeerGone(errno.EPIPE, f"guest {self.id} is gone")
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

    # -- figures and lifetime -------------------------------------------------------
    def unacked(self) -> int:
        """Host posts this guest has not acked yet (0 once closed); O(1)."""
        if self._closed:
            return 0
        st = self._unacked_st
        if st is None:
            st = self._unacked_st = ffi.new("struct hgsmi_conn_stats *")
        lib.hgsmi_conn_stats(self.c, st)
        return int(st.inflight_host)

    def stats(self) -> dict[str, Any]:
        """Counters, errors by kind, ring depth and host-heap figures; :class:`PeerGone`
        once closed."""
        if self._closed:
            raise PeerGone(errno.EPIPE, f"guest {self.id} is closed")
        st = ffi.new("struct hgsmi_conn_stats *")
        lib.hgsmi_conn_stats(self.c, st)
        out = struct_dict(st[0])
        out["host_heap"] = with_fragmentation(out["host_heap"])
        out["held_completions"] = len(self._held)
        return out

    def close(self) -> None:
        """Disconnect the guest and reclaim everything it had (idempotent).

        Views that live on (held back, or of handlers still running) keep the
        segment mapped until they go (:mod:`hgsmi._kept`).
        """
        if not self._closed:
            self._closed = True
            self._serve_no_more(self)
            if self._windows is not None:
                self._windows.retire()
            left = self._held.drop()
            left += [msg.release for msg in self._live.values() if not msg.release()]
            self._live.clear()
            self._done.clear()
            if left:  # a view lives on: unmapped only once it goes
                lib.hgsmi_conn_keep_mapping(self.c)
                _kept.keep(self.base, self.size, left)
            lib.hgsmi_conn_close(self.c)
        if _kept.pending():
            _kept.sweep()


#: the host's keyword options, in the order HostCore unpacks them
OPTIONS = ("runtime_dir", "ring_entries", "guest_heap_percent", "max_guests", "max_inflight",
           "spin_us", "allowed_uids", "batch", "socket_mode", "segment", "max_message",
           "max_doorbells_per_s", "max_pending_per_pid", "max_guests_per_pid", "ivshmem")


class HostCore:
    """The C host, its handler table, its guests and its figures; never waits.

    Made by a face with the host's arguments (see :class:`hgsmi.Host`) and
    two of its own: ``windowed`` (handlers never defer: views are slices
    of a window) and ``on_awaitable`` (see the alias above).  Raises as
    :class:`hgsmi.Host`.
    """

    h: Any = None  # the C host; None once closed (or if __init__ failed)

    def __init__(self, name: str, size: int, doorbell: str, *, windowed: bool,
                 on_awaitable: OnAwaitable, options: Mapping[str, Any]) -> None:
        # ``options``: every name of OPTIONS, defaults applied by the face
        # (hgsmi.Host's signature is the one list of them and their defaults).
        (runtime_dir, ring_entries, guest_heap_percent, max_guests, max_inflight, spin_us,
         allowed_uids, batch, socket_mode, segment, max_message, max_doorbells_per_s,
         max_pending_per_pid, max_guests_per_pid, ivshmem) = (options[k] for k in OPTIONS)
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
        self._keep: list[Any] = [ffi.new("char[]", raw_name)]
        cfg = ffi.new("struct hgsmi_host_config *")
        cfg.name = self._keep[0]
        if runtime_dir is not None:
            self._keep.append(ffi.new("char[]", os.fsencode(runtime_dir)))
            cfg.runtime_dir = self._keep[-1]
        cfg.segment_size = size
        cfg.backend = backend_id(doorbell)
        cfg.segment = seg_kind
        # the options named as the config's fields (a 0 in one: the C core's default)
        for field in ("ring_entries", "guest_heap_percent", "max_guests", "max_inflight",
                      "spin_us", "socket_mode", "max_message", "max_doorbells_per_s",
                      "max_pending_per_pid", "max_guests_per_pid"):
            setattr(cfg, field, options[field])
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
        self.h = out[0]
        self.name = name
        self.doorbell = doorbell
        self.segment = segment
        self.size = size
        self.ivshmem = os.fspath(ivshmem) if ivshmem is not None else None
        self.batch = batch
        self.windowed = windowed
        self.on_awaitable = on_awaitable
        self.handlers: list[Handler | None] = [None] * 256
        self.conns: dict[int, ConnCore] = {}
        #: the guests a round serves (both faces): a snapshot of ``conns``, made
        #: again when one comes or goes (a round must not iterate ``conns``
        #: while a departure changes it, and a copy of it a round cost 0.12 µs
        #: of a call's)
        self.serving: tuple[ConnCore, ...] = ()
        self._conn_out = ffi.new("struct hgsmi_conn **")
        self.refused = 0
        self.refusals: dict[str, int] = {}
        self.handler_errors = 0
        self.departed: collections.deque[dict[str, Any]] = collections.deque(maxlen=64)
        self.left = Departed()
        # What a guest can make the host log, per (guest, kind): floods are
        # counted (handler_errors, the C counters), not logged line by line.
        self._ratelog = RateLog(log)
        self._lifelog = RateLog(log, burst=_LIFECYCLE_BURST)
        #: the two logs' held-back keys: :meth:`flush_logs` has work only
        #: while one is not empty (a face's round tests them without a call)
        self.log_holds = (self._ratelog.holding, self._lifelog.holding)

    # -- configuration --------------------------------------------------------------
    def socket_path(self) -> str:
        """The control socket guests connect to."""
        path: bytes = ffi.string(lib.hgsmi_host_socket_path(self.h))
        return path.decode()

    def register(self, channel: int, handler: Handler) -> None:
        """Serve ``channel`` with ``handler`` (see ``Host.register``)."""
        check_channel(channel)
        if channel == CH_SETUP:
            raise ValueError("channel 1 is the setup channel, served by the host itself")
        if not callable(handler):
            raise TypeError("handler must be callable")
        check(lib.hgsmi_host_register(self.h, channel, ffi.NULL, ffi.NULL),
              f"register channel {channel}")
        self.handlers[channel] = handler

    def register_c(self, channel: int, fn: Any, ctx: Any) -> None:
        """Serve ``channel`` with a C handler (see ``Host.register_c``)."""
        check_channel(channel)
        if channel == CH_SETUP:
            raise ValueError("channel 1 is the setup channel, served by the host itself")
        fn = ffi.cast("hgsmi_handler_fn", fn)
        if fn == ffi.NULL:
            raise ValueError("fn must be a non-NULL hgsmi_handler_fn")
        check(lib.hgsmi_host_register(self.h, channel, fn, ctx),
              f"register channel {channel}")
        self._keep.append((fn, ctx))

    def unregister(self, channel: int) -> None:
        """Stop serving ``channel``."""
        check_channel(channel)
        check(lib.hgsmi_host_unregister(self.h, channel), f"unregister {channel}")
        self.handlers[channel] = None

    # -- serving ----------------------------------------------------------------------
    def accept(self, make_peer: MakePeer) -> None:
        """Take in what knocked: new guests (``make_peer`` each), refusals counted.

        Bounded: under a flood of connections the guests are served between
        passes (the listen fd stays readable, so the next wait comes back).
        """
        for _ in range(_ACCEPTS_PER_PASS):
            rc = lib.hgsmi_host_accept(self.h, self._conn_out)
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
                conn = ConnCore(self, c)
                conn.peer = make_peer(conn)
                self.conns[conn.id] = conn
                self.serving = tuple(self.conns.values())
                self._lifelog.log(None, "guest attached", logging.INFO,
                                  "guest %d attached", conn.id)

    def handler_failed(self, m: Any, e: BaseException) -> None:
        """A handler of ``m`` raised ``e``: fail the buffer, count and log (thinned)."""
        # m.guest: the sender, so one guest's flood thins only its own lines
        if (report_failure(self._ratelog, m, e, f"guest {m.guest}: ")
                and not isinstance(e, ReplyTooLarge)):  # over the guest's room: not raised
            self.handler_errors += 1

    def flush_logs(self) -> None:
        """Log the counts of floods that stopped (each serving round; cheap when none)."""
        self._ratelog.flush()
        self._lifelog.flush()

    def depart(self, conn: ConnCore) -> None:
        """``conn``'s guest went: log it (thinned: a guest can reconnect in a loop)
        and serve it no more.  :meth:`retire` it once nothing of it is in use."""
        how = "cut off" if conn.cut_off else "gone"
        self._lifelog.log(None, f"guest {how}", logging.INFO,
                          "guest %d %s; reclaiming its buffers", conn.id, how)
        self.serve_no_more(conn)

    def serve_no_more(self, conn: ConnCore) -> None:
        """Take ``conn`` out of :attr:`conns` and :attr:`serving` (idempotent)."""
        if self.conns.pop(conn.id, None) is not None:
            self.serving = tuple(self.conns.values())

    def retire(self, conn: ConnCore) -> None:
        """Keep what ``conn`` leaves behind (its last stats, folded into ``left``),
        drop its log records, and close it."""
        st = conn.stats()
        self.departed.append(st)
        self.left.add(st, conn.cut_off)
        self._ratelog.forget(conn.id)
        conn.close()

    def guests_steps(self, n: int, timeout: float | None) -> Iterator[float | None]:
        """The wait-for-guests loop: yields the seconds left (None: no limit)
        while fewer than ``n`` guests are attached; raises :class:`Timeout`."""
        timeout_ms(timeout)  # None or >= 0, else ValueError
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self.conns) < n:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Timeout(errno.ETIMEDOUT, f"{len(self.conns)} of {n} guests attached")
            yield left

    def only_guest(self) -> ConnCore:
        """The one attached guest: :class:`PeerGone` with none, ``ValueError`` with several."""
        if not self.conns:
            raise PeerGone(errno.ENOTCONN, "no guest attached")
        if len(self.conns) > 1:
            raise ValueError("several guests attached: pass the guest "
                             "(host.guests[i].post(), or guest= on AsyncHost.post)")
        return next(iter(self.conns.values()))

    def admission_stats(self) -> dict[str, int]:
        """The C host's admission figures (see ``Host.admission_stats``)."""
        out = ffi.new("struct hgsmi_host_stats *")
        lib.hgsmi_host_stats(self.h, out)
        return struct_dict(out[0])

    # -- lifetime -------------------------------------------------------------------
    def close(self) -> None:
        """Disconnect every guest, remove segments and socket.  Idempotent."""
        if self.h is not None:
            for conn in list(self.conns.values()):
                conn.close()
            lib.hgsmi_host_destroy(self.h)
            self.h = None

    def __del__(self) -> None:
        self.close()
