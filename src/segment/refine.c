/*
 * DESIGN: refinements of the segmentation's masks and labels (src/segment/
 * segment.c steps 1, 3a-3d: items 1-13 below), pure functions of their
 * inputs, serial within a slice (the callers own every buffer), except
 * psp_seg_zfill_stack (item 9: parallel over slices, from a copy). What
 * each item did to which data, and what was tried and not kept: "refine.c
 * item N" in src/segment/MEASUREMENTS.md.
 *
 * Why: at the phantoms' 3-3.5 mm pixels most errors lie on the border ring
 * (fatty streaks touching the fat outside, lean muscle beyond a fat plane
 * thinner than a voxel, the MF/ES plane the truth leaves unlabelled); see
 * "refine.c: why".
 *
 * 1. psp_seg_local_strict: the strict mask's threshold also from the local
 *    muscle level (mean FF of the strict voxels within LOCAL_MM, never above
 *    the slice's): the slice's level is the multifidus's, and an erector
 *    spinae leaner than it joins the back wall's lean layer through plane
 *    voxels below the slice's strict threshold.
 * 2. psp_seg_unlabel_plane: after a split along a visible plane the
 *    boundary voxels fatter than muscle + 0.7 (fat - muscle) stay
 *    unlabelled, as the path split leaves its plane voxels.
 * 3. smooth_labels: an unlabelled voxel with >= SMOOTH_ADD of its 8
 *    neighbours in one muscle and none in another joins it, a muscle voxel
 *    with <= SMOOTH_DROP of 8 in its own leaves it (the border is decided
 *    voxel by voxel on a noisy FF; a true outline is smooth at that scale).
 *    After items 1-3 the FP and FN voxels on the outline read the same FF:
 *    no FF threshold separates them, hence shape, not FF, from here on
 *    (see "refine.c: error analysis after items 1-3" and "refine.c: also
 *    tried and not kept").
 * 4. The ridge between erector and multifidus (psp_seg_refine_outlines): an
 *    erector voxel between the multifidus and the erector along a row,
 *    column or diagonal, fattier than both by more than RIDGE_SHARE (fat -
 *    muscle), is the plane in partial volume and leaves the erector.
 * 5. The outlines smoothed at OUTLINE_MM = 6 mm: per muscle the indicator
 *    blurred by a Gaussian of 6 mm, or of 1 / OUTLINE_RADII of the muscle's
 *    equivalent radius where smaller (a small multifidus is not eroded); a
 *    voxel with a share below OUTLINE_KEEP leaves (bumps, spurs, a tip one
 *    voxel wide), an unlabelled one with at least OUTLINE_ADD and the
 *    others' below OUTLINE_OTHER joins (notches). A muscle's outline is
 *    smooth at that scale; voxel-scale decisions on a noisy, streaky FF are
 *    not.
 * 6. psp_seg_local_loose: for a side whose multifidus is much fattier than
 *    the other's (segment.c step 1) the loose threshold half way from the
 *    local muscle level (within LOCAL_MM, between the sides' levels) to
 *    fat, so the lean erector beside it does not take in its partial-volume
 *    rim. It shares with item 1 the integral images (local_box_build, _sum).
 * 7. psp_seg_fatty_seeds: that side's split seeded at the step of FF
 *    between a fatty multifidus and the lean erector, or between the lean
 *    multifidus (at least FATTY_ES_MF_SHARE = 5 % of the side: 5-10 % at
 *    the upper lumbar levels) and a fatty erector spinae.
 * 8. drop_es_pieces (psp_seg_refine_outlines, after 11, before 12): the erector's voxels on
 *    a ridge of FF (fattier than both neighbours by PIECE_SHARE (fat - its
 *    mean FF)) set aside, its pieces below PIECE_FRAC of the largest leave
 *    it (the back wall's lean layer at the lateral tip, joined through a
 *    plane thinner than a voxel).
 * 9. psp_seg_zfill_stack (segment.c step 3d): where both neighbouring
 *    measured slices hold the same value and the slice does not, a voxel on
 *    its muscle's outline, or unlabelled, takes it (a muscle: when 4-next to
 *    it, and an unlabelled voxel only below the strict threshold); inside
 *    voxels stay; on a copy, until nothing changes (at most
 *    ZFILL_PASSES_MAX). The rules above decide each slice on its own noisy,
 *    streaky FF; a muscle's outline changes little between slices.
 * 10. close_outlines (psp_seg_refine_outlines, after 5): each muscle closed
 *    with a disc of CLOSE_MM = 5 mm (exact EDTs, psp_edt_1d): the issue asks
 *    for the compartment inside the fascia, its intramuscular fat included,
 *    and a fatty streak touching the fat outside leaves a bite that neither
 *    the hole filling nor item 5 bridges, at fine pixels above all.
 *
 * 11. drop_lean_pieces (psp_seg_refine_outlines, after 10, before 8): an
 *    erector spinae with a mean FF of LEAN_GATE or more loses the pieces of
 *    its outline leaner than LEAN_FRAC of that mean (LEAN_MIN_MM2 or more,
 *    LEAN_OUT_SHARE of their edges outside it), with the fat plane's voxels
 *    next to them: lean muscle of another kind joined through a plane
 *    thinner than a voxel, whose partial volume reads as fatty muscle.
 * 12. join_step_ring (psp_seg_refine_outlines, last): an unlabelled voxel
 *    on a one-voxel step from a multifidus to fat joins it when it reads
 *    below the muscle's own midpoint to fat (the truth's rule at a sharp
 *    edge); on a real scan's ramp of several voxels nothing joins.
 * 13. trim_es_rim (psp_seg_refine_outlines, first; pixels of
 *    TRIM_MIN_MM = 2.5 mm or more, beyond the 0.5-2 mm of real scans): an
 *    erector voxel 4-next to an unlabelled one and reading its mean FF +
 *    TRIM_SHARE (fat - mean) or more leaves it, unless a multifidus lies
 *    within TRIM_MF_VOX voxels: over half fat, the epimuscular fat in
 *    partial volume, which items 3, 5 and 10 would otherwise keep on the
 *    outline at 3 mm pixels.
 *
 * What remains on phantom02/03 (erector area, multifidus FF at the border)
 * and a bound for any voxel-wise rule: "refine.c: what remains".
 */
#include "segment/segment.h"
#include "segment/limits.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SMOOTH_ADD 5       /* of 8 neighbours in one muscle: an unlabelled voxel joins it */
#define SMOOTH_DROP 2      /* of 8 neighbours in its own muscle or fewer: a voxel leaves it */
#define LOCAL_MM 10.0      /* half-width of the box of the local muscle level */
#define RIDGE_SHARE 0.4    /* of fat - muscle: an erector voxel this much fattier than both sides */
#define OUTLINE_RADII 3.0  /* the smoothing sigma is at most the equivalent radius / this */
#define OUTLINE_MM 6.0     /* Gaussian sigma of the outline smoothing */
#define OUTLINE_KEEP 0.35  /* a muscle voxel stays with a blurred share of at least this */
#define OUTLINE_ADD 0.5    /* an unlabelled voxel joins with a blurred share of at least this */
#define OUTLINE_OTHER 0.05 /* ... and the other muscles' share below this */
#define CLOSE_MM 5.0       /* radius of the outline closing (step 10) */
#define PIECE_SHARE 0.3    /* of fat - the erector's level: a ridge that sets its pieces apart */
#define PIECE_FRAC 0.3 /* of the largest piece: a smaller one beyond a ridge leaves the erector */
#define LEAN_GATE 0.25 /* mean FF: a fatty erector spinae, whose lean pieces leave it */
#define LEAN_FRAC 0.5  /* of the erector's mean FF: a lean voxel */
#define LEAN_MIN_MM2 30.0      /* a smaller lean piece stays */
#define LEAN_OUT_SHARE 0.3     /* of a lean piece's outer edges at least, outside the erector */
#define PIECE_MIN_VOX 20       /* erector voxels on the slice: fewer, no pieces looked for */
#define STEP_MID_SHARE 0.5     /* of fat - a multifidus's mean FF: a step ring voxel below joins */
#define STEP_FAT_SHARE 0.8     /* ... when the next voxel out reads at least this: fat */
#define ZFILL_PASSES_MAX 10    /* step 9 repeats until no voxel changes, at most this often */
#define FATTY_ES_MF_SHARE 0.05 /* of the side: the lean multifidus seed beside a fatty erector */
#define TRIM_SHARE 0.5  /* of fat - the erector's mean FF: a rim voxel this fatty leaves it */
#define TRIM_MF_VOX 2   /* a rim voxel this near a multifidus (voxels) stays */
#define TRIM_MIN_MM 2.5 /* item 13 at pixels this coarse or coarser only */

