"""Pixel formats: a format's bit depth and chroma subsampling, and the output pixel format
raypipe picks for an encoder when the user names none.

The default output format follows the source: ``yuv420p10le`` stays 10-bit 4:2:0,
``yuv444p`` stays 4:4:4, RGB stays RGB where the encoder has it. When the encoder cannot
write that, :func:`choose_pix_fmt` takes the nearest format it can, in this order of what
matters: keep the bit depth (HDR needs it), keep the chroma resolution, keep YUV vs RGB,
then add as little as possible; and it says in one line what was chosen instead. Range is
not part of the format (``yuvj*`` formats are deprecated): full range is a tag.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import av

from raypipe.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class PixelLayout:
    """What a pixel format keeps: bits per sample, chroma subsampling, RGB or YUV."""

    bit_depth: int
    chroma: str  # "4:2:0", "4:2:2", "4:4:4", "4:4:0", "4:1:1", "4:1:0", or "gray"
    rgb: bool

    @property
    def subsampling(self) -> tuple[int, int]:
        """(horizontal, vertical) chroma subsampling factors; (1, 1) for RGB and 4:4:4."""
        return _SUBSAMPLING.get(self.chroma, (1, 1))

    def describe(self) -> str:
        """E.g. ``10-bit 4:2:0`` or ``8-bit RGB``."""
        return f"{self.bit_depth}-bit {'RGB' if self.rgb else self.chroma}"


_CHROMA = {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0", (1, 2): "4:4:0",
           (4, 1): "4:1:1", (4, 4): "4:1:0"}  # fmt: skip
_SUBSAMPLING = {v: k for k, v in _CHROMA.items()}


@functools.lru_cache(maxsize=256)
def layout_of(pix_fmt: str) -> PixelLayout:
    """The :class:`PixelLayout` of an FFmpeg pixel format name."""
    try:
        fmt = av.VideoFormat(pix_fmt, 16, 16)
    except (ValueError, av.error.FFmpegError) as e:
        raise ConfigError(f"unknown pixel format {pix_fmt!r}; try e.g. yuv420p") from e
    comps = [c for c in fmt.components if not c.is_alpha]
    if not comps:
        raise ConfigError(f"pixel format {pix_fmt!r} has no colour components (a hardware format?)")
    depth = max(c.bits for c in comps)
    if fmt.has_palette:  # one component, the index into 8-bit RGB colours: not gray (a
        return PixelLayout(bit_depth=8, chroma="4:4:4", rgb=True)  # palette PNG's; a sweep)
    if fmt.is_rgb:
        return PixelLayout(bit_depth=depth, chroma="4:4:4", rgb=True)
    if len(comps) == 1:
        return PixelLayout(bit_depth=depth, chroma="gray", rgb=False)
    factors = (16 // max(1, fmt.chroma_width(16)), 16 // max(1, fmt.chroma_height(16)))
    return PixelLayout(bit_depth=depth, chroma=_CHROMA.get(factors, "4:2:0"), rgb=False)


@functools.lru_cache(maxsize=256)
def has_alpha(pix_fmt: str) -> bool:
    """Whether the FFmpeg pixel format ``pix_fmt`` has an alpha (transparency) component
    (``yuva444p12le``, ``rgba``...); ``False`` for a name FFmpeg does not know."""
    try:
        return any(c.is_alpha for c in av.VideoFormat(pix_fmt, 16, 16).components)
    except (ValueError, av.error.FFmpegError):
        return False


_MAX_DEPTH = {"h264_nvenc": 8}
"""Encoders that list deeper formats than they can encode on most hardware (H.264 10-bit
NVENC needs a Blackwell GPU)."""
_PREFERRED = {"libx264rgb": "rgb24"}
"""An encoder's own first choice among equally good formats."""


def _usable(name: str, codec: str) -> bool:
    if name.startswith("yuvj") or name.endswith("be") or name in ("cuda", "vaapi", "qsv"):
        return False
    try:
        fmt = av.VideoFormat(name, 16, 16)
    except (ValueError, av.error.FFmpegError):
        return False
    comps = fmt.components
    if not comps or any(c.is_alpha for c in comps) or fmt.has_palette or fmt.is_bayer:
        return False
    layout = layout_of(name)
    return layout.chroma != "gray" and layout.bit_depth <= _MAX_DEPTH.get(codec, 16)


@functools.cache
def encoder_video_formats(codec: str) -> tuple[str, ...]:
    """Every pixel format the encoder ``codec`` takes, in its order (none where this build
    lacks it or it does not say)."""
    try:
        return tuple(f.name for f in av.codec.Codec(codec, "w").video_formats or ())
    except (av.error.FFmpegError, ValueError):
        return ()


def encoder_formats(codec: str) -> list[str]:
    """The pixel formats of ``codec`` raypipe may choose, in the encoder's order."""
    return [name for name in encoder_video_formats(codec) if _usable(name, codec)]


def choose_pix_fmt(source_pix_fmt: str | None, codec: str) -> tuple[str, str]:
    """The output pixel format for a source in ``source_pix_fmt`` encoded with ``codec``,
    and a one-line note when it keeps less than the source (``""`` when it keeps all).

    A gray source counts as 4:2:0 (a model may give it colour). An unknown encoder or
    source format gives ``yuv420p``."""
    wanted = layout_of(source_pix_fmt) if source_pix_fmt else None
    if wanted is not None and wanted.chroma == "gray":
        wanted = PixelLayout(bit_depth=wanted.bit_depth, chroma="4:2:0", rgb=False)
    candidates = encoder_formats(codec)
    if wanted is None or not candidates:
        return ("yuv420p" if not candidates or "yuv420p" in candidates else candidates[0]), ""
    want_h, want_v = wanted.subsampling
    preferred = _PREFERRED.get(codec)

    def cost(item: tuple[int, str]) -> tuple[int, ...]:
        index, name = item
        got = layout_of(name)
        h, v = got.subsampling
        return (
            max(0, wanted.bit_depth - got.bit_depth),  # depth lost
            int(h > want_h or v > want_v),  # chroma resolution lost
            int(got.rgb != wanted.rgb),
            max(0, got.bit_depth - wanted.bit_depth),  # depth added
            (want_h * want_v) // (h * v),  # chroma resolution added
            int(name != preferred),
            index,
        )

    chosen = min(enumerate(candidates), key=cost)[1]
    got = layout_of(chosen)
    h, v = got.subsampling
    if got.bit_depth < wanted.bit_depth or h > want_h or v > want_v:
        note = (
            f"encoder {codec} cannot write the source's {layout_of(source_pix_fmt).describe()} "
            f"({source_pix_fmt}); writing {chosen} ({got.describe()}) instead"
        )
        return chosen, note
    return chosen, ""
