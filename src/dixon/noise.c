/*
 * DESIGN: noise of Dixon magnitudes and its bias correction, for the
 * FF-map stage (src/dixon/dixon.c, whose DESIGN comment states the method:
 * background = Otsu class of log(a + b), Rayleigh sigma from its quartiles
 * with the checks listed there, and the Rician bias correction from the
 * K = 12 of 48 in-plane neighbours closest in the other image, with a
 * correction table from a regularised deconvolution).
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
 * Correction: per voxel a search for the threshold of the 12 nearest (see
 * "Interior voxels" below) instead of ranking all 48 candidates; the same
 * selection and, where the sum of 12 squared magnitudes is not exact in
 * double, the same summation order, so the output is unchanged to the bit.
 *
 * Speed: AVX2 kernels (chosen at run time) for the window search and the
 * plain passes, portable code elsewhere, the same results (no contraction:
 * no "fma" target; unit tests compare both with a plain reference).
 *
 * Deterministic: the histograms are per-thread integer counts added
 * exactly, min/max reductions, slices written by one thread each; the
 * correction table is a constant (src/dixon/rician_table.c, which
 * psp_dixon_correction_table regenerates); the search's starting points
 * only decide its speed.
 */
#include "dixon/noise.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PSP_PI 3.14159265358979323846

/* AVX2 kernels (x86-64, GCC/Clang): chosen at run time (have_avx2), the
 * portable code elsewhere, with the same results. Not "fma": no operation
 * may be contracted, the results must not depend on the path. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PSP_AVX2_KERNEL 1
#include <immintrin.h>
#define PSP_TARGET_AVX2 __attribute__((target("avx2,popcnt,bmi")))
#endif

static bool have_avx2(void) {
#ifdef PSP_AVX2_KERNEL
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt") &&
         __builtin_cpu_supports("bmi");
#else
  return false;
#endif
}

/* neighbourhood of the bias correction */
#define WIN_R 3  /* 7 x 7 in-plane window: 48 candidates */
#define WIN_K 12 /* of which the 12 most similar in the other image are used */
#define WIN_MAX ((2 * WIN_R + 1) * (2 * WIN_R + 1) - 1)
/* At or above HI_SNR sigma a voxel's correction comes from its own
 * magnitude (t = M^2 / sigma^2 - 2, no window): the bias there is at most
 * 0.031 sigma and this estimate of it differs from the window's by about
 * sigma / (2 a^2) <= 0.002 sigma (one sd, a = A / sigma). */
#define HI_SNR 16.0

/* correction table over t = mean(M^2)/sigma^2 - 2 */
#define TAB_TMIN (-2.0)
#define TAB_DT 0.2
#define TAB_NA 151 /* A = 0 .. 7.5 sigma */
#define TAB_DA 0.05
#define TAB_ALPHA 0.01  /* smoothness */
#define TAB_GAMMA 0.001 /* pull towards the plug-in correction */
#define TAB_W0 10.0     /* extra weight of small amplitudes ... */
#define TAB_AW 0.2      /* ... A < ~0.2 sigma (evens out the bias near 0) */

static double horner(const double *c, int n, double y) {
  double s = c[n - 1];
  for (int i = n - 2; i >= 0; i--)
    s = s * y + c[i];
  return s;
}

/* Exponentially scaled modified Bessel functions e^-x I0(x), e^-x I1(x),
 * x >= 0 (Abramowitz & Stegun 9.8.1-9.8.4, relative error < 2e-7). */
static const double i0e_large[9] = {0.39894228,  0.01328592, 0.00225319,  -0.00157565, 0.00916281,
                                    -0.02057706, 0.02635537, -0.01647633, 0.00392377};
static const double i1e_large[9] = {0.39894228, -0.03988024, -0.00362018, 0.00163801, -0.01031555,
                                    0.02282967, -0.02895312, 0.01787654,  -0.00420059};

static double bessel_i0e(double x) {
  static const double small[7] = {1.0,       3.5156229, 3.0899424, 1.2067492,
                                  0.2659732, 0.0360768, 0.0045813};
  if (x < 3.75) return exp(-x) * horner(small, 7, (x / 3.75) * (x / 3.75));
  return horner(i0e_large, 9, 3.75 / x) / sqrt(x);
}

static double bessel_i1e(double x) {
  static const double small[7] = {0.5,        0.87890594, 0.51498869, 0.15084934,
                                  0.02658733, 0.00301532, 0.00032411};
  if (x < 3.75) return exp(-x) * x * horner(small, 7, (x / 3.75) * (x / 3.75));
  return horner(i1e_large, 9, 3.75 / x) / sqrt(x);
}

/* E[M | A] of a Rice variable with sigma = 1. */
static double rice_mean(double a) {
  if (a > 40.0) return a + 0.5 / a + 0.125 / (a * a * a);
  double x = 0.5 * a * a;
  return sqrt(0.5 * PSP_PI) * ((1.0 + x) * bessel_i0e(0.5 * x) + x * bessel_i1e(0.5 * x));
}

