/* DESIGN: unit tests of the synthetic phantom (src/phantom/phantom.c):
 * identical voxels for the same seed at 1 and 3 threads, the truth table
 * recomputed from the written label map and FF truth, left = larger i (and
 * world -x), disc slices with FF ~0 and vertebral marrow FF 0.3-0.5 at the
 * slices anatomy.csv names, the signal and noise model the FF module
 * assumes (noise-free W+F = IP, Rayleigh background), streak share,
 * orientation/oblique variants that hold the same world data after a
 * write + load round trip, and option validation. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PI 3.14159265358979323846

static char scratch[1024];

static const char *tpath(const char *dir, const char *name) {
  static char buf[4][2048];
  static int slot = 0;
  slot = (slot + 1) % 4;
  snprintf(buf[slot], sizeof buf[slot], "%s/%s/%s", scratch, dir, name);
  return buf[slot];
}

/* A small phantom: 6 mm in-plane, 5 mm slices, sacrum to L3. */
static void small_options(psp_phantom_options *o) {
  psp_phantom_options_default(o);
  o->seed = 42;
  o->dims[0] = 64;
  o->dims[1] = 48;
  o->dims[2] = 24;
  o->spacing[0] = 6.0;
  o->spacing[1] = 6.0;
  o->spacing[2] = 5.0;
}

static psp_phantom *make(const psp_phantom_options *o, int threads) {
  psp_context *ctx = psp_context_create();
  assert_non_null(ctx);
  psp_context_set_threads(ctx, threads);
  psp_error *err = NULL;
  psp_phantom *p = psp_phantom_create(o, ctx, &err);
  if (!p) fail_msg("psp_phantom_create: %s", psp_error_message(err));
  assert_int_equal(psp_context_warning_count(ctx), 0);
  psp_context_free(ctx);
  return p;
}

static const char *const NAMES[] = {"water", "fat", "inphase", "outphase", "labels", "ff_truth"};

static void assert_same_volumes(const psp_phantom *a, const psp_phantom *b) {
  for (size_t v = 0; v < sizeof NAMES / sizeof NAMES[0]; v++) {
    const psp_volume *va = psp_phantom_volume(a, NAMES[v]), *vb = psp_phantom_volume(b, NAMES[v]);
    assert_non_null(va);
    assert_non_null(vb);
    size_t n = (size_t)psp_volume_voxel_count(va);
    assert_int_equal(n, (size_t)psp_volume_voxel_count(vb));
    assert_memory_equal(psp_volume_data(va), psp_volume_data(vb), n * sizeof(float));
  }
}

static void test_deterministic(void **state) {
  (void)state;
  psp_phantom_options o;
  small_options(&o);
  psp_phantom *a = make(&o, 1), *b = make(&o, 3);
  assert_same_volumes(a, b);
  o.seed = 43;
  psp_phantom *c = make(&o, 2);
  const float *wa = psp_volume_data(psp_phantom_volume(a, "water"));
  const float *wc = psp_volume_data(psp_phantom_volume(c, "water"));
  size_t n = (size_t)psp_volume_voxel_count(psp_phantom_volume(a, "water")), differ = 0;
  for (size_t i = 0; i < n; i++)
    differ += wa[i] != wc[i];
  assert_true(differ > n / 2);
  assert_null(psp_phantom_volume(a, "nonsense"));
  psp_phantom_free(a);
  psp_phantom_free(b);
  psp_phantom_free(c);
}

/* ---- CSV helpers ---------------------------------------------------------- */

typedef struct csv {
  char *text;
  int nrows, ncols;
  char **cell; /* nrows x ncols, row 0 = header */
} csv;

