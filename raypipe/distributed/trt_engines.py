"""``raypipe build-engines``: prebuild TensorRT engines for a cluster before a big run.

One Ray task per GPU type (one node of each ``accelerator_type``) builds and publishes the
engines for every frame size asked for into the shared cache, so no actor of the real run
pays for a build. Engines are keyed by GPU name and compute capability, so a cluster with
several GPU types needs one build per type.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from raypipe.config import ModelConfig, RuntimeConfig
from raypipe.distributed.cluster import connect
from raypipe.errors import ConfigError, DeviceUnavailableError
from raypipe.infer.factory import input_name_of
from raypipe.infer.models import ModelSpec, gpu_profile, resolve_model_and_spec


def _gpu_nodes() -> dict[str, str]:
    """One alive node id per GPU type (``accelerator_type:*`` resource, else 'GPU')."""
    chosen: dict[str, str] = {}
    for node in ray.nodes():
        resources = node.get("Resources", {})
        if not node.get("Alive") or resources.get("GPU", 0) < 1:
            continue
        kinds = [k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:")]
        chosen.setdefault(kinds[0] if kinds else "GPU", node["NodeID"])
    return chosen


@ray.remote(num_gpus=1)
def _build_here(
    model_bytes: bytes,
    spec: ModelSpec,
    cache: str,
    sizes: list[tuple[int, int]],
    batch_size: int,
    precision: str,
) -> list[dict[str, Any]]:
    from raypipe.infer.trt.cache import EngineCache
    from raypipe.infer.trt.key import engine_key_for, tensorrt_builder
    from raypipe.infer.trt.options import profile_shapes

    built = []
    for height, width in sizes:
        # the graph, frame size, batch and layout an inference actor's session is built for
        run = gpu_profile(model_bytes, spec, (height, width), batch_size)
        name = input_name_of(run.data)
        profile = profile_shapes(name, run.batch_size, *run.hw, run.layout)
        sha256 = hashlib.sha256(run.data).hexdigest()
        key = engine_key_for(sha256, precision=precision, profile=profile)
        started = time.monotonic()
        EngineCache(cache).ensure(
            key, tensorrt_builder(run.data, precision=precision, profile=profile)
        )
        built.append(
            {
                "gpu": key.gpu_name,
                "size": f"{width}x{height}",
                "digest": key.digest(),
                "seconds": round(time.monotonic() - started, 2),
            }
        )
    return built


def build_engines(
    model: str,
    cache: str,
    sizes: list[tuple[int, int]],
    *,
    batch_size: int = 8,
    precision: str = ModelConfig.precision,
    runtime: RuntimeConfig | None = None,
) -> list[dict[str, Any]]:
    """Build (or find) the engines of ``model`` for ``sizes`` on every GPU type; one record
    per (GPU type, size): GPU name, size, cache key digest, seconds taken. Each is the
    engine a run's inference actor asks for on frames of that size, at that ``precision``
    (a run's default, fp32, unless given) (:func:`gpu_profile`:
    the model as its session runs it, with its spec, the batch its calls get)."""
    if not sizes:
        raise ConfigError("give at least one frame size (--size 1920x1080)")
    model_bytes, _, spec = resolve_model_and_spec(model)
    from raypipe.infer.model_info import onnx_graph

    onnx_graph(model_bytes, model)  # a file that is no model says so, not "no GPU nodes"
    connect(runtime or RuntimeConfig())
    nodes = _gpu_nodes()
    if not nodes:
        raise DeviceUnavailableError(
            "build-engines needs GPU nodes and the cluster has none; run it against the GPU "
            "cluster (--address) where the engines will be used"
        )
    refs = [
        _build_here.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)
        ).remote(model_bytes, spec, cache, sizes, batch_size, precision)
        for node_id in nodes.values()
    ]
    try:
        batches = ray.get(refs)
    except Exception as e:  # noqa: BLE001 - Ray wraps the task's error; surface ours typed
        from raypipe.distributed.ray_errors import raypipe_cause

        cause = raypipe_cause(e)
        if cause is None:
            raise
        raise cause from e
    return [record for batch in batches for record in batch]
