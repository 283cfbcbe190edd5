#!/usr/bin/env bash
# GPU check for paper-sized models (issue 15.5): random weights, no downloads, < 8 minutes on one H200.
#
# Builds, from the real architecture numbers and with random bf16 weights:
#   * an IDEFICS-9B-sized model: LLaMA-7B decoder (32 layers, hidden 4096, 32 heads, MLP 11008,
#     vocab 32000) + ViT-H/14 (32 layers, width 1280, 16 heads, MLP 5120, 224 px) + perceiver
#     resampler (64 latents, depth 6) + gated cross-attention every 4 layers;
#   * an IDEFICS-80B-shaped one: LLaMA-65B width (hidden 8192, 64 heads, MLP 22016) with as many
#     of its 80 decoder layers as fit in 60 % of the free GPU memory (printed), same vision tower;
# and prints, for each: extraction images/s at LM layers 16 and 32 through medprobe's own backbone
# (batched, forward stopped after the layer) against a study-style loop (batch 1, every hidden
# state kept), peak GPU memory, then the time of a 6-C multi-label probe grid (54 findings,
# width 8192) on the GPU, path vs batched, and of 4 layers x 3 Cs fitted in one solver pass
# (probe.layers_per_pass: 4) against one pass per layer.
#
#   benchmarks/gpu_check.sh           # on the GPU machine
#   benchmarks/gpu_check.sh --tiny    # dry run: tiny sizes, CPU is fine (tests/bench/test_gpu_check.py)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:-$PWD/src}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec timeout "${GPU_CHECK_TIMEOUT:-470}" python - "$@" <<'PY'
import argparse, gc, json, sys, time
from pathlib import Path

import numpy as np
import torch

parser = argparse.ArgumentParser()
parser.add_argument("--tiny", action="store_true", help="tiny sizes (a dry run that works on a CPU)")
args = parser.parse_args()
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if device.type != "cuda" and not args.tiny:
    sys.exit("gpu_check: torch sees no CUDA GPU; use --tiny for a CPU dry run")
started_all = time.perf_counter()

from transformers import IdeficsConfig, IdeficsForVisionText2Text, IdeficsImageProcessor, IdeficsProcessor
from medprobe.models.hf import HFVisionLanguageBackbone
from medprobe.models.hf_loading import LoadedModel
from medprobe.testing.tiny_models import tiny_tokenizer
from medprobe.probes import LinearProbe

if args.tiny:
    VISION = dict(embed_dim=32, image_size=32, patch_size=8, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2)
    PERCEIVER = dict(use_resampler=True, resampler_n_latents=4, resampler_depth=1, resampler_n_heads=2,
                     resampler_head_dim=8)
    MODELS = {"idefics-9b-sized": dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, layers=4),
              "idefics-80b-shaped": dict(hidden_size=128, intermediate_size=256, num_attention_heads=8, layers=4)}
    PROBE = dict(n=600, width=64, findings=6)
    LAYERS, BATCH, STUDY_IMAGES, MEDPROBE_IMAGES = (2, 4), 4, 4, 8
else:
    VISION = dict(embed_dim=1280, image_size=224, patch_size=14, intermediate_size=5120, num_hidden_layers=32,
                  num_attention_heads=16)
    PERCEIVER = dict(use_resampler=True, resampler_n_latents=64, resampler_depth=6, resampler_n_heads=16,
                     resampler_head_dim=96)
    MODELS = {"idefics-9b-sized": dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, layers=32),
              "idefics-80b-shaped": dict(hidden_size=8192, intermediate_size=22016, num_attention_heads=64, layers=80)}
    PROBE = dict(n=20_000, width=8192, findings=54)
    LAYERS, BATCH, STUDY_IMAGES, MEDPROBE_IMAGES = (16, 32), 16, 16, 64


def report(**fields):
    print(json.dumps(fields), flush=True)


def gpu_gib(kind="max_memory_allocated"):
    return round(getattr(torch.cuda, kind)() / 2**30, 2) if device.type == "cuda" else None


