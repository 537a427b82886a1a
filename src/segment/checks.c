/*
 * DESIGN: the segmentation's plausibility checks (called by psp_seg_run in
 * src/segment/segment.c): what makes a slice's landmarks or labels not
 * believable, and the reason a flagged slice reports. A slice is flagged
 * and left empty rather than filled with a guess.
 *  - Water and fat exchanged on a slice (psp_seg_flag_swapped): the fat
 *    behind the spine reads below SWAP_FF while the stack's median reads
 *    above SWAP_STACK_FF.
 *  - The labels of a slice (psp_seg_check_areas): a muscle missing or
 *    above MAX_MUSCLE_MM2, or left and right of a muscle more than
 *    MAX_LR_RATIO apart in area (a leak or a loss, not anatomy; where one
 *    of them lies within PSP_SEG_EDGE_MM of the frame's edge the check
 *    waits for flag_cut_off in src/segment/align.c, which flags the slice
 *    the same way unless that muscle is cut by the field of view:
 *    dixon-tum01 cut through its left erector spinae had 2 of 29 slices
 *    flagged here, none now; elsewhere it waits for the stack's majority on
 *    the outlines, segment.c step 3d, and is made again after it: a
 *    boundary misplaced on one slice moves back to its neighbours', as on
 *    phantom02's configuration at seed 4, slice 1); the reason says when the smaller side's
 *    place reads ASYM_FF fattier than the other side's muscle (a one-sided
 *    fatty atrophy, too fatty to tell from fat).
 *  - Each multifidus against its place (psp_seg_check_areas): the other
 *    side's multifidus mirrored about the midline reading ASYM_FF fattier
 *    than the multifidus labelled there, and than the slice's muscle
 *    level: the labels took lean tissue beside a multifidus too fatty to
 *    tell from fat, with plausible areas. dixon-tum01 with its left
 *    multifidus at FF about 0.62 (tests/realdata/nifti_edit.py fatty 0.6 3)
 *    had that muscle 40-55 pp low on 24 of 29 slices; this check alone
 *    flagged 12 of them. The others had their midline pulled 8-12 mm
 *    towards the fatty side (now corrected in src/anatomy/landmarks.c), and
 *    the per-side levels (src/segment/segment.c, step 1) now segment the
 *    fatty muscle on 22 slices; the check flags 2 of the 6 flagged. Tried
 *    for the midline first, on every slice: a penalty on its distance from
 *    the canal centre (0.002-0.01 per mm) or the symmetry on a clipped FF
 *    (fat-dominant only) cost dixon-tum01's multifidus 0.001-0.016; the
 *    latter is now used only where the two sides' muscle differs. Only the
 *    multifidus: checking the erector spinae too flagged a lean slice of two
 *    rotated phantoms (its lateral, tapering outline mirrors onto fat). No
 *    slice of
 *    dixon-tum01, 57 edited copies of it (one-sided fatty 0.1-0.3
 *    included), ipop-chaos11 or the phantoms changes.
 *  - A signal void inside or against the muscles (psp_seg_void_area): the
 *    voxels without signal (metal, air; no FF) that the labels cannot take
 *    and that do not open onto the background, per measured slice
 *    (report.json signal_void_mm2; segment.c warns from 50 mm^2).
 *    dixon-tum01 with a void of 10 mm radius in its left erector spinae
 *    (nifti_edit.py void): 316 mm^2 on each of its three slices; dixon-
 *    tum01 itself, 30 edited copies and the phantoms: at most 2 mm^2 on a
 *    slice, ipop-chaos11 at most 20 (no warning).
 *  - How far the multifidus/erector spinae boundary is seen
 *    (psp_seg_boundary_evidence, on the final labels on the image's grid:
 *    src/segment/align.c; report.json, report.html and the QC images): the
 *    share of its crossings (a multifidus voxel and the erector voxel along
 *    a row or column, next to it or beyond unlabelled voxels over at most
 *    PLANE_SEEN_GAP_MM = 3.5 mm) whose highest FF lies more than
 *    PLANE_SEEN_SHARE = 0.2 (fat - muscle) above the voxels
 *    PLANE_SEEN_BEYOND_MM = 1 mm (at least one voxel) beyond both ends: a
 *    visible fat plane. Where no plane shows, the split is the template's
 *    proportion of the subject's compartment (or a step of FF between a
 *    fatty and a lean muscle, which is no ridge), and a reader should take
 *    the two muscles' areas (and a left/right difference between them) as
 *    that. dixon-tum01: 2 / 2 % (no plane on its FF map; every slice split
 *    by the template's path); with a fat plane added along its manual
 *    boundary (nifti_edit.py plane 0.7) 95 / 92 %; the sample phantoms
 *    71-94 %; a phantom at 3 mm pixels rolled by 12 degrees 84 / 90 % (on
 *    the rotated 1 mm frame, where each voxel repeats, it read 40 / 41 %).
 * Serial per slice; deterministic.
 */
