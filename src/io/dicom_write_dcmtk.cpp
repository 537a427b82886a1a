/*
 * DESIGN: the DICOM writing bridge, a narrow extern "C" layer over DCMTK
 * (dcmdata for MR images and Secondary Capture, dcmseg/dcmfg/dcmiod for the
 * Segmentation, the RLE and JPEG-LS encoders for compressed transfer
 * syntaxes). C++ stays inside this file: every entry catches all exceptions
 * and turns DCMTK conditions into psp_error messages naming the file.
 *
 * Geometry: the caller's grid is the file's own voxel order (i = columns,
 * j = rows, k = slices) with a voxel-to-world affine in NIfTI RAS+; DICOM
 * patient coordinates are LPS, so x and y change sign. Row direction =
 * affine column 0 / |column 0|, column direction = affine column 1 / its norm,
 * PixelSpacing = (row spacing |col 1|, column spacing |col 0|), slice k at
 * ImagePositionPatient = affine * (0, 0, k). Decimal strings keep up to 16
 * characters (the DS limit), so a reader rebuilds the grid to ~1e-13.
 * Sheared or tilted grids (slices not along the normal) cannot be
 * expressed as DICOM image planes and are refused.
 *
 * Vendor conventions (what the phantom writes so that the DICOM reader's
 * pairing rules meet each vendor's habits): Siemens ImageType
 * ORIGINAL\PRIMARY\DIXON\W|F|IN_PHASE|OPP_PHASE (FF: DERIVED\...\FF) with
 * descriptions "..._W", "_F", "_in", "_opp", "_FF"; Philips
 * ...\DIXON\WATER|FAT|IN_PHASE|OUT_PHASE|FAT_FRACTION as ImageType (and
 * FrameType when multi-frame) with one protocol name as description for
 * every series; GE IDEAL with ImageType ORIGINAL\PRIMARY\OTHER and the
 * image in the description ("WATER: Ax T1 IDEAL", "FAT: ", "InPhase: ",
 * "OutPhase: ", "FAT FRACTION: "). Echo times: opposed-phase and water/fat take
 * the first echo, in-phase the second.
 *
 * Segmentation: DcmSegmentation::createBinarySegmentation, one segment per
 * label present; category Tissue (SCT 85756007); erector spinae as SCT
 * 44947003 "Erector spinae muscle" (DICOM CID 6116, muscular anatomy);
 * multifidus has no code in the DICOM context groups and no SNOMED code we
 * could verify, so it is coded in a local scheme, 99PSP "MF" "Multifidus
 * muscle" (documented in the README); laterality as a type modifier (SCT
 * 7771000 Left, 24028007 Right). Frames are the slices where a segment is
 * present, each with Plane Position, Frame Content (segment, position) and
 * a Derivation Image reference to its source slice (and frame);
 * ReferencedSeriesSequence lists the source series. Colours: the QC colours
 * as CIELab. Secondary Capture: RGB, ConversionType WSD, Modality OT,
 * SourceImageSequence = the slice shown.
 *
 * Determinism: no clock and no random UID inside; the callers give UIDs
 * (psp_dicom_uid_derive: content-derived 2.25 UIDs) and dates.
 */
extern "C" {
#include "core/internal.h"
}
#include "io/dicom_write.h"

#include "dcmtk/config/osconfig.h"

#include "dcmtk/dcmdata/dcdict.h"
#include "dcmtk/dcmdata/dcrleerg.h"
#include "dcmtk/dcmdata/dctk.h"
#include "dcmtk/dcmfg/fgderimg.h"
#include "dcmtk/dcmfg/fgfracon.h"
#include "dcmtk/dcmfg/fgpixmsr.h"
#include "dcmtk/dcmfg/fgplanor.h"
#include "dcmtk/dcmfg/fgplanpo.h"
#include "dcmtk/dcmiod/cielabutil.h"
#include "dcmtk/dcmiod/iodreferences.h"
#include "dcmtk/dcmjpls/djencode.h"
#include "dcmtk/dcmjpls/djrparam.h"
#include "dcmtk/dcmseg/segdoc.h"
#include "dcmtk/dcmseg/segment.h"
#include "dcmtk/oflog/oflog.h"

#include <nettle/sha2.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

struct Failure {
  psp_status code;
  std::string msg;
};

[[noreturn]] void fail(psp_status code, const std::string &msg) {
  throw Failure{code, msg};
}

void check(const OFCondition &c, const std::string &what) {
  if (c.bad()) fail(PSP_ERR_INTERNAL, what + ": " + c.text());
}

void setup(bool verbose) {
  OFLog::configure(verbose ? OFLogger::WARN_LOG_LEVEL : OFLogger::FATAL_LOG_LEVEL);
  if (!dcmDataDict.isDictionaryLoaded())
    fail(PSP_ERR_UNSUPPORTED, "DCMTK's data dictionary is not loaded (is the dcmtk data "
                              "package installed, or DCMDICTPATH set?)");
}

/* DICOM DS: the most precise decimal string of at most 16 characters. */
std::string ds(double v) {
  if (v == 0.0) return "0";
  char buf[64];
  for (int p = 16; p >= 1; p--) {
    snprintf(buf, sizeof buf, "%.*g", p, v);
    if (strlen(buf) <= 16) return buf;
  }
  fail(PSP_ERR_INTERNAL, "cannot format a decimal string");
}

std::string join(const std::vector<std::string> &v) {
  std::string s;
  for (size_t i = 0; i < v.size(); i++)
    s += (i ? "\\" : "") + v[i];
  return s;
}

void put(DcmItem &it, const DcmTagKey &tag, const std::string &v) {
  check(it.putAndInsertString(tag, v.c_str()), std::string("setting ") + DcmTag(tag).getTagName());
}

void put_u16(DcmItem &it, const DcmTagKey &tag, Uint16 v) {
  check(it.putAndInsertUint16(tag, v), std::string("setting ") + DcmTag(tag).getTagName());
}

