"""A notebook's runs in a row (issue 15's start): the next run of a driver that stays.

One Python process makes several runs of the same clip one after another on the local Ray it
started with the first, pausing between them as a user looking at a result would (``--pause``
seconds), as a notebook does. Two sides, each its own process, the same runs:

- **library**: ``raypipe.process_video``: after each run the nodes start the worker
  processes the next run's actors take (:mod:`raypipe.distributed.prestart`);
- **plain**: ``raypipe.distributed.pipeline.process_video``, the same run without that (what
  ``raypipe run`` calls: the command ends after its run).

The first run of each process starts Ray and is not timed. Rounds alternate which side goes
first. Each timed run gives the seconds from its call to its first chunk's decode (its
stats) and to its return. Prints the medians and spreads and the plain/library ratios; the
outputs of the two sides must hold the same frames.

Usage (repository root)::

    python benchmarks/notebook.py               # 120 frames of 720p, identity, 2 rounds of 4 runs
    python benchmarks/notebook.py --quick       # the tiny clip, 1 round of 2 runs (smoke)

Writes ``benchmarks/results/notebook.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import add_common_args, machine_info, quiet_check, write_result  # noqa: E402
from perframe import CASES  # noqa: E402
from start import same_frames, side_by_side  # noqa: E402

from raypipe.testing.bytecode import compile_raypipe  # noqa: E402

SIDES = ("library", "plain")


def side_runs(side: str, clip: str, work: str, runs: int, pause: float, case: Any) -> None:
    """In this process: an untimed run, then ``runs`` timed ones; prints one JSON line."""
    if side == "library":
        from raypipe import process_video
    else:
        from raypipe.api import _run_config
        from raypipe.distributed.pipeline import process_video as plain

        def process_video(input: str, output: str, **options: Any) -> Any:
            return plain(input, output, _run_config(None, options))

    options = {"model": "builtin:identity", "codec": "libx264", "preset": case.preset,
               "crf": case.crf, "quiet": True, "overwrite": True}  # fmt: skip
    got = []
    for i in range(runs + 1):
        stats_path = os.path.join(work, f"{side}-{i}.json")
        out = os.path.join(work, f"{side}.mp4")
        called = time.time()
        process_video(clip, out, stats_path=stats_path, **options)
        returned = time.time()
        chunks = json.loads(Path(stats_path).read_text())["chunks"]
        if i:
            first = min(c["decode_start"] for c in chunks) - called
            got.append({"first_decode_after_s": first, "wall_s": returned - called})
        time.sleep(pause)
    print(json.dumps({"runs": got, "output": out}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--rounds", type=int, default=None, help="alternated rounds (2)")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per process (4)")
    parser.add_argument("--frames", type=int, default=120, help="frames of the 720p clip")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between runs")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)  # one process's runs
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        case = CASES["tiny"]
    else:
        case = dataclasses.replace(CASES["720p-60s"], frames=args.frames, name="720p")
    rounds = args.rounds or (1 if args.quick else 2)
    runs = args.runs or (2 if args.quick else 4)
    clip = str(case.clip())
    if args.side:
        side_runs(args.side, clip, args.work, runs, args.pause, case)
        return 0
    bytecode = compile_raypipe()
    quiet = quiet_check(args)
    print(f"load {quiet.load_1m_measured:.2f} at start; {case.name}, {case.frames} frames, "
          f"{rounds} round(s) of {runs} timed runs, {args.pause:g} s apart",
          flush=True)  # fmt: skip
    results: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    outputs: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="raypipe-bench-notebook-") as work:
        for r in range(rounds):
            for side in SIDES if r % 2 == 0 else SIDES[::-1]:
                command = [sys.executable, os.path.abspath(__file__), "--side", side, "--work",
                           work, "--runs", str(runs), "--pause", str(args.pause),
                           "--frames", str(args.frames),
                           *(["--quick"] if args.quick else [])]  # fmt: skip
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise RuntimeError(f"{side} failed: {done.stderr[-2000:]}")
                got = json.loads(done.stdout.strip().splitlines()[-1])
                results[side] += got["runs"]
                outputs[side] = got["output"]
                firsts = ", ".join(f"{x['first_decode_after_s']:.2f}" for x in got["runs"])
                print(f"round {r + 1} {side}: first decode {firsts} s", flush=True)
        same = same_frames(outputs["library"], outputs["plain"], case.frames)
    keys = ("first_decode_after_s", "wall_s")
    summary, ratios, text = side_by_side(results, keys, "plain", "library", "the call")
    print()
    print(text)
    print(f"outputs {'hold the same frames' if same else 'DIFFER'}")
    doc = {"benchmark": "notebook", "quick": args.quick, "machine": machine_info(),
           "load": quiet, "bytecode": bytecode, "case": case.name, "frames": case.frames,
           "rounds": rounds, "runs_per_process": runs, "pause_s": args.pause,
           "results": results, "summary": summary, "ratios": ratios,
           "same_frames": same}  # fmt: skip
    print(f"wrote {write_result('notebook', doc, args.out)}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
