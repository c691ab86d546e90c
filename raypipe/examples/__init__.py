"""Example processors shipped with raypipe (see :mod:`raypipe.examples.processors`).

Run one with ``raypipe run IN OUT --processor raypipe.examples.processors:Redact`` or
``--processor path/to/raypipe/examples/processors.py:RegionChain``. Their models are small
ONNX graphs built in code (:mod:`raypipe.examples.models`); point the class attributes
``detector_model``/``region_model`` at your own ``.onnx`` files to use real ones.
"""
