# SPDX-License-Identifier: MIT
"""
The peers a user would pick instead of hgsmi, each used the way its own
documentation shows. They come with ``pip install 'hgsmi[bench]'``; a peer
whose package is missing is left out of the table with a note
(:func:`available`).

- "iceoryx2-poll": iceoryx2's publish-subscribe over a ``Slice[c_uint8]``
  service; the sender loans a sample, fills it in place and sends it (its
  zero-copy path), the receiver busy-polls ``receive()``. No sample is ever
  dropped: safe overflow is off and the publisher retries until delivered.
  Its call-rtt is request/response, busy-polled on both sides.
- "iceoryx2-event": the same streams, but the receiver sleeps on an
  iceoryx2 event ``Listener`` when it finds nothing, and the sender notifies
  after each sample (the event service's idiom); no call-rtt row.
- "faster-fifo": ``faster_fifo.Queue`` (a shared-memory ring with a
  process-shared mutex and condition variable) of ``bytes``.
- "pyzmq": a ZeroMQ PAIR socket over ``ipc://``; frames sent without a copy
  from 64 KiB on (pyzmq's advice).

The end of a stream is an empty message in every peer.
"""
from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from .base import Job
from .channel import BytesChannel, Channel, Message
from .peers import PeerTransport, QueueEachWay, one_each_way, temp_dir

#: samples an iceoryx2 subscriber (and a faster-fifo queue, in messages) holds
_DEPTH = 1024
#: a sender waits this long at most for its receiver to connect
_CONNECT_S = 10.0


def available() -> dict[str, str]:
    """The missing peers: {transport name: why it is left out}."""
    missing = {}
    for names, module in ((("iceoryx2-poll", "iceoryx2-event"), "iceoryx2"),
                          (("faster-fifo",), "faster_fifo"), (("pyzmq",), "zmq")):
        if importlib.util.find_spec(module) is None:
            for n in names:
                missing[n] = f"{module} is not installed (pip install 'hgsmi[bench]')"
    return missing


# -- iceoryx2 ------------------------------------------------------------------

def _iox() -> Any:
    import iceoryx2 as iox2
    iox2.set_log_level(iox2.LogLevel.Error)
    return iox2


def _iox_node(config: str) -> Any:
    """A node in the job's private iceoryx2 namespace (see Iceoryx2.endpoints)."""
    iox2 = _iox()
    cfg = iox2.config.from_file(iox2.FilePath.new(config))
    return iox2.NodeBuilder.new().config(cfg).create(iox2.ServiceType.Ipc)


class _Iox2Stream(BytesChannel):
    """One end of an iceoryx2 pub/sub stream (a sender or a receiver)."""

    def __init__(self, config: str, service: str, job: Job, sending: bool,
                 event: bool) -> None:
        iox2 = _iox()
        self._node = _iox_node(config)
        name = iox2.ServiceName.new(service)
        self._svc = (self._node.service_builder(name)
                     .publish_subscribe(iox2.Slice[ctypes.c_uint8])
                     .enable_safe_overflow(False).subscriber_max_buffer_size(_DEPTH)
                     .max_publishers(1).max_subscribers(1).open_or_create())
        # iceoryx2 is untyped: its objects are Any, and None where unused.
        self._ev: Any = None
        self._notifier: Any = None
        self._listener: Any = None
        if event:
            self._ev = self._node.service_builder(
                iox2.ServiceName.new(service + "/ev")).event().open_or_create()
        self._pub: Any = None
        self._sub: Any = None
        if sending:
            self._pub = (self._svc.publisher_builder().initial_max_slice_len(job.size)
                         .backpressure_strategy(iox2.BackpressureStrategy.RetryUntilDelivered)
                         .create())
            if self._ev is not None:
                self._notifier = self._ev.notifier_builder().create()
            deadline = time.monotonic() + _CONNECT_S
            while self._svc.dynamic_config.number_of_subscribers < 1:
                if time.monotonic() > deadline:
                    raise TimeoutError("iceoryx2: no subscriber connected")
                time.sleep(0.001)
            self._pub.update_connections()
        else:
            self._sub = self._svc.subscriber_builder().buffer_size(_DEPTH).create()
            if self._ev is not None:
                self._listener = self._ev.listener_builder().create()
        self._sample: Any = None
        self._timeout = iox2.Duration.from_millis(100)

    def send(self, msg: Message) -> None:
        # Loan, fill in place, send: iceoryx2's zero-copy path.
        s = self._pub.loan_slice_uninit(len(msg))
        s.payload().as_memory_view().cast("B")[:] = msg
        s.assume_init().send()
        if self._notifier is not None:
            self._notifier.notify()

    def send_end(self) -> None:
        self._pub.loan_slice_uninit(0).assume_init().send()
        if self._notifier is not None:
            self._notifier.notify()

    def recv(self) -> Message | None:
        if self._sample is not None:
            self._sample.delete()  # the previous view is done with
        receive, listener = self._sub.receive, self._listener
        s = receive()
        while s is None:
            if listener is not None:
                listener.timed_wait(self._timeout)
            s = receive()
        self._sample = s
        view = s.payload().as_memory_view().cast("B")
        return view if len(view) else None

    def close(self) -> None:
        for port in (self._sample, self._pub, self._sub, self._notifier, self._listener):
            if port is not None:
                port.delete()
        # The node and its services go when the last reference does.
        self._svc = self._ev = self._node = None


