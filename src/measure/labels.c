/*
 * DESIGN: label schemes. Every label map entering the pipeline is mapped
 * onto the project's four labels (1 left multifidus, 2 right multifidus,
 * 3 left erector spinae, 4 right erector spinae) through a scheme: built-in
 * (paraspinal; MuscleMap 5101/5102/5111/5112 with odd = left as in
 * MuscleMap's docs/anatomy.md; LPM_Segmentator 1 right ES, 2 right MF,
 * 3 left MF, 4 left ES) or a BIDS-style dseg TSV whose names are read for
 * muscle and side. Values that are in the scheme but are other structures
 * (psoas, vertebrae) map to 0; values not in the scheme are an error, never
 * silently dropped: a wrong scheme must not produce plausible numbers.
 */
#include "core/internal.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct {
  int64_t value;
  int label; /* 0 = known, ignored */
} scheme_entry;

struct psp_scheme {
  char name[256];
  scheme_entry *entries;
  size_t n;
  /* MuscleMap: any value 1000..9999 is a known MuscleMap structure */
  int64_t known_lo, known_hi;
};

static const char *const muscle_names[PSP_LABEL_COUNT] = {"", "multifidus", "multifidus",
                                                          "erector_spinae", "erector_spinae"};
static const char *const side_names[PSP_LABEL_COUNT] = {"", "left", "right", "left", "right"};
static const char *const full_names[PSP_LABEL_COUNT] = {"background", "left multifidus",
                                                        "right multifidus", "left erector spinae",
                                                        "right erector spinae"};
static const char *const abbrevs[PSP_LABEL_COUNT] = {"BG", "MF_L", "MF_R", "ES_L", "ES_R"};

const char *psp_label_muscle(int l) {
  return (l > 0 && l < PSP_LABEL_COUNT) ? muscle_names[l] : "";
}
const char *psp_label_side(int l) {
  return (l > 0 && l < PSP_LABEL_COUNT) ? side_names[l] : "";
}
const char *psp_label_name(int l) {
  return (l >= 0 && l < PSP_LABEL_COUNT) ? full_names[l] : "unknown";
}
const char *psp_label_abbrev(int l) {
  return (l >= 0 && l < PSP_LABEL_COUNT) ? abbrevs[l] : "?";
}

static psp_scheme *scheme_new(const char *name, size_t n, psp_error **err) {
  psp_scheme *s = psp_calloc(1, sizeof *s, err);
  if (!s) return NULL;
  s->entries = psp_calloc(n ? n : 1, sizeof *s->entries, err);
  if (!s->entries) {
    free(s);
    return NULL;
  }
  snprintf(s->name, sizeof s->name, "%s", name);
  s->known_lo = 1;
  s->known_hi = 0;
  return s;
}

psp_scheme *psp_scheme_builtin(const char *name, psp_error **err) {
  static const int64_t pv[] = {1, 2, 3, 4}, pl[] = {1, 2, 3, 4};
  static const int64_t mv[] = {5101, 5102, 5111, 5112}, ml[] = {1, 2, 3, 4};
  static const int64_t lv[] = {1, 2, 3, 4}, ll[] = {4, 2, 1, 3};
  const int64_t *v, *l;
  if (!strcmp(name, "paraspinal")) {
    v = pv;
    l = pl;
  } else if (!strcmp(name, "musclemap")) {
    v = mv;
    l = ml;
  } else if (!strcmp(name, "lpm")) {
    v = lv;
    l = ll;
  } else {
    psp_error_set(
        err, PSP_ERR_USAGE,
        "unknown label scheme '%s' (built-in: paraspinal, musclemap, lpm; or a .tsv file)", name);
    return NULL;
  }
  psp_scheme *s = scheme_new(name, 4, err);
  if (!s) return NULL;
  for (size_t i = 0; i < 4; i++)
    s->entries[i] = (scheme_entry){v[i], (int)l[i]};
  s->n = 4;
  if (!strcmp(name, "musclemap")) {
    s->known_lo = 1000;
    s->known_hi = 9999;
  }
  return s;
}

void psp_scheme_free(psp_scheme *s) {
  if (!s) return;
  free(s->entries);
  free(s);
}

const char *psp_scheme_name(const psp_scheme *s) {
  return s->name;
}

/* Splits text into lowercase alphanumeric tokens and classifies. Returns the
 * project label, 0 for "not one of ours", -1 when it names one of our
 * muscles but the side is missing or both muscles are named. */
