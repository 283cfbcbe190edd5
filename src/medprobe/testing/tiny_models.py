"""Tiny, randomly initialised Hugging Face models of each family medprobe supports, saved to disk.

Used by the test suite and by ``medprobe bench`` (which needs a deep-but-small VLM). Real weights
cannot be downloaded offline, so tests build each architecture from a config object,
``save_pretrained`` it (safetensors) together with its processor into a directory, and then load
it back through exactly the code path a user's local copy of real weights takes.

Every ``build_tiny_<family>(directory) -> Path`` writes one model + processor into ``directory``
(created if needed) and returns it. The models are deterministic (``seed``) and small enough that
building one takes well under a second on a CPU. The tokenizer is an offline word-level vocabulary
(:func:`tiny_tokenizer`) that knows the words of medprobe's default prompts, so prompts tokenise to
real ids rather than ``<unk>``.

Layer counts are chosen so early-stopping tests have something to skip: 3 language-model layers
and 2 vision layers by default. ``lm_layers`` / ``vision_layers`` change them: the *equal*-depth
models (:func:`build_equal_depth`) are the regression fixture for stacks told apart by length,
which picked IDEFICS-9B's 32-layer vision tower instead of its 32-layer decoder.

Nothing here touches the network or the process environment: the models are built from config
objects and tokenizers made in memory, and read back from local folders, which never consult the hub.
Each family of :mod:`medprobe.models.records` names its builder (``ModelFamily.tiny``), so
:data:`BUILDERS` is read from the records and a family without a tiny model shows in the tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch

from medprobe.models.records import FAMILIES
from medprobe.testing.tiny_image_encoders import *  # noqa: F403 -- build_tiny_<encoder>, found by BUILDERS below

# lower-cased words the default prompts, chat templates and test prompts use
WORDS = (
    "a an the of in on with and is are no yes what can you see this that image photo scan ct mri "
    "x-ray chest brain lung radiological histological dermatological dermatoscopic ophthalmological "
    "fundus lesion tumor nodule normal abnormal left right patient shows there describe user "
    "assistant system question answer picture seen skin eye knee : . , ? !"
).split()

LM_LAYERS = 3
VISION_LAYERS = 2


def tiny_tokenizer(
    extra_special: tuple[str, ...] = (),
    *,
    bos: str = "<s>",
    eos: str = "</s>",
    pad: str = "<pad>",
    unk: str = "<unk>",
    add_bos: bool = True,
    add_eos: bool = False,
    named: dict[str, str] | None = None,
):
    """A fast word-level tokenizer built offline with ``tokenizers`` (lower-cases its input).

    Special tokens come first (``pad`` gets id 0 unless it equals another special), then
    ``extra_special``, then :data:`WORDS`. With ``add_bos`` every encoding starts with ``bos``,
    like LLaMA-family tokenizers; ``add_eos`` also ends it with ``eos``, as CLIP's text tower needs
    (it pools the hidden state at the end token). ``named`` adds special tokens the processors read
    as tokenizer attributes (``{"image_token": "<image>"}`` gives ``tokenizer.image_token`` and
    ``tokenizer.image_token_id``, saved with the tokenizer).
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    named = dict(named or {})
    extra_special = tuple(dict.fromkeys([*extra_special, *named.values()]))
    specials = list(dict.fromkeys([pad, unk, bos, eos, *extra_special]))
    words = [w for w in dict.fromkeys(WORDS) if w not in specials]
    vocab = {token: i for i, token in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    if add_bos or add_eos:
        start, end = (f"{bos} " if add_bos else ""), (f" {eos}" if add_eos else "")
        used = [t for t, on in ((bos, add_bos), (eos, add_eos)) if on]
        backend.post_processor = processors.TemplateProcessing(
            single=f"{start}$A{end}", pair=f"{start}$A{end} {start}$B{end}",
            special_tokens=[(t, vocab[t]) for t in dict.fromkeys(used)],
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token=unk,
        additional_special_tokens=[t for t in extra_special if t not in (pad, unk, bos, eos)],
        **named,  # ``<name>_token`` keywords become named special tokens
    )


def _ready(directory: str | Path) -> Path:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_tiny_idefics(directory: str | Path, *, seed: int = 0, lm_layers: int = LM_LAYERS,
                       vision_layers: int = VISION_LAYERS) -> Path:
    """IDEFICS v1 (``IdeficsForVisionText2Text``, the Flamingo design of idefics-9b/80b) with a
    perceiver resampler and a gated cross-attention block before every decoder layer."""
    from transformers import IdeficsConfig, IdeficsForVisionText2Text, IdeficsImageProcessor, IdeficsProcessor

    path = _ready(directory)
    tok = tiny_tokenizer(("<fake_token_around_image>", "<image>", "<end_of_utterance>"))
    image_processor = IdeficsImageProcessor(
        image_size=32, image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711]
    )
    processor = IdeficsProcessor(image_processor=image_processor, tokenizer=tok, image_size=32)
    config = IdeficsConfig(
        vocab_size=len(tok), additional_vocab_size=0, hidden_size=32, intermediate_size=64,
        num_hidden_layers=lm_layers, num_attention_heads=4, max_position_embeddings=128,
        cross_layer_interval=1, use_resampler=True,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        vision_config=dict(embed_dim=16, image_size=32, patch_size=8, intermediate_size=32,
                           num_hidden_layers=vision_layers, num_attention_heads=2),
        perceiver_config=dict(use_resampler=True, resampler_n_latents=4, resampler_depth=1,
                              resampler_n_heads=2, resampler_head_dim=8),
    )
    torch.manual_seed(seed)
    model = IdeficsForVisionText2Text(config).eval()
    # random init leaves the gates (alpha) at zero, which would hide the image from the text
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "alpha_" in name:
                parameter.fill_(0.5)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def build_tiny_clip(directory: str | Path, *, seed: int = 0) -> Path:
    """``CLIPModel`` (the architecture of openai/clip-vit-base-patch32 and vinid/plip)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    path = _ready(directory)
    tok = tiny_tokenizer(bos="<|startoftext|>", eos="<|endoftext|>", pad="<|endoftext|>", add_eos=True)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_center_crop=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tok)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=32,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=VISION_LAYERS, num_attention_heads=4),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def build_tiny_llava(directory: str | Path, *, seed: int = 0, lm_layers: int = LM_LAYERS, hidden_size: int = 32,
                     image_size: int = 32, vision_layers: int = VISION_LAYERS) -> Path:
    r"""LLaVA-1.5 layout: CLIP vision tower (feature layer -2), MLP projector, LLaMA decoder, and a
    ``USER: <image>\n... ASSISTANT:`` chat template. ``lm_layers`` / ``hidden_size`` /
    ``image_size`` make deeper, wider models for benchmarks."""
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    path = _ready(directory)
    tok = tiny_tokenizer(("<image>",))
    template = (
        "{% for m in messages %}{{ m['role'] | upper }}: {% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} "
        "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": image_size},
                                           crop_size={"height": image_size, "width": image_size}),
        tokenizer=tok, patch_size=8, vision_feature_select_strategy="default", image_token="<image>",
        num_additional_image_tokens=1, chat_template=template,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(image_size=image_size, patch_size=8, hidden_size=16, intermediate_size=32,
                                       num_hidden_layers=vision_layers, num_attention_heads=2, projection_dim=16),
        text_config=LlamaConfig(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                                num_hidden_layers=lm_layers, num_attention_heads=4, num_key_value_heads=2,
                                max_position_embeddings=128, pad_token_id=tok.pad_token_id,
                                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id),
        image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
        vision_feature_select_strategy="default", projector_hidden_act="gelu",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


_IDEFICS3_SPECIALS = ("<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>",
                      *[f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)])
_IDEFICS_CHAT = (
    "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}:{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def build_tiny_idefics2(directory: str | Path, *, seed: int = 0, lm_layers: int = LM_LAYERS,
                        vision_layers: int = VISION_LAYERS) -> Path:
    """Idefics2: SigLIP-style vision tower (no CLS), perceiver connector, Mistral decoder.

    Images keep their aspect ratio (edges between 16 and 48 px), so a batch of differently shaped
    images is padded per pixel and some vision patches are padding, as with the real model."""
    from transformers import (Idefics2Config, Idefics2ForConditionalGeneration, Idefics2ImageProcessor,
                              Idefics2Processor)

    path = _ready(directory)
    tok = tiny_tokenizer(("<fake_token_around_image>", "<image>", "<end_of_utterance>", "<|im_start|>"))
    latents = 4
    processor = Idefics2Processor(
        image_processor=Idefics2ImageProcessor(do_image_splitting=False,
                                               size={"shortest_edge": 16, "longest_edge": 48}),
        tokenizer=tok, image_seq_len=latents, chat_template=_IDEFICS_CHAT,
    )
    config = Idefics2Config(
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=vision_layers,
                           num_attention_heads=2, image_size=32, patch_size=8),
        perceiver_config=dict(hidden_size=32, resampler_n_latents=latents, resampler_depth=1,
                              resampler_n_heads=2, resampler_head_dim=8, num_key_value_heads=1),
        text_config=dict(model_type="mistral", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=lm_layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id),
    )
    torch.manual_seed(seed)
    model = Idefics2ForConditionalGeneration(config).eval()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def build_tiny_idefics3(directory: str | Path, *, seed: int = 0, image_splitting: bool = False,
                        lm_layers: int = LM_LAYERS, vision_layers: int = VISION_LAYERS) -> Path:
    """Idefics3 (the SmolVLM layout): SigLIP-style tower, pixel-shuffle connector, LLaMA decoder.

    With ``image_splitting`` the processor cuts each image into a grid of crops plus a global view,
    so images of different sizes give prompts of different lengths (as real SmolVLM does)."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor, Idefics3Processor

    path = _ready(directory)
    size, patch, scale = 32, 8, 2
    tok = tiny_tokenizer((*_IDEFICS3_SPECIALS, "<|im_start|>"))
    image_processor = Idefics3ImageProcessor(
        do_image_splitting=image_splitting, size={"longest_edge": 2 * size if image_splitting else size},
        max_image_size={"longest_edge": size},
    )
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tok,
                                  image_seq_len=(size // patch) ** 2 // scale**2, chat_template=_IDEFICS_CHAT)
    config = Idefics3Config(
        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=scale,
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=vision_layers,
                           num_attention_heads=2, image_size=size, patch_size=patch),
        text_config=dict(model_type="llama", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=lm_layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id),
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


QWEN2VL_CHAT = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_qwen2vl(directory: str | Path, *, seed: int = 0, lm_layers: int = LM_LAYERS,
                       vision_layers: int = VISION_LAYERS) -> Path:
    """Qwen2-VL: dynamic-resolution vision tower (patches 14 px, 2x2 merge), M-RoPE decoder.

    ``Qwen2VLProcessor`` cannot be built without torchvision (its video processor), so the
    tokenizer (with the chat template) and the image processor are saved separately, which is
    also what a torchvision-free load of a real checkpoint sees."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor

    path = _ready(directory)
    specials = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<|im_start|>", "<|im_end|>")
    tok = tiny_tokenizer(specials, bos="<|endoftext|>", eos="<|im_end|>", pad="<|endoftext|>", add_bos=False)
    tok.chat_template = QWEN2VL_CHAT
    image_processor = Qwen2VLImageProcessor(min_pixels=28 * 28, max_pixels=84 * 84, patch_size=14, merge_size=2,
                                            temporal_patch_size=2)
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    config = Qwen2VLConfig(
        vision_config=dict(depth=vision_layers, embed_dim=16, hidden_size=32, num_heads=2, mlp_ratio=2,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=lm_layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]},
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    image_processor.save_pretrained(path)
    return path


#: ``{key: build_tiny_<key>}`` for every recorded family with a tiny model, in the records' order
BUILDERS: dict[str, Callable[..., Path]] = {
    family.tiny: globals()[f"build_tiny_{family.tiny}"] for family in FAMILIES.values() if family.tiny
}


def build_equal_depth(root: str | Path, depth: int = 3) -> dict[str, Path]:
    """Every VLM family with ``depth`` language-model *and* ``depth`` vision layers, into
    ``root/<family>``; returns ``{family: directory}``."""
    root = Path(root)
    return {family: BUILDERS[family](root / family, lm_layers=depth, vision_layers=depth)
            for family in BUILDERS if _is_vlm(family)}


def _is_vlm(key: str) -> bool:
    """A tiny model with a language model (not CLIP, not an image encoder)."""
    return any(family.tiny == key and family.language_model for family in FAMILIES.values())


def build_all(root: str | Path) -> dict[str, Path]:
    """Build every family into ``root/<family>``; returns ``{family: directory}``."""
    root = Path(root)
    return {family: builder(root / family) for family, builder in BUILDERS.items()}


def saved_config(directory: str | Path) -> dict:
    """The saved ``config.json`` of a tiny model (to read token ids, layer counts)."""
    return json.loads((Path(directory) / "config.json").read_text())