class _Iox2Call(BytesChannel):
    """One end of an iceoryx2 request/response service, busy-polled."""

    def __init__(self, config: str, service: str, job: Job, client: bool) -> None:
        iox2 = _iox()
        self._node = _iox_node(config)
        rr = (self._node.service_builder(iox2.ServiceName.new(service))
              .request_response(iox2.Slice[ctypes.c_uint8], iox2.Slice[ctypes.c_uint8])
              .max_clients(1).max_servers(1).open_or_create())
        self._client: Any = None
        self._server: Any = None
        if client:
            self._client = rr.client_builder().initial_max_slice_len(job.size).create()
            deadline = time.monotonic() + _CONNECT_S
            while rr.dynamic_config.number_of_servers < 1:
                if time.monotonic() > deadline:
                    raise TimeoutError("iceoryx2: no server connected")
                time.sleep(0.001)
        else:
            self._server = rr.server_builder().initial_max_slice_len(job.size).create()
        self._held: Any = None

    def _release(self) -> None:
        if self._held is not None:
            self._held.delete()
            self._held = None

    def call(self, msg: Message) -> Message:
        self._release()
        req = self._client.loan_slice_uninit(len(msg))
        req.payload().as_memory_view().cast("B")[:] = msg
        pending = req.assume_init().send()
        resp = pending.receive()
        while resp is None:
            resp = pending.receive()
        pending.delete()
        self._held = resp
        view: memoryview = resp.payload().as_memory_view().cast("B")
        return view

    def send_end(self) -> None:
        req = self._client.loan_slice_uninit(0)
        req.assume_init().send().delete()

    def recv(self) -> Message | None:
        self._release()
        receive = self._server.receive
        active = receive()
        while active is None:
            active = receive()
        self._held = active
        view = active.payload().as_memory_view().cast("B")
        return view if len(view) else None

    def send(self, msg: Message) -> None:
        # The server's reply to the request recv() returned, in place.
        resp = self._held.loan_slice_uninit(len(msg))
        resp.payload().as_memory_view().cast("B")[:] = msg
        resp.assume_init().send()
        self._release()

    def close(self) -> None:
        self._release()
        for port in (self._client, self._server):
            if port is not None:
                port.delete()
        self._node = None


def _open_iox(end: tuple[str, str, bool], job: Job) -> Channel:
    config, role, event = end
    if job.kind == "rtt":
        return _Iox2Call(config, "bench", job, client=role == "guest")
    sender = "guest" if job.direction == "g2h" else "host"
    return _Iox2Stream(config, "bench", job, sending=role == sender, event=event)


class Iceoryx2(PeerTransport):
    """iceoryx2 publish-subscribe, busy-polled; request/response for rtt."""

    name = "iceoryx2-poll"
    event = False
    open_host = open_guest = staticmethod(_open_iox)

    def supports(self, what: str) -> bool:
        """Streams both ways; calls unless event-driven."""
        return what != "rtt" or not self.event

    @contextlib.contextmanager
    def endpoints(self, job: Job) -> Iterator[tuple[Any, Any]]:
        """A config file that gives the job a namespace of its own: a root
        directory and a /dev/shm prefix, both removed afterwards."""
        prefix = f"hgsmibench{secrets.token_hex(4)}_"
        with temp_dir("hgsmi-bench-iox2-") as root:
            config = os.path.join(root, "config.toml")
            with open(config, "w") as f:
                f.write(f'[global]\nroot-path = "{root}/"\nprefix = "{prefix}"\n')
            try:
                yield (config, "host", self.event), (config, "guest", self.event)
            finally:
                for entry in os.listdir("/dev/shm"):
                    if entry.startswith(prefix):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(os.path.join("/dev/shm", entry))


