"""Options for ONNX Runtime's GPU providers: TensorRT shape profiles and EP options, CUDA EP
options. Validated here, so a bad value fails with a message before a session is built.

Imports neither ``onnxruntime`` nor ``ray``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from raypipe.errors import ConfigError

PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
CUDNN_CONV_ALGO_SEARCHES: tuple[str, ...] = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
ARENA_EXTEND_STRATEGIES: tuple[str, ...] = ("kNextPowerOfTwo", "kSameAsRequested")
_SHAPES = re.compile(r"^[^:,]+:\d+(x\d+)*$")


def int_at_least(name: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def profile_shapes(
    input_name: str, batch_size: int, height: int, width: int, layout: str = "NCHW"
) -> tuple[str, str, str]:
    """TensorRT (min, opt, max) shape strings for one image input, as the EP options take them.

    Batch runs from 1 (a chunk's last, short batch) to ``batch_size``, which is also the
    shape TensorRT tunes for; height and width (pixels) are fixed to the video's frame size.
    ``layout`` ``I420``: packed YUV frames of that size, ``(batch, H * W * 3 / 2)``.
    ``profile_shapes("input", 8, 1080, 1920)`` gives ``("input:1x3x1080x1920",
    "input:8x3x1080x1920", "input:8x3x1080x1920")``.
    """
    if not isinstance(input_name, str) or not input_name or any(c in input_name for c in ":,"):
        raise ConfigError(
            f"input_name must be a tensor name without ':' or ',', got {input_name!r}"
        )
    int_at_least("batch_size", batch_size, 1)
    int_at_least("height", height, 1)
    int_at_least("width", width, 1)
    if layout not in ("NCHW", "NHWC", "I420"):
        raise ConfigError(f"layout must be 'NCHW', 'NHWC' or 'I420', got {layout!r}")

    def shape(batch: int) -> str:
        dims: tuple[int, ...] = (batch, 3, height, width)
        if layout == "NHWC":
            dims = (batch, height, width, 3)
        elif layout == "I420":  # packed YUV 4:2:0 frames (the YUV hand-off), one row each
            dims = (batch, height * width * 3 // 2)
        return f"{input_name}:{'x'.join(str(d) for d in dims)}"

    return shape(1), shape(batch_size), shape(batch_size)


def parse_shapes(text: str) -> dict[str, tuple[int, ...]]:
    """``"input:1x3x8x8,mask:1x8"`` -> ``{"input": (1, 3, 8, 8), "mask": (1, 8)}``."""
    shapes = {}
    for part in text.split(","):
        if not _SHAPES.match(part):
            raise ConfigError(
                f"a TensorRT profile must look like 'input:1x3x1080x1920[,other:...]', got {text!r}"
            )
        name, dims = part.split(":")
        shapes[name] = tuple(int(d) for d in dims.split("x"))
    return shapes


def check_profile(profile: Sequence[str]) -> tuple[str, str, str]:
    """``profile`` as a (min, opt, max) tuple once it is well formed; ConfigError otherwise.

    Each string names the same inputs with the same rank, and min <= opt <= max per dimension.
    """
    if isinstance(profile, str) or len(profile) != 3:
        raise ConfigError(
            f"a TensorRT profile is three shape strings (min, opt, max), got {profile!r}"
        )
    low, opt, high = (parse_shapes(p) for p in profile)
    if not (low.keys() == opt.keys() == high.keys()):
        raise ConfigError(f"min, opt and max shapes must name the same inputs, got {profile!r}")
    for name in low:
        a, b, c = low[name], opt[name], high[name]
        if not (len(a) == len(b) == len(c)) or not all(x <= y <= z for x, y, z in zip(a, b, c)):
            raise ConfigError(
                f"input {name!r}: expected min <= opt <= max in every dimension and one rank, "
                f"got {a}, {b}, {c}"
            )
    return profile[0], profile[1], profile[2]


def tensorrt_options(
    cache_dir: str,
    precision: str,
    profile: Sequence[str] | None,
    builder_optimization_level: int = 3,
    workspace_bytes: int = 2 << 30,
    *,
    device_id: int = 0,
) -> dict[str, Any]:
    """TensorRT EP options: engine and timing cache in ``cache_dir``, FP16 for ``"fp16"``.

    ``profile`` (from :func:`profile_shapes`) fixes the optimisation profile, so an engine
    is built once, at session creation, and a cached engine is reused as long as the same
    profile is asked for; ``None`` lets the EP derive one from the first inputs (and rebuild
    when a later input falls outside it). ``builder_optimization_level``: 0-5, TensorRT's
    default 3 (lower builds faster, runs slower). ``workspace_bytes``: TensorRT's scratch
    memory limit (``set_memory_pool_limit`` under the hood; 1-4 GiB is typical).
    ``cache_dir`` must be a local directory (see :class:`raypipe.infer.trt.cache.EngineCache`).
    """
    if not isinstance(cache_dir, str) or not cache_dir:
        raise ConfigError(f"cache_dir must be a local directory path, got {cache_dir!r}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be 'fp32' or 'fp16', got {precision!r}")
    level = int_at_least("builder_optimization_level", builder_optimization_level, 0)
    if level > 5:
        raise ConfigError(f"builder_optimization_level must be within 0..5, got {level}")
    options: dict[str, Any] = {
        "device_id": int_at_least("device_id", device_id, 0),
        "trt_fp16_enable": precision == "fp16",
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": cache_dir,
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": cache_dir,
        "trt_builder_optimization_level": level,
        "trt_max_workspace_size": int_at_least("workspace_bytes", workspace_bytes, 1),
    }
    if profile is not None:
        low, opt, high = check_profile(profile)
        options.update(
            trt_profile_min_shapes=low, trt_profile_opt_shapes=opt, trt_profile_max_shapes=high
        )
    return options


def cuda_options(
    device_id: int = 0,
    *,
    cudnn_conv_algo_search: str = "EXHAUSTIVE",
    gpu_mem_limit_bytes: int | None = None,
    arena_extend_strategy: str = "kSameAsRequested",
    do_copy_in_default_stream: bool = True,
) -> dict[str, Any]:
    """CUDA EP options.

    ``cudnn_conv_algo_search``: ``EXHAUSTIVE`` benchmarks every cuDNN algorithm once per
    input shape (best for video, whose frame size never changes; costs time and memory on the
    first batch), ``HEURISTIC`` picks from cuDNN's heuristics (fast start), ``DEFAULT`` takes
    the default algorithm. ``gpu_mem_limit_bytes`` caps the CUDA EP's memory arena (the
    per-actor budget when several actors share a GPU; ``None`` = no cap); it does not cover
    TensorRT's own memory (``trt_max_workspace_size`` and the engine). ``arena_extend_strategy``
    ``kSameAsRequested`` grows the arena by what is asked for, not to the next power of two,
    which keeps a budget tight.
    """
    if cudnn_conv_algo_search not in CUDNN_CONV_ALGO_SEARCHES:
        raise ConfigError(
            f"cudnn_conv_algo_search must be one of {', '.join(CUDNN_CONV_ALGO_SEARCHES)}, "
            f"got {cudnn_conv_algo_search!r}"
        )
    if arena_extend_strategy not in ARENA_EXTEND_STRATEGIES:
        raise ConfigError(
            f"arena_extend_strategy must be one of {', '.join(ARENA_EXTEND_STRATEGIES)}, "
            f"got {arena_extend_strategy!r}"
        )
    options: dict[str, Any] = {
        "device_id": int_at_least("device_id", device_id, 0),
        "cudnn_conv_algo_search": cudnn_conv_algo_search,
        "arena_extend_strategy": arena_extend_strategy,
        "do_copy_in_default_stream": bool(do_copy_in_default_stream),
    }
    if gpu_mem_limit_bytes is not None:
        options["gpu_mem_limit"] = int_at_least("gpu_mem_limit_bytes", gpu_mem_limit_bytes, 1)
    return options