DcmItem &seq_item(DcmItem &parent, const DcmTagKey &seq, long pos = -2) {
  DcmItem *item = NULL;
  check(parent.findOrCreateSequenceItem(seq, item, pos),
        std::string("creating ") + DcmTag(seq).getTagName());
  return *item;
}

/* ------------------------------------------------------------------------ */
/* Geometry                                                                  */
/* ------------------------------------------------------------------------ */

struct Geometry {
  int rows, cols, slices;
  double row_dir[3], col_dir[3]; /* LPS unit vectors */
  double dx, dy, dz;             /* column spacing, row spacing, slice step */
  double normal[3];
  std::string iop, spacing, thickness;
  std::vector<std::string> ipp; /* per slice */
  std::vector<double> location; /* per slice: IPP . normal */
};

Geometry geometry(const psp_dicom_grid &g, const char *name) {
  Geometry G;
  if (g.dims[0] < 1 || g.dims[1] < 1 || g.dims[2] < 1 || g.dims[0] > 65535 || g.dims[1] > 65535 ||
      g.dims[2] > 2147483647)
    fail(PSP_ERR_LIMIT, std::string(name) + ": DICOM images hold 1..65535 rows and columns");
  G.cols = (int)g.dims[0];
  G.rows = (int)g.dims[1];
  G.slices = (int)g.dims[2];
  double c[3][3]; /* LPS columns of the affine */
  for (int a = 0; a < 3; a++)
    for (int r = 0; r < 3; r++)
      c[a][r] = (r < 2 ? -1.0 : 1.0) * g.affine[r][a];
  double n[3];
  for (int a = 0; a < 3; a++)
    n[a] = std::sqrt(c[a][0] * c[a][0] + c[a][1] * c[a][1] + c[a][2] * c[a][2]);
  if (!(n[0] > 0 && n[1] > 0 && n[2] > 0) || !std::isfinite(n[0] + n[1] + n[2]))
    fail(PSP_ERR_GEOMETRY, std::string(name) + ": zero or invalid voxel spacing");
  G.dx = n[0];
  G.dy = n[1];
  G.dz = n[2];
  for (int r = 0; r < 3; r++) {
    G.row_dir[r] = c[0][r] / n[0];
    G.col_dir[r] = c[1][r] / n[1];
  }
  double dot =
      G.row_dir[0] * G.col_dir[0] + G.row_dir[1] * G.col_dir[1] + G.row_dir[2] * G.col_dir[2];
  if (std::fabs(dot) > 1e-4)
    fail(PSP_ERR_GEOMETRY, std::string(name) + ": rows and columns are not perpendicular (a "
                                               "sheared grid cannot be written as DICOM images)");
  G.normal[0] = G.row_dir[1] * G.col_dir[2] - G.row_dir[2] * G.col_dir[1];
  G.normal[1] = G.row_dir[2] * G.col_dir[0] - G.row_dir[0] * G.col_dir[2];
  G.normal[2] = G.row_dir[0] * G.col_dir[1] - G.row_dir[1] * G.col_dir[0];
  double along = (c[2][0] * G.normal[0] + c[2][1] * G.normal[1] + c[2][2] * G.normal[2]) / n[2];
  if (G.slices > 1 && std::fabs(std::fabs(along) - 1.0) > 1e-4)
    fail(PSP_ERR_GEOMETRY, std::string(name) + ": the slices are not stacked along the image "
                                               "normal (tilted stack); not expressible as DICOM "
                                               "image planes");
  G.iop = join({ds(G.row_dir[0]), ds(G.row_dir[1]), ds(G.row_dir[2]), ds(G.col_dir[0]),
                ds(G.col_dir[1]), ds(G.col_dir[2])});
  G.spacing = join({ds(G.dy), ds(G.dx)});
  G.thickness = ds(G.dz);
  for (int k = 0; k < G.slices; k++) {
    double p[3];
    for (int r = 0; r < 3; r++)
      p[r] = (r < 2 ? -1.0 : 1.0) * (g.affine[r][2] * k + g.affine[r][3]);
    G.ipp.push_back(join({ds(p[0]), ds(p[1]), ds(p[2])}));
    G.location.push_back(p[0] * G.normal[0] + p[1] * G.normal[1] + p[2] * G.normal[2]);
  }
  return G;
}

/* ------------------------------------------------------------------------ */
/* Patient / study modules                                                   */
/* ------------------------------------------------------------------------ */

bool valid_utf8(const std::string &s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = (unsigned char)s[i];
    int n = c < 0x80 ? 0 : (c >> 5) == 6 ? 1 : (c >> 4) == 14 ? 2 : (c >> 3) == 30 ? 3 : -1;
    if (n < 0 || i + (size_t)n >= s.size() + (n == 0)) return false;
    for (int k = 1; k <= n; k++)
      if ((((unsigned char)s[i + (size_t)k]) >> 6) != 2) return false;
    i += (size_t)n + 1;
  }
  return true;
}

/* SpecificCharacterSet for the source's texts: none when ASCII, UTF-8 when
 * they are valid UTF-8, else Latin-1 (the most common single-byte set). */
void put_charset(DcmItem &d, const psp_dicom_source *s) {
  std::string all = std::string(s->patient_name) + s->referring_physician + s->study_description +
                    s->patient_id + s->study_id + s->accession_number;
  bool ascii = true;
  for (unsigned char ch : all)
    ascii = ascii && ch < 0x80;
  if (!ascii) put(d, DCM_SpecificCharacterSet, valid_utf8(all) ? "ISO_IR 192" : "ISO_IR 100");
}

void put_patient_study(DcmItem &d, const psp_dicom_source *s) {
  put_charset(d, s);
  put(d, DCM_PatientName, s->patient_name);
  put(d, DCM_PatientID, s->patient_id);
  put(d, DCM_PatientBirthDate, s->patient_birth_date);
  put(d, DCM_PatientSex, s->patient_sex);
  put(d, DCM_StudyInstanceUID, s->study_uid);
  put(d, DCM_StudyDate, s->study_date);
  put(d, DCM_StudyTime, s->study_time);
  put(d, DCM_ReferringPhysicianName, s->referring_physician);
  put(d, DCM_StudyID, s->study_id);
  put(d, DCM_AccessionNumber, s->accession_number);
  if (s->study_description[0]) put(d, DCM_StudyDescription, s->study_description);
}

