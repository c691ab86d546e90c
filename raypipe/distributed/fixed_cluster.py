"""Ray Data on a Ray that cannot grow: the cluster's resources from the start, no
coordinator actor.

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
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import ray

log = logging.getLogger("raypipe.distributed")

FIXED_CLUSTER_KEY = "raypipe.fixed_cluster"
"""The ``DataContext`` config key that marks a dataset for :class:`FixedCluster`."""

_lock = threading.Lock()
_installed: bool | None = None


def use_fixed_cluster(context: Any) -> bool:
    """Mark the dataset ``context`` (a ``ray.data.DataContext``) so that its executor sees
    the cluster's resources as they are when it starts, with no coordinator actor;
    ``False`` (nothing marked) when this Ray Data cannot take the hook."""
    if not _install():
        return False
    context.set_config(FIXED_CLUSTER_KEY, True)
    return True


def _install() -> bool:
    global _installed
    with _lock:
        if _installed is None:
            _installed = _hook()
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
