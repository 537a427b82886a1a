/*
 * DESIGN: fat-fraction maps from Dixon magnitudes (water + fat, or in-phase
 * + opposed-phase) or from a precomputed FF map.
 *
 * FF = F / (F + W); voxels with F + W below a "no signal" floor get NaN,
 * never 0. Voxel FF is NOT clipped to [0, 1]: corrected magnitudes may be
 * slightly negative, and clipping would bias region means near 0 and 1.
 *
 * Noise. Background = voxels of the summed image below the two-class Otsu
 * threshold of its log. Per image, sigma (per real/imaginary component) =
 * background median / sqrt(2 ln 2) (Rayleigh), refined below 4 sigma;
 * accepted only if the background looks Rayleigh (q25/q50 ~ 0.644,
 * q75/q50 ~ 1.414), is not masked (mostly exact zeros, as in many scanner
 * exports) and not coarsely quantised; else sigma = 0 ("unknown") and the
 * correction is skipped with a warning. Floor: noise_floor_factor x the
 * per-component sigma of the complex F + W, sqrt(sigma_W^2 + sigma_F^2), or
 * sigma_IP for IP/OP input (F + W = IP). Sigma unknown: factor / 3 x the
 * larger of 1 % of the 99th percentile of F + W and the 99th percentile of
 * the background class (if < 10 % of the former).
 *
 * Rician noise-bias correction (Liu et al., MRM 58:354, 2007: magnitude
 * noise inflates low fat fractions; a pure-water voxel's fat magnitude has
 * mean 1.2533 sigma, +4.3 pp of FF at SNR 20). M -> M - sigma c(t), with
 * t = mean(M_n^2) / sigma^2 - 2 the unbiased estimate of (A / sigma)^2 from
 * the K = 12 of the 48 other voxels of the in-plane 7 x 7 window closest in
 * the OTHER image: its noise is independent, so this selection is unbiased
 * and keeps fat planes, streaks and borders out; leaving the centre out
 * keeps M and c(t) independent. The plug-in c = b(sqrt(max(t, 0))),
 * b(A) = E[M | A] - A (Rice mean, scaled Bessel functions), is not enough:
 * A is hardly identifiable near 0 from magnitudes, and it leaves about
 * +0.8 pp at FF 0 and -0.5 pp at FF 3 % (SNR 20). So c is a table over t
 * from a regularised least-squares deconvolution E[c(t) | A] = b(A),
 * A = 0..7.5 sigma, with the exact law of t (scaled noncentral chi-square:
 * Poisson mixture of regularised incomplete gammas), a smoothness term, a
 * pull towards the plug-in (bounds the added noise) and extra weight near
 * A = 0. Residual bias of a corrected magnitude is within +-0.075 sigma for
 * every A, at the price of correction noise (sd up to 1.06 sigma near A = 0,
 * vanishing above 2 sigma). Computed once (src/dixon/rician_table.c).
 * At or above 16 sigma (bias <= 0.031 sigma) t comes from the voxel's own
 * magnitude, M^2 / sigma^2 - 2, with no window: it differs from the
 * window's estimate by about sigma / (2 a^2) <= 0.002 sigma (one sd), and
 * it halves the cost (in a body most voxels are bright in one image).
 * Measured on synthetic regions (tests/unit/test_dixon.c, SNR = muscle IP /
 * sigma): region FF (voxel mean and sum F / sum (F+W)) within 0.4 pp of the
 * truth at SNR 20 and 0.05 pp at SNR 50 for FF 0..60 %, uniform or streaky.
 * Limitation: a muscle touching tissue of another low FF with no fat
 * between (no contrast in the other image) mixes with it near the border:
 * +0.8 pp for a FF-0 region beside FF-5 % tissue at SNR 20.
 *
 * In-phase / opposed-phase. W = (IP + OP) / 2, F = (IP - OP) / 2 where
 * water dominates, swapped where fat dominates; which voxels are
 * fat-dominant: src/dixon/fatdom.c (its DESIGN comment).
 *
 * Plausibility (swap check): per axial slice (every second one of 12 or
 * more) the body = voxels with signal, 3 x 3 majority, largest component,
 * holes filled; the subcutaneous layer is its part 2..12 mm inside the
 * outline, away from the image border (the field of view may cut the
 * body). Its median FF must exceed 60 %. In-phase/opposed-phase: when the
 * layer behind the body's centroid reads as fat, the input is not taken as
 * exchanged and the warning names the front (a posterior coil leaves the
 * anterior fat dim; dixon-tum01 made in-phase/opposed-phase: 41 % in all,
 * 84 % behind).
 *
 * Files: the noise estimation, the bias correction and the FF fill are in
 * src/dixon/noise.c (its DESIGN comment: passes and kernels), the log
 * histogram of the background mask in src/dixon/loghist.c, the IP/OP fat
 * dominance in src/dixon/fatdom.c; this file builds the maps, the body
 * outline (shared with fatdom.c) and the plausibility check. Passes: the checks of the inputs ride
 * on the noise estimation's first pass; the floor's two percentiles share one pass; water/fat
 * without correction copy the magnitudes and fill the FF in one pass.
 *
 * Threads: parallel loops write disjoint outputs and per-slice sums added
 * in slice order: results do not depend on the thread count.
 */
