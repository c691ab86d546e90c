"""Bit depth, chroma and colour conversion: the 10-bit identity round trip, the matrix rule
for untagged sources, the output pixel format that follows the source (issue 11)."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from pipeline_checks import LOSSLESS_10BIT, run_in_process

from raypipe.config import ChunkConfig, EncodeConfig
from raypipe.distributed.stages import chunk_row, decode_stage
from raypipe.media import plan_chunks, probe
from raypipe.media.colour import ColourTags, HdrMetadata, default_matrix
from raypipe.media.describe import picture_lines
from raypipe.media.encode import fidelity_notes, playback_note
from raypipe.media.picture import PictureFormat, normalise_rotation
from raypipe.media.pixfmt import choose_pix_fmt, layout_of
from raypipe.testing import ClipSpec, ffprobe_video, make_clip, yuv_planes

_HLG = ("bt2020", "arib-std-b67", "bt2020nc", "tv")
FFV1 = EncodeConfig(codec="ffv1", crf=None, preset=None)


def _deep_source(directory: Path, pix_fmt: str) -> Path:
    """A losslessly coded 10-bit clip (every sample inside the RGB gamut)."""
    spec = ClipSpec(codec="ffv1", pix_fmt=pix_fmt, colour=_HLG, bframes=0, gop=1, n_frames=6,
                    width=96, height=64)  # fmt: skip
    return make_clip(directory / f"{pix_fmt}.mkv", spec)


@pytest.mark.parametrize("pix_fmt", ["yuv420p10le", "yuv444p10le"])
@pytest.mark.parametrize(("encode", "suffix"), [(FFV1, ".mkv"), (LOSSLESS_10BIT, ".mp4")])
def test_10bit_identity_round_trip_within_one_code_value(
    tmp_path: Path, pix_fmt: str, encode: EncodeConfig, suffix: str
) -> None:
    source = _deep_source(tmp_path, pix_fmt)
    out = tmp_path / f"out{suffix}"
    run_in_process(source, out, "builtin:identity", 4, encode)
    assert ffprobe_video(out).pix_fmt == pix_fmt  # the default format follows the source
    src, got = yuv_planes(source), yuv_planes(out)
    assert len(got) == len(src) == 6
    worst = max(
        int(np.abs(a.astype(np.int32) - b).max())
        for fa, fb in zip(got, src)
        for a, b in zip(fa, fb)
    )
    assert worst <= 1, f"a sample is {worst} code values off"
    # the test can fail: squeezed through 8 bits, samples would be up to 2 code values off
    squeezed = max(
        int(np.abs(((p.astype(np.int32) + 2) // 4) * 4 - p).max()) for f in src for p in f
    )
    assert squeezed >= 2


def test_deep_frames_travel_at_16_bits(tmp_path: Path) -> None:
    source = _deep_source(tmp_path, "yuv420p10le")
    info = probe(str(source))
    assert (info.picture_format.bit_depth, info.picture_format.chroma) == (10, "4:2:0")
    chunk = plan_chunks(info, ChunkConfig(chunk_frames=3)).chunks[0]
    frames = decode_stage(chunk_row(info, chunk))["frames"]
    assert frames.dtype == np.uint16 and frames.shape == (3, 64, 96, 3)
    assert len(np.unique(frames % 256)) > 200, "the low byte carries detail (not 8-bit)"


def _decode_first_frame_rgb(path: Path) -> np.ndarray:
    info = probe(str(path))
    chunk = plan_chunks(info, ChunkConfig(chunk_frames=1)).chunks[0]
    return np.asarray(decode_stage(chunk_row(info, chunk))["frames"][0])


@pytest.mark.parametrize(("width", "height", "matrix"), [(96, 64, "bt601"), (1280, 64, "bt709")])
def test_untagged_sources_convert_with_the_matrix_of_their_size(
    tmp_path: Path, width: int, height: int, matrix: str
) -> None:
    """One untagged YUV colour, decoded: RGB as the BT.601 or BT.709 formula gives it."""
    path = tmp_path / f"flat{width}.mkv"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        frame = av.VideoFrame(width, height, "yuv444p")
        for plane, value in zip(frame.planes, (120, 160, 90)):
            plane.update(bytes([value]) * plane.buffer_size)
        frame.pts = 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    kr, kb = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}[matrix]
    y, pb, pr = (120 - 16) / 219, (160 - 128) / 224, (90 - 128) / 224
    r, b = y + 2 * (1 - kr) * pr, y + 2 * (1 - kb) * pb
    g = (y - kr * r - kb * b) / (1 - kr - kb)
    expected = np.clip(np.round(np.array([r, g, b]) * 255), 0, 255)
    rgb = _decode_first_frame_rgb(path)
    assert np.abs(rgb[0, 0].astype(int) - expected).max() <= 1, (rgb[0, 0], expected)
    assert default_matrix(width, height) == ("bt709" if matrix == "bt709" else "smpte170m")


def test_the_size_rule() -> None:
    assert default_matrix(1280, 720) == default_matrix(720, 1280) == "bt709"
    assert default_matrix(720, 576) == default_matrix(640, 480) == "smpte170m"
    assert default_matrix(1024, 577) == "bt709"  # taller than 576 lines


@pytest.mark.parametrize(
    ("source", "codec", "chosen", "kept"),
    [
        ("yuv420p", "libx264", "yuv420p", True),
        ("yuv420p10le", "libx264", "yuv420p10le", True),
        ("yuv444p", "libx264", "yuv444p", True),
        ("yuvj420p", "libx264", "yuv420p", True),  # full range is a tag, not a format
        ("yuv420p10le", "libx265", "yuv420p10le", True),
        ("yuv444p10le", "ffv1", "yuv444p10le", True),
        ("yuv420p", "libx264rgb", "rgb24", True),  # RGB keeps all of 8-bit 4:2:0
        ("yuv420p10le", "libx264rgb", "rgb24", False),
        ("yuv420p10le", "libvpx-vp9", "yuv420p", False),  # this build's VP9 is 8-bit only
        ("yuv444p10le", "libsvtav1", "yuv420p10le", False),  # depth kept before chroma
        ("yuv420p10le", "h264_nvenc", "yuv420p", False),  # H.264 10-bit NVENC: Blackwell only
        ("yuv420p10le", "hevc_nvenc", "p010le", True),
        ("gbrp", "libx265", "gbrp", True),
        ("gray", "ffv1", "yuv420p", True),  # gray counts as 4:2:0: a model may colour it
        ("gray16le", "libx264", "yuv420p10le", False),
    ],
)
def test_output_pix_fmt_follows_the_source(
    source: str, codec: str, chosen: str, kept: bool
) -> None:
    pix_fmt, note = choose_pix_fmt(source, codec)
    assert pix_fmt == chosen
    assert (note == "") == kept
    if not kept:
        assert note.startswith(f"encoder {codec} cannot write the source's ")
        # the source as it is: a gray one was "16-bit 4:2:0 (gray16le)" (a sweep)
        assert f"source's {layout_of(source).describe()} ({source})" in note
        assert f"writing {chosen} (" in note


def test_notes_say_what_is_lost_once_per_kind(caplog: pytest.LogCaptureFixture) -> None:
    hdr = HdrMetadata(max_cll=1000, max_fall=400)
    picture = PictureFormat(coded_width=96, coded_height=64, pix_fmt="yuv420p10le", hdr=hdr)
    assert fidelity_notes(EncodeConfig(codec="libx265"), picture) == []
    notes = fidelity_notes(EncodeConfig(codec="libvpx-vp9"), picture)
    assert len(notes) == 2 and "10-bit 4:2:0" in notes[0] and "HDR10 metadata" in notes[1]
    # the hint names encoders that keep the source's and fit the output: a .webm's once
    # named libx265 and ffv1, which a .webm cannot hold (a sweep); AV1 keeps 10-bit there
    (webm, _) = fidelity_notes(EncodeConfig(codec="libvpx-vp9"), picture, "out.webm")
    assert webm.endswith("instead (--codec libsvtav1 keeps it in a .webm file)"), webm
    deep = PictureFormat(coded_width=96, coded_height=64, pix_fmt="yuv444p12le")
    (none,) = fidelity_notes(EncodeConfig(codec="libvpx-vp9"), deep, "out.webm")
    assert none.endswith("(no encoder here keeps it in a .webm file: --codec libx265 does, "
                         "in a .mkv file)"), none  # fmt: skip
    # an explicit pix_fmt wins, and says nothing
    assert fidelity_notes(EncodeConfig(codec="libx264", pix_fmt="yuv420p"), picture) == []
    # an alpha channel is said lost whatever the encoder keeps of the rest (ffv1 keeps 12-bit
    # 4:4:4, and writing yuva would still carry no alpha: models see RGB)
    alpha = PictureFormat(coded_width=96, coded_height=64, pix_fmt="yuva444p12le")
    for config in (EncodeConfig(codec="ffv1"), EncodeConfig(codec="ffv1", pix_fmt="yuva444p")):
        (note,) = fidelity_notes(config, alpha)
        assert "alpha channel (transparency, yuva444p12le) is left out" in note
    assert "with alpha (not kept" in picture_lines(alpha)[0]
    assert "alpha" not in picture_lines(picture)[0]

    from raypipe.config import RunConfig
    from raypipe.distributed.chunk_log import ChunkLog
    from raypipe.distributed.planning import VideoFacts
    from raypipe.distributed.runner import Runner

    # once per note and run, however many videos it concerns (videos arrive as planned)
    runner = Runner(RunConfig(encode=EncodeConfig(codec="libvpx-vp9")), chunk_log=ChunkLog())
    with caplog.at_level(logging.WARNING, logger="raypipe"):
        for i in range(3):
            facts = VideoFacts(
                video_id=f"v{i}", uri=f"v{i}", output=f"o{i}", status="planned",
                picture=picture.to_json(),
            )  # fmt: skip
            runner._note_fidelity(facts)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == notes


def test_an_h264_that_most_players_cannot_play_is_said_once_when_raypipe_chose_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def note(source: str, **config: object) -> str:
        picture = PictureFormat(coded_width=96, coded_height=64, pix_fmt=source)
        return playback_note(EncodeConfig(**{"codec": "libx264", **config}), picture)

    ten = note("yuv420p10le")  # a phone's HDR video: H.264 High 10 by default
    assert "H.264 High 10 (yuv420p10le" in ten and "--codec libx265" in ten
    assert "browsers, QuickTime, phones and most TVs do not" in ten
    four = note("yuv444p")
    assert "High 4:4:4 Predictive (yuv444p" in four and "--pix-fmt yuv420p" in four
    assert "libx265" not in four  # HEVC's 4:4:4 plays no better
    assert "High 4:2:2 (yuv422p10le, the source's depth and chroma)" in note("yuv422p10le")
    # a DV camcorder's 4:1:1: 4:2:2 holds its chroma, and the line does not call it the source's
    assert "High 4:2:2 (yuv422p, for the source's 8-bit 4:1:1)" in note("yuv411p")
    # what every player plays, another encoder, a format asked for: nothing to say
    assert note("yuv420p") == note("yuvj420p") == note("gray") == ""
    assert note("yuv420p10le", codec="libx265") == note("gbrp", codec="libx264rgb") == ""
    assert note("yuv420p10le", pix_fmt="yuv420p") == ""
    # an odd size: yuv420p, which it advised, is refused there by x264
    odd = playback_note(
        EncodeConfig(codec="libx264"),
        PictureFormat(coded_width=99, coded_height=75, pix_fmt="yuv444p"),
    )
    assert "writes the 8-bit H.264" not in odd and "4:2:0 H.264 every" not in odd
    assert odd.endswith(
        "at 99x75 no 4:2:0 H.264 can be written (it needs even sizes); --codec libvpx-vp9 "
        "--pix-fmt yuv420p writes 4:2:0 VP9 at any size, which browsers and Android play"
    )

    from raypipe.config import RunConfig
    from raypipe.distributed.chunk_log import ChunkLog
    from raypipe.distributed.planning import VideoFacts
    from raypipe.distributed.runner import Runner

    picture = PictureFormat(coded_width=96, coded_height=64, pix_fmt="yuv420p10le")
    for encode, said in ((EncodeConfig(), [ten]), (EncodeConfig(codec="libx264"), [])):
        caplog.clear()
        runner = Runner(RunConfig(encode=encode), chunk_log=ChunkLog())
        with caplog.at_level(logging.WARNING, logger="raypipe"):
            for i in range(3):  # once a run, not once a video; only where raypipe chose
                runner._note_fidelity(
                    VideoFacts(
                        video_id=f"v{i}",
                        uri=f"v{i}",
                        output=f"o{i}.mp4",
                        status="planned",
                        picture=picture.to_json(),
                    )
                )
        assert [r.getMessage() for r in caplog.records] == said


def test_picture_format_is_plain_data() -> None:
    picture = PictureFormat(
        coded_width=1920,
        coded_height=1080,
        pix_fmt="yuv420p10le",
        rotation_degrees=-90,
        mirrored=True,
        sar=(4, 3),
        colour=ColourTags(primaries="bt2020", transfer="arib-std-b67", matrix="bt2020nc"),
        hdr=HdrMetadata(red=(34000, 16000), green=(13250, 34500), blue=(7500, 3000),
                        white=(15635, 16450), max_luminance=10000000, min_luminance=50),
    )  # fmt: skip
    assert PictureFormat.from_json(picture.to_json()) == picture  # chunk rows carry it
    assert picture.describe_orientation() == (
        "mirrored left to right, then rotated 270° counter-clockwise"
    )
    assert picture.rotation_degrees == 270 and picture.upright_size == (1080, 1920)
    assert picture.range == "tv" and picture.matrix == "bt2020nc"
    assert picture.upright_sar == 0.75  # a quarter turn swaps the sample's sides
    assert picture.output_tags("rgb24").matrix == "gbr"
    assert [normalise_rotation(d) for d in (90, -90, 180, -180, 270, 360)] == [
        90,
        270,
        180,
        180,
        270,
        0,
    ]
    assert layout_of("p010le").describe() == "10-bit 4:2:0"
    # a palette (PNG, GIF) indexes 8-bit RGB colours: it was "8-bit gray", its output's
    # chroma halved, and an odd size refused (a sweep)
    assert layout_of("pal8") == layout_of("rgb24")
    from raypipe.media.pixfmt import choose_pix_fmt

    assert choose_pix_fmt("pal8", "libx264") == choose_pix_fmt("rgb24", "libx264")
    with pytest.raises(Exception, match="colour matrix 'bt2021' is not one FFmpeg names"):
        ColourTags(matrix="bt2021")


@pytest.mark.parametrize("mirrored", [False, True])
@pytest.mark.parametrize("degrees", [0, 90, 180, 270])
def test_every_display_matrix_turns_frames_as_ffmpeg_shows_them(
    tmp_path: Path, degrees: int, mirrored: bool
) -> None:
    """The eight right-angle display matrices, mirrored ones too (PyAV's rotation alone
    reads a left-to-right mirror as a half turn): probe's orientation turns the coded frame
    into exactly what ``ffmpeg``'s autorotate decodes, and the output has no matrix."""
    import subprocess

    from raypipe.testing import decode_upright
    from raypipe.testing.clip_traits import display_matrix

    coded = np.zeros((16, 24, 3), np.uint8)  # three coloured corners: no turn maps onto another
    coded[:4, :4], coded[:4, -4:], coded[-4:, :4] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    path = tmp_path / "turned.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264rgb", rate=25, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = 24, 16, "rgb24"
        stream.set_display_matrix(display_matrix(degrees, mirrored))
        frame = av.VideoFrame.from_ndarray(coded, format="rgb24")
        frame.pts = 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    picture = probe(str(path)).picture_format
    assert (picture.rotation_degrees, picture.mirrored) == (degrees, mirrored)
    width, height = picture.upright_size
    shown = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        check=True,
    ).stdout
    ffmpeg_shows = np.frombuffer(shown, np.uint8).reshape(height, width, 3)
    np.testing.assert_array_equal(picture.upright(coded), ffmpeg_shows)
    np.testing.assert_array_equal(decode_upright(path)[0][0], ffmpeg_shows)  # the tests' reader
    judged = ffprobe_video(path)
    assert judged.mirrored == mirrored and judged.displayed_size == (width, height)
    out_path = tmp_path / "out.mp4"
    assert run_in_process(path, out_path, "builtin:identity", 1) == 1
    upright = ffprobe_video(out_path)
    assert (upright.rotation, upright.mirrored) == (0, False)
    np.testing.assert_array_equal(decode_upright(out_path)[0][0], ffmpeg_shows)


