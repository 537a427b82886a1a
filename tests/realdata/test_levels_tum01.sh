#!/usr/bin/env bash
# Vertebral levels on the real development scans (../shared/data): the disc
# slices found on dixon-tum01 (Dixon water+fat, 4 mm slices) and what is
# found on ipop-chaos11 (in-phase/opposed-phase abdomen, 9 mm slices).
# Drives the library through the unit-test binary (test_levels --realdata)
# so it does not need the CLI integration; the checks themselves are in
# tests/unit/test_levels.c (test_real_tum01, test_real_chaos11) and print
# the discs, confidences and flags. Then the CLI on dixon-tum01: the iliac
# crest anchor (crest top at file slice 1.5, just below the lowest disc) must
# name that disc L4/L5 in report.json, flagged, with moderate confidence.
source "$(dirname "$0")/../integration/lib.sh"
DATA="$SRC/../shared/data"
if [ ! -f "$DATA/dixon-tum01/water.nii.gz" ] || [ ! -f "$DATA/ipop-chaos11/inphase.nii.gz" ]; then
  echo "SKIP: $DATA (dixon-tum01, ipop-chaos11) not present (real development data lives outside the project)"
  exit 77
fi
BIN="$(dirname "$PSP")/tests/test_levels"
[ -x "$BIN" ] || { echo "FAIL: $BIN not built"; exit 1; }
cd "$S"
PSP_SHARED_DATA="$DATA" OMP_NUM_THREADS=2 "$BIN" --realdata > out.txt 2>&1
rc=$?
cat out.txt
[ "$rc" -eq 0 ] || fail "test_levels --realdata exited $rc"
grep -q '^dixon-tum01: 4 discs' out.txt || fail "dixon-tum01: expected 4 discs"
grep -q '^ipop-chaos11:' out.txt || fail "ipop-chaos11 did not run"
grep -q "^dixon-tum01: 4 discs.*anchor 'iliac crest top" out.txt || fail "dixon-tum01: no iliac-crest anchor"
"$PSP" analyze --water "$DATA/dixon-tum01/water.nii.gz" --fat "$DATA/dixon-tum01/fat.nii.gz" \
  -o cli --no-qc > cli.txt 2>&1 || { cat cli.txt; fail "analyze dixon-tum01 failed"; }
python3 - cli/report.json <<'PY' || fail "report.json levels of dixon-tum01"
import json, sys
lv = json.load(open(sys.argv[1]))["levels"]
names = [d["name"] for d in lv["discs"]]
pos = [d["file_slice"] for d in lv["discs"]]
keys = [f["key"] for f in lv["flags"]]
print("discs", list(zip(names, pos)), "anchor:", lv["anchor"], "flags:", keys)
assert lv["anchored"] and "iliac crest" in lv["anchor"], lv["anchor"]
assert names == ["L4/L5", "L3/L4", "L2/L3", "L1/L2"], names
assert abs(pos[0] - 2.0) <= 1.0, pos
assert "iliac_crest_anchor" in keys and "no_anchor" not in keys, keys
assert all(s["confidence"] <= 0.45 for s in lv["slices"]), "confidence above the iliac anchor's"
assert any(s["confidence"] > 0.3 for s in lv["slices"]), "no slice above relative confidence"
PY
finish
