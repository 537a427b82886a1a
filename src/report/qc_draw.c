/*
 * DESIGN: the drawing and encoding shared by the QC images, the axial slices
 * (qc_png.c) and the sagittal reformat (qc_sagittal.c); declared in
 * qc_draw.h, with the layout constants, the fixed colours' ids and the tiny
 * pixel helpers (inline there). Here: the built-in 5x7 bitmap font (ASCII
 * 32..95, lower case shown as upper case) drawn at TEXT_SCALE, the 8-bit
 * indexed PNG encoder (one palette for every image: the N_GREY grey levels
 * and the fixed colours; rows "sub"-filtered, deflated by libdeflate, and
 * libpng writing the chunks around the stream), the anatomy's display window
 * (1st..99.5th percentile of the body from a 4096-bin histogram) and the
 * grid check. The reasons for these choices are in qc_png.c's DESIGN
 * comment. Everything here is deterministic and thread-count independent;
 * the encoder's scratch belongs to one worker at a time.
 */
#include "report/qc_draw.h"

#include <float.h>
#include <libdeflate.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
  HIST_BINS = 4096,
  MINMAX_BLOCK = 65536,
};

/* ------------------------------------------------------------------------ */
/* 5x7 bitmap font: one byte per row, bit 4 = leftmost column                */
/* ------------------------------------------------------------------------ */

static const uint8_t FONT[64][GLYPH_H] = {
    [' ' - 32] = {0, 0, 0, 0, 0, 0, 0},
    ['!' - 32] = {0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04},
    ['"' - 32] = {0x0A, 0x0A, 0x00, 0x00, 0x00, 0x00, 0x00},
    ['#' - 32] = {0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A},
    ['$' - 32] = {0x04, 0x0F, 0x14, 0x0E, 0x05, 0x1E, 0x04},
    ['%' - 32] = {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03},
    ['&' - 32] = {0x0C, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0D},
    ['\'' - 32] = {0x04, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00},
    ['(' - 32] = {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02},
    [')' - 32] = {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08},
    ['*' - 32] = {0x00, 0x04, 0x15, 0x0E, 0x15, 0x04, 0x00},
    ['+' - 32] = {0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00},
    [',' - 32] = {0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08},
    ['-' - 32] = {0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00},
    ['.' - 32] = {0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C},
    ['/' - 32] = {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00},
    ['0' - 32] = {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E},
    ['1' - 32] = {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E},
    ['2' - 32] = {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F},
    ['3' - 32] = {0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E},
    ['4' - 32] = {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02},
    ['5' - 32] = {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E},
    ['6' - 32] = {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E},
    ['7' - 32] = {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08},
    ['8' - 32] = {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E},
    ['9' - 32] = {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C},
    [':' - 32] = {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00},
    [';' - 32] = {0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x04, 0x08},
    ['<' - 32] = {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02},
    ['=' - 32] = {0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00},
    ['>' - 32] = {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08},
    ['?' - 32] = {0x0E, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04},
    ['@' - 32] = {0x0E, 0x11, 0x17, 0x15, 0x17, 0x10, 0x0F},
    ['A' - 32] = {0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11},
    ['B' - 32] = {0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E},
    ['C' - 32] = {0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E},
    ['D' - 32] = {0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C},
    ['E' - 32] = {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F},
    ['F' - 32] = {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10},
    ['G' - 32] = {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F},
    ['H' - 32] = {0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11},
    ['I' - 32] = {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E},
    ['J' - 32] = {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C},
    ['K' - 32] = {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11},
    ['L' - 32] = {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F},
    ['M' - 32] = {0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11},
    ['N' - 32] = {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11},
    ['O' - 32] = {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E},
    ['P' - 32] = {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10},
    ['Q' - 32] = {0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D},
    ['R' - 32] = {0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11},
    ['S' - 32] = {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E},
    ['T' - 32] = {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04},
    ['U' - 32] = {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E},
    ['V' - 32] = {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04},
    ['W' - 32] = {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A},
    ['X' - 32] = {0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11},
    ['Y' - 32] = {0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04},
    ['Z' - 32] = {0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F},
    ['[' - 32] = {0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E},
    ['\\' - 32] = {0x00, 0x10, 0x08, 0x04, 0x02, 0x01, 0x00},
    [']' - 32] = {0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E},
    ['^' - 32] = {0x04, 0x0A, 0x11, 0x00, 0x00, 0x00, 0x00},
    ['_' - 32] = {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1F},
};

