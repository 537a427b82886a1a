/*
 * DESIGN: the DICOM outputs of `analyze --dicom-out`, for PACS
 * post-processing: the results go back next to the images they came from.
 *
 * seg.dcm: a binary DICOM Segmentation of the label map on the source grid
 * (the first image input: water, in-phase or FF map), one segment per label
 * present, each frame referencing the source slice (and frame) it was derived
 * from; same study, patient module and Frame of Reference, new series.
 *
 * sc_NNN.dcm: RGB Secondary Capture images, one per vertebral level of
 * levels.csv that has a slice (superior first, like report.html): the QC
 * image of that slice (src/report/qc_png.c: anatomy and FF panels, the four
 * outlines, landmarks, flag reason) with the per-level table burned in below
 * it (area and mean FF per muscle and side at each level's slice; the
 * image's own level highlighted). The table is read from the levels.csv
 * text the run writes, so the image and the CSV never disagree. Without
 * named levels: up to five evenly spaced measured slices, with their own
 * per-slice numbers. No identifier is burned in (BurnedInAnnotation NO).
 *
 * UIDs are content-derived (psp_dicom_uid_derive over the tool version, the
 * source series and the label bytes / the image hashes): the same analysis
 * gives the same UIDs, so a PACS that receives a re-run keeps one copy, and
 * any change of the result gives new ones. The content and series dates are
 * the time of the run (like report.json's "created"); they are the only
 * bytes that differ between identical runs.
 *
 * Files are written into the caller's folder (the report's temporary folder,
 * moved into place with the other outputs); file names carry no identifier.
 */
#include "report/dicom_out.h"
#include "io/dicom_write.h"
#include "levels/levels.h"
#include "report/qc_png.h"
#include "segment/segment.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { MAX_ENTRIES = 128, FALLBACK_IMAGES = 5, PAD = 8, GAP = 6 };

static const uint8_t BG_RGB[3] = {24, 24, 24};
static const uint8_t TEXT_RGB[3] = {235, 235, 235};
static const uint8_t DIM_RGB[3] = {160, 160, 160};
static const uint8_t HILITE_BG[3] = {60, 64, 110};
static const uint8_t RULE_RGB[3] = {90, 90, 90};

/* One row of the burned-in table. */
typedef struct entry {
  char name[32]; /* "L4/L5", "L4", or "SLICE 12" */
  char kind[12]; /* "disc", "vertebra", "slice" */
  int64_t slice; /* internal k, -1 when the level has no slice in the stack */
  int64_t file_slice;
  double area[PSP_LABEL_COUNT], ff[PSP_LABEL_COUNT]; /* NaN = not measured */
} entry;

static void entry_init(entry *e, const char *name, const char *kind) {
  memset(e, 0, sizeof *e);
  snprintf(e->name, sizeof e->name, "%s", name);
  snprintf(e->kind, sizeof e->kind, "%s", kind);
  e->slice = e->file_slice = -1;
  for (int l = 0; l < PSP_LABEL_COUNT; l++)
    e->area[l] = e->ff[l] = NAN;
}

/* ------------------------------------------------------------------------ */
/* The table: from levels.csv, or a few measured slices                      */
/* ------------------------------------------------------------------------ */

/* Splits one CSV line (no quoting: the run's own levels.csv) in place. */
static int split_csv(char *line, char **f, int max) {
  int n = 0;
  for (char *p = line; n < max;) {
    f[n++] = p;
    char *c = strchr(p, ',');
    if (!c) break;
    *c = '\0';
    p = c + 1;
  }
  return n;
}

static double num_or_nan(const char *s) {
  if (!s || !*s) return NAN;
  char *end;
  double v = strtod(s, &end);
  return end == s ? NAN : v;
}

static int label_of(const char *muscle, const char *side) {
  int m = !strcmp(muscle, "multifidus") ? 0 : !strcmp(muscle, "erector_spinae") ? 2 : -1;
  int s = !strcmp(side, "left") ? 1 : !strcmp(side, "right") ? 2 : -1;
  return m < 0 || s < 0 ? 0 : m + s;
}

