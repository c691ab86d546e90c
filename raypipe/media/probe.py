"""Probe: a video's frame timing and keyframes, from its index or a demux pass.

MP4/MOV keep every sample's timing in their ``moov`` box: there the timestamps come from
FFmpeg's index plus the composition offsets (:mod:`raypipe.media.mp4_index`), reading a
small share of the file, and the first packets are checked against them. Matroska/WebM
written by FFmpeg keep a cue point per keyframe: over the network (where a demux pass
would fetch the whole file), for a constant frame rate every frame's timestamp follows
from the grid of the track's default duration (:mod:`raypipe.media.mkv_scan`), checked
against the first packets and the blocks after the last keyframe, which give the end.
Elsewhere (local MKV, TS, AVI, fragmented MP4, variable-rate or other muxers' MKV...)
packets are read without decoding. Either way the presentation timestamps sorted give
every frame's pts in display order, the key flags give the keyframes, and the last frame's
duration is kept (so the output's last frame keeps it).

One frame is decoded at the end to read what the pictures are
(:class:`~raypipe.media.picture.PictureFormat`: display rotation, colour tags, pixel
format, HDR metadata) and to prove a decoder exists for the stream, so an unsupported codec
fails here rather than in a worker. Audio and subtitle streams are described with their
language, title and dispositions, and attached pictures (cover art) are listed so assembly
can carry them.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import re
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, cast

import av
import numpy as np
from av.sidedata.sidedata import Type as SideDataType

from raypipe.errors import (
    CorruptVideoError,
    EmptyVideoError,
    NoVideoStreamError,
    UnsupportedVideoError,
)
from raypipe.media.colour import ColourTags, hdr_of_frame
from raypipe.media.frame_clock import frame_step
from raypipe.media.jumps import (
    BACK_SECONDS,
    Jump,
    clock_may_jump,
    closed,
    find_jumps,
    jump_back_problem,
)
from raypipe.media.jumps import describe as describe_jumps
from raypipe.media.mkv_index import read_layout
from raypipe.media.mkv_scan import scan_cues
from raypipe.media.mp4_index import IndexScan, scan_index
from raypipe.media.picture import PictureFormat, normalise_rotation, orientation_of
from raypipe.media.source import is_local, open_binary, open_input


@dataclass(frozen=True, kw_only=True)
class StreamInfo:
    """A stream that is copied into the output (audio, subtitles, attached pictures,
    Matroska attachments where the output holds them).

    ``kind``: ``"audio"``, ``"subtitle"``, ``"attached_pic"`` (cover art: a one-picture
    video stream) or ``"attachment"`` (a Matroska attachment, e.g. a font: ``codec`` is its
    MIME type, ``title`` its file name). ``language``/``title``: the stream's tags (``""``
    when absent);
    ``dispositions``: FFmpeg's disposition names set on it (``default``, ``forced``...).
    """

    index: int
    kind: str
    codec: str
    time_base_num: int
    time_base_den: int
    start_pts: int | None
    language: str = ""
    title: str = ""
    dispositions: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class VideoInfo:
    """What raypipe knows about one input video; plain data, picklable and JSON-able."""

    uri: str
    video_id: str
    format_name: str
    stream_index: int
    codec: str
    width: int  # coded (as stored, before rotation), px
    height: int
    pix_fmt: str | None
    time_base_num: int
    time_base_den: int
    rate_num: int  # average frame rate: frames / (first pts to the last frame's end)
    rate_den: int
    rotation_degrees: int  # display rotation, counter-clockwise, 0/90/180/270
    pts: tuple[int, ...]  # every frame, display order, in time_base units
    keyframe_pts: tuple[int, ...]  # sorted
    streams: tuple[StreamInfo, ...] = ()
    last_frame_duration: int = 0  # time_base units; 0: unknown (then taken as 1/rate)
    picture: PictureFormat | None = None  # None: 8-bit 4:2:0, untagged, upright
    tags: tuple[tuple[str, str], ...] = ()  # the container's tags, as the demuxer names them
    timecode: str = ""  # the video's start timecode ("01:00:00:00"), "" when none
    video_tags: tuple[tuple[str, str], ...] = ()  # the video stream's language and title
    chapters: tuple[tuple[float, float, str], ...] = ()  # (start s, end s, title) each
    left_out: tuple[str, ...] = ()  # streams the output does not get, and why (left_out_stream)
    field_order: str = ""  # FIELD_ORDERS: "progressive", "tt"...; "" when the stream says none
    jumps: tuple[Jump, ...] = ()  # the source clock's jumps, closed in pts (media.jumps)

    @property
    def picture_format(self) -> PictureFormat:
        """:attr:`picture`, or what an untagged upright 8-bit 4:2:0 stream of this size is."""
        if self.picture is not None:
            return self.picture
        return PictureFormat(
            coded_width=self.width, coded_height=self.height, pix_fmt=self.pix_fmt or "yuv420p"
        )

    @property
    def end_pts(self) -> int:
        """The end of the last frame (its pts plus its duration), in time_base units."""
        if self.last_frame_duration > 0:
            return self.pts[-1] + self.last_frame_duration
        if self.rate:
            return self.pts[-1] + max(1, round(1 / (self.rate * self.time_base)))
        return self.pts[-1] + 1

    @property
    def time_base(self) -> Fraction:
        return Fraction(self.time_base_num, self.time_base_den)

    @functools.cached_property
    def frame_ticks(self) -> Fraction:
        """Time base ticks of one frame at the video's rate where its frames can be counted
        in frames (:func:`~raypipe.media.frame_clock.frame_step`: a constant rate, such as
        MP4's 512 ticks of 1/12800 at 25 fps, or Matroska's 1001/30 milliseconds at 29.97
        fps, whose frame times are rounded to the millisecond), else 1 (a variable rate that
        puts two frames in one frame's time, or no rate). An encoder whose bitstream carries
        its time base counts in frames where it is above 1
        (:func:`~raypipe.media.encode.encoder_clock`)."""
        return frame_step(self.pts, self.rate, self.time_base)

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
        """First frame's start to the last frame's end."""
        return float((self.end_pts - self.pts[0]) * self.time_base)

    def to_dict(self, *, with_pts: bool = True) -> dict[str, Any]:
        d = asdict(self)
        if not with_pts:
            d.pop("pts")
        d["n_frames"] = self.n_frames
        d["duration_seconds"] = self.duration_seconds
        d["picture"] = self.picture_format.to_dict()
        return d


def make_video_id(uri: str) -> str:
    """A stable id for ``uri``: a readable stem plus a short hash of the whole URI."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", uri.rstrip("/").rsplit("/", 1)[-1]) or "video"
    digest = hashlib.sha1(uri.encode("utf-8", "surrogateescape")).hexdigest()[:8]  # a name's bytes
    return f"{stem[:48]}-{digest}"


