"""Image reading and preprocessing: formats, DICOM display pipeline, and every way a file can be bad."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset as DicomDataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medprobe.data.images import (
    PREPROCESSING_VERSION,
    looks_like_image,
    preprocess,
    preprocessing_fingerprint,
    read_image,
)
from medprobe.errors import ImageReadError

RNG = np.random.default_rng(0)


def pydicom_file(name: str) -> str | None:
    """A pydicom test file, or None (pydicom-data may be absent; it also warns about downloads)."""
    from pydicom.data import get_testdata_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return get_testdata_file(name)
        except Exception:
            return None


def save(array: np.ndarray, path: Path, **kwargs) -> Path:
    Image.fromarray(array).save(path, **kwargs)
    return path


def read_error(path: Path | np.ndarray, **kwargs) -> str:
    with pytest.raises(ImageReadError) as info:
        read_image(path, **kwargs)
    if isinstance(path, Path):
        assert str(path) in str(info.value) and info.value.path == str(path)
    return str(info.value)


# ------------------------------------------------------------------------------- formats
def test_png_8_and_16_bit_keep_their_values(tmp_path):
    grey8 = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    grey16 = RNG.integers(0, 65536, (20, 30), dtype=np.uint16)
    rgb = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(read_image(save(grey8, tmp_path / "g8.png")), grey8)
    out16 = read_image(save(grey16, tmp_path / "g16.png"))
    assert out16.dtype == np.uint16 and out16.max() > 255
    np.testing.assert_array_equal(out16, grey16)
    np.testing.assert_array_equal(read_image(save(rgb, tmp_path / "rgb.png")), rgb)


def test_tiff_16_bit_and_float(tmp_path):
    grey16 = RNG.integers(0, 65536, (15, 12), dtype=np.uint16)
    floats = RNG.random((15, 12)).astype(np.float32) * 1000
    np.testing.assert_array_equal(read_image(save(grey16, tmp_path / "a.tif")), grey16)
    np.testing.assert_array_equal(read_image(save(floats, tmp_path / "b.tiff")), floats)


def test_jpeg_is_close_to_the_original(tmp_path):
    smooth = (np.add.outer(np.arange(64), np.arange(64)) * 2).astype(np.uint8)
    out = read_image(save(smooth, tmp_path / "x.jpg", quality=95))
    assert out.shape == (64, 64)
    assert np.abs(out.astype(float) - smooth).mean() < 2.0


def test_rgba_is_composited_on_black(tmp_path):
    rgba = RNG.integers(0, 256, (10, 10, 4), dtype=np.uint8)
    rgba[0, 0, 3] = 0  # fully transparent: must become black whatever its colour
    out = read_image(save(rgba, tmp_path / "a.png"))
    expected = rgba[..., :3] * (rgba[..., 3:] / 255.0)
    np.testing.assert_allclose(out, expected, atol=1e-4)
    assert (out[0, 0] == 0).all()


def test_grey_alpha_is_composited_on_black(tmp_path):
    la = RNG.integers(0, 256, (6, 5, 2), dtype=np.uint8)
    out = read_image(save(la, tmp_path / "la.png"))
    np.testing.assert_allclose(out, la[..., 0].astype(float) * la[..., 1] / 255.0, atol=1e-4)


def test_palette_image_becomes_rgb_through_its_palette(tmp_path):
    indices = RNG.integers(0, 4, (8, 9), dtype=np.uint8)
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]], dtype=np.uint8)
    image = Image.fromarray(indices, mode="P")
    image.putpalette(palette.ravel().tolist())
    image.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), palette[indices])


def test_one_pixel_image(tmp_path):
    out = read_image(save(np.array([[200]], dtype=np.uint8), tmp_path / "one.png"))
    assert out.shape == (1, 1)
    prepared = preprocess(out)
    assert prepared.shape == (1, 1, 3) and np.allclose(prepared, 1.0)


def test_npy_and_in_memory_arrays(tmp_path):
    array = RNG.random((7, 9, 3)).astype(np.float32)
    np.save(tmp_path / "a.npy", array)
    np.testing.assert_array_equal(read_image(tmp_path / "a.npy"), array)
    np.testing.assert_array_equal(read_image(array[:, :, :1]), array[:, :, 0])  # (H, W, 1) squeezed
    assert read_image(np.ones((3, 3), dtype=bool)).dtype == np.uint8


def test_format_is_found_by_content_not_name(tmp_path):
    grey = RNG.integers(0, 256, (5, 5), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "really_png.jpg", format="PNG")
    np.testing.assert_array_equal(read_image(tmp_path / "really_png.jpg"), grey)


# --------------------------------------------------------------------------------- errors
def test_truncated_png_and_jpeg(tmp_path):
    noise = RNG.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    for name in ("t.png", "t.jpg"):
        data = (save(noise, tmp_path / name)).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        message = read_error(tmp_path / name)
        assert "truncated" in message


def test_garbage_files_with_image_names(tmp_path):
    garbage = RNG.integers(0, 256, 2000, dtype=np.uint8).tobytes()
    for name in ("g.png", "g.jpg", "g.tif", "g.dcm", "g.npy", "noext"):
        (tmp_path / name).write_bytes(garbage)
        read_error(tmp_path / name)
    assert "not a recognised image format" in read_error(tmp_path / "g.png")
    assert "DICOM" in read_error(tmp_path / "g.dcm")


def test_png_header_with_corrupt_data(tmp_path):
    data = bytearray(save(RNG.integers(0, 256, (50, 50), dtype=np.uint8), tmp_path / "c.png").read_bytes())
    start = data.index(b"IDAT") + 4
    data[start:start + 40] = b"\x00" * 40
    (tmp_path / "c.png").write_bytes(bytes(data))
    read_error(tmp_path / "c.png")


def test_missing_empty_and_folder(tmp_path):
    assert "no such file" in read_error(tmp_path / "absent.png")
    (tmp_path / "empty.png").write_bytes(b"")
    assert "empty" in read_error(tmp_path / "empty.png")
    (tmp_path / "dir.png").mkdir()
    assert "folder" in read_error(tmp_path / "dir.png")


def test_bad_arrays(tmp_path):
    assert "NaN or infinite" in read_error(np.array([[0.0, np.nan]]))
    assert "NaN or infinite" in read_error(np.array([[0.0, np.inf]]))
    assert "empty" in read_error(np.zeros((0, 4)))
    assert "shape" in read_error(np.zeros((4, 4, 4)))
    assert "channel-first" in read_error(np.zeros((3, 8, 8)))
    assert "pixel type" in read_error(np.zeros((2, 2), dtype=complex))
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan]]))
    assert "NaN" in read_error(tmp_path / "nan.npy")
    np.save(tmp_path / "obj.npy", np.array([[{"a": 1}]], dtype=object), allow_pickle=True)
    read_error(tmp_path / "obj.npy")  # never unpickled
    np.save(tmp_path / "big.npy", np.zeros((100, 100), dtype=np.float32))
    data = (tmp_path / "big.npy").read_bytes()
    (tmp_path / "big.npy").write_bytes(data[: len(data) // 2])
    assert "truncated" in read_error(tmp_path / "big.npy")


def png_claiming_size(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header (IHDR, CRC fixed) claims ``width x height`` pixels."""
    data = bytearray(save(np.zeros((10, 10), dtype=np.uint8), path).read_bytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    path.write_bytes(bytes(data))
    return path


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    # Above our limit but below Pillow's hard one: refused by our check, before decoding.
    assert "decompression bombs" in read_error(png_claiming_size(tmp_path / "big.png", 10000, 9000))
    # Far above both: Pillow refuses while opening; still an ImageReadError naming the file.
    assert "decompression bomb" in read_error(png_claiming_size(tmp_path / "bomb.png", 40000, 40000))
    small = save(np.zeros((20, 20), dtype=np.uint8), tmp_path / "small.png")
    assert "above the limit of 100" in read_error(small, max_pixels=100)
    assert read_image(small, max_pixels=400).shape == (20, 20)


# ---------------------------------------------------------------------------------- DICOM
def write_dicom(path: Path, pixels: np.ndarray, *, preamble: bool = True, **attributes) -> Path:
    """A minimal secondary-capture DICOM file; ``pixels`` uint16 (H, W) or (frames, H, W)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = DicomDataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for key, value in attributes.items():
        setattr(ds, key, value)
    if pixels.size:
        ds.PixelData = pixels.astype("<u2").tobytes()
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:
        pydicom.dcmwrite(path, ds, enforce_file_format=False)
    return path


def linear_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window, written out here and normalised to [0, 1]."""
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def test_dicom_rescale_and_window_follow_the_standard(tmp_path):
    stored = RNG.integers(0, 4096, (16, 20)).astype(np.uint16)
    slope, intercept, center, width = 2.0, -1000.0, 1500.0, 3000.0
    path = write_dicom(tmp_path / "w.dcm", stored, RescaleSlope=slope, RescaleIntercept=intercept,
                       WindowCenter=center, WindowWidth=width)
    out = read_image(path)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, linear_window(stored * slope + intercept, center, width), atol=1e-6)
    assert 0 < (out == 0).sum() and 0 < (out == 1).sum()  # the window clips at both ends here


