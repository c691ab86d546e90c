"""Helpers shared by the benchmarks: machine facts, a quiet-machine check, a local Ray,
cached test clips, memory samplers and atomic JSON results.

Benchmarks are scripts, not tests: each prints a table and writes
``benchmarks/results/NAME.json`` (see ``benchmarks/README.md``).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CACHE_DIR = Path(tempfile.gettempdir()) / "raypipe-bench-cache"


# ----------------------------------------------------------------------------- machine


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform's guess)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cores() -> int:
    """CPUs this process may run on (``nproc``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def ram_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().total)


def load_average_1m() -> float:
    return os.getloadavg()[0]


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("ray", "onnxruntime", "av", "numpy", "cv2"):
        try:
            module = __import__(name)
            out[name] = str(getattr(module, "__version__", "?"))
        except ImportError:
            out[name] = "missing"
    try:
        first = subprocess.run(
            ["ffmpeg", "-version"], capture_output=True, text=True, check=False
        ).stdout.splitlines()
        out["ffmpeg_cli"] = first[0].split()[2] if first else "?"
    except OSError:
        out["ffmpeg_cli"] = "missing"
    return out


def machine_info() -> dict[str, Any]:
    """What the results were measured on."""
    return {
        "nproc": cores(),
        "cpu_model": cpu_model(),
        "ram_gib": round(ram_bytes() / 2**30, 1),
        "platform": platform.platform(),
        "versions": versions(),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


@dataclass
class QuietCheck:
    """Whether the machine was quiet before a measurement (1-minute load average)."""

    threshold: float
    load_1m_start: float  # when the benchmark started, before any wait
    waited_s: float
    quiet: bool  # the last sample, taken as the measurements began, was under threshold
    load_1m_samples: list[float] = field(default_factory=list)

    @property
    def load_1m_measured(self) -> float:
        """The 1-minute load average when the measurements began (after any wait)."""
        return self.load_1m_samples[-1] if self.load_1m_samples else self.load_1m_start


def wait_for_quiet(
    threshold: float = 0.5, *, poll_s: float = 60.0, max_wait_s: float = 1200.0
) -> QuietCheck:
    """Poll the 1-minute load average every ``poll_s`` until it is below ``threshold``,
    for at most ``max_wait_s``. Never fails: the caller records whether it was quiet."""
    started = time.monotonic()
    samples = [load_average_1m()]
    while samples[-1] >= threshold and time.monotonic() - started < max_wait_s:
        print(
            f"waiting for a quiet machine: load {samples[-1]:.2f} >= {threshold} "
            f"({time.monotonic() - started:.0f}s of {max_wait_s:.0f}s)",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(poll_s)
        samples.append(load_average_1m())
    return QuietCheck(
        threshold=threshold,
        load_1m_start=samples[0],
        waited_s=round(time.monotonic() - started, 1),
        quiet=samples[-1] < threshold,
        load_1m_samples=samples,
    )


@dataclass
class TreeSample:
    """What a process tree's sampler saw of one process: its highest CPU seconds and every
    command line (title) it showed (Ray renames a worker after what it runs)."""

    cpu_s: float = 0.0
    titles: set[str] = field(default_factory=set)


def machine_busy_s() -> float:
    """The whole machine's busy CPU seconds so far: user, nice, system, irq and softirq."""
    import psutil

    t = psutil.cpu_times()
    return float(t.user + t.system + t.nice + getattr(t, "irq", 0) + getattr(t, "softirq", 0))


def sample_tree(root: Any, seen: dict[tuple[int, float], TreeSample]) -> None:
    """Update ``seen`` with ``root`` (a ``psutil.Process``) and all its descendants, keyed
    by pid and start time (a reused pid is another process). A process that ends keeps its
    last sample."""
    import psutil

    try:
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in family:
        try:
            with p.oneshot():
                key = (p.pid, p.create_time())
                times = p.cpu_times()
                title = " ".join(p.cmdline())[:200]
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        sample = seen.setdefault(key, TreeSample())
        sample.cpu_s = max(sample.cpu_s, times.user + times.system)
        sample.titles.add(title)


class ForeignLoad:
    """How much CPU *other* processes used while a benchmark ran.

    Every ``interval_s`` it reads the machine's busy CPU seconds (``psutil.cpu_times``)
    and the CPU seconds of this process and all its descendants (the local Ray it started,
    ffmpeg, pool workers; a process that exits counts with its last sampled value). At the
    end ``foreign_cpu_s`` = machine busy − ours, and ``foreign_share`` = that over the
    machine's capacity (wall × cores): 0 on a quiet machine, 0.5 when others took half.
    An upper bound: a child's CPU after its last sample and before it exits counts as
    foreign.
    The 1-minute load average cannot tell this: the benchmark's own processes raise it.
    """

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self._seen: dict[tuple[int, float], TreeSample] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="foreign-load", daemon=True)
        self.result: dict[str, float] = {}

    def _ours_s(self) -> float:
        import psutil

        sample_tree(psutil.Process(), self._seen)
        return sum(s.cpu_s for s in self._seen.values())

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._ours_s()

    def __enter__(self) -> ForeignLoad:
        self._start_wall = time.monotonic()
        self._start_busy = machine_busy_s()
        self._start_ours = self._ours_s()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        wall = time.monotonic() - self._start_wall
        busy = machine_busy_s() - self._start_busy
        ours = self._ours_s() - self._start_ours
        foreign = max(0.0, busy - ours)
        self.result = {
            "wall_s": round(wall, 1),
            "machine_busy_cpu_s": round(busy, 1),
            "benchmark_cpu_s": round(ours, 1),
            "foreign_cpu_s": round(foreign, 1),
            "foreign_share": round(foreign / (wall * cores()), 3) if wall > 0 else 0.0,
            "load_1m_end": round(load_average_1m(), 2),
        }


ROLES = (
    ("raypipe.cli", "driver"),
    ("gcs_server", "ray: gcs"),
    ("raylet/raylet", "ray: raylet"),
    ("dashboard", "ray: dashboard and agent"),
    ("RuntimeEnvAgent", "ray: runtime env agent"),
    ("runtime_env/agent", "ray: runtime env agent"),
    ("log_monitor", "ray: log monitor"),
    ("monitor.py", "ray: autoscaler monitor"),
    ("_StatsActor", "ray data: helper actors"),
    ("_AutoscalingCoordinatorActor", "ray data: helper actors"),
    ("ActorLocationTracker", "ray data: helper actors"),
    ("InferActor", "raypipe: inference actor"),
    ("ChunkActor", "raypipe: fused actors (decode, model, encode)"),
    ("encode_stage", "raypipe: decode/encode tasks"),
    ("decode_batch", "raypipe: decode/encode tasks"),
    ("plan_stage", "raypipe: decode/encode tasks"),
    ("assemble", "raypipe: decode/encode tasks"),
)
"""Process titles (Ray renames a worker ``ray::<what it runs>``) to roles, first match wins."""


def role_of(titles: Sequence[str]) -> str:
    """The role of a process that showed ``titles`` over its life (see :data:`ROLES`); an
    idle Ray worker that never ran anything: ``ray: idle workers``."""
    for needle, role in ROLES:
        if any(needle in t for t in titles):
            return role
    if any("ray::" in t or "default_worker" in t for t in titles):
        return "ray: idle workers"
    return "other"


def command_cpu_by_role(
    cmd: Sequence[str],
    interval_s: float = 0.2,
    *,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> tuple[subprocess.CompletedProcess[str], dict[str, dict[str, float]]]:
    """Run ``cmd`` (in ``env`` and ``cwd``, None: this process's) and sample, every
    ``interval_s``, the CPU seconds and titles of it and all its descendants (Ray's
    processes and workers when it starts a local Ray). Returns the finished process
    (stdout/stderr captured as text) and ``{role: {"cpu_s", "processes"}}`` plus
    ``"total"``. A process's CPU after its last sample is not counted (under
    ``interval_s`` of it), so the figures are a slight underestimate."""
    import psutil

    seen: dict[tuple[int, float], TreeSample] = {}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd
    )
    out: dict[str, str] = {}
    readers = [
        threading.Thread(target=lambda n=n, s=s: out.__setitem__(n, s.read()), daemon=True)
        for n, s in (("stdout", proc.stdout), ("stderr", proc.stderr))
    ]
    for t in readers:
        t.start()
    root = psutil.Process(proc.pid)
    while True:
        done = proc.poll() is not None
        sample_tree(root, seen)
        if done:
            break
        time.sleep(interval_s)
    for t in readers:
        t.join()
    roles: dict[str, dict[str, float]] = {}
    for sample in seen.values():
        r = roles.setdefault(role_of(sorted(sample.titles)), {"cpu_s": 0.0, "processes": 0})
        r["cpu_s"] += sample.cpu_s
        r["processes"] += 1
    roles = {k: {"cpu_s": round(v["cpu_s"], 2), "processes": v["processes"]}
             for k, v in sorted(roles.items(), key=lambda kv: -kv[1]["cpu_s"])}  # fmt: skip
    roles["total"] = {
        "cpu_s": round(sum(v["cpu_s"] for v in roles.values()), 2),
        "processes": sum(int(v["processes"]) for v in roles.values()),
    }
    finished = subprocess.CompletedProcess(
        list(cmd), int(proc.returncode), out.get("stdout", ""), out.get("stderr", "")
    )
    return finished, roles


def summarise_sides(
    runs: Sequence[dict[str, Any]], figures: Sequence[str], sides: Sequence[str]
) -> dict[str, dict[str, str]]:
    """Per figure of two-sided ``runs`` (each with its ``"side"``): each side's median
    (min..max) and the second side's median over the first's, keyed ``"second/first"``."""
    first, second = sides
    out = {}
    for figure in figures:
        medians, cells = {}, {}
        for side in sides:
            values = [r[figure] for r in runs if r["side"] == side]
            medians[side] = statistics.median(values)
            cells[side] = f"{medians[side]:g} ({min(values):g}..{max(values):g})"
        ratio = medians[second] / medians[first] if medians[first] else None
        out[figure] = {**cells, f"{second}/{first}": "-" if ratio is None else f"{ratio:.2f}"}
    return out


def quiet_check(args: Any) -> QuietCheck:
    """``--wait-quiet``: wait as :func:`wait_for_quiet`; otherwise just record the load."""
    if getattr(args, "wait_quiet", False):
        return wait_for_quiet()
    load = load_average_1m()
    return QuietCheck(0.5, load, 0.0, load < 0.5, [load])


def add_common_args(parser: Any) -> None:
    parser.add_argument("--quick", action="store_true", help="small smoke run (< 60 s)")
    parser.add_argument(
        "--wait-quiet",
        action="store_true",
        help="first wait (up to 20 min) for the 1-minute load average to drop below 0.5",
    )
    parser.add_argument(
        "--out", default=None, help="result JSON path (default benchmarks/results/NAME.json)"
    )


# ----------------------------------------------------------------------------- results


def write_result(name: str, doc: dict[str, Any], out: str | None = None) -> Path:
    """Write ``doc`` as JSON to ``out`` or ``benchmarks/results/{name}.json``, atomically."""
    path = Path(out) if out else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_text(json.dumps(doc, indent=2, default=_jsonable) + "\n")
    os.replace(tmp, path)
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain, aligned text table (also valid Markdown)."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


STAGES = ("decode", "infer", "encode")


def stage_cpu_ms_per_frame(chunks: Sequence[dict[str, Any]], frames: int) -> dict[str, float]:
    """Each stage's CPU milliseconds per frame from a run's ``--stats`` chunk rows
    (``decode_cpu_s``, ``infer_cpu_s``, ``encode_cpu_s``: the stage processes' CPU while
    the stage ran), over ``frames`` frames."""
    return {
        s: 1000 * sum(c.get(f"{s}_cpu_s", 0.0) for c in chunks) / max(frames, 1) for s in STAGES
    }


# ----------------------------------------------------------------------------- ray


def start_ray(
    num_cpus: int,
    num_gpus: int | None = None,
    system_config: dict[str, Any] | None = None,
    **kwargs: Any,
) -> None:
    """A fresh local Ray sized by the benchmark (quiet logs, no dashboard), with the raylet
    settings raypipe's own local Ray gets unless ``system_config`` says otherwise."""
    import ray

    from raypipe.distributed.cluster import RAYLET_CONFIG

    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        address="local",  # a new Ray even when `ray start` runs on this machine
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        _system_config=dict(RAYLET_CONFIG if system_config is None else system_config),
        **kwargs,
    )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def warm_up(n_chunks: int, **options: Any) -> float:
    """Run :func:`raypipe.process_video` once on a small clip (``n_chunks`` chunks of 8
    frames, 160x96) with ``options``, untimed, and return its wall seconds.

    Ray starts worker processes lazily: the first run on a fresh local Ray pays for
    starting and importing several Python workers (seconds each on a loaded 2-core
    machine). A long-running cluster has them already; the timed run should too.
    """
    import raypipe
    from raypipe.testing import ClipSpec

    clip = cached_clip(ClipSpec(width=160, height=96, n_frames=8 * n_chunks, gop=8, seed=1))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="raypipe-bench-warmup-") as tmp:
        options = {**options, "chunk_frames": 8, "overwrite": True, "quiet": True}
        options.pop("stats_path", None)
        raypipe.process_video(str(clip), os.path.join(tmp, "warm.mp4"), **options)
    return time.perf_counter() - started


def stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


# ----------------------------------------------------------------------------- media


def cached_clip(spec: Any, suffix: str = ".mp4") -> Path:
    """The clip ``spec`` (a :class:`raypipe.testing.ClipSpec`) written once per spec into
    a cache directory under the system temp dir; later runs reuse it."""
    from raypipe.testing import make_clip

    key = hashlib.sha256(repr(spec).encode()).hexdigest()[:16]
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"clip-{spec.width}x{spec.height}-{spec.n_frames}-{key}{suffix}"
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{os.getpid()}.part{suffix}")
        make_clip(tmp, spec)
        os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------- memory


def _raylet_pid() -> int | None:
    """The pid of this driver's local raylet (Ray started by this process), else None."""
    import ray

    node = ray._private.worker.global_worker.node
    infos = getattr(node, "all_processes", {}).get("raylet") or []
    return infos[0].process.pid if infos else None


def _ray_worker_processes(raylet_pid: int | None) -> list[Any]:
    """The Ray worker processes of *this* Ray instance: the raylet's descendants whose
    command line starts with ``ray::`` (tasks, actors, idle workers) or runs Ray's
    ``default_worker.py``. Other Ray clusters on the same machine are not counted."""
    import psutil

    if raylet_pid is None:
        return []
    try:
        children = psutil.Process(raylet_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for proc in children:
        try:
            cmdline = proc.cmdline()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        head = cmdline[0] if cmdline else ""
        if head.startswith("ray::") or any("default_worker.py" in part for part in cmdline[:3]):
            found.append(proc)
    return found


def object_store_stats() -> dict[str, int]:
    """This node's plasma store: bytes used now, bytes spilled so far (raylet node stats)."""
    import ray
    from ray._private.internal_api import node_stats

    node = ray._private.worker.global_worker.node
    reply = node_stats(
        node.node_manager_address
        if hasattr(node, "node_manager_address")
        else node.node_ip_address,
        node.node_manager_port,
        include_memory_info=False,
    )
    store = reply.store_stats
    return {
        "used_bytes": int(store.object_store_bytes_used),
        "spilled_bytes_total": int(store.spilled_bytes_total),
        "fallback_bytes": int(store.object_store_bytes_fallback),
    }


@dataclass
class MemoryPeaks:
    """Peaks seen by a :class:`MemorySampler` (bytes)."""

    driver_rss_peak_bytes: int = 0
    worker_rss_peak_bytes: int = 0  # the largest single Ray worker process
    workers_rss_sum_peak_bytes: int = 0  # all Ray workers together, at one instant
    object_store_used_peak_bytes: int = 0
    object_store_spilled_bytes: int = 0
    samples: int = 0
    errors: int = 0


class MemorySampler:
    """Samples, every ``interval_s`` in a background thread: the driver's RSS, every Ray
    worker process's RSS (psutil) and the node's object store use (raylet stats).

    RSS of a worker counts the plasma pages it has mapped and touched: the object store
    figure is the better measure of data in flight, the RSS figures of per-process heaps.
    """

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.peaks = MemoryPeaks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)
        self._spilled_start = 0
        self._raylet_pid: int | None = None

    def __enter__(self) -> MemorySampler:
        self._raylet_pid = _raylet_pid()
        try:
            self._spilled_start = object_store_stats()["spilled_bytes_total"]
        except Exception:  # noqa: BLE001 - a benchmark helper: record, do not fail
            self.peaks.errors += 1
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        import psutil

        p = self.peaks
        p.samples += 1
        p.driver_rss_peak_bytes = max(p.driver_rss_peak_bytes, psutil.Process().memory_info().rss)
        total = 0
        for proc in _ray_worker_processes(self._raylet_pid):
            try:
                rss = proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            total += rss
            p.worker_rss_peak_bytes = max(p.worker_rss_peak_bytes, rss)
        p.workers_rss_sum_peak_bytes = max(p.workers_rss_sum_peak_bytes, total)
        try:
            store = object_store_stats()
        except Exception:  # noqa: BLE001
            p.errors += 1
            return
        p.object_store_used_peak_bytes = max(p.object_store_used_peak_bytes, store["used_bytes"])
        p.object_store_spilled_bytes = store["spilled_bytes_total"] - self._spilled_start


def mib(n_bytes: float) -> float:
    return round(n_bytes / 2**20, 1)
