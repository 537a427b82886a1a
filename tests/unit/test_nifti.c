/* Unit tests of the NIfTI loader/writer and of the volume geometry: axis
 * reordering to LPS, exact affines, world positions preserved through
 * orientation variants, datatypes and scaling, NIfTI-2, byte order, and the
 * refusal of malformed files before any large allocation. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/internal.h"

#include <dirent.h>
#include <math.h>
#include <nifti2_io.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

static char scratch[1024];

static const char *tpath(const char *name) {
  static char buf[4][2048];
  static int slot = 0;
  slot = (slot + 1) % 4;
  snprintf(buf[slot], sizeof buf[slot], "%s/%s", scratch, name);
  return buf[slot];
}

typedef struct {
  int64_t dims[5]; /* ndim, nx, ny, nz, nt */
  int dt;
  double pixdim[3];
  int qform_code, sform_code;
  double srow[3][4];
  double slope, inter;
  bool gz;
  bool nifti2;
  bool swap;
  long truncate_to; /* >0: keep only this many bytes */
} spec;

/* Writes a NIfTI file from raw voxel bytes. */
static void write_raw(const char *path, const spec *s, const void *vox, size_t nbytes) {
  int64_t d[8] = {s->dims[0], s->dims[1], s->dims[2], s->dims[3], s->dims[4], 1, 1, 1};
  int64_t ok_dims[8];
  for (int i = 0; i < 8; i++)
    ok_dims[i] = d[i] >= 1 ? d[i] : 1; /* the library refuses <= 0 */
  unsigned char buf[1024];
  size_t hsize;
  if (!s->nifti2) {
    nifti_1_header *h = nifti_make_new_n1_header(ok_dims, s->dt);
    for (int i = 0; i < 8; i++)
      h->dim[i] = (short)d[i];
    h->pixdim[1] = (float)s->pixdim[0];
    h->pixdim[2] = (float)s->pixdim[1];
    h->pixdim[3] = (float)s->pixdim[2];
    h->qform_code = (short)s->qform_code;
    h->sform_code = (short)s->sform_code;
    h->quatern_b = h->quatern_c = h->quatern_d = 0;
    h->pixdim[0] = 1;
    for (int c = 0; c < 4; c++) {
      h->srow_x[c] = (float)s->srow[0][c];
      h->srow_y[c] = (float)s->srow[1][c];
      h->srow_z[c] = (float)s->srow[2][c];
    }
    h->scl_slope = (float)s->slope;
    h->scl_inter = (float)s->inter;
    h->vox_offset = 352;
    memcpy(h->magic, "n+1", 4);
    if (s->swap) nifti_swap_as_nifti1(h);
    memcpy(buf, h, 348);
    free(h);
    hsize = 352;
  } else {
    nifti_2_header *h = nifti_make_new_n2_header(ok_dims, s->dt);
    for (int i = 0; i < 8; i++)
      h->dim[i] = d[i];
    h->pixdim[1] = s->pixdim[0];
    h->pixdim[2] = s->pixdim[1];
    h->pixdim[3] = s->pixdim[2];
    h->qform_code = s->qform_code;
    h->sform_code = s->sform_code;
    h->pixdim[0] = 1;
    for (int c = 0; c < 4; c++) {
      h->srow_x[c] = s->srow[0][c];
      h->srow_y[c] = s->srow[1][c];
      h->srow_z[c] = s->srow[2][c];
    }
    h->scl_slope = s->slope;
    h->scl_inter = s->inter;
    h->vox_offset = 544;
    memcpy(h->magic, "n+2\0\r\n\032\n", 8);
    if (s->swap) nifti_swap_as_nifti2(h);
    memcpy(buf, h, 540);
    free(h);
    hsize = 544;
  }
  memset(buf + hsize - 4, 0, 4);
  size_t total = hsize + nbytes;
  unsigned char *all = malloc(total);
  memcpy(all, buf, hsize);
  memcpy(all + hsize, vox, nbytes);
  if (s->truncate_to > 0 && (size_t)s->truncate_to < total) total = (size_t)s->truncate_to;
  if (s->gz) {
    gzFile f = gzopen(path, "wb");
    gzwrite(f, all, (unsigned)total);
    gzclose(f);
  } else {
    FILE *f = fopen(path, "wb");
    fwrite(all, 1, total, f);
    fclose(f);
  }
  free(all);
}