/* Integral images of the FF of a mask's voxels and of their count, over
 * the mask's bounding box (the mask is empty outside it). */
typedef struct local_box {
  double *S;
  int32_t *C;
  int64_t b[4], w1, bw, bh;
} local_box;

/* Returns 0 when the mask is empty (nothing built), -1 on OOM, 1 built. */
static int local_box_build(const float *ff, const uint8_t *mask, int64_t nx, int64_t ny,
                           local_box *lb) {
  lb->S = NULL;
  lb->C = NULL;
  if (!psp_mask_box(mask, nx, ny, lb->b)) return 0;
  int64_t *b = lb->b;
  lb->bw = b[1] - b[0] + 1;
  lb->bh = b[3] - b[2] + 1;
  lb->w1 = lb->bw + 1;
  int64_t w1 = lb->w1, n1 = w1 * (lb->bh + 1);
  double *S = lb->S = calloc((size_t)n1, sizeof *S);
  int32_t *C = lb->C = calloc((size_t)n1, sizeof *C);
  if (!S || !C) {
    free(S);
    free(C);
    return -1;
  }
  for (int64_t j = 0; j < lb->bh; j++)
    for (int64_t i = 0; i < lb->bw; i++) {
      int64_t p = (j + b[2]) * nx + i + b[0], q = (j + 1) * w1 + i + 1;
      bool in = mask[p] != 0;
      S[q] = (in ? (double)ff[p] : 0.0) + S[q - 1] + S[q - w1] - S[q - w1 - 1];
      C[q] = (in ? 1 : 0) + C[q - 1] + C[q - w1] - C[q - w1 - 1];
    }
  return 1;
}

/* The sum and count of the mask's voxels in the box of half-widths rx, ry
 * about (i, j), coordinates relative to the mask's box. */
static double local_box_sum(const local_box *lb, int64_t i, int64_t j, int64_t rx, int64_t ry,
                            int32_t *cn) {
  int64_t a0 = i - rx < 0 ? 0 : i - rx, a1 = i + rx + 1 > lb->bw ? lb->bw : i + rx + 1;
  int64_t b0 = j - ry < 0 ? 0 : j - ry, b1 = j + ry + 1 > lb->bh ? lb->bh : j + ry + 1;
  if (a0 >= a1 || b0 >= b1) {
    *cn = 0;
    return 0.0;
  }
  int64_t w1 = lb->w1;
  const double *S = lb->S;
  const int32_t *C = lb->C;
  *cn = C[b1 * w1 + a1] - C[b0 * w1 + a1] - C[b1 * w1 + a0] + C[b0 * w1 + a0];
  return S[b1 * w1 + a1] - S[b0 * w1 + a1] - S[b1 * w1 + a0] + S[b0 * w1 + a0];
}

/* The strict mask against the local muscle level: the slice's level is
 * the multifidus's beside the spinous process, and where the muscle around
 * a voxel is leaner (an erector spinae leaner than an atrophied, fatty
 * multifidus) a fat plane in partial volume towards the next muscle reads
 * below the slice's strict threshold and joins the two. Per strict voxel
 * the local level is the mean FF of the strict voxels within LOCAL_MM
 * (box), never above the slice's; the voxel stays strict if its raw and 3 x
 * 3 mean FF are below that level + share (fat - level). Only removes
 * voxels. Returns false on OOM. */
bool psp_seg_local_strict(const float *ff, const float *sm, int64_t nx, int64_t ny, double sx,
                          double sy, double muscle, double fat, double share, uint8_t *strict) {
  local_box lb;
  int built = local_box_build(ff, strict, nx, ny, &lb);
  if (built <= 0) return built == 0;
  int64_t rx = psp_seg_lround(LOCAL_MM / sx), ry = psp_seg_lround(LOCAL_MM / sy);
  for (int64_t j = 0; j < lb.bh; j++)
    for (int64_t i = 0; i < lb.bw; i++) {
      int64_t p = (j + lb.b[2]) * nx + i + lb.b[0];
      if (!strict[p]) continue;
      int32_t cn;
      double su = local_box_sum(&lb, i, j, rx, ry, &cn);
      double loc = fmin(su / (double)cn, muscle); /* cn >= 1: the voxel itself */
      double t = loc + share * (fat - loc);
      if (ff[p] >= t || sm[p] >= t) strict[p] = 0;
    }
  free(lb.S);
  free(lb.C);
  return true;
}

/* The loose threshold per voxel of a side whose multifidus is much fattier
 * than the other side's (segment.c, side_levels): half way from the local
 * muscle level (mean FF of the kept voxels within LOCAL_MM, between lo and
 * hi) to fat, for the voxels of the rectangle g; hi's where no kept voxel
 * is near. thr: nx * ny. Returns false on OOM. */
bool psp_seg_local_loose(const float *ff, const uint8_t *kept, int64_t nx, int64_t ny, double sx,
                         double sy, double lo, double hi, double fat, const int64_t g[4],
                         float *thr) {
  for (int64_t j = g[2]; j <= g[3]; j++)
    for (int64_t i = g[0]; i <= g[1]; i++)
      thr[j * nx + i] = (float)(0.5 * (hi + fat));
  local_box lb;
  int built = local_box_build(ff, kept, nx, ny, &lb);
  if (built <= 0) return built == 0;
  int64_t rx = psp_seg_lround(LOCAL_MM / sx), ry = psp_seg_lround(LOCAL_MM / sy);
  for (int64_t j = g[2]; j <= g[3]; j++)
    for (int64_t i = g[0]; i <= g[1]; i++) {
      int32_t cn;
      double su = local_box_sum(&lb, i - lb.b[0], j - lb.b[2], rx, ry, &cn);
      if (cn == 0) continue;
      double loc = fmin(fmax(su / (double)cn, lo), hi);
      thr[j * nx + i] = (float)(0.5 * (loc + fat));
    }
  free(lb.S);
  free(lb.C);
  return true;
}

/* After a split along a visible plane: the voxels on the boundary between
 * the two muscles (a 4-neighbour in the other) that are fattier than t, the
 * plane in partial volume, stay unlabelled, as on the path split; the hole
 * filling had made them part of the compartment. Decided on the labels
 * before; old: scratch of nx * ny. */
