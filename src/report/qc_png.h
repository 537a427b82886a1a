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
  double midline_i;            /* left-right midline, drawn as a dotted line */
  const char *status;          /* NULL, or why the slice is flagged ("no spine: below sacrum") */
} psp_qc_slice_marks;

/* Geometry of the images psp_qc_write_pngs writes for a grid (the same for
 * every slice). Display column x of a panel shows voxel i = x / col_scale;
 * display row y shows voxel j = floor((y + 0.5) * dims[1] / panel_h), so
 * rows are stretched by the spacing ratio and no voxel row is skipped. */
typedef struct psp_qc_layout {
  int width, height;       /* whole image */
  int panel_x[2], panel_y; /* top-left corner of the anatomy / FF panels */
  int panel_w, panel_h;    /* size of each panel */
  int col_scale;           /* display pixels per voxel along i (integer) */
  double row_scale;        /* display pixels per voxel along j (panel_h / dims[1]) */
} psp_qc_layout;

/* Layout for v's grid. Fails (PSP_ERR_LIMIT) when a panel would be larger
 * than 8192 pixels along either side, (PSP_ERR_USAGE) for an empty grid. */
bool psp_qc_layout_for(const psp_volume *v, psp_qc_layout *out, psp_error **err);

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
 * directions; PSP_ERR_GEOMETRY otherwise). compression_level is the zlib
 * level 0..9, or < 0 for the default (3). Slices are rendered and encoded in
 * parallel (ctx's thread count; ctx may be NULL) and written one by one,
 * each atomically; the bytes do not depend on the thread count. On failure
 * images already written stay in QC_DIR (the caller's output folder is
 * all-or-nothing as a whole). */
bool psp_qc_write_pngs(const char *qc_dir, const psp_volume *anatomy, const psp_volume *ff,
                       const psp_volume *labels, const psp_qc_slice_marks *marks,
                       int compression_level, psp_context *ctx, psp_error **err);

#endif
