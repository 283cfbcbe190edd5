"""Fault tolerance of the feature cache: SIGKILL at random points, concurrent writers, bad folders."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import ToyBackbone, make_dataset
from medprobe.errors import CacheError
from medprobe.features import FeatureCache, extract_features

TESTS_DIR = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from conftest import ToyBackbone, make_dataset
    from medprobe.features import extract_features

    class Slow(ToyBackbone):
        def extract(self, images, layers):
            time.sleep(0.02)
            return super().extract(images, layers)

    extract_features(Slow(), make_dataset(60), ["mean", "hist"], sys.argv[1], chunk_size=3, batch_size=2,
                     show_progress=False)
    print("done")
    """
)


def _chunk_bytes(cache: FeatureCache) -> dict[str, bytes]:
    return {str(p.relative_to(cache.path)): p.read_bytes()
            for p in sorted((cache.path / "layers").rglob("*")) if p.is_file()}


def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path):
    reference = extract_features(ToyBackbone(), make_dataset(60), ["mean", "hist"], tmp_path / "ref",
                                 chunk_size=3, batch_size=2, show_progress=False)
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(TESTS_DIR)))
    root = tmp_path / "killed"
    rng = random.Random(1234)
    total_files = 2 * 20  # 2 layers x 20 chunks of 3 samples
    kills = 0
    for _ in range(4):
        done = len(list(root.rglob("chunk-*.safetensors"))) if root.exists() else 0
        target = rng.randint(done + 1, min(done + 12, total_files - 1))
        process = subprocess.Popen([sys.executable, str(script), str(root)], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if root.exists() and len(list(root.rglob("chunk-*.safetensors"))) >= target:
                process.send_signal(signal.SIGKILL)  # lands anywhere: mid-batch, mid-write, mid-rename
                kills += 1
                break
            time.sleep(0.002)
        process.wait()
        partial = FeatureCache(next(root.iterdir()))
        for layer in ("mean", "hist"):
            if not partial.is_complete(layer):
                with pytest.raises(CacheError, match="incomplete"):
                    partial.load(layer)
        # every chunk under its final name is whole: it parses, with the right rows
        for path in (partial.path / "layers").rglob("chunk-*.safetensors"):
            from safetensors.numpy import load_file

            assert load_file(str(path))["features"].shape[0] == 3
    finished = subprocess.run([sys.executable, str(script), str(root)], capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    resumed = FeatureCache(next(root.iterdir()))
    assert kills == 4, "a run finished before it could be killed; the test did not exercise crashes"
    assert _chunk_bytes(resumed).keys() == _chunk_bytes(reference).keys()
    for name, data in _chunk_bytes(reference).items():
        if "chunk-" in name:
            assert _chunk_bytes(resumed)[name] == data, name
    for layer in ("mean", "hist"):
        assert resumed.load(layer)[0] == reference.load(layer)[0]


def test_read_only_output_folder_is_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        # root ignores permission bits; simulate with a file where the cache folder should be
        blocker = tmp_path / "cache"
        blocker.write_text("not a folder")
        with pytest.raises(CacheError, match="cannot write"):
            extract_features(ToyBackbone(), make_dataset(8), ["mean"], blocker, show_progress=False)
        return
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(CacheError, match="cannot write"):
            extract_features(ToyBackbone(), make_dataset(8), ["mean"], folder, show_progress=False)
    finally:
        folder.chmod(0o700)


def test_disk_full_is_a_clear_error(tmp_path, monkeypatch):
    import errno

    import medprobe.features.cache as cache_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module.os, "fsync", full)  # the kernel reports ENOSPC when data is flushed
    with pytest.raises(CacheError, match="disk full"):
        extract_features(ToyBackbone(), make_dataset(8), ["mean"], tmp_path, show_progress=False)


# ------------------------------------------------- corrupted features and dtype, through the CLI
def _run_file(tmp_path: Path, **extraction) -> Path:
    import yaml

    from test_run_folder import _config, _write_medmnist

    _write_medmnist(tmp_path / "data" / "medmnist" / "pneumoniamnist.npz")
    config = _config(tmp_path, tmp_path / "out", 20)
    config["extraction"] = {"chunk_size": 32, **extraction}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _flat(text: str) -> str:
    """Terminal output without the line breaks rich inserts into long paths."""
    return "".join(text.split())


def test_flipped_feature_bytes_stop_the_run_and_extraction_repairs_them(tmp_path):
    """The issue's reproduction: overwritten tensor bytes used to change results.json silently."""
    import json

    from typer.testing import CliRunner

    from medprobe.cli import app

    run_file = _run_file(tmp_path)
    runner = CliRunner()
    first = runner.invoke(app, ["run", str(run_file), "--quiet"])
    assert first.exit_code == 0, first.output
    results = (tmp_path / "out" / "results.json").read_bytes()
    entry = Path(json.loads((tmp_path / "out" / "run.json").read_text())["backbones"][0]["cache_dir"])
    chunk = sorted(entry.glob("layers/*/chunk-000001.safetensors"))[0]
    data = bytearray(chunk.read_bytes())
    data[8 + int.from_bytes(data[:8], "little") + 11] ^= 0x01  # one bit of one feature value
    chunk.write_bytes(bytes(data))
    probed = runner.invoke(app, ["probe", str(run_file), "--overwrite", "--quiet"])
    assert probed.exit_code == 2, probed.output
    assert _flat(str(chunk)) in _flat(probed.output) and "medprobeextractRUN.yaml" in _flat(probed.output)
    assert (tmp_path / "out" / "results.json").read_bytes() == results  # the old outputs stand
    repaired = runner.invoke(app, ["extract", str(run_file), "--quiet"])
    assert repaired.exit_code == 0, repaired.output
    again = runner.invoke(app, ["probe", str(run_file), "--overwrite", "--quiet"])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "out" / "results.json").read_bytes() == results


def test_float32_run_reads_float32_and_says_so(tmp_path):
    import json

    import yaml
    from typer.testing import CliRunner

    from medprobe.cli import app

    run_file = _run_file(tmp_path)
    runner = CliRunner()
    assert runner.invoke(app, ["run", str(run_file), "--quiet"]).exit_code == 0
    half = json.loads((tmp_path / "out" / "run.json").read_text())["backbones"]
    config = yaml.safe_load(run_file.read_text())
    config["extraction"]["dtype"] = "float32"
    run_file.write_text(yaml.safe_dump(config))
    refused = runner.invoke(app, ["probe", str(run_file), "--overwrite", "--quiet"])  # cached float16 only
    assert refused.exit_code == 2 and "anotherdtype" in _flat(refused.output), refused.output
    full_run = runner.invoke(app, ["run", str(run_file), "--overwrite", "--quiet"])
    assert full_run.exit_code == 0, full_run.output
    full = json.loads((tmp_path / "out" / "run.json").read_text())["backbones"]
    assert [b["cache_dtype"] for b in half] == ["float16", "float16"]
    assert [b["cache_dtype"] for b in full] == ["float32", "float32"]
    assert {b["cache_dir"] for b in full}.isdisjoint(b["cache_dir"] for b in half)
    assert "readasfloat32" in _flat(full_run.output) and "float16" not in full_run.output
