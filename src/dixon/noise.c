/*
 * DESIGN: noise of Dixon magnitudes, for the FF-map stage
 * (src/dixon/dixon.c, whose DESIGN comment states the method: background =
 * Otsu class of log(a + b), Rayleigh sigma from its quartiles with the
 * checks listed there), and the FF fill. The Rician bias correction is in
 * src/dixon/correct.c.
 *
 * Passes over the images (the FF-map stage is memory- and pass-bound):
 * one scan (non-finite values, extremes of a + b, negative and non-integer
 * values of both images), the log histogram (src/dixon/loghist.c: no log
 * per voxel), the background pass (mask, zeros and largest background
 * value of both images), then the quartile
 * histograms of both images together (all background; below 4 sigma: a
 * second pass, or for integer images the first histogram's bins). Integer
 * sums (e.g. uint16 images) are binned through a table of their values,
 * computed by the same formula. With non-finite values the results of the
 * scan other than their count may differ between kernels: they are an
 * error then.
 *
 * Speed: AVX2 kernels (src/dixon/simd.h, chosen at run time) for the plain
 * passes, portable code elsewhere, the same results (unit tests compare
 * both).
 *
 * Deterministic: the histograms are per-thread integer counts added
 * exactly, min/max reductions, slices written by one thread each.
 */
#include "dixon/noise.h"
#include "dixon/simd.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Otsu threshold of a histogram h[nb] over [lo, hi); returns the value. */
static double otsu_hist(const int64_t *h, int nb, double lo, double hi) {
  double total = 0, sum = 0;
  for (int b = 0; b < nb; b++) {
    total += (double)h[b];
    sum += (double)h[b] * b;
  }
  double w0 = 0, s0 = 0, best = -1;
  int bt = nb / 2;
  for (int b = 0; b < nb - 1; b++) {
    w0 += (double)h[b];
    s0 += (double)h[b] * b;
    double w1 = total - w0;
    if (w0 <= 0 || w1 <= 0) continue;
    double m0 = s0 / w0, m1 = (sum - s0) / w1;
    double between = w0 * w1 * (m0 - m1) * (m0 - m1);
    if (between > best) {
      best = between;
      bt = b;
    }
  }
  return lo + (hi - lo) * (bt + 1) / nb;
}

/* ------------------------------------------------------------------------ */
/* Noise estimation                                                          */
/* ------------------------------------------------------------------------ */

/* Adds one thread's histogram (loc; NULL: its allocation failed) into h;
 * called by every thread of a parallel region. Integer counts: the sum does
 * not depend on the order the threads arrive in. */
void psp_dixon_hist_merge(int64_t *h, const int64_t *loc, int nb, bool *failed) {
#pragma omp critical(psp_dixon_hist)
  {
    if (!loc) *failed = true;
    for (int k = 0; loc && k < nb; k++)
      h[k] += loc[k];
  }
}

/* One image's statistics for its noise estimate. */
typedef struct chan_stats {
  int64_t negative, fractional; /* over all voxels */
  int64_t zeros;                /* background voxels that are exactly 0 */
  double vmax;                  /* largest background value, at least 0 */
} chan_stats;

/* Sums of one pass over the images (per thread, then combined: integer
 * counts and min/max, the same at any thread count). */
typedef struct pass_acc {
  int64_t bad, cnt[2][2]; /* scan: negatives, non-integers; mask: bg, zeros per image */
  double lo, hi, vmax[2]; /* scan: extremes of s > 0, largest a; mask: largest bg values */
} pass_acc;

#define PASS_BLOCK 65536 /* voxels per block (the AVX2 lane counters stay small) */

static void pass_acc_init(pass_acc *r) {
  memset(r, 0, sizeof *r);
  r->lo = INFINITY;
  r->hi = -INFINITY;
}

static void pass_acc_add(pass_acc *r, const pass_acc *t) {
#pragma omp critical(psp_dixon_pass)
  {
    r->bad += t->bad;
    for (int c = 0; c < 2; c++) {
      r->cnt[c][0] += t->cnt[c][0];
      r->cnt[c][1] += t->cnt[c][1];
      r->vmax[c] = t->vmax[c] > r->vmax[c] ? t->vmax[c] : r->vmax[c];
    }
    r->lo = t->lo < r->lo ? t->lo : r->lo;
    r->hi = t->hi > r->hi ? t->hi : r->hi;
  }
}

