/*
 * DESIGN: NIfTI-1/NIfTI-2 input and output. The whole file is brought into
 * memory (inflated when gzip-compressed, header first so that the grid size
 * is checked against the context's voxel limit before the voxel buffer is
 * allocated), then nifti_clib (libnifti2) interprets the header: byte
 * order, quaternion -> qform matrix, sform. We pick the sform when
 * sform_code > 0, else the qform when qform_code > 0, else the pixdim
 * diagonal ("method 1" of the NIfTI standard, with a warning that left/right
 * is then unknown). Voxels are converted to float32 with scl_slope/scl_inter
 * (NaN, infinite and negative voxels counted in the same pass; unscaled
 * integer and float32 voxels by branch-free, vectorised loops) and
 * reordered to LPS by psp_volume_from_file_order_take, which keeps the
 * converted buffer when no axis is permuted (flips in place; no second
 * copy of the volume). A gzip file (of up to 4 bytes per voxel) is inflated
 * by libdeflate straight into the end of the float buffer and converted in
 * place, front to back (no buffer of the file's size besides the floats);
 * other files are converted from the inflated (or zlib-streamed, which also
 * words the errors) or raw bytes. Writing builds the header with nifti_clib
 * from the exact affine (sform exact, qform the nearest rigid transform)
 * and streams the file: chunks of 2 MiB of the file (header + voxels put
 * back in the file's own order, a loop per type; float32 voxels in file
 * order are compressed straight from the volume) are compressed in
 * parallel as independent gzip members and written in order through an
 * atomic writer (temporary file, fsync unless the caller syncs the folder
 * later, rename) as they are ready, so no
 * copy of the whole file, compressed or not, is held.
 * Working from memory also lets fuzzers drive the parser without files.
 */
#include "core/internal.h"

#include <float.h>
#include <libdeflate.h>
#include <math.h>
#include <nifti2_io.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* "omp simd" hints for gcc; none for clang, whose -Wpass-failed turns a loop
 * it cannot vectorise into an error (as in src/report/qc_png.c) */
#if defined(__clang__)
#define PSP_OMP_SIMD(x)
#else
#define PSP_OMP_SIMD(x) _Pragma(x)
#endif

enum { N1_HDR = 348, N2_HDR = 540 };

static bool is_gzip(const unsigned char *b, size_t n) {
  return n >= 2 && b[0] == 0x1f && b[1] == 0x8b;
}

/* Inflating reader over a memory buffer (gzip, possibly multi-member). */
typedef struct {
  z_stream zs;
  const unsigned char *in;
  size_t in_len;
  bool done, failed;
  char msg[128];
} gz_reader;

static bool gz_open(gz_reader *r, const unsigned char *in, size_t len) {
  memset(r, 0, sizeof *r);
  r->in = in;
  r->in_len = len;
  if (inflateInit2(&r->zs, 15 + 32) != Z_OK) return false;
  r->zs.next_in = (unsigned char *)in;
  r->zs.avail_in = (uInt)(len > UINT32_MAX ? UINT32_MAX : len);
  return true;
}

/* Inflates up to `want` bytes into out; returns bytes produced. */
static size_t gz_read(gz_reader *r, unsigned char *out, size_t want) {
  size_t got = 0;
  while (got < want && !r->done && !r->failed) {
    size_t chunk = want - got;
    r->zs.next_out = out + got;
    r->zs.avail_out = (uInt)(chunk > UINT32_MAX ? UINT32_MAX : chunk);
    uInt before = r->zs.avail_out;
    int rc = inflate(&r->zs, Z_NO_FLUSH);
    got += before - r->zs.avail_out;
    if (rc == Z_STREAM_END) {
      /* another gzip member may follow */
      size_t consumed = (size_t)(r->zs.next_in - r->in);
      if (consumed + 2 <= r->in_len && is_gzip(r->in + consumed, r->in_len - consumed)) {
        inflateReset(&r->zs);
      } else {
        r->done = true;
      }
    } else if (rc == Z_BUF_ERROR && r->zs.avail_in == 0) {
      r->failed = true;
      snprintf(r->msg, sizeof r->msg, "compressed data ends early (file truncated?)");
    } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
      r->failed = true;
      snprintf(r->msg, sizeof r->msg, "corrupt gzip data (%s)",
               r->zs.msg ? r->zs.msg : "zlib error");
    }
  }
  return got;
}

static void gz_close(gz_reader *r) {
  inflateEnd(&r->zs);
}

static const char *dtype_name(int dt) {
  switch (dt) {
  case DT_UINT8:
    return "uint8";
  case DT_INT16:
    return "int16";
  case DT_UINT16:
    return "uint16";
  case DT_INT32:
    return "int32";
  case DT_FLOAT32:
    return "float32";
  case DT_FLOAT64:
    return "float64";
  case DT_INT8:
    return "int8";
  case DT_UINT32:
    return "uint32";
  case DT_INT64:
    return "int64";
  case DT_UINT64:
    return "uint64";
  case DT_COMPLEX64:
    return "complex64";
  case DT_COMPLEX128:
    return "complex128";
  case DT_RGB24:
    return "rgb24";
  case DT_RGBA32:
    return "rgba32";
  case DT_FLOAT128:
    return "float128";
  default:
    return "unknown";
  }
}

static int dtype_size(int dt) {
  switch (dt) {
  case DT_UINT8:
    return 1;
  case DT_INT16:
  case DT_UINT16:
    return 2;
  case DT_INT32:
  case DT_FLOAT32:
    return 4;
  case DT_FLOAT64:
    return 8;
  default:
    return 0;
  }
}

static uint32_t bswap32(uint32_t x) {
  return (x >> 24) | ((x >> 8) & 0xff00u) | ((x << 8) & 0xff0000u) | (x << 24);
}

/* Parses and validates the header in hdr[0..n); returns a nifti_image
 * without data, or NULL with err set. */
