"""How a handler's outcome becomes a completion: one place for host, guest and asyncio."""
from __future__ import annotations

import asyncio
import errno
import logging
from typing import Any

from ._native import ffi
from .errors import HgsmiError

log = logging.getLogger("hgsmi")


def fill_reply(base: Any, m: Any, reply: Any) -> None:
    """Write a handler's reply (None: results left in place) into the buffer of ``m``.

    A reply longer than the buffer's capacity fails the buffer with EOVERFLOW.
    """
    if reply is None:
        return
    src = memoryview(reply).cast("B")
    if src.nbytes > m.capacity:
        m.status, m.size = -errno.EOVERFLOW, 0
        log.warning("channel %d reply of %d bytes exceeds capacity %d",
                    m.channel, src.nbytes, m.capacity)
        return
    ffi.memmove(base + m.data, src, src.nbytes)
    m.size = src.nbytes


def fail_status(m: Any, exc: BaseException) -> None:
    """Fail ``m`` with the errno of an HgsmiError, ECANCELED, or EIO for anything else."""
    code = exc.errno if isinstance(exc, HgsmiError) and exc.errno else errno.EIO
    if isinstance(exc, asyncio.CancelledError):
        code = errno.ECANCELED
    m.status, m.size = -code, 0
