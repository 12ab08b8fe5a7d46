"""The host's built-in services, on by default in the reserved channel range.

    channel  service  what it does
    -------  -------  -----------------------------------------------------------
    1        setup    QUERY_CONF and host flags; served by the C core itself
    2        echo     the reply is the request, left in place (zero copy)
    3        sink     info 0 (DATA): discarded and counted, empty reply;
                      info 1 (SOURCE, <d seconds><I size>): the host posts DATA
                      messages of ``size`` bytes to the guest on this channel for
                      ``seconds``, then one END (info 2, <Q msgs><Q bytes>)
    4        blob     store and fetch files: see :mod:`hgsmi.services.blob_protocol`
    5-15     (reserved for future built-ins)

Also here: :class:`Counters` (messages and bytes per channel, per guest and
in total) and :class:`Streams` (host-to-guest posts paced by the room in
each guest's host heap and FIFO, so a slow guest never stalls the others).

A guest can rewrite its buffer while a handler reads it, so every service
here reads each field of a request from shared memory once, into private
memory, and checks and uses only that copy.  What a service holds for a
guest past the request (open files, streams, buffers) is counted against
that guest's quotas (:mod:`hgsmi.services.quota`); past one, the request is refused
at once with EBUSY and nothing more is held.
"""
from __future__ import annotations

import errno
import logging
import os
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

from .._ratelog import RateLog

# The service channels, re-exported: blobstore, client, daemon and tests take them from here.
from .._wire import (
    CH_BLOB as CH_BLOB,
    CH_ECHO as CH_ECHO,
    CH_SETUP as CH_SETUP,
    CH_SINK as CH_SINK,
)
from ..errors import Busy
from .quota import Claim, Quotas

log = logging.getLogger("hgsmi.services")

SINK_DATA, SINK_SOURCE, SINK_END = 0, 1, 2
SOURCE_REQ = struct.Struct("<dI")
SOURCE_END = struct.Struct("<QQ")
STATUS = struct.Struct("<i")

Item = tuple[int, int, Any]  # (channel, info, bytes-like)


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
        names = ("msgs_in", "bytes_in", "msgs_out", "bytes_out")
        return {str(ch): dict(zip(names, row, strict=True)) for ch, row in sorted(table.items())}


class _Stream:
    __slots__ = ("conn", "items", "pending", "what", "claim")

    def __init__(self, conn: Any, items: Iterator[Item], what: str,
                 claim: Claim | None) -> None:
        self.conn, self.items, self.what = conn, items, what
        self.pending: Item | None = None
        self.claim = claim


_MORE, _BLOCKED, _DONE = 0, 1, 2
#: what try_post returns while the guest's host heap or FIFO is full
_NO_ROOM = (-errno.ENOMEM, -errno.EAGAIN)


