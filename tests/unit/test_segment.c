/* DESIGN: unit tests of the automatic segmentation (src/segment/segment.c,
 * src/anatomy/landmarks.c) on phantoms made with psp_phantom_create:
 * accuracy per muscle (Dice, FF against the truth labels on the same FF
 * map) over the slices the segmentation accepted, flagged slices only at
 * the inferior (sacral) end and empty, landmarks on the phantom's canal and
 * midline, identical labels for every file orientation of the same phantom
 * (write + load round trip), identical output at 1 and 2 threads, and
 * honest flags for slices without signal or without a spine, and the
 * compiled multifidus prior equal to models/mf_rho_profile.tsv.
 *
 * The accuracy thresholds are what this version reaches minus a margin
 * (printed by the test), not the targets (Dice >= 0.95): see the
 * README "Automatic segmentation". Also a fatty, streaky phantom at 3 mm
 * pixels (no slice lost), a phantom rolled in the image plane (segmented in
 * the frame of the spine's axis) and the compiled height prior equal to
 * models/mf_rho_by_level.tsv. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "segment/segment.h"
#include "segment/limits.h"
#include "anatomy/landmarks.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Reached on the default phantom (seed 1), slices above the sacrum: MF 0.981 /
 * 0.987, ES 0.977 / 0.979, FF -0.80 / -0.49 / -0.11 / -0.36 pp (with the
 * labels' majority along the stack on the outlines, refine.c
 * psp_seg_zfill_stack; before: MF 0.980 / 0.985, ES 0.976 / 0.978, FF -0.71
 * / -0.40 / +0.05 / -0.25 pp) (with the
 * erector's small pieces beyond a ridge dropped, refine.c drop_es_pieces;
 * before: ES 0.971 / 0.974, FF +0.11 / -0.20 pp) (with the
 * erector's ridge towards the multifidus unlabelled and the outlines
 * smoothed at 6 mm, refine.c psp_seg_refine_outlines; before: MF 0.980 /
 * 0.985, ES 0.967 / 0.971, FF -0.73 / -0.42 / +0.03 / -0.32 pp) (with the
 * local strict level, the plane voxels left unlabelled and the outline
 * smoothing of segment.c steps 1, 3a, 3b; the smoothing alone 0.980 /
 * 0.985 / 0.967 / 0.971, FF -0.61 / -0.35 / +0.09 / -0.31; before: MF 0.977 /
 * 0.980, ES 0.963 / 0.969, FF -0.93 / -0.66 / -0.58 / -0.77 pp) (the sizeable
 * strict components left out no longer grown into; before: MF 0.976 / 0.981,
 * ES 0.956 / 0.965, FF -0.73 / -0.66 / -0.33 / -0.69 pp, fatty partial-volume
 * FP voxels offsetting the fatty streaks lost at the border) (with the
 * phantom's rising erector front and the
 * segmentation's front limit; the line alone, without the fat-plane search,
 * 0.958 / 0.938; the old flat-front phantom 0.959 / 0.963; before the lamina
 * front limit MF 0.975 / 0.977);
 * FF of each muscle within 0.9 pp of the FF over the true label (MF -0.75 /
 * -0.66 pp, before -0.34 / -0.17: partial-volume voxels on the lamina are
 * left out now). */
#define MIN_DICE_MF 0.97
#define MIN_DICE_ES 0.96
#define MAX_FF_DIFF_PP 0.9
/* Reached on the fatty phantom (test_fatty_phantom_accuracy, = sample_scans/
 * phantom02), all slices: MF 0.965 / 0.950, ES 0.954 / 0.950, FF -0.65 /
 * -0.98 / -0.35 / -0.43 pp (with the erector's fatty rim trimmed at coarse
 * pixels, refine.c item 13; before: ES 0.947 / 0.951, FF ES +0.20 / -0.26
 * pp) (with a fatty erector's lean pieces dropped and
 * the multifidus's step ring joined, refine.c items 11, 12; before: MF
 * 0.960 / 0.946, ES 0.948 / 0.943, FF -0.80 / -1.54 / +0.18 / -0.50 pp)
 * (with the labels' majority along the stack;
 * before: MF 0.951 / 0.938, ES 0.941 / 0.936) (with the erector's small pieces beyond a ridge
 * dropped; before: ES 0.937 / 0.933, FF ES L +0.30) (with segment.c step 3c, the erector's ridge
 * and the outline smoothing at 6 mm; before: MF 0.949 / 0.935, ES 0.926 / 0.922, FF -0.84 / -1.70 /
 * +0.59 / -0.07 pp) (with segment.c steps 1 (local strict level), 3a (plane voxels unlabelled) and
 * 3b (outline smoothing); the smoothing alone MF 0.947 / 0.935, ES 0.908 / 0.911, FF -0.62 / -1.61
 * / +0.34 / -0.19 pp; before: MF 0.945 / 0.925, ES 0.903 / 0.901, FF -0.95 / -2.06 / -0.19 / -0.74
 * pp) (with a floor on the plane cut's FF and the left-out components grown into: MF 0.914 / 0.924,
 * ES 0.835 / 0.869, FF -1.2 / -2.0 / -0.7 / -1.5 pp; before the plane cut along columns and
 * diagonals: MF 0.916 / 0.929, ES 0.831 / 0.862, FF -1.2 / -1.9 / -0.7 / -1.5 pp) (flat-front
 * phantom: ES 0.846 / 0.874) (before the lamina front limit MF 0.900 / 0.909) (v2 without the
 * one-voxel plane cut at coarse pixels: ES 0.845 / 0.860; the 1 pp is reached here, its
 * 0.95 but for the left erector spinae: the border ring and a posterior rim cut off by fatty
 * streaks). v1 reached 0.68-0.71 with 6 of 20 slices flagged. */
#define MIN_DICE_MF_FATTY 0.945
#define MIN_DICE_ES_FATTY 0.945
#define MAX_FF_DIFF_PP_FATTY 1.1

/* The default phantom (seed 4) rolled by 14 degrees (test_rolled_phantom):
 * MF 0.978 / 0.976, ES 0.980 / 0.971, FF -1.09 / -0.87 / -0.30 / -0.19 pp,
 * every slice; before the aligned frame (src/segment/align.c) MF 0.875 /
 * 0.831, ES 0.917 / 0.699, areas -10..-44 %. */
#define MIN_DICE_MF_ROLLED 0.96
#define MIN_DICE_ES_ROLLED 0.95
#define MAX_FF_DIFF_PP_ROLLED 1.5

static char scratch[1024];

static psp_phantom *make_phantom(const psp_phantom_options *o) {
  psp_context *ctx = psp_context_create();
  psp_error *err = NULL;
  psp_phantom *p = psp_phantom_create(o, ctx, &err);
  if (!p) fail_msg("psp_phantom_create: %s", psp_error_message(err));
  psp_context_free(ctx);
  return p;
}

static psp_ffmap *ffmap_of(const psp_volume *w, const psp_volume *f) {
  psp_context *ctx = psp_context_create();
  psp_error *err = NULL;
  psp_ffmap *m = psp_ffmap_from_water_fat(w, f, NULL, ctx, &err);
  if (!m) fail_msg("ffmap: %s", psp_error_message(err));
  psp_context_free(ctx);
  return m;
}

/* The default phantom with this seed and number of slices, and its FF map
 * from water + fat (*p receives the phantom; free both). */
static psp_ffmap *default_phantom_map(uint64_t seed, int64_t nz, psp_phantom **p) {
  psp_phantom_options o;
  psp_phantom_options_default(&o);
  o.seed = seed;
  o.dims[2] = nz;
  *p = make_phantom(&o);
  return ffmap_of(psp_phantom_volume(*p, "water"), psp_phantom_volume(*p, "fat"));
}

static psp_segmentation *segment(const psp_ffmap *m, int threads) {
  psp_context *ctx = psp_context_create();
  psp_context_set_threads(ctx, threads);
  psp_error *err = NULL;
  psp_segmentation *s = psp_segment(m, ctx, &err);
  if (!s) fail_msg("psp_segment: %s", psp_error_message(err));
  psp_context_free(ctx);
  return s;
}

