"""benchmarks/perframe.py's ``bounds``: the best wall raypipe's stages as measured allow
on a machine's cores, and the ratio it would give, for each of the issue's ratios."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import perframe  # noqa: E402


def _run(decode: float, infer: float, encode: float, first_decode: float) -> dict[str, Any]:
    return {
        "cpu_ms_per_frame": {"decode": decode, "infer": infer, "encode": encode},
        "first_decode_after_s": first_decode,
    }


def _result() -> dict[str, Any]:
    # 1000 frames; identity's stages 20 ms a frame (20 s of CPU), sharpen's 30 (30 s)
    identity = [_run(4, 4, 12, 5.0), _run(4, 4, 12, 7.0), _run(4, 4, 12, 6.0)]
    sharpen = [_run(4, 10, 16, 4.0), _run(4, 10, 16, 4.0), _run(4, 10, 16, 4.0)]
    return {
        "clip": {"frames": 1000},
        "wall_s": {
            "ffmpeg": {"median": 10.0},
            "raypipe identity": {"median": 30.0},
            "naive sharpen": {"median": 40.0},
            "raypipe sharpen": {"median": 35.0},
            "raypipe identity warm": {"median": 25.0},
        },
        "ratios": {
            "identity/ffmpeg": 3.0,
            "naive/raypipe sharpen": 40.0 / 35.0,
            "identity warm/ffmpeg": 2.5,
        },
        "runs": {
            "raypipe identity": identity,
            "raypipe sharpen": sharpen,
            "raypipe identity warm": [_run(4, 4, 12, 2.0)],
        },
    }


def test_floor_is_the_start_plus_stage_cpu_over_the_cores() -> None:
    b = perframe.bounds(_result(), cores=2)
    identity = b["identity/ffmpeg"]
    assert identity["stage_cpu_s"] == pytest.approx(20.0)
    assert identity["start_s"] == pytest.approx(6.0)  # the median start
    assert identity["floor_s"] == pytest.approx(6.0 + 20.0 / 2)
    assert identity["ratio_at_floor"] == pytest.approx(16.0 / 10.0)  # lower is better
    assert identity["ratio_without_start"] == pytest.approx(10.0 / 10.0)
    # naive over raypipe: the naive loop's wall over the floor (higher is better)
    sharpen = b["naive/raypipe sharpen"]
    assert sharpen["floor_s"] == pytest.approx(4.0 + 30.0 / 2)
    assert sharpen["ratio_at_floor"] == pytest.approx(40.0 / 19.0)
    assert sharpen["ratio_without_start"] == pytest.approx(40.0 / 15.0)
    # a warm ratio takes the warm runs' start and stages
    assert b["identity warm/ffmpeg"]["floor_s"] == pytest.approx(2.0 + 10.0)


def test_more_cores_lower_the_floor_and_missing_runs_give_no_bound() -> None:
    result = _result()
    assert perframe.bounds(result, cores=4)["identity/ffmpeg"]["floor_s"] == pytest.approx(11.0)
    del result["runs"]["raypipe sharpen"]
    assert "naive/raypipe sharpen" not in perframe.bounds(result, cores=2)


def test_ratio_sides_name_the_runs_the_ratio_compares() -> None:
    assert perframe._ratio_sides("identity/ffmpeg") == ("raypipe identity", "ffmpeg")
    assert perframe._ratio_sides("invert/ffmpeg negate") == ("raypipe invert", "ffmpeg negate")
    assert perframe._ratio_sides("naive/raypipe sharpen warm") == (
        "raypipe sharpen warm",
        "naive sharpen",
    )
    assert perframe._ratio_sides(perframe.TRUE_RATIO) == ("raypipe sharpen", perframe.NAIVE_TRUE)
    assert perframe._ratio_sides("identity warm/ffmpeg") == ("raypipe identity warm", "ffmpeg")
    assert perframe._ratio_sides("invert warm/ffmpeg negate") == (
        "raypipe invert warm",
        "ffmpeg negate",
    )
