/*
 * DESIGN: report.html, one static page per analysis run, modelled on the
 * Spinal Cord Toolbox QC report: a reviewer walks through the levels with
 * the keyboard, marks each one pass / fail / artefact, and exports the
 * marked levels as a small text file that correction scripts can read.
 *
 * Content, top to bottom: a header (tool version, inputs with SHA-256,
 * segmentation method, label scheme, FF source, grid; no date and no output
 * path, so the bytes depend only on the run's inputs and options and are
 * identical at any thread count); all warnings and flags (the run's
 * warnings as in report.json, the level flags, the water-fat plausibility
 * check, how much of the multifidus/erector spinae boundary lies on a
 * visible fat plane, the slices the segmentation flagged with their
 * reasons); the level
 * assignment (qc/sagittal.png with the discs marked, the method, anchor and
 * the disc list); the per-level table (one row per level); then one card
 * per level (disc and vertebra, inferior to superior, the levels of
 * levels.csv) with the QC image of the slice the level's numbers come from
 * (qc/slice_NNN.png: water and FF panels with the four contours) and its
 * metrics per muscle x side. The numbers are those of levels.csv: the page
 * parses the CSV text the run writes (by column name), so the two can never
 * disagree.
 *
 * Images are referenced by relative path (qc/...), only when the run wrote
 * them (--no-qc: none, and the page says so). CSS and JavaScript are
 * inline; nothing is loaded from the network. Every text inserted from the
 * run (paths, level names, messages) is HTML-escaped; the script reads its
 * data from data- attributes of escaped elements, never from inline JSON.
 *
 * Keyboard (ignored with Ctrl/Alt/Meta so browser shortcuts still work):
 * j / ArrowDown / ArrowRight next level, k / ArrowUp / ArrowLeft previous,
 * p pass, f fail, a artefact (pressing the same mark again clears it),
 * x clears, e exports. The marks are kept in the browser's localStorage
 * under the page's path (lost only with the browser's storage). Export:
 * qc_fails.txt, one line per level marked fail or artefact:
 * "LEVEL<TAB>MARK<TAB>FOLDER", FOLDER being the name of the folder that
 * holds report.html (the analysis output folder). Clicking the sagittal
 * image selects the level of the slice under the pointer.
 */
#include "report/html.h"

#include "levels/levels.h"
#include "segment/segment.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void psp_html_escape(psp_strbuf *b, const char *s) {
  if (!s) return;
  char run[256];
  size_t n = 0;
  for (; *s; s++) {
    const char *ent = NULL;
    switch (*s) {
    case '&':
      ent = "&amp;";
      break;
    case '<':
      ent = "&lt;";
      break;
    case '>':
      ent = "&gt;";
      break;
    case '"':
      ent = "&quot;";
      break;
    case '\'':
      ent = "&#39;";
      break;
    default:
      break;
    }
    if (ent || n + 1 >= sizeof run) {
      run[n] = '\0';
      psp_strbuf_append(b, run);
      n = 0;
    }
    if (ent)
      psp_strbuf_append(b, ent);
    else
      run[n++] = *s;
  }
  run[n] = '\0';
  psp_strbuf_append(b, run);
}

/* Shorthands: E escapes, T appends a literal. */
static void E(psp_strbuf *b, const char *s) {
  psp_html_escape(b, s);
}
static void T(psp_strbuf *b, const char *s) {
  psp_strbuf_append(b, s);
}

/* ------------------------------------------------------------------------ */
/* levels.csv, parsed by column name                                         */
/* ------------------------------------------------------------------------ */

typedef struct csv_table {
  char *buf;
  char **cell; /* nrows x ncols, row 0 = header */
  size_t nrows, ncols;
} csv_table;

static void csv_free(csv_table *t) {
  free(t->buf);
  free(t->cell);
  memset(t, 0, sizeof *t);
}

/* Splits plain CSV (no quoting: levels.csv has none) into cells. Short rows
 * get empty cells. */
static bool csv_parse(const char *text, csv_table *t, psp_error **err) {
  memset(t, 0, sizeof *t);
  if (!text) return true;
  size_t len = strlen(text), lines = 0, ncols = 1;
  for (size_t i = 0; i < len; i++)
    if (text[i] == '\n') lines++;
  if (len && text[len - 1] != '\n') lines++;
  for (size_t i = 0; i < len && text[i] != '\n'; i++)
    if (text[i] == ',') ncols++;
  t->buf = psp_malloc(len + 1, err);
  t->cell = psp_calloc(lines ? lines * ncols : 1, sizeof *t->cell, err);
  if (!t->buf || !t->cell) {
    csv_free(t);
    return false;
  }
  memcpy(t->buf, text, len + 1);
  t->ncols = ncols;
  static char empty[1] = "";
  char *p = t->buf;
  while (*p && t->nrows < lines) {
    char *eol = strchr(p, '\n');
    if (eol) *eol = '\0';
    if (*p) {
      char **row = t->cell + t->nrows * ncols;
      size_t c = 0;
      char *q = p;
      for (;;) {
        char *comma = strchr(q, ',');
        if (comma) *comma = '\0';
        if (c < ncols) row[c++] = q;
        if (!comma) break;
        q = comma + 1;
      }
      for (; c < ncols; c++)
        row[c] = empty;
      t->nrows++;
    }
    if (!eol) break;
    p = eol + 1;
  }
  return true;
}

static int csv_col(const csv_table *t, const char *name) {
  for (size_t c = 0; c < t->ncols && t->nrows > 0; c++)
    if (!strcmp(t->cell[c], name)) return (int)c;
  return -1;
}

static const char *csv_get(const csv_table *t, size_t row, int col) {
  if (col < 0 || row >= t->nrows) return "";
  return t->cell[row * t->ncols + (size_t)col];
}

