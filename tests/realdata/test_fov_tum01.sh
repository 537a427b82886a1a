#!/usr/bin/env bash
# A field of view off the body's centre (nifti_edit.py crop: dixon-tum01's
# columns 100-399 only, the right flank cut 100 mm from the midline; the
# muscles all in view). The canal was searched within 40 mm of the centre
# of the body's left-right extent, which the cut moves: all-muscle Dice
# 0.693, 12 of 29 slices flagged, the rest placed on the wrong structure.
# Now a body cut on one side has no such limit: 0.937, as uncut.
# Columns 0-249 cut the left erector spinae itself: its area up to the
# image's edge would be too small, so it is left out there (before: 9
# slices "segmented", Dice 0.26; then every slice flagged cut_off and left
# empty). The multifidus lies whole in view and is measured: 0.86 / 0.89,
# the right erector spinae 0.94 (the crests are cut, but the wide bone below
# the lowest disc sets the height, below; 0.75 / 0.85 and 0.90 without).
# Two slices were flagged implausible, left and right erector spinae a
# factor 2 apart: a muscle at the image's edge is left out of that check
# now.
# A tight field of view that cuts the vertebral body in front (rows 160-399
# only, 24 mm in front of the canal centre): the canal was searched behind
# the front 30 % of the body's extent, which the cut had moved behind the
# canal, so it was placed 12-15 mm too far back on the lowest slices and
# beside the spine elsewhere: 0.723, area -35 %. A body cut in front has no
# such limit now: 0.937, as uncut.
# A spine-only field of view, 163 x 163 mm (columns and rows 120-279): the
# right erector spinae ends 3-8 mm from the edge with subcutaneous fat
# beyond. A muscle within 8 mm of the edge was taken as cut: 19 of 29
# slices flagged. Now the edge beyond it must not lie in fat on half the
# lines where it comes that near (src/segment/align.c): 23 slices measured,
# the 6 top ones, where the truth itself reaches within 3 mm of the edge
# with muscle-like tissue beyond, flagged; now on those 6 only the erector
# spinae (right, or both) is left out and the multifidus measured.
source "$(dirname "$0")/../integration/lib.sh"
need_tum01
cd "$S"
edit_tum01 crop right 100 400
python3 -c "import json,sys; s=json.load(open('right.out/report.json'))['segmentation']['slices'];
sys.exit(0 if all(x['status'] == 'ok' for x in s) else 1)" ||
  fail "field of view cut on the right: not every slice segmented"
compare_manual right.out right cmp.txt
dice_minima cmp.txt "MF_L=0.84 MF_R=0.86 ES_L=0.91 ES_R=0.92 all=0.93" ||
  fail "field of view cut on the right: segmented worse than the whole scan"
edit_tum01 rows front 160 400
segmented_slices front.out 29 ||
  fail "field of view cut in front: not every slice segmented"
compare_manual front.out front cmpf.txt
dice_minima cmpf.txt "MF_L=0.84 MF_R=0.86 ES_L=0.91 ES_R=0.92 all=0.93" ||
  fail "field of view cut in front: segmented worse than the whole scan"
edit_tum01 crop left 0 250
python3 -c "import json,sys; s=json.load(open('left.out/report.json'))['segmentation']['slices'];
n = sum(x['status'] == 'ok' and x.get('cut_off') == ['left erector spinae'] for x in s);
print(n, 'of', len(s), 'slices with the left erector spinae cut off'); sys.exit(0 if n >= 25 else 1)" ||
  fail "left erector spinae cut by the field of view: not left out, or the slices not measured"
grep -q "an erector spinae reaches within 8 mm of the image's edge: it is cut by the field of view" \
  left.out/report.json || fail "left erector spinae cut by the field of view: no warning"
compare_manual left.out left cmpl.txt
dice_minima cmpl.txt "MF_L=0.84 MF_R=0.87 ES_R=0.92" ||
  fail "left erector spinae cut by the field of view: the multifidus and the right side"
grep -q '^ES_L *0 ' cmpl.txt || fail "left erector spinae cut by the field of view: still labelled"
mkdir -p tmpc
python3 "$SRC/tests/realdata/nifti_edit.py" crop "$D" tmpc 120 280 ||
  fail "could not crop dixon-tum01"
D=tmpc edit_tum01 rows tight 120 280
python3 -c "import json,sys; s=json.load(open('tight.out/report.json'))['segmentation']['slices'];
n = sum(x['status'] == 'ok' for x in s); c = sum('cut_off' in x for x in s);
print(n, 'measured,', c, 'with an erector spinae cut off'); sys.exit(0 if n == len(s) and 4 <= c <= 8 else 1)" ||
  fail "spine-only field of view: slices with fat between the muscle and the edge cut off"
# The iliac crests lie beyond that edge: no anchor. But the bone below
# the lowest disc (the upper L5 body) is 1.35 x as wide as the lumbar
# bodies above (levels.c), so the bottom lies within about a vertebra of
# L5/S1 and is taken as an anchored stack's (src/pipeline.c), with a
# warning: multifidus 0.76 / 0.85 -> 0.87 / 0.89 (24 mm above L5/S1
# before; the whole scan 0.87 / 0.89).
grep -q "the bone below the lowest disc is at least 1.25 x as wide" tight.out/report.json ||
  fail "spine-only field of view: no warning that the wide bottom vertebra set the height"
compare_manual tight.out tight cmpt.txt
dice_minima cmpt.txt "MF_L=0.86 MF_R=0.88" ||
  fail "spine-only field of view: the multifidus with the wide bottom vertebra"
# Its slices from 32 mm up (8-28): the lowest disc is L3/L4, the bone below
# it a lumbar body, no cue: 24 mm above L5/S1, and since the field of view
# cuts the body at a side a warning asks for --disc (none where no body is
# cut: test_partial_tum01).
D=tight edit_tum01 slices tighttop 8 29
grep -q "the field of view cuts the body at a side" tighttop.out/report.json ||
  fail "spine-only field of view from L4 up: no warning that the crests may lie beyond the edge"
if grep -q "the bone below the lowest disc is at least" tighttop.out/report.json; then
  fail "spine-only field of view from L4 up: a lumbar body below the lowest disc read as wide"
fi
# A disc named by hand sets the height for the multifidus/erector spinae
# proportion, counted from 22 mm above the L5/S1 the names place
# (src/segment/segment.c), before the wide bottom vertebra: --disc
# L4/L5=2, multifidus 0.69 / 0.79 counted from L5/S1 itself (all slices,
# the 6 cut off ones empty), 0.79 / 0.81 from 22 mm above it, 0.86 / 0.89
# with the 6 top slices' multifidus measured. (The wide bottom vertebra
# first overrode the names: the same labels as without --disc.)
run "$PSP" analyze --water tight/water.nii.gz --fat tight/fat.nii.gz --disc L4/L5=2 -o tightn \
  --no-qc
compare_manual tightn tight cmpn.txt
dice_minima cmpn.txt "MF_L=0.84 MF_R=0.87 ES_L=0.84 ES_R=0.80" ||
  fail "spine-only field of view with L4/L5 named: the multifidus/erector proportion"
if grep -q "the bone below the lowest disc is at least" tightn/report.json; then
  fail "spine-only field of view with L4/L5 named: the wide bottom vertebra overrode the names"
fi
cmp -s tightn/dseg.nii.gz tight.out/dseg.nii.gz &&
  fail "spine-only field of view with L4/L5 named: the same labels as without the names"
finish