static const uint8_t *glyph(char c) {
  int ch = (unsigned char)c;
  if (ch >= 'a' && ch <= 'z') ch -= 'a' - 'A';
  if (ch < 32 || ch > 95) ch = '?';
  return FONT[ch - 32];
}

/* ------------------------------------------------------------------------ */
/* Text                                                                      */
/* ------------------------------------------------------------------------ */

/* Draws text with its top-left corner at (x, y); stops before max_x. Returns
 * the x after the last character drawn. */
int psp_qc_text(psp_qc_canvas *c, int x, int y, const char *s, psp_qc_ink k, int max_x) {
  for (; *s; s++) {
    if (x + GLYPH_W * TEXT_SCALE > max_x) break;
    const uint8_t *g = glyph(*s);
    for (int r = 0; r < GLYPH_H; r++)
      for (int col = 0; col < GLYPH_W; col++) {
        if (!(g[r] & (0x10 >> col))) continue;
        psp_qc_fill_rect(c, x + col * TEXT_SCALE, y + r * TEXT_SCALE, TEXT_SCALE, TEXT_SCALE, k);
      }
    x += CHAR_ADV;
  }
  return x;
}

/* A single letter on a black box, for the orientation labels. */
void psp_qc_boxed_letter(psp_qc_canvas *c, int x, int y, char ch) {
  char s[2] = {ch, '\0'};
  psp_qc_fill_rect(c, x, y, GLYPH_W * TEXT_SCALE + 4, LINE_H + 4, psp_qc_fixed(INK_HALO));
  psp_qc_text(c, x + 2, y + 2, s, psp_qc_fixed(INK_TEXT), c->w);
}

/* ------------------------------------------------------------------------ */
/* Display window of the anatomy                                             */
/* ------------------------------------------------------------------------ */

static double hist_quantile(const int64_t *hist, int b0, int64_t n, double q, double lo,
                            double bw) {
  double target = q * (double)n;
  int64_t cum = 0;
  for (int b = b0; b < HIST_BINS; b++) {
    cum += hist[b];
    if ((double)cum >= target && hist[b] > 0) return lo + ((double)b + 0.5) * bw;
  }
  return lo + (double)HIST_BINS * bw;
}

/* Min and max of the finite values of x[0..n-1] (+inf / -inf when there is
 * none); a non-finite value is replaced by the neutral element, so the loop
 * has no branch and vectorises. */
static void finite_minmax(const float *x, int64_t n, float *lo, float *hi) {
  float a = INFINITY, b = -INFINITY;
  PSP_OMP_SIMD("omp simd reduction(min : a) reduction(max : b)")
  for (int64_t p = 0; p < n; p++) {
    bool fin = fabsf(x[p]) <= FLT_MAX;
    float u = fin ? x[p] : INFINITY, w = fin ? x[p] : -INFINITY;
    a = u < a ? u : a;
    b = w > b ? w : b;
  }
  *lo = a;
  *hi = b;
}

