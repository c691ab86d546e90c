"""Resume cannot mix work made under other settings or from another source.

For every part of the reuse key (raypipe.reuse): an archive run is cut off by SIGKILL of its
driver right after a chunk's segment reached the work directory (once for the module: each
test starts from a copy of what it left, at the same paths), one setting changes, and
the rerun must equal a clean run with the new setting, its report saying the segments were
not reused and why. The control (nothing changed) reuses them. The drivers are separate
processes connected to one local Ray, so a killed driver leaves the cluster to the next run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from dataclasses import replace as dataclasses_replace
from pathlib import Path

import pytest
import ray

import raypipe
from raypipe.archive_report import REPORT_NAME, run_report_path
from raypipe.distributed.planning import work_dir_for
from raypipe.faults import EXIT_ENV
from raypipe.infer.builtin import builtin_bytes
from raypipe.media import make_video_id
from raypipe.testing import ClipSpec, make_clip

CLIP = ClipSpec(n_frames=24, width=96, height=64, gop=4, bframes=0, audio="aac")
OTHER_CLIP = ClipSpec(n_frames=24, width=96, height=64, gop=4, bframes=0, audio="aac", seed=7)
BASE_ARGS = ["--chunk-frames", "4", "--workers", "1"]

# part of the key -> (extra CLI arguments of the rerun, or a change made to the files)
CHANGES: dict[str, list[str]] = {
    "same": [],
    "model": [],  # the model file is rewritten with other bytes
    "spec (sidecar)": [],  # a sidecar appears next to the same model bytes
    "spec (cli)": ["--tile", "32", "--tile-overlap", "0"],
    "precision": ["--precision", "fp16"],
    "device": ["--device", "cpu"],
    "batch": ["--batch-size", "2"],
    "chunking": ["--chunk-frames", "6"],
    # 0.02 MiB holds less than a 96x64 frame in and out (36 KiB as RGB): chunks of 1 frame
    "chunking (MiB)": ["--chunk-mib", "0.02"],
    "encoder": ["--crf", "30"],
    "source": [],  # the source file is replaced by another clip
}
NOTES = {
    "spec (sidecar)": "spec",
    "spec (cli)": "spec",
    "chunking (MiB)": "chunking",
    "chunking": "chunking",
    "encoder": "encoder",
}


@pytest.fixture(scope="module")
def address(ray_local: None) -> str:
    """The tests' shared local Ray (``ray_local``); drivers in subprocesses connect to it."""
    return str(ray.get_runtime_context().gcs_address)


def _raypipe() -> str:
    return shutil.which("raypipe", path=os.path.dirname(sys.executable)) or "raypipe"


def _options(args: list[str]) -> dict[str, object]:
    """CLI arguments (of the kinds used here) as process_archive options."""
    names = {
        "--chunk-frames": ("chunk_frames", int),
        "--chunk-mib": ("chunk_mib", float),
        "--workers": ("workers", int),
        "--tile": ("tile", int),
        "--tile-overlap": ("tile_overlap", int),
        "--precision": ("precision", str),
        "--device": ("device", str),
        "--batch-size": ("batch_size", int),
        "--crf": ("crf", int),
        "--model": ("model", str),
        "--window": ("window", lambda v: tuple(int(x) for x in v.split(","))),
        "--warmup-frames": ("warmup_frames", int),
    }
    return {names[k][0]: names[k][1](v) for k, v in zip(args[::2], args[1::2])}


def cut_off(
    src: Path, out: Path, args: list[str], address: str, kill_at: str, markers: Path
) -> int:
    """Run the archive in a separate driver that SIGKILLs itself once ``kill_at``'s segment
    is in the work directory; return how many segments it left."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env[EXIT_ENV] = f"segment:{kill_at}:{markers}"
    cmd = [_raypipe(), "archive", str(src), str(out), "--address", address, "-q", *args]
    result = subprocess.run(cmd, env=env, capture_output=True, timeout=300, check=False)
    assert result.returncode == -9, result.stderr.decode()[-2000:]
    work = Path(work_dir_for(str(out / "v.mp4")))
    left = len(list(work.glob("run-*/*.rpseg")))
    assert left >= 1 and not (out / "v.mp4").exists()
    assert len(list(work.glob("run-*/run.json"))) == 1  # the run's own folder
    return left


@dataclass(frozen=True)
class CutOff:
    """An archive run cut off once for the module, restorable before every test: the
    source, the model and the output folder with the work directory the killed driver
    left (its segments and run.json), all at the same paths, the source's mtime kept (it is
    part of the source's identity, :func:`raypipe.reuse.source_identity`)."""

    base: Path
    left: int  # segments the killed driver left

    @property
    def src(self) -> Path:
        return self.base / "src"

    @property
    def model(self) -> Path:
        return self.base / "m.onnx"

    @property
    def out(self) -> Path:
        return self.base / "out"

    def restore(self) -> None:
        for name in ("src", "out", "m.onnx", "m.raypipe.json"):
            path = self.base / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        shutil.copytree(self.base / "pristine" / "src", self.src)  # copy2: mtimes kept
        shutil.copytree(self.base / "pristine" / "out", self.out)
        shutil.copy2(self.base / "pristine" / "m.onnx", self.model)


