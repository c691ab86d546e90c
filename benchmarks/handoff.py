"""Frames from the decode task to the model as RGB or as YUV (``--handoff``): what each
costs, per frame, side by side.

For each case one chunk of a generated clip is decoded twice in this process, as the
decode task does (``decode_chunk``): to RGB, and packed YUV 4:2:0 (the YUV hand-off). Then
the model runs on it three ways, as an inference actor would:

- ``rgb``: the RGB frames through ``FrameModel`` (the host path on the CPU, the wrapped
  graph on a GPU: what ``auto`` picks);
- ``yuv-graph``: the packed frames through the model with the conversion in its graph
  (``FrameModel(yuv=...)``; what a GPU actor does);
- ``yuv-host``: the packed frames converted on the host by swscale, then as ``rgb`` (what
  an actor whose session has no GPU provider does with YUV).

Reported per frame, median and spread (min..max) of alternated runs: the decode's and the
model side's CPU milliseconds of this process (``time.process_time``), wall milliseconds,
and the bytes a frame takes through the object store. The three outputs are checked equal
bit for bit (the run fails otherwise). On the CPU, one intra-op thread (an actor's); with
``--device gpu`` a GPU session (unrun so far: no GPU machine since the hand-off was made).

Usage::

    python benchmarks/handoff.py            # 5 runs per way
    python benchmarks/handoff.py --quick    # 2 runs, the 720p case only
    python benchmarks/handoff.py --device gpu

Writes ``benchmarks/results/handoff.json``.
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
from _common import (  # noqa: E402
    add_common_args,
    cached_clip,
    machine_info,
    quiet_check,
    table,
    write_result,
)

HD_COLOUR = ("bt709", "bt709", "bt709", "tv")
# (model, width, height, frames in the chunk, batch)
CASES = (
    ("builtin:identity", 1280, 720, 32, 8),
    ("builtin:sharpen", 1280, 720, 32, 8),
    ("builtin:invert", 3840, 2160, 8, 2),
)
WAYS = ("rgb", "yuv-graph", "yuv-host")


def _timed(fn: Any) -> tuple[float, float, Any]:
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - cpu, time.perf_counter() - wall, out


def run_case(
    name: str, width: int, height: int, n: int, batch: int, runs: int, device: str
) -> dict[str, Any]:
    from raypipe.config import ChunkConfig
    from raypipe.infer.models import FrameModel
    from raypipe.infer.sidecar import resolve_model_and_spec
    from raypipe.media import decode_chunk, plan_chunks, probe
    from raypipe.media.yuv import YuvInput, YuvRule
    from raypipe.recycle import RecycledArrays
    from raypipe.testing import ClipSpec

    spec_clip = ClipSpec(width=width, height=height, n_frames=n, fps=30, gop=n, crf=23,  # type: ignore[arg-type]
                         seed=7, colour=HD_COLOUR)  # fmt: skip
    info = probe(str(cached_clip(spec_clip)))
    chunk = plan_chunks(info, ChunkConfig(chunk_frames=n)).chunks[0]
    source = YuvInput.of(info.picture_format)
    data, _, spec = resolve_model_and_spec(name)
    threads = 1 if device == "cpu" else None
    rgb_model = FrameModel(data, spec=spec, device=device, intra_op_threads=threads)
    yuv_model = FrameModel(data, spec=spec, device=device, intra_op_threads=threads, yuv=source)
    pools = {"rgb": RecycledArrays(), "yuv": RecycledArrays()}  # as decode tasks keep theirs
    decoded = {
        "decode-rgb": lambda: (
            decode_chunk(info, chunk, threads=1, allocate=pools["rgb"].empty).frames
        ),
        "decode-yuv": lambda: (
            decode_chunk(
                info, chunk, threads=1, handoff=YuvRule(), allocate=pools["yuv"].empty
            ).frames
        ),
    }
    frames = {k: fn() for k, fn in decoded.items()}  # also the warm-up
    converted = RecycledArrays()  # as the actor keeps the host-converted frames
    model_side = {
        "rgb": lambda: rgb_model.run(frames["decode-rgb"], batch),
        "yuv-graph": lambda: yuv_model.run(frames["decode-yuv"], batch),
        "yuv-host": lambda: rgb_model.run(
            source.to_rgb(frames["decode-yuv"], converted.empty), batch
        ),
    }
    outs = {way: fn() for way, fn in model_side.items()}
    samples: dict[str, dict[str, list[float]]] = {
        k: {"cpu": [], "wall": []} for k in (*decoded, *model_side)
    }
    for i in range(runs):
        order = list(decoded) + list(model_side)
        for key in order if i % 2 == 0 else order[::-1]:
            fn = decoded.get(key) or model_side[key]
            cpu_s, wall_s, out = _timed(fn)
            if key in model_side:
                outs[key] = out
            samples[key]["cpu"].append(1000 * cpu_s / n)
            samples[key]["wall"].append(1000 * wall_s / n)
    result: dict[str, Any] = {
        "model": name, "frame_hw": [height, width], "frames": n, "batch": batch,
        "providers": yuv_model.providers, "rgb_pixels": rgb_model.pixels,
        "bytes_per_frame": {k: int(v[0].nbytes) for k, v in frames.items()},
        "bit_exact": all(np.array_equal(outs["rgb"], outs[w]) for w in WAYS),
    }  # fmt: skip
    for key, s in samples.items():
        result[key] = {
            "cpu_ms_per_frame": statistics.median(s["cpu"]),
            "cpu_ms_range": [min(s["cpu"]), max(s["cpu"])],
            "wall_ms_per_frame": statistics.median(s["wall"]),
            "wall_ms_range": [min(s["wall"]), max(s["wall"])],
        }
    for way in WAYS:  # decode + model side, CPU
        decode = "decode-rgb" if way == "rgb" else "decode-yuv"
        result[f"total_cpu_{way}"] = (
            result[decode]["cpu_ms_per_frame"] + result[way]["cpu_ms_per_frame"]
        )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--runs", type=int, default=None, help="timed runs per way (5)")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    args = parser.parse_args(argv)
    runs = args.runs or (2 if args.quick else 5)
    quiet = quiet_check(args)
    print(f"load {quiet.load_1m_measured:.2f} at start; {runs} alternated runs per way")
    results = []
    for name, width, height, n, batch in CASES[:1] if args.quick else CASES:
        if args.quick:
            n = 2 * batch
        r = run_case(name, width, height, n, batch, runs, args.device)
        r["load_1m_end"] = round(os.getloadavg()[0], 2)
        results.append(r)
        print(f"{name} {width}x{height}: bit-exact {r['bit_exact']}", flush=True)

    def cell(r: dict[str, Any], key: str, what: str = "cpu") -> str:
        lo, hi = r[key][f"{what}_ms_range"]
        return f"{r[key][f'{what}_ms_per_frame']:.1f} ({lo:.1f}..{hi:.1f})"

    rows = []
    for r in results:
        case = f"{r['model']} {r['frame_hw'][1]}x{r['frame_hw'][0]}"
        for way in WAYS:
            decode = "decode-rgb" if way == "rgb" else "decode-yuv"
            rows.append([
                case, way, f"{r['bytes_per_frame'][decode] / 2**20:.2f}", cell(r, decode),
                cell(r, way), f"{r[f'total_cpu_{way}']:.1f}", cell(r, way, "wall"),
                r["bit_exact"],
            ])  # fmt: skip
    print()
    print(
        table(
            rows,
            ["case", "way", "MiB/frame", "decode CPU ms/frame", "model CPU ms/frame",
             "total CPU ms", "model wall ms/frame", "bit-exact"],
        )
    )  # fmt: skip
    doc = {
        "benchmark": "handoff",
        "quick": args.quick,
        "machine": machine_info(),
        "load": quiet,
        "setup": {"device": args.device, "runs": runs,
                  "intra_op_threads": 1 if args.device == "cpu" else None},
        "cases": results,
    }  # fmt: skip
    print(f"wrote {write_result('handoff', doc, args.out)}")
    return 0 if all(r["bit_exact"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