/* Column indices the page uses. */
enum {
  C_LEVEL,
  C_KIND,
  C_BELOW,
  C_ABOVE,
  C_CONF,
  C_MUSCLE,
  C_SIDE,
  C_SLICE,
  C_FILE_SLICE,
  C_TARGET,
  C_DIST,
  C_AREA,
  C_FF_MEAN,
  C_FF_RATIO,
  C_FCSA,
  C_INFIL,
  C_ASYM,
  C_GRADE,
  C_SEG_FIRST,
  C_SEG_LAST,
  C_SEG_N,
  C_SEG_COMPLETE,
  C_SEG_AREA,
  C_SEG_FF,
  C_SEG_VOL,
  C_COUNT
};
static const char *const COL_NAMES[C_COUNT] = {
    "level",
    "kind",
    "disc_below",
    "disc_above",
    "level_confidence",
    "muscle",
    "side",
    "slice",
    "file_slice",
    "target_file_slice",
    "slice_distance_mm",
    "area_mm2",
    "ff_mean_pct",
    "ff_ratio_pct",
    "fcsa_mm2",
    "fat_infiltration_pct",
    "asym_area_pct",
    "fat_grade_research_only",
    "seg_first_file_slice",
    "seg_last_file_slice",
    "seg_n_slices",
    "seg_complete",
    "seg_area_mm2_mean",
    "seg_ff_mean_pct_mean",
    "seg_volume_mm3",
};

/* One level: rows first .. first + n - 1 of the table. */
typedef struct level_ref {
  size_t first, n;
} level_ref;

typedef struct page {
  const psp_result *r;
  const psp_levels *lv;
  const psp_segmentation *seg;
  const psp_volume *grid;
  const psp_html_images *img;
  csv_table t;
  int col[C_COUNT];
  level_ref *levels;
  size_t n_levels;
} page;

static const char *val(const page *pg, size_t row, int c) {
  return csv_get(&pg->t, row, pg->col[c]);
}

/* The row of a level for muscle x side, or (size_t)-1. */
static size_t level_row(const page *pg, const level_ref *L, const char *muscle, const char *side) {
  for (size_t i = L->first; i < L->first + L->n; i++)
    if (!strcmp(val(pg, i, C_MUSCLE), muscle) && !strcmp(val(pg, i, C_SIDE), side)) return i;
  return (size_t)-1;
}

/* A numeric cell reformatted with dec decimals; an en dash when empty. */
static void numcell(psp_strbuf *b, const char *s, int dec) {
  char *end = NULL;
  double v = s && *s ? strtod(s, &end) : NAN;
  if (!s || !*s || !end || *end || !isfinite(v)) {
    T(b, "&ndash;");
    return;
  }
  char t[64];
  snprintf(t, sizeof t, "%.*f", dec, v);
  if (!strcmp(t, "-0") || !strcmp(t, "-0.0") || !strcmp(t, "-0.00")) memmove(t, t + 1, strlen(t));
  T(b, t);
}

static void numrow(psp_strbuf *b, const page *pg, size_t row, int c, int dec) {
  numcell(b, row == (size_t)-1 ? "" : val(pg, row, c), dec);
}

/* "a / b" of two rows' values. */
static void pair_cell(psp_strbuf *b, const page *pg, size_t r1, size_t r2, int c, int dec) {
  T(b, "<td class=\"num\">");
  numrow(b, pg, r1, c, dec);
  T(b, " / ");
  numrow(b, pg, r2, c, dec);
  T(b, "</td>");
}

static void text_pair_cell(psp_strbuf *b, const page *pg, size_t r1, size_t r2, int c) {
  T(b, "<td class=\"nw\">");
  const char *a = r1 == (size_t)-1 ? "" : val(pg, r1, c),
             *z = r2 == (size_t)-1 ? "" : val(pg, r2, c);
  E(b, *a ? a : "-");
  T(b, " / ");
  E(b, *z ? z : "-");
  T(b, "</td>");
}

static bool build_levels(page *pg, psp_error **err) {
  for (int c = 0; c < C_COUNT; c++)
    pg->col[c] = csv_col(&pg->t, COL_NAMES[c]);
  if (pg->t.nrows < 2 || pg->col[C_LEVEL] < 0 || pg->col[C_KIND] < 0) return true;
  pg->levels = psp_calloc(pg->t.nrows, sizeof *pg->levels, err);
  if (!pg->levels) return false;
  for (size_t i = 1; i < pg->t.nrows; i++) {
    level_ref *last = pg->n_levels ? &pg->levels[pg->n_levels - 1] : NULL;
    if (last && !strcmp(val(pg, i, C_LEVEL), val(pg, last->first, C_LEVEL)) &&
        !strcmp(val(pg, i, C_KIND), val(pg, last->first, C_KIND))) {
      last->n++;
      continue;
    }
    pg->levels[pg->n_levels].first = i;
    pg->levels[pg->n_levels].n = 1;
    pg->n_levels++;
  }
  return true;
}

/* Internal slice of a level's row, or -1. */
static int64_t level_slice(const page *pg, const level_ref *L) {
  const char *s = val(pg, L->first, C_SLICE);
  if (!*s) return -1;
  char *end = NULL;
  long long k = strtoll(s, &end, 10);
  int64_t d[3];
  psp_volume_dims(pg->grid, d);
  if (!end || *end || k < 0 || k >= d[2]) return -1;
  return (int64_t)k;
}

/* ------------------------------------------------------------------------ */
/* Page sections                                                             */
/* ------------------------------------------------------------------------ */

