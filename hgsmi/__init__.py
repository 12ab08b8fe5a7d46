"""hgsmi: a Host-Guest Shared Memory Interface for ordinary processes.

A host and each of its guests map one segment (the VRAM: a sealed memfd by
default, or a named POSIX segment); buffers live in it and only offsets
cross.  See README.md.
"""
import logging as _logging

from ._native import ffi as _ffi, lib as _lib
from .errors import (AccessDenied, BufferReleased, Busy, ChannelNotRegistered, ChecksumError,
                     HeapExhausted, HgsmiError, HostNotFound, MessageTooLarge, NameInUse,
                     PeerGone, ProtocolError, RemoteError, RingFull, Timeout)
from .errors import HostFull, Refused, TooManyGuests, TooManyPending
from .guest import Guest
from .heap import Heap
from .host import GuestConn, Host
from .message import Buffer, Message
from .loan import Loan

__version__ = _ffi.string(_lib.hgsmi_version()).decode()

# A library logs to "hgsmi.*" and leaves where it goes to the application.
_logging.getLogger("hgsmi").addHandler(_logging.NullHandler())

#: built-in channel numbers (docs/design.md §6)
CH_SETUP, CH_ECHO, CH_SINK, CH_BLOB = 1, 2, 3, 4
CH_USER_FIRST = 0x10

__all__ = [
    "AccessDenied", "Buffer", "BufferReleased", "Busy", "ChannelNotRegistered", "ChecksumError",
    "Guest", "GuestConn", "Heap", "Loan", "HeapExhausted", "HgsmiError", "Host", "HostNotFound",
    "Message", "MessageTooLarge", "NameInUse", "PeerGone", "ProtocolError", "RemoteError",
    "RingFull", "Timeout", "Refused", "HostFull", "TooManyGuests", "TooManyPending", "CH_SETUP", "CH_ECHO", "CH_SINK", "CH_BLOB", "CH_USER_FIRST",
]