#include "core/internal.h"
#include "dixon/fatdom.h"
#include "dixon/noise.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUBCUT_MIN_MM 2.0
#define SUBCUT_MAX_MM 12.0
#define SUBCUT_MIN_VOXELS 200
#define SUBCUT_FF_MIN 0.6
#define EXCHANGED_FF 0.3    /* below: the inputs are taken as exchanged (scans read 0.88-0.95) */
#define OP_BRIGHTER_MAX 0.5 /* IP/OP: opposed-phase the brighter in more voxels: exchanged */

struct psp_ffmap {
  psp_volume *ff, *water, *fat;
  /* a precomputed FF map given with a water image: that image and the fat
   * it implies, for the segmentation's image edges only (water, fat stay
   * NULL: nothing is measured from them) */
  psp_volume *edge_water, *edge_fat;
  double sigma, floor, fat_dominant_share;
  double op_brighter_share; /* in-phase/opposed-phase: share of the voxels with signal whose
                               opposed-phase exceeds the in-phase (0 for other inputs) */
  const char *source;
};

/* ------------------------------------------------------------------------ */
/* Map construction                                                          */
/* ------------------------------------------------------------------------ */

void psp_dixon_options_default(psp_dixon_options *o) {
  o->noise_bias_correction = true;
  o->noise_floor_factor = 3.0;
}

static bool check_pair(const psp_volume *a, const psp_volume *b, const char *na, const char *nb,
                       psp_error **err) {
  if (!a || !b) return psp_error_set(err, PSP_ERR_USAGE, "%s or %s image missing", na, nb);
  if (memcmp(a->dims, b->dims, sizeof a->dims) != 0)
    return psp_error_set(err, PSP_ERR_GEOMETRY,
                         "%s grid %lld x %lld x %lld differs from the %s grid %lld x %lld x %lld",
                         na, (long long)a->dims[0], (long long)a->dims[1], (long long)a->dims[2],
                         nb, (long long)b->dims[0], (long long)b->dims[1], (long long)b->dims[2]);
  return true; /* (non-finite values: found by psp_dixon_estimate_noise's first pass) */
}

static bool check_options(const psp_dixon_options *o, psp_error **err) {
  if (!(o->noise_floor_factor >= 0.0) || !isfinite(o->noise_floor_factor))
    return psp_error_set(err, PSP_ERR_USAGE,
                         "noise floor factor %g: use a finite value >= 0 (default 3)",
                         o->noise_floor_factor);
  return true;
}

static psp_ffmap *ffmap_new(const psp_volume *like, bool with_wf, const char *source,
                            psp_error **err) {
  psp_ffmap *m = psp_calloc(1, sizeof *m, err);
  if (!m) return NULL;
  m->source = source;
  m->ff = psp_volume_create_like(like, err);
  if (m->ff && with_wf) {
    m->water = psp_volume_create_like(like, err);
    if (m->water) m->fat = psp_volume_create_like(like, err);
  }
  if (!m->ff || (with_wf && !m->fat)) {
    psp_ffmap_free(m);
    return NULL;
  }
  return m;
}

/* 99th percentile from a 65536-bin histogram of s / smax (total voxels);
 * 0 when none. */
static double hist_p99(const int64_t *hist, int64_t total, double smax) {
  enum { NB = 65536 };
  int64_t cum = 0;
  for (int k = 0; k < NB && total > 0; k++) {
    cum += hist[k];
    if ((double)cum >= 0.99 * (double)total) return (k + 1) * smax / NB;
  }
  return 0.0;
}

/* Floor of F + W (= a (+ b)) when sigma is unknown: factor / 3 times the
 * larger of 1 % of its 99th percentile and the 99th percentile of the
 * background class (scanner backgrounds that are neither zero nor Rayleigh:
 * filtered or partly masked noise), the latter only when below 10 % of the
 * former. smax: the largest F + W. Both percentiles from one pass:
 * histograms of the voxels with a positive sum, and of those in bg; F + W
 * all integers (integer: up to PSP_DIXON_LUT_MAX): the bin of each value
 * once, by the same formula, when there are far fewer values than voxels. */
