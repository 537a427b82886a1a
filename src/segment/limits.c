/*
 * DESIGN: where the multifidus compartment ends medially (the midline bone:
 * spinous process, interspinous fat) and in front (the back surface of the
 * lamina), per row and per column of one side of one axial slice. Both are
 * image edges found in mm-sized windows, smoothed by running medians; the
 * reasons and what was measured are in the comments below and in the
 * DESIGN comment of segment.c (step 2). Pure functions of their inputs:
 * called per slice from the parallel loop of psp_segment.
 */
#include "segment/limits.h"

#include <stdlib.h>
#include <string.h>

#define GAP_ROWS_MM 5.0 /* the medial limit: running median over this many mm of rows */
/* the midline bone's fattiest point on this side: searched this far */
#define GAP_PEAK_MM 5.0
#define GAP_LEVEL                                                                                  \
  0.5 /* the bone edge: this share of the way from the tissue beside it to the peak */
#define GAP_SIDE_MM 10.0    /* the tissue beside the midline bone: median over this width */
#define GAP_PROMINENCE 0.04 /* FF: a midline peak below this over its side is no bone */
#define LAM_MAX_MM 12.0     /* the lamina's back surface: searched this far behind the canal */
#define LAM_D_MAX_MM 25.0   /* lateral extent of the lamina (to the facet joints) */
#define LAM_SIGNAL 0.7      /* bone: water + fat below this share of the muscle's behind it */
#define LAM_REF_MM 10.0     /* the muscle behind the lamina: rows over this depth */
#define LAM_AVG_MM 1.0      /* profile: mean over the columns within this distance */
#define LAM_COLS_MM 5.0     /* the front limit: running median over this many mm of columns */
#define LAM_ROWS 256        /* profile buffer (rows); longer profiles (fine pixels) get no limit */

/* The medial limit of one side per row (mm from the midline): the edge of
 * the midline bone (spinous process, lamina) or interspinous fat, where the
 * FF (3-row mean: the spinous process runs front to back) falls half way
 * from the midline peak (within GAP_PEAK_MM on this side) to the tissue beside
 * it (median over GAP_SIDE_MM). A fatty medial multifidus (FF well above
 * the slice's muscle level, common at the upper lumbar levels) is muscle
 * beside the bone, not part of it. Clamped to GAP_MIN_MM..GAP_MAX_MM;
 * GAP_MIN_MM where no peak stands out (behind the spinous process). */
void psp_seg_medial_limits(const float *ff, int64_t nx, int64_t ny, double sx, double sy,
                           double mid, double j_canal, int sgn, double *gap, double *raw) {
  int64_t m0 = (int64_t)lround(mid), hp = psp_seg_vox(GAP_PEAK_MM, sx),
          hs = psp_seg_vox(GAP_SIDE_MM, sx);
  int64_t hw = hp + hs + 1;
  double last[3] = {GAP_MIN_MM, GAP_MIN_MM, GAP_MIN_MM};
  int nlast = 0;
  for (int64_t j = 0; j < ny; j++) {
    /* behind the tip of the spinous process the supraspinous ligament
     * goes on: the last rows' limit (median of three) is kept */
    double carry = nlast == 0 ? GAP_MIN_MM
                              : fmax(fmin(last[0], last[1]), fmin(fmax(last[0], last[1]), last[2]));
    gap[j] = j > j_canal ? carry : GAP_MIN_MM;
    double prof[2 * 64 + 1];
    if (hw > 64) continue;
    for (int64_t t = -hw; t <= hw; t++) {
      double acc = 0;
      int m = 0;
      for (int64_t b = j - 1; b <= j + 1; b++) {
        int64_t i = m0 + sgn * t;
        if (b < 0 || b >= ny || i < 0 || i >= nx) continue;
        float v = ff[b * nx + i];
        acc += isnan(v) ? 1.0 : v;
        m++;
      }
      prof[t + hw] = m ? acc / m : 1.0;
    }
    /* the fattiest point of the midline bone on this side: within
     * GAP_PEAK_MM of the midline (the voxel on it included) */
    double off = sgn * ((double)m0 - mid) * sx; /* mm from the midline at t = 0 */
    int64_t tp = off >= -0.51 * sx ? 0 : 1;
    for (int64_t t = tp; t <= hp; t++)
      if (prof[t + hw] > prof[tp + hw]) tp = t;
    double peak = prof[tp + hw], side[64];
    for (int64_t t = 1; t <= hs; t++)
      side[t - 1] = prof[tp + t + hw];
    qsort(side, (size_t)hs, sizeof *side, psp_seg_cmp_double);
    double lo = hs % 2 ? side[hs / 2] : 0.5 * (side[hs / 2 - 1] + side[hs / 2]);
    if (peak - lo < GAP_PROMINENCE) continue;
    double lim = lo + GAP_LEVEL * (peak - lo);
    /* down the bone's flank: a rise above the peak is other tissue (a
     * fatty multifidus, partial volume with its fascia), not bone */
    int64_t t = tp + 1;
    while (t < tp + hs && prof[t + hw] > lim && prof[t + hw] <= peak)
      t++;
    double g = ((double)t - 0.5) * sx + off;
    gap[j] = fmax(GAP_MIN_MM, fmin(g, GAP_MAX_MM));
    if (j > j_canal) {
      last[nlast % 3] = gap[j];
      if (++nlast < 3)
        for (int q = nlast; q < 3; q++)
          last[q] = gap[j];
    }
  }
  /* running median over GAP_ROWS_MM: the bone's edge changes little from
   * row to row, noise (IP/OP input) much */
  double win[2 * 8 + 1];
  int64_t hr = psp_seg_vox(0.5 * GAP_ROWS_MM, sy);
  if (hr > 8) hr = 8;
  memcpy(raw, gap, (size_t)ny * sizeof *raw);
  for (int64_t j = 0; j < ny; j++) {
    int m = 0;
    for (int64_t b = j - hr; b <= j + hr; b++)
      if (b >= 0 && b < ny) win[m++] = raw[b];
    qsort(win, (size_t)m, sizeof *win, psp_seg_cmp_double);
    gap[j] = m % 2 ? win[m / 2] : 0.5 * (win[m / 2 - 1] + win[m / 2]);
  }
}

