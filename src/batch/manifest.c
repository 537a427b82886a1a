/*
 * DESIGN: the cohort manifest. A strict RFC-4180 CSV reader (quoted fields,
 * "" escapes, LF/CRLF, optional BOM) that reports every problem as
 * name:line:column, then a validation pass: known columns only, exactly one
 * input kind per row, subject/session ids restricted to a safe charset
 * because they become folder names under OUT (nothing may be written outside
 * it), no repeated subject/session (case-insensitively, for case-insensitive
 * file systems), and no subject with rows both with and without a session
 * (its folders would overlap). Relative paths are resolved against the
 * manifest's folder. The parser is pure (no file system access) so that a
 * fuzz target can call it. Also: discovery of a BIDS-like folder tree into
 * the same rows, and the rows written back as manifest CSV.
 */
#define _XOPEN_SOURCE 700 /* realpath */
#include "core/internal.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define ID_MAX 64 /* subject+session+pid stay well under NAME_MAX in temp names */

struct psp_manifest {
  char *name;
  psp_manifest_row *rows;
  size_t n, cap;
};

/* ---- ids ---------------------------------------------------------------- */

bool psp_batch_id_valid(const char *id) {
  if (!id || !id[0] || id[0] == '.') return false;
  size_t n = 0;
  for (const char *p = id; *p; p++, n++) {
    char c = *p;
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok || n >= ID_MAX) return false;
  }
  return true;
}

/* ---- manifest object ---------------------------------------------------- */

static void row_free(psp_manifest_row *r) {
  free((char *)r->subject);
  free((char *)r->session);
  free((char *)r->water);
  free((char *)r->fat);
  free((char *)r->inphase);
  free((char *)r->outphase);
  free((char *)r->ff);
  free((char *)r->dicom);
  free((char *)r->labels);
  free((char *)r->label_scheme);
  free((char *)r->landmarks);
  free((char *)r->series);
  free((char *)r->problem);
}

void psp_manifest_free(psp_manifest *m) {
  if (!m) return;
  for (size_t i = 0; i < m->n; i++)
    row_free(&m->rows[i]);
  free(m->rows);
  free(m->name);
  free(m);
}

size_t psp_manifest_row_count(const psp_manifest *m) {
  return m ? m->n : 0;
}

const psp_manifest_row *psp_manifest_row_at(const psp_manifest *m, size_t i) {
  return (m && i < m->n) ? &m->rows[i] : NULL;
}

const char *psp_manifest_name(const psp_manifest *m) {
  return m ? m->name : NULL;
}

static psp_manifest *manifest_new(const char *name, psp_error **err) {
  psp_manifest *m = psp_calloc(1, sizeof *m, err);
  if (!m) return NULL;
  m->name = strdup(name ? name : "manifest");
  if (!m->name) {
    free(m);
    psp_error_set(err, PSP_ERR_NOMEM, "out of memory");
    return NULL;
  }
  return m;
}

static psp_manifest_row *manifest_add(psp_manifest *m, psp_error **err) {
  if (m->n == m->cap) {
    size_t cap = m->cap ? m->cap * 2 : 16;
    psp_manifest_row *r = realloc(m->rows, cap * sizeof *r);
    if (!r) {
      psp_error_set(err, PSP_ERR_NOMEM, "out of memory reading %s", m->name);
      return NULL;
    }
    m->rows = r;
    m->cap = cap;
  }
  psp_manifest_row *r = &m->rows[m->n++];
  memset(r, 0, sizeof *r);
  return r;
}

/* ---- CSV reader ---------------------------------------------------------- */

typedef struct field {
  char *text;
  size_t len;
  size_t line, col;
} field;

typedef struct record {
  field *f;
  size_t n, cap;
  size_t line;    /* line where the record starts */
  size_t end_col; /* column just after the last field */
} record;

typedef struct csv_reader {
  const char *s;
  size_t len, pos;
  size_t line, line_start;
  const char *name;
} csv_reader;

static void record_clear(record *r) {
  for (size_t i = 0; i < r->n; i++)
    free(r->f[i].text);
  r->n = 0;
}

static void record_free(record *r) {
  record_clear(r);
  free(r->f);
  memset(r, 0, sizeof *r);
}

static size_t cur_col(const csv_reader *p) {
  return p->pos - p->line_start + 1;
}

static bool fail_at(psp_error **err, const csv_reader *p, size_t line, size_t col,
                    const char *what) {
  return psp_error_set(err, PSP_ERR_FORMAT, "%s:%zu:%zu: %s", p->name, line, col, what);
}

typedef struct growbuf {
  char *d;
  size_t n, cap;
} growbuf;

