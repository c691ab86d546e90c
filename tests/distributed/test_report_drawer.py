"""The process that draws an archive's run report: started with the run, it imports no
Ray, draws from the chunk log once given the stats head, and is stopped when there is
nothing to draw; a failure to draw is a message, never the run's failure."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from raypipe.distributed.archive import _DRAW, _ReportDrawer
from raypipe.distributed.chunk_log import ChunkLog

PNG = b"\x89PNG\r\n\x1a\n"
COUNT = "sys.exit(f\"records read: {len(doc['chunks'])}\")"  # as the program's last line


class Messages:
    """What an ArchiveProgress is told (the drawer's only use of it)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def message(self, line: str) -> None:
        self.lines.append(line)


@pytest.fixture
def log() -> Iterator[ChunkLog]:
    log = ChunkLog(spill=True)
    for i in range(3):
        log.add({"index": i, "video_id": "v0", "frames": 4, "decode_s": 0.1, "infer_s": 0.2})
    yield log
    log.close()


def test_the_drawing_process_imports_no_ray(log: ChunkLog, tmp_path: Path) -> None:
    """Ray's import was most of the drawing process's start-up (about 1 s on 2 cores)."""
    target = tmp_path / "report.png"
    check = "; print('ray' in sys.modules, 'raypipe.distributed.runner' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", _DRAW + check, str(target), "raypipe archive"],
        input=json.dumps({"head": {"totals": {"videos": 1}}, "spill": log.spill_path}),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "False"]
    assert target.read_bytes()[:8] == PNG


def test_draws_once_given_the_head(log: ChunkLog, tmp_path: Path) -> None:
    target = tmp_path / "report.png"
    drawer = _ReportDrawer(str(target))
    log.add({"index": 3, "video_id": "v1", "frames": 4})  # a record added after it started
    messages = Messages()
    drawer.draw({"totals": {"videos": 2}}, log.spill_path, messages)  # type: ignore[arg-type]
    drawer.cancel()  # after a drawing: nothing left to stop
    assert messages.lines == []
    assert target.read_bytes()[:8] == PNG
    assert drawer.proc is not None and drawer.proc.returncode == 0


def test_reads_every_record_of_the_run(
    log: ChunkLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records logged after the process started are on disk when it reads them: its
    program, made to stop with the number of records it read, says 4."""
    import raypipe.distributed.archive as archive

    monkeypatch.setattr(archive, "_DRAW", _DRAW.split("draw_report(doc")[0] + COUNT)
    drawer = _ReportDrawer(str(tmp_path / "report.png"))
    log.add({"index": 3, "video_id": "v1", "frames": 4})
    messages = Messages()
    drawer.draw({"totals": {}}, log.spill_path, messages)  # type: ignore[arg-type]
    assert messages.lines == ["run report not drawn: records read: 4"]


def test_stopped_when_nothing_is_drawn(tmp_path: Path) -> None:
    target = tmp_path / "report.png"
    drawer = _ReportDrawer(str(target))
    drawer.cancel()
    assert drawer.proc is not None and drawer.proc.returncode is not None
    assert not target.exists()


def test_missing_matplotlib_is_a_message(
    log: ChunkLog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "site" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'matplotlib'\")")
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    target = tmp_path / "report.png"
    drawer = _ReportDrawer(str(target))
    messages = Messages()
    drawer.draw({"totals": {}}, log.spill_path, messages)  # type: ignore[arg-type]
    drawer.cancel()
    missing = "run report not drawn (matplotlib is missing); pip install matplotlib"
    assert messages.lines == [missing]
    assert not target.exists()
