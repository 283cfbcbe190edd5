"""Shared pieces of the tiny model + processor savers (:mod:`medprobe.testing.tiny_processors`).

A saver builds a family's processor with a tiny tokenizer and a small image size, then a model
whose config agrees with it (:func:`shrunk_config`: the family's shrunk default config with the
vocabulary, image token ids and image geometry changed), and saves both (:func:`save_pair`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medprobe.testing.tiny_families import tiny_config


def chat_template(image: str) -> str:
    """A chat template that writes ``image`` where a message's image goes (medprobe sends one user turn)."""
    return ("{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}{% if c['type'] == 'image' %}"
            + image + "{% else %}{{ c['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
            "{% if add_generation_prompt %}assistant:{% endif %}")


def _update(target: dict, changes: dict) -> dict:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _update(target[key], value)
        else:
            target[key] = value
    return target


def _cut_layer_types(config: dict) -> None:
    """Per-layer lists kept from the full-size default (``layer_types``, ``mlp_layer_types``) cut to the
    shrunk depth."""
    depth = config.get("num_hidden_layers")
    for key, value in list(config.items()):
        if str(key).endswith("layer_types") and isinstance(value, list) and isinstance(depth, int):
            config[key] = value[:depth]
    for value in config.values():
        if isinstance(value, dict):
            _cut_layer_types(value)


def shrunk_config(model_type: str, **changes: Any) -> Any:
    """The shrunk default config of ``model_type`` with ``changes`` (nested dicts update sub-configs),
    rebuilt so the config's own derived fields follow the changes."""
    base = tiny_config(model_type)
    values = _update(base.to_dict(), changes)
    _cut_layer_types(values)
    return type(base).from_dict(values)


def save_pair(directory: str | Path, config: Any, *parts: Any, seed: int = 0) -> Path:
    """A random model of ``config`` (seeded) and its processor ``parts`` (a processor, or a tokenizer
    and an image processor saved side by side), saved together into ``directory``."""
    from transformers import AutoModelForImageTextToText

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    AutoModelForImageTextToText.from_config(config).eval().save_pretrained(path)
    for part in parts:
        part.save_pretrained(path)
    return path


def text_fields(tokenizer: Any, **more: Any) -> dict[str, Any]:
    """Text-config fields that agree with ``tokenizer`` (vocabulary size, special token ids), plus ``more``."""
    return {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, **more}
