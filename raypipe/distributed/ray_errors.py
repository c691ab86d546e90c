"""Ray's errors unwrapped: a raypipe error raised in a worker reaches the caller typed.

Ray wraps what a task or actor raises (its ``RayTaskError(X)`` even subclasses X, with the
original in ``.cause``); :func:`raypipe_cause` finds the raypipe error inside, and
:func:`iter_rows` iterates a dataset's rows raising it instead of Ray's wrapper.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from raypipe.errors import RaypipeError


def raypipe_cause(e: BaseException) -> RaypipeError | None:
    """The first :class:`RaypipeError` in ``e``'s chain (Ray's ``.cause`` preferred)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [e]
    while stack:
        err = stack.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        wrapped = getattr(err, "cause", None)
        if isinstance(wrapped, BaseException):
            stack.append(wrapped)
            continue
        if isinstance(err, RaypipeError):
            return err
        stack.extend([err.__cause__, err.__context__])
    return _named_in_text(str(e))


_NAMED = re.compile(r"^raypipe\.errors\.(\w+): (.+)$", re.MULTILINE)


def _named_in_text(text: str) -> RaypipeError | None:
    """The raypipe error a worker's traceback text ends with, rebuilt: Ray Data wraps what a
    map function raises in its ``UserCodeException``, and the error object does not travel
    with it, its traceback's text does (a ``ConfigError`` of ``raypipe.data`` came back as a
    screen of Ray's retry text; a sweep)."""
    from raypipe import errors

    found = _NAMED.findall(text)
    if not found:
        return None
    name, message = found[-1]
    cls = getattr(errors, name, None)
    if isinstance(cls, type) and issubclass(cls, RaypipeError):
        return cls(message)
    return None


def iter_rows(ds: Any) -> Iterator[dict[str, Any]]:
    """The rows of ``ds`` (dicts), block by block as Ray Data hands them over, with a
    raypipe error from a worker raised as itself.

    Not ``ds.iter_rows()``: its batch iterator sends the whole dataset's stats (a record per
    block: 1.4 MB at 2000 rows) to Ray Data's stats actor every 5 s, an argument big enough
    that the driver writes it into the object store, each time on other pages as the store
    churns, and those pages stay in the driver's RSS (about 5 kB a row over an archive run;
    benchmarks/README.md, "Archives"). Fetching each block of small rows with ``ray.get``
    touches no store page (small task outputs come back inline). The executor's per-block
    stats are dropped as the run goes (:func:`drop_block_stats`).

    Left before its end (an error, Ctrl-C or SIGTERM, a caller that closes it), it stops
    the executor itself, there and then: otherwise the executor stopped when the garbage
    collector came to it, after the command's last line, and Ray Data's own line about it
    ("Dataset ... execution finished") came after that, on the terminal.
    """
    import ray
    from ray.data.block import BlockAccessor

    executor = None
    try:
        bundles, executor = _bundles(ds)
        for i, bundle in enumerate(bundles):
            if i % STATS_EVERY == 0:
                drop_block_stats(executor)
            for ref in bundle.block_refs:
                block = BlockAccessor.for_block(ray.get(ref))
                yield from block.iter_rows(public_row_format=True)
    except BaseException as e:  # an error, Ctrl-C or SIGTERM, GeneratorExit: left early
        if executor is not None:  # a no-op if it has stopped
            # a caller that closes it (the runner, once every video is in) ends it well:
            # as an exception, Ray Data said "execution failed" after each good run
            ended = None if isinstance(e, GeneratorExit) else e
            with contextlib.suppress(Exception):  # the error that ended the run stands
                executor.shutdown(force=False, exception=ended)
        if isinstance(e, Exception) and not isinstance(e, RaypipeError):
            cause = raypipe_cause(e)  # Ray wraps worker errors: surface ours typed
            if cause is not None:
                raise cause from e
        raise


STATS_EVERY = 64
"""Output blocks between two :func:`drop_block_stats` calls."""


def _bundles(ds: Any) -> tuple[Iterator[Any], Any]:
    """``ds``'s output ref bundles, and the executor that makes them where this Ray version
    hands it out (``None`` otherwise)."""
    execute = getattr(ds, "_execute_to_iterator", None)
    if execute is None:
        return ds.iter_internal_ref_bundles(), None
    bundles, _, executor = execute()
    return bundles, executor


def drop_block_stats(executor: Any) -> None:
    """Empty the list of per-block stats each operator of Ray Data's ``executor`` keeps.

    Every output block of every map operator adds a record to it (its execution stats:
    about 10 objects, 0.4 kB), kept until the run ends only to build ``Dataset.stats()``,
    which raypipe does not use (its own chunk records go to a :class:`ChunkLog`). Over an
    archive every chunk is a block in four operators: 6.5 MiB of the driver's Python
    memory at 2000 videos (tracemalloc), growing with the archive. A Ray version without
    that list is left as it is."""
    for op in getattr(executor, "_topology", None) or ():
        stats = getattr(op, "_output_blocks_stats", None)
        if isinstance(stats, list):
            stats.clear()
