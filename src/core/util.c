/*
 * DESIGN: small shared helpers — text buffers for the CSV/JSON/TSV writers,
 * deterministic sorting and quantiles for the statistics, and the file
 * primitives every output goes through (whole-file read with a size limit,
 * atomic write = temporary file in the same folder + fsync + rename, so a
 * crash never leaves a half-written file under the final name; whole, or
 * in pieces through a psp_file_writer for outputs streamed as they are
 * produced).
 */
#define _GNU_SOURCE /* sync_file_range */
#include "core/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <nettle/sha2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <dirent.h>
#include <unistd.h>

void psp_strbuf_init(psp_strbuf *b) {
  memset(b, 0, sizeof *b);
}

static bool strbuf_reserve(psp_strbuf *b, size_t extra) {
  if (b->failed) return false;
  if (b->len + extra + 1 <= b->cap) return true;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + extra + 1)
    cap *= 2;
  char *d = realloc(b->data, cap);
  if (!d) {
    b->failed = true;
    return false;
  }
  b->data = d;
  b->cap = cap;
  return true;
}

void psp_strbuf_printf(psp_strbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  if (n >= 0 && strbuf_reserve(b, (size_t)n)) {
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
  } else {
    b->failed = true;
  }
  va_end(ap);
}

void psp_strbuf_append(psp_strbuf *b, const char *s) {
  size_t n = strlen(s);
  if (!strbuf_reserve(b, n)) return;
  memcpy(b->data + b->len, s, n + 1);
  b->len += n;
}

char *psp_strbuf_take(psp_strbuf *b, psp_error **err) {
  if (b->failed || !strbuf_reserve(b, 0)) {
    psp_strbuf_free(b);
    psp_error_set(err, PSP_ERR_NOMEM, "out of memory building text output");
    return NULL;
  }
  b->data[b->len] = '\0';
  char *s = b->data;
  memset(b, 0, sizeof *b);
  return s;
}

void psp_strbuf_free(psp_strbuf *b) {
  free(b->data);
  memset(b, 0, sizeof *b);
}

