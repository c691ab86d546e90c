"""The reuse key covers every setting that changes a segment or an output; source identity
and provenance records (raypipe.reuse). End-to-end resume tests: tests/distributed/
test_resume_key.py."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from raypipe.config import ChunkConfig, EncodeConfig, ModelConfig, RunConfig
from raypipe.distributed.setup import load_model
from raypipe.infer.sidecar import ModelSpec
from raypipe.media.encode import SEGMENT_FORMAT
from raypipe.reuse import (
    FORMAT_VERSION,
    TABLE_FORMAT,
    Provenance,
    ReuseKey,
    provenance_from_tags,
    provenance_tags,
    reuse_key,
    source_identity,
    user_comment,
)

BASE = RunConfig(model=ModelConfig(model="builtin:blur"))

# One other valid value per field: a field added to a config without an entry here fails
# test_every_field_is_covered, so nobody adds a setting the key forgets.
SPEC_CHANGES: dict[str, object] = {
    "layout": "NHWC",
    "color": "BGR",
    "scale": 1 / 256,
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "output_range": (0.0, 2.0),
    "input_name": "x",
    "output_name": "y",
    "output": "image",
    "resize": "stretch",
    "input_size": None,  # paired with resize below: (changed together in the test)
    "pad_value": 114,
    "tile": 64,
    "tile_overlap": 4,
    "pad_multiple": 32,
    "window": (2, 2),
    "window_layout": "channels",
    "state": (("prev", "prev_out"),),
    "warmup_frames": 4,  # paired with a state below: a warm-up warms a state up
    "interpolate": 2,
    "constants": (("downsample_ratio", (0.25,)),),
}
CHUNK_CHANGES: dict[str, object] = {
    "chunk_frames": 32,
    "chunk_mib": 100,
    "split_gops": False,
    "every_n_frames": 2,
    "sample_fps": 1.0,
}
CHUNK_EXCLUDED = {
    "decoder": "nvdec",  # decoding is bit-exact by the codec standards
    "handoff": "yuv",  # the graph's YUV -> RGB gives swscale's bits (tests/media/test_yuv.py)
}
ENCODE_CHANGES: dict[str, object] = {
    "codec": "libx265",
    "crf": 20,
    "preset": "slow",
    "pix_fmt": "yuv444p",
    "options": {"qp": "0"},
}
MODEL_CHANGES: dict[str, object] = {
    "model": "builtin:sharpen",  # other bytes
    "device": "cpu",  # on GPU actors: another device kind
    "batch_size": 2,
    "precision": "fp16",
    "tile": 32,  # tile/overlap/resize reach the key through the resolved spec
    "tile_overlap": 2,
    "resize": "letterbox",
    "pad_multiple": 16,
}
# Temporal overrides of a temporal model's spec: (the model they apply to, another value)
MODEL_TEMPORAL: dict[str, tuple[str, object]] = {
    "window": ("builtin:denoise3", (2, 2)),
    "warmup_frames": ("builtin:ema", 4),
}
MODEL_EXCLUDED = {"engine_cache": "/elsewhere"}  # where engines live, not what they compute
# A processor replaces the model (a config with both is refused): its identity is the key's
# `processor` part, from pipeline.run_key (tests/infer/test_processors.py checks that).
MODEL_ELSEWHERE = {"processor": "raypipe.examples.processors:Redact"}


def _key(cfg: RunConfig, *, uses_gpu: bool = True, processor: str = "") -> ReuseKey:
    # the model as the run loads it (frame sampling aside: it is checked against tensor models)
    model = load_model(dataclasses.replace(cfg, chunk=ChunkConfig()))
    return reuse_key(
        cfg, model_bytes=model.data, spec=model.spec, uses_gpu=uses_gpu, processor=processor
    )


def test_every_field_is_covered() -> None:
    def names(cls: type) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    assert names(ModelSpec) == set(SPEC_CHANGES)
    assert names(ChunkConfig) == set(CHUNK_CHANGES) | set(CHUNK_EXCLUDED)
    assert names(EncodeConfig) == set(ENCODE_CHANGES)
    assert names(ModelConfig) == (
        set(MODEL_CHANGES) | set(MODEL_TEMPORAL) | set(MODEL_EXCLUDED) | set(MODEL_ELSEWHERE)
    )


@pytest.mark.parametrize("field", sorted(SPEC_CHANGES))
def test_every_spec_field_changes_the_key(field: str) -> None:
    base = ModelSpec()
    changes = {field: SPEC_CHANGES[field]}
    if field in ("resize", "input_size"):
        changes = {"resize": "stretch", "input_size": (64, 64)}
        if field == "input_size":  # same resize, other size
            base = ModelSpec(resize="stretch", input_size=(32, 32))
    if field == "warmup_frames":  # a warm-up needs a state to warm up
        base = ModelSpec(state=(("prev", "prev_out"),))
    other = dataclasses.replace(base, **changes)  # type: ignore[arg-type]

    def key(spec: ModelSpec) -> ReuseKey:
        return reuse_key(BASE, model_bytes=b"m", spec=spec, uses_gpu=False)

    assert key(base).digest != key(other).digest
    assert key(base).changed(key(other).as_dict()) == ["spec"]


MODEL_PARTS = {
    "model": "model",
    "device": "device",
    "batch_size": "batch",
    "precision": "precision",
}
SETTINGS = (
    [("chunk", f, v, "chunking") for f, v in CHUNK_CHANGES.items()]
    + [("encode", f, v, "encoder") for f, v in ENCODE_CHANGES.items()]
    + [("model", f, v, MODEL_PARTS.get(f, "spec")) for f, v in MODEL_CHANGES.items()]
)


@pytest.mark.parametrize(
    ("section", "field", "value", "part"),
    [s for s in SETTINGS if s[1] != "resize"],  # resize needs a fixed-size model: see below
)
def test_every_setting_changes_the_key(section: str, field: str, value: object, part: str) -> None:
    base = BASE
    if field == "tile_overlap":  # the context around tiles: of a tiled model (else refused)
        base = dataclasses.replace(BASE, model=dataclasses.replace(BASE.model, tile=32))
    if field == "sample_fps":  # sample_fps and every_n_frames are exclusive
        changed_section = ChunkConfig(sample_fps=1.0)
    else:
        changed_section = dataclasses.replace(getattr(base, section), **{field: value})
    changed = dataclasses.replace(base, **{section: changed_section})
    a, b = _key(base), _key(changed)
    assert a.digest != b.digest
    assert b.changed(a.as_dict()) == [part]


def test_chunk_mib_as_int_or_float_is_one_key() -> None:
    whole = dataclasses.replace(BASE, chunk=ChunkConfig(chunk_mib=1024))
    assert (
        _key(whole).digest
        == _key(dataclasses.replace(BASE, chunk=ChunkConfig(chunk_mib=1024.0))).digest
    )
    assert (
        _key(whole).digest
        != _key(dataclasses.replace(BASE, chunk=ChunkConfig(chunk_mib=None))).digest
    )


@pytest.mark.parametrize("field", sorted(MODEL_TEMPORAL))
def test_temporal_overrides_change_the_spec_part(field: str) -> None:
    model, value = MODEL_TEMPORAL[field]
    base = dataclasses.replace(BASE, model=ModelConfig(model=model))
    changed = dataclasses.replace(BASE, model=ModelConfig(model=model, **{field: value}))
    assert _key(changed).changed(_key(base).as_dict()) == ["spec"]


@pytest.mark.parametrize(("section", "field", "value"), [
    ("chunk", f, v) for f, v in CHUNK_EXCLUDED.items()
] + [("model", f, v) for f, v in MODEL_EXCLUDED.items()])  # fmt: skip
def test_settings_that_do_not_change_outputs_keep_the_key(
    section: str, field: str, value: object
) -> None:
    changed_section = dataclasses.replace(getattr(BASE, section), **{field: value})
    changed = dataclasses.replace(BASE, **{section: changed_section})
    assert _key(BASE).digest == _key(changed).digest


def test_a_crf_the_encoder_ignores_keeps_the_key() -> None:
    """x264 ignores crf when the options set qp: a rerun with the CLI's default crf reuses
    outputs made with ``crf=None`` (the S3 archive test reruns that way)."""

    def with_encode(**fields: object) -> RunConfig:
        return dataclasses.replace(BASE, encode=dataclasses.replace(BASE.encode, **fields))

    qp: dict[str, object] = {"codec": "libx264", "options": {"qp": "0"}}
    assert _key(with_encode(crf=None, **qp)).digest == _key(with_encode(crf=18, **qp)).digest
    assert _key(with_encode(crf=None)).digest != _key(with_encode(crf=18)).digest
    # codec auto may pick libvpx-vp9 (WebM), which has no qp and takes crf
    auto = {"options": {"qp": "0"}}
    assert _key(with_encode(crf=None, **auto)).digest != _key(with_encode(crf=18, **auto)).digest


def test_device_kind_processor_and_format_are_parts() -> None:
    gpu, cpu = _key(BASE, uses_gpu=True), _key(BASE, uses_gpu=False)
    assert cpu.changed(gpu.as_dict()) == ["device"]
    proc = _key(BASE, processor="pkg.mod:Redact@abc")
    assert proc.changed(gpu.as_dict()) == ["processor"]
    assert gpu.as_dict()["format"] == f"provenance {FORMAT_VERSION}, segments {SEGMENT_FORMAT}"
    assert gpu.digest == _key(BASE, uses_gpu=True).digest  # deterministic


def test_the_table_layout_is_in_the_key_of_tensor_outputs_only() -> None:
    """Analysis tables of an older layout (video_id as a column too) are redone; videos
    keep their key."""
    video = reuse_key(BASE, model_bytes=b"m", uses_gpu=False)
    table = reuse_key(BASE, model_bytes=b"m", uses_gpu=False, tensor=True)
    assert table.changed(video.as_dict()) == ["format"]
    assert table.as_dict()["format"].endswith(f", tables {TABLE_FORMAT}") and TABLE_FORMAT == 2
    assert video.as_dict()["format"] == _key(BASE).as_dict()["format"]


def test_the_resize_override_changes_the_key(tmp_path: Path) -> None:
    from raypipe.infer.builtin import builtin_bytes

    model = tmp_path / "fixed.onnx"
    model.write_bytes(builtin_bytes("blur"))
    (tmp_path / "fixed.raypipe.json").write_text('{"resize": "stretch", "input_size": [64, 64]}')
    cfg = RunConfig(model=ModelConfig(model=str(model)))
    letterbox = dataclasses.replace(cfg, model=ModelConfig(model=str(model), resize="letterbox"))
    assert _key(letterbox).changed(_key(cfg).as_dict()) == ["spec"]


def test_a_sidecar_changes_the_key_with_the_same_model_bytes(tmp_path: Path) -> None:
    from raypipe.infer.builtin import builtin_bytes

    model = tmp_path / "m.onnx"
    model.write_bytes(builtin_bytes("invert"))
    cfg = RunConfig(model=ModelConfig(model=str(model)))
    before = _key(cfg)
    (tmp_path / "m.raypipe.json").write_text('{"output_range": [0, 2]}')
    after = _key(cfg)
    assert after.changed(before.as_dict()) == ["spec"]


def test_source_identity_follows_content_and_time(tmp_path: Path) -> None:
    a = tmp_path / "a.mp4"
    a.write_bytes(b"x" * 100)
    first = source_identity(str(a))
    assert source_identity(str(a)) == first
    a.write_bytes(b"y" * 100)  # same size, new content (new mtime)
    os.utime(a, ns=(1, 1))
    assert source_identity(str(a)) != first
    b = tmp_path / "b.mp4"
    shutil.copy2(a, b)  # same size and mtime: the same identity (content is not read)
    assert source_identity(str(b)) == source_identity(str(a))


def test_source_identity_of_urls_uses_the_store_version(
    http_dir: tuple[Path, str], tmp_path: Path
) -> None:
    root, base = http_dir
    (root / "v.mp4").write_bytes(b"a" * 1000)
    os.utime(root / "v.mp4", (1_000_000, 1_000_000))
    first = source_identity(f"{base}/v.mp4")
    assert first.startswith("size=1000;") and "Last-Modified=" in first
    os.utime(root / "v.mp4", (2_000_000, 2_000_000))
    assert source_identity(f"{base}/v.mp4") != first
    memory = "memory://raypipe-reuse/v.mp4"  # a store without versions: head and tail hashed
    import fsspec

    fsspec.filesystem("memory").pipe_file("/raypipe-reuse/v.mp4", b"b" * 200_000)
    edges = source_identity(memory)
    fsspec.filesystem("memory").pipe_file("/raypipe-reuse/v.mp4", b"b" * 199_999 + b"c")
    assert edges.startswith("size=200000;") and source_identity(memory) != edges


def test_provenance_records_round_trip_and_say_what_differs() -> None:
    key = _key(BASE)
    mine = Provenance.of(key, "size=1;mtime_ns=2")
    assert Provenance.parse(mine.to_text()) == dataclasses.replace(mine, parts=())
    assert Provenance.parse(mine.to_text(with_parts=True)) == mine
    assert mine.why_not(Provenance.parse(mine.to_text())) == ""
    assert mine.why_not(None) == "the output does not record what made it"
    assert mine.why_not(None, what="work directory") == (
        "the work directory does not record what made it"
    )
    moved = Provenance.of(key, "size=1;mtime_ns=3")
    assert mine.why_not(moved) == "the source changed"
    other = Provenance.of(
        _key(dataclasses.replace(BASE, encode=EncodeConfig(crf=30))), "size=1;mtime_ns=2"
    )
    assert mine.why_not(other) == "the settings changed (encoder)"
    assert mine.why_not(Provenance.parse(other.to_text())) == "the settings changed"
    for damaged in ("", "{", '{"v": 0, "key": "k", "source": "s"}', "[1]", None):
        assert Provenance.parse(damaged) is None


def test_provenance_tags_per_container() -> None:
    mine = Provenance.of(_key(BASE), "size=1;mtime_ns=2")
    record = mine.to_text(part_digests=True)  # each part's short digest: a redo names them
    assert provenance_tags(mine, "matroska") == {"raypipe": record}
    assert provenance_tags(mine, "mp4") == {"comment": record}
    assert provenance_tags(mine, "avi") == {"comment": record}
    assert provenance_tags(mine, "mpegts") == {}
    assert provenance_from_tags({"RAYPIPE": record}) == Provenance.parse(record)
    assert provenance_from_tags({"comment": "a user's comment"}) is None
    # a source's comment stays, above the record where the record is a comment (it was
    # replaced by the record: a sweep), and an earlier run's record leaves it
    said = {"Comment": "shot on a Tuesday\nsecond line"}
    both = f"shot on a Tuesday\nsecond line\n{record}"
    assert provenance_tags(mine, "mp4", said) == {"comment": both}
    assert provenance_from_tags({"comment": both}) == Provenance.parse(record)
    assert user_comment(both) == said["Comment"] and user_comment(record) == ""
    assert provenance_tags(mine, "matroska", {"COMMENT": both}) == {
        "comment": said["Comment"],
        "raypipe": record,
    }
    assert provenance_tags(mine, "mpegts", said) == {"comment": said["Comment"]}
    assert provenance_tags(mine, "mov", {"comment": record}) == {"comment": record}
    # a rerun names what changed from an output's record ("the settings changed" alone
    # before: the output kept the key's digest only; a sweep)
    crf30 = dataclasses.replace(BASE, encode=EncodeConfig(crf=30))
    other = Provenance.of(_key(crf30), "size=1;mtime_ns=2")
    assert other.why_not(Provenance.parse(record)) == "the settings changed (encoder)"
    assert mine.why_not(Provenance.parse(record)) == ""
