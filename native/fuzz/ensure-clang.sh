#!/bin/sh
# SPDX-License-Identifier: MIT
#
# ensure-clang.sh CC - make sure CC (clang) can build a libFuzzer harness with
# ASan and UBSan; if it cannot, install Debian's clang, its compiler-rt (the
# libFuzzer, ASan and UBSan runtimes: libclang-rt-dev, only a Recommends of
# clang) and llvm (llvm-symbolizer, for readable stack traces) with apt-get.
# Idempotent and quiet when everything is there.  Exits non-zero, loudly, if
# the toolchain still does not work: CI must be able to fuzz.
set -eu

CC=${1:-clang}
PKGS="clang libclang-rt-dev llvm"

probe() {
	command -v "$CC" >/dev/null 2>&1 || return 1
	dir=$(mktemp -d) || return 1
	printf '%s\n' \
		'#include <stddef.h>' \
		'#include <stdint.h>' \
		'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)' \
		'{ (void)d; (void)n; return 0; }' >"$dir/probe.c"
	"$CC" -fsanitize=fuzzer,address,undefined -o "$dir/probe" "$dir/probe.c" \
		>"$dir/log" 2>&1
	rc=$?
	[ $rc -eq 0 ] || cat "$dir/log" >&2
	rm -rf "$dir"
	return $rc
}

probe 2>/dev/null && exit 0

echo "fuzz: $CC cannot build libFuzzer harnesses; installing $PKGS with apt-get" >&2
if [ "$(id -u)" -eq 0 ]; then
	SUDO=
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
	SUDO="sudo -n"
else
	echo "fuzz: ERROR: not root and no password-less sudo: install $PKGS yourself" >&2
	exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "fuzz: ERROR: no apt-get here: install clang with libFuzzer (compiler-rt) yourself" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! { $SUDO apt-get update -qq &&
       $SUDO apt-get install -y -qq --no-install-recommends $PKGS; } >/tmp/hgsmi-apt.$$.log 2>&1; then
	cat /tmp/hgsmi-apt.$$.log >&2
	rm -f /tmp/hgsmi-apt.$$.log
	echo "fuzz: ERROR: apt-get could not install $PKGS (is the Debian mirror reachable?)" >&2
	exit 1
fi
rm -f /tmp/hgsmi-apt.$$.log
if ! probe; then
	echo "fuzz: ERROR: $CC still cannot link -fsanitize=fuzzer,address,undefined" >&2
	exit 1
fi
echo "fuzz: $("$CC" --version | head -n 1) installed" >&2
