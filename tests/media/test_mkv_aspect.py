"""A Matroska/WebM file's display size written after FFmpeg's muxer closed it
(raypipe.media.mkv_aspect): what FFmpeg itself writes for the same ratio, with every
position and checksum of the file's head still right and nothing from its tracks on
changed. FFmpeg's own ``-aspect`` on a stream copy is the reference."""

from __future__ import annotations

import shutil
import subprocess
import zlib
from fractions import Fraction
from pathlib import Path

import pytest

from raypipe.media import mkv_aspect
from raypipe.media.mkv_index import _SEEK, _SEEK_ID, _SEEK_POSITION
from raypipe.testing import ffprobe_video

_DISPLAY = (mkv_aspect._DISPLAY_WIDTH, mkv_aspect._DISPLAY_HEIGHT, mkv_aspect._DISPLAY_UNIT)


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True,
                   capture_output=True, timeout=120)  # fmt: skip


@pytest.fixture(scope="module")
def square(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """64x48 video with square pixels, with audio: FFV1 in Matroska, VP9 in WebM."""
    d = tmp_path_factory.mktemp("mkv_aspect")
    lavfi = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25:duration=0.4",
             "-f", "lavfi", "-i", "sine=duration=0.4"]  # fmt: skip
    _ffmpeg(*lavfi, "-c:v", "ffv1", "-c:a", "flac", str(d / "square.mkv"))
    _ffmpeg(*lavfi, "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8",
            "-c:a", "libopus", str(d / "square.webm"))  # fmt: skip
    return {p.suffix: p for p in d.iterdir()}


def _head(path: Path) -> tuple[bytes, int, list[tuple[int, int, int, int]]]:
    data = path.read_bytes()
    region = mkv_aspect._head_region(data)
    assert region is not None
    return data, *region


def _display_fields(path: Path) -> dict[int, int]:
    """DisplayWidth/Height/Unit of the file's video track, as written."""
    data, _, elements = _head(path)
    tracks = elements[-1]
    found: dict[int, int] = {}
    for entry in mkv_aspect._elements(data, tracks[2], tracks[3]) or ():
        for child in mkv_aspect._elements(data, entry[2], entry[3]) or ():
            if child[0] == mkv_aspect._VIDEO:
                for ident, _, a, b in mkv_aspect._elements(data, child[2], child[3]) or ():
                    if ident in _DISPLAY:
                        found[ident] = int.from_bytes(data[a:b], "big")
    return found


def _check_head(path: Path) -> None:
    """Every CRC-32 of the head holds, and every SeekHead entry names the element found
    at its position."""
    data, seg_start, elements = _head(path)
    for element in elements:
        children = mkv_aspect._elements(data, element[2], element[3]) or []
        if children and children[0][0] == 0xBF:
            crc = zlib.crc32(data[children[0][3] : element[3]]).to_bytes(4, "little")
            assert data[children[0][2] : children[0][3]] == crc, hex(element[0])
    seekhead = next(e for e in elements if e[0] == mkv_aspect._SEEKHEAD)
    entries = 0
    for seek in mkv_aspect._elements(data, seekhead[2], seekhead[3]) or ():
        if seek[0] != _SEEK:
            continue
        fields = {i: data[a:b] for i, _, a, b in mkv_aspect._elements(data, seek[2], seek[3])}
        at = seg_start + int.from_bytes(fields[_SEEK_POSITION], "big")
        ident = fields[_SEEK_ID]
        assert data[at : at + len(ident)] == ident
        entries += 1
    assert entries >= 3  # Info, Tracks, Cues at least


def _frames_md5(path: Path) -> list[str]:
    """Every stream's decoded frames (their times and checksums), the header's ratio aside."""
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-map", "0", "-f", "framemd5",
         "-"],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    return [line for line in out.splitlines() if not line.startswith("#sar")]


@pytest.mark.parametrize(
    ("suffix", "aspect", "shown"),
    [
        (".mkv", "16:9", Fraction(16, 9)),  # DisplayUnit 3: the ratio itself
        (".mkv", "3:2", Fraction(3, 2)),
        (".webm", "16:9", Fraction(85, 48)),  # WebM counts pixels: 64 x 4/3 rounds to 85
    ],
)
def test_the_display_size_is_what_ffmpeg_writes(
    square: dict[str, Path], tmp_path: Path, suffix: str, aspect: str, shown: Fraction
) -> None:
    source = square[suffix]
    reference = tmp_path / f"reference{suffix}"
    _ffmpeg("-i", str(source), "-map", "0", "-c", "copy", "-aspect", aspect, str(reference))
    sar = Fraction(aspect.replace(":", "/")) / Fraction(64, 48)
    patched = tmp_path / f"patched{suffix}"
    shutil.copyfile(source, patched)
    assert mkv_aspect._DISPLAY_WIDTH not in _display_fields(patched)

    assert mkv_aspect.write_display_size(str(patched), sar, webm=suffix == ".webm")

    assert _display_fields(patched) == _display_fields(reference)
    assert ffprobe_video(patched).display_aspect == ffprobe_video(reference).display_aspect
    assert ffprobe_video(patched).display_aspect == shown
    _check_head(patched)
    before, after = source.read_bytes(), patched.read_bytes()
    tracks_end = _head(source)[2][-1][3]
    assert len(after) == len(before) and after[tracks_end:] == before[tracks_end:]
    assert _frames_md5(patched) == _frames_md5(source)


def test_a_head_laid_out_otherwise_is_left_as_it_is(
    square: dict[str, Path], tmp_path: Path
) -> None:
    """No room in the Void before the tracks, or no head to read: the file is not
    touched, and the caller warns."""
    data, _, elements = _head(square[".mkv"])
    void = next(e for e in elements if e[0] == mkv_aspect._VOID)
    cramped = tmp_path / "cramped.mkv"  # the Void cut to 2 bytes (positions not mended)
    cramped.write_bytes(data[: void[1]] + b"\xec\x80" + data[void[3] :])
    truncated = tmp_path / "truncated.mkv"
    truncated.write_bytes(data[: elements[-1][2] + 8])  # cut inside the Tracks
    for path in (cramped, truncated):
        before = path.read_bytes()
        assert not mkv_aspect.write_display_size(str(path), Fraction(4, 3), webm=False)
        assert path.read_bytes() == before


def test_the_room_left_is_a_void_of_exactly_its_length() -> None:
    """The Void after the SeekHead gives up as many bytes as the tracks grow, whatever the
    length left (its size field grows a byte at 127, 16382... bytes of payload)."""
    for total in [*range(2, 300), *range(16_380, 16_390)]:
        void = mkv_aspect._void(total)
        assert len(void) == total
        [(ident, start, _, end)] = mkv_aspect._elements(void, 0, total) or [(0, 0, 0, 0)]
        assert (ident, start, end) == (mkv_aspect._VOID, 0, total)
