/*
 * DESIGN: per-slice anatomical landmarks from the fat-fraction map alone (so
 * that water+fat, in-phase/opposed-phase and precomputed FF inputs behave
 * alike). All sizes are in mm and converted with the slice's pixel size, so
 * the rules hold from 0.5 to 2 mm pixels.
 *
 *  - Body: voxels with signal (FF not NaN and not exactly 0, the zeroed
 *    background of many precomputed FF maps), the largest 4-connected
 *    component, holes filled (bowel gas, cortical bone and zero-FF voxels
 *    inside it).
 *  - Spinal canal: the CSF-filled canal is a low-FF disc (~8 mm radius)
 *    surrounded by a ring of bone, epidural fat and ligaments (FF higher or
 *    no signal), with the two paraspinal muscle masses (low FF) about 20 mm
 *    to either side and 30 mm behind it. A template score, computed from
 *    integral images of the "low FF" indicator,
 *      inner box (4 mm) - ring (8..13 mm) + 0.5 min(left, right muscle box),
 *    is maximised over 30-92 % of the body's extent from front to back
 *    (from its front edge when the body's outline reaches the image's
 *    front edge: a tight field of view cutting the vertebral body;
 *    dixon-tum01 cut 24 mm in front of its canal had the canal placed
 *    behind that limit, 12-15 mm too far back on the lowest slices and
 *    beside the spine elsewhere: all-muscle Dice 0.723 -> 0.937), only
 *    where a canal is anatomically possible: within 40 mm (at most 22 % of the body's
 *    width) of the centre of the body's left-right extent (anywhere across
 *    it when the body's outline reaches one side of the image: a field of
 *    view off the body's centre; dixon-tum01 cut 100 mm right of its
 *    midline, all-muscle Dice 0.693 -> 0.937) and within
 *    130 mm of the back's skin, plus the back's subcutaneous fat beyond
 *    40 mm (psp_landmarks_max_depth_mm: dixon-tum01 has 14-38 mm; with 60
 *    mm more, an obese subject, its canal lay beyond 130 mm and was put in
 *    the fat, 2 of 29 slices segmented), the limits the segmentation's
 *    plausibility check applies (minimum 0.45); the canal is the low-FF region around the
 *    maximum. A muscle (low FF all around) and the vertebral body (fatty
 *    marrow) score low; discs (low FF) miss the fat ring and the posterior
 *    muscles. On magnitude-only (IP/OP) input a fat-like disc may be the
 *    canal too; its ring is then measured as fat-like, so a disc of
 *    subcutaneous or epidural fat inside fat scores low. (On ipop-chaos11
 *    the free search had landed on a kidney or, once limited, on the
 *    subcutaneous fat behind the spine on every slice; with both rules it
 *    finds the canal on 24 of 26 slices. dixon-tum01 and the phantoms are
 *    unchanged.) Given the canal position expected from the other slices
 *    (the caller's second pass), the search is limited to 25/30 mm around
 *    it and the score pays 0.01 per mm of distance; given the median canal
 *    of the neighbouring slices (psp_landmarks_find_close), to a radius
 *    around it at 0.03 per mm. The muscle boxes count FF below
 *    w->muscle_max_ff as muscle: 0.2 (PSP_LM_MUSCLE_FF) unless the muscle
 *    level of a first search says the muscle is fatty
 *    (psp_landmarks_muscle_limit: median level + 0.1, at most 0.5). With a
 *    fixed 0.2, dixon-tum01 with fatty infiltration (muscle FF about 0.30,
 *    tests/realdata/nifti_edit.py fatty 0.2) had a canal on 10 of 29
 *    slices; a fixed 0.35 or 0.5 instead put lean tum01's canal on the
 *    vertebral body or a disc on slices 2 and 26 (marrow then counts as
 *    muscle).
 *  - Midline: the axis of left-right mirror symmetry of the FF map in the
 *    50 mm behind the canal (muscles, spinous process, fat), searched at
 *    half-voxel steps within 12 mm of the canal centre; the half-width of the
 *    midline bone / interspinous fat from the FF profile across it. Where
 *    the muscle beside the canal (boxes 6-24 mm to either side) reads more
 *    than ASYM_MIDLINE_FF = 0.3 apart left and right, a one-sided fatty
 *    multifidus pulls that axis towards it (dixon-tum01 with its left
 *    multifidus at FF 0.65, tests/realdata/nifti_edit.py fatty 0.6 3: 8-12
 *    mm on 15 slices), so the axis is the symmetry of the fat-dominant
 *    tissue only (FF above ASYM_CLIP_FF = 0.7: interspinous and
 *    subcutaneous fat, fat planes) within 6 mm of the canal centre: within
 *    1-3 mm of the unedited scan's axis on every slice. The same axis
 *    where it lies more than ASYM_AXES_MM = 8 mm from the full one: a
 *    one-sided fatty erector spinae (inside the 40 mm the symmetry pairs,
 *    outside the 6-24 mm boxes) pulled the full axis 12-18 mm, to the
 *    search's limit (nifti_edit.py fatty 0.3 4 and 0.5 4: on 5 and 16
 *    slices; all-muscle Dice 0.908 -> 0.930 on the first, on the second
 *    the 7 slices measured with that midline then flagged too); dixon-tum01
 *    (the two axes within 3 mm on 28 of 29 slices, 6 mm on one),
 *    ipop-chaos11, the phantoms and 21 other edited copies unchanged, one
 *    (twist) +0.0001. And where the muscle beside the canal reads more
 *    than ASYM_NEAR_FF = 0.2 apart and the axes lie more than ASYM_NEAR_MM =
 *    4 mm apart: a milder one-sided fatty multifidus (fatty 0.3 3, FF 0.38
 *    against 0.05; boxes 0.2-0.3 apart) had pulled the full axis 5-8 mm on
 *    slices 7-10: multifidus 0.843 / 0.825 -> 0.864 / 0.854, left FF -1.5
 *    -> -0.6 pp, all 0.925 -> 0.929; nothing else moved (the full axis
 *    strays 4-11 mm on some slices of lean copies too, twist and fat0.4,
 *    but there the boxes read within 0.2). Not used always: a
 *    penalty on the axis's distance from the canal, or this clipped
 *    symmetry on every slice, cost dixon-tum01's multifidus 0.001-0.016;
 *    the gate at 0.2 / 0.25 changed lean edited copies (-0.001), at 0.3
 *    only the one-sided fatty ones.
 *  - Vertebral body: centroid of the non-fat voxels in a 50 x 50 mm box in
 *    front of the canal (vertebral body, disc or sacrum).
 *  - Spinous process: the posterior end of the midline gap between the two
 *    multifidus muscles.
 *  - Muscle and fat FF levels of the slice: medians of a core box beside the
 *    spinous process (muscle) and of the body's fatty voxels; the
 *    segmentation derives its muscle/fat threshold from them, so fatty
 *    (degenerated) muscle is still muscle. Per side also the lower 30 %
 *    quantile of a box 5-16 mm from the midline, 6-26 mm behind the canal's
 *    back edge (the multifidus at every lumbar level, where the core box
 *    takes in the erector spinae at the upper ones; the quantile is not
 *    lifted by fatty streaks: with the median, the sample phantoms' streaky
 *    multifidi read 0.2-0.3 apart on 7 slices), and the same quantile of a
 *    box 35-55 mm from the midline, 8-32 mm behind that edge (the erector
 *    spinae), for the segmentation's per-side levels (src/segment/segment.c,
 *    step 1).
 * Cost: the per-pixel passes visit only the body's bounding box (integral
 * images of it, in integers: the box sums are exact, as in doubles over the
 * slice); a second search on a slice (psp_landmarks_refind, _find_close)
 * reuses the body of the first; the midline's candidate axes are summed
 * all at once (each in the original order, so the scores are bit-equal).
 * References: the anatomy in Gray's Anatomy (lumbar vertebra, thoracolumbar
 * fascia); integral images: Viola & Jones, CVPR 2001.
 */
