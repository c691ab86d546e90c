"""The same frames encode to the same bits, every time: what makes a resumed run equal a clean
one byte for byte (tests/distributed/test_resume_key.py).

x264's AVX-512 routines do not (96- or 320-pixel-wide frames: other bits on most encodes
of one process), so raypipe holds x264 to AVX2 where the CPU has AVX-512
(:func:`raypipe.media.encode.x264_cpu_params`). On a CPU without AVX-512 the first test
passes with or without that; the second skips.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction

import av
import av.logging
import numpy as np
import pytest

from raypipe.config import EncodeConfig
from raypipe.media import encode as encode_module
from raypipe.media.encode import encode_segment, x264_cpu_params

RATE = Fraction(25)
TIME_BASE = Fraction(1, 12800)


def _frames(width: int, height: int, n: int = 8) -> np.ndarray:
    """Moving gradients with a checker of darker squares: enough motion for B-frames and
    x264's macroblock tree to have work."""
    yy, xx = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(n):
        rgb = np.stack([(xx + 3 * i) % 256, (2 * yy + i) % 256, (xx + yy + 5 * i) // 2 % 256], -1)
        rgb = rgb.astype(np.uint8)
        rgb[(yy // 16 + xx // 16 + i) % 7 == 0] //= 2
        frames.append(rgb)
    return np.stack(frames)


def _encode(frames: np.ndarray, config: EncodeConfig) -> bytes:
    pts = np.arange(len(frames), dtype=np.int64) * 512
    segment = encode_segment(
        frames, pts, time_base=TIME_BASE, rate=RATE, config=config, end_pts=512 * len(frames)
    )
    return segment.to_bytes()


@pytest.mark.parametrize("width,height", [(96, 64), (320, 240)])
def test_the_same_frames_encode_to_the_same_bits(width: int, height: int) -> None:
    frames = _frames(width, height)
    config = EncodeConfig()  # libx264, crf 18, medium: the macroblock tree is on
    digests = set()
    kept = []  # other allocations between encodes, as in a worker that has run other tasks
    for i in range(10):
        kept.append(np.full(1000 + 37_000 * i, i, dtype=np.uint8))
        copy = np.empty_like(frames)  # the frames at another address each time
        copy[...] = frames
        digests.add(hashlib.sha256(_encode(copy, config)).hexdigest())
    assert len(digests) == 1


@contextmanager
def _x264_log() -> Iterator[list[str]]:
    """The lines FFmpeg logs (x264's "using cpu capabilities: ..." among them)."""
    level = av.logging.get_level()
    av.logging.set_level(av.logging.INFO)
    lines: list[str] = []
    try:
        with av.logging.Capture() as captured:
            yield lines
    finally:
        av.logging.set_level(level)
    lines.extend(message for _, _, message in captured)


def _capabilities(config: EncodeConfig) -> str:
    with _x264_log() as lines:
        _encode(_frames(96, 64, 2), config)
    (line,) = [line for line in lines if "cpu capabilities" in line]
    return line


@pytest.mark.skipif(
    not encode_module._cpu_has_avx512(), reason="this CPU has no AVX-512: x264 runs as it is"
)
def test_x264_runs_without_its_avx512_code_unless_the_user_asks() -> None:
    assert x264_cpu_params("libx264") == {"x264-params": "asm=AVX2"}
    assert x264_cpu_params("libx265") == {} and x264_cpu_params("ffv1") == {}
    assert "AVX2" in _capabilities(EncodeConfig()).split()
    assert "AVX512" not in _capabilities(EncodeConfig()).split()
    # the user's own asm comes after raypipe's and wins (here: x264's own detection)
    own = EncodeConfig(options={"x264-params": "asm=auto"})
    assert "AVX512" in _capabilities(own).split()
