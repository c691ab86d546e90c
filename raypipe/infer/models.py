"""Image models on video frames: where a model comes from, how frames go in and come out.

Frames are uint8 RGB batches ``(n, H, W, 3)`` as the decoder gives them. A :class:`ModelSpec`
says what the model wants instead: layout, colour order, scaling and normalisation, and
which output value means pixel 0 and pixel 255. :func:`preprocess` and :func:`postprocess`
are pure functions; :class:`FrameModel` holds a warm ONNX Runtime session and runs frames
through it in mini-batches.

The model input is ``(pixel * scale - mean) / std`` per channel, in the model's channel
order (``mean``/``std`` of a BGR model are given B, G, R), cast to the element type the
model declares (float32 or float16). A model whose input is uint8 gets the raw pixels
(colour order and layout still apply; ``scale``, ``mean`` and ``std`` are not used), and a
uint8 output is taken as pixels as it is (``output_range`` is not used).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import fsspec
import numpy as np
import numpy.typing as npt

from raypipe.config import Device
from raypipe.errors import ConfigError, ModelLoadError, ModelNotFoundError
from raypipe.infer.builtin import BUILTIN_MODELS, builtin_bytes
from raypipe.infer.session import create_session, granted_providers

BUILTIN_PREFIX = "builtin:"
_ELEMENT_DTYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8,
}


def _finite_numbers(name: str, value: Sequence[float], length: int) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != length or not all(math.isfinite(v) for v in numbers):
        raise ConfigError(f"{name} must be {length} finite numbers, got {value!r}")
    return numbers


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """What an image model expects and returns; the defaults fit the built-in models.

    ``scale``: model input = pixel * scale before ``mean``/``std``. ``output_range``: the
    output values that map to pixel 0 and pixel 255 (linear in between, clipped outside).
    ``input_name``/``output_name`` ``None`` take the model's first input/output.
    """

    layout: Literal["NCHW", "NHWC"] = "NCHW"
    color: Literal["RGB", "BGR"] = "RGB"
    scale: float = 1 / 255
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    output_range: tuple[float, float] = (0.0, 1.0)
    input_name: str | None = None
    output_name: str | None = None

    def __post_init__(self) -> None:
        if self.layout not in ("NCHW", "NHWC"):
            raise ConfigError(f"layout must be 'NCHW' or 'NHWC', got {self.layout!r}")
        if self.color not in ("RGB", "BGR"):
            raise ConfigError(f"color must be 'RGB' or 'BGR', got {self.color!r}")
        if not _is_number(self.scale) or not math.isfinite(self.scale) or not self.scale > 0:
            raise ConfigError(f"scale must be a finite number > 0, got {self.scale!r}")
        std = _finite_numbers("std", self.std, 3)
        if not all(s > 0 for s in std):
            raise ConfigError(f"std must be 3 finite numbers > 0, got {self.std!r}")
        lo, hi = _finite_numbers("output_range", self.output_range, 2)
        if lo == hi:
            raise ConfigError(
                "output_range must be two different numbers (output for pixel 0, for pixel "
                f"255), got {self.output_range!r}"
            )
        object.__setattr__(self, "scale", float(self.scale))
        object.__setattr__(self, "mean", _finite_numbers("mean", self.mean, 3))
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "output_range", (lo, hi))
        for field_name in ("input_name", "output_name"):
            value = getattr(self, field_name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{field_name} must be a tensor name or None, got {value!r}")

    @property
    def channel_axis(self) -> int:
        """The channel axis of a 4-D tensor in this layout."""
        return 1 if self.layout == "NCHW" else 3


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


DEFAULT_SPEC = ModelSpec()


def resolve_model(model: str) -> tuple[bytes, str]:
    """The model's bytes and the sha256 hex digest of them (a key naming its content).

    ``builtin:NAME`` gives the built-in's bytes; anything else is a local path or fsspec
    URL, read whole. Keying built-ins by content too means a changed graph never reuses a
    stale engine cache entry.
    """
    if model.startswith(BUILTIN_PREFIX):
        data = builtin_bytes(model[len(BUILTIN_PREFIX) :])
        return data, hashlib.sha256(data).hexdigest()
    try:
        with fsspec.open(model, "rb") as f:
            data = f.read()
    except FileNotFoundError as e:
        raise ModelNotFoundError(
            f"model file {model!r} does not exist; pass builtin:NAME (one of "
            f"{', '.join(BUILTIN_MODELS)}) or a path/URL to an .onnx file"
        ) from e
    except (OSError, ValueError, ImportError) as e:
        raise ModelLoadError(f"cannot read model file {model!r}: {e}") from e
    return data, hashlib.sha256(data).hexdigest()


def _check_frames(frames: np.ndarray) -> np.ndarray:
    if isinstance(frames, np.ndarray):
        if frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[3] == 3:
            return frames
        got = f"{frames.dtype} array of shape {frames.shape}"
    else:
        got = type(frames).__name__
    raise ValueError(f"frames must be a uint8 array (n, height, width, 3) RGB, got {got}")


def preprocess(frames: np.ndarray, spec: ModelSpec, dtype: npt.DTypeLike) -> np.ndarray:
    """uint8 RGB frames ``(n, H, W, 3)`` -> the model input of ``spec`` as ``dtype``."""
    x = _check_frames(frames)
    if spec.color == "BGR":
        x = x[..., ::-1]
    if spec.layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    target = np.dtype(dtype)
    if target == np.uint8:
        return np.ascontiguousarray(x)
    if target not in (np.float32, np.float16):
        raise ValueError(f"model input dtype must be float32, float16 or uint8, got {target}")
    out = np.ascontiguousarray(x, dtype=np.float32)  # one pass: cast and lay out
    out *= np.float32(spec.scale)
    shape = [1, 1, 1, 1]
    shape[spec.channel_axis] = 3
    if any(spec.mean):
        out -= np.array(spec.mean, dtype=np.float32).reshape(shape)
    if any(s != 1.0 for s in spec.std):
        out /= np.array(spec.std, dtype=np.float32).reshape(shape)
    return out if target == np.float32 else out.astype(target)


def postprocess(output: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Model output (``spec`` layout, 3 or 1 channels) -> uint8 RGB frames ``(n, H', W', 3)``.

    ``output_range`` maps linearly to 0..255, rounded half to even (``np.rint``) and
    clipped; one channel is repeated to three. The size may differ from the input's.
    """
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


