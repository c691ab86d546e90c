"""Built-in models: real ONNX graphs that ONNX Runtime runs exactly as the numpy reference."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from raypipe.errors import ModelNotFoundError
from raypipe.infer import BUILTIN_MODELS, build_builtin, builtin_bytes, reference_numpy
from raypipe.infer.builtin import BUILTIN_IMAGE_MODELS
from raypipe.infer.session import create_session

SHAPES = [(1, 3, 37, 53), (3, 3, 16, 24)]


def run_ort(name: str, x: np.ndarray) -> np.ndarray:
    session = create_session(builtin_bytes(name), device="cpu")
    (y,) = session.run(["output"], {"input": x})
    return np.asarray(y)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", BUILTIN_IMAGE_MODELS)
def test_onnx_runtime_matches_reference(name: str, shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(7).random(shape, dtype=np.float32)
    y = run_ort(name, x)
    expected = reference_numpy(name, x)
    assert y.dtype == np.float32
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", BUILTIN_IMAGE_MODELS)
def test_outputs_stay_in_unit_range(name: str) -> None:
    x = np.random.default_rng(1).random((2, 3, 9, 11), dtype=np.float32)
    x[:, :, ::2, ::3] = 0.0
    x[:, :, 1::2, 1::3] = 1.0
    y = run_ort(name, x)
    assert y.min() >= -1e-6
    assert y.max() <= 1 + 1e-6


@pytest.mark.parametrize("name", BUILTIN_IMAGE_MODELS)
def test_model_is_checked_ir9_opset17_with_dynamic_dims(name: str) -> None:
    model = onnx.load_from_string(builtin_bytes(name))
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 9
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    (inp,) = model.graph.input
    (out,) = model.graph.output
    assert (inp.name, out.name) == ("input", "output")
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_builtin_bytes_is_cached_and_matches_build() -> None:
    assert builtin_bytes("blur") is builtin_bytes("blur")
    assert onnx.load_from_string(builtin_bytes("blur")) == build_builtin("blur")


def test_upscale2x_doubles_height_and_width() -> None:
    x = np.random.default_rng(3).random((2, 3, 5, 7), dtype=np.float32)
    assert run_ort("upscale2x", x).shape == (2, 3, 10, 14)


def test_size_preserving_models_keep_size_and_constant_images() -> None:
    x = np.full((1, 3, 6, 9), 0.25, dtype=np.float32)
    for name in ("identity", "grayscale", "blur", "sharpen", "upscale2x"):
        y = run_ort(name, x)
        np.testing.assert_allclose(y, 0.25, atol=1e-6)


def test_grayscale_channels_are_equal_bt601_luma() -> None:
    x = np.zeros((1, 3, 1, 3), dtype=np.float32)
    x[0, 0, 0, 0] = x[0, 1, 0, 1] = x[0, 2, 0, 2] = 1.0  # pure red, green, blue pixels
    y = run_ort("grayscale", x)
    np.testing.assert_allclose(y[0, :, 0], [[0.299, 0.587, 0.114]] * 3, atol=1e-6)


def test_unknown_builtin_lists_known_names_and_file_alternative() -> None:
    match = (
        r"unknown built-in model 'nope'; built-ins are identity, invert, "
        r".*upscale2x, superres, phash, embedding, denoise3, ema, interp2x\. "
        r"To run your own model pass a path or URL of an \.onnx file"
    )
    with pytest.raises(ModelNotFoundError, match=match):
        build_builtin("nope")
    with pytest.raises(ModelNotFoundError, match="unknown built-in model 'nope'"):
        builtin_bytes("nope")
    with pytest.raises(ModelNotFoundError, match="unknown built-in model 'nope'"):
        reference_numpy("nope", np.zeros((1, 3, 2, 2), dtype=np.float32))


def test_every_builtin_is_registered_and_loads() -> None:
    others = {"superres", "phash", "embedding", "denoise3", "ema", "interp2x"}
    assert set(BUILTIN_MODELS) == set(BUILTIN_IMAGE_MODELS) | others
    for name in sorted(others):
        session = create_session(builtin_bytes(name), device="cpu")
        assert session.get_inputs()[0].name == "input"
