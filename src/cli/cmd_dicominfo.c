/*
 * DESIGN: `paraspinal dicominfo DIR`: what the DICOM reader sees in a
 * folder, for users and PACS administrators: every image stack (series x
 * image type x echo), its Dixon classification with the evidence, geometry
 * (or why it cannot be used), transfer syntax, the decoded value range, and
 * the pair `analyze --dicom` would choose (or why it would refuse). Patient
 * identifiers are printed only with --keep-identifiers. Exit code: 0 when
 * every stack could be read; else the code of the first failure (e.g. 9 for
 * a JPEG 2000 series, 4 for a damaged file).
 */
#include "cli/cli.h"
#include "core/internal.h"
#include "io/dicom_read.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char HELP[] =
    "Usage: paraspinal dicominfo DIR [options]\n"
    "\n"
    "Scans a DICOM folder tree (any file names; DICOMDIR not needed) and lists each image\n"
    "stack: series (UID, number, description), Dixon classification (water, fat, in-phase,\n"
    "opposed-phase, fat-fraction or other) with the evidence it rests on, geometry\n"
    "(orientation, matrix, slices, spacing; or why the stack cannot be used), transfer syntax,\n"
    "and the decoded value range (rescale applied). Then the pair 'analyze --dicom DIR' would\n"
    "use, or why it would refuse.\n"
    "\n"
    "Options:\n"
    "  --series UID[,UID]    consider only these SeriesInstanceUIDs (as analyze --series)\n"
    "  --keep-identifiers    also print patient name, ID, birth date and study details\n"
    "  --no-values           do not decode the pixel data (headers only; faster)\n"
    "  -v, --verbose         details on stderr, DCMTK's own warnings included\n"
    "  -h, --help            this help\n"
    "\n"
    "Exit codes: 0 all stacks readable, 3 folder unreadable, 4 damaged DICOM file, 9 a stack\n"
    "whose transfer syntax cannot be decoded (JPEG 2000), others as for analyze.\n";

enum { OPT_SERIES = 1000, OPT_KEEP_IDS, OPT_NO_VALUES };

