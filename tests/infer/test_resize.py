"""Fixed-size models: frames stretched or letterboxed to the model's input, and mapped back."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from raypipe.errors import ConfigError, ModelLoadError
from raypipe.infer import (
    LETTERBOX_KEYS,
    FrameModel,
    ModelSpec,
    builtin_bytes,
    fit_frames,
    fit_params,
    letterbox_to_source,
    source_to_letterbox,
    unfit_frames,
)

Dims = Sequence[int | str]


def model_bytes(
    nodes: list[Any],
    outputs: dict[str, Dims],
    in_dims: Dims = ("N", 3, 224, 224),
    consts: dict[str, np.ndarray] | None = None,
) -> bytes:
    graph = helper.make_graph(
        nodes,
        "fixed",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(in_dims))],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v)) for k, v in outputs.items()],
        initializer=[numpy_helper.from_array(v, name=k) for k, v in (consts or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    data: bytes = model.SerializeToString()
    return data


IDENTITY_224 = model_bytes(
    [helper.make_node("Identity", ["input"], ["output"])], {"output": ("N", 3, 224, 224)}
)
UPSCALE_224 = model_bytes(  # a fixed-size 2x upscaler: 224 -> 448
    [helper.make_node("Resize", ["input", "", "scales"], ["output"], mode="linear")],
    {"output": ("N", 3, 448, 448)},
    consts={"scales": np.array([1, 1, 2, 2], dtype=np.float32)},
)
TENSOR_224 = model_bytes(  # two outputs: per-channel means and a 7x7 pooled map
    [
        helper.make_node("ReduceMean", ["input"], ["mean"], axes=[2, 3], keepdims=0),
        helper.make_node(
            "AveragePool", ["input"], ["pooled"], kernel_shape=[32, 32], strides=[32, 32]
        ),
    ],
    {"mean": ("N", 3), "pooled": ("N", 3, 7, 7)},
)


def smooth_frames(n: int = 2, height: int = 720, width: int = 1280) -> np.ndarray:
    """Low-frequency frames (upsampled noise) that survive a 224 px round trip."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (n, 9, 16, 3), dtype=np.uint8)
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_CUBIC) for f in small])


def cpu(data: bytes, **spec: Any) -> FrameModel:
    return FrameModel(data, spec=ModelSpec(**spec), device="cpu", intra_op_threads=1)


# --- geometry -----------------------------------------------------------------------------


def test_fit_params_letterbox_720p_to_224() -> None:
    params = fit_params((720, 1280), (224, 224), "letterbox")
    assert params.content_size == (126, 224)
    assert (params.pad_y, params.pad_x) == (49, 0)
    assert params.scale_x == pytest.approx(224 / 1280)
    assert params.scale_y == pytest.approx(126 / 720)
    stretch = fit_params((720, 1280), (224, 224), "stretch")
    assert (stretch.content_size, stretch.pad_y, stretch.pad_x) == ((224, 224), 0, 0)


def test_letterbox_points_round_trip() -> None:
    params = fit_params((720, 1280), (224, 224), "letterbox")
    corners = np.array([[0.0, 0.0], [1280.0, 720.0], [640.0, 360.0]])
    model_xy = source_to_letterbox(corners, params)
    np.testing.assert_allclose(model_xy[0], [0.0, 49.0])
    np.testing.assert_allclose(model_xy[1], [224.0, 175.0])
    np.testing.assert_allclose(letterbox_to_source(model_xy, params), corners)
    with pytest.raises(ValueError, match=r"xy must have shape \(\.\.\., 2\) holding \(x, y\)"):
        letterbox_to_source(np.zeros(3), params)


