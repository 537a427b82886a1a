/*
 * DESIGN: `paraspinal compare PRED TRUTH` — parses options, loads both label
 * maps (any scheme, mapped onto the project's labels 1..4), checks the grids
 * (different grids are an error naming both files and what differs; origins
 * that differ alone are a warning and the maps are compared voxel by voxel,
 * as happens with real exports), optionally builds an FF map, calls
 * psp_compare (method and references in src/measure/compare.c) and prints a
 * table, with the mean over labels 1..4 as a summary line, and/or writes CSV
 * atomically.
 */
#include "cli/cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/internal.h"

static const char *const CMD = "compare";

static void help(FILE *f) {
  fprintf(f, "Usage: paraspinal compare PRED TRUTH [options]\n"
             "\n"
             "Compares a predicted label map PRED with a reference label map TRUTH, per muscle\n"
             "(1 left multifidus, 2 right multifidus, 3 left erector spinae, 4 right erector\n"
             "spinae) and for all four muscles together as one foreground (label 0, 'all'):\n"
             "  dice           2|P and T| / (|P| + |T|); empty if both are empty, 0 if one is\n"
             "  hd95_mm        95th-percentile Hausdorff distance in mm. Surface voxels: mask\n"
             "                 voxels with a background 6-neighbour (3-D) or 4-neighbour\n"
             "                 (per-slice rows, in-plane); for each surface voxel of one mask\n"
             "                 the distance to the nearest surface voxel of the other (exact\n"
             "                 Euclidean distance transform with the voxel spacing);\n"
             "                 HD95 = max(95th percentile PRED->TRUTH, 95th percentile\n"
             "                 TRUTH->PRED), linear interpolation: the MONAI /\n"
             "                 DeepMind surface-distance convention. Empty if a mask is empty.\n"
             "  size_diff_pct  (PRED - TRUTH) / TRUTH x 100 of the volume (area for slices)\n"
             "  ff_diff_pp     mean voxel fat fraction inside PRED minus inside TRUTH, in\n"
             "                 percentage points (needs --water/--fat or --ff; voxels without\n"
             "                 signal are skipped)\n"
             "\n"
             "Options:\n"
             "  --pred-scheme S     label scheme of PRED: paraspinal (default), musclemap, lpm,\n"
             "                      or the path of a BIDS-style dseg TSV (index, name)\n"
             "  --truth-scheme S    label scheme of TRUTH (same choices)\n"
             "  --water FILE        water magnitude image (with --fat): FF = F / (F + W) as\n"
             "                      analyze computes it (the Rician noise-bias correction\n"
             "                      where the background gives the noise level)\n"
             "  --fat FILE          fat magnitude image (with --water)\n"
             "  --ff FILE           a precomputed fat-fraction map (needs --ff-unit); NaN\n"
             "                      voxels (no signal, as in analyze's fatfraction.nii.gz)\n"
             "                      are skipped\n"
             "  --ff-unit U         unit of --ff: fraction (0..1) or percent (0..100)\n"
             "  --per-slice         also compare every axial slice in 2-D\n"
             "  --csv FILE          write the whole-volume rows (with --per-slice also the\n"
             "                      slice rows) as CSV (atomically); '-' writes the CSV to\n"
             "                      standard output instead of the table\n"
             "  -t, --threads N     number of threads (default: all cores); results do not\n"
             "                      depend on it\n"
             "  -v, --verbose       progress messages on standard error\n"
             "  -h, --help          show this text\n"
             "\n"
             "Both maps (and the FF images) must share one grid: dimensions, spacing and axis\n"
             "directions. If only the origins differ, a warning names both and the maps are\n"
             "compared voxel by voxel. slice = internal axial index (0 = most inferior);\n"
             "file_slice = the slice index in TRUTH's file. The table shows '-' where a value\n"
             "is undefined; the CSV leaves it empty. 'mean 1-4' averages each column over the\n"
             "labels 1..4 where it is defined. Below it, 'Worst slices' gives per row the\n"
             "number of slices where either map has it, how many of them reach a 2-D Dice\n"
             "below 0.70 and 0.80 (an empty slice in one map counts as 0), and the three\n"
             "lowest as file_slice:dice (for any stack of two or more slices; the full\n"
             "per-slice table with --per-slice).\n"
             "CSV columns: label,name,slice,file_slice,n_pred,n_truth,n_both,dice,hd95_mm,\n"
             "size_diff_pct,ff_pred_pct,ff_truth_pct,ff_diff_pp (whole-volume rows have an\n"
             "empty slice).\n"
             "Exit codes: 0 ok, 2 usage, 3 I/O, 4 file format, 5 geometry, 6 voxel data\n"
             "(e.g. label values not in the scheme), 7 size limit, 8 out of memory.\n");
}

