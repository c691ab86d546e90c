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
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from raypipe.config import Device
from raypipe.errors import ConfigError, ModelLoadError
from raypipe.infer.ingraph import PixelGraph, with_yuv_input, wrap_pixels
from raypipe.infer.iobinding import HostRunner, IOBindingRunner
from raypipe.infer.model_errors import check_finite, reported
from raypipe.infer.output_kind import ELEMENT_DTYPES as _ELEMENT_DTYPES
from raypipe.infer.output_kind import (
    TABLE_COLUMNS,
    _dim,
    column_problem,
    declared_output_shapes,
    graph_io,
    not_a_picture,
)
from raypipe.infer.output_kind import OutputKind as OutputKind
from raypipe.infer.output_kind import TensorInfo as TensorInfo
from raypipe.infer.output_kind import detect_output_kind as detect_output_kind
from raypipe.infer.output_kind import output_kind as output_kind
from raypipe.infer.padding import run_padded_maps
from raypipe.infer.pixels import _check_frames
from raypipe.infer.pixels import postprocess as postprocess
from raypipe.infer.pixels import preprocess as preprocess
from raypipe.infer.session import (
    GPU_PROVIDERS,
    TENSORRT,
    create_session,
    granted_providers,
    import_onnxruntime,
)

# ModelSpec and resolve_model live in raypipe.infer.sidecar (with the sidecar files that
# declare specs); re-exported here, where callers have always imported them from.
from raypipe.infer.sidecar import BUILTIN_PREFIX as BUILTIN_PREFIX
from raypipe.infer.sidecar import (
    DEFAULT_SPEC,
    ModelSpec,
    inputs_hint,
    resolve_model_and_spec,
    with_constants,
)
from raypipe.infer.sidecar import resolve_model as resolve_model
from raypipe.infer.tiling import FrameGeometry, LetterboxParams, unfit_frames
from raypipe.recycle import Allocate

_EIGHT_BIT_SLACK = 32  # a 0..255 output's overshoot (a sharpening model's) in range_note
_RANGE_PROBE_PX = 64  # the test frame's side for a model of any size (FrameModel.range_note)

if TYPE_CHECKING:
    from raypipe.media.yuv import YuvInput

LETTERBOX_KEYS: tuple[str, ...] = (
    "letterbox_scale_x",
    "letterbox_scale_y",
    "letterbox_pad_x",
    "letterbox_pad_y",
)
"""Extra per-frame arrays :meth:`FrameModel.run_tensors` adds when frames are resized."""


# --- FrameModel ---------------------------------------------------------------------------

PIXELS_MODES: tuple[str, ...] = ("auto", "graph", "host")
"""Where :class:`FrameModel` pre/post-processes uint8 frames of an image model: ``graph``
inside the ONNX graph (:mod:`raypipe.infer.ingraph`), ``host`` in numpy/OpenCV
(:mod:`raypipe.infer.pixels`), ``auto`` the graph on a GPU session and :data:`CPU_PIXELS`
on the CPU."""

CPU_PIXELS = "host"
"""The path ``auto`` takes on the CPU, the faster one measured: see benchmarks/README.md
(*Pre/post-processing*). Both give the same bits."""


def pixels_on_gpu(device: str, providers: Sequence[str] | None) -> bool:
    """Whether a session for ``device`` and ``providers`` asks for a GPU provider first."""
    if device == "cpu":
        return False
    if providers is not None:
        return bool(providers) and providers[0] in GPU_PROVIDERS
    if device == "gpu":
        return True
    available = import_onnxruntime().get_available_providers()
    return any(p in GPU_PROVIDERS for p in available)


_IO = tuple[list[TensorInfo], list[TensorInfo]]


def layout_hint(layout: str) -> str:
    """The advice for a model whose input's channels sit where ``layout`` has them."""
    which = "channels-last" if layout == "NHWC" else "channels-first"
    return (
        f'; for a {which} model put "layout": "{layout}" in its sidecar (NAME.raypipe.json '
        f"beside NAME.onnx; for a FrameModel in Python, spec=ModelSpec(layout='{layout}'))"
    )


