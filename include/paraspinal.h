/*
 * paraspinal.h — the one public header of the paraspinal library.
 *
 * Contracts that hold for every function below unless its comment says
 * otherwise:
 *  - Functions that can fail take `psp_error **err` as their last argument and
 *    return NULL / false on failure. On failure *err (when err is not NULL)
 *    receives a new error the caller frees with psp_error_free(). An error
 *    already present in *err is never overwritten.
 *  - The library never prints, never exits and never aborts. Warnings and
 *    progress go to the psp_context (collected, and passed to an optional log
 *    callback).
 *  - psp_x_create / psp_x_free pairs: the caller owns what a create returns;
 *    every free accepts NULL. Pointers documented as "borrowed" stay valid
 *    until their owner is freed and must not be freed by the caller.
 *  - Geometry: a volume is float32 voxels on a grid reordered (never
 *    resampled) so that axis i runs towards patient Left, j towards
 *    Posterior, k towards Superior (LPS voxel order: slice 0 is the inferior
 *    end), plus the exact 4x4 voxel-to-world affine in NIfTI RAS+ mm. The
 *    file's own axis order is remembered so outputs are written back on the
 *    input's voxel grid.
 */
#ifndef PARASPINAL_H
#define PARASPINAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

/* Status codes double as the CLI's exit codes (documented in the README). */
typedef enum psp_status {
  PSP_OK = 0,
  PSP_ERR_INTERNAL = 1,    /* a bug: please report */
  PSP_ERR_USAGE = 2,       /* bad command line or option value */
  PSP_ERR_IO = 3,          /* cannot open, read or write a file/folder */
  PSP_ERR_FORMAT = 4,      /* not a valid or not a supported file */
  PSP_ERR_GEOMETRY = 5,    /* grids differ, bad spacing/affine/orientation */
  PSP_ERR_DATA = 6,        /* voxel values unusable: NaN/Inf, unknown labels */
  PSP_ERR_LIMIT = 7,       /* input larger than the configured limits */
  PSP_ERR_NOMEM = 8,       /* out of memory */
  PSP_ERR_UNSUPPORTED = 9, /* a capability this version does not have */
} psp_status;

typedef struct psp_error psp_error;

psp_status psp_error_code(const psp_error *e);
/* Borrowed; names the file (when there is one) and the reason. */
const char *psp_error_message(const psp_error *e);
void psp_error_free(psp_error *e);
/* Short name of a status ("io", "format", ...). */
const char *psp_status_name(psp_status s);

/* ------------------------------------------------------------------------ */
/* Context: threads, logging, collected warnings (no mutable globals)        */
/* ------------------------------------------------------------------------ */

typedef enum psp_log_level {
  PSP_LOG_ERROR = 0,
  PSP_LOG_WARN = 1,
  PSP_LOG_INFO = 2,
  PSP_LOG_DEBUG = 3,
} psp_log_level;

typedef void (*psp_log_fn)(void *user, psp_log_level level, const char *message);

typedef struct psp_context psp_context;

