#!/usr/bin/env bash
# valgrind memcheck over the CLI on a phantom (`make valgrind`): every run
# must finish with no invalid read/write, no use of uninitialised values and
# no leak (definite, indirect or possible), else valgrind's exit code 99
# fails the script. Runs: analyze with automatic segmentation and QC images
# (2 threads), analyze with --labels and --no-qc (1 thread), in-phase/
# opposed-phase input, compare, change, phantom, DICOM (phantom --dicom and
# analyze --dicom), a rolled phantom (aligned frames), batch (one good and
# one failing subject; the worker
# processes are forked, so memcheck follows them), and error paths (truncated
# NIfTI and DICOM, header promising 4 GB, bad landmarks file, unknown labels):
# failures must not leak either.
#   tests/reliability/memcheck.sh PARASPINAL SOURCE_DIR SCRATCH
# Suppressions: tests/valgrind.supp (OpenMP runtime internals only).
set -u
PSP=$1 SRC=$2 S=$3
rm -rf "$S" && mkdir -p "$S" && cd "$S" || exit 1
command -v valgrind >/dev/null || { echo "valgrind not installed (scripts/install-deps.sh)"; exit 1; }
P=$SRC/sample_scans/phantom01 M=$SRC/tests/malformed
VG=(valgrind --tool=memcheck --error-exitcode=99 --leak-check=full
    --show-leak-kinds=definite,indirect,possible --errors-for-leak-kinds=definite,indirect,possible
    --track-origins=yes --suppressions="$SRC/tests/valgrind.supp" --num-callers=30)
fails=0 n=0
# vg NAME EXPECTED_EXIT ARGS...: runs paraspinal ARGS under memcheck
vg() {
  local name=$1 want=$2
  shift 2
  n=$((n + 1))
  local t0=$SECONDS
  # one log per process (%p): batch forks its workers and memcheck follows them
  "${VG[@]}" --log-file="$name.%p.vg.log" "$PSP" "$@" >"$name.out" 2>"$name.err"
  local rc=$?
  local logs=("$name".*.vg.log) dirty=0
  for l in "${logs[@]}"; do
    grep -q "ERROR SUMMARY: 0 errors" "$l" || dirty=$((dirty + 1))
  done
  if [ $rc -eq 99 ] || [ $dirty -gt 0 ]; then
    echo "FAIL $name: memcheck found errors in $dirty of ${#logs[@]} process(es)"
    grep -hE "^==[0-9]+== (Invalid|Conditional|Use of|Syscall|Mismatched|[0-9,]+ bytes in|ERROR SUMMARY)" \
      "${logs[@]}" | head -20
    fails=$((fails + 1))
  elif [ $rc -ne "$want" ]; then
    echo "FAIL $name: exit $rc, expected $want"; sed -n '1,20p' "$name.err"
    fails=$((fails + 1))
  else
    echo "ok   $name: exit $rc, ${#logs[@]} process(es), 0 errors ($((SECONDS - t0)) s)"
  fi
}
vg analyze-auto-qc 0 analyze --water "${P}_water.nii.gz" --fat "${P}_fat.nii.gz" -o auto -t 2
vg analyze-labels-noqc 0 analyze --water "${P}_water.nii.gz" --fat "${P}_fat.nii.gz" \
  --labels "${P}_dseg.nii.gz" -o lab --no-qc -t 1
vg analyze-ipop 0 analyze --inphase "${P}_inphase.nii.gz" --outphase "${P}_outphase.nii.gz" \
  --labels "${P}_dseg.nii.gz" -o ipop --no-qc -t 2 --disc L4/L5=8
vg compare 0 compare auto/dseg.nii.gz "${P}_dseg.nii.gz" --water "${P}_water.nii.gz" \
  --fat "${P}_fat.nii.gz" --per-slice --csv compare.csv
vg change 0 change lab auto -o change
vg phantom 0 phantom -o ph --seed 5 --prefix x --dims 64,56,12
# a rolled phantom (made without memcheck: 27 sub-samples per voxel take 90 s
# under it) segmented in frames aligned with the spine (src/segment/align.c)
"$PSP" phantom -o rl --seed 5 --prefix r --dims 128,96,12 --spacing 3,3,5 --roll 12 >/dev/null ||
  { echo "FAIL phantom-rolled"; fails=$((fails + 1)); }
vg analyze-rolled 0 analyze --water rl/r_water.nii.gz --fat rl/r_fat.nii.gz -o rolled -t 2
vg phantom-dicom 0 phantom --dicom dcm --seed 6 --dims 64,56,12 --series water,fat
vg analyze-dicom 0 analyze --dicom dcm -o dicom --no-qc -t 2
printf 'subject,water,fat,labels\ns1,%s,%s,%s\ns2,%s,%s,\n' "${P}_water.nii.gz" "${P}_fat.nii.gz" \
  "${P}_dseg.nii.gz" "${P}_water.nii.gz" "$M/truncated.nii.gz" >manifest.csv
vg batch 10 batch --manifest manifest.csv -o cohort -j 1 -t 2 --no-qc
vg error-dicom 4 analyze --dicom "$M/dicom_truncated" -o e5
vg error-truncated 4 analyze --water "$M/base_water.nii.gz" --fat "$M/truncated.nii.gz" -o e1
vg error-dims-lie 4 analyze --water "$M/base_water.nii.gz" --fat "$M/dims_lie.nii.gz" -o e2
vg error-landmarks 2 analyze --water "${P}_water.nii.gz" --fat "${P}_fat.nii.gz" \
  --landmarks "$M/landmarks_bad.txt" -o e3
vg error-labels 6 analyze --water "$M/base_water.nii.gz" --fat "$M/base_fat.nii.gz" \
  --labels "$M/labels_unknown.nii.gz" -o e4
echo "memcheck: $((n - fails)) of $n runs clean"
[ $fails -eq 0 ]
