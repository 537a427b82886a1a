/*
 * DESIGN: which DICOM stacks are Dixon images, and which pair to measure.
 * Classification, strongest evidence first:
 *  1. Siemens ImageTypeText (0021,1175; XA software), then ImageType /
 *     FrameType values 3 onwards: WATER/W, FAT/F, FAT_FRACTION/FF/PDFF,
 *     IN_PHASE/IP, OPP_PHASE/OUT_PHASE/OP (Philips `...\DIXON\WATER`,
 *     `...\W\W`, Siemens `...\DIXON\W`, `\IN_PHASE`, `\OPP_PHASE`, enhanced
 *     FrameType values). P/PHASE marks a phase image (never used);
 *  2. the series description: GE `WATER: Ax LAVA-Flex` / `InPhase: ...`
 *     prefixes, Siemens `_W _F _in _opp _FF` suffixes, and WATER / FAT /
 *     IN PHASE / OUT PHASE / FAT FRACTION words in a description naming a
 *     Dixon sequence (DIXON, mDIXON, IDEAL, FLEX); "fat sat" is not a fat
 *     image;
 *  3. for stacks with Dixon evidence but no stated type: the echo time at
 *     the field strength (in phase when TE is a whole number of fat-water
 *     cycles, opposed when a half).
 * Pairing: water+fat, else in-phase+opposed-phase, else a fat-fraction map.
 * A pair needs the same study, the same Frame of Reference and the same
 * grid (matrix, slices, orientation, spacing, positions). Only axial stacks
 * with a valid geometry are candidates. More than one candidate of the
 * preferred kind is an error listing them (never a silent pick); --series
 * restricts the candidates to the given SeriesInstanceUIDs.
 */
#include "core/internal.h"
#include "io/dicom_read.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const KIND_NAMES[PSP_DIXON_KIND_COUNT] = {
    "other", "water", "fat", "in-phase", "opposed-phase", "fat-fraction"};

const char *psp_dixon_kind_name(psp_dixon_kind k) {
  return (k >= 0 && k < PSP_DIXON_KIND_COUNT) ? KIND_NAMES[k] : "other";
}

/* Upper-case copy with spaces and hyphens turned into '_'. */
static void normalise(const char *in, char *out, size_t n) {
  size_t k = 0;
  for (; in && *in && k + 1 < n; in++) {
    unsigned char c = (unsigned char)*in;
    out[k++] = (c == ' ' || c == '-') ? '_' : (char)toupper(c);
  }
  out[k] = '\0';
}

typedef struct {
  const char *token;
  psp_dixon_kind kind;
} token_kind;

static const token_kind TOKENS[] = {
    {"WATER", PSP_DIXON_WATER},
    {"W", PSP_DIXON_WATER},
    {"WATER_IMAGE", PSP_DIXON_WATER},
    {"FAT", PSP_DIXON_FAT},
    {"F", PSP_DIXON_FAT},
    {"FAT_IMAGE", PSP_DIXON_FAT},
    {"FAT_FRACTION", PSP_DIXON_FF},
    {"FATFRACTION", PSP_DIXON_FF},
    {"FATFRAC", PSP_DIXON_FF},
    {"FAT_FRAC", PSP_DIXON_FF},
    {"FF", PSP_DIXON_FF},
    {"PDFF", PSP_DIXON_FF},
    {"FAT_FRACTION_MAP", PSP_DIXON_FF},
    {"IN_PHASE", PSP_DIXON_INPHASE},
    {"INPHASE", PSP_DIXON_INPHASE},
    {"IP", PSP_DIXON_INPHASE},
    {"IN", PSP_DIXON_INPHASE},
    {"OPP_PHASE", PSP_DIXON_OUTPHASE},
    {"OUT_PHASE", PSP_DIXON_OUTPHASE},
    {"OUTPHASE", PSP_DIXON_OUTPHASE},
    {"OPPPHASE", PSP_DIXON_OUTPHASE},
    {"OUT_OF_PHASE", PSP_DIXON_OUTPHASE},
    {"OPPOSED_PHASE", PSP_DIXON_OUTPHASE},
    {"OPP", PSP_DIXON_OUTPHASE},
    {"OP", PSP_DIXON_OUTPHASE},
    {"OUT", PSP_DIXON_OUTPHASE},
};

