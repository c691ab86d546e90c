"""Model failures as one typed line: shortened message, a pad hint that is tried, NaN."""

from __future__ import annotations

import numpy as np
import pytest

from raypipe.errors import ModelError, ModelLoadError
from raypipe.infer import FrameModel, ModelSpec
from raypipe.infer.model_errors import model_failure, pad_hint, shorten
from raypipe.testing import models

ORT_ADD = (
    "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Add node. "
    "Name:'' Status Message: /onnxruntime_src/onnxruntime/core/providers/cpu/math/"
    "element_wise_ops.h:583 void onnxruntime::BroadcastIterator::Append(ptrdiff_t, ptrdiff_t) "
    "axis == 1 || axis == largest was false. Attempting to broadcast an axis by a dimension "
    "other than 1. 704 by 720\n"
)
ORT_CONCAT = (
    "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Non-zero status code returned while running "
    "Concat node. Name:'cat_3' Status Message: concat.cc:157 PrepareForCompute Non concat axis "
    "dimensions must match: Axis 2 has mismatched dimensions of 14 and 13"
)


def frames_of(height: int, width: int, n: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def test_shorten_keeps_what_the_model_said() -> None:
    assert shorten(ORT_ADD) == (
        "Add node: Attempting to broadcast an axis by a dimension other than 1. 704 by 720"
    )
    assert shorten(ORT_CONCAT) == (
        "Concat node 'cat_3': PrepareForCompute Non concat axis dimensions must match: Axis 2 "
        "has mismatched dimensions of 14 and 13"
    )
    assert len(shorten("x" * 1000)) == 240 and "\n" not in shorten("a\nb")


@pytest.mark.parametrize(
    ("height", "width", "stride", "hint"),
    [
        (110, 198, 32, 32),
        (720, 1280, 32, 32),  # 720 is a multiple of 8 and 16: those would change nothing
        (104, 200, 32, 32),  # multiples of 8: 16 gives 112x208, which a stride-32 model refuses
        (110, 198, 16, 16),
    ],
)
def test_the_hint_is_the_smallest_multiple_that_runs(
    height: int, width: int, stride: int, hint: int
) -> None:
    model = FrameModel(models.stride32_unet(stride), device="cpu")
    with pytest.raises(ModelError) as e:
        model.run(frames_of(height, width), 2)
    message = str(e.value)
    assert type(e.value) is ModelError and "\n" not in message
    assert message.startswith(
        f"the model failed on {height}x{width} (height x width) frames: Add node: Attempting "
        "to broadcast an axis by a dimension other than 1"
    )
    assert f"; try --pad-multiple {hint} (Python and sidecars: pad_multiple={hint})" in message
    padded = ModelSpec(pad_multiple=hint)  # and the hint is right
    out = FrameModel(models.stride32_unet(stride), spec=padded, device="cpu").run(
        frames_of(height, width), 2
    )
    assert out.shape == (3, height, width, 3)


def test_a_failure_in_tiles_names_the_tile_windows() -> None:
    """A stride-32 model tiled in 100 px tiles, 16 px of overlap: the model sees 132x132
    windows. The failure named the frames (a sweep), whose size the model never saw, and
    the hint padded "frames"."""
    model = FrameModel(models.stride32_unet(32), spec=ModelSpec(tile=100), device="cpu")
    with pytest.raises(ModelError) as e:
        model.run(frames_of(200, 300), 2)
    message = str(e.value)
    assert message.startswith(
        "the model failed on 132x132 (height x width) tile windows of 200x300 frames: Add node"
    ), message
    assert "pad_multiple=32): tile windows are padded to 160x160 and the output" in message
    error = model_failure(RuntimeError("out of memory"), 720, 1280, windows=(288, 288))
    assert "on a (n, 3, 288, 288) batch" in str(error)
    tiled = ModelSpec(tile=100, pad_multiple=32)  # and the hint is right
    out = FrameModel(models.stride32_unet(32), spec=tiled, device="cpu").run(frames_of(200, 300), 2)
    assert out.shape == (3, 200, 300, 3)


def test_no_pad_hint_when_padding_cannot_help() -> None:
    """A stride-128 model on 64x64 frames: no multiple up to 64 changes the size."""
    model = FrameModel(models.stride32_unet(128), device="cpu")
    with pytest.raises(ModelError, match="does not take frames of this size: declare its size"):
        model.run(frames_of(64, 64), 2)
    assert pad_hint(64, 64, lambda m: True) is None


def test_other_failures_get_a_generic_hint() -> None:
    error = model_failure(RuntimeError("CUDA out of memory"), 720, 1280)
    assert str(error) == (
        "the model failed on 720x1280 (height x width) frames: CUDA out of memory; check that "
        "the model runs in ONNX Runtime on a (n, 3, 720, 1280) batch, and rerun with "
        "--verbose for the traceback"
    )


@pytest.mark.parametrize("kind", ["image", "tensor"])
def test_nan_output_is_a_model_error(kind: str) -> None:
    model = FrameModel(models.nan_model(), spec=ModelSpec(output=kind), device="cpu")  # type: ignore[arg-type]
    run = model.run if kind == "image" else model.run_tensors
    with pytest.raises(ModelError, match="output 'output' holds NaN on 48x64"):
        run(frames_of(48, 64), 2)
    with pytest.raises(ModelError, match="holds NaN"):
        model.warmup(48, 64, 2)


def test_load_time_kinds_stay_typed() -> None:
    with pytest.raises(ModelLoadError, match="has rank 3"):
        FrameModel(models.wrong_rank_input(), device="cpu")
    with pytest.raises(ModelLoadError, match="1 on the channel axis"):
        FrameModel(models.wrong_channels_input(), device="cpu")
    runtime = FrameModel(models.runtime_two_channels(), device="cpu")
    assert runtime.output_kind == "image"  # its channel count is only known when it runs
    with pytest.raises(ModelLoadError, match="2 on the channel axis"):
        runtime.run(frames_of(8, 8), 2)
