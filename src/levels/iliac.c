/*
 * DESIGN: the iliac-crest anchor of the vertebral level assignment.
 *
 * Anatomy. The line joining the highest points of the two iliac crests
 * (intercristal, Tuffier's or Jacoby's line) crosses the lumbar spine at
 * the L4/L5 disc in the median adult, anywhere from L3/L4 to L5/S1 (MRI
 * and radiographs of 690 patients: Kim et al., Anesthesiology 2003;99:
 * 1359-63); most often between the lower third of L4 and the upper third
 * of L5 (about 80 % of 296 radiographs, lower in women and the young), L4
 * body / lower endplate in men and L5 body / upper endplate in women (Snider
 * et al., Spine 2008;33:E161-5, who conclude it is not enough on its own to
 * number the segments). Transitional lumbosacral vertebrae shift it too.
 * So the crest names the discs with a moderate confidence and a flag, below
 * a sacrum seen directly, and never where the evidence is ambiguous without
 * saying so.
 *
 * 1. Bone per slice. In the spine-centred frame of levels.c (canal row cj,
 *    midline mid), the search region is 55-150 mm left and right of the
 *    midline (beyond the lumbar transverse processes and the sacral alae,
 *    whose tips reach about 50 mm) and 25 mm anterior to 50 mm posterior
 *    of the canal centre: where the posterior iliac crest and wing lie
 *    lateral to the erector spinae and quadratus lumborum at the
 *    lumbosacral level (most bowel lies further anterior). Bone is
 *    marrow-like tissue (the same evidence band as the sacrum's bony width:
 *    FF between the disc level + half the marrow-disc contrast and the
 *    marrow level + 0.35, at most 0.85; min(FF, 1-FF) for in-phase/
 *    opposed-phase input; and on each side not below the median level of
 *    that side's erector spinae in the segmentation's landmarks (levels.c;
 *    the slice's multifidus level at first, which a fatty multifidus
 *    raised above the wings' marrow on both sides: dixon-tum01 with its
 *    left multifidus made fatty lost the anchor): a fatty erector spinae reads
 *    marrow-like and bridged to the wings, one region too large, which
 *    lost the anchor of dixon-tum01 with fatty infiltration, muscle FF
 *    about 0.2; with the floor at the muscle level + 0.08 the anchor of
 *    muscle FF 0.30 was lost too, at + 0 it is kept (crest top 1 slice
 *    higher), without the floor but with the 8000 mm^2 below it was kept
 *    at FF 0.30 / 0.39 but 4 / 3 slices too high: the names shift; lean
 *    muscle leaves the band as it was) that is
 *    locally flat (evidence gradient <= 0.10 per mm), then opened with a
 *    2 mm elliptic disk: the partial-volume rims every muscle/fat boundary
 *    shows at intermediate FF are steep and thin and go, the crest (about
 *    8-15 mm thick) stays. Per side the largest 4-connected component (at
 *    most 8000 mm^2 in all: dixon-tum01's right wing region measures 2,900
 *    mm^2, and 4000 lost the anchor of the same scan with its pixel size
 *    scaled by 1.15, a larger subject: all-muscle Dice 0.911, 0.927 now)
 *    that is elongated (principal axes >= 2:1 inside the lateral band: the
 *    crest and wing are bands; colon content
 *    and bowel walls are blobs and rings) counts; a slice has iliac bone on
 *    both sides when each side's is >= 100 mm^2 and the two are roughly
 *    mirror images (lateral offsets within 30 mm,
 *    anterior-posterior within 25 mm), which rejects one-sided bowel.
 * 2. Crest top. The wings are present from the bottom of a stack that
 *    reaches the pelvis up to the crest top and absent above: the run of
 *    "both" slices must start within 8 mm of the bottom slice (a single
 *    missing slice is bridged for slices <= 5 mm), span >= 2 slices and
 *    8 mm (or, with slices of 8 mm or more, one slice whose bone on each
 *    side reaches ONE_SLICE_MIN_MM2: dixon-tum01 averaged to 10 mm slices
 *    has its wings on the lowest slice only and lost its anchor, multifidus
 *    Dice 0.78 / 0.85 with the fallback; the anchor's confidence x
 *    ILIAC_EXTRAP then), not narrow downwards (area at its lowest slice >= 0.75 x at its
 *    highest: the wings widen below the crest, the tip of a twelfth rib at
 *    the bottom of a stack narrows), end at least 8 mm (and one slice)
 *    below the top of the stack, and be followed by fewer than two "both"
 *    slices within 25 mm above it (else the evidence is inconsistent:
 *    fatty muscle or bowel, no anchor; further up, ribs are not the
 *    crest's business). The crest top is placed half a slice above the
 *    highest slice of the run (+-half a slice).
 * 3. Rule. The discs, extended by one spacing below the lowest and above
 *    the highest, bracket the crest: t = its position between the disc
 *    below (0) and the disc above (1). In the lower third of a vertebra
 *    (t <= 1/3) the disc below is L4/L5 (crest in lower L4), else the disc
 *    above is (crest in L5, or at a disc). The middle third (1/3 < t < 2/3)
 *    is ambiguous between two namings (mid L4 or mid L5 are both common):
 *    it takes the disc above, as a crest level with the L5 body is the
 *    commoner reading in women, and says so. Anchor confidence 0.45, 0.30
 *    when ambiguous, x 0.8 when the disc named L4/L5 was not detected
 *    (extrapolated one spacing); no naming when the crest lies more than
 *    one spacing beyond the outermost disc. A sacrum anchor ranges 0.6-0.95;
 *    0.45 keeps iliac-named levels below the default --min-confidence (0.5)
 *    of `paraspinal change`, which compares only levels named confidently.
 *
 * Serial code; deterministic.
 */
