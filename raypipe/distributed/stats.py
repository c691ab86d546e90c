"""Run statistics: totals and one record per chunk, written as JSON by ``--stats``."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Any

_CHUNK_FIELDS = (
    "chunk_id",
    "index",
    "n_frames",
    "decode_node",
    "decode_pid",
    "decode_start",
    "decode_s",
    "infer_node",
    "infer_pid",
    "actor_id",
    "cuda_visible_devices",
    "infer_start",
    "infer_s",
    "encode_node",
    "encode_pid",
    "encode_start",
    "encode_s",
    "out_width",
    "out_height",
)


@dataclass
class RunStats:
    """What a run did: totals plus per-chunk placement and stage timings."""

    input: str
    output: str
    frames: int = 0
    chunks: int = 0
    wall_seconds: float = 0.0
    workers: int = 0
    providers: list[str] = field(default_factory=list)
    chunk_stats: list[dict[str, Any]] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def add_chunk(self, row: dict[str, Any]) -> None:
        record = {k: _plain(row[k]) for k in _CHUNK_FIELDS if k in row}
        record["gpu_ids"] = json.loads(str(row.get("gpu_ids", "[]")))
        record["providers"] = json.loads(str(row.get("providers", "[]")))
        for provider in record["providers"][:1]:
            if provider not in self.providers:
                self.providers.append(provider)
        self.chunk_stats.append(record)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        chunks = sorted(d.pop("chunk_stats"), key=lambda c: c["index"])
        return {"totals": {**d, "fps": self.fps}, "chunks": chunks}

    def write(self, path: str) -> None:
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(self.to_dict(), f, indent=2)
        os.replace(tmp, path)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
