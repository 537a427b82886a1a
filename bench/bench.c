/* Benchmark (not a test): where the time of `paraspinal analyze` goes,
 * compared in the same run with the I/O floor.
 *
 *   psp_bench WATER FAT [REPS]
 *
 * Floor: the time to bring the input voxels into memory = read both files
 * and inflate them with libdeflate (nothing else). Then, for 1 and 2
 * threads, `analyze` with all default outputs (automatic segmentation, QC
 * images, report.html) into a fresh folder; REPS rounds of floor, 1 thread,
 * 2 threads (interleaved, so a drifting machine speed hits all alike), each
 * analyze in a child process so its own peak memory (max RSS) can be read
 * (wait4); per stage the median of
 * the runs (the library's own stage timings, psp_context_timing). Prints the
 * per-stage table, the ratio total / floor, the 1 -> 2 thread speed-up of the
 * compute stages and end to end, peak memory against the budget of 8 x
 * (input voxels x 4 bytes), and whether the outputs of 1 and 2 threads are
 * byte-identical. */
#define _DEFAULT_SOURCE /* wait4: one child's own resource usage */
#include "paraspinal.h"

#include <libdeflate.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

enum { MAX_REPS = 50, NSTAGE = PSP_MAX_STAGES };

typedef struct {
  char name[NSTAGE][32];
  double sec[NSTAGE];
  int n;
  double total;
} run_times;

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* read + inflate one .nii.gz, member after member (paraspinal's own outputs
 * are multi-member gzip), or read a .nii; returns inflated bytes */
static size_t floor_one(const char *path) {
  size_t len = 0;
  unsigned char *buf = psp_read_file(path, &len, (int64_t)1 << 34, NULL);
  if (!buf) return 0;
  size_t total = len;
  if (len > 18 && buf[0] == 0x1f && buf[1] == 0x8b) {
    size_t isize = (size_t)buf[len - 4] | (size_t)buf[len - 3] << 8 | (size_t)buf[len - 2] << 16 |
                   (size_t)buf[len - 1] << 24;
    size_t cap = isize > 4 * len ? isize : 4 * len, pos = 0;
    unsigned char *out = malloc(cap);
    struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    total = 0;
    while (out && d && pos < len && buf[pos] == 0x1f) {
      size_t in_used = 0, got = 0;
      enum libdeflate_result r = libdeflate_gzip_decompress_ex(d, buf + pos, len - pos, out + total,
                                                               cap - total, &in_used, &got);
      if (r == LIBDEFLATE_INSUFFICIENT_SPACE) {
        unsigned char *o2 = realloc(out, 2 * cap);
        if (!o2) break;
        out = o2;
        cap *= 2;
        continue;
      }
      if (r != LIBDEFLATE_SUCCESS) {
        total = 0;
        break;
      }
      pos += in_used;
      total += got;
    }
    libdeflate_free_decompressor(d);
    free(out);
  }
  free(buf);
  return total;
}

