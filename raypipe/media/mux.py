"""Assemble: ordered segments + the source's audio/subtitles into one file, atomically.

Video packets come from the segments in chunk order with their exact pts, dts and
durations (the last frame's too, so the stream's duration and average frame rate are the
source's in every container); the video stream is tagged with the segments' colour tags
and average frame rate. Audio and subtitle packets are stream-copied from the source,
packet for packet, keeping their pts, dts and durations, so the A/V offset survives (audio
starting before or after the video); their language and title tags and dispositions are
kept. Attached pictures (cover art) are copied where the output container holds them.
The source's container tags (title, creation time, location, make and model...) and
chapters are kept where the output container holds them, as ``ffmpeg -map_metadata 0``
keeps them, and so are the video's language and title, timecode (a ``tmcd`` track in
MP4/MOV) and field order (Matroska).
The packet sequences are merged by time so the muxer never has to buffer a whole stream.
The file is written under a temporary name in the output's directory and renamed into
place only when complete: a crash leaves the old state or the new file, never half of one.
"""

from __future__ import annotations

import functools
import heapq
import io
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from typing import Any

import av
import numpy as np
from av.stream import Disposition

from raypipe import faults
from raypipe.errors import ConfigError, EncodeError, MuxError, counted
from raypipe.media import avi_audio, captions, mkv_aspect
from raypipe.media.containers import STEREO_MODES_HELD, output_format
from raypipe.media.encode import _NO_DTS, SEGMENT_HEAD_BYTES, Segment
from raypipe.media.jumps import Jump, closed, shift_seconds
from raypipe.media.probe import (
    DECODE_ORDER_ONLY,
    FIELD_ORDERS,
    VideoInfo,
    codec_label,
    display_lead,
    field_order,
    is_attached_pic,
    is_soundless,
    pick_video_stream,
    video_timecode,
    whole_packets,
)
from raypipe.media.source import is_local, open_input

log = logging.getLogger("raypipe.media")


def _packets(container: Any, streams: list[Any]) -> Iterator[Any]:
    for packet in container.demux(streams):
        if packet.size:
            yield packet


def _other_packets(
    source: Any,
    copied: dict[int, Any],
    reencoded: set[int],
    jumps: tuple[Jump, ...] = (),
    video_time_base: Fraction = Fraction(1),
) -> Iterator[tuple[Any, Any]]:
    """(packet, output stream) for the source's streams in ``copied`` (source index ->
    output stream), in the source's order: a copied stream's own packets, and for a stream
    in ``reencoded`` the packets its encoder makes: of the decoded audio
    (:func:`_reencoded_audio`, flushed at the end), or of each decoded text subtitle
    (:func:`_converted_subtitles`). Each packet is moved as the source clock's ``jumps``
    (in ``video_time_base``) close, before anything decodes it (:func:`_closed_packets`)."""
    packets = whole_packets(source, [source.streams[j] for j in copied])
    one_at_a_time = _OneCueAtATime()
    undecodable: dict[int, int] = {}  # source index -> its packets that did not decode
    decoded: set[int] = set()  # source indexes of which a frame decoded
    for packet in _closed_packets(packets, jumps, video_time_base) if jumps else packets:
        index = packet.stream.index
        stream = copied[index]
        if index in reencoded and stream.type == "subtitle":
            new = _converted_subtitle(packet, stream)
            if new is not None:
                yield from one_at_a_time.cue(new, stream, index)
        elif index in reencoded:
            try:
                frames = packet.decode()  # the demuxer's last, empty packet flushes
            except av.error.FFmpegError:  # a damaged packet: left out, as ffmpeg leaves it
                undecodable[index] = undecodable.get(index, 0) + 1
                continue
            for frame in frames:
                decoded.add(index)
                yield from ((new, stream) for new in stream.encode(frame))
        elif packet.size:
            yield packet, stream
    yield from one_at_a_time.rest()
    for index in reencoded:
        if copied[index].type == "audio":
            yield from ((new, copied[index]) for new in copied[index].encode(None))
    for index, count in undecodable.items():
        log.warning(
            "audio stream %d: %s did not decode (damaged?) and %s left out of its re-encoded "
            "sound, as ffmpeg leaves them%s; .mkv copies the stream as it is",
            index,
            counted(count, "packet"),
            "is" if count == 1 else "are",
            "" if index in decoded else ": none decoded, so the output has none of its sound",
        )


class _OneCueAtATime:
    """Cues converted to ``mov_text`` (MP4's and MOV's text subtitles), each ending no later
    than the next one of its stream begins: a ``mov_text`` track shows one cue at a time,
    and FFmpeg's MOV muxer put a cue that began while another still showed (ASS signs over
    dialogue, SRT's overlaps) after that one's end, seconds late, one of them past the video
    (a sweep). Cut as ``ffmpeg -c:s mov_text`` cuts them, and said once a stream. Each cue
    is held until the next one of its stream (or the end) comes; other codecs pass."""

    def __init__(self) -> None:
        self._held: dict[int, tuple[Any, Any]] = {}  # source index -> (last cue, stream)
        self._cut: dict[int, int] = {}  # source index -> cues cut short

    def cue(self, packet: Any, stream: Any, index: int) -> Iterator[tuple[Any, Any]]:
        """(packet, stream) pairs to mux now for ``packet``, the source's stream
        ``index``'s next cue converted for ``stream``."""
        if stream.codec_context.name != "mov_text":
            yield packet, stream
            return
        last, _ = self._held.pop(index, (None, None))
        self._held[index] = packet, stream
        if last is None:
            return
        if packet.pts is not None and last.pts is not None and last.duration:
            room = packet.pts - last.pts
            if last.duration > room >= 0:
                last.duration = room
                self._cut[index] = self._cut.get(index, 0) + 1
        yield last, stream

    def rest(self) -> Iterator[tuple[Any, Any]]:
        """The last cue of each stream; then the warnings."""
        yield from self._held.values()
        for index, cut in self._cut.items():
            log.warning(
                "subtitle stream %d: %s overlapping the next one %s cut short, to end where "
                "it begins (mov_text shows one cue at a time)",
                index,
                counted(cut, "cue"),
                "is" if cut == 1 else "are",
            )


def _closed_packets(
    packets: Iterator[Any], jumps: tuple[Jump, ...], video_time_base: Fraction
) -> Iterator[Any]:
    """``packets`` moved as the source clock's ``jumps`` close (:mod:`raypipe.media.jumps`).
    A recording's sound runs a little past its last picture, and the next recording's
    starts a little before its first: where a jump closes, the last sound packet before it
    may overlap the first after it. That packet, sound past the first recording's last
    picture, is left out (``ffmpeg`` keeps both, and its MKV and TS outputs then fail
    ``ffmpeg -v error``'s read: "non monotonically increasing dts")."""
    held: dict[int, tuple[Any, Fraction]] = {}  # an audio stream's last packet, its shift
    for packet in packets:
        shift = shift_seconds(_time_key(packet), jumps, video_time_base)
        if packet.size:
            _move(packet, -shift)
        index = packet.stream.index
        if packet.stream.type != "audio":
            yield packet
            continue
        last = held.pop(index, None)
        if last is not None and not (
            packet.size and last[1] != shift and _overlap(last[0], packet)
        ):
            yield last[0]
        if packet.size:
            held[index] = (packet, shift)
        else:
            yield packet  # the stream's end: its decoder flushes
    for last, _ in held.values():
        yield last


def _overlap(before: Any, after: Any) -> bool:
    """Whether the audio packet ``before`` plays on past the start of ``after``, the same
    stream's next one."""
    if before.pts is None or after.pts is None or not before.duration:
        return False
    return bool(before.pts + before.duration > after.pts)


