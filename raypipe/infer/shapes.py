"""An image model's output size over its input size, from the ONNX graph alone.

The driver sizes a local Ray's object store from the chunks a run will hold
(:func:`raypipe.distributed.cluster.local_store_bytes`), and an upscaler's chunks come back
larger than they went in (a 720p chunk of 64 frames is 177 MB as RGB, 1.6 GB at 4K). ONNX
shape inference at a concrete input size says how much larger without running the model:
the image input's dynamic height and width are set to a probe size (its static ones kept),
and the output's spatial dimensions divided by the input's give the scale. Nothing is
loaded into ONNX Runtime and no weights are read for it.

``None`` whenever the graph does not say: an output size that depends on data, sides that
scale differently, a layout the spec does not match, or a graph shape inference cannot
read. Callers treat ``None`` as "unknown" and keep their safe default.
"""

from __future__ import annotations

import functools
import math

from raypipe.errors import ModelLoadError
from raypipe.infer.sidecar import ModelSpec

PROBE_PX = 256
"""The side a dynamic input dimension is given for the inference (rounded up to the spec's
``pad_multiple``): large enough for stride-32 networks, and the scale does not depend on it
for the fully convolutional models that have dynamic sizes."""


@functools.lru_cache(maxsize=2)
def image_output_scale(data: bytes, spec: ModelSpec) -> float | None:
    """Output height over input height of the image model ``data`` with ``spec`` (equal to
    output width over input width), or ``None`` when the graph does not determine it or the
    model is temporal (several frame inputs, recurrent state). Once per model and process:
    shape inference took 0.26 s on a 45 MB graph, and a ``raypipe serve`` driver plans every
    run of the same model, then sizes its calls (:meth:`FrameModel.batch_step`) again."""
    import onnx
    from onnx import shape_inference

    if spec.temporal.active:
        return None
    try:
        model = onnx.load_from_string(data)
    except Exception:  # noqa: BLE001 - a model ONNX cannot parse: nothing to say
        return None
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    image = _named(inputs, spec.input_name)
    output = _named(list(graph.output), spec.output_name)
    if image is None or output is None:
        return None
    dims = image.type.tensor_type.shape.dim
    if len(dims) != 4:
        return None
    h_axis, w_axis = (2, 3) if spec.layout == "NCHW" else (1, 2)
    probe = probe_side(spec.pad_multiple)
    sizes = {0: 1, 1 if spec.layout == "NCHW" else 3: 3, h_axis: probe, w_axis: probe}
    for axis, dim in enumerate(dims):
        if not dim.HasField("dim_value") or dim.dim_value <= 0:
            dim.Clear()
            dim.dim_value = sizes[axis]
    in_h, in_w = dims[h_axis].dim_value, dims[w_axis].dim_value
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - shape inference fails on some valid graphs
        return None
    out = _named(list(inferred.graph.output), output.name)
    out_dims = out.type.tensor_type.shape.dim if out is not None else []
    if len(out_dims) != 4:
        return None
    out_h, out_w = out_dims[h_axis].dim_value, out_dims[w_axis].dim_value  # 0: not known
    if out_h <= 0 or out_w <= 0:
        return None
    scale_h, scale_w = out_h / in_h, out_w / in_w
    if not math.isclose(scale_h, scale_w, rel_tol=0.02):
        return None
    return scale_h


def _named(values: list, name: str | None):  # onnx ValueInfoProto, untyped in onnx
    """The value called ``name``, or the first of ``values`` when ``name`` is None."""
    if name is None:
        return values[0] if values else None
    return next((v for v in values if v.name == name), None)


def probe_side(pad_multiple: int | None, side: int = PROBE_PX) -> int:
    """``side`` rounded up to a multiple of ``pad_multiple``: the side of a test frame that
    a model padding its inputs to that multiple takes as it is."""
    multiple = pad_multiple or 1
    return multiple * math.ceil(side / multiple)


def check_whole_scale(data: bytes, spec: ModelSpec) -> None:
    """Refuse padding or tiling (``spec``'s) for the image model ``data`` whose graph says
    its output is not its input's size times a whole number: a 0.5x model with
    ``pad_multiple`` failed at its first chunk, after Ray's start, `model show` exiting 0
    (a sweep). Scales the graph does not give are found as the model runs."""
    if spec.pad_multiple is None and spec.tile is None:
        return
    scale = image_output_scale(data, spec)
    if scale is None or (scale >= 1 and float(scale).is_integer()):
        return
    what = "pad_multiple" if spec.pad_multiple is not None else "tile"
    raise ModelLoadError(
        f"the model's output is {scale:g}x its input's size, and {what} needs an output the "
        f"input's size or that size times one whole number (at least 1); drop {what}"
    )
