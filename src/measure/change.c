/*
 * DESIGN: follow-up comparison (`paraspinal change`): reads the levels.csv
 * of a baseline and of a follow-up run and computes, per level x muscle x
 * side, the change of
 *   area_mm2, fcsa_mm2, ff_mean_pct            (the level's single slice)
 *   seg_area_mm2_mean, seg_fcsa_mm2_mean,
 *   seg_ff_mean_pct_mean, seg_volume_mm3       (the vertebral segment)
 * as change_abs = followup - baseline (FF in percentage points) and
 * change_rel_pct = (followup - baseline) / |baseline| x 100.
 *
 * Reading: levels.csv is parsed as RFC 4180 CSV (quoted fields, "" escapes,
 * CRLF or LF, a UTF-8 byte-order mark) and columns are found by header
 * name, never by position; extra columns are ignored. Every error names the
 * file and the line: a missing or duplicate column, a row with fewer fields
 * than the header (truncated) or more, a cell that is not a finite number,
 * a kind/muscle/side outside the levels.csv vocabulary, a duplicate row.
 * Empty numeric cells mean "not measurable" (NaN), as in levels.csv.
 *
 * Matching: rows are matched on (level, kind, muscle, side). A level is
 * comparable only when, in BOTH runs, it is present, anchored = 1, its
 * name is not a relative one (D1, V2: no anchor; never matched even if the
 * file says anchored) and level_confidence >= min_confidence (default
 * 0.5). Otherwise every row of that level is written with status
 * "skipped" and the reason; nothing is dropped silently. Within a
 * comparable level a metric is skipped when a value is empty in either run,
 * and seg_volume_mm3 is skipped when the segment is incomplete
 * (seg_complete = 0: cut by the end of the stack, or a slice of it flagged
 * or its muscle cut by the field of view) in either run, because that
 * volume then depends on what was in view. Cautions that do not stop the
 * comparison (segment means over an incomplete segment, a different
 * number of segment slices, a zero baseline) go into the reason column of
 * "ok" rows.
 *
 * Provenance: each row carries the file slices used in each run (the single
 * slice, or the first and last slice of the segment) and, for single-slice
 * metrics, the distance of the used slice from the ideal position, so a
 * change never silently reflects a different choice of slice.
 *
 * Order: levels inferior to superior (anatomical rank of absolute names;
 * relative or unknown names after them in order of appearance), then muscle
 * (multifidus, erector_spinae, mf+es), side (left, right, both), metric.
 */
#include "measure/change.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILE_BYTES ((int64_t)64 << 20)
#define N_METRICS 7
#define N_SLICE_METRICS 3

static const char *const MUSCLES[3] = {"multifidus", "erector_spinae", "mf+es"};
static const char *const SIDES[3] = {"left", "right", "both"};
static const struct {
  const char *name, *unit;
  bool segment;
} METRICS[N_METRICS] = {
    {"area_mm2", "mm2", false},         {"fcsa_mm2", "mm2", false},
    {"ff_mean_pct", "pct", false},      {"seg_area_mm2_mean", "mm2", true},
    {"seg_fcsa_mm2_mean", "mm2", true}, {"seg_ff_mean_pct_mean", "pct", true},
    {"seg_volume_mm3", "mm3", true},
};

/* ------------------------------------------------------------------------ */
/* levels.csv reading                                                        */
/* ------------------------------------------------------------------------ */

enum {
  C_LEVEL,
  C_KIND,
  C_MUSCLE,
  C_SIDE,
  C_CONF,
  C_ANCHORED,
  C_FILE_SLICE,
  C_DIST,
  C_SEG_FIRST,
  C_SEG_LAST,
  C_SEG_N,
  C_SEG_COMPLETE,
  C_METRIC0, /* N_METRICS metric columns follow, in METRICS order */
  C_COUNT = C_METRIC0 + N_METRICS,
};

static const char *const COLUMN_NAMES[C_METRIC0] = {
    "level",
    "kind",
    "muscle",
    "side",
    "level_confidence",
    "anchored",
    "file_slice",
    "slice_distance_mm",
    "seg_first_file_slice",
    "seg_last_file_slice",
    "seg_n_slices",
    "seg_complete",
};

static const char *column_name(int c) {
  return c < C_METRIC0 ? COLUMN_NAMES[c] : METRICS[c - C_METRIC0].name;
}