static bool gb_put(growbuf *b, char c) {
  if (b->n + 2 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 64;
    char *d = realloc(b->d, cap);
    if (!d) return false;
    b->d = d;
    b->cap = cap;
  }
  b->d[b->n++] = c;
  b->d[b->n] = '\0';
  return true;
}

static bool record_push(record *r, growbuf *b, size_t line, size_t col, psp_error **err) {
  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 16;
    field *f = realloc(r->f, cap * sizeof *f);
    if (!f) {
      free(b->d);
      memset(b, 0, sizeof *b);
      return psp_error_set(err, PSP_ERR_NOMEM, "out of memory reading the manifest");
    }
    r->f = f;
    r->cap = cap;
  }
  if (!b->d && !(b->d = strdup("")))
    return psp_error_set(err, PSP_ERR_NOMEM, "out of memory reading the manifest");
  field *f = &r->f[r->n++];
  f->text = b->d;
  f->len = b->n;
  f->line = line;
  f->col = col;
  memset(b, 0, sizeof *b);
  return true;
}

/* Reads one record. Returns 1 (a record), 0 (end of text) or -1 (error).
 * A completely empty line is skipped. */
static int csv_next(csv_reader *p, record *r, psp_error **err) {
  record_clear(r);
  for (;;) {
    if (p->pos >= p->len) return 0;
    /* skip empty lines */
    if (p->s[p->pos] == '\n') {
      p->pos++;
      p->line++;
      p->line_start = p->pos;
      continue;
    }
    if (p->s[p->pos] == '\r' && p->pos + 1 < p->len && p->s[p->pos + 1] == '\n') {
      p->pos += 2;
      p->line++;
      p->line_start = p->pos;
      continue;
    }
    break;
  }
  r->line = p->line;
  for (;;) {
    size_t fline = p->line, fcol = cur_col(p);
    growbuf b = {0};
    bool ok = true;
    if (p->pos < p->len && p->s[p->pos] == '"') {
      p->pos++;
      for (;;) {
        if (p->pos >= p->len) {
          free(b.d);
          fail_at(err, p, fline, fcol, "quoted field is not closed before the end of the file");
          return -1;
        }
        char c = p->s[p->pos];
        if (c == '\0') {
          free(b.d);
          fail_at(err, p, p->line, cur_col(p), "NUL byte (not a text file?)");
          return -1;
        }
        if (c == '"') {
          if (p->pos + 1 < p->len && p->s[p->pos + 1] == '"') {
            ok = ok && gb_put(&b, '"');
            p->pos += 2;
            continue;
          }
          p->pos++;
          break;
        }
        ok = ok && gb_put(&b, c);
        p->pos++;
        if (c == '\n') {
          p->line++;
          p->line_start = p->pos;
        }
      }
      if (p->pos < p->len) {
        char c = p->s[p->pos];
        bool end_ok =
            c == ',' || c == '\n' || (c == '\r' && p->pos + 1 < p->len && p->s[p->pos + 1] == '\n');
        if (!end_ok) {
          free(b.d);
          fail_at(err, p, p->line, cur_col(p),
                  "unexpected character after a closing quote (expected ',' or the end of the "
                  "line)");
          return -1;
        }
      }
    } else {
      while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c == ',' || c == '\n' || c == '\r') break;
        if (c == '"') {
          free(b.d);
          fail_at(err, p, p->line, cur_col(p),
                  "quote inside an unquoted field (quote the whole field and double the quote)");
          return -1;
        }
        if (c == '\0') {
          free(b.d);
          fail_at(err, p, p->line, cur_col(p), "NUL byte (not a text file?)");
          return -1;
        }
        ok = ok && gb_put(&b, c);
        p->pos++;
      }
    }
    if (!ok) {
      free(b.d);
      psp_error_set(err, PSP_ERR_NOMEM, "out of memory reading %s", p->name);
      return -1;
    }
    if (!record_push(r, &b, fline, fcol, err)) return -1;
    if (p->pos >= p->len) {
      r->end_col = cur_col(p);
      return 1;
    }
    char c = p->s[p->pos];
    if (c == ',') {
      p->pos++;
      continue;
    }
    r->end_col = cur_col(p);
    if (c == '\r') {
      if (p->pos + 1 >= p->len || p->s[p->pos + 1] != '\n') {
        fail_at(err, p, p->line, cur_col(p), "carriage return without a line feed");
        return -1;
      }
      p->pos++;
    }
    p->pos++; /* '\n' */
    p->line++;
    p->line_start = p->pos;
    return 1;
  }
}

