"""Real models' shape rules and failures through `raypipe run` and archives on a real Ray.

A stride-32 U-Net-like block (built in code: stride-32 downsample, upsample, Add skip
connection) rejects sizes that are not multiples of 32, as DBNet text detectors do: bare,
it is one typed line with the pad hint, fast, nothing written; with --pad-multiple 32 the
output equals the model applied in-process to the edge-padded frame, cropped. Every other
model-error kind is one typed line for `raypipe run` and a typed row in an archive.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_exact_to, lossless_cli_args

from raypipe.archive_report import read_report
from raypipe.cli import main
from raypipe.infer import FrameModel
from raypipe.infer.padding import padded_size
from raypipe.testing import ClipSpec, make_clip, models

REPO = Path(__file__).resolve().parents[2]
HINT = "; try --pad-multiple 32 (Python and sidecars: pad_multiple=32): frames are padded to"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, clips: dict[str, Path]) -> dict[str, Path]:
    """The clips (1280x720 with audio; 198x110; 256x128, a multiple of 32) and the models."""
    root = tmp_path_factory.mktemp("model-errors")
    files = {
        "hd": make_clip(
            root / "hd.mp4", ClipSpec(width=1280, height=720, n_frames=12, gop=6, audio="aac")
        ),
        "odd": clips["odd_size"],
        "fits": make_clip(root / "fits.mp4", ClipSpec(width=256, height=128, n_frames=24)),
    }
    builders: dict[str, Callable[[], bytes]] = {
        "unet": models.stride32_unet,
        "nan": models.nan_model,
        "rank": models.wrong_rank_input,
        "channels": models.wrong_channels_input,
        "runtime_channels": models.runtime_two_channels,
    }
    for name, build in builders.items():
        files[name] = root / f"{name}.onnx"
        files[name].write_bytes(build())
    files["not_onnx"] = root / "not_onnx.onnx"
    files["not_onnx"].write_bytes(b"this is not an onnx protobuf" * 10)
    return files


def padded_then_cropped(model: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The reference: the bare model in-process on edge-padded frames, cropped back."""

    def apply(frames: np.ndarray) -> np.ndarray:
        h, w = frames.shape[1:3]
        pad = ((0, 0), (0, padded_size(h, 32) - h), (0, padded_size(w, 32) - w), (0, 0))
        bare = FrameModel(model.read_bytes(), device="cpu")
        return bare.run(np.pad(frames, pad, mode="edge"), 4)[:, :h, :w]

    return apply


def test_bare_stride32_model_is_one_typed_line_with_the_hint_in_under_60s(
    media: dict[str, Path], tmp_path: Path
) -> None:
    """The whole command as a user runs it: its own local Ray, start to exit."""
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "raypipe.cli", "run", str(media["hd"]), str(out / "hd.mp4"),
         "--model", str(media["unet"]), "--chunk-frames", "6", "--quiet"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    seconds = time.monotonic() - started
    lines = result.stderr.strip().splitlines()
    ours = [line for line in lines if line.startswith("raypipe")]
    assert result.returncode == 1, result.stderr[-3000:]
    assert ours == [lines[-1]], result.stderr[-3000:]  # Ray's own start-up notes aside
    # where: the frames of the chunk that failed first
    where = re.match(
        r"raypipe: error: ModelError: at frames (\d+)\.\.(\d+) \(chunk \d+\): ", ours[0]
    )
    assert where and int(where[1]) <= int(where[2]), ours[0]
    assert (
        ": the model failed on 720x1280 (height x width) frames: "
        "Add node: Attempting to broadcast an axis by a dimension other than 1" in ours[0]
    )
    assert HINT + " 736x1280 and the output is cropped back" in ours[0]
    assert "Traceback" not in result.stderr and "RayTaskError" not in result.stderr
    assert list(out.iterdir()) == [], "something was written"
    assert seconds < 60, f"took {seconds:.1f}s"
    print(f"bare stride-32 model, 1280x720, exit 1 after {seconds:.1f}s")


