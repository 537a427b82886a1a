#!/usr/bin/env bash
# dixon-tum01 with a signal void (water and fat zero, as metal or air leave
# them) of 10 voxels' radius in its left erector spinae on slices 12-14
# (nifti_edit.py void). The midline's symmetry read the void as fat and
# moved 15-20 mm towards the other side: multifidus Dice 0.10-0.24 on those
# slices, reported as measured, with no word of the void (all 0.925, left
# multifidus 0.787). Now a pair of voxels with a void in it counts for
# nothing in the symmetry (src/anatomy/landmarks.c), and a void inside or
# against the muscles is measured per slice (report.json signal_void_mm2)
# and named in a warning: the areas leave it out.
source "$(dirname "$0")/../integration/lib.sh"
need_tum01
cd "$S"
edit_tum01 void vo 12 15 228 215 10
segmented_slices vo.out 29 || fail "void: not all 29 slices segmented"
compare_manual vo.out vo cmp.txt
dice_minima cmp.txt "MF_L=0.85 MF_R=0.87 ES_L=0.91 ES_R=0.92 all=0.93" ||
  fail "a signal void in the left erector spinae misled the segmentation"
n=$(tr -d ' \t\n' < vo.out/report.json | grep -o '"signal_void_mm2":[0-9.]*' | wc -l)
[ "$n" -eq 3 ] || fail "void: $n slices with signal_void_mm2, expected 3 (slices 12-14)"
grep -q 'a signal void (no signal: metal, air) lies inside or against the muscles on 3 slice' \
  vo.out/report.json || fail "void: no warning names it"
# the unedited scan has no such void (a few mm^2 at most)
run "$PSP" analyze --water "$D/water.nii.gz" --fat "$D/fat.nii.gz" -o orig --no-qc
grep -q 'a signal void' orig/report.json && fail "dixon-tum01 itself: a void warning"
finish
