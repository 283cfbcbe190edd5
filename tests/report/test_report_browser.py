"""The report as a user sees it: rendered by real headless Chromium.

Chromium is driven from the command line only (no Selenium/Playwright): ``--dump-dom`` gives the
DOM after scripts ran and images loaded, ``--screenshot`` the pixels, and
``--enable-logging=stderr`` prints every console message as a ``CONSOLE`` line (checked against a
page with a deliberate error first, so a silent logger cannot make the test pass).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from medprobe.report import build_report
from test_report import (EVIL, MCQ_STUDY_SUMMARY, MCQ_SUMMARY, TOL, add_statistics_fields, check_results_tables,
                         make_run_dir, numbers, one_auc_row_per_binary_probe, parse)

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
if CHROMIUM is None:
    pytest.skip("no chromium / chromium-browser / google-chrome binary on PATH (apt-get install -y chromium)",
                allow_module_level=True)

CONSOLE = re.compile(r":CONSOLE[(:]|Uncaught")


def chromium(*args: str, profile: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run headless Chromium once with its own profile folder; console messages go to stderr."""
    command = [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-dev-shm-usage",
               "--hide-scrollbars", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"chromium failed ({result.returncode}): {result.stderr[-2000:]}"
    return result


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE.search(line)]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = make_run_dir(tmp_path_factory.mktemp("run"), notes=f"reader note {EVIL}", groups=("ward A", "ward B"),
                        skipped=[{"sample_id": EVIL, "source": "/data/x.dcm", "error": "bad DICOM"}])
    (path / "mcq_results.json").write_text(json.dumps(MCQ_SUMMARY))
    return build_report(path)


def test_console_logging_is_captured(tmp_path: Path) -> None:
    """Positive control: the stderr scan sees a console.error and an uncaught exception."""
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>console.error('probe-error'); undefinedFunction();</script></body></html>")
    lines = console_lines(chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile").stderr)
    assert any("probe-error" in line for line in lines)
    assert any("Uncaught ReferenceError" in line for line in lines)


def test_rendered_dom_tables_images_and_no_console_messages(report: Path, tmp_path: Path) -> None:
    # Report images must load: a load handler records whether every <img> decoded.
    probe = report.parent / "report_probe.html"
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", (
        '<script>window.addEventListener("load",function(){var ok=document.images.length>0;'
        "for(var i=0;i<document.images.length;i++){var im=document.images[i];ok=ok&&im.complete&&im.naturalWidth>0;}"
        'document.body.setAttribute("data-images-ok",ok?"yes":"no");});</script></body>')), encoding="utf-8")
    result = chromium("--dump-dom", report.as_uri(), profile=tmp_path / "profile")
    dom = result.stdout
    assert console_lines(result.stderr) == []
    assert 'data-sort-ready="1"' in dom  # the sorting script ran to its end
    rows = json.loads((report.parent / "results.json").read_text())
    check_results_tables(dom, rows)
    assert dom.count("<script") == 1  # the escaped sample id and note did not become markup
    assert parse(dom).tables["skipped"]["rows"][0][0] == EVIL

    loaded = chromium("--dump-dom", probe.as_uri(), profile=tmp_path / "profile")
    assert console_lines(loaded.stderr) == []
    assert 'data-images-ok="yes"' in loaded.stdout
    assert len(parse(loaded.stdout).images) == len(list((report.parent / "figures").glob("*.svg"))) == 7


def test_header_click_sorts_numerically(report: Path, tmp_path: Path) -> None:
    page = report.read_text(encoding="utf-8")
    head = parse(page).tables["results"]["head"]
    column = head.index("value") + 1
    clicked = report.parent / "report_sorted.html"
    clicked.write_text(page.replace("</body>", (
        f'<script>document.querySelector("#results thead th:nth-child({column})").click();</script></body>')),
        encoding="utf-8")
    result = chromium("--dump-dom", clicked.as_uri(), profile=tmp_path / "profile")
    assert console_lines(result.stderr) == []
    cells = [row[column - 1] for row in parse(result.stdout).tables["results"]["rows"]]
    rows = one_auc_row_per_binary_probe(json.loads((report.parent / "results.json").read_text()))
    undefined = sum(r["value"] is None for r in rows)
    assert undefined and cells[-undefined:] == ["n/a"] * undefined  # undefined values sort last
    values = [numbers(cell)[0] for cell in cells[:-undefined]]
    assert values == pytest.approx(sorted(r["value"] for r in rows if r["value"] is not None), abs=TOL)
    assert cells != [row[column - 1] for row in parse(page).tables["results"]["rows"]]  # the order changed
    assert 'aria-sort="ascending"' in result.stdout