/* v is not an integer (finite v; floats from 2^23 up all are) */
static inline int not_integral(float v) {
  return fabsf(v) < 0x1p23f && (float)(int32_t)v != v;
}

/* First pass, voxels i0..i1-1: non-finite voxels, the extremes of
 * s = a + b over s > 0, the largest a (at least 0), negative and
 * non-integral values per image. */
static void scan_block_generic(const float *a, const float *b, int64_t i0, int64_t i1,
                               pass_acc *r) {
  for (int64_t i = i0; i < i1; i++) {
    const float x = a[i], y = b[i];
    r->bad += !isfinite(x) || !isfinite(y);
    const double s = (double)x + (double)y;
    if (s > 0) {
      r->lo = s < r->lo ? s : r->lo;
      r->hi = s > r->hi ? s : r->hi;
    }
    r->vmax[0] = x > r->vmax[0] ? x : r->vmax[0];
    r->cnt[0][0] += x < 0;
    r->cnt[1][0] += y < 0;
    r->cnt[0][1] += not_integral(x);
    r->cnt[1][1] += not_integral(y);
  }
}

/* Background pass, voxels i0..i1-1: bg = a + b < thr; per image the zeros
 * and the largest value (at least 0) in it. */
static void mask_block_generic(const float *a, const float *b, int64_t i0, int64_t i1, double thr,
                               uint8_t *bg, pass_acc *r) {
  for (int64_t i = i0; i < i1; i++) {
    const float x = a[i], y = b[i];
    const uint8_t in = ((double)x + (double)y) < thr;
    bg[i] = in;
    r->bad += in; /* (the count of background voxels) */
    if (in) {
      r->cnt[0][0] += x == 0;
      r->cnt[1][0] += y == 0;
      r->vmax[0] = x > r->vmax[0] ? x : r->vmax[0];
      r->vmax[1] = y > r->vmax[1] ? y : r->vmax[1];
    }
  }
}

#ifdef PSP_AVX2_KERNEL
PSP_TARGET_AVX2 static inline int64_t hsum_epi32(__m256i v) {
  int32_t t[8];
  _mm256_storeu_si256((__m256i *)t, v);
  int64_t s = 0;
  for (int k = 0; k < 8; k++)
    s += t[k];
  return s;
}

/* the largest of the lanes' float bits as a value (bits of floats >= 0
 * order like the values; negative floats are negative int32: below 0) */
PSP_TARGET_AVX2 static inline double hmax_bits(__m256i v) {
  int32_t t[8], m = 0;
  _mm256_storeu_si256((__m256i *)t, v);
  for (int k = 0; k < 8; k++)
    m = t[k] > m ? t[k] : m;
  float f;
  memcpy(&f, &m, sizeof f);
  return f;
}

PSP_TARGET_AVX2 static inline __m256d half_pd(__m256 x, int h) {
  return _mm256_cvtps_pd(h ? _mm256_extractf128_ps(x, 1) : _mm256_castps256_ps128(x));
}

