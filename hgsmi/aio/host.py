"""asyncio host: :class:`AsyncHost` (imported from :mod:`hgsmi.aio`, which describes the scheme)."""
from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Iterable
from typing import Any

from .._native import lib
from .._wire import SEGMENT_SIZE_DEFAULT
from ..core.host import ConnCore, RoomSteps
from ..errors import error
from ..host import GuestConn, HostFace, host_options
from ..message import Message
from .loop import LoopDriven, Waiter, in_loop_thread

log = logging.getLogger("hgsmi.aio")

#: how often a post into a full FIFO looks again, besides each serve round
_POST_RETRY = 0.05
_EV_ACCEPT = lib.HGSMI_EV_ACCEPT


class AsyncHost(LoopDriven, HostFace):
    """A host served by the running asyncio loop (the same core as :class:`~hgsmi.Host`).

    ``async with AsyncHost(name) as host:`` starts serving in the background
    (or ``await host.serve()`` until :meth:`stop`).  Handlers may be plain
    functions or coroutine functions.  ``await host.post(...)`` waits for
    room in a full FIFO; ``await host.wait_for_guests(n)``.  A guest's own
    ``GuestConn.post`` raises ``TypeError`` when it would have to wait.
    """

    def __init__(self, name: str, size: int = SEGMENT_SIZE_DEFAULT, doorbell: str = "eventfd",
                 **kwargs: Any) -> None:
        # async handlers finish later: a Lease per view, not a Window's slice
        self._make_core(name, size, doorbell, False, self._start_async, host_options(kwargs))
        self._init_rounds(None)
        self._waiter: Waiter | None = None
        self._tasks: dict[int, set[asyncio.Task[Any]]] = {}  # async handlers, by guest
        self._flush_pending = False
        self._stopped: asyncio.Future[None] | None = None
        # guests gone whose handlers or views still use their segment
        self._departed: list[tuple[ConnCore, set[asyncio.Task[Any]]]] = []

    # -- serving ----------------------------------------------------------------
    def start(self) -> None:
        """Serve from the running loop in the background (idempotent)."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        self._loop.add_reader(self.fileno(), self._round)
        if self.doorbell == "semaphore":
            h = self._core.h
            self._waiter = Waiter(lambda ms: lib.hgsmi_host_doorbell_wait(h, ms), self._loop,
                                  self._on_wake, f"hgsmi-doorbell-{self.name}")
            self._waiter.start()
        self._round()

    async def serve(self, signals: bool = True) -> None:
        """Serve until :meth:`stop` (or SIGTERM/SIGINT, in the main thread)."""
        self.start()
        loop = self._loop
        stopped = self._stopped
        if stopped is None or stopped.done():  # as Host.serve: an earlier stop() does not count
            stopped = self._stopped = loop.create_future()
        handled = []
        if signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, self.stop)
                    handled.append(sig)
                except (NotImplementedError, RuntimeError):
                    pass
        try:
            await asyncio.shield(stopped)
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
            if loop.is_running() and in_loop_thread(loop):
                done()
            else:
                loop.call_soon_threadsafe(done)
        except RuntimeError:
            pass

    async def wait_for_guests(self, n: int = 1, timeout: float | None = 10.0) -> list[GuestConn]:
        """Wait until ``n`` guests are attached; :class:`Timeout` after ``timeout``."""
        self.start()
        for left in self._core.guests_steps(n, timeout):
            await self._next_round(left)
        return self.guests

    async def post(self, channel: int, info: int, data: Any, timeout: float | None = None,
                   guest: GuestConn | None = None) -> int:
        """Send ``data`` to ``guest`` (default: the only one) through its FIFO.

        Waits for the guest's acks while its FIFO or the host heap is full
        (up to ``timeout``).  Returns the buffer's offset.  Raises as
        :meth:`GuestConn.post`; ``ValueError`` with several guests and no
        ``guest``.
        """
        conn = guest.core if guest is not None else self._core.only_guest()
        off = conn.post_at_once(channel, info, data, timeout)
        if off is not None:
            return off
        return await self._drive_post(conn.post_steps(channel, info, data, timeout))

    async def post_many(self, channel: int, info: int, datas: Iterable[Any],
                        timeout: float | None = None, guest: GuestConn | None = None) -> int:
        """:meth:`GuestConn.post_many` to ``guest`` (default: the only one).

        Waits for the guest's acks while its FIFO or the host heap is full
        (up to ``timeout``).  Returns how many were queued.  Raises as
        :meth:`GuestConn.post_many`; ``ValueError`` with several guests and
        no ``guest``.
        """
        conn = guest.core if guest is not None else self._core.only_guest()
        return await self._drive_post(conn.post_many_steps(channel, info, datas, timeout))

    async def _drive_post(self, steps: RoomSteps) -> int:
        """Run a post loop (ConnCore.room_steps): a round of serving while
        there is no room, so the guest's acks come in."""
        try:
            while True:
                _, left = next(steps)
                await self._next_round(_POST_RETRY if left is None else min(left, _POST_RETRY))
        except StopIteration as done:
            posted: int = done.value  # the steps return the count
            return posted

    def _wait_room(self) -> None:
        raise TypeError("AsyncHost is served by its event loop: a post that must wait "
                        "for room is `await host.post(..., guest=conn)`")

    def _handler_tasks(self) -> Iterable[asyncio.Task[Any]]:
        return [t for ts in self._tasks.values() for t in ts]

    def _hand_back(self) -> None:
        self._flush_done()

    def close(self) -> None:
        """Stop serving, cancel the handlers still running, disconnect every
        guest, remove segments and socket.  Idempotent.  Views that live on
        keep their segment mapped (the core's close)."""
        if self._core.h is None:
            return
        if self._waiter is not None:
            self._waiter.stop()
            self._waiter = None
        self._stop_rounds()
        if self._loop is not None:
            try:
                self._loop.remove_reader(self.fileno())
            except Exception:  # the loop may be closed already
                pass
        for tasks in [*self._tasks.values(), *(ts for _, ts in self._departed)]:
            for t in tasks:
                try:
                    t.cancel()
                except RuntimeError:  # the loop is closed
                    pass
        for conn, _ in self._departed:
            conn.close()
        self._departed = []
        self._tasks.clear()
        self.stop()
        self._core.close()

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

    def _open(self) -> bool:
        return self._core.h is not None

    def _round(self) -> None:
        """Disarm, accept, serve every guest a few batches, reap the departed, arm."""
        self._round_pending = False
        core = self._core
        h = core.h
        if h is None:
            return
        core.flush_logs()
        mask = lib.hgsmi_host_disarm(h)
        if mask < 0:
            log.error("disarm: %s", error(mask).strerror)
            mask = 0
        if mask & _EV_ACCEPT:
            core.accept(self._peer)
        for conn in core.serving:
            if lib.hgsmi_conn_alive(conn.c):
                conn.serve()  # its awaitables reach _start_async
            if not lib.hgsmi_conn_alive(conn.c):
                self._depart(conn)
        if self._departed:
            self._reap_departed()
        self._wake_room()
        if lib.hgsmi_host_arm(h) > 0:
            self._schedule_round()
        elif self._departed or any(conn.holding for conn in core.conns.values()):
            self._watch_held()

    def _start_async(self, conn: ConnCore, msg: Message, m: Any, aw: Any) -> bool:
        """An async handler: run it as a task; its end completes the buffer."""
        mc = conn.defer(m, msg)
        tasks = self._tasks.setdefault(conn.id, set())
        task = asyncio.ensure_future(aw, loop=self._loop)
        tasks.add(task)
        task.add_done_callback(lambda t: self._handler_done(t, conn, mc, tasks))
        return False

    def _handler_done(self, task: asyncio.Task[Any], conn: ConnCore, mc: Any,
                      tasks: set[asyncio.Task[Any]]) -> None:
        tasks.discard(task)
        result, exc = None, None
        try:
            result = task.result()
        except BaseException as e:  # noqa: B036 - CancelledError too
            exc = e
        if conn.finish(mc, result, exc):
            if not self._flush_pending:
                self._flush_pending = True
                self._loop.call_soon(self._flush_done)
        else:  # a view outlived the handler: complete only when it goes
            self._watch_held()
        if not tasks and self._departed:
            self._schedule_round()

    def _flush_done(self) -> None:
        """What async handlers finished in this loop iteration goes back together."""
        self._flush_pending = False
        for conn in self._core.serving:
            conn.flush()

    def _depart(self, conn: ConnCore) -> None:
        """The guest is gone: stop its handlers; unmap once no view is left."""
        self._core.depart(conn)
        tasks = self._tasks.pop(conn.id, set())
        for t in tasks:
            t.cancel()
        self._departed.append((conn, tasks))

    def _reap_departed(self) -> None:
        still = []
        for conn, tasks in self._departed:
            if not conn.forget() or tasks:  # the segment stays mapped under them
                still.append((conn, tasks))
            else:
                self._core.retire(conn)
        self._departed = still
