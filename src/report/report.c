/*
 * DESIGN: the analysis outputs, written all-or-nothing. Every file goes into
 * a hidden temporary folder inside OUTDIR, unsynced (PSP_SYNC_LATER); when
 * all succeeded they are made durable together (psp_sync_folder: one
 * journal commit instead of one per file, measured ~8 % more scans per
 * second in batch) and only then renamed into place (same file system, so
 * each rename is atomic), and a
 * failure removes the temporary folder: a failed run leaves no partial
 * report. Files: fatfraction.nii.gz (float32 fraction, NaN = no signal),
 * dseg.nii.gz + dseg.tsv (project labels, BIDS style), slices.csv (tidy, one
 * row per slice x muscle x side), volumes.csv (whole-volume rows) and
 * report.json (the same numbers plus provenance: version, command, inputs
 * with SHA-256, options, geometry decision, noise estimate, plausibility,
 * warnings; with automatic segmentation a "segmentation" object: method,
 * per-slice status and reason, landmarks in internal LPS voxel and world RAS
 * mm coordinates), levels.csv, the QC images qc/slice_NNN.png and
 * qc/sagittal.png (the level assignment on a midline reformat) and
 * report.html (the QC page, src/report/html.c, referencing the images by
 * relative path; written last so it lists every warning). NIfTI outputs
 * are on the input's own voxel grid. Numbers are
 * printed with fixed decimals so outputs are byte-identical across runs and
 * thread counts; the only time stamp is report.json's provenance.created.
 */
#include "core/internal.h"
#include "io/dicom_read.h"
#include "levels/levels.h"
#include "report/dicom_out.h"
#include "report/html.h"
#include "report/levels_csv.h"
#include "report/qc_png.h"
#include "segment/segment.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *SLICE_COLUMNS =
    "slice,file_slice,z_mm,muscle,side,label,area_mm2,ff_mean_pct,ff_ratio_pct,ff_median_pct,"
    "ff_q1_pct,ff_q3_pct,fcsa_mm2,fat_infiltration_pct,n_voxels,n_no_signal,level,"
    "level_confidence,mf_es_split,mf_es_on_plane_pct\n";
static const char *VOLUME_COLUMNS =
    "muscle,side,label,volume_mm3,ff_mean_pct,ff_ratio_pct,ff_median_pct,ff_q1_pct,ff_q3_pct,"
    "fat_infiltration_pct,n_voxels,n_no_signal,max_area_mm2,max_area_slice,max_area_level,"
    "slices_not_measured\n";

/* Slices on which an automatic segmentation found the spine but did not
 * measure label l: flagged implausible or cut_off, or the muscle cut by
 * the field of view. -1 without a segmentation (labels given). Its volume
 * misses those slices' part of the muscle. */
static int64_t slices_not_measured(const psp_segmentation *seg, int l) {
  if (!seg) return -1;
  int64_t n = 0;
  for (int64_t k = 0; k < psp_segmentation_slice_count(seg); k++) {
    const psp_slice_landmarks *lm = psp_segmentation_slice(seg, k);
    n += lm->status == PSP_SLICE_IMPLAUSIBLE || lm->status == PSP_SLICE_CUT_OFF ||
         (lm->status == PSP_SLICE_OK && ((lm->cut_labels >> l) & 1u));
  }
  return n;
}

static void csv_num(psp_strbuf *b, double v, int dec, bool comma) {
  char s[64];
  psp_fmt_num(s, sizeof s, v, dec);
  psp_strbuf_append(b, s);
  if (comma) psp_strbuf_append(b, ",");
}

/* seg: the automatic segmentation (NULL with --labels: the split columns
 * stay empty). */
static char *slices_csv(const psp_measurements *m, const psp_levels *lv,
                        const psp_segmentation *seg, psp_error **err) {
  psp_strbuf b;
  psp_strbuf_init(&b);
  psp_strbuf_append(&b, SLICE_COLUMNS);
  for (size_t i = 0; i < psp_measurements_slice_count(m); i++) {
    const psp_region_metrics *r = psp_measurements_slice_row(m, i);
    psp_strbuf_printf(&b, "%lld,%lld,", (long long)r->slice, (long long)r->file_slice);
    csv_num(&b, r->z_mm, 2, true);
    psp_strbuf_printf(&b, "%s,%s,%d,", psp_label_muscle(r->label), psp_label_side(r->label),
                      r->label);
    csv_num(&b, r->area_mm2, 2, true);
    csv_num(&b, 100 * r->ff_mean, 3, true);
    csv_num(&b, 100 * r->ff_ratio, 3, true);
    csv_num(&b, 100 * r->ff_median, 3, true);
    csv_num(&b, 100 * r->ff_q1, 3, true);
    csv_num(&b, 100 * r->ff_q3, 3, true);
    csv_num(&b, r->fcsa_mm2, 2, true);
    csv_num(&b, 100 * r->fat_infiltration, 3, true);
    psp_strbuf_printf(&b, "%lld,%lld,%s,", (long long)r->n_voxels, (long long)r->n_no_signal,
                      psp_levels_name(lv, r->slice));
    csv_num(&b, psp_levels_confidence(lv, r->slice), 2, true);
    /* how this side's multifidus/erector spinae boundary was placed on the
     * slice, and its share on a visible fat plane (report.json's
     * mf_es_boundary) */
    const psp_slice_landmarks *lm = seg ? psp_segmentation_slice(seg, r->slice) : NULL;
    if (lm && lm->status == PSP_SLICE_OK) {
      int side = strcmp(psp_label_side(r->label), "left") == 0 ? 0 : 1;
      psp_strbuf_printf(&b, "%s,", psp_split_kind_name(lm->split[side]));
      if (isfinite(lm->plane_share[side])) csv_num(&b, 100 * lm->plane_share[side], 1, false);
    } else {
      psp_strbuf_append(&b, ",");
    }
    psp_strbuf_append(&b, "\n");
  }
  return psp_strbuf_take(&b, err);
}

/* The slice row of label l with the largest area (the first, inferior to
 * superior, on ties); NULL when the label is absent. Users report the
 * maximum cross-sectional area besides per-level values. */
static const psp_region_metrics *max_area_row(const psp_measurements *m, int l) {
  const psp_region_metrics *best = NULL;
  for (size_t i = 0; i < psp_measurements_slice_count(m); i++) {
    const psp_region_metrics *r = psp_measurements_slice_row(m, i);
    if (r->label == l && (!best || r->area_mm2 > best->area_mm2)) best = r;
  }
  return best;
}