static int classify_name(const char *text) {
  bool mf = false, es = false, left = false, right = false;
  char tok[64];
  size_t t = 0;
  for (const char *p = text;; p++) {
    if (*p && isalnum((unsigned char)*p)) {
      if (t + 1 < sizeof tok) tok[t++] = (char)tolower((unsigned char)*p);
      continue;
    }
    tok[t] = '\0';
    if (t > 0) {
      if (!strncmp(tok, "multifid", 8) || !strcmp(tok, "mf")) mf = true;
      if (!strncmp(tok, "erector", 7) || !strcmp(tok, "es") || !strncmp(tok, "longissim", 9) ||
          !strncmp(tok, "iliocostal", 10))
        es = true;
      if (!strcmp(tok, "left") || !strcmp(tok, "l") || !strcmp(tok, "lt") || !strcmp(tok, "sin"))
        left = true;
      if (!strcmp(tok, "right") || !strcmp(tok, "r") || !strcmp(tok, "rt") || !strcmp(tok, "dex"))
        right = true;
    }
    t = 0;
    if (!*p) break;
  }
  if (!mf && !es) return 0;
  if ((mf && es) || left == right) return -1;
  return mf ? (left ? PSP_LABEL_MF_LEFT : PSP_LABEL_MF_RIGHT)
            : (left ? PSP_LABEL_ES_LEFT : PSP_LABEL_ES_RIGHT);
}

/* Splits one TSV line into at most max fields (in place). */
static int split_tabs(char *line, char **f, int max) {
  int n = 0;
  char *p = line;
  while (n < max) {
    f[n++] = p;
    char *tab = strchr(p, '\t');
    if (!tab) break;
    *tab = '\0';
    p = tab + 1;
  }
  for (int i = 0; i < n; i++) {
    size_t l = strlen(f[i]);
    while (l > 0 && (f[i][l - 1] == '\r' || f[i][l - 1] == ' '))
      f[i][--l] = '\0';
  }
  return n;
}

psp_scheme *psp_scheme_parse_tsv(const char *text, size_t len, const char *name, psp_error **err) {
  char *copy = psp_malloc(len + 1, err);
  if (!copy) return NULL;
  memcpy(copy, text, len);
  copy[len] = '\0';
  if (strlen(copy) != len) {
    free(copy);
    psp_error_set(err, PSP_ERR_FORMAT, "%s: label table contains NUL bytes; not a TSV text file",
                  name);
    return NULL;
  }
  size_t lines = 1;
  for (size_t i = 0; i < len; i++)
    lines += copy[i] == '\n';
  psp_scheme *s = scheme_new(name, lines, err);
  if (!s) {
    free(copy);
    return NULL;
  }
  int col_index = -1, col_name = -1, col_abbr = -1;
  char *save = NULL;
  int lineno = 0;
  bool header = true;
  for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    lineno++;
    char *f[16];
    int nf = split_tabs(line, f, 16);
    if (nf == 1 && f[0][0] == '\0') continue;
    if (header) {
      for (int i = 0; i < nf; i++) {
        if (!strcasecmp(f[i], "index"))
          col_index = i;
        else if (!strcasecmp(f[i], "name"))
          col_name = i;
        else if (!strcasecmp(f[i], "abbreviation"))
          col_abbr = i;
      }
      if (col_index < 0 || col_name < 0) {
        psp_error_set(
            err, PSP_ERR_FORMAT,
            "%s: label table needs a header line with tab-separated columns 'index' and 'name'",
            name);
        goto fail;
      }
      header = false;
      continue;
    }
    if (col_index >= nf || col_name >= nf) {
      psp_error_set(err, PSP_ERR_FORMAT, "%s: line %d has %d columns, expected at least %d", name,
                    lineno, nf, (col_index > col_name ? col_index : col_name) + 1);
      goto fail;
    }
    char *end;
    long long v = strtoll(f[col_index], &end, 10);
    if (end == f[col_index] || *end) {
      psp_error_set(err, PSP_ERR_FORMAT, "%s: line %d: index '%s' is not an integer", name, lineno,
                    f[col_index]);
      goto fail;
    }
    char both[512];
    snprintf(both, sizeof both, "%s %s", f[col_name],
             col_abbr >= 0 && col_abbr < nf ? f[col_abbr] : "");
    int label = classify_name(both);
    if (label < 0) {
      psp_error_set(
          err, PSP_ERR_FORMAT,
          "%s: line %d: '%s' names a paraspinal muscle but not exactly one muscle and one side "
          "(left/right)",
          name, lineno, f[col_name]);
      goto fail;
    }
    for (size_t i = 0; i < s->n; i++)
      if (s->entries[i].value == v) {
        psp_error_set(err, PSP_ERR_FORMAT, "%s: line %d: index %lld appears twice", name, lineno,
                      v);
        goto fail;
      }
    s->entries[s->n++] = (scheme_entry){v, label};
  }
  if (header) {
    psp_error_set(err, PSP_ERR_FORMAT, "%s: label table is empty", name);
    goto fail;
  }
  int found = 0;
  for (size_t i = 0; i < s->n; i++)
    found += s->entries[i].label > 0;
  if (found == 0) {
    psp_error_set(err, PSP_ERR_FORMAT,
                  "%s: no row names a left/right multifidus or erector spinae; nothing to measure",
                  name);
    goto fail;
  }
  free(copy);
  return s;
