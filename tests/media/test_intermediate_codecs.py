"""ProRes and DNxHD outputs, the intermediates editors exchange. Their video does not fit a
NUT container, so their chunk segments are written in MOV (intra-only codecs: the segment
keeps its packets' own timestamps, as every segment does). Until then both were refused
("raypipe's chunk segments (NUT) cannot hold them"). DNxHD gets a DNxHR profile, which
takes any size from 256x120 up: FFmpeg's default, the original DNxHD, opens at a handful
of broadcast sizes and bit rates only, so a run failed at its first encode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pipeline_checks import run_in_process

from raypipe.config import EncodeConfig
from raypipe.media.containers import container_refuses
from raypipe.media.encode import dnxhr_profile, size_problem
from raypipe.testing import ClipSpec, ffprobe_video, make_clip, yuv_planes

_HLG = ("bt2020", "arib-std-b67", "bt2020nc", "tv")


def _source(directory: Path, pix_fmt: str, colour: tuple[str, str, str, str] | None) -> Path:
    """Six losslessly coded frames, 256x128 (DNxHR's smallest is 256x120)."""
    spec = ClipSpec(codec="ffv1", pix_fmt=pix_fmt, colour=colour, bframes=0, gop=1,
                    n_frames=6, width=256, height=128)  # fmt: skip
    return make_clip(directory / f"{pix_fmt}.mkv", spec)


def _worst_mean_error(out: Path, source: Path, shift: int = 0) -> float:
    """The largest mean absolute difference of a luma plane, in 10-bit code values, between
    the output's frames and the source's ``shift`` frames later."""
    got, src = yuv_planes(out), yuv_planes(source)
    assert len(got) == len(src)

    def ten_bit(plane: np.ndarray) -> np.ndarray:
        return plane.astype(np.int32) * (4 if plane.dtype == np.uint8 else 1)

    return max(
        float(np.abs(ten_bit(got[i][0]) - ten_bit(src[(i + shift) % len(src)][0])).mean())
        for i in range(len(got))
    )


@pytest.mark.parametrize("suffix", [".mov", ".mkv"])
def test_prores_keeps_10_bits_4_2_2_the_colour_tags_and_every_frame(
    tmp_path: Path, suffix: str
) -> None:
    source = _source(tmp_path, "yuv422p10le", _HLG)
    out = tmp_path / f"out{suffix}"
    chunks = run_in_process(source, out, "builtin:identity", 2, EncodeConfig(codec="prores_ks"))
    assert chunks == 3  # segments joined across chunk boundaries
    got, src = ffprobe_video(out), ffprobe_video(source)
    assert (got.codec, got.pix_fmt) == ("prores", "yuv422p10le")
    assert (got.primaries, got.transfer, got.matrix, got.range) == _HLG
    assert got.n_packets == 6 and got.avg_frame_rate == src.avg_frame_rate == 25
    assert got.duration_seconds == pytest.approx(src.duration_seconds, abs=1e-3)
    # ProRes HQ is lossy, but close: each frame against its own source frame, and the test
    # can fail: against the next frame (every frame differs) it is far off
    assert _worst_mean_error(out, source) < 2.0  # 0.9
    assert _worst_mean_error(out, source, shift=1) > 20.0


def test_dnxhd_gets_a_dnxhr_profile_for_any_size(tmp_path: Path) -> None:
    # BT.709, which DNxHR holds: the samples compare as they are (an untagged source this
    # small is BT.601, converted: test_a_bt601_source_into_dnxhr_is_converted_to_bt709)
    source = _source(tmp_path, "yuv420p", ("bt709", "bt709", "bt709", "tv"))
    out = tmp_path / "out.mov"
    run_in_process(source, out, "builtin:identity", 2, EncodeConfig(codec="dnxhd"))
    got = ffprobe_video(out)
    assert (got.codec, got.pix_fmt, got.n_packets) == ("dnxhd", "yuv422p", 6)
    assert _worst_mean_error(out, source) < 6.0  # 8-bit: a code value is 4 here (3.5)
    assert _worst_mean_error(out, source, shift=1) > 20.0
    assert [dnxhr_profile(f) for f in ("yuv422p", "yuv422p10le", "yuv444p10le")] == [
        "dnxhr_hq", "dnxhr_hqx", "dnxhr_444",
    ]  # fmt: skip


def test_dnxhr_frames_smaller_than_it_takes_are_refused_with_what_takes_them() -> None:
    dnxhd = EncodeConfig(codec="dnxhd")
    assert size_problem(dnxhd, "yuv422p", 256, 120) == ""
    assert size_problem(dnxhd, "yuv422p", 255, 1080).startswith(
        "dnxhd (DNxHR) encodes frames of at least 256x120, the frames are 255x1080; use "
        "--codec prores_ks or ffv1"
    )
    assert size_problem(dnxhd, "yuv422p", 1920, 119) != ""


def test_an_mp4_output_names_the_containers_that_hold_them() -> None:
    assert "(.mkv and .mov hold it)" in container_refuses("out.mp4", "prores_ks")
    assert "(.mov holds it)" in container_refuses("out.mkv", "dnxhd")
    assert container_refuses("out.mov", "dnxhd") == container_refuses("out.mov", "prores_ks") == ""


@pytest.mark.parametrize(
    ("pix_fmt", "profile", "tag"),
    [("yuv422p10le", "proxy", "apco"), ("yuv422p10le", "", "apch"), ("yuv444p10le", "", "ap4h")],
)
@pytest.mark.parametrize("suffix", [".mov", ".mkv"])
def test_a_prores_output_is_labelled_with_the_profile_it_holds(
    tmp_path: Path, pix_fmt: str, profile: str, tag: str, suffix: str
) -> None:
    """Every ProRes output was labelled HQ (``apch``) in MOV, whatever profile was encoded
    (4444 for a 4:4:4 source, ``profile=proxy``), and had no fourcc in MKV (a sweep)."""
    import subprocess

    source = _source(tmp_path, pix_fmt, None)
    out = tmp_path / f"out{suffix}"
    options = {"profile": profile} if profile else {}
    run_in_process(
        source, out, "builtin:identity", 3, EncodeConfig(codec="prores_ks", options=options)
    )
    probed = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries",
         "stream=codec_tag_string", "-of", "csv=p=0", str(out)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert probed == tag


def _shown_error(out: Path, source: Path) -> float:
    """The mean absolute difference of the two videos' 8-bit RGB as players show them (each
    file's own colour tags read)."""
    import av

    def rgb(path: Path) -> np.ndarray:
        with av.open(str(path)) as c:
            return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])

    return float(np.abs(rgb(out).astype(int) - rgb(source).astype(int)).mean())


