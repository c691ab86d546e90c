"""Image models on video frames: where a model comes from, how frames go in and come out.

Frames are uint8 RGB batches ``(n, H, W, 3)`` as the decoder gives them, or uint16 (16 bits
per channel) for sources deeper than 8 bits: those are scaled so the model sees the same
values as for 8-bit frames (``pixel16 * scale * 255 / 65535``, [0, 1] for the defaults) and
image outputs come back as uint16 (``output_range`` mapped to 0..65535). A :class:`ModelSpec`
says what the model wants instead: layout, colour order, scaling and normalisation, and
which output value means pixel 0 and pixel 255. :func:`preprocess` and :func:`postprocess`
are pure functions; :class:`FrameModel` holds a warm ONNX Runtime session and runs frames
through it in mini-batches.

The model input is ``(pixel * scale - mean) / std`` per channel, in the model's channel
order (``mean``/``std`` of a BGR model are given B, G, R), cast to the element type the
model declares (float32 or float16). A model whose input is uint8 gets the raw pixels
(colour order and layout still apply; ``scale``, ``mean`` and ``std`` are not used), and a
uint8 output is taken as pixels as it is (``output_range`` is not used).

Output kinds (``ModelSpec.output``): an *image* model returns frames (:meth:`FrameModel.run`,
a new video comes out); a *tensor* model returns arrays per frame
(:meth:`FrameModel.run_tensors`: embeddings, hashes, detections; a table comes out).
``"auto"`` decides from the model's outputs (:func:`detect_output_kind`).

Geometry (``resize``, ``input_size``, ``pad_value``, ``tile``, ``tile_overlap``): fixed-size
models get frames stretched or letterboxed to their input and image outputs mapped back;
large frames can be run in overlapping tiles. The maths is in :mod:`raypipe.infer.tiling`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from raypipe.config import Device
from raypipe.errors import ConfigError, ModelLoadError
from raypipe.infer.iobinding import IOBindingRunner
from raypipe.infer.model_errors import check_finite, reported
from raypipe.infer.output_kind import ELEMENT_DTYPES as _ELEMENT_DTYPES
from raypipe.infer.output_kind import OutputKind as OutputKind
from raypipe.infer.output_kind import TensorInfo as TensorInfo
from raypipe.infer.output_kind import _dim
from raypipe.infer.output_kind import detect_output_kind as detect_output_kind
from raypipe.infer.output_kind import output_kind as output_kind
from raypipe.infer.padding import run_padded_maps
from raypipe.infer.session import create_session, granted_providers

# ModelSpec and resolve_model live in raypipe.infer.sidecar (with the sidecar files that
# declare specs); re-exported here, where callers have always imported them from.
from raypipe.infer.sidecar import BUILTIN_PREFIX as BUILTIN_PREFIX
from raypipe.infer.sidecar import DEFAULT_SPEC, ModelSpec, resolve_model_and_spec
from raypipe.infer.sidecar import resolve_model as resolve_model
from raypipe.infer.tiling import FrameGeometry, LetterboxParams, unfit_frames

LETTERBOX_KEYS: tuple[str, ...] = (
    "letterbox_scale_x",
    "letterbox_scale_y",
    "letterbox_pad_x",
    "letterbox_pad_y",
)
"""Extra per-frame arrays :meth:`FrameModel.run_tensors` adds when frames are resized."""


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


# --- FrameModel ---------------------------------------------------------------------------


class FrameModel:
    """A warm ONNX Runtime session that runs uint8 RGB frames through a model.

    Image models: :meth:`run` gives uint8 RGB frames. Tensor models: :meth:`run_tensors`
    gives every output per frame. ``spec`` says how frames go in (and are fitted, padded or
    tiled). When the model fails on frames (or gives NaN) both raise a
    :class:`~raypipe.errors.ModelError` saying what it said and what to try
    (:mod:`raypipe.infer.model_errors`).
    """

    def __init__(
        self,
        model_bytes: bytes,
        *,
        spec: ModelSpec = DEFAULT_SPEC,
        device: Device | str = "auto",
        intra_op_threads: int | None = None,
        providers: list[str] | None = None,
        provider_options: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.spec = spec
        self._runner: IOBindingRunner | None = None
        self.session = create_session(
            model_bytes,
            device=device,
            intra_op_threads=intra_op_threads,
            providers=providers,
            provider_options=provider_options,
        )
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise ModelLoadError(
                f"model has {len(inputs)} inputs {[i.name for i in inputs]}; raypipe feeds one "
                "image batch and needs a model with exactly one input"
            )
        node = inputs[0]
        if spec.input_name is not None and spec.input_name != node.name:
            raise ModelLoadError(
                f"model has no input {spec.input_name!r}; its input is {node.name!r}"
            )
        out_names = [o.name for o in outputs]
        if spec.output_name is not None and spec.output_name not in out_names:
            raise ModelLoadError(
                f"model has no output {spec.output_name!r}; its outputs are {out_names}"
            )
        self._input_name: str = node.name
        self._output_name: str = spec.output_name or out_names[0]
        self.output_kind: OutputKind = detect_output_kind(outputs, spec)
        self.output_names: list[str] = [spec.output_name] if spec.output_name else out_names
        if node.type not in _ELEMENT_DTYPES:
            raise ModelLoadError(
                f"model input {node.name!r} has element type {node.type}; raypipe feeds "
                f"{', '.join(_ELEMENT_DTYPES)}"
            )
        self.input_dtype: np.dtype[Any] = np.dtype(_ELEMENT_DTYPES[node.type])
        shape = list(node.shape)
        expects = f"raypipe expects a rank-4 image batch, {spec.layout} with 3 channels"
        if len(shape) != 4:
            raise ModelLoadError(
                f"model input {node.name!r} has rank {len(shape)} (shape {shape}); {expects}"
            )
        channels = _dim(shape[spec.channel_axis])
        if channels not in (None, 3):
            hint = ""
            if spec.layout == "NCHW" and shape[3] == 3:
                hint = "; for a channels-last model pass ModelSpec(layout='NHWC')"
            raise ModelLoadError(
                f"model input {node.name!r} has shape {shape}, {channels} on the channel axis "
                f"{spec.channel_axis}; {expects}{hint}"
            )
        self._fixed_batch = _dim(shape[0])
        hw = (shape[2], shape[3]) if spec.layout == "NCHW" else (shape[1], shape[2])
        self.geometry = FrameGeometry.from_spec(spec, (_dim(hw[0]), _dim(hw[1])), node.name)
        self._check_outputs(outputs)

    def _check_outputs(self, outputs: Sequence[TensorInfo]) -> None:
        spec = self.spec
        if self.output_kind == "tensor":
            if spec.tile is not None:
                raise ModelLoadError(
                    f"tile={spec.tile} needs an image output, but the model's outputs "
                    f"{self.output_names} are tensors; drop tile or pass output='image'"
                )
            clash = sorted(set(self.output_names) & set(LETTERBOX_KEYS))
            if clash and spec.resize != "none":
                raise ModelLoadError(
                    f"model outputs {clash} clash with the letterbox columns raypipe adds "
                    f"with resize={spec.resize!r}; rename those outputs"
                )
            return
        shape = next(o for o in outputs if o.name == self._output_name).shape
        channels = _dim(shape[spec.channel_axis]) if shape is not None and len(shape) == 4 else None
        if shape is not None and (len(shape) != 4 or channels not in (None, 1, 3)):
            raise ModelLoadError(
                f"model output {self._output_name!r} has shape {list(shape)}; output='image' "
                f"needs a rank-4 image batch ({spec.layout}) with 3 channels (or 1); for "
                "other outputs pass output='tensor'"
            )

    @property
    def model_size(self) -> tuple[int, int] | None:
        """(height, width) px frames are fitted to (``resize``); None: frames go in as they are."""
        return self.geometry.model_size

    @property
    def providers(self) -> list[str]:
        """The providers the session really runs on, best first."""
        return granted_providers(self.session)

    @property
    def input_name(self) -> str:
        return self._input_name

    @property
    def output_name(self) -> str:
        return self._output_name

    def run(self, frames: np.ndarray, batch_size: int) -> np.ndarray:
        """RGB frames ``(n, H, W, 3)`` through the model, ``batch_size`` frames at a time;
        uint8 in, uint8 out (uint16 in, uint16 out: see the module docstring).

        A model with a fixed batch dimension gets batches of exactly that size (the last one
        padded by repeating its last frame; the padding's outputs are dropped). With
        ``resize`` the output is mapped back to ``(H, W)`` times the model's scale factor.
        """
        if self.output_kind != "image":
            raise ModelLoadError(
                f"the model's outputs {self.output_names} are tensors, not frames; call "
                "run_tensors() (or pass ModelSpec(output='image') if it does give frames)"
            )
        batches = self._batches(frames, batch_size)
        with self._reported(frames):
            results = [self._run_image_batch(b)[:n] for b, n in batches]
        return results[0] if len(results) == 1 else np.concatenate(results)

    def run_tensors(self, frames: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
        """Every output (or ``spec.output_name``'s) for uint8 RGB frames ``(n, H, W, 3)``.

        Each array keeps the model's output shape with its first dimension = the n frames
        (outputs must have one entry per frame along their first dimension). With
        ``resize`` the outputs stay in model-input coordinates and four ``(n,)`` arrays
        :data:`LETTERBOX_KEYS` (scale x/y: model px per source px; pads: px) are added;
        :func:`raypipe.infer.tiling.letterbox_to_source` maps points back. With
        ``pad_multiple`` outputs that are maps of the padded input are cropped back
        (:mod:`raypipe.infer.padding`).
        """
        parts: dict[str, list[np.ndarray]] = {name: [] for name in self.output_names}
        batches = self._batches(frames, batch_size)
        with self._reported(frames):
            for batch, count in batches:
                fitted = self.geometry.fit(batch)[0]
                x = preprocess(fitted, self.spec, self.input_dtype)
                for name, y in zip(self.output_names, self._infer_tensors(x)):
                    self._check_batch(name, y, len(batch))
                    check_finite(name, y, frames.shape[1], frames.shape[2])
                    parts[name].append(y[:count])
        out = {name: p[0] if len(p) == 1 else np.concatenate(p) for name, p in parts.items()}
        params = self.fit_params(frames.shape[1], frames.shape[2])
        if params is not None:
            n = len(frames)
            out["letterbox_scale_x"] = np.full(n, params.scale_x)
            out["letterbox_scale_y"] = np.full(n, params.scale_y)
            out["letterbox_pad_x"] = np.full(n, params.pad_x, dtype=np.int64)
            out["letterbox_pad_y"] = np.full(n, params.pad_y, dtype=np.int64)
        return out

    def fit_params(self, height: int, width: int) -> LetterboxParams | None:
        """How frames of ``height`` x ``width`` px are fitted to the model; None: not resized."""
        return self.geometry.params(height, width)

    def warmup(self, height: int, width: int, batch_size: int) -> None:
        """Run one dummy batch so the first real chunk does not pay for lazy initialisation."""
        dummy = np.zeros((batch_size, height, width, 3), dtype=np.uint8)
        if self.output_kind == "image":
            self.run(dummy, batch_size)
        else:
            self.run_tensors(dummy, batch_size)

    def _batches(self, frames: np.ndarray, batch_size: int) -> list[tuple[np.ndarray, int]]:
        """(batch, real frame count) pairs; a fixed-batch model's last batch is padded."""
        _check_frames(frames)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if len(frames) == 0:
            raise ValueError("run() got 0 frames; expected at least one")
        self.geometry.check_frames(frames.shape[1], frames.shape[2])
        step = self._fixed_batch or batch_size
        batches = []
        for start in range(0, len(frames), step):
            batch = frames[start : start + step]
            count = len(batch)
            if count < step and self._fixed_batch:
                batch = np.concatenate([batch, np.repeat(batch[-1:], step - count, axis=0)])
            batches.append((batch, count))
        return batches

    def _infer(self, x: np.ndarray) -> np.ndarray:
        if self._runner is None:  # IO binding: persistent device buffers on CUDA/TensorRT
            self._runner = IOBindingRunner(self.session, self._input_name, self._output_name)
        y = self._runner.run(x)
        self._check_batch(self._output_name, y, len(x))
        return np.asarray(y)

    def _infer_tensors(self, x: np.ndarray, pad_multiple: int | None = None) -> list[np.ndarray]:
        def run(batch: np.ndarray) -> list[np.ndarray]:
            return list(self.session.run(self.output_names, {self._input_name: batch}))

        multiple = pad_multiple or self.spec.pad_multiple
        return run(x) if multiple is None else run_padded_maps(run, x, multiple, self.spec.layout)

    def _reported(self, frames: np.ndarray) -> contextlib.AbstractContextManager[None]:
        """Errors the model raises on ``frames`` become a :class:`ModelError` with a hint."""
        fits = functools.partial(self._fits, frames[:1]) if self.spec.resize == "none" else None
        return reported(frames, fits=fits, model_hw=self.geometry.padded_hw(*frames.shape[1:3]))

    def _fits(self, frame: np.ndarray, multiple: int) -> bool:
        """Whether the model runs on ``frame`` (one, ``(1, H, W, 3)``) padded to ``multiple``."""
        try:
            x = preprocess(self._batches(frame, 1)[0][0], self.spec, self.input_dtype)
            if self.output_kind == "tensor":
                self._infer_tensors(x, multiple)
            else:
                geometry = dataclasses.replace(self.geometry, pad_multiple=multiple)
                geometry.run(self._infer, x, self.spec.layout)
        except Exception:  # noqa: BLE001 - any failure means: padding to this does not help
            return False
        return True

    def _check_batch(self, name: str, y: np.ndarray, frames: int) -> None:
        if np.ndim(y) == 0 or y.shape[0] != frames:
            got = "a scalar" if np.ndim(y) == 0 else f"shape {y.shape}"
            raise ModelLoadError(
                f"model output {name!r} has {got} for {frames} input frames; raypipe "
                "expects one result per frame along the first dimension"
            )

    def _run_image_batch(self, batch: np.ndarray) -> np.ndarray:
        fitted, params = self.geometry.fit(batch)
        x = preprocess(fitted, self.spec, self.input_dtype)
        y = self.geometry.run(self._infer, x, self.spec.layout)
        check_finite(self._output_name, y, batch.shape[1], batch.shape[2])
        frames = postprocess(y, self.spec, batch.dtype)
        return frames if params is None else unfit_frames(frames, params)


def load_frame_model(
    model: str,
    *,
    device: Device | str = "auto",
    intra_op_threads: int | None = None,
    spec: ModelSpec | None = None,
) -> FrameModel:
    """:class:`FrameModel` for ``builtin:NAME`` or a path/fsspec URL of an .onnx file.

    ``spec=None`` takes the built-in's spec or the model's sidecar
    (:func:`raypipe.infer.sidecar.resolve_model_and_spec`), else the defaults.
    """
    model_bytes, _, found = resolve_model_and_spec(model)
    return FrameModel(
        model_bytes, spec=spec or found, device=device, intra_op_threads=intra_op_threads
    )
