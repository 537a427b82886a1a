#!/usr/bin/env bash
# The same phantom written with different voxel orders, flips and an oblique
# affine must give identical per-muscle numbers; slice indices follow each
# file's own slice axis.
source "$(dirname "$0")/lib.sh"
cd "$S"
for o in LPS RAS PLI SRA; do
  run "$PSP" phantom -o "$o" --prefix p --seed 5 --snr 25 --orientation "$o"
  run "$PSP" analyze --water "$o/p_water.nii.gz" --fat "$o/p_fat.nii.gz" --labels "$o/p_dseg.nii.gz" -o "out_$o"
done
for o in RAS PLI SRA; do
  cmp -s out_LPS/volumes.csv "out_$o/volumes.csv" || { fail "volumes.csv differs for $o"; diff out_LPS/volumes.csv "out_$o/volumes.csv" | head; }
  # per-slice numbers equal once the file slice index is set aside
  cut -d, -f1,3- out_LPS/slices.csv > a.csv
  cut -d, -f1,3- "out_$o/slices.csv" > b.csv
  cmp -s a.csv b.csv || fail "slices.csv (apart from file_slice) differs for $o"
  compare_truth "$o/p_truth.csv" "out_$o/slices.csv" 0.5 1.0
done
# RAS flips the slice axis? No: S stays superior, so file_slice == slice; PLI
# reverses it (I), so file_slice = nz - 1 - slice.
awk -F, 'NR > 1 && $1 != $2 { bad = 1 } END { exit bad }' out_RAS/slices.csv || fail "RAS file_slice != slice"
nz=$(awk -F, 'NR > 1 { if ($1 + $2 > m) m = $1 + $2 } END { print m }' out_PLI/slices.csv)
awk -F, -v s="$nz" 'NR > 1 && $1 + $2 != s { bad = 1 } END { exit bad }' out_PLI/slices.csv || fail "PLI file_slice not reversed"
finish
