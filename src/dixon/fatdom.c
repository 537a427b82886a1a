/*
 * DESIGN: in-phase/opposed-phase magnitudes: which voxels are fat-dominant
 * (src/dixon/dixon.c builds the FF map from them). Magnitudes alone cannot
 * tell FF from 1 - FF: W = (IP + OP) / 2, F = (IP - OP) / 2 where
 * water dominates, swapped where fat dominates. Fat is the brightest tissue
 * on IP (short T1, high proton density). Inside the body outline, "pure"
 * voxels (water-dominant reading FF_w <= 0.2) are classified on z = log IP
 * minus a smooth 3-D quadratic bias field, fitted first to the outer layer
 * of the body (one tissue, mostly subcutaneous fat), then class-adaptively
 * (EM-like, cf. Wells et al., IEEE TMI 1996): log IP = field + offset of the
 * voxel's tissue class, robustly over all pure tissue. Classes = modes of
 * the histogram of z (split at valleys below 85 % of the smaller peak, each
 * >= 3 % of the voxels); z is smoothed by a 3 x 3 sigma filter (Lee 1983;
 * keeps thin fat planes). Fat = the brightest class; isolated pure voxels
 * flip. The voxels that are not pure are the hard part: tissue with a true
 * FF of 50-80 % (fatty muscle, streaks, marrow, partial volume at fat
 * borders) read as water-dominant gives 100 % - FF (below). When no
 * second class is found, once more with the field started from the
 * brighter half of the outer layer on each slice (band_bright_half):
 * dixon-tum01 made in-phase/opposed-phase (IP = W + F, OP = |W - F|) has a
 * dim rim inside the body's outline (a reconstruction that masked the
 * background), half its outer layer, and was refused (0 % fat-dominant);
 * so 31 %, all 29 slices segmented, all-muscle Dice 0.88, the FF inside the
 * manual labels within 0.5 pp of water/fat's. ipop-chaos11 and the sample
 * phantoms find two classes the first time (unchanged; the brighter half
 * always: phantom03 0.831 -> 0.772).
 * A voxel that is not pure (partial volume at a fat border) is
 * fat-dominant where at least DOM_RIM_NEIGH = 4 of its 8 in-plane
 * neighbours are pure fat-class voxels and its log IP less the field
 * reaches the fat class (a muscle/fat mix is fat-dominant from about the
 * harmonic mean of their IPs, near the valley between the classes); else
 * such voxels read 1 - FF, close to muscle, and the erector spinae grew
 * across the fat planes. Automatic segmentation from the sample phantoms'
 * IP/OP: all-muscle Dice 0.868 / 0.859 / 0.831 -> 0.882 / 0.866 / 0.843,
 * erector FF +4.3 / +3.1 / +3.9 -> +2.6 / +2.0 / +2.4 pp (left; right
 * alike); dixon-tum01 as IP/OP 0.881 -> 0.882; ipop-chaos11 26 of 26
 * slices, its erector areas within -4..+2 %, multifidus -14..+19 % per
 * slice (QC looked at). With one such neighbour instead: 0.898 / 0.871 /
 * 0.857, but the FF inside a phantom's true labels (muscles with 45 %
 * streaks, tests/integration/test_phantom_accuracy.sh) +1.1..+1.7 pp
 * (mixed voxels below half fat taken as fat); three: +0.8 pp; four:
 * within 0.63 pp, as before (0.68).
 * That rule now only decides where the in-phase signal cannot: a mixed
 * voxel takes the reading (FF_w or 1 - FF_w) whose in-phase signal, as a
 * harmonic mix of the pure water-dominant (the class just below the fat)
 * and fat voxels in a square of half-width DOM_LEVEL_MM (rounded to whole
 * voxels, at least one) lies nearer its own (mix_reading);
 * undecided when the two predictions lie within DOM_SEP_SD noise sd, and
 * fat-dominant only DOM_MARGIN_SD sd beyond their midpoint. dixon-tum01
 * as IP/OP (fat 2.4 x as bright as muscle on IP): inside the manual labels
 * 2.4 % of the voxels read above 50 % FF (water/fat: 2.3 %; 0.4 % before),
 * the 3-voxel ring around them -10.0 -> -4.7 pp; all-muscle Dice 0.917 ->
 * 0.928, erector FF +3.2 / +4.0 -> +0.3 / +1.5 pp, multifidus +2.8 / +2.4
 * -> +2.4 / +1.3 pp. The sample phantoms' IP/OP (fat 1.2 x muscle: few
 * voxels decided) 0.888 / 0.870 / 0.850 -> 0.896 / 0.871 / 0.866.
 * The windows' sums come from per-slice summed-area tables (48 bytes per
 * in-plane voxel and thread): the IP/OP FF map of dixon-tum01 takes 1.12 s
 * at 2 threads (1.18 s with the neighbour rule alone), of it split 2 x 2
 * (0.51 mm) 3.93 s (4.12 s); direct window sums took 4.86 s there.
 * ipop-chaos11: 26 of 26 slices, multifidus left/right per slice median
 * 1.14 -> 1.13 (worst 1.41 -> 1.36), more of its fat planes read as fat
 * (QC). Without the margin a uniform 30 % FF muscle beside lean tissue at
 * SNR 20 read +2.9 pp (test_phantom_accuracy); with every pure
 * water-dominant voxel as the level (bone, ligament) +4 pp.
 * The field is smooth (quadratic along the stack); where a slice's fat
 * level departs from it by more than DOM_LEVEL_TOL (log IP), the slice gets
 * its own offset, measured where its neighbours' fat is (slice_fat_levels).
 * dixon-tum01 as IP/OP: the fat's IP halves over the lowest four slices
 * (muscle's falls by a third), its subcutaneous fat read as muscle on
 * slices 0-2 and the erector spinae was placed in it: all-muscle 0.882 ->
 * 0.914, erector 0.840 / 0.820 -> 0.898 / 0.895, FF +9.2 / +10.8 -> +3.3 /
 * +4.1 pp, multifidus 0.830 / 0.782 -> 0.855 / 0.842; muscle-slices below
 * 0.70 13 -> 4. The phantoms' levels are within 0.01 of the field (their
 * output byte-identical), ipop-chaos11's within 0.03 (55 voxels of its FF
 * map change, its labels none). Without the tolerance phantom03 0.843 ->
 * 0.842.
 *
 * Threads: parallel loops write disjoint outputs; per-slice sums are added
 * in slice order: results do not depend on the thread count.
 */
