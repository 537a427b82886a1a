#!/usr/bin/env bash
# Real two-point IP/OP scan (../shared/data/ipop-chaos11): the fat-dominant
# ambiguity must be resolved so subcutaneous fat comes out with FF > 0.8.
source "$(dirname "$0")/../integration/lib.sh"
D="$SRC/../shared/data/ipop-chaos11"
if [ ! -f "$D/inphase.nii.gz" ]; then echo "SKIP: $D not present (real development data lives outside the project)"; exit 77; fi
cd "$S"
run "$PSP" ffmap --inphase "$D/inphase.nii.gz" --outphase "$D/outphase.nii.gz" -o ff.nii.gz > out.txt
cat out.txt
med=$(sed -n 's/.*subcutaneous fat FF median \([0-9.]*\) %.*/\1/p' out.txt)
[ -n "$med" ] || fail "no subcutaneous fat FF reported"
awk -v m="${med:-0}" 'BEGIN { exit !(m > 80) }' || fail "subcutaneous fat FF median $med % is not > 80 %"
finish
