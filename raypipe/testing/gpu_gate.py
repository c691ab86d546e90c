"""Whether a ``gpu`` test runs, is skipped or fails here: each test names what it needs.

``@pytest.mark.gpu("ort-tensorrt")`` (``tests/conftest.py`` applies this module): the test
needs ONNX Runtime's TensorRT provider to load and a CUDA device. The needs:

- ``cuda``: the CUDA driver sees a device (the default for a bare ``@pytest.mark.gpu``);
- ``nvml``: ``nvidia-ml-py`` and NVML see a GPU;
- ``ort-cuda`` / ``ort-tensorrt``: that ONNX Runtime provider's library loads and the driver
  can run it (:mod:`raypipe.infer.provider_check`);
- ``nvdec``: FFmpeg (PyAV) opens a CUDA device for decoding;
- ``nvenc``: an NVENC encoder opens: a property of the GPU (A100 and H100 have none).

The rule (:func:`decide`): a test whose needs are met runs. Otherwise, on a machine where
no CUDA device is visible (CI) it is skipped; where CUDA *is* visible it fails, because a
GPU machine that cannot run a GPU test is a broken install, and a skip would hide it — except
for ``nvenc``, which a GPU may lack by design (skipped, with the reason).
``RAYPIPE_GPU_TESTS`` changes the rule: ``skip`` skips every test that cannot run (CI
machines that see a GPU but are not meant to test it), ``require`` fails every one, CUDA
or not (a GPU CI job whose driver broke must not pass as all-skipped).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable

NEEDS = ("cuda", "nvml", "ort-cuda", "ort-tensorrt", "nvdec", "nvenc")
HARDWARE_NEEDS = frozenset({"nvenc"})  # a GPU may lack these by design: never a failure
MODES = ("auto", "skip", "require")
MODE_VARIABLE = "RAYPIPE_GPU_TESTS"


def mode_from_env() -> str:
    """``RAYPIPE_GPU_TESTS`` (``auto`` when unset); ``ValueError`` for another value."""
    mode = os.environ.get(MODE_VARIABLE, "") or "auto"
    if mode not in MODES:
        raise ValueError(f"{MODE_VARIABLE} must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def decide(
    needs: Iterable[str], problems: dict[str, str], *, cuda_visible: bool, mode: str
) -> tuple[str, str]:
    """``("run" | "skip" | "fail", reason)`` for a test needing ``needs``, given each need's
    problem (``""`` when met), whether a CUDA device is visible, and the mode."""
    needs = tuple(needs)
    unknown = [n for n in needs if n not in NEEDS]
    if unknown or mode not in MODES:
        raise ValueError(
            f"gpu needs must be some of {NEEDS} and mode one of {MODES}, "
            f"got needs {needs} and mode {mode!r}"
        )
    unmet = {n: problems[n] for n in needs if problems.get(n)}
    if not unmet:
        return "run", ""
    reason = "; ".join(f"needs {n}: {p}" for n, p in unmet.items())
    if mode == "skip":
        return "skip", reason
    if set(unmet) <= HARDWARE_NEEDS and cuda_visible:
        return "skip", f"{reason} (this GPU lacks it by design)"
    if mode == "require":
        return "fail", f"{reason} ({MODE_VARIABLE}=require)"
    if cuda_visible:
        return "fail", (
            f"{reason} — CUDA is visible here, so this is a broken GPU install, not a CPU "
            f"machine (set {MODE_VARIABLE}=skip to skip instead; raypipe doctor --device gpu)"
        )
    return "skip", reason


@functools.cache
def need_problem(need: str) -> str:
    """``""`` when ``need`` is met in this process, else why not (cached per process)."""
    if need == "cuda":
        from raypipe.infer.provider_check import check_driver

        return check_driver().problem()
    if need == "nvml":
        from raypipe.distributed.gpu_monitor import nvml_devices

        return nvml_devices()[1]
    if need in ("ort-cuda", "ort-tensorrt"):
        from raypipe.infer.session import CUDA, TENSORRT

        return _stack().provider_problem(CUDA if need == "ort-cuda" else TENSORRT)
    if need == "nvdec":
        from raypipe.media.decode import nvdec_problem

        return nvdec_problem()
    if need == "nvenc":
        from raypipe.media.encode import nvenc_problem

        return nvenc_problem("h264_nvenc") or ""
    raise ValueError(f"unknown gpu need {need!r}; expected one of {NEEDS}")


@functools.lru_cache(maxsize=1)
def _stack():  # type: ignore[no-untyped-def]
    from raypipe.infer.provider_check import check_gpu_stack

    return check_gpu_stack()


def gate(needs: Iterable[str], mode: str | None = None) -> tuple[str, str]:
    """:func:`decide` for this process: each need checked here, the mode from the env."""
    needs = tuple(needs) or ("cuda",)
    problems = {n: need_problem(n) for n in needs}
    cuda_visible = not need_problem("cuda")
    return decide(needs, problems, cuda_visible=cuda_visible, mode=mode or mode_from_env())
