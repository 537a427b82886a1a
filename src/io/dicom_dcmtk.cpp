/*
 * DESIGN: the DCMTK bridge of the DICOM reader, the only C++ on the reading
 * side. Two extern "C" functions (declared in src/io/dicom_read.h):
 *  - psp_dcm_read_header: loads one file without its pixel data (values
 *    longer than 4 KiB stay on disk) and copies what grouping, geometry and
 *    Dixon pairing need into plain C structs: one psp_dcm_instance and one
 *    psp_dcm_plane per frame. For enhanced (multi-frame) MR the per-frame
 *    values come from the Per-frame Functional Groups item of the frame,
 *    else from the Shared Functional Groups (plane position / orientation,
 *    pixel measures, pixel value transformation, MR image frame type, MR
 *    echo).
 *  - psp_dcm_decode: loads the whole file, decompresses encapsulated pixel
 *    data through DCMTK's codecs (JPEG baseline/extended/lossless, JPEG-LS,
 *    RLE) and returns stored values as float (masked to BitsStored,
 *    sign-extended; the rescale is applied by the C side per frame). JPEG
 *    2000 has no decoder in Debian's DCMTK 3.6.7: PSP_ERR_UNSUPPORTED naming
 *    the transfer syntax.
 * Process-wide state: DCMTK's codec registry and logger are global to
 * DCMTK. The decoders are registered once through a function-local
 * std::once_flag (thread-safe) and unregistered by an atexit handler; we
 * keep no mutable globals of our own. DCMTK's
 * logger "dcmtk" is set to OFF on every call unless toolkit_log is true
 * (then WARN), so the library stays silent as the project requires.
 * Every C++ exception is caught here: bad_alloc -> PSP_ERR_NOMEM, anything
 * else -> PSP_ERR_INTERNAL naming the file.
 */
#include "dcmtk/config/osconfig.h"

#include "dcmtk/dcmdata/dcrledrg.h"
#include "dcmtk/dcmdata/dctk.h"
#include "dcmtk/dcmjpeg/djdecode.h"
#include "dcmtk/dcmjpls/djdecode.h"
#include "dcmtk/oflog/oflog.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <new>

extern "C" {
#include "core/internal.h"
#include "io/dicom_read.h"
}

namespace {

void prepare(bool toolkit_log) {
  static std::once_flag once; // DCMTK's codec registry is process-wide
  std::call_once(once, [] {
    DJDecoderRegistration::registerCodecs();
    DJLSDecoderRegistration::registerCodecs();
    DcmRLEDecoderRegistration::registerCodecs();
    /* unregister at exit so leak checkers see a clean process */
    std::atexit([] {
      DJDecoderRegistration::cleanup();
      DJLSDecoderRegistration::cleanup();
      DcmRLEDecoderRegistration::cleanup();
    });
  });
  OFLog::getLogger("dcmtk").setLogLevel(toolkit_log ? OFLogger::WARN_LOG_LEVEL
                                                    : OFLogger::OFF_LOG_LEVEL);
}

/* Copies a string attribute (all values joined by '\' when all_values),
 * trimmed, control characters replaced by '?'. "" when absent. */
void get_str(DcmItem *it, const DcmTagKey &tag, char *out, size_t n, bool all_values = false) {
  out[0] = '\0';
  if (!it) return;
  DcmElement *el = NULL;
  if (it->findAndGetElement(tag, el).bad() || !el) return;
  OFString s;
  DcmEVR vr = el->ident();
  if (vr == EVR_UN || vr == EVR_OB) {
    /* private attributes read without a dictionary entry: raw bytes */
    Uint8 *p = NULL;
    if (el->getUint8Array(p).good() && p)
      s.assign(reinterpret_cast<const char *>(p), el->getLength());
  } else if ((all_values ? el->getOFStringArray(s) : el->getOFString(s, 0)).bad()) {
    return;
  }
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\0'))
    b++;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\0'))
    e--;
  size_t k = 0;
  for (size_t i = b; i < e && k + 1 < n; i++) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    out[k++] = (c < 0x20 || c == 0x7f) ? '?' : static_cast<char>(c);
  }
  out[k] = '\0';
}

bool get_f64(DcmItem *it, const DcmTagKey &tag, double *v, unsigned long pos = 0) {
  Float64 x;
  if (it && it->findAndGetFloat64(tag, x, pos).good() && std::isfinite(x)) {
    *v = x;
    return true;
  }
  return false;
}