static nifti_image *parse_header(const unsigned char *hdr, size_t n, const char *name,
                                 psp_error **err) {
  if (n < 4) {
    psp_error_set(err, PSP_ERR_FORMAT, "%s: file is empty or too short to be NIfTI (%zu bytes)",
                  name, n);
    return NULL;
  }
  uint32_t sz;
  memcpy(&sz, hdr, 4);
  int version = 0;
  bool swapped = false;
  if (sz == N1_HDR || bswap32(sz) == N1_HDR) version = 1;
  if (sz == N2_HDR || bswap32(sz) == N2_HDR) version = 2;
  swapped = (sz != N1_HDR && sz != N2_HDR);
  if (!version) {
    psp_error_set(err, PSP_ERR_FORMAT,
                  "%s: not a NIfTI file (header size field is %u, expected 348 or 540)", name, sz);
    return NULL;
  }
  size_t hsize = version == 1 ? N1_HDR : N2_HDR;
  if (n < hsize) {
    psp_error_set(err, PSP_ERR_FORMAT, "%s: truncated NIfTI header (%zu of %zu bytes)", name, n,
                  hsize);
    return NULL;
  }
  int64_t dim[8];
  char magic[4];
  /* validate a byte-swapped copy; nifti_clib gets the raw header and does
   * its own swapping (so it records the file's byte order) */
  nifti_1_header h1, raw1;
  nifti_2_header h2, raw2;
  if (version == 1) {
    memcpy(&h1, hdr, sizeof h1);
    raw1 = h1;
    if (swapped) nifti_swap_as_nifti1(&h1);
    for (int i = 0; i < 8; i++)
      dim[i] = h1.dim[i];
    memcpy(magic, h1.magic, 4);
  } else {
    memcpy(&h2, hdr, sizeof h2);
    raw2 = h2;
    if (swapped) nifti_swap_as_nifti2(&h2);
    for (int i = 0; i < 8; i++)
      dim[i] = h2.dim[i];
    memcpy(magic, h2.magic, 4);
  }
  if (magic[0] != 'n' || (magic[1] != '+' && magic[1] != 'i')) {
    psp_error_set(err, PSP_ERR_FORMAT,
                  "%s: not a NIfTI file (bad magic string; Analyze 7.5 is not supported)", name);
    return NULL;
  }
  /* the version digit must match the header size: nifti_clib trusts the
   * digit (and then neither swaps nor bounds the header: found by fuzzing) */
  if (magic[2] != (version == 1 ? '1' : '2') || magic[3] != '\0') {
    psp_error_set(err, PSP_ERR_FORMAT,
                  "%s: not a NIfTI file (magic string '%.3s' does not match the NIfTI-%d header "
                  "size)",
                  name, magic, version);
    return NULL;
  }
  if (magic[1] == 'i') {
    psp_error_set(
        err, PSP_ERR_UNSUPPORTED,
        "%s: a NIfTI .hdr/.img pair is not supported; convert it to a single .nii/.nii.gz", name);
    return NULL;
  }
  /* nifti_clib moves an offset inside the header silently to its end (the
   * data would then start on the extension bytes): refuse instead */
  double vox_offset = version == 1 ? (double)h1.vox_offset : (double)h2.vox_offset;
  if (!(vox_offset >= (double)hsize) || vox_offset > 1e15) {
    psp_error_set(err, PSP_ERR_FORMAT,
                  "%s: voxel data offset vox_offset = %g is %s (a single-file NIfTI needs %zu to "
                  "the file size)",
                  name, vox_offset,
                  vox_offset > 1e15 ? "past any plausible file size" : "inside the header", hsize);
    return NULL;
  }
  if (dim[0] < 1 || dim[0] > 7) {
    psp_error_set(err, PSP_ERR_FORMAT, "%s: invalid number of dimensions dim[0] = %lld", name,
                  (long long)dim[0]);
    return NULL;
  }
  for (int i = 1; i <= dim[0]; i++) {
    if (dim[i] <= 0) {
      psp_error_set(err, PSP_ERR_FORMAT, "%s: dimension %d has size %lld (must be >= 1)", name, i,
                    (long long)dim[i]);
      return NULL;
    }
  }
  /* nifti_clib silently replaces non-positive pixdim by 1: refuse instead
   * whenever the spacing comes from pixdim (no sform) */
  int sform_code = version == 1 ? h1.sform_code : h2.sform_code;
  if (sform_code <= 0) {
    for (int i = 1; i <= 3 && i <= dim[0]; i++) {
      double p = version == 1 ? h1.pixdim[i] : h2.pixdim[i];
      if (!(p > 0) || !isfinite(p)) {
        psp_error_set(err, PSP_ERR_GEOMETRY,
                      "%s: voxel spacing pixdim[%d] = %g mm; spacing must be > 0", name, i, p);
        return NULL;
      }
    }
  }
  /* unknown datatypes: our message, not nifti_clib's on stderr */
  int datatype = version == 1 ? h1.datatype : h2.datatype;
  if (!dtype_size(datatype)) {
    psp_error_set(err, PSP_ERR_UNSUPPORTED,
                  "%s: voxel datatype %s (code %d) is not supported (use uint8, int16, uint16, "
                  "int32, float32 or float64)",
                  name, dtype_name(datatype), datatype);
    return NULL;
  }
  nifti_set_debug_level(0);
  nifti_image *nim =
      version == 1 ? nifti_convert_n1hdr2nim(raw1, name) : nifti_convert_n2hdr2nim(raw2, name);
  if (!nim) {
    psp_error_set(err, PSP_ERR_FORMAT, "%s: NIfTI header could not be interpreted", name);
    return NULL;
  }
  return nim;
}

/* Validates grid and datatype against limits; computes the byte range of
 * the chosen 3-D volume. */
