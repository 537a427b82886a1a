/*
 * DESIGN: connected components of 2-D masks (one axial slice), shared by
 * the body outline of the plausibility check (src/dixon) and the slice
 * landmarks and compartments (src/anatomy, src/segment).
 *
 * Two raster passes with union-find over provisional labels (the classic
 * scan-line labelling, Rosenfeld & Pfaltz 1966; Wu, Otoo & Suzuki 2009):
 * each pixel takes the label of an already visited neighbour (left / up,
 * plus up-left and up-right for 8-connectivity) and merges their sets,
 * skipping the neighbours already known to share a set (Wu et al.'s
 * decision tree: with 8-connectivity the up pixel touches the other three,
 * the left one the up-left one), so most pixels need one look-up;
 * a set's root is always its smallest provisional label. Roots are then
 * numbered in increasing order, which is the raster order of each
 * component's first pixel: exactly the numbering a flood fill started at
 * every unlabelled pixel in raster order gives, at a fraction of its cost
 * (no division per pixel, no queue). Done by runs (label_box: a row's runs
 * against the runs of the row above, one label written per run; the final
 * numbering again one look-up per run), pixel by pixel only for boxes
 * wider than the run lists; checked against a flood fill on 20,000 random
 * masks (both connectivities, inverted, boxes). Only the mask's bounding
 * box is labelled and read (psp_cc_label_box for a caller that knows a box
 * holding the mask).
 *
 * Pure functions of their inputs; callers own every buffer.
 */
#include "core/internal.h"

#include <math.h>
#include <string.h>

static int32_t cc_find(int32_t *parent, int32_t x) {
  while (parent[x] != x) {
    parent[x] = parent[parent[x]]; /* path halving keeps parent[x] <= x */
    x = parent[x];
  }
  return x;
}

static int32_t cc_union(int32_t *parent, int32_t a, int32_t b) {
  a = cc_find(parent, a);
  b = cc_find(parent, b);
  if (a < b) {
    parent[b] = a;
    return a;
  }
  parent[a] = b;
  return b;
}

/* Skips zero bytes 8 at a time. */
bool psp_mask_box(const uint8_t *m, int64_t nx, int64_t ny, int64_t box[4]) {
  int64_t i0 = nx, i1 = -1, j0 = -1, j1 = -1;
  for (int64_t j = 0; j < ny; j++) {
    const uint8_t *row = m + j * nx;
    int64_t a = 0;
    while (a + 8 <= nx) {
      uint64_t w;
      memcpy(&w, row + a, 8);
      if (w) break;
      a += 8;
    }
    while (a < nx && !row[a])
      a++;
    if (a == nx) continue;
    int64_t b = nx - 1;
    while (b > a && !row[b])
      b--;
    if (j0 < 0) j0 = j;
    j1 = j;
    if (a < i0) i0 = a;
    if (b > i1) i1 = b;
  }
  if (j0 < 0) return false;
  box[0] = i0, box[1] = i1, box[2] = j0, box[3] = j1;
  return true;
}

static int32_t renumber(int32_t *lab, int64_t nx, const int64_t box[4], int32_t *parent,
                        int32_t nl);

/* Labels the pixels of the rectangle box of m equal to on (nonzero when on
 * is 1, zero when 0) into lab (stride nx; only the rectangle is written).
 * Returns the component count. Pixel by pixel: for boxes too wide for the
 * run lists of label_box. */
static int32_t label_box_px(const uint8_t *m, uint8_t on, int64_t nx, const int64_t box[4],
                            bool conn8, int32_t *lab, int32_t *parent) {
  const int64_t i0 = box[0], i1 = box[1], j0 = box[2], j1 = box[3];
  int32_t nl = 0;
  bool merged = false;
  for (int64_t j = j0; j <= j1; j++) {
    const uint8_t *row = m + j * nx;
    int32_t *l = lab + j * nx;
    const int32_t *up = j > j0 ? l - nx : NULL;
    for (int64_t i = i0; i <= i1; i++) {
      if ((row[i] != 0) != on) {
        l[i] = 0;
        continue;
      }
      const int32_t a = i > i0 ? l[i - 1] : 0; /* left */
      int32_t c;
      if (!up) {
        c = a;
      } else if (up[i]) {
        /* the up pixel touches the left one (8-connectivity: diagonally)
         * and both upper diagonals: all already in its set */
        c = up[i];
        if (!conn8 && a && a != c) {
          c = cc_union(parent, a, c);
          merged = true;
        }
      } else if (!conn8) {
        c = a;
      } else {
        const int32_t p = i > i0 ? up[i - 1] : 0, q = i < i1 ? up[i + 1] : 0;
        const int32_t b = a ? a : p; /* left and up-left touch: one set */
        c = b ? b : q;
        if (b && q && b != q) {
          c = cc_union(parent, b, q);
          merged = true;
        }
      }
      if (!c) {
        c = ++nl;
        parent[c] = c;
      }
      l[i] = c;
    }
  }
  if (!merged) return nl; /* provisional labels are final */
  return renumber(lab, nx, box, parent, nl);
}

