/*
 * change.h — follow-up comparison of two levels.csv tables (internal, not
 * installed): per level x muscle x side, the change of area, functional
 * area, FF and segment volume between a baseline and a follow-up run,
 * matched by level name, only for levels confidently named in both.
 * Semantics in change.c (DESIGN comment) and the README section
 * "Follow-up comparison".
 */
#ifndef PSP_CHANGE_H
#define PSP_CHANGE_H

#include "core/internal.h"

/* A parsed levels.csv (columns found by header name). */
typedef struct psp_levels_table psp_levels_table;

/* Parses levels.csv text; `name` (the file) is used in messages. Errors
 * (PSP_ERR_FORMAT) name the file and the line: a missing required column,
 * a duplicate column, a row with too few ("truncated") or too many fields,
 * a value that is not a number, an unknown kind/muscle/side, a duplicate
 * row. */
psp_levels_table *psp_levels_table_parse(const char *text, size_t len, const char *name,
                                         psp_error **err);
/* Reads and parses a file (PSP_ERR_IO when it cannot be read). */
psp_levels_table *psp_levels_table_load(const char *path, psp_error **err);
void psp_levels_table_free(psp_levels_table *t);
/* Number of data rows; whether any row is anchored. */
size_t psp_levels_table_row_count(const psp_levels_table *t);
bool psp_levels_table_anchored(const psp_levels_table *t);

typedef struct psp_change_options {
  /* A level is comparable only if anchored in both runs and its
   * level_confidence is >= this in both (default 0.5). */
  double min_confidence;
} psp_change_options;

void psp_change_options_default(psp_change_options *o);

/* One row of change.csv: one level x muscle x side x metric. */
typedef struct psp_change_row {
  char level[32];
  bool disc;
  const char *muscle, *side; /* static strings */
  const char *metric, *unit; /* levels.csv column name; "mm2", "mm3", "pct" */
  double baseline, followup; /* NaN when absent */
  double change_abs;         /* followup - baseline (FF: percentage points) */
  double change_rel_pct;     /* (followup - baseline) / |baseline| x 100 */
  bool ok;                   /* false: skipped, see reason */
  char reason[320];          /* skipped: why; ok: a caution or "" */
  /* The slices the values come from, in each run's own file numbering:
   * the single slice (first == last) or the vertebral segment; -1 = none. */
  int64_t base_first, base_last, follow_first, follow_last;
  double base_dist_mm, follow_dist_mm; /* single-slice metrics: distance to target */
  double base_conf, follow_conf;       /* level_confidence; NaN when absent */
} psp_change_row;

/* One level (union of both runs, inferior to superior). */
typedef struct psp_change_level {
  char level[32];
  bool disc;
  bool comparable;
  char reason[256]; /* why not comparable ("" when comparable) */
  bool in_base, in_follow;
  double base_conf, follow_conf;
  int64_t base_file_slice, follow_file_slice; /* the level's slice; -1 = none */
  int64_t base_seg_first, base_seg_last, follow_seg_first, follow_seg_last;
} psp_change_level;

typedef struct psp_change psp_change;

/* Matches the two tables and computes every change. Never fails for lack of
 * comparable levels (see psp_change_comparable_count). opt may be NULL. */
psp_change *psp_change_compute(const psp_levels_table *base, const psp_levels_table *follow,
                               const psp_change_options *opt, psp_error **err);
void psp_change_free(psp_change *c);
size_t psp_change_row_count(const psp_change *c);
const psp_change_row *psp_change_row_at(const psp_change *c, size_t i);
size_t psp_change_level_count(const psp_change *c);
const psp_change_level *psp_change_level_at(const psp_change *c, size_t i);
/* Levels compared (named confidently in both runs). */
size_t psp_change_comparable_count(const psp_change *c);
/* When nothing is comparable: why, and what to do (borrowed). */
const char *psp_change_none_reason(const psp_change *c);
/* The change.csv text (header included). Caller frees. */
char *psp_change_csv(const psp_change *c, psp_error **err);

#endif
