/* Unit tests of the QC images on a small synthetic case, read back with
 * libpng: image size from the spacing (non-square pixels), 1-pixel outlines
 * in each label's colour and not filled, patient right on the image's left,
 * FF grey levels and the no-signal colour, landmark crosses, the body's
 * outline (not along the panel's edge; its legend), status text,
 * file names from the file's own slice index, grid mismatch refused,
 * byte-identical files at 1 and 2 threads, and the indexed PNG against the
 * RGB rendering (psp_qc_render_rgb). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "report/qc_png.h"

#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NX = 20, NY = 16, NZ = 3 };

/* LPS grid: 1.0 mm along i (towards Left), 1.5 mm along j (towards
 * Posterior), 3 mm along k. */
static psp_volume *make_vol(void) {
  int64_t dims[3] = {NX, NY, NZ};
  double a[4][4] = {{-1.0, 0, 0, 10}, {0, -1.5, 0, 20}, {0, 0, 3, -30}, {0, 0, 0, 1}};
  psp_volume *v = psp_volume_create(dims, a, NULL);
  assert_non_null(v);
  return v;
}

static void set_rect(psp_volume *v, int i0, int i1, int j0, int j1, int k, float val) {
  int64_t d[3];
  psp_volume_dims(v, d);
  for (int j = j0; j <= j1; j++)
    for (int i = i0; i <= i1; i++)
      psp_volume_data_mut(v)[psp_idx(d, i, j, k)] = val;
}

typedef struct fixture {
  psp_volume *anat, *ff, *lab;
  psp_qc_slice_marks marks[NZ];
} fixture;

static void make_case(fixture *f) {
  f->anat = make_vol();
  f->ff = make_vol();
  f->lab = make_vol();
  int64_t d[3] = {NX, NY, NZ};
  float *A = psp_volume_data_mut(f->anat), *F = psp_volume_data_mut(f->ff);
  for (int k = 0; k < NZ; k++)
    for (int j = 0; j < NY; j++)
      for (int i = 0; i < NX; i++) {
        A[psp_idx(d, i, j, k)] = (float)(100 + i + j);
        F[psp_idx(d, i, j, k)] = 0.5f;
      }
  F[psp_idx(d, 0, NY - 1, 1)] = NAN; /* no signal in the bottom-left corner */
  /* slice 1: the right muscles at small i (patient right), ES lateral to and
   * touching MF */
  set_rect(f->lab, 2, 5, 4, 9, 1, 4);   /* ES R */
  set_rect(f->lab, 6, 8, 4, 9, 1, 2);   /* MF R, touching ES R */
  set_rect(f->lab, 11, 12, 4, 9, 1, 3); /* ES L */
  set_rect(f->lab, 14, 17, 4, 9, 1, 1); /* MF L, isolated */
  for (int k = 0; k < NZ; k++)
    f->marks[k] = (psp_qc_slice_marks){NAN, NAN, NAN, NAN, NAN, NAN, NAN, 0.0, NULL, NULL, NULL};
  f->marks[1].canal_i = 10;
  f->marks[1].canal_j = 13;
  /* longer than the 824-pixel image is wide (68 characters): wrapped onto a second line */
  f->marks[2].status = "below_sacrum: below the lowest slice where the spine and muscles were "
                       "found (file slice 4)";
  f->marks[0].info = "MF/ES BOUNDARY ON A VISIBLE FAT PLANE: R 0%  L 0%";
  f->marks[2].info = "NOT DRAWN: THE STATUS IS";
}

static void free_case(fixture *f) {
  psp_volume_free(f->anat);
  psp_volume_free(f->ff);
  psp_volume_free(f->lab);
}

typedef struct image {
  uint8_t *rgb;
  int w, h;
} image;

static image read_png(const char *path) {
  png_image pi;
  memset(&pi, 0, sizeof pi);
  pi.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&pi, path)) fail_msg("%s: %s", path, pi.message);
  pi.format = PNG_FORMAT_RGB;
  image im = {malloc(PNG_IMAGE_SIZE(pi)), (int)pi.width, (int)pi.height};
  assert_non_null(im.rgb);
  if (!png_image_finish_read(&pi, NULL, im.rgb, 0, NULL)) fail_msg("%s: %s", path, pi.message);
  return im;
}

