"""pad_multiple: edge padding to a multiple of the model's stride, output cropped back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from raypipe.config import build_run_config
from raypipe.errors import ConfigError, ModelError, ModelLoadError
from raypipe.infer import FrameModel, ModelSpec, builtin_bytes, load_sidecar, run_tiled
from raypipe.infer.models import postprocess, preprocess
from raypipe.infer.padding import crop_image, crop_map, pad_batch, padded_size
from raypipe.infer.session import create_session
from raypipe.testing.models import stride32_unet

SIZES = [(720, 1280), (110, 198)]  # (height, width): the acceptance clips' sizes


def frames_of(height: int, width: int, n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def edge_padded(frames: np.ndarray, multiple: int) -> np.ndarray:
    """The reference: numpy's edge padding of uint8 frames at the bottom and right."""
    h, w = frames.shape[1:3]
    pad = ((0, 0), (0, padded_size(h, multiple) - h), (0, padded_size(w, multiple) - w), (0, 0))
    return np.pad(frames, pad, mode="edge")


def test_padded_size_and_pad_batch_replicate_the_last_row_and_column() -> None:
    assert [padded_size(s, 32) for s in (1, 31, 32, 33, 110, 720)] == [32, 32, 32, 64, 128, 736]
    x = np.arange(2 * 3 * 5 * 7, dtype=np.float32).reshape(2, 3, 5, 7)
    y = pad_batch(x, 4, "NCHW")
    assert y.shape == (2, 3, 8, 8)
    assert np.array_equal(y[:, :, :5, :7], x)
    assert np.array_equal(y[:, :, 7, :7], x[:, :, 4, :]) and np.array_equal(y[..., 7], y[..., 6])
    assert pad_batch(y, 4, "NCHW") is y  # already a multiple: untouched
    nhwc = pad_batch(x.transpose(0, 2, 3, 1), 4, "NHWC")
    assert np.array_equal(nhwc, y.transpose(0, 2, 3, 1))


def test_crops_scale_with_the_model_and_leave_other_tensors() -> None:
    up = np.zeros((1, 3, 16, 24))  # 2x of a padded 8x12 input
    assert crop_image(up, (5, 7), (8, 12), "NCHW").shape == (1, 3, 10, 14)
    assert crop_map(up, (5, 7), (8, 12), "NCHW").shape == (1, 3, 10, 14)
    assert crop_map(np.zeros((1, 80)), (5, 7), (8, 12), "NCHW").shape == (1, 80)
    assert crop_map(np.zeros((1, 1, 2, 3)), (5, 7), (8, 12), "NCHW").shape == (1, 1, 2, 3)
    with pytest.raises(
        ModelError, match="one whole number in both height and width; drop pad_multiple"
    ):
        crop_image(np.zeros((1, 3, 12, 12)), (5, 7), (8, 12), "NCHW")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[1]}x{s[0]}")
def test_stride32_model_padded_equals_model_on_padded_frame_cropped(
    size: tuple[int, int],
) -> None:
    frames = frames_of(*size)
    data = stride32_unet()
    bare = FrameModel(data, device="cpu")
    with pytest.raises(ModelError, match="try --pad-multiple 32"):
        bare.run(frames, 2)
    padded = FrameModel(data, spec=ModelSpec(pad_multiple=32), device="cpu").run(frames, 2)
    expected = bare.run(edge_padded(frames, 32), 2)[:, : size[0], : size[1]]
    assert padded.shape == frames.shape
    assert np.array_equal(padded, expected)


def test_upscaler_output_is_cropped_at_its_own_scale() -> None:
    frames = frames_of(110, 198)
    data = builtin_bytes("upscale2x")
    out = FrameModel(data, spec=ModelSpec(pad_multiple=32), device="cpu").run(frames, 2)
    full = FrameModel(data, device="cpu").run(edge_padded(frames, 32), 2)
    assert out.shape == (2, 220, 396, 3)
    assert np.array_equal(out, full[:, :220, :396])


def test_tiles_are_padded_window_by_window() -> None:
    """tile 40 + 2 x 8 overlap = 56 px windows, which the stride-32 model refuses; padded to
    64 each they run, and the result is run_tiled over the padded-and-cropped model."""
    frames = frames_of(110, 198)
    data = stride32_unet()
    spec = ModelSpec(tile=40, tile_overlap=8, pad_multiple=32)
    out = FrameModel(data, spec=spec, device="cpu").run(frames, 2)
    session = create_session(data, device="cpu")

    def padded_model(window: np.ndarray) -> np.ndarray:
        h, w = window.shape[2:]
        pad = ((0, 0), (0, 0), (0, padded_size(h, 32) - h), (0, padded_size(w, 32) - w))
        x = np.pad(window, pad, mode="edge")
        return np.asarray(session.run(["output"], {"input": x})[0])[:, :, :h, :w]

    x = preprocess(frames, ModelSpec(), np.float32)
    expected = postprocess(run_tiled(padded_model, x, 40, 8), ModelSpec())
    assert np.array_equal(out, expected)
    with pytest.raises(ModelError, match="pad-multiple"):
        FrameModel(data, spec=ModelSpec(tile=40, tile_overlap=8), device="cpu").run(frames, 2)


