/*
 * DESIGN: the volume is the one image type of the pipeline: float32 voxels
 * on a grid reordered (never resampled) to LPS voxel order — i towards
 * patient Left, j towards Posterior, k towards Superior — with the exact
 * voxel-to-world affine (NIfTI RAS+, mm). Which file axis became which
 * internal axis, and whether it was reversed, is kept so outputs go back on
 * the input's own voxel grid and slice indices can be reported in the
 * file's numbering. Areas and volumes come from the affine (cross product /
 * determinant), so oblique and sheared grids measure correctly.
 */
#include "core/internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

psp_volume *psp_volume_alloc(const int64_t dims[3], const double affine[4][4], psp_error **err) {
  for (int a = 0; a < 3; a++) {
    if (dims[a] <= 0) {
      psp_error_set(err, PSP_ERR_GEOMETRY, "invalid grid dimensions %lld x %lld x %lld",
                    (long long)dims[0], (long long)dims[1], (long long)dims[2]);
      return NULL;
    }
  }
  int64_t n = dims[0] * dims[1] * dims[2];
  if (n / dims[0] / dims[1] != dims[2] || n > ((int64_t)1 << 40)) {
    psp_error_set(err, PSP_ERR_LIMIT, "grid %lld x %lld x %lld is too large", (long long)dims[0],
                  (long long)dims[1], (long long)dims[2]);
    return NULL;
  }
  psp_volume *v = psp_calloc(1, sizeof *v, err);
  if (!v) return NULL;
  v->data = psp_calloc((size_t)n, sizeof(float), err);
  if (!v->data) {
    free(v);
    return NULL;
  }
  psp_advise_huge(v->data, (size_t)n * sizeof(float));
  memcpy(v->dims, dims, sizeof v->dims);
  memcpy(v->affine, affine, sizeof v->affine);
  for (int a = 0; a < 3; a++) {
    v->orient.file_axis[a] = a;
    v->orient.flip[a] = false;
  }
  return v;
}

psp_volume *psp_volume_create(const int64_t dims[3], const double affine[4][4], psp_error **err) {
  return psp_volume_alloc(dims, affine, err);
}

psp_volume *psp_volume_create_like(const psp_volume *like, psp_error **err) {
  psp_volume *v = psp_volume_alloc(like->dims, like->affine, err);
  if (v) {
    v->orient = like->orient;
    v->no_xform = like->no_xform;
  }
  return v;
}

psp_volume *psp_volume_clone(const psp_volume *src, psp_error **err) {
  psp_volume *v = psp_volume_create_like(src, err);
  if (v) memcpy(v->data, src->data, (size_t)psp_volume_voxel_count(src) * sizeof(float));
  return v;
}

void psp_volume_release_data(psp_volume *v) {
  if (!v) return;
  free(v->data);
  v->data = NULL;
}

void psp_volume_free(psp_volume *v) {
  if (!v) return;
  free(v->data);
  free(v);
}

void psp_volume_dims(const psp_volume *v, int64_t dims[3]) {
  memcpy(dims, v->dims, sizeof v->dims);
}

int64_t psp_volume_voxel_count(const psp_volume *v) {
  return v->dims[0] * v->dims[1] * v->dims[2];
}

void psp_volume_affine(const psp_volume *v, double affine[4][4]) {
  memcpy(affine, v->affine, sizeof v->affine);
}

static double col_norm(const double a[4][4], int c) {
  return sqrt(a[0][c] * a[0][c] + a[1][c] * a[1][c] + a[2][c] * a[2][c]);
}

/* A derived size (mm, mm^2, mm^3) to 7 significant digits (float32's
 * precision): a rotated grid's float32 affine (NIfTI) gives 2.9999998 where
 * the same grid from DICOM (double) gives 3, and a rule's millimetres /
 * spacing then rounds to another voxel count: the same scan as NIfTI and as
 * DICOM segmented differently. Relative, so a tiny size stays above 0. */
