"""A warm ONNX Runtime session for a temporal model: windows, recurrent state, interpolation.

:class:`TemporalModel` is :class:`~raypipe.infer.models.FrameModel`'s counterpart for models
whose :class:`~raypipe.infer.sidecar.ModelSpec` declares ``window``, ``state`` or
``interpolate`` (:mod:`raypipe.infer.temporal`). :meth:`TemporalModel.run` takes one chunk's
frames with the context the planner decoded around it (``before`` frames first, ``after``
frames last) and returns exactly the chunk's output frames:

- window ``(B, A)``: the context is completed at the video's edges by repeating the
  first/last frame; output ``t`` comes from frames ``t - B .. t + A`` on a time axis or
  stacked on the channel axis (``window_layout``), ``batch_size`` windows per call. Every
  call has that batch size (a chunk's last, short batch is padded with its last window and
  the padding's outputs dropped): ONNX Runtime may round differently for another batch
  size (its kernels for a reduction differ by shape), and a short batch at a chunk's end
  would then show where the chunk ends;
- recurrent: frames go through one at a time (batch 1) in display order; every state input
  starts at zeros and then gets the output named for it in ``state``; the ``before``
  frames are the warm-up and their outputs are dropped. A state input's zeros take its
  declared shape: fixed dimensions as they are, a named dimension that the image input
  also has (``height``, ``width``) its size there, any other dynamic dimension 1 (what
  RobustVideoMatting's ONNX export expects of its first frame);
- interpolate 2: the in-between frame of ``t`` and ``t + 1`` for each chunk frame (the
  next chunk's first frame is the one ``after`` frame); at the video's end the last frame is
  repeated instead; sources and in-between frames are interleaved: ``2n`` frames.

Pre- and post-processing are those of image models (``scale``, ``mean``, ``std``, layout,
colour order, ``output_range``; uint16 frames of deep sources in, uint16 out). Temporal
models run whole frames at their own size (no tiling, resizing or padding) and on a GPU use
the CUDA provider (TensorRT's shape profiles are sized for one-frame inputs).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from raypipe.config import Device
from raypipe.errors import ConfigError, ModelLoadError
from raypipe.infer.model_errors import check_finite, reported
from raypipe.infer.models import layout_hint, postprocess, preprocess
from raypipe.infer.output_kind import (
    ELEMENT_DTYPES,
    _dim,
    declared_output_shapes,
    not_a_picture,
)
from raypipe.infer.session import create_session, granted_providers
from raypipe.infer.sidecar import ModelSpec, inputs_hint, with_constants
from raypipe.infer.temporal import Temporal, edge_padded, interleave


class TemporalModel:
    """A warm session running a temporal model over chunks with context (module docstring)."""

    output_kind = "image"

    def __init__(
        self,
        model_bytes: bytes,
        *,
        spec: ModelSpec,
        device: Device | str = "auto",
        intra_op_threads: int | None = None,
        providers: list[str] | None = None,
        provider_options: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.spec = spec
        self.temporal: Temporal = spec.temporal
        if not self.temporal.active:
            raise ConfigError(
                "TemporalModel needs a spec with window, state or interpolate; "
                "per-frame models run in FrameModel"
            )
        self.session = create_session(
            with_constants(model_bytes, spec.constants),
            device=device,
            intra_op_threads=intra_op_threads,
            providers=providers,
            provider_options=provider_options,
        )
        self._check_io(model_bytes)

    # --- the model's inputs and outputs ---------------------------------------------------

    def _check_io(self, model_bytes: bytes) -> None:
        spec = self.spec
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        state_in = [k for k, _ in spec.state]
        state_out = [v for _, v in spec.state]
        missing = [n for n in state_in if n not in inputs] + [
            n for n in state_out if n not in outputs
        ]
        if missing:
            raise ModelLoadError(
                f"the spec's state names {missing[0]!r}, which the model does not have; its "
                f"inputs are {list(inputs)}, its outputs {outputs}"
            )
        image_inputs = [n for n in inputs if n not in state_in]
        if spec.input_name is not None and spec.input_name not in image_inputs:
            raise ModelLoadError(
                f"model has no input {spec.input_name!r}; its frame inputs are {image_inputs}"
            )
        if spec.input_name is None and len(image_inputs) != 1:
            raise ModelLoadError(
                f"model has inputs {list(inputs)}; a temporal model takes one frame input "
                f"(plus its state inputs {state_in}): name it with input_name or declare the "
                "others in state"
            )
        node = inputs[spec.input_name or image_inputs[0]]
        unfed = [n for n in image_inputs if n != node.name]
        if unfed:  # RobustVideoMatting's downsample_ratio: a fixed value, not a frame
            raise ModelLoadError(
                f"model input(s) {unfed} would get no value: raypipe feeds the frames to "
                f"{node.name!r} and the state inputs {state_in}: "
                f"{inputs_hint(unfed, [n for n in outputs if n not in state_out])}"
            )
        image_outputs = [n for n in outputs if n not in state_out]
        if spec.output_name is not None and spec.output_name not in image_outputs:
            raise ModelLoadError(
                f"model has no output {spec.output_name!r}; its frame outputs are {image_outputs}"
            )
        if not image_outputs:
            raise ModelLoadError(f"every output of the model ({outputs}) is a state output")
        self.input_name: str = node.name
        self.output_name: str = spec.output_name or image_outputs[0]
        shape = declared_output_shapes(model_bytes).get(self.output_name)
        if not_a_picture(shape, spec):  # it failed after Ray's start, `model show` silent
            raise ModelLoadError(
                f"model output {self.output_name!r} has shape {list(shape or [])}; a temporal "
                f"model gives one frame per window: a rank-4 {spec.layout} image batch with 3 "
                "channels (or 1)"
            )
        if node.type not in ELEMENT_DTYPES:
            raise ModelLoadError(
                f"model input {node.name!r} has element type {node.type}; raypipe feeds "
                f"{', '.join(ELEMENT_DTYPES)}"
            )
        self.input_dtype: np.dtype[Any] = np.dtype(ELEMENT_DTYPES[node.type])
        self._input_shape = list(node.shape)
        self._check_input_shape()
        self._fixed_batch = _dim(self._input_shape[0])
        if self.temporal.recurrent and self._fixed_batch not in (None, 1):
            raise ModelLoadError(
                f"model input {node.name!r} has a fixed batch of {self._fixed_batch}; a "
                "recurrent model runs one frame at a time (batch 1)"
            )
        self._state = [(i, o, inputs[i]) for i, o in spec.state]

    def _check_input_shape(self) -> None:
        spec, shape, span = self.spec, self._input_shape, self.temporal.span
        on_time_axis = self.temporal.window != (0, 0) and spec.window_layout == "time"
        rank = 5 if on_time_axis else 4
        axis = (2 if spec.layout == "NCHW" else 4) if on_time_axis else spec.channel_axis
        channels = 3 * span if spec.window_layout == "channels" else 3
        layout = f"{spec.layout[0]}T{spec.layout[1:]}" if on_time_axis else spec.layout
        what = f"a rank-{rank} {layout} batch with {channels} channels"
        if spec.window_layout == "channels" and span > 1:
            what += f" ({span} frames of 3 stacked, oldest first)"
        # the other layout's channel axis holding the channels, this one's not: a model
        # declared NHWC that is NCHW failed as it ran, its advice about frame sizes (a sweep)
        other = {2: 4, 4: 2, 1: 3, 3: 1}[axis]
        swapped = (
            len(shape) == rank and _dim(shape[other]) == channels and _dim(shape[axis]) != channels
        )
        if len(shape) != rank or _dim(shape[axis]) not in (None, channels) or swapped:
            hint = layout_hint("NCHW" if spec.layout == "NHWC" else "NHWC") if swapped else ""
            raise ModelLoadError(
                f"model input {self.input_name!r} has shape {shape}; with "
                f"{self.temporal.describe()} and window_layout={spec.window_layout!r} raypipe "
                f"feeds {what}{hint}"
            )
        if on_time_axis and _dim(shape[1]) not in (None, span):
            raise ModelLoadError(
                f"model input {self.input_name!r} takes {shape[1]} frames on its time axis; "
                f"the window {list(self.temporal.window)} gives {span}"
            )

    @property
    def providers(self) -> list[str]:
        """The providers the session really runs on, best first."""
        return granted_providers(self.session)

    # --- running -------------------------------------------------------------------------

    def run(
        self, frames: np.ndarray, batch_size: int, *, before: int = 0, after: int = 0
    ) -> np.ndarray:
        """The output frames of a chunk: ``frames`` holds ``before`` context frames, the
        chunk's ``n`` frames and ``after`` context frames; returns ``n`` frames (``2n`` for
        interpolation), uint8 (uint16 for uint16 frames)."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        n = len(frames) - before - after
        if n < 1 or before < 0 or after < 0:
            raise ValueError(
                f"got {len(frames)} frames with {before} before and {after} after: no frame "
                "of the chunk itself"
            )
        want_before, want_after = self.temporal.context
        with reported(frames.shape[1:3]):
            if self.temporal.recurrent:
                if after:
                    raise ValueError(f"a recurrent model takes no frames after, got {after}")
                return self._run_recurrent(frames, before)
            padded = edge_padded(
                frames, before=before, after=after, want_before=want_before, want_after=want_after
            )
            out = self._run_windows(padded, n, batch_size)
        if self.temporal.interpolate == 1:
            return out
        sources = frames[before : before + n]
        if after == 0:  # the video's last frame: repeated at its own midpoint
            out[-1] = sources[-1]
        return interleave(sources, out)

    def _run_windows(self, padded: np.ndarray, n: int, batch_size: int) -> np.ndarray:
        """Output frame ``t`` of ``n`` from ``padded[t : t + span]``."""
        span = self.temporal.span
        step = self._fixed_batch or batch_size
        parts = []
        for start in range(0, n, step):
            count = min(step, n - start)
            x = preprocess(padded[start : start + count + span - 1], self.spec, self.input_dtype)
            index = np.arange(count)[:, None] + np.arange(span)[None, :]
            if count < step:  # every call the same batch size (see the module docstring)
                index = np.concatenate([index, np.repeat(index[-1:], step - count, axis=0)])
            y = self._infer({self.input_name: self._stack(x[index])})[0]
            parts.append(self._frames(y, padded.dtype, padded.shape[1:3])[:count])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _stack(self, windows: np.ndarray) -> np.ndarray:
        """Windows ``(b, T, ...)`` of preprocessed frames as the model takes them."""
        if self.temporal.window == (0, 0):
            return windows[:, 0]
        if self.spec.window_layout == "time":
            return np.ascontiguousarray(windows)
        b, t = windows.shape[:2]
        if self.spec.layout == "NCHW":  # (b, T, 3, H, W) -> (b, 3T, H, W)
            return np.ascontiguousarray(windows.reshape(b, t * 3, *windows.shape[3:]))
        moved = windows.transpose(0, 2, 3, 1, 4)  # (b, T, H, W, 3) -> (b, H, W, T, 3)
        return np.ascontiguousarray(moved.reshape(b, *moved.shape[1:3], t * 3))

    def _run_recurrent(self, frames: np.ndarray, warmup: int) -> np.ndarray:
        """Frame by frame through the state, from zeros; the first ``warmup`` outputs dropped."""
        x0 = preprocess(frames[:1], self.spec, self.input_dtype)
        state = {name: self._zeros(info, x0.shape) for name, _, info in self._state}
        kept = []
        for i in range(len(frames)):
            x = x0 if i == 0 else preprocess(frames[i : i + 1], self.spec, self.input_dtype)
            y, *outs = self._infer({self.input_name: x, **state})
            state = {name: out for (name, _, _), out in zip(self._state, outs)}
            if i >= warmup:
                kept.append(self._frames(y, frames.dtype, frames.shape[1:3]))
        return np.concatenate(kept)

    def _zeros(self, info: Any, frame_shape: tuple[int, ...]) -> np.ndarray:
        """The start value of a state input (see the module docstring)."""
        sizes = {d: frame_shape[i] for i, d in enumerate(self._input_shape) if isinstance(d, str)}
        shape = []
        for dim in info.shape:
            fixed = _dim(dim)
            shape.append(fixed if fixed else sizes.get(dim, 1) if isinstance(dim, str) else 1)
        shape[0] = 1
        dtype = ELEMENT_DTYPES.get(info.type, np.float32)
        return np.zeros(shape, dtype=dtype)

    def _infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        names = [self.output_name, *(o for _, o, _ in self._state)]
        return [np.asarray(y) for y in self.session.run(names, feeds)]

    def _frames(self, y: np.ndarray, dtype: np.dtype[Any], hw: tuple[int, ...]) -> np.ndarray:
        check_finite(self.output_name, y, int(hw[0]), int(hw[1]))
        return postprocess(y, self.spec, dtype)

    def warmup(self, height: int, width: int, batch_size: int) -> None:
        """Run one dummy chunk so the first real one does not pay for lazy initialisation."""
        n = 1 if self.temporal.recurrent else min(batch_size, 2)
        self.run(np.zeros((n, height, width, 3), dtype=np.uint8), batch_size)
