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

import functools

import cv2
import numpy as np
import numpy.typing as npt

from raypipe.errors import ModelLoadError
from raypipe.infer.sidecar import ModelSpec

BAND_PIXELS = 1 << 20
"""Pixels per band of rows that the per-plane pre/post-processing works through at a time,
so that frames larger than this (1080p in 2 bands, 4K in 8) do not send whole planes out to
memory and back between steps (split, look-up; clip, scale, merge): a 4K plane is 33 MB of
float32. 8 random 4K frames alone in one process, CPU ms a frame: before the model whole
planes 18.6-22.9, bands of 273 rows 12.6; after it 16.6-19.9 against 10.8. A 720p frame
stays one band: in bands of 204 rows its look-up took 2.5 ms a frame in the pipeline's
actor against 1.8 ms whole (alone in one process the bands were the faster, 1.8-2.1
against 2.5; benchmarks/README.md, session 15). The same operations on the same values:
the bits do not change."""


def band_rows(width: int) -> int:
    """Rows per band (:data:`BAND_PIXELS`) for frames ``width`` pixels wide."""
    return max(1, BAND_PIXELS // max(1, width))


def hold_cpu_threads(threads: int) -> None:
    """Run OpenCV's pre/post-processing (and a processor's OpenCV calls) on ``threads``
    threads in this process: an inference actor passes the CPUs it holds, as it does to
    ONNX Runtime. OpenCV otherwise starts a thread per core of the machine, whose idle
    threads spin on ``sched_yield`` between calls, taking CPU from the decode and encode
    tasks beside the actor (600 720p frames through decode, the identity model and encode
    in one process on 2 cores: 4.4-5.3 against 6.8-7.0 ms of inference CPU a frame, 4,300
    against 92,000 ``sched_yield`` calls; benchmarks/README.md, session 15). Process-wide,
    so for processes raypipe owns, not a library caller's."""
    cv2.setNumThreads(max(1, int(threads)))


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


def preprocess(
    frames: np.ndarray, spec: ModelSpec, dtype: npt.DTypeLike, *, out: np.ndarray | None = None
) -> np.ndarray:
    """uint8 (or uint16) RGB frames ``(n, H, W, 3)`` -> the model input of ``spec`` as
    ``dtype``; uint16 frames are scaled to the values uint8 ones give (and rounded to 8
    bits for a uint8 model input).

    ``out``: a float32 array of the input's shape to write a float32 input into (a buffer
    the caller keeps from batch to batch, so no new memory is touched per batch); ignored
    for other element types."""
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
    n, height, width, _ = x.shape
    shape = (n, 3, height, width) if spec.layout == "NCHW" else (n, height, width, 3)
    if out is None or out.shape != shape or out.dtype != np.float32:
        out = np.empty(shape, dtype=np.float32)
    if x.dtype == np.uint8 and spec.layout == "NCHW":
        # Per frame, OpenCV splits the interleaved pixels into planes (SIMD) and maps each
        # plane through a 256-entry table of its channel's input values, made with the very
        # float32 operations the generic path below does on every pixel (scale, minus mean,
        # over std): the same bits, in one pass per plane.
        tables = _input_tables(float(scale), tuple(spec.mean), tuple(spec.std))
        rows = band_rows(width)
        # one band's planes, written again for every band: new memory per band would go
        # back to the kernel and be faulted in again (benchmarks/README.md, session 16)
        split = [np.empty((min(rows, height), width), dtype=np.uint8) for _ in range(3)]
        for i in range(n):
            frame = np.ascontiguousarray(x[i])
            for top in range(0, height, rows):
                band = frame[top : top + rows]
                planes = cv2.split(band, [p[: len(band)] for p in split])
                if spec.color == "BGR":
                    planes = planes[::-1]
                for c, plane in enumerate(planes):
                    cv2.LUT(plane, tables[c], dst=out[i, c, top : top + rows])
        return out if target == np.float32 else out.astype(target)
    if spec.layout == "NCHW":  # uint16 frames: a plane at a time, cast and scaled in place
        for i in range(n):
            planes = cv2.split(np.ascontiguousarray(x[i]))
            if spec.color == "BGR":
                planes = planes[::-1]
            for c, plane in enumerate(planes):
                np.multiply(plane, scale, out=out[i, c])
    else:
        if spec.color == "BGR":
            x = x[..., ::-1]
        np.multiply(x, scale, out=out)  # one pass: cast and scale
    _normalise(out, spec.mean, spec.std, spec.channel_axis)
    return out if target == np.float32 else out.astype(target)


def _normalise(
    values: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...], axis: int
) -> None:
    """``values`` (scaled pixels, channels on ``axis``) minus ``mean`` over ``std``, in place,
    in float32."""
    shape = [1] * values.ndim
    shape[axis] = 3
    if any(mean):
        values -= np.array(mean, dtype=np.float32).reshape(shape)
    if any(s != 1.0 for s in std):
        values /= np.array(std, dtype=np.float32).reshape(shape)