PSP_TARGET_AVX2 static void scan_block_avx2(const float *a, const float *b, int64_t i0, int64_t i1,
                                            pass_acc *r) {
  const __m256i expm = _mm256_set1_epi32(0x7f800000);
  const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)),
               big = _mm256_set1_ps(0x1p23f), zero = _mm256_setzero_ps();
  const __m256d zd = _mm256_setzero_pd(), pinf = _mm256_set1_pd(INFINITY),
                ninf = _mm256_set1_pd(-INFINITY);
  __m256i nbad = _mm256_setzero_si256(), n0 = nbad, n1 = nbad, f0 = nbad, f1 = nbad, am = nbad;
  __m256d lo = pinf, hi = ninf;
  int64_t i = i0;
  for (; i + 8 <= i1; i += 8) {
    const __m256 x = _mm256_loadu_ps(a + i), y = _mm256_loadu_ps(b + i);
    const __m256i xi = _mm256_castps_si256(x), yi = _mm256_castps_si256(y);
    nbad = _mm256_sub_epi32(nbad,
                            _mm256_or_si256(_mm256_cmpeq_epi32(_mm256_and_si256(xi, expm), expm),
                                            _mm256_cmpeq_epi32(_mm256_and_si256(yi, expm), expm)));
    n0 = _mm256_sub_epi32(n0, _mm256_castps_si256(_mm256_cmp_ps(x, zero, _CMP_LT_OQ)));
    n1 = _mm256_sub_epi32(n1, _mm256_castps_si256(_mm256_cmp_ps(y, zero, _CMP_LT_OQ)));
    const __m256 fx =
        _mm256_and_ps(_mm256_cmp_ps(_mm256_and_ps(x, absm), big, _CMP_LT_OQ),
                      _mm256_cmp_ps(_mm256_cvtepi32_ps(_mm256_cvttps_epi32(x)), x, _CMP_NEQ_UQ));
    const __m256 fy =
        _mm256_and_ps(_mm256_cmp_ps(_mm256_and_ps(y, absm), big, _CMP_LT_OQ),
                      _mm256_cmp_ps(_mm256_cvtepi32_ps(_mm256_cvttps_epi32(y)), y, _CMP_NEQ_UQ));
    f0 = _mm256_sub_epi32(f0, _mm256_castps_si256(fx));
    f1 = _mm256_sub_epi32(f1, _mm256_castps_si256(fy));
    am = _mm256_max_epi32(am, xi);
    for (int h = 0; h < 2; h++) {
      const __m256d s = _mm256_add_pd(half_pd(x, h), half_pd(y, h));
      const __m256d pos = _mm256_cmp_pd(s, zd, _CMP_GT_OQ);
      lo = _mm256_min_pd(_mm256_blendv_pd(pinf, s, pos), lo);
      hi = _mm256_max_pd(_mm256_blendv_pd(ninf, s, pos), hi);
    }
  }
  r->bad += hsum_epi32(nbad);
  r->cnt[0][0] += hsum_epi32(n0);
  r->cnt[1][0] += hsum_epi32(n1);
  r->cnt[0][1] += hsum_epi32(f0);
  r->cnt[1][1] += hsum_epi32(f1);
  const double m = hmax_bits(am);
  r->vmax[0] = m > r->vmax[0] ? m : r->vmax[0];
  double t[4];
  _mm256_storeu_pd(t, lo);
  for (int k = 0; k < 4; k++)
    r->lo = t[k] < r->lo ? t[k] : r->lo;
  _mm256_storeu_pd(t, hi);
  for (int k = 0; k < 4; k++)
    r->hi = t[k] > r->hi ? t[k] : r->hi;
  /* clean upper halves before the SSE tail (GCC's tail call skips its own
   * vzeroupper, and every later SSE instruction, libm's log, paid for it) */
  _mm256_zeroupper();
  scan_block_generic(a, b, i, i1, r);
}

PSP_TARGET_AVX2 static void mask_block_avx2(const float *a, const float *b, int64_t i0, int64_t i1,
                                            double thr, uint8_t *bg, pass_acc *r) {
  const __m256 zero = _mm256_setzero_ps();
  const __m256d tv = _mm256_set1_pd(thr);
  const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  __m256i z0 = _mm256_setzero_si256(), z1 = z0, m0 = z0, m1 = z0;
  int64_t nbg = 0, i = i0;
  for (; i + 8 <= i1; i += 8) {
    const __m256 x = _mm256_loadu_ps(a + i), y = _mm256_loadu_ps(b + i);
    const int m8 = _mm256_movemask_pd(
                       _mm256_cmp_pd(_mm256_add_pd(half_pd(x, 0), half_pd(y, 0)), tv, _CMP_LT_OQ)) |
                   _mm256_movemask_pd(
                       _mm256_cmp_pd(_mm256_add_pd(half_pd(x, 1), half_pd(y, 1)), tv, _CMP_LT_OQ))
                       << 4;
    uint64_t bytes = 0; /* one byte (0 or 1) per voxel, in order */
    for (int k = 0; k < 8; k++)
      bytes |= (uint64_t)(m8 >> k & 1) << (8 * k);
    memcpy(bg + i, &bytes, sizeof bytes);
    nbg += __builtin_popcount((unsigned)m8);
    const __m256i in = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(m8), bit), bit);
    z0 = _mm256_sub_epi32(
        z0, _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(x, zero, _CMP_EQ_OQ)), in));
    z1 = _mm256_sub_epi32(
        z1, _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(y, zero, _CMP_EQ_OQ)), in));
    m0 = _mm256_max_epi32(m0, _mm256_and_si256(_mm256_castps_si256(x), in));
    m1 = _mm256_max_epi32(m1, _mm256_and_si256(_mm256_castps_si256(y), in));
  }
  r->bad += nbg;
  r->cnt[0][0] += hsum_epi32(z0);
  r->cnt[1][0] += hsum_epi32(z1);
  const double v0 = hmax_bits(m0), v1 = hmax_bits(m1);
  r->vmax[0] = v0 > r->vmax[0] ? v0 : r->vmax[0];
  r->vmax[1] = v1 > r->vmax[1] ? v1 : r->vmax[1];
  /* clean upper halves before the SSE tail (GCC's tail call skips its own
   * vzeroupper, and every later SSE instruction, libm's log, paid for it) */
  _mm256_zeroupper();
  mask_block_generic(a, b, i, i1, thr, bg, r);
}
#endif

