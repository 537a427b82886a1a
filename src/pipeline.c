/*
 * DESIGN: the one library entry that strings the stages together (analyze,
 * ffmap and later batch all call psp_analyze): load -> grid checks ->
 * dixon (FF map) -> labels (given with --labels, or the automatic
 * segmentation of src/segment on the FF map) -> measure. Grid rule: inputs
 * must agree in dimensions, spacing and directions (else PSP_ERR_GEOMETRY
 * naming both files). When only the origins differ (real exports do this),
 * the run warns with both origins and continues voxel-wise on the geometry
 * chosen by --geometry-from; the default (auto) takes the origin shared by
 * most inputs, and on a tie the first image (water, in-phase or FF map).
 */
#include "core/internal.h"
#include "io/dicom_read.h"
#include "levels/levels.h"
#include "segment/segment.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_INPUTS = 4 };

typedef struct {
  const char *role;
  const char *path;
  psp_geometry_source source;
  psp_volume *vol;
  char sha256[65];
  psp_dicom_source *dicom; /* DICOM input: the series read (else NULL) */
  char *owned_path;        /* DICOM input: "DIR [DICOM series UID]" */
  psp_volume *file_grid;   /* its own grid (no voxels) when vol took another input's
                              geometry (adopt_geometry; report.json inputs[].grid), else NULL */
} input_slot;

struct psp_result {
  psp_analysis_options opt;
  input_slot inputs[MAX_INPUTS];
  int n_inputs;
  const char *geometry_role;
  psp_ffmap *ffmap;
  psp_volume *labels;
  psp_segmentation *seg; /* NULL when the labels were given */
  psp_level_overrides *ov;
  psp_levels *levels;
  psp_measurements *meas;
  psp_plausibility plaus;
  char scheme_name[256];
  char dicom_selection[1024]; /* DICOM input: what was found, why this pair */
};

void psp_analysis_options_default(psp_analysis_options *o) {
  memset(o, 0, sizeof *o);
  o->ff_unit = PSP_FF_FRACTION;
  o->geometry_from = PSP_GEOM_AUTO;
  o->write_qc = true;
  o->load.volume_index = -1;
  psp_dixon_options_default(&o->dixon);
}

static void load_slot(const psp_result *r, input_slot *s, const char *role, const char *path,
                      psp_geometry_source src, bool is_label, psp_context *ctx, psp_error **err) {
  s->role = role;
  s->path = path;
  s->source = src;
  psp_load_options lo = r->opt.load;
  lo.allow_nan = (src == PSP_GEOM_FF);
  lo.magnitude = src == PSP_GEOM_WATER || src == PSP_GEOM_FAT || src == PSP_GEOM_INPHASE ||
                 src == PSP_GEOM_OUTPHASE;
  if (is_label) lo.volume_index = -1;
  s->vol = psp_nifti_load_hashed(path, &lo, s->sha256, ctx, err);
}

static bool add_input(psp_result *r, const char *role, const char *path, psp_geometry_source src,
                      bool is_label, psp_context *ctx, psp_error **err) {
  input_slot *s = &r->inputs[r->n_inputs];
  load_slot(r, s, role, path, src, is_label, ctx, err);
  if (!s->vol) return false;
  r->n_inputs++;
  return true;
}

/* The two images of a Dixon pair, read and inflated at the same time (one
 * thread each; a file's inflate is serial). Each load logs into a forked
 * context replayed in input order, and the first input's error wins, so
 * messages and errors are those of loading them one after the other. */
