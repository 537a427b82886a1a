/*
 * DESIGN: the Rician noise-bias correction of Dixon magnitudes, for the
 * FF-map stage (src/dixon/dixon.c, whose DESIGN comment states the method:
 * M -> M - sigma c(t), t from the K = 12 of the 48 in-plane neighbours
 * closest in the other image, c a table from a regularised deconvolution;
 * from the voxel's own magnitude at or above 16 sigma). The noise
 * estimation is in src/dixon/noise.c.
 *
 * Table: built by psp_dixon_correction_table, compiled in as
 * src/dixon/rician_table.c (scripts/make_rician_table.c regenerates it).
 *
 * Correction: per voxel a search for the threshold of the 12 nearest (see
 * "Interior voxels" below) instead of ranking all 48 candidates; the same
 * selection and, where the sum of 12 squared magnitudes is not exact in
 * double, the same summation order, so the output is unchanged to the bit.
 *
 * Speed: AVX2 kernels (src/dixon/simd.h, chosen at run time) for the
 * window search, portable code elsewhere, the same results (no
 * contraction; unit tests compare both with a plain reference). The
 * correction works on chunks of a row in stages (correct_row): screening
 * into lists of voxels (own magnitude / window), the own-magnitude
 * corrections 4 at a time, the interior windows GROUP at a time (their
 * binary key searches interleaved: independent chains instead of one
 * latency-bound chain per voxel), then the table lookups 4 at a time (the
 * same division and floor per lane, the table gathered). Vector lanes do
 * the scalar code's operations in its order, so every lane is bitwise the
 * scalar result.
 *
 * Deterministic: slices written by one thread each; the table is a
 * constant; the search's starting points only decide its speed.
 */
#include "dixon/noise.h"
#include "dixon/simd.h"

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

/* c(t): the table inside it, the Rice bias of sqrt(t) beyond (the bin
 * compared in double, so that no t converts out of int's range) */
