"""The GPU acceptance run: one command, under 6 minutes on an H100/H200.

    python benchmarks/gpu_acceptance.py              # a GPU machine with raypipe[test-gpu]
    python benchmarks/gpu_acceptance.py --dry-run    # anywhere: every step on the CPU

Steps, in order, all recorded in one JSON (``benchmarks/results/gpu_acceptance.json``):

1. ``raypipe doctor``'s facts (:func:`raypipe.doctor.examine`): versions, GPU, driver,
   whether each provider loads and why not.
2. ``pytest -m gpu`` with ``RAYPIPE_GPU_TESTS=require``: every GPU test must run (a GPU
   without NVENC, A100/H100, still skips the NVENC test); the counts and failures.
3. The provider table on raypipe's built-in ``superres`` network (x2, 64 channels, 8 blocks,
   about 2.5 TFLOP per 1080p frame) at 1080p input: CPU (one frame), the CUDA EP at FP32 and
   FP16 (the model converted to float16 by :func:`raypipe.infer.heavy.to_float16`),
   TensorRT FP16 with raypipe's engine cache (cold: build + publish, then warm: verified
   copy, no build) when TensorRT loads, IO binding on (persistent device buffers) and off,
   and 1 and 2 workers per GPU (two processes sharing the card, frames counted together).
   Each GPU row samples NVML utilisation and memory of the card while it is timed.

It prints the seed-style table (configuration, provider, precision, ms/frame, fps, GPU
utilisation) and exits 1 when a step failed (a GPU test, a row that should have run).
A row that cannot run here (TensorRT does not load) is ``skipped`` with the reason.

``--dry-run`` runs the same steps where there is no GPU: doctor, ``pytest -m gpu
--collect-only`` (which tests would run), and every row on the CPU provider with tiny frames
(the 2-worker processes, IO binding on the CPU, the FP16 model, NVML's absence, the JSON
and the table); its numbers measure nothing. What is timed: the model only — a float32
NCHW batch in host memory in, the output back in host memory; no decode or encode.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_info, table, write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True, kw_only=True)
class Row:
    """One configuration of the table."""

    name: str
    provider: str  # "cpu", "cuda" or "tensorrt"
    precision: str  # "fp32" or "fp16"
    iobinding: bool = True
    workers: int = 1

    @property
    def title(self) -> str:
        provider = {"cpu": "CPU", "cuda": "CUDA EP", "tensorrt": "TensorRT"}[self.provider]
        binding = "" if self.provider == "cpu" else (", IO binding" if self.iobinding else "")
        workers = f", {self.workers} workers/GPU" if self.workers > 1 else ""
        cache = " + engine cache" if self.provider == "tensorrt" else ""
        return f"{provider} {self.precision.upper()}{cache}{binding}{workers}"


ROWS = (
    Row(name="cpu", provider="cpu", precision="fp32", iobinding=False),
    Row(name="cuda-fp32", provider="cuda", precision="fp32"),
    Row(name="cuda-fp32-noio", provider="cuda", precision="fp32", iobinding=False),
    Row(name="cuda-fp16", provider="cuda", precision="fp16"),
    Row(name="trt-fp16", provider="tensorrt", precision="fp16"),
    Row(name="trt-fp16-noio", provider="tensorrt", precision="fp16", iobinding=False),
    Row(name="cuda-fp16-2w", provider="cuda", precision="fp16", workers=2),
    Row(name="trt-fp16-2w", provider="tensorrt", precision="fp16", workers=2),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="every step on the CPU, tiny frames")
    p.add_argument("--height", type=int, default=1080, help="input frame height, pixels")
    p.add_argument("--width", type=int, default=1920, help="input frame width, pixels")
    p.add_argument("--batch-size", type=int, default=4, help="frames per model call")
    p.add_argument("--frames", type=int, default=64, help="frames timed per GPU row and worker")
    p.add_argument("--cpu-frames", type=int, default=1, help="frames timed on the CPU row")
    p.add_argument("--rows", default=",".join(r.name for r in ROWS), help="comma-separated")
    p.add_argument("--skip-tests", action="store_true", help="do not run pytest -m gpu")
    p.add_argument("--tests-timeout-s", type=int, default=240)
    p.add_argument("--cache", default=None, help="engine cache URL (default: a fresh temp dir)")
    p.add_argument("--out", default=None, help="result JSON (default results/gpu_acceptance.json)")
    args = p.parse_args(argv)
    if args.dry_run:
        args.height, args.width, args.batch_size = 48, 64, 2
        args.frames, args.cpu_frames = 4, 2
    unknown = set(args.rows.split(",")) - {r.name for r in ROWS}
    if unknown:
        p.error(f"unknown rows {sorted(unknown)}; expected some of {[r.name for r in ROWS]}")
    return args


# --- one session, timed (in this process, or in each worker process) --------------------------


def _model_bytes(precision: str) -> bytes:
    from raypipe.infer.heavy import build_superres, to_float16

    model = build_superres(scale=2, channels=64, blocks=8)
    return (to_float16(model) if precision == "fp16" else model).SerializeToString()


def _session(row: Row, data: bytes, shape: tuple[int, ...], cache_dir: str, dry_run: bool) -> Any:
    """The session of ``row`` (on the CPU in a dry run) and how long it took to start."""
    from raypipe.infer.session import CUDA, TENSORRT, create_session
    from raypipe.infer.trt.options import cuda_options, profile_shapes, tensorrt_options

    if dry_run or row.provider == "cpu":
        return create_session(data, device="cpu")
    if row.provider == "cuda":
        return create_session(
            data, device="gpu", providers=[CUDA], provider_options={CUDA: cuda_options()}
        )
    profile = profile_shapes("input", shape[0], shape[2], shape[3])
    options = tensorrt_options(cache_dir, row.precision, profile)
    return create_session(
        data, device="gpu", providers=[TENSORRT, CUDA], provider_options={TENSORRT: options}
    )


def time_row(
    row: Row, data: bytes, shape: tuple[int, ...], frames: int, cache_dir: str, dry_run: bool
) -> dict[str, Any]:
    """Start ``row``'s session, run two untimed batches, then time ``frames`` frames."""
    from raypipe.infer.iobinding import IOBindingRunner
    from raypipe.infer.session import granted_providers

    started = time.perf_counter()
    session = _session(row, data, shape, cache_dir, dry_run)
    start_s = time.perf_counter() - started
    on_device = "cpu" if dry_run or row.provider == "cpu" else "cuda"
    runner = IOBindingRunner(session, "input", "output", bind=on_device if row.iobinding else "off")
    batch = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(2):
        runner.run(batch)
    calls = max(1, math.ceil(frames / shape[0]))
    t0 = time.perf_counter()
    for _ in range(calls):
        out = runner.run(batch)
    t1 = time.perf_counter()
    return {
        "frames": calls * shape[0],
        "seconds": t1 - t0,
        "t0": time.time() - (time.perf_counter() - t0),
        "session_start_s": round(start_s, 3),
        "providers": granted_providers(session),
        "iobinding": runner.device or "off",
        "output_shape": list(out.shape),
    }


