#!/usr/bin/env bash
# DICOM input: the phantoms of sample_scans/ written as DICOM by an
# independent writer (tests/tools/make_dicom.py, pydicom) in the styles of
# three vendors must give byte-identical slices.csv, volumes.csv and
# levels.csv to the same phantom read as NIfTI (same voxels, same geometry
# to 1e-14 mm, so no tolerance is needed); ambiguity is an error listing the
# candidates and --series resolves it; broken series are refused with the
# documented exit codes; no patient identifier reaches an output file or
# stderr without --keep-identifiers; pydicom's own MR_small*.dcm files
# decode identically in every transfer syntax DCMTK can decode (JPEG 2000:
# exit 9, truncated file: exit 4).
source "$(dirname "$0")/lib.sh"
PY=/usr/bin/python3
if ! "$PY" -c "import pydicom, numpy" 2>/dev/null; then
  echo "SKIP: python3-pydicom and python3-numpy are needed (scripts/install-deps.sh)"
  exit 77
fi
MK=("$PY" "$SRC/tests/tools/make_dicom.py")
SS=$SRC/sample_scans
cd "$S" || exit 1
NAME="Secretname^Testpatient"
ID=PSPSECRET42
ACC=ACCSECRET7
IDS=(--patient-name "$NAME" --patient-id "$ID" --accession "$ACC")

no_ids() { # files or folders...
  if grep -rl -e Secretname -e "$ID" -e "$ACC" "$@" 2>/dev/null; then
    fail "patient identifier found in $* without --keep-identifiers"
  fi
}
same_results() { # OUT REF LABEL
  for f in slices.csv volumes.csv levels.csv; do
    cmp -s "$1/$f" "$2/$f" || { fail "$3: $f differs from the NIfTI run"; diff "$1/$f" "$2/$f" | head -4; }
  done
}

# --- NIfTI references ---------------------------------------------------------
for ph in phantom01 phantom02 phantom03; do
  run "$PSP" analyze --water "$SS/${ph}_water.nii.gz" --fat "$SS/${ph}_fat.nii.gz" -o "ref_$ph" --no-qc >/dev/null
done
run "$PSP" analyze --inphase "$SS/phantom01_inphase.nii.gz" --outphase "$SS/phantom01_outphase.nii.gz" \
  -o ref_ipop --no-qc >/dev/null

# --- water+fat in each vendor style -------------------------------------------
ALL=(--images water,fat,inphase,outphase)
i=0
while read -r ph style extra; do
  [ -n "$ph" ] || continue
  i=$((i + 1))
  d=dcm$i
  # shellcheck disable=SC2086
  run "${MK[@]}" --prefix "$SS/$ph" --style "$style" --out "$d" "${IDS[@]}" $extra >/dev/null
  qc=--no-qc
  [ $i -eq 1 ] && qc= # one run with QC images and report.html, checked for identifiers
  "$PSP" analyze --dicom "$d" -o "out$i" $qc >/dev/null 2>"err$i" || { fail "$ph $style $extra: exit $?"; cat "err$i"; continue; }
  same_results "out$i" "ref_$ph" "$ph $style $extra"
  grep -q '"format":	"dicom"' "out$i/report.json" || fail "$style: report.json does not mark the DICOM input"
  grep -q '"role":	"water"' "out$i/report.json" || fail "$style: no water input in report.json"
  grep -q '"dicom_selection"' "out$i/report.json" || fail "$style: no dicom_selection in report.json"
  # the acquisition the FF depends on (the writer's TR 6.5 ms, flip angle 10;
  # enhanced styles hold them in the MR Timing and Related Parameters)
  tr -d ' \t\n' < "out$i/report.json" | grep -q '"repetition_time_ms":6.5,"flip_angle_deg":10' ||
    fail "$style: report.json lacks the acquisition's repetition time and flip angle"
  no_ids "out$i" "err$i"
  echo "ok: $ph $style $extra"
done <<'EOF'
phantom01 siemens --nested --shuffle --images water,fat,inphase,outphase
phantom01 siemens-xa --images water,fat,inphase,outphase
phantom01 philips-mf --shuffle --images water,fat,inphase,outphase
phantom02 philips-mf2 --rle
phantom03 philips-sf --nested --shuffle --images water,fat,inphase,outphase
phantom03 ge --rotate 90 --signed-rescale --images water,fat,inphase,outphase
phantom02 ge-ideal --rotate 180
phantom01 siemens --rotate 270 --rle
EOF
# dicominfo prints the acquisition of each stack
"$PSP" dicominfo dcm1 > info1.txt 2>&1 || fail "dicominfo dcm1: exit $?"
grep -q "TE 2.46 ms, TR 6.5 ms, flip angle 10 deg, 3 T" info1.txt ||
  fail "dicominfo does not print the repetition time and flip angle"
