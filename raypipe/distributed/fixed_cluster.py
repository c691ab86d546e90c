"""Ray Data on a Ray that cannot grow: the cluster's resources from the start, no
coordinator actor, no helper actors.

Ray Data (2.60) learns what a run may schedule from its cluster autoscaler. The default
one asks a detached actor, ``AutoscalingCoordinator``, what it reserved for the run, and
until that actor answers (a Python worker to start, Ray and Ray Data to import) the
executor's limits are zero: no task starts. On a 2-core machine they stayed zero for
2.2-3.5 s after a run's executor started, and the actor's process cost about
1.3 s of CPU while the run's own workers were starting (benchmarks/README.md, session 27).

A local Ray that raypipe started (:func:`raypipe.distributed.cluster.start_local`) is one
node that nothing joins and that ends with the process: there is nothing to reserve or
scale, and its resources are known. :func:`use_fixed_cluster` marks a run's dataset so
that its executor gets :class:`FixedCluster`, those resources at once, instead. Every other
dataset (a user's own, a run on a cluster given by address) keeps Ray Data's default.

The hook replaces ``create_cluster_autoscaler`` where Ray Data's streaming executor looks
it up, once per process; a Ray Data without that function or class leaves everything as
it is (:func:`use_fixed_cluster` returns ``False``).

Ray Data also starts two detached helper actors for every executor, each a Python worker
that imports Ray and Ray Data (1.2-1.6 s of CPU each on a 2-core machine, while the
run's own workers start): ``_StatsActor``, which only collects metrics for Ray's dashboard,
and ``ActorLocationTracker``, which tells the executor on which node each of its pool's
actors runs. The executor asks the tracker with a blocking ``ray.get`` from its scheduling
loop, so until that actor's process has started nothing was scheduled: 0.96 s at a 20 s
720p run's start (benchmarks/README.md, session 30). On the local Ray raypipe started
there is no dashboard (:func:`raypipe.distributed.cluster.start_local`) and one node, so
:func:`use_fixed_cluster` also installs :func:`_hook_helpers`: while this process is
connected to that Ray (:func:`raypipe.distributed.cluster.on_local_ray`), metrics go
nowhere and every actor is on its node, without either actor. Connected to any other Ray,
Ray Data's own functions run.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import ray

from raypipe.distributed.cluster import on_local_ray

log = logging.getLogger("raypipe.distributed")

FIXED_CLUSTER_KEY = "raypipe.fixed_cluster"
"""The ``DataContext`` config key that marks a dataset for :class:`FixedCluster`."""

_lock = threading.Lock()
_installed: bool | None = None
_helpers_installed: bool | None = None


def use_fixed_cluster(context: Any) -> bool:
    """Mark the dataset ``context`` (a ``ray.data.DataContext``) so that its executor sees
    the cluster's resources as they are when it starts, with no coordinator actor;
    ``False`` (nothing marked) when this Ray Data cannot take the hook."""
    if not _install():
        return False
    context.set_config(FIXED_CLUSTER_KEY, True)
    return True


def _install() -> bool:
    global _installed, _helpers_installed
    with _lock:
        if _installed is None:
            _installed = _hook()
        if _helpers_installed is None:
            _helpers_installed = _hook_helpers()
        return _installed


def _hook() -> bool:
    try:
        from ray.data._internal.cluster_autoscaler.base_cluster_autoscaler import (
            ClusterAutoscaler,
        )
        from ray.data._internal.execution import streaming_executor
        from ray.data._internal.execution.interfaces.execution_options import (
            ExecutionResources,
        )
    except ImportError as e:
        log.debug("Ray Data keeps its cluster autoscaler: %s", e)
        return False
    default = getattr(streaming_executor, "create_cluster_autoscaler", None)
    if default is None:
        log.debug("Ray Data keeps its cluster autoscaler: no create_cluster_autoscaler")
        return False

    class _Fixed(FixedCluster, ClusterAutoscaler):
        pass

    def create(topology: Any, resource_manager: Any, data_context: Any, **kwargs: Any) -> Any:
        if data_context.get_config(FIXED_CLUSTER_KEY, False):
            return _Fixed(ExecutionResources.from_resource_dict(ray.cluster_resources()))
        return default(topology, resource_manager, data_context, **kwargs)

    streaming_executor.create_cluster_autoscaler = create
    return True


class FixedCluster:
    """A cluster autoscaler (Ray Data's interface) for a cluster that stays as it is:
    ``total``, what the coordinator reserves for a run alone on it, from the start;
    it asks for nothing and has nothing to cancel."""

    def __init__(self, total: Any) -> None:
        self._total = total

    def try_trigger_scaling(self) -> None:
        return None

    def on_executor_shutdown(self) -> None:
        return None

    def get_total_resources(self) -> Any:
        return self._total


def _hook_helpers() -> bool:
    """Replace Ray Data's lookups of its stats actor and its actor location tracker (the
    module docstring) with ones that, on raypipe's own local Ray, need neither actor;
    ``False`` (nothing replaced) when this Ray Data has not all three functions."""
    try:
        from ray.data._internal import stats
        from ray.data._internal.execution.operators import actor_pool_map_operator as pool
    except ImportError as e:
        log.debug("Ray Data keeps its helper actors: %s", e)
        return False
    names = (
        (stats, "get_or_create_stats_actor"),
        (pool, "get_or_create_actor_location_tracker"),
        (pool, "get_actor_locations"),
    )
    if not all(callable(getattr(module, name, None)) for module, name in names):
        log.debug("Ray Data keeps its helper actors: a lookup is missing")
        return False
    stats_actor = stats.get_or_create_stats_actor
    tracker = pool.get_or_create_actor_location_tracker
    locations = pool.get_actor_locations

    def local_stats_actor() -> Any:
        return UNHEARD if on_local_ray() else stats_actor()

    def local_tracker() -> Any:
        return UNHEARD if on_local_ray() else tracker()

    def local_locations(logical_actor_ids: tuple[str, ...]) -> dict[str, str]:
        if on_local_ray():  # one node: every actor is on it
            return dict.fromkeys(logical_actor_ids, ray.get_runtime_context().get_node_id())
        return locations(logical_actor_ids)

    stats.get_or_create_stats_actor = local_stats_actor
    pool.get_or_create_actor_location_tracker = local_tracker
    pool.get_actor_locations = local_locations
    return True


class Unheard:
    """Stands in for a Ray Data helper actor's handle where that actor has nothing to do:
    every method's ``remote(...)`` call is dropped and returns None. Ray Data's calls to
    both helpers are fire-and-forget, except for the stats actor's dataset id (asked only
    with legacy ids on; without an answer Ray Data takes a random one) and the tracker's
    locations, which :func:`_hook_helpers` answers itself. Pickled into the pool's
    actors as their tracker handle, so it is a plain module-level class."""

    def __getattr__(self, name: str) -> _Dropped:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Dropped()


class _Dropped:
    def remote(self, *args: Any, **kwargs: Any) -> None:
        return None

    def options(self, **kwargs: Any) -> _Dropped:
        return self


UNHEARD = Unheard()
