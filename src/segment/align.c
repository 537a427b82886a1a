/*
 * DESIGN: the spine's in-plane axis, and the segmentation run in a frame
 * aligned with it when the spine lies rotated in the image.
 *
 * The rules of src/segment/segment.c are written in a spine-centred frame
 * whose axes are the image's: "behind the canal" is along the columns, the
 * distance from the midline along the rows. A patient lying rotated about
 * the body's long axis, or a rotated lumbar spine, breaks that frame.
 * Measured on dixon-tum01 rotated in the image plane about the spine
 * (images bilinear, manual labels nearest neighbour; /tmp scripts, not in
 * the project), all-muscle Dice before this step: 0.787 / 0.862 / 0.913 /
 * 0.927 / 0.897 / 0.819 at -12 / -8 / -4 / +4 / +8 / +12 degrees (0.937
 * upright; the multifidus down to 0.31).
 *
 * 1. The axis of a slice (slice_axis): the line through the spinal canal
 *    about which the FF map is most mirror-symmetric. Pairs of points
 *    mirrored about a line at angle theta through the canal (shifted
 *    sideways by up to AXIS_OFF_MM: the canal's centre may sit a voxel or
 *    two off the axis), on a grid of AXIS_STEP_MM from AXIS_V0_MM in front
 *    of the canal to AXIS_V1_MM behind it and out to AXIS_U1_MM each side
 *    (vertebra, muscles, fat, the back's skin); the score is the mean
 *    absolute FF difference of the pairs (bilinear; no signal counts as
 *    NO_SIGNAL_FF, outside the image the pair is skipped). Coarse search
 *    over +-AXIS_MAX_DEG in steps of 2 degrees and 2 mm on a grid twice as
 *    coarse, then the angle, the offset and the angle again in steps of
 *    0.5 within +-2. On every second slice of stacks of AXIS_ALL_BELOW or
 *    more (the volume's median is all that is used); 2 % of a scan's CPU.
 *    The rotated dixon-tum01 reads 2.0 minus the rotation, exactly; the
 *    phantoms 0.0, rolled ones minus the roll, exactly.
 * 2. The volume's angle: the median over the slices with a spine; a
 *    slice's own: the median of the measured slices within AXIS_WIN_MM,
 *    used where it departs from the volume's by SLICE_DEV_DEG or more (a
 *    rotation that changes along the stack: scoliosis, a twisted patient),
 *    else the volume's. Below ROT_MIN_DEG for the volume and ROT_SLICE_DEG
 *    for every slice the volume is segmented as it is (outputs unchanged).
 *    Otherwise the FF map (and the magnitudes) are resampled into a frame
 *    rotated by that angle about the median canal centre, with pixels of
 *    at most FINE_MM (rotate_plane: nearest neighbour), the segmentation
 *    runs there, and its results come back to the image: each voxel takes
 *    the label that covers most of it (labels_back); landmarks come back as
 *    points, the midline as the rotated line (its slope in
 *    psp_slice_landmarks). The check of the stack's bottom (the vertebral
 *    levels) runs in the frame; the levels' column points are mapped back
 *    with psp_segmentation_to_image. After: dixon-tum01 rotated as above
 *    0.936 / 0.936 / 0.934 / 0.927 (measured -2.0: not aligned) / 0.934 /
 *    0.935 (every slice at the volume's angle); also cropped to 180 x 180
 *    mm after a -12 degree rotation 0.936
 *    (0.777 before); given as an FF map only, rotated -8: 0.923 (0.844
 *    before; upright 0.924).
 *    Twisted: dixon-tum01's slices rotated by -10 degrees at the bottom to
 *    +10 at the top: 0.889 as it is, 0.906 at the volume's angle, 0.935
 *    per slice (0 to +14: 0.921 at the volume's angle, 0.933 per slice).
 *    Every slice at its own angle (no SLICE_DEV_DEG) gave 0.936 / 0.936
 *    there, within 0.003 elsewhere, but ipop-chaos11's lowest slices, at
 *    -5 degrees, then lost their canal (one slice flagged, one canal 12 mm
 *    off its neighbours').
 * 3. ROT_MIN_DEG: dixon-tum01 measures 2.0 and, aligned anyway, gave 0.935
 *    instead of 0.937; ipop-chaos11 (no labels) measures -2.5 and, aligned,
 *    has 25 of 26 slices segmented instead of 24 and its left/right
 *    multifidus area ratio (median over slices) 1.23 -> 1.14, worst 1.92
 *    -> 1.41. The threshold lies between these two scans, the only real
 *    ones here.
 *
 * 4. Fine pixels (below COARSEN_BELOW_MM). The rules' voxel-scale steps
 *    (3 x 3 means, one-voxel plane cuts, 8-neighbour smoothing) cover
 *    half the distance at 0.5 mm: dixon-tum01 with every voxel split 2 x
 *    2 (0.51 mm; Dice against its labels split the same way) gave all
 *    0.937 but left multifidus 0.827 and left erector 0.913 (0.855 / 0.922
 *    at its own 1.02 mm): the multifidus/erector split moved both ways,
 *    -23 % area on some slices, +35-56 % on others. So the volume is
 *    segmented twice: in a frame of FINE_MM pixels (each frame pixel the
 *    mean of n x n image points, rotate_plane), which tells the muscles
 *    apart and finds the landmarks, the axis and the levels; and at the
 *    image's own pixels (no levels), whose outline is kept: each voxel
 *    muscle there takes the 1 mm run's muscle at that point, or the most
 *    frequent within MERGE_MM (merge_fine). Measured, Dice MF L / R, ES L /
 *    R, all: tum01 split 2 x 2 0.827 / 0.864 / 0.913 / 0.927 / 0.937 ->
 *    0.851 / 0.871 / 0.918 / 0.928 / 0.937; bilinear to 0.51 / 0.68 / 0.78
 *    mm, MF L 0.822 / 0.847 / 0.839 -> 0.846 / 0.848 / 0.846 (all within
 *    0.002 of before; 0.858 / 0.857 / 0.856 while the 1 mm frame's opening
 *    was 5 x 5, see OPEN_MM in segment.c); bilinear to 0.51 mm after a -8
 *    degree rotation, MF L 0.820 -> 0.843. The 1 mm frame's outline alone
 *    (no second run) gave the same split but lost the fine outline:
 *    phantom01-like at 0.5 / 0.6 mm 0.976 / 0.980 at its own pixels, 0.963
 *    / 0.964 in the 1 mm frame, 0.976 / 0.980 merged (0.981 / 0.980 with
 *    the opening of OPEN_MM); phantom02-like at 0.6 mm all 0.948 / 0.916 /
 *    0.948. An 800 x 800 x 29 pair: 1.1 s end to end at 2 threads (1.05
 *    before), peak memory 488 MB (418).
 *
 * Sign: the angle is that of the spine's front-to-back axis from the image
 * columns, positive when the spinous process points towards the image's
 * +i side (the patient's left in the internal LPS grid).
 */