def _converted_subtitle(packet: Any, stream: Any) -> Any | None:
    """A text subtitle ``packet`` of the source converted by ``stream``'s encoder
    (:func:`_converted_subtitles`), on the source packet's times; ``None`` for an
    empty or undecodable one."""
    if not packet.size:
        return None
    cues = packet.stream.codec_context.decode2(packet)
    if cues is None or not len(cues):
        return None
    new = stream.codec_context.encode_subtitle(cues)
    new.time_base = packet.time_base
    new.pts, new.dts, new.duration = packet.pts, packet.dts, packet.duration
    return new


_KEPT_TAGS = ("language", "title", "handler_name")
"""Stream tags copied with an audio/subtitle/attached-picture stream. MP4 and MOV have no
track title (FFmpeg drops it): there the title goes into the handler name, where players
and FFmpeg's demuxer read a track's name."""
_ISO639_B_T = {
    "alb": "sqi", "arm": "hye", "baq": "eus", "bur": "mya", "chi": "zho", "cze": "ces",
    "dut": "nld", "fre": "fra", "geo": "kat", "ger": "deu", "gre": "ell", "ice": "isl",
    "mac": "mkd", "mao": "mri", "may": "msa", "per": "fas", "rum": "ron", "slo": "slk",
    "tib": "bod", "wel": "cym",
}  # fmt: skip
"""ISO 639-2's bibliographic codes and their terminology twins: the same languages."""
_ISO639_TWIN = {**_ISO639_B_T, **{t: b for b, t in _ISO639_B_T.items()}}


def mov_language(code: str) -> str:
    """``code`` as FFmpeg's MOV muxer stores it: QuickTime's own language table has one of
    the two ISO 639-2 codes of some languages ("fra" and "ger", not "fre" and "deu"), and
    the muxer drops the other; so a Matroska source's French track came out of a .mov
    without its language. The twin where only it is stored, else ``code``."""
    twin = _ISO639_TWIN.get(code.lower())
    if twin and not _mov_stores_language(code) and _mov_stores_language(twin):
        return twin
    return code


@functools.lru_cache(maxsize=64)
def _mov_stores_language(code: str) -> bool:
    """Whether a MOV written by FFmpeg keeps ``code`` as a track's language (one tiny file
    written and read back in memory)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mov") as out:
        stream = out.add_stream("pcm_s16le", rate=8000, layout="mono")
        stream.metadata["language"] = code
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 16), np.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 8000, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    buf.seek(0)
    with av.open(buf) as back:
        return back.streams[0].metadata.get("language") == code


def kept_tags(
    tags: Mapping[str, str], fmt: str, *, title_as_handler: bool = True
) -> dict[str, str]:
    """A stream's tags of :data:`_KEPT_TAGS` as the output format ``fmt`` keeps them: a
    language as MOV stores it (:func:`mov_language`), and with ``title_as_handler`` a title
    also as MP4's and MOV's handler name."""
    kept = {k: v for k, v in tags.items() if k.lower() in _KEPT_TAGS}
    if title_as_handler and fmt in ("mp4", "mov") and kept.get("title"):
        kept.setdefault("handler_name", kept["title"])  # MP4/MOV keep a title there
    if fmt == "mov" and kept.get("language"):
        kept["language"] = mov_language(kept["language"])
    return kept


_NO_ATTACHED_PICS = ("mpegts", "avi", "nut", "webm", "mov")
"""Output formats that cannot hold an attached picture (cover art; FFmpeg's MOV muxer
drops it). Matroska holds one as an attachment, MP4 as a stream."""
_CONSTANT_RATE = ("avi",)
"""Output formats that store no timestamps, only a frame rate (time base = 1/rate)."""

_ASPECT_IN_BITSTREAM = frozenset({"h264", "hevc", "mpeg4", "mpeg2video"})
"""Video codecs whose bitstream says the sample aspect ratio. Matroska keeps it in its
track's display size, which FFmpeg's muxer writes from a stream field PyAV cannot set (so
do NUT segments: :attr:`Segment.sar` carries it): :func:`_keep_aspect` writes it into the
finished file. MP4/MOV write their ``pasp`` box from the encoder's ratio."""
_PICTURE_TYPES = {"mjpeg": ("cover.jpg", "image/jpeg"), "png": ("cover.png", "image/png")}


def _time_key(packet: Any) -> Fraction:
    t = packet.dts if packet.dts is not None else packet.pts
    return Fraction(t or 0) * packet.time_base


def assemble(
    segment_uris: Iterable[str],
    output_uri: str,
    source_uri: str,
    *,
    copy_streams: bool = True,
    tags: Mapping[str, str] | Callable[[Mapping[str, str]], Mapping[str, str]] | None = None,
    keep_tag: Callable[[str, str], bool] | None = None,
    per_frame: int = 1,
    jumps: Sequence[Jump] = (),
    stereo: str = "",
) -> None:
    """Write ``output_uri`` from ``segment_uris`` (in chunk order) and ``source_uri``'s streams.

    ``copy_streams``: copy the source's audio, subtitle and attached-picture streams.
    ``tags``: container (format) metadata to write; MP4/MOV keep the iTunes-style keys
    (``comment``, ``title``...), AVI only its INFO keys, MPEG-TS none; or a function of
    the source's container tags that gives them. The source's own
    container tags go with them (:func:`container_tags`; ``tags`` win a key both have, and
    ``keep_tag(key, value)`` false leaves a source tag out). ``per_frame``: output frames
    per source frame (2 after an interpolating model). ``jumps``: the source clock's, as
    the probe found them (:attr:`VideoInfo.jumps`); the segments' times are closed, and
    the source's other streams and captions are moved to match. ``stereo``: the source's
    stereo 3D layout (:attr:`PictureFormat.stereo`), which Matroska and WebM outputs
    keep as their StereoMode (:func:`_keep_video_facts`). The file is built
    under a temporary name and committed atomically (:func:`raypipe.storage.commit`). Raises
    :class:`EncodeError` when segments do not concatenate (different codec headers,
    timestamps going backwards, a damaged or missing segment) and :class:`MuxError` when
    the container refuses a stream.
    """
    from raypipe import storage

    uris = list(segment_uris)
    if not uris:
        raise MuxError("no segments to assemble")
    fmt = output_format(output_uri)
    staged = storage.local_staging(output_uri, os.path.splitext(output_uri)[1])
    try:
        # (a full disk names the output, or for an object store's the local staging file)
        written = output_uri if is_local(output_uri) else staged
        with open_input(source_uri) as source, storage.writing(written):
            options = _muxer_options(fmt, source, copy_streams)
            with av.open(staged, mode="w", format=fmt, options=options) as out:
                name = os.path.basename(output_uri)
                given = dict((tags(source.metadata) if callable(tags) else tags) or {})
                shape = _write(
                    out, uris, source, source_uri, copy_streams, name, given, keep_tag,
                    per_frame, tuple(jumps), stereo,
                )  # fmt: skip
        _keep_aspect(staged, fmt, *shape)
        if fmt == "avi":
            avi_audio.mend_copied_audio(staged)
        storage.commit(staged, output_uri)
    except BaseException:
        if os.path.exists(staged):
            os.unlink(staged)
        raise


