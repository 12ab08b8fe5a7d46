"""Deterministic test messages: sizes log-uniform from 1 B to 1 MiB."""
import math
import random

_POOL_SIZE = 2 << 20


def _pool(seed: int) -> memoryview:
    return memoryview(random.Random(seed).randbytes(_POOL_SIZE))


def stream(seed: int, count: int, max_size: int = 1 << 20):
    """Yield ``count`` messages (memoryview slices of a random pool)."""
    rng = random.Random(seed ^ 0x5EED)
    pool = _pool(seed)
    top = math.log(max_size)
    for _ in range(count):
        n = int(math.exp(rng.uniform(0, top)))
        off = rng.randrange(0, _POOL_SIZE - n)
        yield pool[off:off + n]
