/*
 * DESIGN: tests of the DICOM writers (src/io/dicom_write_dcmtk.cpp,
 * src/report/dicom_out.c). The written files are read back with DCMTK's own
 * reader through `dcmdump` (a separate program, not the code under test):
 * geometry (ImagePositionPatient, ImageOrientationPatient, PixelSpacing) must
 * rebuild the affine, stored values must come back through the rescale, the
 * SEG must reference exactly the source instances and carry the source's
 * study, patient and Frame of Reference, and nothing identifying may appear in
 * file names or log messages.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/internal.h"
#include "io/dicom_write.h"
#include "report/dicom_out.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { MAXV = 4096 };

/* All values of `tag` in file (dcmdump +P: also inside sequences), each
 * backslash-separated component as one string. Returns the count. */
static int dump(const char *file, const char *tag, char (*out)[96], int max) {
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "dcmdump -q +L +P %s '%s' 2>/dev/null", tag, file);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  char line[8192];
  int n = 0;
  while (fgets(line, sizeof line, p)) {
    /* "(gggg,eeee) VR [a\b]  # ..." or "(gggg,eeee) VR 1  # ..." or "... UI =Name  # ..." */
    char *v = strchr(line, ')');
    if (!v || strlen(v) < 5) continue;
    v += 5; /* ") VR " */
    char *end;
    if (*v == '[') {
      v++;
      end = strchr(v, ']');
    } else {
      end = strchr(v, ' ');
    }
    if (!end) continue;
    *end = '\0';
    for (char *tok = strtok(v, "\\"); tok && n < max; tok = strtok(NULL, "\\"))
      snprintf(out[n++], sizeof out[0], "%s", tok);
  }
  pclose(p);
  return n;
}

static double dump1(const char *file, const char *tag) {
  static char v[MAXV][96];
  int n = dump(file, tag, v, MAXV);
  assert_true(n >= 1);
  return atof(v[0]);
}

static void scratch(char *out, size_t n, const char *name) {
  snprintf(out, n, "%s/%s", PSP_SCRATCH_DIR, name);
  psp_remove_tree_shallow(out);
  assert_true(psp_mkdir_p(out, NULL));
}

static size_t count_files(const char *dir, const char *prefix) {
  DIR *d = opendir(dir);
  size_t n = 0;
  if (!d) return 0;
  for (struct dirent *e; (e = readdir(d));)
    if (e->d_name[0] != '.' && (!prefix || !strncmp(e->d_name, prefix, strlen(prefix)))) n++;
  closedir(d);
  return n;
}

static void fill_source(psp_dicom_source *s, int64_t nz, bool multiframe) {
  memset(s, 0, sizeof *s);
  snprintf(s->study_uid, sizeof s->study_uid, "1.2.826.0.1.3680043.10.999.1");
  snprintf(s->series_uid, sizeof s->series_uid, "1.2.826.0.1.3680043.10.999.2");
  snprintf(s->frame_of_reference_uid, sizeof s->frame_of_reference_uid,
           "1.2.826.0.1.3680043.10.999.3");
  snprintf(s->sop_class_uid, sizeof s->sop_class_uid,
           multiframe ? "1.2.840.10008.5.1.4.1.1.4.1" : "1.2.840.10008.5.1.4.1.1.4");
  snprintf(s->patient_name, sizeof s->patient_name, "DOE^JANE");
  snprintf(s->patient_id, sizeof s->patient_id, "ID-4711-SECRET");
  snprintf(s->patient_birth_date, sizeof s->patient_birth_date, "19451231");
  snprintf(s->patient_sex, sizeof s->patient_sex, "F");
  snprintf(s->study_date, sizeof s->study_date, "20230405");
  snprintf(s->study_time, sizeof s->study_time, "120000");
  snprintf(s->accession_number, sizeof s->accession_number, "ACC-9876");
  s->n_slices = nz;
  s->sop_instance_uid = calloc((size_t)nz, sizeof *s->sop_instance_uid);
  s->frame_number = calloc((size_t)nz, sizeof *s->frame_number);
  assert_non_null(s->sop_instance_uid);
  for (int64_t k = 0; k < nz; k++) {
    if (multiframe) {
      snprintf(s->sop_instance_uid[k], PSP_UID_LEN, "1.2.826.0.1.3680043.10.999.4");
      s->frame_number[k] = (int32_t)(k + 1);
    } else {
      snprintf(s->sop_instance_uid[k], PSP_UID_LEN, "1.2.826.0.1.3680043.10.999.4.%lld",
               (long long)(k + 100));
    }
  }
}