#include "dixon/fatdom.h"
#include "dixon/noise.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* fat dominance (in-phase / opposed-phase) */
#define DOM_PURE_FFW 0.2 /* "pure" tissue: water-dominant reading FF_w <= this */
#define DOM_SMOOTH_R 1   /* sigma filter radius (in-plane voxels) */
#define DOM_RIM_NEIGH 4  /* of 8 neighbours pure fat: a mixed voxel may be fat-dominant */
#define DOM_LEVEL_MM                                                                               \
  5.0 /* a mixed voxel's tissues: the pure voxels in a square of this half-width (whole voxels) */
#define DOM_SEP_SD 2.0 /* its two readings' in-phase signals: at least this many noise sd apart */
#define DOM_MARGIN_SD 1.0  /* fat-dominant: this many noise sd beyond the two signals' midpoint */
#define DOM_LEVEL_MIN 200  /* fat voxels a slice's own fat level needs */
#define DOM_LEVEL_TOL 0.03 /* log IP: a slice's fat level within this of the field's is left */

/* ------------------------------------------------------------------------ */
/* In-phase / opposed-phase: fat dominance                                   */
/* ------------------------------------------------------------------------ */

#define NPOLY 10 /* 1, x, y, z, x^2, y^2, z^2, xy, xz, yz */
#define NLIN 4   /* the linear part */

static void poly_basis(double x, double y, double z, double *phi) {
  phi[0] = 1;
  phi[1] = x;
  phi[2] = y;
  phi[3] = z;
  phi[4] = x * x;
  phi[5] = y * y;
  phi[6] = z * z;
  phi[7] = x * y;
  phi[8] = x * z;
  phi[9] = y * z;
}

typedef struct grid_norm {
  double c[3], h[3];
} grid_norm;

/* Normalised coordinates (i - c) / h along axis ax for i = 0..n-1 (the
 * basis of voxel i, j, k: poly_basis(x[i], y[j], (k - c) / h)). */
static double *axis_coords(const grid_norm *gn, int ax, int64_t n, psp_error **err) {
  double *x = psp_malloc((size_t)(n > 0 ? n : 1) * sizeof *x, err);
  for (int64_t i = 0; x && i < n; i++)
    x[i] = ((double)i - gn->c[ax]) / gn->h[ax];
  return x;
}

static double poly_eval(const double *coef, const double *phi) {
  double b = 0;
  for (int p = 0; p < NPOLY; p++)
    b += coef[p] * phi[p];
  return b;
}

#define MAXC 8                  /* tissue classes of the bias fit */
#define NUNK (NPOLY + MAXC - 1) /* unknowns: field + class offsets */

/* Robust least-squares fit of y over the voxels with cls[v] in 1..nc by
 * the first np basis functions plus an offset per class (class 1 is the
 * reference): a plain fit, then two refits without the voxels whose residual
 * exceeds 3 sd (sd from the mean absolute residual). Every 4th voxel
 * in-plane is used; per-slice sums are added in slice order. coef gets the
 * field only. Of the class indicators (1 for the voxel's class, 0 for the
 * others) only the voxel's own adds anything: the others' terms are +-0,
 * which leave every sum unchanged (up to the sign of a zero residual, of
 * which only |r| is used), so they are skipped; the normal matrix is
 * symmetric (the same products added in the same order): its upper half
 * is accumulated. */
