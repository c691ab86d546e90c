"""Small ONNX models built in code that break in the ways real third-party models do.

Each takes an NCHW float32 RGB batch in ``[0, 1]`` (input ``input``, output ``output``,
dynamic batch/height/width unless said otherwise) and is written with the same IR version
and opset as the built-ins, so ONNX Runtime reads them:

- :func:`stride32_unet`: a U-Net-like block, a stride-32 downsample (a 32x32 stride-32
  depthwise average ``Conv``), a nearest x32 upsample (``Resize``) and an ``Add`` skip
  connection with the input. Height and width must be multiples of 32, as for a DBNet text
  detector: on other sizes the ``Add`` meets two shapes and ONNX Runtime fails.
- :func:`nan_model`: ``Sqrt(x - 2)``, NaN on every pixel.
- :func:`wrong_rank_input`, :func:`wrong_channels_input`: inputs raypipe cannot feed (rank 3;
  one channel), refused when the model is loaded.
- :func:`runtime_two_channels`: an output whose channel count is not declared and turns out
  to be 2, found only when the model runs.
- :func:`window_mean`: a temporal window model, the mean of ``span`` frames given on a
  time axis or stacked on the channel axis, NCHW or NHWC (the layouts a ``ModelSpec``
  window can declare).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from raypipe.infer.builtin import INPUT_NAME, IR_VERSION, OPSET, OUTPUT_NAME

STRIDE = 32


def _model(
    nodes: list[onnx.NodeProto],
    inits: list[onnx.TensorProto],
    name: str,
    *,
    input_shape: list[int | str] | None = None,
    output_shape: list[int | str] | None = None,
) -> bytes:
    inp = helper.make_tensor_value_info(
        INPUT_NAME, TensorProto.FLOAT, input_shape or ["batch", 3, "height", "width"]
    )
    out = helper.make_tensor_value_info(
        OUTPUT_NAME, TensorProto.FLOAT, output_shape or ["batch", 3, "height", "width"]
    )
    graph = helper.make_graph(nodes, name, [inp], [out], initializer=inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="raypipe.testing",
    )
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _const(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name=name)


def stride32_unet(stride: int = STRIDE) -> bytes:
    """``0.5 x + 0.5 up(down(x))``: down is a ``stride`` x ``stride`` average with stride
    ``stride``, up a nearest x``stride`` resize (see the module docstring)."""
    weight = np.full((3, 1, stride, stride), 1.0 / (stride * stride), dtype=np.float32)
    nodes = [
        helper.make_node(
            "Conv",
            [INPUT_NAME, "w"],
            ["down"],
            group=3,
            kernel_shape=[stride] * 2,
            strides=[stride] * 2,
        ),
        helper.make_node("Resize", ["down", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Add", [INPUT_NAME, "up"], ["sum"]),
        helper.make_node("Mul", ["sum", "half"], [OUTPUT_NAME]),
    ]
    inits = [
        _const("w", weight),
        _const("scales", np.array([1.0, 1.0, stride, stride], dtype=np.float32)),
        _const("half", np.array(0.5, dtype=np.float32)),
    ]
    return _model(nodes, inits, f"stride{stride}_unet")


def nan_model() -> bytes:
    """``Sqrt(x - 2)``: NaN everywhere (pixels are in ``[0, 1]``)."""
    nodes = [
        helper.make_node("Sub", [INPUT_NAME, "two"], ["shifted"]),
        helper.make_node("Sqrt", ["shifted"], [OUTPUT_NAME]),
    ]
    return _model(nodes, [_const("two", np.array(2.0, dtype=np.float32))], "nan")


def wrong_rank_input() -> bytes:
    """Takes one CHW image (rank 3), not a batch."""
    nodes = [helper.make_node("Identity", [INPUT_NAME], [OUTPUT_NAME])]
    shape: list[int | str] = [3, "height", "width"]
    return _model(nodes, [], "rank3", input_shape=shape, output_shape=shape)


def wrong_channels_input() -> bytes:
    """Takes one-channel (grey) batches."""
    nodes = [helper.make_node("Identity", [INPUT_NAME], [OUTPUT_NAME])]
    shape: list[int | str] = ["batch", 1, "height", "width"]
    return _model(nodes, [], "grey_in", input_shape=shape, output_shape=shape)


def runtime_two_channels() -> bytes:
    """The first two channels ``x[:, :2]``: the slice's end is computed from the input's
    values, so no shape inference knows the output's channel count before the model runs."""
    nodes = [
        helper.make_node("ReduceMax", [INPUT_NAME], ["peak"], keepdims=0),
        helper.make_node("Mul", ["peak", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "two"], ["end_f"]),  # 2.0, from the data
        helper.make_node("Cast", ["end_f"], ["end_i"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["end_i", "vector"], ["end"]),
        helper.make_node("Slice", [INPUT_NAME, "start", "end", "axis"], [OUTPUT_NAME]),
    ]
    inits = [
        _const("zero", np.array(0.0, dtype=np.float32)),
        _const("two", np.array(2.0, dtype=np.float32)),
        _const("vector", np.array([1], dtype=np.int64)),
        _const("start", np.array([0], dtype=np.int64)),
        _const("axis", np.array([1], dtype=np.int64)),
    ]
    return _model(
        nodes, inits, "two_channels", output_shape=["batch", "channels", "height", "width"]
    )


def window_mean(span: int, *, layout: str = "NCHW", window_layout: str = "time") -> bytes:
    """The mean of ``span`` frames. ``window_layout="time"``: input ``(batch, span, 3, H, W)``
    (NCHW) or ``(batch, span, H, W, 3)`` (NHWC); ``"channels"``: the frames stacked on the
    channel axis, oldest first, ``(batch, 3 span, H, W)`` or ``(batch, H, W, 3 span)``. The
    output is one frame in ``layout``."""
    nchw = layout == "NCHW"
    frame: list[int | str] = (
        ["batch", 3, "height", "width"] if nchw else ["batch", "height", "width", 3]
    )
    if window_layout == "time":
        shape = [frame[0], span, *frame[1:]]
        nodes = [helper.make_node("ReduceMean", [INPUT_NAME], [OUTPUT_NAME], axes=[1], keepdims=0)]
        return _model(nodes, [], "window_mean_t", input_shape=shape, output_shape=frame)
    if nchw:  # a 1x1 Conv: output channel c sums channels 3 t + c, / span
        weight = np.zeros((3, 3 * span, 1, 1), dtype=np.float32)
        for t in range(span):
            weight[np.arange(3), 3 * t + np.arange(3)] = 1.0 / span
        nodes = [helper.make_node("Conv", [INPUT_NAME, "w"], [OUTPUT_NAME], kernel_shape=[1, 1])]
        shape = ["batch", 3 * span, "height", "width"]
        return _model(nodes, [_const("w", weight)], "window_mean_c", input_shape=shape,
                      output_shape=frame)  # fmt: skip
    nodes = [  # (b, H, W, 3 span) -> (b, H, W, span, 3) -> mean over the frames
        helper.make_node("Reshape", [INPUT_NAME, "frames"], ["split"]),
        helper.make_node("ReduceMean", ["split"], [OUTPUT_NAME], axes=[3], keepdims=0),
    ]
    inits = [_const("frames", np.array([0, 0, 0, span, 3], dtype=np.int64))]
    shape = ["batch", "height", "width", 3 * span]
    return _model(nodes, inits, "window_mean_hc", input_shape=shape, output_shape=frame)