static bool check_grid(const nifti_image *nim, const char *name, const psp_load_options *opt,
                       int64_t max_voxels, int64_t *vol_index, size_t *data_off, size_t *data_bytes,
                       psp_error **err) {
  int64_t nx = nim->nx, ny = nim->dim[0] >= 2 ? nim->ny : 1, nz = nim->dim[0] >= 3 ? nim->nz : 1;
  int64_t nt = nim->dim[0] >= 4 ? nim->nt : 1;
  for (int i = 5; i <= nim->dim[0]; i++)
    if (nim->dim[i] > 1)
      return psp_error_set(
          err, PSP_ERR_UNSUPPORTED,
          "%s: %lld-dimensional image (dim[%d] = %lld) is not supported; expected a 3-D volume",
          name, (long long)nim->dim[0], i, (long long)nim->dim[i]);
  int bytes = dtype_size(nim->datatype);
  if (!bytes)
    return psp_error_set(
        err, PSP_ERR_UNSUPPORTED,
        "%s: voxel datatype %s (code %d) is not supported (use uint8, int16, uint16, "
        "int32, float32 or float64)",
        name, dtype_name(nim->datatype), nim->datatype);
  /* overflow-safe size check before any allocation */
  double total = (double)nx * (double)ny * (double)nz;
  if (total > (double)max_voxels)
    return psp_error_set(
        err, PSP_ERR_LIMIT,
        "%s: grid %lld x %lld x %lld = %.0f voxels exceeds the limit of %lld voxels "
        "(absurd dimensions, or raise --max-voxels)",
        name, (long long)nx, (long long)ny, (long long)nz, total, (long long)max_voxels);
  if (nt > 1) {
    int64_t want = opt ? opt->volume_index : -1;
    if (want < 0)
      return psp_error_set(err, PSP_ERR_USAGE,
                           "%s: 4-D file with %lld volumes; choose one with --volume N (0-based)",
                           name, (long long)nt);
    if (want >= nt)
      return psp_error_set(err, PSP_ERR_USAGE,
                           "%s: --volume %lld is out of range (the file has %lld volumes)", name,
                           (long long)want, (long long)nt);
    *vol_index = want;
  } else {
    /* a 3-D file holds volume 0 only: --volume 2 on it is a mistake (the
     * wrong file, or a 4-D series exported as one volume), not a request to
     * read volume 0 in silence */
    if (opt && opt->volume_index > 0)
      return psp_error_set(err, PSP_ERR_USAGE,
                           "%s: --volume %lld asks for a volume this 3-D file does not have "
                           "(it holds one volume, index 0; --volume applies to every image "
                           "input)",
                           name, (long long)opt->volume_index);
    *vol_index = 0;
  }
  if (nim->iname_offset < 0)
    return psp_error_set(err, PSP_ERR_FORMAT, "%s: negative voxel data offset", name);
  size_t vol_bytes = (size_t)(nx * ny * nz) * (size_t)bytes;
  if ((uint64_t)*vol_index > ((uint64_t)1 << 62) / vol_bytes)
    return psp_error_set(err, PSP_ERR_FORMAT, "%s: volume %lld lies past any plausible file size",
                         name, (long long)*vol_index);
  *data_off = (size_t)nim->iname_offset + (size_t)*vol_index * vol_bytes;
  *data_bytes = vol_bytes;
  return true;
}

/* What the conversion saw: NaN, infinite and negative voxels (the first
 * NaN / infinite voxel in file order, INT64_MAX when none), the smallest
 * negative value (0 when none). Counts, minima: the same at any thread
 * count and any blocking. */
typedef struct {
  int64_t n_nan, n_inf, n_neg, first_nan, first_inf;
  float vmin;
} value_stats;

enum { CONVERT_BLOCK = 4096 }; /* voxels per block of the conversion */

/* Typed conversion loops: one per datatype so the inner loop has no switch;
 * the values are checked in the same pass (one pass over the voxels
 * instead of two). Unscaled integers cannot be NaN or infinite: their loops
 * only count the negatives, without a branch (vectorised); unsigned ones
 * need no check at all. */
#define PSP_CONVERT_UNSIGNED(T)                                                                    \
  do {                                                                                             \
    if (!scale) {                                                                                  \
      for (int64_t i = 0; i < n; i++) {                                                            \
        T x;                                                                                       \
        memcpy(&x, src + i * (int64_t)sizeof(T), sizeof(T));                                       \
        dst[i] = (float)x;                                                                         \
      }                                                                                            \
      return;                                                                                      \
    }                                                                                              \
    PSP_CONVERT(T);                                                                                \
  } while (0)

#define PSP_CONVERT_SIGNED(T)                                                                      \
  do {                                                                                             \
    if (!scale) {                                                                                  \
      int64_t neg = 0;                                                                             \
      T lo = 0;                                                                                    \
      for (int64_t i = 0; i < n; i++) {                                                            \
        T x;                                                                                       \
        memcpy(&x, src + i * (int64_t)sizeof(T), sizeof(T));                                       \
        dst[i] = (float)x;                                                                         \
        neg += x < 0;                                                                              \
        lo = x < lo ? x : lo;                                                                      \
      }                                                                                            \
      st->n_neg += neg;                                                                            \
      st->vmin = (float)lo < st->vmin ? (float)lo : st->vmin;                                      \
      return;                                                                                      \
    }                                                                                              \
    PSP_CONVERT(T);                                                                                \
  } while (0)

/* float32 without scaling: negatives and non-finite voxels counted without
 * a branch; the NaN / infinite ones are told apart (and the first found)
 * only in a block that has any. */
#define PSP_CONVERT_FLOAT32()                                                                      \
  do {                                                                                             \
    if (!scale) {                                                                                  \
      int64_t neg = 0, bad = 0;                                                                    \
      float lo = 0;                                                                                \
      PSP_OMP_SIMD("omp simd reduction(+ : neg, bad) reduction(min : lo)")                         \
      for (int64_t i = 0; i < n; i++) {                                                            \
        float x;                                                                                   \
        memcpy(&x, src + i * 4, 4);                                                                \
        dst[i] = x;                                                                                \
        neg += x < 0;                                                                              \
        bad += !(fabsf(x) <= FLT_MAX);                                                             \
        lo = x < lo ? x : lo;                                                                      \
      }                                                                                            \
      st->n_neg += neg;                                                                            \
      st->vmin = lo < st->vmin ? lo : st->vmin;                                                    \
      for (int64_t i = 0; bad && i < n; i++) {                                                     \
        if (isnan(dst[i])) {                                                                       \
          st->n_nan++;                                                                             \
          st->first_nan = i0 + i < st->first_nan ? i0 + i : st->first_nan;                         \
        } else if (isinf(dst[i])) {                                                                \
          st->n_inf++;                                                                             \
          st->first_inf = i0 + i < st->first_inf ? i0 + i : st->first_inf;                         \
        }                                                                                          \
      }                                                                                            \
      return;                                                                                      \
    }                                                                                              \
    PSP_CONVERT(float);                                                                            \
  } while (0)

#define PSP_CONVERT(T)                                                                             \
  do {                                                                                             \
    for (int64_t i = 0; i < n; i++) {                                                              \
      T x;                                                                                         \
      memcpy(&x, src + i * (int64_t)sizeof(T), sizeof(T));                                         \
      const float y = scale ? (float)((double)x * slope + inter) : (float)x;                       \
      dst[i] = y;                                                                                  \
      note_value(st, y, i0 + i);                                                                   \
    }                                                                                              \
  } while (0)