def probe(
    uri: str, *, video_id: str | None = None, use_index: bool = True, grid_local: bool = False
) -> VideoInfo:
    """Read ``uri``'s streams and every video frame's timestamps without decoding: from
    the container's index where it has one (``use_index``), else by reading every packet.

    An MP4/MOV index lists every frame. Matroska's cues list only keyframes, and the frames
    between them are inferred from the frame grid, which cannot see frames a recorder
    dropped between two keyframes (the decode task then stops with a typed error): so the
    grid is used only where reading every packet is costly, for inputs over the network
    (HTTP, object storage), and for local files only with ``grid_local``.

    Raises :class:`~raypipe.errors.InputError` subclasses for inputs raypipe cannot
    process: missing, not a video, no video stream, zero frames, no timestamps, no decoder.
    """
    if use_index:
        try:
            return _probe(uri, video_id, use_index=True, grid_local=grid_local)
        except _IndexMismatch:
            pass
    return _probe(uri, video_id, use_index=False)


class _IndexMismatch(Exception):
    """The container's index disagrees with its first packets: read every packet."""


def _probe(
    uri: str, video_id: str | None, *, use_index: bool, grid_local: bool = False
) -> VideoInfo:
    with open_input(uri, block_size=PROBE_BLOCK_BYTES) as container:
        video = pick_video_stream(container, uri)
        indexed = _scan_index(container, video, uri, grid_local) if use_index else None
        cut = 0  # packets the file ends inside (a recording cut off)
        if indexed is not None:
            pts, keyframes, last_duration = indexed
        else:
            pts, keyframes, last_duration, cut = _scan_packets(container, video, uri)
        if not pts:
            raise EmptyVideoError(
                f"input '{uri}' has a video stream with zero frames; nothing to process"
            )
        tb = video.time_base
        if tb is None:
            raise UnsupportedVideoError(f"input '{uri}': video stream has no time base")
        pts.sort()
        jumps = find_jumps(pts, Fraction(tb)) if clock_may_jump(container) else ()
        if jumps:  # the frames on the closed timeline (raypipe.media.jumps)
            pts = [closed(p, jumps) for p in pts]
            keyframes = [closed(k, jumps) for k in keyframes]
        nominal = video.average_rate or video.guessed_rate or video.base_rate or Fraction(0)
        end = _container_end(container, video)
        later = end is not None and end > pts[-1] and _disagree(end, pts[-1] + last_duration, tb)
        if later and indexed is None:  # a fragmented MP4's header: of the whole recording?
            cut = max(cut, _listed_past_end(video, uri))
        if later and not cut:
            last_duration = end - pts[-1]
        elif last_duration <= 0:
            last_duration = _guess_last_duration(pts, Fraction(nominal), Fraction(tb))
        else:
            last_duration = _rounded_frame(last_duration, Fraction(nominal), Fraction(tb))
            last_duration = _plausible_last(last_duration, pts)
        picture, first_pts = _first_frame_picture(container, video, uri, earliest=pts[0])
        if first_pts is not None:
            first_pts = closed(first_pts, jumps)
        undecodable = _before_first_frame(pts, first_pts, stamped_by_order(container, video))
        if undecodable:
            pts = pts[undecodable:]
            keyframes = [k for k in keyframes if k >= pts[0]]
        rate = _average_rate(len(pts), pts[-1] + last_duration - pts[0], Fraction(tb), nominal)
        streams = tuple(_stream_info(s) for s in container.streams if _is_copied(s))
        pix_fmt = picture.pix_fmt
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
            rotation_degrees=picture.rotation_degrees,
            pts=tuple(pts),
            keyframe_pts=tuple(sorted(keyframes)),
            streams=streams,
            last_frame_duration=last_duration,
            picture=picture,
            tags=tuple(container.metadata.items()),
            timecode=video_timecode(video),
            video_tags=tuple(
                (k, str(v)) for k, v in video.metadata.items() if k.lower() in ("language", "title")
            ),
            chapters=tuple(
                (
                    float(c["start"] * c["time_base"]),
                    float(c["end"] * c["time_base"]),
                    str(c["metadata"].get("title", "")),
                )
                for c in container.chapters()
            ),
            left_out=tuple(filter(None, (left_out_stream(s, video) for s in container.streams)))
            + _side_alpha_note(video)
            + _undecodable_note(undecodable, pts[0] * tb)
            + _cut_short_note(cut, (pts[-1] + last_duration) * tb)
            + describe_jumps(jumps, Fraction(tb)),
            field_order=field_order_name(video),
            jumps=jumps,
        )


