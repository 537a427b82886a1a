/*
 * batch.h — cohort runs (internal; the manifest API is public in
 * paraspinal.h). batch.c runs the subjects in forked worker processes,
 * record.c writes and verifies the per-subject completion records and
 * failure records, cohort.c builds the cohort tables. Only the CLI
 * (src/cli/cmd_batch.c) and the tests use this header.
 *
 * OUT layout:
 *   OUT/<subject>[/<session>]/          the analyze outputs + .paraspinal-done.json
 *   OUT/cohort_slices.csv, cohort_levels.csv, cohort_volumes.csv, failures.csv
 *   OUT/.paraspinal-failed/<subject>+<session>.json   failure records
 *   OUT/.tmp-<subject>+<session>+<pid>/  a subject being written (removed
 *   OUT/.old-<subject>+<session>+<pid>/  ... or being replaced; stale ones are
 *                                        removed when a run starts)
 */
#ifndef PSP_BATCH_H
#define PSP_BATCH_H

#include "paraspinal.h"

/* Exit status of `paraspinal batch` when it finished but some subjects
 * failed (distinct from every psp_status). */
#define PSP_BATCH_EXIT_SOME_FAILED 10

#define PSP_DONE_RECORD ".paraspinal-done.json"
#define PSP_FAILED_DIR ".paraspinal-failed"
/* cohort_slices, cohort_levels, cohort_volumes and failures (.csv) */
#define PSP_COHORT_TABLES 4

/* Batch-wide analysis settings (the same for every row). */
typedef struct psp_batch_settings {
  bool write_qc;
  bool noise_correction;
  double noise_floor;
  int64_t max_voxels; /* 0 = library default */
  psp_geometry_source geometry_from;
} psp_batch_settings;

void psp_batch_settings_default(psp_batch_settings *s);

typedef enum psp_batch_event {
  PSP_BATCH_TICK = 0,    /* periodic (about once a second) */
  PSP_BATCH_OK = 1,      /* a subject was analysed and written */
  PSP_BATCH_SKIPPED = 2, /* --resume: complete and verified */
  PSP_BATCH_FAILED = 3,
  PSP_BATCH_STARTED = 4, /* the run's plan is known (total, jobs, threads) */
} psp_batch_event;

typedef struct psp_batch_progress {
  psp_batch_event event;
  size_t total; /* rows selected for this run */
  size_t ok, skipped, failed, running;
  int jobs, threads;
  double elapsed_s;
  double eta_s;        /* negative when unknown */
  const char *subject; /* the row of an OK/SKIPPED/FAILED event */
  const char *session; /* "" for none */
  const char *message; /* FAILED: the error; OK: a note (may be NULL) */
  const char *stage;   /* FAILED: analyze, write, record, publish, worker, discover */
  int status;          /* FAILED: the exit code (psp_status) */
  double subject_s;    /* OK: seconds the subject took */
} psp_batch_progress;

typedef void (*psp_batch_progress_fn)(void *user, const psp_batch_progress *p);

typedef struct psp_batch_options {
  const psp_manifest *manifest;
  const char *out_dir;
  int jobs;                     /* 0 = automatic (see psp_batch_plan) */
  int threads;                  /* per job; 0 = automatic */
  int shard_index, shard_count; /* shard_count <= 1: the whole manifest */
  const char *const *only;      /* subject ids to run (NULL/0 = all) */
  size_t n_only;
  bool resume;
  /* Write cohort tables at the end (false with --only: use --aggregate). */
  bool write_tables;
  psp_batch_settings settings;
  psp_batch_progress_fn progress;
  void *progress_user;
  /* Log of the workers' analyses (warnings, and info when verbose); each
   * message is prefixed with "subject[/session]: ". May be NULL. */
  psp_log_fn worker_log;
  void *worker_log_user;
  psp_log_level worker_log_level;
} psp_batch_options;

typedef struct psp_batch_summary {
  size_t total, ok, skipped, failed, not_run;
  int jobs, threads;
  int signal;                         /* SIGINT / SIGTERM when interrupted, else 0 */
  double elapsed_s;                   /* wall clock of the whole run */
  double busy_s;                      /* sum of the seconds of the analysed (OK) subjects */
  char tables[PSP_COHORT_TABLES][64]; /* the cohort tables' file names ("" if none) */
} psp_batch_summary;

/* Jobs and threads per job for `cores` cores and `n` subjects: requested
 * values are kept (jobs x threads must not exceed cores: PSP_ERR_USAGE);
 * automatic: jobs = min(cores, n) (one subject per core), threads =
 * max(1, cores / jobs). */
bool psp_batch_plan(int cores, size_t n, int jobs_req, int threads_req, int *jobs, int *threads,
                    psp_error **err);
/* Cores this process may use (CPU affinity). */
int psp_batch_cores(void);

/* Row indices of the manifest selected by shard and --only, in manifest
 * order. Caller frees *rows. An --only id not in the manifest is
 * PSP_ERR_USAGE. */
