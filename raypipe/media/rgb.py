"""Decoded frames to upright RGB, the same whichever decoder made them.

NVDEC hands frames over semi-planar (``nv12``, ``p010le``: the chroma planes interleaved),
the software decoders planar (``yuv420p``, ``yuv420p10le``), with the same samples: H.264
and HEVC decoding is exact by the standards. swscale's direct ``nv12``/``nv16`` to RGB path
rounds chroma differently from its planar path (up to 3 code values, seen on an H200), so
:class:`RgbConverter` first makes a semi-planar frame planar, which only moves samples
(exact, tested for every pair in :data:`PLANAR_OF`), then converts it as the software
decoder's frames are converted (:mod:`raypipe.media.picture` says how).

Rounding: swscale's default path for 8-bit 4:2:0, 4:2:2 and 4:1:1 to RGB (its SIMD
special converters) truncates, so every pass through RGB and back darkened the picture by
about one luma step (on 720p frames 0.3% of luma samples came back exact, 1.1 steps low on
average) and mangled 4:1:1 chroma (a DV camcorder's: half the samples off, by up to 79).
The converter takes swscale's accurate path instead (``ACCURATE_RND`` with
``FULL_CHR_H_INT``): every value rounded to the nearest, 99.9% of samples back exact. That
path honours a frame's chroma siting, which would interpolate the chroma instead of
replicating it, so it gets a bare copy of each frame's samples (:func:`fields.bare`). It
costs about 2.6 ms more CPU a 720p frame than the truncating path (3.0 against 0.4 ms,
one thread; ``benchmarks/README.md``, session 50). Deeper and 4:4:4 sources took that
path already.
"""

from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from raypipe.media import fields
from raypipe.media.colour import sws_colorspace, sws_range
from raypipe.media.picture import PictureFormat

# each semi-planar format and the planar one with the same samples
PLANAR_OF = {
    "nv12": "yuv420p",
    "nv21": "yuv420p",
    "nv16": "yuv422p",
    "nv24": "yuv444p",
    "nv42": "yuv444p",
    "p010le": "yuv420p10le",
    "p016le": "yuv420p16le",
    "p210le": "yuv422p10le",
    "p216le": "yuv422p16le",
    "p410le": "yuv444p10le",
    "p416le": "yuv444p16le",
}


ACCURATE = Interpolation.POINT | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
"""swscale's flags for YUV -> RGB: chroma replicated (``POINT`` on a frame with no chroma
siting: picture.py), every value rounded to the nearest (the module docstring)."""


class RgbConverter:
    """One chunk's frames to ``picture``'s RGB (``rgb24`` or ``rgb48le``), upright; one
    swscale context per step, reused for every frame."""

    def __init__(self, picture: PictureFormat) -> None:
        self._picture = picture
        self._format = picture.rgb_format
        self._matrix = sws_colorspace(picture.matrix)
        self._range = sws_range(picture.range)
        self._to_planar = VideoReformatter()
        self._to_rgb = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        planar = PLANAR_OF.get(frame.format.name)
        if planar is not None:
            frame = self._to_planar.reformat(frame, format=planar)
        rgb = fields.converted(frame, self._rgb, interlaced=self._picture.interlaced)
        return self._picture.upright(rgb)

    def _rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """``frame`` (a bare copy: no chroma siting, no interlaced flag) to RGB, each
        value rounded to the nearest (swscale's accurate path; its default 8-bit path
        truncates: the module docstring)."""
        return self._to_rgb.reformat(
            frame,
            format=self._format,
            src_colorspace=self._matrix,
            src_color_range=self._range,
            interpolation=ACCURATE,
            threads=1,
        ).to_ndarray()
