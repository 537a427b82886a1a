/*
 * DESIGN: unit tests of psp_compare (src/measure/compare.c) on hand-built
 * volumes with known answers: Dice of overlapping boxes, HD95 of boxes
 * shifted along each axis (= the shift in mm with anisotropic spacing), the
 * empty cases, per-slice rows and their file_slice numbering, the FF
 * difference on a hand-made FF map, grid/label errors, the CSV text, and a
 * brute-force O(n^2) surface-distance reference on random blobs (3-D and
 * per slice) that the exact distance transform must reproduce at 1 and 4
 * threads.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "paraspinal.h"

static psp_volume *make_vol(const int64_t dims[3], const double sp[3]) {
  /* LPS voxel order in RAS+ world: i -> -x, j -> -y, k -> +z */
  double aff[4][4] = {{-sp[0], 0, 0, 10}, {0, -sp[1], 0, 20}, {0, 0, sp[2], -30}, {0, 0, 0, 1}};
  psp_error *err = NULL;
  psp_volume *v = psp_volume_create(dims, aff, &err);
  assert_non_null(v);
  return v;
}

static void fill_box(psp_volume *v, int64_t i0, int64_t i1, int64_t j0, int64_t j1, int64_t k0,
                     int64_t k1, float value) {
  int64_t d[3];
  psp_volume_dims(v, d);
  float *p = psp_volume_data_mut(v);
  for (int64_t k = k0; k <= k1; k++)
    for (int64_t j = j0; j <= j1; j++)
      for (int64_t i = i0; i <= i1; i++)
        p[(k * d[1] + j) * d[0] + i] = value;
}

static psp_context *quiet_ctx(int threads) {
  psp_context *ctx = psp_context_create();
  assert_non_null(ctx);
  psp_context_set_threads(ctx, threads);
  return ctx;
}

static psp_comparison *run(const psp_volume *p, const psp_volume *t, const psp_ffmap *ff,
                           bool per_slice, int threads) {
  psp_context *ctx = quiet_ctx(threads);
  psp_error *err = NULL;
  psp_comparison *c = psp_compare(p, t, ff, per_slice, ctx, &err);
  if (!c) fail_msg("psp_compare failed: %s", psp_error_message(err));
  psp_context_free(ctx);
  return c;
}

static const psp_compare_row *find_row(const psp_comparison *c, int label, int64_t slice) {
  for (size_t i = 0; i < psp_comparison_row_count(c); i++) {
    const psp_compare_row *r = psp_comparison_row(c, i);
    if (r->label == label && r->slice == slice) return r;
  }
  return NULL;
}

/* Two 8x8x4 boxes overlapping by half: Dice 0.5; absent labels NaN; a label
 * only in the truth: Dice 0, HD95 NaN, size -100 %; voxels labelled 3 in
 * the truth and 4 in the prediction overlap only for label 0. */
