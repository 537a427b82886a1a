#!/bin/bash
# The Snakemake workflow (scripts/workflow/) on a few phantoms with `snakemake -c2`: one job per
# subject plus the aggregation; its cohort tables (and subject folders) must equal
# `paraspinal batch` on the same manifest. Also a dry run of the Slurm profile (syntax only).
#   $1 PARASPINAL  $2 SOURCE_DIR  $3 SCRATCH
source "$(dirname "$0")/lib.sh"
command -v snakemake >/dev/null || { echo "SKIP: snakemake is not installed (Debian package snakemake)"; exit 77; }
SS=$SRC/sample_scans
WF=$SRC/scripts/workflow/Snakefile
TABLES="cohort_slices.csv cohort_levels.csv failures.csv"
PSP=$(realpath "$PSP")

mkdir -p "$S/data" "$S/wd"
head -c 3000 "$SS/phantom01_fat.nii.gz" >"$S/data/broken_fat.nii.gz"
cat >"$S/data/m.csv" <<EOF
subject,session,water,fat
sub-01,,$SS/phantom01_water.nii.gz,$SS/phantom01_fat.nii.gz
sub-02,ses-1,$SS/phantom02_water.nii.gz,$SS/phantom02_fat.nii.gz
sub-02,ses-2,$SS/phantom03_water.nii.gz,$SS/phantom03_fat.nii.gz
sub-03,,$SS/phantom01_water.nii.gz,broken_fat.nii.gz
EOF
M=$S/data/m.csv

cd "$S/wd" || exit 1
run snakemake -s "$WF" -c2 --quiet --config manifest="$M" out="$S/smk" paraspinal="$PSP" \
  threads=1 extra=--no-qc
for t in $TABLES; do [ -f "$S/smk/$t" ] || fail "snakemake did not write $t"; done

"$PSP" batch --manifest "$M" -o "$S/batch" --no-qc -q 2>/dev/null
[ $? -eq 10 ] || fail "batch: exit code (sub-03 is broken)"
for t in $TABLES; do cmp "$S/smk/$t" "$S/batch/$t" || fail "$t: snakemake and batch differ"; done
for sub in sub-01 sub-02/ses-1 sub-02/ses-2; do
  for f in slices.csv levels.csv volumes.csv dseg.tsv; do
    cmp -s "$S/smk/$sub/$f" "$S/batch/$sub/$f" || fail "$sub/$f: snakemake and batch differ"
  done
  [ -f "$S/smk/$sub/.paraspinal-done.json" ] || fail "$sub: no completion record"
done
grep -q "^sub-03,,analyze,4,format," "$S/smk/failures.csv" || fail "failures.csv: $(cat "$S/smk/failures.csv")"
[ "$(wc -l <"$S/smk/cohort_slices.csv")" -gt 100 ] || fail "cohort_slices.csv too short"

# a second invocation has nothing to do
snakemake -s "$WF" -c2 --config manifest="$M" out="$S/smk" paraspinal="$PSP" extra=--no-qc \
  -n >"$S/again.txt" 2>&1
grep -q "Nothing to be done" "$S/again.txt" || fail "second run is not a no-op: $(tail -5 "$S/again.txt")"

# strict=true: the failed subject fails the workflow
snakemake -s "$WF" -c2 --quiet --config manifest="$M" out="$S/strict" paraspinal="$PSP" \
  extra=--no-qc strict=true >"$S/strict.txt" 2>&1 && fail "strict=true did not fail on sub-03"

# a bad manifest stops the workflow with paraspinal's message
printf 'subject,water,fat\n../x,a,b\n' >"$S/data/bad.csv"
snakemake -s "$WF" -c1 --config manifest="$S/data/bad.csv" out="$S/bad" paraspinal="$PSP" \
  >"$S/bad.txt" 2>&1 && fail "a bad manifest was accepted"
grep -q "bad.csv:2:1: subject '../x' is not a safe folder name" "$S/bad.txt" || fail "bad manifest message: $(tail -3 "$S/bad.txt")"

# the Slurm profile parses (dry run; nothing is submitted)
snakemake -s "$WF" --profile "$SRC/scripts/workflow/profiles/slurm" -n \
  --config manifest="$M" out="$S/slurm" paraspinal="$PSP" >"$S/slurm.txt" 2>&1 ||
  fail "slurm profile dry run: $(tail -5 "$S/slurm.txt")"
grep -q "subject *3" "$S/slurm.txt" || fail "slurm dry run should plan 3 subject jobs"
finish
