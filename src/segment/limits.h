/*
 * limits.h — the medial and front limits of the multifidus compartment
 * (src/segment/limits.c), the voxel-scale refinements of masks and labels
 * (src/segment/refine.c), the plausibility checks (src/segment/checks.c),
 * and the small helpers the segmentation files share (internal, not
 * installed).
 */
#ifndef PSP_SEGMENT_LIMITS_H
#define PSP_SEGMENT_LIMITS_H

#include "anatomy/landmarks.h"
#include "core/internal.h"

#include <math.h>

#define GAP_MIN_MM PSP_LM_GAP_MIN_MM /* medial limit of the compartment, from the midline */
#define GAP_MAX_MM 8.0

/* mm -> voxels (at least 1). */
static inline int64_t psp_seg_vox(double mm, double sp) {
  int64_t v = (int64_t)lround(mm / sp);
  return v < 1 ? 1 : v;
}

/* lround(x) for finite x, without the library call: the truncation's
 * remainder x - t is exact, so halves round away from zero exactly as
 * lround does. */
static inline int64_t psp_seg_lround(double x) {
  int64_t t = (int64_t)x;
  double f = x - (double)t;
  return f >= 0.5 ? t + 1 : f <= -0.5 ? t - 1 : t;
}

/* qsort comparison of doubles. */
static inline int psp_seg_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Seeded watershed (priority flood) inside region == val, which is empty
 * outside the rectangle bx = {i0, i1, j0, j1}, on the 3 x 3 mean FF: see
 * src/segment/regions.c. lab (written inside bx only), next, key: nx * ny
 * scratch. */
void psp_seg_watershed2(const float *ff, const uint8_t *region, uint8_t val, const uint8_t *seed,
                        int64_t nx, int64_t ny, const int64_t bx[4], uint8_t *lab, int32_t *next,
                        uint8_t *key);

/* 3 x 3 mean of v per pixel over its non-NaN neighbours within the slice
 * (NaN where there are none), summed in double in raster order. scratch:
 * 3 * nx doubles and 3 * nx int32. */
void psp_seg_mean3(const float *v, int64_t nx, int64_t ny, float *out, double *scratch_d,
                   int32_t *scratch_n);

/* Medial limit per row j (gap[j], mm from the midline) of the side sgn
 * (+1 left, -1 right); raw: ny doubles of scratch. */
void psp_seg_medial_limits(const float *ff, int64_t nx, int64_t ny, double sx, double sy,
                           double mid, double j_canal, int sgn, double *gap, double *raw);
/* Front limit per column i (yf[i], mm behind the canal centre; -INFINITY
 * where it does not apply) of the side sgn; raw: nx doubles of scratch. */
void psp_seg_lamina_limits(const float *sig, int64_t nx, int64_t ny, double sx, double sy,
                           double mid, double cj, double rc, int sgn, double *yf, double *raw);

/* The erector spinae's front edge lateral of the transverse processes:
 * removes the voxels of value val (one side's compartment) in front of a
 * line that starts at the compartment's own most anterior point between
 * ES_REF_LO_MM and ES_REF_HI_MM from the midline and rises backwards
 * laterally as in the MuscleMap template (table: psp_segment_es_rise), less
 * ES_FRONT_TOL_MM, or at a fat plane seen within ES_SEARCH_MM of that line
 * in ff (NULL: the line only; muscle, fat: the slice's FF levels). Returns
 * the number removed, or -1 out of memory. */
#define ES_REF_MM 35.0 /* the template's rise is measured from here */
#ifndef ES_REF_LO_MM
#define ES_REF_LO_MM 30.0
#endif
#ifndef ES_REF_HI_MM
#define ES_REF_HI_MM 55.0
#endif
#define ES_RISE_STEP_MM 5.0
#define ES_RISE_N 9
#ifndef ES_FRONT_TOL_MM
#define ES_FRONT_TOL_MM 4.0
#endif
#ifndef ES_SEARCH_MM
#define ES_SEARCH_MM 6.0
#endif
#define ES_PLANE_MM 2.0
#ifndef ES_PLANE_CONTRAST
#define ES_PLANE_CONTRAST 0.15
#endif
#define ES_COLS_MM 6.0
int64_t psp_seg_es_front_limit(uint8_t *comp, uint8_t val, const float *ff, double muscle,
                               double fat, int64_t nx, int64_t ny, double sx, double sy, double mid,
                               int sgn);
/* The compiled rise table, entry i (d = ES_REF_MM + 5 (i + 1) mm); NAN
 * outside. */
double psp_segment_es_rise(int i);

