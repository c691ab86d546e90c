"""Model specs, model sources, frame pre/post-processing and FrameModel end to end."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from raypipe.errors import ConfigError, ModelLoadError, ModelNotFoundError
from raypipe.infer import (
    FrameModel,
    ModelSpec,
    analysis_bytes,
    build_embedding,
    builtin_bytes,
    detect_output_kind,
    load_frame_model,
    output_kind,
    pixels,
    postprocess,
    preprocess,
    reference_numpy,
    resolve_model,
)
from raypipe.infer.builtin import BUILTIN_IMAGE_MODELS
from raypipe.infer.models import gpu_profile
from raypipe.infer.sidecar import builtin_spec

Dims = Sequence[int | str]


def frames(n: int = 5, height: int = 37, width: int = 53, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def tiny_model(
    op: str = "Identity",
    in_dims: Dims | None = ("N", 3, "H", "W"),  # None: no shape recorded
    out_dims: Dims | None = None,
    elem: int = TensorProto.FLOAT,
    consts: dict[str, np.ndarray] | None = None,
    **attrs: Any,
) -> bytes:
    """A one-node ONNX model ``output = op(input, *consts)``: IR 9, opset 17."""
    consts = consts or {}
    node = helper.make_node(op, ["input", *consts], ["output"], **attrs)
    graph = helper.make_graph(
        [node],
        "tiny",
        [helper.make_tensor_value_info("input", elem, _dims(in_dims))],
        [helper.make_tensor_value_info("output", elem, _dims(out_dims or in_dims))],
        initializer=[numpy_helper.from_array(v, name=k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    data: bytes = model.SerializeToString()
    return data


def _dims(dims: Dims | None) -> list[int | str] | None:
    return None if dims is None else list(dims)


def cpu_model(model_bytes: bytes, spec: ModelSpec | None = None) -> FrameModel:
    return FrameModel(model_bytes, spec=spec or ModelSpec(), device="cpu", intra_op_threads=1)


# --- ModelSpec ----------------------------------------------------------------------------


def test_spec_defaults_fit_builtins_and_normalise_to_tuples() -> None:
    spec = ModelSpec(mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])  # type: ignore[arg-type]
    assert spec.mean == (0.5, 0.5, 0.5)
    assert spec.std == (0.25, 0.25, 0.25)
    assert hash(spec) == hash(ModelSpec(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)))
    assert ModelSpec().channel_axis == 1
    assert ModelSpec(layout="NHWC").channel_axis == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layout": "CHW"}, "layout must be 'NCHW' or 'NHWC', got 'CHW'"),
        ({"color": "rgb"}, "color must be 'RGB' or 'BGR', got 'rgb'"),
        ({"scale": 0}, "scale must be a finite number > 0, got 0"),
        ({"scale": float("nan")}, "scale must be a finite number > 0, got nan"),
        ({"mean": (0.5, 0.5)}, r"mean must be 3 finite numbers, got \(0.5, 0.5\)"),
        ({"std": (1.0, 0.0, 1.0)}, r"std must be 3 finite numbers > 0, got \(1.0, 0.0, 1.0\)"),
        ({"output_range": (1.0, 1.0)}, "output_range must be two different numbers"),
        ({"output_range": (0.0,)}, "output_range must be 2 finite numbers"),
        ({"input_name": ""}, "input_name must be a tensor name or None, got ''"),
        ({"output": "frames"}, "output must be 'auto', 'image' or 'tensor', got 'frames'"),
        ({"resize": "crop"}, "resize must be 'none', 'stretch' or 'letterbox', got 'crop'"),
        (
            {"resize": "stretch", "input_size": (224,)},
            r"input_size must be \(height, width\), two integers >= 1, or None, got \(224,\)",
        ),
        (
            {"resize": "stretch", "input_size": (224, 0)},
            r"input_size must be \(height, width\), two integers >= 1",
        ),
        ({"pad_value": 256}, "pad_value must be an integer pixel level 0..255, got 256"),
        ({"tile": 0}, r"tile must be an integer >= 1 \(tile side in px\) or None, got 0"),
        ({"tile": 32.0}, "tile must be an integer >= 1"),
        ({"tile_overlap": -1}, "tile_overlap must be an integer >= 0"),
        (
            {"tile": 64, "resize": "letterbox", "input_size": (64, 64)},
            "tile=64 and resize='letterbox' do not combine",
        ),
        ({"tile": 64, "output": "tensor"}, "tile=64 needs an image output, got output='tensor'"),
    ],
)
def test_spec_validation(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ModelSpec(**kwargs)


# --- resolve_model ------------------------------------------------------------------------


def test_resolve_builtin() -> None:
    data, key = resolve_model("builtin:invert")
    assert data == builtin_bytes("invert")
    assert key == hashlib.sha256(data).hexdigest()


def test_resolve_unknown_builtin() -> None:
    with pytest.raises(ModelNotFoundError, match="unknown built-in model 'nope'; built-ins are"):
        resolve_model("builtin:nope")


def test_resolve_file_path_url_and_memory_fs(tmp_path: Path) -> None:
    data = builtin_bytes("blur")
    path = tmp_path / "blur.onnx"
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    assert resolve_model(str(path)) == (data, digest)
    assert resolve_model(path.as_uri()) == (data, digest)
    with fsspec.open("memory://raypipe-test/blur.onnx", "wb") as f:
        f.write(data)
    assert resolve_model("memory://raypipe-test/blur.onnx") == (data, digest)


def test_resolve_missing_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.onnx")
    match = (
        rf"model file '{missing}' does not exist; pass builtin:NAME \(one of identity, .*\) "
        r"or a path/URL to an \.onnx file"
    )
    with pytest.raises(ModelNotFoundError, match=match):
        resolve_model(missing)


def test_a_built_in_name_without_its_prefix_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ModelNotFoundError,
        match=r"^model file 'sharpen' does not exist; did you mean the built-in builtin:sharpen\?$",
    ):
        resolve_model("sharpen")
    (tmp_path / "sharpen").write_bytes(builtin_bytes("sharpen"))  # a file of that name: read
    assert resolve_model("sharpen")[0] == builtin_bytes("sharpen")


def test_resolve_directory_is_a_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="cannot read model file"):
        resolve_model(str(tmp_path))


# --- preprocess / postprocess -------------------------------------------------------------


def test_preprocess_default_is_nchw_rgb_unit_range() -> None:
    x = frames(2, 4, 6)
    out = preprocess(x, ModelSpec(), np.float32)
    assert out.dtype == np.float32
    assert out.flags.c_contiguous
    np.testing.assert_allclose(out, x.transpose(0, 3, 1, 2) / 255.0, atol=1e-7)


def test_preprocess_bgr_nhwc_mean_std() -> None:
    x = frames(2, 4, 6)
    spec = ModelSpec(layout="NHWC", color="BGR", mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 2.0))
    out = preprocess(x, spec, np.float32)
    expected = (x[..., ::-1] / 255.0 - np.array([0.1, 0.2, 0.3])) / np.array([0.5, 0.25, 2.0])
    assert out.shape == (2, 4, 6, 3)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_preprocess_float16_and_uint8() -> None:
    x = frames(1, 3, 5)
    half = preprocess(x, ModelSpec(), np.float16)
    assert half.dtype == np.float16
    np.testing.assert_allclose(half, x.transpose(0, 3, 1, 2) / 255.0, atol=1e-3)
    raw = preprocess(x, ModelSpec(color="BGR"), np.uint8)
    np.testing.assert_array_equal(raw, x[..., ::-1].transpose(0, 3, 1, 2))


@pytest.mark.parametrize(
    "bad", [np.zeros((2, 4, 4), np.uint8), np.zeros((1, 4, 4, 3), np.float32), [1, 2]]
)
def test_preprocess_rejects_non_frames(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"frames must be a uint8 array \(n, height, width, 3\)"):
        preprocess(bad, ModelSpec(), np.float32)


def test_postprocess_maps_range_rounds_half_even_and_clips() -> None:
    y = np.array([0.5, 1.5, 2.5, -3.0, 300.0, 254.5], dtype=np.float32).reshape(1, 1, 1, 6)
    out = postprocess(np.repeat(y, 3, axis=1), ModelSpec(output_range=(0.0, 255.0)))
    np.testing.assert_array_equal(out[0, 0, :, 0], [0, 2, 2, 0, 255, 254])
    inverted = postprocess(np.zeros((1, 3, 1, 1), np.float32), ModelSpec(output_range=(1.0, 0.0)))
    assert inverted.tolist() == [[[[255, 255, 255]]]]


def _reference_pre(x: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """The definition, written the slow obvious way: channel order, layout, cast, scale."""
    y = x[..., ::-1] if spec.color == "BGR" else x
    y = y.astype(np.float32) * np.float32(spec.scale)
    y = (y - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32)
    return y.transpose(0, 3, 1, 2) if spec.layout == "NCHW" else y


def _reference_post(y: np.ndarray, spec: ModelSpec) -> np.ndarray:
    lo, hi = spec.output_range
    v = (y.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    pixels = np.clip(np.rint(v), 0, 255).astype(np.uint8)
    pixels = pixels.transpose(0, 2, 3, 1) if spec.layout == "NCHW" else pixels
    return pixels[..., ::-1] if spec.color == "BGR" else pixels


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec(),
        ModelSpec(color="BGR"),
        ModelSpec(layout="NHWC", scale=1.0),
        ModelSpec(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
        ModelSpec(color="BGR", scale=1.0, mean=(104.0, 117.0, 123.0), std=(57.4, 57.1, 58.4)),
    ],
    ids=["nchw-rgb", "nchw-bgr", "nhwc-raw", "imagenet", "bgr-caffe"],
)
def test_preprocess_fast_paths_equal_the_definition(spec: ModelSpec) -> None:
    x = frames(3, 37, 53)
    x[0, 0, :32] = np.arange(256, dtype=np.uint8).reshape(32, 8)[:, :3]  # many levels
    got = preprocess(x, spec, np.float32)
    np.testing.assert_array_equal(got, _reference_pre(x, spec))
    assert got.flags.c_contiguous and got.dtype == np.float32
    # into the caller's buffer (kept from batch to batch): the same values, no new array
    buffer = np.empty_like(got)
    assert preprocess(frames(3, 37, 53, seed=1), spec, np.float32, out=buffer) is buffer
    np.testing.assert_array_equal(buffer, _reference_pre(frames(3, 37, 53, seed=1), spec))


@pytest.mark.parametrize(
    "spec",
    [
        ModelSpec(),
        ModelSpec(color="BGR"),
        ModelSpec(output_range=(0.0, 255.0)),
        ModelSpec(output_range=(0.0, 2.0)),
        ModelSpec(output_range=(-1.0, 1.0)),
        ModelSpec(layout="NHWC"),
    ],
    ids=["unit", "bgr", "0-255", "0-2", "minus1-1", "nhwc"],
)
def test_postprocess_fast_path_equals_the_definition_bit_for_bit(spec: ModelSpec) -> None:
    rng = np.random.default_rng(3)
    lo, hi = spec.output_range
    shape = (2, 3, 29, 41) if spec.layout == "NCHW" else (2, 29, 41, 3)
    y = (rng.normal(0.5, 0.45, shape) * (hi - lo) + lo).astype(np.float32)
    # exact ties of the rounding (k + 0.5 after scaling), both ends and beyond the range
    flat = y.reshape(-1)
    ties = (np.arange(256, dtype=np.float32) + np.float32(0.5)) / np.float32(255.0 / (hi - lo))
    flat[: ties.size] = ties + np.float32(lo)
    flat[-4:] = [lo, hi, lo - 7 * (hi - lo), hi + 7 * (hi - lo)]
    before = y.copy()
    got = postprocess(y, spec)
    np.testing.assert_array_equal(got, _reference_post(before, spec))
    np.testing.assert_array_equal(y, before)  # the model's output is not written to
    assert got.flags.c_contiguous and got.dtype == np.uint8
    chunk = np.zeros((4, *got.shape[1:]), dtype=np.uint8)  # into a slice of a chunk's output
    assert postprocess(y, spec, out=chunk[1:3]) is not None
    np.testing.assert_array_equal(chunk[1:3], got)
    assert not chunk[0].any() and not chunk[3].any()


@pytest.mark.parametrize("band_pixels", [1, 53 * 5, 1 << 18], ids=["row", "5-rows", "whole"])
def test_bands_of_rows_give_the_definition_bit_for_bit(
    monkeypatch: pytest.MonkeyPatch, band_pixels: int
) -> None:
    """Pre/post-processing work through a frame in bands of rows (``BAND_PIXELS``): one row
    at a time, 5 rows (37 = 7 bands of 5 and one of 2), or the whole frame, every row is
    written and holds the definition's bits."""
    monkeypatch.setattr(pixels, "BAND_PIXELS", band_pixels)
    spec = ModelSpec(color="BGR", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    x = frames(2, 37, 53)
    into = np.full((2, 3, 37, 53), np.nan, dtype=np.float32)
    assert preprocess(x, spec, np.float32, out=into) is into
    np.testing.assert_array_equal(into, _reference_pre(x, spec))
    y = np.random.default_rng(4).normal(0.5, 0.6, (2, 3, 37, 53)).astype(np.float32)
    y.reshape(-1)[:3] = [np.inf, -np.inf, 0.5 / 255]  # saturated both ways, a tie
    out = np.full((2, 37, 53, 3), 0xAB, dtype=np.uint8)
    assert postprocess(y, spec, out=out) is out
    np.testing.assert_array_equal(out, _reference_post(y, spec))


def test_postprocess_one_channel_is_repeated_and_uint8_passes() -> None:
    y = np.random.default_rng(0).random((2, 1, 3, 4), dtype=np.float32)
    out = postprocess(y, ModelSpec())
    assert out.shape == (2, 3, 4, 3)
    assert (out == out[..., :1]).all()
    pixels = frames(2, 3, 4)
    np.testing.assert_array_equal(postprocess(pixels, ModelSpec(layout="NHWC")), pixels)


def test_postprocess_rejects_other_channel_counts() -> None:
    match = (
        r"model output has shape \(1, 4, 2, 2\), 4 on the channel axis 1 \(NCHW\); "
        r"raypipe expects 3 channels \(or 1, repeated to 3\)"
    )
    with pytest.raises(ModelLoadError, match=match):
        postprocess(np.zeros((1, 4, 2, 2), np.float32), ModelSpec())


# --- FrameModel ---------------------------------------------------------------------------


def test_identity_returns_the_exact_frames_in_mini_batches() -> None:
    model = cpu_model(builtin_bytes("identity"))
    x = frames(5)
    out = model.run(x, batch_size=2)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, x)
    assert model.providers == ["CPUExecutionProvider"]
    assert (model.input_name, model.output_name) == ("input", "output")