/* Saves to path + ".part" and renames. */
void save(DcmFileFormat &ff, const char *path, E_TransferSyntax xfer) {
  std::string tmp = std::string(path) + ".part";
  OFCondition c = ff.saveFile(tmp.c_str(), xfer);
  if (c.bad()) {
    unlink(tmp.c_str());
    fail(PSP_ERR_IO, std::string(path) + ": cannot write: " + c.text());
  }
  if (rename(tmp.c_str(), path) != 0) {
    int e = errno;
    unlink(tmp.c_str());
    fail(PSP_ERR_IO, std::string(path) + ": cannot move into place: " + strerror(e));
  }
}

bool entry(psp_error **err, const char *what, void (*body)(const void *, const char *),
           const void *arg, const char *path) {
  try {
    body(arg, path);
    return true;
  } catch (const Failure &f) {
    return psp_error_set(err, f.code, "%s", f.msg.c_str());
  } catch (const std::bad_alloc &) {
    return psp_error_set(err, PSP_ERR_NOMEM, "%s: out of memory writing %s", path, what);
  } catch (const std::exception &e) {
    return psp_error_set(err, PSP_ERR_INTERNAL, "%s: writing %s failed: %s", path, what, e.what());
  } catch (...) {
    return psp_error_set(err, PSP_ERR_INTERNAL, "%s: writing %s failed", path, what);
  }
}

/* ------------------------------------------------------------------------ */
/* Image series                                                              */
/* ------------------------------------------------------------------------ */

struct Vendor {
  const char *manufacturer, *model, *field, *protocol;
  double te1, te2; /* opposed-phase and in-phase echo times (ms) */
};

const Vendor VENDORS[3] = {
    {"SIEMENS", "MAGNETOM Vida", "1.5", "t1_vibe_dixon_tra", 2.39, 4.77},
    {"Philips", "Ingenia", "3", "sT1W_mDIXON_TRA", 1.15, 2.30},
    {"GE MEDICAL SYSTEMS", "SIGNA Architect", "1.5", "Ax T1 IDEAL", 2.20, 4.40},
};

/* ImageType value 4 (Siemens, Philips) per image. */
const char *const SIEMENS_TYPE[PSP_DICOM_IMAGE_COUNT] = {"W", "F", "IN_PHASE", "OPP_PHASE", "FF"};
const char *const SIEMENS_SUFFIX[PSP_DICOM_IMAGE_COUNT] = {"_W", "_F", "_in", "_opp", "_FF"};
const char *const PHILIPS_TYPE[PSP_DICOM_IMAGE_COUNT] = {"WATER", "FAT", "IN_PHASE", "OUT_PHASE",
                                                         "FAT_FRACTION"};
const char *const GE_PREFIX[PSP_DICOM_IMAGE_COUNT] = {
    "WATER: ", "FAT: ", "InPhase: ", "OutPhase: ", "FAT FRACTION: "};

bool derived(psp_dicom_image im) {
  return im == PSP_DICOM_WATER || im == PSP_DICOM_FAT || im == PSP_DICOM_FF;
}

std::string image_type(const psp_dicom_series_desc *s) {
  if (s->vendor == PSP_VENDOR_GE) return "ORIGINAL\\PRIMARY\\OTHER";
  std::string first =
      (s->vendor == PSP_VENDOR_SIEMENS && s->image != PSP_DICOM_FF) || !derived(s->image)
          ? "ORIGINAL"
          : "DERIVED";
  const char *v4 =
      s->vendor == PSP_VENDOR_SIEMENS ? SIEMENS_TYPE[s->image] : PHILIPS_TYPE[s->image];
  return first + "\\PRIMARY\\DIXON\\" + v4;
}

std::string description(const psp_dicom_series_desc *s) {
  const Vendor &v = VENDORS[s->vendor];
  if (s->vendor == PSP_VENDOR_SIEMENS) return std::string(v.protocol) + SIEMENS_SUFFIX[s->image];
  if (s->vendor == PSP_VENDOR_GE) return std::string(GE_PREFIX[s->image]) + v.protocol;
  return v.protocol;
}

double echo_time(const psp_dicom_series_desc *s) {
  return s->image == PSP_DICOM_INPHASE ? VENDORS[s->vendor].te2 : VENDORS[s->vendor].te1;
}

struct Stored {
  bool is_signed = false;
  std::string slope = "1", intercept = "0";
  int bits_stored = 16;
  std::vector<Uint16> px;
};

Stored quantise(const float *data, size_t n, const char *name) {
  double lo = INFINITY, hi = -INFINITY;
  bool integral = true;
  for (size_t i = 0; i < n; i++) {
    double v = data[i];
    if (!std::isfinite(v)) fail(PSP_ERR_DATA, std::string(name) + ": NaN or infinite voxel values");
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
    integral = integral && v == std::floor(v);
  }
  Stored st;
  double slope = 1.0, icpt = 0.0;
  if (integral && lo >= 0 && hi <= 65535) {
  } else if (integral && lo >= -32768 && hi <= 32767) {
    st.is_signed = true;
  } else {
    /* the finest decimal slope 10^-d that keeps the range in 16 bits */
    int best = -1;
    st.is_signed = lo < 0;
    double lim = st.is_signed ? 32767.0 : 65535.0, mag = std::fmax(std::fabs(lo), std::fabs(hi));
    for (int d = 0; d <= 8; d++)
      if (mag / std::pow(10.0, -d) <= lim) best = d;
    if (best >= 0) {
      slope = std::pow(10.0, -best);
      char b[32];
      snprintf(b, sizeof b, "%.*f", best, slope);
      st.slope = b;
    } else { /* too wide for a decimal slope: a linear map of the range */
      st.is_signed = false;
      slope = (hi - lo) / 65535.0;
      icpt = lo;
      st.slope = ds(slope);
      st.intercept = ds(icpt);
      slope = std::stod(st.slope);
      icpt = std::stod(st.intercept);
    }
  }
  st.px.resize(n);
  long maxv = 0;
  for (size_t i = 0; i < n; i++) {
    long q = std::lround((data[i] - icpt) / slope);
    if (st.is_signed) {
      q = q < -32768 ? -32768 : q > 32767 ? 32767 : q;
      st.px[i] = (Uint16)(Sint16)q;
    } else {
      q = q < 0 ? 0 : q > 65535 ? 65535 : q;
      st.px[i] = (Uint16)q;
      maxv = q > maxv ? q : maxv;
    }
  }
  if (!st.is_signed) {
    int bits = 1;
    while ((1L << bits) <= maxv)
      bits++;
    st.bits_stored = bits < 12 ? 12 : bits;
  }
  return st;
}