static bool fit_field(const float *y, const uint8_t *cls, int nc, const int64_t d[3],
                      const grid_norm *gn, int np, double coef[NPOLY], psp_error **err) {
  const int64_t nx = d[0], ny = d[1], nz = d[2];
  const int nu = np + nc - 1;
  enum { STRIDE = NUNK * NUNK + NUNK + 3 };
  double *acc = psp_malloc((size_t)nz * STRIDE * sizeof *acc, err);
  double *xs = acc ? axis_coords(gn, 0, nx, err) : NULL;
  double *ys = xs ? axis_coords(gn, 1, ny, err) : NULL;
  if (!ys) {
    free(acc);
    free(xs);
    return false;
  }
  double sol[NUNK] = {0};
  double cut = INFINITY;
  for (int round = 0; round < 3; round++) {
    for (int pass = 0; pass < 2; pass++) { /* 0: normal equations, 1: residual sd */
      const double cut_r = cut;
      const double *cf = sol;
#pragma omp parallel for schedule(static)
      for (int64_t k = 0; k < nz; k++) {
        double *a = acc + k * STRIDE;
        memset(a, 0, STRIDE * sizeof *a);
        double phi[NUNK];
        const double zk = ((double)k - gn->c[2]) / gn->h[2];
        for (int64_t j = 0; j < ny; j += 2)
          for (int64_t i = 0; i < nx; i += 2) {
            int64_t v = psp_idx(d, i, j, k);
            const int cv = cls[v];
            if (!cv) continue;
            poly_basis(xs[i], ys[j], zk, phi);
            const int ci = cv >= 2 && cv <= nc ? np + cv - 2 : -1; /* the indicator that is 1 */
            const double yv = y[v];
            double r = yv;
            for (int p = 0; p < np; p++)
              r -= cf[p] * phi[p];
            if (ci >= 0) r -= cf[ci];
            if (round > 0 && fabs(r) > cut_r) continue;
            a[NUNK * NUNK + NUNK] += 1;
            a[NUNK * NUNK + NUNK + 1] += fabs(r);
            if (pass == 1) continue;
            for (int p = 0; p < np; p++) {
              for (int q = p; q < np; q++)
                a[p * NUNK + q] += phi[p] * phi[q];
              a[NUNK * NUNK + p] += phi[p] * yv;
            }
            if (ci >= 0) {
              for (int p = 0; p < np; p++)
                a[p * NUNK + ci] += phi[p];
              a[ci * NUNK + ci] += 1.0;
              a[NUNK * NUNK + ci] += yv;
            }
          }
      }
      double mat[NUNK * NUNK] = {0}, rhs[NUNK] = {0}, cnt = 0, sabs = 0;
      for (int64_t k = 0; k < nz; k++) {
        const double *a = acc + k * STRIDE;
        for (int p = 0; p < nu; p++) {
          for (int q = 0; q < nu; q++)
            mat[p * nu + q] += a[p <= q ? p * NUNK + q : q * NUNK + p];
          rhs[p] += a[NUNK * NUNK + p];
        }
        cnt += a[NUNK * NUNK + NUNK];
        sabs += a[NUNK * NUNK + NUNK + 1];
      }
      if (cnt < 5 * nu) goto out;
      if (pass == 1) {
        cut = 3.0 * 1.2533 * sabs / cnt; /* 3 sd of the fit just made */
        continue;
      }
      double tr = 0;
      for (int p = 0; p < nu; p++)
        tr += mat[p * nu + p];
      for (int p = 0; p < nu; p++)
        mat[p * nu + p] += 1e-9 * tr + 1e-12;
      if (!psp_dixon_cholesky_solve(mat, rhs, nu)) goto out;
      memcpy(sol, rhs, (size_t)nu * sizeof *sol);
    }
  }
out:
  free(acc);
  free(xs);
  free(ys);
  memset(coef, 0, NPOLY * sizeof *coef);
  memcpy(coef, sol, (size_t)np * sizeof *coef);
  return true;
}

/* The outer layer (cid, nplane voxels per slice, nz slices) cut to its
 * brighter half of y on each slice: where the layer is not one tissue, as
 * on a reconstruction that masked the background and left a dim rim inside
 * the body's outline (dixon-tum01 made in-phase/opposed-phase: half the
 * layer 4-10 x darker than the fat), its fat is still the brighter half.
 * buf: scratch of nplane floats. Updates *nband; false when nothing is left. */
static bool band_bright_half(const float *y, uint8_t *cid, int64_t nplane, int64_t nz, float *buf,
                             int64_t *nband) {
  *nband = 0;
  for (int64_t k = 0; k < nz; k++) {
    uint8_t *c = cid + k * nplane;
    const float *yk = y + k * nplane;
    size_t m = 0;
    for (int64_t q = 0; q < nplane; q++)
      if (c[q]) buf[m++] = yk[q];
    if (m == 0) continue;
    double med = psp_quantile_select(buf, m, 0.5);
    for (int64_t q = 0; q < nplane; q++) {
      c[q] = c[q] && yk[q] >= med;
      *nband += c[q];
    }
  }
  return *nband > 0;
}

/* Class thresholds of the finite values v[i] from their smoothed histogram:
 * valleys between neighbouring peaks (>= 5 % of the highest) that are deeper
 * than `depth` x the smaller of the two groups' peaks; a class above the top
 * or between thresholds must hold >= 3 % of the values, else it merges.
 * Writes ascending thresholds to thr (at most MAXC - 1), returns how many. */
