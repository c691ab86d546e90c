"""The field articles' provider table for raypipe's super-resolution model (``superres``).

Rows: CPU (a few frames only), CUDA EP FP32, CUDA EP FP16 (the model converted to float16
weights and compute by :func:`raypipe.infer.heavy.to_float16`, float32 in/out), and
TensorRT FP16 with raypipe's engine cache. Columns: frames per second, milliseconds per
frame, GPU utilisation and peak memory (NVML, :class:`raypipe.distributed.gpu_monitor.GpuMonitor`,
for the physical GPU behind CUDA device 0), session start time; for TensorRT the cold
start (engine build + publish + session) against the warm start (verified copy from the
cache + session, no build).

What is timed: the model only. A float32 NCHW batch already in host memory goes in, the
output comes back to host memory, through :class:`raypipe.infer.iobinding.IOBindingRunner`
(persistent device buffers on CUDA/TensorRT, plain ``run`` on CPU). No decode, no encode,
no pre/post-processing: the GPU's share of a pipeline, not the pipeline.

Usage (repository root, raypipe installed)::

    python benchmarks/gpu_providers.py                # 1080p, every row (a GPU machine)
    python benchmarks/gpu_providers.py --quick        # tiny frames: checks it runs anywhere

Without CUDA (no onnxruntime-gpu or no device) the GPU rows are reported as skipped with
the reason and the script exits 0. A row that fails on a GPU machine is reported as failed
and the exit status is 1. Results go to ``benchmarks/results/gpu_providers.json``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from raypipe.distributed.gpu_monitor import GpuMonitor, physical_gpu_indices
from raypipe.infer.engine_cache import EngineCache
from raypipe.infer.engine_key import engine_key_for, tensorrt_builder
from raypipe.infer.gpu_options import cuda_options, profile_shapes, tensorrt_options
from raypipe.infer.heavy import build_superres, to_float16
from raypipe.infer.iobinding import IOBindingRunner
from raypipe.infer.session import (
    CUDA,
    TENSORRT,
    create_session,
    cuda_available,
    cuda_device,
    granted_providers,
    import_onnxruntime,
)

DEFAULT_OUTPUT = Path(__file__).parent / "results" / "gpu_providers.json"
ROWS = ("cpu", "cuda-fp32", "cuda-fp16", "trt-fp16")
TITLES = {
    "cpu": "CPU",
    "cuda-fp32": "CUDA EP, FP32",
    "cuda-fp16": "CUDA EP, FP16 (fp16 model)",
    "trt-fp16": "TensorRT FP16 + engine cache",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny frames and few of them")
    p.add_argument("--height", type=int, default=1080, help="input frame height, pixels")
    p.add_argument("--width", type=int, default=1920, help="input frame width, pixels")
    p.add_argument("--batch-size", type=int, default=4, help="frames per model call (GPU rows)")
    p.add_argument("--frames", type=int, default=64, help="frames timed per GPU row")
    p.add_argument("--cpu-frames", type=int, default=2, help="frames timed on the CPU row")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {ROWS}")
    p.add_argument("--scale", type=int, default=2)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--blocks", type=int, default=8)
    p.add_argument("--cache", default=None, help="engine cache URL (default: a fresh temp dir)")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON results path")
    args = p.parse_args(argv)
    if args.quick:
        args.height, args.width = 64, 112
        args.frames, args.cpu_frames, args.batch_size = 8, 2, 2
    unknown = set(args.rows.split(",")) - set(ROWS)
    if unknown:
        p.error(f"unknown rows {sorted(unknown)}; expected some of {ROWS}")
    return args


def gpu_indices() -> list[int]:
    """NVML index of CUDA device 0 (the first entry of CUDA_VISIBLE_DEVICES, else 0)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return physical_gpu_indices([visible or "0"])


def measure(
    session: Any, batch: np.ndarray, frames: int, monitor_gpus: list[int] | None
) -> dict[str, Any]:
    """Time ``frames`` frames in batches like ``batch`` after two untimed warm-up runs."""
    runner = IOBindingRunner(session, "input", "output")
    for _ in range(2):
        runner.run(batch)
    calls = max(1, math.ceil(frames / len(batch)))
    monitor = GpuMonitor(interval_s=0.2, gpu_indices=monitor_gpus) if monitor_gpus else None
    if monitor is not None:
        monitor.start()
    start = time.perf_counter()
    for _ in range(calls):
        out = runner.run(batch)
    elapsed = time.perf_counter() - start
    gpu: dict[str, Any] = {"available": False, "reason": "CPU row: no GPU used"}
    if monitor is not None:
        monitor.stop()
        gpu = monitor.summary()
    done = calls * len(batch)
    row: dict[str, Any] = {
        "frames": done,
        "batch_size": len(batch),
        "seconds": round(elapsed, 3),
        "fps": round(done / elapsed, 2),
        "ms_per_frame": round(1000 * elapsed / done, 2),
        "output_shape": list(out.shape),
        "providers": granted_providers(session),
        "iobinding": runner.device or "off",
    }
    if gpu.get("available"):
        (stats,) = gpu["gpus"].values()
        row.update(
            gpu_name=stats["name"],
            gpu_util_mean_pct=stats["util_mean_pct"],
            gpu_util_max_pct=stats["util_max_pct"],
            gpu_memory_used_max_bytes=stats["memory_used_max_bytes"],
        )
    else:
        row["gpu_monitor"] = gpu.get("reason")
    return row


