"""Semi-planar frames (NVDEC's nv12, p010le) convert to the same RGB as the planar frames
the software decoder gives for the same samples."""

from __future__ import annotations

import av
import numpy as np
import pytest

from raypipe.media.colour import ColourTags
from raypipe.media.picture import PictureFormat
from raypipe.media.rgb import PLANAR_OF, RgbConverter


def _random_frame(pix_fmt: str, width: int, height: int, seed: int) -> av.VideoFrame:
    """A planar YUV frame of in-range random samples (16-bit formats: the 10-bit range
    shifted up, as 16-bit YUV is)."""
    rng = np.random.default_rng(seed)
    frame = av.VideoFrame(width, height, pix_fmt)
    bits = 16 if "16" in pix_fmt else 10 if "10" in pix_fmt else 8
    for plane in frame.planes:
        if bits == 8:
            samples = rng.integers(16, 236, plane.buffer_size, dtype=np.uint8)
        else:
            low, high = (64, 941) if bits == 10 else (64 << 6, 941 << 6)
            samples = rng.integers(low, high, plane.buffer_size // 2, dtype=np.uint16)
        plane.update(samples.tobytes())
    return frame


def _samples(frame: av.VideoFrame) -> list[bytes]:
    """Each plane's samples, row by row, without the rows' padding (PyAV 18.1.1 pads the
    rows of a frame swscale makes where 18.1.0 did not; the padding is anything)."""
    size = 2 if frame.format.components[0].bits > 8 else 1
    return [
        b"".join(
            bytes(plane)[row * plane.line_size : row * plane.line_size + plane.width * size]
            for row in range(plane.height)
        )
        for plane in frame.planes
    ]


@pytest.mark.parametrize("semi_planar", sorted(PLANAR_OF))
def test_a_semi_planar_frame_converts_as_its_planar_twin(semi_planar: str) -> None:
    planar = PLANAR_OF[semi_planar]
    source = _random_frame(planar, 64, 48, seed=len(semi_planar))
    semi = source.reformat(format=semi_planar)
    back = semi.reformat(format=planar)
    assert _samples(back) == _samples(source)  # samples kept
    picture = PictureFormat(
        coded_width=64, coded_height=48, pix_fmt=planar, colour=ColourTags(matrix="bt709")
    )
    convert = RgbConverter(picture)
    expected = convert(source)
    assert expected.dtype == (np.uint8 if picture.bit_depth == 8 else np.uint16)
    np.testing.assert_array_equal(convert(semi), expected)


def test_swscale_converts_nv12_directly_with_other_rounding() -> None:
    """Why the converter makes nv12 planar first: swscale's direct nv12 -> RGB path differs
    from its yuv420p one (an H200's NVDEC test found it: up to 3 code values)."""
    source = _random_frame("yuv420p", 64, 48, seed=1)
    picture = PictureFormat(coded_width=64, coded_height=48, colour=ColourTags(matrix="bt709"))
    expected = RgbConverter(picture)(source)
    direct = source.reformat(format="nv12").reformat(
        format="rgb24", src_colorspace="ITU709", src_color_range="MPEG", interpolation="POINT"
    )
    assert np.abs(direct.to_ndarray().astype(int) - expected).max() > 0
