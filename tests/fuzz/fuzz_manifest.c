/*
 * DESIGN: libFuzzer target for the batch manifest parser
 * (psp_manifest_parse: RFC 4180 CSV, header-named columns, one input kind
 * per row). Oracles beyond "no crash, no leak": every accepted row has a
 * safe subject id (psp_batch_id_valid: never '/', never "..", so a manifest
 * cannot make batch write outside OUT), a session that is "" or safe, and
 * the paths its input kind needs; and the manifest survives a round trip
 * through psp_manifest_csv (same rows, same fields).
 */
#include "fuzz.h"

#include "paraspinal.h"

#include <stdlib.h>
#include <string.h>

static const char NAME[] = "/fuzz/cohort/manifest.csv";

static bool same(const char *a, const char *b) {
  if (!a || !b) return a == b || (!a && !b[0]) || (!b && !a[0]);
  return strcmp(a, b) == 0;
}

static void check_row(const psp_manifest_row *r) {
  if (!r || !r->subject || !psp_batch_id_valid(r->subject)) abort();
  if (!r->session || (r->session[0] && !psp_batch_id_valid(r->session))) abort();
  switch (r->kind) {
  case PSP_INPUT_WATER_FAT:
    if (!r->water || !r->fat) abort();
    break;
  case PSP_INPUT_IPOP:
    if (!r->inphase || !r->outphase) abort();
    break;
  case PSP_INPUT_FF:
    if (!r->ff) abort();
    break;
  case PSP_INPUT_DICOM:
    if (!r->dicom) abort();
    break;
  default:
    abort(); /* a parsed manifest has no "nothing usable" rows */
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  psp_error *err = NULL;
  psp_manifest *m = psp_manifest_parse((const char *)data, size, NAME, &err);
  if (!m) {
    if (!err || psp_error_code(err) == PSP_OK || !psp_error_message(err)[0]) abort();
    psp_error_free(err);
    return 0;
  }
  if (err) abort();
  size_t n = psp_manifest_row_count(m);
  if (n == 0) abort();
  for (size_t i = 0; i < n; i++)
    check_row(psp_manifest_row_at(m, i));
  if (psp_manifest_row_at(m, n)) abort();

  char *csv = psp_manifest_csv(m, NULL, 0, NULL);
  if (csv) {
    psp_error *e2 = NULL;
    psp_manifest *m2 = psp_manifest_parse(csv, strlen(csv), NAME, &e2);
    if (!m2 || psp_manifest_row_count(m2) != n) abort();
    for (size_t i = 0; i < n; i++) {
      const psp_manifest_row *a = psp_manifest_row_at(m, i), *b = psp_manifest_row_at(m2, i);
      if (a->kind != b->kind || !same(a->subject, b->subject) || !same(a->session, b->session) ||
          !same(a->water, b->water) || !same(a->fat, b->fat) || !same(a->inphase, b->inphase) ||
          !same(a->outphase, b->outphase) || !same(a->ff, b->ff) || !same(a->dicom, b->dicom) ||
          !same(a->labels, b->labels) || !same(a->label_scheme, b->label_scheme) ||
          !same(a->landmarks, b->landmarks) ||
          (a->kind == PSP_INPUT_FF && a->ff_unit != b->ff_unit))
        abort();
    }
    psp_manifest_free(m2);
    psp_error_free(e2);
    free(csv);
  }
  psp_manifest_free(m);
  return 0;
}