static bool data_floor(const float *a, const float *b, const uint8_t *bg, int64_t n, double factor,
                       double smax, bool integer, double *floor_out, psp_error **err) {
  enum { NB = 65536 };
  if (!(smax > 0))
    return psp_error_set(err, PSP_ERR_DATA, "the images are empty (no voxel has signal)");
  int64_t *h = psp_calloc(2 * NB, sizeof *h, err), total = 0, total_bg = 0;
  if (!h) return false;
  uint16_t *lut =
      integer && 8.0 * smax < (double)n ? malloc(((size_t)smax + 1) * sizeof *lut) : NULL;
  if (lut) {
    const int64_t top = (int64_t)smax;
#pragma omp parallel for schedule(static)
    for (int64_t v = 1; v <= top; v++) {
      int k = (int)((double)v / smax * NB);
      lut[v] = (uint16_t)(k < NB ? k : NB - 1);
    }
  }
  bool failed = false;
#pragma omp parallel reduction(+ : total, total_bg)
  {
    /* per-thread counts, added exactly */
    int64_t *loc = calloc(bg ? 2 * NB : NB, sizeof *loc);
#pragma omp for schedule(static) nowait
    for (int64_t i = 0; i < n; i++) {
      double s = (double)a[i] + (b ? (double)b[i] : 0.0);
      if (!loc || !(s > 0)) continue;
      int k;
      if (lut) {
        k = lut[(int64_t)s];
      } else {
        k = (int)(s / smax * NB);
        k = k < NB ? k : NB - 1;
      }
      loc[k]++;
      total++;
      if (bg && bg[i]) {
        loc[NB + k]++;
        total_bg++;
      }
    }
    psp_dixon_hist_merge(h, loc, bg ? 2 * NB : NB, &failed);
    free(loc);
  }
  free(lut);
  if (failed) {
    free(h);
    return psp_error_set(err, PSP_ERR_NOMEM, "out of memory");
  }
  double p99 = hist_p99(h, total, smax), level = 0.01 * p99;
  /* believed only when it is low: otherwise the "background" is dark tissue */
  double bg99 = bg ? hist_p99(h + NB, total_bg, smax) : 0.0;
  free(h);
  if (bg99 < 0.1 * p99) level = fmax(level, bg99);
  *floor_out = fmax(factor / 3.0 * level, FLT_MIN);
  return true;
}

/* FF = F / (F + W) where F + W >= floor, NaN elsewhere. */
static void fill_ff(psp_ffmap *m) {
  psp_dixon_fill_ff(m->water->data, m->fat->data, m->ff->data, psp_volume_voxel_count(m->ff),
                    m->floor, NULL, NULL);
}

/* Common part of the magnitude inputs: checks, map, noise, floor, and the
 * (corrected) magnitudes of a and b in m->water and m->fat. For IP/OP input
 * F + W = a. Water/fat without correction: the FF too, in the same pass
 * (*ff_done). */
static psp_ffmap *magnitude_map(const psp_volume *a, const psp_volume *b, bool ipop,
                                const psp_dixon_options *opt, psp_context *ctx, bool *ff_done,
                                psp_error **err) {
  *ff_done = false;
  psp_dixon_options def;
  if (!opt) {
    psp_dixon_options_default(&def);
    opt = &def;
  }
  if (!check_options(opt, err) ||
      !check_pair(a, b, ipop ? "in-phase" : "water", ipop ? "opposed-phase" : "fat", err))
    return NULL;
  psp_ffmap *m = ffmap_new(a, true, ipop ? "inphase+opposed-phase" : "water+fat", err);
  if (!m) return NULL;
  int64_t n = psp_volume_voxel_count(a);
  const float *fw2 = ipop ? NULL : b->data; /* second term of the raw F + W */
  double sig[2], fw_max = 0;
  bool fw_integer = false;
  uint8_t *bg = NULL;
  bool ok = psp_dixon_estimate_noise(a, b, ipop ? "in-phase/opposed-phase" : "water/fat",
                                     opt->noise_bias_correction, !ipop, ctx, sig, &bg, &fw_max,
                                     &fw_integer, err);
  if (ok && sig[0] > 0) {
    m->sigma = sqrt(0.5 * (sig[0] * sig[0] + sig[1] * sig[1]));
    double fw_sigma = ipop ? sig[0] : sqrt(sig[0] * sig[0] + sig[1] * sig[1]);
    m->floor = fmax(opt->noise_floor_factor * fw_sigma, FLT_MIN);
  } else if (ok) {
    ok = data_floor(a->data, fw2, bg, n, opt->noise_floor_factor, fw_max, fw_integer, &m->floor,
                    err);
  }
  free(bg);
  if (ok && sig[0] > 0 && opt->noise_bias_correction) {
    const double *tab = psp_dixon_rician_table;
    double skip = psp_dixon_skip_level(tab, m->floor, sig[0], ipop ? 0.0 : sig[1]);
    psp_dixon_rician_correct(a->data, b->data, m->water->data, a->dims, sig[0], tab, a->data, fw2,
                             skip);
    psp_dixon_rician_correct(b->data, a->data, m->fat->data, a->dims, sig[1], tab, a->data, fw2,
                             skip);
  } else if (ok && ipop) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
      m->water->data[i] = a->data[i];
      m->fat->data[i] = b->data[i];
    }
  } else if (ok) { /* the copies and the FF in one pass */
    psp_dixon_fill_ff(a->data, b->data, m->ff->data, n, m->floor, m->water->data, m->fat->data);
    *ff_done = true;
  }
  if (!ok) {
    psp_ffmap_free(m);
    return NULL;
  }
  return m;
}

