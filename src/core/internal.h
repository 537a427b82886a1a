/*
 * internal.h — definitions shared by the library's stages, not installed.
 * The public contracts live in include/paraspinal.h.
 */
#ifndef PSP_INTERNAL_H
#define PSP_INTERNAL_H

#include "paraspinal.h"

#include <stdarg.h>

struct psp_volume {
  int64_t dims[3];     /* internal LPS grid */
  double affine[4][4]; /* internal voxel -> world (RAS+ mm) */
  psp_orientation orient;
  float *data;   /* dims[0]*dims[1]*dims[2], i fastest */
  bool no_xform; /* a NIfTI file without qform and sform: the affine is the
                    pixdim diagonal, a guess (psp_grid_compare) */
};

/* Sets *err (if err != NULL and *err == NULL). Always returns false so that
 * `return psp_error_set(...)` works in bool functions. */
bool psp_error_set(psp_error **err, psp_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prefixes an existing error's message ("while loading X: ..."). */
void psp_error_prefix(psp_error **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Logs at a level without recording. */
void psp_log(psp_context *ctx, psp_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Checked allocation helpers: set PSP_ERR_NOMEM on failure. */
void *psp_malloc(size_t n, psp_error **err);
void *psp_calloc(size_t count, size_t size, psp_error **err);

/* Voxel index of (i,j,k) on an internal grid. */
static inline int64_t psp_idx(const int64_t dims[3], int64_t i, int64_t j, int64_t k) {
  return (k * dims[1] + j) * dims[0] + i;
}

/* Creates a volume with an uninitialised-then-zeroed buffer and identity
 * orientation. */
psp_volume *psp_volume_alloc(const int64_t dims[3], const double affine[4][4], psp_error **err);

/* Builds an internal (LPS) volume from voxels in a file's own order and the
 * file's voxel-to-world affine: axes are permuted/flipped, never resampled;
 * the affine stays exact. Fails (PSP_ERR_GEOMETRY) for a singular affine.
 * `name` is used in messages. The file order data is only read. */
psp_volume *psp_volume_from_file_order(const float *file_data, const int64_t file_dims[3],
                                       const double file_affine[4][4], const char *name,
                                       psp_error **err);
/* The same from a buffer the caller gives up when no axis is permuted: the
 * volume then keeps it (voxels flipped in place; *file_data set to NULL);
 * otherwise *file_data is only read and stays the caller's. */
psp_volume *psp_volume_from_file_order_take(float **file_data, const int64_t file_dims[3],
                                            const double file_affine[4][4], const char *name,
                                            psp_error **err);
/* The inverse: file dims, file affine and voxels in the file's order for the
 * volume's remembered orientation. out must hold voxel_count floats. */
/* The file layout of psp_volume_to_file_order without copying: internal
 * voxel (i, j, k) goes to file index offset + i stride[0] + j stride[1] +
 * k stride[2]. */
void psp_volume_file_layout(const psp_volume *v, int64_t file_dims[3], double fa[4][4],
                            int64_t stride[3], int64_t *offset);
void psp_volume_to_file_order(const psp_volume *v, float *out, int64_t file_dims[3],
                              double file_affine[4][4]);

/* Growable string buffer for CSV/JSON/TSV text. */
typedef struct psp_strbuf {
  char *data;
  size_t len, cap;
  bool failed;
} psp_strbuf;
void psp_strbuf_init(psp_strbuf *b);
void psp_strbuf_printf(psp_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void psp_strbuf_append(psp_strbuf *b, const char *s);
/* Returns the string (caller frees) or NULL (and sets err) if any append
 * failed. */
char *psp_strbuf_take(psp_strbuf *b, psp_error **err);
void psp_strbuf_free(psp_strbuf *b);

/* Formats a double for CSV: "%.*f", or "" for NaN. */
void psp_fmt_num(char *out, size_t n, double v, int decimals);

/* Frees a volume's voxels but keeps its grid (dims, affine, orientation):
 * for inputs whose voxels were consumed and whose header the report still
 * describes. psp_volume_data then returns NULL. */
void psp_volume_release_data(psp_volume *v);
/* Frees the (corrected) water and fat magnitudes of a map once measured;
 * psp_ffmap_water / psp_ffmap_fat then return NULL, the FF stays. */
void psp_ffmap_release_magnitudes(psp_ffmap *m);
/* A map like `like` (noise level, floor, source, fat-dominant share copied)
 * holding volumes the caller gives up: ff on like's grid, water and fat
 * (both or neither) on the same grid, e.g. a resampled copy
 * (src/segment/align.c). NULL when out of memory, the volumes then freed. */
psp_ffmap *psp_ffmap_adopt(const psp_ffmap *like, psp_volume *ff, psp_volume *water,
                           psp_volume *fat, psp_error **err);

/* A context for work run in parallel with its parent's (e.g. loading two
 * inputs at once): same settings, but its messages are held, not logged,
 * until psp_context_join replays them into the parent in order (warnings
 * are kept there) and frees the child; so the parent's warnings do not
 * depend on which thread finished first. Join returns false when a message
 * was lost for want of memory. */
psp_context *psp_context_fork(const psp_context *parent);
bool psp_context_join(psp_context *parent, psp_context *child);

/* Connected components of a 2-D mask (src/core/mask.c). lab: nx * ny
 * labels out (0 = not in the mask, else 1..count numbered in the raster
 * order of each component's first pixel); parent: scratch of at least
 * nx * ny + 1 entries. invert labels the zero
 * pixels instead. 4-connected unless conn8. Returns the component count. */
int32_t psp_cc_label(const uint8_t *m, bool invert, int64_t nx, int64_t ny, bool conn8,
                     int32_t *lab, int32_t *parent);
/* The same for a mask that is empty outside the rectangle box = {i0, i1,
 * j0, j1} (inclusive): only the rectangle of lab (stride nx) is written,
 * with the same labels psp_cc_label gives there. */
int32_t psp_cc_label_box(const uint8_t *m, int64_t nx, const int64_t box[4], bool conn8,
                         int32_t *lab, int32_t *parent);
/* Bounding box of the nonzero pixels of a 2-D mask: box = {i0, i1, j0, j1}
 * (inclusive). False when the mask is empty. */
bool psp_mask_box(const uint8_t *m, int64_t nx, int64_t ny, int64_t box[4]);
/* Keeps the largest component of m (the first in raster order on ties);
 * returns its size (0: empty mask). Same scratch as psp_cc_label. */
int64_t psp_cc_keep_largest(uint8_t *m, int64_t nx, int64_t ny, bool conn8, int32_t *lab,
                            int32_t *parent);
/* Fills the holes of m: zero pixels not 4-connected to the slice border. */
void psp_cc_fill_holes(uint8_t *m, int64_t nx, int64_t ny, int32_t *lab, int32_t *parent);

/* 1-D squared distance transform of f (INFINITY = no feature) with sample
 * spacing s (mm): d[q] = min_p ((q - p) s)^2 + f[p] (src/core/mask.c). v (n)
 * and z (n + 1) are scratch. Sites with infinite f are left out of the
 * lower envelope; all infinite gives INFINITY everywhere. */
void psp_edt_1d(const double *f, int64_t n, double s, double *d, int64_t *v, double *z);

/* Sorting helper: sorts floats ascending (deterministic). */
void psp_sort_floats(float *v, size_t n);
/* Quantile (0..1) of sorted values, linear interpolation. */
double psp_quantile_sorted(const float *sorted, size_t n, double q);
/* psp_quantile_sorted of v as psp_sort_floats would sort it, without
 * sorting all of it (v is reordered; non-NaN values). */
double psp_quantile_select(float *v, size_t n, double q);

/* dir + "/" + name into out; false (PSP_ERR_IO) when it does not fit. */
bool psp_path_join(char *out, size_t n, const char *dir, const char *name, psp_error **err);
/* Portable mkdir -p; true if the folder exists afterwards. */
bool psp_mkdir_p(const char *path, psp_error **err);
/* Removes a folder and the plain files directly inside it. */
void psp_remove_tree_shallow(const char *path);
/* When an output file reaches the disk: PSP_SYNC_NOW, before its writer
 * returns (fsync, then rename); PSP_SYNC_LATER, when its folder's owner
 * calls psp_sync_folder before publishing the folder's files. Writing a
 * whole set of files first and syncing them together costs one journal
 * commit instead of one per file. */
typedef enum { PSP_SYNC_NOW, PSP_SYNC_LATER } psp_sync;
/* psp_write_file_atomic in pieces: open (the temporary file in the same
 * folder), write as often as needed, commit (fsync unless PSP_SYNC_LATER,
 * close, rename into place) or abort (close, remove). A failing write or
 * commit also aborts: the writer is freed by commit, abort and any failure. */
typedef struct psp_file_writer psp_file_writer;
psp_file_writer *psp_file_writer_open(const char *path, psp_sync sync, psp_error **err);
bool psp_file_writer_write(psp_file_writer *w, const void *data, size_t len, psp_error **err);
bool psp_file_writer_commit(psp_file_writer *w, psp_error **err);
void psp_file_writer_abort(psp_file_writer *w);
/* Asks the kernel (Linux) to back the 2 MiB-aligned part of the n bytes at
 * p with huge pages, before they are first touched: a buffer of a whole
 * volume is then faulted in 2 MiB at a time instead of 4 KiB (a 400 x 400
 * x 29 analysis: ~37,600 page faults -> ~12,600). A hint only; buffers
 * under 4 MiB are left alone. */
void psp_advise_huge(void *p, size_t n);
/* psp_write_file_atomic with the choice of when the data reaches the disk. */
bool psp_write_file(const char *path, const void *data, size_t len, psp_sync sync, psp_error **err);
/* Makes every regular file directly in dir, and dir itself, durable
 * (fsync), for files written with PSP_SYNC_LATER. false (PSP_ERR_IO, the
 * file named) when the disk reports a failure. */
bool psp_sync_folder(const char *dir, psp_error **err);
/* psp_nifti_save (include/paraspinal.h) with the choice of psp_sync. */
bool psp_nifti_save_sync(const psp_volume *v, const char *path, psp_dtype dtype,
                         const char *description, psp_sync sync, psp_error **err);

/* Pipeline <-> report: read-only views of a result (src/pipeline.c) and the
 * writer of all analysis outputs (src/report/report.c). */
int psp_result_input_count(const psp_result *r);
void psp_result_input(const psp_result *r, int i, const char **role, const char **path,
                      const char **sha256, const psp_volume **vol);
/* Input i's grid as its file gave it (no voxels: dims, affine, orientation),
 * also when the analysis continued with another input's origin
 * (--geometry-from); borrowed. */
const psp_volume *psp_result_input_file_grid(const psp_result *r, int i);
const char *psp_result_scheme_name(const psp_result *r);
const psp_analysis_options *psp_result_options(const psp_result *r);
bool psp_report_write_outputs(const psp_result *r, const char *outdir, const char *argv_line,
                              psp_context *ctx, psp_error **err);

#endif
