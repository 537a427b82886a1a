/*
 * DESIGN: the sagittal reformat with the level assignment (sagittal.png),
 * one image per scan, so that a reader can check the vertebral levels along
 * the spine at a glance. The axial slices are drawn by qc_png.c; both use
 * the canvas, font, colours and PNG encoder of qc_draw.c (qc_draw.h).
 *
 * Layout: file slice numbers | anatomy panel | FF panel | marrow profile |
 * confidence bar | level names. Both panels show the same sagittal plane at
 * a common scale (display pixels per mm) chosen so that a panel is about
 * 300-560 px wide and each slice gets >= 8 rows when that fits; rows and
 * columns are mapped by nearest neighbour, so the true proportions hold
 * whatever the spacing. Disc lines are dotted (dashed when inferred) so the
 * disc band itself stays visible under them. The plane is the mean of the
 * columns within 1.5 mm of the midline; the anatomy shares the axial
 * slices' window (psp_qc_anatomy_window) and the palette of the axial PNGs.
 */
#include "report/qc_draw.h"
#include "report/qc_png.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
  SAG_MIN_W = 300,
  SAG_MAX_W = 560,
  SAG_MAX_H = 4000,
  SAG_ROW_PX = 8,
  SAG_PROF_W = 120,
  SAG_AXIS_W = 4 * CHAR_ADV + 8,
  SAG_BAR_W = 8,
  SAG_NAME_W = 8 * CHAR_ADV,
  SAG_MIN_WIDTH = 560,
};
static int conf_class(double c) {
  if (!(c > 0)) return 0;
  if (c < 0.4) return 1;
  if (c < 0.7) return 2;
  return 3;
}

static int text_width(const char *s) {
  size_t n = strlen(s);
  return n ? (int)n * CHAR_ADV - TEXT_SCALE : 0;
}

/* Horizontal line from x0 to x1 (inclusive) at row y: pattern on/off
 * pixels (off = 0: solid). */
static void hline(psp_qc_canvas *c, int x0, int x1, int y, int on, int off, psp_qc_ink k) {
  for (int x = x0; x <= x1; x++)
    if (off == 0 || (x - x0) % (on + off) < on) psp_qc_put(c, x, y, k);
}

/* Bresenham line. */
static void draw_line(psp_qc_canvas *c, int x0, int y0, int x1, int y1, psp_qc_ink k) {
  int dx = abs(x1 - x0), dy = -abs(y1 - y0);
  int sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1, e = dx + dy;
  for (;;) {
    psp_qc_put(c, x0, y0, k);
    if (x0 == x1 && y0 == y1) break;
    int e2 = 2 * e;
    if (e2 >= dy) {
      e += dy;
      x0 += sx;
    }
    if (e2 <= dx) {
      e += dx;
      y0 += sy;
    }
  }
}

/* Midline column per slice: the given one, else interpolated from the
 * nearest slices that have one, else the image centre. */
static void sagittal_midline(const psp_qc_sagittal *s, int64_t nx, int64_t nz, double *mid) {
  const double *g = s->midline_i;
#define GIVEN(k) (g && isfinite(g[k]) && g[k] >= 0 && g[k] <= (double)(nx - 1))
  for (int64_t k = 0; k < nz; k++) {
    if (GIVEN(k)) {
      mid[k] = g[k];
      continue;
    }
    int64_t lo = k - 1, hi = k + 1;
    while (lo >= 0 && !GIVEN(lo))
      lo--;
    while (hi < nz && !GIVEN(hi))
      hi++;
    double v = 0.5 * (double)(nx - 1);
    if (lo >= 0 && hi < nz)
      v = g[lo] + (g[hi] - g[lo]) * (double)(k - lo) / (double)(hi - lo);
    else if (lo >= 0)
      v = g[lo];
    else if (hi < nz)
      v = g[hi];
    mid[k] = v;
  }
#undef GIVEN
}

typedef struct sag_label {
  int y0, y1;
} sag_label;

/* True when rows y0..y1 are free of the labels drawn so far; records them. */
static bool label_place(sag_label *used, int *n, int y0, int y1) {
  for (int i = 0; i < *n; i++)
    if (y0 <= used[i].y1 + 1 && y1 >= used[i].y0 - 1) return false;
  used[*n].y0 = y0;
  used[*n].y1 = y1;
  (*n)++;
  return true;
}

