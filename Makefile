# SPDX-License-Identifier: MIT
#
# Makefile - the developer's and CI's entry point.  `make test` on a fresh
# checkout creates .venv, installs hgsmi editable with its test extras (which
# builds hgsmi/_native*.so in place), builds libhgsmi, runs the C tests
# (plain, ASan+UBSan, TSan), a short fuzzing smoke run, pytest, and the
# hostile-guest and peer-death tests again against an ASan build of the
# extension.
#
#   make            ext + lib
#   make deps       .venv with hgsmi installed editable + test extras
#   make ext        rebuild hgsmi/_native*.so after native/ changes
#   make lib        native/build/libhgsmi.{so*,a}          (native/Makefile)
#   make test       lint + test-c + fuzz-smoke + test-py + test-asan-py
#   make lint       ruff over the tree, mypy --strict over hgsmi/ (pyproject.toml)
#   make test-c     native C tests: plain, asan, tsan
#   make test-vm    a QEMU VM as a guest (ivshmem); installs QEMU, a kernel and
#                   busybox-static with apt-get if missing; not part of `test`
#   make test-py    pytest  (PYTEST_ARGS='-k heap -x', PYTEST_PATHS=tests/x.py)
#   make test-asan-py  the hostile-guest, hostile-host and peer-death tests with an ASan +
#                   UBSan build of the extension, kept apart in build/asan-py
#                   (ASAN_PY_TESTS, ASAN_PY_SELECT: the -k, ASAN_PY_ARGS)
#   make fuzz       libFuzzer harnesses, FUZZ_SECONDS (60) each (native/;
#                   installs clang with apt-get if it is missing)
#   make fuzz-smoke the saved corpus, every regression input, 10 s each
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
# setuptools' build backend warns on every editable install of a flat layout
# (a folder named like the package may shadow it); the layout is deliberate,
# and a new user's first screen should show what matters.
PIP := PYTHONWARNINGS=ignore::UserWarning $(VPY) -m pip
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

.PHONY: FORCE all deps ext lib lint test test-c test-py test-asan-py asan tsan fuzz \
	fuzz-smoke demo bench install uninstall clean distclean test-vm

all: ext lib

$(VPY):
	$(PYTHON) -m venv $(VENV)

$(DEPS_STAMP): setup.py pyproject.toml | $(VPY)
	@echo "deps: installing hgsmi (editable) and its test extras into $(VENV)"
	$(PIP) install $(PIP_FLAGS) --upgrade pip setuptools wheel cffi
	$(PIP) install $(PIP_FLAGS) -e '.[test]'
	@mkdir -p $(dir $(EXT_BUILT)) && echo "$(EXT_FLAVOUR)" >$(EXT_BUILT)
	@touch $@

deps: $(DEPS_STAMP)

# HGSMI_SANITIZE=address,undefined (or thread) builds a sanitized extension;
# a change of flavour forces a full rebuild, and test-py preloads the runtime.
comma := ,
EXT_FLAVOUR := $(or $(strip $(HGSMI_SANITIZE)),plain)
EXT_FLAVOUR_FILE := build/.hgsmi-ext-flavour
# The flavour hgsmi/_native*.so in the tree was last built with (pip's
# editable install builds it too, with the flavour of the environment).
EXT_BUILT := build/.hgsmi-ext-built
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

# pip's editable install built the module too.  Of this flavour and newer than
# every input, it is used as it is (a fresh clone compiles once, not twice:
# build_ext would not see it as fresh, its generated source being new); of
# another flavour it is rebuilt with --force.
$(EXT_STAMP): $(DEPS_STAMP) $(EXT_INPUTS) $(EXT_FLAVOUR_FILE)
	@so=$$(ls hgsmi/_native*.so 2>/dev/null | head -n 1); \
	same=$$([ "$$(cat $(EXT_BUILT) 2>/dev/null)" = "$(EXT_FLAVOUR)" ] && echo yes); \
	if [ -n "$$same" ] && [ -n "$$so" ] && [ -z "$$(find $(EXT_INPUTS) -newer $$so)" ]; then \
		echo "ext: $$so ($(EXT_FLAVOUR)) is up to date"; \
	else \
		echo "ext: building hgsmi/_native ($(EXT_FLAVOUR))"; \
		$(VPY) setup.py --quiet build_ext --inplace \
			$$([ -n "$$same" ] || echo --force) || exit 1; \
	fi
	@echo "$(EXT_FLAVOUR)" >$(EXT_BUILT)
	@touch $@

ext: $(EXT_STAMP)

lib:
	@$(MAKE) --no-print-directory -C native lib

# A few seconds: first, so that a style or type slip fails before the long runs.
lint: $(DEPS_STAMP)
	$(VPY) -m ruff check .
	$(VPY) -m mypy --strict hgsmi

test: ext lib
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory test-c
	@$(MAKE) --no-print-directory fuzz-smoke
	@$(MAKE) --no-print-directory test-py
	@$(MAKE) --no-print-directory test-asan-py

