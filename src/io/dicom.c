/*
 * DESIGN: DICOM folder -> image stacks -> psp_volume (pure C; DCMTK is
 * reached only through the bridge in dicom_dcmtk.cpp).
 *  - Walk: the folder tree in sorted name order (deterministic), any file
 *    names; a file is DICOM when it has "DICM" at byte 128 (or, without the
 *    preamble, starts with a group-0008 element and DCMTK can parse it;
 *    otherwise it is skipped quietly). DICOMDIR and other files without
 *    pixel data are skipped. A file with the DICOM preamble that cannot be
 *    parsed is an error naming it (a missing slice must not go unnoticed).
 *    Symbolic links to folders are not followed (no loops).
 *  - Planes (one per single-frame instance or per frame of an enhanced
 *    instance) are grouped into stacks by SeriesInstanceUID, ImageType or
 *    FrameType (+ Siemens ImageTypeText), echo time and matrix size, so that
 *    a series holding water and fat (Philips, enhanced objects) or two
 *    echoes splits into one stack per image kind.
 *  - A stack is sorted by the position of each plane along the slice normal
 *    n = row direction x column direction (never by file name or instance
 *    number), then checked: one orientation and pixel spacing, no two
 *    different images at one position (an exact copy of the same SOP
 *    instance is dropped with a warning), equal steps (a gap names the
 *    positions and how many slices are missing), positions along n (a
 *    tilted / sheared stack is refused). The LPS affine is exact: columns
 *    row-direction x column spacing, column-direction x row spacing, and the
 *    mean step between the first and last position; the origin is the first
 *    position. It is turned into the RAS+ affine and the voxels (file order:
 *    column, row, sorted slice) into the LPS internal grid by
 *    psp_volume_from_file_order, as for NIfTI. Rescale slope/intercept are
 *    applied per plane with the formula the NIfTI loader uses, so the same
 *    scan gives the same floats.
 *  - Identity: SHA-256 over the contents of the stack's files in slice
 *    order (independent of file names and folder layout).
 * Identifiers: warnings (which end up in report.json) name series by UID
 * and positions, never by file path; errors name the file (they are printed
 * on stderr only, and the user must be able to find it).
 */
#include "core/internal.h"
#include "io/dicom_read.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <nettle/sha2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { MAX_DEPTH = 32, MAX_FILES = 500000 };

void psp_dicom_source_free(psp_dicom_source *s) {
  if (!s) return;
  free(s->sop_instance_uid);
  free(s->frame_number);
  free(s);
}

void psp_dicom_scan_free(psp_dicom_scan *s) {
  if (!s) return;
  for (int32_t i = 0; i < s->n_inst; i++)
    free(s->inst[i].path);
  free(s->inst);
  free(s->planes);
  for (int32_t i = 0; i < s->n_stacks; i++)
    free(s->stacks[i].plane);
  free(s->stacks);
  free(s->dir);
  free(s);
}

/* ---- folder walk ------------------------------------------------------------ */

typedef struct {
  char **v;
  size_t n, cap;
} str_list;

static bool list_push(str_list *l, char *s, psp_error **err) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 256;
    char **v = realloc(l->v, cap * sizeof *v);
    if (!v) {
      free(s);
      return psp_error_set(err, PSP_ERR_NOMEM, "out of memory listing DICOM files");
    }
    l->v = v;
    l->cap = cap;
  }
  l->v[l->n++] = s;
  return true;
}

static void list_free(str_list *l) {
  for (size_t i = 0; i < l->n; i++)
    free(l->v[i]);
  free(l->v);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *join(const char *dir, const char *name, psp_error **err) {
  size_t n = strlen(dir) + strlen(name) + 2;
  char *p = psp_malloc(n, err);
  if (p) snprintf(p, n, "%s%s%s", dir, (dir[0] && dir[strlen(dir) - 1] == '/') ? "" : "/", name);
  return p;
}

static bool walk(const char *dir, int depth, str_list *files, psp_error **err) {
  if (depth > MAX_DEPTH)
    return psp_error_set(err, PSP_ERR_LIMIT, "%s: folders nested deeper than %d levels", dir,
                         MAX_DEPTH);
  DIR *d = opendir(dir);
  if (!d) return psp_error_set(err, PSP_ERR_IO, "%s: cannot open folder: %s", dir, strerror(errno));
  str_list names = {0};
  struct dirent *e;
  bool ok = true;
  while (ok && (e = readdir(d)) != NULL) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char *nm = strdup(e->d_name);
    ok = nm ? list_push(&names, nm, err)
            : psp_error_set(err, PSP_ERR_NOMEM, "out of memory listing DICOM files");
  }
  closedir(d);
  if (ok && names.n) qsort(names.v, names.n, sizeof *names.v, cmp_str);
  for (size_t i = 0; ok && i < names.n; i++) {
    char *p = join(dir, names.v[i], err);
    if (!p) {
      ok = false;
      break;
    }
    struct stat lst, st;
    if (lstat(p, &lst) != 0) {
      ok = psp_error_set(err, PSP_ERR_IO, "%s: cannot read: %s", p, strerror(errno));
      free(p);
      break;
    }
    /* links to files are followed, links to folders are not (no loops);
     * dangling links are ignored */
    st = lst;
    if (S_ISLNK(lst.st_mode) && stat(p, &st) != 0) {
      free(p);
      continue;
    }
    if (S_ISDIR(st.st_mode)) {
      if (!S_ISLNK(lst.st_mode)) ok = walk(p, depth + 1, files, err);
      free(p);
    } else if (S_ISREG(st.st_mode)) {
      if (files->n >= MAX_FILES) {
        free(p);
        ok = psp_error_set(err, PSP_ERR_LIMIT, "%s: more than %d files below this folder", dir,
                           MAX_FILES);
      } else {
        ok = list_push(files, p, err);
      }
    } else {
      free(p);
    }
  }
  list_free(&names);
  return ok;
}

