"""Audio an output container cannot hold as it is (MS ADPCM, Windows Media Audio, GSM...
from old AVI, WMV and WAV-style files) is re-encoded with the container's own codec, as
``ffmpeg`` does, instead of being left out: a user converting an archive of old WMVs to MP4
keeps the sound. ffprobe and the decoded samples are the judge."""

from __future__ import annotations

import itertools
import logging
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from pipeline_checks import run_in_process

from raypipe.config import EncodeConfig
from raypipe.testing import ClipSpec, ffmpeg_decode_errors, ffprobe_video, make_clip
from raypipe.testing.reference import decode_all


def decoded_audio(path: Path, ordinal: int) -> tuple[Fraction, int, np.ndarray]:
    """(the first sample's time in seconds, sample rate, samples as float (n, channels)) of
    the ``ordinal``-th audio stream, decoded as a player decodes it."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[ordinal]
        frames = [f for f in container.decode(stream)]
        start = Fraction(frames[0].pts) * Fraction(frames[0].time_base)
        planes = [f.to_ndarray().astype(np.float64) for f in frames]
        if not frames[0].format.is_planar:  # interleaved: (1, n * channels)
            planes = [p.reshape(-1, len(frames[0].layout.channels)).T for p in planes]
        samples = np.concatenate(planes, axis=1).T
        if frames[0].format.name.startswith("s16"):
            samples /= 32768.0
        elif frames[0].format.name.startswith("s32"):  # TrueHD decodes to 32-bit
            samples /= 2147483648.0
        return start, frames[0].sample_rate, samples


def video_start(path: Path) -> Fraction:
    """The first video frame's time in seconds, as a player decodes it."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return Fraction(frame.pts) * Fraction(frame.time_base)


def snr_db(source: Path, output: Path, ordinal: int) -> float:
    """The output's audio against the source's on the source's timeline, which the output
    keeps or moves as a whole (its first frame's time against the source's: a source whose
    streams all start after 0 starts at 0; the encoder's priming, before the source's first
    sample, is not compared). MP4 edit lists and Matroska timestamps hold times in
    1/1000 s: the output is lined up within that by the best match."""
    src_start, rate, src = decoded_audio(source, ordinal)
    out_start, out_rate, out = decoded_audio(output, ordinal)
    assert out_rate == rate and out.shape[1] == src.shape[1]
    out_start -= video_start(output) - video_start(source)  # on the source's timeline
    at = round((src_start - out_start) * rate)  # output samples before the source's start
    slack = rate // 1000
    assert -slack <= at < rate // 10, f"the output's audio starts {at} samples early"
    n = len(src) - rate // 20  # the last codec frame may be cut short or padded
    assert len(out) >= at + slack + n, f"{len(out)} samples, {at + n} needed"

    def error(skip: int) -> np.ndarray:
        return out[skip : skip + n] - src[:n]

    best = min(range(max(0, at - slack), at + slack + 1), key=lambda k: np.sum(error(k) ** 2))
    return float(10 * np.log10(np.sum(src[:n] ** 2) / np.sum(error(best) ** 2)))


@pytest.mark.parametrize(
    ("suffix", "codec", "encode"),
    [
        (".mp4", "aac", EncodeConfig()),
        (".mkv", "aac", EncodeConfig()),
        (".webm", "opus", EncodeConfig(codec="libvpx-vp9")),
    ],
)
def test_audio_the_container_cannot_hold_is_reencoded_not_left_out(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    suffix: str,
    codec: str,
    encode: EncodeConfig,
) -> None:
    spec = ClipSpec(audio="adpcm_ms", audio_languages=("fra", "eng"), n_frames=25, width=96,
                    height=64)  # fmt: skip
    source = make_clip(tmp_path / "adpcm.nut", spec)  # NUT holds MS ADPCM; MP4/MKV do not
    out = tmp_path / f"out{suffix}"
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        run_in_process(source, out, "builtin:invert", 7, encode)
    assert caplog.text.count("cannot go into") == 2, caplog.text
    assert caplog.text.count(f"(adpcm_ms) cannot go into a {out.suffix[1:]}") == 2 or (
        suffix == ".mkv" and caplog.text.count("cannot go into a matroska file") == 2
    )
    assert "is re-encoded as" in caplog.text
    src, got = ffprobe_video(source), ffprobe_video(out)
    audio = [s for s in got.streams if s.kind == "audio"]
    want = [s for s in src.streams if s.kind == "audio"]
    assert [(s.codec, s.language, s.title) for s in audio] == [
        (codec, s.language, s.title) for s in want
    ]
    assert ["default" in s.dispositions for s in audio] == [
        "default" in s.dispositions for s in want
    ]
    for ordinal in range(2):
        assert snr_db(source, out, ordinal) >= 20.0
    assert ffmpeg_decode_errors(out) == ""
    assert len(decode_all(out)[1]) == spec.n_frames


