"""The host side of the blob protocol (:mod:`.blob_protocol`): a directory of verified files.

Each upload chunk is copied out of shared memory once and hashed and written
from that copy, so what is stored is what was hashed, however the guest
rewrites its buffer meanwhile.  Uploads and fetches count against the
guest's quotas (:mod:`hgsmi.services.quota`): an open file each, and a fetch also a
fetch, a stream and its read buffer.
"""
from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import stat
from collections.abc import Iterator
from typing import Any, BinaryIO, Protocol

from .._ratelog import RateLog
from ..errors import Busy, HgsmiError
from . import blob_protocol as blob
from .builtin import CH_BLOB, Streams
from .quota import Claim, Quotas

log = logging.getLogger("hgsmi.blob")


class _Upload:
    __slots__ = ("guest", "name", "tmp", "file", "sha", "received", "error", "claim")

    def __init__(self, guest: int, name: str, tmp: str, file: BinaryIO, claim: Claim) -> None:
        self.guest, self.name, self.tmp, self.file = guest, name, tmp, file
        self.sha = hashlib.sha256()
        self.received = 0
        self.error = ""
        self.claim = claim

    def discard(self) -> None:
        try:
            self.file.close()
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass
        finally:
            self.claim.release()


def write_all(f: BinaryIO, view: memoryview) -> None:
    while len(view):
        n = f.write(view)
        view = view[n:]


def keep_chunk(data: memoryview, n: int, sha: Any, f: BinaryIO) -> None:
    """Hash and write the ``n`` bytes after a chunk's header, read from shared memory once.

    Hashing and writing straight from the segment would let the peer change the
    bytes between the two: what is written would not be what was hashed.
    Raises OSError from the write.
    """
    with data[blob.CHUNK_HDR.size:blob.CHUNK_HDR.size + n] as shared:
        part = bytes(shared)
    sha.update(part)
    write_all(f, memoryview(part))