static const char *CSS =
    "*{box-sizing:border-box}"
    "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;"
    "color:#1d1d1f;background:#f4f4f6}"
    "main{max-width:1180px;margin:0 auto;padding:0 16px 48px}"
    "h1{font-size:22px;margin:18px 0 4px}h2{font-size:18px;margin:28px 0 8px;"
    "border-bottom:1px solid #ccc;padding-bottom:4px}h3{font-size:16px;margin:0 0 6px}"
    "code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}"
    "table{border-collapse:collapse;background:#fff;margin:6px 0}"
    "th,td{border:1px solid #d6d6da;padding:3px 7px;text-align:left;vertical-align:top}"
    "th{background:#ececf0;font-weight:600}td.num{text-align:right;font-variant-numeric:"
    "tabular-nums;white-space:nowrap}"
    ".bar{position:sticky;top:0;z-index:5;background:#23262d;color:#eee;padding:7px 16px;"
    "display:flex;gap:18px;align-items:center;flex-wrap:wrap}"
    ".bar kbd{background:#444;border-radius:3px;padding:0 5px;font-size:12px}"
    ".bar button,.card button{font:inherit;border:1px solid #888;border-radius:4px;"
    "padding:2px 10px;cursor:pointer;background:#fff}"
    ".warn{background:#fff6e5;border-left:4px solid #e69f00;padding:6px 10px;margin:6px 0}"
    ".ok{background:#eaf6ef;border-left:4px solid #009e73;padding:6px 10px;margin:6px 0}"
    ".muted{color:#666}ul.flags{margin:4px 0;padding-left:20px}"
    ".sag img{max-width:100%;height:auto;cursor:crosshair;background:#181818}"
    ".card{background:#fff;border:3px solid #d6d6da;border-radius:6px;padding:10px 12px;"
    "margin:14px 0;scroll-margin-top:56px}"
    ".card.current{box-shadow:0 0 0 3px #0072b2}"
    ".card[data-mark=pass]{border-color:#009e73}.card[data-mark=fail]{border-color:#d55e00}"
    ".card[data-mark=artefact]{border-color:#cc79a7}"
    ".badge{display:inline-block;min-width:80px;text-align:center;border-radius:10px;"
    "padding:0 8px;font-size:12px;margin-left:10px;background:#ddd;color:#333}"
    ".badge.pass{background:#009e73;color:#fff}.badge.fail{background:#d55e00;color:#fff}"
    ".badge.artefact{background:#cc79a7;color:#fff}"
    "tr.lvrow{cursor:pointer}tr.lvrow.current td{background:#e3f0fa}"
    "tr.lvrow[data-mark=pass] td.qc{color:#007a59;font-weight:600}"
    "tr.lvrow[data-mark=fail] td.qc{color:#b34700;font-weight:600}"
    "tr.lvrow[data-mark=artefact] td.qc{color:#a0507f;font-weight:600}"
    ".card img{max-width:100%;height:auto;display:block;margin:6px 0;background:#181818}"
    "img.broken{min-height:40px;outline:3px solid #d55e00}"
    ".meta{margin:2px 0;color:#333}.flag{color:#b34700;font-weight:600}.nw{white-space:nowrap}";

static void section_header(psp_strbuf *b, const page *pg) {
  const psp_result *r = pg->r;
  T(b, "<h1>paraspinal QC report</h1>\n<p class=\"muted\">paraspinal ");
  E(b, psp_version());
  T(b, " &middot; output folder <code id=\"folder\"></code> &middot; the numbers are those of "
       "<code>levels.csv</code>, <code>slices.csv</code> and <code>report.json</code> beside "
       "this page</p>\n<table>\n<tr><th>input</th><th>path</th><th>SHA-256</th></tr>\n");
  for (int i = 0; i < psp_result_input_count(r); i++) {
    const char *role, *path, *sha;
    const psp_volume *v;
    psp_result_input(r, i, &role, &path, &sha, &v);
    T(b, "<tr><td>");
    E(b, role);
    T(b, "</td><td class=\"mono\">");
    E(b, path);
    T(b, "</td><td class=\"mono\" title=\"");
    E(b, sha);
    T(b, "\">");
    char shortsha[17];
    snprintf(shortsha, sizeof shortsha, "%s", sha ? sha : "");
    E(b, shortsha);
    T(b, "&hellip;</td></tr>\n");
  }
  T(b, "</table>\n<table>\n<tr><th>segmentation</th><td>");
  E(b, pg->seg ? psp_segmentation_method(pg->seg) : "labels given with --labels");
  T(b, "</td></tr>\n<tr><th>label scheme</th><td>");
  E(b, psp_result_scheme_name(r));
  T(b, "</td></tr>\n<tr><th>fat fraction from</th><td>");
  E(b, psp_ffmap_source(psp_result_ffmap(r)));
  T(b, "</td></tr>\n<tr><th>geometry from</th><td>");
  E(b, psp_result_geometry_source(r));
  int64_t d[3];
  double sp[3];
  psp_volume_dims(pg->grid, d);
  psp_volume_spacing(pg->grid, sp);
  psp_strbuf_printf(b,
                    "</td></tr>\n<tr><th>grid</th><td>%lld &times; %lld &times; %lld voxels of "
                    "%.3g &times; %.3g &times; %.3g mm</td></tr>\n</table>\n",
                    (long long)d[0], (long long)d[1], (long long)d[2], sp[0], sp[1], sp[2]);
}

static void section_toolbar(psp_strbuf *b) {
  T(b,
    "<div class=\"bar\" id=\"bar\"><span><b>Review</b>: <kbd>j</kbd>/<kbd>&darr;</kbd> next "
    "level, <kbd>k</kbd>/<kbd>&uarr;</kbd> previous, <kbd>p</kbd> pass, <kbd>f</kbd> fail, "
    "<kbd>a</kbd> artefact, <kbd>x</kbd> clear, <kbd>e</kbd> export</span>"
    "<span id=\"counts\"></span><span id=\"current\"></span>"
    "<button type=\"button\" id=\"export\">Export marked levels (qc_fails.txt)</button></div>\n");
}

