"""asyncio guest: :class:`AsyncGuest` (imported from :mod:`hgsmi.aio`, which describes the
scheme)."""
from __future__ import annotations

import asyncio
import collections
import errno
import os
import select
import socket
from collections.abc import Generator, Iterable, Mapping
from typing import Any

from .._call_error import call_error
from .._native import ffi, lib
from .._util import as_buffer, check_channel, check_int
from .._wire import CC_QUERY_CONF, CH_SETUP
from ..errors import MessageTooLarge, PeerGone, ProtocolError, Timeout, error
from ..guest import Guest, Handler
from ..loan import Loan
from ..message import Buffer, Message
from ..reply import fill_reply, msg_array, serve_batch
from .loop import LoopDriven, Waiter

#: how long stray bytes on the control socket wait for the EOF behind them
_STRAY_EOF = 0.01


class _Entry:
    """One submission: its future, and the Buffer (None for a copy-mode call)."""

    __slots__ = ("fut", "offset", "buf", "channel")

    def __init__(self, fut: asyncio.Future[Any], offset: int, buf: Buffer | None,
                 channel: int) -> None:
        self.fut, self.offset, self.buf, self.channel = fut, offset, buf, channel


class AsyncGuest(LoopDriven, Guest):
    """A :class:`~hgsmi.Guest` driven by the running asyncio loop.

    Create it inside a coroutine (``async with AsyncGuest(name) as g``).
    ``await g.call(...)``, ``await g.submit(buf)``, ``await g.call_buffer(buf)``,
    ``await g.send(...)`` and async (or plain) handlers via ``g.register``.
    The blocking methods of :class:`Guest` (``poll``, ``wait``,
    ``completions``) raise ``TypeError``: the loop does their work.
    Host commands are served from the moment it attaches, and one for a
    channel with no handler fails: pass ``handlers={channel: fn}`` to have
    them registered first.  ``wait`` (seconds) waits for a host that is not
    there yet, as :class:`~hgsmi.Guest`'s does; it blocks the loop meanwhile,
    so within a loop use ``await AsyncGuest.connect(name, wait=...)``.
    """

    #: async handlers finish later: a Lease per view, not a Window's slice
    _windowed = False
    #: the loop must not sleep: alloc, submit, loan and publish raise when
    #: full (await alloc_wait, loan_wait, publish_wait instead)
    _may_block = False

    def __init__(self, name: str, *, runtime_dir: str | os.PathLike[str] | None = None,
                 connect_timeout: float = 2.0, batch: int = 64,
                 handlers: Mapping[int, Handler] | None = None,
                 loop: asyncio.AbstractEventLoop | None = None, wait: float = 0.0) -> None:
        self._prepare(loop or asyncio.get_running_loop())
        super().__init__(name, runtime_dir=runtime_dir, connect_timeout=connect_timeout,
                         batch=batch, handlers=handlers, wait=wait)
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
        self._init_rounds(loop)
        self._fd = self._sockfd = -1
        self._waiter: Waiter | None = None
        self._sock: socket.socket | None = None
        self._queue: collections.deque[_Entry] = collections.deque()
        self._entries: dict[int, _Entry] = {}  # offset -> in flight on the ring
        self._tasks: set[asyncio.Task[Any]] = set()  # async handlers of host commands
        self._live: dict[int, Message] = {}  # host commands being served, by offset
        self._acks: list[Any] = []  # host commands served later (async, held), to ack together
        self._reap_msgs = ffi.new("struct hgsmi_msg[]", 256)
        self._sub_offs = ffi.new("uint32_t[]", 1024)
        self._flush_pending = self._ack_pending = False
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
            self._waiter = Waiter(lambda ms: lib.hgsmi_guest_irq_wait(g, ms), self._loop,
                                  self._on_wake, f"hgsmi-irq-{self.name}")
            self._waiter.start()
        self._round()

    # -- calls ----------------------------------------------------------------
    # The asyncio face overrides the blocking one with coroutines (hence the
    # ignored [override] errors here and below); issue #12's core/face split
    # ends the inheritance.
    async def call(self, channel: int, info: int,  # type: ignore[override]
                   data: Any, reply_size: int = 0, timeout: float | None = None) -> bytes:
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
        fut: asyncio.Future[bytes] = self._loop.create_future()
        self._enqueue(_Entry(fut, m.offset, None, channel))
        if timeout is None:
            return await fut
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
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

    async def loan_wait(self, channel: int, info: int, size: int, n: int = 1) -> Loan:
        """:meth:`~hgsmi.Guest.loan`, awaiting heap room while buffers are in flight.

        (``loan`` itself never waits here: it raises :class:`HeapExhausted`.)
        """
        while True:
            self._check_open()
            try:
                return self.loan(channel, info, size, n, timeout=0)
            except MemoryError as e:  # HeapExhausted
                await self._wait_room(-errno.ENOMEM, "loan", e)

    async def publish_wait(self, loan: Loan) -> int:
        """``loan.publish()``, awaiting ring room; returns how many went.

        (``loan.publish()`` itself never waits here: it raises :class:`RingFull`.)
        """
        first = loan.published
        while True:
            self._check_open()
            try:
                loan.publish(timeout=0)
                return loan.published - first
            except BlockingIOError as e:  # RingFull: what fitted went
                await self._wait_room(-errno.EAGAIN, "publish", e)

    def submit(self, buf: Buffer) -> asyncio.Future[Buffer]:  # type: ignore[override]
        """Hand ``buf`` to the host; returns a future of the completed buffer.

        The future's result is ``buf`` with ``status`` and ``reply`` (free it,
        or leave its ``with`` block, when done).  Cancelling the future gives
        the buffer up: the library frees it when it is back.
        """
        self._check_open()
        self._hand_over(buf)
        fut: asyncio.Future[Buffer] = self._loop.create_future()
        self._enqueue(_Entry(fut, buf.offset, buf, buf.channel))
        return fut

    def submit_many(  # type: ignore[override]
            self, bufs: Iterable[Buffer]) -> list[asyncio.Future[Buffer]]:
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
            except TimeoutError:
                raise Timeout(errno.ETIMEDOUT, f"call on channel {buf.channel}") from None
        if buf.status < 0:
            raise call_error(buf.status, buf.channel, b"")
        return buf.reply

    async def send(self, channel: int, info: int, data: Any) -> None:  # type: ignore[override]
        """Fire and forget (copy mode), waiting for room if the heap or ring is full."""
        await self.send_many(channel, info, [data])

    async def send_many(self, channel: int, info: int,  # type: ignore[override]
                        datas: Iterable[Any], timeout: float | None = None) -> int:
        """:meth:`send` for many messages with one doorbell per batch.

        Waits for room (completions) while the heap or ring is full, up to
        ``timeout``.  Returns how many were sent.  Raises :class:`Timeout`,
        :class:`PeerGone`, :class:`MessageTooLarge`.
        """
        steps = self._send_steps(channel, info, datas, timeout)
        try:
            while True:
                rc, left = next(steps)
                await self._wait_room(rc, "send", timeout=left)
        except StopIteration as done:
            sent: int = done.value  # _send_steps returns the count
            return sent

    async def query_conf(self, index: int) -> int:  # type: ignore[override]
        """Ask the setup channel (QUERY_CONF) for a value."""
        q = ffi.new("struct hgsmi_conf32 *", {"index": index})
        size = ffi.sizeof("struct hgsmi_conf32")
        reply = await self.call(CH_SETUP, CC_QUERY_CONF, ffi.buffer(q, size), reply_size=size,
                                timeout=5)
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
        self._stop_rounds()
        # The segment is unmapped below: views that live on keep it (_kept).
        self._orphans += [msg._release for msg in self._live.values() if not msg._release()]
        self._live.clear()
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
    def _open(self) -> bool:
        return self._g is not None

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
            batch: list[_Entry] = []
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
        """The control socket is readable: EOF (the host died) or stray bytes.

        Nothing may arrive after the welcome.  The bytes are read (at most
        1 KiB a wake-up), so the loop never spins on a readable socket, and
        an EOF right behind them still counts as the host's death.
        """
        stray = waited = False
        sock = self._sock
        if sock is None:
            return
        for _ in range(16):
            try:
                data = sock.recv(64, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                # A host that writes and dies: its EOF may be a moment
                # behind the bytes (as in the C core's sock_check).
                if not stray or waited or not select.select([sock], [], [], _STRAY_EOF)[0]:
                    break
                waited = True
                continue
            except OSError:
                data = b""
            if not data:
                self._host_gone(PeerGone(errno.EPIPE, "the host is gone"))
                return
            stray = True
        if stray:
            self._host_gone(ProtocolError(errno.EPROTO, "the host sent bytes on the "
                                          "control socket after the welcome"))

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
        if self._held_acks:
            self._acks.extend(self._held_acks.ready())
        if self._held:
            self._retry_held()
        if self._acks:
            self._flush_acks()
        if self._queue:
            self._flush()
        self._wake_room()
        rc = lib.hgsmi_guest_arm(g)
        if rc < 0:
            self._host_gone(error(rc, "host"))
        elif rc > 0:
            self._schedule_round()
        elif self._held_acks or self._held:
            self._watch_held()

    def _free_buffer(self, buf: Buffer) -> None:
        super()._free_buffer(buf)
        if buf.state == "held":
            self._watch_held()

    def _reap(self) -> int:
        msgs, cap, g = self._reap_msgs, len(self._reap_msgs), self._g
        entries, base = self._entries, self._base
        while True:
            n: int = lib.hgsmi_guest_reap(g, msgs, cap)
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
                            fut.set_exception(call_error(m.status, e.channel,
                                                         ffi.buffer(base + m.data, m.size)))
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
        # The timeout is only a safety net: rounds wake the waiters.
        await self._next_round(1.0 if timeout is None else min(timeout, 1.0))
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
        """Serve the host FIFO: ack what is done, keep the rest (async, held)."""
        msgs, g = self._msgs, self._g
        while True:
            # Timeout 0: the loop waits at most the C core's short grace
            # for room in the ack ring, never a blocking 2 s.
            n = lib.hgsmi_guest_recv_timeout(g, msgs, len(msgs), 0)
            if n <= 0:
                return _ack_failure(n)
            k = serve_batch(msgs, n, self._base, self, self._handlers, self._start_async,
                            self._handler_failed, self._held_acks)
            if k:
                rc = lib.hgsmi_guest_ack_timeout(g, msgs, k, 0)
                if rc < 0:
                    return _ack_failure(rc)
            if len(self._held_acks):
                self._watch_held()
            if n < len(msgs):
                return 0

    def _start_async(self, msg: Message, m: Any, aw: Any) -> bool:
        """An async handler: run it as a task; its end acks the command."""
        mc = ffi.new("struct hgsmi_msg *", m)
        self._live[m.offset] = msg
        task = asyncio.ensure_future(aw, loop=self._loop)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._cmd_done(t, mc, msg))
        return False

    def _cmd_done(self, task: asyncio.Task[Any], mc: Any, msg: Message) -> None:
        self._tasks.discard(task)
        if self._live.pop(mc.offset, None) is None:  # closed meanwhile
            return
        try:
            fill_reply(self._base, mc, task.result())
        except BaseException as e:  # noqa: B036 - CancelledError too
            self._handler_failed(mc, e)
        if self._held_acks.settle(mc, msg):
            self._acks.append(mc)
            if not self._ack_pending:
                self._ack_pending = True
                self._loop.call_soon(self._flush_acks)
        else:  # a view outlived the handler: the host may not reuse it yet
            self._watch_held()

    def _flush_acks(self) -> None:
        self._ack_pending = False
        acks, self._acks = self._acks, []
        if not acks or self._g is None or self._gone is not None:
            return
        rc = lib.hgsmi_guest_ack_timeout(self._g, msg_array(acks), len(acks), 0)
        if rc < 0:
            self._host_gone(error(_ack_failure(rc), "ack"))


def _ack_failure(rc: int) -> int:
    """An ack the host never made room for ends an AsyncGuest as a protocol
    error: no caller's timeout ran out, the host broke the protocol."""
    return -errno.EPROTO if rc == -errno.ETIMEDOUT else rc


class _Connect:
    """``await AsyncGuest.connect(...)`` or ``async with AsyncGuest.connect(...)``."""

    def __init__(self, cls: type[AsyncGuest], name: str, kwargs: dict[str, Any]) -> None:
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

    def __await__(self) -> Generator[Any, None, AsyncGuest]:
        return self._attach().__await__()

    async def __aenter__(self) -> AsyncGuest:
        self._guest = await self._attach()
        return self._guest

    async def __aexit__(self, *exc: object) -> None:
        if self._guest is not None:
            await self._guest.aclose()