#include "levels/iliac.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LAT_MIN_MM 55.0
#define LAT_MAX_MM 150.0
#define AP_MIN_MM -25.0
#define AP_MAX_MM 50.0
#define OPEN_MM 2.0
#define GRAD_MAX 0.10 /* evidence per mm */
#define COMP_MAX_MM2 8000.0
#define SIDE_MIN_MM2 100.0
#define ABOVE_MM 25.0
#define MIN_ELONGATION 2.0
#define SYM_LAT_MM 30.0
#define SYM_AP_MM 25.0
#define END_MM 8.0
/* a run's extent may fall this short of END_MM: two slices of 3.5-4 mm (4 mm
 * is 3.9999998 mm in the float affine of a stack tilted by 10 degrees,
 * which lost dixon-tum01's anchor, a run of two 4 mm slices) */
#define RUN_SLACK_MM 1.0
#define ONE_SLICE_MIN_MM2 400.0 /* each side, a run of one thick slice */
#define ILIAC_CONF 0.45
#define ILIAC_CONF_AMBIGUOUS 0.30
#define ILIAC_EXTRAP 0.8
#define DEFAULT_SPACING_MM 38.0

/* ------------------------------------------------------------------------ */
/* 1. Bone per slice                                                         */
/* ------------------------------------------------------------------------ */

typedef struct work {
  uint8_t *m, *t;
  float *e; /* evidence of the box and a border */
  float *r; /* raw evidence of the box and a two-voxel border */
  int32_t *stack;
  int64_t w, h; /* box size */
} work;

/* Erosion (erode = true) or dilation of the w x h mask a into b with an
 * elliptic element of half axes rx, ry voxels; outside the box is empty.
 * The element is, row by row (dj), one run of offsets -hw..hw (the test
 * below is symmetric and monotonic in |di|), so each pixel looks at one
 * row count per element row, from prefix sums of the rows: erosion = every
 * run inside the box and full, dilation = some run (clipped) not empty. */
