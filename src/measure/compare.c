/*
 * DESIGN: agreement between a predicted and a reference ("truth") label map,
 * the numbers segmentation papers report, per label 1..4 and for label 0 =
 * all four muscles together as one foreground; over the volume and, on
 * request, per axial slice (2-D, in-plane).
 *  - Dice = 2|P∩T| / (|P| + |T|): NaN when both masks are empty, 0 when one
 *    is.
 *  - HD95 (mm). Surface voxels of a mask are its voxels with a background
 *    neighbour: 6-neighbourhood in 3-D, 4-neighbourhood in-plane for slice
 *    rows; outside the grid counts as background, so masks touching the
 *    first or last slice are measured, not dropped. For every surface voxel
 *    of P the distance to the nearest surface voxel of T, and vice versa;
 *    HD95 = max(95th percentile of P->T, 95th percentile of T->P), percentiles
 *    with linear interpolation. This is the convention of MONAI
 *    compute_hausdorff_distance(percentile=95) and of the robust Hausdorff
 *    distance of DeepMind's surface-distance (which weights surface elements
 *    by area; we count voxels). NaN when either mask is empty.
 *    Distances come from an exact squared Euclidean distance transform,
 *    Felzenszwalb & Huttenlocher, "Distance transforms of sampled functions",
 *    Theory of Computing 8 (2012), run separably along i, j (and k) with each
 *    axis' voxel spacing, on the bounding box of P ∪ T only (exact: every
 *    surface voxel of both masks lies inside it). Cost O(voxels in the box);
 *    no pairwise O(n^2) search. The spacing is the norm of each affine
 *    column, so a sheared grid is treated as orthogonal.
 *  - size difference (%) = (|P| - |T|) / |T| x 100: volume for volume rows,
 *    area for slice rows (same grid, so voxel counts suffice); NaN if T is
 *    empty.
 *  - FF difference (percentage points) = mean voxel FF inside P minus mean
 *    voxel FF inside T; voxels without signal (NaN FF) are skipped.
 * Determinism: counts are integers; FF sums run over each slice in voxel
 * order and then over slices in order; every HD95 is computed by one thread
 * at a time (the EDT lines it splits over threads are independent), so the
 * output is identical at any thread count.
 */
#include "core/internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct psp_comparison {
  psp_compare_row *rows;
  size_t n_rows;
};

enum { NLAB = PSP_LABEL_COUNT }; /* row labels 0 (all muscles) .. 4 */

/* Per slice and row label: voxel counts and FF sums. */
typedef struct slice_stats {
  int64_t n_pred[NLAB], n_truth[NLAB], n_both[NLAB];
  int64_t ff_n_pred[NLAB], ff_n_truth[NLAB];
  double ff_sum_pred[NLAB], ff_sum_truth[NLAB];
} slice_stats;

static inline bool in_label(uint8_t v, int label) {
  return label == 0 ? v != 0 : v == (uint8_t)label;
}

/* Project labels 0..4 as bytes; anything else is a data error. */
static uint8_t *to_labels(const psp_volume *v, const char *what, psp_error **err) {
  int64_t n = psp_volume_voxel_count(v);
  uint8_t *out = psp_malloc((size_t)n, err);
  if (!out) return NULL;
  for (int64_t x = 0; x < n; x++) {
    float f = v->data[x];
    if (!(f == 0.0f || f == 1.0f || f == 2.0f || f == 3.0f || f == 4.0f)) {
      int64_t i = x % v->dims[0], j = (x / v->dims[0]) % v->dims[1];
      int64_t k = x / (v->dims[0] * v->dims[1]);
      psp_error_set(err, PSP_ERR_DATA,
                    "%s label map: voxel (%lld, %lld, %lld) holds %g, not a project label 0..4 "
                    "(map foreign label schemes with psp_labels_map first)",
                    what, (long long)i, (long long)j, (long long)k, (double)f);
      free(out);
      return NULL;
    }
    out[x] = (uint8_t)f;
  }
  return out;
}