def _four_frames(directory: Path, pix_fmt: str, colour: tuple[str, str, str, str]) -> Path:
    spec = ClipSpec(codec="ffv1", pix_fmt=pix_fmt, colour=colour, bframes=0, gop=1,
                    n_frames=4, width=256, height=128)  # fmt: skip
    return make_clip(directory / "source.mkv", spec)


def test_a_full_range_source_into_prores_is_converted_to_limited_range(tmp_path: Path) -> None:
    """ProRes holds limited range only: full-range samples went in as they were and were
    read as limited, every grey shifted (64 shown as 54) and blacks and whites clipped (a
    sweep). They are converted, as ``ffmpeg`` converts them: the pictures look the same."""
    source = _four_frames(tmp_path, "yuv444p", ("bt709", "bt709", "bt709", "pc"))
    out = tmp_path / "out.mov"
    run_in_process(source, out, "builtin:identity", 2, EncodeConfig(codec="prores_ks"))
    assert ffprobe_video(out).range == "tv"
    error = _shown_error(out, source)
    assert error < 2.0, error  # full-range samples read as limited: about 10


def test_a_bt601_source_into_dnxhr_is_converted_to_bt709(tmp_path: Path) -> None:
    """DNxHR says BT.709 or BT.2020 alone, and FFmpeg's decoder reads any other matrix as
    BT.709, whatever the container says: a standard-definition source's BT.601 samples
    went in as they were and showed with BT.709's, every colour shifted (a sweep). They
    are converted to BT.709: the pictures look the same."""
    source = _four_frames(tmp_path, "yuv422p10le", ("smpte170m", "smpte170m", "smpte170m", "tv"))
    out = tmp_path / "out.mov"
    run_in_process(source, out, "builtin:identity", 2, EncodeConfig(codec="dnxhd"))
    assert ffprobe_video(out).matrix == "bt709"
    error = _shown_error(out, source)
    assert error < 2.0, error  # BT.601 samples read as BT.709: about 9
