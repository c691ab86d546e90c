"""Padding to a multiple of a model's stride (``ModelSpec.pad_multiple``).

Many convolutional models (U-Nets, DBNet-style text detectors, most restoration networks)
downsample by a stride and upsample back with skip connections, so their height and width
must be multiples of that stride: on other sizes the skip connection's ``Add`` or
``Concat`` meets two different shapes and the model fails. With ``pad_multiple = m`` the
model input (rank 4, after pre-processing) is padded at the bottom and on the right by
repeating the last row and column (edge padding) up to the next multiple of ``m``, and the
output is cropped back to rows ``[0, h f)`` and columns ``[0, w f)``, where ``f`` is the
model's own scale factor (output size / padded input size, an integer: 1 for a same-size
model, 2 for a 2x upscaler).

Padding at the bottom and right keeps coordinates: pixel ``(x, y)`` of the padded input is
pixel ``(x, y)`` of the frame. So tensor outputs need no mapping back: those that are maps
of the padded input's size (or an integer multiple of it, same factor for height and width)
are cropped like images, every other output (vectors, boxes, smaller maps) is returned as
the model gave it. With tiling each tile window is padded (:class:`FrameGeometry` wraps the
model call given to :func:`raypipe.infer.tiling.run_tiled`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from raypipe.errors import ModelError

Layout = Literal["NCHW", "NHWC"]


def padded_size(size: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is ``>= size`` (px)."""
    return -(-size // multiple) * multiple


def _h_axis(layout: Layout) -> int:
    return 2 if layout == "NCHW" else 1


def pad_batch(x: np.ndarray, multiple: int, layout: Layout) -> np.ndarray:
    """A rank-4 batch edge-padded at the bottom/right to multiples of ``multiple``."""
    h_axis = _h_axis(layout)
    height, width = x.shape[h_axis], x.shape[h_axis + 1]
    pad_h = padded_size(height, multiple) - height
    pad_w = padded_size(width, multiple) - width
    if pad_h == 0 and pad_w == 0:
        return x
    widths = [(0, 0)] * 4
    widths[h_axis], widths[h_axis + 1] = (0, pad_h), (0, pad_w)
    return np.pad(x, widths, mode="edge")


def _factor(y: np.ndarray, padded_hw: tuple[int, int], layout: Layout) -> int | None:
    """The integer factor by which ``y``'s height and width exceed ``padded_hw``, or None."""
    if y.ndim != 4:
        return None
    h_axis = _h_axis(layout)
    out_h, out_w = y.shape[h_axis], y.shape[h_axis + 1]
    if out_h % padded_hw[0] or out_w % padded_hw[1]:
        return None
    factor = out_h // padded_hw[0]
    return factor if factor >= 1 and out_w == padded_hw[1] * factor else None


def _crop(y: np.ndarray, hw: tuple[int, int], factor: int, layout: Layout) -> np.ndarray:
    index: list[slice] = [slice(None)] * 4
    h_axis = _h_axis(layout)
    index[h_axis], index[h_axis + 1] = slice(0, hw[0] * factor), slice(0, hw[1] * factor)
    return y[tuple(index)]


def crop_image(
    y: np.ndarray, hw: tuple[int, int], padded_hw: tuple[int, int], layout: Layout
) -> np.ndarray:
    """An image output of a padded input cropped back to ``hw`` times the model's factor.

    Raises :class:`ModelError` when the output is not an integer multiple of the padded
    input's size (then there is no pixel grid to crop on).
    """
    factor = _factor(y, padded_hw, layout)
    if factor is None:
        raise ModelError(
            f"model output has shape {tuple(y.shape)} for a {padded_hw[0]}x{padded_hw[1]} "
            f"(height x width) padded input ({layout}); pad_multiple needs an output the "
            "input's size or that size times one whole number in both height and width; drop "
            "pad_multiple"
        )
    return _crop(y, hw, factor, layout)


def crop_map(
    y: np.ndarray, hw: tuple[int, int], padded_hw: tuple[int, int], layout: Layout
) -> np.ndarray:
    """A tensor output cropped back when it is a map of the padded input; else ``y``."""
    factor = _factor(y, padded_hw, layout)
    return y if factor is None else _crop(y, hw, factor, layout)


def run_padded(
    run_fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, multiple: int, layout: Layout
) -> np.ndarray:
    """``run_fn`` on ``x`` padded to multiples of ``multiple``, its image output cropped back."""
    padded = pad_batch(x, multiple, layout)
    if padded is x:
        return run_fn(x)
    h_axis = _h_axis(layout)
    hw = (x.shape[h_axis], x.shape[h_axis + 1])
    padded_hw = (padded.shape[h_axis], padded.shape[h_axis + 1])
    return crop_image(np.asarray(run_fn(padded)), hw, padded_hw, layout)


def run_padded_maps(
    run_fn: Callable[[np.ndarray], list[np.ndarray]], x: np.ndarray, multiple: int, layout: Layout
) -> list[np.ndarray]:
    """``run_fn`` (every output of a tensor model) on ``x`` padded to multiples of
    ``multiple``; outputs that are maps of the padded input cropped back (:func:`crop_map`)."""
    padded = pad_batch(x, multiple, layout)
    h_axis = _h_axis(layout)
    hw = (x.shape[h_axis], x.shape[h_axis + 1])
    padded_hw = (padded.shape[h_axis], padded.shape[h_axis + 1])
    return [crop_map(np.asarray(y), hw, padded_hw, layout) for y in run_fn(padded)]
