"""The host as an ivshmem server, spoken to as QEMU speaks (no VM needed).

A real QEMU VM is tests/vm/run.py (``make test-vm``); here a socket client
plays QEMU's part of the server protocol (docs/specs/ivshmem-spec.rst in
QEMU's tree): it reads the messages, maps the segment the way QEMU maps
BAR2, rings the doorbell as QEMU does for a Doorbell-register write, and
hangs up as a killed VM does.
"""
from __future__ import annotations

import array
import fcntl
import mmap
import os
import socket
import struct

import pytest

import hgsmi
from hgsmi.daemon import config as config_mod

from support.waiting import serve_until

F_GET_SEALS = 1034
F_SEAL_SHRINK, F_SEAL_GROW = 0x2, 0x4
EPOCH_OFF = 24  # struct hgsmi_segment_header.epoch


def read_msgs(sock: socket.socket, n: int) -> list[tuple[int, int]]:
    """n server messages: (int64 LE value, fd or -1), one fd at most each."""
    out = []
    for _ in range(n):
        data, anc, _flags, _addr = sock.recvmsg(8, socket.CMSG_SPACE(4 * 4))
        assert len(data) == 8, data
        fds = array.array("i")
        for level, kind, payload in anc:
            assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
            fds.frombytes(payload[:len(payload) - len(payload) % 4])
        assert len(fds) <= 1
        out.append((struct.unpack("<q", data)[0], fds[0] if fds else -1))
    return out


@pytest.mark.timeout(30)
def test_qemu_handshake_doorbell_and_death(name, runtime_dir):
    path = str(runtime_dir / "iv.sock")
    with hgsmi.Host(name, 1 << 20, ivshmem=path) as host:
        qemu = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        qemu.connect(path)
        serve_until(host, lambda: len(host.guests) == 1)
        conn = host.guests[0]
        msgs = read_msgs(qemu, 5)
        fds = [fd for _, fd in msgs if fd >= 0]
        try:
            # version 0, our id, -1 + memory, peer 0 (the host) + its
            # vector 0, our id + our vector 0: in that order, as QEMU wants.
            (ver, f0), (vm_id, f1), (shm, memfd), (peer0, doorbell), (own, irq) = msgs
            assert (ver, f0, f1, shm, peer0) == (0, -1, -1, -1, 0)
            assert vm_id == own and 0 < vm_id <= 0xFFFF
            assert min(memfd, doorbell, irq) >= 0
            # BAR2: a power of two, sealed so the VM side cannot shrink it.
            assert os.fstat(memfd).st_size == 1 << 20
            seals = fcntl.fcntl(memfd, F_GET_SEALS)
            assert seals & F_SEAL_SHRINK and seals & F_SEAL_GROW
            bar2 = mmap.mmap(memfd, 1 << 20)
            assert bar2[:4] == b"HGSM"
            epoch = struct.unpack_from("<I", bar2, EPOCH_OFF)[0]
            assert epoch == conn.stats()["epoch"]
            # A Doorbell write: QEMU writes the eventfd of peer 0, vector 0.
            os.write(doorbell, (1).to_bytes(8, "little"))
            serve_until(host, lambda: conn.stats()["doorbells"] >= 1)
            # The VM dies: EOF on the socket reclaims it and bumps the epoch.
            qemu.close()
            serve_until(host, lambda: not host.guests)
            assert host.departed[-1]["guest_id"] == conn.id
            assert struct.unpack_from("<I", bar2, EPOCH_OFF)[0] != epoch
            bar2.close()
            # ... and a new VM attaches.
            qemu = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            qemu.connect(path)
            serve_until(host, lambda: len(host.guests) == 1)
            again = read_msgs(qemu, 5)
            fds += [fd for _, fd in again if fd >= 0]
            assert again[1][0] != vm_id and host.guests[0].stats()["epoch"] > epoch
        finally:
            for fd in fds:
                os.close(fd)
            qemu.close()
    assert not os.path.exists(path)


@pytest.mark.timeout(30)
def test_a_process_guest_alongside(name, runtime_dir):
    path = str(runtime_dir / "iv.sock")
    with hgsmi.Host(name, 1 << 20, ivshmem=path) as host:
        host.register(0x10, lambda m: bytes(m.data)[::-1])
        qemu = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        qemu.connect(path)
        serve_until(host, lambda: len(host.guests) == 1)
        fds = [fd for _, fd in read_msgs(qemu, 5) if fd >= 0]
        try:
            import threading
            t = threading.Thread(target=host.serve)
            t.start()
            try:
                with hgsmi.Guest(name) as g:
                    assert g.call(0x10, 0, b"abc") == b"cba"
            finally:
                host.stop()
                t.join(10)
        finally:
            for fd in fds:
                os.close(fd)
            qemu.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kw", [{"size": 3 << 20}, {"segment": "posix"},
                                {"doorbell": "semaphore"}])
def test_refuses_what_qemu_cannot_map(name, runtime_dir, kw):
    args = {"size": 1 << 20, **kw}
    size = args.pop("size")
    with pytest.raises(ValueError, match="ivshmem"):
        hgsmi.Host(name, size, ivshmem=str(runtime_dir / "iv.sock"), **args)


@pytest.mark.timeout(30)
def test_a_live_server_path_is_in_use_a_stale_one_replaced(name, runtime_dir):
    path = str(runtime_dir / "iv.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # a dead server's socket file: nobody listens
    with hgsmi.Host(name, 1 << 20, ivshmem=path):
        with pytest.raises(hgsmi.NameInUse):
            hgsmi.Host(name + "b", 1 << 20, ivshmem=path)


def test_config_key_and_cli_flag(tmp_path):
    cfg = config_mod.from_dict({"ivshmem": "vm.sock"}, str(tmp_path))
    assert cfg.ivshmem == str(tmp_path / "vm.sock")
    with pytest.raises(config_mod.ConfigError, match="ivshmem"):
        config_mod.from_dict({"ivshmem": 3})
    from hgsmi.cli import commands as cli
    args = cli.build_parser().parse_args(["host", "--ivshmem", "/x/vm.sock"])
    assert cli.host_config(args).ivshmem == "/x/vm.sock"


def test_attach_pci_outside_a_vm():
    """No ivshmem device here: -ENOENT; a BDF that is not one: -EINVAL."""
    from hgsmi._native import ffi, lib
    out = ffi.new("struct hgsmi_guest **")
    assert lib.hgsmi_guest_attach_pci(ffi.NULL, ffi.NULL, out) == -2
    assert lib.hgsmi_guest_attach_pci(b"0000:00:1f.0", ffi.NULL, out) == -2
    assert lib.hgsmi_guest_attach_pci(b"../../../etc", ffi.NULL, out) == -22