static void morph(const uint8_t *a, uint8_t *b, int64_t w, int64_t h, int rx, int ry, bool erode) {
  const int eh = 2 * ry + 1;
  int *hw = malloc((size_t)eh * sizeof *hw); /* run half-width per element row */
  int32_t *pre = malloc((size_t)(w + 1) * (size_t)h * sizeof *pre);
  if (hw && pre) {
    /* (the same test per offset: inside the ellipse of half axes rx + 0.5,
     * ry + 0.5) */
    for (int dj = -ry; dj <= ry; dj++) {
      int r = -1;
      for (int di = 0; di <= rx; di++) {
        double u = (double)di / (rx + 0.5), v = (double)dj / (ry + 0.5);
        if (!(u * u + v * v > 1.0)) r = di;
      }
      hw[dj + ry] = r;
    }
    for (int64_t j = 0; j < h; j++) {
      int32_t *p = pre + j * (w + 1);
      p[0] = 0;
      for (int64_t i = 0; i < w; i++)
        p[i + 1] = p[i] + (a[j * w + i] != 0);
    }
    for (int64_t j = 0; j < h; j++)
      for (int64_t i = 0; i < w; i++) {
        bool acc = erode;
        for (int dj = -ry; dj <= ry && acc == erode; dj++) {
          const int r = hw[dj + ry];
          if (r < 0) continue;
          const int64_t y = j + dj;
          int64_t x0 = i - r, x1 = i + r;
          if (erode) {
            if (y < 0 || y >= h || x0 < 0 || x1 >= w) {
              acc = false;
              break;
            }
            const int32_t *p = pre + y * (w + 1);
            acc = p[x1 + 1] - p[x0] == x1 - x0 + 1;
          } else {
            if (y < 0 || y >= h) continue;
            if (x0 < 0) x0 = 0;
            if (x1 > w - 1) x1 = w - 1;
            const int32_t *p = pre + y * (w + 1);
            acc = p[x1 + 1] - p[x0] > 0;
          }
        }
        b[j * w + i] = acc;
      }
  } else { /* out of memory: the per-pixel test */
    for (int64_t j = 0; j < h; j++)
      for (int64_t i = 0; i < w; i++) {
        bool acc = erode;
        for (int dj = -ry; dj <= ry && acc == erode; dj++)
          for (int di = -rx; di <= rx && acc == erode; di++) {
            double u = (double)di / (rx + 0.5), v = (double)dj / (ry + 0.5);
            if (u * u + v * v > 1.0) continue;
            int64_t x = i + di, y = j + dj;
            bool s = x >= 0 && y >= 0 && x < w && y < h && a[y * w + x];
            if (s != erode) acc = s;
          }
        b[j * w + i] = acc;
      }
  }
  free(hw);
  free(pre);
}

/* Marrow evidence of voxel (i, j): FF, or min(FF, 1 - FF); no signal 0. */
static double evid(const float *sl, int64_t nx, int64_t i, int64_t j, bool sym) {
  float v = sl[j * nx + i];
  if (isnan(v)) return 0.0;
  return sym ? fmin((double)v, 1.0 - (double)v) : (double)v;
}

/* Ratio of the principal axes (sqrt of the eigenvalue ratio of the second
 * moments) of a region of area a with first moments (mx, my) and second
 * moments m2 = (xx, yy, xy), all area-weighted. */
static double elongation(double a, double mx, double my, const double m2[3]) {
  if (!(a > 0)) return 0;
  double cx = mx / a, cy = my / a;
  double sxx = m2[0] / a - cx * cx, syy = m2[1] / a - cy * cy, sxy = m2[2] / a - cx * cy;
  double tr = sxx + syy, det = sxx * syy - sxy * sxy;
  double disc = sqrt(fmax(0.0, 0.25 * tr * tr - det));
  double l1 = 0.5 * tr + disc, l2 = 0.5 * tr - disc;
  return l2 > 1e-9 ? sqrt(l1 / l2) : 1e9;
}