/* One pass over both images in blocks, in parallel, with per-thread totals
 * added exactly: the first scan (bg NULL: scan_block) or the background
 * pass (mask_block, threshold thr, mask into bg). Returns the totals. */
static void block_pass(const float *a, const float *b, int64_t n, double thr, uint8_t *bg,
                       bool avx2, pass_acc *r) {
  pass_acc_init(r);
#pragma omp parallel
  {
    pass_acc t;
    pass_acc_init(&t);
#pragma omp for schedule(static) nowait
    for (int64_t i0 = 0; i0 < n; i0 += PASS_BLOCK) {
      const int64_t i1 = n - i0 < PASS_BLOCK ? n : i0 + PASS_BLOCK;
#ifdef PSP_AVX2_KERNEL
      if (avx2) {
        if (bg)
          mask_block_avx2(a, b, i0, i1, thr, bg, &t);
        else
          scan_block_avx2(a, b, i0, i1, &t);
        continue;
      }
#endif
      if (bg)
        mask_block_generic(a, b, i0, i1, thr, bg, &t);
      else
        scan_block_generic(a, b, i0, i1, &t);
    }
    pass_acc_add(r, &t);
  }
  (void)avx2;
}

void psp_dixon_passes(const float *a, const float *b, int64_t n, double thr,
                      psp_dixon_kernel kernel, double out[13], uint8_t *bg) {
  const bool avx2 = kernel == PSP_DIXON_KERNEL_AUTO && psp_dixon_have_avx2();
  pass_acc r, m;
  block_pass(a, b, n, 0.0, NULL, avx2, &r);
  block_pass(a, b, n, thr, bg, avx2, &m);
  const double v[13] = {(double)r.bad,
                        r.lo,
                        r.hi,
                        r.vmax[0],
                        (double)r.cnt[0][0],
                        (double)r.cnt[1][0],
                        (double)r.cnt[0][1],
                        (double)r.cnt[1][1],
                        (double)m.bad,
                        (double)m.cnt[0][0],
                        (double)m.cnt[1][0],
                        m.vmax[0],
                        m.vmax[1]};
  memcpy(out, v, sizeof v);
}

/* Background mask: voxels of a + b below the Otsu threshold of log(a + b)
 * (zeros included), from the extremes smin, smax of the positive sums;
 * also the zeros and the largest value of each image in it. Returns the
 * number of background voxels, 0 with a reason when there is no usable
 * background. */
static int64_t background_mask(const float *a, const float *b, int64_t n, double smin, double smax,
                               uint8_t *bg, chan_stats c[2], const char **why) {
  /* log is monotonic: the extremes of log(a + b) are the logs of its
   * extremes (min/max reductions do not depend on the thread count) */
  const double lmin = smax > 0 ? log(smin) : INFINITY, lmax = smax > 0 ? log(smax) : -INFINITY;
  if (!(lmax > lmin + 1e-6)) {
    *why = "the images have no contrast";
    return 0;
  }
  int64_t *h = psp_dixon_log_hist(a, b, n, smin, smax, lmin, lmax,
                                  c[0].fractional == 0 && c[1].fractional == 0);
  if (!h) {
    *why = "out of memory";
    return 0;
  }
  double thr = exp(otsu_hist(h, PSP_DIXON_LOG_NB, lmin, lmax));
  free(h);
  pass_acc r;
  block_pass(a, b, n, thr, bg, psp_dixon_have_avx2(), &r);
  const int64_t nbg = r.bad;
  c[0].zeros = r.cnt[0][0], c[1].zeros = r.cnt[1][0];
  c[0].vmax = r.vmax[0], c[1].vmax = r.vmax[1];
  if (nbg < 256 || (double)nbg < 0.005 * (double)n) {
    *why = "there is too little background (air) around the body";
    return 0;
  }
  return nbg;
}