def left_out_stream(stream: Any, processed: Any) -> str:
    """Why the output does not get ``stream`` (``processed``: the video stream raypipe
    processes), as warnings and ``raypipe probe`` say it, or ``""`` when it gets it (audio,
    subtitles, cover art, and a timecode track: the timecode is kept as the video's)."""
    if stream is processed or _is_copied(stream) or video_timecode(stream):
        return ""
    if is_chapter_track(stream):
        return ""  # its chapters are the container's: they are kept as chapters
    codec = codec_label(stream)
    if is_soundless(stream):
        return (
            f"stream {stream.index} (audio {codec}): FFmpeg reads no sound in it (no sample "
            "rate or channels: a recording's unused track?)"
        )
    if stream.type == "video":
        what = f"video {codec} {stream.width}x{stream.height}"
        return f"stream {stream.index} ({what}): raypipe processes one video stream"
    return f"stream {stream.index} ({f'{stream.type} {codec}'.strip()}): not copied"


_DISCARD_ALL = 48  # FFmpeg's AVDISCARD_ALL


def is_chapter_track(stream: Any) -> bool:
    """Whether ``stream`` is an MP4/MOV chapter track: FFmpeg reads its titles as the
    container's chapters and shows the track as a data stream it discards (a QuickTime text
    track; ffmpeg's own MP4 outputs with chapters have one)."""
    return (
        stream.type == "data"
        and getattr(stream, "discard", None) == _DISCARD_ALL
        and "mov" in stream.container.format.name
        and bool(stream.container.chapters())
    )


def _side_alpha_note(video: Any) -> tuple[str, ...]:
    """The line the run shows for a WebM video whose alpha channel rides beside the picture
    (``alpha_mode`` 1: VP8/VP9 with transparency, as browsers and editors write overlays),
    which FFmpeg's own VP8/VP9 decoders do not read; none for other videos (an alpha
    component in the decoded format has its own line: ``encode.fidelity_notes``)."""
    if str(video.metadata.get("alpha_mode", "")) != "1":
        return ()
    return (
        f"stream {video.index}'s alpha channel (transparency, stored beside its "
        f"{codec_label(video)} picture): outputs have none, and models get RGB",
    )


def codec_label(stream: Any) -> str:
    """``stream``'s codec as ffprobe names it (``mp3``, ``ass``), not its decoder's name
    (``mp3float``, ``ssa``), which messages showed (a sweep); ``""`` without a codec."""
    ctx = stream.codec_context
    if ctx is None:
        return ""
    try:
        return str(ctx.codec.canonical_name)
    except (AttributeError, ValueError):
        return str(ctx.name)


def is_attached_pic(stream: Any) -> bool:
    """Whether ``stream`` is cover art: a one-picture video stream marked attached_pic."""
    return stream.type == "video" and bool(stream.disposition & av.stream.Disposition.attached_pic)


def _is_copied(stream: Any) -> bool:
    # attachments go into Matroska outputs
    if is_soundless(stream):
        return False
    return stream.type in ("audio", "subtitle", "attachment") or is_attached_pic(stream)


def is_soundless(stream: Any) -> bool:
    """Whether ``stream`` is audio FFmpeg found no sample rate or channels for: a broadcast
    recording's unused track (a second language's, listed with no packets), which no
    output can hold (``ffmpeg -map 0`` fails on it)."""
    ctx = stream.codec_context
    return stream.type == "audio" and (ctx is None or not ctx.channels or not ctx.sample_rate)


def _stream_info(s: Any) -> StreamInfo:
    attached = s.type == "video"
    names = [str(d.name) for d in av.stream.Disposition if d.value and s.disposition & d]
    return StreamInfo(
        index=s.index,
        kind="attached_pic" if attached else s.type,
        codec=(str(s.mimetype) if s.type == "attachment" else (codec_label(s) or "unknown")),
        time_base_num=s.time_base.numerator if s.time_base else 1,
        time_base_den=s.time_base.denominator if s.time_base else 1,
        start_pts=s.start_time,
        language=str(s.metadata.get("language", "")),
        title=str(s.name if s.type == "attachment" else s.metadata.get("title", "")),
        dispositions=tuple(names),
    )


def _container_end(container: Any, video: Any) -> int | None:
    """Where the stream's presentation ends (time base units) by the container's header,
    for MP4/MOV (track durations and edit lists are exact there). Their packet durations
    are decode-order sample durations, which with B-frames and a variable frame rate are
    not the last shown frame's; other containers give display durations or none."""
    if "mp4" not in container.format.name and "mov" not in container.format.name:
        return None
    if video.duration is None or video.start_time is None:
        return None
    return int(video.start_time + video.duration)


