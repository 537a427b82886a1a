#!/usr/bin/env bash
# make demo: analyse every phantom in sample_scans/ with its truth labels and
# compare the result with the truth. Usage: scripts/demo.sh PATH/TO/paraspinal
set -euo pipefail
PSP=${1:-build/paraspinal}
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-out/demo}
mkdir -p "$OUT"
shopt -s nullglob
found=0
for water in sample_scans/*_water.nii.gz; do
  base=${water%_water.nii.gz}
  name=$(basename "$base")
  found=1
  echo "== $name"
  echo "-- with the phantom's truth labels"
  "$PSP" analyze --water "$water" --fat "${base}_fat.nii.gz" --labels "${base}_dseg.nii.gz" -o "$OUT/$name"
  echo "-- automatic segmentation, compared with the truth labels"
  "$PSP" analyze --water "$water" --fat "${base}_fat.nii.gz" -o "$OUT/${name}_auto" >/dev/null
  "$PSP" compare "$OUT/${name}_auto/dseg.nii.gz" "${base}_dseg.nii.gz" --water "$water" --fat "${base}_fat.nii.gz" \
    --csv "$OUT/${name}_auto/compare.csv" | sed -n '/^Whole volume/,$p'
done
if [ $found -eq 0 ]; then
  echo "demo: no *_water.nii.gz in sample_scans/ (regenerate with scripts/make-sample-scans.sh)" >&2
  exit 1
fi
echo
echo "Results are in $OUT/<scan>/ (truth labels) and $OUT/<scan>_auto/ (automatic segmentation):"
echo "report.html (QC review page: open it in a browser), slices.csv (per slice, muscle, side),"
echo "levels.csv (per vertebral level), volumes.csv, report.json, dseg.nii.gz + dseg.tsv,"
echo "fatfraction.nii.gz, qc/ (one PNG per slice); compare.csv beside the automatic results."
echo "Truth for each phantom: sample_scans/<scan>_truth.csv"
