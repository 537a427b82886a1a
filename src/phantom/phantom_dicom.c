/*
 * DESIGN: the phantom as DICOM series (`paraspinal phantom --dicom`), the
 * test data of the DICOM reader and of the PACS round trip. One study with
 * synthetic identifiers (so identifier-leak tests have something to look
 * for), one Frame of Reference, one series per image (water, fat, in-phase,
 * opposed-phase, optionally a fat-fraction map in percent computed from the
 * written water and fat images), each on the volume's own file grid
 * (--orientation and --oblique carry over into ImageOrientationPatient).
 * The vendor conventions, single- or multi-frame and the transfer syntax
 * are the bridge's business (src/io/dicom_write_dcmtk.cpp).
 *
 * Folders DIR/series_NN (NN = the series number) say nothing about the
 * image type on purpose: a reader has to find the Dixon images from the
 * DICOM attributes. A folder is emptied before it is written, so a re-run
 * with fewer slices leaves no stale instances; on failure the folders
 * written by this call are removed again.
 *
 * UIDs are derived from the content (voxels, vendor, encoding, identifiers)
 * with psp_dicom_uid_derive: the same phantom and options give the same
 * bytes, and differently encoded copies never share a UID.
 */
#include "core/internal.h"
#include "io/dicom_write.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const IMAGE_NAMES[PSP_DICOM_IMAGE_COUNT] = {"water", "fat", "inphase",
                                                               "outphase", "ff"};
static const char *const VENDOR_NAMES[3] = {"siemens", "philips", "ge"};
static const char *const CODEC_NAMES[3] = {"none", "rle", "jpegls"};

void psp_phantom_dicom_options_default(psp_phantom_dicom_options *o) {
  memset(o, 0, sizeof *o);
  o->vendor = PSP_VENDOR_SIEMENS;
  o->codec = PSP_CODEC_NONE;
  o->series_mask = 0xF;
}

static void copy_field(char *dst, size_t n, const char *src) {
  snprintf(dst, n, "%s", src ? src : "");
}

/* Water, fat, in-phase, opposed-phase or FF (percent, from the written
 * water and fat images) in the file's voxel order. Caller frees. */
static float *image_data(const psp_phantom *p, psp_dicom_image im, psp_dicom_grid *g,
                         psp_error **err) {
  const psp_volume *w = psp_phantom_volume(p, "water");
  int64_t n = psp_volume_voxel_count(w);
  float *out = psp_malloc((size_t)n * sizeof *out, err);
  if (!out) return NULL;
  if (im != PSP_DICOM_FF) {
    psp_volume_to_file_order(psp_phantom_volume(p, IMAGE_NAMES[im]), out, g->dims, g->affine);
    return out;
  }
  float *fat = psp_malloc((size_t)n * sizeof *fat, err);
  if (!fat) {
    free(out);
    return NULL;
  }
  psp_volume_to_file_order(w, out, g->dims, g->affine);
  psp_volume_to_file_order(psp_phantom_volume(p, "fat"), fat, g->dims, g->affine);
  for (int64_t i = 0; i < n; i++) {
    double s = (double)out[i] + (double)fat[i];
    out[i] = s > 0 ? (float)(100.0 * fat[i] / s) : 0.0f;
  }
  free(fat);
  return out;
}

