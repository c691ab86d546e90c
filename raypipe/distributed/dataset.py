"""The Ray Data pipeline: (plan →) decode tasks → inference actor pool → encode tasks.

One row is one chunk from decode to encode, so a chunk's frames stay together and in order
without a shuffle. Encode tasks write the segments to the videos' work directories
themselves: only small rows come back to the driver. Ray Data's order is not relied on:
assembly orders segments by chunk index. :func:`infer_stage` is the actor pool on its own,
which :func:`raypipe.data.map_processor` reuses.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import pyarrow as pa
import ray

from raypipe.config import ChunkConfig, EncodeConfig, RunConfig
from raypipe.distributed.actors import InferActor, actor_pool_map
from raypipe.distributed.chunk_task import Row
from raypipe.distributed.cluster import ActorPlan, on_local_ray, sized_local_store
from raypipe.distributed.fixed_cluster import use_fixed_cluster
from raypipe.distributed.fused import FUSED_IN_FLIGHT, fused_stage
from raypipe.distributed.planning import (
    ModelFacts,
    PlannedVideo,
    VideoJob,
    job_row,
    plan_stage,
    video_rows,
)
from raypipe.distributed.stages import TASK_CPUS, decode_batch, encode_stage, store_stage
from raypipe.distributed.workload import ActorJob, LoadedModel
from raypipe.exiting import ctrl_c_held
from raypipe.media.picture import PictureFormat
from raypipe.media.yuv import YuvInput, YuvRule
from raypipe.reuse import ReuseKey


def infer_stage(ds: ray.data.Dataset, job: ActorJob, *, max_workers: int) -> ray.data.Dataset:
    """``ds`` (decoded chunk rows) through a pool of ``min(job.plan.workers, max_workers)``
    inference actors, one chunk per call."""
    return actor_pool_map(
        ds,
        InferActor,
        job,
        max_workers=max_workers,
        in_flight=2,
        # the frames as read-only views of the object store, not a copy per chunk (a
        # 4K chunk is 1.5 GB); the actor gives a processor a copy it may write into
        zero_copy_batch=True,
        # SPREAD, and remote args that differ from decode's, keep Ray Data from fusing
        # decode into the actors: decode must stay separate CPU tasks, run anywhere in the
        # cluster while the actors infer (raypipe fuses them itself: ``--stages``)
        fn_constructor_kwargs={"job": job},
    )


def build_dataset(
    source: ray.data.Dataset,
    cfg: RunConfig,
    actors: ActorPlan,
    model: LoadedModel,
    *,
    warmup_picture: PictureFormat | None = None,
    warmup_frames: int = 0,
    max_workers: int | None = None,
    handoff: YuvRule | None = None,
    lanes: bool = False,
) -> ray.data.Dataset:
    """The lazy pipeline over ``source`` (video and chunk rows: :func:`video_source` or
    :func:`archive_source`): decode tasks → inference actors → encode (or, for a
    tensor-output ``model``, store) tasks, which write each chunk's segment to its work
    directory; for a plan with fused stages (:attr:`ActorPlan.fused`) one pool of actors
    that do all three (:mod:`raypipe.distributed.fused`). Every row is its own block, so
    every chunk is its own task. On a local Ray this process started, the run's executor
    takes the node's resources from the start (:mod:`raypipe.distributed.fixed_cluster`).

    ``warmup_picture``: the first video's picture; the actors warm up on a batch of its
    upright size (None: on their first chunk). ``handoff``: the run's YUV hand-off rule
    (:attr:`StartedRun.handoff`); when the first video goes as YUV under it, the actors
    warm the model that takes its YUV frames instead of RGB. ``lanes``: ``source``'s blocks
    are lanes of consecutive chunks (:func:`video_source`), one call of a fused actor at a
    time."""
    warmup_hw, warmup_yuv = None, None
    if warmup_picture is not None:
        width, height = warmup_picture.upright_size
        warmup_hw = (height, width)
        if handoff is not None and not handoff.problem(warmup_picture):
            warmup_yuv = YuvInput.of(warmup_picture)
    job = ActorJob(
        model=model,
        config=cfg.model,
        plan=actors,
        warmup_hw=warmup_hw,
        warmup_frames=warmup_frames,
        warmup_yuv=warmup_yuv,
    )
    max_workers = max_workers or actors.workers
    if actors.fused:
        # every chunk row its own output block: a block per chunk is a call per chunk, as
        # decode_step, and a lane's call hands each chunk's row on as it is done
        source.context.target_max_block_size = 1
        ds = fused_stage(
            source,
            job,
            max_workers=max_workers,
            in_flight=1 if lanes else FUSED_IN_FLIGHT,
            decoder=cfg.chunk.decoder,
            encode=cfg.encode,
            handoff=handoff,
        )
    else:
        ds = decode_step(source, cfg.chunk.decoder, handoff=handoff)
        ds = infer_stage(ds, job, max_workers=max_workers)
        if model.tensor:
            ds = ds.map(store_stage, num_cpus=0.25)
        else:
            encode = functools.partial(encode_stage, config=cfg.encode, threads=TASK_CPUS)
            ds = ds.map(encode, num_cpus=TASK_CPUS)
    if sized_local_store() is not None and DATA_SHARE_ENV not in os.environ:
        ds.context.override_object_store_memory_limit_fraction = SIZED_STORE_DATA_FRACTION
    # raypipe shows its own progress; the run's context, not the process's: a notebook's
    # own datasets lost their progress bars for good after a run (a sweep)
    ds.context.enable_progress_bars = False
    if on_local_ray():  # one node that cannot grow: its resources from the start
        use_fixed_cluster(ds.context)
    return ds


DATA_SHARE_ENV = "RAY_DATA_OBJECT_STORE_MEMORY_LIMIT_FRACTION"
"""Ray Data's own setting of its share of the object store: set in the driver's
environment, it wins over :data:`SIZED_STORE_DATA_FRACTION` (``benchmarks/store.py``
compares shares with it)."""


SIZED_STORE_DATA_FRACTION = 0.75
"""The share of the object store Ray Data may fill with a run's chunks on a local Ray
whose store raypipe sized for them (:func:`raypipe.distributed.cluster.local_store_bytes`:
the chunks the pipeline holds at once, and two more); Ray Data's own default is half.