static double snap(double x) {
  if (!(x > 0) || !isfinite(x)) return x;
  const double q = pow(10.0, floor(log10(x)) - 6.0);
  return round(x / q) * q;
}

void psp_volume_spacing(const psp_volume *v, double spacing[3]) {
  for (int c = 0; c < 3; c++)
    spacing[c] = snap(col_norm(v->affine, c));
}

double psp_volume_pixel_area(const psp_volume *v) {
  const double(*a)[4] = v->affine;
  double cx = a[1][0] * a[2][1] - a[2][0] * a[1][1];
  double cy = a[2][0] * a[0][1] - a[0][0] * a[2][1];
  double cz = a[0][0] * a[1][1] - a[1][0] * a[0][1];
  return snap(sqrt(cx * cx + cy * cy + cz * cz));
}

static double det3(const double a[4][4]) {
  return a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) -
         a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0]) +
         a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
}

double psp_volume_voxel_volume(const psp_volume *v) {
  return snap(fabs(det3(v->affine)));
}

double psp_volume_slice_z(const psp_volume *v, int64_t k) {
  const double(*a)[4] = v->affine;
  double ci = 0.5 * (double)(v->dims[0] - 1), cj = 0.5 * (double)(v->dims[1] - 1);
  return a[2][0] * ci + a[2][1] * cj + a[2][2] * (double)k + a[2][3];
}

const float *psp_volume_data(const psp_volume *v) {
  return v->data;
}

float *psp_volume_data_mut(psp_volume *v) {
  return v->data;
}

int64_t psp_volume_file_slice(const psp_volume *v, int64_t k) {
  return v->orient.flip[2] ? v->dims[2] - 1 - k : k;
}

psp_orientation psp_volume_orientation(const psp_volume *v) {
  return v->orient;
}

bool psp_volume_set_orientation(psp_volume *v, const psp_orientation *o, psp_error **err) {
  bool seen[3] = {false, false, false};
  for (int a = 0; a < 3; a++) {
    if (o->file_axis[a] < 0 || o->file_axis[a] > 2 || seen[o->file_axis[a]])
      return psp_error_set(err, PSP_ERR_USAGE, "orientation is not a permutation of the axes");
    seen[o->file_axis[a]] = true;
  }
  v->orient = *o;
  return true;
}

void psp_orientation_code(const psp_volume *v, char code[4]) {
  /* internal axis a points L, P, S; reversed it points R, A, I */
  static const char pos[3] = {'L', 'P', 'S'}, neg[3] = {'R', 'A', 'I'};
  for (int a = 0; a < 3; a++)
    code[v->orient.file_axis[a]] = v->orient.flip[a] ? neg[a] : pos[a];
  code[3] = '\0';
}

/* Index in file order of internal voxel (i,j,k) under orientation o. */
static void file_strides(const psp_orientation *o, const int64_t file_dims[3], int64_t stride[3],
                         int64_t *offset, const int64_t dims[3]) {
  int64_t fstride[3] = {1, file_dims[0], file_dims[0] * file_dims[1]};
  *offset = 0;
  for (int a = 0; a < 3; a++) {
    int f = o->file_axis[a];
    if (o->flip[a]) {
      stride[a] = -fstride[f];
      *offset += (dims[a] - 1) * fstride[f];
    } else {
      stride[a] = fstride[f];
    }
  }
}

/* Reverses the flipped axes of v's voxels in place (no axis permuted): the
 * file index of internal voxel (i, j, k) is its mirror along the flipped
 * axes, an involution, so each pair of rows is swapped once (by the row
 * with the smaller index), a row that is its own mirror reversed. */
