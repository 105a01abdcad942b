#!/usr/bin/env bash
# `make fuzz`: builds the libFuzzer targets of tests/fuzz/ into $FUZZ_DIR (clang, ASan + UBSan),
# writes their seeds from the real encoders, runs each target for its share of $FUZZ_SECONDS and
# prints a summary. Exits non-zero when a target crashed (a violated property, an exception
# other than ProtocolError, a sanitizer report, a leak) or timed out; the input is saved as
# $FUZZ_DIR/artifacts/<target>-crash-<sha1> (or -leak-, -timeout-, -oom-) and the log as
# $FUZZ_DIR/logs/<target>.log. Reproduce with: $FUZZ_DIR/<target> <artifact>.
#
# FUZZ_SECONDS  total fuzzing time, split evenly over the targets (default 60)
# FUZZ_TARGETS  the targets to run (default: fuzz_frame fuzz_message)
# FUZZ_DIR      build and work folder (default build-fuzz; corpora grow in $FUZZ_DIR/corpus/)
# FUZZ_CXX      the clang to build with (default clang++-14)
# JOBS          build parallelism (default nproc)
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_TARGETS=${FUZZ_TARGETS:-"fuzz_frame fuzz_message"}
FUZZ_DIR=${FUZZ_DIR:-build-fuzz}
FUZZ_CXX=${FUZZ_CXX:-clang++-14}
JOBS=${JOBS:-$(nproc)}

read -r -a targets <<<"$FUZZ_TARGETS"
per_target=$((FUZZ_SECONDS / ${#targets[@]}))
[ "$per_target" -ge 1 ] || per_target=1

start=$(date +%s)
if [ ! -f "$FUZZ_DIR/build.ninja" ]; then
  cmake -S tests/fuzz -B "$FUZZ_DIR" -G Ninja -DCMAKE_CXX_COMPILER="$FUZZ_CXX"
fi
cmake --build "$FUZZ_DIR" -j "$JOBS"
build_s=$(($(date +%s) - start))

mkdir -p "$FUZZ_DIR/artifacts" "$FUZZ_DIR/logs"
"$FUZZ_DIR/make_seeds" "$FUZZ_DIR/seeds"

# Symbolized stacks in reports; leaks are on by default (libFuzzer + ASan).
symbolizer=$(command -v llvm-symbolizer-14 || command -v llvm-symbolizer || true)
if [ -n "$symbolizer" ]; then export ASAN_SYMBOLIZER_PATH="$symbolizer"; fi
export UBSAN_OPTIONS="print_stacktrace=1:${UBSAN_OPTIONS:-}"

status=0
summary=()
for t in "${targets[@]}"; do
  case "$t" in
    fuzz_frame) seeds="$FUZZ_DIR/seeds/frame" ;;
    fuzz_message) seeds="$FUZZ_DIR/seeds/message tests/fuzz/regressions" ;;
    *) echo "fuzz: unknown target $t" >&2; exit 2 ;;
  esac
  corpus="$FUZZ_DIR/corpus/$t"
  log="$FUZZ_DIR/logs/$t.log"
  mkdir -p "$corpus"
  echo "fuzz: $t for ${per_target}s (log: $log)"
  # The first folder collects what the run finds (kept between runs); the seeds (and the
  # reproducers of past findings, tests/fuzz/regressions/) are read only.
  rc=0
  # shellcheck disable=SC2086 # $seeds is a list of folders
  "$FUZZ_DIR/$t" "$corpus" $seeds -dict="$FUZZ_DIR/seeds/eesched.dict" -max_total_time="$per_target" \
    -max_len=16384 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$FUZZ_DIR/artifacts/$t-" >"$log" 2>&1 || rc=$?
  execs=$(awk '/stat::number_of_executed_units:/{print $2}' "$log" | tail -1)
  rate=$(awk '/stat::average_exec_per_sec:/{print $2}' "$log" | tail -1)
  units=$(find "$corpus" -type f | wc -l)
  if [ "$rc" -eq 0 ]; then
    summary+=("$(printf '%-13s ok     %12s execs  %8s/s  corpus %6s' "$t" "${execs:-?}" "${rate:-?}" "$units")")
  else
    status=1
    artifact=$(grep -o "Test unit written to .*" "$log" | tail -1 | sed 's/Test unit written to //')
    summary+=("$(printf '%-13s FAILED (exit %s) after %s execs: %s' "$t" "$rc" "${execs:-?}" "${artifact:-see $log}")")
    echo "----- $t: the end of $log -----"
    grep -v "^#[0-9]" "$log" | tail -60
    echo "-----"
    [ -n "$artifact" ] && echo "reproduce: $FUZZ_DIR/$t $artifact"
  fi
done

echo "fuzz summary (build ${build_s}s, ${per_target}s per target, total $(($(date +%s) - start))s):"
for line in "${summary[@]}"; do echo "  $line"; done
exit $status
