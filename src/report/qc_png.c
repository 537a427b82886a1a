/*
 * DESIGN: quality-control images, one PNG per axial slice, so that a reader
 * can check segmentation, landmarks and the fat-fraction map at a glance.
 *
 * Layout: a header (slice index, z, status), two panels side by side (the
 * anatomical image and the FF map) and a two-line legend. Radiological
 * convention: the internal grid's i runs towards the patient's left, so i
 * maps to image columns directly (patient Right on the image's left) and j
 * (posterior) maps to rows downwards (Anterior at the top).
 *
 * Scaling: nearest neighbour, an integer factor along i chosen so that a
 * panel is at least 400 px wide, and rows stretched by the spacing ratio
 * j/i so anatomy keeps its true proportions; the factor is raised when
 * needed so that no voxel row is dropped (each voxel row covers >= 1 display
 * row). Outlines are computed in display space: a pixel of label L is an
 * outline pixel when a 4-neighbour shows another value (or lies outside the
 * panel), which gives closed 1-pixel contours drawn inside each region, so
 * two touching muscles both keep their own outline.
 *
 * Grey levels: the anatomy is windowed once per volume from the 1st to the
 * 99.5th percentile of the body (voxels above 10 % of the 99.5th percentile
 * of all voxels), read off a 4096-bin histogram (deterministic and O(n), no
 * sort); the report computes it once for the slices and the sagittal image. FF 0..1 is shown as
 * 0..100 % grey, so the coloured outlines stay unambiguous, and NaN (no signal) in dark blue.
 *
 * Colours (after Okabe & Ito, "Color Universal Design"): the pairs that
 * touch (MF and ES of one side) differ most under every colour-vision
 * deficiency: left MF orange / left ES reddish purple, right MF sky blue /
 * right ES yellow. Landmarks are white crosses with a black halo; the body's
 * outline (the landmarks' body mask) bluish green, under the muscles'
 * outlines and not along the panel's edge (the body goes on beyond the
 * crop).
 *
 * PNG: 8-bit indexed colour, one fixed palette for every image: N_GREY = 239
 * grey levels (level q shows grey round(q * 255 / 238)) and the 17 fixed
 * colours (background, text, status, no signal, marks, halo, the 4 labels,
 * and the sagittal's disc, grid, plot and 4 confidence colours). Panels are
 * quantised straight from the float value to the nearest level, so a grey
 * is off by at most 0.54 of an 8-bit step (invisible); the fixed colours are
 * exact. One byte per pixel instead of three makes rendering, filtering and
 * deflate about 3x cheaper and the files smaller. The "sub" filter on
 * every row (on tum01's 29 slices the smallest of the single filters: none
 * / sub / up), the rows deflated by libdeflate at level 1 (zlib's level 1
 * took 1.7x the CPU for 8 % larger files; Z_RLE, which suited the RGB
 * images, gave 80 % larger files), and libpng writes the file around that
 * stream (chunks, CRCs; see psp_qc_encode_png).
 * psp_qc_render_rgb (DICOM Secondary Capture) draws the same image into an
 * RGB canvas with the exact 8-bit greys, as before.
 *
 * Text: a built-in 5x7 bitmap font (ASCII 32..95, lower case shown as upper
 * case) drawn at 2x. Threads: slices are rendered, encoded and each written
 * atomically by the worker that rendered it (schedule(dynamic, 1)), so the
 * writes overlap with the rendering of other slices (the analysis's report
 * syncs them all at once afterwards: PSP_SYNC_LATER); each
 * worker reuses its canvas, label scratch and PNG buffer from slice to
 * slice. The outcome of each slice is recorded and the first failure in
 * slice order is reported. Every byte depends only on the slice's data, so
 * output is identical at any thread count. Upscaled voxel rows are spread
 * over the display columns by a vectorised copy for the usual factors 1
 * and 2.
 *
 * Files: this one draws the axial slices; the sagittal reformat with the
 * level assignment (sagittal.png) lives in qc_sagittal.c; the canvas, the
 * font, the PNG encoder and the anatomy's window that both use are in
 * qc_draw.c, declared with the layout constants and colour ids in the
 * internal header qc_draw.h (the colour table is defined here).
 */
#include "report/qc_png.h"
#include "report/qc_draw.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ZOOM_MARGIN_MM 25.0 /* QC panels: margin around the muscles */
#define ZOOM_FRONT_MM 30.0  /* and further forward, to show the vertebra */

enum {
  MIN_PANEL_W = 400,
  CROSS_ARM = 5,
  OUTLINE_RUN = 32,
  BODY_BIT = 8, /* in the display label scratch: the pixel lies inside the body */
};

/* ------------------------------------------------------------------------ */
/* Colours                                                                   */
/* ------------------------------------------------------------------------ */

/* The fixed colours (ids in qc_draw.h); the PNGs are 8-bit indexed: palette
 * entries 0..N_GREY-1 are grey levels, N_GREY + id the fixed colour id. */
