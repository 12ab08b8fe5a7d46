#!/bin/sh
# SPDX-License-Identifier: MIT
#
# run.sh BIN SECONDS WORKDIR - one harness: replay its regressions, then fuzz
# for SECONDS starting from the saved corpus.  Run from native/.
#
#   fuzz/regressions/<name>-*.bin  every input that ever crashed <name>; each
#                                  is run once and must pass
#   fuzz/corpus/<name>/            the saved seeds (read only here)
#   WORKDIR/corpus/<name>/         new inputs the fuzzer finds (not in git;
#                                  `make fuzz-merge` folds them into the seeds)
#   WORKDIR/artifacts/<name>-*     what a crash, leak or timeout left
#
# Prints one line per harness: "PASS: fuzz/<name> (N runs, N exec/s, ...)"
# or "FAIL: ..." with the end of the log.  Exit status 0 only on a pass.
# FUZZ_FLAGS adds libFuzzer flags (e.g. FUZZ_FLAGS=-jobs=2).
set -u

BIN=$1
SECONDS_=$2
mkdir -p "$3"
WORK=$(cd "$3" && pwd)
NAME=$(basename "$BIN")
LOG=$WORK/$NAME.log
CORPUS=$WORK/corpus/$NAME
ART=$WORK/artifacts
mkdir -p "$CORPUS" "$ART" "fuzz/corpus/$NAME"

# Sanitizer reports abort with a stack; leaks are checked per input.
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

# The sanitizer's or the oracle's verdict and the top of its stack.
excerpt() {
	awk '/ERROR: |oracle failed|runtime error:/ { on = 1 }
	     on && (/^ *#[0-9]+ / || /ERROR: |oracle failed|runtime error:/) { print; n++ }
	     n >= 16 { exit }' "$1" | grep -v -e 'in fuzzer::' -e 'in __libc_start' \
		-e 'in _start ' -e 'in main ' -e '__sanitizer_print_stack_trace' \
		-e 'libc\.so' | sed 's/ (BuildId: [0-9a-f]*)//; s/^/    /'
	grep -m 1 '^SUMMARY' "$1" | sed 's/^/    /'
}

# A crash skips the harness's own cleanup: remove what a dead fuzz_handshake
# left (its names carry its pid: fz<pid>, fy<pid>, hgsmi-fuzz-<pid>-*).
sweep() {
	for f in /dev/shm/hgsmi-fz[0-9]* /dev/shm/hgsmi-fy[0-9]* /tmp/hgsmi-fuzz-[0-9]*; do
		[ -e "$f" ] || continue
		pid=$(basename "$f" | sed 's/^hgsmi-f[yz]\([0-9]*\)\..*/\1/; s/^hgsmi-fuzz-\([0-9]*\)-.*/\1/')
		case $pid in *[!0-9]* | '') continue ;; esac
		kill -0 "$pid" 2>/dev/null || rm -rf "$f"
	done
}
trap sweep EXIT

fail() {
	echo "FAIL: fuzz/$NAME ($1)"
	excerpt "$LOG"
	ls "$ART"/"$NAME"-* 2>/dev/null | sed 's/^/    artifact: /'
	echo "    full log: $LOG"
	exit 1
}

: >"$LOG"
nreg=0
bad=0
for r in fuzz/regressions/"$NAME"-*; do
	[ -e "$r" ] || continue
	nreg=$((nreg + 1))
	# A file, not a directory: libFuzzer runs it once and exits.
	if ! timeout 300 "$BIN" -timeout=10 "$r" >"$LOG.reg" 2>&1; then
		echo "FAIL: fuzz/$NAME: regression $(basename "$r") fails again"
		excerpt "$LOG.reg"
		bad=$((bad + 1))
	fi
	cat "$LOG.reg" >>"$LOG"
done
rm -f "$LOG.reg"
if [ $bad -ne 0 ]; then
	echo "FAIL: fuzz/$NAME ($bad of $nreg regressions; not fuzzed; full log: $LOG)"
	exit 1
fi

# shellcheck disable=SC2086
timeout $((SECONDS_ + 120)) "$BIN" -max_total_time="$SECONDS_" -timeout=10 \
	-print_final_stats=1 -artifact_prefix="$ART/$NAME-" ${FUZZ_FLAGS:-} \
	"$CORPUS" "fuzz/corpus/$NAME" >>"$LOG" 2>&1 ||
	fail "crashed; the input is the artifact below"

runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$LOG" | tail -n 1)
speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$LOG" | tail -n 1)
cov=$(sed -n 's/^#[0-9]*.*DONE *cov: \([0-9]*\) ft: \([0-9]*\) corp: \([0-9]*\).*/cov \1, ft \2, corpus \3/p' "$LOG" | tail -n 1)
echo "PASS: fuzz/$NAME (${SECONDS_}s: ${runs:-?} runs, ${speed:-?} exec/s, $cov, $nreg regressions)"