static void flip_in_place(psp_volume *v) {
  const int64_t nx = v->dims[0], ny = v->dims[1], nz = v->dims[2];
  const bool fi = v->orient.flip[0], fj = v->orient.flip[1], fk = v->orient.flip[2];
  if (!fi && !fj && !fk) return;
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < nz; k++)
    for (int64_t j = 0; j < ny; j++) {
      const int64_t r = k * ny + j, r2 = (fk ? nz - 1 - k : k) * ny + (fj ? ny - 1 - j : j);
      if (r2 < r) continue;
      float *a = v->data + r * nx, *b = v->data + r2 * nx;
      if (r2 == r) {
        for (int64_t i = 0; fi && i < nx / 2; i++) {
          float t = a[i];
          a[i] = a[nx - 1 - i];
          a[nx - 1 - i] = t;
        }
      } else {
        for (int64_t i = 0; i < nx; i++) {
          const int64_t i2 = fi ? nx - 1 - i : i;
          if (fi && i2 < i) continue; /* (swapped from the other end already) */
          float t = a[i];
          a[i] = b[i2];
          b[i2] = t;
          if (i2 != i) {
            t = a[i2];
            a[i2] = b[i];
            b[i] = t;
          }
        }
      }
    }
}

static psp_volume *from_file_order(const float *file_data, float **take, const int64_t file_dims[3],
                                   const double fa[4][4], const char *name, psp_error **err) {
  double det = det3(fa);
  /* an infinite determinant (entries near DBL_MAX) would leave the axis
   * assignment below without a candidate */
  if (!(fabs(det) > 1e-12) || !isfinite(det)) {
    psp_error_set(err, PSP_ERR_GEOMETRY,
                  "%s: the voxel-to-world matrix is singular (zero or invalid spacing or "
                  "direction); cannot place the image in space",
                  name);
    return NULL;
  }
  /* an absurd scale (found by fuzzing: 1e213 mm entries overflow the column
   * norms) would make areas and volumes infinite downstream */
  for (int f = 0; f < 3; f++) {
    double s = col_norm(fa, f);
    if (!(s >= 1e-4 && s <= 1e4)) {
      psp_error_set(err, PSP_ERR_GEOMETRY,
                    "%s: voxel spacing %g mm along voxel axis %d is outside any plausible range "
                    "(0.0001 to 10000 mm)",
                    name, s, f);
      return NULL;
    }
    if (!(fabs(fa[f][3]) <= 1e7)) {
      psp_error_set(err, PSP_ERR_GEOMETRY,
                    "%s: image origin %g mm is outside any plausible range (|origin| <= 1e7 mm)",
                    name, fa[f][3]);
      return NULL;
    }
  }
  /* voxel axes (nearly) parallel: no grid, and a voxel volume of 0 (found
   * by fuzzing: a sform whose three columns lie in one plane) */
  double sine = fabs(det3(fa)) / (col_norm(fa, 0) * col_norm(fa, 1) * col_norm(fa, 2));
  if (!(sine >= 1e-3)) {
    psp_error_set(err, PSP_ERR_GEOMETRY,
                  "%s: the voxel-to-world matrix is degenerate: its three voxel axes (nearly) lie "
                  "in one plane (|det| / product of spacings = %.3g)",
                  name, sine);
    return NULL;
  }
  /* Assign each file axis to the world axis it is most aligned with, largest
   * components first, so that the assignment is a permutation. */
  double w[3][3]; /* w[f][x] = |direction cosine| */
  for (int f = 0; f < 3; f++) {
    double nrm = col_norm(fa, f);
    for (int x = 0; x < 3; x++)
      w[f][x] = fabs(fa[x][f]) / nrm;
  }
  int world_of_file[3] = {-1, -1, -1};
  bool used_world[3] = {false, false, false};
  for (int step = 0; step < 3; step++) {
    double best = -1;
    int bf = -1, bx = -1;
    for (int f = 0; f < 3; f++) {
      if (world_of_file[f] >= 0) continue;
      for (int x = 0; x < 3; x++)
        if (!used_world[x] && w[f][x] > best) {
          best = w[f][x];
          bf = f;
          bx = x;
        }
    }
    world_of_file[bf] = bx;
    used_world[bx] = true;
  }
  psp_orientation o;
  int64_t dims[3];
  for (int f = 0; f < 3; f++) {
    int a = world_of_file[f];
    o.file_axis[a] = f;
    dims[a] = file_dims[f];
    double comp = fa[a][f];
    /* RAS world: Left is -x, Posterior is -y, Superior is +z */
    o.flip[a] = (a == 2) ? (comp < 0) : (comp > 0);
  }
  double affine[4][4] = {{0}};
  for (int r = 0; r < 4; r++)
    affine[r][3] = fa[r][3];
  affine[3][3] = 1;
  for (int a = 0; a < 3; a++) {
    int f = o.file_axis[a];
    double s = o.flip[a] ? -1.0 : 1.0;
    for (int r = 0; r < 3; r++) {
      affine[r][a] = s * fa[r][f];
      if (o.flip[a]) affine[r][3] += fa[r][f] * (double)(file_dims[f] - 1);
    }
  }
  if (take && *take && o.file_axis[0] == 0 && o.file_axis[1] == 1 && o.file_axis[2] == 2 &&
      dims[0] > 0 && dims[1] > 0 && dims[2] > 0) {
    psp_volume *v = psp_calloc(1, sizeof *v, err);
    if (!v) return NULL;
    memcpy(v->dims, dims, sizeof v->dims);
    memcpy(v->affine, affine, sizeof v->affine);
    v->orient = o;
    v->data = *take;
    *take = NULL;
    flip_in_place(v);
    return v;
  }
  psp_volume *v = psp_volume_alloc(dims, affine, err);
  if (!v) return NULL;
  v->orient = o;
  int64_t stride[3], offset;
  file_strides(&o, file_dims, stride, &offset, dims);
  for (int64_t k = 0; k < dims[2]; k++)
    for (int64_t j = 0; j < dims[1]; j++) {
      float *dst = v->data + psp_idx(dims, 0, j, k);
      int64_t src = offset + j * stride[1] + k * stride[2];
      for (int64_t i = 0; i < dims[0]; i++)
        dst[i] = file_data[src + i * stride[0]];
    }
  return v;
}