#include "anatomy/landmarks.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *psp_split_kind_name(int kind) {
  switch (kind) {
  case PSP_SPLIT_PLANE:
    return "fat_plane";
  case PSP_SPLIT_STEP:
    return "ff_step";
  case PSP_SPLIT_PATH:
    return "template_path";
  default:
    return "none";
  }
}

const char *psp_slice_status_name(psp_slice_status s) {
  switch (s) {
  case PSP_SLICE_OK:
    return "ok";
  case PSP_SLICE_NO_BODY:
    return "no_body";
  case PSP_SLICE_NO_SPINE:
    return "no_spine";
  case PSP_SLICE_BELOW_SACRUM:
    return "below_sacrum";
  case PSP_SLICE_IMPLAUSIBLE:
    return "implausible";
  case PSP_SLICE_CUT_OFF:
    return "cut_off";
  }
  return "unknown";
}

bool psp_landmarks_sides_differ(const psp_slice_landmarks *lm) {
  const double *m = lm->muscle_side_ff;
  return fabs(m[0] - m[1]) > PSP_LM_SIDE_ASYM_FF && fmax(m[0], m[1]) >= lm->muscle_ff;
}

bool psp_landmarks_es_sides_differ(const psp_slice_landmarks *lm) {
  const double *e = lm->es_side_ff;
  return fabs(e[0] - e[1]) > PSP_LM_SIDE_ASYM_FF && fmax(e[0], e[1]) >= lm->muscle_ff;
}

psp_slice_work *psp_slice_work_create(int64_t nx, int64_t ny) {
  psp_slice_work *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  size_t n = (size_t)(nx * ny), ni = (size_t)((nx + 1) * (ny + 1));
  w->nx = nx;
  w->ny = ny;
  w->muscle_max_ff = PSP_LM_MUSCLE_FF;
  w->queue = malloc((n + (size_t)(nx > ny ? nx : ny) + 1) * sizeof *w->queue);
  w->lab = malloc(n * sizeof *w->lab);
  w->aux = malloc((n + 1) * sizeof *w->aux);
  w->m0 = malloc(n);
  w->m1 = malloc(n);
  w->m2 = malloc(n);
  w->m3 = malloc(n);
  w->f0 = malloc(n * sizeof *w->f0);
  w->f1 = malloc(n * sizeof *w->f1);
  w->integ0 = malloc(ni * sizeof *w->integ0);
  w->integ1 = malloc(ni * sizeof *w->integ1);
  w->integ2 = malloc(ni * sizeof *w->integ2);
  w->line = malloc((size_t)nx * 6 * sizeof *w->line);
  if (!w->queue || !w->lab || !w->aux || !w->m0 || !w->m1 || !w->m2 || !w->m3 || !w->f0 || !w->f1 ||
      !w->integ0 || !w->integ1 || !w->integ2 || !w->line) {
    psp_slice_work_free(w);
    return NULL;
  }
  return w;
}

void psp_slice_work_free(psp_slice_work *w) {
  if (!w) return;
  free(w->queue);
  free(w->lab);
  free(w->aux);
  free(w->m0);
  free(w->m1);
  free(w->m2);
  free(w->m3);
  free(w->f0);
  free(w->f1);
  free(w->integ0);
  free(w->integ1);
  free(w->integ2);
  free(w->line);
  free(w);
}

/* ------------------------------------------------------------------------ */
/* Mask helpers                                                              */
/* ------------------------------------------------------------------------ */

int32_t psp_mask_components(const uint8_t *m, int64_t nx, int64_t ny, psp_slice_work *w) {
  return psp_cc_label(m, false, nx, ny, false, w->lab, w->aux);
}

int64_t psp_mask_keep_largest(uint8_t *m, int64_t nx, int64_t ny, psp_slice_work *w) {
  return psp_cc_keep_largest(m, nx, ny, false, w->lab, w->aux);
}

void psp_mask_fill_holes(uint8_t *m, int64_t nx, int64_t ny, psp_slice_work *w) {
  psp_cc_fill_holes(m, nx, ny, w->queue, w->aux);
}

/* Separable square min/max filter (grow = dilation) with running counts:
 * O(1) per voxel whatever the radius. Outside the slice counts as empty. */