int32_t get_int(DcmItem *it, const DcmTagKey &tag, int32_t dflt) {
  if (!it) return dflt;
  Uint16 u;
  if (it->findAndGetUint16(tag, u).good()) return u;
  Sint32 s;
  if (it->findAndGetSint32(tag, s).good()) return s;
  return dflt;
}

/* The functional-group macro item `seq` for one frame: the frame's own
 * (per-frame) item first, else the shared one. */
DcmItem *fg_item(DcmItem *per_frame, DcmItem *shared, const DcmTagKey &seq) {
  DcmItem *sub = NULL;
  if (per_frame && per_frame->findAndGetSequenceItem(seq, sub, 0).good() && sub) return sub;
  sub = NULL;
  if (shared && shared->findAndGetSequenceItem(seq, sub, 0).good() && sub) return sub;
  return NULL;
}

/* Siemens ImageTypeText: element 0x75 of the private block reserved by
 * "SIEMENS MR SDI 02" in group 0021 (usually (0021,1175)). */
void siemens_image_type_text(DcmItem *it, char *out, size_t n) {
  out[0] = '\0';
  if (!it) return;
  for (Uint16 e = 0x10; e <= 0xff; e++) {
    char creator[80];
    get_str(it, DcmTagKey(0x0021, e), creator, sizeof creator);
    if (!strcmp(creator, "SIEMENS MR SDI 02")) {
      get_str(it, DcmTagKey(0x0021, static_cast<Uint16>((e << 8) | 0x75)), out, n, true);
      return;
    }
  }
}

/* ... also inside the items of the sequences of a per-frame item (XA
 * enhanced objects keep their private data in a private sequence). */
void siemens_image_type_text_nested(DcmItem *it, char *out, size_t n) {
  siemens_image_type_text(it, out, n);
  if (out[0] || !it) return;
  for (unsigned long i = 0; i < it->card() && !out[0]; i++) {
    DcmElement *el = it->getElement(i);
    if (!el || el->ident() != EVR_SQ) continue;
    DcmSequenceOfItems *sq = static_cast<DcmSequenceOfItems *>(el);
    for (unsigned long j = 0; j < sq->card() && !out[0]; j++)
      siemens_image_type_text(sq->getItem(j), out, n);
  }
}

void fill_plane_geometry(DcmItem *pos, DcmItem *ori, DcmItem *meas, psp_dcm_plane *p) {
  p->has_position = pos != NULL;
  for (int a = 0; a < 3 && p->has_position; a++)
    p->has_position = get_f64(pos, DCM_ImagePositionPatient, &p->ipp[a], a);
  p->has_orientation = ori != NULL;
  for (int a = 0; a < 6 && p->has_orientation; a++)
    p->has_orientation = get_f64(ori, DCM_ImageOrientationPatient, &p->iop[a], a);
  p->has_spacing = meas != NULL;
  for (int a = 0; a < 2 && p->has_spacing; a++)
    p->has_spacing = get_f64(meas, DCM_PixelSpacing, &p->pixel_spacing[a], a);
  if (meas) {
    get_f64(meas, DCM_SliceThickness, &p->slice_thickness);
    get_f64(meas, DCM_SpacingBetweenSlices, &p->spacing_between_slices);
  }
}

void init_plane(psp_dcm_plane *p, int32_t frame) {
  memset(p, 0, sizeof *p);
  p->frame = frame;
  p->echo_time = NAN;
  p->slice_thickness = NAN;
  p->spacing_between_slices = NAN;
  p->slope = 1.0;
  p->intercept = 0.0;
}

void read_rescale(DcmItem *it, psp_dcm_plane *p) {
  double s;
  if (get_f64(it, DCM_RescaleSlope, &s) && s != 0.0) p->slope = s;
  get_f64(it, DCM_RescaleIntercept, &p->intercept);
}

