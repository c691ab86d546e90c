"""Decoded frames to upright RGB, the same whichever decoder made them.

NVDEC hands frames over semi-planar (``nv12``, ``p010le``: the chroma planes interleaved),
the software decoders planar (``yuv420p``, ``yuv420p10le``), with the same samples: H.264
and HEVC decoding is exact by the standards. swscale's direct ``nv12``/``nv16`` to RGB path
rounds chroma differently from its planar path (up to 3 code values, seen on an H200), so
:class:`RgbConverter` first makes a semi-planar frame planar, which only moves samples
(exact, tested for every pair in :data:`PLANAR_OF`), then converts it as the software
decoder's frames are converted (:mod:`raypipe.media.picture` says how).
"""

from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

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
        rgb = self._to_rgb.reformat(
            frame,
            format=self._format,
            src_colorspace=self._matrix,
            src_color_range=self._range,
            interpolation=Interpolation.POINT,  # chroma replicated: picture.py
        )
        return self._picture.upright(rgb.to_ndarray())
