#!/usr/bin/env bash
# One malformed-input case through the CLI. Asserts all four: a message
# naming the file (or option) and the problem, the documented non-zero exit
# code, no crash (exit < 128), and no output files left in the output folder.
#   bad_input.sh PARASPINAL SOURCE_DIR CASE SCRATCH
#   bad_input.sh --list          the case names (tests/CMakeLists.txt registers one test each)
# The input files are the committed corpus tests/malformed/ (regenerate with
# tests/malformed/make_corpus.sh); cases that need a special file system
# state (unreadable file, read-only folder, full disk) build it in SCRATCH.
# Exit 77 (skipped, with the reason) when that state cannot be built here,
# e.g. chmod does not stop root, or mounting a small tmpfs is not allowed.
set -u
if [ "${1:-}" = --list ]; then
  sed -n 's/^  \([a-z0-9][a-z0-9-]*\))  *#.*$/\1/p' "$0"
  exit 0
fi
PSP=$1 SRC=$2 CASE=$3 S=$4
M=$SRC/tests/malformed
rm -rf "$S" && mkdir -p "$S" || exit 1
cd "$S" || exit 1
W=$M/base_water.nii.gz F=$M/base_fat.nii.gz L=$M/base_labels.nii.gz
OUT=out
CMD=analyze      # analyze: --water W --fat F [--labels L] -o OUT plus EXTRA
ARGS=()          # other commands: the whole argument list
EXTRA=()
ULIMIT_F=""
skip() { echo "SKIPPED: $*"; exit 77; }
# Permission cases: root ignores file modes, so as root the command runs as
# user nobody (setpriv, util-linux). unprivileged CMD... succeeds when CMD
# fails for lack of permission under the user the test will run as.
AS_USER=()
unprivileged() {
  "$@" >/dev/null 2>&1 || return 0
  [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null || return 1
  AS_USER=(setpriv --reuid=65534 --regid=65534 --clear-groups --)
  chmod 755 "$S"
  ! "${AS_USER[@]}" "$@" >/dev/null 2>&1
}
cleanup() { :; }
trap 'cleanup' EXIT

# Each case: what is broken, then want (exit code), msg (extended regex for
# the problem) and name (fixed string: the file or option named).
case "$CASE" in
  missing)  # input file does not exist
    W=nonexistent_water.nii.gz; want=3; msg="cannot open"; name=$W ;;
  directory)  # a folder where a file belongs
    mkdir adir.nii.gz; W=adir.nii.gz; want=3; msg="is a folder"; name=$W ;;
  unreadable)  # permission denied
    cp "$W" unreadable.nii.gz && chmod 000 unreadable.nii.gz
    unprivileged head -c1 unreadable.nii.gz ||
      skip "chmod 000 does not stop $(id -un) from reading and no unprivileged user to switch to"
    W=unreadable.nii.gz; want=3; msg="Permission denied"; name=$W ;;
  empty)  # zero-byte .nii
    W=$M/empty.nii; want=4; msg="empty"; name=$W ;;
  gzip-empty)  # valid gzip holding zero bytes
    W=$M/gzip_empty.nii.gz; want=4; msg="empty or too short"; name=$W ;;
  gzip-garbage)  # gzip magic followed by bytes that are no deflate stream
    F=$M/gzip_garbage.nii.gz; want=4; msg="corrupt gzip data"; name=$F ;;
  truncated)  # .nii.gz cut in the voxel data
    F=$M/truncated.nii.gz; want=4; msg="truncated"; name=$F ;;
  gzip-crc)  # .nii.gz whose CRC-32 does not match its data (a flipped bit)
    F=$M/gzip_crc.nii.gz; want=4; msg="incorrect data check"; name=$F ;;
  truncated-nii)  # .nii cut in the voxel data
    F=$M/truncated.nii; want=4; msg="truncated"; name=$F ;;
  truncated-header)  # .nii cut inside the 348-byte header
    W=$M/truncated_header.nii; want=4; msg="truncated NIfTI header"; name=$W ;;
  n2-truncated)  # NIfTI-2 cut in the voxel data
    F=$M/n2_truncated.nii; want=4; msg="truncated"; name=$F ;;
  notnifti)  # text file
    F=$M/notnifti.nii; want=4; msg="not a NIfTI"; name=$F ;;
  sizeof-hdr)  # header size field 350
    W=$M/sizeof_hdr.nii; want=4; msg="header size field is 350"; name=$W ;;
  bad-magic)  # magic string "xyz"
    W=$M/bad_magic.nii; want=4; msg="bad magic"; name=$W ;;
  hdr-img)  # magic ni1: a .hdr/.img pair header
    W=$M/hdr_img.nii; want=9; msg="hdr/.img pair is not supported"; name=$W ;;
  dim-zero)  # dim[3] = 0
    F=$M/dim_zero.nii.gz; want=4; msg="dimension 3 has size 0"; name=$F ;;
  dim-negative)  # dim[1] = -16
    F=$M/dim_negative.nii.gz; want=4; msg="dimension 1 has size -16"; name=$F ;;
  dim0)  # dim[0] = 9
    W=$M/dim0.nii; want=4; msg="invalid number of dimensions"; name=$W ;;
  huge)  # 30000^3 voxels: refused before allocating
    W=$M/huge.nii; want=7; msg="exceeds the limit"; name=$W ;;
  n2-huge)  # NIfTI-2, 2^40 x 2^40 x 2^40 voxels
    W=$M/n2_huge.nii; want=7; msg="exceeds the limit"; name=$W ;;
  dims-lie-gz)  # 1000^3 float32 promised (4 GB), 4 KB present: no 4 GB buffer first
    ULIMIT_V=1; F=$M/dims_lie.nii.gz; want=4; msg="truncated"; name=$F ;;
  dims-lie-nii)  # the same uncompressed
    ULIMIT_V=1; F=$M/dims_lie.nii; want=4; msg="truncated"; name=$F ;;
  4d)  # 4-D file without --volume
    W=$M/4d.nii.gz; want=2; msg="--volume"; name=$W ;;
  volume-3d)  # --volume 2 on 3-D files: volume 0 used to be read in silence
    EXTRA=(--volume 2); want=2; msg="--volume 2 asks for a volume this 3-D file does not have"
    name=$W ;;
  dtype-complex)  # complex64 voxels
    F=$M/dtype_complex.nii.gz; want=9; msg="complex64 .* not supported"; name=$F ;;
  dtype-rgb)  # rgb24 voxels
    W=$M/dtype_rgb.nii; want=9; msg="rgb24 .* not supported"; name=$W ;;
  voxoffset-past)  # vox_offset 1e6 in a 4 KB file
    W=$M/voxoffset_past.nii; want=4; msg="truncated.*offset 1000000"; name=$W ;;
  voxoffset-inside)  # vox_offset 100, inside the header
    W=$M/voxoffset_inside.nii; want=4; msg="inside the header"; name=$W ;;
  zerospacing)  # pixdim[3] = 0 (qform)
    F=$M/zerospacing.nii.gz; want=5; msg="spacing must be > 0"; name=$F ;;
  negspacing)  # pixdim[1] = -1.5 (qform)
    F=$M/negspacing.nii.gz; want=5; msg="pixdim\[1\] = -1.5 mm; spacing must be > 0"; name=$F ;;
  singular)  # sform with two parallel voxel axes
    F=$M/singular.nii.gz; want=5; msg="singular"; name=$F ;;
  nan-affine)  # NaN in the sform
    W=$M/nan_affine.nii.gz; want=5; msg="NaN/Inf"; name=$W ;;
  nan)  # a NaN voxel in a magnitude image
    W=$M/nan.nii.gz; want=6; msg="NaN"; name=$W ;;
  inf)  # an infinite voxel
    F=$M/inf.nii.gz; want=6; msg="infinite"; name=$F ;;
  negative)  # a signed image given as the water magnitude
    W=$M/negative.nii.gz; want=6; msg="negative.*not a magnitude image"; name=$W ;;
  mismatch)  # water 16x16x4, fat 16x16x5
    F=$M/dims_mismatch.nii.gz; want=5; msg="dimensions differ"; name=$F ;;
  spacing-mismatch)  # water 1.5 mm, fat 1.6 mm pixels
    F=$M/spacing_mismatch.nii.gz; want=5; msg="spacing differs"; name=$F ;;
  labels-mismatch)  # labels on another grid
    L=$M/labels_mismatch.nii.gz; want=5; msg="dimensions differ"; name=$L ;;
  labels-unknown)  # a label value 9 the scheme does not know
    L=$M/labels_unknown.nii.gz; want=6; msg="not in the label scheme"; name=$L ;;
  labels-noxform)  # labels without qform and sform beside images with an sform
    L=$M/labels_noxform.nii.gz; want=5; msg="no qform or sform, so where its voxels lie is unknown"; name=$L ;;
  labels-float)  # a non-integer label value
    L=$M/labels_float.nii.gz; want=6; msg="not in the label scheme.*1\.5"; name=$L ;;
  scheme-partial)  # TSV scheme without label 4, labels use 4
    EXTRA=(--label-scheme "$M/scheme_partial.tsv"); want=6; msg="not in the label scheme.*4"
    name=$L ;;
  scheme-noheader)  # TSV without index/name header
    EXTRA=(--label-scheme "$M/scheme_noheader.tsv"); want=4; msg="header line"
    name=$M/scheme_noheader.tsv ;;
  scheme-nomuscle)  # TSV naming no paraspinal muscle
    EXTRA=(--label-scheme "$M/scheme_nomuscle.tsv"); want=4; msg="nothing to measure"
    name=$M/scheme_nomuscle.tsv ;;
  scheme-no-labels)  # --label-scheme without --labels
    L=""; EXTRA=(--label-scheme lpm); want=2; msg="none was given"; name="--label-scheme" ;;
  landmarks-bad)  # level override file with an unknown level name
    EXTRA=(--landmarks "$M/landmarks_bad.txt"); want=2; msg="'L9' is not a disc"
    name="$M/landmarks_bad.txt:3" ;;
  landmarks-range)  # level override outside the stack
    EXTRA=(--landmarks "$M/landmarks_range.txt"); want=2; msg="slices 0\.\.3 only"
    name="L4/L5=500" ;;
  landmarks-missing)  # --landmarks FILE does not exist
    EXTRA=(--landmarks nonexistent_landmarks.txt); want=3; msg="cannot open"
    name=nonexistent_landmarks.txt ;;
  ff-unit)  # FF map in percent declared a fraction
    W=""; F=""; EXTRA=(--ff "$M/ffmap_percent.nii.gz" --ff-unit fraction); want=6
    msg="looks like percent"; name=$M/ffmap_percent.nii.gz ;;
  bad-option)  # --threads zero
    EXTRA=(--threads zero); want=2; msg="--threads"; name="zero" ;;
  noise-floor-nan)  # --noise-floor nan (NaN passed the >= 0 check)
    EXTRA=(--noise-floor nan); want=2; msg="--noise-floor needs a finite number"; name="nan" ;;
  unwritable-out)  # output folder path runs through a plain file
    touch blocker; OUT=blocker/out; want=3; msg="cannot create folder"; name=blocker ;;
  out-readonly)  # output folder without write permission
    mkdir out && chmod 555 out
    unprivileged touch out/.probe ||
      skip "chmod 555 does not stop $(id -un) from writing and no unprivileged user to switch to"
    rm -f out/.probe
    want=3; msg="cannot create|Permission denied"; name=out ;;
  disk-full-ulimit)  # file size limit (ulimit -f 1 KiB): writes fail with EFBIG
    ULIMIT_F=1; want=3; msg="write failed|File too large"; name=out ;;
  disk-full-tmpfs)  # a 16 KiB tmpfs as output file system: ENOSPC
    mkdir full
    mount -t tmpfs -o size=16k tmpfs full 2>/dev/null ||
      skip "cannot mount a small tmpfs here (needs root and mount rights); disk-full-ulimit covers EFBIG"
    cleanup() { cd / && umount "$S/full" 2>/dev/null; }
    OUT=full/out; want=3; msg="No space left|write failed"; name=full/out ;;
  dicom-no-pixels)  # DICOM series with one MR image without pixel data (cut short)
    CMD=dicom; ARGS=("$M/dicom_nopixels"); want=4; msg="IM0003.dcm: an MR image .* without pixel data"
    name=$M/dicom_nopixels ;;
  dicom-spacing)  # DICOM series with one slice 2 mm off (steps 3 and 7 mm)
    CMD=dicom; ARGS=("$M/dicom_spacing"); want=5; msg="irregular slice spacing"
    name=$M/dicom_spacing ;;
  dicom-truncated)  # DICOM file cut short
    CMD=dicom; ARGS=("$M/dicom_truncated"); want=4; msg="not a readable DICOM file"
    name=$M/dicom_truncated/series_01/IM0002.dcm ;;
  ffmap-truncated)  # ffmap: truncated fat image, no FF map left behind
    CMD=ffmap; F=$M/truncated.nii.gz; want=4; msg="truncated"; name=$F ;;
  compare-truncated)  # compare: truncated prediction, no CSV left behind
    CMD=compare; ARGS=("$M/truncated.nii.gz" "$L" --csv out/compare.csv); want=4; msg="truncated"
    name=$M/truncated.nii.gz ;;
  compare-unknown)  # compare: label values the scheme does not know
    CMD=compare; ARGS=("$M/labels_unknown.nii.gz" "$L" --csv out/compare.csv); want=6
    msg="not in the label scheme"; name=$M/labels_unknown.nii.gz ;;
  change-notrun)  # change: folders that are not analyze outputs
    CMD=change; ARGS=("$M" "$M" -o out); want=3; msg="cannot open|no such|not an analyze"
    name=$M ;;
  *) echo "unknown case $CASE"; exit 1 ;;
