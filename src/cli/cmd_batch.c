/*
 * DESIGN: `paraspinal batch`: parses options, loads the manifest (or
 * discovers a folder tree), and hands over to psp_batch_run /
 * psp_batch_aggregate (src/batch). Owns the terminal side only: a one-line
 * progress bar with ETA on a TTY, plain periodic lines otherwise, one line
 * per failed subject, the summary, and the exit code (0 all ok, 10 some
 * subjects failed, 128+signal when interrupted).
 */
#include "batch/batch.h"
#include "cli/cli.h"

#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char BATCH_HELP[] =
    "Usage: paraspinal batch (--manifest FILE | --discover DIR) -o OUT [options]\n"
    "       paraspinal batch --aggregate OUT [--manifest FILE]\n"
    "       paraspinal batch (--manifest FILE | --discover DIR) --list [--shard i/N] [--only S]\n"
    "\n"
    "Analyses a cohort: every subject (and session) of the manifest like `analyze`, into\n"
    "OUT/<subject>[/<session>]/, in parallel worker processes; then the cohort tables\n"
    "OUT/cohort_slices.csv, OUT/cohort_levels.csv, OUT/cohort_volumes.csv (every subject's\n"
    "rows with subject and session columns, in manifest order) and OUT/failures.csv\n"
    "(subject, session, stage, exit_code, status, message). A failed subject never stops\n"
    "the others.\n"
    "\n"
    "Input:\n"
    "  --manifest FILE        CSV with a header row: subject, session (optional), and per row\n"
    "                         exactly one of water+fat, inphase+outphase, ff (+ ff_unit) or\n"
    "                         dicom (+ series: \"UID,UID\" as analyze --series); optional\n"
    "                         labels, label_scheme, landmarks. Relative paths\n"
    "                         are relative to the manifest's folder. Subject/session ids: 1-64\n"
    "                         of [A-Za-z0-9._-], not starting with '.' (they become folders).\n"
    "  --discover DIR         BIDS-like tree: DIR/sub-X/[ses-Y/]anat/*_water + *_fat (else\n"
    "                         *_inphase + *_outphase, else *_ff) .nii[.gz], or\n"
    "                         DIR/sub-X/[ses-Y/]dicom/ (see README \"Batch\")\n"
    "Options:\n"
    "  -o, --out DIR          output folder\n"
    "  -j, --jobs N           subjects in parallel (worker processes); default: one per core,\n"
    "                         at most one per subject\n"
    "  -t, --threads N        OpenMP threads per job; default cores / jobs. jobs x threads may\n"
    "                         not exceed the cores (no oversubscription)\n"
    "  --resume               skip subjects whose output folder is complete and verified\n"
    "                         (completion record: inputs, settings and every output's SHA-256\n"
    "                         unchanged); all others (failed, interrupted, changed) run again\n"
    "  --shard i/N            only rows whose 0-based index modulo N is i (cluster array jobs);\n"
    "                         the tables are then cohort_slices.shard-i-of-N.csv etc.; merge\n"
    "                         with --aggregate\n"
    "  --only SUBJECT         only this subject (all its sessions); repeatable; writes no cohort\n"
    "                         tables (use --aggregate; this is how Snakemake jobs run)\n"
    "  --aggregate OUT        rebuild the cohort tables of OUT from its complete subject folders\n"
    "                         and failure records (manifest order with --manifest, else sorted)\n"
    "  --list                 print the selected rows as manifest CSV (absolute paths) and exit\n"
    "  --no-qc, --no-noise-correction, --noise-floor K, --max-voxels N, --geometry-from X\n"
    "                         as for analyze, for every subject\n"
    "  -q, --quiet            no progress and no summary (failed subjects are still reported)\n"
    "  -v, --verbose          also each subject's warnings and notes\n"
    "  -h, --help             this help\n"
    "\n"
    "Exit codes: 0 every subject ok (or skipped as complete), 10 some subjects failed or were\n"
    "not run (see failures.csv), 130/143 interrupted by SIGINT/SIGTERM (complete subjects are\n"
    "kept; run again with --resume), 2 usage, 3 I/O (manifest unreadable, OUT not writable),\n"
    "4 manifest format, 1 internal.\n";

