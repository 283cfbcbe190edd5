"""The golden run: a refactor must leave every number medprobe writes unchanged.

``tests/golden/pixels/`` holds results.json, comparisons.json and predictions.parquet as the
code before the stage redesign wrote them for ``tests/golden/pixels_run.yaml``. On a machine of
the kind that wrote them (same CPU model and NumPy, recorded in ``written_on.json``) the files
must be byte-identical to the sha256 recorded there (re-recorded, with the reason, when a
change moves only the last bits); on another CPU, BLAS may round the probe's sums differently in the last
bit, so there the test compares every key, string and integer exactly and every float to 1e-9.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medprobe.config import load_config
from medprobe.experiment import run_experiment

from conftest import SHARED_DATA

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
FILES = ("results.json", "comparisons.json", "predictions.parquet")


def _cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")


def _close(a, b, where: str) -> None:
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), where
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), \
            f"{where}: {a!r} != {b!r}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for key in a:
            _close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def golden_run(tmp_path_factory) -> Path:
    if not (SHARED_DATA / "medmnist" / "pneumoniamnist.npz").exists():
        pytest.skip("PneumoniaMNIST file not found (set MEDPROBE_DATA_DIR)")
    out = tmp_path_factory.mktemp("golden_run")
    config = load_config(GOLDEN / "pixels_run.yaml")
    config.cache_dir = str(out / "cache")
    run_experiment(config, out / "run", show_progress=False)
    return out / "run"


def test_golden_outputs_unchanged(golden_run: Path) -> None:
    written_on = json.loads((GOLDEN / "pixels" / "written_on.json").read_text())
    same_machine = written_on["cpu"] == _cpu_model() and written_on["numpy"] == np.__version__
    for name in FILES:
        new, old = golden_run / name, GOLDEN / "pixels" / name
        if same_machine:
            assert hashlib.sha256(new.read_bytes()).hexdigest() == written_on["sha256"][name], name
        if name.endswith(".json"):
            _close(json.loads(new.read_text()), json.loads(old.read_text()), name)
        else:
            a, b = pd.read_parquet(new), pd.read_parquet(old)
            assert list(a.columns) == list(b.columns) and list(a.dtypes) == list(b.dtypes)
            pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9, atol=1e-12)
