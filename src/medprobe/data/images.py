"""Reading medical images from disk and the study's preprocessing.

Two steps, kept apart so each can be tested and cached on its own:

:func:`read_image`
    file (PNG, JPEG, TIFF, BMP/GIF/WebP, NumPy ``.npy``, DICOM) or in-memory array -> a finite
    numeric array ``(H, W)`` or ``(H, W, 3)`` in the image's own value range (16-bit stays 16-bit).
    Every failure -- missing, truncated, garbage, empty, too large, NaN -- is an
    :class:`~medprobe.errors.ImageReadError` naming the file and the reason, so the feature
    extractor can stop with a clear message or skip and report the sample.

:func:`preprocess`
    that array -> ``float32 (H, W, 3)`` in ``[0, 1]``: intensity normalised to the image maximum,
    downsampled to fit ``max_size x max_size`` (the study used 1024), grey replicated to RGB.

Conversions the reader makes (all part of :data:`PREPROCESSING_VERSION`):

* palette images -> RGB through their palette; a palette with a transparent entry, and RGBA /
  LA images, are *composited on black* (colour x alpha): what is transparent carries no image
  content, and black matches the padding most medical crops use;
* other Pillow modes (1-bit, CMYK, YCbCr, ...) -> grey or RGB; 16- and 32-bit grey keep their
  full precision; the EXIF orientation of photographs (e.g. dermatology) is applied;
* multi-page TIFF/GIF: the first page;
* DICOM: Modality LUT (RescaleSlope/Intercept or Modality LUT Sequence), then the first VOI LUT
  or window (Window Center/Width, VOI LUT Function) when the file defines one, mapped to
  ``[0, 1]`` over the VOI's output range; ``MONOCHROME1`` is inverted so that bone/dense tissue is
  bright as in ``MONOCHROME2`` (the Presentation LUT Shape is not applied on top: for
  ``MONOCHROME1`` its ``INVERSE`` value restates the same convention); multi-frame files give their
  middle frame (``NumberOfFrames // 2``, 0-based), the most representative single slice of a
  cine/volume; ``PALETTE COLOR`` goes through its colour LUT; YBR colour is converted to RGB.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from medprobe.errors import ConfigError, ImageReadError

#: Bump whenever reading or preprocessing changes any output value: the feature cache hashes it.
PREPROCESSING_VERSION = "1"

#: Largest image (width x height, per frame) read before decoding: a guard against decompression
#: bombs (a small file that expands to gigabytes). Equal to Pillow's default warning threshold
#: (about 9459 x 9459), so Pillow stays silent for every image we accept.
MAX_PIXELS = 89_478_485

#: File suffixes the folder adapter treats as images (DICOM files may also have no suffix).
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".dcm", ".dicom", ".npy"}
)
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})

_NPY_MAGIC = b"\x93NUMPY"
_DICOM_MAGIC_OFFSET = 128
# Everything Pillow may raise on a corrupt or truncated file once decoding starts.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)


# --------------------------------------------------------------------------------- detection
def _head(path: Path, n: int = _DICOM_MAGIC_OFFSET + 4) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(n)


def is_dicom(path: str | Path) -> bool:
    """True when the file carries the DICOM Part 10 marker ``DICM`` at byte 128."""
    try:
        head = _head(Path(path))
    except OSError:
        return False
    return head[_DICOM_MAGIC_OFFSET:_DICOM_MAGIC_OFFSET + 4] == b"DICM"


def looks_like_image(path: str | Path) -> bool:
    """Whether an adapter scanning a folder should treat ``path`` as an image.

    By suffix, plus extension-less files that carry the DICOM marker (PACS exports often have no
    suffix). Whether the file is actually readable is decided later by :func:`read_image`.
    """
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    return path.suffix == "" and is_dicom(path)


# ---------------------------------------------------------------------------------- checking
def _check_array(
    array: np.ndarray, where: str, path: str | None, max_pixels: int | None
) -> np.ndarray:
    """Accept ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` finite numeric arrays; squeeze ``(H, W, 1)``."""
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ImageReadError(f"{where}: unsupported pixel type {array.dtype}; need integers or floats",
                             path=path)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        hint = " (channel-first? transpose to (H, W, C))" if array.ndim == 3 and array.shape[0] in (1, 3) else ""
        raise ImageReadError(
            f"{where}: image array has shape {array.shape}; need (H, W), (H, W, 1) or (H, W, 3){hint}",
            path=path,
        )
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise ImageReadError(f"{where}: image is empty ({height}x{width} pixels)", path=path)
    if max_pixels is not None and height * width > max_pixels:
        raise ImageReadError(_too_large(where, width, height, max_pixels), path=path)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        n_bad = int(array.size - np.isfinite(array).sum())
        raise ImageReadError(f"{where}: image contains {n_bad} NaN or infinite values", path=path)
    return array


def _too_large(where: str, width: int, height: int, max_pixels: int) -> str:
    return (
        f"{where}: image is {width}x{height} = {width * height:,} pixels, above the limit of "
        f"{max_pixels:,} (a guard against decompression bombs); downsample it first or raise max_pixels"
    )


# ----------------------------------------------------------------------------------- readers
def read_image(source: str | Path | np.ndarray, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read one image as a finite ``(H, W)`` or ``(H, W, 3)`` array in its own value range.

    ``source`` is a path (format recognised by its first bytes, then its suffix) or an array.
    See the module docstring for the conversions made. Raises :class:`ImageReadError` for anything
    that cannot be read; the message names the file and the reason.
    """
    if isinstance(source, np.ndarray):
        return _check_array(source, "in-memory image", None, max_pixels)
    path = Path(source)
    name = str(path)
    try:
        head = _head(path)
    except FileNotFoundError:
        raise ImageReadError(f"{name}: no such file", path=name) from None
    except IsADirectoryError:
        raise ImageReadError(f"{name}: is a folder, not an image file", path=name) from None
    except OSError as error:
        raise ImageReadError(f"{name}: cannot open ({error.strerror or error})", path=name) from error
    if not head:
        raise ImageReadError(f"{name}: file is empty (0 bytes)", path=name)
    suffix = path.suffix.lower()
    if head[_DICOM_MAGIC_OFFSET:_DICOM_MAGIC_OFFSET + 4] == b"DICM":
        return _read_dicom(path, max_pixels, has_preamble=True)
    if head.startswith(_NPY_MAGIC):
        return _read_npy(path, max_pixels)
    if suffix in DICOM_SUFFIXES:
        return _read_dicom(path, max_pixels, has_preamble=False)
    if suffix == ".npy":
        raise ImageReadError(f"{name}: not a NumPy .npy file (no NUMPY header)", path=name)
    return _read_pillow(path, max_pixels)


def _read_npy(path: Path, max_pixels: int) -> np.ndarray:
    """``np.load`` without pickle; memory-mapped first so the size is checked before loading."""
    name = str(path)
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:
        reason = "truncated .npy file" if "mmap length" in str(error) else f"unreadable .npy file ({error})"
        raise ImageReadError(f"{name}: {reason}", path=name) from error
    except OSError as error:
        raise ImageReadError(f"{name}: unreadable .npy file ({error})", path=name) from error
    if mapped.ndim >= 2:
        height, width = mapped.shape[:2]
        if height * width > max_pixels:
            raise ImageReadError(_too_large(name, width, height, max_pixels), path=name)
    return _check_array(np.array(mapped), name, name, max_pixels)


def _read_pillow(path: Path, max_pixels: int) -> np.ndarray:
    name = str(path)
    try:
        # Opening reads only the header; our pixel limit is checked below, before decoding.
        image = Image.open(path)
    except UnidentifiedImageError:
        raise ImageReadError(
            f"{name}: not a recognised image format (expected PNG, JPEG, TIFF, BMP, GIF, WebP, "
            "DICOM or .npy)", path=name
        ) from None
    except Image.DecompressionBombError as error:
        raise ImageReadError(
            f"{name}: image too large to decode safely ({error}); Pillow's own limit "
            "PIL.Image.MAX_IMAGE_PIXELS also applies", path=name
        ) from error
    except _DECODE_ERRORS as error:
        raise ImageReadError(f"{name}: corrupt image header ({error})", path=name) from error
    with image:
        kind = image.format or path.suffix.lstrip(".").upper() or "image"
        width, height = image.size
        if width * height == 0:
            raise ImageReadError(f"{name}: image is empty ({width}x{height} pixels)", path=name)
        if width * height > max_pixels:
            raise ImageReadError(_too_large(name, width, height, max_pixels), path=name)
        try:
            # Pillow decodes lazily: force it so a truncated file fails here, not later.
            image.load()
            upright = ImageOps.exif_transpose(image)
            array = _pillow_to_array(upright if upright is not None else image)
        except _DECODE_ERRORS as error:
            raise ImageReadError(f"{name}: truncated or corrupt {kind} file ({error})", path=name) from error
    return _check_array(array, name, name, max_pixels)


def _composite_on_black(values: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return values.astype(np.float32) * (alpha.astype(np.float32) / 255.0)[..., None]


def _pillow_to_array(image: Image.Image) -> np.ndarray:
    """Pillow image -> grey (any precision) or RGB array; alpha composited on black."""
    mode = image.mode
    if (mode == "P" and "transparency" in image.info) or mode == "PA":
        image, mode = image.convert("RGBA"), "RGBA"
    elif mode == "P":
        image, mode = image.convert("RGB"), "RGB"
    if mode in ("L", "I", "F") or mode.startswith("I;16"):
        array = np.asarray(image)
        return array.astype(array.dtype.newbyteorder("="), copy=False)
    if mode == "1":
        return np.asarray(image.convert("L"))
    if mode == "LA":
        grey_alpha = np.asarray(image)
        return _composite_on_black(grey_alpha[..., :1], grey_alpha[..., 1])[..., 0]
    if mode == "RGB":
        return np.asarray(image)
    if mode != "RGBA":
        image = image.convert("RGBA")
    rgba = np.asarray(image)
    return _composite_on_black(rgba[..., :3], rgba[..., 3])


def _read_dicom(path: Path, max_pixels: int, *, has_preamble: bool) -> np.ndarray:
    """DICOM -> display values; see the module docstring for the pipeline."""
    name = str(path)
    try:
        return _decode_dicom(path, name, max_pixels, has_preamble)
    except ImageReadError:
        raise
    except Exception as error:  # pydicom parses untrusted bytes lazily: any failure means unreadable
        raise ImageReadError(
            f"{name}: unreadable DICOM file ({type(error).__name__}: {error})", path=name
        ) from error


def _decode_dicom(path: Path, name: str, max_pixels: int, has_preamble: bool) -> np.ndarray:
    import pydicom

    # Files without the 128-byte preamble are legal in older exports; they are only tried as
    # DICOM when their suffix says so.
    ds = pydicom.dcmread(path, force=not has_preamble)
    if not any(keyword in ds for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        reason = (
            "DICOM file has no pixel data (e.g. a structured report or presentation state)"
            if has_preamble
            else "no DICOM marker at byte 128 and no pixel data: not a DICOM image"
        )
        raise ImageReadError(f"{name}: {reason}", path=name)
    rows, columns = int(ds.Rows), int(ds.Columns)
    n_frames = int(ds.get("NumberOfFrames") or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if rows * columns > max_pixels:
        raise ImageReadError(_too_large(name, columns, rows, max_pixels), path=name)
    try:
        if n_frames > 1:
            ds.pixel_array_options(index=n_frames // 2)  # decode only the middle frame
        pixels = ds.pixel_array
    except Exception as error:  # decoders raise many types (missing plugin, bad stream, ...)
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        detail = f" (transfer syntax {syntax.name})" if syntax is not None else ""
        raise ImageReadError(
            f"{name}: cannot decode DICOM pixel data{detail}: {error}", path=name
        ) from error
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        return _check_array(apply_color_lut(pixels, ds), name, name, max_pixels)
    if pixels.ndim == 3:  # RGB (pydicom converts YBR to RGB)
        return _check_array(pixels, name, name, max_pixels)
    return _check_array(_dicom_grey(pixels, ds, photometric), name, name, max_pixels)


def _dicom_grey(pixels: np.ndarray, ds: Any, photometric: str) -> np.ndarray:
    """Modality LUT -> VOI (mapped to [0, 1] over its output range) -> MONOCHROME1 inversion."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(pixels, ds)
    voi_range: tuple[float, float] | None = None
    if ds.get("VOILUTSequence"):
        item = ds.VOILUTSequence[0]
        n_entries, first_mapped = int(item.LUTDescriptor[0]) or 2**16, int(item.LUTDescriptor[1])
        if np.issubdtype(values.dtype, np.floating) and np.array_equal(values, np.round(values)):
            values = values.astype(np.int64)  # LUT input must be integer stored values
        entries = apply_voi_lut(np.arange(first_mapped, first_mapped + n_entries), ds, index=0)
        voi_range = (float(entries.min()), float(entries.max()))
        values = apply_voi_lut(values, ds, index=0)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        # Several windows are alternatives (e.g. lung / mediastinum); the first is the default.
        # The window's output range comes from pydicom itself: the images of -inf and +inf.
        with np.errstate(over="ignore"):
            ends = apply_voi_lut(np.array([-1e300, 1e300]), ds, index=0, prefer_lut=False)
        voi_range = (float(ends[0]), float(ends[1]))
        values = apply_voi_lut(values, ds, index=0, prefer_lut=False)
    values = np.asarray(values, dtype=np.float64)
    if voi_range is not None:
        low, high = voi_range
        values = (values - low) / (high - low) if high > low else np.zeros_like(values)
        if photometric == "MONOCHROME1":
            values = 1.0 - values
    elif photometric == "MONOCHROME1":
        values = values.max() + values.min() - values
    return values.astype(np.float32)


# ----------------------------------------------------------------------------- preprocessing
def preprocess(array: np.ndarray, max_size: int = 1024) -> np.ndarray:
    """The study's preprocessing: ``float32 (H, W, 3)`` in ``[0, 1]``; deterministic.

    1. Normalise to the maximum: ``out = (x - m) / max(x - m)`` with ``m = min(min(x), 0)``.
       For non-negative images (all ordinary formats) this is exactly ``x / max(x)``; images with
       negative values (e.g. CT in Hounsfield units) are shifted by their minimum first. A
       constant-zero image stays zero. Colour images share one maximum over all channels.
    2. If height or width exceeds ``max_size``, downsample to fit ``max_size x max_size`` keeping
       the aspect ratio (rounded; e.g. 3000x1000 -> 1024x341) with Lanczos filtering on float32
       (Pillow mode ``F``, per channel), then clip the filter's overshoot back to ``[0, 1]``.
       Smaller images are never upsampled (each backbone resizes to its own input).
    3. Replicate grey to three channels.
    """
    if int(max_size) < 1:
        raise ConfigError(f"max_size must be a positive number of pixels, got {max_size!r}")
    image = _check_array(np.asarray(array), "image passed to preprocess", None, None)
    values = image.astype(np.float64)
    values -= min(float(values.min()), 0.0)
    peak = float(values.max())
    values = values / peak if peak > 0 else np.zeros_like(values)
    values = values.astype(np.float32)
    height, width = values.shape[:2]
    scale = min(max_size / height, max_size / width)
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        channels = [values] if values.ndim == 2 else [values[:, :, c] for c in range(3)]
        resized = [
            np.asarray(Image.fromarray(np.ascontiguousarray(channel)).resize(size, Image.Resampling.LANCZOS))
            for channel in channels
        ]
        values = np.clip(resized[0] if values.ndim == 2 else np.stack(resized, axis=2), 0.0, 1.0)
    if values.ndim == 2:
        values = np.repeat(values[:, :, None], 3, axis=2)
    return np.ascontiguousarray(values, dtype=np.float32)


def preprocessing_fingerprint(max_size: int = 1024) -> dict[str, Any]:
    """What the feature cache hashes about reading and preprocessing (see :func:`preprocess`).

    The Pillow and pydicom major versions are included because their resampling and LUT code
    produce the pixel values; a change there must not silently reuse cached features. pydicom's
    version is read from its installed metadata, not by importing it (0.3 s a run).
    """
    from importlib.metadata import version

    import PIL

    return {
        "version": PREPROCESSING_VERSION,
        "max_size": int(max_size),
        "normalise": "(x - min(min(x), 0)) / max",
        "resize": "lanczos float32 per channel, clip [0, 1], no upsampling",
        "channels": "grey replicated to rgb",
        "pillow": PIL.__version__.split(".")[0],
        "pydicom": version("pydicom").split(".")[0],
    }
