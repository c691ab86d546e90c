"""Pre/post-processing on the host: uint8 (or uint16) RGB frames to a model's input and its
output back to frames, in numpy and OpenCV.

The model input is ``(pixel * scale - mean) / std`` per channel, in the model's channel
order (``mean``/``std`` of a BGR model are given B, G, R), cast to the element type the
model declares (float32 or float16). A model whose input is uint8 gets the raw pixels
(colour order and layout still apply; ``scale``, ``mean`` and ``std`` are not used), and a
uint8 output is taken as pixels as it is (``output_range`` is not used). uint16 frames (16
bits per channel) are scaled so the model sees the values 8-bit frames give.

This is the definition raypipe's other path, pre/post-processing inside the ONNX graph
(:mod:`raypipe.infer.ingraph`), must match bit for bit.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from raypipe.errors import ModelLoadError
from raypipe.infer.sidecar import ModelSpec


def _check_frames(frames: np.ndarray) -> np.ndarray:
    if isinstance(frames, np.ndarray):
        if frames.dtype in (np.uint8, np.uint16) and frames.ndim == 4 and frames.shape[3] == 3:
            return frames
        got = f"{frames.dtype} array of shape {frames.shape}"
    else:
        got = type(frames).__name__
    raise ValueError(
        f"frames must be a uint8 array (n, height, width, 3) RGB (uint16 at 16 bits per "
        f"channel), got {got}"
    )


_DEEP_TO_8BIT = 257  # 65535 / 255: a 16-bit level per 8-bit level


def preprocess(frames: np.ndarray, spec: ModelSpec, dtype: npt.DTypeLike) -> np.ndarray:
    """uint8 (or uint16) RGB frames ``(n, H, W, 3)`` -> the model input of ``spec`` as
    ``dtype``; uint16 frames are scaled to the values uint8 ones give (and rounded to 8
    bits for a uint8 model input)."""
    x = _check_frames(frames)
    target = np.dtype(dtype)
    scale = np.float32(spec.scale)
    if x.dtype == np.uint16:
        if target == np.uint8:
            x = ((x.astype(np.uint32) + _DEEP_TO_8BIT // 2) // _DEEP_TO_8BIT).astype(np.uint8)
        else:
            scale = np.float32(spec.scale * 255.0 / 65535.0)
    if target == np.uint8:
        if spec.color == "BGR":
            x = x[..., ::-1]
        if spec.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x)
    if target not in (np.float32, np.float16):
        raise ValueError(f"model input dtype must be float32, float16 or uint8, got {target}")
    if spec.layout == "NCHW":
        # Per frame, OpenCV splits the interleaved pixels into planes (SIMD) and one numpy
        # pass casts and scales each plane into place: on 720p this is a third faster than
        # a strided transpose-cast, and the values are the same (uint8 -> float32, * scale).
        n, height, width, _ = x.shape
        out = np.empty((n, 3, height, width), dtype=np.float32)
        for i in range(n):
            planes = cv2.split(np.ascontiguousarray(x[i]))
            if spec.color == "BGR":
                planes = planes[::-1]
            for c, plane in enumerate(planes):
                np.multiply(plane, scale, out=out[i, c])
    else:
        if spec.color == "BGR":
            x = x[..., ::-1]
        out = np.empty(x.shape, dtype=np.float32)
        np.multiply(x, scale, out=out)  # one pass: cast and scale
    shape = [1, 1, 1, 1]
    shape[spec.channel_axis] = 3
    if any(spec.mean):
        out -= np.array(spec.mean, dtype=np.float32).reshape(shape)
    if any(s != 1.0 for s in spec.std):
        out /= np.array(spec.std, dtype=np.float32).reshape(shape)
    return out if target == np.float32 else out.astype(target)


def postprocess(output: np.ndarray, spec: ModelSpec, dtype: npt.DTypeLike = np.uint8) -> np.ndarray:
    """Model output (``spec`` layout, 3 or 1 channels) -> RGB frames ``(n, H', W', 3)`` of
    ``dtype`` (uint8, or uint16 for 16 bits per channel).

    ``output_range`` maps linearly to 0..255 (0..65535 for uint16), rounded half to even
    (``np.rint``) and clipped; a uint8 output is taken as 8-bit pixels (times 257 for
    uint16); one channel is repeated to three. The size may differ from the input's.
    """
    if np.dtype(dtype) == np.uint16:
        return _postprocess_deep(output, spec)
    y = np.asarray(output)
    if y.ndim != 4:
        raise ModelLoadError(
            f"model output has shape {y.shape}; raypipe expects a rank-4 image batch "
            f"({spec.layout})"
        )
    channels = y.shape[spec.channel_axis]
    if channels not in (1, 3):
        raise ModelLoadError(
            f"model output has shape {y.shape}, {channels} on the channel axis {spec.channel_axis} "
            f"({spec.layout}); raypipe expects 3 channels (or 1, repeated to 3)"
        )
    if (
        y.dtype == np.float32
        and spec.layout == "NCHW"
        and channels == 3
        and spec.output_range[0] == 0.0
        and spec.output_range[1] > 0.0
    ):
        return _postprocess_planes(y, spec)
    if y.dtype == np.uint8:
        pixels = y
    else:
        lo, hi = spec.output_range
        values = y.astype(np.float32)  # a copy, worked on in place
        if lo != 0.0:
            values -= np.float32(lo)
        values *= np.float32(255.0 / (hi - lo))
        np.rint(values, out=values)
        np.clip(values, 0.0, 255.0, out=values)
        pixels = values.astype(np.uint8)
    if spec.layout == "NCHW":
        pixels = pixels.transpose(0, 2, 3, 1)
    if channels == 1:
        return np.repeat(pixels, 3, axis=3)
    if spec.color == "BGR":
        pixels = pixels[..., ::-1]
    return np.ascontiguousarray(pixels)


def _postprocess_deep(output: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """:func:`postprocess` to uint16 frames."""
    y = np.asarray(output)
    if y.ndim != 4 or y.shape[spec.channel_axis] not in (1, 3):
        return postprocess(y, spec)  # raises the shape error
    if y.dtype == np.uint8:
        pixels = y.astype(np.uint16) * np.uint16(_DEEP_TO_8BIT)
    else:
        lo, hi = spec.output_range
        values = y.astype(np.float32)
        if lo != 0.0:
            values -= np.float32(lo)
        values *= np.float32(65535.0 / (hi - lo))
        np.rint(values, out=values)
        np.clip(values, 0.0, 65535.0, out=values)
        pixels = values.astype(np.uint16)
    if spec.layout == "NCHW":
        pixels = pixels.transpose(0, 2, 3, 1)
    if pixels.shape[3] == 1:
        return np.repeat(pixels, 3, axis=3)
    if spec.color == "BGR":
        pixels = pixels[..., ::-1]
    return np.ascontiguousarray(pixels)


def _postprocess_planes(y: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """:func:`postprocess` of a float32 NCHW RGB/BGR output with range ``(0, hi)``, per plane.

    Each plane is clipped to ``[0, hi]`` in a small reused buffer, then OpenCV scales it by
    ``255 / hi`` in float32, rounds half to even and saturates to uint8
    (``convertScaleAbs``; the values are non-negative, so its absolute value changes
    nothing), and merges the three planes into interleaved pixels. Bit for bit what the
    generic path gives (scale, ``np.rint``, clip, cast), about three times faster on 720p,
    and the model's output array is left untouched.
    """
    n, _, height, width = y.shape
    hi = float(spec.output_range[1])
    alpha = float(np.float32(255.0 / hi))
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    clipped = np.empty((height, width), dtype=np.float32)
    order = (2, 1, 0) if spec.color == "BGR" else (0, 1, 2)
    for i in range(n):
        planes = []
        for c in order:
            np.clip(y[i, c], 0.0, hi, out=clipped)
            planes.append(cv2.convertScaleAbs(clipped, alpha=alpha))
        merged = cv2.merge(planes, dst=out[i])
        if not np.shares_memory(merged, out):  # OpenCV wrote elsewhere: keep its result
            out[i] = merged
    return out
