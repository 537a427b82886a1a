#!/usr/bin/env bash
# Regenerates sample_scans/ with the project's own phantom generator.
#   scripts/make-sample-scans.sh [PATH/TO/paraspinal]   (default: build/paraspinal)
# The phantoms are seeded: the same binary gives byte-identical files, at any
# thread count. See sample_scans/README.md for what each phantom is.
set -euo pipefail
cd "$(dirname "$0")/.."
PSP=${1:-build/paraspinal}
if [ ! -x "$PSP" ]; then
  echo "make-sample-scans: $PSP not found; build first (make build) or pass the binary" >&2
  exit 2
fi
OUT=sample_scans
mkdir -p "$OUT"

# shellcheck disable=SC2054
phantoms=(
  # name      options
  "phantom01 --seed 1 --dims 128,96,20 --spacing 3,3,5 --snr 30 --orientation LPS
             --ff-multifidus 8%,10% --ff-erector 12%,15% --streaks 60%,10% --bias 0.2"
  "phantom02 --seed 2 --dims 128,96,20 --spacing 3,3,5 --snr 20 --orientation RAS
             --ff-multifidus 35%,45% --ff-erector 25%,30% --streaks 80%,20% --bias 0.25"
  "phantom03 --seed 3 --dims 100,76,30 --spacing 3.5,3.5,6 --snr 15 --orientation PLI --oblique 10
             --ff-multifidus 15%,15% --ff-erector 20%,20% --streaks 70%,15% --bias 0.3"
)

for spec in "${phantoms[@]}"; do
  # shellcheck disable=SC2206
  words=($spec)
  name=${words[0]}
  rm -f "$OUT/${name}"_*
  echo "== $name: ${words[*]:1}"
  "$PSP" phantom -o "$OUT" --prefix "$name" "${words[@]:1}"
done
du -ch "$OUT"/*.nii.gz "$OUT"/*.csv "$OUT"/*.tsv | tail -1
