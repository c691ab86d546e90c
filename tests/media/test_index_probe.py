"""Index probing: MP4/MOV frame timing from the ``moov`` box and Matroska/WebM's from the
cues and the frame grid equal the demux pass, and a probe over HTTP reads a small share of
the file."""

from __future__ import annotations

import dataclasses
import importlib
import shutil
import subprocess
from pathlib import Path

import pytest

from raypipe.config import ChunkConfig
from raypipe.errors import DecodeError
from raypipe.media import decode_chunk, plan_chunks, probe
from raypipe.media.mkv_index import read_layout
from raypipe.media.mkv_scan import scan_cues
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


@pytest.fixture(scope="module")
def long_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60 s 720p MP4 with audio, and the same stream-copied into Matroska."""
    if FFMPEG is None:
        pytest.skip("needs the ffmpeg command")
    d = tmp_path_factory.mktemp("long")
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30", "-f", "lavfi", "-i",
            "sine=frequency=440:sample_rate=48000", "-t", "60", "-c:v", "libx264", "-preset",
            "ultrafast", "-g", "60", "-bf", "2", "-pix_fmt", "yuv420p", "-c:a", "aac",
            "-shortest", str(d / "long.mp4"))  # fmt: skip
    _ffmpeg("-i", str(d / "long.mp4"), "-c", "copy", str(d / "long.mkv"))
    return d


def _probe_over_http(directory: Path, name: str) -> None:
    size = (directory / name).stat().st_size
    with serve_directory(directory) as (url, served):
        by_index = probe(f"{url}/{name}")
        index_bytes = served.sent(f"/{name}")
        served.reset()
        by_demux = probe(f"{url}/{name}", use_index=False)
        demux_bytes = served.sent(f"/{name}")
    shares = f"index {index_bytes / size:.1%}, demux {demux_bytes / size:.1%}"
    print(f"probe of {name} ({size / 1e6:.1f} MB): {shares}")
    assert by_index.n_frames == 1800 and by_index == by_demux
    config = ChunkConfig(chunk_frames=64)
    assert plan_chunks(by_index, config) == plan_chunks(by_demux, config)
    assert index_bytes < 0.10 * size
    assert demux_bytes >= size  # the demux pass reads every byte (the figure compared)


@pytest.mark.slow
def test_a_probe_over_http_reads_a_small_share_of_a_long_mp4(long_clips: Path) -> None:
    """A 60 s 720p MP4 with audio served with Range requests: the index probe reads under
    10% of the file (the demux pass reads all of it) and gives the same frames and plan."""
    _probe_over_http(long_clips, "long.mp4")


@pytest.mark.slow
def test_a_probe_over_http_reads_a_small_share_of_a_long_mkv(long_clips: Path) -> None:
    """The same with Matroska: the head, the cues, the first packets and the last GOP."""
    _probe_over_http(long_clips, "long.mkv")


def _matroska_clips(directory: Path) -> list[Path]:
    """Every clip kind and trait clip stream-copied into Matroska (subtitles as SRT: MP4's
    mov_text has no Matroska mapping; a timecode's data stream left out, Matroska has none
    either), the trait clips written as Matroska, and x264, x265
    (MKV) and VP9 (WebM) at 24000/1001, 25, 30000/1001 and 60 fps."""
    made = [make_named_clip(kind, directory) for kind in CLIP_KINDS]
    made += [make_trait_clip(name, directory) for name in trait_names()]
    clips = [p for p in made if p.suffix in (".mkv", ".webm")]
    for src in (p for p in made if p.suffix not in (".mkv", ".webm")):
        clips.append(directory / f"{src.stem}_copy.mkv")
        _ffmpeg("-i", str(src), "-map", "0", "-map", "-0:d?", "-c", "copy", "-c:s", "srt",
                str(clips[-1]))  # fmt: skip
    for rate in ("24000/1001", "25", "30000/1001", "60"):
        for codec, suffix, extra in (
            ("libx264", ".mkv", ["-bf", "2"]),
            ("libx265", ".mkv", ["-x265-params", "log-level=none"]),
            ("libvpx-vp9", ".webm", ["-deadline", "realtime", "-cpu-used", "8"]),
        ):
            clips.append(directory / f"{codec}_{rate.replace('/', '_')}{suffix}")
            source = f"testsrc2=size=96x64:rate={rate}"
            _ffmpeg("-f", "lavfi", "-i", source, "-t", "1.5", "-c:v", codec, "-g", "12",
                    "-pix_fmt", "yuv420p", *extra, str(clips[-1]))  # fmt: skip
    return clips


def _cue_scan(clip: Path) -> bool:
    """Whether the cues' scan of ``clip`` is used (not a fallback to the demux pass)."""
    import av

    with clip.open("rb") as f, av.open(str(clip)) as container:
        layout = read_layout(f, 0)
        if layout is None:
            return False
        return scan_cues(container, container.streams.video[0], f, layout) is not None


