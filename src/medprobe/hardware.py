"""Which matrix units this machine has, and the compute precision that is fastest on them.

Why: reduced precision is only fast on hardware that has units for it. bfloat16 matrix products
are ~5x float32 on a CPU with AMX, and a 2-3.5x *slow-down* on an AVX-512 Xeon without AMX or
AVX512-BF16 (torch falls back to converting every element); on an AVX2-only AMD EPYC a 1,024^2
bf16 product ran at 0.3 GFLOP/s against 16-25 in float32 (benchmarks/README.md). So
``dtype: auto`` (every extraction path's default) asks this module instead of assuming:

* torch backbones: bfloat16 on a CPU with AMX-BF16 or AVX512-BF16 and on Ampere+ GPUs (compute
  capability 8.0 and up), float16 on older GPUs with tensor cores (7.0+), float32 elsewhere;
* ONNX backbones: fp32. int8 (onnxruntime dynamic quantisation) is faster where the CPU has
  VNNI or AMX-INT8 (1.6-2x measured), and was even on an AVX2-only EPYC without VNNI (2.9x, quick
  sizes), but it moves the probe's answer (benchmarks/README.md), so it is *offered* (the reason
  says so), never chosen for the user.

The CPU's flags come from ``/proc/cpuinfo`` (Linux), else torch's reported capability when torch
is already imported; nothing here imports torch unless a GPU is asked about. Low-level: imports
nothing from medprobe.
"""

from __future__ import annotations

import functools
import platform
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

#: the /proc/cpuinfo flags that name a matrix or dot-product unit, in the order they are reported
UNIT_FLAGS = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")
#: measured bf16 / fp32 speed of torch's CPU matrix products where the CPU lacks bf16 units (one
#: thread, side by side): AVX-512 Xeon without AMX/AVX512-BF16, 2,048^2: 0.27x; AVX2-only AMD
#: EPYC, 1,024^2: 0.3 / 16-25 GFLOP/s (about 0.02x)
BF16_WITHOUT_UNITS = "0.27x float32's speed on an AVX-512 Xeon, ~0.02x on an AVX2-only CPU"


@dataclass(frozen=True)
class MatrixUnits:
    """The CPU model and its unit flags, and the GPU (name, compute capability) when asked about."""

    cpu_model: str
    flags: frozenset[str] = field(default_factory=frozenset)
    gpu: str | None = None
    gpu_capability: tuple[int, int] | None = None

    def has(self, flag: str) -> bool:
        return flag in self.flags

    @property
    def cpu_bf16(self) -> bool:
        """bfloat16 matrix units: AMX tiles or AVX512-BF16 dot products."""
        return self.has("amx_bf16") or self.has("avx512_bf16")

    @property
    def cpu_int8(self) -> bool:
        """int8 dot-product units (VNNI, 512- or 256-bit) or AMX-INT8 tiles."""
        return self.has("amx_int8") or self.has("avx512_vnni") or self.has("avx_vnni")

    def describe(self) -> str:
        """``"AMD EPYC (AVX2; no AMX, AVX512-BF16, VNNI)"``: the model and what matters for precision."""
        present = [flag.upper().replace("_", "-") for flag in UNIT_FLAGS if self.has(flag)]
        absent = [name for name, here in (("AMX", self.has("amx_bf16") or self.has("amx_int8")),
                                          ("AVX512-BF16", self.has("avx512_bf16")), ("VNNI", self.cpu_int8))
                  if not here]
        units = ", ".join(present) or "no vector-unit flags read"
        text = f"{self.cpu_model or 'unknown CPU'} ({units}" + (f"; no {', '.join(absent)})" if absent else ")")
        if self.gpu:
            text += f"; GPU {self.gpu} (compute capability {self.gpu_capability[0]}.{self.gpu_capability[1]})"
        return text


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision an extraction runs in, what was asked for, and why (for plan, console, run.json)."""

    value: str
    requested: str
    reason: str

    def record(self) -> dict[str, str]:
        return {"value": self.value, "requested": self.requested, "reason": self.reason}


def _read_cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str, frozenset[str]]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return "", frozenset()
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return model, frozenset(flags)


def _torch_capability_flags() -> frozenset[str]:
    """Flags implied by torch's reported CPU capability (no /proc/cpuinfo: macOS, Windows)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return frozenset()
    capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    if capability == "AVX512":
        return frozenset({"avx512f", "avx2"})
    return frozenset({"avx2"}) if capability == "AVX2" else frozenset()


