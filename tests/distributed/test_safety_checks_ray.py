"""Safety checks through a real pipeline: the actor-pool starvation check (ClusterError)
before any work, and the decode and codec checks of tests/media/test_safety_checks.py as
a run and an archive report them: one typed line, nothing written, the rest finishing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import ray

import raypipe
from raypipe.errors import ClusterError, DecodeError
from raypipe.testing import ClipSpec, ffmpeg_decode_errors, ffprobe_video, make_clip
from raypipe.testing.bad_inputs import (
    write_out_of_order_pts,
    write_resolution_change,
    write_unknown_codec,
)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"workers": 8, "device": "cpu"},
            "8 inference actors reserve 8 CPUs and the decode/encode tasks need at least 1 "
            "more, the cluster has 8; lower --workers or --actor-cpus (workers=, "
            "actor_num_cpus= in Python), or add CPUs",
        ),
        (
            {"workers": 3},
            "3 workers at 1 per GPU asked for, the cluster has 2 GPUs (2 slots); pass "
            "--workers 2 or fewer, or raise --workers-per-gpu (workers=, workers_per_gpu= in "
            "Python)",
        ),
    ],
)
def test_an_actor_pool_that_would_starve_fails_before_any_work(
    ray_local: None, tmp_path: Path, options: dict[str, object], message: str
) -> None:
    source = make_clip(tmp_path / "v.mp4", ClipSpec(n_frames=8))
    out = tmp_path / "out.mp4"
    with pytest.raises(ClusterError) as e:
        raypipe.process_video(str(source), str(out), quiet=True, **options)
    assert str(e.value) == message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]  # nothing written


def _run_on_this_ray(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """``raypipe run SOURCE OUT`` in chunks of 4 on the test's local Ray, quiet."""
    exe = shutil.which("raypipe", path=os.path.dirname(sys.executable)) or "raypipe"
    address = ray.get_runtime_context().gcs_address
    return subprocess.run(
        [exe, "run", str(source), str(out), "--chunk-frames", "4", "-q", "--address", address],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_decode_check_fails_the_run_with_one_typed_line(ray_local: None, tmp_path: Path) -> None:
    source = write_out_of_order_pts(tmp_path / "swapped.mkv")
    out = tmp_path / "out.mp4"
    result = _run_on_this_ray(source, out)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("raypipe:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines[0].startswith("raypipe: error: DecodeError: swapped.mkv-")
    assert "decoded frames are not in display order" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["swapped.mkv"]
    with pytest.raises(DecodeError):  # the same through Python
        raypipe.process_video(str(source), str(out), chunk_frames=4, quiet=True)


def test_bad_videos_fail_alone_in_an_archive(ray_local: None, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_clip(src / "good.mp4", ClipSpec(n_frames=8))
    write_out_of_order_pts(src / "swapped.mkv")
    write_unknown_codec(src / "unknown.avi")
    make_clip(src / "vp9.webm", ClipSpec(n_frames=8, codec="libvpx-vp9", bframes=0))
    out = tmp_path / "out"
    report = raypipe.process_archive(str(src), str(out), chunk_frames=4, quiet=True)
    rows = {Path(r["uri"]).name: r for r in report.rows}
    assert report.exit_code == 3
    assert rows["good.mp4"]["status"] == "done"
    assert (rows["swapped.mkv"]["status"], rows["swapped.mkv"]["error_type"]) == (
        "failed",
        "DecodeError",
    )
    assert rows["unknown.avi"]["error_type"] == "UnsupportedVideoError"
    assert "has no decoder in this FFmpeg build" in rows["unknown.avi"]["error_message"]
    # WebM holds no H.264: the default codec (auto) writes it VP9, the others H.264, as
    # ffmpeg picks (a codec WebM cannot hold, named by the user, is refused before work:
    # tests/media/test_output_codec.py)
    assert rows["vp9.webm"]["status"] == "done"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("_")) == [
        "good.mp4",
        "vp9.webm",
    ]
    assert [ffprobe_video(out / n).codec for n in ("good.mp4", "vp9.webm")] == ["h264", "vp9"]
    assert ffmpeg_decode_errors(out / "vp9.webm") == ""


def test_a_resolution_change_is_scaled_and_said_once(ray_local: None, tmp_path: Path) -> None:
    """Frames of another size mid-stream (a broadcast recording's ads) are scaled to the
    stream's, as ffmpeg scales them; the run says so once, with the time of the first,
    whichever chunk ends first."""
    source = write_resolution_change(tmp_path / "res.ts")  # 8 frames 96x64, 8 of 128x64
    out = tmp_path / "out.mp4"
    result = _run_on_this_ray(source, out)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("raypipe:")]
    assert len(lines) == 1, lines
    assert lines[0].startswith("raypipe: WARNING: res.ts: frames from ")
    assert "are 128x64, not the stream's 96x64: scaled to it" in lines[0]
    probed = ffprobe_video(out)
    assert (probed.coded_width, probed.coded_height, probed.n_packets) == (96, 64, 16)
    assert ffmpeg_decode_errors(out) == ""


def test_a_joined_recording_closes_its_clock_jump_through_the_pipeline(
    ray_local: None, tmp_path: Path
) -> None:
    """The jump's closing (tests/media/test_fidelity.py) travels with the chunks to the
    decode and with the video's facts to the assembly: two MPEG-TS recordings joined, the
    second's clock an hour on, come out as one, its sound moved with its pictures, and the
    run says so once."""
    parts = []
    for n, offset in enumerate(("0", "3600")):
        parts.append(tmp_path / f"part{n}.ts")
        subprocess.run(
            ["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i",
             "testsrc2=s=96x64:r=25:d=0.4", "-f", "lavfi", "-i", "sine=d=0.4", "-c:v", "libx264",
             "-g", "5", "-c:a", "aac",
             "-output_ts_offset", offset, str(parts[-1])],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    source = tmp_path / "joined.ts"
    source.write_bytes(b"".join(p.read_bytes() for p in parts))
    out = tmp_path / "out.mp4"
    result = _run_on_this_ray(source, out)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("raypipe:")]
    assert len(lines) == 1 and "jump of the source's clock" in lines[0], lines
    probed = ffprobe_video(out)
    assert probed.n_packets == 20
    assert probed.duration_seconds == pytest.approx(0.8, abs=0.05)  # not an hour and 0.8 s
    sound = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=duration",
         "-of", "csv=p=0", str(out)],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    assert float(sound) == pytest.approx(0.85, abs=0.05)
    assert ffmpeg_decode_errors(out) == ""
