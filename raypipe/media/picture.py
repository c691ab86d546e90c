"""What a source's pictures are, beyond their pixels: the facts decode and encode need to
give models upright RGB and to write an output that displays like the source.

:class:`PictureFormat` is plain data (probe makes it; chunk rows carry it as JSON):
coded size, display rotation, sample aspect ratio, pixel format (bit depth, chroma),
colour tags and HDR10 metadata.

Rotation: models see frames upright, as displayed, and the output is written upright
with no rotation tag. TS and AVI outputs cannot carry a display matrix at all, so this is
the one choice that displays right in every output container raypipe writes; a player
that ignores rotation tags shows it right too. The source's coded size is then the
output's displayed size turned by the rotation (a 1920x1080 phone video tagged 90
degrees comes out 1080x1920 with no tag). A display matrix may also mirror the picture
(left to right, or top to bottom, which is a left-to-right mirror and a half turn): the
frames are then mirrored as well, as FFmpeg's own transcode (``autorotate``) and players
show them (:func:`orientation_of`).

Bit depth: sources deeper than 8 bits decode to 16-bit RGB (``rgb48le``, uint16 frames)
and stay at 16 bits through the model to the encoder; 8-bit sources use ``rgb24`` (uint8).

Chroma: YUV -> RGB replicates each chroma sample over the luma samples it covers, and
RGB -> YUV takes the chroma sample at its position (swscale's point interpolation), so an
identity model gives the source's samples back (within one code value at 16 bits) instead
of softening the chroma with every pass, and the conversion is the fastest swscale has.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from raypipe.media.colour import (
    ColourTags,
    HdrMetadata,
    conversion_matrix,
    conversion_range,
)
from raypipe.media.pixfmt import has_alpha, layout_of

LIMITED_ONLY = frozenset({"prores_ks", "prores_aw", "prores"})
"""Encoders whose video has no full range: ProRes (neither its bitstream nor MOV's colour
atom for it says full range, and decoders read it limited)."""
MATRICES_HELD = {"dnxhd": frozenset({"bt709", "bt2020nc"})}
"""Encoders whose video says only some colour matrices: DNxHR's header has room for BT.709
and BT.2020 alone, and FFmpeg's decoder reads any other as BT.709 whatever the container
says (a standard-definition source's BT.601 samples were shown with BT.709's, their colours
shifted; a sweep). Other matrices are converted to BT.709 for them."""


@dataclass(frozen=True, kw_only=True)
class PictureFormat:
    """A video stream's picture facts; see the module docstring.

    ``rotation_degrees``: counter-clockwise, a multiple of 90 in [0, 360), and
    ``mirrored``: whether the coded frame is mirrored left to right before that rotation,
    as the source's display matrix says (:func:`orientation_of`; for a matrix with no
    mirror ffprobe prints the same rotation, in (-180, 180]). ``sar``: sample aspect ratio
    ``(num, den)``, ``(0, 1)`` when unknown. ``pix_fmt``: the decoder's output format.
    ``interlaced``: the decoder flags the first frame interlaced (two fields woven), and
    every frame's chroma is converted field by field (:mod:`raypipe.media.fields`).
    ``opaque_gif``: a GIF whose first frame is opaque all over. FFmpeg decodes every GIF
    with an alpha component (``bgra``), used or not; a GIF with a transparent background
    shows it in its first frame. ``stereo``: both eyes' views in each picture (3D), as
    Matroska's StereoMode names the layout (``left_right``, ``top_bottom``...), read from
    a Matroska stream's tag or the first frame's side data (MP4's ``st3d``, H.264's frame
    packing SEI). ``projection``: a 360° video's spherical mapping (MP4's ``sv3d``,
    Matroska's Projection), as FFmpeg names it.
    """

    coded_width: int
    coded_height: int
    pix_fmt: str = "yuv420p"
    rotation_degrees: int = 0
    mirrored: bool = False
    sar: tuple[int, int] = (0, 1)
    colour: ColourTags = field(default_factory=ColourTags)
    hdr: HdrMetadata | None = None
    interlaced: bool = False  # the first frame's fields woven: converted apart (media/fields.py)
    opaque_gif: bool = False
    stereo: str = ""  # stereo 3D layout, as Matroska's StereoMode names it; "" for one view
    projection: str = ""  # a 360° video's spherical projection ("equirectangular"...); ""

    def __post_init__(self) -> None:
        if self.coded_width < 1 or self.coded_height < 1:
            raise ValueError(
                f"coded size must be positive, got {self.coded_width}x{self.coded_height}"
            )
        object.__setattr__(self, "rotation_degrees", normalise_rotation(self.rotation_degrees))
        object.__setattr__(self, "sar", (int(self.sar[0]), int(self.sar[1])))

    @property
    def bit_depth(self) -> int:
        return layout_of(self.pix_fmt).bit_depth

    @property
    def chroma(self) -> str:
        """``4:2:0``, ``4:2:2``, ``4:4:4``... (RGB sources count as ``4:4:4``)."""
        return layout_of(self.pix_fmt).chroma

    @property
    def alpha(self) -> bool:
        """Whether the source has an alpha component that outputs leave out (not an opaque
        GIF's)."""
        return has_alpha(self.pix_fmt) and not self.opaque_gif

    @property
    def rgb_format(self) -> str:
        """The RGB format frames travel in: ``rgb48le`` above 8 bits, else ``rgb24``."""
        return "rgb48le" if self.bit_depth > 8 else "rgb24"

    @property
    def dtype(self) -> np.dtype[Any]:
        return np.dtype(np.uint16 if self.bit_depth > 8 else np.uint8)

    @property
    def quarter_turns(self) -> int:
        """Counter-clockwise quarter turns that make a coded frame upright."""
        return self.rotation_degrees // 90

    @property
    def upright_size(self) -> tuple[int, int]:
        """(width, height) px of the frames models see and the output shows."""
        if self.quarter_turns % 2:
            return self.coded_height, self.coded_width
        return self.coded_width, self.coded_height

    @property
    def upright_sar(self) -> Fraction | None:
        """The sample aspect ratio of upright frames (inverted by a quarter turn)."""
        num, den = self.sar
        if not num or not den:
            return None
        return Fraction(den, num) if self.quarter_turns % 2 else Fraction(num, den)

    @property
    def matrix(self) -> str:
        """The YUV matrix decode and encode convert with (:func:`conversion_matrix`)."""
        return conversion_matrix(self.colour, self.coded_width, self.coded_height)

    @property
    def range(self) -> str:
        """``tv`` or ``pc``: the YUV range decode and encode convert with."""
        return conversion_range(self.colour, self.pix_fmt)

    def output_sar(self, width: int, height: int) -> Fraction | None:
        """The sample aspect ratio of ``width`` x ``height`` output frames made from upright
        ones: the source's where the model kept the picture's shape (a whole-number scale),
        else the one that keeps its display aspect, as FFmpeg's ``scale`` filter does (a
        model that doubled the width alone played twice as wide)."""
        src_w, src_h = self.upright_size
        sar = self.upright_sar
        if width * src_h == height * src_w:
            return sar
        return (sar or Fraction(1)) * Fraction(src_w * height, src_h * width)

    def describe_orientation(self) -> str:
        """``rotation 90° counter-clockwise``, ``mirrored left to right``, ``mirrored left to
        right, then rotated 90° counter-clockwise``: what is done to show it upright."""
        if not self.mirrored:
            return f"rotation {self.rotation_degrees}° counter-clockwise"
        if not self.rotation_degrees:
            return "mirrored left to right"
        return f"mirrored left to right, then rotated {self.rotation_degrees}° counter-clockwise"

    def upright(self, rgb: np.ndarray) -> np.ndarray:
        """A coded ``(H, W, 3)`` frame turned upright (a view, no copy)."""
        return turned_upright(rgb, self.rotation_degrees, self.mirrored)

    def output_tags(self, pix_fmt: str, codec: str = "") -> ColourTags:
        """The colour tags of an output written in ``pix_fmt`` by ``codec``: the source's
        primaries and transfer; the matrix and range encoded with (``gbr`` for RGB
        outputs). A codec that holds limited range only (ProRes: :data:`LIMITED_ONLY`)
        gets a full-range source converted to limited, as ``ffmpeg`` converts it: its
        full-range samples were read as limited, every grey shifted (64 shown as 54) and
        blacks and whites clipped (a sweep). One that says only some matrices
        (:data:`MATRICES_HELD`) gets the others converted to BT.709."""
        if layout_of(pix_fmt).rgb:
            return ColourTags(
                primaries=self.colour.primaries, transfer=self.colour.transfer, matrix="gbr"
            )
        held = MATRICES_HELD.get(codec, frozenset({self.matrix}))
        return ColourTags(
            primaries=self.colour.primaries,
            transfer=self.colour.transfer,
            matrix=self.matrix if self.matrix in held else "bt709",
            range="tv" if codec in LIMITED_ONLY else self.range,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "coded_width": self.coded_width,
            "coded_height": self.coded_height,
            "pix_fmt": self.pix_fmt,
            "rotation_degrees": self.rotation_degrees,
            "mirrored": self.mirrored,
            "sar": list(self.sar),
            "colour": self.colour.to_dict(),
            "hdr": None if self.hdr is None else self.hdr.to_dict(),
            "bit_depth": self.bit_depth,
            "chroma": self.chroma,
            "interlaced": self.interlaced,
            # only where set, so every other video's picture (and resume key) stays as it was
            **({"opaque_gif": True} if self.opaque_gif else {}),
            **({"stereo": self.stereo} if self.stereo else {}),
            **({"projection": self.projection} if self.projection else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PictureFormat:
        return cls(
            coded_width=int(d["coded_width"]),
            coded_height=int(d["coded_height"]),
            pix_fmt=str(d["pix_fmt"]),
            rotation_degrees=int(d["rotation_degrees"]),
            mirrored=bool(d.get("mirrored", False)),
            sar=(int(d["sar"][0]), int(d["sar"][1])),
            colour=ColourTags(**d["colour"]),
            hdr=None if d.get("hdr") is None else HdrMetadata.from_dict(d["hdr"]),
            interlaced=bool(d.get("interlaced", False)),
            opaque_gif=bool(d.get("opaque_gif", False)),
            stereo=str(d.get("stereo", "")),
            projection=str(d.get("projection", "")),
        )

    @classmethod
    def from_json(cls, text: str) -> PictureFormat:
        return cls.from_dict(json.loads(text))


def turned_upright(rgb: np.ndarray, rotation_degrees: int, mirrored: bool) -> np.ndarray:
    """A coded ``(H, W, 3)`` frame as shown: mirrored left to right (``mirrored``), then
    turned ``rotation_degrees`` counter-clockwise (:func:`orientation_of`); a view, no copy."""
    if mirrored:
        rgb = rgb[:, ::-1]
    turns = rotation_degrees // 90 % 4
    return np.rot90(rgb, turns) if turns else rgb


def orientation_of(matrix: Any) -> tuple[int, bool]:
    """``(rotation_degrees, mirrored)`` of a display matrix: FFmpeg's 9 int32 of
    ``AV_FRAME_DATA_DISPLAYMATRIX`` (16.16 fixed point, row vectors: a coded point
    ``(x, y)`` is shown at ``(x*m[0] + y*m[3], x*m[1] + y*m[4])``).

    A matrix whose determinant is negative mirrors the picture; taken apart as a
    left-to-right mirror of the coded frame (``m[0]`` and ``m[1]`` negated) followed by a
    rotation, the counter-clockwise degrees FFmpeg's ``av_display_rotation_get`` gives for
    the rest, to the nearest quarter turn. This is what FFmpeg's transcode does to such a
    source (``autorotate``: ``hflip``, ``vflip``, ``transpose`` with a flip), checked for all
    eight in tests/media/test_picture_formats.py against ``ffmpeg`` itself."""
    m = [float(v) for v in matrix]
    mirrored = m[0] * m[4] - m[1] * m[3] < 0
    if mirrored:
        m[0], m[1] = -m[0], -m[1]
    if not (m[0] or m[3]) or not (m[1] or m[4]):
        return 0, False  # degenerate: FFmpeg finds no rotation in it either
    # as av_display_rotation_get computes it (each column scaled to length 1)
    degrees = -math.degrees(
        math.atan2(m[1] / math.hypot(m[1], m[4]), m[0] / math.hypot(m[0], m[3]))
    )
    return normalise_rotation(degrees), mirrored


def normalise_rotation(degrees: float) -> int:
    """``degrees`` (any sign) as a counter-clockwise multiple of 90 in [0, 360)."""
    return (int(round(degrees / 90.0)) % 4) * 90
