"""Does an archive's driver stay small and quick to start, whatever the archive's size?

Two archives of the same short clip copied N times (``--small`` and ``--large`` copies,
default 200 and 2000) through :func:`raypipe.process_archive`, each in a fresh Python
process with a fresh local Ray (so each driver's memory is its own), one after the other
in one run. Each child process measures its own driver:

- ``first_output_s``: from the call to the first finished output in the output folder (a
  watcher polls it every 20 ms; outputs appear atomically under their final name);
- ``driver_rss_peak_mib``: the driver's peak RSS during the call (psutil, every 0.1 s);
- ``driver_wchar_bytes``: bytes the driver process wrote during the call
  (``/proc/self/io`` ``wchar``: files, pipes, sockets; segments and outputs should be
  written by Ray workers, not by it), against the output bytes.

The first-output latency is noisy on a small machine (Ray's start dominates it), so
``--latency-rounds`` (default 3) more runs of each size, alternated, stop at their first
output; the figure is the difference of the medians over all runs of each size.

Targets (issue 14): first output of the large archive at most 1.5 s after the small one's;
driver peak RSS at most 20 MiB more; driver writes under 10% of the output bytes.

Usage::

    python benchmarks/archive.py            # 200 and 2000 clips (several minutes)
    python benchmarks/archive.py --quick    # 20 and 200 clips

Writes ``benchmarks/results/archive.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
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
    write_result,
)

from raypipe.testing import ClipSpec  # noqa: E402

CLIP = ClipSpec(width=160, height=96, n_frames=24, gop=12)
SUFFIX = ".mp4"


def _wchar() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("wchar:"))


def _first_output(out_dir: Path, found: dict[str, float], stop: threading.Event) -> None:
    """Poll ``out_dir``'s own entries (the inputs are one flat folder, so are the outputs)
    for a finished output. Not ``os.walk``: it also walked every video's work directory,
    one per planned video, which in the driver's own process cost more CPU (and GIL) the
    larger the archive: a cost of the measurement that grew with what it measures."""
    while not stop.is_set():
        with os.scandir(out_dir) as entries:
            if any(e.name.endswith(SUFFIX) and not e.name.startswith(".") for e in entries):
                found["t"] = time.monotonic()
                return
        time.sleep(0.02)


def child(in_dir: str, out_dir: str, first_only: bool = False) -> dict[str, Any]:
    """One archive run in this process: the driver's own measurements. ``first_only``: print
    the seconds to the first finished output as soon as it appears and end the process
    there (Ray's reaper stops the local Ray it started), for the latency rounds."""
    import psutil

    import raypipe

    start_ray(num_cpus=8, num_gpus=0)
    me = psutil.Process()
    peak = [me.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            peak[0] = max(peak[0], me.memory_info().rss)

    found: dict[str, float] = {}

    def first_output() -> None:
        _first_output(Path(out_dir), found, stop)
        if first_only and "t" in found:
            result = {"first_output_s": found["t"] - t0}
            print("RESULT", json.dumps(result), flush=True)
            os._exit(0)

    threads = [
        threading.Thread(target=sample, daemon=True),
        threading.Thread(target=first_output, daemon=True),
    ]
    rss_before = me.memory_info().rss
    wchar_before = _wchar()
    t0 = time.monotonic()
    for t in threads:
        t.start()
    report = raypipe.process_archive(
        in_dir, out_dir, model="builtin:invert", chunk_frames=24, quiet=True
    )
    wall = time.monotonic() - t0
    wchar = _wchar() - wchar_before
    stop.set()
    for t in threads:
        t.join()
    peak[0] = max(peak[0], me.memory_info().rss)
    stop_ray()
    outputs = [p for p in Path(out_dir).rglob(f"*{SUFFIX}")]
    statuses = [r["status"] for r in report.rows]
    return {
        "videos": len(report.rows),
        "done": statuses.count("done"),
        "failed": statuses.count("failed"),
        "wall_s": wall,
        "first_output_s": found.get("t", float("nan")) - t0,
        "driver_rss_before_mib": rss_before / 2**20,
        "driver_rss_peak_mib": peak[0] / 2**20,
        "driver_wchar_bytes": wchar,
        "output_bytes": sum(p.stat().st_size for p in outputs),
    }


def _run_child(n: int, clip: Path, work: Path, first_only: bool = False) -> dict[str, Any]:
    in_dir, out_dir = work / f"in{n}", Path(tempfile.mkdtemp(prefix=f"out{n}-", dir=work))
    if not in_dir.exists():
        in_dir.mkdir()
        for i in range(n):  # copies, so every video is a distinct file
            shutil.copyfile(clip, in_dir / f"clip{i:05d}{SUFFIX}")
    code = (
        "import archive, json; print('RESULT', json.dumps(archive.child("
        f"{str(in_dir)!r}, {str(out_dir)!r}, first_only={first_only!r})))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=os.path.dirname(os.path.abspath(__file__)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = proc.communicate()
    line = next((x for x in stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        sys.stderr.write(stdout[-4000:] + stderr[-4000:])
        raise SystemExit(f"the {n}-clip run failed (exit {proc.returncode})")
    result = json.loads(line[len("RESULT ") :])
    result["input_bytes"] = n * clip.stat().st_size
    if first_only:
        _wait_for_ray_gone(proc.pid)
    shutil.rmtree(out_dir, ignore_errors=True)
    return result


def _wait_for_ray_gone(driver_pid: int, timeout_s: float = 60.0) -> None:
    """Wait until no process of the ended driver's local Ray runs any more (its reaper stops
    them when the driver ends), so the next run starts on a machine as quiet as before."""
    import psutil

    deadline = time.monotonic() + timeout_s
    marker = f"_{driver_pid}/"  # Ray's session directory names end in the driver's pid
    while time.monotonic() < deadline:
        if not any(
            marker in arg
            for p in psutil.process_iter(["cmdline"])
            for arg in p.info["cmdline"] or ()
        ):
            return
        time.sleep(0.5)
    raise SystemExit(f"the local Ray of driver {driver_pid} still runs {timeout_s:.0f} s after it")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--large", type=int, default=2000)
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="only the latency rounds (no full runs: no memory or write figures)",
    )
    parser.add_argument(
        "--latency-rounds",
        type=int,
        default=3,
        help="more runs of each size, alternated, that stop at the first output (its median)",
    )
    add_common_args(parser)
    args = parser.parse_args()
    if args.quick:
        args.small, args.large = 20, 200
    quiet = quiet_check(args)
    clip = cached_clip(CLIP, SUFFIX)
    work = Path(tempfile.mkdtemp(prefix="raypipe-bench-archive-"))
    runs: dict[str, Any] = {}
    try:
        with ForeignLoad() as foreign:
            for n in () if args.latency_only else (args.small, args.large):
                runs[str(n)] = _run_child(n, clip, work)
                print(f"{n} clips: {json.dumps(runs[str(n)])}", flush=True)
            firsts = {n: [runs[str(n)]["first_output_s"]] if runs else []
                      for n in (args.small, args.large)}  # fmt: skip
            for r in range(args.latency_rounds):  # the order alternates round by round
                for n in (args.large, args.small) if r % 2 == 0 else (args.small, args.large):
                    firsts[n].append(_run_child(n, clip, work, first_only=True)["first_output_s"])
                    print(f"{n} clips, latency round {r + 1}: {firsts[n][-1]:.2f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    first_median = {n: statistics.median(v) for n, v in firsts.items()}
    figures = {"first_output_delta_s": first_median[args.large] - first_median[args.small]}
    if runs:
        small, large = runs[str(args.small)], runs[str(args.large)]
        figures["driver_rss_growth_mib"] = (
            large["driver_rss_peak_mib"] - small["driver_rss_peak_mib"]
        )
        figures["driver_write_share"] = large["driver_wchar_bytes"] / max(large["output_bytes"], 1)
    targets = {
        "first_output_delta_s": 1.5,
        "driver_rss_growth_mib": 20.0,
        "driver_write_share": 0.10,
    }
    rows = [
        [
            n,
            r["done"],
            r["wall_s"],
            r["first_output_s"],
            r["driver_rss_peak_mib"],
            r["driver_wchar_bytes"] / 2**20,
            r["output_bytes"] / 2**20,
        ]
        for n, r in runs.items()
    ]
    print(
        table(
            rows,
            ["clips", "done", "wall s", "first output s", "driver peak MiB", "driver wrote MiB",
             "outputs MiB"],
        )
    )  # fmt: skip
    for n, v in firsts.items():
        print(
            f"first output, {n} clips: median {first_median[n]:.2f} s of {[round(x, 2) for x in v]}"
        )
    for name, value in figures.items():
        verdict = "met" if value <= targets[name] else "MISSED"
        print(f"{name}: {value:.3f} (target <= {targets[name]}) {verdict}")
    print(
        f"load average (1 min) at start: {quiet.load_1m_start:.2f}; "
        f"foreign CPU share {foreign.result['foreign_share']:.2f}"
    )
    path = write_result(
        "archive",
        {
            "machine": machine_info(),
            "quiet": quiet,
            "foreign_load": foreign.result,
            "clip": repr(CLIP),
            "runs": runs,
            "first_output_s": {str(n): v for n, v in firsts.items()},
            "figures": figures,
            "targets": targets,
        },
        args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
