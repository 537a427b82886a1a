/*
 * DESIGN: the spine along the stack. The landmarks of every slice (spinal
 * canal, midline, muscle and fat levels: src/anatomy/landmarks.c) are first
 * found on each slice alone, then made consistent along the stack before
 * the segmentation (src/segment/segment.c) uses them:
 *  1. Pass 0: each slice searched freely; the canal template counts FF
 *     below 0.2 as muscle.
 *  2. Fatty (degenerated) muscle: the template's muscle limit set from the
 *     muscle level of the first search (psp_landmarks_muscle_limit: the
 *     median level + 0.1, at most 0.5), every slice searched again, then
 *     step 3. When even then fewer than CONSISTENT_SHARE of the slices with
 *     a body have their canal on the spine's track (step 3), the first
 *     search may itself have landed beside the spine: muscle fattier than
 *     the limit scores like fat, and a lean psoas beside fluid scores like
 *     the paraspinal muscles behind a canal, so the muscle level it
 *     measures is too low and sets too low a limit again. Then the higher
 *     limits of FATTY_LIMITS (below the stack's fat level - FAT_MARGIN; at
 *     most 0.5 on in-phase/opposed-phase input, whose FF folds at 0.5) are
 *     tried in turn, each followed by step 3, and the one whose canals lie
 *     on the track on the most slices is kept (ties: the lower). Measured
 *     on dixon-tum01 with fatty infiltration (tests/realdata/nifti_edit.py
 *     fatty A): A = 0.5, muscle FF about 0.55, 19 of 29 slices segmented,
 *     mostly on the wrong structure, all-muscle Dice 0.16 -> 29 of 29 and
 *     0.899 (limit 0.65); A = 0.6 0.09 -> 0.735 (the upper nine slices
 *     flagged: muscle within 0.3 of fat). Scans whose canals agree search
 *     nothing more and are unchanged. The same limits are tried when the
 *     canals, consistent or not, lie more than OFF_CENTRE_MM (median) beside
 *     the left-right centre of the body's extent (bodies cut by the field of
 *     view not counted), and the limit whose canals lie nearest the centre
 *     (within OFF_CENTRE_MM) is kept: a multifidus fattier on one side (a
 *     one-sided atrophy) scores like fat, and the template, which wants
 *     muscle behind the canal on both sides, settled in the lean muscles
 *     of the other side on every slice alike. dixon-tum01 with its left
 *     multifidus fatty (nifti_edit.py fatty A 3; A = 0.3 / 0.4 / 0.5,
 *     muscle FF about 0.38 / 0.46 / 0.55): canals 35-40 mm off, 16 of 29
 *     slices segmented, all-muscle Dice 0.51 / 0.42 / 0.45 -> 0.909 / 0.903
 *     / 0.868 (the canals within 2-5 mm of the centre). On the scans here
 *     the median is 0-5 mm (the field of view cut off centre: not counted).
 *  3. Outliers searched again near the stack's median canal: a canal off
 *     the spine's track (on_track: neither within 8 mm left-right and 15
 *     mm front-back (the lordosis) of the stack's median canal, nor
 *     reached from such a slice in steps of at most TRACK_STEP_MM from one
 *     slice's canal to the next). Then a canal more than NEAR_JUMP_MM from
 *     the median canal of its neighbours k-3..k+3 on the track (as the
 *     outliers' search left them) searched again within that distance of
 *     it, kept if that finds a canal nearer to the neighbours'. The steps
 *     keep a spine curved sideways (scoliosis) where it is: with the
 *     stack's median alone, dixon-tum01 with its slices shifted up to 30 mm
 *     along a curve (nifti_edit.py curve) had the curved slices' canals
 *     pulled towards the stack's middle, all-muscle Dice 0.900 (erector
 *     0.865 / 0.886); now 0.934 (the straight scan 0.937). The median of
 *     the neighbours instead of steps took a cluster of wrong canals for a
 *     track (the rolled phantom's lowest four slices, 30 mm off).
 *     ipop-chaos11: the canals of slices 1 and 2 moved by 0.5 and 1.6
 *     voxels onto their neighbours' line (slice 1's multifidus L/R 1.32 ->
 *     1.24; the stack's median / worst 1.10 / 1.33 -> 1.11 / 1.33). The raised limit
 *     of fatty muscle makes the free search less specific (on ipop-chaos11,
 *     whose muscle reads FF 0.31, most slices' first canal lay 20-50 mm
 *     off): with the neighbours' canals taken from pass 0 a slice found
 *     near the stack's median, but 12 mm beside its neighbours', had no
 *     neighbours to check against; taken after the outliers' search, it is
 *     searched again and its multifidus L/R ratio over the stack is 1.12 /
 *     1.33 (median / worst; 1.14 / 1.41 before, when the slice was not
 *     segmented at all).
 * Every pass runs over the slices in parallel, each slice's landmarks only
 * from its own image, with the serial medians in between: the result does
 * not depend on the thread count.
 */
