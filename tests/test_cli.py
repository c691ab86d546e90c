"""The raypipe command: typed one-line errors, nothing left at OUTPUT, probe/model/demo."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import onnx
import psutil
import pytest

from raypipe.cli import main
from raypipe.errors import ModelLoadError
from raypipe.media import probe
from raypipe.testing import (
    audio_packets,
    decode_all,
    ffmpeg_decode_errors,
    write_audio_only,
    write_text_as_video,
    write_truncated_header,
)


def _bad_input(kind: str, tmp: Path, clips: dict[str, Path]) -> tuple[str, list[str]]:
    good = str(clips["bframes_aac"])
    if kind == "missing":
        return str(tmp / "nope.mp4"), []
    if kind == "not_a_video":
        return str(write_text_as_video(tmp / "notes.mp4")), []
    if kind == "truncated":
        return str(write_truncated_header(tmp / "cut.mp4")), []
    if kind == "audio_only":
        return str(write_audio_only(tmp / "sound.m4a")), []
    if kind == "unknown_builtin":
        return good, ["--model", "builtin:does-not-exist"]
    if kind == "model_does_not_load":
        broken = tmp / "broken.onnx"
        broken.write_bytes(b"this is not an onnx protobuf" * 10)
        return good, ["--model", str(broken)]
    if kind == "model_file_missing":
        return good, ["--model", str(tmp / "missing.onnx")]
    if kind == "image_and_mask_model":  # a tensor model to raypipe: it has two outputs
        path = tmp / "image_and_mask.onnx"
        onnx.save(_image_and_mask_model(), str(path))
        return good, ["--model", str(path)]
    if kind == "named_output_not_a_picture":  # the sidecar names the score, not the picture
        from onnx import TensorProto, helper

        model = _image_and_mask_model()
        model.graph.node[1].CopyFrom(
            helper.make_node("ReduceMean", ["input"], ["score"], axes=[2, 3], keepdims=0)
        )
        model.graph.output[1].CopyFrom(
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 3])
        )
        path = tmp / "scored.onnx"
        onnx.save(model, str(path))
        (tmp / "scored.raypipe.json").write_text('{"output_name": "score"}')
        return good, ["--model", str(path)]
    if kind == "two_channel_output":  # a flow model's shape: rank 4, 2 channels
        from onnx import TensorProto, helper

        model = _image_and_mask_model()
        del model.graph.output[1], model.graph.node[1]
        model.graph.node[0].CopyFrom(
            helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["output"])
        )
        for name, value in (("starts", 0), ("ends", 2), ("axes", 1)):
            tensor = helper.make_tensor(name, TensorProto.INT64, [1], [value])
            model.graph.initializer.append(tensor)
        model.graph.output[0].CopyFrom(
            helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 2, "h", "w"])
        )
        path = tmp / "flow.onnx"
        onnx.save(model, str(path))
        return good, ["--model", str(path)]
    if kind == "nhwc_output":  # NCHW in, NHWC out: it failed after Ray's start
        from onnx import TensorProto, helper

        model = _image_and_mask_model()
        del model.graph.output[1], model.graph.node[1]
        model.graph.node[0].CopyFrom(
            helper.make_node("Transpose", ["input"], ["output"], perm=[0, 2, 3, 1])
        )
        model.graph.output[0].CopyFrom(
            helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", "h", "w", 3])
        )
        path = tmp / "nhwc.onnx"
        onnx.save(model, str(path))
        return good, ["--model", str(path)]
    if kind == "float64_picture":  # a picture but for its element type
        from onnx import TensorProto, helper

        model = _image_and_mask_model()
        del model.graph.output[1], model.graph.node[1]
        model.graph.node[0].CopyFrom(helper.make_node("Cast", ["input"], ["output"], to=11))
        model.graph.output[0].CopyFrom(
            helper.make_tensor_value_info("output", TensorProto.DOUBLE, ["batch", 3, "h", "w"])
        )
        path = tmp / "f64.onnx"
        onnx.save(model, str(path))
        return good, ["--model", str(path)]
    raise AssertionError(kind)


def _image_and_mask_model() -> onnx.ModelProto:
    """A segmentation model's shape: the picture (``output``) and a 1-channel ``mask``."""
    from onnx import TensorProto, helper

    dims = ["batch", 3, "height", "width"]
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["input"], ["output"]),
            helper.make_node("ReduceMean", ["input"], ["mask"], axes=[1], keepdims=1),
        ],
        "image_and_mask",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
        [
            helper.make_tensor_value_info("output", TensorProto.FLOAT, dims),
            helper.make_tensor_value_info(
                "mask", TensorProto.FLOAT, ["batch", 1, "height", "width"]
            ),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


BAD = {
    "nhwc_output": (
        "ModelLoadError",
        "model output 'output' is declared ['batch', 'h', 'w', 3]: its channels look NHWC while "
        "its input is NCHW, and raypipe reads both in one layout (the spec's); end the model "
        "with a Transpose to NCHW (perm [0, 3, 1, 2]), or transpose in a raypipe.Processor",
    ),
    # the advice, naming the output, changed nothing: its element type was the reason
    "float64_picture": (
        "ConfigError",
        "is a video file, but the model's output 'output' ['batch', 3, 'h', 'w'] holds double, "
        "which raypipe does not take for pictures unless told (float, float16, uint8), so the "
        "run writes a Parquet table per video into a directory: give a directory instead (no "
        'extension); or, for a video of it, say so in the model\'s sidecar: {"output": '
        '"image"}',
    ),
    "missing": ("InputNotFoundError", "does not exist"),
    "not_a_video": ("CorruptVideoError", "not a readable media file"),
    "truncated": ("CorruptVideoError", "not a readable media file"),
    "audio_only": ("NoVideoStreamError", "has no video stream"),
    "unknown_builtin": ("ModelNotFoundError", "unknown built-in model"),
    "model_does_not_load": ("ModelLoadError", "the file is not an ONNX model: pass builtin:NAME"),
    "model_file_missing": ("ModelNotFoundError", "does not exist"),
    # a video OUTPUT for a model raypipe reads as an analysis one: it wrote a Parquet
    # directory named result.mp4 and said "wrote result.mp4"
    "image_and_mask_model": (
        "ConfigError",
        "is a video file, but the model's outputs ('output' ['batch', 3, 'height', 'width'], "
        "'mask' ['batch', 1, 'height', 'width']) are not one picture, so the run writes a "
        "Parquet table per video into a directory: give a directory instead (no extension); "
        'or, for a video of one of them, name it in the model\'s sidecar: {"output_name": '
        '"output"}',
    ),
    # the advice was the sidecar's own line, and named the first output, a picture or not
    "named_output_not_a_picture": (
        "ConfigError",
        "is a video file, but its spec's output_name 'score' is not a picture (of outputs "
        "'output' ['batch', 3, 'height', 'width'], 'score' ['batch', 3]), so the run writes a "
        "Parquet table per video into a directory: give a directory instead (no extension); "
        'or, for a video of one of them, name it in the model\'s sidecar: {"output_name": '
        '"output"}',
    ),
    # the advice named a 2-channel output, which the sidecar then refused (a sweep)
    "two_channel_output": (
        "ConfigError",
        "is a video file, but the model's outputs ('output' ['batch', 2, 'h', 'w']) are not "
        "one picture, so the run writes a Parquet table per video into a directory: give a "
        "directory instead (no extension)",
    ),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_input_one_line_typed_error_and_nothing_written(
    kind: str, tmp_path: Path, clips: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    outdir = tmp_path / "out"
    outdir.mkdir()
    source, extra = _bad_input(kind, inputs, clips)
    code = main(["run", source, str(outdir / "result.mp4"), "--quiet", *extra])
    err = capsys.readouterr().err.strip()
    error_type, text = BAD[kind]
    assert code == 1
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"raypipe: error: {error_type}: "), err
    assert text in err
    if kind == "two_channel_output":
        assert "output_name" not in err, err
    assert list(outdir.iterdir()) == [], "something was written at the output"


def test_a_failed_analysis_run_leaves_no_folder_at_output(
    tmp_path: Path, clips: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """An analysis model that fails on the first chunk (a fixed 224x224 classifier, run
    without --resize) left OUTPUT/video_id=.../ behind, empty: the run writes its record
    into the work directory under the video's partition folder, which it made."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["logits"]),
        ],
        "classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
    )
    path = tmp_path / "classifier.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    outdir = tmp_path / "out"
    outdir.mkdir()
    code = main(["run", str(clips["ntsc"]), str(outdir / "tables"), "--model", str(path)])
    assert code == 1
    assert "takes 224x224 (height x width) frames" in capsys.readouterr().err
    assert list(outdir.iterdir()) == [], "something was left at the output"


def test_a_file_url_is_percent_decoded(
    tmp_path: Path, clips: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """``Path.as_uri()`` and file managers percent-encode ``file://`` URLs; raypipe took
    ``%20`` literally: "input '.../names%20dir/...' does not exist", and an output URL
    became a file named ``o%20u.mp4``."""
    from raypipe.media.source import local_path

    folder = tmp_path / "names dir"
    folder.mkdir()
    source = folder / "my clip #1 ünï.mp4"
    shutil.copy(clips["ntsc"], source)
    assert "%20" in source.as_uri() and "%23" in source.as_uri()
    assert main(["probe", source.as_uri()]) == 0
    assert "48 frames" in capsys.readouterr().out
    assert local_path("file:///out/o%20u.mp4") == "/out/o u.mp4"
    assert local_path("file://localhost/out/a%25b.mp4") == "/out/a%b.mp4"
    assert local_path("/out/a%20b.mp4") == "/out/a%20b.mp4"  # a plain path is as it is


def test_a_pipe_input_and_an_unwritable_ray_folder_say_what_to_do(
    tmp_path: Path, clips: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """From a sweep: a FIFO (a shell's ``<(cat in.mp4)``) was "an empty file (0 bytes)"
    and its writer blocked for good; a TMPDIR Ray cannot write in got "a busy machine
    starts it slowly: try again" and a log folder under /tmp/ray it was not in."""
    fifo = tmp_path / "in.mp4"
    os.mkfifo(fifo)
    assert main(["run", str(fifo), str(tmp_path / "o.mp4"), "--quiet"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"raypipe: error: UnsupportedVideoError: input '{fifo}' is a pipe (FIFO, or a "
        "shell's <(...)), not a file: raypipe reads a video's chunks apart, seeking in it; "
        "save the stream to a file first"
    )
    unwritable = "/sys"  # not even root makes folders there
    done = subprocess.run(
        [sys.executable, "-m", "raypipe.cli", "run", str(clips["ntsc"]), str(tmp_path / "o.mp4"),
         "--quiet"],
        env={**os.environ, "TMPDIR": unwritable, "RAY_ADDRESS": ""},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(
        f"raypipe: error: ClusterError: cannot start a local Ray: it cannot write its session "
        f"folder {unwritable}/ray ("
    ), done.stderr
    assert done.stderr.strip().endswith("set RAY_TMPDIR (or TMPDIR) to a folder it can write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_output_exists_needs_overwrite(
    tmp_path: Path, clips: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"keep me")
    assert main(["run", str(clips["ntsc"]), str(out), "--quiet"]) == 1
    assert "OutputExistsError" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    # a link to it too; a dangling link is written through, as ffmpeg writes it (the rename
    # replaced the link itself, without --overwrite: a sweep)
    (tmp_path / "link.mp4").symlink_to("exists.mp4")
    assert main(["run", str(clips["ntsc"]), str(tmp_path / "link.mp4"), "--quiet"]) == 1
    assert f"output '{out}' exists" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    (tmp_path / "dangling.mp4").symlink_to("made.mp4")
    assert main(["run", str(clips["ntsc"]), str(tmp_path / "dangling.mp4"), "--quiet"]) == 0
    assert (tmp_path / "dangling.mp4").is_symlink() and probe(str(tmp_path / "made.mp4")).n_frames


def test_a_second_run_on_an_output_being_written_fails_at_once(
    tmp_path: Path, clips: dict[str, Path], capsys: pytest.CaptureFixture[str], no_ray: None
) -> None:
    """Two runs on one output shared its work folder; the first to end removed it under the
    other, which failed late with a wrong guess at why. The output is held while a run
    writes it: a second run (--overwrite or not) fails before any work, naming the first;
    the hold goes with the run, leaving nothing beside the output."""
    import os

    import ray

    from raypipe.distributed.chunk_task import LOCK_SUFFIX, output_held

    out = tmp_path / "out.mp4"
    with output_held(str(out), tensor=False):
        lock = tmp_path / f".out.mp4{LOCK_SUFFIX}"
        assert lock.read_text() == f"pid {os.getpid()} on {os.uname().nodename}\n"
        for extra in ([], ["--overwrite"]):
            assert main(["run", str(clips["ntsc"]), str(out), "--quiet", *extra]) == 1
            err = capsys.readouterr().err.strip()
            assert err == (
                f"raypipe: error: ConfigError: output '{out}' is being written by another "
                f"raypipe run (pid {os.getpid()} on {os.uname().nodename}); wait for it to "
                "end, or give this run another output"
            )
        assert not ray.is_initialized() and sorted(p.name for p in tmp_path.iterdir()) == [
            lock.name
        ]
    assert list(tmp_path.iterdir()) == []
    with output_held(str(out), tensor=False):  # free again
        pass
    with output_held("s3://bucket/out.mp4", tensor=False):  # object stores hold no lock
        with output_held("s3://bucket/out.mp4", tensor=False):
            pass


def test_a_second_analysis_run_of_a_video_into_one_table_folder_fails_at_once(
    tmp_path: Path, clips: dict[str, Path], capsys: pytest.CaptureFixture[str], no_ray: None
) -> None:
    """Two analysis runs of one video into one OUTPUT at once both said done, and one's
    table was the other's (a sweep). A lock in OUTPUT named for the video holds it; another
    video's run into the same OUTPUT goes on; OUTPUT, made for the lock, goes with it."""
    import os

    from raypipe.distributed.chunk_task import LOCK_SUFFIX, output_held
    from raypipe.distributed.setup import table_output

    table = tmp_path / "table"
    mine = table_output(str(table), str(clips["ntsc"]))
    partition = Path(mine).parent.name
    with output_held(mine, tensor=True):
        assert [p.name for p in table.iterdir()] == [f".{partition}{LOCK_SUFFIX}"]
        assert main(["run", str(clips["ntsc"]), str(table), "--model", "builtin:phash",
                     "--quiet"]) == 1  # fmt: skip
        assert capsys.readouterr().err.strip() == (
            f"raypipe: error: ConfigError: the table of this video in '{table}' is being "
            f"written by another raypipe run (pid {os.getpid()} on {os.uname().nodename}); "
            "wait for it to end, or give this run another output"
        )
        other = table_output(str(table), "other.mp4")
        with output_held(other, tensor=True):  # another video's table: not held
            pass
    assert list(tmp_path.iterdir()) == [], "OUTPUT, made for the lock, is removed empty"


def test_bad_option_values(
    tmp_path: Path, clips: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "o.mp4")
    # bad usage (exit 2), naming the option, as argparse says of any other; it was the run's
    # own check, exit 1, naming Python's keyword (chunk_frames must be ...)
    for option, value, wants in [("--chunk-frames", "0", ">= 1"), ("--workers", "x", ">= 1"),
                                 ("--batch-size", "-1", ">= 1"), ("--crf", "-3", ">= 0"),
                                 ("--tile-overlap", "-1", ">= 0"), ("--sample-fps", "0", "> 0"),
                                 ("--actor-cpus", "nan", "> 0")]:  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main(["run", str(clips["ntsc"]), out, option, value])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2
        assert f"argument {option}: expected " in err and f"{wants}, got '{value}'" in err, err
    assert main(["run", str(clips["ntsc"]), out, "--crf", "60", "--codec", "libx264"]) == 1
    assert "libx264's crf is within 0..51, got 60" in capsys.readouterr().err  # x264 took it as 51
    assert main(["run", str(clips["ntsc"]), out, "--crf", "60"]) == 1  # auto: x264 for .mp4
    assert "libx264's crf is within 0..51, got 60; --codec auto picks libx264 for .mp4" in (
        capsys.readouterr().err
    )
    assert main(["run", str(clips["ntsc"]), str(tmp_path / "o.xyz")]) == 1
    assert "extension '.xyz'" in capsys.readouterr().err
    assert main(["run", str(clips["ntsc"]), out, "--codec", "nosuchcodec"]) == 1
    assert "encoder 'nosuchcodec' is not available" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(clips["ntsc"]), out, "--device", "tpu"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(clips["ntsc"]), out, "--chunk-mib", "-1"])
    assert exit_info.value.code == 2
    assert "expected MiB >= 0 (0: no cap), got '-1'" in capsys.readouterr().err
    assert not os.path.exists(out)


def test_probe_json(
    clips: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from raypipe.media.probe import make_video_id

    monkeypatch.chdir(clips["open_gop"].parent)  # a relative path, as a user types it
    assert main(["probe", clips["open_gop"].name, "--json", "--chunk-frames", "7"]) == 0
    doc = json.loads(capsys.readouterr().out)
    # the run's ids, made from the absolute path (a relative path gave others: a sweep)
    assert doc["video_id"] == make_video_id(str(clips["open_gop"]))
    assert doc["n_frames"] == 48 and len(doc["pts"]) == 48
    assert doc["keyframe_pts"] == sorted(doc["keyframe_pts"]) and len(doc["keyframe_pts"]) == 5
    chunks = doc["chunks"]
    assert sum(c["n_frames"] for c in chunks) == 48
    assert all(a["end_pts"] == b["start_pts"] for a, b in zip(chunks, chunks[1:]))
    seeks = {c["seek_pts"] for c in chunks}
    assert chunks[0]["seek_pts"] is None and seeks - {None} <= set(doc["keyframe_pts"])
    assert main(["probe", str(clips["bframes_aac"])]) == 0
    text = capsys.readouterr().out
    assert "48 frames" in text and "audio aac" in text
    assert "plan: 1 chunk of about 64 frames" in text  # GOPs of 12
    info = probe(str(clips["bframes_aac"]))
    mib = str(2 * 5.5 * info.width * info.height * 3 / 2**20)  # 5 frames in and out as RGB
    for cap, plan in ((mib, "12 chunks of about 5"), ("0", "2 chunks of about 24")):
        argv = ["probe", str(clips["bframes_aac"]), "--chunk-frames", "24", "--chunk-mib", cap]
        assert main(argv) == 0
        assert f"plan: {plan} frames" in capsys.readouterr().out


def test_model_export_and_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sharpen.onnx"
    assert main(["model", "export", "builtin:sharpen", str(path)]) == 0
    onnx.checker.check_model(onnx.load(str(path)))
    assert main(["model", "list"]) == 0
    listed = capsys.readouterr().out
    assert "builtin:upscale2x" in listed and "builtin:identity" in listed
    assert main(["model", "export", "builtin:nope", str(tmp_path / "x.onnx")]) == 1
    assert not (tmp_path / "x.onnx").exists()
    # a file that is no .onnx (a video named by mistake) is refused, even with --overwrite
    video = tmp_path / "keep.mp4"
    video.write_bytes(b"a video")
    assert main(["model", "export", "builtin:sharpen", str(video), "--overwrite"]) == 1
    assert "model export writes an .onnx file" in capsys.readouterr().err
    assert video.read_bytes() == b"a video"
    # an existing model is left as it is, as `run` leaves an output, unless --overwrite;
    # an analysis model's spec is replaced or removed with it: an image model exported
    # over an analysis one kept its spec, and ran as an analysis model (a sweep)
    assert main(["model", "export", "builtin:phash", str(path)]) == 1
    assert "OutputExistsError" in capsys.readouterr().err
    assert main(["model", "export", "builtin:phash", str(path), "--overwrite"]) == 0
    assert json.loads((tmp_path / "sharpen.raypipe.json").read_text())["output"] == "tensor"
    (tmp_path / "sharpen.raypipe.yaml").write_text("output: tensor\n")  # a hand-written twin
    assert main(["model", "export", "builtin:sharpen", str(path), "--overwrite"]) == 0
    assert not list(tmp_path.glob("sharpen.raypipe.*")), "the analysis model's spec stayed"
    capsys.readouterr()
    assert main(["model", "show", str(path)]) == 0
    assert "kind: image" in capsys.readouterr().out


def test_model_show_says_a_shape_the_graph_does_not_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An input and output with no recorded shape were shown as ``[]``, a scalar's shape
    (a sweep); a scalar is still ``[]``."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["y"]),
         helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0)],
        "noshape",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("mean", TensorProto.FLOAT, [])],
    )  # fmt: skip
    path = tmp_path / "noshape.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    main(["model", "show", str(path)])
    out = capsys.readouterr().out
    assert "  images: float32, shape not recorded (rank unknown)\n" in out
    assert "  y: float32, shape not recorded (rank unknown)\n" in out
    assert "  mean: float32 []\n" in out


def test_an_image_sequence_pattern_is_said_to_be_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``img%04d.png``, which FFmpeg reads, was "does not exist; check the path" (a sweep)."""
    (tmp_path / "img0001.png").write_bytes(b"x")
    pattern = tmp_path / "img%04d.png"
    assert main(["run", str(pattern), str(tmp_path / "o.mp4"), "-q"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"raypipe: error: UnsupportedVideoError: input '{pattern}' is an image-sequence "
        "pattern, which raypipe does not read: make one video of the images first, "
        "losslessly: ffmpeg -framerate FPS -i 'img%04d.png' -c:v ffv1 sequence.mkv"
    )


def test_model_show_says_what_a_file_that_is_no_model_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`model show` said "Error parsing message ... Wire format was corrupt" where a run
    says a PyTorch checkpoint (a zip) or a cut-off download (a sweep)."""
    import zipfile

    with zipfile.ZipFile(tmp_path / "model.onnx", "w") as z:
        z.writestr("archive/data.pkl", b"x")
    assert main(["model", "show", str(tmp_path / "model.onnx")]) == 1
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            "the file is a zip archive, not an ONNX model (a PyTorch .pt/.pth checkpoint is one: "
            "export the model with torch.onnx.export)"
        )
    )


