"""Provider setup for GPU actors: what can run without a GPU, and the GPU path (gpu-marked)."""

from __future__ import annotations

import hashlib

import pytest

from raypipe.infer.builtin import builtin_bytes
from raypipe.infer.session import CPU, CUDA, TENSORRT, create_session, granted_providers
from raypipe.infer.trt.providers import prepare_gpu_providers


def _setup(device: str, **kw: object):  # type: ignore[no-untyped-def]
    data = builtin_bytes("sharpen")
    return prepare_gpu_providers(
        data,
        hashlib.sha256(data).hexdigest(),
        device=device,
        input_name="input",
        batch_size=4,
        height=48,
        width=64,
        **kw,  # type: ignore[arg-type]
    )


def test_cpu_device_asks_for_cpu_only() -> None:
    assert _setup("cpu").providers == [CPU]


def test_without_gpu_providers_auto_keeps_the_default_order_and_says_why() -> None:
    import onnxruntime

    if CUDA in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has GPU providers")
    setup = _setup("auto")
    assert setup.providers is None and setup.provider_options == {}
    assert "no GPU provider" in setup.notes[0]


@pytest.mark.gpu("ort-tensorrt")
def test_tensorrt_engine_from_the_cache_on_a_gpu(tmp_path) -> None:  # type: ignore[no-untyped-def]
    setup = _setup("gpu", precision="fp16", engine_cache=str(tmp_path / "cache"))
    assert TENSORRT in (setup.providers or [TENSORRT]), setup.notes
    assert setup.engine_dir and any(p for p in (tmp_path / "cache").rglob("*"))
    session = create_session(
        builtin_bytes("sharpen"), device="gpu", provider_options=setup.provider_options
    )
    assert granted_providers(session)[0] == TENSORRT
    again = _setup("gpu", precision="fp16", engine_cache=str(tmp_path / "cache"))
    assert again.engine_dir == setup.engine_dir