static void slice_stats_compute(const uint8_t *pred, const uint8_t *truth, const float *ff,
                                int64_t plane, int64_t k, slice_stats *s) {
  memset(s, 0, sizeof *s);
  const uint8_t *p = pred + k * plane, *t = truth + k * plane;
  const float *f = ff ? ff + k * plane : NULL;
  for (int64_t x = 0; x < plane; x++) {
    int lp = p[x], lt = t[x];
    if (!lp && !lt) continue;
    bool has_ff = f && !isnan(f[x]);
    double fv = has_ff ? (double)f[x] : 0.0;
    if (lp) {
      s->n_pred[lp]++;
      s->n_pred[0]++;
      if (has_ff) {
        s->ff_n_pred[lp]++;
        s->ff_n_pred[0]++;
        s->ff_sum_pred[lp] += fv;
        s->ff_sum_pred[0] += fv;
      }
    }
    if (lt) {
      s->n_truth[lt]++;
      s->n_truth[0]++;
      if (has_ff) {
        s->ff_n_truth[lt]++;
        s->ff_n_truth[0]++;
        s->ff_sum_truth[lt] += fv;
        s->ff_sum_truth[0] += fv;
      }
    }
    if (lp && lt) {
      s->n_both[0]++;
      if (lp == lt) s->n_both[lp]++;
    }
  }
}

static void slice_stats_add(slice_stats *acc, const slice_stats *s) {
  for (int l = 0; l < NLAB; l++) {
    acc->n_pred[l] += s->n_pred[l];
    acc->n_truth[l] += s->n_truth[l];
    acc->n_both[l] += s->n_both[l];
    acc->ff_n_pred[l] += s->ff_n_pred[l];
    acc->ff_n_truth[l] += s->ff_n_truth[l];
    acc->ff_sum_pred[l] += s->ff_sum_pred[l];
    acc->ff_sum_truth[l] += s->ff_sum_truth[l];
  }
}

/* Everything but HD95, from the counts. */
static void row_fill(psp_compare_row *r, const slice_stats *s, int label, bool have_ff) {
  r->label = label;
  r->n_pred = s->n_pred[label];
  r->n_truth = s->n_truth[label];
  r->n_both = s->n_both[label];
  int64_t sum = r->n_pred + r->n_truth;
  r->dice = sum > 0 ? 2.0 * (double)r->n_both / (double)sum : NAN;
  r->size_diff_pct =
      r->n_truth > 0 ? 100.0 * (double)(r->n_pred - r->n_truth) / (double)r->n_truth : NAN;
  r->hd95_mm = NAN;
  r->ff_pred_pct = r->ff_truth_pct = r->ff_diff_pp = NAN;
  if (have_ff) {
    if (s->ff_n_pred[label] > 0)
      r->ff_pred_pct = 100.0 * s->ff_sum_pred[label] / (double)s->ff_n_pred[label];
    if (s->ff_n_truth[label] > 0)
      r->ff_truth_pct = 100.0 * s->ff_sum_truth[label] / (double)s->ff_n_truth[label];
    r->ff_diff_pp = r->ff_pred_pct - r->ff_truth_pct;
  }
}

/* ---------------------------------------------------------------------- */
/* Exact Euclidean distance transform (Felzenszwalb & Huttenlocher)        */
/* ---------------------------------------------------------------------- */

/* In-place squared EDT of f on a box bd[3] (i fastest), along the first
 * naxes axes. Lines are independent, so threads never change the result.
 * Returns false when scratch memory could not be allocated. */
static bool edt_box(double *f, const int64_t bd[3], const double sp[3], int naxes, int nthreads) {
  int64_t nb = bd[0] * bd[1] * bd[2];
  int64_t maxn = 1;
  for (int a = 0; a < naxes; a++)
    if (bd[a] > maxn) maxn = bd[a];
  int fail = 0;
  for (int ax = 0; ax < naxes; ax++) {
    int64_t n = bd[ax];
    if (n == 1) continue;
    int64_t stride = ax == 0 ? 1 : ax == 1 ? bd[0] : bd[0] * bd[1];
    int64_t nlines = nb / n;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1) reduction(| : fail)
    {
      double *in = malloc((size_t)maxn * sizeof *in);
      double *out = malloc((size_t)maxn * sizeof *out);
      double *z = malloc((size_t)(maxn + 1) * sizeof *z);
      int64_t *v = malloc((size_t)maxn * sizeof *v);
      bool ok = in && out && z && v;
      if (!ok) fail = 1;
#pragma omp for schedule(static)
      for (int64_t line = 0; line < nlines; line++) {
        if (!ok) continue;
        int64_t base;
        if (ax == 0) {
          base = line * bd[0];
        } else if (ax == 1) {
          base = (line / bd[0]) * bd[0] * bd[1] + line % bd[0];
        } else {
          base = line;
        }
        bool any = false;
        for (int64_t q = 0; q < n; q++) {
          in[q] = f[base + q * stride];
          if (!isinf(in[q])) any = true;
        }
        if (!any) continue;
        psp_edt_1d(in, n, sp[ax], out, v, z);
        for (int64_t q = 0; q < n; q++)
          f[base + q * stride] = out[q];
      }
      free(in);
      free(out);
      free(z);
      free(v);
    }
    if (fail) return false;
  }
  return true;
}

