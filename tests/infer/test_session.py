"""Execution providers: the order asked for, what was granted, and loud failures."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import onnxruntime
import pytest

from raypipe.errors import ConfigError, DeviceUnavailableError, ModelLoadError
from raypipe.infer import builtin_bytes, create_session, cuda_available, granted_providers
from raypipe.infer.session import CPU, CUDA, TENSORRT, provider_order

ALL = [TENSORRT, CUDA, CPU]


@pytest.mark.parametrize(
    ("device", "available", "expected"),
    [
        ("auto", ALL, ALL),
        ("auto", [CUDA, CPU], [CUDA, CPU]),
        ("auto", ["AzureExecutionProvider", CPU], [CPU]),
        ("auto", [], [CPU]),
        ("auto", [CPU, CUDA, TENSORRT], ALL),  # our order, not the listing's
        ("cpu", ALL, [CPU]),
        ("cpu", [CPU], [CPU]),
        ("gpu", ALL, [TENSORRT, CUDA]),
        ("gpu", [CUDA, CPU], [CUDA]),
        ("gpu", [TENSORRT, CPU], [TENSORRT]),
    ],
)
def test_provider_order(device: str, available: list[str], expected: list[str]) -> None:
    assert provider_order(device, available) == expected


def test_provider_order_gpu_without_gpu_provider_says_what_to_install() -> None:
    match = (
        r"device 'gpu' asked for but this onnxruntime offers only "
        r"\['AzureExecutionProvider', 'CPUExecutionProvider'\]; install raypipe\[gpu\] "
        r"\(onnxruntime-gpu\) or pass --device cpu/auto"
    )
    with pytest.raises(DeviceUnavailableError, match=match):
        provider_order("gpu", ["AzureExecutionProvider", CPU])


def test_provider_order_unknown_device() -> None:
    with pytest.raises(ConfigError, match="device must be one of auto, cpu, gpu, got 'cuda'"):
        provider_order("cuda", ALL)


@pytest.mark.skipif(
    CUDA in onnxruntime.get_available_providers(), reason="needs the CPU-only onnxruntime"
)
def test_create_session_gpu_with_cpu_only_onnxruntime_raises() -> None:
    match = (
        r"device 'gpu' asked for but this onnxruntime offers only \[.*'CPUExecutionProvider'\]; "
        r"install raypipe\[gpu\] \(onnxruntime-gpu\) or pass --device cpu/auto"
    )
    with pytest.raises(DeviceUnavailableError, match=match):
        create_session(builtin_bytes("identity"), device="gpu")


def test_gpu_provider_granted_cpu_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend onnxruntime lists CUDA: ONNX Runtime then runs on CPU (the silent fallback).
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(
        "raypipe.infer.session._new_session",
        lambda ort, data, options, providers, extra: onnxruntime.InferenceSession(
            data, sess_options=options, providers=[CPU]
        ),
    )
    match = (
        r"device 'gpu' asked for \['CUDAExecutionProvider'\] but ONNX Runtime granted only "
        r"\['CPUExecutionProvider'\]; check the CUDA/cuDNN/TensorRT libraries"
    )
    with pytest.raises(DeviceUnavailableError, match=match):
        create_session(builtin_bytes("identity"), device="gpu")


def test_auto_falls_back_to_cpu_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [TENSORRT, CUDA, CPU])
    asked: list[list[str]] = []
    real = onnxruntime.InferenceSession

    def fake(
        ort: object, data: bytes, options: object, providers: list[str], extra: object
    ) -> object:
        asked.append(providers)
        if providers != [CPU]:
            raise RuntimeError("libcudnn.so.9: cannot open shared object file")
        return real(data, sess_options=options, providers=[CPU])

    monkeypatch.setattr("raypipe.infer.session._new_session", fake)
    with caplog.at_level(logging.WARNING, logger="raypipe.infer"):
        session = create_session(builtin_bytes("identity"), device="auto")
    assert granted_providers(session) == [CPU]
    assert asked == [[TENSORRT, CUDA, CPU], [CUDA, CPU], [CPU]]
    assert "libcudnn.so.9" in caplog.text


def test_gpu_provider_start_failure_is_a_device_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [CUDA, CPU])
    real = onnxruntime.InferenceSession

    def fake(
        ort: object, data: bytes, options: object, providers: list[str], extra: object
    ) -> object:
        if providers != [CPU]:
            raise RuntimeError("no CUDA-capable device is detected")
        return real(data, sess_options=options, providers=[CPU])

    monkeypatch.setattr("raypipe.infer.session._new_session", fake)
    match = (
        r"device 'gpu' asked for but ONNX Runtime could not start "
        r"\['CUDAExecutionProvider'\]: no CUDA-capable device"
    )
    with pytest.raises(DeviceUnavailableError, match=match):
        create_session(builtin_bytes("identity"), device="gpu")


def test_create_session_cpu_grants_cpu_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="raypipe.infer"):
        session = create_session(builtin_bytes("identity"), device="cpu", intra_op_threads=1)
    assert granted_providers(session) == [CPU]
    assert "granted ['CPUExecutionProvider']" in caplog.text


def test_create_session_auto_here_grants_cpu_last() -> None:
    session = create_session(builtin_bytes("invert"), device="auto")
    assert granted_providers(session)[-1] == CPU


def test_garbage_bytes_raise_model_load_error_quietly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ModelLoadError, match="ONNX Runtime cannot load the model: ") as info:
        create_session(b"this is not an onnx model", device="auto")
    assert info.value.__cause__ is not None
    assert capsys.readouterr().out == ""  # ORT's "EP Error ... Falling back" print is off


def test_a_float64_model_onnx_runtime_cannot_load_is_told_what_to_export() -> None:
    """ONNX Runtime has no double ``Conv``: its NOT_IMPLEMENTED error alone left out that
    raypipe feeds float32, float16 or uint8 (a float64 model it loads was told; a sweep)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((3, 3, 1, 1), np.float64), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["output"])],
        "f64",
        [helper.make_tensor_value_info("input", TensorProto.DOUBLE, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("output", TensorProto.DOUBLE, ["N", 3, "H", "W"])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    with pytest.raises(
        ModelLoadError,
        match=r"^ONNX Runtime cannot load the model: .*NOT_IMPLEMENTED.*; its input 'input' has "
        r"element type tensor\(double\), and raypipe feeds tensor\(float\), .*: export the "
        r"model with a float32, float16 or uint8 input",
    ):
        create_session(model.SerializeToString(), device="cpu")


@pytest.mark.parametrize("threads", [0, -1, 1.5, "2"])
def test_bad_intra_op_threads(threads: object) -> None:
    with pytest.raises(ConfigError, match="intra_op_threads must be an integer >= 1 or None"):
        create_session(builtin_bytes("identity"), device="cpu", intra_op_threads=threads)  # type: ignore[arg-type]


def test_unknown_provider_options() -> None:
    match = r"provider_options names unknown providers \['ROCMExecutionProvider'\]"
    with pytest.raises(ConfigError, match=match):
        create_session(
            builtin_bytes("identity"), device="cpu", provider_options={"ROCMExecutionProvider": {}}
        )


def test_cuda_available_is_a_bool() -> None:
    assert isinstance(cuda_available(), bool)
    if CUDA not in onnxruntime.get_available_providers():
        assert cuda_available() is False


def test_infer_imports_without_onnxruntime_or_ray() -> None:
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "import raypipe.infer as infer\n"
        "assert 'ray' not in sys.modules, 'raypipe.infer imported ray'\n"
        "from raypipe.errors import DeviceUnavailableError\n"
        "try:\n"
        "    infer.create_session(infer.builtin_bytes('identity'), device='cpu')\n"
        "except DeviceUnavailableError as e:\n"
        "    print(e)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'raypipe[cpu]' (CPU) or pip install 'raypipe[gpu]'" in done.stdout


@pytest.mark.gpu("ort-cuda")
def test_gpu_session_grants_cuda_or_tensorrt() -> None:
    session = create_session(builtin_bytes("identity"), device="gpu")
    assert granted_providers(session)[0] in (TENSORRT, CUDA)


@pytest.mark.parametrize(
    ("head", "said"),
    [
        (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00", "the file is an MP4/MOV video, not an ONNX"),
        (b"PK\x03\x04\x14\x00", "a zip archive, not an ONNX model (a PyTorch .pt/.pth"),
        (b"\x89HDF\r\n\x1a\n", "an HDF5 file, not an ONNX model (a Keras .h5 model"),
    ],
)
def test_a_file_that_is_no_onnx_model_is_said_to_be_what_it_is(head: bytes, said: str) -> None:
    """A video given as --model was said to be "not a whole ONNX model (cut off in a
    download?): fetch it again"; a PyTorch checkpoint, the commonest mistake, too."""
    with pytest.raises(ModelLoadError, match=re.escape(said)):
        create_session(head + bytes(200), device="cpu")


def test_a_cut_off_model_and_a_text_file_are_told_apart() -> None:
    """Any file ONNX Runtime could not parse was "not a whole ONNX model (cut off in a
    download?)", a text file too; an ONNX file opens with its IR version."""
    whole = builtin_bytes("sharpen")
    with pytest.raises(ModelLoadError, match=re.escape("not a whole ONNX model (cut off")):
        create_session(whole[: len(whole) // 2], device="cpu")
    with pytest.raises(ModelLoadError, match=re.escape("the file is not an ONNX model: pass")):
        create_session(b"not onnx\n", device="cpu")
