/*
 * levels_csv.h — the per-level table levels.csv (internal, not installed):
 * one row per level (disc "L4/L5" or vertebra "L4", relative names when
 * the stack is not anchored) x muscle (multifidus, erector_spinae, mf+es)
 * x side (left, right, both), from the per-slice rows of psp_measure and
 * the level assignment of psp_levels_detect. Column meanings in
 * levels_csv.c (DESIGN comment) and the README.
 */
#ifndef PSP_LEVELS_CSV_H
#define PSP_LEVELS_CSV_H

#include "core/internal.h"
#include "levels/levels.h"

/* The CSV text (header included; caller frees). labels (may be NULL) is
 * only checked for having the same number of slices as lv. measured (may
 * be NULL): nslices x PSP_LABEL_COUNT flags, [k * PSP_LABEL_COUNT + l]
 * nonzero when label l was measured on slice k (an automatic segmentation:
 * the slice segmented and the muscle not cut by the field of view; needs
 * labels, whose slice count it has); NULL: every muscle of a slice that
 * holds any label (labels given by the user).
 * Levels without a name (unknown) produce no rows; a stack without discs
 * gives the header only. */
char *psp_levels_csv(const psp_levels *lv, const psp_measurements *m, const psp_volume *labels,
                     const uint8_t *measured, psp_error **err);

/* The research-only fat grade for a mean FF in percent: "lt20", "20-50",
 * "gt50", or "" for NaN. */
const char *psp_levels_fat_grade(double ff_pct);

#endif