void transfer_syntax(DcmFileFormat &ff, psp_dcm_instance *inst) {
  DcmMetaInfo *meta = ff.getMetaInfo();
  get_str(meta, DCM_TransferSyntaxUID, inst->transfer_syntax_uid, sizeof inst->transfer_syntax_uid);
  E_TransferSyntax xs = ff.getDataset()->getOriginalXfer();
  if (!inst->transfer_syntax_uid[0] && xs != EXS_Unknown)
    snprintf(inst->transfer_syntax_uid, sizeof inst->transfer_syntax_uid, "%s",
             DcmXfer(xs).getXferID());
  DcmXfer x(inst->transfer_syntax_uid[0] ? DcmXfer(inst->transfer_syntax_uid) : DcmXfer(xs));
  snprintf(inst->transfer_syntax_name, sizeof inst->transfer_syntax_name, "%s",
           x.getXfer() == EXS_Unknown ? "unknown transfer syntax" : x.getXferName());
}

bool is_jpeg2000(const char *uid) {
  /* 1.2.840.10008.1.2.4.90-.93 (JPEG 2000), .201-.203 (HTJ2K) */
  static const char *const j2k[] = {"1.2.840.10008.1.2.4.90",  "1.2.840.10008.1.2.4.91",
                                    "1.2.840.10008.1.2.4.92",  "1.2.840.10008.1.2.4.93",
                                    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202",
                                    "1.2.840.10008.1.2.4.203"};
  for (const char *u : j2k)
    if (!strcmp(uid, u)) return true;
  return false;
}

OFCondition load(DcmFileFormat &ff, const char *path, Uint32 max_read) {
  return ff.loadFile(OFFilename(path), EXS_Unknown, EGL_noChange, max_read, ERM_autoDetect);
}

