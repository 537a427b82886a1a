#!/usr/bin/env bash
# Automatic segmentation on the real development scan ../shared/data/dixon-tum01
# (analyze WITHOUT --labels), compared with its manual labels. The asserted
# Dice values are what this version reaches minus a small margin — NOT the
# issue's targets (erector spinae >= 0.90, multifidus >= 0.85), which it
# reaches only in part (README "Automatic segmentation"). Also checks the per-slice
# segmentation record in report.json and that slices.csv keeps its columns.
source "$(dirname "$0")/../integration/lib.sh"
D="$SRC/../shared/data/dixon-tum01"
if [ ! -f "$D/water.nii.gz" ]; then echo "SKIP: $D not present (real development data lives outside the project)"; exit 77; fi
cd "$S"
# minimum Dice per label: reached 0.864 / 0.881 / 0.924 / 0.932, all 0.939 (minus ~0.02-0.03;
# 0.862 / 0.880 with the midline bone's least half-width at 3 mm, src/segment/limits.c;
# 0.855 / 0.875 / 0.922 / 0.931, all 0.937 before the posterior arch's least thickness;
# before the outline smoothing at 6 mm (src/segment/refine.c) 0.844 / 0.863 / 0.915 / 0.925,
# all 0.935;
# with the rising front only from 24 mm above the lowest slice and a 30 mm lumbosacral taper
# 0.902 / 0.919 for the erector;
# before the erector's rising front 0.838 / 0.862 / 0.874 / 0.883, all 0.905; before the
# lamina front limit 0.799 / 0.800 / 0.869 / 0.873, all 0.887; v1 reached
# 0.641 / 0.659 / 0.827 / 0.842, all 0.880)
MIN_MF_L=0.83 MIN_MF_R=0.85 MIN_ES_L=0.90 MIN_ES_R=0.91 MIN_ALL=0.91
# the worst slice (all four muscles together; reached 0.88, 0.89 before the outline
# smoothing), the worst single
# muscle on a slice (reached 0.714, the left multifidus just above L5/S1; 0.696 with the
# midline bone's least half-width at 3 mm, so the issue's 0.70 asserted here fails there;
# 0.71 before the posterior arch's least thickness; before 0.60), the multifidus area over
# the volume (reached -3 % / +4 %; -1 % / +6 % with the half-width at 3 mm, so the limit of
# 5 fails there; 0 % / +9 % before the posterior arch's least thickness,
# src/segment/segment.c; 0 % / +10 % before the outline smoothing; v1 -25 % / -20 %) and the
# erector spinae's (reached +1 % / +2 %, before the outline smoothing +2 % / +3 %;
# +3 % / +3 % with the rising front from 24 mm;
# before it +5 % / +8 %)
MIN_SLICE_ALL=0.86 MIN_SLICE_MUSCLE=0.70 MAX_MF_AREA_PCT=5 MAX_ES_AREA_PCT=4
run "$PSP" analyze --water "$D/water.nii.gz" --fat "$D/fat.nii.gz" -o out
# the iliac crests are in view: the height prior is anchored, no warning
grep -q "no sacrum or iliac crest in view" out/report.json &&
  fail "warned that no sacrum or iliac crest is in view, but the crests are"
grep -q '"warnings"' out/report.json || fail "report.json has no warnings list"
# no sacrum seen: the height priors count from the lowest slice (in L5, 22 mm
# above the L5/S1 its crest names; phantoms with the sacrum:
# test_height_prior)
tr -d ' \t\n' < out/report.json |
  grep -q '"height_prior":{"zero_from":"bottom_of_stack","zero_slice":0,' ||
  fail "report.json: the height priors' zero is not the lowest slice"
