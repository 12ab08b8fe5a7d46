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

A handler that keeps a view of its buffer past its end (a slice, a numpy
array) holds that buffer's completion (host) or ack (guest) back, exactly as
the sync ``Host.poll``/``Guest.poll`` do and through the same code
(:func:`hgsmi.reply.serve_batch`, :class:`hgsmi.reply.HeldBack`): the owner
would reuse the memory under the view.  While anything is held, the loop
looks again every 20 ms.

Everything here must be used from the thread running the loop.

The code: ``loop.py`` (rounds, waiting for room, the semaphore waiter
thread), ``guest.py`` (:class:`AsyncGuest`), ``host.py``
(:class:`AsyncHost`).  Known limit: ``hgsmi_host_accept`` waits up to 1 s for
a connecting guest's hello, on the loop (see the xfail test
``test_a_silent_client_does_not_stall_the_async_host``).
"""
from __future__ import annotations

from .guest import AsyncGuest
from .host import AsyncHost

__all__ = ["AsyncGuest", "AsyncHost"]