static char *volumes_csv(const psp_measurements *m, const psp_levels *lv,
                         const psp_segmentation *seg, psp_error **err) {
  psp_strbuf b;
  psp_strbuf_init(&b);
  psp_strbuf_append(&b, VOLUME_COLUMNS);
  for (int l = 1; l < PSP_LABEL_COUNT; l++) {
    const psp_region_metrics *r = psp_measurements_volume_row(m, l);
    const psp_region_metrics *mx = max_area_row(m, l);
    psp_strbuf_printf(&b, "%s,%s,%d,", psp_label_muscle(l), psp_label_side(l), l);
    csv_num(&b, r->volume_mm3, 1, true);
    csv_num(&b, 100 * r->ff_mean, 3, true);
    csv_num(&b, 100 * r->ff_ratio, 3, true);
    csv_num(&b, 100 * r->ff_median, 3, true);
    csv_num(&b, 100 * r->ff_q1, 3, true);
    csv_num(&b, 100 * r->ff_q3, 3, true);
    csv_num(&b, 100 * r->fat_infiltration, 3, true);
    psp_strbuf_printf(&b, "%lld,%lld,", (long long)r->n_voxels, (long long)r->n_no_signal);
    if (mx) {
      csv_num(&b, mx->area_mm2, 2, true);
      /* the slice in the internal inferior-to-superior order, like the
       * level: the same whatever the file's axis order (file_slice in
       * report.json) */
      psp_strbuf_printf(&b, "%lld,%s,", (long long)mx->slice, psp_levels_name(lv, mx->slice));
    } else {
      psp_strbuf_append(&b, ",,,");
    }
    int64_t nm = slices_not_measured(seg, l);
    if (nm >= 0) psp_strbuf_printf(&b, "%lld", (long long)nm);
    psp_strbuf_append(&b, "\n");
  }
  return psp_strbuf_take(&b, err);
}

/* Rounded number, or JSON null for NaN. */
static cJSON *jnum(double v, int dec) {
  if (isnan(v) || isinf(v)) return cJSON_CreateNull();
  double s = pow(10.0, dec);
  double x = round(v * s) / s;
  if (x == 0) x = 0; /* no -0 */
  return cJSON_CreateNumber(x);
}

static cJSON *metrics_json(const psp_region_metrics *r, bool slice_row) {
  cJSON *o = cJSON_CreateObject();
  if (slice_row) {
    cJSON_AddNumberToObject(o, "slice", (double)r->slice);
    cJSON_AddNumberToObject(o, "file_slice", (double)r->file_slice);
    cJSON_AddItemToObject(o, "z_mm", jnum(r->z_mm, 2));
  }
  cJSON_AddStringToObject(o, "muscle", psp_label_muscle(r->label));
  cJSON_AddStringToObject(o, "side", psp_label_side(r->label));
  cJSON_AddNumberToObject(o, "label", r->label);
  if (slice_row)
    cJSON_AddItemToObject(o, "area_mm2", jnum(r->area_mm2, 2));
  else
    cJSON_AddItemToObject(o, "volume_mm3", jnum(r->volume_mm3, 1));
  cJSON_AddItemToObject(o, "ff_mean_pct", jnum(100 * r->ff_mean, 3));
  cJSON_AddItemToObject(o, "ff_ratio_pct", jnum(100 * r->ff_ratio, 3));
  cJSON_AddItemToObject(o, "ff_median_pct", jnum(100 * r->ff_median, 3));
  cJSON_AddItemToObject(o, "ff_q1_pct", jnum(100 * r->ff_q1, 3));
  cJSON_AddItemToObject(o, "ff_q3_pct", jnum(100 * r->ff_q3, 3));
  if (slice_row) cJSON_AddItemToObject(o, "fcsa_mm2", jnum(r->fcsa_mm2, 2));
  cJSON_AddItemToObject(o, "fat_infiltration_pct", jnum(100 * r->fat_infiltration, 3));
  cJSON_AddNumberToObject(o, "n_voxels", (double)r->n_voxels);
  cJSON_AddNumberToObject(o, "n_no_signal", (double)r->n_no_signal);
  return o;
}

static cJSON *volume_json(const psp_volume *v) {
  cJSON *o = cJSON_CreateObject();
  int64_t d[3];
  double sp[3], a[4][4];
  char code[4];
  psp_volume_dims(v, d);
  psp_volume_spacing(v, sp);
  psp_volume_affine(v, a);
  psp_orientation_code(v, code);
  cJSON *dims = cJSON_AddArrayToObject(o, "dims_lps");
  cJSON *spc = cJSON_AddArrayToObject(o, "spacing_mm");
  for (int c = 0; c < 3; c++) {
    cJSON_AddItemToArray(dims, cJSON_CreateNumber((double)d[c]));
    cJSON_AddItemToArray(spc, jnum(sp[c], 6));
  }
  cJSON_AddStringToObject(o, "file_axes", code);
  cJSON *org = cJSON_AddArrayToObject(o, "origin_ras_mm");
  for (int r = 0; r < 3; r++)
    cJSON_AddItemToArray(org, jnum(a[r][3], 4));
  return o;
}

/* A landmark as {"voxel_lps": [i, j, k], "mm_ras": [x, y, z]}, or null. */
static cJSON *point_json(const psp_volume *v, const psp_lm_point *p, int64_t k) {
  if (!p->found) return cJSON_CreateNull();
  double a[4][4];
  psp_volume_affine(v, a);
  double ijk[3] = {p->i, p->j, (double)k};
  cJSON *o = cJSON_CreateObject();
  cJSON *vx = cJSON_AddArrayToObject(o, "voxel_lps");
  cJSON *mm = cJSON_AddArrayToObject(o, "mm_ras");
  for (int c = 0; c < 3; c++)
    cJSON_AddItemToArray(vx, jnum(ijk[c], 2));
  for (int r = 0; r < 3; r++)
    cJSON_AddItemToArray(mm,
                         jnum(a[r][0] * ijk[0] + a[r][1] * ijk[1] + a[r][2] * ijk[2] + a[r][3], 2));
  return o;
}

/* The body's outline on slice k from its mask (the labels' grid): area,
 * bounding box and extent, and whether it touches the image's edge (the
 * field of view cuts the body); null without a body. */