#include "segment/limits.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define PLANE_SEEN_SHARE 0.2     /* of fat - muscle: a ridge of FF across the boundary is a plane */
#define PLANE_SEEN_GAP_MM 3.5    /* unlabelled at most between the two muscles' voxels */
#define PLANE_SEEN_BEYOND_MM 1.0 /* the ends compared with: this far beyond the two voxels */

void psp_seg_flag(psp_slice_landmarks *lm, psp_slice_status st, const char *fmt, double a,
                  double b) {
  lm->status = st;
  snprintf(lm->reason, sizeof lm->reason, fmt, a, b);
}

/* The larger left/right area ratio of the two muscles (infinite when one
 * is missing). */
double psp_seg_lr_ratio(const float *lab, int64_t nx, const int64_t bx[4]) {
  int64_t n[PSP_LABEL_COUNT] = {0};
  for (int64_t j = bx[2]; j <= bx[3]; j++)
    for (int64_t q = j * nx + bx[0]; q <= j * nx + bx[1]; q++)
      n[(int)lab[q]]++;
  if (!n[1] || !n[2] || !n[3] || !n[4]) return INFINITY;
  return fmax(fmax((double)n[1], (double)n[2]) / fmin((double)n[1], (double)n[2]),
              fmax((double)n[3], (double)n[4]) / fmin((double)n[3], (double)n[4]));
}

/* Slices whose water and fat look exchanged (a swap artefact of the
 * fat/water separation, or fat-dominant tissue not recognised on in-phase/
 * opposed-phase input): the fat behind the spine (lm->back_ff) reads below
 * SWAP_FF while the stack's median reads above SWAP_STACK_FF. Flagged
 * implausible with that reason (their FF would read 1 - FF): a slice
 * exchanged whole read no_spine or implausible left/right before, without
 * the cause. On the scans here every slice reads 0.39-0.96. */
int64_t psp_seg_flag_swapped(psp_slice_landmarks *lm, int64_t nz, double *med_out) {
  double *v = malloc((size_t)nz * sizeof *v);
  if (!v) return 0; /* the check is skipped: nothing is flagged */
  int64_t m = 0, n = 0;
  for (int64_t k = 0; k < nz; k++)
    if (lm[k].status != PSP_SLICE_NO_BODY && isfinite(lm[k].back_ff)) v[m++] = lm[k].back_ff;
  double med = NAN;
  if (m > 0) {
    qsort(v, (size_t)m, sizeof *v, psp_seg_cmp_double);
    med = m % 2 ? v[m / 2] : 0.5 * (v[m / 2 - 1] + v[m / 2]);
  }
  free(v);
  *med_out = med;
  if (!(med > SWAP_STACK_FF)) return 0;
  for (int64_t k = 0; k < nz; k++) {
    psp_slice_landmarks *l = &lm[k];
    if (l->status == PSP_SLICE_NO_BODY || !(l->back_ff < SWAP_FF)) continue;
    l->status = PSP_SLICE_IMPLAUSIBLE;
    snprintf(l->reason, sizeof l->reason,
             "the fat behind the spine reads FF %.2f here against %.2f on the other slices: water "
             "and fat look exchanged on this slice (a fat/water swap); not measured",
             l->back_ff, med);
    n++;
  }
  return n;
}

/* The median FF of slice ff at the voxels of label l, or (mirror) at
 * those voxels mirrored about the column mid (the segmentation frame's
 * midline); NaN without any. buf: floats for the label's voxels in bx. */
static double label_ff(const float *ff, const float *lab, int64_t nx, const int64_t bx[4], float l,
                       bool mirror, double mid, float *buf) {
  size_t m = 0;
  for (int64_t j = bx[2]; j <= bx[3]; j++)
    for (int64_t i = bx[0]; i <= bx[1]; i++) {
      if (lab[j * nx + i] != l) continue;
      int64_t i2 = mirror ? (int64_t)lround(2.0 * mid - (double)i) : i;
      if (i2 >= 0 && i2 < nx && !isnan(ff[j * nx + i2])) buf[m++] = ff[j * nx + i2];
    }
  return m ? psp_quantile_select(buf, m, 0.5) : NAN;
}

