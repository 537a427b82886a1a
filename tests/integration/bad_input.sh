#!/usr/bin/env bash
# One bad-input case through `paraspinal analyze`: asserts a message naming
# the file and the problem, the documented non-zero exit code, no crash (no
# signal exit), and no output files left behind.
#   bad_input.sh PARASPINAL MKBAD CASE SCRATCH
set -u
PSP=$1 MKBAD=$2 CASE=$3 S=$4
rm -rf "$S" && mkdir -p "$S" || exit 1
cd "$S" || exit 1
"$MKBAD" valid water.nii.gz && "$MKBAD" valid fat.nii.gz && "$MKBAD" labels labels.nii.gz || exit 1
W=water.nii.gz F=fat.nii.gz L=labels.nii.gz OUT=out
EXTRA=()
case "$CASE" in
  missing)        W=nonexistent_water.nii.gz; want=3; msg="cannot open"; name=$W ;;
  directory)      mkdir adir.nii.gz; W=adir.nii.gz; want=3; msg="is a folder"; name=$W ;;
  truncated)      "$MKBAD" truncated fat_t.nii.gz; F=fat_t.nii.gz; want=4; msg="truncated"; name=$F ;;
  notnifti)       "$MKBAD" notnifti fat_x.nii; F=fat_x.nii; want=4; msg="not a NIfTI"; name=$F ;;
  empty)          "$MKBAD" empty water_e.nii; W=water_e.nii; want=4; msg="empty"; name=$W ;;
  4d)             "$MKBAD" 4d water_4d.nii.gz; W=water_4d.nii.gz; want=2; msg="--volume"; name=$W ;;
  mismatch)       "$MKBAD" valid fat_m.nii.gz 16 16 5; F=fat_m.nii.gz; want=5; msg="dimensions differ"; name=$F ;;
  zerospacing)    "$MKBAD" zerospacing fat_z.nii.gz; F=fat_z.nii.gz; want=5; msg="spacing must be > 0"; name=$F ;;
  nan)            "$MKBAD" nan water_n.nii.gz; W=water_n.nii.gz; want=6; msg="NaN"; name=$W ;;
  inf)            "$MKBAD" inf fat_i.nii.gz; F=fat_i.nii.gz; want=6; msg="infinite"; name=$F ;;
  labels-unknown) "$MKBAD" labels-unknown labels_u.nii.gz; L=labels_u.nii.gz; want=6; msg="not in the label scheme"; name=$L ;;
  huge)           "$MKBAD" huge water_h.nii; W=water_h.nii; want=7; msg="exceeds the limit"; name=$W ;;
  scheme-no-labels) L=""; EXTRA=(--label-scheme lpm); want=2; msg="none was given"; name="--label-scheme" ;;
  unwritable-out) touch blocker; OUT=blocker/out; want=3; msg="cannot create folder"; name=blocker ;;
  bad-option)     EXTRA=(--threads zero); want=2; msg="--threads"; name="zero" ;;
  *) echo "unknown case $CASE"; exit 1 ;;
esac
args=(analyze --water "$W" --fat "$F" -o "$OUT" "${EXTRA[@]}")
[ -n "$L" ] && args+=(--labels "$L")
"$PSP" "${args[@]}" >stdout.txt 2>stderr.txt
rc=$?
fail=0
if [ $rc -ge 128 ]; then echo "FAIL: crashed with signal $((rc - 128))"; fail=1; fi
if [ $rc -ne "$want" ]; then echo "FAIL: exit code $rc, expected $want"; fail=1; fi
grep -q -- "$msg" stderr.txt || { echo "FAIL: stderr lacks '$msg'"; fail=1; }
grep -q -- "$name" stderr.txt || { echo "FAIL: stderr does not name '$name'"; fail=1; }
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
  echo "FAIL: partial output left in $OUT:"; ls -la "$OUT"; fail=1
fi
echo "--- stderr:"; cat stderr.txt
[ $fail -eq 0 ] && echo "ok: $CASE -> exit $rc"
exit $fail
