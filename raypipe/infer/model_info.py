"""What a model is, for ``raypipe model list`` and ``raypipe model show``.

:func:`describe` reads a model (``builtin:NAME``, a path or a URL) the way a run does
(:func:`~raypipe.infer.sidecar.resolve_model_and_spec`) and says what it takes and gives:
its inputs and outputs from the ONNX graph, its kind (``image``: frames out, a video is
written; ``tensor``: arrays per frame, Parquet is written), its scale (output size over
input size, for image models, measured by running it once on a small frame), the resolved
:class:`~raypipe.infer.sidecar.ModelSpec` and where that spec came from (the built-in's,
a sidecar file, or the defaults).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from raypipe.errors import ModelLoadError, RaypipeError
from raypipe.infer.builtin import BUILTIN_MODELS
from raypipe.infer.output_kind import output_kind
from raypipe.infer.sidecar import (
    BUILTIN_PREFIX,
    BUILTIN_SPECS,
    ModelSpec,
    find_sidecar,
    resolve_model_and_spec,
)

DESCRIPTIONS: dict[str, str] = {
    "identity": "returns each frame unchanged",
    "invert": "inverts the colours (1 - x)",
    "grayscale": "BT.601 luma, repeated to three channels",
    "blur": "5x5 binomial blur (sigma about 1), edges replicated",
    "sharpen": "3x3 sharpening kernel, edges replicated",
    "upscale2x": "bilinear 2x upscale",
    "superres": "a super-resolution-sized 2x network, fixed seeded weights (GPU benchmarks)",
    "phash": "64-bit DCT perceptual hash per frame, bit for bit imagehash.phash",
    "embedding": "a small unit-norm frame embedding (untrained, seeded weights)",
    "denoise3": "temporal: the mean of frames t-1, t, t+1 (a window model)",
    "ema": "temporal: a running average with a recurrent state (warm-up 8 frames)",
    "interp2x": "temporal: a frame halfway between each two (twice the frames)",
}
"""What each built-in does, in one line (every name of BUILTIN_MODELS has one)."""

_ELEMENT_TYPES = {v: k for k, v in onnx.TensorProto.DataType.items()}
_PROBE_PX = 32  # the frame side an image model is run on once to measure its scale


@dataclass(frozen=True, kw_only=True)
class Port:
    """One model input or output: its name, element type and shape (names for dynamic
    dimensions)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...] | None  # None: the graph records no shape (rank unknown)

    def __str__(self) -> str:
        if self.shape is None:  # was "[]", which reads as a scalar (a sweep)
            return f"{self.name}: {self.dtype}, shape not recorded (rank unknown)"
        return f"{self.name}: {self.dtype} [{', '.join(str(d) for d in self.shape)}]"


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """What :func:`describe` found out about a model."""

    model: str
    sha256: str
    size_bytes: int
    kind: str  # "image" or "tensor"
    # output size over input size for image models (2, 0.5...), None for tensor ones; a
    # (width, height) pair where the sides scale unequally
    scale: float | tuple[float, float] | None
    scale_note: str = ""  # why an image model's scale is not known
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    spec: ModelSpec
    spec_source: str  # "the built-in", "sidecar PATH" or "the defaults (...)"
    temporal: str = ""  # a temporal model's window, warm-up, state and interpolation
    run_error: RaypipeError | None = None  # why a run refuses it (describe's run_check)

    def lines(self) -> list[str]:
        """The text ``raypipe model show`` prints."""
        scale = f", scale {scale_text(self.scale)}" if self.scale is not None else ""
        if self.scale_note:
            scale = f", scale unknown ({self.scale_note})"
        out = [
            f"model: {self.model} ({self.size_bytes} bytes, sha256 {self.sha256[:16]}...)",
            f"kind: {self.kind}{scale} ({_KIND_MEANS[self.kind]})",
            *([f"temporal: {self.temporal}"] if self.temporal else []),
            "inputs:",
            *(f"  {p}" for p in self.inputs),
            "outputs:",
            *(f"  {p}" for p in self.outputs),
            f"spec: from {self.spec_source}",
        ]
        out += [
            f"  {f.name}: {getattr(self.spec, f.name)!r}" for f in dataclasses.fields(ModelSpec)
        ]
        return out


_KIND_MEANS = {"image": "frames in, frames out: a video", "tensor": "arrays per frame: Parquet"}


def _ports(values: list[onnx.ValueInfoProto]) -> tuple[Port, ...]:
    ports = []
    for v in values:
        tensor = v.type.tensor_type
        dims = (
            tuple(
                d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in tensor.shape.dim
            )
            if tensor.HasField("shape")
            else None
        )
        dtype = _ELEMENT_TYPES.get(tensor.elem_type, "?").lower()
        dtype = {"float": "float32", "double": "float64"}.get(dtype, dtype)
        ports.append(Port(name=v.name, dtype=dtype, shape=dims))
    return tuple(ports)


def scale_text(scale: float | tuple[float, float]) -> str:
    """``2x``, ``0.5x``, or ``2x wide, 1x high`` (the picture's shape changes)."""
    if isinstance(scale, tuple):
        return f"{scale[0]:g}x wide, {scale[1]:g}x high"
    return f"{scale:g}x"