/* 1 = DICOM preamble, 2 = maybe a raw data set (group 0008 first), 0 = no. */
static int sniff(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return 0;
  unsigned char b[132];
  size_t n = fread(b, 1, sizeof b, f);
  fclose(f);
  if (n == sizeof b && !memcmp(b + 128, "DICM", 4)) return 1;
  if (n >= 8 && b[0] == 0x08 && b[1] == 0x00 && b[3] == 0x00) return 2;
  return 0;
}

psp_dicom_scan *psp_dicom_scan_dir(const char *dir, bool toolkit_log, psp_context *ctx,
                                   psp_error **err) {
  struct stat st;
  if (stat(dir, &st) != 0) {
    psp_error_set(err, PSP_ERR_IO, "%s: cannot open DICOM folder: %s", dir, strerror(errno));
    return NULL;
  }
  if (!S_ISDIR(st.st_mode)) {
    psp_error_set(err, PSP_ERR_IO, "%s: not a folder (--dicom takes the folder holding the series)",
                  dir);
    return NULL;
  }
  str_list files = {0};
  if (!walk(dir, 0, &files, err)) {
    list_free(&files);
    return NULL;
  }
  psp_dcm_instance *inst = NULL;
  psp_dcm_plane *planes = NULL;
  int32_t n_inst = 0;
  int64_t n_planes = 0, cap_planes = 0, skipped_not = 0, skipped_noimg = 0;
  bool ok = true;
  if (files.n) {
    inst = psp_calloc(files.n, sizeof *inst, err);
    ok = inst != NULL;
  }
  for (size_t i = 0; ok && i < files.n; i++) {
    int kind = sniff(files.v[i]);
    if (!kind) {
      skipped_not++;
      continue;
    }
    psp_dcm_plane *fp = NULL;
    int32_t nfp = 0;
    psp_error *e = NULL;
    int rc = psp_dcm_read_header(files.v[i], toolkit_log, &inst[n_inst], &fp, &nfp, &e);
    if (rc < 0) {
      if (kind == 2 && psp_error_code(e) == PSP_ERR_FORMAT) { /* not DICOM after all */
        psp_error_free(e);
        skipped_not++;
        continue;
      }
      if (err && !*err)
        *err = e;
      else
        psp_error_free(e);
      ok = false;
      break;
    }
    if (rc == 0) {
      skipped_noimg++;
      continue;
    }
    if (n_planes + nfp > cap_planes) {
      int64_t cap = cap_planes ? 2 * cap_planes : 1024;
      while (cap < n_planes + nfp)
        cap *= 2;
      psp_dcm_plane *np = realloc(planes, (size_t)cap * sizeof *np);
      if (!np) {
        free(fp);
        ok = psp_error_set(err, PSP_ERR_NOMEM, "out of memory reading DICOM headers");
        break;
      }
      planes = np;
      cap_planes = cap;
    }
    for (int32_t f = 0; f < nfp; f++) {
      fp[f].instance = n_inst;
      planes[n_planes++] = fp[f];
    }
    free(fp);
    inst[n_inst].path = files.v[i];
    files.v[i] = NULL;
    n_inst++;
  }
  list_free(&files);
  if (ok && n_inst == 0) {
    ok = psp_error_set(err, PSP_ERR_DATA,
                       "%s: no DICOM images found (%lld files were not DICOM, %lld DICOM files "
                       "hold no image)",
                       dir, (long long)skipped_not, (long long)skipped_noimg);
  }
  if (!ok) {
    for (int32_t i = 0; i < n_inst; i++)
      free(inst[i].path);
    free(inst);
    free(planes);
    return NULL;
  }
  psp_info(ctx,
           "%s: %d DICOM images (%lld image planes); skipped %lld files that are not DICOM and "
           "%lld DICOM files without an image",
           dir, n_inst, (long long)n_planes, (long long)skipped_not, (long long)skipped_noimg);
  psp_dicom_scan *s = psp_dicom_scan_from_planes(dir, inst, n_inst, planes, n_planes, ctx, err);
  if (s) {
    s->n_skipped_not_dicom = skipped_not;
    s->n_skipped_no_image = skipped_noimg;
    s->toolkit_log = toolkit_log;
  }
  return s;
}

