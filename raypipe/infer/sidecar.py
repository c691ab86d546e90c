"""What a model is and what it expects: model references, :class:`ModelSpec`, sidecar files.

A model is ``builtin:NAME`` or a local path / fsspec URL of an ``.onnx`` file
(:func:`resolve_model`). A :class:`ModelSpec` says how frames go in and what comes out; it
is given in code, or declared by a *sidecar* next to the model so that archive jobs carry
it with the model: ``NAME.raypipe.json`` (or ``NAME.raypipe.yaml`` / ``.yml`` with PyYAML)
beside ``NAME.onnx``, an object whose keys are :class:`ModelSpec` fields, e.g.::

    {"layout": "NHWC", "color": "BGR", "mean": [0.485, 0.456, 0.406],
     "std": [0.229, 0.224, 0.225], "output": "tensor", "resize": "letterbox",
     "input_size": [640, 640], "pad_value": 114}

or, for a model whose height and width must be multiples of 32 (a U-Net, a DBNet text
detector), ``{"pad_multiple": 32}``. Temporal models declare what they need around each
frame (:mod:`raypipe.infer.temporal`): ``{"window": [2, 2], "window_layout": "channels"}``,
``{"state": {"r1i": "r1o"}, "warmup_frames": 16}`` or ``{"interpolate": 2}``.

Unknown keys and bad values raise :class:`~raypipe.errors.ConfigError` naming the sidecar.
:func:`resolve_model_and_spec` gives a model's bytes with its spec: a built-in's own spec
(``phash`` and ``embedding`` give tensors), else the sidecar's, else the defaults.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import fsspec
import numpy as np

from raypipe.errors import ConfigError, ModelLoadError, ModelNotFoundError
from raypipe.infer.analysis import ANALYSIS_MODELS, analysis_bytes
from raypipe.infer.builtin import BUILTIN_MODELS, builtin_bytes
from raypipe.infer.temporal import (
    WINDOW_LAYOUTS,
    Temporal,
    check_interpolate,
    check_state,
    check_warmup,
    check_window,
)
from raypipe.infer.temporal_builtin import TEMPORAL_SPECS
from raypipe.infer.tiling import RESIZE_MODES, ResizeMode

BUILTIN_PREFIX = "builtin:"
OUTPUT_KINDS: tuple[str, ...] = ("auto", "image", "tensor")
SIDECAR_SUFFIXES: tuple[str, ...] = (".raypipe.json", ".raypipe.yaml", ".raypipe.yml")


def _finite_numbers(name: str, value: Sequence[float], length: int) -> tuple[float, ...]:
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        numbers = ()
    if len(numbers) != length or not all(math.isfinite(v) for v in numbers):
        raise ConfigError(f"{name} must be {length} finite numbers, got {value!r}")
    return numbers


def _check_constants(value: Any) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """``value`` (a mapping or pairs ``{input name: number or numbers}``) as sorted pairs
    of a name and its finite numbers."""
    pairs = list(value.items()) if isinstance(value, Mapping) else list(value or ())
    checked = []
    for pair in pairs:
        try:
            name, numbers = pair
        except (TypeError, ValueError):
            name, numbers = None, None
        if _is_number(numbers):
            numbers = (numbers,)
        if (
            not isinstance(name, str)
            or not name
            or isinstance(numbers, (str, bytes))
            or not hasattr(numbers, "__len__")
            or not numbers
            or not all(_is_number(v) and math.isfinite(v) for v in numbers)
        ):
            raise ConfigError(
                "constants must map each extra model input to its value, a number or a list "
                f'of numbers, {{"downsample_ratio": 0.25}}, got {value!r}'
            )
        checked.append((name, tuple(float(v) for v in numbers)))
    return tuple(sorted(checked))


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """What an image model expects and returns; the defaults fit the built-in models.

    ``scale``: model input = pixel * scale before ``mean``/``std``. ``output_range``: the
    output values that map to pixel 0 and pixel 255 (linear in between, clipped outside).
    ``input_name``/``output_name`` ``None`` take the model's first input/output (a tensor
    model returns every output unless ``output_name`` names one).

    ``output``: ``"image"`` (frames out), ``"tensor"`` (arrays per frame) or ``"auto"``
    (:func:`detect_output_kind`). ``resize``: ``"none"`` (frames go in at their own size),
    ``"stretch"`` or ``"letterbox"`` to the model's fixed input size, read from the model or
    given as ``input_size`` = (height, width) px; ``pad_value`` is the letterbox padding
    level (0..255, every channel, before ``mean``/``std``; 0 is black). ``tile``: run the
    model on ``tile`` x ``tile`` px cores with ``tile_overlap`` px of context on each side
    (at least the model's receptive-field radius for an exact result); ``None`` runs whole
    frames. ``pad_multiple``: pad frames (edge-replicated, at the bottom and right) to the next
    multiple of this many px in height and width before the model and crop the output back
    (:mod:`raypipe.infer.padding`); with ``tile`` each tile window is padded.

    Temporal models (:mod:`raypipe.infer.temporal`): ``window`` = (before, after) frames
    each output frame is computed from, given to the model on a time axis
    (``window_layout="time"``: ``N, T, C, H, W``, or ``N, T, H, W, C`` for NHWC) or stacked on
    the channel axis (``"channels"``: ``3 T`` channels, oldest frame first). ``state``:
    ``(input, output)`` name pairs of a recurrent model (a mapping in a sidecar), each output
    fed back as that input on the next frame, zeros at the start; ``warmup_frames``: frames
    run before each chunk to warm the state up. ``interpolate=2``: the model takes two frames
    (window ``(0, 1)``) and returns the one halfway between (twice the frames come out).

    ``constants``: inputs other than the frames (and a recurrent model's state) given one
    value for every call, ``{name: number or list of numbers}`` in a sidecar (such as
    RobustVideoMatting's ``{"downsample_ratio": 0.25}``): they are made part of the graph
    (:func:`with_constants`), so every session, engine and wrapped graph sees a model of one
    frame input.
    """

    layout: Literal["NCHW", "NHWC"] = "NCHW"
    color: Literal["RGB", "BGR"] = "RGB"
    scale: float = 1 / 255
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    output_range: tuple[float, float] = (0.0, 1.0)
    input_name: str | None = None
    output_name: str | None = None
    output: Literal["auto", "image", "tensor"] = "auto"
    resize: ResizeMode = "none"
    input_size: tuple[int, int] | None = None  # (height, width) px frames are resized to
    pad_value: int = 0  # letterbox padding, pixel level 0..255
    tile: int | None = None  # tile core side, px
    tile_overlap: int = 16  # px of context on each side of a tile core
    pad_multiple: int | None = None  # pad height and width to multiples of this (px)
    window: tuple[int, int] | None = None  # frames (before, after) each output frame sees
    window_layout: Literal["time", "channels"] = "time"  # how a window goes in
    state: tuple[tuple[str, str], ...] = ()  # recurrent: (state input, output feeding it)
    warmup_frames: int = 0  # recurrent: frames run before each chunk, outputs dropped
    interpolate: int = 1  # 2: one new frame between every two (window (0, 1))
    constants: tuple[tuple[str, tuple[float, ...]], ...] = ()  # inputs given fixed values

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
        self._check_geometry()
        self._check_temporal()
        object.__setattr__(self, "constants", _check_constants(self.constants))

    def _check_temporal(self) -> None:
        object.__setattr__(self, "window", check_window(self.window))
        if self.window_layout not in WINDOW_LAYOUTS:
            raise ConfigError(
                f"window_layout must be 'time' or 'channels', got {self.window_layout!r}"
            )
        object.__setattr__(self, "state", check_state(self.state))
        object.__setattr__(self, "warmup_frames", check_warmup(self.warmup_frames))
        object.__setattr__(self, "interpolate", check_interpolate(self.interpolate))
        temporal = self.temporal  # checks how the temporal fields combine
        if not temporal.active:
            return
        for name, value, default in (
            ("tile", self.tile, None),
            ("resize", self.resize, "none"),
            ("pad_multiple", self.pad_multiple, None),
        ):
            if value != default:
                raise ConfigError(
                    f"{name}={value!r} is not supported with a temporal model "
                    f"({temporal.describe()}); run whole frames at their own size"
                )
        if self.output == "tensor":
            raise ConfigError(
                f"a temporal model ({temporal.describe()}) must output frames, got output='tensor'"
            )

    @property
    def temporal(self) -> Temporal:
        """What the model needs around each frame (:mod:`raypipe.infer.temporal`)."""
        return Temporal.of(
            window=self.window,
            warmup_frames=self.warmup_frames,
            recurrent=bool(self.state),
            interpolate=self.interpolate,
        )

    def _check_geometry(self) -> None:
        if self.output not in OUTPUT_KINDS:
            raise ConfigError(f"output must be 'auto', 'image' or 'tensor', got {self.output!r}")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(
                f"resize must be 'none', 'stretch' or 'letterbox', got {self.resize!r}"
            )
        if self.input_size is not None:
            size = self.input_size
            if (
                isinstance(size, (str, bytes))
                or not hasattr(size, "__len__")
                or len(size) != 2
                or not all(_is_int(v) and v >= 1 for v in size)
            ):
                raise ConfigError(
                    f"input_size must be (height, width), two integers >= 1, or None, got {size!r}"
                )
            # with resize 'none' it is refused where the model loads (tiling.Geometry): a
            # sidecar's input_size comes with the command line's --resize, merged later
            object.__setattr__(self, "input_size", (int(size[0]), int(size[1])))
        if not _is_int(self.pad_value) or not 0 <= self.pad_value <= 255:
            raise ConfigError(
                f"pad_value must be an integer pixel level 0..255, got {self.pad_value!r}"
            )
        if self.tile is not None and (not _is_int(self.tile) or self.tile < 1):
            raise ConfigError(
                f"tile must be an integer >= 1 (tile side in px) or None, got {self.tile!r}"
            )
        if not _is_int(self.tile_overlap) or self.tile_overlap < 0:
            raise ConfigError(
                "tile_overlap must be an integer >= 0 (px of context on each side of a tile), "
                f"got {self.tile_overlap!r}"
            )
        if self.pad_multiple is not None and (
            not _is_int(self.pad_multiple) or self.pad_multiple < 1
        ):
            raise ConfigError(
                "pad_multiple must be an integer >= 1 (px; frames are padded to multiples of "
                f"it) or None, got {self.pad_multiple!r}"
            )
        if self.pad_multiple is not None:
            object.__setattr__(self, "pad_multiple", int(self.pad_multiple))
        if self.pad_multiple is not None and self.resize != "none":
            raise ConfigError(
                f"pad_multiple={self.pad_multiple} and resize={self.resize!r} do not combine: "
                "resize gives the model its own fixed size already; pick one"
            )
        if self.tile is not None and self.resize != "none":
            raise ConfigError(
                f"tile={self.tile} and resize={self.resize!r} do not combine: tiles cover a "
                "large frame at its own size, resize fits a whole frame to the model; pick one"
            )
        if self.tile is not None and self.output == "tensor":
            raise ConfigError(
                f"tile={self.tile} needs an image output, got output='tensor'; tiles are "
                "stitched back into frames"
            )

    @property
    def channel_axis(self) -> int:
        """The channel axis of a 4-D tensor in this layout."""
        return 1 if self.layout == "NCHW" else 3


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


DEFAULT_SPEC = ModelSpec()


def resolve_model(model: str) -> tuple[bytes, str]:
    """The model's bytes and the sha256 hex digest of them (a key naming its content).

    ``builtin:NAME`` gives the built-in's bytes; anything else is a local path or fsspec
    URL, read whole. Keying built-ins by content too means a changed graph never reuses a
    stale engine cache entry.
    """
    if model.startswith(BUILTIN_PREFIX):
        name = model[len(BUILTIN_PREFIX) :]
        data = analysis_bytes(name) if name in ANALYSIS_MODELS else builtin_bytes(name)
        return data, hashlib.sha256(data).hexdigest()
    model = _model_path(model)
    try:
        with fsspec.open(model, "rb") as f:
            data = f.read()
    except FileNotFoundError as e:
        if model in BUILTIN_MODELS:  # `--model sharpen`
            raise ModelNotFoundError(
                f"model file {model!r} does not exist; did you mean the built-in "
                f"{BUILTIN_PREFIX}{model}?"
            ) from e
        raise ModelNotFoundError(
            f"model file {model!r} does not exist; pass builtin:NAME (one of "
            f"{', '.join(BUILTIN_MODELS)}) or a path/URL to an .onnx file"
        ) from e
    except (OSError, ValueError, ImportError) as e:
        raise ModelLoadError(f"cannot read model file {model!r}: {e}") from e
    data = with_external_data(data, model)
    return data, hashlib.sha256(data).hexdigest()


def _model_path(model: str) -> str:
    """``model`` as fsspec opens it: a ``file://`` URL percent-decoded, as inputs and
    outputs are (:func:`~raypipe.media.source.local_path`), anything else as it is."""
    if not model.startswith("file://"):
        return model
    from raypipe.media.source import local_path

    return local_path(model)


_ONE_PROTOBUF = 2**31 - 1  # the most bytes one serialized ONNX model (a protobuf) can hold


def with_external_data(data: bytes, model: str) -> bytes:
    """``data`` with the weights it keeps in files beside the model (ONNX's *external data*:
    ``onnx.save(..., save_as_external_data=True)``, the form of models over 2 GB and of some
    exporters) read into the graph, so that the model travels as one byte string to every
    actor; ``data`` itself when it has none. ``model``: where ``data`` was read (a path or
    fsspec URL); the weights' files are read beside it. Raises ``ModelLoadError`` for a
    missing file, a location outside the model's folder, or weights that do not fit one
    serialized model (2 GB)."""
    if b"location" not in data:  # every external tensor names its file under this key
        return data
    import onnx
    from onnx.external_data_helper import _get_all_tensors

    try:
        proto = onnx.load_model_from_string(data)
    except Exception:  # noqa: BLE001 - not ONNX: ONNX Runtime's load says so, as before
        return data
    external = [t for t in _get_all_tensors(proto) if t.data_location == onnx.TensorProto.EXTERNAL]
    if not external:
        return data
    folder = posixpath.dirname(model)
    files: dict[str, Any] = {}
    try:
        for tensor in external:
            where = {e.key: e.value for e in tensor.external_data}
            location = where.get("location", "")
            parts = location.replace("\\", "/").split("/")
            if not location or location.startswith("/") or ".." in parts:
                raise ModelLoadError(
                    f"model {model!r}: weights of {tensor.name!r} are at {location!r}, not a "
                    "file in the model's folder"
                )
            if location not in files:
                path = posixpath.join(folder, location) if folder else location
                try:
                    files[location] = fsspec.open(path, "rb").open()
                except FileNotFoundError as e:
                    raise ModelLoadError(
                        f"model {model!r} keeps its weights in {location!r} beside it (ONNX "
                        f"external data), and {path!r} does not exist; copy it next to the "
                        "model"
                    ) from e
            f = files[location]
            f.seek(int(where.get("offset", 0)))
            length = where.get("length")
            tensor.raw_data = f.read(int(length)) if length is not None else f.read()
            if length is not None and len(tensor.raw_data) != int(length):
                raise ModelLoadError(  # ONNX Runtime's "raw_data size (0 bytes) ..." (a sweep)
                    f"model {model!r}: its file {location!r} ends before the weights of "
                    f"{tensor.name!r} ({len(tensor.raw_data)} of {length} bytes at offset "
                    f"{where.get('offset', 0)}): cut off in a copy or download? fetch it again"
                )
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT
    finally:
        for f in files.values():
            f.close()
    if proto.ByteSize() > _ONE_PROTOBUF:
        raise ModelLoadError(
            f"model {model!r} with its external weights is {proto.ByteSize() / 2**30:.1f} GiB, "
            "over the 2 GiB one ONNX model in memory can hold; raypipe sends a model to its "
            "actors whole. Use a smaller model or an FP16 export"
        )
    return proto.SerializeToString()


def constants_hint(names: Sequence[str]) -> str:
    """How to give ``names`` fixed values: the sidecar's ``constants`` key, as JSON."""
    shown = ", ".join(f'"{n}": VALUE' for n in names)
    return f'"constants": {{{shown}}} (for a FrameModel in Python, spec=ModelSpec(constants=...))'


def state_pairs(inputs: Sequence[str], outputs: Sequence[str]) -> dict[str, str]:
    """Inputs that look like a recurrent state, each with the output that feeds it back:
    the same name but for its ending (``r1i``/``r1o``, ``h_in``/``h_out``, ``state_in``/
    ``state_out``, ``hidden_input``/``hidden_output``) or with one added (``prev``/
    ``prev_out``, ``h``/``h_next``)."""
    endings = (("input", "output"), ("_in", "_out"), ("in", "out"), ("i", "o"))
    added = ("_out", "_next", "_new")  # ``prev``/``prev_out``: the output names the input
    pairs = {}
    for name in inputs:
        for a, b in endings:
            if name.endswith(a) and name[: -len(a)] + b in outputs:
                pairs[name] = name[: -len(a)] + b
                break
        else:
            fed = next((name + end for end in added if name + end in outputs), None)
            if fed is not None:
                pairs[name] = fed
    return pairs


def inputs_hint(names: Sequence[str], outputs: Sequence[str]) -> str:
    """How to feed the model inputs ``names`` that are not its frames: a recurrent state's
    as ``state`` (with ``warmup_frames``; a constant would cut the recurrence off), the
    others as ``constants``."""
    pairs = state_pairs(names, outputs)
    others = [n for n in names if n not in pairs]
    hints = []
    if pairs:
        shown = ", ".join(f'"{i}": "{o}"' for i, o in pairs.items())
        hints.append(
            f'feed the state back, "state": {{{shown}}} with "warmup_frames": K (frames of '
            "history before each chunk)"
        )
    if others:
        hints.append(f"give the others a fixed value, {constants_hint(others)}")
    return "; ".join(hints) + " in its sidecar"


def with_constants(data: bytes, constants: Sequence[tuple[str, Sequence[float]]]) -> bytes:
    """The ONNX model ``data`` with each input named in ``constants`` made a constant of
    that value (an initializer of the input's element type and shape: one number fills a
    scalar or a one-element input, a list fills the input's elements in order); ``data``
    itself when there are none. Raises ``ModelLoadError`` for a name that is not an input
    and for a value that does not fit its input."""
    if not constants:
        return data
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_model_from_string(data)
    graph = model.graph
    inputs = {i.name: i for i in graph.input}
    initializers = {t.name for t in graph.initializer}
    for name, values in constants:
        if name in initializers and name not in inputs:
            continue  # made a constant already (data went through here before)
        if name not in inputs:
            raise ModelLoadError(
                f"constants names {name!r}, which is not an input of the model; its inputs "
                f"are {[i.name for i in graph.input if i.name not in initializers]}"
            )
        tensor = inputs[name].type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tensor.elem_type)
        if any(d < 0 for d in dims):
            fixed = [d for d in dims if d >= 0]
            if len(values) != 1 and (len(dims) != 1 or fixed):
                raise ModelLoadError(
                    f"constant input {name!r} has shape {dims} with dynamic dimensions; give "
                    "it one number"
                )
            dims = [1 if d < 0 else d for d in dims] if len(values) == 1 else [len(values)]
        size = int(np.prod(dims)) if dims else 1
        if len(values) not in (1, size):
            raise ModelLoadError(
                f"constant input {name!r} has shape {dims} ({size} values), got {len(values)}"
            )
        array = np.full(size, values[0]) if len(values) == 1 else np.asarray(values)
        graph.initializer.append(
            numpy_helper.from_array(array.astype(dtype).reshape(dims), name=name)
        )
        graph.input.remove(inputs[name])
    return model.SerializeToString()


# --- sidecar files ------------------------------------------------------------------------

_TUPLE_FIELDS = ("mean", "std", "output_range", "input_size", "window")
SPEC_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ModelSpec))
"""The keys a sidecar may hold: :class:`ModelSpec`'s fields."""

