#!/usr/bin/env python3
"""Regenerates the fuzz seed corpora in tests/fuzz/corpus/ (small files).

    python3 tests/fuzz/make_seeds.py

nifti/: tiny valid NIfTI-1 and NIfTI-2 files (uint8, int16, uint16, int32,
float32, float64; sform, qform, no transform; big-endian; 4-D; scl_slope) and
their .gz versions. labels/: label-scheme TSVs. landmarks/: override files. manifest/: batch
manifest CSVs.
Deterministic: the same bytes every run (gzip mtime 0).
"""
import gzip
import io
import math
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
DT = {"uint8": (2, "B"), "int16": (4, "h"), "int32": (8, "i"), "float32": (16, "f"),
      "float64": (64, "d"), "uint16": (512, "H")}


def nifti1(dims, dtype, endian="<", sform=True, qform=False, slope=0.0, inter=0.0, spacing=(1.5, 1.5, 4.0)):
    code, fmt = DT[dtype]
    bitpix = struct.calcsize(fmt) * 8
    ndim = len(dims)
    dim = [ndim] + list(dims) + [1] * (7 - ndim)
    pixdim = [1.0 if qform else 0.0] + list(spacing) + [1.0] * (7 - len(spacing))
    h = bytearray(348)
    e = endian
    struct.pack_into(e + "i", h, 0, 348)
    struct.pack_into(e + "8h", h, 40, *dim)
    struct.pack_into(e + "hhh", h, 70, code, bitpix, 0)
    struct.pack_into(e + "8f", h, 76, *pixdim)
    struct.pack_into(e + "f", h, 108, 352.0)  # vox_offset
    struct.pack_into(e + "ff", h, 112, slope, inter)
    h[123] = 2  # xyzt_units: mm
    struct.pack_into(e + "hh", h, 252, 1 if qform else 0, 1 if sform else 0)
    if qform:
        # 180 degrees about z: RAS -> LPS voxel axes
        struct.pack_into(e + "6f", h, 256, 0.0, 0.0, 1.0, 10.0, 10.0, -5.0)
    if sform:
        struct.pack_into(e + "4f", h, 280, -spacing[0], 0, 0, 12.0)
        struct.pack_into(e + "4f", h, 296, 0, -spacing[1], 0, 12.0)
        struct.pack_into(e + "4f", h, 312, 0, 0, spacing[2], -8.0)
    h[344:348] = b"n+1\0"
    return bytes(h) + b"\0\0\0\0" + voxels(dims, fmt, e)


def nifti2(dims, dtype, endian="<", sform=True, spacing=(2.0, 2.0, 5.0)):
    code, fmt = DT[dtype]
    bitpix = struct.calcsize(fmt) * 8
    ndim = len(dims)
    dim = [ndim] + list(dims) + [1] * (7 - ndim)
    h = bytearray(540)
    e = endian
    struct.pack_into(e + "i", h, 0, 540)
    h[4:12] = b"n+2\0\r\n\x1a\n"
    struct.pack_into(e + "hh", h, 12, code, bitpix)
    struct.pack_into(e + "8q", h, 16, *dim)
    struct.pack_into(e + "8d", h, 104, 1.0, *spacing, 1, 1, 1, 1)
    struct.pack_into(e + "q", h, 168, 544)  # vox_offset
    struct.pack_into(e + "dd", h, 176, 0.0, 0.0)  # scl
    struct.pack_into(e + "ii", h, 344, 0, 1 if sform else 0)  # qform, sform codes
    if sform:
        struct.pack_into(e + "4d", h, 400, -spacing[0], 0, 0, 20.0)
        struct.pack_into(e + "4d", h, 432, 0, -spacing[1], 0, 20.0)
        struct.pack_into(e + "4d", h, 464, 0, 0, spacing[2], -10.0)
    struct.pack_into(e + "i", h, 500, 2)  # xyzt_units
    return bytes(h) + b"\0\0\0\0" + voxels(dims, fmt, e)


