/*
 * DESIGN: `paraspinal phantom`: parse options into psp_phantom_options
 * (fat fractions as fractions 0..1 or percent with a '%' sign; the file
 * orientation as a three-letter code), build the phantom with the library
 * and list what was written: NIfTI files with truth into -o, and/or DICOM
 * series in a vendor's conventions into --dicom.
 */
#include "cli/cli.h"

#include <ctype.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char PHANTOM_HELP[] =
    "Usage: paraspinal phantom -o OUTDIR [options]\n"
    "       paraspinal phantom --dicom DIR [--vendor V] [--multiframe] [--compress C] [options]\n"
    "\n"
    "Makes a synthetic lumbar axial Dixon phantom with known truth: water, fat, in-phase and\n"
    "opposed-phase images (uint16), the muscle labels, the true fat-fraction map, the true\n"
    "area and fat fraction per slice and muscle, and the vertebra/disc of every slice.\n"
    "\n"
    "Options:\n"
    "  -o, --out DIR            output folder (created if missing)\n"
    "  --prefix NAME            file name prefix (default: phantom)\n"
    "  --seed N                 random seed (default 1): same seed, same files\n"
    "  --snr X                  muscle signal / noise sigma (default 25; 0 = no noise)\n"
    "  --dims NX,NY,NZ          voxels left-right, anterior-posterior, inferior-superior\n"
    "                           (default 160,128,44)\n"
    "  --spacing SX,SY,SZ       voxel size in mm (default 2.5,2.5,5)\n"
    "  --ff-multifidus L,R      left and right multifidus fat fraction (default 8%,10%)\n"
    "  --ff-erector L,R         left and right erector spinae fat fraction (default 12%,15%)\n"
    "  --streaks FF,SHARE       fatty streaks inside the muscles: their fat fraction and the\n"
    "                           share of muscle voxels they take (default 60%,10%; 0,0 = none)\n"
    "  --bias A                 amplitude of the smooth multiplicative bias field, 0..0.9\n"
    "                           (default 0.2)\n"
    "  --orientation CODE       where the file axes i, j, k point, e.g. LPS (default), RAS,\n"
    "                           PLI, RPI; letters from L/R, P/A, S/I, each pair once\n"
    "  --oblique DEG            rotate the voxel grid about the k axis (-40..40 degrees)\n"
    "  --roll DEG               rotate the anatomy in the image plane (-30..30 degrees): a\n"
    "                           patient lying rolled; the truth is rotated with it\n"
    "\n"
    "DICOM (with or without -o):\n"
    "  --dicom DIR              write the images as DICOM series into DIR/series_NN/ (the\n"
    "                           folders are emptied first), one study, synthetic identifiers\n"
    "  --vendor V               siemens (default), philips or ge conventions (ImageType,\n"
    "                           FrameType, series descriptions; see README)\n"
    "  --multiframe             Enhanced MR Image Storage: one multi-frame file per series\n"
    "                           (default: MR Image Storage, one file per slice)\n"
    "  --compress C             none (default), rle (RLE Lossless) or jpegls (JPEG-LS\n"
    "                           Lossless)\n"
    "  --series LIST            which images: water,fat,inphase,outphase (default) and/or ff\n"
    "                           (fat-fraction map in percent)\n"
    "  --patient-name NAME      PatientName (default PHANTOM^TEST)\n"
    "  --patient-id ID          PatientID (default PSP-PHANTOM-0001)\n"
    "  -t, --threads N          OpenMP threads (default: all cores; output is the same)\n"
    "  -v, --verbose            progress on stderr\n"
    "  -h, --help               this help\n"
    "\n"
    "Fractions are written as 0..1 (0.08) or as percent with a % sign (8%).\n"
    "\n"
    "Files in OUTDIR (NAME = the prefix): NAME_water, NAME_fat, NAME_inphase, NAME_outphase\n"
    "(.nii.gz, uint16, muscle ~1000), NAME_dseg.nii.gz + NAME_dseg.tsv (1 left multifidus,\n"
    "2 right multifidus, 3 left erector spinae, 4 right erector spinae), NAME_fftruth.nii.gz\n"
    "(float32, noise-free FF 0..1), NAME_truth.csv (per slice and muscle: area_mm2,\n"
    "ff_mean_pct, ff_ratio_pct, n_voxels) and NAME_anatomy.csv (structure of every slice:\n"
    "L4, L4/L5, S1, ...).\n";