/* Entries from levels.csv, inferior to superior; 0 when there are none. */
static size_t entries_from_csv(const char *csv, entry *out, psp_error **err) {
  if (!csv) return 0;
  char *text = psp_malloc(strlen(csv) + 1, err);
  if (!text) return (size_t)-1;
  strcpy(text, csv);
  enum { C_LEVEL, C_KIND, C_MUSCLE, C_SIDE, C_SLICE, C_FILE, C_AREA, C_FF, N_COLS };
  static const char *const names[N_COLS] = {"level", "kind",       "muscle",   "side",
                                            "slice", "file_slice", "area_mm2", "ff_mean_pct"};
  int col[N_COLS];
  for (int c = 0; c < N_COLS; c++)
    col[c] = -1;
  size_t n = 0;
  bool header = true;
  char *save = NULL;
  for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    size_t len = strlen(line);
    if (len && line[len - 1] == '\r') line[len - 1] = '\0';
    char *f[64];
    int nf = split_csv(line, f, 64);
    if (header) {
      for (int i = 0; i < nf; i++)
        for (int c = 0; c < N_COLS; c++)
          if (!strcmp(f[i], names[c])) col[c] = i;
      header = false;
      bool all = true;
      for (int c = 0; c < N_COLS; c++)
        all = all && col[c] >= 0;
      if (!all) break; /* not a levels.csv: no table */
      continue;
    }
    bool short_row = false;
    for (int c = 0; c < N_COLS; c++)
      short_row = short_row || col[c] >= nf;
    if (short_row) continue;
    int l = label_of(f[col[C_MUSCLE]], f[col[C_SIDE]]);
    if (l == 0) continue;
    entry *e = n ? &out[n - 1] : NULL;
    if (!e || strcmp(e->name, f[col[C_LEVEL]]) != 0) {
      if (n == MAX_ENTRIES) break;
      e = &out[n++];
      entry_init(e, f[col[C_LEVEL]], f[col[C_KIND]]);
    }
    double k = num_or_nan(f[col[C_SLICE]]), fs = num_or_nan(f[col[C_FILE]]);
    if (isfinite(k)) e->slice = (int64_t)k;
    if (isfinite(fs)) e->file_slice = (int64_t)fs;
    e->area[l] = num_or_nan(f[col[C_AREA]]);
    e->ff[l] = num_or_nan(f[col[C_FF]]);
  }
  free(text);
  return n;
}

/* Up to FALLBACK_IMAGES evenly spaced slices with measurements (or of the
 * whole stack), superior first, with their per-slice numbers. */
static size_t entries_from_slices(const psp_result *r, entry *out) {
  const psp_measurements *m = psp_result_measurements(r);
  const psp_volume *labels = psp_result_labels(r);
  int64_t dims[3];
  psp_volume_dims(labels, dims);
  int64_t cand[FALLBACK_IMAGES] = {0}, n_meas = 0, last = -1;
  for (size_t i = 0; i < psp_measurements_slice_count(m); i++) {
    int64_t k = psp_measurements_slice_row(m, i)->slice;
    if (k != last) {
      n_meas++;
      last = k;
    }
  }
  /* the measured slices are consecutive in the table but may have gaps; pick
   * among them by rank */
  int64_t pool = n_meas > 0 ? n_meas : dims[2];
  int64_t want = pool < FALLBACK_IMAGES ? pool : FALLBACK_IMAGES;
  for (int64_t i = 0; i < want; i++) {
    int64_t rank = want == 1
                       ? pool / 2
                       : (int64_t)llround((double)i * (double)(pool - 1) / (double)(want - 1));
    if (n_meas == 0) {
      cand[i] = rank;
      continue;
    }
    int64_t seen = -1, prev = -1;
    for (size_t j = 0; j < psp_measurements_slice_count(m); j++) {
      int64_t k = psp_measurements_slice_row(m, j)->slice;
      if (k != prev) {
        seen++;
        prev = k;
      }
      if (seen == rank) {
        cand[i] = k;
        break;
      }
    }
  }
  size_t n = 0;
  for (int64_t i = want - 1; i >= 0; i--) {
    char name[32];
    snprintf(name, sizeof name, "SLICE %lld", (long long)psp_volume_file_slice(labels, cand[i]));
    entry *e = &out[n++];
    entry_init(e, name, "slice");
    e->slice = cand[i];
    e->file_slice = psp_volume_file_slice(labels, cand[i]);
    for (size_t j = 0; j < psp_measurements_slice_count(m); j++) {
      const psp_region_metrics *row = psp_measurements_slice_row(m, j);
      if (row->slice != cand[i] || row->label < 1 || row->label >= PSP_LABEL_COUNT) continue;
      e->area[row->label] = row->area_mm2;
      e->ff[row->label] = 100.0 * row->ff_mean;
    }
  }
  return n;
}

static void fmt(char *out, size_t n, double v, int dec) {
  if (isfinite(v))
    snprintf(out, n, "%.*f", dec, v);
  else
    snprintf(out, n, "-");
}

