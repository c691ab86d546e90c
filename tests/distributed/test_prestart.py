"""How many worker processes a driver that stays has started for its next run, and where
(raypipe/distributed/prestart.py). That the next run's actors take them is checked on real
Rays in tests/deploy/test_serve.py and tests/distributed/test_ray_pipeline.py."""

from __future__ import annotations

import ray

from raypipe.distributed.prestart import next_run_processes, prestart_workers
from raypipe.distributed.stats import RunStats


def chunk(node: str, actor: str) -> dict[str, str]:
    return {"infer_node": node, "actor_id": actor}


def run(records: list[dict[str, str]], workers: int) -> RunStats:
    return RunStats(input="in.mp4", output="out.mp4", workers=workers, chunk_stats=records)


def test_the_pool_is_spread_over_the_nodes_its_chunks_ran_on() -> None:
    records = [chunk("a", "1"), chunk("a", "1"), chunk("b", "2")]
    assert next_run_processes(run(records, 5)) == {"a": 3, "b": 3}
    assert next_run_processes(run(records, 1)) == {"a": 1, "b": 1}


def test_a_node_gets_at_least_the_actors_that_ran_there() -> None:
    records = [chunk("a", str(i)) for i in range(4)] + [chunk("b", "9")]
    assert next_run_processes(run(records, 4)) == {"a": 4, "b": 2}


def test_chunks_no_actor_ran_ask_for_nothing() -> None:
    # reused chunks of a resumed run, a video that failed before any actor saw it
    assert next_run_processes(run([chunk("", ""), {}], 4)) == {}
    assert prestart_workers({}) == 0


def test_without_ray_nothing_is_asked_and_nothing_raised() -> None:
    assert not ray.is_initialized()
    assert prestart_workers({"a": 2}) == 0
