#!/usr/bin/env bash
# Exchanged inputs are refused before anything is measured: water and fat
# given the other way round make every FF 100 % minus the truth (the
# subcutaneous fat reads 5 % instead of 88-95 %); in-phase and
# opposed-phase exchanged make the muscles read -40 to -59 % (the
# opposed-phase image is then the brighter in 97 % of the voxels). Exit 6 (voxel data), both files named, no output; analysed only
# with --ignore-swap-check, and then flagged in report.json.
source "$(dirname "$0")/lib.sh"
P="$SRC/sample_scans/phantom01"
cd "$S"
expect_refused() { # what, then the command
  local what=$1 rc=0
  shift
  "$@" 2> err.txt || rc=$?
  cat err.txt
  [ "$rc" -eq 6 ] || fail "$what: exit $rc, expected 6 (voxel data)"
  grep -q "nothing measured" err.txt || fail "$what: the error does not say nothing was measured"
}
expect_refused "water/fat exchanged" "$PSP" analyze --water "${P}_fat.nii.gz" --fat "${P}_water.nii.gz" -o out
grep -q "phantom01_fat.nii.gz and .*phantom01_water.nii.gz: .*water and fat look swapped" err.txt ||
  fail "water/fat exchanged: the files or the swap not named"
[ ! -e out ] || fail "water/fat exchanged: an output folder was left"
expect_refused "ffmap, water/fat exchanged" "$PSP" ffmap --water "${P}_fat.nii.gz" --fat "${P}_water.nii.gz" -o ff.nii.gz
[ ! -e ff.nii.gz ] || fail "ffmap, water/fat exchanged: a map was written"
expect_refused "IP/OP exchanged" "$PSP" analyze --inphase "${P}_outphase.nii.gz" --outphase "${P}_inphase.nii.gz" -o outip
grep -q "opposed-phase image is the brighter in .* in-phase and opposed-phase look exchanged" err.txt ||
  fail "IP/OP exchanged: the reason not given"
run "$PSP" analyze --water "${P}_fat.nii.gz" --fat "${P}_water.nii.gz" -o forced --no-qc --ignore-swap-check
grep -Eq '"inputs_exchanged":[[:space:]]*true' forced/report.json ||
  fail "--ignore-swap-check: the swap not recorded"
# the right way round: analysed
run "$PSP" analyze --water "${P}_water.nii.gz" --fat "${P}_fat.nii.gz" -o fine --no-qc
grep -Eq '"ok":[[:space:]]*true' fine/report.json || fail "phantom01: the plausibility check failed"
grep -Eq '"inputs_exchanged":[[:space:]]*false' fine/report.json || fail "phantom01 taken as exchanged"
run "$PSP" analyze --inphase "${P}_inphase.nii.gz" --outphase "${P}_outphase.nii.gz" -o fineip --no-qc
finish