const uint8_t psp_qc_ink_rgb[N_INK][3] = {
    [INK_BG] = {24, 24, 24},
    [INK_TEXT] = {235, 235, 235},
    [INK_STATUS] = {255, 140, 60},
    [INK_NAN] = {22, 30, 88},
    [INK_MARK] = {255, 255, 255},
    [INK_HALO] = {0, 0, 0},
    [INK_LABEL0 + 0] = {255, 150, 0},   /* 1 left multifidus: orange */
    [INK_LABEL0 + 1] = {86, 180, 255},  /* 2 right multifidus: sky blue */
    [INK_LABEL0 + 2] = {235, 110, 200}, /* 3 left erector spinae: reddish purple */
    [INK_LABEL0 + 3] = {245, 235, 60},  /* 4 right erector spinae: yellow */
    [INK_DISC] = {80, 220, 255},
    [INK_GRID] = {70, 70, 70},
    [INK_PLOT_BG] = {36, 36, 36},
    [INK_CONF0 + 0] = {90, 90, 90},  /* confidence unknown */
    [INK_CONF0 + 1] = {213, 94, 0},  /* < 0.4: vermillion */
    [INK_CONF0 + 2] = {230, 159, 0}, /* 0.4 .. 0.7: orange */
    [INK_CONF0 + 3] = {0, 158, 115}, /* >= 0.7: bluish green */
};
static const char *const LABEL_TEXT[PSP_LABEL_COUNT] = {"", "MF L", "MF R", "ES L", "ES R"};

/* Grey level (palette index) of the 8-bit grey g: the nearest of N_GREY
 * evenly spaced levels (the grey shown for a level: level_grey, qc_draw.c). */
static uint8_t grey_level(int g) {
  return (uint8_t)((g * (N_GREY - 1) + 127) / 255);
}

static psp_qc_ink grey_ink(uint8_t g) {
  psp_qc_ink k = {{g, g, g}, grey_level(g)};
  return k;
}

void psp_qc_label_colour(int label, uint8_t rgb[3]) {
  if (label > 0 && label < PSP_LABEL_COUNT)
    memcpy(rgb, psp_qc_ink_rgb[INK_LABEL0 + label - 1], 3);
  else
    memset(rgb, 0, 3);
}

/* ------------------------------------------------------------------------ */
/* Landmarks                                                                 */
/* ------------------------------------------------------------------------ */

/* Cross centred on (cx, cy) with a black halo, clipped to the rectangle. */
static void draw_cross(psp_qc_canvas *c, int cx, int cy, int x0, int y0, int x1, int y1) {
  for (int pass = 0; pass < 2; pass++) {
    psp_qc_ink k = psp_qc_fixed(pass == 0 ? INK_HALO : INK_MARK);
    for (int d = -CROSS_ARM; d <= CROSS_ARM; d++) {
      int pts[2][2] = {{cx + d, cy}, {cx, cy + d}};
      for (int p = 0; p < 2; p++) {
        for (int oy = -pass + 1; oy <= 1 - pass; oy++) /* pass 0: halo 3x3; pass 1: the pixel */
          for (int ox = -pass + 1; ox <= 1 - pass; ox++) {
            int x = pts[p][0] + (pass == 0 ? ox : 0), y = pts[p][1] + (pass == 0 ? oy : 0);
            if (x < x0 || y < y0 || x >= x1 || y >= y1) continue;
            psp_qc_put(c, x, y, k);
          }
      }
    }
  }
}

/* ------------------------------------------------------------------------ */
/* Layout                                                                    */
/* ------------------------------------------------------------------------ */

/* Panel geometry for a crop of cw x ch voxels starting at (i0, j0). */
static bool layout_crop(const psp_volume *v, int64_t i0, int64_t j0, int64_t cw, int64_t ch,
                        psp_qc_layout *out, psp_error **err) {
  memset(out, 0, sizeof *out);
  if (cw <= 0 || ch <= 0 || v->dims[2] <= 0)
    return psp_error_set(err, PSP_ERR_USAGE, "QC images: empty volume");
  double sp[3];
  psp_volume_spacing(v, sp);
  if (!(sp[0] > 0) || !(sp[1] > 0) || !isfinite(sp[0]) || !isfinite(sp[1]))
    return psp_error_set(err, PSP_ERR_GEOMETRY, "QC images: invalid in-plane spacing");
  double ratio = sp[1] / sp[0]; /* display rows per display column, per voxel */
  int64_t fc = (MIN_PANEL_W + cw - 1) / cw;
  if (fc < 1) fc = 1;
  /* never fewer display rows than voxel rows */
  int64_t need = (int64_t)ceil(1.0 / ratio - 1e-9);
  if (fc < need) fc = need;
  double hf = (double)ch * (double)fc * ratio;
  if (cw * fc > MAX_PANEL_SIDE || hf > MAX_PANEL_SIDE)
    return psp_error_set(err, PSP_ERR_LIMIT,
                         "QC images: a %lld x %lld slice with %.3g x %.3g mm pixels would need "
                         "panels larger than %d pixels",
                         (long long)cw, (long long)ch, sp[0], sp[1], MAX_PANEL_SIDE);
  int64_t h = llround(hf);
  if (h < ch) h = ch;
  out->i0 = i0;
  out->j0 = j0;
  out->crop_w = cw;
  out->crop_h = ch;
  out->col_scale = (int)fc;
  out->panel_w = (int)(cw * fc);
  out->panel_h = (int)h;
  out->row_scale = (double)h / (double)ch;
  out->panel_x[0] = PAD;
  out->panel_x[1] = PAD + out->panel_w + PAD;
  out->panel_y = SLICE_HEADER_H;
  out->width = 3 * PAD + 2 * out->panel_w;
  out->height = SLICE_HEADER_H + out->panel_h + LEGEND_H;
  return true;
}