typedef struct compare_args {
  const char *pred, *truth;
  const char *pred_scheme, *truth_scheme;
  const char *water, *fat, *ff, *ff_unit;
  const char *csv;
  bool per_slice, verbose, help;
  long long threads;
} compare_args;

/* Returns 0 when parsed, else the exit code (usage error printed). */
static int parse_args(int argc, char **argv, compare_args *a) {
  memset(a, 0, sizeof *a);
  a->pred_scheme = a->truth_scheme = "paraspinal";
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
    if (!strcmp(arg, "--per-slice")) {
      a->per_slice = true;
      continue;
    }
    static const struct {
      const char *name, *alias;
      size_t offset;
    } opts[] = {
        {"--pred-scheme", NULL, offsetof(compare_args, pred_scheme)},
        {"--truth-scheme", NULL, offsetof(compare_args, truth_scheme)},
        {"--water", NULL, offsetof(compare_args, water)},
        {"--fat", NULL, offsetof(compare_args, fat)},
        {"--ff", NULL, offsetof(compare_args, ff)},
        {"--ff-unit", NULL, offsetof(compare_args, ff_unit)},
        {"--csv", NULL, offsetof(compare_args, csv)},
    };
    bool matched = false;
    for (size_t o = 0; o < sizeof opts / sizeof opts[0] && !matched; o++) {
      const char *val = NULL;
      int r = psp_cli_opt_value(argc, argv, &i, opts[o].name, opts[o].alias, &val);
      if (r < 0) return psp_cli_usage_error(CMD, "option %s needs a value", opts[o].name);
      if (r == 0) continue;
      if (!*val) return psp_cli_usage_error(CMD, "option %s needs a non-empty value", opts[o].name);
      *(const char **)((char *)a + opts[o].offset) = val;
      matched = true;
    }
    if (matched) continue;
    const char *tval = NULL;
    int r = psp_cli_opt_value(argc, argv, &i, "--threads", "-t", &tval);
    if (r < 0) return psp_cli_usage_error(CMD, "option --threads needs a value");
    if (r > 0) {
      if (!psp_cli_parse_int(tval, &a->threads) || a->threads < 0 || a->threads > 4096)
        return psp_cli_usage_error(CMD, "--threads: '%s' is not a thread count (0 = all cores)",
                                   tval);
      continue;
    }
    return psp_cli_usage_error(CMD, "unknown option '%s'", arg);
  }
  if (c.npos < 2)
    return psp_cli_usage_error(CMD, "expected two label maps: PRED TRUTH (got %d)", c.npos);
  a->pred = c.positional[0];
  a->truth = c.positional[1];
  if ((a->water != NULL) != (a->fat != NULL))
    return psp_cli_usage_error(CMD, "--water and --fat go together");
  if (a->ff && a->water)
    return psp_cli_usage_error(CMD, "give either --water/--fat or --ff, not both");
  if (a->ff && !a->ff_unit)
    return psp_cli_usage_error(CMD, "--ff needs --ff-unit fraction or --ff-unit percent");
  if (a->ff_unit && !a->ff) return psp_cli_usage_error(CMD, "--ff-unit needs --ff");
  if (a->ff_unit && strcmp(a->ff_unit, "fraction") != 0 && strcmp(a->ff_unit, "percent") != 0)
    return psp_cli_usage_error(CMD, "--ff-unit: '%s' is not 'fraction' or 'percent'", a->ff_unit);
  return 0;
}

/* A built-in scheme name, else a TSV path. */
static psp_scheme *load_scheme(const char *spec, psp_error **err) {
  psp_error *e = NULL;
  psp_scheme *s = psp_scheme_builtin(spec, &e);
  if (s) return s;
  struct stat st;
  size_t n = strlen(spec);
  bool path = strchr(spec, '/') || (n > 4 && !strcmp(spec + n - 4, ".tsv")) || stat(spec, &st) == 0;
  if (!path) {
    if (err && !*err) {
      *err = e;
      e = NULL;
    }
    psp_error_free(e);
    return NULL;
  }
  psp_error_free(e);
  return psp_scheme_load_tsv(spec, err);
}

/* Loads a raw label map and maps it onto the project's labels; a mapping
 * error names the option that chose the scheme. */