psp_ffmap *psp_ffmap_from_water_fat(const psp_volume *water, const psp_volume *fat,
                                    const psp_dixon_options *opt, psp_context *ctx,
                                    psp_error **err) {
  bool ff_done;
  psp_ffmap *m = magnitude_map(water, fat, false, opt, ctx, &ff_done, err);
  if (!m) return NULL;
  if (!ff_done) fill_ff(m);
  psp_info(ctx, "fat fraction from water/fat: no-signal floor F+W < %.4g", m->floor);
  return m;
}

/* ------------------------------------------------------------------------ */
/* Body outline                                                              */
/* ------------------------------------------------------------------------ */

/* Body of one slice: largest 8-connected component of sig, holes filled.
 * lab/parent are scratch of plane size (+ 1). Returns the body size. */
static int64_t slice_body(const uint8_t *sig, uint8_t *body, int64_t nx, int64_t ny, int32_t *lab,
                          int32_t *parent) {
  memcpy(body, sig, (size_t)(nx * ny));
  if (psp_cc_keep_largest(body, nx, ny, true, lab, parent) == 0) return 0;
  psp_cc_fill_holes(body, nx, ny, lab, parent);
  int64_t n = 0;
  for (int64_t p = 0; p < nx * ny; p++)
    n += body[p];
  return n;
}

/* Body mask per axial slice: the voxels with signal, cleaned by a 3 x 3
 * majority (drops isolated noise voxels), largest 8-connected component,
 * holes filled. Slices whose body would be < 50 voxels stay empty, and so
 * do the slices k with k % step != 0 (not looked at). */
bool psp_dixon_body_mask(const uint8_t *sig, const int64_t d[3], int64_t step, uint8_t *body,
                         psp_error **err) {
  const int64_t nx = d[0], ny = d[1], nz = d[2], plane = nx * ny;
  bool failed = false;
#pragma omp parallel
  {
    uint8_t *clean = malloc((size_t)plane);
    uint8_t *rows = malloc((size_t)plane); /* horizontal 3-sums */
    int32_t *lab = malloc((size_t)plane * sizeof *lab);
    int32_t *parent = malloc((size_t)(plane + 1) * sizeof *parent);
    bool ok = clean && rows && lab && parent;
    if (!ok) {
#pragma omp critical(psp_dixon_fail)
      failed = true;
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t k = 0; k < nz; k++) {
      if (!ok) continue;
      const uint8_t *sg = sig + k * plane;
      uint8_t *bd = body + k * plane;
      if (k % step != 0) {
        memset(bd, 0, (size_t)plane);
        continue;
      }
      /* 3 x 3 majority (>= 5 of the 9, outside the image counts 0) as a
       * separable box sum: horizontal sums, then vertical */
      /* (edges apart: the inner loops vectorise) */
      for (int64_t j = 0; j < ny; j++) {
        const uint8_t *r = sg + j * nx;
        uint8_t *o = rows + j * nx;
        o[0] = (uint8_t)(r[0] + (nx > 1 ? r[1] : 0));
        for (int64_t i = 1; i < nx - 1; i++)
          o[i] = (uint8_t)(r[i - 1] + r[i] + r[i + 1]);
        if (nx > 1) o[nx - 1] = (uint8_t)(r[nx - 2] + r[nx - 1]);
      }
      for (int64_t j = 0; j < ny; j++) {
        const uint8_t *up = j > 0 ? rows + (j - 1) * nx : NULL;
        const uint8_t *mid = rows + j * nx;
        const uint8_t *dn = j + 1 < ny ? rows + (j + 1) * nx : NULL;
        uint8_t *c = clean + j * nx;
        if (up && dn) {
          for (int64_t i = 0; i < nx; i++)
            c[i] = (up[i] + mid[i] + dn[i]) >= 5;
        } else {
          for (int64_t i = 0; i < nx; i++)
            c[i] = (mid[i] + (up ? up[i] : 0) + (dn ? dn[i] : 0)) >= 5;
        }
      }
      if (slice_body(clean, bd, nx, ny, lab, parent) < 50) memset(bd, 0, (size_t)plane);
    }
    free(clean);
    free(rows);
    free(lab);
    free(parent);
  }
  if (failed) return psp_error_set(err, PSP_ERR_NOMEM, "out of memory finding the body outline");
  return true;
}

#define MIN2(a, b) ((b) < (a) ? (b) : (a))

/* Chamfer distance (mm) of body pixels to the nearest non-body pixel inside
 * the image; pixels outside the image are not counted as outside. Only the
 * body's bounding box plus one pixel (r = {i0, i1, j0, j1}, inside the
 * image) is visited and written: every body pixel and its in-image
 * neighbours lie there. */
