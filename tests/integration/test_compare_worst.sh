#!/usr/bin/env bash
# compare's "Worst slices" summary (always printed for a stack): per label the
# slices where either map has it, how many fall below a 2-D Dice of 0.70 and
# 0.80, and the three lowest as file_slice:dice, consistent with the
# per-slice CSV rows; the CSV holds those rows only with --per-slice. A
# slice the segmentation left empty counts as 0 (the issue's "no lumbar
# slice below 0.70").
source "$(dirname "$0")/lib.sh"
cd "$S"
P="$SRC/sample_scans"
run "$PSP" analyze --water "$P/phantom02_water.nii.gz" --fat "$P/phantom02_fat.nii.gz" -o a --no-qc
# one slice of the prediction emptied: its muscles must be listed with Dice 0
python3 - a/dseg.nii.gz cut.nii.gz <<'PY' || fail "could not empty a slice"
import gzip, struct, sys
b = bytearray(gzip.open(sys.argv[1]).read())
nx, ny, nz = struct.unpack("<3h", b[42:48])
off = int(struct.unpack("<f", b[108:112])[0]); bpv = struct.unpack("<h", b[72:74])[0] // 8
k = 7
b[off + k * nx * ny * bpv: off + (k + 1) * nx * ny * bpv] = bytes(nx * ny * bpv)
gzip.open(sys.argv[2], "wb").write(bytes(b))
PY
run "$PSP" compare cut.nii.gz "$P/phantom02_dseg.nii.gz" > table.txt
run "$PSP" compare cut.nii.gz "$P/phantom02_dseg.nii.gz" --per-slice --csv rows.csv > /dev/null
run "$PSP" compare cut.nii.gz "$P/phantom02_dseg.nii.gz" --csv vol.csv > /dev/null
sed -n '/Worst slices/,$p' table.txt
grep -q "^Worst slices" table.txt || fail "no worst-slices summary in compare's table"
grep -q "^Per slice" table.txt && fail "the per-slice table printed without --per-slice"
# scripts that read the whole-volume rows by their first word still find
# each label once
for l in MF_L MF_R ES_L ES_R all; do
  [ "$(awk -v l=$l '$1 == l' table.txt | wc -l)" -eq 1 ] || fail "$l: not exactly one row named so"
done
awk -F, 'NR > 1 && $3 != "" { bad++ } END { exit bad > 0 || NR != 6 }' vol.csv ||
  fail "the CSV without --per-slice holds slice rows"
python3 - table.txt rows.csv <<'PY' || fail "worst slices disagree with the per-slice rows"
import csv, sys
lines = open(sys.argv[1]).read().split("Worst slices", 1)[1].splitlines()[2:]
rows = [r for r in csv.DictReader(open(sys.argv[2])) if r["slice"] != "" and r["dice"] != ""]
abbrev = {"0": "all:", "1": "MF_L:", "2": "MF_R:", "3": "ES_L:", "4": "ES_R:"}
bad = 0
seen = set()
for ln in lines:
    f = ln.split()
    if len(f) < 5: continue
    lab = [k for k, v in abbrev.items() if v == f[0]]
    if not lab: continue
    seen.add(f[0])
    mine = sorted(((float(r["dice"]), int(r["slice"]), int(r["file_slice"])) for r in rows if r["label"] == lab[0]))
    want = [len(mine), sum(d < 0.70 for d, _, _ in mine), sum(d < 0.80 for d, _, _ in mine)]
    got = [int(x) for x in f[1:4]]
    low = ["%d:%.3f" % (fs, d) for d, _, fs in mine[:3]]
    if got != want or f[4:] != low:
        print("FAIL:", f[0], "table", got, f[4:], "rows", want, low); bad += 1
    # the emptied slice 7 reads 0 for every label the truth has there
    if not any(fs == 7 and d == 0.0 for d, _, fs in mine):
        print("FAIL:", f[0], "the emptied slice 7 is not at Dice 0"); bad += 1
if seen != set(abbrev.values()):
    print("FAIL: rows missing from the summary:", sorted(set(abbrev.values()) - seen)); bad += 1
sys.exit(bad > 0)
PY
# labels on the lowest slice only (a sparse manual labelling), nothing
# predicted: the summary is there, every label at 0 on file slice 0
python3 - "$P/phantom02_dseg.nii.gz" one.nii.gz none.nii.gz <<'PY' || fail "could not make the sparse maps"
import gzip, struct, sys
b = bytearray(gzip.open(sys.argv[1]).read())
nx, ny, nz = struct.unpack("<3h", b[42:48])
off = int(struct.unpack("<f", b[108:112])[0]); bpv = struct.unpack("<h", b[72:74])[0] // 8
plane = nx * ny * bpv
one = bytes(b[:off + plane]) + bytes(len(b) - off - plane)
gzip.open(sys.argv[2], "wb").write(one)
gzip.open(sys.argv[3], "wb").write(bytes(b[:off]) + bytes(len(b) - off))
PY
run "$PSP" compare none.nii.gz one.nii.gz > sparse.txt
sed -n '/Worst slices/,$p' sparse.txt
for l in MF_L MF_R ES_L ES_R all; do
  grep -Eq "^$l: +1 +1 +1 +0:0.000\$" sparse.txt || fail "labels on slice 0 only: no worst-slice row for $l"
done
finish