static int histogram_classes(const float *v, int64_t n, double depth, double *thr) {
  enum { NF = 4096, NB = 256 };
  double lo = INFINITY, hi = -INFINITY;
  int64_t cnt = 0;
  for (int64_t i = 0; i < n; i++)
    if (isfinite(v[i])) { /* (as fmin/fmax: no NaN here; the sign of a zero changes nothing) */
      const double x = v[i];
      lo = x < lo ? x : lo;
      hi = x > hi ? x : hi;
      cnt++;
    }
  if (!(hi > lo) || cnt < 100) return 0;
  /* robust range: 0.5 and 99.5 percentiles */
  int64_t fine[NF] = {0};
  for (int64_t i = 0; i < n; i++)
    if (isfinite(v[i])) {
      int b = (int)((v[i] - lo) / (hi - lo) * NF);
      fine[b < NF ? b : NF - 1]++;
    }
  double r0 = lo, r1 = hi;
  int64_t cum = 0;
  bool got = false;
  for (int b = 0; b < NF; b++) {
    cum += fine[b];
    if (!got && (double)cum >= 0.005 * (double)cnt) {
      r0 = lo + (hi - lo) * b / NF;
      got = true;
    }
    if ((double)cum >= 0.995 * (double)cnt) {
      r1 = lo + (hi - lo) * (b + 1) / NF;
      break;
    }
  }
  if (!(r1 > r0)) return 0;
  double h[NB] = {0}, hs[NB], hmax = 0, total = 0;
  for (int64_t i = 0; i < n; i++)
    if (isfinite(v[i]) && v[i] >= r0 && v[i] < r1) h[(int)((v[i] - r0) / (r1 - r0) * NB) % NB] += 1;
  for (int b = 0; b < NB; b++) { /* Gaussian smoothing, sd 2 bins */
    double s = 0, w = 0;
    for (int q = -6; q <= 6; q++) {
      if (b + q < 0 || b + q >= NB) continue;
      s += exp(-0.125 * q * q) * h[b + q];
      w += exp(-0.125 * q * q);
    }
    hs[b] = s / w;
    hmax = fmax(hmax, hs[b]);
    total += h[b];
  }
  int peaks[NB], np = 0, vb[NB], nv = 0;
  for (int b = 0; b < NB; b++) {
    double left = b > 0 ? hs[b - 1] : -1, right = b < NB - 1 ? hs[b + 1] : -1;
    if (hs[b] >= left && hs[b] > right && hs[b] >= 0.05 * hmax) peaks[np++] = b;
  }
  /* from the top down: a group of merged peaks splits from the next lower
   * peak at a deep enough valley */
  double group_max = np ? hs[peaks[np - 1]] : 0;
  for (int p = np - 2; p >= 0; p--) {
    int m = peaks[p];
    for (int b = peaks[p]; b <= peaks[p + 1]; b++)
      if (hs[b] < hs[m]) m = b;
    if (hs[m] < depth * fmin(group_max, hs[peaks[p]])) {
      vb[nv++] = m; /* descending */
      group_max = hs[peaks[p]];
    } else {
      group_max = fmax(group_max, hs[peaks[p]]);
    }
  }
  /* classes with too little mass merge downwards (from the top) */
  int nt = 0;
  double upper_edge = NB;
  for (int t = 0; t < nv; t++) {
    double mass = 0;
    for (int b = vb[t]; b < (int)upper_edge; b++)
      mass += h[b];
    if (mass < 0.03 * total) continue;
    upper_edge = vb[t];
    if (nt < MAXC - 1) thr[nt++] = r0 + (r1 - r0) * (vb[t] + 0.5) / NB;
  }
  for (int a = 0; a < nt / 2; a++) { /* ascending */
    double t = thr[a];
    thr[a] = thr[nt - 1 - a];
    thr[nt - 1 - a] = t;
  }
  return nt;
}

/* Robust noise sd of z over pure voxels from horizontally adjacent pairs:
 * 1.4826 median |difference| / sqrt(2). scratch holds n floats. */
static double noise_sd_pairs(const float *z, const uint8_t *pure, const int64_t d[3],
                             float *scratch) {
  const int64_t nx = d[0], n = d[0] * d[1] * d[2];
  int64_t m = 0;
  for (int64_t v = 0; v + 1 < n; v += 3) /* a third of the pairs is plenty */
    if ((v + 1) % nx != 0 && pure[v] && pure[v + 1]) scratch[m++] = fabsf(z[v + 1] - z[v]);
  if (m < 10) return INFINITY;
  psp_sort_floats(scratch, (size_t)m);
  return 1.4826 * psp_quantile_sorted(scratch, (size_t)m, 0.5) / sqrt(2.0);
}

/* Per-slice fat level (in-phase / opposed-phase): the smooth field is a
 * quadratic along the stack, but the signal can fall faster than that at
 * the stack's ends (a 3-D slab's excitation profile; dixon-tum01 made
 * in-phase/opposed-phase: the fat's IP halves over its lowest four slices,
 * the muscle's falls by a third), and there fat read as the class below
 * it (slices 0-1 segmented with the subcutaneous fat read as muscle).
 * off[k] = the median log IP less the field, on slice k, at the places
 * that are fat (pure fat class, and so are their four in-plane neighbours)
 * on slices k - 1..k + 1 in the last round's classes, less the median of
 * these over the slices; fat read as another class on a slice still sits
 * where its neighbours' fat is (the subcutaneous layer changes little from
 * slice to slice), so the level follows it round by round. A slice with
 * fewer than DOM_LEVEL_MIN such places keeps 0. zr[v] -= off[k] for the
 * pure voxels. scratch: n floats. */