static double table_correction(const double *tab, double t) {
  const double u = floor((t - TAB_TMIN) / TAB_DT);
  if (!(u < TAB_N)) return rice_bias_large(sqrt(t));
  return tab[u < 0 ? 0 : (int)u];
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
#define GROUP 8       /* windows searched at once */
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

/* Lanes (bits in lane order) whose d equals t (eq) or exceeds it (!eq). */
PSP_TARGET_AVX2 static inline uint64_t cmp_mask_avx2(const uint32_t *dl, uint32_t t, bool eq) {
  const __m256i tv = _mm256_set1_epi32((int)t);
  uint64_t m = 0;
  for (int r = 0; r < 2 * WIN_R + 1; r++) {
    __m256i d = _mm256_loadu_si256((const __m256i *)(dl + r * ROW_L));
    __m256i c = eq ? _mm256_cmpeq_epi32(d, tv) : _mm256_cmpgt_epi32(d, tv);
    m |= (uint64_t)(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(c)) << (ROW_L * r);
  }
  return m;
}

PSP_TARGET_AVX2 static inline uint64_t le_mask_avx2(const uint32_t *dl, uint32_t t) {
  return ~cmp_mask_avx2(dl, t, false) & lane_valid();
}

PSP_TARGET_AVX2 static inline uint64_t eq_mask_avx2(const uint32_t *dl, uint32_t t) {
  return cmp_mask_avx2(dl, t, true); /* (callers mask it) */
}

/* k* and the masks of key_search for n <= GROUP windows: their binary
 * searches step together (independent chains, so the latency of one
 * search's 8 dependent steps is hidden behind the others). */
PSP_TARGET_AVX2 static inline void key_search_group_avx2(const window *w, int n, int *k,
                                                         uint64_t *lt, uint64_t *le) {
  int kv[GROUP] = {0}; /* (all GROUP: a fixed trip count; windows past n are stale, unused) */
  for (int step = (KEY_TOP + 1) / 2; step > 0; step /= 2)
    for (int g = 0; g < GROUP; g++) {
      const __m256i k0 = _mm256_loadu_si256((const __m256i *)w[g].k8);
      const __m256i k1 = _mm256_loadu_si256((const __m256i *)(w[g].k8 + 32));
      kv[g] += 64 - POPC64(key_gt_avx2(k0, k1, kv[g] + step - 1)) < WIN_K ? step : 0;
    }
  for (int g = 0; g < n; g++)
    k[g] = kv[g];
  for (int g = 0; g < n; g++) {
    const __m256i k0 = _mm256_loadu_si256((const __m256i *)w[g].k8);
    const __m256i k1 = _mm256_loadu_si256((const __m256i *)(w[g].k8 + 32));
    lt[g] = k[g] > 0 ? ~key_gt_avx2(k0, k1, k[g] - 1) : 0;
    le[g] = k[g] < KEY_TOP ? ~key_gt_avx2(k0, k1, k[g]) : 0;
  }
}

/* Appends i + the lanes of the 4-bit mask m to list (4 entries written). */
PSP_TARGET_AVX2 static inline int list_add_avx2(int32_t *list, int cnt, unsigned m, __m128i iv) {
  /* lanes of each mask, 4 bits each, in increasing order */
  static const uint32_t packed[16] = {0x0, 0x0,  0x1,  0x10,  0x2,  0x20,  0x21,  0x210,
                                      0x3, 0x30, 0x31, 0x310, 0x32, 0x320, 0x321, 0x3210};
  const __m128i sh = _mm_setr_epi32(0, 4, 8, 12);
  const __m128i lanes =
      _mm_and_si128(_mm_srlv_epi32(_mm_set1_epi32((int)packed[m]), sh), _mm_set1_epi32(0xf));
  _mm_storeu_si128((__m128i *)(list + cnt), _mm_add_epi32(lanes, iv));
  return cnt + POPC64(m);
}

/* The chunk's screening: every voxel's output as skipped, and the lists of
 * the others (chunk offsets): hl at or above hi (own magnitude), wl the
 * rest (window). The same comparisons as screen_generic. */
PSP_TARGET_AVX2 static inline void screen_avx2(const float *mr, const float *a1, const float *a2,
                                               int n, double c0, double skip, double hi,
                                               float *orow, int32_t *hl, int *nh, int32_t *wl,
                                               int *nw) {
  const __m256d c0v = _mm256_set1_pd(c0), skv = _mm256_set1_pd(skip), hiv = _mm256_set1_pd(hi);
  int h = 0, w = 0, i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m256d mv = _mm256_cvtps_pd(_mm_loadu_ps(mr + i));
    _mm_storeu_ps(orow + i, _mm256_cvtpd_ps(_mm256_sub_pd(mv, c0v)));
    __m256d s = _mm256_cvtps_pd(_mm_loadu_ps(a1 + i));
    if (a2) s = _mm256_add_pd(s, _mm256_cvtps_pd(_mm_loadu_ps(a2 + i)));
    const unsigned p = (unsigned)_mm256_movemask_pd(_mm256_cmp_pd(s, skv, _CMP_NLT_UQ));
    if (!p) continue;
    const unsigned hm = (unsigned)_mm256_movemask_pd(_mm256_cmp_pd(mv, hiv, _CMP_GE_OQ));
    const __m128i iv = _mm_set1_epi32(i);
    h = list_add_avx2(hl, h, p & hm, iv);
    w = list_add_avx2(wl, w, p & ~hm, iv);
  }
  for (; i < n; i++) {
    const double mv = mr[i];
    orow[i] = (float)(mv - c0);
    const int p = !((double)a1[i] + (a2 ? (double)a2[i] : 0.0) < skip), hm = mv >= hi;
    hl[h] = i;
    h += p & hm;
    wl[w] = i;
    w += p & !hm;
  }
  *nh = h;
  *nw = w;
}

PSP_TARGET_AVX2 static inline __m256d horner_avx2(const double *c, int n, __m256d y) {
  __m256d s = _mm256_set1_pd(c[n - 1]);
  for (int i = n - 2; i >= 0; i--)
    s = _mm256_add_pd(_mm256_mul_pd(s, y), _mm256_set1_pd(c[i]));
  return s;
}

/* rice_bias_large of 4 lanes, the same operations; the lanes of want with
 * y < 3.75 (a < 3.9: never from the callers) by rice_bias. */