def test_invert_gives_255_minus_x() -> None:
    x = frames(3, 8, 9)
    np.testing.assert_array_equal(cpu_model(builtin_bytes("invert")).run(x, 8), 255 - x)


# Image built-ins only: once phash/embedding are registered as built-ins they give tensors.
@pytest.mark.parametrize("name", BUILTIN_IMAGE_MODELS)  # those with a numpy reference
def test_builtins_through_frame_model_match_reference(name: str) -> None:
    x = frames(3, 11, 7)
    spec = ModelSpec()
    expected = postprocess(reference_numpy(name, preprocess(x, spec, np.float32)), spec)
    out = cpu_model(builtin_bytes(name)).run(x, batch_size=2)
    assert out.shape == expected.shape
    assert np.abs(out.astype(int) - expected).max() <= 1  # float32 vs float64 at .5 ties


def test_upscale2x_doubles_frames() -> None:
    assert cpu_model(builtin_bytes("upscale2x")).run(frames(2, 5, 7), 1).shape == (2, 10, 14, 3)


def test_nhwc_model_round_trips() -> None:
    model = cpu_model(tiny_model(in_dims=("N", "H", "W", 3)), ModelSpec(layout="NHWC"))
    x = frames(3, 6, 10)
    np.testing.assert_array_equal(model.run(x, 2), x)