@pytest.fixture(scope="module")
def cut_off_blur(address: str, tmp_path_factory: pytest.TempPathFactory) -> CutOff:
    """One cut-off run for every part of the key: the cut-off run is the same for each
    (the change comes after it), so it runs once and each test starts from a copy."""
    base = tmp_path_factory.mktemp("resume")
    markers = base / "markers"
    markers.mkdir()
    (base / "src").mkdir()
    source = make_clip(base / "src" / "v.mp4", CLIP)
    (base / "m.onnx").write_bytes(builtin_bytes("blur"))
    args = [*BASE_ARGS, "--model", str(base / "m.onnx")]
    kill_at = f"{make_video_id(str(source))}-000001"
    left = cut_off(base / "src", base / "out", args, address, kill_at, markers)
    pristine = base / "pristine"
    pristine.mkdir()
    for name in ("src", "out"):
        shutil.copytree(base / name, pristine / name)
    shutil.copy2(base / "m.onnx", pristine / "m.onnx")
    return CutOff(base=base, left=left)


@pytest.mark.slow
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_cut_off_run_is_resumed_only_with_the_same_key(
    cut_off_blur: CutOff, tmp_path: Path, change: str
) -> None:
    cut = cut_off_blur
    cut.restore()
    src, model, out = cut.src, cut.model, cut.out
    source = src / "v.mp4"
    args = [*BASE_ARGS, "--model", str(model)]

    new_args = args + CHANGES[change]
    if change == "model":
        model.write_bytes(builtin_bytes("sharpen"))
    elif change == "spec (sidecar)":
        (model.parent / "m.raypipe.json").write_text('{"output_range": [0.0, 2.0]}')
    elif change == "source":
        make_clip(tmp_path / "other.mp4", OTHER_CLIP)
        shutil.copy(tmp_path / "other.mp4", source)
    rerun = raypipe.process_archive(str(src), str(out), quiet=True, **_options(new_args))
    (row,) = rerun.rows
    assert row["status"] == "done", row
    if change == "same":
        assert row["reused_chunks"] == cut.left and row["note"] == ""
    else:
        assert row["reused_chunks"] == 0, row
        why = "the source changed" if change == "source" else "the settings changed"
        part = NOTES.get(change, change)
        note = f"segments not reused: {why}" + ("" if change == "source" else f" ({part})")
        assert row["note"] == note
    if change == "chunking (MiB)":
        assert row["chunks"] == CLIP.n_frames  # the cap reached the plan: a frame a chunk

    clean = tmp_path / "clean"
    raypipe.process_archive(str(src), str(clean), quiet=True, **_options(new_args))
    assert (out / "v.mp4").read_bytes() == (clean / "v.mp4").read_bytes()
    expected = sorted(p.name for p in clean.iterdir())
    if row["reused_chunks"] == row["chunks"]:
        # The cut-off run had written every segment before its driver saw chunk 1's (a busy
        # machine): the rerun ran no chunk, so it draws no run report (the figure is of the
        # chunks a run processed, archive._write_stats_and_figure), and the cut-off run died
        # before drawing one.
        expected.remove(Path(run_report_path(str(clean / REPORT_NAME))).name)
    assert sorted(p.name for p in out.iterdir()) == expected


# Temporal models (issue 13): (model, sidecar of the cut-off run, extra CLI arguments of the
# rerun, sidecar of the rerun). "m" is a model file with interp2x's bytes, whose sidecar says
# whether it is a [0, 1] window model (its output replaces frame t) or interpolates (two
# frames in, the one between them out: the output has twice the frames).
TEMPORAL_CHANGES: dict[str, tuple[str, str, list[str], str]] = {
    "same": ("builtin:denoise3", "", [], ""),
    "window": ("builtin:denoise3", "", ["--window", "2,2"], ""),
    "warm-up": ("builtin:ema", "", ["--warmup-frames", "4"], ""),
    "interpolation": ("m", '{"window": [0, 1]}', [], '{"interpolate": 2}'),
}


