#!/usr/bin/env python3
"""Independent check of `paraspinal phantom --dicom` against the phantom's NIfTI files.

Reads the NIfTI files with the standard library only (gzip + struct: the sform affine and the
voxels) and the DICOM series with pydicom (no numpy, no project code), rebuilds each series' grid
from ImagePositionPatient / ImageOrientationPatient / PixelSpacing (per-frame functional groups
for enhanced multi-frame files) and compares it with the NIfTI affine, and compares every voxel
after RescaleSlope / RescaleIntercept. Also checks the vendor conventions, the transfer syntax and
that the study, Frame of Reference and synthetic identifiers are shared by all series.

usage: check_phantom_dicom.py NIFTI_PREFIX DICOM_DIR VENDOR MULTIFRAME CODEC [PIXEL_DIR]
  NIFTI_PREFIX  e.g. out/phantom (reads out/phantom_water.nii.gz ...)
  DICOM_DIR     the --dicom folder (series_NN subfolders)
  VENDOR        siemens | philips | ge;  MULTIFRAME 0 | 1;  CODEC none | rle | jpegls
  PIXEL_DIR     a decompressed copy of DICOM_DIR (same layout) to read pixels from; pydicom
                without numpy cannot decode RLE / JPEG-LS, DCMTK's dcmdrle / dcmdjpls can
Exit 0 when everything matches, 1 with one line per problem otherwise.
"""
import glob
import gzip
import math
import os
import struct
import sys

import pydicom

IMAGES = {1: "water", 2: "fat", 3: "inphase", 4: "outphase", 5: "ff"}
XFER = {"none": "1.2.840.10008.1.2.1", "rle": "1.2.840.10008.1.2.5", "jpegls": "1.2.840.10008.1.2.4.80"}
MR = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
SIEMENS_V4 = {"water": "W", "fat": "F", "inphase": "IN_PHASE", "outphase": "OPP_PHASE", "ff": "FF"}
SIEMENS_SUFFIX = {"water": "_W", "fat": "_F", "inphase": "_in", "outphase": "_opp", "ff": "_FF"}
PHILIPS_V4 = {"water": "WATER", "fat": "FAT", "inphase": "IN_PHASE", "outphase": "OUT_PHASE",
              "ff": "FAT_FRACTION"}
GE_PREFIX = {"water": "WATER: ", "fat": "FAT: ", "inphase": "InPhase: ", "outphase": "OutPhase: ",
             "ff": "FAT FRACTION: "}
MANUFACTURER = {"siemens": "SIEMENS", "philips": "Philips", "ge": "GE MEDICAL SYSTEMS"}

problems = []


def problem(msg):
    problems.append(msg)
    print("FAIL: " + msg)


