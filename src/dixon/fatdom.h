/*
 * fatdom.h — which in-phase/opposed-phase voxels are fat-dominant
 * (src/dixon/fatdom.c) and the body outline it shares with the FF map's
 * plausibility check (src/dixon/dixon.c); internal, not installed.
 */
#ifndef PSP_DIXON_FATDOM_H
#define PSP_DIXON_FATDOM_H

#include "core/internal.h"

/* Body mask per axial slice: the voxels with signal (sig), cleaned by a
 * 3 x 3 majority, largest 8-connected component, holes filled; slices whose
 * body would be < 50 voxels stay empty, and so do the slices k with
 * k % step != 0. False (err set when given) on OOM. */
bool psp_dixon_body_mask(const uint8_t *sig, const int64_t d[3], int64_t step, uint8_t *body,
                         psp_error **err);
/* The body's outer layer (band): body voxels 2..12 mm inside the outline
 * of their slice, away from the image's border. False (err set when given)
 * on OOM. */
bool psp_dixon_outer_layer(const uint8_t *body, const int64_t d[3], const double sp[3],
                           uint8_t *band, psp_error **err);
/* Fat dominance of the in-phase/opposed-phase pair ip, op (the volume ipv
 * gives the grid and spacing): fatdom[v] = 1 where fat dominates, among the
 * voxels with ip >= floor_v; *share = fat-dominant / signal voxels. False
 * on OOM (err set). */
bool psp_dixon_fat_dominance(const psp_volume *ipv, const float *ip, const float *op,
                             double floor_v, uint8_t *fatdom, double *share, psp_error **err);

#endif
