#!/bin/bash
# Interrupting paraspinal batch: SIGTERM, SIGINT and SIGKILL at random moments, several times.
# After each kill every subject folder in OUT is either absent or complete (its completion record
# verifies: every listed output present with its SHA-256); SIGTERM/SIGINT exit 143/130 and leave
# no temporary folder (SIGKILL may leave some, which the next run removes); then --resume
# finishes the rest and the cohort tables equal an uninterrupted run.
#   $1 PARASPINAL  $2 SOURCE_DIR  $3 SCRATCH
source "$(dirname "$0")/lib.sh"
# python3 comes with python3-pydicom (scripts/install-deps.sh)
command -v python3 >/dev/null || { echo "SKIP: python3 is needed to check completion records"; exit 77; }
SS=$SRC/sample_scans
TABLES="cohort_slices.csv cohort_levels.csv cohort_volumes.csv failures.csv"
J=2
[ "$(nproc)" -lt 2 ] && J=1

mkdir -p "$S/data"
head -c 2000 "$SS/phantom03_water.nii.gz" >"$S/data/broken.nii.gz"
{
  echo "subject,session,water,fat"
  for i in 1 2 3 4 5 6 7; do
    p=$(((i - 1) % 3 + 1))
    echo "sub-0$i,,$SS/phantom0${p}_water.nii.gz,$SS/phantom0${p}_fat.nii.gz"
    [ $i -eq 4 ] && echo "sub-bad,,broken.nii.gz,$SS/phantom03_fat.nii.gz"
  done
} >"$S/data/m.csv"
M=$S/data/m.csv

# Every non-hidden folder of OUT is a complete subject (record verifies) or holds only complete
# session folders.
check_complete() {
  python3 - "$1" <<'EOF'
import hashlib, json, os, sys
out = sys.argv[1]
bad = []
def verify(d):
    rec = os.path.join(d, ".paraspinal-done.json")
    if not os.path.isfile(rec):
        return False
    r = json.load(open(rec))
    if not r.get("outputs"):
        bad.append(d + ": record lists no outputs")
    for o in r.get("outputs", []):
        p = os.path.join(d, o["file"])
        if not os.path.isfile(p):
            bad.append(p + ": missing")
        elif hashlib.sha256(open(p, "rb").read()).hexdigest() != o["sha256"]:
            bad.append(p + ": hash differs")
    return True
n = 0
for e in sorted(os.listdir(out)):
    d = os.path.join(out, e)
    if e.startswith(".") or not os.path.isdir(d):
        continue
    if verify(d):
        n += 1
        continue
    subs = [s for s in os.listdir(d)]
    if not subs or any(not os.path.isdir(os.path.join(d, s)) or not verify(os.path.join(d, s)) for s in subs):
        bad.append(d + ": half-written subject folder: " + " ".join(sorted(subs)))
    n += len(subs)
for b in bad:
    print("FAIL: " + b)
print("%d complete subject folders" % n)
sys.exit(1 if bad else 0)
EOF
}

"$PSP" batch --manifest "$M" -o "$S/ref" --no-qc -j $J -q 2>/dev/null
[ $? -eq 10 ] || fail "reference run: exit code (one row is broken)"
t0=$(date +%s.%N)
"$PSP" batch --manifest "$M" -o "$S/timing" --no-qc -j $J -q 2>/dev/null
full=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
echo "uninterrupted run: $full s"

O=$S/out
resume=""
i=0
set -m # job control: background jobs do not ignore SIGINT
for sig in TERM KILL INT KILL TERM KILL; do
  i=$((i + 1))
  # a random moment within the run (the first attempts early, the later ones anywhere)
  r=$((RANDOM % 100))
  delay=$(awk -v r=$r -v f="$full" 'BEGIN { printf "%.2f", r / 100 * f * 0.6 + 0.05 }')
  [ $i -eq 1 ] && delay=0.05
  "$PSP" batch --manifest "$M" -o "$O" --no-qc -j $J $resume -q >"$S/k$i.out" 2>"$S/k$i.err" &
  pid=$!
  sleep "$delay"
  kill -$sig $pid 2>/dev/null
  wait $pid
  rc=$?
  echo "attempt $i: SIG$sig after $delay s -> exit $rc"
  if [ $sig != KILL ]; then
    want=143
    [ $sig = INT ] && want=130
    [ $rc -eq $want ] || [ $rc -eq 10 ] || fail "attempt $i: SIG$sig gave exit $rc, expected $want (or 10 when it had finished)"
    ls -a "$O" | grep -qE '^\.(tmp|old)-' && fail "attempt $i: temporary folders left after SIG$sig: $(ls -a "$O")"
    if [ $rc -eq $want ] && [ ! -e "$O/cohort_slices.csv" ] &&
      [ -z "$(find "$O" -mindepth 1 -maxdepth 1 2>/dev/null | head -1)" ]; then
      # on a loaded machine the signal can arrive before the batch has blocked it (while it
      # still reads the manifest): the default action ends it and nothing at all is written
      echo "attempt $i: SIG$sig arrived before the batch started; nothing was written"
    elif [ $rc -eq $want ]; then
      # the tables of an interrupted run list what is complete, and the rest as not run
      for t in cohort_slices.csv cohort_levels.csv cohort_volumes.csv; do
        [ -f "$O/$t" ] || { fail "attempt $i: no $t after SIGTERM"; continue; }
        tail -n +2 "$O/$t" | sort >"$S/got" && tail -n +2 "$S/ref/$t" | sort >"$S/want"
        [ -z "$(comm -23 "$S/got" "$S/want")" ] || fail "attempt $i: $t has rows the reference does not"
      done
      grep -q "not_run,,interrupted" "$O/failures.csv" || grep -q "^sub-bad" "$O/failures.csv" ||
        fail "attempt $i: failures.csv lists neither failed nor not-run subjects"
    fi
  else
    [ $rc -eq 137 ] || [ $rc -eq 10 ] || fail "attempt $i: SIGKILL gave exit $rc"
    sleep 0.5 # the workers die with the parent (PR_SET_PDEATHSIG)
    echo "  left behind: $(ls -a "$O" 2>/dev/null | grep -cE '^\.(tmp|old)-') temporary folder(s)"
  fi
  [ -d "$O" ] && { check_complete "$O" || fail "attempt $i: incomplete subject folder after SIG$sig"; }
  resume=--resume
done
set +m

"$PSP" batch --manifest "$M" -o "$O" --no-qc -j $J --resume >"$S/final.out" 2>&1
rc=$?
cat "$S/final.out"
[ $rc -eq 10 ] || fail "final --resume exited $rc, expected 10 (the broken row)"
check_complete "$O" || fail "final: incomplete subject folder"
for t in $TABLES; do cmp "$O/$t" "$S/ref/$t" || fail "after kills + --resume, $t differs from the uninterrupted run"; done
ls -a "$O" | grep -qE '^\.(tmp|old)-' && fail "temporary folders left after the final run"
for d in "$O"/sub-0*; do cmp -s "$d/slices.csv" "$S/ref/$(basename "$d")/slices.csv" || fail "$d/slices.csv differs"; done
finish
