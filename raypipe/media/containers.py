"""Which container takes which encoder's video: the output's muxer by its extension, and
the refusal (with what would hold it) before any work, as FFmpeg's muxers decide."""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Sequence

import av

from raypipe.config import AUTO_CODEC, OUTPUT_FORMATS, default_video_codec
from raypipe.errors import ConfigError
from raypipe.media.pixfmt import encoder_formats

KEEPING_ENCODERS = ("libx265", "libsvtav1", "ffv1", "prores_ks", "libvpx-vp9", "libx264")
"""Software encoders a message may name, in the order it names them: those a container
holds (:func:`codecs_held`), those that keep a source's depth and chroma
(:func:`~raypipe.media.encode.keeping_hint`), as this FFmpeg build has them."""


def output_format(path: str) -> str:
    """The FFmpeg muxer for ``path``'s extension, or a :class:`ConfigError` saying which exist."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in OUTPUT_FORMATS:
        raise ConfigError(
            f"output '{path}' has extension '{ext or '(none)'}'; expected one of "
            f"{', '.join(sorted(OUTPUT_FORMATS))}"
        )
    return OUTPUT_FORMATS[ext]


def container_refuses(path: str, codec: str) -> str:
    """Why an output at ``path`` cannot hold video encoded by ``codec`` (``""`` when it can,
    or when FFmpeg cannot tell: an encoder this build lacks is
    :func:`~raypipe.media.encode.check_encoder`'s to report); an extension raypipe does not
    write is a reason too. ``codec`` ``"auto"``: the one
    :func:`~raypipe.config.default_video_codec` picks."""
    try:
        fmt = output_format(path)
    except ConfigError as e:
        return str(e)
    if codec == AUTO_CODEC:
        codec = default_video_codec(path)
    if _muxer_takes(fmt, codec):
        return ""
    holds = extensions_holding(codec, (".mkv", ".mov"))
    where = f"{' and '.join(holds)} hold{'s' if len(holds) == 1 else ''} it" if holds else ""
    return (
        f"a {os.path.splitext(path)[1]} file cannot hold {codec} video; choose another "
        f"output extension{f' ({where})' if where else ''} or another --codec "
        f"({', '.join(codecs_held(fmt, default_video_codec(path)))})"
    )


def codecs_held(fmt: str, first: str) -> list[str]:
    """``first`` and the encoders of :data:`KEEPING_ENCODERS` this
    build has whose video the muxer ``fmt`` takes (a .webm: libvpx-vp9, libsvtav1)."""
    others = [
        c for c in KEEPING_ENCODERS
        if c != first and encoder_formats(c) and _muxer_takes(fmt, c)
    ]  # fmt: skip
    return [first, *others]


def extensions_holding(codec: str, extensions: Sequence[str]) -> list[str]:
    """Those of ``extensions`` (raypipe's output extensions) whose container holds video
    encoded by ``codec`` (not ``"auto"``), in their order."""
    return [ext for ext in extensions if _muxer_takes(OUTPUT_FORMATS[ext], codec)]


@functools.lru_cache(maxsize=64)
def _muxer_takes(fmt: str, codec: str) -> bool:
    """Whether FFmpeg's muxer ``fmt`` takes ``codec`` (an unknown encoder: yes, it is
    check_encoder's to report). Cached: an archive asks once per output."""
    try:
        encoder = av.codec.Codec(codec, "w")
    except (av.codec.codec.UnknownCodecError, ValueError):
        return True
    if fmt == "mov" and encoder.canonical_name in _MOV_REFUSES:
        return False
    if fmt == "mpegts":  # it lists no codecs, and writes any other as unreadable data
        return encoder.canonical_name in _TS_VIDEO
    with av.open(io.BytesIO(), mode="w", format=fmt) as probe:
        return bool({codec, encoder.name} & probe.supported_codecs)


_TS_VIDEO = frozenset({"h264", "hevc", "mpeg2video", "mpeg1video", "mpeg4", "vvc"})
"""Video codecs MPEG-TS holds with a stream type of their own (VP9, AV1 or FFV1 it writes
as private data that players, ffprobe included, read as ``bin_data``)."""
_MOV_REFUSES = frozenset({"vp8", "vp9", "av1"})
"""Video codecs FFmpeg's MOV muxer lists and then refuses as it writes the header ("only
supported in MP4"), which would fail the output at its end, after all the work."""


STEREO_MODES_HELD = {
    "matroska": frozenset({
        "left_right", "right_left", "top_bottom", "bottom_top", "block_lr", "block_rl",
        "checkerboard_lr", "checkerboard_rl", "row_interleaved_lr", "row_interleaved_rl",
        "col_interleaved_lr", "col_interleaved_rl",
    }),
    "webm": frozenset({"left_right", "right_left", "top_bottom", "bottom_top"}),
}  # fmt: skip
"""The stereo 3D layouts (:attr:`PictureFormat.stereo`) an output format stores (FFmpeg's
WebM muxer refuses the rest); other formats store none (MP4's ``st3d`` is not written
unless FFmpeg is told ``-strict unofficial``)."""