def test_screenshot_is_not_blank(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    result = chromium(f"--screenshot={shot}", "--window-size=1400,3000", report.as_uri(), profile=tmp_path / "profile")
    assert console_lines(result.stderr) == []
    with Image.open(shot) as image:
        rgb = image.convert("RGB")
        assert rgb.size == (1400, 3000)
        colours = rgb.getcolors(maxcolors=1 << 22)
    assert colours is not None and len(colours) > 500  # text, tables and figures, not a flat page
    background = max(colours)[0]
    assert background / (1400 * 3000) < 0.8  # most common colour (page background) leaves room for content


# Measures, after layout, whether any cell of the models table hides content (scroll size larger
# than the box), and whether the DeLong/bootstrap note is visible; the answers go into attributes.
LAYOUT_PROBE = (
    '<script>window.addEventListener("load",function(){var cells=document.querySelectorAll('
    '"#models td, #models .layers"),clipped=0;for(var i=0;i<cells.length;i++){var c=cells[i];'
    "if(c.scrollHeight>c.clientHeight+1||c.scrollWidth>c.clientWidth+1)clipped++;}"
    'document.body.setAttribute("data-clipped",String(clipped));'
    'var note=document.querySelector("#comparisons p.why");'
    'document.body.setAttribute("data-note-visible",note&&note.offsetHeight>0?"yes":"no");'
    'var fig=document.querySelector("#fig-layer_curves img");'
    'document.body.setAttribute("data-layer-figure",fig?fig.naturalWidth+"x"+fig.naturalHeight:"none");'
    "});</script></body>")


def test_new_report_parts_as_rendered(report: Path, tmp_path: Path) -> None:
    """Layer sweeps per fraction with validation curves, one AUC row per binary probe, every layer
    of the models table visible (not clipped), and the p-value note."""
    probe = report.parent / "report_layout.html"
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", LAYOUT_PROBE), encoding="utf-8")
    result = chromium("--dump-dom", "--window-size=1400,3000", probe.as_uri(), profile=tmp_path / "profile")
    dom = result.stdout
    assert console_lines(result.stderr) == []
    assert 'data-clipped="0"' in dom
    models = {cells[0]: cells[1] for cells in parse(dom).tables["models"]["rows"]}
    assert models["clip-vit"] == "4: layer_0, layer_4, layer_8, layer_11"
    assert 'data-note-visible="yes"' in dom and "Why the two p-values differ" in dom

    results = parse(dom).tables["results"]
    metric = results["head"].index("metric")
    rows = json.loads((report.parent / "results.json").read_text())
    probes = {(r["backbone"], r["layer"], r["train_fraction"], r["seed"]) for r in rows}
    shown = [cells[metric] for cells in results["rows"]]
    assert shown.count("auc") == len(probes) and not any(m.startswith("auc[") for m in shown)

    # the layer figure: one panel per train fraction (clip-vit; pixels has one layer), each with a
    # dashed grey validation curve (matplotlib draws text as outlines, so count the styled lines)
    size = re.search(r'data-layer-figure="(\d+)x(\d+)"', dom)
    assert size is not None and int(size.group(1)) > 2 * int(size.group(2))  # three panels side by side
    source = re.search(r'<figure id="fig-layer_curves"><img src="data:image/svg\+xml;base64,([^"]+)"', dom)
    svg = base64.b64decode(source.group(1)).decode("utf-8")
    dashed_grey = re.findall(r'style="[^"]*stroke-dasharray[^"]*stroke: #595959', svg)
    assert len(dashed_grey) == 3 + 1  # three panels and the legend's sample line
    assert "validation score the layer was chosen by" in dom


# After layout: which of the statistics sections and figures are visible, whether every image
# decoded, and whether the t-test warning is shown in its warning style.
STATISTICS_PROBE = (
    '<script>window.addEventListener("load",function(){var ids=["calibration","subgroups","per-class",'
    '"label-efficiency","replicate-t-test","mcq-robustness","fig-reliability","fig-per_group","fig-mcq_strata"],'
    'shown=[];for(var i=0;i<ids.length;i++){var e=document.getElementById(ids[i]);'
    'if(e&&e.offsetHeight>0)shown.push(ids[i]);}'
    'document.body.setAttribute("data-shown",shown.join(","));var ok=document.images.length>0;'
    "for(var k=0;k<document.images.length;k++){var im=document.images[k];ok=ok&&im.complete&&im.naturalWidth>0;}"
    'document.body.setAttribute("data-images-ok",ok?"yes":"no");'
    'var w=document.querySelector("#comparisons p.warn");'
    'document.body.setAttribute("data-warning",w&&w.offsetHeight>0?getComputedStyle(w).fontWeight:"none");'
    "});</script></body>")


def test_statistics_parts_render(tmp_path: Path) -> None:
    """Issue 14/16 parts in a real browser: calibration, subgroups, per-class, label-efficiency CIs,
    the t-test under its warning, MCQ order robustness and their figures, with no console message."""
    path = add_statistics_fields(make_run_dir(tmp_path / "run"))
    (path / "mcq_results.json").write_text(json.dumps(MCQ_STUDY_SUMMARY))
    report = build_report(path)
    probe = path / "report_statistics.html"
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", STATISTICS_PROBE), encoding="utf-8")
    result = chromium("--dump-dom", "--window-size=1400,3000", probe.as_uri(), profile=tmp_path / "profile")
    dom = result.stdout
    assert console_lines(result.stderr) == []
    shown = re.search(r'data-shown="([^"]*)"', dom).group(1).split(",")
    assert shown == ["calibration", "subgroups", "per-class", "label-efficiency", "replicate-t-test",
                     "mcq-robustness", "fig-reliability", "fig-per_group", "fig-mcq_strata"]
    assert 'data-images-ok="yes"' in dom
    weight = re.search(r'data-warning="([^"]*)"', dom).group(1)
    assert weight != "none" and int(weight) >= 600  # the warning is there, and bold
    assert "percentile bootstrap over 30 patients (1,000 replicates)" in dom
    shot = tmp_path / "statistics.png"
    chromium(f"--screenshot={shot}", "--window-size=1400,3000", report.as_uri(), profile=tmp_path / "profile")
    with Image.open(shot) as image:
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 22) or []) > 500
