"""Each inference actor is pinned to one GPU (``CUDA_VISIBLE_DEVICES``, its processor's
sessions too), and ``workers_per_gpu`` k puts k actors on each: on a local Ray with two
logical GPUs whose workers get the fault hooks' directories (raypipe.faults), so that each
test holds inference until every actor has begun it (tests/holds.py): left alone, the last
actor up may find the chunks all done (CI saw three of four actors do a 30-chunk clip)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import ray
from conftest import assert_exact, init_local_ray, lossless_options
from holds import inference_held

import raypipe
from raypipe.faults import HOLD_ENV, RECORD_ENV, Attempt


@pytest.fixture(scope="module")
def hooked_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(attempts, holds): the directories the workers record attempts in and wait on."""
    attempts, holds = tmp_path_factory.mktemp("attempts"), tmp_path_factory.mktemp("holds")
    if ray.is_initialized():
        ray.shutdown()
    init_local_ray(runtime_env={"env_vars": {RECORD_ENV: str(attempts), HOLD_ENV: str(holds)}})
    try:
        yield attempts, holds
    finally:
        ray.shutdown()


def run_spread(
    hooked_ray: tuple[Path, Path], actors: int, source: Path, out: Path, **options: Any
) -> tuple[dict[str, Any], list[str]]:
    """``process_video`` with inference held until ``actors`` actors (processes) have begun
    it: the run's stats and how the hold went."""
    stats_path = out.with_name("stats.json")

    def enough(inferred: list[Attempt]) -> bool:
        return len({a.pid for a in inferred}) >= actors

    with inference_held(*hooked_ray, enough, f"{actors} actors inferred") as hold:
        raypipe.process_video(
            str(source), str(out), quiet=True, stats_path=str(stats_path), **options
        )
    return json.loads(stats_path.read_text()), hold


def test_two_actors_each_pinned_to_its_gpu(
    hooked_ray: tuple[Path, Path], clips: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out.mp4"
    doc, hold = run_spread(
        hooked_ray, 2, clips["bframes_aac"], out, **lossless_options(),
        model="builtin:invert", chunk_frames=4, workers=2,
    )  # fmt: skip
    chunks = doc["chunks"]
    assert doc["totals"]["frames"] == 48 and doc["totals"]["chunks"] == len(chunks) == 12
    assert [c["index"] for c in chunks] == list(range(12))
    by_actor: dict[str, set[str]] = {}
    for c in chunks:
        assert len(c["gpu_ids"]) == 1, c
        assert c["cuda_visible_devices"] == c["gpu_ids"][0]
        assert c["decode_s"] >= 0 and c["infer_s"] >= 0 and c["encode_s"] >= 0
        assert c["decode_cpu_s"] > 0 and c["infer_cpu_s"] > 0 and c["encode_cpu_s"] > 0
        assert c["pixels"] == "host", c  # the CPU's measured choice (benchmarks/pixels.py)
        assert c["decode_node"] and c["infer_node"] and c["encode_node"]
        # decode and encode are tasks of their own, not fused into the actor
        assert c["decode_pid"] != c["infer_pid"] != c["encode_pid"]
        by_actor.setdefault(c["actor_id"], set()).add(c["cuda_visible_devices"])
    assert len(by_actor) == 2, f"chunks ran on {len(by_actor)} actors, expected both: {hold}"
    gpus = [next(iter(v)) for v in by_actor.values()]
    assert all(len(v) == 1 for v in by_actor.values()) and sorted(gpus) == ["0", "1"]
    assert_exact(clips["bframes_aac"], out, "builtin:invert")


def test_two_workers_per_gpu_give_four_actors_two_per_gpu(
    hooked_ray: tuple[Path, Path], clips: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out.mp4"
    doc, hold = run_spread(
        hooked_ray, 4, clips["open_gop"], out, **lossless_options(),  # 19 chunks: more
        model="builtin:invert", chunk_frames=3, workers_per_gpu=2,  # than 3 held actors take
    )  # fmt: skip
    assert doc["totals"]["workers"] == 4 and doc["totals"]["chunks"] > 3 * 2
    per_actor = {c["actor_id"]: c["cuda_visible_devices"] for c in doc["chunks"]}
    assert len(per_actor) == 4, f"chunks ran on {len(per_actor)} actors, expected 4: {hold}"
    assert sorted(per_actor.values()) == ["0", "0", "1", "1"]
    assert_exact(clips["open_gop"], out, "builtin:invert")


PINNING = """
import os
import numpy as np
import raypipe

class WhereAmI(raypipe.Processor):
    output = "tensor"

    def setup(self, ctx):
        self.ctx = ctx
        self.session = ctx.session("builtin:invert", input_size=(96, 160))
        self.visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")

    def __call__(self, frames):
        n = len(frames)
        record = self.ctx.records[0]
        return {
            "gpu_id": np.full(n, int(self.ctx.gpu_ids[0])),
            "device": np.array([self.ctx.device] * n),
            "visible": np.array([self.visible] * n),
            "session_visible": np.array([record["cuda_visible_devices"]] * n),
            "batch": np.full(n, n),  # frames in this call
        }
"""


def test_processors_and_their_sessions_use_their_own_logical_gpu(
    hooked_ray: tuple[Path, Path], clips: dict[str, Path], tmp_path: Path
) -> None:
    path = tmp_path / "where.py"
    path.write_text(PINNING)
    out = tmp_path / "out"
    doc, hold = run_spread(
        hooked_ray, 2, clips["bframes_aac"], out, processor=f"{path}:WhereAmI", chunk_frames=3,
        batch_size=2, workers=2,
    )  # fmt: skip
    actors: dict[str, set[str]] = {}
    for chunk in doc["chunks"]:
        (gpu,) = chunk["gpu_ids"]
        assert chunk["cuda_visible_devices"] == gpu
        (session,) = chunk["sessions"]  # built in setup, on the actor's own device
        assert session["cuda_visible_devices"] == gpu and session["model"] == "builtin:invert"
        actors.setdefault(chunk["actor_id"], set()).add(gpu)
    assert len(actors) == 2, f"chunks ran on {len(actors)} actors, expected both: {hold}"
    assert sorted(g for v in actors.values() for g in v) == ["0", "1"]
    table = pq.read_table(next(out.rglob("part-0.parquet"))).to_pydict()
    assert len(table["gpu_id"]) == 48 and set(table["device"]) == {"cuda:0"}
    for gpu, visible, session in zip(table["gpu_id"], table["visible"], table["session_visible"]):
        assert visible == session == str(gpu)
    assert sorted(set(table["gpu_id"])) == [0, 1]
    assert sorted(table["batch"]) == [1] * 16 + [2] * 32  # chunks of 3 in calls of 2 + 1
