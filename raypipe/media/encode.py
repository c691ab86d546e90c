"""Per-chunk encode: frames in, one independently decodable segment out.

A segment holds one video stream whose first frame is an IDR frame and whose packets carry
the source pts. It is stored as a small NUT container (FFmpeg's own format: nearly any
codec, and its header gives the assembler a stream template with the codec's extradata;
MOV for ProRes and DNxHD, which NUT does not hold: :func:`segment_format`) plus the
encoder's own pts/dts of every packet: no container keeps those exactly for every codec
and time base (NUT derives dts, MOV rounds variable frame rates, Matroska has
millisecond timestamps), so raypipe keeps them itself, with every packet's duration (the
last frame's too, from the chunk's end), and the colour tags and average frame rate the
assembler gives the output stream. Every segment of a run uses identical encoder settings,
so their packets concatenate into one stream (:mod:`raypipe.media.mux` checks that their
codec headers agree).

RGB frames (uint8 ``rgb24`` or uint16 ``rgb48le``) are converted to the output pixel format
here, with the source's matrix and range and one swscale context per segment (not one per
frame), so the encoder never converts with swscale's defaults. The output pixel format is
the user's ``pix_fmt``, else the one that keeps the source's bit depth and chroma
(:func:`output_pix_fmt`); the stream is tagged with the source's primaries and transfer and
the matrix and range it was converted with, its sample aspect ratio, and HDR10 metadata
where the encoder writes it (:func:`raypipe.media.colour.hdr_encoder_options`).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import io
import json
import os
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, cast

import av
import numpy as np
from av.video.reformatter import ColorRange, Interpolation, VideoReformatter

from raypipe.config import (
    AUTO_CODEC,
    OUTPUT_FORMATS,
    X264_PRESETS,
    EncodeConfig,
    default_video_codec,
)
from raypipe.errors import ConfigError, EncodeError
from raypipe.media import fields
from raypipe.media.colour import (
    ColourTags,
    hdr_encoder_options,
    sws_colorspace,
    sws_range,
)
from raypipe.media.containers import (
    KEEPING_ENCODERS,
    STEREO_MODES_HELD,
    container_refuses,
    extensions_holding,
)
from raypipe.media.frame_clock import FrameClock
from raypipe.media.full_range import narrowed, wide_twin
from raypipe.media.picture import PictureFormat
from raypipe.media.pixfmt import choose_pix_fmt, encoder_formats, encoder_video_formats, layout_of

_X26X = ("libx264", "libx264rgb", "libx265")
_ANY_SIZE = frozenset({"ffv1", "libvpx-vp9", "libsvtav1", "mpeg4", "mpeg2video"})
"""Encoders that code subsampled chroma at any frame size (a 321x241 4:2:0, tested); x264,
x265 and NVENC want whole chroma samples."""
_PARAM_OPTIONS = ("x265-params", "x264-params", "svtav1-params")  # key=value:key=value


_MAGIC_V1 = b"RPSEG1\n"  # pts and dts only (raypipe before packet durations)
_MAGIC = b"RPSEG2\n"  # + durations; head: colour tags, average rate
SEGMENT_FORMAT = 10
"""What a segment holds and how its frames were converted and encoded (source matrix, 16
bits, 3: the encoder's threads set to the CPUs an encode task holds, which changes x264's
bits, 4: x264 held to AVX2, :func:`x264_cpu_params`, 5: frames decoded to RGB rounded to
the nearest, :mod:`raypipe.media.rgb`, and an interlaced source's chroma converted field by
field, :mod:`raypipe.media.fields`, 6: the container's aspect ratio over the bitstream's,
and the ratio in the segment's head, 7: H.264 encoded in ticks of a frame where
the frames fall on them, :func:`encoder_clock`, which changes their headers' timing, 8:
also where a container's clock rounds their times or they start off the grid, 9:
full-range 8-bit chroma rounded to the nearest, :mod:`raypipe.media.full_range`, 10:
x264 counts in the frames' distance where the average rate is not theirs, an MP4 cut
mid-frame, :func:`~raypipe.media.frame_clock.frame_step`): part of a run's key, so a
resumed run does not mix segments of another format."""
_NO_DTS = -(2**63)
SEGMENT_HEAD_BYTES = 1 << 16
"""Bytes read from a segment's start for its index (:meth:`Segment.index_size`): its JSON
head and 24 bytes a frame (2700 frames in 64 KiB)."""


@dataclass(frozen=True)
class Segment:
    """An encoded chunk: its container's bytes plus the exact pts/dts/durations of its
    packets, in order, and what the assembled stream is tagged with (``colour``, ``rate``)."""

    container: bytes  # NUT, or MOV for the codecs NUT does not hold (segment_format)
    pts: np.ndarray  # int64, stream time base
    dts: np.ndarray  # int64, _NO_DTS where the encoder gave none
    time_base: Fraction
    durations: np.ndarray | None = None  # int64, stream time base; None: unknown (v1)
    colour: ColourTags | None = None  # None: leave the stream's tags as the encoder set them
    rate: Fraction | None = None  # average frame rate of the video; None: unknown
    sar: Fraction | None = None  # the frames' sample aspect ratio; None: unknown (square)

    def to_bytes(self) -> bytes:
        head: dict[str, object] = {
            "n": len(self.pts),
            "tb": [self.time_base.numerator, self.time_base.denominator],
        }
        if self.colour is not None:
            head["colour"] = self.colour.to_dict()
        if self.rate:
            head["rate"] = [self.rate.numerator, self.rate.denominator]
        if self.sar:  # NUT keeps it only for codecs that say it themselves
            head["sar"] = [self.sar.numerator, self.sar.denominator]
        durations = self.durations if self.durations is not None else np.zeros_like(self.pts)
        text = json.dumps(head).encode()
        return b"".join(
            [
                _MAGIC,
                struct.pack("<I", len(text)),
                text,
                self.pts.astype("<i8").tobytes(),
                self.dts.astype("<i8").tobytes(),
                durations.astype("<i8").tobytes(),
                self.container,
            ]
        )

    @staticmethod
    def index_size(head: bytes) -> int:
        """How many bytes from a segment's start hold its pts, dts and durations, from its
        first bytes (at least :data:`SEGMENT_HEAD_BYTES`; the whole segment where shorter):
        :meth:`from_bytes` of that many gives them, with no frames (``container`` empty)."""
        try:
            version, _, at, n = _layout(head)
        except (EncodeError, struct.error, ValueError, KeyError, TypeError):
            return len(head)  # from_bytes says what is wrong
        return at + 8 * n * (version + 1)

    @classmethod
    def from_bytes(cls, blob: bytes) -> Segment:
        try:
            version, head, at, n = _layout(blob)

            def column(k: int) -> np.ndarray:
                values = np.frombuffer(blob, dtype="<i8", count=n, offset=at + 8 * n * k)
                return values.astype(np.int64)

            durations = column(2) if version == 2 else None
            return cls(
                container=blob[at + 8 * n * (version + 1) :],
                pts=column(0),
                dts=column(1),
                time_base=Fraction(*head["tb"]),
                durations=durations if durations is not None and durations.any() else None,
                colour=ColourTags(**head["colour"]) if "colour" in head else None,
                rate=Fraction(*head["rate"]) if "rate" in head else None,
                sar=Fraction(*head["sar"]) if "sar" in head else None,
            )
        except (struct.error, ValueError, KeyError, TypeError) as e:
            raise EncodeError(
                f"a raypipe segment is truncated ({e}); the work directory is damaged: run "
                "again to redo the video"
            ) from e


def _layout(blob: bytes) -> tuple[int, dict[str, Any], int, int]:
    """A segment's format version (1: pts and dts, 2: and durations), JSON head, the offset
    its columns start at, and its packet count, from its first bytes. Raises
    :class:`EncodeError` for bytes that are no segment, and struct, JSON or key errors for
    one cut short."""
    version = 2 if blob.startswith(_MAGIC) else 1 if blob.startswith(_MAGIC_V1) else 0
    if not version:
        raise EncodeError(
            "not a raypipe segment (bad magic); the work directory is damaged: run again "
            "to redo the video"
        )
    at = len(_MAGIC)
    (head_len,) = struct.unpack_from("<I", blob, at)
    at += 4
    head = json.loads(blob[at : at + head_len])
    return version, head, at + head_len, int(head["n"])


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
_X264_PRESETS = frozenset(X264_PRESETS)
_VPX_SPEEDS = {  # x264-style preset names -> libvpx-vp9's cpu-used (0 best .. 8 fastest)
    "ultrafast": "8", "superfast": "7", "veryfast": "6", "faster": "5", "fast": "5",
    "medium": "4", "slow": "3", "slower": "2", "veryslow": "1", "placebo": "0",
}  # fmt: skip
"""At ``medium`` (4, with ``row-mt``) VP9 took 2.2x x264 medium's time on a 720p clip,
where FFmpeg's own default (``cpu-used`` 1, no ``row-mt``) took 7.5x."""


