/*
 * qc_draw.h — internal to the QC images: what the axial slices (qc_png.c)
 * and the sagittal reformat (qc_sagittal.c) share. The layout constants,
 * the fixed colours' ids and their table (defined in qc_png.c), a canvas of
 * palette indices or RGB with its pixel helpers (inline here), the 5x7 text,
 * the indexed PNG encoder, the anatomy's display window and the grid check
 * (qc_draw.c). Included by those three files only.
 */
#ifndef PSP_QC_DRAW_H
#define PSP_QC_DRAW_H

#include "report/qc_png.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* "omp simd" hints for gcc; none for clang, whose -Wpass-failed turns a loop
 * it cannot vectorise (e.g. under ThreadSanitizer's instrumentation) into
 * an error, and which vectorises these loops by itself where it can */
#if defined(__clang__)
#define PSP_OMP_SIMD(x)
#else
#define PSP_OMP_SIMD(x) _Pragma(x)
#endif

enum {
  TEXT_SCALE = 2,
  GLYPH_W = 5,
  GLYPH_H = 7,
  CHAR_ADV = (GLYPH_W + 1) * TEXT_SCALE,
  LINE_H = GLYPH_H * TEXT_SCALE,
  LINE_GAP = 6,
  PAD = 8,
  HEADER_H = PAD + 2 * LINE_H + LINE_GAP + PAD,
  /* the slice images': the slice line and two for a flagged slice's reason */
  SLICE_HEADER_H = PAD + 3 * LINE_H + 2 * LINE_GAP + PAD,
  LEGEND_H = PAD + 2 * LINE_H + LINE_GAP + PAD,
  MAX_PANEL_SIDE = 8192,
  DEFAULT_LEVEL = 1, /* compression level when the caller gives none (< 0) */
};

/* The fixed colours; the PNGs are 8-bit indexed: palette entries
 * 0..N_GREY-1 are grey levels, N_GREY + id the fixed colour id. */
enum psp_qc_ink_id {
  INK_BG,
  INK_TEXT,
  INK_STATUS,
  INK_NAN,
  INK_MARK,
  INK_HALO,
  INK_LABEL0, /* + label - 1: MF L, MF R, ES L, ES R */
  INK_DISC = INK_LABEL0 + PSP_LABEL_COUNT - 1,
  INK_GRID,
  INK_PLOT_BG,
  INK_CONF0, /* + confidence class 0..3 */
  N_INK = INK_CONF0 + 4,
  INK_BODY = INK_CONF0 + 3, /* the body's outline: the bluish green */
  N_GREY = 256 - N_INK,
};

/* RGB of each fixed colour (qc_png.c). */
extern const uint8_t psp_qc_ink_rgb[N_INK][3];

/* A colour as drawn: RGB on an RGB canvas, the palette index on an indexed
 * one. */
typedef struct psp_qc_ink {
  uint8_t rgb[3];
  uint8_t idx;
} psp_qc_ink;

static inline psp_qc_ink psp_qc_fixed(int id) {
  psp_qc_ink k = {{psp_qc_ink_rgb[id][0], psp_qc_ink_rgb[id][1], psp_qc_ink_rgb[id][2]},
                  (uint8_t)(N_GREY + id)};
  return k;
}

/* bpp 1: palette indices (the PNGs); bpp 3: RGB (psp_qc_render_rgb and
 * psp_qc_draw_text). */
typedef struct psp_qc_canvas {
  uint8_t *px;
  int w, h, bpp;
} psp_qc_canvas;

static inline void psp_qc_put(psp_qc_canvas *c, int x, int y, psp_qc_ink k) {
  if (x < 0 || y < 0 || x >= c->w || y >= c->h) return;
  size_t p = (size_t)y * (size_t)c->w + (size_t)x;
  if (c->bpp == 1)
    c->px[p] = k.idx;
  else
    memcpy(c->px + 3 * p, k.rgb, 3);
}

static inline void psp_qc_fill_rect(psp_qc_canvas *c, int x0, int y0, int w, int h, psp_qc_ink k) {
  for (int y = y0; y < y0 + h; y++)
    for (int x = x0; x < x0 + w; x++)
      psp_qc_put(c, x, y, k);
}

/* v rounded and clamped to 0..top (branch-free, so that loops vectorise). */
static inline int psp_qc_clamp_round(float v, int top) {
  v = v > 0.0f ? v : 0.0f;
  v = v < (float)top ? v : (float)top;
  return (int)(v + 0.5f);
}

/* Draws text in the 5x7 font at TEXT_SCALE with its top-left corner at
 * (x, y); stops before max_x. Returns the x after the last character drawn. */
int psp_qc_text(psp_qc_canvas *c, int x, int y, const char *s, psp_qc_ink k, int max_x);

/* A single letter on a black box, for the orientation labels. */
void psp_qc_boxed_letter(psp_qc_canvas *c, int x, int y, char ch);

/* An encoded image, or why rendering, encoding or writing it failed. */
typedef struct psp_qc_slice_out {
  unsigned char *png;
  size_t len, cap;
  psp_status status; /* rendering or encoding failed: why in msg */
  char msg[160];
  psp_error *write_err; /* writing the file failed */
} psp_qc_slice_out;

/* Records the failure st (message msg) in o. */
void psp_qc_fail(psp_qc_slice_out *o, psp_status st, const char *msg);

/* A PNG encoder's scratch, reused from image to image by one worker: the
 * filtered rows, their zlib stream and the compressor of one level. */
typedef struct psp_qc_png_scratch {
  unsigned char *rows, *z;
  size_t rows_cap, z_cap;
  struct libdeflate_compressor *zc;
  int level;
} psp_qc_png_scratch;

void psp_qc_png_scratch_free(psp_qc_png_scratch *s);

/* Encodes the indexed canvas c (bpp 1) as a PNG into o (o->png grown as
 * needed, o->len set); a failure in o->status and o->msg. */
void psp_qc_encode_png(const psp_qc_canvas *c, int level, psp_qc_png_scratch *s,
                       psp_qc_slice_out *o);

/* Display window of the anatomy: 1st..99.5th percentile of the body. */
bool psp_qc_window(const psp_volume *v, float *wlo, float *whi, psp_error **err);

/* Fails (PSP_ERR_GEOMETRY) when b, the `what` of the QC images, is on
 * another grid than a. */
bool psp_qc_same_grid(const psp_volume *a, const psp_volume *b, const char *what, psp_error **err);

#endif