static inline void note_value(value_stats *st, float y, int64_t i) {
  if (y < 0) {
    st->n_neg++;
    st->vmin = y < st->vmin ? y : st->vmin;
  }
  if (isnan(y)) {
    st->n_nan++;
    st->first_nan = i < st->first_nan ? i : st->first_nan;
  } else if (isinf(y)) {
    st->n_inf++;
    st->first_inf = i < st->first_inf ? i : st->first_inf;
  }
}

/* Voxels i0 .. i0+n-1 (file order) from src (their bytes) into dst. */
static void convert_block(const unsigned char *restrict src, int dt, bool swap, bool scale,
                          double slope, double inter, int64_t i0, int64_t n, float *restrict dst,
                          value_stats *st) {
  if (!swap) {
    switch (dt) {
    case DT_UINT8:
      PSP_CONVERT_UNSIGNED(uint8_t);
      return;
    case DT_INT16:
      PSP_CONVERT_SIGNED(int16_t);
      return;
    case DT_UINT16:
      PSP_CONVERT_UNSIGNED(uint16_t);
      return;
    case DT_INT32:
      PSP_CONVERT(int32_t);
      return;
    case DT_FLOAT32:
      PSP_CONVERT_FLOAT32();
      return;
    case DT_FLOAT64:
      PSP_CONVERT(double);
      return;
    }
  }
  const int sz = dtype_size(dt);
  for (int64_t i = 0; i < n; i++) {
    unsigned char b[8];
    for (int a = 0; a < sz; a++)
      b[a] = src[i * sz + sz - 1 - a];
    double v = 0;
    switch (dt) {
    case DT_UINT8:
      v = b[0];
      break;
    case DT_INT16: {
      int16_t x;
      memcpy(&x, b, 2);
      v = x;
    } break;
    case DT_UINT16: {
      uint16_t x;
      memcpy(&x, b, 2);
      v = x;
    } break;
    case DT_INT32: {
      int32_t x;
      memcpy(&x, b, 4);
      v = x;
    } break;
    case DT_FLOAT32: {
      float x;
      memcpy(&x, b, 4);
      v = x;
    } break;
    case DT_FLOAT64: {
      double x;
      memcpy(&x, b, 8);
      v = x;
    } break;
    }
    const float y = scale ? (float)(v * slope + inter) : (float)v;
    dst[i] = y;
    note_value(st, y, i0 + i);
  }
}
#undef PSP_CONVERT_UNSIGNED
#undef PSP_CONVERT_SIGNED
#undef PSP_CONVERT_FLOAT32
#undef PSP_CONVERT

/* Converts n voxels of datatype dt at src to float32 at dst with scl_slope
 * / scl_inter, block by block (in parallel unless in_place). in_place: src
 * lies in dst's own buffer, at or after the voxel whose float it would be
 * (src >= dst + n - n * size / 4 floats, see psp_nifti_load_memory); the
 * blocks then go in order, each staged through a small local copy before
 * its floats overwrite it. */
static void to_float(const unsigned char *src, int dt, bool swap, int64_t n, float *dst,
                     double slope, double inter, bool in_place, value_stats *st) {
  const bool scale =
      slope != 0.0 && isfinite(slope) && isfinite(inter) && !(slope == 1.0 && inter == 0.0);
  const int64_t sz = dtype_size(dt), nblk = (n + CONVERT_BLOCK - 1) / CONVERT_BLOCK;
  int64_t n_nan = 0, n_inf = 0, n_neg = 0, first_nan = INT64_MAX, first_inf = INT64_MAX;
  float vmin = 0;
  if (in_place) {
    value_stats t = {0, 0, 0, INT64_MAX, INT64_MAX, 0};
    unsigned char stage[CONVERT_BLOCK * 8];
    for (int64_t b = 0; b < nblk; b++) {
      const int64_t i0 = b * CONVERT_BLOCK, m = n - i0 < CONVERT_BLOCK ? n - i0 : CONVERT_BLOCK;
      memcpy(stage, src + i0 * sz, (size_t)(m * sz));
      convert_block(stage, dt, swap, scale, slope, inter, i0, m, dst + i0, &t);
    }
    *st = t;
    return;
  }
#pragma omp parallel for schedule(static) reduction(+ : n_nan, n_inf, n_neg)                      \
    reduction(min : first_nan, first_inf, vmin)
  for (int64_t b = 0; b < nblk; b++) {
    const int64_t i0 = b * CONVERT_BLOCK, m = n - i0 < CONVERT_BLOCK ? n - i0 : CONVERT_BLOCK;
    value_stats t = {0, 0, 0, INT64_MAX, INT64_MAX, 0};
    convert_block(src + i0 * sz, dt, swap, scale, slope, inter, i0, m, dst + i0, &t);
    n_nan += t.n_nan;
    n_inf += t.n_inf;
    n_neg += t.n_neg;
    first_nan = t.first_nan < first_nan ? t.first_nan : first_nan;
    first_inf = t.first_inf < first_inf ? t.first_inf : first_inf;
    vmin = t.vmin < vmin ? t.vmin : vmin;
  }
  *st = (value_stats){n_nan, n_inf, n_neg, first_nan, first_inf, vmin};
}

/* deflate cannot expand more than 1032:1 (258-byte matches coded in 2 bits):
 * a header promising more voxel bytes than the compressed file can hold is
 * refused before the voxel buffer is allocated */
#define DEFLATE_MAX_RATIO 1032u

/* Room for a whole-buffer inflate: the `need` bytes the header asks for,
 * or the last member's ISIZE when larger (the common single-member file
 * inflates whole). 0 when the stream is too short or inflates to far more
 * than needed: the caller then streams with zlib. */
static size_t inflate_room(const unsigned char *in, size_t len, size_t need) {
  if (len < 18) return 0;
  uint32_t isize = (uint32_t)in[len - 4] | (uint32_t)in[len - 3] << 8 |
                   (uint32_t)in[len - 2] << 16 | (uint32_t)in[len - 1] << 24;
  if ((size_t)isize > need + ((size_t)64 << 20)) return 0;
  return (size_t)isize > need ? (size_t)isize : need;
}

/* Whole-buffer inflate with libdeflate, member after member (paraspinal's
 * own outputs are multi-member gzip, see write_voxels), into out (cap bytes,
 * from inflate_room). False when the data are bad or end early: the caller
 * then streams with zlib, which also words the errors. */
