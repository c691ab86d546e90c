"""raypipe.data: read → process → (a user's map_batches) → write, over several videos, exact."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import assert_exact_to, lossless_options, model_frames

import raypipe.data as rd
from raypipe.errors import ConfigError
from raypipe.examples.processors import RegionChain, RegionScores
from raypipe.infer.processors import apply_processor
from raypipe.testing import decode_all, write_text_as_video


@pytest.fixture(scope="module", autouse=True)
def _ray(ray_local: None) -> None:
    return None


def test_two_videos_with_a_user_step_between_the_pieces_are_exact(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    a = shutil.copy(clips["bframes_aac"], src / "a.mp4")  # B-frames, AAC audio
    b = shutil.copy(clips["ntsc"], src / "b.mp4")  # 30000/1001 fps, AAC audio
    bad = write_text_as_video(src / "notes.mp4")
    out = tmp_path / "out"

    def mirror(batch: dict[str, np.ndarray]) -> dict[str, object]:
        """A user's own step between the pieces: mirror each chunk's frames left-right
        (defined here, not at module level, so Ray pickles it by value: workers cannot
        import a test module)."""
        return {**batch, "frames": [np.ascontiguousarray(f[:, :, ::-1]) for f in batch["frames"]]}

    ds = rd.read_video_chunks([str(a), str(b), str(bad)], chunk_frames=12)
    ds = rd.map_processor(ds, "builtin:invert", workers=2)
    ds = ds.map_batches(mirror, batch_size=1)
    results = rd.write_videos(ds, str(out), **lossless_options())

    by_name = {Path(r.uri).name: r for r in results}
    assert len(results) == 3
    assert (by_name["a.mp4"].status, by_name["a.mp4"].frames_out) == ("done", 48)
    assert (by_name["b.mp4"].status, by_name["b.mp4"].frames_out) == ("done", 48)
    failed = by_name["notes.mp4"]
    assert (failed.status, failed.error_type) == ("failed", "CorruptVideoError")
    for name in ("a.mp4", "b.mp4"):
        assert_exact_to(
            src / name, out / name, lambda f: model_frames("builtin:invert", f)[:, :, ::-1]
        )
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mp4"], "work dirs left?"


def test_map_processor_takes_processors_and_tensor_outputs(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    source = clips["odd_size"]
    ds = rd.read_video_chunks([str(source)], chunk_frames=16)
    results = rd.write_videos(
        rd.map_processor(ds, RegionChain), str(tmp_path), **lossless_options()
    )
    assert [r.status for r in results] == ["done"]
    assert_exact_to(source, tmp_path / source.name, lambda f: apply_processor(RegionChain, f))

    rows = rd.map_processor(rd.read_video_chunks([str(source)], chunk_frames=16), RegionScores)
    tables = sorted(
        (pq.read_table(io.BytesIO(r["segment"])) for r in rows.iter_rows() if r["kind"] == "chunk"),
        key=lambda t: t.column("frame_index")[0].as_py(),
    )
    frames = decode_all(source)[0]
    expected = apply_processor(RegionScores, frames)
    assert isinstance(expected, dict)
    got = [v for t in tables for v in t.column("regions").to_pylist()]
    assert got == expected["regions"].tolist() and len(got) == len(frames)


def test_bad_arguments_are_typed() -> None:
    with pytest.raises(ConfigError, match="got no URIs"):
        rd.read_video_chunks([])
    with pytest.raises(ConfigError, match="takes the encoder options codec, crf"):
        rd.write_videos(None, "out", model="builtin:invert")  # type: ignore[arg-type]
