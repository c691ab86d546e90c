"""Model sidecars: NAME.raypipe.json / .yaml beside NAME.onnx declare the ModelSpec."""

from __future__ import annotations

import hashlib
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest

from raypipe.errors import ConfigError, ModelLoadError, ModelNotFoundError
from raypipe.infer import (
    ModelSpec,
    builtin_bytes,
    builtin_spec,
    load_frame_model,
    load_sidecar,
    resolve_model_and_spec,
    spec_from_dict,
    spec_to_dict,
    write_sidecar,
)
from raypipe.infer.sidecar import SPEC_FIELDS, sidecar_paths

SPEC = {
    "layout": "NCHW",
    "color": "BGR",
    "mean": [0.5, 0.5, 0.5],
    "std": [0.25, 0.25, 0.25],
    "output_range": [-1.0, 1.0],
    "output": "image",
    "resize": "letterbox",
    "input_size": [224, 224],
    "pad_value": 114,
}
EXPECTED = ModelSpec(
    color="BGR",
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
    output_range=(-1.0, 1.0),
    output="image",
    resize="letterbox",
    input_size=(224, 224),
    pad_value=114,
)


def model_file(directory: Path, name: str = "net.onnx", builtin: str = "identity") -> Path:
    path = directory / name
    path.write_bytes(builtin_bytes(builtin))
    return path


def test_json_sidecar_beside_a_local_model(tmp_path: Path) -> None:
    model = model_file(tmp_path)
    (tmp_path / "net.raypipe.json").write_text(json.dumps(SPEC))
    assert load_sidecar(str(model)) == EXPECTED
    assert load_sidecar(model.as_uri()) == EXPECTED


