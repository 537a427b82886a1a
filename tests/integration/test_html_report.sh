#!/usr/bin/env bash
# report.html through the CLI on a phantom (automatic segmentation): the
# page exists, references only files that exist (relative paths, nothing
# from the network), escapes the input paths (a folder named with & < > "),
# has one table row and one card per level of levels.csv with the QC image
# of the level's slice, lists the run warnings, the level flags and the
# flagged slices, carries the keyboard / export script, and is
# byte-identical (with every QC image) at 1 and 2 threads. With Debian's
# chromium installed it is also opened headless: the images load, the
# keyboard marks and the export of qc_fails.txt work (a test harness page
# beside it presses the keys), and a screenshot is saved; without chromium
# that part is skipped with a message.
source "$(dirname "$0")/lib.sh"
cd "$S"
run "$PSP" phantom -o ph --prefix p --seed 3
IN='in&<b>"q'
mkdir -p "$IN" && cp ph/p_water.nii.gz ph/p_fat.nii.gz "$IN/" || exit 1
run "$PSP" analyze -t 1 --water "$IN/p_water.nii.gz" --fat "$IN/p_fat.nii.gz" -o out1 > out1.txt
run "$PSP" analyze -t 2 --water "$IN/p_water.nii.gz" --fat "$IN/p_fat.nii.gz" -o out2 > out2.txt
H=out1/report.html
[ -s "$H" ] || { fail "no report.html"; finish; }
[ -s out1/qc/sagittal.png ] || fail "no qc/sagittal.png"
ls -A out1 | grep -q paraspinal-tmp && fail "temporary folder left in out1"

# --- escaping: the input path appears escaped, never raw ---------------------
grep -qF 'in&amp;&lt;b&gt;&quot;q/p_water.nii.gz' "$H" || fail "input path not escaped as expected"
grep -qF "$IN" "$H" && fail "raw (unescaped) input path in report.html"

