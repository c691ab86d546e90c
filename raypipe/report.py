"""A run report as one PNG: where every chunk ran, how fast frames came out, GPU use.

``draw_report(stats, "report.png")`` reads the ``--stats`` JSON of a run (or of an archive:
chunks of many videos, told apart by ``video_id``) and draws three panels sharing one
time axis, in seconds from the first chunk's decode start:

1. a timeline, one row per worker process (each inference actor, each process that ran
   decode/encode tasks; grouped by node), with a bar per chunk and stage coloured by stage
   (decode, infer, encode; failed chunks hatched in red);
2. throughput: frames finished per second (a chunk's frames count when its encode ends),
   the run's mean, and for archives the number of videos finished;
3. GPU utilisation and memory per physical GPU when the stats carry samples from a GPU
   monitor (``stats["gpu"] = {"available": bool, "samples": [{"t": unix_s, "gpu": index,
   "util": pct, "mem_used": bytes}]}``), else the note "no GPU measured".

Matplotlib (Agg, no display needed) is imported only here; the figure is drawn off
pyplot so a notebook's own backend and figures are untouched. The PNG is written
atomically: a temporary name next to it, then a rename (or one put for fsspec URLs).
"""

from __future__ import annotations

import io
import json
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from raypipe.errors import counted

__all__ = ["STAGE_COLORS", "draw_report", "load_stats"]

STAGES: tuple[str, ...] = ("decode", "infer", "encode")
STAGE_COLORS: dict[str, str] = {"decode": "#4C72B0", "infer": "#DD8452", "encode": "#55A868"}
_FAILED_EDGE = "#C0392B"
_MAX_LANE_LABELS = 60  # more lanes than this: labels thinned out, bars still drawn
# Legends sit above each panel, right of its title, so they never cover a bar.
_LEGEND_ABOVE: dict[str, Any] = {
    "loc": "lower right",
    "bbox_to_anchor": (1.0, 1.0),
    "fontsize": 8,
    "frameon": False,
    "borderaxespad": 0.1,
}


def load_stats(stats: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    """The stats document: ``stats`` itself, or the JSON at a path or fsspec URL."""
    if isinstance(stats, Mapping):
        return dict(stats)
    path = os.fspath(stats)
    if os.path.exists(path):
        with open(path, "rb") as f:
            data = f.read()
    else:
        from raypipe import storage

        data = storage.read_bytes(path)
    doc = json.loads(data)
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("totals"), dict)
        or not isinstance(doc.get("chunks"), list)
    ):  # {} or `probe --json`'s drew an empty picture, and {"totals": 5} an AttributeError
        raise ValueError(
            f"{path}: expected a raypipe stats document (an object with 'totals' and a "
            "'chunks' list, as written by --stats), got something else"
        )
    return doc


def _num(value: Any, default: float = math.nan) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


@dataclass
class _Lane:
    """One timeline row: a worker process and the stage bars it ran."""

    key: tuple[str, ...]
    label: str
    node: str
    order: tuple[Any, ...]
    bars: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    failed: list[tuple[float, float]] = field(default_factory=list)


def _short(text: str, n: int = 8) -> str:
    return text[:n] if text else "?"