static void free_source(psp_dicom_source *s) {
  free(s->sop_instance_uid);
  free(s->frame_number);
}

/* ------------------------------------------------------------------------ */

static void test_uid_derive(void **state) {
  (void)state;
  char a[PSP_UID_LEN], b[PSP_UID_LEN], c[PSP_UID_LEN];
  psp_dicom_uid_derive("tag", "abc", 3, a);
  psp_dicom_uid_derive("tag", "abc", 3, b);
  psp_dicom_uid_derive("tag2", "abc", 3, c);
  assert_string_equal(a, b);
  assert_string_not_equal(a, c);
  assert_int_equal(strncmp(a, "2.25.", 5), 0);
  assert_true(strlen(a) <= 64);
  assert_true(a[5] != '0');
  for (const char *p = a + 5; *p; p++)
    assert_true(*p >= '0' && *p <= '9');
}

/* A rotated (about two axes), anisotropic grid with negative and fractional
 * values: the geometry must come back through DCMTK's reader, the values
 * through the rescale. */
static void roundtrip(bool multiframe, psp_dicom_codec codec) {
  const int64_t dims[3] = {7, 5, 4};
  const double sp[3] = {0.8, 1.3, 3.7};
  double ax = 0.31, az = -0.52; /* radians */
  double R[3][3] = {{cos(az), -sin(az) * cos(ax), sin(az) * sin(ax)},
                    {sin(az), cos(az) * cos(ax), -cos(az) * sin(ax)},
                    {0, sin(ax), cos(ax)}};
  psp_dicom_grid g;
  memset(&g, 0, sizeof g);
  memcpy(g.dims, dims, sizeof dims);
  for (int r = 0; r < 3; r++) {
    for (int c = 0; c < 3; c++)
      g.affine[r][c] = R[r][c] * sp[c];
    g.affine[r][3] = 10.25 * (r + 1) - 33.125;
  }
  g.affine[3][3] = 1;
  const size_t n = (size_t)(dims[0] * dims[1] * dims[2]);
  float *data = malloc(n * sizeof *data);
  assert_non_null(data);
  for (size_t i = 0; i < n; i++)
    data[i] = (float)(((double)i - 60.0) * 0.731);
  psp_dicom_source src;
  fill_source(&src, dims[2], false);
  char dir[512];
  snprintf(dir, sizeof dir, "series_%d_%d", multiframe, (int)codec);
  char path[600];
  scratch(path, sizeof path, dir);
  psp_dicom_series_desc d = {.grid = g,
                             .data = data,
                             .image = PSP_DICOM_FF,
                             .vendor = PSP_VENDOR_PHILIPS,
                             .multiframe = multiframe,
                             .codec = codec,
                             .src = &src,
                             .series_number = 7};
  psp_error *err = NULL;
  bool ok = psp_dicom_write_series(&d, path, &err);
  if (!ok) fail_msg("%s", psp_error_message(err));
  assert_int_equal(count_files(path, "IM"), multiframe ? 1 : (size_t)dims[2]);
  if (codec != PSP_CODEC_NONE) { /* decompress with DCMTK for the byte comparison below */
    char cmd[2000];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && for f in IM*.dcm; do %s \"$f\" \"plain_$f\" || exit 1; done", path,
             codec == PSP_CODEC_RLE ? "dcmdrle" : "dcmdjpls");
    assert_int_equal(system(cmd), 0);
  }
  static char v[MAXV][96];
  double maxerr = 0, maxval = 0;
  for (int64_t k = 0; k < (multiframe ? 1 : dims[2]); k++) {
    char f[700], pf[700];
    snprintf(f, sizeof f, "%s/IM%04lld.dcm", path, (long long)(k + 1));
    snprintf(pf, sizeof pf, "%s/%sIM%04lld.dcm", path, codec ? "plain_" : "", (long long)(k + 1));
    int nipp = dump(f, "ImagePositionPatient", v, MAXV);
    assert_int_equal(nipp, multiframe ? 3 * (int)dims[2] : 3);
    for (int q = 0; q < nipp / 3; q++) {
      int64_t kk = multiframe ? q : k;
      for (int r = 0; r < 3; r++) { /* LPS -> RAS */
        double x = atof(v[3 * q + r]) * (r < 2 ? -1 : 1);
        double e = g.affine[r][2] * (double)kk + g.affine[r][3];
        assert_true(fabs(x - e) < 1e-9);
      }
    }
    assert_int_equal(dump(f, "ImageOrientationPatient", v, MAXV), 6);
    double iop[6];
    for (int q = 0; q < 6; q++)
      iop[q] = atof(v[q]);
    assert_int_equal(dump(f, "PixelSpacing", v, MAXV), 2);
    double rowsp = atof(v[0]), colsp = atof(v[1]);
    assert_true(fabs(rowsp - sp[1]) < 1e-12 && fabs(colsp - sp[0]) < 1e-12);
    for (int r = 0; r < 3; r++) {
      double s = r < 2 ? -1 : 1;
      assert_true(fabs(s * iop[r] * colsp - g.affine[r][0]) < 1e-12);
      assert_true(fabs(s * iop[3 + r] * rowsp - g.affine[r][1]) < 1e-12);
    }
    if (!multiframe) assert_true(fabs(dump1(f, "SliceThickness") - sp[2]) < 1e-12);
    double slope = dump1(f, "RescaleSlope"), icpt = dump1(f, "RescaleIntercept");
    assert_true(slope > 0 && slope <= 0.01);
    assert_int_equal((int)dump1(f, "PixelRepresentation"), 1); /* negative values */
    /* pixel data: the last bytes of the (uncompressed) file */
    size_t npx = (size_t)(dims[0] * dims[1] * (multiframe ? dims[2] : 1)), len = 0;
    uint8_t *raw = psp_read_file(pf, &len, -1, NULL);
    assert_non_null(raw);
    assert_true(len > 2 * npx);
    for (size_t i = 0; i < npx; i++) {
      const uint8_t *p = raw + len - 2 * npx + 2 * i;
      int16_t q = (int16_t)(uint16_t)(p[0] | (p[1] << 8));
      double back = q * slope + icpt;
      size_t idx = (multiframe ? 0 : (size_t)k * (size_t)(dims[0] * dims[1])) + i;
      double e = fabs(back - data[idx]);
      maxerr = e > maxerr ? e : maxerr;
      maxval = fabs(data[idx]) > maxval ? fabs(data[idx]) : maxval;
    }
    free(raw);
    assert_true(maxerr <= 0.5 * slope + 1e-9);
  }
  free(data);
  free_source(&src);
}

