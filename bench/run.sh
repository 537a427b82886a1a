#!/usr/bin/env bash
# Runs the benchmark on ../shared/data/dixon-tum01 (the development scan):
# per-stage times of `analyze` (all default outputs) at 1 and 2 threads,
# compared in the same run with the I/O floor (read + inflate the inputs);
# then the batch throughput over a cohort of phantoms of the same size.
#   bench/run.sh [build/paraspinal]   (uses psp_bench beside it; REPS=5,
#   BATCH_N=8 phantoms, BATCH_N=0 skips the batch part, BATCH_ROUNDS=3)
set -euo pipefail
cd "$(dirname "$0")/.."
PSP=${1:-build/paraspinal}
BIN=$(dirname "$PSP")/psp_bench
D=${PSP_DATA:-../shared/data}/dixon-tum01
if [ ! -f "$D/water.nii.gz" ]; then
  echo "bench: $D not found; nothing to measure" >&2
  exit 1
fi
# the host's counters (/proc/stat: user nice system idle iowait irq softirq
# steal): on a shared virtual machine the hypervisor may take the cores
# away (steal), which no wall time can show
cpu_counters() { awk '/^cpu /{print $2+$3+$4+$5+$6+$7+$8+$9, $9}' /proc/stat 2>/dev/null || echo "0 0"; }
steal_since() { # tot0 st0 -> "N %"
  read -r t1 s1 <<<"$(cpu_counters)"
  awk -v dt="$((t1 - $1))" -v ds="$((s1 - $2))" 'BEGIN {
    if (dt > 0) printf "%.0f %%", 100 * ds / dt; else printf "unknown" }'
}
read -r tot0 st0 <<<"$(cpu_counters)"
"$BIN" "$D/water.nii.gz" "$D/fat.nii.gz" "${REPS:-5}"
echo "steal by the hypervisor during these rounds: $(steal_since "$tot0" "$st0")"

N=${BATCH_N:-8}
[ "$N" -gt 0 ] || exit 0
T=$(mktemp -d "${TMPDIR:-/tmp}/psp-bench.XXXXXX")
trap 'rm -rf "$T"' EXIT
# a cohort of N noisy phantoms on the grid of dixon-tum01 (400 x 400 x 29,
# 1.0185 x 1.0185 x 4 mm; uint16 water and fat, Rayleigh background, so the
# noise-bias correction runs, unlike on tum01's masked background)
for i in $(seq 1 "$N"); do
  s=$(printf 'sub-%02d' "$i")
  "$PSP" phantom -o "$T/in/$s/anat" --prefix "${s}" --seed "$i" --dims 400,400,29 \
    --spacing 1.0185,1.0185,4 >/dev/null
done
cores=$(nproc 2>/dev/null || echo 2)
jobs=$((cores < N ? cores : N))
# BATCH_ROUNDS runs of the whole batch (default 3): one line each, then the
# median round (by wall time), since a shared host's speed drifts
R=${BATCH_ROUNDS:-3}
TIMEFORMAT='%R %U %S'
: >"$T/rounds"
for r in $(seq 1 "$R"); do
  rm -rf "$T/out"
  read -r tot0 st0 <<<"$(cpu_counters)"
  if ! { time "$PSP" batch --discover "$T/in" -o "$T/out" --jobs "$jobs" -q 2>"$T/batch.err"; } 2>"$T/time"; then
    cat "$T/batch.err" >&2
    exit 1
  fi
  steal=$(steal_since "$tot0" "$st0")
  read -r wall usr sys <"$T/time"
  echo "$wall $usr $sys ${steal% %}" >>"$T/rounds"
  awk -v r="$r" -v n="$N" -v w="$wall" -v u="$usr" -v s="$sys" -v st="$steal" 'BEGIN {
    printf "batch round %d: %.2f s, %.2f scans/s, CPU %.3f s per scan, steal %s\n", r, w, n / w, (u + s) / n, st }'
done
sort -n "$T/rounds" | awk -v n="$N" -v j="$jobs" -v c="$cores" -v R="$R" '
  { w[NR] = $1; u[NR] = $2; s[NR] = $3; st[NR] = $4 }
  END {
    m = int((NR + 1) / 2); cpu = (u[m] + s[m]) / n
    printf "batch: %d phantoms of 400 x 400 x 29, --jobs %d, median of %d rounds: %.2f s, %.2f scans/s (target >= 2)\n",
      n, j, R, w[m], n / w[m]
    printf "batch: CPU %.3f s per scan (user + sys), so %.2f scans/s on %d cores fully ours; steal by the hypervisor in that round: %s %%\n",
      cpu, c / cpu, c, st[m]
  }'