static bool inflate_into(const unsigned char *in, size_t len, size_t need, unsigned char *out,
                         size_t cap) {
  struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
  size_t pos = 0, got = 0;
  bool ok = d != NULL;
  while (ok && pos < len && got < need) {
    size_t in_used = 0, out_got = 0;
    if (!is_gzip(in + pos, len - pos)) break;
    ok = libdeflate_gzip_decompress_ex(d, in + pos, len - pos, out + got, cap - got, &in_used,
                                       &out_got) == LIBDEFLATE_SUCCESS;
    pos += in_used;
    got += out_got;
  }
  if (d) libdeflate_free_decompressor(d);
  return ok && got >= need;
}

static unsigned char *inflate_fast(const unsigned char *in, size_t len, size_t need) {
  const size_t cap = inflate_room(in, len, need);
  unsigned char *out = cap ? malloc(cap) : NULL;
  psp_advise_huge(out, cap);
  if (out && !inflate_into(in, len, need, out, cap)) {
    free(out);
    out = NULL;
  }
  return out;
}

/* The float buffer of n voxels with the gzip stream inflated into its end,
 * so that the voxels are converted in place (no second buffer of the
 * file's size): with s bytes per file voxel (s <= 4), file voxel i lies at
 * byte T + i * s of the buffer and its float goes to byte 4 i; converting
 * in order never overwrites a voxel not yet read when T >= n (4 - s). The
 * buffer has max(4 n, need) + (cap - need) bytes, the stream (cap bytes)
 * ends at its end, so T = that size - cap + off. NULL when the room would
 * exceed the floats by more than 1 MiB (e.g. one volume of a long 4-D
 * file), when out of memory or when the data are bad (the caller then
 * takes the other paths). */
static float *inflate_for_floats(const unsigned char *in, size_t len, size_t off, size_t nbytes,
                                 int64_t nvox, const unsigned char **data) {
  const size_t need = off + nbytes, fl = (size_t)nvox * sizeof(float);
  const size_t cap = inflate_room(in, len, need);
  if (!cap || nbytes > fl) return NULL;
  const size_t size = (fl > need ? fl : need) + (cap - need);
  if (size - fl > ((size_t)1 << 20)) return NULL;
  unsigned char *buf = malloc(size);
  if (!buf) return NULL;
  psp_advise_huge(buf, size);
  if (!inflate_into(in, len, need, buf + (size - cap), cap)) {
    free(buf);
    return NULL;
  }
  *data = buf + (size - cap) + off;
  return (float *)(void *)buf;
}

static bool choose_affine(const nifti_image *nim, const char *name, psp_context *ctx,
                          double a[4][4], psp_error **err) {
  const double pix[3] = {nim->dx, nim->dy, nim->dz};
  if (nim->sform_code > 0) {
    for (int r = 0; r < 4; r++)
      for (int c = 0; c < 4; c++)
        a[r][c] = nim->sto_xyz.m[r][c];
    return true;
  }
  for (int c = 0; c < 3; c++) {
    if (!(pix[c] > 0) || !isfinite(pix[c]))
      return psp_error_set(err, PSP_ERR_GEOMETRY,
                           "%s: voxel spacing pixdim[%d] = %g mm; spacing must be > 0", name, c + 1,
                           pix[c]);
  }
  if (nim->qform_code > 0) {
    for (int r = 0; r < 4; r++)
      for (int c = 0; c < 4; c++)
        a[r][c] = nim->qto_xyz.m[r][c];
    return true;
  }
  psp_warn(ctx,
           "%s: no qform or sform in the header; assuming voxel axes along the scanner axes (NIfTI "
           "method 1): left/right cannot be verified",
           name);
  memset(a, 0, sizeof(double) * 16);
  for (int c = 0; c < 3; c++)
    a[c][c] = pix[c];
  a[3][3] = 1;
  return true;
}

