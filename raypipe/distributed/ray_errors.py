"""Ray's errors unwrapped: a raypipe error raised in a worker reaches the caller typed.

Ray wraps what a task or actor raises (its ``RayTaskError(X)`` even subclasses X, with the
original in ``.cause``); :func:`raypipe_cause` finds the raypipe error inside, and
:func:`iter_rows` iterates a dataset's rows raising it instead of Ray's wrapper.
"""

from __future__ import annotations

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
    return None


def iter_rows(ds: Any) -> Iterator[dict[str, Any]]:
    """The rows of ``ds`` (dicts), block by block as Ray Data hands them over, with a
    raypipe error from a worker raised as itself.

    Not ``ds.iter_rows()``: its batch iterator sends the whole dataset's stats (a record per
    block: 1.4 MB at 2000 rows) to Ray Data's stats actor every 5 s, an argument big enough
    that the driver writes it into the object store, each time on other pages as the store
    churns, and those pages stay in the driver's RSS (about 5 kB a row over an archive run;
    benchmarks/README.md, "Archives"). Fetching each block of small rows with ``ray.get``
    touches no store page (small task outputs come back inline).
    """
    import ray
    from ray.data.block import BlockAccessor

    try:
        for bundle in ds.iter_internal_ref_bundles():
            for ref in bundle.block_refs:
                block = BlockAccessor.for_block(ray.get(ref))
                yield from block.iter_rows(public_row_format=True)
    except RaypipeError:
        raise
    except Exception as e:  # noqa: BLE001 - Ray wraps worker errors; surface ours typed
        cause = raypipe_cause(e)
        if cause is not None:
            raise cause from e
        raise
