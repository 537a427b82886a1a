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
 * vanishing above 2 sigma). Rebuilt per map (~40 ms), deterministic.
 * Measured on synthetic regions (tests/unit/test_dixon.c, SNR = muscle IP /
 * sigma): region FF (voxel mean and sum F / sum (F+W)) within 0.4 pp of the
 * truth at SNR 20 and 0.05 pp at SNR 50 for FF 0..60 %, uniform or streaky.
 * Limitation: a muscle touching tissue of another low FF with no fat
 * between (no contrast in the other image) mixes with it near the border:
 * +0.8 pp for a FF-0 region beside FF-5 % tissue at SNR 20.
 *
 * In-phase / opposed-phase. W = (IP + OP) / 2, F = (IP - OP) / 2 where
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
 * flip. All other voxels read as water-dominant: tissue with a true FF of
 * 50-80 % (fatty muscle, streaks, marrow, partial volume at fat borders) is
 * ambiguous with magnitude-only data and reads as 100 % - FF.
 *
 * Plausibility (swap check): per axial slice the body = voxels with signal,
 * 3 x 3 majority, largest component, holes filled; the subcutaneous layer
 * is its part 2..12 mm inside the outline, away from the image border (the
 * field of view may cut the body). Its median FF must exceed 60 %.
 *
 * Threads: parallel loops write disjoint outputs and per-slice sums added
 * in slice order: results do not depend on the thread count.
 */
#include "core/internal.h"

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
#define TAB_N 330  /* t in [-2, 64) */
#define TAB_NA 151 /* A = 0 .. 7.5 sigma */
#define TAB_DA 0.05
#define TAB_ALPHA 0.01  /* smoothness */
#define TAB_GAMMA 0.001 /* pull towards the plug-in correction */
#define TAB_W0 10.0     /* extra weight of small amplitudes ... */
#define TAB_AW 0.2      /* ... A < ~0.2 sigma (evens out the bias near 0) */

/* fat dominance (in-phase / opposed-phase) */
#define DOM_PURE_FFW 0.2 /* "pure" tissue: water-dominant reading FF_w <= this */
#define DOM_SMOOTH_R 1   /* sigma filter radius (in-plane voxels) */

#define SUBCUT_MIN_MM 2.0
#define SUBCUT_MAX_MM 12.0
#define SUBCUT_MIN_VOXELS 200
#define SUBCUT_FF_MIN 0.6

