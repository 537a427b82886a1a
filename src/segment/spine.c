/*
 * DESIGN: the spine along the stack. The landmarks of every slice (spinal
 * canal, midline, muscle and fat levels: src/anatomy/landmarks.c) are first
 * found on each slice alone, then made consistent along the stack before
 * the segmentation (src/segment/segment.c) uses them:
 *  1. Pass 0: each slice searched freely; the canal template counts FF
 *     below 0.2 as muscle.
 *  2. Fatty (degenerated) muscle: the template's muscle limit set from the
 *     muscle level of the first search (psp_landmarks_muscle_limit: the
 *     median level + 0.1, at most 0.5) and every slice searched again.
 *     When even after step 3 fewer than CONSISTENT_SHARE of the slices
 *     with a body have their canal near the stack's median canal (8 mm
 *     left-right, 15 mm front-back), the first search may itself have
 *     landed beside the spine: muscle fattier than the limit scores like
 *     fat, and a lean psoas or bowel beside a fluid-filled structure scores
 *     like the paraspinal muscles behind a canal, so the median level it
 *     measures is too low and sets too low a limit again. Then the higher
 *     limits of FATTY_LIMITS (up to the stack's fat level - 0.15; up to 0.5
 *     on in-phase/opposed-phase input, whose FF folds at 0.5) are tried in
 *     turn (each followed by step 3), and the one whose canals agree along
 *     the stack on the most slices is kept (ties: the lower). dixon-tum01 with fatty
 *     infiltration (tests/realdata/nifti_edit.py fatty A): A = 0.5, muscle
 *     FF about 0.55, the canal on 4 of 29 slices and all-muscle Dice
 *     0.16; now see tests/realdata/test_fatty_tum01.sh. Lean scans, whose
 *     canals agree, search nothing more and are unchanged.
 *  3. Outliers (canal more than 8 mm left-right or 15 mm front-back from
 *     the stack's median canal) searched again near it; then a canal more
 *     than NEAR_JUMP_MM from the median canal of the slices k-3..k+3 (as
 *     the outliers' search left them) searched again within that distance
 *     of it, kept if that finds a canal nearer to the neighbours'. The
 *     raised limit of fatty muscle makes the free search less specific (on
 *     ipop-chaos11, whose muscle reads FF 0.31, most slices' first canal
 *     lay 20-50 mm off): with the neighbours' canals taken from pass 0 a
 *     slice found near the stack's median, but 12 mm beside its
 *     neighbours', had no neighbours to check against; taken after the
 *     outliers' search, it is searched again and its multifidus L/R ratio
 *     over the stack is 1.12 / 1.33 (median / worst; 1.14 / 1.41 before,
 *     when the slice was not segmented at all).
 * Every pass runs over the slices in parallel, each slice's landmarks only
 * from its own image and the serial medians in between: the result does
 * not depend on the thread count.
 */
#include "segment/spine.h"
#include "segment/limits.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NEAR_SLICES 3
#define NEAR_JUMP_MM 6.0 /* from the neighbours' median canal: searched again near it */
#define NEAR_I_MM 8.0    /* a canal this far left-right from the stack's median ... */
#define NEAR_J_MM 15.0   /* ... or this far front-back (the lordosis) is an outlier */
#define CONSISTENT_SHARE 0.8
#define FAT_MARGIN 0.15 /* a muscle limit stays this far below the fat level */
#define IPOP_MAX_LIMIT 0.5
static const double FATTY_LIMITS[] = {0.35, 0.5, 0.65, 0.8};

/* The stack's median canal (i, j) over the slices where one was found
 * (the upper median), NaN without any; buf: 2 nz doubles. */
static void median_canal(const psp_slice_landmarks *lm, int64_t nz, double near[2], double *buf) {
  double *vi = buf, *vj = buf + nz;
  int64_t m = 0;
  for (int64_t k = 0; k < nz; k++)
    if (lm[k].canal.found) {
      vi[m] = lm[k].canal.i;
      vj[m] = lm[k].canal.j;
      m++;
    }
  near[0] = near[1] = NAN;
  if (m > 0) {
    qsort(vi, (size_t)m, sizeof *vi, psp_seg_cmp_double);
    qsort(vj, (size_t)m, sizeof *vj, psp_seg_cmp_double);
    near[0] = vi[m / 2];
    near[1] = vj[m / 2];
  }
}

static bool near_median(const psp_slice_landmarks *lm, const double near[2], const double *sp) {
  return lm->canal.found && fabs(lm->canal.i - near[0]) * sp[0] <= NEAR_I_MM &&
         fabs(lm->canal.j - near[1]) * sp[1] <= NEAR_J_MM;
}