static csv read_csv(const char *path) {
  csv c = {0};
  size_t len;
  psp_error *err = NULL;
  c.text = psp_read_file(path, &len, 0, &err);
  if (!c.text) fail_msg("%s", psp_error_message(err));
  int lines = 0;
  for (char *p = c.text; *p; p++)
    lines += *p == '\n';
  int cols = 1;
  for (char *p = c.text; *p && *p != '\n'; p++)
    cols += *p == ',';
  c.ncols = cols;
  c.cell = calloc((size_t)lines * (size_t)cols, sizeof *c.cell);
  char *line = c.text;
  while (*line) {
    char *nl = strchr(line, '\n');
    assert_non_null(nl);
    *nl = '\0';
    int col = 0;
    char *f = line;
    for (;;) {
      char *comma = strchr(f, ',');
      if (comma) *comma = '\0';
      assert_true(col < cols);
      c.cell[c.nrows * cols + col++] = f;
      if (!comma) break;
      f = comma + 1;
    }
    assert_int_equal(col, cols);
    c.nrows++;
    line = nl + 1;
  }
  return c;
}

static const char *cell(const csv *c, int row, const char *name) {
  for (int k = 0; k < c->ncols; k++)
    if (!strcmp(c->cell[k], name)) return c->cell[row * c->ncols + k];
  fail_msg("no column %s", name);
  return NULL;
}

static void free_csv(csv *c) {
  free(c->cell);
  free(c->text);
}

/* ---- truth table ------------------------------------------------------------ */

static void test_truth_table(void **state) {
  (void)state;
  psp_phantom_options o;
  small_options(&o);
  o.snr = 0; /* noise-free: the images themselves give the FF ratio */
  psp_phantom *p = make(&o, 2);
  psp_error *err = NULL;
  char dir[1100];
  snprintf(dir, sizeof dir, "%s/truth", scratch);
  if (!psp_phantom_write(p, dir, "t", &err)) fail_msg("write: %s", psp_error_message(err));
  const psp_volume *lab = psp_phantom_volume(p, "labels");
  const float *l = psp_volume_data(lab), *ff = psp_volume_data(psp_phantom_volume(p, "ff_truth"));
  const float *w = psp_volume_data(psp_phantom_volume(p, "water"));
  const float *f = psp_volume_data(psp_phantom_volume(p, "fat"));
  const float *ip = psp_volume_data(psp_phantom_volume(p, "inphase"));
  int64_t d[3];
  psp_volume_dims(lab, d);
  csv c = read_csv(tpath("truth", "t_truth.csv"));
  static const char *const header[] = {"slice",        "file_slice", "z_mm",     "muscle",
                                       "side",         "label",      "area_mm2", "ff_mean_pct",
                                       "ff_ratio_pct", "n_voxels"};
  assert_int_equal(c.ncols, 10);
  for (int k = 0; k < 10; k++)
    assert_string_equal(c.cell[k], header[k]);
  int64_t rows_expected = 0;
  for (int64_t k = 0; k < d[2]; k++)
    for (int lb = 1; lb < PSP_LABEL_COUNT; lb++) {
      int64_t n = 0;
      for (int64_t q = 0; q < d[0] * d[1]; q++)
        n += l[k * d[0] * d[1] + q] == lb;
      rows_expected += n > 0;
    }
  assert_int_equal(c.nrows - 1, rows_expected);
  for (int r = 1; r < c.nrows; r++) {
    int64_t k = atoll(cell(&c, r, "slice"));
    int lb = atoi(cell(&c, r, "label"));
    assert_int_equal(atoll(cell(&c, r, "file_slice")), psp_volume_file_slice(lab, k));
    assert_float_equal(atof(cell(&c, r, "z_mm")), psp_volume_slice_z(lab, k), 1e-3);
    assert_string_equal(cell(&c, r, "muscle"), psp_label_muscle(lb));
    assert_string_equal(cell(&c, r, "side"), psp_label_side(lb));
    int64_t n = 0;
    double sff = 0, sw = 0, sf = 0;
    for (int64_t q = 0; q < d[0] * d[1]; q++) {
      int64_t i = k * d[0] * d[1] + q;
      if (l[i] != lb) continue;
      n++;
      sff += ff[i];
      sw += w[i];
      sf += f[i];
      /* noise-free: |IP| = (W + F) B, rounded separately */
      assert_true(fabs(ip[i] - (w[i] + f[i])) <= 1.0);
    }
    assert_int_equal(atoll(cell(&c, r, "n_voxels")), n);
    assert_float_equal(atof(cell(&c, r, "area_mm2")), n * psp_volume_pixel_area(lab), 1e-2);
    assert_float_equal(atof(cell(&c, r, "ff_mean_pct")), 100.0 * sff / n, 2e-3);
    assert_float_equal(atof(cell(&c, r, "ff_ratio_pct")), 100.0 * sf / (sf + sw), 0.1);
  }
  free_csv(&c);
  psp_phantom_free(p);
}

