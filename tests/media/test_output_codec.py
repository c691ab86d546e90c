"""The video codec an output gets, and whether its container holds it. ``--codec auto``
(the default) follows the output's container as ``ffmpeg`` does: WebM holds no H.264, so
`raypipe run in.webm out.webm` and an archive of WebM downloads get VP9 instead of a
refusal; every other container gets libx264. libvpx-vp9 takes ``crf`` as constant quality
and the x264-style preset as its speed. A codec the container cannot hold is refused before
any work, exactly when FFmpeg's muxer would fail."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import raypipe
from raypipe.config import EncodeConfig, default_video_codec
from raypipe.distributed.archive import _jobs
from raypipe.errors import ConfigError
from raypipe.inputs import InputItem
from raypipe.media.containers import container_refuses, output_format
from raypipe.media.encode import (
    check_encoder,
    encoder_available,
    encoder_options,
    option_problem,
    segment_format,
    size_problem,
)
from raypipe.testing import ClipSpec, make_clip


@pytest.mark.parametrize(
    ("output", "codec"),
    [("out.webm", "libvpx-vp9"), ("s3://b/clips/OUT.WEBM", "libvpx-vp9"), ("out.mp4", "libx264"),
     ("out.mkv", "libx264"), ("out.mov", "libx264"), ("out.ts", "libx264"), ("", "libx264")],
)  # fmt: skip
def test_auto_picks_vp9_for_webm_and_x264_elsewhere(output: str, codec: str) -> None:
    assert default_video_codec(output) == codec
    assert EncodeConfig().for_output(output).codec == codec
    assert EncodeConfig(codec="libx265").for_output(output).codec == "libx265"  # as given
    check_encoder(EncodeConfig())  # both encoders auto may pick are in this build


def test_a_webm_output_is_refused_only_for_a_codec_the_user_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An archive mirrors its inputs' names; where the codec asked for does not fit the
    mirrored container (H.264 in WebM, ProRes in MP4), the output takes the first of
    .mp4, .mov and .mkv that holds it, and one line says so. Before, every such video
    failed with "choose another output extension", which an archive has no way to do
    but a manifest. An output a manifest names is the user's: still refused."""
    assert container_refuses("out.webm", "auto") == ""
    assert container_refuses("out.webm", "libx264") == (
        "a .webm file cannot hold libx264 video; choose another output extension (.mkv and "
        ".mov hold it) or another --codec (libvpx-vp9, libsvtav1)"
    ), "AV1 too: it is WebM's other codec, and keeps 10-bit where this build's VP9 does not"
    items = [InputItem("/in/a.webm", "a.webm"), InputItem("/in/b.mp4", "b.mp4")]
    assert [j.output_problem for j in _jobs(items, "/out", codec="auto")] == ["", ""]
    assert [j.output for j in _jobs(items, "/out", codec="auto")] == ["/out/a.webm", "/out/b.mp4"]
    with caplog.at_level("WARNING", logger="raypipe"):
        named = _jobs(items, "/out", codec="libx264")
    assert [(j.output, j.output_problem) for j in named] == [("/out/a.mp4", ""), ("/out/b.mp4", "")]
    assert "1 output(s) would be .webm files, which cannot hold libx264 video: they are .mp4" in (
        caplog.text
    )
    prores = _jobs(items, "/out", codec="prores_ks")
    assert [(j.output, j.output_problem) for j in prores] == [
        ("/out/a.mov", ""),
        ("/out/b.mov", ""),
    ]
    clash = _jobs([InputItem("/in/c.mp4", "c.mp4"), InputItem("/in/c.mov", "c.mov")], "/out",
                  codec="prores_ks")  # fmt: skip
    # c.mov's own name: it keeps it, wherever c.mp4 sorts (c.mp4 took c.mov's output)
    assert not clash[1].error and clash[1].output == "/out/c.mov"
    assert clash[0].error.startswith(
        "output 'c.mov' is claimed by 2 inputs: it is written for '/in/c.mov' (its own name)"
    )
    mine = _jobs([InputItem("/in/a.webm", "x/a.webm", named=True)], "/out", codec="libx264")
    assert mine[0].output_problem.startswith("output 'x/a.webm': a .webm file cannot hold")
    assert mine[0].output == "/out/x/a.webm"


