#!/usr/bin/env bash
# Partial coverage: dixon-tum01's upper slices only (nifti_edit.py slices
# 14 29: about L3 upwards, no sacrum or iliac crest in view). The lowest
# slice is then taken as 24 mm above L5/S1 for the multifidus/erector
# spinae proportion, but it lies about 56 mm above it: multifidus Dice
# 0.73 / 0.71 (erector spinae 0.90 / 0.89). A disc named by hand now sets
# that height (src/segment/segment.c): --disc L2/L3=5 (the name this
# tool's own levels give that disc on the whole scan) 0.87 / 0.84.
source "$(dirname "$0")/../integration/lib.sh"
need_tum01
cd "$S"
edit_tum01 slices upper 14 29
echo "upper slices, levels unnamed:"
compare_manual upper.out upper cmp.txt
dice_minima cmp.txt "ES_L=0.88 ES_R=0.87 all=0.92" || fail "upper slices segmented badly"
run "$PSP" analyze --water upper/water.nii.gz --fat upper/fat.nii.gz --disc L2/L3=5 -o named \
  --no-qc -v 2> named.log
grep -q "the levels given place L5/S1" named.log || fail "--disc did not set the height above L5/S1"
echo "upper slices, --disc L2/L3=5:"
compare_manual named upper cmpn.txt
dice_minima cmpn.txt "MF_L=0.84 MF_R=0.82 ES_L=0.88 ES_R=0.87 all=0.93" ||
  fail "upper slices with a disc named: the multifidus/erector proportion did not follow"
finish