void psp_seg_unlabel_plane(const float *ff, const uint8_t *comp, float *lab, int64_t nx,
                           const int64_t bx[4], int side, double t, uint8_t *old) {
  uint8_t val = (uint8_t)(side + 1);
  float mf = side == 0 ? PSP_LABEL_MF_LEFT : PSP_LABEL_MF_RIGHT;
  float es = side == 0 ? PSP_LABEL_ES_LEFT : PSP_LABEL_ES_RIGHT;
  for (int64_t j = bx[2]; j <= bx[3]; j++)
    for (int64_t p = j * nx + bx[0]; p <= j * nx + bx[1]; p++)
      old[p] = comp[p] == val ? (lab[p] == mf ? 1 : lab[p] == es ? 2 : 0) : 0;
  for (int64_t j = bx[2]; j <= bx[3]; j++)
    for (int64_t i = bx[0]; i <= bx[1]; i++) {
      int64_t p = j * nx + i;
      if (!old[p] || isnan(ff[p]) || !(ff[p] > t)) continue;
      uint8_t o = (uint8_t)(3 - old[p]);
      bool touch = (i > bx[0] && old[p - 1] == o) || (i < bx[1] && old[p + 1] == o) ||
                   (j > bx[2] && old[p - nx] == o) || (j < bx[3] && old[p + nx] == o);
      if (touch) lab[p] = 0;
    }
}

/* Smooths the muscle outlines of one slice at the voxel scale: an
 * unlabelled voxel with at least SMOOTH_ADD of its 8 neighbours in one
 * muscle and none in another joins it (a notch: a fatty streak or a noisy
 * voxel at the border, which the threshold left out because it touches the
 * fat outside); a muscle voxel with at most SMOOTH_DROP of its 8 neighbours
 * in the same muscle leaves it (a spur: a noisy or partial-volume voxel).
 * All decisions read the labels before the pass. A voxel outside bx has at
 * most 3 neighbours inside it, so nothing is added outside bx. old: scratch
 * of nx * ny. */
static void smooth_labels(const float *ff, float *lab, int64_t nx, int64_t ny, const int64_t bx[4],
                          uint8_t *old) {
  int64_t j0 = bx[2] > 1 ? bx[2] - 1 : 1, j1 = bx[3] + 1 < ny - 1 ? bx[3] + 1 : ny - 2;
  int64_t i0 = bx[0] > 1 ? bx[0] - 1 : 1, i1 = bx[1] + 1 < nx - 1 ? bx[1] + 1 : nx - 2;
  if (j0 > j1 || i0 > i1) return;
  for (int64_t j = j0 - 1; j <= j1 + 1; j++)
    for (int64_t i = i0 - 1; i <= i1 + 1; i++)
      old[j * nx + i] = (uint8_t)lab[j * nx + i];
  const int64_t nb[8] = {-nx - 1, -nx, -nx + 1, -1, 1, nx - 1, nx, nx + 1};
  for (int64_t j = j0; j <= j1; j++)
    for (int64_t i = i0; i <= i1; i++) {
      int64_t p = j * nx + i;
      int cnt[PSP_LABEL_COUNT] = {0};
      for (int q = 0; q < 8; q++)
        cnt[old[p + nb[q]]]++;
      int l = old[p];
      if (l) {
        if (cnt[l] <= SMOOTH_DROP) lab[p] = 0;
        continue;
      }
      if (isnan(ff[p])) continue;
      for (int m = 1; m < PSP_LABEL_COUNT; m++)
        if (cnt[m] >= SMOOTH_ADD && cnt[0] + cnt[m] == 8) lab[p] = (float)m;
    }
}

/* The fat plane between the erector spinae and the multifidus in partial
 * volume, seen as a ridge: an erector voxel with the multifidus of its side
 * on one side and the erector on the other along a row, a column or a
 * diagonal, fattier than both by more than need, leaves the erector (the
 * truth's plane voxels hold no muscle's majority). Decided on the labels
 * before; only inside bx (where the labels are); old: scratch of nx * ny. */
static void unlabel_es_ridge(const float *ff, float *lab, int64_t nx, int64_t ny,
                             const int64_t bx[4], double need, uint8_t *old) {
  int64_t j0 = bx[2] > 1 ? bx[2] : 1, j1 = bx[3] < ny - 2 ? bx[3] : ny - 2;
  int64_t i0 = bx[0] > 1 ? bx[0] : 1, i1 = bx[1] < nx - 2 ? bx[1] : nx - 2;
  if (j0 > j1 || i0 > i1) return;
  for (int64_t j = j0 - 1; j <= j1 + 1; j++)
    for (int64_t i = i0 - 1; i <= i1 + 1; i++)
      old[j * nx + i] = (uint8_t)lab[j * nx + i];
  const int64_t ax[4] = {1, nx, nx + 1, nx - 1};
  for (int64_t j = j0; j <= j1; j++)
    for (int64_t i = i0; i <= i1; i++) {
      int64_t p = j * nx + i;
      uint8_t l = old[p], m;
      if (l == PSP_LABEL_ES_LEFT)
        m = PSP_LABEL_MF_LEFT;
      else if (l == PSP_LABEL_ES_RIGHT)
        m = PSP_LABEL_MF_RIGHT;
      else
        continue;
      if (isnan(ff[p])) continue;
      for (int q = 0; q < 4; q++) {
        int64_t a = p + ax[q], b = p - ax[q];
        if (!((old[a] == m && old[b] == l) || (old[b] == m && old[a] == l))) continue;
        if (isnan(ff[a]) || isnan(ff[b])) continue;
        if ((double)ff[p] - fmax((double)ff[a], (double)ff[b]) > need) {
          lab[p] = 0;
          break;
        }
      }
    }
}

/* Gaussian weights g[0..r] (g[-d] = g[d]) of sigma sg voxels, truncated at
 * 2 sigma (r <= 64), normalised. Returns r. */
static int64_t gauss_weights(double sg, float *g) {
  int64_t r = (int64_t)ceil(2.0 * sg);
  r = r > 64 ? 64 : r < 1 ? 1 : r;
  double z = 0;
  for (int64_t d = 0; d <= r; d++)
    z += (d ? 2.0 : 1.0) * exp(-0.5 * (double)(d * d) / (sg * sg));
  for (int64_t d = 0; d <= r; d++)
    g[d] = (float)(exp(-0.5 * (double)(d * d) / (sg * sg)) / z);
  return r;
}

/* The muscles' outlines smoothed: the indicator of each muscle blurred by a
 * Gaussian (separable, truncated at 2 sigma) of sigma_mm, or of a third of
 * the muscle's equivalent radius (sqrt(area / pi)) on the slice where that
 * is smaller (a small muscle is not eroded away); a muscle voxel whose
 * blurred share is below keep leaves it (a bump or spur of the outline),
 * an unlabelled voxel next to the labels with a share of at least
 * OUTLINE_ADD and the other muscles' below OUTLINE_OTHER joins (a notch).
 * The blurred shares come from the labels before; a voxel's own decision
 * runs over the muscles in the order of ml, so one that leaves a muscle
 * may join a later one in the same pass (rare: the other shares must be
 * below OUTLINE_OTHER). The sums run in a fixed order per voxel. */
