"""``raypipe doctor``: the screen, ``--json``, the exit codes and the one-line reason.

Run on whatever this machine is; the assertions about a CPU-only machine (the CI one) are
made when the machine is one, and stand-in provider libraries
(:mod:`raypipe.testing.stub_library`) give the "provider library missing" case anywhere.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import pytest

from raypipe import doctor
from raypipe.cli import main
from raypipe.infer.libraries import find_library
from raypipe.infer.provider_check import (
    PROVIDER_LIBRARIES,
    SHARED_PROVIDER_LIBRARY,
    check_driver,
    check_gpu_stack,
    ort_build,
)
from raypipe.infer.session import CUDA, TENSORRT
from raypipe.testing.stub_library import write_stub_library

CPU_ONLY = ort_build().package == "onnxruntime" and not check_driver().library
cpu_machine = pytest.mark.skipif(
    not CPU_ONLY, reason="checks what doctor says on a machine with the CPU onnxruntime, no driver"
)


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["doctor", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_doctor_shows_every_section_and_auto_works(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run([], capsys)
    assert code == 0 and err == ""
    heads = [line.split()[0] for line in out.splitlines() if line and not line.startswith(" ")]
    assert heads[:4] == ["python", "raypipe", "pyav", "onnxruntime"]
    for section in ("cuda driver", "engine cache", "--device auto  ok", "--device cpu   ok"):
        assert section in out
    assert "  TensorRT " in out and "  CUDA " in out and "NVDEC" in out and "NVENC" in out
    assert out.rstrip().endswith("=> --device auto works here")
    assert len(out.splitlines()) <= 40  # one screen


@cpu_machine
def test_doctor_gpu_on_a_cpu_machine_fails_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = _run(["--device", "gpu"], capsys)
    assert code == 1
    expected = (
        f"raypipe: error: DeviceUnavailableError: --device gpu would fail here: onnxruntime "
        f"{ort_build().version} has no CUDA or TensorRT provider (a CPU build): install "
        "raypipe[gpu] (onnxruntime-gpu) instead of raypipe[cpu]; no NVIDIA driver: libcuda.so.1 "
        "not found (no GPU on this machine?)\n"
    )
    assert err == expected
    assert "TensorrtExecutionProvider is not in this ONNX Runtime build" in out
    assert "cuda driver  none: no NVIDIA driver" in out
    assert "NVDEC      NO: NVDEC unavailable" in out and "NVENC      NO:" in out
    assert out.rstrip().endswith("=> --device gpu would fail here")


@cpu_machine
def test_doctor_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["--device", "gpu", "--json"], capsys)
    assert code == 1 and err.count("\n") == 1
    report = json.loads(out)
    assert report["device"] == "gpu" and report["ok"] is False
    assert err.rstrip().endswith(report["verdicts"]["gpu"])
    assert report["verdicts"]["cpu"] == report["verdicts"]["auto"] == ""
    assert report["auto_providers"] == ["CPUExecutionProvider"]
    assert report["onnxruntime"]["package"] == "onnxruntime"
    assert report["onnxruntime"]["cuda_version"] == ""
    for provider in (TENSORRT, CUDA):
        p = report["providers"][provider]
        assert (
            p["library"] == ""
            and p["loads"] is False
            and "not in this ONNX Runtime" in p["problem"]
        )
    assert report["driver"]["library"] == "" and report["driver"]["devices"] == 0
    assert report["gpus"]["devices"] == [] and report["gpus"]["problem"]
    assert report["pyav"]["nvdec_problem"].startswith("NVDEC unavailable")
    assert report["engine_cache"]["problem"] == ""
    code, out, _ = _run(["--json"], capsys)
    assert code == 0 and json.loads(out)["ok"] is True


def test_doctor_names_the_missing_tensorrt_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """onnxruntime-gpu's provider libraries stood in for by stubs that need TensorRT 10 and
    CUDA 13 libraries this machine lacks: doctor names them, ``gpu`` fails, ``auto`` works."""
    missing = ["libnvinfer.so.10", "libnvonnxparser.so.10", "libcublas.so.13"]
    if any(find_library(n) for n in missing):
        pytest.skip(f"this machine has one of {missing}")
    capi = tmp_path / "capi"
    capi.mkdir()
    write_stub_library(capi / SHARED_PROVIDER_LIBRARY)
    write_stub_library(
        capi / PROVIDER_LIBRARIES[TENSORRT], ["libnvinfer.so.10", "libnvonnxparser.so.10"]
    )
    write_stub_library(capi / PROVIDER_LIBRARIES[CUDA], ["libcublas.so.13"])
    stand_in = functools.partial(check_gpu_stack, capi_dir=str(capi))
    monkeypatch.setattr(doctor, "check_gpu_stack", lambda **_: stand_in())

    code, out, err = _run(["--device", "gpu"], capsys)
    assert code == 1
    assert err.startswith("raypipe: error: DeviceUnavailableError: --device gpu would fail here: ")
    reasons = "TensorRT: libnvinfer.so.10, libnvonnxparser.so.10 not found; CUDA: libcublas.so.13"
    assert f"{reasons} not found" in err
    assert err.count("\n") == 1
    assert (
        "TensorrtExecutionProvider cannot load: libnvinfer.so.10, libnvonnxparser.so.10 not found "
        "(needed by libonnxruntime_providers_tensorrt.so)"
    ) in out

    code, out, err = _run(["--device", "auto", "--json"], capsys)
    assert code == 0 and err == ""
    report = json.loads(out)
    assert report["providers"][TENSORRT]["missing"] == ["libnvinfer.so.10", "libnvonnxparser.so.10"]
    assert report["providers"][CUDA]["missing"] == ["libcublas.so.13"]
    assert "libnvinfer.so.10, libnvonnxparser.so.10 not found" in report["tensorrt"]


def test_doctor_says_when_the_engine_cache_cannot_be_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, out, _ = _run(["--engine-cache", str(blocker / "engines"), "--json"], capsys)
    cache = json.loads(out)["engine_cache"]
    assert code == 0 and cache["source"] == "--engine-cache"
    assert cache["problem"].startswith(f"cannot write under {blocker / 'engines'}: ")
    writable = tmp_path / "engines" / "deeper"
    assert doctor.writable_problem(str(writable)) == ""
    # a check, not a set-up: nothing made (it left /tmp/raypipe-engines; a sweep)
    assert list(tmp_path.iterdir()) == [blocker]
    (tmp_path / "engines").mkdir()
    assert doctor.writable_problem(str(tmp_path / "engines")) == ""
    assert list((tmp_path / "engines").iterdir()) == []  # the probe is gone
    (tmp_path / "ro").mkdir(mode=0o555)
    if os.geteuid() != 0:  # root writes anywhere
        assert doctor.writable_problem(str(tmp_path / "ro" / "engines")).startswith(
            "cannot write under"
        )


@pytest.mark.gpu("ort-cuda", "nvml")
def test_gpu_doctor_on_a_gpu_machine(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["--device", "gpu", "--json"], capsys)
    assert code == 0 and err == ""
    report = json.loads(out)
    assert report["ok"] is True and report["onnxruntime"]["package"] == "onnxruntime-gpu"
    assert report["providers"][CUDA]["loads"] is True
    assert report["driver"]["devices"] >= 1 and report["gpus"]["devices"]
    assert report["auto_providers"][-1] == "CPUExecutionProvider"
    assert CUDA in report["auto_providers"]
