"""The command line's first impression: every `--help` ends with examples that parse,
`raypipe model list/show` say what a model is, and every subcommand's misuse is one typed
line (exit 1) or one usage line (exit 2), never a traceback; `--verbose` shows it."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from raypipe.cli import build_parser, main
from raypipe.cli_help import EXAMPLES
from raypipe.infer.builtin import BUILTIN_MODELS, builtin_bytes
from raypipe.infer.model_info import DESCRIPTIONS
from raypipe.infer.sidecar import ModelSpec, write_sidecar

SUBCOMMANDS = [
    ["run"],
    ["archive"],
    ["build-engines"],
    ["report"],
    ["probe"],
    ["model"],
    ["model", "list"],
    ["model", "show"],
    ["model", "export"],
    ["demo"],
    ["doctor"],
    ["serve"],
]


def _help(words: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        main([*words, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def _parse_example(line: str) -> argparse.Namespace:
    words = shlex.split(line.split(" | ")[0])  # `... | grep tensor`: the raypipe part
    assert words[0] == "raypipe", line
    return build_parser().parse_args(words[1:])


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=" ".join)
def test_every_help_ends_with_examples_that_parse(
    words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    text = _help(words, capsys).rstrip("\n")
    head, sep, tail = text.rpartition("\nexamples:\n")
    assert sep and head, text
    examples = [line.strip() for line in tail.splitlines()]
    assert 2 <= len(examples) <= 4, examples
    assert examples == EXAMPLES[" ".join(words)]
    for line in examples:
        args = _parse_example(line)
        assert args.command == words[0]
        if len(words) > 1:
            assert args.model_command == words[1]


def _subparser(words: list[str]) -> argparse.ArgumentParser:
    parser = build_parser()
    for word in words:
        (choices,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = choices.choices[word]
    return parser


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=" ".join)
def test_every_option_says_what_it_does(words: list[str]) -> None:
    silent = [
        action.option_strings[0] if action.option_strings else action.dest
        for action in _subparser(words)._actions
        if not action.help and not isinstance(action, argparse._SubParsersAction)
    ]
    assert not silent, f"raypipe {' '.join(words)}: no help for {silent}"


def test_engines_are_built_at_the_precision_a_run_asks_for() -> None:
    parser = build_parser()
    run = parser.parse_args(["run", "in.mp4", "out.mp4"])
    engines = parser.parse_args(["build-engines", "m.onnx"])
    assert engines.precision == run.precision == "fp32"


def test_model_list_says_kind_scale_and_what_each_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["model", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "kind", "scale", "what", "it", "does"]
    rows = {line.split()[0]: line.split(None, 3) for line in lines[1:]}
    assert sorted(rows) == sorted(f"builtin:{n}" for n in BUILTIN_MODELS)
    assert rows["builtin:upscale2x"][1:3] == ["image", "2x"]
    assert rows["builtin:sharpen"][1:3] == ["image", "1x"]
    assert rows["builtin:phash"][1:3] == ["tensor", "-"]
    assert rows["builtin:embedding"][1:3] == ["tensor", "-"]
    for name in BUILTIN_MODELS:
        assert rows[f"builtin:{name}"][3] == DESCRIPTIONS[name]


def test_model_show_inputs_outputs_spec_and_its_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["model", "show", "builtin:upscale2x"]) == 0
    text = capsys.readouterr().out
    assert "kind: image, scale 2x" in text
    assert "inputs:\n  input: float32 [batch, 3, height, width]\n" in text
    assert "outputs:\n  output: float32 [batch, 3, out_height, out_width]\n" in text
    assert "spec: from the defaults (a built-in)\n  layout: 'NCHW'\n" in text
    assert main(["model", "show", "builtin:phash"]) == 0
    text = capsys.readouterr().out
    assert "kind: tensor (arrays per frame: Parquet)" in text and "spec: from the built-in" in text

    path = tmp_path / "sharpen.onnx"
    path.write_bytes(builtin_bytes("sharpen"))
    assert main(["model", "show", str(path)]) == 0
    text = capsys.readouterr().out
    assert "spec: from the defaults (no sidecar beside the model)" in text
    sidecar = write_sidecar(str(path), ModelSpec(layout="NCHW", color="BGR"))
    assert main(["model", "show", str(path)]) == 0
    text = capsys.readouterr().out
    assert f"spec: from sidecar {sidecar}\n" in text and "  color: 'BGR'\n" in text
    spaced = tmp_path / "my models" / "sharp en.onnx"  # as a file:// URL: %20 (a sweep)
    spaced.parent.mkdir()
    spaced.write_bytes(path.read_bytes())
    sidecar = write_sidecar(str(spaced), ModelSpec(color="BGR"))
    assert main(["model", "show", spaced.as_uri()]) == 0
    text = capsys.readouterr().out
    assert f"spec: from sidecar {sidecar}\n" in text and "  color: 'BGR'\n" in text


def test_model_show_describes_models_a_small_frame_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``model show`` ran every image model once on a 32x32 frame and failed on those that
    cannot take one (a fixed-size model, a custom operator), printing nothing of them; the
    scale now comes from the graph's shapes where they say it, else it is "unknown (why)"."""
    from onnx import TensorProto, helper

    def save(name: str, node: object, dims: list[object], domain: str = "") -> Path:
        graph = helper.make_graph(
            [node],
            name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, dims)],
        )
        opsets = [helper.make_opsetid("", 17)]
        opsets += [helper.make_opsetid(domain, 1)] if domain else []
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(helper.make_model(graph, opset_imports=opsets).SerializeToString())
        return path

    fixed = save("fixed", helper.make_node("Neg", ["input"], ["output"]), [1, 3, 256, 256])
    assert main(["model", "show", str(fixed)]) == 0
    assert "kind: image, scale 1x" in capsys.readouterr().out
    custom = helper.make_node("Fancy", ["input"], ["output"], domain="com.acme")
    path = save("custom", custom, ["N", 3, "H", "W"], domain="com.acme")
    assert main(["model", "show", str(path)]) == 1  # described, then why a run refuses it
    text, err = capsys.readouterr()
    assert "is not a registered function/op" in err and err.startswith("raypipe: error: ")
    assert "kind: image, scale unknown (a 32x32 frame did not run: " in text
    assert "custom-op library, which raypipe does not load" in text
    assert "inputs:\n  input: float32 [N, 3, H, W]\n" in text