#include "segment/align.h"
#include "segment/limits.h"

#include <math.h>
#include <stdio.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define PSP_PI 3.14159265358979323846
#define AXIS_MAX_DEG 30.0
#define AXIS_OFF_MM 4.0
#define AXIS_V0_MM -16.0
#define AXIS_V1_MM 76.0
#define AXIS_U0_MM 4.0
#define AXIS_U1_MM 60.0
#define AXIS_STEP_MM 4.0
#define AXIS_MIN_SLICES 3
#define AXIS_ALL_BELOW 12 /* stacks of this many slices or more: every second slice measured */
#define NO_SIGNAL_FF 1.5f
#define ROT_MIN_DEG 2.5
#define ROT_SLICE_DEG 5.0    /* ... or any slice's by this much */
#define AXIS_WIN_MM 20.0     /* a slice's angle: the median of the measured ones this near, */
#define SLICE_DEV_DEG 4.0    /* ... where it departs from the volume's by this much */
#define FINE_MM 1.0          /* frame pixel at most (mm): the scale the rules were developed at */
#define COARSEN_BELOW_MM 0.8 /* finer input pixels: muscles told apart at FINE_MM pixels, */
#define MERGE_MM 1.5         /* ... the outline from the image's own (merge_fine) */
#define EDGE_FAT_VOX 2       /* ... unless this many voxels at the edge beyond it read fat */
#define EDGE_OPEN_SHARE 0.5  /* cut: no fat at the edge on at least this share of those lines */
#define MF_BITS ((1u << PSP_LABEL_MF_LEFT) | (1u << PSP_LABEL_MF_RIGHT))
#define ES_BITS ((1u << PSP_LABEL_ES_LEFT) | (1u << PSP_LABEL_ES_RIGHT))

static const char METHOD[] =
    "anatomy-driven rules on the FF map: body, spinal canal and midline landmarks; paraspinal "
    "compartment = muscle-like tissue (FF below the slice's muscle/fat midpoint) behind the "
    "canal, intramuscular fat included by hole filling and by closing each muscle's outline "
    "(5 mm); multifidus/erector spinae split along "
    "a visible fat plane (seeded watershed), else by a minimum-cost path with a proportion "
    "prior by height (MuscleMap template; its zero 22 mm above the L5/S1 disc that levels "
    "named by hand or the sacrum in view place, else at the lowest segmented slice with an "
    "iliac crest in view, else 24 mm below it: segmentation.height_prior), smoothed along the "
    "spine";

/* Bilinear FF at voxel (x, y); no signal counts as NO_SIGNAL_FF; NaN
 * outside the image. */
static float ff_at(const float *ff, int64_t nx, int64_t ny, double x, double y) {
  if (!(x >= 0.0 && y >= 0.0 && x <= (double)(nx - 1) && y <= (double)(ny - 1))) return NAN;
  int64_t i = (int64_t)x, j = (int64_t)y;
  if (i == nx - 1) i--;
  if (j == ny - 1) j--;
  double fx = x - (double)i, fy = y - (double)j;
  const float *p = ff + j * nx + i;
  float a = isnan(p[0]) ? NO_SIGNAL_FF : p[0], b = isnan(p[1]) ? NO_SIGNAL_FF : p[1],
        c = isnan(p[nx]) ? NO_SIGNAL_FF : p[nx], d = isnan(p[nx + 1]) ? NO_SIGNAL_FF : p[nx + 1];
  return (float)((1 - fy) * ((1 - fx) * a + fx * b) + fy * ((1 - fx) * c + fx * d));
}

/* Mean |FF(left) - FF(right)| over the mirrored pairs about the line at deg
 * through the canal (x0, y0 in mm) shifted sideways by off mm; INFINITY
 * when fewer than half the pairs lie inside the image. */
static double sym_score(const float *ff, int64_t nx, int64_t ny, double sx, double sy, double x0,
                        double y0, double deg, double off, double step) {
  double s = sin(deg * PSP_PI / 180.0), c = cos(deg * PSP_PI / 180.0);
  double px = x0 + off * c, py = y0 - off * s, acc = 0.0;
  int n = 0, tot = 0;
  for (double v = AXIS_V0_MM; v <= AXIS_V1_MM + 1e-9; v += step)
    for (double u = AXIS_U0_MM; u <= AXIS_U1_MM + 1e-9; u += step) {
      double ax = px + v * s, ay = py + v * c;
      float l = ff_at(ff, nx, ny, (ax + u * c) / sx, (ay - u * s) / sy);
      float r = ff_at(ff, nx, ny, (ax - u * c) / sx, (ay + u * s) / sy);
      tot++;
      if (isnan(l) || isnan(r)) continue;
      acc += fabs((double)l - (double)r);
      n++;
    }
  return 2 * n >= tot && n > 0 ? acc / n : INFINITY;
}

/* The axis angle (degrees) of one slice about the canal (ci, cj); NaN when
 * too little of the search lies in the image. */
static double slice_axis(const float *ff, int64_t nx, int64_t ny, double sx, double sy, double ci,
                         double cj) {
  double x0 = ci * sx, y0 = cj * sy, best = INFINITY, bd = 0.0, bo = 0.0;
  for (double d = -AXIS_MAX_DEG; d <= AXIS_MAX_DEG + 1e-9; d += 2.0)
    for (double o = -AXIS_OFF_MM; o <= AXIS_OFF_MM + 1e-9; o += 2.0) {
      double sc = sym_score(ff, nx, ny, sx, sy, x0, y0, d, o, 2.0 * AXIS_STEP_MM);
      if (sc < best) {
        best = sc;
        bd = d;
        bo = o;
      }
    }
  if (isinf(best)) return NAN;
  /* then on the finer grid: the angle (+-2 degrees in steps of 0.5), the
   * offset (+-2 mm in steps of 0.5), the angle again */
  best = INFINITY;
  for (int pass = 0; pass < 3; pass++) {
    double d0 = bd, o0 = bo;
    for (int a = -4; a <= 4; a++) {
      double d = pass == 1 ? d0 : d0 + 0.5 * a, o = pass == 1 ? o0 + 0.5 * a : o0;
      double sc = sym_score(ff, nx, ny, sx, sy, x0, y0, d, o, AXIS_STEP_MM);
      if (sc < best) {
        best = sc;
        bd = d;
        bo = o;
      }
    }
  }
  return bd;
}

