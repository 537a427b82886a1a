/*
 * DESIGN: unit tests of the follow-up comparison (src/measure/change.c) on
 * hand-written levels.csv texts: matching by level name with exact
 * absolute and relative changes, skipping of unanchored, relative-name and
 * low-confidence levels (with the reason, never dropped), --min-confidence,
 * a row or a level missing in one run, segment volumes of a cut segment,
 * header-name parsing (column order, extra columns, CRLF, BOM, quotes),
 * errors naming the file and line (truncated row, missing column, bad
 * number, duplicate row, bad kind), the "nothing comparable" reason and the
 * change.csv text.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "measure/change.h"

#define HDR                                                                                        \
  "level,kind,level_confidence,anchored,muscle,side,file_slice,slice_distance_mm,area_mm2,"        \
  "ff_mean_pct,fcsa_mm2,seg_first_file_slice,seg_last_file_slice,seg_n_slices,seg_complete,"       \
  "seg_area_mm2_mean,seg_ff_mean_pct_mean,seg_fcsa_mm2_mean,seg_volume_mm3\n"

static psp_levels_table *parse_ok(const char *text) {
  psp_error *err = NULL;
  psp_levels_table *t = psp_levels_table_parse(text, strlen(text), "test.csv", &err);
  if (!t) fail_msg("parse failed: %s", psp_error_message(err));
  return t;
}

/* Parses text expecting an error whose message contains `want`. */
static void parse_fails(const char *text, const char *want) {
  psp_error *err = NULL;
  psp_levels_table *t = psp_levels_table_parse(text, strlen(text), "bad.csv", &err);
  assert_null(t);
  assert_non_null(err);
  assert_int_equal(psp_error_code(err), PSP_ERR_FORMAT);
  if (!strstr(psp_error_message(err), want))
    fail_msg("message '%s' lacks '%s'", psp_error_message(err), want);
  assert_non_null(strstr(psp_error_message(err), "bad.csv"));
  psp_error_free(err);
}

static psp_change *compare(const char *a, const char *b, double min_conf) {
  psp_levels_table *ta = parse_ok(a), *tb = parse_ok(b);
  psp_change_options o;
  psp_change_options_default(&o);
  assert_true(fabs(o.min_confidence - 0.5) < 1e-12);
  if (min_conf >= 0) o.min_confidence = min_conf;
  psp_error *err = NULL;
  psp_change *c = psp_change_compute(ta, tb, &o, &err);
  if (!c) fail_msg("compute failed: %s", psp_error_message(err));
  psp_levels_table_free(ta);
  psp_levels_table_free(tb);
  return c;
}

static const psp_change_row *row(const psp_change *c, const char *level, const char *muscle,
                                 const char *side, const char *metric) {
  for (size_t i = 0; i < psp_change_row_count(c); i++) {
    const psp_change_row *r = psp_change_row_at(c, i);
    if (!strcmp(r->level, level) && !strcmp(r->muscle, muscle) && !strcmp(r->side, side) &&
        !strcmp(r->metric, metric))
      return r;
  }
  return NULL;
}

static const psp_change_level *level(const psp_change *c, const char *name) {
  for (size_t i = 0; i < psp_change_level_count(c); i++)
    if (!strcmp(psp_change_level_at(c, i)->level, name)) return psp_change_level_at(c, i);
  return NULL;
}

static const char *BASE =
    HDR "L4,vertebra,0.9,1,multifidus,left,17,1.0,1000,10,900,14,20,7,1,980,11,870,34000\n"
        "L4,vertebra,0.9,1,multifidus,right,17,1.0,800,20,640,14,20,7,1,790,21,624,27000\n"
        "L4/L5,disc,0.9,1,multifidus,left,13,0.5,1200,12,1056,,,,,,,,\n"
        "L5,vertebra,0.9,1,erector_spinae,both,9,0.2,2000,15,1700,6,11,6,0,1990,15,1690,60000\n";
static const char *FOLLOW =
    HDR "L4/L5,disc,0.8,1,multifidus,left,12,2.1,1100,15,935,,,,,,,,\n"
        "L4,vertebra,0.8,1,multifidus,left,16,0.4,900,15,765,13,19,6,1,880,16,739,30600\n"
        "L5,vertebra,0.8,1,erector_spinae,both,8,0.3,2000,15,1700,5,10,6,1,1990,15,1690,61000\n"
        "L3,vertebra,0.8,1,multifidus,left,25,0.0,700,9,637,22,28,7,1,700,9,637,24500\n";

