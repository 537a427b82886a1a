#!/usr/bin/env bash
# Follow-up comparison through the CLI. Two phantoms with the same seed and
# geometry (so the same labels, the same noise realisation and the same
# detected levels) that differ only in multifidus FF: 10 % -> 20 % in the
# muscle tissue, no fatty streaks. Expected in change.csv:
#  - multifidus FF change = the phantom's true change at the same slice
#    (from its _truth.csv, i.e. 10 pp diluted by partial volume at the muscle
#    edges: 9.5-9.8 pp), within 0.3 pp (both runs share the noise, so the
#    error of the difference is far below the error of each FF; measured
#    deviations are ~0.05 pp), and within 9..11 pp of the nominal +10 pp;
#  - erector spinae FF change 0 within 0.05 pp, areas/volumes change exactly
#    0 (the label maps are identical);
#  - every row says which file slice it used in each run.
# Then hand-made variants of the follow-up levels.csv: one level with low
# confidence (skipped with the reason, the rest compared), a run without an
# anchor (relative names D1, V1: nothing comparable -> exit 6 and a message
# asking for --disc overrides), a truncated row (exit 4 naming file and
# line), a missing folder (exit 3), and usage errors (exit 2).
source "$(dirname "$0")/lib.sh"
cd "$S"
for ff in 10 20; do
  run "$PSP" phantom -o ph$ff --prefix p --seed 7 --streaks 0,0 --ff-multifidus 0.$ff,0.$ff
  run "$PSP" analyze --water ph$ff/p_water.nii.gz --fat ph$ff/p_fat.nii.gz \
    --labels ph$ff/p_dseg.nii.gz -o run$ff --no-qc
done
run "$PSP" change run10 run20 -o chg > summary.txt
cat summary.txt
[ -f chg/change.csv ] || fail "no change.csv"
grep -q "levels compared: [1-9]" summary.txt || fail "summary does not report compared levels"
grep -q "^L4/L5 (disc): file slice" summary.txt || fail "summary has no L4/L5 line with its slices"

# columns by name
col() { head -1 "$1" | tr ',' '\n' | grep -nx "$2" | cut -d: -f1; }
C=chg/change.csv
for c in level kind muscle side metric baseline followup change_abs change_rel_pct status reason \
  baseline_file_slice_first followup_file_slice_first; do
  [ -n "$(col $C $c)" ] || fail "change.csv has no column $c"
done

# multifidus FF vs the phantom's true change at the same file slice
awk -F, -v fl="$(col $C level)" -v fm="$(col $C muscle)" -v fs="$(col $C side)" \
  -v fx="$(col $C metric)" -v fa="$(col $C change_abs)" -v fst="$(col $C status)" \
  -v fb="$(col $C baseline_file_slice_first)" -v ff="$(col $C followup_file_slice_first)" '
  FNR == 1 { next }
  FILENAME == ARGV[1] { t10[$2 "," $4 "," $5] = $8; next }   # file_slice,muscle,side -> ff
  FILENAME == ARGV[2] { t20[$2 "," $4 "," $5] = $8; next }
  $fst != "ok" || $fx != "ff_mean_pct" || $fm != "multifidus" || $fs == "both" { next }
  {
    if ($fb != $ff) { printf "FAIL: %s uses file slice %s vs %s\n", $fl, $fb, $ff; bad++ }
    k = $fb ",multifidus," $fs
    if (!(k in t10)) { printf "FAIL: no truth for %s\n", k; bad++; next }
    truth = t20[k] - t10[k]; d = $fa - truth; if (d < 0) d = -d
    if (d > m) m = d
    n++; s += $fa
    if (d > 0.3) { printf "FAIL: %s %s FF change %s, truth %.3f\n", $fl, $fs, $fa, truth; bad++ }
    if ($fa < 9 || $fa > 11) { printf "FAIL: %s %s FF change %s not ~ +10 pp\n", $fl, $fs, $fa; bad++ }
  }
  END {
    printf "multifidus FF change: %d rows, mean %+.3f pp, max |measured - truth| %.3f pp\n", n, s / n, m
    exit (n < 10 || bad > 0)
  }' ph10/p_truth.csv ph20/p_truth.csv $C || fail "multifidus FF change"

# erector FF ~ 0 and areas/volumes exactly 0; seg FF of multifidus ~ +10 too
awk -F, -v fm="$(col $C muscle)" -v fx="$(col $C metric)" -v fa="$(col $C change_abs)" \
  -v fst="$(col $C status)" '
  NR == 1 || $fst != "ok" { next }
  $fx ~ /^(seg_)?area|volume/ { na++; if ($fa + 0 != 0) { print "FAIL: area change " $0; bad++ } }
  $fx ~ /ff_mean/ && $fm == "erector_spinae" {
    ne++; d = $fa < 0 ? -$fa : $fa; if (d > 0.05) { print "FAIL: erector FF change " $0; bad++ } }
  $fx == "seg_ff_mean_pct_mean" && $fm == "multifidus" {
    ns++; if ($fa < 9 || $fa > 11) { print "FAIL: segment FF change " $0; bad++ } }
  END { printf "%d area/volume rows, %d erector FF rows, %d multifidus segment FF rows\n", na, ne, ns
        exit (na < 50 || ne < 10 || ns < 5 || bad > 0) }' $C || fail "erector FF / area changes"