/* Tokens that make an image unusable whatever else it says. */
static const char *const EXCLUDE[] = {"P",       "PHASE",   "PHASE_MAP", "WATER_FRACTION",
                                      "R2_STAR", "T2_STAR", "R2STAR",    "T2STAR",
                                      "B0",      "B0_MAP",  "FIELD_MAP"};

static psp_dixon_kind lookup(const char *t) {
  for (size_t i = 0; i < sizeof TOKENS / sizeof TOKENS[0]; i++)
    if (!strcmp(t, TOKENS[i].token)) return TOKENS[i].kind;
  return PSP_DIXON_OTHER;
}

static bool excluded(const char *t) {
  for (size_t i = 0; i < sizeof EXCLUDE / sizeof EXCLUDE[0]; i++)
    if (!strcmp(t, EXCLUDE[i])) return true;
  return false;
}

/* Classifies '\'-separated values from index `first` on. Returns 1 with
 * *kind when one kind is named, -1 when excluded or contradictory (why
 * set), 0 when nothing is named. */
static int classify_values(const char *values, int first, const char *what, psp_dixon_kind *kind,
                           char *why, size_t why_len) {
  char buf[256];
  normalise(values, buf, sizeof buf);
  psp_dixon_kind found = PSP_DIXON_OTHER;
  char found_tok[64] = "";
  int idx = 0;
  for (char *save = NULL, *t = strtok_r(buf, "\\", &save); t;
       t = strtok_r(NULL, "\\", &save), idx++) {
    if (idx < first) continue;
    if (excluded(t)) {
      snprintf(why, why_len, "%s value %s: not a magnitude water/fat/IP/OP/FF image", what, t);
      return -1;
    }
    psp_dixon_kind k = lookup(t);
    if (k == PSP_DIXON_OTHER) continue;
    if (found != PSP_DIXON_OTHER && found != k) {
      snprintf(why, why_len, "%s names both %s (%s) and %s (%s)", what, psp_dixon_kind_name(found),
               found_tok, psp_dixon_kind_name(k), t);
      return -1;
    }
    found = k;
    snprintf(found_tok, sizeof found_tok, "%s", t);
  }
  if (found == PSP_DIXON_OTHER) return 0;
  *kind = found;
  snprintf(why, why_len, "%s value %s", what, found_tok);
  return 1;
}

static bool is_word_char(char c) {
  return isalnum((unsigned char)c) != 0;
}

/* Splits a normalised description into words (letters and digits). */
static int split_words(const char *norm, char words[][32], int max) {
  int n = 0;
  const char *p = norm;
  while (*p && n < max) {
    while (*p && !is_word_char(*p))
      p++;
    if (!*p) break;
    size_t k = 0;
    while (*p && is_word_char(*p)) {
      if (k + 1 < 32) words[n][k++] = *p;
      p++;
    }
    words[n][k] = '\0';
    n++;
  }
  return n;
}

static bool dixon_context(char words[][32], int n) {
  static const char *const ctx[] = {"DIXON", "MDIXON", "IDEAL", "FLEX", "LAVA", "IDEALIQ"};
  for (int i = 0; i < n; i++)
    for (size_t j = 0; j < sizeof ctx / sizeof ctx[0]; j++)
      if (!strcmp(words[i], ctx[j]) || strstr(words[i], "DIXON")) return true;
  return false;
}

