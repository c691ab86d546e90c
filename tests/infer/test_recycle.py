"""RecycledArrays: an actor's chunk output array is handed out again only once nothing but
the pool holds it; a result still in use is never written over."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from raypipe.distributed.actors import _ModelRunner
from raypipe.infer.builtin import builtin_bytes
from raypipe.infer.models import FrameModel
from raypipe.infer.recycle import RecycledArrays


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
    second = runner.run(chunks[1])
    assert second.ctypes.data == address
    np.testing.assert_array_equal(second, 255 - chunks[1])
    third = runner.run(chunks[2])  # the second is still held: a new array
    assert not np.shares_memory(second, third)
    np.testing.assert_array_equal(second, 255 - chunks[1])
    np.testing.assert_array_equal(third, 255 - chunks[2])