bool psp_qc_layout_for(const psp_volume *v, psp_qc_layout *out, psp_error **err) {
  return layout_crop(v, 0, 0, v->dims[0], v->dims[1], out, err);
}

#define IS_MUSCLE(x) ((x) >= 1 && (x) < PSP_LABEL_COUNT)
/* Bounding box (i, j) of labels 1..4 over all slices; unchanged when there
 * is none. Slices in parallel; min / max reductions are exact, so the box
 * does not depend on the thread count. */
static void muscle_box(const psp_volume *labels, int64_t *i_lo, int64_t *i_hi, int64_t *j_lo,
                       int64_t *j_hi) {
  const int64_t nx = labels->dims[0], ny = labels->dims[1], nz = labels->dims[2];
  int64_t il = *i_lo, ih = *i_hi, jl = *j_lo, jh = *j_hi;
#pragma omp parallel for schedule(static) reduction(min : il, jl) reduction(max : ih, jh)
  for (int64_t k = 0; k < nz; k++)
    for (int64_t j = 0; j < ny; j++) {
      /* the row's first and last muscle voxel (most rows have none) */
      const float *row = labels->data + (k * ny + j) * nx;
      int64_t a = 0, b = nx - 1;
      for (; a + 16 <= nx; a += 16) { /* 16 at a time, branch-free (vectorised) */
        int any = 0;
        PSP_OMP_SIMD("omp simd reduction(| : any)")
        for (int q = 0; q < 16; q++)
          any |= (row[a + q] >= 1.0f) & (row[a + q] < (float)PSP_LABEL_COUNT);
        if (any) break;
      }
      while (a < nx && !IS_MUSCLE(row[a]))
        a++;
      if (a == nx) continue;
      while (!IS_MUSCLE(row[b]))
        b--;
      il = a < il ? a : il;
      ih = b > ih ? b : ih;
      jl = j < jl ? j : jl;
      jh = j > jh ? j : jh;
    }
  *i_lo = il;
  *i_hi = ih;
  *j_lo = jl;
  *j_hi = jh;
}
#undef IS_MUSCLE

bool psp_qc_layout_zoom(const psp_volume *v, const psp_volume *labels, psp_qc_layout *out,
                        psp_error **err) {
  const int64_t nx = v->dims[0], ny = v->dims[1];
  int64_t i_lo = nx, i_hi = -1, j_lo = ny, j_hi = -1;
  if (labels) muscle_box(labels, &i_lo, &i_hi, &j_lo, &j_hi);
  if (i_hi < 0) return psp_qc_layout_for(v, out, err);
  double sp[3];
  psp_volume_spacing(v, sp);
  /* the muscles plus a margin of ZOOM_MARGIN_MM (at least a quarter of
   * their extent) on every side, and in front down to the vertebral body */
  double mi = fmax(ZOOM_MARGIN_MM, 0.25 * (double)(i_hi - i_lo + 1) * sp[0]) / sp[0];
  double mj = fmax(ZOOM_MARGIN_MM, 0.25 * (double)(j_hi - j_lo + 1) * sp[1]) / sp[1];
  int64_t i0 = i_lo - (int64_t)ceil(mi), i1 = i_hi + (int64_t)ceil(mi);
  int64_t j0 = j_lo - (int64_t)ceil(mj + ZOOM_FRONT_MM / sp[1]), j1 = j_hi + (int64_t)ceil(mj);
  i0 = i0 < 0 ? 0 : i0;
  j0 = j0 < 0 ? 0 : j0;
  i1 = i1 >= nx ? nx - 1 : i1;
  j1 = j1 >= ny ? ny - 1 : j1;
  return layout_crop(v, i0, j0, i1 - i0 + 1, j1 - j0 + 1, out, err);
}

static void fill_rowmap(const psp_qc_layout *L, int *rowmap) {
  for (int y = 0; y < L->panel_h; y++) {
    int64_t j = (int64_t)floor(((double)y + 0.5) * (double)L->crop_h / L->panel_h);
    j = j < 0 ? 0 : j >= L->crop_h ? L->crop_h - 1 : j;
    rowmap[y] = (int)(L->j0 + j);
  }
}