_HEADER_ROUNDING = Fraction(2, 1000)  # MP4/MOV edit lists are in the movie's time scale


def _disagree(container_end: int, packet_end: int, tb: Fraction) -> bool:
    """Whether the container's end and the last packet's differ by more than the header's
    rounding (MP4 keeps edit lists in milliseconds or 1/600 s): then the packet's duration
    is a decode-order one, not the last shown frame's. Otherwise the packet's is exact."""
    return abs(container_end - packet_end) * tb > _HEADER_ROUNDING


def _guess_last_duration(pts: list[int], rate: Fraction, tb: Fraction) -> int:
    """The last frame's duration when its packet has none: the frame before's, else
    1/rate, else one tick."""
    if len(pts) > 1:
        return pts[-1] - pts[-2]
    if rate and tb:
        return max(1, round(1 / (rate * tb)))
    return 1


def _plausible_last(duration: int, pts: list[int]) -> int:
    """The last packet's ``duration``, or the step before the last frame where it is under
    half the frames' median step: a container whose durations are wrong (a Matroska file
    whose DefaultDuration says 1 ms for frames 40 ms apart) made the video's average rate
    25.497 fps and its MP4 output a frame of 1 ms short; ``ffmpeg``'s transcode keeps 25."""
    if len(pts) < 3:
        return duration
    step = float(np.median(np.diff(np.asarray(pts[-64:], dtype=np.int64))))
    return pts[-1] - pts[-2] if duration * 2 < step else duration


_MAX_RATIONAL = 2**31 - 1  # FFmpeg's AVRational holds int32


def _rounded_frame(duration: int, nominal: Fraction, tb: Fraction) -> int:
    """The last packet's ``duration`` (ticks of ``tb``), or the ``nominal`` rate's frame
    duration rounded to a tick where the packet's is that duration cut to a tick: a
    23.976 fps Matroska file times frames in milliseconds, and FFmpeg gives its last
    packet 41 ms for 41.708 (its default duration), so its average rate read as 23.988
    (16000/667) and its output lasted a millisecond less than its source (2.001 against
    2.002 s, as ffprobe shows both). Only for times in milliseconds (Matroska, WebM, FLV,
    ASF): an MP4's or a TS's last packet says its own duration exactly."""
    if not nominal or tb != Fraction(1, 1000):
        return duration
    step = 1 / (nominal * tb)
    if step.denominator != 1 and abs(duration - step) < 1:
        return round(step)
    return duration


def _average_rate(n_frames: int, ticks: int, tb: Fraction, nominal: Any) -> Fraction:
    """Frames per second over the stream's whole duration (first pts to the last end)."""
    if ticks <= 0 or not tb:
        return Fraction(nominal or 0)
    rate = Fraction(n_frames) / (ticks * tb)
    if rate.numerator > _MAX_RATIONAL or rate.denominator > _MAX_RATIONAL:
        rate = rate.limit_denominator(1_000_000)
    return rate


FIELD_ORDERS = ("", "progressive", "tt", "bb", "tb", "bt")
"""FFmpeg's field orders (``AVFieldOrder``, 0 unknown) by the names ffprobe prints."""


def field_order(video: Any) -> int:
    """A video stream's field order (``AVFieldOrder``: an index of :data:`FIELD_ORDERS`, 0
    unknown). FFmpeg leaves a DV stream's unknown; standard-definition DV (480 and 576
    lines, IEC 61834) is interlaced bottom field first, as its decoder flags every frame,
    so it is ``bb``: written as unknown, the output was tagged progressive, which tells a
    player not to deinterlace a camcorder's interlaced picture."""
    order = video.codec_context.field_order or 0
    ctx = video.codec_context
    if not order and ctx.name == "dvvideo" and ctx.height in (480, 576):
        return FIELD_ORDERS.index("bb")
    return order if 0 <= order < len(FIELD_ORDERS) else 0


def field_order_name(video: Any) -> str:
    """A video stream's field order by ffprobe's name (:data:`FIELD_ORDERS`), ``""`` unknown
    (:func:`field_order`)."""
    return FIELD_ORDERS[field_order(video)]


def video_timecode(video: Any) -> str:
    """A video stream's start timecode tag (MOV's ``tmcd`` track shows as one), or ``""``."""
    return next((str(v) for k, v in video.metadata.items() if k.lower() == "timecode"), "")


def pick_video_stream(container: av.container.InputContainer, uri: str) -> Any:
    """The video stream raypipe processes, of those that are not an attached picture: the
    one ``ffmpeg`` takes without ``-map``, the largest picture, a stream marked default
    ahead of any other of up to 5 million pixels more (FFmpeg's score), the first of equals.
    The first stream alone, as before, processed a small second angle or preview track
    listed before the main picture and left the main one out."""
    candidates = [s for s in container.streams.video if not is_attached_pic(s)]
    if not candidates:
        kinds = ", ".join(sorted({str(s.type) for s in container.streams})) or "none"
        raise NoVideoStreamError(
            f"input '{uri}' has no video stream (streams found: {kinds}); raypipe processes video"
        )

    def score(stream: Any) -> int:
        ctx = stream.codec_context
        area = (ctx.width * ctx.height) if ctx is not None else 0
        default = bool(stream.disposition & av.stream.Disposition.default)
        return area + 5_000_000 * default

    return max(candidates, key=score)  # max keeps the first of equal scores