/* Labels and landmarks of two segmentations are identical. */
static void assert_same_segmentation(const psp_segmentation *s1, const psp_segmentation *s2) {
  const psp_volume *l1 = psp_segmentation_labels(s1), *l2 = psp_segmentation_labels(s2);
  assert_memory_equal(psp_volume_data(l1), psp_volume_data(l2),
                      (size_t)psp_volume_voxel_count(l1) * sizeof(float));
  assert_int_equal(psp_segmentation_slice_count(s1), psp_segmentation_slice_count(s2));
  for (int64_t k = 0; k < psp_segmentation_slice_count(s1); k++)
    assert_memory_equal(psp_segmentation_slice(s1, k), psp_segmentation_slice(s2, k),
                        sizeof(psp_slice_landmarks));
}

/* Segments phantom o and checks flags, Dice and FF per muscle against the
 * given minima (Dice) and maximum |FF difference| (pp). */
static void accuracy_case(const psp_phantom_options *po, double min_mf, double min_es,
                          double max_ff_pp) {
  psp_phantom_options o = *po;
  psp_phantom *p = make_phantom(&o);
  psp_ffmap *m = ffmap_of(psp_phantom_volume(p, "water"), psp_phantom_volume(p, "fat"));
  psp_segmentation *s = segment(m, 2);
  const psp_volume *pred = psp_segmentation_labels(s);
  const psp_volume *truth = psp_phantom_volume(p, "labels");
  const float *ff = psp_volume_data(psp_ffmap_ff(m));
  int64_t d[3];
  psp_volume_dims(pred, d);
  int64_t plane = d[0] * d[1];
  assert_int_equal(psp_segmentation_slice_count(s), d[2]);

  /* flagged slices only at the inferior end, and empty */
  int64_t first_ok = -1;
  for (int64_t k = 0; k < d[2]; k++) {
    const psp_slice_landmarks *lm = psp_segmentation_slice(s, k);
    if (lm->status == PSP_SLICE_OK && first_ok < 0) first_ok = k;
    if (first_ok >= 0) assert_int_equal(lm->status, PSP_SLICE_OK);
    if (lm->status != PSP_SLICE_OK) {
      assert_int_equal(lm->status, PSP_SLICE_BELOW_SACRUM);
      assert_true(strlen(lm->reason) > 10);
      for (int64_t q = 0; q < plane; q++)
        assert_true(psp_volume_data(pred)[k * plane + q] == 0);
    }
  }
  assert_true(first_ok >= 0 && first_ok <= 5); /* at most the sacral slices */

  /* Dice and FF per muscle over the accepted slices */
  int64_t np[PSP_LABEL_COUNT] = {0}, nt[PSP_LABEL_COUNT] = {0}, nb[PSP_LABEL_COUNT] = {0};
  double fp[PSP_LABEL_COUNT] = {0}, ft[PSP_LABEL_COUNT] = {0};
  int64_t cp[PSP_LABEL_COUNT] = {0}, ct[PSP_LABEL_COUNT] = {0};
  for (int64_t k = first_ok; k < d[2]; k++)
    for (int64_t q = k * plane; q < (k + 1) * plane; q++) {
      int a = (int)psp_volume_data(pred)[q], b = (int)psp_volume_data(truth)[q];
      np[a]++;
      nt[b]++;
      if (a == b) nb[a]++;
      if (!isnan(ff[q])) {
        fp[a] += ff[q];
        cp[a]++;
        ft[b] += ff[q];
        ct[b]++;
      }
    }
  for (int l = 1; l < PSP_LABEL_COUNT; l++) {
    double dice = 2.0 * (double)nb[l] / (double)(np[l] + nt[l]);
    double dff = 100.0 * (fp[l] / (double)cp[l] - ft[l] / (double)ct[l]);
    print_message("%s: Dice %.4f, FF %+.2f pp (slices %lld..%lld)\n", psp_label_abbrev(l), dice,
                  dff, (long long)first_ok, (long long)(d[2] - 1));
    assert_true(dice >= (l <= 2 ? min_mf : min_es));
    assert_true(fabs(dff) <= max_ff_pp);
  }

  /* landmarks: the canal on the midline of the phantom (world x = 0; a
   * rolled phantom: the line through the grid's centre along the roll,
   * which the midline follows) */
  double a[4][4];
  psp_volume_affine(pred, a);
  double t = o.roll_deg * 3.14159265358979323846 / 180.0;
  for (int64_t k = first_ok; k < d[2]; k++) {
    const psp_slice_landmarks *lm = psp_segmentation_slice(s, k);
    assert_true(lm->canal.found && lm->body_centre.found);
    double x = a[0][0] * lm->midline_i + a[0][1] * lm->canal.j + a[0][3];
    if (o.roll_deg != 0.0) {
      double xi = (lm->midline_i - 0.5 * (double)(d[0] - 1)) * o.spacing[0];
      double yj = (lm->canal.j - 0.5 * (double)(d[1] - 1)) * o.spacing[1];
      x = cos(t) * xi + sin(t) * yj; /* the patient's left-right offset */
      double slope = -tan(t) * o.spacing[1] / o.spacing[0];
      assert_true(fabs(lm->midline_slope - slope) <= 0.03);
    } else {
      assert_true(lm->midline_slope == 0.0);
    }
    assert_true(fabs(x) <= 2.0 * o.spacing[0]);
  }

  /* the body's outline (report.json, QC) on the image's grid, also when
   * the slices were segmented in rotated frames: Dice against the
   * phantom's body (noise-free FF above 0) on every slice */
  const float *tf = psp_volume_data(psp_phantom_volume(p, "ff_truth"));
  for (int64_t k = 0; k < d[2]; k++) {
    const uint8_t *b = psp_segmentation_body(s, k);
    assert_non_null(b);
    int64_t nm = 0, nb_t = 0, both = 0;
    for (int64_t q = 0; q < plane; q++) {
      bool in = tf[k * plane + q] > 0.0f;
      nm += b[q] != 0;
      nb_t += in;
      both += in && b[q];
    }
    assert_true(2.0 * (double)both >= 0.98 * (double)(nm + nb_t));
  }
  assert_null(psp_segmentation_body(s, d[2]));
  psp_segmentation_free(s);
  psp_ffmap_free(m);
  psp_phantom_free(p);
}

static void test_phantom_accuracy(void **state) {
  (void)state;
  psp_phantom_options o;
  psp_phantom_options_default(&o);
  accuracy_case(&o, MIN_DICE_MF, MIN_DICE_ES, MAX_FF_DIFF_PP);
}

/* Fatty, streaky muscle at coarse pixels (like sample_scans/phantom02):
 * multifidus 35/45 % FF, erector spinae 25/30 %, 80 % FF streaks in 20 % of
 * the muscle, 3 mm pixels, SNR 20. No slice above the sacrum may be lost. */
static void test_fatty_phantom_accuracy(void **state) {
  (void)state;
  psp_phantom_options o;
  psp_phantom_options_default(&o);
  o.seed = 2;
  o.dims[0] = 128;
  o.dims[1] = 96;
  o.dims[2] = 20;
  o.spacing[0] = o.spacing[1] = 3.0;
  o.snr = 20;
  o.ff_multifidus[0] = 0.35;
  o.ff_multifidus[1] = 0.45;
  o.ff_erector[0] = 0.25;
  o.ff_erector[1] = 0.30;
  o.streak_ff = 0.80;
  o.streak_share = 0.20;
  o.bias_amplitude = 0.25;
  accuracy_case(&o, MIN_DICE_MF_FATTY, MIN_DICE_ES_FATTY, MAX_FF_DIFF_PP_FATTY);
}