typedef struct lt_row {
  char level[32];
  bool disc;
  int muscle, side; /* indices into MUSCLES, SIDES */
  double conf;
  int anchored;
  int64_t file_slice; /* -1 = none */
  double dist_mm;
  int64_t seg_first, seg_last, seg_n; /* -1 = none */
  int seg_complete;                   /* -1 = none */
  double v[N_METRICS];
  size_t line;
} lt_row;

struct psp_levels_table {
  char *name;
  lt_row *rows;
  size_t n, cap;
};

/* One CSV record: fields point into `buf` (NUL-separated copies). */
typedef struct csv_record {
  char *buf;
  size_t buf_len, buf_cap;
  size_t *start; /* offsets into buf */
  size_t n, cap;
} csv_record;

static bool rec_putc(csv_record *r, char ch, psp_error **err) {
  if (r->buf_len + 1 > r->buf_cap) {
    size_t nc = r->buf_cap ? 2 * r->buf_cap : 256;
    char *nb = realloc(r->buf, nc);
    if (!nb) return psp_error_set(err, PSP_ERR_NOMEM, "out of memory reading CSV");
    r->buf = nb;
    r->buf_cap = nc;
  }
  r->buf[r->buf_len++] = ch;
  return true;
}

static bool rec_new_field(csv_record *r, psp_error **err) {
  if (r->n == r->cap) {
    size_t nc = r->cap ? 2 * r->cap : 64;
    size_t *ns = realloc(r->start, nc * sizeof *ns);
    if (!ns) return psp_error_set(err, PSP_ERR_NOMEM, "out of memory reading CSV");
    r->start = ns;
    r->cap = nc;
  }
  r->start[r->n++] = r->buf_len;
  return true;
}

static const char *rec_field(const csv_record *r, size_t i) {
  return r->buf + r->start[i];
}

/* Reads the record starting at *pos; *line is the line it starts on and is
 * advanced past it. Returns false on error. *blank is set for an empty
 * line. */
static bool read_record(const char *t, size_t len, size_t *pos, size_t *line, csv_record *r,
                        bool *blank, const char *name, psp_error **err) {
  r->buf_len = 0;
  r->n = 0;
  size_t p = *pos, start_line = *line;
  *blank = p < len && (t[p] == '\n' || (t[p] == '\r' && p + 1 < len && t[p + 1] == '\n'));
  if (!rec_new_field(r, err)) return false;
  for (;;) {
    if (p >= len) break;
    char ch = t[p];
    if (ch == '"' && r->buf_len == r->start[r->n - 1]) { /* quoted field */
      p++;
      for (;;) {
        if (p >= len)
          return psp_error_set(err, PSP_ERR_FORMAT,
                               "%s: line %zu: unterminated quoted field (file truncated?)", name,
                               start_line);
        if (t[p] == '"') {
          if (p + 1 < len && t[p + 1] == '"') {
            if (!rec_putc(r, '"', err)) return false;
            p += 2;
            continue;
          }
          p++;
          break;
        }
        if (t[p] == '\n') (*line)++;
        if (!rec_putc(r, t[p], err)) return false;
        p++;
      }
      if (p < len && t[p] != ',' && t[p] != '\n' && !(t[p] == '\r'))
        return psp_error_set(err, PSP_ERR_FORMAT,
                             "%s: line %zu: unexpected character after a closing quote", name,
                             *line);
      continue;
    }
    if (ch == ',') {
      if (!rec_putc(r, '\0', err) || !rec_new_field(r, err)) return false;
      p++;
      continue;
    }
    if (ch == '\n' || ch == '\r') {
      if (ch == '\r' && p + 1 < len && t[p + 1] == '\n') p++;
      p++;
      break;
    }
    if (!rec_putc(r, ch, err)) return false;
    p++;
  }
  if (!rec_putc(r, '\0', err)) return false;
  (*line)++;
  *pos = p;
  return true;
}

/* Trims surrounding blanks in place. */
static char *trim(char *s) {
  while (*s == ' ' || *s == '\t')
    s++;
  size_t n = strlen(s);
  while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
    s[--n] = '\0';
  return s;
}

static bool parse_num(const char *s, double *out) {
  if (!*s) {
    *out = NAN;
    return true;
  }
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno == ERANGE || *end || !isfinite(v)) return false;
  *out = v;
  return true;
}

