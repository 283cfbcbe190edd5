"""Backbones: what a backbone is (:mod:`~medprobe.models.base`), the ones medprobe can build and their
registry (:mod:`~medprobe.models.registry`); kept import-free so that naming a backbone loads only its own module."""