static bool smooth_outlines(const float *ff, float *lab, int64_t nx, int64_t ny, double sx,
                            double sy, const int64_t bx[4], double sigma_mm, double keep) {
  if (bx[1] < bx[0] || bx[3] < bx[2]) return true;
  enum { NM = PSP_LABEL_COUNT - 1 };
  const float ml[NM] = {PSP_LABEL_ES_LEFT, PSP_LABEL_ES_RIGHT, PSP_LABEL_MF_LEFT,
                        PSP_LABEL_MF_RIGHT};
  /* output window: bx grown by one voxel (the labels lie inside it) */
  int64_t i0 = bx[0] - 1, j0 = bx[2] - 1, w = bx[1] - bx[0] + 3, h = bx[3] - bx[2] + 3;
  int64_t cnt[NM] = {0}, box[NM][4]; /* per muscle: voxels, box in window coordinates */
  for (int c = 0; c < NM; c++)
    box[c][0] = w, box[c][1] = -1, box[c][2] = h, box[c][3] = -1;
  for (int64_t j = j0 < 0 ? 0 : j0; j < j0 + h && j < ny; j++)
    for (int64_t i = i0 < 0 ? 0 : i0; i < i0 + w && i < nx; i++)
      for (int c = 0; c < NM; c++)
        if (lab[j * nx + i] == ml[c]) {
          cnt[c]++;
          int64_t *b = box[c];
          b[0] = i - i0 < b[0] ? i - i0 : b[0];
          b[1] = i - i0 > b[1] ? i - i0 : b[1];
          b[2] = j - j0 < b[2] ? j - j0 : b[2];
          b[3] = j - j0 > b[3] ? j - j0 : b[3];
        }
  float gx[NM][65], gy[NM][65];
  int64_t rx[NM], ry[NM], mx = 1, my = 1;
  for (int c = 0; c < NM; c++) {
    double sg =
        fmin(sigma_mm, sqrt((double)cnt[c] * sx * sy / 3.14159265358979323846) / OUTLINE_RADII);
    sg = fmax(sg, 0.5 * fmin(sx, sy));
    rx[c] = gauss_weights(sg / sx, gx[c]);
    ry[c] = gauss_weights(sg / sy, gy[c]);
    mx = rx[c] > mx ? rx[c] : mx;
    my = ry[c] > my ? ry[c] : my;
  }
  /* the indicators over the window grown by mx columns and my rows (0
   * outside the slice) */
  int64_t wx = w + 2 * mx, hy = h + 2 * my;
  float *buf = calloc((size_t)(NM * wx * hy + w * hy + NM * w * h), sizeof *buf);
  if (!buf) return false;
  float *ind = buf, *tmp = buf + NM * wx * hy, *out = tmp + w * hy;
  for (int64_t j = 0; j < hy; j++) {
    int64_t y = j0 - my + j;
    if (y < 0 || y >= ny) continue;
    for (int64_t i = 0; i < wx; i++) {
      int64_t x = i0 - mx + i;
      if (x < 0 || x >= nx) continue;
      float v = lab[y * nx + x];
      for (int c = 0; c < NM; c++)
        ind[c * wx * hy + j * wx + i] = v == ml[c] ? 1.0f : 0.0f;
    }
  }
  /* Each muscle's blur only where it is not 0 (its box grown by its
   * radii): elsewhere every term is 0, as out already holds, and inside the
   * box the same sums in the same order, over a tmp that is 0 on the rows
   * the vertical pass reads outside the muscle's rows. */
  for (int c = 0; c < NM; c++) {
    if (!cnt[c]) continue;
    const int64_t c0 = box[c][0] - rx[c] < 0 ? 0 : box[c][0] - rx[c];
    const int64_t c1 = box[c][1] + rx[c] > w - 1 ? w - 1 : box[c][1] + rx[c];
    const int64_t r0 = box[c][2] - ry[c] < 0 ? 0 : box[c][2] - ry[c];
    const int64_t r1 = box[c][3] + ry[c] > h - 1 ? h - 1 : box[c][3] + ry[c];
    const int64_t nc = c1 - c0 + 1;
    for (int64_t j = r0 - ry[c]; j <= r1 + ry[c]; j++) /* tmp rows j + my, all in range */
      memset(tmp + (j + my) * w + c0, 0, (size_t)nc * sizeof *tmp);
    for (int64_t j = box[c][2]; j <= box[c][3]; j++) {
      const float *in = ind + c * wx * hy + (j + my) * wx + mx + c0;
      float *o = tmp + (j + my) * w + c0;
      for (int64_t i = 0; i < nc; i++)
        o[i] = gx[c][0] * in[i];
      for (int64_t d = 1; d <= rx[c]; d++)
        for (int64_t i = 0; i < nc; i++)
          o[i] += gx[c][d] * (in[i - d] + in[i + d]);
    }
    for (int64_t j = r0; j <= r1; j++) {
      const float *in = tmp + (j + my) * w + c0;
      float *o = out + c * w * h + j * w + c0;
      for (int64_t i = 0; i < nc; i++)
        o[i] = gy[c][0] * in[i];
      for (int64_t d = 1; d <= ry[c]; d++)
        for (int64_t i = 0; i < nc; i++)
          o[i] += gy[c][d] * (in[i - d * w] + in[i + d * w]);
    }
  }
  for (int64_t j = 0; j < h; j++) {
    int64_t y = j0 + j;
    if (y < 0 || y >= ny) continue;
    for (int64_t i = 0; i < w; i++) {
      int64_t x = i0 + i;
      if (x < 0 || x >= nx) continue;
      int64_t p = y * nx + x, q = j * w + i;
      float all = 0.0f;
      for (int c = 0; c < NM; c++)
        all += out[c * w * h + q];
      for (int c = 0; c < NM; c++) {
        float b = out[c * w * h + q], other = all - b;
        if (lab[p] == ml[c] && b < (float)keep)
          lab[p] = 0.0f;
        else if (lab[p] == 0.0f && !isnan(ff[p]) && b >= (float)OUTLINE_ADD &&
                 other < (float)OUTLINE_OTHER)
          lab[p] = ml[c];
      }
    }
  }
  free(buf);
  return true;
}

/* box = bx grown by one voxel, kept one voxel off the image's edge (where
 * the labels are, and every 8-neighbour inside the image); false when
 * empty. */
static bool grown_box(const int64_t bx[4], int64_t nx, int64_t ny, int64_t box[4]) {
  box[0] = bx[0] > 1 ? bx[0] - 1 : 1;
  box[1] = bx[1] + 1 < nx - 1 ? bx[1] + 1 : nx - 2;
  box[2] = bx[2] > 1 ? bx[2] - 1 : 1;
  box[3] = bx[3] + 1 < ny - 1 ? bx[3] + 1 : ny - 2;
  return box[0] <= box[1] && box[2] <= box[3];
}

/* old = the labels (0 where none) inside box grown by one voxel. */
static void snapshot_labels(const float *lab, int64_t nx, const int64_t box[4], uint8_t *old) {
  for (int64_t j = box[2] - 1; j <= box[3] + 1; j++)
    for (int64_t p = j * nx + box[0] - 1; p <= j * nx + box[1] + 1; p++)
      old[p] = (uint8_t)(lab[p] > 0.0f ? lab[p] : 0.0f);
}

/* The sum of the FF of label l's voxels inside box (NaN ones left out);
 * *cnt: how many. */
static double label_ff_sum(const float *ff, const float *lab, int64_t nx, const int64_t box[4],
                           float l, int64_t *cnt) {
  double sum = 0;
  *cnt = 0;
  for (int64_t j = box[2]; j <= box[3]; j++)
    for (int64_t p = j * nx + box[0]; p <= j * nx + box[1]; p++)
      if (lab[p] == l && !isnan(ff[p])) sum += ff[p], (*cnt)++;
  return sum;
}

/* The erector spinae's pieces beyond a plane of fat in partial volume: its
 * voxels on a ridge of FF (fattier than both neighbours along a row, a
 * column or a diagonal by more than PIECE_SHARE (fat - the erector's mean
 * FF on the slice)) are set aside; where the rest falls apart (4-connected)
 * the pieces below PIECE_FRAC of the largest leave the erector, and so do
 * the ridge voxels then touching none of its kept voxels. Inside bx grown
 * by one voxel (where the labels are); old: nx * ny scratch. Returns false
 * on OOM. */
