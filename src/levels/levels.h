/*
 * levels.h — vertebral level assignment along the axial stack (internal API,
 * not installed). psp_levels_detect finds the intervertebral discs on the
 * fat-fraction map (disc: almost no fat; vertebral marrow: a lot), looks for
 * an anchor (the sacrum below the lowest disc, else the iliac crest top)
 * and names every internal slice k:
 * a vertebra ("L4"), a disc ("L4/L5"), a relative name when no anchor is in
 * view ("D1" = the most inferior disc found, "V1" = the vertebra above it,
 * "V0" the one below it) or "" when unknown. Manual overrides
 * ("L4/L5=12": the L4/L5 disc is at slice 12 of the INPUT FILE) fix the
 * naming of the whole stack.
 *
 * Slice positions: internal slices k (0 = most inferior, see paraspinal.h);
 * every position also comes in the input file's own slice numbering.
 */
#ifndef PSP_LEVELS_H
#define PSP_LEVELS_H

#include "core/internal.h"
#include "segment/segment.h"

/* ------------------------------------------------------------------------ */
/* Manual overrides                                                          */
/* ------------------------------------------------------------------------ */

typedef struct psp_level_overrides psp_level_overrides;

/* Parses items of the form NAME=SLICE: NAME a disc ("L4/L5", "T12/L1",
 * "L5/S1"; case-insensitive, '-' accepted for '/') or a vertebra ("L4": the
 * slice lies inside that vertebra); SLICE a non-negative integer, the slice
 * index along the input file's own slice axis. A bad item is PSP_ERR_USAGE
 * naming it. n may be 0 (an empty set). */
psp_level_overrides *psp_level_overrides_parse(const char *const *items, size_t n, psp_error **err);
/* The same from a small text file: one NAME=SLICE per line, blank lines and
 * '#' comments (whole line or trailing) ignored. Errors name the file and
 * line (PSP_ERR_IO when unreadable, PSP_ERR_USAGE for a bad line). */
psp_level_overrides *psp_level_overrides_load(const char *path, psp_error **err);
/* The same from text in memory (len bytes, NUL not needed); `path` names it
 * in messages. */
psp_level_overrides *psp_level_overrides_parse_text(const char *text, size_t len, const char *path,
                                                    psp_error **err);
/* Appends all items of b to a (e.g. command line after file). */
bool psp_level_overrides_merge(psp_level_overrides *a, const psp_level_overrides *b,
                               psp_error **err);
void psp_level_overrides_free(psp_level_overrides *ov);
size_t psp_level_overrides_count(const psp_level_overrides *ov);
/* Borrowed name ("L4/L5") of item i and its file slice. */
const char *psp_level_overrides_name(const psp_level_overrides *ov, size_t i, int64_t *file_slice);

/* ------------------------------------------------------------------------ */
/* Detection                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct psp_levels psp_levels;

/* Finds the discs and names every slice. seg (may be NULL) supplies the
 * per-slice landmarks (spinal canal, midline); without it the landmarks are
 * found here. ov may be NULL. Never fails for lack of evidence: the result
 * then says "unknown" / relative names with low confidence, with flags (also
 * passed to psp_warn). Fails on out-of-memory, a NULL map, or an override
 * outside the stack (PSP_ERR_USAGE). Deterministic at any thread count. */
psp_levels *psp_levels_detect(const psp_ffmap *ff, const psp_segmentation *seg,
                              const psp_level_overrides *ov, psp_context *ctx, psp_error **err);
void psp_levels_free(psp_levels *lv);

/* Number of axial slices (the FF map's dims[2]). */
int64_t psp_levels_slice_count(const psp_levels *lv);
/* Borrowed name of internal slice k: "L4", "L4/L5", "S1", "T12", "V2",
 * "D2" or "" (unknown). Never NULL for k in range. */
const char *psp_levels_name(const psp_levels *lv, int64_t k);
/* True when slice k is named a disc (its centre within max(4 mm, half a
 * slice) of a disc centre, or the nearest slice to that centre). */
bool psp_levels_is_disc(const psp_levels *lv, int64_t k);
/* Position of slice k between the disc at or below it (0) and the next disc
 * above (1), in [0, 1); NaN when unknown. */
double psp_levels_fraction(const psp_levels *lv, int64_t k);
/* Confidence 0..1 of the name of slice k (0 when the name is ""). */
double psp_levels_confidence(const psp_levels *lv, int64_t k);
/* Marrow evidence profile: median FF (0..1, no-signal voxels counted as 0)
 * of the vertebral-body core of slice k; NaN where the column was not
 * found. For QC plots. */
double psp_levels_profile(const psp_levels *lv, int64_t k);
/* In-plane centre (voxel i, j) of the vertebral-body core sampled on slice
 * k; false when the column was not found there. */
bool psp_levels_column(const psp_levels *lv, int64_t k, double *i, double *j);