PROBE_BLOCK_BYTES = 1 << 16
"""Bytes fetched per read miss when probing a remote input: the probe jumps between the
file's header, its index and its first frames, so small reads cost least."""
_CHECKED_PACKETS = 16  # packets an index is checked against before it is trusted


def _scan_index(
    container: Any, video: Any, uri: str, grid_local: bool = False
) -> tuple[list[int], list[int], int] | None:
    """:func:`_scan_packets`'s result from the container's index (MP4/MOV: the ``moov``
    box; Matroska/WebM: the cues and the frame grid), reading a small share of the file,
    or ``None`` for containers and indexes raypipe cannot read. The first packets are
    demuxed and must agree with it (else :class:`_IndexMismatch`)."""
    formats = container.format.name.split(",")
    if "mov" in formats:
        scan = _scan_mp4(container, video, uri)
    elif ("matroska" in formats or "webm" in formats) and (grid_local or not is_local(uri)):
        scan = _scan_matroska(container, video, uri)
    else:
        return None
    if scan is None:
        return None
    _check_distinct(uri, scan.pts, Fraction(video.time_base), container.format.name)
    keyframes = [p for p, key in zip(scan.pts, scan.keyframe) if key]
    if not keyframes and not scan.hidden_keyframe:
        raise CorruptVideoError(f"input '{uri}' has no keyframe; it cannot be decoded")
    return list(scan.pts), keyframes, scan.last_duration


def _scan_mp4(container: Any, video: Any, uri: str) -> IndexScan | None:
    """The ``moov`` box's scan, its first packets checked against the demuxer's; a file
    shorter than its index says (a download or copy cut short) is a
    :class:`CorruptVideoError` here, before any chunk is planned."""
    with open_binary(uri, block_size=PROBE_BLOCK_BYTES) as f:
        scan = scan_index(video, f)
        size = f.seek(0, 2)
    if scan is None:
        return None
    entries = [e for s in container.streams for e in s.index_entries]
    end = max((e.pos + e.size for e in entries), default=0)
    if end > size:
        raise CorruptVideoError(
            f"input '{uri}' is truncated: its index lists media up to byte {end}, the file "
            f"ends at byte {size} (a download or copy cut short?). Fetch it again, or keep "
            "what decodes with `ffmpeg -i IN -c:v libx264 -crf 18 -c:a copy OUT.mkv`"
        )
    expected = list(zip(scan.pts, scan.keyframe))[:_CHECKED_PACKETS]
    seen = []
    try:
        for packet in container.demux(video):
            if packet.size and not packet.is_discard:
                seen.append((packet.pts, bool(packet.is_keyframe)))
                if len(seen) == len(expected):
                    break
    except av.error.FFmpegError as e:
        raise CorruptVideoError(f"input '{uri}' is corrupt: demuxing failed ({e})") from e
    if seen != expected:
        raise _IndexMismatch
    return scan


def _scan_matroska(container: Any, video: Any, uri: str) -> IndexScan | None:
    """The cues' scan (:func:`~raypipe.media.mkv_scan.scan_cues`: the first packets are
    demuxed, the last blocks read, and both checked); :class:`_IndexMismatch` when they
    disagree."""
    ordinal = [s.index for s in container.streams.video].index(video.index)
    with open_binary(uri, block_size=PROBE_BLOCK_BYTES) as f:
        layout = read_layout(f, ordinal)
        if layout is None:
            return None
        try:
            scan = scan_cues(container, video, f, layout)
        except av.error.FFmpegError as e:
            raise CorruptVideoError(f"input '{uri}' is corrupt: demuxing failed ({e})") from e
    if scan is None:
        raise _IndexMismatch  # the container has been read from: the demux pass reopens it
    return scan


DECODE_ORDER_ONLY = frozenset({"avi"})
"""Containers that store when each frame is decoded and not when it is shown (AVI: one tick
per frame, in decode order): FFmpeg's demuxer makes a pts up for their packets."""
_PTS_NOT_REORDERED = frozenset({"h264", "hevc", "vvc"})
"""Codecs whose made-up pts are not the frames' places on screen: FFmpeg's demuxer knows no
frame types for them and skips its B-frame reordering (its MPEG-4 Part 2 and MPEG-2 pts are
right)."""


def stamped_by_order(container: Any, stream: Any) -> bool:
    """Whether ``stream``'s frames are timed by their place in the decoder's output (display
    order) on the grid of the packets' decode times, as players show them: H.264, HEVC or
    VVC in a :data:`DECODE_ORDER_ONLY` container (:func:`stamped_frames`)."""
    ctx = stream.codec_context
    return (
        container.format.name in DECODE_ORDER_ONLY
        and ctx is not None
        and ctx.name in _PTS_NOT_REORDERED
    )