/* Display window of the anatomy: 1st..99.5th percentile of the body. */
bool psp_qc_window(const psp_volume *v, float *wlo, float *whi, psp_error **err) {
  int64_t n = psp_volume_voxel_count(v);
  /* min and max of the finite voxels, per block of voxels (exact in float,
   * vectorised) */
  float fmin_ = INFINITY, fmax_ = -INFINITY;
  const int64_t nblk = (n + MINMAX_BLOCK - 1) / MINMAX_BLOCK;
#pragma omp parallel for schedule(static) reduction(min : fmin_) reduction(max : fmax_)
  for (int64_t q = 0; q < nblk; q++) {
    int64_t p0 = q * MINMAX_BLOCK, m = n - p0 < MINMAX_BLOCK ? n - p0 : MINMAX_BLOCK;
    float lo, hi;
    finite_minmax(v->data + p0, m, &lo, &hi);
    fmin_ = lo < fmin_ ? lo : fmin_;
    fmax_ = hi > fmax_ ? hi : fmax_;
  }
  const double vmin = fmin_, vmax = fmax_;
  *wlo = 0;
  *whi = 1;
  if (!(vmax > vmin)) {
    if (isfinite(vmin)) {
      *wlo = (float)vmin - 1;
      *whi = (float)vmin;
    }
    return true;
  }
  int64_t *hist = psp_calloc(HIST_BINS, sizeof *hist, err);
  if (!hist) return false;
  double bw = (vmax - vmin) / HIST_BINS;
  int64_t count = 0;
  bool failed = false;
  /* per-thread counts added exactly: the same at any thread count */
#pragma omp parallel reduction(+ : count)
  {
    int64_t *loc = calloc(HIST_BINS, sizeof *loc);
#pragma omp for schedule(static) nowait
    for (int64_t p = 0; p < n; p++) {
      float x = v->data[p];
      if (!loc || !isfinite(x)) continue;
      int b = (int)(((double)x - vmin) / bw);
      loc[b < 0 ? 0 : b >= HIST_BINS ? HIST_BINS - 1 : b]++;
      count++;
    }
#pragma omp critical(psp_qc_hist)
    {
      if (!loc) failed = true;
      for (int b = 0; loc && b < HIST_BINS; b++)
        hist[b] += loc[b];
    }
    free(loc);
  }
  if (failed) {
    free(hist);
    return psp_error_set(err, PSP_ERR_NOMEM, "out of memory (QC window)");
  }
  double top = hist_quantile(hist, 0, count, 0.995, vmin, bw);
  double thr = vmin + 0.1 * (top - vmin);
  int b0 = (int)((thr - vmin) / bw);
  if (b0 < 0) b0 = 0;
  if (b0 >= HIST_BINS) b0 = HIST_BINS - 1;
  int64_t body = 0;
  for (int b = b0; b < HIST_BINS; b++)
    body += hist[b];
  double lo = hist_quantile(hist, b0, body, 0.01, vmin, bw);
  double hi = hist_quantile(hist, b0, body, 0.995, vmin, bw);
  free(hist);
  if (!(hi > lo)) hi = lo + bw;
  *wlo = (float)lo;
  *whi = (float)hi;
  return true;
}

/* ------------------------------------------------------------------------ */
/* PNG encoding into memory                                                  */
/* ------------------------------------------------------------------------ */

/* The grey shown for level q: the nearest of N_GREY evenly spaced levels
 * (the level of an 8-bit grey: grey_level, qc_png.c). */
static uint8_t level_grey(int q) {
  return (uint8_t)((q * 255 + (N_GREY - 1) / 2) / (N_GREY - 1));
}

/* The PNG palette: N_GREY grey levels, then the fixed colours. */
static void palette_rgb(uint8_t pal[256][3]) {
  for (int q = 0; q < N_GREY; q++)
    pal[q][0] = pal[q][1] = pal[q][2] = level_grey(q);
  memcpy(pal[N_GREY], psp_qc_ink_rgb, sizeof psp_qc_ink_rgb);
}

void psp_qc_fail(psp_qc_slice_out *o, psp_status st, const char *msg) {
  o->status = st;
  snprintf(o->msg, sizeof o->msg, "%s", msg);
}

/* ------------------------------------------------------------------------ */
/* PNG encoding into memory (libpng)                                         */
/* ------------------------------------------------------------------------ */

static void png_on_error(png_structp png, png_const_charp msg) {
  psp_qc_slice_out *o = png_get_error_ptr(png);
  if (o->status == PSP_OK) {
    o->status = PSP_ERR_INTERNAL;
    snprintf(o->msg, sizeof o->msg, "PNG encoding failed: %s", msg);
  }
  png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
  (void)png;
  (void)msg; /* the library never prints; an encoder warning does not affect the image */
}

static void png_on_write(png_structp png, png_bytep data, png_size_t len) {
  psp_qc_slice_out *o = png_get_io_ptr(png);
  if (o->len + len > o->cap) {
    size_t cap = o->cap ? o->cap : 65536;
    while (cap < o->len + len)
      cap *= 2;
    unsigned char *p = realloc(o->png, cap);
    if (!p) {
      psp_qc_fail(o, PSP_ERR_NOMEM, "out of memory encoding a QC image");
      png_longjmp(png, 1);
    }
    o->png = p;
    o->cap = cap;
  }
  memcpy(o->png + o->len, data, len);
  o->len += len;
}

static void png_on_flush(png_structp png) {
  (void)png;
}