PSP_TARGET_AVX2 static inline __m256d rice_bias_large_avx2(__m256d a, __m256d want) {
  const __m256d half = _mm256_set1_pd(0.5);
  const __m256d gt40 = _mm256_cmp_pd(a, _mm256_set1_pd(40.0), _CMP_GT_OQ);
  const unsigned big = (unsigned)_mm256_movemask_pd(gt40);
  __m256d out = _mm256_setzero_pd();
  if (big != 0xf) { /* the series of the Bessel functions */
    const __m256d x = _mm256_mul_pd(_mm256_mul_pd(half, a), a), y = _mm256_mul_pd(half, x);
    const __m256d z = _mm256_div_pd(_mm256_set1_pd(3.75), y), r = _mm256_sqrt_pd(y);
    const __m256d i0 = _mm256_div_pd(horner_avx2(i0e_large, 9, z), r);
    const __m256d i1 = _mm256_div_pd(horner_avx2(i1e_large, 9, z), r);
    out = _mm256_sub_pd(
        _mm256_mul_pd(_mm256_set1_pd(sqrt(0.5 * PSP_PI)),
                      _mm256_add_pd(_mm256_mul_pd(_mm256_add_pd(_mm256_set1_pd(1.0), x), i0),
                                    _mm256_mul_pd(x, i1))),
        a);
    const unsigned low = (unsigned)_mm256_movemask_pd(_mm256_andnot_pd(
        gt40, _mm256_and_pd(want, _mm256_cmp_pd(y, _mm256_set1_pd(3.75), _CMP_LT_OQ))));
    if (low) {
      double av[4], ov[4];
      _mm256_storeu_pd(av, a);
      _mm256_storeu_pd(ov, out);
      for (int l = 0; l < 4; l++)
        if (low >> l & 1) ov[l] = rice_bias(av[l]);
      out = _mm256_loadu_pd(ov);
    }
  }
  if (big) { /* a > 40: the asymptotic series */
    const __m256d as = _mm256_sub_pd(
        _mm256_add_pd(_mm256_add_pd(a, _mm256_div_pd(half, a)),
                      _mm256_div_pd(_mm256_set1_pd(0.125), _mm256_mul_pd(_mm256_mul_pd(a, a), a))),
        a);
    out = _mm256_blendv_pd(out, as, gt40);
  }
  return out;
}

/* Entries q .. q + 3 of a list of cnt (the last repeated past cnt). */
PSP_TARGET_AVX2 static inline __m128i list4_avx2(const int32_t *list, int q, int cnt) {
  if (q + 4 <= cnt) return _mm_loadu_si128((const __m128i *)(list + q));
  int32_t ix[4];
  for (int l = 0; l < 4; l++)
    ix[l] = list[q + l < cnt ? q + l : cnt - 1];
  return _mm_loadu_si128((const __m128i *)ix);
}

PSP_TARGET_AVX2 static inline void store4_avx2(float *orow, __m128i idx, __m128 v) {
  int32_t ix[4];
  float fv[4];
  _mm_storeu_si128((__m128i *)ix, idx);
  _mm_storeu_ps(fv, v);
  for (int l = 0; l < 4; l++)
    orow[ix[l]] = fv[l];
}

/* Voxels of hl: the correction from their own magnitude, 4 at a time. */
PSP_TARGET_AVX2 static inline void correct_own_avx2(const float *mr, float *orow, const int32_t *hl,
                                                    int nh, double sigma, double inv_s2) {
  const __m256d all = _mm256_castsi256_pd(_mm256_set1_epi32(-1));
  for (int q = 0; q < nh; q += 4) {
    const __m128i idx = list4_avx2(hl, q, nh);
    const __m256d mv = _mm256_cvtps_pd(_mm_i32gather_ps(mr, idx, 4));
    const __m256d t = _mm256_sub_pd(_mm256_mul_pd(_mm256_mul_pd(mv, mv), _mm256_set1_pd(inv_s2)),
                                    _mm256_set1_pd(2.0));
    const __m256d c = rice_bias_large_avx2(_mm256_sqrt_pd(t), all);
    store4_avx2(orow, idx,
                _mm256_cvtpd_ps(_mm256_sub_pd(mv, _mm256_mul_pd(_mm256_set1_pd(sigma), c))));
  }
}

/* Voxels of il with window sums sv: table_correction of t = sv * inv_s2 /
 * WIN_K - 2, 4 at a time (the same bin: the same division and floor). */