static void section_warnings(psp_strbuf *b, const page *pg, psp_context *ctx) {
  T(b, "<h2 id=\"warnings\">Warnings and flags</h2>\n");
  size_t nw = psp_context_warning_count(ctx);
  psp_strbuf_printf(b, "<h3>Run warnings (%zu)</h3>\n", nw);
  if (nw == 0) {
    T(b, "<div class=\"ok\">No warnings.</div>\n");
  } else {
    T(b, "<div class=\"warn\"><ul class=\"flags\" id=\"run-warnings\">\n");
    for (size_t i = 0; i < nw; i++) {
      T(b, "<li>");
      E(b, psp_context_warning(ctx, i));
      T(b, "</li>\n");
    }
    T(b, "</ul></div>\n");
  }
  /* level flags */
  size_t nf = pg->lv ? psp_levels_flag_count(pg->lv) : 0;
  psp_strbuf_printf(b, "<h3>Level flags (%zu)</h3>\n", nf);
  if (!pg->lv) {
    T(b, "<div class=\"warn\">No level assignment in this run.</div>\n");
  } else if (nf == 0) {
    T(b, "<div class=\"ok\">No level flags.</div>\n");
  } else {
    T(b, "<div class=\"warn\"><ul class=\"flags\" id=\"level-flags\">\n");
    for (size_t i = 0; i < nf; i++) {
      T(b, "<li><code>");
      E(b, psp_levels_flag_key(pg->lv, i));
      T(b, "</code> ");
      E(b, psp_levels_flag_message(pg->lv, i));
      T(b, "</li>\n");
    }
    T(b, "</ul></div>\n");
  }
  /* plausibility */
  psp_plausibility p = psp_result_plausibility(pg->r);
  T(b, "<h3>Water-fat plausibility</h3>\n");
  if (!p.checked) {
    T(b, "<div class=\"warn\">Not checked: ");
    E(b, p.message[0] ? p.message : "no subcutaneous fat found");
    T(b, "</div>\n");
  } else {
    psp_strbuf_printf(b, "<div class=\"%s\">%s: ", p.ok ? "ok" : "warn",
                      p.ok ? "plausible" : "<b>implausible (water-fat swap?)</b>");
    if (p.message[0])
      E(b, p.message);
    else
      psp_strbuf_printf(b, "subcutaneous fat median FF %.1f %% (%lld voxels)",
                        100 * p.subcut_ff_median, (long long)p.subcut_voxels);
    T(b, "</div>\n");
  }
  /* segmentation flags */
  T(b, "<h3>Segmentation</h3>\n");
  if (!pg->seg) {
    T(b, "<div class=\"ok\">Labels given with --labels: no automatic segmentation.</div>\n");
    return;
  }
  int64_t nz = psp_segmentation_slice_count(pg->seg);
  int64_t nok = psp_segmentation_ok_count(pg->seg);
  /* how the multifidus and erector spinae were told apart, per side */
  int64_t kinds[2][4] = {{0}};
  for (int64_t k = 0; k < nz; k++) {
    const psp_slice_landmarks *lm = psp_segmentation_slice(pg->seg, k);
    if (lm->status == PSP_SLICE_OK)
      for (int side = 0; side < 2; side++)
        kinds[side][lm->split[side] < 4 ? lm->split[side] : 0]++;
  }
  if (nok > 0) {
    double seen[2];
    psp_segmentation_plane_share(pg->seg, seen);
    char pc[2][16];
    for (int side = 0; side < 2; side++)
      if (isfinite(seen[side]))
        snprintf(pc[side], sizeof pc[side], "%.0f %%", 100.0 * seen[side]);
      else
        snprintf(pc[side], sizeof pc[side], "-");
    bool low = 2 * kinds[0][PSP_SPLIT_PATH] > nok || 2 * kinds[1][PSP_SPLIT_PATH] > nok;
    psp_strbuf_printf(
        b,
        "<div class=\"%s\" id=\"mf-es-boundary\">Multifidus / erector spinae split (left / "
        "right, of %lld measured slices): along a visible fat plane on %lld / %lld, at a step of "
        "FF beside a fatty muscle on %lld / %lld, by the MuscleMap template's proportion on "
        "%lld / %lld; %s / %s of the boundary lies on a visible plane.%s</div>\n",
        low ? "warn" : "ok", (long long)nok, (long long)kinds[0][PSP_SPLIT_PLANE],
        (long long)kinds[1][PSP_SPLIT_PLANE], (long long)kinds[0][PSP_SPLIT_STEP],
        (long long)kinds[1][PSP_SPLIT_STEP], (long long)kinds[0][PSP_SPLIT_PATH],
        (long long)kinds[1][PSP_SPLIT_PATH], pc[0], pc[1],
        low ? " Where the template's proportion split them, the two muscles' areas (and a "
              "left/right difference between them) are that split of this subject's "
              "compartment, not a boundary seen in the image (the QC images say it per slice)."
            : "");
  }
  /* measured slices whose erector spinae the field of view cuts */
  int64_t ncut = psp_segmentation_cut_count(pg->seg);
  if (ncut > 0) {
    psp_strbuf_printf(b,
                      "<div class=\"warn\">On %lld measured slice(s) an erector spinae reaches "
                      "the image's edge: it is left out there (no row in <code>slices.csv</code>, "
                      "<code>seg_complete</code> = 0 in <code>levels.csv</code>), the multifidus "
                      "is measured:</div>\n<table id=\"seg-cut\">\n<tr><th>file "
                      "slice</th><th>level</th><th>left out</th></tr>\n",
                      (long long)ncut);
    for (int64_t k = nz - 1; k >= 0; k--) {
      const psp_slice_landmarks *lm = psp_segmentation_slice(pg->seg, k);
      if (!lm->cut_labels) continue;
      psp_strbuf_printf(b, "<tr><td class=\"num\">%lld</td><td>",
                        (long long)psp_volume_file_slice(pg->grid, k));
      if (pg->lv && k < psp_levels_slice_count(pg->lv)) E(b, psp_levels_name(pg->lv, k));
      T(b, "</td><td>");
      bool first = true;
      for (int l = 1; l < PSP_LABEL_COUNT; l++)
        if ((lm->cut_labels >> l) & 1u) {
          if (!first) T(b, ", ");
          E(b, psp_label_name(l));
          first = false;
        }
      T(b, "</td></tr>\n");
    }
    T(b, "</table>\n");
  }
  if (nok == nz) {
    psp_strbuf_printf(b, "<div class=\"ok\">All %lld slices segmented.</div>\n", (long long)nz);
    return;
  }
  psp_strbuf_printf(b,
                    "<div class=\"warn\">%lld of %lld slices flagged and left empty (no rows in "
                    "<code>slices.csv</code>):</div>\n<table id=\"seg-flags\">\n<tr><th>file "
                    "slice</th><th>level</th><th>status</th><th>reason</th></tr>\n",
                    (long long)(nz - nok), (long long)nz);
  for (int64_t k = nz - 1; k >= 0; k--) {
    const psp_slice_landmarks *lm = psp_segmentation_slice(pg->seg, k);
    if (lm->status == PSP_SLICE_OK) continue;
    psp_strbuf_printf(b, "<tr><td class=\"num\">%lld</td><td>",
                      (long long)psp_volume_file_slice(pg->grid, k));
    if (pg->lv && k < psp_levels_slice_count(pg->lv)) E(b, psp_levels_name(pg->lv, k));
    T(b, "</td><td>");
    E(b, psp_slice_status_name(lm->status));
    T(b, "</td><td>");
    E(b, lm->reason);
    T(b, "</td></tr>\n");
  }
  T(b, "</table>\n");
}

