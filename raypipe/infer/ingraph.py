"""Pre/post-processing inside the ONNX graph: uint8 frames in, uint8 frames out.

:func:`wrap_pixels` puts an image model (the *core*) between two small subgraphs so that
one ONNX graph takes the decoder's frames as they are, uint8 ``(n, H, W, 3)`` RGB, and
returns uint8 ``(n, H', W', 3)`` RGB frames. In the graph, in this order, exactly the
operations of the host path (:func:`raypipe.infer.pixels.preprocess` and
:func:`~raypipe.infer.pixels.postprocess`), so the two give the same bits:

- in: ``Transpose`` to NCHW (for an NCHW model), ``Gather`` of the channels in B, G, R order
  (a BGR model), ``Cast`` to float32, ``Mul`` by ``scale``, ``Sub`` ``mean``, ``Div`` by
  ``std`` (each only when it changes something), ``Cast`` to float16 for an fp16 model; a
  uint8 model input gets the raw pixels (transposed, reordered);
- out: ``Cast`` to float32 (fp16 outputs), ``Sub`` the low end of ``output_range``, ``Mul``
  by ``255 / (hi - lo)``, ``Round`` (half to even, as ``np.rint``), ``Clip`` to 0..255,
  ``Cast`` to uint8, channels back to R, G, B, ``Transpose`` to NHWC, one channel
  ``Expand``-ed to three; a uint8 output is taken as pixels.

On a GPU this conversion runs on the device and only uint8 crosses the bus (4x fewer bytes
than float32, both ways); an actor's CPU then only moves frames. Resize, letterbox,
tiling and padding stay outside the graph, on uint8 frames: they commute with per-pixel
pre/post-processing (see :mod:`raypipe.infer.tiling`, :mod:`raypipe.infer.padding`).

NaN: a float output also gives ``raypipe.sum`` (its float32 sum, one pass): when it is
finite no value is NaN; when it is not (NaN, or infinities) the caller asks the graph for the
core output itself (kept as a graph output) and checks it exactly
(:func:`raypipe.infer.model_errors.check_finite`).

A model is not wrapped (:attr:`PixelGraph.why_not` says why; the host path runs) when its
output's rank or channel count is not declared (its channel check happens when it runs),
its element types are not float32/float16/uint8, or its default-domain opset is below 11
(``Round`` and ``Clip`` with inputs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from raypipe.infer.sidecar import ModelSpec

if TYPE_CHECKING:
    from raypipe.media.yuv import RgbTables

PREFIX = "raypipe."
FRAMES = PREFIX + "frames"  # graph input: uint8 (n, H, W, 3) RGB
PIXELS = PREFIX + "pixels"  # graph output: uint8 (n, H', W', 3) RGB
SUM = PREFIX + "sum"  # graph output: float32 sum of a float core output (NaN check)
YUV = PREFIX + "yuv"  # graph input with the YUV hand-off: uint8 (n, H * W * 3 / 2) I420
MIN_OPSET = 11
_FLOATS = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16"}
_TYPES = {**_FLOATS, TensorProto.UINT8: "uint8"}


@dataclass(frozen=True, kw_only=True)
class PixelGraph:
    """A core model wrapped for uint8 frames, or why it is not.

    ``data``: the wrapped model (``b""`` when not wrapped); ``core_output``: the core
    output's name, also a graph output of the wrapped model; ``sum_output``: :data:`SUM`
    for a float core output, ``None`` for uint8; ``why_not``: ``""`` when wrapped.
    """

    data: bytes = b""
    core_output: str = ""
    sum_output: str | None = None
    why_not: str = ""
    input: str = FRAMES

    @property
    def wrapped(self) -> bool:
        return not self.why_not

    @property
    def input_name(self) -> str:
        """:data:`FRAMES`, or :data:`YUV` for a graph :func:`with_yuv_input` made."""
        return self.input

    @property
    def outputs(self) -> list[str]:
        """What a run asks for: the pixels, and the sum that tells NaN apart."""
        return [PIXELS] if self.sum_output is None else [PIXELS, self.sum_output]


def _dims(value: onnx.ValueInfoProto) -> list[int | str | None] | None:
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim
    ]


def _all_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor and node name in ``graph`` and its subgraphs."""
    names = {v.name for v in [*graph.input, *graph.output, *graph.value_info]}
    names |= {t.name for t in graph.initializer}
    for node in graph.node:
        names |= {node.name, *node.input, *node.output}
        for attr in node.attribute:
            for sub in [attr.g, *attr.graphs] if attr.HasField("g") else attr.graphs:
                names |= _all_names(sub)
    return names