# --- references: relative, existing, no network --------------------------------
grep -qiE 'https?://|<link|@import' "$H" && fail "report.html refers to something outside"
grep -qE '(^|[^A-Za-z])url\(' "$H" && fail "report.html has a CSS url()"
nref=0
while IFS= read -r ref; do
  nref=$((nref + 1))
  case "$ref" in
  /* | *://* | //*) fail "absolute reference: $ref" ;;
  *) [ -f "out1/$ref" ] || fail "reference to a missing file: $ref" ;;
  esac
done < <(grep -oE '(src|href)="[^"]*"' "$H" | sed -E 's/^(src|href)="//; s/"$//' | sort -u)
echo "$nref distinct references checked"
[ "$nref" -ge 2 ] || fail "report.html references fewer than 2 images"
grep -qF 'src="qc/sagittal.png"' "$H" || fail "sagittal image not on the page"

# --- one table row and one card per level, with the level's QC image ---------
nlev=$(awk -F, 'NR > 1 && !seen[$1 "," $2]++ { n++ } END { print n + 0 }' out1/levels.csv)
nrow=$(grep -c '<tr class="lvrow"' "$H")
ncard=$(grep -c '<section class="card level"' "$H")
echo "levels in levels.csv: $nlev, table rows: $nrow, cards: $ncard"
[ "$nlev" -ge 8 ] || fail "phantom: only $nlev levels in levels.csv"
[ "$nrow" -eq "$nlev" ] || fail "table rows $nrow != levels $nlev"
[ "$ncard" -eq "$nlev" ] || fail "level cards $ncard != levels $nlev"
while IFS=, read -r name fs; do
  grep -qF "data-level=\"$name\"><td><b>$name</b>" "$H" || fail "no table row for level $name"
  if [ -n "$fs" ]; then
    img=$(printf 'qc/slice_%03d.png' "$fs")
    grep -qF "src=\"$img\"" "$H" || fail "level $name: image $img not on the page"
  fi
done < <(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
  !seen[$1 "," $2]++ { print $1 "," $c["file_slice"] }' out1/levels.csv)
grep -q 'L4/L5' "$H" || fail "no L4/L5 on the page"

# --- warnings and flags --------------------------------------------------------
flagged=$(($(grep -c '"status":' out1/report.json) - $(grep -cE '"status":[[:space:]]*"ok"' out1/report.json)))
seg_rows=$(awk '/id="seg-flags"/ { on = 1 } on && /^<tr><td/ { n++ } on && /<\/table>/ { exit } END { print n + 0 }' "$H")
echo "flagged slices: report.json $flagged, report.html $seg_rows"
[ "$flagged" -eq "$seg_rows" ] || fail "flagged slices: $seg_rows rows on the page, $flagged in report.json"
[ "$flagged" -gt 0 ] || fail "phantom without flagged slices: the check above tested nothing"
grep -q 'Water-fat plausibility' "$H" || fail "no plausibility section"
# how the multifidus and erector spinae were split and how much of their
# boundary lies on a visible fat plane, as report.json says ("warn" when the
# template's proportion split them on more than half the slices of a side)
python3 - out1/report.json "$H" <<'PY' || fail "the MF/ES split line disagrees with report.json"
import json, re, sys
sg = json.load(open(sys.argv[1]))["segmentation"]
v = sg["mf_es_boundary_on_visible_plane"]
ok = [s for s in sg["slices"] if s["status"] == "ok"]
n = {side: {k: sum(s["mf_es_boundary"][side]["split"] == k for s in ok)
            for k in ("fat_plane", "ff_step", "template_path")} for side in ("left", "right")}
m = re.search(r'<div class="(ok|warn)" id="mf-es-boundary">[^<]* of (\d+) measured slices\): along a '
              r'visible fat plane on (\d+) / (\d+), at a step of FF beside a fatty muscle on (\d+) / '
              r'(\d+), by the MuscleMap template.s proportion on (\d+) / (\d+); (\d+) % / (\d+) %',
              open(sys.argv[2]).read())
print("report.json", v, n, "report.html", m.groups() if m else None)
if not m:
    sys.exit(1)
g = [int(x) for x in m.groups()[1:]]
want = [len(ok), n["left"]["fat_plane"], n["right"]["fat_plane"], n["left"]["ff_step"],
        n["right"]["ff_step"], n["left"]["template_path"], n["right"]["template_path"]]
low = any(2 * n[s]["template_path"] > len(ok) for s in n)
sys.exit(0 if g[:7] == want and abs(g[7] - 100 * v["left"]) <= 1 and abs(g[8] - 100 * v["right"]) <= 1
         and m[1] == ("warn" if low else "ok") else 1)
PY
# a contradicting override gives a run warning and level flags
l34=$(awk -F, 'NR > 1 && $17 == "L3/L4" { print $2; exit }' out1/slices.csv)
[ -n "$l34" ] || fail "no slice named L3/L4"
run "$PSP" analyze --water "$IN/p_water.nii.gz" --fat "$IN/p_fat.nii.gz" -o ov --no-qc \
  --disc "L4/L5=${l34:-0}" > ov.txt 2> ov.err
nw=$(sed -nE 's/.*, ([0-9]+) warnings?\)$/\1/p' ov.txt)
nli=$(awk '/id="run-warnings"/ { on = 1; next } on && /<\/ul>/ { exit } on && /^<li>/ { n++ } END { print n + 0 }' ov/report.html)
echo "override run: $nw warnings reported, $nli listed on the page"
[ -n "$nw" ] && [ "$nw" -ge 1 ] || fail "override run: no warning count (or none)"
[ "${nw:-x}" = "$nli" ] || fail "override run: $nli warnings on the page, $nw reported"
grep -qF "Run warnings ($nw)" ov/report.html || fail "override run: warning count not shown"
grep -q '<code>override_contradicts_detection</code>' ov/report.html || fail "level flag not listed"
grep -q 'override is trusted' ov/report.html || fail "override warning text not on the page"
# the review marks are stored per results: the same results (1 and 2 threads) share the key,
# other results (the override run) get another, so a rerun after a correction starts afresh
k1=$(grep -o "var RESULTS='[0-9a-f]*'" out1/report.html) k2=$(grep -o "var RESULTS='[0-9a-f]*'" out2/report.html)
kv=$(grep -o "var RESULTS='[0-9a-f]*'" ov/report.html)
[ -n "$k1" ] && [ "$k1" = "$k2" ] || fail "marks key: the same results give '$k1' and '$k2'"
[ -n "$kv" ] && [ "$kv" != "$k1" ] || fail "marks key: other results share the key '$k1'"
# --no-qc: still a page, no image references, no qc folder
grep -qE '(src|href)="' ov/report.html && fail "--no-qc page references images"
[ -e ov/qc ] && fail "--no-qc wrote a qc folder"
# --no-qc into a folder holding an earlier run's QC images: they go, none
# stays beside the new results
cp -r out1 rerun
run "$PSP" analyze --water "$IN/p_water.nii.gz" --fat "$IN/p_fat.nii.gz" -o rerun --no-qc >/dev/null 2>&1
[ -e rerun/qc ] && fail "--no-qc into an earlier run's folder left its qc images"
[ -s rerun/report.json ] || fail "--no-qc rerun: no report.json"
# a qc folder holding a file of the user's is never replaced or removed: refused with QC
# images (nothing written), left alone with --no-qc
mkdir -p mine/qc && echo "my notes" > mine/qc/notes.txt
"$PSP" analyze --water "$IN/p_water.nii.gz" --fat "$IN/p_fat.nii.gz" -o mine > /dev/null 2> mine.err &&
  fail "a qc folder of the user's was replaced"
grep -q "mine/qc holds files this tool did not write" mine.err || fail "foreign qc folder: $(cat mine.err)"
[ -e mine/report.json ] && fail "refused run wrote outputs"
run "$PSP" analyze --water "$IN/p_water.nii.gz" --fat "$IN/p_fat.nii.gz" -o mine --no-qc > /dev/null 2>&1
[ "$(cat mine/qc/notes.txt 2> /dev/null)" = "my notes" ] || fail "--no-qc removed a qc folder of the user's"
# an output that would replace an input (labels named dseg.nii.gz in the output folder): refused
mkdir -p lab && cp ph/p_dseg.nii.gz lab/dseg.nii.gz
"$PSP" analyze --water "$IN/p_water.nii.gz" --fat "$IN/p_fat.nii.gz" --labels lab/dseg.nii.gz -o lab \
  --no-qc > /dev/null 2> lab.err
[ $? = 2 ] || fail "an output replacing the labels input: exit not 2: $(cat lab.err)"
grep -q "the output dseg.nii.gz would replace the labels input" lab.err || fail "output = input message: $(cat lab.err)"
cmp -s lab/dseg.nii.gz ph/p_dseg.nii.gz || fail "the labels input was changed"

# --- the review script -------------------------------------------------------
for s in "addEventListener('keydown'" "'qc_fails.txt'" "new Blob" "p:'pass',f:'fail',a:'artefact'" \
  "localStorage"; do
  grep -qF "$s" "$H" || fail "script piece missing: $s"
done
grep -qE '<script[^>]+src=' "$H" && fail "external script"

# --- determinism: 1 vs 2 threads ---------------------------------------------
for f in report.html levels.csv slices.csv; do
  cmp -s "out1/$f" "out2/$f" || fail "$f differs between 1 and 2 threads"
done
[ "$(cd out1/qc && ls)" = "$(cd out2/qc && ls)" ] || fail "qc folders list different files"
for f in out1/qc/*.png; do
  cmp -s "$f" "out2/qc/${f##*/}" || fail "qc/${f##*/} differs between 1 and 2 threads"
done

# --- headless Chromium: renders, images load, keys and export work ------------
CHROME=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$CHROME" ]; then
  echo "SKIP (render part): chromium is not installed (Debian: apt-get install chromium)"
else
  cp -r out1 view || exit 1
  # the harness: the page itself plus a script that presses f, j, p, j, a, e
  # and captures the exported text instead of downloading it
  sed 's#</body>#<script>HTMLAnchorElement.prototype.click=function(){};URL.createObjectURL=function(b){b.text().then(function(t){document.documentElement.setAttribute("data-export",t.replace(/\\t/g,"|").replace(/\\n/g,";"));});return "blob:none";};function key(k){document.dispatchEvent(new KeyboardEvent("keydown",{key:k,bubbles:true}));}["f","j","p","j","a","e"].forEach(key);</script></body>#' \
    view/report.html > view/keys.html
  CH=("$CHROME" --headless --no-sandbox --disable-gpu --disable-background-networking
    --disable-component-update --no-first-run --user-data-dir="$S/chrome-profile"
    --virtual-time-budget=5000)
  timeout 180 "${CH[@]}" --dump-dom "file://$S/view/report.html" > dom.html 2> chrome1.err
  timeout 180 "${CH[@]}" --dump-dom "file://$S/view/keys.html" > dom_keys.html 2> chrome2.err
  timeout 180 "${CH[@]}" --window-size=1200,2000 --screenshot="$S/report_screenshot.png" \
    "file://$S/view/report.html" > /dev/null 2> chrome3.err
  nimg=$(grep -c '<img ' "$H")
  ok=$(sed -nE 's/.*data-images-ok="([0-9]+)".*/\1/p' dom.html | head -1)
  bad=$(sed -nE 's/.*data-images-broken="([0-9]+)".*/\1/p' dom.html | head -1)
  echo "chromium: $nimg images on the page, ${ok:-?} loaded, ${bad:-?} broken"
  [ "${ok:-x}" = "$nimg" ] && [ "${bad:-x}" = 0 ] || fail "images did not all load in chromium"
  grep -q 'id="folder">view<' dom.html || fail "the page did not find its folder name"
  # marks: first level fail, second pass, third artefact; export lists 1 and 3
  mapfile -t lv < <(grep -oE '<section class="card level[^"]*" id="level-[0-9]+" data-idx="[0-9]+" data-level="[^"]*"' dom_keys.html |
    sed -E 's/.*data-level="([^"]*)"/\1/' | head -3)
  exp=$(sed -nE 's/.*data-export="([^"]*)".*/\1/p' dom_keys.html | head -1)
  want="${lv[0]:-?}|fail|view;${lv[2]:-?}|artefact|view;"
  echo "export: '$exp' (expected '$want')"
  [ "$exp" = "$want" ] || fail "keyboard marks / export: got '$exp', expected '$want'"
  grep -qE 'data-level="[^"]*" data-mark="pass"' dom_keys.html || fail "pass mark not shown on a card"
  grep -q '0 pass' dom.html || fail "mark counts not shown"
  [ -s "$S/report_screenshot.png" ] && echo "screenshot: $S/report_screenshot.png" ||
    fail "chromium wrote no screenshot"
fi
finish