static void section_assignment(psp_strbuf *b, const page *pg) {
  T(b, "<h2 id=\"assignment\">Level assignment</h2>\n");
  const psp_levels *lv = pg->lv;
  if (!lv) {
    T(b, "<div class=\"warn\">No level assignment.</div>\n");
    return;
  }
  if (pg->img && pg->img->sagittal) {
    const psp_qc_sagittal_geometry *g = &pg->img->sag;
    psp_strbuf_printf(
        b,
        "<figure class=\"sag\"><img id=\"sagittal\" src=\"qc/sagittal.png\" "
        "width=\"%d\" height=\"%d\" alt=\"sagittal reformat with the detected discs\" "
        "data-y0=\"%d\" data-h=\"%d\" data-nz=\"%lld\" data-names=\"",
        g->width, g->height, g->panel_y, g->panel_h, (long long)g->n_slices);
    for (int64_t k = 0; k < psp_levels_slice_count(lv); k++) {
      if (k) T(b, "|");
      E(b, psp_levels_name(lv, k));
    }
    T(b, "\"><figcaption class=\"muted\">Sagittal reformat through the midline (water or "
         "in-phase image, FF map), superior at the top, anterior on the left, true proportions. "
         "Dotted lines: detected discs (dashed: inferred); right: the marrow FF profile the "
         "discs were found on, the confidence per slice and the level names; left: file slice "
         "numbers. Click a slice to jump to its level.</figcaption></figure>\n");
  } else {
    T(b, "<div class=\"warn\">No sagittal image (QC images not written: <code>--no-qc</code>)."
         "</div>\n");
  }
  T(b, "<table>\n<tr><th>names</th><td>");
  T(b, psp_levels_anchored(lv) ? "anatomical (anchored)"
                               : "<b>relative only</b> (no anchor: D1 = lowest disc found)");
  T(b, "</td></tr>\n<tr><th>anchor</th><td>");
  E(b, psp_levels_anchor(lv)[0] ? psp_levels_anchor(lv) : "none");
  T(b, "</td></tr>\n<tr><th>method</th><td>");
  E(b, psp_levels_method(lv));
  T(b, "</td></tr>\n<tr><th>disc spacing</th><td>");
  double S = psp_levels_spacing_mm(lv);
  if (isfinite(S))
    psp_strbuf_printf(b, "%.1f mm (median)", S);
  else
    T(b, "&ndash;");
  T(b, "</td></tr>\n</table>\n");
  size_t nd = psp_levels_disc_count(lv);
  if (nd == 0) {
    T(b, "<div class=\"warn\">No disc found: the slices have no level names.</div>\n");
    return;
  }
  T(b,
    "<table id=\"discs\">\n<tr><th>disc</th><th>file slice (centre)</th><th>nearest file "
    "slice</th><th>distance mm</th><th>z mm</th><th>detection confidence</th><th>how</th></tr>\n");
  for (size_t i = nd; i-- > 0;) {
    const psp_level_disc *d = psp_levels_disc(lv, i);
    T(b, "<tr><td>");
    E(b, d->name[0] ? d->name : "(unnamed)");
    psp_strbuf_printf(b,
                      "</td><td class=\"num\">%.1f</td><td class=\"num\">%lld</td><td "
                      "class=\"num\">%.1f</td><td class=\"num\">%.1f</td><td "
                      "class=\"num\">%.2f</td><td>%s%s</td></tr>\n",
                      d->file_slice, (long long)d->nearest_file, d->distance_mm, d->z_mm,
                      d->confidence, d->inferred ? "inferred (not seen)" : "detected",
                      d->from_override ? ", override" : "");
  }
  T(b, "</table>\n");
}

static void level_title(psp_strbuf *b, const page *pg, const level_ref *L) {
  E(b, val(pg, L->first, C_LEVEL));
}

