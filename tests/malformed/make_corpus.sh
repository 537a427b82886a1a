#!/usr/bin/env bash
# Regenerates the committed malformed-input corpus (tests/malformed/*) from
# tests/tools/mkbad.c (NIfTI files), `paraspinal phantom --dicom` + pydicom
# (broken DICOM series) and the text below (label tables, landmark files).
# Deterministic: running it again gives the same bytes.
#   tests/malformed/make_corpus.sh MKBAD PARASPINAL [OUTDIR]   (default OUTDIR: this folder)
#   tests/malformed/make_corpus.sh MKBAD PARASPINAL --check    (non-zero when the committed
#                                                               files differ from a fresh run)
# MKBAD and PARASPINAL are the built tools, e.g. build/tests/mkbad build/paraspinal. The
# cases that use these files are in tests/integration/bad_input.sh.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
MKBAD=${1:?usage: make_corpus.sh MKBAD PARASPINAL [OUTDIR|--check]}
PSP=${2:?usage: make_corpus.sh MKBAD PARASPINAL [OUTDIR|--check]}
OUT=${3:-$HERE}
if [ "$OUT" = --check ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$0" "$MKBAD" "$PSP" "$tmp" >/dev/null
  bad=0 n=0
  # DICOM files come from the phantom generator, whose pixels may change with
  # it: for them only presence is checked, all other files byte for byte
  while read -r f; do
    n=$((n + 1))
    case $f in
      dicom_*) [ -f "$HERE/$f" ] || { echo "missing: tests/malformed/$f"; bad=1; } ;;
      *) cmp -s "$tmp/$f" "$HERE/$f" || { echo "stale or missing: tests/malformed/$f"; bad=1; } ;;
    esac
  done < <(cd "$tmp" && find . -type f | sed 's|^\./||' | sort)
  [ $bad -eq 0 ] && echo "tests/malformed: $n generated files match the committed corpus"
  exit $bad
fi
mkdir -p "$OUT"
cd "$OUT"
m() { "$MKBAD" "$@" || { echo "mkbad $* failed" >&2; exit 1; }; }

# the valid inputs every case starts from (16 x 16 x 4, 1.5 x 1.5 x 4 mm)
m valid base_water.nii.gz
m valid base_fat.nii.gz
m labels base_labels.nii.gz

# NIfTI files: one broken thing each
m truncated truncated.nii.gz
m truncated truncated.nii
m truncated-header truncated_header.nii
m notnifti notnifti.nii
m empty empty.nii
m gzip-empty gzip_empty.nii.gz
m gzip-garbage gzip_garbage.nii.gz
# the valid fat image with one bit of its gzip CRC-32 flipped: the data
# inflate, the check at the stream's end fails
/usr/bin/python3 -c 'import sys; b = bytearray(open(sys.argv[1], "rb").read()); b[-8] ^= 1; open(sys.argv[2], "wb").write(b)' base_fat.nii.gz gzip_crc.nii.gz
m 4d 4d.nii.gz
m zerospacing zerospacing.nii.gz
m negspacing negspacing.nii.gz
m nan nan.nii.gz
m inf inf.nii.gz
m negative negative.nii.gz
m huge huge.nii
m dims-lie dims_lie.nii.gz
m dims-lie dims_lie.nii
m sizeof-hdr sizeof_hdr.nii
m bad-magic bad_magic.nii
m hdr-img hdr_img.nii
m dim-zero dim_zero.nii.gz
m dim-negative dim_negative.nii.gz
m dim0 dim0.nii
m dtype-complex dtype_complex.nii.gz
m dtype-rgb dtype_rgb.nii
m voxoffset-past voxoffset_past.nii
m voxoffset-inside voxoffset_inside.nii
m singular singular.nii.gz
m nan-affine nan_affine.nii.gz
m spacing spacing_mismatch.nii.gz
m valid dims_mismatch.nii.gz 16 16 5
m labels-unknown labels_unknown.nii.gz
m labels-float labels_float.nii.gz
m labels-noxform labels_noxform.nii.gz
m labels labels_mismatch.nii.gz 16 16 5
m ffmap-percent ffmap_percent.nii.gz
m n2-truncated n2_truncated.nii
m n2-huge n2_huge.nii

# label tables (--label-scheme FILE.tsv) and level overrides (--landmarks FILE)
printf 'value\tlabel\n1\tleft multifidus\n' > scheme_noheader.tsv
printf 'index\tname\n1\tpsoas left\n2\tpsoas right\n' > scheme_nomuscle.tsv
printf 'index\tname\n1\tleft multifidus\n2\tright multifidus\n3\tleft erector spinae\n' \
  > scheme_partial.tsv
printf '# level overrides\nL4/L5=2\nL9=3\n' > landmarks_bad.txt
printf 'L4/L5=500\n' > landmarks_range.txt

# DICOM series (water + fat, 16 x 16 x 4) with one broken thing each
dicom() { # NAME: a fresh copy of the valid series in OUT/NAME
  rm -rf "$OUT/$1"
  "$PSP" phantom --dicom "$OUT/$1" --dims 16,16,4 --series water,fat --seed 2 >/dev/null 2>&1 ||
    { echo "paraspinal phantom --dicom failed" >&2; exit 1; }
}
dicom dicom_nopixels
dicom dicom_spacing
dicom dicom_truncated
/usr/bin/python3 - "$OUT" <<'PY'
import sys
import pydicom
out = sys.argv[1]
# an MR image without pixel data (a file cut short before them: refused, named)
f = out + "/dicom_nopixels/series_01/IM0003.dcm"
d = pydicom.dcmread(f)
del d.PixelData
d.save_as(f)
# one slice 2 mm off its place: steps of 3 and 7 mm instead of 5
f = out + "/dicom_spacing/series_02/IM0003.dcm"
d = pydicom.dcmread(f)
ipp = [float(x) for x in d.ImagePositionPatient]
ipp[2] += 2.0
d.ImagePositionPatient = ipp
d.save_as(f)
# a file cut 300 bytes short
f = out + "/dicom_truncated/series_01/IM0002.dcm"
b = open(f, "rb").read()
open(f, "wb").write(b[:-300])
PY
