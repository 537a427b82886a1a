/*
 * DESIGN: libFuzzer target for the vertebral-level override file of
 * `analyze --landmarks FILE` (psp_level_overrides_parse_text: NAME=SLICE per
 * line, '#' comments) and, on the same bytes split at newlines, the
 * command-line form (psp_level_overrides_parse, one --disc item each) and
 * psp_level_overrides_merge. Every parsed item must read back as a
 * canonical name and a non-negative slice.
 */
#include "fuzz.h"

#include "levels/levels.h"

#include <stdlib.h>
#include <string.h>

static void check(const psp_level_overrides *ov) {
  for (size_t i = 0; i < psp_level_overrides_count(ov); i++) {
    int64_t s = -1;
    const char *name = psp_level_overrides_name(ov, i, &s);
    if (!name || !name[0] || strlen(name) > 8 || s < 0) abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  psp_error *err = NULL;
  psp_level_overrides *ov =
      psp_level_overrides_parse_text((const char *)data, size, "fuzz_landmarks.txt", &err);
  if (ov) {
    if (err) abort();
    check(ov);
  } else if (!err || psp_error_code(err) == PSP_OK || !psp_error_message(err)[0]) {
    abort();
  }
  psp_error_free(err);
  err = NULL;

  /* command-line items: the input split at newlines (NUL-terminated copies) */
  char *copy = malloc(size + 1);
  const char *items[64];
  size_t n = 0;
  if (copy) {
    memcpy(copy, data, size);
    copy[size] = '\0';
    char *p = copy;
    while (n < 64) {
      items[n++] = p;
      char *nl = strchr(p, '\n');
      if (!nl) break;
      *nl = '\0';
      p = nl + 1;
    }
    psp_level_overrides *cli = psp_level_overrides_parse(items, n, &err);
    if (cli) {
      check(cli);
      psp_error *e2 = NULL;
      if (ov && psp_level_overrides_merge(ov, cli, &e2)) check(ov);
      psp_error_free(e2);
    }
    psp_level_overrides_free(cli);
  }
  psp_error_free(err);
  free(copy);
  psp_level_overrides_free(ov);
  return 0;
}