struct psp_ffmap {
  psp_volume *ff, *water, *fat;
  double sigma, floor, fat_dominant_share;
  const char *source;
};

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
static bool cholesky_solve(double *a, double *b, int n) {
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
static bool build_correction_table(double *tab, psp_error **err) {
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
  bool ok = cholesky_solve(mat, tab, n);
  free(mat);
  free(p);
  free(plug);
  if (!ok) return psp_error_set(err, PSP_ERR_INTERNAL, "noise-bias correction table is singular");
  return true;
}

/* Raw F + W below which a voxel cannot reach the floor after correction. */
static double skip_level(const double *tab, double floor_v, double sig_a, double sig_b) {
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
static void hist_merge(int64_t *h, const int64_t *loc, int nb, bool *failed) {
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
    hist_merge(h, loc, NB, &unused);
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
    hist_merge(h, loc, nb, &failed);
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
static bool estimate_noise(const psp_volume *a, const psp_volume *b, const char *what,
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
static void rician_correct(const float *m, const float *g, float *out, const int64_t d[3],
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
  int64_t n = psp_volume_voxel_count(a), bad = 0;
#pragma omp parallel for schedule(static) reduction(+ : bad)
  for (int64_t i = 0; i < n; i++)
    bad += !isfinite(a->data[i]) || !isfinite(b->data[i]);
  if (bad)
    return psp_error_set(err, PSP_ERR_DATA, "%s/%s images contain NaN or infinite values", na, nb);
  return true;
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

/* 99th percentile of a[i] (+ b[i]) over the voxels with a positive sum
 * (and bg[i] when bg is given), from a 65536-bin histogram; 0 when none. */
static double sum_p99(const float *a, const float *b, const uint8_t *bg, int64_t n, double smax,
                      int64_t *hist) {
  enum { NB = 65536 };
  memset(hist, 0, NB * sizeof *hist);
  int64_t total = 0;
  bool failed = false;
#pragma omp parallel reduction(+ : total)
  {
    int64_t *loc = calloc(NB, sizeof *loc); /* per-thread counts, added exactly */
#pragma omp for schedule(static) nowait
    for (int64_t i = 0; i < n; i++) {
      double s = (double)a[i] + (b ? (double)b[i] : 0.0);
      if (!loc || !(s > 0) || (bg && !bg[i])) continue;
      int k = (int)(s / smax * NB);
      loc[k < NB ? k : NB - 1]++;
      total++;
    }
    hist_merge(hist, loc, NB, &failed);
    free(loc);
  }
  if (failed) return -1.0;
  int64_t cum = 0;
  for (int k = 0; k < NB && total > 0; k++) {
    cum += hist[k];
    if ((double)cum >= 0.99 * (double)total) return (k + 1) * smax / NB;
  }
  return 0.0;
}

/* Floor of F + W (= a + b) when sigma is unknown: factor / 3 times the
 * larger of 1 % of its 99th percentile and the 99th percentile of the
 * background class (scanner backgrounds that are neither zero nor Rayleigh:
 * filtered or partly masked noise), the latter only when below 10 % of the
 * former. */
static bool data_floor(const float *a, const float *b, const uint8_t *bg, int64_t n, double factor,
                       double *floor_out, psp_error **err) {
  double smax = 0;
#pragma omp parallel for schedule(static) reduction(max : smax)
  for (int64_t i = 0; i < n; i++) {
    double s = (double)a[i] + (b ? (double)b[i] : 0.0);
    if (s > smax) smax = s;
  }
  if (!(smax > 0))
    return psp_error_set(err, PSP_ERR_DATA, "the images are empty (no voxel has signal)");
  int64_t *h = psp_malloc(65536 * sizeof *h, err);
  if (!h) return false;
  double p99 = sum_p99(a, b, NULL, n, smax, h), level = 0.01 * p99;
  /* believed only when it is low: otherwise the "background" is dark tissue */
  double bg99 = bg ? sum_p99(a, b, bg, n, smax, h) : 0.0;
  free(h);
  if (p99 < 0 || bg99 < 0) return psp_error_set(err, PSP_ERR_NOMEM, "out of memory");
  if (bg99 < 0.1 * p99) level = fmax(level, bg99);
  *floor_out = fmax(factor / 3.0 * level, FLT_MIN);
  return true;
}

/* FF = F / (F + W) where F + W >= floor, NaN elsewhere. */
static void fill_ff(psp_ffmap *m) {
  int64_t n = psp_volume_voxel_count(m->ff);
  const float *w = m->water->data, *f = m->fat->data;
  float *ff = m->ff->data;
  const double floor_v = m->floor;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) {
    double s = (double)w[i] + (double)f[i];
    ff[i] = s >= floor_v ? (float)((double)f[i] / s) : NAN;
  }
}

/* Common part of the magnitude inputs: checks, map, noise, floor, and the
 * (corrected) magnitudes of a and b in m->water and m->fat. For IP/OP input
 * F + W = a. */
static psp_ffmap *magnitude_map(const psp_volume *a, const psp_volume *b, bool ipop,
                                const psp_dixon_options *opt, psp_context *ctx, psp_error **err) {
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
  double sig[2], tab[TAB_N];
  uint8_t *bg = NULL;
  bool ok = estimate_noise(a, b, ipop ? "in-phase/opposed-phase" : "water/fat",
                           opt->noise_bias_correction, ctx, sig, &bg, err);
  if (ok && sig[0] > 0) {
    m->sigma = sqrt(0.5 * (sig[0] * sig[0] + sig[1] * sig[1]));
    double fw_sigma = ipop ? sig[0] : sqrt(sig[0] * sig[0] + sig[1] * sig[1]);
    m->floor = fmax(opt->noise_floor_factor * fw_sigma, FLT_MIN);
  } else if (ok) {
    ok = data_floor(a->data, fw2, bg, n, opt->noise_floor_factor, &m->floor, err);
  }
  free(bg);
  if (ok && sig[0] > 0 && opt->noise_bias_correction) {
    ok = build_correction_table(tab, err);
    double skip = ok ? skip_level(tab, m->floor, sig[0], ipop ? 0.0 : sig[1]) : 0.0;
    if (ok)
      rician_correct(a->data, b->data, m->water->data, a->dims, sig[0], tab, a->data, fw2, skip);
    if (ok)
      rician_correct(b->data, a->data, m->fat->data, a->dims, sig[1], tab, a->data, fw2, skip);
  } else if (ok) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
      m->water->data[i] = a->data[i];
      m->fat->data[i] = b->data[i];
    }
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
  psp_ffmap *m = magnitude_map(water, fat, false, opt, ctx, err);
  if (!m) return NULL;
  fill_ff(m);
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
 * holes filled. Slices whose body would be < 50 voxels stay empty. */
static bool body_mask(const uint8_t *sig, const int64_t d[3], uint8_t *body, psp_error **err) {
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
      /* 3 x 3 majority (>= 5 of the 9, outside the image counts 0) as a
       * separable box sum: horizontal sums, then vertical */
      for (int64_t j = 0; j < ny; j++) {
        const uint8_t *r = sg + j * nx;
        uint8_t *o = rows + j * nx;
        for (int64_t i = 0; i < nx; i++)
          o[i] = (uint8_t)((i > 0 ? r[i - 1] : 0) + r[i] + (i + 1 < nx ? r[i + 1] : 0));
      }
      for (int64_t j = 0; j < ny; j++) {
        const uint8_t *up = j > 0 ? rows + (j - 1) * nx : NULL;
        const uint8_t *mid = rows + j * nx;
        const uint8_t *dn = j + 1 < ny ? rows + (j + 1) * nx : NULL;
        uint8_t *c = clean + j * nx;
        for (int64_t i = 0; i < nx; i++)
          c[i] = (mid[i] + (up ? up[i] : 0) + (dn ? dn[i] : 0)) >= 5;
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
static bool outer_layer(const uint8_t *body, const int64_t d[3], const double sp[3], uint8_t *band,
                        psp_error **err) {
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

static void norm_coords(const grid_norm *gn, int64_t i, int64_t j, int64_t k, double *phi) {
  poly_basis(((double)i - gn->c[0]) / gn->h[0], ((double)j - gn->c[1]) / gn->h[1],
             ((double)k - gn->c[2]) / gn->h[2], phi);
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
 * field only. */
static bool fit_field(const float *y, const uint8_t *cls, int nc, const int64_t d[3],
                      const grid_norm *gn, int np, double coef[NPOLY], psp_error **err) {
  const int64_t nx = d[0], ny = d[1], nz = d[2];
  const int nu = np + nc - 1;
  enum { STRIDE = NUNK * NUNK + NUNK + 3 };
  double *acc = psp_malloc((size_t)nz * STRIDE * sizeof *acc, err);
  if (!acc) return false;
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
        for (int64_t j = 0; j < ny; j += 2)
          for (int64_t i = 0; i < nx; i += 2) {
            int64_t v = psp_idx(d, i, j, k);
            if (!cls[v]) continue;
            norm_coords(gn, i, j, k, phi);
            for (int c = 1; c < nc; c++)
              phi[np + c - 1] = cls[v] == c + 1;
            double r = y[v];
            for (int p = 0; p < nu; p++)
              r -= cf[p] * phi[p];
            if (round > 0 && fabs(r) > cut_r) continue;
            a[NUNK * NUNK + NUNK] += 1;
            a[NUNK * NUNK + NUNK + 1] += fabs(r);
            if (pass == 1) continue;
            for (int p = 0; p < nu; p++) {
              for (int q = 0; q < nu; q++)
                a[p * NUNK + q] += phi[p] * phi[q];
              a[NUNK * NUNK + p] += phi[p] * y[v];
            }
          }
      }
      double mat[NUNK * NUNK] = {0}, rhs[NUNK] = {0}, cnt = 0, sabs = 0;
      for (int64_t k = 0; k < nz; k++) {
        const double *a = acc + k * STRIDE;
        for (int p = 0; p < nu; p++) {
          for (int q = 0; q < nu; q++)
            mat[p * nu + q] += a[p * NUNK + q];
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
      if (!cholesky_solve(mat, rhs, nu)) goto out;
      memcpy(sol, rhs, (size_t)nu * sizeof *sol);
    }
  }
out:
  free(acc);
  memset(coef, 0, NPOLY * sizeof *coef);
  memcpy(coef, sol, (size_t)np * sizeof *coef);
  return true;
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
    if (isfinite(v[i])) {
      lo = fmin(lo, v[i]);
      hi = fmax(hi, v[i]);
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

/* Decides fat dominance per voxel; *share = fat-dominant / signal voxels. */
static bool resolve_fat_dominance(const psp_volume *ipv, const float *ip, const float *op,
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
  bool ok = pure && cid && cls && y && zr && zs && cnt;
  *share = 0.0;
  if (!ok) goto done;
  memset(fatdom, 0, (size_t)n);
  /* only voxels inside the body outline take part (no background noise) */
  for (int64_t v = 0; v < n; v++)
    cid[v] = ip[v] >= floor_v;
  double sp[3];
  psp_volume_spacing(ipv, sp);
  if (!body_mask(cid, d, pure, err) || !outer_layer(pure, d, sp, cls, err)) {
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
  double coef[NPOLY], thr[MAXC - 1];
  int nthr = 0;
  /* noise sd of log IP (the smooth field hardly changes pair differences) */
  const double sz = 2.5 * noise_sd_pairs(y, pure, d, zs);
  /* start: one class, the outer layer of the body (mostly subcutaneous
   * fat, whatever it holds it is one tissue), or if too small all pure
   * tissue with a linear field (a quadratic would take the fat ring for a
   * bias) */
  int64_t nband = 0;
  for (int64_t v = 0; v < n; v++)
    nband += cid[v] = pure[v] && cls[v];
  bool band_start = nband >= 50 * NPOLY;
  if (!band_start) memcpy(cid, pure, (size_t)n);
  for (int iter = 0; iter < 6; iter++) {
    /* class-adaptive field (EM-like): log IP = field + offset of the
     * voxel's tissue class, over all pure tissue, with the classes of the
     * previous round */
    int np = (iter == 0 && !band_start) ? NLIN : NPOLY;
    if (!fit_field(y, cid, nthr + 1, d, &gn, np, coef, err)) {
      ok = false;
      goto done;
    }
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < nz; k++) {
      double phi[NPOLY];
      for (int64_t j = 0; j < ny; j++)
        for (int64_t i = 0; i < nx; i++) {
          int64_t v = psp_idx(d, i, j, k);
          if (!pure[v]) continue;
          norm_coords(&gn, i, j, k, phi);
          zr[v] = (float)(y[v] - poly_eval(coef, phi));
        }
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
  return ok;
}

psp_ffmap *psp_ffmap_from_ipop(const psp_volume *inphase, const psp_volume *outphase,
                               const psp_dixon_options *opt, psp_context *ctx, psp_error **err) {
  psp_ffmap *m = magnitude_map(inphase, outphase, true, opt, ctx, err);
  if (!m) return NULL;
  int64_t n = psp_volume_voxel_count(inphase);
  /* the corrected IP / OP sit in the water / fat buffers until combined */
  float *ip = m->water->data, *op = m->fat->data;
  uint8_t *fatdom = psp_malloc((size_t)n, err);
  if (!fatdom ||
      !resolve_fat_dominance(inphase, ip, op, m->floor, fatdom, &m->fat_dominant_share, err)) {
    free(fatdom);
    psp_ffmap_free(m);
    return NULL;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) {
    float a = 0.5f * (ip[i] + op[i]), b = 0.5f * (ip[i] - op[i]);
    ip[i] = fatdom[i] ? b : a; /* water */
    op[i] = fatdom[i] ? a : b; /* fat */
  }
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

void psp_ffmap_free(psp_ffmap *m) {
  if (!m) return;
  psp_volume_free(m->ff);
  psp_volume_free(m->water);
  psp_volume_free(m->fat);
  free(m);
}

void psp_ffmap_release_magnitudes(psp_ffmap *m) {
  psp_volume_free(m->water);
  psp_volume_free(m->fat);
  m->water = m->fat = NULL;
}

const psp_volume *psp_ffmap_ff(const psp_ffmap *m) {
  return m->ff;
}
const psp_volume *psp_ffmap_water(const psp_ffmap *m) {
  return m->water;
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
  const int64_t plane = v->dims[0] * v->dims[1], nz = v->dims[2];
  int64_t *start = calloc((size_t)nz + 1, sizeof *start);
  if (sig) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++)
      sig[i] = !isnan(v->data[i]) && !(ffmap_input && v->data[i] == 0);
  }
  if (!sig || !body || !vals || !start || !body_mask(sig, v->dims, body, NULL) ||
      !outer_layer(body, v->dims, sp, sig, NULL)) {
    snprintf(r.message, sizeof r.message, "subcutaneous fat check skipped: out of memory");
    goto done;
  }
  /* gather the layer's FF slice by slice (the order does not matter: sorted) */
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < nz; k++) {
    int64_t c = 0;
    for (int64_t i = k * plane; i < (k + 1) * plane; i++)
      c += sig[i] && !isnan(v->data[i]);
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
  psp_sort_floats(vals, (size_t)nv);
  r.subcut_ff_median = psp_quantile_sorted(vals, (size_t)nv, 0.5);
  r.checked = true;
  r.ok = r.subcut_ff_median > SUBCUT_FF_MIN;
  if (r.ok) {
    snprintf(r.message, sizeof r.message,
             "subcutaneous fat FF median %.1f %% (plausible: above %.0f %%)",
             100.0 * r.subcut_ff_median, 100.0 * SUBCUT_FF_MIN);
    psp_info(ctx, "%s", r.message);
  } else {
    const char *why = "water and fat look swapped";
    if (strcmp(m->source, "inphase+opposed-phase") == 0)
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
