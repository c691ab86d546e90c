"""Tensor-output (analysis) models through the pipeline: Parquet per video, sampling, tiling."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import ray
from conftest import assert_exact, lossless_options

import raypipe
from raypipe.errors import ConfigError
from raypipe.infer.models import load_frame_model
from raypipe.media import make_video_id
from raypipe.testing import ClipSpec, decode_all, make_clip
from raypipe.testing.bad_inputs import write_out_of_order_pts


@pytest.fixture(scope="module", autouse=True)
def _ray(ray_local: None) -> None:
    return None


def _table(out: Path, source: Path):  # type: ignore[no-untyped-def]
    return pq.read_table(out / f"video_id={make_video_id(str(source))}" / "part-0.parquet")


def _read_everywhere(out: Path) -> pd.DataFrame:
    """The output folder read by pandas, pyarrow's hive dataset and Ray Data: the same
    rows, with ``video_id`` from the partition path (the README's promise)."""
    by_pandas = pd.read_parquet(out)
    by_arrow = pads.dataset(str(out), format="parquet", partitioning="hive").to_table()
    by_ray = ray.data.read_parquet(str(out)).to_pandas()
    columns = ["video_id", "video_uri", "frame_index", "pts", "pts_seconds"]
    frames = [
        f[columns].astype({"video_id": str}).sort_values(["video_id", "frame_index"])
        for f in (by_pandas, by_arrow.to_pandas(), by_ray)
    ]
    for other in frames[1:]:
        pd.testing.assert_frame_equal(
            frames[0].reset_index(drop=True), other.reset_index(drop=True), check_dtype=False
        )
    return frames[0]


def test_one_videos_table_reads_as_a_dataset(clips: dict[str, Path], tmp_path: Path) -> None:
    source = clips["ntsc"]
    out = tmp_path / "hashes"
    stats = raypipe.process_video(str(source), str(out), model="builtin:phash", quiet=True)
    assert stats.output == str(out)  # the folder given, not its part file (a sweep)
    frame = _read_everywhere(out)
    assert set(frame["video_id"]) == {make_video_id(str(source))}
    assert list(frame["frame_index"]) == list(range(len(frame))) and len(frame) > 0
    assert "video_id" not in _table(out, source).column_names  # one file: video_uri says
    # every chunk record has the fields README lists, its table's write as the encode (the
    # report drew "task worker pid ?" for analysis runs: a sweep)
    assert stats.chunk_stats and all(
        c["encode_pid"] > 0 and c["encode_cpu_s"] >= 0 for c in stats.chunk_stats
    )


def test_phash_rows_match_in_process_and_keep_order(clips: dict[str, Path], tmp_path: Path) -> None:
    source = clips["bframes_aac"]
    raypipe.process_video(
        str(source), str(tmp_path / "hashes"), model="builtin:phash", chunk_frames=7, quiet=True
    )
    table = _table(tmp_path / "hashes", source)
    frames, pts, tb = decode_all(source)
    assert table.num_rows == len(frames) == 48
    assert table.column("frame_index").to_pylist() == list(range(48))
    assert table.column("pts_seconds").to_pylist() == [float(p * tb) for p in pts]
    assert set(table.column("video_uri").to_pylist()) == {str(source)}
    expected = load_frame_model("builtin:phash", device="cpu").run_tensors(frames, 8)["hash"]
    got = table.column("hash").combine_chunks().to_numpy_ndarray()
    assert got.shape == (48, 64) and np.array_equal(got, expected)


@pytest.mark.parametrize(
    "kind, options, expected",
    [
        ("bframes_aac", {"every_n_frames": 5}, list(range(0, 48, 5))),
        ("bframes_aac", {"sample_fps": 10.0}, None),
        ("vfr", {"sample_fps": 7.0}, None),
    ],
)
def test_sampling_modes(
    clips: dict[str, Path],
    tmp_path: Path,
    kind: str,
    options: dict[str, float],
    expected: list[int] | None,
) -> None:
    source = clips[kind]
    raypipe.process_video(
        str(source),
        str(tmp_path / "emb"),
        model="builtin:embedding",
        chunk_frames=7,
        quiet=True,
        **options,
    )
    table = _table(tmp_path / "emb", source)
    _, pts, tb = decode_all(source)
    if expected is None:  # the first frame of each 1/F s interval, by timestamp
        rate = Fraction(options["sample_fps"])
        buckets = [int((p - pts[0]) * tb * rate) for p in pts]
        expected = [i for i, b in enumerate(buckets) if i == 0 or b > buckets[i - 1]]
    assert table.column("frame_index").to_pylist() == expected
    emb = table.column("embedding").combine_chunks().to_numpy_ndarray()
    assert emb.shape == (len(expected), 64)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_archive_writes_one_partition_per_video(clips: dict[str, Path], tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for kind in ("ntsc", "odd_size", "hevc_mov"):
        shutil.copy(clips[kind], src / f"{kind}{clips[kind].suffix}")
    out = tmp_path / "out"
    report = raypipe.process_archive(
        str(src), str(out), model="builtin:phash", every_n_frames=2, quiet=True
    )
    assert report.exit_code == 0 and report.count("done") == 3
    parts = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(parts) == 3 and all(p.startswith("video_id=") for p in parts)
    frame = _read_everywhere(out)  # the report (_raypipe-report.*) is left out by all three
    assert len(frame) == 3 * 24
    assert frame.groupby("video_id")["video_uri"].nunique().eq(1).all()
    assert (
        frame.groupby("video_uri")["frame_index"]
        .apply(list)
        .map(lambda idx: idx == list(range(0, 48, 2)))
        .all()
    )
    again = raypipe.process_archive(
        str(src), str(out), model="builtin:phash", every_n_frames=2, quiet=True
    )
    assert [r["status"] for r in again.rows] == ["skipped"] * 3


def test_a_video_that_fails_leaves_no_partition_folder(tmp_path: Path) -> None:
    """A video that fails after planning (its frames out of order: the decode refuses it)
    left an empty ``video_id=...`` folder in the archive's table, which readers of the
    folder as a dataset then list."""
    src = tmp_path / "src"
    src.mkdir()
    make_clip(src / "good.mp4", ClipSpec(n_frames=8))
    write_out_of_order_pts(src / "swapped.mkv")
    out = tmp_path / "out"
    report = raypipe.process_archive(
        str(src), str(out), model="builtin:phash", chunk_frames=4, quiet=True
    )
    rows = {Path(r["uri"]).name: r for r in report.rows}
    assert rows["good.mp4"]["status"] == "done"
    assert (rows["swapped.mkv"]["status"], rows["swapped.mkv"]["error_type"]) == (
        "failed",
        "DecodeError",
    )
    parts = [p.name for p in out.iterdir() if p.name.startswith("video_id=")]
    assert len(parts) == 1 and parts[0].startswith("video_id=good.mp4")
    # a video whose first chunk fails while its others run on: their late segments made
    # its partition folder again, and it was left empty (a sweep)
    (tmp_path / "proc.py").write_text(
        "import os\nimport numpy as np\nimport raypipe\n\n\n"
        "class FailsOnce(raypipe.Processor):\n    output = 'tensor'\n\n"
        "    def __call__(self, frames):\n"
        f"        try:\n            os.close(os.open({str(tmp_path / 'failed')!r}, "
        "os.O_CREAT | os.O_EXCL))\n        except FileExistsError:\n"
        "            return {'m': frames.reshape(len(frames), -1)[:, :4].astype(np.float32)}\n"
        "        raise RuntimeError('once')\n"
    )
    once = tmp_path / "once"
    once.mkdir()
    make_clip(once / "v.mp4", ClipSpec(n_frames=24))
    report = raypipe.process_archive(
        str(once), str(tmp_path / "out2"), processor=f"{tmp_path / 'proc.py'}:FailsOnce",
        chunk_frames=4, quiet=True,
    )  # fmt: skip
    assert [r["status"] for r in report.rows] == ["failed"]
    assert not [p.name for p in (tmp_path / "out2").iterdir() if not p.name.startswith("_")]


def test_tiled_sharpen_through_the_pipeline_equals_untiled(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "tiled.mp4"
    raypipe.process_video(
        str(clips["odd_size"]),
        str(out),
        model="builtin:sharpen",
        tile=32,
        tile_overlap=2,
        chunk_frames=12,
        quiet=True,
        **lossless_options(),
    )
    assert_exact(clips["odd_size"], out, "builtin:sharpen")  # the untiled model, in-process


def test_sampling_needs_a_tensor_model(clips: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="frame sampling .* is for models that output tensors"):
        raypipe.process_video(
            str(clips["ntsc"]),
            str(tmp_path / "x.mp4"),
            model="builtin:invert",
            every_n_frames=2,
            quiet=True,
        )


def test_an_analysis_run_into_an_existing_file_is_refused_before_any_work(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    """It failed once Ray had started, "NotADirectoryError ... (unexpected)" (a sweep)."""
    notes = tmp_path / "notes.json"
    notes.write_text("{}")
    with pytest.raises(ConfigError, match=r"notes.json' is a file; an analysis run writes"):
        raypipe.process_video(str(clips["ntsc"]), str(notes), model="builtin:phash", quiet=True)
    assert notes.read_text() == "{}" and sorted(tmp_path.iterdir()) == [notes]


def test_archive_passes_the_model_spec_to_the_actors(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    """Tiles without overlap leave seams: the archive's output must show them, i.e. equal
    the tiled model in-process and differ from the untiled one."""
    import dataclasses

    from raypipe.infer.models import FrameModel, ModelSpec, resolve_model

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(clips["odd_size"], src / "a.mp4")
    report = raypipe.process_archive(
        str(src),
        str(tmp_path / "out"),
        model="builtin:sharpen",
        tile=16,
        tile_overlap=0,
        quiet=True,
        **lossless_options(),
    )
    assert report.exit_code == 0
    out, _, _ = decode_all(tmp_path / "out" / "a.mp4")
    frames, _, _ = decode_all(clips["odd_size"])
    data = resolve_model("builtin:sharpen")[0]
    tiled = dataclasses.replace(ModelSpec(), tile=16, tile_overlap=0)
    assert np.array_equal(out, FrameModel(data, spec=tiled, device="cpu").run(frames, 4))
    assert not np.array_equal(out, FrameModel(data, device="cpu").run(frames, 4))


def test_chunks_whose_output_shapes_differ_fail_the_video_naming_the_output() -> None:
    """Per-frame shapes that change from chunk to chunk (another actor, another batch) met
    only at assembly: "ArrowInvalid: Schema at index 4 was different", naming no output (a
    sweep). A list column (a 1-D object array of per-frame arrays: the advice) joins."""
    import pyarrow as pa

    from raypipe.distributed.assembly import _one_table
    from raypipe.errors import ModelError

    def chunk(width: int) -> pa.Table:
        scores = pa.FixedShapeTensorArray.from_numpy_ndarray(np.zeros((2, width), np.float32))
        return pa.table({"frame_index": pa.array([0, 1]), "scores": scores})

    match = (
        r"^output 'scores' is \[4\] \(float\) for some frames and \[1\] \(float\) for others; "
        r"a table column keeps one shape"
    )
    with pytest.raises(ModelError, match=match):
        _one_table([chunk(4), chunk(4), chunk(1)])
    ragged = [np.empty(2, dtype=object) for _ in range(2)]
    ragged[0][:] = [np.zeros(3), np.zeros(1)]
    ragged[1][:] = [np.zeros(0), np.zeros(5)]
    joined = _one_table([pa.table({"boxes": pa.array(r)}) for r in ragged])
    assert [len(v) for v in joined.column("boxes").to_pylist()] == [3, 1, 0, 5]