E_TransferSyntax codec_xfer(psp_dicom_codec c) {
  return c == PSP_CODEC_RLE      ? EXS_RLELossless
         : c == PSP_CODEC_JPEGLS ? EXS_JPEGLSLossless
                                 : EXS_LittleEndianExplicit;
}

/* The encoder of a codec, registered with DCMTK while in scope (DCMTK's
 * codec list is process-wide; only this file registers encoders, and it
 * writes one object at a time). */
struct EncoderScope {
  psp_dicom_codec c;
  explicit EncoderScope(psp_dicom_codec codec) : c(codec) {
    if (c == PSP_CODEC_RLE) DcmRLEEncoderRegistration::registerCodecs();
    /* raw (not "cooked") encoder mode, as dcmcjpls does: DCMTK 3.6.7's cooked
     * mode writes signed 16-bit frames its own decoder rejects */
    if (c == PSP_CODEC_JPEGLS) DJLSEncoderRegistration::registerCodecs(0, 0, 0, 0, OFFalse);
  }
  ~EncoderScope() {
    if (c == PSP_CODEC_RLE) DcmRLEEncoderRegistration::cleanup();
    if (c == PSP_CODEC_JPEGLS) DJLSEncoderRegistration::cleanup();
  }
  EncoderScope(const EncoderScope &) = delete;
  EncoderScope &operator=(const EncoderScope &) = delete;
};

/* Re-encodes the pixel data in the codec's transfer syntax. */
void compress(DcmDataset &d, psp_dicom_codec c, const char *path) {
  if (c == PSP_CODEC_NONE) return;
  E_TransferSyntax x = codec_xfer(c);
  EncoderScope scope(c);
  DJLSRepresentationParameter lossless(2, OFTrue);
  OFCondition cond = d.chooseRepresentation(x, c == PSP_CODEC_JPEGLS ? &lossless : NULL);
  if (cond.bad() || !d.canWriteXfer(x))
    fail(PSP_ERR_INTERNAL, std::string(path) + ": compressing to " + DcmXfer(x).getXferName() +
                               " failed: " + cond.text());
}

void put_common_series(DcmDataset &d, const psp_dicom_series_desc *s, const Geometry &G,
                       const Stored &st, const char *sop_class) {
  const Vendor &v = VENDORS[s->vendor];
  const psp_dicom_source *src = s->src;
  put(d, DCM_SOPClassUID, sop_class);
  put_patient_study(d, src);
  put(d, DCM_Modality, "MR");
  put(d, DCM_SeriesInstanceUID, src->series_uid);
  put(d, DCM_SeriesNumber, std::to_string(s->series_number));
  put(d, DCM_SeriesDescription, description(s));
  put(d, DCM_ProtocolName, v.protocol);
  put(d, DCM_SeriesDate, src->study_date);
  put(d, DCM_SeriesTime, src->study_time);
  put(d, DCM_BodyPartExamined, "LSPINE");
  put(d, DCM_PatientPosition, "HFS");
  put(d, DCM_FrameOfReferenceUID, src->frame_of_reference_uid);
  put(d, DCM_PositionReferenceIndicator, "");
  put(d, DCM_Manufacturer, v.manufacturer);
  put(d, DCM_ManufacturerModelName, v.model);
  put(d, DCM_SoftwareVersions, s->software_version ? s->software_version : "");
  put(d, DCM_MagneticFieldStrength, v.field);
  put(d, DCM_ImageType, image_type(s));
  put(d, DCM_ContentDate, src->study_date);
  put(d, DCM_ContentTime, src->study_time);
  put(d, DCM_AcquisitionNumber, "1");
  put(d, DCM_BurnedInAnnotation, "NO");
  put(d, DCM_LossyImageCompression, "00");
  put(d, DCM_ScanningSequence, "GR");
  put(d, DCM_SequenceVariant, "SP");
  put(d, DCM_MRAcquisitionType, "3D");
  put(d, DCM_ImagedNucleus, "1H");
  put(d, DCM_ImageComments, "paraspinal synthetic phantom (not a patient)");
  put_u16(d, DCM_SamplesPerPixel, 1);
  put(d, DCM_PhotometricInterpretation, "MONOCHROME2");
  put_u16(d, DCM_Rows, (Uint16)G.rows);
  put_u16(d, DCM_Columns, (Uint16)G.cols);
  put_u16(d, DCM_BitsAllocated, 16);
  put_u16(d, DCM_BitsStored, (Uint16)st.bits_stored);
  put_u16(d, DCM_HighBit, (Uint16)(st.bits_stored - 1));
  put_u16(d, DCM_PixelRepresentation, st.is_signed ? 1 : 0);
}

