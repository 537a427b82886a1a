#!/usr/bin/env bash
# orthanc-postprocess.sh — run paraspinal on one study of an Orthanc PACS and store the results
# (a DICOM Segmentation and QC secondary captures) back into the same study.
#
# For PACS administrators: adapt the defaults below, or set them in the environment. Called by
# hand, from cron, or by the Lua hook scripts/pacs/orthanc-onstablestudy.lua (OnStableStudy).
# Needs: curl, jq, paraspinal. See README "PACS post-processing (Orthanc)".
#
# Usage: orthanc-postprocess.sh [options] STUDY_ID [-- EXTRA_ANALYZE_ARGS...]
#   STUDY_ID            Orthanc's study identifier (e.g. 27f7126f-4f66fb14-03f4081b-f9341db2-53925988),
#                       as in /studies or the OnStableStudy callback
#   --url URL           Orthanc REST API   (default: $ORTHANC_URL or http://127.0.0.1:8042)
#   --auth USER:PASS    HTTP basic auth    (default: $ORTHANC_AUTH; none)
#   --paraspinal PATH   the program        (default: $PARASPINAL or paraspinal on PATH)
#   --workdir DIR       work folder; must not exist or be empty (default: a new temporary folder)
#   --keep              keep the work folder (downloaded images, outputs, analyze.log)
#   --force             analyse even when the study's paraspinal SEG is newer than its MR images
#   --lock FILE         wait for an exclusive lock on FILE first (flock), so that calls for
#                       several studies run one at a time (the Lua hook uses this)
#   -t, --threads N     threads for paraspinal (default: all cores)
#   -h, --help          this help
#   EXTRA_ANALYZE_ARGS  passed to `paraspinal analyze` (e.g. --series UID, --disc L4/L5=12)
#
# What it does: checks Orthanc is reachable and the study exists; skips the study (exit 0) when
# it holds a SEG series made by paraspinal that is newer than every MR series of the study
# (Orthanc's LastUpdate; unless --force): MR images that arrived after the results, e.g. the
# rest of a study sent in pieces, make it analyse the study again; downloads every instance of
# the study's MR series (REST /instances/{id}/file; SEG and other derived series are left out);
# runs `paraspinal analyze --dicom IN --dicom-out -o OUT`; uploads OUT/dicom/*.dcm
# (REST POST /instances) and checks that Orthanc filed each one under the same study; then
# deletes the study's older paraspinal series (SEG and secondary captures made by an earlier
# run on other images), so the study holds one set of results. Re-running on an unchanged
# study uploads identical UIDs, which Orthanc reports as "AlreadyStored": no duplicate series.
#
# Log: one line per step on stderr, "orthanc-postprocess: <UTC time> <study id>: <message>";
# never patient names or IDs. paraspinal's own output goes to WORKDIR/analyze.log and, on
# failure, to stderr.
#
# Exit codes: 0 results stored (or already present: skipped); 1-9 paraspinal analyze failed
# with that code (README "Exit codes"; its message is in the log); 64 usage; 65 study not
# found or without MR images; 69 Orthanc unreachable or a REST call failed; 73 storing the
# results failed or they landed outside the study.
set -u -o pipefail
# Close descriptors inherited from the caller (Orthanc's sockets when started by the Lua hook),
# so a running analysis never keeps Orthanc's ports open.
for fd in /proc/$$/fd/*; do
  fd=${fd##*/}
  case $fd in 0 | 1 | 2 | 255) ;; *) eval "exec $fd>&-" 2> /dev/null ;; esac # 255: bash reads this script
done

URL=${ORTHANC_URL:-http://127.0.0.1:8042}
AUTH=${ORTHANC_AUTH:-}
PSP=${PARASPINAL:-paraspinal}
WORK="" KEEP=0 FORCE=0 THREADS="" STUDY="" LOCK=""
EXTRA=()

usage() { sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
log() { printf 'orthanc-postprocess: %s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${STUDY:--}" "$*" >&2; }
die() { local code=$1; shift; log "error: $*"; exit "$code"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --url) URL=${2:?--url needs a value}; shift 2 ;;
    --auth) AUTH=${2:?--auth needs USER:PASS}; shift 2 ;;
    --paraspinal) PSP=${2:?--paraspinal needs a path}; shift 2 ;;
    --workdir) WORK=${2:?--workdir needs a folder}; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --force) FORCE=1; shift ;;
    --lock) LOCK=${2:?--lock needs a file}; shift 2 ;;
    -t|--threads) THREADS=${2:?--threads needs a number}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    -*) log "error: unknown option '$1' (see --help)"; exit 64 ;;
    *) [ -z "$STUDY" ] || { log "error: more than one study id"; exit 64; }; STUDY=$1; shift ;;
  esac
done
[ -n "$STUDY" ] || { usage >&2; exit 64; }
[[ "$STUDY" =~ ^[0-9a-f-]+$ ]] || die 64 "'$STUDY' is not an Orthanc study identifier"
[[ -z "$THREADS" || "$THREADS" =~ ^[0-9]+$ ]] || die 64 "--threads needs a number"
for tool in curl jq; do
  command -v "$tool" > /dev/null || die 64 "$tool is not installed (Debian: apt-get install $tool)"
done
command -v "$PSP" > /dev/null || die 64 "paraspinal not found ('$PSP'); use --paraspinal PATH"
URL=${URL%/}
if [ -n "$LOCK" ]; then
  command -v flock > /dev/null || die 64 "--lock needs flock (Debian: util-linux)"
  exec 9>> "$LOCK" || die 73 "cannot open the lock file $LOCK"
  flock 9 || die 73 "cannot lock $LOCK"
fi