/* ------------------------------------------------------------------------ */
/* One slice                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct qc_job {
  const psp_volume *anat, *ff, *labels;
  const psp_qc_slice_marks *marks;
  bool body; /* some slice's marks hold a body mask (legend) */
  const psp_qc_layout *lay;
  const int *rowmap; /* display row -> voxel j */
  float wlo, whi;
  int level;
  psp_sync sync;
} qc_job;

static void draw_legend(psp_qc_canvas *c, const qc_job *job) {
  const psp_qc_layout *L = job->lay;
  const psp_qc_ink text = psp_qc_fixed(INK_TEXT);
  int y1 = L->panel_y + L->panel_h + PAD, y2 = y1 + LINE_H + LINE_GAP;
  int x = L->panel_x[0], xmax = L->panel_x[0] + L->panel_w;
  for (int l = 1; l < PSP_LABEL_COUNT; l++) {
    psp_qc_fill_rect(c, x, y1, LINE_H, LINE_H, psp_qc_fixed(INK_LABEL0 + l - 1));
    x = psp_qc_text(c, x + LINE_H + 6, y1, LABEL_TEXT[l], text, xmax) + 2 * CHAR_ADV;
  }
  if (job->marks) {
    x = L->panel_x[0];
    psp_qc_fill_rect(c, x, y2, LINE_H, LINE_H, psp_qc_fixed(INK_BG));
    draw_cross(c, x + LINE_H / 2, y2 + LINE_H / 2, x - 1, y2 - 1, x + LINE_H + 1, y2 + LINE_H + 1);
    x = psp_qc_text(c, x + LINE_H + 6, y2, "LANDMARKS", text, xmax) + 2 * CHAR_ADV;
    for (int yy = 0; yy < LINE_H; yy++)
      if ((yy / 3) % 2 == 0) psp_qc_put(c, x + LINE_H / 2, y2 + yy, psp_qc_fixed(INK_MARK));
    x = psp_qc_text(c, x + LINE_H + 6, y2, "MIDLINE", text, xmax) + 2 * CHAR_ADV;
    if (job->body) {
      psp_qc_fill_rect(c, x, y2 + LINE_H / 2 - 1, LINE_H, 2, psp_qc_fixed(INK_BODY));
      psp_qc_text(c, x + LINE_H + 6, y2, "BODY", text, xmax);
    }
  }
  x = L->panel_x[1];
  xmax = L->panel_x[1] + L->panel_w;
  x = psp_qc_text(c, x, y1, "FF 0%", text, xmax) + 8;
  int ramp = 128;
  for (int i = 0; i < ramp && x + i < xmax; i++)
    psp_qc_fill_rect(c, x + i, y1, 1, LINE_H,
                     grey_ink((uint8_t)((i * 255 + (ramp - 1) / 2) / (ramp - 1))));
  psp_qc_text(c, x + ramp + 8, y1, "100%", text, xmax);
  x = L->panel_x[1];
  psp_qc_fill_rect(c, x, y2, LINE_H, LINE_H, psp_qc_fixed(INK_NAN));
  psp_qc_text(c, x + LINE_H + 6, y2, "NO SIGNAL", text, xmax);
}

/* s on up to two lines from y, broken at spaces (a flagged slice's reason is
 * longer than a narrow image is wide); what does not fit ends in "...". */
static void draw_wrapped(psp_qc_canvas *c, int y, const char *s, psp_qc_ink ink) {
  const size_t fit = (size_t)((c->w - 2 * PAD) / CHAR_ADV);
  char line[256];
  for (int row = 0; row < 2 && *s && fit > 3; row++) {
    size_t n = strlen(s);
    if (n > fit) {
      size_t cut = fit;
      while (cut > fit / 2 && s[cut] != ' ')
        cut--;
      n = s[cut] == ' ' ? cut : fit;
      if (row == 1) n = fit - 3;
    }
    if (n >= sizeof line) n = sizeof line - 4;
    memcpy(line, s, n);
    line[n] = '\0';
    if (row == 1 && strlen(s) > fit) strcat(line, "...");
    psp_qc_text(c, PAD, y, line, ink, c->w - PAD);
    s += n;
    while (*s == ' ')
      s++;
    y += LINE_H + LINE_GAP;
  }
}

static void draw_header(psp_qc_canvas *c, const qc_job *job, int64_t k) {
  char s[160];
  double z = psp_volume_slice_z(job->anat, k);
  if (fabs(z) < 0.05) z = 0; /* no "-0.0" */
  snprintf(s, sizeof s, "SLICE %03lld   K %lld   Z %.1f MM",
           (long long)psp_volume_file_slice(job->anat, k), (long long)k, z);
  psp_qc_text(c, PAD, PAD, s, psp_qc_fixed(INK_TEXT), c->w - PAD);
  const char *st = job->marks ? job->marks[k].status : NULL;
  const char *info = job->marks ? job->marks[k].info : NULL;
  if (st && *st)
    draw_wrapped(c, PAD + LINE_H + LINE_GAP, st, psp_qc_fixed(INK_STATUS));
  else if (info && *info)
    draw_wrapped(c, PAD + LINE_H + LINE_GAP, info, psp_qc_fixed(INK_TEXT));
}

