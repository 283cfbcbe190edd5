"""The feature cache: reuse, resume, keys, skipping, locking, incomplete layers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import ToyBackbone, make_dataset
from medprobe.errors import CacheError, DataError
from medprobe.features import FeatureCache, extract_features, load


def test_features_roundtrip_and_match_backbone(tmp_path):
    data = make_dataset(23)
    backbone = ToyBackbone()
    cache = extract_features(backbone, data, ["mean", "hist"], tmp_path, chunk_size=5, show_progress=False)
    ids, array = load(cache.path, "hist")
    assert ids == data.sample_ids
    direct = backbone.extract([img for _, img in data.iter_images()], ["hist"])["hist"]
    np.testing.assert_allclose(array, direct.astype(np.float16).astype(np.float32))
    assert array.dtype == np.float32 and array.shape == (23, 8)
    assert sorted(cache.layers()) == ["hist", "mean"]


def test_second_run_computes_nothing_and_new_layer_only_that_layer(tmp_path):
    data = make_dataset(20)
    backbone = ToyBackbone()
    extract_features(backbone, data, ["mean"], tmp_path, chunk_size=8, show_progress=False)
    assert backbone.images_seen == 20
    extract_features(backbone, data, ["mean"], tmp_path, chunk_size=8, show_progress=False)
    assert backbone.images_seen == 20
    cache = extract_features(backbone, data, ["mean", "hist"], tmp_path, chunk_size=8, show_progress=False)
    assert backbone.images_seen == 40  # one more pass, for the new layer only
    assert cache.layers() == ["hist", "mean"]


def test_changed_setting_gets_a_new_entry(tmp_path):
    data = make_dataset(12)
    a = extract_features(ToyBackbone(1.0), data, ["mean"], tmp_path, show_progress=False)
    b = extract_features(ToyBackbone(2.0), data, ["mean"], tmp_path, show_progress=False)
    c = extract_features(ToyBackbone(1.0), data.subset(np.arange(12) < 10), ["mean"], tmp_path, show_progress=False)
    assert len({a.path, b.path, c.path}) == 3
    np.testing.assert_allclose(load(b.path, "mean")[1], 2 * load(a.path, "mean")[1], rtol=1e-3)
    meta = json.loads((a.path / "meta.json").read_text())
    assert meta["fingerprint"]["backbone"] == {"backbone": "toy", "scale": 1.0}


def test_resume_after_crash_is_identical(tmp_path):
    data = make_dataset(30)
    reference = extract_features(ToyBackbone(), data, ["mean", "hist"], tmp_path / "ref", chunk_size=4,
                                 show_progress=False)

    class Crashing(ToyBackbone):
        def extract(self, images, layers):
            if self.images_seen >= 12:
                raise RuntimeError("simulated crash")
            return super().extract(images, layers)

    with pytest.raises(RuntimeError):
        extract_features(Crashing(), data, ["mean", "hist"], tmp_path / "run", chunk_size=4, show_progress=False)
    partial = FeatureCache(next((tmp_path / "run").iterdir()))
    assert not partial.is_complete("mean")
    with pytest.raises(CacheError, match="incomplete"):
        partial.load("mean")
    resumed_backbone = ToyBackbone()
    resumed = extract_features(resumed_backbone, data, ["mean", "hist"], tmp_path / "run", chunk_size=4,
                               show_progress=False)
    assert resumed_backbone.images_seen == 30 - 12
    for layer in ("mean", "hist"):
        for chunk in reference.chunks():
            assert reference.chunk_path(layer, chunk.index).read_bytes() == \
                resumed.chunk_path(layer, chunk.index).read_bytes()


def test_bad_image_raises_with_sample_and_path(tmp_path):
    data = make_dataset(10, bad=[3])
    with pytest.raises(DataError, match=r"s003.*mem://3.*truncated"):
        extract_features(ToyBackbone(), data, ["mean"], tmp_path, show_progress=False)


def test_skip_lists_bad_images(tmp_path):
    data = make_dataset(10, bad=[3, 4])
    cache = extract_features(ToyBackbone(), data, ["mean"], tmp_path, chunk_size=2, on_error="skip",
                             show_progress=False)
    ids, array = cache.load("mean")
    assert "s003" not in ids and "s004" not in ids and len(ids) == 8 == len(array)
    assert [s["sample_id"] for s in cache.skipped("mean")] == ["s003", "s004"]


def test_second_writer_is_refused(tmp_path):
    data = make_dataset(8)
    cache = FeatureCache.open_or_create(tmp_path, "toy", {"backbone": ToyBackbone().fingerprint(),
                                                           "preprocessing": data.preprocessing}, data.sample_ids)
    with cache.writer_lock():
        with pytest.raises(CacheError, match="another process"):
            extract_features(ToyBackbone(), data, ["mean"], tmp_path, show_progress=False)


def test_float16_overflow_is_reported(tmp_path):
    data = make_dataset(8)
    with pytest.raises(CacheError, match="float32"):
        extract_features(ToyBackbone(1e6), data, ["mean"], tmp_path, show_progress=False)
    cache = extract_features(ToyBackbone(1e6), data, ["mean"], tmp_path / "f32", dtype="float32",
                             show_progress=False)
    assert np.isfinite(cache.load("mean")[1]).all()


def test_damaged_chunk_is_a_clear_error(tmp_path):
    data = make_dataset(8)
    cache = extract_features(ToyBackbone(), data, ["mean"], tmp_path, chunk_size=4, show_progress=False)
    cache.chunk_path("mean", 1).write_bytes(b"garbage")
    with pytest.raises(CacheError, match="chunk-000001"):
        cache.load("mean")


def test_written_files_get_normal_permissions(tmp_path):
    import os
    import stat

    from medprobe.io import atomic_write_json

    atomic_write_json(tmp_path / "x.json", {"a": float("nan")})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o666 & ~mask
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": None}


# ------------------------------------------------------------------ checksums, dtype, durability
def _tensor_offset(path) -> int:
    """Where the tensor bytes of a safetensors file start (8-byte header length + header)."""
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


def _flip_byte(path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0x10
    path.write_bytes(bytes(data))


def _reference_bytes(cache, layer="mean"):
    return {c.index: cache.chunk_path(layer, c.index).read_bytes() for c in cache.chunks()}


@pytest.mark.parametrize("damage", ["tensor_byte", "sample_id_in_header", "truncated", "missing"])
def test_damaged_chunk_is_never_used_and_is_recomputed_by_the_next_extraction(tmp_path, damage):
    data = make_dataset(12)
    backbone = ToyBackbone()
    cache = extract_features(backbone, data, ["mean", "hist"], tmp_path, chunk_size=4, show_progress=False)
    good = _reference_bytes(cache)
    path = cache.chunk_path("mean", 1)
    if damage == "tensor_byte":  # a bad disk: the file still parses, one value changes
        _flip_byte(path, _tensor_offset(path) + 5)
    elif damage == "sample_id_in_header":  # rows silently attributed to another sample
        path.write_bytes(path.read_bytes().replace(b"s005", b"s050", 1))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:-7])
    else:
        path.unlink()
    with pytest.raises(CacheError) as caught:
        cache.load("mean")
    message = str(caught.value)
    assert str(path) in message and "medprobe extract" in message
    assert not cache.is_complete("mean") and cache.is_complete("hist")  # the other layer is untouched
    assert not path.exists()
    if damage != "missing":
        assert path.with_name(path.name + ".corrupt").is_file()  # kept aside for inspection
    seen = backbone.images_seen
    again = extract_features(backbone, data, ["mean", "hist"], tmp_path, chunk_size=4, show_progress=False)
    assert backbone.images_seen - seen == 4  # only the bad chunk, only once
    assert _reference_bytes(again) == good
    assert not path.with_name(path.name + ".corrupt").exists()
    np.testing.assert_array_equal(again.load("mean")[1], cache.load("mean")[1])


def test_chunk_corrupted_before_its_layer_completes_is_recomputed_in_the_same_extraction(tmp_path):
    from medprobe.features.extract import CorruptChunkWarning

    data = make_dataset(12)
    reference = extract_features(ToyBackbone(), data, ["mean"], tmp_path / "ref", chunk_size=4, show_progress=False)

    class Crashing(ToyBackbone):
        def extract(self, images, layers):
            if self.images_seen >= 8:
                raise RuntimeError("simulated crash")
            return super().extract(images, layers)

    with pytest.raises(RuntimeError):
        extract_features(Crashing(), data, ["mean"], tmp_path / "run", chunk_size=4, show_progress=False)
    partial = FeatureCache(next((tmp_path / "run").iterdir()))
    bad = partial.chunk_path("mean", 0)
    _flip_byte(bad, _tensor_offset(bad))  # damaged while the run was down
    backbone = ToyBackbone()
    with pytest.warns(CorruptChunkWarning, match=str(bad)):
        resumed = extract_features(backbone, data, ["mean"], tmp_path / "run", chunk_size=4, show_progress=False)
    assert backbone.images_seen == 4 + 4  # the missing chunk 2, then the damaged chunk 0
    assert _reference_bytes(resumed) == _reference_bytes(reference)


def test_float32_request_never_reads_a_float16_entry(tmp_path):
    data = make_dataset(10)
    backbone = ToyBackbone(1 / 3)  # values float16 cannot hold exactly
    half = extract_features(backbone, data, ["mean"], tmp_path, show_progress=False)
    full = extract_features(backbone, data, ["mean"], tmp_path, dtype="float32", show_progress=False)
    assert half.path != full.path and backbone.images_seen == 20  # a new float32 entry, computed
    assert (half.dtype_name, full.dtype_name) == ("float16", "float32")
    direct = backbone.extract([img for _, img in data.iter_images()], ["mean"])["mean"]
    np.testing.assert_array_equal(full.load("mean")[1], direct)  # full precision, bit for bit
    assert np.abs(half.load("mean")[1] - direct).max() > 0  # the float16 entry really is rounded
    again = extract_features(backbone, data, ["mean"], tmp_path, show_progress=False)
    assert again.path == half.path  # each dtype keeps its own entry


def test_renames_are_durable_and_the_marker_follows_durable_chunks(tmp_path, monkeypatch):
    import os
    import stat

    import medprobe.features.cache as cache_module

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        events.append(("fsync", kind, os.readlink(f"/proc/self/fd/{fd}") if kind == "dir" else ""))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", "", str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(cache_module.os, "fsync", fsync)
    monkeypatch.setattr(cache_module.os, "replace", replace)
    cache = extract_features(ToyBackbone(), make_dataset(12), ["mean"], tmp_path, chunk_size=4, show_progress=False)
    replaces = [i for i, event in enumerate(events) if event[0] == "replace"]
    assert replaces
    for i in replaces:  # file fsynced before the rename, its folder fsynced after it
        assert events[i - 1][:2] == ("fsync", "file")
        assert events[i + 1] == ("fsync", "dir", str(Path(events[i][2]).parent))
    marker = next(i for i in replaces if events[i][2].endswith("COMPLETE"))
    chunk_dir_syncs = [i for i, e in enumerate(events) if e[:2] == ("fsync", "dir")
                       and e[2] == str(cache.chunk_path("mean", 0).parent)]
    chunk_writes = [i for i in replaces if "chunk-" in events[i][2]]
    assert len(chunk_writes) == 3 and max(chunk_writes) + 1 < marker  # every chunk durable before the marker
    assert chunk_dir_syncs[-1] > marker  # (the marker's own rename is made durable too)


def test_cache_verify_lists_bad_chunks_and_changes_nothing(tmp_path):
    from typer.testing import CliRunner

    from medprobe.cli import app

    data = make_dataset(12)
    cache = extract_features(ToyBackbone(), data, ["mean", "hist"], tmp_path, chunk_size=4, show_progress=False)
    runner = CliRunner()
    result = runner.invoke(app, ["cache", "verify", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "6 chunk(s) in 1 entry checked: 0 bad" in result.output
    bad = cache.chunk_path("hist", 2)
    _flip_byte(bad, _tensor_offset(bad) + 3)
    damaged = bad.read_bytes()
    result = runner.invoke(app, ["cache", "verify", str(cache.path)])
    assert result.exit_code == 1
    assert "chunk-000002" in result.output and "1 bad" in result.output and "checksum" in result.output
    assert bad.read_bytes() == damaged and cache.is_complete("hist")  # verify only reports


def test_cache_gc_removes_only_unreferenced_entries_and_only_with_yes(tmp_path):
    from typer.testing import CliRunner

    from medprobe.cli import app

    root = tmp_path / "cache"
    data = make_dataset(8)
    used = extract_features(ToyBackbone(1.0), data, ["mean"], root, show_progress=False)
    unused = extract_features(ToyBackbone(2.0), data, ["mean"], root, show_progress=False)
    (root / "not-medprobe").mkdir()
    (root / "not-medprobe" / "keep.txt").write_text("x")
    runs = tmp_path / "runs" / "t1"
    runs.mkdir(parents=True)
    (runs / "run.json").write_text(json.dumps({"backbones": [{"cache_key": used.meta["key"],
                                                              "cache_dir": str(used.path)}]}))
    runner = CliRunner()
    dry = runner.invoke(app, ["cache", "gc", str(root), "--runs", str(tmp_path / "runs")])
    assert dry.exit_code == 0, dry.output
    assert "would delete" in dry.output and unused.path.name in dry.output and used.path.name not in dry.output
    assert unused.path.is_dir()  # a dry run deletes nothing
    with unused.writer_lock():  # an entry being written is never removed
        busy = runner.invoke(app, ["cache", "gc", str(root), "--runs", str(tmp_path / "runs"), "--yes"])
        assert "skipped" in busy.output and unused.path.is_dir()
    done = runner.invoke(app, ["cache", "gc", str(root), "--runs", str(tmp_path / "runs"), "--yes"])
    assert done.exit_code == 0, done.output
    assert not unused.path.exists() and used.path.is_dir() and (root / "not-medprobe" / "keep.txt").is_file()
    assert used.load("mean")[0] == data.sample_ids
    refused = runner.invoke(app, ["cache", "gc", str(root)])
    assert refused.exit_code != 0 and used.path.is_dir()  # no run folder named: refuse, never "all unused"
