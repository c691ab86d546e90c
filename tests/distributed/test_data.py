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
    # an unreadable video is one row of its own, its error in the row's own columns (they
    # were empty, the error only inside the `video` column's JSON; a sweep)
    video_rows = [r for r in ds.filter(lambda r: r["kind"] == "video").take_all()]
    assert [(Path(r["uri"]).name, r["error_type"]) for r in video_rows] == [
        ("notes.mp4", "CorruptVideoError")
    ]
    assert "notes.mp4" in video_rows[0]["error_message"]
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
    with pytest.raises(ConfigError, match="^map_processor needs a processor: .* got None$"):
        rd.map_processor(None, None)  # type: ignore[arg-type] # it ran the identity model
    with pytest.raises(ConfigError, match="takes the encoder options codec, crf"):
        rd.write_videos(None, "out", model="builtin:invert")  # type: ignore[arg-type]


def test_map_processor_with_num_gpus_checks_the_pool_against_the_cluster() -> None:
    """With ``num_gpus`` the pool skipped the check the default path makes: actors the
    cluster cannot hold (more GPUs than it has, or no CPU left for the decode and encode
    tasks) waited forever, silently (a sweep). This Ray: 8 CPUs, 2 GPUs."""
    from raypipe.errors import ClusterError, DeviceUnavailableError

    with pytest.raises(DeviceUnavailableError, match="num_gpus=3 per actor asked for but the "
                       "Ray cluster has 2 GPUs"):  # fmt: skip
        rd.map_processor(None, "builtin:invert", num_gpus=3)  # type: ignore[arg-type]
    with pytest.raises(ClusterError, match=r"3 actors at num_gpus=1 need 3 GPUs, the cluster "
                       r"has 2; pass workers=2 or fewer"):  # fmt: skip
        rd.map_processor(None, "builtin:invert", workers=3, num_gpus=1)  # type: ignore[arg-type]
    with pytest.raises(ClusterError, match="8 inference actors reserve 8 CPUs and the "
                       "decode/encode tasks need at least 1 more, the cluster has 8; pass "
                       "fewer workers=, or add CPUs"):  # fmt: skip
        rd.map_processor(None, "builtin:invert", workers=8, num_gpus=0)  # type: ignore[arg-type]


def test_a_step_that_drops_frames_or_a_tensor_model_fails_the_video_clearly(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    """A user step that dropped a frame of each chunk was written as "done" with fewer
    frames than the source (the encoder took the first times); ``write_videos`` after an
    analysis model failed with "yuv420p needs a width that is a multiple of 2 ... the
    frames are 1x1" (a sweep)."""

    def drop(batch: dict[str, np.ndarray]) -> dict[str, object]:
        return {**batch, "frames": [f[:-1] for f in batch["frames"]]}

    source = str(clips["bframes_aac"])  # GOPs of 12: chunks of 12 frames
    ds = rd.map_processor(rd.read_video_chunks([source], chunk_frames=16), "builtin:invert")
    (dropped,) = rd.write_videos(ds.map_batches(drop, batch_size=1), str(tmp_path / "a"))
    assert (dropped.status, dropped.error_type) == ("failed", "EncodeError")
    assert "reached the encoder with 11 frames for its 12 frame times; a step between " in (
        dropped.error_message
    )
    assert not (tmp_path / "a" / Path(source).name).exists()
    tables = rd.map_processor(rd.read_video_chunks([source], chunk_frames=16), "builtin:phash")
    (tensor,) = rd.write_videos(tables, str(tmp_path / "b"))
    assert (tensor.status, tensor.error_type) == ("failed", "ConfigError")
    assert tensor.error_message.startswith("the rows hold an analysis model's tables")

    # a step that keeps the frames but drops the other columns: a KeyError and a screen of
    # Ray's retry text (a sweep); one typed line
    def frames_only(batch: dict[str, np.ndarray]) -> dict[str, object]:
        return {"frames": batch["frames"], "kind": batch["kind"]}

    ds = rd.read_video_chunks([source], chunk_frames=16).map_batches(frames_only, batch_size=1)
    with pytest.raises(ConfigError, match=r"^a chunk row reached write_videos without its "
                       r"columns video, work_dir, error_type: a step between "):  # fmt: skip
        rd.write_videos(ds, str(tmp_path / "c"))
