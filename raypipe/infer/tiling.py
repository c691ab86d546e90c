"""Frame geometry for models: fitting frames to a fixed input size, and tiling large frames.

Coordinates are in pixels with ``(0, 0)`` the top-left corner of the top-left pixel (pixel
``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``, its centre at ``(j + 0.5, i + 0.5)``); ranges
are half-open ``[start, end)``; sizes are ``(height, width)``.

Fitting (``ModelSpec.resize``), on uint8 RGB frames before pre-processing:

- ``stretch`` resizes the frame to the model's size, aspect ratio not kept.
- ``letterbox`` scales by ``min(model_h / h, model_w / w)`` (aspect ratio kept), centres
  the result and fills the rest with ``pad_value`` (0, black, by default; the extra pixel of
  an odd padding goes to the bottom/right).

Resizing is ``cv2.resize`` with ``INTER_AREA`` when neither side grows (the anti-aliased
choice for shrinking) and ``INTER_LINEAR`` otherwise. :class:`LetterboxParams` records the
mapping; image outputs are mapped back by :func:`unfit_frames` (crop the padding, resize to
the source size times the model's own scale factor) and tensor outputs keep the model's
coordinates, which :func:`letterbox_to_source` maps back.

Tiling (``ModelSpec.tile``), on the model input: :func:`run_tiled` cuts ``H x W`` into
cores of ``tile x tile`` px (the last ones smaller), runs the model on each core plus
``overlap`` px of real image context on every side (a window of the same size for every
tile, shifted inside the frame at its borders, so a border tile sees the true frame edge
and the model's own edge handling applies there) and keeps each window's core. With
``overlap`` at least the model's receptive-field radius the result equals the untiled run.

Padding to a multiple of the model's stride (``ModelSpec.pad_multiple``) is in
:mod:`raypipe.infer.padding`; :meth:`FrameGeometry.run` applies it to every model input
(the whole batch, or each tile window).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np

from raypipe.errors import ConfigError, ModelLoadError
from raypipe.infer.padding import padded_size, run_padded

if TYPE_CHECKING:
    from raypipe.infer.sidecar import ModelSpec

ResizeMode = Literal["none", "stretch", "letterbox"]
RESIZE_MODES: tuple[str, ...] = ("none", "stretch", "letterbox")
Layout = Literal["NCHW", "NHWC"]


@dataclass(frozen=True, kw_only=True)
class LetterboxParams:
    """How frames of ``source_size`` were fitted into a model input of ``model_size``.

    The source frame fills model rows ``[pad_y, pad_y + content_size[0])`` and columns
    ``[pad_x, pad_x + content_size[1])``; a source point ``(x, y)`` lands at
    ``(x * scale_x + pad_x, y * scale_y + pad_y)`` in the model input. For ``stretch`` the
    padding is 0 and the content is the whole input.
    """

    source_size: tuple[int, int]  # (height, width) px of the decoded frames
    model_size: tuple[int, int]  # (height, width) px the model takes
    content_size: tuple[int, int]  # (height, width) px of the resized frame inside it
    pad_y: int  # px of padding above the content
    pad_x: int  # px of padding left of the content

    @property
    def scale_x(self) -> float:
        """Model px per source px, horizontally."""
        return self.content_size[1] / self.source_size[1]

    @property
    def scale_y(self) -> float:
        """Model px per source px, vertically."""
        return self.content_size[0] / self.source_size[0]


def _positive_size(name: str, size: tuple[int, int]) -> tuple[int, int]:
    if (
        len(size) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size)
        or min(size) < 1
    ):
        raise ConfigError(f"{name} must be (height, width), two integers >= 1, got {size!r}")
    return int(size[0]), int(size[1])


def fit_params(
    source_size: tuple[int, int], model_size: tuple[int, int], mode: ResizeMode
) -> LetterboxParams:
    """The :class:`LetterboxParams` of fitting ``source_size`` frames to ``model_size``."""
    src_h, src_w = _positive_size("source_size", source_size)
    model_h, model_w = _positive_size("model_size", model_size)
    if mode == "stretch":
        content = (model_h, model_w)
    elif mode == "letterbox":
        gain = min(model_h / src_h, model_w / src_w)
        content = (
            min(model_h, max(1, round(src_h * gain))),
            min(model_w, max(1, round(src_w * gain))),
        )
    else:
        raise ConfigError(f"resize mode must be 'stretch' or 'letterbox', got {mode!r}")
    return LetterboxParams(
        source_size=(src_h, src_w),
        model_size=(model_h, model_w),
        content_size=content,
        pad_y=(model_h - content[0]) // 2,
        pad_x=(model_w - content[1]) // 2,
    )


def resize_frame(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One ``(h, w, c)`` frame resized to ``size`` = (height, width): area when shrinking."""
    height, width = size
    if frame.shape[:2] == (height, width):
        return frame
    shrink = height <= frame.shape[0] and width <= frame.shape[1]
    interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    out = cv2.resize(frame, (width, height), interpolation=interpolation)
    return out.reshape(height, width, *frame.shape[2:])  # cv2 drops a channel axis of 1


