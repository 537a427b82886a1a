/*
 * cli.h — the command-line front end. Only src/cli knows argv, exit codes and
 * the terminal: each subcommand parses its options, calls the library, prints
 * errors as "paraspinal <cmd>: error: <message>" and returns the exit code
 * (the psp_status of the error, 0 on success; see README "Exit codes").
 */
#ifndef PSP_CLI_H
#define PSP_CLI_H

#include "paraspinal.h"

int psp_cmd_analyze(int argc, char **argv);
int psp_cmd_ffmap(int argc, char **argv);
int psp_cmd_phantom(int argc, char **argv);
int psp_cmd_compare(int argc, char **argv);
int psp_cmd_change(int argc, char **argv);
int psp_cmd_dicominfo(int argc, char **argv);
int psp_cmd_batch(int argc, char **argv);

/* Prints the error to stderr prefixed with the command name, frees it and
 * returns its exit code. */
int psp_cli_fail(const char *cmd, psp_error *err);
/* Prints a usage error and returns PSP_ERR_USAGE. */
int psp_cli_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Context with a stderr logger: warnings always, info when verbose. */
psp_context *psp_cli_context(const char *cmd, bool verbose, int threads);
/* If argv[*i] is option `name` (or `alias`), stores its value ("--name v" or
 * "--name=v") and returns 1; 0 if it is another option; -1 when the value is
 * missing. */
int psp_cli_opt_value(int argc, char **argv, int *i, const char *name, const char *alias,
                      const char **val);
/* The arguments every command with two positional arguments (compare,
 * change) treats alike: positionals (also after "--" and a lone "-"), -h /
 * --help and -v / --verbose. Returns 1 when argv[i] was one of them
 * (recorded in the struct), 0 when it is another option, or the usage exit
 * code (error printed) for a third positional. */
typedef struct psp_cli_common {
  const char *positional[2];
  int npos;
  bool only_positional, help, verbose;
} psp_cli_common;
int psp_cli_common_arg(const char *cmd, const char *arg, psp_cli_common *c);
/* The analysis settings analyze and batch share: getopt codes, their long
 * options (PSP_CLI_RUN_LONG_OPTS inside a struct option table) and where
 * each command keeps the values. */
enum {
  PSP_CLI_OPT_NO_QC = 900, /* below the commands' own codes (1000 and up) */
  PSP_CLI_OPT_NO_NOISE,
  PSP_CLI_OPT_NOISE_FLOOR,
  PSP_CLI_OPT_MAX_VOXELS,
  PSP_CLI_OPT_GEOM,
};
#define PSP_CLI_RUN_LONG_OPTS                                                                      \
  {"no-qc", no_argument, NULL, PSP_CLI_OPT_NO_QC},                                                 \
      {"no-noise-correction", no_argument, NULL, PSP_CLI_OPT_NO_NOISE},                            \
      {"noise-floor", required_argument, NULL, PSP_CLI_OPT_NOISE_FLOOR},                           \
      {"max-voxels", required_argument, NULL, PSP_CLI_OPT_MAX_VOXELS}, {                           \
    "geometry-from", required_argument, NULL, PSP_CLI_OPT_GEOM                                     \
  }
typedef struct psp_cli_run_opts {
  bool *write_qc, *noise_correction;
  double *noise_floor;
  long long *max_voxels;
  psp_geometry_source *geometry_from;
} psp_cli_run_opts;
/* Applies getopt result opt (value arg) if it is one of the shared
 * settings: returns 0 when applied, -1 when opt is another option, else
 * the usage exit code (error printed). */
int psp_cli_run_option(const char *cmd, int opt, const char *arg, const psp_cli_run_opts *t);
/* Parses a non-negative integer / a double; false on garbage. */
bool psp_cli_parse_int(const char *s, long long *out);
bool psp_cli_parse_double(const char *s, double *out);
/* --geometry-from NAME: auto, water, fat, inphase, outphase, ff or labels. */
bool psp_cli_parse_geometry(const char *s, psp_geometry_source *out);

#endif