/* An integer cell (empty = -1). */
static bool parse_index(const char *s, int64_t *out) {
  double v;
  if (!parse_num(s, &v)) return false;
  if (isnan(v)) {
    *out = -1;
    return true;
  }
  if (v < 0 || v > 1e12 || v != floor(v)) return false;
  *out = (int64_t)v;
  return true;
}

static int find_word(const char *s, const char *const *words, int n) {
  for (int i = 0; i < n; i++)
    if (!strcmp(s, words[i])) return i;
  return -1;
}

void psp_levels_table_free(psp_levels_table *t) {
  if (!t) return;
  free(t->name);
  free(t->rows);
  free(t);
}

size_t psp_levels_table_row_count(const psp_levels_table *t) {
  return t ? t->n : 0;
}

bool psp_levels_table_anchored(const psp_levels_table *t) {
  for (size_t i = 0; t && i < t->n; i++)
    if (t->rows[i].anchored == 1) return true;
  return false;
}

/* Parses one data record into row (fields located by col[]). */
static bool parse_row(const csv_record *rec, const int *col, size_t line, const char *name,
                      lt_row *row, psp_error **err) {
  memset(row, 0, sizeof *row);
  row->line = line;
  char cell[C_COUNT][128];
  for (int c = 0; c < C_COUNT; c++) {
    const char *s = rec_field(rec, (size_t)col[c]);
    if (strlen(s) >= sizeof cell[c])
      return psp_error_set(err, PSP_ERR_FORMAT, "%s: line %zu: column '%s': value too long", name,
                           line, column_name(c));
    snprintf(cell[c], sizeof cell[c], "%s", s);
  }
  const char *lvl = trim(cell[C_LEVEL]);
  if (!*lvl)
    return psp_error_set(err, PSP_ERR_FORMAT, "%s: line %zu: empty level name", name, line);
  if (strlen(lvl) >= sizeof row->level)
    return psp_error_set(err, PSP_ERR_FORMAT, "%s: line %zu: level name '%.40s...' too long", name,
                         line, lvl);
  snprintf(row->level, sizeof row->level, "%s", lvl);
  const char *kind = trim(cell[C_KIND]);
  if (strcmp(kind, "disc") != 0 && strcmp(kind, "vertebra") != 0)
    return psp_error_set(err, PSP_ERR_FORMAT, "%s: line %zu: kind '%s' is not 'disc' or 'vertebra'",
                         name, line, kind);
  row->disc = !strcmp(kind, "disc");
  row->muscle = find_word(trim(cell[C_MUSCLE]), MUSCLES, 3);
  if (row->muscle < 0)
    return psp_error_set(err, PSP_ERR_FORMAT,
                         "%s: line %zu: muscle '%s' is not multifidus, erector_spinae or mf+es",
                         name, line, trim(cell[C_MUSCLE]));
  row->side = find_word(trim(cell[C_SIDE]), SIDES, 3);
  if (row->side < 0)
    return psp_error_set(err, PSP_ERR_FORMAT, "%s: line %zu: side '%s' is not left, right or both",
                         name, line, trim(cell[C_SIDE]));
  double a;
  const char *as = trim(cell[C_ANCHORED]);
  if (!parse_num(as, &a) || (a != 0 && a != 1))
    return psp_error_set(err, PSP_ERR_FORMAT, "%s: line %zu: anchored '%s' is not 0 or 1", name,
                         line, as);
  row->anchored = (int)a;
  const char *cs = trim(cell[C_CONF]);
  if (!parse_num(cs, &row->conf) || row->conf < 0 || row->conf > 1)
    return psp_error_set(err, PSP_ERR_FORMAT,
                         "%s: line %zu: level_confidence '%s' is not a number 0-1", name, line, cs);
  int64_t *idx[4] = {&row->file_slice, &row->seg_first, &row->seg_last, &row->seg_n};
  const int icol[4] = {C_FILE_SLICE, C_SEG_FIRST, C_SEG_LAST, C_SEG_N};
  for (int i = 0; i < 4; i++) {
    const char *s = trim(cell[icol[i]]);
    if (!parse_index(s, idx[i]))
      return psp_error_set(err, PSP_ERR_FORMAT,
                           "%s: line %zu: column '%s': '%s' is not a slice index or count", name,
                           line, column_name(icol[i]), s);
  }
  const char *sc = trim(cell[C_SEG_COMPLETE]);
  double scv;
  if (!parse_num(sc, &scv) || (!isnan(scv) && scv != 0 && scv != 1))
    return psp_error_set(err, PSP_ERR_FORMAT, "%s: line %zu: seg_complete '%s' is not 0 or 1", name,
                         line, sc);
  row->seg_complete = isnan(scv) ? -1 : (int)scv;
  for (int c = C_DIST; c < C_COUNT; c++) {
    if (c != C_DIST && c < C_METRIC0) continue;
    const char *s = trim(cell[c]);
    double *dst = c == C_DIST ? &row->dist_mm : &row->v[c - C_METRIC0];
    if (!parse_num(s, dst))
      return psp_error_set(err, PSP_ERR_FORMAT, "%s: line %zu: column '%s': '%s' is not a number",
                           name, line, column_name(c), s);
  }
  return true;
}

