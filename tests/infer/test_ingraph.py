"""Pre/post-processing inside the ONNX graph (uint8 frames in and out) gives the bits the
host path gives: every built-in image model, ModelSpec variants (NHWC, BGR, mean/std,
output ranges, fp16 and uint8 models, one channel out), with fixed batches, padding, tiles
and letterbox around it, NaN found as on the host, and the models it does not wrap. With
the YUV hand-off's conversion in front (packed I420 frames in), the same bits as the host
path on the RGB the decode task would have made."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from raypipe.errors import ModelError, ModelLoadError
from raypipe.infer import FrameModel, ModelSpec, builtin_bytes
from raypipe.infer.builtin import BUILTIN_IMAGE_MODELS
from raypipe.infer.ingraph import FRAMES, PIXELS, SUM, YUV, wrap_pixels
from raypipe.infer.iobinding import IOBindingRunner
from raypipe.infer.models import yuv_model_problem
from raypipe.infer.session import create_session
from raypipe.testing import models

if TYPE_CHECKING:
    from raypipe.media.yuv import YuvInput

Dims = Sequence[int | str]
DEFAULT = ModelSpec()
RNG = np.random.default_rng(15)
# every uint8 level in every channel, at an odd size
FRAMES_U8 = RNG.integers(0, 256, (5, 23, 41, 3), dtype=np.uint8)
FRAMES_U8[0].reshape(-1, 3)[:256] = np.arange(256, dtype=np.uint8)[:, None]


def model_of(
    nodes: list[onnx.NodeProto],
    in_type: int = TensorProto.FLOAT,
    out_type: int | None = None,
    in_dims: Dims = ("N", 3, "H", "W"),
    out_dims: Dims | None = None,
    consts: dict[str, np.ndarray] | None = None,
    opset: int = 17,
) -> bytes:
    graph = helper.make_graph(
        nodes,
        "core",
        [helper.make_tensor_value_info("input", in_type, list(in_dims))],
        [helper.make_tensor_value_info("output", out_type or in_type, list(out_dims or in_dims))],
        initializer=[numpy_helper.from_array(v, name=k) for k, v in (consts or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    return model.SerializeToString()


def affine(
    in_type: int = TensorProto.FLOAT, out_type: int | None = None, layout: str = "NCHW"
) -> bytes:
    """``x * w + b`` per channel (w, b differ per channel: channel order shows), cast to
    ``out_type``: rounding ties and values outside the output range both occur."""
    shape = (1, 3, 1, 1) if layout == "NCHW" else (1, 1, 1, 3)
    dtype = np.float16 if in_type == TensorProto.FLOAT16 else np.float32
    dims: Dims = ("N", 3, "H", "W") if layout == "NCHW" else ("N", "H", "W", 3)
    nodes = [
        helper.make_node("Mul", ["input", "w"], ["scaled"]),
        helper.make_node("Add", ["scaled", "b"], ["shifted"]),
    ]
    out_type = out_type or in_type
    if out_type != in_type:
        nodes.append(helper.make_node("Cast", ["shifted"], ["output"], to=out_type))
    else:
        nodes.append(helper.make_node("Identity", ["shifted"], ["output"]))
    consts = {
        "w": np.array([1.13, -0.71, 0.5], dtype).reshape(shape),
        "b": np.array([-0.05, 0.6, 0.25], dtype).reshape(shape),
    }
    return model_of(nodes, in_type, out_type, dims, consts=consts)


def flip_u8() -> bytes:
    """A uint8 model: ``255 - input``."""
    return model_of(
        [helper.make_node("Sub", ["max", "input"], ["output"])],
        TensorProto.UINT8,
        consts={"max": np.array(255, np.uint8)},
    )


def pair(data: bytes, spec: ModelSpec = DEFAULT) -> tuple[FrameModel, FrameModel]:
    host = FrameModel(data, spec=spec, device="cpu", intra_op_threads=1, pixels="host")
    graph = FrameModel(data, spec=spec, device="cpu", intra_op_threads=1, pixels="graph")
    assert (host.pixels, graph.pixels) == ("host", "graph"), graph.pixels_note
    return host, graph


def assert_same(data: bytes, spec: ModelSpec = DEFAULT, frames: np.ndarray = FRAMES_U8,
                batch_size: int = 2) -> np.ndarray:  # fmt: skip
    host, graph = pair(data, spec)
    expected = host.run(frames, batch_size)
    got = graph.run(frames, batch_size)
    assert got.dtype == np.uint8 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    return got


@pytest.mark.parametrize("name", [*BUILTIN_IMAGE_MODELS, "superres"])
@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec(),
        ModelSpec(color="BGR", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
        ModelSpec(scale=2 / 255, mean=(1.0, 1.0, 1.0), output_range=(-1.0, 1.0)),
    ],
    ids=["default", "bgr-imagenet", "minus1-1"],
)
def test_every_builtin_is_bit_exact(name: str, spec: ModelSpec) -> None:
    frames = FRAMES_U8[:2, :12, :16] if name == "superres" else FRAMES_U8
    assert_same(builtin_bytes(name), spec, frames)


VARIANTS = [
    (affine(layout="NHWC"), ModelSpec(layout="NHWC")),
    (affine(layout="NHWC"), ModelSpec(layout="NHWC", color="BGR", std=(0.3, 0.5, 0.7))),
    (affine(), ModelSpec(color="BGR")),
    (affine(), ModelSpec(mean=(0.2, 0.3, 0.4), std=(0.9, 1.1, 0.7))),
    (affine(), ModelSpec(output_range=(-0.25, 1.5))),
    (affine(), ModelSpec(output_range=(1.0, 0.0))),  # reversed: a negative gain
    (affine(), ModelSpec(output_range=(0.0, 255.0))),
    (affine(), ModelSpec(scale=1.0, output_range=(0.0, 255.0))),
    (affine(TensorProto.FLOAT16), ModelSpec()),
    (affine(TensorProto.FLOAT16), ModelSpec(color="BGR", mean=(0.5, 0.4, 0.3))),
    (affine(TensorProto.FLOAT16, TensorProto.FLOAT), ModelSpec(output_range=(-1.0, 1.0))),
    (affine(TensorProto.FLOAT, TensorProto.FLOAT16), ModelSpec()),
    (affine(TensorProto.FLOAT16, layout="NHWC"), ModelSpec(layout="NHWC", color="BGR")),
]
VARIANT_IDS = [
    "nhwc",
    "nhwc-bgr-std",
    "bgr",
    "mean-std",
    "range",
    "reversed-range",
    "range-255",
    "scale-1",
    "fp16",
    "fp16-bgr-mean",
    "fp16-in-fp32-out",
    "fp32-in-fp16-out",
    "fp16-nhwc-bgr",
]  # fmt: skip


@pytest.mark.parametrize(("data", "spec"), VARIANTS, ids=VARIANT_IDS)
def test_spec_variants_are_bit_exact(data: bytes, spec: ModelSpec) -> None:
    assert_same(data, spec)


def test_uint8_models_get_and_give_raw_pixels() -> None:
    flip = flip_u8()
    out = assert_same(flip, ModelSpec(color="BGR"))
    np.testing.assert_array_equal(out, 255 - FRAMES_U8)
    to_float = model_of(
        [helper.make_node("Cast", ["input"], ["output"], to=TensorProto.FLOAT)],
        TensorProto.UINT8,
        TensorProto.FLOAT,
    )
    assert_same(to_float, ModelSpec(output_range=(0.0, 255.0)))


def test_one_channel_output_is_repeated() -> None:
    mean = model_of(
        [helper.make_node("ReduceMean", ["input"], ["output"], axes=[1])],
        out_dims=("N", 1, "H", "W"),
    )
    out = assert_same(mean, ModelSpec(color="BGR"))
    assert (out == out[..., :1]).all()


def test_geometry_around_the_graph_is_bit_exact() -> None:
    assert_same(builtin_bytes("sharpen"), ModelSpec(tile=8, tile_overlap=2))
    assert_same(builtin_bytes("blur"), ModelSpec(pad_multiple=16), batch_size=3)
    assert_same(models.stride32_unet(), ModelSpec(pad_multiple=32))
    fixed = model_of([helper.make_node("Identity", ["input"], ["output"])], in_dims=(2, 3, 8, 8))
    assert_same(fixed, ModelSpec(resize="letterbox", pad_value=114), batch_size=4)
    assert_same(fixed, ModelSpec(resize="stretch"))


def test_memory_is_written_per_batch_into_one_output() -> None:
    _, graph = pair(builtin_bytes("upscale2x"))
    out = graph.run(FRAMES_U8, 2)
    assert out.shape == (5, 46, 82, 3) and out.flags.c_contiguous


@pytest.mark.parametrize("pixels", ["graph", "host"])
def test_memory_is_bounded_by_the_batch_not_the_chunk(pixels: str) -> None:
    """What a chunk's run allocates (numpy, traced) beyond its input: the uint8 output and
    a few batches of model tensors, never a float32 copy of the whole chunk (4x its bytes;
    issue 15: at 4K a chunk of 24 frames is 600 MB as uint8 RGB, 2.4 GB as float32)."""
    import tracemalloc

    frames = np.random.default_rng(3).integers(0, 256, (48, 96, 128, 3), dtype=np.uint8)
    model = FrameModel(builtin_bytes("sharpen"), device="cpu", pixels=pixels)
    model.run(frames[:2], 2)  # warm: the session's own first-run allocations
    tracemalloc.start()
    try:
        out = model.run(frames, 2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    batch_f32 = 2 * frames[0].size * 4
    assert out.shape == frames.shape
    assert peak <= out.nbytes + 8 * batch_f32, (peak, out.nbytes, batch_f32)
    assert peak < 2 * frames.size  # a float32 copy of the chunk is 4x frames.size


def test_nan_is_found_as_on_the_host() -> None:
    graph = FrameModel(models.nan_model(), device="cpu", pixels="graph")
    assert graph.pixels == "graph"
    with pytest.raises(ModelError, match="output 'output' holds NaN on 48x64"):
        graph.run(np.zeros((2, 48, 64, 3), np.uint8), 2)


def test_infinities_are_pixels_as_on_the_host() -> None:
    one_over = model_of(
        [helper.make_node("Div", ["one", "input"], ["output"])],
        consts={"one": np.array(0.004, np.float32)},
    )  # pixel 0 -> inf, 255, clipped; the sum is not finite, and no value is NaN
    out = assert_same(one_over)
    assert (out[FRAMES_U8 == 0] == 255).all()


@pytest.mark.parametrize(
    ("data", "spec", "why"),
    [
        (models.runtime_two_channels(), ModelSpec(), "output channel count is not declared"),
        (builtin_bytes("identity"), ModelSpec(output="tensor"), "a tensor model"),
        (
            model_of([helper.make_node("Identity", ["input"], ["output"])], opset=10),
            ModelSpec(),
            "its opset is 10; the wrapper needs 11",
        ),
    ],
)
def test_models_it_does_not_wrap_run_on_the_host(data: bytes, spec: ModelSpec, why: str) -> None:
    model = FrameModel(data, spec=spec, device="cpu", pixels="graph")
    assert model.pixels == "host" and why in model.pixels_note


def test_runtime_channel_check_still_raises_typed() -> None:
    model = FrameModel(models.runtime_two_channels(), device="cpu", pixels="graph")
    with pytest.raises(ModelLoadError, match="2 on the channel axis"):
        model.run(FRAMES_U8[:1, :8, :8], 2)


def test_16bit_frames_take_the_host_path_of_a_wrapped_model() -> None:
    frames16 = RNG.integers(0, 65536, (3, 9, 14, 3), dtype=np.uint16)
    host, graph = pair(affine(), ModelSpec(color="BGR", output_range=(-0.5, 1.0)))
    got = graph.run(frames16, 2)
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, host.run(frames16, 2))


def test_the_wrapper_is_one_graph_uint8_both_ways_and_deterministic() -> None:
    first = wrap_pixels(builtin_bytes("sharpen"), ModelSpec())
    assert first.data == wrap_pixels(builtin_bytes("sharpen"), ModelSpec()).data
    proto = onnx.load_model_from_string(first.data)
    onnx.checker.check_model(proto, full_check=True)
    types = {
        v.name: v.type.tensor_type.elem_type for v in [*proto.graph.input, *proto.graph.output]
    }
    assert types == {FRAMES: TensorProto.UINT8, PIXELS: TensorProto.UINT8,
                     SUM: TensorProto.FLOAT, "output": TensorProto.FLOAT}  # fmt: skip
    ops = [n.op_type for n in proto.graph.node]
    assert ops[:3] == ["Transpose", "Cast", "Mul"] and "Round" in ops and "Clip" in ops


def test_wrapped_graph_through_bound_buffers() -> None:
    """IO binding with uint8 buffers both ways (bind="cpu": the same code as on a GPU)."""
    graph = wrap_pixels(builtin_bytes("invert"), ModelSpec())
    session = create_session(graph.data, device="cpu")
    runner = IOBindingRunner(session, graph.input_name, graph.outputs, bind="cpu")
    for n in (2, 2, 1):
        pixels, total = runner.run_all(FRAMES_U8[:n])
        assert pixels.dtype == np.uint8 and total.dtype == np.float32
        np.testing.assert_array_equal(pixels, 255 - FRAMES_U8[:n])


def _sessions(**kwargs: Any) -> FrameModel:
    return FrameModel(builtin_bytes("identity"), device="cpu", **kwargs)


def test_pixels_mode_is_checked_and_auto_on_cpu_is_the_measured_choice() -> None:
    from raypipe.errors import ConfigError
    from raypipe.infer.models import CPU_PIXELS

    with pytest.raises(ConfigError, match="pixels must be 'auto', 'graph' or 'host', got 'gpu'"):
        _sessions(pixels="gpu")
    assert _sessions().pixels == CPU_PIXELS


@pytest.mark.gpu("ort-cuda")
@pytest.mark.parametrize("name", ["identity", "invert", "blur"])
def test_gpu_session_runs_the_graph_with_uint8_bound_both_ways(name: str) -> None:
    """On a GPU ``auto`` runs pre/post-processing in the graph, uint8 goes to the device and
    back (through ``session.run``, or bound buffers when asked for), and the frames are the
    host path's (on the same GPU provider)."""
    auto = FrameModel(builtin_bytes(name), device="gpu")
    host = FrameModel(builtin_bytes(name), device="gpu", pixels="host")
    assert auto.pixels == "graph" and host.pixels == "host"
    frames = RNG.integers(0, 256, (4, 64, 96, 3), dtype=np.uint8)
    got = auto.run(frames, 2)
    assert got.dtype == np.uint8 and auto._runners["pixels"].device is None
    np.testing.assert_array_equal(got, host.run(frames, 2))
    assert auto.pixel_graph is not None
    graph = auto.pixel_graph
    bound = IOBindingRunner(auto.session, graph.input_name, graph.outputs, bind="cuda")
    pixels = bound.run_all(frames[:2])[0]
    slot = next(iter(bound._slots.values()))
    assert slot.input.data_type() == "tensor(uint8)" and slot.input.device_name() == "cuda"
    assert slot.outputs[0].data_type() == "tensor(uint8)"
    np.testing.assert_array_equal(pixels, got[:2])


