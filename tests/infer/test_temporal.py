"""Temporal models in-process, without video (issue 13): the built-in graphs, what a spec
may declare, and TemporalModel over chunks with context giving what it gives over the whole
sequence."""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
import pytest

from raypipe.config import ModelConfig, RunConfig, build_run_config
from raypipe.distributed.setup import load_model
from raypipe.errors import ConfigError, ModelLoadError
from raypipe.infer.builtin import builtin_bytes
from raypipe.infer.models import preprocess
from raypipe.infer.session import create_session
from raypipe.infer.sidecar import ModelSpec, builtin_spec, spec_from_dict, spec_to_dict
from raypipe.infer.temporal import Temporal, edge_padded, interleave
from raypipe.infer.temporal_builtin import TEMPORAL_MODELS, temporal_reference
from raypipe.infer.temporal_model import TemporalModel
from raypipe.media.retime import doubled_timing
from raypipe.testing.models import window_mean
from raypipe.testing.temporal import sequential_frames

RNG = np.random.default_rng(13)
FRAMES = RNG.integers(0, 256, size=(23, 12, 20, 3), dtype=np.uint8)


def model_of(name: str, **changes: object) -> TemporalModel:
    spec = dataclasses.replace(builtin_spec(name), **changes)  # type: ignore[arg-type]
    return TemporalModel(builtin_bytes(name), spec=spec, device="cpu")


def chunked(model: TemporalModel, frames: np.ndarray, cuts: list[int], batch: int = 4) -> list:
    """Each chunk [a, b) of ``frames`` run with the context the planner would decode."""
    want_before, want_after = model.temporal.context
    n, outs = len(frames), []
    for a, b in zip(cuts, cuts[1:]):
        lo, hi = max(0, a - want_before), min(n, b + want_after)
        outs.append(model.run(frames[lo:hi], batch, before=a - lo, after=hi - b))
    return outs


CUTS = [[0, 23], [0, 1, 2, 9, 10, 23], list(range(24)), [0, 7, 14, 21, 23]]


# --- the built-in graphs ------------------------------------------------------------------


@pytest.mark.parametrize("name", TEMPORAL_MODELS)
def test_builtin_graphs_are_checked_ir9_opset17(name: str) -> None:
    model = onnx.load_from_string(builtin_bytes(name))
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 9
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert builtin_spec(name).temporal.active


@pytest.mark.parametrize("name", TEMPORAL_MODELS)
def test_builtins_over_a_whole_sequence_match_numpy(name: str) -> None:
    x = preprocess(FRAMES, ModelSpec(), np.float32)
    ref = temporal_reference(name, x)
    session = create_session(builtin_bytes(name), device="cpu")
    n, got = len(x), []
    for t in range(n):  # the graphs themselves, fed by hand
        if name == "denoise3":
            window = x[[max(t - 1, 0), t, min(t + 1, n - 1)]][None]
            (y,) = session.run(["output"], {"input": window})
        elif name == "interp2x":
            (y,) = session.run(["output"], {"input": x[[t, min(t + 1, n - 1)]][None]})
            y = x[t : t + 1] if t == n - 1 else y
        else:
            if t == 0:
                prev = np.zeros_like(x[:1])
                started = np.zeros((1, 1, 1, 1), dtype=np.float32)
            y, prev, started = session.run(
                ["output", "prev_out", "started_out"],
                {"input": x[t : t + 1], "prev": prev, "started": started},
            )
        got.append(y[0])
    np.testing.assert_allclose(np.stack(got), ref, atol=1e-6, rtol=0)


