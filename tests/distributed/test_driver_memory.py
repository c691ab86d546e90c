"""Raw frames never pass through the driver: its memory does not grow with video length."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import pytest

import raypipe
from raypipe.testing import ClipSpec, make_clip

WIDTH, HEIGHT = 640, 360


@pytest.fixture(scope="module", autouse=True)
def _ray(ray_local: None) -> None:
    return None


class PeakRss:
    """Samples this process's resident memory every 10 ms while in the ``with`` block."""

    def __enter__(self) -> PeakRss:
        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.start


def _run(source: Path, out: Path) -> int:
    with PeakRss() as rss:
        raypipe.process_video(
            str(source),
            str(out),
            model="builtin:identity",
            chunk_frames=24,
            preset="ultrafast",
            quiet=True,
        )
    return rss.growth


@pytest.mark.slow
def test_driver_memory_does_not_grow_with_length(tmp_path: Path) -> None:
    def clip(n: int) -> Path:
        return make_clip(
            tmp_path / f"c{n}.mp4", ClipSpec(n_frames=n, width=WIDTH, height=HEIGHT, gop=24)
        )

    short, long = clip(72), clip(576)  # 8x the length
    _run(clip(24), tmp_path / "warm.mp4")  # one-time start-up of Ray Data in this driver
    grow_short = _run(short, tmp_path / "short.mp4")
    grow_long = _run(long, tmp_path / "long.mp4")
    raw_long = 576 * WIDTH * HEIGHT * 3  # 398 MB of RGB frames
    print(
        f"driver RSS growth: 1x {grow_short / 2**20:.1f} MiB, 8x {grow_long / 2**20:.1f} MiB, "
        f"raw frames of 8x {raw_long / 2**20:.0f} MiB"
    )
    assert grow_long < grow_short + 48 * 2**20
    assert grow_long < raw_long / 8


@pytest.mark.slow
def test_driver_memory_bounded_with_hundreds_of_videos(tmp_path: Path) -> None:
    one = make_clip(tmp_path / "one.mp4", ClipSpec(n_frames=8, width=64, height=48, gop=8))

    def archive(n: int) -> tuple[int, int]:
        src = tmp_path / f"src{n}"
        src.mkdir()
        for i in range(n):
            (src / f"v{i:04d}.mp4").write_bytes(one.read_bytes())
        with PeakRss() as rss:
            report = raypipe.process_archive(
                str(src),
                str(tmp_path / f"out{n}"),
                model="builtin:identity",
                preset="ultrafast",
                quiet=True,
            )
        assert report.count("done") == n
        return rss.growth, n

    archive(10)  # start-up of Ray Data in this driver
    small, _ = archive(30)
    large, _ = archive(300)
    print(
        f"driver RSS growth: 30 videos {small / 2**20:.1f} MiB, 300 videos {large / 2**20:.1f} MiB"
    )
    assert large < small + 64 * 2**20


def test_executor_keeps_no_stats_record_per_block() -> None:
    """Ray Data's map operators keep a stats record for every output block until the run
    ends (6.5 MiB of the driver's memory at 2000 videos); raypipe's row iterator drops them
    as it goes. Fails if a Ray upgrade renames what it empties (look again, then)."""
    import ray

    from raypipe.distributed.ray_errors import STATS_EVERY, iter_rows

    ray.data.DataContext.get_current().enable_progress_bars = False
    n = 5 * STATS_EVERY
    ds = ray.data.range(n, override_num_blocks=n).map(lambda r: {"id": r["id"]}, num_cpus=0.25)
    seen: list[int] = []
    lengths: list[int] = []
    for row in iter_rows(ds):
        seen.append(int(row["id"]))
        ops = list(ds._current_executor._topology)  # the executor iter_rows runs
        lengths.append(max(len(getattr(op, "_output_blocks_stats", [])) for op in ops))
        assert any(hasattr(op, "_output_blocks_stats") for op in ops)
    assert sorted(seen) == list(range(n))  # every row, once
    assert max(lengths) <= 2 * STATS_EVERY, max(lengths)
