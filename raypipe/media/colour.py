"""Colour facts: the four colour tags, the YUV matrix and range raypipe converts with, HDR
static metadata.

Tags are FFmpeg's names, as ``ffprobe`` prints them (``color_primaries``,
``color_transfer``, ``color_space``, ``color_range``); ``"unknown"`` means untagged.

YUV <-> RGB conversion (decode and encode) uses the source's matrix and range, never
swscale's default (BT.601 whatever the tags say). An untagged matrix follows the size
rule players use (mpv, VLC, browsers; FFmpeg's own swscale has none and takes BT.601):
**BT.709 when the coded width is at least 1280 px or the coded height above 576 px,
BT.601 otherwise** (:func:`default_matrix`); an untagged range is limited (``tv``) unless
the pixel format is a full-range ``yuvj*`` one. The output is tagged with the matrix and
range it was encoded with, so a player never has to guess (a 2x upscale of an SD video is
HD-sized, and would be guessed BT.709).

Transfer and primaries are tags only: code values are not converted (no tone mapping), so
a PQ or HLG source reaches the model as its own signal and leaves with the same tags.

HDR10 static metadata (:class:`HdrMetadata`: mastering display colour volume, content light
level) is read from the first decoded frame's side data (SEI, or the container's boxes
that FFmpeg attaches to frames) and written back as the encoder's own SEI/metadata
parameters where the encoder has them (:func:`hdr_encoder_options`).
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass
from typing import Any, cast

from av.video.reformatter import ColorRange, Colorspace

from raypipe.errors import ConfigError

PRIMARIES: dict[int, str] = {
    1: "bt709", 2: "unknown", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
    8: "film", 9: "bt2020", 10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "ebu3213",
}  # fmt: skip
"""FFmpeg's ``AVColorPrimaries`` values and names."""
TRANSFERS: dict[int, str] = {
    1: "bt709", 2: "unknown", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
    8: "linear", 9: "log100", 10: "log316", 11: "iec61966-2-4", 12: "bt1361e",
    13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084", 17: "smpte428",
    18: "arib-std-b67",
}  # fmt: skip
"""FFmpeg's ``AVColorTransferCharacteristic`` values and names."""
MATRICES: dict[int, str] = {
    0: "gbr", 1: "bt709", 2: "unknown", 4: "fcc", 5: "bt470bg", 6: "smpte170m",
    7: "smpte240m", 8: "ycgco", 9: "bt2020nc", 10: "bt2020c", 11: "smpte2085",
    12: "chroma-derived-nc", 13: "chroma-derived-c", 14: "ictcp",
}  # fmt: skip
"""FFmpeg's ``AVColorSpace`` (matrix coefficients) values and names."""
RANGES: dict[int, str] = {0: "unknown", 1: "tv", 2: "pc"}
"""FFmpeg's ``AVColorRange`` values and names: ``tv`` limited, ``pc`` full."""

_SWS_MATRIX = {  # matrix tag -> PyAV/swscale Colorspace name
    "bt709": "ITU709",
    "fcc": "FCC",
    "bt470bg": "ITU601",
    "smpte170m": "ITU601",
    "smpte240m": "SMPTE240M",
    "bt2020nc": "BT2020",
    "bt2020c": "BT2020",  # swscale has no constant-luminance path; the NCL matrix is closest
}
HD_MIN_WIDTH = 1280
"""Untagged sources at least this wide (px) are taken as BT.709 (:func:`default_matrix`)."""
SD_MAX_HEIGHT = 576
"""Untagged sources taller than this (px) are taken as BT.709 (:func:`default_matrix`)."""


def _name(table: dict[int, str], value: int | None) -> str:
    return "unknown" if value is None else table.get(int(value), "unknown")


