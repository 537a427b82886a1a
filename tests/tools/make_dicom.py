#!/usr/bin/python3
"""Writes DICOM series from the project's NIfTI phantoms, in vendor styles.

An independent writer (pydicom + numpy; NIfTI-1 parsed here with struct and
gzip, no nibabel) used by tests/integration/test_dicom_input.sh to check
paraspinal's DICOM reader against its NIfTI reader on the same voxels.

  make_dicom.py --prefix sample_scans/phantom01 --style siemens --out DIR \
                [--images water,fat,inphase,outphase] [--seed N] [--nested] [--shuffle]
                [--rotate 0|90|180|270] [--rle] [--signed-rescale]
                [--patient-name NAME] [--patient-id ID] [--accession A]
                [--drop-slice K] [--duplicate-slice K] [--conflict-slice K] [--tilt MM]

Styles (ImageType/FrameType values and series descriptions as the vendors
write them):
  siemens      single-frame, one series per image: ImageType ...\\DIXON\\W, \\F,
               \\IN_PHASE, \\OPP_PHASE; descriptions t1_vibe_dixon_tra_W/_F/_in/_opp
  siemens-xa   single-frame, ImageType ...\\DIXON\\NONE and the type only in the
               private ImageTypeText (0021,1175) of "SIEMENS MR SDI 02"
  philips-mf   one enhanced MR file (one series) holding all images, FrameType
               ...\\DIXON\\WATER, \\FAT, \\IN_PHASE, \\OUT_PHASE per frame
  philips-mf2  one enhanced MR file (and series) per image
  philips-sf   single-frame, all images in ONE series, ImageType ...\\W\\W, \\F\\F,
               \\IP\\IP, \\OP\\OP
  ge           single-frame, one series per image, ImageType ORIGINAL\\PRIMARY\\OTHER,
               descriptions "WATER: Ax LAVA-Flex", "FAT: ...", "InPhase: ...", "OutPhase: ..."
  ge-ideal     as ge, descriptions "Ax IDEAL WATER", "Ax IDEAL FAT", ...
  echo         in-phase/opposed-phase as two echoes of ONE series, ImageType
               ORIGINAL\\PRIMARY\\M\\DIXON without a type: only the echo time
               (1.23 / 2.46 ms at 3 T) tells them apart
Everything is deterministic for a given seed (UIDs, file names, order).
"""
import argparse
import gzip
import os
import random
import struct
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

MR = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
ROOT = "1.2.826.0.1.3680043.10.1199."  # pydicom-style root for test UIDs

KINDS = ["water", "fat", "inphase", "outphase"]
TE_3T = {"water": 2.46, "fat": 2.46, "inphase": 2.46, "outphase": 1.23}


def read_nifti(path):
    raw = open(path, "rb").read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if struct.unpack("<i", raw[:4])[0] != 348:
        sys.exit(f"{path}: not a little-endian NIfTI-1 file")
    dim = struct.unpack("<8h", raw[40:56])
    dtype = struct.unpack("<h", raw[70:72])[0]
    vox_offset = int(struct.unpack("<f", raw[108:112])[0])
    slope, inter = struct.unpack("<2f", raw[112:120])
    sform_code = struct.unpack("<h", raw[254:256])[0]
    if sform_code <= 0:
        sys.exit(f"{path}: needs an sform")
    srow = np.array(struct.unpack("<12f", raw[280:328]), dtype=np.float32).astype(np.float64)
    affine = np.eye(4)
    affine[:3, :] = srow.reshape(3, 4)
    if slope not in (0.0, 1.0) or inter != 0.0:
        sys.exit(f"{path}: scl_slope/scl_inter are not supported by this tool")
    np_type = {2: np.uint8, 4: np.int16, 512: np.uint16}.get(dtype)
    if np_type is None:
        sys.exit(f"{path}: datatype {dtype} not supported (uint8, int16, uint16)")
    nx, ny, nz = dim[1], dim[2], dim[3]
    data = np.frombuffer(raw, dtype=np.dtype(np_type).newbyteorder("<"), count=nx * ny * nz,
                         offset=vox_offset)
    return data.reshape(nz, ny, nx).astype(np.int64), affine


def fmt_ds(x):
    """A DS string of at most 16 characters, as precise as fits."""
    x = float(x)
    if x == 0:
        return "0"
    for p in range(16, 0, -1):
        s = ("%." + str(p) + "g") % x
        if len(s) <= 16:
            return s
    raise ValueError(x)


def ds_list(v):
    return [fmt_ds(x) for x in v]


