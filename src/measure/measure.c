/*
 * DESIGN: per-slice and whole-volume metrics of each labelled muscle.
 * Area = voxel count x in-plane pixel area from the affine (|col_i x col_j|),
 * so oblique grids are exact; volume = count x |det|. FF statistics use only
 * voxels with signal (the FF map is NaN below the noise floor: such voxels
 * count for area, never as FF = 0). Two FF summaries, as the field uses both:
 * the mean of voxel FF (MuscleMap) and sum F / sum (F+W) (LPM_Segmentator).
 * Median and quartiles by sorting (linear interpolation), functional CSA =
 * area x (1 - mean FF), fat infiltration = share of voxels with FF > 50 %.
 * Slices are processed in parallel (a counting pass, then the gathering
 * pass), each writing its own rows; sums are in a fixed order per slice, so
 * the numbers are identical at any thread count.
 */
#include "core/internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct psp_measurements {
  psp_region_metrics *rows;
  size_t n_rows;
  psp_region_metrics volume_rows[PSP_LABEL_COUNT];
};

/* Fills the FF statistics of m from the values (unsorted, modified). */
static void ff_stats(psp_region_metrics *m, float *ff, size_t n, double sum_f, double sum_fw,
                     bool have_wf) {
  m->ff_mean = m->ff_median = m->ff_q1 = m->ff_q3 = m->ff_ratio = m->fat_infiltration = NAN;
  m->sum_f = have_wf ? sum_f : NAN;
  m->sum_fw = have_wf ? sum_fw : NAN;
  if (n == 0) return;
  double s = 0;
  size_t fatty = 0;
  for (size_t i = 0; i < n; i++) {
    s += ff[i];
    fatty += ff[i] > 0.5f;
  }
  m->ff_mean = s / (double)n;
  m->fat_infiltration = (double)fatty / (double)n;
  psp_sort_floats(ff, n);
  m->ff_median = psp_quantile_sorted(ff, n, 0.5);
  m->ff_q1 = psp_quantile_sorted(ff, n, 0.25);
  m->ff_q3 = psp_quantile_sorted(ff, n, 0.75);
  if (have_wf && sum_fw > 0) m->ff_ratio = sum_f / sum_fw;
}