static int classify_description(const char *desc, psp_dixon_kind *kind, char *why, size_t why_len) {
  if (!desc || !*desc) return 0;
  char norm[128];
  normalise(desc, norm, sizeof norm);
  /* GE: "WATER: Ax LAVA-Flex", "InPhase: ..." */
  const char *colon = strchr(norm, ':');
  if (colon && colon > norm) {
    char pre[64];
    size_t l = (size_t)(colon - norm);
    if (l < sizeof pre) {
      memcpy(pre, norm, l);
      pre[l] = '\0';
      while (l > 0 && pre[l - 1] == '_')
        pre[--l] = '\0';
      psp_dixon_kind k = lookup(pre);
      if (k != PSP_DIXON_OTHER && strlen(pre) > 2) {
        *kind = k;
        snprintf(why, why_len, "series description prefix \"%s:\"", pre);
        return 1;
      }
    }
  }
  /* Siemens: "..._W", "..._F", "..._in", "..._opp", "..._FF" (a real
   * underscore: "Ax T2 W" is not a water image) */
  char upper[128];
  size_t ul = 0;
  for (const char *q = desc; *q && ul + 1 < sizeof upper; q++)
    upper[ul++] = (char)toupper((unsigned char)*q);
  upper[ul] = '\0';
  const char *us = strrchr(upper, '_');
  if (us && us[1] && !strpbrk(us + 1, " -:")) {
    static const char *const suffixes[] = {"W", "F", "IN", "OPP", "FF", "WATER", "FAT"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++)
      if (!strcmp(us + 1, suffixes[i])) {
        *kind = lookup(us + 1);
        snprintf(why, why_len, "series description suffix _%s", us + 1);
        return 1;
      }
  }
  char words[24][32];
  int n = split_words(norm, words, 24);
  if (!dixon_context(words, n)) return 0;
  psp_dixon_kind found = PSP_DIXON_OTHER;
  char what[48] = "";
  for (int i = 0; i < n; i++) {
    psp_dixon_kind k = PSP_DIXON_OTHER;
    const char *next = i + 1 < n ? words[i + 1] : "";
    char phrase[48];
    snprintf(phrase, sizeof phrase, "%s", words[i]);
    if (!strcmp(words[i], "WATER")) {
      k = PSP_DIXON_WATER;
    } else if (!strcmp(words[i], "FAT")) {
      if (!strcmp(next, "FRACTION") || !strcmp(next, "FRAC")) {
        k = PSP_DIXON_FF;
        snprintf(phrase, sizeof phrase, "FAT %s", next);
        i++;
      } else if (strncmp(next, "SAT", 3) && strncmp(next, "SUP", 3)) {
        k = PSP_DIXON_FAT;
      }
    } else if ((!strcmp(words[i], "IN") || !strcmp(words[i], "OUT") || !strcmp(words[i], "OPP") ||
                !strcmp(words[i], "OPPOSED")) &&
               !strcmp(next, "PHASE")) {
      k = words[i][0] == 'I' ? PSP_DIXON_INPHASE : PSP_DIXON_OUTPHASE;
      snprintf(phrase, sizeof phrase, "%s PHASE", words[i]);
      i++;
    } else if (!strcmp(words[i], "INPHASE") || !strcmp(words[i], "OUTPHASE") ||
               !strcmp(words[i], "OPPPHASE") || !strcmp(words[i], "FF") ||
               !strcmp(words[i], "PDFF") || !strcmp(words[i], "FATFRACTION") ||
               !strcmp(words[i], "FATFRAC")) {
      k = lookup(words[i]);
    }
    if (k == PSP_DIXON_OTHER) continue;
    if (found != PSP_DIXON_OTHER && found != k) {
      snprintf(why, why_len, "series description names both %s and %s", psp_dixon_kind_name(found),
               psp_dixon_kind_name(k));
      return -1;
    }
    found = k;
    snprintf(what, sizeof what, "%s", phrase);
  }
  if (found == PSP_DIXON_OTHER) return 0;
  *kind = found;
  snprintf(why, why_len, "series description word %s", what);
  return 1;
}

psp_dixon_kind psp_dixon_classify(const char *image_type, const char *image_type_text,
                                  const char *description, char *why, size_t why_len) {
  char tmp[256];
  if (!why) {
    why = tmp;
    why_len = sizeof tmp;
  }
  why[0] = '\0';
  psp_dixon_kind k = PSP_DIXON_OTHER;
  int rc = 0;
  if (image_type_text && *image_type_text)
    rc = classify_values(image_type_text, 0, "ImageTypeText", &k, why, why_len);
  if (rc == 0 && image_type && *image_type)
    rc = classify_values(image_type, 2, "ImageType", &k, why, why_len);
  if (rc == 0) rc = classify_description(description, &k, why, why_len);
  if (rc == 1) return k;
  if (rc == 0) snprintf(why, why_len, "no Dixon image type in ImageType or series description");
  return PSP_DIXON_OTHER;
}

psp_dixon_kind psp_dixon_from_echo_time(double te_ms, double field_tesla) {
  if (!(te_ms > 0) || !(field_tesla > 0) || !isfinite(te_ms) || !isfinite(field_tesla))
    return PSP_DIXON_OTHER;
  double cycles = te_ms * 1e-3 * 3.4e-6 * 42.577e6 * field_tesla;
  double frac = cycles - floor(cycles);
  if (cycles >= 0.5 && (frac < 0.15 || frac > 0.85)) return PSP_DIXON_INPHASE;
  if (fabs(frac - 0.5) < 0.15) return PSP_DIXON_OUTPHASE;
  return PSP_DIXON_OTHER;
}

