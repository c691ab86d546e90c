"""A super-resolution-sized network with fixed weights, heavy enough for GPU numbers to mean
something, and a minimal float16 converter for it.

:func:`build_superres` is shaped like the EDSR/ESPCN family: a 3x3 convolution from RGB to
``channels`` feature maps, ``blocks`` residual blocks (conv3x3, ReLU, conv3x3, add), a 3x3
convolution to ``3 * scale**2`` channels and ``DepthToSpace`` (sub-pixel shuffle). The
shuffled tensor is added to a nearest-neighbour upscale of the input (the input repeated
``scale**2`` times along the channel axis before the shuffle), then clipped to ``[0, 1]``:
the output looks like the input, upscaled, plus a small learned-looking residual. Weights
are drawn from ``numpy.random.default_rng(seed)`` with a small standard deviation, so the
model is the same bytes on every machine and its output is a sane image.

Cost, per output frame at 1080p input with the defaults (64 channels, 8 blocks, x2): about
2.5 TFLOP (16 of the 64->64 convolutions at 1920x1080), tens of seconds on a laptop CPU and
milliseconds on a data-centre GPU.

Input ``input`` and output ``output`` are NCHW float32 RGB in ``[0, 1]`` with dynamic batch,
height and width (the output is ``scale`` times larger); ONNX IR version 9 and opset 17, as
for every built-in (see :mod:`raypipe.infer.builtin`).

:func:`to_float16` converts such a graph to float16 weights and compute with float32 inputs
and outputs (``Cast`` nodes at the edges). It is not a general converter: it refuses graphs
with operators whose float inputs must stay float32 (``Resize`` scales, say); use
TensorRT's FP16 mode (``trt_fp16_enable``) for arbitrary models instead.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from raypipe.errors import ConfigError, ModelLoadError

IR_VERSION = 9
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"

# Operators whose float inputs and outputs all share one element type T, so casting every
# float tensor of the graph to float16 keeps the graph valid.
_FLOAT16_SAFE_OPS = frozenset(
    {
        "Add",
        "Clip",
        "Concat",
        "Conv",
        "DepthToSpace",
        "Identity",
        "LeakyRelu",
        "Mul",
        "Relu",
        "Sigmoid",
        "SpaceToDepth",
        "Sub",
    }
)


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _conv(
    rng: np.random.Generator,
    name: str,
    x: str,
    out: str,
    c_in: int,
    c_out: int,
    std_scale: float,
) -> tuple[onnx.NodeProto, list[onnx.TensorProto]]:
    """A 3x3 convolution with 'same' padding; weights ~ N(0, (std_scale * He std)^2)."""
    std = std_scale * np.sqrt(2.0 / (9 * c_in))
    weight = rng.normal(0.0, std, size=(c_out, c_in, 3, 3)).astype(np.float32)
    bias = np.zeros(c_out, dtype=np.float32)
    node = helper.make_node(
        "Conv",
        [x, f"{name}.weight", f"{name}.bias"],
        [out],
        name=name,
        kernel_shape=[3, 3],
        pads=[1, 1, 1, 1],
    )
    inits = [
        numpy_helper.from_array(weight, name=f"{name}.weight"),
        numpy_helper.from_array(bias, name=f"{name}.bias"),
    ]
    return node, inits


def build_superres(
    scale: int = 2, channels: int = 64, blocks: int = 8, seed: int = 0
) -> onnx.ModelProto:
    """The super-resolution network described in the module docstring, checked by ``onnx``.

    ``scale``: upscale factor in height and width (2 gives 2x2 more pixels); ``channels``:
    feature maps per layer; ``blocks``: residual blocks; ``seed``: weight RNG seed. The same
    arguments always give the same serialized bytes.
    """
    _positive_int("scale", scale)
    _positive_int("channels", channels)
    _positive_int("blocks", blocks, minimum=0)
    _positive_int("seed", seed, minimum=0)
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def add(node: onnx.NodeProto, new: list[onnx.TensorProto] | None = None) -> None:
        nodes.append(node)
        inits.extend(new or [])

    add(*_conv(rng, "head", INPUT_NAME, "feat0", 3, channels, 1.0))
    x = "feat0"
    for i in range(blocks):
        # Residual branches start small (x0.1) so the sum stays near the input features.
        add(*_conv(rng, f"block{i}.conv1", x, f"block{i}.a", channels, channels, 1.0))
        add(helper.make_node("Relu", [f"block{i}.a"], [f"block{i}.r"], name=f"block{i}.relu"))
        add(*_conv(rng, f"block{i}.conv2", f"block{i}.r", f"block{i}.b", channels, channels, 0.1))
        add(helper.make_node("Add", [x, f"block{i}.b"], [f"block{i}.out"], name=f"block{i}.add"))
        x = f"block{i}.out"
    shuffle_channels = 3 * scale * scale
    add(*_conv(rng, "tail", x, "residual", channels, shuffle_channels, 0.05))
    # DepthToSpace mode DCR puts channel (i * scale + j) * 3 + c at sub-pixel (i, j), colour c:
    # the input repeated scale**2 times along channels shuffles to a nearest upscale.
    add(
        helper.make_node(
            "Concat", [INPUT_NAME] * (scale * scale), ["repeated"], name="skip", axis=1
        )
    )
    add(helper.make_node("Add", ["repeated", "residual"], ["pre_shuffle"], name="skip_add"))
    add(
        helper.make_node(
            "DepthToSpace",
            ["pre_shuffle"],
            ["shuffled"],
            name="shuffle",
            blocksize=scale,
            mode="DCR",
        )
    )
    add(
        helper.make_node("Clip", ["shuffled", "lo", "hi"], [OUTPUT_NAME], name="clip"),
        [
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), name="lo"),
            numpy_helper.from_array(np.array(1.0, dtype=np.float32), name="hi"),
        ],
    )
    graph = helper.make_graph(
        nodes,
        "raypipe_superres",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, "h", "w"])],
        [
            helper.make_tensor_value_info(
                OUTPUT_NAME, TensorProto.FLOAT, ["batch", 3, "out_h", "out_w"]
            )
        ],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="raypipe",
        doc_string=(
            f"raypipe super-resolution x{scale}, {channels} channels, {blocks} residual blocks, "
            f"seed {seed}: NCHW float32 RGB in [0, 1]"
        ),
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def to_float16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` computing in float16, with its float32 inputs and outputs kept.

    Every float32 initializer becomes float16 (values outside float16's range saturate to
    +-65504), a ``Cast`` to float16 follows each float32 graph input and a ``Cast`` back to
    float32 precedes each float32 graph output. Raises :class:`ModelLoadError` for operators
    outside a small allow-list whose inputs all share one float type (Conv, Relu, Add, Clip,
    DepthToSpace, ...): such a graph needs a real converter or TensorRT's FP16 mode.
    """
    unsafe = sorted({n.op_type for n in model.graph.node} - _FLOAT16_SAFE_OPS)
    if unsafe:
        raise ModelLoadError(
            f"to_float16 handles only {', '.join(sorted(_FLOAT16_SAFE_OPS))}; the model also "
            f"uses {unsafe}. Convert it with a full float16 converter, or keep it float32 and "
            "use TensorRT's FP16 mode (--precision fp16 on the TensorRT provider)"
        )
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    for i, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.FLOAT:
            values = numpy_helper.to_array(init)
            with np.errstate(over="ignore"):
                half = np.clip(values, -65504.0, 65504.0).astype(np.float16)
            graph.initializer[i].CopyFrom(numpy_helper.from_array(half, name=init.name))
    renames: dict[str, str] = {}
    casts_in: list[onnx.NodeProto] = []
    for value in graph.input:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            renames[value.name] = f"{value.name}.fp16"
            casts_in.append(
                helper.make_node(
                    "Cast",
                    [value.name],
                    [renames[value.name]],
                    name=f"{value.name}.to_fp16",
                    to=TensorProto.FLOAT16,
                )
            )
    casts_out: list[onnx.NodeProto] = []
    for value in graph.output:
        if value.type.tensor_type.elem_type == TensorProto.FLOAT:
            inner = f"{value.name}.fp16"
            casts_out.append(
                helper.make_node(
                    "Cast",
                    [inner],
                    [value.name],
                    name=f"{value.name}.to_fp32",
                    to=TensorProto.FLOAT,
                )
            )
            renames[value.name] = inner  # internal consumers read the float16 value too
            for node in graph.node:
                for j, name in enumerate(node.output):
                    if name == value.name:
                        node.output[j] = inner
    for node in graph.node:
        for j, name in enumerate(node.input):
            if name in renames:
                node.input[j] = renames[name]
    body = list(graph.node)
    del graph.node[:]
    graph.node.extend([*casts_in, *body, *casts_out])
    del graph.value_info[:]  # stale float32 annotations; shapes are inferred again
    out.doc_string = (model.doc_string + " (float16 compute, float32 I/O)").strip()
    try:
        onnx.checker.check_model(out, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ModelLoadError(
            f"to_float16 made an invalid graph ({e}); convert this model "
            "with a full float16 converter or use TensorRT's FP16 mode"
        ) from e
    return out