/* Matched rows: absolute and relative change, slices of each run. */
static void test_matching(void **state) {
  (void)state;
  psp_change *c = compare(BASE, FOLLOW, -1);
  const psp_change_row *r = row(c, "L4", "multifidus", "left", "area_mm2");
  assert_non_null(r);
  assert_true(r->ok);
  assert_false(r->disc);
  assert_true(fabs(r->change_abs - -100.0) < 1e-9);
  assert_true(fabs(r->change_rel_pct - -10.0) < 1e-9);
  assert_int_equal(r->base_first, 17);
  assert_int_equal(r->base_last, 17);
  assert_int_equal(r->follow_first, 16);
  assert_true(fabs(r->follow_dist_mm - 0.4) < 1e-9);
  r = row(c, "L4", "multifidus", "left", "ff_mean_pct");
  assert_true(r->ok);
  assert_true(fabs(r->change_abs - 5.0) < 1e-9);      /* percentage points */
  assert_true(fabs(r->change_rel_pct - 50.0) < 1e-9); /* relative % */
  assert_string_equal(r->unit, "pct");
  r = row(c, "L4", "multifidus", "left", "seg_volume_mm3");
  assert_true(r->ok);
  assert_true(fabs(r->change_rel_pct - -10.0) < 1e-9);
  assert_int_equal(r->base_first, 14);
  assert_int_equal(r->base_last, 20);
  assert_int_equal(r->follow_first, 13);
  assert_int_equal(r->follow_last, 19);
  assert_non_null(strstr(r->reason, "7 slices in the baseline run, 6"));
  r = row(c, "L4", "multifidus", "left", "seg_ff_mean_pct_mean");
  assert_true(fabs(r->change_abs - 5.0) < 1e-9);
  /* discs: single-slice metrics only */
  r = row(c, "L4/L5", "multifidus", "left", "fcsa_mm2");
  assert_true(r->ok);
  assert_true(r->disc);
  assert_true(fabs(r->change_abs - -121.0) < 1e-9);
  assert_null(row(c, "L4/L5", "multifidus", "left", "seg_volume_mm3"));
  /* order: inferior to superior */
  assert_string_equal(psp_change_level_at(c, 0)->level, "L5");
  assert_string_equal(psp_change_level_at(c, 1)->level, "L4/L5");
  assert_string_equal(psp_change_level_at(c, 2)->level, "L4");
  assert_string_equal(psp_change_level_at(c, 3)->level, "L3");
  assert_int_equal(psp_change_comparable_count(c), 3);
  psp_change_free(c);
}

/* A row or a level in one run only: skipped with the reason. A segment cut
 * by the stack: volume skipped, means compared with a caution. */
static void test_missing(void **state) {
  (void)state;
  psp_change *c = compare(BASE, FOLLOW, -1);
  const psp_change_row *r = row(c, "L4", "multifidus", "right", "area_mm2");
  assert_non_null(r);
  assert_false(r->ok);
  assert_true(isnan(r->change_abs));
  assert_true(fabs(r->baseline - 800) < 1e-9);
  assert_true(isnan(r->followup));
  assert_non_null(strstr(r->reason, "no followup row"));
  r = row(c, "L3", "multifidus", "left", "area_mm2");
  assert_false(r->ok);
  assert_non_null(strstr(r->reason, "not in the baseline run"));
  assert_false(level(c, "L3")->comparable);
  r = row(c, "L5", "erector_spinae", "both", "seg_volume_mm3");
  assert_false(r->ok);
  assert_non_null(strstr(r->reason, "segment incomplete in the baseline run"));
  r = row(c, "L5", "erector_spinae", "both", "seg_area_mm2_mean");
  assert_true(r->ok);
  assert_non_null(strstr(r->reason, "caution"));
  r = row(c, "L5", "erector_spinae", "both", "area_mm2");
  assert_true(r->ok);
  assert_string_equal(r->reason, "");
  assert_true(fabs(r->change_rel_pct) < 1e-12);
  psp_change_free(c);
}

