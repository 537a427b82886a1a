/*
 * DESIGN: region helpers of the segmentation (src/segment/segment.c): the
 * seeded watershed that splits a compartment along a visible fat plane,
 * and the NaN-aware 3 x 3 mean of the FF map behind the strict mask. Both
 * work only where their input can be nonzero (a rectangle, the interior
 * without bounds checks) and give exactly the results of the plain loops
 * over the whole slice (same sums in the same order, same queue order).
 * Pure functions of their inputs; the callers own every buffer.
 */
#include "segment/limits.h"

#include <string.h>

#define WS_BUCKETS 256

/* Seeded watershed (priority flood) inside region == val on the 3 x 3 mean
 * FF (over region voxels): seeds (values 1 and 2 in seed) grow into their
 * leanest neighbours first, so two seeds meet on the fattest line between
 * them (a fat plane, a fascia). lab receives 0 outside the region, else the
 * seed value that reached the voxel (0 if none); only inside the rectangle
 * bx = {i0, i1, j0, j1}, outside which region is empty. First-in-first-out
 * per FF bucket, seeds pushed in scan order: deterministic. next, key:
 * nx * ny scratch. */
void psp_seg_watershed2(const float *ff, const uint8_t *region, uint8_t val, const uint8_t *seed,
                        int64_t nx, int64_t ny, const int64_t bx[4], uint8_t *lab, int32_t *next,
                        uint8_t *key) {
  int32_t head[WS_BUCKETS], tail[WS_BUCKETS];
  for (int64_t j = bx[2]; j <= bx[3]; j++)
    memset(lab + j * nx + bx[0], 0, (size_t)(bx[1] - bx[0] + 1));
  for (int b = 0; b < WS_BUCKETS; b++)
    head[b] = tail[b] = -1;
  for (int64_t j = bx[2]; j <= bx[3]; j++)
    for (int64_t i = bx[0]; i <= bx[1]; i++) {
      int64_t p = j * nx + i;
      if (region[p] != val) continue;
      double acc = 0;
      int m = 0;
      for (int64_t bj = j - 1; bj <= j + 1; bj++)
        for (int64_t ai = i - 1; ai <= i + 1; ai++) {
          if (ai < 0 || bj < 0 || ai >= nx || bj >= ny || region[bj * nx + ai] != val) continue;
          float v = ff[bj * nx + ai];
          if (isnan(v)) continue;
          acc += v;
          m++;
        }
      double v = m ? acc / m : 1.0;
      int kb = (int)(v * (WS_BUCKETS - 1));
      key[p] = (uint8_t)(kb < 0 ? 0 : kb > WS_BUCKETS - 1 ? WS_BUCKETS - 1 : kb);
    }
#define WS_PUSH(q)                                                                                 \
  do {                                                                                             \
    int b_ = key[q];                                                                               \
    next[q] = -1;                                                                                  \
    if (tail[b_] < 0)                                                                              \
      head[b_] = (int32_t)(q);                                                                     \
    else                                                                                           \
      next[tail[b_]] = (int32_t)(q);                                                               \
    tail[b_] = (int32_t)(q);                                                                       \
  } while (0)
  for (int64_t j = bx[2]; j <= bx[3]; j++)
    for (int64_t p = j * nx + bx[0]; p <= j * nx + bx[1]; p++)
      if (region[p] == val && seed[p]) {
        lab[p] = seed[p];
        WS_PUSH(p);
      }
  int cur = 0;
  for (;;) {
    while (cur < WS_BUCKETS && head[cur] < 0)
      cur++;
    if (cur >= WS_BUCKETS) break;
    int64_t p = head[cur];
    head[cur] = next[p];
    if (head[cur] < 0) tail[cur] = -1;
    int64_t i = p % nx, j = p / nx;
    int64_t nb[4] = {i > 0 ? p - 1 : -1, i + 1 < nx ? p + 1 : -1, j > 0 ? p - nx : -1,
                     j + 1 < ny ? p + nx : -1};
    for (int c = 0; c < 4; c++) {
      int64_t q = nb[c];
      if (q < 0 || region[q] != val || lab[q]) continue;
      lab[q] = lab[p];
      if (key[q] < cur) key[q] = (uint8_t)cur; /* flooded from a higher level */
      WS_PUSH(q);
    }
  }
#undef WS_PUSH
}

/* The 3 x 3 mean, NaN-aware. A NaN neighbour adds +0.0 instead of being
 * skipped: the sum starts at +0.0 and so can never be -0.0, so that adding
 * +0.0 leaves it unchanged and every sum is the one the skipping loop
 * forms, in the same order; inside the slice this runs without branches
 * (vectorised across the row). */
static void mean3_row_z(const float *v, int64_t nx, double *z, int32_t *c) {
  for (int64_t i = 0; i < nx; i++) {
    float x = v[i];
    int ok = !isnan(x);
    z[i] = ok ? (double)x : 0.0;
    c[i] = ok;
  }
}

static float mean3_edge(const float *v, int64_t nx, int64_t ny, int64_t i, int64_t j) {
  double acc = 0;
  int m = 0;
  for (int64_t b = j - 1; b <= j + 1; b++)
    for (int64_t a = i - 1; a <= i + 1; a++) {
      if (a < 0 || b < 0 || a >= nx || b >= ny) continue;
      float x = v[b * nx + a];
      if (isnan(x)) continue;
      acc += x;
      m++;
    }
  return m ? (float)(acc / m) : NAN;
}

void psp_seg_mean3(const float *v, int64_t nx, int64_t ny, float *out, double *zs, int32_t *ns) {
  if (nx < 3 || ny < 3) {
    for (int64_t j = 0; j < ny; j++)
      for (int64_t i = 0; i < nx; i++)
        out[j * nx + i] = mean3_edge(v, nx, ny, i, j);
    return;
  }
  for (int64_t i = 0; i < nx; i++) {
    out[i] = mean3_edge(v, nx, ny, i, 0);
    out[(ny - 1) * nx + i] = mean3_edge(v, nx, ny, i, ny - 1);
  }
  /* rows j - 1, j, j + 1 in the ring zs / ns (row r at r % 3) */
  mean3_row_z(v, nx, zs, ns);
  mean3_row_z(v + nx, nx, zs + nx, ns + nx);
  for (int64_t j = 1; j + 1 < ny; j++) {
    mean3_row_z(v + (j + 1) * nx, nx, zs + (j + 1) % 3 * nx, ns + (j + 1) % 3 * nx);
    const double *z0 = zs + (j - 1) % 3 * nx, *z1 = zs + j % 3 * nx, *z2 = zs + (j + 1) % 3 * nx;
    const int32_t *n0 = ns + (j - 1) % 3 * nx, *n1 = ns + j % 3 * nx, *n2 = ns + (j + 1) % 3 * nx;
    float *o = out + j * nx;
    o[0] = mean3_edge(v, nx, ny, 0, j);
    o[nx - 1] = mean3_edge(v, nx, ny, nx - 1, j);
    for (int64_t i = 1; i + 1 < nx; i++) {
      double acc = 0;
      acc += z0[i - 1];
      acc += z0[i];
      acc += z0[i + 1];
      acc += z1[i - 1];
      acc += z1[i];
      acc += z1[i + 1];
      acc += z2[i - 1];
      acc += z2[i];
      acc += z2[i + 1];
      int32_t m = n0[i - 1] + n0[i] + n0[i + 1] + n1[i - 1] + n1[i] + n1[i + 1] + n2[i - 1] +
                  n2[i] + n2[i + 1];
      o[i] = m ? (float)(acc / m) : NAN;
    }
  }
}