/* A phantom whose anatomy is rolled in the image plane (a patient lying
 * rotated): the spine's axis is measured (report: angle, aligned), the
 * muscles are segmented in a frame aligned with it (src/segment/align.c)
 * and come back as accurate as upright, the same at 1 and 2 threads.
 * Before the aligned frame: 3 mm versions rolled 8 / -12 / 20 degrees
 * reached all-muscle Dice 0.937 / 0.916 / 0.394. */
static void test_rolled_phantom(void **state) {
  (void)state;
  psp_phantom_options o;
  psp_phantom_options_default(&o);
  o.seed = 4;
  o.roll_deg = 14.0;
  accuracy_case(&o, MIN_DICE_MF_ROLLED, MIN_DICE_ES_ROLLED, MAX_FF_DIFF_PP_ROLLED);
  o.dims[2] = 16;
  psp_phantom *p = make_phantom(&o);
  psp_ffmap *m = ffmap_of(psp_phantom_volume(p, "water"), psp_phantom_volume(p, "fat"));
  psp_segmentation *s1 = segment(m, 1), *s2 = segment(m, 2);
  bool al1 = false, al2 = false;
  double d1 = psp_segmentation_axis_deg(s1, &al1), d2 = psp_segmentation_axis_deg(s2, &al2);
  print_message("rolled %.1f degrees: axis measured %.1f, aligned %d\n", o.roll_deg, d1, al1);
  assert_true(al1 && al2 && d1 == d2);
  assert_true(fabs(d1 + o.roll_deg) <= 1.0); /* the axis turns against the roll */
  assert_same_segmentation(s1, s2);
  psp_segmentation_free(s1);
  psp_segmentation_free(s2);
  psp_ffmap_free(m);
  psp_phantom_free(p);
  /* upright: measured 0, not aligned */
  o.roll_deg = 0.0;
  p = make_phantom(&o);
  m = ffmap_of(psp_phantom_volume(p, "water"), psp_phantom_volume(p, "fat"));
  s1 = segment(m, 2);
  d1 = psp_segmentation_axis_deg(s1, &al1);
  assert_false(al1);
  assert_true(fabs(d1) <= 1.0);
  psp_segmentation_free(s1);
  psp_ffmap_free(m);
  psp_phantom_free(p);
}

static void test_threads_identical(void **state) {
  (void)state;
  psp_phantom *p;
  psp_ffmap *m = default_phantom_map(7, 24, &p);
  psp_segmentation *s1 = segment(m, 1), *s2 = segment(m, 2);
  assert_same_segmentation(s1, s2);
  psp_segmentation_free(s1);
  psp_segmentation_free(s2);
  psp_ffmap_free(m);
  psp_phantom_free(p);
}

/* The check of the stack's bottom (psp_segment_with): called once with the
 * landmarks in place; "confirmed" (PSP_HEIGHT_BOTTOM) gives psp_segment's
 * labels, "nothing" (PSP_HEIGHT_ASSUMED) places the lowest slice 24 mm
 * above the priors' zero (other labels, and a warning), an L5/S1 placed
 * (the sacrum, named levels) puts the zero 22 mm above it, an error fails
 * the segmentation with the hook's message. */
typedef struct bottom_probe {
  int answer, calls;
  int64_t canals;
  double l5s1;
} bottom_probe;

static int probe_bottom(const psp_ffmap *ff, const psp_segmentation *s, void *user, double *l5s1,
                        psp_error **err) {
  bottom_probe *b = user;
  assert_true(isnan(*l5s1));
  assert_non_null(ff);
  b->calls++;
  for (int64_t k = 0; k < psp_segmentation_slice_count(s); k++)
    b->canals += psp_segmentation_slice(s, k)->canal.found;
  if (b->answer < 0) psp_error_set(err, PSP_ERR_DATA, "probe: no levels");
  *l5s1 = b->l5s1;
  return b->answer;
}

static int64_t count_label(const psp_volume *v, int lo, int hi) {
  int64_t n = 0;
  for (int64_t q = 0; q < psp_volume_voxel_count(v); q++)
    n += psp_volume_data(v)[q] >= (float)lo && psp_volume_data(v)[q] <= (float)hi;
  return n;
}

static void test_bottom_check(void **state) {
  (void)state;
  psp_phantom *p;
  psp_ffmap *m = default_phantom_map(5, 20, &p);
  psp_segmentation *ref = segment(m, 2);
  const psp_volume *lr = psp_segmentation_labels(ref);
  psp_segmentation *seg[2];
  double zero[2];
  for (int a = 0; a < 2; a++) {
    psp_context *ctx = psp_context_create();
    psp_error *err = NULL;
    bottom_probe b = {a == 0 ? PSP_HEIGHT_ASSUMED : PSP_HEIGHT_BOTTOM, 0, 0, NAN};
    seg[a] = psp_segment_with(m, probe_bottom, &b, ctx, &err);
    if (!seg[a]) fail_msg("psp_segment_with: %s", psp_error_message(err));
    assert_int_equal(b.calls, 1);
    assert_true(b.canals >= 15); /* the landmarks were there */
    /* the warning only when the bottom is not confirmed */
    assert_int_equal(psp_context_warning_count(ctx), a == 0 ? 1 : 0);
    assert_int_equal(psp_segmentation_height(seg[a], &zero[a]), b.answer);
    psp_context_free(ctx);
  }
  /* the phantom's 5 mm slices, from its lowest slice with a spine */
  int64_t k_low = -1;
  for (int64_t k = 0; k < psp_segmentation_slice_count(ref) && k_low < 0; k++)
    if (psp_segmentation_slice(ref, k)->status == PSP_SLICE_OK) k_low = k;
  assert_true(k_low >= 0);
  assert_float_equal(zero[0], (double)k_low - 24.0 / 5.0, 1e-9);
  assert_float_equal(zero[1], (double)k_low, 1e-9);
  /* an L5/S1 placed: the zero 22 mm above it, inside or below the stack */
  for (int a = 0; a < 2; a++) {
    psp_context *ctx = psp_context_create();
    psp_error *err = NULL;
    bottom_probe b = {a == 0 ? PSP_HEIGHT_SACRUM : PSP_HEIGHT_NAMED, 0, 0, a == 0 ? 4.9 : -7.0};
    psp_segmentation *sg = psp_segment_with(m, probe_bottom, &b, ctx, &err);
    if (!sg) fail_msg("psp_segment_with: %s", psp_error_message(err));
    double z = NAN;
    assert_int_equal(psp_segmentation_height(sg, &z), b.answer);
    assert_float_equal(z, b.l5s1 + 22.0 / 5.0, 1e-9);
    assert_int_equal(psp_context_warning_count(ctx), 0);
    psp_segmentation_free(sg);
    psp_context_free(ctx);
  }
  const psp_volume *l0 = psp_segmentation_labels(seg[0]), *l1 = psp_segmentation_labels(seg[1]);
  assert_memory_equal(psp_volume_data(l1), psp_volume_data(lr),
                      (size_t)psp_volume_voxel_count(lr) * sizeof(float));
  int64_t mf0 = count_label(l0, 1, 2), mf1 = count_label(l1, 1, 2);
  int64_t all0 = count_label(l0, 1, 4), all1 = count_label(l1, 1, 4);
  printf("multifidus voxels: bottom confirmed %lld, not confirmed %lld (all muscles %lld, %lld)\n",
         (long long)mf1, (long long)mf0, (long long)all1, (long long)all0);
  /* the phantom's multifidus follows its visible fat plane whatever the
   * height; the erector spinae's front at the bottom (the lumbosacral taper)
   * moves back */
  assert_true(mf0 <= mf1);
  assert_true(all0 < all1);
  /* an L5/S1 answer without a position is the hook's bug: an internal error */
  {
    psp_context *cx = psp_context_create();
    psp_error *e = NULL;
    bottom_probe bs = {PSP_HEIGHT_SACRUM, 0, 0, NAN};
    assert_null(psp_segment_with(m, probe_bottom, &bs, cx, &e));
    assert_non_null(e);
    assert_int_equal(psp_error_code(e), PSP_ERR_INTERNAL);
    psp_error_free(e);
    psp_context_free(cx);
  }
  /* an error in the check fails the segmentation with its message */
  psp_context *ctx = psp_context_create();
  psp_error *err = NULL;
  bottom_probe b = {-1, 0, 0, NAN};
  assert_null(psp_segment_with(m, probe_bottom, &b, ctx, &err));
  assert_non_null(err);
  assert_non_null(strstr(psp_error_message(err), "probe: no levels"));
  psp_error_free(err);
  psp_context_free(ctx);
  psp_segmentation_free(seg[0]);
  psp_segmentation_free(seg[1]);
  psp_segmentation_free(ref);
  psp_ffmap_free(m);
  psp_phantom_free(p);
}