static cJSON *body_json(const psp_volume *v, const uint8_t *body, int64_t k) {
  int64_t nx = v->dims[0], ny = v->dims[1], n = 0, b[4] = {nx, -1, ny, -1};
  for (int64_t j = 0; body && j < ny; j++)
    for (int64_t i = 0; i < nx; i++)
      if (body[j * nx + i]) {
        n++;
        b[0] = i < b[0] ? i : b[0];
        b[1] = i > b[1] ? i : b[1];
        b[2] = j < b[2] ? j : b[2];
        b[3] = j > b[3] ? j : b[3];
      }
  if (n == 0) return cJSON_CreateNull();
  double sp[3];
  psp_volume_spacing(v, sp);
  cJSON *o = cJSON_CreateObject();
  cJSON_AddItemToObject(o, "area_mm2", jnum((double)n * sp[0] * sp[1], 1));
  /* first and last voxel of the box: i0, j0, k and i1, j1, k */
  cJSON *bx = cJSON_AddArrayToObject(o, "box_voxel_lps");
  const int64_t corner[2][3] = {{b[0], b[2], k}, {b[1], b[3], k}};
  for (int c = 0; c < 2; c++) {
    cJSON *p = cJSON_CreateArray();
    for (int q = 0; q < 3; q++)
      cJSON_AddItemToArray(p, cJSON_CreateNumber((double)corner[c][q]));
    cJSON_AddItemToArray(bx, p);
  }
  cJSON_AddItemToObject(o, "width_mm", jnum((double)(b[1] - b[0] + 1) * sp[0], 1));
  cJSON_AddItemToObject(o, "depth_mm", jnum((double)(b[3] - b[2] + 1) * sp[1], 1));
  cJSON_AddBoolToObject(o, "touches_image_edge",
                        b[0] == 0 || b[2] == 0 || b[1] == nx - 1 || b[3] == ny - 1);
  return o;
}

static cJSON *levels_json(const psp_levels *lv) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "method", psp_levels_method(lv));
  cJSON_AddBoolToObject(o, "anchored", psp_levels_anchored(lv));
  cJSON_AddStringToObject(o, "anchor", psp_levels_anchor(lv));
  cJSON_AddItemToObject(o, "disc_spacing_mm", jnum(psp_levels_spacing_mm(lv), 2));
  cJSON *discs = cJSON_AddArrayToObject(o, "discs");
  for (size_t i = 0; i < psp_levels_disc_count(lv); i++) {
    const psp_level_disc *d = psp_levels_disc(lv, i);
    cJSON *x = cJSON_CreateObject();
    cJSON_AddStringToObject(x, "name", d->name);
    cJSON_AddItemToObject(x, "slice", jnum(d->slice, 2));
    cJSON_AddItemToObject(x, "file_slice", jnum(d->file_slice, 2));
    cJSON_AddNumberToObject(x, "nearest_file_slice", (double)d->nearest_file);
    cJSON_AddItemToObject(x, "distance_mm", jnum(d->distance_mm, 2));
    cJSON_AddItemToObject(x, "z_mm", jnum(d->z_mm, 2));
    cJSON_AddItemToObject(x, "confidence", jnum(d->confidence, 3));
    cJSON_AddBoolToObject(x, "inferred", d->inferred);
    cJSON_AddBoolToObject(x, "from_override", d->from_override);
    cJSON_AddItemToArray(discs, x);
  }
  cJSON *flags = cJSON_AddArrayToObject(o, "flags");
  for (size_t i = 0; i < psp_levels_flag_count(lv); i++) {
    cJSON *x = cJSON_CreateObject();
    cJSON_AddStringToObject(x, "key", psp_levels_flag_key(lv, i));
    cJSON_AddStringToObject(x, "message", psp_levels_flag_message(lv, i));
    cJSON_AddItemToArray(flags, x);
  }
  cJSON *slices = cJSON_AddArrayToObject(o, "slices");
  for (int64_t k = 0; k < psp_levels_slice_count(lv); k++) {
    cJSON *x = cJSON_CreateObject();
    cJSON_AddNumberToObject(x, "slice", (double)k);
    cJSON_AddItemToObject(x, "file_slice", jnum(psp_levels_file_position(lv, (double)k), 0));
    cJSON_AddStringToObject(x, "level", psp_levels_name(lv, k));
    cJSON_AddBoolToObject(x, "disc", psp_levels_is_disc(lv, k));
    cJSON_AddItemToObject(x, "fraction", jnum(psp_levels_fraction(lv, k), 3));
    cJSON_AddItemToObject(x, "confidence", jnum(psp_levels_confidence(lv, k), 3));
    cJSON_AddItemToArray(slices, x);
  }
  return o;
}