/* Noise bias b(A) = E[M | A] - A, sigma = 1. */
static double rice_bias(double a) {
  return rice_mean(a) - a;
}

/* The same for A >= 8 (beyond the correction table, per voxel): the same
 * operations, the quotient and the root the two Bessel functions share
 * computed once, inlined. */
static inline double rice_bias_large(double a) {
  if (a > 40.0) return a + 0.5 / a + 0.125 / (a * a * a) - a;
  const double x = 0.5 * a * a, y = 0.5 * x;
  if (y < 3.75) return rice_bias(a);
  const double z = 3.75 / y, r = sqrt(y);
  const double i0 = horner(i0e_large, 9, z) / r, i1 = horner(i1e_large, 9, z) / r;
  return sqrt(0.5 * PSP_PI) * ((1.0 + x) * i0 + x * i1) - a;
}

/* Regularised lower incomplete gamma P(a, x) (series / continued fraction). */
static double gamma_p(double a, double x) {
  if (x <= 0.0) return 0.0;
  double lead = a * log(x) - x - lgamma(a);
  if (x < a + 1.0) {
    double ap = a, del = 1.0 / a, sum = del;
    for (int n = 0; n < 100000; n++) {
      ap += 1.0;
      del *= x / ap;
      sum += del;
      if (fabs(del) < fabs(sum) * 1e-15) break;
    }
    return sum * exp(lead);
  }
  double b = x + 1.0 - a, c = 1.0 / DBL_MIN, d = 1.0 / b, h = d;
  for (int i = 1; i < 100000; i++) {
    double an = -i * (i - a);
    b += 2.0;
    d = an * d + b;
    if (fabs(d) < DBL_MIN) d = DBL_MIN;
    c = b + an / c;
    if (fabs(c) < DBL_MIN) c = DBL_MIN;
    d = 1.0 / d;
    double del = d * c;
    h *= del;
    if (fabs(del - 1.0) < 1e-15) break;
  }
  return 1.0 - exp(lead) * h;
}

/* In-place Cholesky solve of the symmetric positive definite n x n system
 * a x = b (a is overwritten); false if not positive definite. */
bool psp_dixon_cholesky_solve(double *a, double *b, int n) {
  for (int j = 0; j < n; j++) {
    double d = a[j * n + j];
    for (int k = 0; k < j; k++)
      d -= a[j * n + k] * a[j * n + k];
    if (!(d > 0.0)) return false;
    d = sqrt(d);
    a[j * n + j] = d;
    for (int i = j + 1; i < n; i++) {
      double v = a[i * n + j];
      for (int k = 0; k < j; k++)
        v -= a[i * n + k] * a[j * n + k];
      a[i * n + j] = v / d;
    }
  }
  for (int i = 0; i < n; i++) {
    double v = b[i];
    for (int k = 0; k < i; k++)
      v -= a[i * n + k] * b[k];
    b[i] = v / a[i * n + i];
  }
  for (int i = n - 1; i >= 0; i--) {
    double v = b[i];
    for (int k = i + 1; k < n; k++)
      v -= a[k * n + i] * b[k];
    b[i] = v / a[i * n + i];
  }
  return true;
}

/* Probabilities of the TAB_N bins of t = T/K - 2 for amplitude A, where
 * T ~ noncentral chi-square(2K, K A^2) is the sum of K squared magnitudes
 * (sigma = 1). Bin b holds T in [K b DT, K (b+1) DT). */
static void bin_probabilities(double A, double *p) {
  const double K = WIN_K;
  double m = 0.5 * K * A * A; /* Poisson mean of the mixture */
  int64_t jlo = 0, jhi = 0;
  if (m > 0) {
    jlo = (int64_t)fmax(0.0, floor(m - 9.0 * sqrt(m) - 10.0));
    jhi = (int64_t)ceil(m + 9.0 * sqrt(m) + 10.0);
  }
  /* Poisson weights by recurrence (the first one is far from underflow) */
  double w[1024];
  if (jhi - jlo >= 1024) jhi = jlo + 1023;
  w[0] = m > 0 ? exp(-m + (double)jlo * log(m) - lgamma((double)jlo + 1.0)) : 1.0;
  for (int64_t j = jlo + 1; j <= jhi; j++)
    w[j - jlo] = w[j - jlo - 1] * m / (double)j;
  double prev = 0.0;
  for (int e = 1; e <= TAB_N; e++) {
    double x = 0.5 * K * e * TAB_DT;
    /* P(K + j, x) for j = jlo.. by P(a+1,x) = P(a,x) - x^a e^-x / Gamma(a+1);
     * the term underflows only where it no longer matters */
    double a = K + (double)jlo;
    double pa = gamma_p(a, x);
    double term = exp(a * log(x) - x - lgamma(a + 1.0));
    double cdf = 0.0;
    for (int64_t j = jlo; j <= jhi; j++) {
      cdf += w[j - jlo] * pa;
      pa -= term;
      if (pa < 0) pa = 0;
      a += 1.0;
      term *= x / a;
    }
    if (cdf > 1.0) cdf = 1.0;
    p[e - 1] = cdf - prev;
    prev = cdf;
  }
}

