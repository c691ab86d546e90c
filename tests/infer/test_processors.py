"""User processors in-process: loading by target, checks, typed errors, identity, sessions."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import raypipe
from raypipe.errors import ConfigError, ProcessorError
from raypipe.examples import models
from raypipe.examples.processors import Redact, RegionChain, RegionScores
from raypipe.infer.factory import SessionSettings
from raypipe.infer.processor_refs import processor_identity, processor_ref
from raypipe.infer.processors import ProcessorContext, ProcessorRunner, apply_processor
from raypipe.testing import frame_pattern

EXAMPLES = Path(raypipe.__file__).parent / "examples" / "processors.py"


def frames_of(n: int = 6, width: int = 160, height: int = 96) -> np.ndarray:
    return np.stack([frame_pattern(i, width, height) for i in range(n)])


def write(tmp_path: Path, body: str, name: str = "proc.py") -> Path:
    path = tmp_path / name
    path.write_text("import numpy as np\nimport raypipe\n\n" + textwrap.dedent(body))
    return path


def test_region_chain_changes_exactly_the_detected_regions() -> None:
    frames = frames_of()
    out = apply_processor(RegionChain, frames)
    assert isinstance(out, np.ndarray) and out.shape == frames.shape
    boxes = models.detect_regions(
        _detector_scores(frames), RegionChain.threshold, models.CELL, (96, 160)
    )
    assert all(boxes), "every test frame has bright index blocks"
    outside = np.ones(frames.shape[:3], dtype=bool)
    for i, frame_boxes in enumerate(boxes):
        for x0, y0, x1, y1 in frame_boxes:
            outside[i, y0:y1, x0:x1] = False
            # the region model inverts: a bright region comes back dark
            assert out[i, y0:y1, x0:x1].mean() < 255 - frames[i, y0:y1, x0:x1].mean() + 20
    assert np.array_equal(out[outside], frames[outside])


def _detector_scores(frames: np.ndarray) -> np.ndarray:
    from raypipe.infer.session import create_session

    session = create_session(models.region_detector(), device="cpu")
    return np.asarray(session.run(["score"], {"input": models.to_nchw(frames)})[0])


def test_redact_blurs_and_scores_make_a_table() -> None:
    frames = frames_of()
    out = apply_processor(Redact, frames)
    assert isinstance(out, np.ndarray) and not np.array_equal(out, frames)
    table = apply_processor(RegionScores, frames)
    assert isinstance(table, dict) and table["regions"].shape == (6,)
    assert table["score_map"].shape == (6, 96 // models.CELL, 160 // models.CELL)


def test_deep_frames_stay_deep(tmp_path: Path) -> None:
    """Sources deeper than 8 bits decode to uint16: processors get and return uint16."""
    frames = frames_of().astype(np.uint16) * np.uint16(257)
    for cls in (RegionChain, Redact):
        out = apply_processor(cls, frames)
        assert isinstance(out, np.ndarray) and out.dtype == np.uint16 and out.shape == frames.shape
    eight = apply_processor(RegionChain, frames_of())
    deep = apply_processor(RegionChain, frames)
    assert isinstance(deep, np.ndarray) and isinstance(eight, np.ndarray)
    assert np.abs((deep // 257).astype(int) - eight).max() <= 1  # same picture, more bits
    path = write(
        tmp_path,
        "class P(raypipe.Processor):\n    def __call__(self, f):\n"
        "        return (f // 257).astype(np.uint8)\n",
    )
    with pytest.raises(ProcessorError, match="for 6 uint16 frames; expected a uint16 array"):
        apply_processor(f"{path}:P", frames)


def test_batches_are_split_by_batch_size_and_outputs_equal() -> None:
    frames = frames_of(n=7)
    one = apply_processor(RegionChain, frames, settings=SessionSettings(device="cpu", batch_size=1))
    three = apply_processor(
        RegionChain, frames, settings=SessionSettings(device="cpu", batch_size=3)
    )
    assert np.array_equal(one, three)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "target",
    [f"{EXAMPLES}:Redact", "raypipe.examples.processors:Redact"],
    ids=["file", "module"],
)
def test_targets_by_file_and_by_module_give_the_same_result(target: str) -> None:
    frames = frames_of()
    assert np.array_equal(apply_processor(target, frames), apply_processor(Redact, frames))  # type: ignore[arg-type]
    ref = processor_ref(target)
    assert ref.output == "image"
    assert bool(ref.source) == target.startswith("/")  # a file travels as its text


@pytest.mark.parametrize(
    ("target", "error", "match"),
    [
        ("nonsense", ConfigError, "must be 'path/to/file.py:Class' or 'package.module:Class'"),
        ("missing/p.py:X", ConfigError, "processor file 'missing/p.py' does not exist"),
        ("raypipe.nope:X", ConfigError, "cannot import 'raypipe.nope'"),
        ("raypipe.examples.processors:Nope", ConfigError, "no 'Nope' in raypipe.examples"),
        # a file's name, not the module raypipe loads it as (raypipe_processor_<hash>)
        (f"{EXAMPLES}:Nope", ConfigError, r"no 'Nope' in processors\.py; classes"),
        ("raypipe.config:RunConfig", ConfigError, "not a subclass of raypipe.Processor"),
    ],
)
def test_bad_targets_fail_on_the_driver(target: str, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        processor_ref(target)


def test_a_file_that_fails_to_load_and_a_bad_output_declaration(tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("def oops(:\n")
    with pytest.raises(ProcessorError, match=r"raised SyntaxError when loaded: .*; fix the file"):
        processor_ref(f"{broken}:X")
    path = write(tmp_path, "class P(raypipe.Processor):\n    output = 'frames'\n")
    with pytest.raises(ConfigError, match="declares output = 'frames'; expected 'image'"):
        processor_ref(f"{path}:P")


def test_exceptions_in_setup_and_call_carry_the_processors_message(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        class InSetup(raypipe.Processor):
            def setup(self, ctx):
                raise ValueError("no weights at /models/x.onnx")

        class InCall(raypipe.Processor):
            def __call__(self, frames):
                raise KeyError("face")
        """,
    )
    with pytest.raises(ProcessorError) as e:
        apply_processor(f"{path}:InSetup", frames_of(2))
    assert str(e.value) == (
        "processor InSetup.setup raised ValueError: no weights at /models/x.onnx; fix the "
        "processor (its traceback: --verbose, or in Python this error's cause)"
    )
    with pytest.raises(ProcessorError, match=r"^processor InCall.__call__ raised KeyError: 'face'"):
        apply_processor(f"{path}:InCall", frames_of(2))


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (
            "return frames[:1]",
            r"returned a uint8 array of shape \(1, 96, 160, 3\) for 2 uint8 frames",
        ),
        ("return frames.astype(np.float32)", "returned a float32 array"),
        ("return {'x': frames}", "returned a dict for 2 frames; set output = 'tensor'"),
        ("return None", "returned a NoneType for 2 uint8 frames"),
    ],
)
def test_image_outputs_are_checked(tmp_path: Path, body: str, match: str) -> None:
    path = write(
        tmp_path, f"class P(raypipe.Processor):\n    def __call__(self, frames):\n        {body}\n"
    )
    with pytest.raises(ProcessorError, match=match):
        apply_processor(f"{path}:P", frames_of(2))


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("return frames", "output = 'tensor' expects a non-empty dict"),
        ("return {'pts': np.zeros(len(frames))}", "an output named 'pts'; names must be"),
        ("return {'x': np.zeros(3)}", r"'x' of shape \(3,\) for 2 frames"),
    ],
)
def test_tensor_outputs_are_checked(tmp_path: Path, body: str, match: str) -> None:
    path = write(
        tmp_path,
        "class P(raypipe.Processor):\n    output = 'tensor'\n"
        f"    def __call__(self, frames):\n        {body}\n",
    )
    with pytest.raises(ProcessorError, match=match):
        apply_processor(f"{path}:P", frames_of(2))