/* Per-muscle mean FF over the whole volume, from the truth map. */
static void muscle_means(const psp_phantom *p, double mean[PSP_LABEL_COUNT],
                         double centroid_i[PSP_LABEL_COUNT], double streak_share[PSP_LABEL_COUNT]) {
  const psp_volume *lab = psp_phantom_volume(p, "labels");
  const float *l = psp_volume_data(lab), *ff = psp_volume_data(psp_phantom_volume(p, "ff_truth"));
  int64_t d[3];
  psp_volume_dims(lab, d);
  double n[PSP_LABEL_COUNT] = {0}, s[PSP_LABEL_COUNT] = {0}, si[PSP_LABEL_COUNT] = {0},
         st[PSP_LABEL_COUNT] = {0};
  for (int64_t k = 0; k < d[2]; k++)
    for (int64_t j = 0; j < d[1]; j++)
      for (int64_t i = 0; i < d[0]; i++) {
        int64_t x = psp_idx(d, i, j, k);
        int lb = (int)l[x];
        n[lb]++;
        s[lb] += ff[x];
        si[lb] += (double)i;
        st[lb] += ff[x] > 0.45;
      }
  for (int lb = 1; lb < PSP_LABEL_COUNT; lb++) {
    assert_true(n[lb] > 50);
    mean[lb] = s[lb] / n[lb];
    centroid_i[lb] = si[lb] / n[lb];
    streak_share[lb] = st[lb] / n[lb];
  }
}

static void test_sides_and_fat_fractions(void **state) {
  (void)state;
  psp_phantom_options o;
  small_options(&o);
  o.dims[0] = 128;
  o.dims[1] = 96;
  o.spacing[0] = o.spacing[1] = 3.0;
  o.ff_multifidus[0] = 0.05;
  o.ff_multifidus[1] = 0.30;
  o.ff_erector[0] = 0.10;
  o.ff_erector[1] = 0.45;
  o.streak_share = 0;
  psp_phantom *p = make(&o, 2);
  double mean[PSP_LABEL_COUNT], ci[PSP_LABEL_COUNT], share[PSP_LABEL_COUNT];
  muscle_means(p, mean, ci, share);
  double mid = 0.5 * (double)(o.dims[0] - 1);
  /* left = larger i; erector spinae lateral to multifidus */
  assert_true(ci[PSP_LABEL_ES_LEFT] > ci[PSP_LABEL_MF_LEFT]);
  assert_true(ci[PSP_LABEL_MF_LEFT] > mid);
  assert_true(ci[PSP_LABEL_MF_RIGHT] < mid);
  assert_true(ci[PSP_LABEL_ES_RIGHT] < ci[PSP_LABEL_MF_RIGHT]);
  /* and left is world -x (RAS) */
  double A[4][4];
  psp_volume_affine(psp_phantom_volume(p, "labels"), A);
  assert_true(A[0][0] < 0);
  /* configured FF, raised a little by partial volume with the fat planes */
  double want[PSP_LABEL_COUNT] = {0, 0.05, 0.30, 0.10, 0.45};
  for (int lb = 1; lb < PSP_LABEL_COUNT; lb++) {
    assert_true(mean[lb] >= want[lb] - 0.005);
    assert_true(mean[lb] <= want[lb] + 0.04);
  }
  psp_phantom_free(p);

  /* streaks: about the requested share of the muscle is at streak_ff */
  o.ff_multifidus[1] = o.ff_erector[1] = 0.10;
  o.streak_ff = 0.8;
  o.streak_share = 0.25;
  p = make(&o, 2);
  muscle_means(p, mean, ci, share);
  for (int lb = 1; lb < PSP_LABEL_COUNT; lb++) {
    assert_true(share[lb] > 0.15);
    assert_true(share[lb] < 0.35);
  }
  psp_phantom_free(p);
}

