/*
 * noise.h — noise estimation and Rician bias correction of Dixon magnitudes
 * (src/dixon/noise.c; internal, not installed).
 */
#ifndef PSP_DIXON_NOISE_H
#define PSP_DIXON_NOISE_H

#include "core/internal.h"

#define TAB_N 330 /* correction table entries: t in [-2, 64) in steps of 0.2 */

/* Estimates the per-component sigma of both images from their common
 * background (sig = 0 and a warning when it cannot); *bg_out: the
 * background mask (caller frees; NULL when there is none); *fw_max: the
 * largest raw F + W, a + b (fw_sum) or a, at least 0; *fw_integer: every
 * raw F + W is an integer and fw_max <= PSP_DIXON_LUT_MAX. Fails on
 * non-finite values ("<what> images contain NaN or infinite values") or out
 * of memory. One pass over the images before the background is known, two
 * with it, one or two for the histograms of both images. background. */
#define PSP_DIXON_LUT_MAX (1 << 20)
bool psp_dixon_estimate_noise(const psp_volume *a, const psp_volume *b, const char *what,
                              bool correction_wanted, bool fw_sum, psp_context *ctx, double sig[2],
                              uint8_t **bg_out, double *fw_max, bool *fw_integer, psp_error **err);
/* Builds the correction table tab[TAB_N] (units of sigma). */
bool psp_dixon_correction_table(double *tab, psp_error **err);
/* Raw a + b below which a voxel cannot reach the floor after correction. */
double psp_dixon_skip_level(const double *tab, double floor_v, double sig_a, double sig_b);
/* Corrected magnitude of m into out, guided by the other image g; voxels
 * with s1 (+ s2) below skip get the bias at A = 0. */
void psp_dixon_rician_correct(const float *m, const float *g, float *out, const int64_t d[3],
                              double sigma, const double *tab, const float *s1, const float *s2,
                              double skip);
/* Which implementation of the correction's window selection runs: the
 * fastest the CPU supports, or the portable one (tests: same results). */
typedef enum { PSP_DIXON_KERNEL_AUTO, PSP_DIXON_KERNEL_GENERIC } psp_dixon_kernel;
void psp_dixon_rician_correct_with(const float *m, const float *g, float *out, const int64_t d[3],
                                   double sigma, const double *tab, const float *s1,
                                   const float *s2, double skip, psp_dixon_kernel kernel);
/* FF = f / (w + f) where w + f >= floor_v, NaN elsewhere (n voxels); also
 * copies w and f to wc and fc when wc is given. */
void psp_dixon_fill_ff(const float *w, const float *f, float *ff, int64_t n, double floor_v,
                       float *wc, float *fc);
/* Test hook: the noise estimation's per-voxel passes over a, b (the scan,
 * then the background pass at thr into bg) with the chosen kernels. out:
 * non-finite voxels, extremes of a + b > 0, largest a, negatives of a, b,
 * non-integers of a, b, background voxels, zeros of a, b in it, largest
 * a, b in it. */
void psp_dixon_passes(const float *a, const float *b, int64_t n, double thr,
                      psp_dixon_kernel kernel, double out[13], uint8_t *bg);
/* Histogram (caller frees; NULL: out of memory) of log(s), s = a + b > 0
 * (summed in double), in PSP_DIXON_LOG_NB bins over [lmin, lmax] = the logs
 * of the extremes smin, smax of s: bin (int)((log(s) - lmin) / (lmax -
 * lmin) * NB), at most NB - 1. integer: every a and b is an integer
 * (src/dixon/loghist.c: the same counts without a log per voxel). */
#define PSP_DIXON_LOG_NB 1024
int64_t *psp_dixon_log_hist(const float *a, const float *b, int64_t n, double smin, double smax,
                            double lmin, double lmax, bool integer);
/* Adds one thread's histogram (loc; NULL: its allocation failed) into h;
 * called by every thread of a parallel region. */
void psp_dixon_hist_merge(int64_t *h, const int64_t *loc, int nb, bool *failed);
/* In-place Cholesky solve of the symmetric positive definite n x n system
 * a x = b (x in b); false when a is not positive definite. */
bool psp_dixon_cholesky_solve(double *a, double *b, int n);

#endif