def test_whole_sequence_reference_is_what_the_model_gives() -> None:
    """The plain reference tests compare with equals TemporalModel on a whole sequence."""
    for name in TEMPORAL_MODELS:
        whole = model_of(name).run(FRAMES, 4)
        assert np.array_equal(whole, sequential_frames(f"builtin:{name}", FRAMES)), name
    ref = temporal_reference("denoise3", preprocess(FRAMES, ModelSpec(), np.float32))
    pixels = np.rint(ref * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    assert np.abs(model_of("denoise3").run(FRAMES, 4).astype(int) - pixels).max() <= 1


# --- chunks with context give the whole sequence's result ----------------------------------


@pytest.mark.parametrize("cuts", CUTS, ids=lambda c: f"{len(c) - 1}chunks")
@pytest.mark.parametrize("name", ["denoise3", "interp2x"])
def test_window_and_interpolation_chunks_equal_the_whole(name: str, cuts: list[int]) -> None:
    model = model_of(name)
    whole = model.run(FRAMES, 3)
    assert np.array_equal(np.concatenate(chunked(model, FRAMES, cuts, batch=3)), whole)
    assert np.array_equal(whole, sequential_frames(f"builtin:{name}", FRAMES))
    if name == "interp2x":
        assert len(whole) == 2 * len(FRAMES)
        assert np.array_equal(whole[0::2], FRAMES)  # the sources, untouched
        assert np.array_equal(whole[-1], FRAMES[-1])  # repeated after itself


def test_a_wider_window_through_the_dynamic_time_axis() -> None:
    """A mean of 6 frames meets rounding ties, and ONNX Runtime's ReduceMean rounds some of
    them differently at batch 1 than at larger batches: every call has the run's batch
    size, so chunks (short ones too) give exactly the whole sequence's result."""
    model = model_of("denoise3", window=(2, 3))
    whole = model.run(FRAMES, 8)
    for cuts in ([0, 5, 6, 23], list(range(24))):
        assert np.array_equal(np.concatenate(chunked(model, FRAMES, cuts, batch=8)), whole)
    one_by_one = sequential_frames("builtin:denoise3", FRAMES, spec=model.spec)  # batch 1
    assert np.abs(whole.astype(int) - one_by_one).max() <= 1


def test_without_context_a_window_shows_the_chunk_seams() -> None:
    """The negative control: chunks run without their neighbours differ at the boundaries."""
    model = model_of("denoise3")
    whole = model.run(FRAMES, 8)
    cut = 9
    alone = np.concatenate([model.run(FRAMES[:cut], 8), model.run(FRAMES[cut:], 8)])
    differ = [t for t in range(len(FRAMES)) if not np.array_equal(alone[t], whole[t])]
    assert differ == [cut - 1, cut]


def test_recurrent_chunks_are_exact_first_and_within_a_level_after_warmup() -> None:
    model = model_of("ema")
    assert model.temporal.context == (8, 0)
    whole = model.run(FRAMES, 8)
    cuts = [0, 5, 6, 14, 23]
    outs = chunked(model, FRAMES, cuts)
    assert np.array_equal(outs[0], whole[:5])  # the first chunk starts at frame 0
    assert np.array_equal(outs[1], whole[5:6])  # 5 warm-up frames reach back to frame 0
    got = np.concatenate(outs).astype(int)
    assert np.abs(got - whole).max() <= 1
    cold = chunked(model_of("ema", warmup_frames=0), FRAMES, cuts)  # no warm-up
    assert np.abs(np.concatenate(cold).astype(int) - whole).max() > 1


def test_recurrent_state_zeros_take_the_frame_size() -> None:
    model = model_of("ema")
    shapes = {name: model._zeros(info, (1, 3, 12, 20)).shape for name, _, info in model._state}
    assert shapes == {"prev": (1, 3, 12, 20), "started": (1, 1, 1, 1)}


LAYOUTS = [("NCHW", "channels"), ("NHWC", "time"), ("NHWC", "channels")]


@pytest.mark.parametrize(("layout", "window_layout"), LAYOUTS)
def test_window_layouts_time_and_channels_nchw_and_nhwc(
    tmp_path: Path, layout: str, window_layout: str
) -> None:
    path = tmp_path / "mean.onnx"
    path.write_bytes(window_mean(5, layout=layout, window_layout=window_layout))
    spec = ModelSpec(layout=layout, window=(3, 1), window_layout=window_layout)  # type: ignore[arg-type]
    model = TemporalModel(path.read_bytes(), spec=spec, device="cpu")
    whole = model.run(FRAMES, 4)
    assert np.array_equal(whole, sequential_frames(str(path), FRAMES, spec=spec))
    assert np.array_equal(np.concatenate(chunked(model, FRAMES, [0, 2, 3, 11, 23])), whole)
    idx = np.clip(np.arange(23)[:, None] + np.arange(-3, 2)[None], 0, 22)
    mean = FRAMES[idx].astype(np.float64).mean(axis=1)  # oldest first or not: a mean is a mean
    assert np.abs(whole - mean).max() <= 0.5 + 1e-3


def test_deep_frames_stay_16_bit() -> None:
    deep = FRAMES.astype(np.uint16) * 257 + 3
    out = model_of("interp2x").run(deep, 4)
    assert out.dtype == np.uint16 and np.array_equal(out[0::2], deep)


# --- what a spec may declare ---------------------------------------------------------------


def test_builtin_specs_and_sidecar_round_trip() -> None:
    assert builtin_spec("denoise3").temporal == Temporal(window=(1, 1))
    assert builtin_spec("interp2x").temporal == Temporal(window=(0, 1), interpolate=2)
    ema = builtin_spec("ema")
    assert ema.temporal == Temporal(warmup_frames=8, recurrent=True)
    assert spec_to_dict(ema)["state"] == {"prev": "prev_out", "started": "started_out"}
    assert spec_from_dict(spec_to_dict(ema)) == ema
    read = spec_from_dict({"window": [2, 0], "window_layout": "channels"})
    assert read.window == (2, 0) and read.temporal.context == (2, 0)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"window": [1]}, r"window must be \[before, after\], two integers within 0\.\.1024"),
        ({"window": [-1, 1]}, r"window must be \[before, after\]"),
        ({"window_layout": "depth"}, r"window_layout must be 'time' or 'channels', got 'depth'"),
        ({"warmup_frames": 4}, r"warmup_frames=4 warms a recurrent state up; declare the state"),
        ({"state": {"a": "a"}}, r"state must map each state input .* all names different"),
        ({"state": {"a": "b"}, "window": [1, 1]}, r"a recurrent state with a window"),
        ({"interpolate": 3}, r"interpolate must be 2 .* or 1 \(none\), got 3"),
        ({"interpolate": 2, "window": [1, 1]}, r"interpolate=2 takes .* window \[0, 1\]"),
        ({"window": [1, 1], "tile": 64}, r"tile=64 is not supported with a temporal model"),
        ({"window": [1, 1], "output": "tensor"}, r"temporal model .* must output frames"),
    ],
)
def test_bad_temporal_specs_say_what_is_wrong(fields: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        spec_from_dict(fields, source="sidecar 'm.raypipe.json'")


@pytest.mark.parametrize(
    ("model", "changes", "match"),
    [
        ("blur", {"window": (1, 1)}, r"has shape \['batch', 3, 'height', 'width'\]; with "
         r"window=1,1 .* raypipe feeds a rank-5 NTCHW batch with 3 channels"),
        ("interp2x", {"window": (1, 1), "interpolate": 1}, r"takes 2 frames on its time axis; "
         r"the window \[1, 1\] gives 3"),
        ("ema", {"state": (("prev", "prev_out"), ("gone", "started_out"))},
         r"the spec's state names 'gone', which the model does not have"),
        ("ema", {"state": (("prev", "prev_out"),)}, r"a temporal model takes one frame input"),
    ],
)  # fmt: skip
def test_models_that_do_not_fit_their_spec_fail_to_load(
    model: str, changes: dict[str, object], match: str
) -> None:
    spec = dataclasses.replace(builtin_spec(model), **changes)  # type: ignore[arg-type]
    with pytest.raises(ModelLoadError, match=match):
        TemporalModel(builtin_bytes(model), spec=spec, device="cpu")


def test_run_options_override_the_spec_and_the_driver_checks_them() -> None:
    cfg = build_run_config(model="builtin:denoise3", window=(2, 2))
    assert load_model(cfg).temporal == Temporal(window=(2, 2))
    ema = load_model(build_run_config(model="builtin:ema", warmup_frames=3))
    assert ema.temporal == Temporal(warmup_frames=3, recurrent=True) and not ema.tensor
    with pytest.raises(ModelLoadError, match="rank-5 NTCHW"):
        load_model(build_run_config(model="builtin:blur", window=(1, 1)))
    with pytest.raises(ConfigError, match=r"window must be \[before, after\]"):
        ModelConfig(window=(1, 2, 3))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="a processor declares them as class attributes"):
        RunConfig(model=ModelConfig(processor="m:P", window=(1, 1)))
    # a processor has no spec to tile, pad or resize: these were left unused, without a word
    for option in ({"tile": 64}, {"pad_multiple": 32}, {"resize": "letterbox"},
                   {"tile_overlap": 8}):  # fmt: skip
        with pytest.raises(ConfigError, match="override a model's spec, and a processor has"):
            ModelConfig(processor="m:P", **option)  # type: ignore[arg-type]
    # a temporal model sees every frame: sampling was left unused, without a word
    with pytest.raises(ConfigError, match="frame sampling .* is for models that output tensors"):
        load_model(build_run_config(model="builtin:denoise3", sample_fps=5.0))