grep -q '"n_files":	20' out1/report.json || fail "report.json: n_files of the water series is not 20"
[ -f out1/report.html ] && [ -d out1/qc ] || fail "the run with QC wrote no report.html / qc/"

# --- a 15-degree oblique grid: the NIfTI sform is float32, the DICOM affine
# double (3 mm pixels read 2.9999998 and 3); the same results all the same
run "$PSP" phantom -o obl_nii --prefix obl --oblique 15 --dims 96,80,20 --spacing 3,3,5 \
  --dicom obl_dcm >/dev/null
"$PSP" analyze --water obl_nii/obl_water.nii.gz --fat obl_nii/obl_fat.nii.gz -o out_obl_nii \
  --no-qc >/dev/null 2>err_obl_nii || fail "oblique phantom as NIfTI: exit $?"
"$PSP" analyze --dicom obl_dcm -o out_obl_dcm --no-qc >/dev/null 2>err_obl_dcm ||
  fail "oblique phantom as DICOM: exit $?"
same_results out_obl_dcm out_obl_nii "15-degree oblique phantom"
cmp -s out_obl_dcm/dseg.nii.gz out_obl_nii/dseg.nii.gz || fail "oblique phantom: dseg.nii.gz differs"
echo "ok: a 15-degree oblique grid as NIfTI and as DICOM"

# --- in-phase + opposed-phase only --------------------------------------------
while read -r style extra; do
  [ -n "$style" ] || continue
  d=ipop_$style
  # shellcheck disable=SC2086
  run "${MK[@]}" --prefix "$SS/phantom01" --style "$style" --out "$d" --images inphase,outphase $extra >/dev/null
  "$PSP" analyze --dicom "$d" -o "out_$d" --no-qc >/dev/null 2>"err_$d" || { fail "ipop $style: exit $?"; cat "err_$d"; continue; }
  same_results "out_$d" ref_ipop "ipop $style"
  grep -q '"fat_dominant_share"' "out_$d/report.json" || fail "ipop $style: no fat_dominant_share"
  echo "ok: in-phase/opposed-phase $style $extra"
done <<'EOF'
echo
siemens --shuffle
ge --nested
EOF

# --- ffmap: same NIfTI file from DICOM and NIfTI (same file grid) --------------
run "$PSP" ffmap --water "$SS/phantom01_water.nii.gz" --fat "$SS/phantom01_fat.nii.gz" -o ff_nifti.nii.gz >/dev/null
run "$PSP" ffmap --dicom dcm1 -o ff_dicom.nii.gz >/dev/null
# voxels byte-identical; the affine equal in value (DICOM has no signed zeros)
"$PY" - ff_nifti.nii.gz ff_dicom.nii.gz <<'PYEOF' || fail "ffmap --dicom differs from ffmap --water/--fat"
import gzip, struct, sys
a, b = (gzip.open(p).read() for p in sys.argv[1:3])
sa, sb = (struct.unpack("<12f", x[280:328]) for x in (a, b))
sys.exit(0 if a[352:] == b[352:] and len(a) == len(b) and sa == sb else 1)
PYEOF

# --- the input hash does not depend on file names or folder layout -------------
run "${MK[@]}" --prefix "$SS/phantom01" --style siemens --out flat "${IDS[@]}" --shuffle \
  --images water,fat,inphase,outphase >/dev/null
run "$PSP" analyze --dicom flat -o out_flat --no-qc >/dev/null
h1=$(grep -m1 '"sha256"' out1/report.json)
h2=$(grep -m1 '"sha256"' out_flat/report.json)
[ -n "$h1" ] && [ "$h1" = "$h2" ] || fail "input sha256 depends on the folder layout: $h1 vs $h2"

# --- verbose run: stderr still without identifiers -----------------------------
"$PSP" analyze --dicom dcm1 -o out_verbose --no-qc -v >/dev/null 2>err_verbose || fail "verbose run failed"
grep -q "using water" err_verbose || fail "verbose run does not say which series it chose"
no_ids err_verbose out_verbose