def test_bgr_model_sees_blue_first() -> None:
    mask = np.array([0.0, 1.0, 1.0], dtype=np.float32).reshape(1, 3, 1, 1)
    model = cpu_model(tiny_model("Mul", consts={"mask": mask}), ModelSpec(color="BGR"))
    x = frames(2, 4, 4)
    out = model.run(x, 4)
    np.testing.assert_array_equal(out[..., :2], x[..., :2])  # R, G kept
    assert (out[..., 2] == 0).all()  # the model's channel 0 is blue


def test_mean_std_spec_round_trips_through_identity() -> None:
    spec = ModelSpec(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), output_range=(-1.0, 1.0))
    x = frames(3)
    np.testing.assert_array_equal(cpu_model(builtin_bytes("identity"), spec).run(x, 3), x)


def test_float16_model_round_trips() -> None:
    model = cpu_model(tiny_model(elem=TensorProto.FLOAT16))
    assert model.input_dtype == np.float16
    x = frames(2, 9, 13)
    np.testing.assert_array_equal(model.run(x, 2), x)


def test_uint8_model_gets_raw_pixels() -> None:
    model = cpu_model(tiny_model(elem=TensorProto.UINT8))
    assert model.input_dtype == np.uint8
    x = frames(2, 4, 5)
    np.testing.assert_array_equal(model.run(x, 2), x)