static double median(double *v, int64_t n) {
  qsort(v, (size_t)n, sizeof *v, psp_seg_cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int psp_seg_axis_find(const psp_volume *ff, const psp_slice_landmarks *lm, psp_seg_axis *ax,
                      psp_error **err) {
  int64_t nx = ff->dims[0], ny = ff->dims[1], nz = ff->dims[2];
  double sp[3];
  psp_volume_spacing(ff, sp);
  ax->per = NULL;
  double *deg = psp_malloc((size_t)nz * 4 * sizeof *deg, err);
  if (!deg) return -1;
  double *vi = deg + nz, *vj = vi + nz, *tmp = vj + nz;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t k = 0; k < nz; k++)
    deg[k] =
        lm[k].status == PSP_SLICE_OK && lm[k].canal.found && (nz < AXIS_ALL_BELOW || k % 2 == 0)
            ? slice_axis(ff->data + k * nx * ny, nx, ny, sp[0], sp[1], lm[k].canal.i, lm[k].canal.j)
            : NAN;
  int64_t n = 0;
  for (int64_t k = 0; k < nz; k++)
    if (!isnan(deg[k])) {
      vi[n] = lm[k].canal.i;
      vj[n] = lm[k].canal.j;
      tmp[n++] = deg[k];
    }
  ax->n = n;
  ax->deg = ax->ci = ax->cj = NAN;
  int rot = 0;
  if (n >= AXIS_MIN_SLICES) {
    ax->deg = median(tmp, n);
    ax->ci = median(vi, n);
    ax->cj = median(vj, n);
    /* per slice: the median of the measured slices within AXIS_WIN_MM
     * (the volume's where none) */
    double *per = malloc((size_t)nz * sizeof *per), big = 0.0;
    if (!per) {
      free(deg);
      psp_error_set(err, PSP_ERR_NOMEM, "out of memory measuring the spine's axis");
      return -1;
    }
    for (int64_t k = 0; k < nz; k++) {
      int64_t m = 0;
      for (int64_t q = 0; q < nz; q++)
        if (!isnan(deg[q]) && fabs((double)(q - k)) * sp[2] <= AXIS_WIN_MM) tmp[m++] = deg[q];
      double d = m > 0 ? median(tmp, m) : ax->deg;
      if (fabs(d - ax->deg) < SLICE_DEV_DEG) d = ax->deg;
      per[k] = d;
      big = fmax(big, fabs(d));
    }
    rot = fabs(ax->deg) >= ROT_MIN_DEG || big >= ROT_SLICE_DEG;
    if (rot)
      ax->per = per;
    else
      free(per);
  }
  free(deg);
  return rot;
}

void psp_seg_axis_free(psp_seg_axis *ax) {
  free(ax->per);
  ax->per = NULL;
}

/* Rotated frame <-> image. The frame's grid has pixels f times finer than
 * the image's (f = FINE_MM rounding: a bilinear copy at a coarse pixel
 * blurs the one-voxel fat planes the rules look for); a point q of the
 * frame lies at p = c + R (q - c) in the image (mm from the pivot c),
 * R = [cos sin; -sin cos], so that the frame's columns run along the
 * spine's axis. */
typedef struct frame {
  double f;     /* frame pixels per image pixel, per axis */
  double im[6]; /* frame voxel -> image voxel: i = im0 + im1 qi + im2 qj, j = im3 + ... */
  double fr[6]; /* the inverse */
} frame;

_Static_assert(sizeof(frame) == FRAME_DOUBLES * sizeof(double), "frame storage");

/* The frame of angle deg about the image voxel (ci, cj), pixel sx x sy mm,
 * m frame pixels per image pixel. */
static frame frame_make(double deg, double ci, double cj, double sx, double sy, double m) {
  double s = sin(deg * PSP_PI / 180.0), c = cos(deg * PSP_PI / 180.0);
  double qi = (ci + 0.5) * m - 0.5, qj = (cj + 0.5) * m - 0.5; /* the pivot in the frame */
  frame f = {m, {0}, {0}};
  /* image (mm from the pivot) = R frame (mm from the pivot) */
  f.im[1] = c / m;
  f.im[2] = s * sy / (sx * m);
  f.im[4] = -s * sx / (sy * m);
  f.im[5] = c / m;
  f.im[0] = ci - f.im[1] * qi - f.im[2] * qj;
  f.im[3] = cj - f.im[4] * qi - f.im[5] * qj;
  f.fr[1] = c * m;
  f.fr[2] = -s * sy * m / sx;
  f.fr[4] = s * sx * m / sy;
  f.fr[5] = c * m;
  f.fr[0] = qi - f.fr[1] * ci - f.fr[2] * cj;
  f.fr[3] = qj - f.fr[4] * ci - f.fr[5] * cj;
  return f;
}

static void to_image(const frame *f, double qi, double qj, double *pi, double *pj) {
  double a = f->im[0] + f->im[1] * qi + f->im[2] * qj, b = f->im[3] + f->im[4] * qi + f->im[5] * qj;
  *pi = a;
  *pj = b;
}

static void to_frame(const frame *f, double pi, double pj, double *qi, double *qj) {
  double a = f->fr[0] + f->fr[1] * pi + f->fr[2] * pj, b = f->fr[3] + f->fr[4] * pi + f->fr[5] * pj;
  *qi = a;
  *qj = b;
}

/* One plane resampled into the frame (nx, ny: the image's plane; the
 * frame's is mx x my). Frame pixels as fine as the image's or finer: each
 * frame voxel takes the value of the image voxel it lies in (nearest
 * neighbour), NaN (FF) or 0 (magnitudes) outside the image. Bilinear
 * blurred the one-voxel fat planes the rules look for (rolled sample
 * phantoms, all-muscle Dice: phantom02-like at 10 degrees 0.907 bilinear,
 * 0.929 nearest; phantom03-like at -10: 0.931, 0.946; phantom01-like at 8
 * / -12 / 20: 0.949 / 0.944 / 0.946 and 0.970 / 0.967 / 0.971, upright
 * 0.972; dixon-tum01 rotated, 1 mm: within 0.002). Coarser frame pixels
 * (fine input, f < 1) take the mean over n x n such points spread over
 * the frame voxel (n = ceil(1 / f): a 2 x 2 block of 0.5 mm pixels at f =
 * 1/2), the FF over the points with signal, NaN when most have none. */
static void rotate_plane(const frame *f, const float *src, float *dst, int64_t nx, int64_t ny,
                         int64_t mx, int64_t my, bool is_ff, int64_t *idx) {
  int n = f->f >= 1.0 ? 1 : (int)ceil(1.0 / f->f - 1e-9);
  /* an unrotated frame: the image column (row) of each point depends on
   * the frame's column (row) only (idx: n (mx + my) scratch, or NULL;
   * -1 outside) */
  bool straight = idx && f->im[2] == 0.0 && f->im[4] == 0.0;
  if (straight) {
    for (int64_t i = 0; i < mx; i++)
      for (int u = 0; u < n; u++) {
        double x = f->im[0] + f->im[1] * ((double)i + (u + 0.5) / n - 0.5);
        int64_t a = psp_seg_lround(x);
        idx[i * n + u] = (x >= -0.5 && x < (double)nx - 0.5) ? (a < nx ? a : nx - 1) : -1;
      }
    for (int64_t j = 0; j < my; j++)
      for (int v = 0; v < n; v++) {
        double y = f->im[3] + f->im[5] * ((double)j + (v + 0.5) / n - 0.5);
        int64_t b = psp_seg_lround(y);
        idx[(mx + j) * n + v] = (y >= -0.5 && y < (double)ny - 0.5) ? (b < ny ? b : ny - 1) : -1;
      }
  }
  for (int64_t j = 0; j < my; j++)
    for (int64_t i = 0; i < mx; i++) {
      double sum = 0.0;
      int got = 0, none = 0;
      for (int v = 0; v < n; v++)
        for (int u = 0; u < n; u++) {
          float val = is_ff ? NAN : 0.0f;
          if (straight) {
            int64_t a = idx[i * n + u], b = idx[(mx + j) * n + v];
            if (a >= 0 && b >= 0) val = src[b * nx + a];
          } else {
            double qi = (double)i + (u + 0.5) / n - 0.5, qj = (double)j + (v + 0.5) / n - 0.5;
            double x = (f->im[0] + f->im[2] * qj) + f->im[1] * qi;
            double y = (f->im[3] + f->im[5] * qj) + f->im[4] * qi;
            if (x >= -0.5 && y >= -0.5 && x < (double)nx - 0.5 && y < (double)ny - 0.5) {
              int64_t a = psp_seg_lround(x), b = psp_seg_lround(y);
              val = src[(b < ny ? b : ny - 1) * nx + (a < nx ? a : nx - 1)];
            }
          }
          if (isnan(val)) {
            none++;
          } else {
            sum += val;
            got++;
          }
        }
      dst[j * mx + i] = (got == 0 || (is_ff && 2 * none > n * n)) ? NAN : (float)(sum / got);
    }
}

/* The frame's plane size for an image axis of n voxels. */
static int64_t frame_dim(int64_t n, double f) {
  return (int64_t)ceil((double)n * f - 1e-9);
}

/* v resampled into the frame: a grid f times finer in-plane (coarser when
 * f < 1), whose voxel (i', j') centre lies at the image's ((i' + 0.5) / f
 * - 0.5, ...), same slices and file orientation. */
static psp_volume *rotated_volume(const frame *f, const psp_volume *v, bool is_ff,
                                  psp_error **err) {
  int64_t nx = v->dims[0], ny = v->dims[1], nz = v->dims[2];
  int64_t dims[3] = {frame_dim(nx, f[0].f), frame_dim(ny, f[0].f), nz};
  double aff[4][4];
  memcpy(aff, v->affine, sizeof aff);
  for (int r = 0; r < 3; r++) {
    double t = (0.5 / f[0].f - 0.5) * (v->affine[r][0] + v->affine[r][1]);
    aff[r][0] = v->affine[r][0] / f[0].f;
    aff[r][1] = v->affine[r][1] / f[0].f;
    aff[r][3] = v->affine[r][3] + t;
  }
  psp_volume *o = psp_volume_alloc(dims, aff, err);
  if (!o) return NULL;
  o->orient = v->orient;
  int n = f[0].f >= 1.0 ? 1 : (int)ceil(1.0 / f[0].f - 1e-9);
#pragma omp parallel
  {
    /* without it every point takes the general path: the same values */
    int64_t *idx = malloc((size_t)(n * (dims[0] + dims[1])) * sizeof *idx);
#pragma omp for schedule(dynamic, 1)
    for (int64_t k = 0; k < nz; k++)
      rotate_plane(&f[k], v->data + k * nx * ny, o->data + k * dims[0] * dims[1], nx, ny, dims[0],
                   dims[1], is_ff, idx);
    free(idx);
  }
  return o;
}

static void point_back(const frame *f, psp_lm_point *p) {
  if (p->found) to_image(f, p->i, p->j, &p->i, &p->j);
}

/* Landmarks of the rotated frame in the image's. */
static void landmarks_back(const frame *f, double deg, psp_slice_landmarks *lm, int64_t nx,
                           int64_t ny) {
  double mi, mj;
  to_image(f, lm->midline_i, lm->canal.found ? lm->canal.j : 0.0, &mi, &mj);
  point_back(f, &lm->body_centre);
  point_back(f, &lm->canal);
  point_back(f, &lm->vertebral_body);
  point_back(f, &lm->spinous);
  /* the frame's columns, in the image: di / dj = tan(deg) sy / sx */
  lm->midline_slope = f->im[2] / f->im[5];
  lm->midline_i = lm->canal.found ? mi + lm->midline_slope * (lm->canal.j - mj) : mi;
  lm->axis_deg = deg;
  double bi[2] = {INFINITY, -INFINITY}, bj[2] = {INFINITY, -INFINITY};
  for (int q = 0; q < 4; q++) {
    double x, y;
    to_image(f, (double)lm->body_box[q & 1], (double)lm->body_box[2 + (q >> 1)], &x, &y);
    bi[0] = fmin(bi[0], x);
    bi[1] = fmax(bi[1], x);
    bj[0] = fmin(bj[0], y);
    bj[1] = fmax(bj[1], y);
  }
  lm->body_box[0] = (int64_t)fmax(0.0, floor(bi[0]));
  lm->body_box[1] = (int64_t)fmin((double)(nx - 1), ceil(bi[1]));
  lm->body_box[2] = (int64_t)fmax(0.0, floor(bj[0]));
  lm->body_box[3] = (int64_t)fmin((double)(ny - 1), ceil(bj[1]));
}

/* floor(x) as an integer (x well inside the int64_t range). */
static int64_t floor_i64(double x) {
  int64_t t = (int64_t)x;
  return (double)t > x ? t - 1 : t;
}

/* Labels of the rotated frame (src: mx x my) in the image's (dst: nx x
 * ny): per voxel the label with the largest bilinear weight summed over f
 * x f points spread over the voxel (ties: the lower label; at f <= 1 the
 * voxel's centre), as a voxel's true label is the plurality of its
 * content. */
/* Adds the bilinear weights of the frame's labels at (x, y) to w (one
 * point: when the four labels around it agree, the weight 1 to that one). */
static void label_weights(const float *src, int64_t mx, int64_t my, double x, double y, bool one,
                          double *w) {
  int64_t a = floor_i64(x), b = floor_i64(y);
  double fx = x - (double)a, fy = y - (double)b;
  int l4[4];
  for (int q = 0; q < 4; q++) {
    int64_t ia = a + (q & 1), jb = b + (q >> 1);
    int l = (ia >= 0 && ia < mx && jb >= 0 && jb < my) ? (int)src[jb * mx + ia] : 0;
    l4[q] = l >= 0 && l < PSP_LABEL_COUNT ? l : -1;
  }
  if (one && l4[0] == l4[1] && l4[0] == l4[2] && l4[0] == l4[3]) {
    if (l4[0] >= 0) w[l4[0]] += 1.0;
    return;
  }
  for (int q = 0; q < 4; q++)
    if (l4[q] >= 0) w[l4[q]] += ((q & 1) ? fx : 1 - fx) * ((q >> 1) ? fy : 1 - fy);
}

static int best_label(const double *w) {
  int best = 0;
  for (int l = 1; l < PSP_LABEL_COUNT; l++)
    if (w[l] > w[best]) best = l;
  return best;
}

static void labels_back(const frame *f, const float *src, float *dst, int64_t nx, int64_t ny,
                        int64_t mx, int64_t my) {
  int m = f->f >= 1.0 ? (int)f->f : 1;
  if (m == 1 && f->fr[2] == 0.0 && f->fr[4] == 0.0) {
    /* an unrotated frame, one point per voxel: rows and columns apart */
    for (int64_t j = 0; j < ny; j++) {
      double y = f->fr[3] + f->fr[5] * (double)j;
      for (int64_t i = 0; i < nx; i++) {
        double w[PSP_LABEL_COUNT] = {0};
        label_weights(src, mx, my, f->fr[0] + f->fr[1] * (double)i, y, true, w);
        dst[j * nx + i] = (float)best_label(w);
      }
    }
    return;
  }
  for (int64_t j = 0; j < ny; j++)
    for (int64_t i = 0; i < nx; i++) {
      double w[PSP_LABEL_COUNT] = {0};
      for (int u = 0; u < m; u++)
        for (int v = 0; v < m; v++) {
          double x, y;
          to_frame(f, (double)i + (u + 0.5) / m - 0.5, (double)j + (v + 0.5) / m - 0.5, &x, &y);
          label_weights(src, mx, my, x, y, m == 1, w);
        }
      dst[j * nx + i] = (float)best_label(w);
    }
}

/* The FF map (and the magnitudes) resampled into the frames f, one per
 * slice; NULL with *err set. */
static psp_ffmap *frame_map(const psp_ffmap *ffm, const frame *f, psp_error **err) {
  const psp_volume *ffv = psp_ffmap_ff(ffm), *wv = psp_ffmap_edge_water(ffm),
                   *fv = psp_ffmap_edge_fat(ffm);
  psp_volume *rf = rotated_volume(f, ffv, true, err), *rw = NULL, *rt = NULL;
  if (rf && wv && fv) {
    rw = rotated_volume(f, wv, false, err);
    if (rw) rt = rotated_volume(f, fv, false, err);
  }
  if (!rf || (wv && fv && !rt)) {
    psp_volume_free(rf);
    psp_volume_free(rw);
    return NULL;
  }
  return psp_ffmap_adopt(ffm, rf, rw, rt, err);
}

/* s, segmented in the frames f (deg: each slice's angle, NULL: 0), brought
 * back to the grid of ffv: labels and landmarks; s then owns f. False
 * (out of memory, *err set) leaves s and f to the caller. */
static bool frame_back(psp_segmentation *s, frame *f, const double *deg, const psp_volume *ffv,
                       psp_error **err) {
  int64_t nx = ffv->dims[0], ny = ffv->dims[1], nz = ffv->dims[2];
  int64_t mx = s->labels->dims[0], my = s->labels->dims[1];
  psp_volume *lab = psp_volume_create_like(ffv, err);
  uint8_t *body = s->body ? psp_calloc((size_t)(nx * ny * nz), 1, err) : NULL;
  if (!lab || (s->body && !body)) {
    psp_volume_free(lab);
    return false;
  }
  bool oom = false;
#pragma omp parallel reduction(|| : oom)
  {
    /* the body mask comes back as a label of its own */
    float *src = body ? malloc((size_t)(mx * my) * sizeof *src) : NULL;
    float *dst = body ? malloc((size_t)(nx * ny) * sizeof *dst) : NULL;
    if (body && (!src || !dst)) oom = true;
#pragma omp for schedule(dynamic, 1)
    for (int64_t k = 0; k < nz; k++) {
      labels_back(&f[k], s->labels->data + k * mx * my, lab->data + k * nx * ny, nx, ny, mx, my);
      if (!src || !dst) continue;
      const uint8_t *b = s->body + k * mx * my;
      for (int64_t q = 0; q < mx * my; q++)
        src[q] = b[q] ? 1.0f : 0.0f;
      labels_back(&f[k], src, dst, nx, ny, mx, my);
      for (int64_t q = 0; q < nx * ny; q++)
        body[k * nx * ny + q] = dst[q] > 0.0f;
    }
    free(src);
    free(dst);
  }
  if (oom) {
    psp_error_set(err, PSP_ERR_NOMEM, "out of memory bringing the segmentation back to the image");
    psp_volume_free(lab);
    free(body);
    return false;
  }
  psp_volume_free(s->labels);
  s->labels = lab;
  free(s->body);
  s->body = body;
  s->body_plane = nx * ny;
  for (int64_t k = 0; k < nz; k++)
    landmarks_back(&f[k], deg ? deg[k] : 0.0, &s->lm[k], nx, ny);
  s->frames = (double *)f; /* FRAME_DOUBLES per slice (the static assertion above) */
  return true;
}

/* Frame pixels per image pixel (pixel sp[0] x sp[1] mm): coarser pixels
 * for fine input (below COARSEN_BELOW_MM: FINE_MM) unless native, and,
 * when the frame is rotated, finer ones for coarse input (whole
 * subdivisions, at most FINE_MM; 5 % slack for headers that round the
 * pixel size); else 1. */
static double frame_scale(const double *sp, bool rotated, bool native) {
  double px = fmax(sp[0], sp[1]);
  if (px < COARSEN_BELOW_MM) return native ? 1.0 : px / FINE_MM;
  return rotated ? fmax(1.0, ceil(px / FINE_MM - 0.05)) : 1.0;
}

/* psp_seg_run on ffm resampled into frames of m frame pixels per image
 * pixel, rotated by deg[k] (NULL: unrotated) about the image voxel (ci,
 * cj); the labels and landmarks come back to the image's grid (the frames
 * kept in s). Unrotated at m = 1: ffm itself. With ax, a run that asks for
 * a rotation returns its landmarks only, ax->per set and the pivot in the
 * image's voxels. */
static psp_segmentation *seg_in(const psp_ffmap *ffm, const double *deg, double ci, double cj,
                                double m, psp_seg_bottom_fn bottom, void *user, psp_seg_axis *ax,
                                psp_context *ctx, psp_error **err) {
  if (!deg && m == 1.0) return psp_seg_run(ffm, bottom, user, ax, ctx, err);
  const psp_volume *ffv = psp_ffmap_ff(ffm);
  int64_t nz = ffv->dims[2];
  double sp[3];
  psp_volume_spacing(ffv, sp);
  double t0 = psp_now();
  frame *f = psp_malloc((size_t)nz * sizeof *f, err);
  if (!f) return NULL;
  for (int64_t k = 0; k < nz; k++)
    f[k] = frame_make(deg ? deg[k] : 0.0, ci, cj, sp[0], sp[1], m);
  psp_ffmap *fm = frame_map(ffm, f, err);
  psp_context_add_time(ctx, "segment.align", psp_now() - t0);
  psp_segmentation *s = fm ? psp_seg_run(fm, bottom, user, ax, ctx, err) : NULL;
  psp_ffmap_free(fm);
  if (s && ax && ax->per) {
    to_image(&f[0], ax->ci, ax->cj, &ax->ci, &ax->cj);
  } else if (s) {
    t0 = psp_now();
    if (frame_back(s, f, deg, ffv, err)) {
      f = NULL; /* s's now */
    } else {
      psp_segmentation_free(s);
      s = NULL;
    }
    psp_context_add_time(ctx, "segment.align", psp_now() - t0);
  }
  free(f);
  return s;
}

/* Fine pixels: the muscle voxels of the run at the image's own pixels (fs)
 * with the muscle of the coarse run (s, both on the image's grid) written
 * into s: a voxel muscle in fs takes s's label there, or where s has none
 * the most frequent of s's muscles within MERGE_MM (ties: the lower
 * label), or else its own; slices segmented in s but not in fs keep s's
 * labels. False: out of memory (*err set). */
static bool merge_fine(psp_segmentation *s, const psp_segmentation *fs, const double *sp,
                       psp_error **err) {
  const psp_volume *lv = s->labels;
  int64_t nx = lv->dims[0], ny = lv->dims[1], nz = lv->dims[2], plane = nx * ny;
  int64_t ri = (int64_t)ceil(MERGE_MM / sp[0]), rj = (int64_t)ceil(MERGE_MM / sp[1]);
  bool oom = false;
#pragma omp parallel reduction(|| : oom)
  {
    float *out = malloc((size_t)plane * sizeof *out);
    if (!out) oom = true;
#pragma omp for schedule(dynamic, 1)
    for (int64_t k = 0; k < nz; k++) {
      if (!out || s->lm[k].status != PSP_SLICE_OK || fs->lm[k].status != PSP_SLICE_OK) continue;
      float *lc = lv->data + k * plane;
      const float *lf = fs->labels->data + k * plane;
      for (int64_t j = 0; j < ny; j++)
        for (int64_t i = 0; i < nx; i++) {
          int64_t v = j * nx + i;
          if (lf[v] <= 0.0f || lc[v] > 0.0f) {
            out[v] = lf[v] > 0.0f ? lc[v] : 0.0f;
            continue;
          }
          int n[PSP_LABEL_COUNT] = {0};
          for (int64_t b = j - rj; b <= j + rj; b++)
            for (int64_t a = i - ri; a <= i + ri; a++)
              if (a >= 0 && b >= 0 && a < nx && b < ny) {
                int l = (int)lc[b * nx + a];
                if (l > 0 && l < PSP_LABEL_COUNT) n[l]++;
              }
          int best = 0;
          for (int l = 1; l < PSP_LABEL_COUNT; l++)
            if (n[l] > n[best]) best = l; /* (n[0] stays 0) */
          out[v] = best ? (float)best : lf[v];
        }
      memcpy(lc, out, (size_t)plane * sizeof *out);
    }
    free(out);
  }
  if (oom) psp_error_set(err, PSP_ERR_NOMEM, "out of memory merging the fine and coarse labels");
  return !oom;
}

/* Whether the image's edge beyond the muscle voxel (i, j), along its row
 * (di = +-1) or its column (dj = +-1), lies in fat or outside the body: the
 * outermost EDGE_FAT_VOX voxels of that line, each averaged with its two
 * neighbours across the line (a fat plane along the edge keeps its FF, a
 * fatty streak does not), read FF >= thr or carry no signal. */
static bool edge_in_fat(const float *ff, int64_t nx, int64_t ny, int64_t i, int64_t j, int di,
                        int dj, double thr) {
  int64_t ei = di < 0 ? 0 : di > 0 ? nx - 1 : i, ej = dj < 0 ? 0 : dj > 0 ? ny - 1 : j;
  for (int q = 0; q < EDGE_FAT_VOX; q++) {
    int64_t a = ei - q * di, b = ej - q * dj;                          /* inwards from the edge */
    if ((di && (a - i) * di <= 0) || (dj && (b - j) * dj <= 0)) break; /* reached the muscle */
    double sum = 0;
    int n = 0;
    bool nosig = false;
    for (int r = -1; r <= 1; r++) {
      int64_t x = a + (dj ? r : 0), y = b + (di ? r : 0);
      if (x < 0 || x >= nx || y < 0 || y >= ny) continue;
      float v = ff[y * nx + x];
      if (isnan(v)) {
        nosig = true;
        continue;
      }
      sum += v;
      n++;
    }
    if (!nosig && n && sum / n < thr) return false;
  }
  return true;
}

/* Slices whose muscles reach within PSP_SEG_EDGE_MM of the image's edge are cut
 * by the field of view: flagged and emptied (an area measured up to the
 * edge would be too small, with nothing to show it). When only erector
 * spinae (one side or both) reach the edge, as a spine-only field of view
 * does on the upper lumbar slices, only they are left out (cut_labels):
 * the multifidus lies whole within the field of view and is measured
 * (dixon-tum01 cut to 160 x 160 mm: 6 of 29 slices flagged as a whole
 * before, multifidus Dice 0.70 / 0.80 -> 0.76 / 0.85 with them measured,
 * the rest of the loss from the missing height anchor). The compartment stays
 * SKIN_MM inside the body's outline, and a cut body's outline runs along
 * the edge. Unless the image's edge beyond the muscle lies in fat (or
 * outside the body) on more than half of the rows or columns where the
 * muscle comes that near (edge_in_fat, the slice's muscle/fat midpoint):
 * then the muscle ends inside the field of view, with fat between it and
 * the edge, and is measured. dixon-tum01
 * cut to a spine-only field of view of 163 x 163 mm (columns and rows
 * 120-279; its right erector spinae 3 mm from the edge, subcutaneous fat
 * beyond): 19 of 29 slices were flagged (all-muscle Dice 0.43 on the
 * rest counted as empty). ff: the FF map, nx * ny * nz (NaN = no
 * signal). */
static void flag_cut_off(psp_segmentation *s, const float *ff, const double *sp, psp_context *ctx) {
  psp_volume *lv = s->labels;
  int64_t nx = lv->dims[0], ny = lv->dims[1], plane = nx * ny;
  int64_t ei = (int64_t)ceil(PSP_SEG_EDGE_MM / sp[0]), ej = (int64_t)ceil(PSP_SEG_EDGE_MM / sp[1]);
  int64_t n_cut = 0, first = -1, last = -1, n_es = 0, es_first = -1, es_last = -1, n_lr = 0;
  for (int64_t k = 0; k < s->nz; k++) {
    psp_slice_landmarks *lm = &s->lm[k];
    lm->cut_labels = 0;
    if (lm->status != PSP_SLICE_OK) continue;
    float *lab = lv->data + k * plane;
    const float *fk = ff + k * plane;
    double thr = 0.5 * (lm->muscle_ff + lm->fat_ff);
    /* per label: the lines (rows for the left/right edges, columns for
     * the front/back) on which it comes within PSP_SEG_EDGE_MM of an edge, and
     * those of them whose edge does not lie in fat */
    int64_t near[PSP_LABEL_COUNT] = {0}, bare[PSP_LABEL_COUNT] = {0};
    for (int e = 0; e < 4; e++) {
      int di = e == 0 ? -1 : e == 1 ? 1 : 0, dj = e == 2 ? -1 : e == 3 ? 1 : 0;
      int64_t nl = di ? ny : nx, depth = di ? ei : ej;
      for (int64_t t = 0; t < nl; t++) {
        /* the muscle voxel nearest this edge on line t */
        int64_t bi = -1, bj = -1;
        for (int64_t q = 0; q < depth && bi < 0; q++) {
          int64_t i = di < 0 ? q : di > 0 ? nx - 1 - q : t;
          int64_t j = dj < 0 ? q : dj > 0 ? ny - 1 - q : t;
          if (lab[j * nx + i] > 0.0f) bi = i, bj = j;
        }
        if (bi < 0) continue;
        int m = (int)lab[bj * nx + bi];
        near[m]++;
        if (!edge_in_fat(fk, nx, ny, bi, bj, di, dj, thr)) bare[m]++;
      }
    }
    const uint8_t edge_pair = lm->lr_edge_pair;
    lm->lr_edge_pair = 0;
    int l = 0;
    unsigned cut = 0;
    for (int m = 1; m < PSP_LABEL_COUNT; m++)
      if (near[m] && (double)bare[m] >= EDGE_OPEN_SHARE * (double)near[m]) {
        if (!l) l = m;
        cut |= 1u << m;
      }
    /* the left/right check that waited for this (src/segment/checks.c):
     * left and right of a muscle too far apart in area, one of them at the
     * image's edge but not cut by it: a leak or a loss after all */
    const unsigned pair_bits = edge_pair == 1 ? MF_BITS : edge_pair == 2 ? ES_BITS : 0u;
    if (pair_bits && !(cut & pair_bits)) {
      psp_seg_flag(lm, PSP_SLICE_IMPLAUSIBLE, PSP_SEG_LR_REASON, lm->lr_edge_ratio, MAX_LR_RATIO);
      memset(lab, 0, (size_t)plane * sizeof *lab);
      n_lr++;
      continue;
    }
    if (!l) continue;
    if (!(cut & MF_BITS)) {
      /* only erector spinae reach the edge: they leave, the multifidus stays */
      for (int64_t p = 0; p < plane; p++)
        if (lab[p] > 0.0f && (cut >> (int)lab[p]) & 1u) lab[p] = 0.0f;
      lm->cut_labels = (uint8_t)cut;
      bool both = (cut & ES_BITS) == ES_BITS;
      snprintf(lm->reason, sizeof lm->reason,
               "spine found; the %s erector spinae reach%s the edge of the image (within %.0f "
               "mm, no fat between): cut by the field of view, not measured; the multifidus is",
               both                                ? "left and right"
               : (cut & (1u << PSP_LABEL_ES_LEFT)) ? "left"
                                                   : "right",
               both ? "" : "es", PSP_SEG_EDGE_MM);
      if (n_es++ == 0) es_first = k;
      es_last = k;
      continue;
    }
    if (n_cut++ == 0) first = k;
    last = k;
    lm->status = PSP_SLICE_CUT_OFF;
    snprintf(lm->reason, sizeof lm->reason,
             "the %s reaches the edge of the image (within %.0f mm, no fat between): cut by the "
             "field of view, not measured",
             psp_label_name(l), PSP_SEG_EDGE_MM);
    memset(lab, 0, (size_t)plane * sizeof *lab);
  }
  if (n_cut) {
    int64_t fa = psp_volume_file_slice(lv, first), fb = psp_volume_file_slice(lv, last);
    psp_warn(ctx,
             "automatic segmentation: %lld slice(s) (file slices %lld-%lld) cut by the field of "
             "view: a muscle reaches within %.0f mm of the image's edge, so those slices are not "
             "measured (reasons in report.json); widen the field of view",
             (long long)n_cut, (long long)(fa < fb ? fa : fb), (long long)(fa < fb ? fb : fa),
             PSP_SEG_EDGE_MM);
  }
  if (n_lr)
    psp_info(ctx,
             "automatic segmentation: %lld slice(s) with a muscle at the image's edge, not cut by "
             "it, flagged implausible: left and right too far apart in area",
             (long long)n_lr);
  if (n_es) {
    int64_t fa = psp_volume_file_slice(lv, es_first), fb = psp_volume_file_slice(lv, es_last);
    psp_warn(ctx,
             "automatic segmentation: on %lld slice(s) (file slices %lld-%lld) an erector spinae "
             "reaches within %.0f mm of the image's edge: it is cut by the field of view and not "
             "measured there, the multifidus is (cut_off in report.json); widen the field of view "
             "to measure both",
             (long long)n_es, (long long)(fa < fb ? fa : fb), (long long)(fa < fb ? fb : fa),
             PSP_SEG_EDGE_MM);
  }
}

/* How far each measured slice's multifidus/erector spinae boundary lies on
 * a visible fat plane (psp_seg_boundary_evidence), on the final labels on
 * the image's grid: a frame upsampled from coarse pixels repeats each
 * voxel, which the ridge test must not see. The side's level is the fatter
 * of the slice's and its multifidus's (a fatty side's plane stands less
 * above it). */
static void boundary_evidence(psp_segmentation *s, const float *ff, const double *sp) {
  const int64_t nx = s->labels->dims[0], ny = s->labels->dims[1];
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t k = 0; k < s->nz; k++) {
    psp_slice_landmarks *lm = &s->lm[k];
    if (lm->status != PSP_SLICE_OK) continue;
    double base = isnan(lm->muscle_ff) ? 0.1 : lm->muscle_ff, mus[2];
    for (int side = 0; side < 2; side++)
      mus[side] = isfinite(lm->muscle_side_ff[side]) ? fmax(base, lm->muscle_side_ff[side]) : base;
    psp_seg_boundary_evidence(ff + k * nx * ny, s->labels->data + k * nx * ny, nx, ny, sp[0], sp[1],
                              mus, lm->fat_ff, lm->plane_share);
  }
}

