"""The ``raypipe`` command.

``main(argv)`` returns the exit code: 0 success, 1 a raypipe error (one line on stderr:
``raypipe: error: TypeName: what happened; what to do``; ``--verbose`` prints the
traceback before it), 2 bad usage, 3 an archive in which some videos failed (see its
report), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from raypipe.config import DECODERS, DEVICES, ChunkConfig
from raypipe.errors import InputNotFoundError, RaypipeError

if TYPE_CHECKING:
    from raypipe.media.picture import PictureFormat

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _window(text: str) -> tuple[int, int]:
    before, sep, after = text.partition(",")
    if not sep or not before.strip().isdigit() or not after.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected B,A (frames before,after), got {text!r}")
    return int(before), int(after)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="builtin:identity",
        help="builtin:NAME or path/URL of an .onnx file (default: builtin:identity)",
    )
    p.add_argument(
        "--processor", metavar="FILE.py:CLASS", help="run a raypipe.Processor (or MODULE:CLASS)"
    )
    p.add_argument(
        "--chunk-frames", type=int, default=64, help="frames per chunk, about (default 64)"
    )
    p.add_argument(
        "--no-split-gops",
        dest="split_gops",
        action="store_false",
        help="never split a GOP longer than --chunk-frames",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="inference actors (default: one per GPU, or 1 without GPUs)",
    )
    p.add_argument(
        "--workers-per-gpu",
        type=int,
        default=1,
        help="inference actors sharing one GPU (num_gpus=1/k each; default 1)",
    )
    p.add_argument(
        "--actor-cpus",
        dest="actor_num_cpus",
        type=float,
        default=1.0,
        help="CPUs each inference actor reserves (default 1)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="frames per model call (default 8)")
    p.add_argument(
        "--every-n-frames",
        type=int,
        default=1,
        metavar="N",
        help="analysis models: process frames 0, N, 2N, ... (default every frame)",
    )
    p.add_argument(
        "--sample-fps",
        type=float,
        default=None,
        metavar="F",
        help="analysis models: process the first frame of each 1/F seconds",
    )
    p.add_argument(
        "--tile",
        type=int,
        default=None,
        metavar="PX",
        help="run the model on PX x PX tiles (large frames)",
    )
    p.add_argument(
        "--tile-overlap",
        type=int,
        default=None,
        metavar="PX",
        help="context around each tile, at least the model's receptive field",
    )
    p.add_argument(
        "--pad-multiple", type=int, metavar="PX", help="pad to multiples of PX for the model"
    )
    p.add_argument(
        "--window", type=_window, metavar="B,A", help="temporal model: frames before,after each"
    )
    p.add_argument(
        "--warmup-frames", type=int, metavar="K", help="recurrent model: warm-up frames per chunk"
    )
    p.add_argument(
        "--resize",
        choices=("none", "stretch", "letterbox"),
        default=None,
        help="fixed-size models: how frames are fitted to the model's input",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "fp16"),
        default="fp32",
        help="TensorRT engine precision (default fp32)",
    )
    p.add_argument(
        "--engine-cache",
        default=None,
        help="shared TensorRT engine cache URL (default RAYPIPE_ENGINE_CACHE, else local)",
    )
    p.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="auto: best available; gpu: fail unless a GPU provider is granted",
    )
    p.add_argument(
        "--decoder",
        choices=DECODERS,
        default="auto",
        help="auto: NVDEC where the decode task's node has it, else the CPU (default); "
        "nvdec: ask for NVDEC and say so when a chunk falls back to the CPU",
    )
    p.add_argument(
        "--codec",
        default="libx264",
        help="video encoder: libx264 (default), libx265, ffv1, libx264rgb, h264_nvenc, "
        "hevc_nvenc, av1_nvenc (NVENC falls back to libx264/libx265/AV1 software, saying "
        "so, where the GPU has no NVENC: A100, H100)",
    )
    p.add_argument(
        "--crf", type=int, default=18, help="x264/x265 quality, lower is better (default 18)"
    )
    p.add_argument("--preset", default="medium", help="x264/x265 preset (default medium)")
    p.add_argument("--pix-fmt", default=None, help="encoder pixel format (default yuv420p)")
    p.add_argument(
        "--encoder-option",
        dest="encoder_options",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="extra encoder option, repeatable (qp=0)",
    )
    p.add_argument(
        "--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or local)"
    )
    p.add_argument(
        "--stats",
        dest="stats_path",
        default=None,
        metavar="PATH",
        help="write run statistics as JSON to PATH",
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("-v", "--verbose", action="store_true", help="print tracebacks with errors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raypipe", description="Process video with ONNX models on a Ray cluster."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="process one video")
    run.add_argument("input", help="input video: path or fsspec URL")
    run.add_argument("output", help="output video path (.mp4, .mkv, .mov, ...)")
    _add_run_options(run)

    archive = sub.add_parser(
        "archive",
        help="process every video of a folder, glob, URI list or manifest (resumable)",
        description="Exit codes: 0 every video done or skipped, 3 some failed, 1 the run "
        "itself failed, 2 bad usage.",
    )
    archive.add_argument(
        "inputs", help="directory/prefix, glob, .txt URI list or .csv/.parquet manifest"
    )
    archive.add_argument("output_dir", help="where outputs go, mirroring the inputs' paths")
    _add_run_options(archive)
    archive.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="start over: reprocess finished videos and drop encoded chunks",
    )
    archive.add_argument(
        "--report",
        dest="report_path",
        default=None,
        help="report path (default OUTPUT_DIR/_raypipe-report.parquet)",
    )

    engines = sub.add_parser(
        "build-engines", help="prebuild TensorRT engines into a shared cache (GPU cluster)"
    )
    engines.add_argument("--model", required=True, help="builtin:NAME or path/URL of an .onnx")
    engines.add_argument("--cache", required=True, help="engine cache URL (s3://..., a dir)")
    engines.add_argument(
        "--size",
        dest="sizes",
        action="append",
        required=True,
        metavar="WxH",
        help="frame size to build for, repeatable (1920x1080)",
    )
    engines.add_argument("--batch-size", type=int, default=8)
    engines.add_argument("--precision", choices=("fp32", "fp16"), default="fp16")
    engines.add_argument("--address", default=None, help="Ray cluster address")

    report = sub.add_parser(
        "report",
        help="show an archive report (.parquet) as a table, or draw run stats (.json) as a PNG",
    )
    report.add_argument("path", help="a _raypipe-report.parquet, or a --stats JSON")
    report.add_argument("-o", "--output", default=None, help="PNG to draw the stats into")

    probe = sub.add_parser(
        "probe",
        help="show a video's streams, rotation, colour, bit depth, chroma and chunk plan",
    )
    probe.add_argument("input")
    probe.add_argument("--chunk-frames", type=int, default=64)
    probe.add_argument("--json", action="store_true", help="machine-readable output")

    model = sub.add_parser("model", help="built-in models")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    export = model_sub.add_parser("export", help="write a built-in model as an .onnx file")
    export.add_argument("name", help="builtin:NAME")
    export.add_argument("path", help="destination .onnx path")
    model_sub.add_parser("list", help="list the built-in models")

    doctor = sub.add_parser(
        "doctor",
        help="what this machine and install can do (GPU providers, drivers, codecs) and why not",
        description="Exit codes: 0 when --device would work here, 1 (with the reason on one "
        "line) when it would not.",
    )
    doctor.add_argument(
        "--device", choices=DEVICES, default="auto", help="the device to check (default auto)"
    )
    doctor.add_argument(
        "--engine-cache", default=None, help="engine cache URL to check (default as `run`)"
    )
    doctor.add_argument("--json", action="store_true", help="machine-readable output")

    demo = sub.add_parser("demo", help="make a sample clip and process it on the local default")
    demo.add_argument(
        "--output-dir", default="raypipe-demo", help="where to write (default ./raypipe-demo)"
    )
    demo.add_argument("--model", default="builtin:invert")
    demo.add_argument("-q", "--quiet", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="raypipe: %(levelname)s: %(message)s")
    try:
        return _COMMANDS[args.command](args)
    except RaypipeError as e:
        if getattr(args, "verbose", False):  # the traceback, and the worker's where it failed
            traceback.print_exc(file=sys.stderr)
            if getattr(e, "detail", ""):
                print(f"raypipe: where it failed (on a worker):\n{e.detail}", file=sys.stderr)  # type: ignore[attr-defined]
        print(f"raypipe: error: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("raypipe: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _cmd_run(args: argparse.Namespace) -> int:
    from raypipe.distributed.pipeline import process_video

    skip = ("command", "input", "output", "verbose")
    options = {k: v for k, v in vars(args).items() if k not in skip}
    options["encoder_options"] = dict(options["encoder_options"])
    stats = process_video(args.input, args.output, **options)
    if not args.quiet:
        print(
            f"wrote {args.output}: {stats.frames} frames in {stats.chunks} chunks, "
            f"{stats.wall_seconds:.1f}s ({stats.fps:.1f} fps) on {stats.workers} worker(s) "
            f"[{', '.join(stats.providers)}]"
        )
    return EXIT_OK


def _cmd_archive(args: argparse.Namespace) -> int:
    from raypipe.archive_report import format_report
    from raypipe.distributed.archive import process_archive

    skip = ("command", "inputs", "output_dir", "resume", "report_path", "overwrite", "verbose")
    options = {k: v for k, v in vars(args).items() if k not in skip}
    options["encoder_options"] = dict(options["encoder_options"])
    report = process_archive(
        args.inputs,
        args.output_dir,
        resume=args.resume,
        report_path=args.report_path,
        **options,
    )
    if not args.quiet:
        print(format_report(report.rows))
        print(f"report: {report.path}")
    return report.exit_code


def _cmd_build_engines(args: argparse.Namespace) -> int:
    from raypipe.config import RuntimeConfig
    from raypipe.distributed.trt_engines import build_engines, parse_size

    sizes = [parse_size(s) for s in args.sizes]
    records = build_engines(
        args.model,
        args.cache,
        sizes,
        batch_size=args.batch_size,
        precision=args.precision,
        runtime=RuntimeConfig(address=args.address),
    )
    for r in records:
        print(f"{r['gpu']} {r['size']}: engine {r['digest'][:12]} ready ({r['seconds']}s)")
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from raypipe.archive_report import format_report, read_report

    if args.path.endswith(".json"):
        from raypipe.errors import ConfigError
        from raypipe.report import draw_report

        if not args.output:
            raise ConfigError("drawing stats needs -o REPORT.png")
        if not os.path.exists(args.path):
            raise InputNotFoundError(f"stats '{args.path}' does not exist")
        draw_report(args.path, args.output)
        print(f"wrote {args.output}")
        return EXIT_OK
    try:
        rows = read_report(args.path)
    except FileNotFoundError as e:
        raise InputNotFoundError(f"report '{args.path}' does not exist") from e
    print(format_report(rows))
    return EXIT_OK


def _cmd_probe(args: argparse.Namespace) -> int:
    from raypipe.media import plan_chunks, probe

    info = probe(args.input)
    plan = plan_chunks(info, ChunkConfig(chunk_frames=args.chunk_frames))
    if args.json:
        doc = info.to_dict()
        doc["chunks"] = [c.to_dict() for c in plan.chunks]
        print(json.dumps(doc))
        return EXIT_OK
    print(
        f"{info.uri}: {info.format_name}, video stream {info.stream_index}: {info.codec} "
        f"{info.width}x{info.height} {info.pix_fmt}, {float(info.rate):.3f} fps "
        f"({info.rate_num}/{info.rate_den}), time base {info.time_base_num}/{info.time_base_den}"
    )
    print(
        f"  {info.n_frames} frames, {len(info.keyframe_pts)} keyframes, "
        f"{info.duration_seconds:.3f}s from {info.start_seconds:.3f}s, "
        f"rotation {info.rotation_degrees}°"
    )
    for line in _picture_lines(info.picture_format):
        print(f"  {line}")
    for s in info.streams:
        tags = ", ".join(
            x
            for x in (
                s.language and f"language {s.language}",
                s.title and f"title {s.title!r}",
                *s.dispositions,
            )
            if x
        )
        print(f"  stream {s.index}: {s.kind} {s.codec} (copied{'; ' + tags if tags else ''})")
    print(f"  plan: {len(plan)} chunks of about {args.chunk_frames} frames")
    for c in plan.chunks:
        seek = "start" if c.seek_pts is None else c.seek_pts
        print(f"    {c.chunk_id}: [{c.start_pts}, {c.end_pts}) {c.n_frames} frames, seek {seek}")
    return EXIT_OK


def _picture_lines(picture: PictureFormat) -> list[str]:
    """What `raypipe probe` says of the pictures: size as shown, depth, chroma, colour, HDR."""
    width, height = picture.upright_size
    c = picture.colour
    lines = [
        f"shown {width}x{height} (coded {picture.coded_width}x{picture.coded_height}, "
        f"rotation {picture.rotation_degrees}° counter-clockwise), "
        f"{picture.bit_depth}-bit {picture.chroma}",
        f"colour: primaries {c.primaries}, transfer {c.transfer}, matrix {c.matrix}, "
        f"range {c.range} (converted as {picture.matrix}, {picture.range})",
    ]
    hdr = picture.hdr
    if hdr is not None:
        parts = []
        if hdr.has_mastering:
            parts.append(
                f"mastering display {(hdr.max_luminance or 0) / 10000:g}/"
                f"{(hdr.min_luminance or 0) / 10000:g} cd/m2"
            )
        if hdr.has_light_level:
            parts.append(f"MaxCLL {hdr.max_cll}, MaxFALL {hdr.max_fall}")
        lines.append(f"HDR10: {', '.join(parts)}")
    return lines


def _cmd_model(args: argparse.Namespace) -> int:
    from raypipe import storage
    from raypipe.infer.builtin import BUILTIN_MODELS, builtin_bytes

    if args.model_command == "list":
        for name in BUILTIN_MODELS:
            print(f"builtin:{name}")
        return EXIT_OK
    name = args.name.removeprefix("builtin:")
    data = builtin_bytes(name)
    storage.write_bytes(args.path, data)
    print(f"wrote builtin:{name} to {args.path} ({len(data)} bytes)")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from raypipe.distributed.pipeline import process_video
    from raypipe.testing import ClipSpec, make_clip

    os.makedirs(args.output_dir, exist_ok=True)
    source = os.path.join(args.output_dir, "sample.mp4")
    output = os.path.join(args.output_dir, "sample.processed.mp4")
    stats_path = os.path.join(args.output_dir, "stats.json")
    make_clip(source, ClipSpec(n_frames=120, width=320, height=180, gop=24, bframes=2, audio="aac"))
    stats = process_video(
        source,
        output,
        model=args.model,
        chunk_frames=24,
        overwrite=True,
        stats_path=stats_path,
        quiet=args.quiet,
    )
    print(
        f"demo: made {source} (120 frames with audio), ran {args.model} over it in "
        f"{stats.chunks} chunks on {stats.workers} worker(s) [{', '.join(stats.providers)}]"
    )
    print(f"demo: output {output}")
    report = os.path.join(args.output_dir, "report.png")
    try:
        from raypipe.report import draw_report

        draw_report(stats_path, report)
    except ImportError:  # matplotlib is an extra
        print(f"demo: stats {stats_path}; draw them with `raypipe report {stats_path} -o {report}`")
    else:
        print(
            f"demo: stats {stats_path}, run report {report} "
            f"(redraw: `raypipe report {stats_path} -o {report}`)"
        )
    return EXIT_OK


def _cmd_doctor(args: argparse.Namespace) -> int:
    from raypipe.doctor import examine, format_report
    from raypipe.errors import DeviceUnavailableError

    report = examine(engine_cache=args.engine_cache)
    problem = report["verdicts"][args.device]
    if args.json:
        print(json.dumps({"device": args.device, "ok": not problem, **report}, indent=1))
    else:
        print(format_report(report, args.device))
    if problem:
        raise DeviceUnavailableError(f"--device {args.device} would fail here: {problem}")
    return EXIT_OK


_COMMANDS: dict[str, Any] = {
    "archive": _cmd_archive,
    "build-engines": _cmd_build_engines,
    "report": _cmd_report,
    "run": _cmd_run,
    "probe": _cmd_probe,
    "model": _cmd_model,
    "demo": _cmd_demo,
    "doctor": _cmd_doctor,
}

if __name__ == "__main__":
    raise SystemExit(main())
