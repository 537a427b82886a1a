/*
 * html.h — OUTDIR/report.html, the static quality-control page of an
 * analysis run (internal, not installed): header, warnings and flags, the
 * level assignment on the sagittal reformat, the per-level table and per
 * level the QC images of the chosen slices, with keyboard pass/fail/artefact
 * marks and an export of the marked levels (after the Spinal Cord Toolbox
 * QC report). Written by src/report/report.c with the other outputs.
 */
#ifndef PSP_HTML_H
#define PSP_HTML_H

#include "core/internal.h"
#include "report/qc_png.h"

/* Which images the page may reference (relative to OUTDIR). */
typedef struct psp_html_images {
  bool slices;                  /* qc/slice_NNN.png for every axial slice */
  bool sagittal;                /* qc/sagittal.png, with its geometry in sag */
  psp_qc_sagittal_geometry sag; /* used when sagittal is true */
} psp_html_images;

/* The text of report.html (caller frees; NULL and err set on failure).
 * levels_csv: the text of the run's levels.csv (psp_levels_csv; NULL or a
 * header-only text gives a page without levels). img may be NULL (no
 * images). Every text taken from the run (paths, names, messages) is
 * escaped. No time stamp and no output path is embedded, so the bytes
 * depend only on the inputs and options: the page finds its own folder name
 * at view time. */
char *psp_report_html(const psp_result *r, const char *levels_csv, const psp_html_images *img,
                      psp_context *ctx, psp_error **err);

/* Appends s to b with & < > " ' replaced by HTML entities (NULL = ""). */
void psp_html_escape(psp_strbuf *b, const char *s);

#endif
