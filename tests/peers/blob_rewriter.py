"""A guest that rewrites its upload chunks while the host serves them.

    python blob_rewriter.py NAME STORE_DIR SECONDS

For SECONDS it uploads one-chunk blobs by hand (BEGIN, CHUNK, END).  While
each chunk is with the host, a thread flips the chunk's first byte between 0
and 1 in a tight loop, so the host may read either body, or both if it reads
twice.  END always claims the digest of the all-zero body: the host confirms
it only if that is what it hashed.  After each confirmed upload the stored
file (in STORE_DIR) is hashed and compared with the digest the host
confirmed, then removed.  Prints one JSON line ``{uploads, confirmed,
mismatched}``; the host is wrong if ``mismatched`` is not 0.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time

import hgsmi
from hgsmi._native import ffi
from hgsmi.services import blob_protocol as blob
from hgsmi.services.builtin import CH_BLOB

BODY = 4 << 20  # long enough that hashing it leaves a wide window before the write


def flip(view: memoryview, stop: threading.Event) -> None:
    # Runs while the main thread waits in C (the GIL is free then).
    while not stop.is_set():
        for _ in range(1000):
            view[0] = 1
            view[0] = 0


def upload_once(g: hgsmi.Guest, name: str, claimed: bytes) -> tuple[int, bytes]:
    """One flipped upload; the END status and the digest the host computed."""
    status, tid, why = blob.parse(blob.BEGIN_REP, g.call(
        CH_BLOB, blob.BEGIN, blob.BEGIN_REQ.pack(BODY) + name.encode(), blob.REPLY_MAX,
        timeout=10))
    if status:
        raise SystemExit(f"BEGIN refused: {why}")
    hdr = blob.CHUNK_HDR.size
    buf = g.alloc(CH_BLOB, blob.CHUNK, hdr + BODY)
    data = buf.data
    blob.CHUNK_HDR.pack_into(data, 0, tid, BODY, 0)
    data[hdr:hdr + BODY] = bytes(BODY)
    del data  # the library will not submit a buffer with a view of it alive...
    # ...so the flipper writes through a raw view of the segment (16: the buffer header).
    raw = memoryview(ffi.buffer(g._base + buf.offset + 16 + hdr, 1))
    stop = threading.Event()
    t = threading.Thread(target=flip, args=(raw, stop))
    t.start()
    try:
        time.sleep(0.001)  # the flipper is running before the host sees the chunk
        g.submit(buf)
        done = []
        deadline = time.monotonic() + 10
        while not done and time.monotonic() < deadline:
            done = g.completions(timeout=1.0)
    finally:
        stop.set()
        t.join()
    for b in done:
        b.free()
    status, _, digest, _why = blob.parse(blob.END_REP, g.call(
        CH_BLOB, blob.END, blob.END_REQ.pack(tid, 0, BODY, claimed), blob.REPLY_MAX, timeout=10))
    return status, digest


def main() -> int:
    name, store, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    claimed = hashlib.sha256(bytes(BODY)).digest()
    uploads = confirmed = mismatched = 0
    with hgsmi.Guest(name) as g:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            blob_name = f"flip-{uploads}"
            status, digest = upload_once(g, blob_name, claimed)
            uploads += 1
            if status:
                continue
            confirmed += 1
            path = os.path.join(store, blob_name)
            with open(path, "rb") as f:
                stored = hashlib.sha256(f.read()).digest()
            os.unlink(path)
            if stored != digest or digest != claimed:
                mismatched += 1
    print(json.dumps({"uploads": uploads, "confirmed": confirmed, "mismatched": mismatched}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