class ReadsInto(Protocol):
    """A binary file read with ``readinto``: ``open(path, "rb")``, ``io.BytesIO``..."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


def read_full(f: ReadsInto, view: memoryview) -> int:
    """Fill ``view`` from ``f`` until it is full or the file ends; bytes read."""
    got = 0
    while got < len(view):
        with view[got:] as rest:
            n = f.readinto(rest)
        if not n:
            break
        got += n
    return got


class BlobStore:
    """Serves channel 4: uploads into ``root``, fetches streamed back as host posts.

    ``quotas`` bounds what it holds for each guest (default: the default
    :class:`~hgsmi.quota.ServiceLimits`).
    """

    def __init__(self, root: str, streams: Streams, quotas: Quotas | None = None) -> None:
        self.root = root
        # a line per upload or fetch, which a guest can make as fast as it
        # likes: thinned per guest and kind (design §1)
        self._rlog = RateLog(log)
        self.streams = streams
        self.quotas = quotas or Quotas()
        self._uploads: dict[int, _Upload] = {}
        self._next_id = 1
        self.counts = {"stored": 0, "bytes_stored": 0, "fetched": 0, "bytes_fetched": 0,
                       "failed": 0}
        self._ops = {blob.BEGIN: self.begin, blob.CHUNK: self.chunk, blob.END: self.end,
                     blob.FETCH: self.fetch, blob.ABORT: self.abort}

    def __call__(self, msg: Any) -> Any:
        op = self._ops.get(msg.info)
        if op is None:
            raise HgsmiError(errno.EINVAL, f"blob: unknown operation {msg.info}")
        return op(msg)

    def _new_id(self) -> int:
        i = self._next_id
        self._next_id = i + 1 if i < 0xFFFFFFFF else 1
        return i

    # -- guest to host ------------------------------------------------------------
    def begin(self, msg: Any) -> bytes:
        data = msg.data
        if len(data) < blob.BEGIN_REQ.size:
            return blob.reply(blob.BEGIN_REP, errno.EINVAL, 0, message="short BEGIN")
        try:
            name = blob.decode_name(data[blob.BEGIN_REQ.size:])
        except ValueError as e:
            return blob.reply(blob.BEGIN_REP, errno.EINVAL, 0, message=str(e))
        guest = msg.peer.id
        try:
            claim = self.quotas.claim(guest, f"upload of {name}", files=1)
        except Busy as e:
            return blob.reply(blob.BEGIN_REP, errno.EBUSY, 0, message=str(e.strerror))
        tid = self._new_id()
        tmp = os.path.join(self.root, f".upload-{os.getpid()}-{tid}.part")
        try:
            f = open(tmp, "xb", buffering=0)
        except OSError as e:
            claim.release()
            return blob.reply(blob.BEGIN_REP, e.errno or errno.EIO, 0,
                              message=f"cannot create {tmp}: {e.strerror}")
        self._uploads[tid] = _Upload(guest, name, tmp, f, claim)
        return blob.reply(blob.BEGIN_REP, 0, tid)

    def chunk(self, msg: Any) -> None:
        data = msg.data
        if len(data) < blob.CHUNK_HDR.size:
            raise HgsmiError(errno.EINVAL, "blob: short CHUNK")
        tid, n, offset = blob.CHUNK_HDR.unpack_from(data)
        up = self._upload(tid, msg.peer.id)
        if up.error:
            raise HgsmiError(errno.EIO, f"blob: upload {tid} already failed")
        if n > len(data) - blob.CHUNK_HDR.size or offset != up.received:
            up.error = f"chunk at offset {offset} of {n} bytes, expected offset {up.received}"
            raise HgsmiError(errno.EINVAL, f"blob: {up.error}")
        try:
            keep_chunk(data, n, up.sha, up.file)
        except OSError as e:
            up.error = f"writing {up.name}: {e.strerror}"
            raise HgsmiError(e.errno or errno.EIO, f"blob: {up.error}") from None
        up.received += n
        return None

    def end(self, msg: Any) -> bytes:
        data = msg.data
        if len(data) < blob.END_REQ.size:
            return blob.reply(blob.END_REP, errno.EINVAL, 0, b"", message="short END")
        tid, _, size, digest = blob.END_REQ.unpack_from(data)
        try:
            up = self._upload(tid, msg.peer.id)
        except HgsmiError as e:
            return blob.reply(blob.END_REP, e.errno, 0, b"", message=e.strerror or "")
        del self._uploads[tid]
        mine = up.sha.digest()
        status, why = 0, ""
        if up.error:
            status, why = errno.EIO, up.error
        elif size != up.received:
            status, why = errno.EBADMSG, (f"size mismatch: the host received {up.received} "
                                          f"bytes, the guest sent {size}")
        elif digest != mine:
            status, why = errno.EBADMSG, "sha256 mismatch"
        if status:
            up.discard()
            self.counts["failed"] += 1
            self._rlog.log(up.guest, "upload failed", logging.WARNING,
                           "upload of %s from guest %d failed: %s", up.name, up.guest, why)
            return blob.reply(blob.END_REP, status, 0, mine, message=why)
        try:
            up.file.close()
            os.replace(up.tmp, os.path.join(self.root, up.name))
        except OSError as e:
            up.discard()
            self.counts["failed"] += 1
            return blob.reply(blob.END_REP, e.errno or errno.EIO, 0, mine,
                              message=f"storing {up.name}: {e.strerror}")
        up.claim.release()
        self.counts["stored"] += 1
        self.counts["bytes_stored"] += up.received
        self._rlog.log(up.guest, "stored", logging.INFO,
                       "stored %s: %d bytes from guest %d, sha256 %s",
                       up.name, up.received, up.guest, mine.hex()[:16])
        return blob.reply(blob.END_REP, 0, 0, mine)

    def abort(self, msg: Any) -> bytes:
        data = msg.data
        if len(data) < blob.ABORT_REQ.size:
            return blob.STATUS.pack(errno.EINVAL)
        (tid,) = blob.ABORT_REQ.unpack_from(data)
        up = self._uploads.get(tid)
        if up is None or up.guest != msg.peer.id:
            return blob.STATUS.pack(errno.ESRCH)
        del self._uploads[tid]
        up.discard()
        return blob.STATUS.pack(0)

    def _upload(self, tid: int, guest: int) -> _Upload:
        up = self._uploads.get(tid)
        if up is None or up.guest != guest:
            raise HgsmiError(errno.ESRCH, f"blob: no upload {tid} of guest {guest}")
        return up

    # -- host to guest ------------------------------------------------------------
    def fetch(self, msg: Any) -> bytes:
        try:
            name = blob.decode_name(msg.data)
        except ValueError as e:
            return blob.reply(blob.FETCH_REP, errno.EINVAL, 0, 0, message=str(e))
        path = os.path.join(self.root, name)
        chunk = post_chunk(msg.peer.stats()["host_heap"]["capacity"])
        # Claimed before anything is opened: a refused fetch costs the host nothing.
        try:
            claim = self.quotas.claim(msg.peer.id, f"fetch of {name}", fetches=1, files=1,
                                      streams=1, buffered=blob.CHUNK_HDR.size + chunk)
        except Busy as e:
            return blob.reply(blob.FETCH_REP, errno.EBUSY, 0, 0, message=str(e.strerror))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            claim.release()
            if e.errno == errno.ENOENT:
                return blob.reply(blob.FETCH_REP, errno.ENOENT, 0, 0,
                                  message=f"no blob {name!r}")
            return blob.reply(blob.FETCH_REP, e.errno or errno.EIO, 0, 0,
                              message=f"cannot open {name!r}: {e.strerror}")
        f = os.fdopen(fd, "rb", buffering=0)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            f.close()
            claim.release()
            return blob.reply(blob.FETCH_REP, errno.EINVAL, 0, 0,
                              message=f"{name!r} is not a regular file")
        claim.on_release(f.close)  # even if the stream ends before it first runs
        tid = self._new_id()
        self.streams.start(msg.peer, self._send(f, tid, chunk, name, msg.peer.id),
                           f"fetch of {name}", claim)
        return blob.reply(blob.FETCH_REP, 0, tid, st.st_size)

    def _send(self, f: io.FileIO, tid: int, chunk: int, name: str,
              guest: int) -> Iterator[tuple[int, int, Any]]:
        # The read buffer (counted in the guest's max_buffered) is made when the
        # stream first runs, and a file is read a chunk at a time, never whole.
        hdr = blob.CHUNK_HDR.size
        buf = bytearray(hdr + chunk)
        view = memoryview(buf)
        body = view[hdr:]
        sha = hashlib.sha256()
        offset, status, why = 0, 0, ""
        try:
            while True:
                try:
                    n = read_full(f, body)
                except OSError as e:
                    status, why = e.errno or errno.EIO, f"reading {name}: {e.strerror}"
                    break
                if not n:
                    break
                with body[:n] as part:
                    sha.update(part)
                blob.CHUNK_HDR.pack_into(buf, 0, tid, n, offset)
                yield CH_BLOB, blob.FCHUNK, view[:hdr + n]
                offset += n
        finally:
            f.close()
        yield CH_BLOB, blob.FEND, blob.reply(blob.FEND_MSG, tid, status, offset,
                                             sha.digest(), message=why)
        self.counts["fetched"] += 1
        self.counts["bytes_fetched"] += offset
        self._rlog.log(guest, "sent", logging.INFO, "sent %s: %d bytes to guest %d",
                       name, offset, guest)

    # -- housekeeping -------------------------------------------------------------
    def reap(self, live: set[int]) -> None:
        """Discard the uploads of guests that are gone (and their log records)."""
        for tid, up in list(self._uploads.items()):
            if up.guest not in live:
                del self._uploads[tid]
                up.discard()
                self.counts["failed"] += 1
                self._rlog.log(up.guest, "discarded", logging.INFO,
                               "upload of %s discarded: guest %d gone", up.name, up.guest)
        self._rlog.keep_only(live)

    def close(self) -> None:
        self.reap(set())

    def stats(self) -> dict[str, Any]:
        return {"dir": self.root, "uploads": len(self._uploads), **self.counts,
                "busy": self.quotas.refused}


def post_chunk(heap_capacity: int) -> int:
    """Payload bytes per host post: a quarter of the host heap, 4 KiB to 1 MiB."""
    return max(4096, min(1 << 20, heap_capacity // 4) & ~4095) - blob.CHUNK_HDR.size
