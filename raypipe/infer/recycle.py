"""Arrays handed out again once nothing else holds them.

An inference actor writes each chunk's output frames into one array, and Ray copies them
into its object store when the call returns; a new array per chunk is memory the process
has not touched since the kernel gave it, and touching it costs page faults (on the 2-core
VM of benchmarks/README.md, filling new memory cost several times what refilling reused
memory did). :class:`RecycledArrays` hands the same array out again for the next chunk of
that shape, but only once nothing outside the pool references it: a view of it, the Arrow
buffer Ray Data wrapped around it, a consumer's variable. Otherwise it gives a new array,
so a result still in use is never overwritten.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence

import numpy as np


def _references_when_free() -> int:
    """What :func:`sys.getrefcount` reports for an array referenced by nothing but a list
    slot, read the way :meth:`RecycledArrays.empty` reads it (interpreters differ in how
    they count the call's own reference)."""
    slots = [np.empty(1)]
    return sys.getrefcount(slots[0])


class RecycledArrays:
    """Up to ``keep`` arrays, each handed out again by :meth:`empty` for its shape and
    dtype when nothing but the pool holds it (a view holds its base). Thread-safe."""

    def __init__(self, keep: int = 1) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self._keep = keep
        self._slots: list[np.ndarray] = []
        self._free_count = _references_when_free()
        self._lock = threading.Lock()

    def empty(self, shape: Sequence[int], dtype: np.dtype | type) -> np.ndarray:
        """An array of ``shape`` and ``dtype`` with undefined contents: a kept one nothing
        else references, or a new one (kept in place of the oldest when the pool is full)."""
        shape, dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        with self._lock:
            for i in range(len(self._slots)):
                if (
                    self._slots[i].shape == shape
                    and self._slots[i].dtype == dtype
                    and sys.getrefcount(self._slots[i]) == self._free_count
                ):
                    return self._slots[i]
            array = np.empty(shape, dtype=dtype)
            self._slots.append(array)
            del self._slots[: -self._keep]
            return array
