/*
 * dicom_out.h — the DICOM outputs of `analyze --dicom-out` (internal, not
 * installed): a DICOM Segmentation of the muscles and Secondary Capture
 * images of the QC overlays with the per-level table burned in, both in the
 * source study. Written by src/report/report.c with the other outputs.
 */
#ifndef PSP_REPORT_DICOM_OUT_H
#define PSP_REPORT_DICOM_OUT_H

#include "core/internal.h"
#include "io/dicom.h"

/* Writes DIR/seg.dcm and DIR/sc_NNN.dcm (NNN = 001, 002, ... in table order,
 * superior level first), creating DIR. src describes the study the images
 * came from (psp_result_dicom_source); it must describe the result's axial
 * stack (one source image per slice). levels_csv is the run's levels.csv
 * text (NULL or header only: a few evenly spaced measured slices instead of
 * one image per level). When no slice holds a muscle label the SEG is
 * skipped with a warning (an empty SEG is not valid DICOM) and the SC images
 * still show why. Nothing identifying goes into file names or messages. */
bool psp_dicom_out_write(const psp_result *r, const psp_dicom_source *src, const char *levels_csv,
                         const char *dir, psp_context *ctx, psp_error **err);

/* Series numbers of the derived series (SEG, SC). */
enum { PSP_DICOM_OUT_SEG_SERIES = 9901, PSP_DICOM_OUT_SC_SERIES = 9902 };

#endif