def _lanes(chunks: Sequence[Mapping[str, Any]], t0: float) -> list[_Lane]:
    lanes: dict[tuple[str, ...], _Lane] = {}
    nodes = sorted(
        {str(c.get(f"{s}_node", "")) for c in chunks for s in STAGES} - {""}
    )  # stable node numbering: node 0, node 1, ...
    node_no = {n: i for i, n in enumerate(nodes)}
    multi_node = len(nodes) > 1
    for c in chunks:
        failed = bool(c.get("error_type"))
        for stage in STAGES:
            start, seconds = _num(c.get(f"{stage}_start")), _num(c.get(f"{stage}_s"))
            if math.isnan(start) or math.isnan(seconds):
                continue
            node = str(c.get(f"{stage}_node", ""))
            pid = str(c.get(f"{stage}_pid", "?"))
            where = f"node {node_no[node]} " if multi_node and node in node_no else ""
            if stage == "infer" or _in_actor(c, stage):  # fused: the actor's own lane (it
                # was drawn twice, as an actor and as a task worker of the same pid: a sweep)
                actor_pid = str(c.get("infer_pid", pid))
                actor = str(c.get("actor_id", "")) or f"pid{actor_pid}"
                gpus = c.get("gpu_ids") or []
                gpu = f" GPU {','.join(str(g) for g in gpus)}" if gpus else ""
                key: tuple[str, ...] = ("infer", actor)
                label = f"{where}infer actor {_short(actor)}{gpu} (pid {actor_pid})"
                order: tuple[Any, ...] = (node_no.get(node, -1), 0, label)
            else:
                key = ("task", node, pid)
                label = f"{where}task worker pid {pid}"
                order = (node_no.get(node, -1), 1, start)
            lane = lanes.get(key)
            if lane is None:
                lane = lanes[key] = _Lane(key=key, label=label, node=node, order=order)
            elif key[0] == "task" and start < lane.order[2]:
                lane.order = (lane.order[0], 1, start)  # task workers by first start
            bar = (start - t0, max(seconds, 0.0))
            lane.bars[stage].append(bar)
            if failed:
                lane.failed.append(bar)
    for lane in lanes.values():
        if lane.key[0] == "task":
            roles = [s for s in ("decode", "encode") if lane.bars.get(s)]
            lane.label += f" ({'+'.join(roles)})"
        elif lane.bars.get("decode") or lane.bars.get("encode"):
            roles = [s for s in STAGES if lane.bars.get(s)]
            lane.label += f" ({'+'.join(roles)})"
    return sorted(lanes.values(), key=lambda lane: lane.order)


def _in_actor(chunk: Mapping[str, Any], stage: str) -> bool:
    """Whether ``chunk``'s ``stage`` ran in its inference actor's own process (fused
    stages: the actor decodes and encodes its chunks)."""
    pid, actor_pid = chunk.get(f"{stage}_pid"), chunk.get("infer_pid")
    same_node = chunk.get(f"{stage}_node", "") == chunk.get("infer_node", "")
    return pid is not None and pid == actor_pid and same_node


def _actor_seconds(chunk: Mapping[str, Any]) -> float:
    """The seconds ``chunk`` kept its actor busy: its inference, and its decode and encode
    where the actor ran them (fused stages)."""
    return sum(
        max(_num(chunk.get(f"{stage}_s"), 0.0), 0.0)
        for stage in STAGES
        if stage == "infer" or _in_actor(chunk, stage)
    )


def _nice_bin_seconds(span_s: float, target_bins: int = 60) -> float:
    """A round bin width (0.1, 0.2, 0.5, 1, 2, 5, 10 ... s) giving about ``target_bins``."""
    raw = max(span_s / target_bins, 0.1)
    exponent = math.floor(math.log10(raw))
    for step in (1.0, 2.0, 5.0, 10.0):
        width = step * 10**exponent
        if width >= raw:
            return width
    return 10.0 ** (exponent + 1)


def _chunk_end(c: Mapping[str, Any]) -> float:
    return _num(c.get("encode_start")) + _num(c.get("encode_s"))


def _t0(chunks: Sequence[Mapping[str, Any]]) -> float | None:
    """The first stage start of any chunk (unix seconds), or None without chunk times."""
    starts = [_num(c.get(f"{s}_start")) for c in chunks for s in STAGES]
    starts = [s for s in starts if not math.isnan(s)]
    return min(starts) if starts else None


@dataclass
class _GpuSeries:
    """GPU samples on the report's time axis, per physical GPU: (t, util %, memory bytes)."""

    points: dict[str, list[tuple[float, float, float]]]
    note: str = ""  # why there are none, or how the times were aligned