static spec base_spec(int nx, int ny, int nz, int dt) {
  spec s;
  memset(&s, 0, sizeof s);
  s.dims[0] = 3;
  s.dims[1] = nx;
  s.dims[2] = ny;
  s.dims[3] = nz;
  s.dims[4] = 1;
  s.dt = dt;
  s.pixdim[0] = 1.5;
  s.pixdim[1] = 1.5;
  s.pixdim[2] = 4;
  s.sform_code = 1;
  /* LPS voxel axes, as on many scanners */
  s.srow[0][0] = -1.5;
  s.srow[1][1] = -1.5;
  s.srow[2][2] = 4;
  s.srow[0][3] = 100;
  s.srow[1][3] = 50;
  s.srow[2][3] = -20;
  s.slope = 1;
  return s;
}

static psp_volume *load(const char *path, psp_error **err) {
  return psp_nifti_load(path, NULL, NULL, err);
}

static void expect_error(const char *path, psp_status code, const char *fragment) {
  psp_error *err = NULL;
  psp_volume *v = load(path, &err);
  if (v) fail_msg("%s loaded but should have failed with '%s'", path, fragment);
  assert_non_null(err);
  if (psp_error_code(err) != code || !strstr(psp_error_message(err), fragment) ||
      !strstr(psp_error_message(err), path))
    fail_msg("expected code %d with '%s' and the path, got %d: %s", code, fragment,
             psp_error_code(err), psp_error_message(err));
  psp_error_free(err);
}

static void test_datatypes_and_scaling(void **state) {
  (void)state;
  int dts[] = {DT_UINT8, DT_INT16, DT_UINT16, DT_INT32, DT_FLOAT32, DT_FLOAT64};
  for (size_t t = 0; t < sizeof dts / sizeof dts[0]; t++) {
    spec s = base_spec(4, 3, 2, dts[t]);
    s.slope = 2.0;
    s.inter = -1.0;
    s.gz = t % 2;
    unsigned char vox[24 * 8];
    for (int i = 0; i < 24; i++) {
      switch (dts[t]) {
      case DT_UINT8:
        vox[i] = (unsigned char)i;
        break;
      case DT_INT16: {
        int16_t x = (int16_t)(i - 5);
        memcpy(vox + 2 * i, &x, 2);
      } break;
      case DT_UINT16: {
        uint16_t x = (uint16_t)(i * 100);
        memcpy(vox + 2 * i, &x, 2);
      } break;
      case DT_INT32: {
        int32_t x = i * 1000 - 7;
        memcpy(vox + 4 * i, &x, 4);
      } break;
      case DT_FLOAT32: {
        float x = (float)i * 0.25f;
        memcpy(vox + 4 * i, &x, 4);
      } break;
      case DT_FLOAT64: {
        double x = i * 0.125;
        memcpy(vox + 8 * i, &x, 8);
      } break;
      }
    }
    int bytes = dts[t] == DT_UINT8                            ? 1
                : (dts[t] == DT_INT16 || dts[t] == DT_UINT16) ? 2
                : dts[t] == DT_FLOAT64                        ? 8
                                                              : 4;
    const char *p = tpath(s.gz ? "dt.nii.gz" : "dt.nii");
    write_raw(p, &s, vox, (size_t)(24 * bytes));
    psp_error *err = NULL;
    psp_volume *v = load(p, &err);
    if (!v) fail_msg("datatype %d: %s", dts[t], psp_error_message(err));
    const float *d = psp_volume_data(v);
    for (int i = 0; i < 24; i++) {
      double raw = 0;
      switch (dts[t]) {
      case DT_UINT8:
        raw = i;
        break;
      case DT_INT16:
        raw = i - 5;
        break;
      case DT_UINT16:
        raw = i * 100;
        break;
      case DT_INT32:
        raw = i * 1000 - 7;
        break;
      case DT_FLOAT32:
        raw = i * 0.25;
        break;
      case DT_FLOAT64:
        raw = i * 0.125;
        break;
      }
      /* identity orientation here: file order == internal order */
      assert_float_equal(d[i], raw * 2.0 - 1.0, 1e-3);
    }
    psp_volume_free(v);
  }
}

/* A file in every axis order/flip must give the same internal LPS volume,
 * the same affine, and the same world position of every voxel. */
