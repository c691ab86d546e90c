"""Text cues that overlap, converted to MP4's and MOV's ``mov_text``.

ASS puts a sign on screen while dialogue runs; SRT files overlap too. A ``mov_text`` track
shows one cue at a time, and FFmpeg's MOV muxer put each cue that began while another
showed after that one's end: dialogue at 0.2 s and 0.9 s came at 1.5 s and 2.1 s, the
second past the 2 s video, without a word (a sweep). Each cue now ends where the next
begins, as ``ffmpeg -c:s mov_text`` cuts them, and a warning says how many were cut.
"""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

import pytest
from pipeline_checks import run_in_process

from raypipe.config import EncodeConfig

ASS = """[Script Info]
ScriptType: v4.00+
PlayResX: 320
PlayResY: 240

[V4+ Styles]
Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, \
Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, \
Shadow, Alignment, MarginL, MarginR, MarginV, Encoding
Style: Default,Arial,20,&H00FFFFFF,&H000000FF,&H00000000,&H00000000,0,0,0,0,100,100,0,0,1,1,0,\
2,10,10,10,1

[Events]
Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text
Dialogue: 0,0:00:00.00,0:00:01.50,Default,,0,0,0,,Sign on top
Dialogue: 0,0:00:00.20,0:00:00.80,Default,,0,0,0,,Speaker A
Dialogue: 0,0:00:00.90,0:00:01.40,Default,,0,0,0,,Speaker B
"""


def cues(path: Path) -> list[tuple[float, float, str]]:
    """(start s, end s, text) of the first subtitle stream, as ffmpeg converts it to SRT."""
    srt = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:s:0", "-f", "srt", "-"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip

    def seconds(t: str) -> float:
        h, m, s = t.replace(",", ".").split(":")
        return round(int(h) * 3600 + int(m) * 60 + float(s), 3)

    found = re.findall(r"(\S+) --> (\S+)\n(.*)\n", srt)
    return [(seconds(a), seconds(b), re.sub(r"<[^>]+>", "", text)) for a, b, text in found]


@pytest.fixture(scope="module")
def overlapping(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("overlap")
    (directory / "cues.ass").write_text(ASS)
    source = directory / "in.mkv"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25:duration=2",
         "-i", str(directory / "cues.ass"), "-map", "0", "-map", "1", "-c:v", "libx264",
         "-g", "25", "-c:s", "copy", str(source)],
        check=True,
    )  # fmt: skip
    return source


@pytest.mark.parametrize("suffix", [".mp4", ".mov"])
def test_overlapping_cues_each_start_on_time_in_mov_text(
    overlapping: Path, tmp_path: Path, suffix: str, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / f"out{suffix}"
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        run_in_process(overlapping, out, "builtin:identity", 25, EncodeConfig())
    assert cues(overlapping) == [
        (0.0, 1.5, "Sign on top"), (0.2, 0.8, "Speaker A"), (0.9, 1.4, "Speaker B")
    ]  # fmt: skip
    # every cue starts at its own time; the sign, under the dialogue, ends where it begins
    assert cues(out) == [
        (0.0, 0.2, "Sign on top"), (0.2, 0.8, "Speaker A"), (0.9, 1.4, "Speaker B")
    ]  # fmt: skip
    assert "subtitle stream 1: 1 cue overlapping the next one is cut short" in caplog.text


def test_overlapping_cues_are_kept_as_they_are_in_matroska(
    overlapping: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Matroska holds overlapping cues: nothing is cut (a control for the test above)."""
    out = tmp_path / "out.mkv"
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        run_in_process(overlapping, out, "builtin:identity", 25, EncodeConfig())
    assert cues(out) == cues(overlapping)
    assert "cut short" not in caplog.text
