"""Pre/post-processing in the ONNX graph or on the host: which is faster?

``FrameModel(pixels="graph")`` runs the model wrapped for uint8 frames
(:mod:`raypipe.infer.ingraph`); ``pixels="host"`` converts frames with numpy/OpenCV around
the bare model (:mod:`raypipe.infer.pixels`). Both on a CPU session with one intra-op
thread (what an inference actor gets on the CPU), or with ``--device gpu`` on a GPU
session (CUDA/TensorRT with IO binding: uint8 crosses the bus in the graph, float32 on the
host path), on the same random frames, alternated run by run; the outputs are checked
equal bit for bit. Reported per frame: CPU milliseconds of this process
(``time.process_time``, less sensitive to other processes on a shared machine than wall
time) and wall milliseconds, median and spread (min..max) of the runs. ``CPU_PIXELS`` in
:mod:`raypipe.infer.models` takes the faster path.

Usage::

    python benchmarks/pixels.py            # 7 runs per case
    python benchmarks/pixels.py --quick    # 3 runs, fewer frames
    python benchmarks/pixels.py --device gpu   # on a GPU machine (unrun so far)

Writes ``benchmarks/results/pixels.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_common_args, machine_info, quiet_check, table, write_result  # noqa: E402

# (model, height, width, frames, batch)
CASES = (
    ("builtin:identity", 720, 1280, 16, 8),
    ("builtin:sharpen", 720, 1280, 16, 8),
    ("builtin:invert", 2160, 3840, 4, 2),
)


def _time(model: Any, frames: np.ndarray, batch: int) -> tuple[float, float, np.ndarray]:
    cpu, wall = time.process_time(), time.perf_counter()
    out = model.run(frames, batch)
    return time.process_time() - cpu, time.perf_counter() - wall, out


def run_case(
    name: str, hw: tuple[int, int], n: int, batch: int, runs: int, device: str = "cpu"
) -> dict[str, Any]:
    from raypipe.infer.models import load_frame_model

    frames = np.random.default_rng(7).integers(0, 256, (n, *hw, 3), dtype=np.uint8)
    models = {
        path: load_frame_model(
            name, device=device, intra_op_threads=1 if device == "cpu" else None, pixels=path
        )
        for path in ("host", "graph")
    }
    assert models["graph"].pixels == "graph", models["graph"].pixels_note
    samples: dict[str, dict[str, list[float]]] = {p: {"cpu": [], "wall": []} for p in models}
    outs = {}
    for path, model in models.items():  # warm-up, untimed
        outs[path] = model.run(frames[:batch], batch)
    for i in range(runs):
        order = ("host", "graph") if i % 2 == 0 else ("graph", "host")
        for path in order:
            cpu_s, wall_s, outs[path] = _time(models[path], frames, batch)
            samples[path]["cpu"].append(1000 * cpu_s / n)
            samples[path]["wall"].append(1000 * wall_s / n)
    equal = bool(np.array_equal(outs["host"], outs["graph"]))
    result: dict[str, Any] = {"model": name, "frame_hw": list(hw), "frames": n, "batch": batch,
                              "providers": models["graph"].providers}  # fmt: skip
    for path, s in samples.items():
        result[path] = {
            "cpu_ms_per_frame": statistics.median(s["cpu"]),
            "cpu_ms_range": [min(s["cpu"]), max(s["cpu"])],
            "wall_ms_per_frame": statistics.median(s["wall"]),
            "wall_ms_range": [min(s["wall"]), max(s["wall"])],
            "runs_cpu_ms": s["cpu"],
        }
    result["graph_over_host_cpu"] = result["graph"]["cpu_ms_per_frame"] / max(
        result["host"]["cpu_ms_per_frame"], 1e-9
    )
    result["bit_exact"] = equal
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--runs", type=int, default=None, help="timed runs per path (7)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    args = parser.parse_args(argv)
    runs = args.runs or (3 if args.quick else 7)
    quiet = quiet_check(args)
    print(f"load {quiet.load_1m_measured:.2f} at start; {runs} alternated runs per path")
    results = []
    for name, h, w, n, batch in CASES:
        if args.quick:
            n = batch
        result = run_case(name, (h, w), n, batch, runs, args.device)
        result["load_1m_end"] = round(os.getloadavg()[0], 2)
        results.append(result)
        print(
            f"{name} {w}x{h}: host {result['host']['cpu_ms_per_frame']:.1f} ms CPU/frame, "
            f"graph {result['graph']['cpu_ms_per_frame']:.1f} "
            f"(x{result['graph_over_host_cpu']:.2f}), bit-exact {result['bit_exact']}; "
            f"load {result['load_1m_end']}",
            flush=True,
        )

    def cell(r: dict[str, Any], path: str, what: str) -> str:
        lo, hi = r[path][f"{what}_ms_range"]
        return f"{r[path][f'{what}_ms_per_frame']:.1f} ({lo:.1f}..{hi:.1f})"

    rows = [
        [f"{r['model']} {r['frame_hw'][1]}x{r['frame_hw'][0]}", cell(r, "host", "cpu"),
         cell(r, "graph", "cpu"), f"{r['graph_over_host_cpu']:.2f}", cell(r, "host", "wall"),
         cell(r, "graph", "wall"), r["bit_exact"]]
        for r in results
    ]  # fmt: skip
    print()
    print(
        table(
            rows,
            ["case", "host CPU ms/frame", "graph CPU ms/frame", "graph/host",
             "host wall ms/frame", "graph wall ms/frame", "bit-exact"],
        )
    )  # fmt: skip
    doc = {
        "benchmark": "pixels",
        "quick": args.quick,
        "machine": machine_info(),
        "load": quiet,
        "setup": {
            "device": args.device,
            "intra_op_threads": 1 if args.device == "cpu" else None,
            "runs": runs,
        },
        "cases": results,
    }
    print(f"wrote {write_result('pixels', doc, args.out)}")
    return 0 if all(r["bit_exact"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
