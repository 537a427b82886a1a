/*
 * DESIGN: one error pattern for the whole library. A psp_error carries a
 * status code and a message that names the file and the reason; functions
 * that can fail take `psp_error **err` and return NULL/false. The first error
 * wins: later psp_error_set calls never overwrite it, so the innermost,
 * most specific reason reaches the user.
 */
#include "core/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct psp_error {
  psp_status code;
  char *message;
};

static char *vformat(const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n < 0) return NULL;
  char *s = malloc((size_t)n + 1);
  if (!s) return NULL;
  vsnprintf(s, (size_t)n + 1, fmt, ap);
  return s;
}

bool psp_error_set(psp_error **err, psp_status code, const char *fmt, ...) {
  if (!err || *err) return false;
  psp_error *e = malloc(sizeof *e);
  if (!e) return false;
  va_list ap;
  va_start(ap, fmt);
  e->message = vformat(fmt, ap);
  va_end(ap);
  e->code = code;
  if (!e->message) {
    free(e);
    return false;
  }
  *err = e;
  return false;
}

void psp_error_prefix(psp_error **err, const char *fmt, ...) {
  if (!err || !*err) return;
  va_list ap;
  va_start(ap, fmt);
  char *prefix = vformat(fmt, ap);
  va_end(ap);
  if (!prefix) return;
  size_t n = strlen(prefix) + strlen((*err)->message) + 3;
  char *m = malloc(n);
  if (m) {
    snprintf(m, n, "%s: %s", prefix, (*err)->message);
    free((*err)->message);
    (*err)->message = m;
  }
  free(prefix);
}

psp_status psp_error_code(const psp_error *e) {
  return e ? e->code : PSP_OK;
}

const char *psp_error_message(const psp_error *e) {
  return e ? e->message : "";
}

void psp_error_free(psp_error *e) {
  if (!e) return;
  free(e->message);
  free(e);
}

const char *psp_status_name(psp_status s) {
  switch (s) {
  case PSP_OK:
    return "ok";
  case PSP_ERR_INTERNAL:
    return "internal";
  case PSP_ERR_USAGE:
    return "usage";
  case PSP_ERR_IO:
    return "io";
  case PSP_ERR_FORMAT:
    return "format";
  case PSP_ERR_GEOMETRY:
    return "geometry";
  case PSP_ERR_DATA:
    return "data";
  case PSP_ERR_LIMIT:
    return "limit";
  case PSP_ERR_NOMEM:
    return "nomem";
  case PSP_ERR_UNSUPPORTED:
    return "unsupported";
  }
  return "unknown";
}

void *psp_malloc(size_t n, psp_error **err) {
  void *p = malloc(n ? n : 1);
  if (!p) psp_error_set(err, PSP_ERR_NOMEM, "out of memory allocating %zu bytes", n);
  return p;
}

void *psp_calloc(size_t count, size_t size, psp_error **err) {
  void *p = calloc(count ? count : 1, size ? size : 1);
  if (!p)
    psp_error_set(err, PSP_ERR_NOMEM, "out of memory allocating %zu x %zu bytes", count, size);
  return p;
}
