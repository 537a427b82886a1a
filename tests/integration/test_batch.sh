#!/bin/bash
# paraspinal batch on the committed phantoms: cohort tables equal to the subjects' own CSVs (in
# manifest order, byte-identical at --jobs 1 and 2), a broken row in failures.csv with exit 10,
# --resume skipping verified subjects and re-running a corrupted or changed one, --shard 0/2 +
# 1/2 merged by --aggregate equal to the full run, --discover, --list, usage errors, and path
# escapes (../ and absolute ids, a symbolic link in OUT) refused with nothing written outside OUT.
#   $1 PARASPINAL  $2 SOURCE_DIR  $3 SCRATCH
source "$(dirname "$0")/lib.sh"
SS=$SRC/sample_scans
TABLES="cohort_slices.csv cohort_levels.csv cohort_volumes.csv failures.csv"
J2=2
[ "$(nproc)" -lt 2 ] && J2=1 # jobs x threads may not exceed the cores

mkdir -p "$S/data"
head -c 3000 "$SS/phantom02_fat.nii.gz" >"$S/data/broken_fat.nii.gz" # truncated gzip
cp "$SS/phantom01_water.nii.gz" "$S/data/w4.nii.gz"
cp "$SS/phantom01_fat.nii.gz" "$S/data/f4.nii.gz"
# sub-03/ses-2 is broken; relative paths are relative to the manifest's folder
cat >"$S/data/manifest.csv" <<EOF
subject,session,water,fat
sub-01,,$SS/phantom01_water.nii.gz,$SS/phantom01_fat.nii.gz
sub-02,,$SS/phantom02_water.nii.gz,"$SS/phantom02_fat.nii.gz"
sub-03,ses-1,$SS/phantom03_water.nii.gz,$SS/phantom03_fat.nii.gz
sub-03,ses-2,$SS/phantom01_water.nii.gz,broken_fat.nii.gz
sub-04,,w4.nii.gz,f4.nii.gz
EOF
M=$S/data/manifest.csv
GOOD="sub-01 sub-02 sub-03/ses-1 sub-04"

# --- full run, 2 jobs ---------------------------------------------------------------------
"$PSP" batch --manifest "$M" -o "$S/out" --no-qc --jobs $J2 >"$S/run1.out" 2>"$S/run1.err"
rc=$?
cat "$S/run1.out" "$S/run1.err"
[ $rc -eq 10 ] || fail "batch with a broken row exited $rc, expected 10 (some failed)"
grep -q "5 subjects: 4 analysed, 0 skipped (complete and verified), 1 failed" "$S/run1.out" ||
  fail "summary line"
grep -q "sub-03/ses-2: failed (analyze, exit 4 format)" "$S/run1.err" || fail "failure not reported on stderr"
grep -q "paraspinal batch: 5 subjects, $J2 jobs" "$S/run1.err" || fail "no plain progress line (not a TTY)"
for t in $TABLES; do [ -f "$S/out/$t" ] || fail "missing $t"; done
[ "$(wc -l <"$S/out/failures.csv")" -eq 2 ] || fail "failures.csv should have one row"
head -1 "$S/out/failures.csv" | grep -qx "subject,session,stage,exit_code,status,message" || fail "failures.csv header"
grep -q "^sub-03,ses-2,analyze,4,format,.*broken_fat.nii.gz" "$S/out/failures.csv" ||
  fail "failures.csv does not name the broken subject: $(cat "$S/out/failures.csv")"
[ -e "$S/out/sub-03/ses-2" ] && fail "a folder was written for the failed subject"
ls -a "$S/out" | grep -qE '^\.(tmp|old)-' && fail "temporary folders left behind"

