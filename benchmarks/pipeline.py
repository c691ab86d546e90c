"""raypipe against a naive single process and the frame-extraction approach, side by side.

One generated 720p clip (fixed seed), one model, one set of codec settings, three ways:

- **raypipe**: :func:`raypipe.process_video` end to end (probe, plan, Ray Data decode →
  inference actors → encode, assembly) on a local Ray the benchmark starts. ``ray.init``
  itself is not timed; everything inside ``process_video`` is (actor start, model load,
  warm-up, worker processes started on demand). Sizing: raypipe's own defaults for a CPU
  machine, one inference actor (1 CPU, one ORT thread) and ``num_cpus = max(4, 2 ×
  cores)`` logical CPUs, so decode and encode tasks run beside the actor. Measured on this
  2-core machine (2026-11-21, 720p, 600 frames): 1 actor on 4 logical CPUs 20.9 s; 2 actors
  on 3, 4, 5 and 6 logical CPUs 22.7, 22.6, 23.0 and 28.0 s. A second actor only adds a
  process to start and feed: inference is a third of the work, x264 encode half of it.
  Chunks of 48 frames (two 24-frame GOPs), batches of 8.
- **naive**: one process, one loop: PyAV decode (``thread_type=AUTO``) → ONNX Runtime in
  batches (raypipe's own :class:`~raypipe.infer.models.FrameModel`, ORT's default
  threads) → PyAV encode, one stage after another. The stages themselves are as good as
  raypipe's; only the overlap is missing.
- **extraction** (the common approach in the field, e.g. FaceFusion): ``ffmpeg`` writes
  every frame as a PNG, a ``multiprocessing`` pool (one process per core) reads each PNG
  with OpenCV, runs the model on it, writes a PNG, and ``ffmpeg`` encodes the PNGs back.

Plus the machine's limit for this work: a profiling pass runs decode, inference and
encode single-threaded and measures each stage's CPU seconds (``time.process_time``);
``ideal fps = frames / (sum of stage CPU seconds / cores)`` is what a perfect pipeline
with no overhead could do on this machine, and each approach's share of it is printed.

Usage (repository root)::

    python benchmarks/pipeline.py                 # 720p, 1800 frames (72 s of video)
    python benchmarks/pipeline.py --frames 600 --out benchmarks/results/pipeline-600.json
    python benchmarks/pipeline.py --quick         # 720p, 96 frames: a smoke run (< 60 s)
    python benchmarks/pipeline.py --wait-quiet    # first wait for load average < 0.5

Writes ``benchmarks/results/pipeline.json``.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import ColorRange, VideoReformatter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    ForeignLoad,
    add_common_args,
    cached_clip,
    cores,
    machine_info,
    quiet_check,
    start_ray,
    stop_ray,
    table,
    write_result,
)

from raypipe.config import EncodeConfig  # noqa: E402
from raypipe.infer.models import FrameModel, resolve_model  # noqa: E402
from raypipe.media.encode import encoder_options  # noqa: E402
from raypipe.testing import ClipSpec, ffprobe_frame_count  # noqa: E402
from raypipe.testing.reference import _SWS_MATRIX  # noqa: E402  FFmpeg's number -> swscale's

SEED = 7


@dataclass(frozen=True)
class Setup:
    """What every approach runs with."""

    frames: int
    width: int
    height: int
    gop: int
    model: str
    codec: str
    crf: int
    preset: str
    batch_size: int
    chunk_frames: int
    workers: int
    ray_num_cpus: int
    pool_processes: int

    @property
    def encode(self) -> EncodeConfig:
        return EncodeConfig(codec=self.codec, crf=self.crf, preset=self.preset)

    @property
    def clip_spec(self) -> ClipSpec:
        return ClipSpec(
            width=self.width, height=self.height, n_frames=self.frames, gop=self.gop, seed=SEED
        )


# ----------------------------------------------------------------------------- profile


def profile_stages(clip: Path, setup: Setup, model_bytes: bytes) -> dict[str, float]:
    """CPU seconds of each stage over the whole clip, every stage single-threaded.

    Decoder ``thread_count=1``, ORT ``intra_op_num_threads=1``, x264 ``threads=1``:
    ``time.process_time`` then measures the work itself, with no thread-pool spinning
    or synchronisation in it (a lower bound on what any scheduling of it costs).
    """
    model = FrameModel(model_bytes, device="cpu", intra_op_threads=1)
    model.warmup(setup.height, setup.width, min(setup.batch_size, 2))
    cpu = {"decode": 0.0, "infer": 0.0, "encode": 0.0}
    options = {**encoder_options(setup.encode), "threads": "1"}
    with av.open(str(clip)) as source, av.open(os.devnull, "w", format="null") as sink:
        stream = source.streams.video[0]
        stream.codec_context.thread_count = 1
        out = sink.add_stream(setup.codec, rate=stream.average_rate, options=options)
        out.width, out.height, out.pix_fmt = setup.width, setup.height, "yuv420p"
        out.time_base = stream.time_base
        frames = iter(source.decode(stream))
        done = False
        while not done:
            t = time.process_time()
            batch, pts = [], []
            for frame in frames:
                batch.append(frame.to_ndarray(format="rgb24"))
                pts.append(frame.pts)
                if len(batch) == setup.batch_size:
                    break
            else:
                done = True
            cpu["decode"] += time.process_time() - t
            if not batch:
                break
            t = time.process_time()
            result = model.run(np.stack(batch), setup.batch_size)
            cpu["infer"] += time.process_time() - t
            t = time.process_time()
            for image, p in zip(result, pts):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts, frame.time_base = p, stream.time_base
                sink.mux(out.encode(frame))
            if done:
                sink.mux(out.encode(None))
            cpu["encode"] += time.process_time() - t
    return cpu


# ----------------------------------------------------------------------------- naive


def run_naive(
    clip: Path, output: Path, setup: Setup, model_bytes: bytes, *, source_colours: bool = False
) -> float:
    """Decode → infer (batched) → encode in one loop, one after another; wall seconds.

    PyAV's defaults convert the frames as the source's tags say on the way in (BT.709 for
    the benchmarks' HD clips) but with swscale's default matrix, BT.601, on the way out, and
    leave the output untagged, which players read as BT.709 at HD sizes: its colours are
    shifted (``identity`` on 4 frames of a BT.709 720p clip, read as a player does: 27.6 dB
    against the source, 30.6 dB with ``source_colours``: tests/test_naive_loop.py).
    ``source_colours``: what a user who checks the colours
    writes: frames converted to YUV with the source's matrix and range (still PyAV's
    default interpolation) and the output tagged as the source is, as raypipe's and
    ffmpeg's outputs are."""
    started = time.perf_counter()
    model = FrameModel(model_bytes, device="cpu")  # ORT's default thread pool
    with av.open(str(clip)) as source, av.open(str(output), "w") as sink:
        stream = source.streams.video[0]
        stream.thread_type = "AUTO"
        out = sink.add_stream(
            setup.codec, rate=stream.average_rate, options=encoder_options(setup.encode)
        )
        out.width, out.height, out.pix_fmt = setup.width, setup.height, "yuv420p"
        out.time_base = stream.time_base
        tags = stream.codec_context  # the source's colour tags, FFmpeg's numbers
        if source_colours:
            for tag in ("colorspace", "color_range", "color_primaries", "color_trc"):
                setattr(out.codec_context, tag, getattr(tags, tag))
            to_yuv = VideoReformatter()
            matrix = _SWS_MATRIX.get(tags.colorspace)  # None: swscale's default
            range_ = ColorRange.JPEG if tags.color_range == 2 else ColorRange.MPEG

        def flush(batch: list[np.ndarray], pts: list[int]) -> None:
            for image, p in zip(model.run(np.stack(batch), setup.batch_size), pts):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                if source_colours:
                    frame = to_yuv.reformat(
                        frame, format="yuv420p", dst_colorspace=matrix, dst_color_range=range_
                    )
                frame.pts, frame.time_base = p, stream.time_base
                sink.mux(out.encode(frame))

        batch: list[np.ndarray] = []
        pts: list[int] = []
        for frame in source.decode(stream):
            batch.append(frame.to_ndarray(format="rgb24"))
            pts.append(frame.pts)
            if len(batch) == setup.batch_size:
                flush(batch, pts)
                batch, pts = [], []
        if batch:
            flush(batch, pts)
        sink.mux(out.encode(None))
    return time.perf_counter() - started


