/* Independent check of `paraspinal analyze` on dixon-tum01: reads the files
 * with nifti_clib directly (not the project's loader), computes per label the
 * voxel count, area, mean of F/(F+W) and sum F / sum (F+W) over voxels with
 * F+W > 0, and compares with volumes.csv and slices.csv.
 *   tum01_check WATER FAT LABELS SLICES_CSV VOLUMES_CSV
 * Labels are in the LPM scheme (1 right ES, 2 right MF, 3 left MF, 4 left ES),
 * files are axial with voxel axes L,P,S (checked). Exit 0 = all agree. */
#include <math.h>
#include <nifti2_io.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double voxel(const nifti_image *n, int64_t i) {
  switch (n->datatype) {
  case DT_UINT16:
    return ((const unsigned short *)n->data)[i];
  case DT_INT16:
    return ((const short *)n->data)[i];
  case DT_FLOAT32:
    return ((const float *)n->data)[i];
  case DT_FLOAT64:
    return ((const double *)n->data)[i];
  case DT_UINT8:
    return ((const unsigned char *)n->data)[i];
  }
  fprintf(stderr, "unexpected datatype %d\n", n->datatype);
  exit(2);
}

int main(int argc, char **argv) {
  if (argc != 6) return 2;
  nifti_image *w = nifti_image_read(argv[1], 1), *f = nifti_image_read(argv[2], 1),
              *l = nifti_image_read(argv[3], 1);
  if (!w || !f || !l) return 2;
  /* LPM labels -> project labels: 1 right ES -> 4, 2 right MF -> 2, 3 left MF -> 1, 4 left ES -> 3
   */
  const int map[5] = {0, 4, 2, 1, 3};
  int64_t nx = l->nx, ny = l->ny, nz = l->nz, plane = nx * ny;
  double px = l->dx * l->dy;
  /* per slice and project label */
  double *cnt = calloc((size_t)nz * 5, sizeof(double)),
         *sff = calloc((size_t)nz * 5, sizeof(double));
  double vc[5] = {0}, vsig[5] = {0}, vff[5] = {0}, vf[5] = {0}, vfw[5] = {0};
  for (int64_t k = 0; k < nz; k++)
    for (int64_t p = 0; p < plane; p++) {
      int64_t i = k * plane + p;
      int raw = (int)lround(voxel(l, i));
      if (raw < 1 || raw > 4) continue;
      int lab = map[raw];
      double W = voxel(w, i), F = voxel(f, i);
      cnt[k * 5 + lab] += 1;
      vc[lab] += 1;
      if (F + W > 0) {
        sff[k * 5 + lab] += F / (F + W);
        vsig[lab] += 1;
        vff[lab] += F / (F + W);
        vf[lab] += F;
        vfw[lab] += F + W;
      }
    }
  int bad = 0;
  /* volumes.csv: muscle,side,label,volume_mm3,ff_mean_pct,ff_ratio_pct,... */
  FILE *vcsv = fopen(argv[5], "r");
  char line[4096];
  if (!vcsv || !fgets(line, sizeof line, vcsv)) return 2;
  printf("label  volume_mm3(ours/indep)   ff_mean_pct(ours/indep)   ff_ratio_pct(ours/indep)\n");
  while (fgets(line, sizeof line, vcsv)) {
    char muscle[64], side[16];
    int lab;
    double vol, ffm, ffr;
    if (sscanf(line, "%63[^,],%15[^,],%d,%lf,%lf,%lf", muscle, side, &lab, &vol, &ffm, &ffr) != 6)
      continue;
    double ivol = vc[lab] * px * l->dz, iffm = 100 * vff[lab] / vsig[lab],
           iffr = 100 * vf[lab] / vfw[lab];
    printf("%d %s %s  %10.1f / %10.1f   %8.3f / %8.3f   %8.3f / %8.3f\n", lab, side, muscle, vol,
           ivol, ffm, iffm, ffr, iffr);
    if (fabs(vol - ivol) > 1e-3 * ivol + 0.1 || fabs(ffm - iffm) > 0.01 ||
        fabs(ffr - iffr) > 0.01) {
      printf("  MISMATCH for label %d\n", lab);
      bad++;
    }
  }
  fclose(vcsv);
  /* slices.csv: slice,file_slice,z_mm,muscle,side,label,area_mm2,ff_mean_pct,... */
  FILE *s = fopen(argv[4], "r");
  if (!s || !fgets(line, sizeof line, s)) return 2;
  int rows = 0;
  while (fgets(line, sizeof line, s)) {
    long long k, fk;
    double z, area, ffm;
    char muscle[64], side[16];
    int lab;
    if (sscanf(line, "%lld,%lld,%lf,%63[^,],%15[^,],%d,%lf,%lf", &k, &fk, &z, muscle, side, &lab,
               &area, &ffm) != 8)
      continue;
    rows++;
    double ia = cnt[fk * 5 + lab] * px, iffm = 100 * sff[fk * 5 + lab] / cnt[fk * 5 + lab];
    if (fabs(area - ia) > 0.01 + 1e-6 * ia || fabs(ffm - iffm) > 0.01) {
      printf("slice %lld label %d: area %.2f vs %.2f, ff %.3f vs %.3f\n", fk, lab, area, ia, ffm,
             iffm);
      bad++;
    }
  }
  fclose(s);
  int expect = 0;
  for (int64_t i = 0; i < nz * 5; i++)
    expect += cnt[i] > 0;
  if (rows != expect) {
    printf("slices.csv has %d rows, expected %d\n", rows, expect);
    bad++;
  }
  printf("%d slice rows checked, %d mismatches\n", rows, bad);
  free(cnt);
  free(sff);
  nifti_image_free(w);
  nifti_image_free(f);
  nifti_image_free(l);
  return bad ? 1 : 0;
}
