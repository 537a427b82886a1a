/* DESIGN: unit tests of the vertebral level assignment (src/levels) and the
 * per-level table (src/report/levels_csv.c) on phantoms from
 * psp_phantom_create, whose spine layout is known exactly (phantom.c: the
 * S1 upper endplate 20 mm above slice 0, then per level a 10 mm disc and a
 * 30 mm vertebra; the disc centres lie at z = 25 + 40 n mm above slice 0,
 * L5/S1 first; <prefix>_anatomy.csv names the structure of every slice):
 * 5 mm, 4 mm and 9 mm slices and several seeds -> every disc within one
 * slice and every slice whose slab lies inside one structure (centre at
 * least half a slice from a disc/vertebra boundary) named exactly as the
 * phantom's anatomy.csv; a crop without the sacrum ->
 * relative names, low confidence, the no_anchor flag; overrides (agreeing,
 * contradicting, on a flipped file orientation, from a file) and their
 * parse errors; levels.csv equal to an independent computation from the
 * slice rows; identical results at 1 and 2 threads. The iliac-crest
 * anchor: its naming rule and crest-top logic on synthetic inputs, and the
 * whole detection on the sacrum-free crop with painted bilateral iliac
 * wings (top at a disc: named right; mid-vertebra: flagged ambiguous and
 * less confident; one side only, or a band that narrows downwards: no
 * anchor).
 *
 * Run with "--realdata" (tests/realdata/test_levels_tum01.sh does, with
 * PSP_SHARED_DATA set) it instead runs the checks on the real development
 * scans and prints the discs it finds. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "levels/iliac.h"
#include "levels/levels.h"
#include "report/levels_csv.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define T_S1_MM 20.0
#define LEVEL_MM 40.0
#define DISC_MM 10.0

/* ------------------------------------------------------------------------ */
/* helpers                                                                   */
/* ------------------------------------------------------------------------ */

static psp_phantom *make_phantom(const psp_phantom_options *o) {
  psp_context *ctx = psp_context_create();
  psp_error *err = NULL;
  psp_phantom *p = psp_phantom_create(o, ctx, &err);
  if (!p) fail_msg("psp_phantom_create: %s", psp_error_message(err));
  psp_context_free(ctx);
  return p;
}

static psp_ffmap *ffmap_of(const psp_phantom *p) {
  psp_context *ctx = psp_context_create();
  psp_error *err = NULL;
  psp_ffmap *m = psp_ffmap_from_water_fat(psp_phantom_volume(p, "water"),
                                          psp_phantom_volume(p, "fat"), NULL, ctx, &err);
  if (!m) fail_msg("ffmap: %s", psp_error_message(err));
  psp_context_free(ctx);
  return m;
}

static psp_levels *detect(const psp_ffmap *m, const psp_level_overrides *ov, int threads) {
  psp_context *ctx = psp_context_create();
  psp_context_set_threads(ctx, threads);
  psp_error *err = NULL;
  psp_levels *lv = psp_levels_detect(m, NULL, ov, ctx, &err);
  if (!lv) fail_msg("psp_levels_detect: %s", psp_error_message(err));
  psp_context_free(ctx);
  return lv;
}

static bool has_flag(const psp_levels *lv, const char *key) {
  for (size_t i = 0; i < psp_levels_flag_count(lv); i++)
    if (!strcmp(psp_levels_flag_key(lv, i), key)) return true;
  return false;
}

/* Truth name of disc n (0 = L5/S1) and of the vertebra above it. */
static void truth_disc(int n, char out[16]) {
  psp_levels_disc_name(n, out);
}

/* Distance (mm) of height t above slice 0 from the nearest disc/vertebra
 * boundary of the phantom's layout. */
static double boundary_distance(double t) {
  double u = t - T_S1_MM, best = fabs(u);
  for (int n = -1; n < 20; n++) {
    best = fmin(best, fabs(u - LEVEL_MM * n));
    best = fmin(best, fabs(u - LEVEL_MM * n - DISC_MM));
  }
  return best;
}

/* Reads <dir>/<prefix>_anatomy.csv: structure name per slice. */
static char (*read_anatomy(const char *path, int64_t nz))[16] {
  FILE *f = fopen(path, "r");
  if (!f) fail_msg("cannot open %s", path);
  char(*names)[16] = calloc((size_t)nz, sizeof *names);
  char line[256];
  if (!fgets(line, sizeof line, f)) fail_msg("empty %s", path);
  while (fgets(line, sizeof line, f)) {
    long long k, fk;
    char z[64], s[16];
    if (sscanf(line, "%lld,%lld,%63[^,],%15s", &k, &fk, z, s) == 4 && k >= 0 && k < nz)
      memcpy(names[k], s, sizeof s);
  }
  fclose(f);
  return names;
}

/* Checks one phantom: discs, names against anatomy.csv, anchor. */
static void check_phantom(const psp_phantom_options *o, const char *tag) {
  psp_phantom *p = make_phantom(o);
  psp_ffmap *m = ffmap_of(p);
  psp_levels *lv = detect(m, NULL, 2);
  const double dz = o->spacing[2];
  const int64_t nz = o->dims[2];

  char dir[1100];
  snprintf(dir, sizeof dir, "%s/%s", PSP_SCRATCH_DIR, tag);
  psp_error *err = NULL;
  if (!psp_phantom_write(p, dir, "ph", &err)) fail_msg("phantom write: %s", psp_error_message(err));
  char path[1200];
  snprintf(path, sizeof path, "%s/ph_anatomy.csv", dir);
  char(*truth)[16] = read_anatomy(path, nz);

  assert_true(psp_levels_anchored(lv));
  /* every disc of the layout inside the stack is found within one slice
   * and named right; no other disc */
  size_t want = 0;
  for (int n = 0; n < 20; n++) {
    double k = (T_S1_MM + 0.5 * DISC_MM + LEVEL_MM * n) / dz;
    if (k > (double)(nz - 1)) break;
    want++;
    char nm[16];
    truth_disc(n, nm);
    bool found = false;
    for (size_t i = 0; i < psp_levels_disc_count(lv); i++) {
      const psp_level_disc *d = psp_levels_disc(lv, i);
      if (!strcmp(d->name, nm)) {
        found = true;
        printf("%s: %s at %.2f (truth %.2f), confidence %.2f\n", tag, nm, d->slice, k,
               d->confidence);
        if (fabs(d->slice - k) > 1.0) fail_msg("%s: %s at %.2f, truth %.2f", tag, nm, d->slice, k);
        assert_false(d->inferred);
        assert_true(d->confidence > 0.2);
      }
    }
    if (!found) fail_msg("%s: disc %s (slice %.2f) not found", tag, nm, k);
  }
  assert_int_equal(psp_levels_disc_count(lv), want);
  /* slice names */
  int64_t checked = 0;
  for (int64_t k = 0; k < nz; k++) {
    /* skip slices whose slab straddles a boundary */
    if (boundary_distance((double)k * dz) < 0.5 * dz || !strcmp(truth[k], "S2")) continue;
    const char *got = psp_levels_name(lv, k);
    if (!got[0]) continue; /* beyond the outermost disc by more than a level */
    if (strcmp(got, truth[k]) != 0)
      fail_msg("%s: slice %lld named '%s', phantom says '%s'", tag, (long long)k, got, truth[k]);
    assert_true(psp_levels_confidence(lv, k) > 0.1);
    double f = psp_levels_fraction(lv, k);
    assert_true(f >= 0 && f < 1);
    checked++;
  }
  assert_true(checked >= nz / 3);
  assert_true(strstr(psp_levels_anchor(lv), "lumbosacral") != NULL);
  assert_false(has_flag(lv, "no_anchor"));
  free(truth);
  psp_levels_free(lv);
  psp_ffmap_free(m);
  psp_phantom_free(p);
}

/* ------------------------------------------------------------------------ */
/* phantoms                                                                  */
/* ------------------------------------------------------------------------ */

static void test_phantom_5mm(void **state) {
  (void)state;
  psp_phantom_options o;
  psp_phantom_options_default(&o);
  for (uint64_t seed = 1; seed <= 2; seed++) {
    o.seed = seed;
    char tag[32];
    snprintf(tag, sizeof tag, "p5_seed%llu", (unsigned long long)seed);
    check_phantom(&o, tag);
  }
}

static void test_phantom_4mm(void **state) {
  (void)state;
  psp_phantom_options o;
  psp_phantom_options_default(&o);
  o.spacing[2] = 4.0;
  o.dims[2] = 55;
  o.seed = 7;
  check_phantom(&o, "p4_seed7");
}

static void test_phantom_9mm(void **state) {
  (void)state;
  psp_phantom_options o;
  psp_phantom_options_default(&o);
  o.spacing[2] = 9.0;
  o.dims[2] = 26; /* 0..225 mm: sacrum to the T12/L1 disc */
  for (uint64_t seed = 1; seed <= 3; seed++) {
    o.seed = seed;
    char tag[32];
    snprintf(tag, sizeof tag, "p9_seed%llu", (unsigned long long)seed);
    check_phantom(&o, tag);
  }
}

