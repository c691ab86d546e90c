"""RecycledArrays: an actor's chunk output array is handed out again only once nothing but
the pool holds it; a result still in use is never written over."""

from __future__ import annotations

import platform
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from raypipe.distributed.actors import _ModelRunner
from raypipe.infer.builtin import builtin_bytes
from raypipe.infer.models import FrameModel
from raypipe.recycle import RecycledArrays


def test_a_free_array_is_handed_out_again() -> None:
    pool = RecycledArrays()
    first = pool.empty((4, 5, 3), np.uint8)
    address = first.ctypes.data
    del first
    again = pool.empty((4, 5, 3), np.uint8)
    assert again.ctypes.data == address


def test_an_array_still_referenced_is_not_handed_out() -> None:
    pool = RecycledArrays()
    held = pool.empty((4, 5, 3), np.uint8)
    held[...] = 7
    other = pool.empty((4, 5, 3), np.uint8)
    assert not np.shares_memory(other, held)
    assert (held == 7).all()


@pytest.mark.parametrize("holder", ["view", "arrow"])
def test_a_view_or_an_arrow_buffer_keeps_the_array_in_use(holder: str) -> None:
    """What a batch (a view) and Ray Data's zero-copy block (an Arrow buffer) hold."""
    pool = RecycledArrays()
    array = pool.empty((2, 6, 3), np.uint8)
    array[...] = 1
    held = array[None] if holder == "view" else pa.py_buffer(array)
    address = array.ctypes.data
    del array
    got = pool.empty((2, 6, 3), np.uint8)
    got[...] = 9
    assert got.ctypes.data != address
    assert np.frombuffer(held, np.uint8).max() == 1 if holder == "arrow" else (held == 1).all()
    del got, held  # the newest is kept; once free it is handed out again
    newest = pool._slots[0].ctypes.data
    assert pool.empty((2, 6, 3), np.uint8).ctypes.data == newest


def test_a_shorter_chunk_gets_the_first_entries_of_a_free_longer_array() -> None:
    """A video's last chunk is often shorter: it is written into the memory of the last
    full one, and that array is not handed out while the short one is held."""
    pool = RecycledArrays()
    full = pool.empty((6, 4, 3), np.uint8)
    address = full.ctypes.data
    held = pool.empty((6, 4, 3), np.uint8)  # full is in use: a new array
    assert held.ctypes.data != address
    del held, full  # the pool keeps the newest
    address = pool._slots[0].ctypes.data
    short = pool.empty((2, 4, 3), np.uint8)
    assert short.shape == (2, 4, 3) and short.ctypes.data == address
    short[...] = 5
    other = pool.empty((6, 4, 3), np.uint8)
    assert not np.shares_memory(other, short) and (short == 5).all()
    assert pool.empty((2, 5, 3), np.uint8).ctypes.data != address  # other frame size


def test_another_shape_or_dtype_gets_a_new_array_and_the_pool_keeps_its_bound() -> None:
    pool = RecycledArrays(keep=2)
    a = pool.empty((3,), np.uint8)
    address = a.ctypes.data
    del a
    b = pool.empty((4,), np.uint8)
    c = pool.empty((3,), np.uint16)
    assert b.ctypes.data != address and c.ctypes.data != address
    del b, c
    # keep=2: the (3,) uint8 array was dropped for the two newer ones
    assert len(pool._slots) == 2
    assert all(s.shape != (3,) or s.dtype != np.uint8 for s in pool._slots)


def test_the_actor_runner_writes_over_an_output_only_once_it_is_released() -> None:
    model = FrameModel(builtin_bytes("invert"), device="cpu")
    runner = _ModelRunner(model, 2, tensor=False)
    rng = np.random.default_rng(0)
    chunks = [rng.integers(0, 256, (5, 8, 12, 3), dtype=np.uint8) for _ in range(3)]
    first = runner.run(chunks[0])
    np.testing.assert_array_equal(first, 255 - chunks[0])
    address = first.ctypes.data
    del first  # released (Ray has copied it out): the next chunk is written into it
    blocker = np.empty_like(chunks[0])  # where freed memory would go; the kept array does not
    second = runner.run(chunks[1])
    assert second.ctypes.data == address
    np.testing.assert_array_equal(second, 255 - chunks[1])
    third = runner.run(chunks[2])  # the second is still held: a new array
    assert not np.shares_memory(second, third)
    np.testing.assert_array_equal(second, 255 - chunks[1])
    np.testing.assert_array_equal(third, 255 - chunks[2])
    del blocker