void write_series_single(const psp_dicom_series_desc *s, const char *dir, const Geometry &G,
                         const Stored &st) {
  size_t plane = (size_t)G.rows * (size_t)G.cols;
  for (int k = 0; k < G.slices; k++) {
    DcmFileFormat ff;
    DcmDataset &d = *ff.getDataset();
    put_common_series(d, s, G, st, UID_MRImageStorage);
    std::string sop = std::string(s->src->series_uid) + "." + std::to_string(k + 1);
    put(d, DCM_SOPInstanceUID, sop);
    put(d, DCM_InstanceNumber, std::to_string(k + 1));
    put(d, DCM_ImagePositionPatient, G.ipp[(size_t)k]);
    put(d, DCM_ImageOrientationPatient, G.iop);
    put(d, DCM_PixelSpacing, G.spacing);
    put(d, DCM_SliceThickness, G.thickness);
    put(d, DCM_SpacingBetweenSlices, G.thickness);
    put(d, DCM_SliceLocation, ds(G.location[(size_t)k]));
    put(d, DCM_EchoTime, ds(echo_time(s)));
    put(d, DCM_RepetitionTime, "6.5");
    put(d, DCM_FlipAngle, "10");
    put(d, DCM_EchoTrainLength, "2");
    put(d, DCM_RescaleIntercept, st.intercept);
    put(d, DCM_RescaleSlope, st.slope);
    put(d, DCM_RescaleType, "US");
    check(d.putAndInsertUint16Array(DCM_PixelData, st.px.data() + plane * (size_t)k,
                                    (unsigned long)plane),
          "setting PixelData");
    char name[32];
    snprintf(name, sizeof name, "IM%04d.dcm", k + 1);
    std::string path = std::string(dir) + "/" + name;
    compress(d, s->codec, path.c_str());
    save(ff, path.c_str(), codec_xfer(s->codec));
  }
}

void put_tag_pointer(DcmItem &it, const DcmTagKey &attr, const DcmTagKey &value) {
  check(it.putAndInsertTagKey(attr, value), std::string("setting ") + DcmTag(attr).getTagName());
}

void write_series_multi(const psp_dicom_series_desc *s, const char *dir, const Geometry &G,
                        const Stored &st) {
  DcmFileFormat ff;
  DcmDataset &d = *ff.getDataset();
  put_common_series(d, s, G, st, UID_EnhancedMRImageStorage);
  std::string sop = std::string(s->src->series_uid) + ".1";
  put(d, DCM_SOPInstanceUID, sop);
  put(d, DCM_InstanceNumber, "1");
  put(d, DCM_NumberOfFrames, std::to_string(G.slices));
  put(d, DCM_AcquisitionDateTime, std::string(s->src->study_date) + s->src->study_time);
  put(d, DCM_PixelPresentation, "MONOCHROME");
  put(d, DCM_VolumetricProperties, "VOLUME");
  put(d, DCM_VolumeBasedCalculationTechnique, "NONE");
  put(d, DCM_ComplexImageComponent, "MAGNITUDE");
  put(d, DCM_AcquisitionContrast, "T1");
  put(d, DCM_PresentationLUTShape, "IDENTITY");
  put(d, DCM_ContentQualification, "PRODUCT");
  put(d, DCM_ResonantNucleus, "1H");
  put(d, DCM_KSpaceFiltering, "NONE");
  put(d, DCM_ApplicableSafetyStandardAgency, "IEC");
  /* shared functional groups */
  DcmItem &sh = seq_item(d, DCM_SharedFunctionalGroupsSequence, 0);
  DcmItem &pm = seq_item(sh, DCM_PixelMeasuresSequence, 0);
  put(pm, DCM_PixelSpacing, G.spacing);
  put(pm, DCM_SliceThickness, G.thickness);
  put(pm, DCM_SpacingBetweenSlices, G.thickness);
  put(seq_item(sh, DCM_PlaneOrientationSequence, 0), DCM_ImageOrientationPatient, G.iop);
  DcmItem &pv = seq_item(sh, DCM_PixelValueTransformationSequence, 0);
  put(pv, DCM_RescaleIntercept, st.intercept);
  put(pv, DCM_RescaleSlope, st.slope);
  put(pv, DCM_RescaleType, "US");
  DcmItem &ft = seq_item(sh, DCM_MRImageFrameTypeSequence, 0);
  put(ft, DCM_FrameType, image_type(s));
  put(ft, DCM_PixelPresentation, "MONOCHROME");
  put(ft, DCM_VolumetricProperties, "VOLUME");
  put(ft, DCM_VolumeBasedCalculationTechnique, "NONE");
  put(ft, DCM_ComplexImageComponent, "MAGNITUDE");
  put(ft, DCM_AcquisitionContrast, "T1");
  put(seq_item(sh, DCM_MREchoSequence, 0), DCM_EffectiveEchoTime, ds(echo_time(s)));
  DcmItem &tm = seq_item(sh, DCM_MRTimingAndRelatedParametersSequence, 0);
  put(tm, DCM_RepetitionTime, "6.5");
  put(tm, DCM_FlipAngle, "10");
  put(tm, DCM_EchoTrainLength, "2");
  /* dimensions: stack, position in the stack */
  std::string dim_uid = sop + ".1";
  put(seq_item(d, DCM_DimensionOrganizationSequence, 0), DCM_DimensionOrganizationUID, dim_uid);
  DcmItem &d1 = seq_item(d, DCM_DimensionIndexSequence, 0);
  put(d1, DCM_DimensionOrganizationUID, dim_uid);
  put_tag_pointer(d1, DCM_DimensionIndexPointer, DCM_StackID);
  put_tag_pointer(d1, DCM_FunctionalGroupPointer, DCM_FrameContentSequence);
  DcmItem &d2 = seq_item(d, DCM_DimensionIndexSequence, 1);
  put(d2, DCM_DimensionOrganizationUID, dim_uid);
  put_tag_pointer(d2, DCM_DimensionIndexPointer, DCM_InStackPositionNumber);
  put_tag_pointer(d2, DCM_FunctionalGroupPointer, DCM_FrameContentSequence);
  /* per-frame functional groups */
  for (int k = 0; k < G.slices; k++) {
    DcmItem &pf = seq_item(d, DCM_PerFrameFunctionalGroupsSequence, k);
    DcmItem &fc = seq_item(pf, DCM_FrameContentSequence, 0);
    put(fc, DCM_StackID, "1");
    check(fc.putAndInsertUint32(DCM_InStackPositionNumber, (Uint32)(k + 1)),
          "setting InStackPositionNumber");
    Uint32 div[2] = {1, (Uint32)(k + 1)};
    check(fc.putAndInsertUint32Array(DCM_DimensionIndexValues, div, 2),
          "setting DimensionIndexValues");
    put(seq_item(pf, DCM_PlanePositionSequence, 0), DCM_ImagePositionPatient, G.ipp[(size_t)k]);
  }
  check(d.putAndInsertUint16Array(DCM_PixelData, st.px.data(), (unsigned long)st.px.size()),
        "setting PixelData");
  std::string path = std::string(dir) + "/IM0001.dcm";
  compress(d, s->codec, path.c_str());
  save(ff, path.c_str(), codec_xfer(s->codec));
}