def _map_and_vector_model() -> bytes:
    """Outputs ``map`` (the stride-32 block, same size as the input) and ``mean`` (n, 3)."""
    unet = onnx.load_model_from_string(stride32_unet())
    graph = unet.graph
    graph.node.append(helper.make_node("ReduceMean", ["output"], ["mean"], axes=[2, 3], keepdims=0))
    graph.output[0].name = "map"
    for node in graph.node:
        node.input[:] = ["map" if i == "output" else i for i in node.input]
        node.output[:] = ["map" if o == "output" else o for o in node.output]
    graph.output.append(helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["batch", 3]))
    return unet.SerializeToString()


def test_tensor_outputs_maps_cropped_vectors_kept() -> None:
    frames = frames_of(110, 198)
    data = _map_and_vector_model()
    spec = ModelSpec(output="tensor", pad_multiple=32)
    out = FrameModel(data, spec=spec, device="cpu").run_tensors(frames, 2)
    ref = FrameModel(data, spec=ModelSpec(output="tensor"), device="cpu").run_tensors(
        edge_padded(frames, 32), 2
    )
    assert out["map"].shape == (2, 3, 110, 198)
    assert np.array_equal(out["map"], ref["map"][:, :, :110, :198])
    assert np.array_equal(out["mean"], ref["mean"])  # the padded frame's mean, as the model saw


def test_spec_sidecar_and_options_validate(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pad_multiple must be an integer >= 1"):
        ModelSpec(pad_multiple=0)
    with pytest.raises(ConfigError, match="do not combine"):
        ModelSpec(pad_multiple=32, resize="letterbox", input_size=(64, 64))
    model = tmp_path / "det.onnx"
    model.write_bytes(stride32_unet())
    (tmp_path / "det.raypipe.json").write_text(json.dumps({"pad_multiple": 32}))
    assert load_sidecar(str(model)) == ModelSpec(pad_multiple=32)
    assert build_run_config(pad_multiple=32).model.pad_multiple == 32
    with pytest.raises(ConfigError, match="pad_multiple must be an integer >= 1"):
        build_run_config(pad_multiple=-1)


def test_fixed_size_model_refuses_padding() -> None:
    fixed = onnx.load_model_from_string(builtin_bytes("identity"))
    for value in (fixed.graph.input[0], fixed.graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        dims[2].dim_value, dims[3].dim_value = 64, 64
    with pytest.raises(ModelLoadError, match="pad_multiple needs a model with dynamic height"):
        FrameModel(fixed.SerializeToString(), spec=ModelSpec(pad_multiple=32), device="cpu")


def test_load_model_applies_the_run_override() -> None:
    from raypipe.distributed.setup import load_model

    loaded = load_model(build_run_config(model="builtin:invert", pad_multiple=16))
    assert loaded.spec is not None and loaded.spec.pad_multiple == 16


def test_a_model_that_shrinks_its_frames_is_refused_padding_at_load_and_in_model_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 0.5x model with pad_multiple passed the load and `model show` (exit 0), then failed
    at its first chunk after Ray's start (a sweep); a 2x one pads and crops as it should."""
    from raypipe.cli import main
    from raypipe.distributed.setup import load_model

    dims = ["N", 3, "H", "W"]
    graph = helper.make_graph(
        [
            helper.make_node(
                "AveragePool", ["input"], ["output"], kernel_shape=[2, 2], strides=[2, 2]
            )
        ],
        "half",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, "H2", "W2"])],
    )
    path = tmp_path / "half.onnx"
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path
    )
    (tmp_path / "half.raypipe.json").write_text(json.dumps({"pad_multiple": 32}))
    match = r"the model's output is 0.5x its input's size, and pad_multiple needs an output"
    with pytest.raises(ModelLoadError, match=match):
        load_model(build_run_config(model=str(path)))
    assert main(["model", "show", str(path)]) == 1
    assert "0.5x its input's size, and pad_multiple" in capsys.readouterr().err
    up = tmp_path / "up.onnx"
    up.write_bytes(builtin_bytes("upscale2x"))
    (tmp_path / "up.raypipe.json").write_text(json.dumps({"pad_multiple": 32}))
    load_model(build_run_config(model=str(up)))