enum {
  OPT_MANIFEST = 1000,
  OPT_DISCOVER,
  OPT_RESUME,
  OPT_SHARD,
  OPT_ONLY,
  OPT_AGGREGATE,
  OPT_LIST,
};

static const struct option LONG_OPTS[] = {
    {"manifest", required_argument, NULL, OPT_MANIFEST},
    {"discover", required_argument, NULL, OPT_DISCOVER},
    {"out", required_argument, NULL, 'o'},
    {"jobs", required_argument, NULL, 'j'},
    {"threads", required_argument, NULL, 't'},
    {"resume", no_argument, NULL, OPT_RESUME},
    {"shard", required_argument, NULL, OPT_SHARD},
    {"only", required_argument, NULL, OPT_ONLY},
    {"aggregate", required_argument, NULL, OPT_AGGREGATE},
    {"list", no_argument, NULL, OPT_LIST},
    PSP_CLI_RUN_LONG_OPTS,
    {"quiet", no_argument, NULL, 'q'},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

typedef struct progress_state {
  bool tty, quiet, verbose;
  double last_line_s;
  size_t last_line_done;
  bool bar_drawn;
} progress_state;

static void fmt_time(char *out, size_t n, double s) {
  if (s < 0 || !isfinite(s)) {
    snprintf(out, n, "?");
    return;
  }
  long t = (long)(s + 0.5);
  if (t >= 3600)
    snprintf(out, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
  else
    snprintf(out, n, "%ld:%02ld", t / 60, t % 60);
}

static void clear_bar(progress_state *ps) {
  if (ps->bar_drawn) fputs("\r\033[K", stderr);
  ps->bar_drawn = false;
}

static void on_progress(void *user, const psp_batch_progress *p) {
  progress_state *ps = user;
  size_t done = p->ok + p->skipped + p->failed;
  char who[300] = "";
  if (p->subject)
    snprintf(who, sizeof who, "%s%s%s", p->subject, p->session && p->session[0] ? "/" : "",
             p->session ? p->session : "");
  if (p->event == PSP_BATCH_FAILED) {
    clear_bar(ps);
    fprintf(stderr, "paraspinal batch: %s: failed (%s, exit %d %s): %s\n", who, p->stage, p->status,
            psp_status_name((psp_status)p->status), p->message ? p->message : "");
  } else if (ps->verbose && p->event == PSP_BATCH_OK) {
    clear_bar(ps);
    fprintf(stderr, "paraspinal batch: %s: done in %.1f s%s%s\n", who, p->subject_s,
            p->message ? "; " : "", p->message ? p->message : "");
  } else if (ps->verbose && p->event == PSP_BATCH_SKIPPED) {
    clear_bar(ps);
    fprintf(stderr, "paraspinal batch: %s: skipped (complete and verified)\n", who);
  }
  if (ps->quiet) return;
  char el[32], eta[32];
  fmt_time(el, sizeof el, p->elapsed_s);
  fmt_time(eta, sizeof eta, p->eta_s);
  if (p->event == PSP_BATCH_STARTED) {
    if (!ps->tty)
      fprintf(stderr, "paraspinal batch: %zu subjects, %d jobs x %d threads\n", p->total, p->jobs,
              p->threads);
    ps->last_line_s = p->elapsed_s;
  }
  if (ps->tty) {
    char bar[33];
    size_t w = 30, fill = p->total ? done * w / p->total : w;
    for (size_t i = 0; i < w; i++)
      bar[i] = i < fill ? '#' : '-';
    bar[w] = '\0';
    fprintf(stderr,
            "\r\033[K[%s] %zu/%zu  ok %zu  skipped %zu  failed %zu  running %zu  %s elapsed  "
            "ETA %s",
            bar, done, p->total, p->ok, p->skipped, p->failed, p->running, el, eta);
    fflush(stderr);
    ps->bar_drawn = true;
    return;
  }
  bool due = done >= ps->last_line_done + 10 || p->elapsed_s >= ps->last_line_s + 10.0;
  if (p->event != PSP_BATCH_STARTED && due && done < p->total) {
    fprintf(stderr,
            "paraspinal batch: %zu/%zu done (%zu ok, %zu skipped, %zu failed), %s elapsed, ETA "
            "%s\n",
            done, p->total, p->ok, p->skipped, p->failed, el, eta);
    ps->last_line_s = p->elapsed_s;
    ps->last_line_done = done;
  }
}

static void worker_log(void *user, psp_log_level level, const char *msg) {
  progress_state *ps = user;
  clear_bar(ps);
  const char *tag = level == PSP_LOG_ERROR ? "error" : level == PSP_LOG_WARN ? "warning" : "info";
  fprintf(stderr, "paraspinal batch: %s: %s\n", tag, msg);
}

static bool parse_shard(const char *s, int *i, int *n) {
  const char *slash = strchr(s, '/');
  if (!slash) return false;
  char a[32];
  size_t la = (size_t)(slash - s);
  if (la == 0 || la >= sizeof a) return false;
  memcpy(a, s, la);
  a[la] = '\0';
  long long x, y;
  if (!psp_cli_parse_int(a, &x) || !psp_cli_parse_int(slash + 1, &y)) return false;
  if (y < 1 || y > 1000000 || x < 0 || x >= y) return false;
  *i = (int)x;
  *n = (int)y;
  return true;
}

static int aggregate(const char *cmd, const char *out, const psp_manifest *m, bool quiet) {
  psp_batch_summary s;
  psp_error *err = NULL;
  if (!psp_batch_aggregate(out, m, &s, &err)) return psp_cli_fail(cmd, err);
  if (!quiet) {
    printf("aggregate: %zu subjects: %zu complete, %zu failed, %zu missing or not verified\n",
           s.total, s.ok, s.failed, s.not_run);
    printf("wrote %s/{%s,%s,%s,%s}\n", out, s.tables[0], s.tables[1], s.tables[2], s.tables[3]);
  }
  return (s.failed || s.not_run) ? PSP_BATCH_EXIT_SOME_FAILED : 0;
}

int psp_cmd_batch(int argc, char **argv) {
  const char *cmd = "batch";
  const char *manifest_path = NULL, *discover = NULL, *out = NULL, *agg = NULL;
  const char *only[256];
  size_t n_only = 0;
  long long jobs = 0, threads = 0, max_voxels = 0;
  int shard_i = 0, shard_n = 1;
  bool resume = false, list = false, quiet = false, verbose = false;
  psp_batch_settings settings;
  psp_batch_settings_default(&settings);
  optind = 1;
  opterr = 0;
  int c;
  const psp_cli_run_opts run = {&settings.write_qc, &settings.noise_correction,
                                &settings.noise_floor, &max_voxels, &settings.geometry_from};
  while ((c = getopt_long(argc, argv, ":o:j:t:qvh", LONG_OPTS, NULL)) != -1) {
    int shared = psp_cli_run_option(cmd, c, optarg, &run);
    if (shared > 0) return shared;
    if (shared == 0) {
      if (c == PSP_CLI_OPT_MAX_VOXELS) settings.max_voxels = max_voxels;
      continue;
    }
    switch (c) {
    case OPT_MANIFEST:
      manifest_path = optarg;
      break;
    case OPT_DISCOVER:
      discover = optarg;
      break;
    case 'o':
      out = optarg;
      break;
    case 'j':
      if (!psp_cli_parse_int(optarg, &jobs) || jobs < 1 || jobs > 4096)
        return psp_cli_usage_error(cmd, "--jobs needs a number from 1 to 4096, not '%s'", optarg);
      break;
    case 't':
      if (!psp_cli_parse_int(optarg, &threads) || threads < 1 || threads > 1024)
        return psp_cli_usage_error(cmd, "--threads needs a number from 1 to 1024, not '%s'",
                                   optarg);
      break;
    case OPT_RESUME:
      resume = true;
      break;
    case OPT_SHARD:
      if (!parse_shard(optarg, &shard_i, &shard_n))
        return psp_cli_usage_error(cmd, "--shard needs i/N with 0 <= i < N, not '%s'", optarg);
      break;
    case OPT_ONLY:
      if (n_only == sizeof only / sizeof only[0])
        return psp_cli_usage_error(cmd, "too many --only (at most 256)");
      if (!psp_batch_id_valid(optarg))
        return psp_cli_usage_error(cmd, "--only '%s' is not a valid subject id", optarg);
      only[n_only++] = optarg;
      break;
    case OPT_AGGREGATE:
      agg = optarg;
      break;
    case OPT_LIST:
      list = true;
      break;
    case 'q':
      quiet = true;
      break;
    case 'v':
      verbose = true;
      break;
    case 'h':
      fputs(BATCH_HELP, stdout);
      return 0;
    case ':':
      return psp_cli_usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
    default:
      return psp_cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind < argc) return psp_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
  if (manifest_path && discover)
    return psp_cli_usage_error(cmd, "give --manifest or --discover, not both");
  if (agg && (discover || out || list || resume || n_only || shard_n > 1))
    return psp_cli_usage_error(cmd, "--aggregate OUT takes only --manifest (and -q)");
  if (!agg && !manifest_path && !discover)
    return psp_cli_usage_error(cmd, "missing --manifest FILE or --discover DIR");
  if (!agg && !list && !out) return psp_cli_usage_error(cmd, "missing -o OUT");

  psp_context *ctx = psp_cli_context(cmd, verbose, 0);
  if (!ctx) return PSP_ERR_NOMEM;
  psp_error *err = NULL;
  psp_manifest *m = NULL;
  if (manifest_path)
    m = psp_manifest_load(manifest_path, &err);
  else if (discover)
    m = psp_manifest_discover(discover, ctx, &err);
  if ((manifest_path || discover) && !m) {
    psp_context_free(ctx);
    return psp_cli_fail(cmd, err);
  }
  int rc = 0;
  if (agg) {
    rc = aggregate(cmd, agg, m, quiet);
  } else if (list) {
    size_t *rows = NULL, n = 0;
    char *csv = NULL;
    if (!psp_batch_select(m, shard_i, shard_n, only, n_only, &rows, &n, &err) ||
        !(csv = psp_manifest_csv(m, rows, n, &err))) {
      rc = psp_cli_fail(cmd, err);
    } else {
      for (size_t k = 0; k < n; k++) {
        const psp_manifest_row *r = psp_manifest_row_at(m, rows[k]);
        if (r->kind == PSP_INPUT_NONE)
          fprintf(stderr, "paraspinal batch: warning: %s: left out: %s\n", r->subject, r->problem);
      }
      fputs(csv, stdout);
    }
    free(csv);
    free(rows);
  } else {
    progress_state ps = {.tty = isatty(STDERR_FILENO) == 1, .quiet = quiet, .verbose = verbose};
    psp_batch_options o = {
        .manifest = m,
        .out_dir = out,
        .jobs = (int)jobs,
        .threads = (int)threads,
        .shard_index = shard_i,
        .shard_count = shard_n,
        .only = only,
        .n_only = n_only,
        .resume = resume,
        .write_tables = n_only == 0,
        .settings = settings,
        .progress = on_progress,
        .progress_user = &ps,
        .worker_log = verbose ? worker_log : NULL,
        .worker_log_user = &ps,
        .worker_log_level = PSP_LOG_DEBUG,
    };
    psp_batch_summary s;
    if (!psp_batch_run(&o, &s, ctx, &err)) {
      clear_bar(&ps);
      rc = psp_cli_fail(cmd, err);
    } else {
      clear_bar(&ps);
      if (!quiet) {
        double per = s.ok ? s.busy_s / (double)s.ok : 0;
        size_t worked = s.ok + s.failed;
        printf(
            "batch: %zu subjects: %zu analysed, %zu skipped (complete and verified), %zu failed, "
            "%zu not run; %d jobs x %d threads; %.1f s",
            s.total, s.ok, s.skipped, s.failed, s.not_run, s.jobs, s.threads, s.elapsed_s);
        if (worked && s.elapsed_s > 0)
          printf(" (%.2f scans/s, %.2f s per subject in a worker)", (double)worked / s.elapsed_s,
                 per);
        printf("\n");
        if (s.tables[0][0])
          printf("wrote %s/{%s,%s,%s,%s}\n", out, s.tables[0], s.tables[1], s.tables[2],
                 s.tables[3]);
        if (s.signal)
          printf("interrupted by %s: complete subjects are kept; run again with --resume\n",
                 s.signal == SIGINT ? "SIGINT" : "SIGTERM");
      }
      if (s.signal)
        rc = 128 + s.signal;
      else if (s.failed || s.not_run)
        rc = PSP_BATCH_EXIT_SOME_FAILED;
    }
  }
  psp_manifest_free(m);
  psp_context_free(ctx);
  return rc;
}
