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
WORK=$3
NAME=$(basename "$BIN")
LOG=$WORK/$NAME.log
CORPUS=$WORK/corpus/$NAME
ART=$WORK/artifacts
mkdir -p "$CORPUS" "$ART" "fuzz/corpus/$NAME"

# Sanitizer reports abort with a stack; leaks are checked per input.
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

fail() {
	echo "FAIL: fuzz/$NAME ($1)"
	tail -n 40 "$LOG" | sed 's/^/    /'
	ls "$ART"/"$NAME"-* 2>/dev/null | sed 's/^/    artifact: /'
	exit 1
}

: >"$LOG"
regs=$(ls fuzz/regressions/"$NAME"-* 2>/dev/null || true)
nreg=0
if [ -n "$regs" ]; then
	nreg=$(echo "$regs" | wc -l)
	# Files, not directories: libFuzzer runs each once and exits.
	# shellcheck disable=SC2086
	timeout 300 "$BIN" -timeout=10 $regs >>"$LOG" 2>&1 ||
		fail "a regression input fails again"
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