psp_levels_table *psp_levels_table_parse(const char *text, size_t len, const char *name,
                                         psp_error **err) {
  if (!name) name = "levels.csv";
  if (!text) {
    psp_error_set(err, PSP_ERR_USAGE, "%s: no text", name);
    return NULL;
  }
  if (memchr(text, '\0', len)) {
    psp_error_set(err, PSP_ERR_FORMAT, "%s: not a text file (contains NUL bytes)", name);
    return NULL;
  }
  psp_levels_table *t = psp_calloc(1, sizeof *t, err);
  if (!t) return NULL;
  t->name = psp_malloc(strlen(name) + 1, err);
  if (!t->name) {
    free(t);
    return NULL;
  }
  memcpy(t->name, name, strlen(name) + 1);
  csv_record rec = {0};
  size_t pos = 0, line = 1;
  if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) pos = 3;
  bool ok = true, blank = false;
  /* header */
  int col[C_COUNT];
  size_t ncols = 0;
  if (pos >= len) {
    ok =
        psp_error_set(err, PSP_ERR_FORMAT, "%s: empty file (expected the levels.csv header)", name);
  } else {
    ok = read_record(text, len, &pos, &line, &rec, &blank, name, err);
  }
  if (ok) {
    ncols = rec.n;
    for (int c = 0; c < C_COUNT; c++)
      col[c] = -1;
    for (size_t i = 0; i < rec.n && ok; i++) {
      char h[128];
      snprintf(h, sizeof h, "%s", rec_field(&rec, i));
      const char *hn = trim(h);
      for (int c = 0; c < C_COUNT; c++) {
        if (strcmp(hn, column_name(c)) != 0) continue;
        if (col[c] >= 0)
          ok =
              psp_error_set(err, PSP_ERR_FORMAT, "%s: line 1: column '%s' appears twice", name, hn);
        col[c] = (int)i;
      }
    }
    for (int c = 0; c < C_COUNT && ok; c++)
      if (col[c] < 0)
        ok = psp_error_set(err, PSP_ERR_FORMAT,
                           "%s: line 1: header has no column '%s' (not a levels.csv of "
                           "paraspinal analyze?)",
                           name, column_name(c));
  }
  /* data rows */
  while (ok && pos < len) {
    size_t rec_line = line;
    ok = read_record(text, len, &pos, &line, &rec, &blank, name, err);
    if (!ok) break;
    if (blank || (rec.n == 1 && !*trim(rec.buf))) continue; /* empty line */
    if (rec.n != ncols) {
      ok =
          psp_error_set(err, PSP_ERR_FORMAT, "%s: line %zu: %s row: %zu fields, the header has %zu",
                        name, rec_line, rec.n < ncols ? "truncated" : "malformed", rec.n, ncols);
      break;
    }
    if (t->n == t->cap) {
      size_t nc = t->cap ? 2 * t->cap : 64;
      lt_row *nr = realloc(t->rows, nc * sizeof *nr);
      if (!nr) {
        ok = psp_error_set(err, PSP_ERR_NOMEM, "out of memory reading %s", name);
        break;
      }
      t->rows = nr;
      t->cap = nc;
    }
    lt_row *row = &t->rows[t->n];
    ok = parse_row(&rec, col, rec_line, name, row, err);
    if (!ok) break;
    for (size_t j = 0; j < t->n && ok; j++) {
      const lt_row *o = &t->rows[j];
      if (!strcmp(o->level, row->level) && o->disc == row->disc && o->muscle == row->muscle &&
          o->side == row->side)
        ok = psp_error_set(err, PSP_ERR_FORMAT,
                           "%s: line %zu: duplicate row for %s %s %s (first at line %zu)", name,
                           rec_line, row->level, MUSCLES[row->muscle], SIDES[row->side], o->line);
    }
    if (ok) t->n++;
  }
  free(rec.buf);
  free(rec.start);
  if (!ok) {
    psp_levels_table_free(t);
    return NULL;
  }
  return t;
}

