/*
 * DESIGN: `paraspinal change BASELINE FOLLOWUP -o OUT` — the follow-up
 * question (is the patient recovering?). Parses options, reads the
 * levels.csv of both analyze output folders (or the two levels.csv files
 * given directly), calls psp_change_compute (matching rules and metrics in
 * src/measure/change.c), writes OUT/change.csv atomically and prints a
 * readable summary: per compared level the slices used in each run and, for
 * both sides together, the change of area, functional area and FF (and, for
 * vertebrae, of the segment); then every skipped level with the reason.
 * When no level is comparable, change.csv is still written (it lists the
 * skipped rows) and the command fails with exit code 6 and a message saying
 * why and what to do.
 */
#include "cli/cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/internal.h"
#include "measure/change.h"

static const char *const CMD = "change";

static void help(FILE *f) {
  fprintf(f, "Usage: paraspinal change BASELINE FOLLOWUP -o OUT [options]\n"
             "\n"
             "Compares two runs of 'paraspinal analyze' of the same patient (BASELINE and\n"
             "FOLLOWUP are their output folders, or directly their levels.csv files) per\n"
             "vertebral level x muscle (multifidus, erector_spinae, mf+es) x side (left,\n"
             "right, both), matched by level name:\n"
             "  at the level's slice (disc slice or mid-vertebral slice):\n"
             "    area_mm2, fcsa_mm2 (functional area), ff_mean_pct\n"
             "  over the vertebral segment (vertebrae only):\n"
             "    seg_area_mm2_mean, seg_fcsa_mm2_mean, seg_ff_mean_pct_mean, seg_volume_mm3\n"
             "  change_abs     = followup - baseline (FF in percentage points)\n"
             "  change_rel_pct = (followup - baseline) / |baseline| x 100\n"
             "\n"
             "A level is compared only if it was confidently named in both runs: anchored = 1\n"
             "and level_confidence >= --min-confidence in both. Relative names (D1, V1: no\n"
             "anchor in view) are never matched. Other levels are listed as skipped with the\n"
             "reason; so are values not measurable in a run, and segment volumes of a segment\n"
             "cut by the end of the stack (they depend on the field of view).\n"
             "\n"
             "Options:\n"
             "  -o, --out DIR          output folder (created if missing): DIR/change.csv\n"
             "  --min-confidence X     lowest level_confidence accepted in each run, 0..1\n"
             "                         (default 0.5)\n"
             "  -v, --verbose          progress messages on standard error\n"
             "  -h, --help             show this text\n"
             "\n"
             "change.csv (written atomically) columns: level,kind,muscle,side,metric,unit,\n"
             "baseline,followup,change_abs,change_rel_pct,status (ok or skipped),reason (why\n"
             "skipped; cautions on ok rows),baseline_file_slice_first,baseline_file_slice_last,\n"
             "followup_file_slice_first,followup_file_slice_last (the slices each value comes\n"
             "from, in each run's own file numbering: first = last for single-slice metrics),\n"
             "baseline_slice_distance_mm,followup_slice_distance_mm (single-slice metrics: how\n"
             "far the used slice is from the ideal position),baseline_level_confidence,\n"
             "followup_level_confidence. unit: mm2, mm3 or pct (change_abs of pct metrics is in\n"
             "percentage points). Empty cells mean 'not available', never zero.\n"
             "Standard output: a summary (side 'both'; left/right in change.csv).\n"
             "\n"
             "Exit codes: 0 ok, 2 usage, 3 I/O (missing folder or levels.csv, OUT not\n"
             "writable), 4 file format (bad levels.csv: the message names the file and line),\n"
             "6 no level comparable (change.csv is still written, listing the skipped levels),\n"
             "8 out of memory.\n");
}

typedef struct change_args {
  const char *base, *follow, *out;
  double min_conf;
  bool verbose, help;
} change_args;

/* Returns 0 when parsed, else the exit code (usage error printed). */
static int parse_args(int argc, char **argv, change_args *a) {
  memset(a, 0, sizeof *a);
  a->min_conf = 0.5;
  psp_cli_common c = {{NULL, NULL}, 0, false, false, false};
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    int common = psp_cli_common_arg(CMD, arg, &c);
    a->verbose = c.verbose;
    if (c.help) {
      a->help = true;
      return 0;
    }
    if (common == 1) continue;
    if (common) return common;
    const char *val = NULL;
    int r = psp_cli_opt_value(argc, argv, &i, "--out", "-o", &val);
    if (r < 0) return psp_cli_usage_error(CMD, "option --out needs a value");
    if (r > 0) {
      if (!*val) return psp_cli_usage_error(CMD, "option --out needs a non-empty value");
      a->out = val;
      continue;
    }
    r = psp_cli_opt_value(argc, argv, &i, "--min-confidence", NULL, &val);
    if (r < 0) return psp_cli_usage_error(CMD, "option --min-confidence needs a value");
    if (r > 0) {
      if (!psp_cli_parse_double(val, &a->min_conf) || !(a->min_conf >= 0 && a->min_conf <= 1))
        return psp_cli_usage_error(CMD, "--min-confidence: '%s' is not a number from 0 to 1", val);
      continue;
    }
    return psp_cli_usage_error(CMD, "unknown option '%s'", arg);
  }
  if (c.npos < 2)
    return psp_cli_usage_error(
        CMD, "expected two analyze output folders: BASELINE FOLLOWUP (got %d)", c.npos);
  a->base = c.positional[0];
  a->follow = c.positional[1];
  if (!a->out) return psp_cli_usage_error(CMD, "missing -o OUT (the output folder)");
  return 0;
}