void series_body(const void *arg, const char *dir) {
  const psp_dicom_series_desc *s = static_cast<const psp_dicom_series_desc *>(arg);
  setup(s->verbose);
  if ((int)s->vendor < 0 || (int)s->vendor > 2 || (int)s->image < 0 ||
      (int)s->image >= PSP_DICOM_IMAGE_COUNT || !s->src || !s->data)
    fail(PSP_ERR_USAGE, std::string(dir) + ": invalid series description");
  Geometry G = geometry(s->grid, dir);
  size_t n = (size_t)G.rows * (size_t)G.cols * (size_t)G.slices;
  Stored st = quantise(s->data, n, dir);
  if (s->multiframe)
    write_series_multi(s, dir, G, st);
  else
    write_series_single(s, dir, G, st);
}

/* ------------------------------------------------------------------------ */
/* Segmentation                                                              */
/* ------------------------------------------------------------------------ */

struct SegmentDef {
  const char *label, *description;
  const char *type_code, *type_scheme, *type_meaning;
  bool left;
  Uint16 rgb[3];
};

/* Colours match the QC outlines (src/report/qc_png.c). */
const SegmentDef SEGMENTS[PSP_LABEL_COUNT] = {
    {"", "", "", "", "", false, {0, 0, 0}},
    {"MF_L", "left multifidus", "MF", "99PSP", "Multifidus muscle", true, {255, 150, 0}},
    {"MF_R", "right multifidus", "MF", "99PSP", "Multifidus muscle", false, {86, 180, 255}},
    {"ES_L",
     "left erector spinae",
     "44947003",
     "SCT",
     "Erector spinae muscle",
     true,
     {235, 110, 200}},
    {"ES_R",
     "right erector spinae",
     "44947003",
     "SCT",
     "Erector spinae muscle",
     false,
     {245, 235, 60}},
};

