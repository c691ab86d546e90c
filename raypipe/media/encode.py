"""Per-chunk encode: frames in, one independently decodable segment out.

A segment holds one video stream whose first frame is an IDR frame and whose packets carry
the source pts. It is stored as a small NUT container (FFmpeg's own format: any codec, and
its header gives the assembler a stream template with the codec's extradata) plus the
encoder's own pts/dts of every packet: no container keeps those exactly for every codec
and time base (NUT derives dts, MOV rounds variable frame rates, Matroska has
millisecond timestamps), so raypipe keeps them itself. Every segment of a run uses
identical encoder settings, so their packets concatenate into one stream
(:mod:`raypipe.media.mux` checks that their codec headers agree). RGB frames go to the
encoder's own cached converter, one swscale context per segment, not one per frame.
"""

from __future__ import annotations

import dataclasses
import io
import json
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import cast

import av
import numpy as np

from raypipe.config import EncodeConfig
from raypipe.errors import ConfigError, EncodeError

_X26X = ("libx264", "libx264rgb", "libx265")
_DEFAULT_PIX_FMT = {"libx264rgb": "rgb24", "ffv1": "yuv420p"}


_MAGIC = b"RPSEG1\n"
_NO_DTS = -(2**63)


@dataclass(frozen=True)
class Segment:
    """An encoded chunk: NUT bytes plus the exact pts/dts of its packets, in order."""

    nut: bytes
    pts: np.ndarray  # int64, stream time base
    dts: np.ndarray  # int64, _NO_DTS where the encoder gave none
    time_base: Fraction

    def to_bytes(self) -> bytes:
        head = json.dumps(
            {"n": len(self.pts), "tb": [self.time_base.numerator, self.time_base.denominator]}
        ).encode()
        return b"".join(
            [
                _MAGIC,
                struct.pack("<I", len(head)),
                head,
                self.pts.astype("<i8").tobytes(),
                self.dts.astype("<i8").tobytes(),
                self.nut,
            ]
        )

    @classmethod
    def from_bytes(cls, blob: bytes) -> Segment:
        if not blob.startswith(_MAGIC):
            raise EncodeError(
                "not a raypipe segment (bad magic); the work directory is damaged: run again "
                "to redo the video"
            )
        try:
            at = len(_MAGIC)
            (head_len,) = struct.unpack_from("<I", blob, at)
            at += 4
            head = json.loads(blob[at : at + head_len])
            at += head_len
            n = int(head["n"])
            pts = np.frombuffer(blob, dtype="<i8", count=n, offset=at).astype(np.int64)
            dts = np.frombuffer(blob, dtype="<i8", count=n, offset=at + 8 * n).astype(np.int64)
            time_base = Fraction(*head["tb"])
        except (struct.error, ValueError, KeyError, TypeError) as e:
            raise EncodeError(
                f"a raypipe segment is truncated ({e}); the work directory is damaged: run "
                "again to redo the video"
            ) from e
        return cls(nut=blob[at + 16 * n :], pts=pts, dts=dts, time_base=time_base)


def encoder_available(codec: str) -> bool:
    """Whether this PyAV build has an encoder named ``codec``."""
    try:
        av.codec.Codec(codec, "w")
    except (av.error.FFmpegError, ValueError):
        return False
    return True


NVENC_FALLBACK: dict[str, tuple[str, ...]] = {
    "h264_nvenc": ("libx264",),
    "hevc_nvenc": ("libx265",),
    "av1_nvenc": ("libsvtav1", "libaom-av1"),
}
"""The software encoders an NVENC encoder falls back to, in order of preference."""
_NVENC_PRESETS = {  # x264-style preset names -> NVENC's p1 (fastest) .. p7 (best)
    "ultrafast": "p1", "superfast": "p1", "veryfast": "p2", "faster": "p2", "fast": "p3",
    "medium": "p4", "slow": "p5", "slower": "p6", "veryslow": "p7",
}  # fmt: skip
_X264_PRESETS = frozenset(_NVENC_PRESETS)


def is_nvenc(codec: str) -> bool:
    return codec.endswith("_nvenc")