static bool mentions_dixon(const psp_dicom_stack *st, const psp_dcm_instance *in) {
  char norm[256];
  normalise(st->image_type, norm, sizeof norm);
  if (strstr(norm, "DIXON")) return true;
  normalise(st->image_type_text, norm, sizeof norm);
  if (strstr(norm, "DIXON")) return true;
  normalise(in->series_description, norm, sizeof norm);
  char words[24][32];
  int n = split_words(norm, words, 24);
  return dixon_context(words, n);
}

void psp_dicom_classify_stacks(psp_dicom_scan *s) {
  for (int32_t i = 0; i < s->n_stacks; i++) {
    psp_dicom_stack *st = &s->stacks[i];
    const psp_dcm_instance *in = &s->inst[st->first_instance];
    st->kind = psp_dixon_classify(st->image_type, st->image_type_text, in->series_description,
                                  st->kind_why, sizeof st->kind_why);
    bool phase = strstr(st->kind_why, "not a magnitude") != NULL;
    if (st->kind == PSP_DIXON_OTHER && !phase && mentions_dixon(st, in)) {
      psp_dixon_kind k = psp_dixon_from_echo_time(st->echo_time, in->field_strength);
      if (k != PSP_DIXON_OTHER) {
        st->kind = k;
        snprintf(st->kind_why, sizeof st->kind_why,
                 "Dixon series without a stated image type; echo time %.3g ms at %.3g T is %s",
                 st->echo_time, in->field_strength, psp_dixon_kind_name(k));
      }
    }
  }
}

/* ---- pairing -------------------------------------------------------------- */

/* Next UID of a comma-separated --series list: *p advances past it; the
 * UID (blanks trimmed) is [*uid, *uid + *n). False at the end of the list. */
static bool next_uid(const char **p, const char **uid, size_t *n) {
  const char *q = *p;
  while (*q == ',' || *q == ' ')
    q++;
  if (!*q) return false;
  const char *e = q;
  while (*e && *e != ',')
    e++;
  const char *t = e;
  while (t > q && t[-1] == ' ')
    t--;
  *uid = q;
  *n = (size_t)(t - q);
  *p = e;
  return true;
}

static bool in_filter(const char *filter, const char *uid) {
  if (!filter) return true;
  size_t n = strlen(uid), m;
  const char *p = filter, *u;
  while (next_uid(&p, &u, &m))
    if (m == n && n > 0 && !strncmp(u, uid, n)) return true;
  return false;
}

/* Why a and b cannot be a pair, or NULL when they can. */
static const char *pair_problem(const psp_dicom_scan *s, const psp_dicom_stack *a,
                                const psp_dicom_stack *b, char *buf, size_t n) {
  const psp_dcm_instance *ia = &s->inst[a->first_instance], *ib = &s->inst[b->first_instance];
  if (strcmp(ia->study_uid, ib->study_uid)) return "different studies";
  if (strcmp(ia->frame_of_reference_uid, ib->frame_of_reference_uid))
    return "different Frames of Reference";
  if (a->rows != b->rows || a->cols != b->cols || a->n_planes != b->n_planes) {
    snprintf(buf, n, "different grids (%d x %d x %lld vs %d x %d x %lld)", a->cols, a->rows,
             (long long)a->n_planes, b->cols, b->rows, (long long)b->n_planes);
    return buf;
  }
  for (int r = 0; r < 3; r++)
    for (int c = 0; c < 4; c++) {
      double scale =
          c == 3 ? 1.0 : fmax(1e-6, fabs(a->affine_lps[r][c]) + fabs(b->affine_lps[r][c]));
      double tol = c == 3 ? 0.05 : 1e-3 * scale + 1e-4;
      if (fabs(a->affine_lps[r][c] - b->affine_lps[r][c]) > tol) {
        snprintf(buf, n, "different %s", c == 3 ? "slice positions" : "orientation or spacing");
        return buf;
      }
    }
  return NULL;
}

static void list_stack(const psp_dicom_scan *s, int32_t i, psp_strbuf *b) {
  char d[512];
  psp_dicom_stack_describe(s, i, d, sizeof d);
  psp_strbuf_printf(b, "\n  [%d] %s", i + 1, d);
}