/* ---- anatomy: discs and vertebrae ------------------------------------------------ */

static void test_anatomy_levels(void **state) {
  (void)state;
  psp_phantom_options o;
  small_options(&o);
  o.dims[2] = 36; /* 175 mm: sacrum to L2 */
  o.snr = 0;
  o.bias_amplitude = 0;
  o.spacing[0] = o.spacing[1] = 3.0;
  o.dims[0] = 128;
  o.dims[1] = 96;
  psp_phantom *p = make(&o, 2);
  psp_error *err = NULL;
  char dir[1100];
  snprintf(dir, sizeof dir, "%s/anatomy", scratch);
  if (!psp_phantom_write(p, dir, "a", &err)) fail_msg("write: %s", psp_error_message(err));
  csv c = read_csv(tpath("anatomy", "a_anatomy.csv"));
  assert_int_equal(c.ncols, 4);
  assert_int_equal(c.nrows - 1, o.dims[2]);
  assert_string_equal(c.cell[3], "structure");
  const psp_volume *ffv = psp_phantom_volume(p, "ff_truth");
  const float *ff = psp_volume_data(ffv);
  int64_t d[3];
  psp_volume_dims(ffv, d);
  /* vertebral body centre: 10 mm posterior of the body centre */
  int64_t i0 = (d[0] - 1) / 2, j0 = (int64_t)lround(0.5 * (double)(d[1] - 1) + 10.0 / 3.0);
  static const char *const order[] = {"S1",    "L5/S1", "L5",    "L4/L5", "L4",
                                      "L3/L4", "L3",    "L2/L3", "L2"};
  size_t next = 0;
  int discs = 0, vertebrae = 0;
  for (int r = 1; r < c.nrows;) {
    /* a run of slices in one structure */
    const char *s = cell(&c, r, "structure");
    int end = r;
    while (end + 1 < c.nrows && !strcmp(cell(&c, end + 1, "structure"), s))
      end++;
    assert_true(next < sizeof order / sizeof order[0]);
    assert_string_equal(s, order[next]);
    next++;
    float lowest = 1;
    for (int q = r; q <= end; q++) {
      int64_t k = atoll(cell(&c, q, "slice"));
      assert_int_equal(k, q - 1);
      float v = ff[psp_idx(d, i0, j0, k)];
      if (v < lowest) lowest = v;
      bool inner = q > r && q < end; /* the whole 5 mm slab inside the vertebra */
      if (!strchr(s, '/') && inner) {
        assert_true(v >= 0.28 && v <= 0.52);
        vertebrae++;
      }
    }
    if (strchr(s, '/')) {
      assert_true(lowest < 0.05); /* 10 mm disc: one 5 mm slab fully inside */
      discs++;
    }
    r = end + 1;
  }
  assert_int_equal(next, sizeof order / sizeof order[0]);
  assert_true(discs >= 3);
  assert_true(vertebrae >= 8);
  free_csv(&c);
  psp_phantom_free(p);
}

/* ---- signal and noise model --------------------------------------------------------- */