psp_context *psp_context_create(void);
void psp_context_free(psp_context *ctx);
/* n <= 0 means "all cores" (OpenMP default). */
void psp_context_set_threads(psp_context *ctx, int n);
int psp_context_threads(const psp_context *ctx);
/* Messages at or below `max_level` are passed to fn (may be NULL). */
void psp_context_set_log(psp_context *ctx, psp_log_fn fn, void *user, psp_log_level max_level);
/* Records a warning (kept for report.json) and logs it at PSP_LOG_WARN. */
void psp_warn(psp_context *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Logs an informational message (not kept). */
void psp_info(psp_context *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
size_t psp_context_warning_count(const psp_context *ctx);
/* Borrowed. */
const char *psp_context_warning(const psp_context *ctx, size_t i);
/* Largest number of voxels a loader accepts (default 2^31). */
void psp_context_set_max_voxels(psp_context *ctx, int64_t max_voxels);
int64_t psp_context_max_voxels(const psp_context *ctx);
/* Wall-clock time spent per pipeline stage ("load", "ffmap", "segment",
 * "levels", "measure", "write.nifti", "write.qc", ...), accumulated over the
 * runs that used this context, in the order the stages first ran. For
 * benchmarks and --timings; never written into outputs (determinism). */
enum { PSP_MAX_STAGES = 24 };
void psp_context_add_time(psp_context *ctx, const char *stage, double seconds);
size_t psp_context_timing_count(const psp_context *ctx);
/* Name of stage i (borrowed) and its seconds; NULL when i is out of range. */
const char *psp_context_timing(const psp_context *ctx, size_t i, double *seconds);
void psp_context_reset_timings(psp_context *ctx);
/* Monotonic clock in seconds. */
double psp_now(void);
/* Process-wide memory policy for a program that runs analyses (the CLI,
 * the benchmark; call once at start, before any thread): with glibc, every
 * allocation of 1 MiB or more is its own mapping, returned to the system
 * when freed. Without it glibc's adaptive threshold keeps freed volumes in
 * the heap of the thread that freed them, so with 2 threads the peak memory
 * of a 400 x 400 x 29 analysis varied between 133 and 150 MiB from run to
 * run; with it 109-121 MiB, at the same speed. A no-op elsewhere. */
void psp_memory_policy(void);

/* ------------------------------------------------------------------------ */
/* Volumes                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct psp_volume psp_volume;

/* Zero-filled volume on the given grid (already in LPS voxel order). */
psp_volume *psp_volume_create(const int64_t dims[3], const double affine[4][4], psp_error **err);
/* Zero-filled volume on the same grid, with the same file orientation. */
psp_volume *psp_volume_create_like(const psp_volume *like, psp_error **err);
psp_volume *psp_volume_clone(const psp_volume *v, psp_error **err);
void psp_volume_free(psp_volume *v);

void psp_volume_dims(const psp_volume *v, int64_t dims[3]);
int64_t psp_volume_voxel_count(const psp_volume *v);
void psp_volume_affine(const psp_volume *v, double affine[4][4]);
/* Voxel spacing (mm) along i, j, k: the norms of the affine's columns. */
void psp_volume_spacing(const psp_volume *v, double spacing[3]);
/* Area (mm^2) of one voxel in an axial slice: |col_i x col_j|. */
double psp_volume_pixel_area(const psp_volume *v);
/* Volume (mm^3) of one voxel: |det| of the affine's 3x3 part. */
double psp_volume_voxel_volume(const psp_volume *v);
/* World z (mm, RAS+) of the centre of axial slice k. */
double psp_volume_slice_z(const psp_volume *v, int64_t k);
const float *psp_volume_data(const psp_volume *v);
float *psp_volume_data_mut(psp_volume *v);
/* Index along the input file's own slice axis of internal slice k (the file
 * axis that became k; reversed if it was flipped). */
int64_t psp_volume_file_slice(const psp_volume *v, int64_t k);

/* How the internal LPS grid maps onto a file's voxel axes: internal axis a
 * is file axis file_axis[a], reversed when flip[a]. Identity = {0,1,2} and
 * no flips. */
typedef struct psp_orientation {
  int file_axis[3];
  bool flip[3];
} psp_orientation;

psp_orientation psp_volume_orientation(const psp_volume *v);
/* Sets the file orientation used when writing (e.g. phantom variants). */
bool psp_volume_set_orientation(psp_volume *v, const psp_orientation *o, psp_error **err);
/* Three letters naming where the file's i, j, k axes point ("LPS", "RAI"…). */
void psp_orientation_code(const psp_volume *v, char code[4]);

typedef enum psp_grid_relation {
  PSP_GRID_SAME = 0,
  PSP_GRID_ORIGIN_DIFFERS = 1, /* dims, spacing and directions agree */
  PSP_GRID_DIFFERENT = 2,
} psp_grid_relation;

/* Compares two grids (dims, spacing, direction cosines, origin) with small
 * tolerances for header rounding. Writes a human-readable description of
 * what differs into why (may be NULL). */
psp_grid_relation psp_grid_compare(const psp_volume *a, const psp_volume *b, char *why,
                                   size_t why_len);
/* Copies b's affine (and file orientation) onto a; grids must not be
 * PSP_GRID_DIFFERENT. */
bool psp_volume_adopt_geometry(psp_volume *a, const psp_volume *from, psp_error **err);

/* ------------------------------------------------------------------------ */
/* NIfTI input/output (src/io)                                               */
/* ------------------------------------------------------------------------ */

typedef struct psp_load_options {
  /* For 4-D files: which volume (0-based) to take; -1 = refuse 4-D input.
   * A 3-D file takes -1 or 0; a larger index is a PSP_ERR_USAGE error. */
  int64_t volume_index;
  /* Accept NaN voxels (a precomputed FF map marks "no signal" with NaN).
   * Infinite values are always an error. */
  bool allow_nan;
  /* A magnitude image (water, fat, in-phase, opposed-phase): more than 0.1 %
   * negative voxels is an error (PSP_ERR_DATA), a signed image is not one. */
  bool magnitude;
} psp_load_options;

/* Loads a NIfTI-1/NIfTI-2 file (.nii or .nii.gz): uint8, int16, uint16,
 * int32, float32, float64; scl_slope/scl_inter applied; affine from the
 * sform when sform_code > 0, else the qform when qform_code > 0, else the
 * pixdim diagonal (with a warning). Dimensions are checked against the
 * context's voxel limit before any voxel buffer is allocated. NaN/Inf voxels
 * are an error (PSP_ERR_DATA). opt may be NULL. */
psp_volume *psp_nifti_load(const char *path, const psp_load_options *opt, psp_context *ctx,
                           psp_error **err);
/* Same from a memory buffer holding the whole file (gzip or not); `name` is
 * used in messages. */
psp_volume *psp_nifti_load_memory(const void *buf, size_t len, const char *name,
                                  const psp_load_options *opt, psp_context *ctx, psp_error **err);

typedef enum psp_dtype {
  PSP_DT_FLOAT32 = 0,
  PSP_DT_UINT8 = 1,
  PSP_DT_INT16 = 2,
  PSP_DT_UINT16 = 3,
} psp_dtype;

/* Writes v as NIfTI-1 (gzip when path ends in .gz) on the file grid it was
 * loaded from (its orientation), with sform and qform set to the exact
 * affine. Atomic: written to a temporary name in the same folder and renamed;
 * on failure no file is left. Integer types round to nearest. */
bool psp_nifti_save(const psp_volume *v, const char *path, psp_dtype dtype, const char *description,
                    psp_error **err);

/* Writes a buffer to path atomically (temporary file + rename). */
bool psp_write_file_atomic(const char *path, const void *data, size_t len, psp_error **err);
/* Reads a whole file; *len receives the size. Caller frees. */
void *psp_read_file(const char *path, size_t *len, int64_t max_bytes, psp_error **err);
/* SHA-256 of a file as 64 lowercase hex digits + NUL. */
bool psp_sha256_file(const char *path, char hex[65], psp_error **err);
/* SHA-256 of a buffer, same format. */
void psp_sha256_buffer(const void *data, size_t len, char hex[65]);
/* Loads a NIfTI file like psp_nifti_load and also returns the SHA-256 of the
 * file's bytes (read once). sha256 may be NULL. */
psp_volume *psp_nifti_load_hashed(const char *path, const psp_load_options *opt, char sha256[65],
                                  psp_context *ctx, psp_error **err);

/* ------------------------------------------------------------------------ */
/* Fat fraction (src/dixon)                                                  */
/* ------------------------------------------------------------------------ */

typedef struct psp_ffmap psp_ffmap;

typedef struct psp_dixon_options {
  /* Rician noise-bias correction of water/fat magnitudes (default true);
   * applied only when the noise level could be estimated. */
  bool noise_bias_correction;
  /* Multiplier of the noise level that defines the "no signal" floor of
   * F+W (default 3). */
  double noise_floor_factor;
} psp_dixon_options;

void psp_dixon_options_default(psp_dixon_options *o);

typedef enum psp_ff_unit {
  PSP_FF_FRACTION = 0, /* 0..1 */
  PSP_FF_PERCENT = 1,  /* 0..100 */
} psp_ff_unit;

/* FF = F/(F+W) from water and fat magnitude images on the same grid. */
psp_ffmap *psp_ffmap_from_water_fat(const psp_volume *water, const psp_volume *fat,
                                    const psp_dixon_options *opt, psp_context *ctx,
                                    psp_error **err);
/* Two-point magnitude Dixon: water/fat from in-phase and opposed-phase with
 * the fat-dominant ambiguity resolved per voxel. */
psp_ffmap *psp_ffmap_from_ipop(const psp_volume *inphase, const psp_volume *outphase,
                               const psp_dixon_options *opt, psp_context *ctx, psp_error **err);
/* A precomputed FF / PDFF map, used as is (converted to a fraction; NaN
 * voxels mean no signal). A unit that does not match the values (a
 * "fraction" reaching 100, or "percent" staying below 1.5) is an error
 * (PSP_ERR_DATA). */
psp_ffmap *psp_ffmap_from_ff(const psp_volume *ff, psp_ff_unit unit, psp_context *ctx,
                             psp_error **err);
void psp_ffmap_free(psp_ffmap *m);

/* Borrowed. Fat fraction 0..1 per voxel; NaN where there is no signal. Not
 * clipped: after the noise-bias correction a voxel may read slightly below 0
 * or above 1 (clipping would bias region means). */
const psp_volume *psp_ffmap_ff(const psp_ffmap *m);
/* Borrowed; NULL for a precomputed FF map. The (corrected) magnitudes the
 * FF map and the ratio statistics are computed from. */
const psp_volume *psp_ffmap_water(const psp_ffmap *m);
const psp_volume *psp_ffmap_fat(const psp_ffmap *m);
/* A precomputed FF map given with a water image (the same grid): that image
 * and the fat magnitude it implies (W FF / (1 - FF), FF at most 0.98) are
 * kept for the segmentation's image edges (the lamina is dark in both).
 * Nothing is measured from them: psp_ffmap_water / _fat stay NULL.
 * PSP_ERR_USAGE for another kind of map, PSP_ERR_GEOMETRY for another grid. */
bool psp_ffmap_add_water(psp_ffmap *m, const psp_volume *water, psp_error **err);
/* Borrowed; the magnitudes for image edges: the measured water and fat, or
 * those of psp_ffmap_add_water; NULL when there are none. */
const psp_volume *psp_ffmap_edge_water(const psp_ffmap *m);
const psp_volume *psp_ffmap_edge_fat(const psp_ffmap *m);
/* Noise level (standard deviation of one component) of the input images
 * (root mean square of the two) estimated from the background, 0 when it
 * could not be estimated; and the F+W floor used. */
double psp_ffmap_noise_sigma(const psp_ffmap *m);
double psp_ffmap_signal_floor(const psp_ffmap *m);
/* "water+fat", "inphase+opposed-phase" or "ff-map". */
const char *psp_ffmap_source(const psp_ffmap *m);
/* Fraction of the voxels with signal (0..1) the IP/OP resolution called
 * fat-dominant (0 for other inputs). */
double psp_ffmap_fat_dominant_share(const psp_ffmap *m);

typedef struct psp_plausibility {
  bool checked;            /* false when no subcutaneous fat could be found */
  bool ok;                 /* subcutaneous fat FF high, as it must be */
  double subcut_ff_median; /* 0..1 */
  int64_t subcut_voxels;
  /* the inputs look exchanged (water and fat, in-phase and opposed-phase,
   * or a water fraction given as FF): subcutaneous fat below 30 % FF, or
   * the opposed-phase image the brighter in most of the body; analyze
   * refuses such input unless told otherwise */
  bool exchanged;
  char message[256];
} psp_plausibility;

/* Water-fat swap check: finds the subcutaneous fat ring (outer layer of the
 * body) and requires its median FF to be high; for in-phase/opposed-phase
 * input also that the opposed-phase image is not the brighter in most
 * voxels (|W - F| <= W + F). Sets `exchanged` when the inputs look
 * swapped (psp_analyze then refuses them unless ignore_swap_check). */
psp_plausibility psp_ffmap_plausibility(const psp_ffmap *m, psp_context *ctx);

/* ------------------------------------------------------------------------ */
/* Label maps (src/measure/labels.c)                                         */
/* ------------------------------------------------------------------------ */

/* The project's label scheme. */
enum {
  PSP_LABEL_NONE = 0,
  PSP_LABEL_MF_LEFT = 1,
  PSP_LABEL_MF_RIGHT = 2,
  PSP_LABEL_ES_LEFT = 3,
  PSP_LABEL_ES_RIGHT = 4,
  PSP_LABEL_COUNT = 5,
};
/* "multifidus" / "erector_spinae" and "left" / "right" for labels 1..4. */
const char *psp_label_muscle(int label);
const char *psp_label_side(int label);
/* BIDS-style name ("left multifidus") and abbreviation ("MF_L"). */
const char *psp_label_name(int label);
const char *psp_label_abbrev(int label);

typedef struct psp_scheme psp_scheme;

/* Built-in schemes: "paraspinal" (1..4 as above), "musclemap"
 * (5101/5102 multifidus, 5111/5112 erector spinae, other MuscleMap values
 * ignored), "lpm" (1 right ES, 2 right MF, 3 left MF, 4 left ES). */
psp_scheme *psp_scheme_builtin(const char *name, psp_error **err);
/* A BIDS-style TSV with columns index and name (abbreviation optional).
 * Names mentioning multifidus / erector spinae (or MF / ES) and left/right
 * map onto the project's labels; all other rows are known-but-ignored. */
psp_scheme *psp_scheme_load_tsv(const char *path, psp_error **err);
psp_scheme *psp_scheme_parse_tsv(const char *text, size_t len, const char *name, psp_error **err);
void psp_scheme_free(psp_scheme *s);
const char *psp_scheme_name(const psp_scheme *s);

/* Maps a raw label volume onto the project's labels 0..4 (a new volume on
 * the same grid). Values that are not integers or not in the scheme are an
 * error (PSP_ERR_DATA) listing them. `path` is used in messages. */
psp_volume *psp_labels_map(const psp_volume *raw, const psp_scheme *s, const char *path,
                           psp_context *ctx, psp_error **err);
/* The dseg.tsv text for the project's labels. Caller frees. */
char *psp_labels_dseg_tsv(void);

/* ------------------------------------------------------------------------ */
/* Measurement (src/measure)                                                 */
/* ------------------------------------------------------------------------ */

/* Metrics of one region (one label on one slice, or one label over the
 * volume). FF values are fractions 0..1 (reports print percent); NaN when
 * the region has no voxel with signal. */
typedef struct psp_region_metrics {
  int label;            /* 1..4 */
  int64_t slice;        /* internal slice k; -1 for whole-volume rows */
  int64_t file_slice;   /* index along the input file's slice axis; -1 */
  double z_mm;          /* world z of the slice centre; NaN for volume rows */
  int64_t n_voxels;     /* voxels in the label */
  int64_t n_no_signal;  /* of those, voxels below the noise floor */
  double area_mm2;      /* slice rows: n_voxels x pixel area */
  double volume_mm3;    /* n_voxels x voxel volume */
  double ff_mean;       /* mean of voxel FF (voxels with signal) */
  double ff_ratio;      /* sum F / sum (F+W); NaN for an FF-map input */
  double sum_f, sum_fw; /* the sums behind ff_ratio (voxels with signal), so that regions
                           can be combined; NaN for an FF-map input */
  double ff_median;
  double ff_q1, ff_q3;     /* interquartile range */
  double fcsa_mm2;         /* area x (1 - ff_mean) (slice rows) */
  double fat_infiltration; /* share of voxels with FF > 0.5 */
} psp_region_metrics;

typedef struct psp_measurements psp_measurements;

/* Per slice x label and per label over the volume. labels holds 0..4 on the
 * FF map's grid (PSP_GRID_DIFFERENT is an error). Slices where a label is
 * absent produce no row. */
psp_measurements *psp_measure(const psp_volume *labels, const psp_ffmap *ff, psp_context *ctx,
                              psp_error **err);
void psp_measurements_free(psp_measurements *m);
size_t psp_measurements_slice_count(const psp_measurements *m);
/* Borrowed rows, ordered by slice then label. */
const psp_region_metrics *psp_measurements_slice_row(const psp_measurements *m, size_t i);
/* Whole-volume row of label 1..4 (borrowed; n_voxels 0 when absent). */
const psp_region_metrics *psp_measurements_volume_row(const psp_measurements *m, int label);

/* ------------------------------------------------------------------------ */
/* Comparison of two label maps (src/measure/compare.c)                      */
/* ------------------------------------------------------------------------ */

typedef struct psp_compare_row {
  int label;          /* 1..4, or 0 for "all muscles together" */
  int64_t slice;      /* internal slice; -1 for whole-volume rows */
  int64_t file_slice; /* slice index in truth's file; -1 for whole-volume rows */
  int64_t n_pred, n_truth, n_both;
  double dice;                                  /* NaN when both are empty */
  double hd95_mm;                               /* NaN when either is empty */
  double size_diff_pct;                         /* (pred - truth) / truth x 100 (area or volume) */
  double ff_pred_pct, ff_truth_pct, ff_diff_pp; /* NaN without an FF map */
} psp_compare_row;

typedef struct psp_comparison psp_comparison;

/* pred and truth hold project labels 0..4 on grids that are not
 * PSP_GRID_DIFFERENT (an origin-only difference is compared voxel by voxel;
 * warning about it is the caller's job). ff may be NULL. Rows: labels 0..4
 * over the volume, then with per_slice one row per slice and label present
 * in either map, ordered by slice then label. */
psp_comparison *psp_compare(const psp_volume *pred, const psp_volume *truth, const psp_ffmap *ff,
                            bool per_slice, psp_context *ctx, psp_error **err);
void psp_comparison_free(psp_comparison *c);
size_t psp_comparison_row_count(const psp_comparison *c);
const psp_compare_row *psp_comparison_row(const psp_comparison *c, size_t i);
/* CSV text of the rows (header included; the per-slice rows only when
 * slices is true). Caller frees. */
char *psp_comparison_csv(const psp_comparison *c, bool slices);

/* ------------------------------------------------------------------------ */
/* Analysis pipeline (src/pipeline.c) and its outputs (src/report)           */
/* ------------------------------------------------------------------------ */

typedef enum psp_geometry_source {
  PSP_GEOM_AUTO = 0, /* the origin shared by most inputs; tie: first image */
  PSP_GEOM_WATER,
  PSP_GEOM_FAT,
  PSP_GEOM_INPHASE,
  PSP_GEOM_OUTPHASE,
  PSP_GEOM_FF,
  PSP_GEOM_LABELS,
} psp_geometry_source;

typedef struct psp_analysis_options {
  /* Exactly one input kind: water+fat, inphase+outphase, or ff. */
  const char *water_path, *fat_path;
  const char *inphase_path, *outphase_path;
  const char *ff_path;
  psp_ff_unit ff_unit;
  const char *labels_path;  /* NULL: automatic segmentation */
  const char *label_scheme; /* builtin name or TSV path; NULL = paraspinal */
  psp_geometry_source geometry_from;
  psp_load_options load;
  psp_dixon_options dixon;
  /* Stop after the fat-fraction map (paraspinal ffmap): no labels needed. */
  bool ffmap_only;
  /* Write OUTDIR/qc/slice_NNN.png overlays (default true). */
  bool write_qc;
  /* Vertebral level overrides: items "L4/L5=12" (disc or vertebra name =
   * slice index along the input file's own slice axis), and/or a file with
   * one such item per line ('#' comments). NULL / 0 = none. */
  const char *const *level_overrides;
  size_t n_level_overrides;
  const char *landmarks_path;
  /* DICOM input (src/io/dicom.c, dicom_pair.c, dicom_dcmtk.cpp): a folder
   * tree scanned for the Dixon series (water+fat, else in-phase+opposed-
   * phase, else an FF map; see README "DICOM input"); replaces the NIfTI
   * image paths above (--labels may still be a NIfTI file on its grid).
   * dicom_series (may be NULL) is a comma-separated list of
   * SeriesInstanceUIDs the choice is restricted to (needed when it is
   * ambiguous: two candidates are an error, never a silent pick).
   * dicom_toolkit_log lets DCMTK print its own warnings on stderr. */
  const char *dicom_dir;
  const char *dicom_series;
  bool dicom_toolkit_log;
  /* Write patient identifiers (name, ID, birth date, accession number) into
   * report.json / CSV outputs. Default false: they never leave the input. */
  bool keep_identifiers;
  /* With DICOM input: also write OUTDIR/dicom/seg.dcm (DICOM Segmentation)
   * and OUTDIR/dicom/sc_NNN.dcm (QC Secondary Captures) in the source study
   * (src/report/dicom_out.c). Refused (PSP_ERR_USAGE) for NIfTI input. */
  bool dicom_out;
  /* Analyse even when the subcutaneous fat reads below 30 % FF (the water
   * and fat images, or in-phase and opposed-phase, look exchanged; an FF
   * map looks like a water fraction). Default false: such an input is
   * refused (PSP_ERR_DATA) before anything is measured. */
  bool ignore_swap_check;
} psp_analysis_options;

void psp_analysis_options_default(psp_analysis_options *o);

typedef struct psp_result psp_result;

/* Loads the inputs, checks their grids, builds the FF map, obtains the label
 * map and measures. */
psp_result *psp_analyze(const psp_analysis_options *opt, psp_context *ctx, psp_error **err);
void psp_result_free(psp_result *r);
/* Borrowed parts. */
/* The FF map. After a full analysis (not ffmap_only) it keeps only the FF:
 * the water and fat magnitudes are released once measured (memory), so
 * psp_ffmap_water / psp_ffmap_fat return NULL. */
const psp_ffmap *psp_result_ffmap(const psp_result *r);
const psp_volume *psp_result_labels(const psp_result *r);
const psp_measurements *psp_result_measurements(const psp_result *r);
/* The water-fat plausibility check of the run. */
psp_plausibility psp_result_plausibility(const psp_result *r);
/* Name of the input whose geometry (affine) the outputs carry. */
const char *psp_result_geometry_source(const psp_result *r);

/* Writes fatfraction.nii.gz, dseg.nii.gz, dseg.tsv, slices.csv, volumes.csv,
 * levels.csv, report.json, report.html and (unless write_qc is false) qc/
 * into outdir (created if missing). All files are written into a
 * temporary folder inside outdir and moved into place only when all of them
 * succeeded. `argv_line` (may be NULL) is recorded in the provenance. */
bool psp_result_write(const psp_result *r, const char *outdir, const char *argv_line,
                      psp_context *ctx, psp_error **err);

/* ------------------------------------------------------------------------ */
/* Synthetic lumbar phantom (src/phantom)                                    */
/* ------------------------------------------------------------------------ */

typedef struct psp_phantom_options {
  uint64_t seed;
  int64_t dims[3];             /* internal LPS grid */
  double spacing[3];           /* mm */
  double snr;                  /* noise sigma = 1000 (muscle signal) / snr; 0 = no noise; 1..1e5 */
  double ff_multifidus[2];     /* left, right: 0..1, the muscle tissue between streaks */
  double ff_erector[2];        /* left, right */
  double streak_ff;            /* FF of the fatty streaks inside the muscles */
  double streak_share;         /* share of muscle voxels in streaks (0..0.9) */
  double bias_amplitude;       /* smooth multiplicative bias field, 0..0.9, e.g. 0.2 */
  psp_orientation orientation; /* how the files are written */
  double oblique_deg;          /* rotation of the affine about the k axis (-40..40) */
  double roll_deg;             /* the anatomy rotated in the image plane about the grid's centre
                                  (-30..30 degrees; a patient lying rolled), truth included */
} psp_phantom_options;

/* 160 x 128 x 44 voxels of 2.5 x 2.5 x 5 mm (sacrum to L1), seed 1, SNR 25,
 * multifidus 8/10 %, erector spinae 12/15 % (left/right), streaks 60 % FF in
 * 10 % of the muscle, bias 0.2, LPS, not oblique, not rolled. */
void psp_phantom_options_default(psp_phantom_options *o);

typedef struct psp_phantom psp_phantom;

/* Same options and seed give identical voxels at any thread count. Option
 * values out of range are PSP_ERR_USAGE; o may be NULL (defaults). */
psp_phantom *psp_phantom_create(const psp_phantom_options *o, psp_context *ctx, psp_error **err);
void psp_phantom_free(psp_phantom *p);
/* Borrowed: "water", "fat", "inphase", "outphase" (rounded to integers, as
 * written), "labels", "ff_truth" (noise-free FF 0..1, 0 outside the body). */
const psp_volume *psp_phantom_volume(const psp_phantom *p, const char *which);
/* Writes <prefix>_water.nii.gz, _fat, _inphase, _outphase (uint16), _dseg
 * (uint8, + .tsv), _fftruth (float32), _truth.csv (per slice and muscle:
 * area and FF) and _anatomy.csv (vertebra or disc of each slice) into outdir
 * (created if missing). */
bool psp_phantom_write(const psp_phantom *p, const char *outdir, const char *prefix,
                       psp_error **err);

/* ------------------------------------------------------------------------ */
/* DICOM output: phantom series (src/phantom/phantom_dicom.c) and, for       */
/* analyze --dicom-out, SEG + Secondary Capture (src/report/dicom_out.c)     */
/* ------------------------------------------------------------------------ */

/* Whose conventions a DICOM series follows (details in the README, "DICOM
 * output"): Siemens ImageType ...\DIXON\W, \F, \IN_PHASE, \OPP_PHASE and
 * descriptions ending _W _F _in _opp; Philips ImageType / FrameType
 * ...\DIXON\WATER, \FAT, \IN_PHASE, \OUT_PHASE, \FAT_FRACTION; GE IDEAL
 * ImageType ORIGINAL\PRIMARY\OTHER with descriptions "WATER: ...". */
typedef enum psp_dicom_vendor {
  PSP_VENDOR_SIEMENS = 0,
  PSP_VENDOR_PHILIPS = 1,
  PSP_VENDOR_GE = 2,
} psp_dicom_vendor;

typedef enum psp_dicom_codec {
  PSP_CODEC_NONE = 0,   /* Explicit VR Little Endian */
  PSP_CODEC_RLE = 1,    /* RLE Lossless */
  PSP_CODEC_JPEGLS = 2, /* JPEG-LS Lossless */
} psp_dicom_codec;

typedef struct psp_phantom_dicom_options {
  psp_dicom_vendor vendor;
  bool multiframe; /* Enhanced MR Image Storage, one multi-frame file per series */
  psp_dicom_codec codec;
  /* Which series: bit (1 << n) for n = 0 water, 1 fat, 2 in-phase,
   * 3 opposed-phase, 4 fat-fraction map (percent). Default 0xF. */
  unsigned series_mask;
  /* Synthetic identifiers (NULL = "PHANTOM^TEST", "PSP-PHANTOM-0001"); the
   * birth date (19700101), accession number (PSPACC0001) and study date are
   * fixed so the identifier-leak tests have something to look for. */
  const char *patient_name, *patient_id;
  bool verbose; /* DCMTK's own log on stderr */
} psp_phantom_dicom_options;

void psp_phantom_dicom_options_default(psp_phantom_dicom_options *o);

/* Writes the phantom as DICOM series in a vendor's conventions into
 * DIR/NN_<image>/ (created): same study, one Frame of Reference, one series
 * per image, geometry from the volumes' affine and file orientation. UIDs
 * are derived from the content (same phantom and options, same bytes). On
 * failure the series written so far are removed. */
bool psp_phantom_write_dicom(const psp_phantom *p, const char *dir,
                             const psp_phantom_dicom_options *o, psp_error **err);

/* ------------------------------------------------------------------------ */
/* Batch: cohort manifests (src/batch/manifest.c)                            */
/* ------------------------------------------------------------------------ */

/* The input kind of a manifest row. */
typedef enum psp_input_kind {
  PSP_INPUT_NONE = 0, /* discovered folder without a usable input: see problem */
  PSP_INPUT_WATER_FAT = 1,
  PSP_INPUT_IPOP = 2,
  PSP_INPUT_FF = 3,
  PSP_INPUT_DICOM = 4,
} psp_input_kind;

/* One subject (and session) of a cohort. Strings are borrowed from the
 * manifest. Paths are resolved: a relative path in a manifest file is
 * relative to the manifest's folder. Fields that do not apply are NULL. */
typedef struct psp_manifest_row {
  const char *subject; /* a safe folder name (psp_batch_id_valid) */
  const char *session; /* a safe folder name, or "" for no session */
  psp_input_kind kind;
  const char *water, *fat, *inphase, *outphase, *ff, *dicom;
  psp_ff_unit ff_unit;
  const char *labels;       /* NULL: automatic segmentation */
  const char *label_scheme; /* NULL, a built-in scheme name, or a TSV path */
  const char *landmarks;    /* level-override file, or NULL */
  const char *series;       /* dicom rows: SeriesInstanceUID[,UID] to use (analyze --series),
                               or NULL */
  const char *problem;      /* discovery only: why the folder cannot be analysed */
  size_t line;              /* line of the row in the manifest; 0 when discovered */
} psp_manifest_row;

typedef struct psp_manifest psp_manifest;

/* A manifest CSV (RFC 4180: comma-separated, "quoted" fields with ""
 * escapes, LF or CRLF line ends, optional UTF-8 byte-order mark). The header
 * row names the columns: subject (required), session, water+fat,
 * inphase+outphase, ff (+ ff_unit: fraction|percent), dicom (+ series: the
 * UID or "UID,UID" to use, as analyze --series), labels, label_scheme,
 * landmarks; each row fills exactly one input kind. Rows with every field
 * empty (a spreadsheet's trailing ",,," lines) are skipped. Strict:
 * unknown or repeated columns, wrong field counts, unsafe subject/session
 * ids, rows repeating a subject/session (also when they differ only in
 * letter case) and a subject with rows both with and without a session are
 * errors (PSP_ERR_FORMAT) naming name:line:column. `name` is the manifest's
 * path: relative paths in the rows are resolved against its folder. */
psp_manifest *psp_manifest_parse(const char *text, size_t len, const char *name, psp_error **err);
/* Reads and parses a manifest file; relative paths become absolute. */
psp_manifest *psp_manifest_load(const char *path, psp_error **err);
/* Discovers a BIDS-like tree: ROOT/sub-X/[ses-Y/]anat/ with *_water + *_fat,
 * else *_inphase + *_outphase, else *_ff NIfTI files (.nii or .nii.gz), or
 * ROOT/sub-X/[ses-Y/]dicom/ (a DICOM folder). Rows are sorted by subject then
 * session; a folder without a usable input (or an ambiguous one) becomes a
 * row of kind PSP_INPUT_NONE with `problem` set. Paths are absolute. */
psp_manifest *psp_manifest_discover(const char *root, psp_context *ctx, psp_error **err);
void psp_manifest_free(psp_manifest *m);
size_t psp_manifest_row_count(const psp_manifest *m);
/* Borrowed; NULL when i is out of range. */
const psp_manifest_row *psp_manifest_row_at(const psp_manifest *m, size_t i);
/* The manifest's path (or the discovery root). Borrowed. */
const char *psp_manifest_name(const psp_manifest *m);
/* The rows (all when rows is NULL, else rows[0..n_rows)) as manifest CSV,
 * header included; rows of kind PSP_INPUT_NONE are left out. Caller frees. */
char *psp_manifest_csv(const psp_manifest *m, const size_t *rows, size_t n_rows, psp_error **err);
/* True when id can be a folder name: 1-64 characters from [A-Za-z0-9._-],
 * not starting with '.' (so never "." or ".."). */
bool psp_batch_id_valid(const char *id);

/* Library version string. */
const char *psp_version(void);

#ifdef __cplusplus
}
#endif
#endif /* PARASPINAL_H */