static void test_series_single(void **state) {
  (void)state;
  roundtrip(false, PSP_CODEC_NONE);
}
static void test_series_multiframe(void **state) {
  (void)state;
  roundtrip(true, PSP_CODEC_NONE);
}
static void test_series_rle(void **state) {
  (void)state;
  roundtrip(false, PSP_CODEC_RLE);
}
static void test_series_jpegls_multiframe(void **state) {
  (void)state;
  roundtrip(true, PSP_CODEC_JPEGLS);
}

static void test_series_refuses_shear(void **state) {
  (void)state;
  psp_dicom_grid g;
  memset(&g, 0, sizeof g);
  g.dims[0] = g.dims[1] = 4;
  g.dims[2] = 2;
  g.affine[0][0] = g.affine[1][1] = g.affine[2][2] = g.affine[3][3] = 1;
  g.affine[0][1] = 0.5; /* columns not perpendicular to rows */
  float data[32] = {0};
  psp_dicom_source src;
  fill_source(&src, 2, false);
  char path[600];
  scratch(path, sizeof path, "sheared");
  psp_dicom_series_desc d = {.grid = g, .data = data, .src = &src};
  psp_error *err = NULL;
  assert_false(psp_dicom_write_series(&d, path, &err));
  assert_int_equal(psp_error_code(err), PSP_ERR_GEOMETRY);
  assert_non_null(strstr(psp_error_message(err), path));
  psp_error_free(err);
  assert_int_equal(count_files(path, NULL), 0);
  free_source(&src);
}