# ----------------------------------------------------------------------------- extraction

_POOL_MODEL: FrameModel | None = None


def _pool_init(model_bytes: bytes) -> None:
    global _POOL_MODEL
    _POOL_MODEL = FrameModel(model_bytes, device="cpu", intra_op_threads=1)


def _pool_process_png(paths: tuple[str, str]) -> None:
    import cv2

    source, target = paths
    assert _POOL_MODEL is not None
    rgb = cv2.cvtColor(cv2.imread(source, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    result = _POOL_MODEL.run(rgb[None], 1)[0]
    if not cv2.imwrite(target, cv2.cvtColor(result, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cv2.imwrite failed for {target}")


def run_extraction(
    clip: Path, output: Path, setup: Setup, model_bytes: bytes, work_dir: Path, fps: Fraction
) -> dict[str, float]:
    """ffmpeg → PNGs → process pool → PNGs → ffmpeg; wall seconds of each step."""
    frames_in, frames_out = work_dir / "in", work_dir / "out"
    frames_in.mkdir()
    frames_out.mkdir()
    steps: dict[str, float] = {}
    t = time.perf_counter()
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", str(clip), "-fps_mode", "passthrough",
         str(frames_in / "%06d.png")],
        check=True,
    )  # fmt: skip
    steps["extract_s"] = time.perf_counter() - t
    t = time.perf_counter()
    names = sorted(os.listdir(frames_in))
    jobs = [(str(frames_in / n), str(frames_out / n)) for n in names]
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that ran Ray/ORT
    with ctx.Pool(setup.pool_processes, initializer=_pool_init, initargs=(model_bytes,)) as pool:
        for _ in pool.imap_unordered(_pool_process_png, jobs, chunksize=4):
            pass
    steps["model_s"] = time.perf_counter() - t
    t = time.perf_counter()
    rate = f"{fps.numerator}/{fps.denominator}"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-y", "-framerate", rate,
         "-i", str(frames_out / "%06d.png"), "-c:v", setup.codec, "-crf", str(setup.crf),
         "-preset", setup.preset, "-pix_fmt", "yuv420p", str(output)],
        check=True,
    )  # fmt: skip
    steps["encode_s"] = time.perf_counter() - t
    steps["wall_s"] = steps["extract_s"] + steps["model_s"] + steps["encode_s"]
    return steps