/* In-phase/opposed-phase input (swap-invariant evidence); on seed 1 the
 * landmarks put the canal ~35 mm lateral, which the column refinement
 * must catch. */
static void test_phantom_ipop(void **state) {
  (void)state;
  psp_phantom_options o;
  psp_phantom_options_default(&o);
  psp_phantom *p = make_phantom(&o);
  psp_context *ctx = psp_context_create();
  psp_error *err = NULL;
  psp_ffmap *m = psp_ffmap_from_ipop(psp_phantom_volume(p, "inphase"),
                                     psp_phantom_volume(p, "outphase"), NULL, ctx, &err);
  if (!m) fail_msg("ffmap ipop: %s", psp_error_message(err));
  psp_levels *lv = detect(m, NULL, 2);
  assert_true(psp_levels_anchored(lv));
  assert_non_null(strstr(psp_levels_method(lv), "min(FF, 1-FF)"));
  assert_int_equal(psp_levels_disc_count(lv), 5);
  for (int n = 0; n < 5; n++) {
    char nm[16];
    truth_disc(n, nm);
    const psp_level_disc *d = psp_levels_disc(lv, (size_t)n);
    assert_string_equal(d->name, nm);
    assert_true(fabs(d->slice - (T_S1_MM + 0.5 * DISC_MM + LEVEL_MM * n) / 5.0) <= 1.0);
  }
  psp_levels_free(lv);
  psp_ffmap_free(m);
  psp_context_free(ctx);
  psp_phantom_free(p);
}

/* The FF map of slices k0.. of a phantom, as a precomputed FF map. */
static psp_ffmap *crop_ff(const psp_ffmap *m, int64_t k0) {
  const psp_volume *v = psp_ffmap_ff(m);
  int64_t d[3];
  double A[4][4];
  psp_volume_dims(v, d);
  psp_volume_affine(v, A);
  int64_t nd[3] = {d[0], d[1], d[2] - k0};
  for (int r = 0; r < 3; r++)
    A[r][3] += A[r][2] * (double)k0;
  psp_error *err = NULL;
  psp_volume *c = psp_volume_create(nd, A, &err);
  assert_non_null(c);
  memcpy(psp_volume_data_mut(c), psp_volume_data(v) + k0 * d[0] * d[1],
         (size_t)(nd[0] * nd[1] * nd[2]) * sizeof(float));
  psp_context *ctx = psp_context_create();
  psp_ffmap *out = psp_ffmap_from_ff(c, PSP_FF_FRACTION, ctx, &err);
  if (!out) fail_msg("ffmap_from_ff: %s", psp_error_message(err));
  psp_context_free(ctx);
  psp_volume_free(c);
  return out;
}

static void test_crop_without_sacrum(void **state) {
  (void)state;
  psp_phantom_options o;
  psp_phantom_options_default(&o);
  psp_phantom *p = make_phantom(&o);
  psp_ffmap *m = ffmap_of(p);
  /* from slice 9 (45 mm: inside L5) up: no sacrum, no L5/S1 */
  psp_ffmap *c = crop_ff(m, 9);
  psp_levels *lv = detect(c, NULL, 2);
  assert_false(psp_levels_anchored(lv));
  assert_string_equal(psp_levels_anchor(lv), "");
  assert_true(has_flag(lv, "no_anchor"));
  assert_true(psp_levels_disc_count(lv) >= 3);
  /* L4/L5 (original slice 13) is now D1 at slice 4 */
  const psp_level_disc *d1 = psp_levels_disc(lv, 0);
  assert_string_equal(d1->name, "D1");
  assert_true(fabs(d1->slice - 4.0) <= 1.0);
  for (int64_t k = 0; k < psp_levels_slice_count(lv); k++) {
    const char *nm = psp_levels_name(lv, k);
    assert_true(nm[0] == '\0' || nm[0] == 'D' || nm[0] == 'V');
    assert_true(psp_levels_confidence(lv, k) <= 0.3);
  }
  /* slice 9 of the crop (original 18: L4) is V1, the vertebra above D1 */
  assert_string_equal(psp_levels_name(lv, 9), "V1");
  psp_levels_free(lv);
  psp_ffmap_free(c);
  psp_ffmap_free(m);
  psp_phantom_free(p);
}

static void test_threads_identical(void **state) {
  (void)state;
  psp_phantom_options o;
  psp_phantom_options_default(&o);
  psp_phantom *p = make_phantom(&o);
  psp_ffmap *m = ffmap_of(p);
  psp_levels *a = detect(m, NULL, 1), *b = detect(m, NULL, 2);
  assert_int_equal(psp_levels_disc_count(a), psp_levels_disc_count(b));
  for (size_t i = 0; i < psp_levels_disc_count(a); i++)
    assert_true(psp_levels_disc(a, i)->slice == psp_levels_disc(b, i)->slice);
  for (int64_t k = 0; k < psp_levels_slice_count(a); k++) {
    assert_string_equal(psp_levels_name(a, k), psp_levels_name(b, k));
    assert_true(psp_levels_confidence(a, k) == psp_levels_confidence(b, k));
  }
  psp_levels_free(a);
  psp_levels_free(b);
  psp_ffmap_free(m);
  psp_phantom_free(p);
}

static void test_with_segmentation(void **state) {
  (void)state;
  psp_phantom_options o;
  psp_phantom_options_default(&o);
  psp_phantom *p = make_phantom(&o);
  psp_ffmap *m = ffmap_of(p);
  psp_context *ctx = psp_context_create();
  psp_error *err = NULL;
  psp_segmentation *seg = psp_segment(m, ctx, &err);
  if (!seg) fail_msg("segment: %s", psp_error_message(err));
  psp_levels *a = psp_levels_detect(m, seg, NULL, ctx, &err);
  psp_levels *b = detect(m, NULL, 2);
  assert_non_null(a);
  assert_true(psp_levels_anchored(a));
  assert_non_null(strstr(psp_levels_method(a), "segmentation"));
  assert_int_equal(psp_levels_disc_count(a), psp_levels_disc_count(b));
  for (size_t i = 0; i < psp_levels_disc_count(a); i++) {
    assert_string_equal(psp_levels_disc(a, i)->name, psp_levels_disc(b, i)->name);
    assert_true(fabs(psp_levels_disc(a, i)->slice - psp_levels_disc(b, i)->slice) < 0.5);
  }
  psp_levels_free(a);
  psp_levels_free(b);
  psp_segmentation_free(seg);
  psp_context_free(ctx);
  psp_ffmap_free(m);
  psp_phantom_free(p);
}

/* No signal at all, and a stack of one slice: no levels, flags, no crash. */
static void test_degenerate(void **state) {
  (void)state;
  for (int nz = 1; nz <= 3; nz += 2) {
    int64_t d[3] = {16, 16, nz};
    double A[4][4] = {{-2, 0, 0, 0}, {0, -2, 0, 0}, {0, 0, 5, 0}, {0, 0, 0, 1}};
    psp_error *err = NULL;
    psp_volume *v = psp_volume_create(d, A, &err);
    float *x = psp_volume_data_mut(v);
    for (int64_t i = 0; i < 16 * 16 * nz; i++)
      x[i] = NAN;
    psp_context *ctx = psp_context_create();
    psp_ffmap *m = psp_ffmap_from_ff(v, PSP_FF_FRACTION, ctx, &err);
    if (!m) fail_msg("ffmap: %s", psp_error_message(err));
    psp_levels *lv = psp_levels_detect(m, NULL, NULL, ctx, &err);
    assert_non_null(lv);
    assert_int_equal(psp_levels_disc_count(lv), 0);
    assert_false(psp_levels_anchored(lv));
    assert_true(psp_levels_flag_count(lv) >= 1);
    for (int64_t k = 0; k < nz; k++) {
      assert_string_equal(psp_levels_name(lv, k), "");
      assert_true(psp_levels_confidence(lv, k) == 0);
    }
    assert_string_equal(psp_levels_name(lv, nz), ""); /* out of range */
    psp_levels_free(lv);
    psp_ffmap_free(m);
    psp_context_free(ctx);
    psp_volume_free(v);
  }
}

/* ------------------------------------------------------------------------ */
/* overrides                                                                 */
/* ------------------------------------------------------------------------ */

static psp_level_overrides *parse1(const char *item) {
  psp_error *err = NULL;
  const char *items[1] = {item};
  psp_level_overrides *ov = psp_level_overrides_parse(items, 1, &err);
  if (!ov) fail_msg("parse %s: %s", item, psp_error_message(err));
  return ov;
}

static const psp_level_disc *disc_named(const psp_levels *lv, const char *name) {
  for (size_t i = 0; i < psp_levels_disc_count(lv); i++)
    if (!strcmp(psp_levels_disc(lv, i)->name, name)) return psp_levels_disc(lv, i);
  return NULL;
}

