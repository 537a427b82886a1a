#!/usr/bin/env bash
# Vertebral levels through the CLI on a phantom with known discs: slices.csv
# names every slice whose level the phantom's anatomy table states (disc
# slabs of the phantom can straddle: a disc name may also sit on the
# vertebra slice next to it), levels.csv has the level rows, and an override
# in the file's numbering renames the stack.
source "$(dirname "$0")/lib.sh"
cd "$S"
run "$PSP" phantom -o ph --prefix p --seed 2 --snr 25 --spacing 2.5,2.5,5
run "$PSP" analyze --water ph/p_water.nii.gz --fat ph/p_fat.nii.gz --labels ph/p_dseg.nii.gz -o out --no-qc
# every vertebra slice of the truth (not next to a disc) must carry its name
awk -F, 'FNR == 1 { next }
  FILENAME == ARGV[1] { truth[$1] = $4; next }
  { got[$1] = $17 }
  END {
    for (k in truth) {
      t = truth[k]; if (t ~ /\// || t == "S1" || t == "S2") continue
      if (truth[k - 1] != t || truth[k + 1] != t) continue
      n++; if (got[k] != t) { printf "slice %d: level %s, truth %s\n", k, got[k], t; bad++ }
    }
    printf "%d vertebra slices checked, %d wrong\n", n, bad; exit (n < 10 || bad > 0)
  }' ph/p_anatomy.csv out/slices.csv || fail "level names on vertebra slices"
grep -q '^L4/L5,disc' out/levels.csv || fail "levels.csv has no L4/L5 disc rows"
# volumes.csv's maximum cross-sectional area = an independent maximum over
# slices.csv (area, slice and that slice's level), per label
awk -F, 'FNR == 1 { next }
  FILENAME == ARGV[1] { if (!($6 in a) || $7 + 0 > a[$6] + 0) { a[$6] = $7; k[$6] = $1; lv[$6] = $17 }; next }
  { n++; if ($13 != a[$3] || $14 != k[$3] || $15 != lv[$3]) {
      printf "label %s: max area %s at %s (%s), slices.csv says %s at %s (%s)\n",
        $3, $13, $14, $15, a[$3], k[$3], lv[$3]; bad++ } }
  END { exit (n != 4 || bad > 0) }' out/slices.csv out/volumes.csv || fail "max_area columns of volumes.csv"
grep -q '^L3,vertebra' out/levels.csv || fail "levels.csv has no L3 vertebra rows"
# a deliberately wrong override (L4/L5 where L3/L4 is): trusted, and warned
l34=$(awk -F, 'NR > 1 && $17 == "L3/L4" { print $2; exit }' out/slices.csv)
[ -n "$l34" ] || fail "no slice named L3/L4"
"$PSP" analyze --water ph/p_water.nii.gz --fat ph/p_fat.nii.gz --labels ph/p_dseg.nii.gz -o out2 --no-qc \
  --disc "L4/L5=${l34:-0}" 2> err.txt || fail "analyze with --disc failed"
cat err.txt
awk -F, -v s="${l34:-0}" 'NR > 1 && $2 == s && $17 != "L4/L5" { bad = 1 } END { exit bad }' out2/slices.csv \
  || fail "override L4/L5=$l34 not applied"
grep -qi "override" err.txt || fail "contradicting override not reported"
# the same override with a --landmarks file that says otherwise: --disc wins
l45=$(awk -F, 'NR > 1 && $17 == "L4/L5" { print $2; exit }' out/slices.csv)
printf '\xEF\xBB\xBFL4/L5=%s\r\n' "${l45:-0}" > lm.txt
"$PSP" analyze --water ph/p_water.nii.gz --fat ph/p_fat.nii.gz --labels ph/p_dseg.nii.gz -o out2b --no-qc \
  --landmarks lm.txt --disc "L4/L5=${l34:-0}" 2> err2b.txt || fail "analyze with --disc and --landmarks failed"
cmp -s <(cut -d, -f1-17 out2/slices.csv) <(cut -d, -f1-17 out2b/slices.csv) ||
  fail "--disc did not win over a contradicting --landmarks file"
# bad override: clear usage error, no output
"$PSP" analyze --water ph/p_water.nii.gz --fat ph/p_fat.nii.gz --labels ph/p_dseg.nii.gz -o out3 --disc L9=x 2> err3.txt
rc=$?
[ $rc -eq 2 ] || fail "bad --disc: exit $rc, expected 2"
grep -q "L9=x" err3.txt || fail "bad --disc not named in the message"
[ ! -e out3 ] || [ -z "$(ls -A out3)" ] || fail "bad --disc left output"
finish
