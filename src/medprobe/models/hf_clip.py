"""CLIP-family backbones (``clip-b32``, ``plip``) and zero-shot classification from class names.

CLIP has no prompt on the image side: the image tower alone gives the features. Layers:

* ``vision.k`` for k = 0..L: the vision transformer's ``hidden_states[k]`` (``vision.0`` = patch +
  position embeddings after CLIP's pre-layernorm, ``vision.k`` = output of encoder layer k),
  pooled with ``vision_pooling``: ``cls`` (the class token, CLIP's own choice) or ``mean`` (patch
  tokens, class token excluded);
* ``image_embeds``: the projected image embedding, ``visual_projection(post_layernorm(CLS))``,
  exactly ``CLIPModel.get_image_features`` (not L2-normalised).

PLIP (vinid/plip) is a CLIP ViT-B/32 fine-tuned on pathology image-text pairs from medical
Twitter; it loads and behaves exactly like ``clip-b32``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from medprobe.errors import ModelError
from medprobe.models.base import Backbone
from medprobe.models.imaging import to_pil
from medprobe.models.stacks import VISION_POOLINGS, find_stacks, resolve_layer_spec
from medprobe.models.torch_hooks import StopForward

if TYPE_CHECKING:
    from medprobe.models.hf_loading import LoadedModel

IMAGE_EMBEDS = "image_embeds"


class ClipBackbone(Backbone):
    """Image-tower activations and projected embeddings of a ``CLIPModel``."""

    default_batch_size = 32

    def __init__(self, loaded: "LoadedModel", *, name: str, vision_pooling: str = "cls") -> None:
        import torch

        if vision_pooling not in VISION_POOLINGS:
            raise ModelError(
                f"backbone {name!r}: unknown vision_pooling {vision_pooling!r}; choose from {VISION_POOLINGS}"
            )
        self.name = name
        self.loaded = loaded
        self.model = loaded.model
        self.processor = loaded.processor
        self.vision_pooling = vision_pooling
        self.provenance = loaded.source + (f"@{loaded.commit}" if loaded.commit else "")
        self.stacks = find_stacks(self.model, name, language=False)
        self._layers = self.stacks.vision_layers
        #: ``{"vision.k": ("vision", k)}``: the tower's hidden states, as the stacks name them
        self._hidden_states = self.stacks.hidden_states()
        self._torch = torch

    @property
    def num_vision_layers(self) -> int:
        return len(self._layers)

    def layer_names(self) -> list[str]:
        return [*self._hidden_states, IMAGE_EMBEDS]

    def resolve_layers(self, spec: Any) -> list[str]:
        """Integers, ``"a:b"`` slices and ``"vision.k"`` index the vision layers (``-1`` = last)."""
        return resolve_layer_spec(self.name, spec, num_lm=None, num_vision=self.num_vision_layers,
                                  extra=[IMAGE_EMBEDS], default=self.default_layers())

    def fingerprint(self) -> dict[str, Any]:
        import transformers

        return {
            "backbone": self.name,
            **self.loaded.identity(),
            "vision_pooling": self.vision_pooling,
            "image_input": "float [0,1] -> round(x*255) uint8 RGB PIL -> CLIPProcessor",
            "transformers": transformers.__version__,
        }

    def pixel_values(self, images: Sequence[np.ndarray]) -> Any:
        """CLIP-preprocessed pixels, on the model's device and dtype."""
        pixels = self.processor(images=[to_pil(image) for image in images], return_tensors="pt")["pixel_values"]
        parameter = self.model.visual_projection.weight
        device = parameter.device if parameter.device.type != "meta" else self._torch.device("cpu")
        return pixels.to(device=device, dtype=self.model.dtype)

    def extract(self, images: Sequence[np.ndarray], layers: Sequence[str]) -> dict[str, np.ndarray]:
        torch = self._torch
        names = self.layer_names()
        for layer in layers:
            if layer not in names:
                self.resolve_layers(layer)  # raises with the list of valid layers
        if not images or not layers:
            return {layer: np.zeros((len(images), 0), np.float32) for layer in layers}
        wanted = sorted({self._hidden_states[layer][1] for layer in layers if layer != IMAGE_EMBEDS})
        run_all = IMAGE_EMBEDS in layers
        captured: dict[int, Any] = {}

        def store(k: int, tensor: Any) -> None:
            captured[k] = tensor.detach().to("cpu", torch.float32)
            if not run_all and k == wanted[-1]:
                raise StopForward

        handles = []
        for k in wanted:
            if k == 0:
                handles.append(self._layers[0].register_forward_pre_hook(
                    lambda m, args, kwargs: store(0, args[0] if args else kwargs["hidden_states"]), with_kwargs=True))
            else:
                handles.append(self._layers[k - 1].register_forward_hook(
                    lambda m, args, output, k=k: store(k, output[0] if isinstance(output, tuple) else output)))
        embeds = None
        try:
            with torch.inference_mode():
                try:
                    output = self.model.vision_model(pixel_values=self.pixel_values(images), return_dict=True)
                    embeds = self.model.visual_projection(output.pooler_output)
                except StopForward:
                    pass
        finally:
            for handle in handles:
                handle.remove()
        out: dict[str, np.ndarray] = {}
        for layer in layers:
            if layer == IMAGE_EMBEDS:
                out[layer] = embeds.detach().to("cpu", torch.float32).numpy()
                continue
            hidden = captured[self._hidden_states[layer][1]]
            pooled = hidden[:, 0] if self.vision_pooling == "cls" else hidden[:, 1:].mean(dim=1)
            out[layer] = pooled.numpy().astype(np.float32)
        return out

    def text_embeds(self, texts: Sequence[str]) -> Any:
        """Projected text embeddings (``CLIPModel.get_text_features``) as a CPU float32 tensor."""
        torch = self._torch
        tokenizer = self.processor.tokenizer
        limit = int(self.model.config.text_config.max_position_embeddings)
        tokens = tokenizer(list(texts), padding=True, truncation=True, max_length=limit, return_tensors="pt")
        device = self.model.text_projection.weight.device
        device = device if device.type != "meta" else torch.device("cpu")
        with torch.inference_mode():
            output = self.model.text_model(**{k: v.to(device) for k, v in tokens.items()}, return_dict=True)
            return self.model.text_projection(output.pooler_output).to("cpu", torch.float32)

    def close(self) -> None:
        import gc

        self.model = self.loaded.model = None  # type: ignore[assignment]
        gc.collect()


