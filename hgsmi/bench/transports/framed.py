# SPDX-License-Identifier: MIT
"""
Length-prefixed frames, for the byte-stream baselines (``socket-rpc`` and
``stdlib-os-pipe``): a little-endian u32 length, then the payload; length 0
is the end marker. A frame is received into one preallocated page-aligned
buffer of the job's size (see base.py on 4K aliasing), so nothing is
allocated per message. A subclass says how bytes move: ``send``,
``_read_exactly`` and ``_write_all``.
"""
from __future__ import annotations

import struct
from abc import abstractmethod

from .base import page_buffer
from .channel import Channel, Message

HDR = struct.Struct("<I")


class FramedChannel(Channel):
    """Frames over a byte stream; received into a buffer of ``size`` bytes."""

    def __init__(self, size: int) -> None:
        self._cap = size
        self._hdr_out = bytearray(HDR.size)
        self._hdr_in = bytearray(HDR.size)
        self._hdr_view = memoryview(self._hdr_in)
        self._buf = memoryview(page_buffer(size))

    @abstractmethod
    def _read_exactly(self, view: memoryview) -> None:
        """Fill ``view``; EOFError if the peer closes first."""

    @abstractmethod
    def _write_all(self, data: Message) -> None:
        """Write all of ``data``."""

    def send_end(self) -> None:
        HDR.pack_into(self._hdr_out, 0, 0)
        self._write_all(self._hdr_out)

    def recv(self) -> memoryview | None:
        self._read_exactly(self._hdr_view)
        (n,) = HDR.unpack_from(self._hdr_in)
        if n == 0:
            return None
        if n > self._cap:
            raise ValueError(f"frame of {n} bytes exceeds the buffer of {self._cap}")
        view = self._buf[:n]
        self._read_exactly(view)
        return view