static void slice_distance(const uint8_t *body, float *dist, int64_t nx, const int64_t r[4],
                           double sx, double sy) {
  const double dd = sqrt(sx * sx + sy * sy);
  for (int64_t j = r[2]; j <= r[3]; j++)
    for (int64_t i = r[0]; i <= r[1]; i++)
      dist[j * nx + i] = body[j * nx + i] ? FLT_MAX : 0.0f;
  /* forward pass: left, up, up-left, up-right; backward: the mirror. The
   * minimum does not depend on the order the neighbours are tried in. */
  for (int64_t j = r[2]; j <= r[3]; j++)
    for (int64_t i = r[0]; i <= r[1]; i++) {
      int64_t p = j * nx + i;
      if (!body[p]) continue;
      double best = dist[p];
      if (i > r[0]) best = MIN2(best, (double)dist[p - 1] + sx);
      if (j > r[2]) {
        best = MIN2(best, (double)dist[p - nx] + sy);
        if (i > r[0]) best = MIN2(best, (double)dist[p - nx - 1] + dd);
        if (i < r[1]) best = MIN2(best, (double)dist[p - nx + 1] + dd);
      }
      dist[p] = (float)best;
    }
  for (int64_t j = r[3]; j >= r[2]; j--)
    for (int64_t i = r[1]; i >= r[0]; i--) {
      int64_t p = j * nx + i;
      if (!body[p]) continue;
      double best = dist[p];
      if (i < r[1]) best = MIN2(best, (double)dist[p + 1] + sx);
      if (j < r[3]) {
        best = MIN2(best, (double)dist[p + nx] + sy);
        if (i < r[1]) best = MIN2(best, (double)dist[p + nx + 1] + dd);
        if (i > r[0]) best = MIN2(best, (double)dist[p + nx - 1] + dd);
      }
      dist[p] = (float)best;
    }
}

/* The outer layer of the body: body voxels 2..12 mm inside the outline of
 * their slice, away from the image border (the field of view may cut the
 * body there); slices without an outline (body filling the image) skipped. */
bool psp_dixon_outer_layer(const uint8_t *body, const int64_t d[3], const double sp[3],
                           uint8_t *band, psp_error **err) {
  const int64_t nx = d[0], ny = d[1], nz = d[2], plane = nx * ny;
  memset(band, 0, (size_t)(plane * nz));
  bool failed = false;
#pragma omp parallel
  {
    float *dist = malloc((size_t)plane * sizeof *dist);
    if (!dist) {
#pragma omp critical(psp_dixon_fail)
      failed = true;
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t k = 0; k < nz; k++) {
      if (!dist) continue;
      const uint8_t *bd = body + k * plane;
      int64_t box[4], nb = 0;
      if (!psp_mask_box(bd, nx, ny, box)) continue;
      for (int64_t j = box[2]; j <= box[3]; j++)
        for (int64_t i = box[0]; i <= box[1]; i++)
          nb += bd[j * nx + i];
      if (nb > plane * 97 / 100) continue;
      const int64_t r[4] = {box[0] > 0 ? box[0] - 1 : 0, box[1] + 1 < nx ? box[1] + 1 : nx - 1,
                            box[2] > 0 ? box[2] - 1 : 0, box[3] + 1 < ny ? box[3] + 1 : ny - 1};
      slice_distance(bd, dist, nx, r, sp[0], sp[1]);
      /* away from the image border: columns and rows more than
       * SUBCUT_MAX_MM from both edges */
      for (int64_t j = box[2]; j <= box[3]; j++) {
        if (!(fmin((double)j * sp[1], (double)(ny - 1 - j) * sp[1]) > SUBCUT_MAX_MM)) continue;
        for (int64_t i = box[0]; i <= box[1]; i++) {
          int64_t p = j * nx + i;
          band[k * plane + p] =
              bd[p] && dist[p] > SUBCUT_MIN_MM && dist[p] <= SUBCUT_MAX_MM &&
              fmin((double)i * sp[0], (double)(nx - 1 - i) * sp[0]) > SUBCUT_MAX_MM;
        }
      }
    }
    free(dist);
  }
  if (failed) return psp_error_set(err, PSP_ERR_NOMEM, "out of memory finding the outer layer");
  return true;
}

psp_ffmap *psp_ffmap_from_ipop(const psp_volume *inphase, const psp_volume *outphase,
                               const psp_dixon_options *opt, psp_context *ctx, psp_error **err) {
  bool ff_done;
  psp_ffmap *m = magnitude_map(inphase, outphase, true, opt, ctx, &ff_done, err);
  if (!m) return NULL;
  int64_t n = psp_volume_voxel_count(inphase);
  /* the corrected IP / OP sit in the water / fat buffers until combined */
  float *ip = m->water->data, *op = m->fat->data;
  uint8_t *fatdom = psp_malloc((size_t)n, err);
  if (!fatdom ||
      !psp_dixon_fat_dominance(inphase, ip, op, m->floor, fatdom, &m->fat_dominant_share, err)) {
    free(fatdom);
    psp_ffmap_free(m);
    return NULL;
  }
  /* |W - F| <= W + F: the opposed-phase image is never the brighter but
   * for noise; in most voxels it is when the two were exchanged */
  int64_t n_sig = 0, n_op = 0;
  const float floor2 = 2.0f * (float)m->floor;
#pragma omp parallel for schedule(static) reduction(+ : n_sig, n_op)
  for (int64_t i = 0; i < n; i++) {
    bool s = ip[i] + op[i] > floor2;
    n_sig += s;
    n_op += s & (op[i] > ip[i]);
    float a = 0.5f * (ip[i] + op[i]), b = 0.5f * (ip[i] - op[i]);
    ip[i] = fatdom[i] ? b : a; /* water */
    op[i] = fatdom[i] ? a : b; /* fat */
  }
  m->op_brighter_share = n_sig > 0 ? (double)n_op / (double)n_sig : NAN;
  free(fatdom);
  fill_ff(m);
  psp_info(ctx,
           "fat fraction from in-phase/opposed-phase: %.1f %% of the voxels with signal read as "
           "fat-dominant; no-signal floor %.4g",
           100.0 * m->fat_dominant_share, m->floor);
  return m;
}

