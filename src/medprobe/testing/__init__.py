"""Test support shipped with medprobe: tiny random models of every Hugging Face family.

Used by the test suite and ``medprobe bench``, never by a run; as scikit-learn keeps its
``utils/_testing.py``, these helpers live apart from the real backbones and change nothing
in the process when imported.
"""
