"""The ``gpu`` marker's gate: run, skip or fail by what a test needs and where it runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from raypipe.testing.gpu_gate import decide, gate, mode_from_env, need_problem

REPO = Path(__file__).resolve().parents[2]
NO_TRT = {"ort-tensorrt": "TensorRT: libnvinfer.so.10 not found", "cuda": ""}
NO_NVENC = {"nvenc": "No NVENC capable devices found", "cuda": ""}


def test_met_needs_run_everywhere() -> None:
    for mode in ("auto", "skip", "require"):
        assert decide(["cuda"], {"cuda": ""}, cuda_visible=True, mode=mode) == ("run", "")


def test_unmet_needs_skip_on_a_cpu_machine_and_fail_where_cuda_is_visible() -> None:
    cpu = decide(["ort-tensorrt"], NO_TRT, cuda_visible=False, mode="auto")
    assert cpu == ("skip", "needs ort-tensorrt: TensorRT: libnvinfer.so.10 not found")
    action, reason = decide(["ort-tensorrt"], NO_TRT, cuda_visible=True, mode="auto")
    assert action == "fail"
    assert reason.startswith("needs ort-tensorrt: TensorRT: libnvinfer.so.10 not found — CUDA")
    assert "RAYPIPE_GPU_TESTS=skip" in reason and "raypipe doctor --device gpu" in reason


def test_the_environment_switch() -> None:
    assert decide(["ort-tensorrt"], NO_TRT, cuda_visible=True, mode="skip")[0] == "skip"
    assert decide(["ort-tensorrt"], NO_TRT, cuda_visible=False, mode="require") == (
        "fail",
        "needs ort-tensorrt: TensorRT: libnvinfer.so.10 not found (RAYPIPE_GPU_TESTS=require)",
    )


def test_a_gpu_without_nvenc_skips_nvenc_tests_by_design() -> None:
    for mode in ("auto", "require"):
        action, reason = decide(["nvenc"], NO_NVENC, cuda_visible=True, mode=mode)
        assert action == "skip" and reason.endswith("(this GPU lacks it by design)")
    both = {**NO_NVENC, "nvml": "NVML cannot start"}
    assert decide(["nvenc", "nvml"], both, cuda_visible=True, mode="auto")[0] == "fail"


def test_bad_needs_and_modes_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="gpu needs must be some of"):
        decide(["cudnn"], {}, cuda_visible=False, mode="auto")
    with pytest.raises(ValueError, match="unknown gpu need 'cudnn'"):
        need_problem("cudnn")
    monkeypatch.setenv("RAYPIPE_GPU_TESTS", "never")
    with pytest.raises(ValueError, match="RAYPIPE_GPU_TESTS must be one of auto, skip, require"):
        mode_from_env()
    monkeypatch.setenv("RAYPIPE_GPU_TESTS", "")
    assert mode_from_env() == "auto"


def test_this_machine_is_gated_by_what_it_has() -> None:
    """Each need is checked for real here; on a machine without a CUDA device every unmet
    need skips, and ``require`` turns it into a failure."""
    if not need_problem("cuda"):
        pytest.skip("this machine has a CUDA device")
    for need in ("cuda", "nvml", "ort-cuda", "ort-tensorrt", "nvdec"):
        assert need_problem(need), f"{need} met on a machine without a CUDA device"
        assert gate([need], mode="auto")[0] == "skip"
        assert gate([need], mode="require")[0] == "fail"


@pytest.mark.parametrize(
    ("mode", "code", "word"), [("require", 1, "error"), ("skip", 0, "skipped")]
)
def test_the_conftest_hook_applies_the_gate(mode: str, code: int, word: str) -> None:
    """A real ``gpu`` test of this suite, run by pytest in a subprocess under each mode (a
    failed gate is reported as an error in the test's setup: exit status 1)."""
    if not need_problem("ort-cuda"):
        pytest.skip("the CUDA provider runs here: the test would pass")
    test = "tests/infer/test_session.py::test_gpu_session_grants_cuda_or_tensorrt"
    env = {**os.environ, "RAYPIPE_GPU_TESTS": mode, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", test, "-q", "-rfs", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == code, done.stdout + done.stderr
    assert f"1 {word}" in done.stdout and "needs ort-cuda: " in done.stdout
