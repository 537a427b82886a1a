/*
 * DESIGN: what makes a subject folder "complete, verified, not just
 * present". A worker writes OUT/<subject>[/<session>]/.paraspinal-done.json
 * as the last file of the temporary folder before renaming it into place:
 * the tool version, the settings fingerprint, the SHA-256 of every input
 * (a DICOM folder: of the sorted list of its files and their SHA-256) and of
 * every output file. `--resume` skips a subject only when the record exists
 * and everything in it still holds (inputs unchanged, outputs present with
 * the recorded hashes); `--aggregate` checks the outputs. Failure records
 * (OUT/.paraspinal-failed/) keep why a subject failed, for failures.csv of
 * later aggregations. Also the helpers shared by the batch files: subject
 * folder names, row -> analysis options, and a tree removal that never
 * follows symbolic links (nothing outside OUT is ever removed).
 */
#include "batch/batch.h"
#include "core/internal.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <nettle/sha2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RECORD_FORMAT "paraspinal-done/1"

bool psp_batch_subject_dir(char *out, size_t n, const char *out_dir, const char *subject,
                           const char *session, psp_error **err) {
  if (!psp_batch_id_valid(subject) || (session[0] && !psp_batch_id_valid(session)))
    return psp_error_set(err, PSP_ERR_USAGE, "unsafe subject/session id '%s' '%s'", subject,
                         session);
  int w = session[0] ? snprintf(out, n, "%s/%s/%s", out_dir, subject, session)
                     : snprintf(out, n, "%s/%s", out_dir, subject);
  if (w < 0 || (size_t)w >= n)
    return psp_error_set(err, PSP_ERR_IO, "%s/%s: path too long", out_dir, subject);
  return true;
}

void psp_batch_settings_default(psp_batch_settings *s) {
  memset(s, 0, sizeof *s);
  s->write_qc = true;
  s->noise_correction = true;
  s->noise_floor = 3.0;
  s->geometry_from = PSP_GEOM_AUTO;
}

void psp_batch_row_options(const psp_manifest_row *row, const psp_batch_settings *s,
                           psp_analysis_options *o) {
  psp_analysis_options_default(o);
  o->water_path = row->water;
  o->fat_path = row->fat;
  o->inphase_path = row->inphase;
  o->outphase_path = row->outphase;
  o->ff_path = row->ff;
  o->ff_unit = row->ff_unit;
  o->dicom_dir = row->dicom;
  o->dicom_series = row->series;
  o->labels_path = row->labels;
  o->label_scheme = row->label_scheme;
  o->landmarks_path = row->landmarks;
  o->write_qc = s->write_qc;
  o->dixon.noise_bias_correction = s->noise_correction;
  o->dixon.noise_floor_factor = s->noise_floor;
  o->geometry_from = s->geometry_from;
}

static const char *kind_name(psp_input_kind k) {
  switch (k) {
  case PSP_INPUT_WATER_FAT:
    return "water+fat";
  case PSP_INPUT_IPOP:
    return "inphase+outphase";
  case PSP_INPUT_FF:
    return "ff";
  case PSP_INPUT_DICOM:
    return "dicom";
  default:
    return "none";
  }
}

char *psp_batch_settings_string(const psp_manifest_row *row, const psp_batch_settings *s) {
  static const char *const GEOM[] = {"auto", "water", "fat", "inphase", "outphase", "ff", "labels"};
  char buf[512];
  const char *scheme = !row->label_scheme               ? "-"
                       : strchr(row->label_scheme, '/') ? "tsv"
                                                        : row->label_scheme;
  snprintf(buf, sizeof buf,
           "kind=%s;ff_unit=%s;labels=%s;label_scheme=%s;landmarks=%s;qc=%d;noise_correction=%d;"
           "noise_floor=%.6g;geometry_from=%s",
           kind_name(row->kind), row->ff_unit == PSP_FF_PERCENT ? "percent" : "fraction",
           row->labels ? "file" : "auto", scheme, row->landmarks ? "file" : "-", s->write_qc,
           s->noise_correction, s->noise_floor,
           (unsigned)s->geometry_from < 7 ? GEOM[s->geometry_from] : "?");
  if (!row->series) return strdup(buf);
  /* the series chosen: another choice is another analysis (--resume redoes it) */
  psp_strbuf b;
  psp_strbuf_init(&b);
  psp_strbuf_printf(&b, "%s;series=%s", buf, row->series);
  return psp_strbuf_take(&b, NULL);
}