/* ------------------------------------------------------------------------ */
/* Precomputed FF maps                                                       */
/* ------------------------------------------------------------------------ */

psp_ffmap *psp_ffmap_from_ff(const psp_volume *ff, psp_ff_unit unit, psp_context *ctx,
                             psp_error **err) {
  if (!ff) {
    psp_error_set(err, PSP_ERR_USAGE, "fat-fraction map missing");
    return NULL;
  }
  if (unit != PSP_FF_FRACTION && unit != PSP_FF_PERCENT) {
    psp_error_set(err, PSP_ERR_USAGE, "unknown fat-fraction unit %d", (int)unit);
    return NULL;
  }
  int64_t n = psp_volume_voxel_count(ff);
  /* robust range: 1st and 99th percentiles of the non-zero values (a zero
   * background would hide the unit); NaN = no signal, kept */
  double amax = 0;
  int64_t nz = 0;
  for (int64_t i = 0; i < n; i++) {
    if (isinf(ff->data[i])) {
      psp_error_set(err, PSP_ERR_DATA, "fat-fraction map contains infinite values");
      return NULL;
    }
    if (ff->data[i] != 0 && !isnan(ff->data[i])) {
      nz++;
      amax = fmax(amax, fabs(ff->data[i]));
    }
  }
  double p01 = 0, p99 = 0;
  if (nz > 0) {
    float *vals = psp_malloc((size_t)nz * sizeof *vals, err);
    if (!vals) return NULL;
    int64_t c = 0;
    for (int64_t i = 0; i < n; i++)
      if (ff->data[i] != 0 && !isnan(ff->data[i])) vals[c++] = ff->data[i];
    psp_sort_floats(vals, (size_t)nz);
    p01 = psp_quantile_sorted(vals, (size_t)nz, 0.01);
    p99 = psp_quantile_sorted(vals, (size_t)nz, 0.99);
    free(vals);
  }
  const bool pct = unit == PSP_FF_PERCENT;
  const char *uname = pct ? "percent (0..100)" : "a fraction (0..1)";
  if (pct ? (nz > 0 && p99 <= 1.5) : p99 > 1.5) {
    psp_error_set(err, PSP_ERR_DATA,
                  "the fat-fraction map was given as %s but its largest values are %.4g (99th "
                  "percentile %.4g): it looks like %s; state the unit as %s",
                  uname, amax, p99, pct ? "a fraction (0..1)" : "percent (0..100)",
                  pct ? "a fraction" : "percent");
    return NULL;
  }
  double scale = pct ? 0.01 : 1.0;
  if (p99 * scale > 1.5 || p01 * scale < -0.5) {
    psp_error_set(err, PSP_ERR_DATA,
                  "the fat-fraction map (given as %s) has values from %.4g to %.4g (1st-99th "
                  "percentile), outside any plausible fat-fraction range",
                  uname, p01, p99);
    return NULL;
  }
  psp_ffmap *m = ffmap_new(ff, false, "ff-map", err);
  if (!m) return NULL;
  for (int64_t i = 0; i < n; i++)
    m->ff->data[i] = (float)(ff->data[i] * scale);
  psp_info(ctx, "fat-fraction map used as given (%s)", uname);
  return m;
}

psp_ffmap *psp_ffmap_adopt(const psp_ffmap *like, psp_volume *ff, psp_volume *water,
                           psp_volume *fat, psp_error **err) {
  psp_ffmap *m = psp_calloc(1, sizeof *m, err);
  if (!m) {
    psp_volume_free(ff);
    psp_volume_free(water);
    psp_volume_free(fat);
    return NULL;
  }
  *m = *like;
  m->ff = ff;
  m->water = water; /* (the magnitudes given, for edges only too) */
  m->fat = fat;
  m->edge_water = m->edge_fat = NULL;
  return m;
}

void psp_ffmap_free(psp_ffmap *m) {
  if (!m) return;
  psp_volume_free(m->ff);
  psp_volume_free(m->water);
  psp_volume_free(m->fat);
  psp_volume_free(m->edge_water);
  psp_volume_free(m->edge_fat);
  free(m);
}

void psp_ffmap_release_magnitudes(psp_ffmap *m) {
  psp_volume_free(m->water);
  psp_volume_free(m->fat);
  psp_volume_free(m->edge_water);
  psp_volume_free(m->edge_fat);
  m->water = m->fat = m->edge_water = m->edge_fat = NULL;
}

