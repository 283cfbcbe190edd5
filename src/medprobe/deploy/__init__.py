"""Using the probes a run saved: ``medprobe.load_probe`` (Python), ``medprobe predict`` and
``medprobe export --onnx`` (command line).

:mod:`~medprobe.deploy.loaded` finds a saved probe, builds its backbone and refuses one whose
features would differ; :mod:`~medprobe.deploy.predict` turns image files, folders, manifests or a
run file's split into a prediction table; :mod:`~medprobe.deploy.export_onnx` writes one ONNX graph
(backbone up to the probe's layer, pooling, standardiser, linear head) for ONNX backbones.
"""

from medprobe.deploy.loaded import LoadedProbe, load_probe

__all__ = ["LoadedProbe", "load_probe"]
