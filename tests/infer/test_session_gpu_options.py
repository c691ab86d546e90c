"""GPU provider options (TensorRT, CUDA), shape profiles, provider subsets and IO binding.

What runs here is checked without a GPU: the option dictionaries, their validation and
messages, the provider rules, and IO binding's persistent buffers on CPU memory (the same
code as on CUDA). The ``gpu`` tests run the options on a real device.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest

from raypipe.errors import ConfigError, DeviceUnavailableError
from raypipe.infer import builtin_bytes, create_session, cuda_available, granted_providers
from raypipe.infer.iobinding import HostRunner, IOBindingRunner, run_with_iobinding
from raypipe.infer.session import CPU, CUDA, TENSORRT, cuda_device
from raypipe.infer.trt.options import check_profile, cuda_options, profile_shapes, tensorrt_options

PROFILE = profile_shapes("input", 8, 1080, 1920)


# --- profiles -------------------------------------------------------------------------------


def test_profile_shapes_nchw_nhwc_and_i420() -> None:
    assert PROFILE == ("input:1x3x1080x1920", "input:8x3x1080x1920", "input:8x3x1080x1920")
    assert profile_shapes("images", 4, 720, 1280, "NHWC") == (
        "images:1x720x1280x3",
        "images:4x720x1280x3",
        "images:4x720x1280x3",
    )
    assert profile_shapes("x", 1, 36, 52) == ("x:1x3x36x52",) * 3
    # packed YUV 4:2:0 frames (the YUV hand-off): one row of H * W * 3 / 2 bytes each
    assert profile_shapes("raypipe.yuv", 8, 720, 1280, "I420") == (
        "raypipe.yuv:1x1382400",
        "raypipe.yuv:8x1382400",
        "raypipe.yuv:8x1382400",
    )


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("input", 0, 1080, 1920), "batch_size must be an integer >= 1, got 0"),
        (("input", 8, 1080.0, 1920), "height must be an integer >= 1, got 1080.0"),
        (("input", 8, 1080, 1920, "CHW"), "layout must be 'NCHW', 'NHWC' or 'I420', got 'CHW'"),
        (("in:put", 8, 1080, 1920), "input_name must be a tensor name without ':' or ','"),
    ],
)
def test_profile_shapes_rejects(args: tuple[Any, ...], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        profile_shapes(*args)


@pytest.mark.parametrize(
    ("profile", "match"),
    [
        (("a:1x3", "a:2x3"), r"three shape strings \(min, opt, max\)"),
        ("a:1x3", r"three shape strings \(min, opt, max\)"),
        (("a:1x3", "a:2x3", "a:2x"), r"must look like 'input:1x3x1080x1920\[,other:...\]'"),
        (("a:1x3", "b:2x3", "a:2x3"), "min, opt and max shapes must name the same inputs"),
        (("a:4x3", "a:2x3", "a:8x3"), r"input 'a': expected min <= opt <= max .*got \(4, 3\)"),
        (("a:1x3", "a:2x3", "a:2x3x1"), r"input 'a': expected min <= opt <= max .*one rank"),
    ],
)
def test_check_profile_rejects(profile: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        check_profile(profile)


def test_check_profile_takes_several_inputs() -> None:
    profile = ("a:1x3,b:1x8", "a:4x3,b:4x8", "a:8x3,b:8x8")
    assert check_profile(profile) == profile


# --- TensorRT options --------------------------------------------------------------------------


def test_tensorrt_options_fp16_with_profile() -> None:
    options = tensorrt_options("/cache/e", "fp16", PROFILE)
    assert options == {
        "device_id": 0,
        "trt_fp16_enable": True,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": "/cache/e",
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": "/cache/e",
        "trt_builder_optimization_level": 3,
        "trt_max_workspace_size": 2 << 30,
        "trt_profile_min_shapes": "input:1x3x1080x1920",
        "trt_profile_opt_shapes": "input:8x3x1080x1920",
        "trt_profile_max_shapes": "input:8x3x1080x1920",
    }


def test_tensorrt_options_fp32_without_profile_and_custom_builder() -> None:
    options = tensorrt_options(
        "/c", "fp32", None, builder_optimization_level=5, workspace_bytes=4 << 30
    )
    assert options["trt_fp16_enable"] is False
    assert options["trt_builder_optimization_level"] == 5
    assert options["trt_max_workspace_size"] == 4 << 30
    assert not [k for k in options if k.startswith("trt_profile_")]


def test_tensorrt_options_reach_onnxruntime_as_the_strings_the_ep_parses() -> None:
    # onnxruntime turns every option value into str(); the TensorRT EP parses "True"/"False"
    # and decimal integers.
    from onnxruntime.capi.onnxruntime_inference_collection import (
        check_and_normalize_provider_args,
    )

    names, options = check_and_normalize_provider_args(
        [(TENSORRT, tensorrt_options("/c", "fp16", PROFILE)), (CUDA, cuda_options())],
        None,
        [TENSORRT, CUDA, CPU],
    )
    assert names == [TENSORRT, CUDA]
    assert options[0]["trt_fp16_enable"] == "True"
    assert options[0]["trt_max_workspace_size"] == "2147483648"
    assert options[0]["trt_profile_opt_shapes"] == "input:8x3x1080x1920"
    assert options[1]["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    assert options[1]["do_copy_in_default_stream"] == "True"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"precision": "int8"}, "precision must be 'fp32' or 'fp16', got 'int8'"),
        ({"cache_dir": ""}, "cache_dir must be a local directory path, got ''"),
        ({"builder_optimization_level": 6}, r"builder_optimization_level must be within 0\.\.5"),
        ({"builder_optimization_level": -1}, "builder_optimization_level must be an integer >= 0"),
        ({"workspace_bytes": 0}, "workspace_bytes must be an integer >= 1, got 0"),
        ({"profile": ("a:1", "a:0", "a:1")}, r"input 'a': expected min <= opt <= max"),
    ],
)
def test_tensorrt_options_rejects(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"cache_dir": "/c", "precision": "fp16", "profile": PROFILE, **kwargs}
    with pytest.raises(ConfigError, match=match):
        tensorrt_options(**args)


# --- CUDA options ------------------------------------------------------------------------------


def test_cuda_options_defaults_and_budget() -> None:
    assert cuda_options() == {
        "device_id": 0,
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "arena_extend_strategy": "kSameAsRequested",
        "do_copy_in_default_stream": True,
    }
    budget = cuda_options(cudnn_conv_algo_search="HEURISTIC", gpu_mem_limit_bytes=6 << 30)
    assert budget["cudnn_conv_algo_search"] == "HEURISTIC"
    assert budget["gpu_mem_limit"] == 6 << 30


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"cudnn_conv_algo_search": "FAST"},
            "cudnn_conv_algo_search must be one of EXHAUSTIVE, HEURISTIC, DEFAULT, got 'FAST'",
        ),
        ({"arena_extend_strategy": "grow"}, "arena_extend_strategy must be one of"),
        ({"gpu_mem_limit_bytes": 0}, "gpu_mem_limit_bytes must be an integer >= 1, got 0"),
        ({"device_id": -1}, "device_id must be an integer >= 0, got -1"),
    ],
)
def test_cuda_options_rejects(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        cuda_options(**kwargs)


# --- create_session with GPU options and provider subsets --------------------------------------


def test_gpu_options_are_ignored_by_a_cpu_session(tmp_path: Path) -> None:
    session = create_session(
        builtin_bytes("invert"),
        device="cpu",
        provider_options={
            TENSORRT: tensorrt_options(str(tmp_path), "fp16", profile_shapes("input", 2, 8, 8)),
            CUDA: cuda_options(),
        },
    )
    assert granted_providers(session) == [CPU]
    assert list(tmp_path.iterdir()) == []


def _record_sessions(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], Any]]:
    """Pretend onnxruntime lists TensorRT and CUDA; record what each session asks for."""
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: [TENSORRT, CUDA, CPU])
    asked: list[tuple[list[str], Any]] = []
    real = onnxruntime.InferenceSession

    def fake(
        ort: object, data: bytes, options: object, providers: list[str], extra: object
    ) -> object:
        asked.append((providers, extra))
        if providers != [CPU]:
            raise RuntimeError("libnvinfer.so.10: cannot open shared object file")
        return real(data, sess_options=options, providers=[CPU])

    monkeypatch.setattr("raypipe.infer.session._new_session", fake)
    return asked


def test_providers_subset_and_options_reach_the_session(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _record_sessions(monkeypatch)
    trt = tensorrt_options("/c", "fp16", PROFILE)
    create_session(
        builtin_bytes("identity"),
        device="auto",
        providers=[CUDA, CPU],
        provider_options={TENSORRT: trt, CUDA: cuda_options()},
    )
    assert [a[0] for a in asked] == [[CUDA, CPU], [CPU]]  # no TensorRT attempt
    assert asked[0][1] == {TENSORRT: trt, CUDA: cuda_options()}


def test_tensorrt_failure_retries_cuda_then_cpu_for_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = _record_sessions(monkeypatch)
    session = create_session(
        builtin_bytes("identity"),
        device="auto",
        provider_options={TENSORRT: tensorrt_options("/c", "fp16", PROFILE)},
    )
    assert [a[0] for a in asked] == [[TENSORRT, CUDA, CPU], [CUDA, CPU], [CPU]]
    assert granted_providers(session) == [CPU]


def test_providers_subset_with_nothing_left_is_a_device_error() -> None:
    if CUDA in onnxruntime.get_available_providers():
        pytest.skip("needs the CPU-only onnxruntime")
    match = (
        r"providers \['CUDAExecutionProvider'\] asked for with device 'auto', but only "
        r"\['CPUExecutionProvider'\] can be used here; install raypipe\[gpu\]"
    )
    with pytest.raises(DeviceUnavailableError, match=match):
        create_session(builtin_bytes("identity"), device="auto", providers=[CUDA])


@pytest.mark.parametrize("providers", ["CPUExecutionProvider", ["ROCMExecutionProvider"]])
def test_providers_must_be_a_list_of_known_names(providers: Any) -> None:
    with pytest.raises(ConfigError, match="providers must be a list of some of"):
        create_session(builtin_bytes("identity"), device="cpu", providers=providers)


def test_cuda_device_without_a_gpu_says_so() -> None:
    if cuda_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(DeviceUnavailableError, match=r"no CUDA device 0 visible"):
        cuda_device(0)


# --- IO binding ------------------------------------------------------------------------------


def _batches() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    full = [rng.random((4, 3, 12, 20), dtype=np.float32) for _ in range(3)]
    return [full[0], full[1], full[2][:1], full[0]]  # full, full, a short last batch, again


def test_iobinding_off_on_cpu_is_plain_run() -> None:
    session = create_session(builtin_bytes("upscale2x"), device="cpu")
    runner = IOBindingRunner(session, "input", "output")  # auto: no GPU granted
    assert runner.device is None
    for x in _batches():
        np.testing.assert_array_equal(runner.run(x), session.run(["output"], {"input": x})[0])
    assert runner.shapes == []


def test_iobinding_cpu_buffers_equal_session_run_and_persist() -> None:
    session = create_session(builtin_bytes("upscale2x"), device="cpu")
    runner = IOBindingRunner(session, "input", "output", bind="cpu")
    results = []
    for x in _batches():
        expected = session.run(["output"], {"input": x})[0]
        got = runner.run(x)
        np.testing.assert_array_equal(got, expected)
        results.append(got)
    np.testing.assert_array_equal(results[0], results[3])  # earlier results are not overwritten
    assert runner.shapes == [((1, 3, 12, 20), "<f4"), ((4, 3, 12, 20), "<f4")]
    slot = runner._slots[((4, 3, 12, 20), "<f4")]
    pointer = slot.output.data_ptr()
    runner.run(_batches()[1])
    assert slot.output.data_ptr() == pointer  # the same bound output buffer, reused
    np.testing.assert_array_equal(slot.output.numpy(), results[1])  # ORT wrote into it


def test_iobinding_keeps_at_most_max_shapes() -> None:
    session = create_session(builtin_bytes("invert"), device="cpu")
    runner = IOBindingRunner(session, "input", "output", bind="cpu", max_shapes=2)
    for n in (1, 2, 3, 2):
        x = np.full((n, 3, 4, 4), 0.25, dtype=np.float32)
        np.testing.assert_array_equal(runner.run(x), 1 - x)
    assert [s[0][0] for s in runner.shapes] == [3, 2]


def test_iobinding_does_not_write_into_the_callers_array() -> None:
    session = create_session(builtin_bytes("invert"), device="cpu")
    runner = IOBindingRunner(session, "input", "output", bind="cpu")
    a = np.zeros((1, 3, 4, 4), dtype=np.float32)
    runner.run(a)
    runner.run(np.ones_like(a))
    assert not a.any()


def test_run_with_iobinding_reuses_one_runner_per_session() -> None:
    session = create_session(builtin_bytes("invert"), device="cpu")
    x = np.full((2, 3, 4, 4), 0.5, dtype=np.float32)
    np.testing.assert_array_equal(run_with_iobinding(session, "input", "output", x), 1 - x)
    runner = session._raypipe_iobinding_runners[("input", "output")]  # type: ignore[attr-defined]
    run_with_iobinding(session, "input", "output", x)
    assert session._raypipe_iobinding_runners[("input", "output")] is runner  # type: ignore[attr-defined]


def test_host_runner_writes_into_kept_buffers_and_equals_session_run() -> None:
    session = create_session(builtin_bytes("upscale2x"), device="cpu")
    runner = HostRunner(session, "input", ["output"], max_shapes=2)
    views = []
    for x in _batches():
        got = runner.run(x)
        np.testing.assert_array_equal(got, session.run(["output"], {"input": x})[0])
        views.append(got)
    # ORT writes every later run of a shape into the first run's outputs, kept (no new
    # memory), and the short batch into the first frame of the full batch's buffer
    assert views[1] is views[0] and views[3] is views[0]
    assert np.shares_memory(views[2], views[0]) and views[2].shape[0] == 1
    assert runner.run(_batches()[2]) is runner.run(_batches()[2])
    assert [k[0][0] for k in runner._slots] == [4, 1]


def test_iobinding_bad_mode() -> None:
    session = create_session(builtin_bytes("invert"), device="cpu")
    with pytest.raises(ConfigError, match="bind must be 'auto', 'cuda', 'cpu' or 'off', got 'gpu'"):
        IOBindingRunner(session, "input", "output", bind="gpu")


# --- on a GPU ------------------------------------------------------------------------------------


@pytest.mark.gpu("ort-cuda")
def test_gpu_cuda_options_and_iobinding_match_cpu() -> None:
    data = builtin_bytes("upscale2x")
    gpu = create_session(
        data,
        device="gpu",
        providers=[CUDA],
        provider_options={CUDA: cuda_options(cudnn_conv_algo_search="HEURISTIC")},
    )
    assert granted_providers(gpu)[0] == CUDA
    cpu = create_session(data, device="cpu")
    assert IOBindingRunner(gpu, "input", "output").device is None  # auto: session.run
    runner = IOBindingRunner(gpu, "input", "output", bind="cuda")
    for x in _batches():
        expected = cpu.run(["output"], {"input": x})[0]
        np.testing.assert_allclose(runner.run(x), expected, atol=1e-5)
    assert len(runner.shapes) == 2


@pytest.mark.gpu("cuda")
def test_gpu_cuda_device_names_the_card() -> None:
    device = cuda_device(0)
    assert device.name and device.compute_capability[0].isdigit()
    assert device.driver_cuda_version.count(".") == 1


@pytest.mark.gpu("ort-tensorrt")
def test_gpu_tensorrt_writes_and_reuses_its_engine_cache(tmp_path: Path) -> None:
    from raypipe.infer.heavy import build_superres

    data = build_superres(channels=16, blocks=2).SerializeToString()
    profile = profile_shapes("input", 2, 64, 96)
    options = tensorrt_options(str(tmp_path), "fp16", profile, builder_optimization_level=1)
    start = time.monotonic()
    session = create_session(
        data, device="gpu", providers=[TENSORRT, CUDA], provider_options={TENSORRT: options}
    )
    cold_s = time.monotonic() - start
    assert granted_providers(session)[0] == TENSORRT
    x = np.random.default_rng(0).random((2, 3, 64, 96), dtype=np.float32)
    y = run_with_iobinding(session, "input", "output", x)
    assert y.shape == (2, 3, 128, 192)
    names = [p.name for p in tmp_path.iterdir()]
    assert any(n.endswith(".engine") for n in names), names
    snapshot = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    start = time.monotonic()
    create_session(
        data, device="gpu", providers=[TENSORRT, CUDA], provider_options={TENSORRT: options}
    )
    warm_s = time.monotonic() - start
    assert warm_s < cold_s
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()}
    assert after == snapshot  # a cache hit rewrites nothing
