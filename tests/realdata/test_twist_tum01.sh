#!/usr/bin/env bash
# dixon-tum01 with its slices rotated in-plane by -10 degrees at the bottom
# to +10 at the top (a spine whose rotation changes along the stack, as in
# scoliosis or a twisted patient; nearest neighbour, labels included): each
# slice is segmented in a frame aligned with its own axis
# (src/segment/align.c). Reached 0.851 / 0.869 / 0.919 / 0.929, all 0.936;
# with one angle for the whole volume 0.760 / 0.830 / 0.865 / 0.898, all
# 0.906; without alignment all 0.889.
source "$(dirname "$0")/../integration/lib.sh"
D="$SRC/../shared/data/dixon-tum01"
if [ ! -f "$D/water.nii.gz" ]; then echo "SKIP: $D not present (real development data lives outside the project)"; exit 77; fi
cd "$S"
python3 "$SRC/tests/realdata/nifti_edit.py" twist "$D" . -10 10 || fail "could not rotate dixon-tum01"
run "$PSP" analyze --water water.nii.gz --fat fat.nii.gz -o tw --no-qc
tr -d ' \t\n' < tw/report.json | grep -q '"aligned":true' || fail "the twisted spine was not aligned"
run "$PSP" compare tw/dseg.nii.gz labels_manual.nii.gz --truth-scheme lpm > cmp.txt
sed -n '/Whole volume/,/mean 1-4/p' cmp.txt
dice_minima cmp.txt "MF_L=0.82 MF_R=0.84 ES_L=0.89 ES_R=0.90 all=0.92" ||
  fail "twisted dixon-tum01 segmented much worse than the original"
finish
