"""asyncio guest: :class:`AsyncGuest`, a :class:`~hgsmi.core.guest.GuestCore` awaiting the loop.

(Imported from :mod:`hgsmi.aio`, which describes the scheme.)
"""
from __future__ import annotations

import asyncio
import collections
import errno
import functools
import os
import select
import socket
from collections.abc import Generator, Iterable, Mapping
from typing import Any

from .._attach import attach
from .._call_error import call_error
from .._native import ffi, lib
from .._wire import CC_QUERY_CONF, CH_SETUP
from ..core.guest import GuestCore
from ..errors import HgsmiError, PeerGone, ProtocolError, Timeout, error
from ..loan import Loan
from ..message import Buffer, Handler, Message
from .loop import LoopDriven, Waiter

#: how long stray bytes on the control socket wait for the EOF behind them
_STRAY_EOF = 0.01


class _Entry:
    """One submission: its future, and the Buffer (None for a copy-mode call)."""

    __slots__ = ("fut", "offset", "buf", "channel")

    def __init__(self, fut: asyncio.Future[Any], offset: int, buf: Buffer | None,
                 channel: int) -> None:
        self.fut, self.offset, self.buf, self.channel = fut, offset, buf, channel


class AsyncGuest(LoopDriven):
    """A guest driven by the running asyncio loop (the asyncio face of :class:`~hgsmi.Guest`).

    Create it inside a coroutine (``async with AsyncGuest(name) as g``).
    ``await g.call(...)``, ``await g.submit(buf)``, ``await g.call_buffer(buf)``,
    ``await g.send(...)`` and async (or plain) handlers via ``g.register``.
    There is no ``poll``, ``wait`` or ``completions``: the loop does their
    work.  ``alloc``, ``loan`` and ``loan.publish()`` never wait (they raise
    when the heap or ring is full): await ``alloc_wait``, ``loan_wait`` and
    ``publish_wait`` instead.  Host commands are served from the moment it
    attaches, and one for a channel with no handler fails: pass
    ``handlers={channel: fn}`` to have them registered first.  ``wait``
    (seconds) waits for a host that is not there yet, as
    :class:`~hgsmi.Guest`'s does; it blocks the loop meanwhile, so within a
    loop use ``await AsyncGuest.connect(name, wait=...)``.
    """

    def __init__(self, name: str, *, runtime_dir: str | os.PathLike[str] | None = None,
                 connect_timeout: float = 2.0, batch: int = 64,
                 handlers: Mapping[int, Handler] | None = None,
                 loop: asyncio.AbstractEventLoop | None = None, wait: float = 0.0) -> None:
        loop = loop or asyncio.get_running_loop()
        handle = attach(name, runtime_dir=runtime_dir, connect_timeout=connect_timeout,
                        wait=wait)
        self._setup(handle, name, batch, handlers, loop)

    @classmethod
    def connect(cls, name: str, **kwargs: Any) -> _Connect:
        """Attach without blocking the loop (the handshake runs in a thread).

        Needed when the host is served by the same loop:
        ``g = await AsyncGuest.connect(name)`` or
        ``async with AsyncGuest.connect(name) as g``.
        """
        return _Connect(cls, name, kwargs)

    @classmethod
    def _attached(cls, handle: Any, name: str, batch: int,
                  handlers: Mapping[int, Handler] | None,
                  loop: asyncio.AbstractEventLoop) -> AsyncGuest:
        """An AsyncGuest over a handle that :func:`~hgsmi._attach.attach` made (connect's)."""
        self = cls.__new__(cls)
        self._setup(handle, name, batch, handlers, loop)
        return self

    def _setup(self, handle: Any, name: str, batch: int,
               handlers: Mapping[int, Handler] | None,
               loop: asyncio.AbstractEventLoop) -> None:
        """Make the core over ``handle``, register ``handlers``, start serving on ``loop``."""
        self._init_rounds(loop)
        self.name = name
        # Async handlers finish later: a Lease per view, not a Window's slice.
        self._core = core = GuestCore(handle, name, self, batch=batch, windowed=False,
                                      start_async=self._start_async, on_held=self._watch_held)
        self._fd = self._sockfd = -1
        self._waiter: Waiter | None = None
        self._sock: socket.socket | None = None
        self._queue: collections.deque[_Entry] = collections.deque()  # not yet on the ring
        self._tasks: set[asyncio.Task[Any]] = set()  # async handlers of host commands
        self._sub_offs = ffi.new("uint32_t[]", 1024)
        self._flush_pending = self._ack_pending = False
        try:
            for channel, handler in (handlers or {}).items():
                core.register(channel, handler)
        except BaseException:
            core.close()
            raise
        self._start()

    def _start(self) -> None:
        g = self._core.handle
        fd = lib.hgsmi_guest_fileno(g)
        if fd >= 0:
            self._fd = fd
            self._loop.add_reader(fd, self._round)
            # EOF on the control socket is how a dead host shows.
            self._sockfd = lib.hgsmi_guest_sockfd(g)
            self._sock = socket.socket(fileno=os.dup(self._sockfd))
            self._loop.add_reader(self._sockfd, self._on_sock)
        else:
            self._waiter = Waiter(lambda ms: lib.hgsmi_guest_irq_wait(g, ms), self._loop,
                                  self._on_wake, f"hgsmi-irq-{self.name}")
            self._waiter.start()
        self._round()

    # -- calls ----------------------------------------------------------------
    async def call(self, channel: int, info: int, data: Any, reply_size: int = 0,
                   timeout: float | None = None) -> bytes:
        """Copy mode: send ``data``, return the reply (up to ``max(len(data), reply_size)``).

        Waits for heap room if the heap is full of buffers in flight.
        Raises as :meth:`hgsmi.Guest.call`; a timeout raises :class:`Timeout`
        and the buffer is freed when its late completion arrives.
        """
        core = self._core
        src, _ = core.call_args(channel, info, data, reply_size)
        while (off := core.alloc_copy(channel, info, src, reply_size)) is None:
            await self._wait_room(-errno.ENOMEM, f"call on channel {channel}")
        fut: asyncio.Future[bytes] = self._loop.create_future()
        self._enqueue(_Entry(fut, off, None, channel))
        if timeout is None:
            return await fut
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise Timeout(errno.ETIMEDOUT, f"call on channel {channel}") from None

    def alloc(self, channel: int, info: int, size: int, reply_size: int = 0) -> Buffer:
        """A buffer of ``size`` bytes to fill in place; never waits.

        Raises :class:`HeapExhausted` while the heap is full (await
        :meth:`alloc_wait` instead), :class:`MessageTooLarge`, :class:`PeerGone`.
        """
        buf = self._core.alloc(channel, info, size, reply_size)
        if buf is None:
            raise error(-errno.ENOMEM, "alloc")
        return buf

    async def alloc_wait(self, channel: int, info: int, size: int,
                         reply_size: int = 0) -> Buffer:
        """:meth:`alloc`, waiting for heap room while buffers are in flight."""
        core = self._core
        while (buf := core.alloc(channel, info, size, reply_size)) is None:
            await self._wait_room(-errno.ENOMEM, "alloc")
        return buf

    def loan(self, channel: int, info: int, size: int, n: int = 1) -> Loan:
        """:meth:`hgsmi.Guest.loan`, but it never waits: :class:`HeapExhausted` while
        the heap is full (await :meth:`loan_wait` instead)."""
        ln = self._core.loan(channel, info, size, n, None)
        if ln is None:
            raise error(-errno.ENOMEM, f"loan of {n} x {size} bytes")
        return ln

    async def loan_wait(self, channel: int, info: int, size: int, n: int = 1) -> Loan:
        """:meth:`loan`, awaiting heap room while buffers are in flight."""
        core = self._core
        while (ln := core.loan(channel, info, size, n, None)) is None:
            await self._wait_room(-errno.ENOMEM, f"loan of {n} x {size} bytes")
        return ln

    async def publish_wait(self, loan: Loan) -> int:
        """``loan.publish()``, awaiting ring room; returns how many went.

        (``loan.publish()`` itself never waits here: it raises :class:`RingFull`.)
        """
        first = loan.published
        while True:
            self._core.check_open()
            try:
                loan.publish(timeout=0)
                return loan.published - first
            except BlockingIOError as e:  # RingFull: what fitted went
                await self._wait_room(-errno.EAGAIN, "publish", e)

    def submit(self, buf: Buffer) -> asyncio.Future[Buffer]:
        """Hand ``buf`` to the host; returns a future of the completed buffer.

        The future's result is ``buf`` with ``status`` and ``reply`` (free it,
        or leave its ``with`` block, when done).  Cancelling the future gives
        the buffer up: the library frees it when it is back.
        """
        core = self._core
        core.check_open()
        core.hand_over(buf)
        fut: asyncio.Future[Buffer] = self._loop.create_future()
        self._enqueue(_Entry(fut, buf.offset, buf, buf.channel))
        return fut

    def submit_many(self, bufs: Iterable[Buffer]) -> list[asyncio.Future[Buffer]]:
        """:meth:`submit` for each buffer (they share one doorbell)."""
        return [self.submit(b) for b in bufs]

    async def call_buffer(self, buf: Buffer, timeout: float | None = None) -> memoryview:
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

    async def send(self, channel: int, info: int, data: Any) -> None:
        """Fire and forget (copy mode), waiting for room if the heap or ring is full."""
        await self.send_many(channel, info, [data])

    async def send_many(self, channel: int, info: int, datas: Iterable[Any],
                        timeout: float | None = None) -> int:
        """:meth:`send` for many messages with one doorbell per batch.

        Waits for room (completions) while the heap or ring is full, up to
        ``timeout``.  Returns how many were sent.  Raises :class:`Timeout`,
        :class:`PeerGone`, :class:`MessageTooLarge`.
        """
        steps = self._core.send_steps(channel, info, datas, timeout)
        try:
            while True:
                rc, left = next(steps)
                await self._wait_room(rc, "send", timeout=left)
        except StopIteration as done:
            sent: int = done.value  # send_steps returns the count
            return sent

    async def query_conf(self, index: int) -> int:
        """Ask the setup channel (QUERY_CONF) for a value."""
        q = ffi.new("struct hgsmi_conf32 *", {"index": index})
        size = ffi.sizeof("struct hgsmi_conf32")
        reply = await self.call(CH_SETUP, CC_QUERY_CONF, ffi.buffer(q, size), reply_size=size,
                                timeout=5)
        if len(reply) != size:
            raise error(-errno.EPROTO, "query_conf")
        ffi.memmove(q, reply, size)
        return int(q.value)

    def register(self, channel: int, handler: Handler) -> None:
        """Serve host commands on ``channel`` with ``handler(msg)``, plain or async."""
        self._core.register(channel, handler)

    def fileno(self) -> int:
        """The IRQ eventfd (already in the loop).  ``OSError`` for semaphores."""
        return self._core.fileno()

    def stats(self) -> dict[str, Any]:
        """Counters, in-flight buffers and guest-heap figures."""
        return self._core.stats()

    @property
    def _g(self) -> Any:
        """The C guest handle, as :class:`~hgsmi.Guest` has it (for tests and the C API)."""
        return self._core.handle

    @property
    def pending(self) -> int:
        """Submissions queued or on the ring, not yet completed."""
        return len(self._queue) + len(self._core.inflight)

    # -- lifetime ---------------------------------------------------------------
    def close(self) -> None:
        """Detach now (what is pending fails with :class:`PeerGone`).  Idempotent."""
        core = self._core
        if core.handle is None:
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
        core.fail(PeerGone(errno.EPIPE, "guest is closed"))
        try:
            for t in self._tasks:
                t.cancel()
            self._fail_pending(core.gone or PeerGone(errno.EPIPE, "guest is closed"))
        except RuntimeError:  # the loop is closed: nobody awaits these any more
            pass
        core.close()

    def _handler_tasks(self) -> Iterable[asyncio.Task[Any]]:
        return self._tasks

    def _hand_back(self) -> None:
        """aclose: ack the host commands the cancelled handlers finished."""
        self._flush_acks()

    # -- the engine -----------------------------------------------------------------
    def _open(self) -> bool:
        return self._core.handle is not None

    def _enqueue(self, e: _Entry) -> None:
        self._queue.append(e)
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Push the queue onto the ring: one hgsmi_guest_submit, one doorbell."""
        self._flush_pending = False
        q, core = self._queue, self._core
        if core.handle is None or core.gone is not None:
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
            rc = core.submit(batch, offs)
            if rc < 0:
                exc = error(rc, "submit")
                for e in batch:
                    self._reject(e, exc)
                if rc == -errno.EPIPE:
                    self._host_gone(exc)
                return
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
        """Disarm, reap completions, serve host commands, ack, flush, arm."""
        self._round_pending = False
        core = self._core
        g = core.handle
        if g is None or core.gone is not None:
            return
        rc = lib.hgsmi_guest_disarm(g)
        if rc >= 0:
            rc = core.reap(self._done)
        if rc < 0:
            self._host_gone(error(rc, "host"))
            return
        try:
            # Deadline 0: the loop waits at most the C core's short grace
            # for room in the ack ring, never a blocking 2 s.
            core.serve(0)
            if core.acks or core.held_acks:
                core.flush_acks(0)
        except HgsmiError as e:
            self._host_gone(_ack_failure(e))
            return
        if self._queue:
            self._flush()
        self._wake_room()
        rc = lib.hgsmi_guest_arm(g)
        if rc < 0:
            self._host_gone(error(rc, "host"))
        elif rc > 0:
            self._schedule_round()
        elif core.holding():
            self._watch_held()

    def _done(self, e: _Entry, m: Any) -> None:
        """A completion reaped: the future of its submission gets the reply or the buffer."""
        fut, core = e.fut, self._core
        if e.buf is None:  # copy mode: the reply is copied out, the buffer freed
            if not fut.done():
                reply = ffi.buffer(core.base + m.data, m.size)
                if m.status < 0:
                    fut.set_exception(call_error(m.status, e.channel, reply))
                else:
                    fut.set_result(reply[:])
            core.free_offset(e.offset)
        else:
            core.complete(e.buf, m)
            if fut.done():  # cancelled: nobody wants it, reclaim
                e.buf.free()
            else:
                fut.set_result(e.buf)

    def _reclaim(self, e: _Entry) -> None:
        """A cancelled submission that never reached the ring: free its buffer."""
        if e.buf is None:
            self._core.free_offset(e.offset)
        else:
            self._core.take_back(e.buf)
            e.buf.free()

    def _reject(self, e: _Entry, exc: BaseException) -> None:
        """A submission the ring refused: the buffer is the caller's again (or freed)."""
        if e.buf is None:
            self._core.free_offset(e.offset)
        else:
            self._core.take_back(e.buf)
        if not e.fut.done():
            e.fut.set_exception(exc)
        elif e.buf is not None:
            e.buf.free()

    async def _wait_room(self, rc: int, what: str, exc: BaseException | None = None,
                         timeout: float | None = None) -> None:
        """Wait for the next round: completions give heap and ring room back.

        Raises at once (``exc``, or the error of ``rc``) if nothing is in
        flight that could give room back.
        """
        core = self._core
        if not (core.inflight or self._queue or core.acks) and not core.in_flight():
            raise exc if exc is not None else error(rc, what)
        # The timeout is only a safety net: rounds wake the waiters.
        await self._next_round(1.0 if timeout is None else min(timeout, 1.0))
        core.check_open()

    def _host_gone(self, exc: BaseException) -> None:
        if self._core.fail(exc) and self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._loop.remove_reader(self._sockfd)
        self._fail_pending(exc)

    def _fail_pending(self, exc: BaseException) -> None:
        q, self._queue = self._queue, collections.deque()
        for e in q:
            self._reject(e, exc)
        for e in self._core.drop_inflight():  # the host has them: detach reclaims
            if not e.fut.done():
                e.fut.set_exception(exc)
        room, self._room = self._room, []
        for f in room:
            if not f.done():
                f.set_exception(exc)

    # -- host commands ------------------------------------------------------------
    def _start_async(self, msg: Message, m: Any, aw: Any) -> bool:
        """An async handler: run it as a task; its end acks the command."""
        mc = self._core.defer(msg, m)
        task = asyncio.ensure_future(aw, loop=self._loop)
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._cmd_done, mc))
        return False

    def _cmd_done(self, mc: Any, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if self._core.finish(mc, task.result) and not self._ack_pending:
            self._ack_pending = True
            self._loop.call_soon(self._flush_acks)

    def _flush_acks(self) -> None:
        self._ack_pending = False
        try:
            self._core.flush_acks(0)
        except HgsmiError as e:
            self._host_gone(_ack_failure(e))


def _ack_failure(e: HgsmiError) -> HgsmiError:
    """An ack the host never made room for ends an AsyncGuest as a protocol
    error: no caller's timeout ran out, the host broke the protocol."""
    if isinstance(e, Timeout):
        return ProtocolError(errno.EPROTO, f"{e.strerror}: the host kept its ack ring full")
    return e


def _detach(fut: asyncio.Future[Any]) -> None:
    """A handle attached for a connect that was cancelled meanwhile: detach it."""
    if not fut.cancelled() and fut.exception() is None:
        lib.hgsmi_guest_detach(fut.result())


class _Connect:
    """``await AsyncGuest.connect(...)`` or ``async with AsyncGuest.connect(...)``."""

    def __init__(self, cls: type[AsyncGuest], name: str, kwargs: dict[str, Any]) -> None:
        self._cls, self._name, self._kwargs = cls, name, kwargs
        self._guest: AsyncGuest | None = None

    async def _attach(self) -> AsyncGuest:
        loop = asyncio.get_running_loop()
        kw = dict(self._kwargs)
        kw.pop("loop", None)
        batch, handlers = kw.pop("batch", 64), kw.pop("handlers", None)
        fut = loop.run_in_executor(None, functools.partial(attach, self._name, **kw))
        try:
            handle = await asyncio.shield(fut)
        except asyncio.CancelledError:
            fut.add_done_callback(_detach)
            raise
        return self._cls._attached(handle, self._name, batch, handlers, loop)

    def __await__(self) -> Generator[Any, None, AsyncGuest]:
        return self._attach().__await__()

    async def __aenter__(self) -> AsyncGuest:
        self._guest = await self._attach()
        return self._guest

    async def __aexit__(self, *exc: object) -> None:
        if self._guest is not None:
            await self._guest.aclose()