static void test_orientations_roundtrip(void **state) {
  (void)state;
  int64_t dims[3] = {5, 4, 3};
  double a[4][4] = {{-1.2, 0, 0, 30}, {0, -1.1, 0, 20}, {0, 0, 3.5, -10}, {0, 0, 0, 1}};
  psp_error *err = NULL;
  psp_volume *ref = psp_volume_create(dims, a, &err);
  assert_non_null(ref);
  float *d = psp_volume_data_mut(ref);
  for (int64_t i = 0; i < 60; i++)
    d[i] = (float)(i * 7 % 13) + 0.5f;
  int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
  for (int p = 0; p < 6; p++)
    for (int f = 0; f < 8; f++) {
      psp_orientation o;
      for (int ax = 0; ax < 3; ax++) {
        o.file_axis[ax] = perms[p][ax];
        o.flip[ax] = (f >> ax) & 1;
      }
      assert_true(psp_volume_set_orientation(ref, &o, &err));
      const char *path = tpath(f % 2 ? "o.nii" : "o.nii.gz");
      assert_true(psp_nifti_save(ref, path, PSP_DT_FLOAT32, "t", &err));
      psp_volume *back = load(path, &err);
      if (!back) fail_msg("%s", psp_error_message(err));
      psp_orientation ob = psp_volume_orientation(back);
      for (int ax = 0; ax < 3; ax++) {
        assert_int_equal(ob.file_axis[ax], o.file_axis[ax]);
        assert_int_equal(ob.flip[ax], o.flip[ax]);
      }
      assert_int_equal(psp_grid_compare(ref, back, NULL, 0), PSP_GRID_SAME);
      assert_memory_equal(psp_volume_data(ref), psp_volume_data(back), 60 * sizeof(float));
      /* the file slice index of internal slice 0 */
      int64_t fs = psp_volume_file_slice(back, 0);
      assert_int_equal(fs, o.flip[2] ? 2 : 0);
      psp_volume_free(back);
    }
  psp_volume_free(ref);
}

static void test_ras_file_is_reordered(void **state) {
  (void)state;
  spec s = base_spec(3, 2, 2, DT_FLOAT32);
  /* RAS voxel axes: i -> right, j -> anterior, k -> superior */
  s.srow[0][0] = 2;
  s.srow[1][1] = 2;
  s.srow[2][2] = 5;
  s.srow[0][3] = -2;
  s.srow[1][3] = -1;
  s.srow[2][3] = 0;
  float vox[12];
  for (int i = 0; i < 12; i++)
    vox[i] = (float)i;
  write_raw(tpath("ras.nii"), &s, vox, sizeof vox);
  psp_error *err = NULL;
  psp_volume *v = load(tpath("ras.nii"), &err);
  assert_non_null(v);
  char code[4];
  psp_orientation_code(v, code);
  assert_string_equal(code, "RAS");
  double aff[4][4];
  psp_volume_affine(v, aff);
  /* internal i points left: -x */
  assert_true(aff[0][0] < 0);
  assert_true(aff[1][1] < 0);
  assert_true(aff[2][2] > 0);
  /* internal voxel 0 = file voxel (2,1,0) = value 2 + 1*3 = 5 */
  assert_float_equal(psp_volume_data(v)[0], 5.0f, 0);
  /* its world position is the file's (2,1,0): x = -2 + 4, y = -1 + 2 */
  assert_float_equal(aff[0][3], 2.0, 1e-9);
  assert_float_equal(aff[1][3], 1.0, 1e-9);
  assert_float_equal(psp_volume_pixel_area(v), 4.0, 1e-9);
  assert_float_equal(psp_volume_voxel_volume(v), 20.0, 1e-9);
  psp_volume_free(v);
}

static void test_nifti2_and_big_endian(void **state) {
  (void)state;
  for (int variant = 0; variant < 3; variant++) {
    spec s = base_spec(4, 3, 2, DT_INT16);
    s.nifti2 = variant != 1;
    s.swap = variant >= 1;
    int16_t vox[24];
    for (int i = 0; i < 24; i++) {
      vox[i] = (int16_t)(i * 3 - 10);
      if (s.swap) vox[i] = (int16_t)__builtin_bswap16((uint16_t)vox[i]);
    }
    write_raw(tpath("n2.nii.gz"), &s, vox, sizeof vox);
    psp_error *err = NULL;
    psp_volume *v = load(tpath("n2.nii.gz"), &err);
    if (!v) fail_msg("variant %d: %s", variant, psp_error_message(err));
    for (int i = 0; i < 24; i++)
      assert_float_equal(psp_volume_data(v)[i], i * 3 - 10, 0);
    psp_volume_free(v);
  }
}

static void test_4d_needs_volume(void **state) {
  (void)state;
  spec s = base_spec(2, 2, 2, DT_FLOAT32);
  s.dims[0] = 4;
  s.dims[4] = 3;
  float vox[24];
  for (int i = 0; i < 24; i++)
    vox[i] = (float)i;
  write_raw(tpath("4d.nii"), &s, vox, sizeof vox);
  expect_error(tpath("4d.nii"), PSP_ERR_USAGE, "--volume");
  psp_load_options o = {.volume_index = 2};
  psp_error *err = NULL;
  psp_volume *v = psp_nifti_load(tpath("4d.nii"), &o, NULL, &err);
  assert_non_null(v);
  assert_float_equal(psp_volume_data(v)[0], 16.0f, 0);
  psp_volume_free(v);
  o.volume_index = 3;
  v = psp_nifti_load(tpath("4d.nii"), &o, NULL, &err);
  assert_null(v);
  assert_int_equal(psp_error_code(err), PSP_ERR_USAGE);
  psp_error_free(err);
}