/* ------------------------------------------------------------------------ */
/* analyze --dicom-out on a phantom analysed from NIfTI with a hand-made     */
/* source description                                                        */
/* ------------------------------------------------------------------------ */

typedef struct {
  psp_result *r;
  psp_context *ctx;
  char log[65536];
} analysis;

static void capture(void *user, psp_log_level level, const char *msg) {
  (void)level;
  analysis *a = user;
  size_t n = strlen(a->log);
  snprintf(a->log + n, sizeof a->log - n, "%s\n", msg);
}

static int setup_analysis(void **state) {
  analysis *a = calloc(1, sizeof *a);
  a->ctx = psp_context_create();
  psp_context_set_log(a->ctx, capture, a, PSP_LOG_DEBUG);
  psp_phantom_options po;
  psp_phantom_options_default(&po);
  po.dims[0] = 120;
  po.dims[1] = 100;
  po.dims[2] = 24;
  po.spacing[0] = po.spacing[1] = 3.5;
  po.spacing[2] = 6;
  psp_error *err = NULL;
  psp_phantom *p = psp_phantom_create(&po, a->ctx, &err);
  char dir[512];
  scratch(dir, sizeof dir, "phantom");
  if (!p || !psp_phantom_write(p, dir, "ph", &err)) fail_msg("%s", psp_error_message(err));
  psp_phantom_free(p);
  static char w[600], f[600], l[600];
  snprintf(w, sizeof w, "%s/ph_water.nii.gz", dir);
  snprintf(f, sizeof f, "%s/ph_fat.nii.gz", dir);
  snprintf(l, sizeof l, "%s/ph_dseg.nii.gz", dir);
  psp_analysis_options o;
  psp_analysis_options_default(&o);
  o.water_path = w;
  o.fat_path = f;
  o.labels_path = l;
  a->r = psp_analyze(&o, a->ctx, &err);
  if (!a->r) fail_msg("%s", psp_error_message(err));
  *state = a;
  return 0;
}

static int teardown_analysis(void **state) {
  analysis *a = *state;
  psp_result_free(a->r);
  psp_context_free(a->ctx);
  free(a);
  return 0;
}

/* levels.csv of the run, as report.c hands it over */
#include "levels/levels.h"
#include "report/levels_csv.h"

