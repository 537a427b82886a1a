/*
 * dicom_write.h — the DICOM writing bridge (src/io/dicom_write_dcmtk.cpp, the
 * only place that knows DCMTK's writing classes) and its plain-C inputs.
 * Internal, not installed. Callers (src/phantom/phantom_dicom.c,
 * src/report/dicom_out.c) hand over voxels already in the file's own voxel
 * order (psp_volume_to_file_order): i = DICOM columns, j = rows, k = slices,
 * with the file's voxel-to-world affine in NIfTI RAS+ mm; the bridge turns it
 * into DICOM LPS geometry (ImagePositionPatient, ImageOrientationPatient,
 * PixelSpacing, SliceThickness, SpacingBetweenSlices).
 *
 * Every writer writes to "<path>.part" and renames, so a file is either
 * complete or absent. DCMTK's own log stays silent unless `verbose`.
 */
#ifndef PSP_IO_DICOM_WRITE_H
#define PSP_IO_DICOM_WRITE_H

#include "io/dicom.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The images a Dixon series can hold. */
typedef enum psp_dicom_image {
  PSP_DICOM_WATER = 0,
  PSP_DICOM_FAT = 1,
  PSP_DICOM_INPHASE = 2,
  PSP_DICOM_OUTPHASE = 3,
  PSP_DICOM_FF = 4, /* fat-fraction map in percent */
  PSP_DICOM_IMAGE_COUNT = 5,
} psp_dicom_image;

/* A voxel grid in the file's own order. */
typedef struct psp_dicom_grid {
  int64_t dims[3];     /* columns, rows, slices */
  double affine[4][4]; /* file voxel (i, j, k) -> world RAS+ mm */
} psp_dicom_grid;

/* One image series (MR Image Storage, one file per slice, or Enhanced MR
 * Image Storage, one multi-frame file) in a vendor's conventions. */
typedef struct psp_dicom_series_desc {
  psp_dicom_grid grid;
  const float *data; /* dims[0] * dims[1] * dims[2] values, finite */
  psp_dicom_image image;
  psp_dicom_vendor vendor;
  bool multiframe;
  psp_dicom_codec codec;
  /* Patient and study modules, StudyInstanceUID, FrameOfReferenceUID and
   * this series' SeriesInstanceUID (src->series_uid). SOP Instance UIDs are
   * series_uid + ".<instance number>". */
  const psp_dicom_source *src;
  int series_number;
  const char *software_version;
  bool verbose;
} psp_dicom_series_desc;

/* Writes the series into the existing folder dir: IM0001.dcm ... (one per
 * slice, InstanceNumber = file slice + 1) or IM0001.dcm with every frame.
 * Values are stored as uint16 (or int16 when negative) with RescaleSlope /
 * RescaleIntercept chosen so integer-valued data is stored exactly and other
 * data with the finest decimal slope that fits. EchoTime: the vendor's
 * first echo (opposed phase), the second for in-phase images. */
bool psp_dicom_write_series(const psp_dicom_series_desc *s, const char *dir, psp_error **err);

/* A DICOM Segmentation (binary, one segment per label present). */
typedef struct psp_dicom_seg_desc {
  psp_dicom_grid grid;
  const uint8_t *labels; /* file order, project labels 0..4 */
  /* The source study and series: patient/study modules, Frame of Reference,
   * series UID and SOP class UID of the source images. */
  const psp_dicom_source *src;
  /* Per FILE slice (dims[2] entries): the source image SOP Instance UID and
   * frame number (0 = single-frame image) the frame is derived from. */
  const char *const *ref_sop_uid;
  const int32_t *ref_frame;
  const char *series_uid, *sop_uid;
  int series_number;
  bool automatic; /* segmented by the tool (else labels given by the user) */
  const char *software_version;
  const char *content_date, *content_time; /* DICOM DA and TM */
  bool verbose;
} psp_dicom_seg_desc;

bool psp_dicom_write_seg(const psp_dicom_seg_desc *s, const char *path, psp_error **err);

/* One RGB Secondary Capture image in the source study. */
typedef struct psp_dicom_sc_desc {
  const uint8_t *rgb; /* width * height * 3, rows top to bottom */
  int width, height;
  const psp_dicom_source *src;
  const char *ref_sop_uid; /* the source image shown (may be NULL) */
  int32_t ref_frame;
  const char *series_uid, *sop_uid;
  int series_number, instance_number;
  const char *series_description;
  const char *software_version;
  const char *content_date, *content_time;
  bool verbose;
} psp_dicom_sc_desc;

bool psp_dicom_write_sc(const psp_dicom_sc_desc *s, const char *path, psp_error **err);

/* A UID derived from content: "2.25." + the first 128 bits of
 * SHA-256(tag, NUL, data) in decimal (the UUID-derived form of PS3.5 B.2),
 * so identical content gets identical UIDs and outputs stay deterministic. */
void psp_dicom_uid_derive(const char *tag, const void *data, size_t len, char out[PSP_UID_LEN]);

#ifdef __cplusplus
}
#endif

#endif