psp_measurements *psp_measure(const psp_volume *labels, const psp_ffmap *ffm, psp_context *ctx,
                              psp_error **err) {
  const psp_volume *ffv = psp_ffmap_ff(ffm);
  if (memcmp(labels->dims, ffv->dims, sizeof labels->dims) != 0) {
    psp_error_set(
        err, PSP_ERR_GEOMETRY,
        "label map grid %lld x %lld x %lld differs from the image grid %lld x %lld x %lld",
        (long long)labels->dims[0], (long long)labels->dims[1], (long long)labels->dims[2],
        (long long)ffv->dims[0], (long long)ffv->dims[1], (long long)ffv->dims[2]);
    return NULL;
  }
  const psp_volume *wv = psp_ffmap_water(ffm), *fv = psp_ffmap_fat(ffm);
  bool have_wf = wv && fv;
  const int64_t *d = labels->dims;
  int64_t nz = d[2], plane = d[0] * d[1];
  double px_area = psp_volume_pixel_area(labels), vox_vol = psp_volume_voxel_volume(labels);

  psp_measurements *m = psp_calloc(1, sizeof *m, err);
  psp_region_metrics *grid = psp_calloc((size_t)nz * PSP_LABEL_COUNT, sizeof *grid, err);
  /* pass 1: per slice and label the labelled voxels and those with signal,
   * so each slice knows where its values go (one parallel pass) */
  int64_t *slice_n = psp_calloc((size_t)nz * PSP_LABEL_COUNT * 2, sizeof *slice_n, err);
  if (!slice_n) {
    psp_measurements_free(m);
    free(grid);
    return NULL;
  }
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < nz; k++) {
    const float *lab = labels->data + k * plane;
    const float *ff = ffv->data + k * plane;
    int64_t *sn = slice_n + k * PSP_LABEL_COUNT * 2; /* [label][signal, all] */
    for (int64_t p = 0; p < plane; p++) {
      int l = (int)lab[p];
      if (l > 0 && l < PSP_LABEL_COUNT) {
        sn[2 * l + 1]++;
        sn[2 * l] += !isnan(ff[p]);
      }
    }
  }
  /* per label: all signal FF values in slice order, for volume statistics */
  int64_t counts[PSP_LABEL_COUNT] = {0};
  for (int64_t k = 0; k < nz; k++)
    for (int l = 1; l < PSP_LABEL_COUNT; l++)
      counts[l] += slice_n[(k * PSP_LABEL_COUNT + l) * 2 + 1];
  float *vals[PSP_LABEL_COUNT] = {NULL};
  for (int l = 1; l < PSP_LABEL_COUNT; l++)
    vals[l] = psp_malloc((size_t)(counts[l] + 1) * sizeof(float), err);
  /* per slice and label: offset into vals */
  int64_t *offs = psp_calloc((size_t)nz * PSP_LABEL_COUNT, sizeof *offs, err);
  double *sums = psp_calloc((size_t)nz * PSP_LABEL_COUNT * 2, sizeof *sums, err);
  bool ok = m && grid && offs && sums;
  for (int l = 1; l < PSP_LABEL_COUNT; l++)
    ok = ok && vals[l];
  if (!ok) {
    free(slice_n);
    goto fail;
  }
  for (int l = 1; l < PSP_LABEL_COUNT; l++) {
    int64_t o = 0;
    for (int64_t k = 0; k < nz; k++) {
      offs[k * PSP_LABEL_COUNT + l] = o;
      o += slice_n[(k * PSP_LABEL_COUNT + l) * 2];
    }
  }
  free(slice_n);

  /* pass 2: gather values and sums, then per-slice statistics */
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t k = 0; k < nz; k++) {
    const float *lab = labels->data + k * plane;
    const float *ff = ffv->data + k * plane;
    const float *w = have_wf ? wv->data + k * plane : NULL;
    const float *f = have_wf ? fv->data + k * plane : NULL;
    int64_t fill[PSP_LABEL_COUNT] = {0}, nvox[PSP_LABEL_COUNT] = {0};
    double sf[PSP_LABEL_COUNT] = {0}, sfw[PSP_LABEL_COUNT] = {0};
    for (int64_t p = 0; p < plane; p++) {
      int l = (int)lab[p];
      if (l <= 0 || l >= PSP_LABEL_COUNT) continue;
      nvox[l]++;
      if (isnan(ff[p])) continue;
      vals[l][offs[k * PSP_LABEL_COUNT + l] + fill[l]++] = ff[p];
      if (have_wf) {
        sf[l] += f[p];
        sfw[l] += (double)f[p] + (double)w[p];
      }
    }
    for (int l = 1; l < PSP_LABEL_COUNT; l++) {
      psp_region_metrics *r = &grid[k * PSP_LABEL_COUNT + l];
      r->label = l;
      r->slice = k;
      r->file_slice = psp_volume_file_slice(labels, k);
      r->z_mm = psp_volume_slice_z(labels, k);
      r->n_voxels = nvox[l];
      r->n_no_signal = nvox[l] - fill[l];
      r->area_mm2 = (double)nvox[l] * px_area;
      r->volume_mm3 = (double)nvox[l] * vox_vol;
      sums[(k * PSP_LABEL_COUNT + l) * 2] = sf[l];
      sums[(k * PSP_LABEL_COUNT + l) * 2 + 1] = sfw[l];
      if (nvox[l] == 0) continue;
      size_t nv = (size_t)fill[l];
      float *tmp = malloc((nv ? nv : 1) * sizeof(float));
      if (!tmp) {
        r->n_voxels = -1; /* flagged below, outside the parallel region */
        continue;
      }
      memcpy(tmp, vals[l] + offs[k * PSP_LABEL_COUNT + l], nv * sizeof(float));
      ff_stats(r, tmp, nv, sf[l], sfw[l], have_wf);
      free(tmp);
      r->fcsa_mm2 = isnan(r->ff_mean) ? NAN : r->area_mm2 * (1.0 - r->ff_mean);
    }
  }
  size_t n_rows = 0;
  for (int64_t i = 0; i < nz * PSP_LABEL_COUNT; i++) {
    if (grid[i].n_voxels < 0) {
      psp_error_set(err, PSP_ERR_NOMEM, "out of memory computing slice statistics");
      goto fail;
    }
    n_rows += grid[i].label > 0 && grid[i].n_voxels > 0;
  }
  m->rows = psp_calloc(n_rows ? n_rows : 1, sizeof *m->rows, err);
  if (!m->rows) goto fail;
  for (int64_t i = 0; i < nz * PSP_LABEL_COUNT; i++)
    if (grid[i].label > 0 && grid[i].n_voxels > 0) m->rows[m->n_rows++] = grid[i];

  /* whole-volume rows: values already in slice order */
  for (int l = 1; l < PSP_LABEL_COUNT; l++) {
    psp_region_metrics *r = &m->volume_rows[l];
    r->label = l;
    r->slice = r->file_slice = -1;
    r->z_mm = NAN;
    double sf = 0, sfw = 0;
    int64_t n_sig = 0;
    for (int64_t k = 0; k < nz; k++) {
      sf += sums[(k * PSP_LABEL_COUNT + l) * 2];
      sfw += sums[(k * PSP_LABEL_COUNT + l) * 2 + 1];
      n_sig += grid[k * PSP_LABEL_COUNT + l].n_voxels - grid[k * PSP_LABEL_COUNT + l].n_no_signal;
    }
    r->n_voxels = counts[l];
    r->n_no_signal = counts[l] - n_sig;
    r->area_mm2 = NAN;
    r->volume_mm3 = (double)counts[l] * vox_vol;
    ff_stats(r, vals[l], (size_t)n_sig, sf, sfw, have_wf);
    r->fcsa_mm2 = NAN;
  }
  psp_log(ctx, PSP_LOG_DEBUG, "measured %zu slice rows", m->n_rows);
  free(grid);
  free(offs);
  free(sums);
  for (int l = 1; l < PSP_LABEL_COUNT; l++)
    free(vals[l]);
  return m;
fail:
  free(grid);
  free(offs);
  free(sums);
  for (int l = 1; l < PSP_LABEL_COUNT; l++)
    free(vals[l]);
  psp_measurements_free(m);
  return NULL;
}

void psp_measurements_free(psp_measurements *m) {
  if (!m) return;
  free(m->rows);
  free(m);
}

size_t psp_measurements_slice_count(const psp_measurements *m) {
  return m->n_rows;
}

const psp_region_metrics *psp_measurements_slice_row(const psp_measurements *m, size_t i) {
  return i < m->n_rows ? &m->rows[i] : NULL;
}

const psp_region_metrics *psp_measurements_volume_row(const psp_measurements *m, int label) {
  return (label > 0 && label < PSP_LABEL_COUNT) ? &m->volume_rows[label] : NULL;
}
