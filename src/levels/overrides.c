/*
 * DESIGN: level names and ordinals ("L4/L5" <-> disc ordinal 1) and the
 * manual level overrides (NAME=SLICE from the command line or a small text
 * file), parsed here and applied by levels.c (step 5 of its DESIGN note).
 */
#include "levels/levels_priv.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Names and ordinals                                                        */
/* ------------------------------------------------------------------------ */

/* Vertebra ordinal v: S1 = -1, L5 = 0, ..., L1 = 4, T12 = 5, ..., T1 = 16. */
void psp_levels_vertebra_name(int o, char out[16]) {
  if (o == -1)
    snprintf(out, 16, "S1");
  else if (o >= 0 && o <= 4)
    snprintf(out, 16, "L%d", 5 - o);
  else if (o >= 5 && o <= 16)
    snprintf(out, 16, "T%d", 17 - o);
  else
    out[0] = '\0';
}

void psp_levels_disc_name(int o, char out[16]) {
  char up[16], lo[16];
  psp_levels_vertebra_name(o, up);
  psp_levels_vertebra_name(o - 1, lo);
  if (!up[0] || !lo[0] || o < 0) {
    out[0] = '\0';
    return;
  }
  snprintf(out, 16, "%.7s/%.7s", up, lo);
}

/* Parses "L4", "T12", "S1" (upper case) at s; returns characters used, 0 on
 * failure. */
static int parse_vertebra(const char *s, int *v) {
  int n = 0;
  if (s[0] != 'L' && s[0] != 'T' && s[0] != 'S') return 0;
  if (!isdigit((unsigned char)s[1])) return 0;
  int num = s[1] - '0';
  n = 2;
  if (isdigit((unsigned char)s[2])) {
    num = num * 10 + (s[2] - '0');
    n = 3;
  }
  if (s[0] == 'L' && num >= 1 && num <= 5)
    *v = 5 - num;
  else if (s[0] == 'T' && num >= 1 && num <= 12)
    *v = 17 - num;
  else if (s[0] == 'S' && num == 1)
    *v = -1;
  else
    return 0;
  return n;
}

/* Half-ordinal of a level name: 2 o for disc o, 2 v + 1 for vertebra v. */
static bool parse_level(const char *name, int *half) {
  char up[16];
  size_t n = strlen(name);
  if (n == 0 || n >= sizeof up) return false;
  for (size_t i = 0; i <= n; i++)
    up[i] = (char)toupper((unsigned char)name[i]);
  int a, b;
  int u = parse_vertebra(up, &a);
  if (!u) return false;
  if (up[u] == '\0') {
    if (a < 0) return false; /* "S1" alone: not a lumbar/thoracic level */
    *half = 2 * a + 1;
    return true;
  }
  if (up[u] != '/' && up[u] != '-') return false;
  int w = parse_vertebra(up + u + 1, &b);
  if (!w || up[u + 1 + w] != '\0' || b != a - 1) return false;
  *half = 2 * a;
  return true;
}

static void half_name(int half, char out[16]) {
  if (half % 2 == 0)
    psp_levels_disc_name(half / 2, out);
  else
    psp_levels_vertebra_name((half - 1) / 2, out);
}

/* ------------------------------------------------------------------------ */
/* Overrides                                                                 */
/* ------------------------------------------------------------------------ */

static bool ov_add(psp_level_overrides *ov, const char *text, const char *where, psp_error **err) {
  char buf[128];
  size_t len = strlen(text);
  while (len > 0 && isspace((unsigned char)text[len - 1]))
    len--;
  while (len > 0 && isspace((unsigned char)*text)) {
    text++;
    len--;
  }
  if (len >= sizeof buf)
    return psp_error_set(err, PSP_ERR_USAGE, "%slevel override '%.40s...' is too long", where,
                         text);
  memcpy(buf, text, len);
  buf[len] = '\0';
  char *eq = strchr(buf, '=');
  if (!eq)
    return psp_error_set(err, PSP_ERR_USAGE,
                         "%slevel override '%s' is not NAME=SLICE (e.g. L4/L5=12)", where, buf);
  *eq = '\0';
  char *name = buf, *num = eq + 1;
  size_t nl = strlen(name);
  while (nl > 0 && isspace((unsigned char)name[nl - 1]))
    name[--nl] = '\0';
  while (isspace((unsigned char)*num))
    num++;
  int half;
  if (!parse_level(name, &half))
    return psp_error_set(err, PSP_ERR_USAGE,
                         "%slevel override '%s=%s': '%s' is not a disc (L4/L5, L5/S1, T12/L1, ...) "
                         "or a vertebra (L1..L5, T1..T12)",
                         where, name, num, name);
  char *end = NULL;
  long long s = strtoll(num, &end, 10);
  if (!*num || end == num || *end != '\0' || s < 0 || s > 100000)
    return psp_error_set(err, PSP_ERR_USAGE,
                         "%slevel override '%s=%s': the slice must be a non-negative integer",
                         where, name, num);
  if (ov->n == ov->cap) {
    size_t nc = ov->cap ? 2 * ov->cap : 8;
    ov_item *ni = realloc(ov->items, nc * sizeof *ni);
    if (!ni) return psp_error_set(err, PSP_ERR_NOMEM, "out of memory (level overrides)");
    ov->items = ni;
    ov->cap = nc;
  }
  ov_item *it = &ov->items[ov->n++];
  half_name(half, it->name);
  it->half = half;
  it->file_slice = (int64_t)s;
  return true;
}

