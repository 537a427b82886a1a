#!/usr/bin/env python3
"""Independent check of a paraspinal DICOM Segmentation (and its secondary captures) with pydicom.

usage: check_seg.py SEG.dcm SOURCE_SERIES_DIR [DSEG.nii.gz] [SC.dcm ...]

- the SEG is a binary Segmentation Storage object with 1-4 segments labelled MF_L MF_R ES_L ES_R,
  coded as in the README (Tissue / 99PSP MF or SCT 44947003 with SCT laterality modifiers);
- it shares StudyInstanceUID, FrameOfReferenceUID and the patient module with the source series,
  has its own SeriesInstanceUID, and ReferencedSeriesSequence lists the source series and exactly
  its instances;
- every frame's derivation reference names a source image (and frame, for multi-frame sources)
  whose ImagePositionPatient and ImageOrientationPatient equal the frame's;
- with DSEG.nii.gz (the same run's label map): every frame holds exactly the voxels of its label on
  the NIfTI slice at the same position (bits unpacked from the SEG's PixelData by hand);
- every SC file is RGB Secondary Capture in the same study with BurnedInAnnotation NO.
Exit 0 when everything holds, 1 with one line per problem.
"""
import glob
import gzip
import os
import struct
import sys

import pydicom

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
LABELS = {"MF_L": 1, "MF_R": 2, "ES_L": 3, "ES_R": 4}
TYPES = {"MF": ("MF", "99PSP"), "ES": ("44947003", "SCT")}
problems = []


def problem(msg):
    problems.append(msg)
    print("FAIL: " + msg)


def fl(v):
    return [float(x) for x in v]


def close(a, b, tol=1e-4):
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def source_geometry(src_dir):
    """SOP Instance UID -> {frame number (0 = single frame): (IPP, IOP)} and header of one file."""
    geo, head = {}, None
    for f in sorted(glob.glob(os.path.join(src_dir, "**", "*"), recursive=True)):
        if not os.path.isfile(f):
            continue
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception:
            continue
        head = head or ds
        uid = str(ds.SOPInstanceUID)
        if "PerFrameFunctionalGroupsSequence" in ds:
            iop = fl(ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient)
            geo[uid] = {n + 1: (fl(pf.PlanePositionSequence[0].ImagePositionPatient), iop)
                        for n, pf in enumerate(ds.PerFrameFunctionalGroupsSequence)}
        else:
            geo[uid] = {0: (fl(ds.ImagePositionPatient), fl(ds.ImageOrientationPatient))}
    return geo, head


