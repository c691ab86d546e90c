"""The ``raypipe`` command.

``main(argv)`` returns the exit code: 0 success, 1 an error (one line on stderr:
``raypipe: error: TypeName: what happened; what to do``; ``--verbose`` prints the
traceback before it), 2 bad usage (one line: ``raypipe run: error: ...``), 3 an archive in
which some videos failed (see its report), 130 interrupted (Ctrl-C), 143 terminated
(SIGTERM: ``kill``, ``ray job stop``, a container's stop), 141 the reader of the output
went away (``raypipe probe clip | head -1``: nothing more is printed, as ``cat`` does).
The command itself (the ``raypipe`` script, ``python -m raypipe.cli``, ``jobs/``) is
:func:`entry`: ``main``, then the process ends with that code without the interpreter's
finalization (:mod:`raypipe.exiting`). Every subcommand's ``--help`` ends with examples
(:data:`EXAMPLES`); ``--verbose`` also leaves Ray's own log lines on the terminal
(:mod:`raypipe.distributed.ray_logs`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn

from raypipe import cli_tools
from raypipe.cli_help import EXIT_USAGE, Parser, TerminalHandler, subcommand
from raypipe.cli_tools import DEFAULT_ENGINE_SIZE, parse_size
from raypipe.config import (
    DECODERS,
    DEVICES,
    HANDOFFS,
    STAGES,
    ChunkConfig,
    ModelConfig,
    RuntimeConfig,
    ray_address_from_env,
)
from raypipe.errors import ConfigError, RaypipeError, one_line
from raypipe.exiting import (
    end_process,
    exit_status,
    ignore_interrupts,
    interrupted_status,
    raise_on_sigterm,
    run_after_ray,
)

EXIT_OK, EXIT_ERROR, EXIT_BROKEN_PIPE = 0, 1, 141
__all__ = ["EXIT_USAGE", "build_parser", "entry", "main"]


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


def _whole(least: int) -> Any:
    """An argparse type: an integer of at least ``least`` (bad usage, exit 2, naming the
    option, where the run's own check said ``chunk_frames must be ...``, exit 1)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = least - 1
        if value < least:
            raise argparse.ArgumentTypeError(f"expected an integer >= {least}, got {text!r}")
        return value

    return parse


def _above_zero(text: str) -> float:
    """An argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _chunk_mib(text: str) -> float | None:
    """``--chunk-mib``: MiB > 0, or 0 for no cap (``None``)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected MiB >= 0 (0: no cap), got {text!r}")
    return value or None


def _add_run_options(p: argparse.ArgumentParser, *, run_only: bool = False) -> None:
    p.add_argument(
        "--model",
        default="builtin:identity",
        help="builtin:NAME or path/URL of an .onnx file (default: builtin:identity)",
    )
    p.add_argument(
        "--processor", metavar="FILE.py:CLASS", help="run a raypipe.Processor (or MODULE:CLASS)"
    )
    p.add_argument(
        "--chunk-frames", type=_whole(1), default=64, help="frames per chunk, about (default 64)"
    )
    p.add_argument(
        "--chunk-mib",
        type=_chunk_mib,
        default=ChunkConfig.chunk_mib,
        help="at most this many MiB of a chunk's frames, decoded and as the model outputs "
        "them (RGB); larger frames make shorter chunks (default 1024: 21 frames of 4K "
        "through a model that keeps the size; 0: no cap)",
    )
    p.add_argument(
        "--no-split-gops",
        dest="split_gops",
        action="store_false",
        help="never split a GOP longer than --chunk-frames",
    )
    p.add_argument(
        "--workers",
        type=_whole(1),
        default=None,
        help="inference actors (default: one per GPU; without GPUs one per two of the "
        "cluster's CPUs, each decoding and encoding its own chunks: see --stages)",
    )
    p.add_argument(
        "--workers-per-gpu",
        type=_whole(1),
        default=1,
        help="inference actors sharing one GPU (num_gpus=1/k each; default 1)",
    )
    p.add_argument(
        "--actor-cpus",
        dest="actor_num_cpus",
        type=_above_zero,
        default=1.0,
        help="CPUs each inference actor reserves (default 1)",
    )
    p.add_argument(
        "--stages",
        choices=STAGES,
        default="auto",
        help="where a chunk is decoded and encoded: auto: in the inference actors when they "
        "run on the CPU (the frames never pass through Ray's object store), in CPU tasks "
        "around GPU actors (default); split: always in tasks; fused: always in the actors",
    )
    p.add_argument(
        "--batch-size",
        type=_whole(1),
        default=8,
        help="frames per model call (default 8; fewer for large frames, at most 256 MiB a "
        "call as the model takes them: 2 at 4K)",
    )
    p.add_argument(
        "--every-n-frames",
        type=_whole(1),
        default=1,
        metavar="N",
        help="analysis models: process frames 0, N, 2N, ... (default every frame)",
    )
    p.add_argument(
        "--sample-fps",
        type=_above_zero,
        default=None,
        metavar="F",
        help="analysis models: process the first frame of each 1/F seconds",
    )
    p.add_argument(
        "--tile",
        type=_whole(1),
        default=None,
        metavar="PX",
        help="run the model on PX x PX tiles (large frames)",
    )
    p.add_argument(
        "--tile-overlap",
        type=_whole(0),
        default=None,
        metavar="PX",
        help="context around each tile, at least the model's receptive field",
    )
    p.add_argument(
        "--pad-multiple", type=_whole(1), metavar="PX", help="pad to multiples of PX for the model"
    )
    p.add_argument(
        "--window", type=_window, metavar="B,A", help="temporal model: frames before,after each"
    )
    p.add_argument(
        "--warmup-frames",
        type=_whole(0),
        metavar="K",
        help="recurrent model: warm-up frames per chunk",
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
        default=ModelConfig.precision,
        help=f"TensorRT engine precision (default {ModelConfig.precision})",
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
        "--handoff",
        choices=HANDOFFS,
        default="auto",
        help="how decoded frames reach the model: auto: as YUV (half the bytes; converted to "
        "the same RGB in the model's graph) to actors on a GPU, else as RGB (default); rgb; "
        "yuv: wherever the source and model allow it (slower on a CPU)",
    )
    p.add_argument(
        "--codec",
        default="auto",
        help="video encoder: auto (default: libx264, libvpx-vp9 for .webm, as ffmpeg picks), "
        "libx264, libx265, libvpx-vp9, libsvtav1 (AV1), ffv1, libx264rgb, prores_ks and "
        "dnxhd (DNxHR; "
        ".mov), h264_nvenc, hevc_nvenc, av1_nvenc (NVENC falls back to libx264/libx265/AV1 "
        "software, saying so, where the GPU has no NVENC: A100, H100)",
    )
    p.add_argument(
        "--crf",
        type=_whole(0),
        default=18,
        help="x264/x265 quality (0..51), VP9 constant quality and SVT-AV1's crf (0..63), "
        "lower is better (default 18)",
    )
    p.add_argument(
        "--preset",
        default="medium",
        help="x264/x265 preset, VP9 speed, SVT-AV1 preset (medium: 8; or its own number "
        "-1..13) (default medium)",
    )
    p.add_argument(
        "--pix-fmt",
        default=None,
        help="encoder pixel format (default: the source's bit depth and chroma, or the "
        "nearest the encoder writes)",
    )
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
    if run_only:
        p.add_argument(
            "--no-service",
            dest="service",
            action="store_false",
            help="run the video in this command even where a `raypipe serve` runs on the "
            "cluster at --address (default: hand the run to it)",
        )
    p.add_argument(
        "--stats",
        dest="stats_path",
        default=None,
        metavar="PATH",
        help="write run statistics as JSON to PATH",
    )
    if run_only:  # an archive replaces what is not its finished output, and keeps what is
        p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="raypipe",
        description="Process video with ONNX models on a Ray cluster; `raypipe COMMAND --help` "
        "shows a command's options and examples.",
    )
    from raypipe import __version__

    parser.add_argument("--version", action="version", version=f"raypipe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = subcommand(sub, "run", "process one video")
    run.add_argument("input", help="input video: path or fsspec URL")
    run.add_argument("output", help="output video path (.mp4, .mkv, .mov, ...)")
    _add_run_options(run, run_only=True)

    archive = subcommand(
        sub,
        "archive",
        "process every video of a folder, glob, URI list or manifest (resumable)",
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

    engines = subcommand(
        sub,
        "build-engines",
        "prebuild TensorRT engines into a shared cache (GPU cluster)",
        description="One engine per GPU kind of the cluster and frame size; fails with one "
        "line where the cluster has no GPU.",
    )
    engines.add_argument("model", nargs="?", metavar="MODEL", help="builtin:NAME or path/URL")
    engines.add_argument("--model", dest="model_option", metavar="MODEL", help="same as MODEL")
    engines.add_argument(
        "--cache",
        default=None,
        help="engine cache URL (default RAYPIPE_ENGINE_CACHE, else the node-local directory "
        "runs use without a cache)",
    )
    engines.add_argument(
        "--size",
        dest="sizes",
        action="append",
        type=parse_size,
        default=None,
        metavar="WxH",
        help=f"frame size to build for, repeatable (default {DEFAULT_ENGINE_SIZE})",
    )
    engines.add_argument(
        "--batch-size", type=_whole(1), default=8, help="largest batch of the profile (default 8)"
    )
    engines.add_argument(
        "--precision",
        choices=("fp32", "fp16"),
        default=ModelConfig.precision,
        help=f"engine precision, as the runs will be given (default {ModelConfig.precision}, "
        "a run's default)",
    )
    engines.add_argument("--address", default=None, help="Ray cluster address")

    report = subcommand(
        sub,
        "report",
        "show an archive report (.parquet) as a table, or draw run stats (.json) as a PNG",
    )
    report.add_argument("path", help="a _raypipe-report.parquet, or a --stats JSON")
    report.add_argument("-o", "--output", default=None, help="PNG to draw the stats into")

    probe = subcommand(
        sub, "probe", "show a video's streams, rotation, colour, bit depth, chroma and chunk plan"
    )
    probe.add_argument("input", help="a video path or URL")
    probe.add_argument(
        "--chunk-frames",
        type=_whole(1),
        metavar="N",
        default=64,
        help="frames per chunk, about, as a run would be given (default 64)",
    )
    probe.add_argument(
        "--chunk-mib",
        type=_chunk_mib,
        metavar="MIB",
        default=ChunkConfig.chunk_mib,
        help="MiB cap of a chunk's frames, as a run would be given (default "
        f"{ChunkConfig.chunk_mib:g}; 0: no cap)",
    )
    probe.add_argument("--json", action="store_true", help="machine-readable output")

    model = subcommand(sub, "model", "the built-in models, and what a model file is")
    model_sub = model.add_subparsers(dest="model_command", required=True, metavar="COMMAND")
    subcommand(
        model_sub,
        "list",
        "list the built-in models: kind (image or tensor), scale and what each does",
        key="model list",
    )
    show = subcommand(
        model_sub,
        "show",
        "a model's inputs, outputs, kind, scale and resolved spec, and where the spec came "
        "from (built-in, sidecar or defaults)",
        key="model show",
    )
    show.add_argument("name", metavar="NAME|PATH", help="builtin:NAME, or a path/URL of an .onnx")
    export = subcommand(
        model_sub, "export", "write a built-in model as an .onnx file", key="model export"
    )
    export.add_argument("name", help="builtin:NAME")
    export.add_argument("path", help="destination .onnx path")
    export.add_argument("--overwrite", action="store_true", help="replace PATH if it exists")

    doctor = subcommand(
        sub,
        "doctor",
        "what this machine and install can do (GPU providers, drivers, codecs) and why not",
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

    serve = subcommand(
        sub,
        "serve",
        "keep a warm driver on a running cluster; `raypipe run --address` hands its runs to it",
        description="Runs until Ctrl-C (or SIGTERM), or until its cluster stops answering. "
        "A handed-over run's first chunk was decoded 1.6 s after the command started, "
        "against 2.9 s as its own driver (benchmarks/start.py, 2 cores). A command hands its "
        "run over when it runs on the same machine from the same raypipe install; otherwise, "
        "or with --no-service, it runs the video itself.",
    )
    serve.add_argument(
        "--address", default=None, help="the running Ray cluster (default: RAY_ADDRESS)"
    )
    serve.add_argument(
        "--max-runs",
        type=int,
        default=200,  # raypipe.distributed.service.DEFAULT_MAX_RUNS (cli imports no Ray)
        metavar="N",
        help="start again as a new process after N runs (a driver keeps some memory per "
        "run; meanwhile commands run their videos themselves; default 200)",
    )

    demo = subcommand(sub, "demo", "make a sample clip and process it on a local Ray")
    demo.add_argument(
        "--output-dir", default="raypipe-demo", help="where to write (default ./raypipe-demo)"
    )
    demo.add_argument(
        "--model",
        default="builtin:invert",
        help="builtin:NAME or an .onnx (default builtin:invert); an analysis model "
        "(builtin:phash) writes a Parquet table instead of a video",
    )
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = TerminalHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("raypipe: %(levelname)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    verbose = getattr(args, "verbose", False)
    try:
        return _COMMANDS[args.command](args)
    except RaypipeError as e:
        if verbose:  # the traceback, after the worker's where it failed (its cause)
            traceback.print_exc(file=sys.stderr)
        print(f"raypipe: error: {type(e).__name__}: {one_line(e)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return interrupted_status()
    except BrokenPipeError:
        # The reader went away (`| head -1`): stop printing, quietly; point stdout at
        # /dev/null so Python's flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as e:  # noqa: BLE001 - not foreseen: still one line, never a traceback
        if verbose:
            traceback.print_exc(file=sys.stderr)
        print(
            f"raypipe: error: {type(e).__name__}: {one_line(e)} (unexpected: `--verbose` "
            "shows the traceback; please report it)",
            file=sys.stderr,
        )
        return EXIT_ERROR


def entry(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``raypipe`` command's entry point (and ``python -m raypipe.cli``'s, and the jobs'):
    :func:`main`, then Ray shut down without its exit wait where nothing needs it
    (:func:`raypipe.distributed.cluster.end_for_exit`), then the process ends with its exit
    code through :func:`raypipe.exiting.end_process` (exit steps done, no interpreter
    finalization). SIGTERM ends it as Ctrl-C does (:class:`raypipe.exiting.Terminated`)."""
    raise_on_sigterm()
    try:
        status = main(argv)
    except SystemExit as e:  # argparse's --help and usage errors: already printed
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
        status = exit_status(e.code)
    # The run has ended and its status stands: a Ctrl-C now (a second press, 0.2 s after
    # the first) cut Ray's shutdown short and the command ended with status 1, its
    # processes left behind. Shutting down takes under a second; SIGKILL still ends it.
    ignore_interrupts()
    cluster = sys.modules.get("raypipe.distributed.cluster")  # imported only if Ray was used
    if cluster is not None:
        try:
            cluster.end_for_exit()
        except Exception as e:  # noqa: BLE001 - the run's status stands; Ray's handler retries
            print(f"raypipe: warning: shutting Ray down: {one_line(e)}", file=sys.stderr)
    run_after_ray()  # an interrupted run's work folder, again: no worker writes now
    end_process(status)


def _outputs_kept(*paths: str | None) -> None:
    """Refuse a relative local output in a Ray job that uploaded its working dir: the job
    runs in Ray's temporary copy of it, where the output was written and then lost with
    the copy (the job said it wrote ``rel_out.mp4`` and SUCCEEDED)."""
    config = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not config:
        return
    try:
        working_dir = (json.loads(config).get("runtime_env") or {}).get("working_dir")
    except (ValueError, AttributeError):
        return
    if not working_dir:
        return
    for path in paths:
        if path and "://" not in path and not os.path.isabs(path):
            raise ConfigError(
                f"'{path}' is a relative path, and this Ray job runs in a temporary copy of "
                "its uploaded working dir, which goes with the job: give an absolute path "
                "on storage the cluster keeps (/mnt/shared/...) or s3://..."
            )


def _cmd_run(args: argparse.Namespace) -> int:
    from raypipe.distributed import service

    _outputs_kept(args.output, args.stats_path)

    skip = ("command", "input", "output", "service")
    options = {k: v for k, v in vars(args).items() if k not in skip}
    options["encoder_options"] = dict(options["encoder_options"])
    summary = None
    if args.service and (args.address or ray_address_from_env()):
        from raypipe.distributed.cluster import connect

        connect(RuntimeConfig(address=args.address), verbose=args.verbose)
        summary = service.hand_over(args.input, args.output, options)
    if summary is None:
        from raypipe.distributed.pipeline import process_video

        summary = service.stats_summary(process_video(args.input, args.output, **options))
    if not args.quiet:
        print(service.summary_line(args.output, summary))
    return EXIT_OK


_HELD_ACROSS_RESTART = {signal.SIGINT, signal.SIGTERM}
"""Signals the service holds (blocked) while it starts again as a new process, from the
old one's Ray shutdown on: a mask survives ``execv``, so a Ctrl-C or SIGTERM that comes
meanwhile waits, pending, until the new process's handlers are in place
(:func:`_cmd_serve` lets them through first). Before, one that came before the new
process had a handler ended it by the signal's default action, said nowhere, and one that
cut the old one's ``ray.shutdown`` short ended it with status 1 (a Ray thread touched the
core worker Ray had shut down)."""


def _cmd_serve(args: argparse.Namespace) -> int:
    from raypipe.distributed import service

    signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD_ACROSS_RESTART)  # see its docstring
    address = args.address or ray_address_from_env()
    if not address:
        raise ConfigError(
            "raypipe serve needs a running cluster: --address HOST:PORT (as `ray start --head` "
            "printed it) or RAY_ADDRESS"
        )
    if args.max_runs < 1:
        raise ConfigError(f"--max-runs must be at least 1, got {args.max_runs}")
    service.serve(address, verbose=args.verbose, max_runs=args.max_runs)
    # max_runs done: the same command again, in this process's place (same pid)
    signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_ACROSS_RESTART)  # Ray's shutdown too
    import ray

    ray.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    again = ["serve", "--address", address, "--max-runs", str(args.max_runs)]
    again += ["--verbose"] if args.verbose else []
    os.execv(sys.executable, [sys.executable, "-m", "raypipe.cli", *again])


ARCHIVE_TABLE_ROWS = 50
"""Rows of the table ``raypipe archive`` prints as it ends (the failed first);
``raypipe report`` prints them all."""


def _cmd_archive(args: argparse.Namespace) -> int:
    from raypipe.archive_report import format_report
    from raypipe.distributed.archive import process_archive

    _outputs_kept(args.output_dir, args.report_path, args.stats_path)
    skip = ("command", "inputs", "output_dir", "resume", "report_path", "overwrite")
    options = {k: v for k, v in vars(args).items() if k not in skip}
    options["encoder_options"] = dict(options["encoder_options"])
    report = process_archive(
        args.inputs,
        args.output_dir,
        resume=args.resume,
        report_path=args.report_path,
        **options,
    )
    if not args.quiet:  # 50,000 videos printed 50,000 lines (a sweep)
        print(format_report(report.rows, limit=ARCHIVE_TABLE_ROWS, path=report.path))
        print(f"report: {report.path}")
    return report.exit_code


_COMMANDS: dict[str, Any] = {
    "archive": _cmd_archive,
    "build-engines": cli_tools.cmd_build_engines,
    "report": cli_tools.cmd_report,
    "run": _cmd_run,
    "serve": _cmd_serve,
    "probe": cli_tools.cmd_probe,
    "model": cli_tools.cmd_model,
    "demo": cli_tools.cmd_demo,
    "doctor": cli_tools.cmd_doctor,
}

if __name__ == "__main__":
    entry()