psp_level_overrides *psp_level_overrides_parse(const char *const *items, size_t n,
                                               psp_error **err) {
  psp_level_overrides *ov = psp_calloc(1, sizeof *ov, err);
  if (!ov) return NULL;
  for (size_t i = 0; i < n; i++)
    if (!items[i] || !ov_add(ov, items[i], "", err)) {
      if (!items[i]) psp_error_set(err, PSP_ERR_USAGE, "level override %zu is missing", i);
      psp_level_overrides_free(ov);
      return NULL;
    }
  return ov;
}

psp_level_overrides *psp_level_overrides_load(const char *path, psp_error **err) {
  size_t len = 0;
  char *text = psp_read_file(path, &len, 1 << 20, err);
  if (!text) return NULL;
  psp_level_overrides *ov = psp_level_overrides_parse_text(text, len, path, err);
  free(text);
  return ov;
}

psp_level_overrides *psp_level_overrides_parse_text(const char *text, size_t len, const char *path,
                                                    psp_error **err) {
  psp_level_overrides *ov = psp_calloc(1, sizeof *ov, err);
  if (!ov) return NULL;
  size_t line = 0;
  const char *p = text, *endp = text + len;
  if (len >= 3 && !memcmp(p, "\xEF\xBB\xBF", 3)) p += 3; /* a UTF-8 byte-order mark */
  if (memchr(p, '\0', (size_t)(endp - p))) {
    psp_error_set(err, PSP_ERR_USAGE, "%s: contains a NUL byte: not a text file", path);
    goto fail;
  }
  while (p < endp) {
    const char *nl = memchr(p, '\n', (size_t)(endp - p));
    const char *e = nl ? nl : endp;
    line++;
    char tmp[256];
    size_t l = (size_t)(e - p);
    /* a long comment is no entry: only the part before '#' must fit */
    const char *hash_at = memchr(p, '#', l);
    if (hash_at) l = (size_t)(hash_at - p);
    if (l >= sizeof tmp) {
      psp_error_set(err, PSP_ERR_USAGE, "%s:%zu: line too long", path, line);
      goto fail;
    }
    memcpy(tmp, p, l);
    tmp[l] = '\0';
    char *hash = strchr(tmp, '#');
    if (hash) *hash = '\0';
    char *q = tmp;
    while (isspace((unsigned char)*q))
      q++;
    if (*q) {
      char where[300];
      snprintf(where, sizeof where, "%s:%zu: ", path, line);
      if (!ov_add(ov, q, where, err)) goto fail;
    }
    p = nl ? nl + 1 : endp;
  }
  return ov;
fail:
  psp_level_overrides_free(ov);
  return NULL;
}

bool psp_level_overrides_merge(psp_level_overrides *a, const psp_level_overrides *b,
                               psp_error **err) {
  if (!a || !b) return true;
  for (size_t i = 0; i < b->n; i++) {
    char t[64];
    snprintf(t, sizeof t, "%s=%lld", b->items[i].name, (long long)b->items[i].file_slice);
    if (!ov_add(a, t, "", err)) return false;
  }
  return true;
}

void psp_level_overrides_free(psp_level_overrides *ov) {
  if (!ov) return;
  free(ov->items);
  free(ov);
}

size_t psp_level_overrides_count(const psp_level_overrides *ov) {
  return ov ? ov->n : 0;
}

const char *psp_level_overrides_name(const psp_level_overrides *ov, size_t i, int64_t *file_slice) {
  if (!ov || i >= ov->n) return NULL;
  if (file_slice) *file_slice = ov->items[i].file_slice;
  return ov->items[i].name;
}