static void morph(uint8_t *m, int64_t nx, int64_t ny, int r, bool grow, psp_slice_work *w) {
  if (r <= 0) return;
  /* only the mask's bounding box grown by r changes (outside it every
   * pixel is empty before and after): the work follows the mask's size */
  int64_t box[4];
  if (!psp_mask_box(m, nx, ny, box)) return;
  const int64_t x0 = box[0] - r > 0 ? box[0] - r : 0, x1 = box[1] + r < nx ? box[1] + r : nx - 1;
  const int64_t y0 = box[2] - r > 0 ? box[2] - r : 0, y1 = box[3] + r < ny ? box[3] + r : ny - 1;
  uint8_t *t = w->m3;
  int32_t *cnt = w->queue; /* prefix counts of one row / column */
  int64_t full = 2 * (int64_t)r + 1;
  for (int64_t j = y0; j <= y1; j++) {
    const uint8_t *row = m + j * nx;
    cnt[0] = 0;
    for (int64_t i = x0; i <= x1; i++)
      cnt[i - x0 + 1] = cnt[i - x0] + (row[i] != 0);
    for (int64_t i = x0; i <= x1; i++) {
      int64_t a = i - r < x0 ? x0 : i - r, b = i + r + 1 > x1 + 1 ? x1 + 1 : i + r + 1;
      int64_t c = cnt[b - x0] - cnt[a - x0];
      t[j * nx + i] = grow ? c > 0 : c == full;
    }
  }
  /* vertical pass row by row (cache-friendly): cnt[i - x0] = set pixels of
   * column i in rows [j - r, j + r] */
  memset(cnt, 0, (size_t)(x1 - x0 + 1) * sizeof *cnt);
  for (int64_t j = y0; j < y0 + r && j <= y1; j++)
    for (int64_t i = x0; i <= x1; i++)
      cnt[i - x0] += t[j * nx + i] != 0;
  for (int64_t j = y0; j <= y1; j++) {
    if (j + r <= y1)
      for (int64_t i = x0; i <= x1; i++)
        cnt[i - x0] += t[(j + r) * nx + i] != 0;
    if (j - r - 1 >= y0)
      for (int64_t i = x0; i <= x1; i++)
        cnt[i - x0] -= t[(j - r - 1) * nx + i] != 0;
    uint8_t *row = m + j * nx;
    for (int64_t i = x0; i <= x1; i++)
      row[i] = grow ? cnt[i - x0] > 0 : cnt[i - x0] == full;
  }
}

void psp_mask_erode(uint8_t *m, int64_t nx, int64_t ny, int r, psp_slice_work *w) {
  morph(m, nx, ny, r, false, w);
}
void psp_mask_dilate(uint8_t *m, int64_t nx, int64_t ny, int r, psp_slice_work *w) {
  morph(m, nx, ny, r, true, w);
}

bool psp_landmarks_body_cut(const psp_slice_landmarks *lm, int64_t nx) {
  return (lm->body_box[0] <= 0) != (lm->body_box[1] >= nx - 1);
}

/* ------------------------------------------------------------------------ */
/* Landmarks                                                                 */
/* ------------------------------------------------------------------------ */

#define LOW_FF 0.2        /* CSF, disc, lean muscle read below this; bone marrow, fat above */
#define MUSCLE_MARGIN 0.1 /* fatty muscle: the limit is the median muscle level + this */
#define MUSCLE_MAX_FF 0.5 /* ... at most this */
#define CANAL_MIN_SCORE 0.45
#define MIDLINE_SEARCH_MM 12.0
#define ASYM_MIDLINE_FF 0.3 /* the muscle beside the canal this far apart left/right: ... */
#define ASYM_SEARCH_MM 6.0  /* ... the midline searched this near the canal centre ... */
#define ASYM_CLIP_FF 0.7    /* ... on the FF above this only */
#define ASYM_AXES_MM 8.0    /* ... or where the two axes lie this far apart */
#define ASYM_NEAR_FF 0.2    /* ... or the muscle this far apart and ... */
#define ASYM_NEAR_MM 4.0    /* ... the two axes this far */
#define SIDE_BOX_D0_MM 5.0  /* the per-side muscle level's box: from the midline ... */
#define SIDE_BOX_D1_MM 16.0
#define SIDE_BOX_Y0_MM 6.0 /* ... and behind the canal's back edge */
#define SIDE_BOX_Y1_MM 26.0
#define SIDE_Q 0.3        /* its quantile */
#define ES_BOX_D0_MM 35.0 /* the per-side erector spinae level's box: from the midline ... */
#define ES_BOX_D1_MM 55.0
#define ES_BOX_Y0_MM 8.0 /* ... and behind the canal's back edge */
#define ES_BOX_Y1_MM 32.0
#define GAP_MIN_MM PSP_LM_GAP_MIN_MM
#define ANCHOR_PENALTY 0.01 /* score per mm away from the expected canal position */
#define CLOSE_PENALTY 0.03  /* the same for the search near the neighbouring slices' canal */
/* where a canal is anatomically plausible (the same limits as the
 * segmentation's plausibility check): within CANAL_MAX_OFF_MM of the
 * left-right centre of the body's extent, CANAL_MAX_DEPTH_MM in front of
 * the back's skin */
#define CANAL_MAX_OFF_MM 40.0
#define CANAL_MAX_DEPTH_MM 130.0
#define BACK_FAT_REF_MM 40.0  /* back fat up to this leaves the depth limit as it is */
#define BACK_FAT_FF 0.5       /* the back's subcutaneous fat: FF above this */
#define BACK_SKIN_MM 5.0      /* ... starting within this of the last voxel with signal */
#define BACK_BAND_MIN_MM 2.0  /* the back's outer layer: from this far inside its last voxel */
#define BACK_BAND_MAX_MM 12.0 /* ... to this (as the subcutaneous fat check of src/dixon) */

double psp_landmarks_max_depth_mm(const psp_slice_landmarks *lm) {
  double extra = isfinite(lm->back_fat_mm) ? lm->back_fat_mm - BACK_FAT_REF_MM : 0.0;
  return CANAL_MAX_DEPTH_MM + (extra > 0.0 ? extra : 0.0);
}