psp_volume *psp_volume_from_file_order(const float *file_data, const int64_t file_dims[3],
                                       const double fa[4][4], const char *name, psp_error **err) {
  return from_file_order(file_data, NULL, file_dims, fa, name, err);
}

psp_volume *psp_volume_from_file_order_take(float **file_data, const int64_t file_dims[3],
                                            const double fa[4][4], const char *name,
                                            psp_error **err) {
  return from_file_order(*file_data, file_data, file_dims, fa, name, err);
}

void psp_volume_file_layout(const psp_volume *v, int64_t file_dims[3], double fa[4][4],
                            int64_t stride[3], int64_t *offset) {
  const psp_orientation *o = &v->orient;
  for (int a = 0; a < 3; a++)
    file_dims[o->file_axis[a]] = v->dims[a];
  memset(fa, 0, sizeof(double) * 16);
  for (int r = 0; r < 4; r++)
    fa[r][3] = v->affine[r][3];
  fa[3][3] = 1;
  for (int a = 0; a < 3; a++) {
    int f = o->file_axis[a];
    double s = o->flip[a] ? -1.0 : 1.0;
    for (int r = 0; r < 3; r++) {
      fa[r][f] = s * v->affine[r][a];
      if (o->flip[a]) fa[r][3] += v->affine[r][a] * (double)(v->dims[a] - 1);
    }
  }
  file_strides(o, file_dims, stride, offset, v->dims);
}

void psp_volume_to_file_order(const psp_volume *v, float *out, int64_t file_dims[3],
                              double fa[4][4]) {
  int64_t stride[3], offset;
  psp_volume_file_layout(v, file_dims, fa, stride, &offset);
  for (int64_t k = 0; k < v->dims[2]; k++)
    for (int64_t j = 0; j < v->dims[1]; j++) {
      const float *src = v->data + psp_idx(v->dims, 0, j, k);
      int64_t dst = offset + j * stride[1] + k * stride[2];
      for (int64_t i = 0; i < v->dims[0]; i++)
        out[dst + i * stride[0]] = src[i];
    }
}