fail:
  free(copy);
  psp_scheme_free(s);
  return NULL;
}

psp_scheme *psp_scheme_load_tsv(const char *path, psp_error **err) {
  size_t len;
  char *text = psp_read_file(path, &len, 16 << 20, err);
  if (!text) return NULL;
  psp_scheme *s = psp_scheme_parse_tsv(text, len, path, err);
  free(text);
  return s;
}

psp_volume *psp_labels_map(const psp_volume *raw, const psp_scheme *s, const char *path,
                           psp_context *ctx, psp_error **err) {
  psp_volume *out = psp_volume_create_like(raw, err);
  if (!out) return NULL;
  int64_t n = psp_volume_voxel_count(raw);
  /* distinct values seen, for the error message */
  enum { MAXBAD = 8 };
  double bad[MAXBAD];
  int n_bad = 0;
  int64_t n_bad_vox = 0;
  int64_t last_value = INT64_MIN;
  int last_label = 0;
  bool last_ok = false;
  int64_t counts[PSP_LABEL_COUNT] = {0};
  for (int64_t i = 0; i < n; i++) {
    float x = raw->data[i];
    if (x == 0.0f) continue;
    double r = nearbyint((double)x);
    bool integer = fabs((double)x - r) <= 1e-3;
    if (integer && r == 0.0) continue; /* background, as 1.0004 is 1 (resampled float maps) */
    int64_t v = (int64_t)r;
    int label = -1;
    if (integer) {
      if (last_ok && v == last_value) {
        label = last_label;
      } else {
        for (size_t e = 0; e < s->n; e++)
          if (s->entries[e].value == v) {
            label = s->entries[e].label;
            break;
          }
        if (label < 0 && v >= s->known_lo && v <= s->known_hi) label = 0;
        if (label >= 0) {
          last_ok = true;
          last_value = v;
          last_label = label;
        }
      }
    }
    if (label < 0) {
      n_bad_vox++;
      bool seen = false;
      for (int b = 0; b < n_bad; b++)
        seen |= bad[b] == (double)x;
      if (!seen && n_bad < MAXBAD) bad[n_bad++] = x;
      continue;
    }
    out->data[i] = (float)label;
    counts[label]++;
  }
  if (n_bad_vox > 0) {
    char list[256] = "";
    for (int b = 0; b < n_bad; b++) {
      char one[32];
      snprintf(one, sizeof one, "%s%g", b ? ", " : "", bad[b]);
      strncat(list, one, sizeof list - strlen(list) - 1);
    }
    psp_volume_free(out);
    psp_error_set(
        err, PSP_ERR_DATA,
        "%s: %lld voxels carry values not in the label scheme '%s' (%s%s); choose the right "
        "label scheme (built-in name or a TSV)",
        path, (long long)n_bad_vox, s->name, list, n_bad == MAXBAD ? ", ..." : "");
    return NULL;
  }
  int64_t total = counts[1] + counts[2] + counts[3] + counts[4];
  if (total == 0) {
    psp_warn(ctx, "%s: no voxel carries a multifidus or erector spinae label of scheme '%s'", path,
             s->name);
  } else {
    for (int l = 1; l < PSP_LABEL_COUNT; l++)
      if (counts[l] == 0) psp_warn(ctx, "%s: label '%s' is absent", path, psp_label_name(l));
  }
  return out;
}

char *psp_labels_dseg_tsv(void) {
  psp_strbuf b;
  psp_strbuf_init(&b);
  psp_strbuf_append(&b, "index\tname\tabbreviation\n");
  for (int l = 1; l < PSP_LABEL_COUNT; l++)
    psp_strbuf_printf(&b, "%d\t%s\t%s\n", l, psp_label_name(l), psp_label_abbrev(l));
  return psp_strbuf_take(&b, NULL);
}
