"""What every run does before its dataset, shared by :func:`~raypipe.process_video`,
:func:`~raypipe.process_archive` and :mod:`raypipe.data`.

Two steps, so bad settings fail before the cluster is touched:

1. :func:`load_run` (on the driver, no cluster): the model's bytes and spec with the run's
   overrides, or the processor, checked; the encoder checked.
2. :func:`start_run` (connects): the NVENC fallback resolved where encode tasks run, the
   actor plan, the YUV hand-off (:func:`handoff_rule`) and the run's reuse key
   (:mod:`raypipe.reuse`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass

from raypipe import storage
from raypipe.config import OUTPUT_FORMATS, RunConfig, frame_bytes, ray_address_from_env
from raypipe.distributed.cluster import (
    ActorPlan,
    connect,
    fuse_stages,
    local_store_bytes,
    on_local_ray,
    plan_actors,
    sized_local_store,
    store_too_small,
)
from raypipe.distributed.planning import ModelFacts
from raypipe.distributed.workload import LoadedModel
from raypipe.errors import ConfigError, DeviceUnavailableError, OutputExistsError
from raypipe.infer.models import (
    BUILTIN_PREFIX,
    FrameModel,
    resolve_model_and_spec,
    yuv_model_problem,
)
from raypipe.infer.output_kind import ELEMENT_DTYPES, graph_io, not_a_picture
from raypipe.infer.processor_refs import ProcessorRef, identity_is_unique, processor_ref
from raypipe.infer.shapes import check_whole_scale
from raypipe.infer.simulated import is_simulated, parse_hold_seconds
from raypipe.infer.temporal_model import TemporalModel
from raypipe.media.containers import container_refuses, output_format
from raypipe.media.encode import check_encoder, is_nvenc, nvenc_fallback, nvenc_problem
from raypipe.media.probe import make_video_id
from raypipe.media.source import check_local, is_local, local_path
from raypipe.media.yuv import YuvRule
from raypipe.reuse import ReuseKey, reuse_key

log = logging.getLogger("raypipe")


@dataclass(frozen=True, kw_only=True)
class StartedRun:
    """A run ready for its dataset: settings (encoder resolved), actors, reuse key, and
    its YUV hand-off rule (None: frames go as RGB)."""

    cfg: RunConfig
    model: LoadedModel
    actors: ActorPlan
    key: ReuseKey
    handoff: YuvRule | None = None
    shared: bool = False  # a cluster raypipe did not start for this run (other jobs may hold it)


def load_run(cfg: RunConfig) -> LoadedModel:
    """Step 1: the model (or processor) loaded and checked, and the encoder checked unless
    the model outputs tables. Raises typed errors; touches no cluster."""
    model = load_model(cfg)
    if not model.tensor:
        check_encoder(cfg.encode)
    return model


def start_run(cfg: RunConfig, model: LoadedModel) -> StartedRun:
    """Step 2: connect to (or start) Ray, resolve the encoder on the cluster, plan the
    actors and compute the run's reuse key."""
    _check_local_gpu(cfg)
    connect(cfg.runtime, verbose=cfg.verbose)
    if not model.tensor:
        cfg = resolve_encoder(cfg)
    actors = fuse_stages(plan_actors(cfg.runtime, cfg.model), cfg.runtime)
    note = precision_note(cfg, actors)
    if note:
        log.warning(note)
    return StartedRun(
        cfg=cfg,
        model=model,
        actors=actors,
        key=run_key(cfg, model, actors),
        handoff=handoff_rule(cfg, model, actors),
        shared=not on_local_ray(),
    )


def precision_note(cfg: RunConfig, actors: ActorPlan) -> str:
    """Why ``--precision fp16`` changes nothing in this run (``""`` where it may): it asks
    for FP16 TensorRT engines, and actors that hold no GPU run the model on the CPU at its
    own precision (the run said nothing, its stats CPUExecutionProvider alone: a sweep)."""
    if cfg.model.precision != "fp16" or actors.uses_gpu or cfg.model.processor is not None:
        return ""
    return (
        "--precision fp16 asks for FP16 TensorRT engines on GPUs; this run's actors hold no "
        "GPU, so the model runs on the CPU at its own precision"
    )


