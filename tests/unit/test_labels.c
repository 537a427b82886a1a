/* Unit tests of label schemes: built-ins, BIDS TSV parsing, and refusal of
 * label values a scheme does not know. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/internal.h"

#include <stdlib.h>
#include <string.h>

static psp_volume *raw_volume(const float *vals, int n) {
  int64_t dims[3] = {n, 1, 1};
  double a[4][4] = {{-1, 0, 0, 0}, {0, -1, 0, 0}, {0, 0, 1, 0}, {0, 0, 0, 1}};
  psp_volume *v = psp_volume_create(dims, a, NULL);
  memcpy(psp_volume_data_mut(v), vals, (size_t)n * sizeof(float));
  return v;
}

static void check_map(const char *scheme, const float *in, const float *want, int n) {
  psp_error *err = NULL;
  psp_scheme *s = psp_scheme_builtin(scheme, &err);
  assert_non_null(s);
  psp_volume *raw = raw_volume(in, n);
  psp_volume *out = psp_labels_map(raw, s, "test", NULL, &err);
  if (!out) fail_msg("%s", psp_error_message(err));
  for (int i = 0; i < n; i++)
    assert_float_equal(psp_volume_data(out)[i], want[i], 0);
  psp_volume_free(out);
  psp_volume_free(raw);
  psp_scheme_free(s);
}

static void test_builtin(void **state) {
  (void)state;
  float p[] = {0, 1, 2, 3, 4};
  check_map("paraspinal", p, p, 5);
  float lpm_in[] = {0, 1, 2, 3, 4}, lpm_out[] = {0, 4, 2, 1, 3};
  check_map("lpm", lpm_in, lpm_out, 5);
  float mm_in[] = {0, 5101, 5102, 5111, 5112, 5121, 7101}, mm_out[] = {0, 1, 2, 3, 4, 0, 0};
  check_map("musclemap", mm_in, mm_out, 7);
  /* a float map resampled with a little rounding: within 1e-3 of an integer is that
   * integer, also of 0 (background; 0.0004 was refused while 1.0004 was 1) */
  float f_in[] = {0.0004f, -0.0004f, 1.0004f, 1.9996f}, f_out[] = {0, 0, 1, 2};
  check_map("paraspinal", f_in, f_out, 4);
  psp_error *err = NULL;
  assert_null(psp_scheme_builtin("nonsense", &err));
  assert_int_equal(psp_error_code(err), PSP_ERR_USAGE);
  psp_error_free(err);
}

static void test_unknown_values_refused(void **state) {
  (void)state;
  psp_error *err = NULL;
  psp_scheme *s = psp_scheme_builtin("paraspinal", &err);
  float in[] = {0, 1, 7, 2.5f, 7};
  psp_volume *raw = raw_volume(in, 5);
  assert_null(psp_labels_map(raw, s, "labels.nii.gz", NULL, &err));
  assert_int_equal(psp_error_code(err), PSP_ERR_DATA);
  const char *m = psp_error_message(err);
  assert_non_null(strstr(m, "labels.nii.gz"));
  assert_non_null(strstr(m, "7"));
  assert_non_null(strstr(m, "2.5"));
  assert_non_null(strstr(m, "3 voxels"));
  psp_error_free(err);
  psp_volume_free(raw);
  psp_scheme_free(s);
}

static void test_tsv(void **state) {
  (void)state;
  const char *tsv = "index\tname\tabbreviation\n"
                    "11\tMultifidus left\tMF_L\n"
                    "12\tmultifidus_right\t\n"
                    "21\tErector spinae (left)\tES_L\n"
                    "22\tright erector spinae\tES_R\n"
                    "30\tpsoas major left\tPM_L\n";
  psp_error *err = NULL;
  psp_scheme *s = psp_scheme_parse_tsv(tsv, strlen(tsv), "x.tsv", &err);
  if (!s) fail_msg("%s", psp_error_message(err));
  float in[] = {0, 11, 12, 21, 22, 30}, want[] = {0, 1, 2, 3, 4, 0};
  psp_volume *raw = raw_volume(in, 6);
  psp_volume *out = psp_labels_map(raw, s, "t", NULL, &err);
  assert_non_null(out);
  for (int i = 0; i < 6; i++)
    assert_float_equal(psp_volume_data(out)[i], want[i], 0);
  psp_volume_free(out);
  psp_volume_free(raw);
  psp_scheme_free(s);

  const char *bad[] = {
      "idx\tname\n1\tmultifidus left\n",                        /* no index column */
      "index\tname\n1\tmultifidus\n",                           /* no side */
      "index\tname\nabc\tmultifidus left\n",                    /* index not integer */
      "index\tname\n1\tmultifidus left\n1\tmultifidus right\n", /* duplicate */
      "index\tname\n1\tpsoas left\n",                           /* none of ours */
      "",                                                       /* empty */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    err = NULL;
    psp_scheme *b = psp_scheme_parse_tsv(bad[i], strlen(bad[i]), "bad.tsv", &err);
    if (b) fail_msg("case %zu parsed but should not", i);
    assert_int_equal(psp_error_code(err), PSP_ERR_FORMAT);
    assert_non_null(strstr(psp_error_message(err), "bad.tsv"));
    psp_error_free(err);
  }
}

static void test_dseg_tsv_roundtrip(void **state) {
  (void)state;
  char *t = psp_labels_dseg_tsv();
  psp_error *err = NULL;
  psp_scheme *s = psp_scheme_parse_tsv(t, strlen(t), "dseg.tsv", &err);
  assert_non_null(s);
  float in[] = {0, 1, 2, 3, 4};
  psp_volume *raw = raw_volume(in, 5);
  psp_volume *out = psp_labels_map(raw, s, "t", NULL, &err);
  for (int i = 0; i < 5; i++)
    assert_float_equal(psp_volume_data(out)[i], in[i], 0);
  psp_volume_free(out);
  psp_volume_free(raw);
  psp_scheme_free(s);
  free(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_builtin),
      cmocka_unit_test(test_unknown_values_refused),
      cmocka_unit_test(test_tsv),
      cmocka_unit_test(test_dseg_tsv_roundtrip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
