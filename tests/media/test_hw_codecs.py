"""NVDEC decoding and NVENC encoding: the choice, the fallback and its message.

Without an NVIDIA GPU (this machine, CI) NVDEC and NVENC cannot start, so these tests check
that asking for them still gives exact output, through the CPU decoder or a software
encoder, and says why. The ``gpu`` tests run the hardware paths themselves.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from raypipe.config import ChunkConfig, EncodeConfig
from raypipe.errors import ConfigError
from raypipe.media import decode as decode_module
from raypipe.media.decode import decode_chunk, nvdec_problem
from raypipe.media.encode import (
    check_encoder,
    encoder_options,
    nvenc_fallback,
    nvenc_problem,
)
from raypipe.media.plan import plan_chunks
from raypipe.media.probe import probe

# The fallbacks are checked wherever NVDEC / NVENC cannot run: CPU machines, and GPUs
# without NVENC (A100, H100), where the NVENC fallback really happens.
without_nvdec = pytest.mark.skipif(
    not nvdec_problem(), reason="checks the fallback where NVDEC cannot decode"
)
without_nvenc = pytest.mark.skipif(
    nvenc_problem("h264_nvenc") is None, reason="checks the fallback where NVENC cannot encode"
)


@pytest.fixture
def fresh_nvdec_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget what this process learnt about NVDEC (it is remembered per process)."""
    monkeypatch.setattr(decode_module, "_nvdec_unavailable", None)


def _chunks(path: Path, frames: int = 12) -> tuple[object, list[object]]:
    info = probe(str(path))
    return info, list(plan_chunks(info, ChunkConfig(chunk_frames=frames)).chunks)


@without_nvdec
@pytest.mark.parametrize("decoder", ["nvdec", "auto"])
def test_nvdec_without_a_gpu_decodes_on_the_cpu_and_says_why(
    clips: dict[str, Path], decoder: str, fresh_nvdec_state: None
) -> None:
    info, chunks = _chunks(clips["bframes_aac"])
    for chunk in chunks:
        cpu = decode_chunk(info, chunk, decoder="cpu")  # type: ignore[arg-type]
        asked = decode_chunk(info, chunk, decoder=decoder)  # type: ignore[arg-type]
        np.testing.assert_array_equal(asked.frames, cpu.frames)
        np.testing.assert_array_equal(asked.pts, cpu.pts)
        assert (cpu.decoder, cpu.note) == ("cpu", "")
        assert asked.decoder == "cpu"
        # without a driver the note says so first: FFmpeg's EPERM reads like a permission
        # to fix (a sweep)
        from raypipe.media.encode import has_cuda_driver

        hint = "" if has_cuda_driver() else "no NVIDIA driver (libcuda.so.1 not found): "
        assert asked.note.startswith(f"NVDEC unavailable: {hint}FFmpeg cannot open a CUDA device")
        assert "NVIDIA GPU" in asked.note
    assert decode_module.nvdec_unavailable() == asked.note  # learnt once for the process


def test_unknown_decoder_is_refused(clips: dict[str, Path]) -> None:
    info, chunks = _chunks(clips["bframes_aac"])
    with pytest.raises(ValueError, match="decoder must be one of auto, cpu, nvdec"):
        decode_chunk(info, chunks[0], decoder="vdpau")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="decoder must be auto, cpu or nvdec"):
        ChunkConfig(decoder="vdpau")


@pytest.mark.gpu("nvdec")
def test_nvdec_on_a_gpu_equals_the_cpu_decoder(
    clips: dict[str, Path], fresh_nvdec_state: None
) -> None:
    """H.264 and HEVC decoders are bit-exact by the standards; NVDEC's nv12 download then
    goes through the same swscale conversion to RGB."""
    for kind in ("bframes_aac", "hevc_mov", "open_gop"):
        info, chunks = _chunks(clips[kind])
        for chunk in chunks:
            cpu = decode_chunk(info, chunk, decoder="cpu")  # type: ignore[arg-type]
            gpu = decode_chunk(info, chunk, decoder="nvdec")  # type: ignore[arg-type]
            assert gpu.decoder == "nvdec", gpu.note
            np.testing.assert_array_equal(gpu.pts, cpu.pts)
            np.testing.assert_array_equal(gpu.frames, cpu.frames)


# --- NVENC ---------------------------------------------------------------------------------


