"""What a failed call says: the caller's one line for each way a call fails."""
from __future__ import annotations

import errno
from typing import Any

from .errors import ChannelNotRegistered, HgsmiError, ProtocolError, RemoteError, error
from .reply import read_reason


def call_error(rc: int, channel: int, reply: Any) -> HgsmiError:
    """The exception for a call on ``channel`` that returned ``rc`` (-errno).

    ``reply`` is the reply room, where a failed Python handler left
    "Type: message" (see :func:`hgsmi.reply.write_reason`).
    """
    where = f"call on channel {channel}"
    if rc == -errno.ENOENT:
        return ChannelNotRegistered(errno.ENOENT, f"{where}: the host has no handler "
                                                  "registered on this channel")
    if rc == -errno.EIO:
        reason = read_reason(reply)
        if reason:
            return RemoteError(errno.EIO, f"{where}: the host's handler raised {reason}")
        return RemoteError(errno.EIO, f"{where}: the host's handler failed")
    if rc == -errno.EOVERFLOW:
        return too_long(channel, None, None)
    return error(rc, where)


def too_long(channel: int, room: int | None, size: int | None) -> ProtocolError:
    """A reply larger than the room the call made for it."""
    got = "" if size is None else f" ({size} bytes)"
    have = "the request's size" if room is None else f"{room} bytes"
    return ProtocolError(errno.EOVERFLOW, f"call on channel {channel}: the reply{got} is larger "
                                          f"than the room for it ({have}): pass reply_size= "
                                          "the largest reply expected")
