/*
 * align.h — the segmentation's result type and its run in a frame aligned
 * with the spine's in-plane axis (src/segment/align.c; internal to
 * src/segment, not installed).
 */
#ifndef PSP_SEGMENT_ALIGN_H
#define PSP_SEGMENT_ALIGN_H

#include "segment/segment.h"

struct psp_segmentation {
  psp_volume *labels;
  int64_t nz;
  psp_slice_landmarks *lm;
  double axis_deg;  /* the spine's measured in-plane angle (NaN: not measured) */
  bool aligned;     /* segmented in a frame rotated by axis_deg */
  double frame[13]; /* that frame (align.c's struct frame) */
};

/* The spine's in-plane axis of a volume (psp_seg_axis_find). */
typedef struct psp_seg_axis {
  double deg;    /* median over the slices; NaN with fewer than AXIS_MIN_SLICES */
  double ci, cj; /* pivot of the rotation: the median canal centre (voxels) */
  int64_t n;     /* slices measured */
} psp_seg_axis;

/* Measures the axis on the slices whose landmarks have status OK (ff: the
 * FF volume the landmarks were found on). Returns 1 when the volume should
 * be segmented in a rotated frame (|deg| >= the threshold in align.c), 0
 * when as it is, -1 out of memory (*err set). */
int psp_seg_axis_find(const psp_volume *ff, const psp_slice_landmarks *lm, psp_seg_axis *ax,
                      psp_error **err);

/* The segmentation of src/segment/segment.c in the FF map's own frame. ax
 * (may be NULL) receives the spine's axis, measured once the landmarks
 * are final; when psp_seg_axis_find asks for a rotated frame the run stops
 * there and returns the segmentation with landmarks only (no labels),
 * before calling bottom. */
psp_segmentation *psp_seg_run(const psp_ffmap *ffm, psp_seg_bottom_fn bottom, void *user,
                              psp_seg_axis *ax, psp_context *ctx, psp_error **err);

#endif