static void test_orientation_variants(void **state) {
  (void)state;
  psp_phantom_options o;
  psp_phantom_options_default(&o);
  o.seed = 3;
  o.dims[0] = 128;
  o.dims[1] = 96;
  o.dims[2] = 16;
  o.spacing[0] = o.spacing[1] = 3.0;
  static const psp_orientation variants[] = {
      {{0, 1, 2}, {false, false, false}}, /* LPS */
      {{0, 1, 2}, {true, true, false}},   /* RAS */
      {{1, 0, 2}, {false, false, true}},  /* PLI */
      {{2, 1, 0}, {true, false, true}},   /* IPR */
  };
  psp_volume *ref = NULL;
  for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
    psp_phantom_options ov = o;
    ov.orientation = variants[v];
    psp_phantom *p = make_phantom(&ov);
    char dir[1200], wp[1300], fp[1300];
    snprintf(dir, sizeof dir, "%s/orient%zu", scratch, v);
    psp_error *err = NULL;
    if (!psp_phantom_write(p, dir, "o", &err)) fail_msg("write: %s", psp_error_message(err));
    snprintf(wp, sizeof wp, "%s/o_water.nii.gz", dir);
    snprintf(fp, sizeof fp, "%s/o_fat.nii.gz", dir);
    psp_context *ctx = psp_context_create();
    psp_volume *w = psp_nifti_load(wp, NULL, ctx, &err);
    psp_volume *f = psp_nifti_load(fp, NULL, ctx, &err);
    if (!w || !f) fail_msg("load: %s", psp_error_message(err));
    psp_context_free(ctx);
    psp_ffmap *m = ffmap_of(w, f);
    psp_segmentation *s = segment(m, 2);
    psp_volume *lab = psp_segmentation_take_labels(s);
    assert_null(psp_segmentation_labels(s));
    assert_true(psp_segmentation_ok_count(s) > 0);
    /* written back on the input's own file grid */
    psp_orientation ol = psp_volume_orientation(lab);
    for (int a = 0; a < 3; a++) {
      assert_int_equal(ol.file_axis[a], variants[v].file_axis[a]);
      assert_int_equal(ol.flip[a], variants[v].flip[a]);
    }
    if (!ref) {
      ref = lab;
    } else {
      assert_memory_equal(psp_volume_data(ref), psp_volume_data(lab),
                          (size_t)psp_volume_voxel_count(lab) * sizeof(float));
      psp_volume_free(lab);
    }
    psp_segmentation_free(s);
    psp_ffmap_free(m);
    psp_volume_free(w);
    psp_volume_free(f);
    psp_phantom_free(p);
  }
  psp_volume_free(ref);
}

/* A slice without signal is "no body"; a slice whose spine and muscles are
 * replaced by fat is "no spine"; both stay empty. */
static void test_flagged_slices(void **state) {
  (void)state;
  psp_phantom_options o;
  psp_phantom_options_default(&o);
  o.seed = 5;
  o.dims[2] = 20;
  psp_phantom *p = make_phantom(&o);
  psp_error *err = NULL;
  psp_volume *w = psp_volume_clone(psp_phantom_volume(p, "water"), &err);
  psp_volume *f = psp_volume_clone(psp_phantom_volume(p, "fat"), &err);
  assert_non_null(w);
  assert_non_null(f);
  int64_t d[3];
  psp_volume_dims(w, d);
  int64_t plane = d[0] * d[1];
  float *wd = psp_volume_data_mut(w), *fd = psp_volume_data_mut(f);
  const int64_t k_empty = 12, k_fat = 15;
  for (int64_t q = 0; q < plane; q++)
    wd[k_empty * plane + q] = fd[k_empty * plane + q] = 0;
  /* posterior half of slice k_fat: pure fat (no canal, no muscle) */
  for (int64_t j = d[1] / 3; j < d[1]; j++)
    for (int64_t i = 0; i < d[0]; i++) {
      int64_t q = k_fat * plane + j * d[0] + i;
      if (wd[q] + fd[q] > 300) {
        fd[q] = 1150;
        wd[q] = 50;
      }
    }
  psp_ffmap *m = ffmap_of(w, f);
  psp_segmentation *s = segment(m, 2);
  const psp_slice_landmarks *e = psp_segmentation_slice(s, k_empty);
  const psp_slice_landmarks *g = psp_segmentation_slice(s, k_fat);
  print_message("slice %lld: %s (%s); slice %lld: %s (%s)\n", (long long)k_empty,
                psp_slice_status_name(e->status), e->reason, (long long)k_fat,
                psp_slice_status_name(g->status), g->reason);
  assert_int_equal(e->status, PSP_SLICE_NO_BODY);
  assert_int_equal(g->status, PSP_SLICE_NO_SPINE);
  const float *lab = psp_volume_data(psp_segmentation_labels(s));
  for (int64_t q = 0; q < plane; q++) {
    assert_true(lab[k_empty * plane + q] == 0);
    assert_true(lab[k_fat * plane + q] == 0);
  }
  /* the neighbours are still segmented */
  assert_int_equal(psp_segmentation_slice(s, k_empty - 1)->status, PSP_SLICE_OK);
  assert_int_equal(psp_segmentation_slice(s, k_fat + 1)->status, PSP_SLICE_OK);
  assert_string_equal(psp_slice_status_name(PSP_SLICE_IMPLAUSIBLE), "implausible");
  psp_segmentation_free(s);
  psp_ffmap_free(m);
  psp_volume_free(w);
  psp_volume_free(f);
  psp_phantom_free(p);
}

/* models/NAME opened past its header line (fails the test if missing). */
static FILE *open_model(const char *name) {
  char path[2048], line[512];
  snprintf(path, sizeof path, "%s/models/%s", PSP_SOURCE_DIR, name);
  FILE *f = fopen(path, "r");
  if (!f) fail_msg("cannot open %s", path);
  assert_non_null(fgets(line, sizeof line, f)); /* header */
  return f;
}

/* The second pass's neighbours: about 8 mm rounded to slices, 1..2 on a
 * side. */
static void test_neigh_slices(void **state) {
  (void)state;
  const double dz[] = {0.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 9.0, 12.0, NAN, 0.0};
  const int64_t want[] = {2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1};
  for (size_t i = 0; i < sizeof dz / sizeof dz[0]; i++)
    assert_int_equal(psp_seg_neigh_slices(dz[i]), want[i]);
}

