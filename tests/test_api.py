"""`raypipe.process_video` / `process_archive`: every option a named, typed, documented
keyword (what an IDE and `help()` show), built through `build_run_config`."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import raypipe
from raypipe.api import KEEP
from raypipe.config import _OPTION_FIELDS, _RUN_FIELDS, build_run_config
from raypipe.errors import ConfigError, InputNotFoundError, ModelNotFoundError

OPTIONS = {*_OPTION_FIELDS, *_RUN_FIELDS}
ARCHIVE_ONLY = {"resume", "report_path"}


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        (raypipe.process_video, OPTIONS),
        (raypipe.process_archive, (OPTIONS - {"overwrite"}) | ARCHIVE_ONLY),
    ],
    ids=["process_video", "process_archive"],
)
def test_every_option_is_a_named_typed_documented_keyword(
    function: object, expected: set[str]
) -> None:
    signature = inspect.signature(function)  # type: ignore[arg-type]
    kinds = {p.kind for p in signature.parameters.values()}
    assert inspect.Parameter.VAR_KEYWORD not in kinds  # no **options
    keywords = {
        name: p
        for name, p in signature.parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    assert set(keywords) == expected
    doc = inspect.getdoc(function) or ""
    assert not doc.startswith("See ")  # the options here, not a pointer elsewhere
    for name, p in keywords.items():
        assert p.annotation is not inspect.Parameter.empty, name
        assert f"\n    {name}: " in doc, f"{name} is not documented"
        assert name in ARCHIVE_ONLY or p.default is KEEP


def test_options_override_the_config_and_left_out_ones_keep_it(tmp_path: Path) -> None:
    missing, out = str(tmp_path / "missing.mp4"), str(tmp_path / "o.mp4")
    config = build_run_config(model="builtin:nope")
    with pytest.raises(ModelNotFoundError):  # the config's model, kept
        raypipe.process_video(missing, out, config)
    with pytest.raises(InputNotFoundError):  # the option's model, then the missing input
        raypipe.process_video(missing, out, config, model="builtin:sharpen")
    with pytest.raises(ConfigError, match="chunk_frames must be an integer >= 1, got 0"):
        raypipe.process_video(missing, out, chunk_frames=0)
    with pytest.raises(ConfigError, match="chunk_frames must be an integer >= 1, got 0"):
        raypipe.process_archive([missing], str(tmp_path / "out"), chunk_frames=0)
    with pytest.raises(TypeError, match="chunk_frame"):
        raypipe.process_video(missing, out, chunk_frame=8)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"overwrite": "no"}, "overwrite must be True or False, got 'no'"),
        ({"quiet": "False"}, "quiet must be True or False, got 'False'"),
        ({"verbose": None}, "verbose must be True or False, got None"),
        ({"split_gops": "yes"}, "split_gops must be True or False, got 'yes'"),
        ({"workers": True}, "workers must be an integer >= 1 or None, got True"),
        ({"chunk_frames": True}, "chunk_frames must be an integer >= 1, got True"),
        ({"chunk_frames": "32"}, "chunk_frames must be an integer >= 1, got '32'"),
        ({"stats_path": 123}, "stats_path must be a path or URL of a .json file, or None, got 123"),
        ({"local_num_cpus": "4"}, "local_num_cpus must be an integer >= 1 or None, got '4'"),
        ({"local_num_cpus": 0}, "local_num_cpus must be an integer >= 1 or None, got 0"),
        ({"local_num_gpus": -1}, "local_num_gpus must be an integer >= 0 or None, got -1"),
        ({"address": 5}, "address must be a Ray address"),
        ({"local_object_store_bytes": 10}, r"local_object_store_bytes must be an integer >= "
         r"78643200 or None \(Ray's smallest store, 75 MiB\), got 10"),
        ({"sample_fps": "1"}, "sample_fps must be a number > 0, got '1'"),
        ({"engine_cache": 123}, "engine_cache must be a folder's path or URL, got 123"),
        ({"engine_cache": " "}, "engine_cache must be a folder's path or URL, got ' '"),
    ],
)  # fmt: skip
def test_options_of_the_wrong_type_are_refused_before_ray_starts(
    tmp_path: Path, options: dict[str, object], said: str
) -> None:
    """Found by a sweep: ``overwrite="no"`` replaced an existing output, ``workers=True``
    ran one worker, and a path, text or a negative count for the local Ray's options
    failed later with a TypeError, or a ClusterError that said "try again"."""
    with pytest.raises(ConfigError, match=said):
        build_run_config(**options)
    with pytest.raises(ConfigError, match=said):
        raypipe.process_video(str(tmp_path / "missing.mp4"), str(tmp_path / "o.mp4"), **options)


def test_numpy_integers_and_paths_are_taken_as_plain_values() -> None:
    """A notebook computes counts with NumPy: ``chunk_frames=np.int64(32)`` was refused
    with "must be an integer", and ``stats_path=Path(...)`` failed with a TypeError."""
    import numpy as np

    cfg = build_run_config(
        chunk_frames=np.int64(32), workers=np.int32(2), batch_size=np.int64(4),
        crf=np.int64(20), overwrite=np.bool_(True), stats_path=Path("s.json"),
    )  # fmt: skip
    values = (cfg.chunk.chunk_frames, cfg.runtime.workers, cfg.model.batch_size, cfg.encode.crf)
    assert values == (32, 2, 4, 20) and all(type(v) is int for v in values)
    assert cfg.overwrite is True and cfg.stats_path == "s.json"


def test_an_input_or_output_that_is_no_path_or_is_empty_is_refused_in_one_line(
    tmp_path: Path,
) -> None:
    """``process_video(5, ...)`` raised a bare TypeError from ``os.fspath``, ``""`` was read
    as the working directory ("input '/home/me' is a folder"; a sweep)."""
    from raypipe.data import read_video_chunks

    out = str(tmp_path / "o.mp4")
    for bad, said in [
        ((5, out), r"^input must be a path or URL \(str or os.PathLike\), got 5$"),
        ((None, out), r"^input must be a path or URL \(str or os.PathLike\), got None$"),
        (("", out), r"^input is empty: give a path or URL$"),
        ((str(tmp_path / "in.mp4"), None), r"^output must be a path or URL"),
        ((str(tmp_path / "in.mp4"), " "), r"^output is empty"),
    ]:
        with pytest.raises(ConfigError, match=said):
            raypipe.process_video(*bad)
    with pytest.raises(ConfigError, match=r"^inputs must be a path, a URL or a list of them"):
        raypipe.process_archive(5, str(tmp_path / "out"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^an input is empty"):
        raypipe.process_archive([""], str(tmp_path / "out"))
    with pytest.raises(ConfigError, match=r"^output_dir must be a path or URL"):
        raypipe.process_archive([out], None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^uris must be a path, a URL or a list of them"):
        read_video_chunks(5)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_a_model_given_as_a_path_is_taken_as_inputs_and_outputs_are(tmp_path: Path) -> None:
    """``model=Path(...)`` raised AttributeError ('PosixPath' object has no attribute
    'startswith') deep in the model loading; inputs and outputs took a Path already."""
    from raypipe.distributed.setup import load_model
    from raypipe.infer.models import resolve_model

    path = tmp_path / "invert.onnx"
    path.write_bytes(resolve_model("builtin:invert")[0])
    cfg = build_run_config(model=path)
    assert cfg.model.model == str(path)
    assert load_model(cfg).data == path.read_bytes()
    with pytest.raises(ConfigError, match="model must be 'builtin:NAME' or a path"):
        build_run_config(model=3)


def test_frames_a_fixed_size_model_cannot_take_fail_at_planning(tmp_path: Path) -> None:
    """A 224x224 classifier-like model given 160x96 frames and no ``resize`` failed at the
    first chunk's inference, after Ray's start, the actors' and a decode (24 s in a
    notebook); the plan knows both sizes, and fails the video there, before any of it."""
    import onnx
    from onnx import TensorProto, helper

    from raypipe.distributed.planning import VideoJob, plan_video
    from raypipe.distributed.setup import load_model, model_facts
    from raypipe.testing import ClipSpec, make_clip

    shape = [1, 3, 224, 224]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "fixed.onnx"
    onnx.save(model, str(path))
    clip = make_clip(tmp_path / "clip.mp4", ClipSpec(n_frames=8, width=160, height=96))

    def planned(**options: object) -> object:
        cfg = build_run_config(model=str(path), **options)
        job = VideoJob(uri=str(clip), output=str(tmp_path / "out.mp4"))
        facts = model_facts(load_model(cfg))
        return plan_video(job, cfg.chunk, resume=False, key=None, model=facts, encode=cfg.encode)

    failed = planned().result  # type: ignore[attr-defined]
    assert failed is not None and failed.error_type == "ModelLoadError"
    assert failed.error_message.startswith(
        "model input 'x' takes 224x224 (height x width) frames, got 96x160; pass --resize"
    )
    assert planned(resize="stretch").result is None  # type: ignore[attr-defined]


def test_a_config_given_where_options_go_is_refused_in_one_line(tmp_path: Path) -> None:
    """Slips a notebook user makes (a sweep): the model as the third positional argument
    raised ``TypeError: replace() should be called on dataclass instances``;
    ``RunConfig(model="builtin:x")`` was taken and crashed inside the run with an
    AttributeError; a model's bytes were quoted whole in the error (megabytes)."""
    clip, out = str(tmp_path / "in.mp4"), str(tmp_path / "out.mp4")
    with pytest.raises(ConfigError, match=r"config must be a RunConfig, got 'builtin:sharpen'; "
                       r"pass the model and other options by name"):  # fmt: skip
        raypipe.process_video(clip, out, "builtin:sharpen")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="RunConfig's model must be a ModelConfig, got "
                       "'builtin:grayscale'"):  # fmt: skip
        raypipe.RunConfig(model="builtin:grayscale")  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as bytes_given:
        raypipe.process_video(clip, out, model=b"\x08" * 100_000)  # type: ignore[arg-type]
    assert str(bytes_given.value).endswith(
        "got 100000 bytes; write them to a .onnx file and pass its path"
    )
    with pytest.raises(ConfigError) as long_given:
        build_run_config(model=["x" * 10_000])
    assert len(str(long_given.value)) < 200


