"""Per-frame overhead (issue 15): raypipe against ffmpeg's own transcode and a naive loop.

Every approach runs the way a user runs it, as a command in its own process, start-up
included, side by side in one run, alternated round by round (the order rotates), at
least 3 rounds; median and spread (min..max) of the wall seconds:

- **ffmpeg**: ``ffmpeg -i clip -c:v libx264 ...`` (decode + encode and nothing else; with
  ``-vf negate`` for the 4K ``invert`` case), FFmpeg's own threads;
- **raypipe identity** / **raypipe sharpen** / **raypipe invert**: ``raypipe run`` from the
  command line on a fresh local Ray (Ray's start included), its CPU defaults;
- **... warm** (``--warm``): ``raypipe run --address`` on a Ray cluster the benchmark
  started beforehand (``ray start --head --block``, 4 logical CPUs like raypipe's local
  Ray, stopped by signalling that process): what a notebook or a service pays once Ray is
  up. The cluster runs only while warm runs do: started (and primed with one untimed run of
  the tiny clip) before the first of a round's warm runs, stopped before the next other
  run. Left up, it held memory a fresh local Ray then did not get (its object store 5.91 GB
  instead of 7.0 GB after a warm 4K run; a fresh 4K run 45.0 s beside it, 40.1 s alone);
- **naive sharpen**: ``python benchmarks/perframe.py --naive ...``, one process and one
  loop (PyAV decode → :class:`~raypipe.infer.models.FrameModel` → PyAV encode, see
  ``pipeline.run_naive``), Python's start and imports included; the issue's loop, with
  PyAV's defaults (BT.601 colours out, untagged: shown shifted by players at HD sizes);
- **naive sharpen source-colours**: the same loop writing the source's colours, converted
  with its matrix and range and tagged as it is, as raypipe and ffmpeg write them
  (:data:`NAIVE_TRUE`).

The same codec settings everywhere (libx264, ``--preset``/``--crf``, yuv420p); every side
may use every core. Ratios printed: raypipe identity wall / ffmpeg wall (issue 15: ≤ 2.0
on the 60 s clip, ≤ 3 on the 4K one) and naive sharpen wall / raypipe sharpen wall (≥ 1.5
on the 60 s clip, ≥ 1.3 on the 20 s one), for each naive loop. Outputs are checked against
each other on their first frames, read as a player shows them: each output's PSNR against
the model applied to the source's frames, raypipe's within ``PSNR_SLACK_DB`` of its
reference's and above ``MIN_PSNR_DB``, or the benchmark fails. The references do the same
work: identity, ffmpeg's transcode of the first frames through 8-bit RGB
(:func:`rgb_reference`; the plain transcode's PSNR is reported beside it); sharpen, the
naive loop's output (the source-colours one where it ran); invert, ffmpeg's ``negate``.
From raypipe's ``--stats``: each stage's CPU milliseconds per frame (decode, inference
with pre/post-processing, encode; the stage processes' CPU while the stage ran), where
pre/post-processing ran, and the time from the command's start to the first chunk's decode.
raypipe's bytecode is written before the runs (:func:`compile_raypipe`), as a wheel install
or any earlier run writes it on a machine that does not set ``PYTHONDONTWRITEBYTECODE``.
Last, for each ratio, the best raypipe's stages as measured allow on this machine's cores
(:func:`bounds`): the first decode's time plus the stages' CPU over the cores, and the
ratio that wall would give: a target that floor misses needs cheaper stages, a faster
start or more cores, not less overhead elsewhere.

Usage (repository root)::

    python benchmarks/perframe.py                  # 60 s 720p, 20 s 720p, 4K 5 s; 3 rounds
    python benchmarks/perframe.py --quick          # 4 s 720p and 1 s 4K, 1 round (smoke)
    python benchmarks/perframe.py --cases 720p-60s --rounds 5
    python benchmarks/perframe.py --warm           # + raypipe runs on a running cluster

Writes ``benchmarks/results/perframe.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    ForeignLoad,
    add_common_args,
    cached_clip,
    command_cpu_by_role,
    machine_info,
    quiet_check,
    stage_cpu_ms_per_frame,
    table,
    write_result,
)

from raypipe.distributed.cluster import PRELOADED_MODULES, RAYLET_CONFIG  # noqa: E402
from raypipe.testing import ClipSpec  # noqa: E402
from raypipe.testing.bytecode import compile_raypipe  # noqa: E402

MIN_PSNR_DB = 20.0
PSNR_SLACK_DB = 1.0
CHECK_FRAMES = 8
RAYPIPE = [sys.executable, "-m", "raypipe.cli"]


@dataclass(frozen=True, kw_only=True)
class Case:
    name: str
    width: int
    height: int
    frames: int
    fps: int
    preset: str
    crf: int
    approaches: tuple[str, ...]  # of APPROACHES
    target: dict[str, float]  # ratio name -> bound
    gop: int = 0  # keyframe interval in frames; 0: two seconds

    def clip(self) -> Path:
        spec = ClipSpec(
            width=self.width,
            height=self.height,
            n_frames=self.frames,
            fps=self.fps,  # type: ignore[arg-type]
            gop=self.gop or 2 * self.fps,
            crf=23,
            seed=7,
            colour=HD_COLOUR if self.width >= 1280 else None,
        )
        return cached_clip(spec)


HD_COLOUR = ("bt709", "bt709", "bt709", "tv")
"""HD clips are made and tagged BT.709, as HD video is. Untagged, their BT.601 colours would
be read as BT.709 by players and raypipe (the size rule) and as BT.601 by FFmpeg's
converter, so the outputs' PSNR would compare two readings of one file: raypipe's identity
measured 28.2 dB against ffmpeg's 34.3 dB on the untagged 20 s clip, all of it the
saturated colours that BT.709 puts outside RGB."""


NAIVE_TRUE = "naive sharpen source-colours"
"""The naive loop writing the source's colours (``pipeline.run_naive(source_colours=True)``:
converted with the source's matrix and range, tagged as the source), as raypipe's and
ffmpeg's outputs are. The issue's loop (``naive sharpen``, PyAV's defaults) writes BT.601
colours untagged, which players show shifted at HD sizes, and on the benchmarks' clips
those colours also cost x264 less (session 47, benchmarks/README.md): both are timed."""
TRUE_RATIO = "naive source-colours/raypipe sharpen"


CASES = {
    "720p-60s": Case(name="720p-60s", width=1280, height=720, frames=1800, fps=30,
                     preset="veryfast", crf=23,
                     approaches=("ffmpeg", "raypipe identity", "naive sharpen",
                                 NAIVE_TRUE, "raypipe sharpen"),
                     target={"identity/ffmpeg": 2.0, "naive/raypipe sharpen": 1.5,
                             TRUE_RATIO: 1.5}),
    "720p-20s": Case(name="720p-20s", width=1280, height=720, frames=600, fps=30,
                     preset="veryfast", crf=23,
                     approaches=("ffmpeg", "raypipe identity", "naive sharpen",
                                 NAIVE_TRUE, "raypipe sharpen"),
                     target={"identity/ffmpeg": 2.0, "naive/raypipe sharpen": 1.3,
                             TRUE_RATIO: 1.3}),
    "4k-5s": Case(name="4k-5s", width=3840, height=2160, frames=150, fps=30,
                  preset="ultrafast", crf=23,
                  approaches=("ffmpeg negate", "raypipe invert"),
                  target={"invert/ffmpeg negate": 3.0}),
    # one keyframe, as long-GOP sources (screen recordings, some cameras): the 4K chunks
    # split it eight ways
    "4k-5s-one-gop": Case(name="4k-5s-one-gop", width=3840, height=2160, frames=150, fps=30,
                          preset="ultrafast", crf=23, approaches=("ffmpeg negate",
                          "raypipe invert"), target={"invert/ffmpeg negate": 3.0}, gop=150),
    "tiny": Case(name="tiny", width=160, height=96, frames=24, fps=30, preset="veryfast", crf=23,
                 approaches=("ffmpeg", "raypipe identity", "naive sharpen", NAIVE_TRUE,
                             "raypipe sharpen"),
                 target={"identity/ffmpeg": 2.0, "naive/raypipe sharpen": 1.0, TRUE_RATIO: 1.0}),
}  # fmt: skip
QUICK = {
    "tiny": (24, "tiny"),
    "720p-60s": (120, "720p-4s"),
    "720p-20s": (60, "720p-2s"),
    "4k-5s": (30, "4k-1s"),
}


def _command(
    approach: str, case: Case, clip: Path, out: Path, stats: Path, address: str | None
) -> list[str]:
    codec = ["-c:v", "libx264", "-preset", case.preset, "-crf", str(case.crf)]
    if approach.startswith("ffmpeg"):
        negate = ["-vf", "negate"] if approach == "ffmpeg negate" else []
        return ["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", str(clip), *negate, *codec,
                "-pix_fmt", "yuv420p", "-an", str(out)]  # fmt: skip
    model = "builtin:" + approach.split()[1]
    if approach.startswith("naive"):
        colours = ["source-colours"] if approach == NAIVE_TRUE else []
        return [sys.executable, os.path.abspath(__file__), "--naive", str(clip), str(out),
                model, case.preset, str(case.crf), *colours]  # fmt: skip
    warm = ["--address", address] if approach.endswith(" warm") and address else []
    return [*RAYPIPE, "run", str(clip), str(out), "--model", model, "--codec", "libx264",
            "--preset", case.preset, "--crf", str(case.crf), "--stats", str(stats),
            "--overwrite", "-q", *warm]  # fmt: skip


class RunningRay:
    """A Ray head started with ``ray start --head --block`` for the warm runs; stopped by
    signalling that process (never ``ray stop``, which stops every Ray on the machine)."""

    def __init__(self, num_cpus: int = 4, *, preload: bool = False) -> None:
        """``preload``: the node's workers import :data:`PRELOADED_MODULES` as they start,
        as the cluster image's do (cluster/Dockerfile)."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        ray = os.path.join(os.path.dirname(sys.executable), "ray")
        # What ray.init gives a local Ray: no token authentication (``ray start`` asks for it).
        env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
        config: dict[str, Any] = dict(RAYLET_CONFIG)
        if preload:
            config["preload_python_modules"] = list(PRELOADED_MODULES)
        self.proc = subprocess.Popen(
            [ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
             f"--num-cpus={num_cpus}",
             "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
             "--system-config", json.dumps(config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            probe = subprocess.run(
                [ray, "status", f"--address={self.address}"],
                capture_output=True,
                check=False,
                env=env,
            )
            if probe.returncode == 0:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(2)
        self.stop()
        raise RuntimeError(f"ray start --head on {self.address} did not come up")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


def _stats(stats: Path, launched: float, frames: int) -> dict[str, Any]:
    """Per-stage CPU ms per frame and the start-up time from raypipe's ``--stats``."""
    doc = json.loads(stats.read_text())
    chunks = doc["chunks"]
    return {
        "first_decode_after_s": min(c["decode_start"] for c in chunks) - launched,
        "first_infer_after_s": min(c["infer_start"] for c in chunks) - launched,
        "cpu_ms_per_frame": stage_cpu_ms_per_frame(chunks, frames),
        "pixels": sorted({str(c.get("pixels", "")) for c in chunks}),
        "chunks": len(chunks),
        "summary": {k: v for k, v in doc.items() if k != "chunks" and not isinstance(v, list)},
    }


def run_once(
    approach: str,
    case: Case,
    clip: Path,
    work: Path,
    address: str | None = None,
    *,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """One run of ``approach``'s command (in ``env`` and ``cwd``, None: this process's):
    its wall, CPU by role and, for raypipe, its ``--stats`` figures (:func:`_stats`)."""
    out = work / f"{approach.replace(' ', '-')}.mp4"
    stats = work / f"{approach.replace(' ', '-')}.json"
    launched = time.time()
    started = time.perf_counter()
    command = _command(approach, case, clip, out, stats, address)
    proc, cpu = command_cpu_by_role(command, env=env, cwd=cwd)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{approach} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = {"wall_s": wall, "output": str(out), "cpu_by_role": cpu}
    if approach.startswith("raypipe"):
        result.update(_stats(stats, launched, case.frames))
    return result


def _first_frames(path: str, n: int) -> Any:
    """The first ``n`` frames as a player shows them (float64 RGB): converted with the
    stream's own matrix and range, an untagged HD stream as BT.709 (mpv, VLC and browsers
    do; FFmpeg's converter would take BT.601 and so read an untagged BT.601 output the way
    it was written, whatever a player shows), chroma replicated as raypipe reads."""
    from raypipe.testing import decode_upright

    return decode_upright(path, limit=n)[0].astype("float64")


RGB_REFERENCE_FRAMES = 60
"""Frames of the source ffmpeg transcodes through 8-bit RGB for the identity check (the
check reads the first :data:`CHECK_FRAMES`; x264 looks 10 frames ahead at veryfast)."""


def rgb_reference(case: Case, clip: Path, out: Path) -> Path:
    """The identity check's reference: ffmpeg's transcode of the clip's first frames through
    8-bit RGB, converted as raypipe converts (:mod:`raypipe.media.picture`: the source's
    matrix, chroma samples replicated on the way in and taken at their place on the way out,
    swscale's ``neighbor``, every value rounded to the nearest on the way in: its
    ``accurate_rnd+full_chroma_int``), with the same codec settings. raypipe's identity does exactly
    that work; ffmpeg's plain transcode never leaves YUV. On the 20 s clip (60 frames,
    session 13), PSNR against the source's frames: ffmpeg's plain transcode 32.80 dB (663
    kB), ffmpeg through RGB 31.61 dB (794 kB), raypipe's encoder on raypipe's RGB frames
    31.61 dB (790 kB); x264 given the source's own YUV frames through PyAV 32.70 dB (671 kB),
    and the RGB round trip alone, not encoded, 46.1 dB: the round trip changed 59% of the
    first frame's YUV samples (rounding to 8-bit RGB and back, values outside RGB clipped),
    and x264 then spends more bits on them for less."""
    from raypipe.media.probe import probe

    picture = probe(str(clip)).picture  # the matrix and range raypipe converts this clip with
    matrix, range_ = picture.matrix, picture.range
    to_rgb = (  # rounded to the nearest, as raypipe/media/rgb.py converts (session 50)
        f"scale=in_color_matrix={matrix}:in_range={range_}:out_range=pc"
        ":flags=neighbor+accurate_rnd+full_chroma_int"
    )
    to_yuv = f"scale=in_range=pc:out_color_matrix={matrix}:out_range={range_}:flags=neighbor"
    colour = picture.colour  # the source's tags, which raypipe's output keeps
    tags = [arg for flag, value in (("-colorspace", colour.matrix),
                                    ("-color_primaries", colour.primaries),
                                    ("-color_trc", colour.transfer),
                                    ("-color_range", colour.range))
            if value != "unknown" for arg in (flag, value)]  # fmt: skip
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", str(clip), "-frames:v",
         str(RGB_REFERENCE_FRAMES), "-vf", f"{to_rgb},format=rgb24,{to_yuv},format=yuv420p",
         "-c:v", "libx264", "-preset", case.preset, "-crf", str(case.crf), *tags, "-an",
         str(out)],
        check=True, timeout=600,
    )  # fmt: skip
    return out


def check_outputs(
    case: Case, clip: Path, last: dict[str, dict[str, Any]], work: Path
) -> dict[str, dict[str, float]]:
    """Each output's PSNR (dB, first frames) against the model applied to the source's
    frames, raypipe's beside its reference's, every output read as a player shows it
    (:func:`_first_frames`). References: identity, ffmpeg's transcode through RGB
    (:func:`rgb_reference`; its plain transcode's PSNR is given beside it as
    ``ffmpeg_direct_db``); sharpen, the naive loop (which decodes to RGB and encodes too),
    :data:`NAIVE_TRUE` where it ran (the issue's loop beside it as
    ``naive_pyav_defaults_db``); invert, ffmpeg's ``negate``. ``ok``: raypipe within
    ``PSNR_SLACK_DB`` of the reference and above ``MIN_PSNR_DB``."""
    from pipeline import psnr_db

    from raypipe.infer.models import load_frame_model

    source = _first_frames(str(clip), CHECK_FRAMES).astype("uint8")  # exact: whole levels
    outputs = {run: str(v["output"]) for run, v in last.items()}
    if "raypipe identity" in last or "raypipe identity warm" in last:
        outputs["ffmpeg through RGB"] = str(rgb_reference(case, clip, work / "rgb-reference.mp4"))
    naive = NAIVE_TRUE if NAIVE_TRUE in outputs else "naive sharpen"
    pairs = {"raypipe identity": "ffmpeg through RGB", "raypipe sharpen": naive,
             "raypipe invert": "ffmpeg negate"}  # fmt: skip
    checks = {}
    for ours, ref in pairs.items():
        runs = [run for run in (ours, f"{ours} warm") if run in outputs]
        if not runs or ref not in outputs:
            continue
        # the model's frames and the references' PSNR once for the fresh and the warm run
        truth = load_frame_model("builtin:" + ours.split()[1], device="cpu").run(source, 8)
        want = psnr_db(_first_frames(outputs[ref], CHECK_FRAMES), truth)
        extra = {}
        if ours == "raypipe identity" and "ffmpeg" in outputs:
            extra["ffmpeg_direct_db"] = psnr_db(
                _first_frames(outputs["ffmpeg"], CHECK_FRAMES), truth
            )
        if ours == "raypipe sharpen" and ref != "naive sharpen" and "naive sharpen" in outputs:
            extra["naive_pyav_defaults_db"] = psnr_db(
                _first_frames(outputs["naive sharpen"], CHECK_FRAMES), truth
            )
        for run in runs:
            got = psnr_db(_first_frames(outputs[run], CHECK_FRAMES), truth)
            ok = got >= want - PSNR_SLACK_DB and got >= MIN_PSNR_DB
            checks[f"{run} vs {ref}"] = {"raypipe_db": got, "reference_db": want, "ok": ok, **extra}
    return checks


def _primed_cluster(work: Path, *, preload: bool = False) -> RunningRay:
    """A running Ray that has served one run (untimed: the tiny clip through ``identity``), as
    a notebook's or a service's has: the first run on a new cluster took 1.7-2.0 s longer
    than the next on the tiny clip."""
    cluster = RunningRay(preload=preload)
    try:
        tiny = CASES["tiny"]
        out, stats = work / "prime.mp4", work / "prime.json"
        command = _command("raypipe identity warm", tiny, tiny.clip(), out, stats, cluster.address)
        subprocess.run(command, check=True, capture_output=True, timeout=300)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def run_case(case: Case, rounds: int, work: Path, warm: bool) -> dict[str, Any]:
    clip = case.clip()
    approaches = case.approaches
    if warm:
        approaches += tuple(f"{a} warm" for a in approaches if a.startswith("raypipe"))
    runs: dict[str, list[dict[str, Any]]] = {a: [] for a in approaches}
    loads = []
    cluster: RunningRay | None = None  # up only while warm runs run (module docstring)
    try:
        with ForeignLoad() as foreign:
            for r in range(rounds):
                k = r % len(approaches)
                order = approaches[k:] + approaches[:k]
                for approach in order:
                    if approach.endswith(" warm"):
                        cluster = cluster or _primed_cluster(work)
                    elif cluster is not None:
                        cluster.stop()
                        cluster = None
                    address = cluster.address if cluster is not None else None
                    loads.append(round(os.getloadavg()[0], 2))
                    runs[approach].append(run_once(approach, case, clip, work, address))
                    print(
                        f"  {case.name} round {r + 1}: {approach} "
                        f"{runs[approach][-1]['wall_s']:.1f} s (load {loads[-1]})",
                        flush=True,
                    )
    finally:
        if cluster is not None:
            cluster.stop()
    walls = {a: [x["wall_s"] for x in v] for a, v in runs.items()}
    median = {a: statistics.median(w) for a, w in walls.items()}
    ratios = {}
    if "raypipe identity" in median:
        ratios["identity/ffmpeg"] = median["raypipe identity"] / median["ffmpeg"]
    if "raypipe sharpen" in median:
        ratios["naive/raypipe sharpen"] = median["naive sharpen"] / median["raypipe sharpen"]
        if NAIVE_TRUE in median:
            ratios[TRUE_RATIO] = median[NAIVE_TRUE] / median["raypipe sharpen"]
    if "raypipe invert" in median:
        ratios["invert/ffmpeg negate"] = median["raypipe invert"] / median["ffmpeg negate"]
    if "raypipe invert warm" in median:
        ratios["invert warm/ffmpeg negate"] = (
            median["raypipe invert warm"] / median["ffmpeg negate"]
        )
    if "raypipe identity warm" in median:
        ratios["identity warm/ffmpeg"] = median["raypipe identity warm"] / median["ffmpeg"]
    if "raypipe sharpen warm" in median:
        ratios["naive/raypipe sharpen warm"] = (
            median["naive sharpen"] / median["raypipe sharpen warm"]
        )
        if NAIVE_TRUE in median:
            ratios[f"{TRUE_RATIO} warm"] = median[NAIVE_TRUE] / median["raypipe sharpen warm"]
    psnr = check_outputs(case, clip, {a: v[-1] for a, v in runs.items()}, work)
    for v in runs.values():
        for x in v:
            x.pop("output")
    return {
        "case": case.name,
        "clip": {"width": case.width, "height": case.height, "frames": case.frames,
                 "fps": case.fps, "codec": f"libx264 {case.preset} crf {case.crf}"},
        "rounds": rounds,
        "wall_s": {a: {"median": median[a], "min": min(w), "max": max(w), "runs": w}
                   for a, w in walls.items()},
        "ratios": ratios,
        "targets": case.target,
        "warm": warm,
        "psnr_db": psnr,
        "runs": runs,
        "load_1m_before_runs": loads,
        "foreign_load": foreign.result,
    }  # fmt: skip


def bounds(result: dict[str, Any], cores: int) -> dict[str, dict[str, float]]:
    """For each ratio of ``result`` (a :func:`run_case` result), the best raypipe could do
    on this machine with its stages as they are: the run's stage CPU (decode, inference,
    encode, from ``--stats``) spread over all ``cores`` from the first decode on, with no
    other CPU spent (no Ray, driver or worker start-up, no hand-offs) and no core idle.
    ``floor_s``: the seconds to the first decode plus stage CPU / cores, medians over the
    rounds; ``ratio_at_floor``: the ratio that wall would give against the other side's
    median; ``ratio_without_start``: the same with the start taken as 0 too. A ratio
    whose floor misses its target cannot be met by scheduling or overhead cuts alone: the
    stages' own work (decoding, converting, the model, encoding) must get cheaper, or the
    machine larger."""
    frames = result["clip"]["frames"]
    medians = {a: w["median"] for a, w in result["wall_s"].items()}
    out = {}
    for ratio in result["ratios"]:
        raypipe, other = _ratio_sides(ratio)
        runs = result["runs"].get(raypipe)
        if not runs or other not in medians:
            continue
        stage_cpu = statistics.median(
            sum(x["cpu_ms_per_frame"].values()) * frames / 1000.0 for x in runs
        )
        start = statistics.median(x["first_decode_after_s"] for x in runs)
        floor = start + stage_cpu / cores
        bare = stage_cpu / cores
        if ratio.startswith("naive"):  # the other side's wall over raypipe's: higher is better
            at_floor, without_start = medians[other] / floor, medians[other] / bare
        else:
            at_floor, without_start = floor / medians[other], bare / medians[other]
        out[ratio] = {
            "stage_cpu_s": stage_cpu,
            "start_s": start,
            "floor_s": floor,
            "ratio_at_floor": at_floor,
            "ratio_without_start": without_start,
        }
    return out


def _ratio_sides(ratio: str) -> tuple[str, str]:
    """(raypipe's approach, the other side's) of a ratio name of :func:`run_case`."""
    warm = " warm" if " warm" in ratio else ""
    if ratio.startswith("naive"):
        naive = NAIVE_TRUE if "source-colours" in ratio else "naive sharpen"
        return f"raypipe sharpen{warm}", naive
    model, other = ratio.replace(" warm", "").split("/")
    return f"raypipe {model}{warm}", other


def _role_rows(results: list[dict[str, Any]]) -> list[list[Any]]:
    """Where each run's CPU went, by process role (median over the rounds), so that the
    fixed costs (Ray's processes, each worker's imports) stand beside the per-frame ones."""
    rows = []
    for r in results:
        for a, runs in r["runs"].items():
            roles = {role for x in runs for role in x["cpu_by_role"]} - {"total"}
            by_cpu = sorted(
                roles,
                key=lambda k: (
                    -statistics.median(x["cpu_by_role"].get(k, {}).get("cpu_s", 0) for x in runs)
                ),
            )
            for role in by_cpu:
                cpu = [x["cpu_by_role"].get(role, {}).get("cpu_s", 0.0) for x in runs]
                procs = runs[-1]["cpu_by_role"].get(role, {}).get("processes", 0)
                rows.append([r["case"], a, role, f"{statistics.median(cpu):.1f}", procs])
            total = [x["cpu_by_role"]["total"]["cpu_s"] for x in runs]
            procs = runs[-1]["cpu_by_role"]["total"]["processes"]
            rows.append([r["case"], a, "total", f"{statistics.median(total):.1f}", procs])
    return rows


def naive_main(clip: str, out: str, model: str, preset: str, crf: str, *colours: str) -> int:
    """The naive loop as a user's script runs it (``pipeline.run_naive``; ``source-colours``
    after the CRF: :data:`NAIVE_TRUE`'s)."""
    import av
    from pipeline import Setup, run_naive

    from raypipe.infer.models import resolve_model

    with av.open(clip) as c:
        stream = c.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
    setup = Setup(frames=0, width=width, height=height, gop=0, model=model, codec="libx264",
                  crf=int(crf), preset=preset, batch_size=8, chunk_frames=0, workers=0,
                  ray_num_cpus=0, pool_processes=0)  # fmt: skip
    run_naive(Path(clip), Path(out), setup, resolve_model(model)[0],
              source_colours=colours == ("source-colours",))  # fmt: skip
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--naive"]:
        return naive_main(*argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument(
        "--cases", default="720p-60s,720p-20s,4k-5s", help=f"of {', '.join(CASES)} (tiny: smoke)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="alternated rounds (3)")
    parser.add_argument("--warm", action="store_true", help="also raypipe on a running Ray")
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    bytecode = compile_raypipe()
    quiet = quiet_check(args)
    print(f"load {quiet.load_1m_measured:.2f} at start; {rounds} round(s)", flush=True)
    results = []
    # A timeout's SIGTERM unwinds through run_case's finally: a Ray head it started stops.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    work = Path(tempfile.mkdtemp(prefix="raypipe-bench-perframe-"))
    try:
        for name in args.cases.split(","):
            case = CASES[name]
            if args.quick:
                frames, quick_name = QUICK[name]
                case = Case(**{**case.__dict__, "frames": frames, "name": quick_name})
            results.append(run_case(case, rounds, work, args.warm))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows, stage_rows = [], []
    for r in results:
        for a, w in r["wall_s"].items():
            rows.append([r["case"], a, f"{w['median']:.1f}", f"{w['min']:.1f}..{w['max']:.1f}"])
        for ratio, value in r["ratios"].items():
            bound = r["targets"].get(ratio.replace(" warm", ""), 0.0)
            met = value <= bound if "/ffmpeg" in ratio else value >= bound
            verdict = f"target {bound} {'met' if met else 'missed'}"
            rows.append([r["case"], ratio, f"{value:.2f}", verdict])
        for a, v in r["runs"].items():
            if a.startswith("raypipe"):
                cpu = v[-1]["cpu_ms_per_frame"]
                stage_rows.append([
                    r["case"], a, f"{cpu['decode']:.1f}", f"{cpu['infer']:.1f}",
                    f"{cpu['encode']:.1f}",
                    f"{statistics.median(x['first_decode_after_s'] for x in v):.1f}",
                    ",".join(v[-1]["pixels"]),
                ])  # fmt: skip
    print()
    print(table(rows, ["case", "run / ratio", "wall s (median) / ratio", "spread / target"]))
    print()
    print(
        table(
            stage_rows,
            ["case", "run", "decode CPU ms/frame", "infer CPU ms/frame", "encode CPU ms/frame",
             "start to first decode s", "pixels"],
        )
    )  # fmt: skip
    print()
    print(table(_role_rows(results), ["case", "run", "role", "CPU s (median)", "processes"]))
    cores = os.cpu_count() or 1
    bound_rows = []
    for r in results:
        r["bounds"] = bounds(r, cores)
        for ratio, b in r["bounds"].items():
            target = r["targets"].get(ratio.replace(" warm", ""), 0.0)
            lower_is_better = not ratio.startswith("naive")
            reachable = (
                b["ratio_at_floor"] <= target if lower_is_better else b["ratio_at_floor"] >= target
            )
            bound_rows.append([
                r["case"], ratio, f"{b['stage_cpu_s']:.1f}", f"{b['start_s']:.1f}",
                f"{b['floor_s']:.1f}", f"{b['ratio_at_floor']:.2f}",
                f"{b['ratio_without_start']:.2f}", f"{target} {'yes' if reachable else 'no'}",
            ])  # fmt: skip
    print()
    print(f"Best case on these {cores} cores with the stages as they are (bounds()):")
    print(
        table(
            bound_rows,
            ["case", "ratio", "stage CPU s", "first decode s", "floor wall s", "ratio at floor",
             "without the start", "target: floor within it?"],
        )
    )  # fmt: skip
    for r in results:
        print(f"{r['case']}: PSNR {r['psnr_db']}; foreign share {r['foreign_load']}")
    psnr_ok = all(v["ok"] for r in results for v in r["psnr_db"].values())
    doc = {
        "benchmark": "perframe",
        "quick": args.quick,
        "machine": machine_info(),
        "load": quiet,
        "bytecode": bytecode,
        "min_psnr_db": MIN_PSNR_DB,
        "psnr_slack_db": PSNR_SLACK_DB,
        "psnr_ok": psnr_ok,
        "cases": results,
    }
    print(f"wrote {write_result('perframe', doc, args.out)}")
    return 0 if psnr_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