static void test_override_parse(void **state) {
  (void)state;
  const char *good[] = {"L4/L5=12", "l5-s1=3", " T12/L1 = 40 ", "L3=20"};
  psp_error *err = NULL;
  psp_level_overrides *ov = psp_level_overrides_parse(good, 4, &err);
  assert_non_null(ov);
  assert_int_equal(psp_level_overrides_count(ov), 4);
  int64_t s = -1;
  assert_string_equal(psp_level_overrides_name(ov, 0, &s), "L4/L5");
  assert_int_equal(s, 12);
  assert_string_equal(psp_level_overrides_name(ov, 1, &s), "L5/S1");
  assert_string_equal(psp_level_overrides_name(ov, 2, &s), "T12/L1");
  assert_int_equal(s, 40);
  assert_string_equal(psp_level_overrides_name(ov, 3, &s), "L3");
  psp_level_overrides_free(ov);
  const char *bad[] = {"L4/L6=3", "L4/L5=x", "L4/L5", "foo=3", "L4/L5=-1", "L4/L5=3.5", "S1=2"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err = NULL;
    ov = psp_level_overrides_parse(&bad[i], 1, &err);
    if (ov) fail_msg("'%s' was accepted", bad[i]);
    assert_int_equal(psp_error_code(err), PSP_ERR_USAGE);
    assert_non_null(strstr(psp_error_message(err), "override"));
    psp_error_free(err);
  }
  /* from a file, with comments */
  char path[1100];
  mkdir(PSP_SCRATCH_DIR, 0755);
  snprintf(path, sizeof path, "%s/landmarks.txt", PSP_SCRATCH_DIR);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs("# level landmarks\n\nL4/L5=12   # checked by hand\n  L2/L3 = 30\n", f);
  fclose(f);
  err = NULL;
  ov = psp_level_overrides_load(path, &err);
  if (!ov) fail_msg("load: %s", psp_error_message(err));
  assert_int_equal(psp_level_overrides_count(ov), 2);
  assert_string_equal(psp_level_overrides_name(ov, 1, &s), "L2/L3");
  assert_int_equal(s, 30);
  psp_level_overrides_free(ov);
  f = fopen(path, "w");
  fputs("L4/L5=12\nL9=3\n", f);
  fclose(f);
  err = NULL;
  assert_null(psp_level_overrides_load(path, &err));
  assert_non_null(strstr(psp_error_message(err), ":2:"));
  psp_error_free(err);
  err = NULL;
  assert_null(psp_level_overrides_load("/nonexistent/landmarks.txt", &err));
  psp_error_free(err);
  /* a byte-order mark (a Windows editor), CRLF and a comment longer than the entry buffer are
   * read; a NUL byte (not a text file) is an error, not the rest of its line dropped */
  char bom[600] = "\xEF\xBB\xBFL4/L5=12\r\n# ";
  memset(bom + strlen(bom), 'x', 400);
  strcpy(bom + strlen(bom), "\r\nL3=20\r\n");
  err = NULL;
  ov = psp_level_overrides_parse_text(bom, strlen(bom), "bom.txt", &err);
  if (!ov) fail_msg("BOM, CRLF, long comment: %s", psp_error_message(err));
  assert_int_equal(psp_level_overrides_count(ov), 2);
  assert_string_equal(psp_level_overrides_name(ov, 0, &s), "L4/L5");
  assert_int_equal(s, 12);
  psp_level_overrides_free(ov);
  static const char nul[] = "L4/L5=13\0L3=1\n";
  assert_null(psp_level_overrides_parse_text(nul, sizeof nul - 1, "nul.txt", &err));
  assert_non_null(strstr(psp_error_message(err), "NUL"));
  psp_error_free(err);
}

static void test_override_applied(void **state) {
  (void)state;
  psp_phantom_options o;
  psp_phantom_options_default(&o);
  psp_phantom *p = make_phantom(&o);
  psp_ffmap *m = ffmap_of(p);
  psp_levels *ref = detect(m, NULL, 2);

  /* agreeing: same names, anchored by the override, no contradiction */
  psp_level_overrides *ov = parse1("L4/L5=13");
  psp_levels *lv = detect(m, ov, 2);
  assert_true(psp_levels_anchored(lv));
  assert_non_null(strstr(psp_levels_anchor(lv), "L4/L5=13"));
  assert_true(has_flag(lv, "override_applied"));
  assert_false(has_flag(lv, "override_contradicts_detection"));
  for (int64_t k = 0; k < psp_levels_slice_count(lv); k++)
    assert_string_equal(psp_levels_name(lv, k), psp_levels_name(ref, k));
  assert_true(disc_named(lv, "L4/L5")->from_override);
  psp_levels_free(lv);
  psp_level_overrides_free(ov);

  /* a vertebra override: slice 18 lies in L4 */
  ov = parse1("L4=18");
  lv = detect(m, ov, 2);
  for (int64_t k = 0; k < psp_levels_slice_count(lv); k++)
    assert_string_equal(psp_levels_name(lv, k), psp_levels_name(ref, k));
  psp_levels_free(lv);
  psp_level_overrides_free(ov);

  /* contradicting the sacrum anchor by one level: the override wins */
  ov = parse1("L3/L4=13");
  lv = detect(m, ov, 2);
  assert_true(has_flag(lv, "override_contradicts_detection"));
  assert_string_equal(psp_levels_name(lv, 13), "L3/L4");
  assert_string_equal(psp_levels_name(lv, 18), "L3");
  assert_non_null(disc_named(lv, "L4/L5"));
  assert_true(fabs(disc_named(lv, "L4/L5")->slice - 5.0) <= 1.0);
  psp_levels_free(lv);
  psp_level_overrides_free(ov);

  /* where no disc was detected: the disc goes where the user says */
  ov = parse1("L4/L5=17");
  lv = detect(m, ov, 2);
  assert_true(has_flag(lv, "override_contradicts_detection"));
  assert_string_equal(psp_levels_name(lv, 17), "L4/L5");
  assert_true(fabs(disc_named(lv, "L4/L5")->slice - 17.0) < 1e-9);
  psp_levels_free(lv);
  psp_level_overrides_free(ov);

  /* outside the stack: usage error */
  ov = parse1("L4/L5=44");
  psp_context *ctx = psp_context_create();
  psp_error *err = NULL;
  assert_null(psp_levels_detect(m, NULL, ov, ctx, &err));
  assert_int_equal(psp_error_code(err), PSP_ERR_USAGE);
  psp_error_free(err);
  psp_context_free(ctx);
  psp_level_overrides_free(ov);

  psp_levels_free(ref);
  psp_ffmap_free(m);
  psp_phantom_free(p);
}

static void test_override_flipped_file(void **state) {
  (void)state;
  psp_phantom_options o;
  psp_phantom_options_default(&o);
  o.orientation.flip[2] = true; /* file slice 0 is the superior end */
  psp_phantom *p = make_phantom(&o);
  char dir[1100];
  snprintf(dir, sizeof dir, "%s/flipped", PSP_SCRATCH_DIR);
  psp_error *err = NULL;
  if (!psp_phantom_write(p, dir, "ph", &err)) fail_msg("write: %s", psp_error_message(err));
  /* load the files back, as a user's scan */
  char pw[1200], pf[1200];
  snprintf(pw, sizeof pw, "%s/ph_water.nii.gz", dir);
  snprintf(pf, sizeof pf, "%s/ph_fat.nii.gz", dir);
  psp_context *ctx = psp_context_create();
  psp_volume *w = psp_nifti_load(pw, NULL, ctx, &err);
  psp_volume *f = psp_nifti_load(pf, NULL, ctx, &err);
  assert_non_null(w);
  assert_non_null(f);
  assert_int_equal(psp_volume_file_slice(w, 13), 30);
  psp_ffmap *m = psp_ffmap_from_water_fat(w, f, NULL, ctx, &err);
  assert_non_null(m);
  psp_levels *ref = detect(m, NULL, 2);
  const psp_level_disc *d = disc_named(ref, "L4/L5");
  assert_non_null(d);
  assert_true(fabs(d->file_slice - (43.0 - d->slice)) < 1e-9);
  /* internal slice 13 = file slice 30 */
  psp_level_overrides *ov = parse1("L4/L5=30");
  psp_levels *lv = detect(m, ov, 2);
  assert_false(has_flag(lv, "override_contradicts_detection"));
  assert_string_equal(psp_levels_name(lv, 13), "L4/L5");
  for (int64_t k = 0; k < psp_levels_slice_count(lv); k++)
    assert_string_equal(psp_levels_name(lv, k), psp_levels_name(ref, k));
  psp_levels_free(lv);
  psp_level_overrides_free(ov);
  /* the internal number would be a contradiction here */
  ov = parse1("L4/L5=13");
  lv = detect(m, ov, 2);
  assert_true(has_flag(lv, "override_contradicts_detection"));
  assert_string_equal(psp_levels_name(lv, 30), "L4/L5");
  psp_levels_free(lv);
  psp_level_overrides_free(ov);
  psp_levels_free(ref);
  psp_ffmap_free(m);
  psp_volume_free(w);
  psp_volume_free(f);
  psp_context_free(ctx);
  psp_phantom_free(p);
}

/* ------------------------------------------------------------------------ */
/* levels.csv                                                                */
/* ------------------------------------------------------------------------ */

typedef struct csv {
  char *text;
  char **cell; /* rows x cols */
  int rows, cols;
} csv;

