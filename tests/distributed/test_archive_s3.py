"""Archives on a real S3 API: moto's server on 127.0.0.1 through s3fs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from conftest import assert_exact, lossless_cli_args, lossless_options

import raypipe
from raypipe.archive_report import read_report
from raypipe.cli import main
from raypipe.distributed.setup import check_output
from raypipe.errors import ConfigError
from raypipe.testing import write_text_as_video
from raypipe.testing.s3 import SECRET, moto_s3


@pytest.fixture(scope="module")
def s3() -> Iterator[object]:
    """moto's S3 server (:func:`raypipe.testing.s3.moto_s3`), then a local Ray, whose
    workers inherit its credentials and endpoint."""
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    with moto_s3("videos") as server:
        if ray.is_initialized():
            ray.shutdown()
        ray.init(
            address="local", num_cpus=8, num_gpus=2, include_dashboard=False, log_to_driver=False
        )
        try:
            yield server.fs
        finally:
            ray.shutdown()


def test_archive_from_and_to_s3(
    s3: object, clips: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fs = s3
    fs.put(str(clips["bframes_aac"]), "videos/in/a.mp4")  # type: ignore[attr-defined]
    fs.put(str(clips["hevc_mov"]), "videos/in/deep/b.mov")  # type: ignore[attr-defined]
    fs.put(str(write_text_as_video(tmp_path / "bad.mp4")), "videos/in/bad.mp4")  # type: ignore[attr-defined]
    fs.pipe("videos/in/empty.mp4", b"")  # type: ignore[attr-defined]
    code = main(
        [
            "archive",
            "s3://videos/in/",
            "s3://videos/out",
            "--model",
            "builtin:invert",
            *lossless_cli_args(),
            "--chunk-frames",
            "12",
        ]
    )
    printed = capsys.readouterr()
    assert code == 3
    rows = {r["uri"]: r for r in read_report("s3://videos/out/_raypipe-report.parquet")}
    assert rows["s3://videos/in/a.mp4"]["status"] == "done"
    assert rows["s3://videos/in/deep/b.mov"]["status"] == "done"
    assert rows["s3://videos/in/bad.mp4"]["error_type"] == "CorruptVideoError"
    assert rows["s3://videos/in/empty.mp4"]["error_message"] == (
        "input 's3://videos/in/empty.mp4' is an empty file (0 bytes), expected a video"
    )  # as a local one is told (it said "not a readable media file (... '<none>')")
    listed = sorted(fs.find("videos/out"))  # type: ignore[attr-defined]
    assert listed == sorted(
        [
            "videos/out/a.mp4",
            "videos/out/deep/b.mov",
            "videos/out/_raypipe-report.parquet",
            "videos/out/_raypipe-report.png",  # the run report, next to the report
        ]
    )
    assert fs.cat("videos/out/_raypipe-report.png")[:8] == b"\x89PNG\r\n\x1a\n"  # type: ignore[attr-defined]
    for key, kind in (("a.mp4", "bframes_aac"), ("deep/b.mov", "hevc_mov")):
        local = tmp_path / key.replace("/", "_")
        fs.get(f"videos/out/{key}", str(local))  # type: ignore[attr-defined]
        assert_exact(clips[kind], local, "builtin:invert")
    report_bytes = fs.cat("videos/out/_raypipe-report.parquet")  # type: ignore[attr-defined]
    assert SECRET not in printed.out + printed.err and SECRET.encode() not in report_bytes
    # the same command again: everything checked and skipped, the bad one failed again
    rerun = raypipe.process_archive(
        "s3://videos/in/",
        "s3://videos/out",
        model="builtin:invert",
        **lossless_options(),
        chunk_frames=12,
        quiet=True,
    )
    statuses = {r["uri"]: (r["status"], r["attempts"]) for r in rerun.rows}
    assert statuses == {
        "s3://videos/in/a.mp4": ("skipped", 1),
        "s3://videos/in/deep/b.mov": ("skipped", 1),
        "s3://videos/in/bad.mp4": ("failed", 2),
        "s3://videos/in/empty.mp4": ("failed", 2),
    }


def test_one_video_to_s3(s3: object, clips: dict[str, Path], tmp_path: Path) -> None:
    fs = s3
    raypipe.process_video(
        str(clips["vfr"]),
        "s3://videos/single/vfr.mp4",
        model="builtin:grayscale",
        **lossless_options(),
        quiet=True,
    )
    assert fs.find("videos/single") == ["videos/single/vfr.mp4"]  # type: ignore[attr-defined]
    fs.get("videos/single/vfr.mp4", str(tmp_path / "vfr.mp4"))  # type: ignore[attr-defined]
    assert_exact(clips["vfr"], tmp_path / "vfr.mp4", "builtin:grayscale")


def test_an_output_in_a_bucket_that_does_not_exist_is_refused_before_any_work(
    s3: object, clips: dict[str, Path], tmp_path: Path
) -> None:
    """`run` failed after Ray's start and a chunk with "FileNotFoundError: The specified
    bucket does not exist (unexpected ...)"; `archive` with a Ray traceback several kB long
    on one line. Both say so now before any work, typed."""
    with pytest.raises(ConfigError, match="bucket 'nosuchbucket' does not exist"):
        raypipe.process_video(str(clips["vfr"]), "s3://nosuchbucket/out/vfr.mp4", quiet=True)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.mp4").write_bytes(clips["vfr"].read_bytes())
    with pytest.raises(ConfigError, match="OUTPUT_DIR 's3://nosuchbucket/out': bucket"):
        raypipe.process_archive(str(src), "s3://nosuchbucket/out", quiet=True)
    check_output("s3://videos/out/new.mp4", overwrite=False)  # a bucket that exists: fine


def test_a_work_folder_with_glob_characters_in_its_name_is_deleted(
    s3: object, clips: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """fsspec's ``rm`` reads ``[1]`` as a glob: the work folder of ``take[1].mp4`` stayed in
    the bucket, with a warning that blamed the credentials (a sweep)."""
    fs = s3
    with caplog.at_level("WARNING", logger="raypipe"):
        raypipe.process_video(
            str(clips["vfr"]), "s3://videos/rep/take[1].mp4", chunk_frames=8, quiet=True
        )
    assert fs.find("videos/rep") == ["videos/rep/take[1].mp4"]  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if "work folder" in r.getMessage()]


def test_an_analysis_run_into_an_existing_key_is_refused(
    s3: object, clips: dict[str, Path]
) -> None:
    """The table went under the key (``notes.json/video_id=.../part-0.parquet``), one name
    both a file and a folder, and the run said done (a sweep)."""
    fs = s3
    fs.pipe("videos/r2/notes.json", b'{"a": 1}')  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"'s3://videos/r2/notes.json' is a file"):
        raypipe.process_video(str(clips["vfr"]), "s3://videos/r2/notes.json", model="builtin:phash")
    assert fs.find("videos/r2") == ["videos/r2/notes.json"]  # type: ignore[attr-defined]
