"""Every safety check that guards exactness, provoked: a decode that yields the wrong
count, order or size (DecodeError), a damaged work directory or timestamps going backwards
at assembly (EncodeError), a container that refuses the video (MuxError), a codec without
a decoder (UnsupportedVideoError). Each fails with its typed, one-line message.
The actor-pool starvation check (ClusterError) needs Ray: tests/distributed/
test_safety_checks_ray.py, with the same checks through a real pipeline."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from raypipe.config import ChunkConfig, EncodeConfig
from raypipe.errors import (
    CorruptVideoError,
    DecodeError,
    EncodeError,
    MuxError,
    UnsupportedVideoError,
)
from raypipe.media import plan_chunks, probe
from raypipe.media.decode import decode_chunk
from raypipe.media.encode import Segment, encode_segment
from raypipe.media.mux import assemble
from raypipe.testing import ClipSpec, frame_pattern, make_clip
from raypipe.testing.bad_inputs import (
    write_out_of_order_pts,
    write_resolution_change,
    write_truncated_tail,
    write_unknown_codec,
)

TB = Fraction(1, 12800)


def one_line(e: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(e.value)
    assert "\n" not in text and text.strip() == text
    return text


def test_more_frames_than_planned(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "v.mp4", ClipSpec(n_frames=12, gop=4, bframes=0))
    info = probe(str(source))
    chunk = plan_chunks(info, ChunkConfig(chunk_frames=4)).chunks[1]
    short = dataclasses.replace(chunk, n_frames=chunk.n_frames - 1)  # the plan says 3, 4 decode
    with pytest.raises(
        DecodeError, match=r"-000001: more than the planned 3 frames in \[.*: frame 3 has pts"
    ) as e:
        decode_chunk(info, short)
    one_line(e)


def test_fewer_frames_than_planned(tmp_path: Path) -> None:
    source = make_clip(tmp_path / "v.mp4", ClipSpec(n_frames=12, gop=4, bframes=0))
    info = probe(str(source))
    chunk = plan_chunks(info, ChunkConfig(chunk_frames=4)).chunks[-1]
    long = dataclasses.replace(chunk, n_frames=chunk.n_frames + 1)  # the file ends first
    with pytest.raises(DecodeError, match=r"decoded 4 frames in .* the plan expects 5; the input"):
        decode_chunk(info, long)


def test_frames_out_of_display_order(tmp_path: Path) -> None:
    source = write_out_of_order_pts(tmp_path / "swapped.mkv")
    info = probe(str(source))  # probe sorts the pts: the plan is in display order
    (chunk,) = plan_chunks(info, ChunkConfig(chunk_frames=100)).chunks
    with pytest.raises(DecodeError, match="decoded frames are not in display order") as e:
        decode_chunk(info, chunk)
    one_line(e)


def test_a_resolution_change_mid_stream_is_scaled_as_ffmpeg_scales_it(tmp_path: Path) -> None:
    """A broadcast recording whose ads come in another size: the frames after the change
    are scaled to the stream's size, as ffmpeg's filter graph scales them, and the chunk
    says so (the run prints it once per video). It used to fail the video."""
    import subprocess

    source = write_resolution_change(tmp_path / "res.ts")  # 96x64, then 128x64
    info = probe(str(source))
    first, *_, last = plan_chunks(info, ChunkConfig(chunk_frames=4)).chunks
    head = decode_chunk(info, first)
    assert head.frames.shape[1:] == (64, 96, 3) and head.resize_note == ""
    tail = decode_chunk(info, last)
    assert tail.frames.shape == (last.n_frames, 64, 96, 3)
    assert tail.resize_note.startswith("frames from ") and tail.resize_note.endswith(
        "are 128x64, not the stream's 96x64: scaled to it, as ffmpeg scales them"
    )
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(source), "-fps_mode", "passthrough",
         "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    shown = np.frombuffer(raw, np.uint8).reshape(-1, 64, 96, 3)
    assert len(shown) == info.n_frames
    error = shown[-last.n_frames :].astype(np.float64) - tail.frames
    assert 10 * np.log10(255**2 / np.mean(error**2)) > 30  # colour conversions differ a little


def test_a_codec_without_decoder(tmp_path: Path) -> None:
    source = write_unknown_codec(tmp_path / "unknown.avi")
    with pytest.raises(
        UnsupportedVideoError, match="codec .unknown to FFmpeg. has no decoder"
    ) as e:
        probe(str(source))
    assert "ffmpeg -i IN -c:v libx264" in one_line(e)


def test_a_truncated_mp4_is_said_truncated_before_any_chunk(tmp_path: Path) -> None:
    """A download cut short: the index (at the front) lists frames past the file's end.
    The probe says so, rather than a chunk failing later with FFmpeg's "Invalid data"."""
    source = write_truncated_tail(tmp_path / "cut.mp4")
    with pytest.raises(CorruptVideoError, match="is truncated: its index lists media up to") as e:
        probe(str(source))
    assert "cut short" in one_line(e) and "ffmpeg -i IN -c:v libx264" in one_line(e)


