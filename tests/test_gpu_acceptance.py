"""benchmarks/gpu_acceptance.py without a GPU: its dry run (every row on the CPU, the
2-worker processes, IO binding, the JSON), the ``pytest -m gpu`` step, the skip path of a
row whose provider cannot load, and the table of GPU-shaped results."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # spawned workers import it by this name too
import gpu_acceptance as bench  # noqa: E402


def test_dry_run_runs_every_step_on_the_cpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "gpu_acceptance.json"
    rows = "cpu,cuda-fp32,cuda-fp32-noio,trt-fp16-2w"
    assert bench.main(["--dry-run", "--skip-tests", "--rows", rows, "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["dry_run"] is True and doc["tests"] == {
        "status": "skipped",
        "reason": "--skip-tests",
    }
    assert set(doc["doctor"]["verdicts"]) == {"auto", "cpu", "gpu"}
    by_name = {r["name"]: r for r in doc["rows"]}
    assert list(by_name) == rows.split(",")
    for row in by_name.values():
        assert row["status"] == "ran" and row["providers"][0] == "CPUExecutionProvider"
        assert row["fps"] > 0 and row["ms_per_frame"] > 0
        assert row["gpu_util"] == "n/a (no GPU used)"
    assert by_name["cpu"]["frames"] == 2 and by_name["cpu"]["output_shape"] == [1, 3, 96, 128]
    assert (
        by_name["cuda-fp32"]["iobinding"] == "cpu"
        and by_name["cuda-fp32-noio"]["iobinding"] == "off"
    )
    two = by_name["trt-fp16-2w"]
    assert two["workers"] == 2 and two["frames"] == 2 * 4 and two["precision"] == "fp16"
    printed = capsys.readouterr().out
    assert "| configuration " in printed and "| ms/frame " in printed
    assert "TensorRT FP16 + engine cache, IO binding, 2 workers/GPU" in printed
    assert "DRY RUN: every row ran on the CPU" in printed


def test_a_row_whose_provider_cannot_load_is_skipped_with_the_reason(tmp_path: Path) -> None:
    from raypipe.infer.provider_check import check_gpu_stack
    from raypipe.infer.session import TENSORRT

    reason = check_gpu_stack().provider_problem(TENSORRT)
    if not reason:
        pytest.skip("TensorRT loads here")
    args = bench.parse_args(["--rows", "trt-fp16"])
    row = next(r for r in bench.ROWS if r.name == "trt-fp16")
    assert bench.run_row(row, args, tmp_path) == {"status": "skipped", "reason": reason}


def test_the_gpu_tests_step_collects_the_gpu_tests() -> None:
    result = bench.run_gpu_tests(dry_run=True, timeout_s=300)
    assert result["status"] == "ran", result
    assert result["command"].endswith("-m gpu -q -rfEs -p no:cacheprovider --collect-only tests")
    assert result["counts"]["selected"] >= 12 and result["counts"]["deselected"] > 100


def test_the_table_of_gpu_results() -> None:
    rows = [
        {"title": "CUDA EP FP32, IO binding", "provider": "cuda", "precision": "fp32",
         "status": "ran", "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"],
         "ms_per_frame": 61.04, "fps": 16.38, "gpu_util_mean_pct": 87.5, "gpu_util_max_pct": 100,
         "session_start_s": 2.345},
        {"title": "TensorRT FP16 + engine cache, IO binding", "provider": "tensorrt",
         "precision": "fp16", "status": "ran", "providers": ["TensorrtExecutionProvider"],
         "ms_per_frame": 9.5, "fps": 105.26, "gpu_util_mean_pct": 97.0, "gpu_util_max_pct": 100,
         "session_start_s": 0.8, "cold_start_s": 71.2, "warm_copy_s": 0.4},
        {"title": "TensorRT FP16 + engine cache", "provider": "tensorrt", "precision": "fp16",
         "status": "skipped", "reason": "TensorRT: libnvinfer.so.10 not found"},
    ]  # fmt: skip
    lines = bench.format_table(rows).splitlines()
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    assert cells[0] == ["configuration", "provider", "precision", "ms/frame", "fps", "GPU util",
                        "start"]  # fmt: skip
    assert set(lines[1]) == {"|", "-"}
    assert cells[2:] == [
        ["CUDA EP FP32, IO binding", "CUDA", "fp32", "61.0", "16.38", "87.5% (max 100%)",
         "2.35 s"],
        ["TensorRT FP16 + engine cache, IO binding", "TensorRT", "fp16", "9.5", "105.26",
         "97.0% (max 100%)", "cold 71.2 s, warm 1.2 s"],
        ["TensorRT FP16 + engine cache", "-", "fp16", "skipped", "-", "-", "-"],
    ]  # fmt: skip
    assert len({len(line) for line in lines}) == 1  # aligned
