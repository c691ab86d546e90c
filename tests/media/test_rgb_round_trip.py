"""An identity pass gives the source's YUV samples back (raypipe/media/rgb.py, fields.py).

Each source is made from known planes (every sample inside the RGB gamut, so nothing
clips) and coded as users' files are: lossless H.264 at SD and HD sizes, 4:2:2, a DV
camcorder's 4:1:1 and its PAL 4:2:0, and interlaced H.264 whose two fields have different
colours. The pipeline's stages run in this process with a lossless encoder; the output's
decoded samples must be the source's decoded samples. swscale's default 8-bit path, which
truncates, brought back 0.3-1% of luma samples (1.1 steps low on average) and half of a
DV 4:1:1 source's chroma; converting an interlaced frame's RGB back as one picture gave
the bottom field the top field's colours.
"""

from __future__ import annotations

import dataclasses
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from pipeline_checks import run_in_process

from raypipe.config import ChunkConfig, EncodeConfig
from raypipe.distributed.planning import ModelFacts, VideoJob, plan_video
from raypipe.media import probe
from raypipe.media.describe import picture_lines
from raypipe.media.encode import encode_segment
from raypipe.testing import ffprobe_video, yuv_planes

X264_LOSSLESS = EncodeConfig(codec="libx264", crf=None, preset="ultrafast", options={"qp": "0"})

# name: (pix_fmt, width, height, rate, ffmpeg's coding arguments, interlaced: its fields'
# colours differ, and the decoder flags its frames interlaced, as it flags every DV frame)
SOURCES = {
    "sd_420": ("yuv420p", 96, 64, "25", ["-c:v", "libx264", "-qp", "0"], False),
    "hd_420_bt709": ("yuv420p", 1280, 32, "25", ["-c:v", "libx264", "-qp", "0"], False),
    "sd_422": ("yuv422p", 96, 64, "25", ["-c:v", "ffv1"], False),
    "dv_ntsc_411": ("yuv411p", 720, 480, "30000/1001", ["-c:v", "dvvideo"], True),
    "interlaced_h264": (
        "yuv420p", 96, 64, "25",
        ["-vf", "setfield=tff", "-c:v", "libx264", "-qp", "0", "-flags", "+ildct+ilme",
         "-x264opts", "tff=1"],
        True,
    ),
    "dv_pal_interlaced": ("yuv420p", 720, 576, "25", ["-c:v", "dvvideo"], True),
    # an odd width and height: the last chroma column and row cover one luma sample
    "odd_420": ("yuv420p", 321, 241, "25", ["-c:v", "ffv1"], False),
    # full range (MJPEG, JPEG stills, many Android phones): swscale put 8-bit chroma half
    # a step low on the way back, and 37-75% of chroma samples came back one off
    "full_420": ("yuv420p", 96, 64, "25", ["-c:v", "ffv1", "-color_range", "pc"], False),
    "full_444": ("yuv444p", 96, 64, "25", ["-c:v", "ffv1", "-color_range", "pc"], False),
}  # fmt: skip
FRAMES = 4


def _planes(pix_fmt: str, width: int, height: int, interlaced: bool, seed: int) -> bytes:
    """One frame's raw planes: luma 60..180, chroma 108..148 (inside the RGB gamut with
    any matrix); where ``interlaced`` the top field's chroma rows (even) are all below
    128 and the bottom field's (odd) all above, as a moving picture's fields can be."""
    rng = np.random.default_rng(seed)
    sub_w, sub_h = {"yuv420p": (2, 2), "yuv422p": (2, 1), "yuv411p": (4, 1), "yuv444p": (1, 1)}[
        pix_fmt
    ]
    luma = rng.integers(60, 181, (height, width), dtype=np.uint8)
    shape = (-(-height // sub_h), -(-width // sub_w))
    chroma = [rng.integers(108, 149, shape, dtype=np.uint8) for _ in range(2)]
    if interlaced:
        for c in chroma:
            c[0::2] = rng.integers(108, 119, c[0::2].shape, dtype=np.uint8)
            c[1::2] = rng.integers(138, 149, c[1::2].shape, dtype=np.uint8)
    return b"".join(p.tobytes() for p in (luma, *chroma))


def _source(directory: Path, name: str) -> Path:
    pix_fmt, width, height, rate, coding, interlaced = SOURCES[name]
    raw = b"".join(_planes(pix_fmt, width, height, interlaced, i) for i in range(FRAMES))
    path = directory / f"{name}.{'avi' if 'dv' in name else 'mkv'}"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", pix_fmt,
         "-s", f"{width}x{height}", "-r", rate, "-i", "pipe:", *coding, "-pix_fmt", pix_fmt,
         str(path)],
        input=raw, check=True,
    )  # fmt: skip
    return path


