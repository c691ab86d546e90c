"""16-bit frames (sources deeper than 8 bits) through pre/post-processing and models: the
model sees what it would see for 8-bit frames, and gets 16 bits back (issue 11)."""

from __future__ import annotations

import numpy as np
import pytest

from raypipe.infer.models import FrameModel, ModelSpec, postprocess, preprocess, resolve_model
from raypipe.infer.tiling import fit_frames, fit_params

RNG = np.random.default_rng(7)


def _frames16(n: int = 2, height: int = 12, width: int = 10) -> np.ndarray:
    return RNG.integers(0, 65536, size=(n, height, width, 3), dtype=np.uint16)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("color", ["RGB", "BGR"])
def test_16bit_input_is_scaled_as_for_8bit(layout: str, color: str) -> None:
    spec = ModelSpec(layout=layout, color=color, mean=(0.1, 0.2, 0.3), std=(0.5, 0.6, 0.7))
    frames8 = RNG.integers(0, 256, size=(2, 6, 5, 3), dtype=np.uint8)
    frames16 = frames8.astype(np.uint16) * 257  # the same levels at 16 bits
    x8 = preprocess(frames8, spec, np.float32)
    x16 = preprocess(frames16, spec, np.float32)
    assert x16.dtype == np.float32 and x16.shape == x8.shape
    np.testing.assert_allclose(x16, x8, rtol=0, atol=2e-6)


def test_16bit_input_keeps_its_low_bits() -> None:
    frames = np.array([[[[1000, 1001, 65535]]]], dtype=np.uint16)
    x = preprocess(frames, ModelSpec(layout="NHWC"), np.float32)
    assert np.all(np.diff(x[0, 0, 0, :2]) > 0)  # 1000 and 1001 differ: not 8-bit
    assert x[0, 0, 0, 2] == pytest.approx(1.0, abs=1e-6)


def test_uint8_model_input_gets_16bit_frames_rounded_to_8_bits() -> None:
    frames = np.array([[[[0, 128, 65535]]]], dtype=np.uint16)
    x = preprocess(frames, ModelSpec(layout="NHWC"), np.uint8)
    assert x.dtype == np.uint8 and x.tolist() == [[[[0, 0, 255]]]]


def test_postprocess_to_16_bits_maps_the_range_rounds_and_clips() -> None:
    y = np.array([0.0, 0.5, 1.0, -0.1, 1.2, 1 / 65535], dtype=np.float32).reshape(1, 1, 1, 6)
    y = np.repeat(y, 3, axis=3).reshape(1, 1, 6, 3)  # NHWC, three equal channels
    out = postprocess(y, ModelSpec(layout="NHWC"), np.uint16)
    assert out.dtype == np.uint16
    assert out[0, 0, :, 0].tolist() == [0, 32768, 65535, 0, 65535, 1]
    # an 8-bit (uint8) model output becomes 16-bit levels
    as8 = postprocess(np.full((1, 3, 1, 1), 255, np.uint8), ModelSpec(), np.uint16)
    assert as8.tolist() == [[[[65535, 65535, 65535]]]]
    # uint8 stays the default
    assert postprocess(y, ModelSpec(layout="NHWC")).dtype == np.uint8


@pytest.mark.parametrize("name", ["identity", "invert"])
def test_models_run_16bit_frames_to_16bit_frames(name: str) -> None:
    model = FrameModel(resolve_model(f"builtin:{name}")[0], device="cpu")
    frames = _frames16()
    out = model.run(frames, 2)
    assert out.dtype == np.uint16 and out.shape == frames.shape
    expected = frames if name == "identity" else 65535 - frames
    assert int(np.abs(out.astype(np.int64) - expected).max()) <= 1


def test_letterbox_padding_is_an_8bit_level_at_16_bits() -> None:
    params = fit_params((4, 8), (8, 8), "letterbox")
    padded = fit_frames(np.zeros((1, 4, 8, 3), np.uint16), params, pad_value=114)
    assert padded.dtype == np.uint16 and padded[0, 0, 0, 0] == 114 * 257