psp_levels_table *psp_levels_table_load(const char *path, psp_error **err) {
  size_t len = 0;
  char *buf = psp_read_file(path, &len, MAX_FILE_BYTES, err);
  if (!buf) return NULL;
  psp_levels_table *t = psp_levels_table_parse(buf, len, path, err);
  free(buf);
  return t;
}

/* ------------------------------------------------------------------------ */
/* Comparison                                                                */
/* ------------------------------------------------------------------------ */

struct psp_change {
  psp_change_row *rows;
  size_t n, cap;
  psp_change_level *levels;
  size_t nl;
  size_t comparable;
  char none_reason[512];
};

void psp_change_options_default(psp_change_options *o) {
  o->min_confidence = 0.5;
}

/* D1, V0, V12: relative names given without an anchor. */
static bool relative_name(const char *s) {
  if (s[0] != 'D' && s[0] != 'V') return false;
  if (!s[1]) return false;
  for (const char *p = s + 1; *p; p++)
    if (!isdigit((unsigned char)*p)) return false;
  return true;
}

/* Superior-to-inferior index of a vertebra name (C1..C7, T1..T12, L1..L6,
 * S1..S5), -1 when not one. */
static int vertebra_index(const char *s, size_t n) {
  static const struct {
    char letter;
    int first, count;
  } regions[4] = {{'C', 0, 7}, {'T', 7, 12}, {'L', 19, 6}, {'S', 25, 5}};
  if (n < 2 || n > 3) return -1;
  for (int r = 0; r < 4; r++) {
    if (s[0] != regions[r].letter) continue;
    int v = 0;
    for (size_t i = 1; i < n; i++) {
      if (!isdigit((unsigned char)s[i])) return -1;
      v = v * 10 + (s[i] - '0');
    }
    return v >= 1 && v <= regions[r].count ? regions[r].first + v - 1 : -1;
  }
  return -1;
}

/* Anatomical rank, larger = more superior; -1 = unknown/relative. */
static int level_rank(const char *name) {
  const char *slash = strchr(name, '/');
  if (!slash) {
    int v = vertebra_index(name, strlen(name));
    return v < 0 ? -1 : 1000 - 2 * v;
  }
  int a = vertebra_index(name, (size_t)(slash - name));
  int b = vertebra_index(slash + 1, strlen(slash + 1));
  return a < 0 || b < 0 ? -1 : 1000 - 2 * a - 1;
}

static const lt_row *find_row(const psp_levels_table *t, const char *level, bool disc, int muscle,
                              int side) {
  for (size_t i = 0; i < t->n; i++) {
    const lt_row *r = &t->rows[i];
    if (r->disc == disc && r->muscle == muscle && r->side == side && !strcmp(r->level, level))
      return r;
  }
  return NULL;
}

/* Any row of a level (for its level-wide values). */
static const lt_row *find_level(const psp_levels_table *t, const char *level, bool disc) {
  for (size_t i = 0; i < t->n; i++)
    if (t->rows[i].disc == disc && !strcmp(t->rows[i].level, level)) return &t->rows[i];
  return NULL;
}

