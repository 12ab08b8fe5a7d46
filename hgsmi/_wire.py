"""Every wire number and every default of the C core, read from it.

The C headers (``native/include/hgsmi/defs.h`` for the wire, ``hgsmi.h``
for the host's defaults) are the one place these are written; cffi gives
their values to Python as ``lib.HGSMI_*`` (``native/hgsmi.cdef``), and every
Python module takes them from here instead of writing them again.  A
number that is not here is Python's own (a service's protocol, a batch
size), defined once where it is used.  Each group is read by :func:`_c`,
which names the C constant ``HGSMI_<name>``: a misspelt one fails at import.
"""
from __future__ import annotations

from ._native import ffi, lib


def _c(*names: str) -> tuple[int, ...]:
    return tuple(getattr(lib, "HGSMI_" + name) for name in names)


# -- versions: the segment layout and handshake (another major is refused) -----
ABI_MAJOR, ABI_MINOR = _c("ABI_MAJOR", "ABI_MINOR")

# -- channels (the buffer header's channel byte) -------------------------------
# SETUP is served by the C core (QUERY_CONF, host flags); USER_FIRST..255 are the user's.
(CH_SETUP, CH_ECHO, CH_SINK, CH_BLOB, CH_BUILTIN_LAST, CH_USER_FIRST,
 NUMBER_OF_CHANNELS) = _c("CH_SETUP", "CH_ECHO", "CH_SINK", "CH_BLOB", "CH_BUILTIN_LAST",
                          "CH_USER_FIRST", "NUMBER_OF_CHANNELS")

# -- the setup channel's command (channel_info) that reads a host setting, and its indices
(CC_QUERY_CONF, CONF_GUEST_HEAP_SIZE, CONF_HOST_HEAP_SIZE, CONF_MAX_MESSAGE, CONF_RING_ENTRIES,
 CONF_ABI_VERSION, CONF_MAX_INFLIGHT) = _c(
    "CC_QUERY_CONF", "CONF_GUEST_HEAP_SIZE", "CONF_HOST_HEAP_SIZE", "CONF_MAX_MESSAGE",
    "CONF_RING_ENTRIES", "CONF_ABI_VERSION", "CONF_MAX_INFLIGHT")

# -- buffers -------------------------------------------------------------------
#: bytes before a buffer's data: its data starts at offset + BUFFER_HEADER_SIZE
BUFFER_HEADER_SIZE: int = ffi.sizeof("struct hgsmi_buffer_header")
#: header + tail: what a buffer costs beyond its data
(BUFFER_OVERHEAD,) = _c("BUFFER_OVERHEAD")

# -- control socket handshake --------------------------------------------------
CTL_MAGIC, HELLO_ATTACH, HELLO_STAT = _c("CTL_MAGIC", "HELLO_ATTACH", "HELLO_STAT")
HELLO_SIZE: int = ffi.sizeof("struct hgsmi_hello")
WELCOME_SIZE: int = ffi.sizeof("struct hgsmi_welcome")

# -- the names the API takes for the C enums -----------------------------------
#: doorbell (and IRQ) backend by name: ``Host(doorbell=...)``, ``doorbell =`` in TOML
BACKENDS: dict[str, int] = dict(zip(("eventfd", "semaphore"),
                                    _c("BACKEND_EVENTFD", "BACKEND_SEMAPHORE"), strict=True))
#: where a guest's segment lives, by name: ``Host(segment=...)``, ``segment =`` in TOML
SEGMENTS: dict[str, int] = dict(zip(("memfd", "posix"),
                                    _c("SEGMENT_MEMFD", "SEGMENT_POSIX"), strict=True))

# -- the host's defaults (struct hgsmi_host_config: 0 in a field means these) ----
# DOORBELLS_PER_S: wake-ups per second one guest may cause (``max_doorbells_per_s``);
# PENDING_PER_PID: handshakes one process may have under way (``max_pending_per_pid``);
# SPIN_US: the adaptive spin's cap in microseconds (``spin_us``; 0: never spin).
(SEGMENT_SIZE_DEFAULT, RING_ENTRIES_DEFAULT, GUEST_HEAP_PERCENT_DEFAULT, MAX_GUESTS_DEFAULT,
 SOCKET_MODE_DEFAULT, DOORBELLS_PER_S_DEFAULT, PENDING_PER_PID_DEFAULT, SPIN_US_DEFAULT) = _c(
    "SEGMENT_SIZE_DEFAULT", "RING_ENTRIES_DEFAULT", "GUEST_HEAP_PERCENT_DEFAULT",
    "MAX_GUESTS_DEFAULT", "SOCKET_MODE_DEFAULT", "DOORBELLS_PER_S_DEFAULT",
    "PENDING_PER_PID_DEFAULT", "SPIN_US_DEFAULT")
#: a limit's value for "no limit" (``max_doorbells_per_s``, ``max_guests_per_pid``)
(UNLIMITED,) = _c("UNLIMITED")
