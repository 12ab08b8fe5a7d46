"""Channel drivers named in a config: Python callables or C functions in shared libraries.

A driver spec is ``"package.module:function"`` (a Python ``handler(msg)``,
as for :meth:`Host.register`) or ``"/path/libdriver.so:symbol"`` (a C
``hgsmi_handler_fn``, registered with :meth:`Host.register_c`: its buffers
never enter Python).  A spec whose part before the last ``:`` contains a
``/`` or ends in ``.so`` (or ``.so.N``) is a C driver; a relative path is
resolved against the config file's directory.

Loading fails with :class:`DriverError` (a ``ValueError``) naming the driver
and the reason: no such module, the import raised, no such attribute, not
callable, no such library or symbol.
"""
from __future__ import annotations

import ctypes
import dataclasses
import errno
import importlib
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from .._native import ffi
from ..errors import HgsmiError, RemoteError

log = logging.getLogger("hgsmi.drivers")

_C_LIB = re.compile(r"(/|\.so(\.\d+)*$)")
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")


class DriverError(ValueError):
    """A driver could not be loaded; the message names it and says why."""


@dataclasses.dataclass
class Driver:
    spec: str
    kind: str  #: "python" or "c"
    handler: Callable[[Any], Any] | None = None  #: python: the guarded handler
    fn: Any = None  #: c: the hgsmi_handler_fn pointer
    lib: Any = None  #: c: the loaded library, kept alive


def is_c_spec(spec: str) -> bool:
    return bool(_C_LIB.search(spec.rpartition(":")[0]))


def load(spec: str, base_dir: str = ".") -> Driver:
    """Resolve a driver spec; :class:`DriverError` if it cannot be loaded."""
    if ":" not in spec:
        raise DriverError(f"driver {spec!r}: expected \"package.module:function\" "
                          "or \"/path/lib.so:symbol\"")
    return load_c(spec, base_dir) if is_c_spec(spec) else load_python(spec, base_dir)


def load_python(spec: str, base_dir: str = ".") -> Driver:
    modname, _, attr = spec.partition(":")
    if not _DOTTED.match(modname) or not _DOTTED.match(attr):
        raise DriverError(f"driver {spec!r}: not a \"package.module:function\" name")
    if base_dir not in sys.path:
        sys.path.insert(0, base_dir)  # drivers may live next to the config
    try:
        obj: Any = importlib.import_module(modname)
    except ModuleNotFoundError as e:
        if e.name and modname.startswith(e.name):
            raise DriverError(f"driver {spec!r}: no module named {e.name!r}") from None
        raise DriverError(f"driver {spec!r}: import failed: {_one_line(e)}") from None
    except BaseException as e:  # the driver's own code ran and failed
        if isinstance(e, KeyboardInterrupt):
            raise
        raise DriverError(f"driver {spec!r}: import failed: {_one_line(e)}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise DriverError(f"driver {spec!r}: {modname} has no attribute {attr!r}") from None
    if not callable(obj):
        raise DriverError(f"driver {spec!r}: {attr} is not callable")
    return Driver(spec, "python", handler=guard(spec, obj))


def load_c(spec: str, base_dir: str = ".") -> Driver:
    path, _, symbol = spec.rpartition(":")
    if not symbol.isidentifier():
        raise DriverError(f"driver {spec!r}: {symbol!r} is not a C symbol name")
    path = os.path.join(base_dir, os.path.expanduser(path))
    if not os.path.exists(path):
        raise DriverError(f"driver {spec!r}: no such library {path}")
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise DriverError(f"driver {spec!r}: cannot load: {e}") from None
    try:
        addr = ctypes.cast(getattr(lib, symbol), ctypes.c_void_p).value
    except AttributeError:
        raise DriverError(f"driver {spec!r}: {path} has no symbol {symbol!r}") from None
    return Driver(spec, "c", fn=ffi.cast("hgsmi_handler_fn", addr), lib=lib)


def guard(spec: str, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Wrap a Python driver: an exception fails that buffer with one log line."""
    def guarded(msg: Any) -> Any:
        try:
            return fn(msg)
        except HgsmiError:
            raise
        except Exception as e:
            log.debug("driver %s raised", spec, exc_info=True)
            raise RemoteError(errno.EIO, f"driver {spec} raised {_one_line(e)}") from None
    guarded.__name__ = getattr(fn, "__name__", "driver")
    return guarded


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