@pytest.mark.slow
@pytest.mark.parametrize("change", sorted(TEMPORAL_CHANGES))
def test_a_cut_off_temporal_run_is_resumed_only_with_the_same_temporal_settings(
    address: str, tmp_path: Path, change: str
) -> None:
    """Segments of a temporal model (made from a chunk and its context) are reused only
    with the same window, warm-up and interpolation; then the output is a clean run's, and
    a third run finds it finished (an interpolated output's doubled frame count included)."""
    src, markers = tmp_path / "src", tmp_path / "markers"
    src.mkdir()
    markers.mkdir()
    source = make_clip(src / "v.mp4", CLIP)
    model, sidecar, extra, new_sidecar = TEMPORAL_CHANGES[change]
    if model == "m":
        model = str(tmp_path / "m.onnx")
        (tmp_path / "m.onnx").write_bytes(builtin_bytes("interp2x"))
        (tmp_path / "m.raypipe.json").write_text(sidecar)
    args = [*BASE_ARGS, "--model", model]
    out = tmp_path / "out"
    left = cut_off(src, out, args, address, f"{make_video_id(str(source))}-000001", markers)

    if new_sidecar:
        (tmp_path / "m.raypipe.json").write_text(new_sidecar)
    new_args = args + extra
    rerun = raypipe.process_archive(str(src), str(out), quiet=True, **_options(new_args))
    (row,) = rerun.rows
    assert row["status"] == "done", row
    if change == "same":
        assert row["reused_chunks"] == left and row["note"] == ""
    else:
        assert row["reused_chunks"] == 0, row
        assert row["note"] == "segments not reused: the settings changed (spec)"

    clean = tmp_path / "clean"
    raypipe.process_archive(str(src), str(clean), quiet=True, **_options(new_args))
    assert (out / "v.mp4").read_bytes() == (clean / "v.mp4").read_bytes()
    again = raypipe.process_archive(str(src), str(out), quiet=True, **_options(new_args))
    assert again.rows[0]["status"] == "skipped", again.rows[0]


def test_a_finished_output_is_redone_when_its_source_changes(address: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    source = make_clip(src / "v.mp4", CLIP)
    out = tmp_path / "out"
    options = _options(BASE_ARGS)
    first = raypipe.process_archive(str(src), str(out), quiet=True, **options)
    assert first.rows[0]["status"] == "done"
    again = raypipe.process_archive(str(src), str(out), quiet=True, **options)
    assert again.rows[0]["status"] == "skipped"
    make_clip(tmp_path / "other.mp4", OTHER_CLIP)  # same size and frame count, other pictures
    shutil.copy(tmp_path / "other.mp4", source)
    third = raypipe.process_archive(str(src), str(out), quiet=True, **options)
    assert third.rows[0]["status"] == "done"
    assert third.rows[0]["note"] == "redone: the source changed"
    clean = tmp_path / "clean"
    raypipe.process_archive(str(src), str(clean), quiet=True, **options)
    assert (out / "v.mp4").read_bytes() == (clean / "v.mp4").read_bytes()
    changed = raypipe.process_archive(str(src), str(out), quiet=True, crf=30, **options)
    assert changed.rows[0]["note"] == "redone: the settings changed (encoder)"  # named (a sweep)


def test_an_output_made_from_an_earlier_output_records_only_its_own_run(
    address: str, tmp_path: Path
) -> None:
    """Outputs keep their source's container tags, but never a provenance record: an output
    processed again (here into another container, where the record has another tag) records
    the run that made it, and only that."""
    import av

    from raypipe.reuse import Provenance

    said = (("title", "Take 2"), ("comment", "shot on a Tuesday"))
    source = make_clip(tmp_path / "v.mp4", dataclasses_replace(CLIP, tags=said))
    chain = [source, tmp_path / "first.mp4", tmp_path / "second.mkv", tmp_path / "third.mp4"]
    options = _options(BASE_ARGS)
    records = []
    for src, out in zip(chain, chain[1:]):
        raypipe.process_video(str(src), str(out), quiet=True, **options)
        with av.open(str(out)) as written:
            tags = dict(written.metadata)
        assert tags["title"] == "Take 2", tags
        found = {k: Provenance.parse(v) for k, v in tags.items() if Provenance.parse(v)}
        assert len(found) == 1, tags  # MP4 keeps it in the comment, Matroska in RAYPIPE
        # the source's comment too: MP4's record was written over it (a sweep)
        comment = next(v for k, v in tags.items() if k.lower() == "comment")
        assert comment.split("\n")[0] == "shot on a Tuesday", tags
        assert comment.count("\n") == (1 if out.suffix == ".mp4" else 0), tags
        records.append(*found.values())
    assert len({r.source for r in records}) == 3  # each from its own source