# ----------------------------------------------------------------------------- raypipe


def run_raypipe(clip: Path, output: Path, setup: Setup, stats_path: Path) -> dict[str, Any]:
    """:func:`raypipe.process_video` end to end on the already started local Ray."""
    import json

    import raypipe

    started = time.perf_counter()
    stats = raypipe.process_video(
        str(clip),
        str(output),
        model=setup.model,
        chunk_frames=setup.chunk_frames,
        workers=setup.workers,
        batch_size=setup.batch_size,
        device="cpu",
        codec=setup.codec,
        crf=setup.crf,
        preset=setup.preset,
        overwrite=True,
        quiet=True,
        stats_path=str(stats_path),
    )
    wall = time.perf_counter() - started
    doc = json.loads(stats_path.read_text())
    chunks = doc["chunks"]
    first = min(c["decode_start"] for c in chunks)
    last = max(c["encode_start"] + c["encode_s"] for c in chunks)
    stage_s = {s: sum(c[f"{s}_s"] for c in chunks) for s in ("decode", "infer", "encode")}
    return {
        "wall_s": wall,
        "pipeline_span_s": last - first,
        "chunks": stats.chunks,
        "workers": stats.workers,
        "providers": stats.providers,
        "stage_wall_s": stage_s,
    }


# ----------------------------------------------------------------------------- checks


def _first_frames(path: Path, n: int) -> np.ndarray:
    with av.open(str(path)) as c:
        frames = []
        for frame in c.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == n:
                break
    return np.stack(frames).astype(np.float64)


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


# ----------------------------------------------------------------------------- main


