"""Built-in analysis models (image in, tensor out), built in code as real ONNX graphs.

Both take what the image built-ins take: ``input``, an NCHW float32 RGB batch with values
in ``[0, 1]`` (pixel / 255), dynamic batch, height and width. They are written with ONNX IR
version 9 and opset 17 (the same pins as :mod:`raypipe.infer.builtin`).

``phash``
    The 64-bit DCT perceptual hash, with the definition of ``imagehash.phash``: PIL ``"L"``
    grayscale, resized to 32x32 with PIL's Lanczos filter, DCT-II along both axes, the
    top-left 8x8 coefficients, each bit ``coefficient > median of the 64``. Output ``hash``:
    uint8 ``(batch, 64)``, 0 or 1, row-major over the 8x8 block (the order of
    ``imagehash.ImageHash.hash.flatten()``); :func:`phash_to_hex` gives the string
    ``str(imagehash.phash(image))`` prints.

    The whole hash runs inside the graph, resize included, so it works on frames of any
    size. The resize is PIL's own arithmetic rather than an approximation of it: per axis a
    32xS matrix of Lanczos-3 weights (support scaled by the reduction factor, normalised per
    output pixel, quantised to PIL's 22-bit fixed point) is computed from the input's shape
    and applied as a MatMul, one axis after the other in Pillow 13's order (vertical first
    when the height loses more than twice as many px as the width, ``H - 32 > 2 (W - 32)``
    with ``H > 32``, else horizontal first: an ``If`` node); after each pass values are
    rounded half up and clipped to 0..255, as PIL's 8-bit image between and after its
    passes. Grayscale uses PIL's fixed-point ``(19595 R + 38470 G + 7471 B + 32768) >> 16``.
    ONNX ``Resize`` is not used: its ``antialias`` (opset 18) has linear and cubic kernels,
    not Lanczos, and would differ from PIL by a level or more on most pixels; resizing in
    pre-processing (cv2/PIL on the host) would tie the model to a fixed input size.
    Remaining differences from ``imagehash`` come from float32 sums (a thumbnail pixel off by
    one level when PIL's exact sum lies within ~1e-5 of a rounding boundary) and, with
    Pillow 12 or older (horizontal pass always first), from frames taller than that rule.
    Run it in fp32: fp16 cannot hold the intermediate integers (up to 2**24).

``embedding``
    A small frame-embedding model with fixed weights drawn from a seed: three 3x3 stride-2
    convolutions with ReLU (16, 32, 64 channels), global average pooling, a linear layer and
    L2 normalisation. Output ``embedding``: float32 ``(batch, dim)`` with unit L2 norm. Its
    weights are random, not trained: it is a real, deterministic model for pipelines and
    benchmarks, not a semantic embedding.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from raypipe.errors import ConfigError, ModelNotFoundError

IR_VERSION = 9  # as raypipe.infer.builtin: the newest onnx writes IRs ONNX Runtime refuses
OPSET = 17
INPUT_NAME = "input"
PHASH_OUTPUT = "hash"
EMBEDDING_OUTPUT = "embedding"

PHASH_BITS = 64
_HASH_SIZE = 8  # the hash is the top-left 8x8 of the DCT
_THUMB = 32  # imagehash: hash_size * highfreq_factor = 8 * 4
_PIL_L_WEIGHTS = (19595.0, 38470.0, 7471.0)  # PIL's RGB -> L, in units of 2**-16
_PIL_COEFF_BITS = 22  # PIL Resample.c PRECISION_BITS for 8-bit images
_LANCZOS_SUPPORT = 3.0


class _Graph:
    """Collects nodes and constants; every name it makes is unique."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: np.ndarray | np.generic | float, hint: str = "c") -> str:
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name=name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        output = out or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], **attrs))
        return output

    def branch(self, build: Callable[[], str]) -> onnx.GraphProto:
        """A subgraph (for ``If``) of the nodes ``build`` adds; it returns the output name.

        Its constants go to the main graph, whose values the branch reads from outer scope.
        """
        outer, self.nodes = self.nodes, []
        try:
            output = build()
            nodes = self.nodes
        finally:
            self.nodes = outer
        value = helper.make_tensor_value_info(output, TensorProto.FLOAT, None)
        return helper.make_graph(nodes, self._name("branch"), [], [value])

    def op2(self, op_type: str, *inputs: str, **attrs: Any) -> tuple[str, str]:
        """A node with two outputs (TopK: values, indices)."""
        outputs = (self._name(op_type.lower()), self._name(op_type.lower()))
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), **attrs))
        return outputs

    def model(self, name: str, outputs: list[onnx.ValueInfoProto], doc: str) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            f"raypipe_{name}",
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, _IMAGE_DIMS)],
            outputs,
            initializer=self.initializers,
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
            producer_name="raypipe",
            doc_string=doc,
        )
        onnx.checker.check_model(model, full_check=True)
        return model


