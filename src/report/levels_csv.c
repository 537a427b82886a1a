/*
 * DESIGN: levels.csv, the per-level table. Tidy: one row per level x
 * muscle x side, built only from the per-slice rows of psp_measure (the
 * numbers of slices.csv) and the level names of psp_levels_detect, so every
 * value can be recomputed from slices.csv.
 *
 * Levels, inferior to superior: every named disc ("L4/L5", or "D2" when
 * relative) and every named vertebra ("L4", "V2") that has at least one
 * slice in the stack. Muscles: multifidus, erector_spinae and mf+es (the
 * two together); sides: left, right and both.
 *
 * Which slice: disc rows use the slice nearest to the disc's sub-slice
 * centre; vertebra rows the slice nearest to the midpoint of its two discs
 * (when a disc is out of view, the midpoint is estimated half a median disc
 * spacing from the one in view; when that point lies outside the stack
 * there is no slice and the cells are empty). The row always names the
 * slice (internal and file numbering), the target position (file
 * numbering, fractional) and the distance in mm between the two, so no
 * number silently depends on which slice was picked.
 *
 * Combining regions (side both, mf+es): area and fcsa add up (an absent
 * label adds 0); ff_mean and fat_infiltration are exact voxel-weighted
 * means over voxels with signal (n_voxels - n_no_signal); ff_ratio is
 * sum F / sum (F+W) over the combined voxels (the rows carry their sums;
 * empty for an FF-map input).
 *
 * Measured: a muscle is measured on a slice when the caller says so
 * (automatic segmentation: the slice was segmented and the muscle not cut
 * by the field of view), or, without that word, when the slice holds any
 * label (a labelled slice without the muscle measures it as absent, 0).
 * A group (side both, mf+es) is measured on a slice when all its muscles
 * are; its cells at an unmeasured level slice are empty, never a partial
 * sum.
 *
 * Vertebral segment (vertebra rows): the slices named that vertebra (disc
 * slices excluded). seg_n_slices counts those on which the group was
 * measured; seg_*_mean are plain means over them (area and fcsa counting
 * a measured, absent muscle as 0; FF means over slices where it is
 * measurable); seg_volume_mm3 is the sum of their label volumes (voxels x
 * voxel volume). seg_complete = 1 when both bounding discs are in view
 * and the group was measured on every slice of the segment (otherwise the
 * segment is cut by the stack or by the field of view, or a slice was
 * flagged, and its volume is partial). A slice left out (flagged, or its
 * muscle cut by the field of view) never counts as an area of 0.
 *
 * Asymmetry: asym_area_pct = |L - R| / mean(L, R) x 100 of the area at the
 * row's slice for that muscle (mf+es: summed), the same value on the left,
 * right and both rows; seg_asym_volume_pct the same from the segment
 * volumes.
 *
 * fat_grade_research_only, from ff_mean_pct at the row's slice: "lt20"
 * (< 20 %), "20-50", "gt50" (> 50 %): the Kjaer-type visual grade
 * thresholds quoted in the project's FIELD.md (visual grading of
 * paraspinal fat at L4/L5 and L5/S1; inter-rater kappa 0.76-0.85 at best).
 * A number derived from FF is NOT a validated clinical grade: research
 * use only.
 */
#include "report/levels_csv.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_SPACING_MM 38.0

const char *psp_levels_fat_grade(double ff_pct) {
  if (!isfinite(ff_pct)) return "";
  if (ff_pct < 20.0) return "lt20";
  if (ff_pct <= 50.0) return "20-50";
  return "gt50";
}

/* Combined metrics of a set of labels on one slice. */
typedef struct combo {
  bool any; /* at least one label present */
  double area, fcsa, ff_mean, ff_ratio, fat_inf, volume;
} combo;

static combo combine(const psp_region_metrics *const *row, const int *labels, int nl) {
  combo c = {false, 0, 0, NAN, NAN, NAN, 0};
  double wsum = 0, ffs = 0, fis = 0, sf = 0, sfw = 0;
  int present = 0;
  for (int a = 0; a < nl; a++) {
    const psp_region_metrics *r = row[labels[a]];
    if (!r) continue;
    present++;
    c.any = true;
    c.area += r->area_mm2;
    c.volume += r->volume_mm3;
    c.fcsa += r->fcsa_mm2; /* NaN (no signal: FF not measurable) stays NaN, never 0 */
    double w = (double)(r->n_voxels - r->n_no_signal);
    if (w > 0 && isfinite(r->ff_mean)) {
      wsum += w;
      ffs += w * r->ff_mean;
      if (isfinite(r->fat_infiltration)) fis += w * r->fat_infiltration;
    }
    if (nl == 1) c.ff_ratio = r->ff_ratio;
    sf += r->sum_f; /* NaN (FF-map input) stays NaN */
    sfw += r->sum_fw;
  }
  if (nl > 1 && sfw > 0) c.ff_ratio = sf / sfw;
  if (wsum > 0) {
    c.ff_mean = ffs / wsum;
    c.fat_inf = fis / wsum;
  }
  if (!c.any) c.fcsa = NAN;
  (void)present;
  return c;
}