static bool slice_fat_levels(float *zr, const uint8_t *pure, const uint8_t *cid, int top,
                             const int64_t d[3], float *scratch, double *off, psp_error **err) {
  const int64_t nx = d[0], ny = d[1], nz = d[2], np = nx * ny;
  double *lev = psp_malloc((size_t)nz * sizeof *lev, err);
  float *all = lev ? psp_malloc((size_t)nz * sizeof *all, err) : NULL;
  if (!all) {
    free(lev);
    return false;
  }
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < nz; k++) {
    lev[k] = NAN;
    float *buf = scratch + k * np;
    size_t m = 0;
    for (int64_t j = 1; j + 1 < ny; j++)
      for (int64_t i = 1; i + 1 < nx; i++) {
        int64_t q = j * nx + i, v = k * np + q;
        if (!pure[v]) continue;
        bool fat = false;
        for (int64_t kk = k - 1; kk <= k + 1 && !fat; kk++) {
          if (kk < 0 || kk >= nz) continue;
          const uint8_t *c = cid + kk * np + q;
          fat = c[0] == top && c[-1] == top && c[1] == top && c[-nx] == top && c[nx] == top;
        }
        if (fat) buf[m++] = zr[v];
      }
    if (m >= DOM_LEVEL_MIN) lev[k] = psp_quantile_select(buf, m, 0.5);
  }
  /* the reference: the median of the slices' levels */
  size_t na = 0;
  double ref = 0;
  for (int64_t k = 0; k < nz; k++) {
    double l = lev[k];
    off[k] = l;
    if (isfinite(l)) all[na++] = (float)l;
  }
  if (na > 0) ref = psp_quantile_select(all, na, 0.5);
  for (int64_t k = 0; k < nz; k++) {
    double o = isfinite(off[k]) ? off[k] - ref : 0.0;
    off[k] = copysign(fmax(fabs(o) - DOM_LEVEL_TOL, 0.0), o);
  }
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < nz; k++)
    for (int64_t q = 0; q < np; q++)
      if (pure[k * np + q]) zr[k * np + q] -= (float)off[k];
  free(lev);
  free(all);
  return true;
}

/* The classes of the pure voxels (cid: 0 none, 1.. ascending log IP) by
 * six rounds of the class-adaptive field and the histogram's modes, the
 * field started from the voxels cid marks (band_start; else from all pure
 * voxels with a linear field). zr, zs: scratch of n floats. Returns the
 * number of thresholds written to thr (classes - 1), -1 on error. */
static int em_classes(const float *y, const uint8_t *pure, uint8_t *cid, float *zr, float *zs,
                      const int64_t d[3], const grid_norm *gn, const double *xs, const double *ys,
                      double sz, bool band_start, double *thr, double coef[NPOLY], double *off,
                      psp_error **err) {
  const int64_t nx = d[0], ny = d[1], nz = d[2], n = nx * ny * nz;
  int nthr = 0;
  memset(off, 0, (size_t)nz * sizeof *off);
  for (int iter = 0; iter < 6; iter++) {
    /* class-adaptive field (EM-like): log IP = field + offset of the
     * voxel's tissue class, over all pure tissue, with the classes of the
     * previous round */
    int np = (iter == 0 && !band_start) ? NLIN : NPOLY;
    if (!fit_field(y, cid, nthr + 1, d, gn, np, coef, err)) return -1;
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < nz; k++) {
      double phi[NPOLY];
      const double zk = ((double)k - gn->c[2]) / gn->h[2];
      for (int64_t j = 0; j < ny; j++)
        for (int64_t i = 0; i < nx; i++) {
          int64_t v = psp_idx(d, i, j, k);
          if (!pure[v]) continue;
          poly_basis(xs[i], ys[j], zk, phi);
          zr[v] = (float)(y[v] - poly_eval(coef, phi));
        }
    }
    /* the slices' own fat levels (zs is scratch until the filter below) */
    if (nthr > 0 && !slice_fat_levels(zr, pure, cid, nthr + 1, d, zs, off, err)) {
      return -1;
    }
    /* sigma filter (Lee 1983): 3 x 3 in-plane mean over the pure voxels
     * within 2.5 noise sd of the centre, so thin fat planes stay intact */
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < nz; k++) {
      for (int64_t j = 0; j < ny; j++)
        for (int64_t i = 0; i < nx; i++) {
          int64_t v = psp_idx(d, i, j, k);
          zs[v] = NAN;
          if (!pure[v]) continue;
          double s = 0;
          int c = 0;
          for (int64_t jj = j - DOM_SMOOTH_R; jj <= j + DOM_SMOOTH_R; jj++)
            for (int64_t ii = i - DOM_SMOOTH_R; ii <= i + DOM_SMOOTH_R; ii++) {
              if (ii < 0 || jj < 0 || ii >= nx || jj >= ny) continue;
              int64_t u = psp_idx(d, ii, jj, k);
              if (!pure[u] || !(fabsf(zr[u] - zr[v]) <= sz)) continue;
              s += zr[u];
              c++;
            }
          zs[v] = (float)(s / c);
        }
    }
    nthr = histogram_classes(zs, n, 0.85, thr);
    for (int64_t v = 0; v < n; v++) {
      int c = 1;
      for (int t = 0; t < nthr; t++)
        c += zs[v] >= thr[t];
      cid[v] = pure[v] ? (uint8_t)c : 0;
    }
  }
  return nthr;
}