_IMAGE_DIMS: list[int | str] = ["batch", 3, "height", "width"]


def _sinc(g: _Graph, x: str, pi_x: str) -> str:
    """sin(pi x) / (pi x), 1 at x == 0 (``pi_x`` is pi * x, computed by the caller)."""
    zero = g.op("Equal", x, g.const(0.0))
    one = g.const(1.0)
    safe = g.op("Where", zero, one, pi_x)
    return g.op("Where", zero, one, g.op("Div", g.op("Sin", safe), safe))


def _lanczos_weights(g: _Graph, size: str) -> str:
    """float32 ``(32, size)``: PIL's Lanczos-3 weights taking ``size`` samples to 32.

    As PIL's ``precompute_coeffs``: output pixel i is centred on input coordinate
    ``(i + 0.5) * scale`` with ``scale = size / 32``; input pixel j weighs
    ``lanczos((j + 0.5 - centre) / max(scale, 1))`` (zero outside [-3, 3)); each row is
    normalised to sum 1 and rounded half away from zero to a multiple of 2**-22. Computed
    in float64, so the quantised weights are PIL's; they are exact in float32.
    """
    size_f = g.op("Cast", size, to=TensorProto.DOUBLE)
    scale = g.op("Div", size_f, g.const(float(_THUMB)))
    filter_scale = g.op("Max", scale, g.const(1.0))
    centres = g.op("Mul", g.const((np.arange(_THUMB, dtype=np.float64) + 0.5)[:, None]), scale)
    samples = g.op("Range", g.const(np.int64(0)), size, g.const(np.int64(1)))
    samples_f = g.op("Add", g.op("Cast", samples, to=TensorProto.DOUBLE), g.const(0.5))
    x = g.op(
        "Div",
        g.op("Sub", g.op("Unsqueeze", samples_f, g.const(np.array([0]))), centres),
        filter_scale,
    )
    x = g.op("Clip", x, g.const(-_LANCZOS_SUPPORT), g.const(_LANCZOS_SUPPORT))
    pi_x = g.op("Mul", x, g.const(np.pi))
    kernel = g.op("Mul", _sinc(g, x, pi_x), _sinc(g, x, g.op("Div", pi_x, g.const(3.0))))
    inside = g.op(
        "And",
        g.op("GreaterOrEqual", x, g.const(-_LANCZOS_SUPPORT)),
        g.op("Less", x, g.const(_LANCZOS_SUPPORT)),
    )
    weights = g.op("Where", inside, kernel, g.const(0.0))
    total = g.op("ReduceSum", weights, g.const(np.array([1])), keepdims=1)
    units = g.op("Mul", g.op("Div", weights, total), g.const(float(2**_PIL_COEFF_BITS)))
    rounded = g.op(  # half away from zero: sign(u) * floor(|u| + 0.5)
        "Mul", g.op("Sign", units), g.op("Floor", g.op("Add", g.op("Abs", units), g.const(0.5)))
    )
    quantised = g.op("Div", rounded, g.const(float(2**_PIL_COEFF_BITS)))
    return g.op("Cast", quantised, to=TensorProto.FLOAT)


def _to_uint8_levels(g: _Graph, x: str) -> str:
    """Round half up and clip to 0..255, as PIL stores an 8-bit pass result."""
    floor = g.op("Floor", g.op("Add", x, g.const(np.float32(0.5))))
    return g.op("Clip", floor, g.const(np.float32(0.0)), g.const(np.float32(255.0)))


