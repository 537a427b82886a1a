/*
 * DESIGN: where the multifidus compartment ends medially (the midline bone:
 * spinous process, interspinous fat) and in front (the back surface of the
 * lamina), per row and per column of one side of one axial slice. Both are
 * image edges found in mm-sized windows, smoothed by running medians; the
 * reasons are in the comments below and in the DESIGN comment of segment.c
 * (step 2), what was measured in src/segment/MEASUREMENTS.md ("segment.c
 * step 2"). Pure functions of their inputs:
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
 * GAP_MIN_MM where no peak stands out (behind the spinous process, and at
 * the lowest levels, where the midline reads lean). GAP_MIN_MM is 4 mm, the
 * landmarks' least half-width of the midline bone (3 mm before: dixon-tum01
 * multifidus 0.862 / 0.880 -> 0.864 / 0.881, area -1 / +6 -> -3 / +4 %, its
 * worst muscle-slice 0.696 -> 0.714; 3.5 / 4.5 / 5 mm: 0.862 / 0.882,
 * 0.859 / 0.879, 0.857 / 0.879; 60 edited copies of it +0.001 all-muscle
 * on average, their muscle-slices below 0.70 599 -> 566, the largest loss
 * the copy 0.75 x as large, 0.921 -> 0.918; 0.85 / 0.9 x as large
 * unchanged at 0.926 / 0.931; the phantoms unchanged). */
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

/* Rise of the erector spinae's front edge lateral of ES_REF_MM (mm further
 * back than at ES_REF_MM), every 5 mm of d from 40 mm: the medians of the
 * MuscleMap abdomen template (MIT licence; 186 slice-sides above its L5/S1
 * anchor), models/es_front_rise.tsv. dixon-tum01's manual labels give the
 * same curve within 1-2 mm (checked, not used). Beyond the table: the last
 * step's slope. */
static const double ES_RISE[ES_RISE_N] = {1.5, 3.5, 5.5, 7.5, 9.5, 11.5, 14.0, 15.5, 17.5};

double psp_segment_es_rise(int i) {
  return i >= 0 && i < ES_RISE_N ? ES_RISE[i] : NAN;
}

static double es_rise_at(double d) {
  if (d <= ES_REF_MM) return 0.0;
  double u = (d - ES_REF_MM) / ES_RISE_STEP_MM - 1.0; /* index into ES_RISE */
  if (u < 0) return ES_RISE[0] * (d - ES_REF_MM) / ES_RISE_STEP_MM;
  int i = (int)u;
  if (i >= ES_RISE_N - 1)
    return ES_RISE[ES_RISE_N - 1] + (ES_RISE[ES_RISE_N - 1] - ES_RISE[ES_RISE_N - 2]) *
                                        (u - (ES_RISE_N - 1)); /* extrapolated */
  return ES_RISE[i] + (ES_RISE[i + 1] - ES_RISE[i]) * (u - i);
}

/* The erector spinae's front edge lateral of the transverse process roots:
 * from the compartment's most anterior point between ES_REF_LO_MM and
 * ES_REF_HI_MM from the midline (the most medial of equals; the rule of
 * build_compartment there, or the muscle's edge), the front rises
 * backwards laterally with the template's curve (the middle layer of the
 * thoracolumbar fascia runs from the transverse processes back to the
 * lateral raphe; in front of it lies quadratus lumborum). Per column, a fat
 * plane within ES_SEARCH_MM of that line (a voxel fattier than both its
 * neighbours ES_PLANE_MM in front and behind by ES_PLANE_CONTRAST of fat -
 * muscle) is the edge where the image shows one; elsewhere the line less
 * ES_FRONT_TOL_MM. The edge is smoothed by a running median over
 * ES_COLS_MM of columns. Voxels of the side's value in front of it are
 * removed. Returns the number removed, or -1 out of memory. */
int64_t psp_seg_es_front_limit(uint8_t *comp, uint8_t val, const float *ff, double muscle,
                               double fat, int64_t nx, int64_t ny, double sx, double sy, double mid,
                               int sgn) {
  double y0 = INFINITY, d0 = INFINITY;
  for (int64_t j = 0; j < ny && isinf(y0); j++)
    for (int64_t i = 0; i < nx; i++) {
      double d = sgn * ((double)i - mid) * sx;
      if (comp[j * nx + i] == val && d >= ES_REF_LO_MM && d <= ES_REF_HI_MM) {
        y0 = (double)j * sy;
        d0 = fmin(d0, d);
      }
    }
  if (isinf(y0)) return 0;
  double *cut = malloc((size_t)nx * 2 * sizeof *cut);
  if (!cut) return -1;
  double *tmp = cut + nx;
  int64_t r = psp_seg_vox(ES_PLANE_MM, sy);
  double need = ES_PLANE_CONTRAST * (fat - muscle), floor_ff = muscle + 0.2 * (fat - muscle);
  for (int64_t i = 0; i < nx; i++) {
    double d = sgn * ((double)i - mid) * sx;
    cut[i] = -INFINITY;
    if (d <= d0) continue;
    double yl = y0 + es_rise_at(ES_REF_MM + d - d0);
    cut[i] = yl - ES_FRONT_TOL_MM;
    if (!ff) continue;
    int64_t ja = (int64_t)ceil((yl - ES_SEARCH_MM) / sy),
            jb = (int64_t)floor((yl + ES_SEARCH_MM) / sy);
    double best = need;
    for (int64_t j = ja < r ? r : ja; j <= jb && j + r < ny; j++) {
      int64_t p = j * nx + i;
      if (comp[p] != val && comp[p - r * nx] != val && comp[p + r * nx] != val) continue;
      float a = ff[p - r * nx], b = ff[p + r * nx], c = ff[p];
      if (isnan(a) || isnan(b) || isnan(c) || !(c > floor_ff)) continue;
      double con = c - fmax(a, b);
      if (con > best) {
        best = con;
        cut[i] = (double)j * sy + 0.5 * sy; /* the plane goes too */
      }
    }
  }
  /* running median over the columns lateral of d0 */
  int64_t h = psp_seg_vox(0.5 * ES_COLS_MM, sx);
  double win[64];
  if (h > 31) h = 31;
  for (int64_t i = 0; i < nx; i++) {
    tmp[i] = cut[i];
    if (isinf(cut[i])) continue;
    int m = 0;
    for (int64_t q = i - h; q <= i + h; q++)
      if (q >= 0 && q < nx && !isinf(cut[q])) win[m++] = cut[q];
    qsort(win, (size_t)m, sizeof *win, psp_seg_cmp_double);
    tmp[i] = m % 2 ? win[m / 2] : 0.5 * (win[m / 2 - 1] + win[m / 2]);
  }
  int64_t removed = 0;
  for (int64_t j = 0; j < ny; j++)
    for (int64_t i = 0; i < nx; i++) {
      int64_t p = j * nx + i;
      if (comp[p] != val || isinf(tmp[i])) continue;
      if ((double)j * sy < tmp[i]) {
        comp[p] = 0;
        removed++;
      }
    }
  free(cut);
  return removed;
}
