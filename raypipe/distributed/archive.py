"""Bulk processing: every video of an archive through one pipeline, resumable, reported.

Every good video comes back exactly once; every bad one is a typed row in the report; the
run survives crashes. Videos are planned inside the dataset (one plan task each), so the
first chunks start within seconds whatever the archive's size; the report is rewritten as
videos finish. Re-running the same command skips videos whose output records this run's
settings and source, and inside a video that was cut off reuses the segments already
encoded in its work directory (:mod:`raypipe.reuse`). ``resume=False`` starts over. Exit
codes: 0 when every video is done or skipped, 3 when some failed.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from typing import Any

from raypipe import storage
from raypipe.archive_report import (
    REPORT_NAME,
    ArchiveReport,
    ReportJournal,
    previous_attempts,
    run_report_path,
    stats_doc,
    write_report,
)
from raypipe.config import RunConfig, build_run_config
from raypipe.distributed.dataset import archive_source, build_dataset
from raypipe.distributed.monitor import ArchiveProgress
from raypipe.distributed.planning import VideoJob, VideoResult
from raypipe.distributed.runner import ChunkLog, Runner
from raypipe.distributed.setup import load_run, start_run, table_output
from raypipe.distributed.stats import gpu_stats, take_provider_notes
from raypipe.errors import ConfigError
from raypipe.inputs import list_inputs
from raypipe.media.mux import container_refuses
from raypipe.media.probe import probe


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
    model = load_run(cfg)
    items = list_inputs(inputs) if isinstance(inputs, str) else _items_of(list(inputs))
    report_path = report_path or storage.join(output_dir, REPORT_NAME)
    previous = previous_attempts(report_path)
    jobs = _jobs(items, output_dir, tensor=model.tensor, codec=cfg.encode.codec)
    storage.makedirs(output_dir)
    run = start_run(cfg, model)
    cfg, actors, key = run.cfg, run.actors, run.key
    order = {job.uri: i for i, job in enumerate(jobs)}
    progress = ArchiveProgress(len(jobs), label="archive", enabled=not cfg.quiet)
    chunk_log = ChunkLog(spill=True)
    runner = Runner(cfg, chunk_log=chunk_log, on_frames=progress.update)
    source = archive_source(
        jobs, cfg.chunk, resume=resume, key=key, tensor=model.tensor, temporal=model.temporal
    )
    ds = build_dataset(source, cfg, actors, model, warmup_hw=_warmup_hw(jobs))
    results: list[VideoResult] = []
    journal = ReportJournal(report_path, previous, order)
    for result in runner.run(ds):
        results.append(_light(result))
        journal.add(result)
        if result.status == "failed":
            progress.message(f"failed: {result.uri}: {result.error_type}: {result.error_message}")
        progress.video_done(
            result.ok,
            0 if result.status == "skipped" else result.frames_in,
            skipped=result.status == "skipped",
        )
    results.sort(key=lambda r: order.get(r.uri, len(order)))
    rows = journal.rows()
    report = ArchiveReport(rows=rows, path=report_path, wall_seconds=time.monotonic() - started)
    report.chunk_stats = chunk_log.records()
    chunk_log.close()
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


def _light(result: VideoResult) -> VideoResult:
    """``result`` without its chunk records (they are in the run's chunk log)."""
    return dataclasses.replace(result, chunk_stats=[])


def _warmup_hw(jobs: list[VideoJob]) -> tuple[int, int] | None:
    """The upright size of the first video, for the actors' warm-up batch (None: unknown;
    the actors then warm up on their first chunk). Probing it costs one index read."""
    for job in jobs:
        if job.error:
            continue
        try:
            width, height = probe(job.uri).picture_format.upright_size
        except Exception:  # noqa: BLE001 - the video's own plan task reports its error
            return None
        return height, width
    return None


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


def _draw_run_report(report: ArchiveReport, progress: ArchiveProgress, workers: int) -> None:
    """The run report PNG next to the Parquet report, when chunks ran (never fatal: the
    videos and the report are already written)."""
    if not report.chunk_stats:
        return
    target = run_report_path(report.path)
    try:
        from raypipe.report import draw_report

        draw_report(stats_doc(report, workers), target, title="raypipe archive")
    except ImportError as e:
        progress.message(f"run report not drawn ({e}); pip install matplotlib")
    except Exception as e:  # noqa: BLE001 - a picture must not fail a finished archive
        progress.message(f"run report not drawn: {type(e).__name__}: {e}")


def _write_stats(report: ArchiveReport, path: str, workers: int) -> None:
    storage.write_text(path, json.dumps(stats_doc(report, workers), indent=2))
