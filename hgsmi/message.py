"""What handlers receive: :class:`Message`.  (:class:`Buffer` lives in :mod:`hgsmi.buffer`;
importing it from here still works.)"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._util import as_array
from .buffer import Buffer
from .errors import BufferReleased
from .lease import Lease

if TYPE_CHECKING:  # pragma: no cover
    from .guest import Guest
    from .host import GuestConn

__all__ = ["Buffer", "Message"]


class Message:
    """One verified buffer, handed to a channel handler.

    ``data`` is a writable view of the buffer in the VRAM: no copy.  It is
    valid only while the handler runs; afterwards it raises.
    """

    __slots__ = ("channel", "info", "capacity", "peer", "view", "_lease")

    def __init__(self, channel: int, info: int, capacity: int, view: memoryview,
                 peer: GuestConn | Guest | None, lease: Lease | None = None) -> None:
        self.channel = channel
        self.info = info
        self.capacity = capacity  #: bytes a reply may use
        self.peer = peer  #: the GuestConn (on the host) or the Guest it came from
        #: the view ``data`` returns; None once revoked.  A Lease revokes its
        #: own (:meth:`release`); a Window's slice is revoked by the dispatcher
        #: setting this to None (hgsmi/lease.py, hgsmi/reply.py), which also
        #: rebinds a Message no handler kept to the next buffer: an attribute,
        #: not a method, because a call a message costs 7% of the dispatch.
        self.view: memoryview | None = view
        self._lease = lease

    @property
    def data(self) -> memoryview:
        """The request bytes, in place.  Raises :class:`BufferReleased` after completion."""
        view = self.view
        if view is None:
            raise BufferReleased(0, "message already completed")
        return view

    def array(self, dtype: Any = "uint8", shape: Any = None) -> Any:
        """The data as a numpy array (no copy; needs numpy)."""
        return as_array(self.data, dtype, shape)

    @property
    def guest(self) -> Any:
        """The host's handle on the guest that sent this (host side only)."""
        return self.peer

    def release(self) -> bool:
        """Revoke the view: ``data`` raises from now on.  With a Lease, False (and
        nothing revoked) while something derived from the view lives on."""
        if self._lease is not None and not self._lease.release():
            return False
        self.view = self._lease = None
        return True


    def __repr__(self) -> str:
        state = "released" if self.view is None else f"{len(self.view)} bytes"
        return f"<hgsmi.Message channel={self.channel} info={self.info} {state}>"


#: a channel handler: a Message in, the reply (bytes-like, None, or an awaitable) out
Handler = Callable[[Message], Any]
