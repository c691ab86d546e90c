"""Worker processes started ahead of a run's actors, for a driver that stays.

Ray starts a job's worker processes when its tasks and actors come: each new actor of a run
waits for a process to start, import Ray (0.35 s of CPU here) and connect, then imports
what the actor needs (Ray Data alone 0.6 s, unless the node preloads it: cluster/Dockerfile)
before its first chunk. ``raypipe serve`` is one job that lasts, and so is a notebook's
process (``raypipe.process_video`` leaves Ray connected), so after each run that
completes they ask the raylets of the nodes that run's actors ran on to start as many
processes as its pool had actors, spread over them (:func:`start_for_next_run`: Ray's
``PrestartWorkers`` call, the one Ray's own worker prestart uses); the next run's actors
take them. Each ask starts that many more, not up to that many, so the driver asks only
for those missing: the pool, less the processes it started before that no run's actor has
taken yet; a run that failed (whose actors may never have taken any) asks for none.
Measured (``benchmarks/start.py --rounds 4``, 720p ``identity`` handed to the service on a
4-CPU ``ray start --head`` of 2 vCPUs, medians; benchmarks/README.md, session 45): first
decode 1.63 s (1.60-1.75) after the command against 2.08 s (1.90-2.38) before, wall 4.04
against 5.77 s; with the node's workers preloading Ray Data and raypipe's stages as the
cluster image's do, 1.43 s (1.16-1.79). A node starts at most as many processes at once as
it has cores (Ray's startup concurrency): a larger ask gets that many.

Best effort: a Ray without the call (older releases), a Ray Client driver (no raylet of its
own to reach) or a node that does not answer leaves the run as it was; the reason is logged
at debug level.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

import ray

if TYPE_CHECKING:
    from raypipe.distributed.stats import RunStats

log = logging.getLogger("raypipe.distributed")

KEEP_ALIVE_S = 600
"""How long the raylet keeps the processes it started even while idle (then Ray treats
them as any idle worker process)."""

CALL_TIMEOUT_S = 5.0


def next_run_processes(stats: RunStats) -> dict[str, int]:
    """Worker processes to start, per node id, for a run like ``stats``' (a completed
    run's): its pool (``workers``) spread evenly over the nodes its chunks ran on (Ray Data
    makes the whole pool, whether or not each actor gets a chunk), at least as many as ran
    there."""
    seen = Counter(node for node, _ in _actors(stats))
    if not seen:
        return {}
    share = -(-stats.workers // len(seen))
    return {node: max(share, n) for node, n in seen.items()}


_STARTED: dict[str, tuple[int, float]] = {}
"""Per node: the processes this driver had started for a next run and no run has taken
yet, as far as it knows, and when it last asked (``time.monotonic``)."""
_STARTED_LOCK = threading.Lock()  # a service's runs end on threads of their own


def _actors(stats: RunStats) -> set[tuple[str, str]]:
    """(node id, actor id) of each actor that ran a chunk of the run of ``stats``."""
    pairs = {(r.get("infer_node"), r.get("actor_id")) for r in stats.chunk_stats}
    return {(str(node), str(actor)) for node, actor in pairs if node and actor}


def start_for_next_run(stats: RunStats) -> int:
    """After a run that completed (``stats``), on a driver that stays: start the
    processes its next run's actors will take (:func:`next_run_processes`), less those
    started before that no run has taken (:func:`still_started`); how many were asked
    for. Asking for the whole pool after every run added a process a run wherever a run
    took fewer than it asked for (a one-chunk video's single actor): a notebook of 20 runs
    held 21 idle processes, 2.1 GiB, and Ray printed its warning about them (a sweep)."""
    want = next_run_processes(stats)
    now = time.monotonic()
    with _STARTED_LOCK:
        left = still_started(stats, now)
        asked = _ask({node: n - left.get(node, 0) for node, n in want.items()})
        before = dict(_STARTED)
        _STARTED.clear()
        for node in {*left, *asked}:  # the time of the node's last ask (its oldest may end)
            when = now if asked.get(node) else before[node][1]
            _STARTED[node] = (left.get(node, 0) + asked.get(node, 0), when)
    return sum(asked.values())


def still_started(stats: RunStats, now: float) -> dict[str, int]:
    """The processes :data:`_STARTED` holds per node once the run of ``stats`` took one
    for each of its actors there (a process asked for :data:`KEEP_ALIVE_S` ago or more may
    have ended: none counted)."""
    taken = Counter(node for node, _ in _actors(stats))
    return {
        node: n - taken[node]
        for node, (n, when) in _STARTED.items()
        if now - when < KEEP_ALIVE_S and n > taken[node]
    }


def prestart_workers(per_node: Mapping[str, int], *, keep_alive_s: int = KEEP_ALIVE_S) -> int:
    """Ask each live node of ``per_node`` (node id: processes) to start that many worker
    processes for this driver's job now, with its runtime environment. Returns how many
    were asked for (0 when Ray cannot be asked: see the module)."""
    return sum(_ask(per_node, keep_alive_s=keep_alive_s).values())


def _ask(per_node: Mapping[str, int], *, keep_alive_s: int = KEEP_ALIVE_S) -> dict[str, int]:
    """:func:`prestart_workers`: the processes asked for, per node that answered."""
    wanted = {node: n for node, n in per_node.items() if n > 0}
    if not wanted:
        return {}
    try:
        from ray._private.grpc_utils import init_grpc_channel
        from ray.core.generated import (
            common_pb2,
            node_manager_pb2,
            node_manager_pb2_grpc,
            runtime_environment_pb2,
        )

        worker = ray._private.worker.global_worker
        job_config = worker.core_worker.get_job_config()
        env = runtime_environment_pb2.RuntimeEnvInfo.FromString(
            job_config.runtime_env_info.SerializeToString()
        )
        job_id = bytes.fromhex(ray.get_runtime_context().get_job_id())
        nodes = {n["NodeID"]: n for n in ray.nodes() if n.get("Alive")}
        calls = []
        for node_id, count in wanted.items():
            node = nodes.get(node_id)
            if node is None:
                continue
            channel = init_grpc_channel(f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}")
            request = node_manager_pb2.PrestartWorkersRequest(
                language=common_pb2.PYTHON,
                job_id=job_id,
                runtime_env_info=env,
                keep_alive_duration_secs=keep_alive_s,
                num_workers=count,
            )
            stub = node_manager_pb2_grpc.NodeManagerServiceStub(channel)
            call = stub.PrestartWorkers.future(request, timeout=CALL_TIMEOUT_S)
            calls.append((channel, node_id, count, call))
        asked: dict[str, int] = {}
        for channel, node_id, count, call in calls:
            try:
                call.result()
                asked[node_id] = count
            except Exception as e:  # noqa: BLE001 - that node's next actors start as before
                log.debug("prestarting worker processes: a node did not answer: %s", e)
            finally:
                channel.close()
        return asked
    except Exception as e:  # noqa: BLE001 - see the module: the run goes on as it would
        log.debug("prestarting worker processes: not possible here: %s", e)
        return {}