/* Unanchored, relative-name and low-confidence levels are refused. */
static void test_skipping(void **state) {
  (void)state;
  const char *a = HDR "L4/L5,disc,0.9,1,multifidus,left,13,0,1000,10,900,,,,,,,,\n"
                      "L3/L4,disc,0.9,1,multifidus,left,21,0,1000,10,900,,,,,,,,\n"
                      "L2/L3,disc,0.9,1,multifidus,left,29,0,1000,10,900,,,,,,,,\n"
                      "D1,disc,0.9,1,multifidus,left,5,0,1000,10,900,,,,,,,,\n";
  const char *b = HDR "L4/L5,disc,0.4,1,multifidus,left,13,0,1100,10,990,,,,,,,,\n"
                      "L3/L4,disc,0.9,0,multifidus,left,21,0,1100,10,990,,,,,,,,\n"
                      "L2/L3,disc,0.5,1,multifidus,left,29,0,1100,10,990,,,,,,,,\n"
                      "D1,disc,0.9,1,multifidus,left,5,0,1100,10,990,,,,,,,,\n";
  psp_change *c = compare(a, b, -1);
  const psp_change_row *r = row(c, "L4/L5", "multifidus", "left", "area_mm2");
  assert_false(r->ok);
  assert_non_null(strstr(r->reason, "confidence 0.400 < 0.50 in the followup run"));
  assert_true(fabs(r->baseline - 1000) < 1e-9); /* values still shown */
  assert_true(fabs(r->followup - 1100) < 1e-9);
  r = row(c, "L3/L4", "multifidus", "left", "area_mm2");
  assert_false(r->ok);
  assert_non_null(strstr(r->reason, "not anchored in the followup run"));
  r = row(c, "D1", "multifidus", "left", "area_mm2");
  assert_false(r->ok); /* relative names never match, whatever the file says */
  assert_non_null(strstr(r->reason, "relative name"));
  r = row(c, "L2/L3", "multifidus", "left", "area_mm2"); /* 0.5 >= 0.5 */
  assert_true(r->ok);
  assert_true(fabs(r->change_rel_pct - 10.0) < 1e-9);
  assert_int_equal(psp_change_comparable_count(c), 1);
  psp_change_free(c);
  /* a lower threshold accepts L4/L5 */
  c = compare(a, b, 0.3);
  assert_true(row(c, "L4/L5", "multifidus", "left", "area_mm2")->ok);
  assert_int_equal(psp_change_comparable_count(c), 2);
  psp_change_free(c);
}

/* Nothing comparable: the reason says why and what to do. */
static void test_none_comparable(void **state) {
  (void)state;
  const char *a = HDR "L4/L5,disc,0.9,1,multifidus,left,13,0,1000,10,900,,,,,,,,\n";
  const char *rel = HDR "D1,disc,0.3,0,multifidus,left,5,0,1000,10,900,,,,,,,,\n"
                        "V1,vertebra,0.3,0,multifidus,left,9,0,1000,10,900,6,11,6,1,1,1,1,1\n";
  psp_change *c = compare(a, rel, -1);
  assert_int_equal(psp_change_comparable_count(c), 0);
  assert_int_equal(psp_change_level_count(c), 3);
  assert_non_null(strstr(psp_change_none_reason(c), "no level was confidently named in both"));
  assert_non_null(strstr(psp_change_none_reason(c), "followup run is not anchored"));
  assert_non_null(strstr(psp_change_none_reason(c), "--disc"));
  for (size_t i = 0; i < psp_change_row_count(c); i++)
    assert_false(psp_change_row_at(c, i)->ok);
  assert_non_null(strstr(level(c, "L4/L5")->reason, "not in the followup run (not anchored"));
  assert_non_null(strstr(level(c, "D1")->reason, "relative name in the followup run"));
  psp_change_free(c);
  const char *low = HDR "L4/L5,disc,0.2,1,multifidus,left,13,0,1000,10,900,,,,,,,,\n";
  c = compare(a, low, -1);
  assert_non_null(strstr(psp_change_none_reason(c), "level_confidence < 0.50"));
  psp_change_free(c);
  c = compare(a, HDR, -1);
  assert_non_null(strstr(psp_change_none_reason(c), "no rows"));
  psp_change_free(c);
}

/* Columns by name: another order, extra columns, CRLF, a BOM, quotes,
 * blank lines, no final newline. */
