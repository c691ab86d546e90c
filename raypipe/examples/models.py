"""The example processors' models, small ONNX graphs built in code (nothing is downloaded).

- :func:`region_detector`: a detector-like model. Input ``input`` (n, 3, H, W) float32 RGB
  in ``[0, 1]``; output ``score`` (n, 1, H / cell, W / cell): the mean BT.601 luma of each
  ``cell`` x ``cell`` px cell (an average pool), i.e. a coarse score map like the heat maps
  of CenterNet or DBNet, from which :func:`detect_regions` reads boxes.
- :func:`region_model`: a stand-in for a face swapper or enhancer, which takes crops at one
  fixed size. Input ``input`` (n, 3, size, size), output ``output`` (same shape): ``1 - x``.
"""

from __future__ import annotations

import functools
from typing import Any

import cv2
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from raypipe.infer.builtin import IR_VERSION, LUMA_BT601, OPSET

CELL = 8  # px per score cell
REGION_SIZE = 64  # px, the region model's fixed input side


def _serialize(graph: object) -> bytes:
    model = helper.make_model(
        graph,  # type: ignore[arg-type]
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="raypipe.examples",
    )
    data: bytes = model.SerializeToString()
    return data


@functools.cache
def region_detector(cell: int = CELL) -> bytes:
    """The detector-like model (see the module docstring)."""
    luma = np.array(LUMA_BT601, dtype=np.float32).reshape(1, 3, 1, 1)
    nodes = [
        helper.make_node("Conv", ["input", "luma"], ["y"], kernel_shape=[1, 1]),
        helper.make_node(
            "AveragePool", ["y"], ["score"], kernel_shape=[cell, cell], strides=[cell, cell]
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "region_detector",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n", 1, "rows", "cols"])],
        initializer=[numpy_helper.from_array(luma, "luma")],
    )
    return _serialize(graph)


@functools.cache
def region_model(size: int = REGION_SIZE) -> bytes:
    """The fixed-size region model (see the module docstring)."""
    shape: list[int | str] = ["n", 3, size, size]
    graph = helper.make_graph(
        [helper.make_node("Sub", ["one", "input"], ["output"])],
        "region_model",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
        initializer=[numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")],
    )
    return _serialize(graph)


def to_nchw(frames: np.ndarray) -> np.ndarray:
    """uint8 (or uint16) RGB (n, H, W, 3) -> float32 NCHW in ``[0, 1]``."""
    top = np.float32(np.iinfo(frames.dtype).max)
    return np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32) / top


def from_nchw(x: np.ndarray, dtype: np.dtype[Any] | type = np.uint8) -> np.ndarray:
    """float32 NCHW in ``[0, 1]`` -> RGB (n, H, W, 3) of ``dtype`` (uint8 or uint16),
    rounded and clipped."""
    top = float(np.iinfo(dtype).max)
    return np.clip(np.rint(x * top), 0, top).astype(dtype).transpose(0, 2, 3, 1)


Box = tuple[int, int, int, int]  # x0, y0, x1, y1 px: columns [x0, x1), rows [y0, y1)


def detect_regions(
    scores: np.ndarray, threshold: float, cell: int, hw: tuple[int, int]
) -> list[list[Box]]:
    """Boxes per frame from a score map (n, 1, rows, cols): each 4-connected group of cells
    scoring above ``threshold`` is one box, in frame px, clipped to ``hw`` (height, width)."""
    boxes: list[list[Box]] = []
    for score in scores[:, 0]:
        mask = (score > threshold).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
        frame_boxes = []
        for x, y, w, h, _ in stats[1:count]:  # label 0 is the background
            x0, y0 = int(x) * cell, int(y) * cell
            x1, y1 = min(int(x + w) * cell, hw[1]), min(int(y + h) * cell, hw[0])
            frame_boxes.append((x0, y0, x1, y1))
        boxes.append(frame_boxes)
    return boxes