def test_vp9_takes_crf_as_constant_quality_and_the_preset_as_its_speed() -> None:
    assert encoder_options(EncodeConfig(codec="libvpx-vp9", crf=30, preset="fast")) == {
        "crf": "30", "b": "0", "deadline": "good", "row-mt": "1", "cpu-used": "5",
    }  # fmt: skip
    assert encoder_options(EncodeConfig(codec="libvpx-vp9", crf=None, preset="medium")) == {
        "deadline": "good", "row-mt": "1", "cpu-used": "4",
    }  # fmt: skip
    # the user's own options win
    assert encoder_options(
        EncodeConfig(codec="libvpx-vp9", crf=18, preset="slow", options={"cpu-used": "8"})
    ) == {"crf": "18", "b": "0", "deadline": "good", "row-mt": "1", "cpu-used": "8"}


def test_svt_av1_takes_crf_and_the_preset_as_its_own_numbers() -> None:
    """``--crf`` and ``--preset`` were left unused with libsvtav1 (and av1_nvenc falling back
    to it), without a word: crf 5 and 50 gave files of one size (a sweep)."""
    assert encoder_options(EncodeConfig(codec="libsvtav1", crf=30, preset="veryfast")) == {
        "crf": "30", "preset": "10",
    }  # fmt: skip
    assert encoder_options(EncodeConfig(codec="libsvtav1", crf=None, preset="4"))["preset"] == "4"
    assert (
        encoder_options(
            EncodeConfig(codec="libsvtav1", crf=20, preset="fast", options={"crf": "40"})
        )["crf"]
        == "40"
    ), "the user's own options win"
    with pytest.raises(ConfigError, match=r"preset 'ultrafst' is neither one of x264's"):
        EncodeConfig(codec="libsvtav1", preset="ultrafst")
    with pytest.raises(ConfigError, match=r"nor SVT-AV1's own, -1..13"):
        EncodeConfig(codec="libsvtav1", preset="14")
    if not encoder_available("libsvtav1"):
        pytest.skip("this PyAV build has no libsvtav1")
    frames = np.random.default_rng(3).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)

    def size(crf: int) -> int:
        ctx = av.CodecContext.create("libsvtav1", "w")
        ctx.width = ctx.height = 64
        ctx.pix_fmt, ctx.time_base = "yuv420p", Fraction(1, 30)
        ctx.options = encoder_options(EncodeConfig(codec="libsvtav1", crf=crf, preset="ultrafast"))
        packets = []
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            packets += ctx.encode(frame)
        packets += ctx.encode(None)
        return sum(p.size for p in packets)

    assert size(5) > 2 * size(55)


@pytest.mark.parametrize("codec", ["auto", "libx264", "libx265", "libvpx-vp9"])
def test_a_preset_x264_has_no_name_for_is_refused_with_the_names(codec: str) -> None:
    """``preset="ultrafst"`` failed at the first chunk's encode, after Ray's start and a
    decode (x264's avcodec_open2 returned 22); VP9 left its speed alone, said nowhere.
    NVENC takes its own names (p1..p7) besides x264's."""
    with pytest.raises(ConfigError, match="preset 'ultrafst' is not one of x264's: ultrafast,"):
        EncodeConfig(codec=codec, preset="ultrafst")
    assert EncodeConfig(codec="h264_nvenc", preset="p4").preset == "p4"
    assert EncodeConfig(codec=codec, preset="placebo").preset == "placebo"


_TINY_PIX_FMTS = {"libx264rgb": "rgb24", "prores_ks": "yuv422p10le", "dnxhd": "yuv422p"}


def _tiny_stream(codec: str) -> bytes:
    """Three 64x48 frames (256x120 for DNxHR) encoded by ``codec``, in the container a
    segment of its video is written in (NUT, or MOV for ProRes and DNxHD)."""
    buf = io.BytesIO()
    kind = av.codec.Codec(codec, "w").canonical_name
    with av.open(buf, "w", format=segment_format(kind)) as out:
        options = {"profile": "dnxhr_hq"} if codec == "dnxhd" else {}
        stream = out.add_stream(codec, rate=25, options=options)
        height, width = (120, 256) if codec == "dnxhd" else (48, 64)  # DNxHR's smallest
        stream.width, stream.height = width, height
        stream.pix_fmt = _TINY_PIX_FMTS.get(codec, "yuv420p")
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), "rgb24")
            frame = frame.reformat(format=stream.pix_fmt)
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def _muxes(data: bytes, path: str) -> bool:
    """Whether FFmpeg's muxer for ``path`` writes the stream-copy of ``data``'s video so
    that its demuxer reads that video back."""
    written = io.BytesIO()
    with av.open(io.BytesIO(data)) as source:
        video = source.streams.video[0]
        codec = video.codec_context.codec.canonical_name
        try:
            with av.open(written, "w", format=output_format(path)) as out:
                try:
                    stream = out.add_stream_from_template(video)
                except av.codec.codec.UnknownCodecError:
                    stream = out.add_stream_from_template(video, opaque=True)
                for packet in source.demux(video):
                    if packet.size:
                        packet.stream = stream
                        out.mux(packet)
        except (av.error.FFmpegError, ValueError):
            return False
    back = av.open(io.BytesIO(written.getvalue()), format=output_format(path))
    with back:  # TS writes anything, as data
        return [s.codec_context.codec.canonical_name for s in back.streams.video] == [codec]