_SVT_PRESETS = {  # x264-style preset names -> SVT-AV1's preset (0 best .. 13 fastest)
    "ultrafast": "12", "superfast": "11", "veryfast": "10", "faster": "9", "fast": "9",
    "medium": "8", "slow": "6", "slower": "4", "veryslow": "2", "placebo": "0",
}  # fmt: skip
"""SVT-AV1's own default is 10; its presets below 4 take many times x264's ``veryslow``."""


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
        # without a driver FFmpeg's open fails as EPERM, "Operation not permitted", which
        # reads like a permission to fix
        hint = "" if has_cuda_driver() else "no NVIDIA driver (libcuda.so.1 not found): "
        return f"{hint}{type(e).__name__}: {e}"
    return None


@functools.cache
def has_cuda_driver() -> bool:
    """Whether NVIDIA's driver library (``libcuda``) loads in this process."""
    import ctypes.util

    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return ctypes.util.find_library("cuda") is not None
    return True


def nvenc_fallback(config: EncodeConfig, problem: str) -> tuple[EncodeConfig, str]:
    """The software-encoder config that replaces NVENC ``config``, and the message saying so.

    The codec family stays (H.264, HEVC, AV1) and so does ``crf``; an x264-style preset
    and the options the software encoder has (``g``, ``bf``, ``qp``...) are kept, NVENC-only
    presets and options are dropped, and the message names them (every option was
    dropped without a word: ``qp=0`` gave a lossy encode; a sweep)."""
    software = next(
        (c for c in NVENC_FALLBACK.get(config.codec, ()) if encoder_available(c)), "libx264"
    )
    known = _option_names(software)
    kept = {k: v for k, v in config.options.items() if k in known}
    preset = config.preset if config.preset in _X264_PRESETS else None
    replaced = dataclasses.replace(config, codec=software, preset=preset, options=kept)
    dropped = [f"--encoder-option {k}={v}" for k, v in config.options.items() if k not in kept]
    if config.preset and preset is None:
        dropped.append(f"--preset {config.preset} (the default instead)")
    message = (
        f"encoder {config.codec} cannot run here ({problem}); encoding with {software} "
        f"instead. NVENC needs an NVIDIA GPU that has video encoders (A100 and H100 have "
        f"none) and its driver"
    )
    if dropped:
        message += f"; {software} has no {', '.join(dropped)}: left out"
    return replaced, message


def check_encoder(config: EncodeConfig) -> None:
    """Fail early, with what to try, when ``config`` names an encoder this build lacks
    (``auto``: both it may pick).

    NVENC encoders are not checked here: where they cannot run, the run falls back to a
    software encoder (:func:`nvenc_fallback`)."""
    if config.codec == "copy":  # it read as a build without the encoder (a sweep)
        raise ConfigError(
            "--codec copy: raypipe encodes the frames the model makes, so the video cannot "
            "be stream-copied; name an encoder (libx264, libx265, ffv1, ...) or leave --codec out"
        )
    candidates = [c.codec for c in config.candidates()]
    _check_option_names(config.options, candidates)
    for codec in candidates:
        if not is_nvenc(codec) and not encoder_available(codec):
            raise ConfigError(
                f"encoder '{codec}' is not available in this PyAV/FFmpeg build; "
                "try libx264, libx265 or ffv1"
            )
        kind = av.codec.Codec(codec, "w").canonical_name if not is_nvenc(codec) else ""
        if kind and not segment_format(kind):
            raise ConfigError(
                f"encoder '{codec}' writes {kind} video, which raypipe's chunk segments "
                "(NUT, or MOV for ProRes and DNxHD) cannot hold, so it cannot be used; for "
                "a lossless intermediate try ffv1, for 10-bit 4:2:2 prores_ks, or libx264 "
                "or libx265 with --pix-fmt yuv422p10le"
            )


