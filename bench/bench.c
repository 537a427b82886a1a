/* Benchmark (not a test): time to bring the inputs into memory (load =
 * read + inflate + convert) versus the time for the FF map + measurement,
 * and the full write of the outputs, on one scan; medians of N repetitions,
 * reported as ratios measured in the same run.
 *   psp_bench WATER FAT LABELS SCHEME [REPS] */
#include "levels/levels.h"
#include "paraspinal.h"
#include "segment/segment.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp);
  return v[n / 2];
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: psp_bench WATER FAT LABELS SCHEME [REPS]\n");
    return 2;
  }
  int reps = argc > 5 ? atoi(argv[5]) : 5;
  if (reps < 1 || reps > 100) reps = 5;
  double t_load[100], t_ff[100], t_meas[100], t_all[100], t_seg[100], t_lev[100], t_auto[100];
  psp_error *err = NULL;
  for (int r = 0; r < reps; r++) {
    psp_context *ctx = psp_context_create();
    double t0 = now();
    psp_volume *w = psp_nifti_load(argv[1], NULL, ctx, &err);
    psp_volume *f = w ? psp_nifti_load(argv[2], NULL, ctx, &err) : NULL;
    psp_volume *l = f ? psp_nifti_load(argv[3], NULL, ctx, &err) : NULL;
    double t1 = now();
    if (!l) {
      fprintf(stderr, "psp_bench: %s\n", psp_error_message(err));
      return 1;
    }
    psp_volume_adopt_geometry(w, f, NULL);
    psp_dixon_options o;
    psp_dixon_options_default(&o);
    psp_ffmap *m = psp_ffmap_from_water_fat(w, f, &o, ctx, &err);
    double t2 = now();
    psp_scheme *s = psp_scheme_builtin(argv[4], &err);
    psp_volume *lab = (m && s) ? psp_labels_map(l, s, argv[3], ctx, &err) : NULL;
    psp_measurements *meas = lab ? psp_measure(lab, m, ctx, &err) : NULL;
    double t3 = now();
    if (!meas) {
      fprintf(stderr, "psp_bench: %s\n", psp_error_message(err));
      return 1;
    }
    psp_segmentation *seg = psp_segment(m, ctx, &err);
    double t3b = now();
    psp_levels *lev = seg ? psp_levels_detect(m, seg, NULL, ctx, &err) : NULL;
    double t3c = now();
    if (!lev) {
      fprintf(stderr, "psp_bench: %s\n", psp_error_message(err));
      return 1;
    }
    t_seg[r] = t3b - t3;
    t_lev[r] = t3c - t3b;
    psp_levels_free(lev);
    psp_segmentation_free(seg);
    t_load[r] = t1 - t0;
    t_ff[r] = t2 - t1;
    t_meas[r] = t3 - t2;
    psp_measurements_free(meas);
    psp_volume_free(lab);
    psp_scheme_free(s);
    psp_ffmap_free(m);
    psp_volume_free(w);
    psp_volume_free(f);
    psp_volume_free(l);
    /* whole analyze, outputs included */
    psp_analysis_options a;
    psp_analysis_options_default(&a);
    a.water_path = argv[1];
    a.fat_path = argv[2];
    a.labels_path = argv[3];
    a.label_scheme = argv[4];
    char dir[] = "/tmp/psp_bench_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    double t4 = now();
    psp_result *res = psp_analyze(&a, ctx, &err);
    bool ok = res && psp_result_write(res, dir, NULL, ctx, &err);
    double t5 = now();
    psp_result_free(res);
    if (!ok) {
      fprintf(stderr, "psp_bench: %s\n", psp_error_message(err));
      return 1;
    }
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) return 1;
    t_all[r] = t5 - t4;
    /* the same without labels: automatic segmentation */
    a.labels_path = NULL;
    a.label_scheme = NULL;
    char dir2[] = "/tmp/psp_bench_XXXXXX";
    if (!mkdtemp(dir2)) return 1;
    double t6 = now();
    res = psp_analyze(&a, ctx, &err);
    ok = res && psp_result_write(res, dir2, NULL, ctx, &err);
    double t7 = now();
    psp_result_free(res);
    if (!ok) {
      fprintf(stderr, "psp_bench: %s\n", psp_error_message(err));
      return 1;
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir2);
    if (system(cmd) != 0) return 1;
    t_auto[r] = t7 - t6;
    psp_context_free(ctx);
  }
  double load = median(t_load, reps), ff = median(t_ff, reps), meas = median(t_meas, reps),
         all = median(t_all, reps), seg = median(t_seg, reps), lev = median(t_lev, reps),
         aut = median(t_auto, reps);
  printf("scan: %s + %s (labels %s), %d repetitions, medians\n", argv[1], argv[2], argv[3], reps);
  printf("load (read+inflate+convert, 3 files): %8.4f s\n", load);
  printf("ffmap:                                %8.4f s\n", ff);
  printf("labels + measure:                     %8.4f s\n", meas);
  printf("segmentation (automatic):             %8.4f s\n", seg);
  printf("vertebral levels:                     %8.4f s\n", lev);
  printf("analyze --labels, all outputs + QC:   %8.4f s\n", all);
  printf("analyze automatic, all outputs + QC:  %8.4f s\n", aut);
  printf("ratio segmentation / load:            %8.2f\n", seg / load);
  printf("ratio (ffmap + measure) / load:       %8.2f\n", (ff + meas) / load);
  printf("ratio analyze --labels / load:        %8.2f\n", all / load);
  printf("ratio analyze automatic / load:       %8.2f\n", aut / load);
  return 0;
}