def _check_local_gpu(cfg: RunConfig) -> None:
    """``--device gpu`` on a local Ray this run would start: fail before starting it when
    this machine has no GPU ONNX Runtime can use, saying why (a CPU build, no driver). It
    failed after Ray's start (12 s here) saying the cluster has no GPU resources, with
    `ray start --num-gpus`, which is not what to do."""
    import ray

    if cfg.model.device != "gpu":
        return
    if ray.is_initialized():  # the local Ray an earlier run started in this process too (a
        # notebook's second run got the advice to `ray start --num-gpus`; a sweep)
        if not on_local_ray() or ray.cluster_resources().get("GPU", 0):
            return
    elif cfg.runtime.address or ray_address_from_env() or cfg.runtime.local_num_gpus:
        return  # a cluster's nodes have their own GPUs; logical GPUs are the caller's own
    from raypipe.infer.provider_check import check_gpu_stack

    problem = check_gpu_stack().device_problem("gpu")
    if problem:
        raise DeviceUnavailableError(
            f"device 'gpu' asked for, but this machine has no GPU that ONNX Runtime can use: "
            f"{problem}; `raypipe doctor --device gpu` says more, or pass --device cpu "
            "(device='cpu' in Python)"
        )


def size_local_store(
    cfg: RunConfig, model: LoadedModel, *, height: int, width: int, max_frames: int
) -> RunConfig:
    """``cfg`` with the object store of the local Ray this run will start sized for its
    chunks (:func:`~raypipe.distributed.cluster.local_store_bytes`): at most ``max_frames``
    frames of ``height`` x ``width`` px each, as RGB, plus the model's output for them.

    ``cfg`` as it is when the run does not start a local Ray (Ray is connected, or an
    address is given), when the size is given (``local_object_store_bytes``, or Ray's
    ``RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION``), or when the output's size is not known
    from the model's graph (:func:`chunk_bytes`). On a connected local Ray sized for
    smaller chunks it warns that chunks will spill."""
    import ray

    runtime = cfg.runtime
    if ray.is_initialized():
        size = sized_local_store()
        if size is not None:  # the graph is read only then: a service's runs skip it
            chunk = chunk_bytes(model, height=height, width=width, frames=max_frames)
            if chunk is not None and (warning := store_too_small(size, chunk, runtime)):
                log.warning(warning)
        return cfg
    given = (
        runtime.local_object_store_bytes is not None
        or "RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION" in os.environ
    )
    if given or runtime.address or ray_address_from_env():
        return cfg
    chunk = chunk_bytes(model, height=height, width=width, frames=max_frames)
    if chunk is None:
        return cfg
    size = local_store_bytes(chunk, runtime)
    log.debug("local Ray object store: %d bytes (chunks of %d bytes)", size, chunk)
    return dataclasses.replace(
        cfg, runtime=dataclasses.replace(runtime, local_object_store_bytes=size)
    )


def model_facts(model: LoadedModel) -> ModelFacts:
    """What planning needs of ``model`` (:attr:`LoadedModel.output_scale`: ``None`` where
    its output frames' size is not known)."""
    return ModelFacts(
        tensor=model.tensor,
        temporal=model.temporal,
        output_scale=model.output_scale,
        geometry=model.geometry,
    )


def chunk_bytes(model: LoadedModel, *, height: int, width: int, frames: int) -> int | None:
    """The bytes one chunk of ``frames`` frames of ``height`` x ``width`` px holds in the
    object store, decoded (RGB) and as the model's output; None when the output's size is
    not known (:attr:`LoadedModel.output_scale`). An analysis model's outputs are counted
    as nothing beside its frames."""
    scale = model.output_scale
    if scale is None:
        return None
    return round(frames * frame_bytes(width, height, scale))


