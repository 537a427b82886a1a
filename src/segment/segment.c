/*
 * DESIGN: automatic segmentation of the left/right multifidus (MF) and
 * erector spinae (ES) on every axial slice, from the fat-fraction map only
 * (water+fat, in-phase/opposed-phase and precomputed FF inputs alike). No
 * atlas is copied: boundaries come from the image (the muscle/fat edge of
 * the FF map, fat planes, bone) placed with anatomical rules in a
 * spine-centred frame (src/anatomy/landmarks.c: canal centre, midline,
 * midline bone, the slice's muscle and fat FF levels) on the image's rows
 * and columns; a spine rotated in-plane is segmented in a copy rotated onto
 * its axis (psp_segment_with, src/segment/align.c, calls psp_seg_run twice:
 * the first run stops once the landmarks give the axis). What each rule
 * did to which data, and what was tried and not kept: "segment.c step N"
 * in src/segment/MEASUREMENTS.md.
 *
 * Per slice and side (d = distance from the midline, y = distance behind
 * the canal centre, mm):
 *  1. Thresholds from the slice's own levels: muscle-like = FF below
 *     T = (muscle + fat) / 2 (fatty, degenerated muscle still counts); the
 *     strict mask (raw and 3 x 3 mean FF below muscle + STRICT_SHARE = 0.35
 *     (fat - muscle), also from the local level within 10 mm, refine.c
 *     item 1) is cut by thin fat planes, not by noise. Two sides' multifidus
 *     levels over PSP_LM_SIDE_ASYM_FF = 0.2 apart, the same side fatter on a
 *     neighbouring slice (an atrophy spans levels, a streak does not): each
 *     side its own level, the fatter one a local loose threshold and split
 *     seeds at the step of FF (refine.c items 6, 7: no fat plane between a
 *     fatty and a lean muscle); likewise a one-sided fatty ES. See
 *     "segment.c step 1".
 *  2. Compartment: strict voxels with d from the midline bone's edge (per
 *     row) to D_MAX_MM; within 25 mm of the midline behind the lamina (per
 *     column: the last voxel within 12 mm behind the canal with water + fat
 *     below 0.7 x the muscle's: bone is dark in both, while its FF can look
 *     like muscle), at least LAM_MIN_MM behind the canal within LAM_MIN_D_MM
 *     (the posterior arch); further out behind the canal + Y_ANT_LAT (psoas
 *     and quadratus lumborum lie in front of the transverse processes), to
 *     Y_ANT_SACRAL over the lowest SACRAL_MM (the ES arises from sacrum and
 *     iliac crest), behind the ES front (below); SKIN_MM inside the skin,
 *     outside the canal. Opened by a square about OPEN_MM wide (at pixels
 *     >= 2 mm a one-voxel fat ridge, RIDGE_CUT, is cut instead). Kept: the
 *     component on the MF core box and pieces chained to it across CHAIN_MM
 *     (reaching CHAIN_FRONT_MM forward, or centred within CHAIN_MF_D_MM);
 *     grown into the loose mask, holes filled (intramuscular fat belongs to
 *     the muscle, fat open to the outside and unchained strict pieces do
 *     not). See "segment.c step 2" and its sections.
 *  3. MF/ES split. (a) A visible fat plane (the core component ends within
 *     MF_MAX_D_MM, or a raw-FF threshold splits the compartment into medial
 *     and lateral pieces): the pieces seed a watershed on the 3 x 3 mean FF,
 *     plane voxels over PLANE_FAT_SHARE stay unlabelled (refine.c item 2). (b)
 *     Else a minimum-cost path in polar form about O (midline, 3 mm in front of
 *     the compartment): per ray (91) where MF ends, cost = (1 - 2 x fat ridge
 *     contrast over RIDGE_MM) + PRIOR_WEIGHT ((R - R_prior) / sigma)^2 +
 *     STEP_COST per step; prior first the MuscleMap template's MF share per
 *     ray at the slice's height above the priors' zero (22 mm above
 *     L5/S1: MF_RHO_Z, prior.c, over half at L5/S1, an eighth at L1/L2;
 *     R_SIGMA1), then the median boundary of the slices within about
 *     NEIGH_MM = 8 mm (k-2..k+2 up to 5 mm, k-1..k+1 from 6 mm; R_SIGMA2:
 *     smooth along the spine), once both sides'
 *     when left and right differ by over MAX_LR_RATIO in area; plane voxels
 *     (fattier than T) unlabelled. See "segment.c step 3".
 *  3b. At pixels of 2.5 mm or more the erector's fatty rim trimmed (refine.c item
 *     13), voxel-scale smoothing (refine.c item 3; "segment.c step 3b"). 3c. An
 *     erector voxel on a ridge towards the multifidus leaves it, outlines
 *     smoothed at 6 mm, closed at 5 mm, a fatty erector's lean pieces on
 *     its outline and its small pieces beyond a ridge dropped, a
 *     multifidus's ring on a one-voxel step to fat joined
 *     (psp_seg_refine_outlines, refine.c items 13, 4, 5, 10, 11, 8, 12);
 *     3d. outlines follow the neighbouring slices' majority (item 9); the
 *     left/right area check of a slice that failed it (step 4) is made
 *     again after this (lr_pending: the slice takes its neighbours'
 *     majority but gives none).
 *  4. Flags (slice left empty, reason recorded; muscles within PSP_SEG_EDGE_MM of
 *     the image's edge: cut_off, align.c): no body / no spine; below sacrum;
 *     implausible (muscle not distinct from fat; a canal over 130 mm in
 *     front of the back's skin (plus its fat beyond 40 mm) or 40 mm beside
 *     the body's centre: aorta, kidney or bowel; a side's compartment below
 *     400 mm^2; a canal over 25 mm from its neighbours' median; a muscle
 *     missing or above 6000 mm^2, left/right over 2 x in area, water and
 *     fat exchanged: checks.c), on landmarks made consistent (spine.c).
 *
 * The ES front lateral of the transverse processes (limits.c): from the
 * compartment's most anterior point 30-55 mm out it rises backwards with
 * the MuscleMap template's curve (models/es_front_rise.tsv), the
 * thoracolumbar fascia with quadratus lumborum in front that the FF map
 * does not separate; a fat plane within 6 mm of it where one shows, else
 * the line less 4 mm. See "segment.c step 2: the erector spinae's front".
 *
 * What was learned from which data: the learned tables (MF share, ES front)
 * from the MuscleMap template only; dixon-tum01's manual labels checked
 * them (not used), DIAGNOSED error patterns and chose between candidate
 * rules and a few constants (the ES front's 4 mm, NO_ANCHOR_DZ_MM on its
 * crops, PRIOR_ZERO_MM), each rule also measured on the phantoms; the
 * constants are anatomical sizes in mm. The height priors' zero (the
 * template's anchor) lies PRIOR_ZERO_MM above the L5/S1 disc when the
 * pipeline sees the sacrum below that disc or levels are named by hand;
 * at the lowest spine slice when it sees an iliac crest (or a bottom
 * vertebra much wider than those above: src/pipeline.c); else
 * NO_ANCHOR_DZ_MM below it (a warning). See "segment.c: what was learned
 * from which data".
 *
 * Parallel over slices (OpenMP), each slice writing only its own voxels;
 * the serial steps (canal anchor, statuses along k, the median prior) run
 * between the parallel passes: the output does not depend on the thread
 * count. Cost: compartments on a crop around the spine, later passes inside
 * each slice's compartment box (cbox), ray costs once per slice and side,
 * scratch per thread; every result is that of the plain loops.
 */
#include "segment/align.h"
#include "segment/limits.h"
#include "segment/spine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define R_SIGMA1 8.0 /* mm, first pass */
#define R_SIGMA2 5.0 /* mm, second pass around the neighbours' median */
#define NEIGH_MM 8.0 /* the second pass's neighbours: the slices within about this distance */
#define NEIGH_MAX 2  /* ... at most this many on either side (thinner slices: as before) */
#define PRIOR_WEIGHT 0.25
#define D_MIN_MM 2.0
#define D_MAX_MM 80.0
#define MIN_SIDE_MM2 400.0
#define CANAL_JUMP_MM 25.0
#define CANAL_MAX_OFF_MM 40.0 /* canal to the centre of the body's left-right extent */
#define Y_ANT_LAT 5.0
#define LAM_MIN_MM 3.0    /* the posterior arch's least thickness behind the canal ... */
#define LAM_MIN_D_MM 12.0 /* ... within this distance of the midline */
#define SACRAL_MM 40.0    /* height above the lowest spine slice taken as lumbosacral */
/* without the sacrum or an iliac crest in view, the lowest spine slice is
 * taken as this far above L5/S1 (see the DESIGN comment; measured:
 * src/segment/MEASUREMENTS.md, "segment.c: what was learned") */
#define NO_ANCHOR_DZ_MM 24.0
/* the template's anchor (the multifidus falls below half of MF + ES) lies
 * this far above the L5/S1 disc as named levels place it: 22.5 mm on
 * dixon-tum01 (see src/segment/MEASUREMENTS.md, "segment.c: what was
 * learned") */