static bool drop_es_pieces(const float *ff, float *lab, int64_t nx, int64_t ny, const int64_t bx[4],
                           double fat, uint8_t *old) {
  int64_t box[4];
  if (!grown_box(bx, nx, ny, box)) return true;
  int32_t *cc = malloc((size_t)(2 * nx * ny + 1) * sizeof *cc), *parent = cc + nx * ny;
  int64_t *size = NULL;
  bool ok = cc != NULL;
  const int64_t ax[4] = {1, nx, nx + 1, nx - 1};
  const float es[2] = {PSP_LABEL_ES_LEFT, PSP_LABEL_ES_RIGHT};
  for (int e = 0; ok && e < 2; e++) {
    /* old: 1 an erector voxel off the ridge (its ridge voxels: lab, not old) */
    int64_t cnt;
    const double sum = label_ff_sum(ff, lab, nx, box, es[e], &cnt);
    double need = cnt >= PIECE_MIN_VOX ? PIECE_SHARE * (fat - sum / (double)cnt) : NAN;
    if (!(need > 0)) continue;
    for (int64_t j = box[2]; j <= box[3]; j++)
      for (int64_t p = j * nx + box[0]; p <= j * nx + box[1]; p++) {
        old[p] = lab[p] == es[e];
        for (int q = 0; old[p] && q < 4; q++)
          if ((double)ff[p] - (double)ff[p + ax[q]] > need &&
              (double)ff[p] - (double)ff[p - ax[q]] > need)
            old[p] = 0;
      }
    int32_t nc = psp_cc_label_box(old, nx, box, false, cc, parent);
    if (nc < 2) continue;
    size = calloc((size_t)nc + 1, sizeof *size);
    if (!size) {
      ok = false;
      break;
    }
    int32_t big = 0;
    for (int64_t j = box[2]; j <= box[3]; j++)
      for (int64_t p = j * nx + box[0]; p <= j * nx + box[1]; p++)
        if (old[p]) size[cc[p]]++;
    for (int32_t c = 1; c <= nc; c++)
      if (size[c] > size[big]) big = c; /* the first in raster order on ties */
    for (int64_t j = box[2]; j <= box[3]; j++)
      for (int64_t p = j * nx + box[0]; p <= j * nx + box[1]; p++)
        if (old[p] && cc[p] != big && (double)size[cc[p]] < PIECE_FRAC * (double)size[big])
          lab[p] = 0, old[p] = 0;
    for (int64_t j = box[2]; j <= box[3]; j++)
      for (int64_t i = box[0]; i <= box[1]; i++) {
        int64_t p = j * nx + i;
        bool touch = (i > box[0] && old[p - 1]) || (i < box[1] && old[p + 1]) ||
                     (j > box[2] && old[p - nx]) || (j < box[3] && old[p + nx]);
        if (lab[p] == es[e] && !old[p] && !touch) lab[p] = 0;
      }
    free(size);
    size = NULL;
  }
  free(cc);
  return ok;
}

/* Item 11: an erector spinae of fatty muscle (mean FF at least LEAN_GATE)
 * loses the lean pieces on its outline: 4-connected voxels leaner than
 * LEAN_FRAC of its mean FF, at least LEAN_MIN_MM2 in area, with at least
 * LEAN_OUT_SHARE of their outer edges on voxels outside the erector (a
 * lean bundle inside a fatty muscle touches the outline along a short
 * stretch and stays); with them the erector's voxels 8-next to them and
 * fattier than its mean (the fat plane between, in partial volume). They
 * are lean muscle of another kind (the back wall, latissimus, gluteus)
 * joined through a fat plane thinner than a voxel, which a fatty erector
 * does not set apart by its FF: the plane's partial volume reads as fatty
 * muscle. old: nx * ny scratch. */
static bool drop_lean_pieces(const float *ff, float *lab, int64_t nx, int64_t ny, double px_mm2,
                             const int64_t bx[4], uint8_t *old) {
  int64_t box[4];
  if (!grown_box(bx, nx, ny, box)) return true;
  const float es[2] = {PSP_LABEL_ES_LEFT, PSP_LABEL_ES_RIGHT};
  const float gone = -2.0f, plane = -3.0f; /* marks, reset to 0 at the end */
  const int64_t min_vox = (int64_t)ceil(LEAN_MIN_MM2 / px_mm2);
  int32_t *cc = NULL;
  int64_t *st = NULL;
  bool ok = true;
  for (int e = 0; ok && e < 2; e++) {
    int64_t cnt;
    const double sum = label_ff_sum(ff, lab, nx, box, es[e], &cnt);
    if (cnt < PIECE_MIN_VOX || sum / (double)cnt < LEAN_GATE) continue;
    const double mean = sum / (double)cnt, lean = LEAN_FRAC * mean;
    for (int64_t j = box[2]; j <= box[3]; j++)
      for (int64_t p = j * nx + box[0]; p <= j * nx + box[1]; p++)
        old[p] = lab[p] == es[e] && (double)ff[p] < lean;
    if (!cc && !(cc = malloc((size_t)(2 * nx * ny + 1) * sizeof *cc))) {
      ok = false;
      break;
    }
    int32_t nl = psp_cc_label_box(old, nx, box, false, cc, cc + nx * ny);
    if (nl < 1) continue;
    /* per piece c: st[3c] voxels, st[3c + 1] edges to outside the
     * erector, st[3c + 2] edges to the rest of the erector */
    if (!(st = calloc(3 * ((size_t)nl + 1), sizeof *st))) {
      ok = false;
      break;
    }
    for (int64_t j = box[2]; j <= box[3]; j++)
      for (int64_t p = j * nx + box[0]; p <= j * nx + box[1]; p++) {
        if (!old[p]) continue;
        int64_t *s = st + 3 * cc[p];
        s[0]++;
        const int64_t nb[4] = {p - 1, p + 1, p - nx, p + nx};
        for (int q = 0; q < 4; q++) /* lab and ff, not old: old is stale beyond box */
          if (!(lab[nb[q]] == es[e] && (double)ff[nb[q]] < lean)) s[lab[nb[q]] == es[e] ? 2 : 1]++;
      }
    bool any = false;
    for (int64_t j = box[2]; j <= box[3]; j++)
      for (int64_t p = j * nx + box[0]; p <= j * nx + box[1]; p++) {
        if (!old[p]) continue;
        const int64_t *s = st + 3 * cc[p];
        if (s[0] >= min_vox && (double)s[1] >= LEAN_OUT_SHARE * (double)(s[1] + s[2]))
          lab[p] = gone, any = true;
      }
    free(st);
    st = NULL;
    if (!any) continue;
    for (int64_t j = box[2]; j <= box[3]; j++)
      for (int64_t p = j * nx + box[0]; p <= j * nx + box[1]; p++) {
        if (lab[p] != es[e] || !((double)ff[p] > mean)) continue;
        bool next = false;
        for (int64_t dj = -nx; dj <= nx; dj += nx)
          for (int64_t di = -1; di <= 1; di++)
            next |= lab[p + dj + di] == gone;
        if (next) lab[p] = plane;
      }
    for (int64_t j = box[2]; j <= box[3]; j++)
      for (int64_t p = j * nx + box[0]; p <= j * nx + box[1]; p++)
        if (lab[p] == gone || lab[p] == plane) lab[p] = 0.0f;
  }
  free(cc);
  return ok;
}

/* The muscles' outlines closed: per muscle, an unlabelled voxel that a
 * disc of radius r_mm cannot reach from outside the muscle's r_mm
 * dilation (the morphological closing), with a signal and none of its 8
 * neighbours in another muscle, joins it (the bites of fatty streaks and
 * partial-volume voxels at the border, which a fascia's smooth outline
 * bridges). Distances from exact squared EDTs (psp_edt_1d) per muscle over
 * its own box grown by r_mm (beyond the image: outside the dilation, so a bite
 * open towards the image's edge stays open); decided on the labels before
 * (old: nx * ny scratch); a voxel two muscles would take stays unlabelled;
 * no voxel on the image's outermost rows and columns joins. */