def _exact_share(source: np.ndarray, output: np.ndarray) -> tuple[float, float]:
    """The share of ``output``'s samples equal to ``source``'s (subsampled chroma against
    each of the samples that hold it in the output's finer chroma: a 4:1:1 source's in
    4:2:2, an odd-sized 4:2:0 source's in 4:4:4), and the mean difference."""
    if output.shape != source.shape:
        down, across = (-(-o // s) for o, s in zip(output.shape, source.shape, strict=True))
        source = np.repeat(np.repeat(source, down, axis=0), across, axis=1)
        source = source[: output.shape[0], : output.shape[1]]
    diff = output.astype(np.int32) - source
    return float((diff == 0).mean()), float(diff.mean())


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_an_identity_pass_gives_the_sources_samples_back(tmp_path: Path, name: str) -> None:
    source = _source(tmp_path, name)
    picture = probe(str(source)).picture_format
    assert picture.interlaced == SOURCES[name][5]
    assert ("interlaced" in picture_lines(picture)[0]) == picture.interlaced  # raypipe probe
    out = tmp_path / "out.mkv"
    pix_fmt, width, height = SOURCES[name][:3]
    odd = width % 2 or height % 2  # libx264 codes 4:2:0 at even sizes only
    encode = dataclasses.replace(X264_LOSSLESS, pix_fmt="yuv444p") if odd else X264_LOSSLESS
    run_in_process(source, out, "builtin:identity", 2, encode)
    src, got = yuv_planes(source), yuv_planes(out)
    assert len(src) == len(got) == FRAMES
    for i, (a_frame, b_frame) in enumerate(zip(src, got, strict=True)):
        for plane, a, b in zip("YUV", a_frame, b_frame, strict=True):
            share, bias = _exact_share(a, b)
            assert share >= 0.99 and abs(bias) < 0.02, (
                f"frame {i} {plane}: {share:.1%} of samples back exact, {bias:+.2f} on average"
            )
    # DV says no field order (FFmpeg: unknown); standard-definition DV is bottom field
    # first, and an output tagged progressive tells players not to deinterlace it
    want = "bb" if name.startswith("dv_") else ffprobe_video(source).field_order
    assert ffprobe_video(out).field_order == want


def test_an_odd_sized_420_source_keeps_its_size_and_samples_in_a_codec_that_takes_it(
    tmp_path: Path,
) -> None:
    """FFV1 and VP9 code 4:2:0 at any size (as the source here is coded); raypipe refused
    every odd size in 4:2:0. It takes them now in the encoders that do (the conversion:
    the next test); x264 still refuses, saying what to pass instead."""
    source = _source(tmp_path, "odd_420")
    out = tmp_path / "out.mkv"
    run_in_process(source, out, "builtin:identity", 2, EncodeConfig(codec="ffv1"))
    src, got = yuv_planes(source), yuv_planes(out)
    assert len(src) == len(got) == FRAMES
    for i, (a_frame, b_frame) in enumerate(zip(src, got, strict=True)):
        for plane, a, b in zip("YUV", a_frame, b_frame, strict=True):
            assert a.shape == b.shape, (plane, a.shape, b.shape)  # 4:2:0 at 321x241
            share, bias = _exact_share(a, b)
            assert share >= 0.99 and abs(bias) < 0.02, (
                f"frame {i} {plane}: {share:.1%} of samples back exact, {bias:+.2f} on average"
            )
    # the chunk's row carries the encoder's refusal (run_in_process asserts it has none)
    with pytest.raises(AssertionError, match="in libx264, .* pass --pix-fmt yuv444p"):
        run_in_process(source, tmp_path / "x264.mkv", "builtin:identity", 2, X264_LOSSLESS)


@pytest.mark.parametrize(
    ("output", "scale", "refused"),
    [
        ("out.mp4", 1.0, True),  # libx264, 4:2:0 at 321x241
        ("out.webm", 1.0, False),  # libvpx-vp9 takes any size
        ("out.mp4", 2.0, False),  # an upscaler's 642x482
        ("out.mp4", None, False),  # a model whose output size planning cannot know
    ],
)
def test_an_output_size_the_encoder_cannot_take_fails_at_planning(
    tmp_path: Path, output: str, scale: float | None, refused: bool
) -> None:
    """The refusal above came from the first chunk's encode: after that chunk was decoded
    and run through the model (seconds to minutes on a large model, per video in an
    archive). Planning knows the source's size, the model's scale and the output's
    encoder, so it refuses the video before any work, with the same advice."""
    source = _source(tmp_path, "odd_420")
    job = VideoJob(uri=str(source), output=str(tmp_path / output))
    planned = plan_video(
        job,
        ChunkConfig(chunk_frames=2),
        resume=False,
        key=None,
        model=ModelFacts(output_scale=scale),
        encode=EncodeConfig(),
    )
    if not refused:
        assert planned.result is None and planned.rows
        return
    assert planned.result is not None and planned.result.status == "failed"
    assert planned.result.error_type == "ConfigError"
    assert planned.result.error_message == (
        "output 'out.mp4': yuv420p needs a width that is a multiple of 2 and a height that "
        "is a multiple of 2 in libx264, the frames are 321x241; pass --pix-fmt yuv444p "
        "(pix_fmt='yuv444p' in Python), or --codec libvpx-vp9 or ffv1 (which take odd "
        "sizes), or use a model whose output size is even"
    )
    assert not planned.rows


def test_rgb_at_an_odd_size_goes_to_420_as_it_would_padded_to_whole_chroma_samples(
    tmp_path: Path,
) -> None:
    """The encoder's RGB -> 4:2:0 at 321x241 takes each chroma sample from the top left of
    its block, as at an even size: the output's planes are those of the same frames
    padded by their last column and row (with swscale left to it, 1.1-1.3% of the chroma
    samples were). A model that makes new colours per pixel (random RGB here) shows it;
    an identity pass, whose blocks share one colour, does not."""
    rng = np.random.default_rng(5)
    frames = rng.integers(40, 200, (2, 241, 321, 3), dtype=np.uint8)
    padded = np.pad(frames, ((0, 0), (0, 1), (0, 1), (0, 0)), mode="edge")
    planes = []
    for name, pixels in (("odd.nut", frames), ("padded.nut", padded)):
        segment = encode_segment(
            pixels, np.array([0, 1]), time_base=Fraction(1, 25), rate=Fraction(25),
            config=EncodeConfig(codec="ffv1"),
        )  # fmt: skip
        (tmp_path / name).write_bytes(segment.container)
        planes.append(yuv_planes(tmp_path / name))
    for odd, even in zip(*planes, strict=True):
        for a, b in zip(odd, even, strict=True):
            assert np.array_equal(a, b[: a.shape[0], : a.shape[1]])


def test_full_range_chroma_far_from_grey_comes_back(tmp_path: Path) -> None:
    """Full-range samples made from random in-gamut RGB (so chroma spans most of its
    range, as an MJPEG camera's does): swscale's 8-bit chroma came back half a step low
    (about half the samples one off), and read through its 16 bits at 256 a step, not
    257, it drifted with the distance from grey (13% of an MJPEG frame's V one off)."""
    rng = np.random.default_rng(7)
    height, width = 64, 96
    frames = []
    for _ in range(FRAMES):
        r, g, b = (rng.integers(0, 256, (height, width)).astype(float) for _ in range(3))
        y = 0.299 * r + 0.587 * g + 0.114 * b  # BT.601, full range
        u = -0.168736 * r - 0.331264 * g + 0.5 * b + 128
        v = 0.5 * r - 0.418688 * g - 0.081312 * b + 128
        frames.append(np.stack([np.clip(np.rint(p), 0, 255) for p in (y, u, v)]).astype(np.uint8))
    source = tmp_path / "full_wide.mkv"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", "yuv444p",
         "-s", f"{width}x{height}", "-r", "25", "-i", "pipe:", "-c:v", "ffv1",
         "-color_range", "pc", "-colorspace", "bt470bg", "-pix_fmt", "yuv444p", str(source)],
        input=b"".join(f.tobytes() for f in frames), check=True,
    )  # fmt: skip
    out = tmp_path / "out.mkv"
    run_in_process(source, out, "builtin:identity", 2, EncodeConfig(codec="ffv1"))
    assert ffprobe_video(out).range == "pc"
    for i, (a_frame, b_frame) in enumerate(zip(yuv_planes(source), yuv_planes(out), strict=True)):
        for plane, a, b in zip("YUV", a_frame, b_frame, strict=True):
            share, bias = _exact_share(a, b)
            assert share >= 0.97 and abs(bias) < 0.02, (
                f"frame {i} {plane}: {share:.1%} of samples back exact, {bias:+.2f} on average"
            )