/* Counts x (below limit) in its bin: integer data de-quantised, bin
 * floor(x + 0.5) (= x; negative: 0), else x / width. */
static inline void bin_add(int64_t *loc, float x, double limit, bool integer, double width,
                           int nb) {
  if (!(x < limit)) return;
  int k = integer ? (x > 0 ? (int)x : 0) : (int)(x / width);
  if (k < 0) k = 0;
  if (k >= nb) k = nb - 1;
  loc[k]++;
}

/* Quantiles q25, q50, q75 of the background values below limit[c] of the
 * images v[c] with use[c] (both in one pass), from histograms; integer
 * data are de-quantised (value k spread over k +- 0.5). ok[c]: found.
 * keep (may be NULL): gets the histograms (caller frees) and their sizes.
 * from (may be NULL): such histograms of all background voxels (limit
 * above all): for integer data they hold the counts below any lower
 * limit, bin by bin (bin k = value k, or 0 for values <= 0), so no pass is
 * needed for them. */
static void bg_quartiles(const float *const v[2], const uint8_t *bg, int64_t n,
                         const double limit[2], const bool integer[2], const bool use[2],
                         bool ok[2], double q[2][3], int64_t *const *from, const int *from_nb,
                         int64_t **keep, int *keep_nb) {
  int nb[2] = {0, 0};
  double width[2] = {0, 0};
  int64_t *h[2] = {NULL, NULL}, total[2] = {0, 0};
  bool on[2], pass[2] = {false, false};
  for (int c = 0; c < 2; c++) {
    ok[c] = false;
    on[c] = use[c];
    if (keep) keep[c] = NULL, keep_nb[c] = 0;
    if (!on[c]) continue;
    if (integer[c]) {
      width[c] = 1.0;
      nb[c] = (int)fmin(ceil(limit[c]) + 1.0, 1 << 22);
    } else {
      nb[c] = 4096;
      width[c] = limit[c] / nb[c];
    }
    if (!(width[c] > 0) || nb[c] < 2) on[c] = false;
    if (on[c]) h[c] = calloc((size_t)nb[c], sizeof *h[c]);
    if (!h[c]) {
      on[c] = false;
      continue;
    }
    if (from && from[c] && integer[c] && limit[c] <= from_nb[c] - 1) {
      for (int k = 0; k < nb[c]; k++) /* (no clamping: nb[c] <= from_nb[c]) */
        h[c][k] = k == 0 || (double)k < limit[c] ? from[c][k] : 0;
    } else {
      pass[c] = true;
    }
  }
  bool failed[2] = {false, false};
  if (pass[0] || pass[1]) {
#pragma omp parallel
    {
      int64_t *loc[2] = {NULL, NULL}; /* per-thread counts, added exactly */
      for (int c = 0; c < 2; c++)
        if (pass[c]) loc[c] = calloc((size_t)nb[c], sizeof *loc[c]);
#pragma omp for schedule(static) nowait
      for (int64_t i = 0; i < n; i++) {
        if (!bg[i]) continue;
        if (loc[0]) bin_add(loc[0], v[0][i], limit[0], integer[0], width[0], nb[0]);
        if (loc[1]) bin_add(loc[1], v[1][i], limit[1], integer[1], width[1], nb[1]);
      }
      for (int c = 0; c < 2; c++)
        if (pass[c]) {
          psp_dixon_hist_merge(h[c], loc[c], nb[c], &failed[c]);
          free(loc[c]);
        }
    }
  }
  for (int c = 0; c < 2; c++)
    for (int k = 0; on[c] && !failed[c] && k < nb[c]; k++)
      total[c] += h[c][k];
  const double want[3] = {0.25, 0.5, 0.75};
  for (int c = 0; c < 2; c++) {
    if (!on[c] || failed[c] || total[c] < 100) {
      free(h[c]);
      continue;
    }
    int qi = 0;
    int64_t cum = 0;
    for (int k = 0; k < nb[c] && qi < 3; k++) {
      /* bin k spans [lo, hi) */
      double lo = integer[c] ? (k == 0 ? 0.0 : k - 0.5) : k * width[c];
      double hi = integer[c] ? k + 0.5 : (k + 1) * width[c];
      while (qi < 3 && (double)(cum + h[c][k]) >= want[qi] * (double)total[c]) {
        double frac =
            h[c][k] > 0 ? (want[qi] * (double)total[c] - (double)cum) / (double)h[c][k] : 0.0;
        q[c][qi++] = lo + frac * (hi - lo);
      }
      cum += h[c][k];
    }
    ok[c] = qi == 3;
    if (keep) {
      keep[c] = h[c], keep_nb[c] = nb[c];
    } else {
      free(h[c]);
    }
  }
}