@dataclass(frozen=True, kw_only=True)
class ColourTags:
    """A stream's colour tags, FFmpeg's names (``"unknown"``: untagged)."""

    primaries: str = "unknown"
    transfer: str = "unknown"
    matrix: str = "unknown"
    range: str = "unknown"

    def __post_init__(self) -> None:
        for field, table in (
            ("primaries", PRIMARIES),
            ("transfer", TRANSFERS),
            ("matrix", MATRICES),
            ("range", RANGES),
        ):
            value = getattr(self, field)
            if value not in table.values():
                raise ConfigError(
                    f"colour {field} {value!r} is not one FFmpeg names; expected one of "
                    f"{', '.join(sorted(set(table.values())))}"
                )

    @classmethod
    def of(cls, obj: Any) -> ColourTags:
        """The tags of a PyAV frame or codec context (``color_primaries``, ``color_trc``,
        ``colorspace``, ``color_range``)."""
        return cls(
            primaries=_name(PRIMARIES, obj.color_primaries),
            transfer=_name(TRANSFERS, obj.color_trc),
            matrix=_name(MATRICES, obj.colorspace),
            range=_name(RANGES, obj.color_range),
        )

    def apply(self, ctx: Any) -> None:
        """Set these tags on a PyAV codec context or frame (``"unknown"`` ones as unset)."""
        ctx.color_primaries = _value(PRIMARIES, self.primaries)
        ctx.color_trc = _value(TRANSFERS, self.transfer)
        ctx.colorspace = _value(MATRICES, self.matrix)
        ctx.color_range = _value(RANGES, self.range)

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _value(table: dict[int, str], name: str) -> int:
    return next(k for k, v in table.items() if v == name)


def default_matrix(width: int, height: int) -> str:
    """The matrix of an untagged ``width`` x ``height`` px (coded) video: ``bt709`` for HD
    (width >= 1280 or height > 576), ``smpte170m`` (BT.601) otherwise."""
    return "bt709" if width >= HD_MIN_WIDTH or height > SD_MAX_HEIGHT else "smpte170m"


def conversion_matrix(tags: ColourTags, width: int, height: int) -> str:
    """The matrix tag raypipe converts YUV <-> RGB with: the source's when swscale has it,
    else :func:`default_matrix` (untagged, and the rare ``ycgco``/``ictcp``)."""
    return tags.matrix if tags.matrix in _SWS_MATRIX else default_matrix(width, height)


def conversion_range(tags: ColourTags, pix_fmt: str | None) -> str:
    """``pc`` (full) or ``tv`` (limited): the source's tag, else full only for ``yuvj*``."""
    if tags.range in ("tv", "pc"):
        return tags.range
    return "pc" if (pix_fmt or "").startswith("yuvj") else "tv"


def sws_colorspace(matrix: str) -> Colorspace:
    """PyAV's ``Colorspace`` for a matrix tag :func:`conversion_matrix` returned."""
    return Colorspace[_SWS_MATRIX[matrix]]


def sws_range(range_: str) -> ColorRange:
    """PyAV's ``ColorRange`` for ``tv``/``pc``."""
    return ColorRange.JPEG if range_ == "pc" else ColorRange.MPEG


# --- HDR static metadata -------------------------------------------------------------------

_CHROMA_UNITS = 50000  # HEVC/AVC SEI: chromaticity in units of 0.00002
_LUMA_UNITS = 10000  # HEVC/AVC SEI: luminance in units of 0.0001 cd/m2


@dataclass(frozen=True, kw_only=True)
class HdrMetadata:
    """HDR10 static metadata, in the units of the HEVC/AVC SEI messages.

    Mastering display (SMPTE ST 2086): ``red``/``green``/``blue``/``white`` are (x, y)
    chromaticities in units of 0.00002, ``max_luminance``/``min_luminance`` in 0.0001
    cd/m2; ``None`` when absent. Content light level (CTA-861.3): ``max_cll`` and
    ``max_fall`` in cd/m2, ``None`` when absent.
    """

    red: tuple[int, int] | None = None
    green: tuple[int, int] | None = None
    blue: tuple[int, int] | None = None
    white: tuple[int, int] | None = None
    max_luminance: int | None = None
    min_luminance: int | None = None
    max_cll: int | None = None
    max_fall: int | None = None

    @property
    def has_mastering(self) -> bool:
        return None not in (self.red, self.green, self.blue, self.white) and (
            self.max_luminance is not None and self.min_luminance is not None
        )

    @property
    def has_light_level(self) -> bool:
        return self.max_cll is not None and self.max_fall is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HdrMetadata:
        def pair(key: str) -> tuple[int, int] | None:
            v = d.get(key)
            return None if v is None else (int(v[0]), int(v[1]))

        def number(key: str) -> int | None:
            v = d.get(key)
            return None if v is None else int(v)

        return cls(
            red=pair("red"),
            green=pair("green"),
            blue=pair("blue"),
            white=pair("white"),
            max_luminance=number("max_luminance"),
            min_luminance=number("min_luminance"),
            max_cll=number("max_cll"),
            max_fall=number("max_fall"),
        )