/* Builds the correction table tab[TAB_N] (units of sigma) by regularised
 * least-squares deconvolution: E[c(t) | A] ~ b(A) for A on a grid. */
bool psp_dixon_correction_table(double *tab, psp_error **err) {
  const int n = TAB_N;
  double *mat = psp_calloc((size_t)n * n, sizeof *mat, err);
  double *p = psp_malloc((size_t)n * sizeof *p, err);
  double *plug = psp_malloc((size_t)n * sizeof *plug, err);
  if (!mat || !p || !plug) {
    free(mat);
    free(p);
    free(plug);
    return false;
  }
  for (int b = 0; b < n; b++) {
    double t = TAB_TMIN + (b + 0.5) * TAB_DT;
    plug[b] = rice_bias(t > 0 ? sqrt(t) : 0.0);
    tab[b] = 0.0;
  }
  for (int ia = 0; ia < TAB_NA; ia++) {
    double A = ia * TAB_DA, target = rice_bias(A);
    double w = 1.0 + TAB_W0 * exp(-(A / TAB_AW) * (A / TAB_AW));
    bin_probabilities(A, p);
    int lo = n, hi = -1;
    for (int b = 0; b < n; b++)
      if (p[b] > 1e-13) {
        if (lo == n) lo = b;
        hi = b;
      }
    for (int r = lo; r <= hi; r++) {
      tab[r] += w * (p[r] * target + TAB_GAMMA * p[r] * plug[r]);
      mat[r * n + r] += w * TAB_GAMMA * p[r];
      for (int c = lo; c <= hi; c++)
        mat[r * n + c] += w * p[r] * p[c];
    }
  }
  for (int b = 1; b < n - 1; b++) {
    const int idx[3] = {b - 1, b, b + 1};
    const double w[3] = {1, -2, 1};
    for (int r = 0; r < 3; r++)
      for (int c = 0; c < 3; c++)
        mat[idx[r] * n + idx[c]] += TAB_ALPHA * w[r] * w[c];
  }
  for (int b = 0; b < n; b++) {
    mat[b * n + b] += 1e-6;
    tab[b] += 1e-6 * plug[b];
  }
  bool ok = psp_dixon_cholesky_solve(mat, tab, n);
  free(mat);
  free(p);
  free(plug);
  if (!ok) return psp_error_set(err, PSP_ERR_INTERNAL, "noise-bias correction table is singular");
  return true;
}

/* Raw F + W below which a voxel cannot reach the floor after correction. */
double psp_dixon_skip_level(const double *tab, double floor_v, double sig_a, double sig_b) {
  double cmin = 0;
  for (int b = 0; b < TAB_N; b++)
    cmin = fmin(cmin, tab[b]);
  return floor_v + cmin * (sig_a + sig_b);
}

static double table_correction(const double *tab, double t) {
  int b = (int)floor((t - TAB_TMIN) / TAB_DT);
  if (b < 0) b = 0;
  if (b >= TAB_N) return rice_bias_large(sqrt(t));
  return tab[b];
}

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
  const bool avx2 = kernel == PSP_DIXON_KERNEL_AUTO && have_avx2();
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
  block_pass(a, b, n, thr, bg, have_avx2(), &r);
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
  block_pass(a->data, b->data, n, 0.0, NULL, have_avx2(), &r);
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
  const bool avx2 = have_avx2();
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

/* ------------------------------------------------------------------------ */
/* Noise-bias correction                                                     */
/* ------------------------------------------------------------------------ */

/* Sum of m2 over the k (<= WIN_K) of the n candidates with the smallest d,
 * added in increasing d, ties in candidate order. key[i] = (bits of d_i)
 * << 8 | i: d >= 0, so the float's bits order like its value, and the
 * index makes every key unique, so "the k smallest keys in increasing
 * order" is exactly that selection and that order (a stable partial sort).
 * Quickselect, then an insertion sort of the k: cheaper than keeping a
 * sorted list while scanning (the work of the noise-bias correction is
 * almost all here). */
static double sum_k_nearest(uint64_t *key, const float *m2, int n, int k) {
  int lo = 0, hi = n - 1;
  while (hi > lo && k < n) {
    /* partition key[lo..hi] about the median of three */
    int mid = lo + (hi - lo) / 2;
    uint64_t a = key[lo], b = key[mid], c = key[hi];
    uint64_t piv = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
    int i = lo, j = hi;
    while (i <= j) {
      while (key[i] < piv)
        i++;
      while (key[j] > piv)
        j--;
      if (i <= j) {
        uint64_t t = key[i];
        key[i++] = key[j];
        key[j--] = t;
      }
    }
    /* key[lo..j] <= piv <= key[i..hi]; the k-th smallest (index k - 1) */
    if (k - 1 <= j)
      hi = j;
    else if (k - 1 >= i)
      lo = i;
    else
      break;
  }
  for (int i = 1; i < k; i++) {
    uint64_t t = key[i];
    int p = i;
    for (; p > 0 && key[p - 1] > t; p--)
      key[p] = key[p - 1];
    key[p] = t;
  }
  double s = 0;
  for (int i = 0; i < k; i++)
    s += m2[key[i] & 0xff];
  return s;
}