At half, the stages took turns: each operator's share of that half held about one 720p
chunk, so the next decode waited for the actor to take the last one and the actor for an
encode to finish, and one encode ran at a time, whatever CPU slots were free. 60 s 720p
identity runs on 2 vCPUs at Ray's scheduling pace (benchmarks/README.md, session 26;
``benchmarks/store.py --data-shares``): half, three quarters and the whole store kept
1.81, 1.93 and 1.95 cores busy with 1.3, 1.7 and 1.82 encodes at once; the walls stayed
within the machine's noise (48.2, 49.9, 52.2 s, medians of 3 rounds: the same work took
more CPU when more of it ran at once on 2 vCPUs), and the page faults grew with the share
(0.88, 1.17, 1.38 M). In another batch the whole store doubled the system CPU against
three quarters. Three quarters, so that the pipeline runs as many tasks as its CPU slots
allow without filling the store; no chunk spilled. A Ray raypipe did not start with a
size (``--address``, archives, ``raypipe.data``) keeps Ray Data's default, as does a run
with :data:`DATA_SHARE_ENV` set."""


def decode_step(
    source: ray.data.Dataset, decoder: str, *, handoff: YuvRule | None = None
) -> ray.data.Dataset:
    """Decode tasks over ``source``'s rows: one row per block, so a plan task's rows become
    separate decode tasks, each :func:`decode_batch` over a one-row numpy batch (its
    frames handed on as a view). ``handoff``: the run's YUV hand-off rule."""
    source.context.target_max_block_size = 1
    decode = functools.partial(decode_batch, decoder=decoder, threads=TASK_CPUS, handoff=handoff)
    return source.map_batches(decode, batch_size=1, batch_format="numpy", num_cpus=TASK_CPUS)


def import_ray_data() -> None:
    """Ray Data imported whole before a run's first dataset, with Ctrl-C held meanwhile
    (:func:`raypipe.exiting.ctrl_c_held`): an import cut short left ``ray.data`` half made
    for the rest of the process (a notebook's next run failed with ``module 'ray.data' has
    no attribute '_internal'``). Imported here, not earlier, so that it overlaps the start
    of the local Ray's workers."""
    with ctrl_c_held():
        import ray.data  # noqa: F401


def video_source(planned: Sequence[PlannedVideo], *, lanes: int = 0) -> ray.data.Dataset:
    """Rows of videos planned on the driver (:func:`video_rows` of each), one per block;
    with ``lanes`` (one video), in that many blocks of consecutive chunks
    (:func:`lane_rows`)."""
    import_ray_data()
    rows = [row for p in planned for row in video_rows(p)]
    if lanes <= 1 or len(planned) != 1:
        return ray.data.from_items(rows, override_num_blocks=len(rows))
    return row_blocks(lane_rows(rows, lanes))


def row_blocks(groups: Sequence[Sequence[Row]]) -> ray.data.Dataset:
    """A dataset of one block per group of rows, every block with one schema (that of all
    the rows). ``from_blocks`` as ``from_items`` does it (a put and local metadata per
    block), with the blocks ours; ``from_arrow`` would run a Ray task per block for its
    metadata."""
    schema = pa.Table.from_pylist([row for group in groups for row in group]).schema
    return ray.data.from_blocks([pa.Table.from_pylist(list(g), schema=schema) for g in groups])


LANE_CHUNKS = 16
"""About the most chunks a lane holds (:func:`fused_lanes`)."""


