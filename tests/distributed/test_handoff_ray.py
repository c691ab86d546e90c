"""The YUV hand-off through the whole pipeline on a real local Ray with two logical GPUs
and ONNX Runtime's CPU provider: outputs exact to the frame as with RGB (the actors, whose
sessions have no GPU provider, convert on their host; the conversion in the graph, a GPU
actor's, is tested on its own below and in tests/infer/test_ingraph.py); each chunk's
stats say how its frames travelled; sources the hand-off does not take go as RGB with the
reason said once; models that cannot take YUV are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import assert_exact, lossless_options

import raypipe
from raypipe.errors import ConfigError


@pytest.fixture(scope="module", autouse=True)
def _ray(ray_local: None) -> None:
    return None


def chunks_of(stats: Path) -> list[dict[str, object]]:
    return json.loads(stats.read_text())["chunks"]


def test_a_video_handed_off_as_yuv_is_exact(clips: dict[str, Path], tmp_path: Path) -> None:
    source, out, stats = clips["open_gop"], tmp_path / "out.mp4", tmp_path / "stats.json"
    options = {**lossless_options(), "quiet": True, "chunk_frames": 10}
    raypipe.process_video(
        str(source), str(out), model="builtin:upscale2x", handoff="yuv", stats_path=str(stats),
        **options,
    )  # fmt: skip
    assert_exact(source, out, "builtin:upscale2x")
    records = chunks_of(stats)
    assert len(records) >= 4
    # a CPU session: the actor converts on its host with swscale (the graph's look-ups
    # are slow on a CPU; the conversion in the graph is tests/infer/test_ingraph.py's)
    assert {(r["handoff"], r["handoff_note"], r["pixels"]) for r in records} == {
        ("yuv", "", "host")
    }
    # auto: YUV to actors that hold GPUs (this Ray's two are logical); an actor whose
    # session has no GPU provider converts the frames on its host, as decode would have
    raypipe.process_video(
        str(source), str(out), model="builtin:invert", stats_path=str(stats), overwrite=True,
        **options,
    )  # fmt: skip
    assert_exact(source, out, "builtin:invert")
    assert {(r["handoff"], r["pixels"]) for r in chunks_of(stats)} == {("yuv", "host")}
    # auto without GPUs for the actors, and rgb: RGB
    for how in ({"device": "cpu"}, {"handoff": "rgb"}):
        raypipe.process_video(
            str(source), str(out), model="builtin:invert", stats_path=str(stats),
            overwrite=True, **how, **options,
        )  # fmt: skip
        assert_exact(source, out, "builtin:invert")
        assert {(r["handoff"], r["pixels"]) for r in chunks_of(stats)} == {("rgb", "host")}


def test_an_archive_hands_off_what_it_can(
    clips: dict[str, Path],
    traits: dict[str, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    src, out, stats = tmp_path / "src", tmp_path / "out", tmp_path / "stats.json"
    src.mkdir()
    shutil.copy(clips["bframes_aac"], src / "a.mp4")  # 160x96 yuv420p: YUV
    shutil.copy(traits["rotated_languages"], src / "b.mp4")  # rotated 90 degrees: RGB
    report = raypipe.process_archive(
        str(src), str(out), model="builtin:sharpen", handoff="yuv", chunk_frames=12,
        stats_path=str(stats), quiet=True, **lossless_options(),
    )  # fmt: skip
    assert report.count("done") == 2
    for name in ("a.mp4", "b.mp4"):
        assert_exact(src / name, out / name, "builtin:sharpen")
    ways = {
        (r["chunk_id"].split("-")[0], r["handoff"], r["handoff_note"]) for r in chunks_of(stats)
    }
    assert {(way, note) for _, way, note in ways} == {
        ("yuv", ""),
        ("rgb", "the source is rotated 90 degrees"),
    }
    warned = [r.getMessage() for r in caplog.records if "--handoff yuv" in r.getMessage()]
    assert warned == [
        "--handoff yuv: frames go to the model as RGB: the source is rotated 90 degrees"
    ]


@pytest.mark.parametrize(
    ("options", "why"),
    [
        ({"model": "builtin:denoise3"}, "a temporal model gets RGB frames"),
        ({"model": "builtin:sharpen", "tile": 32}, "its frames are tiled on RGB"),
        ({"model": "builtin:phash"}, "an analysis model's inputs are prepared on the host"),
    ],
)
def test_handoff_yuv_refuses_models_that_take_rgb(
    clips: dict[str, Path], tmp_path: Path, options: dict[str, object], why: str
) -> None:
    out = tmp_path / ("tables" if options["model"] == "builtin:phash" else "out.mp4")
    with pytest.raises(ConfigError, match=f"--handoff yuv: {why}"):
        raypipe.process_video(
            str(clips["bframes_aac"]), str(out), handoff="yuv", quiet=True, **options
        )


def test_an_actor_runner_keeps_a_few_yuv_models_and_warms_the_one_asked_for() -> None:
    """No Ray: the runner an inference actor holds, with the models for YUV frames made on
    first use (or at warm-up), a few kept, converting on the host when not in the graph."""
    import numpy as np

    from raypipe.distributed import actors
    from raypipe.infer.builtin import builtin_bytes
    from raypipe.infer.models import FrameModel
    from raypipe.media.yuv import YuvInput

    data = builtin_bytes("invert")
    made: list[YuvInput] = []

    def make(yuv: YuvInput) -> FrameModel:
        made.append(yuv)
        return FrameModel(data, device="cpu", yuv=yuv)

    host, graph = FrameModel(data, device="cpu"), FrameModel(data, device="cpu", pixels="graph")
    runner = actors._ModelRunner(graph, 2, tensor=False, yuv_model=make)
    assert runner.yuv_in_graph  # the model runs its wrapped graph: YUV is converted there
    first = YuvInput(16, 32, "bt709", "tv")
    runner.warmup(16, 32, 4, yuv=first)
    assert made == [first]
    packed = np.random.default_rng(1).integers(0, 256, (3, first.packed_size), dtype=np.uint8)
    in_graph = runner.run(packed, yuv=first)
    assert made == [first]  # the warmed model runs the chunks
    for k in range(actors.YUV_MODELS + 1):
        runner.yuv_model(YuvInput(16, 32 + 2 * (k + 1), "bt709", "tv"))
    assert first not in runner._yuv_models and len(runner._yuv_models) == actors.YUV_MODELS
    on_host = actors._ModelRunner(host, 2, tensor=False, yuv_model=make)
    assert not on_host.yuv_in_graph  # a CPU session's model runs on the host
    np.testing.assert_array_equal(on_host.run(packed, yuv=first), in_graph)
    np.testing.assert_array_equal(in_graph, 255 - first.to_rgb(packed))


def test_an_actor_converts_on_the_host_when_its_yuv_model_cannot_be_made() -> None:
    """A model for YUV frames that fails to build (a provider refusing the conversion's
    nodes, say) leaves the chunk to the host conversion, the same frames, and a note."""
    import numpy as np

    from raypipe.distributed import actors
    from raypipe.errors import ModelLoadError
    from raypipe.infer.builtin import builtin_bytes
    from raypipe.infer.models import FrameModel
    from raypipe.media.yuv import YuvInput

    def refuse(yuv: YuvInput) -> FrameModel:
        raise ModelLoadError("TensorRT: no engine for the conversion")

    graph = FrameModel(builtin_bytes("invert"), device="cpu", pixels="graph")
    runner = actors._ModelRunner(graph, 2, tensor=False, yuv_model=refuse)
    source = YuvInput(16, 32, "bt709", "tv")
    packed = np.random.default_rng(2).integers(0, 256, (3, source.packed_size), dtype=np.uint8)
    np.testing.assert_array_equal(runner.run(packed, yuv=source), 255 - source.to_rgb(packed))
    assert not runner.yuv_in_graph
    assert runner.yuv_note == (
        "YUV converted on the host: the model for YUV frames: "
        "TensorRT: no engine for the conversion"
    )