/* Interior voxels (the full 7 x 7 window inside the slice): a search for
 * the threshold instead of a sort, with the same result. The window is
 * held as 7 rows x 8 lanes (columns -3..+4; lane 7 of every row and the
 * centre hold no candidate), so lane order = candidate order; C(T) =
 * #{d <= T}. Key: 8 bits, key(d) = (bits of d >> KEY_SHIFT) - base clamped
 * to [0, 255], 32 levels per octave over 8 octaves, sigma / 16 to 16
 * sigma (d* is mostly about sigma). key(d) <= k exactly when d <= T(k) =
 * ((base + k + 1) << KEY_SHIFT) - 1 (k <= 254), so counting keys in 8-bit
 * lanes is exact; a branch-free binary search finds the level k* of the
 * 12th smallest d. Selected: every d <= T(k* - 1), then from the bracket
 * (T(k* - 1), T(k*)] the WIN_K - C(T(k* - 1)) smallest keys (d, lane):
 * most often the bracket holds just those; if it holds one value (ties,
 * e.g. integer data), its lowest lanes; else its candidates ranked.
 * Bracket of more than BRACKET_MAX candidates or d* outside the key range
 * (rare): bisection of the bit patterns first. The result is the WIN_K
 * smallest keys (d, index) of sum_k_nearest, whatever thresholds were
 * tried (they only decide the speed). */
#define ROW_L 8                         /* lanes per window row */
#define NLANE (ROW_L * (2 * WIN_R + 1)) /* 56 (+ 8 padding lanes: 64) */
#define CENTRE_L (WIN_R * ROW_L + WIN_R)
#define BRACKET_MAX 8 /* largest bracket ranked directly */
#define ROW_CHUNK 256 /* voxels of a row screened at once */
#define KEY_SHIFT 18
#define KEY_TOP 255 /* key of d above the range (and of the lanes without a candidate) */
#define KEY_BASE_MAX ((0x7f800000u >> KEY_SHIFT) - KEY_TOP - 1) /* T(254) < bits of +inf */
#define D_NONE 0x7fffffffu /* d of the lanes without a candidate: above every float */
#define D_INF 0x7f800000u  /* bits of +inf: at or above every candidate's d */

#if defined(__GNUC__) || defined(__clang__)
#define PSP_INLINE inline __attribute__((always_inline))
#define POPC64(x) __builtin_popcountll(x)
#define CTZ64(x) __builtin_ctzll(x)
#else
#define PSP_INLINE inline
static int popc64(uint64_t x) {
  int c = 0;
  for (; x; x &= x - 1)
    c++;
  return c;
}
static int ctz64(uint64_t x) {
  int c = 0;
  for (; !(x & 1); x >>= 1)
    c++;
  return c;
}
#define POPC64(x) popc64(x)
#define CTZ64(x) ctz64(x)
#endif

static float bits_float(uint32_t b) {
  float f;
  memcpy(&f, &b, sizeof f);
  return f;
}

static uint32_t float_bits(float f) {
  uint32_t b;
  memcpy(&b, &f, sizeof b);
  return b;
}

/* T(k): the largest d with key(d) <= k */
static uint32_t key_threshold(int base, int k) {
  return ((uint32_t)(base + k + 1) << KEY_SHIFT) - 1;
}

/* lanes that hold a candidate */
static PSP_INLINE uint64_t lane_valid(void) {
  uint64_t v = 0;
  for (int r = 0; r < 2 * WIN_R + 1; r++)
    v |= (uint64_t)0x7f << (ROW_L * r);
  return v & ~((uint64_t)1 << CENTRE_L);
}

/* A window: dl = bits of |g_u - g_v|, m2 = m_u^2, k8 = key(d) (KEY_TOP
 * where no candidate; the AVX2 kernels store key - 128, signed); 64 lanes.
 * dl and m2 of the lanes without a candidate: D_NONE and 0 in the portable
 * kernels and the padding lanes 56..63, else anything (never used). */
typedef struct window {
  uint32_t dl[64];
  float m2[64];
  uint8_t k8[64];
} window;

/* Portable kernels. */
static PSP_INLINE void window_generic(const float *gs, const float *ms, int64_t v, int64_t nx,
                                      int64_t plane, int base, window *w) {
  (void)plane;
  const float gv = gs[v];
  for (int r = 0; r < 2 * WIN_R + 1; r++) {
    const int64_t u0 = v + (r - WIN_R) * nx - WIN_R;
    for (int c = 0; c < ROW_L; c++) {
      const int l = r * ROW_L + c;
      if (c == ROW_L - 1 || l == CENTRE_L) {
        w->dl[l] = D_NONE;
        w->m2[l] = 0.0f;
        w->k8[l] = KEY_TOP;
        continue;
      }
      w->dl[l] = float_bits(fabsf(gs[u0 + c] - gv));
      w->m2[l] = ms[u0 + c] * ms[u0 + c];
      const int key = (int)(w->dl[l] >> KEY_SHIFT) - base;
      w->k8[l] = (uint8_t)(key < 0 ? 0 : key > KEY_TOP ? KEY_TOP : key);
    }
  }
}