def _gpu_section(doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for key in ("gpu", "gpus"):
        section = doc.get(key)
        if isinstance(section, Mapping) and ("samples" in section or "available" in section):
            return section
    return None


def _gpu_series(doc: Mapping[str, Any], t0: float | None) -> _GpuSeries:
    """Normalise the GPU samples of ``doc`` to seconds since ``t0``.

    Accepts ``doc["gpu"]`` or ``doc["gpus"]`` with samples either ``{"t": unix_s, "util",
    "mem_used"}`` or :class:`raypipe.distributed.gpu_monitor.GpuMonitor`'s ``{"t_s":
    seconds since the monitor started, "util_pct", "memory_used_bytes"}``. Relative times
    are placed with the section's ``start_unix_s`` when it has one, else with their first
    sample at the first chunk's start (approximate; said in the panel title).
    """
    section = _gpu_section(doc)
    samples = [s for s in (section or {}).get("samples") or [] if isinstance(s, Mapping)]
    if section is None or not section.get("available", bool(samples)) or not samples:
        reason = str((section or {}).get("reason") or "")
        if reason.lower().startswith("no gpu"):
            return _GpuSeries({}, reason)
        return _GpuSeries({}, "no GPU measured" + (f" ({reason})" if reason else ""))
    note = ""
    if any("t" in s for s in samples):
        base = t0 if t0 is not None else min(_num(s.get("t"), math.inf) for s in samples)
        times = [_num(s.get("t")) - base for s in samples]
    else:
        start = _num(section.get("start_unix_s"))
        rel = [_num(s.get("t_s")) for s in samples]
        if not math.isnan(start) and t0 is not None:
            times = [start + r - t0 for r in rel]
        else:
            first = min((r for r in rel if not math.isnan(r)), default=0.0)
            times = [r - first for r in rel]
            note = "times aligned at the run's start, approximately"
    points: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for s, t in zip(samples, times):
        if math.isnan(t):
            continue
        util = _num(s.get("util", s.get("util_pct")))
        mem = _num(s.get("mem_used", s.get("memory_used_bytes")))
        points[str(s.get("gpu", "?"))].append((t, util, mem))
    for series in points.values():
        series.sort()
    return _GpuSeries(dict(points), note)


def _summary(doc: Mapping[str, Any], chunks: Sequence[Mapping[str, Any]], span_s: float) -> str:
    totals = doc.get("totals", {}) or {}
    frames = int(_num(totals.get("frames"), 0)) or sum(
        int(_num(c.get("n_frames"), 0)) for c in chunks if not c.get("error_type")
    )
    wall = _num(totals.get("wall_seconds"), span_s)
    fps = _num(totals.get("fps"), frames / wall if wall > 0 else 0.0)
    videos = {str(c.get("video_id", "")) for c in chunks}
    failed = sum(1 for c in chunks if c.get("error_type"))
    actors = {str(c.get("actor_id", "")) for c in chunks if c.get("actor_id")}
    # (a fused actor's decode and encode too: 8% busy was said of two actors nearly always
    # busy, counting their inference alone; a sweep)
    actor_busy = sum(_actor_seconds(c) for c in chunks)
    busy = actor_busy / (len(actors) * span_s) if actors and span_s > 0 else math.nan
    providers = totals.get("providers") or sorted(
        {p for c in chunks for p in (c.get("providers") or [])[:1]}
    )
    parts = [
        f"{frames} frames",
        counted(len(chunks), "chunk") + (f" ({failed} failed)" if failed else ""),
    ]
    if len(videos) > 1:
        parts.append(f"{len(videos)} videos")
    parts += [
        f"{wall:.1f} s wall ({span_s:.1f} s in the pipeline)",
        f"{fps:.1f} fps over the wall time (start-up included)",
    ]
    if actors:  # of the run's workers, those that ran chunks ("1 inference actor(s)"
        # beside stats saying 2 workers read as a contradiction: a sweep)
        workers = max(int(_num(totals.get("workers"), 0.0)), len(actors))
        ran = f"{len(actors)} of {workers}" if workers > len(actors) else f"{len(actors)}"
        parts.append(f"chunks on {ran} inference actor{'' if workers == 1 else 's'}")
    if not math.isnan(busy):
        parts.append(f"actors busy {100 * busy:.0f}%")
    if providers:
        parts.append("/".join(str(p).replace("ExecutionProvider", "") for p in providers))
    return ", ".join(parts)


def _draw_timeline(ax: Any, lanes: list[_Lane]) -> None:
    from matplotlib.patches import Patch

    height = 0.8
    for y, lane in enumerate(lanes):
        for stage in STAGES:
            bars = lane.bars.get(stage)
            if bars:
                ax.broken_barh(
                    bars,
                    (y - height / 2, height),
                    facecolors=STAGE_COLORS[stage],
                    edgecolors="white",
                    linewidth=0.3,
                )
        if lane.failed:
            ax.broken_barh(
                lane.failed,
                (y - height / 2, height),
                facecolors="none",
                edgecolors=_FAILED_EDGE,
                hatch="///",
                linewidth=0.8,
            )
    ax.set_ylim(len(lanes) - 0.5, -0.5)
    step = max(1, math.ceil(len(lanes) / _MAX_LANE_LABELS))
    ticks = list(range(0, len(lanes), step))
    ax.set_yticks(ticks)
    ax.set_yticklabels([lanes[i].label for i in ticks], fontsize=8)
    ax.set_title("chunks per worker process, by stage", fontsize=10, loc="left")
    handles = [Patch(facecolor=STAGE_COLORS[s], label=s) for s in STAGES]
    if any(lane.failed for lane in lanes):
        handles.append(Patch(facecolor="none", edgecolor=_FAILED_EDGE, hatch="///", label="failed"))
    ax.legend(handles=handles, **_LEGEND_ABOVE, ncol=len(handles))
    ax.grid(axis="x", alpha=0.3)


def _draw_throughput(
    ax: Any, chunks: Sequence[Mapping[str, Any]], t0: float, span_s: float
) -> None:
    import numpy as np

    ok = [c for c in chunks if not c.get("error_type") and not math.isnan(_chunk_end(c))]
    ax.set_title("throughput: frames finished per second", fontsize=10, loc="left")
    ax.set_ylabel("frames/s", fontsize=9)
    ax.grid(alpha=0.3)
    if not ok:
        ax.text(0.5, 0.5, "no chunk finished", ha="center", va="center", transform=ax.transAxes)
        return
    width = _nice_bin_seconds(span_s)
    ends = np.array([_chunk_end(c) - t0 for c in ok])
    frames = np.array([_num(c.get("n_frames"), 0.0) for c in ok])
    n_bins = max(1, math.ceil(span_s / width) + 1)
    edges = np.arange(n_bins + 1) * width
    per_bin, _ = np.histogram(ends, bins=edges, weights=frames)
    ax.stairs(
        per_bin / width, edges, fill=True, color="#8172B3", alpha=0.75, label=f"{width:g} s bins"
    )
    mean_fps = frames.sum() / max(ends.max(), 1e-9)
    ax.axhline(
        mean_fps,
        color="black",
        linestyle="--",
        linewidth=1,
        label=f"mean {mean_fps:.1f} frames/s in the pipeline (first chunk on)",
    )
    handles, labels = ax.get_legend_handles_labels()
    by_video: dict[str, float] = defaultdict(float)
    for c in chunks:
        end = _chunk_end(c)
        if not math.isnan(end):
            key = str(c.get("video_id", ""))
            by_video[key] = max(by_video[key], end - t0)
    if len(by_video) > 1:
        twin = ax.twinx()
        done_s = np.sort(np.array(list(by_video.values())))
        twin.step(
            np.concatenate([[0.0], done_s]),
            np.arange(len(done_s) + 1),
            where="post",
            color="#937860",
            linewidth=1.5,
            label="videos finished",
        )
        twin.set_ylabel("videos", fontsize=9)
        twin.set_ylim(bottom=0)
        h2, l2 = twin.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, **_LEGEND_ABOVE, ncol=3)