static void check_seg(analysis *a, bool multiframe) {
  const psp_volume *labels = psp_result_labels(a->r);
  int64_t dims[3];
  psp_volume_dims(labels, dims);
  psp_dicom_source src;
  fill_source(&src, dims[2], multiframe);
  char *lcsv =
      psp_levels_csv(psp_result_levels(a->r), psp_result_measurements(a->r), labels, NULL, NULL);
  assert_non_null(lcsv);
  char dir[600];
  scratch(dir, sizeof dir, multiframe ? "dicom_out_mf" : "dicom_out");
  a->log[0] = '\0';
  psp_error *err = NULL;
  if (!psp_dicom_out_write(a->r, &src, lcsv, dir, a->ctx, &err))
    fail_msg("%s", psp_error_message(err));
  char seg[700];
  snprintf(seg, sizeof seg, "%s/seg.dcm", dir);
  static char v[MAXV][96];
  /* study, patient and frame of reference of the source; a new series */
  assert_int_equal(dump(seg, "StudyInstanceUID", v, MAXV), 1);
  assert_string_equal(v[0], src.study_uid);
  assert_int_equal(dump(seg, "FrameOfReferenceUID", v, MAXV), 1);
  assert_string_equal(v[0], src.frame_of_reference_uid);
  assert_int_equal(dump(seg, "PatientID", v, MAXV), 1);
  assert_string_equal(v[0], src.patient_id);
  assert_int_equal(dump(seg, "Modality", v, MAXV), 1);
  assert_string_equal(v[0], "SEG");
  assert_int_equal(dump(seg, "SOPClassUID", v, MAXV), 1);
  assert_string_equal(v[0], "=SegmentationStorage");
  /* the source series in ReferencedSeriesSequence (the SEG's own series UID
   * comes first at the top level) */
  int ns = dump(seg, "SeriesInstanceUID", v, MAXV);
  bool has_src = false, has_own = false;
  for (int i = 0; i < ns; i++) {
    has_src = has_src || !strcmp(v[i], src.series_uid);
    has_own = has_own || (strcmp(v[i], src.series_uid) && !strncmp(v[i], "2.25.", 5));
  }
  assert_true(has_src && has_own);
  /* every referenced instance is a source instance; every source instance is
   * referenced in ReferencedSeriesSequence */
  int nr = dump(seg, "ReferencedSOPInstanceUID", v, MAXV);
  int64_t seen = 0;
  for (int i = 0; i < nr; i++) {
    bool known = false;
    for (int64_t k = 0; k < dims[2]; k++)
      known = known || !strcmp(v[i], src.sop_instance_uid[k]);
    assert_true(known);
  }
  for (int64_t k = 0; k < dims[2]; k++) {
    bool found = false;
    for (int i = 0; i < nr; i++)
      found = found || !strcmp(v[i], src.sop_instance_uid[k]);
    seen += found;
  }
  assert_int_equal(seen, dims[2]);
  /* one frame per (label, slice) with that label */
  int64_t expect = 0;
  const float *lab = psp_volume_data(labels);
  for (int l = 1; l < PSP_LABEL_COUNT; l++)
    for (int64_t k = 0; k < dims[2]; k++) {
      bool any = false;
      for (int64_t i = 0; i < dims[0] * dims[1] && !any; i++)
        any = lab[k * dims[0] * dims[1] + i] == (float)l;
      expect += any;
    }
  assert_true(expect > 0);
  assert_int_equal((int64_t)dump1(seg, "NumberOfFrames"), expect);
  assert_int_equal(dump(seg, "SegmentNumber", v, MAXV), 4);
  assert_int_equal(dump(seg, "SegmentLabel", v, MAXV), 4);
  assert_string_equal(v[0], "MF_L");
  assert_string_equal(v[3], "ES_R");
  if (multiframe) { /* enhanced source: frame numbers in the derivation references */
    int nf = dump(seg, "ReferencedFrameNumber", v, MAXV);
    assert_int_equal(nf, expect);
  }
  /* secondary captures: one per level with a slice, in the source study */
  size_t nsc = count_files(dir, "sc_");
  assert_true(nsc >= 1);
  assert_int_equal(count_files(dir, NULL), nsc + 1); /* seg.dcm + sc_NNN.dcm, nothing else */
  char sc[700];
  snprintf(sc, sizeof sc, "%s/sc_001.dcm", dir);
  assert_int_equal(dump(sc, "SOPClassUID", v, MAXV), 1);
  assert_string_equal(v[0], "=SecondaryCaptureImageStorage");
  assert_int_equal(dump(sc, "StudyInstanceUID", v, MAXV), 1);
  assert_string_equal(v[0], src.study_uid);
  assert_int_equal(dump(sc, "PhotometricInterpretation", v, MAXV), 1);
  assert_string_equal(v[0], "RGB");
  assert_int_equal(dump(sc, "BurnedInAnnotation", v, MAXV), 1);
  assert_string_equal(v[0], "NO");
  /* nothing identifying in file names or log messages */
  DIR *d = opendir(dir);
  for (struct dirent *e; (e = readdir(d));) {
    assert_null(strstr(e->d_name, "4711"));
    assert_null(strstr(e->d_name, "DOE"));
  }
  closedir(d);
  assert_null(strstr(a->log, "DOE"));
  assert_null(strstr(a->log, "4711"));
  assert_null(strstr(a->log, "19451231"));
  assert_null(strstr(a->log, "ACC-9876"));
  /* content-derived UIDs: a second run gives the same series UID */
  char first[96];
  assert_int_equal(dump(seg, "MediaStorageSOPInstanceUID", v, MAXV), 1);
  snprintf(first, sizeof first, "%s", v[0]);
  char dir2[600];
  scratch(dir2, sizeof dir2, "dicom_out_again");
  assert_true(psp_dicom_out_write(a->r, &src, lcsv, dir2, a->ctx, NULL));
  snprintf(seg, sizeof seg, "%s/seg.dcm", dir2);
  assert_int_equal(dump(seg, "MediaStorageSOPInstanceUID", v, MAXV), 1);
  assert_string_equal(v[0], first);
  free(lcsv);
  free_source(&src);
}