def _check_option_names(options: dict[str, str], codecs: list[str]) -> None:
    """Refuse an encoder option that none of ``codecs`` has (FFmpeg's encoders leave an
    unknown one unused, without a word: ``qpp=0``, a typo of x264's lossless ``qp=0``,
    gave the default lossy encode), with the nearest names it has. An encoder this build
    lacks is left to :func:`check_encoder`'s own message."""
    problem = _option_problem(options, codecs)
    if problem:
        raise ConfigError(problem)


def option_problem(config: EncodeConfig, output: str) -> str:
    """Why the encoder ``output`` gets cannot take ``config`` as given (``""``: it can):
    an encoder option of another encoder (with ``--codec auto``, one of VP9's into an
    ``.mp4`` passed the check that took both encoders auto may pick, and x264 left it
    unused), or a ``pix_fmt`` the encoder does not write (``--pix-fmt rgb24`` for x264
    failed at the first chunk, after Ray's start, "Invalid argument"; sweeps)."""
    ext = os.path.splitext(output.rstrip("/"))[1].lower() or "(none)"
    try:
        resolved = config.for_output(output)
    except ConfigError as e:  # --codec auto with a crf of VP9's range, for x264's output
        return f"{e}; --codec auto picks {default_video_codec(output)} for {ext}"
    codec = resolved.codec
    picked = f" (the one --codec auto picks for {ext})" if config.codec == AUTO_CODEC else ""
    if config.pix_fmt and not is_nvenc(codec):
        formats = encoder_video_formats(codec)
        if formats and config.pix_fmt not in formats:
            return (
                f"encoder {codec}{picked} does not write --pix-fmt {config.pix_fmt}; it "
                f"writes {', '.join(formats)}"
            )
    if config.codec == AUTO_CODEC and config.options:
        problem = _option_problem(config.options, [codec], f"encoder {codec}{picked} has")
        if problem:
            return problem
    if not config.options and not config.pix_fmt:
        return ""
    pix_fmt = config.pix_fmt or next(iter(encoder_video_formats(codec)), "")
    if codec not in _TRIED or not pix_fmt:
        return ""
    options = tuple(sorted(encoder_options(resolved).items()))
    problem = _opens_problem(codec, options, pix_fmt)
    return f"encoder {codec}{picked}: {problem}" if problem else ""


_TRIED = frozenset({"libx264", "libx265", "libvpx-vp9", "libsvtav1"})
"""Encoders :func:`option_problem` opens once, on a small picture, with a run's options:
a value they refuse (``tune=bogus``, ``profile=high`` with 4:4:4, VP9's ``lossless=1``
beside a crf) failed at the first chunk, after Ray's start, as "Invalid argument" with the
reason in a worker's log; a misspelt key inside ``x264-params`` (and x265's, SVT-AV1's)
was left unused without a word (a sweep)."""

_UNKNOWN_PARAM = ("Error parsing option", "Unknown option")


@functools.cache
def _opens_problem(
    codec: str, options: tuple[tuple[str, str], ...], pix_fmt: str, size: tuple[int, int] = (64, 64)
) -> str:
    """Why ``codec`` does not open with ``options`` at ``pix_fmt`` on a picture of ``size``
    (width, height), or names a parameter it does not know (FFmpeg's own words), ``""``
    when it opens clean."""
    failed, said = _open_listening(codec, dict(options), pix_fmt, size)
    shown = ", ".join([*(f"{k}={v}" for k, v in options), pix_fmt])
    if failed:
        return f"it does not open with these settings ({shown}): {failed}"
    unknown = [m for m in said if m.startswith(_UNKNOWN_PARAM)]
    if unknown:
        return (
            f"{'; '.join(unknown)} (its settings: {shown}): a key it does not know is left "
            "unused; check the spelling in the encoder's own parameter list"
        )
    return ""


def _open_listening(
    codec: str, options: dict[str, str], pix_fmt: str, size: tuple[int, int]
) -> tuple[str, list[str]]:
    """Open ``codec`` as :func:`_opens_problem` says, FFmpeg's log heard: why it failed to
    (its last error line, else the error; ``""`` where it opened) and every line it said."""
    import av.logging

    level = av.logging.get_level()
    quiet = "SVT_LOG" not in os.environ  # SVT-AV1 prints a banner on stderr as it opens
    if quiet:
        os.environ["SVT_LOG"] = "1"
    av.logging.set_level(av.logging.WARNING)
    try:
        with av.logging.Capture() as logs:
            ctx = av.CodecContext.create(codec, "w")
            ctx.width, ctx.height = size
            ctx.pix_fmt = pix_fmt
            ctx.time_base = Fraction(1, 25)
            ctx.framerate = Fraction(25)
            ctx.options = options
            try:
                ctx.open()
                failed = ""
            except av.error.FFmpegError as e:
                failed = str(e)
    finally:
        av.logging.set_level(level)
        if quiet:
            del os.environ["SVT_LOG"]
    said = [str(log[2]).strip().rstrip(".") for log in logs]
    if failed:
        errors = [str(log[2]).strip().rstrip(".") for log in logs if log[0] <= av.logging.ERROR]
        failed = errors[-1] if errors else failed
    return failed, said


_TAGS_ONLY = ("color_range", "colorspace", "color_primaries", "color_trc", "chroma_sample_location")
"""Encoder options that set an output's colour tags, which raypipe sets itself from the
colours it converts the frames with: given, they changed the tags and not the pixels
(``color_range=pc`` tagged full range over limited-range pixels, a washed-out picture;
``colorspace=bt2020nc`` over BT.709 pixels; a sweep)."""


