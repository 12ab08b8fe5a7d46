# SPDX-License-Identifier: MIT
"""
Benchmark transports: the baselines hgsmi is compared with, behind one
interface (:class:`~.base.Transport`) so that the hgsmi transports can be
run by the same runner (:mod:`hgsmi.bench.runner`).

The Python transports run each peer in a spawned interpreter that imports
this package like any other; the C ones (:mod:`.c_ceiling`, :mod:`.hgsmi_c`)
compile their programs on first use (:mod:`.cbuild`).
"""
from __future__ import annotations

from .base import DIRECTIONS, Direction, Job, StreamResult, Transport
from .c_ceiling import CCeiling
from .hgcm import Hgcm
from .socket_rpc import SocketRpc
from .stdlib import MpPipe, MpQueue, OsPipe
from .thirdparty import peers

__all__ = ["DIRECTIONS", "Direction", "Job", "StreamResult", "Transport",
           "CCeiling", "Hgcm", "SocketRpc", "MpPipe", "MpQueue", "OsPipe",
           "baselines", "peers"]


def baselines() -> list[Transport]:
    """One instance of every baseline, then every installed peer, in table order."""
    return [CCeiling(), Hgcm(), SocketRpc(), OsPipe(), MpPipe(), MpQueue(), *peers()]