bool psp_batch_select(const psp_manifest *m, int shard_index, int shard_count,
                      const char *const *only, size_t n_only, size_t **rows, size_t *n_rows,
                      psp_error **err);

/* Runs the selected rows. Returns false only for errors of the run itself
 * (OUT not writable, out of memory); subject failures are counted in the
 * summary. SIGINT/SIGTERM are blocked and handled while it runs: dispatch
 * stops, the signal is forwarded to the workers, their temporary folders are
 * removed, the tables cover what is complete, and summary->signal is set. */
bool psp_batch_run(const psp_batch_options *o, psp_batch_summary *summary, psp_context *ctx,
                   psp_error **err);

/* Re-builds the cohort tables of OUT from the complete subject folders (their
 * completion records and output hashes verified) and the failure records.
 * With a manifest: its rows in manifest order (rows with neither output nor
 * failure record are listed as missing); without: every complete subject
 * folder and failure record, sorted by subject then session. */
bool psp_batch_aggregate(const char *out_dir, const psp_manifest *m, psp_batch_summary *summary,
                         psp_error **err);

/* ---- internal to src/batch (record.c, cohort.c) ---------------------------- */

/* "OUT/<subject>" or "OUT/<subject>/<session>". */
bool psp_batch_subject_dir(char *out, size_t n, const char *out_dir, const char *subject,
                           const char *session, psp_error **err);
/* Fills the input fields of an analysis options struct from a row and the
 * batch settings. */
void psp_batch_row_options(const psp_manifest_row *row, const psp_batch_settings *s,
                           psp_analysis_options *o);
/* The settings fingerprint recorded in (and compared with) the record. */
char *psp_batch_settings_string(const psp_manifest_row *row, const psp_batch_settings *s);

/* Input digests of a row: role + path + sha256 (a DICOM folder: the SHA-256
 * of the sorted list of its files' relative paths and SHA-256s). known (may
 * be NULL): the analysis of this row, whose loader already hashed the bytes
 * it read: a file input it holds is taken from there, not read again. */
typedef struct psp_input_digest {
  char role[16];
  char *path;
  char sha256[65];
} psp_input_digest;
bool psp_batch_input_digests(const psp_manifest_row *row, const psp_result *known,
                             psp_input_digest **out, size_t *n, psp_error **err);
void psp_batch_input_digests_free(psp_input_digest *d, size_t n);

/* Writes dir/.paraspinal-done.json: version, subject, session, settings,
 * inputs and the SHA-256 of every file below dir. */
bool psp_batch_write_record(const char *dir, const psp_manifest_row *row, const char *settings,
                            const psp_input_digest *in, size_t n_in, psp_error **err);
/* Checks dir's record: same version; same subject/session; when settings is
 * not NULL the same settings and inputs whose SHA-256 still match (in may be
 * NULL to skip the input check); every recorded output present with its
 * SHA-256. False with a reason in why. */
bool psp_batch_verify_record(const char *dir, const char *subject, const char *session,
                             const char *settings, const psp_input_digest *in, size_t n_in,
                             bool check_inputs, char *why, size_t why_len);

/* Failure records (OUT/.paraspinal-failed/<subject>+<session>.json). */
bool psp_batch_write_failure(const char *out_dir, const char *subject, const char *session,
                             const char *stage, int status, const char *message, psp_error **err);
void psp_batch_remove_failure(const char *out_dir, const char *subject, const char *session);
/* Reads one; false when absent or unreadable. stage/message are copied
 * (truncated) into the buffers. */
bool psp_batch_read_failure(const char *out_dir, const char *subject, const char *session,
                            char *stage, size_t stage_len, int *status, char *message,
                            size_t message_len);

/* Removes a folder tree (never following symbolic links). */
void psp_batch_remove_tree(const char *path);

/* One row of the cohort tables' sources. */
typedef enum psp_cohort_state {
  PSP_COHORT_COMPLETE = 0,
  PSP_COHORT_FAILED = 1,
  PSP_COHORT_NOT_RUN = 2, /* interrupted run */
  PSP_COHORT_MISSING = 3, /* aggregate: neither output nor failure record */
} psp_cohort_state;

typedef struct psp_cohort_entry {
  const char *subject, *session;
  psp_cohort_state state;
  const char *stage;   /* failed */
  int status;          /* failed: exit code */
  const char *message; /* failed / not run / missing */
} psp_cohort_entry;

/* Writes cohort_slices<suffix>.csv, cohort_levels<suffix>.csv,
 * cohort_volumes<suffix>.csv and failures<suffix>.csv into out_dir
 * atomically, entries in the given order; names[] receives the four file
 * names. */
bool psp_cohort_write_tables(const char *out_dir, const char *suffix,
                             const psp_cohort_entry *entries, size_t n,
                             char names[PSP_COHORT_TABLES][64], psp_error **err);

#endif