static const uint8_t *px(const image *im, int x, int y) {
  assert_true(x >= 0 && y >= 0 && x < im->w && y < im->h);
  return im->rgb + ((size_t)y * (size_t)im->w + (size_t)x) * 3;
}

static bool is_rgb(const uint8_t *p, const uint8_t c[3]) {
  return p[0] == c[0] && p[1] == c[1] && p[2] == c[2];
}

static void path_of(char *out, size_t n, const char *dir, int slice) {
  snprintf(out, n, "%s/slice_%03d.png", dir, slice);
}

static void write_case(const fixture *f, const char *dir, int threads) {
  psp_context *ctx = psp_context_create();
  psp_context_set_threads(ctx, threads);
  psp_error *err = NULL;
  if (!psp_qc_write_pngs(dir, f->anat, f->ff, f->lab, f->marks, 4, ctx, &err))
    fail_msg("%s", psp_error_message(err));
  psp_context_free(ctx);
}

static void test_layout(void **state) {
  (void)state;
  psp_volume *v = make_vol();
  psp_qc_layout L;
  assert_true(psp_qc_layout_for(v, &L, NULL));
  assert_int_equal(L.col_scale, 20); /* ceil(400 / 20) */
  assert_int_equal(L.panel_w, 400);
  assert_int_equal(L.panel_h, 480); /* 16 rows x 20 x 1.5 mm / 1 mm */
  assert_float_equal(L.row_scale, 30.0, 1e-12);
  assert_true(L.panel_x[1] >= L.panel_x[0] + L.panel_w);
  assert_true(L.width >= 2 * L.panel_w && L.height > L.panel_h);
  psp_volume_free(v);

  /* rows finer than columns: the factor grows so no voxel row is dropped */
  int64_t dims[3] = {500, 300, 1};
  double a[4][4] = {{-1.0, 0, 0, 0}, {0, -0.4, 0, 0}, {0, 0, 3, 0}, {0, 0, 0, 1}};
  v = psp_volume_create(dims, a, NULL);
  assert_true(psp_qc_layout_for(v, &L, NULL));
  assert_int_equal(L.col_scale, 3);
  assert_int_equal(L.panel_w, 1500);
  assert_int_equal(L.panel_h, 360);
  psp_volume_free(v);
}

/* The panels zoom on the muscles: the labels' bounding box over all slices
 * plus 25 mm (at least a quarter of the box) around and 30 mm more in front,
 * clamped to the grid; without labels the whole grid. */
static void test_layout_zoom(void **state) {
  (void)state;
  int64_t dims[3] = {200, 200, 3};
  double a[4][4] = {{-1.0, 0, 0, 0}, {0, -1.0, 0, 0}, {0, 0, 4, 0}, {0, 0, 0, 1}};
  psp_volume *v = psp_volume_create(dims, a, NULL);
  psp_volume *lab = psp_volume_create(dims, a, NULL);
  psp_qc_layout L;
  assert_true(psp_qc_layout_zoom(v, lab, &L, NULL)); /* no label: whole grid */
  assert_int_equal(L.i0, 0);
  assert_int_equal(L.crop_w, 200);
  /* label 3 on i 90..109, j 120..139 of slice 1, label 1 at (100, 150) of slice 2 */
  float *d = psp_volume_data_mut(lab);
  for (int64_t j = 120; j < 140; j++)
    for (int64_t i = 90; i < 110; i++)
      d[1 * 200 * 200 + j * 200 + i] = 3;
  d[2 * 200 * 200 + 150 * 200 + 100] = 1;
  assert_true(psp_qc_layout_zoom(v, lab, &L, NULL));
  /* box i 90..109 (20 mm), j 120..150 (31 mm): margins 25 mm; front +30 mm */
  assert_int_equal(L.i0, 65);
  assert_int_equal(L.crop_w, 134 - 65 + 1);
  assert_int_equal(L.j0, 120 - 25 - 30);
  assert_int_equal(L.crop_h, 175 - 65 + 1);
  assert_int_equal(L.col_scale, 6); /* ceil(400 / 70) */
  assert_int_equal(L.panel_w, 70 * 6);
  psp_volume_free(v);
  psp_volume_free(lab);
}