def test_yaml_and_yml_sidecars(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    model = model_file(tmp_path)
    (tmp_path / "net.raypipe.yaml").write_text(
        "color: BGR\nmean: [0.5, 0.5, 0.5]\nstd: [0.25, 0.25, 0.25]\noutput_range: [-1, 1]\n"
        "output: image\nresize: letterbox\ninput_size: [224, 224]\npad_value: 114\n"
    )
    assert load_sidecar(str(model)) == EXPECTED
    (tmp_path / "net.raypipe.yaml").rename(tmp_path / "net.raypipe.yml")
    assert load_sidecar(str(model)) == EXPECTED


def test_tiling_sidecar(tmp_path: Path) -> None:
    model = model_file(tmp_path, builtin="blur")
    (tmp_path / "net.raypipe.json").write_text('{"tile": 64, "tile_overlap": 2}')
    assert load_sidecar(str(model)) == ModelSpec(tile=64, tile_overlap=2)


def test_no_sidecar_and_builtins(tmp_path: Path) -> None:
    assert load_sidecar(str(model_file(tmp_path))) is None
    assert load_sidecar("builtin:identity") is None


def test_sidecar_paths_strip_the_last_suffix() -> None:
    assert sidecar_paths("s3://b/m/net.v2.onnx") == [
        "s3://b/m/net.v2.raypipe.json",
        "s3://b/m/net.v2.raypipe.yaml",
        "s3://b/m/net.v2.raypipe.yml",
    ]


def test_memory_filesystem() -> None:
    root = f"memory://raypipe-sidecar-{uuid.uuid4().hex}"
    with fsspec.open(f"{root}/net.onnx", "wb") as f:
        f.write(builtin_bytes("invert"))
    with fsspec.open(f"{root}/net.raypipe.json", "w") as f:
        f.write('{"output": "image", "color": "BGR"}')
    data, digest, spec = resolve_model_and_spec(f"{root}/net.onnx")
    assert data == builtin_bytes("invert")
    assert digest == hashlib.sha256(data).hexdigest()
    assert spec == ModelSpec(output="image", color="BGR")


@pytest.fixture()
def s3_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A bucket on moto's S3 server on 127.0.0.1, reached through the environment."""
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    import fsspec.config

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")  # fake: moto accepts anything
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": endpoint})
    fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
    bucket = f"models-{uuid.uuid4().hex[:8]}"  # moto's buckets outlive its server
    fs.mkdir(bucket)
    yield f"s3://{bucket}"
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def test_s3_sidecar(s3_env: str) -> None:
    with fsspec.open(f"{s3_env}/net.onnx", "wb") as f:
        f.write(builtin_bytes("identity"))
    assert resolve_model_and_spec(f"{s3_env}/net.onnx")[2] == ModelSpec()
    written = write_sidecar(f"{s3_env}/net.onnx", EXPECTED)
    assert written == f"{s3_env}/net.raypipe.json"
    assert resolve_model_and_spec(f"{s3_env}/net.onnx")[2] == EXPECTED


def _save_with_external_weights(path: str, tmp: Path, builtin: str = "sharpen") -> None:
    """``builtin``'s graph saved as exporters of large models save it (``onnx.save`` with
    every initializer in one weights file beside the graph: ONNX external data), then
    copied with its weights file to ``path`` (any fsspec URL)."""
    import onnx

    proto = onnx.load_model_from_string(builtin_bytes(builtin))
    name = path.rsplit("/", 1)[-1]
    local = tmp / "saved"
    local.mkdir(exist_ok=True)
    onnx.save(
        proto, str(local / name), save_as_external_data=True, location=f"{name}.data",
        size_threshold=0,
    )  # fmt: skip
    graph = onnx.load(str(local / name), load_external_data=False)
    assert all(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.graph.initializer)
    for file in (name, f"{name}.data"):
        with fsspec.open(f"{path.rsplit('/', 1)[0]}/{file}", "wb") as f:
            f.write((local / file).read_bytes())


def _same_outputs(a: bytes, b: bytes) -> bool:
    import onnxruntime as ort

    x = np.random.default_rng(0).random((1, 3, 16, 24), dtype=np.float32)
    run = [ort.InferenceSession(m, providers=["CPUExecutionProvider"]) for m in (a, b)]
    ya, yb = (s.run(None, {s.get_inputs()[0].name: x})[0] for s in run)
    return bool(np.array_equal(ya, yb))


def test_a_model_with_its_weights_in_a_file_beside_it(tmp_path: Path) -> None:
    """ONNX's external data (weights in a file beside the graph: how models over 2 GB and
    some exporters save them). raypipe sent the graph's bytes alone to ONNX Runtime, which
    failed with "Cannot parse data from external tensors"."""
    path = str(tmp_path / "net.onnx")
    _save_with_external_weights(path, tmp_path)
    data, digest, _ = resolve_model_and_spec(path)
    assert digest == hashlib.sha256(data).hexdigest()
    assert _same_outputs(data, builtin_bytes("sharpen"))
    model = load_frame_model(path)  # a session made from the bytes, as an actor makes it
    frames = np.random.default_rng(1).integers(0, 256, (2, 16, 24, 3), dtype=np.uint8)
    assert np.array_equal(model.run(frames, 2), load_frame_model("builtin:sharpen").run(frames, 2))
    weights = tmp_path / "net.onnx.data"
    weights.write_bytes(weights.read_bytes()[:20])  # cut off in a copy: ONNX Runtime's
    with pytest.raises(ModelLoadError, match=r"its file 'net.onnx.data' ends before the weig"):
        resolve_model_and_spec(path)  # "raw_data size (0 bytes) does not match" (a sweep)
    weights.unlink()
    with pytest.raises(ModelLoadError, match=r"keeps its weights in 'net.onnx.data' beside it"):
        resolve_model_and_spec(path)


def test_external_weights_on_s3_and_a_location_outside_the_models_folder(
    s3_env: str, tmp_path: Path
) -> None:
    import onnx

    path = f"{s3_env}/nets/net.onnx"
    _save_with_external_weights(path, tmp_path)
    assert _same_outputs(resolve_model_and_spec(path)[0], builtin_bytes("sharpen"))
    proto = onnx.load_model_from_string(fsspec.open(path, "rb").open().read())
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../secrets/net.onnx.data"
    with fsspec.open(path, "wb") as f:
        f.write(proto.SerializeToString())
    with pytest.raises(ModelLoadError, match="not a file in the model's folder"):
        resolve_model_and_spec(path)


# --- errors -------------------------------------------------------------------------------


def test_unknown_key_names_it_and_lists_the_valid_ones(tmp_path: Path) -> None:
    model = model_file(tmp_path)
    sidecar = tmp_path / "net.raypipe.json"
    sidecar.write_text('{"layout": "NCHW", "tiles": 64}')
    match = (
        rf"sidecar '{sidecar}' has unknown key 'tiles'; valid keys are layout, color, scale, "
        r"mean, std, output_range, input_name, output_name, output, resize, input_size, "
        r"pad_value, tile, tile_overlap, pad_multiple, window, window_layout, state, "
        r"warmup_frames, interpolate, constants$"
    )
    with pytest.raises(ConfigError, match=match):
        load_sidecar(str(model))


def test_bad_value_is_modelspec_validation_with_the_sidecar_named(tmp_path: Path) -> None:
    model = model_file(tmp_path)
    sidecar = tmp_path / "net.raypipe.json"
    sidecar.write_text('{"layout": "nchw"}')
    with pytest.raises(ConfigError, match=rf"sidecar '{sidecar}': layout must be 'NCHW' or 'NHWC'"):
        load_sidecar(str(model))
    sidecar.write_text('{"tile": "64"}')
    with pytest.raises(ConfigError, match=r"tile must be an integer >= 1 \(tile side in px\)"):
        load_sidecar(str(model))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[1, 2]", "must hold an object of ModelSpec fields, got list"),
        ("{layout: NCHW}", "is not valid JSON: "),
    ],
)
def test_malformed_json(tmp_path: Path, text: str, match: str) -> None:
    model = model_file(tmp_path)
    (tmp_path / "net.raypipe.json").write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_sidecar(str(model))