def test_dicom_rescale_without_window_gives_modality_values(tmp_path):
    stored = RNG.integers(0, 4096, (8, 8)).astype(np.uint16)
    path = write_dicom(tmp_path / "r.dcm", stored, RescaleSlope=1.0, RescaleIntercept=-1024.0)
    np.testing.assert_allclose(read_image(path), stored - 1024.0)
    prepared = preprocess(read_image(path))[..., 0]
    hu = stored - 1024.0
    np.testing.assert_allclose(prepared, (hu - hu.min()) / (hu.max() - hu.min()), atol=1e-6)


def test_monochrome1_is_inverted(tmp_path):
    stored = np.array([[100, 2000], [3000, 4000]], dtype=np.uint16)
    mono2 = read_image(write_dicom(tmp_path / "m2.dcm", stored, WindowCenter=2048, WindowWidth=4096))
    mono1 = read_image(write_dicom(tmp_path / "m1.dcm", stored, WindowCenter=2048, WindowWidth=4096,
                                   PhotometricInterpretation="MONOCHROME1"))
    assert mono2[0, 0] < mono2[1, 1] and mono1[0, 0] > mono1[1, 1]
    np.testing.assert_allclose(mono1, 1.0 - mono2, atol=1e-6)
    plain1 = read_image(write_dicom(tmp_path / "p1.dcm", stored, PhotometricInterpretation="MONOCHROME1"))
    np.testing.assert_allclose(plain1, stored.max() + stored.min() - stored.astype(np.float32))


