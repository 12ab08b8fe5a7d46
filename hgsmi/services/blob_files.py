"""A host's blob store directory as files: list, remove, and clear stale uploads.

The store of host NAME is ``$XDG_DATA_HOME/hgsmi/NAME`` (by default
``~/.local/share/hgsmi/NAME``) unless ``store``/``--store`` says otherwise.
Blobs are plain files named as sent; an upload in progress is a hidden
``.upload-PID-N.part`` file that becomes the blob once verified.
"""
from __future__ import annotations

import os
import re
from typing import Any

from . import blob_protocol as blob

_PART = re.compile(r"^\.upload-(\d+)-\d+\.part$")


def list_blobs(root: str) -> list[dict[str, Any]]:
    """The blobs in ``root``: name, size, mtime.  ``FileNotFoundError`` if there is no store."""
    out = []
    with os.scandir(root) as it:
        for e in it:
            if e.name.startswith(".") or not e.is_file(follow_symlinks=False):
                continue
            st = e.stat(follow_symlinks=False)
            out.append({"name": e.name, "size": st.st_size, "mtime": st.st_mtime})
    return sorted(out, key=lambda r: r["name"])


def remove_blobs(root: str, names: list[str]) -> list[str]:
    """Remove the named blobs; return the names removed.  ``FileNotFoundError`` names
    the first blob that is not there (nothing after it is removed)."""
    done = []
    for name in names:
        path = os.path.join(root, blob.check_name(name))
        try:
            os.unlink(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"no blob {name!r} in {root}") from None
        done.append(name)
    return done


def remove_stale_uploads(root: str) -> int:
    """Remove the ``.part`` uploads of hosts that are no longer running; return how many.

    A host that was killed mid-upload leaves one; the next host of the store
    calls this at start.
    """
    n = 0
    try:
        entries = os.listdir(root)
    except FileNotFoundError:
        return 0
    for entry in entries:
        m = _PART.match(entry)
        if not m or _alive(int(m.group(1))):
            continue
        try:
            os.unlink(os.path.join(root, entry))
            n += 1
        except FileNotFoundError:
            pass
    return n


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