class Geometry:
    """DICOM geometry of slice k after an in-plane rotation of the NIfTI grid."""

    def __init__(self, affine, shape, rotate):
        lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
        c0, c1, c2, o = lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3]
        nz, ny, nx = shape
        s0, s1 = np.linalg.norm(c0), np.linalg.norm(c1)
        r, c = c0 / s0, c1 / s1
        if rotate == 0:
            self.row, self.col, self.ps, start = r, c, (s1, s0), o
        elif rotate == 180:
            self.row, self.col, self.ps, start = -r, -c, (s1, s0), o + (nx - 1) * c0 + (ny - 1) * c1
        elif rotate == 90:
            self.row, self.col, self.ps, start = c, -r, (s0, s1), o + (nx - 1) * c0
        elif rotate == 270:
            self.row, self.col, self.ps, start = -c, r, (s0, s1), o + (ny - 1) * c1
        else:
            sys.exit("--rotate must be 0, 90, 180 or 270")
        self.rotate, self.start, self.step = rotate, start, c2
        self.thickness = float(np.linalg.norm(c2))

    def image(self, img):
        if self.rotate == 0:
            return img
        if self.rotate == 180:
            return img[::-1, ::-1]
        if self.rotate == 90:
            return img[:, ::-1].T
        return img[::-1, :].T

    def ipp(self, k, tilt=0.0):
        return self.start + k * self.step + k * tilt * self.row

    def iop(self):
        return ds_list(list(self.row) + list(self.col))


def style_of(style, kind):
    """(ImageType or FrameType values, series description, private ImageTypeText)."""
    if style == "siemens":
        v = {"water": "W", "fat": "F", "inphase": "IN_PHASE", "outphase": "OPP_PHASE"}[kind]
        d = {"water": "_W", "fat": "_F", "inphase": "_in", "outphase": "_opp"}[kind]
        return ["DERIVED", "PRIMARY", "DIXON", v], "t1_vibe_dixon_tra" + d, None
    if style == "siemens-xa":
        v = {"water": "WATER", "fat": "FAT", "inphase": "IN_PHASE", "outphase": "OPP_PHASE"}[kind]
        return ["DERIVED", "PRIMARY", "DIXON", "NONE"], "t1_vibe_dixon_tra", ["DIXON", v]
    if style in ("philips-mf", "philips-mf2"):
        v = {"water": "WATER", "fat": "FAT", "inphase": "IN_PHASE", "outphase": "OUT_PHASE"}[kind]
        return ["DERIVED", "PRIMARY", "DIXON", v], "mDIXON_TSE_tra", None
    if style == "philips-sf":
        v = {"water": "W", "fat": "F", "inphase": "IP", "outphase": "OP"}[kind]
        return ["DERIVED", "PRIMARY", v, v], "mDIXON_TSE_tra", None
    if style == "ge":
        d = {"water": "WATER", "fat": "FAT", "inphase": "InPhase", "outphase": "OutPhase"}[kind]
        return ["ORIGINAL", "PRIMARY", "OTHER"], d + ": Ax LAVA-Flex", None
    if style == "ge-ideal":
        d = {"water": "WATER", "fat": "FAT", "inphase": "IN PHASE", "outphase": "OUT PHASE"}[kind]
        return ["ORIGINAL", "PRIMARY", "OTHER"], "Ax IDEAL " + d, None
    if style == "echo":
        if kind not in ("inphase", "outphase"):
            sys.exit("style echo holds only inphase and outphase")
        return ["ORIGINAL", "PRIMARY", "M", "DIXON"], "t1_fl3d_dixon_2echo_tra", None
    sys.exit(f"unknown style {style}")


def manufacturer(style):
    if style.startswith("siemens") or style == "echo":
        return "SIEMENS"
    if style.startswith("philips"):
        return "Philips Medical Systems"
    return "GE MEDICAL SYSTEMS"


def base_dataset(a, sop_class, sop_uid, uids, series_uid, series_number, desc, style):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = ROOT + "1"
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = "20240102"
    ds.StudyTime = "101500"
    ds.AccessionNumber = a.accession
    ds.Modality = "MR"
    ds.Manufacturer = manufacturer(style)
    ds.ReferringPhysicianName = "Referrer^Doctor"
    ds.StudyDescription = "Lumbar spine"
    ds.SeriesDescription = desc
    ds.PatientName = a.patient_name
    ds.PatientID = a.patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.MagneticFieldStrength = "3"
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = str(series_number)
    ds.FrameOfReferenceUID = uids["for"]
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if a.signed_rescale else 0
    return ds


