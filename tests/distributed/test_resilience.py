"""Worker processes killed mid-run (SIGKILL on a chunk's first attempt in the decode task,
the inference actor and the encode task, and on the first attempt of the assembly task
after it has written part of the output): outputs stay exact and equal to a clean run,
and nothing half-written is left."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray
from conftest import assert_exact, lossless_options

import raypipe
from raypipe.faults import EXIT_ENV
from raypipe.media import make_video_id
from raypipe.testing import decode_all

KILLED = {"infer": 2, "decode": 5, "encode": 7}  # stage -> chunk whose first attempt dies
ASSEMBLY_KILLED = "crashed.mp4"  # the output whose assembly task dies after some packets


@pytest.fixture(scope="module")
def markers(clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A local Ray whose workers kill themselves on the first attempt at chosen chunks."""
    directory = tmp_path_factory.mktemp("markers")
    video_id = make_video_id(str(clips["bframes_aac"]))
    spec = ";".join(f"{stage}:{video_id}-{i:06d}:{directory}" for stage, i in KILLED.items())
    spec += f";assemble:{ASSEMBLY_KILLED}:{directory}"
    if ray.is_initialized():
        ray.shutdown()
    ray.init(
        address="local",
        num_cpus=8,
        num_gpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {EXIT_ENV: spec}},
    )
    yield directory
    ray.shutdown()


def test_killed_workers_and_assembly_still_give_the_clean_output(
    markers: Path, clips: dict[str, Path], tmp_path: Path
) -> None:
    options = dict(
        model="builtin:invert",
        chunk_frames=4,
        workers=2,
        quiet=True,
        **lossless_options(),
    )
    crashed = tmp_path / "crashed.mp4"
    raypipe.process_video(str(clips["bframes_aac"]), str(crashed), **options)
    video_id = make_video_id(str(clips["bframes_aac"]))
    assert sorted(p.name for p in markers.iterdir()) == sorted(
        [f"{video_id}-{i:06d}.{stage}" for stage, i in KILLED.items()]
        + [f"{ASSEMBLY_KILLED}.assemble"]
    ), "the injected crashes did not happen"
    # the killed assembly's half-written file is gone, and so is the work directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crashed.mp4"]
    clean = tmp_path / "clean.mp4"
    raypipe.process_video(str(clips["bframes_aac"]), str(clean), **options)  # markers: no crash
    assert_exact(clips["bframes_aac"], crashed, "builtin:invert")
    a, pa, _ = decode_all(crashed)
    b, pb, _ = decode_all(clean)
    assert pa == pb and np.array_equal(a, b)
    assert crashed.read_bytes() == clean.read_bytes()
