"""``raypipe.process_video`` and ``raypipe.process_archive`` with their options spelled out.

Each option is a named, typed keyword that an IDE and ``help()`` show; the functions build
the :class:`~raypipe.config.RunConfig` with :func:`~raypipe.config.build_run_config` (the
one place that maps flat option names onto the config sections, as the CLI does) and hand
it to :mod:`raypipe.distributed` (imported on the first call: Ray is heavy). An option
left out (:data:`KEEP`) keeps ``config``'s value, else the config's default.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from raypipe.config import RunConfig, build_run_config
from raypipe.exiting import ctrl_c_held

if TYPE_CHECKING:
    from raypipe.distributed.archive import ArchiveReport
    from raypipe.distributed.stats import RunStats


class Keep(enum.Enum):
    """The default of every option: keep ``config``'s value (or the config's default)."""

    KEEP = "KEEP"

    def __repr__(self) -> str:
        return "KEEP"


KEEP = Keep.KEEP


_ARCHIVE_ARGS = ("inputs", "output_dir", "config", "resume", "report_path")


def _run_config(config: RunConfig | None, options: dict[str, Any]) -> RunConfig:
    return build_run_config(config, **{k: v for k, v in options.items() if v is not KEEP})


def process_video(
    input: str,
    output: str,
    config: RunConfig | None = None,
    *,
    model: str | os.PathLike[str] | Keep = KEEP,
    processor: Any = KEEP,
    device: Literal["auto", "cpu", "gpu"] | Keep = KEEP,
    batch_size: int | Keep = KEEP,
    precision: Literal["fp32", "fp16"] | Keep = KEEP,
    engine_cache: str | None | Keep = KEEP,
    tile: int | None | Keep = KEEP,
    tile_overlap: int | None | Keep = KEEP,
    resize: Literal["none", "stretch", "letterbox"] | None | Keep = KEEP,
    pad_multiple: int | None | Keep = KEEP,
    window: tuple[int, int] | None | Keep = KEEP,
    warmup_frames: int | None | Keep = KEEP,
    chunk_frames: int | Keep = KEEP,
    chunk_mib: float | None | Keep = KEEP,
    split_gops: bool | Keep = KEEP,
    every_n_frames: int | Keep = KEEP,
    sample_fps: float | None | Keep = KEEP,
    decoder: str | Keep = KEEP,
    handoff: str | Keep = KEEP,
    codec: str | Keep = KEEP,
    crf: int | None | Keep = KEEP,
    preset: str | None | Keep = KEEP,
    pix_fmt: str | None | Keep = KEEP,
    encoder_options: dict[str, str] | Keep = KEEP,
    address: str | None | Keep = KEEP,
    workers: int | None | Keep = KEEP,
    workers_per_gpu: int | Keep = KEEP,
    actor_num_cpus: float | Keep = KEEP,
    local_num_cpus: int | None | Keep = KEEP,
    local_num_gpus: int | None | Keep = KEEP,
    local_object_store_bytes: int | None | Keep = KEEP,
    stages: str | Keep = KEEP,
    overwrite: bool | Keep = KEEP,
    stats_path: str | None | Keep = KEEP,
    quiet: bool | Keep = KEEP,
    verbose: bool | Keep = KEEP,
) -> RunStats:
    """Process one video with a model on the Ray cluster and write ``output``; return its
    :class:`~raypipe.distributed.stats.RunStats`.

    ``raypipe.process_video("in.mp4", "out.mp4", model="builtin:sharpen")``. ``input`` and
    ``output`` are local paths or fsspec URLs (``s3://...``); a tensor-output model
    (``builtin:phash``) writes a Parquet folder at ``output``. Raises a
    :class:`~raypipe.errors.RaypipeError` subclass and leaves nothing at ``output`` when
    the run fails. Options left out keep ``config``'s value (default: ``RunConfig()``).
    Ray stays connected after the run, and the nodes start the worker processes a next
    run's actors will take (a notebook's next run starts sooner: see "A warm driver" in
    the README).

    Args:
        config: a whole :class:`~raypipe.config.RunConfig`; the options below override it.
        model: ``builtin:NAME``, or a path (str or Path)/URL of an .onnx (default
            ``builtin:identity``).
        processor: a :class:`raypipe.Processor` subclass or instance, or ``"file.py:Class"``:
            your Python around the models, instead of ``model``.
        device: ``auto`` (a GPU when the cluster has one), ``cpu`` or ``gpu``.
        batch_size: frames per inference call (default 8; fewer where a call's frames, as
            the model takes them, would pass 256 MiB: 2 at 4K in float32).
        precision: ``fp32`` or ``fp16`` (GPU providers).
        engine_cache: TensorRT engine cache URL (default ``RAYPIPE_ENGINE_CACHE``).
        tile: tile side in px for big frames (overrides the model's spec).
        tile_overlap: overlap between tiles in px.
        resize: for fixed-size models: ``none``, ``stretch`` or ``letterbox``.
        pad_multiple: pad height and width to multiples of this (stride-32 models: 32).
        window: a window model's ``(before, after)`` frames around each frame (overrides
            the model's spec; see "Temporal models" in the README).
        warmup_frames: a recurrent model's warm-up frames before each chunk.
        chunk_frames: about how many frames per chunk (default 64).
        chunk_mib: at most this many MiB of a chunk's frames, decoded and as the model
            outputs them, as RGB (default 1024: 21 frames of 4K through a model that keeps
            the size); ``None``: no cap.
        split_gops: cut long GOPs inside (default True).
        every_n_frames: analysis only: frames 0, N, 2N, ...
        sample_fps: analysis only: the first frame of each 1/F second.
        decoder: ``auto``, ``cpu`` or ``nvdec`` (see ``raypipe doctor``).
        handoff: ``auto``, ``rgb`` or ``yuv``: how decoded frames reach the model (YUV:
            half the bytes, converted to the same RGB in the model's graph; ``auto``: YUV
            to actors on a GPU).
        codec: output video encoder (default ``auto``: libx264, or VP9 for a ``.webm``).
        crf: encoder quality (default 18; None leaves it to ``encoder_options``).
        preset: encoder preset (default ``medium``).
        pix_fmt: output pixel format (default: the source's depth and chroma, or the
            codec's nearest).
        encoder_options: more encoder options, e.g. ``{"qp": "0"}``.
        address: Ray cluster address (default ``RAY_ADDRESS``, else a local Ray).
        workers: inference actors (default: one per GPU; without GPUs one per two of the
            cluster's CPUs, each decoding and encoding its chunks, see ``stages``).
        workers_per_gpu: inference actors sharing each GPU (default 1).
        actor_num_cpus: CPUs each inference actor reserves (default 1.0).
        local_num_cpus: logical CPUs of the local Ray (default twice the cores, at least 4).
        local_num_gpus: GPUs of the local Ray (default: Ray detects them).
        local_object_store_bytes: object store of the local Ray (default: sized from the
            video's chunks and the model's output size, at most Ray's default).
        stages: ``auto``, ``split`` or ``fused``: a chunk decoded and encoded in CPU tasks
            around the inference actors, or in the actors themselves (``auto``: in the
            actors where they run on the CPU).
        overwrite: replace ``output`` if it exists (default False).
        stats_path: write the run's stats JSON here (``raypipe report`` draws it).
        quiet: no progress display (default False).
        verbose: leave Ray's own log lines on the terminal too (default False: they go to
            the Ray session's log files).
    """
    options = {k: v for k, v in locals().items() if k not in ("input", "output", "config")}
    with ctrl_c_held():  # Ray and Ray Data's imports, not to be cut in half
        from raypipe.distributed.pipeline import process_video as run
        from raypipe.distributed.prestart import start_for_next_run

    stats = run(input, output, _run_config(config, options))
    start_for_next_run(stats)  # Ray stays connected: a next run finds its processes started
    return stats


def process_archive(
    inputs: str | Sequence[str],
    output_dir: str,
    config: RunConfig | None = None,
    *,
    resume: bool = True,
    report_path: str | None = None,
    model: str | os.PathLike[str] | Keep = KEEP,
    processor: Any = KEEP,
    device: Literal["auto", "cpu", "gpu"] | Keep = KEEP,
    batch_size: int | Keep = KEEP,
    precision: Literal["fp32", "fp16"] | Keep = KEEP,
    engine_cache: str | None | Keep = KEEP,
    tile: int | None | Keep = KEEP,
    tile_overlap: int | None | Keep = KEEP,
    resize: Literal["none", "stretch", "letterbox"] | None | Keep = KEEP,
    pad_multiple: int | None | Keep = KEEP,
    window: tuple[int, int] | None | Keep = KEEP,
    warmup_frames: int | None | Keep = KEEP,
    chunk_frames: int | Keep = KEEP,
    chunk_mib: float | None | Keep = KEEP,
    split_gops: bool | Keep = KEEP,
    every_n_frames: int | Keep = KEEP,
    sample_fps: float | None | Keep = KEEP,
    decoder: str | Keep = KEEP,
    handoff: str | Keep = KEEP,
    codec: str | Keep = KEEP,
    crf: int | None | Keep = KEEP,
    preset: str | None | Keep = KEEP,
    pix_fmt: str | None | Keep = KEEP,
    encoder_options: dict[str, str] | Keep = KEEP,
    address: str | None | Keep = KEEP,
    workers: int | None | Keep = KEEP,
    workers_per_gpu: int | Keep = KEEP,
    actor_num_cpus: float | Keep = KEEP,
    local_num_cpus: int | None | Keep = KEEP,
    local_num_gpus: int | None | Keep = KEEP,
    local_object_store_bytes: int | None | Keep = KEEP,
    stages: str | Keep = KEEP,
    stats_path: str | None | Keep = KEEP,
    quiet: bool | Keep = KEEP,
    verbose: bool | Keep = KEEP,
) -> ArchiveReport:
    """Process every video named by ``inputs`` into ``output_dir``; return the
    :class:`~raypipe.distributed.archive.ArchiveReport` (one row per video; its
    ``exit_code`` is 3 when some failed).

    ``raypipe.process_archive("videos/", "processed/", model="builtin:sharpen")``.
    ``inputs``: a directory or prefix, a glob, a URI list (.txt), a CSV/Parquet manifest
    (see :mod:`raypipe.inputs`) or a list of URIs. Resumable: a video whose output is
    already done with the same settings is skipped. Options left out keep ``config``'s
    value (default: ``RunConfig()``).

    Args:
        config: a whole :class:`~raypipe.config.RunConfig`; the options below override it.
        resume: skip videos already done with the same settings (default True).
        report_path: where the report goes (default ``OUTPUT_DIR/_raypipe-report.parquet``).
        model: ``builtin:NAME``, or a path (str or Path)/URL of an .onnx (default
            ``builtin:identity``).
        processor: a :class:`raypipe.Processor` subclass or instance, or ``"file.py:Class"``.
        device: ``auto`` (a GPU when the cluster has one), ``cpu`` or ``gpu``.
        batch_size: frames per inference call (default 8; fewer where a call's frames, as
            the model takes them, would pass 256 MiB: 2 at 4K in float32).
        precision: ``fp32`` or ``fp16`` (GPU providers).
        engine_cache: TensorRT engine cache URL (default ``RAYPIPE_ENGINE_CACHE``).
        tile: tile side in px for big frames (overrides the model's spec).
        tile_overlap: overlap between tiles in px.
        resize: for fixed-size models: ``none``, ``stretch`` or ``letterbox``.
        pad_multiple: pad height and width to multiples of this (stride-32 models: 32).
        window: a window model's ``(before, after)`` frames around each frame (overrides
            the model's spec; see "Temporal models" in the README).
        warmup_frames: a recurrent model's warm-up frames before each chunk.
        chunk_frames: about how many frames per chunk (default 64).
        chunk_mib: at most this many MiB of a chunk's frames, decoded and as the model
            outputs them, as RGB (default 1024: 21 frames of 4K through a model that keeps
            the size); ``None``: no cap.
        split_gops: cut long GOPs inside (default True).
        every_n_frames: analysis only: frames 0, N, 2N, ...
        sample_fps: analysis only: the first frame of each 1/F second.
        decoder: ``auto``, ``cpu`` or ``nvdec`` (see ``raypipe doctor``).
        handoff: ``auto``, ``rgb`` or ``yuv``: how decoded frames reach the model (YUV:
            half the bytes, converted to the same RGB in the model's graph; ``auto``: YUV
            to actors on a GPU).
        codec: output video encoder (default ``auto``: libx264, or VP9 for a ``.webm``).
        crf: encoder quality (default 18; None leaves it to ``encoder_options``).
        preset: encoder preset (default ``medium``).
        pix_fmt: output pixel format (default: the source's depth and chroma, or the
            codec's nearest).
        encoder_options: more encoder options, e.g. ``{"qp": "0"}``.
        address: Ray cluster address (default ``RAY_ADDRESS``, else a local Ray).
        workers: inference actors (default: one per GPU; without GPUs one per two of the
            cluster's CPUs, each decoding and encoding its chunks, see ``stages``).
        workers_per_gpu: inference actors sharing each GPU (default 1).
        actor_num_cpus: CPUs each inference actor reserves (default 1.0).
        local_num_cpus: logical CPUs of the local Ray (default twice the cores, at least 4).
        local_num_gpus: GPUs of the local Ray (default: Ray detects them).
        local_object_store_bytes: object store of the local Ray (default: Ray's).
        stages: ``auto``, ``split`` or ``fused``, as for :func:`process_video`.
        stats_path: write the run's stats JSON here.
        quiet: no progress display (default False).
        verbose: leave Ray's own log lines on the terminal too (default False).
    """
    options = {k: v for k, v in locals().items() if k not in _ARCHIVE_ARGS}
    with ctrl_c_held():
        from raypipe.distributed.archive import process_archive as run

    return run(
        inputs,  # type: ignore[arg-type]
        output_dir,
        _run_config(config, options),
        resume=resume,
        report_path=report_path,
    )
