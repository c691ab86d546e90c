"""Tests of raypipe.testing itself: the clips are what they claim, the readers agree."""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np
import pytest

from raypipe.testing import (
    CLIP_KINDS,
    CLIP_SUFFIX,
    ClipSpec,
    audio_packets,
    clip_kind_names,
    decode_all,
    ffmpeg_decode_errors,
    ffprobe_frame_count,
    frame_pattern,
    make_clip,
    make_named_clip,
    read_index,
    start_offset_seconds,
    write_audio_only,
    write_corrupt_packets,
    write_empty_file,
    write_text_as_video,
    write_truncated_header,
    write_truncated_tail,
    write_zero_frames,
)
from raypipe.testing.bad_inputs import _top_level_boxes

SIZES = [(64, 48), (160, 96), (198, 110), (1280, 720)]
AAC_PRIMING_SECONDS = 1024 / 48000


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    directory = tmp_path_factory.mktemp("kinds")
    return {kind: make_named_clip(kind, directory) for kind in clip_kind_names()}


def _video_packets(path: pathlib.Path) -> list[tuple[int, bool, bytes]]:
    """(pts, is keyframe, payload) of the non-empty video packets, in decode order."""
    with av.open(str(path)) as container:
        packets = [p for p in container.demux(container.streams.video[0]) if p.size > 0]
    assert all(p.pts is not None for p in packets)
    return [(int(p.pts or 0), p.is_keyframe, bytes(p)) for p in packets]


def _h264_nal_types(payload: bytes) -> list[int]:
    """NAL unit types of an mp4 (AVCC, 4-byte lengths) H.264 packet."""
    types, pos = [], 0
    while pos + 4 < len(payload):
        size = int.from_bytes(payload[pos : pos + 4], "big")
        types.append(payload[pos + 4] & 0x1F)
        pos += 4 + size
    return types