def test_cli_window_option() -> None:
    from raypipe.cli import build_parser, main

    args = build_parser().parse_args(["run", "a.mp4", "b.mp4", "--window", "2,1"])
    assert args.window == (2, 1) and args.warmup_frames is None
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "a.mp4", "b.mp4", "--window", "2"])
    assert exit_info.value.code == 2


# --- the numpy helpers ---------------------------------------------------------------------


def test_edge_padding_interleaving_and_doubled_timing() -> None:
    f = np.arange(4)[:, None, None, None] * np.ones((1, 1, 1, 3), dtype=np.uint8)
    padded = edge_padded(f, before=0, after=1, want_before=2, want_after=1)
    assert padded[:, 0, 0, 0].tolist() == [0, 0, 0, 1, 2, 3]
    with pytest.raises(ValueError, match="more than the 0/0 wanted"):
        edge_padded(f, before=1, after=0, want_before=0, want_after=0)
    assert interleave(f[:2], f[2:])[:, 0, 0, 0].tolist() == [0, 2, 1, 3]
    pts, end, tb = doubled_timing(np.array([0, 3, 4]), 9, Fraction(1, 5))
    assert pts.tolist() == [0, 3, 6, 7, 8, 13] and end == 18 and tb == Fraction(1, 10)
    with pytest.raises(ValueError, match="pts must rise"):
        doubled_timing(np.array([0, 3]), 3, tb)