/* Without an anchor: where the field of view cuts the body at a side on
 * the lowest measured slice (its body outline, on the image's grid, reaches
 * the first or last column), the iliac crests may lie beyond the edge, so
 * their absence says little about the stack's bottom: a warning asks for
 * --disc. */
static void warn_sides_cut(const psp_segmentation *s, psp_context *ctx) {
  const int64_t nx = s->labels->dims[0], ny = s->labels->dims[1];
  for (int64_t k = 0; k < s->nz && s->body; k++) {
    if (s->lm[k].status != PSP_SLICE_OK) continue;
    const uint8_t *b = s->body + k * s->body_plane;
    bool cut = false;
    for (int64_t j = 0; j < ny && !cut; j++)
      cut = b[j * nx] || b[j * nx + nx - 1];
    if (cut)
      psp_warn(ctx,
               "automatic segmentation: the field of view cuts the body at a side on the lowest "
               "measured slice, where the iliac crests would show: if the stack reaches L5/S1, as "
               "a spine-only field of view often does, name a disc with --disc NAME=SLICE "
               "(dixon-tum01 cut to 180 x 160 mm: multifidus 0.77 / 0.85 without, 0.87 / 0.89 "
               "with --disc L5/S1=0)");
    return;
  }
}

psp_segmentation *psp_segment_with(const psp_ffmap *ffm, psp_seg_bottom_fn bottom, void *user,
                                   psp_context *ctx, psp_error **err) {
  psp_seg_axis ax = {NAN, 0, NAN, NAN, NULL};
  const psp_volume *ffv = psp_ffmap_ff(ffm);
  int64_t nx = ffv->dims[0], ny = ffv->dims[1], nz = ffv->dims[2];
  double sp[3];
  psp_volume_spacing(ffv, sp);
  double m = frame_scale(sp, false, false);
  if (m < 1.0)
    psp_info(ctx,
             "in-plane pixels of %.2f x %.2f mm: the muscles are told apart in a frame of %.2f x "
             "%.2f mm pixels (the scale the rules were developed at), their outline found at the "
             "image's pixels",
             sp[0], sp[1], sp[0] / m, sp[1] / m);
  psp_segmentation *s = seg_in(ffm, NULL, 0.5 * (double)(nx - 1), 0.5 * (double)(ny - 1), m, bottom,
                               user, &ax, ctx, err);
  double fm = m; /* the frame's scale */
  if (s && !isnan(ax.deg))
    psp_info(ctx, "spine axis: %.1f degrees from the image's columns (median of %lld slices)",
             ax.deg, (long long)ax.n);
  if (s && ax.per) {
    psp_segmentation_free(s);
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t k = 0; k < nz; k++) {
      lo = fmin(lo, ax.per[k]);
      hi = fmax(hi, ax.per[k]);
    }
    psp_info(ctx,
             "the spine lies rotated in the image plane (%.1f degrees, median of %lld slices; "
             "%.1f to %.1f along the stack): segmenting each slice in a frame aligned with it",
             ax.deg, (long long)ax.n, lo, hi);
    fm = frame_scale(sp, true, false);
    s = seg_in(ffm, ax.per, ax.ci, ax.cj, fm, bottom, user, NULL, ctx, err);
    if (s) {
      s->axis_deg = ax.deg;
      s->aligned = true;
    }
  }
  if (s && m < 1.0) {
    /* the outline at the image's pixels (no levels: only the muscles'
     * extent is kept) */
    psp_segmentation *fs = seg_in(ffm, ax.per, ax.ci, ax.cj, frame_scale(sp, ax.per != NULL, true),
                                  NULL, NULL, NULL, ctx, err);
    double t0 = psp_now();
    if (!fs || !merge_fine(s, fs, sp, err)) {
      psp_segmentation_free(s);
      s = NULL;
    }
    psp_segmentation_free(fs);
    psp_context_add_time(ctx, "segment.align", psp_now() - t0);
  }
  if (s) {
    s->frame_mm[0] = sp[0] / fm;
    s->frame_mm[1] = sp[1] / fm;
    flag_cut_off(s, ffv->data, sp, ctx);
    boundary_evidence(s, ffv->data, sp);
    if (s->unanchored) warn_sides_cut(s, ctx);
  }
  psp_seg_axis_free(&ax);
  return s;
}