void psp_qc_png_scratch_free(psp_qc_png_scratch *s) {
  free(s->rows);
  free(s->z);
  if (s->zc) libdeflate_free_compressor(s->zc);
  memset(s, 0, sizeof *s);
}

static bool grow(unsigned char **p, size_t *cap, size_t need) {
  if (need <= *cap) return true;
  unsigned char *q = realloc(*p, need);
  if (!q) return false;
  *p = q;
  *cap = need;
  return true;
}

/* Encodes the indexed psp_qc_canvas c (bpp 1) as a PNG into o: 8-bit palette
 * (palette_rgb), one fixed filter, "sub" (on the 29 slices of a 400 x 400
 * scan the smallest files of the single filters), the filtered rows
 * compressed by libdeflate at the given level into one zlib stream, and
 * libpng writing the file around it (signature, IHDR, PLTE, the stream as
 * one IDAT chunk, IEND; CRCs). libdeflate instead of libpng's zlib at level
 * 1: 29 slices of a 400 x 400 phantom 0.124 -> 0.075 s of CPU, files 8 %
 * smaller; the pixels are the same. */
void psp_qc_encode_png(const psp_qc_canvas *c, int level, psp_qc_png_scratch *s,
                       psp_qc_slice_out *o) {
  const size_t rl = (size_t)c->w + 1, raw = rl * (size_t)c->h;
  if (!s->zc || s->level != level) {
    if (s->zc) libdeflate_free_compressor(s->zc);
    s->zc = libdeflate_alloc_compressor(level);
    s->level = level;
  }
  const size_t bound = s->zc ? libdeflate_zlib_compress_bound(s->zc, raw) : 0;
  if (!s->zc || !grow(&s->rows, &s->rows_cap, raw) || !grow(&s->z, &s->z_cap, bound)) {
    psp_qc_fail(o, PSP_ERR_NOMEM, "out of memory encoding a QC image");
    return;
  }
  for (int y = 0; y < c->h; y++) {
    const uint8_t *src = c->px + (size_t)y * (size_t)c->w;
    unsigned char *d = s->rows + (size_t)y * rl;
    d[0] = PNG_FILTER_VALUE_SUB;
    d[1] = src[0];
    for (int x = 1; x < c->w; x++)
      d[x + 1] = (unsigned char)(src[x] - src[x - 1]);
  }
  const size_t zn = libdeflate_zlib_compress(s->zc, s->rows, raw, s->z, bound);
  if (!zn || zn > 0x7fffffff) {
    psp_qc_fail(o, PSP_ERR_INTERNAL, "compressing a QC image failed");
    return;
  }
  uint8_t pal[256][3];
  png_color plte[256];
  palette_rgb(pal);
  for (int i = 0; i < 256; i++) {
    plte[i].red = pal[i][0];
    plte[i].green = pal[i][1];
    plte[i].blue = pal[i][2];
  }
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, o, png_on_error, png_on_warning);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  if (!info) {
    if (png) png_destroy_write_struct(&png, NULL);
    psp_qc_fail(o, PSP_ERR_NOMEM, "out of memory creating a PNG encoder");
    return;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    if (o->status == PSP_OK) o->status = PSP_ERR_INTERNAL;
    return;
  }
  png_set_write_fn(png, o, png_on_write, png_on_flush);
  png_set_IHDR(png, info, (png_uint_32)c->w, (png_uint_32)c->h, 8, PNG_COLOR_TYPE_PALETTE,
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_PLTE(png, info, plte, 256);
  png_write_info(png, info);
  png_write_chunk(png, (png_const_bytep) "IDAT", s->z, zn);
  png_write_chunk(png, (png_const_bytep) "IEND", NULL, 0);
  png_destroy_write_struct(&png, &info);
}

/* ------------------------------------------------------------------------ */
/* Grids                                                                     */
/* ------------------------------------------------------------------------ */

bool psp_qc_same_grid(const psp_volume *a, const psp_volume *b, const char *what, psp_error **err) {
  char why[256] = "";
  if (psp_grid_compare(a, b, why, sizeof why) == PSP_GRID_DIFFERENT)
    return psp_error_set(err, PSP_ERR_GEOMETRY, "QC images: the %s is on another grid: %s", what,
                         why);
  return true;
}