psp_volume *psp_nifti_load_memory(const void *buf, size_t len, const char *name,
                                  const psp_load_options *opt, psp_context *ctx, psp_error **err) {
  const unsigned char *in = buf;
  bool gz = is_gzip(in, len);
  gz_reader gzr;
  unsigned char head[N2_HDR];
  size_t head_n;
  if (gz) {
    if (!gz_open(&gzr, in, len)) {
      psp_error_set(err, PSP_ERR_NOMEM, "%s: cannot start decompression", name);
      return NULL;
    }
    head_n = gz_read(&gzr, head, N1_HDR);
    if (head_n >= 4) {
      uint32_t sz;
      memcpy(&sz, head, 4);
      if (sz == N2_HDR || bswap32(sz) == N2_HDR)
        head_n += gz_read(&gzr, head + N1_HDR, N2_HDR - N1_HDR);
    }
    if (gzr.failed && head_n < N1_HDR) {
      psp_error_set(err, PSP_ERR_FORMAT, "%s: %s", name, gzr.msg);
      gz_close(&gzr);
      return NULL;
    }
  } else {
    head_n = len < N2_HDR ? len : N2_HDR;
    memcpy(head, in, head_n);
  }
  nifti_image *nim = parse_header(head, head_n, name, err);
  psp_volume *vol = NULL;
  unsigned char *raw = NULL, *whole = NULL;
  float *fdata = NULL;
  if (!nim) goto done;
  int64_t vol_index;
  size_t off = 0, nbytes = 0;
  if (!check_grid(nim, name, opt, psp_context_max_voxels(ctx), &vol_index, &off, &nbytes, err))
    goto done;
  size_t hsize = (nim->nifti_type == NIFTI_FTYPE_NIFTI2_1) ? N2_HDR : N1_HDR;
  if (off < hsize) {
    psp_error_set(err, PSP_ERR_FORMAT, "%s: voxel data offset %zu lies inside the header", name,
                  off);
    goto done;
  }
  if (gz && (uint64_t)off + nbytes > (uint64_t)len * DEFLATE_MAX_RATIO + 1024) {
    psp_error_set(err, PSP_ERR_FORMAT,
                  "%s: truncated: the header promises %zu bytes of voxel data from offset %zu, "
                  "more than the %zu compressed bytes of the file can hold",
                  name, nbytes, off, len);
    goto done;
  }
  int64_t fdims[3] = {nim->nx, nim->dim[0] >= 2 ? nim->ny : 1, nim->dim[0] >= 3 ? nim->nz : 1};
  int64_t nvox = fdims[0] * fdims[1] * fdims[2];
  const unsigned char *data = NULL;
  /* the usual case: inflated into the float buffer, converted in place */
  fdata = gz ? inflate_for_floats(in, len, off, nbytes, nvox, &data) : NULL;
  const bool in_place = fdata != NULL;
  whole = gz && !in_place ? inflate_fast(in, len, off + nbytes) : NULL;
  if (whole) {
    data = whole + off;
  } else if (gz && !in_place) {
    /* stream up to the data, then the volume itself */
    size_t skip = off - head_n;
    unsigned char tmp[4096];
    while (skip > 0 && !gzr.failed && !gzr.done) {
      size_t want = skip < sizeof tmp ? skip : sizeof tmp;
      size_t got = gz_read(&gzr, tmp, want);
      skip -= got;
      if (got < want) break;
    }
    raw = psp_malloc(nbytes, err);
    if (!raw) goto done;
    size_t got = skip == 0 ? gz_read(&gzr, raw, nbytes) : 0;
    if (got < nbytes) {
      if (gzr.failed)
        psp_error_set(err, PSP_ERR_FORMAT, "%s: %s (%zu of %zu voxel bytes read)", name, gzr.msg,
                      got, nbytes);
      else
        psp_error_set(
            err, PSP_ERR_FORMAT,
            "%s: truncated: the header promises %zu bytes of voxel data from offset %zu, the file "
            "holds only %zu",
            name, nbytes, off, got);
      goto done;
    }
    /* to the stream's end: zlib checks each member's CRC-32 and length only
     * there (a flipped byte in the voxels gave a plausible wrong FF) */
    while (!gzr.failed && !gzr.done)
      if (gz_read(&gzr, tmp, sizeof tmp) == 0 && !gzr.done && !gzr.failed) break;
    if (gzr.failed) {
      psp_error_set(err, PSP_ERR_FORMAT,
                    "%s: %s at the end of the compressed stream: the file is damaged", name,
                    gzr.msg);
      goto done;
    }
    data = raw;
  } else if (!gz) {
    if (off > len || len - off < nbytes) {
      psp_error_set(
          err, PSP_ERR_FORMAT,
          "%s: truncated: the header promises %zu bytes of voxel data from offset %zu, the file "
          "has %zu bytes",
          name, nbytes, off, len);
      goto done;
    }
    data = in + off;
  }
  if (!fdata) {
    fdata = psp_malloc((size_t)nvox * sizeof(float), err);
    psp_advise_huge(fdata, (size_t)nvox * sizeof(float));
  }
  if (!fdata) goto done;
  value_stats st;
  to_float(data, nim->datatype, nim->byteorder != nifti_short_order(), nvox, fdata, nim->scl_slope,
           nim->scl_inter, in_place, &st);
  free(whole); /* (converted: the inflated bytes are no longer needed) */
  whole = NULL;
  const int64_t n_nan = st.n_nan, n_inf = st.n_inf, n_neg = st.n_neg;
  const float vmin = st.vmin;
  /* the first voxel that makes the image unusable, in file order */
  const int64_t first_bad = opt && opt->allow_nan
                                ? st.first_inf
                                : (st.first_nan < st.first_inf ? st.first_nan : st.first_inf);
  if (n_inf > 0 || (n_nan > 0 && !(opt && opt->allow_nan))) {
    int64_t i = first_bad % fdims[0], j = (first_bad / fdims[0]) % fdims[1],
            k = first_bad / (fdims[0] * fdims[1]);
    psp_error_set(
        err, PSP_ERR_DATA,
        "%s: %lld voxels are NaN and %lld infinite (first at voxel %lld,%lld,%lld); the image is "
        "unusable",
        name, (long long)n_nan, (long long)n_inf, (long long)i, (long long)j, (long long)k);
    goto done;
  }
  /* a magnitude image has no negative voxels; a few are tolerated
   * (interpolation ringing), a signed image is not a magnitude image */
  if (opt && opt->magnitude && (double)n_neg > 0.001 * (double)nvox) {
    psp_error_set(err, PSP_ERR_DATA,
                  "%s: %lld of %lld voxels are negative (down to %g): not a magnitude image "
                  "(water, fat, in-phase and opposed-phase inputs must be magnitude images)",
                  name, (long long)n_neg, (long long)nvox, (double)vmin);
    goto done;
  }
  double fa[4][4];
  if (!choose_affine(nim, name, ctx, fa, err)) goto done;
  for (int r = 0; r < 3; r++)
    for (int c = 0; c < 4; c++)
      if (!isfinite(fa[r][c])) {
        psp_error_set(err, PSP_ERR_GEOMETRY, "%s: the voxel-to-world matrix contains NaN/Inf",
                      name);
        goto done;
      }
  vol = psp_volume_from_file_order_take(&fdata, fdims, fa, name, err);
  if (vol) {
    vol->no_xform = nim->sform_code <= 0 && nim->qform_code <= 0;
    char code[4];
    psp_orientation_code(vol, code);
    psp_log(ctx, PSP_LOG_DEBUG, "%s: %lld x %lld x %lld %s, voxel axes %s, %s", name,
            (long long)fdims[0], (long long)fdims[1], (long long)fdims[2],
            dtype_name(nim->datatype), code,
            nim->sform_code > 0   ? "sform"
            : nim->qform_code > 0 ? "qform"
                                  : "no transform");
  }
done:
  if (gz) gz_close(&gzr);
  free(raw);
  free(whole);
  free(fdata);
  if (nim) nifti_image_free(nim);
  return vol;
}

psp_volume *psp_nifti_load_hashed(const char *path, const psp_load_options *opt, char sha256[65],
                                  psp_context *ctx, psp_error **err) {
  size_t len;
  /* compressed files cannot be larger than the data they inflate to (plus
   * headers); 8 bytes per voxel is the largest supported type */
  int64_t limit = psp_context_max_voxels(ctx) * 8 + (1 << 20);
  void *buf = psp_read_file(path, &len, limit, err);
  if (!buf) return NULL;
  psp_volume *v = psp_nifti_load_memory(buf, len, path, opt, ctx, err);
  if (v && sha256) psp_sha256_buffer(buf, len, sha256);
  free(buf);
  return v;
}

