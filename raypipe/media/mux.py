"""Assemble: ordered segments + the source's audio/subtitles into one file, atomically.

Video packets come from the segments in chunk order; audio and subtitle packets are
stream-copied from the source, packet for packet, keeping their timestamps, so the A/V
offset survives. The two packet sequences are merged by time so the muxer never has to
buffer a whole stream. The file is written under a temporary name in the output's
directory and renamed into place only when complete: a crash leaves the old state or the
new file, never half of one.
"""

from __future__ import annotations

import heapq
import io
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from fractions import Fraction
from typing import Any

import av

from raypipe import faults
from raypipe.errors import ConfigError, EncodeError, MuxError
from raypipe.media.encode import _NO_DTS, Segment
from raypipe.media.source import open_input

log = logging.getLogger("raypipe.media")


def output_format(path: str) -> str:
    """The FFmpeg muxer for ``path``'s extension, or a :class:`ConfigError` saying which exist."""
    ext = os.path.splitext(path)[1].lower()
    formats = {
        ".mp4": "mp4",
        ".m4v": "mp4",
        ".mov": "mov",
        ".mkv": "matroska",
        ".webm": "webm",
        ".nut": "nut",
        ".avi": "avi",
        ".ts": "mpegts",
    }
    if ext not in formats:
        raise ConfigError(
            f"output '{path}' has extension '{ext or '(none)'}'; expected one of "
            f"{', '.join(sorted(formats))}"
        )
    return formats[ext]


def container_refuses(path: str, codec: str) -> str:
    """Why an output at ``path`` cannot hold video encoded by ``codec`` (``""`` when it can,
    or when FFmpeg cannot tell: MPEG-TS lists no codecs, so TS is checked when written);
    an extension raypipe does not write is a reason too."""
    try:
        fmt = output_format(path)
    except ConfigError as e:
        return str(e)
    if fmt == "mpegts":
        return ""
    try:
        encoder = av.codec.Codec(codec, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        return ""  # an unknown encoder is check_encoder's to report
    with av.open(io.BytesIO(), mode="w", format=fmt) as probe:
        if {codec, encoder.name} & probe.supported_codecs:
            return ""
    fits = "libvpx-vp9" if fmt == "webm" else "libx264"
    return (
        f"a {os.path.splitext(path)[1]} file cannot hold {codec} video; choose another "
        f"output extension (.mkv holds every codec) or another --codec ({fits})"
    )


def _packets(container: Any, streams: list[Any]) -> Iterator[Any]:
    for packet in container.demux(streams):
        if packet.size:
            yield packet


def _time_key(packet: Any) -> Fraction:
    t = packet.dts if packet.dts is not None else packet.pts
    return Fraction(t or 0) * packet.time_base


def assemble(
    segment_uris: Iterable[str],
    output_uri: str,
    source_uri: str,
    *,
    copy_streams: bool = True,
    tags: Mapping[str, str] | None = None,
) -> None:
    """Write ``output_uri`` from ``segment_uris`` (in chunk order) and ``source_uri``'s streams.

    ``tags``: container (format) metadata to write; MP4/MOV keep any key, AVI only its INFO
    keys (``comment``, ``title``...), MPEG-TS none. The file is built under a temporary
    name and committed atomically (:func:`raypipe.storage.commit`). Raises
    :class:`EncodeError` when segments do not concatenate (different codec headers,
    timestamps going backwards, a damaged or missing segment) and :class:`MuxError` when
    the container refuses a stream.
    """
    from raypipe import storage

    uris = list(segment_uris)
    if not uris:
        raise MuxError("no segments to assemble")
    fmt = output_format(output_uri)
    options = {"movflags": "use_metadata_tags"} if tags and fmt in ("mp4", "mov") else {}
    staged = storage.local_staging(output_uri, os.path.splitext(output_uri)[1])
    try:
        with av.open(staged, mode="w", format=fmt, options=options) as out:
            out.metadata.update(tags or {})
            _write(out, uris, source_uri, copy_streams, os.path.basename(output_uri))
        storage.commit(staged, output_uri)
    except BaseException:
        if os.path.exists(staged):
            os.unlink(staged)
        raise


def _write(
    out: Any, paths: list[str], source_uri: str, copy_streams: bool, output_name: str
) -> None:
    with _open_segment(paths[0])[1] as first:
        template = first.streams.video[0]
        extradata = template.codec_context.extradata
        try:
            out_video = out.add_stream_from_template(template)
        except ValueError as e:  # PyAV: the format does not support the codec
            raise MuxError(f"writing {out.format.name} output failed: {e}") from e
    supported = out.supported_codecs
    with open_input(source_uri) as source:
        copied: dict[int, Any] = {}
        if copy_streams:
            for s in source.streams:
                if s.type not in ("audio", "subtitle"):
                    continue
                name = s.codec_context.name if s.codec_context else None
                if name not in supported:
                    log.warning(
                        "%s stream %d (%s) cannot go into a %s file and is left out; "
                        "use .mkv to keep it",
                        s.type,
                        s.index,
                        name,
                        out.format.name,
                    )
                    continue
                copied[s.index] = out.add_stream_from_template(s)
        video = ((_time_key(p), 0, i, p) for i, p in enumerate(_segment_packets(paths, extradata)))
        other = (
            (
                (_time_key(p), 1, i, p)
                for i, p in enumerate(_packets(source, [source.streams[j] for j in copied]))
            )
            if copied
            else iter(())
        )
        try:
            for n, (_, kind, _, packet) in enumerate(heapq.merge(video, other)):
                packet.stream = out_video if kind == 0 else copied[packet.stream.index]
                out.mux(packet)
                if n == _FAULT_AFTER_PACKETS:
                    faults.checkpoint("assemble", output_name)  # crash tests: half a file
        except av.error.FFmpegError as e:
            raise MuxError(f"writing {out.format.name} output failed: {e}") from e


_FAULT_AFTER_PACKETS = 8


def _read_segment(uri: str) -> Segment:
    from raypipe import storage

    try:
        blob = storage.read_bytes(uri)
    except FileNotFoundError as e:
        raise EncodeError(
            f"segment {os.path.basename(uri)} is missing from the work directory; the work "
            "directory is damaged: run again to redo the video"
        ) from e
    return Segment.from_bytes(blob)


def _open_segment(uri: str) -> tuple[Segment, Any]:
    """A segment and its NUT container opened for demuxing (close it)."""
    segment = _read_segment(uri)
    try:
        container = av.open(io.BytesIO(segment.nut))
        if not container.streams.video:
            container.close()
            raise EncodeError(f"segment {os.path.basename(uri)} holds no video stream")
    except av.error.FFmpegError as e:
        raise EncodeError(
            f"segment {os.path.basename(uri)} does not open ({e}); the work directory is "
            "damaged: run again to redo the video"
        ) from e
    return segment, container


def _segment_packets(paths: list[str], extradata: bytes | None) -> Iterator[Any]:
    """Every video packet of the segments, in order, with the encoder's exact pts/dts."""
    last_dts: Fraction | None = None
    for path in paths:
        segment, opened = _open_segment(path)
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
            for packet, pts, dts in zip(packets, segment.pts, segment.dts):
                packet.time_base = segment.time_base
                packet.pts = int(pts)
                packet.dts = None if dts == _NO_DTS else int(dts)
                t = _time_key(packet)
                if last_dts is not None and t <= last_dts:
                    raise EncodeError(
                        f"segment {os.path.basename(path)}: decode timestamps go backwards "
                        f"({float(t):.6f}s after {float(last_dts):.6f}s); chunks overlap"
                    )
                last_dts = t
                yield packet