/* A folder gives FOLDER/levels.csv; anything else is taken as the file. */
static psp_levels_table *load_run(const char *arg, const char *role, char *path, size_t n,
                                  psp_error **err) {
  struct stat st;
  snprintf(path, n, "%s", arg);
  if (stat(arg, &st) != 0) {
    psp_error_set(err, PSP_ERR_IO,
                  "%s: %s: no such folder or file (expected the output folder of "
                  "'paraspinal analyze', or its levels.csv)",
                  role, arg);
    return NULL;
  }
  if (S_ISDIR(st.st_mode) && !psp_path_join(path, n, arg, "levels.csv", err)) return NULL;
  psp_levels_table *t = psp_levels_table_load(path, err);
  if (!t) psp_error_prefix(err, "%s", role);
  return t;
}

static void fmt(char *out, size_t n, double v, int dec) {
  psp_fmt_num(out, n, v, dec);
  if (!out[0]) snprintf(out, n, "-");
}

static void fmt_signed(char *out, size_t n, double v, int dec) {
  if (!isfinite(v)) {
    snprintf(out, n, "-");
    return;
  }
  char t[40];
  psp_fmt_num(t, sizeof t, v, dec);
  snprintf(out, n, "%s%s", t[0] == '-' ? "" : "+", t);
}

/* The row of a level/muscle/side/metric (NULL when absent). */
static const psp_change_row *find(const psp_change *c, const psp_change_level *L,
                                  const char *muscle, const char *metric) {
  for (size_t i = 0; i < psp_change_row_count(c); i++) {
    const psp_change_row *r = psp_change_row_at(c, i);
    if (r->disc == L->disc && !strcmp(r->level, L->level) && !strcmp(r->muscle, muscle) &&
        !strcmp(r->side, "both") && !strcmp(r->metric, metric))
      return r;
  }
  return NULL;
}

/* "a -> b unit (+d unit2)" for one metric; rel: show the relative change. */
static void print_metric(const psp_change_row *r, const char *label, int dec, const char *unit,
                         bool rel) {
  char b[48], f[48], d[48];
  if (!r) {
    printf("  %s -", label);
    return;
  }
  fmt(b, sizeof b, r->baseline, dec);
  fmt(f, sizeof f, r->followup, dec);
  if (rel)
    fmt_signed(d, sizeof d, r->change_rel_pct, 1);
  else
    fmt_signed(d, sizeof d, r->change_abs, 2);
  printf("  %s %s -> %s %s (%s%s)", label, b, f, unit, d, rel ? " %" : " pp");
}

static void slice_range(char *out, size_t n, int64_t a, int64_t b) {
  if (a < 0)
    snprintf(out, n, "-");
  else if (a == b)
    snprintf(out, n, "%lld", (long long)a);
  else
    snprintf(out, n, "%lld-%lld", (long long)a, (long long)b);
}

static const char *anchoring(const psp_levels_table *t) {
  return psp_levels_table_row_count(t) == 0 ? "no levels: levels.csv has no rows"
         : psp_levels_table_anchored(t)     ? "anchored"
                                            : "not anchored: relative level names";
}

