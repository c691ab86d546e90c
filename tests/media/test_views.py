"""Stereo 3D and 360° videos: what the output keeps of the source's views, and what it
says it leaves out.

A side-by-side 3D film (Matroska's StereoMode, MP4's ``st3d``) and a 360° video (MP4's
``sv3d``) came out with neither, without a word: players showed both eyes' views as one
flat picture, and the sphere as a flat, distorted one (a sweep). Matroska and WebM
outputs now keep the stereo layout; every output that does not keep a view says so.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest
from pipeline_checks import run_in_process

from raypipe.config import EncodeConfig
from raypipe.media.describe import picture_lines
from raypipe.media.encode import fidelity_notes
from raypipe.media.probe import probe


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def _video_facts(path: Path) -> str:
    """ffprobe's video stream block: its tags and side data."""
    return subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_streams", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def _with_sv3d(source: Path, target: Path) -> None:
    """``source`` (an MP4 of H.264, its ``moov`` after its ``mdat``, as FFmpeg writes it)
    with a Spherical Video V2 box (``sv3d``: equirectangular) in its ``avc1`` entry."""
    data = bytearray(source.read_bytes())

    def box(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", 8 + len(payload)) + kind + payload

    def full(kind: bytes, payload: bytes) -> bytes:
        return box(kind, b"\0\0\0\0" + payload)

    projection = full(b"prhd", struct.pack(">iii", 0, 0, 0)) + full(b"equi", bytes(16))
    sv3d = box(b"sv3d", full(b"svhd", b"test\0") + box(b"proj", projection))
    parents: list[int] = []
    offset, end = 0, len(data)
    while offset < end:  # down moov/trak/mdia/minf/stbl to stsd's first entry
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if kind in (b"moov", b"trak", b"mdia", b"minf", b"stbl"):
            parents.append(offset)
            offset, end = offset + 8, offset + size
            continue
        if kind == b"stsd":
            entry = offset + 16
            (entry_size,) = struct.unpack(">I", data[entry : entry + 4])
            parents += [offset, entry]
            data[entry + entry_size : entry + entry_size] = sv3d
            break
        offset += size
    else:
        raise AssertionError("no stsd entry found")
    for at in parents:
        (size,) = struct.unpack(">I", data[at : at + 4])
        data[at : at + 4] = struct.pack(">I", size + len(sv3d))
    target.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("views")
    clip = ["-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25:duration=1", "-c:v", "libx264"]
    _ffmpeg(*clip, "-metadata:s:v", "stereo_mode=top_bottom", str(d / "tagged.mkv"))
    _ffmpeg("-i", str(d / "tagged.mkv"), "-c", "copy", "-strict", "unofficial", str(d / "st3d.mp4"))
    _ffmpeg(*clip, str(d / "flat.mp4"))
    _with_sv3d(d / "flat.mp4", d / "sphere.mp4")
    return {name: d / name for name in ("tagged.mkv", "st3d.mp4", "flat.mp4", "sphere.mp4")}


def test_the_probe_reads_the_views(sources: dict[str, Path]) -> None:
    views = {
        name: (probe(str(path)).picture_format.stereo, probe(str(path)).picture_format.projection)
        for name, path in sources.items()
    }
    assert views == {
        "tagged.mkv": ("top_bottom", ""),  # Matroska's StereoMode tag
        "st3d.mp4": ("top_bottom", ""),  # MP4's st3d box, as the frames' side data
        "flat.mp4": ("", ""),
        "sphere.mp4": ("", "equirectangular"),
    }
    sphere = picture_lines(probe(str(sources["sphere.mp4"])).picture_format)
    assert sphere[-1] == "360° video: equirectangular projection (not kept: outputs are flat)"
    stereo = picture_lines(probe(str(sources["st3d.mp4"])).picture_format)
    assert stereo[-1] == "stereo 3D: top_bottom (kept in .mkv outputs)"


@pytest.mark.parametrize("source", ["tagged.mkv", "st3d.mp4"])
def test_a_matroska_output_keeps_the_stereo_layout(
    sources: dict[str, Path], tmp_path: Path, source: str
) -> None:
    out = tmp_path / "out.mkv"
    run_in_process(sources[source], out, "builtin:identity", 10, EncodeConfig())
    facts = _video_facts(out)
    assert "TAG:stereo_mode=top_bottom" in facts
    assert "side_data_type=Stereo 3D" in facts and "type=top and bottom" in facts
    assert probe(str(out)).picture_format.stereo == "top_bottom"
    # the control: the flat source's output says nothing of views
    flat = tmp_path / "flat.mkv"
    run_in_process(sources["flat.mp4"], flat, "builtin:identity", 10, EncodeConfig())
    assert "stereo" not in _video_facts(flat).lower()


def test_what_an_output_leaves_out_of_the_views_is_said(sources: dict[str, Path]) -> None:
    stereo = probe(str(sources["st3d.mp4"])).picture_format
    sphere = probe(str(sources["sphere.mp4"])).picture_format
    flat = probe(str(sources["flat.mp4"])).picture_format
    encode = EncodeConfig()
    assert fidelity_notes(encode, stereo, "out.mkv") == []
    assert fidelity_notes(encode, stereo, "out.mp4") == [
        "the source's stereo 3D layout (top_bottom) is left out of a .mp4 output: players "
        "show both views as one flat picture; .mkv keeps it"
    ]
    for output in ("out.mp4", "out.mkv"):
        assert fidelity_notes(encode, sphere, output) == [
            "the source's 360° projection (equirectangular) is left out: players show the "
            "output as a flat picture (Google's spatial-media injector marks it again)"
        ]
        assert fidelity_notes(encode, flat, output) == []
