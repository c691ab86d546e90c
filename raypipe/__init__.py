"""raypipe: process video with ONNX models on a Ray cluster, exact to the frame.

Public API: :func:`process_video`, :func:`process_archive` (:mod:`raypipe.api`: every
option a named, typed keyword), the configuration
dataclasses, the error tree, :class:`Processor` (user code between models, see
:mod:`raypipe.infer.processors`) and :func:`processor_identity`; :mod:`raypipe.data` holds
the Ray Data pieces.
"""

import logging
from typing import TYPE_CHECKING, Any

from raypipe.api import process_archive, process_video
from raypipe.config import (
    ChunkConfig,
    EncodeConfig,
    ModelConfig,
    RunConfig,
    RuntimeConfig,
    build_run_config,
)
from raypipe.errors import *  # noqa: F403 - the error tree is public API
from raypipe.errors import __all__ as _errors

if TYPE_CHECKING:
    from raypipe.distributed.stats import RunStats
    from raypipe.infer.processor_refs import processor_identity
    from raypipe.infer.processors import Processor, ProcessorContext
    from raypipe.infer.sidecar import ModelSpec


def _not_a_widget_hint(record: logging.LogRecord) -> bool:
    return not (record.levelno <= logging.INFO and str(record.msg).startswith("Missing packages"))


# In a notebook, importing Ray (and Ray Data) makes Ray say on the cell's stderr that
# ipywidgets is missing for its rich output; raypipe shows its own progress and uses none of
# Ray's widgets. A filter, not a level: Ray's logging set-up resets its loggers' children.
logging.getLogger("ray.widgets.util").addFilter(_not_a_widget_hint)

_LAZY = {
    "ModelSpec": "raypipe.infer.sidecar",
    "RunStats": "raypipe.distributed.stats",
    "Processor": "raypipe.infer.processors",
    "ProcessorContext": "raypipe.infer.processors",
    "processor_identity": "raypipe.infer.processor_refs",
}


def __getattr__(name: str) -> Any:
    """``Processor``, ``ModelSpec``, ``RunStats`` and friends, imported on first use (ONNX
    and its kin are heavy)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'raypipe' has no attribute {name!r}")


__version__ = "0.1.0"


def __dir__() -> list[str]:
    """The module's names with the lazy ones (a notebook's completion offered none of
    ``Processor``, ``ModelSpec``, ``RunStats``: a sweep)."""
    return sorted({*globals(), *_LAZY})


__all__ = [
    *_errors,  # `from raypipe import *` gave RaypipeError alone of the error tree (a sweep)
    "ChunkConfig",
    "EncodeConfig",
    "ModelConfig",
    "ModelSpec",
    "Processor",
    "ProcessorContext",
    "RunConfig",
    "RunStats",
    "RuntimeConfig",
    "build_run_config",
    "process_archive",
    "process_video",
    "processor_identity",
]
