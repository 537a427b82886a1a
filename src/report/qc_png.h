/*
 * qc_png.h — quality-control PNG images, one per axial slice (internal; the
 * report writer and the pipeline call it, it is not part of the public API).
 */
#ifndef PSP_QC_PNG_H
#define PSP_QC_PNG_H

#include "core/internal.h"

/* Optional per-slice landmarks, in voxel coordinates (i, j) on the internal
 * grid. NaN = absent (a zero-filled struct draws marks at voxel 0: fill the
 * fields you do not have with NAN). */
typedef struct psp_qc_slice_marks {
  double canal_i, canal_j;     /* spinal canal centre */
  double vb_i, vb_j;           /* vertebral body centre */
  double spinous_i, spinous_j; /* spinous process tip */
  double midline_i;            /* left-right midline at row canal_j, drawn as a dotted line */
  double midline_slope;        /* its di/dj (0: along the columns; a spine rotated in-plane) */
  const char *status;          /* NULL, or why the slice is flagged ("no spine: below sacrum") */
  const uint8_t *body;         /* NULL, or the body mask on the anatomy's grid (nx * ny, nonzero
                                  inside): its outline is drawn */
  const char *info;            /* NULL, or a note on a measured slice (drawn where status is not) */
} psp_qc_slice_marks;

/* Geometry of the images psp_qc_write_pngs writes for a grid (the same for
 * every slice). The panels show a crop of crop_w x crop_h voxels from
 * (i0, j0). Display column x of a panel shows voxel i = i0 + x / col_scale;
 * display row y shows voxel j = j0 + floor((y + 0.5) * crop_h / panel_h), so
 * rows are stretched by the spacing ratio and no voxel row is skipped. */
typedef struct psp_qc_layout {
  int width, height;              /* whole image */
  int panel_x[2], panel_y;        /* top-left corner of the anatomy / FF panels */
  int panel_w, panel_h;           /* size of each panel */
  int col_scale;                  /* display pixels per voxel along i (integer) */
  double row_scale;               /* display pixels per voxel along j (panel_h / crop_h) */
  int64_t i0, j0, crop_w, crop_h; /* the crop, in voxels */
} psp_qc_layout;

/* Layout for v's whole grid. Fails (PSP_ERR_LIMIT) when a panel would be
 * larger than 8192 pixels along either side, (PSP_ERR_USAGE) for an empty
 * grid. */
bool psp_qc_layout_for(const psp_volume *v, psp_qc_layout *out, psp_error **err);
/* Layout zoomed on the muscles: the bounding box of labels 1..4 over all
 * slices plus a margin of 25 mm (at least a quarter of the box) on every
 * side and 30 mm more in front (the vertebra), the same crop for every
 * slice; the whole grid when labels is NULL or empty. */
bool psp_qc_layout_zoom(const psp_volume *v, const psp_volume *labels, psp_qc_layout *out,
                        psp_error **err);

/* Outline colour of label 1..4 (colour-blind-aware: orange, sky blue,
 * reddish purple, yellow); black for any other value. */
void psp_qc_label_colour(int label, uint8_t rgb[3]);

/* Writes QC_DIR/slice_NNN.png (NNN = psp_volume_file_slice, the input
 * file's own slice index, zero padded to 3 digits) for every axial slice,
 * creating QC_DIR if needed. Each image: a header (slice index, internal k,
 * z in mm, the status text in orange when the slice is flagged), the
 * anatomy panel (any float volume, windowed per volume from the 1st to the
 * 99.5th percentile of the body) and the FF panel (fraction 0..1 as 0-100 %
 * grey, NaN = no signal in dark blue), both with 1-pixel outlines (not
 * filled) of labels 1..4, landmark crosses and the dotted midline, and
 * orientation letters in radiological convention (patient Right on the
 * image's left, Anterior at the top); a legend (label swatches "MF L",
 * "MF R", "ES L", "ES R", FF grey ramp, no-signal swatch) at the bottom.
 * Panels are upscaled by nearest neighbour (see psp_qc_layout).
 *
 * anatomy and ff are required; labels and marks (an array of dims[2]
 * entries) may be NULL. All volumes must share one grid (dims, spacing,
 * directions; PSP_ERR_GEOMETRY otherwise). The PNGs are 8-bit indexed
 * colour (greys quantised to 239 levels; see the DESIGN comment of
 * qc_png.c). compression_level is the zlib level 0..9 (libpng), or
 * < 0 for the default (1). Slices are rendered, encoded and written (each
 * atomically, fsync'ed: PSP_SYNC_NOW) in parallel (ctx's thread count; ctx may be NULL); the bytes
 * do not depend on the thread count. On failure the error of the first
 * failing slice is reported and the images written stay in QC_DIR (the
 * caller's output folder is all-or-nothing as a whole). */
bool psp_qc_write_pngs(const char *qc_dir, const psp_volume *anatomy, const psp_volume *ff,
                       const psp_volume *labels, const psp_qc_slice_marks *marks,
                       int compression_level, psp_context *ctx, psp_error **err);
