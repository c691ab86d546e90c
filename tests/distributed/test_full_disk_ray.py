"""A disk that fills as a run ends (a 1 MiB tmpfs, filled for real once the outputs are
written): the error says the outputs are written and what was not (it read as if the
whole run had failed, exit 1 "nothing written"; an archive printed no summary and left an
earlier run's report, which told another story; a sweep)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import SmallDisk

import raypipe
from raypipe.distributed import archive, pipeline
from raypipe.errors import StorageError
from raypipe.media import probe

FULL = "its disk is full; free space there, or write to another folder"


@pytest.fixture(scope="module", autouse=True)
def _ray(ray_local: None) -> None:
    return None


def test_stats_that_do_not_fit_say_the_output_is_written(
    small_disk: SmallDisk, clips: dict[str, Path], tmp_path: Path
) -> None:
    output, stats = tmp_path / "o.mp4", small_disk.path / "s.json"
    source = clips["bframes_aac"]
    frames = probe(str(source)).n_frames
    with (
        pipeline.when_output_written(lambda _: small_disk.fill()),
        pytest.raises(StorageError) as raised,
    ):
        raypipe.process_video(str(source), str(output), stats_path=str(stats), quiet=True)
    assert str(raised.value) == (
        f"{output} is written ({frames} frames), but not its stats: cannot write {stats}: {FULL}"
    )
    assert probe(str(output)).n_frames == frames
    assert small_disk.names() == []


def test_an_archive_report_that_does_not_fit_says_the_videos_are_processed(
    small_disk: SmallDisk,
    clips: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    os.symlink(clips["bframes_aac"], src / "a.mp4")
    report = small_disk.path / "report.parquet"
    args: dict[str, Any] = {"model": "builtin:invert", "report_path": str(report), "quiet": True}
    assert raypipe.process_archive(str(src), str(out), **args).count("done") == 1
    assert report.exists()
    os.symlink(clips["odd_size"], src / "b.mp4")
    real = archive.write_report

    def full_then_write(*a: Any) -> None:
        small_disk.fill()
        real(*a)

    monkeypatch.setattr(archive, "write_report", full_then_write)
    with pytest.raises(StorageError) as raised:
        raypipe.process_archive(str(src), str(out), **args)
    assert str(raised.value) == (
        f"the archive's videos were processed (1 done, 1 skipped, 0 failed of 2 -> {out}), "
        f"but cannot write {report}: {FULL}; run it again once there is space: it skips the "
        "videos done"
    )
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "b.mp4"]
    assert small_disk.names() == [], "the first run's report, of one video, was left"