# --speed-limit/--speed-time: a transfer stalled below 1 KB/s for 60 s fails (it would hold the
# lock, and every later study would wait)
CURL=(curl -sS --connect-timeout 10 --speed-limit 1024 --speed-time 60)
[ -n "$AUTH" ] && CURL+=(--user "$AUTH")
CURL_STATUS=("${CURL[@]}" -o /dev/null -w '%{http_code}')
CURL+=(--fail)
api() { "${CURL[@]}" "$URL$1"; }

# --- the study --------------------------------------------------------------------------------
api /system > /dev/null || die 69 "Orthanc at $URL is not reachable"
code=$("${CURL_STATUS[@]}" "$URL/studies/$STUDY") || die 69 "REST call failed"
[ "$code" = 200 ] || die 65 "no such study in Orthanc (HTTP $code)"
series=$(api "/studies/$STUDY/series") || die 69 "cannot list the series of the study"
# ours: the SEG and the secondary captures paraspinal stored (Manufacturer paraspinal)
mapfile -t ours_before < <(jq -r '.[] | select((.MainDicomTags.Manufacturer // "") == "paraspinal")
                                      | .ID' <<< "$series")
# LastUpdate (YYYYMMDDThhmmss) of the newest MR series and of the newest paraspinal SEG
mr_last=$(jq -r '[.[] | select(.MainDicomTags.Modality == "MR") | .LastUpdate // ""] | max // ""' <<< "$series")
seg_last=$(jq -r '[.[] | select(.MainDicomTags.Modality == "SEG" and
                               (.MainDicomTags.Manufacturer // "") == "paraspinal")
                       | .LastUpdate // ""] | max // ""' <<< "$series")
if [ -n "$seg_last" ] && [ "$FORCE" = 0 ]; then
  if [[ ! "$mr_last" > "$seg_last" ]]; then
    log "already holds a paraspinal segmentation newer than its MR images; skipped (use --force to analyse again)"
    exit 0
  fi
  log "MR images arrived after the paraspinal segmentation ($mr_last > $seg_last): analysing again"
fi
mapfile -t instances < <(jq -r '.[] | select(.MainDicomTags.Modality == "MR") | .Instances[]' <<< "$series")
n_mr=$(jq '[.[] | select(.MainDicomTags.Modality == "MR")] | length' <<< "$series")
[ "${#instances[@]}" -gt 0 ] || die 65 "the study has no MR images"

# --- work folder ------------------------------------------------------------------------------
if [ -z "$WORK" ]; then
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/paraspinal-orthanc.XXXXXX") || die 73 "cannot create a work folder"
else
  mkdir -p "$WORK" || die 73 "cannot create $WORK"
  [ -z "$(ls -A "$WORK")" ] || die 64 "work folder $WORK is not empty"
fi
cleanup() { [ "$KEEP" = 1 ] || rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p "$WORK/in"

# --- download: one curl process for all instances (keep-alive) -------------------------------
log "downloading ${#instances[@]} instances of $n_mr MR series"
{
  for id in "${instances[@]}"; do
    printf 'url = "%s/instances/%s/file"\noutput = "%s/in/%s.dcm"\n' "$URL" "$id" "$WORK" "$id"
  done
} > "$WORK/download.cfg"
"${CURL[@]}" --config "$WORK/download.cfg" || die 69 "downloading the study failed"

# --- analysis ---------------------------------------------------------------------------------
args=(analyze --dicom "$WORK/in" --dicom-out -o "$WORK/out")
[ -n "$THREADS" ] && args+=(--threads "$THREADS")
log "running paraspinal analyze"
"$PSP" "${args[@]}" "${EXTRA[@]}" > "$WORK/analyze.log" 2>&1
rc=$?
if [ $rc -ne 0 ]; then
  sed 's/^/  /' "$WORK/analyze.log" >&2
  die "$rc" "paraspinal analyze failed with exit code $rc"
fi
shopt -s nullglob
results=("$WORK/out/dicom/"*.dcm)
[ ${#results[@]} -gt 0 ] || die 73 "paraspinal wrote no DICOM results"

# --- upload -----------------------------------------------------------------------------------
stored=0 already=0
declare -A new_series=()
for f in "${results[@]}"; do
  # no "Expect: 100-continue" (curl waits 1 s for it on large bodies; Orthanc does not send it)
  reply=$("${CURL[@]}" -X POST -H 'Content-Type: application/dicom' -H 'Expect:' \
          --data-binary "@$f" "$URL/instances") || die 73 "storing $(basename "$f") failed"
  status=$(jq -r '.Status // empty' <<< "$reply")
  parent=$(jq -r '.ParentStudy // empty' <<< "$reply")
  [ "$parent" = "$STUDY" ] || die 73 "$(basename "$f") was filed under study '$parent', not this one"
  ps=$(jq -r '.ParentSeries // empty' <<< "$reply")
  [ -n "$ps" ] && new_series[$ps]=1
  case "$status" in
    Success) stored=$((stored + 1)) ;;
    AlreadyStored) already=$((already + 1)) ;;
    *) die 73 "storing $(basename "$f"): Orthanc answered '$status'" ;;
  esac
done
log "stored ${#results[@]} results (SEG + secondary captures): $stored new, $already already present"
# an earlier run's results on other images: replaced, so the study holds one set
removed=0
for s in "${ours_before[@]}"; do
  [ -n "${new_series[$s]:-}" ] && continue
  "${CURL[@]}" -X DELETE "$URL/series/$s" > /dev/null || die 73 "deleting the earlier results (series $s) failed"
  removed=$((removed + 1))
done
[ $removed -eq 0 ] || log "deleted $removed series of an earlier run's results"
exit 0
