"""How many worker processes a driver that stays has started for its next run, and where
(raypipe/distributed/prestart.py). That the next run's actors take them is checked on real
Rays in tests/deploy/test_serve.py and tests/distributed/test_ray_pipeline.py."""

from __future__ import annotations

import time

import pytest
import ray

from raypipe.distributed.prestart import KEEP_ALIVE_S, next_run_processes, prestart_workers
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


def test_processes_started_before_and_not_taken_are_not_asked_for_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every completed run asked for its whole pool again: a one-chunk video's run takes
    one process of the two asked for, so a notebook's 20 runs held 21 idle processes
    (2.1 GiB) and Ray printed its warning about them (a sweep). A driver asks only for
    those missing."""
    from raypipe.distributed import prestart

    asks: list[dict[str, int]] = []

    def ask(per_node: dict[str, int], **_: object) -> dict[str, int]:
        asks.append({k: v for k, v in per_node.items() if v > 0})
        return asks[-1]

    monkeypatch.setattr(prestart, "_ask", ask)
    monkeypatch.setattr(prestart, "_STARTED", {})
    one_chunk = run([chunk("a", "1")], 2)  # a pool of 2, one actor ran
    assert prestart.start_for_next_run(one_chunk) == 2  # the first: the whole pool
    for _ in range(5):  # then the one each run took
        assert prestart.start_for_next_run(one_chunk) == 1
    assert prestart._STARTED["a"][0] == 2
    both = run([chunk("a", "1"), chunk("a", "2")], 2)
    assert prestart.start_for_next_run(both) == 2
    assert asks == [{"a": 2}] + [{"a": 1}] * 5 + [{"a": 2}]
    # nothing asked: the node keeps the time of its last ask, when its processes began
    monkeypatch.setattr(prestart, "_STARTED", {"a": (3, 5.0)})
    monkeypatch.setattr(time, "monotonic", lambda: 10.0)
    assert prestart.start_for_next_run(one_chunk) == 0
    assert prestart._STARTED == {"a": (2, 5.0)}
    monkeypatch.undo()
    monkeypatch.setattr(prestart, "_ask", ask)
    # processes asked for KEEP_ALIVE_S ago may have ended: the whole pool again
    monkeypatch.setattr(prestart, "_STARTED", {"a": (2, time.monotonic() - KEEP_ALIVE_S)})
    assert prestart.start_for_next_run(one_chunk) == 2
    # a node that did not answer holds none
    monkeypatch.setattr(prestart, "_ask", lambda per_node, **_: {})
    monkeypatch.setattr(prestart, "_STARTED", {})
    assert prestart.start_for_next_run(one_chunk) == 0 and prestart._STARTED == {}
