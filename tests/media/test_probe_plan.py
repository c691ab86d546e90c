"""probe and plan_chunks: stream facts and the pure chunking function."""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from raypipe.config import ChunkConfig
from raypipe.errors import (
    ConfigError,
    CorruptVideoError,
    EmptyVideoError,
    InputNotFoundError,
    NoVideoStreamError,
)
from raypipe.media import plan_chunks, probe
from raypipe.testing import (
    decode_all,
    write_audio_only,
    write_empty_file,
    write_text_as_video,
    write_zero_frames,
)


@pytest.mark.parametrize(
    "kind, keyframes, audio",
    [
        ("bframes_aac", 4, True),
        ("ntsc", 4, True),
        ("open_gop", 5, False),
        ("single_keyframe", 1, False),
        ("vfr", 4, False),
        ("hevc_mov", 4, False),
        ("odd_size", 4, False),
    ],
)
def test_probe_facts(clips: dict[str, Path], kind: str, keyframes: int, audio: bool) -> None:
    info = probe(str(clips[kind]))
    _, ref_pts, ref_tb = decode_all(clips[kind])
    assert list(info.pts) == ref_pts, "probe's display-order pts differ from a full decode"
    assert info.time_base == ref_tb
    assert len(info.keyframe_pts) == keyframes
    assert [s.kind for s in info.streams] == (["audio"] if audio else [])
    assert json.loads(json.dumps(info.to_dict()))["n_frames"] == 48


def test_probe_specific_facts(clips: dict[str, Path]) -> None:
    assert probe(str(clips["ntsc"])).rate == Fraction(30000, 1001)
    assert probe(str(clips["hevc_mov"])).codec == "hevc"
    odd = probe(str(clips["odd_size"]))
    assert (odd.width, odd.height) == (198, 110)
    vfr = probe(str(clips["vfr"]))
    assert len({b - a for a, b in zip(vfr.pts, vfr.pts[1:])}) >= 3
    assert probe(str(clips["bframes_aac"])).rotation_degrees == 0


def test_probe_errors(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="does not exist"):
        probe(str(tmp_path / "missing.mp4"))
    with pytest.raises(CorruptVideoError, match="empty file"):
        probe(str(write_empty_file(tmp_path / "empty.mp4")))
    # A sweep's symbolic links: a loop and a dangling link were both "does not exist"
    (tmp_path / "loop_a.mp4").symlink_to(tmp_path / "loop_b.mp4")
    (tmp_path / "loop_b.mp4").symlink_to(tmp_path / "loop_a.mp4")
    with pytest.raises(InputNotFoundError, match="symbolic link that loops"):
        probe(str(tmp_path / "loop_a.mp4"))
    (tmp_path / "dangling.mp4").symlink_to(tmp_path / "gone.mp4")
    with pytest.raises(InputNotFoundError, match=r"symbolic link to '.*gone.mp4', which does"):
        probe(str(tmp_path / "dangling.mp4"))
    with pytest.raises(CorruptVideoError, match="not a readable media file"):
        probe(str(write_text_as_video(tmp_path / "text.mp4")))
    with pytest.raises(CorruptVideoError, match="is a directory"):
        (tmp_path / "dir.mp4").mkdir()
        probe(str(tmp_path / "dir.mp4"))
    with pytest.raises(NoVideoStreamError, match=r"no video stream \(streams found: audio\)"):
        probe(str(write_audio_only(tmp_path / "a.m4a")))
    with pytest.raises(EmptyVideoError, match="zero frames"):
        probe(str(write_zero_frames(tmp_path / "zero.mp4")))


@pytest.mark.parametrize("chunk_frames", [1, 2, 3, 5, 7, 10, 11, 12, 13, 24, 47, 48, 1000])
@pytest.mark.parametrize("kind", ["bframes_aac", "open_gop", "single_keyframe", "vfr"])
def test_plan_covers_every_frame_once(clips: dict[str, Path], kind: str, chunk_frames: int) -> None:
    info = probe(str(clips[kind]))
    plan = plan_chunks(info, ChunkConfig(chunk_frames=chunk_frames))
    covered = [p for c in plan.chunks for p in info.pts if c.start_pts <= p < c.end_pts]
    assert covered == list(info.pts)
    assert sum(c.n_frames for c in plan.chunks) == info.n_frames
    assert [c.index for c in plan.chunks] == list(range(len(plan)))
    keyframes = set(info.keyframe_pts)
    for c in plan.chunks:
        assert c.chunk_id == f"{info.video_id}-{c.index:06d}"
        assert 1 <= c.n_frames <= chunk_frames or c.start_pts in keyframes
        if c.seek_pts is None:
            assert c.start_pts < info.keyframe_pts[1] if len(keyframes) > 1 else True
        else:
            assert c.seek_pts in keyframes and c.seek_pts <= c.start_pts


def test_plan_groups_gops_and_can_keep_them_whole(clips: dict[str, Path]) -> None:
    info = probe(str(clips["bframes_aac"]))  # GOPs of 12
    assert [c.n_frames for c in plan_chunks(info, ChunkConfig(chunk_frames=24)).chunks] == [24, 24]
    assert [c.n_frames for c in plan_chunks(info, ChunkConfig(chunk_frames=30)).chunks] == [24, 24]
    split = plan_chunks(info, ChunkConfig(chunk_frames=5)).chunks
    assert [c.n_frames for c in split] == [4, 4, 4] * 4
    single = probe(str(clips["single_keyframe"]))
    whole = plan_chunks(single, ChunkConfig(chunk_frames=5, split_gops=False))
    assert [c.n_frames for c in whole.chunks] == [48]