BUILTIN_SPECS: dict[str, ModelSpec] = {
    "phash": ModelSpec(output="tensor"),
    "embedding": ModelSpec(output="tensor"),
    **{name: ModelSpec(**fields) for name, fields in TEMPORAL_SPECS.items()},  # type: ignore[arg-type]
}
"""Built-ins whose spec is not :data:`DEFAULT_SPEC` (the others take the defaults)."""


def spec_from_dict(data: Mapping[str, Any], *, source: str = "spec") -> ModelSpec:
    """A :class:`ModelSpec` from a mapping of its fields (lists become tuples).

    ``source`` names where the mapping came from in error messages.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{source} must hold an object of ModelSpec fields, got {type(data).__name__}"
        )
    unknown = [key for key in data if key not in SPEC_FIELDS]
    if unknown:
        raise ConfigError(
            f"{source} has unknown key {unknown[0]!r}"
            f"{f' (and {unknown[1:]})' if len(unknown) > 1 else ''}; valid keys are "
            f"{', '.join(SPEC_FIELDS)}"
        )
    values: dict[str, Any] = {
        k: tuple(v) if k in _TUPLE_FIELDS and isinstance(v, list) else v for k, v in data.items()
    }
    try:
        return ModelSpec(**values)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from e


def spec_to_dict(spec: ModelSpec) -> dict[str, Any]:
    """The fields of ``spec`` that differ from the defaults, JSON-ready (tuples as lists)."""
    out: dict[str, Any] = {}
    for name in SPEC_FIELDS:
        value = getattr(spec, name)
        if value != getattr(DEFAULT_SPEC, name):
            if name == "state":
                out[name] = dict(value)
            elif name == "constants":
                out[name] = {k: list(v) for k, v in value}
            else:
                out[name] = list(value) if isinstance(value, tuple) else value
    return out


def sidecar_paths(model_url: str) -> list[str]:
    """Where the sidecar of ``model_url`` may be, in the order looked at.

    ``{stem}.raypipe.json``, ``.yaml``, ``.yml``, where ``stem`` is the model's path without
    its last suffix (``s3://b/m/net.onnx`` -> ``s3://b/m/net.raypipe.json``...).
    """
    stem, _ = posixpath.splitext(model_url)
    return [stem + suffix for suffix in SIDECAR_SUFFIXES]


def find_sidecar(model_url: str) -> str | None:
    """The sidecar beside ``model_url`` (as the user wrote the model: a URL or a path), or
    None; built-ins have none. More than one sidecar for a model is an error."""
    if model_url.startswith(BUILTIN_PREFIX):
        return None
    model_url = _model_path(model_url)  # a file:// URL's %20 (model show found none)
    try:
        fs, model_path = fsspec.core.url_to_fs(model_url)
        found = [p for p in sidecar_paths(model_path) if fs.isfile(p)]
    except (OSError, ValueError, ImportError) as e:
        raise ModelLoadError(f"cannot look for a sidecar of {model_url!r}: {e}") from e
    names = [_display(fs, model_url, p) for p in found]
    if len(found) > 1:
        raise ConfigError(
            f"model {model_url!r} has {len(found)} sidecars {names}; keep one of them"
        )
    return names[0] if names else None


def load_sidecar(model_url: str) -> ModelSpec | None:
    """The :class:`ModelSpec` declared beside ``model_url`` (a path or fsspec URL), or None.

    Built-ins (``builtin:NAME``) have no sidecar. More than one sidecar for a model is an
    error, as are unknown keys (the message lists the valid ones) and bad values.
    """
    name = find_sidecar(model_url)
    if name is None:
        return None
    try:
        with fsspec.open(name, "rb") as f:
            text = f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ModelLoadError(f"cannot read sidecar {name!r}: {e}") from e
    return spec_from_dict(_parse(text, name), source=f"sidecar {name!r}")


def write_sidecar(model_url: str, spec: ModelSpec) -> str:
    """Write ``spec`` as ``{stem}.raypipe.json`` beside ``model_url``; returns its path/URL.

    Only fields that differ from the defaults are written.
    """
    path = sidecar_paths(model_url)[0]
    with fsspec.open(path, "w", encoding="utf-8") as f:
        json.dump(spec_to_dict(spec), f, indent=2)
        f.write("\n")
    return path


def builtin_spec(name: str) -> ModelSpec:
    """The spec of built-in ``name``: :data:`BUILTIN_SPECS`, else :data:`DEFAULT_SPEC`."""
    if name not in BUILTIN_MODELS and name not in ANALYSIS_MODELS:
        builtin_bytes(name)  # raises ModelNotFoundError listing the built-ins
    return BUILTIN_SPECS.get(name, DEFAULT_SPEC)


def resolve_model_and_spec(model: str) -> tuple[bytes, str, ModelSpec]:
    """The model's bytes, their sha256 hex digest and its :class:`ModelSpec`.

    A built-in gets :func:`builtin_spec`; a file its sidecar (:func:`load_sidecar`), or
    :data:`DEFAULT_SPEC` without one.
    """
    data, digest = resolve_model(model)
    if model.startswith(BUILTIN_PREFIX):
        return data, digest, builtin_spec(model[len(BUILTIN_PREFIX) :])
    return data, digest, load_sidecar(_model_path(model)) or DEFAULT_SPEC


def _display(fs: fsspec.AbstractFileSystem, model_url: str, path: str) -> str:
    """``path`` as the user wrote the model: a URL for URLs, a plain path for paths."""
    return fs.unstrip_protocol(path) if "://" in model_url else path


def _parse(text: str, name: str) -> Any:
    if name.endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"sidecar {name!r} is not valid JSON: {e}") from e
    try:
        import yaml  # type: ignore[import-untyped, unused-ignore]
    except ImportError as e:
        raise ConfigError(
            f"sidecar {name!r} is YAML but PyYAML is not installed; pip install pyyaml, or "
            "write the same keys as JSON to NAME.raypipe.json"
        ) from e
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"sidecar {name!r} is not valid YAML: {e}") from e
