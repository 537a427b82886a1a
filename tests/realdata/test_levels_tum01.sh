#!/usr/bin/env bash
# Vertebral levels on the real development scans (../shared/data): the disc
# slices found on dixon-tum01 (Dixon water+fat, 4 mm slices) and what is
# found on ipop-chaos11 (in-phase/opposed-phase abdomen, 9 mm slices).
# Drives the library through the unit-test binary (test_levels --realdata)
# so it does not need the CLI integration; the checks themselves are in
# tests/unit/test_levels.c (test_real_tum01, test_real_chaos11) and print
# the discs, confidences and flags.
source "$(dirname "$0")/../integration/lib.sh"
DATA="$SRC/../shared/data"
if [ ! -f "$DATA/dixon-tum01/water.nii.gz" ] || [ ! -f "$DATA/ipop-chaos11/inphase.nii.gz" ]; then
  echo "SKIP: $DATA (dixon-tum01, ipop-chaos11) not present (real development data lives outside the project)"
  exit 77
fi
BIN="$(dirname "$PSP")/tests/test_levels"
[ -x "$BIN" ] || { echo "FAIL: $BIN not built"; exit 1; }
cd "$S"
PSP_SHARED_DATA="$DATA" OMP_NUM_THREADS=2 "$BIN" --realdata > out.txt 2>&1
rc=$?
cat out.txt
[ "$rc" -eq 0 ] || fail "test_levels --realdata exited $rc"
grep -q '^dixon-tum01: 4 discs' out.txt || fail "dixon-tum01: expected 4 discs"
grep -q '^ipop-chaos11:' out.txt || fail "ipop-chaos11 did not run"
finish
