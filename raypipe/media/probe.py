"""Probe: one demux-only pass over a video that yields a :class:`VideoInfo`.

Packets are read without decoding; their presentation timestamps sorted give every frame's
pts in display order, and their key flags give the keyframes. One frame is decoded at the
end to read the display rotation and to prove a decoder exists for the stream, so an
unsupported codec fails here rather than in a worker.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import av

from raypipe.errors import (
    CorruptVideoError,
    EmptyVideoError,
    NoVideoStreamError,
    UnsupportedVideoError,
)
from raypipe.media.source import open_input


@dataclass(frozen=True, kw_only=True)
class StreamInfo:
    """A non-video stream that is copied into the output (audio, subtitles)."""

    index: int
    kind: str  # "audio" | "subtitle"
    codec: str
    time_base_num: int
    time_base_den: int
    start_pts: int | None


@dataclass(frozen=True, kw_only=True)
class VideoInfo:
    """What raypipe knows about one input video; plain data, picklable and JSON-able."""

    uri: str
    video_id: str
    format_name: str
    stream_index: int
    codec: str
    width: int
    height: int
    pix_fmt: str | None
    time_base_num: int
    time_base_den: int
    rate_num: int
    rate_den: int
    rotation_degrees: int
    pts: tuple[int, ...]  # every frame, display order, in time_base units
    keyframe_pts: tuple[int, ...]  # sorted
    streams: tuple[StreamInfo, ...] = ()

    @property
    def time_base(self) -> Fraction:
        return Fraction(self.time_base_num, self.time_base_den)

    @property
    def rate(self) -> Fraction:
        return Fraction(self.rate_num, self.rate_den)

    @property
    def n_frames(self) -> int:
        return len(self.pts)

    @property
    def start_seconds(self) -> float:
        return float(self.pts[0] * self.time_base)

    @property
    def duration_seconds(self) -> float:
        """First frame to the end of the last one (its duration taken as 1/rate)."""
        last = self.pts[-1] * self.time_base + (1 / self.rate if self.rate else 0)
        return float(last - self.pts[0] * self.time_base)

    def to_dict(self, *, with_pts: bool = True) -> dict[str, Any]:
        d = asdict(self)
        if not with_pts:
            d.pop("pts")
        d["n_frames"] = self.n_frames
        d["duration_seconds"] = self.duration_seconds
        return d


def make_video_id(uri: str) -> str:
    """A stable id for ``uri``: a readable stem plus a short hash of the whole URI."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", uri.rstrip("/").rsplit("/", 1)[-1]) or "video"
    digest = hashlib.sha1(uri.encode()).hexdigest()[:8]
    return f"{stem[:48]}-{digest}"


def probe(uri: str, *, video_id: str | None = None) -> VideoInfo:
    """Read ``uri``'s streams and every video packet's timestamps without decoding.

    Raises :class:`~raypipe.errors.InputError` subclasses for inputs raypipe cannot
    process: missing, not a video, no video stream, zero frames, no timestamps, no decoder.
    """
    with open_input(uri) as container:
        video = _pick_video_stream(container, uri)
        pts, keyframes = _scan_packets(container, video, uri)
        if not pts:
            raise EmptyVideoError(
                f"input '{uri}' has a video stream with zero frames; nothing to process"
            )
        rotation = _first_frame_rotation(container, video, uri)
        tb = video.time_base
        if tb is None:
            raise UnsupportedVideoError(f"input '{uri}': video stream has no time base")
        rate = video.average_rate or video.guessed_rate or video.base_rate or Fraction(0)
        streams = tuple(
            StreamInfo(
                index=s.index,
                kind=s.type,
                codec=s.codec_context.name if s.codec_context else "unknown",
                time_base_num=s.time_base.numerator if s.time_base else 1,
                time_base_den=s.time_base.denominator if s.time_base else 1,
                start_pts=s.start_time,
            )
            for s in container.streams
            if s.type in ("audio", "subtitle")
        )
        pix_fmt = video.codec_context.pix_fmt
        return VideoInfo(
            uri=uri,
            video_id=video_id or make_video_id(uri),
            format_name=container.format.name,
            stream_index=video.index,
            codec=video.codec_context.name,
            width=video.codec_context.width,
            height=video.codec_context.height,
            pix_fmt=pix_fmt,
            time_base_num=tb.numerator,
            time_base_den=tb.denominator,
            rate_num=Fraction(rate).numerator,
            rate_den=Fraction(rate).denominator,
            rotation_degrees=rotation,
            pts=tuple(sorted(pts)),
            keyframe_pts=tuple(sorted(keyframes)),
            streams=streams,
        )


def _pick_video_stream(container: av.container.InputContainer, uri: str) -> Any:
    candidates = [
        s
        for s in container.streams.video
        if not (s.disposition & av.stream.Disposition.attached_pic)
    ]
    if not candidates:
        kinds = ", ".join(sorted({str(s.type) for s in container.streams})) or "none"
        raise NoVideoStreamError(
            f"input '{uri}' has no video stream (streams found: {kinds}); raypipe processes video"
        )
    return candidates[0]


def _scan_packets(container: Any, video: Any, uri: str) -> tuple[list[int], list[int]]:
    pts: list[int] = []
    keyframes: list[int] = []
    try:
        for packet in container.demux(video):
            if packet.size == 0 or packet.is_discard:
                continue  # flush packets; samples the demuxer drops (edit lists)
            if packet.pts is None:
                raise UnsupportedVideoError(
                    f"input '{uri}' has video packets without timestamps (a raw elementary "
                    "stream?); remux it into MP4 or MKV first, e.g. `ffmpeg -i IN -c copy OUT.mkv`"
                )
            pts.append(packet.pts)
            if packet.is_keyframe:
                keyframes.append(packet.pts)
    except av.error.FFmpegError as e:
        raise CorruptVideoError(f"input '{uri}' is corrupt: demuxing failed ({e})") from e
    if len(set(pts)) != len(pts):
        raise UnsupportedVideoError(
            f"input '{uri}' has duplicate video timestamps; frames cannot be ordered exactly. "
            "Remux it with fresh timestamps first"
        )
    if pts and not keyframes:
        raise CorruptVideoError(f"input '{uri}' has no keyframe; it cannot be decoded")
    return pts, keyframes


def _first_frame_rotation(container: Any, video: Any, uri: str) -> int:
    """Decode the first frame: proves a decoder exists and reads the display rotation."""
    name = video.codec_context.name if video.codec_context is not None else None
    try:
        decodable = name is not None and av.codec.Codec(name, "r") is not None
    except (av.codec.codec.UnknownCodecError, ValueError):
        decodable = False
    if not decodable:
        raise UnsupportedVideoError(
            f"input '{uri}': its video stream's codec ({name or 'unknown to FFmpeg'}) has no "
            "decoder in this FFmpeg build; convert it first, e.g. "
            "`ffmpeg -i IN -c:v libx264 -c:a copy OUT.mkv`"
        )
    try:
        container.seek(0, stream=video, backward=True)
    except av.error.FFmpegError:
        pass  # some inputs do not seek; the decode below then reads from where demux stopped
    try:
        for frame in container.decode(video):
            return int(frame.rotation or 0)
    except av.error.FFmpegError as e:
        raise CorruptVideoError(f"input '{uri}': its first frame does not decode ({e})") from e
    raise CorruptVideoError(f"input '{uri}': no frame decodes although packets exist")