/* dst[x] = src[x / fc] for the n * fc display columns of n voxels (the
 * usual factors 1 and 2 without a per-pixel counter, vectorised). */
static void expand_cols(uint8_t *restrict dst, const uint8_t *restrict src, int64_t n, int fc) {
  if (fc == 1) {
    memcpy(dst, src, (size_t)n);
  } else if (fc == 2) {
    for (int64_t ci = 0; ci < n; ci++) {
      dst[2 * ci] = src[ci];
      dst[2 * ci + 1] = src[ci];
    }
  } else {
    for (int64_t ci = 0; ci < n; ci++)
      memset(dst + ci * fc, src[ci], (size_t)fc);
  }
}

/* The panels' pixels of one voxel row: crop_w voxels from i0, each
 * repeated fc times; rl receives the label of each display column, plus
 * BODY_BIT inside the body mask bd (NULL: none). vox is scratch for 3 x
 * crop_w bytes. */
static void panel_row(const psp_qc_canvas *c, const qc_job *job, const float *an, const float *ff,
                      const float *lb, const uint8_t *bd, uint8_t *ra, uint8_t *rf, uint8_t *rl,
                      uint8_t *vox) {
  const psp_qc_layout *L = job->lay;
  const int fc = L->col_scale;
  if (c->bpp == 1) {
    const int64_t n = L->crop_w;
    const float sa = (float)(N_GREY - 1) / (job->whi - job->wlo), sf = (float)(N_GREY - 1);
    const float wlo = job->wlo;
    uint8_t *gq = vox, *fq = vox + n, *lq = vox + 2 * n;
    an += L->i0;
    ff += L->i0;
    PSP_OMP_SIMD("omp simd")
    for (int64_t ci = 0; ci < n; ci++) {
      float a = an[ci], f = ff[ci];
      gq[ci] = (uint8_t)psp_qc_clamp_round(fabsf(a) <= FLT_MAX ? (a - wlo) * sa : 0.0f, N_GREY - 1);
      fq[ci] =
          f != f ? (uint8_t)(N_GREY + INK_NAN) : (uint8_t)psp_qc_clamp_round(f * sf, N_GREY - 1);
    }
    if (lb) {
      lb += L->i0;
      PSP_OMP_SIMD("omp simd")
      for (int64_t ci = 0; ci < n; ci++) {
        float v = lb[ci];
        lq[ci] = (uint8_t)(int)(v >= 1.0f && v < (float)PSP_LABEL_COUNT ? v : 0.0f);
      }
    } else {
      for (int64_t ci = 0; ci < n; ci++)
        lq[ci] = 0;
    }
    if (bd) {
      bd += L->i0;
      PSP_OMP_SIMD("omp simd")
      for (int64_t ci = 0; ci < n; ci++)
        lq[ci] |= bd[ci] ? BODY_BIT : 0;
    }
    expand_cols(ra, gq, n, fc);
    expand_cols(rf, fq, n, fc);
    expand_cols(rl, lq, n, fc);
    return;
  }
  const float scale = 255.0f / (job->whi - job->wlo);
  const uint8_t *nan_rgb = psp_qc_ink_rgb[INK_NAN];
  for (int64_t ci = 0; ci < L->crop_w; ci++) {
    const int64_t i = L->i0 + ci;
    float a = an[i], f = ff[i];
    uint8_t g = (uint8_t)psp_qc_clamp_round(isfinite(a) ? (a - job->wlo) * scale : 0.0f, 255);
    uint8_t frgb[3];
    if (isnan(f)) {
      memcpy(frgb, nan_rgb, 3);
    } else {
      frgb[0] = frgb[1] = frgb[2] = (uint8_t)psp_qc_clamp_round(f * 255.0f, 255);
    }
    int l = 0;
    if (lb) l = (lb[i] >= 1 && lb[i] < PSP_LABEL_COUNT) ? (int)lb[i] : 0;
    if (bd && bd[i]) l |= BODY_BIT;
    for (int r = 0; r < fc; r++) {
      size_t x = (size_t)(ci * fc + r);
      ra[3 * x] = ra[3 * x + 1] = ra[3 * x + 2] = g;
      memcpy(rf + 3 * x, frgb, 3);
      rl[x] = (uint8_t)l;
    }
  }
}

/* Bytes of the scratch buffer render_slice needs. */
static size_t scratch_size(const psp_qc_layout *L) {
  return (size_t)L->panel_w * (size_t)L->panel_h + 3 * (size_t)L->crop_w;
}

/* Renders slice k into c (allocated by the caller, c->w x c->h). lab is a
 * scratch buffer of scratch_size() bytes. */