/* The compiled prior by height equals models/mf_rho_by_level.tsv. */
static void test_model_table_by_level(void **state) {
  (void)state;
  FILE *f = open_model("mf_rho_by_level.tsv");
  char line[512];
  int band = 0;
  while (fgets(line, sizeof line, f)) {
    double dz = 0, share = 0, rho[12];
    int n = 0, off = 0;
    assert_int_equal(sscanf(line, "%lf\t%d\t%lf%n", &dz, &n, &share, &off), 3);
    assert_float_equal(dz, 15.0 * (band - 0.5), 1e-9); /* the first band lies below the anchor */
    const char *p = line + off;
    for (int t = 0; t < 12; t++) {
      int used = 0;
      assert_int_equal(sscanf(p, "%lf%n", &rho[t], &used), 1);
      p += used;
      assert_float_equal(psp_segment_mf_rho_level(band, t), rho[t], 1e-9);
    }
    /* the multifidus share: over half below the anchor, shrinking above */
    if (band == 0) assert_true(share > 0.5);
    if (band == 1) assert_true(share > 0.35 && share < 0.5);
    band++;
  }
  fclose(f);
  assert_int_equal(band, 11);
  /* out of range: 0 */
  assert_float_equal(psp_segment_mf_rho_level(11, 0), 0.0, 1e-12);
  /* heights between band centres interpolate; below the lowest and above
   * the highest centre the end rows hold */
  double row[12], lo[12], hi[12];
  psp_seg_rho_row(-30.0, lo);
  for (int t = 0; t < 12; t++)
    assert_float_equal(lo[t], psp_segment_mf_rho_level(0, t), 1e-12);
  psp_seg_rho_row(500.0, hi);
  for (int t = 0; t < 12; t++)
    assert_float_equal(hi[t], psp_segment_mf_rho_level(10, t), 1e-12);
  psp_seg_rho_row(0.0, row); /* half way between -7.5 and 7.5 */
  for (int t = 0; t < 12; t++)
    assert_float_equal(
        row[t], 0.5 * (psp_segment_mf_rho_level(0, t) + psp_segment_mf_rho_level(1, t)), 1e-12);
}

/* The compiled multifidus prior equals models/mf_rho_profile.tsv. */
static void test_model_table(void **state) {
  (void)state;
  FILE *f = open_model("mf_rho_profile.tsv");
  char line[256];
  int rows = 0;
  while (fgets(line, sizeof line, f)) {
    int deg = 0, n = 0;
    double q25, med, q75;
    int got = sscanf(line, "%d\t%d\t%lf\t%lf\t%lf", &deg, &n, &q25, &med, &q75);
    if (deg / 10 >= 12) continue;
    if (got == 5)
      assert_float_equal(psp_segment_mf_rho(deg / 10), med, 1e-9);
    else if (deg == 0) /* no template ray straight back: the 10-degree value */
      assert_float_equal(psp_segment_mf_rho(0), psp_segment_mf_rho(1), 1e-9);
    else
      assert_float_equal(psp_segment_mf_rho(deg / 10), 0.0, 1e-9);
    rows++;
  }
  fclose(f);
  assert_int_equal(rows, 12);
}

/* The compiled rise of the erector spinae's front equals
 * models/es_front_rise.tsv (medians). */
static void test_es_rise_table(void **state) {
  (void)state;
  FILE *f = open_model("es_front_rise.tsv");
  char line[256];
  int rows = 0;
  while (fgets(line, sizeof line, f)) {
    int dmm = 0, n = 0;
    double q25, med, q75;
    assert_int_equal(sscanf(line, "%d\t%d\t%lf\t%lf\t%lf", &dmm, &n, &q25, &med, &q75), 5);
    assert_int_equal(dmm, 40 + 5 * rows);
    assert_float_equal(psp_segment_es_rise(rows), med, 1e-9);
    rows++;
  }
  fclose(f);
  assert_int_equal(rows, ES_RISE_N);
  assert_true(isnan(psp_segment_es_rise(ES_RISE_N)));
}

/* The canal template's muscle limit after a first search: lean muscle
 * (median level of the slices with a canal at most PSP_LM_MUSCLE_FF - 0.1)
 * needs no second search; fatty muscle raises it to the median + 0.1, at
 * most 0.5; slices without a canal do not count. */
/* psp_seg_void_area: a piece without signal inside a muscle counts, one
 * open to the grown box's border (the background) or away from every
 * muscle does not. */
static void test_void_area(void **state) {
  (void)state;
  enum { NX = 40, NY = 30 };
  float ff[NX * NY], lab[NX * NY];
  int32_t queue[NX * NY];
  uint8_t seen[NX * NY];
  for (int q = 0; q < NX * NY; q++) {
    ff[q] = 0.9f; /* fat */
    lab[q] = 0;
  }
  for (int j = 8; j < 22; j++) /* a muscle 14 x 12, its box 8..19 x 8..21 */
    for (int i = 8; i < 20; i++) {
      ff[j * NX + i] = 0.1f;
      lab[j * NX + i] = 3;
    }
  const int64_t bx[4] = {8, 19, 8, 21};
  assert_true(psp_seg_void_area(ff, lab, NX, NY, bx, 2.0, queue, seen) == 0.0);
  /* a void of 3 x 2 inside it (the labels leave it out) */
  for (int j = 12; j < 14; j++)
    for (int i = 11; i < 14; i++) {
      ff[j * NX + i] = NAN;
      lab[j * NX + i] = 0;
    }
  assert_true(psp_seg_void_area(ff, lab, NX, NY, bx, 2.0, queue, seen) == 12.0);
  /* no signal in a column from the top of the image down to the muscle: the
   * background, open to the grown box's border */
  for (int j = 0; j < 8; j++)
    ff[j * NX + 15] = NAN;
  assert_true(psp_seg_void_area(ff, lab, NX, NY, bx, 2.0, queue, seen) == 12.0);
  /* a void in the fat, two voxels from the muscle: not against it */
  ff[10 * NX + 22] = NAN;
  assert_true(psp_seg_void_area(ff, lab, NX, NY, bx, 2.0, queue, seen) == 12.0);
  /* one against it counts */
  ff[10 * NX + 20] = NAN;
  assert_true(psp_seg_void_area(ff, lab, NX, NY, bx, 2.0, queue, seen) == 14.0);
}

/* psp_seg_refine_outlines, the erector's pieces beyond a ridge (refine.c,
 * drop_es_pieces): an erector 16 x 14 voxels (3 mm, FF 0.1 in fat of 0.9)
 * with a strip 3 voxels wide beside it, labelled with it across one column
 * of FF 0.6 (the fat plane towards the back wall's layer in partial volume):
 * the strip leaves the erector, the ridge column stays; without the ridge
 * (the column at 0.1) the strip stays. */
static void test_es_pieces(void **state) {
  (void)state;
  enum { NX = 40, NY = 34 };
  static float ff[NX * NY], lab[NX * NY];
  static uint8_t old[NX * NY];
  for (int ridge = 1; ridge >= 0; ridge--) {
    for (int q = 0; q < NX * NY; q++) {
      ff[q] = 0.9f;
      lab[q] = 0;
    }
    for (int j = 10; j <= 23; j++)
      for (int i = 10; i <= 29; i++) {
        ff[j * NX + i] = i == 26 && ridge ? 0.6f : 0.1f;
        lab[j * NX + i] = PSP_LABEL_ES_LEFT;
      }
    const int64_t bx[4] = {10, 29, 10, 23};
    assert_true(psp_seg_refine_outlines(ff, lab, NX, NY, 3.0, 3.0, bx, 0.1, 0.9, old));
    int strip = 0, col = 0;
    for (int j = 12; j <= 21; j++) {
      for (int i = 27; i <= 29; i++)
        strip += lab[j * NX + i] == PSP_LABEL_ES_LEFT;
      col += lab[j * NX + 26] == PSP_LABEL_ES_LEFT;
    }
    print_message("ridge %d: strip %d of 30 voxels, ridge column %d of 10\n", ridge, strip, col);
    assert_int_equal(strip, ridge ? 0 : 30);
    assert_int_equal(col, 10);
  }
}

/* psp_seg_check_areas empties a flagged slice over bx grown by one voxel,
 * where psp_seg_refine_outlines may leave labels (its smoothing and the
 * multifidus's step ring decide one voxel beyond bx): three muscles inside
 * bx and the right erector missing, with a multifidus voxel one beyond bx
 * on two sides (left and bottom); the slice is flagged for the missing
 * muscle and no label is left. */
