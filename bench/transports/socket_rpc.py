# SPDX-License-Identifier: MIT
"""
"socket-rpc": the Unix-socket RPC a careful Python engineer would write.

AF_UNIX SOCK_STREAM; the host listens on a path, the guest connects. A
frame is a little-endian u32 length followed by the payload; length 0 is
the end marker. Nothing is allocated per message:

- send: one ``sendmsg([header, payload])`` gathers both without joining them
  (``sendall`` finishes the rare partial send, from memoryviews);
- recv: ``recv_into`` a preallocated 4-byte header, then ``recv_into`` a
  preallocated page-aligned buffer with ``MSG_WAITALL``.

Payload copies per message: the kernel's two (user -> skb -> user).
Streaming is one-way frames; rtt is a request frame answered by a reply
frame of the same size.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import tempfile
from collections.abc import Iterator

from .base import Job, page_buffer
from .channel import Channel, Message
from .peers import PeerTransport

_HDR = struct.Struct("<I")
#: Socket buffer asked for; the kernel caps it at net.core.{w,r}mem_max.
_SOCK_BUF = 1 << 20


def recv_exactly(sock: socket.socket, view: memoryview) -> None:
    """Fill ``view`` from ``sock``; EOFError if the peer closes first."""
    want = len(view)
    got = sock.recv_into(view, want, socket.MSG_WAITALL)
    while got < want:
        n = sock.recv_into(view[got:], want - got, socket.MSG_WAITALL)
        if n == 0:
            raise EOFError("peer closed the socket mid-frame")
        got += n


class SocketChannel(Channel):
    """Length-prefixed frames over a connected stream socket."""

    def __init__(self, sock: socket.socket, size: int) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCK_BUF)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCK_BUF)
        self._sock = sock
        self._cap = size
        self._hdr_out = bytearray(_HDR.size)
        self._hdr_in = bytearray(_HDR.size)
        self._hdr_view = memoryview(self._hdr_in)
        self._buf = memoryview(page_buffer(size))

    def send(self, msg: Message) -> None:
        n = len(msg)
        _HDR.pack_into(self._hdr_out, 0, n)
        sent = self._sock.sendmsg([self._hdr_out, msg])
        if sent != n + _HDR.size:
            self._send_rest(msg, sent)

    def _send_rest(self, msg: Message, sent: int) -> None:
        if sent < _HDR.size:
            self._sock.sendall(memoryview(self._hdr_out)[sent:])
            sent = _HDR.size
        self._sock.sendall(memoryview(msg)[sent - _HDR.size:])

    def send_end(self) -> None:
        _HDR.pack_into(self._hdr_out, 0, 0)
        self._sock.sendall(self._hdr_out)

    def recv(self) -> memoryview | None:
        recv_exactly(self._sock, self._hdr_view)
        (n,) = _HDR.unpack_from(self._hdr_in)
        if n == 0:
            return None
        if n > self._cap:
            raise ValueError(f"frame of {n} bytes exceeds the buffer of {self._cap}")
        view = self._buf[:n]
        recv_exactly(self._sock, view)
        return view

    def close(self) -> None:
        self._sock.close()


def _open_host(end: socket.socket, job: Job) -> SocketChannel:
    end.settimeout(job.timeout)
    conn, _ = end.accept()
    end.close()
    conn.settimeout(None)
    return SocketChannel(conn, job.size)


def _open_guest(end: str, job: Job) -> SocketChannel:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(end)
    return SocketChannel(sock, job.size)


class SocketRpc(PeerTransport):
    """Unix-socket RPC with length-prefixed frames (see module docstring)."""

    name = "socket-rpc"
    open_host = staticmethod(_open_host)
    open_guest = staticmethod(_open_guest)

    @contextlib.contextmanager
    def endpoints(self, job: Job) -> Iterator[tuple[socket.socket, str]]:
        """A listening socket for the host (listening before either peer
        starts, so the guest's connect never races) and its path."""
        tmp = tempfile.mkdtemp(prefix="hgsmi-bench-")
        path = os.path.join(tmp, "rpc.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(path)
            listener.listen(1)
            yield listener, path
        finally:
            listener.close()
            shutil.rmtree(tmp, ignore_errors=True)
