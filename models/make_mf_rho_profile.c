/*
 * make_mf_rho_profile — regenerates models/mf_rho_profile.tsv, the
 * first-pass multifidus prior of the automatic segmentation
 * (src/segment/segment.c, table MF_RHO), from a label map with left/right
 * multifidus and erector spinae (the MuscleMap abdomen template, MIT
 * licence: labels 1/2 multifidus, 3/4 erector spinae).
 *
 * Per axial slice with both multifidus muscles: the midline is the mean
 * midpoint between the two multifidus medial edges (rows where both exist);
 * the origin O lies on it 3 mm in front of the most anterior MF/ES voxel
 * within 12 mm of the midline (as in segment.c). For rays every 10 degrees
 * (0 = straight back, 90 = lateral) on each side, rho = (R_mf - R_in) /
 * (R_out - R_in): the share of the ray's compartment (MF + ES) that is
 * multifidus. Output: per angle the number of rays, quartiles and median.
 *
 * With --by-level (mf_rho_by_level.tsv) the same medians per 15 mm band of
 * the height above an anatomical anchor: the lowest slice from which on the
 * multifidus takes less than half of the two muscles together (the lower
 * L5 level, where the erector spinae grows from a thin sheet into a muscle
 * larger than the multifidus); the first band holds the 15 mm below the
 * anchor; columns dz_mm (band centre), n_slices, share (median multifidus
 * share of the band's slices), rho_0 .. rho_110.
 *
 * With --es-rise (es_front_rise.tsv) the rise of the erector spinae's
 * front lateral of 35 mm from the midline (see es_rise_table below).
 *
 * Usage: make_mf_rho_profile DSEG.nii.gz MF_LEFT MF_RIGHT ES_LEFT ES_RIGHT
 *        [--by-level | --es-rise] > TSV
 * (left = the side of larger internal i, i.e. patient left from the affine;
 * for the MuscleMap template: 2 1 4 3). Build: see models/README.md.
 */
#include "paraspinal.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include <string.h>

#define NT 19
#define MAXV 8192
#define NBAND 11 /* one band below the anchor, ten above */
#define BAND_MM 15.0