/* The checks of a channel before its histograms: NULL or the reason. */
static const char *channel_precheck(const chan_stats *c, int64_t n, int64_t nbg) {
  if ((double)c->negative > 0.001 * (double)n)
    return "the image has negative values (not a magnitude image)";
  if ((double)c->zeros > 0.2 * (double)nbg) return "the background is masked (mostly exactly 0)";
  if (!(c->vmax > 0)) return "the background has no noise to measure";
  return NULL;
}

/* Rayleigh sigma of both images from their background voxels (image b is
 * only estimated when image a's is): sig = 0 with a reason when either
 * cannot be estimated. The histograms of both images are made in the same
 * passes (b's are not used when a fails). */
static void channel_sigmas(const float *a, const float *b, const uint8_t *bg, int64_t n,
                           int64_t nbg, const chan_stats c[2], double sig[2], const char **why) {
  const float *const v[2] = {a, b};
  const char *pre[2] = {channel_precheck(&c[0], n, nbg), channel_precheck(&c[1], n, nbg)};
  const bool integer[2] = {c[0].fractional == 0, c[1].fractional == 0};
  const bool use[2] = {!pre[0], !pre[0] && !pre[1]};
  const double rayleigh_median = sqrt(2.0 * log(2.0));
  const double limit[2] = {c[0].vmax + 1.0, c[1].vmax + 1.0};
  bool ok[2], ok2[2], use2[2];
  double q[2][3], q2[2][3], s0[2] = {0, 0}, limit2[2];
  int64_t *h1[2];
  int nb1[2];
  bg_quartiles(v, bg, n, limit, integer, use, ok, q, NULL, NULL, h1, nb1);
  for (int ch = 0; ch < 2; ch++) {
    use2[ch] = use[ch] && ok[ch] && q[ch][1] > 0;
    if (use2[ch]) s0[ch] = q[ch][1] / rayleigh_median;
    /* refine on the voxels below 4 sigma (drops tissue in the background class) */
    limit2[ch] = 4.0 * s0[ch];
  }
  /* (integer images: from the first histograms, without a pass) */
  bg_quartiles(v, bg, n, limit2, integer, use2, ok2, q2, h1, nb1, NULL, NULL);
  free(h1[0]);
  free(h1[1]);
  sig[0] = sig[1] = 0.0;
  for (int ch = 0; ch < 2; ch++) {
    if (pre[ch]) {
      *why = pre[ch];
      return;
    }
    if (!use2[ch]) {
      *why = "the background has no noise to measure";
      return;
    }
    const double *qq = ok2[ch] ? q2[ch] : q[ch];
    double s = s0[ch];
    if (ok2[ch] && q2[ch][1] > 0) s = q2[ch][1] / rayleigh_median;
    double r1 = qq[0] / qq[1], r3 = qq[2] / qq[1];
    if (r1 < 0.55 || r1 > 0.74 || r3 < 1.30 || r3 > 1.55) {
      *why = "the background does not look like magnitude (Rayleigh) noise";
      return;
    }
    if (integer[ch] && s < 1.5) {
      *why = "the noise is too coarsely quantised";
      return;
    }
    sig[ch] = s;
  }
}

/* Estimates sigma of both images from their common background; 0 (and a
 * warning) when it cannot. */