static void test_parse_robust(void **state) {
  (void)state;
  const char *t = "\xEF\xBB\xBF"
                  "extra,side,muscle,kind,level,anchored,level_confidence,seg_volume_mm3,"
                  "area_mm2,fcsa_mm2,ff_mean_pct,file_slice,slice_distance_mm,"
                  "seg_first_file_slice,seg_last_file_slice,seg_n_slices,seg_complete,"
                  "seg_area_mm2_mean,seg_ff_mean_pct_mean,seg_fcsa_mm2_mean\r\n"
                  "\"a, b\",left,multifidus,disc,\"L4/L5\",1,0.9,,1000,900,10,13,0.5,,,,,,,\r\n"
                  "\r\n"
                  "x,right,multifidus,vertebra,L4,1,0.9,123.5,800,700,12.5,17,1,14,20,7,1,1,2,3";
  psp_levels_table *a = parse_ok(t);
  assert_int_equal(psp_levels_table_row_count(a), 2);
  assert_true(psp_levels_table_anchored(a));
  psp_levels_table *b = parse_ok(t);
  psp_error *err = NULL;
  psp_change *c = psp_change_compute(a, b, NULL, &err);
  assert_non_null(c);
  const psp_change_row *r = row(c, "L4", "multifidus", "right", "seg_volume_mm3");
  assert_true(r->ok);
  assert_true(fabs(r->baseline - 123.5) < 1e-9);
  assert_true(fabs(r->change_abs) < 1e-12);
  r = row(c, "L4/L5", "multifidus", "left", "ff_mean_pct");
  assert_true(fabs(r->baseline - 10) < 1e-9);
  assert_int_equal(r->base_first, 13);
  /* the CSV */
  char *csv = psp_change_csv(c, &err);
  assert_non_null(csv);
  const char *head = "level,kind,muscle,side,metric,unit,baseline,followup,change_abs,"
                     "change_rel_pct,status,reason,baseline_file_slice_first,";
  assert_true(!strncmp(csv, head, strlen(head)));
  assert_non_null(strstr(csv, "\nL4/L5,disc,multifidus,left,area_mm2,mm2,1000.000,1000.000,"
                              "0.000,0.00,ok,,13,13,13,13,0.50,0.50,0.900,0.900\n"));
  free(csv);
  psp_change_free(c);
  psp_levels_table_free(a);
  psp_levels_table_free(b);
}

/* Bad CSV: the error names the file and the line. */
static void test_parse_errors(void **state) {
  (void)state;
  parse_fails(HDR "L4/L5,disc,0.9,1,multifidus,left,13,0,1000,10,900,,,,,,,,\n"
                  "L4,vertebra,0.9,1,multifidus,left,17,1.0,1000\n",
              "line 3: truncated row: 9 fields, the header has 19");
  parse_fails(HDR "L4/L5,disc,0.9,1,multifidus,left,13,0,1000,10,900,,,,,,,,,,\n",
              "line 2: malformed row: 21 fields");
  parse_fails("level,kind,muscle,side\nL4,vertebra,multifidus,left\n",
              "line 1: header has no column 'level_confidence'");
  parse_fails(HDR "L4/L5,disc,0.9,1,multifidus,left,13,0,abc,10,900,,,,,,,,\n",
              "line 2: column 'area_mm2': 'abc' is not a number");
  parse_fails(HDR "L4/L5,disc,0.9,1,multifidus,left,13,0,nan,10,900,,,,,,,,\n",
              "line 2: column 'area_mm2'");
  parse_fails(HDR "L4/L5,disc,0.9,1,multifidus,left,13,0,1,10,900,,,,,,,,\n"
                  "L4/L5,disc,0.9,1,multifidus,left,13,0,1,10,900,,,,,,,,\n",
              "line 3: duplicate row for L4/L5 multifidus left (first at line 2)");
  parse_fails(HDR "L4/L5,disk,0.9,1,multifidus,left,13,0,1,10,900,,,,,,,,\n",
              "line 2: kind 'disk'");
  parse_fails(HDR "L4/L5,disc,0.9,2,multifidus,left,13,0,1,10,900,,,,,,,,\n",
              "line 2: anchored '2'");
  parse_fails(HDR "L4/L5,disc,1.9,1,multifidus,left,13,0,1,10,900,,,,,,,,\n",
              "line 2: level_confidence '1.9'");
  parse_fails(HDR "L4/L5,disc,0.9,1,psoas,left,13,0,1,10,900,,,,,,,,\n", "line 2: muscle 'psoas'");
  parse_fails(HDR "\"L4/L5,disc,0.9,1,multifidus,left,13,0,1,10,900,,,,,,,,\n",
              "line 2: unterminated quoted field");
  parse_fails("level,level,kind\n", "line 1: column 'level' appears twice");
  parse_fails("", "empty file");
  /* a missing file */
  psp_error *err = NULL;
  assert_null(psp_levels_table_load("/nonexistent/levels.csv", &err));
  assert_int_equal(psp_error_code(err), PSP_ERR_IO);
  assert_non_null(strstr(psp_error_message(err), "/nonexistent/levels.csv"));
  psp_error_free(err);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_matching),     cmocka_unit_test(test_missing),
      cmocka_unit_test(test_skipping),     cmocka_unit_test(test_none_comparable),
      cmocka_unit_test(test_parse_robust), cmocka_unit_test(test_parse_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
