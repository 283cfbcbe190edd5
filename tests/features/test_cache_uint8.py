"""8-bit per-feature affine storage (``extraction.dtype: uint8``), the study's way.

Reference: ``torch.quantize_per_channel`` along the feature axis with the study's parameters
(``utils.adjust_precision``: per-feature min / max over all rows of the float16-then-float32
activations, ``scale = (max - min) / 255``, ``zero_point = round(-min / scale)``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import ToyBackbone, make_dataset
from medprobe.errors import CacheError
from medprobe.features import extract_features, load
from medprobe.features.quantize import PARAMS_NAME, STAGING_DTYPE, affine_params, dequantise, quantise


def _study_reference(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes and dequantised values as the study's ``adjust_precision(..., 8, per_channel=True)``."""
    torch = pytest.importorskip("torch")
    tensor = torch.from_numpy(values.astype(np.float16).astype(np.float32))
    minimum, maximum = tensor.min(dim=0)[0], tensor.max(dim=0)[0]
    scale = (maximum - minimum) / 255
    zero_point = torch.round(-minimum / scale)
    quantised = torch.quantize_per_channel(tensor, scale, zero_point, 1, torch.quint8)
    return quantised.int_repr().numpy(), quantised.dequantize().numpy()


def test_codes_and_values_equal_torch_quantize_per_channel():
    rng = np.random.default_rng(0)
    values = (rng.normal(size=(2000, 96)) * rng.uniform(0.1, 30, 96) + rng.normal(size=96) * 5).astype(np.float16)
    codes, dequantised = _study_reference(values)
    stored = values.astype(np.float32)
    params = affine_params(stored.min(axis=0), stored.max(axis=0))
    np.testing.assert_array_equal(quantise(stored, params), codes)
    np.testing.assert_array_equal(dequantise(quantise(stored, params), params), dequantised)


def test_constant_feature_reads_back_exactly():
    values = np.stack([np.full(10, 3.25), np.linspace(-1, 1, 10)], axis=1).astype(np.float32)
    params = affine_params(values.min(axis=0), values.max(axis=0))
    back = dequantise(quantise(values, params), params)
    np.testing.assert_array_equal(back[:, 0], 3.25)
    assert np.abs(back[:, 1] - values[:, 1]).max() <= params[1, 1] / 2 + 1e-7


@pytest.mark.parametrize("chunk_size", [3, 7, 64])
def test_uint8_cache_is_the_whole_layers_quantisation_whatever_the_chunking(tmp_path, chunk_size):
    data = make_dataset(23)
    backbone = ToyBackbone()
    cache = extract_features(backbone, data, ["mean", "hist"], tmp_path / str(chunk_size), chunk_size=chunk_size,
                             dtype="uint8", show_progress=False)
    direct = backbone.extract([img for _, img in data.iter_images()], ["hist"])["hist"]
    _, expected = _study_reference(direct)
    ids, array = load(cache.path, "hist")
    assert ids == data.sample_ids and array.dtype == np.float32
    constant = np.ptp(direct.astype(np.float16), axis=0) == 0
    assert constant.any()  # the study's zero scale turns such a feature into NaN; medprobe keeps its value
    np.testing.assert_array_equal(array[:, ~constant], expected[:, ~constant])
    np.testing.assert_array_equal(array[:, constant], direct.astype(np.float16)[:, constant])
    stored = [np.asarray(a) for _, _, a in cache._verified_chunks("hist", (np.uint8,))]
    assert all(a.dtype == np.uint8 for a in stored)
    assert (cache.chunk_path("hist", 0).parent / PARAMS_NAME).is_file()
    assert json.loads((cache.path / "meta.json").read_text())["dtype"] == "uint8"


def test_uint8_entry_is_its_own_and_smaller(tmp_path):
    data = make_dataset(40)
    half = extract_features(ToyBackbone(), data, ["hist"], tmp_path, chunk_size=40, show_progress=False)
    eight = extract_features(ToyBackbone(), data, ["hist"], tmp_path, chunk_size=40, dtype="uint8",
                             show_progress=False)
    assert half.path != eight.path
    size = {c: sum(p.stat().st_size for p in c.path.glob("layers/*/chunk-*")) for c in (half, eight)}
    assert size[eight] < size[half]


def test_conversion_killed_half_way_resumes_with_the_same_parameters(tmp_path):
    data = make_dataset(20)
    reference = extract_features(ToyBackbone(), data, ["hist"], tmp_path / "ref", chunk_size=4, dtype="uint8",
                                 show_progress=False)
    cache = extract_features(ToyBackbone(), data, ["hist"], tmp_path / "run", chunk_size=4, dtype="uint8",
                             show_progress=False)
    # put two chunks back into their float16 staging form and drop the marker, as a kill between
    # writing the parameters and converting the last chunk would leave them
    for index in (1, 3):
        path = cache.chunk_path("hist", index)
        info, _ = _raw(path)
        staged = load(reference.path, "hist")[1][index * 4:(index + 1) * 4].astype(STAGING_DTYPE)
        cache._store(path, info, staged)
    (cache.chunk_path("hist", 0).parent / "COMPLETE").unlink()
    cache.mark_complete("hist")
    np.testing.assert_array_equal(load(cache.path, "hist")[1], load(reference.path, "hist")[1])


def test_damaged_parameters_are_refused(tmp_path):
    data = make_dataset(10)
    cache = extract_features(ToyBackbone(), data, ["hist"], tmp_path, chunk_size=4, dtype="uint8", show_progress=False)
    path = cache.chunk_path("hist", 0).parent / PARAMS_NAME
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CacheError, match="checksum|unreadable"):
        load(cache.path, "hist")



@pytest.mark.parametrize("damage", ["flipped byte", "missing", "other layer's"])
def test_cache_verify_checks_the_parameters_file(tmp_path, damage):
    """``medprobe cache verify`` names a damaged, missing or misplaced parameters file (every code of
    the layer is read through it) and changes nothing; a healthy entry passes."""
    from medprobe.features.maintenance import verify_cache

    cache = extract_features(ToyBackbone(), make_dataset(10), ["mean", "hist"], tmp_path, chunk_size=4,
                             dtype="uint8", show_progress=False)
    healthy = verify_cache(tmp_path)
    assert healthy.bad == [] and healthy.params_checked == 2 and healthy.chunks_checked == 6
    path = cache.chunk_path("hist", 0).parent / PARAMS_NAME
    if damage == "flipped byte":
        raw = bytearray(path.read_bytes())
        raw[-3] ^= 0xFF
        path.write_bytes(bytes(raw))
    elif damage == "missing":
        path.unlink()
    else:
        path.write_bytes((cache.chunk_path("mean", 0).parent / PARAMS_NAME).read_bytes())
    before = sorted((p, p.read_bytes()) for p in cache.path.rglob("*") if p.is_file())
    report = verify_cache(tmp_path)
    assert [error.path for error in report.bad] == [path]
    assert "extract again" in report.bad[0].reason
    assert sorted((p, p.read_bytes()) for p in cache.path.rglob("*") if p.is_file()) == before
    assert report.chunks_checked == 6  # the chunks themselves are fine

def _raw(path):
    from medprobe.features.cache import read_chunk_file

    return read_chunk_file(path)