def test_one_channel_output_is_repeated() -> None:
    model = cpu_model(tiny_model("ReduceMean", out_dims=("N", 1, "H", "W"), axes=[1]))
    x = frames(2, 4, 5)
    out = model.run(x, 2)
    expected = np.rint(x.astype(np.float32).mean(axis=3, keepdims=True))
    assert np.abs(out.astype(int) - expected).max() <= 1
    assert (out == out[..., :1]).all()


def test_fixed_batch_model_pads_the_last_batch() -> None:
    model = cpu_model(tiny_model(in_dims=(1, 3, "H", "W")))
    x = frames(3, 4, 4)
    np.testing.assert_array_equal(model.run(x, batch_size=8), x)
    model2 = cpu_model(tiny_model(in_dims=(2, 3, "H", "W")))
    np.testing.assert_array_equal(model2.run(x, batch_size=1), x)


def test_fixed_size_model_rejects_other_sizes() -> None:
    model = cpu_model(tiny_model(in_dims=("N", 3, 8, 8)))
    np.testing.assert_array_equal(model.run(frames(1, 8, 8), 1), frames(1, 8, 8))
    match = (
        r"model input 'input' takes 8x8 \(height x width\) frames, got 9x8; pass --resize "
        r"stretch or letterbox \(\"resize\" in its sidecar"
    )
    with pytest.raises(ModelLoadError, match=match):
        model.run(frames(1, 9, 8), 1)


def test_one_channel_input_is_refused() -> None:
    match = (
        r"model input 'input' has shape \['N', 1, 'H', 'W'\], 1 on the channel axis 1; "
        r"raypipe expects a rank-4 image batch, NCHW with 3 channels$"
    )
    with pytest.raises(ModelLoadError, match=match):
        cpu_model(tiny_model(in_dims=("N", 1, "H", "W")))


@pytest.mark.parametrize("dims", [("N", 16, 16, 3), ("batch", "height", "width", 3)])
def test_channels_last_model_with_nchw_spec_gets_a_hint(dims: tuple[object, ...]) -> None:
    """A TF-style model without a sidecar: with a dynamic height on axis 1 it passed the
    channel check (dynamic) and failed later as "takes anyx3 frames ... resize the video"."""
    with pytest.raises(
        ModelLoadError,
        match=r'for a channels-last model put "layout": "NHWC" in its sidecar \(NAME.raypipe.json',
    ) as refused:
        cpu_model(tiny_model(in_dims=dims))
    # the named dimension, not None (a sweep)
    said = "16" if dims[1] == 16 else "'height' (a dynamic size)"
    assert f"{said} on the channel axis 1; " in str(refused.value)


def test_channels_first_model_with_nhwc_spec_gets_a_hint() -> None:
    """The other way round: [batch, 3, height, width] declared NHWC read its dynamic width
    as the channels, passed, and failed as it ran with advice about frame sizes (a sweep)."""
    with pytest.raises(
        ModelLoadError,
        match=r'for a channels-first model put "layout": "NCHW" in its sidecar \(NAME.raypipe',
    ):
        cpu_model(tiny_model(in_dims=("batch", 3, "height", "width")), ModelSpec(layout="NHWC"))


def test_rank3_input_is_refused() -> None:
    match = (
        r"model input 'input' has rank 3 \(shape \[3, 'H', 'W'\]\); "
        r"raypipe expects a rank-4 image batch, NCHW with 3 channels"
    )
    with pytest.raises(ModelLoadError, match=match):
        cpu_model(tiny_model(in_dims=(3, "H", "W")))


def test_an_input_without_a_recorded_shape_is_not_called_rank_0() -> None:
    """Some exporters record no shape for an input; ONNX Runtime gives it as ``[]``, and
    raypipe said "has rank 0 (shape [])"."""
    match = (
        r"^model input 'input' records no shape \(its rank is unknown\); raypipe expects a "
        r"rank-4 image batch, NCHW with 3 channels: export the model with its input's shape"
    )
    with pytest.raises(ModelLoadError, match=match):
        cpu_model(tiny_model(in_dims=None))