/* Last plausibility check of a labelled slice: every muscle present, none
 * larger than MAX_MUSCLE_MM2, left and right of each muscle within a factor
 * MAX_LR_RATIO, each multifidus no leaner than its place by ASYM_FF.
 * Otherwise the slice is flagged and emptied (the reason says when the
 * smaller side's place reads much fattier than the other side). */
void psp_seg_check_areas(psp_slice_landmarks *lm, const float *ff, float *lab, int64_t nx,
                         int64_t ny, const int64_t box[4], const double sp[2], double muscle,
                         bool defer) {
  lm->lr_pending = 0;
  /* the refined labels lie inside box grown by one voxel */
  const int64_t bx[4] = {box[0] > 0 ? box[0] - 1 : 0, box[1] < nx - 1 ? box[1] + 1 : nx - 1,
                         box[2] > 0 ? box[2] - 1 : 0, box[3] < ny - 1 ? box[3] + 1 : ny - 1};
  const double px = sp[0] * sp[1];
  const int64_t ei = (int64_t)ceil(PSP_SEG_EDGE_MM / sp[0]),
                ej = (int64_t)ceil(PSP_SEG_EDGE_MM / sp[1]);
  int64_t n[PSP_LABEL_COUNT] = {0};
  bool edge[PSP_LABEL_COUNT] = {false}; /* within PSP_SEG_EDGE_MM of the image's edge */
  for (int64_t j = bx[2]; j <= bx[3]; j++)
    for (int64_t i = bx[0]; i <= bx[1]; i++) {
      int l = (int)lab[j * nx + i];
      n[l]++;
      if (l && (i < ei || i >= nx - ei || j < ej || j >= ny - ej)) edge[l] = true;
    }
  double a[PSP_LABEL_COUNT];
  for (int l = 0; l < PSP_LABEL_COUNT; l++)
    a[l] = (double)n[l] * px;
  int bad = 0, small = 0; /* small: a muscle missing or far smaller than its other side's */
  for (int l = 1; l < PSP_LABEL_COUNT && !bad; l++)
    if (a[l] <= 0 || a[l] > MAX_MUSCLE_MM2) bad = l;
  double ratio = NAN;
  if (bad) {
    psp_seg_flag(lm, PSP_SLICE_IMPLAUSIBLE,
                 "implausible muscle area %.0f mm^2 (allowed 0 < area <= %.0f)", a[bad],
                 MAX_MUSCLE_MM2);
    if (a[bad] <= 0) small = bad;
  } else {
    /* a muscle the field of view cuts says nothing about a leak: at the
     * image's edge the check waits for flag_cut_off (src/segment/align.c),
     * which flags the slice as here unless that muscle is cut */
    double rmf = fmax(a[1], a[2]) / fmin(a[1], a[2]), res = fmax(a[3], a[4]) / fmin(a[3], a[4]);
    lm->lr_edge_pair = 0;
    if ((edge[3] || edge[4]) && res > MAX_LR_RATIO) {
      lm->lr_edge_pair = 2;
      lm->lr_edge_ratio = res;
      res = 1.0;
    }
    if ((edge[1] || edge[2]) && rmf > MAX_LR_RATIO) {
      lm->lr_edge_pair = 1;
      lm->lr_edge_ratio = rmf;
      rmf = 1.0;
    }
    ratio = fmax(rmf, res);
    if (ratio > MAX_LR_RATIO && defer) {
      lm->lr_pending = 1; /* decided again after the stack's majority */
      return;
    }
    if (ratio > MAX_LR_RATIO) {
      psp_seg_flag(lm, PSP_SLICE_IMPLAUSIBLE, PSP_SEG_LR_REASON, ratio, MAX_LR_RATIO);
      small = rmf >= res ? (a[1] < a[2] ? 1 : 2) : (a[3] < a[4] ? 3 : 4);
    }
  }
  /* the other side's muscle mirrored onto the small one's side: reading
   * much fattier there than itself, the small muscle is likely too fatty
   * to tell from fat (a one-sided fatty atrophy), which the reason says */
  int big = small % 2 ? small + 1 : small - 1;
  if (small && n[big] > 0) {
    float *buf = malloc((size_t)n[big] * sizeof *buf);
    double fm = buf ? label_ff(ff, lab, nx, bx, (float)big, true, lm->midline_i, buf) : NAN;
    double fb = buf ? label_ff(ff, lab, nx, bx, (float)big, false, lm->midline_i, buf) : NAN;
    free(buf);
    if (fm - fb > ASYM_FF && fm > muscle + ASYM_FF) {
      char what[64];
      if (a[small] <= 0)
        snprintf(what, sizeof what, "a muscle is missing");
      else
        snprintf(what, sizeof what, "left and right differ by a factor %.1f in area", ratio);
      snprintf(lm->reason, sizeof lm->reason,
               "%s: the %s's place reads FF %.2f against %.2f on the other side, likely too "
               "fatty to tell from fat",
               what, psp_label_name(small), fm, fb);
    }
  }
  /* each multifidus against its place: the other side's multifidus
   * mirrored onto this side reading much fattier than the multifidus
   * labelled here (and than the slice's muscle level) means the labels
   * took lean tissue beside a multifidus too fatty to tell from fat (a
   * one-sided fatty atrophy), a plausible-looking but wrong measurement */
  for (int l = PSP_LABEL_MF_LEFT; l <= PSP_LABEL_MF_RIGHT && lm->status == PSP_SLICE_OK; l++) {
    int o = l == PSP_LABEL_MF_LEFT ? PSP_LABEL_MF_RIGHT : PSP_LABEL_MF_LEFT;
    float *buf = malloc((size_t)(n[l] > n[o] ? n[l] : n[o]) * sizeof *buf);
    if (!buf) break; /* the check is skipped */
    double fp = label_ff(ff, lab, nx, bx, (float)o, true, lm->midline_i, buf);
    double fl = label_ff(ff, lab, nx, bx, (float)l, false, lm->midline_i, buf);
    free(buf);
    if (fp - fl > ASYM_FF && fp > muscle + ASYM_FF) {
      lm->status = PSP_SLICE_IMPLAUSIBLE;
      snprintf(lm->reason, sizeof lm->reason,
               "the %s's place (the other side's mirrored) reads FF %.2f, the muscle found there "
               "%.2f: likely a one-sided fatty atrophy too fatty to tell from fat",
               psp_label_name(l), fp, fl);
    }
  }
  if (lm->status != PSP_SLICE_OK)
    for (int64_t j = bx[2]; j <= bx[3]; j++)
      for (int64_t q = j * nx + bx[0]; q <= j * nx + bx[1]; q++)
        lab[q] = 0;
}