def layers_that_fit(spec):
    """Decoder layers of this width that fit in 60 % of the free memory (bf16), at most spec['layers']."""
    if device.type != "cuda":
        return spec["layers"]
    h, m = spec["hidden_size"], spec["intermediate_size"]
    per_layer = 2 * (4 * h * h + 3 * h * m)            # self-attention + SwiGLU MLP, bf16
    per_layer += 2 * (4 * h * h + 3 * h * m) / 4        # a gated cross-attention block every 4 layers
    fixed = 2 * (32000 * h * 2 + 32 * (4 * 1280 ** 2 + 2 * 1280 * 5120))  # embeddings, head, vision tower
    free = torch.cuda.mem_get_info()[0]
    return int(max(1, min(spec["layers"], (0.6 * free - fixed) // per_layer)))


tokenizer = tiny_tokenizer(("<fake_token_around_image>", "<image>", "<end_of_utterance>"))
image_processor = IdeficsImageProcessor(image_size=VISION["image_size"], image_mean=[0.48145466, 0.4578275, 0.40821073],
                                        image_std=[0.26862954, 0.26130258, 0.27577711])
processor = IdeficsProcessor(image_processor=image_processor, tokenizer=tokenizer, image_size=VISION["image_size"])
rng = np.random.default_rng(0)
size = VISION["image_size"]
images = [rng.random((size, size, 3), dtype=np.float32) for _ in range(max(MEDPROBE_IMAGES, STUDY_IMAGES))]

for model_name, spec in MODELS.items():
    n_layers = layers_that_fit(spec)
    config = IdeficsConfig(
        vocab_size=32000 if not args.tiny else len(tokenizer), additional_vocab_size=0,
        hidden_size=spec["hidden_size"], intermediate_size=spec["intermediate_size"],
        num_hidden_layers=n_layers, num_attention_heads=spec["num_attention_heads"], max_position_embeddings=2048,
        cross_layer_interval=4 if not args.tiny else 1, use_resampler=True,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        vision_config=VISION, perceiver_config=PERCEIVER,
    )
    built = time.perf_counter()
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = IdeficsForVisionText2Text(config).eval()
    finally:
        torch.set_default_dtype(previous)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "alpha_" in name:
                parameter.fill_(0.5)  # random init leaves the gates at 0, hiding the image
    n_params = sum(p.numel() for p in model.parameters())
    report(model=model_name, decoder_layers=n_layers, of_layers=spec["layers"], parameters_billion=round(n_params / 1e9, 2),
           build_s=round(time.perf_counter() - built, 1), gpu_allocated_gib=gpu_gib("memory_allocated"))
    loaded = LoadedModel(model=model, processor=processor, source=f"random-init {model_name}", directory=Path("."),
                         revision=None, commit=None, dtype=str(dtype).replace("torch.", ""), quantization=None)
    backbone = HFVisionLanguageBackbone(loaded, name=model_name)

    # study-style: one image at a time, every hidden state returned and kept (on the host)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    kept = []
    with torch.no_grad():
        for i in range(STUDY_IMAGES + 1):
            if i == 1:
                t0 = time.perf_counter()  # the first image warms up
            inputs = backbone._model_inputs(backbone.encode([images[i % len(images)]], [backbone.prompt]))
            output = model(**inputs, output_hidden_states=True)
            kept.append([h[:, -1].float().cpu() for h in output.hidden_states])
        if device.type == "cuda":
            torch.cuda.synchronize()
    study_rate = STUDY_IMAGES / (time.perf_counter() - t0)
    report(model=model_name, way="study-style (batch 1, all hidden states)", images_per_s=round(study_rate, 2),
           hidden_states=len(kept[0]), peak_gpu_gib=gpu_gib())
    del kept, output

    for layer in LAYERS:
        if layer > n_layers:
            report(model=model_name, layer=layer, skipped=f"only {n_layers} decoder layers fit")
            continue
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        backbone.extract(images[:BATCH], [str(layer)])  # warm-up
        t0 = time.perf_counter()
        for start in range(0, MEDPROBE_IMAGES, BATCH):
            features = backbone.extract(images[start:start + BATCH], [str(layer)])
        rate = MEDPROBE_IMAGES / (time.perf_counter() - t0)
        report(model=model_name, way=f"medprobe (batch {BATCH}, stops after layer {layer})", layer=layer,
               images_per_s=round(rate, 2), ratio_vs_study=round(rate / study_rate, 1),
               width=int(features[str(layer)].shape[1]), peak_gpu_gib=gpu_gib())
    backbone.close()
    del backbone, loaded, model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

# the probe grid: one layer of a T7-like task on the GPU, 6 Cs, path vs batched
X = rng.standard_normal((PROBE["n"], PROBE["width"]), dtype=np.float32)
latent = X[:, :16] @ rng.standard_normal((16, PROBE["findings"])).astype(np.float32)
Y = (latent + rng.standard_normal(latent.shape, dtype=np.float32) > np.quantile(latent, 0.9, axis=0)).astype(np.int64)
for grid in ("path", "batched"):
    t0 = time.perf_counter()
    probes = LinearProbe("multilabel", device=str(device), grid=grid).fit_path(X, Y, [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0])
    report(probe_grid=grid, n=PROBE["n"], width=PROBE["width"], findings=PROBE["findings"], Cs=6,
           seconds=round(time.perf_counter() - t0, 2), unconverged_heads=sum(len(p.unconverged_heads_) for p in probes),
           device=str(device))
# several layers of that task in one solver pass (probe.layers_per_pass) against one pass per layer
layers = [X] + [(0.8 * X + 0.6 * rng.standard_normal(X.shape, dtype=np.float32)) for _ in range(3)]
Cs = [1e-3, 1e-2, 1e-1]
timings = {}
for way in ("one layer per pass", "4 layers per pass"):
    t0 = time.perf_counter()
    template = LinearProbe("multilabel", device=str(device))
    fitted = ([template.fit_path(features, Y, Cs) for features in layers] if way == "one layer per pass"
              else template.fit_layers_path(layers, Y, Cs))
    timings[way] = time.perf_counter() - t0
    losses = [[probe.loss_ for probe in row] for row in fitted]
    if way == "one layer per pass":
        reference = losses
    report(probe_layers=way, layers=len(layers), Cs=len(Cs), n=PROBE["n"], width=PROBE["width"],
           seconds=round(timings[way], 2), device=str(device),
           max_relative_loss_gap=float(max(abs(a - b) / abs(b) for ra, rb in zip(losses, reference)
                                           for a, b in zip(ra, rb))))
report(probe_layers_speedup=round(timings["one layer per pass"] / timings["4 layers per pass"], 2))
del layers
report(total_s=round(time.perf_counter() - started_all, 1), device=str(device),
       gpu=torch.cuda.get_device_name() if device.type == "cuda" else None)
PY
