/*
 * DESIGN: the log histogram of the noise estimation's background mask
 * (src/dixon/noise.c: background = Otsu class of log(a + b)), bin for bin
 * the same counts as evaluating, per voxel with s = a + b > 0,
 *   k = (int)((log(s) - lmin) / (lmax - lmin) * nb), at most nb - 1,
 * without a log per voxel (that log was most of the FF-map stage on
 * images with fractional values, e.g. float64 exports).
 *
 * Integer sums (integer images): the bin of each value 1..smax once, by the
 * formula, when there are far fewer values than voxels (a table).
 *
 * Other sums: the formula is monotonic in s, so bin k holds the s in
 * [t_k, t_k+1) with t_k the smallest double whose formula gives >= k,
 * found by bisection over the doubles in [smin, smax] with the formula
 * itself (nb x ~25 logs: first bracketed by the ideal edge +- 2^-30 when
 * the formula confirms it, else the whole range). Per voxel: a first guess from the leading bits
 * of s (a table over cells of the doubles in [smin, smax], each the bin of
 * its lowest value), raised while s >= t_k+1. A voxel within a relative
 * 2^-30 of a bin edge is binned by the formula itself: the rounding of
 * log and of the arithmetic can only move the edge by a few units in the
 * last place, so the counts are those of the formula even if log were not
 * exactly monotonic there. Without memory for the tables: the formula.
 *
 * Threads: per-thread integer counts added exactly (the same at any
 * thread count).
 */
#include "dixon/noise.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { CELL_MAX = 1 << 14 };

static inline int log_bin(double s, double lmin, double lmax, int nb) {
  int k = (int)((log(s) - lmin) / (lmax - lmin) * nb);
  return k < nb ? k : nb - 1;
}

