/*
 * DESIGN: the cohort tables at the top of OUT. cohort_slices.csv,
 * cohort_levels.csv and cohort_volumes.csv are every complete subject's
 * slices.csv / levels.csv / volumes.csv rows prefixed with subject,session, in the order of the
 * entries given (manifest order), so they are byte-identical whatever --jobs and the order in which
 * subjects finished; failures.csv lists the failed (and, after an interruption, the not-run or
 * missing) subjects. The four files are streamed to temporary names and renamed into place only
 * when all four are complete. Also `--aggregate`: the same tables rebuilt from OUT alone
 * (completion records verified), which is how shards and Snakemake jobs are
 * merged.
 */
#include "batch/batch.h"
#include "core/internal.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct table_out {
  FILE *f;
  char tmp[PATH_MAX], path[PATH_MAX];
  char *header; /* the subjects' header line (without the prefix) */
  char header_from[PATH_MAX];
} table_out;

static bool table_open(table_out *t, const char *out_dir, const char *name, psp_error **err) {
  memset(t, 0, sizeof *t);
  if (!psp_path_join(t->path, sizeof t->path, out_dir, name, err)) return false;
  int w = snprintf(t->tmp, sizeof t->tmp, "%s/.%s.%ld.tmp", out_dir, name, (long)getpid());
  if (w < 0 || (size_t)w >= sizeof t->tmp)
    return psp_error_set(err, PSP_ERR_IO, "%s: path too long", out_dir);
  t->f = fopen(t->tmp, "wb");
  if (!t->f)
    return psp_error_set(err, PSP_ERR_IO, "%s: cannot create: %s", t->path, strerror(errno));
  return true;
}

static void table_abort(table_out *t) {
  if (t->f) fclose(t->f);
  t->f = NULL;
  if (t->tmp[0]) unlink(t->tmp);
  free(t->header);
  t->header = NULL;
}

static bool table_finish(table_out *t, psp_error **err) {
  bool ok = fflush(t->f) == 0 && fsync(fileno(t->f)) == 0;
  ok = (fclose(t->f) == 0) && ok;
  t->f = NULL;
  if (!ok) {
    unlink(t->tmp);
    return psp_error_set(err, PSP_ERR_IO, "%s: write failed: %s", t->path, strerror(errno));
  }
  return true;
}

/* Appends the rows of dir/file (header checked against the table's). */
static bool table_add(table_out *t, const char *dir, const char *file, const char *subject,
                      const char *session, psp_error **err) {
  char path[PATH_MAX];
  if (!psp_path_join(path, sizeof path, dir, file, err)) return false;
  size_t len = 0;
  char *text = psp_read_file(path, &len, (int64_t)1 << 30, err);
  if (!text) return false;
  char *nl = memchr(text, '\n', len);
  size_t hlen = nl ? (size_t)(nl - text) : len;
  if (hlen && text[hlen - 1] == '\r') hlen--;
  if (!t->header) {
    t->header = strndup(text, hlen);
    if (!t->header) {
      free(text);
      return psp_error_set(err, PSP_ERR_NOMEM, "out of memory");
    }
    snprintf(t->header_from, sizeof t->header_from, "%s", path);
    fprintf(t->f, "subject,session,%s\n", t->header);
  } else if (strlen(t->header) != hlen || memcmp(t->header, text, hlen) != 0) {
    free(text);
    return psp_error_set(err, PSP_ERR_FORMAT,
                         "%s: its header differs from %s (outputs of different versions?)", path,
                         t->header_from);
  }
  const char *p = nl ? nl + 1 : text + len;
  const char *end = text + len;
  while (p < end) {
    const char *e = memchr(p, '\n', (size_t)(end - p));
    size_t n = e ? (size_t)(e - p) : (size_t)(end - p);
    size_t m = (n && p[n - 1] == '\r') ? n - 1 : n;
    if (m > 0) {
      fprintf(t->f, "%s,%s,", subject, session);
      fwrite(p, 1, m, t->f);
      fputc('\n', t->f);
    }
    p += n + 1;
  }
  free(text);
  if (ferror(t->f)) return psp_error_set(err, PSP_ERR_IO, "%s: write failed", t->path);
  return true;
}

static void csv_quoted(FILE *f, const char *s) {
  if (!s) s = "";
  if (!strpbrk(s, ",\"\r\n")) {
    fputs(s, f);
    return;
  }
  fputc('"', f);
  for (const char *p = s; *p; p++) {
    if (*p == '"') fputc('"', f);
    fputc(*p, f);
  }
  fputc('"', f);
}

#define NSRC (PSP_COHORT_TABLES - 1) /* the subjects' own tables; then failures.csv */