@pytest.mark.parametrize("clip", ["hd", "odd"])
def test_pad_multiple_32_equals_the_model_on_the_padded_frame_cropped(
    ray_local: None, media: dict[str, Path], tmp_path: Path, clip: str
) -> None:
    out = tmp_path / "out.mp4"
    args = ["run", str(media[clip]), str(out), "--model", str(media["unet"]), "--pad-multiple",
            "32", "--chunk-frames", "6", "--quiet", *lossless_cli_args()]  # fmt: skip
    assert main(args) == 0
    assert_exact_to(media[clip], out, padded_then_cropped(media["unet"]))


RUN_KINDS = {  # model file, clip -> error type, text in the line
    "not_onnx": ("odd", "ModelLoadError", "ONNX Runtime cannot load the model"),
    "rank": ("odd", "ModelLoadError", "has rank 3"),
    "channels": ("odd", "ModelLoadError", "1 on the channel axis"),
    "unet": ("odd", "ModelError", HINT + " 128x224"),
    "nan": ("odd", "ModelError", "output 'output' holds NaN on 110x198 (height x width)"),
    "runtime_channels": ("odd", "ModelLoadError", "2 on the channel axis 1"),
}


@pytest.mark.parametrize("kind", sorted(RUN_KINDS))
def test_every_model_error_kind_is_one_typed_line(
    ray_local: None,
    media: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
) -> None:
    clip, error_type, text = RUN_KINDS[kind]
    out = tmp_path / "out"
    out.mkdir()
    code = main(["run", str(media[clip]), str(out / "o.mp4"), "--model", str(media[kind]), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"raypipe: error: {error_type}: ") and text in err, err
    assert list(out.iterdir()) == []


def test_verbose_adds_the_workers_traceback(
    ray_local: None, media: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["run", str(media["odd"]), str(tmp_path / "o.mp4"), "--model", str(media["nan"])]
    assert main([*args, "-q", "--verbose"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "where it failed (on a worker)" in err
    assert "check_finite" in err  # the frame of the worker's stack that raised
    assert err.strip().splitlines()[-1].startswith("raypipe: error: ModelError: ")


ARCHIVE_RUNTIME = {  # run-time kinds: the video fails alone, typed, in its report row
    "unet": {"odd.mp4": ("ModelError", HINT), "fits.mp4": ("", "")},
    "nan": {"odd.mp4": ("ModelError", "NaN"), "fits.mp4": ("ModelError", "NaN")},
    "runtime_channels": {
        "odd.mp4": ("ModelLoadError", "2 on the channel axis"),
        "fits.mp4": ("ModelLoadError", "2 on the channel axis"),
    },
}


@pytest.mark.parametrize("kind", sorted(ARCHIVE_RUNTIME))
def test_archive_fails_each_video_alone_with_its_typed_row(
    ray_local: None, media: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    shutil.copy(media["odd"], src / "odd.mp4")
    shutil.copy(media["fits"], src / "fits.mp4")
    code = main(["archive", str(src), str(out), "--model", str(media[kind]), "-q",
                 "--chunk-frames", "6", *lossless_cli_args()])  # fmt: skip
    expected = ARCHIVE_RUNTIME[kind]
    assert code == (3 if any(t for t, _ in expected.values()) else 0)
    rows = {Path(r["uri"]).name: r for r in read_report(str(out / "_raypipe-report.parquet"))}
    for name, (error_type, text) in expected.items():
        row = rows[name]
        assert row["error_type"] == error_type and text in row["error_message"], row
        assert row["status"] == ("failed" if error_type else "done")
        assert (out / name).exists() == (not error_type)
    if kind == "unet":  # the video of a fitting size is exact
        assert_exact_to(src / "fits.mp4", out / "fits.mp4", padded_then_cropped(media["unet"]))
    assert not list(out.rglob(".*")), "a work directory was left behind"


@pytest.mark.parametrize("kind", ["not_onnx", "rank", "channels"])
def test_archive_with_a_model_that_cannot_load_is_one_typed_line(
    media: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """No video can succeed: the run itself fails on the driver, before any cluster work."""
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    shutil.copy(media["odd"], src / "odd.mp4")
    assert main(["archive", str(src), str(out), "--model", str(media[kind]), "-q"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("raypipe: error: ModelLoadError: ")
    assert not out.exists()
