"""What a guest fills in place: :class:`Buffer`.  Its state is its core's to change."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._util import as_array
from .errors import BufferReleased
from .lease import Lease

if TYPE_CHECKING:  # pragma: no cover
    from .core.guest import GuestCore


class Buffer:
    """A guest buffer in the guest heap, filled in place (zero copy).

    Use it as a context manager: leaving the block frees it, unless it was
    submitted and is still with the host.  ``data`` raises once the buffer is
    in flight or freed; ``reply`` is valid after its completion.

    Made by ``alloc``; every change of ``state`` (filling, in-flight,
    completed, held, freed) and of its views is made by the guest's core
    (:class:`hgsmi.core.guest.GuestCore`), which owns the memory.
    """

    __slots__ = ("_core", "offset", "channel", "info", "size", "capacity",
                 "status", "_lease", "_reply", "_reply_at", "state")

    def __init__(self, core: GuestCore, offset: int, channel: int, info: int,
                 size: int, capacity: int, lease: Lease) -> None:
        self._core = core
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
        self.state = "filling"  #: filling, in-flight, completed, held, freed

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
            reply = self._reply = Lease(self._core.base + at[0], at[1])
        return reply.view

    def array(self, dtype: Any = "uint8", shape: Any = None) -> Any:
        """The data as a numpy array (no copy; needs numpy)."""
        return as_array(self.data, dtype, shape)

    def free(self) -> None:
        """Give the memory back to the guest heap (idempotent).

        Raises ValueError while the host still has it; memory under a view
        still in use is held back and freed once the view goes.
        """
        self._core.free(self)

    def __enter__(self) -> Buffer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.state != "in-flight":
            self.free()

    def __repr__(self) -> str:
        return f"<hgsmi.Buffer offset={self.offset:#x} size={self.size} {self.state}>"
