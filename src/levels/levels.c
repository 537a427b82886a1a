/*
 * DESIGN: vertebral level assignment from the axial stack alone.
 *
 * 1. Column. The spinal canal and the left-right midline of every slice
 *    come from the segmentation's landmarks (or, without a segmentation,
 *    from psp_landmarks_find run here, a second time near the median canal
 *    for outliers). Positions are cleaned against a robust (Theil-Sen)
 *    straight track over the stack and then a moving median over +-3
 *    slices (a canal more than 15 mm off either is dropped) and missing
 *    slices are interpolated, so neither one bad slice nor a run of slices
 *    locked onto another structure moves the sampling box. Then the box
 *    (below) is tried at constant offsets from that track (+-30 mm left-
 *    right, +-12 mm anterior-posterior) and moved to the offset with the
 *    strongest marrow/disc alternation along the stack when that beats the
 *    landmark position 1.5-fold (flag "column_shifted").
 * 2. Profile. On each slice the vertebral-body core is a box 20 mm wide
 *    (left-right, centred on the midline) and 22 mm deep, starting 3 mm in
 *    front of the canal's anterior edge: inside the body of every adult
 *    lumbar vertebra (AP depth >= 27 mm) and inside the disc between them.
 *    Its median FF (no-signal voxels count as 0: desiccated discs and
 *    endplates have little signal, marrow always has some) is the marrow
 *    evidence p(k): disc FF ~0-0.1, marrow 0.3-0.6 (higher in older
 *    people, so nothing below uses absolute levels: the marrow level M is
 *    the 75th and the disc level the 10th percentile of p, C = M - disc).
 * 3. Discs. Local minima of p whose prominence (lower of the two highest
 *    values within 30 mm on either side, minus the minimum; one-sided at
 *    an end of the stack that shows no rise, i.e. a disc cut by the crop)
 *    is at least 0.45 C (0.20 C for slices thicker than 6 mm, which average
 *    the disc with the endplates); at least 26 mm apart (the deeper wins;
 *    adjacent adult lumbar discs are ~30-48 mm apart); the sub-slice centre
 *    is the centroid of (base - p) over the minimum and its two
 *    neighbours, so a 10 mm disc half filling a 9 mm slice still gets a
 *    sensible centre.
 *    Sanity checks over the whole track lower every disc's confidence and
 *    are flagged "weak_evidence": a canal that moves > 6 mm between
 *    neighbouring slices (median; x 0.5), a contrast C < 0.15 (x C/0.15),
 *    a median spacing outside 25-55 mm with >= 3 discs (x 0.5). Only when
 *    the track passes them (factor >= 0.5), a gap of more than 1.6 x the
 *    median spacing gets evenly spaced "inferred" discs (flagged, confidence
 *    0.2) so that the names above it are not shifted by one.
 * 4. Anchor: the lumbosacral junction, else the iliac crests. The width
 *    of marrow-like bone (evidence between disc + C/2 and min(0.88, M + 0.35)), walked left and
 *    right from the midline through the core box rows (2 mm gaps bridged;
 *    the row's width is the smaller side, the slice's the 75th percentile
 *    over rows), is compared between the vertebrae above the lowest disc
 *    and the slices 6-30 mm below it (the second widest of those when
 *    there are two or more: the sacrum spans them): the sacrum with its alae is much
 *    wider than a lumbar body (ratio >= 1.45, >= 8 mm wider, >= 25 mm half
 *    width, lumbar bodies >= 10 mm; from a single slice below the disc
 *    >= 35 mm: the upper L5 body alone can reach the ratio). When found,
 *    the lowest disc is L5/S1.
 *    Not searched when the sanity factor is below 0.5 (an unreliable track
 *    cannot anchor anything). Else the iliac crest top (iliac.c: iliac
 *    bone on both sides from the bottom of the stack up to the crest; the
 *    disc nearest above it, or within the lower third of the vertebra
 *    below it, is L4/L5 - Tuffier's line) names the discs with a moderate
 *    confidence (0.45, 0.30 when the crest lies mid-vertebra) and the flag
 *    "iliac_crest_anchor": the crest's level varies by about a vertebra
 *    between people. Beside a sacrum anchor the crest only confirms it; a
 *    disagreement is flagged ("anchors_disagree") and the sacrum, seen
 *    directly, is kept with 0.7 x its confidence. Without an anchor the
 *    names are relative (D1 = the most inferior disc found, V1 the vertebra
 *    above it, V0 below), never guessed. The lowest rib is not used (ribs
 *    are not detected).
 *    Transitional anatomy is flagged ("transitional_suspected"), not
 *    guessed: a sacrum-wide vertebra above the anchor disc (sacralised L5,
 *    or the lowest disc is S1/S2), and an anchored stack reaching above
 *    T12/L1, where 6 or 4 lumbar vertebrae cannot be told apart without
 *    the ribs.
 * 5. Overrides ("L4/L5=12", file slice numbering; or "L4=15", a slice
 *    inside that vertebra) fix the ordinal of the nearest detected disc
 *    (agreement: within max(6 mm, one slice)); a contradiction places the
 *    disc where the user says (replacing a detected disc within half a
 *    spacing) and warns, as does a disagreement with the sacrum anchor or
 *    between overrides (the first one wins).
 *
 * Inputs that cannot tell water from fat (in-phase/opposed-phase) use the
 * swap-invariant min(FF, 1 - FF) as the evidence: marrow stays high, disc
 * and fat both read low.
 *
 * Confidence of a disc: min(1, prominence / 0.8 C) x thickness factor
 * (1 up to 6 mm slices, -0.08 per mm above, floor 0.5) x 0.6 at the stack
 * ends x 0.85 per irregular neighbouring spacing (> 30 % off the median) x
 * the sanity factor; inferred discs 0.2; a disc confirmed by an override at
 * least 0.9. A slice's confidence: the lower of its bracketing discs x the
 * anchor factor (sacrum 0.6-0.95 by width ratio, x 0.6 when transitional
 * anatomy is suspected, x 0.7 when the iliac crest disagrees; iliac crest
 * 0.3-0.45; override 0.95; relative names 0.25) x 0.7 when
 * extrapolated beyond the outermost disc (at most one median spacing; further
 * out the name is "").
 *
 * Determinism: serial code (no OpenMP) over a few hundred slices; results
 * do not depend on the thread count.
 */
#include "levels/iliac.h"
#include "levels/levels_priv.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BOX_HALF_W_MM 10.0
#define BOX_DEPTH_MM 22.0
#define BOX_GAP_MM 3.0
#define REACH_MM 30.0
#define MIN_SEP_MM 26.0
#define ILIAC_ONE_SLICE                                                                            \
  0.8 /* the iliac anchor's confidence when its wings lie on one thick slice */
#define PROMINENCE_SHARE 0.45
#define PROMINENCE_SHARE_THICK 0.20
#define MIN_CONTRAST 0.06
#define GAP_FACTOR 1.6
#define DEFAULT_SPACING_MM 38.0
#define MAX_ORDINAL_NAMED 16 /* disc ordinals searched by name: L5/S1 .. T1/T2 */
#define SACRUM_RATIO 1.45
#define SACRUM_EXTRA_MM 8.0
#define SACRUM_ONE_SLICE_MM 35.0 /* one slice below the disc: a sacrum this wide at least */
#define ANCHOR_RELATIVE 0.25
#define ANCHOR_OVERRIDE 0.95

/* ------------------------------------------------------------------------ */
/* Result object                                                             */
/* ------------------------------------------------------------------------ */

typedef struct flag_rec {
  char key[40];
  char msg[320];
} flag_rec;

struct psp_levels {
  int64_t nz;
  double dz;     /* slice spacing (mm) */
  bool flip;     /* file slice = nz - 1 - k */
  double z0, z1; /* world z of slices 0 and 1 (for interpolation) */
  char (*name)[16];
  bool *is_disc;
  double *frac, *conf, *profile, *col_i, *col_j;
  bool *col_ok;
  psp_iliac_slice *iliac; /* per slice */
  double crest;           /* iliac crest top (internal slice), NaN */
  bool iliac_bottom;   /* iliac bone on both sides at the stack's bottom (a run, however short) */
  double bottom_ratio; /* bony width below the lowest disc / the lumbar bodies' (NaN: not judged) */
  double sacrum_disc;  /* the disc the sacrum was seen below (internal sub-slice), NaN */
  psp_level_disc *disc;
  size_t ndisc, capdisc;
  bool anchored;
  bool image_anchored; /* sacrum or iliac crest seen (before any override) */
  double spacing;
  char anchor[256];
  char method[800];
  flag_rec *flags;
  size_t nflags, capflags;
};