#define PRIOR_ZERO_MM 22.0
#define Y_ANT_SACRAL -10.0 /* lateral front limit there, relative to the canal's back edge */
#define SKIN_MM 6.0
#define OPEN_MM 3.0 /* the strict mask's opening: a square of about this width */
#define END_COST 1.0
#define RIDGE_MM 4.0
#define MF_MAX_D_MM 45.0
#define CHAIN_MM 12.0
#define CHAIN_FRONT_MM 15.0 /* a chained piece reaches this close to the front limit */
#define CHAIN_MF_D_MM 30.0  /* ... or is centred this close to the midline */
#define NEAR_SHARE 0.5
#define MIN_PIECE_MM2 40.0
#define STRICT_SHARE 0.35
#define RIDGE_CUT 0.25 /* of fat - muscle: a one-voxel plane's contrast over both neighbours */
#define STEP_COST 0.1
#define PLANE_LEVELS 8
#define PLANE_LEVEL_STEP 0.05 /* of fat - muscle, per threshold step */
#define PLANE_LAT_MM 8.0
#define PLANE_MIN_SHARE 0.12 /* of the compartment, each muscle's seed */
#define PLANE_KEPT_SHARE 0.6 /* of the compartment, all seeds together */
#define PLANE_FAT_SHARE 0.7  /* of fat - muscle: a boundary voxel this fat is the plane */
#define SIDE_MIN_SPAN 0.2    /* a side's own level: where fat - that level is at least this */

typedef struct slice_levels {
  double muscle, fat, t_loose, t_strict;
  double y_ant_lat; /* mm: how far the lateral front limit lies behind the canal's back edge */
  bool split_ok;
  double other;  /* the other side's muscle level, NAN unless this side's is its own and fatter */
  bool es_fatty; /* with other: this side's fatter muscle is its erector spinae */
} slice_levels;

/* The fatter side (0 left, 1 right) where slice k's multifidus levels
 * differ (psp_landmarks_sides_differ; es: the erector spinae levels,
 * psp_landmarks_es_sides_differ) with the same side fatter on a
 * neighbouring slice too (an atrophy spans levels; one slice alone is a
 * streak or bone in one box: dixon-tum01 scaled 1.15 x, slice 3), else -1. */
static int fatter_side(const psp_slice_landmarks *lm, int64_t k, int64_t nz, bool es) {
  bool (*differ)(const psp_slice_landmarks *) =
      es ? psp_landmarks_es_sides_differ : psp_landmarks_sides_differ;
  if (!differ(&lm[k])) return -1;
  const double *v = es ? lm[k].es_side_ff : lm[k].muscle_side_ff;
  int f = v[1] > v[0];
  for (int64_t q = k - 1; q <= k + 1; q += 2) {
    if (q < 0 || q >= nz || !differ(&lm[q])) continue;
    const double *u = es ? lm[q].es_side_ff : lm[q].muscle_side_ff;
    if ((u[1] > u[0]) == f) return f;
  }
  return -1;
}

/* The levels of each side (L[1] left, L[2] right) from the slice's (L[0]):
 * the same, unless the muscle beside the spinous process reads more than
 * PSP_LM_SIDE_ASYM_FF apart on the two sides, the same side fatter on a
 * neighbouring slice (fatter_side: a one-sided fatty atrophy of the
 * multifidus): then each side's own muscle level and thresholds; else if
 * the erector spinae's levels do (fatter_side, es), the fatter side takes
 * its erector's level and thresholds (es_fatty). */
static void side_levels(const psp_slice_landmarks *lm, int64_t k, int64_t nz, slice_levels *L) {
  L[0].other = NAN;
  L[1] = L[0];
  L[2] = L[0];
  const double *m = lm[k].muscle_side_ff;
  L[0].es_fatty = false;
  if (fatter_side(lm, k, nz, false) < 0) {
    int f = fatter_side(lm, k, nz, true);
    const double *e = lm[k].es_side_ff;
    slice_levels *S = &L[1 + (f > 0)];
    if (f < 0 || !(S->fat - e[f] >= SIDE_MIN_SPAN)) return;
    S->muscle = e[f];
    S->t_loose = 0.5 * (S->muscle + S->fat);
    S->t_strict = S->muscle + STRICT_SHARE * (S->fat - S->muscle);
    S->other = e[1 - f];
    S->es_fatty = true;
    return;
  }
  for (int side = 0; side < 2; side++) {
    slice_levels *S = &L[1 + side];
    if (!(S->fat - m[side] >= SIDE_MIN_SPAN)) continue;
    S->muscle = m[side];
    S->t_loose = 0.5 * (S->muscle + S->fat);
    S->t_strict = S->muscle + STRICT_SHARE * (S->fat - S->muscle);
    if (m[side] > m[1 - side]) S->other = m[1 - side];
  }
}

/* Builds the compartment of one side (value side + 1 in comp). Returns its
 * voxel count. sgn = +1 for the left side (i increases towards the left). */
