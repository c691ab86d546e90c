"""Does the pipeline keep N accelerators busy? Simulated accelerators, 1 to 8 of them.

The model is ``sim:hold_ms=H`` (:mod:`raypipe.infer.simulated`): each model call holds
for H ms without using the CPU, like a GPU kernel seen from the host. Ray is started with
``num_gpus=N`` logical GPUs and raypipe runs ``workers=N`` inference actors, one per GPU;
the video, chunking and everything else stay the same (strong scaling: the same work
spread over more accelerators).

Why these settings, on a 2-core machine: the accelerators are simulated but decode,
encode and Ray's own per-chunk work are real and share the 2 cores. To measure the
pipeline's ability to feed N accelerators, not the CPU, the CPU work per chunk must stay
well under the accelerator time per chunk even at N = 8:

- the CPU side of a chunk (decode task, Ray Data's scheduling and object transfers,
  encode task) costs about 45 ms of wall time on this machine even for tiny frames
  (``benchmarks/overhead.py``: 44-48 ms per chunk end to end), so 2 cores feed at most
  ~20 chunks per second. A first version with one 400 ms hold per chunk asked for
  8 / 0.4 = 20 chunks/s at N = 8 and measured an efficiency of 0.30 there: a CPU
  benchmark, not a scaling one;
- so a chunk holds its accelerator as long as a real one would: 64 frames per chunk in
  batches of 8, each batch held H = 360 ms, i.e. 45 ms a frame, the field articles'
  TensorRT FP16 face swap at 1080p (SEEDS.md): 2.9 s per chunk. At N = 8 the actors then
  ask for 8 / 2.88 ≈ 2.8 chunks/s, under half of what the CPU side can serve;
- frames are tiny (160x96) so decode/encode stay a few ms per chunk;
- each actor reserves 0.25 CPU (``actor_num_cpus``), Ray gets 8 logical CPUs, so even 8
  actors leave 6 slots for decode/encode tasks (see DESIGN.md's starvation trap);
- 48 chunks: 6 per actor at N = 8; the first chunk's fill (decode before any actor
  starts) and the last chunk's encode are a few % of the span.

Each N gets a fresh local Ray and first an untimed warm-up run (2 chunks per actor) so
Ray's worker processes exist, as on a long-running cluster (``--cold`` skips it). Three
throughputs are reported, from the ``--stats`` of each run:

- **steady**: inference throughput while every actor is up (:func:`steady_state`): does
  the pipeline keep N accelerators fed? The targets are checked on this one;
- **span**: first chunk's decode start to last chunk's encode end. It includes starting
  the N actor processes, which on 2 cores takes ~1 s at N = 1 and ~7 s at N = 8 (process
  spawn and imports, one after another for lack of cores); a cluster starts each node's
  actors in parallel;
- **end to end**: ``process_video``'s wall time.

Scaling efficiency is ``fps(N) / (N × fps(1))``; an actor's busy share is the sum of its
hold times over the span.

Usage::

    python benchmarks/scaling.py            # H = 360 ms, 8 batches/chunk, 48 chunks, N = 1, 2, 4, 8
    python benchmarks/scaling.py --quick    # H = 50 ms, 2 batches/chunk, 16 chunks (< 60 s)

Writes ``benchmarks/results/scaling.json``.
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

WIDTH, HEIGHT = 160, 96


def run_one(
    n_gpus: int, clip: Path, work: Path, args: argparse.Namespace, frames: int
) -> dict[str, Any]:
    import raypipe

    start_ray(args.num_cpus, num_gpus=n_gpus)
    try:
        stats_path = work / f"stats-{n_gpus}.json"
        options: dict[str, Any] = {
            "model": f"sim:hold_ms={args.hold_ms:g}",
            "workers": n_gpus,
            "actor_num_cpus": args.actor_cpus,
            "batch_size": args.batch_size,
            "codec": "libx264",
            "preset": "ultrafast",
            "crf": 23,
        }
        warm_s = warm_up(2 * n_gpus, **options) if not args.cold else 0.0
        started = time.perf_counter()
        raypipe.process_video(
            str(clip),
            str(work / f"out-{n_gpus}.mp4"),
            chunk_frames=args.chunk_frames,
            overwrite=True,
            quiet=True,
            stats_path=str(stats_path),
            **options,
        )
        wall_s = time.perf_counter() - started
    finally:
        stop_ray()
    chunks = json.loads(stats_path.read_text())["chunks"]
    first = min(c["decode_start"] for c in chunks)
    last = max(c["encode_start"] + c["encode_s"] for c in chunks)
    span_s = last - first
    by_actor: dict[str, float] = {}
    for c in chunks:
        by_actor[c["actor_id"]] = by_actor.get(c["actor_id"], 0.0) + c["infer_s"]
    busy = [held / span_s for held in by_actor.values()]
    gpu_ids = sorted({g for c in chunks for g in c.get("gpu_ids", [])})
    steady = steady_state(chunks)
    return {
        "gpus": n_gpus,
        "actors_used": len(by_actor),
        "gpu_ids_seen": gpu_ids,
        "chunks": len(chunks),
        "frames": frames,
        "warm_up_s": warm_s,
        "wall_s": wall_s,
        "span_s": span_s,
        "fps_span": frames / span_s,
        "fps_wall": frames / wall_s,
        "actor_busy_mean": sum(busy) / len(busy),
        "actor_busy_min": min(busy),
        "cpu_s_per_chunk_decode_encode": sum(c["decode_s"] + c["encode_s"] for c in chunks)
        / len(chunks),
        "actors_up_s": steady["actors_up_s"],
        "steady_s": steady["steady_s"],
        "fps_steady": steady["fps"],
    }


def steady_state(chunks: list[dict[str, Any]]) -> dict[str, float]:
    """Inference throughput while every actor is up: from the moment the last actor starts
    its first chunk to the moment the first actor ends its last one.

    A chunk's frames count in proportion to the part of its hold inside that window. On a
    real cluster each node starts its own actors in parallel; on 2 cores, starting 8 actor
    processes (spawn, imports) takes seconds of CPU one after another, and the end-to-end
    numbers below include that. This one measures what the pipeline does once they exist:
    whether it keeps them fed.
    """
    t0 = min(c["decode_start"] for c in chunks)
    per_actor: dict[str, list[tuple[float, float]]] = {}
    for c in chunks:
        per_actor.setdefault(c["actor_id"], []).append(
            (c["infer_start"], c["infer_start"] + c["infer_s"])
        )
    start = max(min(a for a, _ in spans) for spans in per_actor.values())
    end = min(max(b for _, b in spans) for spans in per_actor.values())
    frames = 0.0
    for c in chunks:
        a, b = c["infer_start"], c["infer_start"] + c["infer_s"]
        inside = max(0.0, min(b, end) - max(a, start))
        frames += c["n_frames"] * inside / max(b - a, 1e-9)
    steady = max(end - start, 1e-9)
    return {"actors_up_s": start - t0, "steady_s": steady, "fps": frames / steady}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--hold-ms", type=float, default=None, help="per model call (400)")
    parser.add_argument("--chunks", type=int, default=None, help="chunks in the video (96)")
    parser.add_argument("--chunk-frames", type=int, default=None, help="64; quick 16")
    parser.add_argument("--batch-size", type=int, default=8, help="frames per model call")
    parser.add_argument("--gpus", default="1,2,4,8")
    parser.add_argument("--num-cpus", type=int, default=8, help="Ray logical CPUs")
    parser.add_argument("--actor-cpus", type=float, default=0.25)
    parser.add_argument(
        "--cold", action="store_true", help="no untimed warm-up run on each fresh Ray"
    )
    args = parser.parse_args(argv)
    args.hold_ms = args.hold_ms or (50.0 if args.quick else 360.0)
    args.chunk_frames = args.chunk_frames or (16 if args.quick else 64)
    n_chunks = args.chunks or (16 if args.quick else 48)
    frames = n_chunks * args.chunk_frames
    quiet = quiet_check(args)
    spec = ClipSpec(width=WIDTH, height=HEIGHT, n_frames=frames, gop=args.chunk_frames, seed=7)
    clip = cached_clip(spec)
    gpus = [int(g) for g in args.gpus.split(",")]
    print(
        f"sim:hold_ms={args.hold_ms:g}, {n_chunks} chunks of {args.chunk_frames} frames "
        f"{WIDTH}x{HEIGHT}; load {quiet.load_1m_measured:.2f}",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="raypipe-bench-scaling-"))
    runs = []
    try:
        for n in gpus:
            with ForeignLoad() as foreign:
                run = run_one(n, clip, work, args, frames)
            run["foreign_load"] = foreign.result
            runs.append(run)
            print(
                f"N={n}: steady {run['fps_steady']:.1f} fps over {run['steady_s']:.1f}s "
                f"(all actors up after {run['actors_up_s']:.1f}s), span {run['fps_span']:.1f} "
                f"fps, end to end {run['fps_wall']:.1f} fps",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = next((r for r in runs if r["gpus"] == 1), None)
    for r in runs:
        if base:
            r["efficiency_steady"] = r["fps_steady"] / (r["gpus"] * base["fps_steady"])
            r["efficiency_span"] = r["fps_span"] / (r["gpus"] * base["fps_span"])
            r["efficiency_wall"] = r["fps_wall"] / (r["gpus"] * base["fps_wall"])
        # the accelerators' own ceiling: every actor holding all the time
        holds_per_chunk = -(-args.chunk_frames // args.batch_size)
        r["ideal_fps"] = r["gpus"] * args.chunk_frames / (holds_per_chunk * args.hold_ms / 1000)
    nan = float("nan")
    rows = [
        [r["gpus"], f"{r['ideal_fps']:.1f}", f"{r['fps_steady']:.1f}",
         f"{r.get('efficiency_steady', nan):.3f}", f"{r['actors_up_s']:.1f}",
         f"{r['fps_span']:.1f}", f"{r.get('efficiency_span', nan):.3f}",
         f"{r['fps_wall']:.1f}", f"{r.get('efficiency_wall', nan):.3f}"]
        for r in runs
    ]  # fmt: skip
    print()
    print(
        table(
            rows,
            [
                "GPUs",
                "ideal fps",
                "steady fps",
                "eff. steady",
                "actors up s",
                "span fps",
                "eff. span",
                "e2e fps",
                "eff. e2e",
            ],
        )  # fmt: skip
    )
    effs = {r["gpus"]: r.get("efficiency_steady", nan) for r in runs}
    spans = {r["gpus"]: r.get("efficiency_span", nan) for r in runs}
    targets = {
        "steady efficiency(4) >= 0.9": effs.get(4, 0) >= 0.9,
        "steady efficiency(8) >= 0.8": effs.get(8, 0) >= 0.8,
        "span efficiency(4) >= 0.9 (incl. actor start)": spans.get(4, 0) >= 0.9,
        "span efficiency(8) >= 0.8 (incl. actor start)": spans.get(8, 0) >= 0.8,
    }
    for name, met in targets.items():
        print(f"target {name}: {'met' if met else 'MISSED'}")
    doc = {
        "benchmark": "scaling",
        "quick": args.quick,
        "machine": machine_info(),
        "load": quiet,
        "setup": {
            "model": f"sim:hold_ms={args.hold_ms:g}",
            "frame_size": [WIDTH, HEIGHT],
            "chunk_frames": args.chunk_frames,
            "batch_size": args.batch_size,
            "chunks": n_chunks,
            "ray_num_cpus": args.num_cpus,
            "actor_num_cpus": args.actor_cpus,
            "codec": "libx264 ultrafast crf 23",
        },
        "runs": runs,
        "targets_met": targets,
    }
    print(f"wrote {write_result('scaling', doc, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
