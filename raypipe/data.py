"""Ray Data pieces for your own Ray Data programs: read chunks, process, write videos.

raypipe's pipeline as three composable steps, with your own ``map_batches`` steps wherever
you want them::

    import raypipe.data as rd

    ds = rd.read_video_chunks(["a.mp4", "s3://bucket/b.mp4"], chunk_frames=32)
    ds = rd.map_processor(ds, "builtin:sharpen")  # or a raypipe.Processor, or an .onnx
    ds = ds.map_batches(add_logo, batch_size=1)  # yours: a row's frames in, frames out
    for result in rd.write_videos(ds, "out/", crf=18):
        print(result.uri, result.status, result.frames_out)

- :func:`read_video_chunks` plans every video (in Ray tasks: probe + keyframe-aligned
  chunks) and returns a dataset with one row per chunk, decoded in CPU tasks: ``video_id``,
  ``uri``, ``index`` (chunk index), ``n_chunks``, ``frames`` (n, H, W, 3) uint8 RGB in
  display order, ``pts`` (n,) in the stream's time base, and what writing needs (time base,
  rate, ``chunk_id``, ``error_type``/``error_message``, ...). A video that cannot be read
  is one row with ``error_type`` set.
- :func:`map_processor` is the inference actor pool: a :class:`raypipe.Processor` (class,
  instance, ``file.py:Class`` or ``package.module:Class``) or a model (``builtin:NAME``,
  a path or URL of an ``.onnx``). Frames are replaced by the output frames; a tensor
  output puts the chunk's table (Parquet bytes, the analysis layout) in ``segment``.
- :func:`write_videos` encodes each chunk in a CPU task and assembles each video on the
  driver as its last chunk arrives: frames, timestamps and durations exact, audio and
  subtitles stream-copied, written atomically to ``output_dir/<input file name>``, as
  ``raypipe run`` does. It returns one :class:`~raypipe.distributed.engine.VideoResult`
  per video (failed ones with their typed error).

A step of yours gets numpy batches; with ``batch_size=1`` ``batch["frames"][0]`` is one
chunk's frames. It must keep the number of frames and the row's other columns (return
``{**batch, "frames": new}``), and frames must stay uint8 RGB of one size per video.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import ray

from raypipe import storage
from raypipe.config import ChunkConfig, ModelConfig, RunConfig, RuntimeConfig, build_run_config
from raypipe.distributed.cluster import ActorPlan, connect, plan_actors
from raypipe.distributed.dataset import infer_stage
from raypipe.distributed.engine import (
    PlannedVideo,
    VideoJob,
    VideoResult,
    _VideoState,
    work_dir_for,
)
from raypipe.distributed.stages import TASK_CPUS, Row, chunk_row, decode_stage, encode_stage
from raypipe.distributed.workload import ActorJob
from raypipe.errors import ConfigError, OutputExistsError
from raypipe.media.encode import check_encoder
from raypipe.media.plan import plan_chunks
from raypipe.media.probe import make_video_id, probe

ENCODE_OPTIONS: tuple[str, ...] = ("codec", "crf", "preset", "pix_fmt", "encoder_options")
_MODEL_PREFIXES: tuple[str, ...] = ("builtin:", "sim:")


def _plan_rows(uri: str, chunk: ChunkConfig) -> list[Row]:
    """The chunk rows of one video (before decoding); one error row when it cannot be read."""
    try:
        info = probe(uri)
        plan = plan_chunks(info, chunk)
    except Exception as e:  # noqa: BLE001 - the video fails alone, as a row
        row = chunk_row(_placeholder_info(uri), _placeholder_chunk(uri))
        row.update(error_type=type(e).__name__, error_message=" ".join(str(e).split()))
        return [{**row, "n_chunks": 1, "video_frames": 0}]
    rows, first = [], 0
    for c in plan.chunks:
        rows.append(
            {
                **chunk_row(info, c, first_index=first),
                "n_chunks": len(plan),
                "video_frames": info.n_frames,
            }
        )
        first += c.n_frames
    return rows


def _placeholder_info(uri: str) -> Any:
    """Row fields for a video that cannot be read (its only row carries the error): every
    row has the same columns, so Ray Data blocks stay one schema."""
    from raypipe.media.probe import VideoInfo

    return VideoInfo(
        uri=uri, video_id=make_video_id(uri), format_name="", codec="", stream_index=0,
        width=2, height=2, pix_fmt=None, time_base_num=1, time_base_den=1, rate_num=0,
        rate_den=1, rotation_degrees=0, pts=(), keyframe_pts=(),
    )  # fmt: skip


def _placeholder_chunk(uri: str) -> Any:
    from raypipe.media.plan import Chunk

    return Chunk(
        video_id=make_video_id(uri),
        index=0,
        start_pts=0,
        end_pts=1,
        n_frames=1,
        seek_pts=None,
        last_pts=0,
    )


def read_video_chunks(
    uris: str | Sequence[str],
    *,
    chunk_frames: int = 64,
    chunk: ChunkConfig | None = None,
    runtime: RuntimeConfig | None = None,
) -> ray.data.Dataset:
    """One row per chunk of every video in ``uris`` (see the module docstring).

    ``chunk`` gives every :class:`ChunkConfig` setting (``chunk_frames`` is ignored then);
    ``runtime`` says which Ray to use when none is connected yet (default: ``RAY_ADDRESS``,
    else a local Ray sized as ``raypipe run`` sizes it).
    """
    config = chunk or ChunkConfig(chunk_frames=chunk_frames)
    if config.samples:
        raise ConfigError("read_video_chunks reads every frame; frame sampling is not supported")
    uri_list = [uris] if isinstance(uris, str) else [os.fspath(u) for u in uris]
    if not uri_list:
        raise ConfigError("read_video_chunks got no URIs; pass a list of video paths or URLs")
    connect(runtime or RuntimeConfig())
    plan = ray.remote(num_cpus=0.5)(_plan_rows)
    rows = [row for rows in ray.get([plan.remote(u, config) for u in uri_list]) for row in rows]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    decode = functools.partial(decode_stage, decoder=config.decoder, threads=TASK_CPUS)
    return ds.map(decode, num_cpus=TASK_CPUS)


def _model_config(processor: Any, config: ModelConfig | None) -> ModelConfig:
    import dataclasses

    base = config or ModelConfig()
    is_model = isinstance(processor, str) and (
        processor.startswith(_MODEL_PREFIXES) or processor.endswith(".onnx") or ":" not in processor
    )
    if is_model:
        return dataclasses.replace(base, model=processor, processor=None)
    return dataclasses.replace(base, processor=processor)


def map_processor(
    ds: ray.data.Dataset,
    processor: Any,
    *,
    workers: int | None = None,
    num_gpus: float | None = None,
    config: ModelConfig | None = None,
) -> ray.data.Dataset:
    """``ds`` (from :func:`read_video_chunks`) through a pool of inference actors running
    ``processor``: a :class:`raypipe.Processor` (class, instance or target string) or a model
    (``builtin:NAME``, a path or URL ending in ``.onnx``).

    ``workers``: actors (default: one per GPU, or one without GPUs); ``num_gpus``: GPUs per
    actor (default 1 on a cluster with GPUs, else 0; 0.5 puts two actors on a GPU).
    ``config`` gives the other model settings (device, batch size, precision, engine cache,
    ``pad_multiple``, ...). The model or processor is loaded and checked here, on the driver.
    """
    from raypipe.distributed.pipeline import load_model

    model_config = _model_config(processor, config)
    loaded = load_model(RunConfig(model=model_config))
    connect(RuntimeConfig())
    if num_gpus is None:
        plan = plan_actors(RuntimeConfig(workers=workers), model_config)
    else:
        if num_gpus < 0:
            raise ConfigError(f"num_gpus must be >= 0, got {num_gpus!r}")
        gpus = float(ray.cluster_resources().get("GPU", 0))
        default = max(1, int(gpus / num_gpus)) if num_gpus > 0 else 1
        plan = ActorPlan(
            workers=workers or default, num_gpus=float(num_gpus), num_cpus=1.0, intra_op_threads=1
        )
    job = ActorJob(model=loaded, config=model_config, plan=plan)
    return infer_stage(ds, job, max_workers=plan.workers)


def write_videos(
    ds: ray.data.Dataset, output_dir: str, *, overwrite: bool = False, **encode_options: Any
) -> list[VideoResult]:
    """Encode and assemble every video of ``ds`` into ``output_dir/<input file name>``.

    ``encode_options`` are ``raypipe run``'s encoder options by their Python names
    (``codec``, ``crf``, ``preset``, ``pix_fmt``, ``encoder_options``). Returns one result per
    video, sorted by input URI; a failed video's result carries its typed error
    (``error_type``, ``error_message``) and nothing is written for it.
    """
    unknown = sorted(set(encode_options) - set(ENCODE_OPTIONS))
    if unknown:
        raise ConfigError(
            f"write_videos takes the encoder options {', '.join(ENCODE_OPTIONS)}; got {unknown}"
        )
    encode = build_run_config(**encode_options).encode
    check_encoder(encode)
    output_dir = os.fspath(output_dir)
    storage.makedirs(output_dir)
    encoded = ds.map(
        functools.partial(encode_stage, config=encode, threads=TASK_CPUS), num_cpus=TASK_CPUS
    )
    writer = _Writer(output_dir, overwrite=overwrite)
    for row in encoded.iter_rows():
        writer.add(row)
    return sorted(writer.results, key=lambda r: r.uri)


class _Writer:
    """Per-video state on the driver: segments to the work directory, assembly when done."""

    def __init__(self, output_dir: str, *, overwrite: bool) -> None:
        self.output_dir, self.overwrite = output_dir, overwrite
        self.states: dict[str, _VideoState] = {}
        self.finished: set[str] = set()
        self.names: dict[str, str] = {}  # output file name -> video id
        self.results: list[VideoResult] = []

    def add(self, row: Row) -> None:
        video_id = str(row["video_id"])
        if video_id in self.finished:
            return  # a chunk of a video that has already failed
        state = self.states.get(video_id) or self._start(row)
        state.add(row)
        if state.complete or state.error is not None:
            self.finished.add(video_id)
            self.results.append(state.finish())

    def _start(self, row: Row) -> _VideoState:
        uri, video_id = str(row["uri"]), str(row["video_id"])
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        clash = self.names.setdefault(name, video_id) != video_id
        # a clashing video never writes, and its work directory is its own
        output = storage.join(self.output_dir, f".{video_id}-{name}" if clash else name)
        planned = PlannedVideo(
            job=VideoJob(uri=uri, output=output),
            video_id=video_id,
            n_chunks=int(row["n_chunks"]),
            n_frames=int(row["video_frames"]),
            work_dir=work_dir_for(output),
        )
        state = _VideoState(planned)
        if clash:
            state.error = ("ConfigError", f"two inputs are named {name!r}; rename one of them")
        elif storage.exists(output) and not self.overwrite:
            error = OutputExistsError(f"output '{output}' exists; pass overwrite=True")
            state.error = (type(error).__name__, str(error))
        else:
            storage.makedirs(planned.work_dir)
        self.states[video_id] = state
        return state
