/*
 * DESIGN: `paraspinal batch` runs one forked worker process per subject, at
 * most `jobs` at a time, each with `threads` OpenMP threads (jobs x threads
 * <= cores: no oversubscription). Processes, not threads, so that a crash or
 * the OOM killer in one subject never takes the batch down: the parent only
 * dispatches, collects a one-message status per worker over a pipe, and
 * records failures. A worker writes its subject into OUT/.tmp-S+E+pid/
 * (psp_result_write, then the completion record last) and renames the folder
 * into place, so a subject folder is either absent or complete. The parent
 * blocks SIGINT/SIGTERM and reads them from a signalfd (no handler, no global
 * flag): it stops dispatching, forwards SIGTERM to the workers, removes
 * their temporary folders and writes the tables for what is complete.
 * Workers die with the parent (PR_SET_PDEATHSIG), so after a kill -9 only
 * temporary folders remain, which the next run removes before it starts.
 */
#include "batch/batch.h"
#include "core/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MSG_MAX 4000

/* ---- plan and selection ------------------------------------------------------ */

int psp_batch_cores(void) {
  int n = omp_get_num_procs();
  return n > 0 ? n : 1;
}

bool psp_batch_plan(int cores, size_t n, int jobs_req, int threads_req, int *jobs, int *threads,
                    psp_error **err) {
  if (cores < 1) cores = 1;
  if (jobs_req < 0 || threads_req < 0)
    return psp_error_set(err, PSP_ERR_USAGE, "--jobs and --threads must be positive");
  size_t want = n ? n : 1;
  if (jobs_req > 0 && threads_req > 0 && (long long)jobs_req * threads_req > cores)
    return psp_error_set(err, PSP_ERR_USAGE,
                         "--jobs %d x --threads %d = %lld threads, more than the %d cores "
                         "available (that would oversubscribe them)",
                         jobs_req, threads_req, (long long)jobs_req * threads_req, cores);
  if (jobs_req > cores)
    return psp_error_set(err, PSP_ERR_USAGE, "--jobs %d is more than the %d cores available",
                         jobs_req, cores);
  if (threads_req > cores)
    return psp_error_set(err, PSP_ERR_USAGE, "--threads %d is more than the %d cores available",
                         threads_req, cores);
  if (jobs_req > 0) {
    *jobs = jobs_req;
    *threads = threads_req > 0 ? threads_req : (cores / jobs_req > 1 ? cores / jobs_req : 1);
  } else if (threads_req > 0) {
    *threads = threads_req;
    int j = cores / threads_req;
    *jobs = (size_t)j > want ? (int)want : (j > 0 ? j : 1);
  } else {
    *jobs = (size_t)cores > want ? (int)want : cores;
    *threads = cores / *jobs > 1 ? cores / *jobs : 1;
  }
  return true;
}

bool psp_batch_select(const psp_manifest *m, int shard_index, int shard_count,
                      const char *const *only, size_t n_only, size_t **rows, size_t *n_rows,
                      psp_error **err) {
  *rows = NULL;
  *n_rows = 0;
  if (shard_count > 1 && (shard_index < 0 || shard_index >= shard_count))
    return psp_error_set(err, PSP_ERR_USAGE, "--shard %d/%d: the index must be 0..%d", shard_index,
                         shard_count, shard_count - 1);
  size_t n = psp_manifest_row_count(m);
  for (size_t k = 0; k < n_only; k++) {
    bool found = false;
    for (size_t i = 0; i < n && !found; i++)
      found = !strcmp(psp_manifest_row_at(m, i)->subject, only[k]);
    if (!found)
      return psp_error_set(err, PSP_ERR_USAGE, "--only %s: no such subject in %s", only[k],
                           psp_manifest_name(m));
  }
  size_t *v = psp_calloc(n ? n : 1, sizeof *v, err);
  if (!v) return false;
  size_t c = 0;
  for (size_t i = 0; i < n; i++) {
    if (shard_count > 1 && (int)(i % (size_t)shard_count) != shard_index) continue;
    if (n_only) {
      bool in = false;
      for (size_t k = 0; k < n_only && !in; k++)
        in = !strcmp(psp_manifest_row_at(m, i)->subject, only[k]);
      if (!in) continue;
    }
    v[c++] = i;
  }
  *rows = v;
  *n_rows = c;
  return true;
}

/* ---- names --------------------------------------------------------------------- */

