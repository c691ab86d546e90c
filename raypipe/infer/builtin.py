"""Built-in image models, built in code as real ONNX graphs (nothing is downloaded).

Every built-in takes and returns an NCHW float32 RGB batch with values in ``[0, 1]``:
input ``input`` of shape ``(batch, 3, height, width)``, output ``output``; batch, height
and width are dynamic. They are written with ONNX IR version 9 and opset 17 set
explicitly, because the newest ``onnx`` writes an IR version that ONNX Runtime refuses.

============  ================================================================================
name          what it does
============  ================================================================================
identity      returns the input unchanged
invert        ``1 - x``
grayscale     BT.601 luma ``0.299 R + 0.587 G + 0.114 B``, repeated to 3 channels
blur          5x5 binomial (Gaussian-like, sigma ~ 1) depthwise blur, edges replicated
sharpen       3x3 kernel ``[[0,-1,0],[-1,5,-1],[0,-1,0]]`` depthwise, edges replicated, clipped
              to ``[0, 1]``
upscale2x     bilinear resize x2 in height and width (ONNX ``Resize`` mode ``linear``,
              ``half_pixel`` coordinates, source samples clamped at the borders)
============  ================================================================================

Blur and sharpen pad with ``Pad`` mode ``edge`` and then run a ``Conv`` without padding,
so the size is kept and the borders are well defined (no dark frame from zero padding).

:func:`reference_numpy` computes the same maths in numpy; tests and benchmarks compare
ONNX Runtime's output with it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from raypipe.errors import ModelNotFoundError

BUILTIN_IMAGE_MODELS: tuple[str, ...] = (
    "identity",
    "invert",
    "grayscale",
    "blur",
    "sharpen",
    "upscale2x",
)
"""The small image models built here, each with a numpy reference (:func:`reference_numpy`)."""


def _other_builders() -> dict[str, Callable[[], onnx.ModelProto]]:
    from raypipe.infer.analysis import ANALYSIS_MODELS
    from raypipe.infer.heavy import build_superres
    from raypipe.infer.temporal_builtin import TEMPORAL_MODELS, build_temporal

    temporal = {name: functools.partial(build_temporal, name) for name in TEMPORAL_MODELS}
    return {"superres": build_superres, **ANALYSIS_MODELS, **temporal}


OTHER_MODELS: tuple[str, ...] = ("superres", "phash", "embedding", "denoise3", "ema", "interp2x")
"""``superres``: a super-resolution-sized 2x network (GPU benchmarks); ``phash`` and
``embedding``: analysis models whose outputs are tensors (Parquet); ``denoise3``, ``ema``
and ``interp2x``: temporal models (:mod:`raypipe.infer.temporal_builtin`)."""

BUILTIN_MODELS: tuple[str, ...] = BUILTIN_IMAGE_MODELS + OTHER_MODELS

IR_VERSION = 9
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"

LUMA_BT601: tuple[float, float, float] = (0.299, 0.587, 0.114)
_BINOMIAL_5 = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
BLUR_KERNEL: np.ndarray = np.outer(_BINOMIAL_5, _BINOMIAL_5).astype(np.float32)
SHARPEN_KERNEL: np.ndarray = np.array(
    [[0.0, -1.0, 0.0], [-1.0, 5.0, -1.0], [0.0, -1.0, 0.0]], dtype=np.float32
)


def _check_name(name: str) -> None:
    if name not in BUILTIN_MODELS:
        raise ModelNotFoundError(
            f"unknown built-in model {name!r}; built-ins are {', '.join(BUILTIN_MODELS)}. "
            "To run your own model pass a path or URL of an .onnx file instead of builtin:NAME"
        )


def _value_info(name: str, height: str, width: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 3, height, width])


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name=name)


def _depthwise(kernel: np.ndarray, out: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Edge padding then a depthwise (group=3) Conv without padding: size is kept."""
    radius = kernel.shape[0] // 2
    weight = np.broadcast_to(kernel, (3, 1, *kernel.shape)).astype(np.float32)
    # Pad takes begins then ends, one per axis: (N, C, H, W).
    pads = np.array([0, 0, radius, radius, 0, 0, radius, radius], dtype=np.int64)
    nodes = [
        helper.make_node("Pad", [INPUT_NAME, "pads"], ["padded"], mode="edge"),
        helper.make_node(
            "Conv", ["padded", "weight"], [out], group=3, kernel_shape=list(kernel.shape)
        ),
    ]
    return nodes, [_const("pads", pads), _const("weight", weight)]


