"""A hostile host: speaks the real handshake on a real socket, then misbehaves.

usage: hostile_host.py SOCKET_PATH MODE [eventfd|semaphore]

It does not use hgsmi: it lays out a memfd segment itself (as
native/src/segment.c does), answers each guest's hello with a welcome and
SCM_RIGHTS fds of its choosing, and then plays MODE until that guest hangs
up; then it takes the next guest.  It prints "ready" once it listens.
With "semaphore" the doorbell and IRQ are named POSIX semaphores
/hgsmi-hh<pid>.db and .irq (the test removes them after a SIGKILL).

Modes, what the host does (what the guest must do: tests/test_hostile_host.py):
  pipe          doorbell: a full pipe's write end; IRQ: an empty pipe's read end
  file          doorbell and IRQ: a regular file
  eventfd-max   blocking eventfds, the doorbell at its maximum count; asks for
                doorbells (host_waiting) and never completes anything
  eventfd-sem   the IRQ is an eventfd in semaphore mode with a huge count
  unsealed      the segment memfd has no seals
  oversize      the segment memfd is a page larger than the welcome says
  stray-die     after the welcome: one byte on the control socket, then exit
  stray-alive   once the guest sleeps: one byte on the control socket, then
                it stays (and says nothing more)
  ack-full      the ack ring full from the start (its head never moves), bad
                host buffers on the FIFO and the IRQ raised
  bad-fifo      out-of-range, misaligned and corrupt offsets on the FIFO with
                the IRQ raised, over and over (acks are drained)
  never         takes every submission, completes none
  unknown       completions of offsets the guest never sent, IRQ raised
  irq-forever   the IRQ flag kept raised and the eventfd rung without pause
  indices       hostile ring indices: completion and FIFO tails far ahead
"""
from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import select
import socket
import struct
import sys
import tempfile

CTL_MAGIC, SEG_MAGIC, ENDIAN = 0x43534748, 0x4D534748, 0x01020304
HELLO = struct.Struct("<IHHII4I")
WELCOME = struct.Struct("<IHHiIIIIII3I32s32s32s")  # struct hgsmi_welcome: 144 bytes
F_ALL, BACKEND_EVENTFD, BACKEND_SEMAPHORE = 0x07, 1, 2
IRQ, COMMANDS_PENDING, GCOMMAND_COMPLETED = 0x02, 0x01, 0x04
PAGE, SIZE, ENTRIES, EPOCH = 4096, 64 << 10, 16, 7
HOST_FLAGS, GUEST_WAITING, HOST_WAITING = 128, 192, 256
SUBMIT, GCOMPLETE, HOSTFIFO, HOSTACK, GHEAP, HHEAP = range(6)
EVENTFD_MAX = 0xFFFFFFFFFFFFFFFE