def _truehd_mkv(path: Path) -> Path:
    """A Blu-ray remux's kind of file: H.264 and TrueHD in Matroska (made by ffmpeg: PyAV's
    FFmpeg has no TrueHD encoder). TrueHD's frames last 1/1200 s and Matroska stores
    milliseconds, so some of its packets share a time."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=1",
         "-f", "lavfi", "-i", "sine=f=440:r=48000:d=1", "-ac", "2", "-c:v", "libx264",
         "-c:a", "truehd", "-strict", "-2", str(path)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return path


def _opus_webm(path: Path) -> Path:  # a YouTube download's kind of file
    return make_clip(path, ClipSpec(codec="libvpx-vp9", audio="libopus", n_frames=25, width=96,
                                    height=64))  # fmt: skip


def _flac_mkv(path: Path) -> Path:  # an audio-lossless rip
    return make_clip(path, ClipSpec(audio="flac", n_frames=25, width=96, height=64))


@pytest.mark.parametrize(
    ("make", "name", "suffix", "codec"),
    [
        (_truehd_mkv, "truehd.mkv", ".mp4", "truehd"),
        (_opus_webm, "opus.webm", ".mov", "opus"),
        (_flac_mkv, "flac.mkv", ".mov", "flac"),
    ],
)
def test_audio_a_muxer_lists_then_refuses_is_reencoded(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    make: Any,
    name: str,
    suffix: str,
    codec: str,
) -> None:
    """FFmpeg's MP4 muxer lists TrueHD (experimental) and its MOV muxer Opus and FLAC, then
    refuses them when it writes the header: the output failed at its very end, after every
    chunk's work. They are re-encoded as AAC, as any audio the container cannot hold, and
    the warning says Matroska would keep them."""
    source = make(tmp_path / name)
    out = tmp_path / f"out{suffix}"
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        run_in_process(source, out, "builtin:invert", 7, EncodeConfig())
    assert f"({codec}) cannot go into a {suffix[1:]} file as it is" in caplog.text, caplog.text
    assert "re-encoded as aac" in caplog.text and "use .mkv to keep it" in caplog.text
    assert [s.codec for s in ffprobe_video(out).streams if s.kind == "audio"] == ["aac"]
    assert snr_db(source, out, 0) >= 20.0
    assert ffmpeg_decode_errors(out) == ""
    assert len(decode_all(out)[1]) == 25


@pytest.mark.parametrize("suffix", [".ts", ".mkv"])
def test_truehd_packets_sharing_a_millisecond_are_kept_every_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, suffix: str
) -> None:
    """TrueHD from Matroska into MPEG-TS (which holds it) failed with "Invalid argument":
    packets sharing a millisecond have equal decode times, which the TS muxer refuses. They
    move one tick of TS's 90 kHz apart, as ffmpeg moves them; every packet is kept, and
    the lossless audio decodes to the source's very samples."""
    source = _truehd_mkv(tmp_path / "truehd.mkv")
    out = tmp_path / f"out{suffix}"
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        run_in_process(source, out, "builtin:invert", 7, EncodeConfig())
    assert "cannot go into" not in caplog.text, caplog.text
    with av.open(str(source)) as src:
        times = [p.dts for p in src.demux(src.streams.audio[0]) if p.size]
    assert len(set(times)) < len(times)  # the case under test: some packets share a time
    with av.open(str(out)) as got:
        assert got.streams.audio[0].codec_context.name == "truehd"
        kept = [p.dts for p in got.demux(got.streams.audio[0]) if p.size]
    assert len(kept) == len(times)
    if suffix == ".ts":
        assert all(b > a for a, b in itertools.pairwise(kept))
    _, _, src_samples = decoded_audio(source, 0)
    _, _, out_samples = decoded_audio(out, 0)
    assert np.array_equal(out_samples, src_samples)
    assert ffmpeg_decode_errors(out) == ""
    assert len(decode_all(out)[1]) == 25