/* Per voxel of one row (n voxels) the median of its 3 x 3 neighbours from
 * the rows above (a), at (b) and below (c), each read at offsets -1..+1: a
 * sorting network (Paeth's, 19 compare-exchanges) on local values, which
 * the compiler turns into vector min / max. */
static void median9_row(const float *restrict a, const float *restrict b, const float *restrict c,
                        float *restrict out, int64_t n) {
#define SORT2(x, y)                                                                                \
  do {                                                                                             \
    float lo_ = x < y ? x : y, hi_ = x < y ? y : x;                                                \
    x = lo_;                                                                                       \
    y = hi_;                                                                                       \
  } while (0)
  for (int64_t i = 0; i < n; i++) {
    float p0 = a[i - 1], p1 = a[i], p2 = a[i + 1], p3 = b[i - 1], p4 = b[i], p5 = b[i + 1],
          p6 = c[i - 1], p7 = c[i], p8 = c[i + 1];
    SORT2(p1, p2);
    SORT2(p4, p5);
    SORT2(p7, p8);
    SORT2(p0, p1);
    SORT2(p3, p4);
    SORT2(p6, p7);
    SORT2(p1, p2);
    SORT2(p4, p5);
    SORT2(p7, p8);
    SORT2(p0, p3);
    SORT2(p5, p8);
    SORT2(p4, p7);
    SORT2(p3, p6);
    SORT2(p1, p4);
    SORT2(p2, p5);
    SORT2(p4, p7);
    SORT2(p4, p2);
    SORT2(p6, p4);
    SORT2(p4, p2);
    out[i] = p4;
  }
#undef SORT2
}

