"""medprobe: do general-purpose (multimodal) models understand medical images?

Data flows one way: ``data`` (images, labels, splits) -> ``models`` (backbones that turn
images into activations) -> ``features`` (the on-disk activation cache) -> ``probes``
(linear classifiers) -> ``stats`` (metrics, bootstrap CIs, paired tests) -> ``report``.
"""

__version__ = "0.1.0"
