#!/usr/bin/env bash
# dixon-tum01 with thick slices: every 3 slices averaged into one of 12 mm
# (nifti_edit.py thick). Its iliac wings then show on the lowest slice
# only, and the crest detector wanted a run of two slices: the anchor was
# lost, the lowest slice was taken as 24 mm above L5/S1 and the left
# multifidus fell to Dice 0.70 (all 0.915). One thick slice (>= 8 mm) with
# large wings on both sides is a run now (src/levels/iliac.c), with a
# lower confidence: 0.82 / 0.93.
source "$(dirname "$0")/../integration/lib.sh"
need_tum01
cd "$S"
edit_tum01 thick t3 3
tr -d '\t\n' < t3.out/report.json | grep -q '"anchor": *"iliac crest top[^"]*one thick slice' ||
  fail "12 mm slices: the iliac-crest anchor (one thick slice) was not found"
compare_manual t3.out t3 cmp.txt
dice_minima cmp.txt "MF_L=0.80 MF_R=0.82 ES_L=0.89 ES_R=0.91 all=0.925" ||
  fail "dixon-tum01 with 12 mm slices segmented much worse than with its own 4 mm"
finish
