/*
 * DESIGN: libFuzzer target for the NIfTI loader from memory
 * (psp_nifti_load_memory): NIfTI-1/NIfTI-2 header + voxel data, gzip or
 * not, either byte order. Each input is loaded twice — once with the
 * defaults (4-D refused, NaN refused) and once taking volume 1 of a 4-D file
 * with NaN allowed — so both option paths are covered. A loaded volume is
 * read back through the geometry accessors (spacing, areas, orientation,
 * grid comparison) so a malformed affine that slipped through would show.
 * The voxel limit stays at the default (2^31): the loader must refuse
 * absurd grids by itself, before allocating (run with -malloc_limit_mb).
 */
#include "fuzz.h"

#include "paraspinal.h"

#include <math.h>
#include <stdlib.h>

static void exercise(const psp_volume *v) {
  double sp[3], a[4][4];
  int64_t d[3];
  psp_volume_spacing(v, sp);
  psp_volume_affine(v, a);
  psp_volume_dims(v, d);
  char code[4];
  psp_orientation_code(v, code);
  /* a loaded grid has finite, positive spacing, area and volume */
  for (int c = 0; c < 3; c++)
    if (!(sp[c] > 0) || !isfinite(sp[c])) abort();
  double area = psp_volume_pixel_area(v), vol = psp_volume_voxel_volume(v);
  if (!(area > 0) || !isfinite(area) || !(vol > 0) || !isfinite(vol)) abort();
  double acc = area + vol + sp[0] + sp[1] + sp[2];
  acc += psp_volume_slice_z(v, d[2] - 1) + (double)psp_volume_file_slice(v, 0);
  const float *x = psp_volume_data(v);
  int64_t n = psp_volume_voxel_count(v);
  if (n != d[0] * d[1] * d[2]) abort();
  acc += (double)x[0] + (double)x[n - 1];
  char why[256];
  if (psp_grid_compare(v, v, why, sizeof why) != PSP_GRID_SAME) abort();
  /* every loaded voxel is finite unless NaN was allowed */
  volatile double sink = acc;
  (void)sink;
}

static void load_once(const uint8_t *data, size_t size, const psp_load_options *opt) {
  psp_context *ctx = psp_context_create();
  if (!ctx) return;
  psp_context_set_threads(ctx, 1);
  psp_error *err = NULL;
  psp_volume *v = psp_nifti_load_memory(data, size, "fuzz.nii", opt, ctx, &err);
  if (v) {
    if (err) abort(); /* success must not also report an error */
    exercise(v);
    const float *x = psp_volume_data(v);
    for (int64_t i = 0; i < psp_volume_voxel_count(v); i++)
      if (isinf(x[i]) || (isnan(x[i]) && !(opt && opt->allow_nan))) abort();
  } else {
    /* failure must come with a message and a real status code */
    if (!err || psp_error_code(err) == PSP_OK || !psp_error_message(err)[0]) abort();
  }
  psp_volume_free(v);
  psp_error_free(err);
  psp_context_free(ctx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  load_once(data, size, NULL);
  const psp_load_options second = {.volume_index = 1, .allow_nan = true};
  load_once(data, size, &second);
  /* NaN allowed on a 3-D file too (volume 1 of it is refused) */
  const psp_load_options third = {.volume_index = 0, .allow_nan = true};
  load_once(data, size, &third);
  return 0;
}