# --- the YUV hand-off: packed I420 frames in ------------------------------------------------

YUV_HW = (48, 64)


def yuv_frames(n: int = 5, seed: int = 2) -> tuple[YuvInput, np.ndarray, np.ndarray]:
    """Packed I420 frames of random samples (0..255: values outside RGB clip) and the RGB
    frames swscale makes of them (tests/media/test_yuv.py: the tables are swscale's). PyAV
    is imported here, not with the module: GPU machines may run this module without it."""
    from raypipe.media.yuv import YuvInput, packed_to_rgb, rgb_tables

    source = YuvInput(*YUV_HW, "bt709", "tv")
    packed = np.random.default_rng(seed).integers(0, 256, (n, source.packed_size), dtype=np.uint8)
    tables = rgb_tables(source.matrix, source.range)
    return source, packed, packed_to_rgb(packed, *YUV_HW, tables)


def assert_same_from_yuv(data: bytes, spec: ModelSpec = DEFAULT, batch_size: int = 2) -> None:
    source, packed, rgb = yuv_frames()
    host = FrameModel(data, spec=spec, device="cpu", intra_op_threads=1, pixels="host")
    model = FrameModel(data, spec=spec, device="cpu", intra_op_threads=1, yuv=source)
    assert model.pixels == "graph" and model.pixel_graph is not None
    assert model.pixel_graph.input_name == YUV
    expected = host.run(rgb, batch_size)
    got = model.run(packed, batch_size)
    assert got.dtype == np.uint8 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name", BUILTIN_IMAGE_MODELS)
