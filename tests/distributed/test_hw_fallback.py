"""``--decoder nvdec`` and NVENC codecs through the whole pipeline on a machine without them:
the run finishes, the output is right, and the user is told once what fell back and why."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from conftest import assert_exact, lossless_cli_args

from raypipe.cli import main
from raypipe.media.decode import nvdec_problem
from raypipe.media.encode import nvenc_problem
from raypipe.testing import decode_all

# Wherever NVDEC / NVENC cannot run: CPU machines, and for NVENC the GPUs without encoders
# (A100, H100), where the fallback really happens.
without_nvdec = pytest.mark.skipif(not nvdec_problem(), reason="NVDEC decodes here")
without_nvenc = pytest.mark.skipif(nvenc_problem("h264_nvenc") is None, reason="NVENC encodes here")


@without_nvdec
def test_decoder_nvdec_falls_back_exactly_and_warns_once(
    ray_local: None, clips: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    args = ["run", str(clips["bframes_aac"]), str(out), "--model", "builtin:invert"]
    args += [*lossless_cli_args(), "--chunk-frames", "12"]
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        code = main([*args, "--decoder", "nvdec", "--stats", str(stats), "--quiet"])
    assert code == 0
    assert_exact(clips["bframes_aac"], out, "builtin:invert")
    chunks = json.loads(stats.read_text())["chunks"]
    assert len(chunks) > 1 and {c["decoder"] for c in chunks} == {"cpu"}
    assert all(c["decoder_note"].startswith("NVDEC unavailable") for c in chunks)
    warnings = [r.getMessage() for r in caplog.records if "--decoder nvdec" in r.getMessage()]
    # one warning per reason (per decode process at most), never one per chunk
    assert 1 <= len(warnings) < len(chunks), warnings
    assert "chunks decode on the CPU" in warnings[0] and "NVIDIA GPU" in warnings[0]


@without_nvdec
def test_decoder_auto_falls_back_silently(
    ray_local: None, clips: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    args = ["run", str(clips["ntsc"]), str(out), "--model", "builtin:invert", "--quiet"]
    args += [*lossless_cli_args(), "--stats", str(stats)]
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        assert main(args) == 0
    assert_exact(clips["ntsc"], out, "builtin:invert")
    assert {c["decoder"] for c in json.loads(stats.read_text())["chunks"]} == {"cpu"}
    assert not [r for r in caplog.records if "NVDEC" in r.getMessage()]


@without_nvenc
@pytest.mark.parametrize(("codec", "software", "codec_name"), [("h264_nvenc", "libx264", "h264")])
def test_nvenc_codec_falls_back_to_software_with_one_message(
    ray_local: None,
    clips: dict[str, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    codec: str,
    software: str,
    codec_name: str,
) -> None:
    import av

    out = tmp_path / "out.mp4"
    args = ["run", str(clips["bframes_aac"]), str(out), "--model", "builtin:invert"]
    args += ["--codec", codec, "--crf", "20", "--preset", "veryfast", "--quiet"]
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        assert main([*args, "--chunk-frames", "12"]) == 0
    messages = [r.getMessage() for r in caplog.records if codec in r.getMessage()]
    assert len(messages) == 1, messages
    assert f"encoding with {software} instead" in messages[0]
    assert "A100 and H100 have none" in messages[0]
    with av.open(str(out)) as container:
        assert container.streams.video[0].codec_context.name == codec_name
    source_frames, source_pts, source_tb = decode_all(clips["bframes_aac"])
    frames, pts, tb = decode_all(out)
    assert frames.shape == source_frames.shape
    # the same display times (the MP4 muxer may choose another time base)
    assert [(p - pts[0]) * tb for p in pts] == [(p - source_pts[0]) * source_tb for p in source_pts]