/* Number the roots in increasing order; parent[x] < x for the others, so
 * their root's final number is already known (stored negated). */
static int32_t renumber(int32_t *lab, int64_t nx, const int64_t box[4], int32_t *parent,
                        int32_t nl) {
  int32_t count = 0;
  for (int32_t x = 1; x <= nl; x++)
    parent[x] = parent[x] == x ? -(++count) : parent[parent[x]];
  for (int64_t j = box[2]; j <= box[3]; j++) {
    int32_t *l = lab + j * nx;
    for (int64_t i = box[0]; i <= box[1];) {
      int32_t x = l[i];
      if (!x) {
        i++;
        continue;
      }
      int32_t v = -parent[x]; /* a run of x: one look-up */
      do
        l[i++] = v;
      while (i <= box[1] && l[i] == x);
    }
  }
  return count;
}

/* The same by runs: each run of pixels in a row takes the label of the
 * runs of the row above it touches (merging their sets) or a new one. The
 * provisional labels again come in the raster order of the runs' starts,
 * each component's first pixel starting a new one that stays its set's
 * smallest, so the final labels are label_box_px's. */
enum { RUNS_MAX = 512 }; /* runs per row: boxes up to 2 * RUNS_MAX - 2 wide */
static int32_t label_box(const uint8_t *m, uint8_t on, int64_t nx, const int64_t box[4], bool conn8,
                         int32_t *lab, int32_t *parent) {
  const int64_t i0 = box[0], i1 = box[1], j0 = box[2], j1 = box[3];
  if (i1 - i0 + 1 > 2 * RUNS_MAX - 2) return label_box_px(m, on, nx, box, conn8, lab, parent);
  int32_t rs[2][3][RUNS_MAX]; /* start, end, label of the runs of two rows */
  int np = 0, cur = 0;
  const int64_t d = conn8 ? 1 : 0;
  int32_t nl = 0;
  bool merged = false;
  for (int64_t j = j0; j <= j1; j++) {
    const uint8_t *row = m + j * nx;
    int32_t *l = lab + j * nx;
    int32_t *ps = rs[1 - cur][0], *pe = rs[1 - cur][1], *pl = rs[1 - cur][2];
    int32_t *cs = rs[cur][0], *ce = rs[cur][1], *cl = rs[cur][2];
    int ncr = 0, k = 0;
    int64_t i = i0;
    while (i <= i1) {
      while (i <= i1 && (row[i] != 0) != on)
        l[i++] = 0;
      if (i > i1) break;
      int64_t s = i;
      while (i <= i1 && (row[i] != 0) == on)
        i++;
      int64_t e = i - 1;
      while (k < np && pe[k] < s - d)
        k++;
      int32_t c = 0;
      for (int q = k; q < np && ps[q] <= e + d; q++) {
        if (!c) {
          c = pl[q];
        } else if (pl[q] != c) {
          c = cc_union(parent, c, pl[q]);
          merged = true;
        }
      }
      if (!c) {
        c = ++nl;
        parent[c] = c;
      }
      for (int64_t x = s; x <= e; x++)
        l[x] = c;
      cs[ncr] = (int32_t)s;
      ce[ncr] = (int32_t)e;
      cl[ncr] = c;
      ncr++;
    }
    np = ncr;
    cur = 1 - cur;
  }
  if (!merged) return nl;
  return renumber(lab, nx, box, parent, nl);
}

int32_t psp_cc_label_box(const uint8_t *m, int64_t nx, const int64_t box[4], bool conn8,
                         int32_t *lab, int32_t *parent) {
  if (box[1] < box[0] || box[3] < box[2]) return 0;
  return label_box(m, 1, nx, box, conn8, lab, parent);
}

