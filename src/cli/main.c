/*
 * DESIGN: entry point and subcommand dispatch; shared CLI helpers (error
 * printing, the stderr logger, number parsing).
 */
#include "cli/cli.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
  fprintf(f,
          "paraspinal %s — paraspinal muscle area and fat fraction from lumbar Dixon MRI\n"
          "\n"
          "Usage: paraspinal <command> [options]\n"
          "\n"
          "Commands:\n"
          "  analyze   measure multifidus and erector spinae per slice and side\n"
          "  ffmap     write the fat-fraction map of a Dixon scan as NIfTI\n"
          "  compare   Dice, HD95, area and FF differences between two label maps\n"
          "  change    follow-up: per-level change of area and FF between two analyze runs\n"
          "  phantom   make a synthetic lumbar Dixon phantom with known truth (NIfTI or DICOM)\n"
          "  dicominfo list a DICOM folder's series, their Dixon type and the pair analyze uses\n"
          "  batch     analyse a cohort (manifest or BIDS-like tree), resumable, cohort tables\n"
          "\n"
          "Run 'paraspinal <command> --help' for the options of a command.\n"
          "Exit codes: 0 ok, 1 internal error, 2 usage, 3 I/O, 4 file format, 5 geometry,\n"
          "6 voxel data, 7 size limit, 8 out of memory, 9 not supported.\n",
          psp_version());
}

int main(int argc, char **argv) {
  /* a file-size limit (ulimit -f) must fail the write with EFBIG and a
   * message, not kill the process half-way through its outputs */
  signal(SIGXFSZ, SIG_IGN);
  psp_memory_policy();
  if (argc < 2) {
    usage(stderr);
    return PSP_ERR_USAGE;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
    usage(stdout);
    return 0;
  }
  if (!strcmp(cmd, "--version")) {
    printf("paraspinal %s\n", psp_version());
    return 0;
  }
  if (!strcmp(cmd, "analyze")) return psp_cmd_analyze(argc - 1, argv + 1);
  if (!strcmp(cmd, "ffmap")) return psp_cmd_ffmap(argc - 1, argv + 1);
  if (!strcmp(cmd, "compare")) return psp_cmd_compare(argc - 1, argv + 1);
  if (!strcmp(cmd, "change")) return psp_cmd_change(argc - 1, argv + 1);
  if (!strcmp(cmd, "phantom")) return psp_cmd_phantom(argc - 1, argv + 1);
  if (!strcmp(cmd, "dicominfo")) return psp_cmd_dicominfo(argc - 1, argv + 1);
  if (!strcmp(cmd, "batch")) return psp_cmd_batch(argc - 1, argv + 1);
  fprintf(stderr, "paraspinal: unknown command '%s'\n\n", cmd);
  usage(stderr);
  return PSP_ERR_USAGE;
}

int psp_cli_fail(const char *cmd, psp_error *err) {
  psp_status code = psp_error_code(err);
  fprintf(stderr, "paraspinal %s: error: %s\n", cmd,
          err ? psp_error_message(err) : "unknown error");
  psp_error_free(err);
  return code == PSP_OK ? PSP_ERR_INTERNAL : (int)code;
}

int psp_cli_usage_error(const char *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "paraspinal %s: error: ", cmd);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n(see 'paraspinal %s --help')\n", cmd);
  va_end(ap);
  return PSP_ERR_USAGE;
}

static void log_stderr(void *user, psp_log_level level, const char *msg) {
  const char *cmd = user;
  const char *tag = level == PSP_LOG_ERROR ? "error" : level == PSP_LOG_WARN ? "warning" : "info";
  fprintf(stderr, "paraspinal %s: %s: %s\n", cmd, tag, msg);
}

psp_context *psp_cli_context(const char *cmd, bool verbose, int threads) {
  psp_context *ctx = psp_context_create();
  if (!ctx) return NULL;
  psp_context_set_log(ctx, log_stderr, (void *)cmd, verbose ? PSP_LOG_DEBUG : PSP_LOG_WARN);
  if (threads > 0) psp_context_set_threads(ctx, threads);
  return ctx;
}

bool psp_cli_parse_int(const char *s, long long *out) {
  if (!s || !*s) return false;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || *end) return false;
  *out = v;
  return true;
}

bool psp_cli_parse_double(const char *s, double *out) {
  if (!s || !*s) return false;
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || *end) return false;
  *out = v;
  return true;
}

bool psp_cli_parse_geometry(const char *s, psp_geometry_source *out) {
  static const char *const names[] = {"auto",     "water", "fat",   "inphase",
                                      "outphase", "ff",    "labels"};
  for (int i = 0; i < (int)(sizeof names / sizeof *names); i++)
    if (!strcmp(s, names[i])) {
      *out = (psp_geometry_source)i;
      return true;
    }
  return false;
}

int psp_cli_run_option(const char *cmd, int opt, const char *arg, const psp_cli_run_opts *t) {
  switch (opt) {
  case PSP_CLI_OPT_NO_QC:
    *t->write_qc = false;
    return 0;
  case PSP_CLI_OPT_NO_NOISE:
    *t->noise_correction = false;
    return 0;
  case PSP_CLI_OPT_NOISE_FLOOR:
    if (!psp_cli_parse_double(arg, t->noise_floor) || !(*t->noise_floor >= 0) ||
        !isfinite(*t->noise_floor)) /* (NaN fails every comparison) */
      return psp_cli_usage_error(cmd, "--noise-floor needs a finite number >= 0, not '%s'", arg);
    return 0;
  case PSP_CLI_OPT_MAX_VOXELS:
    if (!psp_cli_parse_int(arg, t->max_voxels) || *t->max_voxels <= 0)
      return psp_cli_usage_error(cmd, "--max-voxels needs a positive integer, not '%s'", arg);
    return 0;
  case PSP_CLI_OPT_GEOM:
    if (!psp_cli_parse_geometry(arg, t->geometry_from))
      return psp_cli_usage_error(
          cmd, "--geometry-from must be auto, water, fat, inphase, outphase, ff or labels");
    return 0;
  default:
    return -1;
  }
}

int psp_cli_common_arg(const char *cmd, const char *arg, psp_cli_common *c) {
  if (c->only_positional || arg[0] != '-' || !strcmp(arg, "-")) {
    if (c->npos >= 2) return psp_cli_usage_error(cmd, "unexpected extra argument '%s'", arg);
    c->positional[c->npos++] = arg;
    return 1;
  }
  if (!strcmp(arg, "--")) {
    c->only_positional = true;
    return 1;
  }
  if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
    c->help = true;
    return 1;
  }
  if (!strcmp(arg, "-v") || !strcmp(arg, "--verbose")) {
    c->verbose = true;
    return 1;
  }
  return 0;
}

int psp_cli_opt_value(int argc, char **argv, int *i, const char *name, const char *alias,
                      const char **val) {
  const char *a = argv[*i];
  size_t n = strlen(name);
  if (!strncmp(a, name, n) && a[n] == '=') {
    *val = a + n + 1;
    return 1;
  }
  if (strcmp(a, name) != 0 && !(alias && !strcmp(a, alias))) return 0;
  if (*i + 1 >= argc) return -1;
  *val = argv[++*i];
  return 1;
}