def whole_packets(
    container: Any, streams: Any, cut: list[av.Packet] | None = None
) -> Iterator[av.Packet]:
    """``container.demux(streams)`` less the packets a file cut short ends inside: a packet
    the demuxer could read only part of (it flags it corrupt: a recording cut off, as a
    fragmented MP4 is when the recorder stops without closing it) after which no whole
    packet of its stream comes. FFmpeg's decoders fail on such a packet and ``ffmpeg``
    goes on without it; raypipe plans no frame for it (:func:`probe`), decodes without
    it and copies no such audio packet into an output. A corrupt packet that whole ones of
    its stream follow (a broadcast recording's damaged packet, which the decoder
    conceals) is passed on, after the next whole one at the latest. The packets left out
    are appended to ``cut`` where given. Flush packets (no data) pass at once."""
    held: dict[int, list[av.Packet]] = {}
    for packet in container.demux(streams):
        if packet.size and packet.is_corrupt:
            held.setdefault(packet.stream.index, []).append(packet)
            continue
        if packet.size and held:
            yield from held.pop(packet.stream.index, ())
        yield packet
    if cut is not None:
        cut.extend(p for packets in held.values() for p in packets)


def stamped_frames(container: Any, stream: Any) -> Iterator[av.VideoFrame]:
    """``container.decode(stream)`` (of :func:`whole_packets`), each frame's pts its display
    time: the demuxer's, or where :func:`stamped_by_order` the decode time of the packet
    at the same place in decode order as the frame in the output (the n-th frame shown
    after a keyframe, which starts a closed GOP in such files, shows at the n-th tick after
    it; a frame a damaged stream loses shifts the rest, which the plan's checks see)."""
    if not stamped_by_order(container, stream):
        for packet in whole_packets(container, stream):
            yield from cast(list[av.VideoFrame], packet.decode())
        return
    ticks: deque[int] = deque()
    for packet in whole_packets(container, stream):
        if packet.size and packet.dts is not None:
            ticks.append(packet.dts)
        for frame in packet.decode():
            frame.pts = ticks.popleft() if ticks else None
            yield cast(av.VideoFrame, frame)


def display_lead(container: Any, stream: Any) -> Fraction:
    """Seconds by which a :data:`DECODE_ORDER_ONLY` source's made-up pts run late, where
    they are kept (not :func:`stamped_by_order`): with B-frames FFmpeg's demuxer shows the
    first frame of an MPEG-4 Part 2 or MPEG-2 stream a tick after the file's start, where
    the container plays it (and ``ffprobe`` says the stream starts). The lowest pts against
    the first decode time, over the first GOP (read from ``container``'s start); 0 for other
    sources."""
    if container.format.name not in DECODE_ORDER_ONLY or stamped_by_order(container, stream):
        return Fraction(0)
    first_dts, lowest = None, None
    for n, packet in enumerate(container.demux(stream)):
        if not packet.size or packet.pts is None or packet.dts is None:
            continue
        if first_dts is not None and (packet.is_keyframe or n > _LEAD_PACKETS):
            break
        first_dts = packet.dts if first_dts is None else first_dts
        lowest = packet.pts if lowest is None else min(lowest, packet.pts)
    if first_dts is None or lowest is None or lowest <= first_dts:
        return Fraction(0)
    return (lowest - first_dts) * Fraction(stream.time_base)


_LEAD_PACKETS = 300  # a first GOP longer than this: the lead is read from these


def _scan_packets(container: Any, video: Any, uri: str) -> tuple[list[int], list[int], int, int]:
    """Every frame's pts (demux order), the keyframes' pts, the duration of the packet of
    the frame shown last (0 when it has none), and how many packets the file ends inside
    (:func:`whole_packets`: no frames of the video). Where :func:`stamped_by_order`, the
    decode times are the display grid, and a keyframe shows at its decode time."""
    pts: list[int] = []
    keyframes: list[int] = []
    last_pts, last_duration = None, 0
    by_order = stamped_by_order(container, video)
    cut: list[av.Packet] = []
    back = round(BACK_SECONDS / video.time_base) if clock_may_jump(container) else None
    latest = None  # the latest decode time so far, where the clock may jump back
    hidden_keyframe = False  # a keyframe the edit list drops: the decoder starts there
    try:
        for packet in whole_packets(container, video, cut):
            if packet.size == 0 or packet.is_discard:
                hidden_keyframe |= bool(packet.size and packet.is_keyframe)
                continue  # flush packets; samples the demuxer drops (edit lists)
            decoded_at = packet.dts if packet.dts is not None else packet.pts
            if back is not None and decoded_at is not None:
                if latest is not None and decoded_at < latest - back:
                    tb = Fraction(video.time_base)
                    raise UnsupportedVideoError(
                        jump_back_problem(
                            uri, latest * tb, (latest - decoded_at) * tb, container.format.name
                        )
                    )
                latest = decoded_at if latest is None else max(latest, decoded_at)
            if by_order and packet.dts is not None:
                packet.pts = packet.dts
            if packet.pts is None:
                raise UnsupportedVideoError(
                    f"input '{uri}' has video packets without timestamps (a raw elementary "
                    "stream?); remux it into MP4 or MKV first, e.g. `ffmpeg -i IN -c copy OUT.mkv`"
                )
            pts.append(packet.pts)
            if packet.is_keyframe:
                keyframes.append(packet.pts)
            if last_pts is None or packet.pts > last_pts:
                last_pts, last_duration = packet.pts, int(packet.duration or 0)
    except av.error.FFmpegError as e:
        raise CorruptVideoError(f"input '{uri}' is corrupt: demuxing failed ({e})") from e
    _check_distinct(uri, pts, Fraction(video.time_base), container.format.name)
    if pts and not keyframes and not hidden_keyframe:
        raise CorruptVideoError(f"input '{uri}' has no keyframe; it cannot be decoded")
    return pts, keyframes, last_duration, len(cut)