def test_plan_caps_the_bytes_of_a_chunk_in_and_out(clips: dict[str, Path]) -> None:
    info = probe(str(clips["bframes_aac"]))  # GOPs of 12, 48 frames
    frame = info.width * info.height * 3
    mib = 2 * 5.5 * frame / 2**20  # room for 5 frames in and out, not 6

    def sizes(scale: float = 1.0, **chunking: object) -> list[int]:
        plan = plan_chunks(info, ChunkConfig(**chunking), output_scale=scale)
        return [c.n_frames for c in plan.chunks]

    assert sizes(chunk_frames=24, chunk_mib=mib) == [4, 4, 4] * 4 == sizes(chunk_frames=5)
    assert sizes(chunk_frames=24, chunk_mib=None) == [24, 24]
    assert sizes(chunk_frames=24, chunk_mib=mib, split_gops=False) == [12] * 4
    # the model's output counts: 4x the pixels out (room for 2), none out (room for 11)
    assert sizes(2.0, chunk_frames=24, chunk_mib=mib) == [2] * 24
    assert sizes(0.0, chunk_frames=24, chunk_mib=mib) == [6, 6] * 4
    # sampled analysis runs keep few frames of a chunk: no cap
    assert sizes(chunk_frames=24, chunk_mib=mib, every_n_frames=2) == [24, 24]
    assert sizes(chunk_frames=24, chunk_mib=frame / 2**20 / 10) == [1] * 48


def test_chunk_mib_caps_frames_by_size() -> None:
    default = ChunkConfig()
    assert default.chunk_mib == 1024
    assert default.frames_per_chunk(3840, 2160) == 21  # 23.7 MiB a frame as RGB, in and out
    assert default.frames_per_chunk(3840, 2160, output_scale=0) == 43  # analysis: in only
    assert default.frames_per_chunk(1920, 1080) == 64
    assert default.frames_per_chunk(1920, 1080, output_scale=2) == 34  # 4K out
    assert default.frames_per_chunk(7680, 4320) == 5
    assert ChunkConfig(chunk_mib=None).frames_per_chunk(7680, 4320) == 64
    assert ChunkConfig(chunk_mib=1).frames_per_chunk(3840, 2160) == 1
    for bad in (0, -1, float("nan"), float("inf"), True, "512"):
        with pytest.raises(ConfigError, match="chunk_mib must be a number > 0"):
            ChunkConfig(chunk_mib=bad)  # type: ignore[arg-type]


def test_probe_shows_tags_chapters_timecode_and_field_order(traits: dict[str, Path]) -> None:
    """What the output keeps besides the pictures and streams: ``raypipe probe`` says it."""
    from raypipe.media.describe import probe_lines

    lines = {}
    for name in ("rotated_languages", "full_range_444", "phone_hlg"):
        info = probe(str(traits[name]))
        lines[name] = "\n".join(probe_lines(info, plan_chunks(info, ChunkConfig()), 64))
        if name == "rotated_languages":
            assert (info.timecode, info.field_order) == ("01:02:03:04", "progressive")
            assert ("title", "Interview, take 2") in info.tags
    assert "video timecode 01:02:03:04 (kept)" in lines["rotated_languages"]
    assert "left out" not in lines["rotated_languages"]  # its tmcd track: the timecode
    assert "title 'Interview, take 2'" in lines["rotated_languages"]
    assert "location '+35.6586+139.7454/'" in lines["rotated_languages"]
    assert "video language 'jpn', title 'Camera A' (kept)" in lines["full_range_444"]
    assert (  # "(kept)" whatever the output: MP4, MOV and TS outputs are progressive (a sweep)
        "video field order tt (kept in .mkv, and in .mov with ProRes; other outputs are coded "
        "progressive)" in lines["full_range_444"]
    )
    assert "2 chapters: 'Opening' 0.000-0.200s, 'Scene 2' 0.200-0.480s" in lines["full_range_444"]
    assert "DESCRIPTION 'scanned from tape'" in lines["full_range_444"]
    # an attachment's name is its file's, not a title
    assert (
        "attachment application/x-truetype-font (kept; file 'subtitles.ttf')"
        in (lines["full_range_444"])
    )
    assert "com.apple.quicktime.make 'Apple'" in lines["phone_hlg"]
    assert "encoder" not in lines["phone_hlg"].lower()  # the writing library is not kept


def test_an_mp4s_chapter_track_is_not_a_stream_left_out(tmp_path: Path) -> None:
    """ffmpeg writes an MP4's chapters with a QuickTime text track too, which FFmpeg reads
    back as the container's chapters and shows as a data stream: every run warned "left out
    stream 1 (data): not copied", and probe said so, while the chapters were kept."""
    from raypipe.media.describe import probe_lines

    marks = tmp_path / "chapters.txt"
    marks.write_text(
        ";FFMETADATA1\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=500\ntitle=Intro\n"
        "[CHAPTER]\nTIMEBASE=1/1000\nSTART=500\nEND=1000\ntitle=Two\n"
    )
    source = tmp_path / "chapters.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "testsrc2=s=64x48:r=24:d=1",
         "-i", str(marks), "-map", "0:v", "-map_chapters", "1", "-c:v", "libx264",
         str(source)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    shown = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0",
         str(source)],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.stdout.split() == ["video", "data"], "the chapter track is there"
    info = probe(str(source))
    assert info.left_out == ()
    lines = "\n".join(probe_lines(info, plan_chunks(info, ChunkConfig()), 64))
    assert "2 chapters: 'Intro' 0.000-0.500s, 'Two' 0.500-1.000s (kept)" in lines