def test_every_builtin_from_yuv_is_bit_exact(name: str) -> None:
    assert_same_from_yuv(builtin_bytes(name), batch_size=3)


@pytest.mark.parametrize(("data", "spec"), VARIANTS, ids=VARIANT_IDS)
def test_spec_variants_from_yuv_are_bit_exact(data: bytes, spec: ModelSpec) -> None:
    assert_same_from_yuv(data, spec)


def test_uint8_and_fixed_batch_models_from_yuv_are_bit_exact() -> None:
    flip = flip_u8()
    assert_same_from_yuv(flip, ModelSpec(color="BGR"))
    fixed = model_of(
        [helper.make_node("Identity", ["input"], ["output"])], in_dims=(4, 3, "H", "W")
    )
    assert_same_from_yuv(fixed, batch_size=2)  # 5 frames: the last batch is padded


def test_the_yuv_graph_takes_packed_rows_and_holds_its_tables() -> None:
    source, packed, _ = yuv_frames(2)
    model = FrameModel(builtin_bytes("identity"), device="cpu", yuv=source)
    assert model.pixel_graph is not None
    proto = onnx.load_model_from_string(model.pixel_graph.data)
    (inp,) = proto.graph.input
    assert inp.name == YUV and inp.type.tensor_type.elem_type == TensorProto.UINT8
    assert [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim] == [
        "batch",
        source.packed_size,
    ]
    constants = sum(len(t.raw_data) for t in proto.graph.initializer)
    # the tables as int32: R and B 256 KiB each, G's columns 256 x 4 bytes each (BT.709:
    # 6,548 columns, 6.4 MiB, with swscale's accurate rounding: media/rgb.py)
    assert constants < 8 * 1024 * 1024
    with pytest.raises(ValueError, match="expected packed YUV frames"):
        model.run(np.zeros((2, *YUV_HW, 3), np.uint8), 2)
    assert model.warmup(*YUV_HW, 2).shape == (2, *YUV_HW, 3)


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        (ModelSpec(tile=16, tile_overlap=4), "its frames are tiled"),
        (ModelSpec(pad_multiple=32), "64x48 frames are padded to multiples of 32"),
    ],
)
def test_models_whose_frames_change_size_do_not_take_yuv(spec: ModelSpec, why: str) -> None:
    source, _, _ = yuv_frames(1)
    with pytest.raises(ModelLoadError, match=f"does not fit this model: {why}"):
        FrameModel(builtin_bytes("sharpen"), spec=spec, device="cpu", yuv=source)
    assert FrameModel(builtin_bytes("sharpen"), spec=ModelSpec(pad_multiple=16), yuv=source)
    fixed = model_of([helper.make_node("Identity", ["input"], ["output"])], in_dims=(2, 3, 8, 8))
    assert yuv_model_problem(fixed, ModelSpec(resize="stretch")) == (
        "its frames are resized (stretch) on RGB"
    )
    assert yuv_model_problem(builtin_bytes("sharpen"), ModelSpec(tile=16)) == (
        "its frames are tiled on RGB"
    )
    assert yuv_model_problem(builtin_bytes("sharpen"), DEFAULT) == ""
    unwrapped = model_of([helper.make_node("Identity", ["input"], ["output"])], opset=10)
    assert "opset is 10" in yuv_model_problem(unwrapped, DEFAULT)
    with pytest.raises(ModelLoadError, match="the YUV hand-off runs the model's wrapped graph"):
        FrameModel(unwrapped, device="cpu", yuv=source)


@pytest.mark.gpu("ort-cuda")
@pytest.mark.parametrize("name", ["identity", "sharpen", "upscale2x"])
def test_gpu_session_converts_yuv_in_the_graph(name: str) -> None:
    """On a GPU the YUV hand-off's conversion runs in the graph on the device, packed uint8
    in and RGB uint8 out, and the frames are the host path's on the RGB decode makes."""
    pytest.importorskip("av")  # swscale's tables
    source, packed, rgb = yuv_frames(4)
    model = FrameModel(builtin_bytes(name), device="gpu", yuv=source)
    assert model.providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
    host = FrameModel(builtin_bytes(name), device="gpu", pixels="host")
    np.testing.assert_array_equal(model.run(packed, 2), host.run(rgb, 2))