def read_nifti(path):
    """NIfTI-1: dims, the sform affine (4x4, RAS) and the voxels (file order) as floats."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if struct.unpack_from("<i", raw, 0)[0] != 348:
        raise SystemExit(f"{path}: not a little-endian NIfTI-1 file")
    dim = struct.unpack_from("<8h", raw, 40)
    datatype = struct.unpack_from("<h", raw, 70)[0]
    vox_offset = int(struct.unpack_from("<f", raw, 108)[0])
    slope, inter = struct.unpack_from("<2f", raw, 112)
    srow = [struct.unpack_from("<4f", raw, 280 + 16 * r) for r in range(3)]
    n = dim[1] * dim[2] * dim[3]
    fmt = {2: "B", 4: "h", 512: "H", 16: "f"}[datatype]
    vals = struct.unpack_from("<%d%s" % (n, fmt), raw, vox_offset)
    if slope not in (0.0, 1.0) or inter != 0.0:
        vals = [v * (slope or 1.0) + inter for v in vals]
    return (dim[1], dim[2], dim[3]), [list(r) for r in srow] + [[0, 0, 0, 1]], vals


def fl(seq):
    return [float(x) for x in seq]


def frames(series_dir, pixel_dir):
    """Per slice (in instance / stack order): (IPP, IOP, spacing, slope, intercept, pixels)."""
    files = sorted(glob.glob(os.path.join(series_dir, "*.dcm")))
    out, heads = [], []
    for f in files:
        head = pydicom.dcmread(f, stop_before_pixels=True)
        heads.append((f, head))
        pix = pydicom.dcmread(os.path.join(pixel_dir, os.path.basename(series_dir), os.path.basename(f)))
        signed = int(pix.PixelRepresentation) == 1
        rows, cols = int(pix.Rows), int(pix.Columns)
        nfr = int(getattr(pix, "NumberOfFrames", 1) or 1)
        data = struct.unpack("<%d%s" % (rows * cols * nfr, "h" if signed else "H"),
                             pix.PixelData[: rows * cols * nfr * 2])
        if nfr == 1 and "PerFrameFunctionalGroupsSequence" not in pix:
            out.append((int(pix.InstanceNumber), fl(pix.ImagePositionPatient),
                        fl(pix.ImageOrientationPatient), fl(pix.PixelSpacing),
                        float(pix.RescaleSlope), float(pix.RescaleIntercept), data, rows, cols))
            continue
        sh = pix.SharedFunctionalGroupsSequence[0]
        iop = fl(sh.PlaneOrientationSequence[0].ImageOrientationPatient)
        spacing = fl(sh.PixelMeasuresSequence[0].PixelSpacing)
        pvt = sh.PixelValueTransformationSequence[0]
        for k, pf in enumerate(pix.PerFrameFunctionalGroupsSequence):
            ipp = fl(pf.PlanePositionSequence[0].ImagePositionPatient)
            pos = int(pf.FrameContentSequence[0].InStackPositionNumber)
            out.append((pos, ipp, iop, spacing, float(pvt.RescaleSlope), float(pvt.RescaleIntercept),
                        data[k * rows * cols:(k + 1) * rows * cols], rows, cols))
    out.sort(key=lambda t: t[0])
    return out, heads


def check_series(num, series_dir, pixel_dir, prefix, vendor, multiframe, codec, shared):
    image = IMAGES[num]
    name = os.path.basename(series_dir)
    slices, heads = frames(series_dir, pixel_dir)
    # header conventions
    for f, h in heads:
        ts = str(h.file_meta.TransferSyntaxUID)
        if ts != XFER[codec]:
            problem(f"{f}: transfer syntax {ts}, expected {XFER[codec]}")
        if str(h.SOPClassUID) != (ENHANCED_MR if multiframe else MR):
            problem(f"{f}: SOP class {h.SOPClassUID}")
        if h.Manufacturer != MANUFACTURER[vendor]:
            problem(f"{f}: Manufacturer {h.Manufacturer!r}")
        itype = list(h.ImageType)
        desc = str(h.SeriesDescription)
        if vendor == "siemens":
            if itype[2:] != ["DIXON", SIEMENS_V4[image]] or not desc.endswith(SIEMENS_SUFFIX[image]):
                problem(f"{f}: Siemens convention: ImageType {itype}, description {desc!r}")
        elif vendor == "philips":
            if itype[2:] != ["DIXON", PHILIPS_V4[image]]:
                problem(f"{f}: Philips convention: ImageType {itype}")
            if multiframe:
                ft = list(h.SharedFunctionalGroupsSequence[0].MRImageFrameTypeSequence[0].FrameType)
                if ft != itype:
                    problem(f"{f}: FrameType {ft} differs from ImageType {itype}")
        else:
            if itype != ["ORIGINAL", "PRIMARY", "OTHER"] or not desc.startswith(GE_PREFIX[image]):
                problem(f"{f}: GE convention: ImageType {itype}, description {desc!r}")
        for key in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientName", "PatientID",
                    "PatientBirthDate", "AccessionNumber"):
            v = str(getattr(h, key))
            if shared.setdefault(key, v) != v:
                problem(f"{f}: {key} differs between series")
        shared.setdefault("series:" + str(h.SeriesInstanceUID), name)
        if shared["series:" + str(h.SeriesInstanceUID)] != name:
            problem(f"{f}: SeriesInstanceUID shared with another series")
    # geometry and voxels against the NIfTI file
    if image == "ff":
        dims, aff, w = read_nifti(prefix + "_water.nii.gz")
        _, _, fat = read_nifti(prefix + "_fat.nii.gz")
        truth = [100.0 * b / (a + b) if a + b > 0 else 0.0 for a, b in zip(w, fat)]
    else:
        dims, aff, truth = read_nifti(prefix + "_" + image + ".nii.gz")
    if len(slices) != dims[2]:
        problem(f"{name}: {len(slices)} slices, NIfTI has {dims[2]}")
        return
    _, ipp0, iop, sp, _, _, _, rows, cols = slices[0]
    if (cols, rows) != (dims[0], dims[1]):
        problem(f"{name}: {cols} x {rows} pixels, NIfTI has {dims[0]} x {dims[1]}")
        return
    ras = lambda v: [-v[0], -v[1], v[2]]  # LPS -> RAS
    col0 = ras([iop[a] * sp[1] for a in range(3)])  # along a row: column spacing
    col1 = ras([iop[3 + a] * sp[0] for a in range(3)])
    last = slices[-1][1]
    col2 = ras([(last[a] - ipp0[a]) / max(1, dims[2] - 1) for a in range(3)])
    org = ras(ipp0)
    worst = 0.0
    for r in range(3):
        for c, v in enumerate((col0[r], col1[r], col2[r], org[r])):
            worst = max(worst, abs(v - aff[r][c]))
    for k, s in enumerate(slices):  # every slice on the line the affine predicts
        for a in range(3):
            expect = aff[a][2] * k + aff[a][3]
            worst = max(worst, abs(ras(s[1])[a] - expect))
    if worst > 1e-3:
        problem(f"{name}: grid differs from the NIfTI affine by {worst:.6f} mm")
    maxdiff = 0.0
    nx, ny = dims[0], dims[1]
    for k, s in enumerate(slices):
        slope, icpt, data = s[4], s[5], s[6]
        base = k * nx * ny
        for p in range(nx * ny):
            d = abs(data[p] * slope + icpt - truth[base + p])
            if d > maxdiff:
                maxdiff = d
    tol = 0.0 if image != "ff" else 0.5 * slices[0][4] + 1e-6
    if maxdiff > tol:
        problem(f"{name}: voxel values differ from NIfTI by up to {maxdiff} (tolerance {tol})")
    print(f"{name} ({image}): {len(slices)} slices, grid within {worst:.2e} mm, "
          f"values within {maxdiff:.3g}")


def main():
    if len(sys.argv) not in (6, 7):
        raise SystemExit(__doc__)
    prefix, ddir, vendor, multiframe, codec = sys.argv[1:6]
    pixel_dir = sys.argv[6] if len(sys.argv) == 7 else ddir
    shared = {}
    series = sorted(glob.glob(os.path.join(ddir, "series_*")))
    if not series:
        problem(f"{ddir}: no series_NN folders")
    for sdir in series:
        check_series(int(os.path.basename(sdir)[7:]), sdir, pixel_dir, prefix, vendor,
                     multiframe == "1", codec, shared)
    if shared.get("PatientName") != "PHANTOM^TEST" or shared.get("PatientID") != "PSP-PHANTOM-0001":
        problem(f"synthetic identifiers missing: {shared.get('PatientName')} {shared.get('PatientID')}")
    if problems:
        print(f"{len(problems)} problems")
        sys.exit(1)
    print("all series match the NIfTI phantom")


if __name__ == "__main__":
    main()