static void print_summary(const change_args *a, const char *bpath, const char *fpath,
                          const psp_levels_table *bt, const psp_levels_table *ft,
                          const psp_change *c) {
  static const char *const muscles[3] = {"multifidus", "erector_spinae", "mf+es"};
  size_t nl = psp_change_level_count(c), nc = psp_change_comparable_count(c);
  printf("baseline: %s (%s)\n", bpath, anchoring(bt));
  printf("followup: %s (%s)\n", fpath, anchoring(ft));
  printf("levels compared: %zu of %zu (level_confidence >= %.2f and anchored in both runs)\n", nc,
         nl, a->min_conf);
  if (nc > 0) {
    printf("\nChange from baseline to followup, both sides (left/right and every metric in "
           "change.csv):\n");
    for (size_t i = 0; i < nl; i++) {
      const psp_change_level *L = psp_change_level_at(c, i);
      if (!L->comparable) continue;
      char fb[24] = "-", ff[24] = "-"; /* -1: the level has no slice in the stack */
      if (L->base_file_slice >= 0) snprintf(fb, sizeof fb, "%lld", (long long)L->base_file_slice);
      if (L->follow_file_slice >= 0)
        snprintf(ff, sizeof ff, "%lld", (long long)L->follow_file_slice);
      printf("%s (%s): file slice %s (baseline) / %s (followup), confidence %.3f / %.3f\n",
             L->level, L->disc ? "disc" : "vertebra", fb, ff, L->base_conf, L->follow_conf);
      for (int m = 0; m < 3; m++) {
        printf("  %-15s", muscles[m]);
        print_metric(find(c, L, muscles[m], "area_mm2"), "area", 1, "mm2", true);
        print_metric(find(c, L, muscles[m], "fcsa_mm2"), "fCSA", 1, "mm2", true);
        print_metric(find(c, L, muscles[m], "ff_mean_pct"), "FF", 2, "%", false);
        printf("\n");
      }
      if (L->disc) continue;
      char sb[48], sf[48];
      slice_range(sb, sizeof sb, L->base_seg_first, L->base_seg_last);
      slice_range(sf, sizeof sf, L->follow_seg_first, L->follow_seg_last);
      printf("  segment: file slices %s (baseline) / %s (followup)\n", sb, sf);
      for (int m = 0; m < 3; m++) {
        printf("  %-15s", muscles[m]);
        print_metric(find(c, L, muscles[m], "seg_ff_mean_pct_mean"), "FF mean", 2, "%", false);
        const psp_change_row *v = find(c, L, muscles[m], "seg_volume_mm3");
        if (v && !v->ok)
          printf("  volume: skipped (%s)", v->reason[0] ? v->reason : "see change.csv");
        else
          print_metric(v, "volume", 0, "mm3", true);
        printf("\n");
      }
    }
  }
  bool any = false;
  for (size_t i = 0; i < nl; i++) {
    const psp_change_level *L = psp_change_level_at(c, i);
    if (L->comparable) continue;
    if (!any) printf("\nSkipped levels (listed in change.csv with status 'skipped'):\n");
    any = true;
    printf("  %s (%s): %s\n", L->level, L->disc ? "disc" : "vertebra", L->reason);
  }
}

int psp_cmd_change(int argc, char **argv) {
  change_args a;
  int rc = parse_args(argc, argv, &a);
  if (rc) return rc;
  if (a.help) {
    help(stdout);
    return 0;
  }
  psp_context *ctx = psp_cli_context(CMD, a.verbose, 0);
  if (!ctx) {
    fprintf(stderr, "paraspinal %s: error: out of memory\n", CMD);
    return PSP_ERR_NOMEM;
  }
  psp_error *err = NULL;
  char bpath[4096], fpath[4096], outpath[4096];
  psp_levels_table *bt = NULL, *ft = NULL;
  psp_change *c = NULL;
  char *csv = NULL;
  bool ok = (bt = load_run(a.base, "baseline", bpath, sizeof bpath, &err)) != NULL &&
            (ft = load_run(a.follow, "followup", fpath, sizeof fpath, &err)) != NULL;
  if (ok) {
    psp_info(ctx, "read %s (%zu rows) and %s (%zu rows)", bpath, psp_levels_table_row_count(bt),
             fpath, psp_levels_table_row_count(ft));
    psp_change_options o;
    psp_change_options_default(&o);
    o.min_confidence = a.min_conf;
    ok = (c = psp_change_compute(bt, ft, &o, &err)) != NULL;
  }
  ok = ok && (csv = psp_change_csv(c, &err)) != NULL;
  ok = ok && psp_mkdir_p(a.out, &err) &&
       psp_path_join(outpath, sizeof outpath, a.out, "change.csv", &err) &&
       psp_write_file_atomic(outpath, csv, strlen(csv), &err);
  if (ok) {
    print_summary(&a, bpath, fpath, bt, ft, c);
    printf("\nwrote %s (%zu rows)\n", outpath, psp_change_row_count(c));
    if (fflush(stdout) != 0 || ferror(stdout))
      ok = psp_error_set(&err, PSP_ERR_IO, "cannot write to standard output");
  }
  if (ok && psp_change_comparable_count(c) == 0)
    ok = psp_error_set(&err, PSP_ERR_DATA, "%s (change.csv lists the skipped levels)",
                       psp_change_none_reason(c));
  free(csv);
  psp_change_free(c);
  psp_levels_table_free(bt);
  psp_levels_table_free(ft);
  psp_context_free(ctx);
  return ok ? 0 : psp_cli_fail(CMD, err);
}