PSP_TARGET_AVX2 static inline void correct_table_avx2(const float *mr, float *orow,
                                                      const int32_t *il, const double *sv, int ni,
                                                      double sigma, double inv_s2,
                                                      const double *tab) {
  for (int q = 0; q < ni; q += 4) {
    const __m128i idx = list4_avx2(il, q, ni);
    const __m256d s = _mm256_loadu_pd(sv + q); /* (sv: the last repeated past ni) */
    const __m256d t = _mm256_sub_pd(
        _mm256_div_pd(_mm256_mul_pd(s, _mm256_set1_pd(inv_s2)), _mm256_set1_pd((double)WIN_K)),
        _mm256_set1_pd(2.0));
    const __m256d f = _mm256_floor_pd(
        _mm256_div_pd(_mm256_sub_pd(t, _mm256_set1_pd(TAB_TMIN)), _mm256_set1_pd(TAB_DT)));
    const __m256d lm = _mm256_cmp_pd(f, _mm256_set1_pd((double)TAB_N), _CMP_NLT_UQ);
    const __m128i b = _mm256_cvttpd_epi32(
        _mm256_min_pd(_mm256_max_pd(f, _mm256_setzero_pd()), _mm256_set1_pd(TAB_N - 1)));
    __m256d c = _mm256_i32gather_pd(tab, b, 8);
    if (_mm256_movemask_pd(lm))
      c = _mm256_blendv_pd(c, rice_bias_large_avx2(_mm256_sqrt_pd(t), lm), lm);
    const __m256d mv = _mm256_cvtps_pd(_mm_i32gather_ps(mr, idx, 4));
    store4_avx2(orow, idx,
                _mm256_cvtpd_ps(_mm256_sub_pd(mv, _mm256_mul_pd(_mm256_set1_pd(sigma), c))));
  }
}

/* slice_sums_exact's passes: the largest bits of |m|; whether some
 * m * m * scale (float products) below 2^23 is not an integer. */
PSP_TARGET_AVX2 static uint32_t abs_max_avx2(const float *ms, int64_t np) {
  const __m256i absm = _mm256_set1_epi32(0x7fffffff);
  __m256i mx = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 8 <= np; i += 8)
    mx =
        _mm256_max_epu32(mx, _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(ms + i)), absm));
  uint32_t b[8], amax = 0;
  _mm256_storeu_si256((__m256i *)b, mx);
  for (int l = 0; l < 8; l++)
    amax = b[l] > amax ? b[l] : amax;
  for (; i < np; i++) {
    const uint32_t a = float_bits(ms[i]) & 0x7fffffffu;
    amax = a > amax ? a : amax;
  }
  return amax;
}

PSP_TARGET_AVX2 static int not_integral_avx2(const float *ms, int64_t np, float scale) {
  const __m256 sc = _mm256_set1_ps(scale), two23 = _mm256_set1_ps(0x1p23f);
  __m256 bad = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= np; i += 8) {
    const __m256 m = _mm256_loadu_ps(ms + i), x = _mm256_mul_ps(_mm256_mul_ps(m, m), sc);
    const __m256 r = _mm256_sub_ps(_mm256_add_ps(x, two23), two23);
    bad = _mm256_or_ps(
        bad, _mm256_and_ps(_mm256_cmp_ps(x, two23, _CMP_LT_OQ), _mm256_cmp_ps(r, x, _CMP_NEQ_UQ)));
  }
  int b = _mm256_movemask_ps(bad) != 0;
  for (; i < np; i++) {
    const float x = ms[i] * ms[i] * scale;
    b |= (x < 0x1p23f) & ((x + 0x1p23f) - 0x1p23f != x);
  }
  return b;
}

#define ISA(f, avx2) ((avx2) ? f##_avx2 : f##_generic)
#else
#define ISA(f, avx2) f##_generic
#endif

/* Portable versions of the chunk stages (the same operations, per voxel). */
static PSP_INLINE void key_search_group_generic(const window *w, int n, int *k, uint64_t *lt,
                                                uint64_t *le) {
  for (int g = 0; g < n; g++)
    k[g] = key_search_generic(w[g].k8, &lt[g], &le[g]);
}

static PSP_INLINE void screen_generic(const float *mr, const float *a1, const float *a2, int n,
                                      double c0, double skip, double hi, float *orow, int32_t *hl,
                                      int *nh, int32_t *wl, int *nw) {
  int h = 0, w = 0;
  for (int i = 0; i < n; i++)
    orow[i] = (float)(mr[i] - c0);
  for (int i = 0; i < n; i++) {
    const double mv = mr[i];
    const int p = !((double)a1[i] + (a2 ? (double)a2[i] : 0.0) < skip), hm = mv >= hi;
    hl[h] = i;
    h += p & hm;
    wl[w] = i;
    w += p & !hm;
  }
  *nh = h;
  *nw = w;
}