def handoff_rule(cfg: RunConfig, model: LoadedModel, actors: ActorPlan) -> YuvRule | None:
    """The run's YUV hand-off (``--handoff``, :mod:`raypipe.media.yuv`), or None when frames
    go as RGB. ``auto`` hands off YUV only to actors that hold GPUs (they convert it in the
    model's wrapped graph, or on the host where their session got no GPU provider);
    ``yuv`` wherever the model can take it, and raises :class:`ConfigError` when it
    cannot (a processor, an analysis model, a temporal one, resized or tiled frames, a
    model the wrapper does not take). Either way the decode tasks send RGB for sources the
    hand-off does not take (:meth:`YuvRule.problem`)."""
    mode = cfg.chunk.handoff
    if mode == "rgb" or (mode == "auto" and not (actors.uses_gpu and cfg.model.device != "cpu")):
        return None
    if model.processor is not None:
        problem = "a processor gets RGB frames"
    elif model.spec is None:
        problem = "a simulated model gets RGB frames"
    elif model.tensor:
        problem = "an analysis model's inputs are prepared on the host, from RGB"
    else:
        problem = yuv_model_problem(model.data, model.spec)
    if not problem:
        assert model.spec is not None
        return YuvRule(pad_multiple=model.spec.pad_multiple)
    if mode == "yuv":
        raise ConfigError(f"--handoff yuv: {problem}; use --handoff auto or rgb")
    return None


def resolve_encoder(cfg: RunConfig) -> RunConfig:
    """``cfg`` with an NVENC codec replaced by its software fallback when NVENC cannot run
    where encode tasks run (probed in a Ray task on the cluster), saying so once."""
    if not is_nvenc(cfg.encode.codec):
        return cfg
    import ray

    problem = ray.get(ray.remote(num_cpus=0)(nvenc_problem).remote(cfg.encode.codec))
    if problem is None:
        return cfg
    encode, message = nvenc_fallback(cfg.encode, problem)
    log.warning(message)
    return dataclasses.replace(cfg, encode=encode)


def run_key(cfg: RunConfig, model: LoadedModel, actors: ActorPlan) -> ReuseKey:
    """The reuse key of a run with ``model`` on ``actors`` (:func:`raypipe.reuse.reuse_key`;
    a processor's part is its :func:`~raypipe.infer.processor_refs.processor_identity`)."""
    return reuse_key(
        cfg,
        model_bytes=model.data,
        spec=model.spec,
        uses_gpu=actors.uses_gpu,
        processor=model.processor.identity if model.processor is not None else "",
        tensor=model.tensor,
    )


def _check_travels(ref: ProcessorRef) -> None:
    """A processor given as a class or instance goes to the actors pickled, as Ray sends
    any callable: one that cannot be (it holds a lock, an open file, an ONNX Runtime
    session made in ``__init__``) is refused here, before any cluster work, rather than
    failing as Ray sends the first chunk with a dump of raypipe's internals."""
    if ref.obj is None:
        return
    from ray import cloudpickle

    try:
        cloudpickle.dumps(ref.obj)
    except Exception as e:  # noqa: BLE001 - pickling raises what the object's parts raise
        reason = " ".join(f"{type(e).__name__}: {e}".split())
        raise ConfigError(
            f"processor {ref.target}: it cannot be sent to the actors ({reason[:200]}); make "
            "sessions, locks, open files and the like in setup(ctx), which runs in each actor"
        ) from e