/* The pure voxels around a mixed one: sums of log IP less the field (z)
 * and of FF, and counts, of the water-dominant [0] and the fat [1] class. */
typedef struct mix_levels {
  double z[2], ff[2];
  int n[2];
} mix_levels;

/* Which reading of a voxel that is not pure fits its in-phase signal: 1
 * fat-dominant (1 - ffw), 0 water-dominant (ffw), -1 undecided. A mix of
 * the two tissues around it (signal fractions; their FF a and c, in-phase
 * signals I_a and I_c) with FF f has the in-phase signal
 * (c - a) / ((c - f) / I_a + (f - a) / I_c): the tissue volumes add, and
 * each tissue's FF weighs its signal, so fat-dominant voxels are brighter
 * (a harmonic, not a linear, mix). dixon-tum01's water + fat as IP, its
 * voxels with 0.2 < FF < 0.8 and both tissues within 3 voxels: the nearer
 * prediction is right for 86 / 45 / 85 / 95 % of those with FF 0.20-0.35 /
 * 0.35-0.50 / 0.50-0.65 / 0.65-0.80 (near 0.5 both readings are alike),
 * while the neighbour rule alone reads every one of them water-dominant.
 * Undecided without both tissues, when the fat is not the brighter, or
 * when the two predictions lie within DOM_SEP_SD noise sd (sd, of log IP)
 * of each other; fat-dominant only DOM_MARGIN_SD sd beyond their midpoint
 * (one wrong voxel in a fatty muscle costs 0.2-0.6 of FF, and every voxel
 * of a muscle above DOM_PURE_FFW decides). */
static int mix_reading(const mix_levels *L, double ffw, double z, double sd) {
  if (L->n[0] == 0 || L->n[1] == 0 || !isfinite(z)) return -1;
  double za = L->z[0] / L->n[0], zc = L->z[1] / L->n[1];
  double a = L->ff[0] / L->n[0], c = L->ff[1] / L->n[1];
  if (!(zc > za) || !(c > a)) return -1;
  double ia = exp(za), ic = exp(zc), pred[2];
  for (int r = 0; r < 2; r++) {
    double f = fmin(fmax(r ? 1.0 - ffw : ffw, a), c);
    pred[r] = log(c - a) - log((c - f) / ia + (f - a) / ic);
  }
  if (!(fabs(pred[1] - pred[0]) >= DOM_SEP_SD * sd)) return -1;
  double beyond = (z - 0.5 * (pred[0] + pred[1])) * (pred[1] > pred[0] ? 1.0 : -1.0);
  return beyond >= DOM_MARGIN_SD * sd ? 1 : 0;
}

/* Summed-area tables of slice k (6 x (nx + 1) x (ny + 1) in tab): for the
 * water-dominant pure voxels of the class just below the fat (nthr: darker
 * ones, bone or ligament, would make a fatty muscle look bright) and the
 * pure fat voxels, the sums of z and FF and the counts, in that order. */
static void mix_tables(const float *ip, const float *op, const float *zs, const uint8_t *pure,
                       const uint8_t *cls, const uint8_t *cid, int nthr, const int64_t d[3],
                       int64_t k, double *tab) {
  const int64_t nx = d[0], ny = d[1], tw = nx + 1, tn = tw * (ny + 1);
  for (int t = 0; t < 6; t++)
    memset(tab + t * tn, 0, (size_t)tw * sizeof *tab); /* the first row */
  for (int64_t j = 0; j < ny; j++) {
    double row[6] = {0};
    for (int t = 0; t < 6; t++)
      tab[t * tn + (j + 1) * tw] = 0.0; /* the first column */
    for (int64_t i = 0; i < nx; i++) {
      int64_t u = psp_idx(d, i, j, k);
      if (pure[u] && (cls[u] || cid[u] == nthr)) {
        double fw = ((double)ip[u] - (double)op[u]) / (2.0 * (double)ip[u]);
        int c = cls[u] ? 3 : 0;
        row[c] += zs[u];
        row[c + 1] += c ? 1.0 - fw : fw;
        row[c + 2] += 1.0;
      }
      for (int t = 0; t < 6; t++)
        tab[t * tn + (j + 1) * tw + i + 1] = tab[t * tn + j * tw + i + 1] + row[t];
    }
  }
}

/* Decides fat dominance per voxel (see fatdom.h); *share = fat-dominant /
 * signal voxels. */