static void test_noise_model(void **state) {
  (void)state;
  psp_phantom_options o;
  small_options(&o);
  o.snr = 20;
  psp_phantom *p = make(&o, 2);
  int64_t d[3];
  psp_volume_dims(psp_phantom_volume(p, "water"), d);
  const float *ip = psp_volume_data(psp_phantom_volume(p, "inphase"));
  const float *w = psp_volume_data(psp_phantom_volume(p, "water"));
  double sip = 0, sw = 0, n = 0;
  /* the corners are outside the body: pure Rayleigh noise */
  for (int64_t k = 0; k < d[2]; k++)
    for (int64_t j = 0; j < 6; j++)
      for (int64_t i = 0; i < 6; i++) {
        sip += ip[psp_idx(d, i, j, k)];
        sw += w[psp_idx(d, i, j, k)];
        n++;
      }
  double sigma = 1000.0 / o.snr;
  assert_float_equal(sip / n, sigma * sqrt(PI / 2), 0.08 * sigma);
  /* water = |IP+OP|/2: the noise sigma of each component is sigma/sqrt(2) */
  assert_float_equal(sw / n, sigma / sqrt(2.0) * sqrt(PI / 2), 0.08 * sigma);
  psp_phantom_free(p);
}

/* ---- orientation variants: the same world data -------------------------------------- */

static psp_volume *load(const char *path) {
  psp_error *err = NULL;
  psp_context *ctx = psp_context_create();
  psp_volume *v = psp_nifti_load(path, NULL, ctx, &err);
  psp_context_free(ctx);
  if (!v) fail_msg("load %s: %s", path, psp_error_message(err));
  return v;
}

static void assert_affine_near(const psp_volume *a, const psp_volume *b) {
  double A[4][4], B[4][4];
  psp_volume_affine(a, A);
  psp_volume_affine(b, B);
  for (int r = 0; r < 3; r++)
    for (int c = 0; c < 4; c++)
      assert_float_equal(A[r][c], B[r][c], 1e-3);
}

static void test_orientation_variants(void **state) {
  (void)state;
  psp_phantom_options o;
  small_options(&o);
  psp_phantom *ref = make(&o, 2);
  struct {
    const char *name;
    psp_orientation orient;
    double oblique;
  } variants[] = {
      {"LPS", {{0, 1, 2}, {false, false, false}}, 0},
      {"RAS", {{0, 1, 2}, {true, true, false}}, 0},
      {"PLI", {{1, 0, 2}, {false, false, true}}, 0}, /* file i -> P, j -> L, k -> I */
      {"IPR", {{2, 1, 0}, {true, false, true}}, 0},  /* file i -> I, j -> P, k -> R */
      {"LPS-oblique", {{0, 1, 2}, {false, false, false}}, 20},
  };
  for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
    psp_phantom_options ov = o;
    ov.orientation = variants[v].orient;
    ov.oblique_deg = variants[v].oblique;
    psp_phantom *p = make(&ov, 2);
    /* the internal (LPS) voxels do not depend on the file orientation */
    assert_same_volumes(ref, p);
    const psp_volume *w = psp_phantom_volume(p, "water");
    char code[4];
    psp_orientation_code(w, code);
    if (v < 4) assert_memory_equal(code, variants[v].name, 3);
    char dir[64];
    snprintf(dir, sizeof dir, "orient%zu", v);
    char full[1200];
    snprintf(full, sizeof full, "%s/%s", scratch, dir);
    psp_error *err = NULL;
    if (!psp_phantom_write(p, full, "o", &err)) fail_msg("write: %s", psp_error_message(err));
    static const struct {
      const char *file, *vol;
    } files[] = {{"o_water.nii.gz", "water"},     {"o_fat.nii.gz", "fat"},
                 {"o_inphase.nii.gz", "inphase"}, {"o_outphase.nii.gz", "outphase"},
                 {"o_dseg.nii.gz", "labels"},     {"o_fftruth.nii.gz", "ff_truth"}};
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
      psp_volume *back = load(tpath(dir, files[f].file));
      const psp_volume *orig = psp_phantom_volume(p, files[f].vol);
      size_t n = (size_t)psp_volume_voxel_count(orig);
      assert_int_equal((size_t)psp_volume_voxel_count(back), n);
      assert_memory_equal(psp_volume_data(back), psp_volume_data(orig), n * sizeof(float));
      assert_affine_near(back, orig);
      psp_orientation ob = psp_volume_orientation(back);
      for (int a = 0; a < 3; a++) {
        assert_int_equal(ob.file_axis[a], variants[v].orient.file_axis[a]);
        assert_int_equal(ob.flip[a], variants[v].orient.flip[a]);
      }
      psp_volume_free(back);
    }
    /* file_slice numbering in the truth table follows the file */
    csv c = read_csv(tpath(dir, "o_truth.csv"));
    int64_t nz = o.dims[2];
    for (int r = 1; r < c.nrows; r++) {
      int64_t k = atoll(cell(&c, r, "slice")), fk = atoll(cell(&c, r, "file_slice"));
      assert_int_equal(fk, variants[v].orient.flip[2] ? nz - 1 - k : k);
    }
    free_csv(&c);
    if (variants[v].oblique != 0) {
      /* rotated about k: pixel area and slice positions unchanged */
      const psp_volume *rw = psp_phantom_volume(ref, "water");
      assert_float_equal(psp_volume_pixel_area(w), psp_volume_pixel_area(rw), 1e-9);
      for (int64_t k = 0; k < nz; k++)
        assert_float_equal(psp_volume_slice_z(w, k), psp_volume_slice_z(rw, k), 1e-9);
      double A[4][4];
      psp_volume_affine(w, A);
      assert_float_equal(atan2(-A[1][0], -A[0][0]) * 180 / PI, 20.0, 1e-9);
    }
    psp_phantom_free(p);
  }
  psp_phantom_free(ref);
}