static void test_contours_and_marks(void **state) {
  (void)state;
  fixture f;
  make_case(&f);
  const char *dir = PSP_SCRATCH_DIR "/qc_a";
  write_case(&f, dir, 2);
  psp_qc_layout L;
  assert_true(psp_qc_layout_for(f.anat, &L, NULL));
  char path[512];
  path_of(path, sizeof path, dir, 1);
  image im = read_png(path);
  assert_int_equal(im.w, L.width);
  assert_int_equal(im.h, L.height);
  assert_int_equal(im.w, 3 * 8 + 2 * 400);
  const int fc = 20, rs = 30; /* display pixels per voxel along i and j */
  struct {
    int label, i0, i1, j0, j1;
  } rects[4] = {{4, 2, 5, 4, 9}, {2, 6, 8, 4, 9}, {3, 11, 12, 4, 9}, {1, 14, 17, 4, 9}};
  for (int pan = 0; pan < 2; pan++) {
    int X = L.panel_x[pan], Y = L.panel_y;
    for (int r = 0; r < 4; r++) {
      uint8_t c[3];
      psp_qc_label_colour(rects[r].label, c);
      int x0 = X + rects[r].i0 * fc, x1 = X + (rects[r].i1 + 1) * fc - 1;
      int y0 = Y + rects[r].j0 * rs, y1 = Y + (rects[r].j1 + 1) * rs - 1;
      int xm = (x0 + x1) / 2, ym = (y0 + y1) / 2;
      assert_true(is_rgb(px(&im, x0, ym), c));      /* left edge */
      assert_true(is_rgb(px(&im, x1, ym), c));      /* right edge */
      assert_true(is_rgb(px(&im, xm, y0), c));      /* top edge */
      assert_true(is_rgb(px(&im, xm, y1), c));      /* bottom edge */
      assert_false(is_rgb(px(&im, x0 + 1, ym), c)); /* 1 px, not filled */
      assert_false(is_rgb(px(&im, xm, ym), c));
      assert_false(is_rgb(px(&im, x0 - 1, ym), c)); /* nothing outside */
    }
    /* the isolated MF L outline is exactly the rectangle's perimeter */
    uint8_t c1[3];
    psp_qc_label_colour(1, c1);
    int n = 0;
    for (int y = Y; y < Y + L.panel_h; y++)
      for (int x = X; x < X + L.panel_w; x++)
        n += is_rgb(px(&im, x, y), c1);
    int w = 4 * fc, h = 6 * rs;
    assert_int_equal(n, 2 * w + 2 * h - 4);
    /* the canal cross: white at the voxel centre */
    const uint8_t white[3] = {255, 255, 255};
    assert_true(is_rgb(px(&im, X + 10 * fc + fc / 2, Y + 13 * rs + rs / 2), white));
  }
  /* FF panel: 0.5 -> grey 128; NaN -> a non-grey colour */
  const uint8_t *g = px(&im, L.panel_x[1] + 10 * fc + 3, L.panel_y + 2 * rs + 3);
  assert_int_equal(g[0], 128);
  assert_int_equal(g[1], 128);
  assert_int_equal(g[2], 128);
  const uint8_t *nanp = px(&im, L.panel_x[1] + 3, L.panel_y + (NY - 1) * rs + 3);
  assert_true(nanp[0] != nanp[2]);
  /* anatomy panel shows a grey image */
  const uint8_t *a = px(&im, L.panel_x[0] + 10 * fc + 3, L.panel_y + 2 * rs + 3);
  assert_true(a[0] == a[1] && a[1] == a[2]);

  /* slice 0 has no labels: no label colour inside the panels */
  image im0 = read_png((path_of(path, sizeof path, dir, 0), path));
  for (int l = 1; l <= 4; l++) {
    uint8_t c[3];
    psp_qc_label_colour(l, c);
    for (int pan = 0; pan < 2; pan++)
      for (int y = L.panel_y; y < L.panel_y + L.panel_h; y++)
        for (int x = L.panel_x[pan]; x < L.panel_x[pan] + L.panel_w; x++)
          assert_false(is_rgb(px(&im0, x, y), c));
  }
  /* status text only on the flagged slice: header line 2 not background;
   * the info line (marks.info) on slice 0, in the header's ink, not the
   * status's; none on slice 1 */
  image im2 = read_png((path_of(path, sizeof path, dir, 2), path));
  const uint8_t *bg = px(&im2, 0, 0);
  int text2 = 0, text1 = 0, text0 = 0, status_ink0 = 0;
  uint8_t status_ink[3] = {0, 0, 0};
  for (int y = 8 + 14 + 1; y < L.panel_y - 2; y++)
    for (int x = 0; x < im2.w; x++) {
      const uint8_t *p2 = px(&im2, x, y);
      if (!is_rgb(p2, bg)) memcpy(status_ink, p2, 3);
      text2 += !is_rgb(p2, bg);
      text1 += !is_rgb(px(&im, x, y), bg);
      text0 += !is_rgb(px(&im0, x, y), bg);
    }
  uint8_t info_ink[3] = {0, 0, 0};
  for (int y = 8 + 14 + 1; y < L.panel_y - 2; y++)
    for (int x = 0; x < im0.w; x++) {
      const uint8_t *p0 = px(&im0, x, y);
      status_ink0 += is_rgb(p0, status_ink);
      if (!is_rgb(p0, bg)) memcpy(info_ink, p0, 3);
    }
  /* the flagged slice's info (set too) is not drawn beside its status */
  int info_ink2 = 0;
  for (int y = 8 + 14 + 1; y < L.panel_y - 2; y++)
    for (int x = 0; x < im2.w; x++)
      info_ink2 += is_rgb(px(&im2, x, y), info_ink);
  assert_true(text2 > 100);
  /* the reason's second line (the header's third): ink in the status colour */
  int wrap2 = 0;
  for (int y = 8 + 2 * (14 + 6); y < 8 + 2 * (14 + 6) + 14; y++)
    for (int x = 0; x < im2.w; x++)
      wrap2 += is_rgb(px(&im2, x, y), status_ink);
  assert_true(wrap2 > 50);
  assert_int_equal(text1, 0);
  assert_true(text0 > 100);
  assert_int_equal(status_ink0, 0);
  assert_int_equal(info_ink2, 0);
  free(im.rgb);
  free(im0.rgb);
  free(im2.rgb);
  free_case(&f);
}

