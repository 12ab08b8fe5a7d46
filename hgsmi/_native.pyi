# Stub for the cffi extension built by native/ffi_build.py (API mode).
# Its contents come from native/hgsmi.cdef; see hgsmi.h for the C API.
from typing import Any

ffi: Any
lib: Any
