"""The demo fetches its own data: the official MedMNIST file, checksum verified, into the data cache.

A local HTTP server (127.0.0.1, a thread) stands in for Zenodo; no test reaches any other address.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
import yaml

from medprobe.config import parse_config
from medprobe.data import medmnist_files
from medprobe.data.adapters import load_medmnist
from medprobe.errors import DataError
from medprobe.stages.data import load_data

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def fake_npz(path: Path) -> bytes:
    """A small valid MedMNIST-style archive (both classes in every split)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 20), ("val", 8), ("test", 8)):
        arrays[f"{split}_images"] = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2)[:, None].astype(np.uint8)
    np.savez(path, **arrays)
    return path.read_bytes()


@pytest.fixture
def server(tmp_path):
    """Serves ``tmp_path/served`` on 127.0.0.1; ``requests`` lists every path asked for."""
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def do_GET(self):  # noqa: N802 (http.server's name)
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}/{{file}}", requests
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def published(server, monkeypatch):
    """The served fake stands in for the official file: URL and MD5 point at it."""
    served, url, requests = server
    data = fake_npz(served / "pneumoniamnist.npz")
    monkeypatch.setattr(medmnist_files, "MEDMNIST_URL", url)
    monkeypatch.setitem(medmnist_files.MEDMNIST_MD5, "pneumoniamnist", {28: hashlib.md5(data).hexdigest()})
    monkeypatch.delenv("MEDPROBE_OFFLINE", raising=False)
    return served, requests


def test_correct_checksum_installs_the_file(tmp_path, published):
    root = tmp_path / "data"
    dataset = load_medmnist(root, download=True)
    target = root / "medmnist" / "pneumoniamnist.npz"
    assert target.read_bytes() == (published[0] / "pneumoniamnist.npz").read_bytes()
    assert len(dataset.split("test")) == 8 and published[1] == ["/pneumoniamnist.npz"]
    assert [p.name for p in target.parent.iterdir()] == ["pneumoniamnist.npz"]  # no partial file left
    load_medmnist(root, download=True)  # present now: no second request
    assert len(published[1]) == 1


def test_wrong_checksum_is_refused_and_deleted(tmp_path, published, monkeypatch):
    monkeypatch.setitem(medmnist_files.MEDMNIST_MD5, "pneumoniamnist", {28: "0" * 32})
    root = tmp_path / "data"
    with pytest.raises(DataError, match="failed its checksum.*deleted"):
        load_medmnist(root, download=True)
    assert list((root / "medmnist").iterdir()) == []


def test_offline_makes_no_request(tmp_path, published, monkeypatch):
    monkeypatch.setenv("MEDPROBE_OFFLINE", "1")
    with pytest.raises(DataError) as error:
        load_medmnist(tmp_path / "data", download=True)
    message = str(error.value)
    assert "pneumoniamnist.npz" in message and "MEDPROBE_OFFLINE" in message
    assert published[1] == []


def test_unreachable_server_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(medmnist_files, "MEDMNIST_URL", "http://127.0.0.1:9/{file}")  # discard port: refused
    monkeypatch.delenv("MEDPROBE_OFFLINE", raising=False)
    with pytest.raises(DataError, match="could not download http://127.0.0.1:9/pneumoniamnist.npz"):
        load_medmnist(tmp_path / "data", download=True)
    assert list((tmp_path / "data" / "medmnist").iterdir()) == []


def test_without_download_the_error_says_how(tmp_path):
    with pytest.raises(DataError, match="download: true"):
        load_medmnist(tmp_path, flag="dermamnist", size=64)


def test_every_2d_flag_and_size_has_a_published_checksum():
    assert len(medmnist_files.MEDMNIST_MD5) == 12
    for flag, sums in medmnist_files.MEDMNIST_MD5.items():
        assert sorted(sums) == [28, 64, 128, 224]
        assert all(re.fullmatch(r"[0-9a-f]{32}", md5) for md5 in sums.values())
    name, url, md5 = medmnist_files.medmnist_file("bloodmnist", 128)
    assert name == "bloodmnist_128.npz" and url.startswith("https://zenodo.org/records/10519652/files/bloodmnist_128.npz")


def test_readme_demo_needs_no_path_and_downloads_into_the_user_cache(tmp_path, published, monkeypatch):
    """README block 1 sets no data path; the demo's data stage then fetches into ~/.cache/medprobe/data."""
    first = re.findall(r"```bash\n(.*?)```", README, flags=re.S)[0]
    assert "MEDPROBE_DATA_DIR" not in first and "medprobe demo" in first
    monkeypatch.delenv("MEDPROBE_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = parse_config(yaml.safe_load((files("medprobe") / "configs" / "demo.yaml").read_text()), "demo")
    dataset = load_data(config.data, val_fraction=config.probe.val_fraction, seed=config.seed)
    assert (tmp_path / "home" / ".cache" / "medprobe" / "data" / "medmnist" / "pneumoniamnist.npz").is_file()
    assert len(dataset.split("test")) == 8