static csv parse_csv(char *text) {
  csv c = {text, NULL, 0, 0};
  int cap = 0;
  char *line = text;
  while (line && *line) {
    char *nl = strchr(line, '\n');
    if (nl) *nl = '\0';
    int n = 1;
    for (char *q = line; *q; q++)
      n += *q == ',';
    if (c.rows == 0) c.cols = n;
    if (n != c.cols) fail_msg("csv row %d has %d fields, header %d", c.rows, n, c.cols);
    if (c.rows + 1 > cap) {
      cap = cap ? 2 * cap : 64;
      c.cell = realloc(c.cell, (size_t)cap * (size_t)c.cols * sizeof *c.cell);
    }
    char *f = line;
    for (int j = 0; j < n; j++) {
      char *e = strchr(f, ',');
      if (e) *e = '\0';
      c.cell[c.rows * c.cols + j] = f;
      f = e ? e + 1 : f + strlen(f);
    }
    c.rows++;
    line = nl ? nl + 1 : NULL;
  }
  return c;
}

static const char *cell(const csv *c, int row, const char *col) {
  for (int j = 0; j < c->cols; j++)
    if (!strcmp(c->cell[j], col)) return c->cell[row * c->cols + j];
  fail_msg("no column %s", col);
  return NULL;
}

static int find_row(const csv *c, const char *level, const char *muscle, const char *side) {
  for (int r = 1; r < c->rows; r++)
    if (!strcmp(cell(c, r, "level"), level) && !strcmp(cell(c, r, "muscle"), muscle) &&
        !strcmp(cell(c, r, "side"), side))
      return r;
  fail_msg("no row %s %s %s", level, muscle, side);
  return -1;
}

static void near(const char *got, double want, double tol, const char *what) {
  if (!isfinite(want)) {
    if (got[0]) fail_msg("%s: '%s', expected empty", what, got);
    return;
  }
  double g = atof(got);
  if (!got[0] || fabs(g - want) > tol * fmax(1.0, fabs(want)))
    fail_msg("%s: '%s', expected %.6f", what, got, want);
}

/* Independent: metrics of a label set on slice k from the slice rows. */
static void slice_metrics(const psp_measurements *ms, int64_t k, const int *labels, int n,
                          double *area, double *ffm, double *vol) {
  double a = 0, w = 0, s = 0, v = 0;
  bool any = false;
  for (size_t i = 0; i < psp_measurements_slice_count(ms); i++) {
    const psp_region_metrics *r = psp_measurements_slice_row(ms, i);
    if (r->slice != k) continue;
    for (int q = 0; q < n; q++)
      if (r->label == labels[q]) {
        any = true;
        a += r->area_mm2;
        v += r->volume_mm3;
        double ns = (double)(r->n_voxels - r->n_no_signal);
        if (ns > 0) {
          w += ns;
          s += ns * r->ff_mean;
        }
      }
  }
  *area = any ? a : NAN;
  *ffm = w > 0 ? 100.0 * s / w : NAN;
  *vol = v;
}

/* 100 x sum F / sum (F + W) over the voxels of slice k with one of the
 * labels and signal (FF defined), straight from the map's magnitudes. */
static double voxel_ratio_pct(const psp_ffmap *m, const psp_volume *labels, int64_t k,
                              const int *want, int n) {
  int64_t d[3];
  psp_volume_dims(labels, d);
  const float *lab = psp_volume_data(labels), *ff = psp_volume_data(psp_ffmap_ff(m));
  const float *w = psp_volume_data(psp_ffmap_water(m)), *f = psp_volume_data(psp_ffmap_fat(m));
  double sf = 0, sfw = 0;
  for (int64_t p = k * d[0] * d[1]; p < (k + 1) * d[0] * d[1]; p++)
    for (int q = 0; q < n; q++)
      if (lab[p] == (float)want[q] && !isnan(ff[p])) {
        sf += f[p];
        sfw += (double)f[p] + (double)w[p];
      }
  return 100.0 * sf / sfw;
}