def _write(
    out: Any,
    paths: list[str],
    source: Any,
    source_uri: str,
    copy_streams: bool,
    output_name: str,
    tags: dict[str, str],
    keep_tag: Callable[[str, str], bool] | None,
    per_frame: int = 1,
    jumps: tuple[Jump, ...] = (),
    stereo: str = "",
) -> tuple[Fraction | None, str]:
    """Mux the output; returns its pictures' sample aspect ratio and video codec. Its
    streams keep the source's order, as ``ffmpeg -map 0`` keeps it: the streams before the
    processed video's are added before it (the video came first whatever the source's
    order, and a script's ``-map 0:1`` took another stream: a sweep)."""
    processed = pick_video_stream(source, source_uri)
    copied: dict[int, Any] = {}
    reencoded: set[int] = set()
    if copy_streams:
        copied, reencoded = _copied_streams(out, source, source_uri, lambda i: i < processed.index)
    head, opened = _open_segment(paths[0])
    with opened as first:
        template = first.streams.video[0]
        extradata = template.codec_context.extradata
        template_tag = template.codec_context.codec_tag
        try:
            out_video = out.add_stream_from_template(template)
        except av.codec.codec.UnknownCodecError:  # no encoder of the decoder's name (libdav1d)
            out_video = out.add_stream_from_template(template, opaque=True)
        except ValueError as e:  # PyAV: the format does not support the codec
            raise MuxError(f"writing {out.format.name} output failed: {e}") from e
    kind = out_video.codec_context.codec.canonical_name
    if out.format.name in ("mp4", "mov") and kind == "hevc":
        out_video.codec_context.codec_tag = "hvc1"  # Apple's players refuse FFmpeg's hev1
    if kind == "prores" and template_tag.strip("\x00"):  # the profile's fourcc (apco...):
        # the template's was dropped, MOV wrote apch (HQ) whatever was encoded, MKV none
        out_video.codec_context.codec_tag = template_tag
    if head.colour is not None:
        head.colour.apply(out_video.codec_context)
    if head.sar:  # for MP4's pasp box where the codec's bitstream has no place for it
        out_video.codec_context.sample_aspect_ratio = head.sar
    if head.rate:  # the stream's avg_frame_rate; Matroska's default frame duration
        rate = _tagged_rate(out.format.name, head.rate, processed, per_frame)
        out_video.codec_context.framerate = rate
    frame_seconds = None
    if out.format.name in _CONSTANT_RATE and head.rate:
        frame_seconds = 1 / head.rate  # one tick per frame: AVI has no timestamps
        out_video.time_base = frame_seconds
    out.metadata.update(container_tags(source.metadata, tags, keep_tag))
    _keep_video_facts(out_video, processed, stereo)
    if copy_streams:
        after, more = _copied_streams(out, source, source_uri, lambda i: i > processed.index)
        copied, reencoded = {**copied, **after}, reencoded | more
        _first_is_default(copied.values())
    if out.format.name in _CONSTANT_RATE:
        _warn_lost_offsets(source, processed, copied)
    track = _caption_track(source, source_uri, processed, out_video, jumps)
    delay = decode_delay(paths) if frame_seconds is None else None
    packets = _segment_packets(paths, extradata, frame_seconds, track, delay)
    lead = Fraction(0)
    if frame_seconds is None and source.format.name in DECODE_ORDER_ONLY:
        with open_input(source_uri) as fresh:  # `source` is read for its streams below
            lead = display_lead(fresh, fresh.streams[processed.index]) or Fraction(0)
    shift = Fraction(0)
    if frame_seconds is None and len(head.pts):
        shift = _start_shift(source, copied, int(min(head.pts)) * head.time_base - lead)
    packets = _moved(packets, shift - lead) if shift - lead else packets
    chapters = source.chapters()  # on the source's timeline, which the output keeps
    if chapters:
        out.set_chapters(_moved_chapters(chapters, shift))
    video = ((_time_key(p), 0, i, p, out_video) for i, p in enumerate(packets))
    others = _other_packets(source, copied, reencoded, jumps, Fraction(processed.time_base))
    if out.format.name not in ("mp4", "mov"):
        others = _without_cut_preroll(others)
    if shift:
        others = _moved_pairs(others, shift)
    if frame_seconds is not None:  # AVI: every audio stream plays from the file's start
        others = _audio_from_zero(others)
    other = ((_time_key(p), 1, i, p, s) for i, (p, s) in enumerate(others)) if copied else iter(())
    rising = _RisingDts(out)
    try:
        for n, (_, _, _, packet, stream) in enumerate(heapq.merge(video, other)):
            if stream.type == "audio":
                rising.fix(packet, stream)
            packet.stream = stream
            out.mux(packet)
            if n == _FAULT_AFTER_PACKETS:
                faults.checkpoint("assemble", output_name)  # crash tests: half a file
    except av.error.FFmpegError as e:
        raise MuxError(f"writing {out.format.name} output failed: {e}") from e
    if track is not None:
        log.info("%s: closed captions kept in %d pictures", output_name, track.found)
    return head.sar, out_video.codec_context.codec.canonical_name


_FAULT_AFTER_PACKETS = 8


class _RisingDts:
    """Audio packets' decode times made to rise as the output's muxer requires, as
    ``ffmpeg`` does (its "Non-monotonic DTS ... changing to" fix): on the output stream's
    time base, a packet at or before its stream's last one moves one tick after it (at
    it, for muxers that take equal times: Matroska). Sources store such packets where
    their timestamps are coarser than the frames (TrueHD's 1/1200 s frames in Matroska's
    milliseconds), and MPEG-TS, MP4 and NUT refuse them. Muxers take subtitles that
    start together as they are."""

    def __init__(self, out: Any) -> None:
        self._step = 0 if out.format.flags & av.format.Flags.ts_nonstrict.value else 1
        self._last: dict[int, tuple[int, Fraction]] = {}  # output stream -> (dts, time base)

    def fix(self, packet: Any, stream: Any) -> None:
        src = packet.time_base
        if packet.dts is None or src is None:
            return
        # the stream's time base is final once the header is written, at the first mux
        tb = stream.time_base or src
        if src != tb:  # as the muxer would (PyAV 18's Packet.rescale_ts takes no Fraction)
            packet.pts = None if packet.pts is None else _rescaled(packet.pts, src, tb)
            packet.dts = _rescaled(packet.dts, src, tb)
            if packet.duration is not None:
                packet.duration = _rescaled(packet.duration, src, tb)
            packet.time_base = tb
        last = self._last.get(stream.index)
        if last is not None:
            least = _rescaled(*last, tb) + self._step
            if packet.dts < least:
                if packet.pts is not None and packet.pts >= packet.dts:
                    packet.pts = max(packet.pts, least)
                packet.dts = least
        self._last[stream.index] = (packet.dts, tb)


def _rescaled(value: int, src: Fraction, dst: Fraction) -> int:
    """``value`` ticks of ``src`` in ticks of ``dst``, rounded as FFmpeg's ``av_rescale_q``
    (to the nearest, halves away from zero); in integers, as it runs for every audio
    packet of an output."""
    n = value * src.numerator * dst.denominator
    d = src.denominator * dst.numerator
    return (2 * n + d) // (2 * d) if n >= 0 else -((d - 2 * n) // (2 * d))


def _tagged_rate(fmt: str, rate: Fraction, source_video: Any, per_frame: int = 1) -> Fraction:
    """The frame rate the output's video stream is tagged with: its average ``rate``; in
    Matroska and WebM, for a variable frame rate, the rate ``ffmpeg`` takes for the
    source's frames (its guess: ``r_frame_rate``, the rate every frame's time is a whole
    number of frames of, unless a codec's field rate doubles it; ``per_frame`` times it
    after a model that makes more frames), as ``ffmpeg`` and mkvmerge write a variable
    rate's default frame duration there. A default duration longer than the shortest
    frame (a phone's 30 fps with dropped frames, 23.5 fps on average) makes FFmpeg's
    decoding of the file guess decode times that collide ("non monotonically increasing
    dts" from ``ffmpeg -v error -f null``). Elsewhere the tag is no frame duration (MP4
    and MOV time every sample; MPEG-TS every packet)."""
    guessed = source_video.guessed_rate
    if fmt not in ("matroska", "webm") or not guessed:
        return rate
    if Fraction(guessed) * per_frame <= rate * Fraction(1001, 1000):
        return rate  # a constant rate (within the rounding of its times)
    return Fraction(guessed) * per_frame


def _moved(packets: Iterator[Any], seconds: Fraction) -> Iterator[Any]:
    """``packets`` shown ``seconds`` later (earlier where negative): an AVI source's
    made-up pts lead (:func:`~raypipe.media.probe.display_lead`), so the output's first
    frame shows when the source played it, beside its audio; a source timeline that starts
    before 0 (:func:`_start_shift`)."""
    for packet in packets:
        yield _move(packet, seconds)


