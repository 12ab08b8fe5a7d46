"""The allocator: a hypothesis state machine with the invariant check after every step."""
import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import hgsmi

BASE, SIZE = 1 << 20, 1 << 20


class HeapMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.heap = hgsmi.Heap(BASE, SIZE)
        self.live: dict[int, int] = {}

    @rule(size=st.integers(1, 300_000))
    def alloc(self, size):
        try:
            off = self.heap.alloc(size)
        except hgsmi.HeapExhausted:
            assert self.heap.stats()["largest_free"] < size + 64 * 64
            return
        assert off % 64 == 0 and BASE <= off and off + size <= BASE + SIZE
        assert self.heap.block_size(off) >= size
        for o, n in self.live.items():  # no overlap with any live block
            assert off + size <= o or o + n <= off
        self.live[off] = size

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def free(self, data):
        off = data.draw(st.sampled_from(sorted(self.live)))
        self.heap.free(off)
        del self.live[off]
        with pytest.raises(hgsmi.HgsmiError):
            self.heap.free(off)  # double free is refused, not corrupting

    @invariant()
    def consistent(self):
        self.heap.check()
        s = self.heap.stats()
        assert s["used_blocks"] == len(self.live)
        assert s["used"] >= sum(self.live.values())
        if not self.live:
            assert s["largest_free"] == s["capacity"]


TestHeapMachine = HeapMachine.TestCase
TestHeapMachine.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)


def test_exhaustion_raises_heap_exhausted():
    heap = hgsmi.Heap(0, 64 * 1024)
    offs = [heap.alloc(1000) for _ in range(64)]
    with pytest.raises(hgsmi.HeapExhausted):
        heap.alloc(1000)
    assert heap.stats()["failures"] == 1
    for o in offs:
        heap.free(o)
    assert heap.stats()["fragmentation"] == 0.0


def test_bad_arguments():
    with pytest.raises(hgsmi.HgsmiError):
        hgsmi.Heap(3, 4096)  # misaligned base
    heap = hgsmi.Heap(0, 4096)
    with pytest.raises(hgsmi.HgsmiError):
        heap.free(64)  # never allocated
