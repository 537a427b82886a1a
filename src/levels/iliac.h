/*
 * iliac.h — the iliac-crest anchor of the level assignment (internal, used
 * by levels.c and the unit tests): per-slice detection of iliac bone on both
 * sides of the spine, the crest top along the stack, and the rule that
 * names the discs from it. See the DESIGN note of iliac.c.
 */
#ifndef PSP_LEVELS_ILIAC_H
#define PSP_LEVELS_ILIAC_H

#include "core/internal.h"

/* What the detector sees: the FF map (nx x ny x nz floats, NaN = no
 * signal), its spacing, and per slice the spine frame (spinal-canal centre
 * row cj and left-right midline column mid, voxel units, finite on every
 * slice). Marrow-like bone is evidence (FF, or min(FF, 1-FF) with sym) in
 * [lo, hi]. */
typedef struct psp_iliac_input {
  const float *ff;
  int64_t dims[3];
  double spacing[3];
  const double *cj, *mid;
  double lo, hi;
  bool sym;
  /* a higher floor of the evidence on the right (side 0, lower i) and the
   * left (side 1) of the midline: that side's erector spinae level (0:
   * none) */
  double lo_side[2];
} psp_iliac_input;

/* Per slice: area (mm^2) of bone-like tissue on the right (side 0, lower
 * i) and left (side 1) in the iliac search region, its centroid offset
 * from the midline (mm, lateral positive) and from the canal (mm,
 * posterior positive), and whether the slice counts as "iliac bone on both
 * sides". */
typedef struct psp_iliac_slice {
  double area_mm2[2];
  double lat_mm[2], ap_mm[2];
  bool both;
} psp_iliac_slice;

typedef struct psp_iliac {
  bool found;      /* the crest top lies inside the stack */
  double crest;    /* sub-slice position of the crest top (internal), NaN */
  int64_t top;     /* highest slice of the run from the bottom, -1 when none */
  int64_t n_above; /* "both" slices above the run (inconsistent evidence) */
  bool one_slice;  /* the run is one thick slice (weaker evidence) */
  char why[200];   /* when !found: the reason, for the log */
} psp_iliac;

/* Detects iliac bone on every slice (per_slice: nz entries, filled) and
 * the crest top. Never fails for lack of evidence (found = false, why
 * says so); fails on out-of-memory only. Serial, deterministic. */
bool psp_iliac_detect(const psp_iliac_input *in, psp_iliac_slice *per_slice, psp_iliac *out,
                      psp_error **err);

/* The crest top along the stack from the per-slice results (nz slices of
 * dz mm; only `both` and `area_mm2` are read): the run of "both" slices
 * starting at the bottom of the stack (within max(1 slice, 8 mm); single
 * missing slices bridged when dz <= 5 mm) must span at least 2 slices and
 * 8 mm, not narrow downwards (summed area at its lowest slice >= 0.75 x
 * that at its highest), end at least max(1 slice, 8 mm) below the top of the stack,
 * and be followed by fewer than 2 "both" slices within 25 mm above it. */
void psp_iliac_crest(const psp_iliac_slice *sl, int64_t nz, double dz, psp_iliac *out);

/* The naming rule. Discs at sub-slice positions disc[0..n) (ascending,
 * internal numbering), slice thickness dz, median disc spacing spacing_mm
 * (NaN: a default of 38 mm), crest top at `crest`. */
typedef struct psp_iliac_rule {
  bool ok;           /* false: the crest is more than one spacing beyond the discs */
  int base;          /* ordinal of disc 0 (0 = L5/S1, 1 = L4/L5, ...) */
  double t;          /* crest position between the bracketing discs (0..1) */
  double offset_mm;  /* crest minus the disc named L4/L5 (mm, + = crest above) */
  bool ambiguous;    /* the crest lies in the middle third of a vertebra */
  bool extrapolated; /* the disc named L4/L5 was not detected (one spacing beyond) */
  double conf;       /* anchor confidence factor */
} psp_iliac_rule;

psp_iliac_rule psp_iliac_name_discs(const double *disc, size_t n, double dz, double spacing_mm,
                                    double crest);

#endif