static void test_levels_csv(void **state) {
  (void)state;
  psp_phantom_options o;
  psp_phantom_options_default(&o);
  psp_phantom *p = make_phantom(&o);
  psp_ffmap *m = ffmap_of(p);
  psp_context *ctx = psp_context_create();
  psp_error *err = NULL;
  const psp_volume *labels = psp_phantom_volume(p, "labels");
  psp_measurements *ms = psp_measure(labels, m, ctx, &err);
  assert_non_null(ms);
  psp_levels *lv = detect(m, NULL, 2);
  char *text = psp_levels_csv(lv, ms, labels, NULL, &err);
  if (!text) fail_msg("levels csv: %s", psp_error_message(err));
  csv c = parse_csv(text);
  assert_string_equal(c.cell[0], "level");
  /* levels: S1, L5/S1, L5, ..., L1/L2, L1 -> 11 levels x 9 rows */
  assert_int_equal(c.rows - 1, 11 * 9);

  const double dz = o.spacing[2];
  /* disc row: L4/L5, nearest slice to the centre */
  const psp_level_disc *d = disc_named(lv, "L4/L5");
  int64_t kd = (int64_t)llround(d->slice);
  int r = find_row(&c, "L4/L5", "multifidus", "left");
  assert_string_equal(cell(&c, r, "kind"), "disc");
  assert_int_equal(atoll(cell(&c, r, "slice")), kd);
  near(cell(&c, r, "slice_distance_mm"), fabs(d->slice - (double)kd) * dz, 0.01, "distance");
  const int mf_l[1] = {PSP_LABEL_MF_LEFT}, mf_r[1] = {PSP_LABEL_MF_RIGHT};
  const int mf_both[2] = {PSP_LABEL_MF_LEFT, PSP_LABEL_MF_RIGHT};
  const int all[4] = {1, 2, 3, 4};
  double a, f, v, al, ar, tmp;
  slice_metrics(ms, kd, mf_l, 1, &a, &f, &v);
  near(cell(&c, r, "area_mm2"), a, 1e-4, "L4/L5 MF left area");
  near(cell(&c, r, "ff_mean_pct"), f, 1e-4, "L4/L5 MF left FF");
  const char *grade = f < 20 ? "lt20" : f <= 50 ? "20-50" : "gt50";
  assert_string_equal(cell(&c, r, "fat_grade_research_only"), grade);
  assert_string_equal(cell(&c, r, "seg_n_slices"), "");
  /* side both: sums and voxel-weighted FF; asymmetry */
  r = find_row(&c, "L4/L5", "multifidus", "both");
  slice_metrics(ms, kd, mf_both, 2, &a, &f, &v);
  near(cell(&c, r, "area_mm2"), a, 1e-4, "L4/L5 MF both area");
  near(cell(&c, r, "ff_mean_pct"), f, 1e-4, "L4/L5 MF both FF");
  /* sum F / sum (F+W) over both muscles' voxels with signal, from the voxels */
  near(cell(&c, r, "ff_ratio_pct"), voxel_ratio_pct(m, labels, kd, mf_both, 2), 1e-3,
       "L4/L5 MF both FF ratio");
  slice_metrics(ms, kd, mf_l, 1, &al, &tmp, &v);
  slice_metrics(ms, kd, mf_r, 1, &ar, &tmp, &v);
  near(cell(&c, r, "asym_area_pct"), fabs(al - ar) / (0.5 * (al + ar)) * 100.0, 1e-3, "asym");

  /* vertebra row: L4 mid-vertebral slice and segment */
  const psp_level_disc *d45 = disc_named(lv, "L4/L5"), *d34 = disc_named(lv, "L3/L4");
  double target = 0.5 * (d45->slice + d34->slice);
  int64_t km = (int64_t)llround(target);
  r = find_row(&c, "L4", "mf+es", "both");
  assert_string_equal(cell(&c, r, "kind"), "vertebra");
  assert_string_equal(cell(&c, r, "disc_below"), "L4/L5");
  assert_string_equal(cell(&c, r, "disc_above"), "L3/L4");
  assert_int_equal(atoll(cell(&c, r, "slice")), km);
  near(cell(&c, r, "slice_distance_mm"), fabs(target - (double)km) * dz, 0.01, "mid distance");
  slice_metrics(ms, km, all, 4, &a, &f, &v);
  near(cell(&c, r, "area_mm2"), a, 1e-4, "L4 mid area");
  near(cell(&c, r, "ff_mean_pct"), f, 1e-4, "L4 mid FF");
  double sa = 0, sf = 0, sv = 0;
  int n = 0, nf = 0;
  int64_t k0 = -1, k1 = -1;
  for (int64_t k = 0; k < o.dims[2]; k++) {
    if (strcmp(psp_levels_name(lv, k), "L4") != 0) continue;
    if (k0 < 0) k0 = k;
    k1 = k;
    slice_metrics(ms, k, all, 4, &a, &f, &v);
    sa += isfinite(a) ? a : 0;
    sv += v;
    n++;
    if (isfinite(f)) {
      sf += f;
      nf++;
    }
  }
  assert_true(n >= 4);
  assert_int_equal(atoll(cell(&c, r, "seg_n_slices")), n);
  assert_int_equal(atoll(cell(&c, r, "seg_first_file_slice")), k0);
  assert_int_equal(atoll(cell(&c, r, "seg_last_file_slice")), k1);
  assert_string_equal(cell(&c, r, "seg_complete"), "1");
  near(cell(&c, r, "seg_area_mm2_mean"), sa / n, 1e-4, "L4 segment area");
  near(cell(&c, r, "seg_ff_mean_pct_mean"), sf / nf, 1e-4, "L4 segment FF");
  near(cell(&c, r, "seg_volume_mm3"), sv, 1e-4, "L4 segment volume");
  /* single-label rows carry the ratio of the slice row */
  r = find_row(&c, "L4", "erector_spinae", "right");
  for (size_t i = 0; i < psp_measurements_slice_count(ms); i++) {
    const psp_region_metrics *row = psp_measurements_slice_row(ms, i);
    if (row->slice == km && row->label == PSP_LABEL_ES_RIGHT) {
      near(cell(&c, r, "ff_ratio_pct"), 100.0 * row->ff_ratio, 1e-4, "ratio");
      near(cell(&c, r, "fcsa_mm2"), row->fcsa_mm2, 1e-4, "fcsa");
      near(cell(&c, r, "fat_infiltration_pct"), 100.0 * row->fat_infiltration, 1e-4, "fi");
    }
  }
  /* the lowest level, S1: cut by the stack */
  r = find_row(&c, "S1", "multifidus", "left");
  assert_string_equal(cell(&c, r, "seg_complete"), "0");
  assert_string_equal(cell(&c, r, "disc_above"), "L5/S1");

  /* measured per slice and muscle (an automatic segmentation): the L4
   * segment's lowest slice flagged (nothing measured) and its mid slice
   * with the right erector spinae cut by the field of view. Those slices
   * leave the means (never an area of 0), seg_n_slices counts the rest,
   * seg_complete is 0, and the mid slice's cells of a group holding the
   * right erector spinae are empty. */
  int64_t nzl = o.dims[2];
  uint8_t *meas = calloc((size_t)nzl * PSP_LABEL_COUNT, 1);
  assert_non_null(meas);
  for (int64_t k = 0; k < nzl; k++)
    for (int l = 1; l < PSP_LABEL_COUNT; l++)
      meas[k * PSP_LABEL_COUNT + l] = k != k0 && !(k == km && l == PSP_LABEL_ES_RIGHT);
  char *text2 = psp_levels_csv(lv, ms, labels, meas, &err);
  if (!text2) fail_msg("levels csv (measured): %s", psp_error_message(err));
  csv c2 = parse_csv(text2);
  const int es_r[1] = {PSP_LABEL_ES_RIGHT}, mfes_l[2] = {PSP_LABEL_MF_LEFT, PSP_LABEL_ES_LEFT};
  double sa_es = 0, sa_mf = 0;
  int n_es = 0, n_mf = 0;
  for (int64_t k = k0; k <= k1; k++) {
    if (strcmp(psp_levels_name(lv, k), "L4") != 0 || k == k0) continue;
    slice_metrics(ms, k, mf_l, 1, &a, &f, &v);
    sa_mf += a;
    n_mf++;
    if (k == km) continue;
    slice_metrics(ms, k, es_r, 1, &a, &f, &v);
    sa_es += a;
    n_es++;
  }
  r = find_row(&c2, "L4", "multifidus", "left");
  assert_int_equal(atoll(cell(&c2, r, "seg_n_slices")), n - 1);
  assert_string_equal(cell(&c2, r, "seg_complete"), "0");
  near(cell(&c2, r, "seg_area_mm2_mean"), sa_mf / n_mf, 1e-4, "L4 MF left, flagged slice out");
  slice_metrics(ms, km, mf_l, 1, &a, &f, &v);
  near(cell(&c2, r, "area_mm2"), a, 1e-4, "L4 mid MF left still measured");
  r = find_row(&c2, "L4", "erector_spinae", "right");
  assert_int_equal(atoll(cell(&c2, r, "seg_n_slices")), n - 2);
  assert_string_equal(cell(&c2, r, "seg_complete"), "0");
  near(cell(&c2, r, "seg_area_mm2_mean"), sa_es / n_es, 1e-4, "L4 ES right, cut slice out");
  assert_string_equal(cell(&c2, r, "area_mm2"), "");
  r = find_row(&c2, "L4", "mf+es", "right");
  assert_string_equal(cell(&c2, r, "area_mm2"), "");
  assert_string_equal(cell(&c2, r, "ff_mean_pct"), "");
  r = find_row(&c2, "L4", "mf+es", "left");
  slice_metrics(ms, km, mfes_l, 2, &a, &f, &v);
  near(cell(&c2, r, "area_mm2"), a, 1e-4, "L4 mid MF+ES left");
  /* a segment measured on every slice is unchanged */
  r = find_row(&c2, "L3", "mf+es", "both");
  int r1 = find_row(&c, "L3", "mf+es", "both");
  assert_string_equal(cell(&c2, r, "seg_area_mm2_mean"), cell(&c, r1, "seg_area_mm2_mean"));
  assert_string_equal(cell(&c2, r, "seg_complete"), cell(&c, r1, "seg_complete"));
  free(c2.cell);
  free(text2);
  free(meas);

  /* a label map without the left erector spinae on the L4 mid slice (a
   * --labels map that leaves it out there): its rows and the combined rows
   * holding it are empty there, never an area of 0 or a partial sum; its
   * segment skips the slice; the volumes' asymmetry is empty (the sides
   * measured on different numbers of slices). And with water and fat of
   * that muscle zeroed on the slice below (no voxel with signal: the FF and
   * fCSA not measurable), its fCSA is empty, never 0, and the segment's
   * fCSA mean is over the slices where it was measured. */
  psp_volume *lab3 = psp_volume_clone(labels, &err);
  assert_non_null(lab3);
  int64_t ld[3];
  psp_volume_dims(lab3, ld);
  const int64_t plane = ld[0] * ld[1];
  float *l3 = psp_volume_data_mut(lab3);
  for (int64_t q = 0; q < plane; q++)
    if (l3[km * plane + q] == (float)PSP_LABEL_ES_LEFT) l3[km * plane + q] = 0.0f;
  psp_volume *w0 = psp_volume_clone(psp_phantom_volume(p, "water"), &err);
  psp_volume *f0 = psp_volume_clone(psp_phantom_volume(p, "fat"), &err);
  assert_non_null(w0);
  assert_non_null(f0);
  const int64_t kv = km - 1;
  assert_string_equal(psp_levels_name(lv, kv), "L4");
  for (int64_t q = 0; q < plane; q++)
    if (l3[kv * plane + q] == (float)PSP_LABEL_ES_LEFT)
      psp_volume_data_mut(w0)[kv * plane + q] = psp_volume_data_mut(f0)[kv * plane + q] = 0.0f;
  psp_ffmap *m0 = psp_ffmap_from_water_fat(w0, f0, NULL, ctx, &err);
  assert_non_null(m0);
  psp_measurements *ms3 = psp_measure(lab3, m0, ctx, &err);
  assert_non_null(ms3);
  char *text3 = psp_levels_csv(lv, ms3, lab3, NULL, &err);
  if (!text3) fail_msg("levels csv (label left out): %s", psp_error_message(err));
  csv c3 = parse_csv(text3);
  const char *left_out[][2] = {
      {"erector_spinae", "left"}, {"erector_spinae", "both"}, {"mf+es", "left"}, {"mf+es", "both"}};
  for (int q = 0; q < 4; q++) {
    r = find_row(&c3, "L4", left_out[q][0], left_out[q][1]);
    assert_string_equal(cell(&c3, r, "area_mm2"), "");
    assert_string_equal(cell(&c3, r, "fcsa_mm2"), "");
    assert_int_equal(atoll(cell(&c3, r, "seg_n_slices")), n - 1);
    assert_string_equal(cell(&c3, r, "seg_complete"), "0");
  }
  r = find_row(&c3, "L4", "erector_spinae", "right");
  assert_string_equal(cell(&c3, r, "seg_asym_volume_pct"), "");
  assert_int_equal(atoll(cell(&c3, r, "seg_n_slices")), n);
  double fc = 0, fa = 0;
  int nfc = 0, nfa = 0;
  bool saw_nan = false;
  for (size_t i = 0; i < psp_measurements_slice_count(ms3); i++) {
    const psp_region_metrics *row = psp_measurements_slice_row(ms3, i);
    if (row->label != PSP_LABEL_ES_LEFT || strcmp(psp_levels_name(lv, row->slice), "L4") != 0)
      continue;
    fa += row->area_mm2;
    nfa++;
    if (isfinite(row->fcsa_mm2)) {
      fc += row->fcsa_mm2;
      nfc++;
    } else {
      saw_nan = row->slice == kv;
    }
  }
  assert_true(saw_nan);
  assert_int_equal(nfa, n - 1);
  assert_int_equal(nfc, n - 2);
  r = find_row(&c3, "L4", "erector_spinae", "left");
  near(cell(&c3, r, "seg_area_mm2_mean"), fa / nfa, 1e-4, "L4 ES left area, label left out");
  near(cell(&c3, r, "seg_fcsa_mm2_mean"), fc / nfc, 1e-4, "L4 ES left fCSA, no signal on one");
  free(c3.cell);
  free(text3);
  psp_measurements_free(ms3);
  psp_ffmap_free(m0);
  psp_volume_free(w0);
  psp_volume_free(f0);
  psp_volume_free(lab3);

  assert_string_equal(psp_levels_fat_grade(19.9), "lt20");
  assert_string_equal(psp_levels_fat_grade(35), "20-50");
  assert_string_equal(psp_levels_fat_grade(50.1), "gt50");
  assert_string_equal(psp_levels_fat_grade(NAN), "");
  free(c.cell);
  free(text);
  psp_levels_free(lv);
  psp_measurements_free(ms);
  psp_context_free(ctx);
  psp_ffmap_free(m);
  psp_phantom_free(p);
}