static const struct option LONG_OPTS[] = {
    {"series", required_argument, NULL, OPT_SERIES},
    {"keep-identifiers", no_argument, NULL, OPT_KEEP_IDS},
    {"no-values", no_argument, NULL, OPT_NO_VALUES},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static void print_identifiers(const psp_dicom_scan *s) {
  /* one line per study (first instance seen of each) */
  for (int32_t i = 0; i < s->n_inst; i++) {
    bool seen = false;
    for (int32_t j = 0; j < i && !seen; j++)
      seen = !strcmp(s->inst[j].study_uid, s->inst[i].study_uid);
    if (seen) continue;
    const psp_dcm_instance *in = &s->inst[i];
    printf("study %s: patient \"%s\", ID \"%s\", born %s, sex %s; study date %s, ID \"%s\", "
           "accession \"%s\", \"%s\"\n",
           in->study_uid, in->patient_name, in->patient_id, in->patient_birth_date, in->patient_sex,
           in->study_date, in->study_id, in->accession_number, in->study_description);
  }
}

static const char *stack_transfer_syntax(const psp_dicom_scan *s, const psp_dicom_stack *st) {
  const char *ts = s->inst[st->first_instance].transfer_syntax_name;
  for (int64_t i = 0; i < st->n_planes; i++)
    if (strcmp(s->inst[s->planes[st->plane[i]].instance].transfer_syntax_name, ts)) return "mixed";
  return ts;
}

static bool in_list(const char *filter, const char *uid) {
  if (!filter) return true;
  size_t n = strlen(uid);
  for (const char *p = filter; (p = strstr(p, uid)) != NULL; p++) {
    bool start = p == filter || p[-1] == ',' || p[-1] == ' ';
    bool end = p[n] == '\0' || p[n] == ',' || p[n] == ' ';
    if (start && end) return true;
  }
  return false;
}

int psp_cmd_dicominfo(int argc, char **argv) {
  const char *cmd = "dicominfo";
  const char *series = NULL;
  bool keep = false, values = true, verbose = false;
  optind = 1;
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, ":vh", LONG_OPTS, NULL)) != -1) {
    switch (c) {
    case OPT_SERIES:
      series = optarg;
      break;
    case OPT_KEEP_IDS:
      keep = true;
      break;
    case OPT_NO_VALUES:
      values = false;
      break;
    case 'v':
      verbose = true;
      break;
    case 'h':
      fputs(HELP, stdout);
      return 0;
    case ':':
      return psp_cli_usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
    default:
      return psp_cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind >= argc) return psp_cli_usage_error(cmd, "missing the DICOM folder");
  if (optind + 1 < argc)
    return psp_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind + 1]);
  const char *dir = argv[optind];
  psp_context *ctx = psp_cli_context(cmd, verbose, 0);
  if (!ctx) return PSP_ERR_NOMEM;
  psp_error *err = NULL;
  psp_dicom_scan *s = psp_dicom_scan_dir(dir, verbose, ctx, &err);
  if (!s) {
    psp_context_free(ctx);
    return psp_cli_fail(cmd, err);
  }
  printf("%s: %d DICOM image file%s, %lld image plane%s; skipped %lld file%s that are not DICOM "
         "and %lld DICOM file%s without an image\n",
         dir, s->n_inst, s->n_inst == 1 ? "" : "s", (long long)s->n_planes,
         s->n_planes == 1 ? "" : "s", (long long)s->n_skipped_not_dicom,
         s->n_skipped_not_dicom == 1 ? "" : "s", (long long)s->n_skipped_no_image,
         s->n_skipped_no_image == 1 ? "" : "s");
  if (keep) print_identifiers(s);
  int rc = 0;
  for (int32_t i = 0; i < s->n_stacks; i++) {
    const psp_dicom_stack *st = &s->stacks[i];
    const psp_dcm_instance *in = &s->inst[st->first_instance];
    if (!in_list(series, in->series_uid)) continue;
    printf("\n[%d] series %s, #%d \"%s\", %s %s\n", i + 1, in->series_uid, in->series_number,
           in->series_description, in->manufacturer[0] ? in->manufacturer : "(no manufacturer)",
           in->modality);
    printf("    kind: %s (%s)\n", psp_dixon_kind_name(st->kind), st->kind_why);
    printf("    ImageType %s", st->image_type[0] ? st->image_type : "(none)");
    if (st->image_type_text[0]) printf(", ImageTypeText %s", st->image_type_text);
    if (!isnan(st->echo_time)) printf(", TE %.4g ms", st->echo_time);
    if (!isnan(in->repetition_time)) printf(", TR %.4g ms", in->repetition_time);
    if (!isnan(in->flip_angle)) printf(", flip angle %.3g deg", in->flip_angle);
    if (!isnan(in->field_strength)) printf(", %.3g T", in->field_strength);
    printf("\n");
    if (st->geometry_status == PSP_OK) {
      double sp[2];
      for (int a = 0; a < 2; a++)
        sp[a] = sqrt(st->affine_lps[0][a] * st->affine_lps[0][a] +
                     st->affine_lps[1][a] * st->affine_lps[1][a] +
                     st->affine_lps[2][a] * st->affine_lps[2][a]);
      printf("    geometry: %s (%.1f deg oblique), %d x %d x %lld, %.4g x %.4g x %.4g mm\n",
             st->orientation, st->obliquity_deg, st->cols, st->rows, (long long)st->n_planes, sp[0],
             sp[1], st->slice_step);
    } else {
      printf("    geometry: unusable (%s): %s\n", psp_status_name(st->geometry_status),
             st->geometry_message);
    }
    printf("    files: %lld%s%s, transfer syntax %s\n", (long long)st->n_files,
           st->multi_frame ? " (multi-frame)" : "", st->n_duplicates ? " (duplicates present)" : "",
           stack_transfer_syntax(s, st));
    if (!values || st->geometry_status != PSP_OK) continue;
    psp_error *e = NULL;
    psp_volume *v = psp_dicom_load_stack(s, i, true, NULL, NULL, ctx, &e);
    if (!v) {
      printf("    values: cannot be decoded (%s)\n", psp_status_name(psp_error_code(e)));
      fprintf(stderr, "paraspinal %s: error: %s\n", cmd, psp_error_message(e));
      if (!rc) rc = (int)psp_error_code(e);
      psp_error_free(e);
      continue;
    }
    const float *d = psp_volume_data(v);
    double lo = INFINITY, hi = -INFINITY, sum = 0;
    int64_t n = psp_volume_voxel_count(v), nf = 0;
    for (int64_t q = 0; q < n; q++) {
      if (!isfinite(d[q])) continue;
      lo = fmin(lo, d[q]);
      hi = fmax(hi, d[q]);
      sum += d[q];
      nf++;
    }
    char code[4];
    psp_orientation_code(v, code);
    if (nf)
      printf("    values: min %.6g, max %.6g, mean %.6f (%lld voxels%s), voxel axes %s\n", lo, hi,
             sum / (double)nf, (long long)nf, nf < n ? ", NaN present" : "", code);
    else
      printf("    values: all NaN, voxel axes %s\n", code);
    psp_volume_free(v);
  }
  psp_dicom_choice ch;
  psp_error *e = NULL;
  if (psp_dicom_choose(s, series, &ch, &e)) {
    printf("\nanalyze --dicom would use: %s [%d]", psp_dixon_kind_name(ch.kind[0]),
           ch.stack[0] + 1);
    if (ch.stack[1] >= 0) printf(" + %s [%d]", psp_dixon_kind_name(ch.kind[1]), ch.stack[1] + 1);
    printf("\n  (%s)\n", ch.why);
  } else {
    printf("\nanalyze --dicom would refuse (%s): %s\n", psp_status_name(psp_error_code(e)),
           psp_error_message(e));
    psp_error_free(e);
  }
  psp_dicom_scan_free(s);
  psp_context_free(ctx);
  return rc;
}
