"""Loading Hugging Face checkpoints safely, offline-first, and with a fingerprint of what was loaded.

Shared by the Hugging Face backbones (:mod:`medprobe.models.hf`) and anything else that needs a
model + processor pair (e.g. the multiple-choice evaluation). Policies, and why:

* **Local first.** A source is a local folder or a hub id. Hub ids are looked up in the Hugging
  Face cache only (``local_files_only``) unless ``download=True``: a probing run should never start
  a silent 160 GB download, and ``HF_HUB_OFFLINE=1`` always wins. A missing model is a
  :class:`~medprobe.errors.ModelError` that says how to get it.
* **Safe weights.** ``trust_remote_code`` is off unless the caller turns it on; when a folder holds
  ``*.safetensors`` the loader insists on them (``use_safetensors=True``) so pickled ``.bin`` files
  are never read, and downloads fetch safetensors only.
* **Reproducible.** :func:`file_signatures` identifies the exact files (hub blobs by their sha256,
  local weights by size + sampled hash), so feature caches are keyed on the weights, not a name.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medprobe.errors import ModelError
from medprobe.hardware import PrecisionChoice, choose_torch_dtype, matrix_units, warn_if_slow
from medprobe.models.base import file_sha256
from medprobe.models.records import GENERIC_FAMILY, family_of

ModelKind = Literal["auto", "idefics", "clip"]
DTYPES = ("float32", "bfloat16", "float16")
QUANTIZATIONS = ("8bit", "4bit")

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack")
_SMALL_FILE_SUFFIXES = (".json", ".jinja", ".model", ".txt", ".tiktoken", ".py")
#: pickled or foreign-framework weights never fetched by ``download=True``
_DOWNLOAD_IGNORE = ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.onnx", "*.ot", "*.gguf", "*.tflite"]
_SAMPLE_BYTES = 1 << 20

@dataclass
class LoadedModel:
    """A model and its processor plus everything that identifies them."""

    model: Any
    processor: Any
    #: what the user asked for: a hub id or a path
    source: str
    #: the local folder the files were read from (a hub-cache snapshot for hub ids)
    directory: Path
    #: the requested revision (hub ids only)
    revision: str | None
    #: the resolved hub commit, when loaded from the hub cache
    commit: str | None
    #: compute dtype name (one of :data:`DTYPES`)
    dtype: str
    quantization: str | None
    #: ``{relative file name: signature}`` of the config, tokenizer, processor and weight files
    files: dict[str, str] = field(default_factory=dict)
    #: why ``dtype`` (asked for, or what this machine's matrix units run fastest); not in the identity
    precision: PrecisionChoice | None = None

    def identity(self) -> dict[str, Any]:
        """JSON-serialisable description for fingerprints: enough to know the exact model files."""
        return {
            "source": self.source,
            "revision": self.revision,
            "commit": self.commit,
            "model_class": type(self.model).__name__,
            "files": dict(self.files),
            "dtype": self.dtype,
            "quantization": self.quantization,
        }


def _looks_like_path(source: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else (absolute, relative, ``~``) is a path."""
    return (
        source.startswith(("/", ".", "~", "\\"))
        or source.count("/") > 1
        or bool(re.match(r"^[A-Za-z]:[\\/]", source))
        or os.sep != "/" and os.sep in source
    )


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def resolve_model_dir(
    source: str,
    *,
    revision: str | None = None,
    download: bool = False,
    cache_dir: str | Path | None = None,
) -> tuple[Path, str | None]:
    """The local folder holding ``source`` and the hub commit it corresponds to (if any).

    ``source`` is an existing folder, or a hub id looked up in the Hugging Face cache (downloaded,
    safetensors only, when ``download`` is set and the hub is not offline).
    """
    path = Path(source).expanduser()
    if path.exists() or _looks_like_path(source):
        if revision is not None:
            raise ModelError(
                f"model {source!r}: `revision` ({revision!r}) applies to hub ids only, not to a local folder"
            )
        if not path.is_dir():
            raise ModelError(f"model folder not found: {path} (give the folder that holds config.json)")
        if not (path / "config.json").is_file():
            raise ModelError(f"model folder {path} has no config.json; is it a Hugging Face model folder?")
        return path, None

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    local_only = not download or _hub_offline()
    where = f" (revision {revision!r})" if revision else ""
    try:
        snapshot = Path(
            snapshot_download(
                repo_id=source,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=local_only,
                ignore_patterns=_DOWNLOAD_IGNORE,
            )
        )
    except (LocalEntryNotFoundError, FileNotFoundError) as error:
        hint = (
            "the hub is offline (HF_HUB_OFFLINE is set)" if _hub_offline() and download
            else "pass download=True to fetch it" if not download else str(error)
        )
        raise ModelError(
            f"model {source!r}{where} not found locally (Hugging Face cache "
            f"{cache_dir or _default_cache()}); download it with `hf download {source}` "
            f"(older huggingface_hub: `huggingface-cli download {source}`), set path: to a local copy, "
            f"or {hint}"
        ) from error
    except HFValidationError as error:
        raise ModelError(f"{source!r} is neither an existing folder nor a valid hub id: {error}") from error
    except Exception as error:  # network/auth errors of an explicit download
        raise ModelError(f"model {source!r}{where}: download failed: {error}") from error
    if not (snapshot / "config.json").is_file():
        raise ModelError(f"model {source!r}{where}: the cached copy at {snapshot} has no config.json")
    commit = snapshot.name if re.fullmatch(r"[0-9a-f]{40}", snapshot.name) else None
    return snapshot, commit