/* The row groups: muscle x side, their labels. */
static const struct {
  const char *muscle, *side;
  int labels[4];
  int n;
  int pair; /* index of the both-row group for asymmetry */
} groups[9] = {
    {"multifidus", "left", {PSP_LABEL_MF_LEFT}, 1, 0},
    {"multifidus", "right", {PSP_LABEL_MF_RIGHT}, 1, 0},
    {"multifidus", "both", {PSP_LABEL_MF_LEFT, PSP_LABEL_MF_RIGHT}, 2, 0},
    {"erector_spinae", "left", {PSP_LABEL_ES_LEFT}, 1, 1},
    {"erector_spinae", "right", {PSP_LABEL_ES_RIGHT}, 1, 1},
    {"erector_spinae", "both", {PSP_LABEL_ES_LEFT, PSP_LABEL_ES_RIGHT}, 2, 1},
    {"mf+es", "left", {PSP_LABEL_MF_LEFT, PSP_LABEL_ES_LEFT}, 2, 2},
    {"mf+es", "right", {PSP_LABEL_MF_RIGHT, PSP_LABEL_ES_RIGHT}, 2, 2},
    {"mf+es", "both", {1, 2, 3, 4}, 4, 2},
};

/* Whether group g is measured on a slice (meas: that slice's
 * PSP_LABEL_COUNT flags): all its muscles are. */
static bool group_measured(const uint8_t *meas, int g) {
  for (int a = 0; a < groups[g].n; a++)
    if (!meas[groups[g].labels[a]]) return false;
  return true;
}

typedef struct level_item {
  char name[16];
  bool disc;
  char below[16], above[16];
  double target; /* internal fractional slice; NaN = none */
  int64_t slice; /* -1 = none */
  double conf;
  int64_t seg_first, seg_last, seg_n;
  bool seg_complete;
} level_item;

static void num(psp_strbuf *b, double v, int dec) {
  char t[48];
  psp_fmt_num(t, sizeof t, v, dec);
  psp_strbuf_printf(b, ",%s", t);
}

static double asym(double l, double r) {
  double mean = 0.5 * (l + r);
  return mean > 0 ? fabs(l - r) / mean * 100.0 : NAN;
}