bool psp_dixon_fat_dominance(const psp_volume *ipv, const float *ip, const float *op,
                             double floor_v, uint8_t *fatdom, double *share, psp_error **err) {
  const int64_t *d = ipv->dims;
  const int64_t nx = d[0], ny = d[1], nz = d[2], n = nx * ny * nz;
  uint8_t *pure = psp_calloc((size_t)n, 1, err);
  uint8_t *cid = psp_calloc((size_t)n, 1, err);
  uint8_t *cls = psp_calloc((size_t)n, 1, err);
  float *y = psp_malloc((size_t)n * sizeof *y, err);
  float *zr = psp_malloc((size_t)n * sizeof *zr, err);
  float *zs = psp_malloc((size_t)n * sizeof *zs, err);
  int64_t *cnt = psp_calloc((size_t)nz, sizeof *cnt, err);
  double *off = psp_calloc((size_t)nz, sizeof *off, err); /* per-slice fat level */
  double *xs = NULL, *ys = NULL; /* normalised coordinates of the columns, rows */
  bool ok = pure && cid && cls && y && zr && zs && cnt && off;
  *share = 0.0;
  if (!ok) goto done;
  memset(fatdom, 0, (size_t)n);
  /* only voxels inside the body outline take part (no background noise) */
  for (int64_t v = 0; v < n; v++)
    cid[v] = ip[v] >= floor_v;
  double sp[3];
  psp_volume_spacing(ipv, sp);
  if (!psp_dixon_body_mask(cid, d, 1, pure, err) || !psp_dixon_outer_layer(pure, d, sp, cls, err)) {
    ok = false;
    goto done;
  }
  int64_t lo[3] = {nx, ny, nz}, hi[3] = {-1, -1, -1}, nsig = 0;
  for (int64_t k = 0; k < nz; k++)
    for (int64_t j = 0; j < ny; j++)
      for (int64_t i = 0; i < nx; i++) {
        int64_t v = psp_idx(d, i, j, k);
        y[v] = NAN;
        bool in_body = pure[v];
        pure[v] = 0;
        if (!(ip[v] >= floor_v)) continue;
        nsig++;
        if (!in_body) continue;
        const int64_t c[3] = {i, j, k};
        for (int a = 0; a < 3; a++) {
          if (c[a] < lo[a]) lo[a] = c[a];
          if (c[a] > hi[a]) hi[a] = c[a];
        }
        double ffw = ((double)ip[v] - (double)op[v]) / (2.0 * (double)ip[v]);
        if (ffw <= DOM_PURE_FFW) {
          pure[v] = 1;
          y[v] = (float)log((double)ip[v]);
        }
      }
  if (nsig == 0) goto done;
  grid_norm gn;
  for (int a = 0; a < 3; a++) {
    gn.c[a] = 0.5 * (double)(lo[a] + hi[a]);
    gn.h[a] = fmax(0.5 * (double)(hi[a] - lo[a]), 1.0);
  }
  xs = axis_coords(&gn, 0, nx, err);
  ys = xs ? axis_coords(&gn, 1, ny, err) : NULL;
  if (!ys) {
    ok = false;
    goto done;
  }
  double thr[MAXC - 1], coef[NPOLY];
  int nthr = 0;
  /* noise sd of log IP (the smooth field hardly changes pair differences) */
  const double sz = 2.5 * noise_sd_pairs(y, pure, d, zs);
  /* start: one class, the outer layer of the body (mostly subcutaneous
   * fat, whatever it holds it is one tissue), or if too small all pure
   * tissue with a linear field (a quadratic would take the fat ring for a
   * bias) */
  for (int attempt = 0; attempt < 2; attempt++) {
    int64_t nband = 0;
    for (int64_t v = 0; v < n; v++)
      nband += cid[v] = pure[v] && cls[v];
    if (attempt == 1 && !band_bright_half(y, cid, nx * ny, nz, zs, &nband)) break;
    bool band_start = nband >= 50 * NPOLY;
    if (!band_start) memcpy(cid, pure, (size_t)n);
    nthr = em_classes(y, pure, cid, zr, zs, d, &gn, xs, ys, sz, band_start, thr, coef, off, err);
    if (nthr < 0) {
      ok = false;
      goto done;
    }
    /* no second class from the whole outer layer: once more from the
     * brighter half of it on each slice (see band_bright_half) */
    if (nthr > 0 || !band_start) break;
  }
  /* fat = the brightest class (there must be another one) */
  bool have_fat = nthr > 0;
  for (int64_t v = 0; v < n; v++)
    cls[v] = have_fat && cid[v] == nthr + 1;
  /* fat-dominant = in the fat class (cls[]; other voxels read as water).
   * Isolated pure voxels flip: none (of >= 3) or one (of >= 5) of their
   * in-plane neighbours with signal shares their class. */
  if (!have_fat) goto done;
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < nz; k++) {
    for (int64_t j = 0; j < ny; j++)
      for (int64_t i = 0; i < nx; i++) {
        int64_t v = psp_idx(d, i, j, k);
        if (!pure[v]) continue;
        int same = 0, tot = 0;
        for (int64_t jj = j - 1; jj <= j + 1; jj++)
          for (int64_t ii = i - 1; ii <= i + 1; ii++) {
            if (ii < 0 || jj < 0 || ii >= nx || jj >= ny || (ii == i && jj == j)) continue;
            int64_t u = psp_idx(d, ii, jj, k);
            if (!(ip[u] >= floor_v)) continue;
            tot++;
            same += cls[u] == cls[v];
          }
        bool isolated = (tot >= 3 && same == 0) || (tot >= 5 && same == 1);
        fatdom[v] = isolated ? !cls[v] : cls[v];
        cnt[k] += fatdom[v];
      }
  }
  /* a voxel that is not pure (FF_w above DOM_PURE_FFW: partial volume at a
   * fat border, a fatty streak) takes the reading, FF_w or 1 - FF_w, whose
   * in-phase signal a mix of its neighbourhood's two tissues predicts
   * nearer its own (see mix_reading); where the neighbourhood lacks a
   * tissue or the two readings' signals lie within DOM_SEP_SD noise sd,
   * it is fat-dominant where at least DOM_RIM_NEIGH of its 8 in-plane
   * neighbours are pure fat-class voxels and its log IP less the field
   * reaches the fat class (a mix of muscle and fat is fat-dominant from
   * about the harmonic mean of their IPs, near the valley between the
   * two classes). zs: log IP less the field of every voxel with signal. */
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < nz; k++) {
    double phi[NPOLY];
    const double zk = ((double)k - gn.c[2]) / gn.h[2];
    for (int64_t j = 0; j < ny; j++)
      for (int64_t i = 0; i < nx; i++) {
        int64_t v = psp_idx(d, i, j, k);
        zs[v] = NAN;
        if (!(ip[v] >= floor_v)) continue;
        poly_basis(xs[i], ys[j], zk, phi);
        zs[v] = (float)(log((double)ip[v]) - poly_eval(coef, phi) - off[k]);
      }
  }
  const int64_t rx = lround(DOM_LEVEL_MM / sp[0]) > 1 ? lround(DOM_LEVEL_MM / sp[0]) : 1;
  const int64_t ry = lround(DOM_LEVEL_MM / sp[1]) > 1 ? lround(DOM_LEVEL_MM / sp[1]) : 1;
  const double sd = sz / 2.5; /* noise sd of log IP */
  /* per slice, summed-area tables of the two classes' pure voxels (sum of
   * z, sum of FF, count): every window's sums in four lookups */
  const int64_t tw = nx + 1, tn = tw * (ny + 1);
  bool oom = false;
