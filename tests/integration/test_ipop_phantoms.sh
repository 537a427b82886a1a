#!/usr/bin/env bash
# Automatic segmentation from in-phase/opposed-phase magnitudes of the
# sample phantoms, against their truth: the input's known
# weakness is partial volume at the fat planes (magnitudes read 1 - FF
# there, so the erector spinae grows across them). Mixed voxels beside the
# fat with an in-phase signal up to the fat class now read as fat-dominant
# (src/dixon/fatdom.c): all-muscle Dice 0.868 / 0.831 -> 0.882 / 0.843,
# the erector spinae's FF +4.3 / +3.7 and +3.9 / +4.2 pp -> +2.6 / +2.5 and
# +2.4 / +2.5 pp. A mixed voxel whose in-phase signal tells its two
# readings apart (a harmonic mix of the tissues around it) now takes the
# nearer: 0.888 / 0.850 -> 0.896 / 0.866 (the phantoms' in-phase contrast,
# fat 1.2 x muscle, decides few voxels; the minima fail on the version
# before). With the sacrum in view the height priors count from 22 mm above
# the L5/S1 disc, no longer from the stack's lowest slice (46 mm lower here,
# test_height_prior): phantom01 0.896 -> 0.897 (multifidus 0.871 / 0.883 ->
# 0.886 / 0.883, erector 0.880 / 0.888 -> 0.898 / 0.890), phantom02 0.871
# -> 0.873 (multifidus 0.75 / 0.73 -> 0.85 / 0.85), phantom03 0.866 ->
# 0.851: its slice at L2 (internal 24) then splits its sides 2.2 x apart in
# area and is flagged, as is implausible. A fatty erector spinae's lean
# pieces at its outline leave it (src/segment/refine.c item 11: in
# in-phase/opposed-phase the muscle reads 25-35 % FF, and the back wall's
# lean layer joins it through the fat plane's partial volume): phantom02
# 0.873 -> 0.890 (erector 0.845 / 0.842 -> 0.879 / 0.875, area +17 / +17 %
# -> +7 / +6 %), phantom03 0.851 -> 0.869 (erector 0.811 / 0.804 -> 0.847 /
# 0.830, area +19 / +18 % -> +8 / +10 %), phantom01 unchanged. The erector's
# FF then reads +3.2 / +3.1 pp on phantom03, from +2.3 / +2.4: the lean
# voxels it lost had offset the fat planes' partial volume it keeps, so
# the bound is 3.5 pp (the FF of the voxels left out, from water and fat:
# 0-0.4). With the multifidus's ring on a one-voxel step to fat joined
# (refine.c item 12): phantom01 0.896, phantom02 0.896 (multifidus 0.845 /
# 0.845 -> 0.857 / 0.858), phantom03 0.871 (erector 0.850 / 0.838, area
# +7 / +8 %, FF +3.2 / +3.1 pp). With the left/right check after the
# stack's majority (version 0.3.4) phantom03 keeps its slice 5 (left and
# right 2.2 x apart before it): 0.871 -> 0.886 (erector 0.860 / 0.853,
# area +13 / +13 %); phantom02 0.898 (refine.c item 13). The minima are
# these less 0.005.
source "$(dirname "$0")/lib.sh"
cd "$S"
P="$SRC/sample_scans"
for spec in "01 0.891" "02 0.893" "03 0.881"; do
  set -- $spec
  compare_phantom "$1" "p$1" --inphase "$P/phantom$1_inphase.nii.gz" \
    --outphase "$P/phantom$1_outphase.nii.gz"
  dice_minima "p$1.txt" "all=$2" || fail "phantom$1 as in-phase/opposed-phase: segmented worse"
  awk '/Whole volume/ { on = 1 } /mean 1-4/ { on = 0 }
       on && ($1 == "ES_L" || $1 == "ES_R") { d = $NF + 0; if (d >= 3.5 || d <= -3.5) bad++ }
       END { exit bad > 0 }' "p$1.txt" ||
    fail "phantom$1 as in-phase/opposed-phase: an erector spinae's FF 3.5 pp or more off"
done
finish