static void test_dice_boxes(void **state) {
  (void)state;
  int64_t dims[3] = {20, 20, 10};
  double sp[3] = {1, 1, 1};
  psp_volume *p = make_vol(dims, sp), *t = make_vol(dims, sp);
  fill_box(p, 2, 9, 2, 9, 2, 5, 1);
  fill_box(t, 6, 13, 2, 9, 2, 5, 1);
  fill_box(t, 15, 17, 15, 17, 7, 8, 3); /* 3x3x2 = 18 voxels, truth only */
  fill_box(p, 15, 17, 15, 17, 7, 8, 4); /* same voxels, another label */
  psp_comparison *c = run(p, t, NULL, false, 1);
  assert_int_equal(psp_comparison_row_count(c), 5);
  const psp_compare_row *r1 = find_row(c, 1, -1);
  assert_non_null(r1);
  assert_int_equal(r1->n_pred, 256);
  assert_int_equal(r1->n_truth, 256);
  assert_int_equal(r1->n_both, 128);
  assert_true(fabs(r1->dice - 0.5) < 1e-12);
  assert_true(fabs(r1->size_diff_pct) < 1e-12);
  assert_true(isnan(r1->ff_diff_pp));
  assert_int_equal(r1->file_slice, -1);

  const psp_compare_row *r2 = find_row(c, 2, -1);
  assert_int_equal(r2->n_pred + r2->n_truth, 0);
  assert_true(isnan(r2->dice));
  assert_true(isnan(r2->hd95_mm));
  assert_true(isnan(r2->size_diff_pct));

  const psp_compare_row *r3 = find_row(c, 3, -1);
  assert_int_equal(r3->n_truth, 18);
  assert_true(r3->dice == 0.0);
  assert_true(isnan(r3->hd95_mm));
  assert_true(fabs(r3->size_diff_pct + 100.0) < 1e-12);

  const psp_compare_row *r4 = find_row(c, 4, -1);
  assert_int_equal(r4->n_pred, 18);
  assert_int_equal(r4->n_truth, 0);
  assert_int_equal(r4->n_both, 0);
  assert_true(r4->dice == 0.0);

  /* all muscles as one foreground: the label 3/4 voxels agree */
  const psp_compare_row *r0 = find_row(c, 0, -1);
  assert_int_equal(r0->n_pred, 274);
  assert_int_equal(r0->n_truth, 274);
  assert_int_equal(r0->n_both, 146);
  assert_true(fabs(r0->dice - 292.0 / 548.0) < 1e-12);
  assert_false(isnan(r0->hd95_mm));

  /* identical maps: Dice 1, HD95 0 */
  psp_comparison *same = run(t, t, NULL, true, 2);
  for (size_t i = 0; i < psp_comparison_row_count(same); i++) {
    const psp_compare_row *r = psp_comparison_row(same, i);
    if (r->n_truth == 0) continue;
    assert_true(r->dice == 1.0);
    assert_true(r->hd95_mm == 0.0);
  }
  psp_comparison_free(same);
  psp_comparison_free(c);
  psp_volume_free(p);
  psp_volume_free(t);
}

/* Boxes shifted along one axis: HD95 = shift x spacing of that axis. */
static void check_shift(int axis, int shift, double expect_mm) {
  int64_t dims[3] = {24, 22, 12};
  double sp[3] = {0.8, 1.25, 4.0};
  psp_volume *p = make_vol(dims, sp), *t = make_vol(dims, sp);
  int64_t lo[3] = {3, 3, 3}, hi[3] = {12, 12, 6};
  fill_box(t, lo[0], hi[0], lo[1], hi[1], lo[2], hi[2], 2);
  lo[axis] += shift;
  hi[axis] += shift;
  fill_box(p, lo[0], hi[0], lo[1], hi[1], lo[2], hi[2], 2);
  psp_comparison *c = run(p, t, NULL, true, 3);
  const psp_compare_row *r = find_row(c, 2, -1);
  assert_non_null(r);
  if (fabs(r->hd95_mm - expect_mm) > 1e-4)
    fail_msg("axis %d shift %d: HD95 %.6f mm, expected %.6f", axis, shift, r->hd95_mm, expect_mm);
  const psp_compare_row *r0 = find_row(c, 0, -1);
  assert_true(fabs(r0->hd95_mm - expect_mm) < 1e-4);
  /* in-plane: an in-plane shift shows on every slice; a k shift gives slices
   * with one mask only (HD95 NaN) and slices where both agree (0) */
  for (int64_t k = 3; k <= 6 + (axis == 2 ? shift : 0); k++) {
    const psp_compare_row *s = find_row(c, 2, k);
    assert_non_null(s);
    assert_int_equal(s->file_slice, k);
    if (axis == 2) {
      bool both = k >= 3 + shift && k <= 6;
      if (both) {
        assert_true(s->hd95_mm == 0.0);
        assert_true(s->dice == 1.0);
      } else {
        assert_true(isnan(s->hd95_mm));
        assert_true(s->dice == 0.0);
      }
    } else {
      assert_true(fabs(s->hd95_mm - expect_mm) < 1e-4);
    }
  }
  assert_null(find_row(c, 2, 2));
  assert_null(find_row(c, 1, 4));
  psp_comparison_free(c);
  psp_volume_free(p);
  psp_volume_free(t);
}

