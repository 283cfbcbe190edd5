"""Pure image encoders from transformers as backbones: DINOv2/v3, ViT, SigLIP/SigLIP 2, CLIP vision, ConvNeXt, Swin.

These are the specialist baselines (RAD-DINO, Phikon, MedSigLIP, ...) a vision-language model is
compared with. Each architecture is one :class:`~medprobe.models.records.ImageEncoder` record (where its
blocks are, whether its tokens start with a CLS token and register tokens); this module reads all of
them the same way. Layers:

* ``vision.k`` for k = 0..L: the model's own ``hidden_states[k]`` (``vision.0`` = the embeddings, or
  for DINOv3 ConvNeXt the pixels, as transformers reports them; ``vision.k`` = output of block/stage
  k), captured by forward hooks so the pass stops after the deepest requested one, and pooled with
  ``vision_pooling``:

  - ``cls``: the CLS token;
  - ``mean``: the mean over patch tokens only: CLS and register tokens excluded (SigLIP 2's padding
    patches too); for feature maps (ConvNeXt) the spatial mean;
  - ``cls+mean``: the two concatenated, as DINOv2's linear evaluation reads its features;

  families without a CLS token (SigLIP, ConvNeXt, Swin) take ``mean`` only;
* ``image_embeds``: the model's own image embedding: ``pooler_output`` (SigLIP's attention-pooled
  head = ``SiglipModel.get_image_features``; DINOv2/v3's normalised CLS; ConvNeXt's and Swin's
  normalised spatial mean; CLIP's post-layernorm CLS) or, for ViTs whose pooler is untrained (Phikon),
  the CLS token of ``last_hidden_state``. The name matches the CLIP backbone's.

Preprocessing is the checkpoint's own image processor (resolution, resize/crop, mean/std), loaded
with ``AutoImageProcessor``, which picks transformers' PIL backend when torchvision is missing. A
processor that exists only for torchvision (DINOv3's) is replaced by the same steps in float32
torch (rescale, antialiased bilinear resize, normalise) from its ``preprocessor_config.json``; the
fingerprint says which ran.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from medprobe.errors import ModelError
from medprobe.models.base import Backbone
from medprobe.models.imaging import normalise, resize_batch, to_pil
from medprobe.models.records import ImageEncoder, ModelFamily, family_of
from medprobe.models.stacks import LayerStacks, resolve_layer_spec
from medprobe.models.torch_hooks import StopForward, layer_input, layer_output, to_cpu

IMAGE_EMBEDS = "image_embeds"
POOLINGS = ("cls", "mean", "cls+mean")


def encoder_family(model_type: str, name: str) -> ModelFamily:
    """The image-encoder family of ``model_type``; an error naming the known ones otherwise."""
    family = family_of(model_type)
    if family.encoder is None:
        from medprobe.models.records import IMAGE_ENCODER_FAMILIES

        raise ModelError(f"backbone {name!r}: {model_type!r} is not an image encoder medprobe knows; "
                         f"known: {sorted(IMAGE_ENCODER_FAMILIES)}")
    return family


def tower_config(config: Any) -> Any:
    """The config the encoder is built from: a dual encoder's vision sub-config (SigLIP), else itself."""
    key = family_of(config.model_type).encoder.config_key  # type: ignore[union-attr]
    return getattr(config, key) if key else config


def encoder_stacks(model: Any, model_type: str, name: str) -> LayerStacks:
    """The block list of an encoder of family ``model_type`` (from its record), as the
    :class:`LayerStacks` that ``medprobe layers`` / ``plan`` and the backbone read."""
    encoder: ImageEncoder = encoder_family(model_type, name).encoder  # type: ignore[assignment]
    try:
        blocks = model.get_submodule(encoder.stack)
    except AttributeError as error:
        raise ModelError(f"backbone {name!r}: {type(model).__name__} has no module {encoder.stack!r} "
                         f"(the block list its family record names): {error}") from error
    config = model.config
    sizes = getattr(config, "hidden_sizes", None)
    # the width of the last block: ConvNeXt's last stage, Swin's hidden_size (its last stage's width)
    width = int(sizes[-1]) if sizes else int(config.hidden_size)
    return LayerStacks(name=name, vision_module=model, vision_layers=blocks, vision_path=encoder.stack,
                       vision_width=width)


def build_meta_encoder(config: Any, name: str) -> Any:
    """The encoder of a (full) config with every weight on the meta device (``medprobe layers``/``plan``)."""
    import transformers
    from accelerate import init_empty_weights

    family = encoder_family(config.model_type, name)
    model_class = getattr(transformers, family.model_class)
    with init_empty_weights():
        model = model_class(tower_config(config), **dict(family.encoder.load_options))  # type: ignore[union-attr]
    return model.eval()