def nvenc_problem(codec: str) -> str | None:
    """Why the NVENC encoder ``codec`` cannot encode in this process, or ``None`` if it can:
    it is opened and fed one small frame (a GPU without NVENC, such as A100 or H100, a
    missing driver and a PyAV build without it all fail here)."""
    if not encoder_available(codec):
        return f"this PyAV/FFmpeg build has no {codec} encoder"
    try:
        ctx = cast(av.VideoCodecContext, av.CodecContext.create(codec, "w"))
        ctx.width, ctx.height, ctx.pix_fmt = 256, 144, "yuv420p"
        ctx.time_base = Fraction(1, 25)
        ctx.open()
        ctx.encode(av.VideoFrame(256, 144, "yuv420p"))
        ctx.encode(None)
    except (av.error.FFmpegError, OSError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def nvenc_fallback(config: EncodeConfig, problem: str) -> tuple[EncodeConfig, str]:
    """The software-encoder config that replaces NVENC ``config``, and the message saying so.

    The codec family stays (H.264, HEVC, AV1) and so does ``crf``; an x264-style preset
    is kept, NVENC-only presets and options are dropped."""
    software = next(
        (c for c in NVENC_FALLBACK.get(config.codec, ()) if encoder_available(c)), "libx264"
    )
    replaced = dataclasses.replace(
        config,
        codec=software,
        preset=config.preset if config.preset in _X264_PRESETS else None,
        options={},
    )
    message = (
        f"encoder {config.codec} cannot run here ({problem}); encoding with {software} "
        f"instead. NVENC needs an NVIDIA GPU that has video encoders (A100 and H100 have "
        f"none) and its driver"
    )
    return replaced, message


def check_encoder(config: EncodeConfig) -> None:
    """Fail early, with what to try, when ``config`` names an encoder this build lacks.

    NVENC encoders are not checked here: where they cannot run, the run falls back to a
    software encoder (:func:`nvenc_fallback`)."""
    if not is_nvenc(config.codec) and not encoder_available(config.codec):
        raise ConfigError(
            f"encoder '{config.codec}' is not available in this PyAV/FFmpeg build; "
            "try libx264, libx265 or ffv1"
        )


def encoder_options(config: EncodeConfig) -> dict[str, str]:
    """The codec options a segment encoder gets: crf/preset for the x26x family; for NVENC
    crf becomes constant quality ``cq`` and x264 preset names NVENC's ``p1``..``p7``."""
    options: dict[str, str] = {}
    if config.codec in _X26X:
        if config.crf is not None and "qp" not in config.options:
            options["crf"] = str(config.crf)
        if config.preset:
            options["preset"] = config.preset
    if config.codec == "libx265":
        options["x265-params"] = "log-level=error"
    if is_nvenc(config.codec):
        if config.crf is not None:  # constant quality, NVENC's nearest to crf
            options.update(rc="vbr", cq=str(config.crf), b="0")
        if config.preset:
            options["preset"] = _NVENC_PRESETS.get(config.preset, config.preset)
    options.update(config.options)
    return options


def encode_segment(
    frames: np.ndarray,
    pts: np.ndarray,
    *,
    time_base: Fraction,
    rate: Fraction,
    config: EncodeConfig,
) -> Segment:
    """Encode RGB uint8 ``frames`` ``(n, H, W, 3)`` with timestamps ``pts`` into a segment."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise EncodeError(
            f"expected RGB uint8 frames (n, H, W, 3), got {frames.dtype} {frames.shape}"
        )
    n, height, width, _ = frames.shape
    pix_fmt = config.pix_fmt or _DEFAULT_PIX_FMT.get(config.codec, "yuv420p")
    if pix_fmt in ("yuv420p", "nv12") and (width % 2 or height % 2):
        raise EncodeError(
            f"{pix_fmt} needs an even width and height, the frames are {width}x{height}; "
            "pass pix_fmt yuv444p (or a model whose output size is even)"
        )
    buf = io.BytesIO()
    out_pts: list[int] = []
    out_dts: list[int] = []

    def mux(out: av.container.OutputContainer, packets: list[av.Packet]) -> None:
        for packet in packets:
            if packet.pts is None:
                raise EncodeError(f"encoder {config.codec} gave a packet without pts")
            out_pts.append(packet.pts)
            out_dts.append(_NO_DTS if packet.dts is None else packet.dts)
        out.mux(packets)

    try:
        with av.open(buf, mode="w", format="nut") as out:
            stream = cast(
                av.VideoStream,
                out.add_stream(config.codec, rate=rate or None, options=encoder_options(config)),
            )
            stream.width = width
            stream.height = height
            stream.pix_fmt = pix_fmt
            stream.time_base = time_base
            stream.codec_context.time_base = time_base
            for i in range(n):
                frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
                frame.pts = int(pts[i])
                frame.time_base = time_base
                mux(out, stream.encode(frame))
            mux(out, stream.encode(None))
    except av.error.FFmpegError as e:
        raise EncodeError(
            f"encoder {config.codec} ({pix_fmt}, {width}x{height}) failed: {e}"
        ) from e
    return Segment(
        nut=buf.getvalue(),
        pts=np.asarray(out_pts, dtype=np.int64),
        dts=np.asarray(out_dts, dtype=np.int64),
        time_base=time_base,
    )