psp_segmentation *psp_segment(const psp_ffmap *ff, psp_context *ctx, psp_error **err) {
  return psp_segment_with(ff, NULL, NULL, ctx, err);
}

void psp_segmentation_free(psp_segmentation *s) {
  if (!s) return;
  free(s->frames);
  free(s->body);
  psp_volume_free(s->labels);
  free(s->lm);
  free(s);
}

const psp_volume *psp_segmentation_labels(const psp_segmentation *s) {
  return s->labels;
}

psp_volume *psp_segmentation_take_labels(psp_segmentation *s) {
  psp_volume *v = s->labels;
  s->labels = NULL;
  return v;
}

const char *psp_segmentation_method(const psp_segmentation *s) {
  (void)s;
  return METHOD;
}

int64_t psp_segmentation_slice_count(const psp_segmentation *s) {
  return s->nz;
}

const psp_slice_landmarks *psp_segmentation_slice(const psp_segmentation *s, int64_t k) {
  return &s->lm[k];
}

const uint8_t *psp_segmentation_body(const psp_segmentation *s, int64_t k) {
  if (!s->body || k < 0 || k >= s->nz) return NULL;
  return s->body + k * s->body_plane;
}

int64_t psp_segmentation_ok_count(const psp_segmentation *s) {
  int64_t n = 0;
  for (int64_t k = 0; k < s->nz; k++)
    n += s->lm[k].status == PSP_SLICE_OK;
  return n;
}