def fused_lanes(planned: PlannedVideo, actors: ActorPlan) -> int:
    """How many lanes of consecutive chunks a video goes through fused actors in (0: a
    block per chunk, the actors taking whichever chunk comes next).

    A chunk that starts inside a GOP decodes the GOP from its keyframe and drops the frames
    before its start (pre-roll), unless the process's decoder stands just before it
    (:func:`raypipe.media.decode.decode_chunk`'s ``carry``): the chunk before went through
    the same actor. Chunks taken in turn by whichever actor is free alternate between the
    actors, and every actor decodes nearly every frame. In lanes, an actor takes a run of
    consecutive chunks in one call and its decoder goes on from one to the next: one
    pre-roll per lane. So for a video that splits a GOP, as many lanes as actors, more (a
    multiple of the actors) when the lanes would hold more than :data:`LANE_CHUNKS` chunks
    each: a lane that fails is done again as a whole, and shorter lanes leave less for the
    last one to finish alone."""
    rows = [r for r in planned.rows if r["kind"] == "chunk"]
    workers = max(1, min(actors.workers, len(rows)))
    if not actors.fused or workers < 2 or not any(_inside_gop(r) for r in rows):
        return 0
    rounds = -(-len(rows) // (workers * LANE_CHUNKS))
    return workers * rounds


def _inside_gop(row: Row) -> bool:
    """Whether a chunk row starts after the keyframe it is decoded from."""
    return int(row["index"]) > 0 and int(row["seek_pts"]) != int(row["start_pts"])


def lane_rows(rows: Sequence[Row], lanes: int) -> list[list[Row]]:
    """``rows`` (one video's, in order) in ``lanes`` runs of consecutive rows (fewer when
    there are fewer rows), each ending where the frames before it come nearest to its share
    of the video's frames."""
    lanes = max(1, min(lanes, len(rows)))
    ends = [0]
    for frames in (max(1, int(r["n_frames"])) for r in rows):
        ends.append(ends[-1] + frames)  # ends[j]: the frames of rows[:j]
    total, cuts = ends[-1], [0]
    for lane in range(1, lanes):
        share = total * lane / lanes
        # at least a row for this lane and for each of the lanes after it
        candidates = range(cuts[-1] + 1, len(rows) - (lanes - lane) + 1)
        cuts.append(min(candidates, key=lambda j: abs(ends[j] - share)))
    cuts.append(len(rows))
    return [list(rows[a:b]) for a, b in zip(cuts, cuts[1:])]


PLAN_BLOCKS = 128
"""About this many blocks of job rows at most (:func:`plan_block_sizes`): each block is one
plan task that plans its videos one after the other and hands each video's rows on as soon
as that video is planned. Every block costs the driver a put and Ray Data's bookkeeping
before the first task starts (about 2.4 ms each here: 4.8 s for 2000), so a larger archive
gets longer blocks, not more."""


def plan_block_sizes(n: int, max_blocks: int = PLAN_BLOCKS) -> list[int]:
    """How many job rows each plan block gets: 1, 2, 4, … up to ``ceil(n / max_blocks)``,
    then that many each (at most ``max_blocks`` + log2 of it blocks in all).

    The first blocks are short so the first videos are planned, and their plan task's
    worker freed for the first chunks, as soon in a large archive as in a small one: with
    equal blocks, 2000 videos put 16 in the first plan task, which held its worker 3–4 s
    on this machine while the first chunk waited for a new worker process to start."""
    full = max(1, -(-n // max_blocks))
    sizes: list[int] = []
    size = 1
    while n > 0:
        sizes.append(min(size, full, n))
        n -= sizes[-1]
        size *= 2
    return sizes


def archive_source(
    jobs: Sequence[VideoJob],
    chunk: ChunkConfig,
    *,
    resume: bool,
    key: ReuseKey | None,
    model: ModelFacts,
    encode: EncodeConfig | None = None,
) -> ray.data.Dataset:
    """Jobs planned inside the dataset: plan tasks (probe, chunks, resume checks; one per
    block of :func:`plan_block_sizes`, each planning its block's videos in order) emit each
    video's row and its chunk rows, so chunks start as soon as the first videos are planned
    and the driver never holds every chunk row."""
    import_ray_data()
    rows = [job_row(j) for j in jobs]
    groups, start = [], 0
    for size in plan_block_sizes(len(rows)):
        groups.append(rows[start : start + size])
        start += size
    ds = row_blocks(groups)
    stage = functools.partial(
        plan_stage, chunk=chunk, resume=resume, key=key, model=model, encode=encode
    )
    # fewer CPUs than decode: Ray Data does not fuse the two (decode must stay a task per
    # chunk); few at once, or plan tasks fill every CPU slot (and start a Python worker
    # each) while the first chunks wait to decode. The cap is a task pool's size: Ray
    # 2.51+ logs a deprecation warning on stderr for ``concurrency=`` (every archive run)
    pool = ray.data.TaskPoolStrategy(size=plan_tasks())
    return ds.flat_map(stage, num_cpus=0.5, compute=pool)


def plan_tasks() -> int:
    """Plan tasks that may run at once: one per 16 CPUs of the cluster, at least one.
    Planning a video (an index read, one frame decoded) costs a small share of processing
    it, so few keep ahead; more would take the CPUs the first chunks need."""
    cpus = int(ray.cluster_resources().get("CPU", 0)) if ray.is_initialized() else 0
    return max(1, cpus // 16)
