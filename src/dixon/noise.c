/*
 * DESIGN: noise of Dixon magnitudes and its bias correction, for the
 * FF-map stage (src/dixon/dixon.c, whose DESIGN comment states the method:
 * background = Otsu class of log(a + b), Rayleigh sigma from its quartiles
 * with the checks listed there, and the Rician bias correction from the
 * K = 12 of 48 in-plane neighbours closest in the other image, with a
 * correction table from a regularised deconvolution).
 *
 * Deterministic: the histograms are per-thread integer counts added
 * exactly, min/max reductions, slices written by one thread each; the
 * correction table is rebuilt identically per map.
 */
#include "dixon/noise.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PSP_PI 3.14159265358979323846

/* neighbourhood of the bias correction */
#define WIN_R 3  /* 7 x 7 in-plane window: 48 candidates */
#define WIN_K 12 /* of which the 12 most similar in the other image are used */
#define WIN_MAX ((2 * WIN_R + 1) * (2 * WIN_R + 1) - 1)

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
static double bessel_i0e(double x) {
  static const double small[7] = {1.0,       3.5156229, 3.0899424, 1.2067492,
                                  0.2659732, 0.0360768, 0.0045813};
  static const double large[9] = {0.39894228,  0.01328592, 0.00225319,  -0.00157565, 0.00916281,
                                  -0.02057706, 0.02635537, -0.01647633, 0.00392377};
  if (x < 3.75) return exp(-x) * horner(small, 7, (x / 3.75) * (x / 3.75));
  return horner(large, 9, 3.75 / x) / sqrt(x);
}