#pragma omp parallel
  {
    double *tab = NULL; /* allocated on the thread's first slice */
    bool failed = false;
#pragma omp for schedule(static)
    for (int64_t k = 0; k < nz; k++) {
      if (!tab && !failed) {
        tab = malloc((size_t)(6 * tn) * sizeof *tab);
        failed = tab == NULL;
        if (failed) {
#pragma omp atomic write
          oom = true;
        }
      }
      if (!tab) continue;
      double phi[NPOLY];
      const double zk = ((double)k - gn.c[2]) / gn.h[2];
      mix_tables(ip, op, zs, pure, cls, cid, nthr, d, k, tab);
      for (int64_t j = 0; j < ny; j++)
        for (int64_t i = 0; i < nx; i++) {
          int64_t v = psp_idx(d, i, j, k);
          if (pure[v] || !(ip[v] >= floor_v)) continue;
          /* the pure voxels around: each class's mean log IP and FF */
          const int64_t x0 = i - rx > 0 ? i - rx : 0, x1 = i + rx < nx - 1 ? i + rx + 1 : nx;
          const int64_t y0 = j - ry > 0 ? j - ry : 0, y1 = j + ry < ny - 1 ? j + ry + 1 : ny;
          double w[6];
          for (int t = 0; t < 6; t++) {
            const double *q = tab + t * tn;
            w[t] = q[y1 * tw + x1] - q[y0 * tw + x1] - q[y1 * tw + x0] + q[y0 * tw + x0];
          }
          mix_levels L = {{w[0], w[3]}, {w[1], w[4]}, {(int)lround(w[2]), (int)lround(w[5])}};
          int n8 = 0;
          for (int64_t jj = j - 1; jj <= j + 1; jj++)
            for (int64_t ii = i - 1; ii <= i + 1; ii++)
              if (ii >= 0 && jj >= 0 && ii < nx && jj < ny) {
                int64_t u = psp_idx(d, ii, jj, k);
                n8 += pure[u] && cls[u];
              }
          double ffw = ((double)ip[v] - (double)op[v]) / (2.0 * (double)ip[v]);
          int r = mix_reading(&L, ffw, zs[v], sd);
          bool fd = r == 1;
          if (r < 0 && n8 >= DOM_RIM_NEIGH) {
            /* the neighbour rule, on log IP less the field in double */
            poly_basis(xs[i], ys[j], zk, phi);
            fd = log((double)ip[v]) - poly_eval(coef, phi) - off[k] >= thr[nthr - 1];
          }
          if (fd) {
            fatdom[v] = 1;
            cnt[k]++;
          }
        }
    }
    free(tab);
  }
  if (oom) {
    ok = psp_error_set(err, PSP_ERR_NOMEM, "out of memory resolving fat dominance");
    goto done;
  }
  int64_t nfat = 0;
  for (int64_t k = 0; k < nz; k++)
    nfat += cnt[k];
  *share = (double)nfat / (double)nsig;
done:
  free(pure);
  free(cid);
  free(cls);
  free(y);
  free(zr);
  free(zs);
  free(cnt);
  free(off);
  free(xs);
  free(ys);
  return ok;
}