/* ------------------------------------------------------------------------ */
/* iliac-crest anchor                                                        */
/* ------------------------------------------------------------------------ */

static void print_levels(const char *tag, const psp_levels *lv);

static void test_iliac_rule(void **state) {
  (void)state;
  const double disc[4] = {2.0, 11.0, 19.0, 27.0}; /* 4 mm slices, 33 mm spacing */
  const double S = 33.0, dz = 4.0;
  /* crest 2 mm above the lowest disc: it is L4/L5 */
  psp_iliac_rule r = psp_iliac_name_discs(disc, 4, dz, S, 2.5);
  assert_true(r.ok);
  assert_int_equal(r.base, 1);
  assert_false(r.ambiguous);
  assert_false(r.extrapolated);
  assert_true(fabs(r.offset_mm - 2.0) < 1e-9);
  assert_true(r.conf > 0.4 && r.conf < 0.5); /* below a sacrum anchor (>= 0.6) */
  /* lower third of the vertebra above disc 0 (crest in lower L4) */
  r = psp_iliac_name_discs(disc, 4, dz, S, 4.5);
  assert_true(r.ok && r.base == 1 && !r.ambiguous);
  /* upper third (crest in upper L5, just below disc 1): disc 1 is L4/L5 */
  r = psp_iliac_name_discs(disc, 4, dz, S, 9.0);
  assert_true(r.ok && r.base == 0 && !r.ambiguous);
  assert_true(r.offset_mm < 0);
  /* mid-vertebra: ambiguous, the disc above taken, lower confidence */
  r = psp_iliac_name_discs(disc, 4, dz, S, 6.5);
  assert_true(r.ok && r.base == 0 && r.ambiguous);
  assert_true(r.conf <= 0.3 + 1e-9);
  /* below the lowest disc, within the (virtual) vertebra below it */
  r = psp_iliac_name_discs(disc, 4, dz, S, -3.0);
  assert_true(r.ok && r.base == 1 && r.ambiguous && !r.extrapolated);
  r = psp_iliac_name_discs(disc, 4, dz, S, -5.5); /* near the undetected disc below */
  assert_true(r.ok && r.base == 2 && r.extrapolated && !r.ambiguous);
  assert_true(r.conf < 0.45 && r.conf > 0.3);
  /* more than one spacing beyond the discs: no naming */
  assert_false(psp_iliac_name_discs(disc, 4, dz, S, -7.0).ok);
  assert_false(psp_iliac_name_discs(disc, 4, dz, S, 36.0).ok);
  assert_false(psp_iliac_name_discs(disc, 0, dz, S, 2.0).ok);
  assert_false(psp_iliac_name_discs(disc, 4, dz, S, NAN).ok);
  /* spacing unknown (one disc): 38 mm assumed */
  r = psp_iliac_name_discs(disc, 1, dz, NAN, 2.0);
  assert_true(r.ok && r.base == 1);
}

/* Synthetic per-slice results: "both" on the listed slices, summed area
 * falling from 1000 mm^2 at slice 0 by 100 per slice (or rising with
 * `narrowing`). */
static psp_iliac crest_of(const int *on, size_t n_on, int64_t nz, double dz, bool narrowing) {
  psp_iliac_slice *sl = calloc((size_t)nz, sizeof *sl);
  for (size_t i = 0; i < n_on; i++) {
    int64_t k = on[i];
    sl[k].both = true;
    double a = narrowing ? 200.0 + 100.0 * (double)k : 1000.0 - 100.0 * (double)k;
    sl[k].area_mm2[0] = sl[k].area_mm2[1] = 0.5 * fmax(a, 120.0);
  }
  psp_iliac out;
  psp_iliac_crest(sl, nz, dz, &out);
  free(sl);
  return out;
}

static void test_iliac_crest_logic(void **state) {
  (void)state;
  const int run[] = {0, 1, 2, 3};
  psp_iliac c = crest_of(run, 4, 20, 4.0, false);
  assert_true(c.found);
  assert_true(c.crest == 3.5);
  /* a single missing slice is bridged at 4 mm, not at 9 mm */
  const int gap[] = {0, 1, 3, 4};
  c = crest_of(gap, 4, 20, 4.0, false);
  assert_true(c.found && c.top == 4);
  c = crest_of(gap, 4, 20, 9.0, false); /* run 0-1, then two "both" slices just above */
  assert_false(c.found);
  c = crest_of(gap, 3, 20, 9.0, false); /* run 0-1, one stray slice above: tolerated */
  assert_true(c.found && c.top == 1);
  /* not at the bottom of the stack: the pelvis is not in view */
  const int high[] = {3, 4, 5, 6};
  assert_false(crest_of(high, 4, 20, 4.0, false).found);
  /* a run of two slices (dixon-tum01's crest): 8 mm at 4 mm, also when the
   * 4 mm is 3.9999998 in the float affine of a tilted stack (it was lost
   * there), and at 3.5 mm; 6 mm at 3 mm is too short */
  const int two[] = {0, 1};
  assert_true(crest_of(two, 2, 20, 4.0, false).found);
  assert_true(crest_of(two, 2, 20, 3.9999998, false).found);
  assert_true(crest_of(two, 2, 20, 3.5, false).found);
  assert_false(crest_of(two, 2, 20, 3.0, false).found);
  /* one slice only, or a run reaching the top of the stack */
  const int one[] = {0};
  assert_false(crest_of(one, 1, 20, 4.0, false).found);
  /* ... but one thick slice (>= 8 mm) with large wings (500 mm^2 a side)
   * is a run: dixon-tum01 averaged to 10 / 12 mm slices shows its wings on
   * the lowest slice only */
  c = crest_of(one, 1, 12, 10.0, false);
  assert_true(c.found && c.one_slice && c.top == 0 && c.crest == 0.5);
  c = crest_of(one, 1, 12, 7.0, false);
  assert_false(c.found);
  psp_iliac_slice small[12] = {0};
  small[0].both = true;
  small[0].area_mm2[0] = 500.0;
  small[0].area_mm2[1] = 300.0; /* one side below 400 mm^2: too little for one slice */
  psp_iliac_crest(small, 12, 10.0, &c);
  assert_false(c.found);
  assert_false(crest_of(run, 4, 20, 4.0, false).one_slice);
  const int all[] = {0, 1, 2, 3, 4, 5};
  assert_false(crest_of(all, 6, 6, 4.0, false).found);
  assert_false(crest_of(all, 6, 7, 4.0, false).found); /* 4 mm above it: too little */
  assert_true(crest_of(all, 6, 9, 4.0, false).found);
  /* narrowing downwards (a rib tip): no */
  assert_false(crest_of(run, 4, 20, 4.0, true).found);
  /* bilateral bone again just above the run: inconsistent */
  const int again[] = {0, 1, 2, 3, 6, 7};
  assert_false(crest_of(again, 6, 20, 4.0, false).found);
  /* ... but bilateral bone far above (ribs) is not the crest's business */
  const int ribs[] = {0, 1, 2, 3, 14, 15, 16};
  c = crest_of(ribs, 7, 20, 4.0, false);
  assert_true(c.found && c.top == 3);
}

/* The detector is mirror-symmetric: on a synthetic FF map with, per side,
 * an oblique bony band (the wing: elongated, counts) or a round blob of the
 * same FF (bowel: not elongated, does not), mirroring the map mirrors the
 * per-slice results. A blob on the right once counted as bone: the right
 * side's second moments mixed |x| and x, so its elongation was wrong
 * (dixon-tum01 mirrored lost its iliac anchor and its multifidus Dice fell
 * to 0.74 / 0.83). */
static void paint_side(float *x, int64_t nx, int64_t ny, double sp, double mid, double cj, int side,
                       bool band) {
  for (int64_t j = 0; j < ny; j++)
    for (int64_t i = 0; i < nx; i++) {
      double lat = (i - mid) * sp, ap = (j - cj) * sp;
      if ((lat > 0) != (side == 1)) continue;
      double a = fabs(lat), u = (a - 60.0) / 55.0;
      bool in = band ? u >= 0 && u <= 1 && fabs(ap - (35.0 - 25.0 * u)) <= 7.0
                     : hypot(a - 85.0, ap - 25.0) <= 12.0;
      if (in) x[j * nx + i] = 0.45f;
    }
}

