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
