"""Fidelity in-process (no Ray): a processed video shows everything its source shows, for
every trait clip in MP4, MOV and MKV at default settings and with a lossless codec, and
once in TS, AVI, WebM and NUT with audio (issue 11). ffprobe is the judge."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import LOSSLESS
from pipeline_checks import LOSSLESS_10BIT, assert_fidelity, run_in_process

from raypipe.config import EncodeConfig
from raypipe.testing import TRAIT_CLIPS, make_trait_clip, trait_names

DEEP = {name for name, (spec, _) in TRAIT_CLIPS.items() if spec.pix_fmt.endswith("10le")}


def dropped(trait: str, suffix: str) -> frozenset[str]:
    """Source streams the output container cannot hold (left out with a warning)."""
    if trait == "rotated_languages" and suffix == ".mkv":
        return frozenset({"mov_text"})  # Matroska holds text subtitles as SubRip/ASS
    if trait == "audio_early_cover" and suffix == ".mov":
        return frozenset({"mjpeg"})  # FFmpeg's MOV muxer drops attached pictures
    return frozenset()


@pytest.fixture(scope="module")
def traits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("traits")
    return {name: make_trait_clip(name, directory) for name in trait_names()}


@pytest.mark.parametrize("settings", ["default", "lossless"])
@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv"])
@pytest.mark.parametrize("trait", trait_names())
def test_trait_kept(
    traits: dict[str, Path], tmp_path: Path, trait: str, suffix: str, settings: str
) -> None:
    out = tmp_path / f"out{suffix}"
    if settings == "default":
        encode, frames, floor = EncodeConfig(), "psnr", 30.0
    elif trait in DEEP:
        encode, frames, floor = LOSSLESS_10BIT, "psnr", 45.0  # 16-bit PSNR
    else:
        encode, frames, floor = LOSSLESS, "equal", 0.0
    assert run_in_process(traits[trait], out, "builtin:invert", 5, encode) >= 1
    assert_fidelity(
        traits[trait],
        out,
        "builtin:invert",
        frames=frames,
        min_psnr_db=floor,
        dropped_codecs=dropped(trait, suffix),
        subtitle_tags=suffix != ".mov",  # FFmpeg's MOV muxer keeps no subtitle language
    )
