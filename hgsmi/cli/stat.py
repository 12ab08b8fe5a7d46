"""``hgsmi stat``: ask a running host for its statistics over the control socket.

Read-only, and no call into the C core: the structs and numbers are the C
headers' (through cffi, :mod:`hgsmi._wire`).  The request is a ``struct hgsmi_hello`` of kind
``HGSMI_HELLO_STAT``; the host answers with a ``struct hgsmi_welcome``, a
``u32`` length and that many bytes of JSON (what the host daemon last gave
``Host.set_stat_reply``), then closes.  Wire layouts (little-endian) are in
``native/include/hgsmi/defs.h``.
"""
from __future__ import annotations

import errno
import json
import socket
import struct
from typing import Any

from .._native import ffi
from .._paths import socket_path
from .._wire import ABI_MAJOR, ABI_MINOR, CTL_MAGIC, HELLO_STAT, WELCOME_SIZE
from ..errors import HgsmiError, HostNotFound, ProtocolError, Timeout, error


def _recv_exact(s: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ProtocolError(errno.EPROTO, f"stat: the host closed after {len(out)} of "
                                              f"{n} bytes")
        out += chunk
    return bytes(out)


def query(name: str, rundir: str | None = None, timeout: float = 3.0) -> dict[str, Any]:
    """The host's statistics as a dict.  Raises :class:`HostNotFound`, :class:`Timeout`."""
    path = socket_path(name, rundir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            what = "no socket" if isinstance(e, FileNotFoundError) else "nobody listens on"
            raise HostNotFound(errno.ENOENT, f"no host {name!r} running ({what} {path})") from None
        try:
            hello = ffi.new("struct hgsmi_hello *", {
                "magic": CTL_MAGIC, "abi_major": ABI_MAJOR, "abi_minor": ABI_MINOR,
                "kind": HELLO_STAT})
            try:
                s.sendall(ffi.buffer(hello))
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused at accept (uid, too many handshakes): the welcome says why
            w = ffi.from_buffer("struct hgsmi_welcome *", _recv_exact(s, WELCOME_SIZE))
            magic, status = int(w.magic), int(w.status)
            if magic != CTL_MAGIC:
                raise ProtocolError(errno.EPROTO, f"stat: {path} does not speak hgsmi")
            if status < 0:
                raise error(status, f"stat: host {name!r} refused")
            (length,) = struct.unpack("<I", _recv_exact(s, 4))
            data = _recv_exact(s, length)
        except TimeoutError:
            raise Timeout(errno.ETIMEDOUT, f"stat: host {name!r} did not answer") from None
    if not data:
        raise HgsmiError(errno.ENODATA, f"host {name!r} publishes no statistics "
                                        "(not run by `hgsmi host`?)")
    try:
        stats = json.loads(data)
    except ValueError:
        raise ProtocolError(errno.EPROTO, f"stat: host {name!r} sent bad JSON") from None
    if not isinstance(stats, dict):
        raise ProtocolError(errno.EPROTO, f"stat: host {name!r} sent JSON that is no object")
    return stats


def human(n: float, unit: str = "B") -> str:
    """1536 -> '1.5 KiB'."""
    for prefix in ("", "Ki", "Mi", "Gi", "Ti"):
        if abs(n) < 1024 or prefix == "Ti":
            return f"{n:.0f} {unit}" if prefix == "" else f"{n:.1f} {prefix}{unit}"
        n /= 1024
    return f"{n} {unit}"


def _channel_lines(channels: dict[str, Any], names: dict[str, Any], indent: str) -> list[str]:
    lines = []
    for ch, c in channels.items():
        label = names.get(ch, {}).get("name", "")
        lines.append(f"{indent}ch {ch:>3} {label:<8} in {c['msgs_in']:>9} msgs "
                     f"{human(c['bytes_in']):>11}"
                     f"   out {c['msgs_out']:>9} msgs {human(c['bytes_out']):>11}")
    return lines


def _counts(d: dict[str, Any]) -> str:
    """'offset 3, protocol 1' of the non-zero counts in ``d``, or 'none'."""
    return ", ".join(f"{k} {v}" for k, v in d.items() if v) or "none"


def _host_lines(st: dict[str, Any]) -> list[str]:
    """The host process, the guests that left and the refusals (absent from old hosts)."""
    lines = []
    p = st.get("process")
    if p:
        lines.append(f"process rss {human(p.get('rss', 0))}  private {human(p.get('private', 0))}"
                     f"  fds {p.get('fds', '?')}  threads {p.get('threads', '?')}  cpu "
                     f"{p.get('cpu_user_s', 0):.2f} s user {p.get('cpu_system_s', 0):.2f} s "
                     "system")
    left = st.get("left")
    if left:
        lines.append(f"left    {left['guests']} guests ({left['cut_off']} cut off)  in "
                     f"{left['msgs_in']} msgs {human(left['bytes_in'])}  out "
                     f"{left['msgs_out']} msgs {human(left['bytes_out'])}  errors "
                     f"{_counts(left['errors'])}")
    if "refusals" in st:  # any reason a host counts, by name
        lines.append(f"refused {st['refused']} guests: {_counts(st['refusals'])}")
    return lines


def render(st: dict[str, Any]) -> str:
    """A human view of a stat reply."""
    names = st.get("channels", {})
    lines = [f"host {st['name']}  pid {st['pid']}  up {st['uptime_s']:.1f} s  "
             f"{st['doorbell']}  segment {human(st['segment_size'])}  "
             f"guests {len(st['guests'])} now, {st['guests_total']} since start, "
             f"{st['refused']} refused",
             f"socket {st['socket']}",
             f"store  {st['blob']['dir']}: {st['blob']['stored']} stored "
             f"({human(st['blob']['bytes_stored'])}), {st['blob']['fetched']} fetched "
             f"({human(st['blob']['bytes_fetched'])}), {st['blob']['failed']} failed",
             *_host_lines(st),
             "channels (all guests since start; C drivers are counted per guest only):"]
    for ch, c in names.items():
        c = {k: c.get(k, 0) for k in ("msgs_in", "bytes_in", "msgs_out", "bytes_out")}
        lines += _channel_lines({ch: c}, names, "  ")
        lines[-1] += f"   [{names[ch]['driver']}]"
    for g in st["guests"]:
        h = g["heap"]
        errs = _counts(g["errors"])
        lines += [
            f"guest {g['id']} (epoch {g['epoch']})",
            f"  host heap  used {human(h['used'])}  peak {human(h['peak'])}  largest free "
            f"{human(h['largest_free'])}  of {human(h['capacity'])}  fragmentation "
            f"{h['fragmentation']:.1%}",
            f"  rings      submit depth {g['submit_depth']}  host buffers in flight "
            f"{g['inflight_host']}  guest buffers in flight {g.get('inflight_guest', 0)} "
            f"(peak {g.get('inflight_guest_peak', 0)})",
            f"  notify     doorbells {g['doorbells']} ({g.get('doorbells_throttled', 0)} "
            f"throttled)  IRQs {g['irqs']}  suppressed {g['irqs_suppressed']}",
            f"  traffic    in {g['msgs_in']} msgs {human(g['bytes_in'])}  out {g['msgs_out']} "
            f"msgs {human(g['bytes_out'])}",
            f"  errors     {errs}",
        ]
        lines += _channel_lines(g["channels"], names, "  ")
    return "\n".join(lines)
