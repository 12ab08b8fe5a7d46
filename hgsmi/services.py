"""The host's built-in services, on by default in the reserved channel range.

    channel  service  what it does
    -------  -------  -----------------------------------------------------------
    1        setup    QUERY_CONF and host flags; served by the C core itself
    2        echo     the reply is the request, left in place (zero copy)
    3        sink     info 0 (DATA): discarded and counted, empty reply;
                      info 1 (SOURCE, <d seconds><I size>): the host posts DATA
                      messages of ``size`` bytes to the guest on this channel for
                      ``seconds``, then one END (info 2, <Q msgs><Q bytes>)
    4        blob     store and fetch files: see :mod:`hgsmi.blob`
    5-15     (reserved for future built-ins)

Also here: :class:`Counters` (messages and bytes per channel, per guest and
in total) and :class:`Streams` (host-to-guest posts paced by the room in
each guest's host heap and FIFO, so a slow guest never stalls the others).
"""
from __future__ import annotations

import errno
import logging
import struct
import time
from typing import Any, Callable, Iterator

from .errors import HeapExhausted, HgsmiError, PeerGone, RingFull

log = logging.getLogger("hgsmi.services")

CH_SETUP, CH_ECHO, CH_SINK, CH_BLOB = 1, 2, 3, 4

SINK_DATA, SINK_SOURCE, SINK_END = 0, 1, 2
SOURCE_REQ = struct.Struct("<dI")
SOURCE_END = struct.Struct("<QQ")
STATUS = struct.Struct("<i")

Item = tuple  # (channel, info, bytes-like)


class Counters:
    """Messages and bytes per channel, in (to the host) and out (posted), per guest and total."""

    def __init__(self) -> None:
        self.total: dict[int, list[int]] = {}
        self.by_guest: dict[int, dict[int, list[int]]] = {}

    def _row(self, guest: int | None, channel: int) -> list[int]:
        table = self.total if guest is None else self.by_guest.setdefault(guest, {})
        row = table.get(channel)
        if row is None:
            row = table[channel] = [0, 0, 0, 0]
        return row

    def wrap(self, channel: int, handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """``handler`` counting every message it is given."""
        total = self._row(None, channel)
        row_of = self._row

        def counted(msg: Any) -> Any:
            n = len(msg.data)
            total[0] += 1
            total[1] += n
            row = row_of(msg.peer.id, channel)
            row[0] += 1
            row[1] += n
            return handler(msg)
        return counted

    def posted(self, guest: int, channel: int, nbytes: int) -> None:
        for row in (self._row(None, channel), self._row(guest, channel)):
            row[2] += 1
            row[3] += nbytes

    def forget(self, guest: int) -> None:
        self.by_guest.pop(guest, None)

    @staticmethod
    def as_dict(table: dict[int, list[int]]) -> dict[str, dict[str, int]]:
        return {str(ch): dict(zip(("msgs_in", "bytes_in", "msgs_out", "bytes_out"), row))
                for ch, row in sorted(table.items())}


class _Stream:
    __slots__ = ("conn", "items", "pending", "what")

    def __init__(self, conn: Any, items: Iterator[Item], what: str) -> None:
        self.conn, self.items, self.pending, self.what = conn, items, None, what


class Streams:
    """Host-to-guest streams: each posts while its guest's heap and FIFO have room.

    An item is ``(channel, info, data)``; ``data`` may be reused by the
    iterator once the next item is asked for (the post has copied it).
    """

    def __init__(self, counters: Counters, per_round: int = 16) -> None:
        self.counters = counters
        self.per_round = per_round
        self._streams: list[_Stream] = []

    def __len__(self) -> int:
        return len(self._streams)

    def start(self, conn: Any, items: Iterator[Item], what: str = "stream") -> None:
        self._streams.append(_Stream(conn, items, what))

    def pump(self) -> bool:
        """Post what fits, round robin.  True if some stream could go on at once."""
        more = False
        for s in list(self._streams):
            state = self._pump_one(s)
            if state == "done":
                self._drop(s)
            elif state == "more":
                more = True
        return more

    def _pump_one(self, s: _Stream) -> str:
        for _ in range(self.per_round):
            if s.pending is None:
                try:
                    s.pending = next(s.items)
                except StopIteration:
                    return "done"
                except Exception:
                    log.exception("%s to guest %d failed", s.what, s.conn.id)
                    return "done"
            channel, info, data = s.pending
            try:
                s.conn.post(channel, info, data, timeout=0)
            except (HeapExhausted, RingFull):
                return "blocked"  # the guest's acks will make room
            except PeerGone:
                log.info("%s to guest %d dropped: guest gone", s.what, s.conn.id)
                return "done"
            except HgsmiError as e:
                log.warning("%s to guest %d failed: %s", s.what, s.conn.id, e.strerror)
                return "done"
            self.counters.posted(s.conn.id, channel, len(data))
            s.pending = None
        return "more"

    def _drop(self, s: _Stream) -> None:
        self._streams.remove(s)
        s.pending = None
        close = getattr(s.items, "close", None)
        if close:
            close()  # generators: run their finally blocks (close files)

    def close(self) -> None:
        for s in list(self._streams):
            self._drop(s)


def echo(msg: Any) -> None:
    """Echo: the request stays in place and is the reply."""
    return None


class Sink:
    """Discard and count (the counting is :class:`Counters`'); also a load source."""

    MAX_SECONDS = 3600.0

    def __init__(self, streams: Streams) -> None:
        self.streams = streams

    def __call__(self, msg: Any) -> bytes:
        if msg.info != SINK_SOURCE:
            return b""
        data = msg.data
        if len(data) < SOURCE_REQ.size:
            return STATUS.pack(errno.EINVAL) + b"short SOURCE request"
        seconds, size = SOURCE_REQ.unpack_from(data)
        room = msg.peer.stats()["host_heap"]["capacity"] // 4
        if not (0 < seconds <= self.MAX_SECONDS) or not (0 < size <= room):
            return STATUS.pack(errno.EINVAL) + (
                f"SOURCE wants 0 < seconds <= {self.MAX_SECONDS:g} and "
                f"0 < size <= {room}").encode()
        self.streams.start(msg.peer, self._source(seconds, size), "load source")
        return STATUS.pack(0)

    @staticmethod
    def _source(seconds: float, size: int) -> Iterator[Item]:
        payload = bytes(size)
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            yield CH_SINK, SINK_DATA, payload
            n += 1
        yield CH_SINK, SINK_END, SOURCE_END.pack(n, n * size)
