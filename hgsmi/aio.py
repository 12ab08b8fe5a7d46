"""asyncio for hgsmi: :class:`AsyncGuest` and :class:`AsyncHost`.

Both sides sleep in the event loop, not in the C core:

* **eventfd backend** (the default): the guest's IRQ eventfd
  (``hgsmi_guest_fileno``) and the host's epoll fd (``hgsmi_host_fileno``,
  which holds every guest's doorbell and socket) go into the loop with
  ``loop.add_reader``.  No thread is involved.  Notification suppression
  needs a side to *announce* that it sleeps before the peer will signal it,
  so every round of work is bracketed by the C calls made for this:
  ``hgsmi_*_disarm`` (withdraw the announcement, drain the fd, note what
  happened), then reap/serve everything, then ``hgsmi_*_arm`` (announce, full
  barrier, look again).  If ``arm`` finds work already there it returns 1
  and the next round is scheduled with ``call_soon`` instead of sleeping;
  otherwise the peer's next signal makes the fd readable.  While a side is
  busy its announcement is withdrawn and the peer skips the syscall.
* **semaphore backend**: a named semaphore cannot be polled, so one waiter
  thread per guest (and one per host, for the shared doorbell) blocks in
  ``hgsmi_guest_irq_wait`` / ``hgsmi_host_doorbell_wait`` and wakes the loop
  with ``call_soon_threadsafe``.  Those two calls read only the semaphore and
  the socket, so they may run beside the loop thread; everything else stays
  on the loop.  The API is the same.

Submissions made in one loop iteration are queued and pushed onto the ring
by one ``hgsmi_guest_submit`` (one doorbell) scheduled with ``call_soon``;
more than the ring holds wait in the queue and go out as completions free
room.  Each completion wakes exactly the future of its buffer (a dict from
offset to future).  Cancelling a call is safe at any point: a buffer still
in the queue is freed when the queue reaches it, one on the ring is freed
when its (late) completion arrives.

Handlers may be coroutine functions on both sides: a handler that returns an
awaitable is run as a task, and its result completes the buffer later, from
the loop (completions of one iteration go back together, one IRQ/doorbell).
``msg.data`` stays valid until then.

Everything here must be used from the thread running the loop.
"""
from __future__ import annotations

import asyncio
import collections
import errno
import inspect
import logging
import os
import signal
import socket
import threading
import time
from typing import Any, Callable, Iterable

from ._native import ffi, lib
from ._util import as_buffer, check_channel, check_int, timeout_ms
from .errors import HgsmiError, MessageTooLarge, PeerGone, Timeout, error
from .guest import Guest
from .host import _BATCHES_PER_ROUND, GuestConn, Host
from .lease import Lease
from .reply import fail_status, fill_reply
from .message import Buffer, Message

log = logging.getLogger("hgsmi.aio")

__all__ = ["AsyncGuest", "AsyncHost"]

#: how long a semaphore waiter thread sleeps between looks at its stop flag
_WAITER_SLICE_MS = 200
#: how often a post into a full FIFO looks again, besides each serve round
_POST_RETRY = 0.05
#: while a view holds a completion or a free back, how often to look again
#: (Python has no hook for "the last export of a buffer went away")
_HELD_RETRY = 0.02
_EV_ACCEPT = lib.HGSMI_EV_ACCEPT


