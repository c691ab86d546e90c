"""The picture and stream traits :func:`raypipe.testing.make_clip` can give a clip: 16-bit
frame patterns for deep pixel formats, colour tags, a display rotation, HDR10 metadata,
cover art. Plain helpers over PyAV objects, so :mod:`raypipe.testing.media` stays about
the clip's timeline.
"""

from __future__ import annotations

import math
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation, VideoReformatter

__all__ = [
    "HDR10_MASTERING",
    "HDR10_LIGHT_LEVEL",
    "deep_frame_pattern",
    "is_deep",
    "tag_stream",
    "write_cover_art",
]

HDR10_MASTERING = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50)"
"""The mastering display HDR10 clips declare (P3 primaries, D65, 1000/0.005 cd/m2), in the
x265/x264 ``master-display`` notation (chromaticities in 0.00002, luminance in 0.0001
cd/m2)."""
HDR10_LIGHT_LEVEL = (1000, 400)
"""(MaxCLL, MaxFALL) in cd/m2 that HDR10 clips declare."""

_COLOUR_VALUES = {  # FFmpeg names -> values, for the tags clips use
    "primaries": {"bt709": 1, "bt470bg": 5, "smpte170m": 6, "bt2020": 9, "smpte432": 12},
    "transfer": {"bt709": 1, "smpte170m": 6, "bt2020-10": 14, "smpte2084": 16,
                 "arib-std-b67": 18, "iec61966-2-1": 13},
    "matrix": {"bt709": 1, "bt470bg": 5, "smpte170m": 6, "bt2020nc": 9},
    "range": {"tv": 1, "pc": 2},
}  # fmt: skip
_SWS_MATRIX = {
    "bt709": Colorspace.ITU709,
    "bt470bg": Colorspace.ITU601,
    "smpte170m": Colorspace.ITU601,
    "bt2020nc": Colorspace.BT2020,
}


def is_deep(pix_fmt: str) -> bool:
    """Whether ``pix_fmt`` has more than 8 bits per sample."""
    return max(c.bits for c in av.VideoFormat(pix_fmt, 16, 16).components) > 8


def deep_frame_pattern(pattern: np.ndarray, index: int) -> np.ndarray:
    """An 8-bit ``frame_pattern`` frame as 16-bit RGB for deep clips.

    The colour is the pattern's averaged over 2x2 blocks and the detail inside a block is
    grey (a fine ramp in the low byte, the same in R, G and B), so: a round trip through 8
    bits shows; chroma is constant over every 2x2 block, so 4:2:0 keeps the picture
    exactly and its YUV lies inside the RGB gamut (an identity pass can then be checked to
    a code value; chroma edges inside a block make YUV that RGB clips)."""
    height, width, _ = pattern.shape
    h2, w2 = height - height % 2, width - width % 2
    colour = pattern.astype(np.uint16).copy()
    blocks = colour[:h2, :w2].reshape(h2 // 2, 2, w2 // 2, 2, 3)
    means = (blocks.sum(axis=(1, 3)) + 2) // 4
    colour[:h2, :w2] = np.repeat(np.repeat(means, 2, axis=0), 2, axis=1)
    y, x = np.mgrid[0:height, 0:width]
    fine = ((7 * x + 13 * y + 5 * index) % 256).astype(np.uint16)
    return colour * 256 + fine[..., None]


def display_matrix(rotation_degrees: int, mirrored: bool = False) -> list[int]:
    """FFmpeg's display matrix (9 int32, 16.16 fixed point; what ``set_display_matrix``
    takes) that shows a coded frame mirrored left to right (``mirrored``) and then turned
    ``rotation_degrees`` counter-clockwise (a multiple of 90)."""
    turn = math.radians(rotation_degrees)
    cos, sin = round(math.cos(turn)), round(math.sin(turn))
    one = 1 << 16
    matrix = [cos * one, -sin * one, 0, sin * one, cos * one, 0, 0, 0, 1 << 30]
    if mirrored:  # x -> -x first: the first row (what x contributes) changes sign
        matrix[0], matrix[1] = -matrix[0], -matrix[1]
    return matrix


def tag_stream(
    stream: av.VideoStream,
    colour: tuple[str, str, str, str] | None,
    rotation_degrees: int,
    hdr10: bool,
    *,
    mirrored: bool = False,
) -> dict[str, str]:
    """Tag ``stream`` (before encoding starts) with ``colour`` = (primaries, transfer,
    matrix, range) and a display matrix (:func:`display_matrix`); returns the encoder
    parameters that write HDR10 metadata (``hdr10``) for its codec."""
    ctx = stream.codec_context
    if colour is not None:
        for key, name, attr in zip(
            ("primaries", "transfer", "matrix", "range"),
            colour,
            ("color_primaries", "color_trc", "colorspace", "color_range"),
        ):
            setattr(ctx, attr, _COLOUR_VALUES[key][name])
    if rotation_degrees or mirrored:
        stream.set_display_matrix(display_matrix(rotation_degrees, mirrored))
    if not hdr10:
        return {}
    cll = ",".join(map(str, HDR10_LIGHT_LEVEL))
    if ctx.name == "libx265":
        return {"x265-params": f"master-display={HDR10_MASTERING}:max-cll={cll}"}
    if ctx.name == "libx264":
        return {"x264-params": f"mastering-display={HDR10_MASTERING}:cll={cll}"}
    raise ValueError(f"hdr10=True needs libx265 or libx264, got {ctx.name}")


def to_stream_format(
    frame: av.VideoFrame,
    pix_fmt: str,
    colour: tuple[str, str, str, str] | None,
    reformatter: VideoReformatter,
) -> av.VideoFrame:
    """``frame`` (RGB) in ``pix_fmt``, converted with the matrix and range ``colour`` tags
    (BT.601 limited when untagged), so the clip shows its pattern under its own tags."""
    if av.VideoFormat(pix_fmt, 16, 16).is_rgb:
        return frame
    matrix = colour[2] if colour is not None else "smpte170m"
    full = colour is not None and colour[3] == "pc"
    return reformatter.reformat(
        frame,
        format=pix_fmt,
        dst_colorspace=_SWS_MATRIX[matrix],
        dst_color_range=ColorRange.JPEG if full else ColorRange.MPEG,
        interpolation=Interpolation.POINT,
    )


def write_cover_art(out: av.container.OutputContainer, pattern: np.ndarray) -> list[av.Packet]:
    """Add an attached-picture stream (a JPEG of ``pattern``, disposition ``attached_pic``)
    to ``out`` before encoding starts; returns its one packet to mux."""
    stream = out.add_stream("mjpeg")
    stream.width, stream.height = pattern.shape[1], pattern.shape[0]
    stream.pix_fmt = "yuvj420p"
    stream.time_base = Fraction(1, 90000)
    stream.disposition = av.stream.Disposition.attached_pic
    stream.metadata["title"] = "cover"
    frame = av.VideoFrame.from_ndarray(pattern, format="rgb24").reformat(format="yuvj420p")
    frame.pts = 0
    packets = list(stream.encode(frame)) + list(stream.encode(None))
    return packets
