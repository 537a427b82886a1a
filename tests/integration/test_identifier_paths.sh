#!/usr/bin/env bash
# Nothing leaked, nothing written outside OUT: a DICOM study whose PatientID and PatientName
# look like paths ("../../escaped", "/tmp/...") is analysed with --dicom-out, and in a batch
# (the DICOM folder as a manifest row). Checks: every file written lies inside the output
# folder, no file or folder name contains the identifiers, and no output other than the DICOM
# objects (which must carry them) and report.json with --keep-identifiers holds them.
. "$(dirname "$0")/lib.sh"

ID="../../escaped-PSPLEAK"
NAME="/tmp/PSPLEAKNAME^X"
mkdir -p "$S/work/in" "$S/work/out"
cd "$S/work/in" || exit 1
run "$PSP" phantom --dicom dcm --dims 96,80,12 --spacing 3,3.5,6 --patient-id "$ID" \
  --patient-name "$NAME" > /dev/null

# 1. analyze --dicom --dicom-out, from inside a nested folder so "../.." would escape
cd "$S/work/out" || exit 1
"$PSP" analyze --dicom ../in/dcm --dicom-out -o res --no-qc > log.txt 2>&1 ||
  fail "analyze --dicom --dicom-out failed: $(tail -3 log.txt)"
# 2. batch with the DICOM folder as a row
printf 'subject,dicom\nsubj01,../in/dcm\n' > manifest.csv
"$PSP" batch --manifest manifest.csv -o cohort -q --no-qc >> log.txt 2>&1 ||
  fail "batch over the DICOM row failed: $(tail -3 log.txt)"

# nothing appeared outside the two output folders
for d in "$S" "$S/work" "$S/work/in"; do
  if find "$d" -maxdepth 1 -newer "$S/work/in/dcm" -name '*escaped*' | grep -q .; then
    fail "a file named after the PatientID appeared in $d"
  fi
done
[ -e "$S/escaped-PSPLEAK" ] || [ -e "$S/work/escaped-PSPLEAK" ] && fail "wrote outside OUT"
# no file or folder name contains the identifiers
if find "$S/work/out" | grep -E 'PSPLEAK|escaped' > /dev/null; then
  fail "an output file or folder is named after an identifier: $(find "$S/work/out" | grep -E 'PSPLEAK|escaped' | head -3)"
fi
# the identifiers are only inside the DICOM objects (SEG / secondary captures), not in
# CSV, JSON, HTML, NIfTI or the log
for f in $(find "$S/work/out" -type f ! -name '*.dcm'); do
  if grep -a -q -E 'PSPLEAK' "$f"; then fail "identifier found in $f"; fi
done
grep -a -l PSPLEAK "$S"/work/out/res/dicom/*.dcm > /dev/null ||
  fail "the DICOM SEG/SC lost the patient module (identifier missing)"
# with --keep-identifiers report.json holds them
"$PSP" analyze --dicom ../in/dcm -o res_keep --no-qc --keep-identifiers > /dev/null 2>&1 ||
  fail "analyze --keep-identifiers failed"
grep -q PSPLEAK res_keep/report.json || fail "--keep-identifiers: report.json lacks the PatientID"
finish