/* ---- columns --------------------------------------------------------------- */

enum {
  COL_SUBJECT,
  COL_SESSION,
  COL_WATER,
  COL_FAT,
  COL_INPHASE,
  COL_OUTPHASE,
  COL_FF,
  COL_FF_UNIT,
  COL_DICOM,
  COL_LABELS,
  COL_LABEL_SCHEME,
  COL_LANDMARKS,
  COL_SERIES,
  N_COLS
};

static const char *const COL_NAMES[N_COLS] = {
    "subject", "session", "water",  "fat",          "inphase",   "outphase", "ff",
    "ff_unit", "dicom",   "labels", "label_scheme", "landmarks", "series",
};

static const char *const BUILTIN_SCHEMES[] = {"paraspinal", "musclemap", "lpm"};

static bool is_builtin_scheme(const char *s) {
  for (size_t i = 0; i < sizeof BUILTIN_SCHEMES / sizeof BUILTIN_SCHEMES[0]; i++)
    if (!strcmp(s, BUILTIN_SCHEMES[i])) return true;
  return false;
}

/* base + rel when rel is relative and base is set; a copy otherwise. */
static char *resolve_path(const char *base, size_t base_len, const char *rel) {
  if (rel[0] == '/' || base_len == 0) return strdup(rel);
  size_t n = base_len + strlen(rel) + 1;
  char *s = malloc(n);
  if (!s) return NULL;
  memcpy(s, base, base_len);
  strcpy(s + base_len, rel);
  return s;
}

typedef struct parse_state {
  csv_reader rd;
  int col_of[N_COLS]; /* field index of each known column, -1 if absent */
  size_t n_cols;
  size_t base_len; /* name[0..base_len) is the folder prefix incl. '/' */
} parse_state;

static bool header(parse_state *st, const record *h, psp_error **err) {
  for (int c = 0; c < N_COLS; c++)
    st->col_of[c] = -1;
  st->n_cols = h->n;
  for (size_t i = 0; i < h->n; i++) {
    const field *f = &h->f[i];
    int found = -1;
    for (int c = 0; c < N_COLS; c++)
      if (!strcmp(f->text, COL_NAMES[c])) found = c;
    if (found < 0) {
      char msg[512];
      snprintf(msg, sizeof msg,
               "unknown column '%.100s' in the header (known: subject, session, water, fat, "
               "inphase, outphase, ff, ff_unit, dicom, series, labels, label_scheme, "
               "landmarks)",
               f->text);
      return fail_at(err, &st->rd, f->line, f->col, msg);
    }
    if (st->col_of[found] >= 0) {
      char msg[256];
      snprintf(msg, sizeof msg, "column '%s' appears twice in the header", COL_NAMES[found]);
      return fail_at(err, &st->rd, f->line, f->col, msg);
    }
    st->col_of[found] = (int)i;
  }
  size_t hl = h->line;
  if (st->col_of[COL_SUBJECT] < 0)
    return fail_at(err, &st->rd, hl, 1, "the header has no 'subject' column");
  if ((st->col_of[COL_WATER] < 0) != (st->col_of[COL_FAT] < 0))
    return fail_at(err, &st->rd, hl, 1, "the header needs both 'water' and 'fat' columns, or none");
  if ((st->col_of[COL_INPHASE] < 0) != (st->col_of[COL_OUTPHASE] < 0))
    return fail_at(err, &st->rd, hl, 1,
                   "the header needs both 'inphase' and 'outphase' columns, or none");
  if (st->col_of[COL_WATER] < 0 && st->col_of[COL_INPHASE] < 0 && st->col_of[COL_FF] < 0 &&
      st->col_of[COL_DICOM] < 0)
    return fail_at(err, &st->rd, hl, 1,
                   "the header names no input columns (water,fat or inphase,outphase or ff or "
                   "dicom)");
  if (st->col_of[COL_FF_UNIT] >= 0 && st->col_of[COL_FF] < 0)
    return fail_at(err, &st->rd, hl, 1, "column 'ff_unit' needs an 'ff' column");
  if (st->col_of[COL_LABEL_SCHEME] >= 0 && st->col_of[COL_LABELS] < 0)
    return fail_at(err, &st->rd, hl, 1, "column 'label_scheme' needs a 'labels' column");
  if (st->col_of[COL_SERIES] >= 0 && st->col_of[COL_DICOM] < 0)
    return fail_at(err, &st->rd, hl, 1, "column 'series' needs a 'dicom' column");
  return true;
}

static const field *col(const parse_state *st, const record *r, int c) {
  return st->col_of[c] >= 0 ? &r->f[st->col_of[c]] : NULL;
}