static void test_check_areas_box(void **state) {
  (void)state;
  enum { NX = 40, NY = 30 };
  static float ff[NX * NY], lab[NX * NY];
  for (int q = 0; q < NX * NY; q++)
    ff[q] = 0.1f, lab[q] = 0;
  for (int j = 10; j <= 19; j++)
    for (int i = 10; i <= 29; i++)
      lab[j * NX + i] = (float)(i < 20   ? PSP_LABEL_MF_LEFT
                                : i < 25 ? PSP_LABEL_MF_RIGHT
                                         : PSP_LABEL_ES_LEFT);
  lab[15 * NX + 9] = PSP_LABEL_MF_LEFT;   /* one beyond bx[0] */
  lab[20 * NX + 22] = PSP_LABEL_MF_RIGHT; /* one beyond bx[3] */
  const int64_t bx[4] = {10, 29, 10, 19};
  psp_slice_landmarks lm;
  memset(&lm, 0, sizeof lm);
  lm.status = PSP_SLICE_OK;
  lm.midline_i = 20.0;
  const double sp[2] = {2.0, 2.0};
  psp_seg_check_areas(&lm, ff, lab, NX, NY, bx, sp, 0.1, false);
  int left = 0;
  for (int q = 0; q < NX * NY; q++)
    left += lab[q] != 0.0f;
  print_message("status %d (%s), %d labels left\n", (int)lm.status, lm.reason, left);
  assert_int_equal(lm.status, PSP_SLICE_IMPLAUSIBLE);
  assert_non_null(strstr(lm.reason, "area 0 mm^2"));
  assert_int_equal(left, 0);
}

/* psp_seg_refine_outlines, the lean pieces of a fatty erector (refine.c,
 * drop_lean_pieces): an erector 17 x 14 voxels of 3 mm (FF 0.4 in fat of
 * 0.9), its last column at FF 0.3, with 3 columns of lean muscle beyond
 * (FF 0.05, the back wall's layer) labelled with it (no ridge, so
 * drop_es_pieces keeps them): the strip leaves the erector (case 0), but
 * not beside a lean erector (FF 0.12, case 1: the rule is for fatty muscle
 * only). Without the strip, lean voxels in the last column: 3 (27 mm^2,
 * below 30) stay (case 2), 4 leave (case 3). In every case a lean bundle
 * 4 x 4 touching the erector's back edge along 4 voxels (a quarter of its
 * edges) stays. */
static void test_es_lean_pieces(void **state) {
  (void)state;
  enum { NX = 40, NY = 34 };
  static float ff[NX * NY], lab[NX * NY];
  static uint8_t old[NX * NY];
  for (int c = 0; c < 4; c++) {
    const float muscle = c == 1 ? 0.12f : 0.4f;
    /* the lean piece at the tip: columns i0..i1, rows j0..j1 */
    const int i0 = c < 2 ? 27 : 26, i1 = c < 2 ? 29 : 26, j0 = c < 2 ? 10 : 15,
              j1 = c < 2    ? 23
                   : c == 2 ? 17
                            : 18;
    for (int q = 0; q < NX * NY; q++) {
      ff[q] = 0.9f;
      lab[q] = 0;
    }
    for (int j = 10; j <= 23; j++)
      for (int i = 10; i <= 29; i++) {
        bool piece = i >= i0 && i <= i1 && j >= j0 && j <= j1;
        bool bundle = i >= 14 && i <= 17 && j >= 20;
        if (i >= 27 && !piece) continue;
        ff[j * NX + i] = piece || bundle ? 0.05f : i == 26 ? 0.3f : muscle;
        lab[j * NX + i] = PSP_LABEL_ES_LEFT;
      }
    const int64_t bx[4] = {10, 29, 10, 23};
    assert_true(psp_seg_refine_outlines(ff, lab, NX, NY, 3.0, 3.0, bx, muscle, 0.9, old));
    int piece = 0, bundle = 0, rest = 0;
    for (int j = 10; j <= 23; j++)
      for (int i = 10; i <= 29; i++) {
        bool es = lab[j * NX + i] == PSP_LABEL_ES_LEFT;
        if (i >= i0 && i <= i1 && j >= j0 && j <= j1)
          piece += es;
        else if (i >= 14 && i <= 17 && j >= 20)
          bundle += es;
        else if (i >= 12 && i <= 24 && j >= 12 && j <= 21)
          rest += es;
      }
    const int n_piece = (i1 - i0 + 1) * (j1 - j0 + 1);
    print_message("case %d: lean piece %d of %d voxels, bundle %d of 16, inside %d of 122\n", c,
                  piece, n_piece, bundle, rest);
    assert_int_equal(piece, c == 0 || c == 3 ? 0 : n_piece);
    assert_int_equal(bundle, 16);
    assert_int_equal(rest, 122); /* the inner 13 x 10, less the bundle's 8 in it */
  }
}

/* psp_seg_refine_outlines, the erector's fatty rim at coarse pixels
 * (refine.c item 13, trim_es_rim): an erector 20 x 20 voxels of 3 mm (FF
 * 0.3 in fat of 0.9) whose lateral column reads 0.7 (over half fat: the
 * epimuscular fat in partial volume) loses it; its medial column, as
 * fatty, stays, within 2 voxels of the multifidus beyond a plane one voxel
 * wide (that plane is the other items'); its bottom row at 0.55 (below its
 * mean + half way to fat, 0.63) stays. */
static void test_es_rim(void **state) {
  (void)state;
  enum { NX = 50, NY = 40 };
  static float ff[NX * NY], lab[NX * NY];
  static uint8_t old[NX * NY];
  for (int j = 0; j < NY; j++)
    for (int i = 0; i < NX; i++) {
      const int q = j * NX + i;
      const bool mf = i >= 6 && i <= 16 && j >= 10 && j <= 29,
                 es = i >= 18 && i <= 37 && j >= 10 && j <= 29;
      ff[q] = 0.9f;
      lab[q] = 0.0f;
      if (mf) ff[q] = 0.3f, lab[q] = (float)PSP_LABEL_MF_LEFT;
      if (es) {
        ff[q] = i == 18 || i == 37 ? 0.7f : j == 29 ? 0.55f : 0.3f;
        lab[q] = (float)PSP_LABEL_ES_LEFT;
      }
    }
  const int64_t bx[4] = {6, 37, 10, 29};
  assert_true(psp_seg_refine_outlines(ff, lab, NX, NY, 3.0, 3.0, bx, 0.3, 0.9, old));
  int lateral = 0, medial = 0, bottom = 0;
  for (int j = 10; j <= 29; j++) {
    lateral += lab[j * NX + 37] == PSP_LABEL_ES_LEFT;
    medial += lab[j * NX + 18] == PSP_LABEL_ES_LEFT;
  }
  for (int i = 19; i <= 36; i++)
    bottom += lab[29 * NX + i] == PSP_LABEL_ES_LEFT;
  print_message("lateral rim %d of 20, medial column %d of 20, bottom row %d of 18 kept\n", lateral,
                medial, bottom);
  assert_int_equal(lateral, 0);
  assert_int_equal(medial, 20);
  assert_int_equal(bottom, 18);
}

/* psp_seg_refine_outlines, the multifidus's ring on a one-voxel step
 * (refine.c, join_step_ring): a multifidus 20 x 20 voxels of 3 mm (FF 0.4)
 * with an erector beside it across a column of FF 0.6, and a ring of
 * FF 0.6 (over half muscle) round the rest. With fat (0.9) just beyond the
 * ring, its 60 voxels on the three free sides join; with a ramp (0.75,
 * then fat) none does, nor in either case the column between the two
 * muscles. */