@pytest.mark.parametrize(
    ("body", "match"),
    [  # a sweep: each was numpy's or pyarrow's error, naming no processor nor output
        (
            "return {'boxes': [np.zeros((i + 1, 4)) for i in range(len(frames))]}",
            r"processor P returned 'boxes' as arrays of different shapes \(.*\); a table "
            r"column keeps one shape and type for every frame: return the same shape",
        ),
        (
            "return {'s': np.zeros((len(frames), int(frames.max()) + 1))}",
            r"processor P: output 's' has per-frame shape \[1\] \(float64\) for some "
            r"frames and \[256\] \(float64\) for others",
        ),
        (
            "return {'s': np.zeros(len(frames), int if frames.max() else float)}",
            r"output 's' has per-frame shape \[\] \(float64\) for some frames and \[\] "
            r"\(int64\) for others",
        ),
    ],
)
def test_tensor_outputs_that_change_shape_between_frames_say_what_to_do(
    tmp_path: Path, body: str, match: str
) -> None:
    path = write(
        tmp_path,
        "class P(raypipe.Processor):\n    output = 'tensor'\n"
        f"    def __call__(self, frames):\n        {body}\n",
    )
    frames = frames_of(4)
    frames[:2], frames[2:] = 0, 255
    with pytest.raises(ProcessorError, match=match):
        apply_processor(f"{path}:P", frames, settings=SessionSettings(device="cpu", batch_size=2))