def _check_first_is_the_picture(outputs: Sequence[TensorInfo], spec: ModelSpec) -> None:
    """A model of several outputs whose spec says ``output: image`` and names none makes its
    video of the first: refused unless that is its one picture-shaped output (a mask first
    and the picture second gave a grey video of the mask, without a word; a sweep)."""
    pictures = [o.name for o in outputs if not not_a_picture(o.shape, spec)]
    if pictures == [outputs[0].name]:
        return
    shown = ", ".join(f"'{o.name}' {list(o.shape or [])}" for o in outputs)
    which = (
        f"{len(pictures)} of them could be the picture" if pictures else "none looks like a picture"
    )
    colour = [
        o.name
        for o in outputs
        if o.name in pictures and _dim((o.shape or [0] * 4)[spec.channel_axis]) == 3
    ]
    name = (colour or pictures or [outputs[0].name])[0]  # a colour picture, if one is
    raise ModelLoadError(
        f"the model's spec says output: image, and the model has {len(outputs)} outputs "
        f"({shown}): {which}, and the video would be made of the first; name the picture "
        f'in its sidecar: {{"output_name": "{name}"}} (ModelSpec(output_name=...) in Python)'
    )


def _wrapped(model_bytes: bytes, spec: ModelSpec) -> tuple[PixelGraph | None, _IO | None, str]:
    """The image model wrapped for uint8 frames with the core's inputs and outputs, or
    None and why it is not."""
    try:
        proto = onnx.load_model_from_string(model_bytes)
    except Exception:  # noqa: BLE001 - the session then says what is wrong
        return None, None, "the model does not parse"
    io = graph_io(proto.graph)
    if detect_output_kind(io[1], spec) != "image":
        return None, None, "a tensor model: its inputs are prepared on the host"
    graph = wrap_pixels(proto, spec)
    if not graph.wrapped:
        return None, None, f"pre/post-processing on the host: {graph.why_not}"
    return graph, io, ""


def session_graph(
    model_bytes: bytes,
    spec: ModelSpec,
    *,
    on_gpu: bool,
    pixels: str = "auto",
    yuv: YuvInput | None = None,
) -> PixelGraph | None:
    """The wrapped model a :class:`FrameModel` with ``pixels`` (and ``yuv``) would load on
    a GPU session (``on_gpu``) or a CPU one, or None when it loads ``model_bytes`` as they
    are. The TensorRT profile and engine of a GPU actor are made for it."""
    if yuv is not None:
        graph = _wrapped(model_bytes, spec)[0]
        return None if graph is None else _yuv_graph(graph, yuv)
    return _wrapped(model_bytes, spec)[0] if _wants_graph(pixels, on_gpu=on_gpu) else None


@dataclasses.dataclass(frozen=True)
class GpuProfile:
    """What a GPU session of an image model is built for, and its TensorRT engine keyed
    by: the graph it runs (the model wrapped for uint8 NHWC frames where it can be, else
    the model), that graph's layout, and the frame size and batch its calls get
    (:meth:`FrameGeometry.call_hw`, :meth:`FrameModel.batch_step`)."""

    data: bytes
    layout: str
    hw: tuple[int, int]
    batch_size: int


def gpu_profile(
    model_bytes: bytes, spec: ModelSpec, frame_hw: tuple[int, int], batch_size: int
) -> GpuProfile:
    """The :class:`GpuProfile` of frames of ``frame_hw`` (height, width) px: what an
    inference actor builds its session for, and ``raypipe build-engines`` its engines."""
    sizes = FrameModel(model_bytes, spec=spec, device="cpu", pixels="host")  # sizes only
    graph = session_graph(model_bytes, spec, on_gpu=True)
    return GpuProfile(
        data=graph.data if graph is not None else model_bytes,
        layout="NHWC" if graph is not None else spec.layout,
        hw=sizes.geometry.call_hw(*frame_hw),
        batch_size=sizes.batch_step(batch_size, *frame_hw),
    )


def yuv_model_problem(model_bytes: bytes, spec: ModelSpec) -> str:
    """Why an image model cannot take YUV frames (the YUV hand-off), whatever their size
    (``""``: it can; :meth:`FrameModel.yuv_problem` checks a size)."""
    if spec.temporal.active:
        return "a temporal model gets RGB frames"
    if spec.resize != "none":
        return f"its frames are resized ({spec.resize}) on RGB"
    if spec.tile is not None:
        return "its frames are tiled on RGB"
    graph, _, why = _wrapped(model_bytes, spec)
    return why if graph is None else ""


def _yuv_graph(graph: PixelGraph, yuv: YuvInput) -> PixelGraph:
    from raypipe.media.yuv import rgb_tables  # PyAV: only where frames are handed off

    return with_yuv_input(graph, yuv.height, yuv.width, rgb_tables(yuv.matrix, yuv.range))


def _wants_graph(pixels: str, *, on_gpu: bool) -> bool:
    return pixels == "graph" or (pixels == "auto" and (on_gpu or CPU_PIXELS == "graph"))


