/* Unit tests of the cohort manifest: RFC-4180 quoting, errors with
 * file:line:column, unsafe subject/session ids (they become folder names),
 * duplicates, relative path resolution, CSV round trip, folder-tree
 * discovery, and the jobs/threads plan and shard selection of batch. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "batch/batch.h"
#include "core/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static psp_manifest *parse(const char *text, const char *name) {
  psp_error *err = NULL;
  psp_manifest *m = psp_manifest_parse(text, strlen(text), name, &err);
  if (!m) fail_msg("unexpected error: %s", psp_error_message(err));
  return m;
}

/* Parsing must fail with PSP_ERR_FORMAT and a message containing want. */
static void parse_fails(const char *text, const char *want) {
  psp_error *err = NULL;
  psp_manifest *m = psp_manifest_parse(text, strlen(text), "m.csv", &err);
  if (m) fail_msg("parsed, expected an error containing '%s':\n%s", want, text);
  assert_int_equal(psp_error_code(err), PSP_ERR_FORMAT);
  const char *msg = psp_error_message(err);
  if (!strstr(msg, want)) fail_msg("message '%s' lacks '%s'", msg, want);
  psp_error_free(err);
}

static void test_basic_and_paths(void **state) {
  (void)state;
  psp_manifest *m = parse("subject,session,water,fat\n"
                          "sub-01,ses-1,a/w.nii.gz,/abs/f.nii.gz\n"
                          "sub-02,,../w2.nii,f2.nii\n",
                          "/data/study/m.csv");
  assert_int_equal(psp_manifest_row_count(m), 2);
  const psp_manifest_row *r = psp_manifest_row_at(m, 0);
  assert_string_equal(r->subject, "sub-01");
  assert_string_equal(r->session, "ses-1");
  assert_int_equal(r->kind, PSP_INPUT_WATER_FAT);
  assert_string_equal(r->water, "/data/study/a/w.nii.gz");
  assert_string_equal(r->fat, "/abs/f.nii.gz");
  assert_null(r->ff);
  assert_null(r->labels);
  assert_int_equal(r->line, 2);
  r = psp_manifest_row_at(m, 1);
  assert_string_equal(r->session, "");
  assert_string_equal(r->water, "/data/study/../w2.nii");
  assert_int_equal(r->line, 3);
  assert_null(psp_manifest_row_at(m, 2));
  psp_manifest_free(m);

  /* no folder in the name: paths stay as written */
  m = parse("subject,ff,ff_unit\ns1,x/ff.nii.gz,percent\ns2,y.nii,\n", "m.csv");
  r = psp_manifest_row_at(m, 0);
  assert_int_equal(r->kind, PSP_INPUT_FF);
  assert_string_equal(r->ff, "x/ff.nii.gz");
  assert_int_equal(r->ff_unit, PSP_FF_PERCENT);
  assert_int_equal(psp_manifest_row_at(m, 1)->ff_unit, PSP_FF_FRACTION);
  psp_manifest_free(m);

  /* an FF map with its water image (no fat): the FF kind, the water kept */
  m = parse("subject,water,fat,ff\ns1,w.nii,,ff.nii\n", "m.csv");
  r = psp_manifest_row_at(m, 0);
  assert_int_equal(r->kind, PSP_INPUT_FF);
  assert_string_equal(r->ff, "ff.nii");
  assert_string_equal(r->water, "w.nii");
  assert_null(r->fat);
  psp_manifest_free(m);
}