static void table_line(char *out, size_t n, const entry *e) {
  char sl[24], a[PSP_LABEL_COUNT][24], f[PSP_LABEL_COUNT][24];
  if (e->file_slice >= 0)
    snprintf(sl, sizeof sl, "%lld", (long long)e->file_slice);
  else
    snprintf(sl, sizeof sl, "-");
  for (int l = 1; l < PSP_LABEL_COUNT; l++) {
    fmt(a[l], sizeof a[l], e->area[l], 0);
    fmt(f[l], sizeof f[l], e->ff[l], 1);
  }
  snprintf(out, n, "%-8s %5s  %8s %5s  %8s %5s  %8s %5s  %8s %5s", e->name, sl, a[1], f[1], a[2],
           f[2], a[3], f[3], a[4], f[4]);
}

static const char TABLE_FOOTER[] =
    "AREA IN MM2 AND FF (MEAN VOXEL FAT FRACTION, %) AT EACH LEVEL'S SLICE; - = NONE";
static const char TABLE_HEADER[] =
    "LEVEL    SLICE  MF L MM2  FF %  MF R MM2  FF %  ES L MM2  FF %  ES R MM2  FF %";

/* ------------------------------------------------------------------------ */
/* Images                                                                    */
/* ------------------------------------------------------------------------ */

static void fill(uint8_t *rgb, int w, int x0, int y0, int x1, int y1, const uint8_t c[3]) {
  for (int y = y0; y < y1; y++)
    for (int x = x0; x < x1; x++)
      memcpy(rgb + ((size_t)y * (size_t)w + (size_t)x) * 3, c, 3);
}

/* The QC image of entry `cur` with the table below it. */
static uint8_t *compose(const psp_result *r, const psp_qc_slice_marks *marks, const entry *ents,
                        size_t n, size_t cur, const char *title, int *width, int *height,
                        psp_error **err) {
  int qw = 0, qh = 0;
  uint8_t *qc = psp_qc_render_rgb(psp_report_qc_anatomy(r), psp_ffmap_ff(psp_result_ffmap(r)),
                                  psp_result_labels(r), marks, ents[cur].slice, &qw, &qh, err);
  if (!qc) return NULL;
  const int adv = psp_qc_char_advance(), lh = psp_qc_line_height(), row_h = lh + GAP;
  char line[256];
  const int n_lines = 2 + (int)n + 3; /* title, header, rows, footer */
  char version_line[128];
  snprintf(version_line, sizeof version_line,
           "PARASPINAL %s. RESEARCH USE ONLY, NOT FOR DIAGNOSIS.", psp_version());
  size_t chars = strlen(TABLE_HEADER);
  const char *texts[3] = {title, TABLE_FOOTER, version_line};
  for (int i = 0; i < 3; i++)
    if (strlen(texts[i]) > chars) chars = strlen(texts[i]);
  int tw = 2 * PAD + (int)chars * adv;
  int w = qw > tw ? qw : tw, h = qh + 2 * PAD + n_lines * row_h;
  uint8_t *rgb = psp_malloc((size_t)w * (size_t)h * 3, err);
  if (!rgb) {
    free(qc);
    return NULL;
  }
  fill(rgb, w, 0, 0, w, h, BG_RGB);
  for (int y = 0; y < qh; y++)
    memcpy(rgb + (size_t)y * (size_t)w * 3, qc + (size_t)y * (size_t)qw * 3, (size_t)qw * 3);
  free(qc);
  int y = qh;
  fill(rgb, w, 0, y, w, y + 2, RULE_RGB);
  y += PAD;
  psp_qc_draw_text(rgb, w, h, PAD, y, title, TEXT_RGB);
  y += row_h;
  psp_qc_draw_text(rgb, w, h, PAD, y, TABLE_HEADER, DIM_RGB);
  y += row_h;
  for (size_t i = 0; i < n; i++, y += row_h) {
    if (i == cur) fill(rgb, w, PAD / 2, y - GAP / 2, w - PAD / 2, y + lh + GAP / 2, HILITE_BG);
    table_line(line, sizeof line, &ents[i]);
    psp_qc_draw_text(rgb, w, h, PAD, y, line, i == cur ? TEXT_RGB : DIM_RGB);
  }
  y += GAP;
  psp_qc_draw_text(rgb, w, h, PAD, y, TABLE_FOOTER, DIM_RGB);
  y += row_h;
  psp_qc_draw_text(rgb, w, h, PAD, y, version_line, DIM_RGB);
  *width = w;
  *height = h;
  return rgb;
}

/* ------------------------------------------------------------------------ */
/* Entry                                                                     */
/* ------------------------------------------------------------------------ */