static cJSON *segmentation_json(const psp_segmentation *seg, const psp_volume *labels) {
  cJSON *o = cJSON_CreateObject();
  if (!seg) {
    cJSON_AddStringToObject(o, "method", "labels given with --labels");
    return o;
  }
  cJSON_AddStringToObject(o, "method", psp_segmentation_method(seg));
  int64_t nz = psp_segmentation_slice_count(seg);
  cJSON_AddNumberToObject(o, "slices_segmented", (double)psp_segmentation_ok_count(seg));
  cJSON_AddNumberToObject(o, "slices_flagged", (double)(nz - psp_segmentation_ok_count(seg)));
  cJSON_AddNumberToObject(o, "slices_with_a_muscle_cut_off",
                          (double)psp_segmentation_cut_count(seg));
  /* the spine's in-plane axis (src/segment/align.c); aligned: the muscles
   * were segmented in a frame rotated by it, landmarks and labels mapped
   * back (the midline then runs along that angle, not a column) */
  bool aligned = false;
  double axis = psp_segmentation_axis_deg(seg, &aligned);
  cJSON *ax = cJSON_AddObjectToObject(o, "spine_axis");
  cJSON_AddItemToObject(ax, "angle_deg", jnum(axis, 1));
  cJSON_AddBoolToObject(ax, "aligned", aligned);
  /* the pixel the muscles were told apart at: the image's, or a frame's
   * (rotated from coarse pixels: finer; from fine pixels: about 1 mm) */
  double fmm[2];
  psp_segmentation_frame_mm(seg, fmm);
  cJSON *fp = cJSON_AddArrayToObject(o, "frame_pixel_mm");
  cJSON_AddItemToArray(fp, jnum(fmm[0], 3));
  cJSON_AddItemToArray(fp, jnum(fmm[1], 3));
  /* the zero of the height priors (multifidus/erector spinae proportion,
   * lumbosacral front): what placed it and where along the stack */
  double hz = NAN;
  psp_height_from hf = psp_segmentation_height(seg, &hz);
  cJSON *hp = cJSON_AddObjectToObject(o, "height_prior");
  cJSON_AddStringToObject(hp, "zero_from", psp_height_from_name(hf));
  cJSON_AddItemToObject(hp, "zero_slice", jnum(hz, 2));
  bool flip = psp_volume_orientation(labels).flip[2];
  cJSON_AddItemToObject(hp, "zero_file_slice", jnum(flip ? (double)(nz - 1) - hz : hz, 2));
  cJSON *arr = cJSON_AddArrayToObject(o, "slices");
  for (int64_t k = 0; k < nz; k++) {
    const psp_slice_landmarks *lm = psp_segmentation_slice(seg, k);
    cJSON *e = cJSON_CreateObject();
    cJSON_AddNumberToObject(e, "slice", (double)k);
    cJSON_AddNumberToObject(e, "file_slice", (double)psp_volume_file_slice(labels, k));
    cJSON_AddItemToObject(e, "z_mm", jnum(psp_volume_slice_z(labels, k), 2));
    cJSON_AddStringToObject(e, "status", psp_slice_status_name(lm->status));
    cJSON_AddStringToObject(e, "reason", lm->reason);
    cJSON *l = cJSON_AddObjectToObject(e, "landmarks");
    cJSON_AddItemToObject(l, "body_outline", body_json(labels, psp_segmentation_body(seg, k), k));
    cJSON_AddItemToObject(l, "body_centre", point_json(labels, &lm->body_centre, k));
    cJSON_AddItemToObject(l, "spinal_canal", point_json(labels, &lm->canal, k));
    if (lm->canal.found) {
      cJSON_AddItemToObject(l, "spinal_canal_radius_mm", jnum(lm->canal_radius_mm, 2));
      if (lm->void_mm2 > 0) cJSON_AddItemToObject(e, "signal_void_mm2", jnum(lm->void_mm2, 1));
      psp_lm_point mid = {true, lm->midline_i, lm->canal.j};
      cJSON *mj = point_json(labels, &mid, k);
      /* the midline runs through that point at this angle from the image's
       * columns (0 unless the slice was segmented in a rotated frame) */
      cJSON_AddItemToObject(mj, "angle_deg", jnum(lm->axis_deg, 1));
      cJSON_AddItemToObject(l, "midline", mj);
    }
    cJSON_AddItemToObject(l, "vertebral_body", point_json(labels, &lm->vertebral_body, k));
    cJSON_AddItemToObject(l, "spinous_process", point_json(labels, &lm->spinous, k));
    if (lm->status == PSP_SLICE_OK) {
      /* how the multifidus/erector spinae boundary was placed, per side, and
       * how much of it lies on a visible fat plane (src/segment/checks.c) */
      cJSON *b = cJSON_AddObjectToObject(e, "mf_es_boundary");
      for (int side = 0; side < 2; side++) {
        cJSON *bs = cJSON_AddObjectToObject(b, side == 0 ? "left" : "right");
        cJSON_AddStringToObject(bs, "split", psp_split_kind_name(lm->split[side]));
        cJSON_AddItemToObject(bs, "on_visible_plane", jnum(lm->plane_share[side], 2));
      }
      /* muscles cut by the field of view: not measured on this slice */
      if (lm->cut_labels) {
        cJSON *cu = cJSON_AddArrayToObject(e, "cut_off");
        for (int c = 1; c < PSP_LABEL_COUNT; c++)
          if ((lm->cut_labels >> c) & 1u)
            cJSON_AddItemToArray(cu, cJSON_CreateString(psp_label_name(c)));
      }
    }
    cJSON_AddItemToArray(arr, e);
  }
  /* over the measured slices: the mean share of the boundary on a visible
   * plane per side (where it is low the two muscles' areas are the
   * template's proportion of the subject's compartment) */
  double seen[2];
  psp_segmentation_plane_share(seg, seen);
  cJSON *vs = cJSON_AddObjectToObject(o, "mf_es_boundary_on_visible_plane");
  for (int side = 0; side < 2; side++)
    cJSON_AddItemToObject(vs, side == 0 ? "left" : "right", jnum(seen[side], 2));
  return o;
}

/* A DICOM input: the folder as typed, the series and its file count; patient
 * and study identifiers only with --keep-identifiers. */
static void dicom_input_json(cJSON *o, const psp_dicom_source *d, const psp_analysis_options *opt) {
  cJSON_AddStringToObject(o, "format", "dicom");
  cJSON_AddStringToObject(o, "path", opt->dicom_dir);
  cJSON_AddStringToObject(o, "series_uid", d->series_uid);
  cJSON_AddStringToObject(o, "series_description", d->series_description);
  cJSON_AddStringToObject(o, "manufacturer", d->manufacturer);
  cJSON_AddNumberToObject(o, "n_files", (double)d->n_files);
  /* what the FF depends on besides the tissue: T1 weighting (flip angle,
   * repetition time) and T2* decay (echo time) bias a signal fat fraction */
  cJSON *acq = cJSON_AddObjectToObject(o, "acquisition");
  cJSON_AddItemToObject(acq, "field_strength_t", jnum(d->field_strength_t, 3));
  cJSON_AddItemToObject(acq, "echo_time_ms", jnum(d->echo_time_ms, 3));
  cJSON_AddItemToObject(acq, "repetition_time_ms", jnum(d->repetition_time_ms, 3));
  cJSON_AddItemToObject(acq, "flip_angle_deg", jnum(d->flip_angle_deg, 2));
  if (!opt->keep_identifiers) return;
  cJSON *p = cJSON_AddObjectToObject(o, "identifiers");
  cJSON_AddStringToObject(p, "patient_name", d->patient_name);
  cJSON_AddStringToObject(p, "patient_id", d->patient_id);
  cJSON_AddStringToObject(p, "patient_birth_date", d->patient_birth_date);
  cJSON_AddStringToObject(p, "patient_sex", d->patient_sex);
  cJSON_AddStringToObject(p, "study_uid", d->study_uid);
  cJSON_AddStringToObject(p, "study_date", d->study_date);
  cJSON_AddStringToObject(p, "study_id", d->study_id);
  cJSON_AddStringToObject(p, "accession_number", d->accession_number);
  cJSON_AddStringToObject(p, "study_description", d->study_description);
}