# cohort tables = each subject's own CSV rows with subject,session prefixed, manifest order
for kind in slices levels volumes; do
  T=$S/out/cohort_$kind.csv
  want="subject,session,$(head -1 "$S/out/sub-01/$kind.csv")"
  [ "$(head -1 "$T")" = "$want" ] || fail "cohort_$kind.csv header"
  : >"$S/expect_$kind.csv"
  n=0
  for sub in $GOOD; do
    subj=${sub%%/*} ses=""
    [ "$sub" != "$subj" ] && ses=${sub#*/}
    tail -n +2 "$S/out/$sub/$kind.csv" | sed "s|^|$subj,$ses,|" >>"$S/expect_$kind.csv"
    n=$((n + $(tail -n +2 "$S/out/$sub/$kind.csv" | wc -l)))
  done
  if [ $kind = volumes ]; then
    [ "$n" -eq 16 ] || fail "cohort_volumes.csv: $n rows, expected 4 muscles x 4 subjects"
  else
    [ "$n" -gt 40 ] || fail "too few $kind rows ($n)"
  fi
  tail -n +2 "$T" | cmp -s - "$S/expect_$kind.csv" || fail "cohort_$kind.csv is not the subjects' rows in manifest order"
  [ "$(tail -n +2 "$T" | wc -l)" -eq "$n" ] || fail "cohort_$kind.csv row count"
  [ "$(cut -d, -f1 "$T" | tail -n +2 | sort -u | tr '\n' ' ')" = "sub-01 sub-02 sub-03 sub-04 " ] ||
    fail "cohort_$kind.csv subject column"
done
# sub-01 and sub-04 are the same scan: same numbers
cmp -s "$S/out/sub-01/slices.csv" "$S/out/sub-04/slices.csv" || fail "same input, different slices.csv"
for sub in $GOOD; do
  [ -f "$S/out/$sub/.paraspinal-done.json" ] || fail "$sub: no completion record"
  grep -q '"sha256"' "$S/out/$sub/.paraspinal-done.json" || fail "$sub: record without hashes"
done

# --- 1 job: byte-identical tables -------------------------------------------------------------
"$PSP" batch --manifest "$M" -o "$S/out1" --no-qc --jobs 1 --threads 1 -q >/dev/null 2>&1
[ $? -eq 10 ] || fail "jobs 1 run: exit code"
for t in $TABLES; do cmp "$S/out/$t" "$S/out1/$t" || fail "$t differs between --jobs $J2 and --jobs 1"; done

# --- aggregate reproduces the tables -------------------------------------------------------------
mkdir -p "$S/keep" && for t in $TABLES; do cp "$S/out/$t" "$S/keep/$t"; done
"$PSP" batch --aggregate "$S/out" --manifest "$M" >"$S/agg.out"
[ $? -eq 10 ] || fail "aggregate with a failed subject should exit 10"
for t in $TABLES; do cmp "$S/out/$t" "$S/keep/$t" || fail "aggregate --manifest: $t differs"; done
"$PSP" batch --aggregate "$S/out" -q
for t in $TABLES; do cmp "$S/out/$t" "$S/keep/$t" || fail "aggregate without manifest: $t differs"; done

# --- stale temporary folders (as a kill -9 leaves them) of this manifest's rows are removed ----------
mkdir -p "$S/out/.tmp-sub-01++99999/qc" "$S/out/.old-sub-03+ses-1+12345" "$S/out/.tmp-stranger++1"
touch "$S/out/.tmp-sub-01++99999/slices.csv" "$S/out/.tmp-sub-01++99999/qc/slice_000.png"
touch "$S/out/.cohort_slices.csv.4242.tmp"
# --- resume: everything verified is skipped --------------------------------------------------------
touch -d '2000-01-01' "$S/out/sub-02/.paraspinal-done.json"
"$PSP" batch --manifest "$M" -o "$S/out" --no-qc --jobs $J2 --resume >"$S/res.out" 2>&1
[ $? -eq 10 ] || fail "resume exit code"
grep -q "0 analysed, 4 skipped (complete and verified), 1 failed" "$S/res.out" || fail "resume did not skip: $(cat "$S/res.out")"
for t in $TABLES; do cmp "$S/out/$t" "$S/keep/$t" || fail "resume: $t differs"; done
[ "$(stat -c %Y "$S/out/sub-02/.paraspinal-done.json")" -lt 1000000000 ] || fail "a skipped subject was rewritten"
[ -e "$S/out/.tmp-sub-01++99999" ] || [ -e "$S/out/.old-sub-03+ses-1+12345" ] && fail "stale temporary folders not removed"
[ -e "$S/out/.cohort_slices.csv.4242.tmp" ] && fail "stale temporary table not removed"
[ -d "$S/out/.tmp-stranger++1" ] || fail "a temporary folder of a subject not in the manifest was removed"
rmdir "$S/out/.tmp-stranger++1"