static bool add_input_pair(psp_result *r, const char *const role[2], const char *const path[2],
                           const psp_geometry_source src[2], psp_context *ctx, psp_error **err) {
  input_slot *s = &r->inputs[r->n_inputs];
  psp_context *sub[2] = {psp_context_fork(ctx), psp_context_fork(ctx)};
  psp_error *e[2] = {NULL, NULL};
  if (!sub[0] || !sub[1]) {
    psp_context_free(sub[0]);
    psp_context_free(sub[1]);
    return psp_error_set(err, PSP_ERR_NOMEM, "out of memory");
  }
  /* two threads only when the run may use two (batch workers run with
   * one each: no oversubscription) */
  const int nth = psp_context_threads(ctx) > 1 ? 2 : 1;
#pragma omp parallel for num_threads(nth) schedule(static, 1)
  for (int i = 0; i < 2; i++)
    load_slot(r, &s[i], role[i], path[i], src[i], false, sub[i], &e[i]);
  bool joined = psp_context_join(ctx, sub[0]);
  joined = psp_context_join(ctx, sub[1]) && joined;
  if (!joined) psp_warn(ctx, "some messages of loading the inputs were lost (out of memory)");
  int bad = e[0] ? 0 : e[1] ? 1 : -1;
  if (bad < 0) {
    r->n_inputs += 2;
    return true;
  }
  for (int i = 0; i < 2; i++) {
    psp_volume_free(s[i].vol);
    s[i].vol = NULL;
  }
  if (err && !*err) /* the psp_error_set contract: an error already set stays */
    *err = e[bad];
  else
    psp_error_free(e[bad]);
  psp_error_free(e[1 - bad]);
  return false;
}

/* DICOM input: scan the folder, choose the Dixon images, load them. */
static bool add_dicom_inputs(psp_result *r, psp_context *ctx, psp_error **err) {
  const psp_analysis_options *o = &r->opt;
  psp_dicom_scan *s = psp_dicom_scan_dir(o->dicom_dir, o->dicom_toolkit_log, ctx, err);
  if (!s) return false;
  psp_dicom_choice c;
  bool ok = psp_dicom_choose(s, o->dicom_series, &c, err);
  if (ok) {
    psp_info(ctx, "%s: %s", o->dicom_dir, c.why);
    snprintf(r->dicom_selection, sizeof r->dicom_selection, "%s", c.why);
  }
  for (int i = 0; ok && i < 2; i++) {
    if (c.stack[i] < 0) continue;
    input_slot *sl = &r->inputs[r->n_inputs];
    switch (c.kind[i]) {
    case PSP_DIXON_WATER:
      sl->role = "water", sl->source = PSP_GEOM_WATER;
      break;
    case PSP_DIXON_FAT:
      sl->role = "fat", sl->source = PSP_GEOM_FAT;
      break;
    case PSP_DIXON_INPHASE:
      sl->role = "in-phase", sl->source = PSP_GEOM_INPHASE;
      break;
    case PSP_DIXON_OUTPHASE:
      sl->role = "opposed-phase", sl->source = PSP_GEOM_OUTPHASE;
      break;
    default:
      sl->role = "fat fraction", sl->source = PSP_GEOM_FF;
      break;
    }
    const char *uid = s->inst[s->stacks[c.stack[i]].first_instance].series_uid;
    size_t n = strlen(o->dicom_dir) + strlen(uid) + 32;
    sl->owned_path = psp_malloc(n, err);
    if (!sl->owned_path) {
      ok = false;
      break;
    }
    snprintf(sl->owned_path, n, "%s [DICOM series %s]", o->dicom_dir, uid);
    sl->path = sl->owned_path;
    sl->vol = psp_dicom_load_stack(s, c.stack[i], sl->source == PSP_GEOM_FF, &sl->dicom, sl->sha256,
                                   ctx, err);
    if (!sl->vol) {
      free(sl->owned_path);
      sl->owned_path = NULL;
      ok = false;
      break;
    }
    r->n_inputs++;
  }
  psp_dicom_scan_free(s);
  return ok;
}