static void test_hd95_shift_anisotropic(void **state) {
  (void)state;
  check_shift(0, 3, 2.4);
  check_shift(1, 2, 2.5);
  check_shift(2, 1, 4.0);
  check_shift(0, -2, 1.6);
}

static void test_empty(void **state) {
  (void)state;
  int64_t dims[3] = {6, 5, 4};
  double sp[3] = {1, 1, 2};
  psp_volume *p = make_vol(dims, sp), *t = make_vol(dims, sp);
  psp_comparison *c = run(p, t, NULL, true, 1);
  assert_int_equal(psp_comparison_row_count(c), 5); /* no slice rows */
  for (size_t i = 0; i < 5; i++) {
    const psp_compare_row *r = psp_comparison_row(c, i);
    assert_int_equal(r->label, (int)i);
    assert_int_equal(r->slice, -1);
    assert_true(isnan(r->dice));
    assert_true(isnan(r->hd95_mm));
  }
  psp_comparison_free(c);
  /* prediction empty, truth not */
  fill_box(t, 1, 3, 1, 3, 0, 3, 4);
  c = run(p, t, NULL, true, 1);
  const psp_compare_row *r = find_row(c, 4, -1);
  assert_true(r->dice == 0.0);
  assert_true(isnan(r->hd95_mm));
  assert_true(fabs(r->size_diff_pct + 100) < 1e-12);
  for (int64_t k = 0; k < 4; k++) {
    const psp_compare_row *s = find_row(c, 4, k);
    assert_non_null(s);
    assert_true(s->dice == 0.0);
    assert_true(isnan(s->hd95_mm));
    assert_int_equal(s->n_truth, 9);
  }
  psp_comparison_free(c);
  /* truth empty, prediction not: size difference undefined */
  c = run(t, p, NULL, false, 1);
  r = find_row(c, 4, -1);
  assert_true(r->dice == 0.0);
  assert_true(isnan(r->size_diff_pct));
  psp_comparison_free(c);
  psp_volume_free(p);
  psp_volume_free(t);
}

/* Per-slice rows: order, counts, areas, and file_slice of a flipped file. */
static void test_per_slice_rows(void **state) {
  (void)state;
  int64_t dims[3] = {12, 12, 5};
  double sp[3] = {1, 1, 3};
  psp_volume *p = make_vol(dims, sp), *t = make_vol(dims, sp);
  fill_box(t, 2, 5, 2, 5, 1, 3, 1); /* 16 px per slice */
  fill_box(p, 2, 5, 2, 6, 1, 2, 1); /* 20 px per slice, slices 1..2 */
  fill_box(p, 7, 9, 7, 9, 4, 4, 2); /* label 2 only in pred, slice 4 */
  psp_orientation o = psp_volume_orientation(t);
  o.flip[2] = true;
  psp_error *err = NULL;
  assert_true(psp_volume_set_orientation(t, &o, &err));
  psp_comparison *c = run(p, t, NULL, true, 2);
  /* slices 1,2: labels 0,1; slice 3: 0,1 (truth only); slice 4: 0,2 */
  assert_int_equal(psp_comparison_row_count(c), 5 + 8);
  int64_t prev_slice = -1;
  int prev_label = 99;
  for (size_t i = 5; i < psp_comparison_row_count(c); i++) {
    const psp_compare_row *r = psp_comparison_row(c, i);
    assert_true(r->slice > prev_slice || (r->slice == prev_slice && r->label > prev_label));
    assert_int_equal(r->file_slice, 4 - r->slice);
    prev_slice = r->slice;
    prev_label = r->label;
  }
  const psp_compare_row *s = find_row(c, 1, 1);
  assert_int_equal(s->n_pred, 20);
  assert_int_equal(s->n_truth, 16);
  assert_int_equal(s->n_both, 16);
  assert_true(fabs(s->dice - 32.0 / 36.0) < 1e-12);
  assert_true(fabs(s->size_diff_pct - 25.0) < 1e-12);
  assert_true(fabs(s->hd95_mm - 1.0) < 1e-6);
  s = find_row(c, 1, 3);
  assert_int_equal(s->n_pred, 0);
  assert_true(s->dice == 0.0);
  s = find_row(c, 2, 4);
  assert_int_equal(s->n_pred, 9);
  assert_true(isnan(s->size_diff_pct));
  assert_null(find_row(c, 2, 3));
  psp_comparison_free(c);
  psp_volume_free(p);
  psp_volume_free(t);
}

