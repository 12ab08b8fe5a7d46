"""One process that tries to keep every other guest out of a host.

    python admission_flood.py SOCKET_PATH MODE SECONDS [CONNECTIONS]

MODE is one of:

- ``silent``: 40 (or CONNECTIONS) connections that send nothing, each re-opened as soon as the
  host drops or refuses it;
- ``garbage``: 40 connections that send 32 random bytes, re-opened likewise;
- ``half``: 40 connections that send half a valid hello and wait, re-opened;
- ``held``: valid attach hellos whose guests are held (and never used): 64 at
  once, then one more every 20 ms.

Prints ``ready`` once the flood is in place, keeps it up for SECONDS, then
prints one JSON line: connections opened, and the welcome statuses the host
answered with (status -> count).
"""
from __future__ import annotations

import collections
import json
import os
import selectors
import socket
import struct
import sys
import time

HELLO = struct.Struct("<IHHII4I")
CTL_MAGIC, ABI_MAJOR, ABI_MINOR, KIND_ATTACH, F_ALL = 0x43534748, 1, 1, 1, 0x07
WELCOME_SIZE = 144
VALID = HELLO.pack(CTL_MAGIC, ABI_MAJOR, ABI_MINOR, KIND_ATTACH, F_ALL, 0, 0, 0, 0)
CONNS = 40


class Flood:
    def __init__(self, path: str, mode: str, conns: int) -> None:
        self.path, self.mode, self.conns = path, mode, conns
        self.sel = selectors.DefaultSelector()
        self.opened = 0
        self.statuses: collections.Counter[int] = collections.Counter()
        self.held: list[tuple[socket.socket, list[int]]] = []

    def open_one(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect(self.path)
        except OSError:  # backlog full: try again on the next round
            s.close()
            return
        self.opened += 1
        try:
            if self.mode == "garbage":
                s.sendall(os.urandom(32))
            elif self.mode == "half":
                s.sendall(VALID[:16])
        except OSError:  # refused and closed before we wrote
            pass
        s.setblocking(False)
        self.sel.register(s, selectors.EVENT_READ)

    def dropped(self, s: socket.socket) -> None:
        """The host answered (a refusal's welcome) or hung up: count, re-open."""
        try:
            w = s.recv(WELCOME_SIZE)
        except OSError:
            w = b""
        if len(w) >= 12:
            self.statuses[struct.unpack_from("<i", w, 8)[0]] += 1
        else:
            self.statuses[0 if not w else -1] += 1  # 0 here: dropped without a word
        self.sel.unregister(s)
        s.close()
        self.open_one()

    def attach_one(self) -> None:
        """A valid hello; a guest let in is held, fds and all, and never used."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect(self.path)
            self.opened += 1
            try:
                s.sendall(VALID)
            except OSError:
                pass  # refused at accept: the welcome is still there to read
            w, fds, _flags, _addr = socket.recv_fds(s, WELCOME_SIZE, 4)
        except OSError:
            s.close()
            self.statuses[-1] += 1
            return
        status = struct.unpack_from("<i", w, 8)[0] if len(w) >= 12 else -1
        self.statuses[status] += 1
        if status == 0:
            self.held.append((s, fds))
        else:
            for fd in fds:
                os.close(fd)
            s.close()

    def run(self, seconds: float) -> None:
        if self.mode == "held":
            for _ in range(64):
                self.attach_one()
        else:
            for _ in range(self.conns):
                self.open_one()
        print("ready", flush=True)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if self.mode == "held":
                time.sleep(0.02)
                self.attach_one()
                continue
            for key, _ in self.sel.select(0.05):
                self.dropped(key.fileobj)  # type: ignore[arg-type]
            for _ in range(self.conns - len(self.sel.get_map())):  # those the backlog refused
                self.open_one()


def main() -> int:
    path, mode, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    f = Flood(path, mode, int(sys.argv[4]) if len(sys.argv) > 4 else CONNS)
    f.run(seconds)
    print(json.dumps({"opened": f.opened, "held": len(f.held),
                      "statuses": {str(k): v for k, v in sorted(f.statuses.items())}}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