/* The body's outline (marks.body): a 1-pixel bluish-green outline of the
 * mask on both panels, none along the panel's edge (the body goes on beyond
 * the crop), "BODY" in the legend; nothing of that colour without masks. */
static void test_body_outline(void **state) {
  (void)state;
  const uint8_t body_rgb[3] = {0, 158, 115};
  fixture f;
  make_case(&f);
  const char *dir0 = PSP_SCRATCH_DIR "/qc_body0";
  write_case(&f, dir0, 1);
  uint8_t *mask = calloc(2 * NX * NY, 1);
  assert_non_null(mask);
  for (int j = 2; j <= 14; j++) /* slice 1: i 1..18, j 2..14, around the muscles */
    for (int i = 1; i <= 18; i++)
      mask[NX * NY + j * NX + i] = 1;
  for (int j = 3; j <= 12; j++) /* slice 0: i 0..10, j 3..12, cut by the image's left edge */
    for (int i = 0; i <= 10; i++)
      mask[j * NX + i] = 1;
  f.marks[0].body = mask;
  f.marks[1].body = mask + NX * NY;
  const char *dir = PSP_SCRATCH_DIR "/qc_body";
  write_case(&f, dir, 2);
  psp_qc_layout L;
  assert_true(psp_qc_layout_for(f.anat, &L, NULL));
  const int fc = 20, rs = 30;
  char path[512];
  image im1 = read_png((path_of(path, sizeof path, dir, 1), path));
  image im0 = read_png((path_of(path, sizeof path, dir, 0), path));
  for (int pan = 0; pan < 2; pan++) {
    int X = L.panel_x[pan], Y = L.panel_y, n = 0;
    for (int y = Y; y < Y + L.panel_h; y++)
      for (int x = X; x < X + L.panel_w; x++)
        n += is_rgb(px(&im1, x, y), body_rgb);
    int w = 18 * fc, h = 13 * rs;
    assert_int_equal(n, 2 * w + 2 * h - 4); /* exactly the perimeter */
    assert_true(is_rgb(px(&im1, X + 1 * fc, Y + 12 * rs), body_rgb));
    assert_false(is_rgb(px(&im1, X + 1 * fc + 1, Y + 12 * rs), body_rgb)); /* 1 px */
    assert_true(is_rgb(px(&im1, X + 3 * fc, Y + 2 * rs), body_rgb));
    uint8_t c4[3]; /* the muscles' outlines as before */
    psp_qc_label_colour(4, c4);
    assert_true(is_rgb(px(&im1, X + 2 * fc, Y + 6 * rs), c4));
    /* slice 0: along the top, right and bottom of the mask, not the panel's
     * left edge */
    assert_true(is_rgb(px(&im0, X + 5 * fc, Y + 3 * rs), body_rgb));
    assert_true(is_rgb(px(&im0, X + 11 * fc - 1, Y + 8 * rs), body_rgb));
    assert_false(is_rgb(px(&im0, X, Y + 8 * rs), body_rgb));
    assert_false(is_rgb(px(&im0, X, Y + 3 * rs), body_rgb));
  }
  /* the legend below the panels names it; without masks no such pixel */
  int legend = 0;
  for (int y = L.panel_y + L.panel_h; y < im1.h; y++)
    for (int x = 0; x < im1.w; x++)
      legend += is_rgb(px(&im1, x, y), body_rgb);
  assert_true(legend > 0);
  image none = read_png((path_of(path, sizeof path, dir0, 1), path));
  for (int y = 0; y < none.h; y++)
    for (int x = 0; x < none.w; x++)
      assert_false(is_rgb(px(&none, x, y), body_rgb));
  free(im1.rgb);
  free(im0.rgb);
  free(none.rgb);
  free(mask);
  free_case(&f);
}