/* ---- grouping into stacks ------------------------------------------------- */

static int64_t te_key(double te) {
  return isnan(te) ? INT64_MIN : llround(te * 1000.0);
}

/* qsort has no context argument: plane indices are sorted through a
 * temporary array of pointers to the records compared. */
typedef struct {
  const psp_dcm_plane *p;
  const psp_dcm_instance *in;
  int32_t index;
} plane_ref;

static int cmp_group(const void *a, const void *b) {
  const plane_ref *x = a, *y = b;
  int c = strcmp(x->in->series_uid, y->in->series_uid);
  if (c) return c;
  c = strcmp(x->p->image_type, y->p->image_type);
  if (c) return c;
  c = strcmp(x->p->image_type_text, y->p->image_type_text);
  if (c) return c;
  int64_t tx = te_key(x->p->echo_time), ty = te_key(y->p->echo_time);
  if (tx != ty) return tx < ty ? -1 : 1;
  if (x->in->rows != y->in->rows) return x->in->rows < y->in->rows ? -1 : 1;
  if (x->in->cols != y->in->cols) return x->in->cols < y->in->cols ? -1 : 1;
  return x->index < y->index ? -1 : x->index > y->index;
}

static bool same_group(const plane_ref *x, const plane_ref *y) {
  return !strcmp(x->in->series_uid, y->in->series_uid) &&
         !strcmp(x->p->image_type, y->p->image_type) &&
         !strcmp(x->p->image_type_text, y->p->image_type_text) &&
         te_key(x->p->echo_time) == te_key(y->p->echo_time) && x->in->rows == y->in->rows &&
         x->in->cols == y->in->cols;
}

/* ---- geometry of one stack -------------------------------------------------- */

typedef struct {
  double d; /* position along the normal */
  int32_t plane;
  const psp_dcm_plane *p;
  const psp_dcm_instance *in;
} slice_ref;

