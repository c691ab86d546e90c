"""User processors on a real local Ray with two logical GPUs: exact, tables, errors (their
GPU pinning: test_gpu_sharing.py)."""

from __future__ import annotations

import json
import re
import shutil
import traceback
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import assert_exact_to, lossless_cli_args

import raypipe
from raypipe.archive_report import read_report
from raypipe.cli import main
from raypipe.errors import ProcessorError, WorkerTraceback
from raypipe.examples.processors import Redact, RegionChain, RegionScores
from raypipe.infer.processors import apply_processor
from raypipe.media import make_video_id
from raypipe.testing import decode_all

EXAMPLES = Path(raypipe.__file__).parent / "examples" / "processors.py"


@pytest.fixture(scope="module", autouse=True)
def _ray(ray_local: None) -> None:
    return None


def in_process(processor: object):  # type: ignore[no-untyped-def]
    return lambda frames: apply_processor(processor, frames)


@pytest.mark.parametrize(
    ("target", "cls"),
    [(f"{EXAMPLES}:RegionChain", RegionChain), ("raypipe.examples.processors:Redact", Redact)],
    ids=["chain-by-file", "redact-by-module"],
)
def test_example_processors_through_the_cli_equal_the_class_in_process(
    clips: dict[str, Path], tmp_path: Path, target: str, cls: type
) -> None:
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    code = main(["run", str(clips["bframes_aac"]), str(out), "--processor", target,
                 "--chunk-frames", "12", "--batch-size", "5", "--stats", str(stats), "-q",
                 *lossless_cli_args()])  # fmt: skip
    assert code == 0
    assert_exact_to(clips["bframes_aac"], out, in_process(cls))
    frames = decode_all(clips["bframes_aac"])[0]
    assert not np.array_equal(decode_all(out)[0], frames), "the processor changed nothing"
    doc = json.loads(stats.read_text())
    assert doc["totals"]["frames"] == 48 and doc["totals"]["chunks"] == 4
    for chunk in doc["chunks"]:  # what ctx.session built, per chunk, in the stats
        assert chunk["providers"] == ["CPUExecutionProvider"]
        assert {s["granted"][0] for s in chunk["sessions"]} == {"CPUExecutionProvider"}
        # what was asked for: the device's order (it was [] where the setup left the order
        # to the session, as on the CPU: a sweep)
        assert {tuple(s["asked"]) for s in chunk["sessions"]} == {("CPUExecutionProvider",)}


IN_PLACE = """
import raypipe

class Halve(raypipe.Processor):
    def __call__(self, frames):
        frames //= 2  # into the frames it was given
        return frames
"""