static PSP_INLINE void correct_own_generic(const float *mr, float *orow, const int32_t *hl, int nh,
                                           double sigma, double inv_s2) {
  for (int q = 0; q < nh; q++) {
    const double mv = mr[hl[q]];
    orow[hl[q]] = (float)(mv - sigma * rice_bias_large(sqrt(mv * mv * inv_s2 - 2.0)));
  }
}

static PSP_INLINE void correct_table_generic(const float *mr, float *orow, const int32_t *il,
                                             const double *sv, int ni, double sigma, double inv_s2,
                                             const double *tab) {
  for (int q = 0; q < ni; q++)
    orow[il[q]] = (float)(mr[il[q]] - sigma * table_correction(tab, sv[q] * inv_s2 / WIN_K - 2.0));
}

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
 * from base; k = k*, lt, le: from key_search). */
static PSP_INLINE uint64_t select_k(const window *w, int base, int k, uint64_t lt, uint64_t le,
                                    bool avx2) {
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
static bool slice_sums_exact(const float *ms, int64_t np, bool avx2) {
  uint32_t amax = 0; /* bits of |m| (finite: ordered like the values) */
  int64_t i = 0;
#ifdef PSP_AVX2_KERNEL
  if (avx2) {
    amax = abs_max_avx2(ms, np);
    i = np;
  }
#endif
  for (; i < np; i++) {
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
  i = 0;
#ifdef PSP_AVX2_KERNEL
  if (avx2) {
    bad = not_integral_avx2(ms, np, scale);
    i = np;
  }
#endif
  for (; i < np; i++) {
    const float x = ms[i] * ms[i] * scale;
    bad |= (x < 0x1p23f) & ((x + 0x1p23f) - 0x1p23f != x);
  }
  return !bad;
}

/* Window sums of n <= GROUP interior windows into s. */
static PSP_INLINE void group_sums(const window *w, int n, int base, bool exact, double *s,
                                  bool avx2) {
  int k[GROUP];
  uint64_t lt[GROUP], le[GROUP];
  ISA(key_search_group, avx2)(w, n, k, lt, le);
  for (int g = 0; g < n; g++)
    s[g] = sum_selected(select_k(&w[g], base, k[g], lt[g], le[g], avx2), &w[g], exact, avx2);
}

/* Corrected magnitudes of the voxels of row j with s1 (+ s2) at or above
 * skip (from their own magnitude at or above HI_SNR sigma); the others get
 * the bias at A = 0. Candidates in window order (rows
 * of the window, then columns; centre left out), so ties resolve the same
 * inside the image and at its edges. base: of the keys. Per chunk of the
 * row: the screening into lists, the own-magnitude voxels, the interior
 * windows GROUP at a time (their sums), the edge voxels one by one, then
 * the table lookups of the interior windows. w: GROUP windows (their
 * padding lanes set). */
static PSP_INLINE void correct_row(const float *ms, const float *gs, float *os, const float *r1,
                                   const float *r2, int64_t j, int64_t nx, int64_t ny, double sigma,
                                   const double *tab, double skip, bool exact, int base, window *w,
                                   bool avx2) {
  const double inv_s2 = 1.0 / (sigma * sigma), c0 = sigma * rice_bias(0.0), hi = HI_SNR * sigma;
  uint64_t key[WIN_MAX];
  float m2e[WIN_MAX];
  const bool row_inside = j >= WIN_R && j < ny - WIN_R;
  for (int64_t i0 = 0; i0 < nx; i0 += ROW_CHUNK) {
    const int n = (int)(nx - i0 < ROW_CHUNK ? nx - i0 : ROW_CHUNK);
    const float *mr = ms + j * nx + i0, *a1 = r1 + i0, *a2 = r2 ? r2 + i0 : NULL;
    float *orow = os + j * nx + i0;
    /* lists of chunk offsets (room for the 4 entries the AVX2 kernels
     * write past the end) */
    int32_t hl[ROW_CHUNK + 4], wl[ROW_CHUNK + 4], il[ROW_CHUNK];
    double sv[ROW_CHUNK + 4];
    int nh, nw, ni = 0, g = 0;
    ISA(screen, avx2)(mr, a1, a2, n, c0, skip, hi, orow, hl, &nh, wl, &nw);
    if (nh) ISA(correct_own, avx2)(mr, orow, hl, nh, sigma, inv_s2);
    for (int q = 0; q < nw; q++) {
      const int64_t i = i0 + wl[q], v = j * nx + i;
      if (row_inside && i >= WIN_R && i < nx - WIN_R) {
        ISA(window, avx2)(gs, ms, v, nx, nx * ny, base, &w[g]);
        il[ni + g] = wl[q];
        if (++g == GROUP) {
          group_sums(w, g, base, exact, sv + ni, avx2);
          ni += g;
          g = 0;
        }
        continue;
      }
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
          m2e[cnt] = ms[u] * ms[u];
          cnt++;
        }
      }
      /* (fewer candidates only at the corners of tiny images) */
      const int kk = cnt < WIN_K ? cnt : WIN_K;
      const double s = sum_k_nearest(key, m2e, cnt, kk);
      double corr = kk ? table_correction(tab, s * inv_s2 / kk - 2.0) : rice_bias(0.0);
      os[v] = (float)(ms[v] - sigma * corr);
    }
    if (g) {
      group_sums(w, g, base, exact, sv + ni, avx2);
      ni += g;
    }
    if (ni) {
      for (int q = ni; q < ni + 4; q++)
        sv[q] = sv[ni - 1];
      ISA(correct_table, avx2)(mr, orow, il, sv, ni, sigma, inv_s2, tab);
    }
  }
}

