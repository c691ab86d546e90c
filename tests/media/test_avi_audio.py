"""An AVI's copied MP3 and AC-3 audio headers as ``ffmpeg``'s stream copy writes them
(raypipe.media.avi_audio; through the pipeline: tests/media/test_fidelity.py, AVI into
AVI). A 1.1 GB OpenDML file (two RIFFs) was checked by hand: its segments' durations and
length came out as ffmpeg's copy's (session 60)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import pytest

from raypipe.media.avi_audio import mend_copied_audio
from raypipe.media.mux import _RisingDts


def _ffprobe_audio(path: Path) -> str:
    return subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a", "-show_entries",
         "stream=duration,nb_frames:packet=pts_time", "-of", "csv=p=0", str(path)],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip


def _remuxed(source: Path, out: Path) -> Path:
    """``source``'s streams copied as PyAV copies them, audio decode times made to rise
    as the muxer wants them (raypipe's assembly does both)."""
    with av.open(str(source)) as src, av.open(str(out), "w", format="avi") as sink:
        streams = {s.index: sink.add_stream_from_template(s) for s in src.streams}
        rising = _RisingDts(sink)
        for packet in src.demux():
            if packet.dts is not None:
                stream = streams[packet.stream_index]
                if stream.type == "audio":
                    rising.fix(packet, stream)
                packet.stream = stream
                sink.mux(packet)
    return out


@pytest.mark.parametrize(
    ("audio", "layout"),
    [("libmp3lame", "mono"), ("ac3", "stereo"), ("ac3", "5.1"), ("pcm_s16le", "mono"),
     ("adpcm_ms", "mono"), ("adpcm_ima_wav", "stereo")],
)  # fmt: skip
def test_copied_audio_gets_the_headers_of_ffmpegs_stream_copy(
    tmp_path: Path, audio: str, layout: str
) -> None:
    """5.1 AC-3 (WAVE_FORMAT_EXTENSIBLE, the format in its sub-format) went unmended: its
    packets read back at 0, 0, 0, 0.032... ADPCM is timed as its source is: FFmpeg 5.1's
    own copy times its blocks by the bit rate, the sound at 1.4 times its speed (sweeps)."""
    source = tmp_path / "in.avi"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "testsrc2=s=64x48:r=25",
         "-f", "lavfi", "-i", f"sine=d=2,aformat=channel_layouts={layout}", "-t", "2",
         "-c:v", "mpeg4", "-c:a", audio, str(source)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    reference = tmp_path / "ffmpeg.avi"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(source), "-map", "0", "-c", "copy",
         str(reference)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    if audio.startswith("adpcm"):
        reference = source  # (ffmpeg's copy is the one mistimed)
    copied = _remuxed(source, tmp_path / "copied.avi")
    before, as_copied = copied.read_bytes(), _ffprobe_audio(copied)
    mended = mend_copied_audio(str(copied))
    if audio == "pcm_s16le":  # PCM's sample size is its own: nothing to mend
        assert mended == 0 and copied.read_bytes() == before
    else:  # an MP3's read as 0.37 s of 2 (no duration), by blocks of 1152 bytes
        assert mended == 1 and as_copied != _ffprobe_audio(reference), as_copied
    assert _ffprobe_audio(copied) == _ffprobe_audio(reference)
    assert mend_copied_audio(str(copied)) == 0  # once
    after = copied.read_bytes()
    # only the audio stream header's length and sample size, or scale and rate, changed
    assert len(after) == len(before) and sum(a != b for a, b in zip(after, before)) <= 8


def test_other_files_are_left_as_they_are(tmp_path: Path) -> None:
    for name, data in (("a.mkv", b"\x1a\x45\xdf\xa3" + bytes(60)), ("b.avi", b"RIFF"),
                       ("c.avi", b"RIFF\x10\x00\x00\x00AVI LIST\xff\xff\xff\x7fhdrl")):  # fmt: skip
        path = tmp_path / name
        path.write_bytes(data)
        assert mend_copied_audio(str(path)) == 0 and path.read_bytes() == data
