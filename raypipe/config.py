"""Frozen, keyword-only configuration.

Five small dataclasses describe a run; each validates itself in ``__post_init__`` so a bad
value fails before any work starts. The environment is read here and nowhere else
(:func:`ray_address_from_env`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from raypipe.errors import ConfigError

Device = Literal["auto", "cpu", "gpu"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "gpu")
DECODERS: tuple[str, ...] = ("auto", "cpu", "nvdec")  # raypipe.media.decode
HANDOFFS: tuple[str, ...] = ("auto", "rgb", "yuv")
"""``--handoff``: how decoded frames travel to the inference actors (raypipe.media.yuv):
``rgb`` always as RGB, ``yuv`` as packed YUV wherever the source and the model allow it,
``auto`` as YUV only to actors that hold GPUs."""
STAGES: tuple[str, ...] = ("auto", "split", "fused")
"""``--stages``: how a chunk's decode, model and encode are placed
(:mod:`raypipe.distributed.fused`): ``split`` decode and encode tasks around a pool of
inference actors, the chunk's frames passed between them through Ray's object store;
``fused`` all three in one actor, the frames never leaving its process; ``auto`` fused
where the actors run on the CPU (no GPU in the plan), split where they hold GPUs."""
DEFAULT_MODEL = "builtin:identity"


def _positive(name: str, value: float | None) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0
    ):
        raise ConfigError(f"{name} must be a number > 0, got {_short_repr(value)}")


def _whole(obj: object, name: str, low: int = 1, *, none: bool = False, also: str = "") -> None:
    """Check ``obj.name`` is an integer >= ``low`` (or None where ``none``) and keep it as a
    plain int: a NumPy integer (a notebook computes them) is one, and was refused as "must
    be an integer"; a bool is not (``workers=True`` ran one worker), nor text."""
    value = getattr(obj, name)
    if value is None and none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(
            f"{name} must be an integer >= {low}{' or None' if none else ''}{also}, "
            f"got {_short_repr(value)}"
        )
    object.__setattr__(obj, name, int(value))


def _flag(obj: object, name: str) -> None:
    """Check ``obj.name`` is True or False: ``overwrite="no"`` replaced the output."""
    value = getattr(obj, name)
    if type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"):
        object.__setattr__(obj, name, bool(value))
    elif not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {_short_repr(value)}")