/* The front limit of the multifidus behind the lamina, per column i of one
 * side (mm behind the canal centre; -INFINITY beyond LAM_D_MAX_MM from the
 * midline, where the lateral rule of build_compartment alone holds), from
 * the signal magnitude sig (water + fat): bone is dark in both (cortex;
 * the thin lamina's marrow in partial volume), while its FF can look like
 * muscle and a fatty streak in the multifidus like marrow, so the FF map
 * alone cannot tell them apart. Along each column (mean over +-LAM_AVG_MM)
 * from the canal's back edge (rc) back to rc + LAM_MAX_MM, the last voxel
 * darker than LAM_SIGNAL x the muscle's signal behind it (median over the
 * next LAM_REF_MM, which follows the coil's sensitivity) is the lamina's
 * back surface: the multifidus starts behind it. A column that stays dark
 * to the end of the search (the side of the spinous process, a facet)
 * takes the neighbours' limit; one without a dark voxel keeps rc. Running
 * median over LAM_COLS_MM of columns: the lamina's surface changes little
 * from column to column, noise much. */
void psp_seg_lamina_limits(const float *sig, int64_t nx, int64_t ny, double sx, double sy,
                           double mid, double cj, double rc, int sgn, double *yf, double *raw) {
  int64_t ja = (int64_t)ceil(cj + rc / sy);
  int64_t jb = (int64_t)floor(cj + (rc + LAM_MAX_MM) / sy);
  int64_t jr = (int64_t)floor(cj + (rc + LAM_MAX_MM + LAM_REF_MM) / sy);
  /* no averaging at coarse pixels, where the neighbours' bone would smear
   * into a column */
  int64_t ha = (int64_t)lround(LAM_AVG_MM / sx);
  if (ja < 0) ja = 0;
  if (jr > ny - 1) jr = ny - 1;
  if (jb > jr) jb = jr;
  for (int64_t i = 0; i < nx; i++) {
    double d = sgn * ((double)i - mid) * sx;
    bool out = d < 0 || d > LAM_D_MAX_MM;
    raw[i] = out ? -INFINITY : rc;
    if (out || jb < ja || jr <= jb || jr - ja + 1 > LAM_ROWS) continue;
    double pw[LAM_ROWS], ref[LAM_ROWS];
    int nref = 0;
    for (int64_t j = ja; j <= jr; j++) {
      double aw = 0;
      int m = 0;
      for (int64_t a = i - ha; a <= i + ha; a++) {
        if (a < 0 || a >= nx) continue;
        aw += sig[j * nx + a];
        m++;
      }
      pw[j - ja] = aw / m;
      if (j > jb) ref[nref++] = pw[j - ja];
    }
    qsort(ref, (size_t)nref, sizeof *ref, psp_seg_cmp_double);
    double lim = LAM_SIGNAL * ref[nref / 2];
    int64_t last = -1;
    for (int64_t j = ja; j <= jb; j++)
      if (pw[j - ja] < lim) last = j;
    if (last == jb)
      raw[i] = NAN; /* dark to the end: not seen here */
    else if (last >= 0)
      raw[i] = fmax(rc, ((double)last + 0.5 - cj) * sy);
  }
  double win[2 * 8 + 1];
  int64_t hc = psp_seg_vox(0.5 * LAM_COLS_MM, sx);
  if (hc > 8) hc = 8;
  for (int64_t i = 0; i < nx; i++) {
    if (isinf(raw[i])) {
      yf[i] = -INFINITY;
      continue;
    }
    int m = 0;
    for (int64_t a = i - hc; a <= i + hc; a++)
      if (a >= 0 && a < nx && !isnan(raw[a]) && !isinf(raw[a])) win[m++] = raw[a];
    if (m == 0) {
      yf[i] = rc;
      continue;
    }
    qsort(win, (size_t)m, sizeof *win, psp_seg_cmp_double);
    yf[i] = m % 2 ? win[m / 2] : 0.5 * (win[m / 2 - 1] + win[m / 2]);
  }
}