BATCH_MIB = 256
"""A model call's frames, as the model takes them (its input type, at the size it sees:
fitted, padded or a tile window) and as it gives them back (an upscaler's, larger), hold
at most this many MiB: ``batch_size`` is cut to fewer frames for large ones, at least one
(``batch_size`` 8: 2 frames of 4K as float32, 8 of 1080p, 2 of 1080p through a 2x
upscaler). Each call's input, output and the pre/post-processing between them are then a
few hundred MB instead of 8 times 100 MB each, first touched at the warm-up. (Counting the
input only, a 4x upscaler's 8 frames of 1080p came out as 3.2 GB of float32, and its actor
peaked at 14 GB against 3 GB with one frame a call: a sweep.)"""


@dataclasses.dataclass
class _HostBuffers:
    """What the host path keeps from batch to batch: the runner whose output buffers ORT
    writes into (one per input shape) and the float32 input buffer."""

    runner: HostRunner | None = None
    x: np.ndarray | None = None


class FrameModel:
    """A warm ONNX Runtime session that runs uint8 RGB frames through a model.

    Image models: :meth:`run` gives uint8 RGB frames. Tensor models: :meth:`run_tensors`
    gives every output per frame. ``spec`` says how frames go in (and are fitted, padded or
    tiled). When the model fails on frames (or gives NaN) both raise a
    :class:`~raypipe.errors.ModelError` saying what it said and what to try
    (:mod:`raypipe.infer.model_errors`).

    ``pixels`` (one of :data:`PIXELS_MODES`): where an image model's uint8 frames are
    pre/post-processed. In the graph the session runs the wrapped model (uint8 in and out,
    :attr:`pixel_graph`); a model that cannot be wrapped runs on the host and
    :attr:`pixels_note` says why. uint16 frames (sources deeper than 8 bits) always take the
    host path: with a wrapped model, through a second session of the bare model, made when
    the first such frames come (without TensorRT, whose profile names the wrapped input).

    ``yuv`` (:class:`~raypipe.media.yuv.YuvInput`): the model takes one source's packed
    YUV frames ``(n, H * W * 3 / 2)`` instead of RGB (the YUV hand-off), converted in the
    graph to the RGB bits the decode task would have made; it needs the wrapped graph and
    frames that reach the model as they are (no resize, tiling or padding), else
    :class:`ModelLoadError` says why (:meth:`yuv_problem`).
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
        pixels: str = "auto",
        yuv: YuvInput | None = None,
    ) -> None:
        if pixels not in PIXELS_MODES:
            raise ConfigError(f"pixels must be 'auto', 'graph' or 'host', got {pixels!r}")
        self.spec = spec
        model_bytes = with_constants(model_bytes, spec.constants)
        self._model_bytes = model_bytes
        self._session_args: dict[str, Any] = {
            "device": device,
            "intra_op_threads": intra_op_threads,
            "providers": providers,
            "provider_options": provider_options,
        }
        self._runners: dict[str, IOBindingRunner] = {}
        self._growth_cached: float | None = None
        self._host = _HostBuffers()
        self._host_lock = threading.Lock()
        self._host_local = threading.local()  # a second thread's, while the first runs
        self.pixels_note = ""
        self.yuv = yuv
        on_gpu = pixels == "auto" and pixels_on_gpu(device, providers)
        wants = yuv is not None or _wants_graph(pixels, on_gpu=on_gpu)
        wrapped = self._wrap(model_bytes) if wants else None
        if yuv is not None:
            if wrapped is None:
                raise ModelLoadError(
                    f"the YUV hand-off runs the model's wrapped graph: {self.pixels_note}"
                )
            wrapped = (_yuv_graph(wrapped[0], yuv), wrapped[1])
        self.pixel_graph: PixelGraph | None = wrapped[0] if wrapped else None
        self.session = create_session(
            self.pixel_graph.data if self.pixel_graph else model_bytes, **self._session_args
        )
        self._core_session = None if self.pixel_graph else self.session
        inputs, outputs = (
            wrapped[1] if wrapped else (self.session.get_inputs(), self.session.get_outputs())
        )
        self._check_model(inputs, outputs)
        if yuv is not None:
            problem = self.yuv_problem(yuv.height, yuv.width)
            if problem:
                raise ModelLoadError(f"the YUV hand-off does not fit this model: {problem}")

    def yuv_problem(self, height: int, width: int) -> str:
        """Why frames of ``height`` x ``width`` px cannot be handed to this model as YUV
        (``""``: they can): an image model whose frames reach it as they are."""
        geometry = self.geometry
        if self.output_kind != "image":
            return "a tensor model"
        if geometry.model_size is not None:
            return f"its frames are resized ({self.spec.resize})"
        if geometry.tile is not None:
            return "its frames are tiled"
        if geometry.padded_hw(height, width) != (height, width):
            return f"{width}x{height} frames are padded to multiples of {geometry.pad_multiple}"
        return ""

    def _wrap(self, model_bytes: bytes) -> tuple[PixelGraph, _IO] | None:
        """The wrapped image model and the core's inputs and outputs, or None (and why not
        in :attr:`pixels_note`) when pre/post-processing stays on the host."""
        graph, io, self.pixels_note = _wrapped(model_bytes, self.spec)
        return None if graph is None or io is None else (graph, io)

    def _check_model(self, inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]) -> None:
        spec = self.spec
        if len(inputs) != 1:
            others = [i.name for i in inputs if i.name != (spec.input_name or inputs[0].name)]
            raise ModelLoadError(
                f"model has {len(inputs)} inputs {[i.name for i in inputs]}; raypipe feeds one "
                "image batch and needs a model with exactly one input: "
                f"{inputs_hint(others, [o.name for o in outputs])}"
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
        if spec.output == "image" and spec.output_name is None and len(outputs) > 1:
            _check_first_is_the_picture(outputs, spec)
        self._input_name: str = node.name
        self._output_name: str = spec.output_name or out_names[0]
        self._output_type = next(o.type for o in outputs if o.name == self._output_name)
        self.output_kind: OutputKind = detect_output_kind(outputs, spec)
        self.output_names: list[str] = [spec.output_name] if spec.output_name else out_names
        if node.type not in _ELEMENT_DTYPES:
            raise ModelLoadError(
                f"model input {node.name!r} has element type {node.type}; raypipe feeds "
                f"{', '.join(_ELEMENT_DTYPES)}: export the model with a float32, float16 "
                "or uint8 input (or a Cast to its type at the input)"
            )
        self.input_dtype: np.dtype[Any] = np.dtype(_ELEMENT_DTYPES[node.type])
        shape = list(node.shape or [])
        expects = f"raypipe expects a rank-4 image batch, {spec.layout} with 3 channels"
        if len(shape) != 4:
            hint = ""
            if len(shape) == 5:  # (batch, time, channels, height, width): frames over time
                hint = (
                    "; a rank-5 input takes frames over time (a temporal model): give its "
                    'window, --window BEFORE,AFTER ("window" in its sidecar, window=... in '
                    'Python; README, "Temporal models")'
                )
            if not shape:  # ONNX Runtime's shape of an input whose rank was not recorded
                raise ModelLoadError(
                    f"model input {node.name!r} records no shape (its rank is unknown); "
                    f"{expects}: export the model with its input's shape (dynamic sizes may "
                    "stay named, e.g. [batch, 3, height, width])"
                )
            raise ModelLoadError(
                f"model input {node.name!r} has rank {len(shape)} (shape {shape}); {expects}{hint}"
            )
        channels = _dim(shape[spec.channel_axis])
        # [batch, height, width, 3] read as NCHW: 3 px wide, and a dynamic or wrong channel
        # axis (a TF-style model without a sidecar)
        channels_last = spec.layout == "NCHW" and shape[3] == 3 and channels != 3
        # and [batch, 3, height, width] declared NHWC: a dynamic width read as the channels
        channels_first = spec.layout == "NHWC" and shape[1] == 3 and channels != 3
        if channels not in (None, 3) or channels_last or channels_first:
            hint = (
                layout_hint("NHWC" if channels_last else "NCHW")
                if (channels_last or channels_first)
                else ""
            )
            declared = shape[spec.channel_axis]
            said = f"{declared!r} (a dynamic size)" if channels is None else str(channels)
            raise ModelLoadError(
                f"model input {node.name!r} has shape {shape}, {said} on the channel axis "
                f"{spec.channel_axis}; {expects}{hint}"
            )
        self._fixed_batch = _dim(shape[0])
        hw = (shape[2], shape[3]) if spec.layout == "NCHW" else (shape[1], shape[2])
        self.geometry = FrameGeometry.from_spec(spec, (_dim(hw[0]), _dim(hw[1])), node.name)
        self._check_outputs(outputs)

    def _check_outputs(self, outputs: Sequence[TensorInfo]) -> None:
        spec = self.spec
        if self.output_kind == "tensor":
            scalars = [o.name for o in outputs if o.shape is not None and len(o.shape) == 0]
            if scalars:  # a session's [] is a scalar's or an unknown shape: the graph says
                declared = declared_output_shapes(self._model_bytes)
                scalars = [name for name in scalars if declared.get(name) == []]
            if scalars:  # it failed after Ray's start, `model show` saying nothing
                raise ModelLoadError(
                    f"model output(s) {scalars} are scalars (shape []); raypipe expects one "
                    "result per frame along the first dimension: export the model with a "
                    "batch axis on every output (an Unsqueeze at axis 0 where it was squeezed "
                    "out)"
                )
            if spec.tile is not None:
                raise ModelLoadError(
                    f"tile={spec.tile} needs an image output, but the model's outputs "
                    f"{self.output_names} are tensors; drop tile or pass output='image'"
                )
            taken = sorted(set(self.output_names) & set(TABLE_COLUMNS))
            if taken:  # their values replaced raypipe's columns (a sweep)
                raise ModelLoadError(
                    f"model outputs {taken} have the names of columns raypipe writes in "
                    f"the table ({', '.join(TABLE_COLUMNS)}): their values would replace "
                    "those, or make the folder unreadable; rename those outputs in the "
                    "model (onnx.compose.add_prefix renames a graph's names)"
                )
            clash = sorted(set(self.output_names) & set(LETTERBOX_KEYS))
            if clash and spec.resize != "none":
                raise ModelLoadError(
                    f"model outputs {clash} clash with the letterbox columns raypipe adds "
                    f"with resize={spec.resize!r}; rename those outputs"
                )
            return
        shape = next(o for o in outputs if o.name == self._output_name).shape
        if not_a_picture(shape, spec):
            raise ModelLoadError(
                f"model output {self._output_name!r} has shape {list(shape or [])}; output='image' "
                f"needs a rank-4 image batch ({spec.layout}) with 3 channels (or 1); for "
                "other outputs pass output='tensor'"
            )
        other = 3 if spec.layout == "NCHW" else 1  # the other layout's channel axis
        if (
            shape is not None
            and _dim(shape[spec.channel_axis]) is None
            and _dim(shape[other]) in (1, 3)
        ):
            looks = "NHWC" if spec.layout == "NCHW" else "NCHW"
            raise ModelLoadError(  # it failed at the first chunk, after Ray's start (a sweep)
                f"model output {self._output_name!r} is declared {list(shape)}: its channels "
                f"look {looks} while its input is {spec.layout}, and raypipe reads both in one "
                f"layout (the spec's); end the model with a Transpose to {spec.layout} (perm "
                f"{[0, 3, 1, 2] if spec.layout == 'NCHW' else [0, 2, 3, 1]}), or transpose in a "
                "raypipe.Processor"
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

    @property
    def pixels(self) -> str:
        """Where uint8 frames are pre/post-processed: ``graph`` or ``host``."""
        return "graph" if self.pixel_graph is not None else "host"

    def run(
        self,
        frames: np.ndarray,
        batch_size: int,
        *,
        allocate: Allocate | None = None,
    ) -> np.ndarray:
        """RGB frames ``(n, H, W, 3)`` through the model, ``batch_size`` frames at a time;
        uint8 in, uint8 out (uint16 in, uint16 out: see the module docstring).

        A model with a fixed batch dimension gets batches of exactly that size (the last one
        padded by repeating its last frame; the padding's outputs are dropped). With
        ``resize`` the output is mapped back to ``(H, W)`` times the model's scale factor.
        Each batch's output is written into one array for the whole call, so what the call
        holds beyond its input and output is one batch's worth of model tensors.
        ``allocate(shape, dtype)`` makes that array when there is more than one batch
        (``np.empty`` by default; an inference actor passes
        :meth:`raypipe.recycle.RecycledArrays.empty`).
        """
        if self.output_kind != "image":
            raise ModelLoadError(
                f"the model's outputs {self.output_names} are tensors, not frames; call "
                "run_tensors() (or pass ModelSpec(output='image') if it does give frames)"
            )
        batches = self._batches(frames, batch_size)
        out: np.ndarray | None = None
        with self._reported(frames):
            at = 0
            for batch, count in batches:
                # after the first batch the frames are written straight into the output
                target = None
                if out is not None and count == len(batch):
                    target = out[at : at + count]
                result = self._run_image_batch(batch, out=target)[:count]
                if len(batches) == 1:
                    return result
                if out is None:
                    shape = (len(frames), *result.shape[1:])
                    out = (allocate or np.empty)(shape, result.dtype)
                if result is not target:
                    out[at : at + count] = result
                at += count
        assert out is not None
        return out

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
            for name, p in parts.items():
                problem = column_problem(name, p)
                if problem:
                    raise ModelLoadError(f"model {problem}")
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

    def warmup(
        self, height: int, width: int, batch_size: int
    ) -> np.ndarray | dict[str, np.ndarray]:
        """Run one dummy batch so the first real chunk does not pay for lazy initialisation;
        returns its output (frames, or a tensor model's arrays), which tells the shapes.
        A model that takes YUV (``yuv``) gets packed frames of its own size."""
        step = self.batch_step(batch_size, height, width)  # the batch the chunks run
        dummy = np.zeros((step, height, width, 3), dtype=np.uint8)
        if self.yuv is not None:
            dummy = np.zeros((step, self.yuv.packed_size), dtype=np.uint8)
        if self.output_kind == "image":
            return self.run(dummy, batch_size)
        return self.run_tensors(dummy, batch_size)

    def range_note(self) -> str:
        """Why nearly every pixel of this image model's frames would clip to black or
        white: more than half of the values its float output gives for a test frame (a
        ramp) lie more than a whole ``output_range`` span beyond that range (a model that
        outputs 0..255 under the default [0, 1] made a white video without a word); ``""``
        otherwise, and for uint8 outputs (pixels as they are)."""
        if self.output_kind != "image" or "float" not in self._output_type:
            return ""
        from raypipe.infer.shapes import probe_side

        geometry = self.geometry
        fixed_h, fixed_w = geometry.fixed_size
        if geometry.tile is not None:
            side = geometry.tile + 2 * geometry.tile_overlap
        else:
            side = probe_side(geometry.pad_multiple, _RANGE_PROBE_PX)
        height, width = geometry.model_size or (fixed_h or side, fixed_w or side)
        ramp = np.linspace(32, 224, height * width * 3).reshape(1, height, width, 3)
        x = preprocess(ramp.astype(np.uint8), self.spec, self.input_dtype)
        try:
            y = self._core().run([self._output_name], {self._input_name: x})[0]
        except Exception:  # noqa: BLE001 - a model that runs at its own size only: no note
            return ""  # (it ended every run, untyped, before the run; a sweep)
        lo, hi = self.spec.output_range
        span = hi - lo
        values = np.asarray(y, dtype=np.float64)
        above, below = values > hi + span, values < lo - span
        outside = float(np.mean(above | below))
        if outside <= 0.5:
            return ""
        low, high = float(values.min()), float(values.max())
        if np.mean(above) > 0.5 and low >= -_EIGHT_BIT_SLACK and high <= 255 + _EIGHT_BIT_SLACK:
            advice = 'a model whose output is 0..255 needs "output_range": [0, 255]'
        else:  # under the range, or not 0..255 either: [0, 255] was advised whatever (a sweep)
            advice = (
                'set "output_range" to the range the model outputs, or check that its input '
                '"scale", "mean" and "std" are the ones it was trained with,'
            )
        return (
            f"{outside:.0%} of its output for a test frame lies far outside its "
            f"output_range [{lo:g}, {hi:g}] (from {low:.3g} to {high:.3g}), so nearly every "
            f"pixel would clip to black or white; {advice} in its sidecar (NAME.raypipe.json "
            "beside NAME.onnx)"
        )

    def batch_step(self, batch_size: int, height: int, width: int) -> int:
        """Frames per model call for frames of ``height`` x ``width`` px: the model's fixed
        batch, else ``batch_size`` or fewer, so the call's input stays within
        :data:`BATCH_MIB`."""
        if self._fixed_batch:
            return self._fixed_batch
        h, w = self.geometry.call_hw(height, width)
        if self.geometry.tile is not None and self.geometry.model_size is None:
            # the tiles' calls hold the whole frames, in and out (run_tiled): a cap by the
            # tile window let 8 frames of 8K through, 7.7 GB an actor against 2.9 untiled
            h, w = max(h, height), max(w, width)
        frame_bytes = h * w * 3 * self.input_dtype.itemsize
        step = max(1, min(batch_size, (BATCH_MIB << 20) // frame_bytes))
        if step > 1 and self.output_kind == "image":  # an upscaler's output is the larger
            step = max(1, min(step, int((BATCH_MIB << 20) // (frame_bytes * self._growth()))))
        return step

    def unused_spec(self) -> list[str]:
        """The spec's settings this model's element types leave unused, where they are not
        the defaults: ``scale``, ``mean`` and ``std`` for a uint8 input (it gets the pixels
        as they are), ``output_range`` for a uint8 image output (taken as pixels). A
        sidecar's ImageNet mean and std on a uint8 model were taken without a word."""
        spec, names = self.spec, []
        if self.input_dtype == np.uint8:
            names += [
                n for n in ("scale", "mean", "std") if getattr(spec, n) != getattr(DEFAULT_SPEC, n)
            ]
        if (
            self.output_kind == "image"
            and self._output_type == "tensor(uint8)"
            and spec.output_range != DEFAULT_SPEC.output_range
        ):
            names.append("output_range")
        return names

    def _growth(self) -> float:
        """How many times an input frame's values its output frame holds, at least 1: the
        square of the model's scale (:func:`~raypipe.infer.shapes.image_output_scale`,
        ONNX shape inference once per model; 1 where the graph does not say)."""
        if self._growth_cached is None:
            from raypipe.infer.shapes import image_output_scale

            scale = image_output_scale(self._model_bytes, self.spec) or 1.0
            self._growth_cached = max(1.0, scale * scale)
        return self._growth_cached

    def _batches(self, frames: np.ndarray, batch_size: int) -> list[tuple[np.ndarray, int]]:
        """(batch, real frame count) pairs; a fixed-batch model's last batch is padded."""
        if self.yuv is not None:
            self.yuv.check(frames)
        else:
            _check_frames(frames)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if len(frames) == 0:
            raise ValueError("run() got 0 frames; expected at least one")
        self.geometry.check_frames(*self._frame_hw(frames), image=self.output_kind == "image")
        step = self.batch_step(batch_size, *self._frame_hw(frames))
        batches = []
        for start in range(0, len(frames), step):
            batch = frames[start : start + step]
            count = len(batch)
            if count < step and self._fixed_batch:
                batch = np.concatenate([batch, np.repeat(batch[-1:], step - count, axis=0)])
            batches.append((batch, count))
        return batches

    def _core(self) -> Any:
        """The session of the bare model (made on first use when the session is wrapped)."""
        if self._core_session is None:
            args = dict(self._session_args)
            options = dict(args["provider_options"] or {})
            options.pop(TENSORRT, None)
            args["provider_options"] = options or None
            if args["providers"] is not None:
                args["providers"] = [p for p in args["providers"] if p != TENSORRT] or None
            self._core_session = create_session(self._model_bytes, **args)
        return self._core_session

    def _runner(self, which: str) -> IOBindingRunner:
        """The runner (``session.run``; :mod:`raypipe.infer.iobinding` says why not bound
        buffers) for the bare model (``core``) or the wrapped one (``pixels``)."""
        runner = self._runners.get(which)
        if runner is None:
            if which == "pixels":
                assert self.pixel_graph is not None
                graph = self.pixel_graph
                runner = IOBindingRunner(self.session, graph.input_name, graph.outputs)
            else:
                runner = IOBindingRunner(self._core(), self._input_name, self._output_name)
            self._runners[which] = runner
        return runner

    @contextlib.contextmanager
    def _host_buffers(self) -> Iterator[_HostBuffers]:
        """The host path's kept buffers for one batch: the model's own, or, while another
        thread holds those, this thread's. Shared rather than per thread, so the buffers
        a warm-up fills are the ones the chunks use: Ray Data builds an actor on one
        thread and calls it on another."""
        if not self._host_lock.acquire(blocking=False):
            local = getattr(self._host_local, "buffers", None)
            if local is None:
                local = self._host_local.buffers = _HostBuffers()
            yield local
            return
        try:
            yield self._host
        finally:
            self._host_lock.release()

    def _infer(self, x: np.ndarray, host: _HostBuffers) -> np.ndarray:
        """The bare model's output for ``x``; on a CPU session a view of a buffer in
        ``host`` that the next run overwrites (:class:`HostRunner`): read it before running
        again."""
        session = self._core()
        if granted_providers(session)[0] in GPU_PROVIDERS:
            y = self._runner("core").run(x)
        else:
            if host.runner is None:
                host.runner = HostRunner(session, self._input_name, [self._output_name])
            y = host.runner.run(x)
        self._check_batch(self._output_name, y, len(x))
        return np.asarray(y)

    def _preprocess(self, frames: np.ndarray, host: _HostBuffers) -> np.ndarray:
        """:func:`preprocess` into ``host``'s input buffer (kept from batch to batch; a
        short batch goes into its first frames)."""
        kept = host.x
        if kept is not None and len(kept) > len(frames):
            kept = kept[: len(frames)]
        x = preprocess(frames, self.spec, self.input_dtype, out=kept)
        if x.dtype == np.float32 and x is not kept:
            host.x = x
        return x

    def _infer_pixels(self, frames: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
        """The wrapped model on uint8 frames (a batch, a padded batch or a tile window): its
        uint8 frames; a NaN in the core output raises as on the host path."""
        graph = self.pixel_graph
        assert graph is not None
        outs = self._runner("pixels").run_all(frames)
        self._check_batch(self._output_name, outs[0], len(frames))
        if graph.sum_output is not None and not np.isfinite(outs[1]):
            (y,) = self.session.run([graph.core_output], {graph.input_name: frames})
            check_finite(self._output_name, y, *hw)
        return outs[0]

    def _infer_tensors(self, x: np.ndarray, pad_multiple: int | None = None) -> list[np.ndarray]:
        session = self._core()

        def run(batch: np.ndarray) -> list[np.ndarray]:
            return list(session.run(self.output_names, {self._input_name: batch}))

        multiple = pad_multiple or self.spec.pad_multiple
        return run(x) if multiple is None else run_padded_maps(run, x, multiple, self.spec.layout)

    def _frame_hw(self, frames: np.ndarray) -> tuple[int, int]:
        """(height, width) px of ``frames``: RGB ``(n, H, W, 3)``, or packed YUV."""
        return (self.yuv.height, self.yuv.width) if self.yuv is not None else frames.shape[1:3]

    def _reported(self, frames: np.ndarray) -> contextlib.AbstractContextManager[None]:
        """Errors the model raises on ``frames`` become a :class:`ModelError` with a hint."""
        hw = self._frame_hw(frames)
        if self.yuv is not None:  # frames reach the model as they are: no padding to try
            return reported(hw, model_hw=hw)
        fits = functools.partial(self._fits, frames[:1]) if self.spec.resize == "none" else None
        geometry = self.geometry
        windows = geometry.call_hw(*hw) if geometry.tile is not None else None
        return reported(hw, fits=fits, model_hw=geometry.padded_hw(*hw), windows=windows)

    def _fits(self, frame: np.ndarray, multiple: int) -> bool:
        """Whether the model runs on ``frame`` (one, ``(1, H, W, 3)``) padded to ``multiple``."""
        try:
            batch = self._batches(frame, 1)[0][0]
            if self.output_kind == "tensor":
                self._infer_tensors(preprocess(batch, self.spec, self.input_dtype), multiple)
            else:
                self._run_image_batch(
                    batch, dataclasses.replace(self.geometry, pad_multiple=multiple)
                )
        except Exception:  # noqa: BLE001 - any failure means: padding to this does not help
            return False
        return True

    def _check_batch(self, name: str, y: np.ndarray, frames: int) -> None:
        if np.ndim(y) == 0 or y.shape[0] != frames:
            got = "a scalar" if np.ndim(y) == 0 else f"shape {y.shape}"
            raise ModelLoadError(
                f"model output {name!r} has {got} for {frames} input frames; raypipe "
                "expects one result per frame along the first dimension: export the model "
                "with a batch axis on every output (an Unsqueeze at axis 0 where it was "
                "squeezed out); results whose count varies from frame to frame (detections "
                'after NMS) need a processor (--processor: README, "Processors")'
            )

    def _run_image_batch(
        self,
        batch: np.ndarray,
        geometry: FrameGeometry | None = None,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """The frames of one batch; written into ``out`` (returned) where the frames go
        there as they are (no resize to undo)."""
        if self.yuv is not None:  # the frames reach the model as they are: yuv_problem
            return self._infer_pixels(batch, (self.yuv.height, self.yuv.width))
        geometry = geometry or self.geometry
        fitted, params = geometry.fit(batch)
        if self.pixel_graph is not None and batch.dtype == np.uint8:
            run = functools.partial(self._infer_pixels, hw=batch.shape[1:3])
            frames = geometry.run(run, fitted, "NHWC")
        else:
            with self._host_buffers() as host:
                x = self._preprocess(fitted, host)
                y = geometry.run(functools.partial(self._infer, host=host), x, self.spec.layout)
                check_finite(self._output_name, y, batch.shape[1], batch.shape[2])
                frames = postprocess(y, self.spec, batch.dtype, out=out if params is None else None)
                if np.may_share_memory(frames, y):  # a view of the model's output buffer
                    frames = np.array(frames)
        return frames if params is None else unfit_frames(frames, params)


def load_frame_model(
    model: str,
    *,
    device: Device | str = "auto",
    intra_op_threads: int | None = None,
    spec: ModelSpec | None = None,
    pixels: str = "auto",
) -> FrameModel:
    """:class:`FrameModel` for ``builtin:NAME`` or a path/fsspec URL of an .onnx file.

    ``spec=None`` takes the built-in's spec or the model's sidecar
    (:func:`raypipe.infer.sidecar.resolve_model_and_spec`), else the defaults.
    """
    model_bytes, _, found = resolve_model_and_spec(model)
    return FrameModel(
        model_bytes,
        spec=spec or found,
        device=device,
        intra_op_threads=intra_op_threads,
        pixels=pixels,
    )
