/*
 * spine.h — the landmarks of every slice, made consistent along the stack
 * (src/segment/spine.c; internal to src/segment, not installed).
 */
#ifndef PSP_SEGMENT_SPINE_H
#define PSP_SEGMENT_SPINE_H

#include "anatomy/landmarks.h"
#include "core/internal.h"

/* The landmarks of the nz slices of the FF map ffv into lm (nz entries),
 * each slice's body into body (nz planes of nx * ny); ipop: the FF map is
 * from in-phase/opposed-phase magnitudes. *k_low: the lowest slice with a
 * spine before the outliers' search (a provisional L5/S1), -1 without any.
 * Says on ctx (info) when fatty muscle needed a higher muscle limit.
 * False (err set) when out of memory. */
bool psp_seg_spine_landmarks(const psp_volume *ffv, bool ipop, uint8_t *body,
                             psp_slice_landmarks *lm, int64_t *k_low, psp_context *ctx,
                             psp_error **err);

#endif
