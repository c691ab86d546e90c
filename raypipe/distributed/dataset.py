"""The Ray Data pipeline: chunk rows → decode tasks → inference actor pool → encode tasks.

One row is one chunk from decode to encode, so a chunk's frames stay together and in order
without a shuffle, and only encoded segments come back to the driver. Ray Data's order is
not relied on: the driver orders segments by chunk index. :func:`infer_stage` is the actor
pool on its own, which :func:`raypipe.data.map_processor` reuses.
"""

from __future__ import annotations

import functools
import logging
import warnings

import ray

from raypipe.config import RunConfig
from raypipe.distributed.actors import InferActor
from raypipe.distributed.cluster import ActorPlan
from raypipe.distributed.stages import Row, decode_stage, encode_stage
from raypipe.distributed.workload import ActorJob, LoadedModel

TASK_CPUS = 1
"""CPUs a decode or an encode task reserves; its decoder or encoder runs as many threads,
so tasks side by side share the cores instead of each starting a thread per core."""


def infer_stage(ds: ray.data.Dataset, job: ActorJob, *, max_workers: int) -> ray.data.Dataset:
    """``ds`` (decoded chunk rows) through a pool of ``min(job.plan.workers, max_workers)``
    inference actors, one chunk per call."""
    actors = job.plan
    with warnings.catch_warnings():
        # Ray 2.6x deprecates remote args given as keywords (scheduling_strategy here) with
        # no named replacement yet; pyproject pins ray below the release that removes them.
        warnings.simplefilter("ignore", DeprecationWarning)
        return ds.map_batches(
            InferActor,
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(
                size=max(1, min(actors.workers, max_workers)), max_tasks_in_flight_per_actor=2
            ),
            num_gpus=actors.num_gpus,
            num_cpus=actors.num_cpus,
            # SPREAD puts the actors on as many nodes as it can, and remote args that differ
            # from decode's keep Ray Data from fusing decode into the actors: decode must
            # stay separate CPU tasks, run anywhere in the cluster while the actors infer.
            scheduling_strategy="SPREAD",
            fn_constructor_kwargs={"job": job},
        )


def build_dataset(
    rows: list[Row],
    cfg: RunConfig,
    actors: ActorPlan,
    model: LoadedModel,
    *,
    warmup_hw: tuple[int, int] | None = None,
) -> ray.data.Dataset:
    """The lazy pipeline over ``rows`` (one block per chunk, so every chunk is its own task).

    A tensor-output ``model`` (analysis): the actors return each chunk's results as a small
    Parquet table in ``segment`` and there is no encode stage.
    """
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = not cfg.quiet
    if cfg.quiet:
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    ds: ray.data.Dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
    decode = functools.partial(decode_stage, decoder=cfg.chunk.decoder, threads=TASK_CPUS)
    ds = ds.map(decode, num_cpus=TASK_CPUS)
    job = ActorJob(model=model, config=cfg.model, plan=actors, warmup_hw=warmup_hw)
    ds = infer_stage(ds, job, max_workers=len(rows))
    if model.tensor:
        return ds
    encode = functools.partial(encode_stage, config=cfg.encode, threads=TASK_CPUS)
    return ds.map(encode, num_cpus=TASK_CPUS)