@pytest.mark.parametrize(
    "codec",
    ["libx264", "libx264rgb", "libx265", "libvpx-vp9", "libsvtav1", "ffv1", "mpeg4", "prores_ks",
     "dnxhd"],
)  # fmt: skip
def test_an_output_is_refused_before_the_work_exactly_when_its_muxer_would_fail(
    codec: str,
) -> None:
    """The up-front check (:func:`container_refuses`) against FFmpeg's muxers themselves:
    MOV lists VP9 and AV1 and then refuses them as it starts (a `--codec libvpx-vp9` run
    into .mov failed at its end, after every chunk's work). MPEG-TS lists nothing and
    writes VP9, AV1 or FFV1 as private data that no player reads (a run "succeeded" with
    an unplayable output)."""
    data = _tiny_stream(codec)
    for ext in (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".nut", ".ts"):
        refused = container_refuses(f"out{ext}", codec) != ""
        assert refused == (not _muxes(data, f"out{ext}")), (codec, ext)


def test_an_encoder_option_the_encoder_lacks_is_refused_with_the_nearest_names() -> None:
    """FFmpeg's encoders leave an option they do not have unused, without a word:
    `--encoder-option qpp=0` (a typo of x264's lossless `qp=0`) gave the default lossy
    encode, exit 0. ffmpeg itself refuses it; so does raypipe, before any work."""
    with pytest.raises(
        ConfigError, match=r"encoder libx264 has no option 'qpp' .*: did you mean qp\?"
    ):
        check_encoder(EncodeConfig(codec="libx264", options={"qpp": "0"}))
    with pytest.raises(ConfigError, match=r"has no option 'b:v'.*did you mean b\b"):
        check_encoder(EncodeConfig(codec="libx264", options={"b:v": "5M"}))  # ffmpeg's spelling
    with pytest.raises(  # "libx264 / libvpx-vp9 has no option" read as both (a sweep)
        ConfigError,
        match=r"no encoder --codec auto picks \(libx264 or libvpx-vp9, by the output's "
        r"container\) has an option 'foo' \(--encoder-option foo=bar\)\. Their options: "
        r"`ffmpeg -h encoder=libx264`, `ffmpeg -h encoder=libvpx-vp9`",
    ):
        check_encoder(EncodeConfig(options={"foo": "bar"}))
    fine = [
        ("libx264", {"qp": "0", "g": "48", "x264-params": "keyint=48"}),
        ("auto", {"row-mt": "1"}),  # one of the encoders auto may pick has it
        ("prores_ks", {"profile": "4444"}),
        ("h264_nvenc", {"cq": "20"}),
    ]
    for codec, options in fine:
        check_encoder(EncodeConfig(codec=codec, options=options))