/* ---------------------------------------------------------------------- */
/* HD95                                                                    */
/* ---------------------------------------------------------------------- */

/* Surface voxel of `label` at (i,j,k): in the mask with a neighbour outside
 * it (or outside the grid). planar: in-plane 4-neighbourhood only. */
static bool is_surface(const uint8_t *lab, const int64_t dims[3], int64_t i, int64_t j, int64_t k,
                       int label, bool planar) {
  int64_t x = psp_idx(dims, i, j, k);
  if (!in_label(lab[x], label)) return false;
  if (i == 0 || i == dims[0] - 1 || j == 0 || j == dims[1] - 1) return true;
  if (!in_label(lab[x - 1], label) || !in_label(lab[x + 1], label)) return true;
  if (!in_label(lab[x - dims[0]], label) || !in_label(lab[x + dims[0]], label)) return true;
  if (planar) return false;
  int64_t plane = dims[0] * dims[1];
  if (k == 0 || k == dims[2] - 1) return true;
  return !in_label(lab[x - plane], label) || !in_label(lab[x + plane], label);
}

/* 95th percentile of the distances (mm) from the surface voxels `from` to
 * the nearest voxel flagged in `to` (both over the box). NaN if `from` has
 * none. Returns false on out-of-memory. */
static bool directed_q95(const uint8_t *from, const uint8_t *to, int64_t nb, const int64_t bd[3],
                         const double sp[3], int naxes, int nthreads, double *dist, double *q95) {
  int64_t nfrom = 0;
  for (int64_t x = 0; x < nb; x++) {
    dist[x] = to[x] ? 0.0 : INFINITY;
    nfrom += from[x];
  }
  *q95 = NAN;
  if (nfrom == 0) return true;
  if (!edt_box(dist, bd, sp, naxes, nthreads)) return false;
  float *d = malloc((size_t)nfrom * sizeof *d);
  if (!d) return false;
  int64_t m = 0;
  for (int64_t x = 0; x < nb; x++)
    if (from[x]) d[m++] = (float)sqrt(dist[x]);
  psp_sort_floats(d, (size_t)m);
  *q95 = psp_quantile_sorted(d, (size_t)m, 0.95);
  free(d);
  return true;
}

/* HD95 of `label` between pred and truth: 3-D over the volume (k < 0) or
 * in-plane on slice k. NaN when either mask is empty. Returns false on
 * out-of-memory. */
