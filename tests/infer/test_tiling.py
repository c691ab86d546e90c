"""Tiling: with overlap >= the receptive-field radius, tiled output equals untiled output."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from onnx import TensorProto, helper

from raypipe.errors import ConfigError, ModelLoadError
from raypipe.infer import FrameModel, ModelSpec, builtin_bytes, run_tiled
from raypipe.infer.session import create_session
from raypipe.infer.tiling import FrameGeometry, Tile, tile_axis

RADIUS = {"blur": 2, "sharpen": 1, "upscale2x": 1, "identity": 0}
SCALE = {"blur": 1, "sharpen": 1, "upscale2x": 2, "identity": 1}


def session_fn(name: str) -> Callable[[np.ndarray], np.ndarray]:
    session = create_session(builtin_bytes(name), device="cpu", intra_op_threads=1)

    def run(x: np.ndarray) -> np.ndarray:
        (y,) = session.run(["output"], {"input": x})
        return np.asarray(y)

    return run


def float_frames(shape: tuple[int, ...] = (1, 3, 100, 130), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def uint8_frames(n: int = 2, height: int = 100, width: int = 130) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


# --- tile_axis ----------------------------------------------------------------------------


def test_tile_axis_windows_are_one_size_and_hold_their_cores() -> None:
    tiles = tile_axis(100, 32, 4)
    assert [(t.core_start, t.core_end) for t in tiles] == [(0, 32), (32, 64), (64, 96), (96, 100)]
    assert tiles[0] == Tile(0, 40, 0, 32)  # the frame edge: shifted in, not padded
    assert tiles[1] == Tile(28, 68, 32, 64)
    assert tiles[-1] == Tile(60, 100, 96, 100)  # shifted back inside the frame
    for t in tiles:
        assert t.end - t.start == 40
        assert t.start <= t.core_start < t.core_end <= t.end
        assert t.core_start - t.start >= 4 or t.start == 0
        assert t.end - t.core_end >= 4 or t.end == 100


def test_tile_axis_small_frame_is_one_window() -> None:
    assert tile_axis(20, 32, 4) == [Tile(0, 20, 0, 20)]
    assert tile_axis(50, 32, 16) == [Tile(0, 50, 0, 32), Tile(0, 50, 32, 50)]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((100, 0, 4), "tile must be an integer >= 1, got 0"),
        ((100, 32, -1), "overlap must be an integer >= 0, got -1"),
        ((0, 32, 4), "size must be an integer >= 1, got 0"),
    ],
)
def test_tile_axis_checks_arguments(args: tuple[int, int, int], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        tile_axis(*args)


# --- run_tiled on float tensors -----------------------------------------------------------


@pytest.mark.parametrize("tile", [32, 37, 50, 128, 200])
@pytest.mark.parametrize("name", ["blur", "sharpen", "upscale2x"])
def test_tiled_equals_untiled_float(name: str, tile: int) -> None:
    run = session_fn(name)
    x = float_frames()
    whole = run(x)
    tiled = run_tiled(run, x, tile, 4, scale=SCALE[name])
    assert tiled.shape == whole.shape
    np.testing.assert_allclose(tiled, whole, atol=1e-6, rtol=0)
    assert np.array_equal(tiled, whole)  # measured: bit-identical on ONNX Runtime CPU


@pytest.mark.parametrize("name", ["blur", "sharpen", "upscale2x"])
def test_overlap_equal_to_the_radius_is_enough(name: str) -> None:
    run = session_fn(name)
    x = float_frames((2, 3, 61, 47), seed=3)
    tiled = run_tiled(run, x, 16, RADIUS[name], scale=None)  # scale read from the output
    assert np.array_equal(tiled, run(x))


@pytest.mark.parametrize("name", ["blur", "sharpen"])
def test_overlap_below_the_radius_shows_seams(name: str) -> None:
    run = session_fn(name)
    x = float_frames()
    tiled = run_tiled(run, x, 32, RADIUS[name] - 1)
    assert not np.allclose(tiled, run(x), atol=1e-3)  # the test above is not vacuous


def test_nhwc_layout() -> None:
    run = session_fn("blur")
    x = float_frames((1, 3, 40, 52))
    nhwc = x.transpose(0, 2, 3, 1)

    def run_nhwc(w: np.ndarray) -> np.ndarray:
        return run(np.ascontiguousarray(w.transpose(0, 3, 1, 2))).transpose(0, 2, 3, 1)

    tiled = run_tiled(run_nhwc, nhwc, 16, 2, layout="NHWC")
    assert np.array_equal(tiled, run(x).transpose(0, 2, 3, 1))


def test_run_tiled_rejects_outputs_of_the_wrong_size() -> None:
    run = session_fn("upscale2x")
    match = r"model output for a tile of shape \(1, 3, 40, 40\) has shape \(1, 3, 80, 80\); tiling"
    with pytest.raises(ModelLoadError, match=match):
        run_tiled(run, float_frames(), 32, 4, scale=1)
    with pytest.raises(
        ModelLoadError,
        match="one whole number \\(at least 1\\) in both height and width; run this model",
    ):
        run_tiled(lambda w: w[:, :, ::2], float_frames(), 32, 4, scale=None)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"scale": 0}, ConfigError, r"scale must be an integer >= 1 or None \(read it\), got 0"),
        ({"layout": "CHW"}, ConfigError, "layout must be 'NCHW' or 'NHWC', got 'CHW'"),
    ],
)
def test_run_tiled_checks_arguments(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        run_tiled(lambda w: w, float_frames(), 32, 4, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"run_tiled takes a rank-4 batch \(NCHW\), got shape"):
        run_tiled(lambda w: w, np.zeros((3, 4, 4), np.float32), 32, 4)


# --- FrameModel with ModelSpec.tile -------------------------------------------------------


def cpu_model(name: str, spec: ModelSpec) -> FrameModel:
    return FrameModel(builtin_bytes(name), spec=spec, device="cpu", intra_op_threads=1)


@pytest.mark.parametrize(("tile", "overlap"), [(32, 4), (37, 2), (48, 16), (500, 4)])
@pytest.mark.parametrize("name", ["blur", "sharpen", "upscale2x"])
def test_frame_model_tiled_equals_untiled_on_every_pixel(
    name: str, tile: int, overlap: int
) -> None:
    frames = uint8_frames()
    whole = cpu_model(name, ModelSpec()).run(frames, batch_size=2)
    tiled = cpu_model(name, ModelSpec(tile=tile, tile_overlap=overlap)).run(frames, batch_size=2)
    assert tiled.shape == whole.shape == (2, 100 * SCALE[name], 130 * SCALE[name], 3)
    assert np.array_equal(tiled, whole)


def fixed_identity(size: int) -> bytes:
    dims: list[int | str] = ["N", 3, size, size]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "fixed",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, dims)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    return model.SerializeToString()


def test_fixed_size_model_runs_in_tiles_of_its_size() -> None:
    spec = ModelSpec(tile=24, tile_overlap=4)  # windows of 24 + 2 x 4 = 32 px
    model = FrameModel(fixed_identity(32), spec=spec, device="cpu")
    frames = uint8_frames(1, 70, 90)
    assert np.array_equal(model.run(frames, 1), frames)
    match = r"frames of 20x90 \(height x width\) px are smaller than the model's 32x32 px tiles"
    with pytest.raises(ModelLoadError, match=match):
        model.run(uint8_frames(1, 20, 90), 1)


def test_a_fixed_size_models_refusals_point_to_tiles_and_resizing() -> None:
    """The two refusals sent a user round in a circle (a sweep): frames larger than a
    fixed-size image model were told to resize, never to tile; tiles larger than the
    frames were told to run without tile, never to resize."""
    model = FrameModel(fixed_identity(64), device="cpu")
    with pytest.raises(ModelLoadError, match=r"got 70x90; pass --resize stretch or letterbox "
                       r"\(\"resize\" in its sidecar, resize=... in Python\), or --tile 32 "
                       r"\(--tile-overlap 16: windows of the model's size\)"):  # fmt: skip
        model.run(uint8_frames(1, 70, 90), 1)
    smaller = r"got 40x90; pass --resize stretch or letterbox \(\"resize\" in its sidecar, "
    with pytest.raises(ModelLoadError, match=smaller + r"resize=... in Python\), resize the"):
        model.run(uint8_frames(1, 40, 90), 1)  # smaller: tiles cannot help
    tiled = FrameModel(fixed_identity(32), spec=ModelSpec(tile=24, tile_overlap=4), device="cpu")
    with pytest.raises(ModelLoadError, match="tiles; run without tile and pass --resize"):
        tiled.run(uint8_frames(1, 20, 90), 1)


def test_a_fixed_size_classifier_is_not_told_to_tile() -> None:
    """A 224x224 classifier's refusal said to try ``--tile``, which then refused it: tiles
    need an image output (a sweep). Its refusal names the resizes only."""
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["logits"])],
        "classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    data = model.SerializeToString()
    classifier = FrameModel(data, device="cpu")
    with pytest.raises(ModelLoadError) as refused:
        classifier.run_tensors(uint8_frames(1, 70, 90), 1)
    assert "got 70x90; pass --resize stretch or letterbox" in str(refused.value)
    assert "--tile" not in str(refused.value)
    stretched = FrameModel(data, spec=ModelSpec(resize="stretch"), device="cpu")
    assert stretched.run_tensors(uint8_frames(1, 70, 90), 1)["logits"].shape == (1, 3)


def test_fixed_size_model_with_a_tile_that_does_not_fit() -> None:
    match = (
        r"model input 'input' takes 32x32 \(height x width\) frames, but tile=32 with "
        r"tile_overlap=16 makes 64x64 px tiles; set tile = model size - 2 x tile_overlap"
    )
    with pytest.raises(ModelLoadError, match=match):
        FrameModel(fixed_identity(32), spec=ModelSpec(tile=32), device="cpu")


@pytest.mark.parametrize(
    ("geometry", "hw", "call"),
    [
        (dict(fixed_size=(None, None)), (2160, 3840), (2160, 3840)),
        (dict(fixed_size=(None, None), pad_multiple=32), (1080, 1920), (1088, 1920)),
        (dict(fixed_size=(None, None), tile=512, tile_overlap=16), (2160, 3840), (544, 544)),
        # frames smaller than the window are one window of their own size
        (dict(fixed_size=(None, None), tile=512, tile_overlap=16), (360, 3840), (360, 544)),
        (dict(fixed_size=(None, None), tile=500, tile_overlap=10, pad_multiple=32), (2160, 3840),
         (544, 544)),
        (dict(fixed_size=(224, 224), resize="stretch"), (2160, 3840), (224, 224)),
    ],
)  # fmt: skip
def test_a_calls_frame_size(geometry: dict, hw: tuple[int, int], call: tuple[int, int]) -> None:
    """What one model call gets, the size the TensorRT profile is built for."""
    assert FrameGeometry(**geometry).call_hw(*hw) == call
