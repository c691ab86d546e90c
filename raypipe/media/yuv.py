"""The decoder's YUV samples handed to the inference actor as they are (``--handoff``).

By default a decode task converts each frame to RGB (:mod:`raypipe.media.rgb`) and the
frames travel to the actor as ``(n, H, W, 3)`` uint8: 3 bytes a pixel. With the YUV
hand-off an 8-bit 4:2:0 frame travels as its three planes, packed I420 (Y, then U, then V,
each without padding) in one row of ``H * W * 3 / 2`` bytes: half the bytes through the
object store and, on a GPU, across the bus. The conversion to RGB then runs inside the
model's ONNX graph (:func:`raypipe.infer.ingraph.with_yuv_input`), on the actor's device.

The in-graph conversion gives swscale's bits, not an approximation of them. For planar
8-bit 4:2:0 at even sizes with point chroma (what :class:`~raypipe.media.rgb.RgbConverter`
asks for), swscale's R of a pixel depends only on its Y and V, B only on Y and U, and G on
Y, U and V through one of a few thousand columns: checked over all 2^24 (Y, U, V) and on
random frames of many sizes (tests/media/test_yuv.py). :func:`rgb_tables` reads those
tables from swscale itself, by converting one 4096x4096 frame that holds every (Y, U, V)
once, so the graph reproduces whichever swscale code path this machine runs. Odd sizes
take another swscale path whose bits differ; they, like 10-bit, 4:2:2, 4:4:4, rotated and
interlaced sources, stay on RGB (:func:`handoff_problem` says why).

Who converts: an actor that runs the model's wrapped graph (on a GPU) converts in the
graph; an actor whose session got no GPU provider converts on its host with swscale
(:meth:`YuvInput.to_rgb`), as the decode task would have. In the graph on a CPU the
look-ups are slow: 58 ms a 720p frame against swscale's 3 (``benchmarks/handoff.py``), so
``--handoff auto`` hands off YUV only to actors that hold GPUs, and only ``--handoff yuv``
makes CPU actors convert in the graph.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from raypipe.media.colour import ColourTags
from raypipe.media.picture import PictureFormat
from raypipe.recycle import Allocate

if TYPE_CHECKING:
    from raypipe.media.rgb import RgbConverter

PLANAR_420 = ("yuv420p", "yuvj420p")
"""The decoder formats handed off as they are."""
SEMI_PLANAR_420 = ("nv12",)
"""Handed off after their chroma is made planar (NVDEC's frames; only samples move)."""

_PROBE_SIDE = 4096  # 2048 x 2048 chroma samples: every (U, V) pair 64 times, 4 Y each


def handoff_problem(picture: PictureFormat) -> str:
    """Why frames of ``picture`` cannot be handed off as YUV (``""``: they can)."""
    if picture.pix_fmt not in PLANAR_420 + SEMI_PLANAR_420:
        return f"the source is {picture.pix_fmt}; the YUV hand-off takes 8-bit 4:2:0"
    if picture.mirrored:
        return "the source is mirrored"
    if picture.interlaced:
        return "the source is interlaced (its fields' chroma is converted apart)"
    if picture.quarter_turns:
        return f"the source is rotated {picture.rotation_degrees} degrees"
    if picture.coded_width % 2 or picture.coded_height % 2:
        return (
            f"the source is {picture.coded_width}x{picture.coded_height}; the YUV hand-off "
            "takes even sizes"
        )
    return ""


@dataclass(frozen=True)
class YuvRule:
    """A run's YUV hand-off, as its decode tasks apply it to each chunk: which sources'
    frames go as YUV (the driver makes one only for a model that takes them:
    :func:`raypipe.distributed.setup.handoff_rule`). ``pad_multiple``: the model's; frames
    it would pad go as RGB (padding is done on RGB frames, outside the graph)."""

    pad_multiple: int | None = None

    def problem(self, picture: PictureFormat) -> str:
        """Why ``picture``'s frames go as RGB under this rule (``""``: they go as YUV)."""
        problem = handoff_problem(picture)
        m = self.pad_multiple
        if not problem and m and (picture.coded_width % m or picture.coded_height % m):
            problem = (
                f"{picture.coded_width}x{picture.coded_height} frames are padded to multiples "
                f"of {m} (pad_multiple) on RGB"
            )
        return problem


def packed_size(height: int, width: int) -> int:
    """Bytes of one packed I420 frame."""
    return height * width * 3 // 2


@dataclass(frozen=True)
class YuvInput:
    """What a model graph needs to take a source's packed frames: their size and the
    matrix and range (:class:`PictureFormat`'s names) the RGB path converts with."""

    height: int
    width: int
    matrix: str
    range: str

    @classmethod
    def of(cls, picture: PictureFormat) -> YuvInput:
        return cls(picture.coded_height, picture.coded_width, picture.matrix, picture.range)

    @property
    def packed_size(self) -> int:
        return packed_size(self.height, self.width)

    def to_rgb(self, frames: np.ndarray, allocate: Allocate | None = None) -> np.ndarray:
        """Packed frames ``(n, packed_size)`` to RGB ``(n, H, W, 3)`` on the host, by
        :class:`~raypipe.media.rgb.RgbConverter` as the decode task converts: an actor
        whose model does not run on a GPU converts what it was handed this way.
        ``allocate(shape, dtype)`` makes the output (``np.empty`` by default)."""
        import av

        self.check(frames)
        convert = _rgb_converter(self.matrix, self.range, self.width, self.height)
        out = (allocate or np.empty)((len(frames), self.height, self.width, 3), np.uint8)
        rows = (self.height * 3 // 2, self.width)
        for i, packed in enumerate(frames):
            out[i] = convert(av.VideoFrame.from_ndarray(packed.reshape(rows), format="yuv420p"))
        return out

    def check(self, frames: np.ndarray) -> None:
        """Raise ``ValueError`` unless ``frames`` are packed frames ``(n, packed_size)``."""
        if frames.dtype != np.uint8 or frames.ndim != 2 or frames.shape[1] != self.packed_size:
            raise ValueError(
                f"expected packed YUV frames (n, {self.packed_size}) uint8 of "
                f"{self.width}x{self.height}, got {frames.dtype} {frames.shape}"
            )


class YuvPacker:
    """One chunk's frames as packed I420 rows; one swscale context (for ``nv12``) reused."""

    def __init__(self, picture: PictureFormat) -> None:
        problem = handoff_problem(picture)
        if problem:
            raise ValueError(f"no YUV hand-off for this source: {problem}")
        self._size = packed_size(picture.coded_height, picture.coded_width)
        self._to_planar: Any = None

    def __call__(self, frame: Any) -> np.ndarray:
        if frame.format.name in SEMI_PLANAR_420:
            if self._to_planar is None:
                from av.video.reformatter import VideoReformatter

                self._to_planar = VideoReformatter()
            frame = self._to_planar.reformat(frame, format="yuv420p")
        # PyAV packs a 4:2:0 frame's planes without their line padding: (H * 3 / 2, W)
        packed = frame.to_ndarray().reshape(-1)
        if packed.dtype != np.uint8 or len(packed) != self._size:
            raise ValueError(
                f"a {frame.format.name} frame in a source probed as 8-bit 4:2:0 gave "
                f"{len(packed)} {packed.dtype} samples, not {self._size} uint8"
            )
        return packed


@dataclass(frozen=True, eq=False)
class RgbTables:
    """swscale's YUV -> RGB for one matrix and range, as look-up tables (uint8 values).

    ``r[V * 256 + Y]``, ``b[U * 256 + Y]``; G in two steps: ``g_column[U * 256 + V]`` is
    the start of that pair's column in ``g``, and the value ``g[g_column + Y]``."""

    r: np.ndarray
    b: np.ndarray
    g_column: np.ndarray  # int32
    g: np.ndarray

    def convert(self, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """RGB ``(..., 3)`` uint8 of same-sized int32 Y, U and V planes (chroma upsampled)."""
        return np.stack(
            [self.r[v * 256 + y], self.g[self.g_column[u * 256 + v] + y], self.b[u * 256 + y]],
            axis=-1,
        )


_OFFSETS = ((0, 0), (0, 1), (1, 0), (1, 1))  # a chroma sample's 2x2 luma block


def _rgb_converter(matrix: str, range_: str, width: int, height: int) -> RgbConverter:
    """The decode task's converter for 8-bit 4:2:0 frames of this matrix, range and size."""
    from raypipe.media.rgb import RgbConverter  # PyAV

    tags = ColourTags(matrix=matrix, range=range_)
    return RgbConverter(PictureFormat(coded_width=width, coded_height=height, colour=tags))


def _probe_frame() -> tuple[Any, np.ndarray, np.ndarray]:
    """A 4096x4096 yuv420p frame with every (Y, U, V) once; ``uv`` (U * 256 + V) per
    chroma sample and ``y_base``, which its block's 4 lumas add their offset's index to."""
    import av

    side, half = _PROBE_SIDE, _PROBE_SIDE // 2
    pairs = np.arange(65536, dtype=np.int32).reshape(256, 256)
    uv = np.tile(pairs, (half // 256, half // 256))
    y_base = np.repeat(
        np.repeat(np.arange(0, 256, 4, dtype=np.int32).reshape(8, 8), 256, 0), 256, 1
    )
    y = np.empty((half, 2, half, 2), np.uint8)
    for k, (dy, dx) in enumerate(_OFFSETS):
        y[:, dy, :, dx] = y_base + k
    frame = av.VideoFrame(side, side, "yuv420p")
    for plane, values in zip(frame.planes, (y.reshape(side, side), uv >> 8, uv & 255)):
        rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
        rows[: values.shape[0], : values.shape[1]] = values
    return frame, uv, y_base


@functools.lru_cache(maxsize=8)
def rgb_tables(matrix: str, range_: str) -> RgbTables:
    """swscale's tables for ``matrix`` and ``range_`` (as :class:`PictureFormat` names
    them), read from one conversion by :class:`~raypipe.media.rgb.RgbConverter` (about
    1 s; cached per process). Raises ``RuntimeError`` if swscale's conversion here is not
    such a per-pixel function (every probe pixel is checked)."""
    frame, uv, y_base = _probe_frame()
    out = _rgb_converter(matrix, range_, _PROBE_SIDE, _PROBE_SIDE)(frame)
    u, v = uv >> 8, uv & 255
    r = np.zeros(65536, np.uint8)
    b = np.zeros(65536, np.uint8)
    g_all = np.zeros((65536, 256), np.uint8)  # (U * 256 + V, Y)
    for k, (dy, dx) in enumerate(_OFFSETS):
        px, y = out[dy::2, dx::2], y_base + k
        r[v * 256 + y] = px[..., 0]
        b[u * 256 + y] = px[..., 2]
        g_all[uv, y] = px[..., 1]
    # G's columns (one per (U, V)) are fewer: number them through a hash of each column,
    # then keep one column per number. A hash collision fails the check below.
    words = g_all.view(np.uint64)  # (65536, 32): a column's 256 values as 32 words
    weights = np.random.default_rng(0).integers(1, 2**63, words.shape[1], dtype=np.uint64)
    keys = (words * weights).sum(axis=1, dtype=np.uint64)
    _, first, column_of = np.unique(keys, return_index=True, return_inverse=True)
    tables = RgbTables(
        r=r,
        b=b,
        g_column=column_of.reshape(-1).astype(np.int32) * 256,
        g=np.ascontiguousarray(g_all[first].reshape(-1)),
    )
    for k, (dy, dx) in enumerate(_OFFSETS):  # every pixel of the probe, from the tables
        if not np.array_equal(tables.convert(y_base + k, u, v), out[dy::2, dx::2]):
            raise RuntimeError(
                f"swscale's {matrix}/{range_} YUV -> RGB is not a per-pixel function of "
                "(Y, U, V) here; use --handoff rgb"
            )
    return tables


def packed_to_rgb(packed: np.ndarray, height: int, width: int, tables: RgbTables) -> np.ndarray:
    """Packed I420 frames ``(n, H * W * 3 / 2)`` to RGB ``(n, H, W, 3)`` with ``tables``,
    in numpy: what the graph computes, for checks."""
    n, size, quarter = len(packed), height * width, height * width // 4
    y = packed[:, :size].reshape(n, height, width).astype(np.int32)
    up = np.ones((1, 2, 2), np.int32)
    u = np.kron(packed[:, size : size + quarter].reshape(n, height // 2, width // 2), up)
    v = np.kron(packed[:, size + quarter :].reshape(n, height // 2, width // 2), up)
    return tables.convert(y, u.astype(np.int32), v.astype(np.int32))
