"""Index probing: MP4/MOV frame timing from the ``moov`` box equals the demux pass, and a
probe over HTTP reads a small share of the file."""

from __future__ import annotations

import dataclasses
import importlib
import shutil
import subprocess
from pathlib import Path

import pytest

from raypipe.config import ChunkConfig
from raypipe.media import plan_chunks, probe
from raypipe.media.mp4_index import IndexScan, find_moov, read_track_tables, scan_index
from raypipe.testing import CLIP_KINDS, make_named_clip
from raypipe.testing.http_server import serve_directory
from raypipe.testing.traits import make_trait_clip, trait_names

# the module, not the function that raypipe.media re-exports under the same name
probe_module = importlib.import_module("raypipe.media.probe")

FFMPEG = shutil.which("ffmpeg")


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=300)


@pytest.fixture(scope="module")
def edited(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files as tools write them: a stream-copy cut (an edit list dropping leading samples),
    negative composition offsets (ctts version 1), both, and a fragmented MP4."""
    if FFMPEG is None:
        pytest.skip("needs the ffmpeg command")
    d = tmp_path_factory.mktemp("edited")
    src = d / "src.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=160x96:rate=30", "-t", "3", "-c:v", "libx264",
            "-bf", "3", "-g", "30", "-pix_fmt", "yuv420p", str(src))  # fmt: skip
    out = {
        "cut.mp4": ["-ss", "1.5", "-i", str(src), "-c", "copy"],
        "negative_cts.mp4": ["-i", str(src), "-c", "copy", "-movflags", "+negative_cts_offsets"],
        "cut_negative.mov": ["-ss", "1.5", "-i", str(src), "-c", "copy", "-movflags",
                             "+negative_cts_offsets"],
        "fragmented.mp4": ["-i", str(src), "-c", "copy", "-movflags", "+frag_keyframe+empty_moov"],
    }  # fmt: skip
    for name, args in out.items():
        _ffmpeg(*args, str(d / name))
    return {name: d / name for name in out}


def _mp4_clips(directory: Path) -> list[Path]:
    made = [make_named_clip(kind, directory) for kind in CLIP_KINDS]
    made += [make_trait_clip(name, directory) for name in trait_names()]
    return [p for p in made if p.suffix in (".mp4", ".mov")]


def test_index_probe_equals_the_demux_pass(tmp_path: Path, edited: dict[str, Path]) -> None:
    clips = _mp4_clips(tmp_path) + [p for n, p in edited.items() if n != "fragmented.mp4"]
    assert len(clips) >= 12
    for clip in clips:
        by_index, by_demux = probe(str(clip)), probe(str(clip), use_index=False)
        assert by_index == by_demux, clip.name
        with clip.open("rb") as f:
            import av

            with av.open(str(clip)) as container:
                assert scan_index(container.streams.video[0], f) is not None, clip.name


def test_cut_files_drop_what_the_edit_list_drops(edited: dict[str, Path]) -> None:
    """The cut keeps the GOP before the cut point in the file, flagged as discarded: the
    probe's frames start at the cut, as FFmpeg shows them."""
    for name in ("cut.mp4", "cut_negative.mov"):
        info = probe(str(edited[name]))
        assert info.n_frames == 45, name  # 1.5 s of 30 fps
        assert info == probe(str(edited[name]), use_index=False)


def test_fragmented_and_other_containers_use_the_demux_pass(
    edited: dict[str, Path], tmp_path: Path
) -> None:
    with edited["fragmented.mp4"].open("rb") as f:
        assert find_moov(f) is not None  # an empty moov...
        f.seek(0)
        moov = find_moov(f)
        assert moov is not None and read_track_tables(moov, 1) is None  # ...holds no samples
    info = probe(str(edited["fragmented.mp4"]))
    assert info.n_frames == 90 and info == probe(str(edited["fragmented.mp4"]), use_index=False)


def test_an_index_that_disagrees_with_the_packets_is_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = make_named_clip("bframes_aac", tmp_path)
    truth = probe(str(clip), use_index=False)
    real = probe_module.scan_index

    def shifted(video: object, f: object) -> IndexScan | None:
        scan = real(video, f)
        assert scan is not None
        return dataclasses.replace(scan, pts=[p + 1 for p in scan.pts])

    monkeypatch.setattr(probe_module, "scan_index", shifted)
    assert probe(str(clip)) == truth  # the first packets disagree: every packet is read


@pytest.mark.slow
def test_a_probe_over_http_reads_a_small_share_of_a_long_mp4(tmp_path: Path) -> None:
    """A 60 s 720p MP4 with audio served with Range requests: the index probe reads under
    10% of the file (the demux pass reads all of it) and gives the same frames and plan."""
    if FFMPEG is None:
        pytest.skip("needs the ffmpeg command")
    clip = tmp_path / "long.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-f", "lavfi", "-i",
            "sine=frequency=440:sample_rate=48000", "-t", "60", "-c:v", "libx264", "-preset",
            "ultrafast", "-g", "60", "-bf", "2", "-pix_fmt", "yuv420p", "-c:a", "aac",
            "-shortest", str(clip))  # fmt: skip
    size = clip.stat().st_size
    with serve_directory(tmp_path) as (url, served):
        by_index = probe(f"{url}/long.mp4")
        index_bytes = served.sent("/long.mp4")
        served.reset()
        by_demux = probe(f"{url}/long.mp4", use_index=False)
        demux_bytes = served.sent("/long.mp4")
    shares = f"index {index_bytes / size:.1%}, demux {demux_bytes / size:.1%}"
    print(f"probe of {size / 1e6:.1f} MB: {shares}")
    assert by_index.n_frames == 1800 and by_index == by_demux
    config = ChunkConfig(chunk_frames=64)
    assert plan_chunks(by_index, config) == plan_chunks(by_demux, config)
    assert index_bytes < 0.10 * size
    assert demux_bytes >= size  # the demux pass reads every byte (the figure compared)