/* The same with the anatomy's display window {lo, hi} from
 * psp_qc_anatomy_window (window NULL: computed here), so that a caller
 * writing the slices and the sagittal image computes it once, and the
 * choice of when the files reach the disk (PSP_SYNC_LATER: the caller
 * runs psp_sync_folder on qc_dir). */
bool psp_qc_write_pngs_window(const char *qc_dir, const psp_volume *anatomy, const psp_volume *ff,
                              const psp_volume *labels, const psp_qc_slice_marks *marks,
                              const float *window, int compression_level, psp_sync sync,
                              psp_context *ctx, psp_error **err);
/* Display window {lo, hi} of the anatomy panels: the 1st..99.5th
 * percentile of the body (see the DESIGN comment of qc_png.c). */
bool psp_qc_anatomy_window(const psp_volume *anatomy, float window[2], psp_error **err);

/* From an analysis result (src/report/report.c), shared by the PNG and the
 * DICOM writers: the image the QC panels show (water, in-phase, or the FF
 * map itself; borrowed), and the landmarks and flag reasons of the automatic
 * segmentation per slice (NULL, with *status NULL, when the labels were
 * given or on failure with err set; the caller frees both). */
const psp_volume *psp_report_qc_anatomy(const psp_result *r);
psp_qc_slice_marks *psp_report_qc_marks(const psp_result *r, char (**status)[256], psp_error **err);

/* For src/report/dicom_out.c: the image psp_qc_write_pngs writes for
 * internal slice k, as a new RGB buffer (*width x *height x 3 bytes, rows top
 * to bottom; caller frees), or NULL with err set. Its greys are the exact
 * 8-bit values (the PNGs' are quantised to 239 levels). */
uint8_t *psp_qc_render_rgb(const psp_volume *anatomy, const psp_volume *ff,
                           const psp_volume *labels, const psp_qc_slice_marks *marks, int64_t k,
                           int *width, int *height, psp_error **err);
/* Draws s with the QC font (5x7 at 2x, upper case) with its top-left corner
 * at (x, y), clipped to the buffer; returns the x after the text. */
int psp_qc_draw_text(uint8_t *rgb, int width, int height, int x, int y, const char *s,
                     const uint8_t colour[3]);
/* Pixels per character and the height of a line of that font. */
int psp_qc_char_advance(void);
int psp_qc_line_height(void);

/* ------------------------------------------------------------------------ */
/* Sagittal reformat with the level assignment                               */
/* ------------------------------------------------------------------------ */

/* One disc to mark on the sagittal image. */
typedef struct psp_qc_disc_mark {
  double slice;     /* sub-slice centre, internal numbering (k) */
  const char *name; /* "L4/L5", relative "D2", or "" */
  bool inferred;    /* not seen in the image (drawn dashed) */
} psp_qc_disc_mark;

/* Inputs of psp_qc_write_sagittal. anatomy and ff are required and share
 * one grid; every per-slice array (dims[2] entries, internal order) may be
 * NULL. */
typedef struct psp_qc_sagittal {
  const psp_volume *anatomy, *ff;
  const char *anatomy_title; /* title of the anatomy panel ("WATER"); NULL = "IMAGE" */
  const double *midline_i;   /* midline column (voxel i) per slice; NaN = unknown */
  const char *const *names;  /* level name per slice ("" = unknown) */
  const bool *is_disc;       /* slice named a disc (its name is then not repeated) */
  const double *confidence;  /* level confidence 0..1 per slice */
  const double *profile;     /* marrow FF 0..1 per slice (NaN = none), plotted */
  const psp_qc_disc_mark *discs;
  size_t n_discs;
  const float *window; /* psp_qc_anatomy_window of anatomy, or NULL: computed here */
} psp_qc_sagittal;

/* Where the slices are on the sagittal image: internal slice k covers the
 * rows y with k == n_slices - 1 - floor((y - panel_y + 0.5) * n_slices /
 * panel_h), panel_y <= y < panel_y + panel_h (superior at the top). */
typedef struct psp_qc_sagittal_geometry {
  int width, height;
  int panel_y, panel_h;
  int64_t n_slices;
} psp_qc_sagittal_geometry;

/* Writes one PNG (atomically; synced as sync says) at path: a sagittal reformat of the anatomy
 * and of the FF map through the midline (the mean of the columns within
 * 1.5 mm of midline_i on each slice; slices without a midline take the one
 * interpolated from their neighbours, or the image centre), cropped along
 * j to the part with signal; rows are slices, superior at the top, scaled
 * by the slice thickness vs the pixel size so the anatomy keeps its true
 * proportions; anterior on the left. The discs are horizontal lines across
 * the panels (dashed when inferred) labelled with their names on the right,
 * next to a per-slice confidence bar and the vertebra names; file slice
 * numbers on the left; the marrow profile as a plot beside the FF panel.
 * geo (may be NULL) receives the geometry. Deterministic (one thread). */
bool psp_qc_write_sagittal(const char *path, const psp_qc_sagittal *s, int compression_level,
                           psp_sync sync, psp_qc_sagittal_geometry *geo, psp_error **err);

#endif
