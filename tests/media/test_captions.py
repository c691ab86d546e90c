"""Closed captions in the video stream (CEA-608/708, ATSC A/53) are kept, as ffmpeg keeps them.

A TV recording's captions ride in its pictures: SEI messages in H.264/HEVC, user data in
MPEG-2. ffmpeg's transcode writes them back into the new pictures; raypipe's output had
none (the frames went through a model as pixels). Every check reads the captions with
FFmpeg's own decoders (PyAV's frame side data), by each picture's time.
"""

from __future__ import annotations

import logging
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from av.sidedata.sidedata import Type
from conftest import LOSSLESS
from pipeline_checks import run_in_process

from raypipe.config import EncodeConfig
from raypipe.media import captions
from raypipe.testing.reference import ffmpeg_decode_errors

FRAMES = 40
RATE = 25


def caption_bytes(i: int) -> bytes:
    """Frame ``i``'s cc_data: two CEA-608 field-1 pairs and a CEA-708 padding triplet, with
    zeros (which the SEI must escape) in it."""
    return bytes([0xFC, 0x80 | (0x41 + i % 26), 0xA0, 0xFC, 0x80 | i % 64, 0x80, 0xFA, 0, 0])


def captions_by_time(path: Path) -> dict[Fraction, bytes | None]:
    """Each decoded picture's captions (FFmpeg's A53 side data) by its time from the first."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        got = {
            frame.pts * stream.time_base: frame.side_data.get(Type.A53_CC)
            for frame in container.decode(stream)
        }
    first = min(got)
    return {t - first: None if cc is None else bytes(cc) for t, cc in got.items()}


def captioned_source(path: Path, encoder: str) -> Path:
    """A 160x96 clip at 25 fps with B-frames whose every picture carries
    :func:`caption_bytes` of its index (written by raypipe's SEI writer, read back by
    FFmpeg below)."""
    codec = "hevc" if encoder == "libx265" else "h264"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(encoder, rate=RATE)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.options = {"bf": "3"} if encoder == "libx264" else {"x265-params": "log-level=error"}
        ramp = np.linspace(0, 255, 160, dtype=np.uint8)
        for i in [*range(FRAMES), None]:
            frame = None
            if i is not None:
                rgb = np.stack([np.roll(ramp, 4 * i)] * 96)[..., None].repeat(3, axis=2)
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = i
            for packet in stream.encode(frame):
                new = captions.captioned_packet(packet, caption_bytes(packet.pts), codec)
                new.stream = stream
                out.mux(new)
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Captioned sources: H.264 in MP4 (NAL lengths), its MPEG-TS copy (start codes),
    an MPEG-2 TS that ffmpeg's own encoder captioned from it, HEVC in Matroska."""
    d = tmp_path_factory.mktemp("captions")
    h264 = captioned_source(d / "h264.mp4", "libx264")
    ts, mpeg2 = d / "h264.ts", d / "mpeg2.ts"
    for out, options in ((ts, ["-c:v", "copy"]), (mpeg2, ["-c:v", "mpeg2video", "-a53cc", "1"])):
        subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(h264), *options, str(out)],
                       check=True, capture_output=True, timeout=120)  # fmt: skip
    return {"h264.mp4": h264, "h264.ts": ts, "mpeg2.ts": mpeg2,
            "hevc.mkv": captioned_source(d / "hevc.mkv", "libx265")}  # fmt: skip


def test_ffmpeg_reads_the_captions_raypipe_writes(sources: dict[str, Path]) -> None:
    expected = [caption_bytes(i) for i in range(FRAMES)]
    for name, source in sources.items():
        got = captions_by_time(source)
        assert [got[t] for t in sorted(got)] == expected, name  # every picture, in order


X265 = EncodeConfig(
    codec="libx265", crf=None, preset="ultrafast", options={"x265-params": "lossless=1"}
)