# --- inputs given fixed values (constants) --------------------------------------------------


def _matting_shaped(tmp_path: Path) -> Path:
    """A model shaped like RobustVideoMatting's ONNX export: the frames (``src``), a
    recurrent state (``r1i`` -> ``r1o``) and ``downsample_ratio``, a number the user
    chooses (here the output is the frames times ``4 * downsample_ratio``, plus the state
    times 0, so 0.25 gives the frames back)."""
    from onnx import TensorProto, helper

    image = ["batch", 3, "height", "width"]
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["downsample_ratio", "four"], ["gain"]),
            helper.make_node("Mul", ["src", "gain"], ["scaled"]),
            helper.make_node("Mul", ["r1i", "zero"], ["nothing"]),
            helper.make_node("Add", ["scaled", "nothing"], ["fgr"]),
            helper.make_node("Identity", ["src"], ["r1o"]),
        ],
        "matting_shaped",
        [
            helper.make_tensor_value_info("src", TensorProto.FLOAT, image),
            helper.make_tensor_value_info("r1i", TensorProto.FLOAT, image),
            helper.make_tensor_value_info("downsample_ratio", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("fgr", TensorProto.FLOAT, image),
            helper.make_tensor_value_info("r1o", TensorProto.FLOAT, image),
        ],
        initializer=[
            helper.make_tensor("four", TensorProto.FLOAT, [], [4.0]),
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
        ],
    )
    path = tmp_path / "matting.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_matting_shaped_model_gets_its_downsample_ratio_from_constants(tmp_path: Path) -> None:
    """RobustVideoMatting's export takes ``downsample_ratio`` beside the frames and its
    state. raypipe fed it nothing and failed on the first chunk ("Required inputs
    (['downsample_ratio']) are missing"), with no way to give it a value; it is refused at
    load now, naming the sidecar's ``constants``, which give it one."""
    path = _matting_shaped(tmp_path)
    spec = ModelSpec(state={"r1i": "r1o"}, input_name="src", output_name="fgr")  # type: ignore[arg-type]
    with pytest.raises(
        ModelLoadError,
        match=r"model input\(s\) \['downsample_ratio'\] would get no value: .* "
        r'"constants": \{"downsample_ratio": VALUE\}',
    ):
        TemporalModel(path.read_bytes(), spec=spec, device="cpu")
    (tmp_path / "matting.raypipe.json").write_text(
        '{"state": {"r1i": "r1o"}, "input_name": "src", "output_name": "fgr", '
        '"constants": {"downsample_ratio": 0.25}}'
    )
    cfg = build_run_config(RunConfig(model=ModelConfig(model=str(path))))
    loaded = load_model(cfg)  # the driver's check passes
    assert loaded.spec is not None and loaded.spec.constants == (("downsample_ratio", (0.25,)),)
    model = TemporalModel(loaded.data, spec=loaded.spec, device="cpu")
    assert np.array_equal(model.run(FRAMES, 4), FRAMES)
    halved = dataclasses.replace(loaded.spec, constants=(("downsample_ratio", (0.125,)),))
    out = TemporalModel(loaded.data, spec=halved, device="cpu").run(FRAMES, 4)
    assert np.abs(out - FRAMES / 2).max() <= 0.5 + 1e-3  # the value is used