static int64_t build_compartment(const float *ff, const float *sm, const float *sig,
                                 const uint8_t *inner, int64_t nx, int64_t ny, double sx, double sy,
                                 const psp_slice_landmarks *lm, const slice_levels *lv, int side,
                                 uint8_t *comp, uint8_t *seed, psp_slice_work *w) {
  int64_t n = nx * ny;
  int sgn = side == 0 ? 1 : -1;
  double mid = lm->midline_i, cj = lm->canal.j, ci = lm->canal.i;
  double cr = fmin(lm->canal_radius_mm, 10.0) + 2.0;
  double rc = fmin(lm->canal_radius_mm, 10.0);
  uint8_t *roi = w->m0, *strict = w->m1, *sel = w->m2;
  double *gap = malloc((size_t)(2 * ny + 5 * nx) * sizeof *gap);
  if (!gap) return 0;
  double *yf = gap + 2 * ny, *dcol = yf + 2 * nx, *dxcol = dcol + nx, *yacol = dxcol + nx;
  if (sig) {
    psp_seg_medial_limits(ff, nx, ny, sx, sy, mid, cj, sgn, gap, gap + ny);
    psp_seg_lamina_limits(sig, nx, ny, sx, sy, mid, cj, rc, sgn, yf, yf + nx);
    /* never wider than the slice's midline bone (landmarks: mean profile
     * over the rows behind the lamina): noise (IP/OP input) can only widen
     * a row's limit */
    for (int64_t j = 0; j < ny; j++)
      gap[j] = fmin(gap[j], fmax(lm->gap_mm[side], GAP_MIN_MM));
  } else {
    /* a precomputed FF map: no magnitudes to see the lamina in, and the
     * row-wise medial limit alone enlarges the multifidus (measured on
     * dixon-tum01 given as an FF map: right MF area +9 -> +21 %): the
     * slice's midline bone width and the canal's back edge only */
    for (int64_t j = 0; j < ny; j++)
      gap[j] = lm->gap_mm[side];
    for (int64_t i = 0; i < nx; i++)
      yf[i] = -INFINITY;
  }
  /* per column: d, the offset from the canal and the front limit */
  for (int64_t i = 0; i < nx; i++) {
    double d = sgn * ((double)i - mid) * sx;
    /* behind the lamina medially; lateral to the facets the erector
     * spinae reaches forward onto the transverse processes */
    double yl = lv->y_ant_lat;
    double y_ant = rc + (d <= LAM_MIN_D_MM ? LAM_MIN_MM
                         : d <= 15.0       ? 0.0
                         : d >= 35.0       ? yl
                                           : yl * (d - 15.0) / 20.0);
    dcol[i] = d;
    dxcol[i] = ((double)i - ci) * sx;
    yacol[i] = fmax(y_ant, yf[i]); /* behind the lamina */
  }
  for (int64_t j = 0; j < ny; j++) {
    double y = ((double)j - cj) * sy, g = gap[j];
    for (int64_t i = 0; i < nx; i++) {
      int64_t p = j * nx + i;
      double d = dcol[i], dx = dxcol[i];
      roi[p] = inner[p] && !isnan(ff[p]) && d >= g && d <= D_MAX_MM && y >= yacol[i] &&
               dx * dx + y * y > cr * cr;
      strict[p] = roi[p] && ff[p] < lv->t_strict && sm[p] < lv->t_strict;
    }
  }
  if (!psp_seg_local_strict(ff, sm, nx, ny, sx, sy, lv->muscle, lv->fat, STRICT_SHARE, strict)) {
    free(gap);
    return 0; /* out of memory, like the allocations here: no compartment */
  }
  /* opening: a square about OPEN_MM wide (at least 3 x 3); none at coarse
   * pixels (>= 2 mm), where one voxel already removes structures 6-10 mm
   * wide */
  int ro = sx < PSP_SEG_COARSE_MM ? (int)((psp_seg_vox(OPEN_MM, sx) - 1) / 2) : 0;
  if (sx < PSP_SEG_COARSE_MM && ro < 1) ro = 1;
  psp_mask_erode(strict, nx, ny, ro, w);
  psp_mask_dilate(strict, nx, ny, ro, w);
  if (ro == 0) {
    /* coarse pixels: a fat plane one voxel wide reads as partial volume
     * below the strict threshold; cut the strict mask where a voxel is
     * clearly fattier than both its neighbours along a row, a column or a
     * diagonal (a plane between the multifidus and the erector spinae, or
     * between the erector spinae and the flank muscles, whose plane runs
     * obliquely at the posterolateral corner; rows only: phantom01 ES
     * 0.927/0.946, phantom03 0.901/0.911; all four: 0.933/0.952,
     * 0.913/0.916; phantom02 and 1 mm scans unchanged). Whatever the
     * plane voxel's own FF: between two lean muscles (the erector spinae
     * and the flank, both leaner than a fatty multifidus that sets the
     * slice's muscle level) a plane in partial volume reads below that
     * level (a floor at muscle + 0.2 (fat - muscle) missed them: phantom02
     * MF 0.915/0.924 -> 0.945/0.925, ES 0.839/0.879 -> 0.903/0.901,
     * phantom03 ES +0.002; phantom01 unchanged) */
    double c = RIDGE_CUT * (lv->fat - lv->muscle);
    const int64_t dirs[4] = {1, nx, nx + 1, nx - 1};
    for (int64_t j = 1; j + 1 < ny; j++)
      for (int64_t i = 1; i + 1 < nx; i++) {
        int64_t p = j * nx + i;
        if (!strict[p] || isnan(ff[p])) continue;
        for (int q = 0; q < 4; q++) {
          float a = ff[p - dirs[q]], b = ff[p + dirs[q]];
          if (!isnan(a) && !isnan(b) && ff[p] - fmax(a, b) > c) {
            strict[p] = 0;
            break;
          }
        }
      }
  }
  /* the components, labelled in (and read from here on only inside) the
   * strict mask's box sb */
  int64_t sb[4];
  int32_t nc = psp_mask_box(strict, nx, ny, sb)
                   ? psp_cc_label_box(strict, nx, sb, false, w->lab, w->aux)
                   : 0;
  if (nc == 0) {
    free(gap);
    return 0;
  }
  /* per component: n, core, sum d, sum y, near, min y (mm) */
  int64_t *stat = calloc((size_t)(nc + 1) * 6, sizeof *stat);
  if (!stat) {
    free(gap);
    return 0;
  }
  double core_d0 = 6.0, core_d1 = 24.0, core_y0 = cr + 6.0, core_y1 = cr + 36.0;
  for (int64_t j = sb[2]; j <= sb[3]; j++)
    for (int64_t i = sb[0]; i <= sb[1]; i++) {
      int32_t c = w->lab[j * nx + i];
      if (!c) continue;
      double d = sgn * ((double)i - mid) * sx, y = ((double)j - cj) * sy;
      int64_t yr = psp_seg_lround(y);
      if (stat[6 * c] == 0 || yr < stat[6 * c + 5]) stat[6 * c + 5] = yr;
      stat[6 * c]++;
      if (d >= core_d0 && d <= core_d1 && y >= core_y0 && y <= core_y1) stat[6 * c + 1]++;
      stat[6 * c + 2] += psp_seg_lround(d);
      stat[6 * c + 3] += yr;
      if (d <= 75.0) stat[6 * c + 4]++;
    }
  int32_t core = 0;
  for (int32_t c = 1; c <= nc; c++)
    if (stat[6 * c + 1] > 0 && (core == 0 || stat[6 * c + 1] > stat[6 * core + 1])) core = c;
  if (core == 0) {
    free(stat);
    free(gap);
    return 0;
  }
  uint8_t *keep = calloc(2 * ((size_t)nc + 1), 1);
  if (!keep) {
    free(stat);
    free(gap);
    return 0;
  }
  uint8_t *touch = keep + nc + 1;
  keep[core] = 1;
  double px = sx * sy;
  /* other sizeable components behind the canal, within 70 mm of the
   * midline, chained to the kept ones across gaps of up to 6 mm (a fat
   * plane), never by themselves (skin, back muscles beyond the fascia) */
  int rg = (int)psp_seg_vox(CHAIN_MM, sx);
  for (int iter = 0; iter < 3; iter++) {
    memset(sel, 0, (size_t)n);
    for (int64_t j = sb[2]; j <= sb[3]; j++)
      for (int64_t p = j * nx + sb[0]; p <= j * nx + sb[1]; p++)
        sel[p] = keep[w->lab[p]];
    psp_mask_dilate(sel, nx, ny, rg, w);
    /* the components the grown kept ones reach (sel is fixed meanwhile) */
    memset(touch, 0, (size_t)nc + 1);
    for (int64_t j = sb[2]; j <= sb[3]; j++)
      for (int64_t p = j * nx + sb[0]; p <= j * nx + sb[1]; p++)
        if (sel[p]) touch[w->lab[p]] = 1;
    bool added = false;
    for (int32_t c = 1; c <= nc; c++) {
      double a = (double)stat[6 * c] * px;
      if (keep[c] || a < MIN_PIECE_MM2) continue;
      double ycen = (double)stat[6 * c + 3] / (double)stat[6 * c];
      if ((double)stat[6 * c + 4] < NEAR_SHARE * (double)stat[6 * c] || ycen < cr) continue;
      /* the erector spinae reaches forward to the transverse processes; a
       * piece that stays behind (the posterior layer of the back wall,
       * latissimus dorsi) is not part of the compartment, unless it lies in
       * the multifidus's zone (centred within CHAIN_MF_D_MM of the
       * midline, where no other muscle lies behind: a piece of a fatty,
       * streaky multifidus cut off by a streak) */
      double dcen_c = (double)stat[6 * c + 2] / (double)stat[6 * c];
      if ((double)stat[6 * c + 5] > cr + Y_ANT_LAT + CHAIN_FRONT_MM && dcen_c > CHAIN_MF_D_MM)
        continue;
      if (touch[c]) {
        keep[c] = 1;
        added = true;
      }
    }
    if (!added) break;
  }
  /* when a fat plane separates the multifidus (the core component) from
   * the rest, the components themselves are the two muscles */
  double core_dmax = 0;
  for (int64_t j = sb[2]; j <= sb[3]; j++)
    for (int64_t i = sb[0]; i <= sb[1]; i++)
      if (w->lab[j * nx + i] == core) core_dmax = fmax(core_dmax, sgn * ((double)i - mid) * sx);
  bool plane = core_dmax <= MF_MAX_D_MM;
  bool other = false;
  for (int32_t c = 1; c <= nc; c++)
    other = other || (keep[c] && c != core);
  memset(sel, 0, (size_t)n);
  for (int64_t j = sb[2]; j <= sb[3]; j++)
    for (int64_t p = j * nx + sb[0]; p <= j * nx + sb[1]; p++) {
      sel[p] = keep[w->lab[p]];
      if (plane && other && sel[p]) {
        int32_t c = w->lab[p];
        double dcen = (double)stat[6 * c + 2] / (double)stat[6 * c];
        seed[p] = (uint8_t)(c == core || dcen <= core_dmax ? 1 : 2);
      }
    }
  /* the sizeable strict components left out (not chained) are structures
   * of their own and stay out when the kept ones grow back into the loose
   * mask: a flank muscle or the back wall's layer beside the erector
   * spinae, behind a partial-volume fat plane; smaller ones are fragments
   * (between fatty streaks) the growth may take */
  memset(strict, 0, (size_t)n);
  for (int64_t j = sb[2]; j <= sb[3]; j++)
    for (int64_t p = j * nx + sb[0]; p <= j * nx + sb[1]; p++)
      strict[p] =
          w->lab[p] && !keep[w->lab[p]] && (double)stat[6 * w->lab[p]] * px >= MIN_PIECE_MM2;
  free(keep);
  free(stat);
  /* sel is empty outside sb grown by ro + 1 (and so after the hole filling) */
  int64_t gi0 = sb[0] - ro - 1 < 0 ? 0 : sb[0] - ro - 1,
          gi1 = sb[1] + ro + 1 > nx - 1 ? nx - 1 : sb[1] + ro + 1;
  int64_t gj0 = sb[2] - ro - 1 < 0 ? 0 : sb[2] - ro - 1,
          gj1 = sb[3] + ro + 1 > ny - 1 ? ny - 1 : sb[3] + ro + 1;
  float *thr = NULL;
  if (!isnan(lv->other)) {
    /* a fatty multifidus beside a lean erector spinae: the loose threshold
     * from the local muscle level, or the lean muscle's partial-volume rim
     * joins it */
    const int64_t g[4] = {gi0, gi1, gj0, gj1};
    thr = w->f0;
    if (!psp_seg_local_loose(ff, sel, nx, ny, sx, sy, lv->other, lv->muscle, lv->fat, g, thr)) {
      free(gap);
      return 0; /* out of memory: no compartment */
    }
  }
  psp_mask_dilate(sel, nx, ny, ro + 1, w);
  for (int64_t j = gj0; j <= gj1; j++)
    for (int64_t p = j * nx + gi0; p <= j * nx + gi1; p++)
      sel[p] = sel[p] && roi[p] && ff[p] < (thr ? thr[p] : lv->t_loose) && !strict[p];
  psp_mask_fill_holes(sel, nx, ny, w);
  int64_t cnt = 0;
  for (int64_t j = gj0; j <= gj1; j++)
    for (int64_t i = gi0; i <= gi1; i++) {
      int64_t p = j * nx + i;
      if (!sel[p]) continue;
      double d = sgn * ((double)i - mid) * sx;
      if (d < gap[j] || comp[p]) continue;
      comp[p] = (uint8_t)(side + 1);
      cnt++;
    }
  free(gap);
  return cnt;
}

