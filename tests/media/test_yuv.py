"""The YUV hand-off's media side (raypipe/media/yuv.py): swscale's YUV -> RGB read as
look-up tables gives swscale's own bits at even sizes, decode tasks pack 4:2:0 frames
without their line padding (NVDEC's nv12 as its planar twin), and the sources the
hand-off does not take say why."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from raypipe.config import ChunkConfig
from raypipe.media import decode_chunk, plan_chunks, probe
from raypipe.media.colour import ColourTags
from raypipe.media.picture import PictureFormat
from raypipe.media.rgb import RgbConverter
from raypipe.media.yuv import (
    YuvInput,
    YuvPacker,
    YuvRule,
    handoff_problem,
    packed_to_rgb,
    rgb_tables,
)


def random_frame(width: int, height: int, seed: int, pix_fmt: str = "yuv420p") -> av.VideoFrame:
    """Every sample random over 0..255 (outside the limited range too: clipping shows)."""
    rng = np.random.default_rng(seed)
    frame = av.VideoFrame(width, height, pix_fmt)
    for plane in frame.planes:
        plane.update(rng.integers(0, 256, plane.buffer_size, dtype=np.uint8).tobytes())
    return frame


def picture(width: int, height: int, matrix: str, range_: str, **kw: object) -> PictureFormat:
    tags = ColourTags(matrix=matrix, range=range_)
    return PictureFormat(coded_width=width, coded_height=height, colour=tags, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("matrix", "range_"), [("bt709", "tv"), ("smpte170m", "pc"), ("bt2020nc", "tv")]
)
def test_the_tables_give_swscales_bits_at_even_sizes(matrix: str, range_: str) -> None:
    tables = rgb_tables(matrix, range_)
    assert tables.r.dtype == tables.g.dtype == tables.b.dtype == np.uint8
    # G's columns are fewer than the (U, V) pairs (a column of 256 per pair would be 16
    # MiB): swscale's accurate rounding (media/rgb.py) gives 6,548 (1.6 MiB) for BT.709
    # and 29,863 (7.3 MiB) for BT.2020, which the graph carries as one initializer
    assert len(tables.g) <= 32768 * 256
    for i, (width, height) in enumerate([(1280, 720), (1366, 768), (98, 64), (642, 362)]):
        pic = picture(width, height, matrix, range_)
        assert (pic.matrix, pic.range) == (matrix, range_)
        frame = random_frame(width, height, seed=i)
        expected = RgbConverter(pic)(frame)
        packed = YuvPacker(pic)(frame)
        assert packed.shape == (width * height * 3 // 2,)
        got = packed_to_rgb(packed[None], height, width, tables)[0]
        np.testing.assert_array_equal(got, expected)


def test_the_tables_are_read_once_per_matrix_and_range() -> None:
    assert rgb_tables("bt709", "tv") is rgb_tables("bt709", "tv")
    assert rgb_tables("bt709", "tv") is not rgb_tables("bt709", "pc")
    full, limited = rgb_tables("bt709", "pc"), rgb_tables("bt709", "tv")
    assert full.r[235 + 128 * 256] == 235 and limited.r[235 + 128 * 256] == 255


def test_nv12_is_packed_as_its_planar_twin() -> None:
    pic = picture(64, 48, "bt709", "tv")
    frame = random_frame(64, 48, seed=7)
    packer = YuvPacker(pic)
    np.testing.assert_array_equal(packer(frame.reformat(format="nv12")), packer(frame))
    # packed I420: Y, then U, then V, each without line padding
    planes = [np.frombuffer(p, np.uint8).reshape(-1, p.line_size) for p in frame.planes]
    expected = [planes[0][:, :64], planes[1][:24, :32], planes[2][:24, :32]]
    np.testing.assert_array_equal(packer(frame), np.concatenate([p.reshape(-1) for p in expected]))


@pytest.mark.parametrize(
    ("kw", "problem"),
    [
        ({}, ""),
        ({"pix_fmt": "yuvj420p"}, ""),
        ({"pix_fmt": "nv12"}, ""),
        ({"pix_fmt": "yuv420p10le"}, "yuv420p10le; the YUV hand-off takes 8-bit 4:2:0"),
        ({"pix_fmt": "yuv444p"}, "yuv444p; the YUV hand-off takes 8-bit 4:2:0"),
        ({"pix_fmt": "yuv422p"}, "yuv422p"),
        ({"rotation_degrees": 90}, "rotated 90 degrees"),
        ({"mirrored": True}, "the source is mirrored"),
        ({"interlaced": True}, "the source is interlaced"),
        ({"coded_width": 97}, "97x64; the YUV hand-off takes even sizes"),
    ],
)
def test_what_the_handoff_takes(kw: dict[str, object], problem: str) -> None:
    args: dict[str, object] = {"coded_width": 96, "coded_height": 64, **kw}
    pic = PictureFormat(**args)  # type: ignore[arg-type]
    got = handoff_problem(pic)
    assert (got == "") == (problem == "") and problem in got
    assert YuvRule().problem(pic) == got
    if got:
        with pytest.raises(ValueError, match="no YUV hand-off for this source"):
            YuvPacker(pic)


def test_a_frame_that_is_not_8bit_420_is_refused_by_the_packer() -> None:
    packer = YuvPacker(picture(64, 48, "bt709", "tv"))
    for pix_fmt in ("yuv420p10le", "yuv422p", "yuv444p"):
        with pytest.raises(ValueError, match="probed as 8-bit 4:2:0"):
            packer(random_frame(64, 48, seed=1, pix_fmt=pix_fmt))


def test_frames_the_model_pads_go_as_rgb() -> None:
    assert YuvRule(pad_multiple=32).problem(picture(1280, 720, "bt709", "tv")) == (
        "1280x720 frames are padded to multiples of 32 (pad_multiple) on RGB"
    )
    assert YuvRule(pad_multiple=16).problem(picture(1280, 720, "bt709", "tv")) == ""


def test_a_decoded_chunk_handed_off_converts_to_the_rgb_chunk(clips: dict[str, Path]) -> None:
    info = probe(str(clips["bframes_aac"]))
    chunk = plan_chunks(info, ChunkConfig(chunk_frames=13)).chunks[1]
    rgb = decode_chunk(info, chunk)
    yuv = decode_chunk(info, chunk, handoff=YuvRule())
    assert (rgb.handoff, yuv.handoff, yuv.handoff_note) == ("rgb", "yuv", "")
    source = YuvInput.of(info.picture_format)
    assert yuv.frames.shape == (chunk.n_frames, source.packed_size)
    np.testing.assert_array_equal(yuv.pts, rgb.pts)
    tables = rgb_tables(source.matrix, source.range)
    np.testing.assert_array_equal(
        packed_to_rgb(yuv.frames, source.height, source.width, tables), rgb.frames
    )


def test_a_source_the_handoff_does_not_take_decodes_to_rgb_saying_why(
    traits: dict[str, Path],
) -> None:
    info = probe(str(traits["full_range_444"]))
    chunk = plan_chunks(info, ChunkConfig(chunk_frames=6)).chunks[0]
    decoded = decode_chunk(info, chunk, handoff=YuvRule())
    assert decoded.handoff == "rgb" and "yuvj444p; the YUV hand-off takes" in decoded.handoff_note
    assert decoded.frames.shape == (chunk.n_frames, 64, 96, 3)


def test_a_yuvj420p_frame_converts_as_full_range_yuv420p() -> None:
    pic = PictureFormat(coded_width=96, coded_height=64, pix_fmt="yuvj420p")
    assert pic.range == "pc" and not handoff_problem(pic)
    frame = random_frame(96, 64, seed=3, pix_fmt="yuvj420p")
    tables = rgb_tables(pic.matrix, pic.range)
    got = packed_to_rgb(YuvPacker(pic)(frame)[None], 64, 96, tables)[0]
    np.testing.assert_array_equal(got, RgbConverter(pic)(frame))
