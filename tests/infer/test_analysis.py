"""Analysis built-ins: phash agrees with imagehash.phash on decoded clips; the embedding model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from raypipe.errors import ConfigError, ModelNotFoundError
from raypipe.infer import (
    FrameModel,
    ModelSpec,
    analysis_bytes,
    build_embedding,
    build_phash,
    phash_to_hex,
    phash_to_int,
    resolve_model_and_spec,
)
from raypipe.testing import ClipSpec, decode_all, make_clip, make_named_clip

imagehash = pytest.importorskip("imagehash")
Image = pytest.importorskip("PIL.Image")

# Clips for the acceptance figures: the test kit's odd size plus 160x96, 640x360, 1280x720,
# a portrait and a very tall clip (Pillow 13 resizes those vertically first).
CLIPS: dict[str, ClipSpec] = {
    "160x96": ClipSpec(n_frames=48),
    "640x360": ClipSpec(width=640, height=360, n_frames=12),
    "1280x720": ClipSpec(width=1280, height=720, n_frames=4),
    "portrait_90x160": ClipSpec(width=90, height=160, n_frames=12, seed=3),
    "tall_64x200": ClipSpec(width=64, height=200, n_frames=12, seed=5),
}


def cpu_model(name: str) -> FrameModel:
    _, _, spec = resolve_model_and_spec(f"builtin:{name}")
    return FrameModel(analysis_bytes(name), spec=spec, device="cpu", intra_op_threads=1)


def reference_bits(frame: np.ndarray) -> np.ndarray:
    return np.asarray(imagehash.phash(Image.fromarray(frame)).hash, dtype=np.uint8).reshape(64)


@pytest.fixture(scope="module")
def decoded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    directory = tmp_path_factory.mktemp("phash_clips")
    paths: dict[str, Path] = {k: make_clip(directory / f"{k}.mp4", s) for k, s in CLIPS.items()}
    paths["odd_size_198x110"] = make_named_clip("odd_size", directory)
    return {k: decode_all(p)[0] for k, p in paths.items()}


# --- phash --------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [build_phash, build_embedding])
def test_models_are_checked_ir9_opset17_with_dynamic_input(build: object) -> None:
    model = build()  # type: ignore[operator]
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 9
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]


def test_phash_agrees_with_imagehash_on_decoded_clips(decoded: dict[str, np.ndarray]) -> None:
    """The README's claim: bit for bit the same as imagehash.phash on every frame."""
    model = cpu_model("phash")
    distances = []
    for kind, frames in decoded.items():
        bits = model.run_tensors(frames, batch_size=8)["hash"]
        assert bits.shape == (len(frames), 64)
        assert bits.dtype == np.uint8
        reference = np.stack([reference_bits(f) for f in frames])
        per_frame = (bits != reference).sum(axis=1)
        h, w = frames.shape[1:3]
        print(
            f"phash vs imagehash {kind} ({w}x{h}): {len(frames)} frames, "
            f"mean {per_frame.mean():.3f} bits, max {per_frame.max()}"
        )
        distances.append(per_frame)
    every = np.concatenate(distances)
    print(
        f"phash vs imagehash, all clips: {len(every)} frames, mean {every.mean():.3f} bits, "
        f"max {every.max()} bits"
    )
    assert len(every) >= 100
    assert every.max() == 0


def test_phash_hex_matches_imagehash_string(decoded: dict[str, np.ndarray]) -> None:
    frames = decoded["odd_size_198x110"][:6]
    bits = cpu_model("phash").run_tensors(frames, 6)["hash"]
    for frame, row in zip(frames, bits):
        expected = str(imagehash.phash(Image.fromarray(frame)))
        assert phash_to_hex(row) == expected
        assert phash_to_int(row) == int(expected, 16)


@pytest.mark.parametrize("size", [(20, 25), (32, 32), (33, 31), (300, 100), (101, 66), (101, 67)])
def test_phash_on_awkward_sizes_and_noise(size: tuple[int, int]) -> None:
    """Upscaling, no resize, and both sides of Pillow 13's vertical-first rule."""
    rng = np.random.default_rng(sum(size))
    frames = rng.integers(0, 256, (3, *size, 3), dtype=np.uint8)
    bits = cpu_model("phash").run_tensors(frames, 3)["hash"]
    reference = np.stack([reference_bits(f) for f in frames])
    assert (bits != reference).sum(axis=1).max() == 0


def test_phash_hex_of_known_bits() -> None:
    bits = np.zeros(64, dtype=np.uint8)
    bits[0] = 1
    bits[-1] = 1
    assert phash_to_hex(bits.reshape(8, 8)) == "8000000000000001"
    assert phash_to_int(bits) == 2**63 + 1


def test_phash_hex_rejects_other_shapes_and_values() -> None:
    with pytest.raises(ValueError, match="phash bits must be 64 values of 0 or 1, got 63 values"):
        phash_to_hex(np.zeros(63, dtype=np.uint8))
    with pytest.raises(ValueError, match="got 64 values not all 0/1"):
        phash_to_hex(np.full(64, 2, dtype=np.uint8))


def test_builtin_analysis_specs_give_tensors() -> None:
    for name in ("phash", "embedding"):
        _, _, spec = resolve_model_and_spec(f"builtin:{name}")
        assert spec == ModelSpec(output="tensor")
        assert cpu_model(name).output_kind == "tensor"


def test_unknown_analysis_model() -> None:
    with pytest.raises(ModelNotFoundError, match="unknown analysis model 'nope'; analysis models"):
        analysis_bytes("nope")


# --- embedding ----------------------------------------------------------------------------


def test_embedding_has_unit_norm_and_tells_frames_apart(decoded: dict[str, np.ndarray]) -> None:
    frames = decoded["160x96"][:10]
    out = cpu_model("embedding").run_tensors(frames, batch_size=4)
    assert list(out) == ["embedding"]
    vectors = out["embedding"]
    assert vectors.shape == (10, 64)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    again = cpu_model("embedding").run_tensors(frames[:1], batch_size=1)["embedding"]
    np.testing.assert_allclose(again[0], vectors[0], atol=1e-6)
    distinct = {tuple(np.round(v, 4)) for v in vectors}
    assert len(distinct) == len(frames)


def test_embedding_runs_on_any_size() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (2, 45, 77, 3), dtype=np.uint8)
    assert cpu_model("embedding").run_tensors(frames, 2)["embedding"].shape == (2, 64)


def test_embedding_is_deterministic_per_seed_and_dim() -> None:
    assert build_embedding().SerializeToString() == build_embedding().SerializeToString()
    assert build_embedding(seed=1).SerializeToString() != build_embedding().SerializeToString()
    model = FrameModel(build_embedding(dim=8).SerializeToString(), device="cpu")
    frames = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    assert model.run_tensors(frames, 1)["embedding"].shape == (1, 8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 0}, "embedding dim must be an integer >= 1, got 0"),
        ({"dim": 2.5}, "embedding dim must be an integer >= 1, got 2.5"),
        ({"seed": -1}, "embedding seed must be an integer >= 0, got -1"),
    ],
)
def test_embedding_arguments_are_checked(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_embedding(**kwargs)  # type: ignore[arg-type]