static void section_table(psp_strbuf *b, const page *pg) {
  T(b, "<h2 id=\"table\">Per-level table</h2>\n");
  if (pg->n_levels == 0) {
    T(b, "<div class=\"warn\">No named levels: <code>levels.csv</code> has no rows.</div>\n");
    return;
  }
  T(b, "<p class=\"muted\">Superior at the top. Values at the level's slice (disc: nearest to "
       "the disc centre; vertebra: nearest to the midpoint between its discs); left / right. "
       "FF = mean of voxel fat fraction. Grade: research-only, from FF (&lt; 20 %, 20&ndash;50 %, "
       "&gt; 50 %), not a validated clinical grade. Click a row or use the keyboard.</p>\n"
       "<table id=\"level-table\">\n<tr><th>level</th><th>kind</th><th>file slice</th>"
       "<th>&Delta; mm</th><th>confidence</th><th>MF area mm&sup2;</th><th>ES area mm&sup2;</th>"
       "<th>MF FF %</th><th>ES FF %</th><th>MF+ES fCSA mm&sup2;</th><th>asym. area % MF / "
       "ES</th><th>grade MF / ES</th><th>QC</th></tr>\n");
  for (size_t i = pg->n_levels; i-- > 0;) {
    const level_ref *L = &pg->levels[i];
    size_t ml = level_row(pg, L, "multifidus", "left"),
           mr = level_row(pg, L, "multifidus", "right");
    size_t el = level_row(pg, L, "erector_spinae", "left");
    size_t er = level_row(pg, L, "erector_spinae", "right");
    size_t mb = level_row(pg, L, "multifidus", "both"),
           eb = level_row(pg, L, "erector_spinae", "both");
    size_t ab = level_row(pg, L, "mf+es", "both");
    psp_strbuf_printf(b, "<tr class=\"lvrow\" data-idx=\"%zu\" data-level=\"", i);
    level_title(b, pg, L);
    T(b, "\"><td><b>");
    level_title(b, pg, L);
    T(b, "</b></td><td>");
    E(b, val(pg, L->first, C_KIND));
    T(b, "</td><td class=\"num\">");
    E(b, *val(pg, L->first, C_FILE_SLICE) ? val(pg, L->first, C_FILE_SLICE) : "-");
    T(b, "</td><td class=\"num\">");
    numrow(b, pg, L->first, C_DIST, 1);
    T(b, "</td><td class=\"num\">");
    numrow(b, pg, L->first, C_CONF, 2);
    T(b, "</td>");
    pair_cell(b, pg, ml, mr, C_AREA, 0);
    pair_cell(b, pg, el, er, C_AREA, 0);
    pair_cell(b, pg, ml, mr, C_FF_MEAN, 1);
    pair_cell(b, pg, el, er, C_FF_MEAN, 1);
    T(b, "<td class=\"num\">");
    numrow(b, pg, ab, C_FCSA, 0);
    T(b, "</td>");
    pair_cell(b, pg, mb, eb, C_ASYM, 1);
    text_pair_cell(b, pg, mb, eb, C_GRADE);
    T(b, "<td class=\"qc\">&ndash;</td></tr>\n");
  }
  T(b, "</table>\n");
}

static void level_card(psp_strbuf *b, const page *pg, size_t idx) {
  const level_ref *L = &pg->levels[idx];
  const size_t r0 = L->first;
  const bool disc = !strcmp(val(pg, r0, C_KIND), "disc");
  const int64_t k = level_slice(pg, L);
  psp_strbuf_printf(b,
                    "<section class=\"card level\" id=\"level-%zu\" data-idx=\"%zu\" "
                    "data-level=\"",
                    idx, idx);
  level_title(b, pg, L);
  T(b, "\"><h3>");
  level_title(b, pg, L);
  T(b, disc ? " <span class=\"muted\">disc</span>" : " <span class=\"muted\">vertebra</span>");
  T(b, "<span class=\"badge\">unmarked</span></h3>\n<p class=\"meta\">");
  if (k < 0) {
    T(b, "<span class=\"flag\">No slice of the stack at this level's position</span> (target "
         "file slice ");
    numrow(b, pg, r0, C_TARGET, 1);
    T(b, ").");
  } else {
    psp_strbuf_printf(b, "File slice <b>%lld</b> (internal %lld), ",
                      (long long)psp_volume_file_slice(pg->grid, k), (long long)k);
    numrow(b, pg, r0, C_DIST, 1);
    T(b, disc ? " mm from the disc centre (file slice "
              : " mm from the mid-vertebral point (file "
                "slice ");
    numrow(b, pg, r0, C_TARGET, 1);
    T(b, ").");
  }
  T(b, " Confidence ");
  numrow(b, pg, r0, C_CONF, 2);
  T(b, ".");
  if (!disc) {
    const char *below = val(pg, r0, C_BELOW), *above = val(pg, r0, C_ABOVE);
    T(b, " Between ");
    E(b, *below ? below : "(out of view)");
    T(b, " and ");
    E(b, *above ? above : "(out of view)");
    if (*val(pg, r0, C_SEG_N)) {
      /* the segment's slices (contiguous), whether a bounding disc is out
       * of view, and each muscle measured on fewer of them (a flagged
       * slice, or an erector spinae cut by the field of view) */
      long long f0 = atoll(val(pg, r0, C_SEG_FIRST)), f1 = atoll(val(pg, r0, C_SEG_LAST));
      long long ns = (f1 > f0 ? f1 - f0 : f0 - f1) + 1;
      psp_strbuf_printf(b, "; segment: file slices %lld&ndash;%lld (%lld slices%s)",
                        f0 < f1 ? f0 : f1, f0 < f1 ? f1 : f0, ns,
                        *below && *above ? "" : ", cut by the stack");
      static const char *const mus[4][3] = {{"multifidus", "left", "left multifidus"},
                                            {"multifidus", "right", "right multifidus"},
                                            {"erector_spinae", "left", "left erector spinae"},
                                            {"erector_spinae", "right", "right erector spinae"}};
      for (int m = 0; m < 4; m++) {
        size_t r = level_row(pg, L, mus[m][0], mus[m][1]);
        if (r == (size_t)-1 || !*val(pg, r, C_SEG_N)) continue;
        long long n = atoll(val(pg, r, C_SEG_N));
        if (n == 0)
          psp_strbuf_printf(b, "; the %s measured on none of them", mus[m][2]);
        else if (n < ns)
          psp_strbuf_printf(b,
                            "; the %s measured on %lld of them (its segment mean and volume "
                            "from those only)",
                            mus[m][2], n);
      }
    }
    T(b, ".");
  }
  T(b, "</p>\n");
  if (k >= 0 && pg->seg && k < psp_segmentation_slice_count(pg->seg)) {
    const psp_slice_landmarks *lm = psp_segmentation_slice(pg->seg, k);
    if (lm->status != PSP_SLICE_OK) {
      T(b, "<p class=\"flag\">This slice was flagged by the segmentation (");
      E(b, psp_slice_status_name(lm->status));
      T(b, ": ");
      E(b, lm->reason);
      T(b, "): no muscle was measured on it.</p>\n");
    } else if (lm->cut_labels) {
      T(b, "<p class=\"flag\">On this slice ");
      E(b, lm->reason + (strncmp(lm->reason, "spine found; ", 13) == 0 ? 13 : 0));
      T(b, ".</p>\n");
    }
  }
  T(b, "<p><button type=\"button\" data-m=\"pass\">pass (p)</button> <button type=\"button\" "
       "data-m=\"fail\">fail (f)</button> <button type=\"button\" data-m=\"artefact\">artefact "
       "(a)</button> <button type=\"button\" data-m=\"\">clear (x)</button></p>\n");
  if (k >= 0 && pg->img && pg->img->slices) {
    char name[64];
    snprintf(name, sizeof name, "qc/slice_%03lld.png",
             (long long)psp_volume_file_slice(pg->grid, k));
    T(b, "<a href=\"");
    E(b, name);
    T(b, "\"><img src=\"");
    E(b, name);
    T(b, "\" alt=\"QC image of ");
    E(b, name);
    T(b, "\"></a>\n");
  } else if (k >= 0) {
    T(b, "<p class=\"muted\">No QC image (<code>--no-qc</code>).</p>\n");
  }
  T(b, "<table class=\"metrics\">\n<tr><th>muscle</th><th>side</th><th>area mm&sup2;</th>"
       "<th>FF mean %</th><th>FF ratio %</th><th>fCSA mm&sup2;</th><th>infiltration %</th>"
       "<th>asym. area %</th><th>grade (research only)</th>");
  if (!disc)
    T(b, "<th>segment mean area mm&sup2;</th><th>segment FF %</th><th>segment volume "
         "mm&sup3;</th>");
  T(b, "</tr>\n");
  for (size_t i = r0; i < r0 + L->n; i++) {
    T(b, "<tr><td>");
    E(b, val(pg, i, C_MUSCLE));
    T(b, "</td><td>");
    E(b, val(pg, i, C_SIDE));
    static const struct {
      int c, dec;
    } cols[] = {{C_AREA, 1}, {C_FF_MEAN, 2}, {C_FF_RATIO, 2},
                {C_FCSA, 1}, {C_INFIL, 2},   {C_ASYM, 1}};
    for (size_t q = 0; q < sizeof cols / sizeof cols[0]; q++) {
      T(b, "</td><td class=\"num\">");
      numrow(b, pg, i, cols[q].c, cols[q].dec);
    }
    T(b, "</td><td>");
    E(b, *val(pg, i, C_GRADE) ? val(pg, i, C_GRADE) : "-");
    if (!disc) {
      T(b, "</td><td class=\"num\">");
      numrow(b, pg, i, C_SEG_AREA, 1);
      T(b, "</td><td class=\"num\">");
      numrow(b, pg, i, C_SEG_FF, 2);
      T(b, "</td><td class=\"num\">");
      numrow(b, pg, i, C_SEG_VOL, 0);
    }
    T(b, "</td></tr>\n");
  }
  T(b, "</table>\n</section>\n");
}