static psp_volume *load_labels(const char *path, const psp_scheme *s, const char *option,
                               const char *spec, psp_context *ctx, psp_error **err) {
  psp_volume *raw = psp_nifti_load(path, NULL, ctx, err);
  if (!raw) return NULL;
  psp_volume *v = psp_labels_map(raw, s, path, ctx, err);
  psp_volume_free(raw);
  if (!v) psp_error_prefix(err, "%s %s", option, spec);
  return v;
}

/* Grid check of b against a: error when different, warning when only the
 * origins differ. */
static bool check_grid(const psp_volume *a, const char *a_name, const psp_volume *b,
                       const char *b_name, psp_context *ctx, psp_error **err) {
  char why[512];
  switch (psp_grid_compare(a, b, why, sizeof why)) {
  case PSP_GRID_SAME:
    return true;
  case PSP_GRID_ORIGIN_DIFFERS:
    psp_warn(ctx, "%s and %s: %s; comparing voxel by voxel", a_name, b_name, why);
    return true;
  case PSP_GRID_DIFFERENT:
  default:
    return psp_error_set(err, PSP_ERR_GEOMETRY, "%s and %s are on different grids: %s", a_name,
                         b_name, why);
  }
}

static psp_ffmap *load_ff(const compare_args *a, const psp_volume *truth, psp_context *ctx,
                          psp_error **err) {
  psp_ffmap *m = NULL;
  if (a->ff) {
    /* NaN marks "no signal" in an FF map (analyze's fatfraction.nii.gz) */
    psp_load_options lo = {.volume_index = -1, .allow_nan = true};
    psp_volume *v = psp_nifti_load(a->ff, &lo, ctx, err);
    if (!v) return NULL;
    if (check_grid(v, a->ff, truth, a->truth, ctx, err))
      m = psp_ffmap_from_ff(v, strcmp(a->ff_unit, "percent") ? PSP_FF_FRACTION : PSP_FF_PERCENT,
                            ctx, err);
    psp_volume_free(v);
    return m;
  }
  psp_volume *w = psp_nifti_load(a->water, NULL, ctx, err);
  psp_volume *f = w ? psp_nifti_load(a->fat, NULL, ctx, err) : NULL;
  /* water against fat is psp_ffmap_from_water_fat's check */
  if (f && check_grid(w, a->water, truth, a->truth, ctx, err)) {
    psp_dixon_options o;
    psp_dixon_options_default(&o);
    m = psp_ffmap_from_water_fat(w, f, &o, ctx, err);
  }
  psp_volume_free(w);
  psp_volume_free(f);
  return m;
}

static void cell(char *out, size_t n, double v, int decimals) {
  psp_fmt_num(out, n, v, decimals);
  if (!out[0]) snprintf(out, n, "-");
}

static void print_header(bool slices, bool ff) {
  printf("%-8s", "label");
  if (slices) printf(" %5s %5s", "slice", "file");
  printf(" %8s %8s %7s %8s %9s", "n_pred", "n_truth", "dice", "hd95_mm", "size_%");
  if (ff) printf(" %9s %9s %8s", "ff_pred%", "ff_truth%", "ff_pp");
  printf("\n");
}

static void print_row(const char *name, const psp_compare_row *r, bool slices, bool ff) {
  char d[32], h[32], s[32], fp[32], ft[32], fd[32];
  cell(d, sizeof d, r->dice, 4);
  cell(h, sizeof h, r->hd95_mm, 2);
  cell(s, sizeof s, r->size_diff_pct, 1);
  printf("%-8s", name);
  if (slices) printf(" %5lld %5lld", (long long)r->slice, (long long)r->file_slice);
  if (r->n_pred < 0) /* summary line: no counts */
    printf(" %8s %8s", "", "");
  else
    printf(" %8lld %8lld", (long long)r->n_pred, (long long)r->n_truth);
  printf(" %7s %8s %9s", d, h, s);
  if (ff) {
    cell(fp, sizeof fp, r->ff_pred_pct, 2);
    cell(ft, sizeof ft, r->ff_truth_pct, 2);
    cell(fd, sizeof fd, r->ff_diff_pp, 2);
    printf(" %9s %9s %8s", fp, ft, fd);
  }
  printf("\n");
}

static const char *row_name(int label) {
  const char *n = label == 0 ? "all" : psp_label_abbrev(label);
  return n ? n : "?";
}