bool psp_cohort_write_tables(const char *out_dir, const char *suffix,
                             const psp_cohort_entry *entries, size_t n,
                             char names[PSP_COHORT_TABLES][64], psp_error **err) {
  static const char *const BASE[PSP_COHORT_TABLES] = {"cohort_slices", "cohort_levels",
                                                      "cohort_volumes", "failures"};
  static const char *const SOURCE[NSRC] = {"slices.csv", "levels.csv", "volumes.csv"};
  for (int i = 0; i < PSP_COHORT_TABLES; i++)
    snprintf(names[i], 64, "%s%s.csv", BASE[i], suffix ? suffix : "");
  table_out t[PSP_COHORT_TABLES];
  memset(t, 0, sizeof t);
  bool ok = true;
  for (int i = 0; ok && i < PSP_COHORT_TABLES; i++)
    ok = table_open(&t[i], out_dir, names[i], err);
  if (ok) fputs("subject,session,stage,exit_code,status,message\n", t[NSRC].f);
  for (size_t k = 0; ok && k < n; k++) {
    const psp_cohort_entry *e = &entries[k];
    if (e->state == PSP_COHORT_COMPLETE) {
      char dir[PATH_MAX];
      ok = psp_batch_subject_dir(dir, sizeof dir, out_dir, e->subject, e->session, err);
      for (int i = 0; ok && i < NSRC; i++)
        ok = table_add(&t[i], dir, SOURCE[i], e->subject, e->session, err);
      continue;
    }
    FILE *f = t[NSRC].f;
    fprintf(f, "%s,%s,", e->subject, e->session);
    if (e->state == PSP_COHORT_FAILED) {
      csv_quoted(f, e->stage);
      fprintf(f, ",%d,%s,", e->status, psp_status_name((psp_status)e->status));
    } else if (e->state == PSP_COHORT_NOT_RUN) {
      fputs("not_run,,interrupted,", f);
    } else {
      fputs("missing,,missing,", f);
    }
    csv_quoted(f, e->message);
    fputc('\n', f);
  }
  for (int i = 0; ok && i < NSRC; i++)
    if (!t[i].header) fputs("subject,session\n", t[i].f);
  for (int i = 0; ok && i < PSP_COHORT_TABLES; i++)
    ok = table_finish(&t[i], err);
  if (ok) {
    for (int i = 0; i < PSP_COHORT_TABLES; i++) {
      if (rename(t[i].tmp, t[i].path) != 0) {
        ok = psp_error_set(err, PSP_ERR_IO, "%s: cannot rename into place: %s", t[i].path,
                           strerror(errno));
        for (int j = i; j < PSP_COHORT_TABLES; j++)
          unlink(t[j].tmp);
        break;
      }
    }
  }
  for (int i = 0; i < PSP_COHORT_TABLES; i++) {
    if (!ok) table_abort(&t[i]);
    free(t[i].header);
    t[i].header = NULL;
  }
  return ok;
}

/* ---- aggregate ----------------------------------------------------------------- */

typedef struct agg_item {
  char *subject, *session;
  psp_cohort_state state;
  char stage[64];
  int status;
  char *message;
} agg_item;

typedef struct agg_list {
  agg_item *v;
  size_t n, cap;
} agg_list;

static void agg_free(agg_list *l) {
  for (size_t i = 0; i < l->n; i++) {
    free(l->v[i].subject);
    free(l->v[i].session);
    free(l->v[i].message);
  }
  free(l->v);
}

static agg_item *agg_add(agg_list *l, const char *subject, const char *session) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    agg_item *v = realloc(l->v, cap * sizeof *v);
    if (!v) return NULL;
    l->v = v;
    l->cap = cap;
  }
  agg_item *it = &l->v[l->n];
  memset(it, 0, sizeof *it);
  it->subject = strdup(subject);
  it->session = strdup(session);
  if (!it->subject || !it->session) {
    free(it->subject);
    free(it->session);
    return NULL;
  }
  l->n++;
  return it;
}

/* Classifies one subject/session from what OUT holds. */
static bool agg_classify(const char *out_dir, agg_item *it, psp_error **err) {
  char dir[PATH_MAX], why[512];
  if (!psp_batch_subject_dir(dir, sizeof dir, out_dir, it->subject, it->session, err)) return false;
  struct stat st;
  bool present = stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
  if (present && psp_batch_verify_record(dir, it->subject, it->session, NULL, NULL, 0, false, why,
                                         sizeof why)) {
    it->state = PSP_COHORT_COMPLETE;
    return true;
  }
  char msg[2048];
  if (psp_batch_read_failure(out_dir, it->subject, it->session, it->stage, sizeof it->stage,
                             &it->status, msg, sizeof msg)) {
    it->state = PSP_COHORT_FAILED;
  } else if (present) {
    it->state = PSP_COHORT_MISSING;
    snprintf(msg, sizeof msg, "output folder not verified: %s", why);
  } else {
    it->state = PSP_COHORT_MISSING;
    snprintf(msg, sizeof msg, "no output and no failure record (not run yet, or interrupted)");
  }
  it->message = strdup(msg);
  if (!it->message) return psp_error_set(err, PSP_ERR_NOMEM, "out of memory");
  return true;
}

