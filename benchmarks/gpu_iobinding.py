"""IO binding (``IOBindingRunner(bind="cuda")``: a persistent device input buffer, bound
outputs) against plain ``session.run`` on the CUDA EP, three alternated rounds of 8 batches
each; raypipe's super-resolution network (x2) at 1080p, batch 4, FP32 and FP16, cuDNN in
NCHW and with ``prefer_nhwc``; ms per frame, host float32 in and out; outputs compared.
``TINY=1`` runs it on the CPU provider with tiny frames (checks the script, measures nothing).

    python benchmarks/gpu_iobinding.py   # writes benchmarks/results/gpu-iobinding.json
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from raypipe.infer.heavy import build_superres, to_float16  # noqa: E402
from raypipe.infer.iobinding import IOBindingRunner  # noqa: E402
from raypipe.infer.session import CUDA, create_session, granted_providers  # noqa: E402
from raypipe.infer.trt.options import cuda_options  # noqa: E402

TINY = os.environ.get("TINY") == "1"
SHAPE = (2, 3, 48, 64) if TINY else (4, 3, 1080, 1920)
CALLS = 2 if TINY else 8
VARIANTS = {"nchw": {}, "nhwc": {"prefer_nhwc": "1"}}


def ms_per_frame(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    for _ in range(CALLS):
        fn()
    return round(1000 * (time.perf_counter() - t0) / (CALLS * SHAPE[0]), 2)


def measure(data: bytes, extra: dict[str, str]) -> dict[str, Any]:
    if TINY:
        session = create_session(data, device="cpu")
    else:
        options = {CUDA: {**cuda_options(), **extra}}
        session = create_session(data, device="gpu", providers=[CUDA], provider_options=options)
    spec = session.get_inputs()[0]
    dtype = np.float16 if "float16" in spec.type else np.float32
    batch = np.random.default_rng(0).random(SHAPE, dtype=np.float32).astype(dtype)
    output = session.get_outputs()[0].name
    plain = IOBindingRunner(session, spec.name, output, bind="off")
    bound = IOBindingRunner(session, spec.name, output, bind="cpu" if TINY else "cuda")
    for _ in range(2):  # warm-up: cuDNN's algorithm search, buffers
        plain.run(batch)
        bound.run(batch)
    result: dict[str, Any] = {"providers": granted_providers(session), "plain": [], "bound": []}
    for _ in range(3):
        result["plain"].append(ms_per_frame(lambda: plain.run(batch)))
        result["bound"].append(ms_per_frame(lambda: bound.run(batch)))
    result["equal"] = bool(np.array_equal(plain.run(batch), bound.run(batch)))
    return result


def main() -> None:
    model = build_superres(scale=2, channels=64, blocks=8)
    results = {}
    for precision in ("fp32", "fp16"):
        data = (to_float16(model) if precision == "fp16" else model).SerializeToString()
        for variant, extra in VARIANTS.items():
            key = f"{precision}-{variant}"
            try:
                results[key] = measure(data, extra)
            except Exception as e:  # noqa: BLE001 - a failed case is a finding, recorded
                results[key] = {"error": f"{type(e).__name__}: {e}"[:800]}
            print(key, json.dumps(results[key]), flush=True)
    out = Path(os.environ.get("OUT") or Path(__file__).resolve().parent / "results")
    (out / "gpu-iobinding.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
