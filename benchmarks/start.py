"""The start on a running Ray (issue 15): ``raypipe run --address`` from the command to the
first chunk's decode, a new driver against one handed to a running ``raypipe serve``.

Both sides run the same command, as a user runs it, on the same running cluster (``ray start
--head``, 4 logical CPUs, :class:`perframe.RunningRay`, primed with one untimed run of the
tiny clip, so the cluster itself is warm either way; with ``--preload`` its workers import
Ray Data and raypipe's stages as they start, as the cluster image's do):

- **direct**: ``raypipe run CLIP OUT --address ADDR --no-service``: the command is the
  driver, a new Ray job (new worker processes, Ray Data imported and started again);
- **served**: ``raypipe run CLIP OUT --address ADDR`` with ``raypipe serve --address ADDR``
  running (started before the first round, after its own warm-up): the command hands the
  run to the service's driver and prints what it sends back.

Rounds alternate the order; each run is timed from the command's launch: to the first
chunk's decode and first inference (raypipe's ``--stats``, written by whichever process
drives the run), and to the command's end (wall). The outputs of the two sides must hold the
same frames (decoded and compared exactly), or the benchmark fails. Prints the medians and
spreads and the direct/served ratios; the issue's target is the first decode at most 2 s
after the command.

Usage (repository root)::

    python benchmarks/start.py                 # 120 frames of 720p, identity, 5 rounds
    python benchmarks/start.py --quick         # the tiny clip, 2 rounds (smoke)

Writes ``benchmarks/results/start.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import av  # noqa: E402
import numpy as np  # noqa: E402
from _common import add_common_args, machine_info, quiet_check, table, write_result  # noqa: E402
from perframe import CASES, RAYPIPE, RunningRay, _primed_cluster, _stats  # noqa: E402

from raypipe.testing.bytecode import compile_raypipe  # noqa: E402

TARGET_FIRST_DECODE_S = 2.0
SIDES = ("direct", "served")
SERVE_READY_S = 300


def start_service(cluster: RunningRay, log: Path) -> subprocess.Popen[bytes]:
    """``raypipe serve`` on ``cluster``, returned once it says it serves (after its warm-up)."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [*RAYPIPE, "serve", "--address", cluster.address],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + SERVE_READY_S
    while time.monotonic() < deadline:
        if "serving on" in log.read_text():
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    stop_service(proc)
    raise RuntimeError(f"raypipe serve did not come up: {log.read_text()[-2000:]}")


def stop_service(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def run_once(side: str, clip: Path, work: Path, address: str, case: Any) -> dict[str, Any]:
    out, stats = work / f"{side}.mp4", work / f"{side}.json"
    command = [*RAYPIPE, "run", str(clip), str(out), "--model", "builtin:identity",
               "--codec", "libx264", "--preset", case.preset, "--crf", str(case.crf),
               "--address", address, "--stats", str(stats), "--overwrite", "-q"]  # fmt: skip
    if side == "direct":
        command.append("--no-service")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    launched = time.time()
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{side} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    got = _stats(stats, launched, case.frames)
    return {"wall_s": wall, "first_decode_after_s": got["first_decode_after_s"],
            "first_infer_after_s": got["first_infer_after_s"], "output": str(out)}  # fmt: skip


def frames_of(path: str) -> list[np.ndarray]:
    with av.open(path) as container:
        return [f.to_ndarray(format="yuv420p") for f in container.decode(video=0)]


def same_frames(a: str, b: str, n_frames: int) -> bool:
    fa, fb = frames_of(a), frames_of(b)
    return len(fa) == len(fb) == n_frames and all(np.array_equal(x, y) for x, y in zip(fa, fb))


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def side_by_side(
    runs: dict[str, list[dict[str, Any]]], keys: Sequence[str], slow: str, fast: str, since: str
) -> tuple[dict[str, Any], dict[str, float], str]:
    """Medians and spreads of ``keys`` over each side's ``runs``, the ``slow``/``fast``
    ratios of the medians, and the table of both (its rows: from ``since`` to each key)."""
    summary = {side: {k: spread([x[k] for x in runs[side]]) for k in keys} for side in runs}
    ratios = {k: summary[slow][k]["median"] / summary[fast][k]["median"] for k in keys}
    rows = []
    for k in keys:
        a, b = summary[slow][k], summary[fast][k]
        rows.append([k, f"{a['median']:.2f}", f"{a['min']:.2f}..{a['max']:.2f}",
                     f"{b['median']:.2f}", f"{b['min']:.2f}..{b['max']:.2f}",
                     f"{ratios[k]:.2f}"])  # fmt: skip
    headers = [f"from {since} to", f"{slow} s", "spread", f"{fast} s", "spread", f"{slow}/{fast}"]
    return summary, ratios, table(rows, headers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--rounds", type=int, default=None, help="alternated rounds (5)")
    parser.add_argument("--frames", type=int, default=120, help="frames of the 720p clip")
    parser.add_argument("--preload", action="store_true",
                        help="the cluster's workers preload Ray Data and raypipe's stages, "
                        "as the cluster image's do (cluster/Dockerfile)")  # fmt: skip
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    if args.quick:
        case = CASES["tiny"]
    else:
        case = dataclasses.replace(CASES["720p-60s"], frames=args.frames, name="720p")
    bytecode = compile_raypipe()
    quiet = quiet_check(args)
    print(f"load {quiet.load_1m_measured:.2f} at start; {case.name}, {case.frames} frames, "
          f"{rounds} round(s); workers preload: {args.preload}", flush=True)  # fmt: skip
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    clip = case.clip()
    work = Path(tempfile.mkdtemp(prefix="raypipe-bench-start-"))
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    same = True
    cluster = _primed_cluster(work, preload=args.preload)
    try:
        service = start_service(cluster, work / "serve.log")
        try:
            for r in range(rounds):
                order = SIDES if r % 2 == 0 else SIDES[::-1]
                for side in order:
                    got = run_once(side, clip, work, cluster.address, case)
                    runs[side].append(got)
                    print(f"round {r + 1} {side}: first decode {got['first_decode_after_s']:.2f}"
                          f" s, first inference {got['first_infer_after_s']:.2f} s, wall "
                          f"{got['wall_s']:.2f} s", flush=True)  # fmt: skip
                same &= same_frames(runs["direct"][-1]["output"], runs["served"][-1]["output"],
                                    case.frames)  # fmt: skip
        finally:
            stop_service(service)
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    keys = ("first_decode_after_s", "first_infer_after_s", "wall_s")
    summary, ratios, text = side_by_side(runs, keys, "direct", "served", "the command")
    print()
    print(text)
    served_first = summary["served"]["first_decode_after_s"]["median"]
    verdict = "met" if served_first <= TARGET_FIRST_DECODE_S else "missed"
    print(f"served first decode {served_first:.2f} s: target {TARGET_FIRST_DECODE_S} s {verdict};"
          f" outputs {'hold the same frames' if same else 'DIFFER'}")  # fmt: skip
    doc = {"benchmark": "start", "quick": args.quick, "machine": machine_info(), "load": quiet,
           "bytecode": bytecode, "preload": args.preload, "case": case.name,
           "frames": case.frames, "rounds": rounds,
           "runs": runs, "summary": summary, "ratios": ratios, "same_frames": same,
           "target_first_decode_s": TARGET_FIRST_DECODE_S}  # fmt: skip
    print(f"wrote {write_result('start', doc, args.out)}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