static char *report_json(const psp_result *res, const char *argv_line, psp_context *ctx,
                         psp_error **err) {
  const psp_analysis_options *opt = psp_result_options(res);
  const psp_ffmap *ff = psp_result_ffmap(res);
  const psp_measurements *m = psp_result_measurements(res);
  cJSON *root = cJSON_CreateObject();
  cJSON *prov = cJSON_AddObjectToObject(root, "provenance");
  cJSON_AddStringToObject(prov, "tool", "paraspinal");
  cJSON_AddStringToObject(prov, "version", psp_version());
  if (argv_line) cJSON_AddStringToObject(prov, "command", argv_line);
  char when[64];
  time_t now = time(NULL);
  struct tm tmv;
  gmtime_r(&now, &tmv);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tmv);
  cJSON_AddStringToObject(prov, "created", when);

  cJSON *inputs = cJSON_AddArrayToObject(root, "inputs");
  for (int i = 0; i < psp_result_input_count(res); i++) {
    const char *role, *path, *sha;
    const psp_volume *v;
    psp_result_input(res, i, &role, &path, &sha, &v);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "role", role);
    const psp_dicom_source *dcm = psp_result_input_dicom(res, i);
    if (dcm)
      dicom_input_json(o, dcm, opt);
    else
      cJSON_AddStringToObject(o, "path", path);
    cJSON_AddStringToObject(o, "sha256", sha);
    (void)v;
    cJSON_AddItemToObject(o, "grid", volume_json(psp_result_input_file_grid(res, i)));
    cJSON_AddItemToArray(inputs, o);
  }
  if (psp_result_dicom_selection(res))
    cJSON_AddStringToObject(root, "dicom_selection", psp_result_dicom_selection(res));
  cJSON *options = cJSON_AddObjectToObject(root, "options");
  cJSON_AddStringToObject(options, "label_scheme", psp_result_scheme_name(res));
  cJSON_AddBoolToObject(options, "noise_bias_correction", opt->dixon.noise_bias_correction);
  cJSON_AddItemToObject(options, "noise_floor_factor", jnum(opt->dixon.noise_floor_factor, 4));
  if (!strcmp(psp_ffmap_source(ff), "ff-map"))
    cJSON_AddStringToObject(options, "ff_unit",
                            opt->ff_unit == PSP_FF_PERCENT ? "percent" : "fraction");
  cJSON_AddStringToObject(root, "geometry_from", psp_result_geometry_source(res));
  cJSON_AddItemToObject(root, "output_grid", volume_json(psp_result_labels(res)));

  cJSON *fat = cJSON_AddObjectToObject(root, "fat_fraction");
  cJSON_AddStringToObject(fat, "source", psp_ffmap_source(ff));
  cJSON_AddItemToObject(fat, "noise_sigma", jnum(psp_ffmap_noise_sigma(ff), 4));
  cJSON_AddItemToObject(fat, "signal_floor", jnum(psp_ffmap_signal_floor(ff), 4));
  if (!strcmp(psp_ffmap_source(ff), "inphase+opposed-phase"))
    cJSON_AddItemToObject(fat, "fat_dominant_share", jnum(psp_ffmap_fat_dominant_share(ff), 4));
  psp_plausibility p = psp_result_plausibility(res);
  cJSON *pl = cJSON_AddObjectToObject(fat, "plausibility");
  cJSON_AddBoolToObject(pl, "checked", p.checked);
  cJSON_AddBoolToObject(pl, "ok", p.ok);
  /* analysed anyway (--ignore-swap-check): the inputs look exchanged */
  cJSON_AddBoolToObject(pl, "inputs_exchanged", p.exchanged);
  cJSON_AddItemToObject(pl, "subcutaneous_fat_ff_median_pct", jnum(100 * p.subcut_ff_median, 2));
  cJSON_AddNumberToObject(pl, "subcutaneous_voxels", (double)p.subcut_voxels);
  cJSON_AddStringToObject(pl, "message", p.message);

  cJSON *labels = cJSON_AddArrayToObject(root, "labels");
  for (int l = 1; l < PSP_LABEL_COUNT; l++) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "index", l);
    cJSON_AddStringToObject(o, "name", psp_label_name(l));
    cJSON_AddStringToObject(o, "abbreviation", psp_label_abbrev(l));
    cJSON_AddItemToArray(labels, o);
  }
  cJSON_AddItemToObject(root, "levels", levels_json(psp_result_levels(res)));
  cJSON_AddItemToObject(root, "segmentation",
                        segmentation_json(psp_result_segmentation(res), psp_result_labels(res)));
  cJSON *vols = cJSON_AddArrayToObject(root, "volumes");
  for (int l = 1; l < PSP_LABEL_COUNT; l++) {
    cJSON *v = metrics_json(psp_measurements_volume_row(m, l), false);
    const psp_region_metrics *mx = max_area_row(m, l);
    if (mx) {
      cJSON *o = cJSON_AddObjectToObject(v, "max_area");
      cJSON_AddItemToObject(o, "area_mm2", jnum(mx->area_mm2, 2));
      cJSON_AddNumberToObject(o, "slice", (double)mx->slice);
      cJSON_AddNumberToObject(o, "file_slice", (double)mx->file_slice);
      cJSON_AddStringToObject(o, "level", psp_levels_name(psp_result_levels(res), mx->slice));
    }
    int64_t nm = slices_not_measured(psp_result_segmentation(res), l);
    if (nm >= 0) cJSON_AddNumberToObject(v, "slices_not_measured", (double)nm);
    cJSON_AddItemToArray(vols, v);
  }
  cJSON *slices = cJSON_AddArrayToObject(root, "slices");
  for (size_t i = 0; i < psp_measurements_slice_count(m); i++)
    cJSON_AddItemToArray(slices, metrics_json(psp_measurements_slice_row(m, i), true));
  cJSON *warn = cJSON_AddArrayToObject(root, "warnings");
  for (size_t i = 0; i < psp_context_warning_count(ctx); i++)
    cJSON_AddItemToArray(warn, cJSON_CreateString(psp_context_warning(ctx, i)));

  char *text = cJSON_Print(root);
  cJSON_Delete(root);
  if (!text) {
    psp_error_set(err, PSP_ERR_NOMEM, "out of memory building report.json");
    return NULL;
  }
  size_t n = strlen(text);
  char *out = realloc(text, n + 2);
  if (!out) {
    free(text);
    psp_error_set(err, PSP_ERR_NOMEM, "out of memory building report.json");
    return NULL;
  }
  out[n] = '\n';
  out[n + 1] = '\0';
  return out;
}

enum { N_OUT = 8 };
static const char *const OUT_NAMES[N_OUT] = {"fatfraction.nii.gz", "dseg.nii.gz", "dseg.tsv",
                                             "slices.csv",         "volumes.csv", "report.json",
                                             "levels.csv",         "report.html"};

static bool write_text_keep(const char *dir, const char *name, const char *text, psp_error **err) {
  if (!text) return false;
  char path[4096];
  return psp_path_join(path, sizeof path, dir, name, err) &&
         psp_write_file(path, text, strlen(text), PSP_SYNC_LATER, err);
}

static bool write_text(const char *dir, const char *name, char *text, psp_error **err) {
  bool ok = write_text_keep(dir, name, text, err);
  free(text);
  return ok;
}

/* The image the QC panels show: water, or in-phase, or the FF map itself. */
const psp_volume *psp_report_qc_anatomy(const psp_result *r) {
  for (int i = 0; i < psp_result_input_count(r); i++) {
    const char *role, *path, *sha;
    const psp_volume *v;
    psp_result_input(r, i, &role, &path, &sha, &v);
    if (!strcmp(role, "water") || !strcmp(role, "in-phase")) return v;
  }
  return psp_ffmap_ff(psp_result_ffmap(r));
}

