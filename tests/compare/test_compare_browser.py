"""compare.html as a user sees it, rendered by real headless Chromium (as tests/report/test_report_browser.py
does for the run report): every number of the tables equals comparison.json, every figure is an
embedded image that decodes, no console message, nothing fetched from outside the file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from medprobe.compare import compare_runs
from medprobe.config import parse_config
from medprobe.experiment import run_experiment
from test_compare import DATA, PIXELS, PIXELS_14, copy_run, run_file
from test_report import numbers, parse
from test_report_browser import chromium, console_lines

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not DATA.is_file(), reason="needs $MEDPROBE_DATA_DIR/medmnist/pneumoniamnist.npz")]

# After load: whether every image decoded, and every URL the page holds outside data: URIs.
PROBE = ('<script>window.addEventListener("load",function(){var ok=document.images.length>0;'
         "for(var i=0;i<document.images.length;i++){var im=document.images[i];ok=ok&&im.complete&&im.naturalWidth>0;}"
         'document.body.setAttribute("data-images-ok",ok?"yes":"no");var out=[];'
         'document.querySelectorAll("[src],[href]").forEach(function(e){var u=e.getAttribute("src")||'
         'e.getAttribute("href");if(u.indexOf("data:")!==0)out.push(u);});'
         'document.body.setAttribute("data-external",String(out.length));'
         'document.body.setAttribute("data-resources",String(performance.getEntriesByType("resource").filter('
         'function(r){return r.name.indexOf("data:")!==0;}).length));});</script></body>')


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compare")
    for name, backbones in (("a", [PIXELS]), ("b", [PIXELS_14])):
        run_experiment(parse_config({**run_file(name, backbones), "cache_dir": str(root / "cache")}), root / name,
                       show_progress=False)
    other = copy_run(root / "b", root / "other", "b-other")
    frame = pd.read_parquet(other / "predictions.parquet")
    frame[frame["sample_id"] != frame["sample_id"].iloc[0]].to_parquet(other / "predictions.parquet")
    return compare_runs([root / "a", root / "b", other], root / "out")


def test_tables_equal_comparison_json(report: Path, tmp_path: Path) -> None:
    result = chromium("--dump-dom", report.as_uri(), profile=tmp_path / "profile")
    assert console_lines(result.stderr) == []
    comparison = json.loads((report.parent / "comparison.json").read_text())
    tables = parse(result.stdout).tables
    head, rows = tables["headline"]["head"], tables["headline"]["rows"]
    assert head[2:] == comparison["columns"]
    cells = {(c["task"], c["column"]): c for c in comparison["cells"]}
    shown = 0
    for row in rows:
        task = row[0].split()[0]
        for column, text in zip(head[2:], row[2:]):
            cell = cells[(task, column)]
            assert numbers(text)[:4] == pytest.approx([cell["value"], cell["ci_low"], cell["ci_high"], cell["rank"]],
                                                      abs=5e-4)
            shown += 1
    assert shown == len(cells) == 3
    ranks = {r[0]: float(r[1]) for r in tables["ranks"]["rows"]}
    assert ranks == pytest.approx({m["column"]: m["mean_rank"] for m in comparison["mean_ranks"]}, abs=5e-3)
    paired = tables["comparisons"]["rows"]
    assert len(paired) == len(comparison["comparisons"]) == 6  # a and b only: b-other is never paired
    for text, row in zip(paired, comparison["comparisons"]):
        assert numbers(" ".join(text[7:9])) == pytest.approx([row["diff"], row["ci_low"], row["ci_high"]], abs=5e-5)
        assert float(text[9]) == pytest.approx(row["p_value"], rel=5e-3)
    assert "b-other" in result.stdout and "never paired" in result.stdout
    assert len(parse(result.stdout).tables["provenance"]["rows"]) == 3


def test_figures_embedded_and_nothing_fetched(report: Path, tmp_path: Path) -> None:
    probe = report.parent / "compare_probe.html"
    probe.write_text(report.read_text(encoding="utf-8").replace("</body>", PROBE), encoding="utf-8")
    result = chromium("--dump-dom", probe.as_uri(), profile=tmp_path / "profile")
    assert console_lines(result.stderr) == []
    dom = result.stdout
    assert 'data-images-ok="yes"' in dom and 'data-external="0"' in dom and 'data-resources="0"' in dom
    figures = sorted(p.stem for p in (report.parent / "figures").glob("*.svg"))
    assert figures == ["label_efficiency", "layer_sweeps", "task_bars"] or figures == ["label_efficiency", "task_bars"]
    assert sorted(re.findall(r'<figure id="fig-(\w+)"><img src="data:image/svg\+xml;base64,', dom)) == figures