static void add_flag(psp_levels *lv, psp_context *ctx, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void add_flag(psp_levels *lv, psp_context *ctx, const char *key, const char *fmt, ...) {
  if (lv->nflags == lv->capflags) {
    size_t nc = lv->capflags ? 2 * lv->capflags : 8;
    flag_rec *nf = realloc(lv->flags, nc * sizeof *nf);
    if (!nf) return; /* flags are best effort; the warning below still goes out */
    lv->flags = nf;
    lv->capflags = nc;
  }
  flag_rec *f = &lv->flags[lv->nflags++];
  snprintf(f->key, sizeof f->key, "%s", key);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(f->msg, sizeof f->msg, fmt, ap);
  va_end(ap);
  if (!strcmp(key, "override_applied"))
    psp_info(ctx, "levels: %s", f->msg);
  else
    psp_warn(ctx, "levels: %s", f->msg);
}

static double file_pos(const psp_levels *lv, double k) {
  return lv->flip ? (double)(lv->nz - 1) - k : k;
}

void psp_levels_free(psp_levels *lv) {
  if (!lv) return;
  free(lv->name);
  free(lv->is_disc);
  free(lv->frac);
  free(lv->conf);
  free(lv->profile);
  free(lv->col_i);
  free(lv->col_j);
  free(lv->col_ok);
  free(lv->iliac);
  free(lv->disc);
  free(lv->flags);
  free(lv);
}

static bool disc_push(psp_levels *lv, const psp_level_disc *d, psp_error **err) {
  if (lv->ndisc == lv->capdisc) {
    size_t nc = lv->capdisc ? 2 * lv->capdisc : 16;
    psp_level_disc *nd = realloc(lv->disc, nc * sizeof *nd);
    if (!nd) return psp_error_set(err, PSP_ERR_NOMEM, "out of memory (levels)");
    lv->disc = nd;
    lv->capdisc = nc;
  }
  lv->disc[lv->ndisc++] = *d;
  return true;
}

static int cmp_disc(const void *a, const void *b) {
  double x = ((const psp_level_disc *)a)->slice, y = ((const psp_level_disc *)b)->slice;
  return (x > y) - (x < y);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Median of the finite values of v[0..n) (v is reordered); NaN when none. */
static double median_of(double *v, size_t n) {
  size_t m = 0;
  for (size_t i = 0; i < n; i++)
    if (isfinite(v[i])) v[m++] = v[i];
  if (m == 0) return NAN;
  qsort(v, m, sizeof *v, cmp_double);
  return m % 2 ? v[m / 2] : 0.5 * (v[m / 2 - 1] + v[m / 2]);
}

static double quantile_of(double *v, size_t n, double q) {
  size_t m = 0;
  for (size_t i = 0; i < n; i++)
    if (isfinite(v[i])) v[m++] = v[i];
  if (m == 0) return NAN;
  qsort(v, m, sizeof *v, cmp_double);
  double x = q * (double)(m - 1);
  size_t a = (size_t)floor(x);
  size_t b = a + 1 < m ? a + 1 : a;
  return v[a] + (x - (double)a) * (v[b] - v[a]);
}

static double clampd(double v, double lo, double hi) {
  return v < lo ? lo : v > hi ? hi : v;
}

/* ------------------------------------------------------------------------ */
/* 1. Column: canal and midline per slice                                    */
/* ------------------------------------------------------------------------ */

typedef struct column {
  double *ci, *cj, *mid, *r; /* voxel units; r in mm; NaN = not found */
} column;

static bool landmarks_here(const psp_volume *ffv, bool csf_either, column *c, psp_error **err) {
  int64_t d[3];
  double sp[3];
  psp_volume_dims(ffv, d);
  psp_volume_spacing(ffv, sp);
  psp_slice_work *w = psp_slice_work_create(d[0], d[1]);
  uint8_t *body = psp_malloc((size_t)(d[0] * d[1]), err);
  if (!w || !body) {
    psp_slice_work_free(w);
    free(body);
    if (!w) psp_error_set(err, PSP_ERR_NOMEM, "out of memory (levels)");
    return false;
  }
  const float *ff = psp_volume_data(ffv);
  double *tmp = psp_malloc((size_t)d[2] * sizeof *tmp, err);
  if (!tmp) {
    psp_slice_work_free(w);
    free(body);
    return false;
  }
  for (int pass = 0; pass < 2; pass++) {
    double near[2] = {NAN, NAN};
    if (pass == 1) {
      for (int64_t k = 0; k < d[2]; k++)
        tmp[k] = c->ci[k];
      near[0] = median_of(tmp, (size_t)d[2]);
      for (int64_t k = 0; k < d[2]; k++)
        tmp[k] = c->cj[k];
      near[1] = median_of(tmp, (size_t)d[2]);
      if (!isfinite(near[0])) break;
    }
    for (int64_t k = 0; k < d[2]; k++) {
      if (pass == 1 && isfinite(c->ci[k]) &&
          hypot((c->ci[k] - near[0]) * sp[0], (c->cj[k] - near[1]) * sp[1]) <= 15.0)
        continue;
      psp_slice_landmarks lm;
      memset(&lm, 0, sizeof lm);
      psp_landmarks_find(ff + k * d[0] * d[1], d[0], d[1], sp[0], sp[1], pass ? near : NULL,
                         csf_either, body, w, &lm);
      if (lm.canal.found) {
        c->ci[k] = lm.canal.i;
        c->cj[k] = lm.canal.j;
        c->mid[k] = lm.midline_i;
        c->r[k] = lm.canal_radius_mm;
      }
    }
  }
  free(tmp);
  free(body);
  psp_slice_work_free(w);
  return true;
}

/* Moving-median clean-up and interpolation; returns the number of slices
 * with a column afterwards (0 when none was found at all). */
/* Theil-Sen line through the finite values of v (median of pairwise
 * slopes, then median intercept): robust to a third of outliers. */
static bool theil_sen(const double *v, int64_t nz, double *a, double *b) {
  int64_t n = 0;
  for (int64_t k = 0; k < nz; k++)
    n += isfinite(v[k]);
  if (n < 2) return false;
  /* pairs up to 64 slices apart: enough for a robust slope, bounded cost */
  size_t np = (size_t)n * 64;
  double *s = malloc((np > (size_t)nz ? np : (size_t)nz) * sizeof *s);
  if (!s) return false;
  size_t m = 0;
  for (int64_t p = 0; p < nz; p++)
    for (int64_t q = p + 1; q < nz && q <= p + 64; q++)
      if (isfinite(v[p]) && isfinite(v[q])) s[m++] = (v[q] - v[p]) / (double)(q - p);
  *b = median_of(s, m);
  m = 0;
  for (int64_t k = 0; k < nz; k++)
    if (isfinite(v[k])) s[m++] = v[k] - *b * (double)k;
  *a = median_of(s, m);
  free(s);
  return true;
}

static int64_t clean_column(column *c, int64_t nz, const double sp[3]) {
  double win[7];
  bool *ok = calloc((size_t)nz, sizeof *ok);
  if (!ok) return 0;
  int64_t nok = 0;
  /* first against a robust straight track along the whole stack (a run of
   * slices locked onto another structure defeats a moving median) */
  double ai, bi, aj, bj;
  if (theil_sen(c->ci, nz, &ai, &bi) && theil_sen(c->cj, nz, &aj, &bj))
    for (int64_t k = 0; k < nz; k++)
      if (isfinite(c->ci[k]) && hypot((c->ci[k] - ai - bi * (double)k) * sp[0],
                                      (c->cj[k] - aj - bj * (double)k) * sp[1]) > 15.0)
        c->ci[k] = c->cj[k] = NAN;
  for (int64_t k = 0; k < nz; k++) {
    if (!isfinite(c->ci[k])) continue;
    size_t m = 0;
    for (int64_t q = k - 3; q <= k + 3; q++)
      if (q >= 0 && q < nz) win[m++] = c->ci[q];
    double mi = median_of(win, m);
    m = 0;
    for (int64_t q = k - 3; q <= k + 3; q++)
      if (q >= 0 && q < nz) win[m++] = c->cj[q];
    double mj = median_of(win, m);
    if (hypot((c->ci[k] - mi) * sp[0], (c->cj[k] - mj) * sp[1]) <= 15.0) {
      ok[k] = true;
      nok++;
    }
  }
  if (nok == 0) {
    free(ok);
    return 0;
  }
  double *arr[4] = {c->ci, c->cj, c->mid, c->r};
  for (int64_t k = 0; k < nz; k++) {
    if (ok[k]) continue;
    int64_t a = k - 1, b = k + 1;
    while (a >= 0 && !ok[a])
      a--;
    while (b < nz && !ok[b])
      b++;
    for (int v = 0; v < 4; v++) {
      double x;
      if (a >= 0 && b < nz)
        x = arr[v][a] + (arr[v][b] - arr[v][a]) * (double)(k - a) / (double)(b - a);
      else
        x = a >= 0 ? arr[v][a] : arr[v][b];
      arr[v][k] = x;
    }
  }
  /* the remaining ok[] flags are no longer needed: every slice has values */
  free(ok);
  return nz;
}

/* ------------------------------------------------------------------------ */
/* 2. Profile and bony width                                                 */
/* ------------------------------------------------------------------------ */

typedef struct box {
  int64_t i0, i1, j0, j1, mid;
} box;

static box core_box(const column *c, int64_t k, double r_mm, const int64_t d[3],
                    const double sp[3]) {
  box b;
  double jpost = c->cj[k] - (r_mm + BOX_GAP_MM) / sp[1];
  b.j1 = (int64_t)floor(jpost);
  b.j0 = (int64_t)ceil(jpost - BOX_DEPTH_MM / sp[1]);
  b.mid = (int64_t)lround(c->mid[k]);
  b.i0 = (int64_t)ceil(c->mid[k] - BOX_HALF_W_MM / sp[0]);
  b.i1 = (int64_t)floor(c->mid[k] + BOX_HALF_W_MM / sp[0]);
  if (b.j0 < 0) b.j0 = 0;
  if (b.j1 >= d[1]) b.j1 = d[1] - 1;
  if (b.i0 < 0) b.i0 = 0;
  if (b.i1 >= d[0]) b.i1 = d[0] - 1;
  return b;
}

/* Marrow evidence of one voxel: FF, or with an input that cannot tell water
 * from fat (in-phase/opposed-phase magnitudes) the swap-invariant
 * min(FF, 1 - FF): marrow (FF 0.3-0.7) stays high, disc (~0) and fat (~1)
 * both read low. No signal reads 0. */
static double evidence(float v, bool sym) {
  if (isnan(v)) return 0.0;
  return sym ? fmin((double)v, 1.0 - (double)v) : (double)v;
}

static double box_median(const float *sl, const int64_t d[3], box b, bool sym, double *buf) {
  size_t n = 0;
  for (int64_t j = b.j0; j <= b.j1; j++)
    for (int64_t i = b.i0; i <= b.i1; i++)
      buf[n++] = evidence(sl[j * d[0] + i], sym);
  if (n < 4) return NAN;
  return median_of(buf, n);
}

/* Width (mm) of marrow-like bone on either side of the midline, smaller
 * side per row, 75th percentile over the rows of the core box. */
static double bony_width(const float *sl, const int64_t d[3], const double sp[3], box b, double lo,
                         double hi, bool sym, double *buf) {
  size_t n = 0;
  int64_t gapmax = (int64_t)ceil(2.0 / sp[0]);
  int64_t centre = (int64_t)ceil(3.0 / sp[0]);
  for (int64_t j = b.j0; j <= b.j1; j++) {
    const float *row = sl + j * d[0];
    /* the row must cross bone at the midline */
    int nb = 0, nt = 0;
    for (int64_t i = b.mid - centre; i <= b.mid + centre; i++) {
      if (i < 0 || i >= d[0]) continue;
      nt++;
      double e = evidence(row[i], sym);
      nb += !isnan(row[i]) && e >= lo && e <= hi;
    }
    if (nt == 0 || 2 * nb < nt) {
      buf[n++] = 0.0;
      continue;
    }
    double ext[2];
    for (int s = 0; s < 2; s++) {
      int sg = s ? -1 : 1;
      int64_t last = 0, gap = 0;
      for (int64_t t = 1; b.mid + sg * t >= 0 && b.mid + sg * t < d[0]; t++) {
        float v = row[b.mid + sg * t];
        double e = evidence(v, sym);
        if (!isnan(v) && e >= lo && e <= hi) {
          last = t;
          gap = 0;
        } else if (++gap > gapmax) {
          break;
        }
      }
      ext[s] = (double)last * sp[0];
    }
    buf[n++] = fmin(ext[0], ext[1]);
  }
  if (n == 0) return NAN;
  return quantile_of(buf, n, 0.75);
}

/* Column refinement: the vertebral column is where the marrow/disc
 * alternation along the slice axis is strongest. The core box is tried at
 * constant offsets from the landmark track (left-right +-30 mm, anterior-
 * posterior +-12 mm); the spread (90th - 10th percentile over slices) of
 * its mean evidence is the score. A shift is taken only when it beats the
 * unshifted box by 1.5x (landmarks that lock onto another structure on
 * every slice, e.g. on magnitude-only input). Returns the shift in mm via
 * di_mm, dj_mm (0, 0 when none). */
static bool refine_column(const float *ff, const int64_t d[3], const double sp[3], column *c,
                          double r_mm, bool sym, double *di_mm, double *dj_mm, psp_error **err) {
  *di_mm = *dj_mm = 0;
  const int64_t nz = d[2], nx = d[0], ny = d[1];
  double si = fmax(2.0, sp[0]), sj = fmax(3.0, sp[1]);
  int ni = (int)floor(30.0 / si), nj = (int)floor(12.0 / sj);
  int nc = (2 * ni + 1) * (2 * nj + 1);
  double *prof = psp_malloc((size_t)nc * (size_t)nz * sizeof *prof, err);
  double *integ = psp_malloc((size_t)((nx + 1) * (ny + 1)) * sizeof *integ, err);
  double *tmp = psp_malloc((size_t)(nz > 0 ? nz : 1) * sizeof *tmp, err);
  if (!prof || !integ || !tmp) {
    free(prof);
    free(integ);
    free(tmp);
    return false;
  }
  for (int64_t k = 0; k < nz; k++) {
    const float *sl = ff + k * nx * ny;
    for (int64_t i = 0; i <= nx; i++)
      integ[i] = 0;
    for (int64_t j = 0; j < ny; j++) {
      double row = 0;
      integ[(j + 1) * (nx + 1)] = 0;
      for (int64_t i = 0; i < nx; i++) {
        row += evidence(sl[j * nx + i], sym);
        integ[(j + 1) * (nx + 1) + i + 1] = integ[j * (nx + 1) + i + 1] + row;
      }
    }
    box b0 = core_box(c, k, r_mm, d, sp);
    double bw = 0.5 * (double)(b0.i1 - b0.i0), bd = (double)(b0.j1 - b0.j0);
    for (int a = -ni; a <= ni; a++)
      for (int e = -nj; e <= nj; e++) {
        double ci = c->mid[k] + a * si / sp[0];
        double j1 = c->cj[k] - (r_mm + BOX_GAP_MM) / sp[1] + e * sj / sp[1];
        int64_t i0 = (int64_t)lround(ci - bw), i1 = (int64_t)lround(ci + bw);
        int64_t jj1 = (int64_t)floor(j1), jj0 = (int64_t)lround(j1 - bd);
        double v = NAN;
        if (i0 >= 0 && i1 < nx && jj0 >= 0 && jj1 < ny && i1 > i0 && jj1 > jj0) {
          double sum = integ[(jj1 + 1) * (nx + 1) + i1 + 1] - integ[jj0 * (nx + 1) + i1 + 1] -
                       integ[(jj1 + 1) * (nx + 1) + i0] + integ[jj0 * (nx + 1) + i0];
          v = sum / (double)((i1 - i0 + 1) * (jj1 - jj0 + 1));
        }
        prof[((a + ni) * (2 * nj + 1) + (e + nj)) * nz + k] = v;
      }
  }
  double best = -1, s0 = 0;
  int ba = 0, be = 0;
  for (int a = -ni; a <= ni; a++)
    for (int e = -nj; e <= nj; e++) {
      const double *pr = prof + ((a + ni) * (2 * nj + 1) + (e + nj)) * nz;
      for (int64_t k = 0; k < nz; k++)
        tmp[k] = pr[k];
      double q9 = quantile_of(tmp, (size_t)nz, 0.9);
      for (int64_t k = 0; k < nz; k++)
        tmp[k] = pr[k];
      double sc = q9 - quantile_of(tmp, (size_t)nz, 0.1);
      if (!isfinite(sc)) continue;
      if (a == 0 && e == 0) s0 = sc;
      /* ties: the smaller shift wins (scan order is not symmetric) */
      if (sc > best + 1e-12 || (fabs(sc - best) <= 1e-12 && abs(a) + abs(e) < abs(ba) + abs(be))) {
        best = sc;
        ba = a;
        be = e;
      }
    }
  free(prof);
  free(integ);
  free(tmp);
  if ((ba != 0 || be != 0) && best >= 1.5 * s0 && best >= 0.1) {
    /* confirm with the statistic the detection uses (the median profile's
     * marrow-disc contrast), else keep the landmark position */
    double cmp[2];
    for (int pass = 0; pass < 2; pass++) {
      double *pv = psp_malloc((size_t)nz * sizeof *pv, err);
      double *bb = psp_malloc((size_t)(nx * ny) * sizeof *bb, err);
      if (!pv || !bb) {
        free(pv);
        free(bb);
        return false;
      }
      for (int64_t k = 0; k < nz; k++) {
        box b = core_box(c, k, r_mm, d, sp);
        pv[k] = b.j1 > b.j0 && b.i1 > b.i0 ? box_median(ff + k * nx * ny, d, b, sym, bb) : NAN;
      }
      for (int64_t k = 0; k < nz; k++)
        bb[k] = pv[k];
      double q75 = quantile_of(bb, (size_t)nz, 0.75);
      cmp[pass] = q75 - quantile_of(pv, (size_t)nz, 0.10);
      free(pv);
      free(bb);
      double sgn = pass == 0 ? 1.0 : -1.0; /* shift, then undo */
      for (int64_t k = 0; k < nz; k++) {
        c->mid[k] += sgn * ba * si / sp[0];
        c->cj[k] += sgn * be * sj / sp[1];
      }
    }
    /* cmp[0]: landmark position, cmp[1]: shifted; c is back at the
     * landmark position here */
    if (isfinite(cmp[1]) && (!isfinite(cmp[0]) || cmp[1] >= 1.5 * cmp[0]) &&
        cmp[1] >= MIN_CONTRAST) {
      *di_mm = ba * si;
      *dj_mm = be * sj;
      for (int64_t k = 0; k < nz; k++) {
        c->mid[k] += ba * si / sp[0];
        c->cj[k] += be * sj / sp[1];
      }
    }
  }
  return true;
}

/* ------------------------------------------------------------------------ */
/* 3. Discs                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct cand {
  double pos, prom;
  bool edge;
} cand;

static int cmp_cand_prom(const void *a, const void *b) {
  const cand *x = a, *y = b;
  if (x->prom != y->prom) return x->prom < y->prom ? 1 : -1;
  return (x->pos > y->pos) - (x->pos < y->pos);
}

static bool find_discs(psp_levels *lv, double M, double C, psp_context *ctx, psp_error **err) {
  const int64_t nz = lv->nz;
  const double *p = lv->profile, dz = lv->dz;
  int64_t reach = (int64_t)ceil(REACH_MM / dz);
  if (reach < 2) reach = 2;
  /* thick slices average a disc with the endplates: shallower dips */
  const double share = dz > 6.0 ? PROMINENCE_SHARE_THICK : PROMINENCE_SHARE;
  cand *cs = psp_calloc((size_t)nz + 1, sizeof *cs, err);
  if (!cs) return false;
  size_t nc = 0;
  for (int64_t k = 0; k < nz; k++) {
    if (!isfinite(p[k])) continue;
    bool lmin = k == 0 || !isfinite(p[k - 1]) || p[k] <= p[k - 1];
    bool rmin = k == nz - 1 || !isfinite(p[k + 1]) || p[k] < p[k + 1];
    if (!lmin || !rmin) continue;
    double lmax = -1, rmax = -1;
    for (int64_t q = k - reach; q < k; q++)
      if (q >= 0 && isfinite(p[q])) lmax = fmax(lmax, p[q]);
    for (int64_t q = k + 1; q <= k + reach; q++)
      if (q < nz && isfinite(p[q])) rmax = fmax(rmax, p[q]);
    /* a side cut by the end of the stack without a rise is unknown, not a
     * missing maximum: the disc may be cut by the crop */
    if (k + reach >= nz && rmax < p[k] + share * C) rmax = -1;
    if (k - reach < 0 && lmax < p[k] + share * C) lmax = -1;
    bool edge = lmax < 0 || rmax < 0;
    if (lmax < 0 && rmax < 0) continue;
    double base = edge ? fmax(lmax, rmax) : fmin(lmax, rmax);
    double prom = base - p[k];
    if (prom < share * C) continue;
    double sw = 0, swk = 0;
    for (int64_t q = k - 1; q <= k + 1; q++) {
      if (q < 0 || q >= nz || !isfinite(p[q])) continue;
      double w = fmax(0.0, base - p[q]);
      sw += w;
      swk += w * (double)q;
    }
    cs[nc].pos = sw > 0 ? swk / sw : (double)k;
    cs[nc].prom = prom;
    cs[nc].edge = edge;
    nc++;
  }
  qsort(cs, nc, sizeof *cs, cmp_cand_prom);
  double thick = clampd(1.0 - (dz - 6.0) * 0.08, 0.5, 1.0);
  for (size_t a = 0; a < nc; a++) {
    bool clash = false;
    for (size_t b = 0; b < lv->ndisc; b++)
      if (fabs(lv->disc[b].slice - cs[a].pos) * dz < MIN_SEP_MM) clash = true;
    if (clash) continue;
    psp_level_disc d;
    memset(&d, 0, sizeof d);
    d.slice = cs[a].pos;
    d.depth = cs[a].prom;
    d.confidence = fmin(1.0, cs[a].prom / (0.8 * C)) * thick * (cs[a].edge ? 0.6 : 1.0);
    if (!disc_push(lv, &d, err)) {
      free(cs);
      return false;
    }
  }
  free(cs);
  qsort(lv->disc, lv->ndisc, sizeof *lv->disc, cmp_disc);
  (void)M;
  (void)ctx;
  return true;
}

static double median_spacing(const psp_levels *lv) {
  if (lv->ndisc < 2) return NAN;
  double s[64];
  size_t n = 0;
  for (size_t i = 0; i + 1 < lv->ndisc && n < 64; i++)
    s[n++] = (lv->disc[i + 1].slice - lv->disc[i].slice) * lv->dz;
  return median_of(s, n);
}

/* Gaps of about twice the spacing get inferred discs; irregular spacings
 * lower the confidence. */
static bool fill_gaps(psp_levels *lv, psp_context *ctx, psp_error **err) {
  double S = median_spacing(lv);
  if (!isfinite(S)) return true;
  if (lv->ndisc == 2 && (S < 25.0 || S > 55.0)) {
    add_flag(lv, ctx, "weak_evidence",
             "the two discs found are %.0f mm apart (expected 30-50 mm between adjacent "
             "discs): a disc may be missing or one of them is not a disc",
             S);
    for (size_t i = 0; i < lv->ndisc; i++)
      lv->disc[i].confidence *= 0.6;
    return true;
  }
  size_t n0 = lv->ndisc;
  for (size_t i = 0; i + 1 < n0; i++) {
    double gap = (lv->disc[i + 1].slice - lv->disc[i].slice) * lv->dz;
    if (gap > GAP_FACTOR * S) {
      int add = (int)lround(gap / S) - 1;
      if (add < 1) add = 1;
      for (int a = 1; a <= add; a++) {
        psp_level_disc d;
        memset(&d, 0, sizeof d);
        d.slice = lv->disc[i].slice + (lv->disc[i + 1].slice - lv->disc[i].slice) * a / (add + 1);
        d.confidence = 0.2;
        d.inferred = true;
        if (!disc_push(lv, &d, err)) return false;
      }
      add_flag(lv, ctx, "disc_gap_inferred",
               "%.0f mm between the discs at slices %.1f and %.1f (median spacing %.0f mm): %d "
               "disc(s) not seen there, placed evenly with low confidence",
               gap, file_pos(lv, lv->disc[i].slice), file_pos(lv, lv->disc[i + 1].slice), S, add);
    } else if (fabs(gap - S) > 0.3 * S) {
      lv->disc[i].confidence *= 0.85;
      lv->disc[i + 1].confidence *= 0.85;
    }
  }
  qsort(lv->disc, lv->ndisc, sizeof *lv->disc, cmp_disc);
  return true;
}

/* ------------------------------------------------------------------------ */
/* 4. Anchor                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct anchor_info {
  bool found;
  double conf;
  int base; /* ordinal of disc 0 */
} anchor_info;