# --- assembly -------------------------------------------------------------------------


def _segments(
    directory: Path, config: EncodeConfig | None = None, n: int = 3, step: int = 4
) -> list[str]:
    """``n`` segments of 4 frames each, consecutive pts, like a run's work directory
    (``step`` < 4: each segment starting that many frames after the last one started)."""
    paths = []
    for k in range(n):
        frames = np.stack([frame_pattern(4 * k + i, 96, 64) for i in range(4)])
        pts = (step * k + np.arange(4)) * 512
        segment = encode_segment(
            frames, pts, time_base=TB, rate=Fraction(25), config=config or EncodeConfig()
        )
        path = directory / f"v-{k:06d}.rpseg"
        path.write_bytes(segment.to_bytes())
        paths.append(str(path))
    return paths


@pytest.fixture
def source(tmp_path: Path) -> str:
    return str(make_clip(tmp_path / "src.mp4", ClipSpec(n_frames=12, width=96, height=64)))


def test_assembly_of_intact_segments_works(tmp_path: Path, source: str) -> None:
    assemble(_segments(tmp_path), str(tmp_path / "out.mp4"), source)  # the control
    assert probe(str(tmp_path / "out.mp4")).n_frames == 12


@pytest.mark.parametrize("case", ["out of order", "one frame twice"])
def test_chunks_that_overlap(tmp_path: Path, source: str, case: str) -> None:
    """Segments out of order, or a segment whose first frame is the last one's last frame
    (a frame twice in the output), fail the assembly. Decode times alone do not tell the
    second: the leading packets' decode times may move after the last segment's (a
    variable frame rate: tests/media/test_fidelity.py), so display times are checked."""
    if case == "out of order":
        a, b, c = _segments(tmp_path)
        order = [a, c, b]
    else:
        order = _segments(tmp_path, n=2, step=3)
    out = tmp_path / "out.mp4"
    with pytest.raises(EncodeError, match=r"not after the frame at .*s; chunks overlap") as e:
        assemble(order, str(out), source)
    one_line(e)
    assert not out.exists() and not list(tmp_path.glob(".out.mp4*"))  # nothing half-written


@pytest.mark.parametrize("damage", ["truncated", "bad magic", "short index", "missing"])
def test_a_damaged_work_directory(tmp_path: Path, source: str, damage: str) -> None:
    paths = _segments(tmp_path)
    victim = Path(paths[1])
    blob = victim.read_bytes()
    if damage == "truncated":  # the NUT part cut: fewer packets than the index says
        victim.write_bytes(blob[: len(blob) - 700])
    elif damage == "bad magic":
        victim.write_bytes(b"XXXXXX" + blob[6:])
    elif damage == "short index":
        victim.write_bytes(blob[:20])
    else:
        victim.unlink()
    expected = {
        "truncated": r"v-000001.rpseg (holds \d packets, its index 4|is truncated or corrupt)",
        "bad magic": r"not a raypipe segment \(bad magic\); the work directory is damaged",
        "short index": r"a raypipe segment is truncated .*; the work directory is damaged",
        "missing": r"segment v-000001.rpseg is missing from the work directory",
    }[damage]
    out = tmp_path / "out.mp4"
    with pytest.raises(EncodeError, match=expected) as e:
        assemble(paths, str(out), source)
    one_line(e)
    assert not out.exists()


