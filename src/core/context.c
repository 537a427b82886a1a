/*
 * DESIGN: the context replaces mutable globals: thread count, log callback
 * and level, the voxel limit, and the warnings collected during a run (they
 * end up in report.json). It is not shared between concurrent analyses; one
 * context per subject in flight.
 */
#include "core/internal.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct psp_context {
  int threads;
  psp_log_fn log_fn;
  void *log_user;
  psp_log_level log_level;
  char **warnings;
  size_t n_warnings, cap_warnings;
  int64_t max_voxels;
  struct {
    char name[32];
    double seconds;
  } stages[PSP_MAX_STAGES];
  size_t n_stages;
  /* a forked context records its messages for psp_context_join instead */
  bool buffered, lost;
  struct {
    psp_log_level level;
    char *text;
  } * held;
  size_t n_held, cap_held;
};

psp_context *psp_context_create(void) {
  psp_context *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->threads = 0;
  c->log_level = PSP_LOG_WARN;
  c->max_voxels = (int64_t)1 << 31;
  return c;
}

void psp_context_free(psp_context *ctx) {
  if (!ctx) return;
  for (size_t i = 0; i < ctx->n_warnings; i++)
    free(ctx->warnings[i]);
  free(ctx->warnings);
  for (size_t i = 0; i < ctx->n_held; i++)
    free(ctx->held[i].text);
  free(ctx->held);
  free(ctx);
}

psp_context *psp_context_fork(const psp_context *parent) {
  psp_context *c = psp_context_create();
  if (!c) return NULL;
  c->threads = parent->threads;
  c->log_level = parent->log_level;
  c->max_voxels = parent->max_voxels;
  c->buffered = true;
  return c;
}

bool psp_context_join(psp_context *parent, psp_context *child) {
  const bool ok = !child->lost;
  for (size_t i = 0; i < child->n_held; i++) {
    if (child->held[i].level == PSP_LOG_WARN)
      psp_warn(parent, "%s", child->held[i].text);
    else
      psp_log(parent, child->held[i].level, "%s", child->held[i].text);
  }
  psp_context_free(child);
  return ok;
}

void psp_context_set_threads(psp_context *ctx, int n) {
  ctx->threads = n;
  if (n > 0) omp_set_num_threads(n);
}

int psp_context_threads(const psp_context *ctx) {
  return (ctx && ctx->threads > 0) ? ctx->threads : omp_get_max_threads();
}

void psp_context_set_log(psp_context *ctx, psp_log_fn fn, void *user, psp_log_level max_level) {
  ctx->log_fn = fn;
  ctx->log_user = user;
  ctx->log_level = max_level;
}

static void vlog(psp_context *ctx, psp_log_level level, const char *fmt, va_list ap, bool keep) {
  if (!ctx) return;
  char buf[2048];
  vsnprintf(buf, sizeof buf, fmt, ap);
  if (ctx->buffered) { /* replayed in order by psp_context_join */
    if (level > ctx->log_level && !keep) return;
    if (ctx->n_held == ctx->cap_held) {
      size_t cap = ctx->cap_held ? ctx->cap_held * 2 : 8;
      void *h = realloc(ctx->held, cap * sizeof *ctx->held);
      if (h) {
        ctx->held = h;
        ctx->cap_held = cap;
      }
    }
    char *copy = ctx->n_held < ctx->cap_held ? strdup(buf) : NULL;
    if (copy) {
      ctx->held[ctx->n_held].level = level;
      ctx->held[ctx->n_held++].text = copy;
    } else {
      ctx->lost = true;
    }
    return;
  }
  if (keep) {
    if (ctx->n_warnings == ctx->cap_warnings) {
      size_t cap = ctx->cap_warnings ? ctx->cap_warnings * 2 : 8;
      char **w = realloc(ctx->warnings, cap * sizeof *w);
      if (w) {
        ctx->warnings = w;
        ctx->cap_warnings = cap;
      }
    }
    if (ctx->n_warnings < ctx->cap_warnings) {
      char *copy = strdup(buf);
      if (copy) ctx->warnings[ctx->n_warnings++] = copy;
    }
  }
  if (ctx->log_fn && level <= ctx->log_level) ctx->log_fn(ctx->log_user, level, buf);
}

void psp_warn(psp_context *ctx, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(ctx, PSP_LOG_WARN, fmt, ap, true);
  va_end(ap);
}

void psp_info(psp_context *ctx, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(ctx, PSP_LOG_INFO, fmt, ap, false);
  va_end(ap);
}

void psp_log(psp_context *ctx, psp_log_level level, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vlog(ctx, level, fmt, ap, false);
  va_end(ap);
}

size_t psp_context_warning_count(const psp_context *ctx) {
  return ctx ? ctx->n_warnings : 0;
}

const char *psp_context_warning(const psp_context *ctx, size_t i) {
  return (ctx && i < ctx->n_warnings) ? ctx->warnings[i] : NULL;
}

void psp_context_set_max_voxels(psp_context *ctx, int64_t max_voxels) {
  ctx->max_voxels = max_voxels;
}

int64_t psp_context_max_voxels(const psp_context *ctx) {
  return ctx ? ctx->max_voxels : ((int64_t)1 << 31);
}

const char *psp_version(void) {
  return PSP_VERSION_STRING;
}

void psp_memory_policy(void) {
#ifdef __GLIBC__
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  /* fixing the mmap threshold also fixes the trim threshold at 128 KiB: the
   * heap's top was then given back and faulted in again for every QC
   * slice's canvas and zlib state and many scratch buffers below 1 MiB.
   * Up to 8 MiB of free heap top is kept: about 2,400 fewer page faults per
   * 400 x 400 x 29 analysis, peak memory +0.7 MB */
  mallopt(M_TRIM_THRESHOLD, 8 << 20);
#endif
}

double psp_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void psp_context_add_time(psp_context *ctx, const char *stage, double seconds) {
  if (!ctx) return;
  for (size_t i = 0; i < ctx->n_stages; i++)
    if (!strcmp(ctx->stages[i].name, stage)) {
      ctx->stages[i].seconds += seconds;
      return;
    }
  if (ctx->n_stages == PSP_MAX_STAGES) return;
  snprintf(ctx->stages[ctx->n_stages].name, sizeof ctx->stages[0].name, "%s", stage);
  ctx->stages[ctx->n_stages++].seconds = seconds;
}

size_t psp_context_timing_count(const psp_context *ctx) {
  return ctx ? ctx->n_stages : 0;
}

const char *psp_context_timing(const psp_context *ctx, size_t i, double *seconds) {
  if (!ctx || i >= ctx->n_stages) return NULL;
  if (seconds) *seconds = ctx->stages[i].seconds;
  return ctx->stages[i].name;
}

void psp_context_reset_timings(psp_context *ctx) {
  if (ctx) ctx->n_stages = 0;
}