# a corrupted output file and a changed input are noticed and re-run
sed -i '2s/,1,/,7,/' "$S/out/sub-02/slices.csv"
cp "$SS/phantom02_water.nii.gz" "$S/data/w4.nii.gz" # sub-04 now has other inputs
cp "$SS/phantom02_fat.nii.gz" "$S/data/f4.nii.gz"
"$PSP" batch --manifest "$M" -o "$S/out" --no-qc --jobs $J2 --resume -v >"$S/res2.out" 2>"$S/res2.err"
grep -q "2 analysed, 2 skipped (complete and verified), 1 failed" "$S/res2.out" || fail "resume after corruption: $(cat "$S/res2.out")"
grep -q "sub-02: done in .*re-run: output slices.csv changed" "$S/res2.err" || fail "corruption not named"
grep -q "sub-04: done in .*re-run: input water changed" "$S/res2.err" || fail "changed input not named"
cmp -s "$S/out/sub-02/slices.csv" "$S/out1/sub-02/slices.csv" || fail "corrupted slices.csv not rewritten"
cmp -s "$S/out/cohort_slices.csv" "$S/keep/cohort_slices.csv" && fail "sub-04's new input did not change the table"
cp "$SS/phantom01_water.nii.gz" "$S/data/w4.nii.gz"
cp "$SS/phantom01_fat.nii.gz" "$S/data/f4.nii.gz"
"$PSP" batch --manifest "$M" -o "$S/out" --no-qc --resume -q 2>/dev/null
for t in $TABLES; do cmp "$S/out/$t" "$S/keep/$t" || fail "after restoring the input: $t differs"; done
# a different setting (QC images) is not "complete" for --resume
"$PSP" batch --manifest "$M" -o "$S/out" --resume --only sub-01 -v >"$S/res3.out" 2>"$S/res3.err"
[ $? -eq 0 ] || fail "--only sub-01 exit code"
grep -q "re-run: settings changed" "$S/res3.err" || fail "settings change not noticed"
ls "$S/out/sub-01/qc/"slice_*.png >/dev/null 2>&1 || fail "qc images missing"
grep -q '"qc/slice_000.png"' "$S/out/sub-01/.paraspinal-done.json" || fail "qc images not in the record"

# --- shards ---------------------------------------------------------------------------------------
"$PSP" batch --manifest "$M" -o "$S/sh" --no-qc --shard 0/2 -q 2>/dev/null
rc0=$?
"$PSP" batch --manifest "$M" -o "$S/sh" --no-qc --shard 1/2 -q 2>/dev/null
rc1=$?
[ $rc0 -eq 0 ] && [ $rc1 -eq 10 ] || fail "shard exit codes $rc0 $rc1 (the broken row 3 is in shard 1)"
[ -f "$S/sh/cohort_slices.shard-0-of-2.csv" ] && [ -f "$S/sh/cohort_slices.shard-1-of-2.csv" ] || fail "shard tables"
[ -f "$S/sh/cohort_slices.csv" ] && fail "a shard wrote the full table"
s0=$(cut -d, -f1,2 "$S/sh/cohort_slices.shard-0-of-2.csv" | tail -n +2 | sort -u | tr '\n' ' ')
s1=$(cut -d, -f1,2 "$S/sh/cohort_slices.shard-1-of-2.csv" | tail -n +2 | sort -u | tr '\n' ' ')
[ "$s0" = "sub-01, sub-03,ses-1 sub-04, " ] || fail "shard 0 has rows 0,2,4: got '$s0'"
[ "$s1" = "sub-02, " ] || fail "shard 1 has rows 1,3: got '$s1'"
cat <(tail -n +2 "$S/sh/cohort_slices.shard-0-of-2.csv") <(tail -n +2 "$S/sh/cohort_slices.shard-1-of-2.csv") |
  sort | cmp -s - <(tail -n +2 "$S/keep/cohort_slices.csv" | sort) || fail "shard rows together differ from the full run"
