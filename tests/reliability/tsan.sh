#!/usr/bin/env bash
# ThreadSanitizer over the OpenMP paths of the CLI (`make tsan`). The binary
# must come from the PSP_TSAN=ON build (clang, -fsanitize=thread, LLVM's
# libomp). LLVM's Archer tool (libarcher.so beside libomp, from
# libomp-14-dev) tells TSan about OpenMP's barriers, reductions and tasks,
# and TSAN_OPTIONS=ignore_noninstrumented_modules=1 keeps the (not
# instrumented) runtime's own internals out of the reports. GCC's libgomp
# cannot be used: it is not instrumented, so every parallel region would
# report false races.
# First a self-check proves the set-up both finds a real race in an OpenMP
# loop and stays quiet on a correct reduction; then each run must be free of
# ThreadSanitizer reports (exit code 66 otherwise).
#   tests/reliability/tsan.sh PARASPINAL SOURCE_DIR SCRATCH [BUILD_DIR]
# With BUILD_DIR (the PSP_TSAN=ON build) its unit tests run under TSan too.
set -u
PSP=$1 SRC=$2 S=$3
rm -rf "$S" && mkdir -p "$S" && cd "$S" || exit 1
omp=$(ldd "$PSP" | awk '/libomp\.so/ {print $3; exit}')
[ -n "$omp" ] || { echo "FAIL: $PSP is not linked with LLVM's libomp (configure CC=clang -DPSP_TSAN=ON)"; exit 1; }
ldd "$PSP" | grep -q libtsan || nm "$PSP" 2>/dev/null | grep -q __tsan_init ||
  { echo "FAIL: $PSP is not built with -fsanitize=thread"; exit 1; }
archer=$(dirname "$(readlink -f "$omp")")/libarcher.so
[ -f "$archer" ] || { echo "FAIL: $archer missing (install libomp-14-dev)"; exit 1; }
export OMP_TOOL_LIBRARIES=$archer
export TSAN_OPTIONS="ignore_noninstrumented_modules=1 halt_on_error=0 exitcode=66 history_size=4"
fails=0 n=0

# --- self-check: a racy OpenMP loop must be reported, a reduction must not
cat >race.c <<'C'
#include <stdio.h>
int main(void) {
  long sum = 0;
#pragma omp parallel for num_threads(2)
  for (int i = 0; i < 100000; i++) sum += i; /* unsynchronised: a race */
  printf("%ld\n", sum);
  return 0;
}
C
cat >norace.c <<'C'
#include <stdio.h>
#include <stdlib.h>
int main(void) { /* writes, a barrier, reads of other threads' data, a reduction */
  double *a = calloc(1000, sizeof *a), s = 0;
  for (int r = 0; r < 20; r++) {
#pragma omp parallel num_threads(2)
    {
#pragma omp for
      for (int i = 0; i < 1000; i++) a[i] += i;
#pragma omp for reduction(+ : s)
      for (int i = 0; i < 1000; i++) s += a[999 - i];
    }
  }
  printf("%g\n", s);
  free(a);
  return 0;
}
C
for p in race norace; do
  clang -g -O1 -fopenmp=libomp -fsanitize=thread $p.c -o $p || { echo "FAIL: cannot build $p.c"; exit 1; }
  ./$p >$p.out 2>$p.err
  echo "self-check $p: exit $?, $(grep -c 'WARNING: ThreadSanitizer' $p.err) report(s)"
done
grep -q "WARNING: ThreadSanitizer: data race" race.err ||
  { echo "FAIL: the set-up misses a real race in an OpenMP loop"; exit 1; }
if grep -q "WARNING: ThreadSanitizer" norace.err; then
  echo "FAIL: false positive on a correct OpenMP reduction:"; cat norace.err; exit 1
fi

# --- the CLI: each OpenMP-parallel stage, at 2 and 4 threads
P=$SRC/sample_scans/phantom01
run() {
  local name=$1
  shift
  n=$((n + 1))
  local t0=$SECONDS
  "$PSP" "$@" >"$name.out" 2>"$name.err"
  local rc=$?
  local k
  k=$(grep -c "WARNING: ThreadSanitizer" "$name.err")
  if [ "$k" -gt 0 ] || [ $rc -ne 0 ]; then
    echo "FAIL $name: exit $rc, $k ThreadSanitizer report(s)"
    grep -A14 "WARNING: ThreadSanitizer" "$name.err" | head -60
    fails=$((fails + 1))
  else
    echo "ok   $name ($((SECONDS - t0)) s)"
  fi
}
run phantom phantom -o ph --seed 7 --prefix p -t 4
run analyze-auto-qc-2 analyze --water "${P}_water.nii.gz" --fat "${P}_fat.nii.gz" -o auto2 -t 2
run analyze-auto-qc-4 analyze --water ph/p_water.nii.gz --fat ph/p_fat.nii.gz -o auto4 -t 4
run analyze-labels analyze --water "${P}_water.nii.gz" --fat "${P}_fat.nii.gz" \
  --labels "${P}_dseg.nii.gz" -o lab -t 4 --no-qc
run analyze-ipop analyze --inphase "${P}_inphase.nii.gz" --outphase "${P}_outphase.nii.gz" -o ipop -t 4
run phantom-rolled phantom -o rl --seed 5 --prefix r --dims 128,96,12 --spacing 3,3,5 --roll 12 -t 4
run analyze-rolled analyze --water rl/r_water.nii.gz --fat rl/r_fat.nii.gz -o rolled -t 4
run phantom-dicom phantom --dicom dcm --seed 7 --dims 96,80,16 --series water,fat -t 4
run analyze-dicom analyze --dicom dcm -o dicom -t 4
run ffmap ffmap --water "${P}_water.nii.gz" --fat "${P}_fat.nii.gz" -o ff.nii.gz -t 4
run compare compare auto2/dseg.nii.gz "${P}_dseg.nii.gz" --water "${P}_water.nii.gz" \
  --fat "${P}_fat.nii.gz" --per-slice -t 4
echo "tsan: $((n - fails)) of $n CLI runs without reports"
# the unit tests of the same build (OMP_NUM_THREADS=2 each), when given
if [ -n "${4:-}" ]; then
  if ctest --test-dir "$4" -R '^unit\.' --output-on-failure >unit.log 2>&1; then
    echo "ok   unit tests: $(grep -E 'tests passed' unit.log)"
  else
    echo "FAIL unit tests under ThreadSanitizer:"; grep -E "Failed|WARNING: ThreadSanitizer" unit.log | head -20
    fails=$((fails + 1))
  fi
fi
[ $fails -eq 0 ]