def test_a_float_output_far_outside_its_range_is_said_before_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A model that outputs 0..255 under the default output_range [0, 1] made an all-white
    video and a normal "wrote" line; the driver now says so as the model loads."""
    from raypipe.config import build_run_config
    from raypipe.distributed.setup import load_model

    scale = {"k": np.array(255.0, np.float32)}
    times255 = tiny_model("Mul", consts=scale)
    note = cpu_model(times255).range_note()
    assert note.startswith("100% of its output for a test frame lies far outside its "
                           "output_range [0, 1] (from 32 to 224), so nearly every pixel "
                           "would clip")  # fmt: skip
    assert '"output_range": [0, 255] in its sidecar' in note
    # far under the range (a model given pixels 0..255 where it takes 0..1, giving x - 255):
    # [0, 255] would still clip every pixel, and was advised all the same (a sweep)
    minus = tiny_model("Sub", consts={"k": np.array(255.0, np.float32)})
    under = cpu_model(minus, ModelSpec(scale=1.0)).range_note()
    assert "(from -223 to -31)" in under
    assert '"output_range" to the range the model outputs, or check that its input "scale"' in under
    assert "[0, 255]" not in under
    assert cpu_model(times255, ModelSpec(output_range=(0.0, 255.0))).range_note() == ""
    assert cpu_model(builtin_bytes("sharpen")).range_note() == ""  # overshoots a little
    fixed = tiny_model("Mul", in_dims=(1, 3, 96, 96), consts=scale)
    assert cpu_model(fixed).range_note().startswith("100% of its output")
    assert cpu_model(tiny_model(elem=TensorProto.UINT8)).range_note() == ""  # pixels as given
    # dynamic sizes declared, but it adds a constant of its own size: the test frame's
    # broadcast error ended every run, untyped, before it started (a sweep)
    own_size = {"k": np.zeros((1, 3, 96, 160), np.float32)}
    assert cpu_model(tiny_model("Add", consts=own_size)).range_note() == ""
    path = tmp_path / "times255.onnx"
    path.write_bytes(times255)
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        load_model(build_run_config(model=str(path)))
    assert f"model {path}: 100% of its output for a test frame" in caplog.text


def test_unsupported_element_type_is_refused() -> None:
    match = (
        r"model input 'input' has element type tensor\(int64\); raypipe feeds tensor\(float\)"
        r".*: export the model with a float32, float16 or uint8 input \(or a Cast to its type "
        r"at the input\)$"
    )
    with pytest.raises(ModelLoadError, match=match):
        cpu_model(tiny_model(elem=TensorProto.INT64))


def test_input_and_output_names() -> None:
    with pytest.raises(ModelLoadError, match="model has no input 'image'; its input is 'input'"):
        cpu_model(builtin_bytes("identity"), ModelSpec(input_name="image"))
    match = r"model has no output 'rgb'; its outputs are \['output'\]"
    with pytest.raises(ModelLoadError, match=match):
        cpu_model(builtin_bytes("identity"), ModelSpec(output_name="rgb"))
    model = cpu_model(
        builtin_bytes("identity"), ModelSpec(input_name="input", output_name="output")
    )
    assert model.output_name == "output"


def test_garbage_bytes_are_a_load_error() -> None:
    with pytest.raises(ModelLoadError, match="ONNX Runtime cannot load the model: "):
        cpu_model(b"\x00garbage")


def test_load_frame_model_and_warmup() -> None:
    model = load_frame_model("builtin:invert", device="cpu", intra_op_threads=1)
    model.warmup(16, 24, batch_size=2)
    np.testing.assert_array_equal(model.run(frames(1), 1), 255 - frames(1))
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_frame_model("/nonexistent/model.onnx")


def test_an_actor_warms_its_model_at_the_batch_its_chunks_run() -> None:
    """A first run at a new input shape allocates (ORT, HostRunner's output buffers): warmed
    at 2 frames, the first 4K chunk at batch 8 took 8.5 s against 2.3-2.7 s for the next."""
    from raypipe.distributed.actors import _ModelRunner

    model = load_frame_model("builtin:invert", device="cpu", intra_op_threads=1)
    _ModelRunner(model, 8, tensor=False).warmup(16, 24)
    warmed = [shape for shape, _ in model._host.runner._slots]  # (n, 3, 16, 24) NCHW
    assert warmed == [(8, 3, 16, 24)]


def test_a_warm_up_on_one_thread_warms_the_runs_on_another() -> None:
    """Ray Data builds an actor on its main thread and calls it on another: the buffers the
    warm-up fills must be the ones the chunks run with (per-thread buffers made the first
    4K chunk fault 1.6 GB of new memory in again)."""
    from raypipe.distributed.actors import _ModelRunner

    model = load_frame_model("builtin:invert", device="cpu", intra_op_threads=1)
    _ModelRunner(model, 4, tensor=False).warmup(*frames(1).shape[1:3])
    runner, x = model._host.runner, model._host.x
    assert runner is not None and x is not None
    kept = [id(b) for _, (_, buffers) in runner._slots.items() for b in buffers]
    results = []
    thread = threading.Thread(target=lambda: results.append(model.run(frames(8), 4)))
    thread.start()
    thread.join()
    np.testing.assert_array_equal(results[0], 255 - frames(8))
    assert model._host.runner is runner and model._host.x is x
    assert [id(b) for _, (_, buffers) in runner._slots.items() for b in buffers] == kept
    assert not hasattr(model._host_local, "buffers")


def test_a_short_last_batch_runs_in_the_full_batch_buffers() -> None:
    """A chunk's last batch is often short (60 frames in batches of 8 end with 4): its input
    and output go into the first frames of the full batch's buffers, not new memory."""
    model = load_frame_model("builtin:invert", device="cpu", intra_op_threads=1)
    np.testing.assert_array_equal(model.run(frames(10), 4), 255 - frames(10))
    assert model._host.x is not None and model._host.x.shape[0] == 4
    assert model._host.runner is not None
    slots = model._host.runner._slots
    assert [shape[0] for shape, _ in slots] == [4, 2]
    full, short = slots.values()
    assert full is not None and short is not None
    assert np.shares_memory(short[1][0], full[1][0])


def test_a_second_thread_gets_its_own_buffers_while_the_first_runs() -> None:
    model = load_frame_model("builtin:invert", device="cpu", intra_op_threads=1)
    model.run(frames(2), 2)
    shared = model._host.x
    with model._host_lock:  # another thread is running a batch
        np.testing.assert_array_equal(model.run(frames(3), 2), 255 - frames(3))
    assert model._host.x is shared
    assert model._host_local.buffers.x is not None
    assert model._host_local.buffers.x is not shared


def test_run_checks_its_arguments() -> None:
    model = cpu_model(builtin_bytes("identity"))
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1, got 0"):
        model.run(frames(1), 0)
    with pytest.raises(ValueError, match="run\\(\\) got 0 frames"):
        model.run(frames(0), 1)


def test_spec_normalises_input_size_and_has_geometry_defaults() -> None:
    spec = ModelSpec(resize="letterbox", input_size=[640, 480])  # type: ignore[arg-type]
    assert spec.input_size == (640, 480)
    default = ModelSpec()
    assert (default.output, default.resize, default.input_size) == ("auto", "none", None)
    assert (default.pad_value, default.tile, default.tile_overlap) == (0, None, 16)


# --- output kinds -------------------------------------------------------------------------


def two_outputs() -> bytes:
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["input"], ["image"]),
            helper.make_node("ReduceMean", ["input"], ["score"], axes=[1, 2, 3], keepdims=0),
        ],
        "two",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"]),
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    data: bytes = model.SerializeToString()
    return data