def _without_cut_preroll(pairs: Iterator[tuple[Any, Any]]) -> Iterator[tuple[Any, Any]]:
    """(packet, output stream) pairs less the packets the source's edit list cuts away
    (flagged discard: an MP4 cut with ``ffmpeg -ss ... -c copy`` keeps 0.7 s of sound
    before its start), but the last of each stream's, the next one's decoder pre-roll (AAC
    priming is that one). For outputs without edit lists (Matroska, MPEG-TS, ...): their
    muxers moved every stream later to start that sound at 0, so the cut sound played over
    no picture before the first frame (a sweep; ``ffmpeg``'s transcode does the same)."""
    held: dict[int, tuple[Any, Any]] = {}  # a stream's last discarded packet
    for packet, stream in pairs:
        index = stream.index
        if packet.is_discard and packet.size:
            held[index] = (packet, stream)  # the one before it is dropped
            continue
        if index in held:
            yield held.pop(index)
        yield packet, stream
    yield from held.values()


def _moved_pairs(pairs: Iterator[tuple[Any, Any]], seconds: Fraction) -> Iterator[tuple[Any, Any]]:
    """(packet, output stream) pairs of :func:`_other_packets`, each packet ``seconds``
    later; attached pictures (cover art, no time) as they are."""
    for packet, stream in pairs:
        yield (packet if is_attached_pic(stream) else _move(packet, seconds)), stream


def _audio_from_zero(pairs: Iterator[tuple[Any, Any]]) -> Iterator[tuple[Any, Any]]:
    """(packet, output stream) pairs, each audio stream that starts after 0 moved to start
    at 0: an AVI file has no start times, and FFmpeg's muxer puts a stream's first packet
    first whatever its time, then fills the time between it and the next with empty
    chunks, which count in the stream's length (an MPEG-TS source's audio at its 1.46 s
    running clock got 68 of them after its first packet: the sound played late and
    ``ffprobe`` gave 3.48 s of a 2 s clip; a sweep). :func:`_warn_lost_offsets` says where
    that moves the sound against the picture."""
    first: dict[int, Fraction] = {}
    for packet, stream in pairs:
        ticks = packet.dts if packet.dts is not None else packet.pts
        if stream.type == "audio" and ticks is not None and packet.time_base is not None:
            start = first.setdefault(stream.index, ticks * Fraction(packet.time_base))
            if start > 0:
                packet = _move(packet, -start)
        yield packet, stream


def _move(packet: Any, seconds: Fraction) -> Any:
    """``packet`` with its pts and dts ``seconds`` later, in ticks of its time base."""
    ticks = _ticks(seconds, packet.time_base)
    if packet.pts is not None:
        packet.pts += ticks
    if packet.dts is not None:
        packet.dts += ticks
    return packet


def _ticks(seconds: Fraction, time_base: Any) -> int:
    """``seconds`` in whole ticks of ``time_base``, to the nearest."""
    return round(seconds / Fraction(time_base))


def _start_shift(source: Any, copied: dict[int, Any], video_start: Fraction) -> Fraction:
    """How much later the output's streams play than the source's, in seconds (negative:
    earlier). Every stream moves by the same amount, so that the earliest of the video
    (``video_start``, seconds) and the copied streams starts at 0, as ``ffmpeg`` shifts a
    transcode's output, where the source's streams all start after 0 or its video before 0:

    - after 0, in a container other than MP4 and MOV: MPEG-TS and MPEG-PS carry a running
      clock, not a timeline (a broadcast recording's starts hours in, a DVD's second VOB
      goes on from the first's), a live stream's recording (FLV, Matroska) starts where
      the recorder joined it, and players show them all from their first picture. Kept,
      the times became an MP4's empty edit or a Matroska file's late first cluster, hours
      of nothing on a player's timeline. An MP4 or MOV source's late start is its edit
      list's, which players show: kept, as it is.
    - video before 0: an MPEG-TS recording across the 26.5-hour wrap of its clock, which
      FFmpeg reads with negative times; an MP4 or MOV muxer would cut what lies before 0
      with its edit list (the frames kept in the file, but no player shows them), and the
      other muxers shift by their own rule.

    A source whose video starts at 0 or later and some stream at 0 or before keeps its
    times (audio priming before 0 stays as it is)."""
    streams = [source.streams[i] for i in copied]
    starts = [_start_of(s) for s in streams if not is_attached_pic(s)]
    earliest = min([video_start, *(t for t in starts if t is not None)])
    if video_start >= 0 and (earliest <= 0 or _has_edit_lists(source)):
        return Fraction(0)
    return -earliest


def _has_edit_lists(source: Any) -> bool:
    """Whether ``source`` is an MP4 or MOV, whose edit lists say where its streams start
    on the timeline players show (:func:`_start_shift`)."""
    return "mov" in source.format.name.split(",") or "mp4" in source.format.name.split(",")


def _start_of(stream: Any) -> Fraction | None:
    """A source stream's start time in seconds, as its demuxer reports it (``None``: none)."""
    if stream.start_time is None or stream.time_base is None:
        return None
    return stream.start_time * stream.time_base


def _moved_chapters(chapters: list[Any], seconds: Fraction) -> list[Any]:
    """``chapters`` (PyAV's dicts) ``seconds`` later on their own time bases, as ``ffmpeg``
    moves them: a chapter that then ends at or before 0 is left out, and one that starts
    before 0 starts at 0 (a live recording's first chapter, from its clock's zero, before
    a late start moved back: Matroska's muxer refuses a negative one, after all the
    work)."""
    if not seconds:
        return chapters
    moved = []
    for c in chapters:
        ticks = _ticks(seconds, c["time_base"])
        start, end = c["start"] + ticks, c["end"] + ticks
        if end > 0:
            moved.append({**c, "start": max(0, start), "end": end})
    return moved


def _muxer_options(fmt: str, source: Any, copy_streams: bool) -> dict[str, str]:
    """The muxer's options for ``fmt``.

    AVI (:data:`_CONSTANT_RATE`): no shift of negative timestamps. A frame's place in an
    AVI is its index (:func:`_on_frame_grid`); audio that starts before 0 (AAC's priming
    samples in an MP4) would make FFmpeg shift every stream, the first frame to tick 1,
    and its AVI muxer fill tick 0 with an empty frame: one frame more, the picture a frame
    behind the sound.

    ``movflags=use_metadata_tags`` for an MP4/MOV output of a source whose container
    tags have reverse-DNS names (an iPhone's ``com.apple.quicktime.location.ISO6709``,
    ``...make``, ``...model``): without it FFmpeg's muxer keeps only the iTunes-style keys
    and drops those. Not when cover art goes into an MP4 (it lives among the iTunes keys,
    which that flag does not write)."""
    if fmt in _CONSTANT_RATE:
        return {"avoid_negative_ts": "disabled"}
    if fmt not in ("mp4", "mov") or not any("." in k for k in source.metadata):
        return {}
    if fmt == "mp4" and copy_streams and any(is_attached_pic(s) for s in source.streams):
        dropped = ", ".join(sorted(k for k in source.metadata if "." in k))
        log.warning(
            "the source's QuickTime metadata keys (%s) cannot go into an MP4 with cover art "
            "and are left out; use .mov or .mkv to keep them",
            dropped,
        )
        return {}
    return {"movflags": "+use_metadata_tags"}


_FILE_TAGS = frozenset(
    {"encoder", "software", "major_brand", "minor_version", "compatible_brands", "duration"}
)
"""Source container tags (lower case) that describe the source file, not what it shows:
the library that wrote it (AVI's ISFT reads as ``software``) and MP4's brands, which the
muxer writes its own of, and a duration, which could be wrong."""


def container_tags(
    source: Mapping[str, str],
    given: Mapping[str, str],
    keep_tag: Callable[[str, str], bool] | None = None,
) -> dict[str, str]:
    """The container tags of an output: the source's (less :data:`_FILE_TAGS` and those
    ``keep_tag(key, value)`` refuses) and ``given``, which wins a key both have, whatever
    its case (Matroska upper-cases tag names). What the output container cannot store, its
    muxer leaves out, as FFmpeg does with ``-map_metadata 0``."""
    taken = {k.lower() for k in given}
    kept = {
        k: v
        for k, v in source.items()
        if k.lower() not in _FILE_TAGS
        and k.lower() not in taken
        and (keep_tag is None or keep_tag(k, v))
    }
    return {**kept, **given}


