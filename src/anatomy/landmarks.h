/*
 * landmarks.h — per-slice anatomical landmarks (internal, not installed):
 * body outline, spinal canal, vertebral body, spinous process and the
 * left-right midline of one axial slice, found from the fat-fraction map.
 * Also the small 2-D mask helpers (components, hole filling) the
 * segmentation stage shares. Coordinates are voxel indices on the internal
 * LPS grid (i towards patient left, j towards posterior).
 */
#ifndef PSP_LANDMARKS_H
#define PSP_LANDMARKS_H

#include "core/internal.h"

/* What became of one slice. Every status except OK leaves the slice empty. */
typedef enum psp_slice_status {
  PSP_SLICE_OK = 0,
  PSP_SLICE_NO_BODY = 1,      /* no body cross-section (outside the body / no signal) */
  PSP_SLICE_NO_SPINE = 2,     /* body, but no spinal canal with muscles behind it */
  PSP_SLICE_BELOW_SACRUM = 3, /* inferior to the last slice where the spine was found */
  PSP_SLICE_IMPLAUSIBLE = 4,  /* spine found, muscles not plausible (size, shape) */
  PSP_SLICE_CUT_OFF = 5,      /* a muscle reaches the edge of the image: cut by the field of view */
} psp_slice_status;

/* "ok", "no_body", "no_spine", "below_sacrum", "implausible". */
const char *psp_slice_status_name(psp_slice_status s);

typedef struct psp_lm_point {
  bool found;
  double i, j; /* voxel coordinates (sub-voxel) */
} psp_lm_point;

/* How a side's multifidus and erector spinae were told apart. */
typedef enum psp_split_kind {
  PSP_SPLIT_NONE = 0,  /* not segmented */
  PSP_SPLIT_PLANE = 1, /* along a visible fat plane (seeded watershed) */
  PSP_SPLIT_STEP = 2,  /* at the step of FF between a fatty and a lean muscle */
  PSP_SPLIT_PATH = 3,  /* by the path with the template's proportion as prior */
} psp_split_kind;

/* "fat_plane", "ff_step", "template_path", "none" (PSP_SPLIT_NONE). */
const char *psp_split_kind_name(int kind);

typedef struct psp_slice_landmarks {
  psp_slice_status status;
  char reason[192];
  int64_t body_voxels;
  int64_t body_box[4]; /* i0, i1, j0, j1 (inclusive) of the body outline */
  psp_lm_point body_centre;
  psp_lm_point canal; /* centre of the spinal canal */
  double canal_radius_mm;
  double canal_score; /* detection score (contrast of a low-FF disc in a ring) */
  double void_mm2;    /* voxels without signal inside or against the muscles (segmentation) */
  psp_lm_point vertebral_body; /* centre of the vertebral body / disc / sacrum */
  psp_lm_point spinous;        /* posterior end of the midline bone behind the canal */
  double midline_i;            /* column of the left-right midline at the canal's row */
  double midline_slope;        /* the midline's di/dj (0: along the image's columns) */
  double axis_deg;  /* in-plane angle of the frame the slice was segmented in (0: the image's) */
  double gap_mm[2]; /* half-width of the midline bone/fat (spinous process, interspinous
                       fat) on the left [0] and right [1] of the midline */
  double muscle_ff; /* median FF of the muscle core beside the spinous process */
  /* the muscle level of each side alone, left [0] and right [1]: the lower
   * 30 % quantile of a box nearer the midline (landmarks.c) */
  double muscle_side_ff[2];
  /* the erector spinae's level of each side alone: the lower 30 % quantile
   * of a box lateral of the multifidus (landmarks.c) */
  double es_side_ff[2];
  double fat_ff;      /* median FF of the fat in the body */
  double back_fat_mm; /* subcutaneous fat behind the spine: median thickness over the
                         columns where a canal may lie */
  double back_ff;     /* median FF BACK_BAND_MIN_MM..BACK_BAND_MAX_MM inside the back's last
                         voxel over those columns (the subcutaneous fat on most scans); NaN
                         where the field of view cuts the back */
  /* The multifidus/erector spinae boundary of each side, left [0] and right
   * [1], on a measured slice: how the two were split (psp_split_kind,
   * src/segment/segment.c) and the share of its crossings on a visible ridge
   * of FF on the final labels (src/segment/checks.c,
   * psp_seg_boundary_evidence; NaN: no boundary) */
  uint8_t split[2];
  double plane_share[2];
  /* A measured slice whose erector spinae (one side or both) reaches the
   * image's edge: bit l set for label l, left out of the labels and not
   * measured, while the slice's other muscles are (src/segment/align.c,
   * flag_cut_off); 0 on other slices */
  uint8_t cut_labels;
  /* Left and right of a muscle more than MAX_LR_RATIO apart in area while
   * one of them lies at the frame's edge (src/segment/checks.c): 1 the
   * multifidus, 2 the erector spinae, 0 none; left to flag_cut_off, which
   * flags the slice unless that muscle is cut by the field of view. */
  uint8_t lr_edge_pair;
  double lr_edge_ratio;
  /* Left and right of a muscle more than MAX_LR_RATIO apart in area, away
   * from the frame's edge, on the slice's own labels: the check waits for
   * the stack's majority on the outlines (src/segment/segment.c step 3d,
   * which counts the slice as unmeasured for its neighbours) and is made
   * again after it; 0 on other slices and after that. */
  uint8_t lr_pending;
} psp_slice_landmarks;

