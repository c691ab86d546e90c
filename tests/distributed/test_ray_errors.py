"""raypipe.distributed.ray_errors.iter_rows: how it stops Ray Data's executor when left."""

from __future__ import annotations

from typing import Any

import pytest

from raypipe.distributed import ray_errors


class _Executor:
    def __init__(self) -> None:
        self.ended: list[BaseException | None] = []

    def shutdown(self, force: bool, exception: BaseException | None) -> None:
        self.ended.append(exception)


def _fake(monkeypatch: pytest.MonkeyPatch, executor: _Executor, rows: int) -> None:
    """``iter_rows`` over ``rows`` bundles of one block of one row each."""
    import ray

    class Bundle:
        block_refs = ["ref"]

    class Block:
        def iter_rows(self, public_row_format: bool) -> Any:
            yield {"row": 1}

    def bundles(ds: Any) -> tuple[Any, _Executor]:
        return iter([Bundle()] * rows), executor

    monkeypatch.setattr(ray_errors, "_bundles", bundles)
    monkeypatch.setattr(ray_errors, "drop_block_stats", lambda e: None)
    monkeypatch.setattr(ray, "get", lambda ref: Block())
    monkeypatch.setattr("ray.data.block.BlockAccessor.for_block", lambda b: b)


def test_a_caller_that_closes_the_rows_ends_the_run_well(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner closes the rows once every video is in: the executor was stopped with the
    GeneratorExit as its exception, and Ray Data said "Dataset ... execution failed" after
    every good run (on the terminal with verbose, or with two runs in threads)."""
    executor = _Executor()
    _fake(monkeypatch, executor, rows=3)
    rows = ray_errors.iter_rows(None)
    assert next(rows) == {"row": 1}
    rows.close()
    assert executor.ended == [None]
    failing = _Executor()
    _fake(monkeypatch, failing, rows=3)
    rows = ray_errors.iter_rows(None)
    next(rows)
    with pytest.raises(ValueError):
        rows.throw(ValueError("the caller's error"))
    assert [type(e) for e in failing.ended] == [ValueError], "an error still says it failed"