@pytest.mark.parametrize(
    ("data", "spec", "kind"),
    [
        (builtin_bytes("sharpen"), ModelSpec(), "image"),
        (builtin_bytes("upscale2x"), ModelSpec(), "image"),
        (tiny_model("ReduceMean", out_dims=("N", 1, "H", "W"), axes=[1]), ModelSpec(), "image"),
        (
            tiny_model("ReduceMean", out_dims=("N", 3), axes=[2, 3], keepdims=0),
            ModelSpec(),
            "tensor",
        ),
        (tiny_model("ReduceMean", out_dims=("N", 3, 1, 1), axes=[2, 3]), ModelSpec(), "tensor"),
        (
            tiny_model("Tile", out_dims=("N", 81, "H", "W"), consts={"r": np.array([1, 27, 1, 1])}),
            ModelSpec(),
            "tensor",
        ),
        (build_embedding().SerializeToString(), ModelSpec(), "tensor"),
        (two_outputs(), ModelSpec(), "tensor"),
        (two_outputs(), ModelSpec(output_name="image"), "image"),
        (builtin_bytes("identity"), ModelSpec(output="tensor"), "tensor"),
    ],
    ids=[
        "sharpen",
        "upscale",
        "gray1",
        "vector",
        "pooled1x1",
        "81ch",
        "embed",
        "two",
        "named",
        "forced",
    ],
)
def test_output_kind_from_outputs(data: bytes, spec: ModelSpec, kind: str) -> None:
    assert output_kind(data, spec) == kind
    assert cpu_model(data, spec).output_kind == kind


def test_detect_output_kind_unknown_rank_stays_image() -> None:
    class Info:
        name, shape, type = "output", None, "tensor(float)"

    assert detect_output_kind([Info()], ModelSpec()) == "image"


def test_output_kind_of_garbage() -> None:
    with pytest.raises(ModelLoadError, match="cannot parse the model as ONNX: "):
        output_kind(b"\x00garbage")


def test_run_tensors_returns_every_output_or_the_named_one() -> None:
    x = frames(3, 6, 7)
    out = cpu_model(two_outputs()).run_tensors(x, batch_size=2)
    assert list(out) == ["image", "score"]
    assert out["image"].shape == (3, 3, 6, 7)
    np.testing.assert_allclose(out["score"], x.mean(axis=(1, 2, 3)) / 255, atol=1e-5)
    named = cpu_model(two_outputs(), ModelSpec(output_name="score", output="tensor"))
    assert list(named.run_tensors(x, 3)) == ["score"]
    image = cpu_model(two_outputs(), ModelSpec(output_name="image"))
    np.testing.assert_array_equal(image.run(x, 2), x)


