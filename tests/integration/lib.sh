# Shared helpers for the integration tests (sourced).
#   $1 PARASPINAL  $2 SOURCE_DIR  $3 SCRATCH
set -u
PSP=$1 SRC=$2 S=$3
rm -rf "$S" && mkdir -p "$S" || exit 1
FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
run() { echo "+ $*"; "$@" || { echo "FAIL: command exited $?: $*"; exit 1; }; }
finish() { if [ "$FAILS" -eq 0 ]; then echo "all checks passed"; exit 0; else echo "$FAILS checks failed"; exit 1; fi; }

# compare_truth TRUTH_CSV SLICES_CSV FF_TOL_PP AREA_TOL_PCT [ratio|mean]
# Joins truth and measurement on (slice,label). Checks every slice area, and
# per muscle the voxel-weighted FF over all slices (both the mean of voxel FF
# and, weighted the same way, the ratio FF).
compare_truth() {
  awk -F, -v fftol="$3" -v atol="$4" '
    FNR == 1 { for (i = 1; i <= NF; i++) col[FILENAME, $i] = i; next }
    FILENAME == ARGV[1] {
      key = $col[FILENAME, "slice"] "," $col[FILENAME, "label"]
      ta[key] = $col[FILENAME, "area_mm2"]; tm[key] = $col[FILENAME, "ff_mean_pct"]
      tr[key] = $col[FILENAME, "ff_ratio_pct"]; tn[key] = $col[FILENAME, "n_voxels"]; next
    }
    {
      key = $col[FILENAME, "slice"] "," $col[FILENAME, "label"]; l = $col[FILENAME, "label"]
      seen[key] = 1
      if (!(key in ta)) { printf "FAIL: measured row %s not in truth\n", key; bad++; next }
      a = $col[FILENAME, "area_mm2"]
      if (ta[key] > 0 && (a - ta[key]) / ta[key] * 100 > atol || (ta[key] - a) / ta[key] * 100 > atol) {
        printf "FAIL: slice,label %s area %s vs truth %s\n", key, a, ta[key]; bad++ }
      n = tn[key]; N[l] += n
      M[l] += n * $col[FILENAME, "ff_mean_pct"]; TM[l] += n * tm[key]
      R[l] += n * $col[FILENAME, "ff_ratio_pct"]; TR[l] += n * tr[key]
    }
    END {
      for (k in ta) if (!(k in seen)) { printf "FAIL: truth row %s not measured\n", k; bad++ }
      for (l = 1; l <= 4; l++) {
        if (N[l] == 0) { printf "FAIL: label %d not measured\n", l; bad++; continue }
        dm = M[l] / N[l] - TM[l] / N[l]; dr = R[l] / N[l] - TR[l] / N[l]
        printf "label %d: FF mean %.3f%% (truth %.3f%%, diff %+.3f pp), ratio %.3f%% (truth %.3f%%, diff %+.3f pp)\n",
          l, M[l] / N[l], TM[l] / N[l], dm, R[l] / N[l], TR[l] / N[l], dr
        if (dm > fftol || -dm > fftol) { printf "FAIL: label %d FF mean off by %.3f pp (tolerance %s)\n", l, dm, fftol; bad++ }
        if (dr > fftol || -dr > fftol) { printf "FAIL: label %d FF ratio off by %.3f pp (tolerance %s)\n", l, dr, fftol; bad++ }
      }
      exit bad > 0
    }' "$1" "$2" || fail "measurement vs truth ($2)"
}

# need_tum01: D = the real development scan dixon-tum01 beside the project,
# or the test is skipped (exit 77) when ../shared is absent.
need_tum01() {
  D="$SRC/../shared/data/dixon-tum01"
  if [ ! -f "$D/water.nii.gz" ]; then
    echo "SKIP: $D not present (real development data lives outside the project)"
    exit 77
  fi
}

# edit_tum01 MODE EDIT ARGS...: dixon-tum01 ($D) edited by nifti_edit.py
# MODE into the directory EDIT, then analysed into EDIT.out (no QC).
edit_tum01() {
  local mode=$1 dir=$2
  shift 2
  mkdir -p "$dir"
  python3 "$SRC/tests/realdata/nifti_edit.py" "$mode" "$D" "$dir" "$@" ||
    fail "could not edit dixon-tum01 ($mode $*)"
  run "$PSP" analyze --water "$dir/water.nii.gz" --fat "$dir/fat.nii.gz" -o "$dir.out" --no-qc
}

# disc_named OUT NAME SLICE: OUT/report.json names the disc nearest file
# slice SLICE (within one slice) NAME.
disc_named() {
  python3 - "$1/report.json" "$2" "$3" <<'PY'
import json, sys
lv = json.load(open(sys.argv[1]))["levels"]
got = [(d["name"], d["file_slice"]) for d in lv["discs"]]
print("discs", got, "anchor:", lv["anchor"])
near = [n for n, s in got if abs(s - float(sys.argv[3])) <= 1.0]
sys.exit(0 if near == [sys.argv[2]] else 1)
PY
}