/* The MF/ES boundary in polar form about the origin O, just behind the
 * canal on the midline: for each ray theta (0 = straight back, 90 degrees =
 * lateral, up to 180 = forward), the radius R(theta) where the multifidus
 * ends. The multifidus is the part of the compartment nearer to O. */
#define N_THETA 91 /* 2-degree rays over 0..180 degrees */
#define R_MAX_MM 95.0

typedef struct polar {
  double oi, oj, h; /* origin (voxels), radial step (mm) */
  int nr;
} polar;

/* The radial step (mm): the pixel size, at most 1 mm. */
static double polar_step(double sx, double sy) {
  double h = fmin(sx, sy);
  return h > 1.0 ? 1.0 : h;
}

/* O: on the midline, 3 mm in front of the most anterior compartment voxel
 * within 12 mm of the midline (the multifidus on the lamina), as in the
 * template the prior was learned from; behind the canal when there is none. */
static void polar_setup(const psp_slice_landmarks *lm, const uint8_t *comp, int64_t nx,
                        const int64_t bx[4], double sx, double sy, polar *P) {
  double rc = fmin(lm->canal_radius_mm, 10.0);
  P->oi = lm->midline_i;
  P->oj = lm->canal.j + (rc + 2.0) / sy;
  int64_t i0 = (int64_t)floor(P->oi - 12.0 / sx), i1 = (int64_t)ceil(P->oi + 12.0 / sx);
  bool found = false;
  for (int64_t j = bx[2]; j <= bx[3] && !found; j++)
    for (int64_t i = i0 < 0 ? 0 : i0; i <= i1 && i < nx; i++)
      if (comp[j * nx + i]) {
        P->oj = (double)j - 3.0 / sy;
        found = true;
        break;
      }
  P->h = polar_step(sx, sy);
  P->nr = (int)ceil(R_MAX_MM / P->h) + 1;
}

static double theta_of(int t) {
  return (double)t * (3.14159265358979323846 / (N_THETA - 1));
}

/* Voxel index at ray t, radius step r on side sgn, or -1 outside. */
static int64_t ray_voxel(const polar *P, int sgn, int t, int r, int64_t nx, int64_t ny, double sx,
                         double sy) {
  double th = theta_of(t), R = r * P->h;
  double di = sgn * R * sin(th) / sx, dj = R * cos(th) / sy;
  int64_t i = psp_seg_lround(P->oi + di), j = psp_seg_lround(P->oj + dj);
  if (i < 0 || j < 0 || i >= nx || j >= ny) return -1;
  return j * nx + i;
}

static double rho_at(int t, const double *row) {
  double deg = theta_of(t) * 180.0 / 3.14159265358979323846, u = deg / 10.0;
  int a = (int)floor(u);
  if (a >= 11) return 0.0;
  double f = u - a;
  return (1 - f) * row[a] + f * row[a + 1];
}

/* Dynamic programming over the rays: the radius per ray minimising
 * img + w ((R - prior) / sigma)^2 + STEP_COST per sample of change between
 * neighbouring rays (at most 2 samples). */
static void dp_path(const float *img, const double *pr, const int *rin, int nr, double h,
                    double weight, double sigma, float *acc, int8_t *from, int *path) {
  for (int t = 0; t < N_THETA; t++)
    for (int r = 0; r < nr; r++) {
      double c = 0.0;
      if (rin[t] >= 0) {
        double z = (r * h - pr[t]) / sigma;
        c = img[t * nr + r] + weight * z * z;
      }
      float prev_best = 0;
      int8_t bd = 0;
      if (t > 0) {
        const float *prev = acc + (t - 1) * nr;
        prev_best = prev[r];
        for (int d = 1; d <= 2; d++) {
          float pen = (float)(STEP_COST * d);
          if (r - d >= 0 && prev[r - d] + pen < prev_best) {
            prev_best = prev[r - d] + pen;
            bd = (int8_t)-d;
          }
          if (r + d < nr && prev[r + d] + pen < prev_best) {
            prev_best = prev[r + d] + pen;
            bd = (int8_t)d;
          }
        }
      }
      acc[t * nr + r] = prev_best + (float)c;
      from[t * nr + r] = bd;
    }
  int r = 0;
  for (int u = 1; u < nr; u++)
    if (acc[(N_THETA - 1) * nr + u] < acc[(N_THETA - 1) * nr + r]) r = u;
  for (int t = N_THETA - 1; t >= 0; t--) {
    path[t] = r;
    r += from[t * nr + r];
  }
}

/* The cost of the MF/ES boundary at each ray t and radius step r of one
 * side (img, N_THETA x P->nr) and the first and last compartment sample
 * per ray (rin, rout; -1 for rays without compartment). The same for every
 * prior: computed once per slice and side. Returns false on OOM. */
static bool ray_costs(const float *ff, const uint8_t *comp, int64_t nx, int64_t ny, double sx,
                      double sy, const polar *P, const slice_levels *lv, int side, float *img,
                      int *rin, int *rout) {
  int sgn = side == 0 ? 1 : -1;
  uint8_t val = (uint8_t)(side + 1);
  int nr = P->nr;
  float *fat = malloc((size_t)nr * sizeof *fat);
  uint8_t *inside = malloc((size_t)nr);
  int *before = malloc((size_t)nr * sizeof *before), *after = malloc((size_t)nr * sizeof *after);
  bool ok = fat && inside && before && after;
  if (ok) {
    double span = lv->fat - lv->muscle;
    if (span < 0.2) span = 0.2;
    int win = (int)ceil(8.0 / P->h), rw = (int)ceil(RIDGE_MM / P->h);
    for (int t = 0; t < N_THETA; t++) {
      rin[t] = -1;
      rout[t] = -1;
      for (int r = 0; r < nr; r++) {
        int64_t p = ray_voxel(P, sgn, t, r, nx, ny, sx, sy);
        double x = 1.0;
        inside[r] = 0;
        if (p >= 0) {
          if (comp[p] == val) {
            if (rin[t] < 0) rin[t] = r;
            rout[t] = r;
            inside[r] = 1;
          }
          float v = ff[p];
          x = isnan(v) ? 0.5 : (v - lv->muscle) / span;
        }
        fat[r] = (float)(x < 0 ? 0 : x > 1 ? 1 : x);
      }
      /* compartment voxels within 8 mm before / after each radius: a fat
       * plane splits the muscles only with muscle on both sides of it */
      int last = -1000000;
      for (int r = 0; r < nr; r++) {
        before[r] = r - last <= win;
        if (inside[r]) last = r;
      }
      last = 1000000;
      for (int r = nr - 1; r >= 0; r--) {
        after[r] = last - r <= win;
        if (inside[r]) last = r;
      }
      for (int r = 0; r < nr; r++) {
        double c = 0.0;
        if (rin[t] >= 0) {
          /* inside the compartment: a fat plane is cheap; at or beyond its
           * ends (the ray is all one muscle) a fixed price, or the border
           * fat around the compartment would always win */
          if (r < rin[t] - 1 || r > rout[t] + 1)
            c = 2.0;
          else if (r <= rin[t] || r >= rout[t])
            c = END_COST;
          else if (!before[r] || !after[r])
            c = 1.0;
          else {
            /* ridge: fattier than the tissue on both sides of it */
            /* (fat[] is never NaN: plain comparisons are fminf / fmax) */
            float lb = 1.0f, la = 1.0f;
            for (int q = 1; q <= rw; q++) {
              if (r - q >= 0 && fat[r - q] < lb) lb = fat[r - q];
              if (r + q < nr && fat[r + q] < la) la = fat[r + q];
            }
            double ridge = fat[r] - (double)(lb > la ? lb : la);
            c = 1.0 - (ridge < 0 ? 0 : ridge > 0.5 ? 1 : 2 * ridge);
          }
        }
        img[t * nr + r] = (float)c;
      }
    }
  }
  free(fat);
  free(inside);
  free(before);
  free(after);
  return ok;
}

/* Minimum-cost boundary radius per ray (mm, NaN for rays without
 * compartment) on the costs of ray_costs, given a prior radius per ray
 * (prior_r; NaN entries or NULL: the share profile rho_row). Returns false
 * on OOM. */
static bool split_path(const float *img, const int *rin, const int *rout, const polar *P,
                       const double *prior_r, const double *rho_row, double sigma, double *rb) {
  int nr = P->nr;
  float *acc = malloc((size_t)N_THETA * nr * sizeof *acc);
  int8_t *from = malloc((size_t)N_THETA * nr);
  bool ok = acc && from;
  if (ok) {
    int path[N_THETA];
    double pr[N_THETA];
    for (int t = 0; t < N_THETA; t++)
      pr[t] = prior_r && !isnan(prior_r[t])
                  ? prior_r[t]
                  : (rin[t] + rho_at(t, rho_row) * (rout[t] - rin[t])) * P->h;
    dp_path(img, pr, rin, nr, P->h, PRIOR_WEIGHT, sigma, acc, from, path);
    for (int t = 0; t < N_THETA; t++)
      rb[t] = rin[t] < 0 ? NAN : path[t] * P->h;
  }
  free(acc);
  free(from);
  return ok;
}

