#!/usr/bin/env bash
# dixon-tum01 with thick slices: every 3 slices averaged into one of 12 mm
# (nifti_edit.py thick). Its iliac wings then show on the lowest slice
# only, and the crest detector wanted a run of two slices: the anchor was
# lost, the lowest slice was taken as 24 mm above L5/S1 and the left
# multifidus fell to Dice 0.70 (all 0.915). One thick slice (>= 8 mm) with
# large wings on both sides is a run now (src/levels/iliac.c), with a
# lower confidence: 0.82 / 0.93. The second boundary pass took the median
# of slices k-2..k+2 whatever their spacing (+-24 mm here); now those within
# 8 mm, at least one on either side (src/segment/segment.c, NEIGH_MM):
# multifidus 0.830 / 0.843 -> 0.849 / 0.859 at 12 mm, 0.851 / 0.871 ->
# 0.866 / 0.878 at 8 mm (4 mm slices unchanged).
source "$(dirname "$0")/../integration/lib.sh"
need_tum01
cd "$S"
edit_tum01 thick t3 3
tr -d '\t\n' < t3.out/report.json | grep -q '"anchor": *"iliac crest top[^"]*one thick slice' ||
  fail "12 mm slices: the iliac-crest anchor (one thick slice) was not found"
compare_manual t3.out t3 cmp.txt
dice_minima cmp.txt "MF_L=0.84 MF_R=0.85 ES_L=0.90 ES_R=0.925 all=0.93" ||
  fail "dixon-tum01 with 12 mm slices segmented much worse than with its own 4 mm"
edit_tum01 thick t2 2
compare_manual t2.out t2 cmp2.txt
dice_minima cmp2.txt "MF_L=0.86 MF_R=0.875 ES_L=0.915 ES_R=0.925 all=0.93" ||
  fail "dixon-tum01 with 8 mm slices segmented much worse than with its own 4 mm"
finish
