"""What both asyncio sides share: rounds on the loop, room waiters, the semaphore waiter thread.

Private to :mod:`hgsmi.aio`, which describes the scheme.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Self

#: how long a semaphore waiter thread sleeps between looks at its stop flag
WAITER_SLICE_MS = 200
#: while a view holds a completion, an ack or a free back, how often to look
#: again (Python has no hook for "the last export of a buffer went away")
HELD_RETRY = 0.02


class Waiter(threading.Thread):
    """The semaphore fallback: block in ``wait(slice_ms)``, wake the loop."""

    def __init__(self, wait: Callable[[int], int], loop: asyncio.AbstractEventLoop,
                 wake: Callable[[int], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._wait, self._loop, self._wake = wait, loop, wake
        self.stopping = False

    def run(self) -> None:
        while not self.stopping:
            rc = self._wait(WAITER_SLICE_MS)  # releases the GIL
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


class LoopDriven:
    """A side served in rounds by an asyncio loop (AsyncGuest, AsyncHost).

    A round (``_round``, the subclass's) drains everything and re-arms.
    This mixin schedules rounds, wakes the coroutines waiting for room
    after each, re-runs rounds every :data:`HELD_RETRY` seconds while
    a view holds something back, and closes (``aclose``, ``async with``)
    after cancelling the async handlers.
    """

    _loop: asyncio.AbstractEventLoop

    def _init_rounds(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._loop = loop  # type: ignore[assignment]
        self._round_pending = False
        self._held_timer: asyncio.TimerHandle | None = None
        self._room: list[asyncio.Future[None]] = []  # coroutines waiting for the next round

    def _round(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _handler_tasks(self) -> Iterable[asyncio.Task[Any]]:  # pragma: no cover - abstract
        """The tasks running async handlers (aclose cancels them)."""
        raise NotImplementedError

    def _hand_back(self) -> None:  # pragma: no cover - abstract
        """Complete or ack what the handlers finished (aclose, before closing)."""
        raise NotImplementedError

    if TYPE_CHECKING:  # the side's own (a mixin must not shadow Host.close in the MRO)
        def close(self) -> None:
            """Close now: what is pending fails."""

    async def aclose(self) -> None:
        """Cancel the async handlers (and wait for them), hand back what they finished, close."""
        tasks = [t for t in self._handler_tasks() if not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._hand_back()
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def _open(self) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def _schedule_round(self) -> None:
        if not self._round_pending:
            self._round_pending = True
            self._loop.call_soon(self._round)

    def _watch_held(self) -> None:
        """Look again soon: a view holds a completion, an ack or a free back."""
        if self._held_timer is None and self._open():
            self._held_timer = self._loop.call_later(HELD_RETRY, self._held_retry)

    def _held_retry(self) -> None:
        self._held_timer = None
        self._round()

    def _stop_rounds(self) -> None:
        if self._held_timer is not None:
            self._held_timer.cancel()
            self._held_timer = None

    def _wake_room(self) -> None:
        """A round is done: what waited for room (heap, ring, FIFO) tries again."""
        if self._room:
            room, self._room = self._room, []
            for f in room:
                if not f.done():
                    f.set_result(None)

    async def _next_round(self, timeout: float | None) -> None:
        """Wait for the end of the next round, or ``timeout`` seconds."""
        f = self._loop.create_future()
        self._room.append(f)
        try:
            await asyncio.wait_for(f, timeout)
        except TimeoutError:
            pass


def in_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    """Is ``loop`` the loop running in this thread?"""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