# --- identifiers only with --keep-identifiers -----------------------------------
run "$PSP" analyze --dicom dcm1 -o out_keep --no-qc --keep-identifiers >/dev/null
grep -q "$ID" out_keep/report.json || fail "--keep-identifiers: patient ID not in report.json"
grep -q "$ACC" out_keep/report.json || fail "--keep-identifiers: accession number not in report.json"
"$PSP" dicominfo dcm1 --no-values >info_plain 2>&1 || fail "dicominfo failed"
no_ids info_plain
"$PSP" dicominfo dcm1 --no-values --keep-identifiers >info_keep 2>&1
grep -q "$ID" info_keep || fail "dicominfo --keep-identifiers does not show the patient ID"

# --- two acquisitions: ambiguity, then --series --------------------------------
run "${MK[@]}" --prefix "$SS/phantom01" --style siemens --out amb --nested --seed 1 "${IDS[@]}" >/dev/null
run "${MK[@]}" --prefix "$SS/phantom01" --style ge --out amb --nested --seed 2 "${IDS[@]}" >/dev/null
"$PSP" analyze --dicom amb -o out_amb --no-qc >/dev/null 2>err_amb
rc=$?
[ $rc -eq 2 ] || fail "ambiguous folder: exit $rc, expected 2 (usage)"
grep -q "candidate water+fat pairs" err_amb || fail "ambiguity message missing"
grep -q -- "--series" err_amb || fail "ambiguity message does not mention --series"
grep -q "WATER: Ax LAVA-Flex" err_amb && grep -q "t1_vibe_dixon_tra_W" err_amb ||
  fail "ambiguity message does not list both acquisitions"
[ -e out_amb ] && fail "ambiguous run left an output folder"
no_ids err_amb
"$PSP" dicominfo amb --no-values >info_amb || fail "dicominfo on the ambiguous folder failed"
uid_w=$(sed -n 's/^\[[0-9]*\] series \([0-9.]*\), #[0-9]* "WATER: Ax LAVA-Flex".*/\1/p' info_amb)
uid_f=$(sed -n 's/^\[[0-9]*\] series \([0-9.]*\), #[0-9]* "FAT: Ax LAVA-Flex".*/\1/p' info_amb)
[ -n "$uid_w" ] && [ -n "$uid_f" ] || fail "could not read the GE series UIDs from dicominfo"
run "$PSP" analyze --dicom amb --series "$uid_w,$uid_f" -o out_series --no-qc >/dev/null
same_results out_series ref_phantom01 "--series"
grep -q "$uid_w" out_series/report.json || fail "report.json does not name the chosen series"
"$PSP" analyze --dicom amb --series 1.2.3.4 -o out_bad_series --no-qc >/dev/null 2>err_bs
[ $? -eq 2 ] || fail "--series with an unknown UID: expected exit 2"
grep -q "1.2.3.4" err_bs || fail "--series error does not name the UID"

# --- broken series ----------------------------------------------------------------
bad() { # NAME EXPECTED_RC PATTERN GENERATOR-ARGS...
  local name=$1 want=$2 pat=$3
  shift 3
  run "${MK[@]}" --prefix "$SS/phantom01" --style siemens --out "b_$name" "${IDS[@]}" "$@" >/dev/null
  "$PSP" analyze --dicom "b_$name" -o "out_b_$name" --no-qc >/dev/null 2>"err_b_$name"
  local rc=$?
  [ $rc -eq "$want" ] || { fail "$name: exit $rc, expected $want"; cat "err_b_$name"; }
  grep -q "$pat" "err_b_$name" || { fail "$name: message lacks '$pat'"; cat "err_b_$name"; }
  if [ "$want" -ne 0 ] && [ -e "out_b_$name" ]; then fail "$name: failed run left an output folder"; fi
  no_ids "err_b_$name"
  echo "ok: $name -> exit $rc"
}
bad gap 5 "1 slice(s) missing" --drop-slice 7
bad conflict 5 "same slice position" --conflict-slice 3
bad tilt 5 "tilted" --tilt 0.7
bad duplicate 0 "present twice" --duplicate-slice 4
same_results out_b_duplicate ref_phantom01 "duplicated file"

# a water series with a slice missing beside a whole in-phase/opposed-phase
# pair: refused (exit 5), never analysed as in-phase/opposed-phase in
# silence; named with --series, the pair is used
run "${MK[@]}" --prefix "$SS/phantom01" --style siemens --out b_wgap --images water,fat,inphase,outphase >/dev/null
rm b_wgap/s1_water_7_.dcm || fail "b_wgap: no file s1_water_7_.dcm to remove"
"$PSP" analyze --dicom b_wgap -o out_b_wgap --no-qc >/dev/null 2>err_b_wgap
rc=$?
[ $rc -eq 5 ] || { fail "water with a gap beside in-phase/opposed-phase: exit $rc, expected 5"; cat err_b_wgap; }
grep -q "1 slice(s) missing" err_b_wgap && grep -q "Nothing else is analysed" err_b_wgap ||
  { fail "water with a gap: message lacks the gap or the refusal"; cat err_b_wgap; }