def _worker(args: tuple[Any, ...], ready: Any, go: Any, results: Any) -> None:
    row, model_path, shape, frames, cache_dir, dry_run = args
    try:
        data = Path(model_path).read_bytes()
        ready.set()
        go.wait(timeout=600)
        results.put(time_row(row, data, shape, frames, cache_dir, dry_run))
    except Exception as e:  # noqa: BLE001 - reported by the parent
        ready.set()
        results.put({"error": f"{type(e).__name__}: {e}"})


def run_workers(
    row: Row, data: bytes, shape: tuple[int, ...], frames: int, cache_dir: str, dry_run: bool
) -> dict[str, Any]:
    """``row.workers`` processes (spawned, as Ray's actors are) each timing ``frames`` frames
    on the same GPU at once; fps counts every worker's frames over the common span."""
    ctx = multiprocessing.get_context("spawn")
    with tempfile.NamedTemporaryFile(suffix=".onnx", delete=False) as f:
        f.write(data)
    try:
        go, results = ctx.Event(), ctx.Queue()
        procs, readies = [], []
        for _ in range(row.workers):
            ready = ctx.Event()
            args = (row, f.name, shape, frames, cache_dir, dry_run)
            procs.append(ctx.Process(target=_worker, args=(args, ready, go, results)))
            readies.append(ready)
            procs[-1].start()
        for ready in readies:
            ready.wait(timeout=600)
        go.set()
        done = [results.get(timeout=900) for _ in procs]
        for proc in procs:
            proc.join(timeout=60)
    finally:
        os.unlink(f.name)
    errors = [d["error"] for d in done if "error" in d]
    if errors:
        raise RuntimeError("; ".join(errors))
    start = min(d["t0"] for d in done)
    end = max(d["t0"] + d["seconds"] for d in done)
    merged = {**done[0], "frames": sum(d["frames"] for d in done), "seconds": end - start}
    merged["session_start_s"] = max(d["session_start_s"] for d in done)
    return merged