psp_volume *psp_nifti_load(const char *path, const psp_load_options *opt, psp_context *ctx,
                           psp_error **err) {
  return psp_nifti_load_hashed(path, opt, NULL, ctx, err);
}

/* ------------------------------------------------------------------------ */

static int nifti_dtype(psp_dtype t) {
  switch (t) {
  case PSP_DT_UINT8:
    return DT_UINT8;
  case PSP_DT_INT16:
    return DT_INT16;
  case PSP_DT_UINT16:
    return DT_UINT16;
  case PSP_DT_FLOAT32:
    break;
  }
  return DT_FLOAT32;
}

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* The output file is written as independent gzip members of GZ_CHUNK bytes
 * of the file each, compressed in parallel with libdeflate at a fast level.
 * The chunking does not depend on the thread count, so the bytes are
 * identical at any thread count; every gzip reader (zlib's gzread, Python's
 * gzip, nibabel, ITK, FSL) reads concatenated members as one stream. */
enum { GZ_CHUNK = 1 << 21, GZ_LEVEL = 1, HDR_BYTES = 352 };

/* lrintf(x) (nearest, ties to even) for 0 < x < 2^23 without a call: at
 * 2^23 the float spacing is 1, so adding and removing it rounds x so
 * (float arithmetic, default rounding, no -ffast-math) */
static inline int32_t rint_small(float x) {
  return (int32_t)((x + 0x1p23f) - 0x1p23f);
}

/* NaN and x <= 0 -> 0, x >= 255 -> 255, else lrintf(x), as
 * isnan(x) ? 0 : x <= 0 ? 0 : x >= 255 ? 255 : rint_small(x) (checked on
 * all 2^32 floats) but clamped with bit masks instead of branches, so that
 * the loop vectorises */
static inline uint8_t to_u8(float x) {
  uint32_t b;
  memcpy(&b, &x, 4);
  b &= 0u - (uint32_t)(x > 0.0f); /* NaN, x <= 0 -> +0 */
  float y;
  memcpy(&y, &b, 4);
  const uint32_t below = 0u - (uint32_t)(y < 255.0f);
  b = (b & below) | (0x437f0000u /* 255.0f */ & ~below);
  memcpy(&y, &b, 4);
  return (uint8_t)rint_small(y);
}
static inline int16_t to_i16(float x) {
  return isnan(x) ? 0 : x <= -32768 ? -32768 : x >= 32767 ? 32767 : (int16_t)lrintf(x);
}
static inline uint16_t to_u16(float x) {
  return isnan(x) ? 0 : x <= 0 ? 0 : x >= 65535 ? 65535 : (uint16_t)rint_small(x);
}

/* File order from the internal grid: file element (fi, fj, fk) is internal
 * voxel base + fi * g[0] + fj * g[1] + fk * g[2] (the inverse of the
 * scatter psp_volume_file_layout describes). */
typedef struct file_gather {
  const float *src;
  int dt, bytes;
  int64_t fd[3], g[3], base;
  bool identity; /* file order is the internal order */
} file_gather;

static void gather_init(file_gather *G, const psp_volume *v, int dt) {
  const int64_t istride[3] = {1, v->dims[0], v->dims[0] * v->dims[1]};
  G->src = psp_volume_data(v);
  G->dt = dt;
  G->bytes = dtype_size(dt);
  G->base = 0;
  for (int a = 0; a < 3; a++) {
    const int p = v->orient.file_axis[a];
    G->fd[p] = v->dims[a];
    G->g[p] = v->orient.flip[a] ? -istride[a] : istride[a];
    if (v->orient.flip[a]) G->base += (v->dims[a] - 1) * istride[a];
  }
  G->identity =
      G->base == 0 && G->g[0] == 1 && G->g[1] == G->fd[0] && G->g[2] == G->fd[0] * G->fd[1];
}

/* n voxels from s (step g) converted into d, in the file's datatype; one
 * loop per type, contiguous runs vectorised. */
static void convert_run(const float *s, int64_t g, int64_t n, int dt, unsigned char *d) {
  switch (dt) {
  case DT_FLOAT32:
    if (g == 1) {
      memcpy(d, s, (size_t)n * 4);
    } else {
      for (int64_t i = 0; i < n; i++)
        memcpy(d + i * 4, &s[i * g], 4);
    }
    break;
  case DT_UINT8:
    if (g == 1) {
      for (int64_t i = 0; i < n; i++)
        d[i] = to_u8(s[i]);
    } else {
      for (int64_t i = 0; i < n; i++)
        d[i] = to_u8(s[i * g]);
    }
    break;
  case DT_INT16:
    for (int64_t i = 0; i < n; i++) {
      const int16_t y = to_i16(s[i * g]);
      memcpy(d + i * 2, &y, 2);
    }
    break;
  case DT_UINT16:
    for (int64_t i = 0; i < n; i++) {
      const uint16_t y = to_u16(s[i * g]);
      memcpy(d + i * 2, &y, 2);
    }
    break;
  }
}

/* File elements e0..e1-1 (file order) into d. */
static void gather(const file_gather *G, int64_t e0, int64_t e1, unsigned char *d) {
  for (int64_t e = e0; e < e1;) {
    const int64_t fi = e % G->fd[0], row = e / G->fd[0];
    const int64_t fj = row % G->fd[1], fk = row / G->fd[1];
    const int64_t run = G->fd[0] - fi < e1 - e ? G->fd[0] - fi : e1 - e;
    convert_run(G->src + G->base + fi * G->g[0] + fj * G->g[1] + fk * G->g[2], G->g[0], run, G->dt,
                d + (e - e0) * G->bytes);
    e += run;
  }
}

/* Bytes off..off+n-1 of the file (header hdr, then the voxels): a pointer
 * into the volume when they are its own float32 bytes, else built in
 * scratch (GZ_CHUNK bytes; NULL when there is none). Element and chunk
 * boundaries coincide: HDR_BYTES and GZ_CHUNK are multiples of 4. */
static const unsigned char *file_bytes(const file_gather *G, const unsigned char *hdr, size_t off,
                                       size_t n, unsigned char *scratch) {
  if (off >= HDR_BYTES && G->identity && G->dt == DT_FLOAT32)
    return (const unsigned char *)G->src + (off - HDR_BYTES);
  if (!scratch) return NULL;
  size_t h = 0;
  if (off < HDR_BYTES) {
    h = HDR_BYTES - off < n ? HDR_BYTES - off : n;
    memcpy(scratch, hdr + off, h);
  }
  const size_t d0 = off + h - HDR_BYTES, d1 = off + n - HDR_BYTES;
  gather(G, (int64_t)(d0 / (size_t)G->bytes), (int64_t)(d1 / (size_t)G->bytes), scratch + h);
  return scratch;
}