/* lanes with key <= t (t < KEY_TOP) */
static PSP_INLINE uint64_t key_mask_generic(const uint8_t *k8, int t) {
  uint64_t m = 0;
  for (int l = 0; l < 64; l++)
    m |= (uint64_t)(k8[l] <= t) << l;
  return m;
}

/* k* = the smallest key level k with C(T(k)) >= WIN_K (KEY_TOP: none);
 * *lt = lanes with key < k*, *le = lanes with key <= k* (k* < KEY_TOP) */
static PSP_INLINE int key_search_generic(const uint8_t *k8, uint64_t *lt, uint64_t *le) {
  int k = 0;
  for (int step = (KEY_TOP + 1) / 2; step > 0; step /= 2)
    k += POPC64(key_mask_generic(k8, k + step - 1)) < WIN_K ? step : 0;
  *lt = k > 0 ? key_mask_generic(k8, k - 1) : 0;
  *le = k < KEY_TOP ? key_mask_generic(k8, k) : 0;
  return k;
}

/* lanes with d <= t */
static PSP_INLINE uint64_t le_mask_generic(const uint32_t *dl, uint32_t t) {
  uint64_t m = 0;
  for (int l = 0; l < NLANE; l++)
    m |= (uint64_t)(dl[l] <= t) << l;
  return m;
}

/* lanes with d == t */
static PSP_INLINE uint64_t eq_mask_generic(const uint32_t *dl, uint32_t t) {
  uint64_t m = 0;
  for (int l = 0; l < NLANE; l++)
    m |= (uint64_t)(dl[l] == t) << l;
  return m;
}

/* Bit e set: bv[e] is among the `need` smallest keys (bv, e) of bv[8]. */
static PSP_INLINE unsigned rank_select(const uint32_t *bv, int need) {
  unsigned sel = 0;
  for (int e = 0; e < BRACKET_MAX; e++) {
    int rank = 0;
    for (int f = 0; f < BRACKET_MAX; f++)
      rank += (bv[f] < bv[e]) | ((bv[f] == bv[e]) & (f < e));
    sel |= (unsigned)(rank < need) << e;
  }
  return sel;
}

/* The same with AVX2 (x86-64; chosen at run time). */
#ifdef PSP_AVX2_KERNEL

PSP_TARGET_AVX2 static inline void window_avx2(const float *gs, const float *ms, int64_t v,
                                               int64_t nx, int64_t plane, int base, window *w) {
  /* 8 columns loaded, the 8th only where it lies inside the slice (the last
   * row of the window at the end of the slice: 7) */
  const __m256i ld = _mm256_setr_epi32(-1, -1, -1, -1, -1, -1, -1, 0);
  const bool last8 = v + WIN_R * nx + WIN_R + 1 < plane;
  const __m256 gv = _mm256_set1_ps(gs[v]);
  const __m256 absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256i bv = _mm256_set1_epi32(base);
  __m256i key[8];
  for (int r = 0; r < 2 * WIN_R + 1; r++) {
    const int64_t u0 = v + (r - WIN_R) * nx - WIN_R;
    __m256 g, m;
    if (r < 2 * WIN_R || last8) {
      g = _mm256_loadu_ps(gs + u0);
      m = _mm256_loadu_ps(ms + u0);
    } else {
      g = _mm256_maskload_ps(gs + u0, ld);
      m = _mm256_maskload_ps(ms + u0, ld);
    }
    __m256i d = _mm256_castps_si256(_mm256_and_ps(_mm256_sub_ps(g, gv), absm));
    _mm256_storeu_si256((__m256i *)(w->dl + r * ROW_L), d);
    _mm256_storeu_ps(w->m2 + r * ROW_L, _mm256_mul_ps(m, m));
    key[r] = _mm256_sub_epi32(_mm256_srli_epi32(d, KEY_SHIFT), bv);
  }
  key[7] = key[6];
  /* to bytes, clamped to [0, 255] by the unsigned saturation of the packs,
   * in lane order (the packs interleave 4-lane halves, the permutation
   * puts them back), minus 128 for signed compares; the lanes without a
   * candidate get KEY_TOP */
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256i flip = _mm256_set1_epi8((char)0x80);
  const __m256i none0 = _mm256_setr_epi8(
      -128, -128, -128, -128, -128, -128, -128, 127, -128, -128, -128, -128, -128, -128, -128, 127,
      -128, -128, -128, -128, -128, -128, -128, 127, -128, -128, -128, 127, -128, -128, -128, 127);
  const __m256i none1 = _mm256_setr_epi8(
      -128, -128, -128, -128, -128, -128, -128, 127, -128, -128, -128, -128, -128, -128, -128, 127,
      -128, -128, -128, -128, -128, -128, -128, 127, 127, 127, 127, 127, 127, 127, 127, 127);
  for (int h = 0; h < 2; h++) {
    const __m256i a = _mm256_packus_epi32(key[4 * h], key[4 * h + 1]);
    const __m256i b = _mm256_packus_epi32(key[4 * h + 2], key[4 * h + 3]);
    const __m256i k = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(a, b), perm);
    _mm256_storeu_si256((__m256i *)(w->k8 + 32 * h),
                        _mm256_max_epi8(_mm256_xor_si256(k, flip), h ? none1 : none0));
  }
}