@functools.lru_cache(maxsize=16)
def _input_tables(
    scale: float, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[np.ndarray, ...]:
    """The float32 model input of each 8-bit level, per channel (the model's order): the
    generic path's operations on the 256 levels, so a look-up gives the same bits."""
    levels = np.empty((256, 3), dtype=np.float32)
    np.multiply(np.arange(256, dtype=np.uint8)[:, None], np.float32(scale), out=levels)
    _normalise(levels, mean, std, 1)
    return tuple(np.ascontiguousarray(levels[:, c]) for c in range(3))


def postprocess(
    output: np.ndarray,
    spec: ModelSpec,
    dtype: npt.DTypeLike = np.uint8,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Model output (``spec`` layout, 3 or 1 channels) -> RGB frames ``(n, H', W', 3)`` of
    ``dtype`` (uint8, or uint16 for 16 bits per channel).

    ``output_range`` maps linearly to 0..255 (0..65535 for uint16), rounded half to even
    (``np.rint``) and clipped; a uint8 output is taken as 8-bit pixels (times 257 for
    uint16); one channel is repeated to three. The size may differ from the input's.
    ``out``: an array of the frames' shape and ``dtype`` to write them into (returned),
    such as the caller's slice of a chunk's output.
    """
    frames = _postprocess(output, spec, dtype, out)
    if out is None or frames is out:
        return frames
    if out.shape != frames.shape or out.dtype != frames.dtype:
        raise ValueError(
            f"out is {out.dtype} {out.shape}, the frames are {frames.dtype} {frames.shape}"
        )
    out[...] = frames
    return out


def _postprocess(
    output: np.ndarray, spec: ModelSpec, dtype: npt.DTypeLike, out: np.ndarray | None
) -> np.ndarray:
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
        other = 1 if spec.layout == "NHWC" else 3  # the channel axis of the other layout
        hint = (
            f"; the output looks {'NCHW' if spec.layout == 'NHWC' else 'NHWC'} while the input "
            f"is {spec.layout}: raypipe reads both in the spec's layout"
            if y.shape[other] in (1, 3)
            else ""
        )
        raise ModelLoadError(
            f"model output has shape {y.shape}, {channels} on the channel axis {spec.channel_axis} "
            f"({spec.layout}); raypipe expects 3 channels (or 1, repeated to 3){hint}"
        )
    if (
        y.dtype == np.float32
        and spec.layout == "NCHW"
        and channels == 3
        and spec.output_range[0] == 0.0
        and spec.output_range[1] > 0.0
    ):
        return _postprocess_planes(y, spec, out)
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


def _postprocess_planes(y: np.ndarray, spec: ModelSpec, out: np.ndarray | None) -> np.ndarray:
    """:func:`postprocess` of a float32 NCHW RGB/BGR output with range ``(0, hi)``, per plane.

    Each plane is clipped to ``[0, hi]`` in a small reused buffer, then OpenCV scales it by
    ``255 / hi`` in float32, rounds half to even and saturates to uint8
    (``convertScaleAbs``; the values are non-negative, so its absolute value changes
    nothing), and merges the three planes into interleaved pixels. Bit for bit what the
    generic path gives (scale, ``np.rint``, clip, cast), about three times faster on 720p,
    and the model's output array is left untouched. The frames are written into ``out`` when
    it is a uint8 array of their shape.
    """
    n, _, height, width = y.shape
    hi = float(spec.output_range[1])
    alpha = float(np.float32(255.0 / hi))
    shape = (n, height, width, 3)
    if out is None or out.shape != shape or out.dtype != np.uint8:
        out = np.empty(shape, dtype=np.uint8)
    rows = band_rows(width)
    band = np.empty((min(rows, height), width), dtype=np.float32)
    scaled = [np.empty(band.shape, dtype=np.uint8) for _ in range(3)]  # reused per band
    order = (2, 1, 0) if spec.color == "BGR" else (0, 1, 2)
    for i in range(n):
        for top in range(0, height, rows):
            clipped = band[: min(rows, height - top)]
            planes = []
            for c, plane in zip(order, scaled):
                np.clip(y[i, c, top : top + rows], 0.0, hi, out=clipped)
                planes.append(cv2.convertScaleAbs(clipped, dst=plane[: len(clipped)], alpha=alpha))
            target = out[i, top : top + rows]
            merged = cv2.merge(planes, dst=target)
            if not np.shares_memory(merged, target):  # OpenCV wrote elsewhere: keep its result
                target[...] = merged
    return out
