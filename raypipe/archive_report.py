"""An archive run's report: one row per input video, as Parquet, a terminal table and the
numbers behind the run report figure (:mod:`raypipe.report` draws it).

Kept apart from the Ray pipeline: reading, printing and drawing a report needs neither Ray
nor a cluster (``raypipe report``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from raypipe import storage

if TYPE_CHECKING:
    from raypipe.distributed.planning import VideoResult

EXIT_ALL_DONE = 0
EXIT_SOME_FAILED = 3
REPORT_NAME = "_raypipe-report.parquet"
REPORT_EVERY_S = 10.0
REPORT_AT_LEAST_S = 60.0
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
    provider_notes: list[str] = field(default_factory=list)
    gpu: dict[str, Any] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(1 for r in self.rows if r["status"] == status)

    @property
    def exit_code(self) -> int:
        return EXIT_SOME_FAILED if self.count("failed") else EXIT_ALL_DONE

    def __repr__(self) -> str:
        # the dataclass's own held every row: megabytes for a large archive in a notebook
        return (
            f"ArchiveReport(path={self.path!r}, videos={len(self.rows)}, "
            f"done={self.count('done')}, skipped={self.count('skipped')}, "
            f"failed={self.count('failed')}, wall_seconds={self.wall_seconds:.2f}, "
            f"exit_code={self.exit_code})"
        )


class ReportJournal:
    """The report's rows as videos finish, written to the report path (atomically) when
    the first video ends, then at most every :data:`REPORT_EVERY_S` once a quarter more
    rows have come (so a long archive rewrites its report a few dozen times, not once per
    10 s whatever its size) and at least every :data:`REPORT_AT_LEAST_S` while rows come
    (a driver killed at 8000 rows waited for 10000: hours of rows; a sweep), and by
    :meth:`write` when the run stops early (Ctrl-C, an error). Until every input has its
    row, the previous report's row stands for each input this run has not reached yet,
    noted so: an interrupted rerun no longer cuts the report down to the videos it got to
    (their outputs are still there, and so are their attempts). A crash keeps the rows of
    the last write."""

    def __init__(
        self, path: str, previous: dict[str, dict[str, Any]], order: dict[str, int]
    ) -> None:
        self.path, self.order = path, order
        self.previous = {uri: row for uri, row in previous.items() if uri in order}
        self._attempts = {uri: int(row.get("attempts") or 0) for uri, row in previous.items()}
        self._rows: list[dict[str, Any]] = []
        self._written = -float("inf")
        self._written_rows = 0

    def add(self, result: VideoResult) -> None:
        self._rows.append(report_row(result, self._attempts))
        since = time.monotonic() - self._written
        grown = len(self._rows) >= 1.25 * self._written_rows
        if since >= REPORT_EVERY_S and (grown or since >= REPORT_AT_LEAST_S):
            self.write()
            self._written, self._written_rows = time.monotonic(), len(self._rows)

    def write(self, unfinished: set[str] | frozenset[str] = frozenset()) -> None:
        """Write the rows so far (with the previous report's for inputs not reached; of
        those, the ``unfinished`` ones were begun when the run stopped)."""
        write_report(ArchiveReport(rows=self.rows(unfinished), path=self.path))

    @property
    def reached(self) -> int:
        """How many videos this run has a row for."""
        return len(self._rows)

    def rows(self, unfinished: set[str] | frozenset[str] = frozenset()) -> list[dict[str, Any]]:
        """The rows so far, in input order, and the previous report's row of each input
        this run has not reached (noted :data:`UNFINISHED` where it was begun, in
        ``unfinished``)."""
        reached = {r["uri"] for r in self._rows}
        earlier = [
            {
                **row,
                "note": join_notes(
                    row.get("note"), UNFINISHED if uri in unfinished else NOT_REACHED
                ),
            }
            for uri, row in self.previous.items()
            if uri not in reached
        ]
        return sorted(self._rows + earlier, key=lambda r: self.order.get(r["uri"], len(self.order)))


NOT_REACHED = (
    "row of an earlier run: the last run had not reached this video when it wrote this report"
)
UNFINISHED = (
    "row of an earlier run: the last run stopped while this video was in progress (its "
    "output may have been finished after the stop; the next run checks it)"
)


def join_notes(note: str | None, more: str) -> str:
    """``note`` and ``more`` as one note (``more`` once)."""
    if not note or more in note:
        return note or more
    return f"{note}; {more}"


def report_row(result: VideoResult, previous: dict[str, int]) -> dict[str, Any]:
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


def previous_rows(report_path: str) -> dict[str, dict[str, Any]]:
    """The rows of the report at ``report_path`` by input, or none when there is none (or
    it cannot be read: that only loses attempt counts and the rows of inputs a stopped
    run does not reach)."""
    if not storage.exists(report_path):
        return {}
    try:
        return {r["uri"]: r for r in read_report(report_path)}
    except Exception:  # noqa: BLE001 - see the docstring
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


def format_report(
    rows: list[dict[str, Any]], *, width: int = 100, limit: int | None = None, path: str = ""
) -> str:
    """The report as a terminal table, failures with their error; at most ``limit`` rows
    (``None``: all), the failed first, then a line on how to see the rest (``path``: the
    report's, for ``raypipe report``)."""
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in ("done", "skipped", "failed")}
    lines = [f"{'status':<8} {'frames':>7} {'chunks':>6} {'secs':>7}  uri"]
    shown = _shown(rows, limit)
    for r in shown:
        lines.append(
            f"{r['status']:<8} {r['frames_out']:>7} {r['chunks']:>6} "
            f"{r['seconds']:>7.1f}  {r['uri']}"
        )
        details = [r.get("note") or ""]
        if r["status"] == "failed":
            details.insert(0, f"{r['error_type']}: {r['error_message']}")
        for detail in filter(None, details):
            lines.append(" " * 9 + (detail if len(detail) < width else detail[: width - 3] + "..."))
    if len(shown) < len(rows):
        lines.append(
            f"... {len(rows) - len(shown)} more rows: `raypipe report {path or 'REPORT'}` "
            "lists every one"
        )
    lines.append(
        f"{len(rows)} videos: {counts['done']} done, {counts['skipped']} skipped, "
        f"{counts['failed']} failed"
    )
    return "\n".join(lines)


def _shown(rows: list[dict[str, Any]], limit: int | None) -> list[dict[str, Any]]:
    """``rows`` in their order, at most ``limit`` of them: the failed ones first."""
    if limit is None or len(rows) <= limit:
        return rows
    order = sorted(range(len(rows)), key=lambda i: rows[i]["status"] != "failed")
    return [rows[i] for i in sorted(order[:limit])]


def run_report_path(report_path: str) -> str:
    """Where an archive's run report PNG goes: next to its Parquet report."""
    return report_path.removesuffix(".parquet") + ".png"


def stats_doc(
    report: ArchiveReport,
    workers: int,
    chunks: list[dict[str, Any]] | None = None,
    *,
    chunk_count: int | None = None,
    providers: list[str] | None = None,
) -> dict[str, Any]:
    """The ``--stats`` document of an archive run, with ``chunks`` as its chunk records
    (an archive's driver streams them from its chunk log instead: ``chunk_count`` says how
    many) and ``providers`` the ones the chunks ran on."""
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
            "chunks": len(chunks or []) if chunk_count is None else chunk_count,
            "providers": list(providers or []),
            "provider_notes": report.provider_notes,
        },
        "chunks": chunks or [],
        "gpu": report.gpu,
    }