def _check_distinct(uri: str, pts: Sequence[int], time_base: Fraction, fmt: str = "") -> None:
    """Refuse a video some of whose frames share a time, saying how many, where the first
    is, the likely cause for its container (``fmt``, FFmpeg's name) and what to do (two
    recordings joined whose clocks overlap by less than a jump back,
    :data:`~raypipe.media.jumps.BACK_SECONDS`, come here; an MP4 edit list that starts
    inside a group of pictures, and frames closer than a coarse clock's ticks, too: they
    were said to be joined recordings; a sweep)."""
    if len(set(pts)) == len(pts):
        return
    seen: set[int] = set()
    repeated = []
    for p in pts:
        if p in seen:
            repeated.append(p)
        seen.add(p)
    at = float((repeated[0] - min(pts)) * time_base)
    raise UnsupportedVideoError(
        f"input '{uri}' has {len(repeated)} video frame(s) with the time of another frame, "
        f"the first {at:.3f}s after its start ({_why_shared(pts, time_base, fmt)}); "
        "raypipe orders frames by their times, so it cannot tell which comes first. Cut it "
        "there and process each part, or re-encode it (`ffmpeg -i IN -c:a copy OUT.mkv`, "
        "which drops frames to fit one clock)"
    )


def _why_shared(pts: Sequence[int], time_base: Fraction, fmt: str) -> str:
    """The likely reason frames of a video share a time, for :func:`_check_distinct`."""
    steps = np.diff(np.unique(np.asarray(pts, dtype=np.int64)))
    if len(steps) and int(np.min(steps)) == 1 and time_base >= Fraction(1, 1000):
        return (  # 2000 fps in Matroska's milliseconds
            f"frames closer together than the container's clock, {time_base} s a tick?"
        )
    if "mp4" in fmt.split(",") or "mov" in fmt.split(","):
        return "an edit list whose edit starts inside a group of pictures, as FFmpeg reads it?"
    return "recordings joined whose clocks overlap?"


def _before_first_frame(pts: list[int], first_pts: int | None, by_order: bool) -> int:
    """How many of the sorted frame times ``pts`` come before the first frame the decoder
    gives (``first_pts``): frames of a file that starts inside a group of pictures (a
    broadcast recording, a stream cut anywhere), which reference pictures before its start,
    or whose parameter sets come only with the first keyframe. FFmpeg's decoders drop them
    (``ffmpeg`` prints "non-existing PPS" and starts at that keyframe), so they are no
    frames of the video: planned as frames, the first chunk decoded none of them. ``0``
    where the decoder's times are made up (``by_order``) or it gave none."""
    if first_pts is None or by_order:
        return 0
    before = bisect.bisect_left(pts, first_pts)
    return before if before < len(pts) else 0  # a time past every frame's: not theirs


def _undecodable_note(count: int, start: Fraction) -> tuple[str, ...]:
    """The line the run shows for :func:`_before_first_frame`'s frames (none for 0)."""
    if not count:
        return ()
    return (
        f"{count} frame(s) before the first that decodes, at {float(start):.3f}s: the file "
        "starts inside a group of pictures (a cut recording?), and FFmpeg's decoder drops "
        "them too",
    )


def _listed_past_end(video: Any, uri: str) -> int:
    """How many of ``video``'s samples the container's index (read so far: a fragmented
    MP4's fragment headers) places past the file's end: frames of a recording cut off,
    whose header's end is not the file's. 0 when none or the size is unknown."""
    entries = video.index_entries
    if not entries:
        return 0
    try:
        with open_binary(uri, block_size=PROBE_BLOCK_BYTES) as f:
            size = f.seek(0, 2)
    except OSError:
        return 0
    return sum(1 for e in entries if e.pos + e.size > size)


def _cut_short_note(count: int, end: Fraction) -> tuple[str, ...]:
    """The line the run shows for a file that ends inside its video (none for 0)."""
    if not count:
        return ()
    return (
        f"the file ends inside its video (a recording cut off?): {count} frame(s) cut short "
        f"or missing are left out, and the video stops at {float(end):.3f}s, where FFmpeg's "
        "decoder stops too",
    )


def frame_orientation(frame: av.VideoFrame) -> tuple[int, bool]:
    """``(rotation_degrees, mirrored)`` of a decoded frame, from its display matrix (FFmpeg
    gives each frame its stream's): :func:`~raypipe.media.picture.orientation_of`.
    PyAV's ``VideoFrame.rotation`` reads the rotation alone, which turns a mirrored
    picture the wrong way (a left-to-right mirror reads as a half turn)."""
    side = frame.side_data
    if SideDataType.DISPLAYMATRIX in side:
        matrix = bytes(side[SideDataType.DISPLAYMATRIX])
        return orientation_of(np.frombuffer(matrix, dtype="=i4"))
    return normalise_rotation(frame.rotation or 0), False


