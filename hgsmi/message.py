"""What handlers receive: :class:`Message`.  (:class:`Buffer` lives in :mod:`hgsmi.buffer`;
importing it from here still works.)"""
from __future__ import annotations

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

    __slots__ = ("channel", "info", "capacity", "peer", "_view", "_lease")

    def __init__(self, channel: int, info: int, capacity: int, view: memoryview,
                 peer: GuestConn | Guest | None, lease: Lease | None = None) -> None:
        self.channel = channel
        self.info = info
        self.capacity = capacity  #: bytes a reply may use
        self.peer = peer  #: the GuestConn (on the host) or the Guest it came from
        # A Lease revokes its own view; without one the view is a Window's
        # slice, revoked by the server (hgsmi/lease.py).
        self._view: memoryview | None = view
        self._lease = lease

    @property
    def data(self) -> memoryview:
        """The request bytes, in place.  Raises :class:`BufferReleased` after completion."""
        view = self._view
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

    def _release(self) -> bool:
        """Revoke a Lease's view; False while something derived from it lives on."""
        if self._lease is not None and not self._lease.release():
            return False
        self._view = self._lease = None
        return True

    def __repr__(self) -> str:
        state = "released" if self._view is None else f"{len(self._view)} bytes"
        return f"<hgsmi.Message channel={self.channel} info={self.info} {state}>"