static bool near_disc(const psp_levels *lv, int64_t k, double mm) {
  for (size_t i = 0; i < lv->ndisc; i++)
    if (fabs(lv->disc[i].slice - (double)k) * lv->dz < mm) return true;
  return false;
}

static anchor_info find_sacrum(psp_levels *lv, const double *width, double lo, psp_context *ctx) {
  anchor_info a = {false, 0, 0};
  size_t i0 = 0;
  while (i0 < lv->ndisc && lv->disc[i0].inferred)
    i0++;
  if (i0 >= lv->ndisc) return a;
  double p0 = lv->disc[i0].slice;
  double vw[512], sw = 0;
  size_t nv = 0;
  for (int64_t k = 0; k < lv->nz && nv < 512; k++)
    if (((double)k - p0) * lv->dz >= 8.0 && !near_disc(lv, k, 8.0) && isfinite(width[k]))
      vw[nv++] = width[k];
  /* the widest of the slices 6-30 mm below, or, with two or more, the
   * second widest: the sacrum spans them, while a single wide slice is as
   * likely a transverse process or the pedicles' partial volume
   * (ipop-chaos11, 9 mm slices, no pelvis in view: 27 mm on one slice, 18
   * mm on the next, read as a sacrum once the scan was segmented in its
   * spine's frame; the phantoms' sacrum 39-41 mm on every slice) */
  int64_t nsac = 0;
  int64_t ksac = -1, k2 = -1;
  double sw2 = 0;
  for (int64_t k = 0; k < lv->nz; k++) {
    double below = (p0 - (double)k) * lv->dz;
    if (below < 6.0 || below > 30.0 || !isfinite(width[k])) continue;
    if (!(lv->profile[k] >= lo)) continue; /* not bone here */
    nsac++;
    if (width[k] > sw) {
      sw2 = sw;
      k2 = ksac;
      sw = width[k];
      ksac = k;
    } else if (width[k] > sw2) {
      sw2 = width[k];
      k2 = k;
    }
  }
  if (nsac >= 2) {
    sw = sw2;
    ksac = k2;
  }
  double Wv = median_of(vw, nv);
  if (nsac == 0) return a;
  if (!isfinite(Wv)) Wv = 24.0;
  /* implausible bone widths (the column box is not on bone): no anchor */
  if (Wv < 10.0 || sw < 25.0) {
    psp_info(ctx,
             "levels: bony width %.0f mm below the lowest disc vs %.0f mm at the vertebrae: "
             "too narrow to judge",
             sw, Wv);
    return a;
  }
  double ratio = Wv > 0 ? sw / Wv : 0;
  lv->bottom_ratio = ratio;
  psp_info(ctx, "levels: bony width %.0f mm below the lowest disc vs %.0f mm at the vertebrae", sw,
           Wv);
  /* one slice only (the stack ends within a slice or two below the disc):
   * the upper L5 body, wider than the lumbar bodies above it, may reach the
   * ratio on its own (dixon-tum01, whose lowest slice lies 8 mm below
   * L4/L5: 27.5 mm against 19, a ratio of 1.447; its copy with a fatty left
   * multifidus, whose canal landmark moved there, 30.6 mm: named a level
   * too low). A sacrum with its alae is wider than any lumbar body:
   * SACRUM_ONE_SLICE_MM of half-width at least (the phantoms' 39-41 mm) */
  if (nsac == 1 && sw < SACRUM_ONE_SLICE_MM) {
    psp_info(ctx,
             "levels: one slice below the lowest disc, %.0f mm of bone: narrower than a sacrum "
             "seen on one slice (%.0f mm); no sacrum anchor",
             sw, SACRUM_ONE_SLICE_MM);
    return a;
  }
  if (ratio >= SACRUM_RATIO && sw - Wv >= SACRUM_EXTRA_MM) {
    a.found = true;
    a.base = -(int)i0;
    lv->sacrum_disc = p0;
    a.conf = clampd(0.6 + (ratio - SACRUM_RATIO), 0.6, 0.95);
    snprintf(lv->anchor, sizeof lv->anchor,
             "lumbosacral junction: sacrum below the disc at slice %.1f (file %.1f); bony width "
             "%.0f mm at slice %lld (file %lld) vs %.0f mm at the lumbar bodies",
             p0, file_pos(lv, p0), sw, (long long)ksac, (long long)file_pos(lv, (double)ksac), Wv);
    /* sacralised L5 / the lowest disc being S1/S2: the vertebra above the
     * anchor disc is as wide as the sacrum */
    double aw[256];
    size_t na = 0;
    double p1 = i0 + 1 < lv->ndisc ? lv->disc[i0 + 1].slice : INFINITY;
    for (int64_t k = 0; k < lv->nz && na < 256; k++)
      if ((double)k > p0 && (double)k < p1 && !near_disc(lv, k, 8.0) && isfinite(width[k]))
        aw[na++] = width[k];
    double wl5 = median_of(aw, na);
    double vo[512];
    size_t no = 0;
    for (int64_t k = 0; k < lv->nz && no < 512; k++)
      if ((double)k > p1 && !near_disc(lv, k, 8.0) && isfinite(width[k])) vo[no++] = width[k];
    double wother = median_of(vo, no);
    if (isfinite(wl5) && isfinite(wother) && wl5 >= SACRUM_RATIO * wother) {
      a.conf *= 0.6;
      add_flag(lv, ctx, "transitional_suspected",
               "the vertebra above the lumbosacral disc is %.0f mm wide vs %.0f mm above it: "
               "transitional anatomy (sacralised L5) or the lowest disc is S1/S2; check the "
               "level names",
               wl5, wother);
    }
  }
  return a;
}