_STEREO_MODES = {  # AVStereo3DType -> Matroska's StereoMode (views as stored, then inverted)
    1: ("left_right", "right_left"),  # side by side
    2: ("top_bottom", "bottom_top"),
    3: ("block_lr", "block_rl"),  # frame sequence: each view its own picture
    4: ("checkerboard_lr", "checkerboard_rl"),
    6: ("row_interleaved_lr", "row_interleaved_rl"),  # lines
    7: ("col_interleaved_lr", "col_interleaved_rl"),  # columns
}
_STEREO_INVERT = 1  # AV_STEREO3D_FLAG_INVERT
_PROJECTIONS = {
    0: "equirectangular", 1: "cubemap", 2: "equirectangular (tiled)",
    3: "half equirectangular", 4: "rectilinear", 5: "fisheye",
}  # fmt: skip
"""AVSphericalProjection's names."""


def frame_views(frame: av.VideoFrame, video: Any) -> tuple[str, str]:
    """``(stereo, projection)`` of a decoded frame (:class:`PictureFormat`'s): a Matroska
    stream's own ``stereo_mode`` tag, else the frame's stereo 3D side data (FFmpeg gives
    each frame its stream's: MP4's ``st3d``; or H.264's frame packing SEI); its spherical
    mapping's projection. Each ``""`` where the frame has one flat view."""
    side = frame.side_data
    stereo = str(video.metadata.get("stereo_mode", "")).strip()
    if not stereo and SideDataType.STEREO3D in side:
        data = bytes(side[SideDataType.STEREO3D])
        if len(data) >= 8:
            kind, flags = np.frombuffer(data[:8], dtype="=i4")
            names = _STEREO_MODES.get(int(kind))
            stereo = names[bool(flags & _STEREO_INVERT)] if names else ""
    projection = ""
    if SideDataType.SPHERICAL in side:
        data = bytes(side[SideDataType.SPHERICAL])
        if len(data) >= 4:
            kind = int(np.frombuffer(data[:4], dtype="=i4")[0])
            projection = _PROJECTIONS.get(kind, f"projection {kind}")
    return ("" if stereo == "mono" else stereo), projection


def _first_frame_picture(
    container: Any, video: Any, uri: str, *, earliest: int | None = None
) -> tuple[PictureFormat, int | None]:
    """Decode the first frame: proves a decoder exists and reads what the pictures are;
    with the frame's pts. ``earliest``: the first frame's time in the container's index;
    the frame is read from a fresh open rather than a seek to 0 when that is before 0, or
    when the seek gave a later frame: an MP4 with two edits, where FFmpeg's seek to 0 lands
    in the second edit's pictures (a fresh read starts with the first edit; frames a fresh
    read does not give either are a cut recording's: :func:`_before_first_frame`).

    The frame's own tags come first (the bitstream's, or the container's that FFmpeg
    attaches), the stream's where the frame has none."""
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
    first = None
    try:
        if earliest is None or earliest >= 0:
            container.seek(0, stream=video, backward=True)
            first = _first_frame_picture_of(container, video, uri)
    except av.error.FFmpegError:
        pass
    if first is not None and earliest is not None and (first[1] or 0) > earliest:
        first = None
    # an input that does not seek back (a still image), or one read across the MPEG-TS
    # clock's wrap (its seeks search the times that wrap): read it anew
    if first is None:
        with open_input(uri) as fresh:
            first = _first_frame_picture_of(fresh, fresh.streams[video.index], uri)
    if first is None:
        raise CorruptVideoError(f"input '{uri}': no frame decodes although packets exist")
    return first


def _opaque(frame: Any) -> bool:
    """Whether ``frame`` (a packed format with alpha last: GIF's ``bgra``) is opaque all
    over."""
    if frame.format.name not in ("bgra", "rgba"):
        return False
    return bool((frame.to_ndarray()[..., 3] == 255).all())


def _first_frame_picture_of(
    container: Any, video: Any, uri: str
) -> tuple[PictureFormat, int | None] | None:
    """:func:`_first_frame_picture` from where ``container`` is; ``None`` when no frame
    comes."""
    try:
        for frame in container.decode(video):
            ctx = video.codec_context
            tags, stream_tags = ColourTags.of(frame), ColourTags.of(ctx)
            colour = ColourTags(
                **{
                    k: v if v != "unknown" else getattr(stream_tags, k)
                    for k, v in tags.to_dict().items()
                }
            )
            # the container's aspect ratio over the bitstream's, as ffprobe and players
            # take it (PyAV's stream ratio is FFmpeg's av_guess_sample_aspect_ratio)
            sar = video.sample_aspect_ratio or ctx.sample_aspect_ratio
            rotation, mirrored = frame_orientation(frame)
            stereo, projection = frame_views(frame, video)
            picture = PictureFormat(
                coded_width=frame.width,
                coded_height=frame.height,
                pix_fmt=frame.format.name if not ctx.is_hwaccel else (ctx.pix_fmt or "yuv420p"),
                rotation_degrees=rotation,
                mirrored=mirrored,
                sar=(sar.numerator, sar.denominator) if sar else (0, 1),
                colour=colour,
                hdr=hdr_of_frame(frame),
                interlaced=bool(frame.interlaced_frame),
                opaque_gif=ctx.name == "gif" and _opaque(frame),
                stereo=stereo,
                projection=projection,
            )
            return picture, frame.pts
    except av.error.FFmpegError as e:
        raise CorruptVideoError(f"input '{uri}': its first frame does not decode ({e})") from e
    return None