static void test_malformed(void **state) {
  (void)state;
  float vox[24] = {0};
  spec s = base_spec(4, 3, 2, DT_FLOAT32);
  s.truncate_to = 352 + 40;
  write_raw(tpath("trunc.nii"), &s, vox, sizeof vox);
  expect_error(tpath("trunc.nii"), PSP_ERR_FORMAT, "truncated");
  s.gz = true;
  write_raw(tpath("trunc.nii.gz"), &s, vox, sizeof vox);
  expect_error(tpath("trunc.nii.gz"), PSP_ERR_FORMAT, "truncated");
  /* a gzip stream cut in the middle */
  {
    spec g = base_spec(40, 30, 20, DT_FLOAT32);
    g.gz = true;
    size_t n = 40 * 30 * 20;
    float *big = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
      big[i] = (float)(i % 977);
    write_raw(tpath("cut.nii.gz"), &g, big, n * sizeof(float));
    free(big);
    size_t len;
    unsigned char *bytes = psp_read_file(tpath("cut.nii.gz"), &len, 0, NULL);
    FILE *f = fopen(tpath("cut.nii.gz"), "wb");
    fwrite(bytes, 1, len / 2, f);
    fclose(f);
    free(bytes);
    expect_error(tpath("cut.nii.gz"), PSP_ERR_FORMAT, "ends early");
  }
  FILE *f = fopen(tpath("garbage.nii.gz"), "wb");
  fputs("\x1f\x8b this is not deflate data at all, sorry", f);
  fclose(f);
  expect_error(tpath("garbage.nii.gz"), PSP_ERR_FORMAT, "gzip");
  f = fopen(tpath("text.nii"), "wb");
  for (int i = 0; i < 100; i++)
    fputs("hello world ", f);
  fclose(f);
  expect_error(tpath("text.nii"), PSP_ERR_FORMAT, "not a NIfTI");
  f = fopen(tpath("empty.nii"), "wb");
  fclose(f);
  expect_error(tpath("empty.nii"), PSP_ERR_FORMAT, "empty");
  expect_error(tpath("does-not-exist.nii"), PSP_ERR_IO, "cannot open");
  mkdir(tpath("adir.nii"), 0777);
  expect_error(tpath("adir.nii"), PSP_ERR_IO, "folder");

  /* absurd dimensions: refused from the header, the data is not there */
  spec h = base_spec(30000, 30000, 30000, DT_FLOAT32);
  write_raw(tpath("huge.nii"), &h, vox, sizeof vox);
  expect_error(tpath("huge.nii"), PSP_ERR_LIMIT, "exceeds the limit");
  spec z = base_spec(4, 0, 2, DT_FLOAT32);
  write_raw(tpath("zero.nii"), &z, vox, sizeof vox);
  expect_error(tpath("zero.nii"), PSP_ERR_FORMAT, "dimension 2 has size 0");
  spec neg = base_spec(4, -3, 2, DT_FLOAT32);
  write_raw(tpath("neg.nii"), &neg, vox, sizeof vox);
  expect_error(tpath("neg.nii"), PSP_ERR_FORMAT, "dimension 2");

  spec c = base_spec(4, 3, 2, DT_COMPLEX64);
  float cv[48] = {0};
  write_raw(tpath("complex.nii"), &c, cv, sizeof cv);
  expect_error(tpath("complex.nii"), PSP_ERR_UNSUPPORTED, "complex64");

  /* zero spacing with a qform; singular sform */
  spec q = base_spec(4, 3, 2, DT_FLOAT32);
  q.sform_code = 0;
  q.qform_code = 1;
  q.pixdim[1] = 0;
  write_raw(tpath("zerospacing.nii"), &q, vox, sizeof vox);
  expect_error(tpath("zerospacing.nii"), PSP_ERR_GEOMETRY, "spacing must be > 0");
  spec sg = base_spec(4, 3, 2, DT_FLOAT32);
  sg.srow[1][1] = 0;
  write_raw(tpath("singular.nii"), &sg, vox, sizeof vox);
  expect_error(tpath("singular.nii"), PSP_ERR_GEOMETRY, "singular");

  /* NaN and Inf voxels */
  float bad[24] = {0};
  bad[7] = NAN;
  bad[9] = INFINITY;
  spec b = base_spec(4, 3, 2, DT_FLOAT32);
  write_raw(tpath("nan.nii"), &b, bad, sizeof bad);
  expect_error(tpath("nan.nii"), PSP_ERR_DATA, "NaN");
  /* NaN allowed for FF maps, Inf never */
  psp_load_options o = {.volume_index = -1, .allow_nan = true};
  psp_error *err = NULL;
  assert_null(psp_nifti_load(tpath("nan.nii"), &o, NULL, &err));
  psp_error_free(err);
  err = NULL;
  bad[9] = 0;
  write_raw(tpath("nan2.nii"), &b, bad, sizeof bad);
  psp_volume *v = psp_nifti_load(tpath("nan2.nii"), &o, NULL, &err);
  assert_non_null(v);
  psp_volume_free(v);
}