static int cmp_flt(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

/* The last row of column i with a body voxel inside the box bb (bb[2] - 1:
 * none). */
static int64_t last_body_row(const uint8_t *body, int64_t nx, const int64_t bb[4], int64_t i) {
  int64_t j = bb[3];
  while (j >= bb[2] && !body[j * nx + i])
    j--;
  return j;
}

/* Median thickness (mm) of the fat run behind the spine: per column i0..i1
 * of the body, from its last body voxel forwards, past at most BACK_SKIN_MM
 * of skin, the voxels with FF above BACK_FAT_FF; buf: (i1 - i0 + 1) floats. */
static double back_fat(const float *ff, const uint8_t *body, int64_t nx, const int64_t bb[4],
                       int64_t i0, int64_t i1, double sy, float *buf) {
  const int64_t skin = (int64_t)floor(BACK_SKIN_MM / sy);
  int64_t m = 0;
  for (int64_t i = i0 < bb[0] ? bb[0] : i0; i <= i1 && i <= bb[1]; i++) {
    int64_t j = last_body_row(body, nx, bb, i);
    if (j < bb[2]) continue;
    int64_t s = 0;
    while (s < skin && j - s >= bb[2] && !(ff[(j - s) * nx + i] > BACK_FAT_FF))
      s++;
    int64_t t = s;
    while (j - t >= bb[2] && ff[(j - t) * nx + i] > BACK_FAT_FF)
      t++;
    buf[m++] = (float)((double)(t - s) * sy);
  }
  if (m == 0) return NAN;
  qsort(buf, (size_t)m, sizeof *buf, cmp_flt);
  return m % 2 ? buf[m / 2] : 0.5 * ((double)buf[m / 2 - 1] + (double)buf[m / 2]);
}

/* Median FF of the back's outer layer: per column i0..i1 of the body whose
 * last body voxel is not on the image's last row (the field of view would
 * cut the back there), the voxels BACK_BAND_MIN_MM..BACK_BAND_MAX_MM in
 * front of it; NaN without any. buf: (i1 - i0 + 1) x the band's rows. */
static double back_band_ff(const float *ff, const uint8_t *body, int64_t nx, int64_t ny,
                           const int64_t bb[4], int64_t i0, int64_t i1, double sy, float *buf) {
  const int64_t t0 = (int64_t)ceil(BACK_BAND_MIN_MM / sy);
  const int64_t t1 = (int64_t)floor(BACK_BAND_MAX_MM / sy);
  size_t m = 0;
  for (int64_t i = i0 < bb[0] ? bb[0] : i0; i <= i1 && i <= bb[1]; i++) {
    int64_t j = last_body_row(body, nx, bb, i);
    if (j < bb[2] || j >= ny - 1) continue;
    for (int64_t t = t0; t <= t1 && j - t >= bb[2]; t++) {
      int64_t p = (j - t) * nx + i;
      if (body[p] && !isnan(ff[p])) buf[m++] = ff[p];
    }
  }
  return m ? psp_quantile_select(buf, m, 0.5) : NAN;
}

/* Integral image of m over the rectangle bb = {i0, i1, j0, j1} (m is empty
 * outside it), (i1 - i0 + 2) x (j1 - j0 + 2) counts: integers, so the box
 * sums are exact, as they were in doubles over the whole slice. */
static void integral(const uint8_t *m, int64_t nx, const int64_t bb[4], int32_t *s) {
  int64_t bw = bb[1] - bb[0] + 1, w1 = bw + 1;
  memset(s, 0, (size_t)w1 * sizeof *s);
  for (int64_t j = bb[2]; j <= bb[3]; j++) {
    const uint8_t *r = m + j * nx + bb[0];
    const int32_t *up = s + (j - bb[2]) * w1;
    int32_t *o = s + (j - bb[2] + 1) * w1, row = 0;
    o[0] = 0;
    for (int64_t i = 0; i < bw; i++) {
      row += r[i];
      o[i + 1] = up[i + 1] + row;
    }
  }
}

/* Sum over the box [i0, i1] x [j0, j1] (clipped); *n receives its area
 * within the slice. */
static double box_sum(const int32_t *s, int64_t nx, int64_t ny, const int64_t bb[4], int64_t i0,
                      int64_t i1, int64_t j0, int64_t j1, int64_t *n) {
  if (i0 < 0) i0 = 0;
  if (j0 < 0) j0 = 0;
  if (i1 > nx - 1) i1 = nx - 1;
  if (j1 > ny - 1) j1 = ny - 1;
  if (i1 < i0 || j1 < j0) {
    *n = 0;
    return 0;
  }
  *n = (i1 - i0 + 1) * (j1 - j0 + 1);
  /* the mask is empty outside bb */
  if (i0 < bb[0]) i0 = bb[0];
  if (j0 < bb[2]) j0 = bb[2];
  if (i1 > bb[1]) i1 = bb[1];
  if (j1 > bb[3]) j1 = bb[3];
  if (i1 < i0 || j1 < j0) return 0;
  int64_t w1 = bb[1] - bb[0] + 2;
  i0 -= bb[0], i1 -= bb[0], j0 -= bb[2], j1 -= bb[2];
  return (double)(s[(j1 + 1) * w1 + i1 + 1] - s[j0 * w1 + i1 + 1] - s[(j1 + 1) * w1 + i0] +
                  s[j0 * w1 + i0]);
}

static double box_mean(const int32_t *s, int64_t nx, int64_t ny, const int64_t bb[4], int64_t ci,
                       int64_t cj, int64_t hi, int64_t hj) {
  int64_t n;
  double v = box_sum(s, nx, ny, bb, ci - hi, ci + hi, cj - hj, cj + hj, &n);
  return n > 0 ? v / (double)n : 0.0;
}

static int64_t mm_to_vox(double mm, double sp) {
  int64_t v = (int64_t)lround(mm / sp);
  return v < 1 ? 1 : v;
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

/* The finite values of ff in a box, sorted into buf; returns how many. */
static size_t box_sorted(const float *ff, int64_t nx, int64_t ny, int64_t i0, int64_t i1,
                         int64_t j0, int64_t j1, float *buf) {
  size_t n = 0;
  for (int64_t j = j0 < 0 ? 0 : j0; j <= j1 && j < ny; j++)
    for (int64_t i = i0 < 0 ? 0 : i0; i <= i1 && i < nx; i++) {
      float v = ff[j * nx + i];
      if (!isnan(v)) buf[n++] = v;
    }
  qsort(buf, n, sizeof *buf, cmp_float);
  return n;
}

/* Quantile q (lower) of the finite values of ff in a box, or NaN. */
static double box_quantile(const float *ff, int64_t nx, int64_t ny, int64_t i0, int64_t i1,
                           int64_t j0, int64_t j1, double q, float *buf) {
  size_t n = box_sorted(ff, nx, ny, i0, i1, j0, j1, buf);
  return n ? buf[(size_t)(q * (double)(n - 1))] : NAN;
}

/* Median of the finite values of ff in a box, or NaN. */
static double box_median(const float *ff, int64_t nx, int64_t ny, int64_t i0, int64_t i1,
                         int64_t j0, int64_t j1, float *buf) {
  size_t n = box_sorted(ff, nx, ny, i0, i1, j0, j1, buf);
  return n ? buf[n / 2] : NAN;
}

/* The axis (column, half-voxel steps within cmax voxels of column ci) of
 * left-right mirror symmetry of ff over rows ja..jb, pairing columns up to
 * tmax voxels apart: the least mean absolute difference. clip_lo >= 0:
 * of (ff - clip_lo) / (1 - clip_lo), clipped at 0 (only fat-dominant
 * tissue counts). */
static double symmetry_axis(const float *ff, int64_t nx, int64_t ny, int64_t ja, int64_t jb,
                            int64_t tmax, int64_t cmax, double clip_lo, double ci,
                            psp_slice_work *w) {
  int64_t cic = (int64_t)lround(ci);
  double bestc = ci, bests = 1e30;
  /* all candidate axes at once, each summed in the same order (rows,
   * then t) as one by one: independent sums, vectorised along the row.
   * Axis c2 / 2 pairs a = c + t (+ 1 for odd c2) with b = c - t, c =
   * c2 / 2 rounded down; an axis outside 0 .. nx - 1 pairs nothing
   * inside the slice (its score 1e30 never wins), so only the axes
   * inside are summed. A pair with a voxel without signal (NaN) counts
   * for nothing (ok = 0): a signal void on one side (metal, air) is not
   * asymmetric tissue. Read as fat (1) instead, a void of 10 mm radius in
   * the left erector spinae of dixon-tum01 (nifti_edit.py void) pulled the
   * axis 15-20 mm on its three slices: multifidus Dice 0.10-0.24 there,
   * the slices not flagged. */
  int64_t c2lo = 2 * (cic - cmax), c2hi = 2 * (cic + cmax);
  if (c2lo < 0) c2lo = 0;
  if (c2hi > 2 * nx - 2) c2hi = 2 * nx - 2;
  /* per parity of c2, the sums and counts of c = cbase, cbase + 1, ... */
  int64_t cbase = c2lo / 2;
  double *restrict acc0 = w->line, *restrict acc1 = acc0 + nx, *restrict zr = acc1 + nx;
  double *restrict ok = zr + nx;
  double *restrict n0 = ok + nx, *restrict n1 = n0 + nx;
  for (int64_t c = 0; c < nx; c++) {
    acc0[c] = acc1[c] = 0;
    n0[c] = n1[c] = 0;
  }
  for (int64_t j = ja < 0 ? 0 : ja; j <= jb && j < ny && c2lo <= c2hi; j++) {
    for (int64_t i = 0; i < nx; i++) {
      float v = ff[j * nx + i];
      ok[i] = isnan(v) ? 0.0 : 1.0;
      zr[i] = isnan(v) ? 0.0 : v;
      if (clip_lo >= 0) {
        double x = (zr[i] - clip_lo) / (1.0 - clip_lo);
        zr[i] = x < 0 ? 0 : x;
      }
    }
    for (int64_t t = 1; t <= tmax; t++)
      for (int par = 0; par < 2; par++) {
        /* c2 = 2 c + par within [c2lo, c2hi], with b = c - t >= 0 and
         * a = c + t + par < nx */
        if (c2hi - par < 0) continue;
        int64_t c0 = (c2lo - par + 1) / 2, c1 = (c2hi - par) / 2;
        if (c0 < t) c0 = t;
        if (c1 > nx - 1 - t - par) c1 = nx - 1 - t - par;
        double *restrict av = (par ? acc1 : acc0) - cbase;
        double *restrict nv = (par ? n1 : n0) - cbase;
        const double *za = zr + t + par, *zb = zr - t;
        const double *oa = ok + t + par, *ob = ok - t;
        for (int64_t c = c0; c <= c1; c++) {
          const double q = oa[c] * ob[c];
          av[c] += q * fabs(za[c] - zb[c]);
          nv[c] += q;
        }
      }
  }
  for (int64_t c2 = c2lo; c2 <= c2hi; c2++) {
    int64_t c = c2 / 2 - cbase;
    double a = c2 & 1 ? acc1[c] : acc0[c];
    double m = c2 & 1 ? n1[c] : n0[c];
    double sc = m > 0 ? a / m : 1e30;
    double cc = 0.5 * (double)c2;
    if (sc < bests - 1e-12 || (fabs(sc - bests) <= 1e-12 && fabs(cc - ci) < fabs(bestc - ci))) {
      bests = sc;
      bestc = cc;
    }
  }
  return bestc;
}

static void set_reason(psp_slice_landmarks *lm, psp_slice_status st, const char *msg) {
  lm->status = st;
  snprintf(lm->reason, sizeof lm->reason, "%s", msg);
}

static int cmp_dbl(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double psp_landmarks_muscle_limit(const psp_slice_landmarks *lm, int64_t nz, double *v) {
  int64_t m = 0;
  for (int64_t k = 0; k < nz; k++)
    if (lm[k].status == PSP_SLICE_OK && isfinite(lm[k].muscle_ff)) v[m++] = lm[k].muscle_ff;
  double med = NAN;
  if (m > 0) {
    qsort(v, (size_t)m, sizeof *v, cmp_dbl);
    med = m % 2 ? v[m / 2] : 0.5 * (v[m / 2 - 1] + v[m / 2]);
  }
  if (!(med + MUSCLE_MARGIN > PSP_LM_MUSCLE_FF)) return NAN;
  return fmin(med + MUSCLE_MARGIN, MUSCLE_MAX_FF);
}

/* body_in: the slice's body as a previous call found it (read only), or
 * NULL: found here, into body_out. */
static void find_landmarks(const float *ff, int64_t nx, int64_t ny, double sx, double sy,
                           const double *near, double win_i_mm, double win_j_mm, double penalty,
                           bool csf_either, uint8_t *body_out, const uint8_t *body_in,
                           psp_slice_work *w, psp_slice_landmarks *lm);

void psp_landmarks_find(const float *ff, int64_t nx, int64_t ny, double sx, double sy,
                        const double *near, bool csf_either, uint8_t *body, psp_slice_work *w,
                        psp_slice_landmarks *lm) {
  find_landmarks(ff, nx, ny, sx, sy, near, 25.0, 30.0, ANCHOR_PENALTY, csf_either, body, NULL, w,
                 lm);
}

void psp_landmarks_refind(const float *ff, int64_t nx, int64_t ny, double sx, double sy,
                          const double *near, bool csf_either, const uint8_t *body,
                          psp_slice_work *w, psp_slice_landmarks *lm) {
  find_landmarks(ff, nx, ny, sx, sy, near, 25.0, 30.0, ANCHOR_PENALTY, csf_either, NULL, body, w,
                 lm);
}

void psp_landmarks_find_close(const float *ff, int64_t nx, int64_t ny, double sx, double sy,
                              const double *near, double radius_mm, bool csf_either,
                              const uint8_t *body, psp_slice_work *w, psp_slice_landmarks *lm) {
  find_landmarks(ff, nx, ny, sx, sy, near, radius_mm, radius_mm, CLOSE_PENALTY, csf_either, NULL,
                 body, w, lm);
}

static void find_landmarks(const float *ff, int64_t nx, int64_t ny, double sx, double sy,
                           const double *near, double win_i_mm, double win_j_mm, double penalty,
                           bool csf_either, uint8_t *body_out, const uint8_t *body_in,
                           psp_slice_work *w, psp_slice_landmarks *lm) {
  memset(lm, 0, sizeof *lm);
  lm->canal_radius_mm = NAN;
  lm->muscle_ff = NAN;
  lm->muscle_side_ff[0] = lm->muscle_side_ff[1] = NAN;
  lm->es_side_ff[0] = lm->es_side_ff[1] = NAN;
  lm->plane_share[0] = lm->plane_share[1] = NAN;
  lm->fat_ff = NAN;
  lm->back_fat_mm = NAN;
  lm->back_ff = NAN;
  lm->midline_i = NAN;
  int64_t n = nx * ny;
  double px = sx * sy;

  /* body */
  /* exactly 0 counts as background too: precomputed FF maps often zero the
   * air instead of marking it NaN; zeros inside the body come back with the
   * hole filling */
  const uint8_t *body = body_in;
  if (!body_in) {
    for (int64_t p = 0; p < n; p++) /* not NaN and not 0: no comparison holds for NaN */
      body_out[p] = (uint8_t)((ff[p] < 0.0f) | (ff[p] > 0.0f));
    int64_t nb = psp_mask_keep_largest(body_out, nx, ny, w);
    if (nb * px < 2000.0) {
      char msg[192];
      snprintf(msg, sizeof msg, "no body cross-section (largest region with signal %.0f mm^2)",
               nb * px);
      set_reason(lm, PSP_SLICE_NO_BODY, msg);
      return;
    }
    psp_mask_fill_holes(body_out, nx, ny, w);
    body = body_out;
  }
  /* the per-pixel passes below visit only the body's bounding box (in
   * raster order, so the sums are the same) */
  int64_t bb[4] = {0, nx - 1, 0, ny - 1};
  psp_mask_box(body, nx, ny, bb);
  /* one pass over the box: the body's extent and centroid, the histogram
   * of its fatty voxels (the slice's fat level: their median) and the
   * masks of the canal search (low FF; fat-like on IP/OP input, where the
   * water-bright CSF may read as fat-dominant: then a uniformly fat-like
   * disc counts as canal too); the masks are used only inside the box */
  enum { NB = 128 };
  int64_t h[NB] = {0}, tot = 0;
  uint8_t *low = w->m0, *high = w->m2, *musc = w->m3;
  const float mmax = (float)w->muscle_max_ff;
  /* bb is the body's extent; the centroid's sums are integers, exact in
   * any order */
  int64_t i0 = bb[0], i1 = bb[1], j0 = bb[2], j1 = bb[3], cnt = 0, si = 0, sj = 0;
  for (int64_t j = bb[2]; j <= bb[3]; j++) {
    const float *fr = ff + j * nx;
    const uint8_t *br = body + j * nx;
    uint8_t *lr = low + j * nx, *hr = high + j * nx, *mr = musc + j * nx;
    int64_t rc = 0, rs = 0;
    for (int64_t i = bb[0]; i <= bb[1]; i++) {
      uint8_t in = br[i] != 0;
      rc += in;
      rs += in ? i : 0;
      lr[i] = in & (fr[i] < LOW_FF); /* false for NaN */
      mr[i] = in & (fr[i] < mmax);
    }
    if (csf_either)
      for (int64_t i = bb[0]; i <= bb[1]; i++)
        hr[i] = (br[i] != 0) & (fr[i] > 1.0 - LOW_FF);
    cnt += rc;
    si += rs;
    sj += j * rc;
    for (int64_t i = bb[0]; i <= bb[1]; i++) {
      float v = fr[i];
      if (!br[i] || isnan(v) || v < 0.6f) continue;
      int b = (int)((v - 0.6f) / 0.6f * NB);
      if (b >= NB) b = NB - 1;
      h[b]++;
      tot++;
    }
  }
  lm->body_voxels = cnt;
  lm->body_box[0] = i0;
  lm->body_box[1] = i1;
  lm->body_box[2] = j0;
  lm->body_box[3] = j1;
  lm->body_centre.found = true;
  lm->body_centre.i = (double)si / (double)cnt;
  lm->body_centre.j = (double)sj / (double)cnt;
  {
    double fat = 0.9;
    if (tot > 0) {
      int64_t acc = 0;
      for (int b = 0; b < NB; b++) {
        acc += h[b];
        if (2 * acc >= tot) {
          fat = 0.6 + 0.6 * (b + 0.5) / NB;
          break;
        }
      }
    }
    lm->fat_ff = fat;
  }

  /* spinal canal: template score on integral images */
  integral(low, nx, bb, w->integ0);
  integral(musc, nx, bb, w->integ2);
  if (csf_either) integral(high, nx, bb, w->integ1);
  int64_t in_i = mm_to_vox(4.0, sx), in_j = mm_to_vox(4.0, sy);
  int64_t ro_i = mm_to_vox(13.0, sx), ro_j = mm_to_vox(13.0, sy);
  int64_t rh_i = mm_to_vox(8.0, sx), rh_j = mm_to_vox(8.0, sy);
  int64_t mo_i = mm_to_vox(20.0, sx), mo_j = mm_to_vox(30.0, sy);
  int64_t mh_i = mm_to_vox(7.0, sx), mh_j = mm_to_vox(7.0, sy);
  double bw = (double)(i1 - i0 + 1), bh = (double)(j1 - j0 + 1);
  /* only where a canal is anatomically plausible: near the left-right
   * centre of the body's extent and within reach of the back's skin (the
   * segmentation flags a canal outside either limit as the aorta, a kidney
   * or bowel) */
  double half_i = fmin(0.22 * bw, CANAL_MAX_OFF_MM / sx);
  double cen_i = 0.5 * (double)(i0 + i1);
  if (psp_landmarks_body_cut(lm, nx))
    half_i = 0.5 * bw; /* the field of view cuts the body on one side: its centre is unknown */
  int64_t ci0 = (int64_t)floor(cen_i - half_i), ci1 = (int64_t)ceil(cen_i + half_i);
  int64_t cj0 = j0 + (int64_t)(0.3 * bh), cj1 = j0 + (int64_t)(0.92 * bh);
  if (j0 <= 0) /* the field of view cuts the body in front: its front is unknown */
    cj0 = j0;
  lm->back_fat_mm = back_fat(ff, body, nx, bb, ci0, ci1, sy, w->f0);
  lm->back_ff = back_band_ff(ff, body, nx, ny, bb, ci0, ci1, sy, w->f0);
  int64_t cj_deep = j1 - (int64_t)floor(psp_landmarks_max_depth_mm(lm) / sy);
  if (cj0 < cj_deep) cj0 = cj_deep;
  if (near) {
    ci0 = (int64_t)fmax((double)ci0, floor(near[0] - win_i_mm / sx));
    ci1 = (int64_t)fmin((double)ci1, ceil(near[0] + win_i_mm / sx));
    cj0 = (int64_t)fmax((double)cj0, floor(near[1] - win_j_mm / sy));
    cj1 = (int64_t)fmin((double)cj1, ceil(near[1] + win_j_mm / sy));
  }
  double best = -1e9;
  int64_t bi = -1, bj = -1;
  for (int64_t j = cj0; j <= cj1; j++)
    for (int64_t i = ci0; i <= ci1; i++) {
      if (i < bb[0] || i > bb[1] || j < bb[2] || j > bb[3] ||
          !(low[j * nx + i] || (csf_either && high[j * nx + i])))
        continue;
      double inner = box_mean(w->integ0, nx, ny, bb, i, j, in_i, in_j);
      /* the ring is measured in the inner disc's own class: a fat-like disc
       * inside fat (subcutaneous, epidural) is no canal */
      const int32_t *cls = w->integ0;
      if (csf_either) {
        double ih = box_mean(w->integ1, nx, ny, bb, i, j, in_i, in_j);
        if (ih > inner) {
          inner = ih;
          cls = w->integ1;
        }
      }
      if (inner < 0.8) continue;
      int64_t na, nh;
      double sa = box_sum(cls, nx, ny, bb, i - ro_i, i + ro_i, j - ro_j, j + ro_j, &na);
      double sh = box_sum(cls, nx, ny, bb, i - rh_i, i + rh_i, j - rh_j, j + rh_j, &nh);
      double ring = na > nh ? (sa - sh) / (double)(na - nh) : 1.0;
      double ml = box_mean(w->integ2, nx, ny, bb, i - mo_i, j + mo_j, mh_i, mh_j);
      double mr = box_mean(w->integ2, nx, ny, bb, i + mo_i, j + mo_j, mh_i, mh_j);
      double s = inner - ring + 0.5 * fmin(ml, mr);
      if (near) /* the spine is continuous: prefer the expected position */
        s -= penalty * hypot(((double)i - near[0]) * sx, ((double)j - near[1]) * sy);
      if (s > best) { /* first maximum in scan order: deterministic */
        best = s;
        bi = i;
        bj = j;
      }
    }
  lm->canal_score = best;
  if (bi < 0 || best < CANAL_MIN_SCORE) {
    char msg[192];
    snprintf(msg, sizeof msg,
             "no spinal canal with paraspinal muscles behind it (best score %.2f, need %.2f)",
             bi < 0 ? 0.0 : best, CANAL_MIN_SCORE);
    set_reason(lm, PSP_SLICE_NO_SPINE, msg);
    return;
  }
  /* canal region: voxels of the peak's class (low FF, or fat-like on IP/OP
   * input) connected to the peak within 12 mm (and inside the body's box,
   * outside which the class masks are not set: empty there) */
  {
    const uint8_t *cls = low[bj * nx + bi] ? low : high;
    uint8_t *seen = w->m1;
    /* seen is read only within 12 mm of the peak: cleared there */
    {
      int64_t ri = (int64_t)ceil(12.0 / sx) + 1, rj = (int64_t)ceil(12.0 / sy) + 1;
      int64_t a0 = bi - ri < 0 ? 0 : bi - ri, a1 = bi + ri > nx - 1 ? nx - 1 : bi + ri;
      for (int64_t j = bj - rj < 0 ? 0 : bj - rj; j <= bj + rj && j < ny; j++)
        memset(seen + j * nx + a0, 0, (size_t)(a1 - a0 + 1));
    }
    int32_t *q = w->queue;
    int64_t head = 0, tail = 0;
    q[tail++] = (int32_t)(bj * nx + bi);
    seen[bj * nx + bi] = 1;
    double ssi = 0, ssj = 0;
    int64_t c = 0;
    while (head < tail) {
      int64_t p = q[head++];
      int64_t i = p % nx, j = p / nx;
      ssi += (double)i;
      ssj += (double)j;
      c++;
      int64_t nbp[4] = {i > bb[0] ? p - 1 : -1, i < bb[1] ? p + 1 : -1, j > bb[2] ? p - nx : -1,
                        j < bb[3] ? p + nx : -1};
      for (int e = 0; e < 4; e++) {
        int64_t q2 = nbp[e];
        if (q2 < 0 || !cls[q2]) continue;
        double di = (double)(q2 % nx - bi) * sx, dj = (double)(q2 / nx - bj) * sy;
        if (di * di + dj * dj > 12.0 * 12.0 || seen[q2]) continue;
        seen[q2] = 1;
        q[tail++] = (int32_t)q2;
      }
    }
    lm->canal.found = true;
    lm->canal.i = ssi / (double)c;
    lm->canal.j = ssj / (double)c;
    lm->canal_radius_mm = sqrt((double)c * px / 3.14159265358979323846);
  }
  double cr = fmin(lm->canal_radius_mm, 10.0);
  int64_t cjc = (int64_t)lround(lm->canal.j), cic = (int64_t)lround(lm->canal.i);

  /* midline: the axis of left-right mirror symmetry of the FF map behind
   * the canal (muscles, spinous process, fat), searched at half-voxel steps
   * within MIDLINE_SEARCH_MM of the canal centre */
  {
    int64_t ja = cjc + mm_to_vox(cr, sy), jb = cjc + mm_to_vox(cr + 50.0, sy);
    lm->midline_i = symmetry_axis(ff, nx, ny, ja, jb, mm_to_vox(40.0, sx),
                                  mm_to_vox(MIDLINE_SEARCH_MM, sx), -1.0, lm->canal.i, w);
    /* a multifidus much fattier on one side than the other (a one-sided
     * fatty atrophy) pulls the symmetry axis towards it, 8-12 mm on
     * dixon-tum01 with its left multifidus at FF 0.65: then the symmetry of
     * the fat-dominant tissue only (FF above ASYM_CLIP_FF; the interspinous
     * and subcutaneous fat, the fat planes), near the canal */
    int64_t da = mm_to_vox(6.0, sx), db = mm_to_vox(24.0, sx);
    int64_t ka = cjc + mm_to_vox(cr + 8.0, sy), kb = cjc + mm_to_vox(cr + 36.0, sy);
    double ml = box_median(ff, nx, ny, cic + da, cic + db, ka, kb, w->f0);
    double mr = box_median(ff, nx, ny, cic - db, cic - da, ka, kb, w->f0);
    /* ... and so does a one-sided fatty erector spinae, whose boxes lie
     * further out: 12-18 mm on dixon-tum01 with its left erector at FF
     * 0.36 (nifti_edit.py fatty 0.3 4, slices 11-15), the search's limit;
     * there the two axes lie far apart, while on the scans without such a
     * muscle they agree within 6 mm (dixon-tum01 within 3 on all but one
     * slice) */
    double clip = symmetry_axis(ff, nx, ny, ja, jb, mm_to_vox(40.0, sx),
                                mm_to_vox(ASYM_SEARCH_MM, sx), ASYM_CLIP_FF, lm->canal.i, w);
    double dax = fabs(lm->midline_i - clip) * sx, asym = fabs(ml - mr);
    if (asym > ASYM_MIDLINE_FF || dax > ASYM_AXES_MM || (asym > ASYM_NEAR_FF && dax > ASYM_NEAR_MM))
      lm->midline_i = clip;
  }
  int64_t mid = (int64_t)lround(lm->midline_i);

  /* vertebral body / disc / sacrum in front of the canal */
  {
    int64_t hi = mm_to_vox(25.0, sx);
    int64_t ja = cjc - mm_to_vox(cr + 50.0, sy), jb = cjc - mm_to_vox(cr + 3.0, sy);
    double a = 0, b = 0;
    int64_t c = 0;
    for (int64_t j = ja < 0 ? 0 : ja; j <= jb && j < ny; j++)
      for (int64_t i = mid - hi < 0 ? 0 : mid - hi; i <= mid + hi && i < nx; i++) {
        float v = ff[j * nx + i];
        if (!body[j * nx + i] || isnan(v) || v > 0.75f) continue;
        a += (double)i;
        b += (double)j;
        c++;
      }
    if (c * px >= 400.0) {
      lm->vertebral_body.found = true;
      lm->vertebral_body.i = a / (double)c;
      lm->vertebral_body.j = b / (double)c;
    }
  }

  /* muscle FF level: core boxes beside the spinous process */
  {
    int64_t da = mm_to_vox(6.0, sx), db = mm_to_vox(24.0, sx);
    int64_t ja = cjc + mm_to_vox(cr + 8.0, sy), jb = cjc + mm_to_vox(cr + 36.0, sy);
    double ml = box_median(ff, nx, ny, mid + da, mid + db, ja, jb, w->f0);
    double mr = box_median(ff, nx, ny, mid - db, mid - da, ja, jb, w->f0);
    lm->muscle_ff = isnan(ml) ? mr : isnan(mr) ? ml : 0.5 * (ml + mr);
    /* per side: the lower 30 % quantile of a box nearer the midline (the
     * multifidus at every lumbar level; fatty streaks do not lift it) */
    int64_t ea = mm_to_vox(SIDE_BOX_D0_MM, sx), eb = mm_to_vox(SIDE_BOX_D1_MM, sx);
    int64_t ka = cjc + mm_to_vox(cr + SIDE_BOX_Y0_MM, sy),
            kb = cjc + mm_to_vox(cr + SIDE_BOX_Y1_MM, sy);
    lm->muscle_side_ff[0] = box_quantile(ff, nx, ny, mid + ea, mid + eb, ka, kb, SIDE_Q, w->f0);
    lm->muscle_side_ff[1] = box_quantile(ff, nx, ny, mid - eb, mid - ea, ka, kb, SIDE_Q, w->f0);
    /* and of a box lateral of the multifidus (the erector spinae above
     * L5; at the lowest levels the lateral multifidus too) */
    ea = mm_to_vox(ES_BOX_D0_MM, sx);
    eb = mm_to_vox(ES_BOX_D1_MM, sx);
    ka = cjc + mm_to_vox(cr + ES_BOX_Y0_MM, sy);
    kb = cjc + mm_to_vox(cr + ES_BOX_Y1_MM, sy);
    lm->es_side_ff[0] = box_quantile(ff, nx, ny, mid + ea, mid + eb, ka, kb, SIDE_Q, w->f0);
    lm->es_side_ff[1] = box_quantile(ff, nx, ny, mid - eb, mid - ea, ka, kb, SIDE_Q, w->f0);
  }

  /* midline gap: the spinous process / interspinous fat reads fattier than
   * the multifidus beside it; its half-width on each side is where the mean
   * FF profile across the midline falls to 30 % of the way from the muscle
   * level to the midline peak */
  {
    int64_t hw = mm_to_vox(15.0, sx);
    int64_t ja = cjc + mm_to_vox(cr + 4.0, sy), jb = cjc + mm_to_vox(cr + 20.0, sy);
    double prof[512];
    if (hw > 255) hw = 255;
    for (int64_t t = -hw; t <= hw; t++) {
      double acc = 0;
      int64_t m = 0;
      int64_t i = mid + t;
      for (int64_t j = ja; j <= jb && j < ny; j++) {
        if (i < 0 || i >= nx || j < 0) continue;
        float v = ff[j * nx + i];
        acc += isnan(v) ? 1.0 : v;
        m++;
      }
      prof[t + hw] = m ? acc / (double)m : 1.0;
    }
    double mus = isnan(lm->muscle_ff) ? 0.1 : lm->muscle_ff;
    double peak = prof[hw];
    for (int64_t t = -1; t <= 1; t++)
      peak = fmax(peak, prof[hw + t]);
    lm->gap_mm[0] = lm->gap_mm[1] = GAP_MIN_MM;
    if (peak - mus > 0.08) {
      double lim = mus + 0.5 * (peak - mus);
      for (int side = 0; side < 2; side++) {
        int sg = side == 0 ? 1 : -1;
        int64_t t = 0;
        while (t < hw && prof[hw + sg * t] > lim)
          t++;
        lm->gap_mm[side] = fmax(GAP_MIN_MM, fmin(((double)t - 0.5) * sx, 8.0));
      }
    }
  }

  /* spinous process: posterior end of the midline gap with muscle on both
   * sides */
  {
    double thr = isnan(lm->muscle_ff) ? 0.5 : 0.5 * (lm->muscle_ff + lm->fat_ff);
    int64_t da = mm_to_vox(3.0, sx), db = mm_to_vox(14.0, sx);
    int64_t last = -1;
    int misses = 0;
    for (int64_t j = cjc + mm_to_vox(cr, sy); j < ny; j++) {
      bool l = false, r = false;
      for (int64_t d = da; d <= db; d++) {
        int64_t a = mid + d, b = mid - d;
        if (a < nx && !isnan(ff[j * nx + a]) && ff[j * nx + a] < thr) l = true;
        if (b >= 0 && !isnan(ff[j * nx + b]) && ff[j * nx + b] < thr) r = true;
      }
      if (l && r) {
        last = j;
        misses = 0;
      } else if (last >= 0 && ++misses > mm_to_vox(4.0, sy)) {
        break;
      }
    }
    if (last >= 0) {
      lm->spinous.found = true;
      lm->spinous.i = lm->midline_i;
      lm->spinous.j = (double)last;
    }
  }
  set_reason(lm, PSP_SLICE_OK, "spine found");
}