static const char *qc_anatomy_title(const psp_result *r) {
  for (int i = 0; i < psp_result_input_count(r); i++) {
    const char *role, *path, *sha;
    const psp_volume *v;
    psp_result_input(r, i, &role, &path, &sha, &v);
    if (!strcmp(role, "water")) return "WATER";
    if (!strcmp(role, "in-phase")) return "IN-PHASE";
  }
  return "FF MAP";
}

/* qc/sagittal.png: the midline of the segmentation's landmarks where the
 * slice was segmented (a flagged slice's canal may be wrong), else the vertebral column the level
 * detection sampled, else (inside psp_qc_write_sagittal) interpolated / the image centre; the discs
 * and per-slice names of the level assignment. */
static bool write_sagittal(const psp_result *r, const char *qc_dir, const float window[2],
                           psp_qc_sagittal_geometry *geo, psp_error **err) {
  const psp_levels *lv = psp_result_levels(r);
  const psp_segmentation *seg = psp_result_segmentation(r);
  const psp_volume *ffv = psp_ffmap_ff(psp_result_ffmap(r));
  int64_t d[3];
  psp_volume_dims(ffv, d);
  const int64_t nz = d[2];
  const bool use_lv = lv && psp_levels_slice_count(lv) == nz;
  const size_t nd = use_lv ? psp_levels_disc_count(lv) : 0;
  double *mid = psp_malloc((size_t)nz * sizeof *mid, err);
  double *conf = psp_malloc((size_t)nz * sizeof *conf, err);
  double *prof = psp_malloc((size_t)nz * sizeof *prof, err);
  const char **names = psp_calloc((size_t)nz, sizeof *names, err);
  bool *is_disc = psp_calloc((size_t)nz, sizeof *is_disc, err);
  psp_qc_disc_mark *discs = psp_calloc(nd + 1, sizeof *discs, err);
  bool ok = false;
  if (mid && conf && prof && names && is_disc && discs) {
    for (int64_t k = 0; k < nz; k++) {
      mid[k] = NAN;
      const psp_slice_landmarks *lm =
          seg && k < psp_segmentation_slice_count(seg) ? psp_segmentation_slice(seg, k) : NULL;
      double ci, cj;
      if (lm && lm->status == PSP_SLICE_OK)
        mid[k] = lm->midline_i;
      else if (use_lv && psp_levels_column(lv, k, &ci, &cj))
        mid[k] = ci;
      names[k] = use_lv ? psp_levels_name(lv, k) : "";
      is_disc[k] = use_lv && psp_levels_is_disc(lv, k);
      conf[k] = use_lv ? psp_levels_confidence(lv, k) : NAN;
      prof[k] = use_lv ? psp_levels_profile(lv, k) : NAN;
    }
    for (size_t i = 0; i < nd; i++) {
      const psp_level_disc *dd = psp_levels_disc(lv, i);
      discs[i].slice = dd->slice;
      discs[i].name = dd->name;
      discs[i].inferred = dd->inferred;
    }
    psp_qc_sagittal s = {.anatomy = psp_report_qc_anatomy(r),
                         .ff = ffv,
                         .anatomy_title = qc_anatomy_title(r),
                         .midline_i = mid,
                         .names = names,
                         .is_disc = is_disc,
                         .confidence = conf,
                         .profile = prof,
                         .discs = discs,
                         .n_discs = nd,
                         .window = window};
    char path[4096];
    ok = psp_path_join(path, sizeof path, qc_dir, "sagittal.png", err) &&
         psp_qc_write_sagittal(path, &s, -1, PSP_SYNC_LATER, geo, err);
  }
  free(mid);
  free(conf);
  free(prof);
  free(names);
  free(is_disc);
  free(discs);
  return ok;
}

psp_qc_slice_marks *psp_report_qc_marks(const psp_result *r, char (**status)[256],
                                        psp_error **err) {
  const psp_segmentation *seg = psp_result_segmentation(r);
  *status = NULL;
  if (!seg) return NULL;
  int64_t nz = psp_segmentation_slice_count(seg);
  psp_qc_slice_marks *marks = psp_calloc((size_t)nz, sizeof *marks, err);
  *status = psp_calloc((size_t)nz, sizeof **status, err);
  if (!marks || !*status) {
    free(marks);
    free(*status);
    *status = NULL;
    return NULL;
  }
  for (int64_t k = 0; k < nz; k++) {
    const psp_slice_landmarks *lm = psp_segmentation_slice(seg, k);
    psp_qc_slice_marks *m = &marks[k];
    m->canal_i = lm->canal.found ? lm->canal.i : NAN;
    m->canal_j = lm->canal.found ? lm->canal.j : NAN;
    m->vb_i = lm->vertebral_body.found ? lm->vertebral_body.i : NAN;
    m->vb_j = lm->vertebral_body.found ? lm->vertebral_body.j : NAN;
    m->spinous_i = lm->spinous.found ? lm->spinous.i : NAN;
    m->spinous_j = lm->spinous.found ? lm->spinous.j : NAN;
    m->midline_i = lm->status == PSP_SLICE_OK ? lm->midline_i : NAN;
    m->midline_slope = lm->midline_slope;
    m->body = psp_segmentation_body(seg, k);
    if (lm->status != PSP_SLICE_OK) {
      snprintf((*status)[k], sizeof(*status)[k], "%s: %s", psp_slice_status_name(lm->status),
               lm->reason);
      m->status = (*status)[k];
    } else {
      /* per side (the image's left is the patient's right): how the two
       * muscles were split, and the share of their boundary on a visible
       * plane */
      char sd[2][40];
      for (int side = 0; side < 2; side++) {
        const char *how = lm->split[side] == PSP_SPLIT_PLANE  ? "PLANE"
                          : lm->split[side] == PSP_SPLIT_STEP ? "FF STEP"
                          : lm->split[side] == PSP_SPLIT_PATH ? "TEMPLATE"
                                                              : "-";
        if (isfinite(lm->plane_share[side]))
          snprintf(sd[side], sizeof sd[side], "%s %.0f%%", how, 100.0 * lm->plane_share[side]);
        else
          snprintf(sd[side], sizeof sd[side], "%s", how);
      }
      const bool cl = (lm->cut_labels >> PSP_LABEL_ES_LEFT) & 1u,
                 cr = (lm->cut_labels >> PSP_LABEL_ES_RIGHT) & 1u;
      snprintf((*status)[k], sizeof(*status)[k], "MF/ES SPLIT  R: %s  L: %s%s", sd[1], sd[0],
               cl && cr ? "  ES R+L CUT BY FOV"
               : cr     ? "  ES R CUT BY FOV"
               : cl     ? "  ES L CUT BY FOV"
                        : "");
      m->info = (*status)[k];
    }
  }
  return marks;
}

