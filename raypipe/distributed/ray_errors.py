"""Ray's errors unwrapped: a raypipe error raised in a worker reaches the caller typed.

Ray wraps what a task or actor raises (its ``RayTaskError(X)`` even subclasses X, with the
original in ``.cause``); :func:`raypipe_cause` finds the raypipe error inside, and
:func:`iter_rows` iterates a dataset raising it instead of Ray's wrapper.
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
    """``ds.iter_rows()``, with a raypipe error from a worker raised as itself."""
    try:
        yield from ds.iter_rows()
    except RaypipeError:
        raise
    except Exception as e:  # noqa: BLE001 - Ray wraps worker errors; surface ours typed
        cause = raypipe_cause(e)
        if cause is not None:
            raise cause from e
        raise