/* Mean of each metric over labels 1..4 where it is defined. */
static psp_compare_row mean_over_labels(const psp_comparison *c) {
  psp_compare_row m;
  memset(&m, 0, sizeof m);
  m.n_pred = m.n_truth = m.n_both = -1;
  double *dst[5] = {&m.dice, &m.hd95_mm, &m.size_diff_pct, &m.ff_pred_pct, &m.ff_truth_pct};
  for (int f = 0; f < 5; f++) {
    double sum = 0;
    int n = 0;
    for (size_t i = 0; i < psp_comparison_row_count(c); i++) {
      const psp_compare_row *r = psp_comparison_row(c, i);
      if (r->slice >= 0 || r->label == 0) continue;
      const double src[5] = {r->dice, r->hd95_mm, r->size_diff_pct, r->ff_pred_pct,
                             r->ff_truth_pct};
      if (!isnan(src[f])) {
        sum += src[f];
        n++;
      }
    }
    *dst[f] = n ? sum / n : NAN;
  }
  /* the mean difference over labels with FF in both maps */
  double sum = 0;
  int n = 0;
  for (size_t i = 0; i < psp_comparison_row_count(c); i++) {
    const psp_compare_row *r = psp_comparison_row(c, i);
    if (r->slice < 0 && r->label != 0 && !isnan(r->ff_diff_pp)) {
      sum += r->ff_diff_pp;
      n++;
    }
  }
  m.ff_diff_pp = n ? sum / n : NAN;
  return m;
}

/* The slices' 2-D Dice per row (muscles, then all): how many slices have
 * the label in either map, how many of them fall below 0.70 and 0.80, and
 * the WORST_N lowest (ties: the lower slice first). Nothing for a single
 * slice, where the whole-volume rows say it all. */
enum { WORST_N = 3 };
static void print_worst(const psp_comparison *c, int64_t nz) {
  size_t n = psp_comparison_row_count(c);
  if (nz < 2) return;
  printf("\nWorst slices (2-D Dice in-plane, over the slices where either map has the label;\n"
         "an empty slice in one map counts as 0):\n");
  printf("%-8s %6s %6s %6s   %s\n", "label", "slices", "<0.70", "<0.80",
         "lowest (file_slice:dice)");
  for (int pass = 0; pass < 2; pass++)
    for (int label = pass ? 0 : 1; label <= (pass ? 0 : PSP_LABEL_COUNT - 1); label++) {
      const psp_compare_row *w[WORST_N] = {NULL};
      int64_t ns = 0, b70 = 0, b80 = 0;
      for (size_t i = 0; i < n; i++) {
        const psp_compare_row *r = psp_comparison_row(c, i);
        if (r->slice < 0 || r->label != label || isnan(r->dice)) continue;
        ns++;
        b70 += r->dice < 0.70;
        b80 += r->dice < 0.80;
        /* insert into the sorted WORST_N (rows come in slice order) */
        for (int q = 0; q < WORST_N; q++)
          if (!w[q] || r->dice < w[q]->dice) {
            for (int t = WORST_N - 1; t > q; t--)
              w[t] = w[t - 1];
            w[q] = r;
            break;
          }
      }
      if (!ns) continue;
      char nm[16]; /* "MF_L:": the whole-volume table's rows alone begin with the bare name */
      snprintf(nm, sizeof nm, "%s:", row_name(label));
      printf("%-8s %6lld %6lld %6lld  ", nm, (long long)ns, (long long)b70, (long long)b80);
      for (int q = 0; q < WORST_N && w[q]; q++)
        printf(" %lld:%.3f", (long long)w[q]->file_slice, w[q]->dice);
      printf("\n");
    }
}

