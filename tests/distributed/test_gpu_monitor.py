"""GPU monitoring: Ray accelerator ids to NVML indices, and a clean 'no GPU' answer."""

from __future__ import annotations

import importlib.util
import sys
import time

import pytest

from raypipe.distributed.gpu_monitor import GpuMonitor, physical_gpu_indices
from raypipe.errors import ConfigError, DeviceUnavailableError, RaypipeError


def _nvml_works() -> bool:
    if importlib.util.find_spec("pynvml") is None:
        return False
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


NVML = _nvml_works()
without_nvml = pytest.mark.skipif(NVML, reason="this machine has NVML and a GPU")


def test_plain_indices_need_no_nvml() -> None:
    assert physical_gpu_indices(["3", "0", " 7 "]) == [3, 0, 7]
    assert physical_gpu_indices([]) == []


def test_unknown_accelerator_id_form() -> None:
    match = r"accelerator id 'cuda:0' is neither a GPU index nor a GPU-/MIG- UUID"
    with pytest.raises(ConfigError, match=match):
        physical_gpu_indices(["cuda:0"])


@without_nvml
def test_uuid_without_nvml_is_a_device_error() -> None:
    match = (
        r"cannot resolve GPU UUID 'GPU-5e3a\w*': (nvidia-ml-py is not installed|NVML cannot start)"
    )
    with pytest.raises(DeviceUnavailableError, match=match):
        physical_gpu_indices(["GPU-5e3a0000"])


def test_monitor_without_nvidia_ml_py_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    with GpuMonitor(interval_s=0.01) as monitor:
        time.sleep(0.05)
    assert monitor.available is False
    assert monitor.samples == []
    assert monitor.summary() == {
        "available": False,
        "reason": "GPU utilisation not sampled: nvidia-ml-py is not installed "
        "(pip install 'raypipe[gpu]')",
    }


@without_nvml
def test_monitor_on_this_machine_is_unavailable_with_one_reason() -> None:
    monitor = GpuMonitor()
    monitor.start()
    monitor.sample()
    monitor.stop()
    summary = monitor.summary()
    assert summary["available"] is False
    assert set(summary) == {"available", "reason"}
    assert summary["reason"].startswith("GPU utilisation not sampled: ")
    if importlib.util.find_spec("pynvml") is not None:
        assert "NVML cannot start" in summary["reason"]


def test_bad_interval() -> None:
    with pytest.raises(ConfigError, match="interval_s must be a number of seconds > 0, got 0"):
        GpuMonitor(interval_s=0)


# --- on a GPU machine ------------------------------------------------------------------------


@pytest.mark.gpu("nvml")
def test_gpu_monitor_samples_utilisation_and_memory() -> None:
    with GpuMonitor(interval_s=0.05, gpu_indices=[0]) as monitor:
        time.sleep(0.5)
    summary = monitor.summary()
    assert summary["available"] is True
    gpu = summary["gpus"]["0"]
    assert gpu["samples"] >= 5 and gpu["name"]
    assert 0 <= gpu["util_mean_pct"] <= gpu["util_max_pct"] <= 100
    assert 0 < gpu["memory_used_max_bytes"] <= gpu["memory_total_bytes"]
    assert {s["gpu"] for s in summary["samples"]} == {0}
    with pytest.raises(RaypipeError, match="this GpuMonitor was stopped"):
        monitor.start()


@pytest.mark.gpu("nvml")
def test_gpu_uuid_maps_to_its_nvml_index() -> None:
    import pynvml

    pynvml.nvmlInit()
    try:
        count = pynvml.nvmlDeviceGetCount()
        uuids = [
            pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)
        ]
    finally:
        pynvml.nvmlShutdown()
    assert physical_gpu_indices(list(reversed(uuids))) == list(reversed(range(count)))
    with pytest.raises(DeviceUnavailableError, match="NVML does not know GPU 'GPU-00000000"):
        physical_gpu_indices(["GPU-00000000-0000-0000-0000-000000000000"])


@pytest.mark.gpu("nvml", "cuda")
def test_gpu_monitor_rejects_indices_nvml_does_not_have() -> None:
    with pytest.raises(ConfigError, match=r"GPU indices \[999\] asked for, NVML sees \d+ GPUs"):
        GpuMonitor(gpu_indices=[999])