esac

mkdir -p "$(dirname "$OUT")" 2>/dev/null
[ -d "$OUT" ] || [ "$CASE" = unwritable-out ] || mkdir -p "$OUT"
case $CMD in
  analyze)
    args=(analyze)
    [ -n "$W" ] && args+=(--water "$W")
    [ -n "$F" ] && args+=(--fat "$F")
    [ -n "$L" ] && args+=(--labels "$L")
    args+=(-o "$OUT" "${EXTRA[@]}") ;;
  ffmap) args=(ffmap --water "$W" --fat "$F" -o "$OUT/ff.nii.gz") ;;
  dicom) args=(analyze --dicom "${ARGS[0]}" -o "$OUT") ;;
  *) args=("$CMD" "${ARGS[@]}") ;;
esac
echo "+ paraspinal ${args[*]}"
(
  [ -n "$ULIMIT_F" ] && ulimit -f "$ULIMIT_F"
  # cases promising gigabytes: fail if the loader allocates them (not under
  # AddressSanitizer, which reserves terabytes of address space up front)
  if [ -n "${ULIMIT_V:-}" ] && ! ldd "$PSP" 2>/dev/null | grep -q libasan; then ulimit -v 1000000; fi
  exec "${AS_USER[@]}" "$PSP" "${args[@]}"
) >stdout.txt 2>stderr.txt
rc=$?
fail=0
if [ $rc -ge 128 ]; then echo "FAIL: crashed with signal $((rc - 128))"; fail=1; fi
if [ $rc -ne "$want" ]; then echo "FAIL: exit code $rc, expected $want"; fail=1; fi
grep -Eq -- "$msg" stderr.txt || { echo "FAIL: stderr lacks /$msg/"; fail=1; }
grep -Fq -- "$name" stderr.txt || { echo "FAIL: stderr does not name '$name'"; fail=1; }
if [ -d "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
  echo "FAIL: partial output left in $OUT:"; ls -la "$OUT"; fail=1
fi
echo "--- stderr:"; cat stderr.txt
[ $fail -eq 0 ] && echo "ok: $CASE -> exit $rc"
exit $fail