def pixel_bytes(img, a):
    if a.signed_rescale:
        stored = img - 100
        if stored.min() < -32768 or stored.max() > 32767:
            sys.exit("values do not fit int16 after the offset")
        return stored.astype("<i2").tobytes()
    if img.min() < 0 or img.max() > 65535:
        sys.exit("values do not fit uint16")
    return img.astype("<u2").tobytes()


def set_rescale(item, a):
    item.RescaleIntercept = "100" if a.signed_rescale else "0"
    item.RescaleSlope = "1"


class Writer:
    def __init__(self, a):
        self.a = a
        self.rng = random.Random(a.seed)
        self.files = []

    def path(self, label):
        a = self.a
        if not a.nested:
            return os.path.join(a.out, f"s{a.seed}_{label}.dcm")
        depth = self.rng.randint(1, 3)
        parts = ["%08x" % self.rng.getrandbits(32) for _ in range(depth)]
        name = "%012x" % self.rng.getrandbits(48)
        if self.rng.random() < 0.3:
            name += ".dcm"
        return os.path.join(a.out, *parts, name)

    def save(self, ds, label):
        p = self.path(label)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if self.a.rle:
            ds.compress(RLELossless)
        ds.save_as(p, write_like_original=False)
        self.files.append(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefix", required=True, help="NIfTI prefix: PREFIX_water.nii.gz, ...")
    ap.add_argument("--style", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--images", default="water,fat")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--nested", action="store_true")
    ap.add_argument("--shuffle", action="store_true")
    ap.add_argument("--rotate", type=int, default=0)
    ap.add_argument("--rle", action="store_true")
    ap.add_argument("--signed-rescale", action="store_true",
                    help="store value-100 as int16 with RescaleIntercept 100")
    ap.add_argument("--patient-name", default="Anonymous^Phantom")
    ap.add_argument("--patient-id", default="PHANTOM")
    ap.add_argument("--accession", default="A1")
    ap.add_argument("--drop-slice", type=int, default=-1)
    ap.add_argument("--duplicate-slice", type=int, default=-1)
    ap.add_argument("--conflict-slice", type=int, default=-1)
    ap.add_argument("--tilt", type=float, default=0.0, help="mm of in-plane shift per slice")
    a = ap.parse_args()

    kinds = [k for k in a.images.split(",") if k]
    for k in kinds:
        if k not in KINDS:
            sys.exit(f"unknown image {k}")
    vols, geo = {}, None
    for k in kinds:
        img, aff = read_nifti(f"{a.prefix}_{k}.nii.gz")
        vols[k] = img
        if geo is None:
            geo = Geometry(aff, img.shape, a.rotate)
    nz = next(iter(vols.values())).shape[0]
    ent = [str(a.seed), a.style, os.path.basename(a.prefix)]
    uids = {"study": generate_uid(ROOT, ent + ["study"]), "for": generate_uid(ROOT, ent + ["for"])}
    w = Writer(a)
    os.makedirs(a.out, exist_ok=True)
    order = list(range(nz))
    numbers = list(range(1, nz + 1))
    if a.shuffle:
        w.rng.shuffle(numbers)

    enhanced = a.style in ("philips-mf", "philips-mf2")
    one_series = a.style in ("philips-mf", "philips-sf", "echo")
    series_of = {}
    for i, k in enumerate(kinds):
        key = "all" if one_series else k
        if key not in series_of:
            series_of[key] = (generate_uid(ROOT, ent + ["series", key]), 100 + len(series_of) + 1)
        series_of[k] = series_of[key]

    if not enhanced:
        for k in kinds:
            itype, desc, itt = style_of(a.style, k)
            suid, snum = series_of[k]
            te = TE_3T[k]
            slices = [z for z in order if z != a.drop_slice]
            extra = []
            if k == kinds[0] and a.duplicate_slice >= 0:
                extra.append(("dup", a.duplicate_slice))
            if k == kinds[0] and a.conflict_slice >= 0:
                extra.append(("conflict", a.conflict_slice))
            for z, tag in [(z, None) for z in slices] + [(e[1], e[0]) for e in extra]:
                sop = generate_uid(ROOT, ent + ["sop", k, str(z)] + ([tag] if tag == "conflict" else []))
                ds = base_dataset(a, MR, sop, uids, suid, snum, desc, a.style)
                ds.ImageType = itype
                if itt:
                    ds.add_new(0x00210011, "LO", "SIEMENS MR SDI 02")
                    ds.add_new(0x00211175, "CS", itt)
                ds.EchoTime = fmt_ds(te)
                ds.RepetitionTime = "6.5"
                ds.FlipAngle = "10"
                ds.InstanceNumber = str(numbers[z] + (1000 if tag == "conflict" else 0))
                ds.ImagePositionPatient = ds_list(geo.ipp(z, a.tilt))
                ds.ImageOrientationPatient = geo.iop()
                ds.PixelSpacing = ds_list(geo.ps)
                ds.SliceThickness = fmt_ds(geo.thickness)
                ds.SpacingBetweenSlices = fmt_ds(geo.thickness)
                img = geo.image(vols[k][z])
                if tag == "conflict":
                    img = img[::-1, :]
                ds.Rows, ds.Columns = img.shape
                set_rescale(ds, a)
                ds.PixelData = pixel_bytes(np.ascontiguousarray(img), a)
                w.save(ds, f"{k}_{z}_{tag or ''}")
    else:
        groups = [kinds] if a.style == "philips-mf" else [[k] for k in kinds]
        for g in groups:
            suid, snum = series_of[g[0]]
            frames = [(k, z) for k in g for z in order if z != a.drop_slice]
            if a.shuffle:
                w.rng.shuffle(frames)
            sop = generate_uid(ROOT, ent + ["sop", "mf"] + g)
            ds = base_dataset(a, ENHANCED_MR, sop, uids, suid, snum, style_of(a.style, g[0])[1], a.style)
            ds.ImageType = ["DERIVED", "PRIMARY", "DIXON", "MIXED" if len(g) > 1 else style_of(a.style, g[0])[0][3]]
            ds.InstanceNumber = "1"
            ds.ContentDate = "20240102"
            ds.ContentTime = "101500"
            ds.NumberOfFrames = str(len(frames))
            img0 = geo.image(vols[g[0]][0])
            ds.Rows, ds.Columns = img0.shape
            shared = Dataset()
            pm = Dataset()
            pm.PixelSpacing = ds_list(geo.ps)
            pm.SliceThickness = fmt_ds(geo.thickness)
            pm.SpacingBetweenSlices = fmt_ds(geo.thickness)
            shared.PixelMeasuresSequence = Sequence([pm])
            po = Dataset()
            po.ImageOrientationPatient = geo.iop()
            shared.PlaneOrientationSequence = Sequence([po])
            pvt = Dataset()
            set_rescale(pvt, a)
            pvt.RescaleType = "US"
            shared.PixelValueTransformationSequence = Sequence([pvt])
            tm = Dataset()
            tm.RepetitionTime = "6.5"
            tm.FlipAngle = "10"
            shared.MRTimingAndRelatedParametersSequence = Sequence([tm])
            ds.SharedFunctionalGroupsSequence = Sequence([shared])
            per, pix = [], []
            for k, z in frames:
                f = Dataset()
                fc = Dataset()
                fc.InStackPositionNumber = z + 1
                fc.StackID = "1"
                f.FrameContentSequence = Sequence([fc])
                pp = Dataset()
                pp.ImagePositionPatient = ds_list(geo.ipp(z, a.tilt))
                f.PlanePositionSequence = Sequence([pp])
                ft = Dataset()
                ft.FrameType = style_of(a.style, k)[0]
                f.MRImageFrameTypeSequence = Sequence([ft])
                ec = Dataset()
                ec.EffectiveEchoTime = TE_3T[k]
                f.MREchoSequence = Sequence([ec])
                per.append(f)
                pix.append(pixel_bytes(np.ascontiguousarray(geo.image(vols[k][z])), a))
            ds.PerFrameFunctionalGroupsSequence = Sequence(per)
            ds.PixelData = b"".join(pix)
            w.save(ds, "mf_" + "_".join(g))

    if a.nested:
        # things a real export folder holds besides images
        with open(os.path.join(a.out, f"README_{a.seed}.txt"), "w") as f:
            f.write("exported images\n")
        junk = os.path.join(a.out, "%08x" % w.rng.getrandbits(32))
        os.makedirs(junk, exist_ok=True)
        with open(os.path.join(junk, "thumbs.db"), "wb") as f:
            f.write(bytes(w.rng.getrandbits(8) for _ in range(300)))
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
        meta.MediaStorageSOPInstanceUID = generate_uid(ROOT, ent + ["dicomdir"])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = ROOT + "1"
        dd = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
        dd.is_little_endian, dd.is_implicit_VR = True, False
        dd.FileSetID = "PHANTOM"
        dd.save_as(os.path.join(a.out, f"DICOMDIR_{a.seed}" if a.seed != 1 else "DICOMDIR"),
                   write_like_original=False)
    print(f"{a.out}: {len(w.files)} DICOM files ({a.style}, {','.join(kinds)})")


if __name__ == "__main__":
    main()