/* Writes the labels of one side from its compartment and boundary. */
static void label_side(const float *ff, const uint8_t *comp, int64_t nx, const int64_t bx[4],
                       double sx, double sy, const polar *P, const slice_levels *lv, int side,
                       const double *rb, float *out) {
  int sgn = side == 0 ? 1 : -1;
  uint8_t val = (uint8_t)(side + 1);
  float mf = side == 0 ? PSP_LABEL_MF_LEFT : PSP_LABEL_MF_RIGHT;
  float es = side == 0 ? PSP_LABEL_ES_LEFT : PSP_LABEL_ES_RIGHT;
  double step = 3.14159265358979323846 / (N_THETA - 1);
  for (int64_t j = bx[2]; j <= bx[3]; j++)
    for (int64_t i = bx[0]; i <= bx[1]; i++) {
      int64_t p = j * nx + i;
      if (comp[p] != val) continue;
      double x = sgn * ((double)i - P->oi) * sx, y = ((double)j - P->oj) * sy;
      double th = atan2(x, y); /* 0 = posterior, pi/2 = lateral */
      if (th < 0) th = 0;
      double u = th / step;
      int t0 = (int)floor(u);
      if (t0 >= N_THETA - 1) t0 = N_THETA - 2;
      double f = u - t0, a = rb[t0], b = rb[t0 + 1];
      double R = isnan(a) ? b : isnan(b) ? a : (1 - f) * a + f * b;
      double rr = hypot(x, y);
      if (isnan(R)) {
        out[p] = es;
        continue;
      }
      if (fabs(rr - R) <= 1.0 * fmax(sx, sy) && !isnan(ff[p]) && ff[p] > lv->t_loose) continue;
      out[p] = rr < R ? mf : es;
    }
}

/* Split along a visible fat plane: each compartment voxel goes to the seed
 * (1 = multifidus core, 2 = the others) whose watershed reaches it. bx: the
 * rectangle holding the compartment. Returns false when this side has no
 * seeds. */
static bool split_by_seeds(const float *ff, const uint8_t *comp, const uint8_t *seed, int64_t nx,
                           int64_t ny, const int64_t bx[4], int side, float *out,
                           psp_slice_work *w) {
  uint8_t val = (uint8_t)(side + 1);
  bool any = false;
  for (int64_t j = bx[2]; j <= bx[3] && !any; j++)
    for (int64_t p = j * nx + bx[0]; p <= j * nx + bx[1] && !any; p++)
      any = comp[p] == val && seed[p];
  if (!any) return false;
  uint8_t *lab = w->m2;
  psp_seg_watershed2(ff, comp, val, seed, nx, ny, bx, lab, w->queue, w->m3);
  float mf = side == 0 ? PSP_LABEL_MF_LEFT : PSP_LABEL_MF_RIGHT;
  float es = side == 0 ? PSP_LABEL_ES_LEFT : PSP_LABEL_ES_RIGHT;
  for (int64_t j = bx[2]; j <= bx[3]; j++)
    for (int64_t p = j * nx + bx[0]; p <= j * nx + bx[1]; p++)
      if (comp[p] == val) out[p] = lab[p] == 1 ? mf : es;
  return true;
}

/* A fat plane between the multifidus and the erector spinae seen as a
 * threshold that splits the side's compartment: for thresholds from the
 * loose one down towards the muscle level (raw FF), the compartment
 * voxels below it fall into a medial component on the multifidus core box
 * and lateral components (centroid at least PLANE_LAT_MM further from the
 * midline). The first threshold where both hold a good share of the
 * compartment gives the seeds (1 = multifidus, 2 = erector spinae) for
 * split_by_seeds. Returns true when seeds were set. */
static bool plane_seeds(const float *ff, const uint8_t *comp, int64_t nx, int64_t ny, double sx,
                        double sy, const int64_t bx[4], const psp_slice_landmarks *lm,
                        const slice_levels *lv, int side, uint8_t *seed, psp_slice_work *w) {
  int sgn = side == 0 ? 1 : -1;
  uint8_t val = (uint8_t)(side + 1);
  double mid = lm->midline_i, cj = lm->canal.j;
  double cr = fmin(lm->canal_radius_mm, 10.0) + 2.0;
  int64_t i0 = nx, i1 = -1, j0 = ny, j1 = -1, area = 0;
  for (int64_t j = bx[2]; j <= bx[3]; j++)
    for (int64_t i = bx[0]; i <= bx[1]; i++)
      if (comp[j * nx + i] == val) {
        i0 = i < i0 ? i : i0;
        i1 = i > i1 ? i : i1;
        j0 = j < j0 ? j : j0;
        j1 = j > j1 ? j : j1;
        area++;
      }
  if (area == 0) return false;
  float *sm = w->f0;
  /* the raw FF: at coarse pixels a 1-2 mm plane is one voxel, which any
   * smoothing would hide in fatty muscle */
  for (int64_t j = j0; j <= j1; j++)
    for (int64_t i = i0; i <= i1; i++) {
      float v = ff[j * nx + i];
      sm[j * nx + i] = isnan(v) ? 1.0f : v;
    }
  uint8_t *mask = w->m0;
  double span = lv->fat - lv->muscle;
  bool found = false;
  int64_t *st = NULL;
  for (int lev = 0; lev < PLANE_LEVELS && !found; lev++) {
    double thr = lv->t_loose - (double)lev * PLANE_LEVEL_STEP * span;
    for (int64_t j = j0; j <= j1; j++)
      for (int64_t i = i0; i <= i1; i++) {
        int64_t p = j * nx + i;
        mask[p] = comp[p] == val && sm[p] < thr;
      }
    /* the mask is empty outside the side's box: labelled there only */
    const int64_t sb[4] = {i0, i1, j0, j1};
    int32_t nc = psp_cc_label_box(mask, nx, sb, false, w->lab, w->aux);
    if (nc < 2) continue;
    free(st);
    int32_t core;
    st = psp_seg_core_stats(w->lab, nc, nx, sb, sgn, mid, cj, cr, sx, sy, &core);
    if (!st) return false;
    if (core == 0) continue;
    double dcore = (double)st[3 * core + 2] / (double)st[3 * core];
    int64_t lat_max = 0, kept = st[3 * core];
    for (int32_t c = 1; c <= nc; c++) {
      if (c == core) continue;
      double dc = (double)st[3 * c + 2] / (double)st[3 * c];
      if (dc >= dcore + PLANE_LAT_MM) lat_max = st[3 * c] > lat_max ? st[3 * c] : lat_max;
      kept += st[3 * c];
    }
    double a = (double)area;
    if ((double)st[3 * core] < PLANE_MIN_SHARE * a || (double)lat_max < PLANE_MIN_SHARE * a ||
        (double)kept < PLANE_KEPT_SHARE * a)
      continue;
    found = true;
    for (int64_t j = j0; j <= j1; j++)
      for (int64_t i = i0; i <= i1; i++) {
        int64_t p = j * nx + i;
        int32_t c = w->lab[p];
        if (!c) continue;
        if (c == core)
          seed[p] = 1;
        else if ((double)st[3 * c + 2] / (double)st[3 * c] >= dcore + PLANE_LAT_MM)
          seed[p] = 2;
      }
  }
  free(st);
  return found;
}

/* The boundary radius per ray (mm) of a labelled side: the last multifidus
 * sample on each ray (NaN for rays without compartment; the start of the
 * compartment when the ray holds no multifidus). */
static void rays_from_labels(const float *lab, const uint8_t *comp, int64_t nx, int64_t ny,
                             double sx, double sy, const polar *P, int side, double *rb) {
  int sgn = side == 0 ? 1 : -1;
  uint8_t val = (uint8_t)(side + 1);
  float mf = side == 0 ? PSP_LABEL_MF_LEFT : PSP_LABEL_MF_RIGHT;
  for (int t = 0; t < N_THETA; t++) {
    int rin = -1, rlast = -1;
    for (int r = 0; r < P->nr; r++) {
      int64_t p = ray_voxel(P, sgn, t, r, nx, ny, sx, sy);
      if (p < 0 || comp[p] != val) continue;
      if (rin < 0) rin = r;
      if (lab[p] == mf) rlast = r;
    }
    rb[t] = rin < 0 ? NAN : (rlast >= 0 ? rlast : rin) * P->h;
  }
}

/* How many slices on either side the second pass's median takes: NEIGH_MM
 * rounded to whole slices, 1..NEIGH_MAX (2 up to 5 mm, 1 from 6 mm up).
 * Not more below 3.2 mm: dixon-tum01 with every slice repeated (2 mm) gave
 * multifidus 0.852 / 0.876 with 2 and 0.850 / 0.873 with 4. */
int64_t psp_seg_neigh_slices(double dz_mm) {
  double n = isfinite(dz_mm) && dz_mm > 0 ? round(NEIGH_MM / dz_mm) : 1.0;
  return n < 1.0 ? 1 : n > NEIGH_MAX ? NEIGH_MAX : (int64_t)n;
}

