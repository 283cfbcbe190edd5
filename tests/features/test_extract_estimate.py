"""The extraction-time estimate: said after the first batch, timed as part of the extraction itself."""

from __future__ import annotations

import re
import time

import numpy as np

from conftest import ToyBackbone, make_dataset
from medprobe.features import extract, extract_features, load

ESTIMATE = re.compile(r"(\S+): ~(\d+) images at ([\d.e+-]+) img/s ≈ (.+) to extract")


class SlowToy(ToyBackbone):
    """The toy backbone at a known speed: 0.1 s per batch of 4 images, so about 40 img/s at most."""

    def extract(self, images, layers):
        time.sleep(0.1)
        return super().extract(images, layers)


def test_estimate_follows_the_first_batch_once_and_features_are_unchanged(tmp_path, capsys, monkeypatch):
    data = make_dataset(40)
    quiet = extract_features(ToyBackbone(), data, ["mean", "hist"], tmp_path / "quiet", chunk_size=16,
                             show_progress=False)
    assert "img/s" not in capsys.readouterr().err  # no console output when progress is off

    backbone = SlowToy()
    printed: list[tuple[str, int]] = []
    real_print = extract.console.print

    def recording_print(text, *args, **kwargs):
        printed.append((str(text), backbone.images_seen))
        real_print(text, *args, **kwargs)

    monkeypatch.setattr(extract.console, "print", recording_print)
    cache = extract_features(backbone, data, ["mean", "hist"], tmp_path / "loud", chunk_size=16, show_progress=True)
    estimates = [(text, seen) for text, seen in printed if "to extract" in text]
    assert len(estimates) == 1, printed
    text, seen = estimates[0]
    assert seen == ToyBackbone.default_batch_size  # said right after the first batch, not the first chunk
    name, n_images, rate, duration = ESTIMATE.fullmatch(text).groups()
    assert (name, int(n_images)) == ("toy", 40)
    assert 5 <= float(rate) <= 41  # 4 images per >= 0.1 s batch
    assert duration.endswith(" s") and "to extract" in capsys.readouterr().err  # on stderr
    assert backbone.images_seen == 40  # nothing computed twice
    for layer in ("mean", "hist"):
        ids, array = load(cache.path, layer)
        quiet_ids, quiet_array = load(quiet.path, layer)
        assert ids == quiet_ids
        np.testing.assert_array_equal(array, quiet_array)


def test_no_estimate_when_everything_is_cached(tmp_path, capsys):
    data = make_dataset(12)
    extract_features(ToyBackbone(), data, ["hist"], tmp_path, show_progress=False)
    extract_features(ToyBackbone(), data, ["hist"], tmp_path, show_progress=True)
    assert "to extract" not in capsys.readouterr().err
