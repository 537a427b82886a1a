/*
 * DESIGN: internal interface of the DICOM reader, in three layers:
 *  1. the DCMTK bridge (src/io/dicom_dcmtk.cpp, the only C++): one file's
 *     header as plain C structs (psp_dcm_instance + one psp_dcm_plane per
 *     frame), and one file's pixel data decoded to float stored values;
 *  2. the scan (src/io/dicom.c): folder walk, grouping of planes into stacks
 *     (series x image type x echo time x matrix), slice sorting along the
 *     slice normal, geometry checks, affine, loading a stack as a psp_volume
 *     with its psp_dicom_source;
 *  3. Dixon classification and pairing (src/io/dicom_pair.c).
 * The pipeline (src/pipeline.c), `paraspinal dicominfo` and the unit tests
 * use layers 2 and 3; only dicom.c calls the bridge.
 */
#ifndef PSP_IO_DICOM_READ_H
#define PSP_IO_DICOM_READ_H

#include "io/dicom.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- 1. bridge ------------------------------------------------------------ */

/* One DICOM file (instance). Strings are NUL-terminated, trimmed; "" when
 * absent. */
typedef struct psp_dcm_instance {
  char *path; /* owned by the scan */
  char sop_class_uid[PSP_UID_LEN], sop_instance_uid[PSP_UID_LEN];
  char study_uid[PSP_UID_LEN], series_uid[PSP_UID_LEN], frame_of_reference_uid[PSP_UID_LEN];
  char modality[17], manufacturer[65], series_description[65];
  char transfer_syntax_uid[PSP_UID_LEN], transfer_syntax_name[96];
  char photometric[17];
  int32_t series_number, instance_number; /* 0 when absent */
  int32_t rows, cols, n_frames;
  int32_t bits_allocated, bits_stored, high_bit, pixel_representation, samples_per_pixel;
  int float_pixels;      /* 0 integer PixelData, 32 FloatPixelData, 64 DoubleFloatPixelData */
  double field_strength; /* tesla; NaN when absent */
  /* ms and degrees; NaN when absent (enhanced MR: the first frame's MR
   * Timing and Related Parameters) */
  double repetition_time, flip_angle;
  /* patient and study modules */
  char patient_name[325], patient_id[65], patient_birth_date[9], patient_sex[17];
  char study_date[9], study_time[17], study_id[17], accession_number[17];
  char referring_physician[325], study_description[65];
} psp_dcm_instance;

/* One image plane: a single-frame instance, or one frame of a multi-frame
 * (enhanced) instance with its functional-group values. */
typedef struct psp_dcm_plane {
  int32_t instance; /* index into the scan's instances */
  int32_t frame;    /* 1-based frame number; 0 = single-frame instance */
  /* ImageType (single-frame) or FrameType (enhanced), values joined by '\' */
  char image_type[128];
  /* Siemens private ImageTypeText (0021,xx75 of "SIEMENS MR SDI 02") */
  char image_type_text[128];
  double echo_time; /* ms; NaN when absent */
  bool has_position, has_orientation, has_spacing;
  double ipp[3];           /* ImagePositionPatient, LPS mm */
  double iop[6];           /* ImageOrientationPatient: row direction, column direction */
  double pixel_spacing[2]; /* between rows, between columns (mm) */
  double slice_thickness, spacing_between_slices; /* NaN when absent */
  double slope, intercept;                        /* rescale (1, 0 when absent) */
} psp_dcm_plane;

/* Reads one file's header (pixel data is not loaded). Returns 1 for an
 * image (inst filled except path; *planes malloc'd, one per frame), 0 for a
 * DICOM file without pixel data (DICOMDIR, structured report, ...; nothing
 * allocated), -1 on error: PSP_ERR_FORMAT (truncated or not parseable),
 * PSP_ERR_NOMEM. toolkit_log lets DCMTK print its own warnings on stderr. */
int psp_dcm_read_header(const char *path, bool toolkit_log, psp_dcm_instance *inst,
                        psp_dcm_plane **planes, int32_t *n_planes, psp_error **err);

/* Decodes all frames of the file as stored values (masked to BitsStored,
 * sign-extended; no rescale) into out (n_frames x rows x cols floats, frame
 * by frame, row by row). The header must still match inst. Errors:
 * PSP_ERR_UNSUPPORTED (JPEG 2000 and other transfer syntaxes without a
 * decoder, colour images, unusual bit depths), PSP_ERR_FORMAT. */
bool psp_dcm_decode(const char *path, const psp_dcm_instance *inst, bool toolkit_log, float *out,
                    psp_error **err);

/* ---- 3. classification ---------------------------------------------------- */

typedef enum psp_dixon_kind {
  PSP_DIXON_OTHER = 0,
  PSP_DIXON_WATER,
  PSP_DIXON_FAT,
  PSP_DIXON_INPHASE,
  PSP_DIXON_OUTPHASE,
  PSP_DIXON_FF,
  PSP_DIXON_KIND_COUNT,
} psp_dixon_kind;

/* "water", "fat", "in-phase", "opposed-phase", "fat-fraction", "other". */
const char *psp_dixon_kind_name(psp_dixon_kind k);

/* Classifies an image stack from its ImageType/FrameType values, the
 * Siemens ImageTypeText and the series description (in that order of
 * precedence). `why` receives the evidence ("ImageType value WATER", ...),
 * or why nothing matched. Any argument may be NULL or "". */
psp_dixon_kind psp_dixon_classify(const char *image_type, const char *image_type_text,
                                  const char *description, char *why, size_t why_len);