/* OUT/.tmp-S+E+pid or OUT/.old-S+E+pid */
static bool work_dir(char *out, size_t n, const char *out_dir, const char *kind,
                     const psp_manifest_row *r, long pid) {
  int w = snprintf(out, n, "%s/.%s-%s+%s+%ld", out_dir, kind, r->subject, r->session, pid);
  return w > 0 && (size_t)w < n;
}

static int cmp_cstr(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Removes OUT/.tmp-* and .old-* folders (any pid) of the selected rows, and
 * stray temporary files of their failure records and of our tables. */
static void clean_stale(const char *out_dir, const psp_manifest *m, const size_t *rows, size_t n,
                        const char *suffix) {
  char **keys = calloc(n ? n : 1, sizeof *keys);
  if (!keys) return;
  size_t nk = 0;
  for (size_t i = 0; i < n; i++) {
    const psp_manifest_row *r = psp_manifest_row_at(m, rows[i]);
    size_t len = strlen(r->subject) + strlen(r->session) + 2;
    if ((keys[nk] = malloc(len))) snprintf(keys[nk++], len, "%s+%s", r->subject, r->session);
  }
  qsort(keys, nk, sizeof *keys, cmp_cstr);
  DIR *d = opendir(out_dir);
  struct dirent *e;
  char path[PATH_MAX], key[600];
  while (d && (e = readdir(d)) != NULL) {
    const char *nm = e->d_name;
    bool tables = false;
    if (!strncmp(nm, ".tmp-", 5) || !strncmp(nm, ".old-", 5)) {
      snprintf(key, sizeof key, "%s", nm + 5);
      char *plus = strrchr(key, '+');
      if (!plus) continue;
      *plus = '\0';
    } else if (nm[0] == '.') {
      /* .cohort_slices<suffix>.csv.<pid>.tmp (our own tables only) */
      static const char *const BASE[PSP_COHORT_TABLES] = {"cohort_slices", "cohort_levels",
                                                          "cohort_volumes", "failures"};
      for (int t = 0; t < PSP_COHORT_TABLES && !tables; t++) {
        char want[160];
        int w = snprintf(want, sizeof want, ".%s%s.csv.", BASE[t], suffix);
        size_t n_end = strlen(nm);
        tables =
            w > 0 && !strncmp(nm, want, (size_t)w) && n_end > 4 && !strcmp(nm + n_end - 4, ".tmp");
      }
      if (!tables) continue;
    } else {
      continue;
    }
    const char *kp = key;
    if (!tables && !bsearch(&kp, keys, nk, sizeof *keys, cmp_cstr)) continue;
    if (psp_path_join(path, sizeof path, out_dir, nm, NULL)) psp_batch_remove_tree(path);
  }
  if (d) closedir(d);
  char fdir[PATH_MAX];
  if (psp_path_join(fdir, sizeof fdir, out_dir, PSP_FAILED_DIR, NULL) && (d = opendir(fdir))) {
    while ((e = readdir(d)) != NULL) {
      /* .S+E.json.<pid>.tmp */
      const char *nm = e->d_name;
      const char *j = strstr(nm, ".json.");
      if (nm[0] != '.' || !j || (size_t)(j - nm - 1) >= sizeof key) continue;
      memcpy(key, nm + 1, (size_t)(j - nm - 1));
      key[j - nm - 1] = '\0';
      const char *kp = key;
      if (bsearch(&kp, keys, nk, sizeof *keys, cmp_cstr) &&
          psp_path_join(path, sizeof path, fdir, nm, NULL))
        unlink(path);
    }
    closedir(d);
  }
  for (size_t i = 0; i < nk; i++)
    free(keys[i]);
  free(keys);
}

static void fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* ---- worker ---------------------------------------------------------------------- */

typedef struct worker_log {
  psp_log_fn fn;
  void *user;
  char prefix[300];
} worker_log;

static void worker_log_fn(void *user, psp_log_level level, const char *msg) {
  worker_log *w = user;
  char buf[2400];
  snprintf(buf, sizeof buf, "%s%s", w->prefix, msg);
  w->fn(w->user, level, buf);
}

/* The worker's one message: "<O|S|F>\t<status>\t<stage>\t<seconds>\t<text>". */
static void send_msg(int fd, char kind, int status, const char *stage, double seconds,
                     const char *text) {
  char buf[MSG_MAX + 128];
  int n = snprintf(buf, sizeof buf, "%c\t%d\t%s\t%.3f\t%.*s", kind, status, stage, seconds, MSG_MAX,
                   text ? text : "");
  if (n < 0) return;
  size_t len = (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1;
  const char *p = buf;
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    p += w;
    len -= (size_t)w;
  }
}

static void send_error(int fd, const char *stage, psp_error *e, double t0) {
  psp_status st = psp_error_code(e);
  send_msg(fd, 'F', st == PSP_OK ? PSP_ERR_INTERNAL : (int)st, stage, now_s() - t0,
           e ? psp_error_message(e) : "unknown error");
  psp_error_free(e);
}

/* Is path a real folder (not a symbolic link)? */
static bool real_dir(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool has_record(const char *dir) {
  char p[PATH_MAX];
  struct stat st;
  return psp_path_join(p, sizeof p, dir, PSP_DONE_RECORD, NULL) && stat(p, &st) == 0;
}

/* Does dir hold nothing (but . and ..)? */
static bool dir_empty(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return false;
  bool empty = true;
  struct dirent *e;
  while (empty && (e = readdir(d)) != NULL)
    empty = !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..");
  closedir(d);
  return empty;
}

/* Does dir hold a sub-folder with a completion record (a session)? */
static bool has_session_records(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return false;
  bool found = false;
  struct dirent *e;
  while (!found && (e = readdir(d)) != NULL) {
    char sub[PATH_MAX];
    if (e->d_name[0] == '.' || !psp_path_join(sub, sizeof sub, dir, e->d_name, NULL)) continue;
    found = real_dir(sub) && has_record(sub);
  }
  closedir(d);
  return found;
}

/* The worker's job once its context exists: resume check, analysis, write
 * into the temporary folder, completion record, rename into place. Sends
 * exactly one message. *dig is the caller's to free. */
static void work(const psp_batch_options *o, const psp_manifest_row *row, int fd, psp_context *ctx,
                 const char *settings, const char *final, const char *tmp, const char *old,
                 const char *parent, double t0, psp_input_digest **dig_out, size_t *n_dig_out) {
  psp_error *e = NULL;
  psp_input_digest *dig = NULL;
  size_t n_dig = 0;
  bool have_dig = false;
  char note[600] = "";
  if (o->resume && real_dir(final)) {
    char why[512] = "";
    psp_error *de = NULL;
    have_dig = psp_batch_input_digests(row, NULL, &dig, &n_dig, &de);
    if (!have_dig) {
      snprintf(why, sizeof why, "inputs unreadable: %s", psp_error_message(de));
      psp_error_free(de);
    } else if (psp_batch_verify_record(final, row->subject, row->session, settings, dig, n_dig,
                                       true, why, sizeof why)) {
      send_msg(fd, 'S', 0, "resume", now_s() - t0, "complete and verified");
      goto done;
    }
    snprintf(note, sizeof note, "re-run: %s", why);
    psp_info(ctx, "%s", note);
  }
  psp_analysis_options ao;
  psp_batch_row_options(row, &o->settings, &ao);
  psp_result *r = psp_analyze(&ao, ctx, &e);
  if (!r) {
    send_error(fd, "analyze", e, t0);
    goto done;
  }
  psp_batch_remove_tree(tmp);
  char line[700];
  snprintf(line, sizeof line, "paraspinal batch (subject %s%s%s)", row->subject,
           row->session[0] ? ", session " : "", row->session);
  bool ok = psp_result_write(r, tmp, line, ctx, &e);
  if (!ok) {
    psp_result_free(r);
    psp_batch_remove_tree(tmp);
    send_error(fd, "write", e, t0);
    goto done;
  }
  /* the digests of the bytes the analysis read (its loader hashed them) */
  psp_batch_input_digests_free(dig, n_dig);
  dig = NULL;
  n_dig = 0;
  ok = psp_batch_input_digests(row, r, &dig, &n_dig, &e);
  psp_result_free(r);
  if (!ok) {
    psp_batch_remove_tree(tmp);
    send_error(fd, "record", e, t0);
    goto done;
  }
  if (!psp_batch_write_record(tmp, row, settings, dig, n_dig, &e)) {
    psp_batch_remove_tree(tmp);
    send_error(fd, "record", e, t0);
    goto done;
  }
  fsync_dir(tmp);
  /* publish: OUT/<subject> must be a real folder inside OUT (no symbolic
   * link leading elsewhere) */
  if (row->session[0] && !psp_mkdir_p(parent, &e)) {
    psp_batch_remove_tree(tmp);
    send_error(fd, "publish", e, t0);
    goto done;
  }
  if (!real_dir(parent)) {
    psp_batch_remove_tree(tmp);
    psp_error_set(&e, PSP_ERR_IO, "%s: not a folder (a symbolic link?): refusing to write there",
                  parent);
    send_error(fd, "publish", e, t0);
    goto done;
  }
  /* a folder left by an earlier manifest with another session layout is
   * never merged into or deleted */
  char clash[PATH_MAX + 64] = "";
  if (row->session[0] && has_record(parent))
    snprintf(clash, sizeof clash, "%s holds the outputs of a subject without sessions", parent);
  else if (!row->session[0] && real_dir(final) && !has_record(final) && has_session_records(final))
    snprintf(clash, sizeof clash, "%s holds session folders of this subject", final);
  if (clash[0]) {
    psp_batch_remove_tree(tmp);
    psp_error_set(&e, PSP_ERR_IO,
                  "%s (from an earlier manifest): move it away, the manifest now says otherwise",
                  clash);
    send_error(fd, "publish", e, t0);
    goto done;
  }
  /* only a folder this tool completed (its record) or an empty one is
   * replaced: OUT may be the folder the inputs live in (a manifest or a
   * BIDS tree written into its own folder replaced the scans) */
  if (real_dir(final) && !has_record(final) && !dir_empty(final)) {
    psp_batch_remove_tree(tmp);
    psp_error_set(&e, PSP_ERR_IO,
                  "%s exists and holds files this tool did not write (no %s): refusing to "
                  "replace it; give an output folder apart from the inputs (-o), or move it away",
                  final, PSP_DONE_RECORD);
    send_error(fd, "publish", e, t0);
    goto done;
  }
  struct stat st;
  bool replace = lstat(final, &st) == 0;
  if (replace && rename(final, old) != 0) {
    psp_error_set(&e, PSP_ERR_IO, "%s: cannot move the previous output aside: %s", final,
                  strerror(errno));
    psp_batch_remove_tree(tmp);
    send_error(fd, "publish", e, t0);
    goto done;
  }
  if (rename(tmp, final) != 0) {
    psp_error_set(&e, PSP_ERR_IO, "%s: cannot move the new output into place: %s", final,
                  strerror(errno));
    if (replace) rename(old, final);
    psp_batch_remove_tree(tmp);
    send_error(fd, "publish", e, t0);
    goto done;
  }
  fsync_dir(parent);
  if (replace) psp_batch_remove_tree(old);
  send_msg(fd, 'O', 0, "done", now_s() - t0, note);
done:
  *dig_out = dig;
  *n_dig_out = n_dig;
}

static void run_worker(const psp_batch_options *o, const psp_manifest_row *row, int threads,
                       int fd) {
  double t0 = now_s();
  long pid = (long)getpid();
  char final[PATH_MAX], tmp[PATH_MAX], old[PATH_MAX], parent[PATH_MAX];
  psp_error *e = NULL;
  if (!psp_batch_subject_dir(final, sizeof final, o->out_dir, row->subject, row->session, &e) ||
      !work_dir(tmp, sizeof tmp, o->out_dir, "tmp", row, pid) ||
      !work_dir(old, sizeof old, o->out_dir, "old", row, pid)) {
    if (!e) psp_error_set(&e, PSP_ERR_IO, "%s: path too long", o->out_dir);
    send_error(fd, "publish", e, t0);
    return;
  }
  if (row->session[0])
    snprintf(parent, sizeof parent, "%s/%s", o->out_dir, row->subject);
  else
    snprintf(parent, sizeof parent, "%s", o->out_dir);
  psp_context *ctx = psp_context_create();
  if (!ctx) {
    send_msg(fd, 'F', PSP_ERR_NOMEM, "analyze", 0, "out of memory");
    return;
  }
  psp_context_set_threads(ctx, threads);
  if (o->settings.max_voxels > 0) psp_context_set_max_voxels(ctx, o->settings.max_voxels);
  worker_log wl = {o->worker_log, o->worker_log_user, ""};
  snprintf(wl.prefix, sizeof wl.prefix, "%s%s%s: ", row->subject, row->session[0] ? "/" : "",
           row->session);
  if (o->worker_log)
    psp_context_set_log(ctx, worker_log_fn, &wl, o->worker_log_level);
  else
    psp_context_set_log(ctx, NULL, NULL, PSP_LOG_ERROR);
  char *settings = psp_batch_settings_string(row, &o->settings);
  if (!settings) {
    send_msg(fd, 'F', PSP_ERR_NOMEM, "analyze", 0, "out of memory");
    psp_context_free(ctx);
    return;
  }
  psp_input_digest *dig = NULL;
  size_t n_dig = 0;
  work(o, row, fd, ctx, settings, final, tmp, old, parent, t0, &dig, &n_dig);
  psp_batch_input_digests_free(dig, n_dig);
  free(settings);
  psp_context_free(ctx);
}

/* ---- parent ------------------------------------------------------------------------- */

typedef struct worker {
  pid_t pid;
  int fd;
  size_t sel; /* index into the selection */
  char buf[MSG_MAX + 256];
  size_t len;
} worker;

typedef struct outcome {
  psp_cohort_state state;
  bool done; /* finished (ok/skipped/failed) */
  bool skipped;
  char stage[16];
  int status;
  double seconds;
  char *message;
} outcome;

typedef struct run_state {
  const psp_batch_options *o;
  const psp_manifest *m;
  const size_t *rows;
  size_t n;
  outcome *out;
  psp_batch_summary *sum;
  double t0;
  int jobs, threads;
  size_t running;
} run_state;

static void report(run_state *rs, psp_batch_event ev, size_t sel) {
  if (!rs->o->progress) return;
  psp_batch_progress p;
  memset(&p, 0, sizeof p);
  p.event = ev;
  p.total = rs->n;
  p.ok = rs->sum->ok;
  p.skipped = rs->sum->skipped;
  p.failed = rs->sum->failed;
  p.running = rs->running;
  p.jobs = rs->jobs;
  p.threads = rs->threads;
  p.elapsed_s = now_s() - rs->t0;
  size_t worked = rs->sum->ok + rs->sum->failed;
  size_t finished = worked + rs->sum->skipped;
  p.eta_s = -1;
  if (worked > 0 && finished < rs->n)
    p.eta_s = p.elapsed_s / (double)worked * (double)(rs->n - finished);
  if (ev != PSP_BATCH_TICK && ev != PSP_BATCH_STARTED) {
    const psp_manifest_row *r = psp_manifest_row_at(rs->m, rs->rows[sel]);
    const outcome *oc = &rs->out[sel];
    p.subject = r->subject;
    p.session = r->session;
    p.message = oc->message;
    p.stage = oc->stage;
    p.status = oc->status;
    p.subject_s = oc->seconds;
  }
  rs->o->progress(rs->o->progress_user, &p);
}

static void set_outcome(outcome *oc, psp_cohort_state st, bool skipped, const char *stage,
                        int status, const char *msg) {
  oc->state = st;
  oc->done = st != PSP_COHORT_NOT_RUN;
  oc->skipped = skipped;
  snprintf(oc->stage, sizeof oc->stage, "%s", stage ? stage : "");
  oc->status = status;
  free(oc->message);
  oc->message = (msg && msg[0]) ? strdup(msg) : NULL;
}

/* Records a failed subject: its stale output folder (if any) is removed so
 * that OUT holds a subject folder only when its last run succeeded. */
static void record_failure(run_state *rs, size_t sel, const char *stage, int status,
                           const char *msg, psp_context *ctx) {
  const psp_manifest_row *r = psp_manifest_row_at(rs->m, rs->rows[sel]);
  set_outcome(&rs->out[sel], PSP_COHORT_FAILED, false, stage, status, msg);
  rs->sum->failed++;
  char final[PATH_MAX], old[PATH_MAX], parent[PATH_MAX];
  snprintf(parent, sizeof parent, "%s/%s", rs->o->out_dir, r->subject);
  /* never through a symbolic link: OUT/<subject> must be a real folder */
  bool inside = !r->session[0] || real_dir(parent);
  /* only a folder this tool completed (with its record) is removed */
  if (inside &&
      psp_batch_subject_dir(final, sizeof final, rs->o->out_dir, r->subject, r->session, NULL) &&
      work_dir(old, sizeof old, rs->o->out_dir, "old", r, (long)getpid()) && real_dir(final) &&
      has_record(final) && rename(final, old) == 0)
    psp_batch_remove_tree(old);
  psp_error *e = NULL;
  if (!psp_batch_write_failure(rs->o->out_dir, r->subject, r->session, stage, status, msg, &e)) {
    psp_warn(ctx, "%s", psp_error_message(e));
    psp_error_free(e);
  }
}

static const char *signal_name(int sig) {
  switch (sig) {
  case SIGSEGV:
    return "SIGSEGV";
  case SIGBUS:
    return "SIGBUS";
  case SIGABRT:
    return "SIGABRT";
  case SIGFPE:
    return "SIGFPE";
  case SIGILL:
    return "SIGILL";
  case SIGKILL:
    return "SIGKILL";
  case SIGTERM:
    return "SIGTERM";
  case SIGINT:
    return "SIGINT";
  default:
    return "signal";
  }
}

/* A worker's pipe reached end of file: reap it and record its outcome. */
static void finish_worker(run_state *rs, worker *w, bool stopping, psp_context *ctx) {
  int wst = 0;
  while (waitpid(w->pid, &wst, 0) < 0 && errno == EINTR) {
  }
  close(w->fd);
  const psp_manifest_row *r = psp_manifest_row_at(rs->m, rs->rows[w->sel]);
  char path[PATH_MAX];
  if (work_dir(path, sizeof path, rs->o->out_dir, "tmp", r, (long)w->pid))
    psp_batch_remove_tree(path);
  if (work_dir(path, sizeof path, rs->o->out_dir, "old", r, (long)w->pid))
    psp_batch_remove_tree(path);
  w->buf[w->len] = '\0';
  char kind = w->len > 0 ? w->buf[0] : 0;
  int status = 0;
  double secs = 0;
  char stage[16] = "";
  const char *text = "";
  if (kind) {
    char *save = NULL, *tok = strtok_r(w->buf + 1, "\t", &save);
    status = tok ? atoi(tok) : PSP_ERR_INTERNAL;
    tok = strtok_r(NULL, "\t", &save);
    snprintf(stage, sizeof stage, "%s", tok ? tok : "worker");
    tok = strtok_r(NULL, "\t", &save);
    secs = tok ? atof(tok) : 0;
    text = save ? save : "";
  }
  if (kind == 'O') {
    set_outcome(&rs->out[w->sel], PSP_COHORT_COMPLETE, false, "", 0, text);
    rs->out[w->sel].seconds = secs;
    rs->sum->ok++;
    rs->sum->busy_s += secs;
    psp_batch_remove_failure(rs->o->out_dir, r->subject, r->session);
    report(rs, PSP_BATCH_OK, w->sel);
    return;
  }
  if (kind == 'S') {
    set_outcome(&rs->out[w->sel], PSP_COHORT_COMPLETE, true, "", 0, NULL);
    rs->sum->skipped++;
    psp_batch_remove_failure(rs->o->out_dir, r->subject, r->session);
    report(rs, PSP_BATCH_SKIPPED, w->sel);
    return;
  }
  if (kind == 'F') {
    record_failure(rs, w->sel, stage, status, text, ctx);
    report(rs, PSP_BATCH_FAILED, w->sel);
    return;
  }
  /* no message: the worker died */
  char msg[256];
  if (WIFSIGNALED(wst) && (stopping || WTERMSIG(wst) == SIGTERM || WTERMSIG(wst) == SIGINT)) {
    snprintf(msg, sizeof msg, "not finished: interrupted (%s)", signal_name(WTERMSIG(wst)));
    set_outcome(&rs->out[w->sel], PSP_COHORT_NOT_RUN, false, "not_run", 0, msg);
    return;
  }
  if (WIFSIGNALED(wst))
    snprintf(msg, sizeof msg, "worker process killed by %s (%d)%s", signal_name(WTERMSIG(wst)),
             WTERMSIG(wst),
             WTERMSIG(wst) == SIGKILL ? ": out of memory? (the kernel's OOM killer sends SIGKILL)"
                                      : ": a crash, please report it");
  else
    snprintf(msg, sizeof msg, "worker process exited with status %d without a result",
             WIFEXITED(wst) ? WEXITSTATUS(wst) : -1);
  record_failure(rs, w->sel, "worker", PSP_ERR_INTERNAL, msg, ctx);
  report(rs, PSP_BATCH_FAILED, w->sel);
}

static bool spawn(run_state *rs, worker *w, size_t sel, int sfd, const sigset_t *old_mask,
                  psp_error **err) {
  int p[2];
  if (pipe(p) != 0)
    return psp_error_set(err, PSP_ERR_IO, "cannot create a pipe: %s", strerror(errno));
  fflush(stdout);
  fflush(stderr);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    close(p[0]);
    close(p[1]);
    return psp_error_set(err, PSP_ERR_NOMEM, "cannot start a worker process: %s", strerror(errno));
  }
  if (pid == 0) {
    /* worker: dies with the parent; default SIGTERM/SIGINT */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(PSP_ERR_INTERNAL);
    close(p[0]);
    close(sfd);
    signal(SIGTERM, SIG_DFL);
    sigprocmask(SIG_SETMASK, old_mask, NULL);
    run_worker(rs->o, psp_manifest_row_at(rs->m, rs->rows[sel]), rs->threads, p[1]);
    close(p[1]);
    _exit(0);
  }
  close(p[1]);
  memset(w, 0, sizeof *w);
  w->pid = pid;
  w->fd = p[0];
  w->sel = sel;
  return true;
}

static bool ensure_out(const char *out_dir, psp_error **err) {
  if (!psp_mkdir_p(out_dir, err)) return false;
  char probe[PATH_MAX];
  int w = snprintf(probe, sizeof probe, "%s/.paraspinal-probe-%ld", out_dir, (long)getpid());
  if (w < 0 || (size_t)w >= sizeof probe)
    return psp_error_set(err, PSP_ERR_IO, "%s: path too long", out_dir);
  int fd = open(probe, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0)
    return psp_error_set(err, PSP_ERR_IO, "%s: output folder not writable: %s", out_dir,
                         strerror(errno));
  close(fd);
  unlink(probe);
  return true;
}

bool psp_batch_run(const psp_batch_options *o, psp_batch_summary *sum, psp_context *ctx,
                   psp_error **err) {
  memset(sum, 0, sizeof *sum);
  double t0 = now_s();
  size_t *rows = NULL, n = 0;
  if (!psp_batch_select(o->manifest, o->shard_index, o->shard_count, o->only, o->n_only, &rows, &n,
                        err))
    return false;
  int jobs = 1, threads = 1;
  if (!psp_batch_plan(psp_batch_cores(), n, o->jobs, o->threads, &jobs, &threads, err) ||
      !ensure_out(o->out_dir, err)) {
    free(rows);
    return false;
  }
  char suffix[64] = "";
  if (o->shard_count > 1)
    snprintf(suffix, sizeof suffix, ".shard-%d-of-%d", o->shard_index, o->shard_count);
  clean_stale(o->out_dir, o->manifest, rows, n, suffix);
  outcome *out = psp_calloc(n ? n : 1, sizeof *out, err);
  worker *ws = psp_calloc((size_t)jobs, sizeof *ws, err);
  struct pollfd *pfd = psp_calloc((size_t)jobs + 1, sizeof *pfd, err);
  if (!out || !ws || !pfd) {
    free(out);
    free(ws);
    free(pfd);
    free(rows);
    return false;
  }
  for (size_t i = 0; i < n; i++)
    set_outcome(&out[i], PSP_COHORT_NOT_RUN, false, "not_run", 0,
                "not processed: the batch was interrupted; run again with --resume");
  sum->total = n;
  sum->jobs = jobs;
  sum->threads = threads;
  run_state rs = {o, o->manifest, rows, n, out, sum, t0, jobs, threads, 0};
  report(&rs, PSP_BATCH_STARTED, 0);

  sigset_t block, old_mask;
  sigemptyset(&block);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGTERM);
  sigprocmask(SIG_BLOCK, &block, &old_mask);
  int sfd = signalfd(-1, &block, SFD_CLOEXEC);
  bool ok = true;
  if (sfd < 0) ok = psp_error_set(err, PSP_ERR_INTERNAL, "signalfd: %s", strerror(errno));

  size_t next = 0;
  int stop_signal = 0, signals_seen = 0;
  bool dispatch = ok;
  while (rs.running > 0 || (dispatch && next < n && !stop_signal)) {
    while (dispatch && !stop_signal && rs.running < (size_t)jobs && next < n) {
      size_t sel = next++;
      const psp_manifest_row *r = psp_manifest_row_at(o->manifest, rows[sel]);
      if (r->kind == PSP_INPUT_NONE) {
        record_failure(&rs, sel, "discover", PSP_ERR_IO, r->problem ? r->problem : "no input", ctx);
        report(&rs, PSP_BATCH_FAILED, sel);
        continue;
      }
      if (!spawn(&rs, &ws[rs.running], sel, sfd, &old_mask, err)) {
        /* finish the running workers, then fail */
        dispatch = ok = false;
        break;
      }
      rs.running++;
    }
    if (rs.running == 0) continue;
    pfd[0].fd = sfd;
    pfd[0].events = POLLIN;
    pfd[0].revents = 0;
    for (size_t k = 0; k < rs.running; k++) {
      pfd[k + 1].fd = ws[k].fd;
      pfd[k + 1].events = POLLIN;
      pfd[k + 1].revents = 0;
    }
    int pr = poll(pfd, rs.running + 1, 1000);
    if (pr < 0) {
      if (errno == EINTR) continue;
      /* cannot wait for the workers: stop them and collect them blindly */
      ok = psp_error_set(err, PSP_ERR_INTERNAL, "poll: %s", strerror(errno));
      dispatch = false;
      for (size_t k = 0; k < rs.running; k++)
        kill(ws[k].pid, SIGKILL);
      for (size_t k = 0; k < rs.running; k++)
        finish_worker(&rs, &ws[k], true, ctx);
      rs.running = 0;
      break;
    }
    if (pr == 0) {
      report(&rs, PSP_BATCH_TICK, 0);
      continue;
    }
    if (pfd[0].revents & POLLIN) {
      struct signalfd_siginfo si;
      if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
        signals_seen++;
        if (!stop_signal) stop_signal = (int)si.ssi_signo;
        for (size_t k = 0; k < rs.running; k++)
          kill(ws[k].pid, signals_seen > 1 ? SIGKILL : SIGTERM);
      }
    }
    /* collect finished workers (compacting the array, keeping order) */
    size_t k = 0, was = rs.running;
    for (size_t j = 0; j < was; j++) {
      worker *w = &ws[j];
      bool eof = false;
      if (pfd[j + 1].revents & (POLLIN | POLLHUP | POLLERR)) {
        size_t room = sizeof w->buf - 1 - w->len;
        char scratch[256];
        ssize_t got =
            room > 0 ? read(w->fd, w->buf + w->len, room) : read(w->fd, scratch, sizeof scratch);
        if (got > 0 && room > 0) w->len += (size_t)got;
        eof = got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN);
      }
      if (eof) {
        rs.running--;
        finish_worker(&rs, w, stop_signal != 0, ctx);
        continue;
      }
      if (k != j) ws[k] = *w;
      k++;
    }
    rs.running = k;
  }

  for (size_t i = 0; i < n; i++)
    if (out[i].state == PSP_COHORT_NOT_RUN) sum->not_run++;
  if (ok && o->write_tables) {
    psp_cohort_entry *ents = psp_calloc(n ? n : 1, sizeof *ents, err);
    ok = ents != NULL;
    for (size_t i = 0; ok && i < n; i++) {
      const psp_manifest_row *r = psp_manifest_row_at(o->manifest, rows[i]);
      ents[i] = (psp_cohort_entry){.subject = r->subject,
                                   .session = r->session,
                                   .state = out[i].state,
                                   .stage = out[i].stage,
                                   .status = out[i].status,
                                   .message = out[i].message};
    }
    ok = ok && psp_cohort_write_tables(o->out_dir, suffix, ents, n, sum->tables, err);
    free(ents);
  }
  /* a signal that arrived after the last poll is still pending: take it
   * before unblocking (its default action would end the process) */
  if (sfd >= 0) close(sfd);
  sigset_t pending;
  sigemptyset(&pending);
  if (sigpending(&pending) == 0 &&
      (sigismember(&pending, SIGTERM) || sigismember(&pending, SIGINT))) {
    int got = 0;
    if (sigwait(&block, &got) == 0 && !stop_signal) stop_signal = got;
  }
  sigprocmask(SIG_SETMASK, &old_mask, NULL);
  sum->signal = stop_signal;
  sum->elapsed_s = now_s() - t0;
  for (size_t i = 0; i < n; i++)
    free(out[i].message);
  free(out);
  free(ws);
  free(pfd);
  free(rows);
  return ok;
}