/* ------------------------------------------------------------------------ */
/* 5. Overrides and naming                                                   */
/* ------------------------------------------------------------------------ */

/* Ordinal of disc 0 implied by an override at internal slice k. */
static int implied_base(const psp_levels *lv, int half, double k, size_t *idx) {
  if (half % 2 == 0) {
    size_t best = 0;
    for (size_t i = 1; i < lv->ndisc; i++)
      if (fabs(lv->disc[i].slice - k) < fabs(lv->disc[best].slice - k)) best = i;
    if (idx) *idx = best;
    return half / 2 - (int)best;
  }
  int v = (half - 1) / 2;
  int j = -1;
  for (size_t i = 0; i < lv->ndisc; i++)
    if (lv->disc[i].slice <= k) j = (int)i;
  if (idx) *idx = (size_t)(j < 0 ? 0 : j);
  return v - j;
}

static bool apply_overrides(psp_levels *lv, const psp_level_overrides *ov, anchor_info *an,
                            psp_context *ctx, psp_error **err) {
  int base = 0;
  bool have = false;
  const ov_item *first = NULL;
  for (size_t n = 0; n < ov->n; n++) {
    const ov_item *it = &ov->items[n];
    if (it->file_slice >= lv->nz)
      return psp_error_set(err, PSP_ERR_USAGE,
                           "level override %s=%lld: the input has slices 0..%lld only", it->name,
                           (long long)it->file_slice, (long long)(lv->nz - 1));
    double k = file_pos(lv, (double)it->file_slice); /* the map is its own inverse */
    if (!have) {
      first = it;
      if (it->half % 2 == 0) {
        size_t best = 0;
        double dist = INFINITY;
        for (size_t i = 0; i < lv->ndisc; i++)
          if (fabs(lv->disc[i].slice - k) < dist) {
            dist = fabs(lv->disc[i].slice - k);
            best = i;
          }
        double tol = fmax(6.0, lv->dz);
        double S = isfinite(lv->spacing) ? lv->spacing : DEFAULT_SPACING_MM;
        if (lv->ndisc > 0 && dist * lv->dz <= tol) {
          lv->disc[best].from_override = true;
          lv->disc[best].confidence = fmax(lv->disc[best].confidence, 0.9);
        } else {
          if (lv->ndisc > 0)
            add_flag(lv, ctx, "override_contradicts_detection",
                     "override %s=%lld: no disc was detected within %.0f mm of that slice "
                     "(nearest at file slice %.1f); the override is trusted",
                     it->name, (long long)it->file_slice, tol, file_pos(lv, lv->disc[best].slice));
          psp_level_disc d;
          memset(&d, 0, sizeof d);
          d.slice = k;
          d.confidence = 0.9;
          d.from_override = true;
          if (lv->ndisc > 0 && dist * lv->dz < 0.5 * S) {
            lv->disc[best] = d;
          } else if (!disc_push(lv, &d, err)) {
            return false;
          }
          qsort(lv->disc, lv->ndisc, sizeof *lv->disc, cmp_disc);
        }
      } else if (lv->ndisc == 0) {
        add_flag(lv, ctx, "override_contradicts_detection",
                 "override %s=%lld names a vertebra but no disc was detected: it cannot name the "
                 "stack (give a disc, e.g. L4/L5=SLICE)",
                 it->name, (long long)it->file_slice);
        continue;
      }
      base = implied_base(lv, it->half, k, NULL);
      have = true;
      add_flag(lv, ctx, "override_applied", "manual override %s=%lld (file slice) names the stack",
               it->name, (long long)it->file_slice);
    } else {
      if (lv->ndisc == 0) continue;
      int b2 = implied_base(lv, it->half, k, NULL);
      if (b2 != base)
        add_flag(lv, ctx, "override_contradicts_detection",
                 "override %s=%lld disagrees with %s=%lld by %d level(s) given the detected "
                 "discs; the first one is used",
                 it->name, (long long)it->file_slice, first->name, (long long)first->file_slice,
                 b2 - base);
    }
  }
  if (!have) return true;
  if (an->found && an->base != base)
    add_flag(lv, ctx, "override_contradicts_detection",
             "the manual override names the stack %d level(s) away from the detected lumbosacral "
             "junction or iliac crest; the override is trusted",
             base - an->base);
  char buf[256];
  size_t len = 0;
  buf[0] = '\0';
  for (size_t n = 0; n < ov->n && len < sizeof buf - 40; n++)
    len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s=%lld", n ? ", " : "",
                            ov->items[n].name, (long long)ov->items[n].file_slice);
  /* the anchor text may be cut short when there are many overrides */
  int w = snprintf(lv->anchor, sizeof lv->anchor, "manual override %s (input file slice numbering)",
                   buf);
  (void)w;
  an->found = true;
  an->base = base;
  an->conf = ANCHOR_OVERRIDE;
  return true;
}