def _option_problem(options: dict[str, str], codecs: list[str], which: str = "") -> str:
    for name in options:
        if name in _TAGS_ONLY or name == "aspect":
            what = (
                "the sample aspect ratio: raypipe writes the source's (the frames keep their shape)"
                if name == "aspect"
                else "a colour tag: raypipe converts the frames with the source's colours "
                "and tags the output with them, and this would change the tag alone, not "
                "the pixels (a washed-out or off-colour picture)"
            )
            return f"--encoder-option {name}={options[name]} sets {what}; leave it out"
    known: set[str] = set()
    for codec in codecs:
        known |= _option_names(codec)
    if not known:
        return ""
    for name in options:
        if name not in known:
            near = difflib.get_close_matches(name.split(":")[0], sorted(known), n=3)
            hint = f": did you mean {' or '.join(near)}?" if near else "."
            if not which:
                which = f"encoder {codecs[0]} has"
            if len(codecs) > 1:  # codec auto: "libx264 / libvpx-vp9" read as both (a sweep)
                return (
                    f"no encoder --codec auto picks ({' or '.join(codecs)}, by the output's "
                    f"container) has an option '{name}' (--encoder-option "
                    f"{name}={options[name]}){hint} Their options: "
                    + ", ".join(f"`ffmpeg -h encoder={c}`" for c in codecs)
                )
            return (
                f"{which} no option '{name}' (--encoder-option {name}={options[name]}){hint} "
                f"Its options: `ffmpeg -h encoder={codecs[0]}`"
            )
    return ""


@functools.cache
def _option_names(codec: str) -> frozenset[str]:
    """The options ``codec``'s encoder takes, generic and its own (none where this build
    lacks it)."""
    try:
        supported = av.CodecContext.create(codec, "w").supported_options
    except (av.codec.codec.UnknownCodecError, ValueError):
        return frozenset()
    return frozenset(o.name for o in (*supported.generic, *supported.private))


@functools.cache
def segment_format(kind: str) -> str:
    """The container a segment of ``kind`` video (a codec's canonical name) is written in:
    NUT, FFmpeg's own, which holds most codecs; MOV for those it does not (ProRes, DNxHD,
    intra-only, so the container's rounding of timestamps loses nothing: the segment keeps
    its packets' own); ``""`` when neither holds it."""
    for fmt in _SEGMENT_FORMATS:
        with av.open(io.BytesIO(), "w", format=fmt) as out:
            if kind in out.supported_codecs:
                return fmt
    return ""


_SEGMENT_FORMATS = ("nut", "mov")


_X264_AVX512 = ("AVX512F", "AVX512CD", "AVX512BW", "AVX512DQ", "AVX512VL")  # x264's AVX512 flag


@functools.cache
def _cpu_has_avx512() -> bool:
    """Whether this CPU has the AVX-512 subsets x264 uses (numpy's CPU probe; False where
    numpy does not say)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy 1.x
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return False
    return all(features.get(name, False) for name in _X264_AVX512)


def x264_cpu_params(codec: str) -> dict[str, str]:
    """``x264-params`` holding libx264's assembly to AVX2 on a CPU with AVX-512; ``{}``
    elsewhere and for other encoders.

    x264's AVX-512 routines make its output vary from one encode to the next at some frame
    widths (96 or 320 pixels: the same frames, options and thread, other bits; measured
    with x264 core 165), so a resumed run could not equal a clean one. Held to AVX2, x264
    gives the bits of its C code (``asm=0``, SSE2 and AVX2 gave one digest here), which
    CPUs without AVX-512 give too, at the same speed (720p, veryfast and medium). Applied
    where a segment is encoded, not part of a run's key; a user's own ``asm`` in
    ``x264-params`` comes after it and wins."""
    if codec not in ("libx264", "libx264rgb") or not _cpu_has_avx512():
        return {}
    return {"x264-params": "asm=AVX2"}


def encoder_options(config: EncodeConfig) -> dict[str, str]:
    """The codec options a segment encoder gets: crf/preset for the x26x family; for NVENC
    crf becomes constant quality ``cq`` and x264 preset names NVENC's ``p1``..``p7``; for
    libvpx-vp9 crf is constant quality (``b=0``), the preset its ``cpu-used`` speed, rows
    encoded in parallel (``row-mt``); for libsvtav1 its own crf, and x264 preset names its
    preset numbers (:data:`_SVT_PRESETS`; a number as it is)."""
    options: dict[str, str] = {}
    if config.codec == "libvpx-vp9":
        if config.crf is not None and config.options.get("lossless") != "1":  # crf refused
            options.update(crf=str(config.crf), b="0")
        options.update(deadline="good", **{"row-mt": "1"})
        if config.preset in _VPX_SPEEDS:
            options["cpu-used"] = _VPX_SPEEDS[config.preset]
    if config.codec in _X26X:
        if config.crf is not None and "qp" not in config.options:
            options["crf"] = str(config.crf)
        if config.preset:
            options["preset"] = config.preset
    if config.codec == "libx265":
        options["x265-params"] = "log-level=error"
    if config.codec == "libsvtav1":  # they were left unused, without a word (a sweep)
        if config.crf is not None:
            options["crf"] = str(config.crf)
        if config.preset:
            options["preset"] = _SVT_PRESETS.get(config.preset, config.preset)
    if is_nvenc(config.codec):
        if config.crf is not None:  # constant quality, NVENC's nearest to crf
            options.update(rc="vbr", cq=str(config.crf), b="0")
        if config.preset:
            options["preset"] = _NVENC_PRESETS.get(config.preset, config.preset)
    return with_params(options, config.options, first=False)


_DNXHR_PROFILES = {"yuv422p": "dnxhr_hq", "yuv422p10le": "dnxhr_hqx"}


def dnxhr_profile(pix_fmt: str) -> str:
    """The DNxHR profile the ``dnxhd`` encoder gets when given none: FFmpeg's own default,
    the original DNxHD, takes a handful of broadcast sizes and bit rates only and fails to
    open on any other; DNxHR takes any size. HQ for 8-bit 4:2:2, HQX for 10-bit, 4:4:4 for
    the rest (``yuv444p10le``, ``gbrp10le``)."""
    return _DNXHR_PROFILES.get(pix_fmt, "dnxhr_444")


def with_params(
    options: dict[str, str], extra: dict[str, str], *, first: bool = True
) -> dict[str, str]:
    """``options`` updated with ``extra``; ``key=value:...`` parameter strings (x265-params
    and the like) are joined, ``extra``'s before (``first``) or after the ones there. The
    encoder reads them in order, so the user's own settings, put last, win."""
    merged = dict(options)
    for key, value in extra.items():
        if key in _PARAM_OPTIONS and merged.get(key) and value:
            merged[key] = f"{value}:{merged[key]}" if first else f"{merged[key]}:{value}"
        else:
            merged[key] = value
    return merged