def test_frame_size_must_stay_the_same_within_a_run(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        class Grow(raypipe.Processor):
            calls = 0
            def __call__(self, frames):
                Grow.calls += 1
                return np.repeat(frames, Grow.calls, axis=1)
        """,
    )
    with pytest.raises(ProcessorError, match="a video's frames must keep one size"):
        apply_processor(f"{path}:Grow", frames_of(4), settings=SessionSettings(batch_size=2))
    # one actor runs the chunks of several videos: other input sizes are other videos
    runner = ProcessorRunner(processor_ref(RegionChain), ProcessorContext(SessionSettings()))
    for width, height in ((160, 96), (198, 110), (160, 96)):
        out = runner.run(frames_of(2, width, height))
        assert isinstance(out, np.ndarray) and out.shape == (2, height, width, 3)


def test_identity_follows_the_code_and_the_version(tmp_path: Path) -> None:
    body = "class P(raypipe.Processor):\n    version = '{v}'\n"
    first = write(tmp_path, body.format(v="1"))
    identity = processor_identity(f"{first}:P")
    assert identity.startswith("proc.py:P sha256=") and identity.endswith(" version=1")
    assert processor_identity(f"{tmp_path}/../{tmp_path.name}/proc.py:P") == identity
    assert processor_identity(f"{write(tmp_path, body.format(v='2'))}:P") != identity
    other = write(tmp_path, body.format(v="1") + "# an edit\n", name="other.py")
    assert processor_identity(f"{other}:P").split(" ")[1] != identity.split(" ")[1]
    module = processor_identity(Redact)
    assert module.startswith("raypipe.examples.processors:Redact sha256=")
    assert processor_identity(Redact()) == module == processor_identity(processor_ref(Redact))
    assert raypipe.processor_identity is processor_identity


def test_identity_follows_the_model_files_the_processor_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model overwritten in place (``ctx.session("/models/m.onnx")``) left the identity as
    it was: a resumed archive reused the old model's outputs, and made one output of two
    models' frames from the old model's segments and the new one's (a sweep)."""
    monkeypatch.chdir(tmp_path)
    absolute, relative = tmp_path / "abs.onnx", tmp_path / "rel.onnx"
    absolute.write_bytes(b"sharpen")
    relative.write_bytes(b"blur")
    body = (
        "MODEL = 'rel.onnx'\n"
        "class P(raypipe.Processor):\n"
        "    def setup(self, ctx):\n"
        f"        self.a = ctx.session({str(absolute)!r})\n"
        "        self.b = ctx.session(MODEL)\n"
        "        self.c = ctx.session('not-here.onnx')\n"
    )
    target = f"{write(tmp_path, body)}:P"
    identity = processor_identity(target)
    assert " models=" in identity
    assert processor_identity(target) == identity  # the same files: the same identity
    absolute.write_bytes(b"invert")
    changed = processor_identity(target)
    assert changed != identity
    relative.write_bytes(b"blur, again")
    assert processor_identity(target) not in (identity, changed)
    none = write(tmp_path, "class P(raypipe.Processor):\n    pass\n", name="plain.py")
    assert " models=" not in processor_identity(f"{none}:P")
    # weights kept beside the model (external data): new weights, the same .onnx
    import onnx

    from raypipe.infer.builtin import build_builtin

    model = build_builtin("sharpen")
    onnx.save_model(model, str(tmp_path / "ext.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="ext.onnx.data",
                    size_threshold=0)  # fmt: skip
    body = "class P(raypipe.Processor):\n    def setup(self, ctx):\n"
    body += f"        self.s = ctx.session({str(tmp_path / 'ext.onnx')!r})\n"
    external = f"{write(tmp_path, body, name='ext.py')}:P"
    before = processor_identity(external)
    weights = tmp_path / "ext.onnx.data"
    weights.write_bytes(weights.read_bytes()[::-1])  # other weights, the same size
    assert processor_identity(external) != before


class Scale(raypipe.Processor):
    def __init__(self, k: float, names: tuple[str, ...] = ()) -> None:
        self.k, self.names, self.tags = k, names, set(names)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        return (frames // self.k).astype(np.uint8)


def _made_with(k: int) -> type:
    class Made(raypipe.Processor):  # a class a function makes: k is not in its source
        def __call__(self, frames: np.ndarray) -> np.ndarray:
            return (frames // k).astype(np.uint8)

    return Made


def _cell_class(name: str, body: str, *, readable: bool = True) -> type:
    """A class as a notebook cell defines it: in ``__main__``-like module with no file,
    its code named after a file that is not there, which the kernel keeps in ``linecache``
    (``readable``; else as ``exec`` of a string leaves it: no source anywhere)."""
    import linecache
    import sys
    import types
    import uuid

    source = "import numpy as np\nimport raypipe\n\n" + textwrap.dedent(body)
    filename = f"/tmp/ipykernel_0/{uuid.uuid4().hex}.py" if readable else "<string>"
    if readable:
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(source, filename, "exec"), module.__dict__)
    return module.P  # type: ignore[no-any-return]


def test_identity_follows_what_an_instance_or_a_made_class_holds() -> None:
    """Resume trusted earlier work by the class alone: ``Scale(4)`` after ``Scale(1)``, or
    a class a function made with another value, skipped every video as done with the
    other value's output. An instance's attributes and the values a made class closes over
    are in its identity now, the same in every process (a set's order is not)."""
    import subprocess
    import sys

    one, four = processor_identity(Scale(1)), processor_identity(Scale(4))
    assert one != four and processor_identity(Scale(1)) == one
    assert " state=" in one and " run=" not in one
    assert processor_identity(_made_with(2)) == processor_identity(_made_with(2))
    assert processor_identity(_made_with(2)) != processor_identity(_made_with(4))
    assert processor_ref(Scale(4)).identity == four
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from test_processors import Scale; from raypipe import processor_identity; "
        "print(processor_identity(Scale(2, ('a', 'b', 'c', 'd', 'e'))))"
    )
    here = str(Path(__file__).parent)
    seen = {
        subprocess.run(
            [sys.executable, "-c", script, here],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout  # fmt: skip
        for seed in ("1", "2", "3")
    }
    assert len(seen) == 1 and " state=" in seen.pop()


def test_a_notebook_cells_class_is_known_by_its_methods_source() -> None:
    """Python before 3.13 reads no source for a class of a notebook's ``__main__`` (no
    file): its identity said ``sha256=unknown`` whatever the cell held, and an edited cell
    reused the old cell's outputs. Its methods' source is read (the kernel keeps the
    cell); a class with no readable source and no ``version`` is new at every run (never
    reused, with a warning at the run's start), one with a ``version`` is that version."""
    from raypipe.infer.processor_refs import identity_is_unique

    body = "class P(raypipe.Processor):\n    def __call__(self, frames):\n        return {}\n"
    first = processor_identity(_cell_class("cell_a", body.format("frames")))
    assert "sha256=unknown" not in first and not identity_is_unique(first)
    assert processor_identity(_cell_class("cell_a", body.format("frames"))) == first
    assert processor_identity(_cell_class("cell_a", body.format("255 - frames"))) != first
    lost = _cell_class("cell_b", body.format("frames"), readable=False)
    assert identity_is_unique(processor_identity(lost))
    assert processor_identity(lost) != processor_identity(lost)
    versioned = _cell_class("cell_c", "class P(raypipe.Processor):\n    version = '3'\n" + (
        "    def __call__(self, frames):\n        return frames\n"
    ), readable=False)  # fmt: skip
    assert processor_identity(versioned) == processor_identity(versioned)
    assert "sha256=unknown version=3" in processor_identity(versioned)


def _divide_by(k: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda frames: (frames // k).astype(np.uint8)


class _Divide(raypipe.Processor):
    def __init__(self, k: int) -> None:
        self.fn = _divide_by(k)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        return self.fn(frames)


def test_identity_follows_what_a_function_closes_over_and_a_cells_globals() -> None:
    """Found by a sweep: a lambda attribute was known by its source alone, so
    ``Divide(8)`` after ``Divide(2)`` skipped its videos as done with ``//2``'s outputs;
    and a notebook method that reads a global (``LEVEL = 8`` in a later cell) kept the
    identity it had with ``LEVEL = 2``. A module file's globals are its file's digest's."""
    two = processor_identity(_Divide(2))
    assert two == processor_identity(_Divide(2)) and " run=" not in two
    assert processor_identity(_Divide(8)) != two
    body = (
        "LEVEL = 2\n\n\ndef darker(frames):\n    return frames // LEVEL\n\n\n"
        "class P(raypipe.Processor):\n    def __call__(self, frames):\n"
        "        return darker(frames) + OFFSET\n\n\nOFFSET = 0\n"
    )
    cell = _cell_class("cell_globals", body)
    module = sys.modules[cell.__module__]
    first = processor_identity(cell)
    assert processor_identity(cell) == first and " run=" not in first
    module.LEVEL = 8  # read through the helper function the method calls
    assert processor_identity(cell) != first
    module.LEVEL, module.OFFSET = 2, 1  # read by the method itself
    assert processor_identity(cell) != first
    module.OFFSET = 0
    assert processor_identity(cell) == first


def test_an_instance_that_cannot_travel_is_refused_before_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An instance holding a lock (or a session made in ``__init__``) failed 20 s into the
    run, as Ray sent the first chunk, with a TypeError and a dump of raypipe's internals."""
    import logging
    import threading

    from raypipe.config import build_run_config
    from raypipe.distributed.setup import load_model

    held = Scale(2)
    held.lock = threading.Lock()  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"cannot be sent to the actors \(TypeError: .*lock"):
        load_model(build_run_config(processor=held))
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        load_model(build_run_config(processor=Scale(2)))
    assert caplog.text == ""
    lost = _cell_class("cell_d", "class P(raypipe.Processor):\n    pass\n", readable=False)
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        load_model(build_run_config(processor=lost))
    assert "cannot be compared from run to run" in caplog.text


def test_ctx_sessions_are_cached_and_recorded() -> None:
    ctx = ProcessorContext(SessionSettings(device="cpu"), gpu_ids=[])
    a = ctx.session(models.region_detector())
    assert ctx.session(models.region_detector()) is a
    b = ctx.session("builtin:invert")
    assert b is not a and ctx.device == "cpu" and ctx.providers == ["CPUExecutionProvider"]
    assert [r["model"] for r in ctx.records] == [
        f"<{len(models.region_detector())} bytes>",
        "builtin:invert",
    ]
    assert all(r["granted"] == ["CPUExecutionProvider"] for r in ctx.records)


def test_a_gpu_actor_context_says_cuda_0() -> None:
    settings = SessionSettings(device="auto", on_gpu=True)
    ctx = ProcessorContext(settings, gpu_ids=["3"])
    assert (ctx.device, ctx.gpu_ids) == ("cuda:0", ["3"])
    runner = ProcessorRunner(processor_ref(RegionScores), ctx)
    assert runner.output == "tensor"


@pytest.mark.gpu
def test_ctx_session_on_a_gpu_is_granted_a_gpu_provider_on_device_0() -> None:
    """Not run here (no GPU): the same factory as --model, asked for the GPU it holds."""
    ctx = ProcessorContext(SessionSettings(device="gpu", on_gpu=True), gpu_ids=["0"])
    ctx.session("builtin:invert", input_size=(96, 160))
    (record,) = ctx.records
    assert record["granted"][0] in ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    assert record["device_id"] == 0 and ctx.device == "cuda:0"


def test_the_reuse_key_follows_the_processors_identity(tmp_path: Path) -> None:
    """Resume (raypipe.reuse) sees a processor through its identity: a new version (or an
    edit of its file) makes earlier segments and outputs stale."""
    from raypipe.config import build_run_config
    from raypipe.distributed.cluster import ActorPlan
    from raypipe.distributed.setup import load_model, run_key

    actors = ActorPlan(workers=1, num_gpus=0.0, num_cpus=1.0, intra_op_threads=1)

    def key(version: str) -> dict[str, str]:
        path = write(tmp_path, f"class P(raypipe.Processor):\n    version = '{version}'\n")
        cfg = build_run_config(processor=f"{path}:P")
        return run_key(cfg, load_model(cfg), actors).as_dict()

    first = key("1")
    assert first["processor"].startswith("proc.py:P sha256=") and first == key("1")
    assert (
        run_key(build_run_config(), load_model(build_run_config()), actors).as_dict()["processor"]
        == ""
    )
    changed = key("2")
    assert [n for n in first if first[n] != changed[n]] == ["processor"]
    with pytest.raises(ConfigError, match="give a model or a processor, not both"):
        build_run_config(model="builtin:invert", processor="raypipe.examples.processors:Redact")


class _Gain(raypipe.Processor):
    def __init__(self, gain: float) -> None:
        self.gain = gain

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        return frames


class _Fragile(raypipe.Processor):
    def __init__(self, gain: float = 1.0) -> None:
        raise RuntimeError("no licence")

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        return frames


def test_a_class_that_needs_arguments_is_refused_on_the_driver() -> None:
    """Each actor builds a class with no arguments: one whose __init__ needs some failed in
    the first chunk's actor, after Ray's start, said to be its ``setup``."""
    with pytest.raises(ConfigError, match=r"_Gain\(\) needs gain, and each actor builds it with"):
        processor_ref(_Gain)
    assert processor_ref(_Gain(2.0)).obj is not None  # an instance carries its arguments
    runner_error = "processor _Fragile.__init__ raised RuntimeError: no licence"
    with pytest.raises(ProcessorError, match=runner_error):
        ProcessorRunner(processor_ref(_Fragile), ProcessorContext(SessionSettings()))


def test_a_relative_model_path_in_setup_is_the_drivers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's processors load ``ctx.session("models/det.onnx")``. An actor of a
    workstation's ``ray start --head`` runs in that command's directory, not the
    driver's: the model was not found there (a sweep). The driver's working directory
    travels with the processor and is where a relative path is looked for next; found in
    neither, the error says where it looked."""
    from raypipe.errors import ModelNotFoundError
    from raypipe.infer.models import resolve_model

    driver, actor = tmp_path / "notebook", tmp_path / "raylet"
    (driver / "models").mkdir(parents=True)
    actor.mkdir()
    (driver / "models" / "m.onnx").write_bytes(resolve_model("builtin:invert")[0])
    target = driver / "chain.py"
    target.write_text(
        "import raypipe\n"
        "class Chain(raypipe.Processor):\n"
        "    def setup(self, ctx):\n"
        "        self.model = ctx.session('models/m.onnx')\n"
        "    def __call__(self, frames):\n"
        "        return frames\n"
    )
    monkeypatch.chdir(driver)
    ref = processor_ref(f"{target}:Chain")
    monkeypatch.chdir(actor)
    runner = ProcessorRunner(ref, ProcessorContext(SessionSettings(device="cpu")))
    assert runner.ctx.records[0]["model"] == "models/m.onnx"
    gone = processor_ref(f"{target}:Chain")  # made here: no such file from either directory
    said = rf"model file 'models/m.onnx' does not exist \(a relative path: looked in {actor} "
    with pytest.raises(ModelNotFoundError, match=said + rf"or the driver's {actor} "):
        ProcessorRunner(gone, ProcessorContext(SessionSettings(device="cpu")))
