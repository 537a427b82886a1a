#!/usr/bin/env bash
# Byte-identical outputs at 1 and 2 threads (and 4 for the automatic
# segmentation) and across two runs at the same thread count, for given
# labels, the automatic segmentation and the in-phase/opposed-phase path:
# every file of the output tree (same set of files, same bytes), except that
# report.json may differ in provenance.created and the command line only.
# Also ffmap and the phantom.
source "$(dirname "$0")/lib.sh"
cd "$S"
run "$PSP" phantom -o ph --prefix p --seed 3 --snr 20
P=ph/p
declare -A inputs
inputs[labels]="--water ${P}_water.nii.gz --fat ${P}_fat.nii.gz --labels ${P}_dseg.nii.gz"
inputs[auto]="--water ${P}_water.nii.gz --fat ${P}_fat.nii.gz"
inputs[ipop]="--inphase ${P}_inphase.nii.gz --outphase ${P}_outphase.nii.gz"

# same_tree A B WHAT: every file of A and B identical (report.json filtered)
same_tree() {
  local a=$1 b=$2 what=$3
  (cd "$a" && find . -type f | sort) >"$a.files"
  (cd "$b" && find . -type f | sort) >"$b.files"
  cmp -s "$a.files" "$b.files" || { fail "$what: different sets of files"; diff "$a.files" "$b.files" | head; }
  local n=0
  while read -r f; do
    [ -f "$b/$f" ] || continue
    n=$((n + 1))
    if [ "$f" = ./report.json ]; then
      grep -v -e '"created"' -e '"command"' "$a/$f" >"$a.json"
      grep -v -e '"created"' -e '"command"' "$b/$f" >"$b.json"
      cmp -s "$a.json" "$b.json" || { fail "$what: report.json differs beyond provenance"; diff "$a.json" "$b.json" | head; }
    else
      cmp -s "$a/$f" "$b/$f" || fail "$what: $f differs"
    fi
  done <"$a.files"
  echo "$what: $n files compared"
  [ "$n" -ge 8 ] || fail "$what: only $n output files"
}

for mode in labels auto ipop; do
  threads="1 2 2b"
  [ $mode = auto ] && threads="1 2 2b 4" # the most parallel path: also more threads than cores
  for t in $threads; do
    # shellcheck disable=SC2086
    run "$PSP" analyze ${inputs[$mode]} -o "$mode-$t" -t "${t%b}" >/dev/null
  done
  same_tree "$mode-1" "$mode-2" "$mode: 1 vs 2 threads"
  same_tree "$mode-2" "$mode-2b" "$mode: two runs at 2 threads"
  [ -d "$mode-4" ] && same_tree "$mode-1" "$mode-4" "$mode: 1 vs 4 threads"
  n=$(ls "$mode-1"/qc/*.png 2>/dev/null | wc -l)
  [ "$n" -gt 0 ] || fail "$mode: no QC images written"
done

run "$PSP" ffmap --water "${P}_water.nii.gz" --fat "${P}_fat.nii.gz" -o ff1.nii.gz -t 1 >/dev/null
run "$PSP" ffmap --water "${P}_water.nii.gz" --fat "${P}_fat.nii.gz" -o ff2.nii.gz -t 2 >/dev/null
cmp -s ff1.nii.gz ff2.nii.gz || fail "ffmap output differs between 1 and 2 threads"

# the phantom itself is reproducible, at any thread count
run "$PSP" phantom -o ph_again --prefix p --seed 3 --snr 20 -t 1
for f in p_water.nii.gz p_fat.nii.gz p_dseg.nii.gz p_truth.csv; do
  cmp -s "ph/$f" "ph_again/$f" || fail "phantom $f not reproducible"
done
finish
