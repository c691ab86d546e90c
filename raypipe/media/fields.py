"""Interlaced pictures: each field's chroma converted on its own, both ways.

An interlaced frame (a broadcast's 1080i, a DVD's or a DV camcorder's 576i/480i) holds two
fields woven together, the even rows shot a field period apart from the odd rows. In 4:2:0
each field has its own chroma rows: the even chroma rows are the top field's, the odd ones
the bottom field's. Converted as one picture, RGB -> YUV takes chroma row ``2j + 1`` (the
bottom field's) from the top field's rows, so a pass gave the bottom field the top field's
colours, a field period late (interlaced H.264 through ``identity``: chroma at 29 and 26 dB
where a progressive source's round trip keeps 44). So where the source's first frame is
interlaced (:attr:`~raypipe.media.picture.PictureFormat.interlaced`), decode converts each
field of every frame to RGB on its own (:func:`fields_of`, as swscale converts a frame
flagged interlaced) and the encoder converts each field of the RGB frames back on its own
and weaves the two (:func:`fields_to`), so an identity model gives the source's samples
back and the model sees each field's own colours. Formats whose chroma is not subsampled
vertically (4:2:2, 4:1:1, 4:4:4, RGB) convert the same either way (:func:`apart`). Frames
are coded progressive with their fields woven, as FFmpeg's own transcode codes them.
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np

from raypipe.media.pixfmt import layout_of


def apart(pix_fmt: str, height: int) -> bool:
    """Whether an interlaced frame of ``pix_fmt`` and ``height`` rows is converted field
    by field: its chroma is subsampled vertically (4:2:0, 4:1:0), and each field holds
    whole chroma rows (a 4:2:0 height a multiple of 4; a frame of another height converts
    as one picture)."""
    layout = layout_of(pix_fmt)
    factor = layout.subsampling[1]
    return not layout.rgb and factor > 1 and height % (2 * factor) == 0


def plane_rows(plane: Any, dtype: type = np.uint8) -> np.ndarray:
    """A plane's samples as ``(height, line_size / sample size)`` of ``dtype`` (uint8, or
    uint16 for a 16-bit plane), over the frame's memory; a palette (``pal8``'s second
    plane, no line size) as one row."""
    data = np.frombuffer(memoryview(plane), dtype)
    if not plane.line_size:
        return data[None]
    return data.reshape(plane.height, plane.line_size // data.itemsize)


def _copy_rows(dst: av.VideoFrame, src: av.VideoFrame, dst_rows: slice, src_rows: slice) -> None:
    for d, s in zip(dst.planes, src.planes, strict=True):
        to, of = plane_rows(d), plane_rows(s)
        if not d.line_size:  # a palette: the same for every row
            to[:] = of
            continue
        width = min(d.line_size, s.line_size)
        to[dst_rows, :width] = of[src_rows, :width]


def field(frame: av.VideoFrame, parity: int) -> av.VideoFrame:
    """The top (``parity`` 0: even rows) or bottom (1) field of ``frame``, as a frame of
    half its height and no flags (a copy, as wide as :func:`bare`'s)."""
    width, _ = whole(frame.format.name, frame.width, frame.height)  # see bare()
    out = av.VideoFrame(width, frame.height // 2, frame.format.name)
    _copy_rows(out, frame, slice(None), slice(parity, None, 2))
    return out


def weave(top: av.VideoFrame, bottom: av.VideoFrame) -> av.VideoFrame:
    """One frame of twice the fields' height: ``top``'s rows even, ``bottom``'s odd."""
    out = av.VideoFrame(top.width, top.height * 2, top.format.name)
    _copy_rows(out, top, slice(0, None, 2), slice(None))
    _copy_rows(out, bottom, slice(1, None, 2), slice(None))
    return out


def whole(pix_fmt: str, width: int, height: int) -> tuple[int, int]:
    """``width`` x ``height`` rounded up to whole chroma samples of ``pix_fmt`` (321 x 241
    4:2:0 to 322 x 242): the size swscale's accurate path replicates chroma exactly at."""
    across, down = layout_of(pix_fmt).subsampling
    return -(-width // across) * across, -(-height // down) * down


def bare(frame: av.VideoFrame) -> av.VideoFrame:
    """A copy of ``frame``'s samples with none of its properties: no interlaced flag
    (swscale converts it as one picture) and no chroma siting (swscale's accurate path
    replicates its chroma: :mod:`raypipe.media.rgb`), padded to whole chroma samples
    (:func:`whole`; the padding's pictures are what :func:`converted` crops away). At an
    odd width or height swscale scales the chroma by a little less than 2 instead of
    replicating it: a 321-wide 4:2:0 frame had every other column from 161 on take the
    next chroma sample (and a 241-high one 60 of its rows)."""
    width, height = whole(frame.format.name, frame.width, frame.height)
    out = av.VideoFrame(width, height, frame.format.name)
    _copy_rows(out, frame, slice(0, frame.height), slice(None))
    return out


def cropped(frame: av.VideoFrame, width: int, height: int) -> av.VideoFrame:
    """A copy of the top left ``width`` x ``height`` of ``frame`` (a padded one's picture,
    :func:`padded_to_whole`), its chroma planes whole."""
    out = av.VideoFrame(width, height, frame.format.name)
    _copy_rows(out, frame, slice(None), slice(0, height))
    return out


def padded_to_whole(pixels: np.ndarray, pix_fmt: str) -> np.ndarray:
    """RGB ``pixels`` ``(H, W, C)`` with their last column and row repeated up to whole
    chroma samples of ``pix_fmt`` (:func:`whole`), or themselves where they are whole: a
    frame swscale point-samples exactly (the top left of each block), where at an odd size
    it would scale the chroma by a little more than 1/2 (1.1-1.3% of a 321x241 frame's chroma
    samples were the ones the padded frame gives)."""
    height, width = pixels.shape[:2]
    w, h = whole(pix_fmt, width, height)
    if (w, h) == (width, height):
        return pixels
    return np.pad(pixels, ((0, h - height), (0, w - width), (0, 0)), mode="edge")


def converted(frame: av.VideoFrame, convert: Any, *, interlaced: bool) -> np.ndarray:
    """``convert`` (a bare frame to an ``(H, W, C)`` array) applied to ``frame``: to each
    of its fields on its own where ``interlaced`` and its chroma is subsampled vertically
    (:func:`apart`), else to a :func:`bare` copy; the result cropped to ``frame``'s size."""
    if interlaced and apart(frame.format.name, frame.height):
        out = fields_of(frame, convert)
    else:
        out = convert(bare(frame))
    return out[: frame.height, : frame.width]


def fields_of(frame: av.VideoFrame, convert: Any) -> np.ndarray:
    """``convert`` (a frame to an ``(h, W, C)`` array) applied to each field of ``frame``,
    the two results woven: what swscale gives for a frame flagged interlaced."""
    top, bottom = convert(field(frame, 0)), convert(field(frame, 1))
    out = np.empty((top.shape[0] * 2, *top.shape[1:]), dtype=top.dtype)
    out[0::2], out[1::2] = top, bottom
    return out


def fields_to(pixels: np.ndarray, convert: Any) -> av.VideoFrame:
    """``convert`` (an ``(h, W, C)`` array to a frame) applied to the even and the odd rows
    of ``pixels``, the two frames woven into one."""
    return weave(convert(pixels[0::2]), convert(pixels[1::2]))
