"""The local Ray's object store: sized from the video's chunks (raypipe's default) against
Ray's own default size, and Ray Data's share of it, side by side in one run.

``raypipe run`` sizes the object store of the local Ray it starts from the planned chunks
and the model's output size (:func:`raypipe.distributed.cluster.local_store_bytes`). The
other side is the same command with ``RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION=0.3``
(Ray's own default proportion, which raypipe then leaves to Ray), or several sides, one per
proportion of ``--proportions``; with ``--data-shares``, sides on the sized store where
Ray Data may fill the given share of it (``RAY_DATA_OBJECT_STORE_MEMORY_LIMIT_FRACTION``,
which raypipe then leaves to Ray Data) instead of raypipe's
(:data:`raypipe.distributed.dataset.SIZED_STORE_DATA_FRACTION`). Each run is the command
as a user runs it on a fresh local Ray (Ray's start included), the two sides alternated in
every round (the order turns round by round). For each run: the wall seconds,
the whole machine's user and system CPU seconds (``/proc/stat``) and its page faults
(``pgfault`` of ``/proc/vmstat``) while the command ran, and the store Ray got (from the
session's raylet log); from the run's ``--stats`` and the machine's CPU sampled every
0.25 s, between the first chunk's decode and the last chunk's encode: how many of the cores
were busy (``busy_cores``) and how many encodes ran at once on average (``encodes``).
Run it on an otherwise idle machine. Printed:
medians and spreads of each side, and Ray's default over the sized store for each figure.

Usage (repository root)::

    python benchmarks/store.py        # 60 s 720p, identity and sharpen, 3 rounds
    python benchmarks/store.py --cases 720p-20s --models builtin:identity --rounds 2
    python benchmarks/store.py --models builtin:identity --proportions 0.15,0.3
    python benchmarks/store.py --models builtin:identity --proportions '' --data-shares 0.5,1.0

Writes ``benchmarks/results/store.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_busy_s, machine_info, table, write_result  # noqa: E402
from perframe import CASES, RAYPIPE  # noqa: E402

from raypipe.distributed.dataset import DATA_SHARE_ENV  # noqa: E402
from raypipe.testing.bytecode import compile_raypipe  # noqa: E402

SIZED = "sized"
RAY_DEFAULT = "0.3"  # Ray's DEFAULT_OBJECT_STORE_MEMORY_PROPORTION


def machine_counters() -> dict[str, float]:
    """The machine's user and system CPU seconds and page faults so far."""
    hz = os.sysconf("SC_CLK_TCK")
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    with open("/proc/vmstat") as f:
        faults = next(int(line.split()[1]) for line in f if line.startswith("pgfault "))
    return {
        "user_s": (ticks[0] + ticks[1]) / hz,
        "system_s": (ticks[2] + ticks[5] + ticks[6]) / hz,  # system, irq, softirq
        "page_faults": faults,
    }


def store_bytes_of_last_session() -> int | None:
    """The object store of the newest local Ray session, from its raylet's first state
    dump (``InitialConfigResources: {... object_store_memory: 2.65421e+09 ...}``: six
    significant digits)."""
    log = Path("/tmp/ray/session_latest/logs/raylet.out")
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    found = re.search(r"InitialConfigResources: \{[^}]*object_store_memory: ([0-9.e+]+)", text)
    return round(float(found.group(1))) if found else None


DATA_SHARE = "data="  # a side's prefix: Ray Data's share of the sized store


class CpuSampler:
    """The machine's busy CPU seconds (:func:`_common.machine_busy_s`), sampled every
    ``period`` seconds in a thread while in a ``with``."""

    def __init__(self, period: float = 0.25) -> None:
        self.period, self.samples = period, []  # (time, busy seconds so far)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), machine_busy_s()))
            self._stop.wait(self.period)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def busy_cores(self, start: float, end: float) -> float | None:
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return None
        (t0, b0), (t1, b1) = inside[0], inside[-1]
        return (b1 - b0) / (t1 - t0)


def overlap(stats_path: Path, sampler: CpuSampler) -> dict[str, float | None]:
    """Between the first chunk's decode and the last chunk's encode: the cores busy and
    the encodes running at once, on average."""
    chunks = json.loads(stats_path.read_text())["chunks"]
    start = min(c["decode_start"] for c in chunks)
    end = max(c["encode_start"] + c["encode_s"] for c in chunks)
    encodes = sum(c["encode_s"] for c in chunks) / (end - start)
    busy = sampler.busy_cores(start, end)
    return {"busy_cores": None if busy is None else round(busy, 2), "encodes": round(encodes, 2)}