psp_grid_relation psp_grid_compare(const psp_volume *a, const psp_volume *b, char *why,
                                   size_t why_len) {
  char tmp[512];
  if (!why) {
    why = tmp;
    why_len = sizeof tmp;
  }
  why[0] = '\0';
  if (a->no_xform != b->no_xform) {
    /* its voxel axes were taken along the scanner's: a guess that flips
     * left-right and front-back against an LPS image, not an origin shift */
    snprintf(why, why_len,
             "the %s has no qform or sform, so where its voxels lie is unknown; write it with "
             "the %s's header (e.g. fslcpgeom) and run again",
             a->no_xform ? "first" : "second", a->no_xform ? "second" : "first");
    return PSP_GRID_DIFFERENT;
  }
  if (memcmp(a->dims, b->dims, sizeof a->dims) != 0) {
    snprintf(why, why_len, "dimensions differ: %lld x %lld x %lld vs %lld x %lld x %lld",
             (long long)a->dims[0], (long long)a->dims[1], (long long)a->dims[2],
             (long long)b->dims[0], (long long)b->dims[1], (long long)b->dims[2]);
    return PSP_GRID_DIFFERENT;
  }
  double sa[3], sb[3];
  psp_volume_spacing(a, sa);
  psp_volume_spacing(b, sb);
  for (int c = 0; c < 3; c++) {
    if (fabs(sa[c] - sb[c]) > 1e-3 * fmax(sa[c], sb[c])) {
      snprintf(why, why_len,
               "voxel spacing differs: %.5g x %.5g x %.5g mm vs %.5g x %.5g x %.5g mm", sa[0],
               sa[1], sa[2], sb[0], sb[1], sb[2]);
      return PSP_GRID_DIFFERENT;
    }
  }
  for (int c = 0; c < 3; c++)
    for (int r = 0; r < 3; r++) {
      if (fabs(a->affine[r][c] / sa[c] - b->affine[r][c] / sb[c]) > 1e-3) {
        snprintf(why, why_len,
                 "axis directions differ (voxel axis %d: %.4f %.4f %.4f vs %.4f %.4f %.4f)", c,
                 a->affine[0][c] / sa[c], a->affine[1][c] / sa[c], a->affine[2][c] / sa[c],
                 b->affine[0][c] / sb[c], b->affine[1][c] / sb[c], b->affine[2][c] / sb[c]);
        return PSP_GRID_DIFFERENT;
      }
    }
  double d2 = 0;
  for (int r = 0; r < 3; r++)
    d2 += (a->affine[r][3] - b->affine[r][3]) * (a->affine[r][3] - b->affine[r][3]);
  if (sqrt(d2) > 0.01) {
    snprintf(
        why, why_len,
        "origins differ by %.2f mm: (%.3f, %.3f, %.3f) vs (%.3f, %.3f, %.3f) mm (RAS, first voxel "
        "in LPS order)",
        sqrt(d2), a->affine[0][3], a->affine[1][3], a->affine[2][3], b->affine[0][3],
        b->affine[1][3], b->affine[2][3]);
    return PSP_GRID_ORIGIN_DIFFERS;
  }
  return PSP_GRID_SAME;
}

bool psp_volume_adopt_geometry(psp_volume *a, const psp_volume *from, psp_error **err) {
  char why[512];
  if (psp_grid_compare(a, from, why, sizeof why) == PSP_GRID_DIFFERENT)
    return psp_error_set(err, PSP_ERR_GEOMETRY, "cannot adopt geometry: %s", why);
  memcpy(a->affine, from->affine, sizeof a->affine);
  a->orient = from->orient;
  return true;
}
