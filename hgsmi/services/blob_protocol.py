"""The blob protocol: files streamed through the heaps on channel 4 (``CH_BLOB``).

A file moves in chunks, each one buffer, so files of any size pass through a
heap of any size.  Flow control is the heaps themselves: a sender posts only
while its heap has room and waits for completions (guest to host) or acks
(host to guest) to free it.  Both ends hash what they move with SHA-256 and
compare at the end.

Guest to host (``info`` is the operation; replies come back in place)::

    info op     request data                         reply
    ---- ------ ------------------------------------ ---------------------------------
    1    BEGIN  <Q size|UNKNOWN_SIZE> name           <i status><I id> [message]
    2    CHUNK  <I id><I n><Q offset> n bytes        (none: only the buffer status)
    3    END    <I id><I 0><Q size> sha256[32]       <i status><I 0> sha256[32] [message]
    4    FETCH  name                                 <i status><I id><Q size> [message]
    5    ABORT  <I id>                               <i status>

Host to guest (posts through the host FIFO and the IRQ; the guest acks)::

    info op     data
    ---- ------ ---------------------------------------------
    16   FCHUNK <I id><I n><Q offset> n bytes
    17   FEND   <I id><i status><Q size> sha256[32] [message]

All integers are little-endian.  ``status`` is 0 or a positive errno value
(``EINVAL`` bad name or request, ``ENOENT`` no such blob, ``ESRCH`` unknown
transfer id, ``EBADMSG`` digest mismatch, ``EIO``/``ENOSPC`` storage
failures, ``EBUSY`` the guest holds its quota of transfers, files, streams
or host buffers: see :mod:`hgsmi.services.quota`); ``message`` is UTF-8 text saying why.

An upload is written to a hidden temporary file in the store and renamed to
its name only when END's size and digest match what the host received, so a
stored name is always a complete, verified file.  A CHUNK that cannot be
written fails its buffer and marks the transfer failed; END then reports why.

Names are single path components: 1 to 255 UTF-8 bytes, no ``/``, ``\\``,
NUL or control characters, and not starting with ``.`` (which also rules out
``.`` and ``..``).  Uploads of a guest that goes away are discarded.
"""
from __future__ import annotations

import errno
import struct
from typing import Any

from ..errors import Busy, HgsmiError

BEGIN, CHUNK, END, FETCH, ABORT = 1, 2, 3, 4, 5
FCHUNK, FEND = 16, 17

UNKNOWN_SIZE = 2**64 - 1  #: BEGIN size when the sender does not know it (a pipe)

CHUNK_HDR = struct.Struct("<IIQ")  #: id, n, offset (CHUNK and FCHUNK); 16 bytes
BEGIN_REQ = struct.Struct("<Q")
BEGIN_REP = struct.Struct("<iI")
END_REQ = struct.Struct("<IIQ32s")
END_REP = struct.Struct("<iI32s")
FETCH_REP = struct.Struct("<iIQ")
ABORT_REQ = struct.Struct("<I")
STATUS = struct.Struct("<i")
FEND_MSG = struct.Struct("<IiQ32s")

REPLY_MAX = 512  #: reply room a guest leaves for any blob call
MAX_NAME = 255


class BlobError(HgsmiError):
    """The other end refused or failed a blob transfer."""


class DigestMismatch(BlobError):
    """Both ends moved the same transfer but computed different SHA-256 digests."""


class BlobBusy(BlobError, Busy):
    """The host refused the transfer at once: this guest holds its quota (EBUSY)."""


def check_name(name: str) -> str:
    """Return ``name`` if it is a safe blob name, else raise ``ValueError``."""
    if not isinstance(name, str) or not name:
        raise ValueError("blob name must be a non-empty string")
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > MAX_NAME:
        raise ValueError(f"blob name longer than {MAX_NAME} bytes")
    bad = [c for c in name if c in "/\\\0" or ord(c) < 32 or ord(c) == 127]
    if bad:
        raise ValueError(f"blob name {name!r} contains {bad[0]!r}")
    if name.startswith("."):
        raise ValueError(f"blob name {name!r} starts with '.'")
    return name


def decode_name(data: bytes) -> str:
    """A name from the wire, checked; ``ValueError`` if unsafe or not UTF-8."""
    try:
        name = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("blob name is not UTF-8") from None
    return check_name(name)


def failure(status: int, message: str) -> BlobError:
    """The exception for a non-zero ``status`` with the peer's ``message``."""
    cls: type[BlobError] = BlobError
    if status == errno.EBADMSG:
        cls = DigestMismatch
    elif status == errno.EBUSY:
        cls = BlobBusy
    return cls(status, message or errno.errorcode.get(status, str(status)))


def reply(fmt: struct.Struct, *fields: object, message: str = "") -> bytes:
    """A reply: the fixed fields, then an optional message."""
    return fmt.pack(*fields) + message.encode("utf-8", "replace")[:REPLY_MAX - fmt.size]


def parse(fmt: struct.Struct, data: bytes) -> tuple[Any, ...]:
    """Split a reply or FEND into its fields and message; raise on a bad length."""
    if len(data) < fmt.size:
        raise BlobError(errno.EPROTO, f"blob reply of {len(data)} bytes, need {fmt.size}")
    return fmt.unpack_from(data) + (bytes(data[fmt.size:]).decode("utf-8", "replace"),)