static bool hd95(const uint8_t *pred, const uint8_t *truth, const int64_t dims[3], int label,
                 int64_t k, const double sp[3], int nthreads, double *out) {
  *out = NAN;
  bool planar = k >= 0;
  int64_t k0 = planar ? k : 0, k1 = planar ? k : dims[2] - 1;
  int64_t lo[3] = {dims[0], dims[1], dims[2]}, hi[3] = {-1, -1, -1};
  bool any_p = false, any_t = false;
  for (int64_t kk = k0; kk <= k1; kk++)
    for (int64_t j = 0; j < dims[1]; j++) {
      const uint8_t *rp = pred + psp_idx(dims, 0, j, kk), *rt = truth + psp_idx(dims, 0, j, kk);
      for (int64_t i = 0; i < dims[0]; i++) {
        bool a = in_label(rp[i], label), b = in_label(rt[i], label);
        if (!a && !b) continue;
        any_p |= a;
        any_t |= b;
        int64_t c[3] = {i, j, kk};
        for (int d = 0; d < 3; d++) {
          if (c[d] < lo[d]) lo[d] = c[d];
          if (c[d] > hi[d]) hi[d] = c[d];
        }
      }
    }
  if (!any_p || !any_t) return true;
  int64_t bd[3] = {hi[0] - lo[0] + 1, hi[1] - lo[1] + 1, hi[2] - lo[2] + 1};
  int64_t nb = bd[0] * bd[1] * bd[2];
  uint8_t *sa = malloc((size_t)nb), *sb = malloc((size_t)nb);
  double *dist = malloc((size_t)nb * sizeof *dist);
  bool ok = sa && sb && dist;
  if (ok) {
    for (int64_t bk = 0; bk < bd[2]; bk++)
      for (int64_t bj = 0; bj < bd[1]; bj++)
        for (int64_t bi = 0; bi < bd[0]; bi++) {
          int64_t x = (bk * bd[1] + bj) * bd[0] + bi;
          int64_t i = lo[0] + bi, j = lo[1] + bj, kk = lo[2] + bk;
          sa[x] = is_surface(pred, dims, i, j, kk, label, planar);
          sb[x] = is_surface(truth, dims, i, j, kk, label, planar);
        }
    int naxes = planar ? 2 : 3;
    double ab, ba;
    ok = directed_q95(sa, sb, nb, bd, sp, naxes, nthreads, dist, &ab) &&
         directed_q95(sb, sa, nb, bd, sp, naxes, nthreads, dist, &ba);
    if (ok) *out = fmax(ab, ba);
  }
  free(sa);
  free(sb);
  free(dist);
  return ok;
}

/* ---------------------------------------------------------------------- */
/* Public API                                                              */
/* ---------------------------------------------------------------------- */

psp_comparison *psp_compare(const psp_volume *pred, const psp_volume *truth, const psp_ffmap *ff,
                            bool per_slice, psp_context *ctx, psp_error **err) {
  if (!pred || !truth) {
    psp_error_set(err, PSP_ERR_INTERNAL, "psp_compare: missing label map");
    return NULL;
  }
  char why[512];
  if (psp_grid_compare(pred, truth, why, sizeof why) == PSP_GRID_DIFFERENT) {
    psp_error_set(err, PSP_ERR_GEOMETRY,
                  "the predicted and the reference label maps are on different grids: %s", why);
    return NULL;
  }
  const float *ffd = NULL;
  if (ff) {
    const psp_volume *ffv = psp_ffmap_ff(ff);
    if (psp_grid_compare(ffv, pred, why, sizeof why) == PSP_GRID_DIFFERENT) {
      psp_error_set(err, PSP_ERR_GEOMETRY,
                    "the fat-fraction map and the label maps are on different grids: %s", why);
      return NULL;
    }
    ffd = ffv->data;
  }
  const int64_t *dims = pred->dims;
  int64_t nk = dims[2], plane = dims[0] * dims[1];
  int nthreads = psp_context_threads(ctx);
  double sp[3];
  psp_volume_spacing(truth, sp);

  psp_comparison *c = NULL;
  slice_stats *st = NULL;
  int64_t *task_k = NULL;
  int *task_l = NULL;
  uint8_t *lp = to_labels(pred, "predicted", err);
  uint8_t *lt = lp ? to_labels(truth, "reference", err) : NULL;
  if (!lt) goto fail;
  st = psp_calloc((size_t)nk, sizeof *st, err);
  if (!st) goto fail;

#pragma omp parallel for num_threads(nthreads) schedule(static)
  for (int64_t k = 0; k < nk; k++)
    slice_stats_compute(lp, lt, ffd, plane, k, &st[k]);

  slice_stats total;
  memset(&total, 0, sizeof total);
  for (int64_t k = 0; k < nk; k++)
    slice_stats_add(&total, &st[k]);

  /* per-slice tasks: (slice, label) present in either map */
  size_t ntask = 0;
  if (per_slice) {
    task_k = psp_malloc((size_t)nk * NLAB * sizeof *task_k, err);
    task_l = psp_malloc((size_t)nk * NLAB * sizeof *task_l, err);
    if (!task_k || !task_l) goto fail;
    for (int64_t k = 0; k < nk; k++)
      for (int l = 0; l < NLAB; l++)
        if (st[k].n_pred[l] + st[k].n_truth[l] > 0) {
          task_k[ntask] = k;
          task_l[ntask] = l;
          ntask++;
        }
  }
  c = psp_calloc(1, sizeof *c, err);
  if (!c) goto fail;
  c->n_rows = NLAB + ntask;
  c->rows = psp_calloc(c->n_rows, sizeof *c->rows, err);
  if (!c->rows) goto fail;

  bool ok = true;
  for (int l = 0; l < NLAB; l++) {
    psp_compare_row *r = &c->rows[l];
    row_fill(r, &total, l, ffd != NULL);
    r->slice = r->file_slice = -1;
    if (r->n_pred > 0 && r->n_truth > 0)
      ok = ok && hd95(lp, lt, dims, l, -1, sp, nthreads, &r->hd95_mm);
  }
  int task_fail = 0;
#pragma omp parallel for num_threads(nthreads) schedule(dynamic, 1) reduction(| : task_fail)
  for (size_t t = 0; t < ntask; t++) {
    psp_compare_row *r = &c->rows[NLAB + t];
    int64_t k = task_k[t];
    row_fill(r, &st[k], task_l[t], ffd != NULL);
    r->slice = k;
    r->file_slice = psp_volume_file_slice(truth, k);
    if (r->n_pred > 0 && r->n_truth > 0 && !hd95(lp, lt, dims, r->label, k, sp, 1, &r->hd95_mm))
      task_fail = 1;
  }
  if (!ok || task_fail) {
    psp_error_set(err, PSP_ERR_NOMEM, "out of memory computing surface distances");
    goto fail;
  }
  psp_info(ctx, "compared %lld x %lld x %lld label maps: %zu rows", (long long)dims[0],
           (long long)dims[1], (long long)dims[2], c->n_rows);
  free(lp);
  free(lt);
  free(st);
  free(task_k);
  free(task_l);
  return c;

fail:
  free(lp);
  free(lt);
  free(st);
  free(task_k);
  free(task_l);
  psp_comparison_free(c);
  return NULL;
}