/* lanes with key > t (keys stored minus 128) */
PSP_TARGET_AVX2 static inline uint64_t key_gt_avx2(__m256i k0, __m256i k1, int t) {
  const __m256i tv = _mm256_set1_epi8((char)(t - 128));
  return (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpgt_epi8(k0, tv)) |
         (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpgt_epi8(k1, tv)) << 32;
}

PSP_TARGET_AVX2 static inline int key_search_avx2(const uint8_t *k8, uint64_t *lt, uint64_t *le) {
  const __m256i k0 = _mm256_loadu_si256((const __m256i *)k8);
  const __m256i k1 = _mm256_loadu_si256((const __m256i *)(k8 + 32));
  int k = 0;
  for (int step = (KEY_TOP + 1) / 2; step > 0; step /= 2) /* C = 64 - #{key > t} */
    k += 64 - POPC64(key_gt_avx2(k0, k1, k + step - 1)) < WIN_K ? step : 0;
  *lt = k > 0 ? ~key_gt_avx2(k0, k1, k - 1) : 0;
  *le = k < KEY_TOP ? ~key_gt_avx2(k0, k1, k) : 0;
  return k;
}

PSP_TARGET_AVX2 static inline uint64_t le_mask_avx2(const uint32_t *dl, uint32_t t) {
  const __m256i tv = _mm256_set1_epi32((int)t);
  uint64_t gt = 0;
  for (int r = 0; r < 2 * WIN_R + 1; r++) {
    __m256i d = _mm256_loadu_si256((const __m256i *)(dl + r * ROW_L));
    gt |= (uint64_t)(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(d, tv)))
          << (ROW_L * r);
  }
  return ~gt & lane_valid();
}

PSP_TARGET_AVX2 static inline uint64_t eq_mask_avx2(const uint32_t *dl, uint32_t t) {
  const __m256i tv = _mm256_set1_epi32((int)t);
  uint64_t eq = 0;
  for (int r = 0; r < 2 * WIN_R + 1; r++) {
    __m256i d = _mm256_loadu_si256((const __m256i *)(dl + r * ROW_L));
    eq |= (uint64_t)(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(d, tv)))
          << (ROW_L * r);
  }
  return eq; /* (callers mask it) */
}

#define ISA(f, avx2) ((avx2) ? f##_avx2 : f##_generic)
#else
#define ISA(f, avx2) f##_generic
#endif

/* Bracket (lo, hi] (C(lo) = clo < WIN_K <= C(hi) = chi; lo not tried when
 * !has_lo) of more than BRACKET_MAX candidates (rare) narrowed by bisection of
 * the bit patterns until it holds at most BRACKET_MAX candidates or one value. */
static PSP_INLINE void narrow(const uint32_t *dl, uint32_t *lo, int *clo, bool *has_lo,
                              uint32_t *hi, int *chi, bool avx2) {
  while (*chi - *clo > BRACKET_MAX && (*has_lo ? *hi - *lo > 1 : *hi > 0)) {
    const uint32_t t = *has_lo ? *lo + (*hi - *lo) / 2 : *hi / 2;
    const int c = POPC64(ISA(le_mask, avx2)(dl, t));
    if (c >= WIN_K)
      *hi = t, *chi = c;
    else
      *lo = t, *clo = c, *has_lo = true;
  }
}

/* The WIN_K lanes with the smallest keys (d, lane) of a full window (keys
 * from base). */