void seg_body(const void *arg, const char *path) {
  const psp_dicom_seg_desc *s = static_cast<const psp_dicom_seg_desc *>(arg);
  setup(s->verbose);
  if (!s->src || !s->labels || !s->ref_sop_uid || !s->ref_frame || !s->series_uid || !s->sop_uid)
    fail(PSP_ERR_USAGE, std::string(path) + ": invalid segmentation description");
  Geometry G = geometry(s->grid, path);
  const size_t plane = (size_t)G.rows * (size_t)G.cols;
  const psp_dicom_source *src = s->src;
  for (int k = 0; k < G.slices; k++)
    if (!s->ref_sop_uid[k] || !s->ref_sop_uid[k][0])
      fail(PSP_ERR_DATA,
           std::string(path) + ": no source image UID for slice " + std::to_string(k));

  IODGeneralEquipmentModule::EquipmentInfo eq("paraspinal", "paraspinal", "1",
                                              s->software_version ? s->software_version : "");
  ContentIdentificationMacro ci("1", "PARASPINAL", "multifidus and erector spinae", "paraspinal");
  DcmSegmentation *raw = NULL;
  check(DcmSegmentation::createBinarySegmentation(raw, (Uint16)G.rows, (Uint16)G.cols, eq, ci),
        std::string(path) + ": creating the segmentation");
  std::unique_ptr<DcmSegmentation> seg(raw);

  DcmItem study;
  put_patient_study(study, src);
  put(study, DCM_FrameOfReferenceUID, src->frame_of_reference_uid);
  put(study, DCM_PositionReferenceIndicator, "");
  check(seg->importHierarchy(study, OFTrue, OFTrue, OFTrue, OFFalse),
        std::string(path) + ": patient/study of the source");
  check(seg->getEquipment().setManufacturer("paraspinal"), "setting Manufacturer");
  check(seg->getSeries().setSeriesInstanceUID(s->series_uid), "setting SeriesInstanceUID");
  check(seg->getSeries().setSeriesNumber(std::to_string(s->series_number).c_str()),
        "setting SeriesNumber");
  check(seg->getSeries().setSeriesDescription("paraspinal muscles (SEG)"),
        "setting SeriesDescription");
  check(seg->getSOPCommon().setSOPInstanceUID(s->sop_uid), "setting SOPInstanceUID");
  check(seg->getGeneralImage().setContentDate(s->content_date), "setting ContentDate");
  check(seg->getGeneralImage().setContentTime(s->content_time), "setting ContentTime");

  std::string dim_uid = std::string(s->sop_uid) + ".1";
  IODMultiframeDimensionModule &dim = seg->getDimensions();
  check(dim.addDimensionIndex(DCM_ReferencedSegmentNumber, dim_uid.c_str(),
                              DCM_SegmentIdentificationSequence, "ReferencedSegmentNumber"),
        "dimension index (segment)");
  check(dim.addDimensionIndex(DCM_ImagePositionPatient, dim_uid.c_str(), DCM_PlanePositionSequence,
                              "ImagePositionPatient"),
        "dimension index (position)");

  FGPixelMeasures pm;
  check(pm.setPixelSpacing(G.spacing.c_str()), "PixelSpacing");
  check(pm.setSliceThickness(G.thickness.c_str()), "SliceThickness");
  check(pm.setSpacingBetweenSlices(G.thickness.c_str()), "SpacingBetweenSlices");
  check(seg->addForAllFrames(pm), "shared pixel measures");
  std::vector<std::string> iop;
  {
    std::string t = G.iop;
    size_t a = 0;
    for (int q = 0; q < 6; q++) {
      size_t b = t.find('\\', a);
      iop.push_back(t.substr(a, b == std::string::npos ? std::string::npos : b - a));
      a = b + 1;
    }
  }
  std::unique_ptr<FGPlaneOrientationPatient> po(
      FGPlaneOrientationPatient::createMinimal(iop[0], iop[1], iop[2], iop[3], iop[4], iop[5]));
  if (!po) fail(PSP_ERR_INTERNAL, std::string(path) + ": plane orientation");
  check(seg->addForAllFrames(*po), "shared plane orientation");

  std::vector<Uint8> frame(plane);
  int n_frames = 0;
  for (int l = 1; l < PSP_LABEL_COUNT; l++) {
    bool present = false;
    for (size_t i = 0; i < plane * (size_t)G.slices && !present; i++)
      present = s->labels[i] == l;
    if (!present) continue;
    const SegmentDef &def = SEGMENTS[l];
    DcmSegment *sraw = NULL;
    CodeSequenceMacro category("85756007", "SCT", "Tissue");
    CodeSequenceMacro type(def.type_code, def.type_scheme, def.type_meaning);
    check(DcmSegment::create(sraw, def.label, category, type,
                             s->automatic ? DcmSegTypes::SAT_AUTOMATIC : DcmSegTypes::SAT_MANUAL,
                             s->automatic ? "paraspinal" : ""),
          std::string(path) + ": segment " + def.label);
    std::unique_ptr<DcmSegment> segment(sraw);
    check(segment->setSegmentDescription(def.description), "SegmentDescription");
    CodeSequenceMacro *side = new CodeSequenceMacro(def.left ? "7771000" : "24028007", "SCT",
                                                    def.left ? "Left" : "Right");
    segment->getSegmentedPropertyTypeModifierCode().push_back(side);
    double L, a, b;
    IODCIELabUtil::rgb2DicomLab(L, a, b, def.rgb[0] / 255.0, def.rgb[1] / 255.0,
                                def.rgb[2] / 255.0);
    check(segment->setRecommendedDisplayCIELabValue((Uint16)std::lround(L), (Uint16)std::lround(a),
                                                    (Uint16)std::lround(b)),
          "RecommendedDisplayCIELabValue");
    Uint16 number = 0;
    check(seg->addSegment(segment.get(), number), std::string(path) + ": adding a segment");
    segment.release(); /* owned by the segmentation now */
    for (int k = 0; k < G.slices; k++) {
      const uint8_t *lab = s->labels + plane * (size_t)k;
      bool any = false;
      for (size_t i = 0; i < plane; i++) {
        frame[i] = lab[i] == l ? 1 : 0;
        any = any || frame[i];
      }
      if (!any) continue;
      std::vector<std::string> p;
      {
        std::string t = G.ipp[(size_t)k];
        size_t a0 = 0;
        for (int q = 0; q < 3; q++) {
          size_t b0 = t.find('\\', a0);
          p.push_back(t.substr(a0, b0 == std::string::npos ? std::string::npos : b0 - a0));
          a0 = b0 + 1;
        }
      }
      std::unique_ptr<FGPlanePosPatient> pos(FGPlanePosPatient::createMinimal(p[0], p[1], p[2]));
      FGFrameContent fc;
      check(fc.setDimensionIndexValues(number, 0), "DimensionIndexValues");
      check(fc.setDimensionIndexValues((Uint32)(k + 1), 1), "DimensionIndexValues");
      ImageSOPInstanceReferenceMacro *ref = NULL;
      check(ImageSOPInstanceReferenceMacro::create(src->sop_class_uid, s->ref_sop_uid[k], ref),
            std::string(path) + ": source image reference");
      /* addReferencedFrameNumber: DCMTK 3.6.7's create(..., frames, ...) and
       * setReferencedFrameNumber put a US value into the IS element and fail */
      if (s->ref_frame[k] > 0 && s->ref_frame[k] <= 65535) {
        OFCondition fc_ok = ref->addReferencedFrameNumber((Uint16)s->ref_frame[k]);
        if (fc_ok.bad()) delete ref;
        check(fc_ok, std::string(path) + ": source frame reference");
      }
      OFVector<ImageSOPInstanceReferenceMacro> refs;
      refs.push_back(*ref);
      delete ref;
      std::unique_ptr<FGDerivationImage> der(
          DcmSegmentation::createDerivationImageFG(refs, "paraspinal segmentation"));
      if (!pos || !der) fail(PSP_ERR_INTERNAL, std::string(path) + ": per-frame groups");
      OFVector<FGBase *> groups;
      groups.push_back(pos.get());
      groups.push_back(&fc);
      groups.push_back(der.get());
      check(seg->addFrame(frame.data(), number, groups), std::string(path) + ": adding a frame");
      n_frames++;
    }
  }
  if (n_frames == 0)
    fail(PSP_ERR_DATA, std::string(path) + ": no muscle label on any slice; nothing to segment");

  IODReferences refs;
  std::vector<std::string> seen;
  for (int k = 0; k < G.slices; k++) {
    std::string uid = s->ref_sop_uid[k];
    bool dup = false;
    for (const std::string &u : seen)
      dup = dup || u == uid;
    if (dup) continue;
    seen.push_back(uid);
    refs.add(new IODImageReference(src->patient_id, src->study_uid, src->series_uid, uid.c_str(),
                                   src->sop_class_uid));
  }
  seg->getCommonInstanceReference().addReferences(refs, src->study_uid);

  DcmFileFormat ff;
  DcmDataset &d = *ff.getDataset();
  check(seg->writeDataset(d), std::string(path) + ": building the segmentation");
  put_charset(d, src);
  put(d, DCM_SeriesDate, s->content_date);
  put(d, DCM_SeriesTime, s->content_time);
  put(d, DCM_InstanceCreationDate, s->content_date);
  put(d, DCM_InstanceCreationTime, s->content_time);
  save(ff, path, EXS_LittleEndianExplicit);
}