/* The fat magnitude a water magnitude W and a fat fraction FF imply: F = W
 * FF / (1 - FF), FF limited to 0 .. EDGE_FF_MAX (pure fat has W near 0 and
 * F undetermined); 0 where the map has no signal. Bone (dark in both) and
 * fat (bright) come out as in measured magnitudes, which is what the
 * segmentation's image edges need. */
#define EDGE_FF_MAX 0.98
bool psp_ffmap_add_water(psp_ffmap *m, const psp_volume *water, psp_error **err) {
  if (strcmp(m->source, "ff-map") != 0 || !water)
    return psp_error_set(err, PSP_ERR_USAGE,
                         "a water image goes with a precomputed fat-fraction map only");
  if (memcmp(water->dims, m->ff->dims, sizeof water->dims) != 0)
    return psp_error_set(err, PSP_ERR_GEOMETRY,
                         "water image grid %lld x %lld x %lld differs from the fat-fraction map's "
                         "%lld x %lld x %lld",
                         (long long)water->dims[0], (long long)water->dims[1],
                         (long long)water->dims[2], (long long)m->ff->dims[0],
                         (long long)m->ff->dims[1], (long long)m->ff->dims[2]);
  psp_volume *w = psp_volume_create_like(m->ff, err);
  psp_volume *f = w ? psp_volume_create_like(m->ff, err) : NULL;
  if (!f) {
    psp_volume_free(w);
    return false;
  }
  const int64_t n = psp_volume_voxel_count(m->ff);
  const float *ff = m->ff->data, *wd = water->data;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) {
    float x = ff[i], y = wd[i];
    if (x != x || y != y) { /* NaN: no signal */
      x = 0.0f;
      y = 0.0f;
    }
    y = y < 0.0f ? 0.0f : y;
    x = x < 0.0f ? 0.0f : x > (float)EDGE_FF_MAX ? (float)EDGE_FF_MAX : x;
    w->data[i] = y;
    f->data[i] = y * x / (1.0f - x);
  }
  psp_volume_free(m->edge_water);
  psp_volume_free(m->edge_fat);
  m->edge_water = w;
  m->edge_fat = f;
  return true;
}

const psp_volume *psp_ffmap_ff(const psp_ffmap *m) {
  return m->ff;
}
const psp_volume *psp_ffmap_water(const psp_ffmap *m) {
  return m->water;
}
const psp_volume *psp_ffmap_edge_water(const psp_ffmap *m) {
  return m->water ? m->water : m->edge_water;
}
const psp_volume *psp_ffmap_edge_fat(const psp_ffmap *m) {
  return m->water ? m->fat : m->edge_fat;
}
const psp_volume *psp_ffmap_fat(const psp_ffmap *m) {
  return m->fat;
}
double psp_ffmap_noise_sigma(const psp_ffmap *m) {
  return m->sigma;
}
double psp_ffmap_signal_floor(const psp_ffmap *m) {
  return m->floor;
}
const char *psp_ffmap_source(const psp_ffmap *m) {
  return m->source;
}
double psp_ffmap_fat_dominant_share(const psp_ffmap *m) {
  return m->fat_dominant_share;
}

/* ------------------------------------------------------------------------ */
/* Plausibility: subcutaneous fat                                            */
/* ------------------------------------------------------------------------ */

/* The median FF of the outer layer's voxels (sig) behind the body's
 * centroid row on each slice with a body (body[] per slice); vals: scratch
 * of n floats. NaN when there are fewer than SUBCUT_MIN_VOXELS. */
static double back_layer_median(const psp_volume *v, const uint8_t *body, const uint8_t *sig,
                                float *vals) {
  const int64_t nx = v->dims[0], ny = v->dims[1], nz = v->dims[2], plane = nx * ny;
  size_t c = 0;
  for (int64_t k = 0; k < nz; k++) {
    const uint8_t *b = body + k * plane, *g = sig + k * plane;
    const float *f = v->data + k * plane;
    double sj = 0, nb = 0;
    for (int64_t j = 0; j < ny; j++)
      for (int64_t i = 0; i < nx; i++)
        if (b[j * nx + i]) {
          sj += (double)j;
          nb += 1;
        }
    if (nb == 0) continue;
    const double jc = sj / nb;
    for (int64_t j = 0; j < ny; j++)
      for (int64_t i = 0; i < nx; i++)
        if (g[j * nx + i] && (double)j > jc && !isnan(f[j * nx + i])) vals[c++] = f[j * nx + i];
  }
  return c >= SUBCUT_MIN_VOXELS ? psp_quantile_select(vals, c, 0.5) : NAN;
}