def _encode_indices(path: pathlib.Path, indices: list[int], width: int, height: int) -> None:
    """Frames showing arbitrary indices, x264 at crf 23, no B-frames."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"crf": "23"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for pts, index in enumerate(indices):
            frame = av.VideoFrame.from_ndarray(frame_pattern(index, width, height), "rgb24")
            frame.pts = pts
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


# --- frame_pattern / read_index -------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_frame_pattern_shape_determinism_and_raw_round_trip(width: int, height: int) -> None:
    frame = frame_pattern(37, width, height, seed=3)
    assert frame.shape == (height, width, 3) and frame.dtype == np.uint8
    assert np.array_equal(frame, frame_pattern(37, width, height, seed=3))
    assert not np.array_equal(frame, frame_pattern(37, width, height, seed=4))
    for index in (0, 1, 2, 255, 4095, 4096, 43690, 65535):
        assert read_index(frame_pattern(index, width, height, seed=5)) == index


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_consecutive_frames_differ_outside_the_index_blocks(width: int, height: int) -> None:
    a, b = frame_pattern(10, width, height), frame_pattern(11, width, height)
    differs = (a != b).any(axis=2)
    block_w = max(8, width // 16)  # 2 rows x 8 columns of square-ish blocks, top left
    block_h = max(8, min(block_w, height // 8))
    differs[: 2 * block_h, : 8 * block_w] = True
    assert differs.all()
    assert 2 * block_h * 8 * block_w <= width * height / (3 if width < 100 else 8)


@pytest.mark.parametrize(("width", "height"), [(64, 48), (198, 110), (1280, 720)])
def test_read_index_survives_x264_crf23(tmp_path: pathlib.Path, width: int, height: int) -> None:
    indices = [0, 1, 2, 1023, 4095, 4096, 21845, 43690, 65535]
    path = tmp_path / "crf23.mp4"
    _encode_indices(path, indices, width, height)
    frames, _, _ = decode_all(path)
    assert [read_index(f) for f in frames] == indices


def test_read_index_rejects_a_frame_without_the_pattern() -> None:
    with pytest.raises(ValueError, match=r"index block 0 has mean level 128"):
        read_index(np.full((96, 160, 3), 128, dtype=np.uint8))


def test_frame_pattern_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"frame of 40x48 px is too small .* at least 64x32"):
        frame_pattern(0, 40, 48)
    with pytest.raises(ValueError, match=r"index 65536 out of range"):
        frame_pattern(65536, 64, 48)


def test_clip_spec_validates() -> None:
    assert ClipSpec(fps=Fraction(30000, 1001)).time_base == Fraction(1, 30000)
    with pytest.raises(ValueError, match=r"n_frames=0: expected at least 1"):
        ClipSpec(n_frames=0)
    with pytest.raises(ValueError, match=r"open_gop=True needs bframes > 0"):
        ClipSpec(open_gop=True, bframes=0)
    # audio may start before the video: the video then starts that much after 0
    assert ClipSpec(audio_offset_seconds=-1.0).video_start_pts == 25
    assert ClipSpec(audio_offset_seconds=-1.0).duration_seconds == ClipSpec().duration_seconds
    with pytest.raises(ValueError, match=r"rotation_degrees=45: expected a multiple of 90"):
        ClipSpec(rotation_degrees=45)
    with pytest.raises(ValueError, match=r"unknown clip kind 'nope': expected one of"):
        make_named_clip("nope", ".")


# --- the named clip kinds -------------------------------------------------------------


def test_clip_kinds_are_small_and_named() -> None:
    assert set(CLIP_KINDS) == set(CLIP_SUFFIX) == {
        "bframes_aac", "ntsc", "open_gop", "single_keyframe", "vfr", "hevc_mov", "odd_size",
    }  # fmt: skip
    for spec in CLIP_KINDS.values():
        assert spec.n_frames <= 64 and spec.width <= 200 and spec.height <= 120


@pytest.mark.parametrize("kind", clip_kind_names())
def test_clip_kind_decodes_in_order(clips: dict[str, pathlib.Path], kind: str) -> None:
    spec, path = CLIP_KINDS[kind], clips[kind]
    assert path.name == f"{kind}{CLIP_SUFFIX[kind]}"
    frames, pts, time_base = decode_all(path)
    assert frames.shape == (spec.n_frames, spec.height, spec.width, 3)
    assert [read_index(f) for f in frames] == list(range(spec.n_frames))
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    assert ffmpeg_decode_errors(path) == ""
    assert ffprobe_frame_count(path) == spec.n_frames
    with av.open(str(path)) as container:
        assert len(container.streams.audio) == (1 if spec.audio else 0)
        if spec.audio:
            assert container.streams.audio[0].codec_context.name == spec.audio
    if spec.audio:
        assert audio_packets(path) and start_offset_seconds(path) == 0.0
        audio_seconds = sum(len(p[3]) > 0 for p in audio_packets(path)) * 1024 / 48000
        assert abs(audio_seconds - spec.duration_seconds) < 0.05
    else:
        assert audio_packets(path) == [] and start_offset_seconds(path) == 0.0


@pytest.mark.parametrize("kind", [k for k in clip_kind_names() if k != "single_keyframe"])
def test_keyframes_are_exactly_every_gop_frames(clips: dict[str, pathlib.Path], kind: str) -> None:
    spec = CLIP_KINDS[kind]
    _, pts, _ = decode_all(clips[kind])
    key_indices = [pts.index(p) for p, key, _ in _video_packets(clips[kind]) if key]
    assert key_indices == list(range(0, spec.n_frames, spec.gop))


def test_single_keyframe_has_one_keyframe_packet(clips: dict[str, pathlib.Path]) -> None:
    assert sum(key for _, key, _ in _video_packets(clips["single_keyframe"])) == 1


def test_vfr_has_irregular_durations(clips: dict[str, pathlib.Path]) -> None:
    spec = CLIP_KINDS["vfr"]
    _, pts, time_base = decode_all(clips["vfr"])
    assert time_base == Fraction(1, 90000)
    assert pts == spec.frame_pts()[:-1]
    durations = np.diff(pts)
    assert len(set(durations.tolist())) >= 3
    frame_ticks = 90000 / spec.fps
    assert durations.min() >= frame_ticks / 2 and durations.max() <= frame_ticks * 2


def test_ntsc_rate_and_time_base(clips: dict[str, pathlib.Path]) -> None:
    with av.open(str(clips["ntsc"])) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == Fraction(30000, 1001)
        assert stream.time_base == Fraction(1, 30000)
    _, pts, _ = decode_all(clips["ntsc"])
    assert pts == [i * 1001 for i in range(CLIP_KINDS["ntsc"].n_frames)]


def test_hevc_mov_is_hevc(clips: dict[str, pathlib.Path]) -> None:
    with av.open(str(clips["hevc_mov"])) as container:
        assert container.streams.video[0].codec_context.name == "hevc"


def test_open_gop_has_non_idr_keyframes_with_leading_b_frames(
    clips: dict[str, pathlib.Path],
) -> None:
    packets = _video_packets(clips["open_gop"])
    keys = [i for i, (_, key, _) in enumerate(packets) if key]
    assert len(keys) == 5
    assert 5 in _h264_nal_types(packets[0][2])  # the first keyframe is an IDR
    for i in keys[1:]:
        nal_types = _h264_nal_types(packets[i][2])
        assert 5 not in nal_types and 1 in nal_types  # I slice, not IDR: recovery point
        # A leading B-frame: decoded after the keyframe but displayed before it.
        assert packets[i + 1][0] < packets[i][0]


def test_closed_gop_keyframes_are_idr_without_leading_frames(
    clips: dict[str, pathlib.Path],
) -> None:
    packets = _video_packets(clips["bframes_aac"])
    for i, (pts, key, payload) in enumerate(packets):
        if key:
            assert 5 in _h264_nal_types(payload)
            assert all(later_pts > pts for later_pts, _, _ in packets[i + 1 :])


# --- other ClipSpec options -----------------------------------------------------------


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_audio_offset_survives(tmp_path: pathlib.Path, suffix: str) -> None:
    path = make_clip(tmp_path / f"offset{suffix}", ClipSpec(audio="aac", audio_offset_seconds=0.5))
    # mp4 shows the 1024 AAC priming samples (edit lists cannot both delay and trim).
    assert 0.5 - AAC_PRIMING_SECONDS - 0.002 <= start_offset_seconds(path) <= 0.5 + 0.002
    assert ffmpeg_decode_errors(path) == ""


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_subtitles(tmp_path: pathlib.Path, suffix: str) -> None:
    path = make_clip(tmp_path / f"subs{suffix}", ClipSpec(n_frames=25, subtitles=True))
    with av.open(str(path)) as container:
        texts = [bytes(p) for p in container.demux(container.streams.subtitles[0]) if p.size]
    assert len(texts) >= 3 and all(b"raypipe cue" in t for t in texts if len(t) > 2)
    assert ffmpeg_decode_errors(path) == ""


def test_pcm_audio_in_mov(tmp_path: pathlib.Path) -> None:
    path = make_clip(tmp_path / "pcm.mov", ClipSpec(n_frames=10, audio="pcm_s16le"))
    with av.open(str(path)) as container:
        assert container.streams.audio[0].codec_context.name == "pcm_s16le"
    assert ffmpeg_decode_errors(path) == "" and start_offset_seconds(path) == 0.0


def test_ffv1_bgr0_is_lossless(tmp_path: pathlib.Path) -> None:
    spec = ClipSpec(n_frames=6, codec="ffv1", pix_fmt="bgr0", bframes=0, width=198, height=110)
    frames, _, _ = decode_all(make_clip(tmp_path / "lossless.mkv", spec))
    for i, frame in enumerate(frames):
        assert np.array_equal(frame, frame_pattern(i, spec.width, spec.height))


def test_faststart_puts_moov_first(tmp_path: pathlib.Path) -> None:
    plain = _top_level_boxes(make_clip(tmp_path / "plain.mp4").read_bytes())
    fast = _top_level_boxes(make_clip(tmp_path / "fast.mp4", faststart=True).read_bytes())
    assert plain["moov"][0] > plain["mdat"][0] and fast["moov"][0] < fast["mdat"][0]


# --- bad inputs -----------------------------------------------------------------------


@pytest.mark.parametrize("write", [write_empty_file, write_text_as_video, write_truncated_header])
def test_unopenable_inputs(
    tmp_path: pathlib.Path, write: Callable[[pathlib.Path], pathlib.Path]
) -> None:
    path = write(tmp_path / "bad.mp4")
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(path))
    assert "Invalid data" in ffmpeg_decode_errors(path)


def test_truncated_header_needs_moov_at_end(tmp_path: pathlib.Path) -> None:
    source = make_clip(tmp_path / "fast.mp4", faststart=True)
    with pytest.raises(ValueError, match=r"expected an mp4 with 'moov' after 'mdat'"):
        write_truncated_header(tmp_path / "bad.mp4", source)


def test_corrupt_packets_open_but_fail_to_decode(tmp_path: pathlib.Path) -> None:
    source = make_clip(tmp_path / "source.mp4", ClipSpec(audio="aac"))
    path = write_corrupt_packets(tmp_path / "corrupt.mp4", source)
    assert path.stat().st_size == source.stat().st_size
    with av.open(str(path)) as container:
        assert len(container.streams.video) == 1
    assert ffmpeg_decode_errors(path) != ""


def test_audio_only(tmp_path: pathlib.Path) -> None:
    path = write_audio_only(tmp_path / "audio.m4a")
    with av.open(str(path)) as container:
        assert not container.streams.video
        assert container.streams.audio[0].codec_context.name == "aac"
    assert audio_packets(path) and ffmpeg_decode_errors(path) == ""
    with pytest.raises(ValueError, match=r"has no video stream"):
        decode_all(path)


def test_zero_frames(tmp_path: pathlib.Path) -> None:
    path = write_zero_frames(tmp_path / "empty.mp4")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 160, 96)
    frames, pts, _ = decode_all(path)
    assert frames.shape == (0, 96, 160, 3) and pts == []
    assert ffprobe_frame_count(path) == 0
    with pytest.raises(ValueError, match=r"expected one of the suffixes"):
        write_zero_frames(tmp_path / "empty.mkv")


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_truncated_tail_opens_and_loses_frames(tmp_path: pathlib.Path, suffix: str) -> None:
    path = write_truncated_tail(tmp_path / f"cut{suffix}")
    with av.open(str(path)) as container:
        assert len(container.streams.video) == 1
    assert 0 < ffprobe_frame_count(path) < ClipSpec().n_frames
    assert ffmpeg_decode_errors(path) != ""


def test_truncated_tail_needs_index_first(tmp_path: pathlib.Path) -> None:
    source = make_clip(tmp_path / "plain.mp4")
    with pytest.raises(ValueError, match=r"keeps its moov box after mdat"):
        write_truncated_tail(tmp_path / "cut.mp4", source)