class _Builder:
    """Nodes and constants of the wrapper, each named under :data:`PREFIX`."""

    def __init__(self, prefix: str = PREFIX) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.consts: list[onnx.TensorProto] = []
        self._count = 0
        self._prefix = prefix

    def name(self, what: str) -> str:
        self._count += 1
        return f"{self._prefix}{what}.{self._count}"

    def const(self, what: str, value: np.ndarray) -> str:
        name = self.name(what)
        self.consts.append(numpy_helper.from_array(value, name=name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        out = out or self.name(op_type.lower())
        self.nodes.append(
            helper.make_node(op_type, inputs, [out], name=self.name(op_type), **attrs)
        )
        return out


def _per_channel(values: tuple[float, ...], channel_axis: int) -> np.ndarray:
    shape = [1, 1, 1, 1]
    shape[channel_axis] = 3
    return np.array(values, dtype=np.float32).reshape(shape)


def _preprocess(b: _Builder, spec: ModelSpec, model_type: int, out: str) -> None:
    x = FRAMES
    if spec.layout == "NCHW":
        x = b.op("Transpose", [x], perm=[0, 3, 1, 2])
    if spec.color == "BGR":
        x = b.op(
            "Gather", [x, b.const("bgr", np.array([2, 1, 0], np.int64))], axis=spec.channel_axis
        )
    if model_type == TensorProto.UINT8:
        b.op("Identity", [x], out)
        return
    x = b.op("Cast", [x], to=TensorProto.FLOAT)
    x = b.op("Mul", [x, b.const("scale", np.array(spec.scale, np.float32))])
    if any(spec.mean):
        x = b.op("Sub", [x, b.const("mean", _per_channel(spec.mean, spec.channel_axis))])
    if any(s != 1.0 for s in spec.std):
        x = b.op("Div", [x, b.const("std", _per_channel(spec.std, spec.channel_axis))])
    if model_type == TensorProto.FLOAT16:
        x = b.op("Cast", [x], to=TensorProto.FLOAT16)
        # A barrier ONNX Runtime keeps: on the CPU it runs fp16 arithmetic in float32 and
        # drops a Cast to fp16 followed by its own Cast back, which would skip the rounding
        # to fp16 that the host path's fp16 input has. Gather has fp16 kernels everywhere.
        keep = b.const("channels", np.array([0, 1, 2], np.int64))
        x = b.op("Gather", [x, keep], axis=spec.channel_axis)
    b.op("Identity", [x], out)


def _postprocess(b: _Builder, spec: ModelSpec, y: str, out_type: int, channels: int) -> str | None:
    """Nodes from the core output ``y`` to :data:`PIXELS`; the sum's name for float outputs."""
    total = None
    if out_type == TensorProto.UINT8:
        x = y
    else:
        if out_type == TensorProto.FLOAT16:
            y = b.op("Cast", [y], to=TensorProto.FLOAT)
        total = b.op("ReduceSum", [y], SUM, keepdims=0)
        lo, hi = spec.output_range
        x = y
        if lo != 0.0:
            x = b.op("Sub", [x, b.const("lo", np.array(lo, np.float32))])
        x = b.op("Mul", [x, b.const("gain", np.array(255.0 / (hi - lo), np.float32))])
        x = b.op("Round", [x])
        zero, top = (
            b.const("zero", np.array(0.0, np.float32)),
            b.const("top", np.array(255.0, np.float32)),
        )
        x = b.op("Clip", [x, zero, top])
        x = b.op("Cast", [x], to=TensorProto.UINT8)
    if spec.color == "BGR" and channels == 3:
        x = b.op(
            "Gather", [x, b.const("rgb", np.array([2, 1, 0], np.int64))], axis=spec.channel_axis
        )
    if spec.layout == "NCHW":
        x = b.op("Transpose", [x], perm=[0, 2, 3, 1])
    if channels == 1:
        x = b.op("Expand", [x, b.const("three", np.array([1, 1, 1, 3], np.int64))])
    b.op("Identity", [x], PIXELS)
    return total


def _core_io(
    graph: onnx.GraphProto, spec: ModelSpec
) -> tuple[onnx.ValueInfoProto | None, onnx.ValueInfoProto | None]:
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        return None, None
    name = spec.output_name or (graph.output[0].name if graph.output else None)
    output = next((o for o in graph.output if o.name == name), None)
    return inputs[0], output


def _why_not(
    model: onnx.ModelProto,
    spec: ModelSpec,
    inp: onnx.ValueInfoProto | None,
    out: onnx.ValueInfoProto | None,
) -> str:
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        return f"its opset is {opset}; the wrapper needs {MIN_OPSET} or newer (Round, Clip)"
    if inp is None or out is None:
        return "it has not one input and the output raypipe reads"
    for what, value in (("input", inp), ("output", out)):
        if value.type.tensor_type.elem_type not in _TYPES:
            return f"its {what} element type is not float32, float16 or uint8"
    dims = _dims(out)
    if dims is None or len(dims) != 4:
        return "its output rank is not declared as 4"
    if dims[spec.channel_axis] not in (1, 3):
        return "its output channel count is not declared (1 or 3)"
    in_dims = _dims(inp)
    if in_dims is not None and (len(in_dims) != 4 or in_dims[spec.channel_axis] not in (3, None)):
        return "its input is not a 3-channel rank-4 batch"
    return ""


def _frames_dims(inp: onnx.ValueInfoProto, spec: ModelSpec) -> list[int | str]:
    """The uint8 NHWC input's dims: the core's batch, height and width where they are fixed."""
    dims = _dims(inp) or [None] * 4
    hw = (dims[2], dims[3]) if spec.layout == "NCHW" else (dims[1], dims[2])
    named = ("batch", "height", "width")
    fixed = [d if isinstance(d, int) and d > 0 else n for d, n in zip((dims[0], *hw), named)]
    return [*fixed, 3]


def wrap_pixels(model: bytes | onnx.ModelProto, spec: ModelSpec) -> PixelGraph:
    """``model`` (an image model as ``spec`` describes it) wrapped for uint8 frames,
    or a :class:`PixelGraph` whose ``why_not`` says why it cannot be (see the module
    docstring). The core's nodes and names are kept as they are, so what ONNX Runtime
    says when the core fails names the core's own nodes."""
    if isinstance(model, bytes):
        model = onnx.load_model_from_string(model)
    graph = model.graph
    inp, out = _core_io(graph, spec)
    why = _why_not(model, spec, inp, out)
    if why:
        return PixelGraph(why_not=why)
    assert inp is not None and out is not None
    taken = _all_names(graph)
    clash = sorted(n for n in taken if n.startswith(PREFIX))
    if clash:
        return PixelGraph(why_not=f"its names {clash[:3]} clash with the wrapper's")
    in_type, out_type = inp.type.tensor_type.elem_type, out.type.tensor_type.elem_type
    channels = int(_dims(out)[spec.channel_axis])  # type: ignore[index, arg-type]
    b = _Builder()
    _preprocess(b, spec, in_type, inp.name)
    total = _postprocess(b, spec, out.name, out_type, channels)
    frames_info = helper.make_tensor_value_info(FRAMES, TensorProto.UINT8, _frames_dims(inp, spec))
    pixels_info = helper.make_tensor_value_info(
        PIXELS, TensorProto.UINT8, ["batch", "out_height", "out_width", 3]
    )
    outputs = [pixels_info, out]
    if total is not None:
        outputs.insert(1, helper.make_tensor_value_info(SUM, TensorProto.FLOAT, []))
    wrapped = helper.make_graph(
        [*b.nodes[: _pre_count(b, inp.name)], *graph.node, *b.nodes[_pre_count(b, inp.name) :]],
        f"raypipe_pixels({graph.name})",
        [frames_info, *(i for i in graph.input if i.name != inp.name)],
        outputs,
        initializer=[*graph.initializer, *b.consts],
        value_info=list(graph.value_info),
        sparse_initializer=list(graph.sparse_initializer),
    )
    result = helper.make_model(
        wrapped,
        opset_imports=list(model.opset_import),
        ir_version=model.ir_version,
        producer_name="raypipe",
        doc_string=f"raypipe: uint8 NHWC RGB frames around {graph.name!r}",
    )
    result.functions.extend(model.functions)
    return PixelGraph(
        data=result.SerializeToString(),
        core_output=out.name,
        sum_output=SUM if total is not None else None,
    )


def _pre_count(b: _Builder, core_input: str) -> int:
    """How many of the builder's nodes are the pre-processing (up to the core's input)."""
    for i, node in enumerate(b.nodes):
        if core_input in node.output:
            return i + 1
    raise AssertionError("pre-processing does not end in the core's input")


def with_yuv_input(graph: PixelGraph, height: int, width: int, tables: RgbTables) -> PixelGraph:
    """``graph`` (wrapped) taking packed I420 frames of ``height`` x ``width`` px as its
    input :data:`YUV` instead of RGB: in front of it, swscale's YUV -> RGB as look-ups in
    ``tables`` (:mod:`raypipe.media.yuv`), so the frames the wrapper sees are the bits the
    decode task's RGB would have been. Each chroma sample is repeated over its 2x2 luma
    block (point chroma, as the RGB path converts), the table offsets at chroma
    resolution, before the repeat."""
    if not graph.wrapped or graph.input != FRAMES:
        raise ValueError("with_yuv_input takes a graph wrap_pixels wrapped")
    if height % 2 or width % 2 or height < 2 or width < 2:
        raise ValueError(f"the YUV hand-off takes even sizes, got {width}x{height}")
    model = onnx.load_model_from_string(graph.data)
    b = _Builder(PREFIX + "yuv.")
    size, quarter = height * width, height * width // 4

    def i64(*values: int) -> str:
        return b.const("shape", np.array(values, np.int64))

    # int32 from the input on, tables included: TensorRT takes uint8 only at its inputs and
    # outputs and through Cast, so the whole conversion can be one of its subgraphs
    samples = b.op("Cast", [YUV], to=TensorProto.INT32)
    planes = [
        b.op("Slice", [samples, i64(start), i64(stop), i64(1)])
        for start, stop in ((0, size), (size, size + quarter), (size + quarter, size + 2 * quarter))
    ]
    y = b.op("Reshape", [planes[0], i64(-1, height, width, 1)])
    k256 = b.const("k256", np.array(256, np.int32))
    u256 = b.op("Mul", [planes[1], k256])
    v256 = b.op("Mul", [planes[2], k256])
    g_column = b.op(
        "Gather", [b.const("g_column", tables.g_column), b.op("Add", [u256, planes[2]])]
    )
    channels = []
    for offset, table in ((v256, tables.r), (g_column, tables.g), (u256, tables.b)):
        block = b.op("Reshape", [offset, i64(-1, height // 2, 1, width // 2, 1)])
        block = b.op("Expand", [block, i64(1, 1, 2, 1, 2)])
        offset_up = b.op("Reshape", [block, i64(-1, height, width, 1)])
        index = b.op("Add", [offset_up, y])
        channels.append(b.op("Gather", [b.const("table", table.astype(np.int32)), index]))
    b.op("Cast", [b.op("Concat", channels, axis=-1)], FRAMES, to=TensorProto.UINT8)
    inputs = [
        helper.make_tensor_value_info(YUV, TensorProto.UINT8, ["batch", size + 2 * quarter]),
        *(i for i in model.graph.input if i.name != FRAMES),
    ]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    nodes = [*b.nodes, *model.graph.node]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(b.consts)
    return dataclasses.replace(graph, data=model.SerializeToString(), input=YUV)
