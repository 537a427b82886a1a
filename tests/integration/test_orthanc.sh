#!/usr/bin/env bash
# The PACS round trip with a real Orthanc (Debian `orthanc`), run as a plain process with a JSON
# config of its own (storage in the scratch folder, free HTTP and DICOM ports, no auth; HTTP
# answers only on localhost). TCP_NODELAY=1 for Orthanc and the DCMTK tools (C-STORE is ~30x
# slower without it).
#  1. the post-processing script by hand: a Siemens-style phantom study is stored over DICOM
#     (storescu), scripts/pacs/orthanc-postprocess.sh pulls it, runs paraspinal and stores the
#     SEG + secondary captures back; checked through the REST API (same study, series and
#     instance counts, modalities, SOP classes) and by downloading the SEG (dcmdump, and
#     tests/tools/check_seg.py: references, geometry and voxels against the run's dseg);
#     a second call skips the study, --force re-stores identical UIDs (no new series); a study
#     sent in pieces (in-phase/opposed-phase, then water/fat) is analysed again and its results
#     replaced;
#  2. the Lua OnStableStudy hook: Orthanc restarted with scripts/pacs/orthanc-onstablestudy.lua;
#     a Philips enhanced multi-frame RLE study of another patient is stored and the results must
#     appear by themselves, exactly once.
# Skips (77) only when Orthanc is not installed. Orthanc is stopped by its pid.
. "$(dirname "$0")/lib.sh"
START=$(date +%s)
ORTHANC=/usr/sbin/Orthanc
[ -x "$ORTHANC" ] || { echo "SKIP: Orthanc is not installed ($ORTHANC; Debian package orthanc)"; exit 77; }
for tool in storescu dcmdump curl jq; do
  command -v $tool > /dev/null || { echo "FAIL: $tool missing (scripts/install-deps.sh)"; exit 1; }
done
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3
$PY -c 'import pydicom' 2> /dev/null || { echo "FAIL: python3-pydicom missing (scripts/install-deps.sh)"; exit 1; }
SCRIPT=$SRC/scripts/pacs/orthanc-postprocess.sh
LUA=$SRC/scripts/pacs/orthanc-onstablestudy.lua
export TCP_NODELAY=1

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HP=$(free_port) DP=$(free_port)
[ "$HP" != "$DP" ] || DP=$(free_port)
URL=http://127.0.0.1:$HP
OPID=""
stop_orthanc() {
  if [ -n "$OPID" ]; then
    kill "$OPID" 2> /dev/null
    for _ in $(seq 50); do kill -0 "$OPID" 2> /dev/null || break; sleep 0.2; done
    kill -9 "$OPID" 2> /dev/null
    wait "$OPID" 2> /dev/null
    OPID=""
  fi
}
trap stop_orthanc EXIT

# start_orthanc NAME [LUA]: config + storage in $S/NAME, waits for the REST API
start_orthanc() {
  local dir=$S/$1 lua=""
  [ -n "${2:-}" ] && lua="\"$2\""
  mkdir -p "$dir/storage"
  cat > "$dir/orthanc.json" << EOF
{
  "Name": "paraspinal-test",
  "StorageDirectory": "$dir/storage",
  "IndexDirectory": "$dir/storage",
  "HttpPort": $HP,
  "DicomPort": $DP,
  "DicomAet": "PSPTEST",
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false,
  "DicomCheckCalledAet": false,
  "DicomAlwaysAllowStore": true,
  "StableAge": 2,
  "Plugins": [],
  "LuaScripts": [ $lua ],
  "SaveJobs": false,
  "ConcurrentJobs": 1,
  "StorageCompression": false,
  "OverwriteInstances": false
}
EOF
  "$ORTHANC" "$dir/orthanc.json" > "$dir/orthanc.log" 2>&1 &
  OPID=$!
  for _ in $(seq 150); do
    curl -sf "$URL/system" > /dev/null 2>&1 && return 0
    kill -0 "$OPID" 2> /dev/null || break
    sleep 0.2
  done
  echo "FAIL: Orthanc did not start; its log:"; tail -20 "$dir/orthanc.log"; exit 1
}

api() { curl -sf "$URL$1"; }
study_of() { # Orthanc study id of the study holding PatientID $1
  api /studies?expand | jq -r --arg p "$1" '.[] | select(.PatientMainDicomTags.PatientID == $p) | .ID'
}
instance_count() { api "/studies/$1/instances" | jq 'length'; }