typedef struct psp_level_disc {
  char name[16];     /* "L4/L5", relative "D2", or "" */
  double slice;      /* sub-slice centre, internal numbering */
  double file_slice; /* the same in the input file's numbering */
  int64_t nearest;   /* nearest internal slice */
  int64_t nearest_file;
  double distance_mm; /* |centre - nearest slice centre| along the slice axis */
  double z_mm;        /* world z of the centre (interpolated) */
  double depth;       /* FF contrast of the dip (marrow level - disc), 0..1 */
  double confidence;  /* 0..1 */
  bool inferred;      /* not seen: placed in a gap of twice the spacing */
  bool from_override; /* placed / confirmed by a manual override */
} psp_level_disc;

/* Discs, ordered from inferior to superior (borrowed). */
size_t psp_levels_disc_count(const psp_levels *lv);
const psp_level_disc *psp_levels_disc(const psp_levels *lv, size_t i);

/* True when the names are anatomical (anchor or override); false when they
 * are relative (D1, V1, ...) or there are none. */
bool psp_levels_anchored(const psp_levels *lv);
/* True when the image itself anchored the names (the sacrum or the iliac
 * crest was seen), whether or not an override was applied too. */
bool psp_levels_image_anchored(const psp_levels *lv);
/* How the names were anchored, e.g. "lumbosacral junction: sacrum below
 * slice 3 (file 3)", "manual override L4/L5=12"; "" when none (borrowed). */
const char *psp_levels_anchor(const psp_levels *lv);
/* One-line description of the method and its parameters (borrowed). */
const char *psp_levels_method(const psp_levels *lv);
/* Iliac crest top (sub-slice, internal numbering; NaN when not found) and
 * per slice whether iliac bone was seen on both sides, and its area (mm^2)
 * on the right (side 0) and left (side 1). For QC and reports. */
double psp_levels_iliac_crest(const psp_levels *lv);
bool psp_levels_iliac_both(const psp_levels *lv, int64_t k);
/* Whether iliac bone was seen on both sides at the bottom of the stack (the
 * start of the crest's run, iliac.c), named levels or not: a run too short
 * to name them still puts the bottom at the pelvis. */
bool psp_levels_iliac_at_bottom(const psp_levels *lv);
/* Whether the bone below the lowest disc (6-30 mm below it, the stack's
 * bottom) is at least PSP_LEVELS_WIDE_BOTTOM x as wide as the lumbar bodies
 * above, without the sacrum anchor: the upper L5 body or the top of the
 * sacrum, so the lowest disc is L4/L5 or L5/S1 (dixon-tum01: 27.5 mm
 * against 19, below its crest-named L4/L5; a lumbar body below L3/L4 or
 * higher reads 1.0-1.1). */
#define PSP_LEVELS_WIDE_BOTTOM 1.25
bool psp_levels_wide_bottom(const psp_levels *lv);
double psp_levels_iliac_area(const psp_levels *lv, int64_t k, int side);
/* After a segmentation in a frame aligned with the spine (the levels found
 * on its landmarks, in that frame): the columns' points mapped to the
 * image's grid (psp_segmentation_to_image). */
void psp_levels_to_image(psp_levels *lv, const psp_segmentation *seg);
/* Slice spacing (mm) along the slice axis. */
double psp_levels_slice_spacing_mm(const psp_levels *lv);
/* A (fractional) internal slice position in the input file's numbering. */
double psp_levels_file_position(const psp_levels *lv, double k);
/* Median distance between adjacent discs (mm); NaN with fewer than 2. */
double psp_levels_spacing_mm(const psp_levels *lv);
/* Where the names put the L5/S1 disc (sub-slice, internal numbering): the
 * lowest named disc moved down by its ordinal times the disc spacing (a
 * typical one with fewer than two discs); it may lie outside the stack.
 * NaN when the names are relative or there are none. */
double psp_levels_l5s1_position(const psp_levels *lv);
/* The disc the sacrum was seen directly below (sub-slice, internal
 * numbering): the L5/S1 disc as the image shows it, whatever names an
 * override gave; NaN when the sacrum was not seen, or when an iliac crest
 * in view names the discs otherwise (flag "anchors_disagree"). */
double psp_levels_sacrum_disc(const psp_levels *lv);
/* Flags: short machine-readable keys ("no_anchor", "weak_evidence",
 * "transitional_suspected", "override_contradicts_detection",
 * "disc_gap_inferred", "column_not_found", "column_shifted",
 * "iliac_crest_anchor", "anchors_disagree", "override_applied") with a
 * human-readable message each (borrowed). Each message was also passed to
 * psp_warn (except "override_applied", logged as info). */
size_t psp_levels_flag_count(const psp_levels *lv);
const char *psp_levels_flag_key(const psp_levels *lv, size_t i);
const char *psp_levels_flag_message(const psp_levels *lv, size_t i);

/* Ordinal helpers shared with the per-level report: a disc ordinal o names
 * the disc o levels above L5/S1 (0 = L5/S1, 1 = L4/L5, ... 4 = L1/L2,
 * 5 = T12/L1, ...); the vertebra above disc o is "L5" for o = 0, "S1" for
 * o = -1. Out-of-range ordinals give "". */
void psp_levels_disc_name(int o, char out[16]);
void psp_levels_vertebra_name(int o, char out[16]);

/* Defined in src/pipeline.c: the level assignment of an analysis run
 * (borrowed; NULL for an ffmap-only run). */
const psp_levels *psp_result_levels(const psp_result *r);

#endif