@pytest.mark.parametrize(
    ("source", "suffix", "encode"),
    [("h264.mp4", ".mp4", LOSSLESS), ("h264.mp4", ".mkv", LOSSLESS), ("h264.ts", ".ts", LOSSLESS),
     ("mpeg2.ts", ".mkv", LOSSLESS), ("hevc.mkv", ".mp4", LOSSLESS), ("h264.mp4", ".mp4", X265)],
)  # fmt: skip
def test_closed_captions_are_kept_picture_by_picture(
    tmp_path: Path, sources: dict[str, Path], source: str, suffix: str, encode: EncodeConfig
) -> None:
    """Each output picture carries its source picture's captions, across chunk boundaries
    (7-frame chunks), in every container and both carrier codecs; so does ffmpeg's own
    transcode of the same source, the reference."""
    out = tmp_path / f"out{suffix}"
    run_in_process(sources[source], out, "builtin:invert", 7, encode)
    want = captions_by_time(sources[source])
    assert captions_by_time(out) == want
    reference = tmp_path / f"ffmpeg{suffix}"
    command = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(sources[source]), str(reference)]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    assert captions_by_time(reference) == want
    assert ffmpeg_decode_errors(out) == ""


def test_an_encoder_without_a_place_for_captions_says_they_are_left_out(
    tmp_path: Path, sources: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out.webm"
    vp9 = EncodeConfig(codec="libvpx-vp9", crf=40, preset="ultrafast")
    with caplog.at_level(logging.WARNING, logger="raypipe.media"):
        run_in_process(sources["h264.mp4"], out, "builtin:invert", 20, vp9)
    assert "closed captions (CEA-608/708, in its video) are left out: vp9" in caplog.text
    assert not any(captions_by_time(out).values())


def test_an_uncaptioned_source_gets_no_captions(tmp_path: Path) -> None:
    source = tmp_path / "plain.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i",
                    "testsrc2=s=96x64:r=25:d=1", "-c:v", "libx264", str(source)],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    out = tmp_path / "out.mp4"
    run_in_process(source, out, "builtin:invert", 10, LOSSLESS)
    assert not any(captions_by_time(out).values())


@pytest.mark.parametrize("cc", [bytes(9), b"\x00\x00\x03" * 3, bytes(range(256))[: 3 * 31]])
def test_an_sei_round_trips_bytes_that_need_escaping(cc: bytes) -> None:
    """Zeros in cc_data take emulation prevention bytes in the SEI; read back, the same."""
    units = {  # an access unit delimiter, then an IDR slice's start
        "h264": (b"\x09\xf0", b"\x00\x00\x00\x01\x65\x88\x84\x00\x00\x03\x01"),
        "hevc": (b"\x46\x01\x50", b"\x00\x00\x00\x01\x26\x01\xaf\x00\x00\x03\x01"),
    }
    for codec, (delimiter, idr) in units.items():
        packet = captions.with_captions(b"\x00\x00\x00\x01" + delimiter + idr, cc, codec)
        assert packet.endswith(idr)  # before the slice, after the access unit delimiter
        assert captions.picture_captions(packet, codec, 0) == cc


def test_captions_move_with_their_pictures_where_a_recordings_clock_jumps(
    tmp_path: Path, sources: dict[str, Path]
) -> None:
    """Two captioned MPEG-TS recordings joined, the second's clock an hour on: the jump
    closes (raypipe.media.jumps), and each picture after it keeps its own captions (read
    from the source by time, they are read on the closed timeline too)."""
    later = tmp_path / "later.ts"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(sources["h264.mp4"]), "-c:v", "copy",
         "-output_ts_offset", "3600", str(later)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    joined = tmp_path / "joined.ts"
    joined.write_bytes(sources["h264.ts"].read_bytes() + later.read_bytes())
    out = tmp_path / "out.mp4"
    run_in_process(joined, out, "builtin:invert", 7, LOSSLESS)
    want = [caption_bytes(i % FRAMES) for i in range(2 * FRAMES)]
    got = captions_by_time(out)
    assert sorted(got) == [Fraction(i, RATE) for i in range(2 * FRAMES)]
    assert [got[t] for t in sorted(got)] == want
    assert ffmpeg_decode_errors(out) == ""