class _Waiter(threading.Thread):
    """The semaphore fallback: block in ``wait(slice_ms)``, wake the loop."""

    def __init__(self, wait: Callable[[int], int], loop: asyncio.AbstractEventLoop,
                 wake: Callable[[int], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._wait, self._loop, self._wake = wait, loop, wake
        self.stopping = False

    def run(self) -> None:
        while not self.stopping:
            rc = self._wait(_WAITER_SLICE_MS)  # releases the GIL
            if rc == 0 or self.stopping:
                continue
            try:
                self._loop.call_soon_threadsafe(self._wake, rc)
            except RuntimeError:  # the loop is closed
                return
            if rc < 0:
                return

    def stop(self) -> None:
        self.stopping = True
        if self is not threading.current_thread():
            self.join()


class _Entry:
    """One submission: its future, and the Buffer (None for a copy-mode call)."""

    __slots__ = ("fut", "offset", "buf", "channel")

    def __init__(self, fut: asyncio.Future, offset: int, buf: Buffer | None,
                 channel: int) -> None:
        self.fut, self.offset, self.buf, self.channel = fut, offset, buf, channel


class AsyncGuest(Guest):
    """A :class:`~hgsmi.Guest` driven by the running asyncio loop.

    Create it inside a coroutine (``async with AsyncGuest(name) as g``).
    ``await g.call(...)``, ``await g.submit(buf)``, ``await g.call_buffer(buf)``,
    ``await g.send(...)`` and async (or plain) handlers via ``g.register``.
    The blocking methods of :class:`Guest` (``poll``, ``wait``,
    ``completions``) raise ``TypeError``: the loop does their work.
    """

    def __init__(self, name: str, *, runtime_dir: str | os.PathLike[str] | None = None,
                 connect_timeout: float = 2.0, batch: int = 64,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._prepare(loop or asyncio.get_running_loop())
        super().__init__(name, runtime_dir=runtime_dir, connect_timeout=connect_timeout,
                         batch=batch)
        self._start()

    @classmethod
    def connect(cls, name: str, **kwargs: Any) -> _Connect:
        """Attach without blocking the loop (the handshake runs in a thread).

        Needed when the host is served by the same loop:
        ``g = await AsyncGuest.connect(name)`` or
        ``async with AsyncGuest.connect(name) as g``.
        """
        return _Connect(cls, name, kwargs)

    def _prepare(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._fd = self._sockfd = -1
        self._waiter: _Waiter | None = None
        self._sock: socket.socket | None = None
        self._queue: collections.deque[_Entry] = collections.deque()
        self._entries: dict[int, _Entry] = {}  # offset -> in flight on the ring
        self._room: list[asyncio.Future] = []  # waiting for heap or ring room
        self._tasks: set[asyncio.Task] = set()  # async handlers of host commands
        self._live: dict[int, Message] = {}  # host commands being served, by offset
        self._acks: list[Any] = []  # host commands served, to ack together
        self._cmd_held: list[tuple[Any, Message]] = []  # served, a view still exported
        self._reap_msgs = ffi.new("struct hgsmi_msg[]", 256)
        self._sub_offs = ffi.new("uint32_t[]", 1024)
        self._round_pending = self._flush_pending = self._ack_pending = False
        self._held_timer: asyncio.TimerHandle | None = None
        self._gone: BaseException | None = None

    def _start(self) -> None:
        fd = lib.hgsmi_guest_fileno(self._g)
        if fd >= 0:
            self._fd = fd
            self._loop.add_reader(fd, self._round)
            # EOF on the control socket is how a dead host shows.
            self._sockfd = lib.hgsmi_guest_sockfd(self._g)
            self._sock = socket.socket(fileno=os.dup(self._sockfd))
            self._loop.add_reader(self._sockfd, self._on_sock)
        else:
            g = self._g
            self._waiter = _Waiter(lambda ms: lib.hgsmi_guest_irq_wait(g, ms), self._loop,
                                   self._on_wake, f"hgsmi-irq-{self.name}")
            self._waiter.start()
        self._round()

    # -- calls ----------------------------------------------------------------
    async def call(self, channel: int, info: int, data: Any, reply_size: int = 0,
                   timeout: float | None = None) -> bytes:
        """Copy mode: send ``data``, return the reply (up to ``max(len(data), reply_size)``).

        Waits for heap room if the heap is full of buffers in flight.
        Raises as :meth:`Guest.call`; a timeout raises :class:`Timeout` and
        the buffer is freed when its late completion arrives.
        """
        check_channel(channel, info)
        src = as_buffer(data)
        check_int("reply_size", reply_size, 0, 1 << 63)
        if max(len(src), reply_size) > 0xFFFFFFFF:
            raise MessageTooLarge(errno.EMSGSIZE, f"call on channel {channel}: "
                                  f"{max(len(src), reply_size)} bytes never fit")
        m = self._one
        while True:
            self._check_open()
            rc = lib.hgsmi_guest_alloc(self._g, len(src), reply_size, channel, info, m)
            if rc == 0:
                break
            if rc != -errno.ENOMEM:
                raise error(rc, f"call on channel {channel}")
            await self._wait_room(rc, f"call on channel {channel}")
        ffi.memmove(self._base + m.data, src, len(src))
        fut = self._loop.create_future()
        self._enqueue(_Entry(fut, m.offset, None, channel))
        if timeout is None:
            return await fut
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise Timeout(errno.ETIMEDOUT, f"call on channel {channel}") from None

    async def alloc_wait(self, channel: int, info: int, size: int,
                         reply_size: int = 0) -> Buffer:
        """:meth:`alloc`, waiting for heap room while buffers are in flight."""
        while True:
            self._check_open()
            try:
                return self.alloc(channel, info, size, reply_size)
            except MemoryError as e:  # HeapExhausted
                await self._wait_room(-errno.ENOMEM, "alloc", e)

    def submit(self, buf: Buffer) -> asyncio.Future:
        """Hand ``buf`` to the host; returns a future of the completed buffer.

        The future's result is ``buf`` with ``status`` and ``reply`` (free it,
        or leave its ``with`` block, when done).  Cancelling the future gives
        the buffer up: the library frees it when it is back.
        """
        self._check_open()
        self._hand_over(buf)
        fut = self._loop.create_future()
        self._enqueue(_Entry(fut, buf.offset, buf, buf.channel))
        return fut

    def submit_many(self, bufs: Iterable[Buffer]) -> list[asyncio.Future]:  # type: ignore[override]
        """:meth:`submit` for each buffer (they share one doorbell)."""
        return [self.submit(b) for b in bufs]

    async def call_buffer(self, buf: Buffer,  # type: ignore[override]
                          timeout: float | None = None) -> memoryview:
        """Submit ``buf``, await its completion, return the reply in place.

        Raises :class:`RemoteError` and friends for a failed buffer.
        """
        fut = self.submit(buf)
        if timeout is None:
            await fut
        else:
            try:
                await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                raise Timeout(errno.ETIMEDOUT, f"call on channel {buf.channel}") from None
        if buf.status < 0:
            raise error(buf.status, f"call on channel {buf.channel}")
        return buf.reply

    async def send(self, channel: int, info: int, data: Any) -> None:  # type: ignore[override]
        """Fire and forget (copy mode), waiting for room if the heap or ring is full."""
        await self.send_many(channel, info, [data])

    async def send_many(self, channel: int, info: int,  # type: ignore[override]
                        datas: Iterable[Any], timeout: float | None = None) -> int:
        """:meth:`send` for many messages with one doorbell per batch."""
        check_channel(channel, info)
        srcs = [as_buffer(d) for d in datas]
        n = len(srcs)
        if not n:
            return 0
        ptrs = ffi.new("void *[]", srcs)
        lens = ffi.new("uint32_t[]", [len(s) for s in srcs])
        timeout_ms(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        sent = 0
        while sent < n:
            self._check_open()
            rc = lib.hgsmi_guest_send(self._g, channel, info, ptrs + sent, lens + sent, n - sent)
            if rc > 0:
                sent += rc
                continue
            if rc not in (-errno.ENOMEM, -errno.EAGAIN):
                raise error(rc, "send")
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Timeout(errno.ETIMEDOUT, f"send: {sent} of {n} sent, no room")
            await self._wait_room(rc, "send", timeout=left)
        return sent

    async def query_conf(self, index: int) -> int:  # type: ignore[override]
        """Ask the setup channel (QUERY_CONF) for a value."""
        q = ffi.new("struct hgsmi_conf32 *", {"index": index})
        size = ffi.sizeof("struct hgsmi_conf32")
        reply = await self.call(1, 1, ffi.buffer(q, size), reply_size=size, timeout=5)
        if len(reply) != size:
            raise error(-errno.EPROTO, "query_conf")
        ffi.memmove(q, reply, size)
        return int(q.value)

    def completions(self, timeout: float | None = 0) -> list[Buffer]:
        raise TypeError("AsyncGuest: await the futures of submit() instead")

    def poll(self, timeout: float | None = None) -> int:
        raise TypeError("AsyncGuest: host commands are served by the event loop")

    def wait(self, timeout: float | None = None) -> bool:
        raise TypeError("AsyncGuest: the event loop waits for the IRQ")

    @property
    def pending(self) -> int:
        """Submissions queued or on the ring, not yet completed."""
        return len(self._queue) + len(self._entries)

    # -- lifetime ---------------------------------------------------------------
    async def aclose(self) -> None:
        """Cancel the async handlers (and wait for them), fail what is pending, detach."""
        tasks = [t for t in self._tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._flush_acks()
        self.close()

    def close(self) -> None:
        """Detach now (what is pending fails with :class:`PeerGone`).  Idempotent."""
        if getattr(self, "_g", None) is None:
            return
        if self._waiter is not None:
            self._waiter.stop()
            self._waiter = None
        if self._fd >= 0:
            try:
                self._loop.remove_reader(self._fd)
                self._loop.remove_reader(self._sockfd)
            except Exception:  # the loop may be closed already
                pass
            self._fd = -1
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None
        # The segment is unmapped below: no message view may survive it.
        for msg in self._live.values():
            msg._release()
        for _, msg in self._cmd_held:
            msg._release()
        self._live.clear()
        self._cmd_held.clear()
        if self._gone is None:
            self._gone = PeerGone(errno.EPIPE, "guest is closed")
        try:
            for t in self._tasks:
                t.cancel()
            self._fail_pending(self._gone)
        except RuntimeError:  # the loop is closed: nobody awaits these any more
            pass
        super().close()

    async def __aenter__(self) -> AsyncGuest:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the engine -----------------------------------------------------------------
    def _check_open(self) -> None:
        if self._gone is not None:
            raise self._gone
        if self._g is None:
            raise PeerGone(errno.EPIPE, "guest is closed")

    def _enqueue(self, e: _Entry) -> None:
        self._queue.append(e)
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Push the queue onto the ring: one hgsmi_guest_submit, one doorbell."""
        self._flush_pending = False
        q, g = self._queue, self._g
        if g is None or self._gone is not None:
            return
        offs = self._sub_offs
        while q:
            # Chunks of len(offs): a full ring costs at most one chunk of
            # wasted work, however long the queue.
            batch = []
            while q and len(batch) < len(offs):
                e = q.popleft()
                if e.fut.done():  # cancelled before it went out: reclaim now
                    self._reclaim(e)
                    continue
                offs[len(batch)] = e.offset
                batch.append(e)
            if not batch:
                continue
            rc = lib.hgsmi_guest_submit(g, offs, len(batch))
            if rc < 0:
                exc = error(rc, "submit")
                for e in batch:
                    self._reject(e, exc)
                if rc == -errno.EPIPE:
                    self._host_gone(exc)
                return
            entries = self._entries
            for e in batch[:rc]:
                entries[e.offset] = e
            if rc < len(batch):  # the ring is full: completions make room
                q.extendleft(reversed(batch[rc:]))
                return

    def _on_wake(self, rc: int) -> None:
        """The semaphore waiter thread saw the IRQ (or the host hang up)."""
        if rc < 0:
            self._host_gone(error(rc, "host"))
        else:
            self._round()

    def _on_sock(self) -> None:
        try:
            data = self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:  # nothing is expected after the handshake: stop watching
            self._loop.remove_reader(self._sockfd)
            return
        self._host_gone(PeerGone(errno.EPIPE, "the host is gone"))

    def _round(self) -> None:
        """Disarm, reap completions, serve host commands, flush, arm."""
        self._round_pending = False
        g = self._g
        if g is None or self._gone is not None:
            return
        rc = lib.hgsmi_guest_disarm(g)
        if rc >= 0:
            rc = self._reap()
        if rc >= 0:
            rc = self._recv()
        if rc < 0:
            self._host_gone(error(rc, "host"))
            return
        if self._cmd_held:
            self._retry_cmd_held()
        if self._held:
            self._retry_held()
        if self._acks:
            self._flush_acks()
        if self._queue:
            self._flush()
        if self._room:
            room, self._room = self._room, []
            for f in room:
                if not f.done():
                    f.set_result(None)
        rc = lib.hgsmi_guest_arm(g)
        if rc < 0:
            self._host_gone(error(rc, "host"))
        elif rc > 0:
            self._schedule_round()
        elif self._cmd_held or self._held:
            self._watch_held()

    def _watch_held(self) -> None:
        """Look again soon: a view holds an ack or a free back."""
        if self._held_timer is None and self._g is not None:
            self._held_timer = self._loop.call_later(_HELD_RETRY, self._held_retry)

    def _held_retry(self) -> None:
        self._held_timer = None
        self._round()

    def _free_buffer(self, buf: Buffer) -> None:
        super()._free_buffer(buf)
        if buf.state == "held":
            self._watch_held()

    def _schedule_round(self) -> None:
        if not self._round_pending:
            self._round_pending = True
            self._loop.call_soon(self._round)

    def _reap(self) -> int:
        msgs, cap, g = self._reap_msgs, len(self._reap_msgs), self._g
        entries, base = self._entries, self._base
        while True:
            n = lib.hgsmi_guest_reap(g, msgs, cap)
            if n < 0:
                return n
            for i in range(n):
                m = msgs[i]
                e = entries.pop(m.offset, None)
                if e is None:
                    continue
                fut = e.fut
                if e.buf is None:  # copy mode: the reply is copied out, the buffer freed
                    if not fut.done():
                        if m.status < 0:
                            fut.set_exception(error(m.status, f"call on channel {e.channel}"))
                        else:
                            fut.set_result(ffi.buffer(base + m.data, m.size)[:])
                    lib.hgsmi_guest_free(g, e.offset)
                else:
                    self._complete(e.buf, m)
                    if fut.done():  # cancelled: nobody wants it, reclaim
                        e.buf.free()
                    else:
                        fut.set_result(e.buf)
            if n < cap:
                return 0

    def _reclaim(self, e: _Entry) -> None:
        """A cancelled submission that never reached the ring: free its buffer."""
        if e.buf is None:
            lib.hgsmi_guest_free(self._g, e.offset)
        else:
            self._take_back(e.buf)
            e.buf.free()

    def _reject(self, e: _Entry, exc: BaseException) -> None:
        """A submission the ring refused: the buffer is the caller's again (or freed)."""
        if e.buf is None:
            lib.hgsmi_guest_free(self._g, e.offset)
        else:
            self._take_back(e.buf)
        if not e.fut.done():
            e.fut.set_exception(exc)
        elif e.buf is not None:
            e.buf.free()

    async def _wait_room(self, rc: int, what: str, exc: BaseException | None = None,
                         timeout: float | None = None) -> None:
        """Wait for the next round: completions give heap and ring room back."""
        if not (self._entries or self._queue or self._acks):
            st = ffi.new("struct hgsmi_guest_stats *")
            lib.hgsmi_guest_stats(self._g, st)
            if st.inflight == 0:  # nothing in flight will ever give room back
                raise exc if exc is not None else error(rc, what)
        f = self._loop.create_future()
        self._room.append(f)
        try:
            # The timeout is only a safety net: rounds wake the waiters.
            await asyncio.wait_for(f, 1.0 if timeout is None else min(timeout, 1.0))
        except asyncio.TimeoutError:
            pass
        self._check_open()

    def _host_gone(self, exc: BaseException) -> None:
        if self._gone is None:
            self._gone = exc
            if self._fd >= 0:
                self._loop.remove_reader(self._fd)
                self._loop.remove_reader(self._sockfd)
        self._fail_pending(exc)

    def _fail_pending(self, exc: BaseException) -> None:
        q, self._queue = self._queue, collections.deque()
        for e in q:
            self._reject(e, exc)
        for e in self._entries.values():  # the host has them: detach reclaims
            if not e.fut.done():
                e.fut.set_exception(exc)
        self._entries.clear()
        room, self._room = self._room, []
        for f in room:
            if not f.done():
                f.set_exception(exc)

    # -- host commands ------------------------------------------------------------
    def _recv(self) -> int:
        msgs, g, base = self._msgs, self._g, self._base
        handlers = self._handlers
        while True:
            n = lib.hgsmi_guest_recv(g, msgs, len(msgs))
            if n <= 0:
                return n
            for i in range(n):
                m = msgs[i]
                msg = Message(m.channel, m.info, m.capacity, Lease(base + m.data, m.size), self)
                handler = handlers[m.channel]
                try:
                    reply = handler(msg) if handler else None
                    if inspect.isawaitable(reply):
                        mc = ffi.new("struct hgsmi_msg *", m)
                        self._live[m.offset] = msg
                        task = asyncio.ensure_future(reply, loop=self._loop)
                        self._tasks.add(task)
                        task.add_done_callback(lambda t, mc=mc, msg=msg: self._cmd_done(t, mc, msg))
                        continue
                    fill_reply(base, m, reply)
                except Exception as e:
                    fail_status(m, e)
                    log.exception("channel %d handler raised", m.channel)
                self._served(ffi.new("struct hgsmi_msg *", m), msg)
            if n < len(msgs):
                return 0

    def _cmd_done(self, task: asyncio.Task, mc: Any, msg: Message) -> None:
        self._tasks.discard(task)
        if self._live.pop(mc.offset, None) is None:  # closed meanwhile
            return
        try:
            fill_reply(self._base, mc, task.result())
        except BaseException as e:  # noqa: B036 - CancelledError too
            fail_status(mc, e)
            if not isinstance(e, asyncio.CancelledError):
                log.error("channel %d handler raised", mc.channel, exc_info=e)
        self._served(mc, msg)
        if not self._ack_pending:
            self._ack_pending = True
            self._loop.call_soon(self._flush_acks)

    def _served(self, mc: Any, msg: Message) -> None:
        if msg._release():
            self._acks.append(mc)
        else:  # a view outlived the handler: the host may not reuse it yet
            self._cmd_held.append((mc, msg))
            self._watch_held()

    def _retry_cmd_held(self) -> None:
        still = []
        for mc, msg in self._cmd_held:
            if msg._release():
                self._acks.append(mc)
            else:
                still.append((mc, msg))
        self._cmd_held = still

    def _flush_acks(self) -> None:
        self._ack_pending = False
        acks, self._acks = self._acks, []
        if not acks or self._g is None or self._gone is not None:
            return
        arr = ffi.new("struct hgsmi_msg[]", len(acks))
        for i, mc in enumerate(acks):
            arr[i] = mc[0]
        rc = lib.hgsmi_guest_ack(self._g, arr, len(acks))
        if rc < 0:
            self._host_gone(error(rc, "ack"))


class _Connect:
    """``await AsyncGuest.connect(...)`` or ``async with AsyncGuest.connect(...)``."""

    def __init__(self, cls: type, name: str, kwargs: dict[str, Any]) -> None:
        self._cls, self._name, self._kwargs = cls, name, kwargs
        self._guest: AsyncGuest | None = None

    async def _attach(self) -> AsyncGuest:
        loop = asyncio.get_running_loop()
        g = self._cls.__new__(self._cls)
        g._prepare(loop)
        kw = {k: v for k, v in self._kwargs.items() if k != "loop"}
        await loop.run_in_executor(None, lambda: Guest.__init__(g, self._name, **kw))
        g._start()
        return g

    def __await__(self) -> Any:
        return self._attach().__await__()

    async def __aenter__(self) -> AsyncGuest:
        self._guest = await self._attach()
        return self._guest

    async def __aexit__(self, *exc: object) -> None:
        await self._guest.aclose()


class _ConnState:
    __slots__ = ("tasks", "live", "done", "held")

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task] = set()
        self.live: dict[int, Message] = {}  # async handlers running, by offset
        self.done: list[Any] = []  # served, to complete together
        self.held: list[tuple[Any, Message]] = []  # served, a view still exported


class AsyncHost(Host):
    """A :class:`~hgsmi.Host` served by the running asyncio loop.

    ``async with AsyncHost(name) as host:`` starts serving in the background
    (or ``await host.serve()`` until :meth:`stop`).  Handlers may be plain
    functions or coroutine functions.  ``await host.post(...)`` waits for
    room in a full FIFO; ``await host.wait_for_guests(n)``.  ``poll`` raises
    ``TypeError``: the loop serves.
    """

    def __init__(self, name: str, size: int = 16 << 20, doorbell: str = "eventfd",
                 **kwargs: Any) -> None:
        super().__init__(name, size, doorbell, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: _Waiter | None = None
        self._state: dict[int, _ConnState] = {}
        self._round_pending = self._flush_pending = False
        self._stopped: asyncio.Future | None = None
        self._room: list[asyncio.Future] = []
        self._done_conns: list[tuple[GuestConn, _ConnState]] = []
        self._held_timer: asyncio.TimerHandle | None = None

    # -- serving ----------------------------------------------------------------
    def start(self) -> None:
        """Serve from the running loop in the background (idempotent)."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        self._loop.add_reader(self.fileno(), self._round)
        if self.doorbell == "semaphore":
            h = self._h
            self._waiter = _Waiter(lambda ms: lib.hgsmi_host_doorbell_wait(h, ms), self._loop,
                                   self._on_wake, f"hgsmi-doorbell-{self.name}")
            self._waiter.start()
        self._round()

    async def serve(self, signals: bool = True) -> None:  # type: ignore[override]
        """Serve until :meth:`stop` (or SIGTERM/SIGINT, in the main thread)."""
        self.start()
        loop = self._loop
        if self._stopped.done():  # as Host.serve: an earlier stop() does not count
            self._stopped = loop.create_future()
        handled = []
        if signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, self.stop)
                    handled.append(sig)
                except (NotImplementedError, RuntimeError):
                    pass
        try:
            await asyncio.shield(self._stopped)
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)

    def stop(self) -> None:
        """Make :meth:`serve` return (from a handler, another thread or a signal)."""
        super().stop()
        loop, fut = self._loop, self._stopped
        if loop is None or fut is None:
            return
        def done() -> None:
            if not fut.done():
                fut.set_result(None)
        try:
            if loop.is_running() and _in_loop_thread(loop):
                done()
            else:
                loop.call_soon_threadsafe(done)
        except RuntimeError:
            pass

    def poll(self, timeout: float | None = None) -> int:
        raise TypeError("AsyncHost is served by its event loop: use start() or "
                        "await serve(), and await host.post(...)")

    async def wait_for_guests(self, n: int = 1,  # type: ignore[override]
                              timeout: float | None = 10.0) -> list[GuestConn]:
        """Wait until ``n`` guests are attached; :class:`Timeout` after ``timeout``."""
        self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self._conns) < n:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Timeout(errno.ETIMEDOUT, f"{len(self._conns)} of {n} guests attached")
            await self._next_round(left)
        return self.guests

    async def post(self, channel: int, info: int, data: Any,  # type: ignore[override]
                   timeout: float | None = None, guest: GuestConn | None = None) -> int:
        """Send ``data`` to ``guest`` (default: the only one) through its FIFO.

        Waits for the guest's acks while its FIFO or the host heap is full
        (up to ``timeout``).  Returns the buffer's offset.
        """
        if guest is None:
            conns = self.guests
            if not conns:
                raise PeerGone(errno.ENOTCONN, "no guest attached")
            if len(conns) > 1:
                raise ValueError("several guests attached: pass guest=")
            guest = conns[0]
        timeout_ms(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return guest.post(channel, info, data, timeout=0)
            except (MemoryError, BlockingIOError) as e:  # HeapExhausted, RingFull
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise Timeout(errno.ETIMEDOUT, "post: no room in the host heap "
                                  "or FIFO") from e
                await self._next_round(_POST_RETRY if left is None else min(left, _POST_RETRY))

    async def aclose(self) -> None:
        """Cancel the running handlers (and wait for them), then close."""
        tasks = [t for st in self._state.values() for t in st.tasks if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._flush_done()
        self.close()

    def close(self) -> None:
        """Disconnect every guest, remove segments and socket.  Idempotent."""
        if getattr(self, "_h", None) is None:
            return
        if getattr(self, "_waiter", None) is not None:
            self._waiter.stop()
            self._waiter = None
        if getattr(self, "_held_timer", None) is not None:
            self._held_timer.cancel()
            self._held_timer = None
        loop = getattr(self, "_loop", None)
        if loop is not None:
            try:
                loop.remove_reader(self.fileno())
            except Exception:  # the loop may be closed already
                pass
        # Segments are unmapped below: no message view may survive them.
        for st in list(getattr(self, "_state", {}).values()) + [
                st for _, st in getattr(self, "_done_conns", [])]:
            for t in st.tasks:
                try:
                    t.cancel()
                except RuntimeError:  # the loop is closed
                    pass
            for msg in st.live.values():
                msg._release()
            for _, msg in st.held:
                msg._release()
            st.live.clear()
            st.held.clear()
        for conn, _ in getattr(self, "_done_conns", []):
            conn._closed = True  # hgsmi_host_destroy frees it with the rest
        self._done_conns = []
        self.stop()
        super().close()

    async def __aenter__(self) -> AsyncHost:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the engine ---------------------------------------------------------------
    def _on_wake(self, rc: int) -> None:
        if rc < 0:
            log.error("doorbell wait failed: %s", error(rc).strerror)
        self._round()

    def _schedule_round(self) -> None:
        if not self._round_pending:
            self._round_pending = True
            self._loop.call_soon(self._round)

    async def _next_round(self, timeout: float | None) -> None:
        f = self._loop.create_future()
        self._room.append(f)
        try:
            await asyncio.wait_for(f, timeout)
        except asyncio.TimeoutError:
            pass

    def _round(self) -> None:
        """Disarm, accept, serve every guest a few batches, reap the departed, arm."""
        self._round_pending = False
        h = self._h
        if h is None:
            return
        mask = lib.hgsmi_host_disarm(h)
        if mask < 0:
            log.error("disarm: %s", error(mask).strerror)
            mask = 0
        if mask & _EV_ACCEPT:
            self._accept_all()
        for conn in list(self._conns.values()):
            st = self._state.get(conn.id)
            if st is None:
                st = self._state[conn.id] = _ConnState()
                st.held = conn._held  # so conn.stats() counts them (held_completions)
            if lib.hgsmi_conn_alive(conn._c):
                self._serve(conn, st)
            if not lib.hgsmi_conn_alive(conn._c):
                self._depart(conn, st)
        if self._done_conns:
            self._reap_departed()
        if self._room:
            room, self._room = self._room, []
            for f in room:
                if not f.done():
                    f.set_result(None)
        if lib.hgsmi_host_arm(h) > 0:
            self._schedule_round()
        elif self._done_conns or any(st.held for st in self._state.values()):
            self._watch_held()

    def _watch_held(self) -> None:
        """Look again soon: a view holds a completion (or an unmap) back."""
        if self._held_timer is None and self._h is not None:
            self._held_timer = self._loop.call_later(_HELD_RETRY, self._held_retry)

    def _held_retry(self) -> None:
        self._held_timer = None
        self._round()

    def _serve(self, conn: GuestConn, st: _ConnState) -> None:
        if st.held:
            self._retry_held(conn, st)
        if st.done:
            self._complete(conn, st)
        c, msgs, base = conn._c, conn._msgs, conn._base
        handlers = self._handlers
        for _ in range(_BATCHES_PER_ROUND):
            n = lib.hgsmi_conn_recv(c, msgs, len(msgs))
            if n <= 0:
                return
            k = 0  # completed now: compacted to the front of msgs
            for i in range(n):
                m = msgs[i]
                msg = Message(m.channel, m.info, m.capacity, Lease(base + m.data, m.size), conn)
                try:
                    reply = handlers[m.channel](msg)
                    if inspect.isawaitable(reply):
                        mc = ffi.new("struct hgsmi_msg *", m)
                        st.live[m.offset] = msg
                        task = asyncio.ensure_future(reply, loop=self._loop)
                        st.tasks.add(task)
                        task.add_done_callback(
                            lambda t, conn=conn, st=st, mc=mc, msg=msg:
                            self._handler_done(t, conn, st, mc, msg))
                        continue
                    fill_reply(base, m, reply)
                except Exception as e:
                    self._handler_failed(m, e)
                if msg._release():
                    if k != i:
                        msgs[k] = m
                    k += 1
                else:  # a view outlived the handler: complete only when it goes
                    st.held.append((ffi.new("struct hgsmi_msg *", m), msg))
                    self._watch_held()
            if k:
                lib.hgsmi_conn_complete(c, msgs, k)
            if n < len(msgs):
                return

    def _handler_failed(self, m: Any, e: BaseException) -> None:
        fail_status(m, e)
        if isinstance(e, asyncio.CancelledError):
            return
        self.handler_errors += 1
        if isinstance(e, HgsmiError):
            log.warning("channel %d handler failed: %s", m.channel, e)
        else:
            log.error("channel %d handler raised", m.channel, exc_info=e)

    def _handler_done(self, task: asyncio.Task, conn: GuestConn, st: _ConnState,
                      mc: Any, msg: Message) -> None:
        st.tasks.discard(task)
        if st.live.pop(mc.offset, None) is None:  # closed meanwhile
            return
        if self._h is not None and lib.hgsmi_conn_alive(conn._c):
            try:
                fill_reply(conn._base, mc, task.result())
            except BaseException as e:  # noqa: B036 - CancelledError too
                self._handler_failed(mc, e)
        if msg._release():
            st.done.append(mc)
            if not self._flush_pending:
                self._flush_pending = True
                self._loop.call_soon(self._flush_done)
        else:
            st.held.append((mc, msg))
            self._watch_held()
        if not st.tasks and self._done_conns:
            self._schedule_round()

    def _retry_held(self, conn: GuestConn, st: _ConnState) -> None:
        still = []
        for mc, msg in st.held:
            if msg._release():
                st.done.append(mc)
            else:
                still.append((mc, msg))
        st.held[:] = still

    def _complete(self, conn: GuestConn, st: _ConnState) -> None:
        done, st.done = st.done, []
        if not done or not lib.hgsmi_conn_alive(conn._c):
            return
        arr = ffi.new("struct hgsmi_msg[]", len(done))
        for i, mc in enumerate(done):
            arr[i] = mc[0]
        lib.hgsmi_conn_complete(conn._c, arr, len(done))  # one IRQ for the batch

    def _flush_done(self) -> None:
        self._flush_pending = False
        if self._h is None:
            return
        for conn in list(self._conns.values()):
            st = self._state.get(conn.id)
            if st is not None and st.done:
                self._complete(conn, st)

    def _depart(self, conn: GuestConn, st: _ConnState) -> None:
        """The guest is gone: stop its handlers; unmap once no view is left."""
        log.info("guest %d gone; reclaiming its buffers", conn.id)
        self._conns.pop(conn.id, None)
        self._state.pop(conn.id, None)
        for t in st.tasks:
            t.cancel()
        self._done_conns.append((conn, st))

    def _reap_departed(self) -> None:
        still = []
        for conn, st in self._done_conns:
            st.done.clear()
            st.held[:] = [(mc, msg) for mc, msg in st.held if not msg._release()]
            if st.tasks or st.held:  # the segment stays mapped under them
                still.append((conn, st))
                continue
            self.departed.append(conn.stats())
            conn.close()
        self._done_conns = still


def _in_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
