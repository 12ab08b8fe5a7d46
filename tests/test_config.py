"""Config files, driver loading, blob names and the CLI's error lines, in-process."""
from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from hgsmi.cli import commands as cli
from hgsmi.daemon import config, drivers
from hgsmi.services import blob_protocol as blob
from hgsmi.services.clients import percentiles

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("text,expected", [
    (4096, 4096), ("65536", 65536), ("64k", 64 << 10), ("64K", 64 << 10), ("16M", 16 << 20),
    ("16MiB", 16 << 20), ("1g", 1 << 30), (" 8 M ", 8 << 20), ("2kb", 2048),
])
def test_parse_size(text, expected):
    assert config.parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1", "1.5M", "16T", 0, -5, True, None, [1]])
def test_parse_size_rejects(text):
    with pytest.raises(config.ConfigError):
        config.parse_size(text)


def write(tmp_path: Path, text: str) -> str:
    p = tmp_path / "host.toml"
    p.write_text(textwrap.dedent(text))
    return str(p)


def test_full_config(tmp_path):
    cfg = config.load(write(tmp_path, """
        name = "vram0"
        size = "8M"
        doorbell = "semaphore"
        segment = "posix"
        allowed_uids = [0, 1000]
        store = "blobs"
        [limits]
        ring_entries = 256
        max_guests = 4
        max_inflight = 64
        spin_us = 10
        guest_heap_percent = 75
        max_message = 4096
        max_doorbells_per_s = 0
        [channels.16]
        driver = "pkg.mod:fn"
        name = "mine"
        [channels.2]
        driver = "./libx.so:echo2"
        [channels]
        17 = "other:handler"
    """))
    assert (cfg.name, cfg.size, cfg.doorbell) == ("vram0", 8 << 20, "semaphore")
    assert cfg.segment == "posix"
    assert cfg.allowed_uids == [0, 1000]
    assert cfg.store == str(tmp_path / "blobs")
    assert cfg.limits() == {"ring_entries": 256, "max_guests": 4, "max_inflight": 64,
                            "spin_us": 10, "guest_heap_percent": 75, "max_message": 4096,
                            "max_doorbells_per_s": 0, "max_pending_per_pid": 8,
                            "max_guests_per_pid": 0}
    assert cfg.channels[16].name == "mine" and cfg.channels[16].driver == "pkg.mod:fn"
    assert cfg.channels[2].name == "ch2" and cfg.channels[17].driver == "other:handler"
    assert cfg.base_dir == str(tmp_path)


def test_empty_config_is_defaults(tmp_path):
    cfg = config.load(write(tmp_path, ""))
    assert cfg.name is None and cfg.size == 16 << 20 and cfg.channels == {}