#include "segment/spine.h"
#include "segment/limits.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NEAR_SLICES 3
#define NEAR_JUMP_MM 6.0  /* from the neighbours' median canal: searched again near it */
#define NEAR_I_MM 8.0     /* off the track: this far left-right from the median canal ... */
#define NEAR_J_MM 15.0    /* ... or this far front-back (the lordosis) */
#define TRACK_STEP_MM 8.0 /* the track: from one slice's canal to the next */
#define CONSISTENT_SHARE 0.8
#define OFF_CENTRE_MM 20.0 /* the canals' median distance from the body's left-right centre */
#define FAT_MARGIN 0.15    /* a muscle limit stays this far below the fat level */
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

/* on[k]: slice k's canal lies on the spine's track: near the stack's
 * median canal near, or reached from such a slice by steps of at most
 * TRACK_STEP_MM (left-right and front-back) from one slice's canal to the
 * next slice's (across one slice without a canal), which follows a spine
 * curved sideways (scoliosis) away from the stack's median but not a jump
 * to another structure. Returns the number of such slices. */
static int64_t on_track(const psp_slice_landmarks *lm, int64_t nz, const double *sp,
                        const double near[2], uint8_t *on) {
  for (int64_t k = 0; k < nz; k++)
    on[k] = near_median(&lm[k], near, sp);
  for (int dir = 1; dir >= -1; dir -= 2) /* upwards, then downwards */
    for (int64_t k = dir > 0 ? 1 : nz - 2; k >= 0 && k < nz; k += dir) {
      if (on[k] || !lm[k].canal.found) continue;
      int64_t q = k - dir;
      if (q >= 0 && q < nz && !lm[q].canal.found) q -= dir; /* bridge one slice */
      if (q < 0 || q >= nz || !on[q]) continue;
      on[k] = fabs(lm[k].canal.i - lm[q].canal.i) * sp[0] <= TRACK_STEP_MM &&
              fabs(lm[k].canal.j - lm[q].canal.j) * sp[1] <= TRACK_STEP_MM;
    }
  int64_t n = 0;
  for (int64_t k = 0; k < nz; k++)
    n += on[k];
  return n;
}

/* Slices whose canal lies on the spine's track (on_track); buf: 2 nz
 * doubles, on: nz bytes. */
static int64_t consistent_slices(const psp_slice_landmarks *lm, int64_t nz, const double *sp,
                                 double *buf, uint8_t *on) {
  double near[2];
  median_canal(lm, nz, near, buf);
  return on_track(lm, nz, sp, near, on);
}

/* The median canal (i, j) of the slices k - NEAR_SLICES .. k + NEAR_SLICES
 * (not k) whose canal lies on the spine's track (on) into near_k[2k],
 * near_k[2k+1], NaN with fewer than two; buf: 2 nz doubles. */