/* The multifidus share per 10-degree ray (0..11) learned from the
 * MuscleMap template (src/segment/prior.c): over all levels, and for a
 * slice dz mm above the height anchor (linear between the 15 mm bands,
 * clamped at the ends; NaN dz: over all levels). */
const double *psp_seg_mf_rho_all(void);
/* The second boundary pass's neighbours on either side of a slice for a
 * slice spacing dz_mm (segment.c, NEIGH_MM). */
int64_t psp_seg_neigh_slices(double dz_mm);
void psp_seg_rho_row(double dz, double row[12]);

/* src/segment/refine.c: the strict mask (1 = strict) also against the
 * local muscle level (mean FF of the strict voxels within 10 mm, at most
 * muscle): a voxel stays strict if its raw and 3 x 3 mean FF (ff, sm) are
 * below level + share (fat - level). Returns false on OOM. */
bool psp_seg_local_strict(const float *ff, const float *sm, int64_t nx, int64_t ny, double sx,
                          double sy, double muscle, double fat, double share, uint8_t *strict);

/* refine.c: the loose threshold per voxel of the rectangle g (into thr,
 * nx * ny) half way from the local muscle level (the mean FF of the kept
 * voxels within 10 mm, clamped to lo..hi; hi where none is near) to fat.
 * Returns false on OOM. */
bool psp_seg_local_loose(const float *ff, const uint8_t *kept, int64_t nx, int64_t ny, double sx,
                         double sy, double lo, double hi, double fat, const int64_t g[4],
                         float *thr);

/* refine.c: per component of lab (1..nc) inside bx on side sgn: voxels,
 * voxels on the multifidus core box, sum of distances from the midline
 * (3 per component); *core the one most on the core box. NULL on OOM. */
int64_t *psp_seg_core_stats(const int32_t *lab, int32_t nc, int64_t nx, const int64_t bx[4],
                            int sgn, double mid, double cj, double cr, double sx, double sy,
                            int32_t *core);

/* refine.c: the split seeds (seed: 1 multifidus, 2 erector spinae) of
 * side (0 left) whose multifidus level (es_fatty: erector spinae level)
 * muscle lies far above the other side's (other): at the step of FF half
 * way between them; lat_mm and min_share as for a visible plane
 * (segment.c). True when set. */
bool psp_seg_fatty_seeds(const float *ff, const uint8_t *comp, int64_t nx, double sx, double sy,
                         const int64_t bx[4], const psp_slice_landmarks *lm, double muscle,
                         double other, bool es_fatty, double lat_mm, double min_share, int side,
                         uint8_t *seed, psp_slice_work *w);

/* refine.c: after the split of side (0 left, 1 right) along a visible
 * plane, its multifidus/erector boundary voxels (inside comp == side + 1,
 * in the rectangle bx) with FF above t become 0 in lab. old: nx * ny
 * scratch. */
void psp_seg_unlabel_plane(const float *ff, const uint8_t *comp, float *lab, int64_t nx,
                           const int64_t bx[4], int side, double t, uint8_t *old);

/* refine.c: on the final labels lab of one slice (inside the rectangle bx
 * grown by one voxel; pixels sx x sy mm): at coarse pixels the erector's
 * fatty rim trimmed (trim_es_rim), one pass of voxel-scale smoothing
 * (smooth_labels),
 * the erector spinae's plane towards the multifidus (a ridge of FF)
 * unlabelled, then the muscles' outlines smoothed at OUTLINE_MM (see
 * there) and closed (close_outlines), then a fatty erector's lean pieces on
 * its outline (drop_lean_pieces) and its pieces beyond a ridge of FF below
 * a share of its largest piece dropped (drop_es_pieces), then the
 * multifidus's ring on a one-voxel step to fat joined (join_step_ring);
 * muscle, fat: the slice's FF
 * levels; old: nx * ny scratch.
 * Returns false on OOM. */
bool psp_seg_refine_outlines(const float *ff, float *lab, int64_t nx, int64_t ny, double sx,
                             double sy, const int64_t bx[4], double muscle, double fat,
                             uint8_t *old);

/* refine.c: the labels' majority along the stack on the outlines: inside
 * box (inclusive, one voxel inside the slice's edges) of one slice, where
 * both neighbouring slices (below, above: their labels, uint8) hold the
 * same value m there and the slice does not (own: its labels before, uint8),
 * a voxel on the outline of its muscle (or unlabelled) takes m: 0 peels it;
 * a muscle it takes only when it lies 4-next to that muscle on this slice,
 * and an unlabelled voxel only with FF below t[side] (that muscle's side's
 * strict threshold; 0 left, 1 right). A muscle that would leave the
 * slice altogether keeps its voxels. Writes lab; returns the voxels
 * changed. */