class Streams:
    """Host-to-guest streams: each posts while its guest's heap and FIFO have room.

    An item is ``(channel, info, data)``; ``data`` may be reused by the
    iterator once the next item is asked for (the post has copied it).

    A stream whose guest has no room is parked with the others of that
    guest, off the active list, until the guest's acks free some: a guest
    that stops acking (SIGSTOP) costs one O(1) check a round, however many
    streams it has, and no exception.  A stream ends when its items do, or
    its guest goes; then its claim (:mod:`hgsmi.services.quota`) is given back.
    """

    def __init__(self, counters: Counters, per_round: int = 16) -> None:
        self.counters = counters
        self.per_round = per_round
        self._active: list[_Stream] = []
        # guest id -> [conn, its unacked posts when a stream last found no room, streams]
        self._blocked: dict[int, list[Any]] = {}
        # lines a guest's streams trigger, thinned per guest and kind (design §1)
        self._rlog = RateLog(log)

    def __len__(self) -> int:
        return len(self._active) + sum(len(b[2]) for b in self._blocked.values())

    def start(self, conn: Any, items: Iterator[Item], what: str = "stream",
              claim: Claim | None = None) -> None:
        """Stream ``items`` to ``conn``; ``claim`` is released when the stream ends."""
        self._active.append(_Stream(conn, items, what, claim))

    def pump(self) -> bool:
        """Post what fits, round robin.  True if some stream could go on at once."""
        if self._blocked:
            self._wake()
        active = self._active
        if not active:
            return False
        self._active = still = []
        for s in active:
            state = self._pump_one(s)
            if state == _MORE:
                still.append(s)
            elif state == _BLOCKED:
                self._park(s)
            else:
                self._finish(s)
        return bool(still)

    def _wake(self) -> None:
        """Back to the active list: the streams of guests whose acks made room."""
        for gid, entry in list(self._blocked.items()):
            conn, mark, streams = entry
            if not conn.alive:
                del self._blocked[gid]
                for s in streams:
                    self._rlog.log(gid, "gone", logging.INFO,
                                   "%s to guest %d dropped: guest gone", s.what, gid)
                    self._finish(s)
            elif mark == 0 or conn.unacked() < mark:
                # mark 0: no room with nothing unacked, so no ack will come to
                # say when; such a guest's streams look again every round.
                del self._blocked[gid]
                self._active.extend(streams)

    def _park(self, s: _Stream) -> None:
        mark = s.conn.unacked()
        entry = self._blocked.get(s.conn.id)
        if entry is None:
            self._blocked[s.conn.id] = [s.conn, mark, [s]]
        else:
            entry[1] = mark  # the latest failure: any ack after it makes room
            entry[2].append(s)

    def _pump_one(self, s: _Stream) -> int:
        for _ in range(self.per_round):
            if s.pending is None:
                try:
                    s.pending = next(s.items)
                except StopIteration:
                    return _DONE
                except Exception as e:
                    self._rlog.log(s.conn.id, "failed", logging.ERROR, "%s to guest %d failed",
                                   s.what, s.conn.id, exc_info=e)
                    return _DONE
            channel, info, data = s.pending
            try:
                rc = s.conn.try_post(channel, info, data)
            except (TypeError, ValueError) as e:
                self._rlog.log(s.conn.id, "failed", logging.ERROR, "%s to guest %d failed",
                               s.what, s.conn.id, exc_info=e)
                return _DONE
            if rc < 0:
                if rc in _NO_ROOM:
                    return _BLOCKED  # the guest's acks will make room
                if rc == -errno.EPIPE:
                    self._rlog.log(s.conn.id, "gone", logging.INFO,
                                   "%s to guest %d dropped: guest gone", s.what, s.conn.id)
                else:
                    self._rlog.log(s.conn.id, "failed", logging.WARNING,
                                   "%s to guest %d failed: %s", s.what, s.conn.id,
                                   os.strerror(-rc))
                return _DONE
            self.counters.posted(s.conn.id, channel, len(data))
            s.pending = None
        return _MORE

    def _finish(self, s: _Stream) -> None:
        s.pending = None
        close = getattr(s.items, "close", None)
        try:
            if close:
                close()  # generators: run their finally blocks (close files)
        finally:
            if s.claim is not None:
                s.claim.release()

    def reap(self, live: set[int]) -> None:
        """End at once the streams of guests that are gone (and their log records)."""
        self._rlog.keep_only(live)
        gone = [s for s in self._active if s.conn.id not in live]
        if gone:
            self._active = [s for s in self._active if s.conn.id in live]
        for gid in [g for g in self._blocked if g not in live]:
            gone += self._blocked.pop(gid)[2]
        for s in gone:
            self._finish(s)

    def close(self) -> None:
        """End every stream."""
        self.reap(set())


def echo(msg: Any) -> None:
    """Echo: the request stays in place and is the reply."""
    return None


class Sink:
    """Discard and count (the counting is :class:`Counters`'); also a load source.

    A load source is a stream of the guest's (``max_streams``) and holds its
    payload, ``size`` bytes, for it (``max_buffered``); past either the
    request is refused with EBUSY.
    """

    MAX_SECONDS = 3600.0

    def __init__(self, streams: Streams, quotas: Quotas | None = None) -> None:
        self.streams = streams
        self.quotas = quotas or Quotas()

    def __call__(self, msg: Any) -> bytes:
        if msg.info != SINK_SOURCE:
            return b""  # DATA: only its length (the host's own copy) is used
        data = msg.data
        if len(data) < SOURCE_REQ.size:
            return STATUS.pack(errno.EINVAL) + b"short SOURCE request"
        seconds, size = SOURCE_REQ.unpack_from(data)  # the one read of the request
        room = msg.peer.stats()["host_heap"]["capacity"] // 4
        if not (0 < seconds <= self.MAX_SECONDS) or not (0 < size <= room):
            return STATUS.pack(errno.EINVAL) + (
                f"SOURCE wants 0 < seconds <= {self.MAX_SECONDS:g} and "
                f"0 < size <= {room}").encode()
        try:
            claim = self.quotas.claim(msg.peer.id, "load source", streams=1, buffered=size)
        except Busy as e:
            return STATUS.pack(errno.EBUSY) + str(e.strerror).encode()
        self.streams.start(msg.peer, self._source(seconds, size), "load source", claim)
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