_NO_TIMECODE = {"mpegts": ".ts", "avi": ".avi"}
"""Output formats whose muxers keep no timecode (MP4 and MOV write a ``tmcd`` track,
Matroska and NUT a tag), by FFmpeg's name, with their extension."""


_FIELD_ORDER_HELD: dict[str, tuple[str, ...]] = {
    "matroska": (),  # every codec: Matroska's FieldOrder element
    "webm": (),
    "mov": ("prores_ks", "prores_aw", "prores"),  # MOV's fiel atom, which FFmpeg writes for ProRes
}
"""Output formats that keep a source's field order (with every codec where the tuple is
empty, else with those codecs); the others hold what the encoder coded: progressive."""


def _keep_video_facts(out_video: Any, source_video: Any, stereo: str = "") -> None:
    """The source video's language, title and handler name, timecode tag (MP4/MOV write it
    as a ``tmcd`` track, Matroska as a tag), field order (Matroska stores it),
    dispositions (default, forced...: Matroska's track flags; as ``ffmpeg`` copies them)
    and stereo 3D layout (``stereo``: Matroska's and WebM's StereoMode, where the format
    has the mode; players showed a 3D film's output as one flat picture, a sweep) on the
    output's video stream. The frames are the source's frames from the first on, so its
    first frame's timecode still holds."""
    out_video.disposition = source_video.disposition
    fmt = out_video.container.format.name
    tags = kept_tags(source_video.metadata, fmt, title_as_handler=False)
    if stereo in STEREO_MODES_HELD.get(fmt, ()):
        tags["stereo_mode"] = stereo
    timecode = video_timecode(source_video)
    if timecode and fmt in _NO_TIMECODE:  # left out without a word (a sweep)
        log.warning(
            "the video's start timecode %s is left out: a %s file has no place for it; use "
            ".mov, .mp4 or .mkv to keep it",
            timecode,
            _NO_TIMECODE[fmt],
        )
    elif timecode:
        tags["timecode"] = timecode
    out_video.metadata.update(tags)
    order = field_order(source_video)
    interlaced = FIELD_ORDERS[order] not in ("", "progressive")
    codec = out_video.codec_context.name
    if interlaced and out_video.codec_context.height != source_video.codec_context.height:
        # the model changed the height: the output's rows are no longer two fields woven,
        # and a player that trusted the tag split them as fields (a sweep)
        return
    held = _FIELD_ORDER_HELD.get(fmt)
    if interlaced and (held is None or (held and codec not in held)):
        log.warning(  # tagged progressive without a word (a sweep)
            "the source is interlaced (field order %s); %s in %s is coded progressive, as "
            "FFmpeg's own transcode codes it, so players do not deinterlace it: .mkv keeps "
            "the field order",
            FIELD_ORDERS[order],
            codec,
            fmt,
        )
    if order:
        out_video.codec_context.field_order = order


def _first_is_default(streams: Iterable[Any]) -> None:
    """As ``ffmpeg`` marks them: where the output has two or more audio (or subtitle)
    streams and none is a default one, the first is (a broadcast recording's two
    languages had no default audio track in Matroska, ffmpeg's the first; a sweep)."""
    by_type: dict[str, list[Any]] = {}
    for stream in sorted(streams, key=lambda s: s.index):
        if stream.type in ("audio", "subtitle"):
            by_type.setdefault(stream.type, []).append(stream)
    for kind in by_type.values():
        if len(kind) > 1 and not any(s.disposition & Disposition.default for s in kind):
            kind[0].disposition = kind[0].disposition | Disposition.default


def _copied_streams(
    out: Any, source: Any, source_uri: str, which: Callable[[int], bool]
) -> tuple[dict[int, Any], set[int]]:
    """Output streams for the source's audio, subtitles and attached pictures, by source
    index, with their tags and dispositions, and the indices of those re-encoded: audio
    the output cannot hold as it is is re-encoded with the container's usual codec
    (:data:`AUDIO_FALLBACK`), text subtitles converted to its text codec
    (:data:`SUBTITLE_FALLBACK`), each with a warning; anything else it cannot hold is left
    out with a warning. Matroska gets attached pictures and the source's
    attachments (the fonts of styled subtitles) as attachments (not in the result). Only
    the source streams whose index is ``which``."""
    supported = out.supported_codecs
    copied: dict[int, Any] = {}
    reencoded: set[int] = set()
    for s in source.streams:
        if not which(s.index):
            continue
        if s.type == "attachment":
            _copy_attachment(out, s)
            continue
        attached = is_attached_pic(s)
        if (s.type not in ("audio", "subtitle") and not attached) or is_soundless(s):
            continue  # a soundless track: the probe's line says it is left out
        name = codec_label(s) or None
        if attached and out.format.name == "matroska" and name in _PICTURE_TYPES:
            out.add_attachment(*_PICTURE_TYPES[name], _attached_picture(source_uri, s.index))
            continue
        held = _holds(out, s, supported)
        stream = None
        if not held and s.type == "audio":
            stream = _reencoded_audio(out, s)
        elif not held and s.type == "subtitle":
            stream = _converted_subtitles(out, s)
        if stream is not None:
            reencoded.add(s.index)
        elif not held or (attached and out.format.name in _NO_ATTACHED_PICS):
            hint = _mkv_hint(out.format.name, s)
            log.warning(
                "%s stream %d (%s) cannot go into a %s file and is left out%s",
                "attached picture" if attached else s.type,
                s.index,
                name,
                out.format.name,
                hint,
            )
            continue
        else:
            stream = out.add_stream_from_template(s)
        stream.metadata.update(kept_tags(s.metadata, out.format.name))
        stream.disposition = s.disposition
        copied[s.index] = stream
    return copied, reencoded


TEXT_SUBTITLES = frozenset({"subrip", "srt", "ass", "ssa", "mov_text", "webvtt", "text"})
"""Subtitle codecs that hold text (not pictures), which convert into one another."""
SUBTITLE_FALLBACK = {"mp4": "mov_text", "mov": "mov_text", "matroska": "ass", "webm": "webvtt"}
"""The text subtitle codec of an output format that cannot hold the source's text
subtitles as they are (SubRip into MP4, MP4's ``mov_text`` into MKV), as ``ffmpeg`` picks
a container's own. MPEG-TS and AVI hold no text subtitles."""


def _converted_subtitles(out: Any, source_stream: Any) -> Any | None:
    """An encoder stream in ``out`` for ``source_stream``'s text subtitles
    (:data:`SUBTITLE_FALLBACK`), with a warning; ``None`` for picture subtitles (DVD,
    Blu-ray) and formats without a text subtitle codec."""
    fmt = out.format.name
    ctx = source_stream.codec_context
    if fmt not in SUBTITLE_FALLBACK or ctx is None or ctx.name not in TEXT_SUBTITLES:
        return None
    codec_name = SUBTITLE_FALLBACK[fmt]
    try:
        if not ctx.is_open:
            ctx.open()  # its ASS header is the encoder's (styles, play size)
        stream = out.add_stream(codec_name)
    except (av.error.FFmpegError, av.codec.codec.UnknownCodecError, ValueError):
        return None
    stream.time_base = source_stream.time_base
    stream.codec_context.time_base = source_stream.time_base
    stream.codec_context.subtitle_header = ctx.subtitle_header
    log.warning(
        "subtitle stream %d (%s) cannot go into a %s file as it is and is converted to %s",
        source_stream.index,
        codec_label(source_stream),
        fmt,
        codec_name,
    )
    return stream