@dataclass(frozen=True, kw_only=True)
class ChunkConfig:
    """How a video is cut into chunks.

    Chunks are half-open display ranges ``[start_pts, end_pts)`` that start on a keyframe
    and hold about ``chunk_frames`` frames: consecutive GOPs are grouped until the chunk
    reaches ``chunk_frames``. A GOP longer than ``chunk_frames`` is split when
    ``split_gops`` is true; the pieces after the first decode from the GOP's keyframe and
    drop the frames before their start (pre-roll), which costs decode time but spreads a
    long GOP over several workers (a decode task that decoded the piece before goes on with
    its open decoder instead: :func:`raypipe.media.decode.decode_chunk`'s ``carry``).
    ``chunk_mib`` caps a chunk's frames, decoded (RGB, 3 bytes a pixel) and as the model's
    output, at that many MiB: large frames make shorter chunks (at the default, 21 frames of
    4K through a model that keeps the size, 34 of 1080p through one that doubles it; 1080p
    otherwise keeps 64). ``None``: no cap. The cap does not apply to sampled analysis runs
    (``every_n_frames``, ``sample_fps``), whose chunks keep few of their frames. ``decoder``
    and ``handoff`` say how chunks are decoded and how their frames travel to the actors
    (:data:`DECODERS`, :data:`HANDOFFS`).
    """

    chunk_frames: int = 64
    chunk_mib: float | None = 1024
    split_gops: bool = True
    every_n_frames: int = 1  # analysis (tensor outputs) only: frames 0, N, 2N, ...
    sample_fps: float | None = None  # analysis only: the first frame of each 1/F s interval
    decoder: str = "auto"  # one of DECODERS (raypipe.media.decode)
    handoff: str = "auto"  # one of HANDOFFS: decoded frames to the actors as RGB or YUV

    def __post_init__(self) -> None:
        _whole(self, "chunk_frames")
        _flag(self, "split_gops")
        if self.chunk_mib is not None and (
            isinstance(self.chunk_mib, bool)
            or not isinstance(self.chunk_mib, numbers.Real)
            or not 0 < self.chunk_mib < math.inf
        ):
            raise ConfigError(
                f"chunk_mib must be a number > 0 (None: no cap), got {self.chunk_mib!r}"
            )
        _whole(self, "every_n_frames")
        _positive("sample_fps", self.sample_fps)
        if self.sample_fps is not None and self.every_n_frames != 1:
            raise ConfigError("give every_n_frames or sample_fps, not both")
        if self.decoder not in DECODERS:
            raise ConfigError(f"decoder must be auto, cpu or nvdec, got {self.decoder!r}")
        if self.handoff not in HANDOFFS:
            raise ConfigError(f"handoff must be auto, rgb or yuv, got {self.handoff!r}")

    @property
    def samples(self) -> bool:
        """Whether only some frames are processed (allowed for tensor outputs only)."""
        return self.every_n_frames != 1 or self.sample_fps is not None

    def frames_per_chunk(self, width: int, height: int, *, output_scale: float = 1.0) -> int:
        """About how many frames of ``width`` x ``height`` px a chunk holds: ``chunk_frames``,
        or fewer where ``chunk_mib`` caps them (at least one). ``output_scale``: the model's
        output side over its input's (0: no frames out, an analysis model)."""
        if self.chunk_mib is None or self.samples or width < 1 or height < 1:
            return self.chunk_frames
        cap = int(self.chunk_mib * 2**20 // frame_bytes(width, height, output_scale))
        return max(1, min(self.chunk_frames, cap))


def frame_bytes(width: int, height: int, output_scale: float) -> float:
    """The bytes one frame of ``width`` x ``height`` px holds decoded (RGB, 3 bytes a pixel)
    and as a model's output of ``output_scale`` times its side (0: no frame out): what
    ``chunk_mib`` caps and what the local Ray's object store is sized for."""
    return width * height * 3 * (1 + output_scale * output_scale)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Which model runs, where, and in batches of how many frames.

    ``model`` is ``builtin:NAME`` or a path/fsspec URL of an ``.onnx`` file. ``device``
    ``gpu`` fails loudly when no GPU provider is granted; ``auto`` takes the best there is.
    ``precision`` ``fp16`` builds TensorRT engines in FP16. ``engine_cache`` is the shared
    TensorRT engine cache (any fsspec URL, e.g. ``s3://bucket/engines``). ``tile``,
    ``tile_overlap``, ``resize`` and ``pad_multiple`` override the model's
    :class:`~raypipe.infer.sidecar.ModelSpec` (None: keep the spec's), and so do ``window``
    (frames before and after each output frame of a temporal model) and ``warmup_frames``
    (frames that warm a recurrent model's state up before each chunk). ``processor`` runs a
    user :class:`raypipe.Processor` instead of ``model``: a subclass, an instance, or a target
    ``path/to/file.py:Class`` / ``package.module:Class`` (checked when the run loads it).
    """

    model: str = DEFAULT_MODEL
    device: Device = "auto"
    batch_size: int = 8
    precision: Literal["fp32", "fp16"] = "fp32"
    engine_cache: str | None = None  # fsspec URL; None: RAYPIPE_ENGINE_CACHE, else local
    tile: int | None = None  # override the model spec's tiling (px), see ModelSpec
    tile_overlap: int | None = None
    resize: Literal["none", "stretch", "letterbox"] | None = None  # fixed-size models
    pad_multiple: int | None = None  # override the spec's: pad H and W to multiples (px)
    window: tuple[int, int] | None = None  # override the spec's: frames (before, after)
    warmup_frames: int | None = None  # override the spec's: recurrent warm-up frames
    processor: Any = None  # a raypipe.Processor subclass/instance or "file.py:Class" instead

    def __post_init__(self) -> None:
        if isinstance(self.model, os.PathLike):  # a pathlib.Path, as inputs and outputs take
            object.__setattr__(self, "model", os.fspath(self.model))
        if isinstance(self.model, (bytes, bytearray, memoryview)):
            raise ConfigError(
                f"model must be 'builtin:NAME' or a path/URL of an .onnx file, got "
                f"{len(self.model)} bytes; write them to a .onnx file and pass its path"
            )
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(
                f"model must be 'builtin:NAME' or a path/URL of an .onnx file, got "
                f"{_short_repr(self.model)}"
            )
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        _whole(self, "batch_size")
        if self.precision not in ("fp32", "fp16"):
            raise ConfigError(f"precision must be 'fp32' or 'fp16', got {self.precision!r}")
        if isinstance(self.engine_cache, os.PathLike):
            object.__setattr__(self, "engine_cache", os.fspath(self.engine_cache))
        if self.engine_cache is not None and (
            not isinstance(self.engine_cache, str) or not self.engine_cache.strip()
        ):  # 123 was taken, and left unused on the CPU (a sweep)
            raise ConfigError(
                f"engine_cache must be a folder's path or URL, got {self.engine_cache!r}"
            )
        if self.processor is not None:
            if isinstance(self.processor, str) and ":" not in self.processor:
                raise ConfigError(
                    "processor must be 'path/to/file.py:Class', 'package.module:Class' or a "
                    f"raypipe.Processor subclass, got {self.processor!r}"
                )
            if self.model != DEFAULT_MODEL:
                raise ConfigError(
                    f"give a model or a processor, not both (model={self.model!r}, "
                    f"processor={self.processor!r}); a processor loads its models itself"
                )
        _whole(self, "pad_multiple", none=True, also=" (px)")
        self._check_temporal()

    def _check_temporal(self) -> None:
        from raypipe.infer.temporal import check_warmup, check_window

        object.__setattr__(self, "window", check_window(self.window))
        if self.warmup_frames is not None:
            object.__setattr__(self, "warmup_frames", check_warmup(self.warmup_frames))
        if self.processor is not None and (self.window or self.warmup_frames is not None):
            raise ConfigError(
                "window and warmup_frames override a model's spec; a processor declares them "
                "as class attributes (window = (B, A), warmup_frames = K)"
            )
        spec_only = [
            name
            for name in ("tile", "tile_overlap", "resize", "pad_multiple")
            if getattr(self, name) is not None
        ]
        if self.processor is not None and spec_only:  # they were left unused, without a word
            raise ConfigError(
                f"{' and '.join(spec_only)} override a model's spec, and a processor has none: "
                "its frames come as the video has them, and its own code tiles, pads or "
                "resizes them for its models"
            )


AUTO_CODEC = "auto"
"""``EncodeConfig.codec``'s default: the encoder follows the output's container."""
AUTO_CODECS = ("libx264", "libvpx-vp9")
"""The encoders ``auto`` may pick (:func:`default_video_codec`)."""


OUTPUT_FORMATS = {
    ".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm",
    ".nut": "nut", ".avi": "avi", ".ts": "mpegts",
}  # fmt: skip
"""Output extensions raypipe writes, and FFmpeg's muxer for each."""
LISTED_OUTPUT_EXTENSION = ".mp4"
"""The extension of an archive's output whose input has one raypipe does not write (an old
``.wmv``, ``.flv``, ``.mpg``, a camcorder's ``.mts``): MP4, which plays everywhere."""


def default_video_codec(output: str) -> str:
    """The encoder ``ffmpeg`` picks for an output named ``output`` (``--codec auto``):
    libvpx-vp9 for ``.webm``, which holds no H.264, else libx264."""
    return "libvpx-vp9" if os.path.splitext(output)[1].lower() == ".webm" else "libx264"


X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
    "veryslow", "placebo",
)  # fmt: skip
"""x264's preset names, fastest first; x265 takes the same, VP9 gets the matching speed."""
_CRF_MAX = {"libx264": 51, "libx264rgb": 51, "libx265": 51}
"""The largest crf of encoders whose range is not VP9's 0..63."""


def crf_max(codec: str) -> int:
    """The largest crf ``codec`` takes (x264's and x265's 51, else VP9's and SVT-AV1's 63)."""
    return _CRF_MAX.get(codec, 63)


_X264_NAMED = frozenset({AUTO_CODEC, "libx264", "libx264rgb", "libx265", "libvpx-vp9"})
"""Encoders whose ``preset`` is one of :data:`X264_PRESETS` (``auto`` picks x264 or VP9);
an unknown name failed only at the first chunk's encode."""


@dataclass(frozen=True, kw_only=True)
class EncodeConfig:
    """Video encoder settings, identical for every segment so segments concatenate.

    ``codec`` ``"auto"``: the encoder ``ffmpeg`` picks for the output's container, libx264,
    or libvpx-vp9 for WebM (:meth:`for_output`). ``crf`` and ``preset`` apply to the
    x264/x265 family, and to libvpx-vp9 as constant quality (``crf``, ``b=0``) and speed
    (``cpu-used``); codecs without them ignore them. ``pix_fmt`` ``None`` follows the
    source's bit depth and chroma, or the nearest the codec has
    (:func:`raypipe.media.pixfmt.choose_pix_fmt`). ``options`` are passed to the encoder as
    they are (``{"qp": "0"}`` for lossless x264).
    """

    codec: str = AUTO_CODEC
    crf: int | None = 18
    preset: str | None = "medium"
    pix_fmt: str | None = None
    options: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.codec:
            raise ConfigError("codec must name an encoder, e.g. libx264, got ''")
        # x264 and x265 take a crf above 51 as 51, without a word; one message names the
        # range of the encoder at hand (a crf of 99 was "within 0..63", then 55 "0..51")
        limit = max(map(crf_max, AUTO_CODECS)) if self.codec == AUTO_CODEC else crf_max(self.codec)
        if isinstance(self.crf, numbers.Integral) and not isinstance(self.crf, bool):
            object.__setattr__(self, "crf", int(self.crf))  # a NumPy integer
        if self.crf is not None and (
            not isinstance(self.crf, int)
            or isinstance(self.crf, bool)
            or not 0 <= self.crf <= limit
        ):
            within = f"{self.codec}'s crf is within 0..{limit}"
            if self.codec == AUTO_CODEC:
                within = "crf is within 0..63 (VP9's, for a .webm; libx264's, for the rest: 0..51)"
            if not isinstance(self.crf, int) or isinstance(self.crf, bool):
                within = f"crf must be a whole number; {within}"  # '18' was "out of range"
            raise ConfigError(f"{within}, got {self.crf!r}")
        if not isinstance(self.options, dict):
            raise ConfigError(
                f"encoder options must be a dict of names to values, got {self.options!r}"
            )
        object.__setattr__(
            self, "options", {str(k): _option_text(k, v) for k, v in self.options.items()}
        )
        if self.preset and self.codec in _X264_NAMED and self.preset not in X264_PRESETS:
            raise ConfigError(
                f"preset {self.preset!r} is not one of x264's: {', '.join(X264_PRESETS)}"
                + (" (VP9 gets the matching cpu-used)" if self.codec == "libvpx-vp9" else "")
            )
        if self.preset and self.codec == "libsvtav1" and self.preset not in X264_PRESETS:
            svt_number = self.preset.lstrip("-").isdigit() and -1 <= int(self.preset) <= 13
            if not svt_number:
                raise ConfigError(
                    f"preset {self.preset!r} is neither one of x264's ({', '.join(X264_PRESETS)}"
                    "), which SVT-AV1 gets as its matching preset, nor SVT-AV1's own, -1..13"
                )

    def for_output(self, output: str) -> EncodeConfig:
        """This config for ``output``: ``codec="auto"`` made the encoder for its container
        (:func:`default_video_codec`); any other codec as it is."""
        if self.codec != AUTO_CODEC:
            return self
        return dataclasses.replace(self, codec=default_video_codec(output))

    def candidates(self) -> tuple[EncodeConfig, ...]:
        """The configs an output may get: this one, or for ``codec="auto"`` one for each
        encoder it may pick (:data:`AUTO_CODECS`)."""
        if self.codec != AUTO_CODEC:
            return (self,)
        return tuple(
            dataclasses.replace(self, codec=codec)
            for codec in AUTO_CODECS
            if self.crf is None or self.crf <= crf_max(codec)  # a crf of 52..63: VP9 alone
        )


def _option_text(name: object, value: object) -> str:
    """An encoder option's value as FFmpeg takes it: text; numbers as their digits, a bool
    as 1 or 0 (``{"qp": 0}`` from Python failed at the first encode, naming no option)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ConfigError(
        f"encoder option {name!r} must be text or a number, got {type(value).__name__} {value!r}"
    )


_MIN_STORE_BYTES = 75 * 2**20  # Ray refuses a smaller object store (78643200 bytes)


def ray_client_refused(address: str) -> str:
    """Why a Ray Client address (``ray://``; ``""``: this process is connected through Ray
    Client) cannot run raypipe, and what to do instead: Ray Data does not work through Ray
    Client (its executor needs a driver on the cluster; the run failed after 7 s with an
    AttributeError about ``core_worker``, a sweep)."""
    what = f"{address!r} is a Ray Client address" if address else "this process is on Ray Client"
    return (
        f"{what}, and Ray Data, which raypipe runs on, does not "
        "work through Ray Client: run raypipe on a machine of the cluster with the GCS's "
        "address (HOST:6379, `ray start --head`'s; or auto), or from elsewhere as a job: "
        "`ray job submit --address http://HOST:8265 -- raypipe run ...`"
    )


@dataclass(frozen=True, kw_only=True)
class RuntimeConfig:
    """Where and how wide the pipeline runs.

    ``address`` ``None`` uses the cluster Ray is connected to, else ``RAY_ADDRESS``, else a
    local Ray started for the run. ``workers`` ``None`` means one inference actor per GPU in
    the cluster, or one CPU actor when there is none (fused stages on the CPU: one actor per
    two of the cluster's CPUs); ``workers_per_gpu`` k shares each GPU
    between k actors (``num_gpus=1/k``: several sessions keep a card busy while others wait
    on I/O; Ray isolates nothing, so each gets 1/k of the card's memory as its budget).
    ``actor_num_cpus`` is the CPU share each
    inference actor reserves: sized explicitly so actors never take every CPU slot and starve
    the decode and encode tasks. ``local_object_store_bytes``: the object store of a local
    Ray started for the run; ``None`` sizes it from the video's chunks where a run knows
    them (:func:`raypipe.distributed.cluster.local_store_bytes`), else Ray's default.
    ``stages``: one of :data:`STAGES` (``auto``: the chunk's stages in one actor where the
    actors run on the CPU).
    """

    address: str | None = None
    workers: int | None = None
    workers_per_gpu: int = 1
    actor_num_cpus: float = 1.0
    local_num_cpus: int | None = None
    local_num_gpus: int | None = None
    local_object_store_bytes: int | None = None
    stages: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.address, os.PathLike) or not isinstance(self.address, str | None):
            raise ConfigError(
                "address must be a Ray address ('auto', 'HOST:PORT') or "
                f"None, got {_short_repr(self.address)}"
            )
        if (self.address or "").startswith("ray://"):
            raise ConfigError(ray_client_refused(self.address))
        _whole(self, "local_object_store_bytes", _MIN_STORE_BYTES, none=True,
               also=" (Ray's smallest store, 75 MiB)")  # fmt: skip
        _whole(self, "local_num_cpus", none=True)
        _whole(self, "local_num_gpus", 0, none=True)
        if self.stages not in STAGES:
            raise ConfigError(f"stages must be auto, split or fused, got {self.stages!r}")
        _whole(self, "workers", none=True)
        _positive("actor_num_cpus", self.actor_num_cpus)
        _whole(self, "workers_per_gpu")
        if self.workers_per_gpu > 16:
            raise ConfigError(
                f"workers_per_gpu must be an integer within 1..16, got {self.workers_per_gpu!r}"
            )


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything one run needs, plus what it does with its results."""

    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    overwrite: bool = False
    stats_path: str | None = None
    quiet: bool = False  # no progress display
    verbose: bool = False  # Ray's own log lines on the terminal too (always in its log files)

    def __post_init__(self) -> None:
        for name in ("overwrite", "quiet", "verbose"):
            _flag(self, name)
        if isinstance(self.stats_path, os.PathLike):  # as inputs and outputs take them
            object.__setattr__(self, "stats_path", os.fspath(self.stats_path))
        if not isinstance(self.stats_path, str | None):
            raise ConfigError(
                f"stats_path must be a path or URL of a .json file, or None, got "
                f"{_short_repr(self.stats_path)}"
            )
        for name, kind in _SECTION_TYPES.items():
            value = getattr(self, name)
            if not isinstance(value, kind):  # RunConfig(model="builtin:x") crashed in the run
                raise ConfigError(
                    f"RunConfig's {name} must be a {kind.__name__}, got {_short_repr(value)}; "
                    f"pass RunConfig({name}={kind.__name__}(...)), or the flat option to "
                    f"raypipe.process_video (model='builtin:sharpen', crf=18, ...)"
                )


def _short_repr(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: a message names the value it refuses
    without quoting megabytes of it."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


_SECTION_TYPES: dict[str, type] = {
    "chunk": ChunkConfig, "model": ModelConfig, "encode": EncodeConfig, "runtime": RuntimeConfig,
}  # fmt: skip


def engine_cache_from_env() -> str | None:
    """The shared engine cache URL from ``RAYPIPE_ENGINE_CACHE``, or ``None``."""
    return os.environ.get("RAYPIPE_ENGINE_CACHE") or None


def ray_address_from_env() -> str | None:
    """The cluster address from ``RAY_ADDRESS``, or ``None``: the one place raypipe reads it."""
    return os.environ.get("RAY_ADDRESS") or None


def ray_auth_mode_from_env() -> str | None:
    """Ray's ``RAY_AUTH_MODE`` (``token``, ``disabled``), or ``None`` when unset."""
    return os.environ.get("RAY_AUTH_MODE")


_OPTION_FIELDS: dict[str, tuple[str, str]] = {
    "chunk_frames": ("chunk", "chunk_frames"),
    "chunk_mib": ("chunk", "chunk_mib"),
    "split_gops": ("chunk", "split_gops"),
    "every_n_frames": ("chunk", "every_n_frames"),
    "sample_fps": ("chunk", "sample_fps"),
    "decoder": ("chunk", "decoder"),
    "handoff": ("chunk", "handoff"),
    "model": ("model", "model"),
    "device": ("model", "device"),
    "batch_size": ("model", "batch_size"),
    "precision": ("model", "precision"),
    "engine_cache": ("model", "engine_cache"),
    "tile": ("model", "tile"),
    "tile_overlap": ("model", "tile_overlap"),
    "resize": ("model", "resize"),
    "pad_multiple": ("model", "pad_multiple"),
    "window": ("model", "window"),
    "warmup_frames": ("model", "warmup_frames"),
    "processor": ("model", "processor"),
    "codec": ("encode", "codec"),
    "crf": ("encode", "crf"),
    "preset": ("encode", "preset"),
    "pix_fmt": ("encode", "pix_fmt"),
    "encoder_options": ("encode", "options"),
    "address": ("runtime", "address"),
    "workers": ("runtime", "workers"),
    "workers_per_gpu": ("runtime", "workers_per_gpu"),
    "actor_num_cpus": ("runtime", "actor_num_cpus"),
    "local_num_cpus": ("runtime", "local_num_cpus"),
    "local_num_gpus": ("runtime", "local_num_gpus"),
    "local_object_store_bytes": ("runtime", "local_object_store_bytes"),
    "stages": ("runtime", "stages"),
}
_SECTIONS = {
    "chunk": ChunkConfig,
    "model": ModelConfig,
    "encode": EncodeConfig,
    "runtime": RuntimeConfig,
}
_RUN_FIELDS = ("overwrite", "stats_path", "quiet", "verbose")


def build_run_config(base: RunConfig | None = None, **options: object) -> RunConfig:
    """A :class:`RunConfig` from flat option names (the CLI's and ``process_video``'s).

    ``build_run_config(model="builtin:invert", chunk_frames=32, workers=2)``; options left
    out keep ``base``'s values (or the defaults). Unknown names raise :class:`ConfigError`.
    """
    import dataclasses

    if base is not None and not isinstance(base, RunConfig):  # process_video(in, out, "m")
        raise ConfigError(
            f"config must be a RunConfig, got {_short_repr(base)}; pass the model and other "
            "options by name: raypipe.process_video(input, output, model='builtin:sharpen')"
        )
    base = base or RunConfig()
    per_section: dict[str, dict[str, object]] = {name: {} for name in _SECTIONS}
    top: dict[str, object] = {}
    for name, value in options.items():
        if name in _OPTION_FIELDS:
            section, attr = _OPTION_FIELDS[name]
            per_section[section][attr] = value
        elif name in _RUN_FIELDS:
            top[name] = value
        else:
            known = ", ".join(sorted([*_OPTION_FIELDS, *_RUN_FIELDS]))
            raise ConfigError(f"unknown option {name!r}; known options: {known}")
    sections = {
        name: dataclasses.replace(getattr(base, name), **changes)
        for name, changes in per_section.items()
        if changes
    }
    return dataclasses.replace(base, **sections, **top)  # type: ignore[arg-type]
