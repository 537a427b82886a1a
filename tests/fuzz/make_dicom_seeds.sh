#!/usr/bin/env bash
# Regenerates the DICOM seed corpus tests/fuzz/corpus/dicom/ (small files,
# deterministic): one file of each kind `paraspinal phantom --dicom` writes
# (Siemens/Philips/GE conventions, single- and multi-frame, RLE, JPEG-LS),
# plus pydicom rewrites of one image in the other encodings the reader
# accepts (implicit VR, big-endian explicit VR, 8-bit, signed 32-bit,
# FloatPixelData) and without pixel data.
#   tests/fuzz/make_dicom_seeds.sh PARASPINAL
set -euo pipefail
PSP=${1:?usage: make_dicom_seeds.sh PARASPINAL}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$HERE/corpus/dicom
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p "$OUT"
ph() { "$PSP" phantom --dims 8,8,4 --seed 2 "$@" >/dev/null 2>&1; }
for v in siemens philips ge; do
  ph --dicom "$T/$v-sf" --vendor "$v"
  ph --dicom "$T/$v-mf" --vendor "$v" --multiframe
  cp "$T/$v-sf/series_01/IM0001.dcm" "$OUT/$v-single.dcm"
  cp "$T/$v-mf/series_01/IM0001.dcm" "$OUT/$v-enhanced.dcm"
done
ph --dicom "$T/rle" --compress rle --multiframe --series ff
cp "$T/rle/series_05/IM0001.dcm" "$OUT/rle-ff-enhanced.dcm"
ph --dicom "$T/jls" --compress jpegls --series fat
cp "$T/jls/series_02/IM0001.dcm" "$OUT/jpegls-single.dcm"
/usr/bin/python3 - "$OUT/siemens-single.dcm" "$OUT" <<'PY'
import sys
import numpy as np
import pydicom
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

src, out = sys.argv[1], sys.argv[2]

def load():
    return pydicom.dcmread(src)

d = load()
d.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
d.is_little_endian, d.is_implicit_VR = True, True
d.save_as(out + "/implicit-vr.dcm", write_like_original=False)

d = load()
a = d.pixel_array
d.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
d.is_little_endian, d.is_implicit_VR = False, False
d.PixelData = a.astype(">u2").tobytes()
d.save_as(out + "/big-endian.dcm", write_like_original=False)

d = load()
a = d.pixel_array
d.BitsAllocated, d.BitsStored, d.HighBit = 8, 8, 7
d.PixelData = (a >> 4).clip(0, 255).astype(np.uint8).tobytes()
d.save_as(out + "/uint8.dcm", write_like_original=False)

d = load()
a = d.pixel_array.astype(np.int32) - 100
d.BitsAllocated, d.BitsStored, d.HighBit, d.PixelRepresentation = 32, 32, 31, 1
d.PixelData = a.astype("<i4").tobytes()
d.save_as(out + "/int32-signed.dcm", write_like_original=False)

d = load()
a = d.pixel_array.astype(np.float32) / 1000.0
del d.PixelData
d.BitsAllocated = 32
for k in ("BitsStored", "HighBit", "PixelRepresentation"):
    if k in d:
        delattr(d, k)
d.FloatPixelData = a.astype("<f4").tobytes()
d.save_as(out + "/float-pixels.dcm", write_like_original=False)

d = load()
del d.PixelData
d.save_as(out + "/no-pixel-data.dcm", write_like_original=False)
PY
ls "$OUT" | wc -l