AUDIO_FALLBACK = {
    "mp4": ("aac", 96_000), "mov": ("aac", 96_000), "matroska": ("aac", 96_000),
    "mpegts": ("aac", 96_000), "webm": ("libopus", 64_000), "avi": ("libmp3lame", 128_000),
}  # fmt: skip
"""The codec, and bits per second per channel, of audio re-encoded for an output format
that cannot hold the source's audio as it is (Windows Media Audio, MS ADPCM or GSM into
MP4 or MKV...), as ``ffmpeg`` picks a container's own codec: AAC, Opus for WebM, MP3 for
AVI."""
_LAYOUTS = {1: "mono", 2: "stereo", 3: "surround", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1",
            8: "7.1"}  # fmt: skip
"""FFmpeg's default channel layout for a channel count, for sources that name none."""
_MAX_AUDIO_BIT_RATE = 512_000


def _reencoded_audio(out: Any, source_stream: Any) -> Any | None:
    """An encoder stream in ``out`` for ``source_stream``'s audio (:data:`AUDIO_FALLBACK`),
    at its sample rate where the encoder has it (else 48 kHz) and its channel layout
    where the encoder takes it (else FFmpeg's default for its channel count, else
    stereo), with a warning; ``None`` when the format has no fallback (NUT holds every
    codec) or no decoder reads the source's audio."""
    fmt = out.format.name
    ctx = source_stream.codec_context
    if fmt not in AUDIO_FALLBACK or ctx is None or not ctx.channels:
        return None
    codec_name, per_channel = AUDIO_FALLBACK[fmt]
    try:
        codec = av.codec.Codec(codec_name, "w")
        av.codec.Codec(ctx.name, "r")
    except (av.codec.codec.UnknownCodecError, ValueError):
        return None
    rate = ctx.sample_rate if ctx.sample_rate in (codec.audio_rates or ()) else 48_000
    sample_format = codec.audio_formats[0].name
    named = ctx.layout.name if "channels" not in ctx.layout.name else None
    for layout in dict.fromkeys([named, _LAYOUTS.get(ctx.channels), "stereo"]):
        if layout is None:
            continue
        trial = av.codec.CodecContext.create(codec_name, "w")  # does the encoder take it?
        trial.sample_rate, trial.layout, trial.format = rate, layout, sample_format
        trial.bit_rate = bit_rate = min(per_channel * trial.channels, _MAX_AUDIO_BIT_RATE)
        try:
            trial.open()
        except av.error.FFmpegError:
            continue
        stream = out.add_stream(codec_name, rate=rate)
        enc = stream.codec_context
        enc.layout, enc.format, enc.bit_rate = layout, sample_format, bit_rate
        why = _not_read_back(fmt, source_stream)
        log.warning(
            "audio stream %d (%s) cannot go into a %s file as it is and is re-encoded as "
            "%s (%s, %d kb/s)%s%s",
            source_stream.index,
            codec_label(source_stream),
            fmt,
            codec_name,
            layout,
            bit_rate // 1000,
            f" ({why})" if why else "",
            _mkv_hint(fmt, source_stream),
        )
        return stream
    return None


_TS_CODECS = frozenset(
    {"aac", "aac_latm", "mp2", "mp3", "ac3", "eac3", "opus", "dts", "truehd", "dvb_subtitle",
     "dvb_teletext", "arib_caption"}
)  # fmt: skip
"""What MPEG-TS holds besides video: its muxer answers no codec query, so it is listed."""


_NO_MP4_VORBIS = (
    "MP4 has no standard place for Vorbis, which FFmpeg writes under a private object type: "
    "browsers and QuickTime play the file without sound"
)
_NOT_READ_BACK = {
    ("mp4", "pcm_"): "FFmpeg writes PCM into MP4 as ISO 23003-5 'ipcm', a recent form older "
    "players do not read: Debian 12's FFmpeg 5.1 decodes it as noise",
    ("mp4", "vorbis"): _NO_MP4_VORBIS,
    ("mov", "vorbis"): _NO_MP4_VORBIS,
    ("mp4", "dvdsub"): "FFmpeg writes a DVD's picture subtitles into MP4 in a private form "
    "('mp4s') that players do not show",
    **{
        ("avi", codec): "AVI times it by bytes or by fixed-size frames, which this codec's "
        "packets are not: the sound plays squeezed into a fraction of a second, or does not "
        "decode"
        for codec in ("flac", "vorbis", "dca", "eac3")  # dca: DTS
    },
}  # fmt: skip
"""(output format, codec name prefix) -> why a stream-copy that FFmpeg's muxer writes is
still re-encoded: the file would not play where a user opens it. A camera's or screen
recorder's PCM into MP4, an Ogg or older WebM video's Vorbis into MP4 or MOV (``ffmpeg``'s
own default for both is AAC as well); MOV and MKV keep PCM as it is, MKV Vorbis. A DVD's
subtitles into MP4 (the copy said nothing; a sweep) are left out, with the warning of
subtitles a container cannot hold. FLAC, Vorbis, DTS and E-AC-3 into AVI, which FFmpeg's
muxer takes: the copy's sound lasted 0.04-0.5 s of 2, or FLAC's decode failed at every
packet (a sweep); they get AVI's MP3 (TrueHD, Opus and ALAC, which the muxer does not
take, got it already)."""


def _not_read_back(fmt: str, stream: Any) -> str:
    """Why a copy of ``stream`` in a ``fmt`` file would not play (:data:`_NOT_READ_BACK`),
    or ``""``."""
    ctx = stream.codec_context
    name = ctx.name if ctx is not None else ""
    return next(
        (why for (f, p), why in _NOT_READ_BACK.items() if f == fmt and name.startswith(p)), ""
    )


def _holds(out: Any, stream: Any, supported: set[str]) -> bool:
    """Whether ``out`` can hold a stream-copy of the source ``stream`` (one that plays:
    :func:`_not_read_back`)."""
    ctx = stream.codec_context
    if ctx is None or _not_read_back(out.format.name, stream):
        return False
    if out.format.name == "mpegts":
        listed = ctx.codec.canonical_name in _TS_CODECS
    else:
        listed = ctx.name in supported
    return listed and _muxer_starts(out.format.name, stream)


def _mkv_hint(fmt: str, stream: Any) -> str:
    """The hint "use .mkv to keep it", where a Matroska output would hold ``stream`` as it
    is (``""`` otherwise)."""
    if fmt == "matroska" or stream.codec_context is None:
        return ""
    with av.open(io.BytesIO(), mode="w", format="matroska") as mkv:
        held = _holds(mkv, stream, mkv.supported_codecs)
    return "; use .mkv to keep it" if held else ""


def _muxer_starts(fmt: str, stream: Any) -> bool:
    """Whether FFmpeg's muxer ``fmt`` writes its header with a stream-copy of ``stream``:
    it lists some codecs it then refuses (TrueHD in MP4 is experimental, Opus and FLAC are
    MP4's and not MOV's), which would fail the output at its end, after all the work."""
    try:
        with av.open(io.BytesIO(), mode="w", format=fmt) as trial:
            trial.add_stream_from_template(stream)
            trial.start_encoding()
    except (av.error.FFmpegError, ValueError):
        return False
    return True


def _copy_attachment(out: Any, stream: Any) -> None:
    """A Matroska attachment (a font for ASS subtitles...) into a Matroska output; other
    containers hold none (a warning says so)."""
    if out.format.name == "matroska":
        out.add_attachment(stream.name, stream.mimetype, stream.data)
        return
    log.warning(
        "attachment stream %d (%s) cannot go into a %s file and is left out; use .mkv to keep it",
        stream.index,
        stream.name,
        out.format.name,
    )


def _attached_picture(source_uri: str, index: int) -> bytes:
    """The picture of the source's attached-picture stream ``index`` (its one packet)."""
    with open_input(source_uri) as source:
        stream = source.streams[index]
        return next((bytes(p) for p in source.demux(stream) if p.size), b"")