def voxels(dims, fmt, e):
    n = 1
    for d in dims:
        n *= d
    vals = []
    for i in range(n):
        v = (i * 37) % 97
        if fmt in "fd":
            v = v * 1.25 + 0.5
        vals.append(v)
    return struct.pack(e + str(n) + fmt, *vals)


def gz(b):
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, compresslevel=6) as f:
        f.write(b)
    return out.getvalue()


def write(sub, name, data):
    d = os.path.join(HERE, "corpus", sub)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def main():
    s = (4, 3, 2)
    files = {
        "n1_uint8_sform.nii": nifti1(s, "uint8"),
        "n1_int16_qform.nii": nifti1(s, "int16", sform=False, qform=True),
        "n1_uint16_noxform.nii": nifti1(s, "uint16", sform=False),
        "n1_int32_be.nii": nifti1(s, "int32", endian=">"),
        "n1_float32_slope.nii": nifti1(s, "float32", slope=2.0, inter=-1.0),
        "n1_float64.nii": nifti1(s, "float64"),
        "n1_float32_4d.nii": nifti1((3, 2, 2, 2), "float32"),
        "n1_2d.nii": nifti1((5, 4), "uint8", spacing=(1.0, 1.0, 1.0)),
        "n2_float32.nii": nifti2(s, "float32"),
        "n2_int16_be.nii": nifti2(s, "int16", endian=">"),
        "n2_uint8_noxform.nii": nifti2(s, "uint8", sform=False),
    }
    for name, data in files.items():
        write("nifti", name, data)
    for name in ("n1_int16_qform.nii", "n1_float32_4d.nii", "n2_float32.nii", "n1_int32_be.nii"):
        write("nifti", name + ".gz", gz(files[name]))
    # two gzip members (header, then data): the streaming path
    b = files["n1_uint8_sform.nii"]
    write("nifti", "n1_uint8_2members.nii.gz", gz(b[:352]) + gz(b[352:]))

    write("labels", "paraspinal.tsv",
          "index\tname\tabbreviation\n1\tleft multifidus\tMF_L\n2\tright multifidus\tMF_R\n"
          "3\tleft erector spinae\tES_L\n4\tright erector spinae\tES_R\n")
    write("labels", "musclemap.tsv",
          "index\tname\n5101\tmultifidus left\n5102\tmultifidus right\n5111\terector spinae left\n"
          "5112\terector spinae right\n5201\tpsoas left\n")
    write("labels", "reordered_crlf.tsv",
          "name\tindex\r\nES R\t1\r\nMF R\t2\r\nMF L\t3\r\nES L\t4\r\nvertebra\t9\r\n")
    write("labels", "latin.tsv",
          "index\tname\tabbreviation\n7\tm. multifidus dex\t\n8\tm. multifidus sin\t\n"
          "11\tm. longissimus sin\tLT\n12\tiliocostalis dex\t\n-3\tother\tx\n")
    write("landmarks", "discs.txt", "# level overrides\nL4/L5=12\nL5/S1 = 4   # lowest disc\n\nT12-L1=40\n")
    write("landmarks", "vertebra.txt", "L3=20\nl2=27\n")
    write("landmarks", "crlf.txt", "L1/L2=31\r\n#x\r\n")

    write("manifest", "water_fat.csv",
          "subject,session,water,fat\nsub-01,,anat/sub-01_water.nii.gz,anat/sub-01_fat.nii.gz\n"
          "sub-02,ses-1,/data/w.nii,/data/f.nii\n")
    write("manifest", "ipop_bom_crlf.csv",
          "\ufeffsubject,inphase,outphase,labels,label_scheme\r\n"
          "p1,\"ip, one.nii.gz\",op.nii.gz,lab.nii.gz,musclemap\r\np2,ip2.nii.gz,op2.nii.gz,,\r\n")
    write("manifest", "ff_quotes.csv",
          "subject,ff,ff_unit,landmarks\nA,ff.nii.gz,percent,lm.txt\nB,\"say \"\"ff\"\".nii\",fraction,\n")
    write("manifest", "dicom.csv", "subject,session,dicom\nS1,pre,dicom/S1\nS1,post,dicom/S1b\n")


if __name__ == "__main__":
    main()