static bool filled(const field *f) {
  return f && f->len > 0;
}

static bool set_path(const parse_state *st, const field *f, const char **dst, psp_error **err) {
  if (!filled(f)) return true;
  char *p = resolve_path(st->rd.name, st->base_len, f->text);
  if (!p) return psp_error_set(err, PSP_ERR_NOMEM, "out of memory");
  *dst = p;
  return true;
}

static bool check_id(const parse_state *st, const field *f, const char *what, psp_error **err) {
  if (psp_batch_id_valid(f->text)) return true;
  char msg[512];
  snprintf(msg, sizeof msg,
           "%s '%.150s' is not a safe folder name: use 1-%d letters, digits, '.', '_' or '-', "
           "not starting with '.' (no '/', no '..')",
           what, f->text, ID_MAX);
  return fail_at(err, &st->rd, f->line, f->col, msg);
}

static bool row_from_record(const parse_state *st, const record *r, psp_manifest_row *row,
                            psp_error **err) {
  if (r->n != st->n_cols) {
    char msg[128];
    snprintf(msg, sizeof msg, "%zu fields, but the header has %zu", r->n, st->n_cols);
    size_t c = r->n > st->n_cols ? r->f[st->n_cols].col : r->end_col;
    size_t l = r->n > st->n_cols ? r->f[st->n_cols].line : r->f[r->n - 1].line;
    return fail_at(err, &st->rd, l, c, msg);
  }
  row->line = r->line;
  const field *subj = col(st, r, COL_SUBJECT);
  if (!filled(subj)) return fail_at(err, &st->rd, subj->line, subj->col, "empty subject");
  if (!check_id(st, subj, "subject", err)) return false;
  const field *ses = col(st, r, COL_SESSION);
  if (filled(ses) && !check_id(st, ses, "session", err)) return false;
  row->subject = strdup(subj->text);
  row->session = strdup(filled(ses) ? ses->text : "");
  if (!row->subject || !row->session) return psp_error_set(err, PSP_ERR_NOMEM, "out of memory");

  const field *w = col(st, r, COL_WATER), *f = col(st, r, COL_FAT);
  const field *ip = col(st, r, COL_INPHASE), *op = col(st, r, COL_OUTPHASE);
  const field *ff = col(st, r, COL_FF), *dc = col(st, r, COL_DICOM);
  /* an FF map may come with its water image (no fat) */
  const bool ff_water = filled(ff) && filled(w) && !filled(f);
  if (filled(w) != filled(f) && !ff_water) {
    const field *g = filled(w) ? w : f;
    return fail_at(err, &st->rd, g->line, g->col,
                   filled(w) ? "water given without fat" : "fat given without water");
  }
  if (filled(ip) != filled(op)) {
    const field *g = filled(ip) ? ip : op;
    return fail_at(err, &st->rd, g->line, g->col,
                   filled(ip) ? "inphase given without outphase"
                              : "outphase given without inphase");
  }
  int kinds = (filled(w) && !ff_water) + filled(ip) + filled(ff) + filled(dc);
  if (kinds == 0)
    return fail_at(err, &st->rd, subj->line, subj->col,
                   "no input: fill water+fat, inphase+outphase, ff or dicom");
  if (kinds > 1)
    return fail_at(err, &st->rd, subj->line, subj->col,
                   "more than one input kind: fill exactly one of water+fat, inphase+outphase, ff "
                   "or dicom");
  row->kind = filled(w) && !ff_water ? PSP_INPUT_WATER_FAT
              : filled(ip)           ? PSP_INPUT_IPOP
              : filled(ff)           ? PSP_INPUT_FF
                                     : PSP_INPUT_DICOM;
  if (!set_path(st, w, &row->water, err) || !set_path(st, f, &row->fat, err) ||
      !set_path(st, ip, &row->inphase, err) || !set_path(st, op, &row->outphase, err) ||
      !set_path(st, ff, &row->ff, err) || !set_path(st, dc, &row->dicom, err))
    return false;
  const field *unit = col(st, r, COL_FF_UNIT);
  row->ff_unit = PSP_FF_FRACTION;
  if (filled(unit)) {
    if (!filled(ff))
      return fail_at(err, &st->rd, unit->line, unit->col, "ff_unit given for a row without ff");
    if (!strcmp(unit->text, "percent"))
      row->ff_unit = PSP_FF_PERCENT;
    else if (strcmp(unit->text, "fraction") != 0)
      return fail_at(err, &st->rd, unit->line, unit->col,
                     "ff_unit must be 'fraction' or 'percent'");
  }
  const field *lab = col(st, r, COL_LABELS), *sch = col(st, r, COL_LABEL_SCHEME);
  if (!set_path(st, lab, &row->labels, err)) return false;
  if (filled(sch)) {
    if (!filled(lab))
      return fail_at(err, &st->rd, sch->line, sch->col, "label_scheme given without labels");
    if (is_builtin_scheme(sch->text)) {
      row->label_scheme = strdup(sch->text);
      if (!row->label_scheme) return psp_error_set(err, PSP_ERR_NOMEM, "out of memory");
    } else if (!set_path(st, sch, &row->label_scheme, err)) {
      return false;
    }
  }
  const field *sr = col(st, r, COL_SERIES);
  if (filled(sr)) {
    if (!filled(dc))
      return fail_at(err, &st->rd, sr->line, sr->col, "series given for a row without dicom");
    row->series = strdup(sr->text);
    if (!row->series) return psp_error_set(err, PSP_ERR_NOMEM, "out of memory");
  }
  return set_path(st, col(st, r, COL_LANDMARKS), &row->landmarks, err);
}

