"""What does the Ray pipeline cost per chunk, when the work itself is almost nothing?

Identity model, tiny frames (64x48), chunks of 1 and of 8 frames, N chunks, one
inference actor, on a fresh local Ray after an untimed warm-up run. From the ``--stats``
of each run:

- **wall per chunk**: the pipeline's span (first decode start to last encode end) / N,
  and end to end (``process_video`` wall, with probe, plan, actor start and assembly) / N;
- **stage work**: the decode + infer + encode seconds measured inside the stages, summed;
- **overhead per chunk** = (span − sum of stage work) / N: what scheduling, moving rows
  through the object store and the driver cost beyond the stages' own work, as if the
  stages ran one after another. Stages of different chunks overlap, so this can be
  smaller than the true per-chunk cost, and is negative when overlap hides all of it.

Usage::

    python benchmarks/overhead.py            # 240 chunks per chunk size
    python benchmarks/overhead.py --quick    # 40 chunks

Writes ``benchmarks/results/overhead.json``.
"""

from __future__ import annotations

import argparse
import json
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
    add_common_args,
    cached_clip,
    machine_info,
    quiet_check,
    start_ray,
    stop_ray,
    table,
    warm_up,
    write_result,
)

from raypipe.testing import ClipSpec  # noqa: E402

WIDTH, HEIGHT = 64, 48


def run_chunk_size(
    chunk_frames: int, n_chunks: int, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    import raypipe

    frames = chunk_frames * n_chunks
    clip = cached_clip(
        ClipSpec(width=WIDTH, height=HEIGHT, n_frames=frames, gop=chunk_frames, bframes=0, seed=7)
    )
    options: dict[str, Any] = {
        "model": "builtin:identity",
        "workers": 1,
        "batch_size": 8,
        "device": "cpu",
        "codec": "libx264",
        "preset": "ultrafast",
        "crf": 23,
    }
    stats_path = work / f"stats-{chunk_frames}.json"
    start_ray(args.num_cpus)
    try:
        warm_up(4, **options)
        started = time.perf_counter()
        raypipe.process_video(
            str(clip),
            str(work / f"out-{chunk_frames}.mp4"),
            chunk_frames=chunk_frames,
            overwrite=True,
            quiet=True,
            stats_path=str(stats_path),
            **options,
        )
        wall_s = time.perf_counter() - started
    finally:
        stop_ray()
    chunks = json.loads(stats_path.read_text())["chunks"]
    n = len(chunks)
    first = min(c["decode_start"] for c in chunks)
    last = max(c["encode_start"] + c["encode_s"] for c in chunks)
    span_s = last - first
    stage_s = {s: sum(c[f"{s}_s"] for c in chunks) for s in ("decode", "infer", "encode")}
    work_s = sum(stage_s.values())
    return {
        "chunk_frames": chunk_frames,
        "chunks": n,
        "frames": frames,
        "wall_s": wall_s,
        "span_s": span_s,
        "stage_s": stage_s,
        "stage_ms_per_chunk": {k: 1000 * v / n for k, v in stage_s.items()},
        "wall_ms_per_chunk": 1000 * span_s / n,
        "wall_ms_per_chunk_end_to_end": 1000 * wall_s / n,
        "overhead_ms_per_chunk": 1000 * (span_s - work_s) / n,
        "fixed_cost_s": wall_s - span_s,
        "chunks_per_s": n / span_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--chunks", type=int, default=None, help="chunks per run (240)")
    parser.add_argument("--chunk-sizes", default="1,8")
    parser.add_argument("--num-cpus", type=int, default=4, help="Ray logical CPUs")
    args = parser.parse_args(argv)
    n_chunks = args.chunks or (40 if args.quick else 240)
    quiet = quiet_check(args)
    print(f"{WIDTH}x{HEIGHT}, identity, {n_chunks} chunks; load {quiet.load_1m_measured:.2f}")
    runs = []
    work = Path(tempfile.mkdtemp(prefix="raypipe-bench-overhead-"))
    try:
        for size in (int(s) for s in args.chunk_sizes.split(",")):
            with ForeignLoad() as foreign:
                run = run_chunk_size(size, n_chunks, args, work)
            run["foreign_load"] = foreign.result
            runs.append(run)
            print(
                f"{size} frame(s)/chunk: {run['wall_ms_per_chunk']:.1f} ms/chunk, "
                f"overhead {run['overhead_ms_per_chunk']:.1f} ms/chunk",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [
        [r["chunk_frames"], r["chunks"], f"{r['wall_ms_per_chunk']:.1f}",
         f"{r['stage_ms_per_chunk']['decode']:.1f}", f"{r['stage_ms_per_chunk']['infer']:.1f}",
         f"{r['stage_ms_per_chunk']['encode']:.1f}", f"{r['overhead_ms_per_chunk']:.1f}",
         f"{r['chunks_per_s']:.1f}", f"{r['wall_ms_per_chunk_end_to_end']:.1f}",
         f"{r['fixed_cost_s']:.1f}"]
        for r in runs
    ]  # fmt: skip
    print()
    print(
        table(
            rows,
            ["frames/chunk", "chunks", "wall ms/chunk", "decode ms", "infer ms", "encode ms",
             "overhead ms/chunk", "chunks/s", "e2e ms/chunk", "fixed s"],
        )
    )  # fmt: skip
    doc = {
        "benchmark": "overhead",
        "quick": args.quick,
        "machine": machine_info(),
        "load": quiet,
        "setup": {
            "frame_size": [WIDTH, HEIGHT],
            "model": "builtin:identity",
            "codec": "libx264 ultrafast crf 23",
            "workers": 1,
            "ray_num_cpus": args.num_cpus,
        },
        "runs": runs,
    }
    print(f"wrote {write_result('overhead', doc, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