def output_pix_fmt(config: EncodeConfig, picture: PictureFormat) -> tuple[str, str]:
    """The pixel format a segment is encoded in, and a note when it keeps less than the
    source: ``config.pix_fmt`` when given, else :func:`~raypipe.media.pixfmt.choose_pix_fmt`
    for the source's format and the encoder."""
    if config.pix_fmt:
        return config.pix_fmt, ""
    return choose_pix_fmt(picture.pix_fmt, config.codec)


_SVT_THIN = 24
_SVT_LONG = 64
"""SVT-AV1 (4.1, PyAV's build) hangs on frames at most :data:`_SVT_THIN` px on one side
and more than :data:`_SVT_LONG` on the other: it takes the frames and never gives a
packet or an error, and the process does not end (320x16, 66x24 and 24x65 hang; 64x24,
320x25, 16x16 and 8x8 encode; a sweep, tests/media/test_encode.py). ffmpeg's own SVT-AV1
1.4 refuses frames under 64 px high at once."""


def size_problem(config: EncodeConfig, pix_fmt: str, width: int, height: int) -> str:
    """Why ``config.codec`` cannot encode ``width`` x ``height`` frames in ``pix_fmt``, with
    what to pass instead (``""``: it can): a size that is not whole chroma samples, in an
    encoder other than those that pad (:data:`_ANY_SIZE`). Raises ``ConfigError`` for an
    unknown ``pix_fmt``."""
    sub_w, sub_h = layout_of(pix_fmt).subsampling
    if config.codec == "dnxhd" and (width < 256 or height < 120):
        return (
            f"dnxhd (DNxHR) encodes frames of at least 256x120, the frames are {width}x"
            f"{height}; use --codec prores_ks or ffv1 for smaller frames"
        )
    if config.codec == "libsvtav1" and min(width, height) <= _SVT_THIN < _SVT_LONG < max(
        width, height
    ):
        return (
            f"libsvtav1 (SVT-AV1) stops responding on frames {_SVT_THIN} px or less on one "
            f"side and more than {_SVT_LONG} on the other, the frames are {width}x{height}; "
            "use --codec libvpx-vp9 or ffv1 for such strips"
        )
    largest = _MAX_SIDE.get(config.codec)
    if largest and max(width, height) > largest:  # "Generic error in an external library",
        return (  # at the first chunk, after Ray's start (a sweep)
            f"{config.codec} encodes frames of at most {largest} px a side, the frames are "
            f"{width}x{height}; use --codec libx265, libvpx-vp9 or ffv1"
        )
    if config.codec == "ffv1" and min(width, height) < 8 and pix_fmt.startswith("yuv"):
        failed, _ = _open_listening("ffv1", {}, pix_fmt, (width, height))
        if failed:  # FFmpeg 8's FFV1 finds no slicing for some thin frames (1x720; a sweep)
            return (
                f"ffv1 does not encode {width}x{height} frames in {pix_fmt} (FFmpeg: "
                f"{failed}); use --codec libvpx-vp9"
            )
    if not (width % sub_w or height % sub_h) or config.codec in _ANY_SIZE:
        return ""
    return (
        f"{pix_fmt} needs a width that is a multiple of {sub_w} and a height that is a "
        f"multiple of {sub_h} in {config.codec}, the frames are {width}x{height}; pass "
        "--pix-fmt yuv444p (pix_fmt='yuv444p' in Python), or --codec libvpx-vp9 or ffv1 "
        "(which take odd sizes), or use a model whose output size is even"
    )


_MAX_SIDE = {"libx264": 16384, "libx264rgb": 16384, "libsvtav1": 16384}
"""The longest side, px, an encoder opens for (x264 and SVT-AV1 refuse 32000x128, which
x265, VP9 and FFV1 take)."""


def output_size_problem(config: EncodeConfig, picture: PictureFormat, scale: float | None) -> str:
    """:func:`size_problem` for the frames a model makes of ``picture``'s upright frames,
    their side ``scale`` times the input's, checked before any work (``""`` where the size
    is not known: ``scale`` ``None``, or not a whole number of pixels). ``config.codec``
    ``"auto"``: as for an MP4 (libx264)."""
    if scale is None or scale <= 0:
        return ""
    width, height = (side * scale for side in picture.upright_size)
    if not (width.is_integer() and height.is_integer()):
        return ""
    config = config.for_output("")
    pix_fmt, _ = output_pix_fmt(config, picture)
    return size_problem(config, pix_fmt, int(width), int(height))


def keeping_hint(picture: PictureFormat, output: str = "") -> str:
    """Which encoders of :data:`KEEPING_ENCODERS` keep ``picture``'s depth and chroma, and
    hold in ``output``'s container (``""``: any): ``--codec libsvtav1 keeps it in a .webm
    file``; where none fits that container, those that keep it and the container that
    holds them; ``""`` where none keeps it."""
    keepers = [
        c for c in KEEPING_ENCODERS
        if encoder_formats(c) and not choose_pix_fmt(picture.pix_fmt, c)[1]
    ]  # fmt: skip
    ext = os.path.splitext(output)[1].lower()
    ext = ext if ext in OUTPUT_FORMATS else ""  # a tensor output's folder, a test's name
    fits = [c for c in keepers if not ext or not container_refuses(output, c)]
    if fits:
        return f"--codec {' or '.join(fits[:3])} keeps it" + (f" in a {ext} file" if ext else "")
    if not keepers:
        return ""
    held = extensions_holding(keepers[0], (".mkv", ".mov", ".mp4"))
    where = f", in a {held[0]} file" if held else ""
    return f"no encoder here keeps it in a {ext} file: --codec {keepers[0]} does{where}"