def test_an_exported_temporal_builtin_runs_as_the_builtin_and_its_hints_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``model export builtin:ema`` wrote the graph without its spec: the file was refused
    with a hint to give its state inputs fixed values ("constants", which would cut the
    recurrence off), ``denoise3``'s rank-5 input with no word of a window, and ``model
    export tanh.onnx`` said to pass a path, which it was (a sweep)."""
    from raypipe.infer.models import FrameModel
    from raypipe.infer.sidecar import builtin_spec, load_sidecar, state_pairs
    from raypipe.infer.temporal_model import TemporalModel

    ema = tmp_path / "ema.onnx"
    assert main(["model", "export", "builtin:ema", str(ema)]) == 0
    assert (
        capsys.readouterr().out.strip().endswith(f"and its spec to {tmp_path / 'ema.raypipe.json'}")
    )
    assert load_sidecar(str(ema)) == builtin_spec("ema")
    TemporalModel(ema.read_bytes(), spec=builtin_spec("ema"), device="cpu")  # loads
    (tmp_path / "ema.raypipe.json").unlink()
    assert state_pairs(["prev", "started"], ["output", "prev_out", "started_out"]) == {
        "prev": "prev_out",
        "started": "started_out",
    }
    assert main(["model", "show", str(ema)]) == 1
    assert 'feed the state back, "state": {"prev": "prev_out", "started": "started_out"}' in (
        capsys.readouterr().err
    )
    three = tmp_path / "denoise3.onnx"
    assert main(["model", "export", "builtin:denoise3", str(three)]) == 0
    (tmp_path / "denoise3.raypipe.json").unlink()
    with pytest.raises(ModelLoadError, match=r"a rank-5 input takes frames over time \(a "
                       r"temporal model\): give its window, --window BEFORE,AFTER"):  # fmt: skip
        FrameModel(three.read_bytes(), device="cpu")
    assert main(["model", "export", "builtin:invert", str(tmp_path / "i.onnx")]) == 0
    assert not (tmp_path / "i.raypipe.json").exists(), "the default spec: no sidecar"
    assert main(["model", "export", str(ema), str(tmp_path / "copy.onnx")]) == 1
    assert "model export writes a built-in model (builtin:NAME)" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_command_on_the_local_default(tmp_path: Path) -> None:
    """`raypipe demo` as a user runs it: a fresh process that starts its own local Ray."""
    exe = shutil.which("raypipe", path=os.path.dirname(sys.executable)) or "raypipe"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run(
        [exe, "demo", "--output-dir", str(tmp_path / "demo dir"), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    tmp_path = tmp_path / "demo dir"  # a folder with a space: the redraw command quotes it
    source, output = tmp_path / "sample.mp4", tmp_path / "sample.processed.mp4"
    stats, report = tmp_path / "stats.json", tmp_path / "report.png"
    # -q: the result lines only, nothing from Ray (no token notice, no core worker E line)
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 3
    assert all(line.startswith("demo: ") for line in result.stdout.splitlines())
    # the last lines say where everything is and how to draw the report again
    assert result.stdout.splitlines()[-2:] == [
        f"demo: output {output}",
        f"demo: stats {stats}, run report {report} (redraw: `raypipe report '{stats}' -o "
        f"'{report}'`)",
    ]
    assert report.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and stats.exists()
    src, src_pts, _ = decode_all(source)
    out, out_pts, _ = decode_all(output)
    assert len(out_pts) == len(src_pts) == 120
    # invert, lossy x264: the mean of source + output is about 255 everywhere
    assert abs(float(src.astype(int).mean() + out.astype(int).mean()) - 255) < 3
    assert [p[3] for p in audio_packets(output)] == [p[3] for p in audio_packets(source)]
    assert ffmpeg_decode_errors(output) == ""
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["totals"]["frames"] == 120 and stats["totals"]["providers"] == [
        "CPUExecutionProvider"
    ]


def test_demo_with_an_analysis_model_writes_its_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_ray: None
) -> None:
    """`raypipe demo --model builtin:phash` failed: its output was a fixed .mp4 name, which
    an analysis model refuses ("give a directory instead"), and demo takes no output."""
    import pyarrow.dataset as ds

    assert main(["demo", "--output-dir", str(tmp_path), "--model", "builtin:phash", "-q"]) == 0
    table = tmp_path / "sample.table"
    assert f"demo: output {table} (Parquet: " in capsys.readouterr().out
    rows = ds.dataset(str(table), partitioning="hive").to_table()
    assert rows.num_rows == 120 and "frame_index" in rows.column_names
    # a model that is not there: refused before the folder is made (it was left; a sweep)
    assert main(["demo", "--output-dir", str(tmp_path / "new"), "--model", "nope.onnx"]) == 1
    assert "ModelNotFoundError" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_report_command_draws_stats_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stats = {
        "totals": {"frames": 2, "chunks": 1, "wall_seconds": 1.0, "workers": 1},
        "chunks": [
            {
                "chunk_id": "v-000000",
                "video_id": "v",
                "index": 0,
                "n_frames": 2,
                "decode_start": 100.0,
                "decode_s": 0.1,
                "decode_pid": 1,
                "infer_start": 100.1,
                "infer_s": 0.2,
                "infer_pid": 2,
                "actor_id": "a",
                "encode_start": 100.3,
                "encode_s": 0.1,
                "encode_pid": 3,
            }
        ],
        "gpu": {"available": False, "reason": "no GPU measured", "samples": []},
    }
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(stats))
    png = tmp_path / "report.png"
    assert main(["report", str(path), "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["report", str(path)]) == 1
    assert "needs -o" in capsys.readouterr().err


def _listening(root: psutil.Process) -> dict[tuple[str, int], str]:
    """Every listening TCP socket and bound, unconnected UDP socket of ``root`` and its
    descendants. (A connected UDP socket takes datagrams from its peer only: Ray connects
    one to a public address, sending nothing, to learn the machine's routable address.)"""
    found: dict[tuple[str, int], str] = {}
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for p in processes:
        try:
            name = p.name()
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN or (
                    c.type == socket.SOCK_DGRAM and c.laddr and not c.raddr
                ):
                    found[(c.laddr.ip, c.laddr.port)] = name
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.mark.slow
def test_demo_shows_raypipe_lines_only_and_listens_on_loopback_only(tmp_path: Path) -> None:
    """`raypipe demo` without a terminal: raypipe's own lines only (about 10), none of
    Ray's; meanwhile every socket its Ray processes listen on is a loopback one."""
    exe = shutil.which("raypipe", path=os.path.dirname(sys.executable)) or "raypipe"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        demo = psutil.Popen(
            [exe, "demo", "--output-dir", str(tmp_path / "demo")],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=env,
        )
        sockets: dict[tuple[str, int], str] = {}
        deadline = time.monotonic() + 300
        while demo.poll() is None and time.monotonic() < deadline:
            sockets.update(_listening(demo))
            time.sleep(0.2)
        code = demo.wait(timeout=max(1.0, deadline - time.monotonic()))
    lines = out.read_text().splitlines() + err.read_text().splitlines()
    assert code == 0, lines
    # until the first chunk is done a line at the start and one every 10 s (a busy
    # machine's Ray takes longer to start), then at most 10 in all
    starting = [line for line in lines if ", starting: Ray, the actors, the first chunk (" in line]
    assert 1 <= len(starting) <= 4 and len(lines) - len(starting) <= 9, lines
    ours = ("sample.mp4: ", "demo: ")
    assert all(line.startswith(ours) for line in lines), lines
    # Ray's processes did listen (GCS, raylet, ...), and on the loopback address only
    assert len({name for name in sockets.values()}) >= 2, sockets
    exposed = {f"{ip}:{port}": name for (ip, port), name in sockets.items() if not _loopback(ip)}
    assert exposed == {}


def _loopback(ip: str) -> bool:
    """127.0.0.0/8 or ::1, also as an IPv4-mapped IPv6 address (``::ffff:127.0.0.1``)."""
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def test_a_signal_that_comes_while_the_service_starts_again_is_taken_once_it_is_up() -> None:
    """``raypipe serve`` starts again as a new process (``execv``, after ``--max-runs``) with
    Ctrl-C and SIGTERM blocked; a SIGTERM that came meanwhile waits there, pending, and is
    taken as the command's own once its handler is in place: status 143 and one line
    (before, one that came before the new process had a handler ended it by the signal's
    default action, said nowhere). Here the process blocks them, sends itself SIGTERM and
    execs the service, as the restart does; nothing answers at the address, which the
    service would otherwise report."""
    code = (
        "import os, signal, sys; "
        "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM}); "
        "os.kill(os.getpid(), signal.SIGTERM); "
        "os.execv(sys.executable, "
        "[sys.executable, '-m', 'raypipe.cli', 'serve', '--address', '127.0.0.1:9'])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 143, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "raypipe: terminated (SIGTERM)", done.stderr


def test_device_gpu_without_a_usable_gpu_says_why_before_starting_ray(
    tmp_path: Path, clips: dict[str, Path], capsys: pytest.CaptureFixture[str], no_ray: None
) -> None:
    """It failed after the local Ray's start (12 s) saying the cluster has no GPU
    resources and to `ray start --num-gpus N`; what was missing was a GPU build of ONNX
    Runtime and a driver, which `raypipe doctor` tells in a second."""
    import ray

    from raypipe.infer.provider_check import check_gpu_stack

    problem = check_gpu_stack().device_problem("gpu")
    if not problem:
        pytest.skip("this machine has a GPU ONNX Runtime can use")
    out = tmp_path / "o.mp4"
    assert main(["run", str(clips["ntsc"]), str(out), "--device", "gpu", "-q"]) == 1
    err = capsys.readouterr().err
    assert "DeviceUnavailableError: device 'gpu' asked for, but this machine has no GPU" in err
    assert problem in err and "--device cpu" in err
    assert not ray.is_initialized() and not out.exists()
    # an archive's OUTPUT_DIR, made for it, went with it (it was left, empty; a sweep)
    folder = tmp_path / "archive_out"
    assert main(["archive", str(clips["ntsc"]), str(folder), "--device", "gpu", "-q"]) == 1
    assert "DeviceUnavailableError" in capsys.readouterr().err
    assert not folder.exists() and not ray.is_initialized()


def test_an_output_where_nothing_can_be_written_is_refused_before_any_work(
    tmp_path: Path, clips: dict[str, Path], capsys: pytest.CaptureFixture[str], no_ray: None
) -> None:
    """A folder that cannot take a file (here /proc: root may write anywhere else) failed
    at the run's first write, after Ray's start, as "FileNotFoundError ... (unexpected)";
    a parent that is a file was said not to exist."""
    clip = str(clips["ntsc"])
    assert main(["run", clip, "/proc/out.mp4", "-q"]) == 1
    assert "ConfigError: output '/proc/out.mp4': cannot write in '/proc'" in capsys.readouterr().err
    assert main(["run", clip, f"{clip}/out.mp4", "-q"]) == 1
    assert f"'{clip}' is a file, not a directory" in capsys.readouterr().err
    shutil.copy(clip, tmp_path / "a.mp4")
    assert main(["archive", str(tmp_path), "/proc/archive-out", "-q"]) == 1
    assert "ConfigError: OUTPUT_DIR '/proc/archive-out': cannot make" in capsys.readouterr().err
    import ray

    assert not ray.is_initialized()