def test_x265_two_frame_segments_get_usable_dts() -> None:
    """libx265 leaves its B-frame delay unset for two frames (dts are garbage)."""
    from fractions import Fraction

    from raypipe.media.encode import encode_segment

    frames = np.zeros((2, 64, 96, 3), dtype=np.uint16)
    pts = np.array([160, 200])
    segment = encode_segment(
        frames, pts, time_base=Fraction(1, 1000), rate=Fraction(25), config=LOSSLESS_10BIT
    )
    assert segment.pts.tolist() == [160, 200] and segment.dts.tolist() == [160, 200]
    assert segment.durations is not None and segment.durations.tolist() == [40, 40]


def test_garbage_encoder_dts_are_replaced_before_the_muxer_sees_them() -> None:
    """The muxer refuses a dts after its pts (what CI met from libx265 once in a while):
    segments are muxed with the checked dts, and the nut payload reads back."""
    import io
    from fractions import Fraction

    import av

    from raypipe.media.encode import _checked_dts, mux_with_dts

    def encoded() -> tuple[av.container.OutputContainer, io.BytesIO, list[av.Packet]]:
        buf = io.BytesIO()
        out = av.open(buf, mode="w", format="nut")
        stream = out.add_stream("libx265", rate=25, options={"x265-params": "log-level=error"})
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        packets: list[av.Packet] = []
        for pts in (160, 200):
            rgb = av.VideoFrame.from_ndarray(np.zeros((64, 96, 3), np.uint8), format="rgb24")
            frame = rgb.reformat(format="yuv420p")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            packets += stream.encode(frame)
        packets += stream.encode(None)
        for packet in packets:
            packet.duration = 40
        packets[0].dts = 10**12  # garbage, after its pts
        return out, buf, packets

    out, _, packets = encoded()
    with pytest.raises(av.error.ArgumentError):
        out.mux(packets)  # the trap is real
    out, buf, packets = encoded()
    dts = _checked_dts([p.pts for p in packets], [p.dts for p in packets])
    assert dts.tolist() == [160, 200]
    mux_with_dts(out, packets, dts)
    out.close()
    with av.open(io.BytesIO(buf.getvalue()), format="nut") as back:
        got = [p.pts * p.time_base for p in back.demux(video=0) if p.size]
        assert got == [Fraction(160, 1000), Fraction(200, 1000)]