/* The iliac-crest anchor (iliac.c): names the discs when the sacrum did
 * not; beside a sacrum anchor it only confirms it or, when the two
 * disagree, is flagged and the sacrum (seen directly) is kept with a lower
 * confidence. Returns false on out-of-memory only. */
static bool iliac_anchor(psp_levels *lv, const psp_iliac_input *in, anchor_info *an,
                         psp_context *ctx, psp_error **err) {
  psp_iliac il;
  if (!psp_iliac_detect(in, lv->iliac, &il, err)) return false;
  lv->iliac_bottom = il.top >= 0;
  if (!il.found) {
    psp_info(ctx, "levels: iliac crest: %s", il.why);
    return true;
  }
  lv->crest = il.crest;
  double *pos = psp_malloc(lv->ndisc * sizeof *pos, err);
  if (!pos) return false;
  for (size_t i = 0; i < lv->ndisc; i++)
    pos[i] = lv->disc[i].slice;
  psp_iliac_rule r = psp_iliac_name_discs(pos, lv->ndisc, lv->dz, lv->spacing, il.crest);
  free(pos);
  double cf = file_pos(lv, il.crest);
  if (!r.ok) {
    psp_info(ctx,
             "levels: iliac crest top at slice %.1f (file %.1f) lies more than one disc spacing "
             "beyond the discs found: not used as an anchor",
             il.crest, cf);
    return true;
  }
  char l45[16];
  psp_levels_disc_name(1, l45);
  if (an->found) {
    size_t len = strlen(lv->anchor);
    if (r.base == an->base) {
      snprintf(lv->anchor + len, sizeof lv->anchor - len,
               "; the iliac crest top (file %.1f) agrees", cf);
    } else {
      char other[16];
      psp_levels_disc_name(an->base, other);
      an->conf *= 0.7;
      lv->sacrum_disc = NAN; /* not trusted to place the height priors either */
      add_flag(lv, ctx, "anchors_disagree",
               "the iliac crest top (file slice %.1f) would name the stack %d level(s) away from "
               "the sacrum anchor (lowest disc %s): the sacrum is kept with a lower confidence; "
               "transitional anatomy or an unusually high or low crest; check the level names",
               cf, r.base - an->base, other);
    }
    return true;
  }
  an->found = true;
  an->base = r.base;
  an->conf = r.conf * (il.one_slice ? ILIAC_ONE_SLICE : 1.0);
  snprintf(lv->anchor, sizeof lv->anchor,
           "iliac crest top at slice %.1f (file %.1f), %.0f mm %s the disc named %s%s%s "
           "(intercristal line)",
           il.crest, cf, fabs(r.offset_mm), r.offset_mm >= 0 ? "above" : "below", l45,
           r.extrapolated ? " (not detected: one spacing beyond the discs found)" : "",
           il.one_slice ? "; the wings on one thick slice only" : "");
  add_flag(lv, ctx, "iliac_crest_anchor",
           "levels named from the iliac crest top (file slice %.1f): the crests lie between the "
           "lower third of L4 and the upper third of L5 in most adults but can be a level higher "
           "or lower (sex, build, transitional vertebrae), so the names may be off by one "
           "level%s; confirm with --disc NAME=SLICE",
           cf,
           r.ambiguous ? "; here the crest lies mid-vertebra, between two namings (the disc "
                         "above it taken as L4/L5)"
                       : "");
  return true;
}