def fit_frames(frames: np.ndarray, params: LetterboxParams, pad_value: int = 0) -> np.ndarray:
    """uint8 frames ``(n, *source_size, 3)`` -> ``(n, *model_size, 3)`` as ``params`` says
    (uint16 frames too: ``pad_value`` is an 8-bit level, scaled to 16 bits for them)."""
    if frames.shape[1:3] != params.source_size:
        raise ValueError(
            f"frames of {frames.shape[1]}x{frames.shape[2]} px do not match the fit's source "
            f"size {params.source_size[0]}x{params.source_size[1]}"
        )
    (top, left), (height, width) = (params.pad_y, params.pad_x), params.content_size
    if frames.dtype == np.uint16:
        pad_value *= 257
    out = np.full((len(frames), *params.model_size, frames.shape[3]), pad_value, frames.dtype)
    for i, frame in enumerate(frames):
        out[i, top : top + height, left : left + width] = resize_frame(frame, (height, width))
    return out


def unfit_frames(frames: np.ndarray, params: LetterboxParams) -> np.ndarray:
    """Model output frames ``(n, H', W', c)`` back to the source geometry.

    The output may be the model input's size or a multiple of it (an upscaler): with
    ``f = H' / model_h`` (and likewise for width) the content rows
    ``[round(pad_y f), round((pad_y + content_h) f))`` are kept and resized to
    ``round(source_h f)`` rows.
    """
    factor_y = frames.shape[1] / params.model_size[0]
    factor_x = frames.shape[2] / params.model_size[1]
    top, left = round(params.pad_y * factor_y), round(params.pad_x * factor_x)
    bottom = round((params.pad_y + params.content_size[0]) * factor_y)
    right = round((params.pad_x + params.content_size[1]) * factor_x)
    size = (
        max(1, round(params.source_size[0] * factor_y)),
        max(1, round(params.source_size[1] * factor_x)),
    )
    crop = frames[:, top:bottom, left:right]
    return np.stack([resize_frame(np.ascontiguousarray(f), size) for f in crop])


def letterbox_to_source(xy: np.ndarray, params: LetterboxParams) -> np.ndarray:
    """Points ``(..., 2)`` as (x, y) in model-input px -> the same points in source px.

    Float out; points in the padding map outside ``[0, width) x [0, height)``.
    """
    points = np.asarray(xy, dtype=np.float64)
    if points.shape[-1:] != (2,):
        raise ValueError(f"xy must have shape (..., 2) holding (x, y), got {points.shape}")
    offset = np.array([params.pad_x, params.pad_y], dtype=np.float64)
    scale = np.array([params.scale_x, params.scale_y])
    return (points - offset) / scale