void psp_fmt_num(char *out, size_t n, double v, int decimals) {
  if (isnan(v) || isinf(v)) {
    out[0] = '\0';
    return;
  }
  /* the last few units in the last place of v depend on the order of a
   * sum, or on a voxel size parsed from DICOM text instead of a NIfTI
   * float: a value that is a tie at the printed precision (e.g. 3.125 at
   * 2 decimals) would round either way. Snapped to 4 more decimals first,
   * such a value prints the same from either input. */
  double sc = pow(10.0, decimals + 4);
  if (fabs(v) * sc < 0x1p52) v = nearbyint(v * sc) / sc;
  snprintf(out, n, "%.*f", decimals, v);
  /* avoid "-0.000" so that outputs compare equal */
  if (out[0] == '-') {
    bool zero = true;
    for (const char *p = out + 1; *p; p++)
      if (*p != '0' && *p != '.') zero = false;
    if (zero) memmove(out, out + 1, strlen(out));
  }
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

/* Ascending sort of non-NaN floats: LSD radix sort on the order-preserving
 * integer image of the bits (4 passes of 8 bits), O(n); qsort for short
 * arrays or when the scratch buffer cannot be allocated. */
static uint32_t float_key(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

void psp_sort_floats(float *v, size_t n) {
  float *tmp = n > 512 ? malloc(n * sizeof *tmp) : NULL;
  if (!tmp) {
    qsort(v, n, sizeof *v, cmp_float);
    return;
  }
  size_t count[4][256];
  memset(count, 0, sizeof count);
  for (size_t i = 0; i < n; i++) {
    uint32_t k = float_key(v[i]);
    for (int b = 0; b < 4; b++)
      count[b][(k >> (8 * b)) & 0xff]++;
  }
  float *src = v, *dst = tmp;
  for (int b = 0; b < 4; b++) {
    size_t pos = 0;
    bool trivial = false;
    for (int c = 0; c < 256; c++) {
      if (count[b][c] == n) trivial = true;
      size_t t = count[b][c];
      count[b][c] = pos;
      pos += t;
    }
    if (trivial) continue; /* every key has the same byte here */
    for (size_t i = 0; i < n; i++) {
      uint32_t k = float_key(src[i]);
      dst[count[b][(k >> (8 * b)) & 0xff]++] = src[i];
    }
    float *t = src;
    src = dst;
    dst = t;
  }
  if (src != v) memcpy(v, src, n * sizeof *v);
  free(tmp);
}

static int cmp_key(const void *a, const void *b) {
  uint32_t x = float_key(*(const float *)a), y = float_key(*(const float *)b);
  return (x > y) - (x < y);
}

/* The two order statistics psp_quantile_sorted interpolates, from a
 * histogram of the top 16 bits of the sort key: the values in the buckets
 * holding them are moved to the front and sorted (key order, as the radix
 * sort), the others are left unsorted. */
double psp_quantile_select(float *v, size_t n, double q) {
  if (n == 0) return NAN;
  size_t *h = n > 4096 ? calloc((size_t)1 << 16, sizeof *h) : NULL;
  if (!h) {
    psp_sort_floats(v, n);
    return psp_quantile_sorted(v, n, q);
  }
  double pos = q * (double)(n - 1);
  size_t lo = (size_t)floor(pos);
  size_t hi = lo + 1 < n ? lo + 1 : lo;
  for (size_t i = 0; i < n; i++)
    h[float_key(v[i]) >> 16]++;
  size_t before = 0, upto;
  uint32_t bl = 0, bh;
  while (before + h[bl] <= lo)
    before += h[bl++];
  for (upto = before, bh = bl; upto + h[bh] <= hi;)
    upto += h[bh++];
  free(h);
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    const uint32_t b = float_key(v[i]) >> 16;
    if (b >= bl && b <= bh) {
      const float t = v[m];
      v[m++] = v[i];
      v[i] = t;
    }
  }
  if (m > 512)
    psp_sort_floats(v, m);
  else
    qsort(v, m, sizeof *v, cmp_key);
  double t = pos - (double)lo;
  return (double)v[lo - before] * (1.0 - t) + (double)v[hi - before] * t;
}

double psp_quantile_sorted(const float *s, size_t n, double q) {
  if (n == 0) return NAN;
  double pos = q * (double)(n - 1);
  size_t lo = (size_t)floor(pos);
  size_t hi = lo + 1 < n ? lo + 1 : lo;
  double t = pos - (double)lo;
  return (double)s[lo] * (1.0 - t) + (double)s[hi] * t;
}

bool psp_mkdir_p(const char *path, psp_error **err) {
  char buf[4096];
  if (strlen(path) >= sizeof buf) return psp_error_set(err, PSP_ERR_IO, "%s: path too long", path);
  strcpy(buf, path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
      return psp_error_set(err, PSP_ERR_IO, "%s: cannot create folder: %s", buf, strerror(errno));
    *p = '/';
  }
  if (mkdir(buf, 0777) != 0 && errno != EEXIST)
    return psp_error_set(err, PSP_ERR_IO, "%s: cannot create folder: %s", buf, strerror(errno));
  struct stat st;
  if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
    return psp_error_set(err, PSP_ERR_IO, "%s: exists and is not a folder", buf);
  return true;
}

void psp_remove_tree_shallow(const char *path) {
  DIR *d = opendir(path);
  if (!d) return;
  struct dirent *e;
  char buf[4096];
  while ((e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(buf, sizeof buf, "%s/%s", path, e->d_name);
    unlink(buf);
  }
  closedir(d);
  rmdir(path);
}

void *psp_read_file(const char *path, size_t *len, int64_t max_bytes, psp_error **err) {
  struct stat st;
  if (stat(path, &st) != 0) {
    psp_error_set(err, PSP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    return NULL;
  }
  if (S_ISDIR(st.st_mode)) {
    psp_error_set(err, PSP_ERR_IO, "%s: is a folder, expected a file", path);
    return NULL;
  }
  FILE *f = fopen(path, "rb");
  if (!f) {
    psp_error_set(err, PSP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    return NULL;
  }
  if (max_bytes > 0 && (int64_t)st.st_size > max_bytes) {
    fclose(f);
    psp_error_set(err, PSP_ERR_LIMIT, "%s: file is %lld bytes, more than the limit of %lld", path,
                  (long long)st.st_size, (long long)max_bytes);
    return NULL;
  }
  size_t n = (size_t)st.st_size;
  unsigned char *buf = psp_malloc(n + 1, err);
  if (!buf) {
    fclose(f);
    return NULL;
  }
  psp_advise_huge(buf, n + 1);
  size_t got = fread(buf, 1, n, f);
  bool bad = ferror(f);
  fclose(f);
  if (bad || got != n) {
    free(buf);
    psp_error_set(err, PSP_ERR_IO, "%s: read error", path);
    return NULL;
  }
  buf[n] = 0;
  *len = n;
  return buf;
}

struct psp_file_writer {
  char *path, *tmp;
  int fd;
  psp_sync sync;
};

void psp_file_writer_abort(psp_file_writer *w) {
  if (!w) return;
  if (w->fd >= 0) close(w->fd);
  if (w->tmp) unlink(w->tmp);
  free(w->tmp);
  free(w);
}

/* A path that exists and is no regular file (a device such as /dev/null, a
 * pipe, a socket) is written to as it is: renaming a new file over it would
 * replace it (as root: /dev/null becomes a regular file). A folder is an
 * error. 1 written directly (*fd open), 0 not such a path, -1 error. */
static int open_special(const char *path, int *fd, psp_error **err) {
  struct stat st;
  if (stat(path, &st) != 0 || S_ISREG(st.st_mode)) return 0;
  if (S_ISDIR(st.st_mode)) {
    psp_error_set(err, PSP_ERR_IO, "%s: is a folder, expected a file", path);
    return -1;
  }
  *fd = open(path, O_WRONLY);
  if (*fd < 0) {
    psp_error_set(err, PSP_ERR_IO, "%s: cannot open for writing: %s", path, strerror(errno));
    return -1;
  }
  return 1;
}

psp_file_writer *psp_file_writer_open(const char *path, psp_sync sync, psp_error **err) {
  size_t lp = strlen(path) + 1, n = lp + 32;
  psp_file_writer *w = psp_malloc(sizeof *w + lp, err);
  char *tmp = w ? psp_malloc(n, err) : NULL;
  if (!tmp) {
    free(w);
    return NULL;
  }
  w->path = (char *)(w + 1);
  memcpy(w->path, path, lp);
  w->sync = sync;
  w->tmp = tmp;
  int special = open_special(path, &w->fd, err);
  if (special != 0) {
    free(tmp);
    if (special < 0) {
      free(w);
      return NULL;
    }
    w->tmp = NULL; /* written in place: no rename */
    return w;
  }
  /* same folder, hidden, unique per process */
  const char *slash = strrchr(path, '/');
  if (slash)
    snprintf(tmp, n, "%.*s/.%s.%ld.tmp", (int)(slash - path), path, slash + 1, (long)getpid());
  else
    snprintf(tmp, n, ".%s.%ld.tmp", path, (long)getpid());
  w->fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (w->fd < 0) {
    psp_error_set(err, PSP_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    free(tmp);
    free(w);
    return NULL;
  }
  return w;
}

bool psp_file_writer_write(psp_file_writer *w, const void *data, size_t len, psp_error **err) {
  const unsigned char *p = data;
  size_t left = len;
  while (left > 0) {
    ssize_t k = write(w->fd, p, left);
    if (k < 0) {
      if (errno == EINTR) continue;
      psp_error_set(err, PSP_ERR_IO, "%s: write failed: %s", w->path, strerror(errno));
      psp_file_writer_abort(w);
      return false;
    }
    p += k;
    left -= (size_t)k;
  }
  return true;
}

bool psp_file_writer_commit(psp_file_writer *w, psp_error **err) {
  if (w->sync == PSP_SYNC_NOW && fsync(w->fd) != 0 && errno != EINVAL) {
    psp_error_set(err, PSP_ERR_IO, "%s: write failed: %s", w->path, strerror(errno));
    psp_file_writer_abort(w);
    return false;
  }
  const int fd = w->fd;
  w->fd = -1;
  if (close(fd) != 0) {
    psp_error_set(err, PSP_ERR_IO, "%s: write failed: %s", w->path, strerror(errno));
    psp_file_writer_abort(w);
    return false;
  }
  if (w->tmp && rename(w->tmp, w->path) != 0) {
    psp_error_set(err, PSP_ERR_IO, "%s: cannot rename into place: %s", w->path, strerror(errno));
    psp_file_writer_abort(w);
    return false;
  }
  free(w->tmp);
  free(w);
  return true;
}

void psp_advise_huge(void *p, size_t n) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t huge = (uintptr_t)2 << 20;
  if (!p || n < 2 * huge) return;
  const uintptr_t a = ((uintptr_t)p + huge - 1) & ~(huge - 1), e = ((uintptr_t)p + n) & ~(huge - 1);
  if (e > a) madvise((void *)a, e - a, MADV_HUGEPAGE); /* (a hint: failure is harmless) */
#else
  (void)p;
  (void)n;
#endif
}

bool psp_write_file(const char *path, const void *data, size_t len, psp_sync sync,
                    psp_error **err) {
  psp_file_writer *w = psp_file_writer_open(path, sync, err);
  return w && psp_file_writer_write(w, data, len, err) && psp_file_writer_commit(w, err);
}

bool psp_write_file_atomic(const char *path, const void *data, size_t len, psp_error **err) {
  return psp_write_file(path, data, len, PSP_SYNC_NOW, err);
}

/* Up to SYNC_BATCH files of a folder are open at once in psp_sync_folder. */
enum { SYNC_BATCH = 64 };

/* fsync of fds[0..n), after asking the kernel to start writing all of them
 * back (Linux): the block allocations of all the files then go into one
 * journal commit, which the first fsync waits for and the others find done.
 * Closes the fds. */
static bool sync_fds(const char *dir, int *fds, char (*names)[256], size_t n, psp_error **err) {
  bool ok = true;
#ifdef __linux__
  for (size_t i = 0; i < n; i++)
    sync_file_range(fds[i], 0, 0, SYNC_FILE_RANGE_WRITE);
#endif
  for (size_t i = 0; i < n; i++) {
    if (ok && fsync(fds[i]) != 0 && errno != EINVAL)
      ok =
          psp_error_set(err, PSP_ERR_IO, "%s/%s: write failed: %s", dir, names[i], strerror(errno));
    close(fds[i]);
  }
  return ok;
}

bool psp_sync_folder(const char *dir, psp_error **err) {
  DIR *d = opendir(dir);
  if (!d) return psp_error_set(err, PSP_ERR_IO, "%s: cannot open: %s", dir, strerror(errno));
  int fds[SYNC_BATCH];
  char(*names)[256] = psp_malloc(SYNC_BATCH * sizeof *names, err);
  bool ok = names != NULL;
  size_t n = 0;
  struct dirent *e;
  while (ok && (e = readdir(d)) != NULL) {
    struct stat st;
    if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
      continue;
    int fd = openat(dirfd(d), e->d_name, O_RDONLY);
    if (fd < 0) {
      ok =
          psp_error_set(err, PSP_ERR_IO, "%s/%s: cannot open: %s", dir, e->d_name, strerror(errno));
      break;
    }
    fds[n] = fd;
    snprintf(names[n], sizeof names[n], "%s", e->d_name);
    if (++n == SYNC_BATCH) {
      ok = sync_fds(dir, fds, names, n, err);
      n = 0;
    }
  }
  if (n > 0) {
    if (ok)
      ok = sync_fds(dir, fds, names, n, err);
    else
      for (size_t i = 0; i < n; i++)
        close(fds[i]);
  }
  if (ok && fsync(dirfd(d)) != 0 && errno != EINVAL)
    ok = psp_error_set(err, PSP_ERR_IO, "%s: cannot sync the folder: %s", dir, strerror(errno));
  closedir(d);
  free(names);
  return ok;
}

bool psp_sha256_file(const char *path, char hex[65], psp_error **err) {
  FILE *f = fopen(path, "rb");
  if (!f) return psp_error_set(err, PSP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
  struct sha256_ctx c;
  sha256_init(&c);
  unsigned char buf[1 << 16];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0)
    sha256_update(&c, n, buf);
  bool bad = ferror(f);
  fclose(f);
  if (bad) return psp_error_set(err, PSP_ERR_IO, "%s: read error", path);
  unsigned char d[SHA256_DIGEST_SIZE];
  sha256_digest(&c, sizeof d, d);
  for (int i = 0; i < SHA256_DIGEST_SIZE; i++)
    snprintf(hex + 2 * i, 3, "%02x", d[i]);
  return true;
}

void psp_sha256_buffer(const void *data, size_t len, char hex[65]) {
  struct sha256_ctx c;
  sha256_init(&c);
  sha256_update(&c, len, data);
  unsigned char d[SHA256_DIGEST_SIZE];
  sha256_digest(&c, sizeof d, d);
  for (int i = 0; i < SHA256_DIGEST_SIZE; i++)
    snprintf(hex + 2 * i, 3, "%02x", d[i]);
}

bool psp_path_join(char *out, size_t n, const char *dir, const char *name, psp_error **err) {
  int w = snprintf(out, n, "%s/%s", dir, name);
  if (w < 0 || (size_t)w >= n)
    return psp_error_set(err, PSP_ERR_IO, "%s/%s: path too long", dir, name);
  return true;
}
