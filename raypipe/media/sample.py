"""The demo's sample video, made on the spot: no download, no file shipped with raypipe.

:func:`write_sample` writes an H.264 MP4 (B-frames, a keyframe every ``gop`` frames, the
usual ``yuv420p``) of moving colour bands with a frame counter bar, and a stereo AAC tone,
so a first run shows every part of the pipeline: chunks cut at keyframes, frames reordered
by the decoder, audio copied into the output.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from raypipe.media.encode import x264_cpu_params

SAMPLE_RATE_HZ = 48000


def sample_frame(index: int, width: int, height: int) -> np.ndarray:
    """Frame ``index``: diagonal colour bands moving by 4 px a frame, and a bar along the
    top whose length is the frame's index (in 4-px steps, wrapping at the width)."""
    y, x = np.mgrid[0:height, 0:width]
    phase = (x + y + 4 * index) % 256
    frame = np.stack([phase, (phase * 3 + 85) % 256, (255 - phase)], axis=-1).astype(np.uint8)
    bar = (4 * index) % width
    frame[: max(2, height // 24), :bar] = 255
    return frame


def write_sample(
    path: str,
    *,
    n_frames: int = 120,
    width: int = 320,
    height: int = 180,
    fps: int = 24,
    gop: int = 24,
) -> None:
    """Write the sample (``n_frames`` at ``fps``, with audio as long as the video) to
    ``path``, an MP4."""
    with av.open(path, mode="w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.gop_size = gop
        video.options = {
            "bf": "2",
            "crf": "20",
            "preset": "veryfast",
            "sc_threshold": "0",
            **x264_cpu_params("libx264"),  # the same sample every time
        }
        audio = out.add_stream("aac", rate=SAMPLE_RATE_HZ, layout="stereo")
        samples = 0  # audio written so far, in 1024-sample AAC frames, kept up with the video
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(sample_frame(i, width, height), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(video.encode(frame))
            while samples < (i + 1) * SAMPLE_RATE_HZ // fps:
                out.mux(audio.encode(_tone(samples)))
                samples += _AAC_FRAME
        out.mux(video.encode(None))
        out.mux(audio.encode(None))


_AAC_FRAME = 1024


def _tone(first: int) -> av.AudioFrame:
    """1024 samples of a 440/660 Hz stereo tone from sample ``first``."""
    t = np.arange(first, first + _AAC_FRAME) / SAMPLE_RATE_HZ
    tone = 0.2 * np.sin(2 * np.pi * np.array([[440.0], [660.0]]) * t)
    frame = av.AudioFrame.from_ndarray(tone.astype(np.float32), format="fltp", layout="stereo")
    frame.sample_rate, frame.pts = SAMPLE_RATE_HZ, first
    frame.time_base = Fraction(1, SAMPLE_RATE_HZ)
    return frame
