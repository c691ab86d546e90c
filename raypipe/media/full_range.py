"""RGB to full-range 8-bit YUV with chroma rounded to the nearest.

swscale's RGB to 8-bit YUV in full range (``yuvj420p``: MJPEG, JPEG stills, many Android
phones' videos) puts chroma half a step low: on random in-gamut samples its U and V came
out one below the rounded value for 51-52% of samples, with or without ``ACCURATE_RND``,
from packed or planar RGB (its luma, and limited range, round right). So an identity pass
over a full-range source changed 37-75% of its chroma samples, where a limited-range
source's come back exact (a sweep by ffmpeg's own decoding). Its 16-bit output holds the
same conversion with 8 more bits: full-range luma at 257 a level, chroma at 257 a step
around 32767.5 (fitted: 257.07 and 256.97 a step, 32766.5 at the middle, on an MJPEG
frame), so rounding those to 8 bits gives each value rounded to the nearest: against a
float64 reference 0-0.1% of samples differ, against 51% (chroma taken at 256 a step
drifted with its distance from the middle: 13% of an MJPEG frame's V one off).
:func:`wide_twin` names the 16-bit format a conversion goes through, :func:`narrowed`
brings it back.
"""

from __future__ import annotations

import av
import numpy as np

from raypipe.media.fields import plane_rows

_TWINS = {
    "yuv420p": "yuv420p16le",
    "yuvj420p": "yuv420p16le",
    "yuv422p": "yuv422p16le",
    "yuvj422p": "yuv422p16le",
    "yuv444p": "yuv444p16le",
    "yuvj444p": "yuv444p16le",
    "gray": "gray16le",
}


def wide_twin(pix_fmt: str) -> str | None:
    """The 16-bit format with ``pix_fmt``'s planes and subsampling, or None (a format
    without one: 4:1:1, 4:4:0; those keep swscale's 8-bit conversion)."""
    return _TWINS.get(pix_fmt)


def narrowed(wide: av.VideoFrame, pix_fmt: str) -> av.VideoFrame:
    """``wide`` (full-range 16-bit, from :func:`wide_twin`) as ``pix_fmt``: its luma levels
    and chroma steps, 257 each, rounded to the nearest 8-bit value."""
    import cv2  # here: an encode task of a limited-range video never imports OpenCV

    out = av.VideoFrame(wide.width, wide.height, pix_fmt)
    for index, (src, dst) in enumerate(zip(wide.planes, out.planes, strict=True)):
        width = dst.width
        values = plane_rows(src, np.uint16)[:, :width]
        # luma: level L is 257 L, so L = round(v / 257); chroma: C is 257 (C - 128) +
        # 32767.5, so C = round((v + 128.5) / 257), taken as round((v + 129) / 257): the
        # same for every 16-bit v, with no value half way (OpenCV rounds halves to even).
        # OpenCV's scaled conversion, in float32, is exact here (the nearest half is 1/514
        # away) and saturates: 0.8 against 7.6 ms a 720p plane for numpy's integer division.
        beta = 0.0 if index == 0 else 129 / 257
        plane_rows(dst)[:, :width] = cv2.convertScaleAbs(values, alpha=1 / 257, beta=beta)
    return out
