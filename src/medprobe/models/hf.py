r"""Hugging Face vision-language backbones: show an image *with a prompt* and read the internal state.

Families (registered by name in :mod:`medprobe.models.hf_presets` from :mod:`medprobe.models.records`;
heavy imports happen only when one is built):

* **IDEFICS v1** (``idefics-9b``, ``idefics-9b-instruct``, ``idefics-80b``, ``idefics-80b-instruct``):
  the open Flamingo reproduction. Images enter the LLaMA decoder through gated cross-attention.
  The prompt follows ``prompt_style`` (below): ``study`` by default for the base models,
  ``chat`` for the instruct models.
* **Generic** ``hf:<folder-or-hub-id>``: any ``AutoModelForImageTextToText`` model. The prompt is one
  user turn holding the image and the prompt text, rendered by the model's own chat template with
  ``add_generation_prompt=True``; a processor without a chat template (PaliGemma, BLIP-2, base
  checkpoints) gets ``plain`` (below), said on the console and in the fingerprint. Stacks are
  found by :func:`~medprobe.models.stacks.find_stacks`. A CLIP checkpoint given as ``hf:`` becomes a
  CLIP backbone. Processors that take a video processor (Qwen2-VL, Qwen2.5-VL, Qwen3-VL,
  LLaVA-OneVision, InternVL, ...) need torchvision only for video; without it they are loaded
  without one (:func:`~medprobe.models.hf_loading.processor_without_video`) and images go through
  the family's PIL image processor and its own processor code.
  SmolVLM's processor needs ``num2words`` installed.
* **CLIP / PLIP** (``clip-b32``, ``plip``): see :mod:`medprobe.models.hf_clip`.

Prompt styles (``prompt_style``), all ending where the last token is read:

* ``study``: the study's activation prompt for the base IDEFICS models (peterhan91/Multimodal-Probes,
  ``activation.py``): ``[image, "Question: What can you see on this <noun>? Answer:"]`` -- image
  first, no chat turns. ``noun`` is the study's per-task noun
  (:data:`~medprobe.models.records.STUDY_NOUNS`: "histological picture" for T1/T2, "skin image" T3/T4,
  "eye fundus image" T5/T6, "chest radiological image" T7,
  "knee radiological image" T8); without one it is ``"<domain> image"``. ``prompt=`` replaces the
  question, keeping the ``Question: ... Answer:`` frame.
* ``study-verbatim``: the study's text character for character, typo included:
  ``"Question: What can you seen on this <noun>? Answer:"``.
* ``study-general``: the code's default prompt, ``"Question: What's on this image? Answer:"``
  (``activation.py``'s ``--prompt_key general``), which its documented commands ran.
* ``chat``: IDEFICS v1's instruct interleaving ``["User:", image, prompt + "<end_of_utterance>",
  "\nAssistant:"]``; for every other model one user turn (image + prompt) rendered by the
  model's own chat template with ``add_generation_prompt=True`` (the only style those take).
* ``plain``: ``[image, prompt]`` and nothing else (IDEFICS v1); for a model without a chat template,
  the prompt as its processor takes it (after the processor's image token unless the processor
  inserts the image tokens itself, as BLIP-2's and PaliGemma's do).

The rendered prompt and its token ids are part of the fingerprint, hence of the cache key.

Layers (same convention as transformers' ``output_hidden_states=True``):

* ``"k"`` for k = 0..L: language-model ``hidden_states[k]``. ``"0"`` is the input of the first
  decoder layer (token embeddings with image features merged in; for IDEFICS v1, which applies a
  gated cross-attention block *before* each decoder layer, it is the input of decoder layer 0,
  i.e. after the first cross-attention block, exactly as transformers reports it). ``"k"`` for
  0 < k < L is the output of decoder layer k; ``"L"`` is the final hidden state *after* the last
  norm (transformers ties ``hidden_states[-1]`` to ``last_hidden_state``).
* ``"vision.k"`` for k = 0..Lv: the vision tower, read with forward hooks because IDEFICS v1/2/3
  do not return vision hidden states. ``"vision.0"`` is the input of the first encoder layer
  (patch + position embeddings, after any pre-norm), ``"vision.k"`` the raw output of encoder
  layer k (no post-layernorm), which matches ``hidden_states`` wherever transformers returns them.

Integer layer indices refer to the language model (``-1`` is the last LM layer); ``"vision.-1"``
is the last vision layer. ``layers: all`` means the language-model hidden states ``0..L`` only
(what the study probed); the vision stack is read only when asked for (``vision.all``,
``vision.k``, ``vision.a:b``). Both stacks are found by structure
(:mod:`medprobe.models.stacks`), never by length. Pooling of LM layers (``pooling=``):

* ``last_token``: the last non-padding token (the generation position of the prompt);
* ``mean``: all non-padding tokens;
* ``image_mean``: the image token positions only (the model's image token id: LLaVA ``<image>``,
  Idefics2/3 ``<image>``, Qwen2-VL ``<|image_pad|>``). IDEFICS v1 has no image tokens carrying
  pixels -- images reach the text through cross-attention -- so there it is the mean over the
  image *slot* ``<fake_token_around_image><image><fake_token_around_image>`` (the tokens the image
  is attached to), at the requested LM layer;
* ``text_mean``: non-image, non-padding tokens.

A model that keeps several residual streams per token (hyper-connections: hidden states
``(batch, tokens, streams, width)`` in GLM-5-Next and Hunyuan V4-VL, already side by side in
Qwen4-exp) gives the streams side by side, ``streams * width`` features, for layers ``0..L-1``;
layer ``L`` (after the final norm, which merges them) has ``width``.

Vision layers are pooled with ``vision_pooling``: ``mean`` over patch tokens (CLS excluded, padded
patches excluded, all crops of an image together) or ``cls`` (towers with a CLS token only).

Only what is read is computed: a forward hook raises a private exception right after the deepest
requested layer, so later decoder layers and the LM head never run; when only vision layers are
requested the language model does not run at all. Hidden states are moved to the CPU as float32
before pooling, so a model spread over devices (``device_map``) gives the same features.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from medprobe.errors import ModelError
from medprobe.models.base import Backbone
from medprobe.models.imaging import to_pil
from medprobe.models.records import IDEFICS_PROMPT_STYLES
from medprobe.models.stack_discovery import language_model_of
from medprobe.models.stacks import VISION_POOLINGS, find_stacks, resolve_layer_spec
from medprobe.models.torch_hooks import run_hooked
from medprobe.models.vision_tokens import pool_vision, tower_call_recorder, tower_layout
from medprobe.progress import console
from medprobe.study_prompt import PROMPT_TEMPLATE, STUDY_FRAME, STUDY_QUESTION, STUDY_QUESTIONS

if TYPE_CHECKING:
    from medprobe.models.hf_loading import LoadedModel

#: The study's prompt for each image domain (the adjective varies with the kind of image).
DEFAULT_PROMPTS: dict[str, str] = {
    domain: PROMPT_TEMPLATE.format(domain=domain)
    for domain in ("radiological", "histological", "dermatological", "dermatoscopic", "ophthalmological", "fundus")
}
DEFAULT_PROMPT = DEFAULT_PROMPTS["radiological"]
LM_POOLINGS = ("last_token", "mean", "image_mean", "text_mean")
_IDEFICS_IMAGE_TOKENS = ("<image>", "<fake_token_around_image>")
_IDEFICS_END = "<end_of_utterance>"
#: processors that build their own prompts from a template and ignore the text (ShieldGemma 2's policies)
_PROMPT_IGNORING_PROCESSORS = ("ShieldGemma2Processor",)


def _check_takes_prompts(loaded: "LoadedModel", name: str) -> None:
    """A processor that writes its own prompts and ignores the text (ShieldGemma 2's policies) is refused."""
    if type(loaded.processor).__name__ in _PROMPT_IGNORING_PROCESSORS:
        raise ModelError(f"backbone {name!r}: {loaded.source!r} is a classifier whose processor "
                         f"({type(loaded.processor).__name__}) writes its own prompts and ignores the text it "
                         "is given; medprobe cannot show it an image with a prompt")


def _check_prompt_reaches_an_encoder(model: Any, name: str, source: str) -> None:
    """An encoder-decoder whose language stack is its decoder (T5Gemma 2, UDOP, Pix2Struct: ``get_decoder()``
    is a plain decoder, the prompt and images go to the encoder) is refused: its decoder needs decoder
    inputs and encoder states medprobe does not make. Florence-2's nested BART passes: its encoder,
    which reads the prompt, is the stack found."""
    if not getattr(model.config, "is_encoder_decoder", False) or not hasattr(model, "get_decoder"):
        return
    decoder = model.get_decoder()
    if decoder is not None and language_model_of(model) is decoder:
        raise ModelError(f"backbone {name!r}: {source!r} ({model.config.model_type}, {type(model).__name__}) is an "
                         "encoder-decoder whose language-model stack is its decoder, which needs decoder inputs and "
                         "the encoder's states that medprobe does not make; its prompt is read by the encoder, "
                         "whose layers medprobe does not address")


def _set_padding_side(tokenizer: Any, model: Any, padding_side: str | None, name: str) -> None:
    """``padding_side`` on the tokenizer. An encoder-decoder (Florence-2) pads on the right: its encoder
    numbers positions from the start of the row whatever ``position_ids`` say, so left padding would
    shift every shorter prompt's positions (right padding leaves real tokens where they are)."""
    if padding_side not in (None, "left", "right"):
        raise ModelError(f"backbone {name!r}: padding_side must be 'left' or 'right', not {padding_side!r}")
    if getattr(model.config, "is_encoder_decoder", False):
        if padding_side == "left":
            raise ModelError(f"backbone {name!r}: {type(model).__name__} is an encoder-decoder whose encoder "
                             "numbers positions from the start of each row: it pads on the right")
        padding_side = "right"
    if padding_side is not None:
        tokenizer.padding_side = padding_side


def _computes_own_positions(model: Any) -> bool:
    """Positions medprobe must not override: M-RoPE (``get_rope_index``), and position embeddings that
    count from the padding themselves with an offset (Kosmos-2's fairseq-style sinusoids, which
    0-based ``position_ids`` would shift)."""
    return hasattr(model.base_model, "get_rope_index") or any(
        hasattr(module, "create_position_ids_from_input_ids") for module in model.modules())


class HFVisionLanguageBackbone(Backbone):
    """Activations of a Hugging Face vision-language model given an image and a prompt."""

    default_batch_size = 4

    def __init__(
        self,
        loaded: "LoadedModel",
        *,
        name: str,
        prompt: str | None = None,
        domain: str = "radiological",
        noun: str | None = None,
        prompt_style: str = "chat",
        pooling: str = "last_token",
        vision_pooling: str = "mean",
        padding_side: str | None = None,
    ) -> None:
        import torch
        from transformers import IdeficsProcessor

        if pooling not in LM_POOLINGS:
            raise ModelError(f"backbone {name!r}: unknown pooling {pooling!r}; choose from {LM_POOLINGS}")
        if vision_pooling not in VISION_POOLINGS:
            raise ModelError(
                f"backbone {name!r}: unknown vision_pooling {vision_pooling!r}; choose from {VISION_POOLINGS}"
            )
        if prompt_style not in IDEFICS_PROMPT_STYLES:
            raise ModelError(f"backbone {name!r}: unknown prompt_style {prompt_style!r}; "
                             f"choose from {IDEFICS_PROMPT_STYLES}")
        if domain not in DEFAULT_PROMPTS:
            raise ModelError(f"backbone {name!r}: unknown domain {domain!r}; choose from {sorted(DEFAULT_PROMPTS)}")
        if prompt is None:
            if prompt_style.startswith("study"):
                prompt = STUDY_QUESTIONS[prompt_style].format(noun=noun or f"{domain} image")
            else:
                prompt = STUDY_QUESTION.format(noun=noun) if noun else DEFAULT_PROMPTS[domain]
        _check_takes_prompts(loaded, name)
        _check_prompt_reaches_an_encoder(loaded.model, name, loaded.source)
        self.name = name
        self.loaded = loaded
        self.model = loaded.model
        self.processor = loaded.processor
        self.tokenizer = self.processor.tokenizer
        #: the question asked with every image; :meth:`rendered_prompt` shows it inside ``prompt_style``
        self.prompt = prompt
        self.prompt_style = prompt_style
        self.pooling = pooling
        self.vision_pooling = vision_pooling
        self.provenance = loaded.source + (f"@{loaded.commit}" if loaded.commit else "")
        _set_padding_side(self.tokenizer, self.model, padding_side, name)
        #: why the prompt style differs from the one asked for (a processor without a chat template)
        self.prompt_style_note: str | None = None
        if isinstance(self.processor, IdeficsProcessor):
            self.style = "idefics"
        elif getattr(self.processor, "chat_template", None):
            self.style = "chat"
            if prompt_style != "chat":
                raise ModelError(
                    f"backbone {name!r}: prompt_style {prompt_style!r} is for IDEFICS v1 (the study's models); "
                    f"{loaded.source!r} is prompted through its chat template: use prompt_style: chat"
                )
        elif prompt_style in ("chat", "plain"):
            self.style = self.prompt_style = "plain"
            if prompt_style == "chat":
                self.prompt_style_note = (f"the processor of {loaded.source!r} ({type(self.processor).__name__}) "
                                          "has no "
                                          "chat template: prompt_style 'plain' (the image and the prompt as the "
                                          "processor takes them, no turns)")
                console.print(f"backbone {name!r}: {self.prompt_style_note}", highlight=False)
        else:
            raise ModelError(f"backbone {name!r}: prompt_style {prompt_style!r} is for IDEFICS v1; {loaded.source!r} "
                             "has no chat template and takes prompt_style 'plain'")

        self.stacks = find_stacks(self.model, name)
        self._vision = self.stacks.vision_module
        #: ``{layer: (stack, k)}``, vision stacks first: the declaration layer_names/layer_stacks read
        self._hidden_states = self.stacks.hidden_states()
        self._layout = tower_layout(self._vision)
        if vision_pooling == "cls" and self.stacks.has_vision and not self._layout.has_cls:
            raise ModelError(
                f"backbone {name!r}: the vision tower of {loaded.source!r} has no CLS token; use vision_pooling='mean'"
            )
        self._image_token_ids = self._find_image_token_ids()
        if not self._image_token_ids and pooling in ("image_mean", "text_mean"):
            raise ModelError(f"backbone {name!r}: cannot find the image token ids (image_token_id) of "
                             f"{loaded.source!r}, which pooling {pooling!r} needs")
        self._computes_own_positions = self.style == "idefics" or _computes_own_positions(self.model)
        self._torch = torch
        self._rendered: tuple[str, list[int]] | None = None
        self._plain_prefix: str | None = None

    # ------------------------------------------------------------------ model anatomy
    def _find_image_token_ids(self) -> list[int]:
        """The token ids image features replace (IDEFICS v1: its image slot); empty if the config names none."""
        if self.style == "idefics":
            ids = [self.tokenizer.convert_tokens_to_ids(t) for t in _IDEFICS_IMAGE_TOKENS]
        else:
            config = self.model.config
            ids = [getattr(config, "image_token_id", None), getattr(config, "image_token_index", None)]
        return sorted({int(i) for i in ids if isinstance(i, int) and i != self.tokenizer.unk_token_id})

    @property
    def num_lm_layers(self) -> int:
        return self.stacks.num_lm_layers

    @property
    def num_vision_layers(self) -> int:
        return self.stacks.num_vision_layers

    # ------------------------------------------------------------------ Backbone API
    def layer_names(self) -> list[str]:
        """Vision tower first (it feeds the LM), then the language model: shallow to deep."""
        return list(self._hidden_states)

    def layer_stacks(self) -> dict[str, str]:
        """Language-model layers form the ``"lm"`` stack, ``vision.k`` the ``"vision"`` stack."""
        return {layer: stack for layer, (stack, _) in self._hidden_states.items()}

    def default_layers(self) -> list[str]:
        return [str(self.num_lm_layers)]

    def resolve_layers(self, spec: Any) -> list[str]:
        """``all`` = LM hidden states; integers and ``"a:b"`` slices index the LM; ``"vision.k"`` /
        ``"vision.a:b"`` / ``"vision.all"`` the tower (:func:`~medprobe.models.stacks.resolve_layer_spec`)."""
        return resolve_layer_spec(self.name, spec, num_lm=self.num_lm_layers,
                                  num_vision=self.num_vision_layers if self.stacks.has_vision else None,
                                  extra=self.stacks.extra_names(), default=self.default_layers())

    def rendered_prompt(self, prompt: str | None = None) -> str:
        """The text the model sees for one image (before any image-token expansion)."""
        prompt = self.prompt if prompt is None else prompt
        if self.style == "chat":
            return self.processor.apply_chat_template(self._messages(prompt), add_generation_prompt=True,
                                                      tokenize=False)
        if self.style == "plain":
            return self._plain_text(prompt)
        return self.tokenizer.decode(self._idefics_prompt_ids(prompt))

    def prompt_token_ids(self, prompt: str | None = None) -> list[int]:
        """Token ids of :meth:`rendered_prompt` (image placeholders not expanded for chat models)."""
        prompt = self.prompt if prompt is None else prompt
        if self.style in ("chat", "plain"):
            text = self.rendered_prompt(prompt)
            bos = self.tokenizer.bos_token
            return list(self.tokenizer(text, add_special_tokens=not (bos and text.startswith(bos)))["input_ids"])
        return self._idefics_prompt_ids(prompt)

    def _idefics_prompt_ids(self, prompt: str) -> list[int]:
        blank = to_pil(np.zeros((8, 8, 3), np.float32))
        encoded = self.processor(text=[self._idefics_sequence(blank, prompt)], add_end_of_utterance_token=False,
                                 return_tensors="pt")
        return [int(i) for i in encoded["input_ids"][0]]

    def fingerprint(self) -> dict[str, Any]:
        import transformers

        if self._rendered is None:
            self._rendered = (self.rendered_prompt(), self.prompt_token_ids())
        return {
            "backbone": self.name,
            **self.loaded.identity(),
            "prompt": self.prompt,
            "rendered_prompt": self._rendered[0],
            "prompt_token_ids": self._rendered[1],
            "prompt_style": self.prompt_style,
            **({"prompt_style_note": self.prompt_style_note} if self.prompt_style_note else {}),
            "pooling": self.pooling,
            "vision_pooling": self.vision_pooling,
            "image_input": "float [0,1] -> round(x*255) uint8 RGB PIL -> model's own processor",
            "transformers": transformers.__version__,
        }

    def extract(self, images: Sequence[np.ndarray], layers: Sequence[str]) -> dict[str, np.ndarray]:
        return self.extract_with_prompts(images, [self.prompt] * len(images), layers)

    def extract_with_prompts(
        self, images: Sequence[np.ndarray], prompts: Sequence[str], layers: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Like :meth:`extract`, with one prompt per image (batched with padding)."""
        if len(images) != len(prompts):
            raise ModelError(f"backbone {self.name!r}: {len(images)} images but {len(prompts)} prompts")
        for layer in layers:
            if layer not in self._hidden_states:
                self.resolve_layers(layer)  # raises with the list of valid layers
        if not images or not layers:
            return {layer: np.zeros((len(images), 0), np.float32) for layer in layers}
        keys = {layer: self._hidden_states[layer] for layer in layers}
        inputs = self.encode([to_pil(image) for image in images], prompts)
        if inputs["input_ids"].shape[0] != len(images):  # e.g. ShieldGemma 2: one row per image and policy
            raise ModelError(f"backbone {self.name!r}: the processor made {inputs['input_ids'].shape[0]} prompts "
                             f"for {len(images)} images; medprobe needs one prompt per image")
        captured, tower_kwargs = self._run(inputs, list(dict.fromkeys(keys.values())))
        out: dict[str, np.ndarray] = {}
        for layer in layers:
            if keys[layer][0] == "lm":
                pooled = self._pool_lm(captured[keys[layer]], inputs)
            else:
                pooled = pool_vision(captured[keys[layer]], inputs, tower_kwargs, len(images),
                                     pooling=self.vision_pooling, layout=self._layout,
                                     image_token_ids=self._image_token_ids, name=self.name)
            out[layer] = pooled.numpy().astype(np.float32)
        return out

    def close(self) -> None:
        import gc

        self.model = self.loaded.model = None  # type: ignore[assignment]
        gc.collect()
        if self._torch.cuda.is_available():
            self._torch.cuda.empty_cache()

    # ------------------------------------------------------------------ inputs
    def _messages(self, prompt: str) -> list[dict[str, Any]]:
        return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]

    def _plain_text(self, prompt: str) -> str:
        """``prompt`` as a processor without a chat template takes it: as is when the processor puts
        the image tokens in itself (BLIP-2, PaliGemma), else after the processor's image token."""
        if self._plain_prefix is None:
            self._plain_prefix = ""
            token = getattr(self.processor, "image_token", None)
            if self._image_token_ids and isinstance(token, str) and token:
                blank = to_pil(np.zeros((8, 8, 3), np.float32))
                try:
                    ids = self.processor(images=[blank], text=[prompt], return_tensors="pt")["input_ids"]
                    inserted = bool(self._torch.isin(ids, self._torch.tensor(self._image_token_ids)).any())
                except (ValueError, TypeError):  # processors that insist on a placeholder in the text
                    inserted = False
                self._plain_prefix = "" if inserted else token
        return self._plain_prefix + prompt

    def _idefics_sequence(self, image: Any, prompt: str) -> list[Any]:
        """The processor's interleaved input for one image, in :attr:`prompt_style`."""
        if self.prompt_style.startswith("study"):
            return [image, STUDY_FRAME.format(question=prompt)]
        if self.prompt_style == "plain":
            return [image, prompt]
        return ["User:", image, prompt + _IDEFICS_END, "\nAssistant:"]

    def encode(self, images: Sequence[Any], prompts: Sequence[str]) -> Any:
        """Processor inputs for (PIL image, prompt) pairs, padded on the tokenizer's side, on CPU."""
        if self.style == "idefics":
            sequences = [self._idefics_sequence(image, prompt) for image, prompt in zip(images, prompts)]
            return self.processor(text=sequences, add_end_of_utterance_token=False, padding=True, return_tensors="pt")
        texts = [self.rendered_prompt(prompt) for prompt in prompts]
        kwargs: dict[str, Any] = {"padding": True, "return_tensors": "pt"}
        if "mm_token_type_ids" in getattr(self.processor, "model_input_names", ()):
            kwargs["return_mm_token_type_ids"] = True  # the model needs them (M-RoPE); Cosmos3's processor omits them
        bos = self.tokenizer.bos_token
        if bos and all(text.startswith(bos) for text in texts):
            kwargs["add_special_tokens"] = False  # the template wrote BOS already
        batched = [[image] for image in images] if self.style == "chat" else list(images)
        return self.processor(images=batched, text=texts, **kwargs)

    def _input_device(self) -> Any:
        """Where inputs go: the first accelerator in a device map (accelerate's hooks move them
        on from there), else the embedding's device; offloaded ("disk"/meta) weights mean CPU."""
        device_map = getattr(self.model, "hf_device_map", None)
        if device_map:
            for device in device_map.values():
                if device not in ("cpu", "disk"):
                    return self._torch.device(f"cuda:{device}" if isinstance(device, int) else device)
            return self._torch.device("cpu")
        device = self.model.get_input_embeddings().weight.device
        return self._torch.device("cpu") if device.type == "meta" else device

    def _model_inputs(self, inputs: Any) -> dict[str, Any]:
        torch = self._torch
        device, dtype = self._input_device(), self.model.dtype
        prepared = {
            key: (value.to(device=device, dtype=dtype) if torch.is_floating_point(value) else value.to(device))
            for key, value in inputs.items() if isinstance(value, torch.Tensor)
        }
        if not self._computes_own_positions and "attention_mask" in prepared:
            # positions count real tokens only (as generate() does): decoders default to 0..T-1, which
            # shifts left-padded rows -- harmless under RoPE, wrong for absolute position embeddings
            mask = prepared["attention_mask"].long()
            prepared["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        return prepared

    # ------------------------------------------------------------------ forward with hooks
    def _run(self, inputs: Any, keys: list[tuple[str, int]]) -> tuple[dict[tuple[str, int], Any], dict[str, Any]]:
        """One forward pass that records hidden states ``keys`` and stops right after the deepest,
        plus the vision encoder's call arguments that say how its tokens map to images."""
        tower_kwargs, record_tower = tower_call_recorder(self._vision)
        model_inputs = self._model_inputs(inputs)
        captured = run_hooked(self.stacks, keys,
                              lambda: self.model(**model_inputs, use_cache=False, return_dict=True),
                              name=self.name, on_tower=record_tower)
        return captured, tower_kwargs

    # ------------------------------------------------------------------ pooling
    def _pool_lm(self, hidden: Any, inputs: Any) -> Any:
        torch = self._torch
        input_ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
        if hidden.shape[:2] != input_ids.shape:
            raise ModelError(f"backbone {self.name!r}: hidden states {tuple(hidden.shape)} do not line up with "
                             f"the input ids {tuple(input_ids.shape)}")
        hidden = hidden.flatten(2)  # several residual streams per token (GLM-5-Next, Hunyuan V4): side by side
        image = torch.isin(input_ids, torch.tensor(self._image_token_ids)) & mask
        rows = []
        for b in range(hidden.shape[0]):
            if self.pooling == "last_token":
                rows.append(hidden[b, int(mask[b].nonzero().max())])
                continue
            select = {"mean": mask[b], "image_mean": image[b], "text_mean": mask[b] & ~image[b]}[self.pooling]
            if not bool(select.any()):
                raise ModelError(f"backbone {self.name!r}: pooling {self.pooling!r} found no tokens to average "
                                 f"in sample {b} of the batch")
            rows.append(hidden[b][select].mean(dim=0))  # indexing, not masking: padded rows may hold NaN
        return torch.stack(rows)