static int cmpd(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Midline of one slice: the mean midpoint between the two multifidus
 * medial edges over the rows where both exist; NAN with fewer than 5. */
static double slice_midline(const float *s, const int64_t d[3], const int mf[2]) {
  double sumi = 0;
  int cnt = 0;
  for (int64_t j = 0; j < d[1]; j++) {
    int64_t a = -1, b = -1;
    for (int64_t i = 0; i < d[0]; i++) {
      int x = (int)s[j * d[0] + i];
      if (x == mf[0] && a < 0) a = i;
      if (x == mf[1]) b = i;
    }
    if (a >= 0 && b >= 0 && a > b) {
      sumi += 0.5 * (double)(a + b);
      cnt++;
    }
  }
  return cnt < 5 ? NAN : sumi / cnt;
}

/* --es-rise (models/es_front_rise.tsv): on every slice from the anchor up,
 * per side, the front of MF + ES (its most anterior voxel, mm) in 5 mm
 * bins of d (distance from the midline) from 40 mm on, minus the front in
 * the bin at 35 mm: how far the erector spinae's front lies further back
 * laterally. Columns d_mm, n, q25, median, q75. */
#define RISE_N 9
static int es_rise_table(const float *v, const int64_t d[3], const double sp[3], const int mf[2],
                         const int es[2], int64_t anchor) {
  static double vals[RISE_N][MAXV];
  int nv[RISE_N] = {0};
  for (int64_t k = anchor; k < d[2]; k++) {
    const float *s = v + k * d[0] * d[1];
    double mid = slice_midline(s, d, mf);
    if (isnan(mid)) continue;
    for (int side = 0; side < 2; side++) {
      int sg = side == 0 ? 1 : -1;
      double front[RISE_N + 1];
      for (int b = 0; b <= RISE_N; b++)
        front[b] = INFINITY;
      for (int64_t j = 0; j < d[1]; j++)
        for (int64_t i = 0; i < d[0]; i++) {
          int x = (int)s[j * d[0] + i];
          if (x != mf[side] && x != es[side]) continue;
          double dd = sg * ((double)i - mid) * sp[0];
          int b = (int)floor((dd - 32.5) / 5.0); /* bin 0: 32.5..37.5 mm */
          if (b < 0 || b > RISE_N) continue;
          front[b] = fmin(front[b], (double)j * sp[1]);
        }
      if (isinf(front[0])) continue;
      for (int b = 1; b <= RISE_N; b++)
        if (!isinf(front[b]) && nv[b - 1] < MAXV) vals[b - 1][nv[b - 1]++] = front[b] - front[0];
    }
  }
  printf("d_mm\tn\tq25\tmedian\tq75\n");
  for (int b = 0; b < RISE_N; b++) {
    int m = nv[b];
    if (!m) {
      printf("%d\t0\t\t\t\n", 40 + 5 * b);
      continue;
    }
    qsort(vals[b], (size_t)m, sizeof(double), cmpd);
    printf("%d\t%d\t%.2f\t%.2f\t%.2f\n", 40 + 5 * b, m, vals[b][m / 4], vals[b][m / 2],
           vals[b][3 * m / 4]);
  }
  return 0;
}

int main(int argc, char **argv) {
  bool by_level = argc == 7 && !strcmp(argv[6], "--by-level");
  bool es_rise = argc == 7 && !strcmp(argv[6], "--es-rise");
  if (argc != 6 && !by_level && !es_rise) {
    fprintf(stderr, "usage: %s DSEG MF_LEFT MF_RIGHT ES_LEFT ES_RIGHT [--by-level|--es-rise]\n",
            argv[0]);
    return 2;
  }
  psp_context *ctx = psp_context_create();
  psp_error *err = NULL;
  psp_volume *l = psp_nifti_load(argv[1], NULL, ctx, &err);
  if (!l) {
    fprintf(stderr, "%s\n", psp_error_message(err));
    return 1;
  }
  int mf[2] = {atoi(argv[2]), atoi(argv[3])}, es[2] = {atoi(argv[4]), atoi(argv[5])};
  int64_t d[3];
  double sp[3];
  psp_volume_dims(l, d);
  psp_volume_spacing(l, sp);
  const float *v = psp_volume_data(l);
  static double vals[NT][MAXV], bvals[NBAND][NT][MAXV / 4], shares[NBAND][256];
  int nv[NT] = {0}, nbv[NBAND][NT], nsh[NBAND] = {0};
  memset(nbv, 0, sizeof nbv);
  /* anchor: lowest slice from which on (for 4 slices' worth of 6 mm) the
   * multifidus share of MF + ES stays below one half */
  double *share = calloc((size_t)d[2], sizeof *share);
  if (!share) return 1;
  for (int64_t k = 0; k < d[2]; k++) {
    int64_t a = 0, b = 0;
    for (int64_t q = k * d[0] * d[1]; q < (k + 1) * d[0] * d[1]; q++) {
      int x = (int)v[q];
      a += x == mf[0] || x == mf[1];
      b += x == es[0] || x == es[1];
    }
    share[k] = a > 0 && b > 0 ? (double)a / (double)(a + b) : NAN;
  }
  int64_t anchor = -1, run = (int64_t)ceil(6.0 / sp[2]);
  for (int64_t k = 0; k + run < d[2] && anchor < 0; k++) {
    bool ok = true;
    for (int64_t q = k; q <= k + run; q++)
      ok = ok && !isnan(share[q]) && share[q] < 0.5;
    if (ok) anchor = k;
  }
  if ((by_level || es_rise) && anchor < 0) {
    fprintf(stderr, "no anchor slice\n");
    return 1;
  }
  if (es_rise) {
    int rc = es_rise_table(v, d, sp, mf, es, anchor);
    free(share);
    psp_volume_free(l);
    psp_context_free(ctx);
    return rc;
  }
  for (int64_t k = 0; k < d[2]; k++) {
    const float *s = v + k * d[0] * d[1];
    int band = -1;
    if (by_level && (double)(anchor - k) * sp[2] <= BAND_MM) {
      band = 1 + (int)floor((double)(k - anchor) * sp[2] / BAND_MM);
      if (band < 0) band = 0;
      if (band >= NBAND) band = NBAND - 1;
    }
    double mid = slice_midline(s, d, mf), oj = -1;
    if (isnan(mid)) continue;
    if (band >= 0 && nsh[band] < 256) shares[band][nsh[band]++] = share[k];
    for (int64_t j = 0; j < d[1] && oj < 0; j++)
      for (int64_t i = 0; i < d[0]; i++) {
        int x = (int)s[j * d[0] + i];
        if (fabs((double)i - mid) * sp[0] <= 12.0 &&
            (x == mf[0] || x == mf[1] || x == es[0] || x == es[1])) {
          oj = (double)j - 3.0 / sp[1];
          break;
        }
      }
    for (int side = 0; side < 2; side++) {
      int sg = side == 0 ? 1 : -1;
      for (int t = 0; t < NT; t++) {
        double th = t * 3.14159265358979323846 / (NT - 1);
        int rin = -1, rout = -1, rb = -1;
        for (int r = 0; r < 400; r++) {
          double R = r * 0.5;
          int64_t i = (int64_t)lround(mid + sg * R * sin(th) / sp[0]);
          int64_t j = (int64_t)lround(oj + R * cos(th) / sp[1]);
          if (i < 0 || j < 0 || i >= d[0] || j >= d[1]) break;
          int x = (int)s[j * d[0] + i];
          if (x == mf[side] || x == es[side]) {
            if (rin < 0) rin = r;
            rout = r;
          }
          if (x == mf[side]) rb = r;
        }
        if (rin < 0 || rout <= rin || nv[t] >= MAXV) continue;
        double rho = rb < 0 ? 0 : (double)(rb - rin) / (rout - rin);
        rho = rho < 0 ? 0 : rho > 1 ? 1 : rho;
        vals[t][nv[t]++] = rho;
        if (band >= 0 && nbv[band][t] < MAXV / 4) bvals[band][t][nbv[band][t]++] = rho;
      }
    }
  }
  if (by_level) {
    printf("dz_mm\tn_slices\tshare");
    for (int t = 0; t < 12; t++)
      printf("\trho_%d", t * 10);
    printf("\n");
    for (int b = 0; b < NBAND; b++) {
      if (!nsh[b]) continue;
      qsort(shares[b], (size_t)nsh[b], sizeof(double), cmpd);
      printf("%.1f\t%d\t%.3f", (b - 0.5) * BAND_MM, nsh[b], shares[b][nsh[b] / 2]);
      for (int t = 0; t < 12; t++) {
        int m = nbv[b][t];
        double med = 0.0;
        if (m) {
          qsort(bvals[b][t], (size_t)m, sizeof(double), cmpd);
          med = bvals[b][t][m / 2];
        } else if (t == 0 && nbv[b][1]) { /* no ray straight back: the 10-degree value */
          qsort(bvals[b][1], (size_t)nbv[b][1], sizeof(double), cmpd);
          med = bvals[b][1][nbv[b][1] / 2];
        }
        printf("\t%.2f", med);
      }
      printf("\n");
    }
    fprintf(stderr, "anchor slice %lld (z %.1f mm above the first slice)\n", (long long)anchor,
            (double)anchor * sp[2]);
    free(share);
    psp_volume_free(l);
    psp_context_free(ctx);
    return 0;
  }
  free(share);
  printf("theta_deg\tn_rays\tq25\tmedian\tq75\n");
  for (int t = 0; t < NT; t++) {
    if (!nv[t]) {
      printf("%d\t0\t\t\t\n", t * 10);
      continue;
    }
    qsort(vals[t], (size_t)nv[t], sizeof(double), cmpd);
    printf("%d\t%d\t%.2f\t%.2f\t%.2f\n", t * 10, nv[t], vals[t][nv[t] / 4], vals[t][nv[t] / 2],
           vals[t][3 * nv[t] / 4]);
  }
  psp_volume_free(l);
  psp_context_free(ctx);
  return 0;
}