static bool check_and_align(psp_result *r, psp_context *ctx, psp_error **err) {
  int n = r->n_inputs;
  psp_grid_relation rel[MAX_INPUTS][MAX_INPUTS];
  char why[512];
  for (int a = 0; a < n; a++)
    for (int b = 0; b < n; b++) {
      rel[a][b] = psp_grid_compare(r->inputs[a].vol, r->inputs[b].vol, why, sizeof why);
      if (rel[a][b] == PSP_GRID_DIFFERENT)
        return psp_error_set(
            err, PSP_ERR_GEOMETRY, "%s (%s) and %s (%s) are not on the same voxel grid: %s%s",
            r->inputs[a].path, r->inputs[a].role, r->inputs[b].path, r->inputs[b].role, why,
            r->inputs[a].vol->no_xform != r->inputs[b].vol->no_xform
                ? ""
                : "; resample one onto the other first");
    }
  int chosen = -1;
  if (r->opt.geometry_from == PSP_GEOM_AUTO) {
    int best = -1;
    for (int a = 0; a < n; a++) {
      int agree = 0;
      for (int b = 0; b < n; b++)
        agree += rel[a][b] == PSP_GRID_SAME;
      if (agree > best) {
        best = agree;
        chosen = a;
      }
    }
  } else {
    for (int a = 0; a < n; a++)
      if (r->inputs[a].source == r->opt.geometry_from) chosen = a;
    if (chosen < 0)
      return psp_error_set(err, PSP_ERR_USAGE, "--geometry-from names an input that was not given");
  }
  r->geometry_role = r->inputs[chosen].role;
  for (int a = 0; a < n; a++) {
    if (a == chosen || rel[a][chosen] == PSP_GRID_SAME) continue;
    psp_grid_compare(r->inputs[a].vol, r->inputs[chosen].vol, why, sizeof why);
    psp_warn(
        ctx,
        "%s (%s) and %s (%s): %s. The voxel grids are otherwise identical; continuing voxel by "
        "voxel with the geometry of the %s image (choose with --geometry-from)",
        r->inputs[a].path, r->inputs[a].role, r->inputs[chosen].path, r->inputs[chosen].role, why,
        r->inputs[chosen].role);
    psp_volume *g = psp_malloc(sizeof *g, err);
    if (!g) return false;
    *g = *r->inputs[a].vol; /* the header: dims, affine, orientation */
    g->data = NULL;
    r->inputs[a].file_grid = g;
    if (!psp_volume_adopt_geometry(r->inputs[a].vol, r->inputs[chosen].vol, err)) return false;
  }
  return true;
}

/* The segmentation's check of the stack's bottom (psp_seg_bottom_fn): the
 * vertebral levels, found on its final landmarks (before any muscle is
 * segmented), tell whether the sacrum or an iliac crest is in view; they
 * are kept for the report, so the levels are found once. */
typedef struct bottom_check {
  const psp_ffmap *ffmap;
  const psp_level_overrides *ov;
  psp_context *ctx;
  psp_levels *levels;
  double seconds; /* spent on the levels */
} bottom_check;

static int stack_reaches_sacrum(const psp_ffmap *ff, const psp_segmentation *s, void *user,
                                double *l5s1, psp_error **err) {
  bottom_check *bc = user;
  double t0 = psp_now();
  bc->levels = psp_levels_detect(ff, s, bc->ov, bc->ctx, err);
  bc->seconds = psp_now() - t0;
  if (!bc->levels) return -1;
  /* an iliac crest in view (or iliac bone at the stack's bottom) keeps the
   * lowest slice as the zero, names or not (the zero was measured there on
   * dixon-tum01: names placing its L5/S1 2.6 mm lower than that measure
   * moved its multifidus by -0.013); else L5/S1 placed by levels named by
   * hand, else by the sacrum seen below it (NaN when an iliac crest names
   * the discs otherwise: that crest anchors the stack) */
  double named =
      bc->ov && psp_level_overrides_count(bc->ov) > 0 ? psp_levels_l5s1_position(bc->levels) : NAN;
  double sac = psp_levels_sacrum_disc(bc->levels);
  if (psp_levels_image_anchored(bc->levels) && !isfinite(sac)) return PSP_HEIGHT_BOTTOM;
  /* iliac bone on both sides at the bottom, in too short a run to name the
   * levels: the crest top lies just above the bottom, which is then at the
   * pelvis, not above it */
  if (!isfinite(sac) && psp_levels_iliac_at_bottom(bc->levels)) {
    psp_warn(bc->ctx,
             "automatic segmentation: iliac bone on both sides at the bottom of the stack, "
             "too little of it to name the levels: the lowest slice with a spine is taken "
             "as L5/S1 for the multifidus/erector spinae proportion; check the QC images");
    return PSP_HEIGHT_BOTTOM;
  }
  if (isfinite(named)) {
    *l5s1 = named;
    return PSP_HEIGHT_NAMED;
  }
  if (isfinite(sac)) {
    *l5s1 = sac;
    return PSP_HEIGHT_SACRUM;
  }
  /* no anchor, but the bone below the lowest disc is much wider than the
   * lumbar bodies: the upper L5 body or the sacrum, so the stack's bottom
   * lies within about a vertebra of L5/S1, as on a stack the crests
   * anchor, not above the crests */
  if (psp_levels_wide_bottom(bc->levels)) {
    psp_warn(bc->ctx,
             "automatic segmentation: no sacrum or iliac crest in view, but the bone below the "
             "lowest disc is at least %.2f x as wide as the lumbar bodies above it (the upper L5 "
             "body or the sacrum): the lowest slice with a spine is taken as an anchored "
             "stack's for the multifidus/erector spinae proportion; check the QC images, or "
             "name a disc with --disc NAME=SLICE",
             PSP_LEVELS_WIDE_BOTTOM);
    return PSP_HEIGHT_BOTTOM;
  }
  return PSP_HEIGHT_ASSUMED;
}