def test_a_stats_path_or_output_that_cannot_be_written_fails_before_the_run(
    tmp_path: Path, no_ray: None
) -> None:
    """A stats_path in a missing folder failed after the whole run with a FileNotFoundError
    naming raypipe's temporary file, the output written but the stats lost; an output that
    is a folder failed after the run with a bare RaypipeError. Both are found before Ray
    starts now (``no_ray``: none is started)."""
    import ray

    from raypipe.testing import ClipSpec, make_clip

    clip = str(make_clip(tmp_path / "in.mp4", ClipSpec(n_frames=4)))
    out = str(tmp_path / "out.mp4")
    missing = str(tmp_path / "nodir" / "s.json")
    with pytest.raises(
        ConfigError, match=rf"--stats \(stats_path\) '{missing}': directory .* does not exist"
    ):
        raypipe.process_video(clip, out, model="builtin:invert", stats_path=missing)
    folder = tmp_path / "adir.mp4"
    folder.mkdir()
    with pytest.raises(
        ConfigError, match=r"output '.*adir.mp4' is a folder; a video goes into a file"
    ):
        raypipe.process_video(clip, str(folder), model="builtin:invert", overwrite=True)
    with pytest.raises(ConfigError, match=r"--stats \(stats_path\) '.*' is a directory"):
        raypipe.process_archive([clip], str(tmp_path / "o"), stats_path=str(tmp_path))
    # a web address: PUT requests after the whole run, an "unexpected" HTTP 501 (a sweep)
    web = re.escape("raypipe reads from web addresses (http, https) but does not write to them")
    url = "http://127.0.0.1:9/out"
    with pytest.raises(ConfigError, match=rf"^output '{url}.mp4': {web}"):
        raypipe.process_video(clip, f"{url}.mp4", model="builtin:invert")
    with pytest.raises(ConfigError, match=rf"^OUTPUT_DIR '{url}': {web}"):
        raypipe.process_archive([clip], url, model="builtin:invert")
    with pytest.raises(ConfigError, match=rf"^--stats \(stats_path\) '{url}.json': {web}"):
        raypipe.process_video(clip, out, model="builtin:invert", stats_path=f"{url}.json")
    # standard input and output: "'./-' does not exist", "has extension '(none)'" (a sweep)
    for given in ((clip, "-"), ("-", out), (clip, "pipe:1")):
        with pytest.raises(ConfigError, match="raypipe reads and writes files, not standard"):
            raypipe.process_video(*given, model="builtin:invert")
    # a name the staging files beside it make too long failed after the run (a sweep)
    long = tmp_path / ("n" * 228 + ".mp4")
    with pytest.raises(ConfigError, match=r"its name is 232 bytes long; .* at most 231 bytes"):
        raypipe.process_video(clip, str(long), model="builtin:invert")
    with pytest.raises(ConfigError, match=r"^output 'memory://b/o.mp4': memory:// is the memo"):
        raypipe.process_video(clip, "memory://b/o.mp4", model="builtin:invert")
    assert not ray.is_initialized()


