"""The chunk log: an archive's chunk records spilled to a local file, streamed back out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raypipe.distributed.chunk_log import ChunkLog, read_chunk_log


@pytest.mark.parametrize("spill", [False, True])
def test_the_stats_document_streams_every_record_and_the_notes_once(
    spill: bool, tmp_path: Path
) -> None:
    log = ChunkLog(spill=spill)
    records = [
        {"index": i, "video_id": f"v{i % 3}", "provider_notes": ["no TensorRT"] * (i % 2)}
        for i in range(7)
    ]
    for record in records:
        log.add(record)
    assert records[1]["provider_notes"] == ["no TensorRT"]  # the caller's record is not changed
    head = {"totals": {"videos": 3, "provider_notes": log.provider_notes}, "gpu": {"samples": []}}
    log.write_stats(head, str(tmp_path / "stats.json"))
    doc = json.loads((tmp_path / "stats.json").read_text())
    expected = [{k: v for k, v in r.items() if k != "provider_notes"} for r in records]
    assert doc == {**head, "chunks": expected}
    assert log.provider_notes == ["no TensorRT"]
    assert list(log.records()) == expected
    if spill:
        assert list(read_chunk_log(log.spill_path)) == expected
        log.close()
        assert not Path(log.spill_path).exists()


def test_an_empty_log_writes_an_empty_chunk_list(tmp_path: Path) -> None:
    log = ChunkLog(spill=True)
    log.write_stats({"totals": {}}, str(tmp_path / "s.json"))
    assert json.loads((tmp_path / "s.json").read_text()) == {"totals": {}, "chunks": []}
    log.close()


def test_a_spilling_log_sweeps_the_files_of_drivers_no_longer_running(tmp_path: Path) -> None:
    """A killed driver (SIGKILL) leaves its spill file behind; the next spilling run
    removes those of dead drivers and nothing else."""
    import os
    import subprocess
    import sys
    import tempfile

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    dead_pid = int(ended.stdout)
    directory = Path(tempfile.gettempdir())
    dead = directory / f"raypipe-chunks-{dead_pid}-test.jsonl.gz"
    alive = directory / f"raypipe-chunks-{os.getpid()}-test.jsonl.gz"
    other = directory / "raypipe-chunks-notapid.jsonl.gz"  # not of the pid-naming: left
    for path in (dead, alive, other):
        path.write_bytes(b"")
    try:
        log = ChunkLog(spill=True)
        assert not dead.exists()
        assert alive.exists() and other.exists()
        assert Path(log.spill_path).name.startswith(f"raypipe-chunks-{os.getpid()}-")
        log.close()
    finally:
        for path in (dead, alive, other):
            path.unlink(missing_ok=True)