/* FF difference: pred holds i 0..5, truth i 3..8 of one voxel row whose FF
 * is 0, 5, 10, ... 45 %. */
static void check_ff_rows(const psp_comparison *c, double pred_pct, double truth_pct) {
  const psp_compare_row *r = find_row(c, 3, -1);
  if (fabs(r->ff_pred_pct - pred_pct) > 1e-4 || fabs(r->ff_truth_pct - truth_pct) > 1e-4)
    fail_msg("FF pred %.6f truth %.6f %%, expected %.6f %.6f", r->ff_pred_pct, r->ff_truth_pct,
             pred_pct, truth_pct);
  assert_true(fabs(r->ff_diff_pp - (pred_pct - truth_pct)) < 1e-4);
  r = find_row(c, 0, -1);
  assert_true(fabs(r->ff_diff_pp - (pred_pct - truth_pct)) < 1e-4);
  r = find_row(c, 3, 0);
  assert_true(fabs(r->ff_diff_pp - (pred_pct - truth_pct)) < 1e-4);
  r = find_row(c, 1, -1);
  assert_true(isnan(r->ff_pred_pct));
  assert_true(isnan(r->ff_diff_pp));
}

static void test_ff_difference(void **state) {
  (void)state;
  int64_t dims[3] = {10, 4, 2};
  double sp[3] = {1, 1, 1};
  psp_volume *p = make_vol(dims, sp), *t = make_vol(dims, sp);
  fill_box(p, 0, 5, 0, 0, 0, 0, 3);
  fill_box(t, 3, 8, 0, 0, 0, 0, 3);
  psp_context *ctx = quiet_ctx(1);
  psp_error *err = NULL;

  /* a precomputed FF map in percent */
  psp_volume *f = make_vol(dims, sp);
  float *ff = psp_volume_data_mut(f);
  for (int i = 0; i < 10; i++)
    ff[i] = 5.0f * (float)i;
  psp_ffmap *m = psp_ffmap_from_ff(f, PSP_FF_PERCENT, ctx, &err);
  if (!m) fail_msg("psp_ffmap_from_ff: %s", psp_error_message(err));
  psp_comparison *c = psp_compare(p, t, m, true, ctx, &err);
  assert_non_null(c);
  check_ff_rows(c, 12.5, 27.5); /* (0+5+...+25)/6, (15+...+40)/6 */
  psp_comparison_free(c);
  psp_ffmap_free(m);

  /* water/fat with F + W = 100, except voxel i = 1: no signal -> NaN FF,
   * skipped: pred (0+10+15+20+25)/5 = 14 % */
  psp_volume *w = make_vol(dims, sp), *fat = make_vol(dims, sp);
  float *wd = psp_volume_data_mut(w), *fd = psp_volume_data_mut(fat);
  for (int i = 0; i < 10; i++) {
    fd[i] = 5.0f * (float)i;
    wd[i] = 100.0f - fd[i];
  }
  wd[1] = fd[1] = 0;
  psp_dixon_options o;
  psp_dixon_options_default(&o);
  o.noise_bias_correction = false;
  m = psp_ffmap_from_water_fat(w, fat, &o, ctx, &err);
  if (!m) fail_msg("psp_ffmap_from_water_fat: %s", psp_error_message(err));
  assert_true(isnan(psp_volume_data(psp_ffmap_ff(m))[1]));
  c = psp_compare(p, t, m, false, ctx, &err);
  assert_non_null(c);
  const psp_compare_row *r = find_row(c, 3, -1);
  assert_true(fabs(r->ff_pred_pct - 14.0) < 1e-4);
  assert_true(fabs(r->ff_truth_pct - 27.5) < 1e-4);
  assert_true(fabs(r->ff_diff_pp + 13.5) < 1e-4);
  psp_comparison_free(c);
  psp_ffmap_free(m);

  psp_context_free(ctx);
  psp_volume_free(p);
  psp_volume_free(t);
  psp_volume_free(f);
  psp_volume_free(w);
  psp_volume_free(fat);
}