@without_nvenc
@pytest.mark.parametrize("codec", ["h264_nvenc", "hevc_nvenc"])
def test_nvenc_without_a_gpu_has_a_reason(codec: str) -> None:
    problem = nvenc_problem(codec)
    assert problem, f"{codec} opened on a machine without CUDA"


def test_nvenc_falls_back_to_the_same_codec_family_in_software() -> None:
    cases = {
        "h264_nvenc": ("libx264", "h264"),
        "hevc_nvenc": ("libx265", "hevc"),
    }
    for codec, (software, family) in cases.items():
        # the options the software encoder has are kept (every option was dropped without
        # a word: qp=0 gave a lossy encode; a sweep), NVENC's own are named as left out
        options = {"g": "5", "bf": "0", "qp": "0", "rc": "vbr"}
        config = EncodeConfig(codec=codec, crf=21, preset="slow", options=options)
        replaced, message = nvenc_fallback(config, "no NVENC capable devices found")
        kept = {"g": "5", "bf": "0", "qp": "0"}
        assert replaced == EncodeConfig(codec=software, crf=21, preset="slow", options=kept)
        assert av.codec.Codec(software, "w").name in (software,)
        assert av.codec.Codec(software, "w").id == av.codec.Codec(family, "r").id
        assert message == (
            f"encoder {codec} cannot run here (no NVENC capable devices found); encoding "
            f"with {software} instead. NVENC needs an NVIDIA GPU that has video encoders "
            f"(A100 and H100 have none) and its driver; {software} has no --encoder-option "
            "rc=vbr: left out"
        )
    # an NVENC-only preset is dropped, and said: x264 would reject it
    replaced, message = nvenc_fallback(EncodeConfig(codec="h264_nvenc", preset="p5"), "x")
    assert replaced.preset is None
    assert message.endswith("; libx264 has no --preset p5 (the default instead): left out")


def test_nvenc_options_map_crf_and_x264_presets() -> None:
    assert encoder_options(EncodeConfig(codec="h264_nvenc", crf=20, preset="veryfast")) == {
        "rc": "vbr",
        "cq": "20",
        "b": "0",
        "preset": "p2",
    }
    assert encoder_options(EncodeConfig(codec="hevc_nvenc", crf=None, preset="p7")) == {
        "preset": "p7"
    }


def test_check_encoder_leaves_nvenc_to_the_fallback() -> None:
    check_encoder(EncodeConfig(codec="h264_nvenc"))  # resolved on the cluster, not here
    with pytest.raises(ConfigError, match="encoder 'libnothing' is not available"):
        check_encoder(EncodeConfig(codec="libnothing"))


@pytest.mark.gpu("cuda")
def test_nvenc_opens_where_the_gpu_has_encoders() -> None:
    """On a GPU with NVENC (T4, L4, A10, RTX) the encoder opens; on A100/H100 the reason
    names the missing encoder rather than a missing driver."""
    problem = nvenc_problem("h264_nvenc")
    if problem is not None:
        assert "libcuda" not in problem and "Operation not permitted" not in problem, problem
        pytest.skip(f"this GPU has no NVENC: {problem}")


@pytest.mark.parametrize("codec", ["flv", "msmpeg4"])
def test_an_encoder_whose_video_no_segment_holds_is_refused_before_any_work(codec: str) -> None:
    """An encoder whose video neither segment container holds (NUT, or MOV for ProRes and
    DNxHD) would fail a run after decoding and inference ("'nut' format does not support
    'prores_ks' codec", as ProRes did before its segments went to MOV) and write nothing.
    It is refused before any work, with what to use instead; the encoders NUT or MOV holds
    pass."""
    with pytest.raises(ConfigError, match=f"encoder '{codec}' writes .* cannot hold"):
        check_encoder(EncodeConfig(codec=codec))
    for holds in ("libx264", "libx265", "ffv1", "libvpx-vp9", "mpeg4", "prores_ks", "dnxhd"):
        check_encoder(EncodeConfig(codec=holds))


def test_nvenc_without_a_driver_says_so() -> None:
    """Without an NVIDIA driver FFmpeg's NVENC open fails as "Operation not permitted",
    which `raypipe doctor` showed as it is: it read like a permission to fix."""
    from raypipe.media.encode import has_cuda_driver

    if has_cuda_driver():
        pytest.skip("this machine has an NVIDIA driver")
    problem = nvenc_problem("h264_nvenc")
    assert problem is not None and problem.startswith(
        "no NVIDIA driver (libcuda.so.1 not found): "
    ), problem
