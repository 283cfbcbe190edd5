"""Which devices a plan may place a model on, and how much memory each offers.

Parsing of ``--max-memory`` / ``--gpus`` sizes, detection of the visible GPUs, and the text that
says where a device map puts the model's modules; kept apart from the cost model so both read in
one sitting.
"""

from __future__ import annotations

import re
from typing import Any

from medprobe.errors import ModelError

_GB = 1e9

def parse_size(value: Any, *, where: str) -> int:
    """Bytes from ``48GB`` / ``46GiB`` / ``500MB`` / an integer."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    match = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]i?B?|B)?\s*", str(value), flags=re.IGNORECASE)
    if not match:
        raise ModelError(f"{where}: cannot read the memory size {value!r} (write e.g. 48GB or 46GiB)")
    number, unit = float(match.group(1)), (match.group(2) or "B").upper()
    scale = {"B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9, "T": 1e12, "TB": 1e12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}.get(unit)
    if scale is None:
        raise ModelError(f"{where}: unknown memory unit in {value!r}")
    return int(number * scale)


def parse_gpus(text: str) -> dict[Any, int]:
    """``"4x48GB"`` (or ``"48GB,48GB"``) -> ``{0: 48e9, 1: 48e9, ...}``."""
    match = re.fullmatch(r"\s*(\d+)\s*[x×]\s*(\S+)\s*", text)
    sizes = [match.group(2)] * int(match.group(1)) if match else [part for part in text.split(",") if part.strip()]
    return {index: parse_size(size, where="--gpus") for index, size in enumerate(sizes)}


def visible_memory() -> dict[Any, int]:
    """Free memory of the visible GPUs and the available CPU RAM, as accelerate would see them."""
    import psutil
    import torch

    memory: dict[Any, int] = {}
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            memory[index] = int(torch.cuda.mem_get_info(index)[0])
    memory["cpu"] = int(psutil.virtual_memory().available)
    return memory


def has_gpu(memory: dict[Any, int]) -> bool:
    """Whether a ``max_memory`` mapping names any accelerator (keys other than ``cpu`` and ``disk``)."""
    return any(key not in ("cpu", "disk") for key in memory)


def devices_text(memory: dict[Any, int]) -> str:
    """A ``max_memory`` mapping as one line for the plan (``GPU 0: 80 GB, cpu: 64 GB``)."""
    return ", ".join(f"{'GPU ' + str(key) if key not in ('cpu', 'disk') else key}: {size / _GB:.0f} GB"
                     for key, size in memory.items())


def placement_text(device_map: dict[str, Any]) -> str:
    """Modules per device, consecutive numbered layers folded: ``model.layers.0-37``."""
    groups: dict[str, list[str]] = {}
    if set(device_map) == {""}:
        device = device_map[""]
        return f"the whole model on {'GPU ' + str(device) if isinstance(device, int) else device}"
    for module, device in device_map.items():
        groups.setdefault(f"GPU {device}" if isinstance(device, int) else str(device), []).append(module)
    parts = []
    for device, modules in groups.items():
        folded: list[str] = []
        runs: dict[str, list[int]] = {}
        for module in modules:
            match = re.fullmatch(r"(.+)\.(\d+)", module)
            if match:
                if match.group(1) not in runs:
                    runs[match.group(1)] = []
                    folded.append(match.group(1))
                runs[match.group(1)].append(int(match.group(2)))
            else:
                folded.append(module)
        text = [f"{m}.{min(runs[m])}-{max(runs[m])}" if m in runs and len(runs[m]) > 1
                else f"{m}.{runs[m][0]}" if m in runs else m for m in folded]
        parts.append(f"{device}: {', '.join(text)}")
    return "; ".join(parts)