def _default_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _weights_signature(path: Path) -> str:
    """Hub-cache blobs are named by their sha256 (free); other weight files are too big to hash
    on every run, so they are identified by size plus a hash of their first and last MiB, which
    differs between any two trainings or fine-tunes of the same architecture."""
    target = path.resolve()
    if re.fullmatch(r"[0-9a-f]{64}", target.name) and target.parent.name == "blobs":
        return f"sha256:{target.name}"
    size = target.stat().st_size
    digest = hashlib.sha256()
    with open(target, "rb") as handle:
        digest.update(handle.read(_SAMPLE_BYTES))
        if size > 2 * _SAMPLE_BYTES:
            handle.seek(size - _SAMPLE_BYTES)
            digest.update(handle.read(_SAMPLE_BYTES))
    return f"size:{size};sampled-sha256:{digest.hexdigest()}"


def file_signatures(directory: Path) -> dict[str, str]:
    """Signatures of the files that define a model: configs, tokenizer/processor files, weights."""
    signatures: dict[str, str] = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        name = relative.as_posix()
        if path.suffix in _WEIGHT_SUFFIXES:
            signatures[name] = _weights_signature(path)
        elif path.suffix in _SMALL_FILE_SUFFIXES and not name.lower().startswith("readme"):
            signatures[name] = "sha256:" + file_sha256(path)
    return signatures


def resolve_dtype(dtype: str | None) -> str:
    """``None`` / ``"auto"``: the fastest precision of this machine's matrix units
    (:func:`medprobe.hardware.choose_torch_dtype`: bfloat16 on Ampere+ GPUs and on CPUs with AMX or
    AVX512-BF16, float32 on other CPUs); bfloat16 asked for on a CPU without bf16 units warns."""
    return dtype_choice(dtype).value


def dtype_choice(dtype: str | None) -> PrecisionChoice:
    """:func:`resolve_dtype` with what was asked for and why (for plan, the console and run.json)."""
    if dtype not in (None, "auto", *DTYPES):
        raise ModelError(f"unknown dtype {dtype!r}; choose from {('auto', *DTYPES)}")
    import torch

    on_gpu = torch.cuda.is_available()
    units = matrix_units(gpu=on_gpu)
    choice = choose_torch_dtype(dtype, units, on_gpu)
    warn_if_slow(choice, "torch backbone", units, on_gpu)
    return choice


def _quantization_config(quantization: str | None, dtype: str, source: str = "") -> Any:
    if quantization is None:
        return None
    where = f"model {source!r}: " if source else ""
    if quantization not in QUANTIZATIONS:
        raise ModelError(f"{where}unknown quantization {quantization!r}; choose from {QUANTIZATIONS} or leave it unset")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError(
            f"{where}quantization={quantization!r} needs the bitsandbytes package, which is not installed: "
            "`pip install bitsandbytes` (or `pip install 'medprobe[quant]'`), or load in bfloat16/float16 instead"
        )
    import torch
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=getattr(torch, dtype))


_DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")