@pytest.mark.parametrize("text,expected", [
    ('colour = 1', "unknown key 'colour'"),
    ('[limits]\nfoo = 1', "unknown key 'limits.foo'"),
    ('[channels.16]\ndriver = "a:b"\nctx = 1', "unknown key 'channels.16.ctx'"),
    ('name = "a/b"', "name: instance name 'a/b' may only contain letters, digits"),
    ('name = "' + "a" * 65 + '"',
     "is too long: 65 characters, at most 64 (HGSMI_INSTANCE_NAME_MAX)"),
    ('name = 3', "name: 3 is not a valid instance name"),
    ('name = ".hidden"', "may not start with '.'"),
    ('size = "1k"', "out of range"),
    ('size = "4G"', "out of range"),
    ('doorbell = "pigeon"', "doorbell"),
    ('segment = "tmpfs"', "segment: 'tmpfs' is not one of memfd, posix"),
    ('segment = 1', "segment"),
    ('[limits]\nmax_message = -1', "limits.max_message: -1 is out of range"),
    ('[limits]\nmax_doorbells_per_s = "fast"', "limits.max_doorbells_per_s: expected an integer"),
    ('allowed_uids = "me"', "allowed_uids"),
    ('allowed_uids = [-1]', "allowed_uids"),
    ('[limits]\nring_entries = 100', "power of two"),
    ('[limits]\nmax_guests = 0', "max_guests"),
    ('[limits]\nspin_us = true', "expected an integer"),
    ('[limits]\nguest_heap_percent = 100', "guest_heap_percent"),
    ('limits = 3', "expected a table"),
    ('[channels.0]\ndriver = "a:b"', "channels.0"),
    ('[channels.1]\ndriver = "a:b"', "channels.1"),
    ('[channels.256]\ndriver = "a:b"', "channels.256"),
    ('[channels.x]\ndriver = "a:b"', "channels.x"),
    ('[channels.16]\nname = "n"', "channels.16.driver"),
    ('[channels.16]\ndriver = "nocolon"', "channels.16.driver"),
    ('store = 3', "store"),
    ('name = ', "not valid TOML"),
])
def test_bad_configs(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as e:
        config.load(path)
    msg = str(e.value)
    assert expected in msg and path in msg and "\n" not in msg


def test_missing_config_file(tmp_path):
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(str(tmp_path / "nope.toml"))


# -- drivers --------------------------------------------------------------------------------
def test_python_driver(tmp_path):
    (tmp_path / "drvmod_ok.py").write_text(
        "def f(msg):\n    return b'hi'\n"
        "class K:\n    @staticmethod\n    def g(msg):\n        return None\n")
    d = drivers.load("drvmod_ok:f", str(tmp_path))
    assert d.kind == "python" and d.handler(None) == b"hi"
    assert drivers.load("drvmod_ok:K.g", str(tmp_path)).kind == "python"


@pytest.mark.parametrize("spec,expected", [
    ("no_such_mod_abc:f", "no module named 'no_such_mod_abc'"),
    ("drvmod_bad:f", "import failed: ZeroDivisionError"),
    ("drvmod_imp:f", "import failed: ModuleNotFoundError"),
    ("drvmod_attr:missing", "has no attribute 'missing'"),
    ("drvmod_attr:value", "not callable"),
    ("drvmod_attr:", "not a \"package.module:function\""),
    ("bad name:f", "not a \"package.module:function\""),
    ("./nope.so:f", "no such library"),
    ("/nonexistent/libx.so:f", "no such library"),
    ("./notalib.so:f", "cannot load"),
    ("nocolon", "expected"),
])
def test_driver_errors(tmp_path, spec, expected):
    (tmp_path / "drvmod_bad.py").write_text("1 / 0\n")
    (tmp_path / "drvmod_imp.py").write_text("import no_such_dependency_xyz\n")
    (tmp_path / "drvmod_attr.py").write_text("value = 3\n")
    (tmp_path / "notalib.so").write_text("not an ELF file\n")
    with pytest.raises(drivers.DriverError) as e:
        drivers.load(spec, str(tmp_path))
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_c_driver_symbol(tmp_path):
    src = tmp_path / "d.c"
    src.write_text('#include "hgsmi.h"\nint ok(void *c, const struct hgsmi_msg *m, void *d,'
                   ' uint32_t *r) { (void)c; (void)m; (void)d; (void)r; return 0; }\n')
    subprocess.run(["gcc", "-shared", "-fPIC", "-I", str(ROOT / "native" / "include"),
                    "-o", str(tmp_path / "libd.so"), str(src)], check=True, timeout=60)
    d = drivers.load("libd.so:ok", str(tmp_path))
    assert d.kind == "c" and d.fn is not None
    with pytest.raises(drivers.DriverError, match="no symbol 'missing'"):
        drivers.load("./libd.so:missing", str(tmp_path))
    assert drivers.is_c_spec("/x/libfoo.so.1:f") and not drivers.is_c_spec("a.b:f")


def test_guarded_driver_fails_one_buffer():
    def boom(msg):
        raise KeyError("nope")
    g = drivers.guard("m:boom", boom)
    with pytest.raises(Exception) as e:
        g(None)
    assert type(e.value).__name__ == "RemoteError" and "KeyError" in str(e.value)


# -- blob names, percentiles -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a", "file.txt", "résumé.pdf", "a..b", "x" * 255, "-dash"])
def test_good_blob_names(name):
    assert blob.check_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "../etc/passwd", "a/b", "/abs", "a\\b",
                                  "nul\0byte", ".hidden", "x" * 256, "tab\there", 3])
def test_bad_blob_names(name):
    with pytest.raises(ValueError):
        blob.check_name(name)


def test_decode_name_rejects_bad_utf8():
    with pytest.raises(ValueError, match="UTF-8"):
        blob.decode_name(b"\xff\xfe")


def test_percentiles():
    p = percentiles([float(i) for i in range(1, 101)])
    assert (p["p50"], p["p90"], p["p99"], p["min"], p["max"]) == (50, 90, 99, 1, 100)
    assert percentiles([7.0])["p99"] == 7.0


# -- the CLI's error lines, in-process -----------------------------------------------------------
def test_cli_bad_config_one_line(tmp_path, capsys):
    path = write(tmp_path, "[limits]\nring_entries = 3\n")
    assert cli.main(["host", "--name", "tcfg", "--config", path]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "power of two" in err[0] and err[0].startswith("hgsmi host: error")


def test_cli_usage_errors(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["host", "--size", "huge"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli.main(["guest", "echo", "--count", "0"])
    assert e.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_cli_name_precedence(tmp_path, monkeypatch):
    path = write(tmp_path, 'name = "fromfile"\n')
    args = cli.build_parser().parse_args(["host", "--config", path])
    assert cli.host_config(args).name == "fromfile"
    args = cli.build_parser().parse_args(["host", "--config", path, "--name", "flag"])
    assert cli.host_config(args).name == "flag"
    monkeypatch.setenv("HGSMI_NAME", "fromenv")
    args = cli.build_parser().parse_args(["host", "--size", "1M"])
    cfg = cli.host_config(args)
    assert cfg.name == "fromenv" and cfg.size == 1 << 20