def test_fit_and_unfit_frames_pad_and_crop() -> None:
    frames = smooth_frames(1)
    params = fit_params((720, 1280), (224, 224), "letterbox")
    fitted = fit_frames(frames, params, pad_value=114)
    assert fitted.shape == (1, 224, 224, 3)
    assert (fitted[:, :49] == 114).all() and (fitted[:, 175:] == 114).all()
    assert (fitted[:, 49:175] != 114).any()
    back = unfit_frames(fitted, params)
    assert back.shape == frames.shape


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (((0, 10), (224, 224), "stretch"), r"source_size must be \(height, width\), two integers"),
        (
            ((10, 10), (224, 224), "none"),
            "resize mode must be 'stretch' or 'letterbox', got 'none'",
        ),
    ],
)
def test_fit_params_checks_arguments(args: tuple[Any, ...], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        fit_params(*args)


# --- acceptance: a 224x224 model on 1280x720 frames ---------------------------------------


def test_stretch_runs_a_224_model_on_720p_and_maps_back() -> None:
    frames = smooth_frames()
    model = cpu(IDENTITY_224, resize="stretch")
    assert model.model_size == (224, 224)
    out = model.run(frames, batch_size=2)
    assert out.shape == (2, 720, 1280, 3)
    error = np.abs(out.astype(int) - frames).mean()
    print(f"stretch 1280x720 -> 224x224 -> 1280x720 identity: mean abs error {error:.2f} levels")
    assert error < 3


def test_letterbox_runs_a_224_model_on_720p_and_crops_the_padding() -> None:
    frames = smooth_frames()
    model = cpu(IDENTITY_224, resize="letterbox", pad_value=0)
    out = model.run(frames, batch_size=2)
    assert out.shape == (2, 720, 1280, 3)
    error = np.abs(out.astype(int) - frames).mean()
    print(f"letterbox 1280x720 -> 224x224 -> 1280x720 identity: mean abs error {error:.2f} levels")
    assert error < 3
    # No black band survives: the top and bottom rows are the frame's, not the padding's.
    for rows in (slice(0, 8), slice(-8, None)):
        edge_error = np.abs(out[:, rows].astype(int) - frames[:, rows]).mean()
        assert edge_error < 6
        assert out[:, rows].mean() > 20


def test_letterbox_upscaler_maps_back_at_its_scale() -> None:
    frames = smooth_frames(1)
    out = cpu(UPSCALE_224, resize="letterbox").run(frames, 1)
    assert out.shape == (1, 1440, 2560, 3)
    reference = cv2.resize(frames[0], (2560, 1440), interpolation=cv2.INTER_LINEAR)
    assert np.abs(out[0].astype(int) - reference).mean() < 3


def test_tensor_model_keeps_model_coordinates_and_adds_letterbox_columns() -> None:
    frames = smooth_frames(3)
    model = cpu(TENSOR_224, resize="letterbox")
    assert model.output_kind == "tensor"
    out = model.run_tensors(frames, batch_size=2)
    assert list(out) == ["mean", "pooled", *LETTERBOX_KEYS]
    assert out["mean"].shape == (3, 3)
    assert out["pooled"].shape == (3, 3, 7, 7)
    np.testing.assert_allclose(out["letterbox_scale_x"], 224 / 1280)
    np.testing.assert_allclose(out["letterbox_scale_y"], 126 / 720)
    assert out["letterbox_pad_x"].tolist() == [0, 0, 0]
    assert out["letterbox_pad_y"].tolist() == [49, 49, 49]
    params = model.fit_params(720, 1280)
    assert params is not None
    expected = fit_frames(frames, params).astype(np.float32).mean(axis=(1, 2)) / 255
    np.testing.assert_allclose(out["mean"], expected, atol=1e-5)
    assert (out["pooled"][:, :, 0] < 0.5).all()  # the top row of cells is mostly padding


def test_tensor_model_without_resize_adds_no_columns() -> None:
    frames = smooth_frames(1, 224, 224)
    out = cpu(TENSOR_224).run_tensors(frames, 1)
    assert list(out) == ["mean", "pooled"]


def test_dynamic_model_with_input_size() -> None:
    frames = smooth_frames(1)
    out = cpu(builtin_bytes("identity"), resize="stretch", input_size=(90, 160)).run(frames, 1)
    assert out.shape == (1, 720, 1280, 3)


# --- errors -------------------------------------------------------------------------------


def test_resize_needs_a_size() -> None:
    match = (
        r"resize='stretch' needs the model's input size, but model input 'input' takes frames "
        r"of any height and width; give it as \"input_size\": \[HEIGHT, WIDTH\] in the "
        r"model's sidecar \(NAME.raypipe.json\), or ModelSpec.input_size=\(height, width\)$"
    )
    with pytest.raises(ModelLoadError, match=match):
        cpu(builtin_bytes("identity"), resize="stretch")
    # a size to resize to, and no resize: refused where the model loads (a sidecar's
    # input_size meets the command line's --resize after the sidecar is read)
    with pytest.raises(
        ConfigError,
        match=r"input_size=\(224, 224\) is the size frames are resized to and needs "
        r"resize='stretch' or 'letterbox' \(--resize\), got resize='none'",
    ):
        cpu(builtin_bytes("identity"), input_size=(224, 224))


def test_a_sidecars_input_size_meets_the_command_lines_resize(tmp_path: Path) -> None:
    """A model of any size, its sidecar giving the size to resize to, and ``--resize``
    on the command line: the sidecar was refused alone ("needs resize"), before the
    command line's resize joined it, so a CLI user could not resize for such a model."""
    from raypipe.config import build_run_config
    from raypipe.distributed.setup import load_model

    path = tmp_path / "any.onnx"
    path.write_bytes(builtin_bytes("invert"))
    (tmp_path / "any.raypipe.json").write_text('{"input_size": [48, 64]}')
    loaded = load_model(build_run_config(model=str(path), resize="letterbox"))
    assert loaded.spec is not None
    assert (loaded.spec.input_size, loaded.spec.resize) == ((48, 64), "letterbox")
    frames = smooth_frames(1)
    out = FrameModel(loaded.data, spec=loaded.spec, device="cpu").run(frames, 1)
    assert out.shape == frames.shape  # resized to 48x64 for the model, and back
    with pytest.raises(ConfigError, match=r"got resize='none'$"):
        load_model(build_run_config(model=str(path)))


def test_input_size_must_match_a_fixed_model() -> None:
    match = r"takes 224x224 \(height x width\) frames but ModelSpec.input_size is 256x256; drop"
    with pytest.raises(ModelLoadError, match=match):
        cpu(IDENTITY_224, resize="letterbox", input_size=(256, 256))


def test_run_on_a_tensor_model_points_to_run_tensors() -> None:
    match = r"the model's outputs \['mean', 'pooled'\] are tensors, not frames; call run_tensors"
    with pytest.raises(ModelLoadError, match=match):
        cpu(TENSOR_224, resize="stretch").run(smooth_frames(1), 1)


def test_letterbox_columns_may_not_clash_with_outputs() -> None:
    data = model_bytes(
        [helper.make_node("ReduceMean", ["input"], ["letterbox_pad_x"], axes=[2, 3], keepdims=0)],
        {"letterbox_pad_x": ("N", 3)},
    )
    match = r"model outputs \['letterbox_pad_x'\] clash with the letterbox columns raypipe adds"
    with pytest.raises(ModelLoadError, match=match):
        cpu(data, resize="stretch")


def test_outputs_named_as_the_tables_own_columns_are_refused_at_load() -> None:
    """An output named ``pts`` replaced the table's pts column, and one named ``video_id``
    made the output folder unreadable (a float column against the partition's string),
    exit 0 (a sweep)."""
    data = model_bytes(
        [
            helper.make_node("ReduceMean", ["input"], ["pts"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("ReduceMax", ["input"], ["video_id"], axes=[1, 2, 3], keepdims=0),
        ],
        {"pts": ("N",), "video_id": ("N",)},
    )
    match = r"model outputs \['pts', 'video_id'\] have the names of columns raypipe writes"
    with pytest.raises(ModelLoadError, match=match):
        cpu(data)


def test_an_output_whose_per_frame_shape_changes_between_batches_says_which_and_what_to_do() -> (
    None
):
    """A detector padded to each batch's largest detection count (TopK with a k from the
    frames) failed with numpy's "all the input array dimensions except for the
    concatenation axis must match exactly", naming no output (a sweep)."""
    data = model_bytes(
        [
            helper.make_node("ReduceMax", ["input"], ["mx"], keepdims=0),
            helper.make_node("Mul", ["mx", "four"], ["scaled"]),
            helper.make_node("Add", ["scaled", "one"], ["k_float"]),
            helper.make_node("Cast", ["k_float"], ["k1"], to=TensorProto.INT64),
            helper.make_node("Reshape", ["k1", "shape1"], ["k"]),
            helper.make_node("Flatten", ["input"], ["flat"], axis=1),
            helper.make_node("TopK", ["flat", "k"], ["scores", "idx"], axis=1),
        ],
        {"scores": ("N", "K")},
        in_dims=("N", 3, 8, 8),
        consts={
            "four": np.array(4, np.float32),
            "one": np.array(1, np.float32),
            "shape1": np.array([1], np.int64),
        },
    )
    model = cpu(data, output="tensor")
    frames = np.zeros((4, 8, 8, 3), np.uint8)
    frames[2:] = 255  # the second batch of two: k = 5, the first's 1
    assert model.run_tensors(frames[:2], 2)["scores"].shape == (2, 1)
    match = (
        r"model output 'scores' has per-frame shape \[1\] \(float32\) for some frames and \[5\] "
        r"\(float32\) for others; a table column keeps one shape and type for every frame"
    )
    with pytest.raises(ModelLoadError, match=match):
        model.run_tensors(frames, 2)


def test_a_scalar_output_of_an_analysis_model_is_refused_at_load() -> None:
    """A declared scalar output (one value for the batch) passed `raypipe model show` and
    failed after Ray's start (a sweep); an undeclared shape is still taken."""
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["s"], keepdims=0),
        helper.make_node("ReduceMean", ["input"], ["per_frame"], axes=[1, 2, 3], keepdims=0),
    ]
    with pytest.raises(
        ModelLoadError, match=r"model output\(s\) \['s'\] are scalars \(shape \[\]\)"
    ):
        cpu(model_bytes(nodes, {"s": (), "per_frame": ("N",)}), output="tensor")
    unknown = onnx.load_model_from_string(model_bytes(nodes, {"s": (), "per_frame": ("N",)}))
    unknown.graph.output[0].type.tensor_type.ClearField("shape")
    cpu(unknown.SerializeToString(), output="tensor")