char *psp_levels_csv(const psp_levels *lv, const psp_measurements *m, const psp_volume *labels,
                     const uint8_t *measured, psp_error **err) {
  if (!lv || !m) {
    psp_error_set(err, PSP_ERR_USAGE, "levels.csv: no levels or no measurements");
    return NULL;
  }
  const int64_t nz = psp_levels_slice_count(lv);
  if (measured && !labels) {
    psp_error_set(err, PSP_ERR_USAGE, "levels.csv: a measured mask needs the label map");
    return NULL;
  }
  if (labels) {
    int64_t d[3];
    psp_volume_dims(labels, d);
    if (d[2] != nz) {
      psp_error_set(err, PSP_ERR_GEOMETRY, "levels.csv: %lld label slices but %lld level slices",
                    (long long)d[2], (long long)nz);
      return NULL;
    }
  }
  const double dz = psp_levels_slice_spacing_mm(lv);
  /* slice x label -> row */
  const psp_region_metrics **tab =
      psp_calloc((size_t)(nz > 0 ? nz : 1) * PSP_LABEL_COUNT, sizeof *tab, err);
  level_item *items = psp_calloc(2 * psp_levels_disc_count(lv) + 2, sizeof *items, err);
  if (!tab || !items) {
    free(tab);
    free(items);
    return NULL;
  }
  uint8_t *meas = psp_calloc((size_t)(nz > 0 ? nz : 1) * PSP_LABEL_COUNT, 1, err);
  if (!meas) {
    free(tab);
    free(items);
    return NULL;
  }
  for (size_t i = 0; i < psp_measurements_slice_count(m); i++) {
    const psp_region_metrics *r = psp_measurements_slice_row(m, i);
    if (r->slice >= 0 && r->slice < nz && r->label > 0 && r->label < PSP_LABEL_COUNT) {
      tab[r->slice * PSP_LABEL_COUNT + r->label] = r;
      meas[r->slice * PSP_LABEL_COUNT] = 1; /* the slice holds a label */
    }
  }
  /* a muscle is measured on a slice that measured it (the mask) and holds
   * it: a label absent there (--labels without it on that slice) is not
   * an area of 0, so a row with it is empty and its segment skips the
   * slice, as for a slice left out */
  for (int64_t k = 0; k < nz; k++)
    for (int l = 1; l < PSP_LABEL_COUNT; l++)
      meas[k * PSP_LABEL_COUNT + l] =
          (measured ? measured[k * PSP_LABEL_COUNT + l] != 0 : meas[k * PSP_LABEL_COUNT]) &&
          tab[k * PSP_LABEL_COUNT + l] != NULL;

  /* the levels, inferior to superior */
  size_t nd = psp_levels_disc_count(lv), ni = 0;
  double S = psp_levels_spacing_mm(lv);
  if (!isfinite(S)) S = DEFAULT_SPACING_MM;
  for (size_t i = 0; i <= nd && nd > 0; i++) {
    const psp_level_disc *lo = i > 0 ? psp_levels_disc(lv, i - 1) : NULL;
    const psp_level_disc *hi = i < nd ? psp_levels_disc(lv, i) : NULL;
    /* the vertebra between lo and hi: its name from the slices */
    level_item v;
    memset(&v, 0, sizeof v);
    v.seg_first = v.seg_last = -1;
    for (int64_t k = 0; k < nz; k++) {
      if (psp_levels_is_disc(lv, k)) continue;
      double x = (double)k;
      if ((lo && x < lo->slice) || (hi && x > hi->slice)) continue;
      const char *nm = psp_levels_name(lv, k);
      if (!nm[0]) continue;
      if (!v.name[0]) snprintf(v.name, sizeof v.name, "%s", nm);
      if (strcmp(nm, v.name) != 0) continue;
      if (v.seg_first < 0) v.seg_first = k;
      v.seg_last = k;
      v.seg_n++;
      v.conf += psp_levels_confidence(lv, k);
    }
    if (v.name[0]) {
      v.conf /= (double)v.seg_n;
      snprintf(v.below, sizeof v.below, "%s", lo ? lo->name : "");
      snprintf(v.above, sizeof v.above, "%s", hi ? hi->name : "");
      v.seg_complete = lo && hi;
      v.target = lo && hi ? 0.5 * (lo->slice + hi->slice)
                 : lo     ? lo->slice + 0.5 * S / dz
                          : hi->slice - 0.5 * S / dz;
      v.slice = v.target >= -0.5 && v.target <= (double)nz - 0.5
                    ? (int64_t)fmin((double)(nz - 1), fmax(0.0, floor(v.target + 0.5)))
                    : -1;
      items[ni++] = v;
    }
    if (hi && hi->name[0]) {
      level_item d;
      memset(&d, 0, sizeof d);
      snprintf(d.name, sizeof d.name, "%s", hi->name);
      d.disc = true;
      d.target = hi->slice;
      d.slice = hi->nearest;
      d.conf = psp_levels_confidence(lv, hi->nearest);
      d.seg_first = d.seg_last = -1;
      items[ni++] = d;
    }
  }

  psp_strbuf b;
  psp_strbuf_init(&b);
  psp_strbuf_append(&b, "level,kind,disc_below,disc_above,level_confidence,anchored,muscle,side,"
                        "slice,file_slice,target_file_slice,slice_distance_mm,area_mm2,ff_mean_pct,"
                        "ff_ratio_pct,fcsa_mm2,fat_infiltration_pct,asym_area_pct,"
                        "fat_grade_research_only,seg_first_file_slice,seg_last_file_slice,"
                        "seg_n_slices,seg_complete,seg_area_mm2_mean,seg_ff_mean_pct_mean,"
                        "seg_ff_ratio_pct_mean,seg_fcsa_mm2_mean,seg_fat_infiltration_pct_mean,"
                        "seg_volume_mm3,seg_asym_volume_pct\n");
  const int anchored = psp_levels_anchored(lv) ? 1 : 0;
  for (size_t it = 0; it < ni; it++) {
    const level_item *L = &items[it];
    /* per group: metrics at the level slice and over the segment */
    combo at[9];
    double seg_area[9], seg_ff[9], seg_ratio[9], seg_fcsa[9], seg_fi[9], seg_vol[9];
    int64_t seg_n[9];
    for (int g = 0; g < 9; g++) {
      const psp_region_metrics *row[PSP_LABEL_COUNT] = {NULL};
      combo none = {false, NAN, NAN, NAN, NAN, NAN, NAN};
      at[g] = none;
      seg_n[g] = 0;
      if (L->slice >= 0 && group_measured(meas + L->slice * PSP_LABEL_COUNT, g)) {
        for (int l = 1; l < PSP_LABEL_COUNT; l++)
          row[l] = tab[L->slice * PSP_LABEL_COUNT + l];
        at[g] = combine(row, groups[g].labels, groups[g].n);
        if (!at[g].any) at[g].area = at[g].fcsa = NAN;
      }
      seg_area[g] = seg_ff[g] = seg_ratio[g] = seg_fcsa[g] = seg_fi[g] = seg_vol[g] = NAN;
      if (L->disc || L->seg_n == 0) continue;
      double sa = 0, sf = 0, sr = 0, sc = 0, si = 0, sv = 0;
      int nf = 0, nr = 0, ni2 = 0, nc = 0, nk = 0;
      for (int64_t k = L->seg_first; k <= L->seg_last; k++) {
        if (psp_levels_is_disc(lv, k) || strcmp(psp_levels_name(lv, k), L->name) != 0) continue;
        if (!group_measured(meas + k * PSP_LABEL_COUNT, g)) continue;
        for (int l = 1; l < PSP_LABEL_COUNT; l++)
          row[l] = tab[k * PSP_LABEL_COUNT + l];
        combo c = combine(row, groups[g].labels, groups[g].n);
        nk++;
        sa += c.area;
        sv += c.volume;
        if (isfinite(c.fcsa)) {
          sc += c.fcsa;
          nc++;
        }
        if (isfinite(c.ff_mean)) {
          sf += c.ff_mean;
          nf++;
        }
        if (isfinite(c.ff_ratio)) {
          sr += c.ff_ratio;
          nr++;
        }
        if (isfinite(c.fat_inf)) {
          si += c.fat_inf;
          ni2++;
        }
      }
      seg_n[g] = nk;
      if (nk == 0) continue;
      seg_area[g] = sa / nk;
      seg_fcsa[g] = nc ? sc / nc : NAN;
      seg_vol[g] = sv;
      seg_ff[g] = nf ? sf / nf : NAN;
      seg_ratio[g] = nr ? sr / nr : NAN;
      seg_fi[g] = ni2 ? si / ni2 : NAN;
    }
    for (int g = 0; g < 9; g++) {
      int p0 = groups[g].pair * 3; /* left row of the group; right = +1 */
      double as = asym(at[p0].area, at[p0 + 1].area);
      /* volumes over different numbers of slices are not comparable */
      double av = seg_n[p0] == seg_n[p0 + 1] ? asym(seg_vol[p0], seg_vol[p0 + 1]) : NAN;
      psp_strbuf_printf(&b, "%s,%s,%s,%s", L->name, L->disc ? "disc" : "vertebra", L->below,
                        L->above);
      num(&b, L->conf, 3);
      psp_strbuf_printf(&b, ",%d,%s,%s", anchored, groups[g].muscle, groups[g].side);
      if (L->slice >= 0)
        psp_strbuf_printf(&b, ",%lld,%lld", (long long)L->slice,
                          (long long)llround(psp_levels_file_position(lv, (double)L->slice)));
      else
        psp_strbuf_append(&b, ",,");
      num(&b, isfinite(L->target) ? psp_levels_file_position(lv, L->target) : NAN, 2);
      num(&b, L->slice >= 0 ? fabs(L->target - (double)L->slice) * dz : NAN, 2);
      num(&b, at[g].area, 3);
      num(&b, 100.0 * at[g].ff_mean, 4);
      num(&b, 100.0 * at[g].ff_ratio, 4);
      num(&b, at[g].fcsa, 3);
      num(&b, 100.0 * at[g].fat_inf, 4);
      num(&b, as, 2);
      psp_strbuf_printf(&b, ",%s", psp_levels_fat_grade(100.0 * at[g].ff_mean));
      if (!L->disc && L->seg_n > 0) {
        int64_t f0 = llround(psp_levels_file_position(lv, (double)L->seg_first));
        int64_t f1 = llround(psp_levels_file_position(lv, (double)L->seg_last));
        psp_strbuf_printf(&b, ",%lld,%lld,%lld,%d", (long long)(f0 < f1 ? f0 : f1),
                          (long long)(f0 < f1 ? f1 : f0), (long long)seg_n[g],
                          L->seg_complete && seg_n[g] == L->seg_n ? 1 : 0);
      } else {
        psp_strbuf_append(&b, ",,,,");
      }
      num(&b, seg_area[g], 3);
      num(&b, 100.0 * seg_ff[g], 4);
      num(&b, 100.0 * seg_ratio[g], 4);
      num(&b, seg_fcsa[g], 3);
      num(&b, 100.0 * seg_fi[g], 4);
      num(&b, seg_vol[g], 1);
      num(&b, av, 2);
      psp_strbuf_append(&b, "\n");
    }
  }
  free(tab);
  free(items);
  free(meas);
  return psp_strbuf_take(&b, err);
}