psp_segmentation *psp_seg_run(const psp_ffmap *ffm, psp_seg_bottom_fn bottom, void *user,
                              psp_seg_axis *ax, psp_context *ctx, psp_error **err) {
  const psp_volume *ffv = psp_ffmap_ff(ffm);
  psp_segmentation *s = psp_calloc(1, sizeof *s, err), *done = NULL;
  if (!s) return NULL;
  int64_t nx = ffv->dims[0], ny = ffv->dims[1], nz = ffv->dims[2], plane = nx * ny;
  double sp[3];
  psp_volume_spacing(ffv, sp);
  bool ipop = !strcmp(psp_ffmap_source(ffm), "inphase+opposed-phase");
  /* the magnitudes (NULL for a precomputed FF map without a water image):
   * the lamina is dark */
  const psp_volume *wv = psp_ffmap_edge_water(ffm), *fv = psp_ffmap_edge_fat(ffm);
  if (!fv) wv = NULL;
  s->nz = nz;
  s->labels = psp_volume_create_like(ffv, err);
  s->lm = psp_calloc((size_t)nz, sizeof *s->lm, err);
  /* per slice: its levels, then the left and right side's (lv[3 k + 1 + side]) */
  slice_levels *lv = psp_calloc((size_t)nz * 3, sizeof *lv, err);
  uint8_t *comp = psp_calloc((size_t)(plane * nz), 1, err);
  uint8_t *body = psp_calloc((size_t)(plane * nz), 1, err);
  uint8_t *seeds = psp_calloc((size_t)(plane * nz), 1, err);
  double *prior = psp_calloc((size_t)nz * 3 * N_THETA, sizeof *prior, err);
  double *prior_both = prior + nz * 2 * N_THETA; /* per slice: both sides' neighbours */
  double *rprof = psp_calloc((size_t)nz * 2 * N_THETA, sizeof *rprof, err);
  /* per slice: the rectangle {i0, i1, j0, j1} holding its compartments
   * (and seeds, labels); the later passes look only there */
  int64_t *cbox = psp_calloc((size_t)nz * 4, sizeof *cbox, err);
  /* per slice and side: the path split's costs (ray_costs), computed in the
   * first boundary pass, used again in the second; rin, rout per ray */
  int nr = (int)ceil(R_MAX_MM / polar_step(sp[0], sp[1])) + 1;
  float *rcost = psp_calloc((size_t)nz * 2 * N_THETA * (size_t)nr, sizeof *rcost, err);
  int *rinout = psp_calloc((size_t)nz * 4 * N_THETA, sizeof *rinout, err);
  uint8_t *has_cost = psp_calloc((size_t)nz * 2, 1, err);
  if (!s->labels || !s->lm || !lv || !comp || !body || !seeds || !prior || !rprof || !cbox ||
      !rcost || !rinout || !has_cost)
    goto fail;
  for (int64_t q = 0; q < nz * 3; q++)
    lv[q].other = NAN; /* set per side by side_levels; never 0 by calloc */
  bool oom = false;

  /* the landmarks, consistent along the stack (src/segment/spine.c) */
  double t_lm = psp_now();
  int64_t k_low = -1; /* the lowest slice with a spine: a provisional L5/S1 */
  if (!psp_seg_spine_landmarks(ffv, ipop, body, s->lm, &k_low, ctx, err)) goto fail;
  psp_context_add_time(ctx, "segment.landmarks", psp_now() - t_lm);
  double back_med = NAN;
  int64_t n_swapped = psp_seg_flag_swapped(s->lm, nz, &back_med);
  if (k_low >= 0 && s->lm[k_low].status != PSP_SLICE_OK) {
    k_low = -1; /* the lowest slice with a spine, once more */
    for (int64_t k = 0; k < nz && k_low < 0; k++)
      if (s->lm[k].status == PSP_SLICE_OK) k_low = k;
  }
  s->axis_deg = NAN;
  if (ax) {
    /* the spine's axis; rotated: the caller segments a rotated copy */
    int a = psp_seg_axis_find(ffv, s->lm, ax, err);
    if (a < 0) goto fail;
    s->axis_deg = ax->deg;
    if (a > 0) {
      done = s;
      s = NULL;
      goto fail;
    }
  }
  /* the landmarks are final: the stack's bottom is checked on them. dz0:
   * the lowest spine slice's height above the priors' zero; taper0: the
   * same for the lumbosacral front, which counts from the stack's bottom
   * when the sacrum is in view (there the erector arises beside the canal:
   * over the sacrum and L5/S1 rather than from L5 up) */
  double dz0 = 0.0, taper0 = 0.0;
  if (bottom) {
    double l5s1 = NAN;
    int b = bottom(ffm, s, user, &l5s1, err);
    if (b < 0) goto fail;
    if (b < PSP_HEIGHT_BOTTOM || b > PSP_HEIGHT_ASSUMED ||
        ((b == PSP_HEIGHT_SACRUM || b == PSP_HEIGHT_NAMED) && !isfinite(l5s1))) {
      psp_error_set(err, PSP_ERR_INTERNAL,
                    "the check of the stack's bottom answered %d (L5/S1 at %g)", b, l5s1);
      goto fail;
    }
    s->height_from = (psp_height_from)b;
    if ((b == PSP_HEIGHT_SACRUM || b == PSP_HEIGHT_NAMED) && k_low >= 0) {
      /* the priors' zero PRIOR_ZERO_MM above that L5/S1, the slices below
       * it (the sacrum) at negative heights */
      double above = ((double)k_low - l5s1) * sp[2];
      dz0 = above - PRIOR_ZERO_MM;
      taper0 = b == PSP_HEIGHT_SACRUM ? 0.0 : fmax(0.0, dz0);
      psp_info(ctx,
               "automatic segmentation: %s L5/S1 at slice %.1f (internal numbering), so the "
               "lowest slice with a spine lies %.0f mm %s it, %.0f mm %s the height where the "
               "multifidus falls below half of the two muscles (%.0f mm above L5/S1) for the "
               "multifidus/erector spinae proportion",
               b == PSP_HEIGHT_SACRUM ? "the sacrum in view places" : "the levels given place",
               l5s1, fabs(above), above < 0 ? "below" : "above", fabs(dz0),
               dz0 < 0 ? "below" : "above", PRIOR_ZERO_MM);
    } else if (b == PSP_HEIGHT_ASSUMED && k_low >= 0) {
      dz0 = taper0 = NO_ANCHOR_DZ_MM;
      s->unanchored = true;
      psp_warn(ctx,
               "automatic segmentation: no sacrum or iliac crest in view, so the lowest slice "
               "with a spine is taken as %.0f mm above L5/S1 for the multifidus/erector spinae "
               "proportion (dixon-tum01 cut to start 16 / 32 mm higher: multifidus Dice "
               "0.84 / 0.87 and 0.87 / 0.84 this way, 0.85 / 0.83 and 0.75 / 0.70 taking it as "
               "L5/S1); check the QC images",
               NO_ANCHOR_DZ_MM);
    }
  }
  s->height_zero = k_low >= 0 ? (double)k_low - dz0 / sp[2] : NAN;
  if (bottom && n_swapped) /* once per analysis: not in the landmarks-only or outline runs */
    psp_warn(ctx,
             "automatic segmentation: on %lld slice(s) water and fat look exchanged (the fat "
             "behind the spine reads below FF %.2f, %.2f on the others): flagged, not measured "
             "(reasons in report.json)",
             (long long)n_swapped, SWAP_FF, back_med);
    /* pass 1b: compartments */
#pragma omp parallel reduction(|| : oom)
  {
    psp_slice_work *w = psp_slice_work_create(nx, ny);
    float *crop_ff = malloc((size_t)plane * sizeof *crop_ff);
    float *crop_w = wv ? malloc((size_t)plane * sizeof *crop_w) : NULL;
    float *crop_sm = malloc((size_t)plane * sizeof *crop_sm);
    uint8_t *crop_body = malloc((size_t)plane), *crop_comp = malloc((size_t)plane);
    uint8_t *crop_seed = malloc((size_t)plane);
    double *m3_z = malloc((size_t)nx * 3 * sizeof *m3_z);
    int32_t *m3_n = malloc((size_t)nx * 3 * sizeof *m3_n);
    bool ready = w && crop_ff && crop_sm && crop_body && crop_comp && crop_seed && m3_z && m3_n &&
                 (!wv || crop_w);
    if (!ready) oom = true;
#pragma omp for schedule(dynamic, 1)
    for (int64_t k = 0; k < nz; k++) {
      if (!ready) continue;
      const float *ff = ffv->data + k * plane;
      psp_slice_landmarks *lm = &s->lm[k];
      if (lm->status != PSP_SLICE_OK) continue;
      slice_levels *L = &lv[3 * k];
      {
        /* the spinal canal lies behind the vertebral body near the body's
         * left-right centre and within reach of the back's surface: a
         * "canal" far off either way is the aorta, a kidney or bowel */
        double back = ((double)lm->body_box[3] - lm->canal.j) * sp[1];
        double off = fabs(lm->canal.i - 0.5 * (double)(lm->body_box[0] + lm->body_box[1])) * sp[0];
        if (psp_landmarks_body_cut(lm, nx)) off = 0.0; /* the body's centre is not in view */
        if (back > psp_landmarks_max_depth_mm(lm) || off > CANAL_MAX_OFF_MM) {
          psp_seg_flag(
              lm, PSP_SLICE_IMPLAUSIBLE,
              "spinal canal implausibly placed (%.0f mm in front of the back's skin, %.0f mm "
              "beside the body's centre): the aorta, a kidney or bowel, not the spine",
              back, off);
          continue;
        }
      }
      L->muscle = isnan(lm->muscle_ff) ? 0.1 : lm->muscle_ff;
      L->fat = lm->fat_ff;
      if (L->fat - L->muscle < 0.3) {
        psp_seg_flag(
            lm, PSP_SLICE_IMPLAUSIBLE,
            "muscle beside the spinous process (FF %.2f) is not distinct from fat (FF %.2f)",
            L->muscle, L->fat);
        continue;
      }
      L->t_loose = 0.5 * (L->muscle + L->fat);
      /* at the lumbosacral junction no transverse process, quadratus
       * lumborum or psoas lies beside the canal: the erector spinae, arising
       * from the sacrum and the iliac crest, reaches forward beside it */
      {
        double dz = (double)(k - k_low) * sp[2] + taper0;
        double t = fmin(fmax(dz / SACRAL_MM, 0.0), 1.0);
        L->y_ant_lat = Y_ANT_SACRAL + t * (Y_ANT_LAT - Y_ANT_SACRAL);
      }
      L->t_strict = L->muscle + STRICT_SHARE * (L->fat - L->muscle);
      side_levels(s->lm, k, nz, L);
      uint8_t *c = comp + k * plane;
      /* the compartments are built on a crop around the spine (90 mm to
       * either side, from just in front of the canal backwards): the same
       * result at a fraction of the cost */
      int64_t ci0 = (int64_t)floor(lm->midline_i - D_MAX_MM / sp[0]) - 2;
      int64_t ci1 = (int64_t)ceil(lm->midline_i + D_MAX_MM / sp[0]) + 2;
      int64_t cj0 = (int64_t)floor(lm->canal.j - 15.0 / sp[1]), cj1 = ny - 1;
      ci0 = ci0 < 0 ? 0 : ci0;
      ci1 = ci1 > nx - 1 ? nx - 1 : ci1;
      cj0 = cj0 < 0 ? 0 : cj0;
      int64_t cnx = ci1 - ci0 + 1, cny = cj1 - cj0 + 1;
      for (int64_t j = 0; j < cny; j++) {
        int64_t q = (j + cj0) * nx + ci0;
        memcpy(crop_ff + j * cnx, ff + q, (size_t)cnx * sizeof *crop_ff);
        memcpy(crop_body + j * cnx, body + k * plane + q, (size_t)cnx);
        if (!crop_w) continue;
        const float *wr = wv->data + k * plane + q, *fr = fv->data + k * plane + q;
        for (int64_t i = 0; i < cnx; i++)
          crop_w[j * cnx + i] = wr[i] + fr[i];
      }
      memset(crop_comp, 0, (size_t)(cnx * cny));
      memset(crop_seed, 0, (size_t)(cnx * cny));
      psp_slice_landmarks lmc = *lm;
      lmc.midline_i -= (double)ci0;
      lmc.canal.i -= (double)ci0;
      lmc.canal.j -= (double)cj0;
      /* per slice, for both sides: the body without the skin and the layer
       * under it (never muscle), and the 3 x 3 mean FF (NaN-aware), so the
       * strict mask is cut by fat planes, not by noise */
      psp_mask_erode(crop_body, cnx, cny, (int)psp_seg_vox(SKIN_MM, sp[0]), w);
      psp_seg_mean3(crop_ff, cnx, cny, crop_sm, m3_z, m3_n);
      int64_t nvs[2] = {0, 0};
      for (int side = 0; side < 2; side++) {
        const slice_levels *Ls = L + 1 + side;
        nvs[side] = build_compartment(crop_ff, crop_sm, crop_w, crop_body, cnx, cny, sp[0], sp[1],
                                      &lmc, Ls, side, crop_comp, crop_seed, w);
        int64_t cut =
            psp_seg_es_front_limit(crop_comp, (uint8_t)(side + 1), crop_ff, Ls->muscle, Ls->fat,
                                   cnx, cny, sp[0], sp[1], lmc.midline_i, side == 0 ? 1 : -1);
        if (cut < 0) oom = true;
        nvs[side] -= cut > 0 ? cut : 0;
      }
      int64_t *bx = cbox + 4 * k;
      if (psp_mask_box(crop_comp, cnx, cny, bx)) {
        bx[0] += ci0, bx[1] += ci0, bx[2] += cj0, bx[3] += cj0;
      } else {
        bx[0] = bx[2] = 0, bx[1] = bx[3] = -1;
      }
      for (int64_t j = 0; j < cny; j++)
        for (int64_t i = 0; i < cnx; i++) {
          int64_t q = (j + cj0) * nx + i + ci0;
          c[q] = crop_comp[j * cnx + i];
          seeds[k * plane + q] = crop_seed[j * cnx + i];
        }
      for (int side = 0; side < 2 && lm->status == PSP_SLICE_OK; side++) {
        int64_t nv = nvs[side];
        /* first boundary pass below, once the lowest slice is known */
        double a = (double)nv * sp[0] * sp[1];
        if (a < MIN_SIDE_MM2)
          psp_seg_flag(lm, PSP_SLICE_IMPLAUSIBLE,
                       "paraspinal compartment too small on one side (%.0f mm^2, need %.0f)", a,
                       MIN_SIDE_MM2);
      }
    }
    free(crop_ff);
    free(crop_sm);
    free(crop_w);
    free(crop_body);
    free(crop_comp);
    free(crop_seed);
    free(m3_z);
    free(m3_n);
    psp_slice_work_free(w);
  }
  if (oom) {
    psp_error_set(err, PSP_ERR_NOMEM, "out of memory in the segmentation");
    goto fail;
  }

  /* first boundary pass: the template prior at this slice's height above
   * the priors' zero (s->height_zero) */
  {
#pragma omp parallel reduction(|| : oom)
    {
      psp_slice_work *w = psp_slice_work_create(nx, ny);
      float *tmp = malloc((size_t)plane * sizeof *tmp);
      bool ready = w && tmp;
      if (!ready) oom = true;
#pragma omp for schedule(dynamic, 1)
      for (int64_t k = 0; k < nz; k++) {
        if (!ready || s->lm[k].status != PSP_SLICE_OK) continue;
        double row[12];
        psp_seg_rho_row(((double)k - s->height_zero) * sp[2], row);
        const float *ff = ffv->data + k * plane;
        uint8_t *c = comp + k * plane, *sd = seeds + k * plane;
        polar P;
        const int64_t *bx = cbox + 4 * k;
        polar_setup(&s->lm[k], c, nx, bx, sp[0], sp[1], &P);
        for (int side = 0; side < 2; side++) {
          double *rp = rprof + (2 * k + side) * N_THETA;
          bool has = false;
          for (int64_t j = bx[2]; j <= bx[3] && !has; j++)
            for (int64_t q = j * nx + bx[0]; q <= j * nx + bx[1] && !has; q++)
              has = c[q] == side + 1 && sd[q];
          s->lm[k].split[side] = PSP_SPLIT_PLANE;
          if (!has && !isnan(lv[3 * k + 1 + side].other)) {
            has = psp_seg_fatty_seeds(ff, c, nx, sp[0], sp[1], bx, &s->lm[k],
                                      lv[3 * k + 1 + side].muscle, lv[3 * k + 1 + side].other,
                                      lv[3 * k + 1 + side].es_fatty, PLANE_LAT_MM, PLANE_MIN_SHARE,
                                      side, sd, w);
            if (has) s->lm[k].split[side] = PSP_SPLIT_STEP;
          }
          if (!has)
            has = plane_seeds(ff, c, nx, ny, sp[0], sp[1], bx, &s->lm[k], &lv[3 * k + 1 + side],
                              side, sd, w);
          if (has) {
            /* a visible plane: the split it gives is this slice's boundary
             * for the neighbours' prior too */
            if (!split_by_seeds(ff, c, sd, nx, ny, bx, side, tmp, w)) continue;
            rays_from_labels(tmp, c, nx, ny, sp[0], sp[1], &P, side, rp);
          } else {
            int64_t ks = 2 * k + side;
            float *img = rcost + ks * N_THETA * nr;
            int *ri = rinout + 2 * ks * N_THETA, *ro = ri + N_THETA;
            has_cost[ks] = ray_costs(ff, c, nx, ny, sp[0], sp[1], &P, &lv[3 * k + 1 + side], side,
                                     img, ri, ro);
            if (!has_cost[ks] || !split_path(img, ri, ro, &P, NULL, row, R_SIGMA1, rp)) oom = true;
          }
        }
      }
      free(tmp);
      psp_slice_work_free(w);
    }
    if (oom) {
      psp_error_set(err, PSP_ERR_NOMEM, "out of memory in the segmentation");
      goto fail;
    }
  }

  /* serial: consistency along the spine */
  {
    double ci[5], cjv[5];
    for (int64_t k = 0; k < nz; k++) {
      psp_slice_landmarks *lm = &s->lm[k];
      if (lm->status != PSP_SLICE_OK) continue;
      int m = 0;
      for (int64_t q = k - 2; q <= k + 2; q++)
        if (q >= 0 && q < nz && q != k && s->lm[q].canal.found) {
          ci[m] = s->lm[q].canal.i * sp[0];
          cjv[m] = s->lm[q].canal.j * sp[1];
          m++;
        }
      if (m < 2) continue;
      qsort(ci, (size_t)m, sizeof *ci, psp_seg_cmp_double);
      qsort(cjv, (size_t)m, sizeof *cjv, psp_seg_cmp_double);
      double mi = m % 2 ? ci[m / 2] : 0.5 * (ci[m / 2 - 1] + ci[m / 2]);
      double mj = m % 2 ? cjv[m / 2] : 0.5 * (cjv[m / 2 - 1] + cjv[m / 2]);
      double dist = hypot(lm->canal.i * sp[0] - mi, lm->canal.j * sp[1] - mj);
      if (dist > CANAL_JUMP_MM)
        psp_seg_flag(
            lm, PSP_SLICE_IMPLAUSIBLE,
            "spinal canal %.0f mm away from its position on the neighbouring slices (limit %.0f)",
            dist, CANAL_JUMP_MM);
    }
    int64_t lowest = -1;
    for (int64_t k = 0; k < nz && lowest < 0; k++)
      if (s->lm[k].status == PSP_SLICE_OK) lowest = k;
    for (int64_t k = 0; k < lowest; k++)
      if (s->lm[k].status == PSP_SLICE_NO_SPINE) {
        s->lm[k].status = PSP_SLICE_BELOW_SACRUM;
        snprintf(s->lm[k].reason, sizeof s->lm[k].reason,
                 "below the lowest slice where the spine and muscles were found (file slice "
                 "%lld)",
                 (long long)psp_volume_file_slice(ffv, lowest));
      }
    /* the slices within about NEIGH_MM (k-2..k+2 up to 5 mm, k-1..k+1 from 6 mm) */
    const int64_t nbh = psp_seg_neigh_slices(sp[2]);
    double v[2 * (2 * NEIGH_MAX + 1)];
    for (int64_t k = 0; k < nz; k++)
      for (int side = 0; side < 3; side++) /* left, right, both */
        for (int t = 0; t < N_THETA; t++) {
          int m = 0;
          for (int64_t q = k - nbh; q <= k + nbh; q++)
            for (int s2 = side == 2 ? 0 : side; s2 <= (side == 2 ? 1 : side); s2++) {
              double r = q >= 0 && q < nz ? rprof[(2 * q + s2) * N_THETA + t] : NAN;
              if (q >= 0 && q < nz && s->lm[q].status == PSP_SLICE_OK && !isnan(r)) v[m++] = r;
            }
          double *out =
              side == 2 ? &prior_both[k * N_THETA + t] : &prior[(2 * k + side) * N_THETA + t];
          if (m == 0) {
            *out = NAN; /* no neighbour: the template prior */
            continue;
          }
          qsort(v, (size_t)m, sizeof *v, psp_seg_cmp_double);
          *out = m % 2 ? v[m / 2] : 0.5 * (v[m / 2 - 1] + v[m / 2]);
        }
  }

  /* pass 2: the boundary with the neighbours' median as prior, labels */
#pragma omp parallel reduction(|| : oom)
  {
    psp_slice_work *w = psp_slice_work_create(nx, ny);
    if (!w) oom = true;
#pragma omp for schedule(dynamic, 1)
    for (int64_t k = 0; k < nz; k++) {
      if (!w || s->lm[k].status != PSP_SLICE_OK) continue;
      const float *ff = ffv->data + k * plane;
      uint8_t *c = comp + k * plane;
      const int64_t *bx = cbox + 4 * k;
      polar P;
      polar_setup(&s->lm[k], c, nx, bx, sp[0], sp[1], &P);
      float *lab = s->labels->data + k * plane;
      bool by_path[2] = {false, false};
      for (int side = 0; side < 2; side++) {
        if (split_by_seeds(ff, c, seeds + k * plane, nx, ny, bx, side, lab, w)) {
          const slice_levels *Ls = &lv[3 * k + 1 + side];
          double t = Ls->muscle + PLANE_FAT_SHARE * (Ls->fat - Ls->muscle);
          psp_seg_unlabel_plane(ff, c, lab, nx, bx, side, t, w->m3);
          continue;
        }
        by_path[side] = true;
        int64_t ks = 2 * k + side;
        int *ri = rinout + 2 * ks * N_THETA;
        if (!has_cost[ks])
          has_cost[ks] = ray_costs(ff, c, nx, ny, sp[0], sp[1], &P, &lv[3 * k + 1 + side], side,
                                   rcost + ks * N_THETA * nr, ri, ri + N_THETA);
        if (!has_cost[ks]) {
          by_path[side] = false;
          oom = true;
        }
      }
      /* the path split with each side's neighbours' boundaries as the
       * prior; if that leaves left and right beyond MAX_LR_RATIO, once more
       * with both sides' (a split that followed a false ridge on one side
       * over several slices) */
      for (int pass = 0; pass < 2 && (by_path[0] || by_path[1]); pass++) {
        if (pass == 1 && !(psp_seg_lr_ratio(lab, nx, bx) > MAX_LR_RATIO)) break;
        for (int side = 0; side < 2; side++) {
          if (!by_path[side]) continue;
          if (pass == 1)
            for (int64_t j = bx[2]; j <= bx[3]; j++)
              for (int64_t q = j * nx + bx[0]; q <= j * nx + bx[1]; q++)
                if (c[q] == side + 1) lab[q] = 0;
          int64_t ks = 2 * k + side;
          int *ri = rinout + 2 * ks * N_THETA;
          const double *pri = pass ? prior_both + k * N_THETA : prior + ks * N_THETA;
          double rb[N_THETA];
          if (!split_path(rcost + ks * N_THETA * nr, ri, ri + N_THETA, &P, pri,
                          psp_seg_mf_rho_all(), R_SIGMA2, rb)) {
            oom = true;
            continue;
          }
          label_side(ff, c, nx, bx, sp[0], sp[1], &P, &lv[3 * k + 1 + side], side, rb, lab);
        }
      }
      if (bx[1] >= bx[0] && !psp_seg_refine_outlines(ff, lab, nx, ny, sp[0], sp[1], bx,
                                                     lv[3 * k].muscle, lv[3 * k].fat, w->m3))
        oom = true;
      psp_seg_check_areas(&s->lm[k], ff, lab, nx, ny, bx, sp, lv[3 * k].muscle, true);
      if (s->lm[k].status == PSP_SLICE_OK) {
        s->lm[k].void_mm2 = psp_seg_void_area(ff, lab, nx, ny, bx, sp[0] * sp[1], w->queue, w->m0);
        for (int side = 0; side < 2; side++)
          if (by_path[side]) s->lm[k].split[side] = PSP_SPLIT_PATH;
      }
    }
    psp_slice_work_free(w);
  }
  if (oom) {
    psp_error_set(err, PSP_ERR_NOMEM, "out of memory in the segmentation");
    goto fail;
  }
  double *tz = psp_malloc((size_t)(2 * nz) * sizeof *tz, err); /* step 3d */
  for (int64_t k = 0; tz && k < nz; k++)
    tz[2 * k] = lv[3 * k + 1].t_strict, tz[2 * k + 1] = lv[3 * k + 2].t_strict;
  bool zok = tz && psp_seg_zfill_stack(s->labels->data, s->lm, ffv->data, nx, ny, nz, tz, err);
  free(tz);
  if (!zok) goto fail;
  /* the left/right check that waited for the stack's majority (checks.c) */
  const int64_t whole[4] = {0, nx - 1, 0, ny - 1};
  for (int64_t k = 0; k < nz; k++)
    if (s->lm[k].lr_pending)
      psp_seg_check_areas(&s->lm[k], ffv->data + k * nx * ny, s->labels->data + k * nx * ny, nx, ny,
                          whole, sp, lv[3 * k].muscle, false);
  int64_t nok = psp_segmentation_ok_count(s);
  psp_info(ctx, "segmentation: %lld of %lld slices segmented", (long long)nok, (long long)nz);
  psp_seg_warn_voids(s->lm, s->nz, ffv, ctx);
  if (nok == 0)
    psp_warn(ctx, "automatic segmentation found the paraspinal muscles on no slice (see the "
                  "per-slice reasons in report.json); all measurements are empty");
  s->body = body; /* the body's outline, for report and QC */
  s->body_plane = plane;
  body = NULL;
  done = s; /* the cleanup below keeps it */
  s = NULL;
fail:
  free(cbox);
  free(rcost);
  free(rinout);
  free(has_cost);
  free(lv);
  free(comp);
  free(body);
  free(seeds);
  free(prior);
  free(rprof);
  psp_segmentation_free(s);
  return done;
}
