/*
 * DESIGN: synthetic lumbar Dixon phantom with known truth, for tests, demos
 * and the sample scans. The anatomy is analytic: every tissue is a region
 * defined by approximate signed distances (ellipses, boxes, an annulus) in a
 * patient frame x -> Left, y -> Posterior (mm from the body centre) and
 * u (mm above the S1 upper endplate), evaluated on a 3 x 3 x 3 sub-voxel
 * grid so that thin structures (1-2 mm fat planes, cortical rims, endplates)
 * produce realistic partial volume. Along u the spine is a fixed layout:
 * sacrum below u = 0, then per level a 10 mm disc and a 30 mm vertebra
 * (L5/S1, L5, L4/L5, L4, ... L1, T12/L1, T12, ...); muscles, psoas and
 * quadratus lumborum change smoothly with u. The erector spinae's front
 * rises backwards lateral of the multifidus (0.30-0.45 mm per mm, per side;
 * the MuscleMap template's curve is about 0.4), with quadratus lumborum in
 * front of it behind the plane of the transverse processes and a thin fat
 * plane between them; flat at the sacrum, full from 40 mm above S1.
 *
 * Signal model (what the FF module assumes): tissue total signal S and fat
 * fraction FF give W0 = S(1-FF), F0 = S FF (averaged over sub-voxels), times
 * a smooth multiplicative bias field B. Complex echoes IP = (W0+F0)B + n1,
 * OP = (W0-F0)B + n2 with complex Gaussian noise of sigma = 1000 / snr per
 * component; water = |IP+OP|/2, fat = |IP-OP|/2, inphase = |IP|,
 * outphase = |OP|. Images are rounded to integers here (values stay well
 * inside uint16 for the allowed option ranges, so no scaling is applied) so
 * the volumes returned equal what is written. Truth (labels, ff_truth, the
 * per-slice table) is noise-free and computed before rounding.
 *
 * Randomness: a splitmix64 stream seeded by opt->seed draws the anatomical
 * jitter and the smooth-field waves serially; voxel noise is counter-based
 * (hash of seed and voxel index), so the output is identical for the same
 * seed at any OpenMP thread count. Work is parallel over slices, each slice
 * writing only its own voxels and its own statistics rows.
 */
#include "core/internal.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PSP_PI 3.14159265358979323846
#define NWAVE 12  /* plane waves of each smooth random field */
#define NBIN 2048 /* histogram bins for the streak thresholds */
#define FIELD_LIM 6.0
#define SUB 3 /* sub-samples per voxel along each axis */
#define VERT_MM 30.0
#define DISC_MM 10.0
#define LEVEL_MM (VERT_MM + DISC_MM)

enum {
  T_BG = 0,
  T_SUBCUT,
  T_FATPLANE,
  T_PARAFAT,
  T_VISCFAT,
  T_VISCERA,
  T_WALL,
  T_PSOAS,
  T_QL,
  T_MARROW,
  T_CORTEX,
  T_NUCLEUS,
  T_ANNULUS,
  T_CSF,
  T_LIGAMENT,
  T_MUSCLE,
};

enum { Z_SACRUM = 0, Z_DISC = 1, Z_VERTEBRA = 2 };

enum { V_WATER = 0, V_FAT, V_INPHASE, V_OUTPHASE, V_LABELS, V_FFTRUTH, V_COUNT };

static const char *const VOLUME_NAMES[V_COUNT] = {"water",    "fat",    "inphase",
                                                  "outphase", "labels", "ff_truth"};

/* Anatomy of one phantom: fixed layout plus seeded jitter. */
typedef struct anat {
  double body_a, body_b;             /* semi-axes of the body outline */
  double fat_lat, fat_ant, fat_post; /* subcutaneous fat thickness */
  double yv;                         /* vertebral body centre */
  double yc, rc;                     /* spinal canal centre and radius */
  double lam_out;                    /* lamina outer radius about the canal */
  double y_tp_back;                  /* posterior surface of the transverse processes */
  double y_tip;                      /* spinous process tip */
  double wall_mm;                    /* abdominal wall muscle thickness */
  double groove_mm;                  /* depth of the posterior midline groove */
  double plane_mm, split_mm;         /* epimuscular and MF/ES fat planes */
  double split_tilt;                 /* slope of the MF/ES plane (dx/dy) */
  double mf_scale[2], es_scale[2];   /* per side (0 left, 1 right) */
  double marrow_jit;
  double t_s1;                      /* mm above slice 0 of the S1 upper endplate */
  double wave_s[NWAVE][4];          /* streak field: kx, ky, kz, phase */
  double wave_v[NWAVE][4];          /* visceral fat field */
  double sgrad[PSP_LABEL_COUNT][2]; /* uneven streak density per muscle */
  double bias_c[6];
  double bias_zmid, bias_zhalf;
  double es_rise[2]; /* slope of the erector spinae's front lateral of the multifidus */
} anat;

/* Everything that depends only on the height u. */
typedef struct zpar {
  double u, t;
  int kind, seg;
  double pos;          /* 0..1 inside a vertebra */
  double zin;          /* mm inside the current vertebra / disc along z */
  double facet_margin; /* > 0 near a disc: articular processes present */
  double body_a, body_b, fascia_y0;
  double vb_a, vb_b, tp_len, marrow_ff;
  double w_mf[2], w_es[2];
  double psoas_r, psoas_x, psoas_y;
  double ql_s;
  double es_rise_s; /* 0 at the sacrum .. 1 from 40 mm above S1: the front's rise */
} zpar;

typedef struct tissue {
  int type;
  int label;    /* 1..4 for the muscles, else 0 */
  double field; /* streak field value (muscle only) */
} tissue;

struct psp_phantom {
  psp_phantom_options opt;
  psp_volume *vol[V_COUNT];
  int64_t nz;
  double *stats; /* nz x 4 labels x {n, sum ff, sum F*B, sum (W+F)*B} */
  char (*structure)[16];
};

/* ------------------------------------------------------------------------ */
/* Random numbers                                                            */
/* ------------------------------------------------------------------------ */

static uint64_t psp_mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static uint64_t rng_next(uint64_t *state) {
  *state += 0x9E3779B97F4A7C15ull;
  return psp_mix64(*state);
}