static const char *SCRIPT =
    "(function(){'use strict';\n"
    "var cards=[].slice.call(document.querySelectorAll('section.level'));\n"
    "var rows=[].slice.call(document.querySelectorAll('tr.lvrow'));\n"
    "var path=decodeURIComponent(location.pathname||'');\n"
    "var parts=path.split('/');var folder=parts.length>1?parts[parts.length-2]:'';\n"
    "var fe=document.getElementById('folder');if(fe)fe.textContent=folder||'(unknown)';\n"
    "var key='paraspinal-qc:'+path+':'+RESULTS,marks={},cur=0;\n"
    "try{marks=JSON.parse(localStorage.getItem(key)||'{}')||{};}catch(e){marks={};}\n"
    "function save(){try{localStorage.setItem(key,JSON.stringify(marks));}catch(e){}}\n"
    "function rowOf(c){var i=c.getAttribute('data-idx');"
    "for(var r=0;r<rows.length;r++)if(rows[r].getAttribute('data-idx')===i)return rows[r];"
    "return null;}\n"
    "function render(){var n={pass:0,fail:0,artefact:0,none:0};\n"
    " cards.forEach(function(c,i){var l=c.getAttribute('data-level'),m=marks[l]||'';\n"
    "  if(m)c.setAttribute('data-mark',m);else c.removeAttribute('data-mark');\n"
    "  n[m||'none']++;c.classList.toggle('current',i===cur);\n"
    "  var b=c.querySelector('.badge');b.textContent=m||'unmarked';b.className='badge '+m;\n"
    "  var r=rowOf(c);if(r){if(m)r.setAttribute('data-mark',m);else r.removeAttribute('data-mark');"
    "r.classList.toggle('current',i===cur);r.querySelector('td.qc').textContent=m||'\\u2013';}});\n"
    " var ce=document.getElementById('counts');if(ce)ce.textContent=n.pass+' pass \\u00b7 '+"
    "n.fail+' fail \\u00b7 '+n.artefact+' artefact \\u00b7 '+n.none+' unmarked';\n"
    " var cu=document.getElementById('current');if(cu)cu.textContent=cards.length?"
    "'level: '+cards[cur].getAttribute('data-level'):'no levels';}\n"
    "function select(i,scroll){if(!cards.length)return;cur=Math.max(0,Math.min(cards.length-1,i));"
    "render();if(scroll)cards[cur].scrollIntoView({block:'start'});}\n"
    "function mark(m){if(!cards.length)return;var l=cards[cur].getAttribute('data-level');\n"
    " if(!m||marks[l]===m)delete marks[l];else marks[l]=m;save();render();}\n"
    "function exportMarks(){var t='';cards.forEach(function(c){var l=c.getAttribute('data-level'),"
    "m=marks[l];if(m==='fail'||m==='artefact')t+=l+'\\t'+m+'\\t'+folder+'\\n';});\n"
    " var a=document.createElement('a');a.href=URL.createObjectURL(new Blob([t],"
    "{type:'text/plain'}));a.download='qc_fails.txt';document.body.appendChild(a);a.click();\n"
    " setTimeout(function(){URL.revokeObjectURL(a.href);a.remove();},0);}\n"
    "document.addEventListener('keydown',function(e){if(e.ctrlKey||e.altKey||e.metaKey)return;\n"
    " var t=e.target&&e.target.tagName;if(t==='INPUT'||t==='TEXTAREA')return;\n"
    " var k=e.key;var step={j:1,ArrowDown:1,ArrowRight:1,k:-1,ArrowUp:-1,ArrowLeft:-1}[k];\n"
    " if(step){select(cur+step,true);e.preventDefault();return;}\n"
    " var m={p:'pass',f:'fail',a:'artefact',x:''}[k];\n"
    " if(m!==undefined){mark(m);e.preventDefault();return;}\n"
    " if(k==='e'){exportMarks();e.preventDefault();}});\n"
    "cards.forEach(function(c,i){c.addEventListener('click',function(){select(i,false);});\n"
    " [].forEach.call(c.querySelectorAll('button[data-m]'),function(btn){btn.addEventListener("
    "'click',function(ev){ev.stopPropagation();select(i,false);mark(btn.getAttribute('data-m'));"
    "});});});\n"
    "rows.forEach(function(r){r.addEventListener('click',function(){var i=+r.getAttribute("
    "'data-idx');for(var q=0;q<cards.length;q++)if(+cards[q].getAttribute('data-idx')===i)"
    "select(q,true);});});\n"
    "var ex=document.getElementById('export');if(ex)ex.addEventListener('click',exportMarks);\n"
    "var sag=document.getElementById('sagittal');\n"
    "if(sag)sag.addEventListener('click',function(e){var r=sag.getBoundingClientRect();\n"
    " var y=(e.clientY-r.top)*sag.naturalHeight/r.height,y0=+sag.getAttribute('data-y0'),"
    "h=+sag.getAttribute('data-h'),nz=+sag.getAttribute('data-nz');\n"
    " if(y<y0||y>=y0+h)return;var k=nz-1-Math.floor((y-y0)*nz/h);\n"
    " var name=sag.getAttribute('data-names').split('|')[k];if(!name)return;\n"
    " for(var q=0;q<cards.length;q++)if(cards[q].getAttribute('data-level')===name){"
    "select(q,true);return;}});\n"
    "function checkImages(){var ok=0,bad=0;[].forEach.call(document.images,function(im){\n"
    " if(im.complete&&im.naturalWidth>0)ok++;else{bad++;im.classList.add('broken');}});\n"
    " document.documentElement.setAttribute('data-images-ok',ok);\n"
    " document.documentElement.setAttribute('data-images-broken',bad);}\n"
    "if(document.readyState==='complete')checkImages();else "
    "window.addEventListener('load',checkImages);\n"
    "select(0,false);})();\n";