static inline uint64_t dbits(double x) {
  uint64_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

static inline double bits_d(uint64_t u) {
  double x;
  memcpy(&x, &u, sizeof x);
  return x;
}

/* bin edges: edge[k] = t_k (k = 0..nb; t_0 = 0, t_nb = inf), safe[k] =
 * the part of [t_k, t_k+1) away from its ends, cell[c] the bin of the
 * lowest double of cell c */
typedef struct {
  double *edge, (*safe)[2];
  uint16_t *cell;
  uint64_t base;
  int shift;
  int64_t ncell;
} edges;

static void edges_free(edges *e) {
  free(e->edge);
  free(e->safe);
  free(e->cell);
}

static bool edges_build(edges *e, double smin, double smax, double lmin, double lmax, int nb) {
  memset(e, 0, sizeof *e);
  if (!(smin > 0) || !(smax >= smin) || !isfinite(smax)) return false;
  e->edge = malloc(((size_t)nb + 1) * sizeof *e->edge);
  e->safe = malloc((size_t)nb * sizeof *e->safe);
  const uint64_t blo = dbits(smin), bhi = dbits(smax);
  e->shift = 0;
  while (e->shift < 63 && (int64_t)((bhi >> e->shift) - (blo >> e->shift)) + 1 > CELL_MAX)
    e->shift++;
  e->base = blo >> e->shift;
  e->ncell = (int64_t)((bhi >> e->shift) - e->base) + 1;
  e->cell = malloc((size_t)e->ncell * sizeof *e->cell);
  if (!e->edge || !e->safe || !e->cell) {
    edges_free(e);
    return false;
  }
  e->edge[0] = 0.0;
  e->edge[nb] = INFINITY;
  const int top = log_bin(smax, lmin, lmax, nb);
#pragma omp parallel for schedule(static)
  for (int k = 1; k < nb; k++) {
    if (k > top) {
      e->edge[k] = INFINITY;
      continue;
    }
    uint64_t lo = blo, hi = bhi; /* bin(lo) < k <= bin(hi), or lo = smin */
    if (log_bin(smin, lmin, lmax, nb) >= k) hi = lo;
    /* a narrow bracket around the ideal edge when it holds (fewer steps) */
    const double t = exp(lmin + (lmax - lmin) * k / nb);
    const double tlo = t * (1.0 - 0x1p-30), thi = t * (1.0 + 0x1p-30);
    if (hi > lo && tlo > smin && thi < smax && log_bin(tlo, lmin, lmax, nb) < k &&
        log_bin(thi, lmin, lmax, nb) >= k)
      lo = dbits(tlo), hi = dbits(thi);
    while (hi - lo > 1) {
      const uint64_t mid = lo + (hi - lo) / 2;
      if (log_bin(bits_d(mid), lmin, lmax, nb) >= k)
        hi = mid;
      else
        lo = mid;
    }
    e->edge[k] = bits_d(hi);
  }
  for (int k = 1; k < nb; k++) /* (monotonic by construction, unless log is not) */
    e->edge[k] = e->edge[k] > e->edge[k - 1] ? e->edge[k] : e->edge[k - 1];
  const double eps = 0x1p-30;
  for (int k = 0; k < nb; k++) {
    e->safe[k][0] = e->edge[k] * (1.0 + eps);
    e->safe[k][1] = e->edge[k + 1] * (1.0 - eps);
  }
  int k = 0;
  for (int64_t c = 0; c < e->ncell; c++) {
    const double lowest = bits_d((e->base + (uint64_t)c) << e->shift);
    while (k + 1 < nb && e->edge[k + 1] <= lowest)
      k++;
    e->cell[c] = (uint16_t)k;
  }
  return true;
}

static inline int edges_bin(const edges *e, double s, double lmin, double lmax, int nb) {
  const int64_t c = (int64_t)((dbits(s) >> e->shift) - e->base);
  if (c < 0 || c >= e->ncell) return log_bin(s, lmin, lmax, nb);
  int k = e->cell[c];
  while (s >= e->edge[k + 1])
    k++;
  if (s < e->safe[k][0] || s >= e->safe[k][1]) return log_bin(s, lmin, lmax, nb);
  return k;
}

int64_t *psp_dixon_log_hist(const float *a, const float *b, int64_t n, double smin, double smax,
                            double lmin, double lmax, bool integer) {
  enum { NB = PSP_DIXON_LOG_NB };
  const int nb = NB;
  int64_t *h = calloc(NB, sizeof *h);
  if (!h) return NULL;
  uint16_t *lut = integer && smax <= PSP_DIXON_LUT_MAX && 8.0 * smax < (double)n
                      ? malloc(((size_t)smax + 1) * sizeof *lut)
                      : NULL;
  if (lut) {
    const int64_t top = (int64_t)smax;
#pragma omp parallel for schedule(static)
    for (int64_t v = 1; v <= top; v++)
      lut[v] = (uint16_t)log_bin((double)v, lmin, lmax, nb);
  }
  edges e;
  const bool have_edges = !lut && edges_build(&e, smin, smax, lmin, lmax, nb);
#pragma omp parallel
  {
    int64_t loc[NB] = {0}; /* per-thread counts, added exactly */
    if (lut) {
#pragma omp for schedule(static) nowait
      for (int64_t i = 0; i < n; i++) {
        double s = (double)a[i] + (double)b[i];
        if (s > 0) loc[lut[(int64_t)s]]++;
      }
    } else if (have_edges) {
#pragma omp for schedule(static) nowait
      for (int64_t i = 0; i < n; i++) {
        double s = (double)a[i] + (double)b[i];
        if (s > 0) loc[edges_bin(&e, s, lmin, lmax, nb)]++;
      }
    } else {
#pragma omp for schedule(static) nowait
      for (int64_t i = 0; i < n; i++) {
        double s = (double)a[i] + (double)b[i];
        if (s > 0) loc[log_bin(s, lmin, lmax, nb)]++;
      }
    }
    bool unused = false;
    psp_dixon_hist_merge(h, loc, NB, &unused);
  }
  free(lut);
  if (have_edges) edges_free(&e);
  return h;
}