/* ---- uniqueness ------------------------------------------------------------- */

static int cmp_rows_ci(const void *a, const void *b) {
  const psp_manifest_row *x = *(const psp_manifest_row *const *)a;
  const psp_manifest_row *y = *(const psp_manifest_row *const *)b;
  int c = strcasecmp(x->subject, y->subject);
  if (c) return c;
  c = strcasecmp(x->session, y->session);
  if (c) return c;
  return (x->line > y->line) - (x->line < y->line);
}

static bool check_unique(const psp_manifest *m, psp_error **err) {
  if (m->n < 2) return true;
  const psp_manifest_row **v = psp_calloc(m->n, sizeof *v, err);
  if (!v) return false;
  for (size_t i = 0; i < m->n; i++)
    v[i] = &m->rows[i];
  qsort(v, m->n, sizeof *v, cmp_rows_ci);
  bool ok = true;
  /* the first error in manifest order is reported */
  size_t bad_line = 0;
  char msg[512] = "";
  for (size_t i = 1; i < m->n; i++) {
    const psp_manifest_row *a = v[i - 1], *b = v[i];
    if (strcasecmp(a->subject, b->subject) != 0) continue;
    const psp_manifest_row *later = b; /* sorted by line within equal keys */
    char here[512];
    if (!strcasecmp(a->session, b->session)) {
      bool exact = !strcmp(a->subject, b->subject) && !strcmp(a->session, b->session);
      snprintf(here, sizeof here, "subject %s%s%s %s line %zu%s", b->subject,
               b->session[0] ? " session " : "", b->session,
               exact ? "repeats" : "differs only in letter case from", a->line,
               exact ? "" : " (folder names would collide on case-insensitive file systems)");
    } else if (!a->session[0] || !b->session[0]) {
      later = a->line > b->line ? a : b;
      const psp_manifest_row *first = later == a ? b : a;
      snprintf(here, sizeof here,
               "subject %s has rows with and without a session (lines %zu and %zu): its output "
               "folders would overlap; give every row of the subject a session",
               later->subject, first->line, later->line);
    } else {
      continue;
    }
    if (ok || later->line < bad_line) {
      bad_line = later->line;
      snprintf(msg, sizeof msg, "%s", here);
    }
    ok = false;
  }
  free(v);
  if (!ok) psp_error_set(err, PSP_ERR_FORMAT, "%s:%zu:1: %s", m->name, bad_line, msg);
  return ok;
}

/* ---- parse ------------------------------------------------------------------ */

psp_manifest *psp_manifest_parse(const char *text, size_t len, const char *name, psp_error **err) {
  if (!name) name = "manifest";
  psp_manifest *m = manifest_new(name, err);
  if (!m) return NULL;
  parse_state st;
  memset(&st, 0, sizeof st);
  st.rd.s = text ? text : "";
  st.rd.len = text ? len : 0;
  st.rd.line = 1;
  st.rd.name = m->name;
  const char *slash = strrchr(m->name, '/');
  st.base_len = slash ? (size_t)(slash - m->name) + 1 : 0;
  if (st.rd.len >= 3 && !memcmp(st.rd.s, "\xEF\xBB\xBF", 3)) {
    st.rd.pos = 3;
    st.rd.line_start = 3;
  }
  record r = {0};
  int got = csv_next(&st.rd, &r, err);
  if (got == 0) psp_error_set(err, PSP_ERR_FORMAT, "%s: empty manifest (no header row)", m->name);
  bool ok = got == 1 && header(&st, &r, err);
  size_t rows = 0;
  while (ok) {
    got = csv_next(&st.rd, &r, err);
    if (got <= 0) {
      ok = got == 0;
      break;
    }
    /* a row of empty fields only (",,," as spreadsheets end a sheet) is no subject */
    bool blank = true;
    for (size_t i = 0; i < r.n && blank; i++)
      blank = r.f[i].len == 0;
    if (blank) continue;
    psp_manifest_row *row = manifest_add(m, err);
    ok = row && row_from_record(&st, &r, row, err);
    rows++;
  }
  record_free(&r);
  if (ok && rows == 0)
    ok = psp_error_set(err, PSP_ERR_FORMAT, "%s: no rows after the header", m->name);
  if (ok) ok = check_unique(m, err);
  if (!ok) {
    psp_manifest_free(m);
    return NULL;
  }
  return m;
}