def _draw_gpu(ax: Any, gpu: _GpuSeries) -> None:
    title = "GPU utilisation" + (f" ({gpu.note})" if gpu.points and gpu.note else "")
    ax.set_title(title, fontsize=10, loc="left")
    if not gpu.points:
        ax.text(
            0.5,
            0.5,
            gpu.note or "no GPU measured",
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=11,
            color="#555555",
        )
        ax.set_yticks([])
        return
    series = gpu.points
    twin = ax.twinx()
    mem_max_gib = 0.0
    for i, (name, points) in enumerate(sorted(series.items())):
        color = f"C{i % 10}"
        ts = [p[0] for p in points]
        ax.plot(ts, [p[1] for p in points], color=color, linewidth=1.4, label=f"GPU {name} util")
        mem = [p[2] / 2**30 for p in points]
        if not all(math.isnan(m) for m in mem):
            twin.plot(ts, mem, color=color, linewidth=1.2, linestyle=":", label=f"GPU {name} mem")
            mem_max_gib = max(mem_max_gib, max(m for m in mem if not math.isnan(m)))
    ax.set_ylim(0, 105)
    ax.set_ylabel("util %", fontsize=9)
    twin.set_ylabel("memory used, GiB (dotted)", fontsize=9)
    twin.set_ylim(0, max(mem_max_gib * 1.3, 1.0))
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    h2, l2 = twin.get_legend_handles_labels()
    if len(handles) + len(h2) <= 16:
        ax.legend(handles + h2, labels + l2, **_LEGEND_ABOVE, ncol=min(8, len(handles) + len(h2)))