# compare_manual OUT EDIT CMP_TXT: OUT/dseg.nii.gz against the manual labels
# of an edited dixon-tum01 in EDIT (labels_manual.nii.gz, scheme lpm; FF
# from EDIT's water and fat) into CMP_TXT; prints the whole-volume table.
compare_manual() {
  run "$PSP" compare "$1/dseg.nii.gz" "$2/labels_manual.nii.gz" --truth-scheme lpm \
    --water "$2/water.nii.gz" --fat "$2/fat.nii.gz" > "$3"
  sed -n '/Whole volume/,/mean 1-4/p' "$3"
}

# boundary_seen OUT MIN MAX [SPLIT]: report.json's share of the multifidus/
# erector spinae boundary on a visible fat plane (segmentation.
# mf_es_boundary_on_visible_plane) lies within MIN..MAX on both sides, and
# every measured slice records the boundary (with SPLIT: split that way on
# both sides of every one); slices.csv's mf_es_split / mf_es_on_plane_pct
# say the same on every row.
boundary_seen() {
  python3 - "$1/report.json" "$2" "$3" "${4:-}" "$1/slices.csv" <<'PY'
import csv, json, sys
sg = json.load(open(sys.argv[1]))["segmentation"]
rows = list(csv.DictReader(open(sys.argv[5])))
bykey = {s["slice"]: s.get("mf_es_boundary") for s in sg["slices"]}
bad_rows = 0
for r in rows:
    b = bykey.get(int(r["slice"]))
    want = b[r["side"]] if b else None
    if not want or r["mf_es_split"] != want["split"] or (want["on_visible_plane"] is None) != (r["mf_es_on_plane_pct"] == "") or \
            (r["mf_es_on_plane_pct"] != "" and abs(float(r["mf_es_on_plane_pct"]) - 100 * want["on_visible_plane"]) > 0.6):
        bad_rows += 1
print("slices.csv rows disagreeing with report.json's mf_es_boundary:", bad_rows, "of", len(rows))
lo, hi, split = float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
v = sg["mf_es_boundary_on_visible_plane"]
print("MF/ES boundary on a visible plane:", v)
ok = all(x is not None and lo <= x <= hi for x in (v["left"], v["right"]))
for s in sg["slices"]:
    if s["status"] != "ok":
        continue
    b = s.get("mf_es_boundary")
    if not b or any(b[k]["split"] not in ("fat_plane", "ff_step", "template_path") for k in ("left", "right")):
        print("slice", s["slice"], "has no mf_es_boundary record"); ok = False
    elif split and any(b[k]["split"] != split for k in ("left", "right")):
        print("slice", s["slice"], "split", b); ok = False
sys.exit(0 if ok and rows and bad_rows == 0 else 1)
PY
}

# segmented_slices OUT N: report.json says N slices were segmented.
segmented_slices() { tr -d ' \t\n' < "$1/report.json" | grep -q "\"slices_segmented\":$2[,}]"; }

# has_iliac_anchor OUT: report.json names its levels from the iliac crest top.
has_iliac_anchor() { tr -d ' \t\n' < "$1/report.json" | grep -q '"anchor":"iliaccresttop'; }

# compare_phantom N OUT ARGS...: analyzes sample_scans/phantomN with the input
# options ARGS into OUT, compares the labels with the phantom's truth (FF from
# its water and fat) into OUT.txt and prints the whole-volume table.
compare_phantom() {
  local n=$1 out=$2 P="$SRC/sample_scans"
  shift 2
  run "$PSP" analyze "$@" -o "$out" --no-qc
  run "$PSP" compare "$out/dseg.nii.gz" "$P/phantom${n}_dseg.nii.gz" \
    --water "$P/phantom${n}_water.nii.gz" --fat "$P/phantom${n}_fat.nii.gz" > "$out.txt"
  sed -n '/Whole volume/,/mean 1-4/p' "$out.txt"
}

# dice_minima CMP_TXT "MF_L=0.85 MF_R=0.83 ... all=0.91": every named row of
# the whole-volume table of `paraspinal compare` reaches its minimum Dice
# (prints the failures; status 1 when one fails or a row is missing).
dice_minima() {
  awk -v mins="$2" '
    BEGIN { n = split(mins, m, " "); for (i = 1; i <= n; i++) { split(m[i], kv, "="); want[kv[1]] = kv[2] } }
    /Whole volume/ { on = 1 } /mean 1-4/ { on = 0 }
    on && ($1 in want) { seen++; if ($4 + 0 < want[$1]) { printf "FAIL: %s Dice %s < %s\n", $1, $4, want[$1]; bad++ } }
    END { exit bad > 0 || seen != n }' "$1"
}