def test_stats_and_a_report_never_replace_an_input_a_list_or_an_output(tmp_path: Path) -> None:
    """``--stats in.mp4`` replaced the input video with the JSON, ``--stats out.mp4`` the
    run's own output, ``--report manifest.parquet`` the archive's manifest, each run
    exiting 0 (a sweep); and a report in a missing folder was refused after OUTPUT_DIR had
    been made, left empty. All are refused before Ray starts, nothing made."""
    import pandas as pd
    import ray

    from raypipe.testing import ClipSpec, make_clip

    clip = make_clip(tmp_path / "in.mp4", ClipSpec(n_frames=4))
    original = clip.read_bytes()
    out = tmp_path / "out.mp4"
    for stats, what in ((clip, "the input"), (out, "the output")):
        with pytest.raises(ConfigError, match=rf"--stats \(stats_path\) '.*' is {what}; give"):
            raypipe.process_video(str(clip), str(out), stats_path=str(stats))
    archive = tmp_path / "archive"
    with pytest.raises(ConfigError, match=r"'.*in.mp4' is an input of this archive"):
        raypipe.process_archive([str(clip)], str(archive), stats_path=str(clip))
    manifest = tmp_path / "manifest.parquet"
    pd.DataFrame({"uri": [str(clip)]}).to_parquet(manifest)
    listed = manifest.read_bytes()
    with pytest.raises(ConfigError, match=r"'.*manifest.parquet' is the list of this archive's"):
        raypipe.process_archive(str(manifest), str(archive), report_path=str(manifest))
    with pytest.raises(ConfigError, match=r"\) '.*archive/in.mp4' is an output of this"):
        raypipe.process_archive([str(clip)], str(archive), stats_path=str(archive / "in.mp4"))
    with pytest.raises(ConfigError, match=r"--report \(report_path\) '.*nodir/r.parquet'"):
        raypipe.process_archive(
            [str(clip)], str(archive), report_path=str(tmp_path / "nodir/r.parquet")
        )
    assert clip.read_bytes() == original and manifest.read_bytes() == listed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "manifest.parquet"]
    assert not ray.is_initialized()


