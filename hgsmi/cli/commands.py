"""The ``hgsmi`` command: argument parsing, the commands' output, one-line errors.

Every failure is one line on stderr and a non-zero exit status (1; 2 for
usage), never a traceback (``HGSMI_DEBUG=1`` shows one for bugs).
"""
from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

from ..daemon import config as config_mod

DESCRIPTION = """\
hgsmi: a host and its guests share memory; buffers live in it and only offsets cross.
`hgsmi COMMAND --help` describes each command.

built-in channels: 1 setup, 2 echo, 3 sink, 4 blob; 16-255 are yours (see --config).
The instance name defaults to $HGSMI_NAME or 'hgsmi'; sockets live in
$HGSMI_RUNTIME_DIR, $XDG_RUNTIME_DIR/hgsmi or /tmp/hgsmi-<uid>.
"""

CONFIG_HELP = ("TOML config file (its keys are listed below); command-line options "
               "override it")
LOG_LEVELS = ["debug", "info", "warning", "error"]


class _Help(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; every option's help ends with its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.option_strings and "default" not in text
                and action.default not in (None, False, argparse.SUPPRESS)):
            text += " (default: %(default)s)"
        return text



_LIST = """List the hosts of this user that are running now (the sockets in the runtime
directory whose host answers): name, pid, guests attached, uptime and socket.  A C host
publishes no statistics: its pid, guests and uptime show as '-'."""

_BLOB = """A host keeps what guests send in its store directory, $XDG_DATA_HOME/hgsmi/NAME
(~/.local/share/hgsmi/NAME) unless --store or the config's store says otherwise; it stays
there after the host stops.  `blob ls` lists it, `blob rm` removes blobs (`rm -r` the
directory to clear it all).  The host need not be running."""

def _config_keys() -> str:
    """The config file's keys, as hgsmi.config documents them (for `host --help`)."""
    doc = config_mod.__doc__ or ""
    body = doc.split("::", 1)[-1].split("Anything else", 1)[0]
    return "config file keys (all optional):\n" + body.rstrip() + "\n"


def _add_log_level(p: argparse.ArgumentParser, default: str = "warning",
                   again: bool = False) -> None:
    kw: dict[str, Any] = {"default": argparse.SUPPRESS} if again else {"default": default}
    p.add_argument("--log-level", choices=LOG_LEVELS, help="what goes to stderr's log", **kw)


def _size(text: str) -> int:
    try:
        return config_mod.parse_size(text, "size")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = 0.0
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, not {text!r}")
    return v


_NAME_HELP = "instance name, 1 to 64 of A-Z a-z 0-9 _ . - (default: $HGSMI_NAME or 'hgsmi')"


def _add_common(p: argparse.ArgumentParser, again: bool = False) -> None:
    # again: the workload's own copy, so `guest send --name X` works too
    kw: dict[str, Any] = {"default": argparse.SUPPRESS} if again else {}
    p.add_argument("--name", help=_NAME_HELP, **kw)
    p.add_argument("--runtime-dir", metavar="DIR",
                   help="socket directory (default: $HGSMI_RUNTIME_DIR, "
                        "$XDG_RUNTIME_DIR/hgsmi or /tmp/hgsmi-<uid>)", **kw)


def _add_wait(p: argparse.ArgumentParser, again: bool = False) -> None:
    kw: dict[str, Any] = {"default": argparse.SUPPRESS} if again else {"default": 0.0}
    p.add_argument("--wait", type=_seconds, metavar="SECONDS",
                   help="wait up to SECONDS for a host that is not running yet "
                        "(default 0: fail at once)", **kw)


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0 <= v <= 1 << 20:
        raise argparse.ArgumentTypeError(f"expected seconds (0 or more), not {text!r}")
    return v