static void iliac_case(bool band_left, bool band_right, bool mirror, psp_iliac_slice *out) {
  enum { NX = 200, NY = 150, NZ = 2 };
  static float ff[NX * NY * NZ];
  const double sp = 1.5, mid = 0.5 * (NX - 1), cj = 50.0;
  double cjs[NZ], mids[NZ];
  for (int64_t q = 0; q < NX * NY * NZ; q++)
    ff[q] = 0.1f;
  for (int k = 0; k < NZ; k++) {
    cjs[k] = cj;
    mids[k] = mid;
    float *sl = ff + k * NX * NY;
    paint_side(sl, NX, NY, sp, mid, cj, mirror ? 0 : 1, band_left);
    paint_side(sl, NX, NY, sp, mid, cj, mirror ? 1 : 0, band_right);
  }
  psp_iliac_input in = {ff, {NX, NY, NZ}, {sp, sp, 5.0}, cjs, mids, 0.35, 0.6, false, {0, 0}};
  psp_iliac c;
  psp_error *err = NULL;
  if (!psp_iliac_detect(&in, out, &c, &err)) fail_msg("iliac: %s", psp_error_message(err));
}

static void test_iliac_mirror(void **state) {
  (void)state;
  psp_iliac_slice a[2], b[2];
  /* bands on both sides: bone on both, the same area and place */
  iliac_case(true, true, false, a);
  assert_true(a[0].both);
  assert_true(a[0].area_mm2[0] > 300 && a[0].area_mm2[0] == a[0].area_mm2[1]);
  assert_true(a[0].lat_mm[0] == a[0].lat_mm[1] && a[0].ap_mm[0] == a[0].ap_mm[1]);
  /* a band on the left, a blob on the right, and mirrored */
  iliac_case(true, false, false, a);
  iliac_case(true, false, true, b);
  print_message("band left, blob right: area %.0f / %.0f mm^2; mirrored %.0f / %.0f\n",
                a[0].area_mm2[0], a[0].area_mm2[1], b[0].area_mm2[0], b[0].area_mm2[1]);
  assert_true(a[0].area_mm2[1] > 300 && a[0].area_mm2[0] == 0);
  assert_true(b[0].area_mm2[0] == a[0].area_mm2[1] && b[0].area_mm2[1] == a[0].area_mm2[0]);
  assert_false(a[0].both || b[0].both);
}

/* Paints an oblique bony band (marrow FF 0.45, 14 mm thick) on both sides
 * (or the left only) of slices 0..top of the FF map, where the posterior
 * iliac crest and wing lie: 60-115 mm lateral, from 35 mm behind the
 * vertebral-body core centre (medial end) to 10 mm behind it (lateral). */
static void paint_wings(psp_ffmap *m, const psp_levels *ref, int64_t top, bool both_sides) {
  psp_volume *v = (psp_volume *)psp_ffmap_ff(m);
  int64_t d[3];
  double sp[3];
  psp_volume_dims(v, d);
  psp_volume_spacing(v, sp);
  float *x = psp_volume_data_mut(v);
  for (int64_t k = 0; k <= top; k++) {
    double ci, cj;
    if (!psp_levels_column(ref, k, &ci, &cj)) fail_msg("no column on slice %lld", (long long)k);
    for (int64_t j = 0; j < d[1]; j++)
      for (int64_t i = 0; i < d[0]; i++) {
        double lat = (i - ci) * sp[0], ap = (j - cj) * sp[1];
        if (!both_sides && lat < 0) continue;
        double u = (fabs(lat) - 60.0) / 55.0; /* 0..1 along the band */
        if (u < 0 || u > 1) continue;
        double centre = 35.0 - 25.0 * u;
        if (fabs(ap - centre) <= 7.0) x[(k * d[1] + j) * d[0] + i] = 0.45f;
      }
  }
}

/* Gaussian noise of standard deviation sd added to the FF map (values kept
 * in 0..1; a fixed xorshift stream, Box-Muller). */
static void add_noise(psp_ffmap *m, double sd) {
  psp_volume *v = (psp_volume *)psp_ffmap_ff(m);
  float *x = psp_volume_data_mut(v);
  uint64_t st = 0x9E3779B97F4A7C15ull;
  for (int64_t q = 0; q < psp_volume_voxel_count(v); q++) {
    double u[2];
    for (int t = 0; t < 2; t++) {
      st ^= st << 13;
      st ^= st >> 7;
      st ^= st << 17;
      u[t] = ((double)(st >> 11) + 0.5) / 9007199254740992.0;
    }
    if (isnan(x[q])) continue;
    double g = sqrt(-2.0 * log(u[0])) * cos(6.283185307179586 * u[1]);
    double y = x[q] + sd * g;
    x[q] = (float)(y < 0 ? 0 : y > 1 ? 1 : y);
  }
}

static void test_iliac_anchor_phantom(void **state) {
  (void)state;
  psp_phantom_options o;
  psp_phantom_options_default(&o);
  psp_phantom *p = make_phantom(&o);
  psp_ffmap *m = ffmap_of(p);
  char path[1200];
  snprintf(path, sizeof path, "%s/ilc", PSP_SCRATCH_DIR);
  psp_error *err = NULL;
  if (!psp_phantom_write(p, path, "ph", &err)) fail_msg("write: %s", psp_error_message(err));
  snprintf(path, sizeof path, "%s/ilc/ph_anatomy.csv", PSP_SCRATCH_DIR);
  char(*truth)[16] = read_anatomy(path, o.dims[2]);
  const int64_t k0 = 9; /* crop from inside L5: no sacrum; L4/L5 at crop slice 4 */
  psp_ffmap *plain = crop_ff(m, k0);
  psp_levels *ref = detect(plain, NULL, 2);
  assert_false(psp_levels_anchored(ref));
  assert_true(isnan(psp_levels_iliac_crest(ref)));
  for (int64_t k = 0; k < psp_levels_slice_count(ref); k++)
    assert_false(psp_levels_iliac_both(ref, k));

  /* crest top at the L4/L5 disc (slices 0..4 of the crop) */
  psp_ffmap *c = crop_ff(m, k0);
  paint_wings(c, ref, 4, true);
  psp_levels *lv = detect(c, NULL, 2);
  print_levels("painted crest at L4/L5", lv);
  assert_true(psp_levels_anchored(lv));
  assert_non_null(strstr(psp_levels_anchor(lv), "iliac crest"));
  assert_true(has_flag(lv, "iliac_crest_anchor"));
  assert_false(has_flag(lv, "no_anchor"));
  assert_true(fabs(psp_levels_iliac_crest(lv) - 4.5) <= 0.51);
  assert_string_equal(psp_levels_disc(lv, 0)->name, "L4/L5");
  int64_t checked = 0;
  for (int64_t k = 0; k < psp_levels_slice_count(lv); k++) {
    const char *got = psp_levels_name(lv, k), *want = truth[k + k0];
    if (!got[0] || boundary_distance((double)(k + k0) * o.spacing[2]) < 0.5 * o.spacing[2])
      continue;
    if (strcmp(got, want) != 0) fail_msg("slice %lld: '%s', phantom '%s'", (long long)k, got, want);
    /* moderate: above relative names, below a sacrum anchor */
    assert_true(psp_levels_confidence(lv, k) > 0.25 && psp_levels_confidence(lv, k) <= 0.45);
    checked++;
  }
  assert_true(checked >= 10);
  psp_levels_free(lv);
  psp_ffmap_free(c);

  /* the same with noise on the FF map (sd 0.05): the wings are still seen */
  c = crop_ff(m, k0);
  paint_wings(c, ref, 4, true);
  add_noise(c, 0.05);
  lv = detect(c, NULL, 2);
  print_levels("painted crest at L4/L5, noisy", lv);
  assert_true(psp_levels_anchored(lv));
  assert_true(fabs(psp_levels_iliac_crest(lv) - 4.5) <= 0.51);
  psp_levels_free(lv);
  psp_ffmap_free(c);

  /* crest top mid-L4 (slices 0..7; the L4 body spans crop slices 5-11):
   * ambiguous, the disc above taken as L4/L5 (one level off here, as the
   * flag warns), lower confidence */
  c = crop_ff(m, k0);
  paint_wings(c, ref, 7, true);
  lv = detect(c, NULL, 2);
  print_levels("painted crest mid-L4", lv);
  assert_true(psp_levels_anchored(lv));
  bool said = false;
  for (size_t i = 0; i < psp_levels_flag_count(lv); i++)
    if (!strcmp(psp_levels_flag_key(lv, i), "iliac_crest_anchor"))
      said = strstr(psp_levels_flag_message(lv, i), "mid-vertebra") != NULL;
  assert_true(said);
  for (int64_t k = 0; k < psp_levels_slice_count(lv); k++)
    assert_true(psp_levels_confidence(lv, k) <= 0.3);
  psp_levels_free(lv);
  psp_ffmap_free(c);

  /* one side only: no anchor */
  c = crop_ff(m, k0);
  paint_wings(c, ref, 4, false);
  lv = detect(c, NULL, 2);
  assert_false(psp_levels_anchored(lv));
  assert_true(has_flag(lv, "no_anchor"));
  psp_levels_free(lv);
  psp_ffmap_free(c);

  /* with the sacrum in view (uncropped phantom) and wings painted high (a
   * crest two levels up, at L3/L4): the sacrum is kept, the disagreement
   * flagged and the confidence lowered */
  psp_levels *full = detect(m, NULL, 2);
  psp_ffmap *w = crop_ff(m, 0);
  paint_wings(w, full, 21, true); /* L3/L4 disc at z = 105 mm = slice 21 */
  lv = detect(w, NULL, 2);
  print_levels("painted crest at L3/L4 with the sacrum", lv);
  assert_true(psp_levels_anchored(lv));
  assert_non_null(strstr(psp_levels_anchor(lv), "sacrum"));
  assert_true(has_flag(lv, "anchors_disagree"));
  assert_string_equal(psp_levels_disc(lv, 0)->name, "L5/S1");
  for (int64_t k = 0; k < psp_levels_slice_count(lv); k++)
    assert_true(psp_levels_confidence(lv, k) <= 0.95 * 0.7 + 1e-9);
  psp_levels_free(lv);
  psp_ffmap_free(w);
  /* ... and painted at L4/L5 (slice 13) they agree: no flag */
  w = crop_ff(m, 0);
  paint_wings(w, full, 13, true);
  lv = detect(w, NULL, 2);
  assert_false(has_flag(lv, "anchors_disagree"));
  assert_non_null(strstr(psp_levels_anchor(lv), "agrees"));
  psp_levels_free(lv);
  psp_ffmap_free(w);

  psp_levels_free(full);
  psp_levels_free(ref);
  psp_ffmap_free(plain);
  free(truth);
  psp_ffmap_free(m);
  psp_phantom_free(p);
}