void psp_comparison_free(psp_comparison *c) {
  if (!c) return;
  free(c->rows);
  free(c);
}

size_t psp_comparison_row_count(const psp_comparison *c) {
  return c ? c->n_rows : 0;
}

const psp_compare_row *psp_comparison_row(const psp_comparison *c, size_t i) {
  return (c && i < c->n_rows) ? &c->rows[i] : NULL;
}

char *psp_comparison_csv(const psp_comparison *c, bool slices) {
  psp_strbuf b;
  psp_strbuf_init(&b);
  psp_strbuf_append(&b, "label,name,slice,file_slice,n_pred,n_truth,n_both,dice,hd95_mm,"
                        "size_diff_pct,ff_pred_pct,ff_truth_pct,ff_diff_pp\n");
  for (size_t i = 0; c && i < c->n_rows; i++) {
    const psp_compare_row *r = &c->rows[i];
    if (r->slice >= 0 && !slices) continue;
    char sl[32] = "", fsl[32] = "", dice[32], hd[32], sd[32], fp[32], ft[32], fd[32];
    if (r->slice >= 0) {
      snprintf(sl, sizeof sl, "%lld", (long long)r->slice);
      snprintf(fsl, sizeof fsl, "%lld", (long long)r->file_slice);
    }
    psp_fmt_num(dice, sizeof dice, r->dice, 4);
    psp_fmt_num(hd, sizeof hd, r->hd95_mm, 3);
    psp_fmt_num(sd, sizeof sd, r->size_diff_pct, 2);
    psp_fmt_num(fp, sizeof fp, r->ff_pred_pct, 2);
    psp_fmt_num(ft, sizeof ft, r->ff_truth_pct, 2);
    psp_fmt_num(fd, sizeof fd, r->ff_diff_pp, 2);
    const char *name = r->label == 0 ? "all" : psp_label_name(r->label);
    psp_strbuf_printf(&b, "%d,%s,%s,%s,%lld,%lld,%lld,%s,%s,%s,%s,%s,%s\n", r->label,
                      name ? name : "", sl, fsl, (long long)r->n_pred, (long long)r->n_truth,
                      (long long)r->n_both, dice, hd, sd, fp, ft, fd);
  }
  return psp_strbuf_take(&b, NULL);
}
