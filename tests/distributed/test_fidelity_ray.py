"""Fidelity through a real local Ray (issue 11): a lean matrix of the trait clips through
process_video, judged like the in-process matrix (tests/media/test_fidelity.py), on the
logical GPUs' actors (split stages) and on CPU actors (fused)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import lossless_options
from pipeline_checks import LOSSLESS_10BIT, assert_fidelity

import raypipe
from raypipe.testing import ffprobe_video, make_trait_clip


@pytest.fixture(scope="module", autouse=True)
def _ray(ray_local: None) -> None:
    return None


X265_LOSSLESS = {
    "codec": LOSSLESS_10BIT.codec,
    "crf": None,
    "preset": LOSSLESS_10BIT.preset,
    "encoder_options": dict(LOSSLESS_10BIT.options),
}


@pytest.mark.parametrize(
    ("trait", "suffix", "settings", "frames", "floor"),
    [
        ("phone_hlg", ".mp4", {}, "psnr", 30.0),  # default settings: 10-bit H.264, tagged
        ("rotated_languages", ".mkv", lossless_options(), "equal", 0.0),
        ("hdr10", ".mp4", X265_LOSSLESS, "psnr", 45.0),
        ("audio_early_cover", ".mp4", {}, "psnr", 30.0),
        ("one_frame", ".mov", {}, "psnr", 30.0),
        # CPU actors: each decodes, runs and encodes its chunks (fused stages), 16-bit frames
        ("phone_hlg", ".mkv", {"device": "cpu"}, "psnr", 30.0),
        ("hdr10", ".mp4", {**X265_LOSSLESS, "device": "cpu"}, "psnr", 45.0),
    ],
)
def test_trait_kept_through_ray(
    tmp_path: Path,
    trait: str,
    suffix: str,
    settings: dict[str, object],
    frames: str,
    floor: float,
) -> None:
    source = make_trait_clip(trait, tmp_path)
    out = tmp_path / f"out{suffix}"
    stats = raypipe.process_video(
        str(source), str(out), model="builtin:invert", chunk_frames=5, quiet=True, **settings
    )
    assert stats.chunks >= 1
    # (rotated_languages' mov_text subtitles go into MKV converted to ASS, cues compared)
    assert_fidelity(source, out, "builtin:invert", frames=frames, min_psnr_db=floor)
    assert not list(tmp_path.glob(".*")), "work directory or temporary file left behind"


def test_an_encoder_that_keeps_less_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = make_trait_clip("phone_hlg", tmp_path)
    out = tmp_path / "out.mkv"
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        raypipe.process_video(
            str(source), str(out), model="builtin:identity", chunk_frames=5, quiet=True,
            codec="libvpx-vp9",
        )  # fmt: skip
    notes = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert notes == [
        "encoder libvpx-vp9 cannot write the source's 10-bit 4:2:0 (yuv420p10le); writing "
        "yuv420p (8-bit 4:2:0) instead (--codec libx265 or libsvtav1 or ffv1 keeps it in a "
        ".mkv file)"
    ]
    probed = ffprobe_video(out)
    assert (probed.pix_fmt, probed.transfer, probed.displayed_size) == (
        "yuv420p", "arib-std-b67", (64, 96)
    )  # fmt: skip


def test_a_second_video_stream_is_left_out_and_said_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A source with two video streams (a camera's main and proxy, a screen and a webcam):
    the first is processed, the other left out with one line, which `raypipe probe` shows
    before the run."""
    import subprocess

    from raypipe.media import plan_chunks, probe
    from raypipe.media.describe import probe_lines

    source = tmp_path / "two.mkv"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i",
         "testsrc2=size=96x64:rate=25:duration=0.4", "-f", "lavfi", "-i",
         "testsrc=size=64x48:rate=25:duration=0.4", "-map", "0", "-map", "1",
         "-c:v", "libx264", str(source)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    info = probe(str(source))
    left = "stream 1 (video h264 64x48): raypipe processes one video stream"
    assert f"  left out: {left}" in probe_lines(info, plan_chunks(info), 64)
    out = tmp_path / "out.mp4"
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        raypipe.process_video(str(source), str(out), model="builtin:invert", quiet=True)
    said = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert said == [f"two.mkv: left out {left}"]
    probed = ffprobe_video(out)
    assert probed.displayed_size == (96, 64) and probed.streams == ()
    # an archive of such videos: said once, not once a video
    archive = tmp_path / "archive"
    archive.mkdir()
    for name in ("a.mkv", "b.mkv"):
        (archive / name).write_bytes(source.read_bytes())
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        report = raypipe.process_archive(
            str(archive), str(tmp_path / "done"), model="builtin:invert", quiet=True
        )
    assert [row["status"] for row in report.rows] == ["done", "done"]
    said = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(said) == 1 and said[0].endswith(f".mkv: left out {left}"), said


def test_a_stream_the_output_cannot_hold_is_said_on_the_driver(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The assembly task runs on a worker; what it leaves out reaches the user's terminal
    (the driver's log) once, with the file's name and what to do."""
    source = make_trait_clip("rotated_languages", tmp_path)
    out = tmp_path / "out.mkv"
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        raypipe.process_video(str(source), str(out), model="builtin:identity", quiet=True)
    said = [r.getMessage() for r in caplog.records if "cannot go into" in r.getMessage()]
    assert said == [
        "out.mkv: subtitle stream 3 (mov_text) cannot go into a matroska file as it is and "
        "is converted to ass"
    ]