static bool candidate(const psp_dicom_scan *s, int32_t i, const char *filter) {
  const psp_dicom_stack *st = &s->stacks[i];
  return st->kind != PSP_DIXON_OTHER && st->geometry_status == PSP_OK &&
         !strcmp(st->orientation, "axial") &&
         in_filter(filter, s->inst[st->first_instance].series_uid);
}

/* Whether two stacks of the pair's kinds (within the filter) come from
 * one SeriesInstanceUID: --series cannot choose between them. */
static bool shared_series(const psp_dicom_scan *s, const psp_dixon_kind kinds[2],
                          const char *filter) {
  for (int32_t a = 0; a < s->n_stacks; a++) {
    if ((s->stacks[a].kind != kinds[0] && s->stacks[a].kind != kinds[1]) ||
        !candidate(s, a, filter))
      continue;
    for (int32_t b = a + 1; b < s->n_stacks; b++)
      if (s->stacks[b].kind == s->stacks[a].kind && candidate(s, b, filter) &&
          !strcmp(s->inst[s->stacks[a].first_instance].series_uid,
                  s->inst[s->stacks[b].first_instance].series_uid))
        return true;
  }
  return false;
}

/* No pair of the kinds was formed: true when no stack of those kinds is
 * broken (the choice goes on to the next kind of input), else false with
 * *err set. A stack of either kind that cannot be placed in space (a
 * missing slice, a duplicate position, no position), or two that are not
 * a pair (notes from notes_from on: one slice short, another grid), would
 * otherwise let a lesser input (in-phase/opposed-phase, an FF map) be
 * analysed in silence. --series can still name the other series. */
static bool kinds_sound(const psp_dicom_scan *s, const psp_dixon_kind kinds[2], const char *filter,
                        size_t notes_from, const psp_strbuf *notes, psp_error **err) {
  for (int32_t i = 0; i < s->n_stacks; i++) {
    const psp_dicom_stack *st = &s->stacks[i];
    if ((st->kind != kinds[0] && st->kind != kinds[1]) || st->geometry_status == PSP_OK ||
        !in_filter(filter, s->inst[st->first_instance].series_uid))
      continue;
    psp_error_set(err, st->geometry_status,
                  "%s: DICOM series %s (\"%s\", %s) cannot be used: %s. Nothing else is "
                  "analysed in its place; to analyse another kind of input in this folder, "
                  "name its series with --series (see 'paraspinal dicominfo %s')",
                  s->dir, s->inst[st->first_instance].series_uid,
                  s->inst[st->first_instance].series_description, psp_dixon_kind_name(st->kind),
                  st->geometry_message, s->dir);
    return false;
  }
  if (notes->len > notes_from) {
    psp_error_set(err, PSP_ERR_DATA,
                  "%s: no %s+%s pair%s. Nothing else is analysed in their place; to analyse "
                  "another kind of input in this folder, name its series with --series (see "
                  "'paraspinal dicominfo %s')",
                  s->dir, psp_dixon_kind_name(kinds[0]), psp_dixon_kind_name(kinds[1]),
                  notes->data + notes_from, s->dir);
    return false;
  }
  return true;
}