@functools.lru_cache(maxsize=None)
def cpu_units() -> MatrixUnits:
    """This machine's CPU (read once per process)."""
    model, flags = _read_cpuinfo()
    if not flags:
        flags = _torch_capability_flags()
    return MatrixUnits(model or platform.processor() or platform.machine(), flags & frozenset(UNIT_FLAGS))


def matrix_units(gpu: bool = False) -> MatrixUnits:
    """The CPU's units, plus GPU 0's name and compute capability when ``gpu`` and CUDA is there."""
    units = cpu_units()
    if not gpu:
        return units
    import torch

    if not torch.cuda.is_available():
        return units
    return MatrixUnits(units.cpu_model, units.flags, torch.cuda.get_device_name(0),
                       tuple(torch.cuda.get_device_capability(0)))


def choose_torch_dtype(requested: str | None, units: MatrixUnits, on_gpu: bool) -> PrecisionChoice:
    """The compute dtype of a torch backbone for ``requested`` (``None``/``"auto"`` or a dtype name)."""
    asked = requested or "auto"
    if asked != "auto":
        if asked == "bfloat16" and not on_gpu and not units.cpu_bf16:
            return PrecisionChoice(asked, asked, f"asked for; this CPU has no bf16 units (expect {BF16_WITHOUT_UNITS})")
        return PrecisionChoice(asked, asked, "asked for")
    if on_gpu:
        major = (units.gpu_capability or (0, 0))[0]
        gpu = units.gpu or "the GPU"
        if major >= 8:
            return PrecisionChoice("bfloat16", asked, f"{gpu} has bf16 tensor cores (compute capability {major}.x)")
        if major >= 7:
            return PrecisionChoice("float16", asked, f"{gpu} has fp16 tensor cores but no bf16 (compute capability "
                                   f"{major}.x)")
        return PrecisionChoice("float32", asked, f"{gpu} has no tensor cores (compute capability {major}.x)")
    if units.cpu_bf16:
        unit = "AMX" if units.has("amx_bf16") else "AVX512-BF16"
        return PrecisionChoice("bfloat16", asked, f"this CPU has bf16 units ({unit}): bf16 is faster than float32")
    return PrecisionChoice("float32", asked, f"this CPU has no bf16 units (no AMX, no AVX512-BF16): bf16 would run "
                           f"at {BF16_WITHOUT_UNITS}")


def choose_onnx_precision(requested: str | None, units: MatrixUnits) -> PrecisionChoice:
    """The precision of an ONNX backbone: fp32 unless int8 is asked for; the reason offers int8 and
    names the int8 units it would use."""
    asked = requested or "auto"
    if asked == "int8":
        if units.cpu_int8:
            return PrecisionChoice("int8", asked, "asked for; this CPU has int8 units (VNNI/AMX-INT8)")
        return PrecisionChoice("int8", asked, "asked for; no VNNI/AMX-INT8 here, so AVX2 int8 products")
    if asked == "fp32":
        return PrecisionChoice("fp32", asked, "asked for")
    units_text = "this CPU has VNNI/AMX-INT8" if units.cpu_int8 else "no VNNI here, AVX2 int8 products"
    return PrecisionChoice("fp32", asked, f"int8 is offered ({units_text}): opt in with precision: int8, faster "
                           "but noisy (up to 60 % of a standardised feature's spread on the demo's ViT-S) and it can "
                           "change the selected layer; medprobe bench measures both")


def warn_if_slow(choice: PrecisionChoice, where: str, units: MatrixUnits, on_gpu: bool) -> None:
    """One-line warning when bfloat16 was asked for on a CPU without bf16 units."""
    if choice.requested == "bfloat16" and not on_gpu and not units.cpu_bf16:
        warnings.warn(f"{where}: dtype bfloat16 on a CPU without bf16 units ({units.cpu_model or 'this CPU'}: no AMX, "
                      f"no AVX512-BF16) is slow: {BF16_WITHOUT_UNITS}; use dtype: auto or float32",
                      RuntimeWarning, stacklevel=3)


__all__ = ["BF16_WITHOUT_UNITS", "UNIT_FLAGS", "MatrixUnits", "PrecisionChoice", "choose_onnx_precision",
           "choose_torch_dtype", "cpu_units", "matrix_units", "warn_if_slow"]