/* In-phase / opposed-phase from the echo time: the fat-water phase cycle is
 * 1 / (3.4 ppm x 42.577 MHz/T x B0). Returns PSP_DIXON_INPHASE or
 * PSP_DIXON_OUTPHASE when TE lies within 0.15 cycles of a full / half
 * cycle, PSP_DIXON_OTHER otherwise or when TE or B0 is unknown. */
psp_dixon_kind psp_dixon_from_echo_time(double te_ms, double field_tesla);

/* Sets kind/kind_why of every stack of the scan: psp_dixon_classify, and
 * for Dixon stacks without a stated type (ImageType mentions DIXON, or the
 * description names a Dixon sequence) the echo time at the scan's field
 * strength. Called by psp_dicom_scan_from_planes. */
struct psp_dicom_scan;
void psp_dicom_classify_stacks(struct psp_dicom_scan *s);

/* ---- 2. scan --------------------------------------------------------------- */

/* An image stack: planes of one series with the same image type, echo
 * time and matrix, sorted along the slice normal. */
typedef struct psp_dicom_stack {
  int32_t first_instance; /* instance the stack's series/patient data come from */
  char image_type[128], image_type_text[128];
  double echo_time;
  int32_t rows, cols;
  int64_t n_planes;     /* after dropping exact duplicates */
  int32_t *plane;       /* n_planes plane indices in slice order */
  int64_t n_files;      /* distinct files */
  int64_t n_duplicates; /* planes dropped: the same SOP instance + frame twice */
  bool multi_frame;
  /* geometry (valid when geometry_status == PSP_OK) */
  psp_status geometry_status;
  char geometry_message[512];
  double affine_lps[4][4]; /* file order voxel (col, row, slice) -> LPS mm */
  double normal[3];        /* slice normal (row x column direction) */
  double slice_step;       /* mm, along the normal */
  const char *orientation; /* "axial", "coronal", "sagittal" */
  double obliquity_deg;    /* angle between normal and the nearest axis */
  /* classification */
  psp_dixon_kind kind;
  char kind_why[256];
} psp_dicom_stack;

typedef struct psp_dicom_scan {
  char *dir;
  psp_dcm_instance *inst;
  int32_t n_inst;
  psp_dcm_plane *planes;
  int64_t n_planes;
  psp_dicom_stack *stacks;
  int32_t n_stacks;
  int64_t n_skipped_not_dicom, n_skipped_no_image;
  bool toolkit_log;
} psp_dicom_scan;

/* Walks dir recursively (any file names; files without the DICOM preamble
 * are skipped quietly, so are DICOM files without pixel data), reads every
 * header and builds the stacks. An unreadable DICOM file is an error
 * (PSP_ERR_FORMAT naming it). No image at all is PSP_ERR_DATA. */
psp_dicom_scan *psp_dicom_scan_dir(const char *dir, bool toolkit_log, psp_context *ctx,
                                   psp_error **err);

/* Builds stacks from instances/planes already filled (the scan takes
 * ownership of both arrays and of the instances' paths; they are freed by
 * psp_dicom_scan_free, also on failure). Used by psp_dicom_scan_dir and by
 * tests. */
psp_dicom_scan *psp_dicom_scan_from_planes(const char *dir, psp_dcm_instance *inst, int32_t n_inst,
                                           psp_dcm_plane *planes, int64_t n_planes,
                                           psp_context *ctx, psp_error **err);
void psp_dicom_scan_free(psp_dicom_scan *s);

/* "3 files of 2 series" style description of a stack for messages:
 * series UID, series number, description, kind, size. No identifiers. */
void psp_dicom_stack_describe(const psp_dicom_scan *s, int32_t stack, char *out, size_t n);

/* Decodes stack `stack` into a volume (LPS internal grid, RAS+ affine)
 * with rescale applied, and fills *src (new; caller frees with
 * psp_dicom_source_free) and sha256 (SHA-256 over the contents of the
 * stack's files in slice order). NaN voxels are allowed only with
 * allow_nan; infinite values are always an error. */
psp_volume *psp_dicom_load_stack(const psp_dicom_scan *s, int32_t stack, bool allow_nan,
                                 psp_dicom_source **src, char sha256[65], psp_context *ctx,
                                 psp_error **err);

/* ---- 3. pairing ------------------------------------------------------------ */

typedef struct psp_dicom_choice {
  psp_dixon_kind kind[2]; /* WATER+FAT, INPHASE+OUTPHASE, or FF + OTHER */
  int32_t stack[2];       /* stack indices; stack[1] = -1 for an FF map */
  char why[1024];         /* what was found and why this choice */
} psp_dicom_choice;

/* Chooses the Dixon images: water+fat, else in-phase+opposed-phase, else a
 * fat-fraction map; a pair needs the same study, Frame of Reference and
 * grid. series_filter (NULL = all) is a comma-separated list of
 * SeriesInstanceUIDs the choice is restricted to. Two or more candidates
 * of the preferred kind are PSP_ERR_USAGE listing them; none is
 * PSP_ERR_DATA listing what was found. */
bool psp_dicom_choose(const psp_dicom_scan *s, const char *series_filter, psp_dicom_choice *c,
                      psp_error **err);

/* ---- results (implemented in src/pipeline.c) -------------------------------- */

/* The DICOM series input i of an analysis was read from, or NULL for a
 * NIfTI input (borrowed). */
const psp_dicom_source *psp_result_input_dicom(const psp_result *r, int i);
/* What the DICOM folder held and why the images were chosen (no
 * identifiers), or NULL for NIfTI input (borrowed). */
const char *psp_result_dicom_selection(const psp_result *r);

#ifdef __cplusplus
}
#endif

#endif