def _graph_body(name: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    if name == "identity":
        return [helper.make_node("Identity", [INPUT_NAME], [OUTPUT_NAME])], []
    if name == "invert":
        one = _const("one", np.array(1.0, dtype=np.float32))
        return [helper.make_node("Sub", ["one", INPUT_NAME], [OUTPUT_NAME])], [one]
    if name == "grayscale":
        # A 1x1 Conv whose three output channels all hold the luma weights.
        weight = np.tile(np.array(LUMA_BT601, dtype=np.float32), (3, 1)).reshape(3, 3, 1, 1)
        node = helper.make_node("Conv", [INPUT_NAME, "luma"], [OUTPUT_NAME], kernel_shape=[1, 1])
        return [node], [_const("luma", weight)]
    if name == "blur":
        return _depthwise(BLUR_KERNEL, OUTPUT_NAME)
    if name == "sharpen":
        nodes, inits = _depthwise(SHARPEN_KERNEL, "sharpened")
        nodes.append(helper.make_node("Clip", ["sharpened", "lo", "hi"], [OUTPUT_NAME]))
        inits += [
            _const("lo", np.array(0.0, dtype=np.float32)),
            _const("hi", np.array(1.0, dtype=np.float32)),
        ]
        return nodes, inits
    if name == "upscale2x":
        scales = _const("scales", np.array([1.0, 1.0, 2.0, 2.0], dtype=np.float32))
        node = helper.make_node(
            "Resize",
            [INPUT_NAME, "", "scales"],
            [OUTPUT_NAME],
            mode="linear",
            coordinate_transformation_mode="half_pixel",
        )
        return [node], [scales]
    raise AssertionError(name)  # unreachable: names are checked first


def build_builtin(name: str) -> onnx.ModelProto:
    """The built-in model ``name`` (one of :data:`BUILTIN_MODELS`) as a checked ONNX model."""
    _check_name(name)
    if name in OTHER_MODELS:
        return _other_builders()[name]()
    nodes, initializers = _graph_body(name)
    out_h, out_w = ("out_height", "out_width") if name == "upscale2x" else ("height", "width")
    graph = helper.make_graph(
        nodes,
        f"raypipe_{name}",
        [_value_info(INPUT_NAME, "height", "width")],
        [_value_info(OUTPUT_NAME, out_h, out_w)],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="raypipe",
        doc_string=f"raypipe built-in model {name!r}: NCHW float32 RGB in [0, 1]",
    )
    onnx.checker.check_model(model, full_check=True)
    return model


@functools.cache
def builtin_bytes(name: str) -> bytes:
    """The serialized built-in model ``name``, built once per process."""
    data: bytes = build_builtin(name).SerializeToString()
    return data


def _depthwise_numpy(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    radius = kernel.shape[0] // 2
    height, width = x.shape[2], x.shape[3]
    padded = np.pad(x, ((0, 0), (0, 0), (radius, radius), (radius, radius)), mode="edge")
    out = np.zeros(x.shape, dtype=np.float64)
    for i in range(kernel.shape[0]):
        for j in range(kernel.shape[1]):
            out += float(kernel[i, j]) * padded[:, :, i : i + height, j : j + width]
    return out


def _upscale2x_axis(x: np.ndarray, axis: int) -> np.ndarray:
    """Linear x2 along ``axis`` with half-pixel centres: output ``2i`` samples ``i - 1/4``,
    ``2i + 1`` samples ``i + 1/4``; neighbours past the border are clamped to it."""
    size = x.shape[axis]
    prev = np.take(x, np.clip(np.arange(size) - 1, 0, size - 1), axis=axis)
    nxt = np.take(x, np.clip(np.arange(size) + 1, 0, size - 1), axis=axis)
    even = 0.75 * x + 0.25 * prev
    odd = 0.75 * x + 0.25 * nxt
    stacked = np.stack([even, odd], axis=axis + 1)
    shape = list(x.shape)
    shape[axis] = 2 * size
    return stacked.reshape(shape)


def reference_numpy(name: str, x: np.ndarray) -> np.ndarray:
    """What built-in ``name`` computes, in numpy: NCHW float32 in, NCHW float32 out."""
    _check_name(name)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected an NCHW batch with 3 channels, got shape {x.shape}")
    x64 = x.astype(np.float64)
    if name == "identity":
        out = x64
    elif name == "invert":
        out = 1.0 - x64
    elif name == "grayscale":
        luma = np.tensordot(np.array(LUMA_BT601), x64, axes=([0], [1]))  # (n, H, W)
        out = np.repeat(luma[:, None], 3, axis=1)
    elif name == "blur":
        out = _depthwise_numpy(x64, BLUR_KERNEL)
    elif name == "sharpen":
        out = np.clip(_depthwise_numpy(x64, SHARPEN_KERNEL), 0.0, 1.0)
    else:  # upscale2x
        out = _upscale2x_axis(_upscale2x_axis(x64, 2), 3)
    return out.astype(np.float32)
