/*
 * DESIGN: libFuzzer target for the label-scheme TSV parser
 * (psp_scheme_parse_tsv, the BIDS-style index/name[/abbreviation] table of
 * --label-scheme FILE.tsv). A scheme that parses is then used to map a small
 * fixed label volume (values 0..4, MuscleMap codes, a negative and a
 * non-integer value) so the lookup path runs on whatever table the fuzzer
 * built; the mapped result must hold only project labels 0..4.
 */
#include "fuzz.h"

#include "paraspinal.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  psp_error *err = NULL;
  psp_scheme *s = psp_scheme_parse_tsv((const char *)data, size, "fuzz.tsv", &err);
  if (!s) {
    if (!err || psp_error_code(err) == PSP_OK || !psp_error_message(err)[0]) abort();
    psp_error_free(err);
    return 0;
  }
  if (err) abort();
  (void)psp_scheme_name(s);
  static const float values[] = {0, 1, 2, 3, 4, 5, 5101, 5102, 5111, 5112, -1, 2.5f, 1e9f, 7};
  enum { NV = sizeof values / sizeof values[0] };
  const int64_t dims[3] = {NV, 1, 1};
  const double aff[4][4] = {{1, 0, 0, 0}, {0, 1, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}};
  psp_context *ctx = psp_context_create();
  psp_volume *raw = ctx ? psp_volume_create(dims, aff, NULL) : NULL;
  if (raw) {
    /* one volume per value: each lookup succeeds or fails on its own */
    for (int i = 0; i < NV; i++) {
      psp_volume_data_mut(raw)[i] = values[i];
      psp_volume *one = psp_volume_create(dims, aff, NULL);
      if (!one) break;
      psp_volume_data_mut(one)[0] = values[i];
      psp_error *e2 = NULL;
      psp_volume *m = psp_labels_map(one, s, "fuzz_labels.nii", ctx, &e2);
      if (m) {
        float x = psp_volume_data(m)[0];
        if (!(x >= 0 && x <= 4 && x == (float)(int)x)) abort();
      } else if (!e2 || psp_error_code(e2) != PSP_ERR_DATA) {
        abort();
      }
      psp_volume_free(m);
      psp_error_free(e2);
      psp_volume_free(one);
    }
    psp_error *e3 = NULL;
    psp_volume *all = psp_labels_map(raw, s, "fuzz_labels.nii", ctx, &e3);
    psp_volume_free(all);
    psp_error_free(e3);
  }
  psp_volume_free(raw);
  psp_context_free(ctx);
  psp_scheme_free(s);
  return 0;
}