def check_devices(source: str, device_map: Any, max_memory: dict[Any, Any] | None) -> None:
    """Every GPU a ``device_map`` / ``max_memory`` names must exist here (else accelerate fails
    deep inside loading, or silently moves the weights elsewhere)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    named: list[tuple[str, Any]] = []
    if isinstance(device_map, dict):
        named += [(f"device_map[{module!r}]", device) for module, device in device_map.items()]
    elif device_map is not None:
        if isinstance(device_map, str) and device_map in _DEVICE_MAP_STRATEGIES:
            pass
        else:
            named.append(("device_map", device_map))
    named += [(f"max_memory key {key!r}", key) for key in (max_memory or {})]
    for setting, device in named:
        if isinstance(device, str) and device in ("cpu", "disk", "meta", "mps"):
            continue
        match = re.fullmatch(r"(?:cuda:)?(\d+)", str(device)) if isinstance(device, (int, str)) else None
        if match is None or isinstance(device, bool):
            raise ModelError(f"model {source!r}: {setting} = {device!r} is not a device; use a GPU index, "
                             f"'cuda:N', 'cpu', 'disk' or one of {_DEVICE_MAP_STRATEGIES}")
        if int(match.group(1)) >= count:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            raise ModelError(
                f"model {source!r}: {setting} = {device!r} names GPU {match.group(1)}, but this machine has {count} "
                f"visible GPU{'s' if count != 1 else ''}" + (f" (CUDA_VISIBLE_DEVICES={visible})" if visible else "")
                + "; use device_map: auto, or the indices `medprobe plan` shows")


def _check_weights_match(model: Any, info: dict[str, Any], source: str, directory: Path, model_type: str) -> None:
    """Weights the config expects but the files lack would be left at random: never a silent result."""
    missing = sorted(set(info.get("missing_keys") or []))
    mismatched = info.get("mismatched_keys") or []
    if missing or mismatched:
        unexpected = sorted(set(info.get("unexpected_keys") or []))
        raise ModelError(
            f"model {source!r}: config.json in {directory} describes a {model_type!r} model "
            f"({type(model).__name__}), but its weight files do not match it: {len(missing)} weights missing"
            f"{' (e.g. ' + ', '.join(missing[:3]) + ')' if missing else ''}, {len(mismatched)} of another shape, "
            f"{len(unexpected)} unexpected{' (e.g. ' + ', '.join(unexpected[:3]) + ')' if unexpected else ''}. "
            "Is the config.json from another architecture than the weights?"
        )


def _read_model_type(directory: Path) -> str:
    import json

    try:
        return str(json.loads((directory / "config.json").read_text()).get("model_type", ""))
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot read {directory / 'config.json'}: {error}") from error


def model_type_of(source: str, **resolve_options: Any) -> str:
    """``model_type`` from a source's config.json (resolving hub ids like :func:`load_hf_model`)."""
    directory, _ = resolve_model_dir(source, **resolve_options)
    return _read_model_type(directory)


def load_hf_model(
    source: str,
    *,
    kind: ModelKind = "auto",
    revision: str | None = None,
    dtype: str | None = None,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, str] | None = None,
    offload_folder: str | Path | None = None,
    quantization: str | None = None,
    trust_remote_code: bool = False,
    download: bool = False,
    cache_dir: str | Path | None = None,
) -> LoadedModel:
    """Load a model + processor from a local folder or the Hugging Face cache.

    ``kind`` picks the model and processor classes of a family record
    (:mod:`medprobe.models.records`): ``"idefics"`` (``IdeficsForVisionText2Text``), ``"clip"``
    (``CLIPModel``) or ``"auto"`` (``AutoModelForImageTextToText``). ``device_map`` /
    ``max_memory`` / ``offload_folder`` go to accelerate (e.g. ``device_map="auto"`` spreads an
    80B model over GPUs, CPU RAM and disk); by default it is ``"auto"`` when CUDA is available
    (everything on GPU 0 if it fits), else the model stays on the CPU. ``quantization`` is ``"8bit"`` /
    ``"4bit"`` (bitsandbytes) or None.
    """
    directory, commit = resolve_model_dir(source, revision=revision, download=download, cache_dir=cache_dir)
    model_type = _read_model_type(directory)
    if kind in ("idefics", "clip") and model_type != kind:
        raise ModelError(
            f"model {source!r} is a {model_type!r} model ({directory / 'config.json'}), not {kind!r}; "
            f"use the generic backbone `hf:{source}` for it"
        )
    precision = dtype_choice(dtype)
    dtype = precision.value
    check_devices(source, device_map, max_memory)

    import torch
    import transformers

    family = GENERIC_FAMILY if kind == "auto" else family_of(kind)  # the classes its family record names
    model_class = getattr(transformers, family.model_class)
    processor_class = getattr(transformers, family.processor_class)

    if device_map is None and torch.cuda.is_available():
        device_map = "auto"  # fills GPU 0 first, then the next GPUs, then CPU RAM
    has_safetensors = any(directory.glob("*.safetensors"))
    kwargs: dict[str, Any] = {
        "dtype": getattr(torch, dtype),
        "trust_remote_code": bool(trust_remote_code),
        "local_files_only": True,
        "use_safetensors": True if has_safetensors else None,
    }
    for key, value in (("device_map", device_map), ("max_memory", max_memory),
                       ("offload_folder", str(offload_folder) if offload_folder else None),
                       ("quantization_config", _quantization_config(quantization, dtype, source))):
        if value is not None:
            kwargs[key] = value
    try:
        model, info = model_class.from_pretrained(str(directory), output_loading_info=True, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError, ImportError) as error:
        raise ModelError(f"cannot load model {source!r} from {directory} (config.json: {model_type!r}): "
                         f"{type(error).__name__}: {error}") from error
    _check_weights_match(model, info, source, directory, model_type)
    model.eval()
    processor = _load_processor(processor_class, directory, source, model_type, trust_remote_code)
    return LoadedModel(
        model=model, processor=processor, source=source, directory=directory, revision=revision, commit=commit,
        dtype=dtype, quantization=quantization, files=file_signatures(directory), precision=precision,
    )