def test_two_sidecars_are_ambiguous(tmp_path: Path) -> None:
    model = model_file(tmp_path)
    (tmp_path / "net.raypipe.json").write_text("{}")
    (tmp_path / "net.raypipe.yaml").write_text("{}")
    with pytest.raises(ConfigError, match=r"model '.*net.onnx' has 2 sidecars \[.*\]; keep one"):
        load_sidecar(str(model))


def test_yaml_without_pyyaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = model_file(tmp_path)
    (tmp_path / "net.raypipe.yaml").write_text("layout: NCHW\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # import yaml now raises ImportError
    match = (
        r"sidecar '.*net.raypipe.yaml' is YAML but PyYAML is not installed; pip install "
        r"pyyaml, or write the same keys as JSON to NAME.raypipe.json"
    )
    with pytest.raises(ConfigError, match=match):
        load_sidecar(str(model))


def test_invalid_yaml(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    model = model_file(tmp_path)
    (tmp_path / "net.raypipe.yaml").write_text("layout: [NCHW\n")
    with pytest.raises(ConfigError, match="is not valid YAML: "):
        load_sidecar(str(model))


# --- dicts, writing, resolve_model_and_spec -----------------------------------------------


def test_spec_dict_round_trip(tmp_path: Path) -> None:
    assert spec_to_dict(ModelSpec()) == {}
    assert spec_to_dict(EXPECTED) == {k: v for k, v in SPEC.items() if k != "layout"}
    assert spec_from_dict(spec_to_dict(EXPECTED)) == EXPECTED
    model = model_file(tmp_path)
    path = write_sidecar(str(model), EXPECTED)
    assert path == str(tmp_path / "net.raypipe.json")
    assert load_sidecar(str(model)) == EXPECTED
    assert set(SPEC_FIELDS) >= set(SPEC)


def test_resolve_model_and_spec_for_builtins_and_files(tmp_path: Path) -> None:
    assert resolve_model_and_spec("builtin:sharpen")[2] == ModelSpec()
    assert resolve_model_and_spec("builtin:phash")[2] == ModelSpec(output="tensor")
    assert builtin_spec("embedding") == ModelSpec(output="tensor")
    with pytest.raises(ModelNotFoundError, match="unknown built-in model 'nope'"):
        builtin_spec("nope")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model_and_spec(str(tmp_path / "missing.onnx"))


def test_load_frame_model_uses_the_sidecar(tmp_path: Path) -> None:
    model = model_file(tmp_path)
    (tmp_path / "net.raypipe.json").write_text('{"output": "tensor"}')
    loaded = load_frame_model(str(model), device="cpu", intra_op_threads=1)
    assert loaded.output_kind == "tensor"
    x = np.zeros((2, 4, 5, 3), dtype=np.uint8)
    assert loaded.run_tensors(x, 2)["output"].shape == (2, 3, 4, 5)
    explicit = load_frame_model(str(model), device="cpu", spec=ModelSpec())
    assert explicit.output_kind == "image"