#define VOID_PAD 3

double psp_seg_void_area(const float *ff, const float *lab, int64_t nx, int64_t ny,
                         const int64_t bx[4], double px, int32_t *queue, uint8_t *seen) {
  if (bx[1] < bx[0] || bx[3] < bx[2]) return 0;
  const int64_t i0 = bx[0] - VOID_PAD < 0 ? 0 : bx[0] - VOID_PAD,
                i1 = bx[1] + VOID_PAD > nx - 1 ? nx - 1 : bx[1] + VOID_PAD,
                j0 = bx[2] - VOID_PAD < 0 ? 0 : bx[2] - VOID_PAD,
                j1 = bx[3] + VOID_PAD > ny - 1 ? ny - 1 : bx[3] + VOID_PAD;
  for (int64_t j = j0; j <= j1; j++)
    for (int64_t i = i0; i <= i1; i++)
      seen[j * nx + i] = 0;
  int64_t total = 0;
  for (int64_t j = j0; j <= j1; j++)
    for (int64_t i = i0; i <= i1; i++) {
      int64_t s0 = j * nx + i;
      if (seen[s0] || !isnan(ff[s0])) continue;
      /* one piece: breadth-first over the NaN voxels of the grown box */
      int64_t head = 0, tail = 0, n = 0;
      bool border = false, muscle = false;
      queue[tail++] = (int32_t)s0;
      seen[s0] = 1;
      while (head < tail) {
        int64_t q = queue[head++], qi = q % nx, qj = q / nx;
        n++;
        border = border || qi == i0 || qi == i1 || qj == j0 || qj == j1;
        const int64_t nb[4][2] = {{qi - 1, qj}, {qi + 1, qj}, {qi, qj - 1}, {qi, qj + 1}};
        for (int t = 0; t < 4; t++) {
          int64_t a = nb[t][0], b = nb[t][1];
          if (a < i0 || a > i1 || b < j0 || b > j1) continue;
          int64_t u = b * nx + a;
          if (isnan(ff[u])) {
            if (!seen[u]) {
              seen[u] = 1;
              queue[tail++] = (int32_t)u;
            }
          } else if (lab[u] > 0) {
            muscle = true;
          }
        }
      }
      if (muscle && !border) total += n;
    }
  return (double)total * px;
}

