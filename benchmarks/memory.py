"""Is memory bounded by chunk size × chunks in flight, not by video length?

The same clip at 1×, 4× and 16× the length (same frame size, chunk size, model and
codec) through :func:`raypipe.process_video`, each on a fresh local Ray after an untimed
warm-up run. A background sampler (every 0.1 s, ``_common.MemorySampler``) records:

- the driver's peak RSS (psutil);
- the largest peak RSS of any one Ray worker process and the peak of their sum (every
  process whose command line starts with ``ray::`` or runs Ray's ``default_worker.py``);
  a worker's RSS includes the object-store pages it has mapped and touched;
- the object store's peak use on this node (the raylet's ``ObjectStoreStats``
  ``object_store_bytes_used``, read over its gRPC ``GetNodeStats``: bytes actually held
  in plasma, which ``ray.available_resources()['object_store_memory']`` does not track)
  and any bytes spilled to disk during the run.

Target (DESIGN.md invariant 6): each peak at 16× at most 1.5× its value at 1×. The 1×
video must already be long enough for the pipeline to reach its steady number of chunks
in flight (12 chunks here), or the comparison measures the fill, not a leak.

Every length runs twice, side by side: with the raylet freeing dead objects every 100 ms
(what raypipe's local Ray and cluster image set, ``cluster.RAYLET_CONFIG``) and every
1000 ms (Ray's default). With 1000 ms the store also holds up to a second of dead chunks,
so its peak follows throughput, which is still ramping up over the short 1× run.

Usage::

    python benchmarks/memory.py             # 320x180, 32-frame chunks, 384 / 1536 / 6144 frames
    python benchmarks/memory.py --quick     # 160x96, 16-frame chunks, 48 / 192 / 768 frames

Writes ``benchmarks/results/memory.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    ForeignLoad,
    MemorySampler,
    add_common_args,
    cached_clip,
    machine_info,
    mib,
    quiet_check,
    start_ray,
    stop_ray,
    table,
    warm_up,
    write_result,
)

from raypipe.testing import ClipSpec  # noqa: E402

METRICS = (
    ("driver_rss_peak_bytes", "driver RSS"),
    ("worker_rss_peak_bytes", "largest worker RSS"),
    ("workers_rss_sum_peak_bytes", "all workers RSS"),
    ("object_store_used_peak_bytes", "object store"),
)


def run_length(
    multiple: int, spec: ClipSpec, args: argparse.Namespace, work: Path, free_ms: int
) -> dict[str, Any]:
    import raypipe

    clip = cached_clip(spec)
    options: dict[str, Any] = {
        "model": "builtin:identity",
        "workers": 1,
        "batch_size": 8,
        "device": "cpu",
        "codec": "libx264",
        "preset": "ultrafast",
        "crf": 23,
    }
    start_ray(args.num_cpus, system_config={"free_objects_period_milliseconds": free_ms})
    try:
        warm_up(2, **options)
        started = time.perf_counter()
        with MemorySampler(interval_s=0.1) as sampler:
            stats = raypipe.process_video(
                str(clip),
                str(work / f"out-{multiple}.mp4"),
                chunk_frames=args.chunk_frames,
                overwrite=True,
                quiet=True,
                **options,
            )
        wall_s = time.perf_counter() - started
    finally:
        stop_ray()
    return {
        "free_objects_period_ms": free_ms,
        "multiple": multiple,
        "frames": spec.n_frames,
        "chunks": stats.chunks,
        "wall_s": wall_s,
        "fps": spec.n_frames / wall_s,
        **sampler.peaks.__dict__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--multiples", default="1,4,16")
    parser.add_argument("--num-cpus", type=int, default=4, help="Ray logical CPUs")
    parser.add_argument(
        "--free-periods-ms",
        default="100,1000",
        help="raylet free_objects_period_milliseconds values to compare (raypipe's first)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        width, height, args.chunk_frames, base_chunks = 160, 96, 16, 3
    else:
        width, height, args.chunk_frames, base_chunks = 320, 180, 32, 12
    multiples = [int(m) for m in args.multiples.split(",")]
    quiet = quiet_check(args)
    print(
        f"{width}x{height}, chunks of {args.chunk_frames} frames, 1x = {base_chunks} chunks; "
        f"load {quiet.load_1m_measured:.2f}",
        flush=True,
    )
    periods = [int(p) for p in args.free_periods_ms.split(",")]
    runs = []
    work = Path(tempfile.mkdtemp(prefix="raypipe-bench-memory-"))
    try:
        for m in multiples:
            frames = m * base_chunks * args.chunk_frames
            spec = ClipSpec(
                width=width, height=height, n_frames=frames, gop=args.chunk_frames, seed=7
            )
            for free_ms in periods:
                with ForeignLoad() as foreign:
                    run = run_length(m, spec, args, work, free_ms)
                run["foreign_load"] = foreign.result
                runs.append(run)
                print(
                    f"{m}x ({frames} frames, free every {free_ms} ms, {run['wall_s']:.1f}s): "
                    + ", ".join(f"{label} {mib(run[key]):.0f} MiB" for key, label in METRICS),
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    top = f"{max(multiples)}x"
    ratios: dict[str, dict[str, dict[str, float | None]]] = {}
    targets: dict[str, bool] = {}
    for free_ms in periods:
        mine = [r for r in runs if r["free_objects_period_ms"] == free_ms]
        base = mine[0]
        ratios[f"{free_ms}ms"] = {
            f"{r['multiple']}x": {
                key: r[key] / base[key] if base[key] else None for key, _ in METRICS
            }
            for r in mine
        }
        rows = [
            [f"{r['multiple']}x", r["frames"], r["chunks"]]
            + [f"{mib(r[key]):.0f} ({r[key] / base[key]:.2f}x)" if base[key] else "n/a"
               for key, _ in METRICS]
            + [f"{mib(r['object_store_spilled_bytes']):.0f}"]
            for r in mine
        ]  # fmt: skip
        print(f"\nraylet frees dead objects every {free_ms} ms")
        print(
            table(
                rows,
                ["length", "frames", "chunks"]
                + [f"{label} MiB" for _, label in METRICS]
                + ["spilled MiB"],
            )
        )
        for key, label in METRICS:
            name = f"{label} at {top} <= 1.5x at 1x (free every {free_ms} ms)"
            targets[name] = (ratios[f"{free_ms}ms"][top][key] or 0) <= 1.5
    for name, met in targets.items():
        print(f"target {name}: {'met' if met else 'MISSED'}")
    doc = {
        "benchmark": "memory",
        "quick": args.quick,
        "machine": machine_info(),
        "load": quiet,
        "setup": {
            "frame_size": [width, height],
            "chunk_frames": args.chunk_frames,
            "base_chunks": base_chunks,
            "model": "builtin:identity",
            "codec": "libx264 ultrafast crf 23",
            "ray_num_cpus": args.num_cpus,
            "workers": 1,
            "sample_interval_s": 0.1,
            "free_objects_period_ms": periods,
        },
        "runs": runs,
        "ratios_to_1x": ratios,
        "targets_met": targets,
    }
    print(f"wrote {write_result('memory', doc, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