/* Uniform in (0, 1). */
static double u01(uint64_t x) {
  return ((double)(x >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

static double rng_uniform(uint64_t *state, double lo, double hi) {
  return lo + (hi - lo) * u01(rng_next(state));
}

/* Four standard normal values for voxel idx (counter-based: any order). */
static void voxel_normals(uint64_t key, int64_t idx, double n[4]) {
  uint64_t base = (uint64_t)idx * 4u;
  for (int p = 0; p < 2; p++) {
    double a = u01(psp_mix64(key + (base + 2u * (uint64_t)p) * 0x9E3779B97F4A7C15ull));
    double b = u01(psp_mix64(key + (base + 2u * (uint64_t)p + 1u) * 0x9E3779B97F4A7C15ull));
    double r = sqrt(-2.0 * log(a));
    n[2 * p] = r * cos(2.0 * PSP_PI * b);
    n[2 * p + 1] = r * sin(2.0 * PSP_PI * b);
  }
}

/* ------------------------------------------------------------------------ */
/* Geometry helpers: approximate signed distances, positive inside (mm)      */
/* ------------------------------------------------------------------------ */

static double clampd(double v, double lo, double hi) {
  return v < lo ? lo : v > hi ? hi : v;
}

static double sd_ellipse(double px, double py, double a, double b) {
  double f = 1.0 - (px * px) / (a * a) - (py * py) / (b * b);
  double gx = 2.0 * px / (a * a), gy = 2.0 * py / (b * b);
  double g = sqrt(gx * gx + gy * gy);
  return g > 1e-12 ? f / g : 1e9;
}

static double sd_box(double px, double py, double x0, double x1, double y0, double y1) {
  return fmin(fmin(px - x0, x1 - px), fmin(py - y0, y1 - py));
}

static double field_value(const double w[NWAVE][4], double x, double y, double t) {
  double s = 0;
  for (int m = 0; m < NWAVE; m++)
    s += cos(w[m][0] * x + w[m][1] * y + w[m][2] * t + w[m][3]);
  return s * sqrt(2.0 / NWAVE);
}

/* ------------------------------------------------------------------------ */
/* Levels along the spine                                                    */
/* ------------------------------------------------------------------------ */

/* seg: -1 = S2 and below, 0 = S1, 1..5 = L5..L1, 6..17 = T12..T1, then C. */
static void seg_name(int seg, char *out, size_t n) {
  if (seg < 0)
    snprintf(out, n, "S2");
  else if (seg == 0)
    snprintf(out, n, "S1");
  else if (seg <= 5)
    snprintf(out, n, "L%d", 6 - seg);
  else if (seg <= 17)
    snprintf(out, n, "T%d", 18 - seg);
  else
    snprintf(out, n, "C%d", seg <= 24 ? 25 - seg : 1);
}

static void structure_name(const zpar *z, char out[16]) {
  if (z->kind == Z_DISC) {
    char lo[8], hi[8];
    seg_name(z->seg, lo, sizeof lo);
    seg_name(z->seg + 1, hi, sizeof hi);
    snprintf(out, 16, "%s/%s", hi, lo);
  } else {
    seg_name(z->seg, out, 16);
  }
}

static double vb_semi_a(int seg) {
  return clampd(26.0 - 1.0 * seg, 17.0, 26.0);
}
static double vb_semi_b(int seg) {
  return clampd(17.3 - 0.3 * seg, 14.0, 17.5);
}

static double tp_length(int seg) {
  static const double len[6] = {0, 41, 45, 48, 43, 37}; /* L5..L1 tips from the midline */
  if (seg >= 1 && seg <= 5) return len[seg];
  return 24.0; /* thoracic: short, the ribs are not modelled */
}

static void zpar_at(const anat *an, double t, zpar *z) {
  memset(z, 0, sizeof *z);
  double u = t - an->t_s1;
  z->u = u;
  z->t = t;
  if (u < 0) {
    z->kind = Z_SACRUM;
    z->seg = u >= -VERT_MM ? 0 : -1;
    z->zin = -u; /* below the S1 endplate */
    z->facet_margin = 9.0 - (DISC_MM / 2 - u);
  } else {
    int n = (int)floor(u / LEVEL_MM);
    double r = u - LEVEL_MM * n;
    if (r < DISC_MM) {
      z->kind = Z_DISC;
      z->seg = n;
      z->zin = fmin(r, DISC_MM - r);
    } else {
      z->kind = Z_VERTEBRA;
      z->seg = n + 1;
      z->pos = (r - DISC_MM) / VERT_MM;
      z->zin = fmin(r - DISC_MM, LEVEL_MM - r);
    }
    double dc = fabs(r - DISC_MM / 2);
    if (r > LEVEL_MM - DISC_MM / 2) dc = LEVEL_MM + DISC_MM / 2 - r;
    z->facet_margin = 9.0 - dc;
  }
  int sv = z->kind == Z_DISC ? z->seg + 1 : (z->seg < 1 ? 1 : z->seg);
  z->vb_a = z->kind == Z_DISC ? 0.5 * (vb_semi_a(sv) + vb_semi_a(z->seg)) + 1.0 : vb_semi_a(sv);
  z->vb_b = z->kind == Z_DISC ? vb_semi_b(sv) + 1.0 : vb_semi_b(sv);
  z->tp_len = tp_length(z->seg);
  z->marrow_ff = clampd(0.48 - 0.03 * (z->seg < 0 ? 0 : z->seg) + an->marrow_jit, 0.30, 0.50);
  /* body slightly wider towards the pelvis */
  double wf = 1.0 + 0.04 * clampd((100.0 - u) / 150.0, -1.0, 1.0);
  z->body_a = an->body_a * wf;
  z->body_b = an->body_b;
  z->fascia_y0 = z->body_b - an->fat_post;
  /* multifidus larger caudally, erector spinae larger cranially; in the
   * sacral region the erector spinae thins to its aponeurosis */
  double s = clampd(u / 200.0, 0.0, 1.2);
  double w_mf = 29.0 - 9.0 * s, w_es = 40.0 + 18.0 * s;
  if (u < 0) {
    w_mf = fmin(32.0, 29.0 - 0.06 * u);
    w_es = fmax(12.0, 40.0 + 0.5 * u);
  }
  for (int side = 0; side < 2; side++) {
    z->w_mf[side] = w_mf * an->mf_scale[side];
    z->w_es[side] = w_es * an->es_scale[side];
  }
  double r = 8.0 + 14.0 * clampd((200.0 - u) / 130.0, 0.0, 1.0);
  z->psoas_r = r;
  if (u < 0) {
    z->psoas_x = 48.0 + 0.5 * r;
    z->psoas_y = an->yv - 0.4 * fmin(-u, 60.0);
  } else {
    z->psoas_x = z->vb_a + 0.95 * r + 2.0;
    z->psoas_y = an->yv + 0.15 * r;
  }
  z->ql_s = clampd((u - 50.0) / 60.0, 0.0, 1.0);
  z->es_rise_s = clampd(u / 40.0, 0.0, 1.0);
}

/* ------------------------------------------------------------------------ */
/* Tissue classification of one point                                        */
/* ------------------------------------------------------------------------ */

/* Signed distance of the bones at (x, y) (> 0 inside bone). */
static double bone_sd(const anat *an, const zpar *z, double x, double y) {
  double d = fabs(x), sd = -1e9;
  if (z->facet_margin > 0)
    sd = fmax(sd, fmin(sd_box(d, y, 12.0, 24.0, an->yc + 1.0, an->yc + 13.0), z->facet_margin));
  if (z->kind == Z_SACRUM) {
    double top = -z->u;
    sd = fmax(sd, fmin(sd_ellipse(x, y - (an->yv + 2.0), 44.0, 17.0), top));
    sd = fmax(sd, fmin(sd_box(d, y, -1.0, 32.0, an->yc - 4.0, an->yc + 10.0), top));
    sd = fmax(sd, fmin(sd_box(d, y, -1.0, 3.0, an->yc + 9.0, an->yc + 24.0), top));
    return sd;
  }
  if (z->kind != Z_VERTEBRA) return sd;
  double h = VERT_MM, p = z->pos;
  /* vertebral body, with the endplates as its z rim */
  sd = fmax(sd, fmin(sd_ellipse(x, y - an->yv, z->vb_a, z->vb_b), z->zin));
  /* pedicles */
  double zp = fmin(p - 0.30, 0.85 - p) * h;
  if (zp > -2.0)
    sd = fmax(sd, fmin(sd_box(d, y, 9.0, 16.0, an->yv + z->vb_b - 4.0, an->yc + 5.0), zp));
  /* lamina: posterior half-ring about the canal */
  double r = hypot(x, y - an->yc);
  double lam = fmin(fmin(r - (an->rc + 1.0), an->lam_out - r), y - (an->yc - 3.0));
  sd = fmax(sd, fmin(lam, fmin(p, 1.0 - p) * h + 1.0));
  /* spinous process */
  double zs = fmin(p - 0.05, 0.85 - p) * h;
  if (zs > -2.0)
    sd = fmax(sd, fmin(sd_box(d, y, -1.0, 3.5, an->yc + an->lam_out - 4.0, an->y_tip), zs));
  /* transverse processes */
  double zt = fmin(p - 0.35, 0.80 - p) * h;
  if (zt > -2.0) sd = fmax(sd, fmin(sd_box(d, y, 12.0, z->tp_len, an->yc - 3.0, an->yc + 5.0), zt));
  return sd;
}

/* Erector spinae: an ellipse tapering towards its lateral tip (implicit
 * function, > 0 inside). */
static double es_shape(const zpar *z, int side, double d, double y, double y0, double y1) {
  double cx = 4.0 + z->w_mf[side] + 0.5 * z->w_es[side] - 2.0, ax = 0.5 * z->w_es[side] + 1.0;
  double X = (d - cx) / ax;
  double ay = 0.5 * (y1 - y0) * (1.0 - 0.35 * clampd(X, 0.0, 1.0));
  double Y = (y - 0.5 * (y0 + y1)) / ay;
  return 1.0 - X * X - Y * Y;
}

/* The paraspinal compartment on one side: a multifidus ellipse on the
 * lamina beside the spinous process and a tapering erector spinae ellipse
 * lateral to it, split by an oblique fat plane, wrapped in a thin
 * epimuscular fat plane, clipped by bone (priority in classify) and by the
 * subcutaneous fat. Returns the tissue type, or -1 outside. */
static int compartment(const anat *an, const zpar *z, double x, double y, double sd_inner,
                       tissue *out) {
  int side = x > 0 ? 0 : 1; /* x > 0 is patient left */
  double d = fabs(x);
  double x_sp = y > an->y_tip ? 1.5 : 4.0;
  if (d <= x_sp || sd_inner <= 0 || y <= an->y_tp_back) return -1;
  if (d > 4.0 + z->w_mf[side] + z->w_es[side] + 2.0) return -1;
  double y_ant;
  if (z->kind == Z_SACRUM) {
    y_ant = d < 34.0 ? an->yc + 10.5 : an->y_tp_back;
  } else {
    double arc = an->lam_out * an->lam_out - d * d;
    y_ant = fmax(an->yc + sqrt(arc > 0 ? arc : 0) + 0.5, an->y_tp_back);
  }
  if (y <= y_ant) return -1;
  double y_f = z->fascia_y0, y0 = an->y_tp_back;
  /* multifidus ellipse */
  double mcx = 4.0 + 0.5 * z->w_mf[side];
  double sd_mf =
      sd_ellipse(d - mcx, y - 0.5 * (y0 + y_f), 0.5 * z->w_mf[side] + 1.0, 0.5 * (y_f - y0) + 1.0);
  /* erector spinae: signed distance from the implicit function's gradient */
  double y1 = y_f - 3.0, h = 0.25;
  double f = es_shape(z, side, d, y, y0, y1);
  double gx = (es_shape(z, side, d + h, y, y0, y1) - es_shape(z, side, d - h, y, y0, y1)) / (2 * h);
  double gy = (es_shape(z, side, d, y + h, y0, y1) - es_shape(z, side, d, y - h, y0, y1)) / (2 * h);
  double g = sqrt(gx * gx + gy * gy);
  double sd_es = g > 1e-9 ? f / g : (f > 0 ? 1e9 : -1e9);
  double sd = fmax(sd_mf, sd_es);
  if (sd <= 0) return -1;
  if (fmin(sd, sd_inner) < an->plane_mm) return T_FATPLANE;
  double ym = 0.5 * (y0 + y_f);
  double xb = 4.0 + z->w_mf[side] + an->split_tilt * (y - ym);
  double ms = (xb - d) / sqrt(1.0 + an->split_tilt * an->split_tilt);
  if (fabs(ms) < 0.5 * an->split_mm) return T_FATPLANE;
  bool mf = ms > 0;
  if (!mf) {
    /* the erector spinae's front rises laterally, as the middle layer of
     * the thoracolumbar fascia runs from the transverse processes back to
     * the lateral raphe (about 0.4 mm per mm in the MuscleMap template);
     * in front of it, behind the plane of the transverse processes,
     * quadratus lumborum, with only a thin fat plane between them. None at
     * the sacrum, where the erector spinae arises from the bone. */
    double dr = 4.0 + z->w_mf[side] + 2.0;
    double yfl = y0 + an->es_rise[side] * z->es_rise_s * fmax(0.0, d - dr);
    if (y <= yfl) return y > yfl - an->plane_mm ? T_FATPLANE : T_QL;
  }
  out->label = mf ? (side == 0 ? PSP_LABEL_MF_LEFT : PSP_LABEL_MF_RIGHT)
                  : (side == 0 ? PSP_LABEL_ES_LEFT : PSP_LABEL_ES_RIGHT);
  /* streak field: waves elongated along the fibres (z), plus a per-muscle
   * gradient so the infiltration is uneven */
  double ux = (d - 4.0) / (z->w_mf[side] + z->w_es[side]) * 2.0 - 1.0;
  double uy = (y - ym) / (0.5 * (y_f - y0));
  out->field = field_value(an->wave_s, x, y, z->t) + an->sgrad[out->label][0] * ux +
               an->sgrad[out->label][1] * uy;
  return T_MUSCLE;
}

static void classify(const anat *an, const zpar *z, double x, double y, tissue *out) {
  out->type = T_BG;
  out->label = 0;
  out->field = 0;
  /* posterior midline groove between the paraspinal muscles */
  double groove = y > 0 ? an->groove_mm * exp(-x * x / (2.0 * 22.0 * 22.0)) : 0.0;
  if (sd_ellipse(x, y + groove, z->body_a, z->body_b) <= 0) return;
  double bi = y >= 0 ? z->body_b - an->fat_post : z->body_b - an->fat_ant;
  double sd_inner = sd_ellipse(x, y + 0.5 * groove, z->body_a - an->fat_lat, bi);
  if (sd_inner <= 0) {
    out->type = T_SUBCUT;
    return;
  }
  double d = fabs(x);
  int side = x > 0 ? 0 : 1; /* x > 0 is patient left */
  double rc = z->kind == Z_SACRUM ? 6.0 : an->rc;
  if (hypot(x, y - an->yc) < rc) {
    out->type = T_CSF;
    return;
  }
  double bsd = bone_sd(an, z, x, y);
  if (bsd > 0) {
    out->type = bsd > 1.5 ? T_MARROW : T_CORTEX;
    return;
  }
  if (z->kind == Z_DISC) {
    double e = sd_ellipse(x, y - an->yv, z->vb_a, z->vb_b);
    if (e > 0) {
      out->type =
          sd_ellipse(x, y - an->yv, 0.65 * z->vb_a, 0.6 * z->vb_b) > 0 ? T_NUCLEUS : T_ANNULUS;
      return;
    }
  }
  bool spinous_here = z->kind == Z_VERTEBRA && z->pos > 0.05 && z->pos < 0.85;
  if (z->kind != Z_SACRUM && !spinous_here && d < 2.5 && y > an->yc + an->lam_out - 2.0 &&
      y < an->y_tip - 3.0) {
    out->type = T_LIGAMENT;
    return;
  }
  int c = compartment(an, z, x, y, sd_inner, out);
  if (c >= 0) {
    out->type = c;
    return;
  }
  double ps = sd_ellipse(d - z->psoas_x, y - z->psoas_y, z->psoas_r, 0.85 * z->psoas_r);
  if (ps > 0) {
    out->type = ps > 1.0 ? T_PSOAS : T_PARAFAT;
    return;
  }
  if (z->ql_s > 0.05) {
    double qx = 4.0 + z->w_mf[side] + 0.7 * z->w_es[side] + 6.0;
    if (sd_ellipse(d - qx, y - 34.0, 14.0 * z->ql_s, 7.0 * z->ql_s) > 0) {
      out->type = T_QL;
      return;
    }
  }
  if (sd_inner < an->wall_mm && (y < 30.0 || d > 30.0)) {
    out->type = T_WALL;
    return;
  }
  if (sd_ellipse(x, y - 60.0, 4.0 + z->w_mf[side] + z->w_es[side] + 20.0, 45.0) > 0) {
    out->type = T_PARAFAT; /* retroperitoneal / paravertebral fat */
    return;
  }
  out->type = field_value(an->wave_v, x, y, z->t) > 1.2 ? T_VISCFAT : T_VISCERA;
}

/* Total signal S (proton-density-like, muscle ~1000) and FF per tissue;
 * marrow and the two muscles are set per level / by the options. */
static const struct {
  double S, ff;
} TISSUE_SIGNAL[] = {
    [T_BG] = {0, 0},
    [T_SUBCUT] = {1200, 0.95},
    [T_FATPLANE] = {1200, 0.90},
    [T_PARAFAT] = {1200, 0.92},
    [T_VISCFAT] = {1150, 0.90},
    [T_VISCERA] = {700, 0.05},
    [T_WALL] = {1000, 0.06},
    [T_PSOAS] = {1000, 0.04},
    [T_QL] = {1000, 0.06},
    [T_MARROW] = {1000, 0},
    [T_CORTEX] = {50, 0.30},
    [T_NUCLEUS] = {900, 0.01},
    [T_ANNULUS] = {600, 0.02},
    [T_CSF] = {1100, 0.0},
    [T_LIGAMENT] = {300, 0.05},
};

static void tissue_signal(const psp_phantom_options *o, const zpar *z, const tissue *ts,
                          const double thr[PSP_LABEL_COUNT], double *S, double *ff) {
  if (ts->type != T_MUSCLE) {
    *S = TISSUE_SIGNAL[ts->type].S;
    *ff = ts->type == T_MARROW ? z->marrow_ff : TISSUE_SIGNAL[ts->type].ff;
    return;
  }
  int l = ts->label;
  double base = (l == PSP_LABEL_MF_LEFT)    ? o->ff_multifidus[0]
                : (l == PSP_LABEL_MF_RIGHT) ? o->ff_multifidus[1]
                : (l == PSP_LABEL_ES_LEFT)  ? o->ff_erector[0]
                                            : o->ff_erector[1];
  *ff = ts->field > thr[l] ? o->streak_ff : base;
  *S = 1000.0 + 200.0 * *ff; /* fat has the higher proton density */
}

/* ------------------------------------------------------------------------ */
/* Options, anatomy and bias                                                 */
/* ------------------------------------------------------------------------ */

void psp_phantom_options_default(psp_phantom_options *o) {
  memset(o, 0, sizeof *o);
  o->seed = 1;
  o->dims[0] = 160;
  o->dims[1] = 128;
  o->dims[2] = 44;
  o->spacing[0] = 2.5;
  o->spacing[1] = 2.5;
  o->spacing[2] = 5.0;
  o->snr = 25.0;
  o->ff_multifidus[0] = 0.08;
  o->ff_multifidus[1] = 0.10;
  o->ff_erector[0] = 0.12;
  o->ff_erector[1] = 0.15;
  o->streak_ff = 0.60;
  o->streak_share = 0.10;
  o->bias_amplitude = 0.20;
  for (int a = 0; a < 3; a++) {
    o->orientation.file_axis[a] = a;
    o->orientation.flip[a] = false;
  }
  o->oblique_deg = 0.0;
  o->roll_deg = 0.0;
}

static bool check_range(double v, double lo, double hi, const char *what, psp_error **err) {
  if (!(v >= lo && v <= hi))
    return psp_error_set(err, PSP_ERR_USAGE, "phantom: %s = %g is outside %g..%g", what, v, lo, hi);
  return true;
}

static bool check_options(const psp_phantom_options *o, psp_context *ctx, psp_error **err) {
  static const char *const axis[3] = {"x", "y", "z"};
  for (int a = 0; a < 3; a++) {
    if (o->dims[a] < 4 || o->dims[a] > 4096)
      return psp_error_set(err, PSP_ERR_USAGE, "phantom: dims along %s = %lld; use 4..4096 voxels",
                           axis[a], (long long)o->dims[a]);
    if (!(o->spacing[a] >= 0.1 && o->spacing[a] <= 50.0))
      return psp_error_set(err, PSP_ERR_USAGE, "phantom: spacing along %s = %g mm; use 0.1..50",
                           axis[a], o->spacing[a]);
  }
  int64_t n = o->dims[0] * o->dims[1] * o->dims[2];
  if (n > psp_context_max_voxels(ctx))
    return psp_error_set(err, PSP_ERR_LIMIT, "phantom: %lld voxels exceed the limit of %lld",
                         (long long)n, (long long)psp_context_max_voxels(ctx));
  if (!(o->snr == 0.0 || (o->snr >= 1.0 && o->snr <= 1e5)))
    return psp_error_set(err, PSP_ERR_USAGE, "phantom: snr = %g; use 0 (no noise) or 1..100000",
                         o->snr);
  if (!check_range(o->ff_multifidus[0], 0, 1, "left multifidus FF", err) ||
      !check_range(o->ff_multifidus[1], 0, 1, "right multifidus FF", err) ||
      !check_range(o->ff_erector[0], 0, 1, "left erector spinae FF", err) ||
      !check_range(o->ff_erector[1], 0, 1, "right erector spinae FF", err) ||
      !check_range(o->streak_ff, 0, 1, "streak FF", err) ||
      !check_range(o->streak_share, 0, 0.9, "streak share", err) ||
      !check_range(o->bias_amplitude, 0, 0.9, "bias amplitude", err) ||
      !check_range(o->oblique_deg, -40, 40, "oblique angle (degrees)", err) ||
      !check_range(o->roll_deg, -30, 30, "roll angle (degrees)", err))
    return false;
  bool seen[3] = {false, false, false};
  for (int a = 0; a < 3; a++) {
    int f = o->orientation.file_axis[a];
    if (f < 0 || f > 2 || seen[f])
      return psp_error_set(err, PSP_ERR_USAGE,
                           "phantom: orientation file axes are not a permutation of 0, 1, 2");
    seen[f] = true;
  }
  return true;
}

static void make_waves(uint64_t *rs, double w[NWAVE][4], double lmin, double lmax, double lzmin,
                       double lzmax) {
  for (int m = 0; m < NWAVE; m++) {
    double th = rng_uniform(rs, 0, 2 * PSP_PI);
    double kin = 2 * PSP_PI / rng_uniform(rs, lmin, lmax);
    double kz = 2 * PSP_PI / rng_uniform(rs, lzmin, lzmax);
    if (rng_uniform(rs, 0, 1) < 0.5) kz = -kz;
    w[m][0] = kin * cos(th);
    w[m][1] = kin * sin(th);
    w[m][2] = kz;
    w[m][3] = rng_uniform(rs, 0, 2 * PSP_PI);
  }
}

static void make_anatomy(const psp_phantom_options *o, anat *an) {
  uint64_t rs = psp_mix64(o->seed ^ 0x5053505048414e54ull); /* "PSPPHANT" */
  double body = rng_uniform(&rs, 0.95, 1.05);
  an->body_a = 160.0 * body * rng_uniform(&rs, 0.97, 1.03);
  an->body_b = 115.0 * body * rng_uniform(&rs, 0.97, 1.03);
  double fat = rng_uniform(&rs, 0.85, 1.2);
  an->fat_lat = 18.0 * fat;
  an->fat_ant = 20.0 * fat;
  an->fat_post = 24.0 * fat;
  an->yv = 10.0;
  an->rc = 8.0;
  an->yc = an->yv + vb_semi_b(3) + 1.0 + an->rc;
  an->lam_out = 15.0;
  an->y_tp_back = an->yc + 8.0;
  an->y_tip = an->body_b - an->fat_post - 12.0;
  an->wall_mm = 12.0;
  an->groove_mm = rng_uniform(&rs, 6.0, 12.0);
  an->plane_mm = rng_uniform(&rs, 1.3, 1.8);
  an->split_mm = rng_uniform(&rs, 1.3, 2.0);
  an->split_tilt = rng_uniform(&rs, 0.15, 0.35);
  double mf = rng_uniform(&rs, 0.92, 1.08), es = rng_uniform(&rs, 0.92, 1.08);
  for (int s = 0; s < 2; s++) {
    an->mf_scale[s] = mf * rng_uniform(&rs, 0.96, 1.04);
    an->es_scale[s] = es * rng_uniform(&rs, 0.96, 1.04);
  }
  an->marrow_jit = rng_uniform(&rs, -0.02, 0.02);
  an->t_s1 = 20.0;
  make_waves(&rs, an->wave_s, 5.0, 14.0, 40.0, 120.0);
  make_waves(&rs, an->wave_v, 25.0, 60.0, 40.0, 100.0);
  for (int l = 0; l < PSP_LABEL_COUNT; l++) {
    double th = rng_uniform(&rs, 0, 2 * PSP_PI);
    an->sgrad[l][0] = 0.8 * cos(th);
    an->sgrad[l][1] = 0.8 * sin(th);
  }
  /* bias: brighter posteriorly (spine coil) plus random low-order terms;
   * coefficients normalised so |b| <= 1 over the body's bounding box */
  an->bias_c[0] = rng_uniform(&rs, 0.4, 0.6);
  double sum = an->bias_c[0];
  for (int c = 1; c < 6; c++) {
    an->bias_c[c] = rng_uniform(&rs, -0.3, 0.3);
    sum += fabs(an->bias_c[c]);
  }
  for (int c = 0; c < 6; c++)
    an->bias_c[c] /= sum;
  double span = (double)(o->dims[2] - 1) * o->spacing[2];
  an->bias_zmid = 0.5 * span;
  an->bias_zhalf = fmax(0.5 * span, 50.0);
  /* drawn last, so the draws above stay those of earlier versions */
  for (int s = 0; s < 2; s++)
    an->es_rise[s] = rng_uniform(&rs, 0.30, 0.45);
}

static double bias_at(const anat *an, double amplitude, double x, double y, double t) {
  double X = clampd(x / an->body_a, -1, 1), Y = clampd(y / an->body_b, -1, 1);
  double Z = clampd((t - an->bias_zmid) / an->bias_zhalf, -1, 1);
  const double *c = an->bias_c;
  double b = c[0] * Y + c[1] * X + c[2] * X * Y + c[3] * (2 * X * X - 1) + c[4] * (2 * Y * Y - 1) +
             c[5] * Z;
  return 1.0 + amplitude * b;
}

/* ------------------------------------------------------------------------ */
/* Generation                                                                */
/* ------------------------------------------------------------------------ */

static void make_affine(const psp_phantom_options *o, double A[4][4]) {
  double th = o->oblique_deg * PSP_PI / 180.0, c = cos(th), s = sin(th);
  double sx = o->spacing[0], sy = o->spacing[1], sz = o->spacing[2];
  memset(A, 0, sizeof(double) * 16);
  /* R_z(th) * diag(-sx, -sy, sz): i -> Left, j -> Posterior, k -> Superior */
  A[0][0] = -sx * c;
  A[1][0] = -sx * s;
  A[0][1] = sy * s;
  A[1][1] = -sy * c;
  A[2][2] = sz;
  double ci = 0.5 * (double)(o->dims[0] - 1), cj = 0.5 * (double)(o->dims[1] - 1);
  A[0][3] = -(A[0][0] * ci + A[0][1] * cj);
  A[1][3] = -(A[1][0] * ci + A[1][1] * cj);
  A[2][3] = -0.5 * (double)(o->dims[2] - 1) * sz;
  A[3][3] = 1.0;
}

/* Streak thresholds: the (1 - share) quantile of the streak field over each
 * muscle, from a histogram at voxel centres (deterministic integer sums). */
/* The patient frame of image offset (x, y) (mm from the grid's centre):
 * the anatomy rolled by roll_deg in the image plane (none at 0: exact). */
static inline void roll_xy(const psp_phantom_options *o, double *x, double *y) {
  if (o->roll_deg == 0.0) return;
  double t = o->roll_deg * PSP_PI / 180.0, c = cos(t), s = sin(t), a = *x, b = *y;
  *x = c * a + s * b;
  *y = -s * a + c * b;
}

static bool streak_thresholds(const psp_phantom_options *o, const anat *an, int nthreads,
                              double thr[PSP_LABEL_COUNT], psp_error **err) {
  for (int l = 0; l < PSP_LABEL_COUNT; l++)
    thr[l] = INFINITY;
  if (o->streak_share <= 0) return true;
  const int64_t nx = o->dims[0], ny = o->dims[1], nz = o->dims[2];
  int64_t *hist = psp_calloc((size_t)nz * PSP_LABEL_COUNT * NBIN, sizeof *hist, err);
  if (!hist) return false;
  double ci = 0.5 * (double)(nx - 1), cj = 0.5 * (double)(ny - 1);
#pragma omp parallel for schedule(dynamic) num_threads(nthreads)
  for (int64_t k = 0; k < nz; k++) {
    zpar z;
    zpar_at(an, (double)k * o->spacing[2], &z);
    int64_t *h = hist + k * PSP_LABEL_COUNT * NBIN;
    for (int64_t j = 0; j < ny; j++) {
      double y = ((double)j - cj) * o->spacing[1];
      for (int64_t i = 0; i < nx; i++) {
        tissue ts;
        double px = ((double)i - ci) * o->spacing[0], py = y;
        roll_xy(o, &px, &py);
        classify(an, &z, px, py, &ts);
        if (ts.type != T_MUSCLE) continue;
        double b = (ts.field + FIELD_LIM) / (2 * FIELD_LIM) * NBIN;
        int bin = (int)clampd(floor(b), 0, NBIN - 1);
        h[ts.label * NBIN + bin]++;
      }
    }
  }
  for (int l = 1; l < PSP_LABEL_COUNT; l++) {
    int64_t total = 0, counts[NBIN];
    for (int b = 0; b < NBIN; b++) {
      counts[b] = 0;
      for (int64_t k = 0; k < nz; k++)
        counts[b] += hist[(k * PSP_LABEL_COUNT + l) * NBIN + b];
      total += counts[b];
    }
    if (total == 0) continue;
    double want = o->streak_share * (double)total, above = 0;
    for (int b = NBIN - 1; b >= 0; b--) {
      if (above + (double)counts[b] > want) {
        /* interpolate inside the bin */
        double frac = counts[b] > 0 ? (want - above) / (double)counts[b] : 0;
        thr[l] = -FIELD_LIM + (b + 1 - frac) * (2 * FIELD_LIM / NBIN);
        break;
      }
      above += (double)counts[b];
    }
  }
  free(hist);
  return true;
}

static void generate_slice(const psp_phantom_options *o, const anat *an,
                           const double thr[PSP_LABEL_COUNT], uint64_t noise_key, int64_t k,
                           float *const out[V_COUNT], double *stats) {
  const int64_t nx = o->dims[0], ny = o->dims[1];
  const int64_t dims[3] = {o->dims[0], o->dims[1], o->dims[2]};
  const double sx = o->spacing[0], sy = o->spacing[1], sz = o->spacing[2];
  const double ci = 0.5 * (double)(nx - 1), cj = 0.5 * (double)(ny - 1);
  const double sigma = o->snr > 0 ? 1000.0 / o->snr : 0.0;
  const double diag = sqrt(sx * sx + sy * sy);
  zpar zs[SUB], zc;
  for (int s = 0; s < SUB; s++)
    zpar_at(an, ((double)k + (s - 1) / (double)SUB) * sz, &zs[s]);
  zpar_at(an, (double)k * sz, &zc);
  const double n_sub = SUB * SUB * SUB;
  for (int64_t j = 0; j < ny; j++) {
    for (int64_t i = 0; i < nx; i++) {
      double x = ((double)i - ci) * sx, y = ((double)j - cj) * sy, rx = x, ry = y;
      roll_xy(o, &rx, &ry);
      double W = 0, F = 0;
      int cnt[PSP_LABEL_COUNT] = {0};
      if (sd_ellipse(rx, ry, zc.body_a * 1.1, zc.body_b * 1.1) > -diag) {
        for (int a = 0; a < SUB; a++)
          for (int b = 0; b < SUB; b++)
            for (int c = 0; c < SUB; c++) {
              double ox = (b - 1) * sx / SUB, oy = (c - 1) * sy / SUB;
              roll_xy(o, &ox, &oy);
              double px = rx + ox, py = ry + oy;
              tissue ts;
              classify(an, &zs[a], px, py, &ts);
              double S, ff;
              tissue_signal(o, &zs[a], &ts, thr, &S, &ff);
              W += S * (1.0 - ff);
              F += S * ff;
              cnt[ts.label]++;
            }
        W /= n_sub;
        F /= n_sub;
      }
      /* plurality: a muscle label needs more sub-samples than all other
       * tissues together and than any other muscle */
      int label = 0, best = cnt[0];
      for (int l = 1; l < PSP_LABEL_COUNT; l++)
        if (cnt[l] > best) {
          best = cnt[l];
          label = l;
        }
      double B = bias_at(an, o->bias_amplitude, x, y, (double)k * sz);
      double ff = (W + F) > 0 ? F / (W + F) : 0.0;
      int64_t idx = psp_idx(dims, i, j, k);
      double ip_r = (W + F) * B, ip_i = 0, op_r = (W - F) * B, op_i = 0;
      if (sigma > 0) {
        double n[4];
        voxel_normals(noise_key, idx, n);
        ip_r += sigma * n[0];
        ip_i += sigma * n[1];
        op_r += sigma * n[2];
        op_i += sigma * n[3];
      }
      double mag[4] = {0.5 * hypot(ip_r + op_r, ip_i + op_i), 0.5 * hypot(ip_r - op_r, ip_i - op_i),
                       hypot(ip_r, ip_i), hypot(op_r, op_i)};
      for (int v = 0; v < 4; v++)
        out[v][idx] = (float)clampd(floor(mag[v] + 0.5), 0, 65535);
      out[V_LABELS][idx] = (float)label;
      out[V_FFTRUTH][idx] = (float)ff;
      if (label > 0) {
        double *st = stats + ((size_t)k * PSP_LABEL_COUNT + (size_t)label) * 4;
        st[0] += 1;
        st[1] += (double)(float)ff;
        st[2] += F * B;
        st[3] += (W + F) * B;
      }
    }
  }
}

psp_phantom *psp_phantom_create(const psp_phantom_options *o, psp_context *ctx, psp_error **err) {
  psp_phantom_options def;
  if (!o) {
    psp_phantom_options_default(&def);
    o = &def;
  }
  if (!check_options(o, ctx, err)) return NULL;
  psp_phantom *p = psp_calloc(1, sizeof *p, err);
  if (!p) return NULL;
  p->opt = *o;
  p->nz = o->dims[2];
  double A[4][4];
  make_affine(o, A);
  for (int v = 0; v < V_COUNT; v++) {
    p->vol[v] = psp_volume_create(o->dims, A, err);
    if (!p->vol[v] || !psp_volume_set_orientation(p->vol[v], &o->orientation, err)) {
      psp_phantom_free(p);
      return NULL;
    }
  }
  p->stats = psp_calloc((size_t)p->nz * PSP_LABEL_COUNT * 4, sizeof(double), err);
  p->structure = psp_calloc((size_t)p->nz, sizeof *p->structure, err);
  if (!p->stats || !p->structure) {
    psp_phantom_free(p);
    return NULL;
  }
  anat an;
  make_anatomy(o, &an);
  double fov_x = (double)o->dims[0] * o->spacing[0], fov_y = (double)o->dims[1] * o->spacing[1];
  if (fov_x < 2 * an.body_a * 1.04 || fov_y < 2 * an.body_b)
    psp_warn(ctx,
             "phantom: the field of view (%.0f x %.0f mm) is smaller than the body (%.0f x %.0f "
             "mm); the outline is cut",
             fov_x, fov_y, 2 * an.body_a * 1.04, 2 * an.body_b);
  int nthreads = psp_context_threads(ctx);
  double thr[PSP_LABEL_COUNT];
  if (!streak_thresholds(o, &an, nthreads, thr, err)) {
    psp_phantom_free(p);
    return NULL;
  }
  float *out[V_COUNT];
  for (int v = 0; v < V_COUNT; v++)
    out[v] = psp_volume_data_mut(p->vol[v]);
  uint64_t noise_key = psp_mix64(o->seed ^ 0x4e4f495345ull); /* "NOISE" */
#pragma omp parallel for schedule(dynamic) num_threads(nthreads)
  for (int64_t k = 0; k < p->nz; k++) {
    generate_slice(o, &an, thr, noise_key, k, out, p->stats);
    zpar z;
    zpar_at(&an, (double)k * o->spacing[2], &z);
    structure_name(&z, p->structure[k]);
  }
  psp_info(ctx, "phantom: %lld x %lld x %lld voxels, %s (bottom) to %s (top)",
           (long long)o->dims[0], (long long)o->dims[1], (long long)o->dims[2], p->structure[0],
           p->structure[p->nz - 1]);
  return p;
}

void psp_phantom_free(psp_phantom *p) {
  if (!p) return;
  for (int v = 0; v < V_COUNT; v++)
    psp_volume_free(p->vol[v]);
  free(p->stats);
  free(p->structure);
  free(p);
}

const psp_volume *psp_phantom_volume(const psp_phantom *p, const char *which) {
  if (!p || !which) return NULL;
  for (int v = 0; v < V_COUNT; v++)
    if (!strcmp(which, VOLUME_NAMES[v])) return p->vol[v];
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* Output                                                                    */
/* ------------------------------------------------------------------------ */

static char *truth_csv(const psp_phantom *p, psp_error **err) {
  const psp_volume *v = p->vol[V_LABELS];
  double area = psp_volume_pixel_area(v);
  psp_strbuf b;
  psp_strbuf_init(&b);
  psp_strbuf_append(&b, "slice,file_slice,z_mm,muscle,side,label,area_mm2,ff_mean_pct,"
                        "ff_ratio_pct,n_voxels\n");
  for (int64_t k = 0; k < p->nz; k++) {
    for (int l = 1; l < PSP_LABEL_COUNT; l++) {
      const double *st = p->stats + ((size_t)k * PSP_LABEL_COUNT + (size_t)l) * 4;
      if (st[0] <= 0) continue;
      char z[32], a[32], fm[32], fr[32];
      psp_fmt_num(z, sizeof z, psp_volume_slice_z(v, k), 3);
      psp_fmt_num(a, sizeof a, st[0] * area, 3);
      psp_fmt_num(fm, sizeof fm, 100.0 * st[1] / st[0], 4);
      psp_fmt_num(fr, sizeof fr, st[3] > 0 ? 100.0 * st[2] / st[3] : NAN, 4);
      psp_strbuf_printf(&b, "%lld,%lld,%s,%s,%s,%d,%s,%s,%s,%lld\n", (long long)k,
                        (long long)psp_volume_file_slice(v, k), z, psp_label_muscle(l),
                        psp_label_side(l), l, a, fm, fr, (long long)st[0]);
    }
  }
  return psp_strbuf_take(&b, err);
}

static char *anatomy_csv(const psp_phantom *p, psp_error **err) {
  const psp_volume *v = p->vol[V_LABELS];
  psp_strbuf b;
  psp_strbuf_init(&b);
  psp_strbuf_append(&b, "slice,file_slice,z_mm,structure\n");
  for (int64_t k = 0; k < p->nz; k++) {
    char z[32];
    psp_fmt_num(z, sizeof z, psp_volume_slice_z(v, k), 3);
    psp_strbuf_printf(&b, "%lld,%lld,%s,%s\n", (long long)k, (long long)psp_volume_file_slice(v, k),
                      z, p->structure[k]);
  }
  return psp_strbuf_take(&b, err);
}

static bool write_text(const char *path, char *text, psp_error **err) {
  if (!text) return false;
  bool ok = psp_write_file_atomic(path, text, strlen(text), err);
  free(text);
  return ok;
}

bool psp_phantom_write(const psp_phantom *p, const char *outdir, const char *prefix,
                       psp_error **err) {
  if (!p || !outdir || !*outdir)
    return psp_error_set(err, PSP_ERR_USAGE, "phantom: no output folder given");
  if (!prefix || !*prefix) prefix = "phantom";
  if (strchr(prefix, '/'))
    return psp_error_set(err, PSP_ERR_USAGE, "phantom: prefix '%s' must not contain '/'", prefix);
  if (!psp_mkdir_p(outdir, err)) return false;
  static const struct {
    int vol;
    const char *suffix;
    psp_dtype dtype;
    const char *descr;
  } files[] = {
      {V_WATER, "_water.nii.gz", PSP_DT_UINT16, "water"},
      {V_FAT, "_fat.nii.gz", PSP_DT_UINT16, "fat"},
      {V_INPHASE, "_inphase.nii.gz", PSP_DT_UINT16, "in-phase"},
      {V_OUTPHASE, "_outphase.nii.gz", PSP_DT_UINT16, "opposed-phase"},
      {V_LABELS, "_dseg.nii.gz", PSP_DT_UINT8, "labels 1 MF_L 2 MF_R 3 ES_L 4 ES_R"},
      {V_FFTRUTH, "_fftruth.nii.gz", PSP_DT_FLOAT32, "true fat fraction 0..1"},
  };
  size_t n = strlen(outdir) + strlen(prefix) + 32;
  char *path = psp_malloc(n, err);
  if (!path) return false;
  bool ok = true;
  for (size_t f = 0; ok && f < sizeof files / sizeof files[0]; f++) {
    char descr[80];
    snprintf(descr, sizeof descr, "paraspinal phantom seed %llu: %s",
             (unsigned long long)p->opt.seed, files[f].descr);
    snprintf(path, n, "%s/%s%s", outdir, prefix, files[f].suffix);
    ok = psp_nifti_save(p->vol[files[f].vol], path, files[f].dtype, descr, err);
  }
  if (ok) {
    snprintf(path, n, "%s/%s_dseg.tsv", outdir, prefix);
    char *tsv = psp_labels_dseg_tsv();
    if (!tsv)
      ok = psp_error_set(err, PSP_ERR_NOMEM, "out of memory building dseg.tsv");
    else
      ok = write_text(path, tsv, err);
  }
  if (ok) {
    snprintf(path, n, "%s/%s_truth.csv", outdir, prefix);
    ok = write_text(path, truth_csv(p, err), err);
  }
  if (ok) {
    snprintf(path, n, "%s/%s_anatomy.csv", outdir, prefix);
    ok = write_text(path, anatomy_csv(p, err), err);
  }
  free(path);
  return ok;
}