/* The loader's paths agree: a gzip file is inflated into the float buffer
 * and converted in place, a plain one converted from the file's bytes; the
 * unscaled integer and float32 loops have their own fast forms. Every
 * datatype, scaled or not, over several conversion blocks: the same floats,
 * the same negative count and minimum, the same first NaN / Inf. */
static void test_load_paths_agree(void **state) {
  (void)state;
  enum { NX = 70, NY = 50, NZ = 9, N = NX * NY * NZ };
  int dts[] = {DT_UINT8, DT_INT16, DT_UINT16, DT_INT32, DT_FLOAT32, DT_FLOAT64};
  unsigned char *vox = malloc((size_t)N * 8);
  float *expect = malloc((size_t)N * sizeof(float));
  for (size_t t = 0; t < sizeof dts / sizeof dts[0]; t++)
    for (int scaled = 0; scaled < 2; scaled++) {
      const int dt = dts[t];
      const int bytes = dt == DT_UINT8                        ? 1
                        : (dt == DT_INT16 || dt == DT_UINT16) ? 2
                        : dt == DT_FLOAT64                    ? 8
                                                              : 4;
      for (int i = 0; i < N; i++) {
        const int q = (i * 7919) % 251;
        double raw = 0;
        switch (dt) {
        case DT_UINT8: {
          unsigned char x = (unsigned char)q;
          vox[i] = x;
          raw = x;
        } break;
        case DT_INT16: {
          int16_t x = (int16_t)((i % 5000 == 17) ? -(q + 1) * 100 : q * 123);
          memcpy(vox + 2 * i, &x, 2);
          raw = x;
        } break;
        case DT_UINT16: {
          uint16_t x = (uint16_t)(q * 261);
          memcpy(vox + 2 * i, &x, 2);
          raw = x;
        } break;
        case DT_INT32: {
          int32_t x = q * 1000 - 7;
          memcpy(vox + 4 * i, &x, 4);
          raw = x;
        } break;
        case DT_FLOAT32: {
          float x = (i % 4001 == 3) ? -(float)q * 0.5f : (float)q * 0.25f;
          memcpy(vox + 4 * i, &x, 4);
          raw = x;
        } break;
        case DT_FLOAT64: {
          double x = (i % 4001 == 3) ? -q * 0.5 : q * 0.125;
          memcpy(vox + 8 * i, &x, 8);
          raw = x;
        } break;
        }
        expect[i] = scaled ? (float)(raw * 2.0 - 1.0) : (float)raw;
      }
      spec s = base_spec(NX, NY, NZ, dt);
      s.slope = scaled ? 2.0 : 1.0;
      s.inter = scaled ? -1.0 : 0.0;
      for (int gz = 0; gz < 2; gz++) {
        s.gz = gz;
        const char *p = tpath(gz ? "paths.nii.gz" : "paths.nii");
        write_raw(p, &s, vox, (size_t)N * (size_t)bytes);
        psp_error *err = NULL;
        psp_volume *v = load(p, &err);
        if (!v) fail_msg("datatype %d scaled %d gz %d: %s", dt, scaled, gz, psp_error_message(err));
        assert_memory_equal(psp_volume_data(v), expect, (size_t)N * sizeof(float));
        psp_volume_free(v);
        /* as a magnitude image: the negatives counted and the minimum found */
        int64_t n_neg = 0;
        float vmin = 0;
        for (int i = 0; i < N; i++)
          if (expect[i] < 0) {
            n_neg++;
            vmin = expect[i] < vmin ? expect[i] : vmin;
          }
        psp_load_options o = {.volume_index = -1, .magnitude = true};
        v = psp_nifti_load(p, &o, NULL, &err);
        if ((double)n_neg > 0.001 * N) {
          assert_null(v);
          char want[128];
          snprintf(want, sizeof want, "%lld of %d voxels are negative (down to %g)",
                   (long long)n_neg, N, (double)vmin);
          if (!strstr(psp_error_message(err), want))
            fail_msg("datatype %d scaled %d gz %d: '%s' lacks '%s'", dt, scaled, gz,
                     psp_error_message(err), want);
          psp_error_free(err);
          err = NULL;
        } else {
          assert_non_null(v);
          psp_volume_free(v);
        }
      }
    }
  /* float32 NaN / Inf in a later block: counted, the first one located */
  float *fv = (float *)(void *)vox;
  for (int i = 0; i < N; i++)
    fv[i] = (float)(i % 97);
  fv[20000] = NAN;
  fv[30001] = NAN;
  fv[25000] = INFINITY;
  fv[9999] = -INFINITY;
  spec s = base_spec(NX, NY, NZ, DT_FLOAT32);
  for (int gz = 0; gz < 2; gz++) {
    s.gz = gz;
    const char *p = tpath(gz ? "nanpos.nii.gz" : "nanpos.nii");
    write_raw(p, &s, vox, (size_t)N * 4);
    psp_error *err = NULL;
    assert_null(load(p, &err));
    char want[160];
    snprintf(want, sizeof want, "2 voxels are NaN and 2 infinite (first at voxel %d,%d,%d)",
             9999 % NX, (9999 / NX) % NY, 9999 / (NX * NY));
    if (!strstr(psp_error_message(err), want))
      fail_msg("gz %d: '%s' lacks '%s'", gz, psp_error_message(err), want);
    psp_error_free(err);
    err = NULL;
    /* NaN allowed (FF maps): the first infinite voxel is reported */
    fv[9999] = 7;
    fv[25000] = 7;
    write_raw(p, &s, vox, (size_t)N * 4);
    psp_load_options o = {.volume_index = -1, .allow_nan = true};
    psp_volume *v = psp_nifti_load(p, &o, NULL, &err);
    assert_non_null(v);
    assert_true(isnan(psp_volume_data(v)[20000]) && isnan(psp_volume_data(v)[30001]));
    assert_float_equal(psp_volume_data(v)[20001], (float)(20001 % 97), 0);
    psp_volume_free(v);
    fv[9999] = -INFINITY;
    fv[25000] = INFINITY;
  }
  free(vox);
  free(expect);
}