def test_probe_command_shows_rotation_colour_depth_and_chroma(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from raypipe.cli import main
    from raypipe.testing import make_trait_clip

    path = make_trait_clip("phone_hlg", tmp_path)
    assert main(["probe", str(path)]) == 0
    text = capsys.readouterr().out
    assert "shown 64x96 (coded 96x64, rotation 270° counter-clockwise), 10-bit 4:2:0" in text
    assert "primaries bt2020, transfer arib-std-b67, matrix bt2020nc, range tv" in text
    assert "range tv (converted as bt2020nc, tv)" in text
    # an RGB picture is read as it is: only a YUV output converts, and it says so
    still = tmp_path / "still.png"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-f", "lavfi", "-i", "testsrc2=s=96x64",
         "-frames:v", "1", str(still)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    assert main(["probe", str(still)]) == 0
    text = capsys.readouterr().out
    assert "8-bit 4:4:4\n" in text
    assert "matrix gbr, range pc (RGB, read as it is; a YUV output is converted as " in text
    assert main(["probe", str(make_trait_clip("hdr10", tmp_path)), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    picture = doc["picture"]
    assert (picture["bit_depth"], picture["chroma"], picture["rotation_degrees"]) == (
        10,
        "4:2:0",
        0,
    )
    assert picture["colour"] == {
        "primaries": "bt2020", "transfer": "smpte2084", "matrix": "bt2020nc", "range": "tv"
    }  # fmt: skip
    assert (picture["hdr"]["max_cll"], picture["hdr"]["max_fall"]) == (1000, 400)
    assert picture["hdr"]["red"] == [34000, 16000] and picture["hdr"]["min_luminance"] == 50


def test_segments_of_the_first_format_still_read() -> None:
    """Work directories written before packet durations (RPSEG1) stay readable."""
    import json
    import struct
    from fractions import Fraction

    from raypipe.media.encode import Segment

    head = json.dumps({"n": 2, "tb": [1, 25]}).encode()
    v1 = b"RPSEG1\n" + struct.pack("<I", len(head)) + head
    v1 += np.array([0, 1], "<i8").tobytes() + np.array([-1, 0], "<i8").tobytes() + b"NUT"
    segment = Segment.from_bytes(v1)
    assert segment.container == b"NUT" and segment.pts.tolist() == [0, 1]
    assert segment.dts.tolist() == [-1, 0] and segment.time_base == Fraction(1, 25)
    assert segment.durations is None and segment.colour is None and segment.rate is None
    again = Segment.from_bytes(segment.to_bytes())  # written back as the current format
    assert again.pts.tolist() == [0, 1] and again.container == b"NUT"


@pytest.mark.parametrize("alpha", [True, False])
def test_a_webm_whose_alpha_rides_beside_its_picture_says_the_alpha_is_left_out(
    tmp_path: Path, alpha: bool
) -> None:
    """VP9 with transparency in WebM (``alpha_mode`` 1: the alpha coded as a second picture
    beside the first, as browsers and editors write overlays) decodes as yuv420p in FFmpeg's
    own decoder, so the decoded format cannot say the alpha is lost: the probe does."""
    source = tmp_path / f"overlay-{alpha}.webm"
    pix_fmt = "yuva420p" if alpha else "yuv420p"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
         "testsrc2=s=96x64:r=25:d=0.2", "-vf", f"format={pix_fmt}", "-c:v", "libvpx-vp9",
         "-pix_fmt", pix_fmt, "-auto-alt-ref", "0", str(source)],
        check=True,
    )  # fmt: skip
    info = probe(str(source))
    assert info.pix_fmt == "yuv420p"
    notes = [line for line in info.left_out if "alpha" in line]
    if alpha:
        assert notes == [
            "stream 0's alpha channel (transparency, stored beside its vp9 picture): outputs "
            "have none, and models get RGB"
        ]
    else:
        assert notes == []


@pytest.mark.parametrize("transparent", [False, True])
def test_a_gif_says_its_alpha_is_left_out_only_when_it_is_transparent(
    tmp_path: Path, transparent: bool
) -> None:
    """FFmpeg decodes every GIF as ``bgra``; every GIF got the note that its alpha channel
    was left out, opaque ones too (a sweep). An opaque first frame now says nothing."""
    source = tmp_path / f"anim-{transparent}.gif"
    alpha = "if(lt(X,32),0,255)" if transparent else "255"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-y", "-f", "lavfi", "-i",
         f"testsrc=s=64x48:r=10:d=0.3,format=rgba,geq=r='r(X,Y)':g='g(X,Y)':b='b(X,Y)':a='{alpha}'",
         "-filter_complex", "split[a][b];[a]palettegen=reserve_transparent=1[p];"
         "[b][p]paletteuse=alpha_threshold=128", str(source)],
        check=True, timeout=60,
    )  # fmt: skip
    picture = probe(str(source)).picture
    assert picture.pix_fmt == "bgra" and picture.opaque_gif is not transparent
    assert PictureFormat.from_json(picture.to_json()) == picture
    notes = [n for n in fidelity_notes(EncodeConfig(codec="libx264"), picture) if "alpha" in n]
    assert len(notes) == int(transparent), notes
    assert ("with alpha" in picture_lines(picture)[0]) is transparent


def test_an_anamorphic_source_into_nut_or_avi_is_said_to_lose_its_aspect_ratio() -> None:
    """FFV1, VP9 and AV1 in NUT or AVI came out square-pixelled, said nowhere (a sweep):
    those muxers write the stream's ratio, which PyAV cannot set; H.264 and HEVC carry
    their own, and MKV, MOV and MP4 keep every codec's."""
    pal = PictureFormat(coded_width=720, coded_height=576, pix_fmt="yuv420p", sar=(64, 45))
    for codec in ("ffv1", "libvpx-vp9", "libsvtav1"):
        for output in ("out.nut", "out.avi"):
            (note,) = fidelity_notes(EncodeConfig(codec=codec), pal, output)
            assert note.startswith("the source's sample aspect ratio (64:45) is left out of a ")
    assert fidelity_notes(EncodeConfig(codec="libx264"), pal, "out.nut") == []
    for output in ("out.mkv", "out.mov", "out.mp4"):
        assert fidelity_notes(EncodeConfig(codec="ffv1"), pal, output) == []
    square = PictureFormat(coded_width=720, coded_height=576, pix_fmt="yuv420p", sar=(1, 1))
    assert fidelity_notes(EncodeConfig(codec="ffv1"), square, "out.nut") == []