static bool check_source(const psp_result *r, const psp_dicom_source *src, psp_error **err) {
  const psp_volume *labels = psp_result_labels(r);
  int64_t dims[3];
  psp_volume_dims(labels, dims);
  psp_orientation o = psp_volume_orientation(labels);
  if (!src)
    return psp_error_set(err, PSP_ERR_USAGE,
                         "--dicom-out needs DICOM input (--dicom DIR) so the results can "
                         "reference the source study");
  if (o.file_axis[2] != 2 || src->n_slices != dims[2])
    return psp_error_set(err, PSP_ERR_UNSUPPORTED,
                         "--dicom-out: the source series is not an axial stack of %lld slices "
                         "(%lld source images); DICOM output needs one axial source image per "
                         "slice",
                         (long long)dims[2], (long long)src->n_slices);
  if (!src->study_uid[0] || !src->series_uid[0] || !src->sop_class_uid[0] || !src->sop_instance_uid)
    return psp_error_set(err, PSP_ERR_DATA,
                         "--dicom-out: the source series lacks study, series or SOP UIDs");
  for (int64_t k = 0; k < dims[2]; k++)
    if (!src->sop_instance_uid[k][0])
      return psp_error_set(err, PSP_ERR_DATA,
                           "--dicom-out: source slice %lld has no SOP Instance UID", (long long)k);
  return true;
}

static bool write_seg(const psp_result *r, const psp_dicom_source *src, const char *dir,
                      const char *date, const char *tod, const char *version, psp_context *ctx,
                      psp_error **err) {
  const psp_volume *labels = psp_result_labels(r);
  int64_t n = psp_volume_voxel_count(labels);
  float *f = psp_malloc((size_t)n * sizeof *f, err);
  uint8_t *lab = psp_malloc((size_t)n, err);
  const char **ref = NULL;
  int32_t *frame = NULL;
  psp_dicom_grid g;
  memset(&g, 0, sizeof g);
  bool ok = f && lab;
  bool any = false;
  if (ok) {
    psp_volume_to_file_order(labels, f, g.dims, g.affine);
    for (int64_t i = 0; i < n; i++) {
      float v = f[i];
      lab[i] = (uint8_t)(v >= 1 && v < PSP_LABEL_COUNT ? (int)v : 0);
      any = any || lab[i];
    }
    ref = psp_calloc((size_t)g.dims[2], sizeof *ref, err);
    frame = psp_calloc((size_t)g.dims[2], sizeof *frame, err);
    ok = ref && frame;
  }
  if (ok && !any) {
    psp_warn(ctx, "--dicom-out: no muscle was segmented on any slice, so no DICOM segmentation "
                  "(dicom/seg.dcm) was written; the secondary captures show why");
  } else if (ok) {
    for (int64_t k = 0; k < g.dims[2]; k++) {
      int64_t fs = psp_volume_file_slice(labels, k);
      ref[fs] = src->sop_instance_uid[k];
      frame[fs] = src->frame_number ? src->frame_number[k] : 0;
    }
    char tag[512], series[PSP_UID_LEN], sop[PSP_UID_LEN + 8], path[4096];
    bool automatic = psp_result_segmentation(r) != NULL;
    snprintf(tag, sizeof tag, "paraspinal SEG|%s|%s|%s", version, src->series_uid,
             automatic ? "automatic" : "labels");
    psp_dicom_uid_derive(tag, lab, (size_t)n, series);
    snprintf(sop, sizeof sop, "%s.1", series);
    psp_dicom_seg_desc d = {.grid = g,
                            .labels = lab,
                            .src = src,
                            .ref_sop_uid = ref,
                            .ref_frame = frame,
                            .series_uid = series,
                            .sop_uid = sop,
                            .series_number = PSP_DICOM_OUT_SEG_SERIES,
                            .automatic = automatic,
                            .software_version = version,
                            .content_date = date,
                            .content_time = tod,
                            .verbose = psp_result_options(r)->dicom_toolkit_log};
    ok =
        psp_path_join(path, sizeof path, dir, "seg.dcm", err) && psp_dicom_write_seg(&d, path, err);
  }
  free(f);
  free(lab);
  free(ref);
  free(frame);
  return ok;
}

