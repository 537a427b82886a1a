/*
 * Unit tests of src/dixon: noise estimation, the Rician noise-bias
 * correction (region FF accuracy, uniform and streaky), in-phase /
 * opposed-phase fat-dominance resolution, FF-map units, the subcutaneous-fat
 * plausibility check and thread-count invariance.
 *
 * Synthetic data follow the project phantom's noise model: true water W0 and
 * fat F0 times a smooth bias field; complex echoes IP = (W0+F0) + n1,
 * OP = (W0-F0) + n2 with complex Gaussian noise of sigma per component;
 * water = |IP+OP|/2, fat = |IP-OP|/2, inphase = |IP|, outphase = |OP|,
 * rounded to integers. SNR = muscle in-phase signal / sigma.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/internal.h"
#include "dixon/noise.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- deterministic RNG (xoshiro256**, seeded by splitmix64) ------------ */

typedef struct rng {
  uint64_t s[4];
} rng;

static uint64_t splitmix(uint64_t *x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

static void rng_seed(rng *r, uint64_t seed) {
  for (int i = 0; i < 4; i++)
    r->s[i] = splitmix(&seed);
}

static uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(rng *r) {
  uint64_t *s = r->s;
  uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return res;
}

static double rng_uniform(rng *r) {
  return ((double)(rng_next(r) >> 11) + 0.5) * 0x1.0p-53;
}

static void rng_normal2(rng *r, double *a, double *b) {
  double u = rng_uniform(r), v = rng_uniform(r);
  double m = sqrt(-2.0 * log(u));
  *a = m * cos(2.0 * 3.14159265358979323846 * v);
  *b = m * sin(2.0 * 3.14159265358979323846 * v);
}

/* ---- synthetic scans ----------------------------------------------------- */

#define NX 160
#define NY 112
#define NZ 12

typedef struct scan {
  psp_volume *water, *fat, *ip, *op;
  float *w0, *f0;  /* truth, times the bias field */
  uint8_t *region; /* 1..5 = measured regions, 0 = other */
  double sigma;    /* per component of the echoes */
} scan;

static void scan_free(scan *s) {
  psp_volume_free(s->water);
  psp_volume_free(s->fat);
  psp_volume_free(s->ip);
  psp_volume_free(s->op);
  free(s->w0);
  free(s->f0);
  free(s->region);
}

static void grid_affine(double a[4][4]) {
  memset(a, 0, sizeof(double) * 16);
  a[0][0] = -2.0;
  a[1][1] = -2.0;
  a[2][2] = 5.0;
  a[3][3] = 1.0;
}

/* Tissue layout: elliptic body (semi-axes 72 x 50 voxels) with a
 * subcutaneous fat ring (8 voxels, S 1200, FF 0.95); inside, a water tissue
 * (S 1000, FF 0.05) holding `nreg` muscle blocks of 18 x 40 voxels with FF
 * reg_ff[r] (S = 1000 + 200 FF), each wrapped in a 3-voxel fat plane (S 1200,
 * FF 0.9) unless `no_planes`; with streaks, 20 % of each block (diagonal
 * bands) has FF + 0.3. Extra features for the IP/OP test: a dark "viscera"
 * band (S 700) and a bright "CSF" disc (S 1100, FF 0). */
typedef struct layout {
  int nreg;
  double reg_ff[5];
  bool streaks;
  bool no_planes;
  bool extras;
  double bias;
  double snr;
  uint64_t seed;
} layout;

#define BLK_W 18
#define BLK_H 40
#define BLK_I0 26
#define BLK_J0 36
#define BLK_STEP 21

static void tissue_at(const layout *L, int i, int j, double *S, double *ff, int *reg) {
  double x = (i - 79.5) / 72.0, y = (j - 55.5) / 50.0;
  *reg = 0;
  if (x * x + y * y > 1.0) {
    *S = 0;
    *ff = 0;
    return;
  }
  double xi = (i - 79.5) / 64.0, yi = (j - 55.5) / 42.0;
  if (xi * xi + yi * yi > 1.0) {
    *S = 1200;
    *ff = 0.95;
    return;
  }
  *S = 1000;
  *ff = 0.05;
  if (L->extras) {
    if (j >= 20 && j < 30 && i >= 50 && i < 110) {
      *S = 700;
      return;
    }
    double cx = i - 80.0, cy = j - 90.0;
    if (cx * cx + cy * cy < 9.0) {
      *S = 1100;
      *ff = 0.0;
      return;
    }
  }
  for (int r = 0; r < L->nreg; r++) {
    int i0 = BLK_I0 + r * BLK_STEP, j0 = BLK_J0;
    if (i >= i0 && i < i0 + BLK_W && j >= j0 && j < j0 + BLK_H) {
      *reg = r + 1;
      *ff = L->reg_ff[r];
      if (L->streaks && ((i + j) % 10) < 2) *ff = fmin(*ff + 0.3, 0.95);
      *S = 1000 + 200 * *ff;
      return;
    }
    if (!L->no_planes && i >= i0 - 3 && i < i0 + BLK_W + 3 && j >= j0 - 3 && j < j0 + BLK_H + 3) {
      *S = 1200;
      *ff = 0.9;
      return;
    }
  }
}

static void make_scan(const layout *L, scan *s) {
  memset(s, 0, sizeof *s);
  int64_t dims[3] = {NX, NY, NZ};
  double a[4][4];
  grid_affine(a);
  s->water = psp_volume_create(dims, a, NULL);
  s->fat = psp_volume_create(dims, a, NULL);
  s->ip = psp_volume_create(dims, a, NULL);
  s->op = psp_volume_create(dims, a, NULL);
  int64_t n = (int64_t)NX * NY * NZ;
  s->w0 = calloc((size_t)n, sizeof(float));
  s->f0 = calloc((size_t)n, sizeof(float));
  s->region = calloc((size_t)n, 1);
  assert_non_null(s->water);
  assert_non_null(s->op);
  assert_non_null(s->region);
  s->sigma = L->snr > 0 ? 1000.0 / L->snr : 0.0;
  rng r;
  rng_seed(&r, L->seed);
  for (int k = 0; k < NZ; k++)
    for (int j = 0; j < NY; j++)
      for (int i = 0; i < NX; i++) {
        int64_t v = psp_idx(dims, i, j, k);
        double S, ff;
        int reg;
        tissue_at(L, i, j, &S, &ff, &reg);
        double x = (i - 79.5) / 72.0, y = (j - 55.5) / 50.0, z = (k - 5.5) / 5.5;
        double B = 1.0 + L->bias * (0.5 * y + 0.3 * x - 0.2 * (2 * x * x - 1) + 0.1 * z);
        double W0 = S * (1 - ff) * B, F0 = S * ff * B;
        double nz4[4];
        rng_normal2(&r, &nz4[0], &nz4[1]);
        rng_normal2(&r, &nz4[2], &nz4[3]);
        double ipr = W0 + F0 + s->sigma * nz4[0], ipi = s->sigma * nz4[1];
        double opr = W0 - F0 + s->sigma * nz4[2], opi = s->sigma * nz4[3];
        s->water->data[v] = (float)floor(0.5 * hypot(ipr + opr, ipi + opi) + 0.5);
        s->fat->data[v] = (float)floor(0.5 * hypot(ipr - opr, ipi - opi) + 0.5);
        s->ip->data[v] = (float)floor(hypot(ipr, ipi) + 0.5);
        s->op->data[v] = (float)floor(hypot(opr, opi) + 0.5);
        s->w0[v] = (float)W0;
        s->f0[v] = (float)F0;
        s->region[v] = (uint8_t)reg;
      }
}

typedef struct region_stats {
  double mean, ratio, true_mean, true_ratio;
  int64_t n, n_nan;
} region_stats;

static region_stats measure_region(const scan *s, const psp_ffmap *m, int reg) {
  region_stats st = {0};
  const float *ff = psp_volume_data(psp_ffmap_ff(m));
  const float *w = psp_volume_data(psp_ffmap_water(m));
  const float *f = psp_volume_data(psp_ffmap_fat(m));
  double sff = 0, sf = 0, sfw = 0, tff = 0, tf = 0, tfw = 0;
  for (int64_t v = 0; v < (int64_t)NX * NY * NZ; v++) {
    if (s->region[v] != reg) continue;
    st.n++;
    tff += s->f0[v] / (s->f0[v] + s->w0[v]);
    tf += s->f0[v];
    tfw += s->f0[v] + s->w0[v];
    if (isnan(ff[v])) {
      st.n_nan++;
      continue;
    }
    sff += ff[v];
    sf += f[v];
    sfw += (double)f[v] + w[v];
  }
  st.mean = sff / (double)(st.n - st.n_nan);
  st.ratio = sf / sfw;
  st.true_mean = tff / (double)st.n;
  st.true_ratio = tf / tfw;
  return st;
}

/* ---- tests --------------------------------------------------------------- */

static void test_options_default(void **state) {
  (void)state;
  psp_dixon_options o;
  psp_dixon_options_default(&o);
  assert_true(o.noise_bias_correction);
  assert_true(o.noise_floor_factor == 3.0);
}

static void test_noise_estimate(void **state) {
  (void)state;
  layout L = {.nreg = 1, .reg_ff = {0.1}, .snr = 20, .bias = 0.2, .seed = 11};
  scan s;
  make_scan(&L, &s);
  psp_context *ctx = psp_context_create();
  psp_error *err = NULL;
  psp_ffmap *m = psp_ffmap_from_water_fat(s.water, s.fat, NULL, ctx, &err);
  assert_non_null(m);
  /* water/fat images carry sigma/sqrt(2) per component */
  double want = s.sigma / sqrt(2.0);
  assert_true(fabs(psp_ffmap_noise_sigma(m) - want) < 0.05 * want);
  assert_true(fabs(psp_ffmap_signal_floor(m) - 3.0 * s.sigma) < 0.05 * 3.0 * s.sigma);
  assert_string_equal(psp_ffmap_source(m), "water+fat");
  /* background voxels: no signal */
  const float *ff = psp_volume_data(psp_ffmap_ff(m));
  int64_t nan_bg = 0, n_bg = 0;
  for (int64_t v = 0; v < NX * NY; v++) {
    if (s.w0[v] + s.f0[v] > 0) continue;
    n_bg++;
    nan_bg += isnan(ff[v]);
  }
  assert_true(nan_bg > 0.99 * (double)n_bg);
  assert_int_equal(psp_context_warning_count(ctx), 0);
  psp_ffmap_free(m);

  /* in-phase / opposed-phase: sigma of the echoes */
  m = psp_ffmap_from_ipop(s.ip, s.op, NULL, ctx, &err);
  assert_non_null(m);
  assert_true(fabs(psp_ffmap_noise_sigma(m) - s.sigma) < 0.05 * s.sigma);
  psp_ffmap_free(m);
  psp_context_free(ctx);
  scan_free(&s);
}

static void test_masked_background(void **state) {
  (void)state;
  layout L = {.nreg = 1, .reg_ff = {0.1}, .snr = 20, .seed = 12};
  scan s;
  make_scan(&L, &s);
  for (int64_t v = 0; v < (int64_t)NX * NY * NZ; v++)
    if (s.w0[v] + s.f0[v] == 0) s.water->data[v] = s.fat->data[v] = 0;
  psp_context *ctx = psp_context_create();
  psp_error *err = NULL;
  psp_ffmap *m = psp_ffmap_from_water_fat(s.water, s.fat, NULL, ctx, &err);
  assert_non_null(m);
  assert_true(psp_ffmap_noise_sigma(m) == 0.0);
  assert_true(psp_ffmap_signal_floor(m) > 0.0);
  assert_true(psp_context_warning_count(ctx) >= 1);
  assert_non_null(strstr(psp_context_warning(ctx, 0), "skipped"));
  assert_non_null(
      strstr(psp_context_warning(ctx, 0), "the background is masked (mostly exactly 0)"));
  const float *ff = psp_volume_data(psp_ffmap_ff(m));
  for (int64_t v = 0; v < (int64_t)NX * NY * NZ; v++) {
    if (s.w0[v] + s.f0[v] == 0)
      assert_true(isnan(ff[v]));
    else if (s.region[v])
      assert_false(isnan(ff[v]));
  }
  psp_ffmap_free(m);
  psp_context_free(ctx);
  scan_free(&s);
}

/* Region FF (mean of voxel FF and sum F / sum (F+W)) within tol_pp of the
 * truth for FF 0..0.6 at SNR 20 and 50; returns the worst error seen. */
static double accuracy_sweep(bool streaks, bool planes, bool correct, double tol_pp,
                             bool expect_pass) {
  const double ffs[] = {0.0, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6};
  const int nff = (int)(sizeof ffs / sizeof ffs[0]);
  const double snrs[] = {20, 50};
  psp_dixon_options o;
  psp_dixon_options_default(&o);
  o.noise_bias_correction = correct;
  double worst = 0;
  int failures = 0;
  for (int si = 0; si < 2; si++) {
    char line[512];
    int len = snprintf(line, sizeof line,
                       "%s%s%s SNR %2.0f  mean/ratio bias (pp):", streaks ? "streaky" : "uniform",
                       planes ? "" : ", no fat planes", correct ? "" : " (uncorrected)", snrs[si]);
    for (int f0 = 0; f0 < nff; f0 += 5) {
      layout L = {.nreg = 5,
                  .streaks = streaks,
                  .no_planes = !planes,
                  .bias = 0.2,
                  .snr = snrs[si],
                  .seed = 100 + (uint64_t)(si * 10 + f0)};
      for (int r = 0; r < 5; r++)
        L.reg_ff[r] = ffs[f0 + r];
      scan s;
      make_scan(&L, &s);
      psp_error *err = NULL;
      psp_ffmap *m = psp_ffmap_from_water_fat(s.water, s.fat, &o, NULL, &err);
      assert_non_null(m);
      for (int r = 0; r < 5; r++) {
        region_stats st = measure_region(&s, m, r + 1);
        double em = 100 * (st.mean - st.true_mean), er = 100 * (st.ratio - st.true_ratio);
        len += snprintf(line + len, sizeof line - (size_t)len, " %.2f:%+.2f/%+.2f", ffs[f0 + r], em,
                        er);
        worst = fmax(worst, fmax(fabs(em), fabs(er)));
        assert_int_equal(st.n_nan, 0);
        if (fabs(em) >= tol_pp || fabs(er) >= tol_pp) failures++;
      }
      psp_ffmap_free(m);
      scan_free(&s);
    }
    print_message("%s\n", line);
  }
  if (expect_pass) assert_int_equal(failures, 0);
  return worst;
}

static void test_accuracy_uniform(void **state) {
  (void)state;
  accuracy_sweep(false, true, true, 0.5, true);
}

static void test_accuracy_streaky(void **state) {
  (void)state;
  accuracy_sweep(true, true, true, 0.5, true);
}

/* Muscles touching tissue of another low FF without a fat plane between
 * them: the correction window mixes the two near the border (a documented
 * limitation); the error stays bounded. */
static void test_accuracy_no_planes(void **state) {
  (void)state;
  accuracy_sweep(false, false, true, 1.0, true);
}

/* The same sweep without the correction must fail the 0.5 pp target, so the
 * accuracy tests above can fail. */
static void test_uncorrected_is_biased(void **state) {
  (void)state;
  double worst = accuracy_sweep(false, true, false, 0.5, false);
  assert_true(worst > 2.0);
}

static void test_ipop(void **state) {
  (void)state;
  layout L = {.nreg = 5,
              .reg_ff = {0.0, 0.1, 0.2, 0.3, 0.4},
              .extras = true,
              .bias = 0.2,
              .snr = 25,
              .seed = 21};
  scan s;
  make_scan(&L, &s);
  psp_context *ctx = psp_context_create();
  psp_error *err = NULL;
  psp_ffmap *m = psp_ffmap_from_ipop(s.ip, s.op, NULL, ctx, &err);
  assert_non_null(m);
  assert_string_equal(psp_ffmap_source(m), "inphase+opposed-phase");
  int bad = 0;
  for (int r = 0; r < 5; r++) {
    region_stats st = measure_region(&s, m, r + 1);
    print_message("ipop FF %.2f: mean %+.2f pp, ratio %+.2f pp\n", L.reg_ff[r],
                  100 * (st.mean - st.true_mean), 100 * (st.ratio - st.true_ratio));
    bad += fabs(st.mean - st.true_mean) >= 0.01 || fabs(st.ratio - st.true_ratio) >= 0.01;
  }
  /* the subcutaneous ring reads as fat */
  const float *ff = psp_volume_data(psp_ffmap_ff(m));
  int64_t ring = 0, ring_fat = 0;
  for (int64_t v = 0; v < (int64_t)NX * NY * NZ; v++) {
    if (s.f0[v] <= 0.9 * (s.f0[v] + s.w0[v])) continue;
    ring++;
    ring_fat += ff[v] > 0.8;
  }
  print_message("ipop: fat ring %.1f %% read as fat, fat-dominant share %.3f\n",
                100.0 * (double)ring_fat / (double)ring, psp_ffmap_fat_dominant_share(m));
  assert_int_equal(bad, 0);
  assert_true(ring_fat > 0.97 * (double)ring);
  assert_true(psp_ffmap_fat_dominant_share(m) > 0.2);
  psp_plausibility p = psp_ffmap_plausibility(m, ctx);
  print_message("%s\n", p.message);
  assert_true(p.checked);
  assert_true(p.ok);
  assert_int_equal(psp_context_warning_count(ctx), 0);
  psp_ffmap_free(m);
  psp_context_free(ctx);
  scan_free(&s);
}

/* In-phase/opposed-phase with a T1-weighted contrast (fat 2.4 x as bright
 * as muscle on IP, as on dixon-tum01): a fat block wrapped in a two-voxel
 * partial-volume band (40 / 60 % fat by volume: FF 0.61 / 0.76), and a
 * fatty muscle (14 % fat by volume, FF 0.30) three voxels wide between lean
 * muscle and fat, so that every one of its voxels is decided by its
 * in-phase signal (test_phantom_accuracy holds the margin, at a low
 * contrast). The band is fat-dominant, but its voxels have at most 3 pure
 * fat neighbours: the neighbour rule alone read them 1 - FF (0.24 / 0.39);
 * the in-phase signal a mix of the tissues around predicts tells the two
 * readings apart. The fatty muscle must not flip. */
static void mix_tissue(double fat_vol, double *W, double *F) {
  const double Wm = 450 * 0.95, Fm = 450 * 0.05, Wf = 1100 * 0.05, Ff = 1100 * 0.95;
  *W = (1 - fat_vol) * Wm + fat_vol * Wf;
  *F = (1 - fat_vol) * Fm + fat_vol * Ff;
}

static void test_ipop_mixed_band(void **state) {
  (void)state;
  int64_t dims[3] = {NX, NY, NZ}, n = (int64_t)NX * NY * NZ;
  double a[4][4];
  grid_affine(a);
  psp_volume *ip = psp_volume_create(dims, a, NULL), *op = psp_volume_create(dims, a, NULL);
  float *tff = calloc((size_t)n, sizeof *tff);
  uint8_t *kind = calloc((size_t)n, 1); /* 1 band, 2 fatty muscle */
  assert_non_null(ip);
  assert_non_null(op);
  assert_non_null(tff);
  assert_non_null(kind);
  rng r;
  rng_seed(&r, 77);
  const double sigma = 450.0 / 25.0;
  for (int k = 0; k < NZ; k++)
    for (int j = 0; j < NY; j++)
      for (int i = 0; i < NX; i++) {
        int64_t v = psp_idx(dims, i, j, k);
        double x = (i - 79.5) / 72.0, y = (j - 55.5) / 50.0;
        double xi = (i - 79.5) / 64.0, yi = (j - 55.5) / 42.0, fv = 0.0, W = 0, F = 0;
        /* the fat block i 40..59, j 40..71, its band two voxels wide */
        int ob = (i < 40   ? 40 - i
                  : i > 59 ? i - 59
                           : 0),
            oj = (j < 40   ? 40 - j
                  : j > 71 ? j - 71
                           : 0);
        int ring = ob > oj ? ob : oj;
        if (x * x + y * y > 1.0) {
          fv = -1;
        } else if (xi * xi + yi * yi > 1.0 || ring == 0) {
          fv = 1.0;
        } else if (ring <= 2) {
          fv = ring == 1 ? 0.6 : 0.4;
          kind[v] = 1;
        } else if (i >= 100 && i < 103 && j >= 40 && j < 72) {
          fv = 0.136; /* three voxels wide: every one has lean muscle and fat within 3 */
          kind[v] = 2;
        } else if (i >= 103 && i < 109 && j >= 40 && j < 72) {
          fv = 1.0;
        }
        if (fv >= 0) mix_tissue(fv, &W, &F);
        tff[v] = fv >= 0 ? (float)(F / (W + F)) : 0.0f;
        double nz4[4];
        rng_normal2(&r, &nz4[0], &nz4[1]);
        rng_normal2(&r, &nz4[2], &nz4[3]);
        double ipr = W + F + sigma * nz4[0], ipi = sigma * nz4[1];
        double opr = W - F + sigma * nz4[2], opi = sigma * nz4[3];
        ip->data[v] = (float)floor(hypot(ipr, ipi) + 0.5);
        op->data[v] = (float)floor(hypot(opr, opi) + 0.5);
      }
  psp_context *ctx = psp_context_create();
  psp_error *err = NULL;
  psp_ffmap *m = psp_ffmap_from_ipop(ip, op, NULL, ctx, &err);
  assert_non_null(m);
  const float *ff = psp_volume_data(psp_ffmap_ff(m));
  int64_t nb = 0, nb_fat = 0, nm = 0;
  double eb = 0, sm = 0, tm = 0;
  for (int64_t v = 0; v < n; v++) {
    if (kind[v] == 1 && !isnan(ff[v])) {
      nb++;
      nb_fat += ff[v] > 0.5;
      eb += fabs(ff[v] - tff[v]);
    } else if (kind[v] == 2 && !isnan(ff[v])) {
      nm++;
      sm += ff[v];
      tm += tff[v];
    }
  }
  print_message("ipop band: %.1f %% of %lld read fat-dominant, mean |error| %.3f; fatty muscle "
                "%+.2f pp\n",
                100.0 * (double)nb_fat / (double)nb, (long long)nb, eb / (double)nb,
                100.0 * (sm - tm) / (double)nm);
  assert_true(nb_fat >= 0.95 * (double)nb);
  assert_true(eb / (double)nb < 0.05);
  assert_true(fabs(sm - tm) / (double)nm < 0.005);
  psp_ffmap_free(m);
  psp_context_free(ctx);
  psp_volume_free(ip);
  psp_volume_free(op);
  free(tff);
  free(kind);
}

static void test_plausibility(void **state) {
  (void)state;
  layout L = {.nreg = 2, .reg_ff = {0.05, 0.2}, .bias = 0.1, .snr = 30, .seed = 31};
  scan s;
  make_scan(&L, &s);
  psp_context *ctx = psp_context_create();
  psp_error *err = NULL;
  psp_ffmap *m = psp_ffmap_from_water_fat(s.water, s.fat, NULL, ctx, &err);
  assert_non_null(m);
  psp_plausibility p = psp_ffmap_plausibility(m, ctx);
  assert_true(p.checked);
  assert_true(p.ok);
  assert_true(p.subcut_ff_median > 0.85);
  assert_non_null(strstr(p.message, "plausible"));
  psp_ffmap_free(m);
  /* swapped inputs */
  m = psp_ffmap_from_water_fat(s.fat, s.water, NULL, ctx, &err);
  assert_non_null(m);
  size_t nw = psp_context_warning_count(ctx);
  p = psp_ffmap_plausibility(m, ctx);
  assert_true(p.checked);
  assert_false(p.ok);
  assert_true(p.subcut_ff_median < 0.2);
  assert_non_null(strstr(p.message, "swapped"));
  assert_int_equal(psp_context_warning_count(ctx), nw + 1);
  psp_ffmap_free(m);
  psp_context_free(ctx);
  scan_free(&s);
}

/* No body to speak of: the check is skipped, not failed. */
static void test_plausibility_unchecked(void **state) {
  (void)state;
  int64_t dims[3] = {32, 32, 1};
  double a[4][4];
  grid_affine(a);
  psp_volume *v = psp_volume_create(dims, a, NULL);
  for (int j = 14; j < 19; j++)
    for (int i = 14; i < 19; i++)
      v->data[psp_idx(dims, i, j, 0)] = 0.9f;
  psp_error *err = NULL;
  psp_ffmap *m = psp_ffmap_from_ff(v, PSP_FF_FRACTION, NULL, &err);
  assert_non_null(m);
  psp_plausibility p = psp_ffmap_plausibility(m, NULL);
  assert_false(p.checked);
  assert_true(isnan(p.subcut_ff_median));
  assert_non_null(strstr(p.message, "skipped"));
  psp_ffmap_free(m);
  psp_volume_free(v);
}

static void test_from_ff(void **state) {
  (void)state;
  layout L = {.nreg = 1, .reg_ff = {0.1}, .snr = 0, .seed = 41};
  scan s;
  make_scan(&L, &s);
  int64_t dims[3] = {NX, NY, NZ};
  double a[4][4];
  grid_affine(a);
  psp_volume *pct = psp_volume_create(dims, a, NULL);
  for (int64_t v = 0; v < (int64_t)NX * NY * NZ; v++) {
    double t = s.w0[v] + s.f0[v];
    pct->data[v] = t > 0 ? (float)(100.0 * s.f0[v] / t) : 0.0f;
  }
  psp_error *err = NULL;
  psp_ffmap *m = psp_ffmap_from_ff(pct, PSP_FF_PERCENT, NULL, &err);
  assert_non_null(m);
  assert_null(psp_ffmap_water(m));
  assert_null(psp_ffmap_fat(m));
  assert_string_equal(psp_ffmap_source(m), "ff-map");
  const float *ff = psp_volume_data(psp_ffmap_ff(m));
  for (int64_t v = 0; v < (int64_t)NX * NY * NZ; v += 97)
    assert_true(fabsf(ff[v] - 0.01f * pct->data[v]) < 1e-6f);
  psp_plausibility p = psp_ffmap_plausibility(m, NULL);
  assert_true(p.checked && p.ok);
  psp_ffmap_free(m);
  /* NaN = no signal is kept; infinity is an error */
  pct->data[5] = NAN;
  m = psp_ffmap_from_ff(pct, PSP_FF_PERCENT, NULL, &err);
  assert_non_null(m);
  assert_true(isnan(psp_volume_data(psp_ffmap_ff(m))[5]));
  psp_ffmap_free(m);
  pct->data[5] = INFINITY;
  assert_null(psp_ffmap_from_ff(pct, PSP_FF_PERCENT, NULL, &err));
  assert_int_equal(psp_error_code(err), PSP_ERR_DATA);
  psp_error_free(err);
  err = NULL;
  pct->data[5] = 0;
  /* stated as a fraction: looks like percent */
  m = psp_ffmap_from_ff(pct, PSP_FF_FRACTION, NULL, &err);
  assert_null(m);
  assert_int_equal(psp_error_code(err), PSP_ERR_DATA);
  assert_non_null(strstr(psp_error_message(err), "looks like percent"));
  psp_error_free(err);
  err = NULL;
  /* a real fraction stated as percent */
  for (int64_t v = 0; v < (int64_t)NX * NY * NZ; v++)
    pct->data[v] *= 0.01f;
  m = psp_ffmap_from_ff(pct, PSP_FF_PERCENT, NULL, &err);
  assert_null(m);
  assert_int_equal(psp_error_code(err), PSP_ERR_DATA);
  assert_non_null(strstr(psp_error_message(err), "looks like a fraction"));
  psp_error_free(err);
  err = NULL;
  m = psp_ffmap_from_ff(pct, PSP_FF_FRACTION, NULL, &err);
  assert_non_null(m);
  psp_ffmap_free(m);
  psp_volume_free(pct);
  scan_free(&s);
}

static void test_errors(void **state) {
  (void)state;
  int64_t d1[3] = {8, 8, 2}, d2[3] = {8, 9, 2};
  double a[4][4];
  grid_affine(a);
  psp_volume *x = psp_volume_create(d1, a, NULL), *y = psp_volume_create(d2, a, NULL);
  psp_error *err = NULL;
  assert_null(psp_ffmap_from_water_fat(x, y, NULL, NULL, &err));
  assert_int_equal(psp_error_code(err), PSP_ERR_GEOMETRY);
  psp_error_free(err);
  err = NULL;
  assert_null(psp_ffmap_from_ipop(x, y, NULL, NULL, &err));
  assert_int_equal(psp_error_code(err), PSP_ERR_GEOMETRY);
  psp_error_free(err);
  err = NULL;
  /* all-zero images: no signal anywhere */
  assert_null(psp_ffmap_from_water_fat(x, x, NULL, NULL, &err));
  assert_int_equal(psp_error_code(err), PSP_ERR_DATA);
  psp_error_free(err);
  err = NULL;
  /* a non-finite voxel (found by the noise estimation's first pass) */
  psp_volume *z = psp_volume_create(d1, a, NULL);
  assert_non_null(z);
  for (int64_t v = 0; v < 128; v++)
    z->data[v] = (float)(v % 17);
  z->data[77] = NAN;
  assert_null(psp_ffmap_from_water_fat(x, z, NULL, NULL, &err));
  assert_int_equal(psp_error_code(err), PSP_ERR_DATA);
  assert_string_equal(psp_error_message(err), "water/fat images contain NaN or infinite values");
  psp_error_free(err);
  err = NULL;
  z->data[77] = INFINITY;
  assert_null(psp_ffmap_from_ipop(z, x, NULL, NULL, &err));
  assert_int_equal(psp_error_code(err), PSP_ERR_DATA);
  assert_string_equal(psp_error_message(err),
                      "in-phase/opposed-phase images contain NaN or infinite values");
  psp_error_free(err);
  err = NULL;
  psp_volume_free(z);
  psp_dixon_options o;
  psp_dixon_options_default(&o);
  o.noise_floor_factor = -1;
  assert_null(psp_ffmap_from_water_fat(x, x, &o, NULL, &err));
  assert_int_equal(psp_error_code(err), PSP_ERR_USAGE);
  psp_error_free(err);
  psp_ffmap_free(NULL);
  psp_volume_free(x);
  psp_volume_free(y);
}

static void test_orientation_kept(void **state) {
  (void)state;
  layout L = {.nreg = 1, .reg_ff = {0.1}, .snr = 30, .seed = 51};
  scan s;
  make_scan(&L, &s);
  psp_orientation o = {{1, 0, 2}, {true, false, true}};
  assert_true(psp_volume_set_orientation(s.water, &o, NULL));
  psp_error *err = NULL;
  psp_ffmap *m = psp_ffmap_from_water_fat(s.water, s.fat, NULL, NULL, &err);
  assert_non_null(m);
  psp_orientation got = psp_volume_orientation(psp_ffmap_ff(m));
  assert_memory_equal(&got, &o, sizeof o);
  psp_ffmap_free(m);
  scan_free(&s);
}

static void test_threads_identical(void **state) {
  (void)state;
  layout L = {
      .nreg = 3, .reg_ff = {0.05, 0.2, 0.4}, .extras = true, .bias = 0.2, .snr = 25, .seed = 61};
  scan s;
  make_scan(&L, &s);
  psp_context *ctx = psp_context_create();
  psp_ffmap *m[2];
  const int threads[2] = {1, 3};
  for (int t = 0; t < 2; t++) {
    psp_context_set_threads(ctx, threads[t]);
    psp_error *err = NULL;
    m[t] = psp_ffmap_from_ipop(s.ip, s.op, NULL, ctx, &err);
    assert_non_null(m[t]);
  }
  size_t bytes = (size_t)NX * NY * NZ * sizeof(float);
  assert_memory_equal(psp_volume_data(psp_ffmap_ff(m[0])), psp_volume_data(psp_ffmap_ff(m[1])),
                      bytes);
  assert_memory_equal(psp_volume_data(psp_ffmap_fat(m[0])), psp_volume_data(psp_ffmap_fat(m[1])),
                      bytes);
  assert_true(psp_ffmap_fat_dominant_share(m[0]) == psp_ffmap_fat_dominant_share(m[1]));
  psp_ffmap_free(m[0]);
  psp_ffmap_free(m[1]);
  psp_context_free(ctx);
  scan_free(&s);
}

/* ---- the correction's window selection against a plain reference ------- */

/* Plain reference of psp_dixon_rician_correct (every voxel at or above
 * skip): the candidates of the 7 x 7 window (centre left out, window order)
 * sorted by (|g_u - g_v|, order), the first 12 (fewer at tiny corners)
 * squared magnitudes added in that order; tab entries only (t < 64). */
typedef struct ref_cand {
  float d;
  int idx;
  float m2;
} ref_cand;

static int ref_cmp(const void *a, const void *b) {
  const ref_cand *x = a, *y = b;
  if (x->d != y->d) return x->d < y->d ? -1 : 1;
  return x->idx - y->idx;
}

static void ref_correct(const float *m, const float *g, float *out, const int64_t d[3],
                        double sigma, const double *tab, const float *s1, const float *s2,
                        double skip) {
  const int64_t nx = d[0], ny = d[1], nz = d[2];
  const double inv_s2 = 1.0 / (sigma * sigma), c0 = sigma * sqrt(0.5 * 3.14159265358979323846);
  for (int64_t k = 0; k < nz; k++)
    for (int64_t j = 0; j < ny; j++)
      for (int64_t i = 0; i < nx; i++) {
        const int64_t v = (k * ny + j) * nx + i;
        if ((double)s1[v] + (s2 ? (double)s2[v] : 0.0) < skip) {
          out[v] = (float)(m[v] - c0);
          continue;
        }
        ref_cand c[48];
        int n = 0;
        for (int64_t dj = -3; dj <= 3; dj++)
          for (int64_t di = -3; di <= 3; di++) {
            const int64_t ii = i + di, jj = j + dj;
            if ((di == 0 && dj == 0) || ii < 0 || jj < 0 || ii >= nx || jj >= ny) continue;
            const int64_t u = (k * ny + jj) * nx + ii;
            c[n].d = fabsf(g[u] - g[v]);
            c[n].idx = n;
            c[n].m2 = m[u] * m[u];
            n++;
          }
        qsort(c, (size_t)n, sizeof c[0], ref_cmp);
        const int kk = n < 12 ? n : 12;
        double s = 0;
        for (int q = 0; q < kk; q++)
          s += c[q].m2;
        const double t = s * inv_s2 / kk - 2.0;
        int b = (int)floor((t - (-2.0)) / 0.2);
        if (b < 0) b = 0;
        assert_true(b < TAB_N); /* (the test keeps t inside the table) */
        out[v] = (float)(m[v] - sigma * tab[b]);
      }
}

/* Fills one slice: mode 0 integer magnitudes with small integer guides
 * (many ties, d* often 0), 1 integer noise about 1000 (uint16-like), 2
 * non-integer magnitudes over many octaves (sums not exact in double: the
 * ordered path), 3 flat patches of one value; g scaled by gscale. */
static void fill_slice(rng *r, float *m, float *g, int64_t np, int mode, double gscale) {
  for (int64_t p = 0; p < np; p++) {
    double u = rng_uniform(r), w = rng_uniform(r), z1, z2;
    rng_normal2(r, &z1, &z2);
    switch (mode) {
    case 0:
      m[p] = (float)floor(60.0 * u);
      g[p] = (float)(floor(8.0 * w) * gscale);
      break;
    case 1:
      m[p] = (float)floor(60.0 + 10.0 * z1 + 0.5);
      g[p] = (float)(floor(1000.0 + 40.0 * z2 + 0.5) * gscale);
      break;
    case 2:
      m[p] = (float)(exp(-12.0 + 16.0 * u) * (1.0 + w));
      g[p] = (float)(z2 * gscale);
      break;
    default:
      m[p] = (float)floor(50.0 * u);
      g[p] = (float)(((p / 13) % 3 == 0 ? 5.0 : floor(40.0 * w)) * gscale);
      break;
    }
  }
}

static void test_correction_exact(void **state) {
  (void)state;
  /* 300 columns: more than one row chunk; corners, edges and interior */
  const int64_t d[3] = {300, 19, 4};
  const int64_t np = d[0] * d[1], n = np * d[2];
  float *m = malloc((size_t)n * sizeof *m), *g = malloc((size_t)n * sizeof *g);
  float *o_ref = malloc((size_t)n * sizeof *o_ref), *o_auto = malloc((size_t)n * sizeof *o_auto);
  float *o_gen = malloc((size_t)n * sizeof *o_gen), *s2 = malloc((size_t)n * sizeof *s2);
  double tab[TAB_N];
  assert_non_null(s2);
  for (int b = 0; b < TAB_N; b++) /* any table: only its use is tested */
    tab[b] = 1.0 / (1.0 + b) - 0.01 * b;
  rng r;
  rng_seed(&r, 77);
  /* key ranges: d* about sigma, far below it, far above it */
  const double gscales[4] = {1.0, 1e-4, 1e4, 0.37};
  for (int cfg = 0; cfg < 8; cfg++) {
    for (int64_t k = 0; k < d[2]; k++)
      fill_slice(&r, m + k * np, g + k * np, np, (int)((k + cfg) % 4), gscales[cfg % 4]);
    for (int64_t v = 0; v < n; v++)
      s2[v] = (float)(100.0 * rng_uniform(&r));
    /* sigma keeps t = mean(m^2) / sigma^2 - 2 inside the table (m < 7 sigma) */
    const double sigma = 16.0 + cfg;
    const double skip = cfg < 4 ? -INFINITY : 60.0;
    const float *sec = cfg % 2 ? s2 : NULL;
    ref_correct(m, g, o_ref, d, sigma, tab, g, sec, skip);
    psp_dixon_rician_correct_with(m, g, o_auto, d, sigma, tab, g, sec, skip, PSP_DIXON_KERNEL_AUTO);
    psp_dixon_rician_correct_with(m, g, o_gen, d, sigma, tab, g, sec, skip,
                                  PSP_DIXON_KERNEL_GENERIC);
    for (int64_t v = 0; v < n; v++) {
      if (memcmp(&o_ref[v], &o_auto[v], sizeof(float)) != 0 ||
          memcmp(&o_ref[v], &o_gen[v], sizeof(float)) != 0)
        fail_msg("config %d voxel %lld: reference %.9g, auto %.9g, portable %.9g", cfg,
                 (long long)v, o_ref[v], o_auto[v], o_gen[v]);
    }
  }
  free(m);
  free(g);
  free(o_ref);
  free(o_auto);
  free(o_gen);
  free(s2);
}

/* At or above 16 sigma a voxel is corrected from its own magnitude
 * (t = M^2 / sigma^2 - 2), whatever its neighbours: on a checkerboard of
 * 20 and 2 sigma the bright voxels get the Rice bias at a = sqrt(398)
 * (asymptotic series 1 / (2a) + 1 / (8a^3), good to 1e-6 here), the dark
 * ones the window's correction (t from bright neighbours: far smaller than
 * their own t = 2 would give). */
static void test_correction_high_snr(void **state) {
  (void)state;
  const int64_t d[3] = {30, 30, 2}, n = d[0] * d[1] * d[2];
  const double sigma = 10.0;
  float *m = malloc((size_t)n * sizeof *m), *g = malloc((size_t)n * sizeof *g);
  float *o = malloc((size_t)n * sizeof *o);
  assert_non_null(o);
  for (int64_t v = 0; v < n; v++) {
    const int64_t i = v % d[0], j = (v / d[0]) % d[1];
    m[v] = (float)(((i + j) % 2 ? 20.0 : 2.0) * sigma);
    g[v] = (float)(100.0 + (double)(v % 7));
  }
  psp_dixon_rician_correct(m, g, o, d, sigma, psp_dixon_rician_table, g, NULL, -INFINITY);
  const double a = sqrt(398.0), bias = sigma * (0.5 / a + 0.125 / (a * a * a));
  for (int64_t v = 0; v < n; v++) {
    if (m[v] > 100.0f)
      assert_float_equal(o[v], m[v] - bias, 2e-4);
    else
      assert_true(o[v] > m[v] - 1.5); /* bright neighbours: < 0.15 sigma (own: 0.37) */
  }
  free(m);
  free(g);
  free(o);
}

/* The AVX2 and portable kernels agree to the bit where test_correction_exact
 * does not reach: windows beyond the table (t >= 64), voxels at or above 16
 * sigma (own magnitude, below and above the a = 40 switch of the bias
 * series), row chunks whose length is no multiple of 4, integer slices
 * (exact sums) and non-integer ones (ordered sums). */
static void test_correction_kernels_agree(void **state) {
  (void)state;
  const int64_t d[3] = {301, 23, 4}, np = d[0] * d[1], n = np * d[2];
  const double sigma = 10.0;
  float *m = malloc((size_t)n * sizeof *m), *g = malloc((size_t)n * sizeof *g);
  float *s2 = malloc((size_t)n * sizeof *s2), *o_auto = malloc((size_t)n * sizeof *o_auto);
  float *o_gen = malloc((size_t)n * sizeof *o_gen);
  assert_non_null(o_gen);
  rng r;
  rng_seed(&r, 1234);
  for (int64_t v = 0; v < n; v++) {
    const double u = rng_uniform(&r), w = rng_uniform(&r);
    /* 0-3, 3-16, 16-40 and 40-200 sigma, in patches (bright neighbours) */
    const int band = (int)((v / 5 + (v / d[0]) / 3) % 4);
    const double lo[4] = {0.0, 3.0, 16.0, 40.0}, hi[4] = {3.0, 16.0, 40.0, 200.0};
    double x = sigma * (lo[band] + (hi[band] - lo[band]) * u);
    if (v / np % 2 == 0) x = floor(x); /* integer slices: exact sums */
    m[v] = (float)x;
    g[v] = (float)(sigma * 8.0 * w);
    s2[v] = (float)(100.0 * rng_uniform(&r));
  }
  for (int cfg = 0; cfg < 4; cfg++) {
    const double skip = cfg < 2 ? -INFINITY : 80.0;
    const float *sec = cfg % 2 ? s2 : NULL;
    psp_dixon_rician_correct_with(m, g, o_auto, d, sigma, psp_dixon_rician_table, g, sec, skip,
                                  PSP_DIXON_KERNEL_AUTO);
    psp_dixon_rician_correct_with(m, g, o_gen, d, sigma, psp_dixon_rician_table, g, sec, skip,
                                  PSP_DIXON_KERNEL_GENERIC);
    for (int64_t v = 0; v < n; v++)
      if (memcmp(&o_auto[v], &o_gen[v], sizeof(float)) != 0)
        fail_msg("config %d voxel %lld (m %.9g): auto %.9g, portable %.9g", cfg, (long long)v, m[v],
                 o_auto[v], o_gen[v]);
  }
  free(m);
  free(g);
  free(s2);
  free(o_auto);
  free(o_gen);
}

/* The compiled correction table (src/dixon/rician_table.c) is the one
 * psp_dixon_correction_table computes (regenerate it with
 * scripts/make_rician_table.c when the method changes). */
static void test_rician_table_compiled(void **state) {
  (void)state;
  double tab[TAB_N];
  psp_error *err = NULL;
  assert_true(psp_dixon_correction_table(tab, &err));
  for (int b = 0; b < TAB_N; b++)
    if (fabs(tab[b] - psp_dixon_rician_table[b]) > 1e-12 * (1.0 + fabs(tab[b])))
      fail_msg("entry %d: computed %.17g, compiled %.17g", b, tab[b], psp_dixon_rician_table[b]);
}

/* The FF and the copies of psp_dixon_fill_ff against the plain formula. */
static void test_fill_ff(void **state) {
  (void)state;
  const int64_t n = 1003; /* not a multiple of the vector width */
  float *w = malloc(n * sizeof *w), *f = malloc(n * sizeof *f), *ff = malloc(n * sizeof *ff);
  float *wc = malloc(n * sizeof *wc), *fc = malloc(n * sizeof *fc);
  assert_non_null(fc);
  rng r;
  rng_seed(&r, 78);
  for (int64_t i = 0; i < n; i++) {
    w[i] = (float)(200.0 * rng_uniform(&r) - 20.0);
    f[i] = (float)(i % 7 == 0 ? 0.0 : 150.0 * rng_uniform(&r));
  }
  const double floor_v = 31.5;
  psp_dixon_fill_ff(w, f, ff, n, floor_v, wc, fc);
  for (int64_t i = 0; i < n; i++) {
    const double s = (double)w[i] + (double)f[i];
    const float want = s >= floor_v ? (float)((double)f[i] / s) : NAN;
    assert_memory_equal(&ff[i], &want, sizeof want);
    assert_true(wc[i] == w[i] && fc[i] == f[i]);
  }
  free(w);
  free(f);
  free(ff);
  free(wc);
  free(fc);
}

/* The noise estimation's passes: the AVX2 kernels (where the CPU has
 * them) and the portable ones give the same counts, extremes and mask, on
 * data with negatives, signed zeros, non-integers, values from 2^23 up and
 * non-finite values; lengths not a multiple of the vector width. */
static void test_passes_kernels(void **state) {
  (void)state;
  const int64_t n = 200003;
  float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
  uint8_t *m1 = malloc((size_t)n), *m2 = malloc((size_t)n);
  assert_non_null(m2);
  rng r;
  rng_seed(&r, 79);
  for (int mode = 0; mode < 3; mode++) {
    for (int64_t i = 0; i < n; i++) {
      const double u = rng_uniform(&r), w = rng_uniform(&r);
      if (mode == 0) { /* integers, some negative, some -0 */
        a[i] = (float)floor(1000.0 * u * u) - (i % 97 == 0 ? 3.0f : 0.0f);
        b[i] = i % 89 == 0 ? -0.0f : (float)floor(500.0 * w);
      } else { /* fractions, large values, tiny values */
        a[i] = (float)(i % 31 == 0 ? 0x1p24 * (1.0 + u) : 300.0 * u + 0.25);
        b[i] = (float)(i % 37 == 0 ? 1e-30 * w : 200.0 * w - (i % 53 == 0 ? 50.0 : 0.0));
      }
    }
    if (mode == 2) {
      a[n / 2] = NAN;
      b[n - 1] = INFINITY;
    }
    double o1[13], o2[13];
    psp_dixon_passes(a, b, n, 150.0, PSP_DIXON_KERNEL_AUTO, o1, m1);
    psp_dixon_passes(a, b, n, 150.0, PSP_DIXON_KERNEL_GENERIC, o2, m2);
    /* non-finite voxels: counted alike (the rest is then not used) */
    assert_true(o1[0] == (mode == 2 ? 2.0 : 0.0) && o2[0] == o1[0]);
    if (mode == 2) continue;
    assert_memory_equal(o1, o2, sizeof o1);
    assert_memory_equal(m1, m2, (size_t)n);
    assert_true(o1[8] > 0 && o1[8] < n); /* some background, not all */
  }
  free(a);
  free(b);
  free(m1);
  free(m2);
}

/* The log histogram of the background mask (src/dixon/loghist.c, no log
 * per voxel) counts bin for bin like the formula evaluated per voxel: on
 * fractional data of wide and narrow range, on sums at and next to the bin
 * edges, and on integer data (table). */
static void test_log_hist_exact(void **state) {
  (void)state;
  const int64_t n = 300007;
  const int nb = PSP_DIXON_LOG_NB;
  float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
  int64_t *ref = malloc(nb * sizeof *ref);
  assert_non_null(ref);
  rng r;
  rng_seed(&r, 83);
  for (int mode = 0; mode < 4; mode++) {
    for (int64_t i = 0; i < n; i++) {
      const double u = rng_uniform(&r), w = rng_uniform(&r);
      if (mode == 0) { /* fractions over many octaves, zeros, negatives */
        a[i] = (float)(i % 7 == 0 ? 0.0 : exp(20.0 * u - 8.0));
        b[i] = (float)(i % 11 == 0 ? -0.5 * w : 300.0 * w * w);
      } else if (mode == 1) { /* a narrow range */
        a[i] = (float)(1000.0 + 0.01 * u);
        b[i] = (float)(0.001 * w);
      } else if (mode == 2) { /* sums at and beside the ideal bin edges */
        const double lmin = log(0.5), lmax = log(4000.0);
        const double edge = exp(lmin + (lmax - lmin) * floor(u * nb) / nb);
        a[i] = i == 0 ? 0.5f : i == 1 ? 4000.0f : (float)edge;
        b[i] = i < 2 ? 0.0f : (float)(i % 3 == 0 ? 0.0 : (i % 3 == 1 ? 1e-4 : -1e-4) * edge * w);
      } else { /* integers (uint16-like) */
        a[i] = (float)floor(3000.0 * u * u);
        b[i] = (float)floor(1000.0 * w);
      }
    }
    double smin = INFINITY, smax = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
      const double s = (double)a[i] + (double)b[i];
      if (s > 0) smin = fmin(smin, s), smax = fmax(smax, s);
    }
    const double lmin = log(smin), lmax = log(smax);
    memset(ref, 0, nb * sizeof *ref);
    for (int64_t i = 0; i < n; i++) {
      const double s = (double)a[i] + (double)b[i];
      if (s > 0) {
        int k = (int)((log(s) - lmin) / (lmax - lmin) * nb);
        ref[k < nb ? k : nb - 1]++;
      }
    }
    int64_t *h = psp_dixon_log_hist(a, b, n, smin, smax, lmin, lmax, mode == 3);
    assert_non_null(h);
    assert_memory_equal(h, ref, nb * sizeof *ref);
    free(h);
  }
  free(a);
  free(b);
  free(ref);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_options_default),
      cmocka_unit_test(test_noise_estimate),
      cmocka_unit_test(test_masked_background),
      cmocka_unit_test(test_accuracy_uniform),
      cmocka_unit_test(test_accuracy_streaky),
      cmocka_unit_test(test_accuracy_no_planes),
      cmocka_unit_test(test_uncorrected_is_biased),
      cmocka_unit_test(test_ipop),
      cmocka_unit_test(test_ipop_mixed_band),
      cmocka_unit_test(test_plausibility),
      cmocka_unit_test(test_plausibility_unchecked),
      cmocka_unit_test(test_from_ff),
      cmocka_unit_test(test_errors),
      cmocka_unit_test(test_orientation_kept),
      cmocka_unit_test(test_threads_identical),
      cmocka_unit_test(test_correction_exact),
      cmocka_unit_test(test_rician_table_compiled),
      cmocka_unit_test(test_correction_high_snr),
      cmocka_unit_test(test_correction_kernels_agree),
      cmocka_unit_test(test_fill_ff),
      cmocka_unit_test(test_passes_kernels),
      cmocka_unit_test(test_log_hist_exact),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