/* ------------------------------------------------------------------------ */
/* Secondary Capture                                                         */
/* ------------------------------------------------------------------------ */

void sc_body(const void *arg, const char *path) {
  const psp_dicom_sc_desc *s = static_cast<const psp_dicom_sc_desc *>(arg);
  setup(s->verbose);
  if (!s->src || !s->rgb || s->width < 1 || s->height < 1 || s->width > 65535 || s->height > 65535)
    fail(PSP_ERR_USAGE, std::string(path) + ": invalid secondary capture description");
  DcmFileFormat ff;
  DcmDataset &d = *ff.getDataset();
  const psp_dicom_source *src = s->src;
  put(d, DCM_SOPClassUID, UID_SecondaryCaptureImageStorage);
  put(d, DCM_SOPInstanceUID, s->sop_uid);
  put_patient_study(d, src);
  put(d, DCM_Modality, "OT");
  put(d, DCM_SeriesInstanceUID, s->series_uid);
  put(d, DCM_SeriesNumber, std::to_string(s->series_number));
  put(d, DCM_SeriesDescription, s->series_description ? s->series_description : "");
  put(d, DCM_SeriesDate, s->content_date);
  put(d, DCM_SeriesTime, s->content_time);
  put(d, DCM_Manufacturer, "paraspinal");
  put(d, DCM_SoftwareVersions, s->software_version ? s->software_version : "");
  put(d, DCM_ConversionType, "WSD");
  put(d, DCM_InstanceNumber, std::to_string(s->instance_number));
  put(d, DCM_PatientOrientation, "");
  put(d, DCM_ImageType, "DERIVED\\SECONDARY");
  put(d, DCM_ContentDate, s->content_date);
  put(d, DCM_ContentTime, s->content_time);
  put(d, DCM_InstanceCreationDate, s->content_date);
  put(d, DCM_InstanceCreationTime, s->content_time);
  put(d, DCM_BurnedInAnnotation, "NO");
  put(d, DCM_LossyImageCompression, "00");
  put(d, DCM_DerivationDescription,
      "paraspinal QC overlay: muscle outlines, landmarks and the per-level table");
  if (s->ref_sop_uid && s->ref_sop_uid[0]) {
    DcmItem &ref = seq_item(d, DCM_SourceImageSequence, 0);
    put(ref, DCM_ReferencedSOPClassUID, src->sop_class_uid);
    put(ref, DCM_ReferencedSOPInstanceUID, s->ref_sop_uid);
    if (s->ref_frame > 0) put(ref, DCM_ReferencedFrameNumber, std::to_string(s->ref_frame));
  }
  put_u16(d, DCM_SamplesPerPixel, 3);
  put(d, DCM_PhotometricInterpretation, "RGB");
  put_u16(d, DCM_PlanarConfiguration, 0);
  put_u16(d, DCM_Rows, (Uint16)s->height);
  put_u16(d, DCM_Columns, (Uint16)s->width);
  put_u16(d, DCM_BitsAllocated, 8);
  put_u16(d, DCM_BitsStored, 8);
  put_u16(d, DCM_HighBit, 7);
  put_u16(d, DCM_PixelRepresentation, 0);
  check(d.putAndInsertUint8Array(DCM_PixelData, s->rgb,
                                 (unsigned long)s->width * (unsigned long)s->height * 3UL),
        "setting PixelData");
  save(ff, path, EXS_LittleEndianExplicit);
}

} // namespace

/* ------------------------------------------------------------------------ */
/* extern "C" entries                                                        */
/* ------------------------------------------------------------------------ */

extern "C" bool psp_dicom_write_series(const psp_dicom_series_desc *s, const char *dir,
                                       psp_error **err) {
  return entry(err, "a DICOM series", series_body, s, dir);
}

extern "C" bool psp_dicom_write_seg(const psp_dicom_seg_desc *s, const char *path,
                                    psp_error **err) {
  return entry(err, "a DICOM segmentation", seg_body, s, path);
}

extern "C" bool psp_dicom_write_sc(const psp_dicom_sc_desc *s, const char *path, psp_error **err) {
  return entry(err, "a DICOM secondary capture", sc_body, s, path);
}

extern "C" void psp_dicom_uid_derive(const char *tag, const void *data, size_t len,
                                     char out[PSP_UID_LEN]) {
  struct sha256_ctx c;
  sha256_init(&c);
  sha256_update(&c, strlen(tag) + 1, reinterpret_cast<const uint8_t *>(tag));
  if (len) sha256_update(&c, len, static_cast<const uint8_t *>(data));
  uint8_t d[SHA256_DIGEST_SIZE];
  sha256_digest(&c, sizeof d, d);
  /* 128-bit big-endian integer -> decimal by repeated division by 10 */
  uint8_t num[16];
  memcpy(num, d, sizeof num);
  char digits[48];
  int nd = 0;
  bool zero = false;
  while (!zero) {
    unsigned rem = 0;
    zero = true;
    for (int i = 0; i < 16; i++) {
      unsigned cur = rem * 256u + num[i];
      num[i] = (uint8_t)(cur / 10u);
      rem = cur % 10u;
      zero = zero && num[i] == 0;
    }
    digits[nd++] = (char)('0' + rem);
  }
  std::string s = "2.25.";
  for (int i = nd - 1; i >= 0; i--)
    s += digits[i];
  snprintf(out, PSP_UID_LEN, "%s", s.c_str());
}
