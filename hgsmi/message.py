"""What handlers receive (:class:`Message`) and what guests fill in place (:class:`Buffer`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import BufferReleased
from .lease import Lease

if TYPE_CHECKING:  # pragma: no cover
    from .guest import Guest
    from .host import GuestConn


def _array(view: memoryview, dtype: Any, shape: Any) -> Any:
    import numpy  # optional: only this needs it

    arr = numpy.frombuffer(view, dtype=dtype)
    return arr if shape is None else arr.reshape(shape)


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
        return _array(self.data, dtype, shape)

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

    _release = release  # the guest side's name for it, until it calls release()

    def __repr__(self) -> str:
        state = "released" if self.view is None else f"{len(self.view)} bytes"
        return f"<hgsmi.Message channel={self.channel} info={self.info} {state}>"


class Buffer:
    """A guest buffer in the guest heap, filled in place (zero copy).

    Use it as a context manager: leaving the block frees it, unless it was
    submitted and is still with the host.  ``data`` raises once the buffer is
    in flight or freed; ``reply`` is valid after its completion.
    """

    __slots__ = ("_guest", "offset", "channel", "info", "size", "capacity",
                 "status", "_lease", "_reply", "_reply_at", "state")

    def __init__(self, guest: Guest, offset: int, channel: int, info: int,
                 size: int, capacity: int, lease: Lease) -> None:
        self._guest = guest
        self.offset = offset
        self.channel = channel
        self.info = info
        self.size = size
        self.capacity = capacity
        self.status = 0
        self._lease: Lease | None = lease
        self._reply: Lease | None = None
        # (data offset, length) of a completion's reply: its Lease is made
        # on first use, so a stream that never reads replies pays for none.
        self._reply_at: tuple[int, int] | None = None
        self.state = "filling"  #: filling, in-flight, completed, freed

    @property
    def data(self) -> memoryview:
        """The request bytes to fill, in place.  Raises once submitted or freed."""
        if self._lease is None:
            raise BufferReleased(0, f"buffer is {self.state}")
        return self._lease.view

    @property
    def reply(self) -> memoryview:
        """The reply, in place, after completion.  Raises once freed."""
        reply = self._reply
        if reply is None:
            at = self._reply_at
            if at is None:
                raise BufferReleased(0, f"buffer is {self.state}, no reply")
            reply = self._reply = Lease(self._guest._base + at[0], at[1])
        return reply.view

    def array(self, dtype: Any = "uint8", shape: Any = None) -> Any:
        """The data as a numpy array (no copy; needs numpy)."""
        return _array(self.data, dtype, shape)

    def free(self) -> None:
        """Give the memory back to the guest heap (idempotent)."""
        self._guest._free_buffer(self)

    def __enter__(self) -> Buffer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.state != "in-flight":
            self.free()

    def __repr__(self) -> str:
        return f"<hgsmi.Buffer offset={self.offset:#x} size={self.size} {self.state}>"
