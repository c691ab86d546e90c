"""Run statistics: totals and one record per chunk, written as JSON by ``--stats``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

_CHUNK_FIELDS = (
    "chunk_id", "video_id", "index", "n_frames",
    "decode_node", "decode_pid", "decode_start", "decode_s", "decode_cpu_s", "decoder",
    "decode_carried",
    "decoder_note", "handoff", "handoff_note", "infer_node", "infer_pid", "actor_id",
    "cuda_visible_devices",
    "infer_start", "infer_s", "infer_cpu_s", "pixels",
    "encode_node", "encode_pid", "encode_start", "encode_s", "encode_cpu_s",
    "out_width", "out_height", "error_type", "error_message",
)  # fmt: skip


@dataclass
class RunStats:
    """What a run did: totals plus per-chunk placement and stage timings.

    ``input`` and ``output`` as the run took them (an analysis run's output: its folder);
    ``frames`` written, in ``chunks``, over ``wall_seconds`` (``fps`` of them) on
    ``workers`` inference actors, whose first ONNX Runtime providers are ``providers``
    (``provider_notes``: why not a better one); ``gpu``: NVML samples per GPU (GPU runs);
    ``assembly``: its seconds and whether the driver did it; ``chunk_stats``: a record per
    chunk (node, process, stage start and end times: what ``raypipe report`` draws).
    Shown (``repr``, a notebook's cell) as its totals: the chunk records are counted.
    """

    input: str
    output: str
    frames: int = 0
    chunks: int = 0
    wall_seconds: float = 0.0
    workers: int = 0
    providers: list[str] = field(default_factory=list)
    # why the actors did not get a better provider (TensorRT, then CUDA): missing libraries,
    # an old driver, a CPU build... (raypipe.infer.provider_check.provider_notes)
    provider_notes: list[str] = field(default_factory=list)
    gpu: dict[str, Any] = field(default_factory=dict)
    # the output's assembly: its seconds, and whether the driver did it (raypipe's local
    # Ray) rather than a Ray task (raypipe.distributed.assembly)
    assembly: dict[str, Any] = field(default_factory=dict)
    chunk_stats: list[dict[str, Any]] = field(default_factory=list)

    @property
    def actors_used(self) -> int:
        """The inference actors that ran chunks: fewer than ``workers`` where the cluster's
        free CPUs or GPUs held fewer (the result line said "on 2 workers" while one ran every
        chunk; a sweep)."""
        return len(
            {
                str(c.get("actor_id") or "") or f"{c.get('infer_node')}:{c.get('infer_pid')}"
                for c in self.chunk_stats
                if not c.get("error_type") and c.get("infer_pid") is not None
            }
        )

    @property
    def fps(self) -> float:
        """Frames written a second of the run's wall time."""
        return self.frames / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def __repr__(self) -> str:
        # the dataclass's own held every chunk record: kilobytes a chunk in a notebook
        return (
            f"RunStats(input={self.input!r}, output={self.output!r}, frames={self.frames}, "
            f"chunks={self.chunks}, wall_seconds={self.wall_seconds:.2f}, fps={self.fps:.1f}, "
            f"workers={self.workers}, providers={self.providers!r}, "
            f"chunk_stats=[{len(self.chunk_stats)} records])"
        )

    def add_chunks(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self.add_record(record)

    def add_record(self, record: dict[str, Any]) -> None:
        for provider in record["providers"][:1]:
            if provider not in self.providers:
                self.providers.append(provider)
        for note in take_provider_notes([record]):
            if note not in self.provider_notes:
                self.provider_notes.append(note)
        self.chunk_stats.append(record)

    def set_gpu(self, samples: list[dict[str, Any]], notes: list[str], *, uses_gpu: bool) -> None:
        self.gpu = gpu_stats(samples, notes, uses_gpu=uses_gpu)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        chunks = sorted(d.pop("chunk_stats"), key=lambda c: c["index"])
        gpu = d.pop("gpu")
        return {"totals": {**d, "fps": self.fps}, "chunks": chunks, "gpu": gpu}

    def write(self, path: str) -> None:
        # imported here: the run report's child process reads the chunk log through this
        # module, and storage's imports (PyAV, fsspec) were 0.4 s of its 1.5 s start
        from raypipe import storage

        storage.write_text(path, json.dumps(self.to_dict(), indent=2))


def gpu_stats(samples: list[dict[str, Any]], notes: list[str], *, uses_gpu: bool) -> dict[str, Any]:
    """The stats' ``gpu`` section: NVML samples per physical GPU (``t`` unix s, ``gpu``,
    ``node``, ``util`` %, ``mem_used`` bytes), or why there are none."""
    if samples:
        return {"available": True, "samples": sorted(samples, key=lambda s: s["t"])}
    if not uses_gpu:
        reason = "no GPU measured: the inference actors ran without GPUs"
    else:
        reason = "; ".join(notes) or "no GPU measured: no samples were taken"
    return {"available": False, "reason": reason, "samples": []}


def chunk_record(row: dict[str, Any]) -> dict[str, Any]:
    """The stats record of one chunk row as it reaches the driver (no frames, no segment)."""
    record = {k: _plain(row[k]) for k in _CHUNK_FIELDS if k in row}
    record["gpu_ids"] = json.loads(str(row.get("gpu_ids") or "[]"))
    record["providers"] = json.loads(str(row.get("providers") or "[]"))
    record["provider_notes"] = json.loads(str(row.get("provider_notes") or "[]"))
    sessions = json.loads(str(row.get("sessions") or "[]"))
    if sessions:  # a processor's sessions: model, providers asked/granted, device, GPUs seen
        record["sessions"] = sessions
    return record


def take_provider_notes(records: list[dict[str, Any]]) -> list[str]:
    """The distinct ``provider_notes`` of chunk records, in order, removed from the records
    (every chunk of an actor carries the same notes: the stats keep them once)."""
    notes: dict[str, None] = {}
    for record in records:
        notes.update(dict.fromkeys(record.pop("provider_notes", [])))
    return list(notes)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
