"""A decode task going on with its process's open decoder (raypipe's default) against every
chunk opening and seeking its input afresh, side by side in one run.

``raypipe run`` decode tasks keep the decoder their last chunk left open and go on with it
when their next chunk follows on in the same video
(:func:`raypipe.media.decode.decode_chunk`'s ``carry``): no new open and seek, and none
of the frames between the keyframe and the chunk decoded again. That matters where chunks
split GOPs, as the byte cap (``--chunk-mib``) does at 4K. The other side is the same command
with ``RAYPIPE_DECODE_CARRY=0`` (:data:`raypipe.distributed.stages.CARRY_SWITCH`). Each run
is the command as a user runs it on a fresh local Ray (Ray's start included), the two
sides alternated, the order turning round by round. For each run: the wall seconds, the
whole machine's user and system CPU seconds while it ran, and from its ``--stats`` the
decode stage's CPU seconds (all chunks) and how many chunks went on with a carried decoder.
The two sides' outputs must decode to the same frames (ffmpeg's ``framemd5``), or the
benchmark fails. Printed: medians and spreads, and fresh over carried for each figure.

Usage (repository root)::

    python benchmarks/carry.py                      # 4K 5 s (invert), 3 rounds
    python benchmarks/carry.py --cases 4k-5s-one-gop    # the same with one keyframe
    python benchmarks/carry.py --cases 720p-60s --rounds 2

Writes ``benchmarks/results/carry.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ForeignLoad, machine_info, summarise_sides, table, write_result  # noqa: E402
from perframe import CASES, RAYPIPE  # noqa: E402
from store import machine_counters  # noqa: E402

from raypipe.distributed.stages import CARRY_SWITCH  # noqa: E402
from raypipe.testing.bytecode import compile_raypipe  # noqa: E402

SIDES = ("carried", "fresh")
MODEL = {"4k-5s": "builtin:invert", "4k-5s-one-gop": "builtin:invert"}  # others: identity
FIGURES = ("wall_s", "user_s", "system_s", "decode_cpu_s", "carried_chunks")


def frames_md5(path: Path) -> str:
    """ffmpeg's per-frame MD5s of ``path``'s video, without its header lines."""
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v", "-f", "framemd5", "-"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return "\n".join(line for line in out.splitlines() if not line.startswith("#"))


def run_once(clip: Path, out: Path, model: str, preset: str, crf: int, side: str) -> dict:
    env = dict(os.environ)
    env.pop(CARRY_SWITCH, None)
    if side == "fresh":
        env[CARRY_SWITCH] = "0"
    stats = out.with_suffix(".stats.json")
    command = [*RAYPIPE, "run", str(clip), str(out), "--model", model, "--codec", "libx264",
               "--preset", preset, "--crf", str(crf), "--overwrite", "-q",
               "--stats", str(stats)]  # fmt: skip
    before, started = machine_counters(), time.monotonic()
    subprocess.run(command, env=env, check=True)
    wall = time.monotonic() - started
    after = machine_counters()
    chunks = json.loads(stats.read_text())["chunks"]
    return {
        "side": side,
        "wall_s": round(wall, 2),
        "user_s": round(after["user_s"] - before["user_s"], 2),
        "system_s": round(after["system_s"] - before["system_s"], 2),
        "decode_cpu_s": round(sum(c["decode_cpu_s"] for c in chunks), 2),
        "carried_chunks": sum(bool(c["decode_carried"]) for c in chunks),
        "chunks": len(chunks),
        "frames_md5": frames_md5(out),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="4k-5s", help="perframe.py's case names, commas")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None, help="result JSON (default results/carry.json)")
    args = parser.parse_args(argv)
    compile_raypipe()
    doc: dict[str, Any] = {"machine": machine_info(), "rounds": args.rounds, "cases": []}
    with tempfile.TemporaryDirectory(prefix="raypipe-carry-") as work, ForeignLoad() as load:
        for name in args.cases.split(","):
            case = CASES[name]
            clip, model = case.clip(), MODEL.get(name, "builtin:identity")
            runs = []
            for r in range(args.rounds):
                for side in SIDES[r % 2 :] + SIDES[: r % 2]:
                    run = run_once(clip, Path(work) / f"{side}.mp4", model, case.preset,
                                   case.crf, side)  # fmt: skip
                    run["round"] = r
                    print(name, model, {k: v for k, v in run.items() if k != "frames_md5"},
                          flush=True)  # fmt: skip
                    runs.append(run)
            if len({run.pop("frames_md5") for run in runs}) != 1:
                raise SystemExit(f"{name}: the outputs' frames differ between runs")
            summary = summarise_sides(runs, FIGURES, SIDES)
            doc["cases"].append({"case": name, "model": model, "runs": runs,
                                 "summary": summary})  # fmt: skip
    doc["load"] = load.result
    rows = [
        [c["case"], c["model"], figure, *s.values()]
        for c in doc["cases"]
        for figure, s in c["summary"].items()
    ]
    print(table(rows, ["case", "model", "figure", *SIDES, "fresh / carried"]))
    print(f"foreign share {load.result['foreign_share']}")
    print(f"wrote {write_result('carry', doc, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
