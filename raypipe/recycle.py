"""Memory a process has touched before, used again: arrays handed out again once nothing
else holds them, and freed memory kept for the next allocations.

An inference actor writes each chunk's output frames into one array, and a decode task each
chunk's decoded frames; Ray copies them into its object store when the call returns. A new
array per chunk is memory the process takes new from the kernel and touches page by page
(a 720p chunk of 60 frames is 166 MB), which on the 2-core VM of benchmarks/README.md cost
several times what refilling touched memory did. :class:`RecycledArrays` hands the same
array out again for the next chunk of that shape, but only once nothing outside the pool
references it: a view of it, the Arrow buffer Ray Data wrapped around it, a consumer's
variable. Otherwise it gives a new array, so a result still in use is never written over.
:func:`keep_freed_memory` does the same for the smaller blocks FFmpeg and x264 allocate
and free for every chunk.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence

import numpy as np

Allocate = Callable[[tuple[int, ...], np.dtype], np.ndarray]
"""What makes a chunk's array, ``(shape, dtype) -> array``: ``np.empty``, or
:meth:`RecycledArrays.empty`."""


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
        else references, or the first entries of a longer one (a video's short last chunk:
        the view holds the kept array until it is dropped), or a new one (kept in place of
        the oldest when the pool is full)."""
        shape, dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        with self._lock:
            longer = None
            for i in range(len(self._slots)):
                # the count first: a local name for the array would be one more reference
                if sys.getrefcount(self._slots[i]) != self._free_count:
                    continue
                kept_shape = self._slots[i].shape
                if self._slots[i].dtype != dtype or not shape or kept_shape[1:] != shape[1:]:
                    continue
                if kept_shape[0] == shape[0]:
                    return self._slots[i]
                if kept_shape[0] > shape[0]:
                    longer = i
            if longer is not None:
                return self._slots[longer][: shape[0]]
            array = np.empty(shape, dtype=dtype)
            self._slots.append(array)
            del self._slots[: -self._keep]
            return array


_small_pages: bool | None = None  # None: not asked in this process


def small_pages() -> bool:
    """Have numpy leave the arrays this process makes on the kernel's ordinary pages
    (an inference actor and each decode or encode task call it before their first array).
    numpy asks Linux for transparent huge pages (``madvise(MADV_HUGEPAGE)``) on every
    array of 4 MiB or more; where the kernel's setting is ``madvise`` (the common default)
    a fault in such a range waits while the kernel compacts memory into a free 2 MiB page.
    On the 2-core VM of benchmarks/README.md (session 40) a new 500 MB array took 2.6 s of
    system CPU to fill that way against 0.27 s on 4 KiB pages, and a 4K chunk's first
    decode 2.1-3.4 s against 0.54 s (its later chunks, into the same array, 0.35 s);
    raypipe's large arrays are each filled again chunk after chunk (:class:`RecycledArrays`),
    so the fewer TLB misses of huge pages would gain little. The same as
    ``NUMPY_MADVISE_HUGEPAGE=0`` in the environment, for arrays made from now on. Once per
    process; ``False`` where this numpy has no such switch."""
    global _small_pages
    if _small_pages is None:
        try:
            from numpy._core.multiarray import _set_madvise_hugepage
        except ImportError:  # numpy 1.x
            try:
                from numpy.core.multiarray import _set_madvise_hugepage
            except ImportError:
                _set_madvise_hugepage = None
        _small_pages = _set_madvise_hugepage is not None
        if _set_madvise_hugepage is not None:
            _set_madvise_hugepage(False)
    return _small_pages


TASK_MMAP_THRESHOLD = 32 << 20
TASK_TRIM_THRESHOLD = 256 << 20
_malloc_tuned: bool | None = None  # None: not tried in this process


def keep_freed_memory() -> bool:
    """Have glibc's allocator keep memory this process frees for its next allocations, up to
    a bound, instead of handing it back to the kernel at once (a decode or encode task
    process calls it before its first chunk). Blocks under :data:`TASK_MMAP_THRESHOLD`
    (a 4K frame is 25 MB) come from the heap, and up to :data:`TASK_TRIM_THRESHOLD` of free
    heap stays with the process: the encoder's frames and buffers, made again for every
    segment, and the decoder's converted frames then land in memory the process has already
    touched. glibc's own defaults start both at 128 KiB and raise them only as large blocks
    are freed, so a new encoder's buffers mostly came from fresh pages (720p, veryfast, one
    thread: 109-161 against 49-59 page faults and 20.1-21.3 against 18.7-19.5 ms of CPU a
    frame; benchmarks/README.md, session 15). Once per process; ``False`` where the C
    library is not glibc (nothing is changed). Calls :func:`small_pages` too."""
    global _malloc_tuned
    small_pages()
    if _malloc_tuned is None:
        _malloc_tuned = _mallopt()
    return _malloc_tuned


def _mallopt() -> bool:
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # malloc.h
    return bool(
        libc.mallopt(m_mmap_threshold, TASK_MMAP_THRESHOLD)
        and libc.mallopt(m_trim_threshold, TASK_TRIM_THRESHOLD)
    )