static void test_quoting(void **state) {
  (void)state;
  /* BOM, CRLF, quoted comma, doubled quotes, newline inside quotes, blank
   * lines, a last line without a line end */
  const char *t = "\xEF\xBB\xBFsubject,inphase,outphase,labels,label_scheme\r\n"
                  "\r\n"
                  "s1,\"a,b.nii\",\"say \"\"hi\"\".nii\",\"l\nl.nii\",lpm\r\n"
                  "\n"
                  "\"s2\",ip.nii,op.nii,lab.nii,sch/x.tsv";
  psp_manifest *m = parse(t, "/d/m.csv");
  assert_int_equal(psp_manifest_row_count(m), 2);
  const psp_manifest_row *r = psp_manifest_row_at(m, 0);
  assert_int_equal(r->kind, PSP_INPUT_IPOP);
  assert_string_equal(r->inphase, "/d/a,b.nii");
  assert_string_equal(r->outphase, "/d/say \"hi\".nii");
  assert_string_equal(r->labels, "/d/l\nl.nii");
  assert_string_equal(r->label_scheme, "lpm"); /* built-in: not a path */
  assert_int_equal(r->line, 3);
  r = psp_manifest_row_at(m, 1);
  assert_string_equal(r->subject, "s2");
  assert_string_equal(r->label_scheme, "/d/sch/x.tsv");
  assert_int_equal(r->line, 6); /* the quoted newline counts */
  psp_manifest_free(m);

  m = parse("subject,dicom,landmarks\ns1,dcm/,lm.txt\n", "/x/m.csv");
  r = psp_manifest_row_at(m, 0);
  assert_int_equal(r->kind, PSP_INPUT_DICOM);
  assert_string_equal(r->dicom, "/x/dcm/");
  assert_string_equal(r->landmarks, "/x/lm.txt");
  psp_manifest_free(m);
}

static void test_syntax_errors(void **state) {
  (void)state;
  parse_fails("", "empty manifest");
  parse_fails("subject,water,fat\n", "no rows");
  parse_fails("subject,water,fat\ns1,\"w.nii,f.nii\n", "m.csv:2:4: quoted field is not closed");
  parse_fails("subject,water,fat\ns1,w\"x.nii,f.nii\n", "m.csv:2:5: quote inside an unquoted");
  parse_fails("subject,water,fat\ns1,\"w.nii\"x,f.nii\n",
              "m.csv:2:11: unexpected character after a closing quote");
  parse_fails("subject,water,fat\ns1,w.nii\n", "m.csv:2:9: 2 fields, but the header has 3");
  parse_fails("subject,water,fat\ns1,w.nii,f.nii,extra\n",
              "m.csv:2:16: 4 fields, but the header has 3");
  parse_fails("subject,water,fat\ns1,w.nii,f.nii\rs2,a,b\n", "carriage return");
  parse_fails("subject,water,fatt\ns1,w,f\n", "m.csv:1:15: unknown column 'fatt'");
  parse_fails("subject,water,fat,water\ns1,w,f,w\n", "m.csv:1:19: column 'water' appears twice");
  parse_fails("session,water,fat\ns1,w,f\n", "no 'subject' column");
  parse_fails("subject,water\ns1,w\n", "both 'water' and 'fat'");
  parse_fails("subject,labels\ns1,l\n", "names no input columns");
  parse_fails("subject,water,fat,ff_unit\ns1,w,f,percent\n", "'ff_unit' needs an 'ff' column");
  const char nul[] = "subject,ff\ns1,a\0b\n";
  psp_error *err = NULL;
  assert_null(psp_manifest_parse(nul, sizeof nul - 1, "m.csv", &err));
  assert_non_null(strstr(psp_error_message(err), "m.csv:2:5: NUL byte"));
  psp_error_free(err);
}

static void test_row_errors(void **state) {
  (void)state;
  const char *h = "subject,session,water,fat,ff,ff_unit,dicom,labels,label_scheme\n";
  char t[512];
  snprintf(t, sizeof t, "%ss1,,w.nii,,,,,,\n", h);
  parse_fails(t, "m.csv:2:5: water given without fat");
  snprintf(t, sizeof t, "%ss1,,,f.nii,,,,,\n", h);
  parse_fails(t, "m.csv:2:6: fat given without water");
  snprintf(t, sizeof t, "%ss1,,w,f,ff,,,,\n", h);
  parse_fails(t, "m.csv:2:1: more than one input kind");
  snprintf(t, sizeof t, "%ss1,,,,,,,,\n", h);
  parse_fails(t, "m.csv:2:1: no input");
  snprintf(t, sizeof t, "%ss1,,,,ff.nii,permille,,,\n", h);
  parse_fails(t, "m.csv:2:14: ff_unit must be 'fraction' or 'percent'");
  snprintf(t, sizeof t, "%ss1,,w,f,,percent,,,\n", h);
  parse_fails(t, "ff_unit given for a row without ff");
  snprintf(t, sizeof t, "%ss1,,,,,,d,,lpm\n", h);
  parse_fails(t, "label_scheme given without labels");
  snprintf(t, sizeof t, "%s,,w,f,,,,,\n", h);
  parse_fails(t, "m.csv:2:1: empty subject");
}

