#!/usr/bin/env bash
# Runs one libFuzzer target for a bounded time on its corpus.
#   tests/fuzz/run.sh TARGET SECONDS [extra libFuzzer options...]
# TARGET: nifti, labels, landmarks, ... (tests/fuzz/fuzz_TARGET.c).
# Builds the clang fuzz build first when needed (PSP_FUZZ_BUILD, default
# build-fuzz: CC=clang, -DPSP_FUZZ=ON). The working corpus grows in
# $PSP_FUZZ_BUILD/fuzz-work/TARGET/corpus (seeded from the committed
# tests/fuzz/corpus/TARGET and tests/fuzz/regressions/TARGET, which are only
# read); crash inputs land in $PSP_FUZZ_BUILD/fuzz-work/TARGET/artifacts/.
# Exit status: 0 when nothing was found, 1 when the fuzzer found a crash,
# leak, timeout or oversized allocation (copy the artifact into
# tests/fuzz/regressions/TARGET/ once fixed), 2 on usage errors.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
T=$1 SECS=$2
shift 2
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
B=${PSP_FUZZ_BUILD:-$ROOT/build-fuzz}
[ -f "$HERE/fuzz_$T.c" ] || { echo "run.sh: no fuzz target '$T' (tests/fuzz/fuzz_$T.c)" >&2; exit 2; }
case $SECS in '' | *[!0-9]*) echo "run.sh: SECONDS must be a whole number" >&2; exit 2 ;; esac

if [ ! -f "$B/CMakeCache.txt" ]; then
  CC=clang CXX=clang++ cmake -S "$ROOT" -B "$B" -DPSP_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DBUILD_TESTING=ON >/dev/null
fi
if ! nice -n 10 cmake --build "$B" --target "fuzz_$T" -j "${PSP_FUZZ_JOBS:-2}" >"$B/fuzz-build-$T.log" 2>&1; then
  tail -30 "$B/fuzz-build-$T.log"
  echo "run.sh: building fuzz_$T failed (log: $B/fuzz-build-$T.log)" >&2
  exit 2
fi

W=$B/fuzz-work/$T
mkdir -p "$W/corpus" "$W/artifacts"
seeds=()
for d in "$HERE/corpus/$T" "$HERE/regressions/$T"; do
  [ -d "$d" ] && [ -n "$(ls -A "$d")" ] && seeds+=("$d")
done
dict=()
[ -f "$HERE/dict/$T.dict" ] && dict=("-dict=$HERE/dict/$T.dict")
case $T in
  nifti | dicom) maxlen=16384 ;;
  *) maxlen=4096 ;;
esac
log=$W/last.log
echo "fuzz $T: ${SECS}s, corpus $W/corpus (+ ${#seeds[@]} committed folders)"
set +e
OMP_NUM_THREADS=1 ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
  nice -n 10 "$B/tests/fuzz/fuzz_$T" -max_total_time="$SECS" -rss_limit_mb=2048 \
  -malloc_limit_mb=2048 -timeout=10 -max_len=$maxlen -print_final_stats=1 -close_fd_mask=3 \
  -artifact_prefix="$W/artifacts/" "${dict[@]}" "$@" "$W/corpus" "${seeds[@]}" >"$log" 2>&1
rc=$?
set -e
runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
echo "fuzz $T: ${runs:-?} executions, exit $rc (log: $log)"
if [ $rc -ne 0 ]; then
  grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$log" | head -20
  echo "fuzz $T: FOUND A PROBLEM; once fixed, copy the artifact into tests/fuzz/regressions/$T/"
  exit 1
fi