int32_t psp_cc_label(const uint8_t *m, bool invert, int64_t nx, int64_t ny, bool conn8,
                     int32_t *lab, int32_t *parent) {
  int64_t box[4] = {0, nx - 1, 0, ny - 1};
  if (!invert) {
    memset(lab, 0, (size_t)(nx * ny) * sizeof *lab);
    if (!psp_mask_box(m, nx, ny, box)) return 0;
  }
  return label_box(m, invert ? 0 : 1, nx, box, conn8, lab, parent);
}

int64_t psp_cc_keep_largest(uint8_t *m, int64_t nx, int64_t ny, bool conn8, int32_t *lab,
                            int32_t *parent) {
  int64_t box[4];
  /* lab is read only inside the box label_box writes */
  if (!psp_mask_box(m, nx, ny, box)) return 0;
  int32_t nc = label_box(m, 1, nx, box, conn8, lab, parent);
  /* parent[] is free again: component sizes (a slice has < 2^31 pixels) */
  int32_t *cnt = parent;
  memset(cnt, 0, ((size_t)nc + 1) * sizeof *cnt);
  for (int64_t j = box[2]; j <= box[3]; j++) {
    const int32_t *l = lab + j * nx;
    for (int64_t i = box[0]; i <= box[1];) { /* by runs of one label */
      int64_t a = i;
      while (++i <= box[1] && l[i] == l[a]) {
      }
      cnt[l[a]] += (int32_t)(i - a);
    }
  }
  int32_t best = 1;
  for (int32_t c = 2; c <= nc; c++)
    if (cnt[c] > cnt[best]) best = c;
  for (int64_t j = box[2]; j <= box[3]; j++)
    for (int64_t i = box[0]; i <= box[1]; i++)
      m[j * nx + i] = lab[j * nx + i] == best;
  return cnt[best];
}

/* Zero pixels outside the bounding box of m reach the border along their
 * row or column, so only the box is labelled: a zero component there is
 * outside iff it touches the box's edge. */
void psp_cc_fill_holes(uint8_t *m, int64_t nx, int64_t ny, int32_t *lab, int32_t *parent) {
  int64_t box[4];
  if (!psp_mask_box(m, nx, ny, box)) return;
  int32_t nc = label_box(m, 0, nx, box, false, lab, parent);
  if (nc == 0) return;
  uint8_t *outside = (uint8_t *)parent; /* nc + 1 flags */
  memset(outside, 0, (size_t)nc + 1);
  const int64_t i0 = box[0], i1 = box[1], j0 = box[2], j1 = box[3];
  for (int64_t i = i0; i <= i1; i++) {
    outside[lab[j0 * nx + i]] = 1;
    outside[lab[j1 * nx + i]] = 1;
  }
  for (int64_t j = j0; j <= j1; j++) {
    outside[lab[j * nx + i0]] = 1;
    outside[lab[j * nx + i1]] = 1;
  }
  for (int64_t j = j0; j <= j1; j++)
    for (int64_t i = i0; i <= i1; i++)
      if (!outside[lab[j * nx + i]]) m[j * nx + i] = 1;
}

/* The exact 1-D squared distance transform (Felzenszwalb & Huttenlocher
 * 2012), shared by compare (src/measure) and the outline closing
 * (src/segment/refine.c). */
void psp_edt_1d(const double *f, int64_t n, double s, double *d, int64_t *v, double *z) {
  int64_t k = -1;
  for (int64_t q = 0; q < n; q++) {
    if (isinf(f[q])) continue;
    if (k < 0) {
      k = 0;
      v[0] = q;
      z[0] = -INFINITY;
      z[1] = INFINITY;
      continue;
    }
    /* z[0] = -inf keeps k >= 0: a finite intersection is never left of it */
    double xq = (double)q * s, sep;
    for (;;) {
      double xv = (double)v[k] * s;
      sep = ((f[q] + xq * xq) - (f[v[k]] + xv * xv)) / (2.0 * (xq - xv));
      if (sep > z[k]) break;
      k--;
    }
    k++;
    v[k] = q;
    z[k] = sep;
    z[k + 1] = INFINITY;
  }
  if (k < 0) {
    for (int64_t q = 0; q < n; q++)
      d[q] = INFINITY;
    return;
  }
  int64_t j = 0;
  for (int64_t q = 0; q < n; q++) {
    double xq = (double)q * s;
    while (z[j + 1] < xq)
      j++;
    double dx = (double)(q - v[j]) * s;
    d[q] = dx * dx + f[v[j]];
  }
}
