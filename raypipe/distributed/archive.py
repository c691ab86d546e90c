"""Bulk processing: every video of an archive through one pipeline, resumable, reported.

Every good video comes back exactly once; every bad one is a typed row in the report; the
run survives crashes. Re-running the same command skips videos whose output exists and
probes with the source's frame count (checked, not assumed) and, inside a video that was
cut off, reuses the segments already encoded in its work directory. ``resume=False``
starts over. Exit codes: 0 when every video is done or skipped, 3 when some failed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from raypipe import storage
from raypipe.config import RunConfig, build_run_config
from raypipe.distributed.cluster import connect, plan_actors
from raypipe.distributed.engine import VideoJob, VideoResult, plan_all, run_planned
from raypipe.distributed.monitor import ArchiveProgress
from raypipe.distributed.pipeline import load_model, resolve_encoder, run_key, table_output
from raypipe.distributed.stats import gpu_stats, take_provider_notes
from raypipe.errors import ConfigError
from raypipe.inputs import list_inputs
from raypipe.media.encode import check_encoder
from raypipe.media.mux import container_refuses

EXIT_ALL_DONE = 0
EXIT_SOME_FAILED = 3
REPORT_NAME = "_raypipe-report.parquet"
REPORT_COLUMNS = (
    "uri", "status", "error_type", "error_message", "frames_in", "frames_out", "chunks",
    "reused_chunks", "note", "attempts", "seconds", "output",
)  # fmt: skip


@dataclass
class ArchiveReport:
    """The outcome of an archive run: one row per input video."""

    rows: list[dict[str, Any]]
    path: str
    wall_seconds: float = 0.0
    chunk_stats: list[dict[str, Any]] = field(default_factory=list)
    provider_notes: list[str] = field(default_factory=list)
    gpu: dict[str, Any] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r["status"] == status)

    @property
    def exit_code(self) -> int:
        return EXIT_SOME_FAILED if self.count("failed") else EXIT_ALL_DONE


def process_archive(
    inputs: str | Sequence[str],
    output_dir: str,
    config: RunConfig | None = None,
    *,
    resume: bool = True,
    report_path: str | None = None,
    **options: Any,
) -> ArchiveReport:
    """Process every video named by ``inputs`` into ``output_dir``; return the report.

    ``inputs``: a directory/prefix, a glob, a URI list, a CSV/Parquet manifest (see
    :mod:`raypipe.inputs`) or a list of URIs. ``options`` as for
    :func:`raypipe.process_video`. The report is written to ``report_path`` (default
    ``OUTPUT_DIR/_raypipe-report.parquet``) as Parquet.
    """
    cfg = build_run_config(config, **options)
    started = time.monotonic()
    model = load_model(cfg)
    if not model.tensor:
        check_encoder(cfg.encode)
    items = list_inputs(inputs) if isinstance(inputs, str) else _items_of(list(inputs))
    report_path = report_path or storage.join(output_dir, REPORT_NAME)
    previous = _previous_attempts(report_path)
    jobs = _jobs(items, output_dir, tensor=model.tensor, codec=cfg.encode.codec)
    storage.makedirs(output_dir)
    connect(cfg.runtime, verbose=cfg.verbose)
    if not model.tensor:
        cfg = resolve_encoder(cfg)
    actors = plan_actors(cfg.runtime, cfg.model)
    key = run_key(cfg, model, actors)
    order = {job.uri: i for i, job in enumerate(jobs)}
    planned = sorted(  # chunks enter the pipeline in input order, whatever planned first
        plan_all(jobs, cfg.chunk, resume=resume, key=key, tensor=model.tensor),
        key=lambda p: order.get(p.job.uri, len(order)),
    )
    total = sum(p.n_frames for p in planned if p.result is None)
    progress = ArchiveProgress(
        len(planned), total_frames=total, label="archive", enabled=not cfg.quiet
    )
    results: list[VideoResult] = []
    for result in run_planned(planned, cfg, actors, model, on_frames=progress.update):
        results.append(result)
        if result.status == "failed":
            progress.message(f"failed: {result.uri}: {result.error_type}: {result.error_message}")
        progress.video_done(
            result.ok,
            0 if result.status == "skipped" else result.frames_in,
            skipped=result.status == "skipped",
        )
    results.sort(key=lambda r: order.get(r.uri, len(order)))
    rows = [_report_row(r, previous) for r in results]
    report = ArchiveReport(rows=rows, path=report_path, wall_seconds=time.monotonic() - started)
    report.chunk_stats = [c for r in results for c in r.chunk_stats]
    report.provider_notes = take_provider_notes(report.chunk_stats)
    report.gpu = gpu_stats(
        [s for r in results for s in r.gpu_samples],
        sorted({n for r in results for n in r.gpu_notes}),
        uses_gpu=actors.uses_gpu,
    )
    write_report(report)
    _draw_run_report(report, progress, actors.workers)
    progress.close(
        f"archive: {report.count('done')} done, {report.count('skipped')} skipped, "
        f"{report.count('failed')} failed of {len(rows)} -> {output_dir}"
    )
    if cfg.stats_path:
        _write_stats(report, cfg.stats_path, actors.workers)
    return report


def _items_of(uris: list[str]) -> list[Any]:
    from raypipe.inputs import _from_uris

    return _from_uris(uris)


def _jobs(
    items: list[Any], output_dir: str, *, tensor: bool = False, codec: str = ""
) -> list[VideoJob]:
    jobs: list[VideoJob] = []
    seen_inputs: set[str] = set()
    seen_outputs: set[str] = set()
    for item in items:
        if tensor:  # analysis: one Parquet partition per video
            output = table_output(output_dir, item.uri)
        else:
            output = storage.join(output_dir, item.relative_output) if item.relative_output else ""
        error = item.error
        if not error and item.uri in seen_inputs:
            error = f"input '{item.uri}' is listed more than once; it is processed once"
        elif not error and output in seen_outputs:
            error = (
                f"output '{item.relative_output}' is claimed by two inputs; give one another output"
            )
        refused = container_refuses(output, codec) if output and not tensor else ""
        problem = f"output '{item.relative_output}': {refused}" if refused else ""
        jobs.append(
            VideoJob(uri=item.uri, output=output or item.uri, error=error, output_problem=problem)
        )
        seen_inputs.add(item.uri)
        seen_outputs.add(output)
    if not jobs:
        raise ConfigError("no inputs found; check the directory, glob or list")
    return jobs


def _report_row(result: VideoResult, previous: dict[str, int]) -> dict[str, Any]:
    attempts = previous.get(result.uri, 0) + (0 if result.status == "skipped" else 1)
    return {
        "uri": result.uri,
        "status": result.status,
        "error_type": result.error_type,
        "error_message": result.error_message,
        "frames_in": result.frames_in,
        "frames_out": result.frames_out,
        "chunks": result.chunks,
        "reused_chunks": result.reused_chunks,
        "note": result.note,
        "attempts": max(attempts, 1),
        "seconds": round(result.seconds, 3),
        "output": result.output if result.status != "failed" else "",
    }


def _previous_attempts(report_path: str) -> dict[str, int]:
    if not storage.exists(report_path):
        return {}
    try:
        return {r["uri"]: int(r["attempts"]) for r in read_report(report_path)}
    except Exception:  # noqa: BLE001 - an unreadable old report only loses attempt counts
        return {}


def write_report(report: ArchiveReport) -> None:
    """Write the report as Parquet, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = (
        pa.Table.from_pylist(report.rows, schema=_schema())
        if report.rows
        else _schema().empty_table()
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    storage.write_bytes(report.path, sink.getvalue().to_pybytes())


def _schema() -> Any:
    import pyarrow as pa

    ints = ("frames_in", "frames_out", "chunks", "reused_chunks", "attempts")
    return pa.schema(
        [
            (c, pa.int64() if c in ints else pa.float64() if c == "seconds" else pa.string())
            for c in REPORT_COLUMNS
        ]
    )


def read_report(path: str) -> list[dict[str, Any]]:
    import io

    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(storage.read_bytes(path))).to_pylist()