/* One analyze in a child process; stage times come back through a pipe. */
static int run_child(const char *water, const char *fat, int threads, const char *outdir,
                     run_times *t, long *maxrss_kb) {
  int fd[2];
  if (pipe(fd) != 0) return -1;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    close(fd[0]);
    psp_memory_policy(); /* as the CLI */
    psp_context *ctx = psp_context_create();
    psp_context_set_threads(ctx, threads);
    psp_analysis_options a;
    psp_analysis_options_default(&a);
    a.water_path = water;
    a.fat_path = fat;
    psp_error *err = NULL;
    double t0 = psp_now();
    psp_result *r = psp_analyze(&a, ctx, &err);
    bool ok = r && psp_result_write(r, outdir, NULL, ctx, &err);
    psp_result_free(r);
    run_times rt;
    memset(&rt, 0, sizeof rt);
    rt.total = psp_now() - t0;
    if (!ok) {
      fprintf(stderr, "psp_bench: %s\n", psp_error_message(err));
      _exit(1);
    }
    for (size_t i = 0; i < psp_context_timing_count(ctx) && rt.n < NSTAGE; i++, rt.n++) {
      const char *nm = psp_context_timing(ctx, i, &rt.sec[rt.n]);
      snprintf(rt.name[rt.n], sizeof rt.name[0], "%s", nm);
    }
    ssize_t w = write(fd[1], &rt, sizeof rt);
    _exit(w == (ssize_t)sizeof rt ? 0 : 1);
  }
  close(fd[1]);
  ssize_t got = read(fd[0], t, sizeof *t);
  close(fd[0]);
  int status;
  struct rusage ru; /* this child's own peak memory */
  if (wait4(pid, &status, 0, &ru) < 0) return -1;
  *maxrss_kb = ru.ru_maxrss;
  return (got == (ssize_t)sizeof *t && WIFEXITED(status) && WEXITSTATUS(status) == 0) ? 0 : -1;
}

static double stage_of(const run_times *t, const char *name) {
  for (int i = 0; i < t->n; i++)
    if (!strcmp(t->name[i], name)) return t->sec[i];
  return 0;
}