bool psp_dicom_choose(const psp_dicom_scan *s, const char *filter, psp_dicom_choice *c,
                      psp_error **err) {
  memset(c, 0, sizeof *c);
  c->stack[0] = c->stack[1] = -1;
  if (filter) {
    /* every UID given must name a series that was found */
    const char *p = filter, *u;
    size_t m;
    while (next_uid(&p, &u, &m)) {
      if (m == 0) continue;
      bool found = false;
      for (int32_t i = 0; i < s->n_stacks && !found; i++) {
        const char *uid = s->inst[s->stacks[i].first_instance].series_uid;
        found = strlen(uid) == m && !strncmp(uid, u, m);
      }
      if (!found) {
        psp_strbuf b;
        psp_strbuf_init(&b);
        psp_strbuf_printf(&b, "%s: --series %.*s: no such SeriesInstanceUID in this folder; found:",
                          s->dir, (int)m, u);
        for (int32_t i = 0; i < s->n_stacks; i++)
          list_stack(s, i, &b);
        char *msg = psp_strbuf_take(&b, err);
        if (msg) psp_error_set(err, PSP_ERR_USAGE, "%s", msg);
        free(msg);
        return false;
      }
    }
  }
  psp_strbuf found;
  psp_strbuf_init(&found);
  int n_cand = 0;
  for (int32_t i = 0; i < s->n_stacks; i++) {
    const psp_dicom_stack *st = &s->stacks[i];
    if (st->kind == PSP_DIXON_OTHER) continue;
    if (!in_filter(filter, s->inst[st->first_instance].series_uid)) continue;
    psp_strbuf_printf(&found, "%s%s [%d]", n_cand ? ", " : "", psp_dixon_kind_name(st->kind),
                      i + 1);
    if (st->geometry_status != PSP_OK)
      psp_strbuf_printf(&found, " (unusable: %s)", st->geometry_message);
    else if (strcmp(st->orientation, "axial"))
      psp_strbuf_printf(&found, " (%s, not axial: not used)", st->orientation);
    n_cand++;
  }
  static const psp_dixon_kind pairs[2][2] = {{PSP_DIXON_WATER, PSP_DIXON_FAT},
                                             {PSP_DIXON_INPHASE, PSP_DIXON_OUTPHASE}};
  psp_strbuf notes;
  psp_strbuf_init(&notes);
  bool ok = false, done = false;
  for (int pk = 0; pk < 2 && !done; pk++) {
    size_t notes_from = notes.len;
    int n_pairs = 0;
    int32_t pa = -1, pb = -1;
    psp_strbuf list;
    psp_strbuf_init(&list);
    for (int32_t a = 0; a < s->n_stacks; a++) {
      if (s->stacks[a].kind != pairs[pk][0] || !candidate(s, a, filter)) continue;
      for (int32_t b = 0; b < s->n_stacks; b++) {
        if (s->stacks[b].kind != pairs[pk][1] || !candidate(s, b, filter)) continue;
        char why[128];
        const char *prob = pair_problem(s, &s->stacks[a], &s->stacks[b], why, sizeof why);
        if (prob) {
          psp_strbuf_printf(&notes, "; %s [%d] and %s [%d] are not a pair (%s)",
                            psp_dixon_kind_name(pairs[pk][0]), a + 1,
                            psp_dixon_kind_name(pairs[pk][1]), b + 1, prob);
          continue;
        }
        if (n_pairs == 0) {
          pa = a;
          pb = b;
        }
        n_pairs++;
        psp_strbuf_printf(&list, "\n pair %d:", n_pairs);
        list_stack(s, a, &list);
        list_stack(s, b, &list);
      }
    }
    if (n_pairs == 0 && !kinds_sound(s, pairs[pk], filter, notes_from, &notes, err)) {
      psp_strbuf_free(&list);
      psp_strbuf_free(&found);
      psp_strbuf_free(&notes);
      return false;
    }
    if (n_pairs == 1) {
      c->kind[0] = pairs[pk][0];
      c->kind[1] = pairs[pk][1];
      c->stack[0] = pa;
      c->stack[1] = pb;
      char *f = psp_strbuf_take(&found, NULL), *nt = psp_strbuf_take(&notes, NULL);
      snprintf(c->why, sizeof c->why,
               "found %s%s; using %s [%d] + %s [%d]: same study, Frame of Reference and grid%s",
               f ? f : "?", nt ? nt : "", psp_dixon_kind_name(pairs[pk][0]), pa + 1,
               psp_dixon_kind_name(pairs[pk][1]), pb + 1,
               pk == 0 ? " (water+fat is preferred over in-phase/opposed-phase and FF maps)"
                       : " (no water+fat pair; in-phase/opposed-phase is preferred over FF maps)");
      free(f);
      free(nt);
      psp_strbuf_free(&list);
      return true;
    }
    if (n_pairs > 1) {
      char *l = psp_strbuf_take(&list, err);
      if (l)
        psp_error_set(err, PSP_ERR_USAGE, "%s: %d candidate %s+%s pairs; %s:%s", s->dir, n_pairs,
                      psp_dixon_kind_name(pairs[pk][0]), psp_dixon_kind_name(pairs[pk][1]),
                      shared_series(s, pairs[pk], filter)
                          ? "some of them are echoes or images of one series, which --series "
                            "cannot tell apart: export the echoes you want as separate "
                            "series, or convert them to NIfTI and give --water/--fat or "
                            "--inphase/--outphase"
                          : "choose one with --series UID,UID",
                      l);
      free(l);
      done = true;
      break;
    }
    psp_strbuf_free(&list);
  }
  if (!done) {
    int n_ff = 0;
    int32_t pf = -1;
    psp_strbuf list;
    psp_strbuf_init(&list);
    for (int32_t a = 0; a < s->n_stacks; a++) {
      if (s->stacks[a].kind != PSP_DIXON_FF || !candidate(s, a, filter)) continue;
      if (n_ff == 0) pf = a;
      n_ff++;
      list_stack(s, a, &list);
    }
    if (n_ff == 1) {
      c->kind[0] = PSP_DIXON_FF;
      c->kind[1] = PSP_DIXON_OTHER;
      c->stack[0] = pf;
      /* its water image, when exactly one shares its study, Frame of
       * Reference and grid: the segmentation's image edges (as analyze
       * --ff MAP --water WATER) */
      int n_w = 0;
      int32_t pw = -1;
      for (int32_t a = 0; a < s->n_stacks; a++) {
        char why[128];
        if (s->stacks[a].kind != PSP_DIXON_WATER || !candidate(s, a, filter) ||
            pair_problem(s, &s->stacks[pf], &s->stacks[a], why, sizeof why))
          continue;
        if (n_w++ == 0) pw = a;
      }
      if (n_w == 1) {
        c->kind[1] = PSP_DIXON_WATER;
        c->stack[1] = pw;
      }
      char *f = psp_strbuf_take(&found, NULL), *nt = psp_strbuf_take(&notes, NULL);
      char with[64] = "";
      if (n_w == 1) snprintf(with, sizeof with, " with its water image [%d]", pw + 1);
      snprintf(c->why, sizeof c->why,
               "found %s%s; using the fat-fraction map [%d]%s (no water+fat or in-phase/"
               "opposed-phase pair)",
               f ? f : "?", nt ? nt : "", pf + 1, with);
      free(f);
      free(nt);
      psp_strbuf_free(&list);
      return true;
    }
    if (n_ff > 1) {
      char *l = psp_strbuf_take(&list, err);
      if (l)
        psp_error_set(err, PSP_ERR_USAGE,
                      "%s: no water+fat or in-phase/opposed-phase pair, and %d candidate "
                      "fat-fraction maps; choose one with --series UID:%s",
                      s->dir, n_ff, l);
      free(l);
    } else {
      /* a Dixon stack that was found but cannot be placed in space gives
       * its own error code (geometry, format) and comes first */
      psp_status code = PSP_ERR_DATA;
      psp_strbuf b;
      psp_strbuf_init(&b);
      for (int32_t i = 0; i < s->n_stacks && code == PSP_ERR_DATA; i++) {
        const psp_dicom_stack *st = &s->stacks[i];
        if (st->kind == PSP_DIXON_OTHER || st->geometry_status == PSP_OK ||
            !in_filter(filter, s->inst[st->first_instance].series_uid))
          continue;
        code = st->geometry_status;
        psp_strbuf_printf(&b, "%s: DICOM series %s (\"%s\", %s) cannot be used: %s.\n", s->dir,
                          s->inst[st->first_instance].series_uid,
                          s->inst[st->first_instance].series_description,
                          psp_dixon_kind_name(st->kind), st->geometry_message);
      }
      char *f = psp_strbuf_take(&found, NULL), *nt = psp_strbuf_take(&notes, NULL);
      psp_strbuf_printf(&b,
                        "%s: no usable Dixon images%s (water+fat, in-phase+opposed-phase or a "
                        "fat-fraction map, axial, recognised by ImageType/FrameType or the series "
                        "description; see README \"DICOM input\"). Dixon images found: %s%s. All "
                        "image stacks:",
                        s->dir, filter ? " among the series given with --series" : "",
                        n_cand ? (f ? f : "?") : "none", nt ? nt : "");
      free(f);
      free(nt);
      for (int32_t i = 0; i < s->n_stacks; i++)
        if (in_filter(filter, s->inst[s->stacks[i].first_instance].series_uid)) {
          list_stack(s, i, &b);
          psp_strbuf_printf(&b, " (%s)", s->stacks[i].kind_why);
        }
      char *msg = psp_strbuf_take(&b, err);
      if (msg) psp_error_set(err, code, "%s", msg);
      free(msg);
    }
    psp_strbuf_free(&list);
  }
  psp_strbuf_free(&found);
  psp_strbuf_free(&notes);
  return ok;
}