"$PSP" batch --aggregate "$S/sh" --manifest "$M" -q
for t in $TABLES; do cmp "$S/sh/$t" "$S/keep/$t" || fail "shards + aggregate: $t differs from the full run"; done

# --- list and discover ------------------------------------------------------------------------------
"$PSP" batch --manifest "$M" --list --shard 1/2 >"$S/list.csv" || fail "--list"
[ "$(cut -d, -f1,2 "$S/list.csv" | tr '\n' ' ')" = "subject,session sub-02, sub-03,ses-2 " ] || fail "--list rows: $(cat "$S/list.csv")"
grep -q ",$S/data/broken_fat.nii.gz," "$S/list.csv" || fail "--list: relative path not resolved"
B=$S/bids
mkdir -p "$B/sub-a/anat" "$B/sub-b/ses-x/anat" "$B/sub-c/anat"
ln -s "$SS/phantom01_water.nii.gz" "$B/sub-a/anat/sub-a_water.nii.gz"
ln -s "$SS/phantom01_fat.nii.gz" "$B/sub-a/anat/sub-a_fat.nii.gz"
ln -s "$SS/phantom03_inphase.nii.gz" "$B/sub-b/ses-x/anat/sub-b_ses-x_inphase.nii.gz"
ln -s "$SS/phantom03_outphase.nii.gz" "$B/sub-b/ses-x/anat/sub-b_ses-x_outphase.nii.gz"
ln -s "$SS/phantom01_water.nii.gz" "$B/sub-c/anat/sub-c_water.nii.gz"
# a DICOM subject (sub-d/dicom/), when this build can write DICOM phantoms
DICOM=0
"$PSP" phantom --dicom "$B/sub-d/dicom" --dims 96,80,16 >/dev/null 2>&1 && DICOM=1
[ $DICOM = 1 ] || { echo "note: 'phantom --dicom' unavailable: no DICOM row tested"; rm -rf "$B/sub-d"; }
"$PSP" batch --discover "$B" -o "$S/bout" --no-qc -q 2>"$S/bout.err"
[ $? -eq 10 ] || fail "discover: sub-c has no fat image, exit should be 10"
cmp -s "$S/bout/sub-a/slices.csv" "$S/out1/sub-01/slices.csv" || fail "discover: sub-a differs from the manifest run"
[ -f "$S/bout/sub-b/ses-x/slices.csv" ] || fail "discover: session output missing"
grep -q "^sub-c,,discover,3,io,.*no complete input" "$S/bout/failures.csv" || fail "discover: sub-c not in failures.csv"
if [ $DICOM = 1 ]; then
  grep -q "^sub-d,,[0-9]" "$S/bout/cohort_slices.csv" || fail "discover: DICOM subject sub-d not in the table"
  grep -q '"role":.*"dicom"' "$S/bout/sub-d/.paraspinal-done.json" || fail "DICOM folder not in the record"
  echo extra >"$B/sub-d/dicom/README.txt" # the folder's content changed
  "$PSP" batch --discover "$B" -o "$S/bout" --no-qc --resume -v >/dev/null 2>"$S/bout2.err"
  grep -q "sub-d: done in .*re-run: input dicom changed" "$S/bout2.err" || fail "changed DICOM folder not noticed"
  grep -q "sub-a: skipped" "$S/bout2.err" || fail "discover --resume did not skip sub-a"
  # a DICOM folder with two acquisitions: the manifest's series column names the pair (there
  # is no other way to choose in a batch); a row without it fails, naming the candidates; a
  # spreadsheet's trailing empty rows are no subjects
  mkdir -p "$S/two"
  cp -r "$B/sub-d/dicom" "$S/two/dcm"
  rm -f "$S/two/dcm/README.txt"
  "$PSP" phantom --dicom "$S/two/dcm2" --dims 96,80,16 --seed 7 >/dev/null 2>&1
  for d in "$S/two/dcm2"/series_*; do mv "$d" "$S/two/dcm/${d##*/}_b"; done
  uid() { dcmdump -q +P SeriesInstanceUID "$(ls "$1"/* | head -1)" | sed 's/.*\[\(.*\)\].*/\1/'; }
  uids="$(uid "$S/two/dcm/series_01"),$(uid "$S/two/dcm/series_02")" # the first water + fat
  printf 'subject,dicom,series\nt1,dcm,"%s"\nt2,dcm,\n,,\n,,\n' "$uids" >"$S/two/m.csv"
  "$PSP" batch --manifest "$S/two/m.csv" -o "$S/two/out" --no-qc -q 2>"$S/two/err"
  [ $? -eq 10 ] || fail "series column: exit code (t2 has no series): $(cat "$S/two/err")"
  [ -f "$S/two/out/t1/.paraspinal-done.json" ] || fail "series column: t1 not complete: $(cat "$S/two/out/failures.csv")"
  grep -q "^t2,,analyze,2,usage,.*candidate water+fat pairs" "$S/two/out/failures.csv" ||
    fail "two acquisitions without series: $(cat "$S/two/out/failures.csv")"
  [ "$("$PSP" batch --manifest "$S/two/m.csv" --list | wc -l)" -eq 3 ] ||
    fail "the empty rows became subjects: $("$PSP" batch --manifest "$S/two/m.csv" --list 2>&1)"
  grep -q ';series=' "$S/two/out/t1/.paraspinal-done.json" || fail "the series chosen is not in the record's settings"