psp_manifest *psp_manifest_load(const char *path, psp_error **err) {
  size_t len = 0;
  char *text = psp_read_file(path, &len, (int64_t)1 << 30, err);
  if (!text) return NULL;
  /* resolve the manifest's folder to an absolute path so that rows are */
  char *abs_name = NULL;
  const char *slash = strrchr(path, '/');
  char dir[PATH_MAX];
  char *dirpart = slash ? strndup(path, (size_t)(slash - path) + (slash == path)) : strdup(".");
  if (dirpart && realpath(dirpart, dir)) {
    const char *base = slash ? slash + 1 : path;
    size_t n = strlen(dir) + strlen(base) + 2;
    abs_name = malloc(n);
    if (abs_name) snprintf(abs_name, n, "%s%s%s", dir, strcmp(dir, "/") ? "/" : "", base);
  }
  free(dirpart);
  psp_manifest *m = psp_manifest_parse(text, len, abs_name ? abs_name : path, err);
  free(abs_name);
  free(text);
  return m;
}

/* ---- CSV output ------------------------------------------------------------- */

static void csv_field(psp_strbuf *b, const char *s) {
  if (!s) s = "";
  if (!strpbrk(s, ",\"\r\n")) {
    psp_strbuf_append(b, s);
    return;
  }
  psp_strbuf_append(b, "\"");
  for (const char *p = s; *p; p++) {
    if (*p == '"')
      psp_strbuf_append(b, "\"\"");
    else
      psp_strbuf_printf(b, "%c", *p);
  }
  psp_strbuf_append(b, "\"");
}

char *psp_manifest_csv(const psp_manifest *m, const size_t *rows, size_t n_rows, psp_error **err) {
  psp_strbuf b;
  psp_strbuf_init(&b);
  psp_strbuf_append(&b, "subject,session,water,fat,inphase,outphase,ff,ff_unit,dicom,labels,"
                        "label_scheme,landmarks,series\n");
  size_t n = rows ? n_rows : m->n;
  for (size_t k = 0; k < n; k++) {
    size_t i = rows ? rows[k] : k;
    if (i >= m->n) continue;
    const psp_manifest_row *r = &m->rows[i];
    if (r->kind == PSP_INPUT_NONE) continue;
    const char *v[N_COLS] = {
        r->subject,
        r->session,
        r->water,
        r->fat,
        r->inphase,
        r->outphase,
        r->ff,
        r->kind == PSP_INPUT_FF ? (r->ff_unit == PSP_FF_PERCENT ? "percent" : "fraction") : "",
        r->dicom,
        r->labels,
        r->label_scheme,
        r->landmarks,
        r->series};
    for (int c = 0; c < N_COLS; c++) {
      if (c) psp_strbuf_append(&b, ",");
      csv_field(&b, v[c]);
    }
    psp_strbuf_append(&b, "\n");
  }
  return psp_strbuf_take(&b, err);
}

/* ---- discovery ---------------------------------------------------------------- */

typedef struct name_list {
  char **v;
  size_t n, cap;
} name_list;

static void names_free(name_list *l) {
  for (size_t i = 0; i < l->n; i++)
    free(l->v[i]);
  free(l->v);
  memset(l, 0, sizeof *l);
}

static bool names_add(name_list *l, const char *s) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 16;
    char **v = realloc(l->v, cap * sizeof *v);
    if (!v) return false;
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n] = strdup(s);
  if (!l->v[l->n]) return false;
  l->n++;
  return true;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Sorted names in dir starting with prefix; want_dir selects folders (true)
 * or regular files (false). */