def _system_ffmpeg_audio(path: Path) -> np.ndarray:
    """The first audio stream as the system's ``ffmpeg`` decodes it (Debian 12's 5.1 here),
    float samples, the first channel."""
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(path), "-map", "0:a:0", "-ac", "1",
         "-f", "f32le", "-"],
        check=True, capture_output=True, timeout=120,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, np.float32)


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv"])
def test_a_cameras_pcm_sound_plays_in_every_output(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, suffix: str
) -> None:
    """A camera's MOV with 24-bit PCM: FFmpeg's MP4 muxer writes PCM as ISO 23003-5
    'ipcm', which the FFmpeg 5.1 here decoded as noise (a sample read -0.81 where the
    source has 0.01). Into MP4 it is re-encoded as AAC, with a line saying why; MOV and MKV
    keep the PCM as it is, to the sample."""
    source = make_clip(
        tmp_path / "camera.mov",
        ClipSpec(audio="pcm_s24le", n_frames=25, width=96, height=64),
    )
    out = tmp_path / f"out{suffix}"
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        run_in_process(source, out, "builtin:invert", 7, EncodeConfig())
    codecs = [s.codec for s in ffprobe_video(out).streams if s.kind == "audio"]
    heard, want = _system_ffmpeg_audio(out), _system_ffmpeg_audio(source)
    if suffix == ".mp4":
        assert codecs == ["aac"]
        assert "(pcm_s24le) cannot go into a mp4 file as it is" in caplog.text
        assert "'ipcm'" in caplog.text and "use .mkv to keep it" in caplog.text
        assert snr_db(source, out, 0) >= 20.0
        # the system's ffmpeg too (AAC's priming is trimmed by the edit list)
        n = len(want) - 4096
        error = heard[:n] - want[:n]
        assert 10 * np.log10(np.sum(want[:n] ** 2) / np.sum(error**2)) >= 20.0
    else:
        assert codecs == ["pcm_s24le"] and "cannot go into" not in caplog.text
        assert np.array_equal(heard, want)
    assert ffmpeg_decode_errors(out) == ""


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv"])
def test_an_ogg_videos_vorbis_sound_plays_in_every_output(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, suffix: str
) -> None:
    """An Ogg (or an older WebM) video's Vorbis sound: FFmpeg's MP4 and MOV muxers write it
    under a private object type that no browser or QuickTime reads, so the output played
    without sound there. Into MP4 and MOV it is re-encoded as AAC, with a line saying why;
    Matroska keeps the Vorbis packets as they are."""
    source = tmp_path / "clip.ogv"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=1",
         "-f", "lavfi", "-i", "sine=f=440:d=1", "-c:v", "libtheora", "-c:a", "libvorbis",
         str(source)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    out = tmp_path / f"out{suffix}"
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        run_in_process(source, out, "builtin:invert", 7, EncodeConfig())
    codecs = [s.codec for s in ffprobe_video(out).streams if s.kind == "audio"]
    if suffix == ".mkv":
        assert codecs == ["vorbis"] and "cannot go into" not in caplog.text
        assert np.array_equal(_system_ffmpeg_audio(out), _system_ffmpeg_audio(source))
    else:
        assert codecs == ["aac"]
        assert f"(vorbis) cannot go into a {suffix[1:]} file as it is" in caplog.text
        assert "no standard place for Vorbis" in caplog.text
        assert snr_db(source, out, 0) >= 20.0
    assert ffmpeg_decode_errors(out) == ""


