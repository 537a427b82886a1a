/*
 * DESIGN: libFuzzer target for the DICOM reading bridge: one DICOM file
 * (kept in a memfd, which DCMTK opens by its /proc/self/fd path) goes
 * through the header reader (psp_dcm_read_header, src/io/dicom_dcmtk.cpp),
 * the scan layer (psp_dicom_scan_from_planes: grouping of the file's
 * frames into stacks, slice sorting, geometry checks, affine, Dixon
 * classification), the pairing (psp_dicom_choose) and the pixel decoding
 * of every stack whose geometry is usable (psp_dicom_load_stack ->
 * psp_dcm_decode). A multi-frame (enhanced) file exercises the whole
 * pipeline from one input. Errors must carry a status and a message.
 */
#define _GNU_SOURCE /* memfd_create */
#include "fuzz.h"

#include "io/dicom_read.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void check_err(psp_error *e) {
  if (!e || psp_error_code(e) == PSP_OK || !psp_error_message(e)[0]) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int fd = memfd_create("fuzz.dcm", 0);
  if (fd < 0) return 0;
  size_t done = 0;
  while (done < size) {
    ssize_t w = write(fd, data + done, size - done);
    if (w <= 0) break;
    done += (size_t)w;
  }
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  psp_dcm_instance *inst = calloc(1, sizeof *inst);
  psp_dcm_plane *planes = NULL;
  int32_t n_planes = 0;
  psp_error *err = NULL;
  int got = inst ? psp_dcm_read_header(path, false, inst, &planes, &n_planes, &err) : -1;
  if (got != 1) {
    if (got < 0 && inst) check_err(err);
    if (got == 0 && (err || planes)) abort();
    psp_error_free(err);
    free(inst);
    close(fd);
    return 0;
  }
  if (err || n_planes < 1 || !planes) abort();
  inst->path = strdup(path);
  psp_context *ctx = psp_context_create();
  psp_context_set_threads(ctx, 1);
  /* the scan owns inst and planes from here on, also on failure */
  psp_dicom_scan *s = psp_dicom_scan_from_planes("/fuzz", inst, 1, planes, n_planes, ctx, &err);
  if (!s) {
    check_err(err);
  } else {
    for (int32_t k = 0; k < s->n_stacks; k++) {
      char desc[512];
      psp_dicom_stack_describe(s, k, desc, sizeof desc);
      psp_dicom_source *src = NULL;
      char sha[65];
      psp_error *e2 = NULL;
      psp_volume *v = psp_dicom_load_stack(s, k, true, &src, sha, ctx, &e2);
      if (v) {
        if (e2 || !src) abort();
      } else {
        check_err(e2);
      }
      psp_volume_free(v);
      psp_dicom_source_free(src);
      psp_error_free(e2);
    }
    psp_dicom_choice c;
    psp_error *e3 = NULL;
    if (!psp_dicom_choose(s, NULL, &c, &e3)) check_err(e3);
    psp_error_free(e3);
    psp_dicom_scan_free(s);
  }
  psp_error_free(err);
  psp_context_free(ctx);
  close(fd);
  return 0;
}