def test_matroska_index_probe_equals_the_demux_pass(tmp_path: Path) -> None:
    """Every clip kind, trait and common rate in MKV/WebM: the cues' probe equals the demux
    pass (frames, keyframes, last duration, rate) and plans the same chunks; every
    constant-rate clip is probed from its cues, the variable-rate one falls back."""
    if FFMPEG is None:
        pytest.skip("needs the ffmpeg command")
    clips = _matroska_clips(tmp_path)
    assert len(clips) == len(CLIP_KINDS) + len(trait_names()) + 12
    config = ChunkConfig(chunk_frames=8)
    fell_back = []
    for clip in clips:
        by_index = probe(str(clip), grid_local=True)
        by_demux = probe(str(clip), use_index=False)
        assert by_index == by_demux, clip.name
        assert plan_chunks(by_index, config) == plan_chunks(by_demux, config), clip.name
        if not _cue_scan(clip):
            fell_back.append(clip.name)
    assert fell_back == ["vfr_copy.mkv"]


def test_odd_matroska_files_fall_back_or_fail_typed(tmp_path: Path) -> None:
    """Cues at the front, a file written to a pipe (no cues, unknown sizes), a truncated
    file, another muxer's name: each is probed from its cues only where that is exact."""
    if FFMPEG is None:
        pytest.skip("needs the ffmpeg command")
    src = tmp_path / "src.mkv"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=25", "-t", "3", "-c:v", "libx264",
            "-g", "10", "-bf", "2", "-pix_fmt", "yuv420p", str(src))  # fmt: skip
    front = tmp_path / "front.mkv"
    _ffmpeg("-i", str(src), "-c", "copy", "-cues_to_front", "1", str(front))
    piped = tmp_path / "piped.mkv"
    with piped.open("wb") as out:
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-c", "copy", "-f", "matroska",
                        "-"], stdout=out, check=True, timeout=60)  # fmt: skip
    data = src.read_bytes()
    truncated = tmp_path / "truncated.mkv"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    other = tmp_path / "other_muxer.mkv"
    assert data.count(b"Lavf") >= 1
    other.write_bytes(data.replace(b"Lavf", b"Xavf"))
    assert _cue_scan(front) and _cue_scan(src)
    for clip in (piped, truncated, other):
        assert not _cue_scan(clip), clip.name
    for clip in (src, front, piped, truncated, other):
        assert probe(str(clip), grid_local=True) == probe(str(clip), use_index=False), clip.name


def test_frames_missing_between_keyframes_on_the_grid_fail_typed_at_decode(
    tmp_path: Path,
) -> None:
    """Frames dropped in the middle of a stream whose keyframes stay on the frame grid (a
    recorder dropping frames): the probe cannot see it without reading the middle, so the
    plan has frames the file lacks, and the decode task stops with a typed error. Which is
    why local files (where reading every packet is cheap) are not probed from the grid."""
    if FFMPEG is None:
        pytest.skip("needs the ffmpeg command")
    clip = tmp_path / "gap.mkv"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=96x64:rate=30", "-t", "4", "-vf",
            "select='not(between(n,40,45))'", "-fps_mode", "vfr", "-c:v", "libx264", "-g", "30",
            "-sc_threshold", "0", "-pix_fmt", "yuv420p", str(clip))  # fmt: skip
    by_index, by_demux = probe(str(clip), grid_local=True), probe(str(clip), use_index=False)
    assert (by_index.n_frames, by_demux.n_frames) == (120, 114)
    assert probe(str(clip)) == by_demux  # a local file: every packet read
    assert by_index.keyframe_pts == by_demux.keyframe_pts
    chunks = plan_chunks(by_index, ChunkConfig(chunk_frames=30)).chunks
    gap = next(c for c in chunks if c.start_pts <= by_index.pts[40] < c.end_pts)
    with pytest.raises(DecodeError, match="the plan expects"):
        decode_chunk(by_index, gap)
    for chunk in chunks:
        if chunk is not gap:
            expected = [p for p in by_index.pts if chunk.start_pts <= p < chunk.end_pts]
            assert decode_chunk(by_index, chunk).pts.tolist() == expected