_CRF_AND_PRESET = frozenset({"libx264", "libx264rgb", "libx265", "libvpx-vp9", "libsvtav1"})
_QUALITY_HINTS = {
    "prores_ks": "its profile is --encoder-option profile=proxy, lt, standard, hq (the "
    "default) or 4444",
    "mpeg4": "its quality is --encoder-option b=BITRATE (such as b=5M)",
    "ffv1": "it is lossless",
    "dnxhd": "its profile follows the pixel format (DNxHR HQ for 8-bit 4:2:2, HQX for 10-bit)",
}


def unused_settings_note(config: EncodeConfig) -> str:
    """A line where ``config`` (as resolved for an output) gives a crf or preset other than
    the defaults to an encoder that has neither: ``--codec prores_ks --preset proxy`` gave
    ProRes HQ, ``--codec mpeg4 --crf 40`` its default bit rate, without a word (a sweep)."""
    codec = config.codec
    if codec in _CRF_AND_PRESET or is_nvenc(codec):
        return ""
    defaults = {f.name: f.default for f in dataclasses.fields(EncodeConfig)}
    unused = []
    if config.crf is not None and config.crf != defaults["crf"]:
        unused.append(f"--crf {config.crf}")
    if config.preset and config.preset != defaults["preset"]:
        unused.append(f"--preset {config.preset}")
    if not unused:
        return ""
    hint = _QUALITY_HINTS.get(codec, f"see `ffmpeg -h encoder={codec}` for its own options")
    verb = "does" if len(unused) == 1 else "do"
    return f"{' and '.join(unused)} {verb} nothing for {codec}, which has no crf or preset: {hint}"


def fidelity_notes(config: EncodeConfig, picture: PictureFormat, output: str = "") -> list[str]:
    """One-line notes on what an output of ``config`` keeps less of than the source: a
    lower bit depth or chroma resolution than the source's (when no ``pix_fmt`` was given;
    with :func:`keeping_hint` for ``output``), an alpha channel (models get RGB, outputs
    have none; not an opaque GIF's: :attr:`PictureFormat.alpha`), HDR10 metadata the
    encoder cannot write. ``config.codec`` ``"auto"``: as for an MP4 (libx264)."""
    config = config.for_output("")
    notes = []
    _, note = output_pix_fmt(config, picture)
    if note:
        hint = keeping_hint(picture, output)
        notes.append(f"{note} ({hint})" if hint else note)
    if picture.alpha:
        notes.append(
            f"the source's alpha channel (transparency, {picture.pix_fmt}) is left out: "
            "models get RGB frames and raypipe writes outputs without alpha"
        )
    if picture.hdr is not None and not hdr_encoder_options(config.codec, picture.hdr):
        notes.append(
            f"encoder {config.codec} does not write HDR10 metadata (mastering display, "
            f"content light level); the output keeps the {picture.colour.transfer} transfer "
            "tag without it. libx265, libx264 and libsvtav1 write it"
        )
    fmt = os.path.splitext(output)[1].lower()
    if picture.stereo and picture.stereo not in _stereo_held(fmt):
        notes.append(
            f"the source's stereo 3D layout ({picture.stereo}) is left out of a "
            f"{fmt or 'this'} output: players show both views as one flat picture"
            + ("; .mkv keeps it" if picture.stereo in _stereo_held(".mkv") else "")
        )
    if picture.projection:
        notes.append(
            f"the source's 360° projection ({picture.projection}) is left out: players show "
            "the output as a flat picture (Google's spatial-media injector marks it again)"
        )
    sar = picture.upright_sar
    if sar not in (None, 1) and fmt in (".nut", ".avi") and config.codec not in _SAR_IN_BITSTREAM:
        notes.append(  # PyAV sets no stream-level ratio, which those muxers write (a sweep)
            f"the source's sample aspect ratio ({sar.numerator}:{sar.denominator}) is left "
            f"out of a {fmt} output with {config.codec}: players show its pictures "
            "stretched; .mkv, .mov or .mp4 keep it"
        )
    return notes


def _stereo_held(extension: str) -> frozenset[str]:
    """The stereo 3D layouts an output of ``extension`` keeps (:data:`STEREO_MODES_HELD`)."""
    return STEREO_MODES_HELD.get(OUTPUT_FORMATS.get(extension, ""), frozenset())


_SAR_IN_BITSTREAM = frozenset({"libx264", "libx264rgb", "libx265", "h264_nvenc", "hevc_nvenc"})
"""Encoders whose video holds its own sample aspect ratio (H.264's and HEVC's VUI), which
NUT and AVI outputs keep; the muxers' own field stays empty."""


_H264_PROFILES = {"4:2:2": "High 4:2:2", "4:4:4": "High 4:4:4 Predictive"}


def playback_note(config: EncodeConfig, picture: PictureFormat) -> str:
    """A line for an H.264 output (``config`` as resolved for the output) in a pixel format
    beyond 8-bit 4:2:0 (a 10-bit phone video, 4:2:2 or 4:4:4 footage, kept by default):
    FFmpeg, VLC and mpv play those profiles, browsers, QuickTime, phones and TVs do not
    (their decoders have H.264's 8-bit 4:2:0 profiles), and the line says what to pass
    instead (for an odd-sized source, whose frames no 4:2:0 H.264 holds, another codec).
    ``""`` for any other output."""
    if config.codec != "libx264":
        return ""
    pix_fmt, _ = output_pix_fmt(config, picture)
    layout = layout_of(pix_fmt)
    if layout.rgb or (layout.bit_depth <= 8 and layout.chroma in ("4:2:0", "gray")):
        return ""
    profile = _H264_PROFILES.get(layout.chroma, "High 10")
    width, height = picture.upright_size
    if width % 2 or height % 2:  # 4:2:0 H.264 and HEVC take even sizes only
        instead = (
            f"at {width}x{height} no 4:2:0 H.264 can be written (it needs even sizes); "
            "--codec libvpx-vp9 --pix-fmt yuv420p writes 4:2:0 VP9 at any size, which "
            "browsers and Android play"
        )
    elif layout.chroma in ("4:2:0", "gray"):
        instead = (
            "--codec libx265 keeps the 10 bits in HEVC, which Apple devices, Android, TVs and "
            "browsers with HEVC play, or --pix-fmt yuv420p writes the 8-bit H.264 every "
            "player plays"
        )
    else:
        instead = "--pix-fmt yuv420p writes the 8-bit 4:2:0 H.264 every player plays"
    source = layout_of(picture.pix_fmt)
    kept = (source.bit_depth, source.chroma) == (layout.bit_depth, layout.chroma)
    why = "the source's depth and chroma" if kept else f"for the source's {source.describe()}"
    return (
        f"the output is H.264 {profile} ({pix_fmt}, {why}): FFmpeg, VLC and mpv play it, "
        f"but browsers, QuickTime, phones and most TVs do not; {instead}"
    )