def make_setup(args: argparse.Namespace) -> Setup:
    n_cores = cores()
    return Setup(
        frames=args.frames or (96 if args.quick else 1800),
        width=1280,
        height=720,
        gop=args.gop,
        model=args.model,
        codec="libx264",
        crf=args.crf,
        preset=args.preset,
        batch_size=args.batch_size,
        chunk_frames=args.chunk_frames,
        workers=args.workers or 1,  # raypipe's default on CPU (plan_actors)
        ray_num_cpus=args.num_cpus or max(4, 2 * n_cores),  # raypipe's local default
        pool_processes=n_cores,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--frames", type=int, default=None, help="clip length (1800; quick 96)")
    parser.add_argument("--model", default="builtin:sharpen")
    parser.add_argument("--crf", type=int, default=18)
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--chunk-frames", type=int, default=48)
    parser.add_argument("--gop", type=int, default=24, help="clip keyframe interval (frames)")
    parser.add_argument(
        "--workers", type=int, default=None, help="inference actors (1: raypipe's CPU default)"
    )
    parser.add_argument(
        "--num-cpus",
        type=int,
        default=None,
        help="Ray logical CPUs (max(4, 2 x cores): raypipe's local default)",
    )
    parser.add_argument(
        "--only", default="raypipe,naive,extraction", help="comma-separated approaches"
    )
    parser.add_argument("--report", default=None, help="draw raypipe's run report to this PNG")
    args = parser.parse_args(argv)
    setup = make_setup(args)
    only = set(args.only.split(","))
    quiet = quiet_check(args)
    clip = cached_clip(setup.clip_spec)
    fps_source = Fraction(setup.clip_spec.fps)
    model_bytes, _ = resolve_model(setup.model)
    n_cores = cores()
    print(
        f"clip {clip.name}: {setup.frames} frames {setup.width}x{setup.height}, model "
        f"{setup.model}, {setup.codec} crf {setup.crf} preset {setup.preset}; {n_cores} cores, "
        f"load {quiet.load_1m_measured:.2f}",
        flush=True,
    )
    results: dict[str, Any] = {}
    work = Path(tempfile.mkdtemp(prefix="raypipe-bench-pipeline-"))
    try:
        with ForeignLoad() as foreign:
            cpu = profile_stages(clip, setup, model_bytes)
        profile_foreign = foreign.result
        cpu_total = sum(cpu.values())
        ideal_fps = setup.frames / (cpu_total / n_cores)
        print(
            "stage CPU ms/frame: "
            + ", ".join(f"{k} {1000 * v / setup.frames:.1f}" for k, v in cpu.items())
            + f"; ideal {ideal_fps:.1f} fps on {n_cores} cores",
            flush=True,
        )
        outputs: dict[str, Path] = {}
        if "naive" in only:
            outputs["naive"] = work / "naive.mp4"
            with ForeignLoad() as foreign:
                wall = run_naive(clip, outputs["naive"], setup, model_bytes)
            results["naive"] = {"wall_s": wall, "foreign_load": foreign.result}
            print(f"naive: {setup.frames / wall:.1f} fps", flush=True)
        if "extraction" in only:
            outputs["extraction"] = work / "extraction.mp4"
            (work / "x").mkdir()
            with ForeignLoad() as foreign:
                steps = run_extraction(
                    clip, outputs["extraction"], setup, model_bytes, work / "x", fps_source
                )
            shutil.rmtree(work / "x", ignore_errors=True)
            results["extraction"] = {**steps, "foreign_load": foreign.result}
            print(f"extraction: {setup.frames / steps['wall_s']:.1f} fps", flush=True)
        if "raypipe" in only:
            start_ray(setup.ray_num_cpus)
            try:
                outputs["raypipe"] = work / "raypipe.mp4"
                with ForeignLoad() as foreign:
                    results["raypipe"] = run_raypipe(
                        clip, outputs["raypipe"], setup, work / "stats.json"
                    )
                results["raypipe"]["foreign_load"] = foreign.result
                if args.report:
                    from raypipe.report import draw_report

                    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
                    draw_report(work / "stats.json", args.report, title="benchmarks/pipeline.py")
                    print(f"raypipe run report: {args.report}", flush=True)
            finally:
                stop_ray()
            print(f"raypipe: {setup.frames / results['raypipe']['wall_s']:.1f} fps", flush=True)
        for name, path in outputs.items():
            r = results[name]
            r["fps"] = setup.frames / r["wall_s"]
            r["ideal_share"] = r["fps"] / ideal_fps
            r["frames_out"] = ffprobe_frame_count(path)
            r["output_bytes"] = path.stat().st_size
            r["first_frames"] = _first_frames(path, 8)
        if "naive" in outputs:  # all three ran the same model: outputs agree to coding noise
            base = results["naive"]["first_frames"]
            for r in results.values():
                r["psnr_vs_naive_db"] = psnr_db(r["first_frames"], base)
        for r in results.values():
            r.pop("first_frames")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratios = {}
    if "raypipe" in results:
        for other in ("naive", "extraction"):
            if other in results:
                ratios[f"raypipe/{other}"] = results["raypipe"]["fps"] / results[other]["fps"]
    rows = [
        [name, f"{r['fps']:.1f}", f"{r['wall_s']:.1f}", f"{100 * r['ideal_share']:.0f}%",
         r["frames_out"]]
        for name, r in results.items()
    ]  # fmt: skip
    rows.append(
        ["ideal (CPU-bound)", f"{ideal_fps:.1f}", f"{setup.frames / ideal_fps:.1f}", "100%", ""]
    )
    print()
    print(table(rows, ["approach", "fps", "wall s", "share of ideal", "frames out"]))
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    targets = {
        "raypipe/naive > 1": ratios.get("raypipe/naive", math.nan) > 1.0,
        "raypipe/extraction >= 3": ratios.get("raypipe/extraction", math.nan) >= 3.0,
    }
    for name, met in targets.items():
        print(f"target {name}: {'met' if met else 'MISSED'}")
    doc = {
        "benchmark": "pipeline",
        "quick": args.quick,
        "machine": machine_info(),
        "load": quiet,
        "setup": setup.__dict__,
        "clip": {"path": clip.name, "seed": SEED, "fps": str(fps_source)},
        "stage_cpu_s": cpu,
        "profile_foreign_load": profile_foreign,
        "stage_cpu_ms_per_frame": {k: 1000 * v / setup.frames for k, v in cpu.items()},
        "ideal_fps": ideal_fps,
        "results": results,
        "ratios": ratios,
        "targets_met": targets,
    }
    path = write_result("pipeline", doc, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
