"""Fused stages: one actor decodes a chunk, runs the model on it and encodes it.

The split pipeline (:mod:`raypipe.distributed.dataset`) keeps decode and encode in CPU
tasks around the inference actors, so a GPU never waits for a decoder and a node's cores
decode and encode for every GPU of the cluster. The price is the frames' two trips
through Ray's object store (decode → actor → encode): each is a copy into shared memory,
most of it new pages the kernel zeroes, and the store holds every chunk in flight. Where
the actors run on the CPU nothing waits for a GPU, so ``--stages auto`` fuses the three
into the actors (:class:`ChunkActor`): the same stage functions, called one after the
other in one process, the frames never leaving it (a per-frame model's frames written over
the decoded ones, that array reused chunk after chunk), one chunk at a time per actor
(the next one's row queued at it: :data:`FUSED_IN_FLIGHT`), or a lane of consecutive
chunks per call for a video that splits a GOP (:func:`raypipe.distributed.dataset.fused_lanes`).
Measured on 2 vCPUs (benchmarks/README.md, session 39, medians of 3 alternated rounds):
20 s 720p ``identity`` 16.3 s against 19.2 s split, 27.3 against 32.9 s of CPU; 4K 5 s
``invert`` 24.2 against 24.1 s (18.3 s since session 40, with numpy's arrays on small
pages: :func:`raypipe.recycle.small_pages`).

Rows and stats are the split pipeline's: the row leaves with its ``decode_*``,
``infer_*`` and ``encode_*`` fields (their pids the actor's).
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import numpy as np
import ray

from raypipe.config import EncodeConfig
from raypipe.distributed.actors import InferActor, actor_pool_map
from raypipe.distributed.stages import TASK_CPUS, decode_batch, encode_stage, store_stage
from raypipe.distributed.workload import ActorJob
from raypipe.media.yuv import YuvRule

FUSED_THREADS = 2
"""Threads a fused actor's decoder runs: the actors are one per two of the cluster's CPUs
(:func:`~raypipe.distributed.cluster.fuse_stages`). Its encoder runs the split encode
task's :data:`~raypipe.distributed.stages.TASK_CPUS`, so that the segments, and the
output, are the split pipeline's to the bit (x264 codes differently with another thread
count), whichever way a run or its resume went."""

FUSED_IN_FLIGHT = 2
"""Calls queued at each fused actor (one where the calls are lanes: a lane waits for a free
actor, not behind another): its next chunk's row (a few hundred bytes: the actor
decodes the frames itself) waits at the actor, so the actor starts it as soon as it has
sent the last one back, not after Ray Data's round trip (0.15-0.2 s a chunk on 2 vCPUs).
Side by side, 3 alternated rounds, 20 s 720p ``sharpen``: 15.57, 14.90, 14.81 s against
15.99, 16.04, 15.45 s with one; 4K ``invert``, 2 rounds: 15.49, 15.38 against 16.10,
16.17 s (benchmarks/README.md, session 41)."""


class ChunkActor(InferActor):
    """Ray Data callable class: a chunk row in, its segment written (or, for an analysis
    model, its table) and the row out, as the split pipeline's encode (store) task leaves
    it. One chunk per call (``batch_size=1``, numpy batches).

    A per-frame model's new frames of the decoded frames' shape and dtype are written over
    them, each batch once the model has read it (:attr:`InferActor.OVER_INPUT`): the actor
    holds the chunk once, not twice (at 4K, 20 frames: 500 MB less).

    The model is built and warmed up on a thread of its own, started as the actor is made,
    so that the first chunk decodes meanwhile (as the split pipeline's decode tasks did
    while its actors warmed up); the call waits for it before the model runs.
    """

    OVER_INPUT = True

    def __init__(
        self,
        job: ActorJob,
        *,
        decoder: str,
        encode: EncodeConfig,
        threads: int,
        handoff: YuvRule | None = None,
    ) -> None:
        """``threads``: the decoder's."""
        self._decode = functools.partial(
            decode_batch, decoder=decoder, threads=threads, handoff=handoff
        )
        self._encode = functools.partial(encode_stage, config=encode, threads=TASK_CPUS)
        self._preparing: threading.Thread | None = None
        self._prepare_error: BaseException | None = None
        super().__init__(job)

    def _prepare(self) -> None:
        """:meth:`InferActor._prepare`, on a thread of its own (see the class)."""
        self._preparing = threading.Thread(
            target=self._prepare_now, name="raypipe-model", daemon=True
        )
        self._preparing.start()

    def _prepare_now(self) -> None:
        try:
            super()._prepare()
        except BaseException as e:  # noqa: BLE001 - raised by the first call
            self._prepare_error = e

    def _prepared(self) -> None:
        """Wait until the model is built and warm; raise what stopped it unforeseen (a
        failure to build it is kept for the chunks, as in :class:`InferActor`)."""
        if self._preparing is not None:
            self._preparing.join()
            self._preparing = None
        if self._prepare_error is not None:
            raise self._prepare_error

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        decoded = self._decode(batch)  # the first chunk's while the model is being built
        self._prepared()
        inferred = super().__call__(decoded)
        row = {k: v[0] for k, v in inferred.items()}
        out = store_stage(row) if self.tensor else self._encode(row)
        return {k: np.array([v]) for k, v in out.items()}


def fused_stage(
    source: ray.data.Dataset,
    job: ActorJob,
    *,
    max_workers: int,
    decoder: str,
    encode: EncodeConfig,
    handoff: YuvRule | None = None,
    in_flight: int = FUSED_IN_FLIGHT,
) -> ray.data.Dataset:
    """``source``'s chunk rows through a pool of ``min(job.plan.workers, max_workers)``
    :class:`ChunkActor`, each working on one chunk with up to ``in_flight`` calls (blocks
    of rows) queued at it."""
    return actor_pool_map(
        source,
        ChunkActor,
        job,
        max_workers=max_workers,
        in_flight=in_flight,
        fn_constructor_kwargs={
            "job": job,
            "decoder": decoder,
            "encode": encode,
            "threads": FUSED_THREADS,
            "handoff": handoff,
        },
    )