def test_model_show_gives_a_scale_below_one_and_one_per_side(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model that halves frames and one that doubles their width alone both showed
    "scale 1x": the small frame's output height, rounded to a whole number of at least 1."""

    def save(name: str, node: object, out: list[object], initializers: list = []) -> str:  # noqa: B006
        graph = helper.make_graph(
            [node],
            name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)],
            initializers,
        )
        path = tmp_path / f"{name}.onnx"
        opsets = [helper.make_opsetid("", 17)]
        path.write_bytes(helper.make_model(graph, opset_imports=opsets).SerializeToString())
        return str(path)

    pool = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    halves = save("halves", pool, ["N", 3, "h", "w"])
    scales = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 1, 2])
    resize = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")
    wider = save("wider", resize, ["N", 3, "h", "w"], [scales])
    for path, scale in ((halves, "0.5x"), (wider, "2x wide, 1x high")):
        assert main(["model", "show", path]) == 0
        assert f"kind: image, scale {scale} (frames in" in capsys.readouterr().out


def _one_line_error(
    argv: list[str], capsys: pytest.CaptureFixture[str], error_type: str, text: str
) -> None:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"raypipe: error: {error_type}: "), err
    assert text in err, err


def _usage_line(argv: list[str], capsys: pytest.CaptureFixture[str], text: str) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2
    assert len(err.splitlines()) == 1, err
    assert text in err and "--help` shows the options and examples" in err, err


