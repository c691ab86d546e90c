"""Provider notes in the run stats, without Ray: each chunk row carries its actor's notes,
the stats keep them once (``totals.provider_notes``) and drop them from the chunk records."""

from __future__ import annotations

import json

from raypipe.archive_report import ArchiveReport, stats_doc
from raypipe.distributed.chunk_log import ChunkLog
from raypipe.distributed.stats import RunStats, chunk_record, take_provider_notes
from raypipe.infer.provider_check import check_gpu_stack, provider_notes
from raypipe.infer.session import CPU, CUDA, TENSORRT

TRT = "TensorrtExecutionProvider not used: libnvinfer.so.10 not found"


def _row(index: int, notes: list[str]) -> dict[str, object]:
    return {"chunk_id": f"v-{index:06d}", "index": index, "providers": json.dumps([CUDA, CPU]),
            "provider_notes": json.dumps(notes), "gpu_ids": "[]"}  # fmt: skip


def test_run_stats_keep_each_note_once_and_chunks_none() -> None:
    stats = RunStats(input="in.mp4", output="out.mp4")
    stats.add_chunks([chunk_record(_row(i, [TRT, "engine unavailable"])) for i in range(3)])
    stats.add_chunks([chunk_record(_row(3, ["engine unavailable", "other actor"]))])
    doc = stats.to_dict()
    assert doc["totals"]["provider_notes"] == [TRT, "engine unavailable", "other actor"]
    assert doc["totals"]["providers"] == [CUDA]
    assert all("provider_notes" not in c for c in doc["chunks"]) and len(doc["chunks"]) == 4


def test_archive_stats_keep_the_notes_in_totals() -> None:
    records = [chunk_record(_row(i, [TRT])) for i in range(2)]
    report = ArchiveReport(rows=[], path="r.parquet")
    report.provider_notes = take_provider_notes(records)
    doc = stats_doc(report, workers=1, chunks=records)
    assert doc["totals"]["provider_notes"] == [TRT]
    assert all("provider_notes" not in c for c in doc["chunks"])


def test_an_archives_stats_totals_count_its_chunks_and_name_its_providers() -> None:
    """README's totals: chunks and providers were missing from an archive's (a sweep). Its
    driver streams the records from its chunk log, which counts them and keeps the
    providers each actor ran on best."""
    log = ChunkLog()
    for i in range(3):
        log.add(chunk_record(_row(i, [TRT])))
    report = ArchiveReport(rows=[], path="r.parquet")
    totals = stats_doc(report, 1, chunk_count=log.count, providers=log.providers)["totals"]
    assert (totals["chunks"], totals["providers"]) == (3, [CUDA])


def test_what_an_actor_notes() -> None:
    assert provider_notes("auto", [TENSORRT, CUDA, CPU], has_gpu=True) == []
    assert provider_notes("gpu", [TENSORRT, CUDA], ["built"], has_gpu=True) == ["built"]
    assert provider_notes("cpu", [CPU], has_gpu=True) == [
        "device 'cpu' asked for: CPU provider only"
    ]
    assert provider_notes("auto", ["sim"], has_gpu=True) == []  # a simulated model
    stack = check_gpu_stack()
    assert provider_notes("auto", [CPU], ["setup said"], has_gpu=False) == [
        "this actor has no GPU (Ray assigned it none)",
        *stack.why_not([CPU]),
        "setup said",
    ]
    assert provider_notes("gpu", [CUDA, CPU], has_gpu=True) == stack.why_not([CUDA, CPU])