def test_dicom_without_preamble_or_extension(tmp_path):
    stored = RNG.integers(0, 4096, (6, 7)).astype(np.uint16)
    np.testing.assert_allclose(read_image(write_dicom(tmp_path / "np.dcm", stored, preamble=False)), stored)
    no_suffix = write_dicom(tmp_path / "IM000001", stored)
    assert looks_like_image(no_suffix)
    np.testing.assert_allclose(read_image(no_suffix), stored)


def test_multiframe_dicom_takes_the_middle_frame(tmp_path):
    frames = np.stack([np.full((4, 5), 10 * (k + 1), dtype=np.uint16) for k in range(5)])
    frames[:, 0, 0] = 0
    np.testing.assert_allclose(read_image(write_dicom(tmp_path / "mf.dcm", frames)), frames[2])
    real = pydicom_file("emri_small.dcm")  # 10 real MR frames
    if real:
        full = pydicom.dcmread(real).pixel_array
        np.testing.assert_allclose(read_image(real), full[len(full) // 2])


def test_dicom_without_pixel_data(tmp_path):
    path = write_dicom(tmp_path / "sr.dcm", np.zeros((0, 0), dtype=np.uint16))
    assert "no pixel data" in read_error(path)


def test_truncated_dicom(tmp_path):
    path = write_dicom(tmp_path / "t.dcm", RNG.integers(0, 4096, (64, 64)).astype(np.uint16))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 3000])
    read_error(path)


def test_real_ct_in_hounsfield_units():
    path = pydicom_file("CT_small.dcm")
    if path is None:
        pytest.skip("pydicom test file CT_small.dcm not available")
    ds = pydicom.dcmread(path)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(read_image(path), hu)
    assert hu.min() < 0  # so preprocess must shift before normalising
    prepared = preprocess(read_image(path))
    assert prepared.min() == 0.0 and prepared.max() == 1.0