static void detect_slice(const psp_iliac_input *in, int64_t k, work *wk, psp_iliac_slice *out) {
  const int64_t nx = in->dims[0], ny = in->dims[1];
  const double sx = in->spacing[0], sy = in->spacing[1];
  memset(out, 0, sizeof *out);
  double mid = in->mid[k], cj = in->cj[k];
  if (!isfinite(mid) || !isfinite(cj)) return;
  /* the evidence floor per side (fmax: a NaN side floor leaves lo) */
  const double lo[2] = {fmax(in->lo, in->lo_side[0]), fmax(in->lo, in->lo_side[1])};
  int64_t i0 = (int64_t)floor(mid - LAT_MAX_MM / sx), i1 = (int64_t)ceil(mid + LAT_MAX_MM / sx);
  int64_t j0 = (int64_t)floor(cj + AP_MIN_MM / sy), j1 = (int64_t)ceil(cj + AP_MAX_MM / sy);
  if (i0 < 0) i0 = 0;
  if (j0 < 0) j0 = 0;
  if (i1 > nx - 1) i1 = nx - 1;
  if (j1 > ny - 1) j1 = ny - 1;
  if (i1 <= i0 || j1 <= j0) return;
  const int64_t w = i1 - i0 + 1, h = j1 - j0 + 1;
  const float *sl = in->ff + k * nx * ny;
  /* the evidence on the box and a one-voxel border: water/fat input as the
   * median over 3 x 3 voxels (the image's edge replicated), so that noise
   * neither breaks the bone up nor fails its flatness while the
   * partial-volume rims stay steep and thin (dixon-tum01 with Gaussian
   * noise of sigma 20 / 40 added to water and fat lost its iliac anchor;
   * the mean instead of the median let the phantom's flank muscles' rims
   * through); in-phase/opposed-phase evidence (min(FF, 1 - FF)) as it is:
   * much soft tissue reads marrow-like there, and the median joined it into
   * wing-sized regions (ipop-chaos11, no pelvis in view, got a crest). The
   * raw evidence first on the box and a two-voxel border (r), then the
   * medians by a sorting network (the levels stage took 3.6 x longer with
   * an insertion sort per voxel). */
  const int64_t we = w + 2, wr = w + 4;
  for (int64_t j = 0; j < h + 4; j++) {
    int64_t gj = j0 + j - 2;
    gj = gj < 0 ? 0 : gj >= ny ? ny - 1 : gj;
    for (int64_t i = 0; i < wr; i++) {
      int64_t gi = i0 + i - 2;
      gi = gi < 0 ? 0 : gi >= nx ? nx - 1 : gi;
      wk->r[j * wr + i] = (float)evid(sl, nx, gi, gj, in->sym);
    }
  }
  for (int64_t j = 0; j < h + 2; j++) {
    const float *row = wk->r + (j + 1) * wr + 1;
    if (in->sym)
      memcpy(wk->e + j * we, row, (size_t)we * sizeof *row);
    else
      median9_row(row - wr, row, row + wr, wk->e + j * we, we);
  }
  for (int64_t j = 0; j < h; j++)
    for (int64_t i = 0; i < w; i++) {
      int64_t gi = i0 + i, gj = j0 + j;
      const float *pe = wk->e + (j + 1) * we + (i + 1);
      double e = *pe;
      bool ok = !isnan(sl[gj * nx + gi]) && e >= lo[(double)gi > mid] && e <= in->hi;
      if (ok && gi > 0 && gj > 0 && gi + 1 < nx && gj + 1 < ny) {
        double gx = ((double)pe[1] - (double)pe[-1]) / (2 * sx);
        double gy = ((double)pe[we] - (double)pe[-we]) / (2 * sy);
        ok = gx * gx + gy * gy <= GRAD_MAX * GRAD_MAX; /* hypot(gx, gy) <= GRAD_MAX */
      }
      wk->m[j * w + i] = ok;
    }
  int rx = (int)lround(OPEN_MM / sx), ry = (int)lround(OPEN_MM / sy);
  if (rx < 1) rx = 1;
  if (ry < 1) ry = 1;
  morph(wk->m, wk->t, w, h, rx, ry, true);
  morph(wk->t, wk->m, w, h, rx, ry, false);
  /* components: wk->m holds 1 = unvisited bone, 2 = visited */
  const double vox = sx * sy;
  double best_a[2] = {0, 0}, best_x[2] = {0, 0}, best_y[2] = {0, 0};
  for (int64_t s0 = 0; s0 < w * h; s0++) {
    if (wk->m[s0] != 1) continue;
    double a[2] = {0, 0}, xs[2] = {0, 0}, ys[2] = {0, 0}, m2[2][3] = {{0, 0, 0}, {0, 0, 0}};
    double total = 0;
    int64_t sp = 0;
    wk->stack[sp++] = (int32_t)s0;
    wk->m[s0] = 2;
    while (sp > 0) {
      int64_t q = wk->stack[--sp];
      int64_t qi = q % w, qj = q / w;
      total += vox;
      double x = ((double)(i0 + qi) - mid) * sx, y = ((double)(j0 + qj) - cj) * sy;
      double ax = fabs(x);
      if (ax >= LAT_MIN_MM && ax <= LAT_MAX_MM) {
        int side = x > 0 ? 1 : 0; /* i -> patient left */
        a[side] += vox;
        xs[side] += ax * vox;
        ys[side] += y * vox;
        m2[side][0] += ax * ax * vox;
        m2[side][1] += y * y * vox;
        m2[side][2] += ax * y * vox; /* mirrored to the left: the same moments on both sides */
      }
      const int64_t nb[4] = {qi > 0 ? q - 1 : -1, qi + 1 < w ? q + 1 : -1, qj > 0 ? q - w : -1,
                             qj + 1 < h ? q + w : -1};
      for (int n = 0; n < 4; n++)
        if (nb[n] >= 0 && wk->m[nb[n]] == 1) {
          wk->m[nb[n]] = 2;
          wk->stack[sp++] = (int32_t)nb[n];
        }
    }
    if (total > COMP_MAX_MM2) continue;
    for (int s = 0; s < 2; s++)
      if (a[s] > best_a[s] && elongation(a[s], xs[s], ys[s], m2[s]) >= MIN_ELONGATION) {
        best_a[s] = a[s];
        best_x[s] = xs[s];
        best_y[s] = ys[s];
      }
  }
  for (int s = 0; s < 2; s++) {
    out->area_mm2[s] = best_a[s];
    out->lat_mm[s] = best_a[s] > 0 ? best_x[s] / best_a[s] : NAN;
    out->ap_mm[s] = best_a[s] > 0 ? best_y[s] / best_a[s] : NAN;
  }
  out->both = best_a[0] >= SIDE_MIN_MM2 && best_a[1] >= SIDE_MIN_MM2 &&
              fabs(out->lat_mm[0] - out->lat_mm[1]) <= SYM_LAT_MM &&
              fabs(out->ap_mm[0] - out->ap_mm[1]) <= SYM_AP_MM;
}