/* Slices whose canal lies near the stack's median canal. */
static int64_t consistent_slices(const psp_slice_landmarks *lm, int64_t nz, const double *sp,
                                 double *buf) {
  double near[2];
  median_canal(lm, nz, near, buf);
  int64_t n = 0;
  for (int64_t k = 0; k < nz; k++)
    n += near_median(&lm[k], near, sp);
  return n;
}

/* The median canal (i, j) of the slices k - NEAR_SLICES .. k + NEAR_SLICES
 * (not k) whose canal lies near the stack's median canal near into
 * near_k[2k], near_k[2k+1], NaN with fewer than two; buf: 2 nz doubles. */
static void neighbour_canals(const psp_slice_landmarks *lm, int64_t nz, const double *sp,
                             const double *near, double *near_k, double *buf) {
  double *vi = buf, *vj = buf + nz;
  for (int64_t k = 0; k < nz; k++) {
    int64_t m = 0;
    for (int64_t q = k - NEAR_SLICES; q <= k + NEAR_SLICES; q++)
      if (q >= 0 && q < nz && q != k && near_median(&lm[q], near, sp)) {
        vi[m] = lm[q].canal.i;
        vj[m] = lm[q].canal.j;
        m++;
      }
    near_k[2 * k] = near_k[2 * k + 1] = NAN;
    if (m >= 2) {
      qsort(vi, (size_t)m, sizeof *vi, psp_seg_cmp_double);
      qsort(vj, (size_t)m, sizeof *vj, psp_seg_cmp_double);
      near_k[2 * k] = m % 2 ? vi[m / 2] : 0.5 * (vi[m / 2 - 1] + vi[m / 2]);
      near_k[2 * k + 1] = m % 2 ? vj[m / 2] : 0.5 * (vj[m / 2 - 1] + vj[m / 2]);
    }
  }
}

/* Every slice searched with the canal template's muscle limit lim: freely
 * (first: the body found and written) or again on the body found before
 * (slices without a body skipped). False when out of memory. */
static bool search_all(const psp_volume *ffv, bool ipop, uint8_t *body, double lim, bool first,
                       psp_slice_landmarks *lm) {
  int64_t nx = ffv->dims[0], ny = ffv->dims[1], nz = ffv->dims[2], plane = nx * ny;
  double sp[3];
  psp_volume_spacing(ffv, sp);
  bool oom = false;
#pragma omp parallel reduction(|| : oom)
  {
    psp_slice_work *w = psp_slice_work_create(nx, ny);
    if (!w)
      oom = true;
    else if (!isnan(lim))
      w->muscle_max_ff = lim;
#pragma omp for schedule(dynamic, 1)
    for (int64_t k = 0; k < nz; k++) {
      if (!w) continue;
      if (first)
        psp_landmarks_find(ffv->data + k * plane, nx, ny, sp[0], sp[1], NULL, ipop,
                           body + k * plane, w, &lm[k]);
      else if (lm[k].status != PSP_SLICE_NO_BODY)
        psp_landmarks_refind(ffv->data + k * plane, nx, ny, sp[0], sp[1], NULL, ipop,
                             body + k * plane, w, &lm[k]);
    }
    psp_slice_work_free(w);
  }
  return !oom;
}

/* Step 3 on lm, searched before with the muscle limit lim: *k_low, the
 * lowest slice with a spine before it; near_k, buf: 2 nz doubles. */
static bool outliers(const psp_volume *ffv, bool ipop, const uint8_t *body, double lim,
                     psp_slice_landmarks *lm, double *near_k, double *buf, int64_t *k_low) {
  int64_t nx = ffv->dims[0], ny = ffv->dims[1], nz = ffv->dims[2], plane = nx * ny;
  double sp[3];
  psp_volume_spacing(ffv, sp);
  double near[2];
  median_canal(lm, nz, near, buf);
  *k_low = -1;
  for (int64_t k = 0; k < nz && *k_low < 0; k++)
    if (lm[k].status == PSP_SLICE_OK) *k_low = k;
  /* pass 1a: landmarks again near the stack's median canal on outliers;
   * then, with the neighbours' canals these leave, pass 1b: a canal that
   * jumped away from the neighbouring slices' is searched again close to
   * theirs, kept only if that finds a canal nearer */
  bool oom = false;
  for (int pass = 0; pass < 2 && !oom; pass++) {
    if (pass == 1) neighbour_canals(lm, nz, sp, near, near_k, buf);
#pragma omp parallel reduction(|| : oom)
    {
      psp_slice_work *w = psp_slice_work_create(nx, ny);
      if (!w)
        oom = true;
      else if (!isnan(lim))
        w->muscle_max_ff = lim;
#pragma omp for schedule(dynamic, 1)
      for (int64_t k = 0; k < nz; k++) {
        if (!w) continue;
        const float *ff = ffv->data + k * plane;
        psp_slice_landmarks *l = &lm[k];
        if (pass == 0) {
          if (!isnan(near[0]) && l->status != PSP_SLICE_NO_BODY && !near_median(l, near, sp))
            /* the body of pass 0 (status other than NO_BODY) */
            psp_landmarks_refind(ff, nx, ny, sp[0], sp[1], near, ipop, body + k * plane, w, l);
          continue;
        }
        if (isnan(near_k[2 * k]) || !l->canal.found) continue;
        double d0 =
            hypot((l->canal.i - near_k[2 * k]) * sp[0], (l->canal.j - near_k[2 * k + 1]) * sp[1]);
        if (d0 > NEAR_JUMP_MM) {
          psp_slice_landmarks alt;
          psp_landmarks_find_close(ff, nx, ny, sp[0], sp[1], near_k + 2 * k, NEAR_JUMP_MM, ipop,
                                   body + k * plane, w, &alt);
          double d1 = alt.canal.found ? hypot((alt.canal.i - near_k[2 * k]) * sp[0],
                                              (alt.canal.j - near_k[2 * k + 1]) * sp[1])
                                      : INFINITY;
          if (alt.status == PSP_SLICE_OK && d1 < d0) *l = alt;
        }
      }
      psp_slice_work_free(w);
    }
  }
  return !oom;
}