def frame_durations(
    pts: np.ndarray, end_pts: int | None, rate: Fraction, time_base: Fraction
) -> np.ndarray:
    """Each frame's duration (time base units): the next frame's pts minus its own, and for
    the last ``end_pts`` minus its pts (``None``: the duration before it, else 1/rate)."""
    pts = np.asarray(pts, dtype=np.int64)
    if end_pts is None:
        if len(pts) > 1:
            end_pts = int(pts[-1] + (pts[-1] - pts[-2]))
        else:
            step = round(1 / (rate * time_base)) if rate and time_base else 1
            end_pts = int(pts[-1]) + max(1, step) if len(pts) else 0
    return np.diff(np.append(pts, end_pts)).astype(np.int64)


_TIMED_BITSTREAMS = frozenset({"libx264", "libx264rgb"})
"""Encoders that write their time base into the bitstream (H.264's VUI timing): given the
source's (MP4's 1/12800), an H.264 said 12800 fps, which a raw ``.h264`` extract, or a
one-frame MPEG-TS, shows. (libx265 writes the frame rate FFmpeg gives it instead, which is
the video's already.)"""


def encoder_clock(codec: str, frame_ticks: Fraction | int, pts: np.ndarray) -> FrameClock:
    """``codec``'s clock for frames at ``pts``: counting in frames of the video's
    ``frame_ticks`` (:attr:`~raypipe.media.probe.VideoInfo.frame_ticks`) where the encoder
    writes its time base into its bitstream (:data:`_TIMED_BITSTREAMS`), as ``ffmpeg`` has
    it count (1/25 for 25 fps: its headers then say 25 fps; :mod:`raypipe.media.frame_clock`);
    the source's time base otherwise. Raises ``EncodeError`` where two frames fall on one
    frame's number (the video's planning said none do)."""
    step = Fraction(frame_ticks)
    if codec not in _TIMED_BITSTREAMS or step <= 1:
        step = Fraction(1)
    try:
        return FrameClock.of(pts, step)
    except ValueError as e:
        raise EncodeError(f"frame times not on the video's frame grid: {e}") from e


def _checked_dts(pts: list[int], dts: list[int]) -> np.ndarray:
    """The encoder's dts, or new ones when they are not usable: rising and never after
    their pts. (libx265 gives garbage dts for a segment of two frames, its B-frame delay
    being unset.) New dts are the sorted pts moved back by the largest reordering, which
    keeps every packet's dts at or before its pts."""
    got = np.asarray(dts, dtype=np.int64)
    if len(pts) == 0 or (
        _NO_DTS not in dts
        and bool(np.all(np.diff(got) > 0))
        and bool(np.all(got <= np.asarray(pts)))
        and int(got[0]) >= min(pts) - (max(pts) - min(pts)) - 1
    ):
        return got
    ordered = np.sort(np.asarray(pts, dtype=np.int64))
    delay = int(np.max(ordered - np.asarray(pts, dtype=np.int64)))
    return ordered - delay


def mux_with_dts(
    out: av.container.OutputContainer, packets: list[av.Packet], dts: np.ndarray
) -> None:
    """Mux an encoder's ``packets`` with ``dts`` (from :func:`_checked_dts`) in place of their
    own: a muxer refuses a packet whose dts is after its pts or not rising, which is what
    libx265's garbage dts can be."""
    for packet, packet_dts in zip(packets, dts.tolist(), strict=True):
        packet.dts = packet_dts
    out.mux(packets)


def _default_picture(frames: np.ndarray) -> PictureFormat:
    deep = frames.dtype == np.uint16
    return PictureFormat(
        coded_width=int(frames.shape[2]),
        coded_height=int(frames.shape[1]),
        pix_fmt="yuv420p10le" if deep else "yuv420p",
    )


def _rgb_frame(pixels: np.ndarray, rgb_format: str) -> av.VideoFrame:
    """An RGB frame over ``pixels`` ``(H, W, 3)`` where they lie (no copy; the reformatter
    reads them once), or a copy when their rows are not contiguous."""
    try:
        return av.VideoFrame.from_numpy_buffer(pixels, format=rgb_format)
    except ValueError:
        return av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format=rgb_format)