static int cmp_slice(const void *a, const void *b) {
  const slice_ref *x = a, *y = b;
  if (x->d != y->d) return x->d < y->d ? -1 : 1;
  if (x->in->instance_number != y->in->instance_number)
    return x->in->instance_number < y->in->instance_number ? -1 : 1;
  int c = strcmp(x->in->path ? x->in->path : "", y->in->path ? y->in->path : "");
  if (c) return c;
  return x->p->frame - y->p->frame;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double dot3(const double *a, const double *b) {
  return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

static bool geometry_fail(psp_dicom_stack *st, psp_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool geometry_fail(psp_dicom_stack *st, psp_status code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(st->geometry_message, sizeof st->geometry_message, fmt, ap);
  va_end(ap);
  st->geometry_status = code;
  return false;
}

/* Sorts the stack's planes along the slice normal, drops exact duplicates,
 * checks the geometry and builds the LPS affine. Returns false with the
 * stack's geometry_status/message set when the stack cannot be placed. The
 * plane list is replaced by the sorted one either way. */
static bool stack_geometry(psp_dicom_scan *s, psp_dicom_stack *st, psp_error **err) {
  int64_t n = st->n_planes;
  const psp_dcm_plane *p0 = &s->planes[st->plane[0]];
  for (int64_t i = 0; i < n; i++) {
    const psp_dcm_plane *p = &s->planes[st->plane[i]];
    if (!p->has_position && p->frame > 1 && s->inst[p->instance].n_frames > 1)
      return geometry_fail(st, PSP_ERR_UNSUPPORTED,
                           "a multi-frame image without per-frame positions (no Per-frame "
                           "Functional Groups): its frames cannot be placed in space");
    if (!p->has_position || !p->has_orientation || !p->has_spacing)
      return geometry_fail(st, PSP_ERR_FORMAT, "image without %s: it cannot be placed in space",
                           !p->has_position      ? "ImagePositionPatient"
                           : !p->has_orientation ? "ImageOrientationPatient"
                                                 : "PixelSpacing");
  }
  double r[3] = {p0->iop[0], p0->iop[1], p0->iop[2]}, c[3] = {p0->iop[3], p0->iop[4], p0->iop[5]};
  double nr = sqrt(dot3(r, r)), nc = sqrt(dot3(c, c));
  if (fabs(nr - 1) > 0.01 || fabs(nc - 1) > 0.01 || fabs(dot3(r, c)) > 1e-3)
    return geometry_fail(st, PSP_ERR_GEOMETRY,
                         "ImageOrientationPatient %.6g\\%.6g\\%.6g\\%.6g\\%.6g\\%.6g is not two "
                         "orthogonal unit vectors",
                         r[0], r[1], r[2], c[0], c[1], c[2]);
  for (int a = 0; a < 3; a++) {
    r[a] /= nr;
    c[a] /= nc;
  }
  double ps[2] = {p0->pixel_spacing[0], p0->pixel_spacing[1]};
  if (!(ps[0] > 0) || !(ps[1] > 0))
    return geometry_fail(st, PSP_ERR_GEOMETRY, "PixelSpacing %g\\%g mm: spacing must be > 0", ps[0],
                         ps[1]);
  for (int64_t i = 1; i < n; i++) {
    const psp_dcm_plane *p = &s->planes[st->plane[i]];
    for (int a = 0; a < 6; a++)
      if (fabs(p->iop[a] - p0->iop[a]) > 1e-3)
        return geometry_fail(st, PSP_ERR_GEOMETRY,
                             "the images of this stack have different orientations "
                             "(ImageOrientationPatient %.4g\\%.4g\\%.4g\\%.4g\\%.4g\\%.4g and "
                             "%.4g\\%.4g\\%.4g\\%.4g\\%.4g\\%.4g): a localizer, or a series "
                             "mixing stacks",
                             p0->iop[0], p0->iop[1], p0->iop[2], p0->iop[3], p0->iop[4], p0->iop[5],
                             p->iop[0], p->iop[1], p->iop[2], p->iop[3], p->iop[4], p->iop[5]);
    for (int a = 0; a < 2; a++)
      if (fabs(p->pixel_spacing[a] - ps[a]) > 1e-4 * ps[a])
        return geometry_fail(st, PSP_ERR_GEOMETRY,
                             "pixel spacing differs between images (%g\\%g and %g\\%g mm)", ps[0],
                             ps[1], p->pixel_spacing[0], p->pixel_spacing[1]);
  }
  double nv[3] = {r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0]};
  double nn = sqrt(dot3(nv, nv));
  for (int a = 0; a < 3; a++)
    nv[a] /= nn;
  memcpy(st->normal, nv, sizeof st->normal);
  int big = 0;
  for (int a = 1; a < 3; a++)
    if (fabs(nv[a]) > fabs(nv[big])) big = a;
  st->orientation = big == 2 ? "axial" : big == 1 ? "coronal" : "sagittal";
  st->obliquity_deg = acos(fmin(1.0, fabs(nv[big]))) * (180.0 / 3.14159265358979323846);

  slice_ref *sl = psp_malloc((size_t)n * sizeof *sl, err);
  if (!sl) return false;
  for (int64_t i = 0; i < n; i++) {
    sl[i].plane = st->plane[i];
    sl[i].p = &s->planes[st->plane[i]];
    sl[i].in = &s->inst[sl[i].p->instance];
    sl[i].d = dot3(sl[i].p->ipp, nv);
  }
  qsort(sl, (size_t)n, sizeof *sl, cmp_slice);
  /* duplicates: the same SOP instance and frame twice is a copy; two
   * different images at one position cannot be stacked */
  int64_t m = 0;
  for (int64_t i = 0; i < n; i++) {
    if (m > 0 && fabs(sl[i].d - sl[m - 1].d) < 0.01) {
      if (!strcmp(sl[i].in->sop_instance_uid, sl[m - 1].in->sop_instance_uid) &&
          sl[i].p->frame == sl[m - 1].p->frame) {
        st->n_duplicates++;
        continue;
      }
      double d = sl[i].d;
      int32_t a = sl[m - 1].in->instance_number, b = sl[i].in->instance_number;
      free(sl);
      return geometry_fail(st, PSP_ERR_GEOMETRY,
                           "two different images at the same slice position (%.2f mm along the "
                           "slice normal; instance numbers %d and %d): the stack holds more than "
                           "one volume (a repeated acquisition, or time points or echoes with "
                           "the same image type); put one of them in a folder of its own",
                           d, a, b);
    }
    sl[m++] = sl[i];
  }
  n = m;
  st->n_planes = n;
  for (int64_t i = 0; i < n; i++)
    st->plane[i] = sl[i].plane;
  double step = NAN;
  if (n >= 2) {
    double *steps = psp_malloc((size_t)(n - 1) * sizeof *steps, err);
    if (!steps) {
      free(sl);
      return false;
    }
    for (int64_t i = 0; i + 1 < n; i++)
      steps[i] = sl[i + 1].d - sl[i].d;
    qsort(steps, (size_t)(n - 1), sizeof *steps, cmp_double);
    double med = steps[(n - 2) / 2]; /* lower median: with two steps, the smaller */
    double lo = steps[0], hi = steps[n - 2];
    free(steps);
    double tol = fmax(0.01, 0.005 * med);
    for (int64_t i = 0; i + 1 < n; i++) {
      double dd = sl[i + 1].d - sl[i].d;
      if (fabs(dd - med) <= tol) continue;
      double ratio = dd / med, k = round(ratio), d0 = sl[i].d, d1 = sl[i + 1].d;
      free(sl);
      if (dd > med && k >= 2 && fabs(ratio - k) * med <= tol)
        return geometry_fail(st, PSP_ERR_GEOMETRY,
                             "gap in the slice positions: %.2f mm between positions %.2f and "
                             "%.2f mm along the slice normal, %.0f times the usual %.3f mm "
                             "spacing: %.0f slice(s) missing (incomplete copy of the series?)",
                             dd, d0, d1, k, med, k - 1);
      return geometry_fail(st, PSP_ERR_GEOMETRY,
                           "irregular slice spacing: steps between neighbouring slices vary from "
                           "%.3f to %.3f mm (median %.3f mm); a volume needs equal steps",
                           lo, hi, med);
    }
    /* positions must run along the normal: otherwise the stack is tilted */
    for (int64_t i = 1; i < n; i++) {
      double v[3], w[3];
      for (int a = 0; a < 3; a++)
        v[a] = sl[i].p->ipp[a] - sl[0].p->ipp[a];
      double along = dot3(v, nv);
      for (int a = 0; a < 3; a++)
        w[a] = v[a] - along * nv[a];
      double off = sqrt(dot3(w, w));
      if (off > 0.01 + 1e-3 * fabs(along)) {
        free(sl);
        return geometry_fail(st, PSP_ERR_GEOMETRY,
                             "the slice positions do not run along the slice normal (%.2f mm "
                             "sideways over %.2f mm): a gantry-tilted or sheared stack, which "
                             "is not supported",
                             off, along);
      }
    }
    st->slice_step = (sl[n - 1].d - sl[0].d) / (double)(n - 1);
    step = st->slice_step;
  } else {
    step = !isnan(p0->spacing_between_slices) && p0->spacing_between_slices > 0
               ? p0->spacing_between_slices
           : !isnan(p0->slice_thickness) && p0->slice_thickness > 0 ? p0->slice_thickness
                                                                    : 1.0;
    st->slice_step = step;
  }
  if (!(step > 0)) {
    free(sl);
    return geometry_fail(st, PSP_ERR_GEOMETRY, "slice spacing %g mm: must be > 0", step);
  }
  double(*A)[4] = st->affine_lps;
  memset(A, 0, sizeof st->affine_lps);
  for (int a = 0; a < 3; a++) {
    A[a][0] = r[a] * ps[1];
    A[a][1] = c[a] * ps[0];
    A[a][2] = n >= 2 ? (sl[n - 1].p->ipp[a] - sl[0].p->ipp[a]) / (double)(n - 1) : nv[a] * step;
    A[a][3] = sl[0].p->ipp[a];
  }
  A[3][3] = 1;
  st->first_instance = sl[0].p->instance;
  free(sl);
  st->geometry_status = PSP_OK;
  st->geometry_message[0] = '\0';
  return true;
}

static int cmp_stack(const void *a, const void *b, const psp_dicom_scan *s) {
  const psp_dicom_stack *x = a, *y = b;
  const psp_dcm_instance *ix = &s->inst[x->first_instance], *iy = &s->inst[y->first_instance];
  if (ix->series_number != iy->series_number) return ix->series_number < iy->series_number ? -1 : 1;
  int c = strcmp(ix->series_uid, iy->series_uid);
  if (c) return c;
  c = strcmp(x->image_type, y->image_type);
  if (c) return c;
  c = strcmp(x->image_type_text, y->image_type_text);
  if (c) return c;
  int64_t tx = te_key(x->echo_time), ty = te_key(y->echo_time);
  if (tx != ty) return tx < ty ? -1 : 1;
  if (x->rows != y->rows) return x->rows < y->rows ? -1 : 1;
  return (x->cols > y->cols) - (x->cols < y->cols);
}

/* insertion sort: stacks are few, and this keeps the comparison's context
 * explicit */
static void sort_stacks(psp_dicom_scan *s) {
  for (int32_t i = 1; i < s->n_stacks; i++) {
    psp_dicom_stack t = s->stacks[i];
    int32_t j = i;
    while (j > 0 && cmp_stack(&s->stacks[j - 1], &t, s) > 0) {
      s->stacks[j] = s->stacks[j - 1];
      j--;
    }
    s->stacks[j] = t;
  }
}

psp_dicom_scan *psp_dicom_scan_from_planes(const char *dir, psp_dcm_instance *inst, int32_t n_inst,
                                           psp_dcm_plane *planes, int64_t n_planes,
                                           psp_context *ctx, psp_error **err) {
  psp_dicom_scan *s = psp_calloc(1, sizeof *s, err);
  if (!s) {
    for (int32_t i = 0; i < n_inst; i++)
      free(inst[i].path);
    free(inst);
    free(planes);
    return NULL;
  }
  s->inst = inst;
  s->n_inst = n_inst;
  s->planes = planes;
  s->n_planes = n_planes;
  s->dir = strdup(dir ? dir : "");
  plane_ref *refs = n_planes ? psp_malloc((size_t)n_planes * sizeof *refs, err) : NULL;
  if (!s->dir || (n_planes && !refs)) {
    if (!s->dir) psp_error_set(err, PSP_ERR_NOMEM, "out of memory");
    free(refs);
    psp_dicom_scan_free(s);
    return NULL;
  }
  for (int64_t i = 0; i < n_planes; i++) {
    refs[i].p = &planes[i];
    refs[i].in = &inst[planes[i].instance];
    refs[i].index = (int32_t)i;
  }
  qsort(refs, (size_t)n_planes, sizeof *refs, cmp_group);
  int32_t n_groups = 0;
  for (int64_t i = 0; i < n_planes; i++)
    if (i == 0 || !same_group(&refs[i - 1], &refs[i])) n_groups++;
  s->stacks = n_groups ? psp_calloc((size_t)n_groups, sizeof *s->stacks, err) : NULL;
  if (n_groups && !s->stacks) {
    free(refs);
    psp_dicom_scan_free(s);
    return NULL;
  }
  for (int64_t i = 0, g = -1; i < n_planes; i++) {
    if (i == 0 || !same_group(&refs[i - 1], &refs[i])) {
      g++;
      int64_t j = i;
      while (j < n_planes && same_group(&refs[i], &refs[j]))
        j++;
      psp_dicom_stack *st = &s->stacks[g];
      st->plane = psp_malloc((size_t)(j - i) * sizeof *st->plane, err);
      if (!st->plane) {
        s->n_stacks = (int32_t)g;
        free(refs);
        psp_dicom_scan_free(s);
        return NULL;
      }
      s->n_stacks = (int32_t)g + 1;
      st->first_instance = refs[i].p->instance;
      snprintf(st->image_type, sizeof st->image_type, "%s", refs[i].p->image_type);
      snprintf(st->image_type_text, sizeof st->image_type_text, "%s", refs[i].p->image_type_text);
      st->echo_time = refs[i].p->echo_time;
      st->rows = refs[i].in->rows;
      st->cols = refs[i].in->cols;
      st->multi_frame = refs[i].p->frame > 0;
      st->orientation = "unknown";
    }
    psp_dicom_stack *st = &s->stacks[g];
    st->plane[st->n_planes++] = refs[i].index;
  }
  free(refs);
  for (int32_t g = 0; g < s->n_stacks; g++) {
    psp_dicom_stack *st = &s->stacks[g];
    /* distinct files */
    for (int64_t i = 0; i < st->n_planes; i++) {
      int32_t in = s->planes[st->plane[i]].instance;
      bool seen = false;
      for (int64_t j = 0; j < i && !seen; j++)
        seen = s->planes[st->plane[j]].instance == in;
      if (!seen) st->n_files++;
    }
    psp_error *e = NULL;
    if (!stack_geometry(s, st, &e) && e) {
      if (err && !*err)
        *err = e;
      else
        psp_error_free(e);
      psp_dicom_scan_free(s);
      return NULL;
    }
  }
  psp_dicom_classify_stacks(s);
  sort_stacks(s);
  for (int32_t g = 0; g < s->n_stacks; g++) {
    char d[512];
    psp_dicom_stack_describe(s, g, d, sizeof d);
    psp_log(ctx, PSP_LOG_DEBUG, "stack [%d] %s", g + 1, d);
  }
  return s;
}

void psp_dicom_stack_describe(const psp_dicom_scan *s, int32_t i, char *out, size_t n) {
  const psp_dicom_stack *st = &s->stacks[i];
  const psp_dcm_instance *in = &s->inst[st->first_instance];
  char te[32] = "";
  if (!isnan(st->echo_time)) snprintf(te, sizeof te, ", TE %.3g ms", st->echo_time);
  snprintf(out, n, "series %s (#%d \"%s\"): %s, ImageType %s%s%s%s, %lld slice%s of %d x %d%s",
           in->series_uid, in->series_number, in->series_description, psp_dixon_kind_name(st->kind),
           st->image_type[0] ? st->image_type : "(none)",
           st->image_type_text[0] ? ", ImageTypeText " : "", st->image_type_text, te,
           (long long)st->n_planes, st->n_planes == 1 ? "" : "s", st->cols, st->rows,
           st->multi_frame ? " (multi-frame)" : "");
}

/* ---- loading a stack ------------------------------------------------------ */

static bool hash_files(const psp_dicom_scan *s, const int32_t *order, int64_t n, char hex[65],
                       psp_error **err) {
  struct sha256_ctx c;
  sha256_init(&c);
  unsigned char *buf = psp_malloc(1 << 16, err);
  if (!buf) return false;
  for (int64_t i = 0; i < n; i++) {
    const char *path = s->inst[order[i]].path;
    FILE *f = fopen(path, "rb");
    if (!f) {
      free(buf);
      return psp_error_set(err, PSP_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    size_t got;
    while ((got = fread(buf, 1, 1 << 16, f)) > 0)
      sha256_update(&c, got, buf);
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
      free(buf);
      return psp_error_set(err, PSP_ERR_IO, "%s: read error", path);
    }
  }
  free(buf);
  unsigned char d[SHA256_DIGEST_SIZE];
  sha256_digest(&c, sizeof d, d);
  for (int i = 0; i < SHA256_DIGEST_SIZE; i++)
    snprintf(hex + 2 * i, 3, "%02x", d[i]);
  return true;
}

static psp_dicom_source *make_source(const psp_dicom_scan *s, const psp_dicom_stack *st,
                                     const psp_volume *v, int64_t n_files, psp_error **err) {
  psp_dicom_source *src = psp_calloc(1, sizeof *src, err);
  if (!src) return NULL;
  const psp_dcm_instance *in = &s->inst[st->first_instance];
#define CP(field) snprintf(src->field, sizeof src->field, "%s", in->field)
  CP(study_uid);
  CP(series_uid);
  CP(frame_of_reference_uid);
  CP(sop_class_uid);
  CP(modality);
  CP(manufacturer);
  CP(series_description);
  CP(patient_name);
  CP(patient_id);
  CP(patient_birth_date);
  CP(patient_sex);
  CP(study_date);
  CP(study_time);
  CP(study_id);
  CP(accession_number);
  CP(referring_physician);
  CP(study_description);
#undef CP
  src->field_strength_t = in->field_strength;
  src->echo_time_ms = st->echo_time;
  src->repetition_time_ms = in->repetition_time;
  src->flip_angle_deg = in->flip_angle;
  src->n_files = n_files;
  psp_orientation o = psp_volume_orientation(v);
  int64_t dims[3];
  psp_volume_dims(v, dims);
  if (o.file_axis[2] != 2) return src; /* not an axial stack: no per-slice mapping */
  src->n_slices = dims[2];
  src->sop_instance_uid = psp_calloc((size_t)dims[2], sizeof *src->sop_instance_uid, err);
  src->frame_number = psp_calloc((size_t)dims[2], sizeof *src->frame_number, err);
  if (!src->sop_instance_uid || !src->frame_number) {
    psp_dicom_source_free(src);
    return NULL;
  }
  for (int64_t k = 0; k < dims[2]; k++) {
    const psp_dcm_plane *p = &s->planes[st->plane[psp_volume_file_slice(v, k)]];
    snprintf(src->sop_instance_uid[k], PSP_UID_LEN, "%s", s->inst[p->instance].sop_instance_uid);
    src->frame_number[k] = p->frame;
  }
  return src;
}

psp_volume *psp_dicom_load_stack(const psp_dicom_scan *s, int32_t si, bool allow_nan,
                                 psp_dicom_source **src_out, char sha256[65], psp_context *ctx,
                                 psp_error **err) {
  const psp_dicom_stack *st = &s->stacks[si];
  const psp_dcm_instance *in0 = &s->inst[st->first_instance];
  char name[256];
  snprintf(name, sizeof name, "%s: series %s", s->dir, in0->series_uid);
  if (src_out) *src_out = NULL;
  if (st->geometry_status != PSP_OK) {
    psp_error_set(err, st->geometry_status, "%s (\"%s\", %s): %s", name, in0->series_description,
                  psp_dixon_kind_name(st->kind), st->geometry_message);
    return NULL;
  }
  int64_t n = st->n_planes, plane_vox = (int64_t)st->rows * st->cols;
  double total = (double)plane_vox * (double)n;
  if (total > (double)psp_context_max_voxels(ctx)) {
    psp_error_set(err, PSP_ERR_LIMIT,
                  "%s: %d x %d x %lld = %.0f voxels exceeds the limit of %lld voxels (raise "
                  "--max-voxels)",
                  name, st->cols, st->rows, (long long)n, total,
                  (long long)psp_context_max_voxels(ctx));
    return NULL;
  }
  float *data = psp_malloc((size_t)total * sizeof(float), err);
  /* files in slice order (first appearance), and per file its slices */
  int32_t *files = psp_malloc((size_t)n * sizeof *files, err);
  float *frames = NULL;
  psp_volume *v = NULL;
  psp_dicom_source *src = NULL;
  int64_t n_files = 0;
  if (!data || !files) goto done;
  for (int64_t i = 0; i < n; i++) {
    int32_t f = s->planes[st->plane[i]].instance;
    bool seen = false;
    for (int64_t j = n_files - 1; j >= 0 && !seen; j--)
      seen = files[j] == f;
    if (!seen) files[n_files++] = f;
  }
  for (int64_t fi = 0; fi < n_files; fi++) {
    const psp_dcm_instance *in = &s->inst[files[fi]];
    size_t nf = (size_t)in->n_frames * (size_t)plane_vox;
    float *fr = realloc(frames, nf * sizeof *fr);
    if (!fr) {
      psp_error_set(err, PSP_ERR_NOMEM, "%s: out of memory decoding %s", name, in->path);
      goto done;
    }
    frames = fr;
    if (!psp_dcm_decode(in->path, in, s->toolkit_log, frames, err)) goto done;
    for (int64_t k = 0; k < n; k++) {
      const psp_dcm_plane *p = &s->planes[st->plane[k]];
      if (p->instance != files[fi]) continue;
      const float *sp = frames + (size_t)(p->frame > 0 ? p->frame - 1 : 0) * (size_t)plane_vox;
      float *dp = data + (size_t)k * (size_t)plane_vox;
      bool scale = !(p->slope == 1.0 && p->intercept == 0.0);
      for (int64_t q = 0; q < plane_vox; q++)
        dp[q] = scale ? (float)((double)sp[q] * p->slope + p->intercept) : sp[q];
    }
  }
  int64_t n_nan = 0, n_inf = 0;
  for (int64_t q = 0; q < plane_vox * n; q++) {
    if (isnan(data[q]))
      n_nan++;
    else if (isinf(data[q]))
      n_inf++;
  }
  if (n_inf > 0 || (n_nan > 0 && !allow_nan)) {
    psp_error_set(err, PSP_ERR_DATA,
                  "%s: %lld voxels are NaN and %lld infinite; the image is "
                  "unusable",
                  name, (long long)n_nan, (long long)n_inf);
    goto done;
  }
  double ras[4][4];
  memcpy(ras, st->affine_lps, sizeof ras);
  for (int c = 0; c < 4; c++) {
    ras[0][c] = -ras[0][c] + 0.0; /* + 0.0: no negative zeros in the outputs' headers */
    ras[1][c] = -ras[1][c] + 0.0;
  }
  int64_t fdims[3] = {st->cols, st->rows, n};
  v = psp_volume_from_file_order(data, fdims, ras, name, err);
  if (!v) goto done;
  if (sha256 && !hash_files(s, files, n_files, sha256, err)) goto fail;
  src = make_source(s, st, v, n_files, err);
  if (!src) goto fail;
  if (st->n_duplicates > 0)
    psp_warn(ctx,
             "DICOM series %s: %lld image(s) were present twice (same SOP Instance UID; copied "
             "twice?); each was used once",
             in0->series_uid, (long long)st->n_duplicates);
  if (n == 1)
    psp_warn(ctx,
             "DICOM series %s holds a single slice; its thickness (%.3g mm, from "
             "SpacingBetweenSlices / SliceThickness) is taken as the slice spacing",
             in0->series_uid, st->slice_step);
  {
    char code[4];
    psp_orientation_code(v, code);
    psp_log(ctx, PSP_LOG_DEBUG,
            "%s: %d x %d x %lld, %lld file(s), voxel axes %s, %.4g x %.4g x %.4g mm", name,
            st->cols, st->rows, (long long)n, (long long)n_files, code,
            sqrt(st->affine_lps[0][0] * st->affine_lps[0][0] +
                 st->affine_lps[1][0] * st->affine_lps[1][0] +
                 st->affine_lps[2][0] * st->affine_lps[2][0]),
            sqrt(st->affine_lps[0][1] * st->affine_lps[0][1] +
                 st->affine_lps[1][1] * st->affine_lps[1][1] +
                 st->affine_lps[2][1] * st->affine_lps[2][1]),
            st->slice_step);
  }
  if (src_out)
    *src_out = src;
  else
    psp_dicom_source_free(src);
  goto done;
fail:
  psp_volume_free(v);
  v = NULL;
done:
  free(data);
  free(files);
  free(frames);
  return v;
}
