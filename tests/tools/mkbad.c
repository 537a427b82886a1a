/* DESIGN: mkbad writes small valid and deliberately broken NIfTI files for
 * the malformed-input corpus (tests/malformed/make_corpus.sh commits them;
 * tests/integration/bad_input.sh runs each case through the CLI). Every
 * file starts from the same small valid image (a disc of "tissue" in noise,
 * 1.5 x 1.5 x 4 mm, sform LPS) and breaks exactly one thing, so each case
 * tests one check. Output is deterministic (zlib writes mtime 0).
 *   mkbad CASE OUT [NX NY NZ]
 * CASE (NIfTI-1 unless noted):
 *   valid labels labels-unknown labels-float labels-noxform ffmap-percent
 *   truncated (.gz cut in the data) truncated-header notnifti empty 4d
 *   zerospacing nan inf huge negative spacing sizeof-hdr bad-magic hdr-img
 *   dim-zero dim-negative dim0 dims-lie dtype-complex dtype-rgb
 *   voxoffset-past voxoffset-inside negspacing singular nan-affine
 *   gzip-garbage gzip-empty n2-valid n2-truncated n2-huge */
#include <math.h>
#include <nifti2_io.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static bool ends_gz(const char *path) {
  size_t len = strlen(path);
  return len > 3 && !strcmp(path + len - 3, ".gz");
}

static int write_bytes(const char *path, const void *buf, size_t total) {
  int ok;
  if (ends_gz(path)) {
    gzFile f = gzopen(path, "wb");
    ok = f && (total == 0 || gzwrite(f, buf, (unsigned)total) == (int)total);
    ok = (f && gzclose(f) == Z_OK) && ok;
  } else {
    FILE *f = fopen(path, "wb");
    ok = f && fwrite(buf, 1, total, f) == total;
    ok = (f && fclose(f) == 0) && ok;
  }
  return ok ? 0 : 1;
}

/* header (hsize bytes) + 4 zero extension bytes + data; keep = bytes kept */
static int write_file(const char *path, const void *h, size_t hsize, const void *data, size_t n,
                      size_t keep) {
  unsigned char *buf = malloc(hsize + 4 + n);
  if (!buf) return 1;
  memcpy(buf, h, hsize);
  memset(buf + hsize, 0, 4);
  memcpy(buf + hsize + 4, data, n);
  size_t total = keep ? keep : hsize + 4 + n;
  int rc = write_bytes(path, buf, total);
  free(buf);
  return rc;
}

static void fill(float *v, int64_t nx, int64_t ny, int64_t nz, int64_t nt, bool labels) {
  for (int64_t k = 0; k < nz * nt; k++)
    for (int64_t j = 0; j < ny; j++)
      for (int64_t i = 0; i < nx; i++) {
        size_t x = (size_t)((k * ny + j) * nx + i);
        bool body = (i - nx / 2) * (i - nx / 2) + (j - ny / 2) * (j - ny / 2) < (nx * nx) / 5;
        if (labels)
          v[x] = (j > ny / 2 && body) ? (float)(1 + (i > nx / 2) + 2 * (i % 3 == 0)) : 0.0f;
        else
          v[x] = body ? 400.0f + (float)((i * 13 + j * 7) % 50) : (float)((i * 3 + j) % 5);
      }
}