static bool same_file(const char *p, const char *q) {
  size_t a = 0, b = 0;
  void *x = psp_read_file(p, &a, 1 << 26, NULL), *y = psp_read_file(q, &b, 1 << 26, NULL);
  bool same = x && y && a == b && memcmp(x, y, a) == 0;
  free(x);
  free(y);
  return same;
}

static void test_deterministic(void **state) {
  (void)state;
  fixture f;
  make_case(&f);
  const char *d1 = PSP_SCRATCH_DIR "/qc_t1", *d2 = PSP_SCRATCH_DIR "/qc_t2";
  write_case(&f, d1, 1);
  write_case(&f, d2, 2);
  for (int k = 0; k < NZ; k++) {
    char p[512], q[512];
    path_of(p, sizeof p, d1, k);
    path_of(q, sizeof q, d2, k);
    assert_true(same_file(p, q));
  }
  write_case(&f, d2, 2); /* rewrite in place: same bytes again */
  char p[512], q[512];
  path_of(p, sizeof p, d1, 1);
  path_of(q, sizeof q, d2, 1);
  assert_true(same_file(p, q));
  free_case(&f);
}

/* File names follow the file's own slice order: with the slice axis stored
 * flipped, internal k = 1 is file slice NZ - 2 and k = 0 is file slice 2. */
