"""asyncio host: :class:`AsyncHost` (imported from :mod:`hgsmi.aio`, which describes the scheme)."""
from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Generator, Iterable
from typing import Any

from .._native import ffi, lib
from .._wire import SEGMENT_SIZE_DEFAULT
from ..errors import error
from ..host import GuestConn, Host
from ..message import Message
from ..reply import HeldBack, fill_reply, msg_array
from .loop import LoopDriven, Waiter, in_loop_thread

log = logging.getLogger("hgsmi.aio")

#: how often a post into a full FIFO looks again, besides each serve round
_POST_RETRY = 0.05
_EV_ACCEPT = lib.HGSMI_EV_ACCEPT


class _ConnState:
    """What the loop keeps per guest beside its GuestConn."""

    __slots__ = ("tasks", "live", "done", "held")

    def __init__(self, held: HeldBack) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.live: dict[int, Message] = {}  # async handlers running, by offset
        self.done: list[Any] = []  # served later (async, held), to complete together
        self.held = held  # the conn's: served, a view still exported


class AsyncHost(LoopDriven, Host):
    """A :class:`~hgsmi.Host` served by the running asyncio loop.

    ``async with AsyncHost(name) as host:`` starts serving in the background
    (or ``await host.serve()`` until :meth:`stop`).  Handlers may be plain
    functions or coroutine functions.  ``await host.post(...)`` waits for
    room in a full FIFO; ``await host.wait_for_guests(n)``.  ``poll`` raises
    ``TypeError``: the loop serves.
    """

    #: async handlers finish later: a Lease per view, not a Window's slice
    _windowed = False

    def __init__(self, name: str, size: int = SEGMENT_SIZE_DEFAULT, doorbell: str = "eventfd",
                 **kwargs: Any) -> None:
        super().__init__(name, size, doorbell, **kwargs)
        self._init_rounds(None)
        self._waiter: Waiter | None = None
        self._state: dict[int, _ConnState] = {}
        self._flush_pending = False
        self._stopped: asyncio.Future[None] | None = None
        self._done_conns: list[tuple[GuestConn, _ConnState]] = []

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
            self._waiter = Waiter(lambda ms: lib.hgsmi_host_doorbell_wait(h, ms), self._loop,
                                  self._on_wake, f"hgsmi-doorbell-{self.name}")
            self._waiter.start()
        self._round()

    async def serve(self, signals: bool = True) -> None:  # type: ignore[override]
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

    def poll(self, timeout: float | None = None) -> int:
        raise TypeError("AsyncHost is served by its event loop: use start() or "
                        "await serve(), and await host.post(...)")

    async def wait_for_guests(self, n: int = 1,  # type: ignore[override]
                              timeout: float | None = 10.0) -> list[GuestConn]:
        """Wait until ``n`` guests are attached; :class:`Timeout` after ``timeout``."""
        self.start()
        for left in self._guests_steps(n, timeout):
            await self._next_round(left)
        return self.guests

    async def post(self, channel: int, info: int, data: Any,  # type: ignore[override]
                   timeout: float | None = None, guest: GuestConn | None = None) -> int:
        """Send ``data`` to ``guest`` (default: the only one) through its FIFO.

        Waits for the guest's acks while its FIFO or the host heap is full
        (up to ``timeout``).  Returns the buffer's offset.  Raises as
        :meth:`GuestConn.post`; ``ValueError`` with several guests and no
        ``guest``.
        """
        return await self._drive_post(
            (guest or self._only_guest())._post_steps(channel, info, data, timeout))

    async def post_many(self, channel: int, info: int,  # type: ignore[override]
                        datas: Iterable[Any], timeout: float | None = None,
                        guest: GuestConn | None = None) -> int:
        """:meth:`GuestConn.post_many` to ``guest`` (default: the only one).

        Waits for the guest's acks while its FIFO or the host heap is full
        (up to ``timeout``).  Returns how many were queued.  Raises as
        :meth:`GuestConn.post_many`; ``ValueError`` with several guests and
        no ``guest``.
        """
        return await self._drive_post(
            (guest or self._only_guest())._post_many_steps(channel, info, datas, timeout))

    async def _drive_post(self, steps: Generator[tuple[int, float | None], None, int]) -> int:
        """Run a post loop (GuestConn._room_steps): a round of serving while
        there is no room, so the guest's acks come in."""
        try:
            while True:
                _, left = next(steps)
                await self._next_round(_POST_RETRY if left is None else min(left, _POST_RETRY))
        except StopIteration as done:
            posted: int = done.value  # the steps return the count
            return posted

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
        waiter = getattr(self, "_waiter", None)  # None: __init__ failed early
        if waiter is not None:
            waiter.stop()
            self._waiter = None
        if getattr(self, "_held_timer", None) is not None:
            self._stop_rounds()
        loop = getattr(self, "_loop", None)
        if loop is not None:
            try:
                loop.remove_reader(self.fileno())
            except Exception:  # the loop may be closed already
                pass
        # Segments are unmapped below: views that live on keep theirs (_kept).
        departed = getattr(self, "_done_conns", [])
        attached = [(conn, st) for conn in self._conns.values()
                    if (st := getattr(self, "_state", {}).get(conn.id)) is not None]
        for conn, st in attached + departed:
            for t in st.tasks:
                try:
                    t.cancel()
                except RuntimeError:  # the loop is closed
                    pass
            conn._orphans += [msg._release for msg in st.live.values() if not msg._release()]
            st.live.clear()
        for conn, _ in departed:
            conn.close()
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

    def _open(self) -> bool:
        return self._h is not None

    def _round(self) -> None:
        """Disarm, accept, serve every guest a few batches, reap the departed, arm."""
        self._round_pending = False
        h = self._h
        if h is None:
            return
        self._flush_logs()
        mask = lib.hgsmi_host_disarm(h)
        if mask < 0:
            log.error("disarm: %s", error(mask).strerror)
            mask = 0
        if mask & _EV_ACCEPT:
            self._accept_all()
        for conn in list(self._conns.values()):
            st = self._state.get(conn.id)
            if st is None:  # shares conn._held: conn.stats() counts them (held_completions)
                st = self._state[conn.id] = _ConnState(conn._held)
            if lib.hgsmi_conn_alive(conn._c):
                self._serve(conn, st)
            if not lib.hgsmi_conn_alive(conn._c):
                self._depart(conn, st)
        if self._done_conns:
            self._reap_departed()
        self._wake_room()
        if lib.hgsmi_host_arm(h) > 0:
            self._schedule_round()
        elif self._done_conns or any(st.held for st in self._state.values()):
            self._watch_held()

    def _serve(self, conn: GuestConn, st: _ConnState) -> None:
        """Complete what finished since (async handlers, released views), then serve."""
        if st.held:
            st.done.extend(st.held.ready())
        if st.done:
            self._complete(conn, st)
        conn._serve()  # its start_async is this host's: async handlers reach _start_async

    def _start_async(self, conn: GuestConn, msg: Message, m: Any, aw: Any) -> bool:
        """An async handler: run it as a task; its end completes the buffer."""
        st = self._state[conn.id]
        mc = ffi.new("struct hgsmi_msg *", m)
        st.live[m.offset] = msg
        task = asyncio.ensure_future(aw, loop=self._loop)
        st.tasks.add(task)
        task.add_done_callback(lambda t: self._handler_done(t, conn, st, mc, msg))
        return False

    def _handler_done(self, task: asyncio.Task[Any], conn: GuestConn, st: _ConnState,
                      mc: Any, msg: Message) -> None:
        st.tasks.discard(task)
        if st.live.pop(mc.offset, None) is None:  # closed meanwhile
            return
        if self._h is not None and lib.hgsmi_conn_alive(conn._c):
            try:
                fill_reply(conn._base, mc, task.result())
            except BaseException as e:  # noqa: B036 - CancelledError too
                self._handler_failed(mc, e)
        if st.held.settle(mc, msg):
            st.done.append(mc)
            if not self._flush_pending:
                self._flush_pending = True
                self._loop.call_soon(self._flush_done)
        else:  # a view outlived the handler: complete only when it goes
            self._watch_held()
        if not st.tasks and self._done_conns:
            self._schedule_round()

    def _complete(self, conn: GuestConn, st: _ConnState) -> None:
        done, st.done = st.done, []
        if not done or not lib.hgsmi_conn_alive(conn._c):
            return
        lib.hgsmi_conn_complete(conn._c, msg_array(done), len(done))  # one IRQ for the batch

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
        self._gone(conn)
        self._conns.pop(conn.id, None)
        self._state.pop(conn.id, None)
        for t in st.tasks:
            t.cancel()
        self._done_conns.append((conn, st))

    def _reap_departed(self) -> None:
        still = []
        for conn, st in self._done_conns:
            st.done.clear()
            st.held.ready()  # nothing goes back to a departed guest: only forget
            if st.tasks or st.held:  # the segment stays mapped under them
                still.append((conn, st))
                continue
            self._departing(conn)
            conn.close()
        self._done_conns = still