static bool list_dir(const char *dir, const char *prefix, bool want_dir, name_list *out,
                     psp_error **err) {
  DIR *d = opendir(dir);
  if (!d) return psp_error_set(err, PSP_ERR_IO, "%s: cannot list: %s", dir, strerror(errno));
  struct dirent *e;
  bool ok = true;
  while (ok && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    if (strncmp(e->d_name, prefix, strlen(prefix)) != 0) continue;
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path) continue;
    struct stat st;
    if (stat(path, &st) != 0) continue;
    if (want_dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) continue;
    ok = names_add(out, e->d_name);
  }
  closedir(d);
  if (!ok) return psp_error_set(err, PSP_ERR_NOMEM, "out of memory listing %s", dir);
  if (out->n > 1) qsort(out->v, out->n, sizeof *out->v, cmp_str);
  return true;
}

enum { SUF_WATER, SUF_FAT, SUF_INPHASE, SUF_OUTPHASE, SUF_FF, N_SUF };
static const char *const SUFFIX[N_SUF] = {"_water", "_fat", "_inphase", "_outphase", "_ff"};

/* Index of the suffix a NIfTI file name ends with, or -1. */
static int nifti_suffix(const char *name) {
  size_t n = strlen(name);
  size_t stem;
  if (n > 7 && !strcmp(name + n - 7, ".nii.gz"))
    stem = n - 7;
  else if (n > 4 && !strcmp(name + n - 4, ".nii"))
    stem = n - 4;
  else
    return -1;
  for (int s = 0; s < N_SUF; s++) {
    size_t k = strlen(SUFFIX[s]);
    if (stem > k && !strncmp(name + stem - k, SUFFIX[s], k)) return s;
  }
  return -1;
}

static char *join2(const char *a, const char *b) {
  size_t n = strlen(a) + strlen(b) + 2;
  char *s = malloc(n);
  if (s) snprintf(s, n, "%s/%s", a, b);
  return s;
}

/* Fills row from folder `dir` (sub-X or sub-X/ses-Y). */
static bool discover_folder(const char *dir, const char *rel, psp_manifest_row *row,
                            psp_error **err) {
  char *anat = join2(dir, "anat"), *dicom = join2(dir, "dicom");
  char problem[1024] = "";
  bool ok = anat && dicom;
  if (!ok) psp_error_set(err, PSP_ERR_NOMEM, "out of memory");
  bool has_anat = ok && is_dir(anat), has_dicom = ok && is_dir(dicom);
  name_list files = {0};
  name_list by[N_SUF];
  memset(by, 0, sizeof by);
  if (ok && has_anat) ok = list_dir(anat, "", false, &files, err);
  for (size_t i = 0; ok && i < files.n; i++) {
    int s = nifti_suffix(files.v[i]);
    if (s >= 0) ok = names_add(&by[s], files.v[i]);
  }
  if (!ok && !(err && *err)) psp_error_set(err, PSP_ERR_NOMEM, "out of memory");
  /* kinds in priority order: water+fat, inphase+outphase, ff */
  static const int KIND_SUF[3][2] = {
      {SUF_WATER, SUF_FAT}, {SUF_INPHASE, SUF_OUTPHASE}, {SUF_FF, -1}};
  static const psp_input_kind KIND[3] = {PSP_INPUT_WATER_FAT, PSP_INPUT_IPOP, PSP_INPUT_FF};
  int chosen = -1;
  for (int k = 0; ok && k < 3 && chosen < 0 && !problem[0]; k++) {
    int a = KIND_SUF[k][0], b = KIND_SUF[k][1];
    size_t na = by[a].n, nb = b >= 0 ? by[b].n : 1;
    if (na > 1 || (b >= 0 && nb > 1)) {
      int s = na > 1 ? a : b;
      snprintf(problem, sizeof problem,
               "%s/anat: %zu files end in %s.nii[.gz] (%s, %s%s): write a manifest to choose one",
               rel, by[s].n, SUFFIX[s], by[s].v[0], by[s].v[1], by[s].n > 2 ? ", ..." : "");
    } else if (na == 1 && nb == 1) {
      chosen = k;
    }
  }
  if (ok && !problem[0]) {
    if (chosen >= 0 && has_dicom) {
      snprintf(problem, sizeof problem,
               "%s: both anat/ NIfTI files and a dicom/ folder: write a manifest to choose", rel);
    } else if (chosen >= 0) {
      row->kind = KIND[chosen];
      const char **dst[3][2] = {
          {&row->water, &row->fat}, {&row->inphase, &row->outphase}, {&row->ff, NULL}};
      for (int j = 0; j < 2 && ok; j++) {
        int s = KIND_SUF[chosen][j];
        if (s < 0) continue;
        char *p = join2(anat, by[s].v[0]);
        if (!p) ok = psp_error_set(err, PSP_ERR_NOMEM, "out of memory");
        *dst[chosen][j] = p;
      }
      /* an FF map with its water image (no fat): as analyze --ff MAP --water WATER */
      if (ok && KIND[chosen] == PSP_INPUT_FF && by[SUF_WATER].n == 1) {
        char *p = join2(anat, by[SUF_WATER].v[0]);
        if (!p) ok = psp_error_set(err, PSP_ERR_NOMEM, "out of memory");
        row->water = p;
      }
    } else if (has_dicom) {
      row->kind = PSP_INPUT_DICOM;
      row->dicom = strdup(dicom);
      if (!row->dicom) ok = psp_error_set(err, PSP_ERR_NOMEM, "out of memory");
    } else if (has_anat) {
      snprintf(problem, sizeof problem,
               "%s/anat: no complete input (needs *_water + *_fat, *_inphase + *_outphase or *_ff "
               ".nii[.gz])",
               rel);
    } else {
      snprintf(problem, sizeof problem, "%s: no anat/ or dicom/ folder", rel);
    }
  }
  if (ok && problem[0]) {
    row->kind = PSP_INPUT_NONE;
    row->problem = strdup(problem);
    if (!row->problem) ok = psp_error_set(err, PSP_ERR_NOMEM, "out of memory");
  }
  for (int s = 0; s < N_SUF; s++)
    names_free(&by[s]);
  names_free(&files);
  free(anat);
  free(dicom);
  return ok;
}