static void test_errors(void **state) {
  (void)state;
  int64_t dims[3] = {6, 5, 4}, dims2[3] = {6, 5, 5};
  double sp[3] = {1, 1, 2};
  psp_volume *p = make_vol(dims, sp), *t = make_vol(dims2, sp);
  psp_context *ctx = quiet_ctx(1);
  psp_error *err = NULL;
  assert_null(psp_compare(p, t, NULL, false, ctx, &err));
  assert_int_equal(psp_error_code(err), PSP_ERR_GEOMETRY);
  psp_error_free(err);
  err = NULL;
  psp_volume_free(t);
  t = make_vol(dims, sp);
  fill_box(p, 1, 1, 1, 1, 1, 1, 7); /* not a project label */
  assert_null(psp_compare(p, t, NULL, false, ctx, &err));
  assert_int_equal(psp_error_code(err), PSP_ERR_DATA);
  assert_non_null(strstr(psp_error_message(err), "(1, 1, 1)"));
  psp_error_free(err);
  err = NULL;
  /* origin differs only: compared voxel by voxel */
  fill_box(p, 1, 1, 1, 1, 1, 1, 1);
  fill_box(t, 1, 1, 1, 1, 1, 1, 1);
  double aff[4][4];
  psp_volume_affine(t, aff);
  aff[0][3] += 5;
  psp_volume *t2 = psp_volume_create(dims, aff, &err);
  assert_non_null(t2);
  fill_box(t2, 1, 1, 1, 1, 1, 1, 1);
  psp_comparison *c = psp_compare(p, t2, NULL, false, ctx, &err);
  assert_non_null(c);
  assert_true(find_row(c, 1, -1)->dice == 1.0);
  psp_comparison_free(c);
  psp_volume_free(t2);
  psp_context_free(ctx);
  psp_volume_free(p);
  psp_volume_free(t);
}

static void test_csv(void **state) {
  (void)state;
  int64_t dims[3] = {20, 20, 10};
  double sp[3] = {1, 1, 1};
  psp_volume *p = make_vol(dims, sp), *t = make_vol(dims, sp);
  fill_box(p, 2, 9, 2, 9, 2, 5, 1);
  fill_box(t, 6, 13, 2, 9, 2, 5, 1);
  psp_comparison *c = run(p, t, NULL, true, 1);
  char *csv = psp_comparison_csv(c, true);
  assert_non_null(csv);
  const char *header = "label,name,slice,file_slice,n_pred,n_truth,n_both,dice,hd95_mm,"
                       "size_diff_pct,ff_pred_pct,ff_truth_pct,ff_diff_pp\n";
  assert_memory_equal(csv, header, strlen(header));
  size_t lines = 0;
  for (const char *q = csv; *q; q++)
    lines += *q == '\n';
  assert_int_equal(lines, 1 + psp_comparison_row_count(c));
  assert_non_null(strstr(csv, "\n0,all,,,256,256,128,0.5000,4.000,0.00,,,\n"));
  assert_non_null(strstr(csv, "\n1,left multifidus,,,256,256,128,0.5000,4.000,0.00,,,\n"));
  assert_non_null(strstr(csv, "\n2,right multifidus,,,0,0,0,,,,,,\n"));
  assert_non_null(strstr(csv, "\n1,left multifidus,3,3,64,64,32,0.5000,4.000,0.00,,,\n"));
  free(csv);
  /* without the slices: the header and the five whole-volume rows */
  csv = psp_comparison_csv(c, false);
  assert_non_null(csv);
  lines = 0;
  for (const char *q = csv; *q; q++)
    lines += *q == '\n';
  assert_int_equal(lines, 1 + 5);
  assert_null(strstr(csv, "\n1,left multifidus,3,"));
  free(csv);
  psp_comparison_free(c);
  psp_volume_free(p);
  psp_volume_free(t);
}