static void render_slice(psp_qc_canvas *c, uint8_t *lab, const qc_job *job, int64_t k) {
  const psp_qc_layout *L = job->lay;
  const int64_t *d = job->anat->dims;
  const int64_t plane = d[0] * d[1];
  const float *an = job->anat->data + k * plane;
  const float *ff = job->ff->data + k * plane;
  const float *lb = job->labels ? job->labels->data + k * plane : NULL;
  const uint8_t *bd = job->marks ? job->marks[k].body : NULL;
  const int W = L->panel_w, H = L->panel_h, fc = L->col_scale, bpp = c->bpp;

  const size_t stride = (size_t)c->w * (size_t)bpp;
  if (bpp == 1) {
    memset(c->px, N_GREY + INK_BG, stride * (size_t)c->h);
  } else {
    for (int x = 0; x < c->w; x++)
      memcpy(c->px + 3 * (size_t)x, psp_qc_ink_rgb[INK_BG], 3);
    for (int y = 1; y < c->h; y++)
      memcpy(c->px + (size_t)y * stride, c->px, stride);
  }
  for (int y = 0; y < H; y++) {
    int64_t j = job->rowmap[y];
    uint8_t *ra = c->px + (size_t)(L->panel_y + y) * stride + (size_t)L->panel_x[0] * bpp;
    uint8_t *rf = c->px + (size_t)(L->panel_y + y) * stride + (size_t)L->panel_x[1] * bpp;
    uint8_t *rl = lab + (size_t)y * (size_t)W;
    if (y > 0 && job->rowmap[y - 1] == j) { /* upscaled: repeat the row above */
      memcpy(ra, ra - stride, (size_t)W * bpp);
      memcpy(rf, rf - stride, (size_t)W * bpp);
      memcpy(rl, rl - W, (size_t)W);
      continue;
    }
    panel_row(c, job, an + j * d[0], ff + j * d[0], lb ? lb + j * d[0] : NULL,
              bd ? bd + j * d[0] : NULL, ra, rf, rl, lab + (size_t)W * (size_t)H);
  }
  /* the body's outline: body pixels with a 4-neighbour outside it, away
   * from the panel's edge; drawn first, so the muscles' outlines cover it */
  if (bd) {
    for (int y = 1; y < H - 1; y++) {
      const uint8_t *row = lab + (size_t)y * W;
      for (int x = 1; x < W - 1; x++) {
        if (!(row[x] & BODY_BIT) || (row[x - 1] & row[x + 1] & row[x - W] & row[x + W] & BODY_BIT))
          continue;
        psp_qc_put(c, L->panel_x[0] + x, L->panel_y + y, psp_qc_fixed(INK_BODY));
        psp_qc_put(c, L->panel_x[1] + x, L->panel_y + y, psp_qc_fixed(INK_BODY));
      }
    }
    for (size_t q = 0; q < (size_t)W * (size_t)H; q++)
      lab[q] &= (uint8_t)~BODY_BIT;
  }
  /* outlines: label pixels with a differing 4-neighbour (or the panel edge) */
  if (lb) {
    for (int y = 0; y < H; y++)
      for (int x0 = 0; x0 < W; x0 += OUTLINE_RUN) {
        const int x1 = x0 + OUTLINE_RUN < W ? x0 + OUTLINE_RUN : W;
        const uint8_t *row = lab + (size_t)y * W;
        uint8_t any = 0; /* skip runs without a label (most of the panel) */
        PSP_OMP_SIMD("omp simd reduction(| : any)")
        for (int x = x0; x < x1; x++)
          any |= row[x];
        if (!any) continue;
        for (int x = x0; x < x1; x++) {
          uint8_t l = row[x];
          if (!l) continue;
          bool edge = x == 0 || y == 0 || x == W - 1 || y == H - 1 || row[x - 1] != l ||
                      row[x + 1] != l || row[x - W] != l || row[x + W] != l;
          if (!edge) continue;
          psp_qc_put(c, L->panel_x[0] + x, L->panel_y + y, psp_qc_fixed(INK_LABEL0 + l - 1));
          psp_qc_put(c, L->panel_x[1] + x, L->panel_y + y, psp_qc_fixed(INK_LABEL0 + l - 1));
        }
      }
  }
  /* landmarks */
  if (job->marks) {
    const psp_qc_slice_marks *m = &job->marks[k];
    double pts[3][2] = {{m->canal_i, m->canal_j}, {m->vb_i, m->vb_j}, {m->spinous_i, m->spinous_j}};
    for (int pan = 0; pan < 2; pan++) {
      int x0 = L->panel_x[pan], y0 = L->panel_y;
      if (isfinite(m->midline_i)) {
        /* along the spine's axis: row y shows voxel row j0 + (y + 0.5) /
         * row_scale - 0.5 */
        double slope = isfinite(m->midline_slope) && isfinite(m->canal_j) ? m->midline_slope : 0.0;
        for (int y = 0; y < H; y++) {
          double j = (double)L->j0 + (y + 0.5) / L->row_scale - 0.5;
          double off = slope != 0.0 ? slope * (j - m->canal_j) : 0.0;
          double xm = floor((m->midline_i + off - (double)L->i0 + 0.5) * fc);
          if (xm >= 0 && xm < W && (y / 3) % 2 == 0)
            psp_qc_put(c, x0 + (int)xm, y0 + y, psp_qc_fixed(INK_MARK));
        }
      }
      for (int q = 0; q < 3; q++) {
        if (!isfinite(pts[q][0]) || !isfinite(pts[q][1])) continue;
        double xd = floor((pts[q][0] - (double)L->i0 + 0.5) * fc),
               yd = floor((pts[q][1] - (double)L->j0 + 0.5) * L->row_scale);
        if (xd < -CROSS_ARM || yd < -CROSS_ARM || xd > W + CROSS_ARM || yd > H + CROSS_ARM)
          continue;
        draw_cross(c, x0 + (int)xd, y0 + (int)yd, x0, y0, x0 + W, y0 + H);
      }
    }
  }
  /* orientation: radiological, patient Right on the image's left */
  const int bw = GLYPH_W * TEXT_SCALE + 4, bh = LINE_H + 4;
  for (int pan = 0; pan < 2; pan++) {
    int x0 = L->panel_x[pan], y0 = L->panel_y;
    psp_qc_boxed_letter(c, x0 + (W - bw) / 2, y0, 'A');
    psp_qc_boxed_letter(c, x0 + (W - bw) / 2, y0 + H - bh, 'P');
    psp_qc_boxed_letter(c, x0, y0 + (H - bh) / 2, 'R');
    psp_qc_boxed_letter(c, x0 + W - bw, y0 + (H - bh) / 2, 'L');
  }
  draw_header(c, job, k);
  draw_legend(c, job);
}