static void test_dicom_out_single(void **state) {
  check_seg(*state, false);
}

static void test_dicom_out_multiframe_source(void **state) {
  check_seg(*state, true);
}

static void test_dicom_out_refusals(void **state) {
  analysis *a = *state;
  char dir[600];
  scratch(dir, sizeof dir, "dicom_out_refused");
  psp_error *err = NULL;
  assert_false(psp_dicom_out_write(a->r, NULL, NULL, dir, a->ctx, &err));
  assert_int_equal(psp_error_code(err), PSP_ERR_USAGE);
  assert_non_null(strstr(psp_error_message(err), "DICOM input"));
  psp_error_free(err);
  err = NULL;
  int64_t dims[3];
  psp_volume_dims(psp_result_labels(a->r), dims);
  psp_dicom_source src;
  fill_source(&src, dims[2] - 1, false);
  assert_false(psp_dicom_out_write(a->r, &src, NULL, dir, a->ctx, &err));
  assert_int_equal(psp_error_code(err), PSP_ERR_UNSUPPORTED);
  psp_error_free(err);
  free_source(&src);
  assert_int_equal(count_files(dir, NULL), 0);
}

int main(void) {
  const struct CMUnitTest unit[] = {
      cmocka_unit_test(test_uid_derive),
      cmocka_unit_test(test_series_single),
      cmocka_unit_test(test_series_multiframe),
      cmocka_unit_test(test_series_rle),
      cmocka_unit_test(test_series_jpegls_multiframe),
      cmocka_unit_test(test_series_refuses_shear),
  };
  const struct CMUnitTest out[] = {
      cmocka_unit_test(test_dicom_out_single),
      cmocka_unit_test(test_dicom_out_multiframe_source),
      cmocka_unit_test(test_dicom_out_refusals),
  };
  int fails = cmocka_run_group_tests_name("dicom_write", unit, NULL, NULL);
  return fails + cmocka_run_group_tests_name("dicom_out", out, setup_analysis, teardown_analysis);
}
