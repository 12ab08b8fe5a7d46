"""hgsmi/_views.py: each interpreter's view-safety mechanism, and the forced fallback.

tests/support/views_check.py checks the safety rules (a released view is
free; a kept slice, or an export such as numpy's, is not, until it goes;
in-place writes reach the memory; a reply written meanwhile is kept) over
shared memory, without the cffi extension.  It runs here in-process for
every mechanism this interpreter has, and in a subprocess under every
CPython 3.11+ found on the machine, with its own mechanism (the reference
counts up to 3.13: this is what verifies them there) and with the ``copy``
fallback and (3.12+) PEP 688's ``release`` forced by ``HGSMI_VIEWS``.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hgsmi import _views

from support import views_check

CHECK = Path(__file__).parent / "support" / "views_check.py"
VERSIONS = ("3.11", "3.12", "3.13", "3.14", "3.15")


def _candidates() -> list[str]:
    """Interpreters named python3.N on PATH, under /usr/bin, pyenv's and uv's."""
    found = [sys.executable]
    for v in VERSIONS:
        found += [p for p in (shutil.which(f"python{v}"), f"/usr/bin/python{v}") if p]
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found += sorted(glob.glob(f"{pyenv}/versions/*/bin/python3.[0-9]*"))
    uv = shutil.which("uv")
    if uv:
        out = subprocess.run([uv, "python", "list", "--only-installed", "--output-format",
                              "json"], capture_output=True, text=True, timeout=30)
        if out.returncode == 0:
            import json

            found += [e["path"] for e in json.loads(out.stdout) if e.get("path")]
    return found


def _interpreters() -> dict[str, tuple[str, str]]:
    """``{"3.12": (path, expected mechanism)}``: one working CPython 3.11+ per version
    (pyenv shims of versions not selected fail, and are left out)."""
    probe = ("import sys, sysconfig; print(sys.implementation.name, "
             "'%d.%d' % sys.version_info[:2], sysconfig.get_config_var('Py_GIL_DISABLED') or 0)")
    out: dict[str, tuple[str, str]] = {}
    seen = set()
    for path in _candidates():
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        try:
            got = subprocess.run([path, "-c", probe], capture_output=True, text=True,
                                 timeout=30)
        except OSError:
            continue
        if got.returncode != 0:
            continue
        impl, version, nogil = got.stdout.split()
        if impl != "cpython" or tuple(map(int, version.split("."))) < (3, 11):
            continue
        key = version + ("t" if nogil != "0" else "")
        expect = ("copy" if nogil != "0" else "refcount"
                  if tuple(map(int, version.split("."))) < _views.VERIFIED else "release")
        out.setdefault(key, (path, expect))
    return out


INTERPRETERS = _interpreters()


def _run(path: str, forced: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HGSMI_VIEWS", "PYTHONPATH")}
    args = [path, str(CHECK)] + ([forced] if forced else [])
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("forced", [None, "copy", "release"])
def test_each_cpython_selects_a_mechanism_that_keeps_views_safe(version, forced):
    if version not in INTERPRETERS:
        pytest.skip(f"no CPython {version} on this machine")
    if forced == "release" and version == "3.11":
        pytest.skip("PEP 688 needs 3.12")
    path, expect = INTERPRETERS[version]
    got = _run(path, forced)
    assert got.returncode == 0, got.stdout + got.stderr
    assert got.stdout.split() == ["ok", forced or expect]


def test_free_threaded_builds_if_any_fall_back_to_copies():
    nogil = [v for v in INTERPRETERS if v.endswith("t")]
    if not nogil:
        pytest.skip("no free-threaded CPython on this machine")
    for v in nogil:
        got = _run(INTERPRETERS[v][0], None)
        assert got.stdout.split() == ["ok", "copy"], got.stderr


@pytest.mark.parametrize("mechanism", _views.MECHANISMS)
def test_every_mechanism_of_this_interpreter_in_process(mechanism):
    try:
        region = _views.region_class(mechanism)
    except ValueError:
        assert mechanism == "release" and sys.version_info < (3, 12)
        pytest.skip("PEP 688 needs 3.12")
    views_check.check(_views, region)
    views_check.check_batch(_views, _views.region_class(mechanism, batch=True))
    views_check.check_single(_views, mechanism)


def test_the_library_uses_the_native_mechanism_unless_forced():
    assert _views.MECHANISM == (os.environ.get("HGSMI_VIEWS") or _views.native_mechanism())
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if version in INTERPRETERS and not version.endswith("t"):
        assert _views.native_mechanism() == INTERPRETERS[version][1]


def test_an_unknown_or_impossible_mechanism_is_refused():
    with pytest.raises(ValueError, match="not one of"):
        _views.choose("guess")
    if sys.version_info < (3, 12):
        with pytest.raises(ValueError, match="PEP 688"):
            _views.choose("release")


def test_a_forced_mechanism_reaches_the_library():
    # A fresh interpreter: the choice is made once, at import.
    env = dict(os.environ, HGSMI_VIEWS="copy")
    got = subprocess.run([sys.executable, "-c", "import hgsmi.lease as l, hgsmi._views as v; "
                          "print(v.MECHANISM, l.Lease.__mro__[1].__name__)"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert got.stdout.split() == ["copy", "_CopiedSingle"], got.stderr