def encode_segment(
    frames: np.ndarray,
    pts: np.ndarray,
    *,
    time_base: Fraction,
    rate: Fraction,
    config: EncodeConfig,
    picture: PictureFormat | None = None,
    end_pts: int | None = None,
    threads: int = 0,
    frame_ticks: Fraction | int = 1,
) -> Segment:
    """Encode RGB ``frames`` ``(n, H, W, 3)`` (uint8, or uint16 at 16 bits) with timestamps
    ``pts`` into a segment.

    ``picture``: the source's picture facts (pixel format, colour, HDR; ``None``: an
    untagged 8-bit, or for uint16 frames 10-bit, 4:2:0 source). ``end_pts``: where the
    last frame ends (the next chunk's start, or the video's end); ``None`` repeats the
    duration before it. ``rate``: the video's average frame rate (``0``: unknown).
    ``threads``: the encoder's threads, 0 to let it choose (as many as the machine has
    cores); an encode task passes the CPUs it holds, so that tasks running side by side do
    not each start a thread per core. An encoder option ``threads`` wins over it.
    ``frame_ticks``: the video's ticks of a frame (:attr:`VideoInfo.frame_ticks`), the same
    for every segment of a video: encoders that write their time base into the bitstream
    count in frames then (:func:`encoder_clock`).
    ``config.codec`` ``"auto"`` here, not knowing the output: libx264 (the encode task
    resolves it for its video's output first: :meth:`EncodeConfig.for_output`).
    """
    config = config.for_output("")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype not in (np.uint8, np.uint16):
        raise EncodeError(
            f"expected RGB uint8 or uint16 frames (n, H, W, 3), got {frames.dtype} {frames.shape}"
        )
    n, height, width, _ = frames.shape
    picture = picture or _default_picture(frames)
    pix_fmt, _ = output_pix_fmt(config, picture)
    try:
        layout = layout_of(pix_fmt)
    except ConfigError as e:
        raise EncodeError(str(e)) from e
    problem = size_problem(config, pix_fmt, width, height)
    if problem:
        raise EncodeError(problem)
    tags = picture.output_tags(pix_fmt, config.codec)
    durations = frame_durations(pts, end_pts, rate, time_base)
    duration_of = {int(p): int(d) for p, d in zip(pts, durations)}
    # HDR parameters first: the user's own (last in encoder_options) win
    options = with_params(encoder_options(config), hdr_encoder_options(config.codec, picture.hdr))
    options = with_params(options, x264_cpu_params(config.codec))  # first: the user's win
    if config.codec == "dnxhd" and "profile" not in options:
        options["profile"] = dnxhr_profile(pix_fmt)
    # RGB -> YUV with the source's matrix and range, chroma point-sampled (media/picture.py)
    matrix = None if layout.rgb else sws_colorspace(tags.matrix)
    range_ = None if layout.rgb else sws_range(tags.range)
    rgb_format = "rgb48le" if frames.dtype == np.uint16 else "rgb24"
    buf = io.BytesIO()
    out_pts: list[int] = []
    out_dts: list[int] = []
    out_durations: list[int] = []

    held: list[av.Packet] = []  # muxed once the encoder is flushed and their dts checked
    # the encoder's clock: one tick a frame where the video's frames can be counted in
    # frames (the timing H.264 writes into its headers), else the source's own
    clock = encoder_clock(config.codec, frame_ticks, pts)
    step = int(clock.step) if clock.exact else 0  # frames on whole ticks: times multiply back
    back = clock.back()  # else each frame's number gives back its time, and dts are made new

    def collect(packets: list[av.Packet]) -> None:
        for packet in packets:
            if packet.pts is None:
                raise EncodeError(f"encoder {config.codec} gave a packet without pts")
            if clock.step != 1:  # back to the source's time base, exact
                dts = packet.dts  # a garbage one (_checked_dts) stays unknown
                if step:
                    packet.pts *= step
                    packet.dts = dts * step if dts is not None and abs(dts) < 2**40 else None
                else:
                    packet.pts, packet.dts = back[packet.pts], None
                packet.time_base = time_base
            out_pts.append(packet.pts)
            out_dts.append(_NO_DTS if packet.dts is None else packet.dts)
            out_durations.append(duration_of.get(packet.pts, 0))
            packet.duration = out_durations[-1]
        held.extend(packets)

    sar = picture.output_sar(width, height)  # the display aspect kept
    try:
        kind = av.codec.Codec(config.codec, "w").canonical_name
        with av.open(buf, mode="w", format=segment_format(kind) or "nut") as out:
            stream = cast(
                av.VideoStream,
                out.add_stream(config.codec, rate=rate or None, options=options),
            )
            stream.width = width
            stream.height = height
            stream.pix_fmt = pix_fmt
            stream.time_base = time_base
            ctx = stream.codec_context
            ctx.time_base = clock.time_base(time_base)
            if threads:
                ctx.thread_count = threads
            tags.apply(ctx)
            if sar:
                ctx.sample_aspect_ratio = sar
            to_yuv = VideoReformatter()  # one swscale context for the whole segment
            # full-range 8-bit chroma through 16 bits: swscale's own is half a step low
            wide = wide_twin(pix_fmt) if range_ == ColorRange.JPEG else None

            def convert(pixels: np.ndarray) -> av.VideoFrame:
                whole = fields.padded_to_whole(pixels, pix_fmt)  # an odd size: see there
                frame = to_yuv.reformat(
                    _rgb_frame(whole, rgb_format),
                    format=wide or pix_fmt,
                    dst_colorspace=matrix,
                    dst_color_range=range_,
                    interpolation=Interpolation.POINT,
                    threads=threads,  # the task's CPUs, as the encoder's (0: swscale's choice)
                )
                if wide:
                    frame = narrowed(frame, pix_fmt)
                if whole is pixels:
                    return frame
                return fields.cropped(frame, pixels.shape[1], pixels.shape[0])

            # an interlaced source's fields each get their own chroma rows: media/fields.py
            by_field = picture.interlaced and fields.apart(pix_fmt, height)
            for i in range(n):
                if by_field:
                    frame = fields.fields_to(frames[i], convert)
                else:
                    frame = convert(frames[i])
                tags.apply(frame)
                frame.pts = int(clock.numbers[i])
                frame.duration = clock.duration(int(durations[i]))
                frame.time_base = clock.time_base(time_base)
                collect(stream.encode(frame))
            collect(stream.encode(None))
            dts = _checked_dts(out_pts, out_dts)
            mux_with_dts(out, held, dts)
    except av.error.FFmpegError as e:
        # FFmpeg's own reason, from a second open that listens (the first's went unsaid:
        # "Generic error in an external library"; a sweep)
        why = _opens_problem(config.codec, tuple(sorted(options.items())), pix_fmt, (width, height))
        raise EncodeError(
            f"encoder {config.codec} ({pix_fmt}, {width}x{height}) failed: {e}"
            + (f"; {why}" if why else "")
        ) from e
    return Segment(
        container=buf.getvalue(),
        pts=np.asarray(out_pts, dtype=np.int64),
        dts=dts,
        time_base=time_base,
        durations=np.asarray(out_durations, dtype=np.int64),
        colour=tags,
        rate=rate or None,
        sar=sar,
    )