bool psp_phantom_write_dicom(const psp_phantom *p, const char *dir,
                             const psp_phantom_dicom_options *o, psp_error **err) {
  if (!p || !dir || !*dir || !o)
    return psp_error_set(err, PSP_ERR_USAGE, "phantom --dicom: no output folder given");
  if ((int)o->vendor < 0 || (int)o->vendor > 2 || (int)o->codec < 0 || (int)o->codec > 2)
    return psp_error_set(err, PSP_ERR_USAGE, "phantom --dicom: unknown vendor or compression");
  if ((o->series_mask & 0x1Fu) == 0 || (o->series_mask & ~0x1Fu) != 0)
    return psp_error_set(err, PSP_ERR_USAGE,
                         "phantom --dicom: choose at least one of water, fat, inphase, outphase, "
                         "ff");
  if (!psp_mkdir_p(dir, err)) return false;

  psp_dicom_source study;
  memset(&study, 0, sizeof study);
  copy_field(study.patient_name, sizeof study.patient_name,
             o->patient_name ? o->patient_name : "PHANTOM^TEST");
  copy_field(study.patient_id, sizeof study.patient_id,
             o->patient_id ? o->patient_id : "PSP-PHANTOM-0001");
  copy_field(study.patient_birth_date, sizeof study.patient_birth_date, "19700101");
  copy_field(study.patient_sex, sizeof study.patient_sex, "O");
  copy_field(study.study_date, sizeof study.study_date, "20240102");
  copy_field(study.study_time, sizeof study.study_time, "101500");
  copy_field(study.study_id, sizeof study.study_id, "PSP1");
  copy_field(study.accession_number, sizeof study.accession_number, "PSPACC0001");
  copy_field(study.referring_physician, sizeof study.referring_physician, "REFERRER^SYNTHETIC");
  copy_field(study.study_description, sizeof study.study_description,
             "LUMBAR SPINE DIXON (SYNTHETIC PHANTOM)");
  copy_field(study.modality, sizeof study.modality, "MR");

  /* the study's identity: every option that changes the bytes */
  char tag[512];
  snprintf(tag, sizeof tag, "paraspinal phantom|%s|%s|%s|%s|%s", VENDOR_NAMES[o->vendor],
           o->multiframe ? "multiframe" : "singleframe", CODEC_NAMES[o->codec], study.patient_id,
           study.patient_name);
  psp_dicom_grid g;
  float *data = image_data(p, PSP_DICOM_WATER, &g, err);
  if (!data) return false;
  size_t nbytes = (size_t)psp_volume_voxel_count(psp_phantom_volume(p, "water")) * sizeof(float);
  char t2[600];
  snprintf(t2, sizeof t2, "%s|study", tag);
  psp_dicom_uid_derive(t2, data, nbytes, study.study_uid);
  snprintf(t2, sizeof t2, "%s|frame-of-reference", tag);
  psp_dicom_uid_derive(t2, data, nbytes, study.frame_of_reference_uid);
  free(data);

  char version[64];
  snprintf(version, sizeof version, "paraspinal %s phantom", psp_version());
  bool written[PSP_DICOM_IMAGE_COUNT] = {false};
  bool ok = true;
  for (int im = 0; ok && im < PSP_DICOM_IMAGE_COUNT; im++) {
    if (!(o->series_mask & (1u << im))) continue;
    data = image_data(p, (psp_dicom_image)im, &g, err);
    if (!data) {
      ok = false;
      break;
    }
    psp_dicom_source s = study;
    snprintf(t2, sizeof t2, "%s|series|%s", tag, IMAGE_NAMES[im]);
    psp_dicom_uid_derive(t2, data, nbytes, s.series_uid);
    char sub[4096], name[32];
    snprintf(name, sizeof name, "series_%02d", im + 1);
    ok = psp_path_join(sub, sizeof sub, dir, name, err);
    if (ok) {
      psp_remove_tree_shallow(sub);
      ok = psp_mkdir_p(sub, err);
    }
    if (ok) {
      written[im] = true;
      psp_dicom_series_desc d = {.grid = g,
                                 .data = data,
                                 .image = (psp_dicom_image)im,
                                 .vendor = o->vendor,
                                 .multiframe = o->multiframe,
                                 .codec = o->codec,
                                 .src = &s,
                                 .series_number = im + 1,
                                 .software_version = version,
                                 .verbose = o->verbose};
      ok = psp_dicom_write_series(&d, sub, err);
    }
    free(data);
  }
  if (!ok) {
    psp_error_prefix(err, "%s: phantom DICOM series not written", dir);
    for (int im = 0; im < PSP_DICOM_IMAGE_COUNT; im++) {
      char sub[4096], name[32];
      snprintf(name, sizeof name, "series_%02d", im + 1);
      if (written[im] && psp_path_join(sub, sizeof sub, dir, name, NULL))
        psp_remove_tree_shallow(sub);
    }
  }
  return ok;
}