/* The two sides' multifidus levels (muscle_side_ff) lie more than this
 * apart, and the fatter reaches the slice's level: a one-sided fatty
 * multifidus, segmented with each side's own level (src/segment/segment.c,
 * step 1). */
#define PSP_LM_SIDE_ASYM_FF 0.2
bool psp_landmarks_sides_differ(const psp_slice_landmarks *lm);
/* The same for the two sides' erector spinae levels (es_side_ff): a
 * one-sided fatty erector spinae. */
bool psp_landmarks_es_sides_differ(const psp_slice_landmarks *lm);

/* Scratch buffers for one slice (one per thread). */
typedef struct psp_slice_work {
  int64_t nx, ny;
  int32_t *queue, *lab;
  int32_t *aux; /* nx * ny + 1: union-find parents of the component labelling */
  uint8_t *m0, *m1, *m2, *m3;
  float *f0, *f1;
  int32_t *integ0, *integ1, *integ2; /* (nx+1)*(ny+1): integral images (of the body's box) */
  double *line; /* 6 * nx: the midline search's sums, one row, its validity, the counts */
  /* setting, not scratch: the canal template's muscle boxes count voxels
   * below this FF as muscle (psp_slice_work_create: PSP_LM_MUSCLE_FF; see
   * psp_landmarks_muscle_limit for fatty muscle) */
  double muscle_max_ff;
} psp_slice_work;

/* Whether the field of view cuts the body on one side only (its outline
 * reaches one left-right edge of the image): the centre of its left-right
 * extent is then not the body's. */
bool psp_landmarks_body_cut(const psp_slice_landmarks *lm, int64_t nx);

/* The half-width of the midline bone (spinous process, interspinous tissue)
 * on either side of the midline is at least this (mm), also where the FF
 * shows no peak there (gap_mm; the segmentation's medial limit). 3 mm
 * before: see src/segment/limits.c. */
#define PSP_LM_GAP_MIN_MM 4.0

/* The default muscle limit of the canal template: lean muscle reads below it. */
#define PSP_LM_MUSCLE_FF 0.2

psp_slice_work *psp_slice_work_create(int64_t nx, int64_t ny);
void psp_slice_work_free(psp_slice_work *w);

/* Finds the landmarks of one slice. ff: nx*ny FF values (NaN = no signal),
 * sx, sy: pixel size (mm). near (may be NULL): {i, j} of the canal expected
 * from the other slices; the search is then limited to 25 mm left-right and
 * 30 mm anterior-posterior of it. csf_either: the input cannot tell water
 * from fat (in-phase/opposed-phase), so the CSF may read as fat.
 * body receives the body mask (1 inside).
 * Sets lm->status to OK, NO_BODY or NO_SPINE with a reason. */
void psp_landmarks_find(const float *ff, int64_t nx, int64_t ny, double sx, double sy,
                        const double *near, bool csf_either, uint8_t *body, psp_slice_work *w,
                        psp_slice_landmarks *lm);

/* The same on a slice whose body a previous psp_landmarks_find of the same
 * ff left in body (status other than NO_BODY): body is only read. */
void psp_landmarks_refind(const float *ff, int64_t nx, int64_t ny, double sx, double sy,
                          const double *near, bool csf_either, const uint8_t *body,
                          psp_slice_work *w, psp_slice_landmarks *lm);

/* psp_landmarks_refind searching the canal only within radius_mm
 * (left-right and anterior-posterior) of near, the canal position of the
 * neighbouring slices, with a stronger pull towards it: for a slice whose
 * own canal jumped away from its neighbours'. */
void psp_landmarks_find_close(const float *ff, int64_t nx, int64_t ny, double sx, double sy,
                              const double *near, double radius_mm, bool csf_either,
                              const uint8_t *body, psp_slice_work *w, psp_slice_landmarks *lm);

/* How far in front of the back's skin (body box) a spinal canal may lie on
 * this slice (mm): 130, plus the back's subcutaneous fat beyond 40 mm (an
 * obese subject's canal lies deeper; the kidneys and bowel the limit keeps
 * out lie deeper too, but behind no more fat). */
double psp_landmarks_max_depth_mm(const psp_slice_landmarks *lm);

/* The canal template's muscle limit for a stack whose slices a first
 * search (at PSP_LM_MUSCLE_FF) left in lm[0..nz-1]: PSP_LM_MUSCLE_FF while
 * the median muscle level of the slices with a canal is lean, else above
 * it (fatty, degenerated muscle); NAN when nothing needs searching again.
 * buf: nz doubles of scratch. */
double psp_landmarks_muscle_limit(const psp_slice_landmarks *lm, int64_t nz, double *buf);

/* Mask helpers on an nx*ny slice. Keeps the 4-connected component of m with
 * the most voxels (returns its size; 0 when m is empty). */
int64_t psp_mask_keep_largest(uint8_t *m, int64_t nx, int64_t ny, psp_slice_work *w);
/* Fills the holes of m (background not 4-connected to the slice border). */
void psp_mask_fill_holes(uint8_t *m, int64_t nx, int64_t ny, psp_slice_work *w);
/* Labels 4-connected components of m into w->lab (0 = background, 1..n);
 * returns n. */
int32_t psp_mask_components(const uint8_t *m, int64_t nx, int64_t ny, psp_slice_work *w);
/* Binary erosion / dilation with a (2r+1) x (2r+1) square (separable). */
void psp_mask_erode(uint8_t *m, int64_t nx, int64_t ny, int r, psp_slice_work *w);
void psp_mask_dilate(uint8_t *m, int64_t nx, int64_t ny, int r, psp_slice_work *w);

#endif