/* NIfTI-2 cases: a hand-built header (nifti_clib's defaults + our sform). */
static int nifti2_case(const char *c, const char *out, int64_t nx, int64_t ny, int64_t nz) {
  int64_t dims[8] = {3, nx, ny, nz, 1, 1, 1, 1};
  nifti_2_header *h = nifti_make_new_n2_header(dims, DT_FLOAT32);
  if (!h) return 1;
  h->pixdim[1] = h->pixdim[2] = 1.5;
  h->pixdim[3] = 4.0;
  h->qform_code = 0;
  h->sform_code = 1;
  h->srow_x[0] = -1.5;
  h->srow_y[1] = -1.5;
  h->srow_z[2] = 4.0;
  h->vox_offset = 544;
  memcpy(h->magic, "n+2\0\r\n\032\n", 8);
  size_t n = (size_t)(nx * ny * nz);
  float *v = calloc(n, sizeof(float));
  if (!v) return 1;
  fill(v, nx, ny, nz, 1, false);
  size_t keep = 0;
  if (!strcmp(c, "n2-truncated"))
    keep = 544 + n * sizeof(float) / 3;
  else if (!strcmp(c, "n2-huge"))
    h->dim[1] = h->dim[2] = h->dim[3] = (int64_t)1 << 40; /* 2^120 voxels */
  int rc = write_file(out, h, sizeof *h, v, n * sizeof(float), keep);
  free(v);
  free(h);
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: mkbad CASE OUT [NX NY NZ]\n");
    return 2;
  }
  const char *c = argv[1], *out = argv[2];
  int64_t nx = argc > 5 ? atoi(argv[3]) : 16, ny = argc > 5 ? atoi(argv[4]) : 16,
          nz = argc > 5 ? atoi(argv[5]) : 4;
  if (!strcmp(c, "empty") || !strcmp(c, "gzip-empty")) /* gzip-empty: OUT ends in .gz */
    return write_bytes(out, "", 0);
  if (!strcmp(c, "notnifti")) {
    FILE *f = fopen(out, "wb");
    if (!f) return 1;
    for (int i = 0; i < 200; i++)
      fputs("not an image ", f);
    return fclose(f) == 0 ? 0 : 1;
  }
  if (!strcmp(c, "gzip-garbage")) {
    /* a gzip member header followed by bytes that are no deflate stream */
    unsigned char b[600] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    for (size_t i = 10; i < sizeof b; i++)
      b[i] = (unsigned char)(0xff - (i * 7) % 13);
    FILE *f = fopen(out, "wb");
    return f && fwrite(b, 1, sizeof b, f) == sizeof b && fclose(f) == 0 ? 0 : 1;
  }
  if (!strncmp(c, "n2-", 3)) return nifti2_case(c, out, nx, ny, nz);

  int64_t nt = !strcmp(c, "4d") ? 3 : 1;
  int64_t dims[8] = {nt > 1 ? 4 : 3, nx, ny, nz, nt, 1, 1, 1};
  nifti_1_header *h = nifti_make_new_n1_header(dims, DT_FLOAT32);
  if (!h) return 1;
  float sp = !strcmp(c, "spacing") ? 1.6f : 1.5f;
  h->pixdim[1] = sp;
  h->pixdim[2] = sp;
  h->pixdim[3] = 4.0f;
  h->qform_code = 0;
  h->sform_code = 1;
  h->srow_x[0] = -sp;
  h->srow_y[1] = -sp;
  h->srow_z[2] = 4.0f;
  h->srow_x[3] = 12;
  h->srow_y[3] = 12;
  h->vox_offset = 352;
  memcpy(h->magic, "n+1", 4);
  size_t n = (size_t)(nx * ny * nz * nt);
  float *v = calloc(n, sizeof(float));
  if (!v) return 1;
  bool labels = !strncmp(c, "labels", 6);
  fill(v, nx, ny, nz, nt, labels);
  size_t keep = 0;
  if (!strcmp(c, "valid") || !strcmp(c, "labels") || !strcmp(c, "4d") || !strcmp(c, "spacing")) {
  } else if (!strcmp(c, "labels-unknown")) {
    v[(ny / 2 + 2) * nx + nx / 2] = 9;
  } else if (!strcmp(c, "labels-noxform")) {
    /* the valid labels with neither qform nor sform (a tool that drops
     * them): the pixdim diagonal would flip them against the LPS images */
    h->sform_code = 0;
    h->qform_code = 0;
  } else if (!strcmp(c, "labels-float")) {
    v[(ny / 2 + 2) * nx + nx / 2] = 1.5f;
  } else if (!strcmp(c, "ffmap-percent")) {
    /* a fat-fraction map in percent (0..100), NaN outside the body */
    for (size_t x = 0; x < n; x++)
      v[x] = v[x] > 100 ? (float)(5 + (x * 7) % 90) : NAN;
  } else if (!strcmp(c, "truncated")) {
    keep = 352 + n * sizeof(float) / 2;
  } else if (!strcmp(c, "truncated-header")) {
    keep = 200;
  } else if (!strcmp(c, "zerospacing")) {
    h->sform_code = 0;
    h->qform_code = 1;
    h->pixdim[3] = 0;
  } else if (!strcmp(c, "negspacing")) {
    h->sform_code = 0;
    h->qform_code = 1;
    h->pixdim[1] = -1.5f;
  } else if (!strcmp(c, "nan")) {
    v[n / 2] = NAN;
  } else if (!strcmp(c, "inf")) {
    v[n / 3] = INFINITY;
  } else if (!strcmp(c, "negative")) {
    /* a signed (real-valued or phase) image where a magnitude belongs */
    for (size_t x = 0; x < n; x++)
      v[x] = -v[x];
  } else if (!strcmp(c, "huge")) {
    h->dim[1] = h->dim[2] = h->dim[3] = 30000;
  } else if (!strcmp(c, "dims-lie")) {
    /* 1000^3 float32 voxels promised (4 GB, under the voxel limit), the
     * data of a 16 x 16 x 4 image present: must fail without allocating */
    h->dim[1] = h->dim[2] = h->dim[3] = 1000;
  } else if (!strcmp(c, "sizeof-hdr")) {
    h->sizeof_hdr = 350;
  } else if (!strcmp(c, "bad-magic")) {
    memcpy(h->magic, "xyz", 4);
  } else if (!strcmp(c, "hdr-img")) {
    memcpy(h->magic, "ni1", 4);
  } else if (!strcmp(c, "dim-zero")) {
    h->dim[3] = 0;
  } else if (!strcmp(c, "dim-negative")) {
    h->dim[1] = -16;
  } else if (!strcmp(c, "dim0")) {
    h->dim[0] = 9;
  } else if (!strcmp(c, "dtype-complex")) {
    h->datatype = DT_COMPLEX64;
    h->bitpix = 64; /* the data then holds half as many voxels: refused first */
  } else if (!strcmp(c, "dtype-rgb")) {
    h->datatype = DT_RGB24;
    h->bitpix = 24;
  } else if (!strcmp(c, "voxoffset-past")) {
    h->vox_offset = 1e6f;
  } else if (!strcmp(c, "voxoffset-inside")) {
    h->vox_offset = 100;
  } else if (!strcmp(c, "singular")) {
    /* second voxel axis parallel to the first */
    h->srow_x[1] = -1.5f;
    h->srow_y[1] = 0;
  } else if (!strcmp(c, "nan-affine")) {
    h->srow_y[3] = NAN;
  } else {
    fprintf(stderr, "mkbad: unknown case %s\n", c);
    free(v);
    free(h);
    return 2;
  }
  int rc = write_file(out, h, sizeof *h, v, n * sizeof(float), keep);
  free(v);
  free(h);
  return rc;
}