static void test_file_slice_names(void **state) {
  (void)state;
  fixture f;
  make_case(&f);
  psp_orientation o = {{0, 1, 2}, {false, false, true}};
  assert_true(psp_volume_set_orientation(f.anat, &o, NULL));
  set_rect(f.lab, 1, 3, 1, 3, 0, 1);
  const char *dir = PSP_SCRATCH_DIR "/qc_flip";
  write_case(&f, dir, 2);
  psp_qc_layout L;
  assert_true(psp_qc_layout_for(f.anat, &L, NULL));
  char path[512];
  path_of(path, sizeof path, dir, NZ - 1);
  image im = read_png(path);
  uint8_t c[3];
  psp_qc_label_colour(1, c);
  assert_true(is_rgb(px(&im, L.panel_x[0] + 1 * 20, L.panel_y + 2 * 30), c));
  free(im.rgb);
  free_case(&f);
}

/* The PNGs are 8-bit indexed (one palette, greys quantised to 239 levels);
 * psp_qc_render_rgb (DICOM Secondary Capture) draws the same image in RGB
 * with exact greys: same size, every coloured pixel identical, greys within
 * one 8-bit step. */
static void test_indexed_matches_rgb(void **state) {
  (void)state;
  fixture f;
  make_case(&f);
  const char *dir = PSP_SCRATCH_DIR "/qc_rgb";
  write_case(&f, dir, 1);
  char path[512];
  path_of(path, sizeof path, dir, 1);
  png_image pi;
  memset(&pi, 0, sizeof pi);
  pi.version = PNG_IMAGE_VERSION;
  assert_true(png_image_begin_read_from_file(&pi, path));
  assert_true(pi.format & PNG_FORMAT_FLAG_COLORMAP);
  png_image_free(&pi);
  image im = read_png(path);
  int w = 0, h = 0;
  psp_error *err = NULL;
  uint8_t *rgb = psp_qc_render_rgb(f.anat, f.ff, f.lab, f.marks, 1, &w, &h, &err);
  assert_non_null(rgb);
  assert_int_equal(w, im.w);
  assert_int_equal(h, im.h);
  int greys_off = 0;
  for (size_t p = 0; p < (size_t)w * (size_t)h; p++) {
    const uint8_t *a = rgb + 3 * p, *b = im.rgb + 3 * p;
    if (a[0] == a[1] && a[1] == a[2]) {
      assert_true(b[0] == b[1] && b[1] == b[2]);
      assert_true(abs((int)a[0] - (int)b[0]) <= 1);
      greys_off += a[0] != b[0];
    } else {
      assert_true(a[0] == b[0] && a[1] == b[1] && a[2] == b[2]);
    }
  }
  assert_true(greys_off < w * h / 2);
  free(rgb);
  free(im.rgb);
  free_case(&f);
}

static void test_grid_mismatch(void **state) {
  (void)state;
  fixture f;
  make_case(&f);
  int64_t dims[3] = {NX + 1, NY, NZ};
  double a[4][4] = {{-1.0, 0, 0, 10}, {0, -1.5, 0, 20}, {0, 0, 3, -30}, {0, 0, 0, 1}};
  psp_volume *other = psp_volume_create(dims, a, NULL);
  psp_error *err = NULL;
  assert_false(
      psp_qc_write_pngs(PSP_SCRATCH_DIR "/qc_bad", f.anat, f.ff, other, NULL, 4, NULL, &err));
  assert_int_equal(psp_error_code(err), PSP_ERR_GEOMETRY);
  psp_error_free(err);
  err = NULL;
  assert_false(
      psp_qc_write_pngs(PSP_SCRATCH_DIR "/qc_bad", f.anat, NULL, NULL, NULL, 4, NULL, &err));
  assert_int_equal(psp_error_code(err), PSP_ERR_USAGE);
  psp_error_free(err);
  psp_volume_free(other);
  free_case(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_layout),
      cmocka_unit_test(test_layout_zoom),
      cmocka_unit_test(test_contours_and_marks),
      cmocka_unit_test(test_body_outline),
      cmocka_unit_test(test_deterministic),
      cmocka_unit_test(test_file_slice_names),
      cmocka_unit_test(test_indexed_matches_rgb),
      cmocka_unit_test(test_grid_mismatch),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