#ifdef PSP_AVX2_KERNEL
PSP_TARGET_AVX2 static void correct_row_avx2(const float *ms, const float *gs, float *os,
                                             const float *r1, const float *r2, int64_t j,
                                             int64_t nx, int64_t ny, double sigma,
                                             const double *tab, double skip, bool exact, int base,
                                             window *w) {
  correct_row(ms, gs, os, r1, r2, j, nx, ny, sigma, tab, skip, exact, base, w, true);
}
#endif

static void correct_row_generic(const float *ms, const float *gs, float *os, const float *r1,
                                const float *r2, int64_t j, int64_t nx, int64_t ny, double sigma,
                                const double *tab, double skip, bool exact, int base, window *w) {
  correct_row(ms, gs, os, r1, r2, j, nx, ny, sigma, tab, skip, exact, base, w, false);
}

void psp_dixon_rician_correct_with(const float *m, const float *g, float *out, const int64_t d[3],
                                   double sigma, const double *tab, const float *s1,
                                   const float *s2, double skip, psp_dixon_kernel kernel) {
  const int64_t nx = d[0], ny = d[1], nz = d[2], plane = nx * ny;
  const bool avx2 = kernel == PSP_DIXON_KERNEL_AUTO && psp_dixon_have_avx2();
  /* keys from sigma / 16 to 16 sigma: d* is mostly about sigma */
  const int c = (int)(float_bits((float)sigma) >> KEY_SHIFT) - (KEY_TOP + 1) / 2,
            base = c < 0                   ? 0
                   : c > (int)KEY_BASE_MAX ? (int)KEY_BASE_MAX
                                           : c;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t k = 0; k < nz; k++) {
    const float *ms = m + k * plane, *gs = g + k * plane;
    float *os = out + k * plane;
    const bool exact = slice_sums_exact(ms, plane, avx2);
    window w[GROUP];
    for (int q = 0; q < GROUP; q++)
      for (int l = 0; l < 64; l++) /* (the padding lanes stay so) */
        w[q].dl[l] = D_NONE, w[q].m2[l] = 0.0f, w[q].k8[l] = KEY_TOP;
    for (int64_t j = 0; j < ny; j++) {
      const float *r1 = s1 + k * plane + j * nx, *r2 = s2 ? s2 + k * plane + j * nx : NULL;
#ifdef PSP_AVX2_KERNEL
      if (avx2)
        correct_row_avx2(ms, gs, os, r1, r2, j, nx, ny, sigma, tab, skip, exact, base, w);
      else
#endif
        correct_row_generic(ms, gs, os, r1, r2, j, nx, ny, sigma, tab, skip, exact, base, w);
    }
  }
}

void psp_dixon_rician_correct(const float *m, const float *g, float *out, const int64_t d[3],
                              double sigma, const double *tab, const float *s1, const float *s2,
                              double skip) {
  psp_dixon_rician_correct_with(m, g, out, d, sigma, tab, s1, s2, skip, PSP_DIXON_KERNEL_AUTO);
}