static void test_bad_options(void **state) {
  (void)state;
  psp_phantom_options o;
  psp_error *err = NULL;
  for (int c = 0; c < 7; c++) {
    small_options(&o);
    switch (c) {
    case 0:
      o.dims[1] = 2;
      break;
    case 1:
      o.spacing[2] = 0;
      break;
    case 2:
      o.ff_multifidus[1] = 1.5;
      break;
    case 3:
      o.snr = 0.5;
      break;
    case 4:
      o.orientation.file_axis[1] = 0;
      break;
    case 5:
      o.oblique_deg = 60;
      break;
    case 6:
      o.bias_amplitude = NAN;
      break;
    }
    psp_phantom *p = psp_phantom_create(&o, NULL, &err);
    assert_null(p);
    assert_non_null(err);
    assert_int_equal(psp_error_code(err), PSP_ERR_USAGE);
    psp_error_free(err);
    err = NULL;
  }
  /* a field of view smaller than the body is allowed, with a warning */
  small_options(&o);
  o.dims[0] = 32;
  psp_context *ctx = psp_context_create();
  psp_phantom *p = psp_phantom_create(&o, ctx, &err);
  assert_non_null(p);
  assert_int_equal(psp_context_warning_count(ctx), 1);
  psp_phantom_free(p);
  psp_context_free(ctx);
  /* prefix with a slash */
  small_options(&o);
  o.dims[2] = 4;
  p = make(&o, 1);
  assert_false(psp_phantom_write(p, scratch, "a/b", &err));
  assert_int_equal(psp_error_code(err), PSP_ERR_USAGE);
  psp_error_free(err);
  psp_phantom_free(p);
}

int main(void) {
  snprintf(scratch, sizeof scratch, "%s", PSP_SCRATCH_DIR);
  psp_mkdir_p(scratch, NULL);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_deterministic),
      cmocka_unit_test(test_truth_table),
      cmocka_unit_test(test_sides_and_fat_fractions),
      cmocka_unit_test(test_anatomy_levels),
      cmocka_unit_test(test_noise_model),
      cmocka_unit_test(test_orientation_variants),
      cmocka_unit_test(test_bad_options),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
