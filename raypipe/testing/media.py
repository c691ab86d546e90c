"""Small synthetic clips whose frames carry their own index, written with PyAV.

Frame ``i`` of every clip shows :func:`frame_pattern` ``(i, ...)``: the index in binary as
large black/white blocks in the top rows (readable back with :func:`read_index` after lossy
compression) over a moving colour texture, so order and identity survive a round trip.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from raypipe.media.encode import with_params, x264_cpu_params
from raypipe.media.probe import FIELD_ORDERS
from raypipe.testing.clip_traits import (
    deep_frame_pattern,
    is_deep,
    tag_stream,
    to_stream_format,
    write_cover_art,
)

__all__ = [
    "AUDIO_SAMPLE_RATE",
    "CLIP_KINDS",
    "CLIP_SUFFIX",
    "INDEX_BITS",
    "MIN_HEIGHT",
    "MIN_WIDTH",
    "ClipSpec",
    "clip_kind_names",
    "frame_pattern",
    "make_clip",
    "make_named_clip",
    "read_index",
]

INDEX_BITS = 16
"""Bits of the frame index drawn in each frame: indices in [0, 2**16)."""
_BIT_COLS = 8  # index blocks: 2 rows of 8, most significant bit top left
MIN_WIDTH = 64
"""Narrowest frame :func:`frame_pattern` draws (8 px wide index blocks)."""
MIN_HEIGHT = 32
"""Shortest frame :func:`frame_pattern` draws (two 8 px rows of blocks plus texture)."""
AUDIO_SAMPLE_RATE = 48000
"""Sample rate of generated audio, in Hz; audio frames are 1024 samples long."""
_AUDIO_FRAME_SAMPLES = 1024
_AUDIO_TONES_HZ = (440.0, 660.0)  # left, right
_VFR_TIME_BASE = Fraction(1, 90000)
_VFR_STEPS = (0.5, 0.75, 1.0, 1.5, 2.0)  # frame durations, in multiples of 1/fps
_SUBTITLE_TIME_BASE = Fraction(1, 1000)
_FASTSTART_SUFFIXES = (".mp4", ".mov", ".m4v", ".m4a")


def _block_size(width: int, height: int) -> tuple[int, int]:
    """(block width, block height) in px of one index bit; scales with the frame."""
    if width < MIN_WIDTH or height < MIN_HEIGHT:
        raise ValueError(
            f"frame of {width}x{height} px is too small for the index pattern: "
            f"expected at least {MIN_WIDTH}x{MIN_HEIGHT}"
        )
    block_w = max(8, width // (2 * _BIT_COLS))  # the blocks span half the width, or all
    return block_w, max(8, min(block_w, height // 8))


def frame_pattern(index: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """Frame ``index`` of a test clip as (height, width, 3) uint8 RGB; deterministic."""
    if not 0 <= index < 2**INDEX_BITS:
        raise ValueError(f"index {index} out of range: expected 0 <= index < {2**INDEX_BITS}")
    block_w, block_h = _block_size(width, height)
    phase = np.random.default_rng(seed).integers(0, 256, size=3)
    y, x = np.mgrid[0:height, 0:width]
    frame = np.empty((height, width, 3), dtype=np.uint8)
    # Ramps that move 7 and 5 levels a frame: every pixel changes from one frame to the next.
    frame[..., 0] = (x * 256 // width + 7 * index + phase[0]) % 256
    frame[..., 1] = (y * 256 // height + 5 * index + phase[1]) % 256
    # A moving checkerboard gives edges for blur and sharpen models.
    checker = ((x + 3 * index) // 8 + (y + 2 * index) // 8) % 2
    frame[..., 2] = (checker * 160 + 48 + phase[2]) % 256
    for bit in range(INDEX_BITS):  # most significant bit first, row-major
        row, col = divmod(bit, _BIT_COLS)
        on = (index >> (INDEX_BITS - 1 - bit)) & 1
        frame[row * block_h : (row + 1) * block_h, col * block_w : (col + 1) * block_w] = (
            255 if on else 0
        )
    return frame


def read_index(frame: np.ndarray) -> int:
    """The index drawn by :func:`frame_pattern` in ``frame`` ((H, W, 3) or (H, W) uint8).

    Reads the centre of each bit block, so it survives lossy coding (x264 crf 23) but not
    models that change the picture. Raises ValueError when a block is neither dark nor light.
    """
    if frame.ndim not in (2, 3):
        raise ValueError(f"frame of shape {frame.shape}: expected (H, W, 3) or (H, W)")
    luma = frame.astype(np.float32)
    if luma.ndim == 3:
        luma = luma[..., :3].mean(axis=2)
    height, width = luma.shape
    block_w, block_h = _block_size(width, height)
    mx, my = block_w // 4, block_h // 4
    index = 0
    for bit in range(INDEX_BITS):
        row, col = divmod(bit, _BIT_COLS)
        y0, x0 = row * block_h, col * block_w
        level = float(luma[y0 + my : y0 + block_h - my, x0 + mx : x0 + block_w - mx].mean())
        if 64.0 < level < 192.0:
            raise ValueError(
                f"index block {bit} has mean level {level:.0f}: expected < 64 or > 192; "
                "is this a frame_pattern frame that no model has processed?"
            )
        index = (index << 1) | int(level >= 128.0)
    return index


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClipSpec:
    """What :func:`make_clip` writes. Audio, if any, is a 48 kHz stereo sine pair."""

    n_frames: int = 48
    width: int = 160
    height: int = 96
    fps: Fraction = Fraction(25)
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    gop: int = 12  # keyframe interval in frames; gop >= n_frames: a single keyframe
    bframes: int = 2
    open_gop: bool = False
    vfr: bool = False  # frame durations drawn from 0.5x..2x of 1/fps, time base 1/90000
    audio: str | None = None  # audio encoder name, e.g. "aac" or "pcm_s16le"
    # audio starts this much after the first frame; negative: before it (the video starts
    # that much after 0, which MP4/MOV write as an edit list)
    audio_offset_seconds: float = 0.0
    audio_languages: tuple[str, ...] = ()  # one audio stream per language, tagged and titled
    subtitles: bool = False  # a few text cues (mov_text in mp4/mov, subrip elsewhere)
    subtitle_language: str = ""
    # (primaries, transfer, matrix, range), FFmpeg names; None: untagged (BT.601 limited)
    colour: tuple[str, str, str, str] | None = None
    rotation_degrees: int = 0  # display matrix, counter-clockwise degrees (a multiple of 90)
    mirrored: bool = False  # the display matrix mirrors left to right, before the rotation
    hdr10: bool = False  # mastering display and content light level SEI (libx265, libx264)
    crf: int | None = None  # x264/x265 quality; None: the encoder's default (23 / 28)
    cover_art: bool = False  # an attached picture (a JPEG) after the video stream
    font: bool = False  # a font attachment (as styled subtitles bring), Matroska only
    # the container's tags, e.g. (("title", "..."), ("creation_time", "2024-...Z")); in
    # MP4/MOV reverse-DNS names (com.apple.quicktime.make) are written as an iPhone does
    tags: tuple[tuple[str, str], ...] = ()
    timecode: str = ""  # the video's start timecode ("01:00:00:00"; MP4/MOV: a tmcd track)
    video_tags: tuple[tuple[str, str], ...] = ()  # the video stream's, e.g. (("language", "jpn"),)
    chapters: tuple[tuple[float, float, str], ...] = ()  # (start s, end s, title) each
    field_order: str = ""  # the video stream's field order tag ("tt", "bb", "tb", "bt")
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "fps", Fraction(self.fps))
        if self.n_frames < 1:
            raise ValueError(f"n_frames={self.n_frames}: expected at least 1")
        if self.n_frames > 2**INDEX_BITS:
            raise ValueError(f"n_frames={self.n_frames}: expected at most {2**INDEX_BITS}")
        _block_size(self.width, self.height)
        if self.fps <= 0:
            raise ValueError(f"fps={self.fps}: expected a positive rate")
        if self.gop < 1 or self.bframes < 0:
            raise ValueError(f"gop={self.gop}, bframes={self.bframes}: expected >= 1, >= 0")
        if self.open_gop and self.bframes == 0:
            raise ValueError("open_gop=True needs bframes > 0 (leading B-frames)")
        if self.audio_languages and self.audio is None:
            raise ValueError("audio_languages needs an audio codec (audio='aac', ...)")
        if self.rotation_degrees % 90:
            raise ValueError(f"rotation_degrees={self.rotation_degrees}: expected a multiple of 90")
        if self.field_order not in FIELD_ORDERS:
            raise ValueError(f"field_order={self.field_order!r}: expected one of {FIELD_ORDERS}")

    @property
    def video_start_pts(self) -> int:
        """The first frame's pts: 0, or the audio's lead when the audio starts first."""
        lead = max(0.0, -self.audio_offset_seconds)
        return round(Fraction(lead).limit_denominator(10**6) / self.time_base)

    @property
    def time_base(self) -> Fraction:
        """Video stream time base the clip is written with."""
        return _VFR_TIME_BASE if self.vfr else Fraction(1, self.fps.numerator)

    def frame_pts(self) -> list[int]:
        """Presentation timestamp of every frame, plus the end of the last, in ``time_base``
        (from :attr:`video_start_pts`)."""
        start = self.video_start_pts
        if not self.vfr:
            return [start + i * self.fps.denominator for i in range(self.n_frames + 1)]
        base = _VFR_TIME_BASE.denominator / self.fps  # ticks of one 1/fps frame
        rng = np.random.default_rng(self.seed)
        steps = rng.integers(0, len(_VFR_STEPS), size=self.n_frames)
        if self.n_frames >= len(_VFR_STEPS):  # every duration occurs at least once
            steps[: len(_VFR_STEPS)] = rng.permutation(len(_VFR_STEPS))
        pts = [start]
        for step in steps:
            pts.append(pts[-1] + round(float(base) * _VFR_STEPS[step]))
        return pts

    @property
    def duration_seconds(self) -> float:
        """From the first frame's start to the last frame's end."""
        pts = self.frame_pts()
        return float((pts[-1] - pts[0]) * self.time_base)


_DEFAULT_SPEC = ClipSpec()


def _encoder_options(spec: ClipSpec) -> dict[str, str]:
    """Private x264/x265 options pinning keyframes and B-frames to what ``spec`` asks."""
    params = {
        "keyint": str(spec.gop),
        "min-keyint": str(spec.gop),
        "scenecut": "0",  # no keyframes other than every `gop` frames
        "bframes": str(spec.bframes),
        "b-adapt": "0",  # always use `bframes` B-frames
        "open-gop": "1" if spec.open_gop else "0",
    }
    if spec.crf is not None:
        params["crf"] = str(spec.crf)
    if spec.codec == "libx264":  # x264 held to AVX2 where it matters: the same clip every time
        x264 = {"x264-params": ":".join(f"{k}={v}" for k, v in params.items())}
        return with_params(x264, x264_cpu_params(spec.codec))
    if spec.codec == "libx265":
        params["log-level"] = "error"
        return {"x265-params": ":".join(f"{k}={v}" for k, v in params.items())}
    return {}


def _add_video(out: av.container.OutputContainer, spec: ClipSpec) -> av.VideoStream:
    stream = out.add_stream(spec.codec, rate=spec.fps)
    if not isinstance(stream, av.VideoStream):
        raise ValueError(f"codec {spec.codec!r} makes a {stream.type} stream: expected video")
    stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, spec.pix_fmt
    stream.time_base = spec.time_base
    ctx = stream.codec_context
    ctx.time_base = spec.time_base
    ctx.framerate = spec.fps
    ctx.gop_size = spec.gop
    ctx.max_b_frames = spec.bframes
    if spec.field_order:  # a tag only: the frames are coded progressive
        ctx.field_order = FIELD_ORDERS.index(spec.field_order)
    if spec.timecode:
        stream.metadata["timecode"] = spec.timecode
    stream.metadata.update(dict(spec.video_tags))
    options: dict[str, object] = dict(_encoder_options(spec))
    for key, value in tag_stream(
        stream, spec.colour, spec.rotation_degrees, spec.hdr10, mirrored=spec.mirrored
    ).items():
        options[key] = f"{options[key]}:{value}" if key in options else value
    stream.options = options
    return stream


def _add_audio(out: av.container.OutputContainer, codec: str) -> av.AudioStream:
    stream = out.add_stream(codec, rate=AUDIO_SAMPLE_RATE, layout="stereo")
    if not isinstance(stream, av.AudioStream):
        raise ValueError(f"codec {codec!r} makes a {stream.type} stream: expected audio")
    stream.time_base = Fraction(1, AUDIO_SAMPLE_RATE)
    return stream


def _audio_frames(
    sample_format: str, start_pts: int, n_samples: int
) -> Iterator[tuple[Fraction, av.AudioFrame]]:
    """(start in seconds, frame) of stereo sine frames of 1024 samples (the last shorter)."""
    fmt = av.AudioFormat(sample_format)
    for first in range(0, n_samples, _AUDIO_FRAME_SAMPLES):
        n = min(_AUDIO_FRAME_SAMPLES, n_samples - first)
        t = np.arange(first, first + n) / AUDIO_SAMPLE_RATE
        wave = np.stack([0.25 * np.sin(2 * np.pi * hz * t) for hz in _AUDIO_TONES_HZ])
        if fmt.name.startswith("s16"):
            wave = (wave * 32767).astype(np.int16)
        elif fmt.name.startswith("s32"):
            wave = (wave * 2147483647).astype(np.int32)
        else:
            wave = wave.astype(np.float32)
        if not fmt.is_planar:
            wave = wave.T.reshape(1, -1)  # interleaved L R L R ...
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(wave), format=fmt.name, layout="stereo"
        )
        frame.sample_rate = AUDIO_SAMPLE_RATE
        frame.pts = start_pts + first
        frame.time_base = Fraction(1, AUDIO_SAMPLE_RATE)
        yield Fraction(start_pts + first, AUDIO_SAMPLE_RATE), frame


class _AudioFeed:
    """One audio stream of the clip, encoded in step with the video so packets interleave."""

    def __init__(
        self,
        out: av.container.OutputContainer,
        codec: str,
        spec: ClipSpec,
        language: str = "",
        *,
        default: bool = True,
    ) -> None:
        self._out = out
        self._stream = _add_audio(out, codec)
        if language:  # tagged streams: titled, the first marked default
            self._stream.metadata["language"] = language
            self._stream.metadata["title"] = f"raypipe {language}"
            if default:
                self._stream.disposition = av.stream.Disposition.default
        lead = max(0.0, -spec.audio_offset_seconds)  # audio before the video: to its end
        self._frames = _audio_frames(
            self._stream.codec_context.format.name,
            round(max(0.0, spec.audio_offset_seconds) * AUDIO_SAMPLE_RATE),
            round((spec.duration_seconds + lead) * AUDIO_SAMPLE_RATE),
        )
        self._pending: tuple[Fraction, av.AudioFrame] | None = None

    def write_until(self, end_seconds: Fraction | None) -> None:
        """Encode and mux frames starting before ``end_seconds``; None: all, then flush."""
        while True:
            if self._pending is None:
                self._pending = next(self._frames, None)
            if self._pending is None or (
                end_seconds is not None and self._pending[0] >= end_seconds
            ):
                break
            self._out.mux(self._stream.encode(self._pending[1]))
            self._pending = None
        if end_seconds is None:
            self._out.mux(self._stream.encode(None))


def _subtitle_packets(
    stream: av.stream.Stream, codec: str, duration_seconds: float
) -> list[av.Packet]:
    """Three text cues spread over the clip, each a quarter of it long."""
    packets = []
    quarter_ms = max(1, int(duration_seconds * 1000) // 4)
    for cue in range(3):
        text = f"raypipe cue {cue}".encode()
        if codec == "mov_text":  # 3GPP timed text: 16-bit big-endian length, then text
            text = len(text).to_bytes(2, "big") + text
        packet = av.Packet(text)
        packet.stream = stream
        packet.time_base = _SUBTITLE_TIME_BASE
        packet.pts = packet.dts = cue * quarter_ms
        packet.duration = quarter_ms
        packets.append(packet)
    return packets


FONT_BYTES = b"\x00\x01\x00\x00" + bytes(range(256)) * 4
"""What :attr:`ClipSpec.font` attaches: a TrueType header and filler (no player reads it)."""


def make_clip(
    path: str | os.PathLike[str],
    spec: ClipSpec = _DEFAULT_SPEC,
    *,
    faststart: bool = False,
) -> pathlib.Path:
    """Write the clip ``spec`` describes to ``path``; the suffix picks the container.

    Frame i shows ``frame_pattern(i, spec.width, spec.height, spec.seed)`` (as 16-bit RGB
    with a fine ramp in the low byte, :func:`~raypipe.testing.clip_traits.deep_frame_pattern`,
    for pixel formats deeper than 8 bits), converted with the matrix and range the clip is
    tagged with. With ``faststart`` an mp4/mov gets its index (moov) before the media data.
    """
    path = pathlib.Path(path)
    frame_pts = spec.frame_pts()
    options = {}
    flags = []
    if faststart and path.suffix.lower() in _FASTSTART_SUFFIXES:
        flags.append("+faststart")
    if any("." in k for k, _ in spec.tags) and path.suffix.lower() in _FASTSTART_SUFFIXES:
        flags.append("+use_metadata_tags")  # reverse-DNS keys, as a phone writes them
    if flags:
        options["movflags"] = "".join(flags)
    out = av.open(str(path), "w", options=options)
    out.metadata.update(dict(spec.tags))
    if spec.chapters:
        millis = Fraction(1, 1000)
        out.set_chapters(
            [
                {"id": i + 1, "start": round(start * 1000), "end": round(end * 1000),
                 "time_base": millis, "metadata": {"title": title}}
                for i, (start, end, title) in enumerate(spec.chapters)
            ]
        )  # fmt: skip
    deep = is_deep(spec.pix_fmt)
    convert = deep or spec.colour is not None
    reformatter = VideoReformatter()
    try:
        video = _add_video(out, spec)
        cover = write_cover_art(out, frame_pattern(0, 64, 32)) if spec.cover_art else []
        if spec.font:
            if path.suffix.lower() != ".mkv":
                raise ValueError("font=True: only Matroska holds attachments; write a .mkv")
            out.add_attachment("subtitles.ttf", "application/x-truetype-font", FONT_BYTES)
        audio = [
            _AudioFeed(out, spec.audio, spec, language, default=i == 0)
            for i, language in enumerate(spec.audio_languages or ("",))
            if spec.audio is not None
        ]
        subtitle_packets: list[av.Packet] = []
        if spec.subtitles:
            sub_codec = "mov_text" if path.suffix.lower() in _FASTSTART_SUFFIXES else "subrip"
            subtitles = out.add_mux_stream(sub_codec)
            subtitles.time_base = _SUBTITLE_TIME_BASE
            if spec.subtitle_language:  # a tagged subtitle stream is a forced one
                subtitles.metadata["language"] = spec.subtitle_language
                subtitles.disposition = av.stream.Disposition.forced
            subtitle_packets = _subtitle_packets(subtitles, sub_codec, spec.duration_seconds)
        out.start_encoding()
        out.mux(cover)
        for i in range(spec.n_frames):
            image = frame_pattern(i, spec.width, spec.height, spec.seed)
            if deep:
                frame = av.VideoFrame.from_ndarray(deep_frame_pattern(image, i), format="rgb48le")
            else:
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if convert:
                frame = to_stream_format(frame, spec.pix_fmt, spec.colour, reformatter)
            frame.pts, frame.time_base = frame_pts[i], spec.time_base
            frame.duration = frame_pts[i + 1] - frame_pts[i]
            out.mux(video.encode(frame))
            for feed in audio:  # interleave: audio up to the end of this frame
                feed.write_until(frame_pts[i + 1] * spec.time_base)
        out.mux(video.encode(None))
        for feed in audio:
            feed.write_until(None)
        for packet in subtitle_packets:
            out.mux(packet)
    finally:
        out.close()
    return path


CLIP_KINDS: dict[str, ClipSpec] = {
    "bframes_aac": ClipSpec(bframes=3, gop=12, audio="aac"),
    "ntsc": ClipSpec(fps=Fraction(30000, 1001), audio="aac"),
    # Verified (tests/testing/test_media_kit.py): the second and later keyframe packets
    # hold non-IDR I slices (NAL type 1, no type 5) and are followed in decode order by
    # B-frames that display before them (leading pictures referencing the previous GOP).
    "open_gop": ClipSpec(bframes=3, gop=10, open_gop=True),
    "single_keyframe": ClipSpec(gop=1000),
    "vfr": ClipSpec(vfr=True),
    "hevc_mov": ClipSpec(codec="libx265"),
    "odd_size": ClipSpec(width=198, height=110),
}
"""Small clips covering the awkward cases; write one with :func:`make_named_clip`."""

CLIP_SUFFIX: dict[str, str] = {
    "bframes_aac": ".mp4",
    "ntsc": ".mp4",
    "open_gop": ".mp4",
    "single_keyframe": ".mp4",
    "vfr": ".mp4",
    "hevc_mov": ".mov",
    "odd_size": ".mp4",
}
"""Container suffix each of :data:`CLIP_KINDS` is written with."""


def clip_kind_names() -> list[str]:
    """Names of :data:`CLIP_KINDS`, sorted (handy for ``pytest.mark.parametrize``)."""
    return sorted(CLIP_KINDS)


def make_named_clip(kind: str, directory: str | os.PathLike[str]) -> pathlib.Path:
    """Write ``CLIP_KINDS[kind]`` to ``directory/{kind}{CLIP_SUFFIX[kind]}``."""
    if kind not in CLIP_KINDS:
        raise ValueError(f"unknown clip kind {kind!r}: expected one of {clip_kind_names()}")
    return make_clip(pathlib.Path(directory) / f"{kind}{CLIP_SUFFIX[kind]}", CLIP_KINDS[kind])