static int cmp_items(const void *a, const void *b) {
  const agg_item *x = a, *y = b;
  int c = strcmp(x->subject, y->subject);
  return c ? c : strcmp(x->session, y->session);
}

static bool has_record(const char *dir) {
  char p[PATH_MAX];
  struct stat st;
  return psp_path_join(p, sizeof p, dir, PSP_DONE_RECORD, NULL) && stat(p, &st) == 0;
}

/* Every subject folder with a record, and every failure record, of OUT. */
static bool agg_scan(const char *out_dir, agg_list *l, psp_error **err) {
  DIR *d = opendir(out_dir);
  if (!d) return psp_error_set(err, PSP_ERR_IO, "%s: cannot list: %s", out_dir, strerror(errno));
  struct dirent *e;
  bool ok = true;
  while (ok && (e = readdir(d)) != NULL) {
    if (!psp_batch_id_valid(e->d_name)) continue;
    char sdir[PATH_MAX];
    struct stat st;
    if (!psp_path_join(sdir, sizeof sdir, out_dir, e->d_name, NULL) || lstat(sdir, &st) != 0 ||
        !S_ISDIR(st.st_mode))
      continue;
    if (has_record(sdir)) {
      ok = agg_add(l, e->d_name, "") != NULL;
      continue;
    }
    DIR *s = opendir(sdir);
    if (!s) continue;
    struct dirent *f;
    while (ok && (f = readdir(s)) != NULL) {
      char edir[PATH_MAX];
      if (!psp_batch_id_valid(f->d_name) ||
          !psp_path_join(edir, sizeof edir, sdir, f->d_name, NULL) || lstat(edir, &st) != 0 ||
          !S_ISDIR(st.st_mode) || !has_record(edir))
        continue;
      ok = agg_add(l, e->d_name, f->d_name) != NULL;
    }
    closedir(s);
  }
  closedir(d);
  char fdir[PATH_MAX];
  if (ok && psp_path_join(fdir, sizeof fdir, out_dir, PSP_FAILED_DIR, NULL) &&
      (d = opendir(fdir)) != NULL) {
    while (ok && (e = readdir(d)) != NULL) {
      size_t n = strlen(e->d_name);
      if (n < 6 || strcmp(e->d_name + n - 5, ".json") != 0) continue;
      char name[512];
      if (n - 5 >= sizeof name) continue;
      memcpy(name, e->d_name, n - 5);
      name[n - 5] = '\0';
      char *plus = strchr(name, '+');
      if (!plus) continue;
      *plus = '\0';
      const char *ses = plus + 1;
      if (!psp_batch_id_valid(name) || (ses[0] && !psp_batch_id_valid(ses))) continue;
      bool seen = false;
      for (size_t i = 0; i < l->n && !seen; i++)
        seen = !strcmp(l->v[i].subject, name) && !strcmp(l->v[i].session, ses);
      if (!seen) ok = agg_add(l, name, ses) != NULL;
    }
    closedir(d);
  }
  if (!ok) return psp_error_set(err, PSP_ERR_NOMEM, "out of memory scanning %s", out_dir);
  qsort(l->v, l->n, sizeof *l->v, cmp_items);
  return true;
}

bool psp_batch_aggregate(const char *out_dir, const psp_manifest *m, psp_batch_summary *summary,
                         psp_error **err) {
  memset(summary, 0, sizeof *summary);
  struct stat st;
  if (stat(out_dir, &st) != 0 || !S_ISDIR(st.st_mode))
    return psp_error_set(err, PSP_ERR_IO, "%s: not a folder (nothing to aggregate)", out_dir);
  agg_list l = {0};
  bool ok = true;
  if (m) {
    for (size_t i = 0; ok && i < psp_manifest_row_count(m); i++) {
      const psp_manifest_row *r = psp_manifest_row_at(m, i);
      ok = agg_add(&l, r->subject, r->session) != NULL;
      if (!ok) psp_error_set(err, PSP_ERR_NOMEM, "out of memory");
    }
  } else {
    ok = agg_scan(out_dir, &l, err);
  }
  for (size_t i = 0; ok && i < l.n; i++)
    ok = agg_classify(out_dir, &l.v[i], err);
  psp_cohort_entry *ents = ok ? psp_calloc(l.n ? l.n : 1, sizeof *ents, err) : NULL;
  ok = ok && ents;
  for (size_t i = 0; ok && i < l.n; i++) {
    const agg_item *it = &l.v[i];
    ents[i] = (psp_cohort_entry){.subject = it->subject,
                                 .session = it->session,
                                 .state = it->state,
                                 .stage = it->stage,
                                 .status = it->status,
                                 .message = it->message};
    summary->total++;
    if (it->state == PSP_COHORT_COMPLETE)
      summary->ok++;
    else if (it->state == PSP_COHORT_FAILED)
      summary->failed++;
    else
      summary->not_run++;
  }
  ok = ok && psp_cohort_write_tables(out_dir, "", ents, l.n, summary->tables, err);
  free(ents);
  agg_free(&l);
  return ok;
}
