"""The Ray Data pipeline: chunk rows → decode tasks → inference actor pool → encode tasks.

One row is one chunk from decode to encode, so a chunk's frames stay together and in order
without a shuffle, and only encoded segments come back to the driver. Ray Data's order is
not relied on: the driver orders segments by chunk index.
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
from raypipe.infer.models import ModelSpec


def build_dataset(
    rows: list[Row],
    cfg: RunConfig,
    actors: ActorPlan,
    model_bytes: bytes,
    *,
    warmup_hw: tuple[int, int] | None = None,
    spec: ModelSpec | None = None,
    tensor: bool = False,
) -> ray.data.Dataset:
    """The lazy pipeline over ``rows`` (one block per chunk, so every chunk is its own task).

    ``tensor``: an analysis model; the actors return each chunk's results as a small Parquet
    table in ``segment`` and there is no encode stage.
    """
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = not cfg.quiet
    if cfg.quiet:
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    ds: ray.data.Dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
    ds = ds.map(functools.partial(decode_stage, decoder=cfg.chunk.decoder), num_cpus=1)
    with warnings.catch_warnings():
        # Ray 2.6x deprecates remote args given as keywords (scheduling_strategy here) with
        # no named replacement yet; pyproject pins ray below the release that removes them.
        warnings.simplefilter("ignore", DeprecationWarning)
        ds = ds.map_batches(
            InferActor,
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(
                size=min(actors.workers, len(rows)), max_tasks_in_flight_per_actor=2
            ),
            num_gpus=actors.num_gpus,
            num_cpus=actors.num_cpus,
            # SPREAD puts the actors on as many nodes as it can, and remote args that differ
            # from decode's keep Ray Data from fusing decode into the actors: decode must
            # stay separate CPU tasks, run anywhere in the cluster while the actors infer.
            scheduling_strategy="SPREAD",
            fn_constructor_kwargs={
                "model_bytes": model_bytes,
                "model": cfg.model.model,
                "device": cfg.model.device,
                "batch_size": cfg.model.batch_size,
                "intra_op_threads": actors.intra_op_threads,
                "warmup_hw": warmup_hw,
                "spec": spec,
                "precision": cfg.model.precision,
                "engine_cache": cfg.model.engine_cache,
                "gpu_memory_fraction": actors.num_gpus if actors.uses_gpu else 1.0,
                "tensor": tensor,
            },
        )
    if tensor:
        return ds
    return ds.map(functools.partial(encode_stage, config=cfg.encode), num_cpus=1)