def test_messages_name_the_codec_as_ffprobe_does(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An MP3 track was "(mp3float)" in the warnings and in ``raypipe probe``: FFmpeg's
    decoder's name, where ffprobe says ``mp3`` (a sweep)."""
    from raypipe.media import probe

    source = make_clip(
        tmp_path / "mp3.mkv", ClipSpec(audio="libmp3lame", n_frames=25, width=96, height=64)
    )
    assert [s.codec for s in probe(str(source)).streams if s.kind == "audio"] == ["mp3"]
    out = tmp_path / "out.webm"
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        run_in_process(source, out, "builtin:invert", 25, EncodeConfig(codec="libvpx-vp9"))
    assert "audio stream 1 (mp3) cannot go into a webm file as it is" in caplog.text, caplog.text


@pytest.mark.parametrize("suffix", [".mp4", ".mov"])
def test_the_output_keeps_the_sources_stream_order(tmp_path: Path, suffix: str) -> None:
    """Audio as stream 0 and video as 1 (``-map 1 -map 0``): the output put the video
    first, so ``-map 0:1`` or a player's track number took another stream than in the
    source (a sweep); ``ffmpeg -map 0 -c copy`` keeps the order, and so does raypipe."""
    from conftest import assert_exact

    source = tmp_path / "audio_first.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=1",
         "-f", "lavfi", "-i", "sine=d=1", "-map", "1", "-map", "0", "-c:v", "libx264",
         "-c:a", "aac", str(source)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    out = tmp_path / f"out{suffix}"
    run_in_process(source, out, "builtin:invert", 10)
    shown = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0",
         str(out)],
        check=True, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shown.stdout.split() == ["audio", "video"]
    assert_exact(source, out, "builtin:invert")


def _flac_clip(path: Path, audio: str = "flac") -> Path:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "testsrc2=s=96x64:r=25:d=2",
         "-f", "lavfi", "-i", "sine=f=440:d=2:sample_rate=48000", "-c:v", "libx264", "-g", "25",
         "-c:a", audio, *(["-strict", "-2"] if audio == "dca" else []), str(path)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return path


@pytest.mark.parametrize("audio", ["flac", "libvorbis", "dca", "eac3"])
def test_audio_avi_times_wrongly_is_reencoded_for_avi(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, audio: str
) -> None:
    """FFmpeg's AVI muxer takes FLAC, Vorbis, DTS and E-AC-3 packets and times them by
    bytes or by fixed frames: the copy's 2 s of sound lasted 0.04-0.5 s, or (FLAC) failed
    to decode at every packet, and the run said nothing (a sweep). They become AVI's MP3."""
    source = _flac_clip(tmp_path / "in.mkv", audio)
    out = tmp_path / "out.avi"
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        run_in_process(source, out, "builtin:invert", 25, EncodeConfig())
    assert [s.codec for s in ffprobe_video(out).streams if s.kind == "audio"] == ["mp3"]
    assert "cannot go into a avi file as it is" in caplog.text
    assert "AVI times it by bytes or by fixed-size frames" in caplog.text
    _, rate, samples = decoded_audio(out, 0)
    assert len(samples) / rate == pytest.approx(2.0, abs=0.1)  # the copy's: 0.04-0.5 s
    loudness = np.sqrt(np.mean(samples**2)) / np.sqrt(np.mean(decoded_audio(source, 0)[2] ** 2))
    assert 0.7 < loudness < 1.4, loudness  # the tone, not silence (AVI keeps no encoder delay)
    assert ffmpeg_decode_errors(out) == ""


def test_a_damaged_audio_packet_is_left_out_of_a_reencode_not_the_output(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One FLAC packet that does not decode, its sound re-encoded for MOV: the whole run
    failed at assembly, after every frame was processed, with a MuxError that named
    neither the stream nor a way out; ``ffmpeg`` leaves the packet out (a sweep)."""
    source = _flac_clip(tmp_path / "in.mkv")
    with av.open(str(source)) as container:
        audio = container.streams.audio[0]
        positions = [p.pos for p in container.demux(audio) if p.size]
    data = bytearray(source.read_bytes())
    at = positions[10] + 20  # inside the 11th audio packet
    data[at : at + 200] = b"\xff" * 200
    damaged = tmp_path / "damaged.mkv"
    damaged.write_bytes(bytes(data))
    out = tmp_path / "out.mov"
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        run_in_process(damaged, out, "builtin:invert", 25, EncodeConfig())
    assert [s.codec for s in ffprobe_video(out).streams if s.kind == "audio"] == ["aac"]
    assert "audio stream 1: 1 packet did not decode (damaged?) and is left out" in caplog.text
    _, rate, samples = decoded_audio(out, 0)
    assert len(samples) / rate == pytest.approx(2.0, abs=0.15)
