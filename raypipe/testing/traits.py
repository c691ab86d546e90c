"""Clips with the traits real videos have and a processed video must keep (fidelity):
rotation, a mirror, colour tags, full range, 4:4:4, 10-bit HDR10 and HLG, several languages, audio
starting before or after the video (edit lists), cover art, a single frame, an untagged
HD picture, container tags (a phone's creation time, location, make and model, as an
iPhone's QuickTime keys and as Android's location), chapters,
a timecode, a field order, a video stream's language and title, a font attachment.

Each is a small :class:`~raypipe.testing.ClipSpec` with the container it is written in;
write one with :func:`make_trait_clip`. Traits are combined (eight clips cover them all),
which keeps a trait x container x settings test matrix small.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

from raypipe.testing.media import ClipSpec, make_clip

__all__ = ["TRAIT_CLIPS", "make_trait_clip", "trait_names"]

_SMALL: dict[str, Any] = {"n_frames": 12, "gop": 6, "width": 96, "height": 64}
_BT709 = ("bt709", "bt709", "bt709", "tv")
_HDR10 = ("bt2020", "smpte2084", "bt2020nc", "tv")
_HLG = ("bt2020", "arib-std-b67", "bt2020nc", "tv")
_IPHONE_TAGS = (  # as an iPhone writes them: QuickTime metadata keys, and the movie's time
    ("creation_time", "2024-05-01T10:00:00.000000Z"),
    ("com.apple.quicktime.creationdate", "2024-05-01T12:00:00+0200"),
    ("com.apple.quicktime.location.ISO6709", "+48.8583+002.2944+035.000/"),
    ("com.apple.quicktime.make", "Apple"),
    ("com.apple.quicktime.model", "iPhone 15 Pro"),
    ("com.apple.quicktime.software", "17.4"),
)

TRAIT_CLIPS: dict[str, tuple[ClipSpec, str]] = {
    # a 90-degree display matrix, BT.709 tags, two audio languages and forced subtitles, a
    # location, a title and a start timecode (a tmcd track)
    "rotated_languages": (
        ClipSpec(
            rotation_degrees=90,
            colour=_BT709,
            audio="aac",
            audio_languages=("eng", "fra"),
            subtitles=True,
            subtitle_language="deu",
            tags=(  # an Android phone's location (©xyz), a title
                ("location", "+35.6586+139.7454/"),
                ("title", "Interview, take 2"),
            ),
            timecode="01:02:03:04",
            **_SMALL,
        ),
        ".mp4",
    ),
    # what phones record: HEVC Main10 HLG, BT.2020, rotated for portrait, in MOV, with audio
    # and the recording's creation time, location, make and model
    "phone_hlg": (
        ClipSpec(
            codec="libx265",
            pix_fmt="yuv420p10le",
            colour=_HLG,
            rotation_degrees=270,
            audio="aac",
            tags=_IPHONE_TAGS,
            **_SMALL,
        ),
        ".mov",
    ),
    # 10-bit PQ with mastering display and content light level metadata
    "hdr10": (
        ClipSpec(codec="libx265", pix_fmt="yuv420p10le", colour=_HDR10, hdr10=True, **_SMALL),
        ".mp4",
    ),
    # full range, 4:4:4, BT.2020 tags (SDR), a field order (top first), a tag of its own,
    # two chapters, a video stream with a language and title and a font attachment, in
    # Matroska
    "full_range_444": (
        ClipSpec(
            pix_fmt="yuv444p",
            colour=("bt2020", "bt2020-10", "bt2020nc", "pc"),
            field_order="tt",
            tags=(("DESCRIPTION", "scanned from tape"),),
            video_tags=(("language", "jpn"), ("title", "Camera A")),
            chapters=((0.0, 0.2, "Opening"), (0.2, 0.48, "Scene 2")),
            font=True,
            **_SMALL,
        ),
        ".mkv",
    ),
    # audio 0.2 s before the video (the video's edit list starts late), and cover art
    "audio_early_cover": (
        ClipSpec(audio="aac", audio_offset_seconds=-0.2, cover_art=True, **_SMALL),
        ".mp4",
    ),
    # audio 0.3 s after the video (the audio's edit list starts late), and a display matrix
    # that mirrors the picture left to right (ffprobe reads it as a half turn, -180)
    "audio_late": (
        ClipSpec(audio="aac", audio_offset_seconds=0.3, mirrored=True, **_SMALL),
        ".mp4",
    ),
    "one_frame": (ClipSpec(n_frames=1, gop=1, bframes=0, audio="aac", width=96, height=64), ".mp4"),
    # untagged and HD by the size rule (1280 px wide; kept short so it stays cheap):
    # converted as BT.709, not swscale's BT.601
    "untagged_hd": (ClipSpec(n_frames=4, gop=4, bframes=0, width=1280, height=64), ".mp4"),
}
"""Trait name -> (clip, container suffix)."""


def trait_names() -> list[str]:
    """Names of :data:`TRAIT_CLIPS`, sorted (handy for ``pytest.mark.parametrize``)."""
    return sorted(TRAIT_CLIPS)


def make_trait_clip(name: str, directory: str | os.PathLike[str]) -> pathlib.Path:
    """Write ``TRAIT_CLIPS[name]`` to ``directory/{name}{suffix}``."""
    if name not in TRAIT_CLIPS:
        raise ValueError(f"unknown trait clip {name!r}: expected one of {trait_names()}")
    spec, suffix = TRAIT_CLIPS[name]
    return make_clip(pathlib.Path(directory) / f"{name}{suffix}", spec)
