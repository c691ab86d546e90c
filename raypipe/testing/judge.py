"""What ``ffprobe`` (the independent judge) shows of a video file: the first video stream's
displayed size and rotation, colour tags, bit depth and chroma, timing, HDR metadata, field
order, timecode, language and title, every other stream with its language, title and
dispositions, and the container's tags and chapters.

Deliberately independent of raypipe's media code: pixel formats are read from their names
here, timing from ffprobe's own stream and packet fields.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

__all__ = [
    "ProbedStream",
    "ProbedVideo",
    "ffprobe_video",
    "pix_fmt_layout",
]

PathLike = str | os.PathLike[str]


def _ffprobe(args: list[str]) -> dict[str, Any]:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"ffprobe {' '.join(args)} failed: {result.stderr.strip()}")
    return dict(json.loads(result.stdout or "{}"))


_YUV = re.compile(r"^(?:yuvj|yuva|yuv)(4[1-4][0-4])p(\d+)?(?:le|be)?$")
_SEMI_PLANAR = {"nv12": ("4:2:0", 8), "nv21": ("4:2:0", 8), "nv16": ("4:2:2", 8),
                "p010le": ("4:2:0", 10), "p016le": ("4:2:0", 16),
                "p210le": ("4:2:2", 10)}  # fmt: skip
_RGB_DEPTH = {"rgb24": 8, "bgr24": 8, "bgr0": 8, "rgb0": 8, "0rgb": 8, "0bgr": 8, "gbrp": 8,
              "rgb48le": 16, "bgr48le": 16}  # fmt: skip


def pix_fmt_layout(pix_fmt: str) -> tuple[int, str]:
    """(bit depth, chroma) of an FFmpeg pixel format name, read from the name: chroma is
    ``4:2:0``, ``4:2:2``, ``4:4:4``... or ``RGB``; raises ValueError for a name it does
    not know."""
    m = _YUV.match(pix_fmt)
    if m:
        digits = m.group(1)
        return int(m.group(2) or 8), f"{digits[0]}:{digits[1]}:{digits[2]}"
    if pix_fmt in _SEMI_PLANAR:
        chroma, depth = _SEMI_PLANAR[pix_fmt]
        return depth, chroma
    if pix_fmt in _RGB_DEPTH:
        return _RGB_DEPTH[pix_fmt], "RGB"
    m = re.match(r"^gbrp(\d+)(?:le|be)$", pix_fmt)
    if m:
        return int(m.group(1)), "RGB"
    raise ValueError(f"pixel format {pix_fmt!r} is not one the judge knows")


@dataclass(frozen=True)
class ProbedStream:
    """A non-main stream as ffprobe shows it."""

    index: int
    kind: str  # "audio" | "subtitle" | "video" (attached pictures)
    codec: str
    language: str  # "und" (undetermined) when untagged, as MP4 writes it
    title: str  # the title tag, else an MP4/MOV handler name that is not FFmpeg's default
    dispositions: frozenset[str]


@dataclass(frozen=True)
class ProbedVideo:
    """A file's first (non-attached-picture) video stream, and its other streams."""

    format_name: str  # ffprobe's, e.g. "mov,mp4,m4a,3gp,3g2,mj2" or "matroska,webm"
    codec: str
    coded_width: int
    coded_height: int
    rotation: int  # ffprobe's side data rotation (degrees, counter-clockwise); 0 if none
    mirrored: bool  # the display matrix mirrors the picture (ffprobe's rotation leaves it out)
    pix_fmt: str
    primaries: str
    transfer: str
    matrix: str
    range: str
    avg_frame_rate: Fraction
    duration_seconds: float  # the stream's duration, else its packets' span (see ffprobe_video)
    stream_duration_seconds: float | None  # the stream's duration field, None when absent
    n_packets: int
    start_seconds: float
    hdr: dict[str, Any]  # first frame's side data by type name (HEVC SEI as ffprobe reads it)
    streams: tuple[ProbedStream, ...] = field(default=())
    format_tags: tuple[tuple[str, str], ...] = ()  # the container's tags, as ffprobe names them
    chapters: tuple[tuple[float, float, str], ...] = ()  # (start s, end s, title) each
    language: str = "und"  # the video stream's, as for ProbedStream
    title: str = ""
    timecode: str = ""  # the video's timecode tag, else a timecode (tmcd) stream's; "" if none
    field_order: str = ""  # ffprobe's: "progressive", "tt", "tb"...; "" when it shows none
    dispositions: frozenset[str] = frozenset()  # the video stream's, as for ProbedStream
    base_rate: Fraction = Fraction(0)  # ffprobe's r_frame_rate
    sar: Fraction = Fraction(1)  # ffprobe's sample_aspect_ratio (the container's first); 1 if none

    @property
    def displayed_size(self) -> tuple[int, int]:
        """(width, height) as a player shows it: the coded size turned by the rotation."""
        if round(self.rotation / 90) % 2:
            return self.coded_height, self.coded_width
        return self.coded_width, self.coded_height

    @property
    def display_aspect(self) -> Fraction:
        """Width over height of the picture as a player shows it: the coded size stretched
        by the sample aspect ratio, then turned by the rotation."""
        aspect = Fraction(self.coded_width, self.coded_height) * self.sar
        return 1 / aspect if round(self.rotation / 90) % 2 else aspect

    @property
    def bit_depth(self) -> int:
        return pix_fmt_layout(self.pix_fmt)[0]

    @property
    def chroma(self) -> str:
        return pix_fmt_layout(self.pix_fmt)[1]


def _tag(tags: dict[str, str], key: str) -> str:
    return next((v for k, v in tags.items() if k.lower() == key), "")