def mask_then_image() -> bytes:
    """A matting-like model: a 1-channel mask first, the 3-channel picture second."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["mask"], axes=[1], keepdims=1),
            helper.make_node("Identity", ["input"], ["image"]),
        ],
        "mask_image",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1, "H", "W"]),
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    data: bytes = model.SerializeToString()
    return data


def test_output_image_of_several_outputs_must_say_which_unless_the_first_is_the_only_picture() -> (
    None
):
    """``output: image`` with no ``output_name`` made the video of the first output: a
    mask before the picture gave a grey video, without a word (a sweep)."""
    x = frames(2, 6, 7)
    with pytest.raises(
        ModelLoadError,
        match=r"^the model's spec says output: image, and the model has 2 outputs \('mask' "
        r"\['N', 1, 'H', 'W'\], 'image' \['N', 3, 'H', 'W'\]\): 2 of them could be the "
        r'picture, .* name the picture in its sidecar: \{"output_name": "image"\}',
    ):
        cpu_model(mask_then_image(), ModelSpec(output="image"))
    named = cpu_model(mask_then_image(), ModelSpec(output="image", output_name="image"))
    np.testing.assert_array_equal(named.run(x, 2), x)
    # the picture first and a score beside it: no doubt which is the video (as before)
    first = cpu_model(two_outputs(), ModelSpec(output="image"))
    np.testing.assert_array_equal(first.run(x, 2), x)


def test_run_tensors_with_a_fixed_batch_drops_the_padding() -> None:
    model = cpu_model(
        tiny_model("ReduceMean", in_dims=(2, 3, "H", "W"), out_dims=(2, 3), axes=[2, 3], keepdims=0)
    )
    out = model.run_tensors(frames(3, 4, 4), batch_size=8)["output"]
    assert out.shape == (3, 3)


def test_run_tensors_needs_one_result_per_frame() -> None:
    model = cpu_model(tiny_model("ReduceMean", out_dims=(3,), axes=[0, 2, 3], keepdims=0))
    match = (
        r"model output 'output' has shape \(3,\) for 2 input frames; raypipe expects one "
        r"result per frame along the first dimension"
    )
    with pytest.raises(ModelLoadError, match=match):
        model.run_tensors(frames(2, 4, 4), 2)


def test_image_output_that_is_not_an_image_is_refused() -> None:
    match = (
        r"model output 'output' has shape \['N', 3\]; output='image' needs a rank-4 image "
        r"batch \(NCHW\) with 3 channels \(or 1\); for other outputs pass output='tensor'"
    )
    data = tiny_model("ReduceMean", out_dims=("N", 3), axes=[2, 3], keepdims=0)
    with pytest.raises(ModelLoadError, match=match):
        cpu_model(data, ModelSpec(output="image"))


def test_tile_on_a_tensor_model_is_refused() -> None:
    match = r"tile=32 needs an image output, but the model's outputs \['embedding'\] are tensors"
    with pytest.raises(ModelLoadError, match=match):
        cpu_model(build_embedding().SerializeToString(), ModelSpec(tile=32))


def test_load_frame_model_takes_the_builtin_spec() -> None:
    model = load_frame_model("builtin:phash", device="cpu", intra_op_threads=1)
    assert model.output_kind == "tensor"
    assert model.run_tensors(frames(2, 40, 50), 2)["hash"].shape == (2, 64)
    assert resolve_model("builtin:phash")[0] == analysis_bytes("phash")


@pytest.mark.parametrize(
    ("elem", "spec"),
    [(TensorProto.FLOAT, ModelSpec()), (TensorProto.UINT8, ModelSpec(layout="NHWC"))],
    ids=["float-nchw", "uint8-nhwc"],
)
def test_run_results_are_the_callers_own_arrays(elem: int, spec: ModelSpec) -> None:
    """On the CPU the model writes into buffers kept from batch to batch: what run() gives
    back is never one of them, whatever the batching (one batch, several, a short last)."""
    dims: Dims = ("N", 3, "H", "W") if spec.layout == "NCHW" else ("N", "H", "W", 3)
    model = cpu_model(tiny_model(in_dims=dims, elem=elem), spec)
    for n, batch_size in ((2, 2), (5, 2), (5, 8)):
        first, second = frames(n, seed=1), frames(n, seed=2)
        model.run(second, batch_size)  # the first run of a shape tells the buffers' shapes
        got = model.run(first, batch_size)
        model.run(second, batch_size)
        np.testing.assert_array_equal(got, first)
        np.testing.assert_array_equal(model.run(second, batch_size), second)


# --- Batches capped by their bytes --------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "spec", "hw", "batch_size", "step"),
    [
        (dict(), ModelSpec(), (2160, 3840), 8, 2),  # 4K float32: 95 MiB a frame
        (dict(), ModelSpec(), (1080, 1920), 8, 8),  # 24 MiB a frame: 10 fit
        (dict(), ModelSpec(), (1440, 2560), 8, 6),  # 42 MiB a frame
        (dict(), ModelSpec(), (4320, 7680), 8, 1),  # 8K: one, however large
        (dict(), ModelSpec(), (2160, 3840), 1, 1),  # never more than asked
        (dict(elem=TensorProto.FLOAT16), ModelSpec(), (2160, 3840), 8, 5),  # half the bytes
        (dict(), ModelSpec(resize="stretch", input_size=(224, 224)), (2160, 3840), 8, 8),
        # tiled: the whole frames, which the tiles' calls hold in and out (capped by the
        # window, 8 frames of 8K took 7.7 GB an actor against 2.9 untiled; a sweep)
        (dict(), ModelSpec(tile=512, tile_overlap=16), (2160, 3840), 8, 2),
        (dict(), ModelSpec(tile=512, tile_overlap=16), (480, 640), 8, 8),
        (dict(), ModelSpec(pad_multiple=32), (2160, 3840), 8, 2),
        (dict(in_dims=(4, 3, "H", "W")), ModelSpec(), (2160, 3840), 8, 4),  # the model's own
    ],
)
def test_a_calls_frames_are_capped_by_their_bytes(
    model: dict[str, Any], spec: ModelSpec, hw: tuple[int, int], batch_size: int, step: int
) -> None:
    loaded = cpu_model(tiny_model(**model), spec)
    assert loaded.batch_step(batch_size, *hw) == step


@pytest.mark.parametrize(
    ("name", "hw", "step"),
    [
        ("builtin:upscale2x", (1080, 1920), 2),  # 24 MiB in, 95 MiB out a frame
        ("builtin:upscale2x", (240, 320), 8),
        ("builtin:superres", (2160, 3840), 1),
        ("builtin:invert", (1080, 1920), 8),  # the same size out: as before
    ],
)
def test_an_upscalers_calls_are_capped_by_their_output_too(
    name: str, hw: tuple[int, int], step: int
) -> None:
    """Counting the input only, a 4x super-resolution model got 8 frames of 1080p a call,
    3.2 GB of float32 out, and its actor peaked at 14 GB where one frame a call took 3 GB
    (a sweep)."""
    from raypipe.infer.sidecar import resolve_model_and_spec

    data, _, spec = resolve_model_and_spec(name)
    assert cpu_model(data, spec).batch_step(8, *hw) == step


def test_large_frames_run_in_smaller_batches_with_the_same_frames(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three 4K frames at ``batch_size`` 8 go through the model as calls of 2 and 1 frames,
    and come out as they do one at a time; the warm-up runs the batch the chunks run."""
    model = cpu_model(tiny_model("Neg"))
    calls: list[int] = []
    infer = model._infer

    def counted(x: np.ndarray, host: Any) -> np.ndarray:
        calls.append(len(x))
        return infer(x, host)

    monkeypatch.setattr(model, "_infer", counted)
    x = frames(3, 2160, 3840)
    out = model.run(x, batch_size=8)
    assert calls == [2, 1]
    np.testing.assert_array_equal(out, model.run(x, batch_size=1))
    calls.clear()
    assert len(model.warmup(2160, 3840, 8)) == 2
    assert calls == [2]