/* ------------------------------------------------------------------------ */
/* 2. Crest top                                                              */
/* ------------------------------------------------------------------------ */

void psp_iliac_crest(const psp_iliac_slice *sl, int64_t nz, double dz, psp_iliac *out) {
  out->found = false;
  out->crest = NAN;
  out->top = -1;
  out->n_above = 0;
  out->one_slice = false;
  out->why[0] = '\0';
  int64_t end_sl = (int64_t)ceil(END_MM / dz);
  if (end_sl < 1) end_sl = 1;
  int64_t k0 = -1;
  for (int64_t k = 0; k < nz && k < end_sl; k++)
    if (sl[k].both) {
      k0 = k;
      break;
    }
  if (k0 < 0) {
    snprintf(out->why, sizeof out->why,
             "no iliac bone on both sides at the bottom of the stack: the pelvis is not in view");
    return;
  }
  int64_t gap = dz <= 5.0 ? 1 : 0;
  int64_t top = k0;
  for (int64_t k = k0 + 1; k < nz; k++) {
    if (sl[k].both) {
      top = k;
    } else if (k - top > gap) {
      break;
    }
  }
  out->top = top;
  /* further up (ribs, at L1-L3) is not the crest's business */
  for (int64_t k = top + 2; k < nz && (double)(k - top) * dz <= ABOVE_MM + dz; k++)
    out->n_above += sl[k].both;
  if ((double)(nz - 1 - top) * dz < END_MM || top >= nz - 1) {
    snprintf(out->why, sizeof out->why,
             "iliac bone on both sides up to slice %lld, too close to the top of the stack to "
             "see the crest top",
             (long long)top);
    return;
  }
  /* thick slices (a slice spans END_MM): one slice of large wings on both
   * sides is a run too (tum01 averaged to 10 / 12 mm slices: 489 / 699
   * and 483 / 692 mm^2 on the lowest slice, nothing on both sides above;
   * iliac-like regions elsewhere 10-371 mm^2 on one side) */
  out->one_slice = top == k0 && dz >= END_MM && sl[k0].area_mm2[0] >= ONE_SLICE_MIN_MM2 &&
                   sl[k0].area_mm2[1] >= ONE_SLICE_MIN_MM2;
  if (!out->one_slice &&
      (top - k0 + 1 < 2 || (double)(top - k0 + 1) * dz < END_MM - RUN_SLACK_MM)) {
    snprintf(out->why, sizeof out->why,
             "iliac-like bone on both sides on slices %lld-%lld only: too short a run to be the "
             "iliac wings",
             (long long)k0, (long long)top);
    return;
  }
  /* the wings widen below the crest; a rib tip at the bottom of a stack
   * narrows (25 % leeway: noise, partial volume) */
  double a_lo = sl[k0].area_mm2[0] + sl[k0].area_mm2[1];
  double a_top = sl[top].area_mm2[0] + sl[top].area_mm2[1];
  if (a_lo < 0.75 * a_top) {
    snprintf(out->why, sizeof out->why,
             "bone on both sides on slices %lld-%lld narrows downwards (%.0f mm^2 at the bottom, "
             "%.0f at the top): not the iliac wings",
             (long long)k0, (long long)top, a_lo, a_top);
    return;
  }
  if (out->n_above >= 2) {
    snprintf(out->why, sizeof out->why,
             "iliac-like bone on both sides up to slice %lld and again on %lld slices above it: "
             "inconsistent, not used",
             (long long)top, (long long)out->n_above);
    return;
  }
  out->found = true;
  out->crest = (double)top + 0.5;
}

