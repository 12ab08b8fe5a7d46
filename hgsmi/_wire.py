"""Every wire number and every default of the C core, read from it.

The C headers (``native/include/hgsmi/defs.h`` for the wire, ``hgsmi.h``
for the host's defaults) are the one place these are written; cffi gives
their values to Python as ``lib.HGSMI_*`` (``native/hgsmi.cdef``), and every
Python module takes them from here instead of writing them again.  A
number that is not here is Python's own (a service's protocol, a batch
size), defined once where it is used.
"""
from __future__ import annotations

from ._native import ffi, lib

# -- versions ------------------------------------------------------------------
#: the segment layout and handshake: another major is refused
ABI_MAJOR: int = lib.HGSMI_ABI_MAJOR
ABI_MINOR: int = lib.HGSMI_ABI_MINOR

# -- channels (the buffer header's channel byte) -------------------------------
CH_SETUP: int = lib.HGSMI_CH_SETUP  #: served by the C core: QUERY_CONF, host flags
CH_ECHO: int = lib.HGSMI_CH_ECHO
CH_SINK: int = lib.HGSMI_CH_SINK
CH_BLOB: int = lib.HGSMI_CH_BLOB
CH_BUILTIN_LAST: int = lib.HGSMI_CH_BUILTIN_LAST
CH_USER_FIRST: int = lib.HGSMI_CH_USER_FIRST  #: CH_USER_FIRST..255 are the user's
NUMBER_OF_CHANNELS: int = lib.HGSMI_NUMBER_OF_CHANNELS

#: the setup channel's command (channel_info) that reads a host setting
CC_QUERY_CONF: int = lib.HGSMI_CC_QUERY_CONF
# QUERY_CONF indices
CONF_GUEST_HEAP_SIZE: int = lib.HGSMI_CONF_GUEST_HEAP_SIZE
CONF_HOST_HEAP_SIZE: int = lib.HGSMI_CONF_HOST_HEAP_SIZE
CONF_MAX_MESSAGE: int = lib.HGSMI_CONF_MAX_MESSAGE
CONF_RING_ENTRIES: int = lib.HGSMI_CONF_RING_ENTRIES
CONF_ABI_VERSION: int = lib.HGSMI_CONF_ABI_VERSION
CONF_MAX_INFLIGHT: int = lib.HGSMI_CONF_MAX_INFLIGHT

# -- buffers -------------------------------------------------------------------
#: bytes before a buffer's data: its data starts at offset + BUFFER_HEADER_SIZE
BUFFER_HEADER_SIZE: int = ffi.sizeof("struct hgsmi_buffer_header")
#: header + tail: what a buffer costs beyond its data
BUFFER_OVERHEAD: int = lib.HGSMI_BUFFER_OVERHEAD

# -- control socket handshake --------------------------------------------------
CTL_MAGIC: int = lib.HGSMI_CTL_MAGIC
HELLO_ATTACH: int = lib.HGSMI_HELLO_ATTACH
HELLO_STAT: int = lib.HGSMI_HELLO_STAT
HELLO_SIZE: int = ffi.sizeof("struct hgsmi_hello")
WELCOME_SIZE: int = ffi.sizeof("struct hgsmi_welcome")

# -- the names the API takes for the C enums -----------------------------------
#: doorbell (and IRQ) backend by name: ``Host(doorbell=...)``, ``doorbell =`` in TOML
BACKENDS: dict[str, int] = {"eventfd": lib.HGSMI_BACKEND_EVENTFD,
                            "semaphore": lib.HGSMI_BACKEND_SEMAPHORE}
#: where a guest's segment lives, by name: ``Host(segment=...)``, ``segment =`` in TOML
SEGMENTS: dict[str, int] = {"memfd": lib.HGSMI_SEGMENT_MEMFD,
                            "posix": lib.HGSMI_SEGMENT_POSIX}

# -- the host's defaults (struct hgsmi_host_config: 0 in a field means these) ----
SEGMENT_SIZE_DEFAULT: int = lib.HGSMI_SEGMENT_SIZE_DEFAULT
RING_ENTRIES_DEFAULT: int = lib.HGSMI_RING_ENTRIES_DEFAULT
GUEST_HEAP_PERCENT_DEFAULT: int = lib.HGSMI_GUEST_HEAP_PERCENT_DEFAULT
MAX_GUESTS_DEFAULT: int = lib.HGSMI_MAX_GUESTS_DEFAULT
SOCKET_MODE_DEFAULT: int = lib.HGSMI_SOCKET_MODE_DEFAULT
#: doorbell wake-ups per second one guest may cause (``max_doorbells_per_s``)
DOORBELLS_PER_S_DEFAULT: int = lib.HGSMI_DOORBELLS_PER_S_DEFAULT
#: handshakes one process may have under way at once (``max_pending_per_pid``)
PENDING_PER_PID_DEFAULT: int = lib.HGSMI_PENDING_PER_PID_DEFAULT
#: the adaptive spin's cap in microseconds (``spin_us``; 0: never spin)
SPIN_US_DEFAULT: int = lib.HGSMI_SPIN_US_DEFAULT
#: a limit's value for "no limit" (``max_doorbells_per_s``, ``max_guests_per_pid``)
UNLIMITED: int = lib.HGSMI_UNLIMITED
