"""Worker processes killed mid-run (SIGKILL on a chunk's first attempt in the decode task,
the inference actor and the encode task, and on the first attempt of the assembly task
after it has written part of the output): outputs stay exact and equal to a clean run,
and nothing half-written is left. The same with fused stages (CPU actors that decode, run
and encode: each kill takes an actor down with its chunk). The runs are on a Ray of two
nodes, where the assembly is a task: on a Ray of one node on the driver's machine the
driver assembles a single video itself, and a crash there ends the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray
from conftest import assert_exact, lossless_options
from ray.cluster_utils import Cluster

import raypipe
from raypipe.faults import EXIT_ENV
from raypipe.media import make_video_id
from raypipe.testing import decode_all

KILLED = {"infer": 2, "decode": 5, "encode": 7}  # stage -> chunk whose first attempt dies
STAGES = ("split", "fused")  # each run kills its own video's chunks and assembly


def crashed_name(stages: str) -> str:
    """The output whose assembly task dies after some packets, in the run with ``stages``."""
    return f"crashed-{stages}.mp4"


@pytest.fixture(scope="module")
def sources(clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A copy of the B-frame clip for each run (another path: another video id)."""
    directory = tmp_path_factory.mktemp("sources")
    copies = {stages: directory / f"{stages}.mp4" for stages in STAGES}
    for copy in copies.values():
        copy.write_bytes(clips["bframes_aac"].read_bytes())
    return copies


@pytest.fixture(scope="module")
def markers(sources: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A Ray of two nodes on this machine (one logical GPU each) whose workers kill
    themselves on the first attempt at chosen chunks."""
    directory = tmp_path_factory.mktemp("markers")
    specs = []
    for stages, source in sources.items():
        video_id = make_video_id(str(source))
        specs += [f"{stage}:{video_id}-{i:06d}:{directory}" for stage, i in KILLED.items()]
        specs.append(f"assemble:{crashed_name(stages)}:{directory}")
    spec = ";".join(specs)
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "num_gpus": 1})
    cluster.add_node(num_cpus=4, num_gpus=1)
    cluster.wait_for_nodes()
    ray.init(
        address=cluster.address,
        log_to_driver=False,
        runtime_env={"env_vars": {EXIT_ENV: spec}},
    )
    yield directory
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.parametrize("stages", STAGES)
def test_killed_workers_and_assembly_still_give_the_clean_output(
    markers: Path, sources: dict[str, Path], tmp_path: Path, stages: str
) -> None:
    source = sources[stages]
    options = dict(
        model="builtin:invert",
        chunk_frames=4,
        workers=2,
        quiet=True,
        # split: decode and encode tasks around two actors on the logical GPUs; fused: two
        # CPU actors that decode and encode too
        device="cpu" if stages == "fused" else "auto",
        stages=stages,
        **lossless_options(),
    )
    crashed = tmp_path / crashed_name(stages)
    raypipe.process_video(str(source), str(crashed), **options)
    video_id = make_video_id(str(source))
    assert sorted(
        p.name for p in markers.iterdir() if p.name.startswith((video_id, crashed.name))
    ) == sorted(
        [f"{video_id}-{i:06d}.{stage}" for stage, i in KILLED.items()]
        + [f"{crashed.name}.assemble"]
    ), "the injected crashes did not happen"
    # the killed assembly's half-written file is gone, and so is the work directory
    assert sorted(p.name for p in tmp_path.iterdir()) == [crashed.name]
    clean = tmp_path / "clean.mp4"
    raypipe.process_video(str(source), str(clean), **options)  # markers: no crash
    assert_exact(source, crashed, "builtin:invert")
    a, pa, _ = decode_all(crashed)
    b, pb, _ = decode_all(clean)
    assert pa == pb and np.array_equal(a, b)
    assert crashed.read_bytes() == clean.read_bytes()