static void name_slices(psp_levels *lv, const anchor_info *an) {
  const int64_t nz = lv->nz;
  const double dz = lv->dz;
  const size_t nd = lv->ndisc;
  double S = isfinite(lv->spacing) ? lv->spacing : DEFAULT_SPACING_MM;
  double afac = an->found ? an->conf : ANCHOR_RELATIVE;
  for (size_t i = 0; i < nd; i++) {
    psp_level_disc *d = &lv->disc[i];
    if (an->found)
      psp_levels_disc_name(an->base + (int)i, d->name);
    else
      snprintf(d->name, sizeof d->name, "D%d", (int)((i + 1) % 1000));
    d->file_slice = file_pos(lv, d->slice);
    d->nearest = (int64_t)lround(clampd(d->slice, 0, (double)(nz - 1)));
    d->nearest_file = (int64_t)lround(file_pos(lv, (double)d->nearest));
    d->distance_mm = fabs(d->slice - (double)d->nearest) * dz;
    d->z_mm = lv->z0 + (lv->z1 - lv->z0) * d->slice;
  }
  for (int64_t k = 0; k < nz; k++) {
    lv->name[k][0] = '\0';
    lv->is_disc[k] = false;
    lv->frac[k] = NAN;
    lv->conf[k] = 0;
    if (nd == 0) continue;
    double x = (double)k;
    int j = -1;
    for (size_t i = 0; i < nd; i++)
      if (lv->disc[i].slice <= x) j = (int)i;
    double frac, c;
    bool extrap = false;
    if (j >= 0 && (size_t)j + 1 < nd) {
      frac = (x - lv->disc[j].slice) / (lv->disc[j + 1].slice - lv->disc[j].slice);
      c = fmin(lv->disc[j].confidence, lv->disc[j + 1].confidence);
    } else if (j >= 0) {
      frac = (x - lv->disc[j].slice) * dz / S;
      c = lv->disc[j].confidence;
      extrap = true;
    } else {
      frac = 1.0 - (lv->disc[0].slice - x) * dz / S;
      c = lv->disc[0].confidence;
      extrap = true;
    }
    /* disc slices */
    size_t nn = 0;
    for (size_t i = 1; i < nd; i++)
      if (fabs(lv->disc[i].slice - x) < fabs(lv->disc[nn].slice - x)) nn = i;
    double dmm = fabs(lv->disc[nn].slice - x) * dz;
    if (dmm < fmax(4.0, 0.5 * dz) || lv->disc[nn].nearest == k) {
      if (lv->disc[nn].name[0]) {
        snprintf(lv->name[k], sizeof lv->name[k], "%s", lv->disc[nn].name);
        lv->is_disc[k] = true;
        lv->frac[k] = frac >= 0 && frac < 1 ? frac : (x < lv->disc[nn].slice ? 0.999 : 0.0);
        lv->conf[k] = lv->disc[nn].confidence * afac;
      }
      continue;
    }
    if (!(frac >= 0 && frac < 1)) continue;
    int vo = j >= 0 ? j : -1; /* vertebra above disc j (index), -1 below disc 0 */
    if (an->found)
      psp_levels_vertebra_name(an->base + vo, lv->name[k]);
    else
      snprintf(lv->name[k], sizeof lv->name[k], "V%d", (vo + 1) % 1000);
    if (!lv->name[k][0]) continue;
    lv->frac[k] = frac;
    lv->conf[k] = c * afac * (extrap ? 0.7 : 1.0);
  }
}

/* ------------------------------------------------------------------------ */
/* Entry point                                                               */
/* ------------------------------------------------------------------------ */