# check_results STUDY_ID PHANTOM_DIR LOCAL_OUT: the SEG and SC series as seen through the REST API
check_results() {
  local sid=$1 ph=$2 out=$3 tag=$4
  local series; series=$(api "/studies/$sid/series")
  local n_mr n_seg n_ot
  n_mr=$(jq '[.[] | select(.MainDicomTags.Modality == "MR")] | length' <<< "$series")
  n_seg=$(jq '[.[] | select(.MainDicomTags.Modality == "SEG")] | length' <<< "$series")
  n_ot=$(jq '[.[] | select(.MainDicomTags.Modality == "OT")] | length' <<< "$series")
  echo "$tag: study has $n_mr MR, $n_seg SEG, $n_ot OT series"
  [ "$n_mr" = 4 ] && [ "$n_seg" = 1 ] && [ "$n_ot" = 1 ] || fail "$tag: expected 4 MR + 1 SEG + 1 OT series"
  local seg_ids ot_ids study_uid
  mapfile -t seg_ids < <(jq -r '.[] | select(.MainDicomTags.Modality == "SEG") | .Instances[]' <<< "$series")
  mapfile -t ot_ids < <(jq -r '.[] | select(.MainDicomTags.Modality == "OT") | .Instances[]' <<< "$series")
  study_uid=$(api "/studies/$sid" | jq -r .MainDicomTags.StudyInstanceUID)
  [ ${#seg_ids[@]} = 1 ] || fail "$tag: the SEG series has ${#seg_ids[@]} instances, not 1"
  local n_sc; n_sc=$(ls "$out"/dicom/sc_*.dcm | wc -l)
  [ ${#ot_ids[@]} = "$n_sc" ] || fail "$tag: the SC series has ${#ot_ids[@]} instances, paraspinal wrote $n_sc"
  mkdir -p "$S/$tag-down"
  local id t i=0
  for id in "${seg_ids[@]}" "${ot_ids[@]}"; do
    t=$(api "/instances/$id/simplified-tags")
    [ "$(jq -r .StudyInstanceUID <<< "$t")" = "$study_uid" ] || fail "$tag: instance $id is not in the study"
    case "$(jq -r .Modality <<< "$t")/$(jq -r .SOPClassUID <<< "$t")" in
      SEG/1.2.840.10008.5.1.4.1.1.66.4) api "/instances/$id/file" > "$S/$tag-down/seg.dcm" ;;
      OT/1.2.840.10008.5.1.4.1.1.7) i=$((i + 1)); api "/instances/$id/file" > "$S/$tag-down/sc_$i.dcm" ;;
      *) fail "$tag: instance $id has modality/SOP class $(jq -r .Modality <<< "$t")/$(jq -r .SOPClassUID <<< "$t")" ;;
    esac
  done
  # the SEG as DCMTK reads it ...
  local d; d=$(dcmdump -q +L "$S/$tag-down/seg.dcm") || fail "$tag: dcmdump cannot read the SEG"
  grep -q "(0008,0016) UI =SegmentationStorage" <<< "$d" || fail "$tag: SEG SOP class"
  grep -q "(0062,0001) CS \[BINARY\]" <<< "$d" || fail "$tag: SegmentationType"
  [ "$(grep -c '(0062,0005) LO' <<< "$d")" = 4 ] || fail "$tag: not 4 segment labels"
  grep -q "(0020,000d) UI \[$study_uid\]" <<< "$d" || fail "$tag: SEG StudyInstanceUID"
  # ... and as pydicom reads it: references, geometry and voxels against the run's label map
  run $PY "$SRC/tests/tools/check_seg.py" "$S/$tag-down/seg.dcm" "$ph/series_01" "$out/dseg.nii.gz" \
    "$S/$tag-down"/sc_*.dcm
}

# --- 1: the script by hand --------------------------------------------------------------------
run "$PSP" phantom --dicom "$S/study1" --vendor siemens > /dev/null
start_orthanc orthanc1
T0=$(date +%s.%N)
run storescu -q -aet PSPSCU -aec PSPTEST +sd +r 127.0.0.1 "$DP" "$S/study1"
T1=$(date +%s.%N)
SID=$(study_of PSP-PHANTOM-0001)
[ -n "$SID" ] || { fail "the stored study is not in Orthanc"; finish; }
echo "stored $(instance_count "$SID") instances with storescu in $(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.1f", b - a }') s"
[ "$(instance_count "$SID")" = 176 ] || fail "expected 4 x 44 instances in Orthanc"

run "$SCRIPT" --url "$URL" --paraspinal "$PSP" --workdir "$S/work1" --keep "$SID" 2> "$S/script1.log"
cat "$S/script1.log"
check_results "$SID" "$S/study1" "$S/work1/out" script
for id in 'PHANTOM^TEST' PSP-PHANTOM-0001 19700101 PSPACC0001; do
  grep -qF "$id" "$S/script1.log" && fail "identifier $id in the script's log"
  grep -rqF "$id" "$S/work1/out" --exclude='*.dcm' && fail "identifier $id in the analysis outputs"
  find "$S/work1/out" | grep -qF "$id" && fail "identifier $id in a file name"
done
grep -q "PSP-PHANTOM-0001" "$S/script-down/seg.dcm" || fail "the SEG lacks the patient module (positive control)"