def _instance_name(args: argparse.Namespace) -> str:
    """--name, or $HGSMI_NAME / 'hgsmi' when it is not given; an empty --name is refused."""
    if args.name is None:
        return config_mod.default_name()
    if not args.name:  # not the default: an empty $VAR in a script is a mistake
        raise config_mod.ConfigError("--name: the instance name is empty")
    return str(args.name)  # a guest's may be a socket path: Guest() checks it


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="hgsmi", description=DESCRIPTION,
                                     formatter_class=_Help)
    parser.add_argument("-V", "--version", action="version", version=f"hgsmi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                title="commands")
    real_add = sub.add_parser

    def add_parser(*a: Any, **kw: Any) -> argparse.ArgumentParser:
        kw.setdefault("formatter_class", _Help)
        return real_add(*a, **kw)

    sub.add_parser = add_parser  # type: ignore[method-assign]

    p = sub.add_parser("host", help="run a host daemon in the foreground",
                       description="Run a host daemon: serve the built-in channels (2 echo, "
                                   "3 sink, 4 blob) and the config's drivers until SIGTERM "
                                   "or SIGINT, then remove its segments and socket and exit "
                                   "0.  Once it accepts guests it prints one line on stdout: "
                                   "'ready name=NAME socket=PATH store=DIR pid=PID'.  "
                                   "Command-line options override the config file.",
                       epilog=_config_keys())
    _add_common(p)
    p.add_argument("--size", type=_size, help="bytes per guest segment, e.g. 8M, 64k (default 16M)")
    p.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    p.add_argument("--doorbell", choices=config_mod.DOORBELLS, help="doorbell/IRQ backend")
    p.add_argument("--segment", choices=config_mod.SEGMENTS,
                   help="memfd (default: sealed, passed over the socket) or posix (/dev/shm, "
                        "trusts guests not to truncate it)")
    p.add_argument("--store", metavar="DIR",
                   help="blob store directory (default: $XDG_DATA_HOME/hgsmi/<name>, "
                        "i.e. ~/.local/share/hgsmi/<name>; `hgsmi blob` lists and removes "
                        "what is in it)")
    p.add_argument("--ivshmem", metavar="PATH",
                   help="also serve QEMU VMs: listen here as an ivshmem server (-chardev "
                        "socket,path=PATH,id=iv -device ivshmem-doorbell,chardev=iv,vectors=1)")
    _add_log_level(p, "info")
    p.set_defaults(func=cmd_host)

    p = sub.add_parser("guest", help="attach to a host and run a workload",
                       description="Attach to a host and run a workload: send, fetch, "
                                   "echo or load.  The options before the workload may "
                                   "also follow it.")
    _add_common(p)
    _add_wait(p)
    _add_log_level(p)
    gsub = p.add_subparsers(dest="workload", metavar="WORKLOAD", required=True,
                            title="workloads")
    real_gadd = gsub.add_parser

    def gadd_parser(*a: Any, **kw: Any) -> argparse.ArgumentParser:
        kw.setdefault("formatter_class", _Help)
        kw.setdefault("description", kw.get("help", "").capitalize() + ".")
        q = real_gadd(*a, **kw)
        _add_common(q, again=True)
        _add_wait(q, again=True)
        _add_log_level(q, again=True)
        return q

    gsub.add_parser = gadd_parser  # type: ignore[method-assign]
    q = gsub.add_parser("send", help="send files to the host's blob store (verified)")
    q.add_argument("files", nargs="+", metavar="FILE", help="files; '-' reads stdin")
    q.add_argument("--as", dest="as_name", metavar="NAME",
                   help="blob name (one FILE only; default: the file's base name)")
    q.set_defaults(func=cmd_send)
    q = gsub.add_parser("fetch", help="get a stored file back (verified)")
    q.add_argument("blob", metavar="BLOB", help="the blob's name in the host's store")
    q.add_argument("-o", "--output", metavar="FILE", help="where to write it ('-': stdout; "
                                                          "default: ./BLOB)")
    q.set_defaults(func=cmd_fetch)
    q = gsub.add_parser("echo", help="round trips on the echo channel; latency percentiles")
    q.add_argument("--count", type=_positive_int, default=1000, help="round trips")
    q.add_argument("--size", type=_size, default=64, help="bytes per call (default 64)")
    q.set_defaults(func=cmd_echo)
    q = gsub.add_parser("load", help="load generator with a live rate")
    q.add_argument("--seconds", type=_positive_float, default=3.0, help="how long to run")
    q.add_argument("--size", type=_size, default=64 << 10, help="bytes per message (default 64k)")
    q.add_argument("--direction", choices=["g2h", "h2g", "both"], default="both",
                   help="guest to host, host to guest (pushes), or both at once")
    q.set_defaults(func=cmd_load)

    p = sub.add_parser("stat", help="show a running host's statistics (read-only)",
                       description="Show a running host's statistics (read-only).")
    _add_common(p)
    _add_log_level(p)
    p.add_argument("--json", action="store_true", help="print one JSON object (per refresh)")
    p.add_argument("--watch", action="store_true", help="refresh until interrupted")
    p.add_argument("--interval", type=_positive_float, default=1.0, help="--watch period (s)")
    p.set_defaults(func=cmd_stat)

    p = sub.add_parser("list", help="the running hosts of this user", description=_LIST)
    p.add_argument("--runtime-dir", metavar="DIR",
                   help="socket directory (default: $HGSMI_RUNTIME_DIR, "
                        "$XDG_RUNTIME_DIR/hgsmi or /tmp/hgsmi-<uid>)")
    p.add_argument("--json", action="store_true", help="print one JSON array")
    _add_log_level(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("blob", help="list or remove the files in a host's blob store",
                       description=_BLOB)
    _add_log_level(p)
    bsub = p.add_subparsers(dest="workload", metavar="ACTION", required=True, title="actions")
    for action, text in (("ls", "list the blobs: size, time, name"),
                         ("rm", "remove blobs by name")):
        q = bsub.add_parser(action, help=text, description=text.capitalize() + ".",
                            formatter_class=_Help)
        q.add_argument("--name", help=_NAME_HELP)
        q.add_argument("--store", metavar="DIR",
                       help="store directory (default: $XDG_DATA_HOME/hgsmi/NAME)")
        _add_log_level(q, again=True)
        if action == "rm":
            q.add_argument("blobs", nargs="+", metavar="BLOB", help="blob names")
        else:
            q.add_argument("--json", action="store_true", help="print one JSON array")
        q.set_defaults(func=cmd_blob_ls if action == "ls" else cmd_blob_rm)

    p = sub.add_parser("demo", help="host and guest together: move data, report, clean up",
                       description="Start a host (a separate process) and a guest (this "
                                   "one) with no config, move files and calls both ways, "
                                   "print a report, stop the host and check nothing is left.")
    p.add_argument("--size", type=_size, default=16 << 20, help="segment size (default 16M)")
    _add_log_level(p)
    p.set_defaults(func=cmd_demo)

    # The bench front end ships with the package (hgsmi.bench); the transports
    # it runs are imported only when `hgsmi bench` runs.
    from ..bench import runner as bench

    p = sub.add_parser("bench", help="hgsmi against HGCM-style copying and sockets",
                       description=(bench.__doc__ or "").split("\n\n")[0])
    bench.build_parser(p)
    _add_log_level(p)
    p.set_defaults(func=lambda args: bench.main(args=args))
    return parser


# -- host -----------------------------------------------------------------------------
def host_config(args: argparse.Namespace) -> config_mod.HostConfig:
    cfg = config_mod.load(args.config) if args.config else config_mod.HostConfig()
    if args.name is not None:
        cfg.name = config_mod.check_name(args.name, "--name")
    elif cfg.name is None:
        cfg.name = config_mod.check_name(config_mod.default_name(), "$HGSMI_NAME")
    if args.size:
        cfg.size = config_mod.check_segment_size(args.size, "--size")
    if args.doorbell:
        cfg.doorbell = args.doorbell
    if args.segment:
        cfg.segment = args.segment
    if args.store:
        cfg.store = args.store
    if cfg.store and os.path.exists(cfg.store) and not os.path.isdir(cfg.store):
        raise config_mod.ConfigError(f"store: {cfg.store} is a file, not a directory")
    if args.ivshmem:
        cfg.ivshmem = args.ivshmem
    return cfg


def cmd_host(args: argparse.Namespace) -> int:
    from ..daemon.host_daemon import HostDaemon

    return HostDaemon(host_config(args), runtime_dir=args.runtime_dir).run()


# -- guest ----------------------------------------------------------------------------
def _guest(args: argparse.Namespace) -> Any:
    from ..guest import Guest

    # HostNotFound says which: no runtime dir, no socket, or nobody listening.
    return Guest(_instance_name(args), runtime_dir=args.runtime_dir, wait=args.wait)


def _rate_line(verb: str, r: dict[str, Any]) -> str:
    from .progress import human, rate

    return (f"{verb} {r['name']}: {human(r['bytes'])} in {r['seconds']:.3f} s "
            f"({rate(r['bytes'], r['seconds'])}), sha256 {r['sha256']}")


def cmd_send(args: argparse.Namespace) -> int:
    from ..services.clients import BlobClient
    from .progress import Progress

    if args.as_name and len(args.files) > 1:
        raise ValueError("--as names one file; several were given")
    with _guest(args) as g:
        bc = BlobClient(g)
        for path in args.files:
            if path == "-":
                name = args.as_name or "stdin"
                src, size = open(0, "rb", buffering=0, closefd=False), None
            else:
                name = args.as_name or os.path.basename(os.path.normpath(path))
                src = open(path, "rb", buffering=0)
                size = os.fstat(src.fileno()).st_size
            progress = Progress(f"send {name}")
            try:
                r = bc.send(src, name, size, progress)
            finally:
                progress.done()
                src.close()
            print(_rate_line("sent", r) + ", verified by the host", flush=True)
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from ..services import blob_protocol as blob
    from ..services.clients import BlobClient
    from .progress import Progress

    blob.check_name(args.blob)
    out_path = args.output or args.blob
    if out_path != "-":  # say it now, not as the internal .part file's error later
        where = os.path.dirname(os.path.abspath(out_path))
        if os.path.isdir(out_path):
            raise IsADirectoryError(errno.EISDIR, f"-o {out_path}: is a directory")
        if not os.path.isdir(where):
            raise FileNotFoundError(errno.ENOENT, f"-o {out_path}: directory {where} "
                                                  "does not exist")
    progress = Progress(f"fetch {args.blob}")
    with _guest(args) as g:
        bc = BlobClient(g)
        if out_path == "-":
            dst = open(sys.stdout.fileno(), "wb", buffering=0, closefd=False)
            try:
                r = bc.fetch(args.blob, dst, progress)
            finally:
                progress.done()
            print(_rate_line("fetched", r) + ", verified", file=sys.stderr)
            return 0
        tmp = f"{out_path}.part-{os.getpid()}"
        try:
            with open(tmp, "wb", buffering=0) as dst:
                r = bc.fetch(args.blob, dst, progress)
            os.replace(tmp, out_path)
        finally:
            progress.done()
            if os.path.exists(tmp):
                os.unlink(tmp)
    print(_rate_line("fetched", r) + f", verified, written to {out_path}")
    return 0


def cmd_echo(args: argparse.Namespace) -> int:
    from ..services.clients import echo
    from .progress import human

    with _guest(args) as g:
        r = echo(g, args.count, args.size)
    lat = r["latency_us"]
    print(f"echo: {r['count']} calls of {human(r['size'])} in {r['seconds']:.3f} s "
          f"({r['calls_per_s']:.0f} calls/s); latency µs: p50 {lat['p50']:.1f}  "
          f"p90 {lat['p90']:.1f}  p99 {lat['p99']:.1f}  (min {lat['min']:.1f}, "
          f"max {lat['max']:.1f})")
    return 0


def load_summary(r: dict[str, Any]) -> str:
    from .progress import human, rate

    parts = []
    for d in ("g2h", "h2g"):
        m = r[d]
        if m["msgs"] or d in r["direction"] or r["direction"] == "both":
            parts.append(f"{d} {m['msgs']} msgs {human(m['bytes'])} "
                         f"({rate(m['bytes'], r['seconds'])}, "
                         f"{m['msgs'] / r['seconds']:.0f} msgs/s)")
    return f"{r['seconds']:.2f} s of {human(r['size'])} messages: " + "; ".join(parts)


def load_live(r: dict[str, Any]) -> str:
    """The live line of `guest load`: both directions within 80 columns."""
    from .progress import rate

    secs = max(r["seconds"], 1e-9)
    parts = [f"{d} {rate(r[d]['bytes'], secs)} {r[d]['msgs'] / secs:.0f}/s"
             for d in ("g2h", "h2g") if d == r["direction"] or r["direction"] == "both"]
    return f"load {r['seconds']:.1f} s: " + "  ".join(parts)


def cmd_load(args: argparse.Namespace) -> int:
    from ..services.clients import load
    from .progress import Progress

    progress = Progress("load")
    with _guest(args) as g:
        try:
            r = load(g, args.seconds, args.size, args.direction,
                     tick=lambda now: progress.show(load_live(now)))
        finally:
            progress.done()
    print("load: " + load_summary(r))
    return 0


# -- stat, demo, bench ------------------------------------------------------------------
def cmd_stat(args: argparse.Namespace) -> int:
    from .stat import query, render

    name = _instance_name(args)
    tty = sys.stdout.isatty()
    while True:
        doc = query(name, args.runtime_dir)
        if args.json:
            print(json.dumps(doc, separators=(",", ":")), flush=True)
        else:
            text = render(doc)
            if args.watch and tty:  # a wrapped line would scroll the screen it redraws
                sys.stdout.write("\x1b[H\x1b[J")
                cols = shutil.get_terminal_size().columns
                text = "\n".join(line[:cols - 1] for line in text.splitlines())
            print(text, flush=True)
        if not args.watch:
            return 0
        try:
            time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0
        if not args.json and not tty:
            print()


def cmd_list(args: argparse.Namespace) -> int:
    from .running import render, running_hosts

    rows = running_hosts(args.runtime_dir)
    print(json.dumps(rows) if args.json else render(rows))
    return 0


def _store_dir(args: argparse.Namespace) -> str:
    if args.store:
        return str(args.store)
    return config_mod.default_store(config_mod.check_name(_instance_name(args), "--name"))


def cmd_blob_ls(args: argparse.Namespace) -> int:
    from ..services.blob_files import list_blobs
    from .stat import human

    root = _store_dir(args)
    try:
        rows = list_blobs(root)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"no store {root} (no host of that name has "
                                              "run, or --store names another)") from None
    if args.json:
        print(json.dumps(rows))
        return 0
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["mtime"]))
        print(f"{human(r['size']):>10}  {when}  {r['name']}")
    print(f"{len(rows)} blob(s), {human(sum(r['size'] for r in rows))} in {root}",
          file=sys.stderr)
    return 0