def test_run_stats_and_model_spec_are_public_names() -> None:
    """The README names ``RunStats`` (what process_video returns) and ``ModelSpec``; both
    raised AttributeError on ``raypipe.``."""
    from raypipe.distributed.stats import RunStats
    from raypipe.infer.sidecar import ModelSpec

    assert (raypipe.RunStats, raypipe.ModelSpec) == (RunStats, ModelSpec)
    assert {"RunStats", "ModelSpec"} <= set(raypipe.__all__)
    # a notebook's completion (dir) offered none of the lazy names, and `import *` gave
    # RaypipeError alone of the error tree the docstring calls public (a sweep)
    from raypipe import errors

    lazy = {"Processor", "ProcessorContext", "ModelSpec", "RunStats", "processor_identity"}
    assert lazy <= set(dir(raypipe))
    assert set(errors.__all__) <= set(raypipe.__all__)
    names: dict[str, object] = {}
    exec("from raypipe import *", names)  # noqa: S102
    assert names["ConfigError"] is errors.ConfigError and names["Processor"] is raypipe.Processor


def test_run_stats_and_an_archive_report_show_as_their_totals() -> None:
    """A notebook cell that ended with the stats showed every chunk record (kilobytes a
    chunk), a report every row (a sweep): both show their totals."""
    from raypipe.archive_report import ArchiveReport
    from raypipe.distributed.stats import RunStats

    stats = RunStats(input="a.mp4", output="b.mp4", frames=36, chunks=3, wall_seconds=2.4,
                     workers=2, providers=["CPUExecutionProvider"],
                     chunk_stats=[{"node": "n" * 40}] * 3)  # fmt: skip
    assert repr(stats) == (
        "RunStats(input='a.mp4', output='b.mp4', frames=36, chunks=3, wall_seconds=2.40, "
        "fps=15.0, workers=2, providers=['CPUExecutionProvider'], chunk_stats=[3 records])"
    )
    report = ArchiveReport(rows=[{"status": "done"}] * 1000 + [{"status": "failed"}], path="r")
    assert repr(report) == (
        "ArchiveReport(path='r', videos=1001, done=1000, skipped=0, failed=1, "
        "wall_seconds=0.00, exit_code=3)"
    )


def test_fp16_on_actors_without_a_gpu_is_said_to_change_nothing() -> None:
    """``--precision fp16 --device cpu`` ran at the model's own precision without a word
    (a sweep): the run says fp16 is for TensorRT engines on GPUs."""
    from raypipe.distributed.cluster import ActorPlan
    from raypipe.distributed.setup import precision_note

    cpu = ActorPlan(workers=1, num_gpus=0, num_cpus=1, intra_op_threads=1)
    gpu = ActorPlan(workers=1, num_gpus=1, num_cpus=1, intra_op_threads=1)
    fp16 = build_run_config(precision="fp16", device="cpu")
    assert precision_note(fp16, cpu).startswith("--precision fp16 asks for FP16 TensorRT")
    assert precision_note(fp16, gpu) == ""
    assert precision_note(build_run_config(device="cpu"), cpu) == ""  # fp32: as asked