def load_model(cfg: RunConfig) -> LoadedModel:
    """The model's bytes and spec (sidecar or built-in, with the run's tile/resize/padding
    and window/warm-up overrides), checked on the driver so a model that does not load
    fails here, typed, before any cluster work starts. Simulated accelerators have no bytes.
    A processor is loaded and checked here too (its class, its declared output), but its
    ``setup`` runs in the actors only."""
    if cfg.model.processor is not None:
        ref = processor_ref(cfg.model.processor)
        _check_travels(ref)
        if identity_is_unique(ref.identity):
            log.warning(
                "processor %s: its code or its attributes cannot be compared from run to run "
                "(a class whose source Python cannot read, or an attribute that is not plain "
                "data), so a rerun redoes its videos; give the class a `version` attribute, "
                "raised whenever the code changes, to reuse them",
                ref.target,
            )
        _check_sampling(cfg, tensor=ref.output == "tensor")
        return LoadedModel(data=b"", spec=None, tensor=ref.output == "tensor", processor=ref)
    if is_simulated(cfg.model.model):
        parse_hold_seconds(cfg.model.model)
        return LoadedModel(data=b"", spec=None, tensor=False)
    data, _, spec = resolve_model_and_spec(cfg.model.model)
    if cfg.model.tile is not None:
        spec = dataclasses.replace(spec, tile=cfg.model.tile)
    if cfg.model.tile_overlap is not None:
        if spec.tile is None:  # it was left unused, without a word (a sweep)
            raise ConfigError(
                f"tile_overlap {cfg.model.tile_overlap} is the context around tiles, and the "
                "model is not tiled: give --tile PX too (tile=PX in Python), or leave it out"
            )
        spec = dataclasses.replace(spec, tile_overlap=cfg.model.tile_overlap)
    if cfg.model.resize is not None:
        spec = dataclasses.replace(spec, resize=cfg.model.resize)
    if cfg.model.pad_multiple is not None:
        spec = dataclasses.replace(spec, pad_multiple=cfg.model.pad_multiple)
    if cfg.model.window is not None:
        spec = dataclasses.replace(spec, window=cfg.model.window)
    if cfg.model.warmup_frames is not None:
        spec = dataclasses.replace(spec, warmup_frames=cfg.model.warmup_frames)
    if spec.temporal.active:  # frames out; its inputs and state names checked here
        TemporalModel(data, spec=spec, device="cpu")
        _check_sampling(cfg, tensor=False)  # it was left unused, without a word
        if spec.temporal.recurrent and not spec.temporal.warmup_frames:
            log.warning(
                "model %s carries a state from frame to frame but warms it up on no frames "
                "before a chunk: every chunk after a video's first starts from a zero state, "
                'a jump every chunk; give it "warmup_frames": K in its sidecar (or '
                "--warmup-frames K): K frames of history it needs",
                cfg.model.model,
            )
        return LoadedModel(data=data, spec=spec, tensor=False)
    frame_model = FrameModel(data, spec=spec, device="cpu")
    tensor = frame_model.output_kind == "tensor"
    _check_sampling(cfg, tensor=tensor)
    if not tensor:
        check_whole_scale(data, spec)
    if not cfg.model.model.startswith(BUILTIN_PREFIX):  # a built-in's range is right
        note = frame_model.range_note()
        if note:
            log.warning("model %s: %s", cfg.model.model, note)
    unused = frame_model.unused_spec()
    if unused:
        log.warning(
            "model %s takes uint8 pixels as they are: its spec's %s %s not used",
            cfg.model.model,
            ", ".join(unused),
            "is" if len(unused) == 1 else "are",
        )
    return LoadedModel(data=data, spec=spec, tensor=tensor, geometry=frame_model.geometry)


def _check_sampling(cfg: RunConfig, *, tensor: bool) -> None:
    if cfg.chunk.samples and not tensor:
        raise ConfigError(
            "frame sampling (every_n_frames / sample_fps) is for models that output tensors; "
            "a model that outputs frames must see every frame of the video"
        )