psp_levels *psp_levels_detect(const psp_ffmap *ffm, const psp_segmentation *seg,
                              const psp_level_overrides *ov, psp_context *ctx, psp_error **err) {
  if (!ffm) {
    psp_error_set(err, PSP_ERR_USAGE, "levels: no fat-fraction map");
    return NULL;
  }
  const psp_volume *ffv = psp_ffmap_ff(ffm);
  int64_t d[3];
  double sp[3];
  psp_volume_dims(ffv, d);
  psp_volume_spacing(ffv, sp);
  const int64_t nz = d[2];
  const bool sym = !strcmp(psp_ffmap_source(ffm), "inphase+opposed-phase");
  if (seg && psp_segmentation_slice_count(seg) != nz) {
    psp_error_set(err, PSP_ERR_INTERNAL, "levels: segmentation has %lld slices, the map %lld",
                  (long long)psp_segmentation_slice_count(seg), (long long)nz);
    return NULL;
  }
  psp_levels *lv = psp_calloc(1, sizeof *lv, err);
  if (!lv) return NULL;
  lv->nz = nz;
  lv->dz = sp[2];
  lv->flip = nz > 1 && psp_volume_file_slice(ffv, 0) != 0;
  lv->z0 = psp_volume_slice_z(ffv, 0);
  lv->z1 = nz > 1 ? psp_volume_slice_z(ffv, 1) : lv->z0 + sp[2];
  lv->spacing = NAN;
  lv->crest = NAN;
  lv->bottom_ratio = NAN;
  lv->sacrum_disc = NAN;
  lv->name = psp_calloc((size_t)nz, sizeof *lv->name, err);
  lv->is_disc = psp_calloc((size_t)nz, sizeof *lv->is_disc, err);
  lv->frac = psp_calloc((size_t)nz, sizeof *lv->frac, err);
  lv->conf = psp_calloc((size_t)nz, sizeof *lv->conf, err);
  lv->profile = psp_calloc((size_t)nz, sizeof *lv->profile, err);
  lv->col_i = psp_calloc((size_t)nz, sizeof *lv->col_i, err);
  lv->col_j = psp_calloc((size_t)nz, sizeof *lv->col_j, err);
  lv->col_ok = psp_calloc((size_t)nz, sizeof *lv->col_ok, err);
  lv->iliac = psp_calloc((size_t)nz, sizeof *lv->iliac, err);
  double *mem = psp_calloc((size_t)nz * 5, sizeof *mem, err);
  double *buf = psp_calloc((size_t)(d[0] * d[1]) + 16, sizeof *buf, err);
  if (!lv->name || !lv->is_disc || !lv->frac || !lv->conf || !lv->profile || !lv->col_i ||
      !lv->col_j || !lv->col_ok || !lv->iliac || !mem || !buf) {
    free(mem);
    free(buf);
    psp_levels_free(lv);
    return NULL;
  }
  column c = {mem, mem + nz, mem + 2 * nz, mem + 3 * nz};
  double *width = mem + 4 * nz;
  for (int64_t k = 0; k < 4 * nz; k++)
    mem[k] = NAN;
  for (int64_t k = 0; k < nz; k++) {
    lv->profile[k] = NAN;
    lv->frac[k] = NAN;
    width[k] = NAN;
  }

  /* 1. column */
  if (seg) {
    for (int64_t k = 0; k < nz; k++) {
      const psp_slice_landmarks *lm = psp_segmentation_slice(seg, k);
      if (lm && lm->canal.found) {
        c.ci[k] = lm->canal.i;
        c.cj[k] = lm->canal.j;
        c.mid[k] = lm->midline_i;
        c.r[k] = lm->canal_radius_mm;
      }
    }
  } else if (!landmarks_here(ffv, sym, &c, err)) {
    free(mem);
    free(buf);
    psp_levels_free(lv);
    return NULL;
  }
  double r_mm;
  {
    for (int64_t k = 0; k < nz; k++)
      buf[k] = c.r[k];
    r_mm = median_of(buf, (size_t)nz);
    r_mm = isfinite(r_mm) ? clampd(r_mm, 5.0, 12.0) : 8.0;
  }
  /* stability of the raw canal track: median slice-to-slice jump */
  double jump = NAN;
  {
    size_t n = 0;
    for (int64_t k = 0; k + 1 < nz; k++)
      if (isfinite(c.ci[k]) && isfinite(c.ci[k + 1]))
        buf[n++] = hypot((c.ci[k + 1] - c.ci[k]) * sp[0], (c.cj[k + 1] - c.cj[k]) * sp[1]);
    jump = median_of(buf, n);
  }
  int64_t ncol = clean_column(&c, nz, sp);
  const float *ff = psp_volume_data(ffv);
  double M = NAN, C = NAN, lo = NAN, hi = NAN;
  double shift_i = 0, shift_j = 0;
  if (ncol > 0 && !refine_column(ff, d, sp, &c, r_mm, sym, &shift_i, &shift_j, err)) {
    free(mem);
    free(buf);
    psp_levels_free(lv);
    return NULL;
  }
  if (shift_i != 0 || shift_j != 0)
    add_flag(lv, ctx, "column_shifted",
             "the vertebral-body sampling box was moved %.0f mm left-right and %.0f mm "
             "anterior-posterior from the spinal-canal landmarks, to where the marrow/disc "
             "alternation is strongest: the landmarks may be off on this scan",
             shift_i, shift_j);
  if (ncol == 0) {
    add_flag(lv, ctx, "column_not_found",
             "the vertebral column (spinal canal) was not found on any slice: no levels");
  } else {
    /* 2. profile */
    for (int64_t k = 0; k < nz; k++) {
      box b = core_box(&c, k, r_mm, d, sp);
      lv->col_ok[k] = b.j1 > b.j0 && b.i1 > b.i0;
      lv->col_i[k] = c.mid[k];
      lv->col_j[k] = 0.5 * (double)(b.j0 + b.j1);
      if (lv->col_ok[k]) lv->profile[k] = box_median(ff + k * d[0] * d[1], d, b, sym, buf);
    }
    for (int64_t k = 0; k < nz; k++)
      buf[k] = lv->profile[k];
    M = quantile_of(buf, (size_t)nz, 0.75);
    for (int64_t k = 0; k < nz; k++)
      buf[k] = lv->profile[k];
    double L = quantile_of(buf, (size_t)nz, 0.10);
    C = M - L;
    lo = L + 0.5 * C;
    hi = sym ? 1.0 : fmin(0.88, M + 0.35);
    for (int64_t k = 0; k < nz; k++)
      if (lv->col_ok[k])
        width[k] =
            bony_width(ff + k * d[0] * d[1], d, sp, core_box(&c, k, r_mm, d, sp), lo, hi, sym, buf);
    /* 3. discs */
    if (!(C >= MIN_CONTRAST) || nz < 3) {
      add_flag(lv, ctx, "weak_evidence",
               "no marrow/disc contrast along the vertebral column (FF %.2f vs %.2f): no discs "
               "found",
               M, L);
    } else if (!find_discs(lv, M, C, ctx, err)) {
      free(mem);
      free(buf);
      psp_levels_free(lv);
      return NULL;
    }
    if (isfinite(C) && C >= MIN_CONTRAST && lv->ndisc == 0)
      add_flag(lv, ctx, "weak_evidence", "no disc found along the vertebral column");
  }
  lv->spacing = median_spacing(lv);
  /* global sanity: an unstable column track, a weak contrast or an
   * implausible spacing lower every disc's confidence */
  double gfac = 1.0;
  if (lv->ndisc > 0 && isfinite(jump) && jump > 6.0) {
    gfac *= 0.5;
    add_flag(lv, ctx, "weak_evidence",
             "the spinal canal moves %.0f mm between neighbouring slices (median): the "
             "vertebral column track is unreliable",
             jump);
  }
  if (lv->ndisc > 0 && C < 0.15) {
    gfac *= C / 0.15;
    add_flag(lv, ctx, "weak_evidence", "weak marrow/disc contrast (%.2f)", C);
  }
  if (lv->ndisc >= 3 && (lv->spacing < 25.0 || lv->spacing > 55.0)) {
    gfac *= 0.5;
    add_flag(lv, ctx, "weak_evidence",
             "median disc spacing %.0f mm is outside the 25-55 mm of adjacent vertebral levels",
             lv->spacing);
  }
  for (size_t i = 0; i < lv->ndisc; i++)
    lv->disc[i].confidence *= gfac;
  /* gaps are filled only when the rest of the track is trustworthy */
  if (gfac >= 0.5 && !fill_gaps(lv, ctx, err)) {
    free(mem);
    free(buf);
    psp_levels_free(lv);
    return NULL;
  }
  lv->spacing = median_spacing(lv);

  /* 4. anchor */
  anchor_info an = {false, 0, 0};
  if (lv->ndisc > 0 && gfac >= 0.5) an = find_sacrum(lv, width, lo, ctx);
  if (lv->ndisc > 0 && gfac >= 0.5) {
    /* fatty (degenerated) erector spinae beside the wings reads marrow-like
     * and joins them into one region beyond the wings' size: on each side
     * the bone band starts no lower than the median level of that side's
     * erector spinae in the segmentation's landmarks (iliac.c). Not the
     * multifidus's (the slice's muscle level, as first): a fatty
     * multifidus, one-sided or not, raised the floor on both sides above
     * the wings' marrow and lost the anchor of dixon-tum01 with its left
     * multifidus made fatty (nifti_edit.py fatty 0.4-0.6 3) */
    psp_iliac_input in = {ff,
                          {d[0], d[1], d[2]},
                          {sp[0], sp[1], sp[2]},
                          c.cj,
                          c.mid,
                          lo,
                          sym ? 1.0 : fmin(0.85, hi),
                          sym,
                          {0, 0}};
    for (int s = 0; seg && s < 2; s++) {
      size_t n = 0;
      for (int64_t k = 0; k < nz; k++) {
        const psp_slice_landmarks *lm = psp_segmentation_slice(seg, k);
        /* es_side_ff: [0] left, [1] right; the detector's side 0 is the right */
        double e = lm ? lm->es_side_ff[1 - s] : NAN;
        if (lm && lm->status == PSP_SLICE_OK && isfinite(e)) buf[n++] = e;
      }
      in.lo_side[s] = median_of(buf, n); /* NaN: none (fmax in iliac.c) */
    }
    if (!iliac_anchor(lv, &in, &an, ctx, err)) {
      free(mem);
      free(buf);
      psp_levels_free(lv);
      return NULL;
    }
  } else if (lv->ndisc > 0)
    psp_info(ctx, "levels: the column track is too unreliable to look for an anchor");

  lv->image_anchored = an.found;

  /* 5. overrides */
  if (ov && ov->n > 0 && !apply_overrides(lv, ov, &an, ctx, err)) {
    free(mem);
    free(buf);
    psp_levels_free(lv);
    return NULL;
  }
  lv->spacing = median_spacing(lv);
  lv->anchored = an.found;
  if (!an.found && lv->ndisc > 0)
    add_flag(lv, ctx, "no_anchor",
             "no anchor (sacrum or iliac crests) in view: levels are relative only (D1 = the most "
             "inferior disc found, V1 the vertebra above it); give --disc NAME=SLICE to name them");
  if (an.found && an.base <= 5 && an.base + (int)lv->ndisc - 1 >= 6)
    add_flag(lv, ctx, "transitional_suspected",
             "the discs above the anchor reach beyond T12/L1 (%zu discs): the number of lumbar "
             "vertebrae cannot be verified from this stack (no rib detection); check T12/L1",
             lv->ndisc);
  for (size_t i = 0; i < lv->ndisc; i++)
    if (lv->disc[i].confidence < 0.4 && !lv->disc[i].inferred) {
      add_flag(lv, ctx, "weak_evidence",
               "disc at file slice %.1f has weak evidence (confidence %.2f)",
               file_pos(lv, lv->disc[i].slice), lv->disc[i].confidence);
    }
  name_slices(lv, &an);
  snprintf(lv->method, sizeof lv->method,
           "discs = minima of the median %s of the vertebral-body core (%.0f x %.0f mm box %.0f mm "
           "in front of the spinal canal, landmarks from %s) along the slice axis, prominence >= "
           "%.2f x the marrow-disc contrast (marrow %.2f, contrast %.2f), >= %.0f mm apart, "
           "sub-slice centroid; anchor: sacrum (bony width >= %.2f x the lumbar bodies below the "
           "lowest disc), else the iliac crest top (highest slice with iliac bone on both sides; "
           "the disc at or above it, or one within a third of a vertebra below it, is L4/L5), or "
           "manual override; otherwise relative names",
           sym ? "min(FF, 1-FF) (in-phase/opposed-phase input)" : "FF", 2 * BOX_HALF_W_MM,
           BOX_DEPTH_MM, BOX_GAP_MM, seg ? "the segmentation" : "psp_landmarks",
           lv->dz > 6.0 ? PROMINENCE_SHARE_THICK : PROMINENCE_SHARE, M, C, MIN_SEP_MM,
           SACRUM_RATIO);
  free(mem);
  free(buf);
  return lv;
}