enum {
  OPT_PREFIX = 1000,
  OPT_SEED,
  OPT_SNR,
  OPT_DIMS,
  OPT_SPACING,
  OPT_FF_MF,
  OPT_FF_ES,
  OPT_STREAKS,
  OPT_BIAS,
  OPT_ORIENT,
  OPT_OBLIQUE,
  OPT_ROLL,
  OPT_DICOM,
  OPT_VENDOR,
  OPT_MULTIFRAME,
  OPT_COMPRESS,
  OPT_SERIES,
  OPT_PATIENT_NAME,
  OPT_PATIENT_ID,
};

static const struct option LONG_OPTS[] = {
    {"out", required_argument, NULL, 'o'},
    {"output", required_argument, NULL, 'o'},
    {"prefix", required_argument, NULL, OPT_PREFIX},
    {"seed", required_argument, NULL, OPT_SEED},
    {"snr", required_argument, NULL, OPT_SNR},
    {"dims", required_argument, NULL, OPT_DIMS},
    {"spacing", required_argument, NULL, OPT_SPACING},
    {"ff-multifidus", required_argument, NULL, OPT_FF_MF},
    {"ff-erector", required_argument, NULL, OPT_FF_ES},
    {"streaks", required_argument, NULL, OPT_STREAKS},
    {"bias", required_argument, NULL, OPT_BIAS},
    {"orientation", required_argument, NULL, OPT_ORIENT},
    {"oblique", required_argument, NULL, OPT_OBLIQUE},
    {"roll", required_argument, NULL, OPT_ROLL},
    {"dicom", required_argument, NULL, OPT_DICOM},
    {"vendor", required_argument, NULL, OPT_VENDOR},
    {"multiframe", no_argument, NULL, OPT_MULTIFRAME},
    {"compress", required_argument, NULL, OPT_COMPRESS},
    {"series", required_argument, NULL, OPT_SERIES},
    {"patient-name", required_argument, NULL, OPT_PATIENT_NAME},
    {"patient-id", required_argument, NULL, OPT_PATIENT_ID},
    {"threads", required_argument, NULL, 't'},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Splits "a,b[,c]" into exactly n fields (copied into buf). */
static bool split_list(const char *s, int n, char *buf, size_t buflen, char *fields[]) {
  if (strlen(s) >= buflen) return false;
  strcpy(buf, s);
  char *p = buf;
  for (int f = 0; f < n; f++) {
    fields[f] = p;
    char *comma = strchr(p, ',');
    if (f < n - 1) {
      if (!comma) return false;
      *comma = '\0';
      p = comma + 1;
    } else if (comma) {
      return false;
    }
  }
  return true;
}

/* A fraction 0..1, or percent 0..100 followed by '%'. */
static bool parse_fraction(char *s, double *out) {
  size_t n = strlen(s);
  bool pct = n > 0 && s[n - 1] == '%';
  if (pct) s[n - 1] = '\0';
  double v;
  if (!psp_cli_parse_double(s, &v) || !isfinite(v)) return false;
  if (pct) v /= 100.0;
  if (v < 0.0 || v > 1.0) return false;
  *out = v;
  return true;
}

static bool parse_fraction_pair(const char *s, double out[2]) {
  char buf[128], *f[2];
  return split_list(s, 2, buf, sizeof buf, f) && parse_fraction(f[0], &out[0]) &&
         parse_fraction(f[1], &out[1]);
}

/* "LPS", "RAS", "PLI", ...: file axis f points towards code[f]. */
static bool parse_orientation(const char *code, psp_orientation *o) {
  static const char pos[3] = {'L', 'P', 'S'}, neg[3] = {'R', 'A', 'I'};
  if (strlen(code) != 3) return false;
  bool seen[3] = {false, false, false};
  for (int f = 0; f < 3; f++) {
    char c = (char)toupper((unsigned char)code[f]);
    int a = -1;
    bool flip = false;
    for (int k = 0; k < 3; k++) {
      if (c == pos[k]) a = k;
      if (c == neg[k]) {
        a = k;
        flip = true;
      }
    }
    if (a < 0 || seen[a]) return false;
    seen[a] = true;
    o->file_axis[a] = f;
    o->flip[a] = flip;
  }
  return true;
}

/* "water,fat,ff" -> bit mask (bit n = psp_dicom_image n); 0 on a bad item. */
static unsigned parse_series(const char *s) {
  static const char *const names[] = {"water", "fat", "inphase", "outphase", "ff"};
  unsigned mask = 0;
  char buf[128];
  if (strlen(s) >= sizeof buf) return 0;
  strcpy(buf, s);
  for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
    unsigned bit = 0;
    for (unsigned n = 0; n < 5; n++)
      if (!strcmp(tok, names[n])) bit = 1u << n;
    if (!bit) return 0;
    mask |= bit;
  }
  return mask;
}

