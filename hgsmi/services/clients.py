"""Guest-side workloads: blob send and fetch, echo round trips, the load generator.

Each returns a plain result dict and reports progress through an optional
``progress(done, total)`` callback; printing is the CLI's business.
"""
from __future__ import annotations

import errno
import hashlib
import time
import weakref
from collections.abc import Callable
from typing import Any, BinaryIO

from .._wire import CONF_MAX_INFLIGHT, CONF_MAX_MESSAGE
from ..errors import Busy, HeapExhausted, HgsmiError, MessageTooLarge, ProtocolError, Timeout
from . import blob_protocol as blob
from .blob_store import ReadsInto, keep_chunk, read_full
from .builtin import (
    CH_BLOB,
    CH_ECHO,
    CH_SINK,
    SINK_DATA,
    SINK_END,
    SINK_SOURCE,
    SOURCE_END,
    SOURCE_REQ,
    STATUS,
)

Progress = Callable[[int, "int | None"], None]

STALL_SECONDS = 30.0  #: no progress for this long: the host is stuck


def chunk_size(max_message: int) -> int:
    """Payload bytes per upload buffer: a quarter of the largest message, 4 KiB to 1 MiB."""
    return max(4096, min(1 << 20, max_message // 4) & ~4095) - blob.CHUNK_HDR.size


class _Fetch:
    __slots__ = ("out", "size", "sha", "received", "done", "status", "digest", "message")

    def __init__(self, out: BinaryIO, size: int) -> None:
        self.out, self.size = out, size
        self.sha = hashlib.sha256()
        self.received = 0
        self.done = False
        self.status, self.digest, self.message = 0, b"", ""


class BlobClient:
    """Send files to a host's blob store and fetch them back; one per :class:`Guest`."""

    def __init__(self, guest: Any) -> None:
        self.guest = guest
        self.chunk = chunk_size(guest.query_conf(CONF_MAX_MESSAGE))
        self.window = max(1, min(32, guest.query_conf(CONF_MAX_INFLIGHT)))
        self._fetches: dict[int, _Fetch] = {}
        guest.register(CH_BLOB, self._on_host)

    def send(self, src: ReadsInto, name: str, size: int | None = None,
             progress: Progress | None = None) -> dict[str, Any]:
        """Stream ``src`` (a raw binary file) to the blob ``name``; verified.

        Returns ``{name, bytes, sha256, seconds}``.  Raises :class:`BlobError`
        (:class:`DigestMismatch` if the host computed another digest).
        """
        g = self.guest
        blob.check_name(name)
        t0 = time.perf_counter()
        req = blob.BEGIN_REQ.pack(blob.UNKNOWN_SIZE if size is None else size) + name.encode()
        status, tid, why = blob.parse(blob.BEGIN_REP,
                                      g.call(CH_BLOB, blob.BEGIN, req, blob.REPLY_MAX))
        if status:
            raise blob.failure(status, f"host refused {name!r}: {why}")
        sha = hashlib.sha256()
        sent = done = 0
        eof = False
        inflight = 0
        failed: HgsmiError | None = None
        stall = time.monotonic()
        try:
            while not eof or inflight:
                while not eof and failed is None and inflight < self.window:
                    try:
                        buf = g.alloc(CH_BLOB, blob.CHUNK, blob.CHUNK_HDR.size + self.chunk)
                    except HeapExhausted:
                        if not inflight:
                            raise
                        break
                    n = self._fill(buf, src, tid, sent, sha)
                    if not n:
                        buf.free()
                        eof = True
                        break
                    g.submit(buf)
                    inflight += 1
                    sent += n
                    eof = n < self.chunk
                if not inflight:
                    continue
                for b in g.completions(timeout=1.0):
                    inflight -= 1
                    if b.status < 0 and failed is None:
                        failed = HgsmiError(-b.status, "a chunk failed on the host")
                        eof = True
                    done += b.size - blob.CHUNK_HDR.size
                    b.free()
                    stall = time.monotonic()
                if time.monotonic() - stall > STALL_SECONDS:
                    raise Timeout(errno.ETIMEDOUT, f"sending {name!r}: the host stopped answering")
                if progress:
                    progress(min(done, sent), size)
        except BaseException:
            self._abort(tid)
            raise
        req = blob.END_REQ.pack(tid, 0, sent, sha.digest())
        status, _, host_digest, why = blob.parse(blob.END_REP,
                                                 g.call(CH_BLOB, blob.END, req, blob.REPLY_MAX))
        if status:
            raise blob.failure(status, f"sending {name!r}: {why}")
        if host_digest != sha.digest():  # the host said yes but computed something else
            raise blob.DigestMismatch(errno.EBADMSG, f"sending {name!r}: sha256 mismatch")
        return {"name": name, "bytes": sent, "sha256": sha.hexdigest(),
                "seconds": time.perf_counter() - t0}

    def _fill(self, buf: Any, src: ReadsInto, tid: int, offset: int, sha: Any) -> int:
        hdr = blob.CHUNK_HDR.size
        view = buf.data
        with view[hdr:] as body:
            n = read_full(src, body)
            with body[:n] as part:
                sha.update(part)
        blob.CHUNK_HDR.pack_into(view, 0, tid, n, offset)
        del view
        return n

    def _abort(self, tid: int) -> None:
        try:
            self.guest.call(CH_BLOB, blob.ABORT, blob.ABORT_REQ.pack(tid), 64, timeout=2.0)
        except (HgsmiError, OSError):
            pass

    def fetch(self, name: str, dst: BinaryIO, progress: Progress | None = None) -> dict[str, Any]:
        """Get the blob ``name`` from the host into ``dst`` (a raw binary file); verified.

        The host streams it through its FIFO and the IRQ.  Returns ``{name,
        bytes, sha256, seconds}``; raises :class:`BlobError` /
        :class:`DigestMismatch`, and :class:`~hgsmi.blob.BlobBusy` (a
        :class:`Busy`) when this guest already holds its quota of fetches,
        streams, open files or host buffers.
        """
        g = self.guest
        blob.check_name(name)
        t0 = time.perf_counter()
        status, tid, size, why = blob.parse(
            blob.FETCH_REP, g.call(CH_BLOB, blob.FETCH, name.encode(), blob.REPLY_MAX))
        if status:
            raise blob.failure(status, why)
        st = self._fetches[tid] = _Fetch(dst, size)
        try:
            stall, seen = time.monotonic(), -1
            while not st.done:
                g.poll(0.5)
                if st.received != seen:
                    seen, stall = st.received, time.monotonic()
                    if progress:
                        progress(st.received, size)
                elif time.monotonic() - stall > STALL_SECONDS:
                    raise Timeout(errno.ETIMEDOUT, f"fetching {name!r}: the host stopped sending")
        finally:
            self._fetches.pop(tid, None)
        if st.status:
            raise blob.failure(st.status, f"fetching {name!r}: {st.message}")
        if st.received != st.size or st.sha.digest() != st.digest:
            raise blob.DigestMismatch(errno.EBADMSG,
                                      f"fetching {name!r}: sha256 mismatch "
                                      f"({st.received} bytes received, host sent {st.size})")
        return {"name": name, "bytes": st.received, "sha256": st.sha.hexdigest(),
                "seconds": time.perf_counter() - t0}

    def _on_host(self, msg: Any) -> None:
        # Never raise here: record the problem in the transfer instead.
        data = msg.data
        if msg.info == blob.FCHUNK and len(data) >= blob.CHUNK_HDR.size:
            tid, n, offset = blob.CHUNK_HDR.unpack_from(data)
            st = self._fetches.get(tid)
            if st is None or st.done:
                return None
            if offset != st.received or n > len(data) - blob.CHUNK_HDR.size:
                st.done, st.status, st.message = True, errno.EPROTO, "chunk out of order"
                return None
            try:
                keep_chunk(data, n, st.sha, st.out)
            except OSError as e:
                st.done, st.status, st.message = True, e.errno or errno.EIO, str(e)
                return None
            st.received += n
        elif msg.info == blob.FEND and len(data) >= blob.FEND_MSG.size:
            tid, status, size, digest, why = blob.parse(blob.FEND_MSG, data)
            st = self._fetches.get(tid)
            if st is not None and not st.done:
                st.done, st.status, st.size, st.digest, st.message = (
                    True, status, size, digest, why)
        return None


def percentiles(samples: list[float], points: tuple[float, ...] = (50, 90, 99)) -> dict[str, float]:
    """Nearest-rank percentiles (``p50``...) plus ``min`` and ``max``."""
    s = sorted(samples)
    out = {f"p{p:g}": s[min(len(s) - 1, max(0, int(len(s) * p / 100 + 0.5) - 1))]
           for p in points}
    out["min"], out["max"] = s[0], s[-1]
    return out


def echo(guest: Any, count: int = 1000, size: int = 64,
         progress: Progress | None = None) -> dict[str, Any]:
    """``count`` round trips of ``size`` bytes on the echo channel; latencies in µs."""
    if count < 1 or size < 0:
        raise ValueError("echo needs count >= 1 and size >= 0")
    largest = guest.query_conf(CONF_MAX_MESSAGE)  # before building the payload
    if size > largest:
        raise MessageTooLarge(errno.EMSGSIZE, f"echo: {size} bytes is more than the host's "
                                              f"largest message, {largest} bytes")
    payload = (bytes(range(256)) * (size // 256 + 1))[:size]
    for _ in range(min(count, 10)):  # warm up: caches, page faults
        guest.call(CH_ECHO, 0, payload)
    lat = []
    clock = time.perf_counter_ns
    t0 = time.perf_counter()
    for i in range(count):
        t = clock()
        reply = guest.call(CH_ECHO, 0, payload)
        lat.append((clock() - t) / 1000)
        if reply != payload:
            raise ProtocolError(errno.EPROTO, f"echo {i}: the reply differs from the request")
        if progress and i % 256 == 0:
            progress(i, count)
    elapsed = time.perf_counter() - t0
    return {"count": count, "size": size, "seconds": elapsed, "calls_per_s": count / elapsed,
            "latency_us": percentiles(lat)}


class _SinkCounter:
    __slots__ = ("msgs", "bytes", "end")

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.msgs = self.bytes = 0
        self.end: tuple[int, int] | None = None

    def __call__(self, msg: Any) -> None:
        if msg.info == SINK_END:
            if len(msg.data) >= SOURCE_END.size:
                self.end = SOURCE_END.unpack_from(msg.data)
        else:
            self.msgs += 1
            self.bytes += len(msg.data)


_SINK_COUNTERS: weakref.WeakKeyDictionary[Any, _SinkCounter] = weakref.WeakKeyDictionary()


def load(guest: Any, seconds: float = 3.0, size: int = 64 << 10, direction: str = "both",
         tick: Callable[[dict[str, Any]], None] | None = None,
         interval: float = 0.5) -> dict[str, Any]:
    """Move data as fast as it goes for ``seconds``: to the sink, from the host, or both.

    ``tick(result_so_far)`` is called every ``interval``.  Returns ``{seconds,
    size, direction, g2h: {msgs, bytes}, h2g: {msgs, bytes}}``.  Raises
    :class:`Busy` if the host refuses the load source because this guest
    holds its quota of streams or host buffers, :class:`HgsmiError` if it
    refuses it otherwise.
    """
    if direction not in ("g2h", "h2g", "both"):
        raise ValueError(f"direction must be g2h, h2g or both, not {direction!r}")
    if seconds <= 0 or size <= 0:
        raise ValueError("load needs seconds > 0 and size > 0")
    g2h, h2g = direction in ("g2h", "both"), direction in ("h2g", "both")
    counter = _SINK_COUNTERS.get(guest)
    if counter is None:
        counter = _SINK_COUNTERS[guest] = _SinkCounter()
        guest.register(CH_SINK, counter)  # once per guest: the C core keeps the channel
    counter.reset()
    if h2g:
        rep = guest.call(CH_SINK, SINK_SOURCE, SOURCE_REQ.pack(seconds, size), 512)
        (status,) = STATUS.unpack_from(rep)
        if status:
            cls = Busy if status == errno.EBUSY else HgsmiError
            raise cls(status, f"host refused the load source: "
                              f"{rep[STATUS.size:].decode('utf-8', 'replace')}")
    batch = [bytes(size)] * 16
    base = guest.stats()
    t0 = time.monotonic()
    end = t0 + seconds
    next_tick = t0 + interval
    result: dict[str, Any] = {}

    def snapshot(now: float) -> dict[str, Any]:
        st = guest.stats()
        sent = {"msgs": st["msgs_out"] - base["msgs_out"],
                "bytes": st["bytes_out"] - base["bytes_out"]}
        result.update(seconds=now - t0, size=size, direction=direction,
                      g2h=sent if g2h else {"msgs": 0, "bytes": 0},
                      h2g={"msgs": counter.msgs, "bytes": counter.bytes})
        return result

    while True:
        now = time.monotonic()
        sending = g2h and now < end
        if not sending and (not h2g or counter.end is not None):
            break
        if now > end + STALL_SECONDS:
            raise Timeout(errno.ETIMEDOUT, "load: the host's source never finished")
        moved = 0
        if sending:
            try:
                moved += guest.send_many(CH_SINK, SINK_DATA, batch, timeout=0)
            except Timeout:
                pass
        if h2g:
            moved += guest.poll(0)
        if not moved:
            guest.wait(0.01)
        if tick and now >= next_tick:
            next_tick = now + interval
            tick(snapshot(now))
    # Let the last fire-and-forget messages come back before counting.
    deadline = time.monotonic() + 5.0
    while guest.stats()["inflight"] and time.monotonic() < deadline:
        guest.wait(0.01)
    out = snapshot(min(time.monotonic(), end) if not h2g else time.monotonic())
    if h2g and counter.end is not None and counter.end != (counter.msgs, counter.bytes):
        raise ProtocolError(errno.EPROTO, f"load: the host sent {counter.end[0]} messages, "
                                          f"{counter.msgs} arrived")
    return out
