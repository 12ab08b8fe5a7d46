"""hgsmi: a Host-Guest Shared Memory Interface for ordinary processes.

A host and each of its guests map one segment (the VRAM: a sealed memfd by
default, or a named POSIX segment); buffers live in it and only offsets
cross.  See README.md.
"""
import logging as _logging

from ._native import ffi as _ffi, lib as _lib

# The built-in channels (docs/design.md §6), the first channel that is the user's,
# and a limit's value for "no limit" (``Host(max_doorbells_per_s=UNLIMITED)``).
from ._wire import CH_BLOB, CH_ECHO, CH_SETUP, CH_SINK, CH_USER_FIRST, UNLIMITED
from .errors import (
    AccessDenied,
    BufferReleased,
    Busy,
    ChannelNotRegistered,
    ChecksumError,
    HeapExhausted,
    HgsmiError,
    HostFull,
    HostNotFound,
    MessageTooLarge,
    NameInUse,
    PeerGone,
    ProtocolError,
    Refused,
    RemoteError,
    RingFull,
    Timeout,
    TooManyGuests,
    TooManyPending,
)
from .guest import Guest
from .heap import Heap
from .host import GuestConn, Host
from .loan import Loan
from .message import Buffer, Message

__version__ = _ffi.string(_lib.hgsmi_version()).decode()

# A library logs to "hgsmi.*" and leaves where it goes to the application.
_logging.getLogger("hgsmi").addHandler(_logging.NullHandler())

__all__ = [
    "AccessDenied", "Buffer", "BufferReleased", "Busy", "ChannelNotRegistered", "ChecksumError",
    "Guest", "GuestConn", "Heap", "Loan", "HeapExhausted", "HgsmiError", "Host", "HostNotFound",
    "Message", "MessageTooLarge", "NameInUse", "PeerGone", "ProtocolError", "RemoteError",
    "RingFull", "Timeout", "Refused", "HostFull", "TooManyGuests", "TooManyPending",
    "CH_SETUP", "CH_ECHO", "CH_SINK", "CH_BLOB", "CH_USER_FIRST", "UNLIMITED",
]