def _on_frame_grid(packet: Any, frame_seconds: Fraction, index: int) -> None:
    """Fit the ``index``-th packet (decode order) to a container that stores only decode
    order and one frame rate (AVI): every frame lasts ``frame_seconds`` (else a
    :class:`MuxError`), and its decode time is its index. AVI stores no pts (the decoder
    restores display order); segments' B-frame delays would leave gaps that AVI fills with
    empty frames."""
    tb = Fraction(packet.time_base)
    if packet.duration and _off_grid(packet.duration * tb, frame_seconds, tb):
        raise MuxError(_vfr_in_avi([packet.duration * tb]))
    packet.time_base = frame_seconds
    packet.dts = packet.pts = index
    packet.duration = 1


def _off_grid(duration: Fraction, frame_seconds: Fraction, tick: Fraction) -> bool:
    """Whether a frame of ``duration`` seconds is not one of ``frame_seconds`` on a time
    base of ``tick`` seconds: a 29.97 fps frame lasts 33 or 34 ms in Matroska's or ASF's
    milliseconds, and is on the grid."""
    return abs(duration - frame_seconds) >= tick


def _vfr_in_avi(durations: list[Fraction]) -> str:
    """The refusal of a variable frame rate in AVI, naming the frames' durations (the
    most common first; the average rate's duration, which no frame had, was named)."""
    named = [f"{d}s" for d in durations[:3]] + (["others"] if len(durations) > 3 else [])
    listed = ", ".join(named[:-1]) + (" and " if len(named) > 1 else "") + named[-1]
    return (
        f"an AVI output holds one frame duration only, this video has frames of {listed} "
        "(a variable frame rate); write .mkv or .mp4 to keep its timing"
    )


def constant_rate_problem(info: VideoInfo, output: str) -> str:
    """Why ``output`` cannot keep the timing of the probed video ``info``'s frames (``""``
    when it can): an AVI holds one frame duration, so a variable frame rate is refused
    before any work rather than when the output is written."""
    try:
        if output_format(output) not in _CONSTANT_RATE or not info.rate or len(info.pts) < 2:
            return ""
    except ConfigError:
        return ""
    tick, frame_seconds = info.time_base, 1 / info.rate
    gaps = np.diff(np.sort(np.asarray(info.pts, dtype=np.int64)))
    steps, counts = np.unique(gaps, return_counts=True)
    if not any(_off_grid(step * tick, frame_seconds, tick) for step in steps.tolist()):
        return ""
    common = sorted(zip(counts.tolist(), steps.tolist()), key=lambda c: -c[0])
    return _vfr_in_avi([step * tick for _, step in common])


def _keep_aspect(path: str, fmt: str, sar: Fraction | None, codec: str) -> None:
    """Give a Matroska or WebM output at ``path`` its pictures' non-square pixels (its
    track's display size: :mod:`raypipe.media.mkv_aspect`); say so where that cannot be
    done and the codec's bitstream does not carry them either
    (:data:`_ASPECT_IN_BITSTREAM`): players would show the picture squeezed or stretched."""
    if fmt not in ("matroska", "webm") or not sar or sar == 1:
        return
    if mkv_aspect.write_display_size(path, sar, webm=fmt == "webm"):
        return
    if codec not in _ASPECT_IN_BITSTREAM:
        log.warning(
            "the picture's aspect ratio (pixels %d:%d wide to high) is left out: the "
            "Matroska/WebM file's head is not laid out as FFmpeg's muxer writes it, and "
            "%s video has no place of its own for it, so players show square pixels. Use "
            ".mp4 (or H.264/HEVC video) to keep it",
            sar.numerator,
            sar.denominator,
            codec,
        )


def _warn_lost_offsets(source: Any, video: Any, copied: dict[int, Any]) -> None:
    """AVI has no stream start times: say so when an audio stream starts apart from the
    ``video`` (the one processed; it will play from the video's start)."""
    start = _start_of(video)
    if start is None:
        return
    for index in copied:
        s = source.streams[index]
        audio_start = _start_of(s) if s.type == "audio" else None
        if audio_start is not None:
            offset = audio_start - start
            if abs(offset) > Fraction(1, 1000):
                log.warning(
                    "audio stream %d starts %.3fs %s the video; an AVI file cannot keep "
                    "that offset (it has no start times), so it plays from the video's "
                    "start. Use .mkv or .mp4 to keep it",
                    index,
                    abs(float(offset)),
                    "after" if offset > 0 else "before",
                )


def _caption_track(
    source: Any, source_uri: str, video: Any, out_video: Any, jumps: tuple[Jump, ...] = ()
) -> captions.CaptionTrack | None:
    """The source video's closed captions (:mod:`raypipe.media.captions`), read from a
    second opening of the source, when its first
    :data:`CAPTION_SCAN_PACKETS` packets carry any and the output's codec can hold them
    (else a warning that they are left out), its pictures' times closed as ``jumps``
    close the video's. None when there are none to keep."""
    codec = video.codec_context.name
    if source.format.name in DECODE_ORDER_ONLY or codec not in captions.READ_FROM:
        return None
    length_size = captions.nal_length_size(codec, video.codec_context.extradata)
    packets = _video_packets(source_uri, video.index, jumps)
    track = captions.CaptionTrack(packets, codec, length_size)
    if not track.prefetch(CAPTION_SCAN_PACKETS):
        return None
    out_codec = out_video.codec_context.codec.canonical_name
    if out_codec not in captions.CARRIERS:
        log.warning(
            "the source's closed captions (CEA-608/708, in its video) are left out: %s "
            "video has no place for them (libx264 and libx265 keep them)",
            out_codec,
        )
        return None
    return track


def _video_packets(source_uri: str, index: int, jumps: tuple[Jump, ...] = ()) -> Iterator[Any]:
    """The packets of stream ``index`` of a new opening of ``source_uri``, closed once
    they are read or the iterator is dropped, their times closed as the clock's ``jumps``
    close; they end early where the source is damaged (its frames were read as far as they
    decode, and captions are not worth failing for)."""
    try:
        with open_input(source_uri) as fresh:
            for packet in _packets(fresh, [fresh.streams[index]]):
                if jumps and packet.pts is not None:
                    moved = packet.pts - closed(packet.pts, jumps)
                    packet.pts -= moved
                    packet.dts = None if packet.dts is None else packet.dts - moved
                yield packet
    except av.error.FFmpegError as e:
        log.debug("reading %s for its captions stopped: %s", source_uri, e)


CAPTION_SCAN_PACKETS = 300
"""Video packets read for captions before a source counts as having none: broadcast
captions ride on every picture (padding when nothing is said), so ten seconds at 30 fps
tell. A source whose captions begin later keeps none (a full second read of the source
would find them)."""


def _captioned(packet: Any, track: captions.CaptionTrack, codec: str) -> Any:
    """``packet`` (an encoder's, Annex B) with the captions of the source picture of its
    time, or itself when that picture had none."""
    cc = track.at(packet.pts * Fraction(packet.time_base))
    return packet if cc is None else captions.captioned_packet(packet, cc, codec)


def _read_segment(uri: str, *, index_only: bool = False) -> Segment:
    """The segment at ``uri``; ``index_only``: its pts, dts and durations (no frames),
    reading only the start of the file."""
    from raypipe import storage

    try:
        if index_only:
            blob = storage.read_head(uri, SEGMENT_HEAD_BYTES)
            size = Segment.index_size(blob)
            blob = storage.read_head(uri, size) if size > len(blob) else blob[:size]
        else:
            blob = storage.read_bytes(uri)
    except FileNotFoundError as e:
        raise EncodeError(
            f"segment {os.path.basename(uri)} is missing from the work directory; the work "
            "directory is damaged: run again to redo the video"
        ) from e
    return Segment.from_bytes(blob)


