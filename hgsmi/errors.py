"""The exception hierarchy, and the mapping from the C core's -errno results.

Every error is an :class:`HgsmiError`, which is an :class:`OSError` whose
``errno`` is the C core's.  Where a standard exception means the same thing, the
class derives from it too, so ``except TimeoutError`` catches :class:`Timeout`.
"""
from __future__ import annotations

import errno as _errno

from ._native import ffi, lib


class HgsmiError(OSError):
    """Root of every error hgsmi raises."""


class ChecksumError(HgsmiError):
    """A buffer's checksum did not match: it was corrupted or moved."""


class ProtocolError(HgsmiError):
    """The peer broke the protocol: bad magic, ABI, flags, offset or ring index."""


class HeapExhausted(HgsmiError, MemoryError):
    """The sender's heap has no block large enough right now."""


class MessageTooLarge(HgsmiError, ValueError):
    """The message can never fit in the heap, however empty."""


class RingFull(HgsmiError, BlockingIOError):
    """The ring (or the in-flight limit) is full; try again after completions."""


class PeerGone(HgsmiError, ConnectionError):
    """The peer died, closed, or reset this connection."""


class Timeout(HgsmiError, TimeoutError):
    """The wait ran out before the peer answered."""


class ChannelNotRegistered(HgsmiError):
    """The receiver has no handler for this channel."""


class RemoteError(HgsmiError):
    """The peer's handler failed while serving the buffer."""


class AccessDenied(HgsmiError, PermissionError):
    """The host refused this uid (SO_PEERCRED allow-list)."""


class HostNotFound(HgsmiError, FileNotFoundError):
    """No host listens under that name."""


class NameInUse(HgsmiError):
    """A live host already has that name."""


class BufferReleased(HgsmiError, ValueError):
    """The buffer was completed or freed; its views are gone."""


# -- admission: the host refused to attach; each names the limit it hit ------
class Refused(HgsmiError, ConnectionRefusedError):
    """The host refused this attach for one of its admission limits."""


class HostFull(Refused):
    """The host serves its maximum number of guests (max_guests)."""


class TooManyGuests(Refused):
    """This process has the most guests the host lets one process attach
    (max_guests_per_pid)."""


class TooManyPending(Refused):
    """This process has the most handshakes under way the host allows one
    process (max_pending_per_pid)."""


class Busy(HgsmiError):
    """The host refused a request at once: this guest holds its quota of that resource.

    Its errno is EBUSY.  Not mapped from the C core's -EBUSY, which means a
    buffer is still in flight; the services and their clients raise it.
    """


_BY_ERRNO: dict[int, type[HgsmiError]] = {
    _errno.EBADMSG: ChecksumError,
    _errno.EPROTO: ProtocolError,
    _errno.ERANGE: ProtocolError,
    _errno.EOVERFLOW: ProtocolError,
    _errno.ENOMEM: HeapExhausted,
    _errno.EMSGSIZE: MessageTooLarge,
    _errno.EAGAIN: RingFull,
    _errno.EPIPE: PeerGone,
    _errno.ECONNRESET: PeerGone,
    _errno.ETIMEDOUT: Timeout,
    _errno.ENOENT: ChannelNotRegistered,
    _errno.EIO: RemoteError,
    _errno.EACCES: AccessDenied,
    _errno.EADDRINUSE: NameInUse,
    _errno.EUSERS: HostFull,
    _errno.EDQUOT: TooManyGuests,
    _errno.ETOOMANYREFS: TooManyPending,
}


def error(rc: int, context: str = "", cls: type[HgsmiError] | None = None) -> HgsmiError:
    """The exception for a negative C result ``rc`` (``-errno``)."""
    err = -rc
    text = ffi.string(lib.hgsmi_strerror(rc)).decode()
    if context:
        text = f"{context}: {text}"
    if cls is None:
        cls = _BY_ERRNO.get(err, HgsmiError)
    return cls(err, text)


def check(rc: int, context: str = "") -> int:
    """Return ``rc`` if it is a success (>= 0); raise the mapped error if not."""
    if rc < 0:
        raise error(rc, context)
    return rc