def _scale(data: bytes, spec: ModelSpec) -> tuple[float | tuple[float, float] | None, str]:
    """Output size over input size: from the graph's shapes where they say it
    (:func:`~raypipe.infer.shapes.image_output_scale`), else from one run on a small gray
    frame (CPU), as (width, height) factors where they differ; ``(None, why)`` where that
    run fails (a fixed-size model without ``resize``, a stride the small frame does not
    divide): ``raypipe model show`` still describes the model. Before, the run's height
    alone was rounded to a whole number of at least 1: a model that halved frames, or
    doubled their width alone, showed as 1x."""
    from raypipe.infer.models import FrameModel
    from raypipe.infer.shapes import image_output_scale
    from raypipe.infer.temporal_model import TemporalModel

    scale = None if spec.temporal.active else image_output_scale(data, spec)
    if scale is not None:
        return scale, ""
    frames = np.full((3, _PROBE_PX, _PROBE_PX, 3), 128, dtype=np.uint8)
    try:
        if spec.temporal.active:
            out = TemporalModel(data, spec=spec, device="cpu").run(frames, 1)
        else:
            out = FrameModel(data, spec=spec, device="cpu").run(frames, 1)
    except RaypipeError as e:
        return None, f"a {_PROBE_PX}x{_PROBE_PX} frame did not run: {e}"
    wide, high = out.shape[2] / _PROBE_PX, out.shape[1] / _PROBE_PX
    return (wide if wide == high else (wide, high)), ""


def spec_source(model: str) -> str:
    """Where ``model``'s spec comes from: the built-in's own, a sidecar, or the defaults."""
    if model.startswith(BUILTIN_PREFIX):
        name = model[len(BUILTIN_PREFIX) :]
        return "the built-in" if name in BUILTIN_SPECS else "the defaults (a built-in)"
    sidecar = find_sidecar(model)
    return f"sidecar {sidecar}" if sidecar else "the defaults (no sidecar beside the model)"


def _run_error(data: bytes, spec: ModelSpec) -> RaypipeError | None:
    """The typed error a run would raise loading the model on the driver (a rank-3 input, a
    text input...), ``None`` when it loads: the graph alone does not say whether raypipe
    can run it, and `model show` called such a model a tensor model and exited 0."""
    from raypipe.infer.models import FrameModel
    from raypipe.infer.shapes import check_whole_scale
    from raypipe.infer.temporal_model import TemporalModel

    try:
        if spec.temporal.active:
            TemporalModel(data, spec=spec, device="cpu")
        elif FrameModel(data, spec=spec, device="cpu").output_kind == "image":
            check_whole_scale(data, spec)  # as the run's load_model
    except RaypipeError as e:
        return e
    return None


def onnx_graph(data: bytes, model: str) -> Any:
    """The graph of ``model``'s bytes ``data``, or :class:`ModelLoadError` in one line where
    they hold none (not ONNX, an empty or cut-off file)."""
    try:
        graph = onnx.load_from_string(data).graph
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and kin: not ONNX
        from raypipe.infer.session import _load_hint

        # what a run says of it: a PyTorch checkpoint, a pickle, a cut-off download (the
        # protobuf's "Wire format was corrupt" said none of it; a sweep)
        hint = _load_hint("INVALID_PROTOBUF", data).removeprefix("; ")
        raise ModelLoadError(f"cannot load the model {model!r}: {hint}") from e
    if not graph.node and not graph.output:
        raise ModelLoadError(
            f"cannot load the model {model!r}: it holds no graph ({len(data)} bytes: an empty "
            "or cut-off file?); download it again, or pass builtin:NAME"
        )
    return graph


def describe(model: str, *, measure_scale: bool = True, run_check: bool = False) -> ModelInfo:
    """Read ``model`` (``builtin:NAME``, a path or a URL) and say what it is. Raises the
    typed errors a run would (:class:`~raypipe.errors.ModelNotFoundError`, ...) where it is
    no ONNX graph; ``run_check``: load it as a run would, its error in
    :attr:`ModelInfo.run_error` (the model read once)."""
    data, sha256, spec = resolve_model_and_spec(model)
    graph = onnx_graph(data, model)
    initializers = {t.name for t in graph.initializer}
    temporal = spec.temporal
    kind = "image" if temporal.active else output_kind(data, spec)
    scale, scale_note = _scale(data, spec) if kind == "image" and measure_scale else (None, "")
    return ModelInfo(
        model=model,
        sha256=sha256,
        size_bytes=len(data),
        kind=kind,
        scale=scale,
        scale_note=scale_note,
        temporal=temporal.describe() if temporal.active else "",
        inputs=_ports([i for i in graph.input if i.name not in initializers]),
        outputs=_ports(list(graph.output)),
        spec=spec,
        spec_source=spec_source(model),
        run_error=_run_error(data, spec) if run_check else None,
    )


def builtin_table() -> list[str]:
    """``raypipe model list``: every built-in with its kind, scale and what it does."""
    rows = [("model", "kind", "scale", "what it does")]
    for name in BUILTIN_MODELS:
        info = describe(f"{BUILTIN_PREFIX}{name}")
        scale = scale_text(info.scale) if info.scale is not None else "-"
        rows.append((f"{BUILTIN_PREFIX}{name}", info.kind, scale, DESCRIPTIONS[name]))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return [
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip()
        for r in rows
    ]