/* ---- file trees ---------------------------------------------------------- */

typedef struct path_list {
  char **v;
  size_t n, cap;
} path_list;

static void paths_free(path_list *l) {
  for (size_t i = 0; i < l->n; i++)
    free(l->v[i]);
  free(l->v);
  memset(l, 0, sizeof *l);
}

static bool paths_add(path_list *l, const char *s) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 32;
    char **v = realloc(l->v, cap * sizeof *v);
    if (!v) return false;
    l->v = v;
    l->cap = cap;
  }
  if (!(l->v[l->n] = strdup(s))) return false;
  l->n++;
  return true;
}

static int cmp_path(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Regular files below root (relative paths). Hidden entries are skipped when
 * skip_hidden; symbolic links to files are followed when follow_file_links,
 * symbolic links to folders never. */
static bool walk(const char *root, const char *rel, bool skip_hidden, bool follow_file_links,
                 int depth, path_list *out, psp_error **err) {
  if (depth > 32)
    return psp_error_set(err, PSP_ERR_LIMIT, "%s/%s: folders nested too deep", root, rel);
  char dir[PATH_MAX];
  int w = rel[0] ? snprintf(dir, sizeof dir, "%s/%s", root, rel)
                 : snprintf(dir, sizeof dir, "%s", root);
  if (w < 0 || (size_t)w >= sizeof dir)
    return psp_error_set(err, PSP_ERR_IO, "%s: path too long", root);
  DIR *d = opendir(dir);
  if (!d) return psp_error_set(err, PSP_ERR_IO, "%s: cannot list: %s", dir, strerror(errno));
  bool ok = true;
  struct dirent *e;
  while (ok && (e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    if (skip_hidden && e->d_name[0] == '.') continue;
    char sub[PATH_MAX], full[PATH_MAX];
    int a = rel[0] ? snprintf(sub, sizeof sub, "%s/%s", rel, e->d_name)
                   : snprintf(sub, sizeof sub, "%s", e->d_name);
    int b = snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
    if (a < 0 || b < 0 || (size_t)a >= sizeof sub || (size_t)b >= sizeof full) {
      ok = psp_error_set(err, PSP_ERR_IO, "%s/%s: path too long", dir, e->d_name);
      break;
    }
    struct stat st;
    if (lstat(full, &st) != 0) continue;
    if (S_ISLNK(st.st_mode)) {
      if (!follow_file_links || stat(full, &st) != 0 || !S_ISREG(st.st_mode)) continue;
    }
    if (S_ISDIR(st.st_mode))
      ok = walk(root, sub, skip_hidden, follow_file_links, depth + 1, out, err);
    else if (S_ISREG(st.st_mode) && !paths_add(out, sub))
      ok = psp_error_set(err, PSP_ERR_NOMEM, "out of memory");
  }
  closedir(d);
  return ok;
}

static bool list_tree(const char *root, bool skip_hidden, bool follow_file_links, path_list *out,
                      psp_error **err) {
  if (!walk(root, "", skip_hidden, follow_file_links, 0, out, err)) {
    paths_free(out);
    return false;
  }
  qsort(out->v, out->n, sizeof *out->v, cmp_path);
  return true;
}

void psp_batch_remove_tree(const char *path) {
  struct stat st;
  if (lstat(path, &st) != 0) return;
  if (!S_ISDIR(st.st_mode)) {
    unlink(path);
    return;
  }
  DIR *d = opendir(path);
  if (d) {
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
      if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
      char sub[PATH_MAX];
      int w = snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
      if (w < 0 || (size_t)w >= sizeof sub) continue;
      psp_batch_remove_tree(sub);
    }
    closedir(d);
  }
  rmdir(path);
}

static void hex_of(const unsigned char *d, char hex[65]) {
  for (int i = 0; i < SHA256_DIGEST_SIZE; i++)
    snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

/* SHA-256 of "relpath\0sha256\n" over the sorted files of a folder tree. */
static bool tree_digest(const char *root, char hex[65], psp_error **err) {
  path_list files = {0};
  if (!list_tree(root, false, true, &files, err)) return false;
  if (files.n == 0) {
    paths_free(&files);
    return psp_error_set(err, PSP_ERR_IO, "%s: folder has no files", root);
  }
  struct sha256_ctx c;
  sha256_init(&c);
  bool ok = true;
  for (size_t i = 0; ok && i < files.n; i++) {
    char full[PATH_MAX], h[65];
    ok = psp_path_join(full, sizeof full, root, files.v[i], err) && psp_sha256_file(full, h, err);
    if (!ok) break;
    sha256_update(&c, strlen(files.v[i]) + 1, (const uint8_t *)files.v[i]);
    sha256_update(&c, 64, (const uint8_t *)h);
    sha256_update(&c, 1, (const uint8_t *)"\n");
  }
  paths_free(&files);
  if (!ok) return false;
  unsigned char d[SHA256_DIGEST_SIZE];
  sha256_digest(&c, sizeof d, d);
  hex_of(d, hex);
  return true;
}

/* ---- input digests ------------------------------------------------------- */

void psp_batch_input_digests_free(psp_input_digest *d, size_t n) {
  if (!d) return;
  for (size_t i = 0; i < n; i++)
    free(d[i].path);
  free(d);
}

/* The SHA-256 the analysis computed of the file at path, or NULL. */
static const char *known_sha256(const psp_result *r, const char *path) {
  for (int i = 0; r && i < psp_result_input_count(r); i++) {
    const char *role, *p, *sha;
    const psp_volume *vol;
    psp_result_input(r, i, &role, &p, &sha, &vol);
    if (p && sha && strlen(sha) == 64 && strcmp(p, path) == 0) return sha;
  }
  return NULL;
}

bool psp_batch_input_digests(const psp_manifest_row *row, const psp_result *known,
                             psp_input_digest **out, size_t *n, psp_error **err) {
  *out = NULL;
  *n = 0;
  const char *role[8], *path[8];
  size_t k = 0;
#define ADD(r, p)                                                                                  \
  do {                                                                                             \
    if (p) {                                                                                       \
      role[k] = r;                                                                                 \
      path[k++] = p;                                                                               \
    }                                                                                              \
  } while (0)
  ADD("water", row->water);
  ADD("fat", row->fat);
  ADD("inphase", row->inphase);
  ADD("outphase", row->outphase);
  ADD("ff", row->ff);
  ADD("dicom", row->dicom);
  ADD("labels", row->labels);
  if (row->label_scheme && strchr(row->label_scheme, '/')) ADD("label_scheme", row->label_scheme);
  ADD("landmarks", row->landmarks);
#undef ADD
  psp_input_digest *d = psp_calloc(k ? k : 1, sizeof *d, err);
  if (!d) return false;
  for (size_t i = 0; i < k; i++) {
    snprintf(d[i].role, sizeof d[i].role, "%s", role[i]);
    d[i].path = strdup(path[i]);
    if (!d[i].path) {
      psp_batch_input_digests_free(d, k);
      return psp_error_set(err, PSP_ERR_NOMEM, "out of memory");
    }
    struct stat st;
    bool folder = stat(path[i], &st) == 0 && S_ISDIR(st.st_mode);
    const char *sha = folder ? NULL : known_sha256(known, path[i]);
    if (sha) memcpy(d[i].sha256, sha, 65);
    bool ok =
        sha || ((folder && !strcmp(role[i], "dicom")) ? tree_digest(path[i], d[i].sha256, err)
                                                      : psp_sha256_file(path[i], d[i].sha256, err));
    if (!ok) {
      psp_batch_input_digests_free(d, k);
      return false;
    }
  }
  *out = d;
  *n = k;
  return true;
}

/* ---- completion record ----------------------------------------------------- */

bool psp_batch_write_record(const char *dir, const psp_manifest_row *row, const char *settings,
                            const psp_input_digest *in, size_t n_in, psp_error **err) {
  path_list files = {0};
  if (!list_tree(dir, true, false, &files, err)) return false;
  cJSON *root = cJSON_CreateObject();
  bool ok = root != NULL;
  if (ok) {
    cJSON_AddStringToObject(root, "format", RECORD_FORMAT);
    cJSON_AddStringToObject(root, "version", psp_version());
    cJSON_AddStringToObject(root, "subject", row->subject);
    cJSON_AddStringToObject(root, "session", row->session);
    cJSON_AddStringToObject(root, "settings", settings);
    cJSON *ins = cJSON_AddArrayToObject(root, "inputs");
    for (size_t i = 0; ins && i < n_in; i++) {
      cJSON *o = cJSON_CreateObject();
      cJSON_AddStringToObject(o, "role", in[i].role);
      cJSON_AddStringToObject(o, "path", in[i].path);
      cJSON_AddStringToObject(o, "sha256", in[i].sha256);
      cJSON_AddItemToArray(ins, o);
    }
    cJSON *outs = cJSON_AddArrayToObject(root, "outputs");
    for (size_t i = 0; ok && outs && i < files.n; i++) {
      char full[PATH_MAX], h[65];
      struct stat st;
      ok = psp_path_join(full, sizeof full, dir, files.v[i], err) && psp_sha256_file(full, h, err);
      if (ok && stat(full, &st) != 0)
        ok = psp_error_set(err, PSP_ERR_IO, "%s: %s", full, strerror(errno));
      if (!ok) break;
      cJSON *o = cJSON_CreateObject();
      cJSON_AddStringToObject(o, "file", files.v[i]);
      cJSON_AddNumberToObject(o, "bytes", (double)st.st_size);
      cJSON_AddStringToObject(o, "sha256", h);
      cJSON_AddItemToArray(outs, o);
    }
  }
  char *text = ok ? cJSON_Print(root) : NULL;
  cJSON_Delete(root);
  paths_free(&files);
  if (!ok) return false;
  if (!text) return psp_error_set(err, PSP_ERR_NOMEM, "out of memory writing the record");
  char path[PATH_MAX];
  ok = psp_path_join(path, sizeof path, dir, PSP_DONE_RECORD, err);
  size_t len = strlen(text);
  text[len] = '\0';
  if (ok) {
    /* newline-terminated text file */
    char *t2 = realloc(text, len + 2);
    if (t2) {
      text = t2;
      text[len++] = '\n';
      text[len] = '\0';
    }
    ok = psp_write_file_atomic(path, text, len, err);
  }
  free(text);
  return ok;
}

static const char *jstr(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

static bool why_set(char *why, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool why_set(char *why, size_t n, const char *fmt, ...) {
  if (why && n) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, n, fmt, ap);
    va_end(ap);
  }
  return false;
}

bool psp_batch_verify_record(const char *dir, const char *subject, const char *session,
                             const char *settings, const psp_input_digest *in, size_t n_in,
                             bool check_inputs, char *why, size_t why_len) {
  char path[PATH_MAX];
  if (!psp_path_join(path, sizeof path, dir, PSP_DONE_RECORD, NULL))
    return why_set(why, why_len, "path too long");
  struct stat st;
  if (stat(path, &st) != 0) return why_set(why, why_len, "no completion record");
  size_t len = 0;
  psp_error *e = NULL;
  char *text = psp_read_file(path, &len, (int64_t)64 << 20, &e);
  if (!text) {
    why_set(why, why_len, "completion record unreadable: %s", psp_error_message(e));
    psp_error_free(e);
    return false;
  }
  cJSON *root = cJSON_ParseWithLength(text, len);
  free(text);
  if (!root) return why_set(why, why_len, "completion record is not valid JSON");
  bool ok = false;
  const char *fmt = jstr(root, "format"), *ver = jstr(root, "version");
  const char *sub = jstr(root, "subject"), *ses = jstr(root, "session");
  const char *set = jstr(root, "settings");
  const cJSON *ins = cJSON_GetObjectItemCaseSensitive(root, "inputs");
  const cJSON *outs = cJSON_GetObjectItemCaseSensitive(root, "outputs");
  if (!fmt || strcmp(fmt, RECORD_FORMAT) != 0 || !cJSON_IsArray(ins) || !cJSON_IsArray(outs) ||
      !sub || !ses || !set || !ver) {
    why_set(why, why_len, "completion record is incomplete");
  } else if (strcmp(ver, psp_version()) != 0) {
    why_set(why, why_len, "made by version %s, this is %s", ver, psp_version());
  } else if (strcmp(sub, subject) != 0 || strcmp(ses, session) != 0) {
    why_set(why, why_len, "record names subject '%s' session '%s'", sub, ses);
  } else if (settings && strcmp(set, settings) != 0) {
    why_set(why, why_len, "settings changed (%s -> %s)", set, settings);
  } else if (check_inputs && (size_t)cJSON_GetArraySize(ins) != n_in) {
    why_set(why, why_len, "the inputs changed (%d recorded, %zu now)", cJSON_GetArraySize(ins),
            n_in);
  } else {
    ok = true;
    size_t i = 0;
    const cJSON *o;
    cJSON_ArrayForEach(o, ins) {
      if (!check_inputs) break;
      const char *role = jstr(o, "role"), *h = jstr(o, "sha256");
      if (!role || !h || strcmp(role, in[i].role) != 0 || strcmp(h, in[i].sha256) != 0) {
        ok = why_set(why, why_len, "input %s changed (%s)", in[i].role, in[i].path);
        break;
      }
      i++;
    }
    size_t n_out = 0;
    cJSON_ArrayForEach(o, outs) {
      if (!ok) break;
      const char *f = jstr(o, "file"), *h = jstr(o, "sha256");
      char full[PATH_MAX], now[65];
      if (!f || !h || strstr(f, "..") || f[0] == '/') {
        ok = why_set(why, why_len, "completion record lists a bad output name");
        break;
      }
      if (!psp_path_join(full, sizeof full, dir, f, NULL)) {
        ok = why_set(why, why_len, "path too long");
        break;
      }
      psp_error *he = NULL;
      if (!psp_sha256_file(full, now, &he)) {
        psp_error_free(he);
        ok = why_set(why, why_len, "output %s is missing", f);
        break;
      }
      if (strcmp(now, h) != 0) {
        ok = why_set(why, why_len, "output %s changed since it was written", f);
        break;
      }
      n_out++;
    }
    if (ok && n_out == 0) ok = why_set(why, why_len, "completion record lists no outputs");
  }
  cJSON_Delete(root);
  return ok;
}

/* ---- failure records --------------------------------------------------------- */

static bool failure_path(char *out, size_t n, const char *out_dir, const char *subject,
                         const char *session) {
  int w = snprintf(out, n, "%s/%s/%s+%s.json", out_dir, PSP_FAILED_DIR, subject, session);
  return w > 0 && (size_t)w < n;
}

bool psp_batch_write_failure(const char *out_dir, const char *subject, const char *session,
                             const char *stage, int status, const char *message, psp_error **err) {
  char dir[PATH_MAX], path[PATH_MAX];
  if (!psp_path_join(dir, sizeof dir, out_dir, PSP_FAILED_DIR, err)) return false;
  if (!failure_path(path, sizeof path, out_dir, subject, session))
    return psp_error_set(err, PSP_ERR_IO, "%s: path too long", dir);
  if (!psp_mkdir_p(dir, err)) return false;
  cJSON *o = cJSON_CreateObject();
  if (!o) return psp_error_set(err, PSP_ERR_NOMEM, "out of memory");
  cJSON_AddStringToObject(o, "subject", subject);
  cJSON_AddStringToObject(o, "session", session);
  cJSON_AddStringToObject(o, "stage", stage);
  cJSON_AddNumberToObject(o, "status", status);
  cJSON_AddStringToObject(o, "message", message ? message : "");
  char *text = cJSON_Print(o);
  cJSON_Delete(o);
  if (!text) return psp_error_set(err, PSP_ERR_NOMEM, "out of memory");
  bool ok = psp_write_file_atomic(path, text, strlen(text), err);
  free(text);
  return ok;
}

void psp_batch_remove_failure(const char *out_dir, const char *subject, const char *session) {
  char path[PATH_MAX];
  if (failure_path(path, sizeof path, out_dir, subject, session)) unlink(path);
}

bool psp_batch_read_failure(const char *out_dir, const char *subject, const char *session,
                            char *stage, size_t stage_len, int *status, char *message,
                            size_t message_len) {
  char path[PATH_MAX];
  if (!failure_path(path, sizeof path, out_dir, subject, session)) return false;
  struct stat st;
  if (stat(path, &st) != 0) return false;
  size_t len = 0;
  char *text = psp_read_file(path, &len, (int64_t)1 << 20, NULL);
  if (!text) return false;
  cJSON *o = cJSON_ParseWithLength(text, len);
  free(text);
  if (!o) return false;
  const char *sg = jstr(o, "stage"), *msg = jstr(o, "message");
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(o, "status");
  bool ok = sg && msg && cJSON_IsNumber(s);
  if (ok) {
    snprintf(stage, stage_len, "%s", sg);
    snprintf(message, message_len, "%s", msg);
    *status = s->valueint;
  }
  cJSON_Delete(o);
  return ok;
}