def _vertical_first(g: _Graph, height: str, width: str) -> str:
    """bool: does Pillow (13+) resize ``height x width`` to 32x32 vertically first?

    Pillow 13 runs the vertical pass first when the height is reduced (``H > 32``) by more
    than twice as many px as the width (``H - 32 > 2 (W - 32)``); earlier Pillows always
    ran the horizontal pass first. Checked against Pillow 13.0 on random sizes.
    """
    thumb, two = g.const(np.int64(_THUMB)), g.const(np.int64(2))
    reduced_h = g.op("Sub", height, thumb)
    reduced_w = g.op("Sub", width, thumb)
    return g.op(
        "And",
        g.op("Greater", height, thumb),
        g.op("Greater", reduced_h, g.op("Mul", two, reduced_w)),
    )


def _dct_matrix() -> np.ndarray:
    """``(8, 32)``: the first 8 rows of scipy's unnormalised DCT-II, 2 cos(pi k (2n+1) / 64)."""
    k = np.arange(_HASH_SIZE)[:, None]
    n = np.arange(_THUMB)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * _THUMB))


def build_phash() -> onnx.ModelProto:
    """The ``phash`` model: NCHW float32 RGB in [0, 1] -> ``hash`` uint8 (batch, 64) bits.

    Inputs are taken as ``pixel / 255`` and rounded back to the levels 0..255 PIL sees;
    gray levels outside 0..255 (inputs outside [0, 1]) are clipped.
    """
    g = _Graph()
    f32 = np.float32
    pixels = g.op("Round", g.op("Mul", INPUT_NAME, g.const(f32(255.0))))
    luma_weights = np.array(_PIL_L_WEIGHTS, dtype=f32).reshape(1, 3, 1, 1)
    # (19595 R + 38470 G + 7471 B + 32768) >> 16: integers below 2**24, exact in float32.
    # Mul + ReduceSum, not a 1x1 Conv: ONNX Runtime's CPU Conv is 5x slower for 3 -> 1.
    luma_fixed = g.op(
        "ReduceSum",
        g.op("Mul", pixels, g.const(luma_weights)),
        g.const(np.array([1], dtype=np.int64)),
        keepdims=1,
    )
    gray = g.op(
        "Clip",
        g.op(
            "Floor", g.op("Add", g.op("Mul", luma_fixed, g.const(f32(2.0**-16))), g.const(f32(0.5)))
        ),
        g.const(f32(0.0)),
        g.const(f32(255.0)),
    )
    shape = g.op("Shape", INPUT_NAME)
    height = g.op("Gather", shape, g.const(np.int64(2)), axis=0)
    width = g.op("Gather", shape, g.const(np.int64(3)), axis=0)
    across = g.op("Transpose", _lanczos_weights(g, width), perm=[1, 0])  # (W, 32)
    down = _lanczos_weights(g, height)  # (32, H)
    thumb = g.op(  # (N, 1, 32, 32), the two 8-bit passes in Pillow's order
        "If",
        _vertical_first(g, height, width),
        then_branch=g.branch(
            lambda: _to_uint8_levels(
                g, g.op("MatMul", _to_uint8_levels(g, g.op("MatMul", down, gray)), across)
            )
        ),
        else_branch=g.branch(
            lambda: _to_uint8_levels(
                g, g.op("MatMul", down, _to_uint8_levels(g, g.op("MatMul", gray, across)))
            )
        ),
    )
    dct = _dct_matrix()
    low = g.op(  # (N, 1, 8, 8): dct(dct(thumb, axis=0), axis=1)[:8, :8]
        "MatMul", g.op("MatMul", g.const(dct.astype(f32)), thumb), g.const(dct.T.astype(f32))
    )
    flat = g.op("Reshape", low, g.const(np.array([-1, PHASH_BITS], dtype=np.int64)))
    k = g.const(np.array([PHASH_BITS], dtype=np.int64))
    ordered, _ = g.op2("TopK", flat, k, axis=1)  # descending
    middle = g.op(  # elements 31 and 32 of 64: numpy's median is their mean
        "Slice",
        ordered,
        g.const(np.array([PHASH_BITS // 2 - 1])),
        g.const(np.array([PHASH_BITS // 2 + 1])),
        g.const(np.array([1])),
    )
    median = g.op("ReduceMean", middle, axes=[1], keepdims=1)
    g.op("Cast", g.op("Greater", flat, median), to=TensorProto.UINT8, out=PHASH_OUTPUT)
    output = helper.make_tensor_value_info(PHASH_OUTPUT, TensorProto.UINT8, ["batch", PHASH_BITS])
    return g.model("phash", [output], "raypipe built-in 'phash': imagehash.phash as ONNX")


_EMBEDDING_CHANNELS = (16, 32, 64)  # three 3x3 stride-2 convolutions


def build_embedding(dim: int = 64, seed: int = 0) -> onnx.ModelProto:
    """The ``embedding`` model: NCHW float32 RGB in [0, 1] -> ``embedding`` (batch, ``dim``).

    Weights are He-normal draws from ``numpy.random.default_rng(seed)``: the same
    ``(dim, seed)`` always gives the same bytes. Rows of the output have unit L2 norm
    (a frame whose features are all zero gives the zero vector).
    """
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ConfigError(f"embedding dim must be an integer >= 1, got {dim!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"embedding seed must be an integer >= 0, got {seed!r}")
    rng = np.random.default_rng(seed)
    g = _Graph()
    x = g.op("Sub", INPUT_NAME, g.const(np.float32(0.5)))  # centre the input on zero
    channels_in = 3
    for channels in _EMBEDDING_CHANNELS:
        fan_in = channels_in * 9
        weight = rng.normal(0.0, np.sqrt(2.0 / fan_in), (channels, channels_in, 3, 3))
        bias = rng.normal(0.0, 0.01, channels)
        x = g.op(
            "Conv",
            x,
            g.const(weight.astype(np.float32), "conv_w"),
            g.const(bias.astype(np.float32), "conv_b"),
            kernel_shape=[3, 3],
            strides=[2, 2],
            pads=[1, 1, 1, 1],
        )
        x = g.op("Relu", x)
        channels_in = channels
    pooled = g.op("Flatten", g.op("GlobalAveragePool", x), axis=1)  # (N, 64)
    linear = rng.normal(0.0, np.sqrt(1.0 / channels_in), (channels_in, dim))
    features = g.op(
        "Gemm",
        pooled,
        g.const(linear.astype(np.float32), "fc_w"),
        g.const(np.zeros(dim, dtype=np.float32), "fc_b"),
    )
    norm = g.op("ReduceL2", features, axes=[1], keepdims=1)
    g.op("Div", features, g.op("Max", norm, g.const(np.float32(1e-12))), out=EMBEDDING_OUTPUT)
    output = helper.make_tensor_value_info(EMBEDDING_OUTPUT, TensorProto.FLOAT, ["batch", dim])
    doc = f"raypipe built-in 'embedding': dim {dim}, seed {seed}, unit L2 norm"
    return g.model("embedding", [output], doc)


ANALYSIS_MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    "phash": build_phash,
    "embedding": build_embedding,
}
"""The analysis built-ins by name (image in, tensor out), each built with its defaults."""


@functools.cache
def analysis_bytes(name: str) -> bytes:
    """The serialized analysis model ``name`` (one of :data:`ANALYSIS_MODELS`), built once."""
    if name not in ANALYSIS_MODELS:
        raise ModelNotFoundError(
            f"unknown analysis model {name!r}; analysis models are {', '.join(ANALYSIS_MODELS)}"
        )
    data: bytes = ANALYSIS_MODELS[name]().SerializeToString()
    return data


def phash_to_hex(bits: np.ndarray) -> str:
    """64 hash bits (any shape holding 64 values 0/1, row-major) -> 16 hex digits.

    The same string as ``str(imagehash.phash(image))``: the first bit is the most
    significant.
    """
    flat = np.asarray(bits).reshape(-1)
    if flat.size != PHASH_BITS or not np.isin(flat, (0, 1)).all():
        raise ValueError(
            f"phash bits must be {PHASH_BITS} values of 0 or 1, got "
            f"{flat.size} values{'' if flat.size != PHASH_BITS else ' not all 0/1'}"
        )
    return f"{phash_to_int(flat):016x}"


def phash_to_int(bits: np.ndarray) -> int:
    """64 hash bits (row-major, first bit most significant) -> an unsigned 64-bit integer."""
    flat = np.asarray(bits).reshape(-1).astype(np.uint64)
    if flat.size != PHASH_BITS:
        raise ValueError(f"phash bits must be {PHASH_BITS} values of 0 or 1, got {flat.size}")
    return int(np.bitwise_or.reduce(flat << np.arange(PHASH_BITS - 1, -1, -1, dtype=np.uint64)))