# A real QEMU VM as a guest through ivshmem-doorbell (tests/vm/run.py): apart
# from `make test` because it boots VMs (TCG: about 1.5 minutes).
VM_DIR := build/vm
test-vm: ext lib
	@kernel=$$(sh tests/vm/ensure-deps.sh) || { [ $$? -eq 3 ] && exit 0; exit 1; }; \
	$(MAKE) --no-print-directory -C native/examples vm_guest && \
	mkdir -p $(VM_DIR) && \
	sh tests/vm/build-initramfs.sh $(VM_DIR)/initrd.gz native/examples/vm_guest && \
	$(VPY) tests/vm/run.py "$$kernel" $(VM_DIR)/initrd.gz native/examples/vm_guest

test-c:
	@$(MAKE) --no-print-directory -C native test
	@$(MAKE) --no-print-directory -C native asan
	@$(MAKE) --no-print-directory -C native tsan

test-py: ext
	$(PY_SAN_ENV) $(VPY) -m pytest -q $(PYTEST_ARGS) $(PYTEST_PATHS)

asan tsan fuzz fuzz-smoke:
	@$(MAKE) --no-print-directory -C native $@

# ---- the host under ASan: hostile guests and peer death ----------------------
# The extension is built with ASan + UBSan into build/asan-py (its own build
# temp: no object is shared with the plain build, and hgsmi/_native*.so in the
# tree is never touched).  The package's Python files and the tests are copied
# next to it, so that the tests' peers, which put the tests' parent directory
# on PYTHONPATH, import the same ASan build; pytest runs from there.  gcc's
# libasan is preloaded into the uninstrumented python (and inherited by every
# peer it starts).
ASAN_PY := build/asan-py
ASAN_PY_SO := $(ASAN_PY)/hgsmi/_native.abi3.so
ASAN_PY_TESTS ?= tests/test_hostile.py tests/test_transport.py tests/test_hostile_host.py \
		tests/test_ivshmem.py
ASAN_PY_SELECT ?= hostile or death or disconnect
ASAN_PY_ARGS ?=
ASAN_PY_ENV := LD_PRELOAD="$$($(CC) -print-file-name=libasan.so)" \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	PYTHONPATH=$(abspath $(ASAN_PY))

$(ASAN_PY_SO): $(DEPS_STAMP) $(EXT_INPUTS)
	@echo "test-asan-py: building hgsmi/_native with ASan + UBSan in $(ASAN_PY)"
	@rm -rf $(ASAN_PY) $(ASAN_PY).tmp
	HGSMI_SANITIZE=address,undefined $(VPY) setup.py --quiet build_ext \
		--build-lib $(ASAN_PY) --build-temp $(ASAN_PY).tmp --force
	@# Instrumented, or this whole target would prove nothing.
	@nm -D --undefined-only $@ | grep -q __asan_report_store && \
	 nm -D --undefined-only $@ | grep -q __ubsan_handle_ || \
	 { echo "test-asan-py: $@ is not instrumented" >&2; rm -f $@; exit 1; }

test-asan-py: $(ASAN_PY_SO)
	@rm -rf $(ASAN_PY)/tests && mkdir -p $(ASAN_PY)/tests
	@find $(ASAN_PY)/hgsmi -type f ! -name '*.so' -delete
	@tar -C hgsmi --exclude='*.so' --exclude=__pycache__ -cf - . | \
		tar -C $(ASAN_PY)/hgsmi -xf -
	@tar -C tests --exclude=__pycache__ -cf - . | tar -C $(ASAN_PY)/tests -xf -
	@# From there, not from the tree: python puts its cwd first on sys.path.
	@cd $(ASAN_PY) && $(ASAN_PY_ENV) $(abspath $(VPY)) -c 'import sys, hgsmi._native as n; \
		sys.exit(0 if n.__file__.startswith("$(abspath $(ASAN_PY))/") else \
		"test-asan-py: imported " + n.__file__ + ", not the ASan build")'
	@# --capture=sys: a sanitizer report (C, fd 2) reaches the terminal
	@# before the abort, instead of dying in pytest's capture file.
	cd $(ASAN_PY) && $(ASAN_PY_ENV) $(abspath $(VPY)) -m pytest -q -p no:cacheprovider \
		--capture=sys $(ASAN_PY_ARGS) -k "$(ASAN_PY_SELECT)" $(ASAN_PY_TESTS)

demo: deps ext
	$(VENV)/bin/hgsmi demo

$(BENCH_STAMP): $(DEPS_STAMP)
	$(PIP) install $(PIP_FLAGS) -e '.[test,bench]'
	@touch $@

# pytest-benchmark over bench/test_*.py; the report (with MB/s, msgs/s and
# latency percentiles in each entry's extra_info) goes to bench/report.json.
# `hgsmi bench` is the side-by-side comparison with ratios.  The C programs
# (hgsmi/bench/c/) are compiled on first use into ~/.cache/hgsmi/bench-*/
# (hgsmi/bench/transports/cbuild.py); `lib` is the libhgsmi hgsmi-c links.
BENCH_REPORT ?= bench/report.json
bench: $(BENCH_STAMP) ext lib
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