def source_to_letterbox(xy: np.ndarray, params: LetterboxParams) -> np.ndarray:
    """The inverse of :func:`letterbox_to_source`: source px -> model-input px."""
    points = np.asarray(xy, dtype=np.float64)
    if points.shape[-1:] != (2,):
        raise ValueError(f"xy must have shape (..., 2) holding (x, y), got {points.shape}")
    offset = np.array([params.pad_x, params.pad_y], dtype=np.float64)
    return points * np.array([params.scale_x, params.scale_y]) + offset


# --- tiling -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    """One tile along one axis: the window the model sees and the core that is kept."""

    start: int  # window [start, end) in input px
    end: int
    core_start: int  # core [core_start, core_end) in input px, inside the window
    core_end: int


def tile_axis(size: int, tile: int, overlap: int) -> list[Tile]:
    """The tiles along an axis of ``size`` px: cores ``[k tile, min((k+1) tile, size))``.

    Every window has ``min(tile + 2 overlap, size)`` px and holds its core with at least
    ``overlap`` px on each side that is not the frame's edge.
    """
    for name, value, least in (("size", size, 1), ("tile", tile, 1), ("overlap", overlap, 0)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
            raise ConfigError(f"{name} must be an integer >= {least}, got {value!r}")
    window = min(tile + 2 * overlap, size)
    tiles = []
    for core_start in range(0, size, tile):
        core_end = min(core_start + tile, size)
        start = min(max(core_start - overlap, 0), size - window)
        tiles.append(Tile(start, start + window, core_start, core_end))
    return tiles


def run_tiled(
    run_fn: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    tile: int,
    overlap: int,
    scale: int | None = 1,
    *,
    layout: Layout = "NCHW",
) -> np.ndarray:
    """``run_fn`` over tiles of ``x`` (rank 4, ``layout``), stitched into one output.

    ``run_fn`` takes a batch of windows ``x[..., rows, cols]`` (same layout, every window the
    same size) and returns the model output for them, ``scale`` times as large in height
    and width (an upscaler) with any channel count. ``scale=None`` reads it from the first
    tile's output. Rows ``[k tile, (k+1) tile)`` of the input become rows
    ``[k tile scale, (k+1) tile scale)`` of the output. Tiled output equals the untiled
    output when ``overlap`` >= the model's receptive-field radius (in input px).
    """
    if x.ndim != 4:
        raise ValueError(f"run_tiled takes a rank-4 batch ({layout}), got shape {x.shape}")
    if layout not in ("NCHW", "NHWC"):
        raise ConfigError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
    if scale is not None and (not isinstance(scale, int) or isinstance(scale, bool) or scale < 1):
        raise ConfigError(f"scale must be an integer >= 1 or None (read it), got {scale!r}")
    h_axis = 2 if layout == "NCHW" else 1
    rows = tile_axis(x.shape[h_axis], tile, overlap)
    cols = tile_axis(x.shape[h_axis + 1], tile, overlap)
    out: np.ndarray | None = None
    for r in rows:
        for c in cols:
            window = _take(x, h_axis, slice(r.start, r.end), slice(c.start, c.end))
            y = np.asarray(run_fn(np.ascontiguousarray(window)))
            if out is None:
                scale = scale or _read_scale(y, window, h_axis)
                shape = list(y.shape)
                shape[h_axis], shape[h_axis + 1] = (
                    x.shape[h_axis] * scale,
                    x.shape[h_axis + 1] * scale,
                )
                out = np.empty(shape, dtype=y.dtype)
            assert scale is not None
            expected = list(out.shape)
            expected[h_axis], expected[h_axis + 1] = (
                (r.end - r.start) * scale,
                (c.end - c.start) * scale,
            )
            if list(y.shape) != expected:
                raise ModelLoadError(
                    f"model output for a tile of shape {window.shape} has shape {y.shape}; "
                    f"tiling expects {tuple(expected)} (input x {scale} in height and width, "
                    f"{layout}); run this model without tile"
                )
            core = _take(
                y,
                h_axis,
                slice((r.core_start - r.start) * scale, (r.core_end - r.start) * scale),
                slice((c.core_start - c.start) * scale, (c.core_end - c.start) * scale),
            )
            target = _take(
                out,
                h_axis,
                slice(r.core_start * scale, r.core_end * scale),
                slice(c.core_start * scale, c.core_end * scale),
            )
            target[...] = core
    assert out is not None
    return out


def _take(a: np.ndarray, h_axis: int, rows: slice, cols: slice) -> np.ndarray:
    index: list[slice] = [slice(None)] * a.ndim
    index[h_axis], index[h_axis + 1] = rows, cols
    return a[tuple(index)]


def _read_scale(y: np.ndarray, window: np.ndarray, h_axis: int) -> int:
    if y.ndim == 4:
        in_h, in_w = window.shape[h_axis], window.shape[h_axis + 1]
        out_h, out_w = y.shape[h_axis], y.shape[h_axis + 1]
        if out_h % in_h == 0 and out_w * in_h == out_h * in_w and out_h >= in_h:
            return out_h // in_h
    raise ModelLoadError(
        f"model output for a tile of shape {window.shape} has shape {y.shape}; tiling needs an "
        "output the same size as its input or that size times one whole number (at least 1) "
        "in both height and width; run this model without tile"
    )


# --- a model's frame geometry -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FrameGeometry:
    """How frames of any size reach one model: as they are, fitted (``resize``) or tiled.

    ``fixed_size`` is the model input's (height, width), None where dynamic. Construction
    checks that the spec fits the model (:class:`ModelLoadError` says what to change).
    """

    fixed_size: tuple[int | None, int | None]
    resize: ResizeMode = "none"
    input_size: tuple[int, int] | None = None
    pad_value: int = 0
    tile: int | None = None
    tile_overlap: int = 16
    pad_multiple: int | None = None  # pad each model input to multiples of this (px)
    input_name: str = "input"  # for messages
    model_size: tuple[int, int] | None = field(init=False)  # fit target; None: no resize

    @classmethod
    def from_spec(
        cls, spec: ModelSpec, fixed_size: tuple[int | None, int | None], input_name: str
    ) -> FrameGeometry:
        return cls(
            fixed_size=fixed_size,
            resize=spec.resize,
            input_size=spec.input_size,
            pad_value=spec.pad_value,
            tile=spec.tile,
            tile_overlap=spec.tile_overlap,
            pad_multiple=spec.pad_multiple,
            input_name=input_name,
        )

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_size", self._model_size())
        fixed_h, fixed_w = self.fixed_size
        if self.pad_multiple is not None and (fixed_h is not None or fixed_w is not None):
            raise ModelLoadError(
                f"{self._takes()}, and pad_multiple={self.pad_multiple} pads frames to other "
                "sizes; pad_multiple needs a model with dynamic height and width, drop it"
            )
        if self.tile is not None and (fixed_h is not None or fixed_w is not None):
            window = self.tile + 2 * self.tile_overlap
            if (fixed_h, fixed_w) != (window, window):
                raise ModelLoadError(
                    f"{self._takes()}, but tile={self.tile} with tile_overlap="
                    f"{self.tile_overlap} makes {window}x{window} px tiles; set tile = model "
                    "size - 2 x tile_overlap"
                )

    def _takes(self) -> str:
        fixed_h, fixed_w = self.fixed_size
        if fixed_h is None and fixed_w is None:
            return f"model input {self.input_name!r} takes frames of any height and width"
        return (
            f"model input {self.input_name!r} takes {fixed_h or 'any'}x{fixed_w or 'any'} "
            "(height x width) frames"
        )

    def _model_size(self) -> tuple[int, int] | None:
        fixed_h, fixed_w = self.fixed_size
        if self.resize == "none":
            if self.input_size is not None:
                raise ConfigError(
                    f"input_size={self.input_size} is the size frames are resized to and "
                    "needs resize='stretch' or 'letterbox' (--resize), got resize='none'"
                )
            return None
        if self.input_size is not None:
            want_h, want_w = self.input_size
            if fixed_h not in (None, want_h) or fixed_w not in (None, want_w):
                raise ModelLoadError(
                    f"{self._takes()} but ModelSpec.input_size is {want_h}x{want_w}; drop "
                    "input_size or make it match the model"
                )
            return self.input_size
        if fixed_h is None or fixed_w is None:
            raise ModelLoadError(
                f"resize={self.resize!r} needs the model's input size, but {self._takes()}; "
                'give it as "input_size": [HEIGHT, WIDTH] in the model\'s sidecar '
                "(NAME.raypipe.json), or ModelSpec.input_size=(height, width)"
            )
        return fixed_h, fixed_w

    def check_frames(self, height: int, width: int, *, image: bool = True) -> None:
        """Raise :class:`ModelLoadError` when frames of this size cannot reach the model;
        ``image``: the model outputs pictures, so tiling is a way out (an analysis model's
        tensors are not tiled: a classifier was told to try ``--tile``, which it refused)."""
        want_h, want_w = self.fixed_size
        if self.model_size is not None or (want_h is None and want_w is None):
            return
        if self.tile is not None:
            window = self.tile + 2 * self.tile_overlap
            if height < window or width < window:
                raise ModelLoadError(
                    f"frames of {height}x{width} (height x width) px are smaller than the "
                    f"model's {window}x{window} px tiles; run without tile and pass --resize "
                    "stretch or letterbox, or use a model with dynamic height and width"
                )
        elif (want_h is not None and want_h != height) or (want_w is not None and want_w != width):
            tiles = ""
            if image and want_h is not None and want_h == want_w and min(height, width) >= want_h:
                overlap = self.tile_overlap  # the spec's: windows of the model's size
                tiles = (  # an image-to-image model on larger frames
                    f", or --tile {max(1, want_h - 2 * overlap)} (--tile-overlap {overlap}: "
                    "windows of the model's size)"
                )
            raise ModelLoadError(
                f"{self._takes()}, got {height}x{width}; pass --resize stretch or letterbox "
                f'("resize" in its sidecar, resize=... in Python){tiles}, resize the '
                "video, or use a model with dynamic height and width"
            )

    def params(self, height: int, width: int) -> LetterboxParams | None:
        """How frames of ``height`` x ``width`` px are fitted; None when they are not."""
        if self.model_size is None:
            return None
        return fit_params((height, width), self.model_size, self.resize)

    def fit(self, frames: np.ndarray) -> tuple[np.ndarray, LetterboxParams | None]:
        """uint8 frames ``(n, H, W, 3)`` -> the frames the model sees, and the fit's params."""
        params = self.params(frames.shape[1], frames.shape[2])
        return (
            (frames, None)
            if params is None
            else (fit_frames(frames, params, self.pad_value), params)
        )

    def run(
        self, run_fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, layout: Layout
    ) -> np.ndarray:
        """``run_fn(x)``, or :func:`run_tiled` over ``x`` when tiling; with ``pad_multiple``
        every model input (the batch, or each tile window) is padded and its output cropped."""
        if self.pad_multiple is not None:
            run_fn = functools.partial(
                run_padded, run_fn, multiple=self.pad_multiple, layout=layout
            )
        if self.tile is None:
            return run_fn(x)
        return run_tiled(run_fn, x, self.tile, self.tile_overlap, scale=None, layout=layout)

    def call_hw(self, height: int, width: int) -> tuple[int, int]:
        """The size (height, width) px of the frames one model call gets for frames of
        this size: the fit target, the tile window (the frame where it is smaller), or the
        frame; padded to ``pad_multiple`` when set. The TensorRT profile's size too."""
        if self.model_size is not None:
            return self.model_size
        if self.tile is not None:
            window = self.tile + 2 * self.tile_overlap
            height, width = min(window, height), min(window, width)
        return self.padded_hw(height, width)

    def padded_hw(self, height: int, width: int) -> tuple[int, int]:
        """The size (height, width) px of the model input for frames of this size: padded
        to ``pad_multiple`` when set (the tile window, when tiling, is padded instead)."""
        if self.pad_multiple is None:
            return height, width
        return padded_size(height, self.pad_multiple), padded_size(width, self.pad_multiple)
