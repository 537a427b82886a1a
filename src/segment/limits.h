/*
 * limits.h — the medial and front limits of the multifidus compartment
 * (src/segment/limits.c), and the small helpers the segmentation files
 * share (internal, not installed).
 */
#ifndef PSP_SEGMENT_LIMITS_H
#define PSP_SEGMENT_LIMITS_H

#include "core/internal.h"

#include <math.h>

#define GAP_MIN_MM 3.0 /* medial limit of the compartment, from the midline */
#define GAP_MAX_MM 8.0

/* mm -> voxels (at least 1). */
static inline int64_t psp_seg_vox(double mm, double sp) {
  int64_t v = (int64_t)lround(mm / sp);
  return v < 1 ? 1 : v;
}

/* qsort comparison of doubles. */
static inline int psp_seg_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Medial limit per row j (gap[j], mm from the midline) of the side sgn
 * (+1 left, -1 right); raw: ny doubles of scratch. */
void psp_seg_medial_limits(const float *ff, int64_t nx, int64_t ny, double sx, double sy,
                           double mid, double j_canal, int sgn, double *gap, double *raw);
/* Front limit per column i (yf[i], mm behind the canal centre; -INFINITY
 * where it does not apply) of the side sgn; raw: nx doubles of scratch. */
void psp_seg_lamina_limits(const float *sig, int64_t nx, int64_t ny, double sx, double sy,
                           double mid, double cj, double rc, int sgn, double *yf, double *raw);

#endif
