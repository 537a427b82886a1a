#!/usr/bin/env bash
# dixon-tum01 as an obese subject: 60 mm more subcutaneous fat behind the
# body (nifti_edit.py backfat; tum01 has 14-38 mm behind its spine). The
# canal was searched only within 130 mm of the back's skin, and the
# segmentation flagged a canal beyond as the aorta, a kidney or bowel: the
# canal was placed in the fat and 2 of 29 slices were segmented (all-muscle
# Dice 0.04). The limit now grows with the back's fat beyond 40 mm
# (src/anatomy/landmarks.c): 0.938, as unedited.
# And the other end of body build: a lean back, its subcutaneous fat cut to
# 2 mm behind the muscles (nifti_edit.py thinfat; the phantoms have 20-29
# mm): the muscles' rules that start from the back's skin (at least 6 mm
# inside it) must not cut the erector spinae; all-muscle 0.936.
source "$(dirname "$0")/../integration/lib.sh"
need_tum01
cd "$S"
# build NAME MINIMA EDIT ARG: the edited copy is segmented on every slice,
# keeps its iliac-crest anchor and reaches the Dice minima
build() {
  local name=$1 minima=$2
  edit_tum01 "$3" "$name" "$4"
  segmented_slices "$name.out" 29 || fail "$name dixon-tum01: not every slice segmented"
  has_iliac_anchor "$name.out" || fail "$name dixon-tum01: the iliac-crest anchor was lost"
  compare_manual "$name.out" "$name" "$name.txt"
  dice_minima "$name.txt" "$minima" || fail "$name dixon-tum01 segmented much worse than the original"
}
build obese "MF_L=0.84 MF_R=0.86 ES_L=0.91 ES_R=0.92 all=0.93" backfat 60
build lean "MF_L=0.84 MF_R=0.86 ES_L=0.90 ES_R=0.91 all=0.92" thinfat 2
finish
