/* mkbad: writes small valid and deliberately broken NIfTI files for the
 * bad-input tests (tests/integration/bad_input.sh).
 *   mkbad CASE OUT [NX NY NZ]
 * CASE: valid, labels, labels-unknown, truncated, notnifti, empty, 4d,
 *       zerospacing, nan, inf, huge */
#include <math.h>
#include <stdbool.h>
#include <nifti2_io.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static int write_file(const char *path, const nifti_1_header *h, const void *data, size_t n,
                      size_t keep) {
  unsigned char *buf = malloc(352 + n);
  memcpy(buf, h, 348);
  memset(buf + 348, 0, 4);
  memcpy(buf + 352, data, n);
  size_t total = keep ? keep : 352 + n;
  size_t len = strlen(path);
  int ok;
  if (len > 3 && !strcmp(path + len - 3, ".gz")) {
    gzFile f = gzopen(path, "wb");
    ok = f && gzwrite(f, buf, (unsigned)total) == (int)total && gzclose(f) == Z_OK;
  } else {
    FILE *f = fopen(path, "wb");
    ok = f && fwrite(buf, 1, total, f) == total && fclose(f) == 0;
  }
  free(buf);
  return ok ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: mkbad CASE OUT [NX NY NZ]\n");
    return 2;
  }
  const char *c = argv[1], *out = argv[2];
  int64_t nx = argc > 5 ? atoi(argv[3]) : 16, ny = argc > 5 ? atoi(argv[4]) : 16,
          nz = argc > 5 ? atoi(argv[5]) : 4;
  if (!strcmp(c, "empty")) {
    FILE *f = fopen(out, "wb");
    return f && fclose(f) == 0 ? 0 : 1;
  }
  if (!strcmp(c, "notnifti")) {
    FILE *f = fopen(out, "wb");
    for (int i = 0; i < 200; i++)
      fputs("not an image ", f);
    return fclose(f) == 0 ? 0 : 1;
  }
  int64_t nt = !strcmp(c, "4d") ? 3 : 1;
  int64_t dims[8] = {nt > 1 ? 4 : 3, nx, ny, nz, nt, 1, 1, 1};
  nifti_1_header *h = nifti_make_new_n1_header(dims, DT_FLOAT32);
  h->pixdim[1] = 1.5f;
  h->pixdim[2] = 1.5f;
  h->pixdim[3] = 4.0f;
  h->qform_code = 0;
  h->sform_code = 1;
  h->srow_x[0] = -1.5f;
  h->srow_y[1] = -1.5f;
  h->srow_z[2] = 4.0f;
  h->srow_x[3] = 12;
  h->srow_y[3] = 12;
  h->vox_offset = 352;
  memcpy(h->magic, "n+1", 4);
  size_t n = (size_t)(nx * ny * nz * nt);
  float *v = calloc(n, sizeof(float));
  bool labels = !strncmp(c, "labels", 6);
  for (int64_t k = 0; k < nz * nt; k++)
    for (int64_t j = 0; j < ny; j++)
      for (int64_t i = 0; i < nx; i++) {
        size_t x = (size_t)((k * ny + j) * nx + i);
        bool body = (i - nx / 2) * (i - nx / 2) + (j - ny / 2) * (j - ny / 2) < (nx * nx) / 5;
        if (labels) {
          v[x] = (j > ny / 2 && body) ? (float)(1 + (i > nx / 2) + 2 * (i % 3 == 0)) : 0.0f;
        } else {
          v[x] = body ? 400.0f + (float)((i * 13 + j * 7) % 50) : (float)((i * 3 + j) % 5);
        }
      }
  size_t keep = 0;
  if (!strcmp(c, "labels-unknown"))
    v[(ny / 2 + 2) * nx + nx / 2] = 9;
  else if (!strcmp(c, "truncated"))
    keep = 352 + n * sizeof(float) / 2;
  else if (!strcmp(c, "zerospacing")) {
    h->sform_code = 0;
    h->qform_code = 1;
    h->pixdim[3] = 0;
  } else if (!strcmp(c, "nan"))
    v[n / 2] = NAN;
  else if (!strcmp(c, "inf"))
    v[n / 3] = INFINITY;
  else if (!strcmp(c, "huge")) {
    h->dim[1] = h->dim[2] = h->dim[3] = 30000;
  } else if (strcmp(c, "valid") && strcmp(c, "labels") && strcmp(c, "4d")) {
    fprintf(stderr, "mkbad: unknown case %s\n", c);
    return 2;
  }
  int rc = write_file(out, h, v, n * sizeof(float), keep);
  free(v);
  free(h);
  return rc;
}