/* ------------------------------------------------------------------------ */
/* real data (only with --realdata)                                          */
/* ------------------------------------------------------------------------ */

static void print_levels(const char *tag, const psp_levels *lv) {
  printf("%s: %zu discs, spacing %.1f mm, anchor '%s'\n", tag, psp_levels_disc_count(lv),
         psp_levels_spacing_mm(lv), psp_levels_anchor(lv));
  for (size_t i = 0; i < psp_levels_disc_count(lv); i++) {
    const psp_level_disc *d = psp_levels_disc(lv, i);
    printf("  disc %-7s file slice %6.2f  depth %.2f  confidence %.2f%s\n", d->name, d->file_slice,
           d->depth, d->confidence, d->inferred ? " (inferred)" : "");
  }
  for (size_t i = 0; i < psp_levels_flag_count(lv); i++)
    printf("  flag %s: %s\n", psp_levels_flag_key(lv, i), psp_levels_flag_message(lv, i));
  printf("  iliac crest top: file slice %.2f\n",
         psp_levels_file_position(lv, psp_levels_iliac_crest(lv)));
  printf("  method: %s\n", psp_levels_method(lv));
}

static const char *shared_dir(void) {
  const char *s = getenv("PSP_SHARED_DATA");
  return s && *s ? s : NULL;
}

static void test_real_tum01(void **state) {
  (void)state;
  const char *dir = shared_dir();
  if (!dir) skip();
  char pw[1100], pf[1100];
  snprintf(pw, sizeof pw, "%s/dixon-tum01/water.nii.gz", dir);
  snprintf(pf, sizeof pf, "%s/dixon-tum01/fat.nii.gz", dir);
  psp_context *ctx = psp_context_create();
  psp_error *err = NULL;
  psp_volume *w = psp_nifti_load(pw, NULL, ctx, &err);
  psp_volume *f = psp_nifti_load(pf, NULL, ctx, &err);
  if (!w || !f) fail_msg("load: %s", psp_error_message(err));
  assert_true(psp_volume_adopt_geometry(w, f, &err)); /* the known origin quirk */
  psp_ffmap *m = psp_ffmap_from_water_fat(w, f, NULL, ctx, &err);
  assert_non_null(m);
  psp_levels *lv = psp_levels_detect(m, NULL, NULL, ctx, &err);
  assert_non_null(lv);
  print_levels("dixon-tum01", lv);
  /* the dark bands of the sagittal FF reformat (checked by eye): discs at
   * about slices 2, 11, 19 and 27 (4 mm slices, ~33 mm apart) */
  const double want[4] = {2.0, 11.0, 19.1, 27.2};
  assert_int_equal(psp_levels_disc_count(lv), 4);
  for (int i = 0; i < 4; i++) {
    const psp_level_disc *d = psp_levels_disc(lv, (size_t)i);
    if (fabs(d->file_slice - want[i]) > 1.0)
      fail_msg("disc %d at %.2f, expected about %.1f", i, d->file_slice, want[i]);
    assert_false(d->inferred);
  }
  double S = psp_levels_spacing_mm(lv);
  assert_true(S > 28.0 && S < 45.0);
  /* no sacrum in view, but the iliac crests: on the lowest slices two
   * oblique marrow-FF bands (~0.3, like the vertebral marrow) run
   * anterolaterally from beside the erector spinae, seen by eye on slices
   * 0-2 and gone from slice 3-4 up (the bands on the upper slices are the
   * colon and, at slices 24-28, the lowest ribs). The crest top at the
   * lowest disc makes it L4/L5 (and the top disc L1/L2, as the data README
   * reads slice 28); moderate confidence, flagged. */
  assert_true(psp_levels_anchored(lv));
  assert_non_null(strstr(psp_levels_anchor(lv), "iliac crest"));
  assert_true(has_flag(lv, "iliac_crest_anchor"));
  assert_false(has_flag(lv, "no_anchor"));
  double crest = psp_levels_file_position(lv, psp_levels_iliac_crest(lv));
  assert_true(crest >= 1.5 && crest <= 4.5);
  assert_string_equal(psp_levels_disc(lv, 0)->name, "L4/L5");
  assert_string_equal(psp_levels_disc(lv, 3)->name, "L1/L2");
  for (int64_t k = 0; k < psp_levels_slice_count(lv); k++)
    assert_true(psp_levels_confidence(lv, k) <= 0.45);
  /* with the reading of the data README (slice 28 near L1/L2) as an override */
  psp_level_overrides *ov = parse1("L1/L2=27");
  psp_levels *lo = psp_levels_detect(m, NULL, ov, ctx, &err);
  assert_non_null(lo);
  print_levels("dixon-tum01 with L1/L2=27", lo);
  assert_string_equal(psp_levels_disc(lo, 0)->name, "L4/L5");
  assert_false(has_flag(lo, "override_contradicts_detection")); /* agrees with the crest */
  psp_levels_free(lo);
  psp_level_overrides_free(ov);
  psp_levels_free(lv);
  psp_ffmap_free(m);
  psp_volume_free(w);
  psp_volume_free(f);
  psp_context_free(ctx);
}

static void test_real_chaos11(void **state) {
  (void)state;
  const char *dir = shared_dir();
  if (!dir) skip();
  char pi[1100], po[1100];
  snprintf(pi, sizeof pi, "%s/ipop-chaos11/inphase.nii.gz", dir);
  snprintf(po, sizeof po, "%s/ipop-chaos11/outphase.nii.gz", dir);
  psp_context *ctx = psp_context_create();
  psp_error *err = NULL;
  psp_volume *a = psp_nifti_load(pi, NULL, ctx, &err);
  psp_volume *b = psp_nifti_load(po, NULL, ctx, &err);
  if (!a || !b) fail_msg("load: %s", psp_error_message(err));
  psp_ffmap *m = psp_ffmap_from_ipop(a, b, NULL, ctx, &err);
  if (!m) fail_msg("ffmap: %s", psp_error_message(err));
  psp_levels *lv = psp_levels_detect(m, NULL, NULL, ctx, &err);
  assert_non_null(lv);
  print_levels("ipop-chaos11", lv);
  /* an abdomen without the sacrum, 9 mm slices, T1-weighted IP/OP: whatever
   * is found must not be claimed with confidence */
  assert_false(psp_levels_anchored(lv));
  assert_true(isnan(psp_levels_iliac_crest(lv))); /* bottom slice above the pelvis */
  for (int64_t k = 0; k < psp_levels_slice_count(lv); k++)
    assert_true(psp_levels_confidence(lv, k) <= 0.3);
  psp_levels_free(lv);
  psp_ffmap_free(m);
  psp_volume_free(a);
  psp_volume_free(b);
  psp_context_free(ctx);
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "--realdata")) {
    const struct CMUnitTest real[] = {
        cmocka_unit_test(test_real_tum01),
        cmocka_unit_test(test_real_chaos11),
    };
    return cmocka_run_group_tests_name("levels_realdata", real, NULL, NULL);
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_phantom_5mm),          cmocka_unit_test(test_phantom_4mm),
      cmocka_unit_test(test_phantom_9mm),          cmocka_unit_test(test_crop_without_sacrum),
      cmocka_unit_test(test_threads_identical),    cmocka_unit_test(test_override_parse),
      cmocka_unit_test(test_override_applied),     cmocka_unit_test(test_override_flipped_file),
      cmocka_unit_test(test_levels_csv),           cmocka_unit_test(test_with_segmentation),
      cmocka_unit_test(test_degenerate),           cmocka_unit_test(test_phantom_ipop),
      cmocka_unit_test(test_iliac_rule),           cmocka_unit_test(test_iliac_crest_logic),
      cmocka_unit_test(test_iliac_anchor_phantom), cmocka_unit_test(test_iliac_mirror),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
