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

/* The erector spinae's front edge lateral of the transverse processes:
 * removes the voxels of value val (one side's compartment) in front of a
 * line that starts at the compartment's own most anterior point between
 * ES_REF_LO_MM and ES_REF_HI_MM from the midline and rises backwards
 * laterally as in the MuscleMap template (table: psp_segment_es_rise), less
 * ES_FRONT_TOL_MM, or at a fat plane seen within ES_SEARCH_MM of that line
 * in ff (NULL: the line only; muscle, fat: the slice's FF levels). Returns
 * the number removed, or -1 out of memory. */
#define ES_REF_MM 35.0 /* the template's rise is measured from here */
#ifndef ES_REF_LO_MM
#define ES_REF_LO_MM 30.0
#endif
#ifndef ES_REF_HI_MM
#define ES_REF_HI_MM 55.0
#endif
#define ES_RISE_STEP_MM 5.0
#define ES_RISE_N 9
#ifndef ES_FRONT_TOL_MM
#define ES_FRONT_TOL_MM 4.0
#endif
#ifndef ES_SEARCH_MM
#define ES_SEARCH_MM 6.0
#endif
#define ES_PLANE_MM 2.0
#ifndef ES_PLANE_CONTRAST
#define ES_PLANE_CONTRAST 0.15
#endif
#define ES_COLS_MM 6.0
int64_t psp_seg_es_front_limit(uint8_t *comp, uint8_t val, const float *ff, double muscle,
                               double fat, int64_t nx, int64_t ny, double sx, double sy, double mid,
                               int sgn);
/* The compiled rise table, entry i (d = ES_REF_MM + 5 (i + 1) mm); NAN
 * outside. */
double psp_segment_es_rise(int i);

#endif
