"""Whole-video references for temporal models, written as plainly as possible.

:func:`sequential_frames` runs a temporal model over a whole decoded video in this process,
one output frame per ONNX Runtime call, with none of the pipeline's machinery (no chunks,
context, batching or padding helpers): what the model gives when it sees the video in one
piece. Tests compare the chunked pipeline's output with it. :func:`interpolated_times` gives
the display times an interpolated output must have, from the source's :func:`frame_times`.
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Any

import av
import numpy as np

from raypipe.infer.models import postprocess, preprocess
from raypipe.infer.session import create_session
from raypipe.infer.sidecar import ModelSpec, resolve_model_and_spec

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}


def _window_input(x: list[np.ndarray], spec: ModelSpec) -> np.ndarray:
    """Preprocessed frames (each ``(1, ...)``) as one window input of batch 1."""
    if spec.window_layout == "time":
        return np.stack([f[0] for f in x])[None]
    return np.concatenate(x, axis=1 if spec.layout == "NCHW" else 3)


def sequential_frames(
    model: str, frames: np.ndarray, *, spec: ModelSpec | None = None
) -> np.ndarray:
    """``model`` (``builtin:NAME`` or a path) over all of ``frames`` ``(n, H, W, 3)``, frame
    by frame: windows with the first/last frame repeated at the edges; a recurrent state
    from zeros at frame 0; for interpolation ``2n`` frames, sources and in-between frames
    alternating, the last source frame repeated after itself. ``spec``: the model's spec
    (default: its own, as :func:`~raypipe.infer.sidecar.resolve_model_and_spec` finds it)."""
    data, _, found = resolve_model_and_spec(model)
    spec = spec or found
    temporal = spec.temporal
    session = create_session(data, device="cpu")
    states = dict(spec.state)
    inputs = {i.name: i for i in session.get_inputs()}
    name = next(n for n in inputs if n not in states)
    out_name = spec.output_name or next(
        o.name for o in session.get_outputs() if o.name not in states.values()
    )
    dtype = _DTYPES[inputs[name].type]
    x = [preprocess(frames[i : i + 1], spec, dtype) for i in range(len(frames))]
    n, (before, after) = len(frames), temporal.window
    out: list[np.ndarray] = []
    state: dict[str, Any] = {}
    for t in range(n):
        if temporal.recurrent:
            if t == 0:
                for s in states:
                    dims = inputs[s].shape
                    sizes = dict(zip(inputs[name].shape, x[0].shape))
                    shape = [d if isinstance(d, int) else sizes.get(d, 1) for d in dims]
                    state[s] = np.zeros([1, *shape[1:]], dtype=_DTYPES[inputs[s].type])
            y, *new = session.run([out_name, *states.values()], {name: x[t], **state})
            state = dict(zip(states, new))
        else:
            window = [x[min(max(t + k, 0), n - 1)] for k in range(-before, after + 1)]
            (y,) = session.run([out_name], {name: _window_input(window, spec)})
        out.append(postprocess(np.asarray(y), spec, frames.dtype)[0])
    if temporal.interpolate == 1:
        return np.stack(out)
    out[-1] = frames[-1]  # after the last source frame: that frame again
    return np.stack([f for pair in zip(frames, out) for f in pair])


def frame_times(path: str | os.PathLike[str]) -> list[Fraction]:
    """Display times (seconds) of every frame of ``path``'s first video stream, in display
    order, and last where the last frame ends (its pts plus its packet's duration), read
    from the packets as the container stores them."""
    with av.open(os.fspath(path)) as container:
        stream = container.streams.video[0]
        tb = Fraction(stream.time_base or 1)
        packets = sorted(
            (p.pts, p.duration or 0) for p in container.demux(stream) if p.pts is not None
        )
    times = [Fraction(pts) * tb for pts, _ in packets]
    return [*times, times[-1] + Fraction(packets[-1][1]) * tb]


def interpolated_times(times: list[Fraction]) -> list[Fraction]:
    """Display times of an interpolated output from the source's :func:`frame_times`: each
    source frame's time, then the midpoint of its display interval."""
    return [t for a, b in zip(times, times[1:]) for t in (a, (a + b) / 2)]