def zero_shot_scores(
    backbone: ClipBackbone,
    images: Sequence[np.ndarray],
    class_names: Sequence[str],
    template: str = "a {} image",
    batch_size: int | None = None,
) -> np.ndarray:
    """Zero-shot class probabilities ``(len(images), len(class_names))``, no training.

    Each class becomes the text ``template.format(name)``; the probabilities are the softmax over
    classes of ``exp(logit_scale) * cosine(image embedding, text embedding)``, which is CLIP's own
    ``logits_per_image``.
    """
    import torch

    if not isinstance(backbone, ClipBackbone):
        raise ModelError(f"zero-shot scores need a CLIP-family backbone, not {type(backbone).__name__}")
    if len(class_names) < 2:
        raise ModelError(f"zero-shot classification needs at least two class names, got {list(class_names)}")
    if "{}" not in template:
        raise ModelError(f"zero-shot template {template!r} must contain '{{}}' where the class name goes")
    text = backbone.text_embeds([template.format(name) for name in class_names])
    text = text / text.norm(dim=-1, keepdim=True)
    scale = float(backbone.model.logit_scale.detach().float().exp())
    size = batch_size or backbone.default_batch_size
    scores = []
    for start in range(0, len(images), size):
        image = torch.from_numpy(backbone.extract(images[start:start + size], [IMAGE_EMBEDS])[IMAGE_EMBEDS])
        image = image / image.norm(dim=-1, keepdim=True)
        scores.append(torch.softmax(scale * image @ text.T, dim=-1))
    if not scores:
        return np.zeros((0, len(class_names)), np.float32)
    return torch.cat(scores).numpy().astype(np.float32)


def clip_backbone(
    name: str,
    source: str,
    *,
    revision: str | None = None,
    vision_pooling: str = "cls",
    dtype: str | None = None,
    device_map: str | dict[str, Any] | None = None,
    max_memory: dict[Any, str] | None = None,
    offload_folder: str | None = None,
    trust_remote_code: bool = False,
    download: bool = False,
    cache_dir: str | None = None,
    **unused: Any,
) -> ClipBackbone:
    """Load a CLIP checkpoint. VLM-only options (prompt, pooling, ...) are rejected, not ignored."""
    from medprobe.models.hf_loading import load_hf_model

    if unused:
        raise ModelError(f"backbone {name!r}: options {sorted(unused)} do not apply to CLIP models "
                         "(which take no prompt); allowed: path, revision, vision_pooling, dtype, device_map, "
                         "max_memory, offload_folder, trust_remote_code, download, cache_dir")
    loaded = load_hf_model(source, kind="clip", revision=revision, dtype=dtype, device_map=device_map,
                           max_memory=max_memory, offload_folder=offload_folder,
                           trust_remote_code=trust_remote_code, download=download, cache_dir=cache_dir)
    return ClipBackbone(loaded, name=name, vision_pooling=vision_pooling)