static psp_volume *slot_volume(psp_result *r, psp_geometry_source src) {
  for (int a = 0; a < r->n_inputs; a++)
    if (r->inputs[a].source == src) return r->inputs[a].vol;
  return NULL;
}

static const char *slot_path(psp_result *r, psp_geometry_source src) {
  for (int a = 0; a < r->n_inputs; a++)
    if (r->inputs[a].source == src) return r->inputs[a].path ? r->inputs[a].path : "";
  return "";
}

/* Prefixes *err with the files the FF map was made from. */
static void name_map_inputs(psp_result *r, bool wf, bool ipop, psp_error **err) {
  if (wf)
    psp_error_prefix(err, "%s and %s", slot_path(r, PSP_GEOM_WATER), slot_path(r, PSP_GEOM_FAT));
  else if (ipop)
    psp_error_prefix(err, "%s and %s", slot_path(r, PSP_GEOM_INPHASE),
                     slot_path(r, PSP_GEOM_OUTPHASE));
  else
    psp_error_prefix(err, "%s", slot_path(r, PSP_GEOM_FF));
}

/* In-phase/opposed-phase magnitudes give a signal fat fraction: a
 * T1-weighted sequence (the usual in/opposed-phase T1 of an abdominal
 * protocol, at a high flip angle) raises lean muscle's several-fold, as
 * fatty infiltration would. When the muscles' median FF reads at least
 * IPOP_MUSCLE_FF_WARN the run says so (ipop-chaos11, a 1.5 T T1-DUAL
 * series: 31 %; dixon-tum01 made in-phase/opposed-phase: 8-11 %). */
#define IPOP_MUSCLE_FF_WARN 0.20
static void warn_ipop_muscle_ff(const psp_result *r, psp_context *ctx) {
  if (strcmp(psp_ffmap_source(r->ffmap), "inphase+opposed-phase") != 0) return;
  double v[PSP_LABEL_COUNT];
  int n = 0;
  for (int l = 1; l < PSP_LABEL_COUNT; l++) {
    const psp_region_metrics *row = psp_measurements_volume_row(r->meas, l);
    if (row && row->n_voxels > 0 && !isnan(row->ff_median)) v[n++] = row->ff_median;
  }
  if (n == 0) return;
  for (int i = 1; i < n; i++) /* at most four: insertion sort */
    for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
      double t = v[j];
      v[j] = v[j - 1];
      v[j - 1] = t;
    }
  double med = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  if (med >= IPOP_MUSCLE_FF_WARN)
    psp_warn(ctx,
             "in-phase/opposed-phase: the muscles' median FF reads %.0f %%. Either they are fatty, "
             "or the sequence is T1-weighted (an in/opposed-phase T1 at a high flip angle), which "
             "raises the signal fat fraction of lean muscle several-fold; FF from two-point "
             "magnitudes is a signal fat fraction, not PDFF: compare it within one protocol only",
             100.0 * med);
}

