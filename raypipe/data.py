"""Ray Data pieces for your own Ray Data programs: read chunks, process, write videos.

raypipe's pipeline as three composable steps, with your own ``map_batches`` steps wherever
you want them::

    import raypipe.data as rd

    ds = rd.read_video_chunks(["a.mp4", "s3://bucket/b.mp4"], chunk_frames=32)
    ds = rd.map_processor(ds, "builtin:sharpen")  # or a raypipe.Processor, or an .onnx
    ds = ds.map_batches(add_logo, batch_size=1)  # yours: a row's frames in, frames out
    for result in rd.write_videos(ds, "out/", crf=18):
        print(result.uri, result.status, result.frames_out)

- :func:`read_video_chunks` plans every video (in Ray Data tasks: probe + keyframe-aligned
  chunks) and returns a dataset with one row per chunk, decoded in CPU tasks: ``video_id``,
  ``uri``, ``index`` (chunk index), ``frames`` (n, H, W, 3) uint8 RGB in display order,
  ``pts`` (n,) in the stream's time base, and what writing needs (time base, rate,
  ``chunk_id``, ``error_type``/``error_message``, ...). What writing needs to know about a
  video (its ``n_chunks``, frames, output) rides as JSON in the ``video`` column of its
  first chunk row; a video that cannot be read is one *video row* (``kind`` ``video``
  instead of ``chunk``, its ``error_type`` and ``error_message`` set).
  Steps of yours should pass rows whose ``kind`` is not ``chunk`` through unchanged, and
  keep every column of a chunk row.
- :func:`map_processor` is the inference actor pool: a :class:`raypipe.Processor` (class,
  instance, ``file.py:Class`` or ``package.module:Class``) or a model (``builtin:NAME``,
  a path or URL of an ``.onnx``). Frames are replaced by the output frames; a tensor
  output puts the chunk's table (Parquet bytes, the analysis layout) in ``segment``.
- :func:`write_videos` encodes each chunk in a CPU task (which writes the segment to the
  video's work directory) and assembles each video in a Ray task as its last chunk is in:
  frames, timestamps and durations exact, audio and subtitles stream-copied, written
  atomically to ``output_dir/<input file name>``, as ``raypipe run`` does. It returns one
  :class:`~raypipe.distributed.planning.VideoResult` per video (failed ones with their
  typed error).

A step of yours gets numpy batches; with ``batch_size=1`` ``batch["frames"][0]`` is one
chunk's frames. It must keep the number of frames and the row's other columns (return
``{**batch, "frames": new}``), and frames must stay uint8 RGB of one size per video.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterable, Sequence
from typing import Any

import ray

from raypipe import storage
from raypipe.config import ChunkConfig, ModelConfig, RunConfig, RuntimeConfig, build_run_config
from raypipe.distributed.chunk_log import ChunkLog
from raypipe.distributed.chunk_task import Row, output_of
from raypipe.distributed.cluster import connect, plan_actor_gpus, plan_actors
from raypipe.distributed.dataset import archive_source, decode_step, infer_stage
from raypipe.distributed.planning import (
    ModelFacts,
    VideoFacts,
    VideoJob,
    VideoResult,
    work_dir_for,
)
from raypipe.distributed.runner import Runner
from raypipe.distributed.stages import TASK_CPUS, encode_stage
from raypipe.distributed.workload import ActorJob
from raypipe.errors import ConfigError, OutputExistsError
from raypipe.media.encode import check_encoder

ENCODE_OPTIONS: tuple[str, ...] = ("codec", "crf", "preset", "pix_fmt", "encoder_options")
_MODEL_PREFIXES: tuple[str, ...] = ("builtin:", "sim:")


def _jobs(uris: list[str]) -> list[VideoJob]:
    """A job per input, its output the input's file name (resolved against the output
    directory by :func:`write_videos`); a second input of the same name fails."""
    jobs, seen = [], set()
    for uri in uris:
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        error = f"two inputs are named {name!r}; rename one of them" if name in seen else ""
        seen.add(name)
        jobs.append(VideoJob(uri=uri, output=name, error=error))
    return jobs


def read_video_chunks(
    uris: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    chunk_frames: int = 64,
    chunk_mib: float | None = ChunkConfig.chunk_mib,
    chunk: ChunkConfig | None = None,
    runtime: RuntimeConfig | None = None,
) -> ray.data.Dataset:
    """One row per chunk of every video in ``uris`` (see the module docstring).

    ``chunk`` gives every :class:`ChunkConfig` setting (``chunk_frames`` and ``chunk_mib``
    are ignored then);
    ``runtime`` says which Ray to use when none is connected yet (default: ``RAY_ADDRESS``,
    else a local Ray sized as ``raypipe run`` sizes it).
    """
    config = chunk or ChunkConfig(chunk_frames=chunk_frames, chunk_mib=chunk_mib)
    if config.samples:
        raise ConfigError("read_video_chunks reads every frame; frame sampling is not supported")
    if isinstance(uris, (str, os.PathLike)):  # one video (a pathlib.Path was iterated)
        uris = [uris]
    elif not isinstance(uris, Iterable):
        raise ConfigError(f"uris must be a path, a URL or a list of them, got {uris!r}")
    uri_list = [storage.absolute(storage.path_text(u, "a video URI")) for u in uris]
    if not uri_list:
        raise ConfigError("read_video_chunks got no URIs; pass a list of video paths or URLs")
    connect(runtime or RuntimeConfig())
    jobs = _jobs(uri_list)
    ds = archive_source(jobs, config, resume=False, key=None, model=ModelFacts())
    return decode_step(ds, config.decoder)


def _model_config(processor: Any, config: ModelConfig | None) -> ModelConfig:
    import dataclasses

    base = config or ModelConfig()
    if processor is None:  # it ran the identity model without a word (a sweep)
        raise ConfigError(
            "map_processor needs a processor: a raypipe.Processor (class, instance, "
            "'file.py:Class' or 'package.module:Class') or a model ('builtin:NAME', a path "
            "or URL of an .onnx), got None"
        )
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
    Temporal models and processors (windows, state, interpolation) are refused: the rows
    of :func:`read_video_chunks` carry no context frames.
    """
    from raypipe.distributed.setup import load_model

    model_config = _model_config(processor, config)
    loaded = load_model(RunConfig(model=model_config))
    if loaded.temporal.active:
        raise ConfigError(
            f"{processor!r} is temporal ({loaded.temporal.describe()}): it needs frames around "
            "each chunk, which read_video_chunks rows do not carry; run it with "
            "raypipe.process_video or raypipe.process_archive"
        )
    connect(RuntimeConfig())
    if num_gpus is None:
        plan = plan_actors(RuntimeConfig(workers=workers), model_config)
    else:
        plan = plan_actor_gpus(workers, num_gpus)
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
    cfg = build_run_config(**encode_options)
    check_encoder(cfg.encode)
    output_dir = storage.absolute(storage.path_text(output_dir, "output_dir"))
    problem = storage.writable_dir_problem(output_dir, make=True)
    if problem:
        raise ConfigError(f"output_dir '{output_dir}': {problem}")
    bind = functools.partial(_bind_output, output_dir=output_dir, overwrite=overwrite)
    encode = functools.partial(encode_stage, config=cfg.encode, threads=TASK_CPUS)
    encoded = ds.map(bind).map(encode, num_cpus=TASK_CPUS)
    runner = Runner(cfg, chunk_log=ChunkLog())
    return sorted(runner.run(encoded), key=lambda r: r.uri)


