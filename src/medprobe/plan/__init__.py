"""``medprobe plan``: what a run will cost before it starts.

* :mod:`.backbone` -- a Hugging Face backbone's parameters, weight and activation memory,
  placement and FLOPs, from a meta-device build (no weights read);
* :mod:`.stack_costs` -- what one layer of a stack costs (tokens, working set, FLOPs);
* :mod:`.devices` -- the devices and memory a plan may use;
* :mod:`.probe_time` -- the probe grid's CPU time on this machine.
"""

from medprobe.plan.backbone import (
    BackbonePlan,
    check_fits,
    count_images,
    device_map_for,
    is_hf_backbone,
    layer_listing,
    plan_backbone,
    plan_run,
    weight_bytes,
)
from medprobe.plan.devices import parse_gpus, parse_size, visible_memory
from medprobe.plan.probe_time import format_duration, grid_estimate, measured_flops, n_outputs
from medprobe.plan.stack_costs import PROMPT_TOKENS, StackCost, forward_flops

__all__ = [
    "PROMPT_TOKENS", "BackbonePlan", "StackCost", "check_fits", "count_images", "device_map_for",
    "forward_flops", "format_duration", "grid_estimate", "is_hf_backbone", "layer_listing",
    "measured_flops", "n_outputs", "parse_gpus", "parse_size", "plan_backbone", "plan_run",
    "visible_memory", "weight_bytes",
]