bool psp_qc_write_sagittal(const char *path, const psp_qc_sagittal *s, int compression_level,
                           psp_sync sync, psp_qc_sagittal_geometry *geo, psp_error **err) {
  if (!path || !s || !s->anatomy || !s->ff)
    return psp_error_set(err, PSP_ERR_USAGE, "sagittal QC image: path, anatomy and FF map needed");
  if (!psp_qc_same_grid(s->anatomy, s->ff, "FF map", err)) return false;
  const psp_volume *A = s->anatomy, *F = s->ff;
  const int64_t nx = A->dims[0], ny = A->dims[1], nz = A->dims[2];
  if (nx <= 0 || ny <= 0 || nz <= 0)
    return psp_error_set(err, PSP_ERR_USAGE, "sagittal QC image: empty volume");
  double sp[3];
  psp_volume_spacing(A, sp);
  for (int a = 0; a < 3; a++)
    if (!(sp[a] > 0) || !isfinite(sp[a]))
      return psp_error_set(err, PSP_ERR_GEOMETRY, "sagittal QC image: invalid spacing");

  bool ok = false;
  double *mid = psp_malloc((size_t)nz * sizeof *mid, err);
  float *pa = psp_malloc((size_t)(ny * nz) * sizeof *pa, err);
  float *pf = psp_malloc((size_t)(ny * nz) * sizeof *pf, err);
  psp_qc_canvas c = {NULL, 0, 0, 1};
  int *rowk = NULL, *colj = NULL;
  sag_label *used = NULL;
  psp_qc_slice_out o;
  memset(&o, 0, sizeof o);
  if (!mid || !pa || !pf) goto done;

  /* the sagittal plane: mean of the columns within 1.5 mm of the midline */
  sagittal_midline(s, nx, nz, mid);
  const int hw = (int)floor(1.5 / sp[0] + 1e-9);
  int64_t j0 = ny, j1 = -1;
  for (int64_t k = 0; k < nz; k++) {
    int64_t ic = (int64_t)floor(mid[k] + 0.5);
    for (int64_t j = 0; j < ny; j++) {
      double sa = 0, sf = 0;
      int na = 0, nf = 0;
      for (int64_t i = ic - hw; i <= ic + hw; i++) {
        if (i < 0 || i >= nx) continue;
        float a = A->data[psp_idx(A->dims, i, j, k)], f = F->data[psp_idx(F->dims, i, j, k)];
        if (isfinite(a)) {
          sa += a;
          na++;
        }
        if (isfinite(f)) {
          sf += f;
          nf++;
        }
      }
      pa[k * ny + j] = na ? (float)(sa / na) : NAN;
      pf[k * ny + j] = nf ? (float)(sf / nf) : NAN;
    }
  }
  /* crop along j to the rows with signal on at least half of the slices
   * (isolated noise voxels do not count) */
  for (int64_t j = 0; j < ny; j++) {
    int64_t n = 0;
    for (int64_t k = 0; k < nz; k++)
      n += isfinite(pf[k * ny + j]) ? 1 : 0;
    if (2 * n >= nz) {
      if (j < j0) j0 = j;
      if (j > j1) j1 = j;
    }
  }
  if (j1 < j0) {
    j0 = 0;
    j1 = ny - 1;
  }
  j0 = j0 - 3 < 0 ? 0 : j0 - 3;
  j1 = j1 + 3 >= ny ? ny - 1 : j1 + 3;
  const int64_t nj = j1 - j0 + 1;

  /* scale: display pixels per mm, the same along j and k */
  const double wmm = (double)nj * sp[1], hmm = (double)nz * sp[2];
  double sc = fmax(SAG_MIN_W / wmm, SAG_ROW_PX / sp[2]);
  sc = fmin(sc, SAG_MAX_W / wmm);
  sc = fmin(sc, SAG_MAX_H / hmm);
  long Wp = lround(wmm * sc), H = lround(hmm * sc);
  if (Wp < 1) Wp = 1;
  if (H < nz) H = (long)nz;
  if (Wp > MAX_PANEL_SIDE || H > MAX_PANEL_SIDE) {
    psp_error_set(err, PSP_ERR_LIMIT, "sagittal QC image: %lld slices would need more than %d rows",
                  (long long)nz, MAX_PANEL_SIDE);
    goto done;
  }
  const int px[2] = {PAD + SAG_AXIS_W, PAD + SAG_AXIS_W + (int)Wp + PAD};
  const int prof_x = px[1] + (int)Wp + PAD, bar_x = prof_x + SAG_PROF_W + PAD;
  const int name_x = bar_x + SAG_BAR_W + 6, py = HEADER_H;
  c.w = name_x + SAG_NAME_W + PAD;
  if (c.w < SAG_MIN_WIDTH) c.w = SAG_MIN_WIDTH;
  c.h = HEADER_H + (int)H + LEGEND_H;
  c.px = psp_malloc((size_t)c.w * (size_t)c.h, err);
  rowk = psp_malloc((size_t)H * sizeof *rowk, err);
  colj = psp_malloc((size_t)Wp * sizeof *colj, err);
  used = psp_malloc((size_t)(2 * nz + s->n_discs + 1) * sizeof *used, err);
  if (!c.px || !rowk || !colj || !used) goto done;
  memset(c.px, N_GREY + INK_BG, (size_t)c.w * (size_t)c.h);
  for (long y = 0; y < H; y++) {
    int64_t q = (int64_t)floor(((double)y + 0.5) * (double)nz / (double)H);
    rowk[y] = (int)(nz - 1 - (q < 0 ? 0 : q >= nz ? nz - 1 : q));
  }
  for (long x = 0; x < Wp; x++) {
    int64_t q = (int64_t)floor(((double)x + 0.5) * (double)nj / (double)Wp);
    colj[x] = (int)(j0 + (q < 0 ? 0 : q >= nj ? nj - 1 : q));
  }

  /* panels */
  float wlo, whi;
  if (s->window)
    wlo = s->window[0], whi = s->window[1];
  else if (!psp_qc_window(A, &wlo, &whi, err))
    goto done;
  const float sa = (float)(N_GREY - 1) / (whi - wlo), sf = (float)(N_GREY - 1);
  for (long y = 0; y < H; y++) {
    const int64_t k = rowk[y];
    uint8_t *ra = c.px + (size_t)(py + y) * (size_t)c.w + px[0];
    uint8_t *rf = c.px + (size_t)(py + y) * (size_t)c.w + px[1];
    for (long x = 0; x < Wp; x++) {
      const int64_t j = colj[x];
      float a = pa[k * ny + j], f = pf[k * ny + j];
      ra[x] = (uint8_t)psp_qc_clamp_round(isfinite(a) ? (a - wlo) * sa : 0.0f, N_GREY - 1);
      rf[x] =
          isnan(f) ? (uint8_t)(N_GREY + INK_NAN) : (uint8_t)psp_qc_clamp_round(f * sf, N_GREY - 1);
    }
  }
  /* marrow profile plot */
  psp_qc_fill_rect(&c, prof_x, py, SAG_PROF_W, (int)H, psp_qc_fixed(INK_PLOT_BG));
  for (int q = 0; q <= 4; q++) {
    int x = prof_x + q * (SAG_PROF_W - 1) / 4;
    for (long y = 0; y < H; y++)
      if (q % 2 == 0 || y % 4 < 2) psp_qc_put(&c, x, py + (int)y, psp_qc_fixed(INK_GRID));
  }
  if (s->profile) {
    int lx = -1, ly = -1;
    for (int64_t k = nz - 1; k >= 0; k--) {
      double v = s->profile[k];
      if (!isfinite(v)) {
        lx = -1;
        continue;
      }
      v = v < 0 ? 0 : v > 1 ? 1 : v;
      int x = prof_x + (int)lround(v * (SAG_PROF_W - 1));
      int y = py + (int)floor(((double)nz - 0.5 - (double)k) * (double)H / (double)nz);
      if (lx >= 0) draw_line(&c, lx, ly, x, y, psp_qc_fixed(INK_TEXT));
      psp_qc_fill_rect(&c, x - 1, y - 1, 3, 3, psp_qc_fixed(INK_TEXT));
      lx = x;
      ly = y;
    }
  }
  /* confidence bar */
  for (long y = 0; y < H; y++) {
    double cf = s->confidence ? s->confidence[rowk[y]] : NAN;
    const char *nm = s->names ? s->names[rowk[y]] : "";
    psp_qc_fill_rect(&c, bar_x, py + (int)y, SAG_BAR_W, 1,
                     psp_qc_fixed(INK_CONF0 + (nm && nm[0] ? conf_class(cf) : 0)));
  }
  /* file slice numbers every `step` slices */
  {
    static const int steps[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000};
    int step = 1000;
    for (size_t q = 0; q < sizeof steps / sizeof steps[0]; q++)
      if ((double)steps[q] * (double)H / (double)nz >= LINE_H + 4) {
        step = steps[q];
        break;
      }
    for (int64_t k = 0; k < nz; k++) {
      int64_t fs = psp_volume_file_slice(A, k);
      if (fs % step != 0) continue;
      int y = py + (int)floor(((double)nz - 0.5 - (double)k) * (double)H / (double)nz);
      char t[32];
      snprintf(t, sizeof t, "%lld", (long long)fs);
      psp_qc_text(&c, px[0] - 8 - text_width(t), y - LINE_H / 2, t, psp_qc_fixed(INK_TEXT), px[0]);
      hline(&c, px[0] - 5, px[0] - 1, y, 1, 0, psp_qc_fixed(INK_TEXT));
    }
  }
  /* discs: dotted (dashed when inferred) lines and their names */
  int nused = 0;
  for (size_t d = 0; d < s->n_discs; d++) {
    const psp_qc_disc_mark *m = &s->discs[d];
    if (!isfinite(m->slice) || m->slice < -0.5 || m->slice > (double)nz - 0.5) continue;
    int y = py + (int)floor(((double)nz - 0.5 - m->slice) * (double)H / (double)nz);
    if (y >= py + H) y = py + (int)H - 1;
    int on = m->inferred ? 6 : 2, off = m->inferred ? 4 : 2;
    hline(&c, px[0] - 4, px[0] + (int)Wp - 1, y, on, off, psp_qc_fixed(INK_DISC));
    hline(&c, px[1], px[1] + (int)Wp - 1, y, on, off, psp_qc_fixed(INK_DISC));
    hline(&c, prof_x, bar_x - 1, y, on, off, psp_qc_fixed(INK_DISC));
    hline(&c, bar_x - 4, name_x - 2, y, 1, 0, psp_qc_fixed(INK_DISC));
    const char *nm = m->name && m->name[0] ? m->name : "DISC";
    int ty = y - LINE_H / 2;
    if (ty < py - LINE_H / 2) ty = py - LINE_H / 2;
    if (label_place(used, &nused, ty, ty + LINE_H - 1))
      psp_qc_text(&c, name_x, ty, nm, psp_qc_fixed(INK_DISC), c.w);
  }
  /* vertebra (non-disc) names at the middle of each run of slices */
  if (s->names) {
    for (int64_t k0 = 0; k0 < nz;) {
      const char *nm = s->names[k0];
      bool disc = s->is_disc && s->is_disc[k0];
      int64_t k1 = k0;
      while (k1 + 1 < nz && !strcmp(s->names[k1 + 1], nm) &&
             (s->is_disc && s->is_disc[k1 + 1]) == disc)
        k1++;
      if (nm && nm[0] && !disc) {
        double kc = 0.5 * (double)(k0 + k1);
        int y = py + (int)floor(((double)nz - 0.5 - kc) * (double)H / (double)nz);
        int ty = y - LINE_H / 2;
        if (ty >= py - 2 && ty + LINE_H <= py + H + 2 &&
            label_place(used, &nused, ty, ty + LINE_H - 1))
          psp_qc_text(&c, name_x, ty, nm, psp_qc_fixed(INK_TEXT), c.w);
      }
      k0 = k1 + 1;
    }
  }
  /* orientation letters: superior at the top, anterior on the left */
  {
    const int bw = GLYPH_W * TEXT_SCALE + 4, bh = LINE_H + 4;
    for (int pan = 0; pan < 2; pan++) {
      if (H >= 2 * bh + 4) {
        psp_qc_boxed_letter(&c, px[pan] + ((int)Wp - bw) / 2, py, 'S');
        psp_qc_boxed_letter(&c, px[pan] + ((int)Wp - bw) / 2, py + (int)H - bh, 'I');
      }
      psp_qc_boxed_letter(&c, px[pan], py + ((int)H - bh) / 2, 'A');
      psp_qc_boxed_letter(&c, px[pan] + (int)Wp - bw, py + ((int)H - bh) / 2, 'P');
    }
  }
  /* header and legend */
  {
    char t[192];
    int ncol = 2 * hw + 1;
    snprintf(t, sizeof t,
             "SAGITTAL AT THE MIDLINE (%d COLUMN%s, %.1f MM)   SLICE THICKNESS %.1f MM", ncol,
             ncol > 1 ? "S" : "", ncol * sp[0], sp[2]);
    psp_qc_text(&c, PAD, PAD, t, psp_qc_fixed(INK_TEXT), c.w - PAD);
    int y2 = PAD + LINE_H + LINE_GAP;
    psp_qc_text(&c, px[0], y2, s->anatomy_title ? s->anatomy_title : "IMAGE",
                psp_qc_fixed(INK_TEXT), px[0] + (int)Wp);
    psp_qc_text(&c, px[1], y2, "FF", psp_qc_fixed(INK_TEXT), px[1] + (int)Wp);
    psp_qc_text(&c, prof_x, y2, "MARROW FF", psp_qc_fixed(INK_TEXT), prof_x + SAG_PROF_W + PAD);
    psp_qc_text(&c, name_x, y2, "LEVEL", psp_qc_fixed(INK_TEXT), c.w);
    psp_qc_text(&c, PAD, y2, "FILE", psp_qc_fixed(INK_TEXT), px[0]);
    int y3 = py + (int)H + PAD, y4 = y3 + LINE_H + LINE_GAP, x = PAD;
    hline(&c, x, x + 24, y3 + LINE_H / 2, 2, 2, psp_qc_fixed(INK_DISC));
    x = psp_qc_text(&c, x + 30, y3, "DISC", psp_qc_fixed(INK_TEXT), c.w) + 2 * CHAR_ADV;
    hline(&c, x, x + 24, y3 + LINE_H / 2, 6, 4, psp_qc_fixed(INK_DISC));
    x = psp_qc_text(&c, x + 30, y3, "INFERRED DISC", psp_qc_fixed(INK_TEXT), c.w) + 2 * CHAR_ADV;
    psp_qc_text(&c, x, y3, "PROFILE 0-100%", psp_qc_fixed(INK_TEXT), c.w);
    x = PAD;
    x = psp_qc_text(&c, x, y4, "CONFIDENCE", psp_qc_fixed(INK_TEXT), c.w) + CHAR_ADV;
    static const char *const conf_txt[4] = {"NONE", "<0.4", "0.4-0.7", ">=0.7"};
    for (int q = 3; q >= 0; q--) {
      psp_qc_fill_rect(&c, x, y4, LINE_H, LINE_H, psp_qc_fixed(INK_CONF0 + q));
      x = psp_qc_text(&c, x + LINE_H + 6, y4, conf_txt[q], psp_qc_fixed(INK_TEXT), c.w) +
          2 * CHAR_ADV;
    }
  }

  psp_qc_png_scratch enc = {0};
  psp_qc_encode_png(&c,
                    compression_level < 0   ? DEFAULT_LEVEL
                    : compression_level > 9 ? 9
                                            : compression_level,
                    &enc, &o);
  psp_qc_png_scratch_free(&enc);
  if (o.status != PSP_OK) {
    psp_error_set(err, o.status, "sagittal QC image: %s", o.msg);
    goto done;
  }
  if (!psp_write_file(path, o.png, o.len, sync, err)) goto done;
  if (geo) {
    geo->width = c.w;
    geo->height = c.h;
    geo->panel_y = py;
    geo->panel_h = (int)H;
    geo->n_slices = nz;
  }
  ok = true;
done:
  free(o.png);
  free(mid);
  free(pa);
  free(pf);
  free(c.px);
  free(rowk);
  free(colj);
  free(used);
  return ok;
}