int64_t psp_segmentation_cut_count(const psp_segmentation *s) {
  int64_t n = 0;
  for (int64_t k = 0; k < s->nz; k++)
    n += s->lm[k].status == PSP_SLICE_OK && s->lm[k].cut_labels != 0;
  return n;
}

void psp_segmentation_plane_share(const psp_segmentation *s, double share[2]) {
  for (int side = 0; side < 2; side++) {
    double sum = 0.0;
    int64_t n = 0;
    for (int64_t k = 0; k < s->nz; k++)
      if (s->lm[k].status == PSP_SLICE_OK && isfinite(s->lm[k].plane_share[side]))
        sum += s->lm[k].plane_share[side], n++;
    share[side] = n ? sum / (double)n : NAN;
  }
}

void psp_segmentation_to_image(const psp_segmentation *s, int64_t k, double *i, double *j) {
  if (!s->frames || k < 0 || k >= s->nz) return;
  frame f;
  memcpy(&f, s->frames + k * FRAME_DOUBLES, sizeof f);
  to_image(&f, *i, *j, i, j);
}

void psp_segmentation_frame_mm(const psp_segmentation *s, double mm[2]) {
  mm[0] = s->frame_mm[0];
  mm[1] = s->frame_mm[1];
}

psp_height_from psp_segmentation_height(const psp_segmentation *s, double *zero_slice) {
  if (zero_slice) *zero_slice = s->height_zero;
  return s->height_from;
}

const char *psp_height_from_name(psp_height_from h) {
  switch (h) {
  case PSP_HEIGHT_BOTTOM:
    return "bottom_of_stack";
  case PSP_HEIGHT_SACRUM:
    return "sacrum";
  case PSP_HEIGHT_NAMED:
    return "named_levels";
  case PSP_HEIGHT_ASSUMED:
    return "assumed";
  default:
    return "bottom_unchecked";
  }
}

double psp_segmentation_axis_deg(const psp_segmentation *s, bool *aligned) {
  if (aligned) *aligned = s->aligned;
  return s->axis_deg;
}