static PSP_INLINE uint64_t select_k(const window *w, int base, bool avx2) {
  uint64_t lt, le;
  const int k = ISA(key_search, avx2)(w->k8, &lt, &le);
  int clo = POPC64(lt), chi = WIN_MAX;
  uint32_t lo = k > 0 ? key_threshold(base, k - 1) : 0, hi = D_INF;
  bool has_lo = k > 0;
  if (k < KEY_TOP) {
    chi = POPC64(le);
    if (chi == WIN_K) return le; /* the bracket holds just the ones needed */
    hi = key_threshold(base, k);
  } else {
    le = lane_valid();
  }
  uint64_t br = le & ~lt, sel = lt;
  /* one value in the bracket (ties, e.g. integer data): its lowest lanes */
  if ((ISA(eq_mask, avx2)(w->dl, w->dl[CTZ64(br)]) & br) != br) {
    if (chi - clo > BRACKET_MAX) {
      narrow(w->dl, &lo, &clo, &has_lo, &hi, &chi, avx2);
      sel = has_lo ? ISA(le_mask, avx2)(w->dl, lo) : 0;
      br = ISA(le_mask, avx2)(w->dl, hi) & ~sel;
    }
    if (chi - clo <= BRACKET_MAX) { /* the smallest keys (d, lane), ranked */
      uint32_t bv[BRACKET_MAX];
      int bl[BRACKET_MAX];
      uint64_t x = br;
      for (int i = 0; i < BRACKET_MAX; i++, x &= x - 1) { /* in lane order; then lane 63 (D_NONE) */
        bl[i] = CTZ64(x | (uint64_t)1 << 63);
        bv[i] = w->dl[bl[i]];
      }
      const unsigned s8 = rank_select(bv, WIN_K - clo);
      for (int i = 0; i < BRACKET_MAX; i++)
        sel |= (uint64_t)(s8 >> i & 1) << bl[i];
      return sel;
    }
    /* else: narrowed to one value */
  }
  uint64_t x = br;
  for (int i = clo; i < WIN_K; i++, x &= x - 1)
    sel |= x & (~x + 1);
  return sel;
}

/* Sum of m2 over the selected lanes: in increasing (d, lane) as
 * sum_k_nearest adds, or in any order when every such sum of the slice is
 * exact (then all orders give the same double). */
static PSP_INLINE double sum_selected(uint64_t sel, const window *w, bool exact, bool avx2) {
  if (exact) { /* sel has WIN_K lanes: a fixed trip count */
    double s0 = 0, s1 = 0, s2 = 0;
    for (int i = 0; i < WIN_K; i += 3) {
      s0 += w->m2[CTZ64(sel)];
      sel &= sel - 1;
      s1 += w->m2[CTZ64(sel)];
      sel &= sel - 1;
      s2 += w->m2[CTZ64(sel)];
      sel &= sel - 1;
    }
    return s0 + s1 + s2;
  }
  uint64_t key[WIN_K];
  int n = 0;
  for (; sel; sel &= sel - 1) {
    const int l = CTZ64(sel);
    uint64_t kv = (uint64_t)w->dl[l] << 8 | (uint64_t)l;
    int p = n++;
    for (; p > 0 && key[p - 1] > kv; p--)
      key[p] = key[p - 1];
    key[p] = kv;
  }
  double s = 0;
  for (int i = 0; i < n; i++)
    s += w->m2[key[i] & 0xff];
  return s;
}

/* True when every sum of WIN_K values m_u^2 (float products) of the slice
 * is exact in double: all are multiples of 2^(e - 49), where 2^e bounds
 * them (uint16 data: always), so no sum of 12 exceeds 2^(e + 4) = 2^53
 * units. Integral test without floorf: x + 2^23 - 2^23 == x for
 * 0 <= x < 2^23 (round to nearest), and floats >= 2^23 are integers. */
static bool slice_sums_exact(const float *ms, int64_t np) {
  uint32_t amax = 0; /* bits of |m| (finite: ordered like the values) */
  for (int64_t i = 0; i < np; i++) {
    const uint32_t a = float_bits(ms[i]) & 0x7fffffffu;
    amax = a > amax ? a : amax;
  }
  const float m2max = bits_float(amax) * bits_float(amax);
  if (m2max == 0.0f) return true;
  if (!(m2max < INFINITY)) return false;
  int e;
  frexpf(m2max, &e); /* m2max < 2^e */
  if (e > 49 || 49 - e > 120) return false;
  const float scale = ldexpf(1.0f, 49 - e); /* >= 1: exact scaling */
  int bad = 0;
  for (int64_t i = 0; i < np; i++) {
    const float x = ms[i] * ms[i] * scale;
    bad |= (x < 0x1p23f) & ((x + 0x1p23f) - 0x1p23f != x);
  }
  return !bad;
}

/* Corrected magnitudes of the voxels of row j with s1 (+ s2) at or above
 * skip (from their own magnitude at or above HI_SNR sigma); the others get
 * the bias at A = 0. Candidates in window order (rows
 * of the window, then columns; centre left out), so ties resolve the same
 * inside the image and at its edges. base: of the keys. */
