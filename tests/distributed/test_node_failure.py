"""A node removed mid-run (ray.cluster_utils.Cluster): the node died while the run was in
progress, the chunks it had started were redone elsewhere, and the output is identical to a
clean run. Every stage records each attempt (raypipe.faults, RAYPIPE_RECORD_ATTEMPTS) with
the node it ran on; before the removal, work reaching node A is held there
(RAYPIPE_HOLD_NODES), so some is certainly in flight when A dies."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from conftest import assert_exact, lossless_options
from ray.cluster_utils import Cluster

import raypipe
from raypipe.distributed.planning import work_dir_for
from raypipe.faults import HOLD_ENV, RECORD_ENV, attempt_of
from raypipe.testing import ClipSpec, make_clip


@pytest.fixture(scope="module")
def attempts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("attempts")


@pytest.fixture(scope="module")
def holds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("holds")


@pytest.fixture(scope="module")
def cluster(attempts: Path, holds: Path) -> Iterator[Cluster]:
    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "num_gpus": 0})
    c.wait_for_nodes()
    ray.init(
        address=c.address,
        log_to_driver=False,
        runtime_env={"env_vars": {RECORD_ENV: str(attempts), HOLD_ENV: str(holds)}},
    )
    try:
        yield c
    finally:
        ray.shutdown()
        try:
            c.shutdown()
        except ValueError:  # a stuck run's thread reconnected the driver; kill what is left
            for node in [*c.worker_nodes, c.head_node]:
                if node is not None:
                    node.kill_all_processes(check_alive=False, allow_graceful=False)


def _names(attempts: Path) -> set[str]:
    return {p.name for p in attempts.iterdir()}


def _attempts(names: set[str]) -> list[tuple[str, str, str]]:
    """(chunk id, stage, node id) of recorded attempts."""
    return [(a.key, a.stage, a.node) for a in map(attempt_of, names)]


@pytest.mark.slow
def test_node_removed_mid_run(
    cluster: Cluster, attempts: Path, holds: Path, tmp_path: Path
) -> None:
    source = make_clip(tmp_path / "long.mp4", ClipSpec(n_frames=240, gop=8, audio="aac"))
    options = dict(
        model="builtin:sharpen",
        chunk_frames=4,
        workers=2,
        quiet=True,
        **lossless_options(),
    )
    node_a = cluster.add_node(num_cpus=2, num_gpus=1)
    cluster.add_node(num_cpus=2, num_gpus=1)
    cluster.wait_for_nodes()
    out = tmp_path / "out.mp4"
    errors: list[BaseException] = []

    def run() -> None:
        try:
            raypipe.process_video(str(source), str(out), **options)
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            errors.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    work = Path(work_dir_for(str(out)))
    deadline = time.monotonic() + 120
    while len(list(work.glob("run-*/*.rpseg"))) < 5 and thread.is_alive():
        assert time.monotonic() < deadline, "no progress before the node removal"
        time.sleep(0.1)
    cluster.add_node(num_cpus=2, num_gpus=1)  # room for the actor that dies with node A
    # hold what reaches A from now on, and wait until something has
    held_since = {p.name for p in attempts.iterdir()}
    (holds / node_a.node_id).touch()
    while not any(n == node_a.node_id for _, _, n in _attempts(_names(attempts) - held_since)):
        assert time.monotonic() < deadline + 120, "no work reached node A to hold"
        time.sleep(0.05)
    done_before = len(list(work.glob("run-*/*.rpseg")))
    assert {n["NodeID"]: n["Alive"] for n in ray.nodes()}[node_a.node_id], "A died early"
    before_removal = _names(attempts)
    held = {(c, s) for c, s, n in _attempts(before_removal - held_since) if n == node_a.node_id}
    cluster.remove_node(node_a)
    (holds / node_a.node_id).unlink()
    thread.join(timeout=480)  # about 50 s on a quiet 2-core machine, 200 s when loaded
    assert not thread.is_alive(), "the run did not finish after the node was removed"
    assert not errors, errors
    assert done_before < 60, "the run had finished before the node was removed"
    assert not {n["NodeID"]: n["Alive"] for n in ray.nodes()}[node_a.node_id], "A is alive"
    # node A had started chunks (an actor and decode/encode tasks ran there), and some it
    # held when it died were started again on the other nodes after it was removed
    names = _names(attempts)
    on_a = {(c, s) for c, s, node in _attempts(names) if node == node_a.node_id}
    assert on_a, "no chunk ever ran on node A"
    after = _attempts(names - before_removal)
    redone = {(c, s) for c, s, node in after if node != node_a.node_id and (c, s) in on_a}
    assert redone, f"none of the {len(on_a)} chunk stages started on A was redone elsewhere"
    assert held <= redone, f"stages held on A when it died, not redone: {held - redone}"
    assert_exact(source, out, "builtin:sharpen")
    clean = tmp_path / "clean.mp4"
    raypipe.process_video(str(source), str(clean), **options)
    assert out.read_bytes() == clean.read_bytes()
