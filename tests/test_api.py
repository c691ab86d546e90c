"""`raypipe.process_video` / `process_archive`: every option a named, typed, documented
keyword (what an IDE and `help()` show), built through `build_run_config`."""

from __future__ import annotations

import inspect
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
