"""An image model's output scale read from its ONNX graph (:mod:`raypipe.infer.shapes`), on
the built-ins and on models shaped like real ones: a stride-32 U-Net, a fixed-size x2
upscaler, an NHWC one, and a graph whose output size depends on the pixels."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from raypipe.infer.builtin import INPUT_NAME, IR_VERSION, OPSET, OUTPUT_NAME, builtin_bytes
from raypipe.infer.models import FrameModel
from raypipe.infer.shapes import image_output_scale
from raypipe.infer.sidecar import ModelSpec, builtin_spec
from raypipe.testing.models import stride32_unet


@pytest.mark.parametrize(
    ("name", "scale"),
    [
        ("identity", 1.0),
        ("sharpen", 1.0),
        ("grayscale", 1.0),
        ("upscale2x", 2.0),
        ("superres", 2.0),
        ("denoise3", None),  # temporal: several frames in
        ("ema", None),  # temporal: recurrent state
    ],
)
def test_the_builtins_scales(name: str, scale: float | None) -> None:
    assert image_output_scale(builtin_bytes(name), builtin_spec(name)) == scale


def test_a_stride32_unet_keeps_its_size() -> None:
    spec = ModelSpec(pad_multiple=32)
    data = stride32_unet()
    assert image_output_scale(data, spec) == 1.0
    # and the model really does: run at a size only the probe's rounding makes legal
    out = FrameModel(data, spec=spec, device="cpu").run(np.zeros((1, 72, 100, 3), np.uint8), 1)
    assert out.shape == (1, 72, 100, 3)


def _model(nodes: list, inits: list, shape_in: list, shape_out: list) -> bytes:
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, shape_in)],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, shape_out)],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    )
    return model.SerializeToString()


def _upscale(scales: list[float], shape_in: list, shape_out: list) -> bytes:
    nodes = [helper.make_node("Resize", [INPUT_NAME, "", "scales"], [OUTPUT_NAME])]
    inits = [numpy_helper.from_array(np.array(scales, np.float32), name="scales")]
    return _model(nodes, inits, shape_in, shape_out)


def test_a_fixed_size_upscaler_scales_by_its_static_shapes() -> None:
    data = _upscale([1, 1, 2, 2], [1, 3, 64, 64], [1, 3, 128, 128])
    spec = ModelSpec(resize="stretch", input_size=(64, 64))
    assert image_output_scale(data, spec) == 2.0
    out = FrameModel(data, spec=spec, device="cpu").run(np.zeros((1, 90, 160, 3), np.uint8), 1)
    assert out.shape == (1, 180, 320, 3)  # mapped back to the frame, times the scale


def test_an_nhwc_upscaler() -> None:
    data = _upscale([1, 4, 4, 1], ["n", "h", "w", 3], ["n", "h4", "w4", 3])
    assert image_output_scale(data, ModelSpec(layout="NHWC")) == 4.0
    assert image_output_scale(data, ModelSpec(layout="NCHW")) is None  # channels scaled


def test_a_size_that_depends_on_the_pixels_is_unknown() -> None:
    # scales = [1, 1, s, s] with s = 2 + 0 * max(x): only running the model says s
    nodes = [
        helper.make_node("ReduceMax", [INPUT_NAME], ["peak"], keepdims=0),
        helper.make_node("Mul", ["peak", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "two"], ["s"]),
        helper.make_node("Reshape", ["s", "one"], ["s1"]),
        helper.make_node("Concat", ["ones", "s1", "s1"], ["scales"], axis=0),
        helper.make_node("Resize", [INPUT_NAME, "", "scales"], [OUTPUT_NAME]),
    ]
    inits = [
        numpy_helper.from_array(np.array(v, dtype), name=n)
        for n, v, dtype in [
            ("zero", 0.0, np.float32),
            ("two", 2.0, np.float32),
            ("one", [1], np.int64),
            ("ones", [1.0, 1.0], np.float32),
        ]
    ]
    data = _model(nodes, inits, ["n", 3, "h", "w"], ["n", 3, "oh", "ow"])
    out = FrameModel(data, spec=ModelSpec(), device="cpu").run(np.zeros((1, 8, 8, 3), np.uint8), 1)
    assert out.shape == (1, 16, 16, 3)  # an upscaler all the same
    assert image_output_scale(data, ModelSpec()) is None


def test_a_graph_onnx_cannot_read_is_unknown() -> None:
    assert image_output_scale(b"not an onnx model", ModelSpec()) is None


def test_a_named_output_is_the_one_measured() -> None:
    # two outputs: the first keeps the size, the named one doubles it
    nodes = [
        helper.make_node("Identity", [INPUT_NAME], ["same"]),
        helper.make_node("Resize", [INPUT_NAME, "", "scales"], [OUTPUT_NAME]),
    ]
    inits = [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), name="scales")]
    graph = helper.make_graph(
        nodes,
        "two",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [
            helper.make_tensor_value_info("same", TensorProto.FLOAT, ["n", 3, "h", "w"]),
            helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, None),
        ],
        initializer=inits,
    )
    data = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION
    ).SerializeToString()
    assert image_output_scale(data, ModelSpec()) == 1.0
    assert image_output_scale(data, ModelSpec(output_name=OUTPUT_NAME)) == 2.0
