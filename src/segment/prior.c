/*
 * DESIGN: the learned priors of the multifidus / erector spinae split
 * (src/segment/segment.c, step 3): the multifidus share of each polar ray
 * from the MuscleMap abdomen template, over all levels and per 15 mm band
 * of height above the template's anchor. The tables are the files in
 * models/ (regenerated there, checked against them by tests/unit/
 * test_segment.c); nothing is read at run time. Pure data and lookups.
 */
#include "segment/limits.h"
#include "segment/segment.h"

#include <math.h>
#include <string.h>

/* Median share of the multifidus along each ray from O (rho = (R_mf -
 * R_in) / (R_out - R_in) of the compartment on that ray), every 10 degrees
 * from straight back (0) to lateral and beyond: learned from the MuscleMap
 * abdomen template (MIT licence; 104 slices x 2 sides; 0 degrees, where the
 * template has no ray, takes the 10-degree value), see
 * models/mf_rho_profile.tsv and models/README.md. dixon-tum01's manual labels
 * give nearly the same profile (checked, not used). */
static const double MF_RHO[12] = {1.00, 1.00, 0.83, 0.64, 0.52, 0.36,
                                  0.27, 0.19, 0.13, 0.00, 0.00, 0.00};

double psp_segment_mf_rho(int deg10) {
  return deg10 >= 0 && deg10 < 12 ? MF_RHO[deg10] : 0.0;
}

/* The same by height above the template's anchor (the lowest slice from
 * which on the multifidus is less than half of MF + ES; where segment.c
 * places it: psp_segmentation_height): medians per 15 mm band, the first
 * from the 15 mm below the anchor, from models/mf_rho_by_level.tsv
 * (MuscleMap template only). Caudally the multifidus fills most of the
 * compartment; cranially the erector spinae takes over. */
#define N_BAND 11
#define BAND_MM 15.0
#define BAND0_MM (-7.5) /* the first band's centre: the 15 mm below the anchor */
static const double MF_RHO_Z[N_BAND][12] = {
    {1.00, 1.00, 1.00, 1.00, 1.00, 0.93, 0.61, 0.43, 0.39, 0.00, 0.00, 0.00},
    {1.00, 1.00, 1.00, 1.00, 1.00, 0.74, 0.52, 0.39, 0.23, 0.00, 0.00, 0.00},
    {1.00, 1.00, 1.00, 1.00, 0.74, 0.53, 0.39, 0.28, 0.19, 0.00, 0.00, 0.00},
    {1.00, 1.00, 1.00, 0.82, 0.67, 0.51, 0.37, 0.27, 0.14, 0.00, 0.00, 0.00},
    {1.00, 1.00, 0.85, 0.67, 0.53, 0.37, 0.27, 0.20, 0.16, 0.11, 0.00, 0.00},
    {1.00, 1.00, 0.78, 0.62, 0.51, 0.35, 0.26, 0.19, 0.00, 0.00, 0.00, 0.00},
    {1.00, 1.00, 0.70, 0.54, 0.42, 0.30, 0.22, 0.17, 0.12, 0.00, 0.00, 0.00},
    {1.00, 1.00, 0.69, 0.52, 0.41, 0.31, 0.23, 0.15, 0.00, 0.00, 0.00, 0.00},
    {1.00, 1.00, 0.68, 0.49, 0.38, 0.29, 0.21, 0.15, 0.09, 0.00, 0.00, 0.00},
    {1.00, 1.00, 0.67, 0.49, 0.39, 0.29, 0.21, 0.13, 0.00, 0.00, 0.00, 0.00},
    {1.00, 1.00, 0.84, 0.53, 0.41, 0.30, 0.21, 0.14, 0.00, 0.00, 0.00, 0.00},
};

double psp_segment_mf_rho_level(int band, int deg10) {
  return band >= 0 && band < N_BAND && deg10 >= 0 && deg10 < 12 ? MF_RHO_Z[band][deg10] : 0.0;
}

/* The prior's share per 10-degree ray for a slice dz mm above the anchor
 * (linear between band centres, clamped at the ends); NaN dz = no anchor:
 * the profile over all levels. */
void psp_seg_rho_row(double dz, double row[12]) {
  if (isnan(dz)) {
    memcpy(row, MF_RHO, sizeof MF_RHO);
    return;
  }
  double u = (dz - BAND0_MM) / BAND_MM;
  if (u < 0) u = 0;
  if (u > N_BAND - 1) u = N_BAND - 1;
  int a = (int)floor(u);
  if (a >= N_BAND - 1) a = N_BAND - 2;
  double f = u - a;
  for (int t = 0; t < 12; t++)
    row[t] = (1 - f) * MF_RHO_Z[a][t] + f * MF_RHO_Z[a + 1][t];
}

const double *psp_seg_mf_rho_all(void) {
  return MF_RHO;
}