def _dim(value: Any) -> int | None:
    """A fixed dimension, or None when it is dynamic (a name, None, or <= 0)."""
    return value if isinstance(value, int) and value > 0 else None


class FrameModel:
    """A warm ONNX Runtime session that turns uint8 RGB frames into uint8 RGB frames."""

    def __init__(
        self,
        model_bytes: bytes,
        *,
        spec: ModelSpec = DEFAULT_SPEC,
        device: Device | str = "auto",
        intra_op_threads: int | None = None,
    ) -> None:
        self.spec = spec
        self.session = create_session(model_bytes, device=device, intra_op_threads=intra_op_threads)
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
        self._fixed_hw = (_dim(hw[0]), _dim(hw[1]))

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
        """uint8 RGB frames ``(n, H, W, 3)`` through the model, ``batch_size`` frames at a time.

        A model with a fixed batch dimension gets batches of exactly that size (the last one
        padded by repeating its last frame; the padding's outputs are dropped).
        """
        _check_frames(frames)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if len(frames) == 0:
            raise ValueError("run() got 0 frames; expected at least one")
        self._check_size(frames.shape[1], frames.shape[2])
        step = self._fixed_batch or batch_size
        results = []
        for start in range(0, len(frames), step):
            batch = frames[start : start + step]
            count = len(batch)
            if count < step and self._fixed_batch:
                batch = np.concatenate([batch, np.repeat(batch[-1:], step - count, axis=0)])
            results.append(self._run_batch(batch)[:count])
        return results[0] if len(results) == 1 else np.concatenate(results)

    def warmup(self, height: int, width: int, batch_size: int) -> None:
        """Run one dummy batch so the first real chunk does not pay for lazy initialisation."""
        self.run(np.zeros((batch_size, height, width, 3), dtype=np.uint8), batch_size)

    def _check_size(self, height: int, width: int) -> None:
        want_h, want_w = self._fixed_hw
        if (want_h is not None and want_h != height) or (want_w is not None and want_w != width):
            raise ModelLoadError(
                f"model input {self._input_name!r} takes {want_h or 'any'}x{want_w or 'any'} "
                f"(height x width) frames, got {height}x{width}; resize the video or use a "
                "model with dynamic height and width"
            )

    def _run_batch(self, batch: np.ndarray) -> np.ndarray:
        x = preprocess(batch, self.spec, self.input_dtype)
        (y,) = self.session.run([self._output_name], {self._input_name: x})
        if y.shape[0] != len(batch):
            raise ModelLoadError(
                f"model output {self._output_name!r} has batch size {y.shape[0]} for "
                f"{len(batch)} input frames; raypipe expects one output image per frame"
            )
        return postprocess(y, self.spec)


def load_frame_model(
    model: str,
    *,
    device: Device | str = "auto",
    intra_op_threads: int | None = None,
    spec: ModelSpec | None = None,
) -> FrameModel:
    """:class:`FrameModel` for ``builtin:NAME`` or a path/fsspec URL of an .onnx file."""
    model_bytes, _ = resolve_model(model)
    return FrameModel(
        model_bytes, spec=spec or DEFAULT_SPEC, device=device, intra_op_threads=intra_op_threads
    )