bool psp_iliac_detect(const psp_iliac_input *in, psp_iliac_slice *per_slice, psp_iliac *out,
                      psp_error **err) {
  const int64_t nx = in->dims[0], ny = in->dims[1], nz = in->dims[2];
  bool oom = false;
  /* slices in parallel, each thread with its own scratch; every slice
   * writes only its own record */
#pragma omp parallel reduction(|| : oom)
  {
    work wk = {0};
    wk.m = malloc((size_t)(nx * ny) + 1);
    wk.t = malloc((size_t)(nx * ny) + 1);
    wk.stack = malloc(((size_t)(nx * ny) + 1) * sizeof *wk.stack);
    wk.e = malloc(((size_t)(nx + 2) * (size_t)(ny + 2)) * sizeof *wk.e);
    wk.r = malloc(((size_t)(nx + 4) * (size_t)(ny + 4)) * sizeof *wk.r);
    const bool ready = wk.m && wk.t && wk.stack && wk.e && wk.r;
    if (!ready) oom = true;
#pragma omp for schedule(dynamic, 1)
    for (int64_t k = 0; k < nz; k++)
      if (ready) detect_slice(in, k, &wk, &per_slice[k]);
    free(wk.m);
    free(wk.t);
    free(wk.stack);
    free(wk.e);
    free(wk.r);
  }
  if (oom) return psp_error_set(err, PSP_ERR_NOMEM, "out of memory finding the iliac crests");
  psp_iliac_crest(per_slice, nz, in->spacing[2], out);
  return true;
}

/* ------------------------------------------------------------------------ */
/* 3. Rule                                                                   */
/* ------------------------------------------------------------------------ */

psp_iliac_rule psp_iliac_name_discs(const double *disc, size_t n, double dz, double spacing_mm,
                                    double crest) {
  psp_iliac_rule r;
  memset(&r, 0, sizeof r);
  r.t = NAN;
  r.offset_mm = NAN;
  if (n == 0 || !isfinite(crest) || !(dz > 0)) return r;
  double S = isfinite(spacing_mm) && spacing_mm > 0 ? spacing_mm : DEFAULT_SPACING_MM;
  /* disc positions extended by one virtual disc at either end: index
   * a in [-1, n] */
#define POS(a) ((a) < 0 ? disc[0] - S / dz : (size_t)(a) >= n ? disc[n - 1] + S / dz : disc[(a)])
  long lo = -1, hi = (long)n;
  if (crest < POS(lo) || crest > POS(hi)) return r;
  long a = lo;
  while (a + 1 <= hi && POS(a + 1) <= crest)
    a++;
  long b = a + 1 <= hi ? a + 1 : a;
  double t = b > a ? (crest - POS(a)) / (POS(b) - POS(a)) : 0.0;
  long l45 = t <= 1.0 / 3.0 ? a : b;
  r.ok = true;
  r.t = t;
  r.base = 1 - (int)l45;
  r.offset_mm = (crest - POS(l45)) * dz;
  r.ambiguous = t > 1.0 / 3.0 && t < 2.0 / 3.0;
  r.extrapolated = l45 < 0 || l45 >= (long)n;
  r.conf =
      (r.ambiguous ? ILIAC_CONF_AMBIGUOUS : ILIAC_CONF) * (r.extrapolated ? ILIAC_EXTRAP : 1.0);
#undef POS
  return r;
}