bool psp_seg_spine_landmarks(const psp_volume *ffv, bool ipop, uint8_t *body,
                             psp_slice_landmarks *lm, int64_t *k_low, psp_context *ctx,
                             psp_error **err) {
  int64_t nz = ffv->dims[2];
  double sp[3];
  psp_volume_spacing(ffv, sp);
  double *near_k = psp_calloc((size_t)nz * 2, sizeof *near_k, err);
  double *buf = psp_calloc((size_t)nz * 2, sizeof *buf, err);
  psp_slice_landmarks *first = psp_calloc((size_t)nz * 2, sizeof *first, err);
  psp_slice_landmarks *tmp = first ? first + nz : NULL;
  bool ok = near_k && buf && first;
  /* pass 0, then the limit for fatty muscle from its muscle level */
  ok = ok && search_all(ffv, ipop, body, NAN, true, lm);
  if (ok) memcpy(first, lm, (size_t)nz * sizeof *first);
  double lim = ok ? psp_landmarks_muscle_limit(lm, nz, buf) : NAN;
  if (ok && !isnan(lim)) ok = search_all(ffv, ipop, body, lim, false, lm);
  ok = ok && outliers(ffv, ipop, body, lim, lm, near_k, buf, k_low);
  /* still no spine along the stack: higher limits */
  int64_t with_body = 0, m = 0;
  for (int64_t k = 0; ok && k < nz; k++)
    if (lm[k].status != PSP_SLICE_NO_BODY) {
      with_body++;
      if (isfinite(lm[k].fat_ff)) near_k[m++] = lm[k].fat_ff; /* near_k: scratch */
    }
  int64_t best = ok ? consistent_slices(lm, nz, sp, buf) : 0;
  if (ok && m > 0 && (double)best < CONSISTENT_SHARE * (double)with_body) {
    qsort(near_k, (size_t)m, sizeof *near_k, psp_seg_cmp_double);
    double top = near_k[m / 2] - FAT_MARGIN;
    if (ipop && top > IPOP_MAX_LIMIT) top = IPOP_MAX_LIMIT;
    double cur = isnan(lim) ? PSP_LM_MUSCLE_FF : lim, chosen = NAN;
    int64_t before = best;
    for (size_t c = 0; ok && c < sizeof FATTY_LIMITS / sizeof *FATTY_LIMITS; c++) {
      double L = FATTY_LIMITS[c];
      if (L <= cur || L > top + 1e-9) continue;
      memcpy(tmp, first, (size_t)nz * sizeof *tmp);
      int64_t kl = -1;
      ok = search_all(ffv, ipop, body, L, false, tmp) &&
           outliers(ffv, ipop, body, L, tmp, near_k, buf, &kl);
      int64_t n = ok ? consistent_slices(tmp, nz, sp, buf) : 0;
      if (n > best) {
        best = n;
        memcpy(lm, tmp, (size_t)nz * sizeof *lm);
        *k_low = kl;
        chosen = L;
      }
    }
    if (ok && !isnan(chosen))
      psp_info(ctx,
               "landmarks: the spinal canal agreed along the stack on %lld of %lld slices; "
               "counting tissue up to FF %.2f as muscle (fatty muscle), on %lld",
               (long long)before, (long long)with_body, chosen, (long long)best);
  }
  free(near_k);
  free(buf);
  free(first);
  if (!ok && (!err || !*err))
    psp_error_set(err, PSP_ERR_NOMEM, "out of memory in the segmentation");
  return ok;
}