/* A signal void inside or against the muscles (metal, air: no signal, no
 * FF) is left out of their outlines, so their areas fall short there and
 * nothing else tells: one warning names the slices where it reaches
 * VOID_WARN_MM2. */
#define VOID_WARN_MM2 50.0
void psp_seg_warn_voids(const psp_slice_landmarks *lm, int64_t nz, const psp_volume *ffv,
                        psp_context *ctx) {
  int64_t n = 0, first = -1, last = -1, kmax = -1;
  for (int64_t k = 0; k < nz; k++) {
    if (lm[k].status != PSP_SLICE_OK || !(lm[k].void_mm2 >= VOID_WARN_MM2)) continue;
    n++;
    int64_t f = psp_volume_file_slice(ffv, k);
    if (first < 0 || f < first) first = f;
    if (f > last) last = f;
    if (kmax < 0 || lm[k].void_mm2 > lm[kmax].void_mm2) kmax = k;
  }
  if (n == 0) return;
  psp_warn(ctx,
           "automatic segmentation: a signal void (no signal: metal, air) lies inside or against "
           "the muscles on %lld slice(s) between file slices %lld and %lld (%.0f mm^2 on file "
           "slice %lld): their areas and FF leave it out; check the QC images",
           (long long)n, (long long)first, (long long)last, lm[kmax].void_mm2,
           (long long)psp_volume_file_slice(ffv, kmax));
}

void psp_seg_boundary_evidence(const float *ff, const float *lab, int64_t nx, int64_t ny, double sx,
                               double sy, const double muscle[2], double fat, double share[2]) {
  const int64_t di[4] = {1, -1, 0, 0}, dj[4] = {0, 0, 1, -1};
  int64_t gap[4], far[4]; /* per direction: the most unlabelled voxels between; the step beyond */
  for (int d = 0; d < 4; d++) {
    double px = di[d] ? sx : sy;
    gap[d] = (int64_t)floor(PLANE_SEEN_GAP_MM / px);
    gap[d] = gap[d] < 1 ? 1 : gap[d];
    far[d] = (int64_t)ceil(PLANE_SEEN_BEYOND_MM / px - 1e-9);
    far[d] = far[d] < 1 ? 1 : far[d];
  }
  for (int side = 0; side < 2; side++) {
    const float mf = side == 0 ? PSP_LABEL_MF_LEFT : PSP_LABEL_MF_RIGHT;
    const float es = side == 0 ? PSP_LABEL_ES_LEFT : PSP_LABEL_ES_RIGHT;
    const double need = PLANE_SEEN_SHARE * (fat - muscle[side]);
    int64_t n = 0, seen = 0;
    for (int64_t j = 0; j < ny; j++)
      for (int64_t i = 0; i < nx; i++) {
        if (lab[j * nx + i] != mf) continue;
        for (int d = 0; d < 4; d++) {
          /* p - far d, p (multifidus), [unlabelled voxels,] q (erector), q + far d */
          int64_t steps = 0;
          for (int64_t t = 1; t <= gap[d] + 1 && !steps; t++) {
            int64_t x = i + t * di[d], y = j + t * dj[d];
            if (x < 0 || y < 0 || x >= nx || y >= ny) break;
            float l = lab[y * nx + x];
            if (l == es)
              steps = t;
            else if (l != 0.0f)
              break;
          }
          if (!steps) continue;
          int64_t x0 = i - far[d] * di[d], y0 = j - far[d] * dj[d];
          int64_t x1 = i + (steps + far[d]) * di[d], y1 = j + (steps + far[d]) * dj[d];
          /* a crossing whose ends lie beyond the image is not judged */
          if (x0 < 0 || y0 < 0 || x0 >= nx || y0 >= ny || x1 < 0 || y1 < 0 || x1 >= nx || y1 >= ny)
            continue;
          n++;
          double peak = -INFINITY;
          for (int64_t t = 0; t <= steps; t++) {
            double v = ff[(j + t * dj[d]) * nx + i + t * di[d]];
            peak = v > peak ? v : peak; /* NaN never raises it */
          }
          double a = ff[y0 * nx + x0], b = ff[y1 * nx + x1];
          if (peak > a + need && peak > b + need) seen++;
        }
      }
    share[side] = n ? (double)seen / (double)n : NAN;
  }
}