def run_once(clip: Path, out: Path, model: str, preset: str, crf: int, side: str) -> dict:
    env = dict(os.environ)
    env.pop("RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION", None)
    env.pop(DATA_SHARE_ENV, None)
    if side.startswith(DATA_SHARE):  # the sized store, Ray Data's share given
        env[DATA_SHARE_ENV] = side.removeprefix(DATA_SHARE)
    elif side != SIZED:  # a proportion of the memory, left to Ray
        env["RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION"] = side
    stats = out.with_suffix(".stats.json")
    command = [*RAYPIPE, "run", str(clip), str(out), "--model", model, "--codec", "libx264",
               "--preset", preset, "--crf", str(crf), "--overwrite", "-q",
               "--stats", str(stats)]  # fmt: skip
    before, started = machine_counters(), time.monotonic()
    with CpuSampler() as sampler:
        subprocess.run(command, env=env, check=True)
    wall = time.monotonic() - started
    after = machine_counters()
    row = {k: round(after[k] - before[k], 2) for k in after}
    store = store_bytes_of_last_session()
    return {"side": side, "wall_s": round(wall, 2), **row, "store_bytes": store,
            **overlap(stats, sampler)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default="720p-60s", help="perframe.py's case names, commas")
    parser.add_argument("--models", default="builtin:identity,builtin:sharpen")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--proportions",
        default=RAY_DEFAULT,
        help="the other sides: Ray's store proportions, commas (default: Ray's 0.3)",
    )
    parser.add_argument(
        "--data-shares",
        default="",
        help="more sides: Ray Data's shares of the sized store, commas (e.g. 0.5,1.0)",
    )
    parser.add_argument("--out", default=None, help="result JSON (default results/store.json)")
    args = parser.parse_args(argv)
    sides = (
        SIZED,
        *[p for p in args.proportions.split(",") if p],
        *[DATA_SHARE + d for d in args.data_shares.split(",") if d],
    )
    compile_raypipe()
    doc: dict[str, Any] = {"machine": machine_info(), "rounds": args.rounds, "cases": []}
    with tempfile.TemporaryDirectory(prefix="raypipe-store-") as work:
        for name in args.cases.split(","):
            case = CASES[name]
            clip = case.clip()
            for model in args.models.split(","):
                runs = []
                for r in range(args.rounds):
                    # the order turns round by round: each side runs first once in a while
                    shift = r % len(sides)
                    for side in sides[shift:] + sides[:shift]:
                        run = run_once(clip, Path(work) / "out.mp4", model, case.preset,
                                       case.crf, side)  # fmt: skip
                        run["round"] = r
                        print(name, model, run, flush=True)
                        runs.append(run)
                doc["cases"].append({"case": name, "model": model, "runs": runs,
                                     "summary": summarise(runs, sides)})  # fmt: skip
    rows = []
    for c in doc["cases"]:
        for figure, s in c["summary"].items():
            rows.append([c["case"], c["model"], figure, *s.values()])
    others = [side_name(p) for p in sides[1:]]
    ratios = [f"{side_name(p)} / sized" for p in sides[1:]]
    print(table(rows, ["case", "model", "figure", "sized", *others, *ratios]))
    print(f"wrote {write_result('store', doc, args.out)}")
    return 0


def summarise(runs: list[dict], sides: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Per figure: each side's median (min..max) and each other side's median over the
    sized side's."""
    out = {}
    figures = ("wall_s", "user_s", "system_s", "page_faults", "store_bytes", "busy_cores",
               "encodes")  # fmt: skip
    for figure in figures:
        medians, cells = {}, {}
        for side in sides:
            values = [r[figure] for r in runs if r["side"] == side and r.get(figure) is not None]
            if not values:
                cells[side] = "-"
                continue
            medians[side] = statistics.median(values)
            cells[side] = f"{medians[side]:g} ({min(values):g}..{max(values):g})"
        ratios = {
            f"{side}/sized": (
                f"{medians[side] / medians[SIZED]:.2f}"
                if side in medians and medians.get(SIZED)
                else "-"
            )
            for side in sides[1:]
        }
        out[figure] = {**cells, **ratios}
    return out


def side_name(side: str) -> str:
    return side.replace(DATA_SHARE, "ray data ") if side.startswith(DATA_SHARE) else f"ray {side}"


if __name__ == "__main__":
    sys.exit(main())
