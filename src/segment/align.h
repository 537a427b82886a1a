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
  uint8_t *body;      /* nz planes on the labels' grid: 1 inside the body's outline (landmarks) */
  int64_t body_plane; /* bytes per plane of body (the labels' nx * ny) */
  int64_t nz;
  psp_slice_landmarks *lm;
  double axis_deg;    /* the spine's measured in-plane angle (NaN: not measured) */
  bool aligned;       /* segmented in frames rotated onto the spine's axis */
  double *frames;     /* aligned or fine pixels: nz x FRAME_DOUBLES, each slice's frame (align.c) */
  double frame_mm[2]; /* pixel of the frame the muscles were told apart in (mm) */
  bool unanchored;    /* the height priors took the lowest spine slice as NO_ANCHOR_DZ_MM
                         above L5/S1 (segment.c) */
  psp_height_from height_from; /* what placed the height priors' zero (segment.c) */
  double height_zero;          /* where: an internal sub-slice position (NaN: no spine) */
};

#define FRAME_DOUBLES 13

/* The spine's in-plane axis of a volume (psp_seg_axis_find). */
typedef struct psp_seg_axis {
  double deg;    /* median over the slices; NaN with fewer than AXIS_MIN_SLICES */
  int64_t n;     /* slices measured */
  double ci, cj; /* pivot of the rotation: the median canal centre (voxels) */
  double *per;   /* when rotating: the angle (degrees) of each of the nz slices;
                    NULL otherwise (psp_seg_axis_free) */
} psp_seg_axis;

/* Measures the axis on the slices whose landmarks have status OK (ff: the
 * FF volume the landmarks were found on). Returns 1 when the volume should
 * be segmented in rotated frames (thresholds in align.c; ax->per then set),
 * 0 when as it is, -1 out of memory (*err set). */
int psp_seg_axis_find(const psp_volume *ff, const psp_slice_landmarks *lm, psp_seg_axis *ax,
                      psp_error **err);
void psp_seg_axis_free(psp_seg_axis *ax);

/* The segmentation of src/segment/segment.c in the FF map's own frame. ax
 * (may be NULL) receives the spine's axis, measured once the landmarks
 * are final; when psp_seg_axis_find asks for a rotated frame the run stops
 * there and returns the segmentation with landmarks only (no labels),
 * before calling bottom. */
psp_segmentation *psp_seg_run(const psp_ffmap *ffm, psp_seg_bottom_fn bottom, void *user,
                              psp_seg_axis *ax, psp_context *ctx, psp_error **err);

#endif