def test_run_misuse(
    tmp_path: Path, clips: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _usage_line(["run", str(clips["ntsc"])], capsys, "raypipe run: error: the following")
    _usage_line(
        ["run", "a.mp4", "b.mp4", "--workers", "many"],
        capsys,
        "expected an integer >= 1, got 'many'",
    )
    _usage_line(["rnu", "a.mp4"], capsys, "raypipe: error: argument COMMAND: invalid choice")
    # the subcommand's error, with the option meant (it was `raypipe --help`'s, no hint)
    _usage_line(
        ["run", "a.mp4", "b.mp4", "--modle", "builtin:blur"],
        capsys,
        "raypipe run: error: unrecognized arguments: --modle builtin:blur (did you mean "
        "--model?); `raypipe run --help` shows",
    )
    _usage_line(  # an option of its own after `--` was "did you mean --model?" (a sweep)
        ["run", "--", "-x.mp4", "-y.mp4", "--model", "builtin:blur"],
        capsys,
        "unrecognized arguments: --model builtin:blur (arguments after `--` are file names: "
        "put --model before the `--`)",
    )
    _one_line_error(
        ["run", str(tmp_path / "nope.mp4"), str(tmp_path / "o.mp4"), "-q"],
        capsys,
        "InputNotFoundError",
        "does not exist",
    )
    source = tmp_path / "in.mp4"
    source.write_bytes(clips["ntsc"].read_bytes())
    _one_line_error(  # ffmpeg refuses too: --overwrite would replace the original for good
        ["run", str(source), str(tmp_path / "." / "in.mp4"), "--overwrite", "-q"],
        capsys,
        "ConfigError",
        "is the input; write to another path",
    )
    assert source.read_bytes() == clips["ntsc"].read_bytes()
    (tmp_path / "outs").mkdir()
    _one_line_error(  # a folder for a video: "has extension '(none)'" (a sweep)
        ["run", str(source), str(tmp_path / "outs"), "-q"],
        capsys,
        "ConfigError",
        f"outs' is a folder; a video goes into a file, e.g. {tmp_path / 'outs' / 'out.mp4'}",
    )
    _one_line_error(  # input and output swapped: "output ... exists; pass --overwrite"
        ["run", str(tmp_path / "out.mp4"), str(source), "-q"],
        capsys,
        "InputNotFoundError",
        "out.mp4' does not exist",
    )


def test_archive_misuse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(
        ["archive", str(tmp_path / "nothing-here"), str(tmp_path / "out"), "-q"],
        capsys,
        "InputNotFoundError",
        "nothing-here",
    )
    manifest = tmp_path / "list.parquet"
    manifest.write_text("not parquet")
    _one_line_error(
        ["archive", str(manifest), str(tmp_path / "out"), "-q"],
        capsys,
        "ConfigError",
        "is not a readable Parquet file",
    )


def test_build_engines_misuse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(["build-engines"], capsys, "ConfigError", "no model given")
    # a file that is no model: before a sweep, "needs GPU nodes and the cluster has none"
    (tmp_path / "broken.onnx").write_text("garbage")
    _one_line_error(
        ["build-engines", str(tmp_path / "broken.onnx")],
        capsys,
        "ModelLoadError",
        "is not an ONNX model",
    )
    _one_line_error(
        ["build-engines", "builtin:sharpen", "--model", "builtin:blur"],
        capsys,
        "ConfigError",
        "two models given",
    )
    for size in ("big", "320x", "x240", "0x240"):  # bad usage (exit 2), as the others'
        _usage_line(
            ["build-engines", "builtin:sharpen", "--size", size],
            capsys,
            f"argument --size: expected WIDTHxHEIGHT, e.g. 1920x1080, got '{size}'",
        )
    _one_line_error(
        ["build-engines", "builtin:nope"], capsys, "ModelNotFoundError", "unknown built-in"
    )


def test_report_misuse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(["report", "some.mp4"], capsys, "ConfigError", "got 'some.mp4'")
    _one_line_error(
        ["report", str(tmp_path / "r.parquet")], capsys, "InputNotFoundError", "does not exist"
    )
    (tmp_path / "bad.parquet").write_text("not parquet")
    _one_line_error(
        ["report", str(tmp_path / "bad.parquet")], capsys, "ConfigError", "not a readable"
    )
    (tmp_path / "s.json").write_text("[1, 2]")
    _one_line_error(
        ["report", str(tmp_path / "s.json"), "-o", str(tmp_path / "r.png")],
        capsys,
        "ConfigError",
        "is not raypipe run stats",
    )
    _one_line_error(
        ["report", str(tmp_path / "s.json"), "-o", str(tmp_path / "no" / "r.png")],
        capsys,
        "ConfigError",
        "does not exist; create it first",
    )
    # a sweep: a .jpg got PNG bytes, and an archive report's -o was ignored (exit 0)
    _one_line_error(
        ["report", str(tmp_path / "s.json"), "-o", str(tmp_path / "r.jpg")],
        capsys,
        "ConfigError",
        "the picture is a PNG: name it REPORT.png",
    )
    _one_line_error(
        ["report", str(tmp_path / "bad.parquet"), "-o", str(tmp_path / "r.png")],
        capsys,
        "ConfigError",
        f"drew its run's picture beside it: {tmp_path / 'bad.png'}",
    )


def test_probe_misuse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(["probe", str(tmp_path / "x.mp4")], capsys, "InputNotFoundError", "x.mp4")
    (tmp_path / "t.mp4").write_text("text")
    _one_line_error(["probe", str(tmp_path / "t.mp4")], capsys, "CorruptVideoError", "t.mp4")


def test_probe_into_a_closed_pipe_is_quiet(clips: dict[str, Path]) -> None:
    """`raypipe probe clip | head -1`: the reader is gone; no BrokenPipeError traceback."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    probe = subprocess.Popen(
        [sys.executable, "-m", "raypipe.cli", "probe", str(clips["open_gop"])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert probe.stdout is not None and probe.stderr is not None
    probe.stdout.close()  # before the first line is written: every write fails
    err = probe.stderr.read().decode()
    assert probe.wait(timeout=120) == 141, err
    assert err == ""


def test_model_misuse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(
        ["model", "show", str(tmp_path / "m.onnx")], capsys, "ModelNotFoundError", "m.onnx"
    )
    (tmp_path / "junk.onnx").write_bytes(b"junk" * 40)
    _one_line_error(
        ["model", "show", str(tmp_path / "junk.onnx")], capsys, "ModelLoadError", "cannot load"
    )
    (tmp_path / "empty.onnx").write_bytes(b"")  # parses as an empty ModelProto: "kind: tensor"
    _one_line_error(
        ["model", "show", str(tmp_path / "empty.onnx")], capsys, "ModelLoadError", "no graph"
    )
    _one_line_error(
        ["model", "export", "builtin:sharpen", str(tmp_path)], capsys, "ConfigError", ".onnx file"
    )
    (tmp_path / "dir.onnx").mkdir()
    _one_line_error(
        ["model", "export", "builtin:sharpen", str(tmp_path / "dir.onnx")],
        capsys,
        "ConfigError",
        "directory",
    )
    _usage_line(["model"], capsys, "raypipe model: error: the following")


def test_demo_misuse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    taken = tmp_path / "a-file"
    taken.write_text("x")
    _one_line_error(["demo", "--output-dir", str(taken)], capsys, "ConfigError", "is a file")


def test_serve_misuse(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    _one_line_error(["serve"], capsys, "ConfigError", "needs a running cluster: --address")


def test_doctor_misuse(capsys: pytest.CaptureFixture[str]) -> None:
    if main(["doctor", "--device", "gpu", "--json"]) == 0:
        pytest.skip("--device gpu works on this machine")
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("raypipe: error: DeviceUnavailableError: --device gpu would fail")
    _usage_line(["doctor", "--device", "tpu"], capsys, "invalid choice: 'tpu'")


def test_verbose_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "some.mp4", "--verbose"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert err.strip().splitlines()[-1].startswith("raypipe: error: ConfigError: ")


def test_model_show_of_a_model_a_run_refuses_ends_with_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`model show` read the graph only: it called a rank-3 model "kind: tensor" and exited
    0, and `run` then refused it. It still says what the file is, then the run's error."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "W"])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "rank3.onnx"
    onnx.save(model, str(path))
    assert main(["model", "show", str(path)]) == 1
    out, err = capsys.readouterr()
    assert "inputs:\n  x: float32 [N, 3, W]\n" in out
    assert err.startswith("raypipe: error: ModelLoadError: model input 'x' has rank 3"), err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """``raypipe --version`` said "the following arguments are required: COMMAND" (a sweep)."""
    import raypipe

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"raypipe {raypipe.__version__}"


def test_the_summary_line_counts_in_words() -> None:
    """ "1 chunks", "1 frames" and "worker(s)" (a sweep)."""
    from raypipe.distributed.service import summary_line

    one = {"frames": 1, "chunks": 1, "wall_seconds": 2.0, "fps": 0.5, "workers": 1}
    assert summary_line("o.mp4", {**one, "providers": ["CPU"]}) == (
        "wrote o.mp4: 1 frame in 1 chunk, 2.0s (0.5 fps) on 1 worker [CPU]"
    )
    two = {"frames": 48, "chunks": 4, "wall_seconds": 2.0, "fps": 24.0, "workers": 2}
    assert summary_line("o.mp4", {**two, "providers": ["CPU"]}).startswith(
        "wrote o.mp4: 48 frames in 4 chunks, 2.0s (24.0 fps) on 2 workers"
    )
    # one actor ran every chunk (the other found no free CPU): it said "on 2 workers"
    assert summary_line("o.mp4", {**two, "actors": 1, "providers": ["CPU"]}).endswith(
        "on 1 of 2 workers [CPU]"
    )
    from raypipe.distributed.stats import RunStats

    stats = RunStats(input="i", output="o", workers=2)
    stats.chunk_stats = [{"infer_pid": 7, "infer_node": "n", "actor_id": "a"}] * 3
    assert stats.actors_used == 1


def test_a_tile_overlap_without_tiles_is_refused(
    tmp_path: Path, clips: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """``--tile-overlap 8`` without ``--tile`` was dropped without a word (a sweep)."""
    _one_line_error(
        ["run", str(clips["ntsc"]), str(tmp_path / "o.mp4"), "--tile-overlap", "8", "-q"],
        capsys,
        "ConfigError",
        "tile_overlap 8 is the context around tiles, and the model is not tiled",
    )