/* The reference of the writer: the file's voxels scattered from the internal
 * order (psp_volume_file_layout) and converted as the NIfTI types need. */
static unsigned char *expected_file_voxels(const psp_volume *v, int dt, size_t *nbytes) {
  int64_t fdims[3], stride[3], offset;
  double fa[4][4];
  psp_volume_file_layout(v, fdims, fa, stride, &offset);
  int64_t d[3];
  psp_volume_dims(v, d);
  const int bytes = dt == DT_UINT8 ? 1 : (dt == DT_INT16 || dt == DT_UINT16) ? 2 : 4;
  *nbytes = (size_t)(d[0] * d[1] * d[2]) * (size_t)bytes;
  unsigned char *out = malloc(*nbytes);
  const float *src = psp_volume_data(v);
  for (int64_t k = 0; k < d[2]; k++)
    for (int64_t j = 0; j < d[1]; j++)
      for (int64_t i = 0; i < d[0]; i++) {
        const float x = src[(k * d[1] + j) * d[0] + i];
        const int64_t f = offset + i * stride[0] + j * stride[1] + k * stride[2];
        if (dt == DT_FLOAT32) {
          memcpy(out + f * 4, &x, 4);
        } else if (dt == DT_UINT8) {
          out[f] = isnan(x) ? 0 : x <= 0 ? 0 : x >= 255 ? 255 : (uint8_t)lrintf(x);
        } else if (dt == DT_INT16) {
          int16_t y = isnan(x) ? 0 : x <= -32768 ? -32768 : x >= 32767 ? 32767 : (int16_t)lrintf(x);
          memcpy(out + f * 2, &y, 2);
        } else {
          uint16_t y = isnan(x) ? 0 : x <= 0 ? 0 : x >= 65535 ? 65535 : (uint16_t)lrintf(x);
          memcpy(out + f * 2, &y, 2);
        }
      }
  return out;
}

/* The uncompressed sizes of the gzip members of a file; their count. */
static int gzip_members(const char *path, size_t *isize, int max) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  fseek(f, 0, SEEK_END);
  size_t len = (size_t)ftell(f);
  rewind(f);
  unsigned char *in = malloc(len), *out = malloc(1 << 22);
  assert_int_equal(fread(in, 1, len, f), len);
  fclose(f);
  int n = 0;
  size_t pos = 0;
  while (pos < len && n < max) {
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    assert_int_equal(inflateInit2(&zs, 16 + 15), Z_OK);
    zs.next_in = in + pos;
    zs.avail_in = (uInt)(len - pos);
    int rc;
    do {
      zs.next_out = out;
      zs.avail_out = 1 << 22;
      rc = inflate(&zs, Z_NO_FLUSH);
    } while (rc == Z_OK);
    assert_int_equal(rc, Z_STREAM_END);
    isize[n++] = zs.total_out;
    pos += zs.total_in;
    inflateEnd(&zs);
  }
  free(in);
  free(out);
  return n;
}

