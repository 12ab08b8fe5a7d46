"""C and Python peers on one transport, both ways round.

- the C guest example (``guest NAME --verify 1000``) against a Python host
  (peers/example_host.py, in its own process);
- this process as a Python guest against the C host example.

Each moves 1,000 messages of 1 B to 1 MiB guest -> host -> guest (INVERT
calls: the host rewrites every byte, the guest checks every byte) and 1,000
host -> guest through the host FIFO (pushes, checked byte for byte).  The
protocol is the one of native/examples/host.c; peers/example_proto.py is its
Python twin.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

import hgsmi

sys.path.insert(0, str(Path(__file__).parent / "peers"))
from example_proto import (  # noqa: E402
    CALL_SEED,
    CH_ECHO,
    CH_INVERT,
    CH_PUSH,
    CH_PUSH_REQUEST,
    CH_SINK,
    INVERT,
    MIB,
    example_size,
    first_difference,
    pattern,
    push_plan,
    push_request,
)

from support.native_examples import start, stop, summary  # noqa: E402

pytestmark = pytest.mark.multiprocess
N = 1000
BACKENDS = ["eventfd", "semaphore"]
PY_HOST = Path(__file__).parent / "peers" / "example_host.py"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_c_guest_python_host(c_examples, name, runtime_dir, no_leaks, backend, tmp_path):
    env = dict(c_examples.run_env(), PYTHONPATH=str(Path(__file__).parent.parent))
    host = start([sys.executable, PY_HOST, name, backend], env, ready_timeout=20)
    try:
        c_examples.verify(name, N, env, timeout=40)
        # and the copy-mode side of the example: a file to the sink, echo calls
        src = tmp_path / "payload"
        src.write_bytes(os.urandom(1_000_000))
        out = c_examples.run_guest(name, src, env=env, timeout=20).stdout
        assert "1000000 bytes in 16 messages" in out and "echo: 5 calls" in out
    finally:
        rc, out, err = stop(host)
    assert rc == 0, f"Python host exited {rc}:\n{out}\n{err}"
    s = summary(out)
    assert s["invert"] == N and s["pushed_msgs"] == N and s["echo"] == 5
    assert s["sink_msgs"] == 16 and s["sink_bytes"] == 1_000_000
    assert "handler errors 0" in out


class PushChecker:
    """The guest's handler for pushed messages: checks each one's index and bytes."""

    def __init__(self) -> None:
        self.request = (0, 0, 0)
        self.got = self.total = self.total_bytes = 0
        self.errors: list[str] = []

    def expect(self, count: int, size: int, seed: int) -> None:
        self.request, self.got = (count, size, seed), 0

    def __call__(self, msg) -> None:
        count, size, seed = self.request
        i = self.got
        self.got += 1
        self.total += 1
        data = bytes(msg.data)  # one copy; the view must not outlive the handler
        self.total_bytes += len(data)
        if msg.info != i or i >= count:
            self.errors.append(f"push info {msg.info}, want {i} of {count}")
        elif data != pattern(seed, i, size):
            self.errors.append(f"push {i} of seed {seed:#x}: "
                               f"{first_difference(data, pattern(seed, i, size))}")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", BACKENDS)
def test_python_guest_c_host(c_examples, name, runtime_dir, no_leaks, backend):
    host = start(c_examples.host_cmd(name, backend), c_examples.run_env())
    sunk = 0
    try:
        with hgsmi.Guest(name) as g:
            # copy mode to the sink, fire and forget; served before the calls below
            chunks = [os.urandom(n) for n in (1, 4096, 65536, MIB)]
            g.send_many(CH_SINK, 0, chunks, timeout=10)
            sunk = sum(map(len, chunks))

            # guest -> host -> guest: the host rewrites every byte, we check every byte
            for i in range(N):
                req = pattern(CALL_SEED, i, example_size(i))
                reply = g.call(CH_INVERT, i & 0xFFFF, req, timeout=10)
                want = req.translate(INVERT)
                if reply != want:
                    pytest.fail(f"call {i}: {first_difference(reply, want)}")
            for k, n in enumerate((1, 100, 4096, MIB)):
                req = pattern(CALL_SEED, k, n)
                assert g.call(CH_ECHO, k, req, timeout=10) == req

            # host -> guest through the host FIFO
            check = PushChecker()
            g.register(CH_PUSH, check)
            for count, size, seed in push_plan(N):
                check.expect(count, size, seed)
                assert g.call(CH_PUSH_REQUEST, 0, push_request(count, size, seed),
                              timeout=10) == b""
                deadline = time.monotonic() + 10
                while check.got < count and not check.errors:
                    assert time.monotonic() < deadline, \
                        f"{check.got} of {count} pushes of {size} bytes after 10 s"
                    g.poll(1.0)
                assert check.errors == []
            assert check.total == N
            st = g.stats()
            assert st["remote_errors"] == 0 and st["errors"] == 0, st
    finally:
        rc, out, err = stop(host)
    assert rc == 0, f"C host exited {rc}:\n{out}\n{err}"
    s = summary(out)
    assert s["invert"] == N and s["echo"] == 4 and s["pushed_msgs"] == N
    assert s["pushed_bytes"] == check.total_bytes
    assert s["sink_msgs"] == 4 and s["sink_bytes"] == sunk
