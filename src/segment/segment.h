/*
 * segment.h — automatic segmentation of the left/right multifidus and
 * erector spinae (internal API, not installed). psp_segment runs on the FF
 * map of a psp_ffmap and returns project labels 0..4 on the same grid (same
 * file orientation), a status per axial slice (flagged slices are left
 * empty, never guessed) and the landmarks found on each slice. A spine
 * rotated in the image plane is segmented in a frame aligned with its axis
 * (src/segment/align.c); labels and landmarks come back on the map's grid.
 */
#ifndef PSP_SEGMENT_H
#define PSP_SEGMENT_H

#include "anatomy/landmarks.h"
#include "core/internal.h"

typedef struct psp_segmentation psp_segmentation;

/* Segments every axial slice. Fails only on out-of-memory / empty input;
 * slices where the muscles cannot be found are flagged, not errors. The
 * height priors count from the lowest slice with a spine. */
psp_segmentation *psp_segment(const psp_ffmap *ff, psp_context *ctx, psp_error **err);

/* What placed the zero of the height priors (the multifidus/erector spinae
 * proportion, src/segment/segment.c: the height where the multifidus falls
 * below half of the two muscles, about 22 mm above the L5/S1 disc): */
typedef enum psp_height_from {
  PSP_HEIGHT_UNCHECKED = 0, /* the lowest slice with a spine, the stack's bottom not checked */
  PSP_HEIGHT_BOTTOM,        /* the same, an iliac crest (or the L5 body) in view */
  PSP_HEIGHT_SACRUM,        /* 22 mm above the L5/S1 disc seen above the sacrum */
  PSP_HEIGHT_NAMED,         /* 22 mm above the L5/S1 disc as levels named by hand place it */
  PSP_HEIGHT_ASSUMED        /* nothing to anchor to: 24 mm below the lowest slice with a spine */
} psp_height_from;

/* Whether the image confirms that the stack reaches down to the
 * lumbosacral junction (e.g. the sacrum or an iliac crest is in view):
 * called once, when the landmarks of every slice are known and before any
 * muscle is segmented (psp_segmentation_slice works then; labels do not).
 * ff is the map being segmented: the caller's, or its copy rotated into
 * the frame of the spine's axis (src/segment/align.c), whose landmarks s
 * then holds; psp_segmentation_to_image maps that frame's points.
 * Returns what places the zero of the height priors (psp_height_from,
 * above): PSP_HEIGHT_NAMED (levels named by hand, --disc or --landmarks)
 * or PSP_HEIGHT_SACRUM (the sacrum in view) with *l5s1 (NaN on entry) the
 * L5/S1 disc's sub-slice position, which may lie outside the stack;
 * PSP_HEIGHT_BOTTOM (the lowest slice with a spine: an iliac crest in
 * view); PSP_HEIGHT_ASSUMED (nothing: that slice is taken as lying
 * NO_ANCHOR_DZ_MM above the zero, see segment.c); or -1 with *err set. */
typedef int (*psp_seg_bottom_fn)(const psp_ffmap *ff, const psp_segmentation *s, void *user,
                                 double *l5s1, psp_error **err);
/* psp_segment with that check (bottom NULL: as psp_segment). */
psp_segmentation *psp_segment_with(const psp_ffmap *ff, psp_seg_bottom_fn bottom, void *user,
                                   psp_context *ctx, psp_error **err);
void psp_segmentation_free(psp_segmentation *s);

/* Borrowed: labels 0..4 (project scheme) on the FF map's grid. */
const psp_volume *psp_segmentation_labels(const psp_segmentation *s);
/* Transfers ownership of the label volume to the caller (the segmentation
 * keeps statuses and landmarks; labels() returns NULL afterwards). */
psp_volume *psp_segmentation_take_labels(psp_segmentation *s);
/* Short description of the method (for report.json). */
const char *psp_segmentation_method(const psp_segmentation *s);
int64_t psp_segmentation_slice_count(const psp_segmentation *s);
/* Borrowed; k in 0..slice_count-1 (internal slice order). */
const psp_slice_landmarks *psp_segmentation_slice(const psp_segmentation *s, int64_t k);
/* Borrowed: slice k's body mask on the labels' grid (nx * ny bytes, 1
 * inside the body's outline the landmarks found: the largest region with
 * signal, holes filled; all 0 where there was none), or NULL. */
const uint8_t *psp_segmentation_body(const psp_segmentation *s, int64_t k);
/* Number of slices with status OK. */
int64_t psp_segmentation_ok_count(const psp_segmentation *s);
/* Number of slices with status OK on which a muscle was left out, cut by
 * the field of view (psp_slice_landmarks cut_labels). */
int64_t psp_segmentation_cut_count(const psp_segmentation *s);
/* The mean over the measured slices of the share of each side's (left [0],
 * right [1]) multifidus/erector spinae boundary on a visible fat plane
 * (psp_slice_landmarks.plane_share); NaN where no slice has one. */
void psp_segmentation_plane_share(const psp_segmentation *s, double share[2]);

/* The spine's in-plane angle measured on the slices (degrees; NaN when too
 * few slices showed a spine; see src/segment/align.c), and whether the
 * muscles were segmented in a frame rotated by it (*aligned, may be NULL). */
double psp_segmentation_axis_deg(const psp_segmentation *s, bool *aligned);
/* What placed it, and *zero_slice (may be NULL) where: an internal
 * sub-slice position, possibly outside the stack (NaN: no spine seen). */
psp_height_from psp_segmentation_height(const psp_segmentation *s, double *zero_slice);
/* "bottom_unchecked", "bottom_of_stack", "sacrum", "named_levels",
 * "assumed". */
const char *psp_height_from_name(psp_height_from h);
/* The pixel (mm, x and y) of the frame the muscles were told apart in: the
 * image's own, finer when rotated from coarse pixels, about 1 mm from
 * fine ones (src/segment/align.c). */
void psp_segmentation_frame_mm(const psp_segmentation *s, double mm[2]);
/* A point (voxel i, j) of slice k's frame the muscles were segmented in, in
 * the image's grid (unchanged unless aligned). */
void psp_segmentation_to_image(const psp_segmentation *s, int64_t k, double *i, double *j);

/* The multifidus share of each polar ray used as the first-pass prior,
 * at deg10 x 10 degrees (0..11); the table in models/mf_rho_profile.tsv. */
double psp_segment_mf_rho(int deg10);
/* The same per 15 mm band (0..9) of height above the lowest segmented slice;
 * the table in models/mf_rho_by_level.tsv. */
double psp_segment_mf_rho_level(int band, int deg10);

/* Defined in src/pipeline.c: the segmentation of an analysis run, NULL when
 * the labels were given with --labels (borrowed). */
const psp_segmentation *psp_result_segmentation(const psp_result *r);

#endif
