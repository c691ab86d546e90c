"""Inference with ONNX Runtime: built-in models, sessions and frame pre/post-processing.

This package imports neither ``ray`` nor (until a session is created) ``onnxruntime``.
"""

from raypipe.infer.analysis import (
    ANALYSIS_MODELS,
    analysis_bytes,
    build_embedding,
    build_phash,
    phash_to_hex,
    phash_to_int,
)
from raypipe.infer.builtin import BUILTIN_MODELS, build_builtin, builtin_bytes, reference_numpy
from raypipe.infer.models import (
    LETTERBOX_KEYS,
    FrameModel,
    ModelSpec,
    detect_output_kind,
    load_frame_model,
    output_kind,
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
from raypipe.infer.sidecar import (
    builtin_spec,
    load_sidecar,
    resolve_model_and_spec,
    spec_from_dict,
    spec_to_dict,
    write_sidecar,
)
from raypipe.infer.tiling import (
    FrameGeometry,
    LetterboxParams,
    fit_frames,
    fit_params,
    letterbox_to_source,
    run_tiled,
    source_to_letterbox,
    unfit_frames,
)

__all__ = [
    "ANALYSIS_MODELS",
    "BUILTIN_MODELS",
    "LETTERBOX_KEYS",
    "FrameGeometry",
    "FrameModel",
    "LetterboxParams",
    "ModelSpec",
    "analysis_bytes",
    "build_builtin",
    "build_embedding",
    "build_phash",
    "builtin_bytes",
    "builtin_spec",
    "create_session",
    "cuda_available",
    "detect_output_kind",
    "fit_frames",
    "fit_params",
    "granted_providers",
    "letterbox_to_source",
    "load_frame_model",
    "load_sidecar",
    "output_kind",
    "phash_to_hex",
    "phash_to_int",
    "postprocess",
    "preprocess",
    "provider_order",
    "reference_numpy",
    "resolve_model",
    "resolve_model_and_spec",
    "run_tiled",
    "source_to_letterbox",
    "spec_from_dict",
    "spec_to_dict",
    "unfit_frames",
    "write_sidecar",
]