def _load_processor(processor_class: Any, directory: Path, source: str, model_type: str,
                    trust_remote_code: bool) -> Any:
    try:
        return processor_class.from_pretrained(str(directory), trust_remote_code=bool(trust_remote_code),
                                               local_files_only=True)
    except (ImportError, AttributeError, OSError, ValueError, KeyError, TypeError) as error:
        # without torchvision, transformers cannot build (or find the files of) a video processor
        no_torchvision = importlib.util.find_spec("torchvision") is None
        if no_torchvision and re.search("video|torchvision", str(error), re.IGNORECASE):
            without_video = processor_without_video(model_type)
            if without_video is not None:
                return _load_without_video(without_video, directory, source)
        raise ModelError(f"cannot load the processor of {source!r} from {directory}: {type(error).__name__}: "
                         f"{error}") from error


def _load_without_video(processor_class: Any, directory: Path, source: str) -> Any:
    try:
        return processor_class.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, ImportError, AttributeError) as error:
        raise ModelError(f"cannot load the processor of {source!r} from {directory} without torchvision "
                         f"(its video processor needs it): {type(error).__name__}: {error}") from error


def processor_without_video(model_type: str) -> Any:
    """The processor class of ``model_type`` with its video processor left empty, or None if it has none.

    Why: without torchvision, transformers cannot build a video processor at all, and processors
    that take one (LLaVA-OneVision, InternVL, Qwen2-VL, Qwen2.5-VL, Qwen3-VL, GLM-4V, Video-LLaVA, ...)
    refuse to load, though images need only the PIL image processor. This subclass loads every other
    part as the family's class does and leaves ``video_processor`` None (in its place among the
    parts, whatever the family's argument order), so images and text are processed by the family's
    own code; asking it for video fails on the missing video processor."""
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    name = PROCESSOR_MAPPING_NAMES.get(model_type)
    base = getattr(transformers, name, None) if isinstance(name, str) else None
    if base is None or not any("video" in attribute for attribute in base.get_attributes()):
        return None
    images_only = type(base.__name__, (base,), {"get_attributes": classmethod(
        lambda cls: [attribute for attribute in base.get_attributes() if "video" not in attribute])})

    def load_parts(cls: Any, directory: Any, processor_dict: Any = None, **kwargs: Any) -> list[Any]:
        loaded = iter(images_only._get_arguments_from_pretrained(directory, processor_dict, **kwargs))
        return [None if "video" in attribute else next(loaded) for attribute in base.get_attributes()]

    def check_argument_for_proper_class(self: Any, argument_name: str, argument: Any) -> Any:
        if argument is None and "video" in argument_name:
            return None
        return base.check_argument_for_proper_class(self, argument_name, argument)

    def save_pretrained(self: Any, *args: Any, **kwargs: Any) -> Any:
        """Saved as the family's processor without the (absent) video processor's files."""
        cls, self.__class__ = self.__class__, images_only
        try:
            return images_only.save_pretrained(self, *args, **kwargs)
        finally:
            self.__class__ = cls

    def apply_chat_template(self: Any, conversation: Any, *args: Any, **kwargs: Any) -> Any:
        """The family's own; where that reads the absent video processor's defaults for every
        conversation (SmolVLM: ``num_frames``, ``fps``), the generic one, which renders images and
        text the same way (the defaults only matter for a video, which medprobe never sends)."""
        try:
            return base.apply_chat_template(self, conversation, *args, **kwargs)
        except AttributeError as error:
            if self.video_processor is not None or "'NoneType' object has no attribute" not in str(error):
                raise
            from transformers import ProcessorMixin

            return ProcessorMixin.apply_chat_template(self, conversation, *args, **kwargs)

    # named as the family's class: what it saves (processor_config.json) is the family's processor
    return type(base.__name__, (base,), {
        "_get_arguments_from_pretrained": classmethod(load_parts),
        "check_argument_for_proper_class": check_argument_for_proper_class,
        "save_pretrained": save_pretrained,
        "apply_chat_template": apply_chat_template,
        "__doc__": f"{base.__name__} for images and text only (torchvision, which its video processor needs, "
                   "is not installed).",
    })