/* ------------------------------------------------------------------------ */
/* Rendering, encoding and writing a slice                                   */
/* ------------------------------------------------------------------------ */

/* A worker's buffers, reused from slice to slice: the canvas, the label
 * scratch and the PNG bytes (grown as needed). */
typedef struct slice_buffers {
  uint8_t *px, *lab;
  unsigned char *png;
  size_t cap;
  psp_qc_png_scratch enc;
} slice_buffers;

/* Renders, encodes and writes QC_DIR/slice_NNN.png for slice k with the
 * worker's buffers b; the outcome in o. */
static void do_slice(const qc_job *job, const char *qc_dir, int64_t k, slice_buffers *b,
                     psp_qc_slice_out *o) {
  const psp_qc_layout *L = job->lay;
  psp_qc_canvas c = {b->px, L->width, L->height, 1};
  if (!b->px || !b->lab) {
    psp_qc_fail(o, PSP_ERR_NOMEM, "out of memory rendering a QC image");
    return;
  }
  render_slice(&c, b->lab, job, k);
  o->png = b->png; /* (psp_qc_encode_png grows it: the worker keeps it) */
  o->cap = b->cap;
  o->len = 0;
  psp_qc_encode_png(&c, job->level, &b->enc, o);
  b->png = o->png;
  b->cap = o->cap;
  if (o->status == PSP_OK) {
    char name[64], path[4096];
    snprintf(name, sizeof name, "slice_%03lld.png", (long long)psp_volume_file_slice(job->anat, k));
    if (psp_path_join(path, sizeof path, qc_dir, name, &o->write_err))
      psp_write_file(path, o->png, o->len, job->sync, &o->write_err);
  }
  o->png = NULL;
}

/* ------------------------------------------------------------------------ */
/* Entry                                                                     */
/* ------------------------------------------------------------------------ */

/* Whether some slice's marks hold a body mask (the legend names it). */
static bool any_body(const psp_qc_slice_marks *marks, int64_t nz) {
  for (int64_t k = 0; marks && k < nz; k++)
    if (marks[k].body) return true;
  return false;
}

bool psp_qc_anatomy_window(const psp_volume *anatomy, float window[2], psp_error **err) {
  return psp_qc_window(anatomy, &window[0], &window[1], err);
}

bool psp_qc_write_pngs(const char *qc_dir, const psp_volume *anatomy, const psp_volume *ff,
                       const psp_volume *labels, const psp_qc_slice_marks *marks,
                       int compression_level, psp_context *ctx, psp_error **err) {
  return psp_qc_write_pngs_window(qc_dir, anatomy, ff, labels, marks, NULL, compression_level,
                                  PSP_SYNC_NOW, ctx, err);
}

