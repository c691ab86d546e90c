"""Built-in temporal models, real ONNX graphs built in code (IR 9, opset 17, like the others).

All work on float32 RGB in ``[0, 1]`` with dynamic batch, height and width:

=========  ====================================================================================
name       what it does
=========  ====================================================================================
denoise3   the mean of frames ``t - 1, t, t + 1``: a window model (spec ``window: [1, 1]``).
           Input ``input`` ``(batch, time, 3, H, W)`` (the time axis is dynamic, so a wider
           ``--window`` averages more frames), output ``output`` ``(batch, 3, H, W)``.
ema        a recurrent model: ``out_t = (x_t + out_{t-1}) / 2``, ``out_0 = x_0``. Inputs
           ``input`` ``(batch, 3, H, W)``, ``prev`` (the last output, same shape) and
           ``started`` ``(batch, 1, 1, 1)`` (1 once a frame has gone through); outputs
           ``output``, ``prev_out``, ``started_out``. Spec ``state: {prev: prev_out, started:
           started_out}``, ``warmup_frames: 8``: zeros at the start mean "no frame yet".
interp2x   the frame halfway between two: the mean of frames ``t`` and ``t + 1`` (spec
           ``interpolate: 2``). Input ``(batch, 2, 3, H, W)``, output ``(batch, 3, H, W)``.
=========  ====================================================================================

:func:`temporal_reference` computes what each gives over a whole sequence, in numpy.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TEMPORAL_MODELS: tuple[str, ...] = ("denoise3", "ema", "interp2x")
"""The built-in temporal models (their specs are in :data:`TEMPORAL_SPECS`)."""

TEMPORAL_SPECS: dict[str, dict[str, object]] = {
    "denoise3": {"window": (1, 1)},
    "ema": {
        "state": (("prev", "prev_out"), ("started", "started_out")),
        "warmup_frames": 8,
        "output_name": "output",
    },
    "interp2x": {"interpolate": 2},
}
"""The :class:`~raypipe.infer.sidecar.ModelSpec` fields of each temporal built-in."""

_IR_VERSION, _OPSET = 9, 17  # as raypipe.infer.builtin (not imported: no circle)
_FRAME: list[int | str] = ["batch", 3, "height", "width"]


def _tensor(name: str, dims: list[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def _const(name: str, value: float) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=np.float32), name=name)


def _model(graph: onnx.GraphProto, name: str) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", _OPSET)],
        ir_version=_IR_VERSION,
        producer_name="raypipe",
        doc_string=f"raypipe built-in temporal model {name!r}: float32 RGB in [0, 1]",
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def _time_mean(name: str, time: int | str) -> onnx.ModelProto:
    node = helper.make_node("ReduceMean", ["input"], ["output"], axes=[1], keepdims=0)
    graph = helper.make_graph(
        [node],
        f"raypipe_{name}",
        [_tensor("input", ["batch", time, 3, "height", "width"])],
        [_tensor("output", _FRAME)],
    )
    return _model(graph, name)


def _ema() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Sub", ["prev", "input"], ["delta"]),
        helper.make_node("Mul", ["started", "half"], ["weight"]),
        helper.make_node("Mul", ["delta", "weight"], ["step"]),
        helper.make_node("Add", ["input", "step"], ["output"]),  # x + started/2 * (prev - x)
        helper.make_node("Identity", ["output"], ["prev_out"]),
        helper.make_node("Max", ["started", "one"], ["started_out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "raypipe_ema",
        [_tensor("input", _FRAME), _tensor("prev", _FRAME), _tensor("started", ["batch", 1, 1, 1])],
        [
            _tensor("output", _FRAME),
            _tensor("prev_out", _FRAME),
            _tensor("started_out", ["batch", 1, 1, 1]),
        ],
        initializer=[_const("half", 0.5), _const("one", 1.0)],
    )
    return _model(graph, "ema")


def build_temporal(name: str) -> onnx.ModelProto:
    """The built-in temporal model ``name`` (one of :data:`TEMPORAL_MODELS`)."""
    if name == "denoise3":
        return _time_mean(name, "time")
    if name == "interp2x":
        return _time_mean(name, 2)
    if name == "ema":
        return _ema()
    raise ValueError(f"{name!r} is not a temporal built-in; they are {TEMPORAL_MODELS}")


def temporal_reference(name: str, frames: np.ndarray) -> np.ndarray:
    """What ``name`` gives over a whole sequence of float frames ``(n, 3, H, W)``, in numpy
    (float64 maths): ``n`` frames for denoise3 and ema; for interp2x the ``n`` in-between
    frames (the last one: the last frame repeated)."""
    x = frames.astype(np.float64)
    n = len(x)
    if name == "denoise3":
        idx = np.clip(np.arange(n)[:, None] + np.arange(-1, 2)[None], 0, n - 1)
        return x[idx].mean(axis=1).astype(np.float32)
    if name == "interp2x":
        nxt = x[np.minimum(np.arange(n) + 1, n - 1)]
        mids = (x + nxt) / 2
        mids[-1] = x[-1]
        return mids.astype(np.float32)
    if name == "ema":
        out = np.empty_like(x)
        for t in range(n):
            out[t] = x[t] if t == 0 else (x[t] + out[t - 1]) / 2
        return out.astype(np.float32)
    raise ValueError(f"{name!r} is not a temporal built-in; they are {TEMPORAL_MODELS}")