def format_report(rows: list[dict[str, Any]], *, width: int = 100) -> str:
    """The report as a terminal table, failures with their error."""
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in ("done", "skipped", "failed")}
    lines = [f"{'status':<8} {'frames':>7} {'chunks':>6} {'secs':>7}  uri"]
    for r in rows:
        lines.append(
            f"{r['status']:<8} {r['frames_out']:>7} {r['chunks']:>6} "
            f"{r['seconds']:>7.1f}  {r['uri']}"
        )
        details = [r.get("note") or ""]
        if r["status"] == "failed":
            details.insert(0, f"{r['error_type']}: {r['error_message']}")
        for detail in filter(None, details):
            lines.append(" " * 9 + (detail if len(detail) < width else detail[: width - 3] + "..."))
    lines.append(
        f"{len(rows)} videos: {counts['done']} done, {counts['skipped']} skipped, "
        f"{counts['failed']} failed"
    )
    return "\n".join(lines)


def run_report_path(report_path: str) -> str:
    """Where an archive's run report PNG goes: next to its Parquet report."""
    return report_path.removesuffix(".parquet") + ".png"


def _draw_run_report(report: ArchiveReport, progress: ArchiveProgress, workers: int) -> None:
    """The run report PNG next to the Parquet report, when chunks ran (never fatal: the
    videos and the report are already written)."""
    if not report.chunk_stats:
        return
    target = run_report_path(report.path)
    try:
        from raypipe.report import draw_report

        draw_report(_stats_doc(report, workers), target, title="raypipe archive")
    except ImportError as e:
        progress.message(f"run report not drawn ({e}); pip install matplotlib")
    except Exception as e:  # noqa: BLE001 - a picture must not fail a finished archive
        progress.message(f"run report not drawn: {type(e).__name__}: {e}")


def _stats_doc(report: ArchiveReport, workers: int) -> dict[str, Any]:
    frames = sum(r["frames_out"] for r in report.rows if r["status"] == "done")
    return {
        "totals": {
            "videos": len(report.rows),
            "done": report.count("done"),
            "skipped": report.count("skipped"),
            "failed": report.count("failed"),
            "frames": frames,
            "wall_seconds": report.wall_seconds,
            "workers": workers,
            "fps": frames / report.wall_seconds if report.wall_seconds else 0.0,
            "provider_notes": report.provider_notes,
        },
        "chunks": report.chunk_stats,
        "gpu": report.gpu,
    }


def _write_stats(report: ArchiveReport, path: str, workers: int) -> None:
    doc = _stats_doc(report, workers)
    tmp = f"{path}.{os.getpid()}.part"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2)
    os.replace(tmp, path)