static void neighbour_canals(const psp_slice_landmarks *lm, int64_t nz, const uint8_t *on,
                             double *near_k, double *buf) {
  double *vi = buf, *vj = buf + nz;
  for (int64_t k = 0; k < nz; k++) {
    int64_t m = 0;
    for (int64_t q = k - NEAR_SLICES; q <= k + NEAR_SLICES; q++)
      if (q >= 0 && q < nz && q != k && on[q]) {
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

/* The median distance (mm) of the canals from the left-right centre of
 * their body's extent, over the slices with a canal whose body the field
 * of view does not cut; NaN without any. buf: nz doubles. */
static double off_centre(const psp_slice_landmarks *lm, int64_t nz, int64_t nx, double sx,
                         double *buf) {
  int64_t m = 0;
  for (int64_t k = 0; k < nz; k++)
    if (lm[k].canal.found && !psp_landmarks_body_cut(&lm[k], nx))
      buf[m++] = fabs(lm[k].canal.i - 0.5 * (double)(lm[k].body_box[0] + lm[k].body_box[1])) * sx;
  if (m == 0) return NAN;
  qsort(buf, (size_t)m, sizeof *buf, psp_seg_cmp_double);
  return m % 2 ? buf[m / 2] : 0.5 * (buf[m / 2 - 1] + buf[m / 2]);
}

/* A slice's scratch with the canal template's muscle limit lim (NaN: the
 * default); NULL when out of memory. */
static psp_slice_work *limited_work(int64_t nx, int64_t ny, double lim) {
  psp_slice_work *w = psp_slice_work_create(nx, ny);
  if (w && !isnan(lim)) w->muscle_max_ff = lim;
  return w;
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
    psp_slice_work *w = limited_work(nx, ny, lim);
    if (!w) oom = true;
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
                     psp_slice_landmarks *lm, double *near_k, double *buf, uint8_t *on,
                     int64_t *k_low) {
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
    on_track(lm, nz, sp, near, on);
    if (pass == 1) neighbour_canals(lm, nz, on, near_k, buf);
#pragma omp parallel reduction(|| : oom)
    {
      psp_slice_work *w = limited_work(nx, ny, lim);
      if (!w) oom = true;
#pragma omp for schedule(dynamic, 1)
      for (int64_t k = 0; k < nz; k++) {
        if (!w) continue;
        const float *ff = ffv->data + k * plane;
        psp_slice_landmarks *l = &lm[k];
        if (pass == 0) {
          if (!isnan(near[0]) && l->status != PSP_SLICE_NO_BODY && !on[k])
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

/* The landmarks of the free search (first) searched again with the muscle
 * limit L, then step 3, into out (*kl: its lowest slice with a spine).
 * False when out of memory. */
static bool with_limit(const psp_volume *ffv, bool ipop, uint8_t *body,
                       const psp_slice_landmarks *first, double L, psp_slice_landmarks *out,
                       double *near_k, double *buf, uint8_t *on, int64_t *kl) {
  memcpy(out, first, (size_t)ffv->dims[2] * sizeof *out);
  return search_all(ffv, ipop, body, L, false, out) &&
         outliers(ffv, ipop, body, L, out, near_k, buf, on, kl);
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
  uint8_t *on = psp_calloc((size_t)nz, 1, err);
  bool ok = near_k && buf && first && on;
  /* pass 0, then the limit for fatty muscle from its muscle level */
  ok = ok && search_all(ffv, ipop, body, NAN, true, lm);
  if (ok) memcpy(first, lm, (size_t)nz * sizeof *first);
  double lim = ok ? psp_landmarks_muscle_limit(lm, nz, buf) : NAN;
  if (ok && !isnan(lim)) ok = search_all(ffv, ipop, body, lim, false, lm);
  ok = ok && outliers(ffv, ipop, body, lim, lm, near_k, buf, on, k_low);
  /* still no spine along the stack, or the canals beside the body's
   * centre: higher limits */
  int64_t with_body = 0, m = 0;
  for (int64_t k = 0; ok && k < nz; k++)
    if (lm[k].status != PSP_SLICE_NO_BODY) {
      with_body++;
      if (isfinite(lm[k].fat_ff)) near_k[m++] = lm[k].fat_ff; /* near_k: scratch */
    }
  double top = NAN;
  if (m > 0) {
    qsort(near_k, (size_t)m, sizeof *near_k, psp_seg_cmp_double);
    top = near_k[m / 2] - FAT_MARGIN;
    if (ipop && top > IPOP_MAX_LIMIT) top = IPOP_MAX_LIMIT;
  }
  double cur = isnan(lim) ? PSP_LM_MUSCLE_FF : lim;
  int64_t best = ok ? consistent_slices(lm, nz, sp, buf, on) : 0;
  if (ok && m > 0 && (double)best < CONSISTENT_SHARE * (double)with_body) {
    double chosen = NAN;
    int64_t before = best;
    for (size_t c = 0; ok && c < sizeof FATTY_LIMITS / sizeof *FATTY_LIMITS; c++) {
      double L = FATTY_LIMITS[c];
      if (L <= cur || L > top + 1e-9) continue;
      int64_t kl = -1;
      ok = with_limit(ffv, ipop, body, first, L, tmp, near_k, buf, on, &kl);
      int64_t n = ok ? consistent_slices(tmp, nz, sp, buf, on) : 0;
      if (n > best) {
        best = n;
        memcpy(lm, tmp, (size_t)nz * sizeof *lm);
        *k_low = kl;
        chosen = L;
      }
    }
    if (ok && !isnan(chosen)) {
      cur = chosen;
      psp_info(ctx,
               "landmarks: the spinal canal agreed along the stack on %lld of %lld slices; "
               "counting tissue up to FF %.2f as muscle (fatty muscle), on %lld",
               (long long)before, (long long)with_body, chosen, (long long)best);
    }
  }
  /* a track found far beside the body's centre: muscle on one side fattier
   * than the limit (a unilateral atrophy) scores like fat, and the canal
   * template, which wants muscle behind it on both sides, settles in the
   * lean muscles of the other side. The higher limits are tried, each as
   * above, and the one whose canals lie nearest the centre is kept (it
   * must be within OFF_CENTRE_MM; ties: the lower) */
  double off = ok ? off_centre(lm, nz, ffv->dims[0], sp[0], buf) : NAN;
  if (ok && m > 0 && off > OFF_CENTRE_MM) {
    double chosen = NAN, best_off = off;
    for (size_t c = 0; ok && c < sizeof FATTY_LIMITS / sizeof *FATTY_LIMITS; c++) {
      double L = FATTY_LIMITS[c];
      if (L <= cur || L > top + 1e-9) continue;
      int64_t kl = -1;
      ok = with_limit(ffv, ipop, body, first, L, tmp, near_k, buf, on, &kl);
      double o = ok ? off_centre(tmp, nz, ffv->dims[0], sp[0], buf) : NAN;
      if (o < best_off && o <= OFF_CENTRE_MM) {
        best_off = o;
        memcpy(lm, tmp, (size_t)nz * sizeof *lm);
        *k_low = kl;
        chosen = L;
      }
    }
    if (ok && !isnan(chosen))
      psp_info(ctx,
               "landmarks: the spinal canals lay %.0f mm beside the body's centre (median); "
               "counting tissue up to FF %.2f as muscle (fatty muscle on one side), %.0f mm",
               off, chosen, best_off);
    else if (ok)
      psp_warn(ctx,
               "landmarks: the spinal canals lie %.0f mm beside the body's left-right centre "
               "(median over the slices): check the QC images that the spine, not another "
               "structure, was found",
               off);
  }
  free(near_k);
  free(buf);
  free(first);
  free(on);
  if (!ok && (!err || !*err))
    psp_error_set(err, PSP_ERR_NOMEM, "out of memory in the segmentation");
  return ok;
}