static bool discover_add(psp_manifest *m, const char *dir, const char *subject, const char *session,
                         psp_error **err) {
  psp_manifest_row *row = manifest_add(m, err);
  if (!row) return false;
  row->subject = strdup(subject);
  row->session = strdup(session);
  if (!row->subject || !row->session) return psp_error_set(err, PSP_ERR_NOMEM, "out of memory");
  char rel[512];
  snprintf(rel, sizeof rel, "%s%s%s", subject, session[0] ? "/" : "", session);
  return discover_folder(dir, rel, row, err);
}

psp_manifest *psp_manifest_discover(const char *root, psp_context *ctx, psp_error **err) {
  char abs[PATH_MAX];
  if (!realpath(root, abs)) {
    psp_error_set(err, PSP_ERR_IO, "%s: cannot open: %s", root, strerror(errno));
    return NULL;
  }
  if (!is_dir(abs)) {
    psp_error_set(err, PSP_ERR_IO, "%s: not a folder", root);
    return NULL;
  }
  psp_manifest *m = manifest_new(abs, err);
  if (!m) return NULL;
  name_list subs = {0};
  bool ok = list_dir(abs, "sub-", true, &subs, err);
  for (size_t i = 0; ok && i < subs.n; i++) {
    const char *s = subs.v[i];
    if (!psp_batch_id_valid(s)) {
      psp_warn(ctx, "%s/%s: ignored: not a safe subject id (letters, digits, '.', '_', '-')", abs,
               s);
      continue;
    }
    char *sdir = join2(abs, s);
    if (!sdir) {
      ok = psp_error_set(err, PSP_ERR_NOMEM, "out of memory");
      break;
    }
    name_list ses = {0};
    ok = list_dir(sdir, "ses-", true, &ses, err);
    size_t added = 0;
    for (size_t j = 0; ok && j < ses.n; j++) {
      if (!psp_batch_id_valid(ses.v[j])) {
        psp_warn(ctx, "%s/%s: ignored: not a safe session id", sdir, ses.v[j]);
        continue;
      }
      char *edir = join2(sdir, ses.v[j]);
      ok = edir ? discover_add(m, edir, s, ses.v[j], err)
                : psp_error_set(err, PSP_ERR_NOMEM, "out of memory");
      free(edir);
      added++;
    }
    if (ok && added == 0) {
      ok = discover_add(m, sdir, s, "", err);
    } else if (ok) {
      char *anat = join2(sdir, "anat"), *dcm = join2(sdir, "dicom");
      if (anat && dcm && (is_dir(anat) || is_dir(dcm)))
        psp_warn(ctx, "%s: anat/ or dicom/ beside ses-* folders is ignored (the sessions are used)",
                 sdir);
      free(anat);
      free(dcm);
    }
    names_free(&ses);
    free(sdir);
  }
  names_free(&subs);
  if (ok && m->n == 0)
    ok = psp_error_set(err, PSP_ERR_IO, "%s: no sub-* folders found (see README, \"Batch\")", abs);
  if (ok) ok = check_unique(m, err);
  if (!ok) {
    psp_manifest_free(m);
    return NULL;
  }
  return m;
}