def read_nifti(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dim = struct.unpack_from("<8h", raw, 40)
    datatype = struct.unpack_from("<h", raw, 70)[0]
    off = int(struct.unpack_from("<f", raw, 108)[0])
    srow = [struct.unpack_from("<4f", raw, 280 + 16 * r) for r in range(3)]
    n = dim[1] * dim[2] * dim[3]
    vals = struct.unpack_from("<%d%s" % (n, {2: "B", 4: "h", 512: "H"}[datatype]), raw, off)
    return dim[1:4], srow, vals


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    seg_path, src_dir = sys.argv[1], sys.argv[2]
    rest = sys.argv[3:]
    dseg = rest.pop(0) if rest and rest[0].endswith(".nii.gz") else None
    seg = pydicom.dcmread(seg_path)
    geo, src = source_geometry(src_dir)
    if src is None:
        raise SystemExit(f"{src_dir}: no DICOM files")
    if str(seg.SOPClassUID) != SEG_CLASS or seg.Modality != "SEG" or seg.SegmentationType != "BINARY":
        problem(f"{seg_path}: not a binary SEG ({seg.SOPClassUID}, {seg.Modality})")
    for key in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientName", "PatientID",
                "PatientBirthDate", "AccessionNumber"):
        if str(getattr(seg, key, "")) != str(getattr(src, key, "")):
            problem(f"{seg_path}: {key} {getattr(seg, key, '')!r} differs from the source")
    if str(seg.SeriesInstanceUID) == str(src.SeriesInstanceUID):
        problem(f"{seg_path}: reuses the source SeriesInstanceUID")
    refs = seg.ReferencedSeriesSequence
    if len(refs) != 1 or str(refs[0].SeriesInstanceUID) != str(src.SeriesInstanceUID):
        problem(f"{seg_path}: ReferencedSeriesSequence does not name the source series")
    else:
        listed = {str(i.ReferencedSOPInstanceUID) for i in refs[0].ReferencedInstanceSequence}
        if listed != set(geo):
            problem(f"{seg_path}: ReferencedInstanceSequence lists {len(listed)} instances, "
                    f"the source has {len(geo)}")
    segments = {}
    for s in seg.SegmentSequence:
        label = str(s.SegmentLabel)
        cat = s.SegmentedPropertyCategoryCodeSequence[0]
        typ = s.SegmentedPropertyTypeCodeSequence[0]
        mod = typ.SegmentedPropertyTypeModifierCodeSequence[0]
        want_type = TYPES.get(label[:2])
        want_side = ("7771000", "Left") if label.endswith("_L") else ("24028007", "Right")
        if (label not in LABELS or str(cat.CodeValue) != "85756007" or want_type is None
                or (str(typ.CodeValue), str(typ.CodingSchemeDesignator)) != want_type
                or (str(mod.CodeValue), str(mod.CodeMeaning)) != want_side):
            problem(f"{seg_path}: segment {label!r} is not coded as documented")
        segments[int(s.SegmentNumber)] = LABELS.get(label, 0)
    if not 1 <= len(segments) <= 4:
        problem(f"{seg_path}: {len(segments)} segments")
    rows, cols, nfr = int(seg.Rows), int(seg.Columns), int(seg.NumberOfFrames)
    iop = fl(seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient)
    bits = seg.PixelData
    if len(bits) < (rows * cols * nfr + 7) // 8:
        problem(f"{seg_path}: PixelData too short for {nfr} frames")
    nifti = read_nifti(dseg) if dseg else None
    checked = 0
    for n, pf in enumerate(seg.PerFrameFunctionalGroupsSequence):
        ipp = fl(pf.PlanePositionSequence[0].ImagePositionPatient)
        ref = pf.DerivationImageSequence[0].SourceImageSequence[0]
        uid = str(ref.ReferencedSOPInstanceUID)
        frame = int(ref.ReferencedFrameNumber) if "ReferencedFrameNumber" in ref else 0
        sgeo = geo.get(uid, {}).get(frame)
        if sgeo is None:
            problem(f"{seg_path}: frame {n + 1} references an unknown source image {uid} / {frame}")
            continue
        if not close(ipp, sgeo[0]) or not close(iop, sgeo[1]):
            problem(f"{seg_path}: frame {n + 1} at {ipp} but its source image is at {sgeo[0]}")
        if nifti is None:
            continue
        (nx, ny, nz), srow, vals = nifti
        # the NIfTI slice whose centre is at the frame's position (RAS = LPS with x, y negated)
        ras = [-ipp[0], -ipp[1], ipp[2]]
        k = min(range(nz), key=lambda kk: sum((srow[a][2] * kk + srow[a][3] - ras[a]) ** 2 for a in range(3)))
        if sum((srow[a][2] * k + srow[a][3] - ras[a]) ** 2 for a in range(3)) > 1e-4:
            problem(f"{seg_path}: frame {n + 1}: no slice of {dseg} at its position")
            continue
        label = segments[int(pf.SegmentIdentificationSequence[0].ReferencedSegmentNumber)]
        want = sum(1 for p in range(nx * ny) if vals[k * nx * ny + p] == label)
        first = n * rows * cols
        got = sum((bits[(first + p) >> 3] >> ((first + p) & 7)) & 1 for p in range(rows * cols))
        if got != want:
            problem(f"{seg_path}: frame {n + 1} (label {label}, slice {k}) has {got} voxels, "
                    f"{dseg} has {want}")
        checked += 1
    for sc_path in rest:
        sc = pydicom.dcmread(sc_path, stop_before_pixels=True)
        if (str(sc.SOPClassUID) != SC_CLASS or sc.PhotometricInterpretation != "RGB"
                or str(sc.StudyInstanceUID) != str(src.StudyInstanceUID)
                or sc.BurnedInAnnotation != "NO" or str(sc.PatientID) != str(src.PatientID)):
            problem(f"{sc_path}: not an RGB secondary capture in the source study")
    print(f"{seg_path}: {len(segments)} segments, {nfr} frames, {len(geo)} source instances, "
          f"{checked} frames compared voxel by voxel, {len(rest)} secondary captures")
    if problems:
        print(f"{len(problems)} problems")
        sys.exit(1)


if __name__ == "__main__":
    main()