def timed(make: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = make()
    return value, time.perf_counter() - start


def run_row(
    name: str, args: argparse.Namespace, model: onnx.ModelProto, work: Path
) -> dict[str, Any]:
    data = model.SerializeToString()
    rng = np.random.default_rng(0)
    if name == "cpu":
        batch = rng.random((1, 3, args.height, args.width), dtype=np.float32)
        session, start_s = timed(lambda: create_session(data, device="cpu"))
        return {
            "session_start_s": round(start_s, 3),
            **measure(session, batch, args.cpu_frames, None),
        }
    ort = import_onnxruntime()
    if not cuda_available():
        return {
            "status": "skipped",
            "reason": "no CUDA: onnxruntime offers "
            f"{ort.get_available_providers()} and/or the driver sees no GPU",
        }
    if name == "trt-fp16" and TENSORRT not in ort.get_available_providers():
        return {"status": "skipped", "reason": "this onnxruntime-gpu has no TensorRT EP"}
    batch = rng.random((args.batch_size, 3, args.height, args.width), dtype=np.float32)
    gpus = gpu_indices()
    if name in ("cuda-fp32", "cuda-fp16"):
        if name == "cuda-fp16":
            data = to_float16(model).SerializeToString()
        session, start_s = timed(
            lambda: create_session(
                data, device="gpu", providers=[CUDA], provider_options={CUDA: cuda_options()}
            )
        )
        return {"session_start_s": round(start_s, 3), **measure(session, batch, args.frames, gpus)}
    # TensorRT FP16: cold start builds and publishes, warm start copies the verified entry.
    profile = profile_shapes("input", args.batch_size, args.height, args.width)
    cache = EngineCache(args.cache or str(work / "shared"), local_root=work / "local")
    key = engine_key_for(hashlib.sha256(data).hexdigest(), precision="fp16", profile=profile)
    was_cached = cache.check(key).complete

    def start_session(local_dir: Path, build: Callable[[str], None]) -> Any:
        directory = cache.ensure(key, build, local_dir=local_dir)
        options = tensorrt_options(directory, "fp16", profile)
        return create_session(
            data, device="gpu", providers=[TENSORRT, CUDA], provider_options={TENSORRT: options}
        )

    def must_not_build(directory: str) -> None:
        raise AssertionError("warm start rebuilt the engine: the cache missed")

    builder = tensorrt_builder(data, precision="fp16", profile=profile)
    _, cold_s = timed(lambda: start_session(work / "cold", builder))
    session, warm_s = timed(lambda: start_session(work / "warm", must_not_build))
    return {
        "cold_start_s": round(cold_s, 3),
        "cold_was_cache_hit": was_cached,
        "warm_start_s": round(warm_s, 3),
        "engine_key": key.to_dict(),
        **measure(session, batch, args.frames, gpus),
    }


def device_name() -> str:
    try:
        device = cuda_device(0)
    except Exception as e:  # no driver, no GPU: say so in the results
        return f"no CUDA device ({type(e).__name__})"
    return f"{device.name} (compute capability {device.compute_capability})"


def table(rows: list[dict[str, Any]]) -> str:
    head = ("configuration", "fps", "ms/frame", "GPU util mean/max", "GPU mem max", "session start")
    lines = [head]
    for row in rows:
        if row["status"] != "ran":
            lines.append((row["title"], row["status"], "-", "-", "-", "-"))
            continue
        util = (
            f"{row['gpu_util_mean_pct']}% / {row['gpu_util_max_pct']}%"
            if "gpu_util_mean_pct" in row
            else "n/a"
        )
        memory = (
            f"{row['gpu_memory_used_max_bytes'] / 2**30:.1f} GiB"
            if row.get("gpu_memory_used_max_bytes")
            else "n/a"
        )
        start = (
            f"cold {row['cold_start_s']:.1f} s / warm {row['warm_start_s']:.1f} s"
            if "cold_start_s" in row
            else f"{row['session_start_s']:.2f} s"
        )
        lines.append(
            (row["title"], f"{row['fps']:.2f}", f"{row['ms_per_frame']:.1f}", util, memory, start)
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    out = [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths)) + " |" for line in lines
    ]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = build_superres(scale=args.scale, channels=args.channels, blocks=args.blocks)
    ort = import_onnxruntime()
    results: dict[str, Any] = {
        "benchmark": "gpu_providers",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device_name(),
        "host": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "versions": {
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
            "onnx": onnx.__version__,
            "numpy": np.__version__,
        },
        "config": {
            "model": f"superres x{args.scale}, {args.channels} channels, {args.blocks} blocks",
            "input_hw": [args.height, args.width],
            "output_hw": [args.height * args.scale, args.width * args.scale],
            "batch_size": args.batch_size,
            "frames": args.frames,
            "cpu_frames": args.cpu_frames,
            "quick": args.quick,
            "timed": "model only: host float32 batch in, host output out (IO binding on GPU)",
        },
        "rows": [],
    }
    failed = False
    with tempfile.TemporaryDirectory(prefix="raypipe-bench-") as tmp:
        for name in args.rows.split(","):
            print(f"{TITLES[name]} ...", file=sys.stderr, flush=True)
            try:
                row = {"status": "ran", **run_row(name, args, model, Path(tmp) / name)}
            except Exception as e:
                failed = True
                traceback.print_exc()
                row = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
            results["rows"].append({"name": name, "title": TITLES[name], **row})
    print(table(results["rows"]))
    for row in results["rows"]:
        if row["status"] != "ran":
            print(f"  {row['title']}: {row['status']}: {row.get('reason') or row.get('error')}")
    if any(r["status"] == "skipped" for r in results["rows"]):
        print(
            "GPU rows need onnxruntime-gpu (and TensorRT for the last) and an NVIDIA GPU: they "
            "were NOT run here. See benchmarks/README.md."
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results: {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
