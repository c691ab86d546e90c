"""Inference with ONNX Runtime: built-in models, sessions and frame pre/post-processing.

This package imports neither ``ray`` nor (until a session is created) ``onnxruntime``.
"""

from raypipe.infer.builtin import BUILTIN_MODELS, build_builtin, builtin_bytes, reference_numpy
from raypipe.infer.models import (
    FrameModel,
    ModelSpec,
    load_frame_model,
    postprocess,
    preprocess,
    resolve_model,
)
from raypipe.infer.session import (
    create_session,
    cuda_available,
    granted_providers,
    provider_order,
)

__all__ = [
    "BUILTIN_MODELS",
    "FrameModel",
    "ModelSpec",
    "build_builtin",
    "builtin_bytes",
    "create_session",
    "cuda_available",
    "granted_providers",
    "load_frame_model",
    "postprocess",
    "preprocess",
    "provider_order",
    "reference_numpy",
    "resolve_model",
]