/* ------------------------------------------------------------------------ */
/* Accessors                                                                 */
/* ------------------------------------------------------------------------ */

int64_t psp_levels_slice_count(const psp_levels *lv) {
  return lv ? lv->nz : 0;
}

const char *psp_levels_name(const psp_levels *lv, int64_t k) {
  if (!lv || k < 0 || k >= lv->nz) return "";
  return lv->name[k];
}

bool psp_levels_is_disc(const psp_levels *lv, int64_t k) {
  return lv && k >= 0 && k < lv->nz && lv->is_disc[k];
}

double psp_levels_fraction(const psp_levels *lv, int64_t k) {
  if (!lv || k < 0 || k >= lv->nz) return NAN;
  return lv->frac[k];
}

double psp_levels_confidence(const psp_levels *lv, int64_t k) {
  if (!lv || k < 0 || k >= lv->nz) return 0;
  return lv->conf[k];
}

double psp_levels_profile(const psp_levels *lv, int64_t k) {
  if (!lv || k < 0 || k >= lv->nz) return NAN;
  return lv->profile[k];
}

bool psp_levels_column(const psp_levels *lv, int64_t k, double *i, double *j) {
  if (!lv || k < 0 || k >= lv->nz || !lv->col_ok[k]) return false;
  if (i) *i = lv->col_i[k];
  if (j) *j = lv->col_j[k];
  return true;
}

void psp_levels_to_image(psp_levels *lv, const psp_segmentation *seg) {
  for (int64_t k = 0; lv && k < lv->nz; k++)
    if (lv->col_ok[k]) psp_segmentation_to_image(seg, k, &lv->col_i[k], &lv->col_j[k]);
}

size_t psp_levels_disc_count(const psp_levels *lv) {
  return lv ? lv->ndisc : 0;
}

const psp_level_disc *psp_levels_disc(const psp_levels *lv, size_t i) {
  if (!lv || i >= lv->ndisc) return NULL;
  return &lv->disc[i];
}

bool psp_levels_anchored(const psp_levels *lv) {
  return lv && lv->anchored;
}

bool psp_levels_image_anchored(const psp_levels *lv) {
  return lv && lv->image_anchored;
}

const char *psp_levels_anchor(const psp_levels *lv) {
  return lv ? lv->anchor : "";
}

const char *psp_levels_method(const psp_levels *lv) {
  return lv ? lv->method : "";
}

double psp_levels_slice_spacing_mm(const psp_levels *lv) {
  return lv ? lv->dz : NAN;
}

double psp_levels_file_position(const psp_levels *lv, double k) {
  return lv ? file_pos(lv, k) : NAN;
}

double psp_levels_spacing_mm(const psp_levels *lv) {
  return lv ? lv->spacing : NAN;
}

double psp_levels_l5s1_position(const psp_levels *lv) {
  if (!lv || !lv->anchored || !(lv->dz > 0)) return NAN;
  double S = isfinite(lv->spacing) ? lv->spacing : DEFAULT_SPACING_MM;
  for (size_t i = 0; i < lv->ndisc; i++) /* inferior to superior: the nearest to L5/S1 first */
    for (int o = 0; o <= MAX_ORDINAL_NAMED; o++) {
      char name[16];
      psp_levels_disc_name(o, name);
      if (name[0] && !strcmp(name, lv->disc[i].name)) return lv->disc[i].slice - o * S / lv->dz;
    }
  return NAN;
}

double psp_levels_sacrum_disc(const psp_levels *lv) {
  return lv ? lv->sacrum_disc : NAN;
}

size_t psp_levels_flag_count(const psp_levels *lv) {
  return lv ? lv->nflags : 0;
}

const char *psp_levels_flag_key(const psp_levels *lv, size_t i) {
  if (!lv || i >= lv->nflags) return NULL;
  return lv->flags[i].key;
}

const char *psp_levels_flag_message(const psp_levels *lv, size_t i) {
  if (!lv || i >= lv->nflags) return NULL;
  return lv->flags[i].msg;
}

double psp_levels_iliac_crest(const psp_levels *lv) {
  return lv ? lv->crest : NAN;
}

bool psp_levels_iliac_at_bottom(const psp_levels *lv) {
  return lv && lv->iliac_bottom;
}

bool psp_levels_wide_bottom(const psp_levels *lv) {
  return lv && isfinite(lv->bottom_ratio) && lv->bottom_ratio >= PSP_LEVELS_WIDE_BOTTOM;
}

bool psp_levels_iliac_both(const psp_levels *lv, int64_t k) {
  return lv && k >= 0 && k < lv->nz && lv->iliac[k].both;
}

double psp_levels_iliac_area(const psp_levels *lv, int64_t k, int side) {
  if (!lv || k < 0 || k >= lv->nz || side < 0 || side > 1) return NAN;
  return lv->iliac[k].area_mm2[side];
}
