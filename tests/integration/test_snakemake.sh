#!/bin/bash
# The Snakemake workflow (scripts/workflow/) on a few phantoms with `snakemake -c2`: one job per
# subject plus the aggregation; its cohort tables (and subject folders) must equal
# `paraspinal batch` on the same manifest. Also a dry run of the Slurm profile (syntax only).
#   $1 PARASPINAL  $2 SOURCE_DIR  $3 SCRATCH
source "$(dirname "$0")/lib.sh"
command -v snakemake >/dev/null || { echo "SKIP: snakemake is not installed (Debian package snakemake)"; exit 77; }
SS=$SRC/sample_scans
WF=$SRC/scripts/workflow/Snakefile
TABLES="cohort_slices.csv cohort_levels.csv cohort_volumes.csv failures.csv"
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

# a second invocation tries the failed subject again, and only it
snakemake -s "$WF" -c2 --config manifest="$M" out="$S/smk" paraspinal="$PSP" extra=--no-qc \
  -n >"$S/again.txt" 2>&1
grep -Eq "^subject +1( |$)" "$S/again.txt" && grep -q "wildcards: subject=sub-03" "$S/again.txt" ||
  fail "second run does not retry just the failed sub-03: $(grep -A8 'Job stats' "$S/again.txt")"
# strict=true: the failed subject fails the workflow
snakemake -s "$WF" -c2 --quiet --config manifest="$M" out="$S/strict" paraspinal="$PSP" \
  extra=--no-qc strict=true >"$S/strict.txt" 2>&1 && fail "strict=true did not fail on sub-03"

# its file mended: the next run measures it, failures.csv no longer lists it, then nothing to do
cp "$SS/phantom01_fat.nii.gz" "$S/data/broken_fat.nii.gz"
run snakemake -s "$WF" -c2 --quiet --config manifest="$M" out="$S/smk" paraspinal="$PSP" \
  threads=1 extra=--no-qc
grep -q "^sub-03," "$S/smk/failures.csv" && fail "sub-03 mended but still in failures.csv"
grep -q "^sub-03," "$S/smk/cohort_slices.csv" || fail "sub-03 mended but not in cohort_slices.csv"
snakemake -s "$WF" -c2 --config manifest="$M" out="$S/smk" paraspinal="$PSP" extra=--no-qc \
  -n >"$S/again2.txt" 2>&1
grep -q "Nothing to be done" "$S/again2.txt" || fail "third run is not a no-op: $(tail -5 "$S/again2.txt")"
# a changed input file re-runs that subject's job
touch "$S/data/broken_fat.nii.gz"
snakemake -s "$WF" -c2 --config manifest="$M" out="$S/smk" paraspinal="$PSP" extra=--no-qc \
  -n >"$S/again3.txt" 2>&1
grep -q "wildcards: subject=sub-03" "$S/again3.txt" && ! grep -q "wildcards: subject=sub-01" "$S/again3.txt" ||
  fail "a changed input did not re-run (only) its subject: $(grep -A8 'Job stats' "$S/again3.txt")"

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
# through a stand-in sbatch (runs the job script here), 60 subjects: the 50-subject bundle asks
# for the profile's cap (2 CPUs, 4 GB, 25 rounds of 3 minutes), not 50 CPUs and 100 GB
mkdir -p "$S/fake"
printf '#!/bin/bash\necho "$@" >>"%s/sbatch.log"\nbash "${@: -1}" >/dev/null 2>&1 &\necho $RANDOM\n' "$S" >"$S/fake/sbatch"
chmod +x "$S/fake/sbatch"
{ echo "subject,water,fat"; for i in $(seq 1 60); do echo "s$i,$SS/phantom01_water.nii.gz,$SS/phantom01_fat.nii.gz"; done; } >"$S/data/m60.csv"
PATH="$S/fake:$PATH" timeout 600 snakemake -s "$WF" --profile "$SRC/scripts/workflow/profiles/slurm" \
  --config manifest="$S/data/m60.csv" out="$S/slurm60" paraspinal="$PSP" extra=--no-qc \
  >"$S/slurm60.txt" 2>&1 || fail "slurm profile through a stand-in sbatch: $(tail -5 "$S/slurm60.txt")"
grep -q -- "--cpus-per-task=2 --mem=4000 --time=75" "$S/sbatch.log" ||
  fail "the 50-subject bundle's request: $(cat "$S/sbatch.log")"
grep -q -- "--cpus-per-task=50" "$S/sbatch.log" && fail "a bundle asked for 50 CPUs"
[ "$(grep -c '^s60,' "$S/slurm60/cohort_slices.csv")" -gt 0 ] || fail "slurm60: s60 not in the cohort table"
finish