int read_header(const char *path, bool toolkit_log, psp_dcm_instance *inst,
                psp_dcm_plane **planes_out, int32_t *n_planes, psp_error **err) {
  prepare(toolkit_log);
  DcmFileFormat ff;
  OFCondition st = load(ff, path, 4096);
  if (st.bad()) {
    psp_error_set(err, PSP_ERR_FORMAT,
                  "%s: not a readable DICOM file (%s); the file is truncated or damaged", path,
                  st.text());
    return -1;
  }
  DcmDataset *ds = ff.getDataset();
  if (!ds) {
    psp_error_set(err, PSP_ERR_FORMAT, "%s: DICOM file without a data set", path);
    return -1;
  }
  if (!ds->tagExists(DCM_PixelData) && !ds->tagExists(DCM_FloatPixelData) &&
      !ds->tagExists(DCM_DoubleFloatPixelData)) {
    /* an MR image without its pixels is a file cut short before them, not
     * a non-image object (structured report, presentation state, ...) */
    char sop[80] = "";
    get_str(ds, DCM_SOPClassUID, sop, sizeof sop);
    if (!strcmp(sop, UID_MRImageStorage) || !strcmp(sop, UID_EnhancedMRImageStorage) ||
        !strcmp(sop, UID_EnhancedMRColorImageStorage) ||
        !strcmp(sop, UID_LegacyConvertedEnhancedMRImageStorage)) {
      psp_error_set(err, PSP_ERR_FORMAT,
                    "%s: an MR image (SOP class %s) without pixel data; the file is truncated "
                    "or damaged",
                    path, sop);
      return -1;
    }
    return 0;
  }
  OFString charset;
  if (ds->findAndGetOFStringArray(DCM_SpecificCharacterSet, charset).good() && !charset.empty() &&
      charset != "ISO_IR 6" && charset != "ISO_IR 192")
    (void)ds->convertToUTF8(); /* best effort; unconvertible names stay as they are */

  memset(inst, 0, sizeof *inst);
  get_str(ds, DCM_SOPClassUID, inst->sop_class_uid, sizeof inst->sop_class_uid);
  get_str(ds, DCM_SOPInstanceUID, inst->sop_instance_uid, sizeof inst->sop_instance_uid);
  get_str(ds, DCM_StudyInstanceUID, inst->study_uid, sizeof inst->study_uid);
  get_str(ds, DCM_SeriesInstanceUID, inst->series_uid, sizeof inst->series_uid);
  get_str(ds, DCM_FrameOfReferenceUID, inst->frame_of_reference_uid,
          sizeof inst->frame_of_reference_uid);
  get_str(ds, DCM_Modality, inst->modality, sizeof inst->modality);
  get_str(ds, DCM_Manufacturer, inst->manufacturer, sizeof inst->manufacturer);
  get_str(ds, DCM_SeriesDescription, inst->series_description, sizeof inst->series_description);
  get_str(ds, DCM_PhotometricInterpretation, inst->photometric, sizeof inst->photometric);
  transfer_syntax(ff, inst);
  inst->series_number = get_int(ds, DCM_SeriesNumber, 0);
  inst->instance_number = get_int(ds, DCM_InstanceNumber, 0);
  inst->rows = get_int(ds, DCM_Rows, 0);
  inst->cols = get_int(ds, DCM_Columns, 0);
  inst->n_frames = get_int(ds, DCM_NumberOfFrames, 1);
  inst->bits_allocated = get_int(ds, DCM_BitsAllocated, 0);
  inst->bits_stored = get_int(ds, DCM_BitsStored, inst->bits_allocated);
  inst->high_bit = get_int(ds, DCM_HighBit, inst->bits_stored - 1);
  inst->pixel_representation = get_int(ds, DCM_PixelRepresentation, 0);
  inst->samples_per_pixel = get_int(ds, DCM_SamplesPerPixel, 1);
  inst->float_pixels = ds->tagExists(DCM_FloatPixelData)         ? 32
                       : ds->tagExists(DCM_DoubleFloatPixelData) ? 64
                                                                 : 0;
  inst->field_strength = NAN;
  get_f64(ds, DCM_MagneticFieldStrength, &inst->field_strength);
  inst->repetition_time = inst->flip_angle = NAN;
  get_f64(ds, DCM_RepetitionTime, &inst->repetition_time);
  get_f64(ds, DCM_FlipAngle, &inst->flip_angle);
  get_str(ds, DCM_PatientName, inst->patient_name, sizeof inst->patient_name, true);
  get_str(ds, DCM_PatientID, inst->patient_id, sizeof inst->patient_id);
  get_str(ds, DCM_PatientBirthDate, inst->patient_birth_date, sizeof inst->patient_birth_date);
  get_str(ds, DCM_PatientSex, inst->patient_sex, sizeof inst->patient_sex);
  get_str(ds, DCM_StudyDate, inst->study_date, sizeof inst->study_date);
  get_str(ds, DCM_StudyTime, inst->study_time, sizeof inst->study_time);
  get_str(ds, DCM_StudyID, inst->study_id, sizeof inst->study_id);
  get_str(ds, DCM_AccessionNumber, inst->accession_number, sizeof inst->accession_number);
  get_str(ds, DCM_ReferringPhysicianName, inst->referring_physician,
          sizeof inst->referring_physician, true);
  get_str(ds, DCM_StudyDescription, inst->study_description, sizeof inst->study_description);
  if (inst->rows <= 0 || inst->cols <= 0 || inst->n_frames <= 0 || inst->n_frames > 100000) {
    psp_error_set(err, PSP_ERR_FORMAT, "%s: invalid image size (Rows %d, Columns %d, %d frames)",
                  path, inst->rows, inst->cols, inst->n_frames);
    return -1;
  }

  char image_type[128], itt[128];
  get_str(ds, DCM_ImageType, image_type, sizeof image_type, true);
  siemens_image_type_text(ds, itt, sizeof itt);
  double te = NAN;
  get_f64(ds, DCM_EchoTime, &te);

  DcmSequenceOfItems *per_frame = NULL, *shared_seq = NULL;
  ds->findAndGetSequence(DCM_PerFrameFunctionalGroupsSequence, per_frame);
  ds->findAndGetSequence(DCM_SharedFunctionalGroupsSequence, shared_seq);
  DcmItem *shared = (shared_seq && shared_seq->card() > 0) ? shared_seq->getItem(0) : NULL;
  bool enhanced = per_frame && per_frame->card() > 0;
  if (enhanced && per_frame->card() != static_cast<unsigned long>(inst->n_frames)) {
    psp_error_set(err, PSP_ERR_FORMAT,
                  "%s: NumberOfFrames is %d but the Per-frame Functional Groups Sequence has %lu "
                  "items",
                  path, inst->n_frames, per_frame->card());
    return -1;
  }
  if (enhanced) {
    DcmItem *tm = fg_item(per_frame->getItem(0), shared, DCM_MRTimingAndRelatedParametersSequence);
    if (std::isnan(inst->repetition_time)) get_f64(tm, DCM_RepetitionTime, &inst->repetition_time);
    if (std::isnan(inst->flip_angle)) get_f64(tm, DCM_FlipAngle, &inst->flip_angle);
  }
  /* native (not encapsulated) pixel data shorter than the frames it declares:
   * refused before one plane per declared frame is built (a 1 KB file can
   * declare 100000 frames; found by fuzzing). Only for >= 8-bit pixels. */
  {
    DcmXfer xfer(ds->getOriginalXfer());
    DcmElement *px = NULL;
    if (!xfer.isEncapsulated() && !inst->float_pixels && inst->bits_allocated >= 8 &&
        ds->findAndGetElement(DCM_PixelData, px).good() && px) {
      unsigned long long need = static_cast<unsigned long long>(inst->rows) *
                                static_cast<unsigned long long>(inst->cols) *
                                static_cast<unsigned long long>(inst->n_frames) *
                                static_cast<unsigned long long>(
                                    inst->samples_per_pixel > 0 ? inst->samples_per_pixel : 1) *
                                static_cast<unsigned long long>(inst->bits_allocated / 8);
      unsigned long long have = px->getLength();
      if (have < need) {
        psp_error_set(err, PSP_ERR_FORMAT,
                      "%s: truncated pixel data (%llu bytes; %d x %d pixels x %d frames need "
                      "%llu)",
                      path, have, inst->cols, inst->rows, inst->n_frames, need);
        return -1;
      }
    }
  }
  psp_dcm_plane *planes = static_cast<psp_dcm_plane *>(
      psp_calloc(static_cast<size_t>(inst->n_frames), sizeof *planes, err));
  if (!planes) return -1;
  *planes_out = planes; /* freed by the caller's handler if anything below throws */
  for (int32_t f = 0; f < inst->n_frames; f++) {
    psp_dcm_plane *p = &planes[f];
    init_plane(p, inst->n_frames > 1 || enhanced ? f + 1 : 0);
    if (enhanced) {
      DcmItem *pf = per_frame->getItem(static_cast<unsigned long>(f));
      DcmItem *ft = fg_item(pf, shared, DCM_MRImageFrameTypeSequence);
      get_str(ft, DCM_FrameType, p->image_type, sizeof p->image_type, true);
      if (!p->image_type[0]) snprintf(p->image_type, sizeof p->image_type, "%s", image_type);
      siemens_image_type_text_nested(pf, p->image_type_text, sizeof p->image_type_text);
      if (!p->image_type_text[0])
        snprintf(p->image_type_text, sizeof p->image_type_text, "%s", itt);
      DcmItem *echo = fg_item(pf, shared, DCM_MREchoSequence);
      if (!get_f64(echo, DCM_EffectiveEchoTime, &p->echo_time)) p->echo_time = te;
      fill_plane_geometry(fg_item(pf, shared, DCM_PlanePositionSequence),
                          fg_item(pf, shared, DCM_PlaneOrientationSequence),
                          fg_item(pf, shared, DCM_PixelMeasuresSequence), p);
      DcmItem *pvt = fg_item(pf, shared, DCM_PixelValueTransformationSequence);
      read_rescale(pvt ? pvt : ds, p);
    } else {
      snprintf(p->image_type, sizeof p->image_type, "%s", image_type);
      snprintf(p->image_type_text, sizeof p->image_type_text, "%s", itt);
      p->echo_time = te;
      fill_plane_geometry(ds, ds, ds, p);
      /* classic multi-frame: one position for all frames cannot place them */
      if (f > 0) p->has_position = false;
      read_rescale(ds, p);
    }
  }
  *n_planes = inst->n_frames;
  return 1;
}