char *psp_report_html(const psp_result *r, const char *levels_csv, const psp_html_images *img,
                      psp_context *ctx, psp_error **err) {
  if (!r) {
    psp_error_set(err, PSP_ERR_USAGE, "report.html: no result");
    return NULL;
  }
  page pg;
  memset(&pg, 0, sizeof pg);
  pg.r = r;
  pg.lv = psp_result_levels(r);
  pg.seg = psp_result_segmentation(r);
  pg.grid = psp_result_labels(r);
  pg.img = img;
  if (!csv_parse(levels_csv, &pg.t, err) || !build_levels(&pg, err)) {
    csv_free(&pg.t);
    free(pg.levels);
    return NULL;
  }
  psp_strbuf b;
  psp_strbuf_init(&b);
  T(&b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta "
        "name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>paraspinal QC "
        "report</title>\n<style>");
  T(&b, CSS);
  T(&b, "</style>\n</head>\n<body>\n");
  section_toolbar(&b);
  T(&b, "<main>\n");
  section_header(&b, &pg);
  section_warnings(&b, &pg, ctx);
  section_assignment(&b, &pg);
  section_table(&b, &pg);
  T(&b, "<h2 id=\"levels\">Levels</h2>\n");
  if (pg.n_levels == 0) T(&b, "<p class=\"muted\">No levels to review.</p>\n");
  for (size_t i = pg.n_levels; i-- > 0;)
    level_card(&b, &pg, i);
  T(&b, "<h2 id=\"notes\">Notes</h2>\n<ul>\n<li>QC images: water (or in-phase) and FF panels, "
        "radiological convention (patient right on the image's left), outlines: MF L orange, "
        "MF R sky blue, ES L reddish purple, ES R yellow.</li>\n<li>Marks are kept in this "
        "browser (localStorage) for this page and these results (a run with other results into the "
        "same folder starts without them); <b>Export</b> downloads <code>qc_fails.txt</code>: "
        "one line per level marked fail or artefact, <code>LEVEL&lt;TAB&gt;MARK&lt;TAB&gt;"
        "FOLDER</code>.</li>\n<li>The fat grade is derived from FF with Kjaer-type visual-grade "
        "thresholds; it is for research only and not a validated clinical grade.</li>\n</ul>\n"
        "</main>\n<script>\n");
  /* the marks belong to these results: a run into the same folder with other results (after a
   * correction) starts without the earlier run's marks; the same results keep them */
  uint64_t h = 1469598103934665603ull; /* FNV-1a 64 of levels.csv */
  for (const char *q = levels_csv ? levels_csv : ""; *q; q++)
    h = (h ^ (uint8_t)*q) * 1099511628211ull;
  psp_strbuf_printf(&b, "var RESULTS='%016llx';\n", (unsigned long long)h);
  T(&b, SCRIPT);
  T(&b, "</script>\n</body>\n</html>\n");
  csv_free(&pg.t);
  free(pg.levels);
  return psp_strbuf_take(&b, err);
}