static void print_table(const compare_args *a, const psp_comparison *c, const psp_volume *truth,
                        bool ff) {
  int64_t dims[3];
  double sp[3];
  psp_volume_dims(truth, dims);
  psp_volume_spacing(truth, sp);
  printf("pred:  %s (%s)\ntruth: %s (%s)\n", a->pred, a->pred_scheme, a->truth, a->truth_scheme);
  printf("grid:  %lld x %lld x %lld voxels of %.3g x %.3g x %.3g mm\n\n", (long long)dims[0],
         (long long)dims[1], (long long)dims[2], sp[0], sp[1], sp[2]);
  printf("Whole volume (3-D):\n");
  print_header(false, ff);
  size_t n = psp_comparison_row_count(c);
  /* muscles first, then all of them together, then the mean */
  for (int pass = 0; pass < 2; pass++)
    for (size_t i = 0; i < n; i++) {
      const psp_compare_row *r = psp_comparison_row(c, i);
      if (r->slice < 0 && (pass == 0) == (r->label != 0))
        print_row(row_name(r->label), r, false, ff);
    }
  psp_compare_row m = mean_over_labels(c);
  print_row("mean 1-4", &m, false, ff);
  print_worst(c, dims[2]);
  if (!a->per_slice) return;
  /* per-slice rows come in blocks of one slice: muscles first, then all */
  bool any_slice = false;
  for (size_t i = 0; i < n;) {
    const psp_compare_row *r = psp_comparison_row(c, i);
    if (r->slice < 0) {
      i++;
      continue;
    }
    if (!any_slice) {
      printf("\nPer slice (2-D, in-plane; size_%% is the area difference):\n");
      print_header(true, ff);
      any_slice = true;
    }
    size_t end = i;
    while (end < n && psp_comparison_row(c, end)->slice == r->slice)
      end++;
    for (int pass = 0; pass < 2; pass++)
      for (size_t b = i; b < end; b++) {
        const psp_compare_row *s = psp_comparison_row(c, b);
        if ((pass == 0) == (s->label != 0)) print_row(row_name(s->label), s, true, ff);
      }
    i = end;
  }
}

int psp_cmd_compare(int argc, char **argv) {
  compare_args a;
  int rc = parse_args(argc, argv, &a);
  if (rc) return rc;
  if (a.help) {
    help(stdout);
    return 0;
  }
  psp_context *ctx = psp_cli_context(CMD, a.verbose, (int)a.threads);
  if (!ctx) {
    fprintf(stderr, "paraspinal %s: error: out of memory\n", CMD);
    return PSP_ERR_NOMEM;
  }
  psp_error *err = NULL;
  psp_scheme *ps = NULL, *ts = NULL;
  psp_volume *pred = NULL, *truth = NULL;
  psp_ffmap *ff = NULL;
  psp_comparison *c = NULL;
  char *csv = NULL;
  bool ok = (ps = load_scheme(a.pred_scheme, &err)) && (ts = load_scheme(a.truth_scheme, &err));
  if (ok) {
    psp_info(ctx, "loading %s (scheme %s)", a.pred, psp_scheme_name(ps));
    ok = (pred = load_labels(a.pred, ps, "--pred-scheme", a.pred_scheme, ctx, &err)) != NULL;
  }
  if (ok) {
    psp_info(ctx, "loading %s (scheme %s)", a.truth, psp_scheme_name(ts));
    ok = (truth = load_labels(a.truth, ts, "--truth-scheme", a.truth_scheme, ctx, &err)) != NULL;
  }
  ok = ok && check_grid(pred, a.pred, truth, a.truth, ctx, &err);
  if (ok) { /* the worst slices, and the per-slice rows, give TRUTH's file slices */
    psp_orientation op = psp_volume_orientation(pred), ot = psp_volume_orientation(truth);
    if (op.file_axis[2] != ot.file_axis[2] || op.flip[2] != ot.flip[2])
      psp_warn(ctx,
               "%s and %s number their slices differently; file_slice follows %s (the reference)",
               a.pred, a.truth, a.truth);
  }
  if (ok && (a.ff || a.water)) ok = (ff = load_ff(&a, truth, ctx, &err)) != NULL;
  /* the slices are always compared (the table's worst slices); the CSV
   * holds them with --per-slice */
  if (ok) ok = (c = psp_compare(pred, truth, ff, true, ctx, &err)) != NULL;
  if (ok && a.csv) {
    csv = psp_comparison_csv(c, a.per_slice);
    if (!csv) {
      ok = psp_error_set(&err, PSP_ERR_NOMEM, "out of memory building the CSV");
    } else if (!strcmp(a.csv, "-")) {
      fputs(csv, stdout);
    } else {
      ok = psp_write_file_atomic(a.csv, csv, strlen(csv), &err);
      if (ok) psp_info(ctx, "wrote %s", a.csv);
    }
  }
  if (ok && !(a.csv && !strcmp(a.csv, "-"))) print_table(&a, c, truth, ff != NULL);
  if (ok && (fflush(stdout) != 0 || ferror(stdout)))
    ok = psp_error_set(&err, PSP_ERR_IO, "cannot write to standard output");
  free(csv);
  psp_comparison_free(c);
  psp_ffmap_free(ff);
  psp_volume_free(pred);
  psp_volume_free(truth);
  psp_scheme_free(ps);
  psp_scheme_free(ts);
  psp_context_free(ctx);
  return ok ? 0 : psp_cli_fail(CMD, err);
}
