"""The GPU check script's CPU dry run (``--tiny``): it builds both IDEFICS shapes, extracts, fits the grid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.sh"


@pytest.mark.slow
def test_gpu_check_tiny_dry_run():
    """~15 s of CPU (about 50 s wall on the shared 2-core machine)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    completed = subprocess.run(["bash", str(SCRIPT), "--tiny"], capture_output=True, text=True, env=env, timeout=600)
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    models = {line["model"] for line in lines if "decoder_layers" in line}
    assert models == {"idefics-9b-sized", "idefics-80b-shaped"}
    rates = [line for line in lines if "images_per_s" in line]
    assert len(rates) == 6 and all(line["images_per_s"] > 0 for line in rates)
    grids = {line["probe_grid"]: line for line in lines if "probe_grid" in line}
    assert set(grids) == {"path", "batched"} and all(g["unconverged_heads"] == 0 for g in grids.values())