def test_a_matting_shaped_model_without_a_sidecar_is_told_to_feed_its_state_back(
    tmp_path: Path,
) -> None:
    """The hint said to give every extra input a fixed value, the state's too ("constants":
    {"r1i": VALUE, ...}), which cuts the recurrence off without a word."""
    path = _matting_shaped(tmp_path)
    with pytest.raises(ModelLoadError) as error:
        load_model(build_run_config(model=str(path)))
    text = str(error.value)
    assert '"state": {"r1i": "r1o"} with "warmup_frames": K' in text, text
    assert '"constants": {"downsample_ratio": VALUE}' in text and '"r1i": VALUE' not in text


def test_a_state_without_warm_up_frames_is_warned_of(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The README's RobustVideoMatting sidecar had no warmup_frames: every chunk after the
    first started from zeros (a frame up to 128 levels off at each chunk's start), and
    nothing said so."""
    path = _matting_shaped(tmp_path)
    sidecar = tmp_path / "matting.raypipe.json"
    base = '"state": {"r1i": "r1o"}, "input_name": "src", "constants": {"downsample_ratio": 1}'
    sidecar.write_text("{" + base + "}")
    with caplog.at_level("WARNING", logger="raypipe"):
        load_model(build_run_config(model=str(path)))
    assert "every chunk after a video's first starts from a zero state" in caplog.text
    caplog.clear()
    sidecar.write_text("{" + base + ', "warmup_frames": 4}')
    with caplog.at_level("WARNING", logger="raypipe"):
        load_model(build_run_config(model=str(path)))
    assert "zero state" not in caplog.text


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ({"downsample_ratio": "0.25"}, r"constants must map each extra model input"),
        ({"": 1}, r"constants must map each extra model input"),
        ({"downsample_ratio": []}, r"constants must map each extra model input"),
        ({"downsample_ratio": float("nan")}, r"constants must map each extra model input"),
    ],
)
def test_bad_constants_are_refused_in_the_spec(value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        spec_from_dict({"constants": value})
    spec = spec_from_dict({"constants": {"b": [1, 2], "a": 0.5}})
    assert spec.constants == (("a", (0.5,)), ("b", (1.0, 2.0)))
    assert spec_from_dict(spec_to_dict(spec)) == spec


def test_a_window_model_whose_output_is_no_frame_fails_to_load() -> None:
    """An output of rank 3 (or a channel count that is no picture's) passed the load and
    `raypipe model show`, then failed once Ray had started (a sweep); an output whose rank
    the graph does not declare is still taken (its shape is known when it runs)."""
    model = onnx.load_model_from_string(window_mean(3))
    dims = model.graph.output[0].type.tensor_type.shape.dim
    del dims[3]  # (batch, 3, height): the output of a model that pooled a row away
    spec = ModelSpec(window=(1, 1))
    match = r"model output 'output' has shape \['batch', 3, 'height'\]; a temporal model gives"
    with pytest.raises(ModelLoadError, match=match):
        TemporalModel(model.SerializeToString(), spec=spec, device="cpu")
    model.graph.output[0].type.tensor_type.ClearField("shape")  # rank unknown: taken
    TemporalModel(model.SerializeToString(), spec=spec, device="cpu")


def test_a_window_model_declared_in_the_other_layout_gets_a_hint() -> None:
    """(batch, 3 frames, 3, H, W) declared NHWC passed the load (its axis 4, the width, is
    dynamic) and failed as it ran, advising about frame sizes (a sweep)."""
    spec = ModelSpec(window=(1, 1), layout="NHWC")
    with pytest.raises(ModelLoadError, match=r'model put "layout": "NCHW" in its sidecar'):
        TemporalModel(window_mean(3), spec=spec, device="cpu")
    nhwc = window_mean(3, layout="NHWC")
    with pytest.raises(ModelLoadError, match=r'model put "layout": "NHWC" in its sidecar'):
        TemporalModel(nhwc, spec=ModelSpec(window=(1, 1)), device="cpu")
    TemporalModel(nhwc, spec=spec, device="cpu")  # as declared: taken