static bool close_outlines(const float *ff, float *lab, int64_t nx, int64_t ny, double sx,
                           double sy, const int64_t bx[4], double r_mm, uint8_t *old) {
  if (bx[1] < bx[0] || bx[3] < bx[2] || !(r_mm > 0)) return true;
  enum { NM = PSP_LABEL_COUNT - 1 };
  const int64_t gx = (int64_t)ceil(r_mm / sx) + 1, gy = (int64_t)ceil(r_mm / sy) + 1;
  /* each muscle's box (the labels lie inside bx grown by one voxel) */
  int64_t mb[NM + 1][4];
  for (int c = 1; c <= NM; c++)
    mb[c][0] = bx[1] + 1, mb[c][1] = bx[0] - 1, mb[c][2] = bx[3] + 1, mb[c][3] = bx[2] - 1;
  for (int64_t j = bx[2]; j <= bx[3]; j++)
    for (int64_t i = bx[0]; i <= bx[1]; i++) {
      int c = (int)lab[j * nx + i];
      if (c < 1 || c > NM) continue;
      mb[c][0] = i < mb[c][0] ? i : mb[c][0];
      mb[c][1] = i > mb[c][1] ? i : mb[c][1];
      mb[c][2] = j < mb[c][2] ? j : mb[c][2];
      mb[c][3] = j > mb[c][3] ? j : mb[c][3];
    }
  /* the window of every muscle's box grown by (gx, gy), in image
   * coordinates (it may reach beyond the image); old holds the labels
   * before inside it */
  const int64_t wi0 = bx[0] - gx, wi1 = bx[1] + gx, wj0 = bx[2] - gy, wj1 = bx[3] + gy;
  const int64_t nmax = (wi1 - wi0 + 1) > (wj1 - wj0 + 1) ? wi1 - wi0 + 1 : wj1 - wj0 + 1;
  double *f = malloc((size_t)((wi1 - wi0 + 1) * (wj1 - wj0 + 1) + 3 * nmax + 1) * sizeof *f);
  int64_t *v = malloc((size_t)nmax * sizeof *v);
  if (!f || !v) {
    free(f);
    free(v);
    return false;
  }
  for (int64_t j = wj0 < 0 ? 0 : wj0; j <= wj1 && j < ny; j++)
    for (int64_t i = wi0 < 0 ? 0 : wi0; i <= wi1 && i < nx; i++)
      old[j * nx + i] = (uint8_t)lab[j * nx + i];
  const double r2 = r_mm * r_mm;
  for (int c = 1; c <= NM; c++) {
    if (mb[c][1] < mb[c][0]) continue; /* not on the slice */
    const int64_t i0 = mb[c][0] - gx, i1 = mb[c][1] + gx, j0 = mb[c][2] - gy, j1 = mb[c][3] + gy;
    const int64_t w = i1 - i0 + 1, h = j1 - j0 + 1;
    double *in = f + w * h, *out = in + nmax, *z = out + nmax;
    /* pass 0: distance to the muscle; pass 1: to outside its dilation */
    for (int pass = 0; pass < 2; pass++) {
      for (int64_t j = 0; j < h; j++)
        for (int64_t i = 0; i < w; i++) {
          int64_t x = i0 + i, y = j0 + j;
          bool inside = x >= 0 && y >= 0 && x < nx && y < ny;
          double *q = f + j * w + i;
          bool in_set = pass ? !inside || !(*q <= r2) : inside && old[y * nx + x] == c;
          *q = in_set ? 0.0 : INFINITY;
        }
      for (int64_t j = 0; j < h; j++) {
        memcpy(in, f + j * w, (size_t)w * sizeof *in);
        psp_edt_1d(in, w, sx, f + j * w, v, z);
      }
      for (int64_t i = 0; i < w; i++) {
        for (int64_t j = 0; j < h; j++)
          in[j] = f[j * w + i];
        psp_edt_1d(in, h, sy, out, v, z);
        for (int64_t j = 0; j < h; j++)
          f[j * w + i] = out[j];
      }
    }
    /* inside the window (old is read there) and off the image's edge */
    for (int64_t y = j0 < 0 ? 1 : j0 + 1; y < j1 && y < ny - 1; y++)
      for (int64_t x = i0 < 0 ? 1 : i0 + 1; x < i1 && x < nx - 1; x++) {
        int64_t p = y * nx + x;
        if (old[p] || !(f[(y - j0) * w + x - i0] > r2) || isnan(ff[p])) continue;
        bool near = false;
        for (int64_t dj = -nx; dj <= nx; dj += nx)
          for (int64_t di = -1; di <= 1; di++) {
            uint8_t o = old[p + dj + di];
            near |= o && o != c;
          }
        if (near) continue;
        lab[p] = lab[p] == 0.0f ? (float)c : -1.0f; /* -1: two muscles */
      }
  }
  for (int64_t j = wj0 < 0 ? 0 : wj0; j <= wj1 && j < ny; j++)
    for (int64_t i = wi0 < 0 ? 0 : wi0; i <= wi1 && i < nx; i++)
      if (lab[j * nx + i] < 0.0f) lab[j * nx + i] = 0.0f;
  free(f);
  free(v);
  return true;
}

/* Item 12: an unlabelled voxel on a one-voxel step from a multifidus to
 * fat joins it: 4-next to the muscle, with the next voxel out on that line
 * fat (FF at least its mean + STEP_FAT_SHARE (fat - mean)) and its own FF
 * below the muscle's midpoint to fat (mean + STEP_MID_SHARE (fat - mean));
 * no other muscle among its 8 neighbours, nor two muscles taking it.
 * Decided on the labels before (old: nx * ny scratch). At a sharp edge,
 * a voxel over half muscle reads below that midpoint; on a ramp of several
 * voxels (a real scan's fascia at 1 mm) the next voxel out is not yet fat,
 * and nothing joins. */
static void join_step_ring(const float *ff, float *lab, int64_t nx, int64_t ny, const int64_t bx[4],
                           double fat, uint8_t *old) {
  /* the voxels decided: bx grown by one, off the image's edge; old holds
   * the labels one voxel further out */
  int64_t box[4];
  if (!grown_box(bx, nx, ny, box)) return;
  snapshot_labels(lab, nx, box, old);
  double sum[3] = {0, 0, 0};
  int64_t cnt[3] = {0, 0, 0};
  for (int c = PSP_LABEL_MF_LEFT; c <= PSP_LABEL_MF_RIGHT; c++)
    sum[c] = label_ff_sum(ff, lab, nx, box, (float)c, &cnt[c]);
  const int64_t d4[4] = {1, -1, nx, -nx};
  for (int64_t j = box[2]; j <= box[3]; j++)
    for (int64_t p = j * nx + box[0]; p <= j * nx + box[1]; p++) {
      if (old[p] || isnan(ff[p])) continue;
      int take = 0;
      for (int q = 0; q < 4; q++) {
        int c = old[p - d4[q]];
        if ((c != PSP_LABEL_MF_LEFT && c != PSP_LABEL_MF_RIGHT) || cnt[c] < 1) continue;
        double m = sum[c] / (double)cnt[c];
        if (!((double)ff[p] < m + STEP_MID_SHARE * (fat - m)) ||
            !((double)ff[p + d4[q]] >= m + STEP_FAT_SHARE * (fat - m)))
          continue;
        take = take && take != c ? -1 : c;
      }
      if (take <= 0) continue;
      bool other = false;
      for (int64_t dj = -nx; dj <= nx; dj += nx)
        for (int64_t di = -1; di <= 1; di++)
          other |= old[p + dj + di] && old[p + dj + di] != take;
      if (!other) lab[p] = (float)take;
    }
}

