"""The ``hgsmi`` command: argument parsing, the commands' output, one-line errors.

Every failure is one line on stderr and a non-zero exit status (1; 2 for
usage), never a traceback (``HGSMI_DEBUG=1`` shows one for bugs).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any, Callable

from . import config as config_mod

DESCRIPTION = """\
hgsmi: a host and its guests share memory; buffers live in it and only offsets cross.

commands:
  host    run a host daemon in the foreground (prints a 'ready' line; SIGTERM stops it)
  guest   attach to a host and run a workload: send, fetch, echo, load
  stat    show a running host's heaps, rings, doorbells, IRQs, traffic and errors
  demo    start a host and a guest, move data both ways, report, clean up
  bench   hgsmi against HGCM-style copying and a socket RPC, side by side

built-in channels: 1 setup, 2 echo, 3 sink, 4 blob; 16-255 are yours (see --config).
The instance name defaults to $HGSMI_NAME or 'hgsmi'; sockets live in
$HGSMI_RUNTIME_DIR, $XDG_RUNTIME_DIR/hgsmi or /tmp/hgsmi-<uid>.
"""

CONFIG_HELP = "TOML config file: name, size, doorbell, allowed_uids, store, [limits], [channels.N]"


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


def _add_common(p: argparse.ArgumentParser, again: bool = False) -> None:
    # again: the workload's own copy, so `guest send --name X` works too
    kw = {"default": argparse.SUPPRESS} if again else {}
    p.add_argument("--name", help="instance name (default: $HGSMI_NAME or 'hgsmi')", **kw)
    p.add_argument("--runtime-dir", metavar="DIR", help="socket directory", **kw)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="hgsmi", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-V", "--version", action="version", version=f"hgsmi {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("host", help="run a host daemon in the foreground",
                       description="Run a host daemon: serve the built-in channels (2 echo, "
                                   "3 sink, 4 blob) and the config's drivers until SIGTERM "
                                   "or SIGINT, then remove its segments and socket and exit "
                                   "0.  Once it accepts guests it prints one line on stdout: "
                                   "'ready name=NAME socket=PATH store=DIR pid=PID'.  "
                                   "Command-line options override the config file.")
    _add_common(p)
    p.add_argument("--size", type=_size, help="bytes per guest segment, e.g. 8M, 64k (default 16M)")
    p.add_argument("--config", metavar="FILE", help=CONFIG_HELP)
    p.add_argument("--doorbell", choices=config_mod.DOORBELLS, help="doorbell/IRQ backend")
    p.add_argument("--segment", choices=config_mod.SEGMENTS,
                   help="memfd (default: sealed, passed over the socket) or posix (/dev/shm, "
                        "trusts guests not to truncate it)")
    p.add_argument("--store", metavar="DIR",
                   help="blob store directory (default: $XDG_DATA_HOME/hgsmi/<name>)")
    p.add_argument("--ivshmem", metavar="PATH",
                   help="also serve QEMU VMs: listen here as an ivshmem server (-chardev "
                        "socket,path=PATH,id=iv -device ivshmem-doorbell,chardev=iv,vectors=1)")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"], help="stderr log level")
    p.set_defaults(func=cmd_host)

    p = sub.add_parser("guest", help="attach to a host and run a workload",
                       description="Attach to a host and run a workload.")
    _add_common(p)
    gsub = p.add_subparsers(dest="workload", metavar="WORKLOAD", required=True)
    q = gsub.add_parser("send", help="send files to the host's blob store (verified)")
    q.add_argument("files", nargs="+", metavar="FILE", help="files; '-' reads stdin")
    q.add_argument("--as", dest="as_name", metavar="NAME",
                   help="blob name (one FILE only; default: the file's base name)")
    _add_common(q, again=True)
    q.set_defaults(func=cmd_send)
    q = gsub.add_parser("fetch", help="get a stored file back (verified)")
    q.add_argument("blob", metavar="NAME")
    q.add_argument("-o", "--output", metavar="FILE", help="where to write it ('-': stdout; "
                                                          "default: ./NAME)")
    _add_common(q, again=True)
    q.set_defaults(func=cmd_fetch)
    q = gsub.add_parser("echo", help="round trips on the echo channel; latency percentiles")
    q.add_argument("--count", type=_positive_int, default=1000)
    q.add_argument("--size", type=_size, default=64, help="bytes per call (default 64)")
    _add_common(q, again=True)
    q.set_defaults(func=cmd_echo)
    q = gsub.add_parser("load", help="load generator with a live rate")
    q.add_argument("--seconds", type=_positive_float, default=3.0)
    q.add_argument("--size", type=_size, default=64 << 10, help="bytes per message (default 64k)")
    q.add_argument("--direction", choices=["g2h", "h2g", "both"], default="both")
    _add_common(q, again=True)
    q.set_defaults(func=cmd_load)

    p = sub.add_parser("stat", help="show a running host's statistics (read-only)",
                       description="Show a running host's statistics (read-only).")
    _add_common(p)
    p.add_argument("--json", action="store_true", help="print one JSON object (per refresh)")
    p.add_argument("--watch", action="store_true", help="refresh until interrupted")
    p.add_argument("--interval", type=_positive_float, default=1.0, help="--watch period (s)")
    p.set_defaults(func=cmd_stat)

    p = sub.add_parser("demo", help="host and guest together: move data, report, clean up",
                       description="Start a host (a separate process) and a guest (this "
                                   "one) with no config, move files and calls both ways, "
                                   "print a report, stop the host and check nothing is left.")
    p.add_argument("--size", type=_size, default=16 << 20, help="segment size (default 16M)")
    p.set_defaults(func=cmd_demo)

    try:
        from . import bench
    except ImportError:  # not there yet: say where the benchmarks are
        bench = None
    if bench is not None and hasattr(bench, "build_parser"):
        p = sub.add_parser("bench", help="hgsmi against HGCM-style copying and sockets",
                           description=(bench.__doc__ or "").split("\n\n")[0])
        bench.build_parser(p)
        p.set_defaults(func=lambda args: bench.main(args=args))
    else:
        p = sub.add_parser("bench", help="(benchmarks live in `make bench` for now)")
        p.set_defaults(func=cmd_bench)
    return parser


# -- host -----------------------------------------------------------------------------
def host_config(args: argparse.Namespace) -> config_mod.HostConfig:
    cfg = config_mod.load(args.config) if args.config else config_mod.HostConfig()
    if args.name:
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
    if args.ivshmem:
        cfg.ivshmem = args.ivshmem
    return cfg


def cmd_host(args: argparse.Namespace) -> int:
    from .daemon import HostDaemon

    return HostDaemon(host_config(args), runtime_dir=args.runtime_dir).run()


# -- guest ----------------------------------------------------------------------------
def _guest(args: argparse.Namespace) -> Any:
    from .errors import HostNotFound
    from .guest import Guest
    from .stat import socket_path

    name = args.name or config_mod.default_name()
    try:
        return Guest(name, runtime_dir=args.runtime_dir)
    except HostNotFound as e:
        raise HostNotFound(e.errno, f"no host {name!r} is running "
                                    f"(no socket {socket_path(name, args.runtime_dir)})") from None


def _rate_line(verb: str, r: dict[str, Any]) -> str:
    from .progress import human, rate

    return (f"{verb} {r['name']}: {human(r['bytes'])} in {r['seconds']:.3f} s "
            f"({rate(r['bytes'], r['seconds'])}), sha256 {r['sha256']}")


def cmd_send(args: argparse.Namespace) -> int:
    from .client import BlobClient
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
    from . import blob
    from .client import BlobClient
    from .progress import Progress

    blob.check_name(args.blob)
    out_path = args.output or args.blob
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
    from .client import echo
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


def cmd_load(args: argparse.Namespace) -> int:
    from .client import load
    from .progress import Progress

    progress = Progress("load")
    with _guest(args) as g:
        try:
            r = load(g, args.seconds, args.size, args.direction,
                     tick=lambda now: progress.show(load_summary(now)))
        finally:
            progress.done()
    print("load: " + load_summary(r))
    return 0


# -- stat, demo, bench ------------------------------------------------------------------
def cmd_stat(args: argparse.Namespace) -> int:
    from .stat import query, render

    name = args.name or config_mod.default_name()
    tty = sys.stdout.isatty()
    while True:
        doc = query(name, args.runtime_dir)
        if args.json:
            print(json.dumps(doc, separators=(",", ":")), flush=True)
        else:
            if args.watch and tty:
                sys.stdout.write("\x1b[H\x1b[J")
            print(render(doc), flush=True)
        if not args.watch:
            return 0
        try:
            time.sleep(args.interval)
        except KeyboardInterrupt:
            return 0
        if not args.json and not tty:
            print()


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(size=args.size)


def cmd_bench(args: argparse.Namespace) -> int:
    print("hgsmi bench: the benchmarks live in `make bench` for now", file=sys.stderr)
    return 2


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