def _open_segment(uri: str, *, probe: bool = True) -> tuple[Segment, Any]:
    """A segment and its container (NUT, or MOV) opened for demuxing (close it). ``probe``: FFmpeg
    finds the stream's parameters as any input's, decoding its first frames (the output's
    stream is made from the first segment's); without, nothing is decoded
    (:data:`_PACKETS_ONLY`)."""
    segment = _read_segment(uri)
    try:
        container = av.open(io.BytesIO(segment.container), options=None if probe else _PACKETS_ONLY)
        if not container.streams.video:
            container.close()
            raise EncodeError(f"segment {os.path.basename(uri)} holds no video stream")
    except av.error.FFmpegError as e:
        raise EncodeError(
            f"segment {os.path.basename(uri)} does not open ({e}); the work directory is "
            "damaged: run again to redo the video"
        ) from e
    return segment, container


_PACKETS_ONLY = {"skip_frame": "all"}
"""Decoder options of a segment opened for its packets only: FFmpeg's stream probe (when a
container is opened) decodes its first frames to learn what the container does not say
(the pixel format, the decoder's delay), which packets to copy do not need. At 4K that was
most of an assembly (8 segments: 0.62 of 0.75 s; 87 against 2 ms to open a 20-frame
segment; benchmarks/README.md, session 42)."""


_INDEX_READS = 16


def decode_delay(paths: list[str]) -> int | None:
    """The encoders' reorder delay, in frames: the most places a packet of the segments at
    ``paths`` comes before its frame's place in display order (read from their indexes);
    each packet's dts is then the display time of the frame that many places before its own
    in the whole video (:func:`_segment_packets`). ``None`` when a segment has packets
    without dts. Segments in object storage are read :data:`_INDEX_READS` at a time (a
    request each: thousands for a long video)."""
    delay = 0
    if all(is_local(p) for p in paths):
        segments: Iterable[Segment] = (_read_segment(p, index_only=True) for p in paths)
    else:
        with ThreadPoolExecutor(_INDEX_READS) as pool:
            segments = list(pool.map(lambda p: _read_segment(p, index_only=True), paths))
    for segment in segments:
        if _NO_DTS in segment.dts:
            return None
        if len(segment.pts):
            places = np.argsort(np.argsort(segment.pts, kind="stable"), kind="stable")
            delay = max(delay, int(np.max(np.arange(len(places)) - places)))
    return delay


def _first_step(pts: np.ndarray, durations: np.ndarray | None, tb: Fraction) -> Fraction:
    """The video's first frame's duration in seconds: its own, else the time to the next
    frame, else one tick."""
    order = np.sort(pts)
    if durations is not None and len(durations):
        first = int(durations[int(np.argmin(pts))])
        if first > 0:
            return first * tb
    if len(order) > 1:
        return int(order[1] - order[0]) * tb
    return tb


def _decode_times(
    order: np.ndarray, tb: Fraction, delay: int, before: list[Fraction], first_step: Fraction
) -> np.ndarray:
    """A segment's decode times (ticks of ``tb``): the ``i``-th packet's is the display
    time of the frame ``delay`` places before the segment's ``i``-th frame in display order
    (``order``: its pts sorted), over the whole video (``before``: the display times of the
    frames before the segment, the last ``delay`` at least, in seconds); before the
    video's first frame, frames of ``first_step`` (its first frame's duration) are counted
    back. With a constant rate that is every display time moved back by ``delay`` frames;
    across a variable rate's gap (a security camera's minutes of nothing) the lead is the
    gap for ``delay`` frames only, where a lead of one time for every frame made it 5 s for
    the whole track (an MP4's edit list then dropped the video's start offset; a sweep).
    Only the ``delay`` times before the segment's own go through seconds."""
    if not delay:
        return order
    earlier = before[-delay:]
    first = earlier[0] if earlier else int(order[0]) * tb
    missing = delay - len(earlier)
    lead = [first - first_step * (missing - j) for j in range(missing)] + earlier
    ticks = np.array([math.floor(t / tb) for t in lead], dtype=np.int64)
    return np.concatenate([ticks, order])[: len(order)]


def _segment_packets(
    paths: list[str],
    extradata: bytes | None,
    frame_seconds: Fraction | None = None,
    track: captions.CaptionTrack | None = None,
    delay: int | None = None,
) -> Iterator[Any]:
    """Every video packet of the segments, in order, with the encoder's exact pts and
    durations; ``frame_seconds``: the one duration a constant-rate container allows;
    ``track``: the source's closed captions, written into the packet of each picture's
    time (before the constant rate's grid retimes it).

    Decode times: ``delay`` (:func:`decode_delay`, frames) makes every segment's the same
    construction (:func:`_decode_times`), so that they rise across the segments by the
    frames' own durations. The encoders' were each segment's own: a
    segment too short for x264's B-frame delay had none (its dts recomputed, encode's
    ``_checked_dts``), or a variable frame rate made it longer, and the next segment's
    first decode times fell before the last one's. Moved just after it, they squeezed
    frames of a tick between them, and an MP4 or MOV track, timed by its decode times,
    ended that much early: 2 frames of 10 in chunks of 2 and 3 frames, the last ones past
    its edit list's end. ``None``: each segment's own (a packet had no dts)."""
    last_dts: Fraction | None = None
    last_end: Fraction | None = None  # the latest display time of the segments so far
    shown: list[Fraction] = []  # the last frames' display times, for the next decode times
    first_step: Fraction | None = None  # the video's first frame's duration
    n_out = 0
    for path in paths:
        segment, opened = _open_segment(path, probe=False)
        with opened as seg:
            stream = seg.streams.video[0]
            if stream.codec_context.extradata != extradata:
                raise EncodeError(
                    f"segment {os.path.basename(path)} has other codec headers than the first "
                    "segment; segments of one output must use identical encoder settings"
                )
            try:
                packets = list(_packets(seg, [stream]))
            except av.error.FFmpegError as e:
                raise EncodeError(
                    f"segment {os.path.basename(path)} is truncated or corrupt ({e}); the "
                    "work directory is damaged: run again to redo the video"
                ) from e
            if len(packets) != len(segment.pts):
                raise EncodeError(
                    f"segment {os.path.basename(path)} holds {len(packets)} packets, its index "
                    f"{len(segment.pts)}; the work directory is damaged"
                )
            durations = segment.durations
            tb = Fraction(segment.time_base)
            decode_times = segment.dts
            if delay is not None and len(segment.pts):
                if first_step is None:
                    first_step = _first_step(segment.pts, durations, tb)
                order = np.sort(segment.pts)
                decode_times = _decode_times(order, tb, delay, shown, first_step)
                kept = max(delay, 1)
                shown = (shown + [int(t) * tb for t in order[-kept:]])[-kept:]
            if len(segment.pts):
                first = int(min(segment.pts)) * tb
                if last_end is not None and first <= last_end:
                    raise EncodeError(
                        f"segment {os.path.basename(path)} starts at {float(first):.6f}s, not "
                        f"after the frame at {float(last_end):.6f}s; chunks overlap"
                    )
                last_end = int(max(segment.pts)) * tb
            for i, (packet, pts, dts) in enumerate(zip(packets, segment.pts, decode_times)):
                packet.time_base = segment.time_base
                packet.pts = int(pts)
                packet.dts = None if dts == _NO_DTS else int(dts)
                if durations is not None:
                    packet.duration = int(durations[i])
                if track is not None:
                    packet = _captioned(packet, track, stream.codec_context.name)
                if frame_seconds is not None:
                    _on_frame_grid(packet, frame_seconds, n_out)
                n_out += 1
                t = _time_key(packet)
                if last_dts is not None and t <= last_dts:
                    # a segment's leading packets (before its first frame's time: the
                    # encoder's B-frame delay) are timed back by the delay its own first
                    # frames span; with a variable frame rate that can reach the previous
                    # segment's last decode time. Decode times only order the packets: move
                    # them just after it, where they still come before their frames' times
                    moved = math.floor(last_dts / tb) + 1
                    if packet.dts is None or moved > packet.pts:
                        raise EncodeError(
                            f"segment {os.path.basename(path)}: decode timestamps go "
                            f"backwards ({float(t):.6f}s after {float(last_dts):.6f}s); "
                            "chunks overlap"
                        )
                    packet.dts = moved
                    t = moved * tb
                last_dts = t
                yield packet