fi

# --- usage and I/O errors ------------------------------------------------------------------------------
expect() { # expect CODE ARGS...
  local want=$1
  shift
  "$PSP" batch "$@" >"$S/e.out" 2>"$S/e.err"
  local got=$?
  [ $got -eq "$want" ] || fail "batch $* exited $got, expected $want: $(cat "$S/e.err")"
}
expect 2 --manifest "$M"
expect 2 --manifest "$M" -o "$S/u" --jobs 0
expect 2 --manifest "$M" -o "$S/u" --shard 2/2
expect 2 --manifest "$M" -o "$S/u" --shard x
expect 2 --manifest "$M" -o "$S/u" --only nobody
expect 2 --manifest "$M" -o "$S/u" --jobs "$(nproc)" --threads 2
expect 2 --manifest "$M" --discover "$B" -o "$S/u"
expect 3 --manifest "$S/nonexistent.csv" -o "$S/u"
expect 3 --manifest "$M" -o "$S/data/manifest.csv/out"
[ -e "$S/u" ] && fail "a refused run created its output folder"
printf 'subject,water,fat\ns1,"a.nii,b.nii\n' >"$S/bad.csv"
expect 4 --manifest "$S/bad.csv" -o "$S/u"
grep -q "bad.csv:2:4: quoted field is not closed" "$S/e.err" || fail "manifest error without file:line:column"