def layout() -> list[tuple[int, int]]:
    """The regions of segment.c's layout(): four one-page rings, heaps 50/50."""
    regions, off = [], PAGE
    for _ in range(4):
        regions.append((off, PAGE))
        off += PAGE
    heaps = (SIZE - off) & ~(PAGE - 1)
    guest = (heaps * 50 // 100) & ~(PAGE - 1)
    return regions + [(off, guest), (off + guest, heaps - guest)]


class Segment:
    """The host's mapping of a memfd it lays out (a valid header)."""

    def __init__(self, seals: bool = True, extra: int = 0) -> None:
        self.fd = os.memfd_create("hgsmi-hostile", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(self.fd, SIZE + extra)
        if seals:
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS,
                        fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
        self.m = mmap.mmap(self.fd, SIZE)
        self.regions = layout()
        hdr = struct.pack("<IHHIIIIIIII6I", 0, 1, 1, ENDIAN, 320, SIZE, F_ALL, EPOCH, ENTRIES,
                          os.getpid(), 1, *[0] * 6)
        self.m[0:len(hdr)] = hdr
        for i, (o, s) in enumerate(self.regions):
            struct.pack_into("<II", self.m, 64 + 8 * i, o, s)
        self.put(0, SEG_MAGIC)

    def get(self, off: int) -> int:
        return struct.unpack_from("<I", self.m, off)[0]

    def put(self, off: int, v: int) -> None:
        struct.pack_into("<I", self.m, off, v & 0xFFFFFFFF)

    # ring r: tail at +0, head at +64, slots at +128
    def tail(self, r: int) -> int:
        return self.get(self.regions[r][0])

    def head(self, r: int) -> int:
        return self.get(self.regions[r][0] + 64)

    def set_tail(self, r: int, v: int) -> None:
        self.put(self.regions[r][0], v)

    def set_head(self, r: int, v: int) -> None:
        self.put(self.regions[r][0] + 64, v)

    def push(self, r: int, offs: list[int]) -> int:
        """Produce on ring r (FIFO or completions) as far as there is room."""
        t, h = self.tail(r), self.head(r)
        n = 0
        for v in offs:
            if ((t + n - h) & 0xFFFFFFFF) >= ENTRIES:
                break
            self.put(self.regions[r][0] + 128 + 4 * ((t + n) % ENTRIES), v)
            n += 1
        self.set_tail(r, t + n)
        return n


def eventfd_write(fd: int, v: int) -> None:
    os.write(fd, struct.pack("<Q", v))


def make_fds(mode: str) -> tuple[Segment, list[int], list[int]]:
    """The segment, the fds to pass (segment, doorbell, IRQ), and fds to keep."""
    keep: list[int] = []
    seg = Segment(seals=mode != "unsealed", extra=PAGE if mode == "oversize" else 0)
    if mode == "pipe":
        r1, w1 = os.pipe()
        os.set_blocking(w1, False)
        try:
            while True:
                os.write(w1, b"\0" * 4096)
        except BlockingIOError:
            pass
        os.set_blocking(w1, True)
        r2, w2 = os.pipe()
        keep += [r1, w2]
        return seg, [seg.fd, w1, r2], keep
    if mode == "file":
        for _ in range(2):
            fd, tmp = tempfile.mkstemp()
            os.unlink(tmp)
            keep.append(fd)
        return seg, [seg.fd, keep[0], keep[1]], keep
    db = os.eventfd(0, os.EFD_CLOEXEC)  # blocking, as a hostile host leaves them
    irq_flags = os.EFD_CLOEXEC | (os.EFD_SEMAPHORE if mode == "eventfd-sem" else 0)
    irq = os.eventfd(0, irq_flags)
    if mode == "eventfd-max":
        eventfd_write(db, EVENTFD_MAX)
    if mode == "eventfd-sem":
        eventfd_write(irq, 1 << 40)
    return seg, [seg.fd, db, irq], keep


def raise_irq(seg: Segment, irq: int, why: int) -> None:
    seg.put(HOST_FLAGS, seg.get(HOST_FLAGS) | IRQ | why)
    if SEMS is not None:
        SEMS.post_irq()
        return
    try:
        os.set_blocking(irq, False)
        eventfd_write(irq, 1)
    except OSError:
        pass


def bad_offsets(seg: Segment) -> list[int]:
    """What a broken host puts on the FIFO: nothing a guest may trust."""
    ho, hs = seg.regions[HHEAP]
    go, _ = seg.regions[GHEAP]
    return [0, 1, SIZE - 8, SIZE, 0xFFFFFFFF, ho + 3, go, ho, ho + 64, ho + hs - 64]


def serve(conn: socket.socket, mode: str, gid: int) -> None:
    """One guest: the handshake, then MODE until it hangs up."""
    conn.settimeout(5)
    hello = conn.recv(HELLO.size, socket.MSG_WAITALL)
    if len(hello) != HELLO.size:
        return
    seg, fds, keep = make_fds(mode)
    if mode == "ack-full":  # the guest's producer index starts at the tail: full
        seg.set_tail(HOSTACK, ENTRIES)
        seg.push(HOSTFIFO, bad_offsets(seg))
        seg.put(HOST_FLAGS, IRQ | COMMANDS_PENDING)
    if mode in ("eventfd-max", "never"):
        seg.put(HOST_WAITING, 1)  # "I sleep: ring me"
    if SEMS is None:
        w = WELCOME.pack(CTL_MAGIC, 1, 1, 0, F_ALL, gid, EPOCH, SIZE, BACKEND_EVENTFD, 3,
                         0, 0, 0, b"/hgsmi-hostile", b"", b"")
        socket.send_fds(conn, [w], fds)
        irq = fds[2]
    else:
        w = WELCOME.pack(CTL_MAGIC, 1, 1, 0, F_ALL, gid, EPOCH, SIZE, BACKEND_SEMAPHORE, 1,
                         0, 0, 0, b"/hgsmi-hostile", *SEMS.names)
        socket.send_fds(conn, [w], fds[:1])
        irq = -1
    if mode == "stray-die":
        conn.send(b"x")
        os._exit(0)
    if mode == "ack-full":
        raise_irq(seg, irq, COMMANDS_PENDING)
    conn.setblocking(False)
    stray_sent = False
    try:
        while True:
            r, _, _ = select.select([conn], [], [], 0.001 if mode == "irq-forever" else 0.01)
            if r:
                try:
                    if conn.recv(64) == b"":
                        return  # the guest hung up
                except (BlockingIOError, ConnectionError):
                    return
            if mode == "stray-alive" and not stray_sent and seg.get(GUEST_WAITING):
                conn.send(b"x")
                stray_sent = True
            elif mode == "ack-full":
                seg.put(HOST_FLAGS, seg.get(HOST_FLAGS) | IRQ | COMMANDS_PENDING)
            elif mode == "bad-fifo":
                seg.set_head(HOSTACK, seg.tail(HOSTACK))  # take (and ignore) the acks
                if seg.push(HOSTFIFO, bad_offsets(seg)):
                    raise_irq(seg, irq, COMMANDS_PENDING)
            elif mode in ("never", "eventfd-max"):
                seg.set_head(SUBMIT, seg.tail(SUBMIT))  # taken, never completed
                seg.put(HOST_WAITING, 1)
            elif mode == "unknown":
                seg.set_head(SUBMIT, seg.tail(SUBMIT))
                go, gs = seg.regions[GHEAP]
                if seg.push(GCOMPLETE, [go + gs - 64, go + 64 * 7, 12345, 0xFFFFFFFF]):
                    raise_irq(seg, irq, GCOMMAND_COMPLETED)
            elif mode == "irq-forever":
                raise_irq(seg, irq, 0)
            elif mode == "indices":
                seg.set_tail(GCOMPLETE, seg.head(GCOMPLETE) + 0x80000000)
                seg.set_tail(HOSTFIFO, seg.head(HOSTFIFO) + 0x40000000)
                raise_irq(seg, irq, COMMANDS_PENDING | GCOMMAND_COMPLETED)
    finally:
        for fd in fds + keep:
            try:
                os.close(fd)
            except OSError:
                pass
        seg.m.close()


class Semaphores:
    """The semaphore backend's doorbell and IRQ: named POSIX semaphores (libc)."""

    def __init__(self) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.sem_open.restype = ctypes.c_void_p
        self.libc.sem_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_uint,
                                       ctypes.c_uint]
        self.libc.sem_post.argtypes = [ctypes.c_void_p]
        self.names = [f"/hgsmi-hh{os.getpid()}.db".encode(), f"/hgsmi-hh{os.getpid()}.irq".encode()]
        self.sems = []
        for n in self.names:
            self.libc.sem_unlink(n)
            s = self.libc.sem_open(n, os.O_CREAT | os.O_EXCL, 0o600, 0)
            assert s not in (None, 0, ctypes.c_void_p(-1).value), ctypes.get_errno()
            self.sems.append(s)

    def post_irq(self) -> None:
        self.libc.sem_post(self.sems[1])

    def close(self) -> None:
        for n in self.names:
            self.libc.sem_unlink(n)


SEMS: Semaphores | None = None  # set in main() for the semaphore backend


def main() -> int:
    global SEMS
    path, mode = sys.argv[1], sys.argv[2]
    if len(sys.argv) > 3 and sys.argv[3] == "semaphore":
        SEMS = Semaphores()
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    print("ready", flush=True)
    gid = 1
    try:
        while True:
            conn, _ = srv.accept()
            with conn:
                serve(conn, mode, gid)
            gid += 1
    finally:
        srv.close()
        os.unlink(path)
        if SEMS is not None:
            SEMS.close()


if __name__ == "__main__":
    sys.exit(main())
