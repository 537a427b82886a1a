/*
 * DESIGN: NIfTI-1/NIfTI-2 input and output. The whole file is brought into
 * memory (inflated with zlib when gzip-compressed, header first so that the
 * grid size is checked against the context's voxel limit before the voxel
 * buffer is allocated), then nifti_clib (libnifti2) interprets the header:
 * byte order, quaternion -> qform matrix, sform. We pick the sform when
 * sform_code > 0, else the qform when qform_code > 0, else the pixdim
 * diagonal ("method 1" of the NIfTI standard, with a warning that left/right
 * is then unknown). Voxels are converted to float32 with scl_slope/scl_inter
 * (NaN, infinite and negative voxels counted in the same pass) and
 * reordered to LPS by psp_volume_from_file_order_take, which keeps the
 * converted buffer when no axis is permuted (flips in place; no second
 * copy of the volume). Writing builds the
 * header with nifti_clib from the exact affine (sform exact, qform the
 * nearest rigid transform), puts the voxels back in the file's own order (a
 * loop per type; float32 rows copied whole), and writes header + data
 * through libdeflate (gzip) atomically.
 * Working from memory also lets fuzzers drive the parser without files.
 */
#include "core/internal.h"

#include <libdeflate.h>
#include <math.h>
#include <nifti2_io.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

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
 * count. */
typedef struct {
  int64_t n_nan, n_inf, n_neg, first_nan, first_inf;
  float vmin;
} value_stats;

#define PSP_NOTE_VALUE(y, i)                                                                       \
  do {                                                                                             \
    if ((y) < 0) {                                                                                 \
      n_neg++;                                                                                     \
      vmin = (y) < vmin ? (y) : vmin;                                                              \
    }                                                                                              \
    if (isnan(y)) {                                                                                \
      n_nan++;                                                                                     \
      first_nan = (i) < first_nan ? (i) : first_nan;                                               \
    } else if (isinf(y)) {                                                                         \
      n_inf++;                                                                                     \
      first_inf = (i) < first_inf ? (i) : first_inf;                                               \
    }                                                                                              \
  } while (0)

#define PSP_PRAGMA(...) _Pragma(#__VA_ARGS__)
#define PSP_STATS_REDUCTION                                                                        \
  PSP_PRAGMA(omp parallel for schedule(static) reduction(+ : n_nan, n_inf, n_neg)                  \
                 reduction(min : first_nan, first_inf, vmin))

/* Typed conversion loops: one per datatype so the inner loop has no switch;
 * byte-swapped files take the generic path. The values are checked in the
 * same pass (one pass over the voxels instead of two). */
#define PSP_CONVERT(T)                                                                             \
  do {                                                                                             \
    PSP_STATS_REDUCTION for (int64_t i = 0; i < n; i++) {                                          \
      T x;                                                                                         \
      memcpy(&x, src + i * (int64_t)sizeof(T), sizeof(T));                                         \
      const float y = scale ? (float)((double)x * slope + inter) : (float)x;                       \
      dst[i] = y;                                                                                  \
      PSP_NOTE_VALUE(y, i);                                                                        \
    }                                                                                              \
  } while (0)

static void to_float(const unsigned char *src, int dt, bool swap, int64_t n, float *dst,
                     double slope, double inter, value_stats *st) {
  bool scale =
      slope != 0.0 && isfinite(slope) && isfinite(inter) && !(slope == 1.0 && inter == 0.0);
  int64_t n_nan = 0, n_inf = 0, n_neg = 0, first_nan = INT64_MAX, first_inf = INT64_MAX;
  float vmin = 0;
  bool done = !swap;
  if (!swap) {
    switch (dt) {
    case DT_UINT8:
      PSP_CONVERT(uint8_t);
      break;
    case DT_INT16:
      PSP_CONVERT(int16_t);
      break;
    case DT_UINT16:
      PSP_CONVERT(uint16_t);
      break;
    case DT_INT32:
      PSP_CONVERT(int32_t);
      break;
    case DT_FLOAT32:
      PSP_CONVERT(float);
      break;
    case DT_FLOAT64:
      PSP_CONVERT(double);
      break;
    default:
      done = false;
    }
  }
  if (!done) {
    int sz = dtype_size(dt);
    PSP_STATS_REDUCTION for (int64_t i = 0; i < n; i++) {
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
      PSP_NOTE_VALUE(y, i);
    }
  }
  *st = (value_stats){n_nan, n_inf, n_neg, first_nan, first_inf, vmin};
}
#undef PSP_CONVERT
#undef PSP_STATS_REDUCTION
#undef PSP_PRAGMA
#undef PSP_NOTE_VALUE

