"""medprobe: do general-purpose (multimodal) models understand medical images?

Data flows one way: ``data`` (images, labels, splits) -> ``models`` (backbones that turn
images into activations) -> ``features`` (the on-disk activation cache) -> ``probes``
(linear classifiers) -> ``stats`` (metrics, bootstrap CIs, paired tests) -> ``report``.
"""

__version__ = "0.1.0"


def load_probe(run_dir, backbone=None, fraction=None, seed=None, **options):
    """A probe a run saved, ready for new images (``predict_proba`` / ``predict``): see
    :func:`medprobe.deploy.loaded.load_probe`. Imported on call, so ``import medprobe`` stays light."""
    from medprobe.deploy import load_probe as load

    return load(run_dir, backbone, fraction, seed, **options)