bool psp_dixon_estimate_noise(const psp_volume *a, const psp_volume *b, const char *what,
                              bool correction_wanted, bool fw_sum, psp_context *ctx, double sig[2],
                              uint8_t **bg_out, double *fw_max, bool *fw_integer, psp_error **err) {
  int64_t n = psp_volume_voxel_count(a);
  sig[0] = sig[1] = 0.0;
  *bg_out = NULL;
  pass_acc r;
  block_pass(a->data, b->data, n, 0.0, NULL, psp_dixon_have_avx2(), &r);
  const double smin = r.lo, smax = r.hi, amax = r.vmax[0];
  chan_stats c[2];
  for (int ch = 0; ch < 2; ch++)
    c[ch].negative = r.cnt[ch][0], c[ch].fractional = r.cnt[ch][1];
  if (r.bad)
    return psp_error_set(err, PSP_ERR_DATA, "%s images contain NaN or infinite values", what);
  *fw_max = fw_sum ? (smax > 0 ? smax : 0.0) : amax;
  *fw_integer =
      c[0].fractional == 0 && (!fw_sum || c[1].fractional == 0) && *fw_max <= PSP_DIXON_LUT_MAX;
  uint8_t *bg = psp_malloc((size_t)n, err);
  if (!bg) return false;
  const char *why = NULL;
  int64_t nbg = background_mask(a->data, b->data, n, smin, smax, bg, c, &why);
  if (nbg > 0) {
    channel_sigmas(a->data, b->data, bg, n, nbg, c, sig, &why);
    if (!(sig[1] > 0)) sig[0] = sig[1] = 0.0;
    *bg_out = bg;
  } else {
    free(bg);
  }
  if (sig[0] > 0) {
    psp_info(ctx, "%s: background noise sigma %.4g / %.4g (per component)", what, sig[0], sig[1]);
  } else if (correction_wanted) {
    psp_warn(ctx,
             "%s: the noise level could not be estimated from the background (%s); the "
             "noise-bias correction was skipped, so low fat fractions may read slightly high",
             what, why ? why : "unknown reason");
  } else {
    psp_info(ctx, "%s: noise level unknown (%s)", what, why ? why : "unknown reason");
  }
  return true;
}

/* ------------------------------------------------------------------------ */
/* Fat fraction                                                              */
/* ------------------------------------------------------------------------ */

/* Voxels i0..i1-1: FF = f / (w + f) where w + f >= floor_v, NaN elsewhere;
 * copies w and f to wc and fc when wc is given. */
static void ff_block_generic(const float *w, const float *f, float *ff, int64_t i0, int64_t i1,
                             double floor_v, float *wc, float *fc) {
  for (int64_t i = i0; i < i1; i++) {
    const float x = w[i], y = f[i];
    const double s = (double)x + (double)y;
    if (wc) wc[i] = x, fc[i] = y;
    ff[i] = s >= floor_v ? (float)((double)y / s) : NAN;
  }
}

#ifdef PSP_AVX2_KERNEL
PSP_TARGET_AVX2 static void ff_block_avx2(const float *w, const float *f, float *ff, int64_t i0,
                                          int64_t i1, double floor_v, float *wc, float *fc) {
  const __m256d fl = _mm256_set1_pd(floor_v);
  const __m256 nan = _mm256_set1_ps(NAN);
  const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  int64_t i = i0;
  for (; i + 8 <= i1; i += 8) {
    const __m256 x = _mm256_loadu_ps(w + i), y = _mm256_loadu_ps(f + i);
    if (wc) {
      _mm256_storeu_ps(wc + i, x);
      _mm256_storeu_ps(fc + i, y);
    }
    __m128 q[2];
    int m8 = 0;
    for (int h = 0; h < 2; h++) {
      const __m256d yd = half_pd(y, h), s = _mm256_add_pd(half_pd(x, h), yd);
      q[h] = _mm256_cvtpd_ps(_mm256_div_pd(yd, s));
      m8 |= _mm256_movemask_pd(_mm256_cmp_pd(s, fl, _CMP_GE_OQ)) << (4 * h);
    }
    const __m256i on = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(m8), bit), bit);
    _mm256_storeu_ps(ff + i,
                     _mm256_blendv_ps(nan, _mm256_set_m128(q[1], q[0]), _mm256_castsi256_ps(on)));
  }
  ff_block_generic(w, f, ff, i, i1, floor_v, wc, fc);
}
#endif

void psp_dixon_fill_ff(const float *w, const float *f, float *ff, int64_t n, double floor_v,
                       float *wc, float *fc) {
  const bool avx2 = psp_dixon_have_avx2();
#pragma omp parallel for schedule(static)
  for (int64_t i0 = 0; i0 < n; i0 += PASS_BLOCK) {
    const int64_t i1 = n - i0 < PASS_BLOCK ? n : i0 + PASS_BLOCK;
#ifdef PSP_AVX2_KERNEL
    if (avx2) {
      ff_block_avx2(w, f, ff, i0, i1, floor_v, wc, fc);
      continue;
    }
#endif
    ff_block_generic(w, f, ff, i0, i1, floor_v, wc, fc);
  }
  (void)avx2;
}
