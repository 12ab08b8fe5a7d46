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
import socket
from collections.abc import Iterator

from .base import Job
from .channel import Message
from .framed import HDR, FramedChannel
from .peers import PeerTransport, temp_dir

#: Socket buffer asked for; the kernel caps it at net.core.{w,r}mem_max.
_SOCK_BUF = 1 << 20


class SocketChannel(FramedChannel):
    """Length-prefixed frames over a connected stream socket."""

    def __init__(self, sock: socket.socket, size: int) -> None:
        super().__init__(size)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCK_BUF)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCK_BUF)
        self._sock = sock

    def send(self, msg: Message) -> None:
        n = len(msg)
        HDR.pack_into(self._hdr_out, 0, n)
        sent = self._sock.sendmsg([self._hdr_out, msg])
        if sent != n + HDR.size:
            self._send_rest(msg, sent)

    def _send_rest(self, msg: Message, sent: int) -> None:
        if sent < HDR.size:
            self._sock.sendall(memoryview(self._hdr_out)[sent:])
            sent = HDR.size
        self._sock.sendall(memoryview(msg)[sent - HDR.size:])

    def _write_all(self, data: Message) -> None:
        self._sock.sendall(data)

    def _read_exactly(self, view: memoryview) -> None:
        sock, want = self._sock, len(view)
        got = sock.recv_into(view, want, socket.MSG_WAITALL)
        while got < want:
            n = sock.recv_into(view[got:], want - got, socket.MSG_WAITALL)
            if n == 0:
                raise EOFError("peer closed the socket mid-frame")
            got += n

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
        with temp_dir("hgsmi-bench-") as tmp, \
                socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            path = os.path.join(tmp, "rpc.sock")
            listener.bind(path)
            listener.listen(1)
            yield listener, path