def test_with_codec_auto_an_option_must_be_one_of_the_encoder_the_output_gets(
    tmp_path: Path,
) -> None:
    """VP9's ``cpu-used`` into an ``.mp4`` passed the check of both encoders auto may pick,
    and x264 left it unused, exit 0 (a sweep): refused before any work, for ``run`` and for
    each archive output it does not reach."""
    auto = EncodeConfig(options={"cpu-used": "8"})
    assert option_problem(auto, "/out/a.webm") == ""
    assert option_problem(auto, "/out/a.mp4") == (
        "encoder libx264 (the one --codec auto picks for .mp4) has no option 'cpu-used' "
        "(--encoder-option cpu-used=8). Its options: `ffmpeg -h encoder=libx264`"
    )
    assert option_problem(EncodeConfig(codec="libx264", options={"qp": "0"}), "/o/a.webm") == ""
    x264 = EncodeConfig(options={"x264-params": "qp=0"})
    assert option_problem(x264, "/out/a.webm").startswith("encoder libvpx-vp9 (the one --codec ")
    items = [InputItem("/in/a.webm", "a.webm"), InputItem("/in/b.mp4", "b.mp4")]
    problems = [j.output_problem for j in _jobs(items, "/out", encode=auto)]
    assert problems == ["", "output 'b.mp4': " + option_problem(auto, "/out/b.mp4")]
    make_clip(tmp_path / "in.mp4", ClipSpec(n_frames=2, width=64, height=48))
    with pytest.raises(ConfigError, match=r"^encoder libx264 \(the one --codec auto picks"):
        raypipe.process_video(
            str(tmp_path / "in.mp4"), str(tmp_path / "o.mp4"), encoder_options={"cpu-used": 8}
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_a_pix_fmt_the_encoder_does_not_write_is_refused_before_any_work(tmp_path: Path) -> None:
    """``--pix-fmt rgb24`` with x264 (or 10-bit VP9 from this build's 8-bit libvpx, 4:4:4
    SVT-AV1, 4:2:0 ProRes) failed at the first chunk's encode, after Ray's start, with
    "Invalid argument" (a sweep)."""
    assert option_problem(EncodeConfig(codec="libx264", pix_fmt="rgb24"), "o.mp4").startswith(
        "encoder libx264 does not write --pix-fmt rgb24; it writes yuv420p, "
    )
    assert option_problem(EncodeConfig(codec="prores_ks", pix_fmt="yuv420p"), "o.mov") == (
        "encoder prores_ks does not write --pix-fmt yuv420p; it writes yuv422p10le, "
        "yuv444p10le, yuva444p10le"
    )
    assert option_problem(EncodeConfig(codec="ffv1", pix_fmt="yuv444p"), "o.mkv") == ""
    assert option_problem(EncodeConfig(pix_fmt="yuv420p10le"), "o.mp4") == ""  # x264's
    make_clip(tmp_path / "in.mp4", ClipSpec(n_frames=2, width=64, height=48))
    with pytest.raises(ConfigError, match=r"^encoder libx264 does not write --pix-fmt rgb24"):
        raypipe.process_video(
            str(tmp_path / "in.mp4"), str(tmp_path / "o.mp4"), codec="libx264", pix_fmt="rgb24"
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_values_and_parameters_an_encoder_refuses_are_said_before_any_work(
    tmp_path: Path,
) -> None:
    """A value an encoder refuses failed at the first chunk, after Ray's start, as "Invalid
    argument" (the reason in a worker's log), and a misspelt key inside ``x264-params`` (or
    x265's, SVT-AV1's) was left unused without a word: ``qpp=0`` a lossy encode (a sweep).
    The encoder is opened once, on a small picture, with the run's options."""
    said = {
        ("libx264", "o.mp4", (("tune", "bogus"),), None): (
            "encoder libx264: it does not open with these settings (crf=18, preset=medium, "
            "tune=bogus, yuv420p): Error setting preset/tune medium/bogus"
        ),
        ("libx264", "o.mp4", (("profile", "high"),), "yuv444p"): (
            "encoder libx264: it does not open with these settings (crf=18, preset=medium, "
            "profile=high, yuv444p): Error setting profile high"
        ),
        ("libx264", "o.mp4", (("x264-params", "qpp=0:bframes=0"),), None): (
            "encoder libx264: Error parsing option 'qpp = 0' (its settings: crf=18, "
            "preset=medium, x264-params=qpp=0:bframes=0, yuv420p): a key it does not know is left "
            "unused; check the spelling in the encoder's own parameter list"
        ),
        ("libx265", "o.mkv", (("x265-params", "bogus=1"),), None): (
            "encoder libx265: Unknown option: bogus (its settings: crf=18, preset=medium, "
            "x265-params=log-level=error:bogus=1, yuv420p): a key it does not know is left unused; "
            "check the spelling in the encoder's own parameter list"
        ),
    }
    for (codec, output, options, pix_fmt), problem in said.items():
        config = EncodeConfig(codec=codec, crf=18, preset="medium", options=dict(options),
                              pix_fmt=pix_fmt)  # fmt: skip
        assert option_problem(config, output) == problem
    # colour tags and the aspect ratio are raypipe's own: given, they changed the tags over
    # pixels converted otherwise (color_range=pc over limited range: washed out; a sweep)
    for name, value in (("color_range", "pc"), ("colorspace", "bt2020nc"), ("aspect", "4:3")):
        with pytest.raises(ConfigError, match=rf"^--encoder-option {name}={value} sets "):
            check_encoder(EncodeConfig(codec="libx264", options={name: value}))
    fine = EncodeConfig(codec="libx264", options={"x264-params": "keyint=5:bframes=0"})
    assert option_problem(fine, "o.mp4") == ""
    # VP9's lossless beside raypipe's crf: "CQ level 18 must be between ... (0-0)"
    lossless = EncodeConfig(codec="libvpx-vp9", crf=18, options={"lossless": "1"})
    assert option_problem(lossless, "o.webm") == ""
    assert "crf" not in encoder_options(lossless)
    make_clip(tmp_path / "in.mp4", ClipSpec(n_frames=2, width=64, height=48))
    with pytest.raises(ConfigError, match=r"^encoder libx264 \(the one --codec auto picks"):
        raypipe.process_video(
            str(tmp_path / "in.mp4"), str(tmp_path / "o.mp4"), encoder_options={"tune": "x"}
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_a_crf_or_preset_an_encoder_has_no_place_for_is_said_to_do_nothing() -> None:
    """``--codec prores_ks --preset proxy`` gave ProRes HQ, ``--codec mpeg4 --crf 40`` its
    default bit rate, without a word (a sweep); the defaults say nothing."""
    from raypipe.media.encode import unused_settings_note

    assert unused_settings_note(EncodeConfig(codec="prores_ks", crf=30, preset="proxy")) == (
        "--crf 30 and --preset proxy do nothing for prores_ks, which has no crf or preset: "
        "its profile is --encoder-option profile=proxy, lt, standard, hq (the default) or 4444"
    )
    assert unused_settings_note(EncodeConfig(codec="mpeg4", crf=40)) == (
        "--crf 40 does nothing for mpeg4, which has no crf or preset: its quality is "
        "--encoder-option b=BITRATE (such as b=5M)"
    )
    assert unused_settings_note(EncodeConfig(codec="ffv1")) == ""  # the defaults
    with pytest.raises(ConfigError, match="^--codec copy: raypipe encodes the frames the model"):
        check_encoder(EncodeConfig(codec="copy"))
    for codec in ("libx264", "libx265", "libvpx-vp9", "libsvtav1", "h264_nvenc"):
        assert unused_settings_note(EncodeConfig(codec=codec, crf=30, preset="slow")) == ""


def test_sizes_an_encoder_does_not_open_for_are_refused_before_any_work() -> None:
    """x264 and SVT-AV1 open for at most 16384 px a side (upscale2x of a 16000x64 strip
    failed at the first chunk, after Ray's start, "Generic error in an external library"),
    and FFmpeg 8's FFV1 finds no slicing for some thin frames (1x720: "Function not
    implemented"), though the x264 refusal sent users to it (a sweep)."""
    assert size_problem(EncodeConfig(codec="libx264"), "yuv420p", 32000, 128) == (
        "libx264 encodes frames of at most 16384 px a side, the frames are 32000x128; use "
        "--codec libx265, libvpx-vp9 or ffv1"
    )
    assert size_problem(EncodeConfig(codec="libx264"), "yuv420p", 16000, 64) == ""
    for codec in ("libx265", "libvpx-vp9", "ffv1"):
        assert size_problem(EncodeConfig(codec=codec), "yuv420p", 32000, 128) == ""
    thin = size_problem(EncodeConfig(codec="ffv1"), "yuv420p", 1, 720)
    assert thin.startswith("ffv1 does not encode 1x720 frames in yuv420p (FFmpeg: ")
    assert thin.endswith("; use --codec libvpx-vp9")
    assert size_problem(EncodeConfig(codec="ffv1"), "yuv420p", 16, 720) == ""
    assert size_problem(EncodeConfig(codec="libvpx-vp9"), "yuv420p", 1, 720) == ""


def _svt_packets(width: int, height: int) -> int:
    """Packets SVT-AV1 gives for 3 frames of ``width`` x ``height``."""
    with av.open(io.BytesIO(), "w", format="matroska") as sink:
        stream = sink.add_stream("libsvtav1", rate=25, options={"preset": "12"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        packets = 0
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(
                np.full((height, width, 3), 40 * i, np.uint8), format="rgb24"
            ).reformat(format="yuv420p")
            frame.pts = i
            packets += len(stream.encode(frame))
        return packets + len(stream.encode(None))


def test_svt_av1_strips_it_hangs_on_are_refused_before_any_work(tmp_path: Path) -> None:
    """SVT-AV1 took 320x16 frames and never gave a packet, an error or the process's end: a
    run with ``--codec libsvtav1`` waited forever (a sweep). Frames at most 24 px on one
    side and over 64 on the other are refused with other codecs named; the sizes beside
    that edge encode."""
    svt = EncodeConfig(codec="libsvtav1")
    for width, height in [(320, 16), (66, 24), (24, 65), (100, 8)]:
        assert size_problem(svt, "yuv420p", width, height).startswith(
            "libsvtav1 (SVT-AV1) stops responding on frames 24 px or less on one side and "
            f"more than 64 on the other, the frames are {width}x{height}; use --codec "
            "libvpx-vp9 or ffv1"
        )
    for width, height in [(64, 24), (26, 320), (16, 16), (1920, 1080)]:
        assert size_problem(svt, "yuv420p", width, height) == ""
    assert size_problem(EncodeConfig(codec="libvpx-vp9"), "yuv420p", 320, 16) == ""
    assert _svt_packets(64, 24) == _svt_packets(26, 320) == 3
    with av.open(str(tmp_path / "in.mp4"), "w") as sink:  # narrower than make_clip draws
        stream = sink.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 16, "yuv420p"
        for i in range(2):
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 96, 3), np.uint8), format="rgb24")
            frame.pts = i
            sink.mux(stream.encode(frame))
        sink.mux(stream.encode(None))
    with pytest.raises(ConfigError, match=r"^output .o.mkv.: libsvtav1 \(SVT-AV1\) stops respond"):
        raypipe.process_video(str(tmp_path / "in.mp4"), str(tmp_path / "o.mkv"), codec="libsvtav1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_python_values_of_encoder_options_and_crf_are_checked_or_made_text() -> None:
    """``encoder_options={"qp": 0}`` failed at the first chunk's encode, after Ray's start,
    with "Argument 'value' has incorrect type", naming no option; ``crf="20"`` with a
    TypeError from a comparison."""
    assert EncodeConfig(options={"qp": 0, "row-mt": True, "aq-strength": 0.8}).options == {
        "qp": "0", "row-mt": "1", "aq-strength": "0.8",
    }  # fmt: skip
    # a text or a float is said to be one, not out of range (a sweep)
    whole = r"^crf must be a whole number; crf is within 0..63 \(VP9's, for a \.webm; "
    with pytest.raises(ConfigError, match=whole + r"libx264's, for the rest: 0..51\), got '20'$"):
        EncodeConfig(crf="20")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^crf must be a whole number; libx265's crf is "
                       r"within 0..51, got 20.0$"):  # fmt: skip
        EncodeConfig(codec="libx265", crf=20.0)  # type: ignore[arg-type]
    # one range, the encoder's: 99 was "within 0..63", then 55 "0..51" (a sweep)
    for codec, limit in (("libx264", 51), ("libvpx-vp9", 63), ("libx265", 51)):
        with pytest.raises(ConfigError, match=rf"{codec}'s crf is within 0..{limit}, got 99"):
            EncodeConfig(codec=codec, crf=99)
        EncodeConfig(codec=codec, crf=limit)
    # --codec auto takes VP9's range; the output's encoder, once known, its own (a .webm's
    # crf 60 was refused as out of x264's 0..51, though the message gave VP9's 0..63)
    with pytest.raises(ConfigError, match=r"^crf is within 0..63 \(VP9's"):
        EncodeConfig(crf=64)
    auto = EncodeConfig(crf=60)
    assert [c.codec for c in auto.candidates()] == ["libvpx-vp9"]
    assert auto.for_output("o.webm").codec == "libvpx-vp9"
    assert option_problem(auto, "o.webm") == ""
    assert option_problem(auto, "o.mp4") == (
        "libx264's crf is within 0..51, got 60; --codec auto picks libx264 for .mp4"
    )
    items = [InputItem("/in/a.webm", "a.webm"), InputItem("/in/b.mp4", "b.mp4")]
    jobs = _jobs(items, "/out", codec="auto", encode=auto)  # an archive: the .mp4 fails alone
    assert [j.output_problem for j in jobs] == [
        "",
        "output 'b.mp4': libx264's crf is within 0..51, got 60; --codec auto picks libx264 "
        "for .mp4",
    ]
    with pytest.raises(ConfigError, match="encoder option 'qp' must be text or a number"):
        EncodeConfig(options={"qp": [0]})  # type: ignore[dict-item]