# no fat plane shows between multifidus and erector spinae on its FF map: every
# slice split by the template's path, 2 % / 2 % of the boundary on a plane
# (with a plane added, test_plane_tum01: 95 % / 92 %)
boundary_seen out 0.0 0.1 template_path || fail "report.json: the MF/ES boundary's evidence"
run "$PSP" compare out/dseg.nii.gz "$D/labels_manual.nii.gz" --truth-scheme lpm \
  --water "$D/water.nii.gz" --fat "$D/fat.nii.gz" --per-slice --csv cmp.csv > cmp.txt 2>&1
sed -n '/Whole volume/,/mean 1-4/p' cmp.txt
check() { # label_name minimum
  awk -F, -v want="$1" -v min="$2" '
    NR > 1 && $3 == "" && $2 == want { found = 1; printf "%s: Dice %.4f (minimum %s)\n", want, $8, min
      if ($8 + 0 < min + 0) exit 1 }
    END { if (!found) exit 1 }' cmp.csv || fail "Dice of $1 below $2"
}
head -1 cmp.csv | grep -q '^label,name,slice,file_slice,n_pred,n_truth,n_both,dice' || fail "unexpected compare CSV columns"
check "left multifidus" $MIN_MF_L
check "right multifidus" $MIN_MF_R
check "left erector spinae" $MIN_ES_L
check "right erector spinae" $MIN_ES_R
check "all" $MIN_ALL
awk -F, -v min="$MIN_SLICE_ALL" 'NR > 1 && $3 != "" && $1 == 0 && $8 + 0 < min { print "slice " $3 ": Dice " $8; bad = 1 }
  END { exit bad }' cmp.csv || fail "a slice's Dice (all muscles) below $MIN_SLICE_ALL"
awk -F, -v min="$MIN_SLICE_MUSCLE" 'NR > 1 && $3 != "" && $1 >= 1 && $8 + 0 < min { print $2 " slice " $3 ": Dice " $8; bad = 1 }
  END { exit bad }' cmp.csv || fail "a muscle's Dice on a slice below $MIN_SLICE_MUSCLE"
awk -F, -v max="$MAX_MF_AREA_PCT" 'NR > 1 && $3 == "" && ($1 == 1 || $1 == 2) {
    printf "%s: area %+.1f %%\n", $2, $10; if ($10 > max || $10 < -max) bad = 1 }
  END { exit bad }' cmp.csv || fail "multifidus area off by more than $MAX_MF_AREA_PCT %"
awk -F, -v max="$MAX_ES_AREA_PCT" 'NR > 1 && $3 == "" && ($1 == 3 || $1 == 4) {
    printf "%s: area %+.1f %%\n", $2, $10; if ($10 > max || $10 < -max) bad = 1 }
  END { exit bad }' cmp.csv || fail "erector spinae area off by more than $MAX_ES_AREA_PCT %"
# the segmentation record: method, one entry per slice with status, reason, landmarks
grep -q '"segmentation"' out/report.json || fail "report.json has no segmentation object"
n=$(grep -c '"status":' out/report.json)
[ "$n" -eq 29 ] || fail "expected 29 per-slice statuses in report.json, found $n"
grep -q '"spinal_canal"' out/report.json || fail "no spinal canal landmark in report.json"
grep -q '"mm_ras"' out/report.json || fail "landmarks lack world coordinates"
head -1 out/slices.csv | grep -qx 'slice,file_slice,z_mm,muscle,side,label,area_mm2,ff_mean_pct,ff_ratio_pct,ff_median_pct,ff_q1_pct,ff_q3_pct,fcsa_mm2,fat_infiltration_pct,n_voxels,n_no_signal,level,level_confidence,mf_es_split,mf_es_on_plane_pct' \
  || fail "slices.csv columns changed"
# every segmented slice holds all four muscles
awk -F, 'NR > 1 { n[$1]++ } END { for (k in n) if (n[k] != 4) { print "slice " k ": " n[k] " muscles"; bad = 1 } exit bad }' out/slices.csv \
  || fail "a segmented slice lacks a muscle"
finish