_DEFAULT_HANDLERS = ("SoundHandler", "VideoHandler", "SubtitleHandler", "TextHandler")


def _title(tags: dict[str, str]) -> str:
    handler = _tag(tags, "handler_name")
    return _tag(tags, "title") or ("" if handler in _DEFAULT_HANDLERS else handler)


def _rate(text: str) -> Fraction:
    num, _, den = text.partition("/")
    return Fraction(int(num), int(den)) if den and int(den) else Fraction(0)


def ffprobe_video(path: PathLike) -> ProbedVideo:
    """What ffprobe shows of ``path`` (see :class:`ProbedVideo`)."""
    path = os.fspath(path)
    doc = _ffprobe(
        ["-show_streams", "-show_format", "-show_chapters", "-show_entries",
         "packet=stream_index,pts_time,duration_time", path]
    )  # fmt: skip
    video = [
        s
        for s in doc.get("streams", [])
        if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")
    ]
    if not video:
        raise ValueError(f"{path} has no video stream")
    v = video[0]
    rotation, mirrored = 0, False
    for side in v.get("side_data_list", []):
        if "rotation" in side:
            rotation = int(side["rotation"])
        if "displaymatrix" in side:  # "\n00000000: a b u\n00000001: c d v\n..."
            rows = [line.split(":")[1].split() for line in side["displaymatrix"].split("\n")[1:3]]
            (a, b, _), (c, d, _) = ([int(x) for x in row] for row in rows)
            mirrored = a * d - b * c < 0
    video_packets = [p for p in doc.get("packets", []) if p.get("stream_index") == v["index"]]
    packets = [p for p in video_packets if p.get("pts_time") not in (None, "N/A")]
    starts = [float(p["pts_time"]) for p in packets]
    start = min(starts) if starts else 0.0
    if len(packets) < len(video_packets) and v.get("start_time") not in (None, "N/A"):
        start = float(v["start_time"])  # AVI: packets without pts; the stream starts at its dts
    ends = [float(p["pts_time"]) + float(p.get("duration_time") or 0) for p in packets]
    stream_duration = v.get("duration")
    fmt = str(doc.get("format", {}).get("format_name", ""))
    duration = max(ends) - min(starts) if starts else 0.0
    lengths = [p.get("duration_time") for p in video_packets]
    if len(packets) < len(video_packets) and all(d not in (None, "N/A") for d in lengths):
        duration = sum(float(str(d)) for d in lengths)  # MPEG-PS: packets without pts
    if stream_duration not in (None, "N/A") and "matroska" not in fmt and fmt != "mpeg":
        # MP4/MOV: the track's duration (ffprobe 5.1 reads no packet durations from an MP4
        # whose B-frames start before 0 but the sample table has them); Matroska's is the
        # DURATION tag, the stream's end time rather than its length; MPEG-PS stores none
        # (ffprobe estimates one from the bit rate)
        duration = float(str(stream_duration))
    frames = _ffprobe(
        ["-select_streams", str(v["index"]), "-show_frames", "-read_intervals", "%+#1",
         "-show_entries", "frame=side_data_list", path]
    ).get("frames", [{}])  # fmt: skip
    hdr = {
        str(side.get("side_data_type")): side
        for side in (frames[0] if frames else {}).get("side_data_list", [])
        if "light" in str(side.get("side_data_type", "")).lower()
        or "mastering" in str(side.get("side_data_type", "")).lower()
    }
    others = tuple(
        ProbedStream(
            index=int(s["index"]),
            kind=str(s.get("codec_type")),
            codec=str(s.get("codec_name")),
            language=_tag(s.get("tags", {}), "language") or "und",
            title=_title(s.get("tags", {})),
            dispositions=frozenset(k for k, on in s.get("disposition", {}).items() if on),
        )
        for s in doc.get("streams", [])
        if s is not v
    )
    timecodes = [_tag(s.get("tags", {}), "timecode") for s in [v, *doc.get("streams", [])]]
    return ProbedVideo(
        format_name=fmt,
        codec=str(v.get("codec_name")),
        coded_width=int(v["width"]),
        coded_height=int(v["height"]),
        rotation=rotation,
        mirrored=mirrored,
        pix_fmt=str(v.get("pix_fmt")),
        primaries=str(v.get("color_primaries", "unknown")),
        transfer=str(v.get("color_transfer", "unknown")),
        matrix=str(v.get("color_space", "unknown")),
        range=str(v.get("color_range", "unknown")),
        avg_frame_rate=_rate(str(v.get("avg_frame_rate", "0/1"))),
        duration_seconds=float(duration),
        stream_duration_seconds=(
            None if stream_duration in (None, "N/A") else float(str(stream_duration))
        ),
        n_packets=len(packets),
        start_seconds=start,
        hdr=hdr,
        streams=others,
        format_tags=tuple(sorted(doc.get("format", {}).get("tags", {}).items())),
        chapters=tuple(
            (float(c["start_time"]), float(c["end_time"]), _tag(c.get("tags", {}), "title"))
            for c in doc.get("chapters", [])
        ),
        language=_tag(v.get("tags", {}), "language") or "und",
        title=_title(v.get("tags", {})),
        timecode=next((t for t in timecodes if t), ""),
        field_order=str(v.get("field_order", "")),
        dispositions=frozenset(k for k, on in v.get("disposition", {}).items() if on),
        base_rate=_rate(str(v.get("r_frame_rate", "0/1"))),
        sar=_rate(str(v.get("sample_aspect_ratio", "1:1")).replace(":", "/")) or Fraction(1),
    )