class ImageEncoderBackbone(Backbone):
    """Hidden states and the image embedding of a transformers image encoder (module docstring)."""

    default_batch_size = 32

    def __init__(self, model: Any, preprocess: "Preprocessing", *, name: str, model_type: str,
                 identity: dict[str, Any], vision_pooling: str | None = None) -> None:
        """``model_type`` is the checkpoint's (a SigLIP tower loaded from a ``siglip`` dual encoder
        says ``siglip_vision_model`` in its own config, but is read as its family says)."""
        import torch

        self.name = name
        self.model = model
        self.preprocess = preprocess
        self.identity = identity
        family = encoder_family(model_type, name)
        self.encoder: ImageEncoder = family.encoder  # type: ignore[assignment]
        allowed = POOLINGS if self.encoder.cls_token else ("mean",)
        self.vision_pooling = vision_pooling or allowed[0]
        if self.vision_pooling not in allowed:
            raise ModelError(f"backbone {name!r}: vision_pooling {self.vision_pooling!r} is not available for "
                             f"{family.title} ({'no CLS token' if not self.encoder.cls_token else ''}); "
                             f"choose from {allowed}")
        registers = getattr(model.config, self.encoder.registers, 0) if self.encoder.registers else 0
        #: tokens before the patch tokens: the CLS token and the register tokens
        self.prefix_tokens = (1 if self.encoder.cls_token else 0) + int(registers or 0)
        self.stacks = encoder_stacks(model, model_type, name)
        self._torch = torch

    @property
    def num_vision_layers(self) -> int:
        return self.stacks.num_vision_layers

    def layer_names(self) -> list[str]:
        return [*self.stacks.hidden_states(), IMAGE_EMBEDS]

    def resolve_layers(self, spec: Any) -> list[str]:
        """Integers, ``"a:b"`` slices and ``"vision.k"`` index the encoder's hidden states (``-1`` = last)."""
        return resolve_layer_spec(self.name, spec, num_lm=None, num_vision=self.num_vision_layers,
                                  extra=[IMAGE_EMBEDS], default=self.default_layers())

    def fingerprint(self) -> dict[str, Any]:
        import transformers

        return {"backbone": self.name, **self.identity, "vision_pooling": self.vision_pooling,
                "prefix_tokens": self.prefix_tokens, "image_embeds": self.encoder.embedding,
                "preprocessing": self.preprocess.describe(), "transformers": transformers.__version__}

    def model_inputs(self, images: Sequence[np.ndarray]) -> dict[str, Any]:
        """The model's inputs for ``images`` (pixels, and SigLIP 2's patch mask and grid), on its device."""
        parameter = next(self.model.parameters())
        device = parameter.device if parameter.device.type != "meta" else self._torch.device("cpu")
        inputs = self.preprocess(images)
        return {key: value.to(device=device, dtype=parameter.dtype) if value.is_floating_point() else value.to(device)
                for key, value in inputs.items()}

    def pool(self, hidden: Any, mask: Any = None) -> Any:
        """One vector per image from a hidden state (``vision_pooling``; module docstring)."""
        torch = self._torch
        if hidden.ndim == 4:  # (B, C, H, W) feature map
            return hidden.mean(dim=(2, 3))
        patches = hidden[:, self.prefix_tokens:]
        if mask is not None:  # SigLIP 2: padding patches do not count
            weights = mask[:, :patches.shape[1]].to(patches.dtype).unsqueeze(-1)
            mean = (patches * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
        else:
            mean = patches.mean(dim=1)
        if self.vision_pooling == "mean":
            return mean
        cls = hidden[:, 0]
        return cls if self.vision_pooling == "cls" else torch.cat([cls, mean], dim=-1)

    def extract(self, images: Sequence[np.ndarray], layers: Sequence[str]) -> dict[str, np.ndarray]:
        for layer in layers:
            if layer not in self.layer_names():
                self.resolve_layers(layer)  # raises with the valid layers
        if not images or not layers:
            return {layer: np.zeros((len(images), 0), np.float32) for layer in layers}
        names = self.stacks.hidden_states()
        wanted = sorted({names[layer][1] for layer in layers if layer != IMAGE_EMBEDS})
        captured, embeds = self._run(self.model_inputs(images), wanted, run_all=IMAGE_EMBEDS in layers)
        out: dict[str, np.ndarray] = {}
        for layer in layers:
            tensor = embeds if layer == IMAGE_EMBEDS else captured[names[layer][1]]
            out[layer] = tensor.numpy().astype(np.float32, copy=False)
        return out

    def _run(self, inputs: dict[str, Any], wanted: list[int], *, run_all: bool) -> tuple[dict[int, Any], Any]:
        """Forward ``inputs``; pooled hidden states ``{k: (B, D)}`` and (with ``run_all``) the embedding."""
        torch = self._torch
        mask = inputs.get("pixel_attention_mask")
        captured: dict[int, Any] = {}

        def store(k: int, tensor: Any) -> None:
            captured[k] = self.pool(to_cpu(tensor), None if mask is None else mask.cpu())
            if not run_all and k == wanted[-1]:
                raise StopForward

        blocks = self.stacks.vision_layers
        handles = []
        for k in wanted:
            if k == 0:
                handles.append(blocks[0].register_forward_pre_hook(
                    lambda m, args, kwargs: store(0, layer_input(args, kwargs)), with_kwargs=True))
            else:
                handles.append(blocks[k - 1].register_forward_hook(
                    lambda m, args, output, k=k: store(k, layer_output(output))))
        embeds = None
        try:
            with torch.inference_mode():
                output = self.model(**inputs, return_dict=True)
                embeds = to_cpu(output.pooler_output if self.encoder.embedding == "pooler_output"
                                else output.last_hidden_state[:, 0])
        except StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        return captured, embeds

    def close(self) -> None:
        import gc

        self.model = None
        gc.collect()


class Preprocessing:
    """The checkpoint's own image preprocessing: its transformers image processor (PIL backend without
    torchvision), or, for a torchvision-only processor, the same steps in float32 torch."""

    def __init__(self, directory: Path, name: str) -> None:
        from transformers import AutoImageProcessor

        self.settings = _read_json(directory / "preprocessor_config.json", name)
        try:
            self.processor = AutoImageProcessor.from_pretrained(str(directory), local_files_only=True)
        except (ImportError, ValueError, OSError) as error:
            if "height" not in self.settings.get("size", {}):
                raise ModelError(f"backbone {name!r}: cannot load the image processor in {directory}: "
                                 f"{error}") from error
            self.processor = None  # torchvision-only processor with a fixed size: rebuilt in float32 below

    def describe(self) -> dict[str, Any]:
        if self.processor is None:
            return {"steps": "float [0,1] -> antialiased bilinear resize (torch, float32) -> (x - mean) / std",
                    **{k: self.settings.get(k) for k in ("size", "image_mean", "image_std")}}
        settings = json.loads(self.processor.to_json_string())  # JSON types, as the cache key needs
        return {"steps": "float [0,1] -> round(x*255) uint8 RGB PIL -> image processor",
                "processor": type(self.processor).__name__, **settings}

    def __call__(self, images: Sequence[np.ndarray]) -> dict[str, Any]:
        import torch

        if self.processor is not None:
            return dict(self.processor(images=[to_pil(image) for image in images], return_tensors="pt"))
        size = self.settings["size"]
        batch = resize_batch([np.asarray(image, np.float32) for image in images], (size["height"], size["width"]))
        if self.settings.get("do_normalize", True):
            batch = normalise(batch, self.settings.get("image_mean"), self.settings.get("image_std"))
        return {"pixel_values": torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))}


