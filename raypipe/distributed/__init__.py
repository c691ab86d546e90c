"""The only package that imports Ray: datasets, actors, the pipeline, progress and stats.

Its modules import one another in this order only, leaves first (``tests/
test_import_graph.py`` checks that no import, even inside a function, closes a circle):

1. leaves: ``chunk_task`` (the typed chunk task and its row), ``ray_errors``, ``ray_logs``,
   ``metrics``, ``monitor`` (progress), ``gpu_monitor``, ``stats``, ``chunk_log`` (a run's
   chunk records; no Ray, so the run report's drawing process reads them without it)
2. ``cluster`` (connect, size the actors) → ``workload`` (what an actor is given) →
   ``setup`` (the steps every run takes before its dataset); ``trt_engines``
3. ``stages`` (decode, encode) → ``actors`` (inference) and ``planning`` (probe, plan,
   resume decisions) → ``dataset`` (the Ray Data pipeline)
4. ``assembly`` (a Ray task per finished video) → ``runner`` (the driver's loop)
5. entry points: ``pipeline`` (one video), ``archive`` (many)
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raypipe.distributed.pipeline import process_video
    from raypipe.distributed.stats import RunStats

__all__ = ["RunStats", "process_video"]

_LAZY = {"process_video": "raypipe.distributed.pipeline", "RunStats": "raypipe.distributed.stats"}


def __getattr__(name: str) -> Any:
    """The entry points, imported on first use: a decode or encode task imports
    ``stages`` alone, not the actors' ONNX Runtime, ONNX and OpenCV."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