static void test_step_ring(void **state) {
  (void)state;
  enum { NX = 50, NY = 40 };
  static float ff[NX * NY], lab[NX * NY];
  static uint8_t old[NX * NY];
  for (int ramp = 0; ramp < 2; ramp++) {
    for (int j = 0; j < NY; j++)
      for (int i = 0; i < NX; i++) {
        int q = j * NX + i;
        bool mf = i >= 10 && i <= 29 && j >= 10 && j <= 29,
             es = i >= 31 && i <= 40 && j >= 10 && j <= 29;
        bool ring = !mf && !es && i >= 9 && i <= 30 && j >= 9 && j <= 30;
        bool ring2 = !mf && !es && !ring && i >= 8 && i <= 31 && j >= 8 && j <= 31;
        ff[q] = mf || es ? 0.4f : ring ? 0.6f : ring2 && ramp ? 0.75f : 0.9f;
        lab[q] = mf ? (float)PSP_LABEL_MF_LEFT : es ? (float)PSP_LABEL_ES_LEFT : 0.0f;
      }
    const int64_t bx[4] = {10, 40, 10, 29};
    assert_true(psp_seg_refine_outlines(ff, lab, NX, NY, 3.0, 3.0, bx, 0.4, 0.9, old));
    int joined = 0, between = 0;
    for (int k = 10; k <= 29; k++) {
      joined += (lab[k * NX + 9] == PSP_LABEL_MF_LEFT) + (lab[9 * NX + k] == PSP_LABEL_MF_LEFT) +
                (lab[30 * NX + k] == PSP_LABEL_MF_LEFT);
      between += lab[k * NX + 30] != 0.0f;
    }
    print_message("%s: %d of 60 ring voxels joined, %d of 20 between the muscles labelled\n",
                  ramp ? "ramp" : "step", joined, between);
    assert_int_equal(joined, ramp ? 0 : 60);
    assert_int_equal(between, 0);
  }
}

/* psp_seg_refine_outlines, the outline closing (refine.c, close_outlines,
 * 5 mm): a multifidus 40 x 40 voxels of 1 mm (FF 0.4 in fat of 0.9) with a
 * bite of fat 8 deep from its back edge: 4 voxels wide (a fatty streak
 * touching the fat outside), it joins the muscle, but for the voxels next
 * to an erector 4 x 3 at its bottom and the row at its mouth; 16 wide (the
 * fat beside the muscle), its middle stays open. Near the image's edge
 * nothing between the muscle and the edge joins. */
static void test_close(void **state) {
  (void)state;
  enum { NX = 60, NY = 60 };
  static float ff[NX * NY], lab[NX * NY];
  static uint8_t old[NX * NY];
  for (int w = 4; w <= 16; w += 12) {
    int i0 = 30 - w / 2, i1 = 29 + w / 2;
    for (int q = 0; q < NX * NY; q++) {
      ff[q] = 0.9f;
      lab[q] = 0;
    }
    for (int j = 10; j <= 49; j++)
      for (int i = 10; i <= 49; i++) {
        bool bite = i >= i0 && i <= i1 && j <= 17;
        ff[j * NX + i] = bite ? 0.8f : 0.4f;
        lab[j * NX + i] = bite ? 0.0f : (float)PSP_LABEL_MF_LEFT;
      }
    if (w == 4)
      for (int j = 15; j <= 17; j++)
        for (int i = i0; i <= i1; i++)
          lab[j * NX + i] = PSP_LABEL_ES_LEFT, ff[j * NX + i] = 0.4f;
    const int64_t bx[4] = {10, 49, 10, 49};
    assert_true(psp_seg_refine_outlines(ff, lab, NX, NY, 1.0, 1.0, bx, 0.4, 0.9, old));
    int joined = 0, es = 0;
    for (int j = 10; j <= 17; j++)
      for (int i = 28; i <= 31; i++) {
        joined += lab[j * NX + i] == PSP_LABEL_MF_LEFT;
        es += lab[j * NX + i] == PSP_LABEL_ES_LEFT;
      }
    print_message("bite %d wide: %d of its middle 4 x 8 voxels joined, %d erector\n", w, joined,
                  es);
    if (w == 4) {
      assert_int_equal(es, 12);
      assert_int_equal(joined, 12); /* rows 11-13: row 14 touches the erector, and row 10,
                                     * the mouth, a disc of 5 mm just touches */
    } else {
      assert_true(joined <= 8);
    }
  }
  /* the muscle 2 rows below the image's edge, a bite 6 wide and 8 deep open
   * towards it: beyond the image lies outside the dilation, so the rows
   * between the muscle and the edge stay unlabelled (clipped at the edge,
   * the window had taken them in, outside the labels' box) */
  for (int q = 0; q < NX * NY; q++) {
    ff[q] = 0.9f;
    lab[q] = 0;
  }
  for (int j = 2; j <= 41; j++)
    for (int i = 10; i <= 49; i++) {
      bool bite = i >= 27 && i <= 32 && j <= 9;
      ff[j * NX + i] = bite ? 0.8f : 0.4f;
      lab[j * NX + i] = bite ? 0.0f : (float)PSP_LABEL_MF_LEFT;
    }
  const int64_t bx[4] = {10, 49, 2, 41};
  assert_true(psp_seg_refine_outlines(ff, lab, NX, NY, 1.0, 1.0, bx, 0.4, 0.9, old));
  int above = 0, deep = 0;
  for (int i = 0; i < NX; i++)
    above += (lab[i] != 0) + (lab[NX + i] != 0);
  for (int i = 27; i <= 32; i++)
    deep += lab[9 * NX + i] == PSP_LABEL_MF_LEFT;
  print_message("bite open towards the image's edge: %d voxels labelled on rows 0-1, %d of 6 "
                "joined on its bottom row\n",
                above, deep);
  assert_int_equal(above, 0);
}

/* psp_seg_zfill (refine.c), the labels' majority along the stack on the
 * outlines: where both neighbouring slices hold the same value and this
 * slice does not, an unlabelled voxel next to that muscle and below its
 * side's threshold joins it, a voxel on a muscle's outline takes the
 * neighbours' value (0: it leaves; another muscle: when next to it), a
 * voxel inside its muscle stays; decided on the labels before. */
static void test_zfill(void **state) {
  (void)state;
  enum { NX = 14, NY = 10 };
  float ff[NX * NY], lab[NX * NY];
  uint8_t below[NX * NY], own[NX * NY], above[NX * NY];
  for (int q = 0; q < NX * NY; q++) {
    ff[q] = 0.3f;
    lab[q] = 0;
    below[q] = above[q] = 0;
  }
  for (int j = 2; j <= 6; j++) /* the right multifidus on this slice: columns 2-4 */
    for (int i = 2; i <= 4; i++)
      lab[j * NX + i] = PSP_LABEL_MF_RIGHT;
  for (int j = 2; j <= 6; j++) /* ... on both neighbours columns 2-6, and 1 on row 7 */
    for (int i = 2; i <= 6; i++)
      below[j * NX + i] = above[j * NX + i] = PSP_LABEL_MF_RIGHT;
  below[7 * NX + 1] = above[7 * NX + 1] = PSP_LABEL_MF_RIGHT;
  ff[3 * NX + 5] = 0.8f;                                     /* above the threshold */
  ff[4 * NX + 5] = NAN;                                      /* no signal */
  above[5 * NX + 5] = 0;                                     /* the neighbours disagree */
  below[8 * NX + 9] = above[8 * NX + 9] = PSP_LABEL_MF_LEFT; /* away from the left MF */
  lab[6 * NX + 5] = PSP_LABEL_ES_RIGHT; /* on its outline, next to the MF the neighbours hold */
  lab[2 * NX + 8] = PSP_LABEL_ES_RIGHT; /* a voxel the neighbours do not hold */
  for (int j = 3; j <= 7; j++)          /* an erector 3 x 5 the neighbours do not hold */
    for (int i = 10; i <= 12; i++)
      lab[j * NX + i] = PSP_LABEL_ES_RIGHT;
  const int64_t box[4] = {1, NX - 2, 1, NY - 2};
  const double t[2] = {0.2, 0.5}; /* left, right */
  for (int q = 0; q < NX * NY; q++)
    own[q] = (uint8_t)lab[q];
  int64_t n = psp_seg_zfill(ff, below, own, above, lab, NX, box, t);
  assert_true(lab[2 * NX + 5] == PSP_LABEL_MF_RIGHT); /* joins */
  assert_true(lab[3 * NX + 5] == 0.0f);
  assert_true(lab[4 * NX + 5] == 0.0f);
  assert_true(lab[5 * NX + 5] == 0.0f);
  assert_true(lab[6 * NX + 5] == PSP_LABEL_MF_RIGHT); /* taken over */
  assert_true(lab[8 * NX + 9] == 0.0f);
  assert_true(lab[2 * NX + 6] == 0.0f); /* decided on the labels before: not next to it */
  assert_true(lab[7 * NX + 1] == 0.0f); /* only diagonally next to it */
  assert_true(lab[2 * NX + 8] == 0.0f); /* leaves */
  int inner = 0, outline = 0;
  for (int j = 3; j <= 7; j++)
    for (int i = 10; i <= 12; i++) {
      bool in = j > 3 && j < 7 && i == 11;
      if (lab[j * NX + i] == PSP_LABEL_ES_RIGHT) in ? inner++ : outline++;
    }
  assert_int_equal(inner, 3); /* its inside stays, its outline leaves */
  assert_int_equal(outline, 0);
  assert_int_equal(n, 3 + 12);
  /* a muscle the neighbours do not hold anywhere near, all outline: stays */
  for (int q = 0; q < NX * NY; q++)
    lab[q] = below[q] = above[q] = 0;
  for (int i = 9; i <= 11; i++)
    lab[8 * NX + i] = PSP_LABEL_MF_LEFT;
  for (int q = 0; q < NX * NY; q++)
    own[q] = (uint8_t)lab[q];
  assert_int_equal(psp_seg_zfill(ff, below, own, above, lab, NX, box, t), 0);
  for (int i = 9; i <= 11; i++)
    assert_true(lab[8 * NX + i] == PSP_LABEL_MF_LEFT);
  /* the left side's threshold applies to the left muscles */
  for (int q = 0; q < NX * NY; q++)
    lab[q] = below[q] = above[q] = 0;
  lab[8 * NX + 8] = PSP_LABEL_MF_LEFT;
  below[8 * NX + 8] = above[8 * NX + 8] = PSP_LABEL_MF_LEFT;
  below[8 * NX + 9] = above[8 * NX + 9] = PSP_LABEL_MF_LEFT;
  for (int q = 0; q < NX * NY; q++)
    own[q] = (uint8_t)lab[q];
  psp_seg_zfill(ff, below, own, above, lab, NX, box, t);
  assert_true(lab[8 * NX + 9] == 0.0f); /* 0.3 is above the left's 0.2 */
  ff[8 * NX + 9] = 0.1f;
  psp_seg_zfill(ff, below, own, above, lab, NX, box, t);
  assert_true(lab[8 * NX + 9] == PSP_LABEL_MF_LEFT);
}