[ -e out_b_wgap ] && fail "water with a gap: failed run left an output folder"
uids=$("$PSP" dicominfo b_wgap 2>/dev/null | awk '/^\[[34]\] series/ {gsub(",", "", $3); printf "%s%s", s, $3; s=","}')
"$PSP" analyze --dicom b_wgap --series "$uids" -o out_b_wgap --no-qc >/dev/null 2>err_b_wgap2 ||
  { fail "water with a gap, --series in-phase,opposed-phase ($uids): exit $?"; cat err_b_wgap2; }
same_results out_b_wgap ref_ipop "the in-phase/opposed-phase pair named beside a broken water series"
echo "ok: a broken water series is refused, not replaced by in-phase/opposed-phase"

mkdir -p empty junk
echo "not an image" >junk/a.txt
head -c 2000 /dev/urandom >junk/b.bin 2>/dev/null || printf 'xxxx' >junk/b.bin
"$PSP" analyze --dicom empty -o out_e --no-qc 2>err_e >/dev/null
[ $? -eq 6 ] || fail "empty folder: expected exit 6"
"$PSP" analyze --dicom junk -o out_e --no-qc 2>err_e >/dev/null
[ $? -eq 6 ] || fail "folder without DICOM: expected exit 6"
grep -q "no DICOM images" err_e || fail "folder without DICOM: message"
"$PSP" analyze --dicom does_not_exist -o out_e --no-qc 2>err_e >/dev/null
[ $? -eq 3 ] || fail "missing folder: expected exit 3"
"$PSP" analyze --dicom dcm1 --water "$SS/phantom01_water.nii.gz" -o out_e 2>err_e >/dev/null
[ $? -eq 2 ] || fail "--dicom with --water: expected exit 2"

# --- pydicom's real files through dicominfo ---------------------------------------
T=/usr/lib/python3/dist-packages/pydicom/data/test_files
if [ -f "$T/MR_small.dcm" ]; then
  for f in MR_small MR_small_implicit MR_small_bigendian MR_small_expb MR_small_RLE \
    MR_small_jpeg_ls_lossless MR_small_padded; do
    mkdir -p "py_$f" && cp "$T/$f.dcm" "py_$f/"
    "$PSP" dicominfo "py_$f" >"info_$f" 2>"infoerr_$f" || fail "dicominfo $f: exit $?"
    grep -q "values: min 127, max 2145, mean 518.881348 (4096 voxels)" "info_$f" ||
      { fail "$f: decoded values differ from pydicom's (127..2145, mean 518.88134765625)"; cat "info_$f"; }
    grep -q "CompressedSamples" "info_$f" "infoerr_$f" && fail "$f: patient name shown without --keep-identifiers"
    echo "ok: $f decodes ($(sed -n 's/.*transfer syntax //p' "info_$f"))"
  done
  "$PSP" dicominfo py_MR_small --keep-identifiers 2>/dev/null | grep -q "CompressedSamples" ||
    fail "dicominfo --keep-identifiers does not show the patient name"
  mkdir -p py_jp2k py_trunc && cp "$T/MR_small_jp2klossless.dcm" py_jp2k/ && cp "$T/MR_truncated.dcm" py_trunc/
  "$PSP" dicominfo py_jp2k >/dev/null 2>err_jp2k
  [ $? -eq 9 ] || fail "JPEG 2000: expected exit 9 (unsupported)"
  grep -q "JPEG 2000" err_jp2k && grep -q "MR_small_jp2klossless.dcm" err_jp2k ||
    { fail "JPEG 2000 message"; cat err_jp2k; }
  "$PSP" dicominfo py_trunc >/dev/null 2>err_trunc
  [ $? -eq 4 ] || fail "truncated file: expected exit 4 (format)"
  grep -q "MR_truncated.dcm" err_trunc || fail "truncated file: message does not name the file"
  "$PSP" analyze --dicom py_trunc -o out_trunc --no-qc >/dev/null 2>&1
  [ $? -eq 4 ] || fail "analyze on a truncated file: expected exit 4"
  "$PSP" analyze --dicom py_MR_small -o out_small --no-qc >/dev/null 2>err_small
  [ $? -eq 6 ] || fail "analyze on a non-Dixon image: expected exit 6"
  grep -q "no usable Dixon images" err_small || fail "non-Dixon message"
else
  echo "note: $T absent, real-file checks skipped"
fi
finish