static PSP_INLINE void correct_row(const float *ms, const float *gs, float *os, const float *r1,
                                   const float *r2, int64_t j, int64_t nx, int64_t ny, double sigma,
                                   const double *tab, double skip, bool exact, int base,
                                   bool avx2) {
  const double inv_s2 = 1.0 / (sigma * sigma), c0 = sigma * rice_bias(0.0), hi = HI_SNR * sigma;
  uint64_t key[WIN_MAX];
  window w;
  for (int l = NLANE; l < 64; l++)
    w.dl[l] = D_NONE, w.m2[l] = 0.0f, w.k8[l] = KEY_TOP;
  const bool row_inside = j >= WIN_R && j < ny - WIN_R;
  for (int64_t i0 = 0; i0 < nx; i0 += ROW_CHUNK) {
    /* first every voxel as skipped (vectorises), then the others */
    const int64_t n = nx - i0 < ROW_CHUNK ? nx - i0 : ROW_CHUNK;
    const float *mr = ms + j * nx + i0, *a1 = r1 + i0, *a2 = r2 ? r2 + i0 : NULL;
    float *orow = os + j * nx + i0;
    uint8_t proc[ROW_CHUNK];
    for (int64_t i = 0; i < n; i++)
      orow[i] = (float)(mr[i] - c0);
    if (a2) {
      for (int64_t i = 0; i < n; i++)
        proc[i] = !((double)a1[i] + (double)a2[i] < skip);
    } else {
      for (int64_t i = 0; i < n; i++)
        proc[i] = !((double)a1[i] + 0.0 < skip);
    }
    for (int64_t i = i0; i < i0 + n; i++) {
      if (!proc[i - i0]) continue;
      const int64_t v = j * nx + i;
      const double mv = ms[v];
      if (mv >= hi) { /* beyond the table (t >= 254): no window */
        os[v] = (float)(mv - sigma * rice_bias_large(sqrt(mv * mv * inv_s2 - 2.0)));
        continue;
      }
      double s;
      int kk = WIN_K;
      if (row_inside && i >= WIN_R && i < nx - WIN_R) {
        ISA(window, avx2)(gs, ms, v, nx, nx * ny, base, &w);
        s = sum_selected(select_k(&w, base, avx2), &w, exact, avx2);
      } else {
        const float gv = gs[v];
        int cnt = 0;
        for (int64_t dj = -WIN_R; dj <= WIN_R; dj++) {
          int64_t jj = j + dj;
          if (jj < 0 || jj >= ny) continue;
          for (int64_t di = -WIN_R; di <= WIN_R; di++) {
            int64_t ii = i + di;
            if (ii < 0 || ii >= nx || (di == 0 && dj == 0)) continue;
            int64_t u = jj * nx + ii;
            key[cnt] = (uint64_t)float_bits(fabsf(gs[u] - gv)) << 8 | (uint64_t)cnt;
            w.m2[cnt] = ms[u] * ms[u];
            cnt++;
          }
        }
        /* (fewer candidates only at the corners of tiny images) */
        kk = cnt < WIN_K ? cnt : WIN_K;
        s = sum_k_nearest(key, w.m2, cnt, kk);
      }
      double corr = kk ? table_correction(tab, s * inv_s2 / kk - 2.0) : rice_bias(0.0);
      os[v] = (float)(ms[v] - sigma * corr);
    }
  }
}

#ifdef PSP_AVX2_KERNEL
PSP_TARGET_AVX2 static void correct_row_avx2(const float *ms, const float *gs, float *os,
                                             const float *r1, const float *r2, int64_t j,
                                             int64_t nx, int64_t ny, double sigma,
                                             const double *tab, double skip, bool exact, int base) {
  correct_row(ms, gs, os, r1, r2, j, nx, ny, sigma, tab, skip, exact, base, true);
}
#endif

static void correct_row_generic(const float *ms, const float *gs, float *os, const float *r1,
                                const float *r2, int64_t j, int64_t nx, int64_t ny, double sigma,
                                const double *tab, double skip, bool exact, int base) {
  correct_row(ms, gs, os, r1, r2, j, nx, ny, sigma, tab, skip, exact, base, false);
}

void psp_dixon_rician_correct_with(const float *m, const float *g, float *out, const int64_t d[3],
                                   double sigma, const double *tab, const float *s1,
                                   const float *s2, double skip, psp_dixon_kernel kernel) {
  const int64_t nx = d[0], ny = d[1], nz = d[2], plane = nx * ny;
  const bool avx2 = kernel == PSP_DIXON_KERNEL_AUTO && have_avx2();
  /* keys from sigma / 16 to 16 sigma: d* is mostly about sigma */
  const int c = (int)(float_bits((float)sigma) >> KEY_SHIFT) - (KEY_TOP + 1) / 2,
            base = c < 0                   ? 0
                   : c > (int)KEY_BASE_MAX ? (int)KEY_BASE_MAX
                                           : c;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t k = 0; k < nz; k++) {
    const float *ms = m + k * plane, *gs = g + k * plane;
    float *os = out + k * plane;
    const bool exact = slice_sums_exact(ms, plane);
    for (int64_t j = 0; j < ny; j++) {
      const float *r1 = s1 + k * plane + j * nx, *r2 = s2 ? s2 + k * plane + j * nx : NULL;
#ifdef PSP_AVX2_KERNEL
      if (avx2)
        correct_row_avx2(ms, gs, os, r1, r2, j, nx, ny, sigma, tab, skip, exact, base);
      else
#endif
        correct_row_generic(ms, gs, os, r1, r2, j, nx, ny, sigma, tab, skip, exact, base);
    }
  }
}

void psp_dixon_rician_correct(const float *m, const float *g, float *out, const int64_t d[3],
                              double sigma, const double *tab, const float *s1, const float *s2,
                              double skip) {
  psp_dixon_rician_correct_with(m, g, out, d, sigma, tab, s1, s2, skip, PSP_DIXON_KERNEL_AUTO);
}