def cmd_blob_rm(args: argparse.Namespace) -> int:
    from ..services.blob_files import remove_blobs

    for name in remove_blobs(_store_dir(args), args.blobs):
        print(f"removed {name}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(size=args.size)


# -- main -----------------------------------------------------------------------------
def describe(e: BaseException) -> str:
    """One line for an exception."""
    if isinstance(e, OSError) and e.strerror:
        text = e.strerror
        if e.filename:
            text = f"{e.filename}: {text}"
        return text
    return str(e) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = getattr(args, "log_level", "warning").upper()
    logging.basicConfig(level=level, stream=sys.stderr,
                        format=f"%(asctime)s hgsmi {args.command}[%(process)d] "
                               "%(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    func: Callable[[argparse.Namespace], int] = args.func
    where = args.command + (f" {args.workload}" if getattr(args, "workload", None) else "")
    try:
        return func(args)
    except KeyboardInterrupt:
        print(f"hgsmi {where}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `hgsmi stat --watch | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (OSError, ValueError) as e:  # HgsmiError is an OSError
        if os.environ.get("HGSMI_DEBUG"):
            raise
        print(f"hgsmi {where}: error: {describe(e)}", file=sys.stderr)
        return 1
    except Exception as e:  # a bug: still one line unless asked
        if os.environ.get("HGSMI_DEBUG"):
            raise
        print(f"hgsmi {where}: internal error: {type(e).__name__}: {e} "
              "(HGSMI_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