static void test_muscle_limit(void **state) {
  (void)state;
  psp_slice_landmarks lm[5];
  double buf[5];
  memset(lm, 0, sizeof lm);
  const double lean[5] = {0.08, 0.06, 0.09, 0.12, 0.07};
  for (int k = 0; k < 5; k++)
    lm[k].muscle_ff = lean[k];
  assert_true(isnan(psp_landmarks_muscle_limit(lm, 5, buf)));
  const double fatty[5] = {0.30, 0.26, 0.05, 0.28, 0.31};
  for (int k = 0; k < 5; k++)
    lm[k].muscle_ff = fatty[k];
  assert_true(fabs(psp_landmarks_muscle_limit(lm, 5, buf) - 0.38) < 1e-9); /* median 0.28 */
  lm[0].status = lm[4].status = PSP_SLICE_NO_SPINE;                        /* 0.26 0.05 0.28 */
  assert_true(fabs(psp_landmarks_muscle_limit(lm, 5, buf) - 0.36) < 1e-9);
  for (int k = 0; k < 5; k++)
    lm[k].muscle_ff = 0.47;
  assert_true(fabs(psp_landmarks_muscle_limit(lm, 5, buf) - 0.5) < 1e-9);
  for (int k = 0; k < 5; k++)
    lm[k].status = PSP_SLICE_NO_SPINE;
  assert_true(isnan(psp_landmarks_muscle_limit(lm, 5, buf)));
}

/* The front limit on a box-shaped compartment (1 mm pixels, left side):
 * medial of its most anterior point nothing changes; laterally the voxels
 * in front of the template's line (less the tolerance) go, the ones behind
 * it stay; the other side's value is never touched. */
static void test_es_front_limit(void **state) {
  (void)state;
  enum { NX = 200, NY = 80 };
  static uint8_t comp[NX * NY];
  double mid = 100.0;
  for (int j = 0; j < NY; j++)
    for (int i = 0; i < NX; i++) {
      int d = i - 100;
      comp[j * NX + i] = (uint8_t)(d >= 5 && d <= 85 && j >= 10 && j < 70 ? 1 : 0);
      if (d <= -5 && d >= -85 && j >= 10 && j < 70) comp[j * NX + i] = 2;
    }
  int64_t removed = psp_seg_es_front_limit(comp, 1, NULL, 0.1, 0.9, NX, NY, 1.0, 1.0, mid, 1);
  assert_true(removed > 0);
  /* the front is flat: the line starts at d = ES_REF_LO_MM, y = 10 */
  for (int d = 5; d <= 85; d++) {
    double dd = d - ES_REF_LO_MM;
    double lim = 10.0 - ES_FRONT_TOL_MM; /* y of the first voxel kept, below */
    if (dd > 0) {
      /* the table's rise at 35 + dd mm, linear between its 5 mm steps */
      double x = ES_REF_MM + dd, u = (x - ES_REF_MM) / 5.0 - 1.0;
      double r = u < 0 ? psp_segment_es_rise(0) * (x - ES_REF_MM) / 5.0 : 0;
      if (u >= 0) {
        int k = (int)u;
        r = k >= ES_RISE_N - 1
                ? psp_segment_es_rise(ES_RISE_N - 1) +
                      (psp_segment_es_rise(ES_RISE_N - 1) - psp_segment_es_rise(ES_RISE_N - 2)) *
                          (u - (ES_RISE_N - 1))
                : psp_segment_es_rise(k) +
                      (psp_segment_es_rise(k + 1) - psp_segment_es_rise(k)) * (u - k);
      }
      lim += r;
    }
    for (int j = 10; j < 70; j++) {
      uint8_t want = (uint8_t)(d <= ES_REF_LO_MM || (double)j >= lim ? 1 : 0);
      if (comp[j * NX + 100 + d] != want)
        fail_msg("d %d, y %d: %d, expected %d (limit %.2f)", d, j, comp[j * NX + 100 + d], want,
                 lim);
    }
  }
  /* at d = 80 mm, 50 mm lateral of the start: the table's rise at 85 mm
   * (17.5 at 80 + 2 mm per 5 mm beyond) less 4 mm: y 25.5, so row 25 goes and
   * row 26 stays... */
  assert_int_equal(comp[25 * NX + 180], 0);
  assert_int_equal(comp[26 * NX + 180], 1);
  /* ... and the right side (value 2) is untouched */
  for (int j = 10; j < 70; j++)
    assert_int_equal(comp[j * NX + 100 - 80], 2);
}

int main(void) {
  snprintf(scratch, sizeof scratch, "%s", PSP_SCRATCH_DIR);
  psp_mkdir_p(scratch, NULL);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_es_rise_table),
      cmocka_unit_test(test_void_area),
      cmocka_unit_test(test_es_pieces),
      cmocka_unit_test(test_check_areas_box),
      cmocka_unit_test(test_es_lean_pieces),
      cmocka_unit_test(test_step_ring),
      cmocka_unit_test(test_es_rim),
      cmocka_unit_test(test_close),
      cmocka_unit_test(test_zfill),
      cmocka_unit_test(test_muscle_limit),
      cmocka_unit_test(test_es_front_limit),
      cmocka_unit_test(test_phantom_accuracy),
      cmocka_unit_test(test_fatty_phantom_accuracy),
      cmocka_unit_test(test_threads_identical),
      cmocka_unit_test(test_bottom_check),
      cmocka_unit_test(test_rolled_phantom),
      cmocka_unit_test(test_orientation_variants),
      cmocka_unit_test(test_flagged_slices),
      cmocka_unit_test(test_model_table),
      cmocka_unit_test(test_model_table_by_level),
      cmocka_unit_test(test_neigh_slices),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