# segments cut by the end of the stack: their volume is skipped, with the reason
grep -q '^S1,vertebra,multifidus,left,seg_volume_mm3,.*,skipped,"\?segment incomplete' $C \
  || fail "S1 segment volume (cut by the stack) not skipped"
# the summary gives the row's own reason (it said "cut by the stack" for every skipped volume)
grep -q "volume: skipped (segment incomplete in" summary.txt || fail "summary: skipped volume without its reason"
grep -q "volume: skipped (segment cut by the stack)" summary.txt && fail "summary: the old fixed reason"

# --- low confidence at one level in the follow-up ----------------------------
L=run20/levels.csv
lc=$(col $L level_confidence) ll=$(col $L level) an=$(col $L anchored)
mkdir -p low
awk -F, -v OFS=, -v lc="$lc" -v ll="$ll" 'NR > 1 && $ll == "L4/L5" { $lc = "0.300" } 1' $L > low/levels.csv
run "$PSP" change run10 low -o chg_low > low.txt
grep -q "L4/L5 (disc): .*confidence 0.300 < 0.50 in the followup run" low.txt \
  || fail "low-confidence L4/L5 not listed as skipped in the summary"
awk -F, -v fl="$(col $C level)" -v fst="$(col $C status)" '
  $fl == "L4/L5" && $fst != "skipped" { bad++ } $fl == "L4" && $fst == "ok" { ok4++ }
  END { exit (bad > 0 || ok4 == 0) }' chg_low/change.csv || fail "low-confidence level not skipped"
"$PSP" change run10 low -o chg_low2 --min-confidence 0.2 > /dev/null || fail "--min-confidence 0.2"
grep -q '^L4/L5,disc,multifidus,left,ff_mean_pct,.*,ok,' chg_low2/change.csv \
  || fail "--min-confidence 0.2 does not accept L4/L5"

# --- a run without an anchor: relative names only -----------------------------
mkdir -p rel
awk -F, -v OFS=, -v ll="$ll" -v an="$an" -v lc="$lc" '
  NR == 1 { print; next }
  { if (!($ll in name)) { if ($ll ~ /\//) name[$ll] = "D" ++nd; else name[$ll] = "V" ++nv }
    $ll = name[$ll]; $an = 0; $lc = "0.300"; print }' $L > rel/levels.csv
"$PSP" change run10 rel -o chg_rel > rel.txt 2> rel.err
rc=$?
cat rel.err
[ $rc -eq 6 ] || fail "unanchored followup: exit $rc, expected 6"
grep -q "no level was confidently named in both runs" rel.err || fail "no explanation on stderr"
grep -q -- "--disc" rel.err || fail "message does not suggest --disc overrides"
[ -f chg_rel/change.csv ] || fail "change.csv not written when nothing is comparable"
grep -q ',ok,' chg_rel/change.csv && fail "a row is ok although nothing is comparable"
grep -q '^D1,disc,.*,skipped,.*relative name in the followup run' chg_rel/change.csv \
  || fail "relative name D1 not listed as skipped"
grep -q '^L4/L5,disc,.*,skipped,.*not in the followup run' chg_rel/change.csv \
  || fail "baseline-only L4/L5 not listed as skipped"

# --- bad inputs ---------------------------------------------------------------
mkdir -p trunc
head -20 $L > trunc/levels.csv
head -21 $L | tail -1 | cut -d, -f1-10 >> trunc/levels.csv
"$PSP" change run10 trunc -o chg_bad 2> trunc.err
rc=$?
cat trunc.err
[ $rc -eq 4 ] || fail "truncated levels.csv: exit $rc, expected 4"
grep -q "trunc/levels.csv: line 21: truncated row" trunc.err || fail "truncated row: file/line not named"
"$PSP" change run10 nowhere -o chg_bad 2> miss.err
rc=$?
cat miss.err
[ $rc -eq 3 ] || fail "missing folder: exit $rc, expected 3"
grep -q "followup: nowhere: no such folder" miss.err || fail "missing folder not named"
mkdir -p empty
"$PSP" change empty run20 -o chg_bad 2> empty.err
rc=$?
cat empty.err
[ $rc -eq 3 ] || fail "folder without levels.csv: exit $rc, expected 3"
grep -q "baseline: empty/levels.csv: cannot open" empty.err || fail "missing levels.csv not named"
[ ! -e chg_bad ] || fail "a failed run left an output folder"
"$PSP" change run10 run20 2> /dev/null
[ $? -eq 2 ] || fail "missing -o: expected exit 2"
"$PSP" change run10 -o x 2> /dev/null
[ $? -eq 2 ] || fail "one folder: expected exit 2"
"$PSP" change run10 run20 -o x --min-confidence 2 2> /dev/null
[ $? -eq 2 ] || fail "--min-confidence 2: expected exit 2"
"$PSP" change --help | grep -q "Usage: paraspinal change" || fail "--help"
finish
