#!/usr/bin/env bash
# DICOM output: `phantom --dicom` in each vendor's conventions (single-/multi-frame,
# uncompressed/RLE/JPEG-LS) read back with pydicom and compared with the phantom's NIfTI files
# (geometry and every voxel; tests/tools/check_phantom_dicom.py, DCMTK decompresses first), then
# `analyze --dicom --dicom-out`: the SEG and secondary captures checked with
# tests/tools/check_seg.py (references, geometry, voxels against dseg.nii.gz) and nothing
# identifying in file names, logs, CSV or JSON (report.json holds the identifiers only with
# --keep-identifiers); --dicom-out without DICOM input is a usage error.
. "$(dirname "$0")/lib.sh"
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
$PY -c 'import pydicom' 2> /dev/null || { echo "FAIL: python3-pydicom missing (scripts/install-deps.sh)"; exit 1; }
for tool in dcmdrle dcmdjpls; do
  command -v $tool > /dev/null || { echo "FAIL: $tool missing (Debian package dcmtk)"; exit 1; }
done

# decompress DIR OUT TOOL: a copy of DIR with every file decompressed by DCMTK
decompress() {
  local d f
  for d in "$1"/series_*; do
    mkdir -p "$2/$(basename "$d")"
    for f in "$d"/*.dcm; do "$3" "$f" "$2/$(basename "$d")/$(basename "$f")" || return 1; done
  done
}

# 1. the phantom's DICOM series against its NIfTI files (small grids: geometry and voxels)
SMALL=(--dims 96,80,12 --spacing 3,3.5,6)
while read -r vendor mf codec orient oblique series; do
  dir=$S/ph_${vendor}_${mf}_${codec}
  args=(phantom -o "$dir/nii" --dicom "$dir/dcm" "${SMALL[@]}" --vendor "$vendor" --compress "$codec"
        --orientation "$orient" --oblique "$oblique" --series "$series")
  [ "$mf" = 1 ] && args+=(--multiframe)
  run "$PSP" "${args[@]}" > /dev/null 2> "$dir.log"
  pixels=$dir/dcm
  case $codec in
    rle) decompress "$dir/dcm" "$dir/plain" dcmdrle || fail "dcmdrle failed"; pixels=$dir/plain ;;
    jpegls) decompress "$dir/dcm" "$dir/plain" dcmdjpls || fail "dcmdjpls failed"; pixels=$dir/plain ;;
  esac
  $PY "$SRC/tests/tools/check_phantom_dicom.py" "$dir/nii/phantom" "$dir/dcm" "$vendor" "$mf" "$codec" \
    "$pixels" || fail "phantom --dicom $vendor multiframe=$mf $codec differs from the NIfTI phantom"
done << 'EOF'
siemens 0 none LPS 0 water,fat,inphase,outphase,ff
siemens 1 rle RAS 0 water,fat
philips 1 jpegls PLI 17 water,fat,inphase,outphase,ff
philips 0 none LPS -9 inphase,outphase
ge 0 rle RPI 0 water,fat,inphase,outphase,ff
ge 1 jpegls LPS 5 water,fat
EOF
# same options, same bytes
run "$PSP" phantom --dicom "$S/again" "${SMALL[@]}" --vendor siemens --compress none \
  --series water,fat,inphase,outphase,ff > /dev/null 2>&1
diff -r "$S/ph_siemens_0_none/dcm" "$S/again" > /dev/null || fail "phantom --dicom is not deterministic"

# 2. analyze --dicom --dicom-out on a full-size phantom
run "$PSP" phantom -o "$S/full/nii" --dicom "$S/full/dcm" --vendor ge --compress jpegls > /dev/null
"$PSP" analyze --dicom "$S/full/dcm" --dicom-out -o "$S/out" -v > "$S/analyze.stdout" 2> "$S/analyze.stderr"
rc=$?
[ $rc = 0 ] || { fail "analyze --dicom-out exited $rc"; cat "$S/analyze.stderr"; finish; }
ls "$S/out/dicom"
[ -f "$S/out/dicom/seg.dcm" ] || fail "no dicom/seg.dcm"
n_sc=$(ls "$S/out/dicom"/sc_*.dcm 2> /dev/null | wc -l)
n_levels=$(awk -F, 'NR > 1 && $0 != "" { print $1 }' "$S/out/levels.csv" | sort -u | wc -l)
echo "secondary captures: $n_sc, levels in levels.csv: $n_levels"
[ "$n_sc" -ge 1 ] && [ "$n_sc" -le "$n_levels" ] || fail "expected one SC per level with a slice"
run $PY "$SRC/tests/tools/check_seg.py" "$S/out/dicom/seg.dcm" "$S/full/dcm/series_01" \
  "$S/out/dseg.nii.gz" "$S/out/dicom"/sc_*.dcm

# identifiers: in the DICOM outputs (the patient module), nowhere else
grep -qaF "PSP-PHANTOM-0001" "$S/out/dicom/seg.dcm" || fail "the SEG lacks the patient module (positive control)"
for id in 'PHANTOM^TEST' PSP-PHANTOM-0001 19700101 PSPACC0001 REFERRER; do
  grep -rqaF "$id" "$S/out" --exclude='*.dcm' && fail "identifier $id in an output file"
  grep -qF "$id" "$S/analyze.stdout" "$S/analyze.stderr" && fail "identifier $id in the log"
  find "$S/out" | grep -qF "$id" && fail "identifier $id in a file name"
done
run "$PSP" analyze --dicom "$S/full/dcm" --keep-identifiers -o "$S/out_ids" > /dev/null 2>&1
grep -qF "PSP-PHANTOM-0001" "$S/out_ids/report.json" || fail "--keep-identifiers: no patient ID in report.json"

# the same analysis again: the same UIDs (content-derived), so a PACS keeps one copy
run "$PSP" analyze --dicom "$S/full/dcm" --dicom-out -o "$S/out2" > /dev/null 2>&1
for f in "$S/out/dicom"/*.dcm; do
  a=$(dcmdump -q +P SOPInstanceUID "$f") b=$(dcmdump -q +P SOPInstanceUID "$S/out2/dicom/$(basename "$f")")
  [ "$a" = "$b" ] || fail "$(basename "$f"): SOP Instance UID differs between identical runs"
done

# the same folder again without --dicom-out: the earlier SEG and captures go
# (they would not match the new results)
"$PSP" analyze --dicom "$S/full/dcm" -o "$S/out2" --no-qc > /dev/null 2> "$S/rerun.err" ||
  fail "analyze into an earlier --dicom-out folder: exit $?"
[ -e "$S/out2/dicom" ] && fail "a run without --dicom-out left the earlier run's dicom folder"

# the study's own folder as the output folder, its images in OUT/dicom: the input survives
# runs without --dicom-out, and --dicom-out is refused (it would replace OUT/dicom)
mkdir -p "$S/study"
cp -r "$S/full/dcm" "$S/study/dicom"
n_in=$(find "$S/study/dicom" -type f | wc -l)
for i in 1 2; do
  "$PSP" analyze --dicom "$S/study/dicom" -o "$S/study" --no-qc > /dev/null 2> "$S/study$i.err" ||
    fail "analyze --dicom OUT/dicom -o OUT, run $i: $(cat "$S/study$i.err")"
done
[ "$(find "$S/study/dicom" -type f | wc -l)" = "$n_in" ] || fail "the input DICOM folder OUT/dicom was changed"
"$PSP" analyze --dicom "$S/study/dicom" -o "$S/study" --no-qc --dicom-out > /dev/null 2> "$S/study3.err" &&
  fail "--dicom-out replaced the input folder OUT/dicom"
grep -q "holds files this tool did not write" "$S/study3.err" || fail "OUT/dicom refusal: $(cat "$S/study3.err")"

# 3. refusals
"$PSP" analyze --water "$S/full/nii/phantom_water.nii.gz" --fat "$S/full/nii/phantom_fat.nii.gz" \
  --dicom-out -o "$S/refused" 2> "$S/refused.err"
rc=$?
[ $rc = 2 ] || fail "--dicom-out with NIfTI input: exit $rc, expected 2"
grep -q "needs DICOM input" "$S/refused.err" || fail "--dicom-out with NIfTI input: message: $(cat "$S/refused.err")"
[ ! -e "$S/refused" ] || fail "--dicom-out with NIfTI input created the output folder"
"$PSP" phantom --dicom "$S/x" --vendor acme 2> /dev/null
[ $? = 2 ] || fail "phantom --vendor acme: exit code not 2"
"$PSP" phantom --dicom "$S/x" --compress jpeg2000 2> /dev/null
[ $? = 2 ] || fail "phantom --compress jpeg2000: exit code not 2"
"$PSP" phantom --dicom /proc/paraspinal-no-such-dir "${SMALL[@]}" 2> /dev/null
[ $? = 3 ] || fail "phantom --dicom into an unwritable place: exit code not 3"
finish