int64_t psp_seg_zfill(const float *ff, const uint8_t *below, const uint8_t *own,
                      const uint8_t *above, float *lab, int64_t nx, const int64_t box[4],
                      const double t[2]);
/* psp_seg_zfill on every measured slice k of the label volume (nx * ny *
 * nz) whose two neighbours were measured (lm[k].status), each pass from a
 * copy of the labels (every slice reads its neighbours as they were),
 * repeated until no voxel changes (at most ZFILL_PASSES_MAX passes); t:
 * each slice's strict thresholds (2 per slice: left, right). False on OOM
 * (err set). Parallel over slices; deterministic. */
bool psp_seg_zfill_stack(float *labels, const psp_slice_landmarks *lm, const float *ff, int64_t nx,
                         int64_t ny, int64_t nz, const double *t, psp_error **err);

/* src/segment/checks.c: the plausibility checks of psp_seg_run. */
#define MAX_MUSCLE_MM2 6000.0 /* 60 cm^2: above the largest lumbar erector spinae */
#define MAX_LR_RATIO 2.0
/* The reason of a slice flagged for that (psp_seg_flag: ratio, MAX_LR_RATIO). */
#define PSP_SEG_LR_REASON                                                                          \
  "left and right differ by a factor %.1f in area (allowed %.1f): a side leaked or was lost"
#define SWAP_FF 0.3       /* the fat behind the spine reading below this on a slice ... */
#define SWAP_STACK_FF 0.6 /* ... and above this on the stack (median): exchanged there */
#define ASYM_FF 0.2       /* a flagged side this much fattier than the other: said in the reason */
/* Sets a slice's status and reason (fmt with two numbers). */
void psp_seg_flag(psp_slice_landmarks *lm, psp_slice_status st, const char *fmt, double a,
                  double b);
/* The larger left/right area ratio of the two muscles in the labels lab of
 * one slice, inside the rectangle bx (infinite when one is missing). */
double psp_seg_lr_ratio(const float *lab, int64_t nx, const int64_t bx[4]);
/* Flags the slices of lm[0..nz-1] whose water and fat look exchanged;
 * returns how many, *med_out the stack's median back_ff. */
int64_t psp_seg_flag_swapped(psp_slice_landmarks *lm, int64_t nz, double *med_out);
/* A muscle this near the image's edge is cut by the field of view
 * (src/segment/align.c, flag_cut_off). */
#define PSP_SEG_EDGE_MM 8.0
/* Pixels this size or coarser (mm): segment.c's strict mask is not opened
 * (one voxel removes structures 6-10 mm wide). */
#define PSP_SEG_COARSE_MM 2.0
/* The last check of a labelled slice (ff, lab: its FF and labels, nx x ny,
 * all of them inside bx grown by one voxel, as psp_seg_refine_outlines
 * leaves them; sp: the pixel size, mm; muscle: the slice's muscle FF
 * level): flags it and empties its labels when implausible. With defer,
 * left and right too far apart (away from the image's edge) only set
 * lm->lr_pending, labels and status kept, for the call without defer
 * after the stack's majority (segment.c step 3d). */
void psp_seg_check_areas(psp_slice_landmarks *lm, const float *ff, float *lab, int64_t nx,
                         int64_t ny, const int64_t bx[4], const double sp[2], double muscle,
                         bool defer);
/* The evidence for each side's multifidus/erector spinae boundary on a
 * labelled slice (nx x ny, pixels sx x sy mm; muscle[side]: the side's
 * muscle FF level, fat: the slice's fat level): share[side] (0 left, 1
 * right) = the share of its crossings whose highest FF forms a ridge above
 * both ends (see the DESIGN comment of checks.c); NaN without a crossing. */
void psp_seg_boundary_evidence(const float *ff, const float *lab, int64_t nx, int64_t ny, double sx,
                               double sy, const double muscle[2], double fat, double share[2]);
/* The area (mm^2; px: the voxel area) of the voxels without signal (NaN
 * ff) inside or against the muscles of a labelled slice (nx x ny; bx: the
 * labels' rectangle): the 4-connected pieces of such voxels inside bx grown
 * by VOID_PAD voxels that touch a muscle voxel and not the grown box's
 * border (the background around the body does). queue: nx * ny scratch;
 * seen: nx * ny scratch (cleared here). */
/* One warning naming the measured slices of lm[0..nz-1] whose void_mm2
 * reaches VOID_WARN_MM2 (file slices of ffv), if any. */
void psp_seg_warn_voids(const psp_slice_landmarks *lm, int64_t nz, const psp_volume *ffv,
                        psp_context *ctx);
double psp_seg_void_area(const float *ff, const float *lab, int64_t nx, int64_t ny,
                         const int64_t bx[4], double px, int32_t *queue, uint8_t *seen);

#endif