/* The muscles measured per slice for levels.csv (psp_levels_csv): an
 * automatic segmentation's segmented slices, less the muscles cut by the
 * field of view. *out stays NULL without a segmentation (labels given by
 * the user: the slices that hold a label). False only when out of memory. */
static bool measured_mask(const psp_segmentation *seg, uint8_t **out, psp_error **err) {
  *out = NULL;
  if (!seg) return true;
  int64_t nz = psp_segmentation_slice_count(seg);
  uint8_t *m = psp_calloc((size_t)(nz > 0 ? nz : 1) * PSP_LABEL_COUNT, 1, err);
  if (!m) return false;
  for (int64_t k = 0; k < nz; k++) {
    const psp_slice_landmarks *lm = psp_segmentation_slice(seg, k);
    for (int l = 1; l < PSP_LABEL_COUNT; l++)
      m[k * PSP_LABEL_COUNT + l] =
          lm->status == PSP_SLICE_OK && !((lm->cut_labels >> l) & 1u) ? 1 : 0;
  }
  *out = m;
  return true;
}

static bool write_qc(const psp_result *r, const char *qc_dir, const float window[2],
                     psp_context *ctx, psp_error **err) {
  const psp_volume *labels = psp_result_labels(r);
  char(*status)[256] = NULL;
  psp_qc_slice_marks *marks = psp_report_qc_marks(r, &status, err);
  if (psp_result_segmentation(r) && !marks) return false;
  bool ok =
      psp_qc_write_pngs_window(qc_dir, psp_report_qc_anatomy(r), psp_ffmap_ff(psp_result_ffmap(r)),
                               labels, marks, window, -1, PSP_SYNC_LATER, ctx, err);
  free(marks);
  free(status);
  return ok;
}

/* A folder OUTDIR/qc or OUTDIR/dicom as this tool leaves it: 1 absent, 2 a
 * real folder of regular files with the names it writes (qc: slice_*.png,
 * sagittal.png; dicom: seg.dcm, sc_*.dcm), 0 anything else (a link, a
 * sub-folder, a file of the user's: the input DICOM folder itself when
 * OUTDIR is the study's folder). Only a 2 is replaced or removed. */
static int own_folder(const char *path, bool dicom) {
  struct stat st;
  if (lstat(path, &st) != 0) return errno == ENOENT ? 1 : 0;
  if (!S_ISDIR(st.st_mode)) return 0;
  DIR *d = opendir(path);
  if (!d) return 0;
  int own = 2;
  struct dirent *e;
  char p[4096];
  while (own == 2 && (e = readdir(d)) != NULL) {
    const char *n = e->d_name;
    if (!strcmp(n, ".") || !strcmp(n, "..")) continue;
    size_t len = strlen(n);
    bool name_ok = dicom ? !strcmp(n, "seg.dcm") ||
                               (!strncmp(n, "sc_", 3) && len > 7 && !strcmp(n + len - 4, ".dcm"))
                         : !strcmp(n, "sagittal.png") || (!strncmp(n, "slice_", 6) && len > 10 &&
                                                          !strcmp(n + len - 4, ".png"));
    if (!name_ok || snprintf(p, sizeof p, "%s/%s", path, n) >= (int)sizeof p ||
        lstat(p, &st) != 0 || !S_ISREG(st.st_mode))
      own = 0;
  }
  closedir(d);
  return own;
}

/* Refuses (PSP_ERR_USAGE) when an output file would replace one of the
 * inputs (analyze -o into the folder of a labels file named dseg.nii.gz). */
static bool outputs_spare_inputs(const psp_result *r, const char *outdir, psp_error **err) {
  for (int i = 0; i < psp_result_input_count(r); i++) {
    const char *role, *path, *sha;
    const psp_volume *v;
    psp_result_input(r, i, &role, &path, &sha, &v);
    struct stat in;
    if (psp_result_input_dicom(r, i) || !path || stat(path, &in) != 0) continue;
    for (int o = 0; o < N_OUT; o++) {
      char out[4096];
      struct stat os;
      if (psp_path_join(out, sizeof out, outdir, OUT_NAMES[o], NULL) && stat(out, &os) == 0 &&
          os.st_dev == in.st_dev && os.st_ino == in.st_ino)
        return psp_error_set(err, PSP_ERR_USAGE,
                             "%s: the output %s would replace the %s input %s: choose another "
                             "output folder (-o)",
                             outdir, OUT_NAMES[o], role, path);
    }
  }
  return true;
}