/* ---- brute-force reference on random blobs ---------------------------- */

static uint64_t rng_next(uint64_t *s) {
  *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
  return *s >> 33;
}

static void random_blobs(psp_volume *v, uint64_t seed) {
  int64_t d[3];
  psp_volume_dims(v, d);
  float *p = psp_volume_data_mut(v);
  uint64_t s = seed;
  for (int l = 1; l <= 4; l++) {
    double c[3], r[3];
    for (int a = 0; a < 3; a++) {
      c[a] = (double)(rng_next(&s) % (uint64_t)d[a]);
      r[a] = 1.5 + (double)(rng_next(&s) % 5);
    }
    for (int64_t k = 0; k < d[2]; k++)
      for (int64_t j = 0; j < d[1]; j++)
        for (int64_t i = 0; i < d[0]; i++) {
          double e = 0, x[3] = {(double)i, (double)j, (double)k};
          for (int a = 0; a < 3; a++)
            e += (x[a] - c[a]) * (x[a] - c[a]) / (r[a] * r[a]);
          if (e <= 1.0) p[(k * d[1] + j) * d[0] + i] = (float)l;
        }
  }
  int64_t n = d[0] * d[1] * d[2];
  for (int64_t x = 0; x < n; x++)
    if (rng_next(&s) % 100 < 4) p[x] = (float)(rng_next(&s) % 5);
}

static bool bf_in(const float *p, int64_t x, int label) {
  return label == 0 ? p[x] != 0 : p[x] == (float)label;
}