static bool write_sc(const psp_result *r, const psp_dicom_source *src, const char *levels_csv,
                     const char *dir, const char *date, const char *tod, const char *version,
                     psp_error **err) {
  entry *ents = psp_calloc(MAX_ENTRIES, sizeof *ents, err);
  if (!ents) return false;
  size_t n = entries_from_csv(levels_csv, ents, err);
  bool ok = n != (size_t)-1;
  size_t with_slice = 0;
  for (size_t i = 0; ok && i < n; i++)
    with_slice += ents[i].slice >= 0;
  if (ok && with_slice == 0) {
    n = entries_from_slices(r, ents);
  } else if (ok) { /* superior first, like report.html */
    for (size_t i = 0; i < n / 2; i++) {
      entry t = ents[i];
      ents[i] = ents[n - 1 - i];
      ents[n - 1 - i] = t;
    }
  }
  char(*status)[256] = NULL;
  psp_qc_slice_marks *marks = NULL;
  if (ok && psp_result_segmentation(r)) {
    marks = psp_report_qc_marks(r, &status, err);
    ok = marks != NULL;
  }
  uint8_t **img = ok ? psp_calloc(n, sizeof *img, err) : NULL;
  int *iw = ok ? psp_calloc(n, sizeof *iw, err) : NULL,
      *ih = ok ? psp_calloc(n, sizeof *ih, err) : NULL;
  ok = ok && img && iw && ih;
  psp_strbuf hashes;
  psp_strbuf_init(&hashes);
  for (size_t i = 0; ok && i < n; i++) {
    if (ents[i].slice < 0) continue;
    char title[160];
    if (!strcmp(ents[i].kind, "slice"))
      snprintf(title, sizeof title, "PARASPINAL QC  %s (NO VERTEBRAL LEVELS NAMED)", ents[i].name);
    else
      snprintf(title, sizeof title, "PARASPINAL QC  LEVEL %s (%s)  FILE SLICE %lld", ents[i].name,
               ents[i].kind, (long long)ents[i].file_slice);
    img[i] = compose(r, marks, ents, n, i, title, &iw[i], &ih[i], err);
    ok = img[i] != NULL;
    if (ok) {
      char hex[65];
      psp_sha256_buffer(img[i], (size_t)iw[i] * (size_t)ih[i] * 3, hex);
      psp_strbuf_printf(&hashes, "%s|", hex);
    }
  }
  char *hs = ok ? psp_strbuf_take(&hashes, err) : NULL;
  psp_strbuf_free(&hashes);
  ok = ok && hs;
  if (ok) {
    char tag[512], series[PSP_UID_LEN];
    snprintf(tag, sizeof tag, "paraspinal SC|%s|%s", version, src->series_uid);
    psp_dicom_uid_derive(tag, hs, strlen(hs), series);
    int number = 0;
    for (size_t i = 0; ok && i < n; i++) {
      if (!img[i]) continue;
      number++;
      char sop[PSP_UID_LEN + 16], name[32], path[4096];
      snprintf(sop, sizeof sop, "%s.%d", series, number);
      snprintf(name, sizeof name, "sc_%03d.dcm", number);
      psp_dicom_sc_desc d = {.rgb = img[i],
                             .width = iw[i],
                             .height = ih[i],
                             .src = src,
                             .ref_sop_uid = src->sop_instance_uid[ents[i].slice],
                             .ref_frame = src->frame_number ? src->frame_number[ents[i].slice] : 0,
                             .series_uid = series,
                             .sop_uid = sop,
                             .series_number = PSP_DICOM_OUT_SC_SERIES,
                             .instance_number = number,
                             .series_description = "paraspinal QC per level",
                             .software_version = version,
                             .content_date = date,
                             .content_time = tod,
                             .verbose = psp_result_options(r)->dicom_toolkit_log};
      ok = psp_path_join(path, sizeof path, dir, name, err) && psp_dicom_write_sc(&d, path, err);
    }
  }
  free(hs);
  for (size_t i = 0; img && i < n; i++)
    free(img[i]);
  free(img);
  free(iw);
  free(ih);
  free(marks);
  free(status);
  free(ents);
  return ok;
}

bool psp_dicom_out_write(const psp_result *r, const psp_dicom_source *src, const char *levels_csv,
                         const char *dir, psp_context *ctx, psp_error **err) {
  if (!r || !dir) return psp_error_set(err, PSP_ERR_USAGE, "--dicom-out: nothing to write");
  if (!check_source(r, src, err)) return false;
  if (!psp_mkdir_p(dir, err)) return false;
  char date[16], tod[16], version[64];
  time_t now = time(NULL);
  struct tm tmv;
  localtime_r(&now, &tmv);
  strftime(date, sizeof date, "%Y%m%d", &tmv);
  strftime(tod, sizeof tod, "%H%M%S", &tmv);
  snprintf(version, sizeof version, "paraspinal %s", psp_version());
  psp_info(ctx, "writing the DICOM segmentation and secondary captures");
  return write_seg(r, src, dir, date, tod, version, ctx, err) &&
         write_sc(r, src, levels_csv, dir, date, tod, version, err);
}
