"""The trait clips are what they claim, under ffprobe; the upright reference decode turns
frames the way ffmpeg's autorotation does; the judge reads pixel formats right."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from raypipe.testing import (
    TRAIT_CLIPS,
    decode_upright,
    ffmpeg_decode_errors,
    ffprobe_video,
    first_frame_hdr,
    pix_fmt_layout,
    read_index,
    start_offset_seconds,
    trait_names,
)
from raypipe.testing.clip_traits import HDR10_LIGHT_LEVEL


@pytest.mark.parametrize("name", trait_names())
def test_trait_clip_is_what_it_claims(traits: dict[str, Path], name: str) -> None:
    spec, suffix = TRAIT_CLIPS[name]
    path = traits[name]
    assert path.suffix == suffix and ffmpeg_decode_errors(path) == ""
    probed = ffprobe_video(path)
    assert probed.n_packets == spec.n_frames
    assert probed.duration_seconds == pytest.approx(spec.duration_seconds, abs=1e-3)
    full = spec.colour is not None and spec.colour[3] == "pc"  # ffprobe names it yuvj*
    assert probed.pix_fmt == (spec.pix_fmt.replace("yuv", "yuvj") if full else spec.pix_fmt)
    tags = (probed.primaries, probed.transfer, probed.matrix, probed.range)
    assert tags == (spec.colour or ("unknown",) * 4)
    # ffprobe's rotation reads a left-to-right mirror as a half turn more
    assert round(probed.rotation / 90) % 4 == (spec.rotation_degrees // 90 + 2 * spec.mirrored) % 4
    assert probed.mirrored == spec.mirrored
    if spec.hdr10:
        assert first_frame_hdr(path)["light"] == HDR10_LIGHT_LEVEL
        assert set(probed.hdr) == {"Mastering display metadata", "Content light level metadata"}
    audio = [s for s in probed.streams if s.kind == "audio"]
    assert [s.language for s in audio] == list(spec.audio_languages) or not spec.audio_languages
    if spec.audio is not None:
        assert len(audio) == max(1, len(spec.audio_languages))
        offset = start_offset_seconds(path)
        assert offset == pytest.approx(spec.audio_offset_seconds, abs=0.03)  # AAC priming
    pictures = [s for s in probed.streams if "attached_pic" in s.dispositions]
    assert len(pictures) == int(spec.cover_art)
    frames, _, _ = decode_upright(path)
    eight_bit = (frames >> 8).astype(np.uint8) if frames.dtype == np.uint16 else frames
    coded = np.rot90(eight_bit, -(spec.rotation_degrees // 90), (1, 2))
    if spec.mirrored:
        coded = coded[:, :, ::-1]
    assert [read_index(f) for f in coded] == list(range(spec.n_frames))


@pytest.mark.parametrize("name", ["rotated_languages", "phone_hlg", "audio_late"])
def test_upright_frames_are_what_ffmpeg_shows(traits: dict[str, Path], name: str) -> None:
    """ffmpeg autorotates by the display matrix: the same picture, the same way up."""
    path = traits[name]
    ours, _, _ = decode_upright(path)
    width, height = ffprobe_video(path).displayed_size
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        check=True,
    ).stdout
    shown = np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3).astype(np.int32)
    ours8 = (ours >> 8).astype(np.int32) if ours.dtype == np.uint16 else ours.astype(np.int32)
    assert ours8.shape == shown.shape
    assert np.abs(ours8 - shown).mean() < 8  # conversion details differ, not the picture
    assert np.abs(np.rot90(ours8, 2, (1, 2)) - shown).mean() > 40  # upside down would show


def test_judge_reads_pixel_formats_by_name() -> None:
    assert pix_fmt_layout("yuv420p10le") == (10, "4:2:0")
    assert pix_fmt_layout("yuvj444p") == (8, "4:4:4")
    assert pix_fmt_layout("p010le") == (10, "4:2:0")
    assert pix_fmt_layout("gbrp10le") == (10, "RGB") and pix_fmt_layout("gbrp") == (8, "RGB")
    with pytest.raises(ValueError, match="not one the judge knows"):
        pix_fmt_layout("bayer_rggb8")