bool psp_qc_write_pngs_window(const char *qc_dir, const psp_volume *anatomy, const psp_volume *ff,
                              const psp_volume *labels, const psp_qc_slice_marks *marks,
                              const float *window, int compression_level, psp_sync sync,
                              psp_context *ctx, psp_error **err) {
  if (!qc_dir || !anatomy || !ff)
    return psp_error_set(err, PSP_ERR_USAGE, "QC images: folder, anatomy and FF map are required");
  if (!psp_qc_same_grid(anatomy, ff, "FF map", err)) return false;
  if (labels && !psp_qc_same_grid(anatomy, labels, "label map", err)) return false;
  psp_qc_layout lay;
  if (!psp_qc_layout_zoom(anatomy, labels, &lay, err)) return false;
  if (!psp_mkdir_p(qc_dir, err)) return false;

  qc_job job = {.anat = anatomy,
                .ff = ff,
                .labels = labels,
                .marks = marks,
                .body = any_body(marks, anatomy->dims[2]),
                .lay = &lay,
                .level = compression_level < 0   ? DEFAULT_LEVEL
                         : compression_level > 9 ? 9
                                                 : compression_level,
                .sync = sync};
  if (window)
    job.wlo = window[0], job.whi = window[1];
  else if (!psp_qc_window(anatomy, &job.wlo, &job.whi, err))
    return false;
  const int64_t nz = anatomy->dims[2];
  int *rowmap = psp_malloc((size_t)lay.panel_h * sizeof *rowmap, err);
  psp_qc_slice_out *outs = psp_calloc((size_t)nz, sizeof *outs, err);
  if (!rowmap || !outs) {
    free(rowmap);
    free(outs);
    return false;
  }
  fill_rowmap(&lay, rowmap);
  job.rowmap = rowmap;

  int nth = psp_context_threads(ctx);
  if (nth < 1) nth = 1;
#pragma omp parallel num_threads(nth)
  {
    slice_buffers b = {
        malloc((size_t)lay.width * (size_t)lay.height), malloc(scratch_size(&lay)), NULL, 0, {0}};
#pragma omp for schedule(dynamic, 1)
    for (int64_t k = 0; k < nz; k++)
      do_slice(&job, qc_dir, k, &b, &outs[k]);
    free(b.px);
    free(b.lab);
    free(b.png);
    psp_qc_png_scratch_free(&b.enc);
  }
  /* the first failure in slice order */
  bool ok = true;
  for (int64_t k = 0; k < nz; k++) {
    if (ok && outs[k].status != PSP_OK) {
      psp_error_set(err, outs[k].status, "QC image of slice %lld: %s", (long long)k, outs[k].msg);
      ok = false;
    }
    if (ok && outs[k].write_err) {
      if (err && !*err) {
        *err = outs[k].write_err;
        outs[k].write_err = NULL;
      }
      ok = false;
    }
    psp_error_free(outs[k].write_err);
  }
  free(outs);
  free(rowmap);
  return ok;
}

/* ------------------------------------------------------------------------ */
/* One slice as RGB, and the font, for other writers (src/report/dicom_out.c) */
/* ------------------------------------------------------------------------ */

uint8_t *psp_qc_render_rgb(const psp_volume *anatomy, const psp_volume *ff,
                           const psp_volume *labels, const psp_qc_slice_marks *marks, int64_t k,
                           int *width, int *height, psp_error **err) {
  if (!anatomy || !ff || k < 0 || k >= anatomy->dims[2]) {
    psp_error_set(err, PSP_ERR_USAGE, "QC image: anatomy, FF map and a slice in range needed");
    return NULL;
  }
  psp_qc_layout lay;
  qc_job job = {.anat = anatomy,
                .ff = ff,
                .labels = labels,
                .marks = marks,
                .body = any_body(marks, anatomy->dims[2]),
                .lay = &lay};
  if (!psp_qc_same_grid(anatomy, ff, "FF map", err) ||
      (labels && !psp_qc_same_grid(anatomy, labels, "label map", err)) ||
      !psp_qc_layout_zoom(anatomy, labels, &lay, err) ||
      !psp_qc_window(anatomy, &job.wlo, &job.whi, err))
    return NULL;
  int *rowmap = psp_malloc((size_t)lay.panel_h * sizeof *rowmap, err);
  psp_qc_canvas c = {psp_malloc((size_t)lay.width * (size_t)lay.height * 3, err), lay.width,
                     lay.height, 3};
  uint8_t *lab = psp_malloc(scratch_size(&lay), err);
  if (rowmap && c.px && lab) {
    fill_rowmap(&lay, rowmap);
    job.rowmap = rowmap;
    render_slice(&c, lab, &job, k);
    *width = c.w;
    *height = c.h;
  } else {
    free(c.px);
    c.px = NULL;
  }
  free(rowmap);
  free(lab);
  return c.px;
}

int psp_qc_draw_text(uint8_t *rgb, int width, int height, int x, int y, const char *s,
                     const uint8_t colour[3]) {
  psp_qc_canvas c = {rgb, width, height, 3};
  psp_qc_ink k = {{colour[0], colour[1], colour[2]}, 0};
  return psp_qc_text(&c, x, y, s, k, width);
}

int psp_qc_char_advance(void) {
  return CHAR_ADV;
}

int psp_qc_line_height(void) {
  return LINE_H;
}