def test_a_gpu_sessions_profile_is_what_its_calls_get() -> None:
    """What an inference actor builds its TensorRT session for and ``raypipe build-engines``
    its engines (one function for both, so a prebuilt engine is the one a run asks for):
    the model wrapped for uint8 NHWC frames, at the calls' frame size and batch."""
    data = builtin_bytes("invert")
    spec = builtin_spec("invert")
    at_4k = gpu_profile(data, spec, (2160, 3840), 8)
    assert (at_4k.layout, at_4k.hw, at_4k.batch_size) == ("NHWC", (2160, 3840), 2)
    wrapped = onnx.load_from_string(at_4k.data).graph.input[0]
    assert wrapped.type.tensor_type.elem_type == TensorProto.UINT8
    assert gpu_profile(data, spec, (1080, 1920), 8).batch_size == 8
    assert gpu_profile(data, spec, (1080, 1920), 8).data == at_4k.data  # one graph, any size
    padded = gpu_profile(data, dataclasses.replace(spec, pad_multiple=32), (1080, 1920), 8)
    assert (padded.hw, padded.batch_size) == ((1088, 1920), 8)
    resized = ModelSpec(resize="stretch", input_size=(224, 224))
    classifier = gpu_profile(tiny_model(in_dims=("N", 3, 224, 224)), resized, (2160, 3840), 8)
    assert (classifier.hw, classifier.batch_size) == ((224, 224), 8)


def test_an_extra_input_gets_its_value_from_the_specs_constants() -> None:
    """A model with a knob beside its frames (a strength, a ratio): refused with the
    sidecar key that gives it a value; given one, it is part of the graph."""
    graph = helper.make_graph(
        [helper.make_node("Mul", ["input", "strength"], ["output"])],
        "knob",
        [
            helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"]),
            helper.make_tensor_value_info("strength", TensorProto.FLOAT, []),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, "H", "W"])],
    )
    data = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9
    ).SerializeToString()
    with pytest.raises(ModelLoadError, match=r'"constants": \{"strength": VALUE\}'):
        cpu_model(data)
    x = frames(2, 4, 6)
    half = FrameModel(data, spec=ModelSpec(constants={"strength": 0.5}), device="cpu")  # type: ignore[arg-type]
    assert np.abs(half.run(x, 2) - x / 2).max() <= 0.5 + 1e-3
    with pytest.raises(ModelLoadError, match=r"constants names 'gain', which is not an input"):
        FrameModel(data, spec=ModelSpec(constants={"gain": 1}), device="cpu")  # type: ignore[arg-type]


def test_output_shape_refusals_say_what_to_change() -> None:
    """A classifier exported with its batch axis squeezed out, and a channels-last model
    whose output came out channels-first: the refusals said only what raypipe expects."""
    squeezed = tiny_model(
        "ReduceMean", in_dims=(1, 3, "H", "W"), out_dims=(3,), axes=[0, 2, 3], keepdims=0
    )
    with pytest.raises(ModelLoadError, match=r"export the model with a batch axis on every out"):
        cpu_model(squeezed).run_tensors(frames(1, 8, 8), 1)
    flipped = tiny_model("Transpose", in_dims=("N", "H", "W", 3), out_dims=("N", 3, "H", "W"),
                         perm=[0, 3, 1, 2])  # fmt: skip
    # refused as the model loads, where the graph declares it (it was at the first chunk)
    with pytest.raises(ModelLoadError, match=r"its channels look NCHW while its input is NHWC"):
        cpu_model(flipped, ModelSpec(layout="NHWC"))


def test_a_uint8_models_unused_spec_is_named() -> None:
    """A sidecar's ImageNet mean and std on a uint8-input model were taken without a word
    and did nothing (a sweep): the pixels go in as they are. The run now names them."""
    model = tiny_model(elem=TensorProto.UINT8)
    imagenet = ModelSpec(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert cpu_model(model, imagenet).unused_spec() == ["mean", "std"]
    ranged = ModelSpec(scale=1.0, output_range=(-1.0, 1.0))
    assert cpu_model(model, ranged).unused_spec() == ["scale", "output_range"]
    assert cpu_model(model).unused_spec() == []
    assert cpu_model(tiny_model(), imagenet).unused_spec() == [], "a float model uses them"


def test_a_run_of_a_uint8_model_warns_of_its_unused_spec(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import json
    import logging

    from raypipe.config import build_run_config
    from raypipe.distributed.setup import load_model

    path = tmp_path / "u8.onnx"
    path.write_bytes(tiny_model(elem=TensorProto.UINT8))
    (tmp_path / "u8.raypipe.json").write_text(json.dumps({"mean": [0.5, 0.5, 0.5]}))
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        load_model(build_run_config(model=str(path)))
    assert f"model {path} takes uint8 pixels as they are: its spec's mean is not used" in (
        caplog.text
    )