_REFILL_FAULTS = """
import ctypes, resource, sys
from raypipe.recycle import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 24 << 20  # an encoder's worth of frames, under the 32 MiB threshold
def faults_of_one_block():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults_of_one_block()
print(faults_of_one_block())
"""


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_a_task_process_fills_freed_memory_again_without_new_pages() -> None:
    """After :func:`keep_freed_memory` a block freed and asked for again is the same memory
    (a handful of page faults); with glibc's defaults it comes from new pages (thousands)."""

    def refill_faults(mode: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", _REFILL_FAULTS, mode], capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        return int(run.stdout)

    assert refill_faults("kept") < 200
    assert refill_faults("default") > 3000  # 24 MiB of 4 KiB pages is 6144


_HUGE_PAGE_FLAG = """
import sys
import numpy as np
from raypipe.recycle import keep_freed_memory, small_pages
if sys.argv[1] == "small":
    assert small_pages()
if sys.argv[1] == "task":  # what a decode or encode stage calls first
    keep_freed_memory()
array = np.ones(64 << 20, dtype=np.uint8)
address = array.ctypes.data + (32 << 20)
flags = []
with open("/proc/self/smaps") as smaps:
    inside = False
    for line in smaps:
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            low, high = (int(x, 16) for x in head.split("-"))
            inside = low <= address < high
        elif inside and head == "VmFlags:":
            flags = line.split()[1:]
print("hg" in flags)
"""


@pytest.mark.skipif(platform.system() != "Linux", reason="Linux's /proc/self/smaps")
def test_small_pages_stops_numpy_asking_for_huge_pages() -> None:
    """numpy marks a large array's pages for transparent huge pages (``hg`` in the
    mapping's ``VmFlags``) unless :func:`small_pages` was called in the process, as a
    decode or encode stage does through :func:`keep_freed_memory`."""

    def huge_page_flag(mode: str) -> bool:
        run = subprocess.run(
            [sys.executable, "-c", _HUGE_PAGE_FLAG, mode], capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        return run.stdout.strip() == "True"

    if not huge_page_flag("default"):
        pytest.skip("this kernel or numpy does not mark large arrays for huge pages")
    assert not huge_page_flag("small")
    assert not huge_page_flag("task")


def test_the_warm_up_touches_the_first_chunks_output_array() -> None:
    """Touched while the first chunk decodes: the first chunk (or a shorter one) is written
    into it rather than into memory new to the process."""
    model = FrameModel(builtin_bytes("invert"), device="cpu")
    runner = _ModelRunner(model, 2, tensor=False)
    runner.warmup(8, 12, frames=5)
    (kept,) = runner.outputs._slots
    assert kept.shape == (5, 8, 12, 3) and not kept.any()
    address = kept.ctypes.data
    del kept
    chunk = np.random.default_rng(1).integers(0, 256, (4, 8, 12, 3), dtype=np.uint8)
    out = runner.run(chunk)
    np.testing.assert_array_equal(out, 255 - chunk)
    assert out.ctypes.data == address
    runner_without = _ModelRunner(model, 2, tensor=False)
    runner_without.warmup(8, 12)  # chunk length not known: nothing touched
    assert runner_without.outputs._slots == []


@pytest.mark.parametrize("name", ["sharpen", "invert"])
def test_a_fused_runner_writes_the_frames_over_the_chunks_own(name: str) -> None:
    """A fused actor's runner (``over_input``) writes each batch's frames where its input
    frames were, once the model has read them: the same frames as into a new array, and no
    output array kept or touched at the warm-up."""
    model = FrameModel(builtin_bytes(name), device="cpu")
    chunk = np.random.default_rng(2).integers(0, 256, (5, 16, 24, 3), dtype=np.uint8)
    expected = _ModelRunner(model, 2, tensor=False).run(chunk.copy())
    runner = _ModelRunner(model, 2, tensor=False, over_input=True)
    runner.warmup(16, 24, frames=5)
    assert runner.outputs._slots == []
    frames = chunk.copy()
    out = runner.run(frames, into=frames)
    assert out is frames
    np.testing.assert_array_equal(out, expected)
    assert runner.outputs._slots == []


def test_frames_of_another_shape_go_into_an_array_of_their_own() -> None:
    """An upscaling model's frames cannot go over the chunk's: they get their own array and
    the chunk is left as it was."""
    model = FrameModel(builtin_bytes("upscale2x"), device="cpu")
    chunk = np.random.default_rng(3).integers(0, 256, (5, 8, 12, 3), dtype=np.uint8)
    expected = _ModelRunner(model, 2, tensor=False).run(chunk.copy())
    frames = chunk.copy()
    out = _ModelRunner(model, 2, tensor=False, over_input=True).run(frames, into=frames)
    assert out.shape == (5, 16, 24, 3) and not np.shares_memory(out, frames)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(frames, chunk)