/* Item 13: at coarse pixels (TRIM_MIN_MM or more) an erector
 * spinae voxel 4-next to an unlabelled voxel and reading at least its
 * mean FF + TRIM_SHARE (fat - mean) leaves it, unless a multifidus lies
 * within TRIM_MF_VOX voxels (the plane between the two muscles is items 2,
 * 4 and 8's). Such a voxel is over half fat: the epimuscular fat in
 * partial volume on the outline, which the labels' majority smoothing and
 * the closing take in at 3 mm pixels. Needs PIECE_MIN_VOX erector voxels;
 * decided on the labels before (old: nx * ny scratch), inside bx grown by
 * one voxel. */
static void trim_es_rim(const float *ff, float *lab, int64_t nx, int64_t ny, const int64_t bx[4],
                        double fat, uint8_t *old) {
  int64_t box[4];
  if (!grown_box(bx, nx, ny, box)) return;
  snapshot_labels(lab, nx, box, old);
  const float es[2] = {PSP_LABEL_ES_LEFT, PSP_LABEL_ES_RIGHT};
  const int64_t d4[4] = {1, -1, nx, -nx};
  for (int e = 0; e < 2; e++) {
    int64_t cnt;
    const double sum = label_ff_sum(ff, lab, nx, box, es[e], &cnt);
    if (cnt < PIECE_MIN_VOX) continue;
    const double m = sum / (double)cnt, cut = m + TRIM_SHARE * (fat - m);
    if (!(fat > m)) continue;
    for (int64_t j = box[2]; j <= box[3]; j++)
      for (int64_t i = box[0]; i <= box[1]; i++) {
        const int64_t p = j * nx + i;
        if (old[p] != (uint8_t)es[e] || !((double)ff[p] >= cut)) continue;
        bool rim = false;
        for (int q = 0; q < 4; q++)
          rim |= old[p + d4[q]] == 0;
        if (!rim) continue;
        bool near_mf = false;
        const int64_t i0 = i - TRIM_MF_VOX > 0 ? i - TRIM_MF_VOX : 0,
                      i1 = i + TRIM_MF_VOX < nx - 1 ? i + TRIM_MF_VOX : nx - 1,
                      j0 = j - TRIM_MF_VOX > 0 ? j - TRIM_MF_VOX : 0,
                      j1 = j + TRIM_MF_VOX < ny - 1 ? j + TRIM_MF_VOX : ny - 1;
        for (int64_t jj = j0; !near_mf && jj <= j1; jj++)
          for (int64_t ii = i0; ii <= i1; ii++) {
            const float l = lab[jj * nx + ii];
            if (l == PSP_LABEL_MF_LEFT || l == PSP_LABEL_MF_RIGHT) {
              near_mf = true;
              break;
            }
          }
        if (!near_mf) lab[p] = 0.0f;
      }
  }
}

/* Items 13 (coarse pixels), 3 (smooth_labels), 4, 5, 10, 11, 8 and 12 of the DESIGN comment, on the
 * final labels of one slice. */
bool psp_seg_refine_outlines(const float *ff, float *lab, int64_t nx, int64_t ny, double sx,
                             double sy, const int64_t bx[4], double muscle, double fat,
                             uint8_t *old) {
  if (sx >= TRIM_MIN_MM && sy >= TRIM_MIN_MM) trim_es_rim(ff, lab, nx, ny, bx, fat, old);
  smooth_labels(ff, lab, nx, ny, bx, old);
  unlabel_es_ridge(ff, lab, nx, ny, bx, RIDGE_SHARE * (fat - muscle), old);
  return smooth_outlines(ff, lab, nx, ny, sx, sy, bx, OUTLINE_MM, OUTLINE_KEEP) &&
         close_outlines(ff, lab, nx, ny, sx, sy, bx, CLOSE_MM, old) &&
         drop_lean_pieces(ff, lab, nx, ny, sx * sy, bx, old) &&
         drop_es_pieces(ff, lab, nx, ny, bx, fat, old) &&
         (join_step_ring(ff, lab, nx, ny, bx, fat, old), true);
}

/* Step 9 of the DESIGN comment on one slice (see limits.h). A muscle that
 * would leave the slice altogether keeps its voxels: that is for the
 * plausibility checks to decide, not for its neighbours. */
int64_t psp_seg_zfill(const float *ff, const uint8_t *below, const uint8_t *own,
                      const uint8_t *above, float *lab, int64_t nx, const int64_t box[4],
                      const double t[2]) {
  int64_t changed = 0, had[PSP_LABEL_COUNT] = {0}, left[PSP_LABEL_COUNT] = {0};
  for (int64_t j = box[2]; j <= box[3]; j++)
    for (int64_t p = j * nx + box[0]; p <= j * nx + box[1]; p++) {
      uint8_t l = own[p], m = below[p];
      had[l]++;
      if (above[p] != m || l == m) continue;
      /* a muscle voxel inside its muscle stays */
      if (l && own[p - 1] == l && own[p + 1] == l && own[p - nx] == l && own[p + nx] == l) continue;
      if (m) {
        if (own[p - 1] != m && own[p + 1] != m && own[p - nx] != m && own[p + nx] != m) continue;
        int side = m == PSP_LABEL_MF_LEFT || m == PSP_LABEL_ES_LEFT ? 0 : 1;
        if (!l && !((double)ff[p] < t[side])) continue; /* NaN: no signal, stays */
      }
      lab[p] = (float)m;
      changed++;
    }
  if (!changed) return 0;
  for (int64_t j = box[2]; j <= box[3]; j++)
    for (int64_t p = j * nx + box[0]; p <= j * nx + box[1]; p++)
      left[(int)lab[p]]++;
  for (int l = 1; l < PSP_LABEL_COUNT; l++)
    if (had[l] && !left[l])
      for (int64_t j = box[2]; j <= box[3]; j++)
        for (int64_t p = j * nx + box[0]; p <= j * nx + box[1]; p++)
          if (own[p] == l) lab[p] = (float)l, changed--;
  return changed;
}

bool psp_seg_zfill_stack(float *labels, const psp_slice_landmarks *lm, const float *ff, int64_t nx,
                         int64_t ny, int64_t nz, const double *t, psp_error **err) {
  const int64_t plane = nx * ny;
  if (nz < 3 || nx < 3 || ny < 3) return true;
  uint8_t *zl = psp_malloc((size_t)(nz * plane), err);
  int64_t *box = zl ? psp_malloc((size_t)(5 * nz) * sizeof *box, err) : NULL;
  if (!box) {
    free(zl);
    return false;
  }
  int64_t *changed = box + 4 * nz;
  for (int pass = 0; pass < ZFILL_PASSES_MAX; pass++) {
    for (int64_t q = 0; q < nz * plane; q++)
      zl[q] = (uint8_t)labels[q];
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t k = 0; k < nz; k++) {
      int64_t *b = box + 4 * k;
      if (!psp_mask_box(zl + k * plane, nx, ny, b)) b[0] = b[2] = nx + ny, b[1] = b[3] = -1;
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t k = 1; k < nz - 1; k++) {
      changed[k] = 0;
      /* a slice whose left/right check waits for this (lr_pending) takes
       * its neighbours' majority but gives none */
      if (lm[k - 1].status != PSP_SLICE_OK || lm[k].status != PSP_SLICE_OK ||
          lm[k + 1].status != PSP_SLICE_OK || lm[k - 1].lr_pending || lm[k + 1].lr_pending)
        continue;
      /* where the slice's labels are, or both neighbours' */
      const int64_t *b0 = box + 4 * (k - 1), *b = box + 4 * k, *b1 = box + 4 * (k + 1);
      int64_t bx[4];
      for (int e = 0; e < 4; e++) {
        int64_t both = e % 2 ? (b0[e] < b1[e] ? b0[e] : b1[e]) : (b0[e] > b1[e] ? b0[e] : b1[e]);
        bx[e] = e % 2 ? (b[e] > both ? b[e] : both) : (b[e] < both ? b[e] : both);
      }
      /* the 4-neighbours stay inside the slice */
      bx[0] = bx[0] < 1 ? 1 : bx[0];
      bx[2] = bx[2] < 1 ? 1 : bx[2];
      bx[1] = bx[1] > nx - 2 ? nx - 2 : bx[1];
      bx[3] = bx[3] > ny - 2 ? ny - 2 : bx[3];
      if (bx[0] <= bx[1] && bx[2] <= bx[3])
        changed[k] = psp_seg_zfill(ff + k * plane, zl + (k - 1) * plane, zl + k * plane,
                                   zl + (k + 1) * plane, labels + k * plane, nx, bx, t + 2 * k);
    }
    int64_t total = 0;
    for (int64_t k = 1; k < nz - 1; k++)
      total += changed[k];
    if (total == 0) break;
  }
  free(zl);
  free(box);
  return true;
}