def frame_side_data(frame: Any) -> list[Any]:
    """A decoded PyAV frame's side data (``av.sidedata.SideData``), whichever way this
    PyAV iterates them: 18.1.0 gives the side data themselves, 18.1.1 their types, as a
    mapping's keys (every probe failed on "cannot convert 'Type' object to bytes" once a
    fresh install took 18.1.1)."""
    from av.sidedata.sidedata import Type

    container = cast(Any, frame.side_data)
    return [container[item] if isinstance(item, Type) else item for item in container]


def hdr_of_frame(frame: Any) -> HdrMetadata | None:
    """The HDR10 static metadata a decoded PyAV frame carries as side data, or ``None``."""
    from av.sidedata.sidedata import Type

    fields: dict[str, Any] = {}
    for side in frame_side_data(frame):
        data = bytes(side)
        if side.type == Type.MASTERING_DISPLAY_METADATA and len(data) >= 88:
            # AVMasteringDisplayMetadata: AVRational display_primaries[3][2] (R, G, B),
            # white_point[2], min_luminance, max_luminance; int has_primaries, has_luminance
            v = struct.unpack_from("<20i2i", data)
            chroma = [_units(v[2 * i], v[2 * i + 1], _CHROMA_UNITS) for i in range(8)]
            if v[20]:
                pairs = [(chroma[i], chroma[i + 1]) for i in range(0, 8, 2)]
                fields.update(zip(("red", "green", "blue", "white"), pairs))
            if v[21]:
                fields["min_luminance"] = _units(v[16], v[17], _LUMA_UNITS)
                fields["max_luminance"] = _units(v[18], v[19], _LUMA_UNITS)
        elif side.type == Type.CONTENT_LIGHT_LEVEL and len(data) >= 8:
            fields["max_cll"], fields["max_fall"] = struct.unpack_from("<2I", data)
    return HdrMetadata.from_dict(fields) if fields else None


def _units(num: int, den: int, units: int) -> int:
    return round(num * units / den) if den else 0


def _x26x_display(hdr: HdrMetadata) -> str:
    """``G(x,y)B(x,y)R(x,y)WP(x,y)L(max,min)`` in SEI units, as x264 and x265 take it."""
    g, b, r, w = hdr.green, hdr.blue, hdr.red, hdr.white
    assert g and b and r and w  # has_mastering
    return (
        f"G({g[0]},{g[1]})B({b[0]},{b[1]})R({r[0]},{r[1]})WP({w[0]},{w[1]})"
        f"L({hdr.max_luminance},{hdr.min_luminance})"
    )


def _svt_display(hdr: HdrMetadata) -> str:
    """The same in SVT-AV1's notation: chromaticities and cd/m2 as decimals."""
    g, b, r, w = hdr.green, hdr.blue, hdr.red, hdr.white
    assert g and b and r and w and hdr.max_luminance is not None  # has_mastering
    assert hdr.min_luminance is not None

    def xy(p: tuple[int, int]) -> str:
        return f"({p[0] / _CHROMA_UNITS:g},{p[1] / _CHROMA_UNITS:g})"

    luma = f"L({hdr.max_luminance / _LUMA_UNITS:g},{hdr.min_luminance / _LUMA_UNITS:g})"
    return f"G{xy(g)}B{xy(b)}R{xy(r)}WP{xy(w)}{luma}"


_HDR_PARAMS = {  # encoder -> (its parameter option, mastering key, light level key, display)
    "libx265": ("x265-params", "master-display", "max-cll", _x26x_display),
    "libx264": ("x264-params", "mastering-display", "cll", _x26x_display),
    "libsvtav1": ("svtav1-params", "mastering-display", "content-light", _svt_display),
}
HDR_ENCODERS: tuple[str, ...] = tuple(_HDR_PARAMS)
"""Encoders :func:`hdr_encoder_options` writes HDR10 static metadata for."""


def hdr_encoder_options(codec: str, hdr: HdrMetadata | None) -> dict[str, str]:
    """Encoder options that write ``hdr`` into the bitstream (SEI / metadata OBUs): for
    ``libx265`` (``x265-params``), ``libx264`` (``x264-params``) and ``libsvtav1``
    (``svtav1-params``); ``{}`` for other encoders or without metadata."""
    if hdr is None or codec not in _HDR_PARAMS:
        return {}
    option, display_key, light_key, display = _HDR_PARAMS[codec]
    params = []
    if hdr.has_mastering:
        params.append(f"{display_key}={display(hdr)}")
    if hdr.has_light_level:
        params.append(f"{light_key}={hdr.max_cll},{hdr.max_fall}")
    return {option: ":".join(params)} if params else {}
