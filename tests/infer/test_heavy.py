"""The super-resolution network: shape, range, determinism, ONNX hygiene, float16 copy."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from raypipe.errors import ConfigError, ModelLoadError
from raypipe.infer import build_builtin, create_session
from raypipe.infer.heavy import build_superres, to_float16


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = create_session(model.SerializeToString(), device="cpu", intra_op_threads=1)
    (y,) = session.run(["output"], {"input": x})
    return np.asarray(y)


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return np.random.default_rng(3).random((1, 3, 36, 52), dtype=np.float32)


def test_superres_runs_on_cpu_x2_within_unit_range(frame: np.ndarray) -> None:
    y = _run(build_superres(), frame)
    assert y.shape == (1, 3, 72, 104) and y.dtype == np.float32
    assert y.min() >= 0.0 and y.max() <= 1.0
    # A sane image: the nearest-neighbour upscale of the input plus a small residual.
    nearest = frame.repeat(2, axis=2).repeat(2, axis=3)
    assert 0.0 < np.abs(y - nearest).mean() < 0.1


def test_superres_is_deterministic_across_builds(frame: np.ndarray) -> None:
    a, b = build_superres(), build_superres()
    assert a.SerializeToString() == b.SerializeToString()
    np.testing.assert_array_equal(_run(a, frame), _run(b, frame))
    assert build_superres(seed=1).SerializeToString() != a.SerializeToString()


def test_superres_onnx_hygiene() -> None:
    model = build_superres(scale=2, channels=64, blocks=8)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 9
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.type.tensor_type.elem_type == TensorProto.FLOAT
    dims = inp.type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "h", "w"]
    dims = out.type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "out_h", "out_w"]
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Conv") == 2 + 2 * 8 and "DepthToSpace" in ops and ops[-1] == "Clip"
    weights = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    assert weights > 500_000  # heavy enough for GPU numbers to mean something


@pytest.mark.parametrize(("scale", "blocks"), [(3, 1), (1, 0), (4, 2)])
def test_superres_other_scales_and_dynamic_batch(scale: int, blocks: int) -> None:
    x = np.random.default_rng(0).random((2, 3, 10, 14), dtype=np.float32)
    y = _run(build_superres(scale=scale, channels=8, blocks=blocks), x)
    assert y.shape == (2, 3, 10 * scale, 14 * scale)
    assert y.min() >= 0.0 and y.max() <= 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale": 0}, "scale must be an integer >= 1, got 0"),
        ({"channels": 2.5}, "channels must be an integer >= 1, got 2.5"),
        ({"blocks": -1}, "blocks must be an integer >= 0, got -1"),
        ({"seed": True}, "seed must be an integer >= 0, got True"),
    ],
)
def test_superres_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_superres(**kwargs)  # type: ignore[arg-type]


def test_to_float16_keeps_float32_io_and_stays_close(frame: np.ndarray) -> None:
    model = build_superres(channels=16, blocks=2)
    half = to_float16(model)
    assert {t.data_type for t in half.graph.initializer} == {TensorProto.FLOAT16}
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert half.ir_version == 9
    y16, y32 = _run(half, frame), _run(model, frame)
    assert y16.dtype == np.float32 and y16.shape == y32.shape
    np.testing.assert_allclose(y16, y32, atol=1e-2)
    assert model.graph.initializer[0].data_type == TensorProto.FLOAT  # the input is untouched


def test_to_float16_refuses_graphs_it_cannot_convert() -> None:
    match = (
        r"to_float16 handles only .*; the model also uses \['Resize'\]\. Convert it with a "
        r"full float16 converter, or keep it float32 and use TensorRT's FP16 mode"
    )
    with pytest.raises(ModelLoadError, match=match):
        to_float16(build_builtin("upscale2x"))