psp_result *psp_analyze(const psp_analysis_options *opt, psp_context *ctx, psp_error **err) {
  bool ffin = opt->ff_path != NULL;
  /* an FF map may come with a water image (image edges for the segmentation) */
  bool ff_water = ffin && opt->water_path && !opt->fat_path;
  bool wf = !ff_water && (opt->water_path || opt->fat_path);
  bool ipop = opt->inphase_path || opt->outphase_path;
  const bool dcm = opt->dicom_dir != NULL;
  if (dcm && (wf || ipop || ffin)) {
    psp_error_set(err, PSP_ERR_USAGE,
                  "--dicom replaces --water/--fat, --inphase/--outphase and --ff: give either a "
                  "DICOM folder or NIfTI images");
    return NULL;
  }
  if (!dcm && opt->dicom_series) {
    psp_error_set(err, PSP_ERR_USAGE, "--series selects DICOM series: it needs --dicom DIR");
    return NULL;
  }
  if (!dcm && wf + ipop + ffin != 1) {
    psp_error_set(
        err, PSP_ERR_USAGE,
        "give exactly one kind of input: --water and --fat, or --inphase and --outphase, or --ff "
        "(with or without --water)");
    return NULL;
  }
  if (wf && (!opt->water_path || !opt->fat_path)) {
    psp_error_set(err, PSP_ERR_USAGE, "--water and --fat must be given together");
    return NULL;
  }
  if (ipop && (!opt->inphase_path || !opt->outphase_path)) {
    psp_error_set(err, PSP_ERR_USAGE, "--inphase and --outphase must be given together");
    return NULL;
  }
  if (!opt->labels_path && opt->label_scheme) {
    psp_error_set(err, PSP_ERR_USAGE,
                  "--label-scheme %s describes a --labels file, but none was given (without "
                  "--labels the muscles are segmented automatically)",
                  opt->label_scheme);
    return NULL;
  }
  psp_result *r = psp_calloc(1, sizeof *r, err);
  if (!r) return NULL;
  r->opt = *opt;
  psp_scheme *scheme = NULL;
  if (!opt->ffmap_only && !opt->labels_path) {
    snprintf(r->scheme_name, sizeof r->scheme_name, "paraspinal (automatic segmentation)");
  } else if (!opt->ffmap_only) {
    const char *sn = opt->label_scheme ? opt->label_scheme : "paraspinal";
    size_t l = strlen(sn);
    scheme = (l > 4 && !strcmp(sn + l - 4, ".tsv")) ? psp_scheme_load_tsv(sn, err)
                                                    : psp_scheme_builtin(sn, err);
    if (!scheme) goto fail;
    snprintf(r->scheme_name, sizeof r->scheme_name, "%s", psp_scheme_name(scheme));
  }
  if (!opt->ffmap_only) {
    r->ov = psp_level_overrides_parse(opt->level_overrides, opt->n_level_overrides, err);
    if (!r->ov) goto fail;
    if (opt->landmarks_path) {
      /* --disc first: where the two contradict, the first name given is used (and flagged),
       * so the command line wins over the file */
      psp_level_overrides *from_file = psp_level_overrides_load(opt->landmarks_path, err);
      bool merged = from_file && psp_level_overrides_merge(r->ov, from_file, err);
      psp_level_overrides_free(from_file);
      if (!merged) goto fail;
    }
  }
  psp_info(ctx, "loading inputs");
  double t0 = psp_now();
  if (dcm && !add_dicom_inputs(r, ctx, err)) goto fail;
  if (wf && !add_input_pair(r, (const char *const[2]){"water", "fat"},
                            (const char *const[2]){opt->water_path, opt->fat_path},
                            (const psp_geometry_source[2]){PSP_GEOM_WATER, PSP_GEOM_FAT}, ctx, err))
    goto fail;
  if (ipop && !add_input_pair(r, (const char *const[2]){"in-phase", "opposed-phase"},
                              (const char *const[2]){opt->inphase_path, opt->outphase_path},
                              (const psp_geometry_source[2]){PSP_GEOM_INPHASE, PSP_GEOM_OUTPHASE},
                              ctx, err))
    goto fail;
  if (ffin && !add_input(r, "fat fraction", opt->ff_path, PSP_GEOM_FF, false, ctx, err)) goto fail;
  if (ff_water && !add_input(r, "water", opt->water_path, PSP_GEOM_WATER, false, ctx, err))
    goto fail;
  if (!opt->ffmap_only && opt->labels_path &&
      !add_input(r, "labels", opt->labels_path, PSP_GEOM_LABELS, true, ctx, err))
    goto fail;
  if (!check_and_align(r, ctx, err)) goto fail;
  if (dcm) { /* the kind of input the DICOM folder gave (an FF map maybe with water) */
    ffin = slot_volume(r, PSP_GEOM_FF) != NULL;
    ff_water = ffin && slot_volume(r, PSP_GEOM_WATER) != NULL;
    wf = !ffin && slot_volume(r, PSP_GEOM_WATER) != NULL;
    ipop = slot_volume(r, PSP_GEOM_INPHASE) != NULL;
  }
  psp_context_add_time(ctx, "load", psp_now() - t0);

  psp_info(ctx, "computing the fat-fraction map");
  t0 = psp_now();
  if (wf)
    r->ffmap = psp_ffmap_from_water_fat(slot_volume(r, PSP_GEOM_WATER),
                                        slot_volume(r, PSP_GEOM_FAT), &opt->dixon, ctx, err);
  else if (ipop)
    r->ffmap = psp_ffmap_from_ipop(slot_volume(r, PSP_GEOM_INPHASE),
                                   slot_volume(r, PSP_GEOM_OUTPHASE), &opt->dixon, ctx, err);
  else
    r->ffmap = psp_ffmap_from_ff(slot_volume(r, PSP_GEOM_FF), opt->ff_unit, ctx, err);
  if (r->ffmap && ff_water && !psp_ffmap_add_water(r->ffmap, slot_volume(r, PSP_GEOM_WATER), err)) {
    psp_ffmap_free(r->ffmap);
    r->ffmap = NULL;
  }
  if (!r->ffmap) {
    name_map_inputs(r, wf, ipop, err); /* the files the voxel-data problem is in */
    goto fail;
  }
  const double tp = psp_now();
  r->plaus = psp_ffmap_plausibility(r->ffmap, ctx);
  psp_context_add_time(ctx, "ffmap.plausibility", psp_now() - tp);
  if (r->plaus.exchanged && !opt->ignore_swap_check) {
    /* exchanged inputs: every number would be wrong (dixon-tum01 with
     * water and fat exchanged: subcutaneous fat 6 %, 8 of 29 slices
     * segmented, multifidus FF 6 %; phantom01 with in-phase and
     * opposed-phase exchanged: muscle FF -40 to -59 %) */
    psp_error_set(err, PSP_ERR_DATA,
                  "%s: nothing measured; %s, or give --ignore-swap-check to analyse them as they "
                  "are",
                  r->plaus.message,
                  dcm    ? "check the series chosen (paraspinal dicominfo) and their image types"
                  : wf   ? "give them the other way round (--water and --fat)"
                  : ipop ? "check which image is in-phase and which opposed-phase"
                         : "check that the map is a fat fraction");
    name_map_inputs(r, wf, ipop, err);
    goto fail;
  }
  /* memory: the map holds what was needed of the Dixon inputs; only the
   * QC background image (water or in-phase) and the labels keep voxels */
  for (int a = 0; a < r->n_inputs; a++)
    if (r->inputs[a].source != PSP_GEOM_WATER && r->inputs[a].source != PSP_GEOM_INPHASE &&
        r->inputs[a].source != PSP_GEOM_LABELS)
      psp_volume_release_data(r->inputs[a].vol);
  psp_context_add_time(ctx, "ffmap", psp_now() - t0);
  if (opt->ffmap_only) {
    psp_scheme_free(scheme);
    return r;
  }
  t0 = psp_now();
  double t_levels = 0.0; /* levels found during the segmentation: timed as levels */
  if (opt->labels_path) {
    r->labels = psp_labels_map(slot_volume(r, PSP_GEOM_LABELS), scheme, opt->labels_path, ctx, err);
  } else {
    psp_info(ctx, "segmenting multifidus and erector spinae");
    bottom_check bc = {r->ffmap, r->ov, ctx, NULL, 0.0};
    r->seg = psp_segment_with(r->ffmap, stack_reaches_sacrum, &bc, ctx, err);
    r->levels = bc.levels; /* on the segmentation's final landmarks */
    if (r->seg && r->levels) psp_levels_to_image(r->levels, r->seg);
    t_levels = bc.seconds;
    if (r->seg) r->labels = psp_segmentation_take_labels(r->seg);
  }
  if (!r->labels) goto fail;
  psp_volume_release_data(slot_volume(r, PSP_GEOM_LABELS)); /* mapped into r->labels */
  psp_context_add_time(ctx, opt->labels_path ? "labels" : "segment", psp_now() - t0 - t_levels);
  psp_info(ctx, "measuring");
  t0 = psp_now();
  r->meas = psp_measure(r->labels, r->ffmap, ctx, err);
  if (!r->meas) goto fail;
  warn_ipop_muscle_ff(r, ctx);
  psp_context_add_time(ctx, "measure", psp_now() - t0);
  psp_info(ctx, "assigning vertebral levels");
  t0 = psp_now();
  if (!r->levels) r->levels = psp_levels_detect(r->ffmap, r->seg, r->ov, ctx, err);
  if (!r->levels) goto fail;
  psp_ffmap_release_magnitudes(r->ffmap); /* measured: the outputs need only the FF */
  psp_context_add_time(ctx, "levels", psp_now() - t0 + t_levels);
  psp_scheme_free(scheme);
  return r;
fail:
  psp_scheme_free(scheme);
  psp_result_free(r);
  return NULL;
}