/* The writer streams the file chunk by chunk (gzip members of 2 MiB of the
 * file, several per volume here) from the internal grid: in every datatype
 * and orientation the bytes are those of the whole-volume scatter, the
 * members 2 MiB each but the last (an empty one when the file is a whole
 * number of chunks). */
static void test_save_streams_file_order(void **state) {
  (void)state;
  int64_t dims[3] = {150, 122, 31};
  const int64_t n = dims[0] * dims[1] * dims[2];
  double a[4][4] = {{-1.2, 0, 0, 30}, {0, -1.1, 0, 20}, {0, 0, 3.5, -10}, {0, 0, 0, 1}};
  psp_error *err = NULL;
  psp_volume *v = psp_volume_create(dims, a, &err);
  assert_non_null(v);
  float *d = psp_volume_data_mut(v);
  for (int64_t i = 0; i < n; i++) {
    const int q = (int)((i * 2654435761u) % 100003);
    d[i] = q % 11 == 0   ? NAN
           : q % 13 == 0 ? -(float)q
           : q % 7 == 0  ? (float)(q % 300) + 0.5f /* ties */
                         : (float)q * 0.7f;
  }
  const int orients[3][6] = {{0, 1, 2, 0, 0, 0}, {0, 1, 2, 1, 1, 0}, {2, 0, 1, 0, 1, 1}};
  const psp_dtype types[4] = {PSP_DT_FLOAT32, PSP_DT_UINT8, PSP_DT_INT16, PSP_DT_UINT16};
  const int nifti_types[4] = {DT_FLOAT32, DT_UINT8, DT_INT16, DT_UINT16};
  for (int o = 0; o < 3; o++) {
    psp_orientation or ;
    for (int ax = 0; ax < 3; ax++) {
      or.file_axis[ax] = orients[o][ax];
      or.flip[ax] = orients[o][3 + ax];
    }
    assert_true(psp_volume_set_orientation(v, & or, &err));
    for (int t = 0; t < 4; t++) {
      size_t nbytes;
      unsigned char *want = expected_file_voxels(v, nifti_types[t], &nbytes);
      for (int gz = 0; gz < 2; gz++) {
        const char *p = tpath(gz ? "stream.nii.gz" : "stream.nii");
        if (!psp_nifti_save(v, p, types[t], "t", &err)) fail_msg("%s", psp_error_message(err));
        gzFile f = gzopen(p, "rb");
        assert_non_null(f);
        unsigned char *got = malloc(352 + nbytes + 1);
        int r = gzread(f, got, (unsigned)(352 + nbytes + 1));
        gzclose(f);
        assert_int_equal(r, (int)(352 + nbytes));
        nifti_1_header h;
        memcpy(&h, got, sizeof h);
        assert_int_equal(h.datatype, nifti_types[t]);
        assert_float_equal(h.vox_offset, 352, 0);
        if (memcmp(got + 352, want, nbytes) != 0)
          fail_msg("orientation %d type %d gz %d: voxel bytes differ", o, t, gz);
        free(got);
        if (gz) {
          size_t isize[64];
          const int m = gzip_members(p, isize, 64);
          const size_t total = 352 + nbytes, chunk = (size_t)1 << 21;
          assert_int_equal(m, (int)(total / chunk + 1));
          for (int i = 0; i < m; i++)
            assert_int_equal(isize[i], i < m - 1 ? chunk : total % chunk);
        }
      }
      free(want);
    }
  }
  psp_volume_free(v);
  /* header + voxels exactly one chunk: a second, empty member */
  int64_t d1[3] = {200, 2621, 1};
  v = psp_volume_create(d1, a, &err);
  assert_non_null(v);
  const char *p = tpath("exact.nii.gz");
  assert_true(psp_nifti_save(v, p, PSP_DT_FLOAT32, "t", &err));
  size_t isize[4];
  assert_int_equal(gzip_members(p, isize, 4), 2);
  assert_int_equal(isize[0], (size_t)1 << 21);
  assert_int_equal(isize[1], 0);
  psp_volume_free(v);
}

/* PSP_SYNC_LATER: the files are complete under their names (no temporary
 * file left) before psp_sync_folder, which then syncs them all; a folder
 * that is not there is an error naming it. */