def test_a_processor_may_write_into_the_frames_it_is_given(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    """The actor reads a chunk's frames where the object store holds them (read-only); a
    processor gets its own copy."""
    path = tmp_path / "halve.py"
    path.write_text(IN_PLACE)
    out = tmp_path / "out.mp4"
    code = main(["run", str(clips["bframes_aac"]), str(out), "--processor", f"{path}:Halve",
                 "--chunk-frames", "12", "-q", *lossless_cli_args()])  # fmt: skip
    assert code == 0
    assert_exact_to(clips["bframes_aac"], out, lambda frames: frames // 2)


def test_tensor_processor_writes_the_analysis_parquet_layout(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    source = clips["ntsc"]
    raypipe.process_video(
        str(source), str(tmp_path / "scores"), processor=RegionScores, chunk_frames=7, quiet=True
    )
    table = pq.read_table(
        tmp_path / "scores" / f"video_id={make_video_id(str(source))}" / "part-0.parquet"
    )
    # video_id is the partition (video_id=ID/ in the path), not a column of the file
    fixed = ["video_uri", "frame_index", "pts", "pts_seconds"]
    assert table.column_names == [*fixed, "regions", "score_map"]
    frames, pts, tb = decode_all(source)
    assert table.column("frame_index").to_pylist() == list(range(len(frames)))
    assert table.column("pts_seconds").to_pylist() == [float(p * tb) for p in pts]
    expected = apply_processor(RegionScores, frames)
    assert isinstance(expected, dict)
    assert table.column("regions").to_pylist() == expected["regions"].tolist()
    got = table.column("score_map").combine_chunks().to_numpy_ndarray()
    assert np.array_equal(got, expected["score_map"])
    # the same layout as an analysis model's table (the column types of the fixed part)
    raypipe.process_video(
        str(source), str(tmp_path / "hash"), model="builtin:phash", chunk_frames=7, quiet=True
    )
    phash = pq.read_table(
        tmp_path / "hash" / f"video_id={make_video_id(str(source))}" / "part-0.parquet"
    )
    assert phash.schema.remove(4) == table.schema.remove(5).remove(4)


FAILING = """
import numpy as np
import raypipe

class BadSetup(raypipe.Processor):
    def setup(self, ctx):
        raise FileNotFoundError("weights.bin is missing")

class BadCall(raypipe.Processor):
    def __call__(self, frames):
        if frames.shape[2] == 198:  # only the odd-sized video
            raise ValueError(f"cannot align faces in {frames.shape[2]}x{frames.shape[1]} frames")
        return 255 - frames
"""


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("BadSetup", "processor BadSetup.setup raised FileNotFoundError: weights.bin is missing"),
        (
            "BadCall",
            "processor BadCall.__call__ raised ValueError: cannot align faces in 198x110 frames",
        ),
    ],
)
def test_a_processor_that_raises_is_one_typed_line(
    clips: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    message: str,
) -> None:
    path = tmp_path / "failing.py"
    path.write_text(FAILING)
    out = tmp_path / "out"
    out.mkdir()
    code = main(["run", str(clips["odd_size"]), str(out / "o.mp4"), "--processor",
                 f"{path}:{name}", "-q"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    # a failure on frames says which (a failing setup has none to name)
    where = r"at frames \d+\.\.\d+ \(chunk \d+\): " if "__call__" in message else ""
    assert re.fullmatch(
        f"raypipe: error: ProcessorError: {where}{re.escape(message)}; fix the processor "
        + re.escape("(its traceback: --verbose, or in Python this error's cause)"),
        err,
    ), err
    assert list(out.iterdir()) == []
    with pytest.raises(ProcessorError, match=message) as raised:  # the same from Python
        raypipe.process_video(
            str(clips["odd_size"]), str(out / "o.mp4"), processor=f"{path}:{name}", quiet=True
        )
    # with the worker's traceback as its cause, which Python prints under it (a notebook
    # showed the message alone; the traceback was in an undocumented attribute)
    cause = raised.value.__cause__
    assert isinstance(cause, WorkerTraceback) and raised.value.detail
    assert str(cause).startswith("where it failed (on a worker):\nTraceback")
    assert 'failing.py", line' in str(cause)  # the processor's own frame
    shown = "".join(traceback.format_exception(raised.value))
    assert "The above exception was the direct cause" in shown and "failing.py" in shown


def test_archive_with_a_processor_fails_only_the_video_it_raises_on(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "failing.py"
    path.write_text(FAILING)
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    shutil.copy(clips["odd_size"], src / "odd.mp4")
    shutil.copy(clips["bframes_aac"], src / "good.mp4")
    args = ["archive", str(src), str(out), "--processor", f"{path}:BadCall", "--chunk-frames",
            "12", "-q", *lossless_cli_args()]  # fmt: skip
    assert main(args) == 3
    rows = {Path(r["uri"]).name: r for r in read_report(str(out / "_raypipe-report.parquet"))}
    assert rows["odd.mp4"]["error_type"] == "ProcessorError"
    assert "cannot align faces in 198x110" in rows["odd.mp4"]["error_message"]
    assert rows["good.mp4"]["status"] == "done" and not (out / "odd.mp4").exists()
    assert_exact_to(clips["bframes_aac"], out / "good.mp4", lambda f: 255 - f)
    assert main(args) == 3  # resumed: the finished video is skipped, the bad one fails again
    rows = {Path(r["uri"]).name: r for r in read_report(str(out / "_raypipe-report.parquet"))}
    assert (rows["good.mp4"]["status"], rows["odd.mp4"]["attempts"]) == ("skipped", 2)
