"""A run's chunk stats records, kept where the driver's memory does not grow with them.

A leaf: no Ray, so the child process that draws an archive's run report
(:mod:`raypipe.distributed.archive`) reads the spill file without importing Ray.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from raypipe.distributed.stats import take_provider_notes

SPILL_PREFIX, SPILL_SUFFIX = "raypipe-chunks-", ".jsonl.gz"


def sweep_spills(directory: str | None = None) -> None:
    """Remove the spill files (``raypipe-chunks-PID-*.jsonl.gz`` in the temporary
    directory) of drivers that are no longer running. A driver removes its own as it ends;
    one killed (SIGKILL: the out-of-memory killer, a lost node, ``ray job stop`` after its
    grace period) cannot, and its file stayed in /tmp for good. The next spilling run on
    the machine clears them."""
    from raypipe.storage import remove_orphans  # here: the report's child reads no storage

    remove_orphans(directory or tempfile.gettempdir(), SPILL_PREFIX, SPILL_SUFFIX)


class ChunkLog:
    """Every chunk's stats record of a run: kept in memory, or appended to a local gzipped
    JSON lines file (``spill``) so an archive's driver does not hold them all (and writes
    a few hundred bytes a chunk, not kilobytes). The actors' provider notes are taken out
    of the records as they come (``provider_notes``: each distinct note once, in order)."""

    def __init__(self, *, spill: bool = False) -> None:
        self._memory: list[dict[str, Any]] = []
        self._path = ""
        self._file: Any = None
        if spill:
            sweep_spills()
            fd, self._path = tempfile.mkstemp(
                prefix=f"{SPILL_PREFIX}{os.getpid()}-", suffix=SPILL_SUFFIX
            )
            os.close(fd)
        self.count = 0
        self._notes: dict[str, None] = {}
        self._providers: dict[str, None] = {}

    @property
    def provider_notes(self) -> list[str]:
        return list(self._notes)

    @property
    def providers(self) -> list[str]:
        """The providers the chunks ran on (each actor's best), in order of first use."""
        return list(self._providers)

    def add(self, record: dict[str, Any]) -> None:
        """Log ``record`` (not changed: a one-video run keeps it with its notes too)."""
        self.count += 1
        record = dict(record)
        self._notes.update(dict.fromkeys(take_provider_notes([record])))
        self._providers.update(dict.fromkeys(list(record.get("providers") or [])[:1]))
        if not self._path:
            self._memory.append(record)
            return
        if self._file is None:  # one gzip member per stretch of writes
            self._file = gzip.open(self._path, "at", compresslevel=6)
        self._file.write(json.dumps(record, default=str) + "\n")

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record so far, one at a time (read back from the file when spilled)."""
        if not self._path:
            yield from self._memory
            return
        yield from read_chunk_log(self.spill_path)

    @property
    def spill_path(self) -> str:
        """The spill file with every record so far (``""`` when kept in memory)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        return self._path

    def write_stats(self, doc: dict[str, Any], path: str) -> None:
        """Write the stats document ``doc`` with every record as its ``chunks`` to the
        local file ``path``, one record at a time (JSON, as ``--stats`` writes it)."""
        head = json.dumps({k: v for k, v in doc.items() if k != "chunks"}, indent=2)
        with open(path, "w") as f:
            f.write(head.removesuffix("\n}") + ',\n  "chunks": [')
            for i, record in enumerate(self.records()):
                f.write(("\n    " if i == 0 else ",\n    ") + json.dumps(record, default=str))
            f.write("\n  ]\n}\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._path and os.path.exists(self._path):
            os.unlink(self._path)


def read_chunk_log(path: str) -> Iterator[dict[str, Any]]:
    """The records of a :class:`ChunkLog`'s spill file, one at a time."""
    with gzip.open(path, "rt") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