def test_segments_made_with_other_encoder_settings(tmp_path: Path, source: str) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _segments(tmp_path / "a", EncodeConfig(crf=18))
    other = _segments(tmp_path / "b", EncodeConfig(crf=30))
    with pytest.raises(EncodeError, match="has other codec headers than the first segment") as e:
        assemble([first[0], other[1], first[2]], str(tmp_path / "out.mp4"), source)
    one_line(e)


def test_a_container_that_refuses_the_video(tmp_path: Path, source: str) -> None:
    paths = _segments(tmp_path, EncodeConfig(codec="ffv1", crf=None, preset=None))
    out = tmp_path / "out.webm"
    with pytest.raises(
        MuxError, match="writing webm output failed: .*does not support 'ffv1'"
    ) as e:
        assemble(paths, str(out), source)
    one_line(e)
    assert not out.exists() and not list(tmp_path.glob(".out.webm*"))


def test_segment_round_trip_is_exact() -> None:
    segment = Segment(container=b"nut", pts=np.array([1, 2]), dts=np.array([0, 1]), time_base=TB)
    back = Segment.from_bytes(segment.to_bytes())
    assert back.container == b"nut" and back.time_base == TB
    assert back.pts.tolist() == [1, 2] and back.dts.tolist() == [0, 1]


def test_out_of_order_source_really_is_out_of_order(tmp_path: Path) -> None:
    """The fixture's premise, checked with a plain sequential decoder."""
    source = write_out_of_order_pts(tmp_path / "swapped.mkv")
    with av.open(str(source)) as container:
        pts = [f.pts for f in container.decode(video=0)]
    assert pts != sorted(pts) and len(set(pts)) == len(pts)


def test_a_source_replaced_while_its_chunks_ran_is_not_assembled(tmp_path: Path) -> None:
    """A source replaced (or rewritten) while its chunks ran gave an output of both
    versions' frames, reported done (a sweep): assembly checks the source is the one the
    video was planned from, and writes nothing where it is not."""
    import os

    from raypipe.distributed.assembly import assemble_video
    from raypipe.distributed.planning import VideoFacts
    from raypipe.reuse import Provenance, _digest, source_identity

    source = make_clip(tmp_path / "v.mp4", ClipSpec(n_frames=12))
    planned = Provenance(key="k", source=_digest(source_identity(str(source))))
    facts = VideoFacts(
        video_id="v", uri=str(source), output=str(tmp_path / "out.mp4"), status="planned",
        n_frames=12, n_out=12, n_chunks=1, work_dir=str(tmp_path / ".out.mp4.raypipe-work"),
        provenance=planned.to_text(),
    )  # fmt: skip
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # rewritten
    result = assemble_video(facts)
    assert result.error_type == "InputError", result
    assert result.error_message.startswith("the source changed while the video was processed")
    assert not (tmp_path / "out.mp4").exists()
    # a chunk that failed to decode as planned (a file still being written decodes more
    # frames than its plan had) is said as that change, not "probably damaged" (a sweep)
    from raypipe.distributed.runner import _Video

    video = _Video(video_id="v", uri=str(source), facts=facts)
    video.error = ("DecodeError", "v-000001: more than the planned 25 frames ... damaged")
    failed = video.result(None)
    assert (failed.error_type, failed.error_message) == (result.error_type, result.error_message)
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as planned: damaged it is
    assert video.result(None).error_type == "DecodeError"