bool check_pixel_format(const char *path, const psp_dcm_instance *in, psp_error **err) {
  if (in->samples_per_pixel != 1)
    return psp_error_set(err, PSP_ERR_UNSUPPORTED,
                         "%s: colour image (%d samples per pixel, %s); only greyscale MR images "
                         "can be measured",
                         path, in->samples_per_pixel, in->photometric);
  if (in->float_pixels) return true;
  int ba = in->bits_allocated, bs = in->bits_stored, hb = in->high_bit;
  if (ba != 8 && ba != 16 && ba != 32)
    return psp_error_set(err, PSP_ERR_UNSUPPORTED,
                         "%s: BitsAllocated %d is not supported (8, 16 or 32)", path, ba);
  if (bs < 1 || bs > ba || hb < bs - 1 || hb >= ba)
    return psp_error_set(err, PSP_ERR_FORMAT,
                         "%s: inconsistent pixel format (BitsAllocated %d, BitsStored %d, "
                         "HighBit %d)",
                         path, ba, bs, hb);
  return true;
}

bool decode(const char *path, const psp_dcm_instance *in, bool toolkit_log, float *out,
            psp_error **err) {
  prepare(toolkit_log);
  if (!check_pixel_format(path, in, err)) return false;
  if (is_jpeg2000(in->transfer_syntax_uid))
    return psp_error_set(err, PSP_ERR_UNSUPPORTED,
                         "%s: the pixel data are compressed with JPEG 2000 (transfer syntax %s, "
                         "UID %s), which this build cannot decode (Debian's DCMTK 3.6.7 has no "
                         "JPEG 2000 codec); have the PACS send the series uncompressed or "
                         "convert it first (e.g. gdcmconv --raw IN OUT)",
                         path, in->transfer_syntax_name, in->transfer_syntax_uid);
  DcmFileFormat ff;
  OFCondition st = load(ff, path, DCM_MaxReadLength);
  if (st.bad())
    return psp_error_set(err, PSP_ERR_FORMAT,
                         "%s: not a readable DICOM file (%s); the file is truncated or damaged",
                         path, st.text());
  DcmDataset *ds = ff.getDataset();
  if (get_int(ds, DCM_Rows, 0) != in->rows || get_int(ds, DCM_Columns, 0) != in->cols ||
      get_int(ds, DCM_NumberOfFrames, 1) != in->n_frames ||
      get_int(ds, DCM_BitsAllocated, 0) != in->bits_allocated)
    return psp_error_set(err, PSP_ERR_IO, "%s: the file changed while it was being read", path);
  E_TransferSyntax xs = ds->getOriginalXfer();
  DcmXfer x(xs);
  if (x.isEncapsulated()) {
    st = ds->chooseRepresentation(EXS_LittleEndianExplicit, NULL);
    if (st.bad() || !ds->canWriteXfer(EXS_LittleEndianExplicit))
      return psp_error_set(err, PSP_ERR_UNSUPPORTED,
                           "%s: the pixel data cannot be decoded: transfer syntax %s (UID %s) "
                           "is not supported (%s); supported are uncompressed, RLE, JPEG and "
                           "JPEG-LS",
                           path, in->transfer_syntax_name, in->transfer_syntax_uid,
                           st.bad() ? st.text() : "no decoder");
  }
  const size_t n = static_cast<size_t>(in->rows) * static_cast<size_t>(in->cols) *
                   static_cast<size_t>(in->n_frames);
  if (in->float_pixels) {
    DcmElement *el = NULL;
    DcmTagKey tag = in->float_pixels == 32 ? DCM_FloatPixelData : DCM_DoubleFloatPixelData;
    if (ds->findAndGetElement(tag, el).bad() || !el)
      return psp_error_set(err, PSP_ERR_FORMAT, "%s: float pixel data missing", path);
    size_t bytes = el->getLength(), need = n * static_cast<size_t>(in->float_pixels / 8);
    if (bytes < need)
      return psp_error_set(err, PSP_ERR_FORMAT,
                           "%s: truncated pixel data (%zu bytes, %d x %d x %d frames need %zu)",
                           path, bytes, in->cols, in->rows, in->n_frames, need);
    if (in->float_pixels == 32) {
      Float32 *v = NULL;
      if (el->getFloat32Array(v).bad() || !v)
        return psp_error_set(err, PSP_ERR_FORMAT, "%s: unreadable float pixel data", path);
      for (size_t i = 0; i < n; i++)
        out[i] = v[i];
    } else {
      Float64 *v = NULL;
      if (el->getFloat64Array(v).bad() || !v)
        return psp_error_set(err, PSP_ERR_FORMAT, "%s: unreadable float pixel data", path);
      for (size_t i = 0; i < n; i++)
        out[i] = static_cast<float>(v[i]);
    }
    return true;
  }
  DcmElement *el = NULL;
  if (ds->findAndGetElement(DCM_PixelData, el).bad() || !el)
    return psp_error_set(err, PSP_ERR_FORMAT, "%s: pixel data missing", path);
  const int ba = in->bits_allocated, bs = in->bits_stored;
  const int shift = in->high_bit + 1 - bs;
  const uint32_t mask = bs == 32 ? 0xffffffffu : ((1u << bs) - 1u);
  const bool is_signed = in->pixel_representation == 1;
  size_t need = n * static_cast<size_t>(ba / 8);
  size_t bytes = el->getLength();
  if (bytes < need)
    return psp_error_set(err, PSP_ERR_FORMAT,
                         "%s: truncated pixel data (%zu bytes; %d x %d pixels x %d frames at %d "
                         "bits need %zu)",
                         path, bytes, in->cols, in->rows, in->n_frames, ba, need);
  auto value = [&](uint32_t w) -> float {
    uint32_t v = (w >> shift) & mask;
    if (is_signed && bs < 32 && (v & (1u << (bs - 1))))
      return static_cast<float>(static_cast<int64_t>(v) - (static_cast<int64_t>(1) << bs));
    if (is_signed && bs == 32) return static_cast<float>(static_cast<int32_t>(v));
    return static_cast<float>(v);
  };
  if (ba == 16) {
    Uint16 *w = NULL;
    if (el->getUint16Array(w).bad() || !w)
      return psp_error_set(err, PSP_ERR_FORMAT, "%s: unreadable 16-bit pixel data", path);
    for (size_t i = 0; i < n; i++)
      out[i] = value(w[i]);
  } else if (ba == 8) {
    if (xs == EXS_BigEndianExplicit && el->getVR() == EVR_OW)
      return psp_error_set(err, PSP_ERR_UNSUPPORTED,
                           "%s: 8-bit pixel data as OW in big-endian transfer syntax is not "
                           "supported",
                           path);
    Uint8 *b = NULL;
    if (el->getUint8Array(b).bad() || !b)
      return psp_error_set(err, PSP_ERR_FORMAT, "%s: unreadable 8-bit pixel data", path);
    for (size_t i = 0; i < n; i++)
      out[i] = value(b[i]);
  } else {
    if (xs == EXS_BigEndianExplicit)
      return psp_error_set(err, PSP_ERR_UNSUPPORTED,
                           "%s: 32-bit pixel data in the big-endian transfer syntax is not "
                           "supported",
                           path);
    Uint8 *b = NULL;
    if (el->getUint8Array(b).bad() || !b)
      return psp_error_set(err, PSP_ERR_FORMAT, "%s: unreadable 32-bit pixel data", path);
    for (size_t i = 0; i < n; i++) {
      const Uint8 *q = b + 4 * i;
      out[i] = value(static_cast<uint32_t>(q[0]) | static_cast<uint32_t>(q[1]) << 8 |
                     static_cast<uint32_t>(q[2]) << 16 | static_cast<uint32_t>(q[3]) << 24);
    }
  }
  return true;
}

} // namespace

