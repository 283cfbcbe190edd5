"""The feature cache: reuse, resume, keys, skipping, locking, incomplete layers."""

from __future__ import annotations

import json

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

    from medprobe.features.cache import atomic_write_json

    atomic_write_json(tmp_path / "x.json", {"a": float("nan")})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "x.json").stat().st_mode) == 0o666 & ~mask
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": None}
