"""A model's output kind: frames (``"image"``) or arrays per frame (``"tensor"``).

Decided from the model's declared outputs (:func:`detect_output_kind`, or
:func:`output_kind` straight from the ONNX bytes, without a session) unless the model's
:class:`~raypipe.infer.sidecar.ModelSpec` says it. Split out of :mod:`raypipe.infer.models`,
which re-exports these names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np

from raypipe.errors import ModelLoadError
from raypipe.infer.sidecar import DEFAULT_SPEC, ModelSpec

TABLE_COLUMNS: tuple[str, ...] = ("video_uri", "video_id", "frame_index", "pts", "pts_seconds")
"""Columns raypipe writes itself in a table output; a model's or processor's outputs may not
use them."""

_ONE_SHAPE = "a table column keeps one shape and type for every frame"
_LIST_COLUMN = "as a 1-D object array of one 1-D array per frame, which becomes a list column"
VARYING_ADVICE = (
    f"{_ONE_SHAPE}: export the model with a fixed size on that output (detections padded "
    "to a fixed count), or return results whose count varies from frame to frame from a "
    f"processor (--processor) {_LIST_COLUMN}"
)
"""What to do about a model output whose per-frame shape or type changes between frames."""
PROCESSOR_VARYING_ADVICE = (
    f"{_ONE_SHAPE}: return the same shape and type for every frame, or results whose count "
    f"varies from frame to frame {_LIST_COLUMN}"
)
"""The same for a processor's output."""


def column_problem(name: str, parts: Sequence[np.ndarray], advice: str = VARYING_ADVICE) -> str:
    """Why the arrays ``parts`` of one output (batches of frames along their first
    dimension) cannot be one table column (``""``: they can): their per-frame shapes or
    types differ. ``np.concatenate`` said "all the input array dimensions except for the
    concatenation axis must match exactly", and a chunk's table against another's
    "Schema at index 4 was different", naming no output (a sweep)."""
    first = parts[0]
    for part in parts[1:]:
        if part.shape[1:] != first.shape[1:] or part.dtype != first.dtype:
            return (
                f"output {name!r} has per-frame shape {list(first.shape[1:])} ({first.dtype}) "
                f"for some frames and {list(part.shape[1:])} ({part.dtype}) for others; " + advice
            )
    return ""


ELEMENT_DTYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8,
}
"""Element types raypipe feeds to / reads from an image model, by ONNX Runtime's names."""
_ELEMENT_DTYPES = ELEMENT_DTYPES
OutputKind = Literal["image", "tensor"]


def _dim(value: Any) -> int | None:
    """A fixed dimension, or None when it is dynamic (a name, None, or <= 0)."""
    return value if isinstance(value, int) and value > 0 else None


class TensorInfo(Protocol):
    """A model input/output as ONNX Runtime's ``NodeArg`` describes it."""

    @property
    def name(self) -> str: ...
    @property
    def shape(self) -> Sequence[int | str | None] | None: ...
    @property
    def type(self) -> str: ...


class _Info(NamedTuple):
    name: str
    shape: Sequence[int | str | None] | None  # None: rank unknown
    type: str  # "tensor(float)"


def detect_output_kind(outputs: Sequence[TensorInfo], spec: ModelSpec) -> OutputKind:
    """``spec.output`` if it is not ``"auto"``; else what the model's outputs look like.

    Image: one output (``spec.output_name``, or the model's only output) of rank 4 (or of
    unknown rank) with float, float16 or uint8 elements, whose channel axis (``spec.layout``)
    holds 1 or 3 (or is dynamic) and whose height and width are not both fixed at 1.
    Anything else is a tensor output (several outputs, vectors, a 1x1 map, 80 channels...).
    """
    if spec.output != "auto":
        return spec.output  # type: ignore[return-value]
    chosen = [o for o in outputs if o.name == spec.output_name] if spec.output_name else outputs
    if len(chosen) != 1 or chosen[0].type not in _ELEMENT_DTYPES:
        return "tensor"
    shape = chosen[0].shape
    if shape is None:
        return "image"
    if len(shape) != 4:
        return "tensor"
    hw = (shape[2], shape[3]) if spec.layout == "NCHW" else (shape[1], shape[2])
    channels = _dim(shape[spec.channel_axis])
    if channels not in (None, 1, 3) or (_dim(hw[0]) == 1 and _dim(hw[1]) == 1):
        return "tensor"
    return "image"


def graph_io(graph: Any) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """The inputs (initializers left out) and outputs of an ``onnx.GraphProto`` as
    :class:`TensorInfo`, named as ONNX Runtime names them, without a session."""
    initializers = {t.name for t in graph.initializer}
    inputs: list[TensorInfo] = [_info(v) for v in graph.input if v.name not in initializers]
    outputs: list[TensorInfo] = [_info(v) for v in graph.output]
    return inputs, outputs


def _info(value: Any) -> _Info:
    import onnx

    tensor = value.type.tensor_type
    shape = None
    if tensor.HasField("shape"):
        shape = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tensor.shape.dim]
    type_name = onnx.helper.tensor_dtype_to_string(tensor.elem_type).removeprefix("TensorProto.")
    return _Info(value.name, shape, f"tensor({type_name.lower()})")  # as ONNX Runtime names it


def not_a_picture(shape: Sequence[int | str | None] | None, spec: ModelSpec) -> bool:
    """Whether an output of ``shape`` (``None``: rank unknown) cannot be a batch of pictures
    in ``spec``'s layout: rank 4 with 3 channels or 1 (where the graph says)."""
    if shape is None:
        return False
    return len(shape) != 4 or _dim(shape[spec.channel_axis]) not in (None, 1, 3)


def declared_output_shapes(model_bytes: bytes) -> dict[str, list[int | str] | None]:
    """Each output's shape as the ONNX graph declares it (``None``: rank unknown; ``[]``: a
    scalar). ONNX Runtime's sessions give ``[]`` for both."""
    import onnx

    outputs = graph_io(onnx.load_model_from_string(model_bytes).graph)[1]
    return {o.name: None if o.shape is None else list(o.shape) for o in outputs}


def output_kind(model_bytes: bytes, spec: ModelSpec = DEFAULT_SPEC) -> OutputKind:
    """:func:`detect_output_kind` for serialized ONNX model bytes, without a session."""
    import onnx

    try:
        graph = onnx.load_model_from_string(model_bytes).graph
    except Exception as e:  # onnx raises DecodeError and friends
        raise ModelLoadError(f"cannot parse the model as ONNX: {e}") from e
    return detect_output_kind(graph_io(graph)[1], spec)