psp_plausibility psp_ffmap_plausibility(const psp_ffmap *m, psp_context *ctx) {
  psp_plausibility r;
  memset(&r, 0, sizeof r);
  r.subcut_ff_median = NAN;
  const psp_volume *v = m->ff;
  const int64_t n = psp_volume_voxel_count(v);
  double sp[3];
  psp_volume_spacing(v, sp);
  uint8_t *sig = malloc((size_t)n), *body = malloc((size_t)n);
  float *vals = malloc((size_t)n * sizeof *vals);
  int64_t nv = 0;
  /* signal: FF defined (for a precomputed map also != 0: masked background) */
  const bool ffmap_input = m->water == NULL;
  const bool ipop_input = strcmp(m->source, "inphase+opposed-phase") == 0;
  const int64_t plane = v->dims[0] * v->dims[1], nz = v->dims[2];
  int64_t *start = calloc((size_t)nz + 1, sizeof *start);
  if (m->op_brighter_share > OP_BRIGHTER_MAX) {
    /* in-phase/opposed-phase exchanged: told by the two images themselves,
     * with or without a subcutaneous layer in view */
    r.checked = true;
    r.exchanged = true;
    snprintf(r.message, sizeof r.message,
             "the opposed-phase image is the brighter in %.0f %% of the voxels with signal (it "
             "can be so only by noise): in-phase and opposed-phase look exchanged",
             100.0 * m->op_brighter_share);
    psp_warn(ctx, "%s", r.message);
    goto done;
  }
  if (sig) {
    const float *vd = v->data; /* (hoisted: sig could alias v) */
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) { /* (branch-free: vectorises) */
      const float x = vd[i];
      sig[i] = (uint8_t)(x == x) & (uint8_t)(!ffmap_input | (x != 0));
    }
  }
  /* every second slice of 12 or more: the median rests on thousands of
   * voxels either way, at half the cost (body outline and distance map:
   * 0.07 -> 0.05 s on a 400 x 400 x 29 scan at one thread) */
  const int64_t step = nz >= 12 ? 2 : 1;
  if (!sig || !body || !vals || !start || !psp_dixon_body_mask(sig, v->dims, step, body, NULL) ||
      !psp_dixon_outer_layer(body, v->dims, sp, sig, NULL)) {
    snprintf(r.message, sizeof r.message, "subcutaneous fat check skipped: out of memory");
    goto done;
  }
  /* gather the layer's FF slice by slice (the order does not matter: sorted) */
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < nz; k++) {
    int64_t c = 0;
    for (int64_t i = k * plane; i < (k + 1) * plane; i++)
      c += sig[i] & (v->data[i] == v->data[i]); /* (x == x: not NaN) */
    start[k + 1] = c;
  }
  for (int64_t k = 0; k < nz; k++)
    start[k + 1] += start[k];
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < nz; k++) {
    int64_t o = start[k];
    for (int64_t i = k * plane; i < (k + 1) * plane; i++)
      if (sig[i] && !isnan(v->data[i])) vals[o++] = v->data[i];
  }
  nv = start[nz];
  r.subcut_voxels = nv;
  if (nv < SUBCUT_MIN_VOXELS) {
    snprintf(r.message, sizeof r.message,
             "subcutaneous fat check skipped: only %lld voxels found in the outer layer of the "
             "body",
             (long long)nv);
    psp_info(ctx, "%s", r.message);
    goto done;
  }
  /* the layer behind the body's centre (rows past the slice's body
   * centroid; the internal grid's j points backwards), gathered after
   * vals has been used (for IP/OP input only) */
  double back_median = NAN;
  r.subcut_ff_median = psp_quantile_select(vals, (size_t)nv, 0.5);
  if (ipop_input) back_median = back_layer_median(v, body, sig, vals);
  r.checked = true;
  r.ok = r.subcut_ff_median > SUBCUT_FF_MIN;
  r.exchanged = r.subcut_ff_median < EXCHANGED_FF;
  /* in-phase/opposed-phase: a coil behind the patient leaves the fat in
   * front dim, and the intensity field may not follow it there
   * (dixon-tum01 made in-phase/opposed-phase: the anterior abdominal fat
   * read as water-dominant, the layer's median 41 %); the back, where the
   * muscles lie, reading as fat tells such input from exchanged images */
  const bool back_ok = back_median > SUBCUT_FF_MIN; /* false for NaN */
  if (back_ok) r.exchanged = false;
  if (r.ok) {
    snprintf(r.message, sizeof r.message,
             "subcutaneous fat FF median %.1f %% (plausible: above %.0f %%)",
             100.0 * r.subcut_ff_median, 100.0 * SUBCUT_FF_MIN);
    psp_info(ctx, "%s", r.message);
  } else {
    const char *why = "water and fat look swapped";
    char back[160];
    if (ipop_input && back_ok) {
      snprintf(back, sizeof back,
               "fat-dominant tissue was not recognised in front of the body (behind its centre, "
               "where the muscles lie, the fat reads %.0f %%)",
               100.0 * back_median);
      why = back;
    } else if (ipop_input)
      why = "fat-dominant tissue was not recognised (or in-phase and opposed-phase are swapped)";
    else if (ffmap_input)
      why = "the map looks like a water fraction, not a fat fraction";
    snprintf(r.message, sizeof r.message,
             "subcutaneous fat FF median %.1f %% (expected above %.0f %%): %s",
             100.0 * r.subcut_ff_median, 100.0 * SUBCUT_FF_MIN, why);
    psp_warn(ctx, "%s", r.message);
  }
done:
  free(sig);
  free(body);
  free(vals);
  free(start);
  return r;
}
