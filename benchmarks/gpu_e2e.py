"""End to end on a GPU machine: one generated 720p clip (240 frames) through raypipe with
``builtin:sharpen`` (FP32) four ways, each on a fresh local Ray: the GPU provider with
software decoding (frames handed to the actor as the run chooses: ``--handoff auto``, YUV
for an actor that holds a GPU, converted to RGB in the graph on the device), the same with
RGB frames (``--handoff rgb``), the GPU with NVDEC decoding, and the CPU. Each is timed
(wall, Ray start included; the first run also pays the process's first CUDA start), with
each stage's CPU milliseconds per frame from the run's stats (decode, inference with its
pre/post-processing, encode) and how frames reached the model, and the outputs (lossless
libx264rgb) are compared frame by frame with the CPU run's.

    python benchmarks/gpu_e2e.py     # writes benchmarks/results/gpu-e2e.json ($OUT if set)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import raypipe  # noqa: E402
from raypipe.testing import ClipSpec, decode_all, make_clip  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import stage_cpu_ms_per_frame  # noqa: E402

MODEL = "builtin:sharpen"
RUNS = {
    "gpu": ("gpu", "cpu", "auto"),
    "gpu-rgb": ("gpu", "cpu", "rgb"),
    "nvdec": ("gpu", "nvdec", "auto"),
    "cpu": ("cpu", "cpu", "auto"),
}
LOSSLESS: dict[str, Any] = {
    "codec": "libx264rgb",
    "crf": None,
    "preset": "ultrafast",
    "encoder_options": {"qp": "0"},
}


def run(src: Path, dst: Path, device: str, decoder: str, handoff: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    stats = raypipe.process_video(
        str(src), str(dst), model=MODEL, device=device, decoder=decoder, precision="fp32",
        handoff=handoff, overwrite=True, quiet=True, chunk_frames=48, local_num_cpus=16,
        **LOSSLESS,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    doc = stats.to_dict()
    samples = doc["gpu"].get("samples", [])
    return {
        "wall_s": round(wall, 2),
        "fps": doc["totals"]["fps"],
        "providers": doc["totals"]["providers"],
        "provider_notes": doc["totals"]["provider_notes"],
        "workers": doc["totals"]["workers"],
        "gpu_util_max": max((s.get("util", 0) for s in samples), default=None),
        "decoders": sorted({str(c.get("decoder")) for c in doc["chunks"]}),
        "handoffs": sorted({str(c.get("handoff")) for c in doc["chunks"]}),
        "pixels": sorted({str(c.get("pixels")) for c in doc["chunks"]}),
        "cpu_ms_per_frame": {
            s: round(ms, 2)
            for s, ms in stage_cpu_ms_per_frame(doc["chunks"], doc["totals"]["frames"]).items()
        },
        "chunk0": doc["chunks"][0] if doc["chunks"] else None,
    }


def compare(a: Path, b: Path) -> dict[str, Any]:
    fa, fb = decode_all(a)[0].astype(np.int16), decode_all(b)[0].astype(np.int16)
    if fa.shape != fb.shape:
        return {"shapes": [list(fa.shape), list(fb.shape)]}
    diff = np.abs(fa - fb)
    return {
        "frames": len(fa),
        "max_abs": int(diff.max()),
        "share_differing": float((diff > 0).mean()),
    }


def main() -> None:
    work = Path("/tmp/raypipe-gpu-e2e")
    work.mkdir(exist_ok=True)
    spec = ClipSpec(n_frames=240, width=1280, height=720, gop=24, audio="aac")
    src = make_clip(work / "src.mp4", spec)
    result: dict[str, Any] = {"frames": spec.n_frames, "model": MODEL}
    for name, (device, decoder, handoff) in RUNS.items():
        try:
            result[name] = run(src, work / f"{name}.mkv", device, decoder, handoff)
        except Exception as e:  # noqa: BLE001 - a failed run is a finding, recorded
            result[name] = {"error": f"{type(e).__name__}: {e}"[:2000]}
        print(name, json.dumps({k: v for k, v in result[name].items() if k != "chunk0"}))
    for name in ("gpu", "gpu-rgb", "nvdec"):
        if "wall_s" in result[name] and "wall_s" in result["cpu"]:
            result[f"compare_{name}"] = compare(work / f"{name}.mkv", work / "cpu.mkv")
            print(name, "vs cpu", result[f"compare_{name}"], flush=True)
    out = Path(os.environ.get("OUT") or Path(__file__).resolve().parent / "results")
    (out / "gpu-e2e.json").write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