def test_real_chest_radiograph_monochrome1():
    path = pydicom_file("RG1_UNCR.dcm")
    if path is None:
        pytest.skip("pydicom-data (RG1_UNCR.dcm chest radiograph) not installed")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.BitsAllocated == 16
    out = read_image(path)
    expected = 1.0 - linear_window(ds.pixel_array.astype(float), float(ds.WindowCenter), float(ds.WindowWidth))
    # pydicom maps the window onto [0, 2**BitsStored - 1]; ours is that range scaled to [0, 1].
    np.testing.assert_allclose(out, expected, atol=1e-5)
    rows, cols = out.shape
    corner = out[: rows // 20, : cols // 20].mean()
    middle = out[rows * 2 // 5: rows * 3 // 5, cols * 2 // 5: cols * 3 // 5].mean()
    assert middle > corner  # the mediastinum is bright, air outside the body dark
    prepared = preprocess(out)
    assert prepared.shape == (1024, round(cols * 1024 / rows), 3)
    lossless = pydicom_file("RG1_J2KR.dcm")
    if lossless:  # the same radiograph, JPEG 2000 lossless: identical pixels, or a clear error
        try:
            np.testing.assert_array_equal(read_image(lossless), out)
        except ImageReadError as error:
            assert "transfer syntax" in str(error)


def test_palette_color_dicom():
    path = pydicom_file("OBXXXX1A.dcm")
    if path is None:
        pytest.skip("pydicom test file OBXXXX1A.dcm not available")
    from pydicom.pixels import apply_color_lut

    ds = pydicom.dcmread(path)
    out = read_image(path)
    assert out.shape == (ds.Rows, ds.Columns, 3)
    np.testing.assert_array_equal(out, apply_color_lut(ds.pixel_array, ds))


# --------------------------------------------------------------------------- preprocessing
def test_preprocess_normalises_to_the_maximum():
    image = np.array([[0, 50], [100, 200]], dtype=np.uint8)
    out = preprocess(image)
    assert out.shape == (2, 2, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 1], image / 200.0)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    offset = np.array([[10, 20]], dtype=np.uint16)  # x / max, not min-max, for non-negative images
    np.testing.assert_allclose(preprocess(offset)[0, :, 0], [0.5, 1.0])
    np.testing.assert_array_equal(preprocess(np.zeros((3, 3))), np.zeros((3, 3, 3)))
    negative = np.array([[-100.0, 0.0, 300.0]])
    np.testing.assert_allclose(preprocess(negative)[0, :, 0], [0.0, 0.25, 1.0])
    rgb = np.zeros((1, 2, 3), dtype=np.uint8)
    rgb[0, 1] = (40, 80, 160)
    np.testing.assert_allclose(preprocess(rgb)[0, 1], [0.25, 0.5, 1.0])


def test_preprocess_downsamples_to_fit_keeping_aspect():
    width, height = 3000, 1000
    ramp = np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, 1))
    out = preprocess(ramp)
    assert out.shape == (341, 1024, 3)
    assert 0.0 <= out.min() and out.max() <= 1.0
    # Lanczos reproduces a linear ramp: compare with the ramp sampled at output pixel centres.
    centres = (np.arange(1024) + 0.5) * width / 1024 - 0.5
    np.testing.assert_allclose(out[170, 20:-20, 0], centres[20:-20] / (width - 1), atol=1e-3)
    assert preprocess(np.ones((1000, 3000)), max_size=100).shape == (33, 100, 3)
    assert preprocess(np.ones((1024, 1024))).shape == (1024, 1024, 3)
    assert preprocess(np.ones((5, 7))).shape == (5, 7, 3)  # never upsampled
    tall = preprocess(RNG.random((2049, 300)).astype(np.float32))
    assert tall.shape == (1024, 150, 3)


def test_preprocess_is_deterministic_and_does_not_modify_input():
    image = RNG.integers(0, 4096, (1500, 1200)).astype(np.uint16)
    copy = image.copy()
    first, second = preprocess(image), preprocess(image)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(image, copy)


def test_fingerprint_tracks_settings():
    assert preprocessing_fingerprint(1024)["version"] == PREPROCESSING_VERSION
    assert preprocessing_fingerprint(1024) == preprocessing_fingerprint()
    assert preprocessing_fingerprint(512) != preprocessing_fingerprint(1024)