bool psp_report_write_outputs(const psp_result *r, const char *outdir, const char *argv_line,
                              psp_context *ctx, psp_error **err) {
  if (!psp_mkdir_p(outdir, err)) return false;
  if (!outputs_spare_inputs(r, outdir, err)) return false;
  char tmp[4096], tmpname[64], tmp_qc[4096], old_qc[4096], qc[4096];
  char tmp_dcm[4096], old_dcm[4096], dcm[4096]; /* --dicom-out: OUTDIR/dicom */
  snprintf(tmpname, sizeof tmpname, ".paraspinal-tmp-%ld", (long)getpid());
  if (!psp_path_join(tmp, sizeof tmp, outdir, tmpname, err) ||
      !psp_path_join(tmp_qc, sizeof tmp_qc, tmp, "qc", err) ||
      !psp_path_join(old_qc, sizeof old_qc, tmp, "qc.old", err) ||
      !psp_path_join(qc, sizeof qc, outdir, "qc", err) ||
      !psp_path_join(tmp_dcm, sizeof tmp_dcm, tmp, "dicom", err) ||
      !psp_path_join(old_dcm, sizeof old_dcm, tmp, "dicom.old", err) ||
      !psp_path_join(dcm, sizeof dcm, outdir, "dicom", err))
    return false;
  psp_remove_tree_shallow(tmp_qc);
  psp_remove_tree_shallow(old_qc);
  psp_remove_tree_shallow(tmp_dcm);
  psp_remove_tree_shallow(old_dcm);
  psp_remove_tree_shallow(tmp);
  if (!psp_mkdir_p(tmp, err)) return false;
  bool want_qc = psp_result_options(r)->write_qc;
  /* qc/ and dicom/ are replaced or removed as wholes: only when this tool
   * wrote them (the input DICOM folder may be OUTDIR/dicom) */
  const int own_qc = own_folder(qc, false), own_dcm = own_folder(dcm, true);
  const char *foreign = want_qc && !own_qc                             ? qc
                        : psp_result_options(r)->dicom_out && !own_dcm ? dcm
                                                                       : NULL;
  if (foreign) {
    psp_remove_tree_shallow(tmp);
    return psp_error_set(err, PSP_ERR_IO,
                         "%s holds files this tool did not write: refusing to replace it; "
                         "choose another output folder (-o), or move it away",
                         foreign);
  }
  char path[4096];
  bool ok = true;
  double t0 = psp_now();
  ok = ok && psp_path_join(path, sizeof path, tmp, OUT_NAMES[0], err) &&
       psp_nifti_save_sync(psp_ffmap_ff(psp_result_ffmap(r)), path, PSP_DT_FLOAT32,
                           "paraspinal fat fraction (0-1)", PSP_SYNC_LATER, err);
  ok = ok && psp_path_join(path, sizeof path, tmp, OUT_NAMES[1], err) &&
       psp_nifti_save_sync(psp_result_labels(r), path, PSP_DT_UINT8, "paraspinal dseg",
                           PSP_SYNC_LATER, err);
  psp_context_add_time(ctx, "write.nifti", psp_now() - t0);
  t0 = psp_now();
  ok = ok && write_text(tmp, OUT_NAMES[2], psp_labels_dseg_tsv(), err);
  ok = ok && write_text(tmp, OUT_NAMES[3],
                        slices_csv(psp_result_measurements(r), psp_result_levels(r),
                                   psp_result_segmentation(r), err),
                        err);
  ok = ok && write_text(tmp, OUT_NAMES[4],
                        volumes_csv(psp_result_measurements(r), psp_result_levels(r),
                                    psp_result_segmentation(r), err),
                        err);
  char *lcsv = NULL;
  if (ok) {
    uint8_t *measured = NULL;
    ok = measured_mask(psp_result_segmentation(r), &measured, err);
    lcsv = ok ? psp_levels_csv(psp_result_levels(r), psp_result_measurements(r),
                               psp_result_labels(r), measured, err)
              : NULL;
    free(measured);
    ok = ok && write_text_keep(tmp, OUT_NAMES[6], lcsv, err);
  }
  /* --dicom-out: SEG + secondary captures (before report.json lists the warnings) */
  const bool want_dcm = psp_result_options(r)->dicom_out;
  if (ok && want_dcm) {
    double td = psp_now();
    ok = psp_dicom_out_write(r, psp_result_dicom_source(r), lcsv, tmp_dcm, ctx, err);
    psp_context_add_time(ctx, "write.dicom", psp_now() - td);
    t0 += psp_now() - td;
  }
  ok = ok && write_text(tmp, OUT_NAMES[5], report_json(r, argv_line, ctx, err), err);
  psp_context_add_time(ctx, "write.tables", psp_now() - t0);
  t0 = psp_now();
  float window[2]; /* the anatomy's display window: once for both kinds of QC image */
  ok = ok && (!want_qc || psp_qc_anatomy_window(psp_report_qc_anatomy(r), window, err));
  ok = ok && (!want_qc || write_qc(r, tmp_qc, window, ctx, err));
  psp_html_images img = {.slices = want_qc, .sagittal = want_qc};
  ok = ok && (!want_qc || write_sagittal(r, tmp_qc, window, &img.sag, err));
  psp_context_add_time(ctx, "write.qc", psp_now() - t0);
  t0 = psp_now();
  ok = ok && write_text(tmp, OUT_NAMES[7], psp_report_html(r, lcsv, &img, ctx, err), err);
  psp_context_add_time(ctx, "write.html", psp_now() - t0);
  free(lcsv);
  /* everything written: now to the disk, all at once (one journal commit
   * instead of one per file), before any of it is moved into place */
  t0 = psp_now();
  ok = ok && (!want_qc || psp_sync_folder(tmp_qc, err));
  ok = ok && (!want_dcm || psp_sync_folder(tmp_dcm, err));
  ok = ok && psp_sync_folder(tmp, err);
  psp_context_add_time(ctx, "write.sync", psp_now() - t0);
  if (!ok) {
    psp_error_prefix(err, "%s: no output written", outdir);
    psp_remove_tree_shallow(tmp_qc);
    psp_remove_tree_shallow(tmp_dcm);
    psp_remove_tree_shallow(tmp);
    return false;
  }
  for (int i = 0; i < N_OUT; i++) {
    char src[4096], dst[4096];
    if (!psp_path_join(src, sizeof src, tmp, OUT_NAMES[i], err) ||
        !psp_path_join(dst, sizeof dst, outdir, OUT_NAMES[i], err) || rename(src, dst) != 0) {
      psp_error_set(err, PSP_ERR_IO, "%s: cannot move %s into place: %s", outdir, OUT_NAMES[i],
                    strerror(errno));
      for (int j = 0; j < i; j++)
        if (psp_path_join(dst, sizeof dst, outdir, OUT_NAMES[j], NULL)) unlink(dst);
      psp_remove_tree_shallow(tmp_qc);
      psp_remove_tree_shallow(tmp_dcm);
      psp_remove_tree_shallow(tmp);
      return false;
    }
  }
  /* the qc folder replaces an earlier one as a whole */
  if (want_qc) {
    if (rename(qc, old_qc) != 0 && errno != ENOENT) {
      psp_warn(ctx, "%s: could not replace the old qc folder: %s", qc, strerror(errno));
    } else if (rename(tmp_qc, qc) != 0) {
      psp_warn(ctx, "%s: could not move the QC images into place: %s", qc, strerror(errno));
    }
    psp_remove_tree_shallow(old_qc);
    psp_remove_tree_shallow(tmp_qc);
  } else if (own_qc == 2 && rename(qc, old_qc) == 0) {
    /* --no-qc: an earlier run's QC images would sit beside these results */
    psp_remove_tree_shallow(old_qc);
  }
  /* the dicom folder too; a PACS script relies on it, so failing is an error */
  if (want_dcm) {
    bool moved = !(rename(dcm, old_dcm) != 0 && errno != ENOENT) && rename(tmp_dcm, dcm) == 0;
    if (!moved)
      psp_error_set(err, PSP_ERR_IO, "%s: cannot move the DICOM outputs into place: %s", dcm,
                    strerror(errno));
    psp_remove_tree_shallow(old_dcm);
    psp_remove_tree_shallow(tmp_dcm);
    if (!moved) {
      psp_remove_tree_shallow(tmp);
      return false;
    }
  } else if (own_dcm == 2 && rename(dcm, old_dcm) == 0) {
    /* without --dicom-out: an earlier run's segmentation and QC objects
     * would not match these results */
    psp_remove_tree_shallow(old_dcm);
  }
  psp_remove_tree_shallow(tmp);
  return true;
}
