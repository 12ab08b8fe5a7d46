# SPDX-License-Identifier: MIT
#
# Makefile - the developer's and CI's entry point.  `make test` on a fresh
# checkout creates .venv, installs hgsmi editable with its test extras (which
# builds hgsmi/_native*.so in place), builds libhgsmi, runs the C tests
# (plain, ASan+UBSan, TSan) and then pytest.
#
#   make            ext + lib
#   make deps       .venv with hgsmi installed editable + test extras
#   make ext        rebuild hgsmi/_native*.so after native/ changes
#   make lib        native/build/libhgsmi.{so*,a}          (native/Makefile)
#   make test       test-c + test-py
#   make test-c     native C tests: plain, asan, tsan
#   make test-py    pytest  (PYTEST_ARGS='-k heap -x', PYTEST_PATHS=tests/x.py)
#   make asan|tsan  one sanitizer flavour of the C tests
#   make demo       .venv/bin/hgsmi demo
#   make bench      pytest-benchmark over bench/ -> bench/report.json
#   make install    libhgsmi + headers + hgsmi.pc (PREFIX, DESTDIR; native/)
#   make clean      build outputs;  make distclean: also .venv
#
# HGSMI_SANITIZE=address,undefined make ext   builds a sanitized extension.

PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip
PIP_FLAGS ?= --quiet --disable-pip-version-check
PYTEST_ARGS ?=
PYTEST_PATHS ?= tests

# Stamps: deps re-install only when the packaging changes; the extension is
# rebuilt whenever anything it is compiled from changes.
DEPS_STAMP := $(VENV)/.hgsmi-deps
BENCH_STAMP := $(VENV)/.hgsmi-bench
EXT_STAMP := build/.hgsmi-ext
EXT_INPUTS := $(wildcard native/src/*.c native/src/*.h native/include/*.h \
			 native/include/*/*.h) native/hgsmi.cdef native/ffi_build.py

.PHONY: FORCE all deps ext lib test test-c test-py asan tsan demo bench install \
	uninstall clean distclean

all: ext lib

$(VPY):
	$(PYTHON) -m venv $(VENV)

$(DEPS_STAMP): setup.py pyproject.toml | $(VPY)
	@echo "deps: installing hgsmi (editable) and its test extras into $(VENV)"
	$(PIP) install $(PIP_FLAGS) --upgrade pip setuptools wheel cffi
	$(PIP) install $(PIP_FLAGS) -e '.[test]'
	@touch $@

deps: $(DEPS_STAMP)

# HGSMI_SANITIZE=address,undefined (or thread) builds a sanitized extension;
# a change of flavour forces a full rebuild, and test-py preloads the runtime.
comma := ,
EXT_FLAVOUR := $(or $(strip $(HGSMI_SANITIZE)),plain)
EXT_FLAVOUR_FILE := build/.hgsmi-ext-flavour
SAN_NAMES := $(subst $(comma), ,$(HGSMI_SANITIZE))
ifneq ($(filter address,$(SAN_NAMES)),)
PY_SAN_ENV := LD_PRELOAD="$$($(CC) -print-file-name=libasan.so)" \
	      ASAN_OPTIONS=detect_leaks=0
else ifneq ($(filter thread,$(SAN_NAMES)),)
PY_SAN_ENV := LD_PRELOAD="$$($(CC) -print-file-name=libtsan.so)"
endif

$(EXT_FLAVOUR_FILE): FORCE
	@mkdir -p $(@D)
	@[ "$$(cat $@ 2>/dev/null)" = "$(EXT_FLAVOUR)" ] || echo "$(EXT_FLAVOUR)" >$@

# pip's editable install built the module too; build_ext skips what is fresh.
$(EXT_STAMP): $(DEPS_STAMP) $(EXT_INPUTS) $(EXT_FLAVOUR_FILE)
	@echo "ext: building hgsmi/_native ($(EXT_FLAVOUR))"
	$(VPY) setup.py --quiet build_ext --inplace \
		$(if $(filter $(EXT_FLAVOUR_FILE),$?),--force)
	@touch $@

ext: $(EXT_STAMP)

lib:
	@$(MAKE) --no-print-directory -C native lib

test: ext lib
	@$(MAKE) --no-print-directory test-c
	@$(MAKE) --no-print-directory test-py

test-c:
	@$(MAKE) --no-print-directory -C native test
	@$(MAKE) --no-print-directory -C native asan
	@$(MAKE) --no-print-directory -C native tsan

test-py: ext
	$(PY_SAN_ENV) $(VPY) -m pytest -q $(PYTEST_ARGS) $(PYTEST_PATHS)

asan tsan:
	@$(MAKE) --no-print-directory -C native $@

demo: deps ext
	$(VENV)/bin/hgsmi demo

$(BENCH_STAMP): $(DEPS_STAMP)
	$(PIP) install $(PIP_FLAGS) -e '.[test,bench]'
	@touch $@

# pytest-benchmark over bench/test_*.py; the report (with MB/s, msgs/s and
# latency percentiles in each entry's extra_info) goes to bench/report.json.
# `hgsmi bench` is the side-by-side comparison with ratios.
BENCH_REPORT ?= bench/report.json
bench: $(BENCH_STAMP) ext lib
	@$(MAKE) --no-print-directory -C bench/c
	$(VPY) -m pytest bench -p no:cacheprovider -o testpaths=bench -o timeout=600 \
		--benchmark-only --benchmark-json=$(BENCH_REPORT) -q $(PYTEST_ARGS)

install uninstall:
	@$(MAKE) --no-print-directory -C native $@

clean:
	@$(MAKE) --no-print-directory -C native clean
	rm -rf build hgsmi/_native.c hgsmi/_native.o hgsmi/_native*.so \
		*.egg-info .pytest_cache .hypothesis .benchmarks
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune \
		-exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)

FORCE:
