"""TensorRT and CUDA for the inference actors (GPU only at run time; importable anywhere).

``providers`` (an actor's provider setup: TensorRT with the shared engine cache, else
CUDA, with a memory budget) uses ``options`` (validated provider options, TensorRT shape
profiles), ``key`` (what an engine depends on, and the build) and ``cache`` (the
cluster-wide engine cache), which keeps its entries with ``files``. Import order:
``options``, ``key`` → ``files`` → ``cache`` → ``providers``.
"""