def same_file(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` name one file: the same local file (links included), or the
    same URL."""
    if is_local(a) and is_local(b):
        a, b = local_path(a), local_path(b)
        try:
            return os.path.samefile(a, b)
        except OSError:
            return os.path.abspath(a) == os.path.abspath(b)
    return a == b


def check_side_file(label: str, path: str, taken: dict[str, str], *, folder: bool = True) -> None:
    """Refuse ``path`` (``--stats``, ``--report``) where it names a file of ``taken`` (path ->
    what it is: the input, the output, a manifest): the stats JSON replaced the input video,
    or the run's own output, and the run said "wrote" (a sweep). Then, with ``folder``,
    check its folder (:func:`raypipe.storage.check_file_path`)."""
    for other, what in taken.items():
        if same_file(path, other):
            raise ConfigError(
                f"{label} '{path}' is {what}; give it a path of its own (raypipe does not "
                "write over its inputs or outputs)"
            )
    if folder:
        storage.check_file_path(label, path)


def table_output(output_dir: str, uri: str) -> str:
    """Where an analysis run writes ``uri``'s table: one hive partition per video,
    ``OUTPUT/video_id=ID/part-0.parquet`` (the id is in the path only, not a column)."""
    return storage.join(output_dir, f"video_id={make_video_id(uri)}", "part-0.parquet")


def check_table_output(output: str, model: LoadedModel) -> None:
    """Refuse an analysis run's ``output`` named as a video file: such a run writes a table
    per video into a directory (:func:`table_output`), and a user who named ``out.mp4``
    expected video, from a model raypipe took for an analysis one because it has several
    outputs (an image and its mask, a matting model's foreground and alpha) or one that is
    not a picture. The error says which outputs made it so and how to get a video. An
    existing file there is refused too: the table went under it (``notes.json/video_id=
    .../part-0.parquet``, on an object store one name both a file and a folder; locally a
    ``NotADirectoryError`` once Ray had started; a sweep)."""
    if storage.is_file(output):
        raise ConfigError(
            f"output '{output}' is a file; an analysis run writes a Parquet table per video "
            "into a directory: give a directory (a new one, or one of its earlier tables)"
        )
    if os.path.splitext(output.rstrip("/"))[1].lower() not in OUTPUT_FORMATS:
        return
    fix = "give a directory instead (no extension)"
    if model.processor is not None or model.spec is None:
        why = "the processor returns arrays, not frames"
    elif model.spec.output == "tensor":
        why = "the model's spec says output: tensor"
    else:
        import onnx

        outputs = graph_io(onnx.load_model_from_string(model.data).graph)[1]
        shown = ", ".join(f"'{o.name}' {list(o.shape or [])}" for o in outputs)
        named = model.spec.output_name
        why = f"the model's outputs ({shown}) are not one picture"
        if named:  # the advice below was what the sidecar said already (a sweep)
            why = f"its spec's output_name '{named}' is not a picture (of outputs {shown})"
        # a picture batch: rank 4, 3 channels or 1 (the advice named the first output,
        # whatever it was, then a 2-channel one: sweeps)
        pictures = [
            o.name
            for o in outputs
            if o.shape is not None and not not_a_picture(o.shape, model.spec) and o.name != named
        ]
        typed = [
            o
            for o in outputs
            if o.type not in ELEMENT_DTYPES
            and o.shape is not None
            and not not_a_picture(o.shape, model.spec)
            and (not named or o.name == named)
        ]
        if len(typed) == 1 and len(outputs) == 1 or named and typed:
            # a picture but for its element type: naming it changed nothing (a sweep)
            kind = typed[0].type.removeprefix("tensor(").removesuffix(")")
            why = (
                f"the model's output '{typed[0].name}' {list(typed[0].shape or [])} holds "
                f"{kind}, which raypipe does not take for pictures unless told (float, "
                "float16, uint8)"
            )
            fix += (
                '; or, for a video of it, say so in the model\'s sidecar: {"output": "image"} '
                "(for a FrameModel in Python, spec=ModelSpec(output='image'))"
            )
        elif pictures:
            fix += (
                f"; or, for a video of one of them, name it in the model's sidecar: "
                f'{{"output_name": "{pictures[0]}"}} (for a FrameModel in Python, '
                "spec=ModelSpec(output_name=...))"
            )
    raise ConfigError(
        f"output '{output}' is a video file, but {why}, so the run writes a Parquet table per "
        f"video into a directory: {fix}"
    )


def check_output(
    output: str,
    *,
    overwrite: bool,
    tensor: bool = False,
    codec: str | None = None,
    source: str | None = None,
) -> None:
    """Fail before any work when ``output`` cannot be written, cannot hold video encoded by
    ``codec``, exists already, or is the ``source`` itself (as ``ffmpeg`` refuses to write
    over its input: ``--overwrite`` would replace the original for good). A local
    ``source`` that does not exist says so first: input and output swapped said the
    output existed, with --overwrite to pass (a sweep)."""
    if source is not None and is_local(source):
        check_local(local_path(source))
    if source is not None and same_file(source, output):
        raise ConfigError(
            f"output '{output}' is the input; write to another path (raypipe does not "
            "replace its input, even with --overwrite)"
        )
    if not tensor:
        if is_local(output) and os.path.isdir(local_path(output)):  # was "extension '(none)'"
            raise ConfigError(
                f"output '{output}' is a folder; a video goes into a file, e.g. "
                f"{os.path.join(output, 'out.mp4')} (a folder is an analysis model's output, "
                "or an archive's)"
            )
        output_format(output)
        refused = container_refuses(output, codec) if codec else ""
        if refused:
            raise ConfigError(f"output '{output}': {refused}")
    if not tensor or not is_local(output):  # a table's folders are made as it is written
        storage.check_file_path("output", output)
    if storage.exists(output) and not overwrite:
        raise OutputExistsError(
            f"output '{output}' exists; pass --overwrite (overwrite=True in Python) to replace it"
        )