static void test_unsafe_ids(void **state) {
  (void)state;
  static const char *const bad[] = {"../x", "/abs", ".",      "..", ".hidden", "a/b",
                                    "a b",  "a\\b", "x/../y", "ü",  "a:b",     "~"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_false(psp_batch_id_valid(bad[i]));
    char t[512];
    snprintf(t, sizeof t, "subject,water,fat\n\"%s\",w,f\n", bad[i]);
    parse_fails(t, "m.csv:2:1: subject");
    parse_fails(t, "is not a safe folder name");
    snprintf(t, sizeof t, "subject,session,water,fat\ns1,\"%s\",w,f\n", bad[i]);
    parse_fails(t, "m.csv:2:4: session");
  }
  char longid[200];
  memset(longid, 'a', 65);
  longid[65] = '\0';
  assert_false(psp_batch_id_valid(longid));
  longid[64] = '\0';
  assert_true(psp_batch_id_valid(longid));
  static const char *const good[] = {"sub-01", "A.b_c-9", "x..y", "0"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
    assert_true(psp_batch_id_valid(good[i]));
  assert_false(psp_batch_id_valid(""));
  assert_false(psp_batch_id_valid(NULL));
}

static void test_duplicates(void **state) {
  (void)state;
  parse_fails("subject,session,ff\na,1,x\nb,1,x\na,1,y\n",
              "m.csv:4:1: subject a session 1 repeats line 2");
  parse_fails("subject,ff\nSub-01,x\nsub-01,y\n",
              "m.csv:3:1: subject sub-01 differs only in letter case from line 2");
  parse_fails("subject,session,ff\na,,x\nb,1,x\na,2,y\n",
              "m.csv:4:1: subject a has rows with and without a session (lines 2 and 4)");
  /* the first problem in manifest order is the one reported */
  parse_fails("subject,ff\nz,1\na,2\nz,3\na,4\n", "m.csv:4:1: subject z repeats line 2");
  psp_manifest *m = parse("subject,session,ff\na,1,x\na,2,x\nA2,1,x\n", "m.csv");
  assert_int_equal(psp_manifest_row_count(m), 3);
  psp_manifest_free(m);
}

static void test_csv_roundtrip(void **state) {
  (void)state;
  psp_manifest *m = parse("subject,session,water,fat,ff,ff_unit,labels,label_scheme\n"
                          "s1,e1,\"a,b.nii\",\"q\"\"q.nii\",,,lab.nii,musclemap\n"
                          "s2,e1,,,ff.nii,percent,,\n",
                          "/r/m.csv");
  psp_error *err = NULL;
  char *csv = psp_manifest_csv(m, NULL, 0, &err);
  assert_non_null(csv);
  psp_manifest *m2 = parse(csv, "/elsewhere/m2.csv"); /* paths are absolute now */
  assert_int_equal(psp_manifest_row_count(m2), 2);
  for (size_t i = 0; i < 2; i++) {
    const psp_manifest_row *a = psp_manifest_row_at(m, i), *b = psp_manifest_row_at(m2, i);
    assert_string_equal(a->subject, b->subject);
    assert_string_equal(a->session, b->session);
    assert_int_equal(a->kind, b->kind);
    assert_int_equal(a->ff_unit, b->ff_unit);
  }
  assert_string_equal(psp_manifest_row_at(m2, 0)->water, "/r/a,b.nii");
  assert_string_equal(psp_manifest_row_at(m2, 0)->fat, "/r/q\"q.nii");
  assert_string_equal(psp_manifest_row_at(m2, 0)->label_scheme, "musclemap");
  assert_string_equal(psp_manifest_row_at(m2, 1)->ff, "/r/ff.nii");
  size_t one = 1;
  char *csv1 = psp_manifest_csv(m, &one, 1, &err);
  assert_non_null(strstr(csv1, "s2,e1"));
  assert_null(strstr(csv1, "s1,e1"));
  free(csv1);
  free(csv);
  psp_manifest_free(m2);
  psp_manifest_free(m);
}

static void touch(const char *dir, const char *name) {
  char p[2400];
  assert_true(psp_mkdir_p(dir, NULL));
  snprintf(p, sizeof p, "%s/%s", dir, name);
  FILE *f = fopen(p, "w");
  assert_non_null(f);
  fputs("x", f);
  fclose(f);
}

static void test_discover(void **state) {
  (void)state;
  char root[1024], d[1200];
  snprintf(root, sizeof root, "%s/discover", PSP_SCRATCH_DIR);
  psp_batch_remove_tree(root);
  snprintf(d, sizeof d, "%s/sub-01/anat", root);
  touch(d, "sub-01_water.nii.gz");
  touch(d, "sub-01_fat.nii.gz");
  touch(d, "sub-01_ff.nii.gz"); /* water+fat wins */
  snprintf(d, sizeof d, "%s/sub-02/ses-1/anat", root);
  touch(d, "sub-02_ses-1_inphase.nii");
  touch(d, "sub-02_ses-1_outphase.nii");
  snprintf(d, sizeof d, "%s/sub-02/ses-2/dicom", root);
  touch(d, "IM0001");
  snprintf(d, sizeof d, "%s/sub-03/anat", root);
  touch(d, "sub-03_water.nii.gz"); /* no fat */
  snprintf(d, sizeof d, "%s/sub-04/anat", root);
  touch(d, "sub-04_run-1_water.nii.gz");
  touch(d, "sub-04_run-2_water.nii.gz");
  touch(d, "sub-04_fat.nii.gz");
  snprintf(d, sizeof d, "%s/sub-05/anat", root);
  touch(d, "x_ff.nii");
  touch(d, "x_water.nii"); /* the FF map's water image (no fat) */
  snprintf(d, sizeof d, "%s/sub-b@d/anat", root);
  touch(d, "y_ff.nii");
  snprintf(d, sizeof d, "%s/other", root);
  touch(d, "z");
  psp_context *ctx = psp_context_create();
  psp_error *err = NULL;
  psp_manifest *m = psp_manifest_discover(root, ctx, &err);
  if (!m) fail_msg("%s", psp_error_message(err));
  assert_int_equal(psp_manifest_row_count(m), 6);
  assert_int_equal(psp_context_warning_count(ctx), 1); /* sub-b@d */
  const psp_manifest_row *r = psp_manifest_row_at(m, 0);
  assert_string_equal(r->subject, "sub-01");
  assert_string_equal(r->session, "");
  assert_int_equal(r->kind, PSP_INPUT_WATER_FAT);
  assert_non_null(strstr(r->water, "/sub-01/anat/sub-01_water.nii.gz"));
  assert_true(r->water[0] == '/');
  r = psp_manifest_row_at(m, 1);
  assert_string_equal(r->session, "ses-1");
  assert_int_equal(r->kind, PSP_INPUT_IPOP);
  r = psp_manifest_row_at(m, 2);
  assert_string_equal(r->session, "ses-2");
  assert_int_equal(r->kind, PSP_INPUT_DICOM);
  assert_non_null(strstr(r->dicom, "/sub-02/ses-2/dicom"));
  r = psp_manifest_row_at(m, 3);
  assert_int_equal(r->kind, PSP_INPUT_NONE);
  assert_non_null(strstr(r->problem, "no complete input"));
  r = psp_manifest_row_at(m, 4);
  assert_int_equal(r->kind, PSP_INPUT_NONE);
  assert_non_null(strstr(r->problem, "2 files end in _water"));
  r = psp_manifest_row_at(m, 5);
  assert_int_equal(r->kind, PSP_INPUT_FF);
  assert_non_null(strstr(r->water, "/sub-05/anat/x_water.nii"));
  assert_null(r->fat);
  /* problem rows are left out of the CSV */
  char *csv = psp_manifest_csv(m, NULL, 0, &err);
  assert_null(strstr(csv, "sub-03"));
  assert_non_null(strstr(csv, "sub-05"));
  free(csv);
  psp_manifest_free(m);
  psp_context_free(ctx);

  snprintf(d, sizeof d, "%s/other", root);
  assert_null(psp_manifest_discover(d, NULL, &err));
  assert_int_equal(psp_error_code(err), PSP_ERR_IO);
  assert_non_null(strstr(psp_error_message(err), "no sub-* folders"));
  psp_error_free(err);
  err = NULL;
  assert_null(psp_manifest_discover("/nonexistent/xyz", NULL, &err));
  assert_int_equal(psp_error_code(err), PSP_ERR_IO);
  psp_error_free(err);
}

static void test_plan_and_select(void **state) {
  (void)state;
  int j, t;
  assert_true(psp_batch_plan(2, 8, 0, 0, &j, &t, NULL));
  assert_true(j == 2 && t == 1);
  assert_true(psp_batch_plan(8, 3, 0, 0, &j, &t, NULL));
  assert_true(j == 3 && t == 2);
  assert_true(psp_batch_plan(2, 1, 0, 0, &j, &t, NULL));
  assert_true(j == 1 && t == 2);
  assert_true(psp_batch_plan(8, 100, 0, 2, &j, &t, NULL));
  assert_true(j == 4 && t == 2);
  assert_true(psp_batch_plan(8, 100, 3, 0, &j, &t, NULL));
  assert_true(j == 3 && t == 2);
  psp_error *err = NULL;
  assert_false(psp_batch_plan(2, 8, 2, 2, &j, &t, &err));
  assert_int_equal(psp_error_code(err), PSP_ERR_USAGE);
  assert_non_null(strstr(psp_error_message(err), "oversubscribe"));
  psp_error_free(err);
  err = NULL;
  assert_false(psp_batch_plan(2, 8, 3, 0, &j, &t, &err));
  psp_error_free(err);

  psp_manifest *m = parse("subject,ff\na,x\nb,x\nc,x\nd,x\ne,x\nf,x\ng,x\n", "m.csv");
  size_t *rows = NULL, n = 0;
  assert_true(psp_batch_select(m, 1, 3, NULL, 0, &rows, &n, NULL));
  assert_int_equal(n, 2);
  assert_true(rows[0] == 1 && rows[1] == 4);
  free(rows);
  /* shards partition the manifest */
  size_t total = 0;
  for (int s = 0; s < 3; s++) {
    assert_true(psp_batch_select(m, s, 3, NULL, 0, &rows, &n, NULL));
    total += n;
    free(rows);
  }
  assert_int_equal(total, 7);
  const char *only[] = {"f", "b"};
  assert_true(psp_batch_select(m, 0, 1, only, 2, &rows, &n, NULL));
  assert_true(n == 2 && rows[0] == 1 && rows[1] == 5); /* manifest order */
  free(rows);
  const char *nope[] = {"zz"};
  err = NULL;
  assert_false(psp_batch_select(m, 0, 1, nope, 1, &rows, &n, &err));
  assert_int_equal(psp_error_code(err), PSP_ERR_USAGE);
  psp_error_free(err);
  err = NULL;
  assert_false(psp_batch_select(m, 3, 3, NULL, 0, &rows, &n, &err));
  psp_error_free(err);
  psp_manifest_free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_basic_and_paths), cmocka_unit_test(test_quoting),
      cmocka_unit_test(test_syntax_errors),   cmocka_unit_test(test_row_errors),
      cmocka_unit_test(test_unsafe_ids),      cmocka_unit_test(test_duplicates),
      cmocka_unit_test(test_csv_roundtrip),   cmocka_unit_test(test_discover),
      cmocka_unit_test(test_plan_and_select),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