static double bessel_i1e(double x) {
  static const double small[7] = {0.5,        0.87890594, 0.51498869, 0.15084934,
                                  0.02658733, 0.00301532, 0.00032411};
  static const double large[9] = {0.39894228, -0.03988024, -0.00362018, 0.00163801, -0.01031555,
                                  0.02282967, -0.02895312, 0.01787654,  -0.00420059};
  if (x < 3.75) return exp(-x) * x * horner(small, 7, (x / 3.75) * (x / 3.75));
  return horner(large, 9, 3.75 / x) / sqrt(x);
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
  if (b >= TAB_N) return rice_bias(sqrt(t));
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

/* Background mask: voxels of a + b below the Otsu threshold of log(a + b)
 * (zeros included). Returns the number of background voxels, 0 with a
 * reason when there is no usable background. */
static int64_t background_mask(const float *a, const float *b, int64_t n, uint8_t *bg,
                               const char **why) {
  /* log is monotonic: the extremes of log(a + b) are the logs of its
   * extremes (min/max reductions do not depend on the thread count) */
  double smin = INFINITY, smax = -INFINITY;
#pragma omp parallel for schedule(static) reduction(min : smin) reduction(max : smax)
  for (int64_t i = 0; i < n; i++) {
    double s = (double)a[i] + (double)b[i];
    if (s > 0) {
      smin = s < smin ? s : smin;
      smax = s > smax ? s : smax;
    }
  }
  const double lmin = smax > 0 ? log(smin) : INFINITY, lmax = smax > 0 ? log(smax) : -INFINITY;
  if (!(lmax > lmin + 1e-6)) {
    *why = "the images have no contrast";
    return 0;
  }
  enum { NB = 1024 };
  int64_t *h = calloc(NB, sizeof *h);
  if (!h) {
    *why = "out of memory";
    return 0;
  }
#pragma omp parallel
  {
    int64_t loc[NB] = {0}; /* per-thread counts, added exactly */
#pragma omp for schedule(static) nowait
    for (int64_t i = 0; i < n; i++) {
      double s = (double)a[i] + (double)b[i];
      if (s > 0) {
        int k = (int)((log(s) - lmin) / (lmax - lmin) * NB);
        loc[k < NB ? k : NB - 1]++;
      }
    }
    bool unused = false;
    psp_dixon_hist_merge(h, loc, NB, &unused);
  }
  double thr = exp(otsu_hist(h, NB, lmin, lmax));
  free(h);
  int64_t nbg = 0;
#pragma omp parallel for schedule(static) reduction(+ : nbg)
  for (int64_t i = 0; i < n; i++) {
    bg[i] = ((double)a[i] + (double)b[i]) < thr;
    nbg += bg[i];
  }
  if (nbg < 256 || (double)nbg < 0.005 * (double)n) {
    *why = "there is too little background (air) around the body";
    return 0;
  }
  return nbg;
}

/* Quantiles q25, q50, q75 of the background values below `limit`, from a
 * histogram; integer data are de-quantised (value k spread over k +- 0.5). */
static bool bg_quartiles(const float *v, const uint8_t *bg, int64_t n, double limit, bool integer,
                         double q[3]) {
  int nb;
  double width;
  if (integer) {
    width = 1.0;
    nb = (int)fmin(ceil(limit) + 1.0, 1 << 22);
  } else {
    nb = 4096;
    width = limit / nb;
  }
  if (!(width > 0) || nb < 2) return false;
  int64_t *h = calloc((size_t)nb, sizeof *h);
  if (!h) return false;
  int64_t total = 0;
  bool failed = false;
#pragma omp parallel reduction(+ : total)
  {
    int64_t *loc = calloc((size_t)nb, sizeof *loc); /* per-thread counts, added exactly */
#pragma omp for schedule(static) nowait
    for (int64_t i = 0; i < n; i++) {
      if (!loc || !bg[i] || !(v[i] < limit)) continue;
      int k = integer ? (int)floor(v[i] + 0.5) : (int)(v[i] / width);
      if (k < 0) k = 0;
      if (k >= nb) k = nb - 1;
      loc[k]++;
      total++;
    }
    psp_dixon_hist_merge(h, loc, nb, &failed);
    free(loc);
  }
  if (failed || total < 100) {
    free(h);
    return false;
  }
  const double want[3] = {0.25, 0.5, 0.75};
  int qi = 0;
  int64_t cum = 0;
  for (int k = 0; k < nb && qi < 3; k++) {
    /* bin k spans [lo, hi) */
    double lo = integer ? (k == 0 ? 0.0 : k - 0.5) : k * width;
    double hi = integer ? k + 0.5 : (k + 1) * width;
    while (qi < 3 && (double)(cum + h[k]) >= want[qi] * (double)total) {
      double frac = h[k] > 0 ? (want[qi] * (double)total - (double)cum) / (double)h[k] : 0.0;
      q[qi++] = lo + frac * (hi - lo);
    }
    cum += h[k];
  }
  free(h);
  return qi == 3;
}

/* Rayleigh sigma of one magnitude image from its background voxels; 0 with a
 * reason when it cannot be estimated. */
static double channel_sigma(const float *v, const uint8_t *bg, int64_t n, int64_t nbg,
                            const char **why) {
  int64_t zeros = 0, negative = 0, fractional = 0;
  double vmax = 0;
#pragma omp parallel for schedule(static) reduction(+ : zeros, negative, fractional) \
    reduction(max : vmax)
  for (int64_t i = 0; i < n; i++) {
    if (v[i] < 0) negative++;
    if (v[i] != floorf(v[i])) fractional++;
    if (!bg[i]) continue;
    if (v[i] == 0) zeros++;
    if (v[i] > vmax) vmax = v[i];
  }
  const bool integer = fractional == 0;
  if ((double)negative > 0.001 * (double)n) {
    *why = "the image has negative values (not a magnitude image)";
    return 0;
  }
  if ((double)zeros > 0.2 * (double)nbg) {
    *why = "the background is masked (mostly exactly 0)";
    return 0;
  }
  double q[3];
  if (!(vmax > 0) || !bg_quartiles(v, bg, n, vmax + 1.0, integer, q) || !(q[1] > 0)) {
    *why = "the background has no noise to measure";
    return 0;
  }
  const double rayleigh_median = sqrt(2.0 * log(2.0));
  double s0 = q[1] / rayleigh_median;
  /* refine on the voxels below 4 sigma (drops tissue in the background class) */
  if (bg_quartiles(v, bg, n, 4.0 * s0, integer, q) && q[1] > 0) s0 = q[1] / rayleigh_median;
  double r1 = q[0] / q[1], r3 = q[2] / q[1];
  if (r1 < 0.55 || r1 > 0.74 || r3 < 1.30 || r3 > 1.55) {
    *why = "the background does not look like magnitude (Rayleigh) noise";
    return 0;
  }
  if (integer && s0 < 1.5) {
    *why = "the noise is too coarsely quantised";
    return 0;
  }
  return s0;
}

/* Estimates sigma of both images from their common background; 0 (and a
 * warning) when it cannot. */
bool psp_dixon_estimate_noise(const psp_volume *a, const psp_volume *b, const char *what,
                              bool correction_wanted, psp_context *ctx, double sig[2],
                              uint8_t **bg_out, psp_error **err) {
  int64_t n = psp_volume_voxel_count(a);
  sig[0] = sig[1] = 0.0;
  *bg_out = NULL;
  uint8_t *bg = psp_malloc((size_t)n, err);
  if (!bg) return false;
  const char *why = NULL;
  int64_t nbg = background_mask(a->data, b->data, n, bg, &why);
  if (nbg > 0) {
    sig[0] = channel_sigma(a->data, bg, n, nbg, &why);
    if (sig[0] > 0) sig[1] = channel_sigma(b->data, bg, n, nbg, &why);
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

/* The same for a full window (WIN_MAX candidates, k = WIN_K) by ranks:
 * rank_i = #{j : d_j < d_i, or d_j = d_i and j < i}, all distinct; the
 * candidates of rank < k go to slot rank, added in slot order: the same
 * selection and order as above. db: the bits of d (d >= 0: ordered like
 * the values). Branch-free over a fixed trip count, so it vectorises;
 * built also for AVX2 where the compiler supports function clones (the
 * integer ranks are the same on every path). */
#if defined(__GNUC__) && !defined(__clang__)
#define PSP_VECTORISE __attribute__((optimize("O3,tree-vectorize")))
#else
#define PSP_VECTORISE
#endif
#ifndef __has_feature
#define __has_feature(x) 0
#endif
/* no clones under the sanitizers: their runtimes are not up yet when the
 * dynamic loader runs the clones' ifunc resolvers (TSan crashes there) */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) ||                               \
    __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||                         \
    __has_feature(memory_sanitizer)
#define PSP_NO_CLONES 1
#endif
#if defined(__x86_64__) && defined(__linux__) && (defined(__clang__) || __GNUC__ >= 6) &&          \
    !defined(PSP_NO_CLONES)
#define PSP_AVX2_CLONE __attribute__((target_clones("avx2", "default")))
#else
#define PSP_AVX2_CLONE
#endif
PSP_AVX2_CLONE PSP_VECTORISE static double sum_k_nearest_full(const uint32_t *db, const float *m2) {
  float slot[WIN_K];
  int32_t rank[WIN_MAX] = {0}; /* accumulated over j, vectorised over i */
  uint32_t low = 0;
  for (int i = 0; i < WIN_MAX; i++)
    low |= db[i];
  if (!(low & 63)) {
    /* the 6 lowest bits of every d are 0 (e.g. integer data below 2^17):
     * the index fits there, one 32-bit key per candidate (sign bit 0) */
    int32_t key[WIN_MAX];
    for (int i = 0; i < WIN_MAX; i++)
      key[i] = (int32_t)(db[i] | (uint32_t)i);
    for (int j = 0; j < WIN_MAX; j++) {
      const int32_t kj = key[j];
      for (int i = 0; i < WIN_MAX; i++)
        rank[i] += kj < key[i];
    }
  } else {
    for (int j = 0; j < WIN_MAX; j++) {
      const uint32_t dj = db[j];
      for (int i = 0; i < WIN_MAX; i++)
        rank[i] += (dj < db[i]) | ((dj == db[i]) & (j < i));
    }
  }
  for (int i = 0; i < WIN_MAX; i++)
    if (rank[i] < WIN_K) slot[rank[i]] = m2[i];
  double s = 0;
  for (int i = 0; i < WIN_K; i++)
    s += slot[i];
  return s;
}

/* Corrected magnitude of m (guide image g: the other image) for the voxels
 * with s1 (+ s2) at or above skip; the others get the bias at A = 0.
 * Candidates in window order (rows of the window, then columns; centre
 * left out), so ties resolve the same inside the image and at its edges. */
void psp_dixon_rician_correct(const float *m, const float *g, float *out, const int64_t d[3],
                              double sigma, const double *tab, const float *s1, const float *s2,
                              double skip) {
  const int64_t nx = d[0], ny = d[1], nz = d[2];
  const double inv_s2 = 1.0 / (sigma * sigma), c0 = sigma * rice_bias(0.0);
  int64_t off[WIN_MAX];
  int no = 0;
  for (int64_t dj = -WIN_R; dj <= WIN_R; dj++)
    for (int64_t di = -WIN_R; di <= WIN_R; di++)
      if (di || dj) off[no++] = dj * nx + di;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t k = 0; k < nz; k++) {
    uint64_t key[WIN_MAX];
    uint32_t db[WIN_MAX];
    float m2[WIN_MAX];
    const float *ms = m + k * nx * ny, *gs = g + k * nx * ny;
    float *os = out + k * nx * ny;
    for (int64_t j = 0; j < ny; j++)
      for (int64_t i = 0; i < nx; i++) {
        int64_t v = j * nx + i;
        if ((double)s1[k * nx * ny + v] + (s2 ? (double)s2[k * nx * ny + v] : 0.0) < skip) {
          os[v] = (float)(ms[v] - c0);
          continue;
        }
        const float gv = gs[v];
        double s;
        int kk = WIN_K;
        if (i >= WIN_R && i < nx - WIN_R && j >= WIN_R && j < ny - WIN_R) {
          for (int q = 0; q < WIN_MAX; q++) {
            const int64_t u = v + off[q];
            const float dd = fabsf(gs[u] - gv);
            memcpy(&db[q], &dd, sizeof db[q]);
            m2[q] = ms[u] * ms[u];
          }
          s = sum_k_nearest_full(db, m2);
        } else {
          int cnt = 0;
          for (int64_t dj = -WIN_R; dj <= WIN_R; dj++) {
            int64_t jj = j + dj;
            if (jj < 0 || jj >= ny) continue;
            for (int64_t di = -WIN_R; di <= WIN_R; di++) {
              int64_t ii = i + di;
              if (ii < 0 || ii >= nx || (di == 0 && dj == 0)) continue;
              int64_t u = jj * nx + ii;
              float dd = fabsf(gs[u] - gv);
              uint32_t bits;
              memcpy(&bits, &dd, sizeof bits);
              key[cnt] = (uint64_t)bits << 8 | (uint64_t)cnt;
              m2[cnt] = ms[u] * ms[u];
              cnt++;
            }
          }
          /* (fewer candidates only at the corners of tiny images) */
          kk = cnt < WIN_K ? cnt : WIN_K;
          s = sum_k_nearest(key, m2, cnt, kk);
        }
        double corr = kk ? table_correction(tab, s * inv_s2 / kk - 2.0) : rice_bias(0.0);
        os[v] = (float)(ms[v] - sigma * corr);
      }
  }
}