# --- path escapes: ../ and absolute ids are refused, nothing written outside OUT -------------------------
mkdir -p "$S/jail/out" "$S/jail/outside"
for id in "../escaped" "/tmp/psp-escaped-$$" "..%" "." "a/../../escaped2"; do
  for col in subject session; do
    if [ $col = subject ]; then row="\"$id\",,$SS/phantom01_water.nii.gz,$SS/phantom01_fat.nii.gz"
    else row="s1,\"$id\",$SS/phantom01_water.nii.gz,$SS/phantom01_fat.nii.gz"; fi
    printf 'subject,session,water,fat\n%s\n' "$row" >"$S/jail/m.csv"
    expect 4 --manifest "$S/jail/m.csv" -o "$S/jail/out/o"
    grep -q "m.csv:2:[0-9]*: $col .* is not a safe folder name" "$S/e.err" || fail "$col '$id': $(cat "$S/e.err")"
  done
done
[ -e "$S/jail/escaped" ] || [ -e "/tmp/psp-escaped-$$" ] || [ -e "$S/escaped2" ] && fail "something was written outside OUT"
[ -e "$S/jail/out/o" ] && fail "a refused manifest created OUT"
# a symbolic link inside OUT pointing outside is never written through
ln -s "$S/jail/outside" "$S/jail/out/evil"
printf 'subject,session,water,fat\nevil,s1,%s,%s\n' "$SS/phantom01_water.nii.gz" "$SS/phantom01_fat.nii.gz" >"$S/jail/m2.csv"
expect 10 --manifest "$S/jail/m2.csv" -o "$S/jail/out" --no-qc
grep -q "^evil,s1,publish,3,io,.*symbolic link" "$S/jail/out/failures.csv" || fail "symlinked subject folder: $(cat "$S/jail/out/failures.csv")"
[ -z "$(ls -A "$S/jail/outside")" ] || fail "written through a symbolic link outside OUT: $(ls -A "$S/jail/outside")"

# --- a manifest that changes a subject's session layout never merges into or deletes old folders ------
printf 'subject,session,water,fat\nlay,,%s,%s\n' "$SS/phantom01_water.nii.gz" "$SS/phantom01_fat.nii.gz" >"$S/l1.csv"
printf 'subject,session,water,fat\nlay,s1,%s,%s\n' "$SS/phantom01_water.nii.gz" "$SS/phantom01_fat.nii.gz" >"$S/l2.csv"
expect 0 --manifest "$S/l1.csv" -o "$S/lay" --no-qc
expect 10 --manifest "$S/l2.csv" -o "$S/lay" --no-qc
grep -q "^lay,s1,publish,3,io,.*holds the outputs of a subject without sessions" "$S/lay/failures.csv" || fail "session layout clash not reported"
[ -f "$S/lay/lay/.paraspinal-done.json" ] && [ ! -e "$S/lay/lay/s1" ] || fail "the earlier subject folder was changed"

# --- OUT is the inputs' own folder: a subject folder this tool did not write is never replaced ---
mkdir -p "$S/own/sub-01" "$S/own/sub-02"
cp "$SS/phantom01_water.nii.gz" "$S/own/sub-01/water.nii.gz"
cp "$SS/phantom01_fat.nii.gz" "$S/own/sub-01/fat.nii.gz"
echo "my notes" >"$S/own/sub-01/notes.txt"
printf 'subject,water,fat
sub-01,sub-01/water.nii.gz,sub-01/fat.nii.gz
sub-02,sub-01/water.nii.gz,sub-01/fat.nii.gz
' >"$S/own/m.csv"
expect 10 --manifest "$S/own/m.csv" -o "$S/own" --no-qc
[ -s "$S/own/sub-01/water.nii.gz" ] && [ -s "$S/own/sub-01/fat.nii.gz" ] && [ -s "$S/own/sub-01/notes.txt" ] ||
  fail "batch -o into the inputs' folder replaced them: $(ls -A "$S/own/sub-01")"
grep -q "^sub-01,,publish,3,io,.*did not write" "$S/own/failures.csv" || fail "foreign subject folder not reported: $(cat "$S/own/failures.csv")"
[ -f "$S/own/sub-02/.paraspinal-done.json" ] || fail "an empty subject folder was not used"
finish