static bool bf_surface(const float *p, const int64_t d[3], int64_t i, int64_t j, int64_t k,
                       int label, bool planar) {
  int64_t x = (k * d[1] + j) * d[0] + i;
  if (!bf_in(p, x, label)) return false;
  const int off[6][3] = {{-1, 0, 0}, {1, 0, 0}, {0, -1, 0}, {0, 1, 0}, {0, 0, -1}, {0, 0, 1}};
  for (int n = 0; n < (planar ? 4 : 6); n++) {
    int64_t a = i + off[n][0], b = j + off[n][1], c = k + off[n][2];
    if (a < 0 || b < 0 || c < 0 || a >= d[0] || b >= d[1] || c >= d[2]) return true;
    if (!bf_in(p, (c * d[1] + b) * d[0] + a, label)) return true;
  }
  return false;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double bf_directed(const int64_t *a, size_t na, const int64_t *b, size_t nb,
                          const double sp[3]) {
  double *dist = malloc(na * sizeof *dist);
  assert_non_null(dist);
  for (size_t u = 0; u < na; u++) {
    double best = INFINITY;
    for (size_t w = 0; w < nb; w++) {
      double s = 0;
      for (int c = 0; c < 3; c++) {
        double dd = (double)(a[3 * u + c] - b[3 * w + c]) * sp[c];
        s += dd * dd;
      }
      if (s < best) best = s;
    }
    dist[u] = sqrt(best);
  }
  qsort(dist, na, sizeof *dist, cmp_double);
  double pos = 0.95 * (double)(na - 1);
  size_t lo = (size_t)floor(pos), hi = lo + 1 < na ? lo + 1 : lo;
  double q = dist[lo] + (dist[hi] - dist[lo]) * (pos - (double)lo);
  free(dist);
  return q;
}

static size_t bf_collect(const psp_volume *v, int label, int64_t kslice, int64_t *out) {
  int64_t d[3];
  psp_volume_dims(v, d);
  const float *p = psp_volume_data(v);
  size_t n = 0;
  for (int64_t k = 0; k < d[2]; k++) {
    if (kslice >= 0 && k != kslice) continue;
    for (int64_t j = 0; j < d[1]; j++)
      for (int64_t i = 0; i < d[0]; i++)
        if (bf_surface(p, d, i, j, k, label, kslice >= 0)) {
          out[3 * n] = i;
          out[3 * n + 1] = j;
          out[3 * n + 2] = k;
          n++;
        }
  }
  return n;
}

static double bf_hd95(const psp_volume *a, const psp_volume *b, int label, int64_t kslice,
                      const double sp[3]) {
  int64_t n = psp_volume_voxel_count(a);
  int64_t *sa = malloc((size_t)n * 3 * sizeof *sa), *sb = malloc((size_t)n * 3 * sizeof *sb);
  assert_non_null(sa);
  assert_non_null(sb);
  size_t na = bf_collect(a, label, kslice, sa), nb = bf_collect(b, label, kslice, sb);
  double r = NAN;
  if (na && nb) r = fmax(bf_directed(sa, na, sb, nb, sp), bf_directed(sb, nb, sa, na, sp));
  free(sa);
  free(sb);
  return r;
}

static void test_bruteforce_random(void **state) {
  (void)state;
  int64_t dims[3] = {19, 16, 7};
  double sp[3] = {0.9, 1.3, 3.5};
  for (uint64_t seed = 1; seed <= 4; seed++) {
    psp_volume *p = make_vol(dims, sp), *t = make_vol(dims, sp);
    random_blobs(p, seed * 7919);
    random_blobs(t, seed * 7919 + 13);
    psp_comparison *c1 = run(p, t, NULL, true, 1);
    psp_comparison *c4 = run(p, t, NULL, true, 4);
    assert_int_equal(psp_comparison_row_count(c1), psp_comparison_row_count(c4));
    size_t checked = 0;
    for (size_t i = 0; i < psp_comparison_row_count(c1); i++) {
      const psp_compare_row *r = psp_comparison_row(c1, i), *r4 = psp_comparison_row(c4, i);
      assert_true(r->label == r4->label && r->slice == r4->slice);
      assert_true(r->n_both == r4->n_both);
      assert_true((isnan(r->hd95_mm) && isnan(r4->hd95_mm)) || r->hd95_mm == r4->hd95_mm);
      assert_true((isnan(r->dice) && isnan(r4->dice)) || r->dice == r4->dice);
      double ref = bf_hd95(p, t, r->label, r->slice, sp);
      if (isnan(ref) != isnan(r->hd95_mm) || (!isnan(ref) && fabs(ref - r->hd95_mm) > 1e-4))
        fail_msg("seed %llu label %d slice %lld: HD95 %.6f, brute force %.6f",
                 (unsigned long long)seed, r->label, (long long)r->slice, r->hd95_mm, ref);
      if (!isnan(ref)) checked++;
    }
    assert_true(checked >= 5);
    psp_comparison_free(c1);
    psp_comparison_free(c4);
    psp_volume_free(p);
    psp_volume_free(t);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dice_boxes),    cmocka_unit_test(test_hd95_shift_anisotropic),
      cmocka_unit_test(test_empty),         cmocka_unit_test(test_per_slice_rows),
      cmocka_unit_test(test_ff_difference), cmocka_unit_test(test_errors),
      cmocka_unit_test(test_csv),           cmocka_unit_test(test_bruteforce_random),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
