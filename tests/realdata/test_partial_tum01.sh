#!/usr/bin/env bash
# Partial coverage: dixon-tum01's upper slices only (nifti_edit.py slices
# 14 29: about L3 upwards, no sacrum or iliac crest in view). The lowest
# slice is then taken as 24 mm above L5/S1 for the multifidus/erector
# spinae proportion, but it lies about 56 mm above it: multifidus Dice
# 0.73 / 0.71 (erector spinae 0.90 / 0.89). A disc named by hand now sets
# that height (src/segment/segment.c): --disc L2/L3=5 (the name this
# tool's own levels give that disc on the whole scan) 0.87 / 0.84; 0.86 /
# 0.86 counted from 22 mm above the L5/S1 the names place (the template's
# anchor on dixon-tum01).
source "$(dirname "$0")/../integration/lib.sh"
need_tum01
cd "$S"
edit_tum01 slices upper 14 29
echo "upper slices, levels unnamed:"
compare_manual upper.out upper cmp.txt
dice_minima cmp.txt "ES_L=0.88 ES_R=0.87 all=0.92" || fail "upper slices segmented badly"
grep -q "no sacrum or iliac crest in view" upper.out/report.json ||
  fail "upper slices: no warning that the lowest slice's height was assumed"
# the whole body in view: the crests' absence is evidence, no hint on the field of view
grep -q "the field of view cuts the body at a side" upper.out/report.json &&
  fail "upper slices: the warning says the field of view cuts the body, which it does not"
run "$PSP" analyze --water upper/water.nii.gz --fat upper/fat.nii.gz --disc L2/L3=5 -o named \
  --no-qc -v 2> named.log
grep -q "the levels given place L5/S1" named.log || fail "--disc did not set the height above L5/S1"
echo "upper slices, --disc L2/L3=5:"
compare_manual named upper cmpn.txt
dice_minima cmpn.txt "MF_L=0.84 MF_R=0.82 ES_L=0.88 ES_R=0.87 all=0.93" ||
  fail "upper slices with a disc named: the multifidus/erector proportion did not follow"
# Without its lowest slice (slices 1 29) dixon-tum01 shows its iliac crests on
# one slice only, too short a run to name the levels: the lowest slice was
# taken as 24 mm above L5/S1, multifidus 0.77 / 0.85 (area -24 %); iliac bone
# on both sides at the bottom now says the pelvis is in view, and the lowest
# slice is taken as L5/S1 (src/pipeline.c): 0.865 / 0.874, with a warning.
# A stack starting 8 mm or more higher shows no such bone and is unchanged.
edit_tum01 slices low1 1 29
grep -q "iliac bone on both sides at the bottom of the stack" low1.out/report.json ||
  fail "no warning that the lowest slice was taken as L5/S1 from iliac bone"
compare_manual low1.out low1 cmpl.txt
dice_minima cmpl.txt "MF_L=0.84 MF_R=0.85 ES_L=0.90 ES_R=0.91 all=0.93" ||
  fail "without its lowest slice: the multifidus/erector proportion was taken from too high"
edit_tum01 slices low2 2 29
grep -q "iliac bone on both sides at the bottom of the stack" low2.out/report.json &&
  fail "iliac bone seen at the bottom of a stack that starts above the crests"
finish