def import_plotting() -> None:
    """Import the matplotlib modules :func:`draw_report` draws with (it imports them when
    it first draws): a process that draws later can load them while it waits."""
    import matplotlib.backends.backend_agg
    import matplotlib.figure
    import matplotlib.patches  # noqa: F401


def _render(doc: Mapping[str, Any], title: str | None) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    chunks = [c for c in doc.get("chunks", []) if isinstance(c, Mapping)]
    first_start = _t0(chunks)
    gpu = _gpu_series(doc, first_start)
    t0 = first_start if first_start is not None else 0.0
    ends = [_chunk_end(c) - t0 for c in chunks]
    ends = [e for e in ends if not math.isnan(e)]
    gpu_ends = [p[0] for points in gpu.points.values() for p in points]
    chunk_span_s = max(ends) if ends else 0.0
    span_s = max([chunk_span_s, *gpu_ends]) or 1.0
    lanes = _lanes(chunks, t0)
    timeline_in = min(max(1.6, 0.26 * len(lanes) + 0.8), 16.0)
    gpu_in = 2.4 if gpu.points else 1.0
    fig = Figure(figsize=(13, timeline_in + 3.2 + gpu_in), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(3, 1, height_ratios=[timeline_in, 2.6, gpu_in])
    ax_time = fig.add_subplot(grid[0])
    ax_fps = fig.add_subplot(grid[1], sharex=ax_time)
    ax_gpu = fig.add_subplot(grid[2], sharex=ax_time)
    if lanes:
        _draw_timeline(ax_time, lanes)
    else:
        ax_time.text(0.5, 0.5, "no chunks in these stats", ha="center", va="center")
        ax_time.set_yticks([])
    _draw_throughput(ax_fps, chunks, t0, span_s)
    _draw_gpu(ax_gpu, gpu)
    ax_gpu.set_xlabel("seconds since the first chunk started", fontsize=9)
    ax_time.set_xlim(0, span_s * 1.01 if span_s > 0 else 1.0)
    totals = doc.get("totals", {}) or {}
    heading = title or os.path.basename(str(totals.get("input") or "")) or "raypipe run"
    fig.suptitle(f"{heading}\n{_summary(doc, chunks, chunk_span_s)}", fontsize=11)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def draw_report(
    stats: Mapping[str, Any] | str | os.PathLike[str],
    out_png: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> None:
    """Draw the run report of ``stats`` (a stats dict, or the path/URL of ``--stats`` JSON)
    into the PNG ``out_png`` (a local path or fsspec URL), atomically.

    Works for one video and for archives (chunks of several videos). Raises ValueError
    when ``stats`` is not a stats document.
    """
    from raypipe import storage

    storage.write_bytes(os.fspath(out_png), _render(load_stats(stats), title))