/* deflate cannot expand more than 1032:1 (258-byte matches coded in 2 bits):
 * a header promising more voxel bytes than the compressed file can hold is
 * refused before the voxel buffer is allocated */
#define DEFLATE_MAX_RATIO 1032u

/* Whole-buffer inflate with libdeflate, member after member (paraspinal's
 * own outputs are multi-member gzip, see gzip_parallel), into a buffer of
 * the size the header needs (or the last member's ISIZE when larger, for the
 * common single-member file). NULL when it does not fit or the data are bad:
 * the caller then streams with zlib, which also words the errors. */
static unsigned char *inflate_fast(const unsigned char *in, size_t len, size_t need) {
  if (len < 18) return NULL;
  uint32_t isize = (uint32_t)in[len - 4] | (uint32_t)in[len - 3] << 8 |
                   (uint32_t)in[len - 2] << 16 | (uint32_t)in[len - 1] << 24;
  if ((size_t)isize > need + ((size_t)64 << 20)) return NULL;
  size_t cap = (size_t)isize > need ? (size_t)isize : need;
  unsigned char *out = malloc(cap ? cap : 1);
  struct libdeflate_decompressor *d = out ? libdeflate_alloc_decompressor() : NULL;
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
  if (!ok || got < need) {
    free(out);
    return NULL;
  }
  return out;
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
  const unsigned char *data;
  whole = gz ? inflate_fast(in, len, off + nbytes) : NULL;
  if (whole) {
    data = whole + off;
  } else if (gz) {
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
    data = raw;
  } else {
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
  int64_t fdims[3] = {nim->nx, nim->dim[0] >= 2 ? nim->ny : 1, nim->dim[0] >= 3 ? nim->nz : 1};
  int64_t nvox = fdims[0] * fdims[1] * fdims[2];
  fdata = psp_malloc((size_t)nvox * sizeof(float), err);
  if (!fdata) goto done;
  value_stats st;
  to_float(data, nim->datatype, nim->byteorder != nifti_short_order(), nvox, fdata, nim->scl_slope,
           nim->scl_inter, &st);
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

/* gzip of a buffer as independent members of GZ_CHUNK bytes each,
 * compressed in parallel with libdeflate at a fast level. The chunking does
 * not depend on the thread count, so the bytes are identical at any thread
 * count; every gzip reader (zlib's gzread, Python's gzip, nibabel, ITK, FSL)
 * reads concatenated members as one stream. NULL when out of memory. */
enum { GZ_CHUNK = 1 << 21, GZ_LEVEL = 1 };

static unsigned char *gzip_parallel(const unsigned char *in, size_t len, size_t *out_len) {
  size_t nchunks = len / GZ_CHUNK + 1;
  unsigned char **parts = calloc(nchunks, sizeof *parts);
  size_t *sizes = calloc(nchunks, sizeof *sizes);
  bool failed = !parts || !sizes;
#pragma omp parallel if (nchunks > 1 && !failed)
  {
    struct libdeflate_compressor *c = failed ? NULL : libdeflate_alloc_compressor(GZ_LEVEL);
#pragma omp for schedule(dynamic, 1)
    for (size_t i = 0; i < nchunks; i++) {
      size_t off = i * GZ_CHUNK, n = len - off < GZ_CHUNK ? len - off : GZ_CHUNK;
      if (!c) continue;
      size_t bound = libdeflate_gzip_compress_bound(c, n);
      parts[i] = malloc(bound);
      if (parts[i]) sizes[i] = libdeflate_gzip_compress(c, in + off, n, parts[i], bound);
    }
    if (c) libdeflate_free_compressor(c);
  }
  size_t total = 0;
  for (size_t i = 0; !failed && i < nchunks; i++) {
    if (!sizes[i]) failed = true;
    total += sizes[i];
  }
  unsigned char *z = failed ? NULL : malloc(total);
  if (z) {
    size_t pos = 0;
    for (size_t i = 0; i < nchunks; i++) {
      memcpy(z + pos, parts[i], sizes[i]);
      pos += sizes[i];
    }
    *out_len = total;
  }
  for (size_t i = 0; parts && i < nchunks; i++)
    free(parts[i]);
  free(parts);
  free(sizes);
  return z;
}

/* lrintf(x) (nearest, ties to even) for 0 < x < 2^23 without a call: at
 * 2^23 the float spacing is 1, so adding and removing it rounds x so
 * (float arithmetic, default rounding, no -ffast-math) */
static inline int32_t rint_small(float x) {
  return (int32_t)((x + 0x1p23f) - 0x1p23f);
}

bool psp_nifti_save(const psp_volume *v, const char *path, psp_dtype dtype, const char *description,
                    psp_error **err) {
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

  int bytes = dtype_size(dt);
  size_t body = (size_t)n * (size_t)bytes;
  size_t total = 352 + body;
  unsigned char *out = psp_malloc(total, err);
  if (!out) return false;
  memcpy(out, &hdr, sizeof hdr);
  memset(out + 348, 0, 4); /* no extensions */
  unsigned char *d = out + 352;
  /* converted straight into file order (disjoint rows per thread); one
   * loop per type, float32 rows along the file's first axis copied whole */
  const float *src = psp_volume_data(v);
  const int64_t nx = v->dims[0], ny = v->dims[1], nz = v->dims[2];
#pragma omp parallel for schedule(static) collapse(2)
  for (int64_t k = 0; k < nz; k++)
    for (int64_t j = 0; j < ny; j++) {
      const float *row = src + (k * ny + j) * nx;
      const int64_t base = offset + j * stride[1] + k * stride[2], s0 = stride[0];
      switch (dt) {
      case DT_FLOAT32:
        if (s0 == 1) {
          memcpy(d + base * 4, row, (size_t)nx * 4);
        } else {
          for (int64_t i = 0; i < nx; i++)
            memcpy(d + (base + i * s0) * 4, &row[i], 4);
        }
        break;
      case DT_UINT8:
        for (int64_t i = 0; i < nx; i++) {
          const float x = row[i];
          d[base + i * s0] = isnan(x) ? 0 : x <= 0 ? 0 : x >= 255 ? 255 : (uint8_t)rint_small(x);
        }
        break;
      case DT_INT16:
        for (int64_t i = 0; i < nx; i++) {
          const float x = row[i];
          int16_t y = isnan(x) ? 0 : x <= -32768 ? -32768 : x >= 32767 ? 32767 : (int16_t)lrintf(x);
          memcpy(d + (base + i * s0) * 2, &y, 2);
        }
        break;
      case DT_UINT16:
        for (int64_t i = 0; i < nx; i++) {
          const float x = row[i];
          uint16_t y = isnan(x) ? 0 : x <= 0 ? 0 : x >= 65535 ? 65535 : (uint16_t)rint_small(x);
          memcpy(d + (base + i * s0) * 2, &y, 2);
        }
        break;
      }
    }
  bool ok;
  if (ends_with(path, ".gz")) {
    size_t zn = 0;
    unsigned char *z = gzip_parallel(out, total, &zn);
    if (!z) {
      free(out);
      return psp_error_set(err, PSP_ERR_NOMEM, "%s: compression failed (out of memory?)", path);
    }
    ok = psp_write_file_atomic(path, z, zn, err);
    free(z);
  } else {
    ok = psp_write_file_atomic(path, out, total, err);
  }
  free(out);
  return ok;
}