/* DICOM text fields: printable ASCII without the value separator. */
static bool dicom_text_ok(const char *s, size_t max) {
  size_t n = strlen(s);
  if (n == 0 || n > max) return false;
  for (size_t i = 0; i < n; i++)
    if (s[i] < 32 || s[i] > 126 || s[i] == '\\') return false;
  return true;
}

static int parse_args(const char *cmd, int argc, char **argv, psp_phantom_options *o,
                      psp_phantom_dicom_options *dcm, const char **dicom_dir, const char **out,
                      const char **prefix, bool *verbose, long long *threads, bool *help) {
  char buf[256], *f[3];
  optind = 1;
  opterr = 0;
  int c;
  while ((c = getopt_long(argc, argv, ":o:t:vh", LONG_OPTS, NULL)) != -1) {
    switch (c) {
    case 'o':
      *out = optarg;
      break;
    case OPT_PREFIX:
      if (!*optarg || strchr(optarg, '/'))
        return psp_cli_usage_error(cmd, "--prefix needs a file name prefix without '/', not '%s'",
                                   optarg);
      *prefix = optarg;
      break;
    case OPT_SEED: {
      long long v;
      if (!psp_cli_parse_int(optarg, &v) || v < 0)
        return psp_cli_usage_error(cmd, "--seed needs an integer >= 0, not '%s'", optarg);
      o->seed = (uint64_t)v;
    } break;
    case OPT_SNR:
      if (!psp_cli_parse_double(optarg, &o->snr) ||
          !(o->snr == 0 || (o->snr >= 1 && o->snr <= 1e5)))
        return psp_cli_usage_error(cmd,
                                   "--snr needs 0 (no noise) or a number from 1 to 100000, "
                                   "not '%s'",
                                   optarg);
      break;
    case OPT_DIMS:
      if (!split_list(optarg, 3, buf, sizeof buf, f))
        return psp_cli_usage_error(cmd, "--dims needs NX,NY,NZ, not '%s'", optarg);
      for (int a = 0; a < 3; a++) {
        long long v;
        if (!psp_cli_parse_int(f[a], &v) || v < 4 || v > 4096)
          return psp_cli_usage_error(cmd, "--dims: each size must be 4..4096 voxels, not '%s'",
                                     f[a]);
        o->dims[a] = v;
      }
      break;
    case OPT_SPACING:
      if (!split_list(optarg, 3, buf, sizeof buf, f))
        return psp_cli_usage_error(cmd, "--spacing needs SX,SY,SZ in mm, not '%s'", optarg);
      for (int a = 0; a < 3; a++)
        if (!psp_cli_parse_double(f[a], &o->spacing[a]) ||
            !(o->spacing[a] >= 0.1 && o->spacing[a] <= 50))
          return psp_cli_usage_error(cmd, "--spacing: each value must be 0.1..50 mm, not '%s'",
                                     f[a]);
      break;
    case OPT_FF_MF:
      if (!parse_fraction_pair(optarg, o->ff_multifidus))
        return psp_cli_usage_error(cmd,
                                   "--ff-multifidus needs L,R as fractions 0..1 or percent "
                                   "with %% (e.g. 8%%,10%%), not '%s'",
                                   optarg);
      break;
    case OPT_FF_ES:
      if (!parse_fraction_pair(optarg, o->ff_erector))
        return psp_cli_usage_error(cmd,
                                   "--ff-erector needs L,R as fractions 0..1 or percent "
                                   "with %% (e.g. 12%%,15%%), not '%s'",
                                   optarg);
      break;
    case OPT_STREAKS: {
      double v[2];
      if (!parse_fraction_pair(optarg, v) || v[1] > 0.9)
        return psp_cli_usage_error(cmd,
                                   "--streaks needs FF,SHARE (fractions 0..1 or percent "
                                   "with %%; share at most 90%%), not '%s'",
                                   optarg);
      o->streak_ff = v[0];
      o->streak_share = v[1];
    } break;
    case OPT_BIAS:
      if (!psp_cli_parse_double(optarg, &o->bias_amplitude) ||
          !(o->bias_amplitude >= 0 && o->bias_amplitude <= 0.9))
        return psp_cli_usage_error(cmd, "--bias needs an amplitude from 0 to 0.9, not '%s'",
                                   optarg);
      break;
    case OPT_ORIENT:
      if (!parse_orientation(optarg, &o->orientation))
        return psp_cli_usage_error(cmd,
                                   "--orientation needs three letters, one of L/R, one of P/A "
                                   "and one of S/I (e.g. LPS, RAS, PLI), not '%s'",
                                   optarg);
      break;
    case OPT_OBLIQUE:
      if (!psp_cli_parse_double(optarg, &o->oblique_deg) ||
          !(o->oblique_deg >= -40 && o->oblique_deg <= 40))
        return psp_cli_usage_error(cmd, "--oblique needs an angle from -40 to 40 degrees, not '%s'",
                                   optarg);
      break;
    case OPT_ROLL:
      if (!psp_cli_parse_double(optarg, &o->roll_deg) || !(o->roll_deg >= -30 && o->roll_deg <= 30))
        return psp_cli_usage_error(cmd, "--roll needs an angle from -30 to 30 degrees, not '%s'",
                                   optarg);
      break;
    case OPT_DICOM:
      *dicom_dir = optarg;
      break;
    case OPT_VENDOR:
      if (!strcmp(optarg, "siemens"))
        dcm->vendor = PSP_VENDOR_SIEMENS;
      else if (!strcmp(optarg, "philips"))
        dcm->vendor = PSP_VENDOR_PHILIPS;
      else if (!strcmp(optarg, "ge"))
        dcm->vendor = PSP_VENDOR_GE;
      else
        return psp_cli_usage_error(cmd, "--vendor must be siemens, philips or ge, not '%s'",
                                   optarg);
      break;
    case OPT_MULTIFRAME:
      dcm->multiframe = true;
      break;
    case OPT_COMPRESS:
      if (!strcmp(optarg, "none"))
        dcm->codec = PSP_CODEC_NONE;
      else if (!strcmp(optarg, "rle"))
        dcm->codec = PSP_CODEC_RLE;
      else if (!strcmp(optarg, "jpegls"))
        dcm->codec = PSP_CODEC_JPEGLS;
      else
        return psp_cli_usage_error(cmd, "--compress must be none, rle or jpegls, not '%s'", optarg);
      break;
    case OPT_SERIES:
      dcm->series_mask = parse_series(optarg);
      if (!dcm->series_mask)
        return psp_cli_usage_error(cmd,
                                   "--series needs a comma-separated list of water, fat, inphase, "
                                   "outphase, ff, not '%s'",
                                   optarg);
      break;
    case OPT_PATIENT_NAME:
      if (!dicom_text_ok(optarg, 64))
        return psp_cli_usage_error(cmd, "--patient-name needs 1-64 printable ASCII characters "
                                        "without '\\'");
      dcm->patient_name = optarg;
      break;
    case OPT_PATIENT_ID:
      if (!dicom_text_ok(optarg, 64))
        return psp_cli_usage_error(cmd, "--patient-id needs 1-64 printable ASCII characters "
                                        "without '\\'");
      dcm->patient_id = optarg;
      break;
    case 't':
      if (!psp_cli_parse_int(optarg, threads) || *threads < 1 || *threads > 1024)
        return psp_cli_usage_error(cmd, "--threads needs a number from 1 to 1024, not '%s'",
                                   optarg);
      break;
    case 'v':
      *verbose = true;
      dcm->verbose = true;
      break;
    case 'h':
      *help = true;
      return 0;
    case ':':
      return psp_cli_usage_error(cmd, "option '%s' needs a value", argv[optind - 1]);
    default:
      return psp_cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind < argc) return psp_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
  if (!*out && !*dicom_dir) return psp_cli_usage_error(cmd, "missing -o OUTDIR (or --dicom DIR)");
  return 0;
}

int psp_cmd_phantom(int argc, char **argv) {
  const char *cmd = "phantom";
  psp_phantom_options o;
  psp_phantom_options_default(&o);
  psp_phantom_dicom_options dcm;
  psp_phantom_dicom_options_default(&dcm);
  const char *out = NULL, *prefix = "phantom", *dicom_dir = NULL;
  bool verbose = false, help = false;
  long long threads = 0;
  int rc =
      parse_args(cmd, argc, argv, &o, &dcm, &dicom_dir, &out, &prefix, &verbose, &threads, &help);
  if (rc != 0) return rc;
  if (help) {
    fputs(PHANTOM_HELP, stdout);
    return 0;
  }
  psp_context *ctx = psp_cli_context(cmd, verbose, (int)threads);
  if (!ctx) return PSP_ERR_NOMEM;
  psp_error *err = NULL;
  psp_phantom *p = psp_phantom_create(&o, ctx, &err);
  if (!p || (out && !psp_phantom_write(p, out, prefix, &err)) ||
      (dicom_dir && !psp_phantom_write_dicom(p, dicom_dir, &dcm, &err))) {
    rc = psp_cli_fail(cmd, err);
  } else {
    char code[4];
    psp_orientation_code(psp_phantom_volume(p, "water"), code);
    printf("phantom: %lld x %lld x %lld voxels of %g x %g x %g mm, orientation %s, oblique %g "
           "deg, roll %g deg, seed %llu, SNR %g\n",
           (long long)o.dims[0], (long long)o.dims[1], (long long)o.dims[2], o.spacing[0],
           o.spacing[1], o.spacing[2], code, o.oblique_deg, o.roll_deg, (unsigned long long)o.seed,
           o.snr);
    printf("fat fraction: multifidus L %.1f%% R %.1f%%, erector spinae L %.1f%% R %.1f%%, "
           "streaks %.1f%% FF in %.1f%% of muscle, bias amplitude %g\n",
           100 * o.ff_multifidus[0], 100 * o.ff_multifidus[1], 100 * o.ff_erector[0],
           100 * o.ff_erector[1], 100 * o.streak_ff, 100 * o.streak_share, o.bias_amplitude);
    static const char *const suffixes[] = {"_water.nii.gz",    "_fat.nii.gz",  "_inphase.nii.gz",
                                           "_outphase.nii.gz", "_dseg.nii.gz", "_dseg.tsv",
                                           "_fftruth.nii.gz",  "_truth.csv",   "_anatomy.csv"};
    for (size_t i = 0; out && i < sizeof suffixes / sizeof suffixes[0]; i++)
      printf("wrote %s/%s%s\n", out, prefix, suffixes[i]);
    static const char *const images[] = {"water", "fat", "in-phase", "opposed-phase",
                                         "fat fraction (percent)"};
    static const char *const vendors[] = {"Siemens", "Philips", "GE"};
    static const char *const codecs[] = {"uncompressed", "RLE Lossless", "JPEG-LS Lossless"};
    for (unsigned n = 0; dicom_dir && n < 5; n++)
      if (dcm.series_mask & (1u << n))
        printf("wrote %s/series_%02u/ (%s, %s conventions, %s, %s)\n", dicom_dir, n + 1, images[n],
               vendors[dcm.vendor], dcm.multiframe ? "enhanced multi-frame" : "single-frame",
               codecs[dcm.codec]);
  }
  psp_phantom_free(p);
  psp_context_free(ctx);
  return rc;
}