static void test_deferred_sync(void **state) {
  (void)state;
  char dir[2048];
  snprintf(dir, sizeof dir, "%s", tpath("later"));
  psp_error *err = NULL;
  assert_true(psp_mkdir_p(dir, &err));
  int64_t dims[3] = {40, 30, 3};
  double a[4][4] = {{-1, 0, 0, 0}, {0, -1, 0, 0}, {0, 0, 4, 0}, {0, 0, 0, 1}};
  psp_volume *v = psp_volume_create(dims, a, &err);
  assert_non_null(v);
  float *d = psp_volume_data_mut(v);
  for (int64_t i = 0; i < 40 * 30 * 3; i++)
    d[i] = (float)(i % 97) * 0.25f;
  char p1[2100], p2[2100];
  snprintf(p1, sizeof p1, "%s/a.txt", dir);
  snprintf(p2, sizeof p2, "%s/v.nii.gz", dir);
  assert_true(psp_write_file(p1, "hello\n", 6, PSP_SYNC_LATER, &err));
  if (!psp_nifti_save_sync(v, p2, PSP_DT_FLOAT32, "t", PSP_SYNC_LATER, &err))
    fail_msg("%s", psp_error_message(err));
  DIR *dd = opendir(dir);
  assert_non_null(dd);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(dd)) != NULL)
    if (e->d_name[0] != '.' || strstr(e->d_name, ".tmp")) {
      assert_true(!strcmp(e->d_name, "a.txt") || !strcmp(e->d_name, "v.nii.gz"));
      n++;
    }
  closedir(dd);
  assert_int_equal(n, 2);
  size_t len = 0;
  unsigned char *txt = psp_read_file(p1, &len, 100, &err);
  assert_non_null(txt);
  assert_int_equal(len, 6);
  assert_memory_equal(txt, "hello\n", 6);
  free(txt);
  psp_load_options lo = {.volume_index = -1};
  psp_volume *w = psp_nifti_load(p2, &lo, NULL, &err);
  assert_non_null(w);
  assert_memory_equal(psp_volume_data(w), d, sizeof(float) * 40 * 30 * 3);
  psp_volume_free(w);
  assert_true(psp_sync_folder(dir, &err));
  char gone[2100];
  snprintf(gone, sizeof gone, "%s/none", dir);
  assert_false(psp_sync_folder(gone, &err));
  assert_non_null(strstr(psp_error_message(err), gone));
  psp_error_free(err);
  psp_volume_free(v);
}

static void test_grid_compare(void **state) {
  (void)state;
  int64_t dims[3] = {4, 4, 2};
  double a[4][4] = {{-1.0185, 0, 0, 10}, {0, -1.0185, 0, 5}, {0, 0, 4, 0}, {0, 0, 0, 1}};
  double b[4][4] = {{-1.01852, 0, 0, 10}, {0, -1.01852, 0, 5}, {0, 0, 4, 0}, {0, 0, 0, 1}};
  psp_volume *va = psp_volume_create(dims, a, NULL), *vb = psp_volume_create(dims, b, NULL);
  char why[512];
  assert_int_equal(psp_grid_compare(va, vb, why, sizeof why), PSP_GRID_SAME);
  b[0][3] = -190;
  psp_volume_free(vb);
  vb = psp_volume_create(dims, b, NULL);
  assert_int_equal(psp_grid_compare(va, vb, why, sizeof why), PSP_GRID_ORIGIN_DIFFERS);
  assert_non_null(strstr(why, "origins differ"));
  b[2][2] = 5;
  psp_volume_free(vb);
  vb = psp_volume_create(dims, b, NULL);
  assert_int_equal(psp_grid_compare(va, vb, why, sizeof why), PSP_GRID_DIFFERENT);
  assert_non_null(strstr(why, "spacing"));
  int64_t d2[3] = {4, 4, 3};
  psp_volume *vc = psp_volume_create(d2, a, NULL);
  assert_int_equal(psp_grid_compare(va, vc, why, sizeof why), PSP_GRID_DIFFERENT);
  assert_non_null(strstr(why, "dimensions"));
  psp_volume_free(va);
  psp_volume_free(vb);
  psp_volume_free(vc);
}

int main(void) {
  snprintf(scratch, sizeof scratch, "%s", PSP_SCRATCH_DIR);
  psp_mkdir_p(scratch, NULL);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_datatypes_and_scaling),
      cmocka_unit_test(test_orientations_roundtrip),
      cmocka_unit_test(test_ras_file_is_reordered),
      cmocka_unit_test(test_nifti2_and_big_endian),
      cmocka_unit_test(test_4d_needs_volume),
      cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_grid_compare),
      cmocka_unit_test(test_load_paths_agree),
      cmocka_unit_test(test_save_streams_file_order),
      cmocka_unit_test(test_deferred_sync),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