void psp_result_free(psp_result *r) {
  if (!r) return;
  for (int a = 0; a < r->n_inputs; a++) {
    psp_volume_free(r->inputs[a].vol);
    psp_volume_free(r->inputs[a].file_grid);
    psp_dicom_source_free(r->inputs[a].dicom);
    free(r->inputs[a].owned_path);
  }
  psp_ffmap_free(r->ffmap);
  psp_volume_free(r->labels);
  psp_segmentation_free(r->seg);
  psp_level_overrides_free(r->ov);
  psp_levels_free(r->levels);
  psp_measurements_free(r->meas);
  free(r);
}

const psp_ffmap *psp_result_ffmap(const psp_result *r) {
  return r->ffmap;
}
const psp_volume *psp_result_labels(const psp_result *r) {
  return r->labels;
}
const psp_levels *psp_result_levels(const psp_result *r) {
  return r->levels;
}

const psp_segmentation *psp_result_segmentation(const psp_result *r) {
  return r->seg;
}
const psp_measurements *psp_result_measurements(const psp_result *r) {
  return r->meas;
}
psp_plausibility psp_result_plausibility(const psp_result *r) {
  return r->plaus;
}
const char *psp_result_geometry_source(const psp_result *r) {
  return r->geometry_role;
}

int psp_result_input_count(const psp_result *r) {
  return r->n_inputs;
}
void psp_result_input(const psp_result *r, int i, const char **role, const char **path,
                      const char **sha256, const psp_volume **vol) {
  *role = r->inputs[i].role;
  *path = r->inputs[i].path;
  *sha256 = r->inputs[i].sha256;
  *vol = r->inputs[i].vol;
}
const psp_volume *psp_result_input_file_grid(const psp_result *r, int i) {
  if (i < 0 || i >= r->n_inputs) return NULL;
  return r->inputs[i].file_grid ? r->inputs[i].file_grid : r->inputs[i].vol;
}
const psp_dicom_source *psp_result_input_dicom(const psp_result *r, int i) {
  return (i >= 0 && i < r->n_inputs) ? r->inputs[i].dicom : NULL;
}
const psp_dicom_source *psp_result_dicom_source(const psp_result *r) {
  return r->n_inputs > 0 ? r->inputs[0].dicom : NULL;
}
const char *psp_result_dicom_selection(const psp_result *r) {
  return r->dicom_selection[0] ? r->dicom_selection : NULL;
}
const char *psp_result_scheme_name(const psp_result *r) {
  return r->scheme_name;
}
const psp_analysis_options *psp_result_options(const psp_result *r) {
  return &r->opt;
}

bool psp_result_write(const psp_result *r, const char *outdir, const char *argv_line,
                      psp_context *ctx, psp_error **err) {
  if (!r->meas)
    return psp_error_set(err, PSP_ERR_USAGE,
                         "this result holds only a fat-fraction map; nothing to report");
  return psp_report_write_outputs(r, outdir, argv_line, ctx, err);
}