static bool same_file(const char *a, const char *b) {
  size_t la, lb;
  unsigned char *x = psp_read_file(a, &la, (int64_t)1 << 34, NULL);
  unsigned char *y = psp_read_file(b, &lb, (int64_t)1 << 34, NULL);
  bool same = x && y && la == lb && memcmp(x, y, la) == 0;
  free(x);
  free(y);
  return same;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: psp_bench WATER FAT [REPS]\n");
    return 2;
  }
  int reps = argc > 3 ? atoi(argv[3]) : 5;
  if (reps < 1 || reps > MAX_REPS) reps = 5;
  const char *water = argv[1], *fat = argv[2];

  /* Rounds: the floor, then analyze at 1 and at 2 threads, repeated reps
   * times, so that a drift of the machine's speed (shared hosts, clock
   * changes) falls on all three alike and the ratios stay fair. */
  const char *stages[] = {
      "load",       "ffmap",     "ffmap.plausibility", "segment.landmarks", "segment",
      "measure",    "levels",    "write.nifti",        "write.tables",      "write.qc",
      "write.html", "write.sync"};
  const int nst = (int)(sizeof stages / sizeof *stages);
  double fl[MAX_REPS], per[2][16][MAX_REPS], tot[2][MAX_REPS];
  double med[2][16], total[2];
  long rss[2] = {0, 0};
  char dirs[2][64];
  size_t bytes = 0;
  for (int ti = 0; ti < 2; ti++) {
    snprintf(dirs[ti], sizeof dirs[ti], "/tmp/psp_bench_%d_XXXXXX", ti + 1);
    if (!mkdtemp(dirs[ti])) return 1;
  }
  for (int r = 0; r < reps; r++) {
    double t0 = psp_now();
    bytes = floor_one(water) + floor_one(fat);
    fl[r] = psp_now() - t0;
    if (!bytes) {
      fprintf(stderr, "psp_bench: cannot read %s / %s\n", water, fat);
      return 1;
    }
    for (int ti = 0; ti < 2; ti++) {
      run_times t;
      long kb = 0;
      if (run_child(water, fat, ti + 1, dirs[ti], &t, &kb) != 0) {
        fprintf(stderr, "psp_bench: analyze failed\n");
        return 1;
      }
      if (kb > rss[ti]) rss[ti] = kb;
      for (int s = 0; s < nst; s++)
        per[ti][s][r] = stage_of(&t, stages[s]);
      tot[ti][r] = t.total;
    }
  }
  double floor_s = median(fl, reps);
  for (int ti = 0; ti < 2; ti++) {
    for (int s = 0; s < nst; s++)
      med[ti][s] = median(per[ti][s], reps);
    total[ti] = median(tot[ti], reps);
  }

  printf("scan: %s + %s; %d rounds (floor, 1 thread, 2 threads interleaved), medians\n", water, fat,
         reps);
  printf("floor (read + inflate both inputs with libdeflate, %.1f MB): %.4f s\n", bytes / 1e6,
         floor_s);
  printf("\n%-20s %10s %10s %8s %9s\n", "stage", "1 thread", "2 threads", "1->2", "x floor");
  double compute[2] = {0, 0};
  for (int s = 0; s < nst; s++) {
    printf("%-20s %9.4fs %9.4fs %7.2fx %8.2fx\n", stages[s], med[0][s], med[1][s],
           med[1][s] > 0 ? med[0][s] / med[1][s] : 0.0, med[1][s] / floor_s);
    if (!strcmp(stages[s], "ffmap") || !strcmp(stages[s], "segment") ||
        !strcmp(stages[s], "measure") || !strcmp(stages[s], "levels")) {
      compute[0] += med[0][s];
      compute[1] += med[1][s];
    }
  }
  printf("%-20s %9.4fs %9.4fs %7.2fx %8.2fx\n", "analyze end to end", total[0], total[1],
         total[0] / total[1], total[1] / floor_s);
  printf("\ncompute stages (ffmap+segment+measure+levels) 1->2 threads: %.2fx (target >= 1.7)\n",
         compute[0] / compute[1]);
  printf("end to end 1->2 threads: %.2fx (target >= 1.4)\n", total[0] / total[1]);
  printf("analyze (2 threads) / floor: %.1fx (target <= 8)\n", total[1] / floor_s);
  /* input voxels x 4 bytes: the inflated float size of one input, from the
   * uncompressed bytes (int16 inputs: bytes/2 voxels per file) is not known
   * here in general, so take the output FF map's size from the run */
  psp_error *err = NULL;
  char ffp[128];
  snprintf(ffp, sizeof ffp, "%s/fatfraction.nii.gz", dirs[0]);
  psp_context *ctx = psp_context_create();
  psp_load_options lo = {.volume_index = -1, .allow_nan = true};
  psp_volume *ffv = psp_nifti_load(ffp, &lo, ctx, &err);
  psp_context_free(ctx);
  if (!ffv) fprintf(stderr, "psp_bench: %s\n", psp_error_message(err));
  psp_error_free(err);
  double voxels = ffv ? (double)psp_volume_voxel_count(ffv) : 0;
  psp_volume_free(ffv);
  double budget_mb = 8.0 * voxels * 4.0 / 1e6;
  /* ru_maxrss is in KiB; MB here = 10^6 bytes, like the budget */
  printf("peak memory (max RSS over the rounds): 1 thread %.1f MB, 2 threads %.1f MB; budget 8 x "
         "%.0f voxels x 4 B = %.1f MB\n",
         rss[0] * 1024.0 / 1e6, rss[1] * 1024.0 / 1e6, voxels, budget_mb);
  const char *files[] = {"fatfraction.nii.gz", "dseg.nii.gz", "slices.csv",      "volumes.csv",
                         "levels.csv",         "report.html", "qc/slice_000.png"};
  bool same = true;
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    char a[256], b[256];
    snprintf(a, sizeof a, "%s/%s", dirs[0], files[i]);
    snprintf(b, sizeof b, "%s/%s", dirs[1], files[i]);
    if (!same_file(a, b)) {
      printf("DIFFERENT at 1 vs 2 threads: %s\n", files[i]);
      same = false;
    }
  }
  printf("outputs at 1 and 2 threads: %s\n", same ? "byte-identical" : "DIFFERENT");
  for (int ti = 0; ti < 2; ti++) {
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dirs[ti]);
    if (system(cmd) != 0) fprintf(stderr, "psp_bench: could not remove %s\n", dirs[ti]);
  }
  return same ? 0 : 1;
}