extern "C" int psp_dcm_read_header(const char *path, bool toolkit_log, psp_dcm_instance *inst,
                                   psp_dcm_plane **planes, int32_t *n_planes, psp_error **err) {
  *planes = NULL;
  *n_planes = 0;
  try {
    return read_header(path, toolkit_log, inst, planes, n_planes, err);
  } catch (const std::bad_alloc &) {
    psp_error_set(err, PSP_ERR_NOMEM, "%s: out of memory reading the DICOM header", path);
  } catch (const std::exception &e) {
    psp_error_set(err, PSP_ERR_INTERNAL, "%s: DICOM toolkit error: %s", path, e.what());
  } catch (...) {
    psp_error_set(err, PSP_ERR_INTERNAL, "%s: unexpected DICOM toolkit error", path);
  }
  free(*planes);
  *planes = NULL;
  *n_planes = 0;
  return -1;
}

extern "C" bool psp_dcm_decode(const char *path, const psp_dcm_instance *inst, bool toolkit_log,
                               float *out, psp_error **err) {
  try {
    return decode(path, inst, toolkit_log, out, err);
  } catch (const std::bad_alloc &) {
    return psp_error_set(err, PSP_ERR_NOMEM, "%s: out of memory decoding the pixel data", path);
  } catch (const std::exception &e) {
    return psp_error_set(err, PSP_ERR_INTERNAL, "%s: DICOM toolkit error: %s", path, e.what());
  } catch (...) {
    return psp_error_set(err, PSP_ERR_INTERNAL, "%s: unexpected DICOM toolkit error", path);
  }
}