/* Per component c = 1..nc of lab inside the rectangle bx (side sgn):
 * st[3 c] its voxels, st[3 c + 1] those on the multifidus core box (6-24 mm
 * from the midline column mid, cr + 6 .. cr + 36 mm behind the canal's row
 * cj), st[3 c + 2] the sum of their rounded distances from the midline
 * (mm); *core the component with the most core-box voxels (0: none).
 * Returns st (the caller frees it), NULL on OOM. */
int64_t *psp_seg_core_stats(const int32_t *lab, int32_t nc, int64_t nx, const int64_t bx[4],
                            int sgn, double mid, double cj, double cr, double sx, double sy,
                            int32_t *core) {
  int64_t *st = calloc((size_t)(nc + 1) * 3, sizeof *st);
  if (!st) return NULL;
  for (int64_t j = bx[2]; j <= bx[3]; j++)
    for (int64_t i = bx[0]; i <= bx[1]; i++) {
      int32_t c = lab[j * nx + i];
      if (!c) continue;
      double d = sgn * ((double)i - mid) * sx, y = ((double)j - cj) * sy;
      st[3 * c]++;
      if (d >= 6.0 && d <= 24.0 && y >= cr + 6.0 && y <= cr + 36.0) st[3 * c + 1]++;
      st[3 * c + 2] += psp_seg_lround(d);
    }
  *core = 0;
  for (int32_t c = 1; c <= nc; c++)
    if (st[3 * c + 1] > 0 && (*core == 0 || st[3 * c + 1] > st[3 * *core + 1])) *core = c;
  return st;
}

/* A multifidus much fattier than the erector spinae beside it (a one-sided
 * fatty atrophy: its level muscle, the other side's other): the two meet
 * at a step of FF, not on a fat plane. The compartment voxels
 * above the level half way between the two form the multifidus seed (the
 * component on the multifidus core box), those below it whose mean
 * distance from the midline lies lat_mm beyond it the erector
 * spinae's; each at least min_share of the side. es_fatty: the erector
 * spinae is the fatty one (muscle its level): the voxels below that level
 * on the core box seed the multifidus (at least FATTY_ES_MF_SHARE of the
 * side), the largest component above it, where it lies further out than
 * the multifidus seed's mean distance, the erector spinae (at least
 * min_share). Returns true when seeds were set (for segment.c's
 * split_by_seeds). */
bool psp_seg_fatty_seeds(const float *ff, const uint8_t *comp, int64_t nx, double sx, double sy,
                         const int64_t bx[4], const psp_slice_landmarks *lm, double muscle,
                         double other, bool es_fatty, double lat_mm, double min_share, int side,
                         uint8_t *seed, psp_slice_work *w) {
  int sgn = side == 0 ? 1 : -1;
  uint8_t val = (uint8_t)(side + 1);
  double mid = lm->midline_i, cj = lm->canal.j;
  double cr = fmin(lm->canal_radius_mm, 10.0) + 2.0;
  double thr = 0.5 * (muscle + other);
  uint8_t *mask = w->m0;
  int64_t area = 0;
  for (int64_t j = bx[2]; j <= bx[3]; j++)
    for (int64_t i = bx[0]; i <= bx[1]; i++) {
      int64_t p = j * nx + i;
      mask[p] = comp[p] == val && !isnan(ff[p]) && (es_fatty ? ff[p] <= thr : ff[p] > thr);
      area += comp[p] == val;
    }
  if (area == 0) return false;
  int32_t nc = psp_cc_label_box(mask, nx, bx, false, w->lab, w->aux);
  if (nc < 1) return false;
  int32_t core;
  int64_t *st = psp_seg_core_stats(w->lab, nc, nx, bx, sgn, mid, cj, cr, sx, sy, &core);
  if (!st) return false;
  bool found = false;
  if (es_fatty && core > 0 && (double)st[3 * core] >= FATTY_ES_MF_SHARE * (double)area) {
    /* a fatty erector spinae beside a lean multifidus: the lean core
     * component is the multifidus, the largest fatty component lateral of
     * it the erector spinae (its fatty streaks are small components of
     * their own, left to the watershed) */
    double dcore = (double)st[3 * core + 2] / (double)st[3 * core];
    uint8_t *fat = w->m1;
    for (int64_t j = bx[2]; j <= bx[3]; j++)
      for (int64_t i = bx[0]; i <= bx[1]; i++) {
        int64_t p = j * nx + i;
        fat[p] = comp[p] == val && !mask[p];
        mask[p] = w->lab[p] == core;
      }
    free(st);
    nc = psp_cc_label_box(fat, nx, bx, false, w->lab, w->aux);
    st = nc >= 1 ? psp_seg_core_stats(w->lab, nc, nx, bx, sgn, mid, cj, cr, sx, sy, &core) : NULL;
    if (!st) return false;
    int32_t es = 0;
    for (int32_t c = 1; c <= nc; c++)
      if ((double)st[3 * c + 2] / (double)st[3 * c] > dcore && (es == 0 || st[3 * c] > st[3 * es]))
        es = c;
    if (es > 0 && (double)st[3 * es] >= min_share * (double)area) {
      found = true;
      for (int64_t j = bx[2]; j <= bx[3]; j++)
        for (int64_t i = bx[0]; i <= bx[1]; i++) {
          int64_t p = j * nx + i;
          if (mask[p])
            seed[p] = 1;
          else if (w->lab[p] == es && sgn * ((double)i - mid) * sx >= dcore)
            seed[p] = 2;
        }
    }
  } else if (!es_fatty && core > 0 && (double)st[3 * core] >= min_share * (double)area) {
    double dcore = (double)st[3 * core + 2] / (double)st[3 * core];
    int64_t n_es = 0;
    for (int64_t j = bx[2]; j <= bx[3]; j++)
      for (int64_t i = bx[0]; i <= bx[1]; i++) {
        int64_t p = j * nx + i;
        if (comp[p] != val || mask[p]) continue;
        if (sgn * ((double)i - mid) * sx >= dcore + lat_mm) n_es++;
      }
    if ((double)n_es >= min_share * (double)area) {
      found = true;
      for (int64_t j = bx[2]; j <= bx[3]; j++)
        for (int64_t i = bx[0]; i <= bx[1]; i++) {
          int64_t p = j * nx + i;
          if (comp[p] != val) continue;
          if (w->lab[p] == core)
            seed[p] = 1;
          else if (!mask[p] && sgn * ((double)i - mid) * sx >= dcore + lat_mm)
            seed[p] = 2;
        }
    }
  }
  free(st);
  return found;
}
