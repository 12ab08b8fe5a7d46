"""`hgsmi --help` and every subcommand's: described, every option with help, no duplicates."""
from __future__ import annotations

import argparse
import io
import re

import pytest

from hgsmi.cli import commands as cli
from hgsmi.cli.progress import Progress
from hgsmi.daemon import config as config_mod


def parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """Every parser of the command tree, by its command line."""
    out = []
    todo = [("hgsmi", cli.build_parser())]
    while todo:
        path, p = todo.pop()
        out.append((path, p))
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                todo.extend((f"{path} {n}", sp) for n, sp in a.choices.items())
    return out


@pytest.mark.parametrize("path,parser", parsers(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_command_and_option_is_described(path, parser):
    assert parser.description, f"{path}: no description"
    text = parser.format_help()
    for a in parser._actions:
        if isinstance(a, (argparse._HelpAction, argparse._VersionAction,
                          argparse._SubParsersAction)):
            continue
        assert a.help, f"{path}: {a.option_strings or a.dest} has no help"
        if a.option_strings and a.default not in (None, False, argparse.SUPPRESS):
            assert "default" in (a.help % vars(a) if "%" in a.help else a.help) or \
                   "(default: " in text, f"{path}: {a.option_strings} hides its default"
    if path != "hgsmi":
        assert "--log-level" in text, f"{path}: no --log-level"


def test_top_level_lists_each_command_once():
    text = cli.build_parser().format_help()
    for command in ("host", "guest", "stat", "demo", "bench", "list", "blob"):
        assert len(re.findall(rf"^\s+{command}\s", text, re.M)) == 1, (command, text)


def test_fetch_names_host_and_blob_differently():
    (fetch,) = [p for path, p in parsers() if path == "hgsmi guest fetch"]
    text = fetch.format_usage()
    assert "--name NAME" in text and "BLOB" in text and text.count("NAME") == 1, text


def test_host_help_lists_every_config_key():
    (host,) = [p for path, p in parsers() if path == "hgsmi host"]
    text = host.format_help()
    for key in sorted(config_mod._TOP | set(config_mod._LIMITS)):
        assert re.search(rf"^\s*\[?{key}\b", text, re.M), f"{key} missing from host --help"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("columns", [80, 120])
def test_live_lines_fit_the_terminal(monkeypatch, columns):
    """`guest load`'s live line keeps both directions within the width, and any
    live line is cut to it, so its carriage-return rewrite never wraps."""
    monkeypatch.setenv("COLUMNS", str(columns))
    now = {"seconds": 2.5, "size": 65536, "direction": "both",
           "g2h": {"msgs": 123456789, "bytes": 123456789 * 65536},
           "h2g": {"msgs": 98765432, "bytes": 98765432 * 65536}}
    live = cli.load_live(now)
    assert len(live) < 80 and "g2h" in live and "h2g" in live, live
    out = _Tty()
    p = Progress("x", stream=out)
    p.show("y" * 500)
    assert max(len(part) for part in out.getvalue().split("\r")) < columns