def _read_json(path: Path, name: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ModelError(f"backbone {name!r}: cannot read {path}: {error}") from error


def image_encoder_backbone(
    name: str,
    source: str,
    *,
    revision: str | None = None,
    vision_pooling: str | None = None,
    dtype: str | None = None,
    device_map: str | dict[str, Any] | None = None,
    download: bool = False,
    cache_dir: str | None = None,
    **unused: Any,
) -> ImageEncoderBackbone:
    """Load an image encoder from a folder or the Hugging Face cache (safetensors only, offline-first,
    as :func:`~medprobe.models.hf_loading.load_hf_model`); prompt options are rejected, not ignored."""
    import torch
    import transformers

    from medprobe.models.hf_loading import file_signatures, resolve_dtype, resolve_model_dir

    if unused:
        raise ModelError(f"backbone {name!r}: options {sorted(unused)} do not apply to image encoders (which take "
                         "no prompt); allowed: path, revision, vision_pooling, dtype, device_map, download, cache_dir")
    directory, commit = resolve_model_dir(source, revision=revision, download=download, cache_dir=cache_dir)
    model_type = str(_read_json(directory / "config.json", name).get("model_type", ""))
    family = encoder_family(model_type, name)
    dtype = resolve_dtype(dtype)
    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype), "local_files_only": True,
                              **dict(family.encoder.load_options)}  # type: ignore[union-attr]
    if any(directory.glob("*.safetensors")):
        kwargs["use_safetensors"] = True
    if device_map is not None or torch.cuda.is_available():
        kwargs["device_map"] = device_map or "auto"
    model_class = getattr(transformers, family.model_class)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # a dual encoder's text tower is "unexpected": expected here
    try:
        model, info = model_class.from_pretrained(str(directory), output_loading_info=True, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise ModelError(f"cannot load image encoder {source!r} from {directory}: "
                         f"{type(error).__name__}: {error}") from error
    finally:
        transformers.logging.set_verbosity(verbosity)
    missing = sorted(info.get("missing_keys") or [])
    if missing or info.get("mismatched_keys"):
        raise ModelError(f"model {source!r}: its weight files do not match a {family.model_class} "
                         f"({len(missing)} weights missing, e.g. {missing[:3]}); is it another architecture?")
    identity = {"source": source, "revision": revision, "commit": commit, "model_class": family.model_class,
                "files": file_signatures(directory), "dtype": dtype}
    return ImageEncoderBackbone(model.eval(), Preprocessing(directory, name), name=name, model_type=model_type,
                                identity=identity, vision_pooling=vision_pooling)