static void append_reason(char *dst, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void append_reason(char *dst, size_t n, const char *fmt, ...) {
  size_t used = strlen(dst);
  if (used > 0 && used + 2 < n) {
    snprintf(dst + used, n - used, "; ");
    used += 2;
  }
  if (used + 1 >= n) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(dst + used, n - used, fmt, ap);
  va_end(ap);
}

/* Why a level in one run cannot be used (appended to reason). */
static void run_reasons(const psp_levels_table *t, const lt_row *r, const char *run,
                        const char *level, double thr, char *reason, size_t n) {
  if (!r) {
    if (!relative_name(level) && t->n > 0 && !psp_levels_table_anchored(t))
      append_reason(reason, n, "not in the %s run (not anchored there: relative names only)", run);
    else
      append_reason(reason, n, "not in the %s run", run);
    return;
  }
  if (relative_name(level))
    append_reason(reason, n, "relative name in the %s run (no anchor in view); never matched", run);
  else if (r->anchored != 1)
    append_reason(reason, n, "not anchored in the %s run", run);
  if (!(r->conf >= thr))
    append_reason(reason, n, "confidence %.3f < %.2f in the %s run", r->conf, thr, run);
}

typedef struct level_key {
  char name[32];
  bool disc;
  int rank;
  size_t order;
} level_key;

static int cmp_level_key(const void *pa, const void *pb) {
  const level_key *a = pa, *b = pb;
  bool ka = a->rank >= 0, kb = b->rank >= 0;
  if (ka != kb) return ka ? -1 : 1;
  if (ka && a->rank != b->rank) return a->rank > b->rank ? 1 : -1; /* inferior first */
  return (a->order > b->order) - (a->order < b->order);
}

static bool push_row(psp_change *c, const psp_change_row *r, psp_error **err) {
  if (c->n == c->cap) {
    size_t nc = c->cap ? 2 * c->cap : 256;
    psp_change_row *nr = realloc(c->rows, nc * sizeof *nr);
    if (!nr) return psp_error_set(err, PSP_ERR_NOMEM, "out of memory comparing levels");
    c->rows = nr;
    c->cap = nc;
  }
  c->rows[c->n++] = *r;
  return true;
}

/* The slices a metric of row r comes from. */
static void metric_slices(const lt_row *r, bool segment, int64_t *first, int64_t *last,
                          double *dist) {
  *first = *last = -1;
  *dist = NAN;
  if (!r) return;
  if (segment) {
    *first = r->seg_first;
    *last = r->seg_last;
  } else {
    *first = *last = r->file_slice;
    *dist = r->dist_mm;
  }
}

static void none_reason(psp_change *c, const psp_levels_table *base, const psp_levels_table *follow,
                        double thr) {
  char *w = c->none_reason;
  size_t n = sizeof c->none_reason;
  bool ab = psp_levels_table_anchored(base), af = psp_levels_table_anchored(follow);
  if (base->n == 0 || follow->n == 0) {
    snprintf(w, n, "no level to compare: the %s levels.csv has no rows (no disc was found)",
             base->n == 0 ? "baseline" : "followup");
    return;
  }
  if (!ab || !af) {
    snprintf(w, n,
             "no level was confidently named in both runs: the %s run is not anchored (relative "
             "level names only, e.g. D1, V1); re-run analyze with --disc overrides (e.g. --disc "
             "L4/L5=SLICE)",
             !ab && !af ? "baseline and the followup"
             : !ab      ? "baseline"
                        : "followup");
    return;
  }
  bool common = false;
  for (size_t i = 0; i < c->nl; i++)
    if (c->levels[i].in_base && c->levels[i].in_follow) common = true;
  if (!common) {
    snprintf(w, n, "no level was named in both runs (the two stacks cover different levels)");
    return;
  }
  snprintf(w, n,
           "no level was confidently named in both runs: every shared level has "
           "level_confidence < %.2f in at least one run; give --disc overrides to analyze or "
           "lower --min-confidence",
           thr);
}

psp_change *psp_change_compute(const psp_levels_table *base, const psp_levels_table *follow,
                               const psp_change_options *opt, psp_error **err) {
  if (!base || !follow) {
    psp_error_set(err, PSP_ERR_USAGE, "change: missing levels table");
    return NULL;
  }
  psp_change_options o;
  psp_change_options_default(&o);
  if (opt) o = *opt;
  if (!(o.min_confidence >= 0 && o.min_confidence <= 1)) {
    psp_error_set(err, PSP_ERR_USAGE, "change: min_confidence %g is not in 0..1", o.min_confidence);
    return NULL;
  }
  const double thr = o.min_confidence;
  psp_change *c = psp_calloc(1, sizeof *c, err);
  level_key *keys = psp_calloc(base->n + follow->n + 1, sizeof *keys, err);
  if (!c || !keys) {
    free(c);
    free(keys);
    return NULL;
  }
  /* the union of levels */
  size_t nk = 0;
  const psp_levels_table *tabs[2] = {base, follow};
  for (int t = 0; t < 2; t++)
    for (size_t i = 0; i < tabs[t]->n; i++) {
      const lt_row *r = &tabs[t]->rows[i];
      bool seen = false;
      for (size_t k = 0; k < nk && !seen; k++)
        seen = keys[k].disc == r->disc && !strcmp(keys[k].name, r->level);
      if (seen) continue;
      snprintf(keys[nk].name, sizeof keys[nk].name, "%s", r->level);
      keys[nk].disc = r->disc;
      keys[nk].rank = relative_name(r->level) ? -1 : level_rank(r->level);
      keys[nk].order = nk;
      nk++;
    }
  qsort(keys, nk, sizeof *keys, cmp_level_key);
  c->levels = psp_calloc(nk + 1, sizeof *c->levels, err);
  if (!c->levels) {
    free(keys);
    psp_change_free(c);
    return NULL;
  }
  bool ok = true;
  for (size_t k = 0; k < nk && ok; k++) {
    const char *name = keys[k].name;
    bool disc = keys[k].disc;
    const lt_row *lb = find_level(base, name, disc), *lf = find_level(follow, name, disc);
    psp_change_level *L = &c->levels[c->nl++];
    snprintf(L->level, sizeof L->level, "%s", name);
    L->disc = disc;
    L->in_base = lb != NULL;
    L->in_follow = lf != NULL;
    L->base_conf = lb ? lb->conf : NAN;
    L->follow_conf = lf ? lf->conf : NAN;
    L->base_file_slice = lb ? lb->file_slice : -1;
    L->follow_file_slice = lf ? lf->file_slice : -1;
    L->base_seg_first = lb ? lb->seg_first : -1;
    L->base_seg_last = lb ? lb->seg_last : -1;
    L->follow_seg_first = lf ? lf->seg_first : -1;
    L->follow_seg_last = lf ? lf->seg_last : -1;
    run_reasons(base, lb, "baseline", name, thr, L->reason, sizeof L->reason);
    run_reasons(follow, lf, "followup", name, thr, L->reason, sizeof L->reason);
    L->comparable = L->reason[0] == '\0';
    if (L->comparable) c->comparable++;
    for (int m = 0; m < 3 && ok; m++)
      for (int s = 0; s < 3 && ok; s++) {
        const lt_row *rb = find_row(base, name, disc, m, s);
        const lt_row *rf = find_row(follow, name, disc, m, s);
        if (!rb && !rf) continue;
        for (int q = 0; q < N_METRICS && ok; q++) {
          if (disc && METRICS[q].segment) continue; /* discs have no segment */
          psp_change_row r;
          memset(&r, 0, sizeof r);
          snprintf(r.level, sizeof r.level, "%s", name);
          r.disc = disc;
          r.muscle = MUSCLES[m];
          r.side = SIDES[s];
          r.metric = METRICS[q].name;
          r.unit = METRICS[q].unit;
          r.baseline = rb ? rb->v[q] : NAN;
          r.followup = rf ? rf->v[q] : NAN;
          r.change_abs = r.change_rel_pct = NAN;
          r.base_conf = rb ? rb->conf : NAN;
          r.follow_conf = rf ? rf->conf : NAN;
          metric_slices(rb, METRICS[q].segment, &r.base_first, &r.base_last, &r.base_dist_mm);
          metric_slices(rf, METRICS[q].segment, &r.follow_first, &r.follow_last, &r.follow_dist_mm);
          if (!L->comparable) {
            snprintf(r.reason, sizeof r.reason, "%s", L->reason);
          } else if (!rb || !rf) {
            append_reason(r.reason, sizeof r.reason, "no %s row for this muscle and side",
                          !rb ? "baseline" : "followup");
          } else {
            if (isnan(r.baseline))
              append_reason(r.reason, sizeof r.reason, "no baseline value (not measurable)");
            if (isnan(r.followup))
              append_reason(r.reason, sizeof r.reason, "no followup value (not measurable)");
            if (METRICS[q].segment && !strcmp(r.metric, "seg_volume_mm3") &&
                (rb->seg_complete != 1 || rf->seg_complete != 1))
              append_reason(r.reason, sizeof r.reason,
                            "segment incomplete in the %s run (cut by the end of the stack, or "
                            "a slice of it flagged or its muscle cut by the field of view): its "
                            "volume depends on what was in view",
                            rb->seg_complete != 1 && rf->seg_complete != 1 ? "baseline and followup"
                            : rb->seg_complete != 1                        ? "baseline"
                                                                           : "followup");
            r.ok = r.reason[0] == '\0';
            if (r.ok) {
              r.change_abs = r.followup - r.baseline;
              if (r.baseline != 0)
                r.change_rel_pct = r.change_abs / fabs(r.baseline) * 100.0;
              else
                append_reason(r.reason, sizeof r.reason,
                              "baseline is 0: relative change undefined");
              if (METRICS[q].segment && (rb->seg_complete != 1 || rf->seg_complete != 1))
                append_reason(r.reason, sizeof r.reason,
                              "caution: segment incomplete in a run (cut by the end of the "
                              "stack, or a slice flagged or its muscle cut by the field of view; "
                              "mean over the slices measured)");
              if (METRICS[q].segment && rb->seg_n != rf->seg_n)
                append_reason(r.reason, sizeof r.reason,
                              "caution: segment has %lld slices in the baseline run, %lld in the "
                              "followup run",
                              (long long)rb->seg_n, (long long)rf->seg_n);
            }
          }
          ok = push_row(c, &r, err);
        }
      }
  }
  free(keys);
  if (!ok) {
    psp_change_free(c);
    return NULL;
  }
  if (c->comparable == 0) none_reason(c, base, follow, thr);
  return c;
}

void psp_change_free(psp_change *c) {
  if (!c) return;
  free(c->rows);
  free(c->levels);
  free(c);
}

size_t psp_change_row_count(const psp_change *c) {
  return c ? c->n : 0;
}
const psp_change_row *psp_change_row_at(const psp_change *c, size_t i) {
  return c && i < c->n ? &c->rows[i] : NULL;
}
size_t psp_change_level_count(const psp_change *c) {
  return c ? c->nl : 0;
}
const psp_change_level *psp_change_level_at(const psp_change *c, size_t i) {
  return c && i < c->nl ? &c->levels[i] : NULL;
}
size_t psp_change_comparable_count(const psp_change *c) {
  return c ? c->comparable : 0;
}
const char *psp_change_none_reason(const psp_change *c) {
  return c ? c->none_reason : "";
}

static void num(psp_strbuf *b, double v, int dec) {
  char t[48];
  psp_fmt_num(t, sizeof t, v, dec);
  psp_strbuf_printf(b, ",%s", t);
}

static void idx(psp_strbuf *b, int64_t v) {
  if (v >= 0)
    psp_strbuf_printf(b, ",%lld", (long long)v);
  else
    psp_strbuf_append(b, ",");
}

/* A CSV cell (after a comma unless first), quoted when needed. */
static void text_cell(psp_strbuf *b, const char *s, bool first) {
  if (!first) psp_strbuf_append(b, ",");
  if (!strpbrk(s, ",\"\n\r")) {
    psp_strbuf_append(b, s);
    return;
  }
  psp_strbuf_append(b, "\"");
  for (const char *p = s; *p; p++)
    psp_strbuf_printf(b, "%s", *p == '"' ? "\"\"" : (char[2]){*p, 0});
  psp_strbuf_append(b, "\"");
}

char *psp_change_csv(const psp_change *c, psp_error **err) {
  if (!c) {
    psp_error_set(err, PSP_ERR_USAGE, "change.csv: no comparison");
    return NULL;
  }
  psp_strbuf b;
  psp_strbuf_init(&b);
  psp_strbuf_append(&b, "level,kind,muscle,side,metric,unit,baseline,followup,change_abs,"
                        "change_rel_pct,status,reason,baseline_file_slice_first,"
                        "baseline_file_slice_last,followup_file_slice_first,"
                        "followup_file_slice_last,baseline_slice_distance_mm,"
                        "followup_slice_distance_mm,baseline_level_confidence,"
                        "followup_level_confidence\n");
  for (size_t i = 0; i < c->n; i++) {
    const psp_change_row *r = &c->rows[i];
    int dec = !strcmp(r->unit, "pct") ? 4 : !strcmp(r->unit, "mm3") ? 1 : 3;
    text_cell(&b, r->level, true);
    psp_strbuf_printf(&b, ",%s,%s,%s,%s,%s", r->disc ? "disc" : "vertebra", r->muscle, r->side,
                      r->metric, r->unit);
    num(&b, r->baseline, dec);
    num(&b, r->followup, dec);
    num(&b, r->change_abs, dec);
    num(&b, r->change_rel_pct, 2);
    psp_strbuf_printf(&b, ",%s", r->ok ? "ok" : "skipped");
    text_cell(&b, r->reason, false);
    idx(&b, r->base_first);
    idx(&b, r->base_last);
    idx(&b, r->follow_first);
    idx(&b, r->follow_last);
    num(&b, r->base_dist_mm, 2);
    num(&b, r->follow_dist_mm, 2);
    num(&b, r->base_conf, 3);
    num(&b, r->follow_conf, 3);
    psp_strbuf_append(&b, "\n");
  }
  return psp_strbuf_take(&b, err);
}
