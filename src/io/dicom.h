/*
 * DESIGN: internal interface between the DICOM code and the rest of the
 * library. Reading (src/io/dicom_dcmtk.cpp: the DCMTK bridge, and
 * src/io/dicom.c: series grouping, slice sorting, affine, Dixon pairing) hands
 * the pipeline plain psp_volume objects plus a psp_dicom_source describing the
 * study the images came from. Writing (DICOM SEG and Secondary Capture for a
 * PACS, and the phantom's DICOM series) takes that description so derived
 * objects land in the source study.
 *
 * Identifiers: the patient/study fields below are copied into derived DICOM
 * objects only. They never go into file names, logs, CSV or JSON unless the
 * user passed --keep-identifiers.
 */
#ifndef PSP_IO_DICOM_H
#define PSP_IO_DICOM_H

#include "paraspinal.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { PSP_UID_LEN = 65 };

/* The study and series a volume was read from. */
typedef struct psp_dicom_source {
  char study_uid[PSP_UID_LEN];
  char series_uid[PSP_UID_LEN];
  char frame_of_reference_uid[PSP_UID_LEN];
  char sop_class_uid[PSP_UID_LEN]; /* of the source images */
  char modality[17];
  char manufacturer[65];
  char series_description[65];
  /* Patient and study modules (copied into derived objects). */
  char patient_name[325];
  char patient_id[65];
  char patient_birth_date[9];
  char patient_sex[17];
  char study_date[9];
  char study_time[17];
  char study_id[17];
  char accession_number[17];
  char referring_physician[325];
  char study_description[65];
  /* Acquisition (NaN when absent): of the stack's first instance */
  double field_strength_t, echo_time_ms, repetition_time_ms, flip_angle_deg;
  /* One SOP Instance UID per internal slice k (k = 0 inferior), and for
   * enhanced multi-frame sources the frame number (1-based; 0 = single
   * frame). Owned by the source. */
  int64_t n_slices;
  char (*sop_instance_uid)[PSP_UID_LEN];
  int32_t *frame_number;
  /* Added by the reader: number of files the series was read from. For a
   * stack that is not axial, n_slices is 0 and the arrays are NULL. */
  int64_t n_files;
} psp_dicom_source;

void psp_dicom_source_free(psp_dicom_source *s);

/* The DICOM study/series an analysis read its images from (the first image
 * input: water, in-phase or FF map), or NULL when the inputs were NIfTI.
 * Borrowed from the result (implemented in src/pipeline.c). */
const psp_dicom_source *psp_result_dicom_source(const psp_result *r);

#ifdef __cplusplus
}
#endif

#endif