class Iceoryx2Event(Iceoryx2):
    """iceoryx2 publish-subscribe with an event listener to sleep on."""

    name = "iceoryx2-event"
    event = True


# -- faster-fifo ------------------------------------------------------------------

class _Peer(PeerTransport):
    """A peer of this module: streams both ways and calls."""

    def supports(self, what: str) -> bool:
        """True for "g2h", "h2g" and "rtt"."""
        return True


class _FifoChannel(BytesChannel):
    def __init__(self, tx: Any, rx: Any) -> None:
        self._tx, self._rx = tx, rx

    def send(self, msg: Message) -> None:
        self._tx.put(msg, timeout=_CONNECT_S)

    def send_end(self) -> None:
        self._tx.put(b"", timeout=_CONNECT_S)

    def recv(self) -> Message | None:
        msg: bytes = self._rx.get(timeout=_CONNECT_S)
        return msg if msg else None


class FasterFifo(QueueEachWay, _Peer):
    """``faster_fifo.Queue`` of bytes, one per direction."""

    name = "faster-fifo"

    def endpoints(self, job: Job) -> AbstractContextManager[tuple[Any, Any]]:
        from faster_fifo import Queue
        room = max(1 << 20, min(64 << 20, _DEPTH * (job.size + 64)))
        return one_each_way(_FifoChannel, lambda: Queue(room), lambda q: q.close())


# -- pyzmq -------------------------------------------------------------------------

class _ZmqChannel(Channel):
    """One end of a ZeroMQ PAIR (the exclusive one-to-one pattern); the host binds."""

    def __init__(self, addr: str, host: bool) -> None:
        import zmq
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PAIR)
        # Linger until the peer has everything: the child's alarm bounds it.
        self._sock.setsockopt(zmq.LINGER, -1)
        # No high-water mark: at its default of 1,000, a stream now and then
        # lost its tail here (libzmq 4.3, ipc) once the sender had blocked on
        # it.  A run sends for a bounded time, so the queue stays bounded.
        self._sock.setsockopt(zmq.SNDHWM, 0)
        self._sock.setsockopt(zmq.RCVHWM, 0)
        # A greeting each way before any data, so that nothing is queued on a
        # connection that is made before the host binds and then retried.
        if host:
            self._sock.bind(addr)
            self._greet(b"host")
        else:
            self._sock.connect(addr)
            self._greet(b"guest")

    def _greet(self, me: bytes) -> None:
        import zmq
        self._sock.send(me)
        if not self._sock.poll(int(_CONNECT_S * 1000), zmq.POLLIN):
            raise TimeoutError("pyzmq: the peer never connected")
        self._sock.recv()

    def send(self, msg: Message) -> None:
        if len(msg) < 65536:  # pyzmq's advice: copy small frames
            self._sock.send(msg)
        else:
            self._sock.send(msg, copy=False)

    def send_end(self) -> None:
        self._sock.send(b"")

    def recv(self) -> Message | None:
        # Received as bytes (pyzmq's default): with copy=False, a stream's
        # empty end frame was sometimes never seen here (pyzmq 27.3).
        msg: bytes = self._sock.recv()
        return msg if msg else None

    def close(self) -> None:
        self._sock.close()
        self._ctx.term()


def _open_zmq(end: tuple[str, bool], job: Job) -> Channel:
    return _ZmqChannel(*end)


class Pyzmq(_Peer):
    """A ZeroMQ PAIR socket over ipc://."""

    name = "pyzmq"
    open_host = open_guest = staticmethod(_open_zmq)

    @contextlib.contextmanager
    def endpoints(self, job: Job) -> Iterator[tuple[Any, Any]]:
        """The ipc:// address of a socket in a private directory."""
        with temp_dir("hgsmi-bench-zmq-") as d:
            addr = f"ipc://{d}/s"
            yield (addr, True), (addr, False)


def peers() -> list[PeerTransport]:
    """One instance of every peer whose package is installed, in table order."""
    missing = available()
    return [t for t in (Iceoryx2(), Iceoryx2Event(), FasterFifo(), Pyzmq())
            if t.name not in missing]


__all__ = ["Iceoryx2", "Iceoryx2Event", "FasterFifo", "Pyzmq", "available", "peers"]
