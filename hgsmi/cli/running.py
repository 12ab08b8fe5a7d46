"""``hgsmi list``: the hosts of this user that are running now, from their sockets."""
from __future__ import annotations

import errno
import os
from typing import Any

from .._paths import runtime_dir
from ..errors import HgsmiError, HostNotFound
from .stat import query


def running_hosts(rundir: str | None = None, timeout: float = 1.0) -> list[dict[str, Any]]:
    """One dict per socket in the runtime directory whose host answers.

    Keys: name, pid, guests, uptime_s, socket (pid/guests/uptime_s are None
    for a host that publishes no statistics, such as a C host).  A socket
    nobody listens on (a host that died) is left out.  Never raises for one
    host's failure; ``FileNotFoundError`` if the directory does not exist.
    """
    where = runtime_dir(rundir)
    out: list[dict[str, Any]] = []
    try:
        entries = sorted(os.listdir(where))
    except FileNotFoundError:
        if rundir:  # a directory the user named: say it is not there
            raise FileNotFoundError(errno.ENOENT, f"runtime directory {where} does not "
                                                  "exist") from None
        return out  # no host has run yet
    for entry in entries:
        if not entry.endswith(".sock"):
            continue
        name, path = entry[:-len(".sock")], os.path.join(where, entry)
        row: dict[str, Any] = {"name": name, "pid": None, "guests": None,
                               "uptime_s": None, "socket": path}
        try:
            st = query(path, timeout=timeout)
        except HostNotFound:
            continue  # stale: nobody listens
        except HgsmiError as e:
            if e.errno != errno.ENODATA:
                row["error"] = e.strerror
        else:
            row.update(pid=st.get("pid"), guests=len(st.get("guests", [])),
                       uptime_s=st.get("uptime_s"))
        out.append(row)
    return out


def uptime(seconds: float | None) -> str:
    """'3d 04:05:06', '04:05:06' or '-'."""
    if seconds is None:
        return "-"
    s = int(seconds)
    d, s = divmod(s, 86400)
    text = f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{d}d {text}" if d else text


def render(rows: list[dict[str, Any]]) -> str:
    """A table: NAME PID GUESTS UPTIME SOCKET."""
    if not rows:
        return "no host is running"
    lines = [f"{'NAME':<16} {'PID':>7} {'GUESTS':>6} {'UPTIME':>11}  SOCKET"]
    for r in rows:
        pid = "-" if r["pid"] is None else str(r["pid"])
        guests = "-" if r["guests"] is None else str(r["guests"])
        lines.append(f"{r['name']:<16} {pid:>7} {guests:>6} {uptime(r['uptime_s']):>11}  "
                     f"{r['socket']}")
    return "\n".join(lines)