# --- the rows -------------------------------------------------------------------------------


def skip_reason(row: Row, dry_run: bool) -> str:
    """Why ``row`` cannot run here ("" when it can): the provider checks of raypipe doctor."""
    if dry_run or row.provider == "cpu":
        return ""
    from raypipe.infer.provider_check import check_gpu_stack
    from raypipe.infer.session import CUDA, TENSORRT

    stack = check_gpu_stack()
    return stack.provider_problem(TENSORRT if row.provider == "tensorrt" else CUDA)


def run_row(row: Row, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from raypipe.distributed.gpu_monitor import GpuMonitor

    reason = skip_reason(row, args.dry_run)
    if reason:
        return {"status": "skipped", "reason": reason}
    cpu = row.provider == "cpu"
    shape = (1 if cpu else args.batch_size, 3, args.height, args.width)
    frames = args.cpu_frames if cpu else args.frames
    data = _model_bytes(row.precision)
    result: dict[str, Any] = {}
    cache_dir = str(work / row.name)
    if row.provider == "tensorrt" and not args.dry_run:
        result.update(_engine_cache(data, shape, row.precision, args.cache, work))
        cache_dir = result.pop("local_dir")
    monitor = None if cpu or args.dry_run else GpuMonitor(interval_s=0.2, gpu_indices=_gpus())
    if monitor is not None:
        monitor.start()
    if row.workers > 1:
        timed = run_workers(row, data, shape, frames, cache_dir, args.dry_run)
    else:
        timed = time_row(row, data, shape, frames, cache_dir, args.dry_run)
    result.update(timed)
    result.update(_utilisation(monitor, cpu or args.dry_run))
    result["fps"] = round(timed["frames"] / timed["seconds"], 2)
    result["ms_per_frame"] = round(1000 * timed["seconds"] / timed["frames"], 2)
    return {"status": "ran", **result}


def _gpus() -> list[int]:
    from raypipe.distributed.gpu_monitor import physical_gpu_indices

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return physical_gpu_indices([visible or "0"])


def _utilisation(monitor: Any, no_gpu: bool) -> dict[str, Any]:
    if no_gpu or monitor is None:
        return {"gpu_util": "n/a (no GPU used)"}
    monitor.stop()
    summary = monitor.summary()
    if not summary.get("available"):
        return {"gpu_util": f"n/a ({summary.get('reason', '')})"}
    (gpu,) = summary["gpus"].values()
    return {
        "gpu_name": gpu["name"],
        "gpu_util_mean_pct": gpu["util_mean_pct"],
        "gpu_util_max_pct": gpu["util_max_pct"],
        "gpu_memory_used_max_bytes": gpu["memory_used_max_bytes"],
    }


def _engine_cache(
    data: bytes, shape: tuple[int, ...], precision: str, url: str | None, work: Path
) -> dict[str, Any]:
    """TensorRT's engine through raypipe's cache: a cold start (build + publish, or a hit
    when ``--cache`` already has it), then a warm one into a new local directory that must
    not build. Returns the timings and the warm directory to run from."""
    from raypipe.infer.trt.cache import EngineCache
    from raypipe.infer.trt.key import engine_key_for, tensorrt_builder
    from raypipe.infer.trt.options import profile_shapes

    profile = profile_shapes("input", shape[0], shape[2], shape[3])
    key = engine_key_for(hashlib.sha256(data).hexdigest(), precision=precision, profile=profile)
    cache = EngineCache(url or str(work / "shared"), local_root=work / "local")
    was_cached = cache.check(key).complete
    t0 = time.perf_counter()
    builder = tensorrt_builder(data, precision=precision, profile=profile)
    cache.ensure(key, builder, local_dir=work / "cold")
    cold_s = time.perf_counter() - t0

    def must_not_build(directory: str) -> None:
        raise AssertionError("the warm start rebuilt the engine: the cache missed")

    t0 = time.perf_counter()
    warm = cache.ensure(key, must_not_build, local_dir=work / "warm")
    return {
        "cold_start_s": round(cold_s, 2),
        "cold_was_cache_hit": was_cached,
        "warm_copy_s": round(time.perf_counter() - t0, 2),
        "engine_key": key.to_dict(),
        "local_dir": warm,
    }


# --- pytest -m gpu --------------------------------------------------------------------------


def run_gpu_tests(dry_run: bool, timeout_s: int) -> dict[str, Any]:
    """``pytest -m gpu`` (``--collect-only`` in a dry run), with ``RAYPIPE_GPU_TESTS=require``."""
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rfEs", "-p", "no:cacheprovider"]
    cmd += ["--collect-only"] if dry_run else []
    env = {**os.environ, "RAYPIPE_GPU_TESTS": "require"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    started = time.monotonic()
    try:
        done = subprocess.run(
            [*cmd, "tests"], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return {"status": "failed", "reason": f"pytest -m gpu ran past {timeout_s}s"}
    lines = done.stdout.strip().splitlines()
    last = lines[-1] if lines else ""
    counts = {
        w: int(n) for n, w in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", last)
    }
    selected = re.search(r"(\d+)(?:/\d+)? tests? collected", last)
    if selected:
        counts["selected"] = int(selected.group(1))
    return {
        "status": "ran" if done.returncode == 0 else "failed",
        "command": " ".join(cmd + ["tests"]),
        "returncode": done.returncode,
        "summary": lines[-1] if lines else done.stderr.strip()[-500:],
        "counts": counts,
        "seconds": round(time.monotonic() - started, 1),
        "problems": [ln for ln in lines if ln.startswith(("FAILED", "ERROR", "SKIPPED"))],
    }


# --- the table ------------------------------------------------------------------------------


def format_table(rows: list[dict[str, Any]]) -> str:
    """The seed-style table: configuration, provider granted, precision, ms/frame, fps, GPU
    utilisation (NVML mean and max while timed), session start (TensorRT: cold build, warm)."""
    from raypipe.infer.provider_check import SHORT_NAMES

    out = []
    for r in rows:
        if r["status"] != "ran":
            out.append((r["title"], "-", r["precision"], r["status"], "-", "-", "-"))
            continue
        util = (
            f"{r['gpu_util_mean_pct']}% (max {r['gpu_util_max_pct']}%)"
            if "gpu_util_mean_pct" in r
            else r.get("gpu_util", "n/a")
        )
        start = (
            f"cold {r['cold_start_s']:.1f} s, warm {r['warm_copy_s'] + r['session_start_s']:.1f} s"
            if "cold_start_s" in r
            else f"{r['session_start_s']:.2f} s"
        )
        granted = SHORT_NAMES.get(r["providers"][0], r["providers"][0])
        out.append(
            (r["title"], granted, r["precision"], f"{r['ms_per_frame']:.1f}", f"{r['fps']:.2f}",
             util, start)
        )  # fmt: skip
    headers = ("configuration", "provider", "precision", "ms/frame", "fps", "GPU util", "start")
    return table(out, headers)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from raypipe.doctor import examine

    doc: dict[str, Any] = {
        "benchmark": "gpu_acceptance",
        "dry_run": args.dry_run,
        "machine": machine_info(),
        "doctor": examine(engine_cache=args.cache),
        "config": {
            "model": "builtin superres: x2, 64 channels, 8 residual blocks",
            "input_hw": [args.height, args.width],
            "batch_size": args.batch_size,
            "frames_per_row": args.frames,
            "cpu_frames": args.cpu_frames,
            "timed": "model only: host float32 batch in, host output out",
        },
    }
    print(f"doctor: --device gpu {doc['doctor']['verdicts']['gpu'] or 'works'}", flush=True)
    doc["tests"] = (
        {"status": "skipped", "reason": "--skip-tests"}
        if args.skip_tests
        else run_gpu_tests(args.dry_run, args.tests_timeout_s)
    )
    print(f"pytest -m gpu: {doc['tests'].get('summary') or doc['tests'].get('reason')}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="raypipe-gpu-acceptance-") as tmp:
        for row in (r for r in ROWS if r.name in args.rows.split(",")):
            print(f"{row.title} ...", file=sys.stderr, flush=True)
            try:
                result = run_row(row, args, Path(tmp))
            except Exception as e:  # noqa: BLE001 - a failed row is a finding, reported
                result = {"status": "failed", "reason": f"{type(e).__name__}: {e}"}
            rows.append({**asdict(row), "title": row.title, **result})
    doc["rows"] = rows
    print(format_table(rows))
    for r in rows:
        if r["status"] != "ran":
            print(f"  {r['title']}: {r['status']}: {r['reason']}")
    if args.dry_run:
        print("DRY RUN: every row ran on the CPU with tiny frames; these numbers measure nothing.")
    path = write_result("gpu_acceptance", doc, args.out)
    print(f"results: {path}")
    failed = doc["tests"]["status"] == "failed" or any(r["status"] == "failed" for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
