#!/usr/bin/env bash
# dixon-tum01 with in-plane pixels of 0.51 mm: every voxel split into 2 x 2
# (nifti_edit.py fine; the same image and labels, as a scanner's
# zero-filled interpolation gives). Segmented at those pixels, the rules'
# voxel-scale steps cover half the distance and the multifidus/erector
# split moved both ways (left multifidus Dice 0.827, left erector 0.913);
# the muscles are now told apart in a frame of 1 mm pixels and only their
# outline is taken at the image's own (src/segment/align.c): 0.851 / 0.918.
source "$(dirname "$0")/../integration/lib.sh"
need_tum01
cd "$S"
mkdir -p f2
python3 "$SRC/tests/realdata/nifti_edit.py" fine "$D" f2 2 || fail "could not edit dixon-tum01 (fine 2)"
run "$PSP" analyze --water f2/water.nii.gz --fat f2/fat.nii.gz -o out --no-qc -v 2> log.txt
grep -q "told apart in a frame of 1.00 x 1.00 mm" log.txt ||
  fail "0.51 mm pixels: no word of the 1 mm frame on stderr"
tr -d ' \t\n' < out/report.json | grep -q '"frame_pixel_mm":\[1,1\]' ||
  fail "0.51 mm pixels: report.json does not give the 1 mm frame"
has_iliac_anchor out || fail "0.51 mm pixels: the iliac-crest anchor was lost"
compare_manual out f2 cmp.txt
dice_minima cmp.txt "MF_L=0.84 MF_R=0.86 ES_L=0.915 ES_R=0.92 all=0.93" ||
  fail "dixon-tum01 at 0.51 mm pixels segmented worse than at its own 1.02 mm"
finish
