# SPDX-License-Identifier: MIT
"""
native/ffi_build.py: its pure helpers, and the drift check that hgsmi.h,
hgsmi.cdef and hgsmi.map name the same public functions.  Needs no build.
"""
import importlib.util
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NATIVE = os.path.join(ROOT, "native")


def _load_ffi_build():
    spec = importlib.util.spec_from_file_location(
        "hgsmi_ffi_build", os.path.join(NATIVE, "ffi_build.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


fb = _load_ffi_build()


def _read(*parts):
    with open(os.path.join(NATIVE, *parts), encoding="utf-8") as f:
        return f.read()


class TestDrift:
    def test_header_declares_the_public_api(self):
        names = fb.declared_functions(_read("include", "hgsmi.h"))
        assert len(names) >= 60
        assert "hgsmi_handler_fn" not in names
        api = re.findall(r"^HGSMI_API\b", _read("include", "hgsmi.h"), re.M)
        assert len(names) == len(api)

    def test_cdef_matches_header(self):
        header = fb.declared_functions(_read("include", "hgsmi.h"))
        cdef = fb.declared_functions(_read("hgsmi.cdef"))
        assert cdef == header

    def test_map_matches_header(self):
        header = fb.declared_functions(_read("include", "hgsmi.h"))
        assert fb.map_symbols(_read("hgsmi.map")) == header

    def test_cdef_constants_exist_in_headers(self):
        cdef = re.findall(r"^#define\s+(\w+)\s+\.\.\.", _read("hgsmi.cdef"), re.M)
        assert cdef
        headers = _read("include", "hgsmi.h") + _read("include", "hgsmi", "defs.h")
        defined = set(re.findall(r"^#define\s+(HGSMI_\w+)", headers, re.M))
        assert set(cdef) - defined == set()

    def test_cdef_parses(self):
        from cffi import FFI

        FFI().cdef(_read("hgsmi.cdef"))

    def test_setup_version_is_the_header_version(self):
        version = fb.header_version(_read("include", "hgsmi.h"))
        assert re.fullmatch(r"\d+\.\d+\.\d+", version)
        with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as f:
            assert "version=read_version()" in f.read()

    def test_version_is_the_newest_map_node(self):
        """The library's major.minor names the newest node of the version script:
        a release that adds symbols (a new node) bumps the version with it, and
        the version never runs ahead of the symbols either."""
        version = fb.header_version(_read("include", "hgsmi.h"))
        major_minor = tuple(int(p) for p in version.split(".")[:2])
        nodes = fb.map_nodes(_read("hgsmi.map"))
        assert nodes, "hgsmi.map has no HGSMI_<major>.<minor> node"
        newest = max(nodes)
        assert major_minor == newest, (
            f"hgsmi.h says {version}, the newest hgsmi.map node is "
            f"HGSMI_{newest[0]}.{newest[1]}: bump HGSMI_VERSION_* or the node")


class TestHelpers:
    def test_declared_functions_ignores_comments_and_typedefs(self):
        text = """
        /* hgsmi_fake(1) in a comment */
        // hgsmi_other(2)
        typedef int (*hgsmi_handler_fn)(void *ctx);
        int hgsmi_real(int x);
        struct hgsmi_conn *hgsmi_ptr (void);
        """
        assert fb.declared_functions(text) == {"hgsmi_real", "hgsmi_ptr"}

    def test_map_nodes(self):
        text = ("/* HGSMI_9.9 { in a comment } */ HGSMI_0.1 { global: a; };\n"
                "HGSMI_0.10 { global: b; } HGSMI_0.1;\nHGSMI_0.2 { global: c; } HGSMI_0.10;")
        assert fb.map_nodes(text) == [(0, 1), (0, 10), (0, 2)]

    def test_map_symbols(self):
        text = "/* c */ V_1 { global: a; b;\n c; local: *; };\nV_2 { global: d; } V_1;"
        assert fb.map_symbols(text) == {"a", "b", "c", "d"}

    @pytest.mark.parametrize("value", [None, "", " , "])
    def test_sanitize_none(self, value):
        assert fb.sanitize_flags(value) == []

    def test_sanitize_address_undefined(self):
        flags = fb.sanitize_flags("address, undefined")
        assert flags[0] == "-fsanitize=address,undefined"
        assert "-fno-omit-frame-pointer" in flags

    @pytest.mark.parametrize("value", ["bogus", "address,thread", "thread,leak"])
    def test_sanitize_rejects(self, value):
        with pytest.raises(ValueError):
            fb.sanitize_flags(value)

    @pytest.mark.parametrize("value,expected", [
        (None, False), ("", False), ("0", False), ("off", False),
        ("1", True), ("YES", True), ("true", True),
    ])
    def test_env_flag(self, value, expected):
        assert fb.env_flag(value) is expected

    def test_env_flag_rejects_garbage(self):
        with pytest.raises(ValueError):
            fb.env_flag("maybe")

    def test_source_path(self):
        p = os.path.join(fb.ROOT, "native", "src", "x.c")
        assert fb.source_path(p, cwd=fb.ROOT) == os.path.join("native", "src", "x.c")
        assert fb.source_path(p, cwd="/") == p

    def test_header_version_missing(self):
        with pytest.raises(ValueError):
            fb.header_version("#define HGSMI_VERSION_MAJOR 1\n")


class TestExtensionKwargs:
    def test_default_builds_every_source(self):
        kw = fb.extension_kwargs(environ={}, cwd=fb.ROOT)
        srcs = sorted(f for f in os.listdir(os.path.join(NATIVE, "src"))
                      if f.endswith(".c"))
        assert [os.path.basename(s) for s in kw["sources"]] == srcs
        assert all(not os.path.isabs(s) for s in kw["sources"])
        assert kw["libraries"] == ["rt", "pthread"]
        assert "-Werror" in kw["extra_compile_args"]
        assert kw["extra_link_args"] == []
        assert os.path.join("native", "hgsmi.cdef") in kw["depends"]

    def test_absolute_paths_from_elsewhere(self):
        kw = fb.extension_kwargs(environ={}, cwd="/")
        assert all(os.path.isabs(s) for s in kw["sources"] + kw["include_dirs"])

    def test_sanitize(self):
        kw = fb.extension_kwargs(environ={"HGSMI_SANITIZE": "address,undefined"})
        assert "-fsanitize=address,undefined" in kw["extra_compile_args"]
        assert "-fsanitize=address,undefined" in kw["extra_link_args"]

    def test_no_werror(self):
        kw = fb.extension_kwargs(environ={"HGSMI_NO_WERROR": "1"})
        assert "-Werror" not in kw["extra_compile_args"]

    def test_system_lib(self):
        kw = fb.extension_kwargs(environ={"HGSMI_USE_SYSTEM_LIB": "1",
                                          "HGSMI_LIB_DIR": "/opt/h/lib"})
        assert kw["sources"] == []
        assert kw["libraries"][0] == "hgsmi"
        assert kw["library_dirs"] == kw["runtime_library_dirs"] == ["/opt/h/lib"]
