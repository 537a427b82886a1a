#!/usr/bin/env bash
# A precomputed FF map with its water image (--ff MAP --water WATER): the
# numbers still come from the map alone, the segmentation sees the water
# image and the fat it implies (psp_ffmap_add_water). Before, the pair was
# refused ("give exactly one kind of input").
source "$(dirname "$0")/lib.sh"
cd "$S"
run "$PSP" phantom -o ph --prefix p --seed 3 --snr 25
run "$PSP" analyze --water ph/p_water.nii.gz --fat ph/p_fat.nii.gz -o wf --no-qc
# the same labels measured: the FF map alone and with its water image agree
run "$PSP" analyze --ff wf/fatfraction.nii.gz --labels ph/p_dseg.nii.gz -o ffl --no-qc
run "$PSP" analyze --ff wf/fatfraction.nii.gz --water ph/p_water.nii.gz --labels ph/p_dseg.nii.gz \
  -o ffwl --no-qc
cmp -s ffl/slices.csv ffwl/slices.csv ||
  fail "--ff with --water measured the given labels differently from --ff alone"
# segmented: the water image is an input, and the result is as good as from water + fat
run "$PSP" analyze --ff wf/fatfraction.nii.gz --water ph/p_water.nii.gz -o ffw
tr -d ' \t\n' < ffw/report.json | grep -q '"role":"water"' || fail "report.json lists no water input"
[ -s ffw/qc/slice_010.png ] || fail "no QC image"
run "$PSP" compare ffw/dseg.nii.gz ph/p_dseg.nii.gz > cmp.txt
run "$PSP" compare wf/dseg.nii.gz ph/p_dseg.nii.gz > cmp_wf.txt
# compare's FF from analyze's own fatfraction.nii.gz (NaN = no signal, which
# it refused) equals its FF from the water and fat images
run "$PSP" compare wf/dseg.nii.gz ph/p_dseg.nii.gz --ff wf/fatfraction.nii.gz --ff-unit fraction \
  --csv cmp_ff.csv
run "$PSP" compare wf/dseg.nii.gz ph/p_dseg.nii.gz --water ph/p_water.nii.gz --fat ph/p_fat.nii.gz \
  --csv cmp_wfff.csv
cmp -s cmp_ff.csv cmp_wfff.csv || { fail "compare --ff (analyze's map) differs from --water/--fat"; diff cmp_ff.csv cmp_wfff.csv | head -4; }
# an output path that is no regular file (a pipe here; /dev/null as root) is written to, never
# replaced by a new file; ffmap -o naming its own input is refused, the input intact
mkfifo pipe.csv
cat pipe.csv > from_pipe.csv &
run "$PSP" compare wf/dseg.nii.gz ph/p_dseg.nii.gz --csv pipe.csv
wait
[ -p pipe.csv ] || fail "compare --csv replaced a named pipe with a file"
"$PSP" compare wf/dseg.nii.gz ph/p_dseg.nii.gz --csv - | cmp -s - from_pipe.csv ||
  fail "compare --csv into a pipe: not the CSV"
cp ph/p_water.nii.gz w_copy.nii.gz
"$PSP" ffmap --water w_copy.nii.gz --fat ph/p_fat.nii.gz -o w_copy.nii.gz > /dev/null 2> ffself.err
[ $? = 2 ] || fail "ffmap -o its own input: exit not 2"
cmp -s w_copy.nii.gz ph/p_water.nii.gz || fail "ffmap -o its own input changed it"
cat cmp.txt
awk 'FNR == 1 { f++ } $1 ~ /^(MF|ES)_[LR]$/ && !($1 SUBSEP f in d) { d[$1, f] = $4 }
     END { split("MF_L MF_R ES_L ES_R", ms, " ")
           for (i = 1; i <= 4; i++) { a = d[ms[i], 1]; b = d[ms[i], 2]
             if (a == "" || b == "" || a - b > 0.005 || b - a > 0.005) {
               printf "FAIL: %s Dice %s (FF map + water) vs %s (water + fat)\n", ms[i], a, b; bad++ } }
           exit bad > 0 }' cmp.txt cmp_wf.txt || fail "--ff with --water: segmented unlike water + fat"
# a DICOM folder with an FF map and a water series only: paired the same way
run "$PSP" phantom -o dph --prefix d --seed 3 --snr 25 --dicom dcm --series water,ff
run "$PSP" analyze --dicom dcm --ff-unit percent -o dffw --no-qc
tr -d ' \t\n' < dffw/report.json | grep -q '"role":"water"' ||
  fail "DICOM FF map + water: the water series was not used"
grep -q "with its water image" dffw/report.json || fail "DICOM FF map + water: dicom_selection"
# a water image of another grid: a clear error naming both, nothing written
"$PSP" phantom -o small --prefix s --seed 3 --dims 100,80,20 > /dev/null || fail "phantom"
if "$PSP" analyze --ff wf/fatfraction.nii.gz --water small/s_water.nii.gz -o bad 2> err.txt; then
  fail "a water image of another grid was accepted"
fi
cat err.txt
grep -q "s_water.nii.gz" err.txt && grep -q "fatfraction.nii.gz" err.txt ||
  fail "the grid error does not name both files"
[ ! -e bad ] || fail "output written despite the error"
# --ff with --fat only: refused
if "$PSP" analyze --ff wf/fatfraction.nii.gz --fat ph/p_fat.nii.gz -o bad2 2> err2.txt; then
  fail "--ff with --fat was accepted"
fi
grep -q "exactly one kind of input" err2.txt || fail "--ff with --fat: unclear error"
finish