static bool needs_scratch(const file_gather *G, size_t off) {
  return !(off >= HDR_BYTES && G->identity && G->dt == DT_FLOAT32);
}

/* Writes header + voxels to path through w, gzip-compressed (gz) in
 * chunks, in parallel, each written in chunk order as soon as it is ready:
 * no copy of the whole file is ever held. Frees w. */
static bool write_voxels(psp_file_writer *w, const file_gather *G, const unsigned char *hdr,
                         size_t total, bool gz, const char *path, psp_error **err) {
  if (!gz) {
    unsigned char *scratch = NULL;
    bool ok = true;
    for (size_t off = 0; ok && off < total; off += GZ_CHUNK) {
      const size_t n = total - off < GZ_CHUNK ? total - off : GZ_CHUNK;
      if (!scratch && needs_scratch(G, off)) scratch = malloc(GZ_CHUNK);
      const unsigned char *b = file_bytes(G, hdr, off, n, scratch);
      if (!b) {
        psp_file_writer_abort(w);
        free(scratch);
        return psp_error_set(err, PSP_ERR_NOMEM, "%s: out of memory", path);
      }
      ok = psp_file_writer_write(w, b, n, err); /* (a failed write aborts w) */
    }
    free(scratch);
    return ok && psp_file_writer_commit(w, err);
  }
  const size_t nchunks = total / GZ_CHUNK + 1; /* (the last one may be empty) */
  bool compress_failed = false, write_failed = false;
#pragma omp parallel if (nchunks > 1)
  {
    struct libdeflate_compressor *c = libdeflate_alloc_compressor(GZ_LEVEL);
    const size_t bound = c ? libdeflate_gzip_compress_bound(c, GZ_CHUNK) : 0;
    unsigned char *z = c ? malloc(bound) : NULL, *scratch = NULL;
#pragma omp for schedule(static, 1) ordered
    for (size_t i = 0; i < nchunks; i++) {
      const size_t off = i * GZ_CHUNK, n = total - off < GZ_CHUNK ? total - off : GZ_CHUNK;
      if (z && !scratch && needs_scratch(G, off)) scratch = malloc(GZ_CHUNK);
      const unsigned char *b = z ? file_bytes(G, hdr, off, n, scratch) : NULL;
      const size_t zn = b ? libdeflate_gzip_compress(c, b, n, z, bound) : 0;
#pragma omp ordered
      {
        if (!compress_failed && !write_failed) {
          if (!zn)
            compress_failed = true;
          else if (!psp_file_writer_write(w, z, zn, err))
            write_failed = true; /* (w aborted) */
        }
      }
    }
    if (c) libdeflate_free_compressor(c);
    free(z);
    free(scratch);
  }
  if (write_failed) return false;
  if (compress_failed) {
    psp_file_writer_abort(w);
    return psp_error_set(err, PSP_ERR_NOMEM, "%s: compression failed (out of memory?)", path);
  }
  return psp_file_writer_commit(w, err);
}

bool psp_nifti_save(const psp_volume *v, const char *path, psp_dtype dtype, const char *description,
                    psp_error **err) {
  return psp_nifti_save_sync(v, path, dtype, description, PSP_SYNC_NOW, err);
}

bool psp_nifti_save_sync(const psp_volume *v, const char *path, psp_dtype dtype,
                         const char *description, psp_sync sync, psp_error **err) {
  int64_t n = psp_volume_voxel_count(v);
  int64_t fdims[3], stride[3], offset;
  double fa[4][4];
  psp_volume_file_layout(v, fdims, fa, stride, &offset);

  int dt = nifti_dtype(dtype);
  int64_t dims8[8] = {3, fdims[0], fdims[1], fdims[2], 1, 1, 1, 1};
  nifti_set_debug_level(0);
  nifti_image *nim = nifti_make_new_nim(dims8, dt, 0);
  if (!nim) {
    return psp_error_set(err, PSP_ERR_NOMEM, "%s: cannot build NIfTI header", path);
  }
  for (int r = 0; r < 4; r++)
    for (int c = 0; c < 4; c++)
      nim->sto_xyz.m[r][c] = fa[r][c];
  nim->sform_code = NIFTI_XFORM_SCANNER_ANAT;
  nim->qform_code = NIFTI_XFORM_SCANNER_ANAT;
  double qb, qc, qd, qx, qy, qz, dx, dy, dz, qfac;
  nifti_dmat44_to_quatern(nim->sto_xyz, &qb, &qc, &qd, &qx, &qy, &qz, &dx, &dy, &dz, &qfac);
  nim->quatern_b = qb;
  nim->quatern_c = qc;
  nim->quatern_d = qd;
  nim->qoffset_x = qx;
  nim->qoffset_y = qy;
  nim->qoffset_z = qz;
  nim->qfac = qfac;
  nim->dx = nim->pixdim[1] = dx;
  nim->dy = nim->pixdim[2] = dy;
  nim->dz = nim->pixdim[3] = dz;
  nim->xyz_units = NIFTI_UNITS_MM;
  nim->scl_slope = 1;
  nim->scl_inter = 0;
  if (description) snprintf(nim->descrip, sizeof nim->descrip, "%s", description);
  nifti_1_header hdr;
  if (nifti_convert_nim2n1hdr(nim, &hdr) != 0) {
    nifti_image_free(nim);
    return psp_error_set(err, PSP_ERR_INTERNAL, "%s: cannot build NIfTI-1 header", path);
  }
  nifti_image_free(nim);
  hdr.vox_offset = 352;
  memcpy(hdr.magic, "n+1", 4);

  unsigned char head[HDR_BYTES];
  memcpy(head, &hdr, sizeof hdr);
  memset(head + 348, 0, 4); /* no extensions */
  file_gather G;
  gather_init(&G, v, dt);
  const size_t total = HDR_BYTES + (size_t)n * (size_t)G.bytes;
  psp_file_writer *w = psp_file_writer_open(path, sync, err);
  return w && write_voxels(w, &G, head, total, ends_with(path, ".gz"), path, err);
}