# a second call skips the study; --force stores the same UIDs again: nothing new
n_before=$(instance_count "$SID")
run "$SCRIPT" --url "$URL" --paraspinal "$PSP" "$SID" 2> "$S/script2.log"
grep -q "skipped" "$S/script2.log" || fail "second call did not skip the processed study"
run "$SCRIPT" --url "$URL" --paraspinal "$PSP" --force "$SID" 2> "$S/script3.log"
grep -q ": 0 new" "$S/script3.log" || fail "--force stored new instances: $(cat "$S/script3.log")"
[ "$(instance_count "$SID")" = "$n_before" ] || fail "--force changed the number of instances"
# a study sent in pieces: in-phase/opposed-phase first (analysed), then water/fat; the second
# call analyses it again (the MR series are newer than the results) and replaces the results:
# one SEG and one capture series, from water/fat now
run "$PSP" phantom --dicom "$S/study3" --vendor siemens --patient-id PSP-PHANTOM-0003 > /dev/null
run storescu -q -aet PSPSCU -aec PSPTEST +sd +r 127.0.0.1 "$DP" "$S/study3/series_03" "$S/study3/series_04"
SID3=$(study_of PSP-PHANTOM-0003)
run "$SCRIPT" --url "$URL" --paraspinal "$PSP" "$SID3" 2> "$S/script4.log"
seg1=$(api "/studies/$SID3/series" | jq -r '.[] | select(.MainDicomTags.Modality == "SEG") | .ID')
[ -n "$seg1" ] || fail "pieces: no SEG after the in-phase/opposed-phase part"
sleep 1.1 # Orthanc's LastUpdate has one-second steps
run storescu -q -aet PSPSCU -aec PSPTEST +sd +r 127.0.0.1 "$DP" "$S/study3/series_01" "$S/study3/series_02"
run "$SCRIPT" --url "$URL" --paraspinal "$PSP" "$SID3" 2> "$S/script5.log"
cat "$S/script5.log"
grep -q "analysing again" "$S/script5.log" || fail "pieces: the water/fat part was not analysed"
grep -q "deleted 2 series of an earlier run" "$S/script5.log" || fail "pieces: the earlier results were not replaced"
s3=$(api "/studies/$SID3/series")
[ "$(jq '[.[] | select(.MainDicomTags.Modality == "SEG")] | length' <<< "$s3")" = 1 ] &&
  [ "$(jq '[.[] | select(.MainDicomTags.Modality == "OT")] | length' <<< "$s3")" = 1 ] ||
  fail "pieces: expected one SEG and one OT series: $(jq -c '[.[] | .MainDicomTags.Modality]' <<< "$s3")"
[ "$(jq -r '.[] | select(.MainDicomTags.Modality == "SEG") | .ID' <<< "$s3")" != "$seg1" ] ||
  fail "pieces: the SEG is still the first one"
run "$SCRIPT" --url "$URL" --paraspinal "$PSP" "$SID3" 2> "$S/script6.log"
grep -q "skipped" "$S/script6.log" || fail "pieces: a third call did not skip"
# bad calls: clear exit codes
"$SCRIPT" --url "$URL" --paraspinal "$PSP" 00000000-00000000-00000000-00000000-00000000 2> /dev/null
[ $? = 65 ] || fail "unknown study: exit code not 65"
"$SCRIPT" --url "http://127.0.0.1:1" --paraspinal "$PSP" "$SID" 2> /dev/null
[ $? = 69 ] || fail "unreachable Orthanc: exit code not 69"
"$SCRIPT" --bogus 2> /dev/null
[ $? = 64 ] || fail "bad option: exit code not 64"
stop_orthanc

# --- 2: the Lua OnStableStudy hook ------------------------------------------------------------
run "$PSP" phantom --dicom "$S/study2" --vendor philips --multiframe --compress rle \
  --patient-id PSP-PHANTOM-0002 --patient-name "PHANTOM^LUA" > /dev/null
export PSP_POSTPROCESS=$SCRIPT PSP_ORTHANC_URL=$URL PARASPINAL=$PSP PSP_LOG=$S/hook.log \
  PSP_LOCK=$S/hook.lock
start_orthanc orthanc2 "$LUA"
run storescu -q -xr -aet PSPSCU -aec PSPTEST +sd +r 127.0.0.1 "$DP" "$S/study2"
for _ in $(seq 600); do # the script logs "stored ..." after its last upload
  grep -q "stored .* results" "$S/hook.log" 2> /dev/null && break
  sleep 0.5
done
SID2=$(study_of PSP-PHANTOM-0002)
[ -n "$SID2" ] || { fail "the Lua test study is not in Orthanc"; finish; }
grep -q "stored .* results" "$S/hook.log" 2> /dev/null || fail "the hook stored no results within 300 s"
sleep 4 # StableAge 2: the results made the study unstable; it must not be processed again
cat "$S/hook.log"
[ "$(grep -c 'running paraspinal analyze' "$S/hook.log")" = 1 ] || fail "the hook ran more than once"
grep -q "analysing stable study $SID2" "$S/orthanc2/orthanc.log" || fail "Orthanc's log does not show the hook"
# the hook's work folder is gone; analyse the same images locally for the voxel comparison
run "$PSP" analyze --dicom "$S/study2" -o "$S/local2" --dicom-out > /dev/null
check_results "$SID2" "$S/study2" "$S/local2" hook
stop_orthanc

echo "test_orthanc: $(($(date +%s) - START)) s"
finish
