"""GPU utilisation and memory per physical GPU, sampled with NVML during a run.

:class:`GpuMonitor` is a background thread that reads NVML (``nvidia-ml-py``, imported
lazily) every ``interval_s`` seconds: utilisation (percent of the sample period in which a
kernel ran) and memory used/total (bytes) for each physical GPU it watches.
:meth:`GpuMonitor.summary` gives the mean/max utilisation and peak memory per GPU plus the
raw samples, ready for the run's stats JSON.

Which GPU is which: NVML ignores ``CUDA_VISIBLE_DEVICES`` and always numbers *every* GPU of
the machine (by PCI bus order), while CUDA inside a Ray actor sees only the actor's GPU, as
device 0. So "device 0" in an actor is not NVML index 0. Ray's accelerator ids
(``ray.get_runtime_context().get_accelerator_ids()["GPU"]``) are what Ray wrote into the
actor's ``CUDA_VISIBLE_DEVICES``: physical indices (``"3"``), or GPU/MIG UUIDs when the node
was started with UUIDs there. :func:`physical_gpu_indices` maps them to NVML indices
(UUIDs through NVML). Caveat: CUDA numbers devices fastest-first unless
``CUDA_DEVICE_ORDER=PCI_BUS_ID``; on nodes with mixed GPU models set that variable (Ray
passes it on) so index ``"3"`` means the same card to CUDA and NVML.

Without ``nvidia-ml-py``, without a driver or without GPUs the monitor is not an error:
``available`` is False and :meth:`GpuMonitor.summary` returns ``{"available": False,
"reason": "..."}`` with one line saying why.

``ray`` is imported only by :func:`actor_physical_gpu_indices`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from types import ModuleType, TracebackType
from typing import Any

from raypipe.errors import ConfigError, DeviceUnavailableError, RaypipeError


def _import_nvml() -> tuple[ModuleType | None, str]:
    """``(pynvml, "")`` after ``nvmlInit``, or ``(None, reason)``."""
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py is not installed (pip install 'raypipe[gpu]')"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return None, f"NVML cannot start ({e}): no NVIDIA driver or GPU on this machine"
    return pynvml, ""


def nvml_devices() -> tuple[list[dict[str, Any]], str]:
    """Every GPU NVML sees (index, name, memory_total_bytes, uuid) and the driver version,
    as ``(devices, "")``; ``([], reason)`` when NVML cannot run here."""
    nvml, reason = _import_nvml()
    if nvml is None:
        return [], reason
    try:
        driver = str(nvml.nvmlSystemGetDriverVersion())
        devices = []
        for i in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            devices.append(
                {
                    "index": i,
                    "name": str(nvml.nvmlDeviceGetName(handle)),
                    "memory_total_bytes": int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
                    "uuid": str(nvml.nvmlDeviceGetUUID(handle)),
                    "driver_version": driver,
                }
            )
    except nvml.NVMLError as e:
        return [], f"NVML cannot read the GPUs ({e})"
    finally:
        nvml.nvmlShutdown()
    return devices, "" if devices else "NVML sees no GPU on this machine"


def physical_gpu_indices(
    accelerator_ids: Sequence[str], *, nvml: ModuleType | None = None
) -> list[int]:
    """NVML indices of the GPUs behind Ray's accelerator ids (see the module docstring).

    ``"2"`` -> 2; ``"GPU-<uuid>"`` -> that GPU's NVML index; ``"MIG-<uuid>"`` -> the index of
    the GPU the MIG slice lives on. UUIDs need NVML (``nvml``: an initialised ``pynvml``,
    else one is started); plain indices do not. Raises :class:`ConfigError` for an id of
    another form and :class:`DeviceUnavailableError` when a UUID cannot be resolved.
    """
    indices: list[int] = []
    for raw in accelerator_ids:
        gpu_id = str(raw).strip()
        if gpu_id.isdigit():
            indices.append(int(gpu_id))
            continue
        if not gpu_id.startswith(("GPU-", "MIG-")):
            raise ConfigError(
                f"accelerator id {gpu_id!r} is neither a GPU index nor a GPU-/MIG- UUID; "
                "expected what Ray's get_accelerator_ids()['GPU'] returns"
            )
        if nvml is None:
            nvml, reason = _import_nvml()
            if nvml is None:
                raise DeviceUnavailableError(f"cannot resolve GPU UUID {gpu_id!r}: {reason}")
        try:
            handle = nvml.nvmlDeviceGetHandleByUUID(gpu_id)
            if gpu_id.startswith("MIG-"):
                handle = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
            indices.append(int(nvml.nvmlDeviceGetIndex(handle)))
        except nvml.NVMLError as e:
            raise DeviceUnavailableError(
                f"NVML does not know GPU {gpu_id!r} ({e}); expected a UUID from this node's "
                "`nvidia-smi -L`"
            ) from e
    return indices


def actor_physical_gpu_indices() -> list[int]:
    """NVML indices of the GPUs Ray assigned to the calling actor or task ([] for none)."""
    import ray

    ids = ray.get_runtime_context().get_accelerator_ids().get("GPU", [])
    return physical_gpu_indices([str(i) for i in ids])


class GpuMonitor:
    """Samples NVML utilisation and memory of physical GPUs in a daemon thread.

    ``interval_s``: seconds between samples (NVML's utilisation counter averages over its
    own 1/6 s to 1 s window, so sampling faster than ~0.2 s adds little). ``gpu_indices``:
    NVML indices to watch (from :func:`physical_gpu_indices`); ``None`` watches every GPU.
    Use as a context manager, or :meth:`start` / :meth:`stop`::

        with GpuMonitor(interval_s=0.5) as monitor:
            run()
        stats["gpus"] = monitor.summary()
    """

    def __init__(self, interval_s: float = 0.5, gpu_indices: Sequence[int] | None = None) -> None:
        if not isinstance(interval_s, (int, float)) or not interval_s > 0:
            raise ConfigError(f"interval_s must be a number of seconds > 0, got {interval_s!r}")
        self.interval_s = float(interval_s)
        self._nvml, reason = _import_nvml()
        self.reason = f"GPU utilisation not sampled: {reason}" if reason else ""
        self._handles: dict[int, Any] = {}
        self._names: dict[int, str] = {}
        self._samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._closed = False
        if self._nvml is not None:
            try:
                self._open(gpu_indices)
            except ConfigError:
                self._nvml.nvmlShutdown()
                raise

    @property
    def available(self) -> bool:
        """Whether NVML runs here and sees at least one of the GPUs asked for."""
        return self._nvml is not None and bool(self._handles)

    def _open(self, gpu_indices: Sequence[int] | None) -> None:
        nvml = self._nvml
        assert nvml is not None
        try:
            count = int(nvml.nvmlDeviceGetCount())
            wanted = list(range(count)) if gpu_indices is None else [int(i) for i in gpu_indices]
            missing = [i for i in wanted if not 0 <= i < count]
            if missing:
                raise ConfigError(
                    f"GPU indices {missing} asked for, NVML sees {count} GPUs (0..{count - 1}); "
                    "pass NVML indices from physical_gpu_indices()"
                )
            for i in wanted:
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                self._handles[i] = handle
                self._names[i] = str(nvml.nvmlDeviceGetName(handle))
        except nvml.NVMLError as e:
            self._handles.clear()
            self.reason = f"GPU utilisation not sampled: NVML cannot read the GPUs ({e})"
        if not self._handles and not self.reason:
            self.reason = "GPU utilisation not sampled: NVML sees no GPU on this machine"

    def sample(self) -> None:
        """Take one sample of every watched GPU now (the thread calls this every interval)."""
        if not self.available or self._closed:
            return
        nvml = self._nvml
        assert nvml is not None
        t_s = time.monotonic() - self._t0
        rows = []
        for index, handle in self._handles.items():
            try:
                util = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            except nvml.NVMLError:
                continue  # a transient read error loses one sample, not the run
            rows.append(
                {
                    "t_s": round(t_s, 3),
                    "gpu": index,
                    "util_pct": int(util.gpu),
                    "memory_util_pct": int(util.memory),
                    "memory_used_bytes": int(memory.used),
                    "memory_total_bytes": int(memory.total),
                }
            )
        with self._lock:
            self._samples.extend(rows)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def start(self) -> GpuMonitor:
        """Start sampling in a daemon thread (does nothing when NVML is unavailable)."""
        if self._closed:
            raise RaypipeError("this GpuMonitor was stopped; create a new one to sample again")
        if self.available and self._thread is None:
            self._stop.clear()
            self._t0 = time.monotonic()
            self._thread = threading.Thread(
                target=self._loop, name="raypipe-gpu-monitor", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling, take a last sample, and release NVML (the summary stays)."""
        if self._closed:
            return
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self.sample()
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
            self._closed = True

    def __enter__(self) -> GpuMonitor:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def samples(self) -> list[dict[str, Any]]:
        """The raw samples so far: ``t_s`` (seconds since start), ``gpu`` (NVML index),
        ``util_pct``, ``memory_util_pct``, ``memory_used_bytes``, ``memory_total_bytes``."""
        with self._lock:
            return list(self._samples)

    def summary(self) -> dict[str, Any]:
        """Per GPU (keyed by NVML index as a string): name, sample count, mean and max
        utilisation (%), max memory used and total (bytes); plus ``samples``.

        ``{"available": False, "reason": "..."}`` when nothing could be sampled.
        """
        if not self.available:
            return {"available": False, "reason": self.reason}
        samples = self.samples
        gpus: dict[str, dict[str, Any]] = {}
        for index in self._handles:
            rows = [s for s in samples if s["gpu"] == index]
            utils = [s["util_pct"] for s in rows]
            gpus[str(index)] = {
                "name": self._names[index],
                "samples": len(rows),
                "util_mean_pct": round(sum(utils) / len(utils), 1) if utils else None,
                "util_max_pct": max(utils) if utils else None,
                "memory_used_max_bytes": max((s["memory_used_bytes"] for s in rows), default=None),
                "memory_total_bytes": rows[-1]["memory_total_bytes"] if rows else None,
            }
        return {
            "available": True,
            "interval_s": self.interval_s,
            "gpus": gpus,
            "samples": samples,
        }