_BOUND_COLUMNS = ("kind", "video", "work_dir", "error_type")  # what _bind_output reads


def _bind_output(row: Row, *, output_dir: str, overwrite: bool) -> Row:
    """Resolve a row's output (a file name until now) against ``output_dir``: the video's
    output and work directory in its facts (the ``video`` column), a chunk row's work
    directory. An existing output (without ``overwrite``) fails its video: its rows carry
    the error, nothing is encoded."""
    missing = [c for c in _BOUND_COLUMNS if c not in row]
    if missing:  # a KeyError from here came back as a screen of Ray's retry text (a sweep)
        raise ConfigError(
            f"a chunk row reached write_videos without its columns {', '.join(missing)}: a "
            "step between raypipe.data's read_video_chunks and write_videos must keep every "
            "column of the rows it gets (return {**batch, 'frames': ...})"
        )
    out = dict(row)
    if row["video"]:
        out["video"] = _bind_facts(str(row["video"]), output_dir, overwrite).to_json()
    if row["kind"] != "chunk" or not row["work_dir"]:
        return out
    work_dir = storage.join(output_dir, str(row["work_dir"]))
    output = output_of(work_dir)
    out["work_dir"] = work_dir
    if row["error_type"]:
        return out
    if "segment" in row:  # a tensor model's table (map_processor): no frames to encode
        out.update(error_type="ConfigError", error_message=_TABLES_NOT_VIDEOS)
    elif storage.exists(output) and not overwrite:
        out.update(error_type="OutputExistsError", error_message=f"output '{output}' exists")
    return out


_TABLES_NOT_VIDEOS = (
    "the rows hold an analysis model's tables (map_processor with a tensor model), not "
    "frames: write_videos writes videos; read each chunk row's 'segment' column (Parquet "
    "bytes), or run raypipe.process_video with an output directory to write the tables"
)


def _bind_facts(text: str, output_dir: str, overwrite: bool) -> VideoFacts:
    facts = VideoFacts.from_json(text)
    if not facts.output:
        return facts
    output = storage.join(output_dir, facts.output)
    facts = dataclasses.replace(facts, output=output, work_dir=work_dir_for(output))
    if facts.status == "planned" and storage.exists(output) and not overwrite:
        error = OutputExistsError(f"output '{output}' exists; pass overwrite=True")
        return dataclasses.replace(
            facts, status="failed", error_type=type(error).__name__, error_message=str(error)
        )
    if facts.status == "planned":
        storage.makedirs(facts.work_dir)
    return facts
