"""The ``raypipe`` subcommands other than ``run`` and ``archive``: build-engines, report,
probe, model, demo and doctor (:mod:`raypipe.cli` parses and dispatches). Each raises a
:class:`~raypipe.errors.RaypipeError` for bad input, which the command prints as one line.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex

from raypipe import storage
from raypipe.config import ChunkConfig
from raypipe.errors import (
    ConfigError,
    InputNotFoundError,
    OutputExistsError,
    counted,
    one_line,
)

EXIT_OK = 0
DEFAULT_ENGINE_SIZE = "1920x1080"
"""build-engines' default profile: 1080p frames, batches of 1 to ``--batch-size`` (8; fewer
for large frames, as a run's calls get them: :func:`raypipe.infer.models.gpu_profile`)."""


def parse_size(text: str) -> tuple[int, int]:
    """``1920x1080`` → (height 1080, width 1920); an argparse type (bad usage: exit 2,
    naming the option, as the other options' checks do)."""
    width, sep, height = text.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit() or not int(width) or not int(height):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 1920x1080, got {text!r}")
    return int(height), int(width)


def cmd_build_engines(args: argparse.Namespace) -> int:
    from raypipe.config import RuntimeConfig, engine_cache_from_env
    from raypipe.distributed.trt_engines import build_engines
    from raypipe.infer.trt.providers import engine_cache_url

    if args.model and args.model_option and args.model != args.model_option:
        raise ConfigError(
            f"two models given ({args.model!r} and --model {args.model_option!r}); give one"
        )
    model = args.model or args.model_option
    if not model:
        raise ConfigError(
            "no model given; pass it first: raypipe build-engines MODEL (builtin:NAME or a "
            "path/URL of an .onnx)"
        )
    cache = engine_cache_url(args.cache or engine_cache_from_env())
    sizes = args.sizes or [parse_size(DEFAULT_ENGINE_SIZE)]
    records = build_engines(
        model,
        cache,
        sizes,
        batch_size=args.batch_size,
        precision=args.precision,
        runtime=RuntimeConfig(address=args.address),
    )
    for r in records:
        print(f"{r['gpu']} {r['size']}: engine {r['digest'][:12]} ready ({r['seconds']}s)")
    print(f"engines of {model} in {cache}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from raypipe.archive_report import format_report, read_report, run_report_path

    path = args.path
    if path.endswith(".json"):
        return _draw_stats(path, args.output)
    if not path.endswith(".parquet"):
        raise ConfigError(
            f"report shows an archive report (.parquet) or draws run stats (.json), got "
            f"{path!r}; e.g. `raypipe report OUTPUT_DIR/_raypipe-report.parquet`"
        )
    if args.output:  # it was ignored (a sweep)
        raise ConfigError(
            f"-o draws run stats (.json) as a picture; an archive report prints as a table "
            f"(the archive drew its run's picture beside it: {run_report_path(path)})"
        )
    try:
        rows = read_report(path)
    except FileNotFoundError as e:
        raise InputNotFoundError(f"report '{path}' does not exist") from e
    except (OSError, ValueError) as e:  # a directory, not Parquet (ArrowInvalid), ...
        raise ConfigError(f"'{path}' is not a readable Parquet report: {one_line(e)}") from e
    if rows and "status" not in rows[0]:
        raise ConfigError(
            f"'{path}' has columns {list(rows[0])}, not an archive report's (uri, status, ...)"
        )
    print(format_report(rows))
    return EXIT_OK


def _draw_stats(path: str, output: str | None) -> int:
    from raypipe.report import draw_report, load_stats

    if not output:
        raise ConfigError(f"drawing stats needs -o REPORT.png: raypipe report {path} -o report.png")
    if not output.lower().endswith(".png"):  # a .jpg got PNG bytes (a sweep)
        raise ConfigError(f"the picture is a PNG: name it REPORT.png, got {output!r}")
    if not os.path.exists(path) and "://" not in path:
        raise InputNotFoundError(f"stats '{path}' does not exist")
    _check_local_parent(output)
    try:
        stats = load_stats(path)
    except FileNotFoundError as e:
        raise InputNotFoundError(f"stats '{path}' does not exist") from e
    except (OSError, ValueError) as e:  # a directory, not JSON, not a stats document
        raise ConfigError(f"'{path}' is not raypipe run stats (--stats): {one_line(e)}") from e
    draw_report(stats, output)
    print(f"wrote {output}")
    return EXIT_OK


def _check_local_parent(path: str) -> None:
    """Fail before any work when a local output ``path`` cannot be written."""
    if "://" not in path:
        storage.check_file_path("output", path)


def cmd_probe(args: argparse.Namespace) -> int:
    from raypipe.media import plan_chunks, probe
    from raypipe.media.describe import probe_lines
    from raypipe.media.probe import make_video_id

    # the video's id as a run names it, from the absolute path: a relative one gave chunk
    # ids the run's stats did not have (a sweep)
    info = probe(args.input, video_id=make_video_id(storage.absolute(args.input)))
    chunking = ChunkConfig(chunk_frames=args.chunk_frames, chunk_mib=args.chunk_mib)
    plan = plan_chunks(info, chunking)
    if args.json:
        doc = info.to_dict()
        doc["chunks"] = [c.to_dict() for c in plan.chunks]
        print(json.dumps(doc))
    else:
        frames = chunking.frames_per_chunk(info.width, info.height)
        # a name that is not UTF-8 in its bytes' \xNN: a UTF-8 terminal's print refused it
        print(storage.shown_path("\n".join(probe_lines(info, plan, frames))))
    return EXIT_OK


def cmd_model(args: argparse.Namespace) -> int:
    from raypipe.infer.builtin import builtin_bytes
    from raypipe.infer.model_info import builtin_table, describe
    from raypipe.infer.sidecar import builtin_spec, sidecar_paths, spec_to_dict

    if args.model_command == "list":
        print("\n".join(builtin_table()))
        return EXIT_OK
    if args.model_command == "show":
        info = describe(args.name, run_check=True)
        print("\n".join(info.lines()))
        if info.run_error is not None:  # what it is, then why a run would refuse it (exit 1)
            raise info.run_error
        return EXIT_OK
    name = args.name.removeprefix("builtin:")
    if name == args.name and (name.endswith(".onnx") or "/" in name or "://" in name):
        raise ConfigError(
            f"model export writes a built-in model (builtin:NAME) as an .onnx file; "
            f"'{args.name}' is a model file already (`raypipe model list` names the built-ins)"
        )
    if not args.path.lower().endswith(".onnx"):
        raise ConfigError(
            f"model export writes an .onnx file, got {args.path!r}; name it NAME.onnx (its "
            "spec, where it has one, goes beside it as NAME.raypipe.json)"
        )
    data = builtin_bytes(name)
    # its spec beside it, as a sidecar: a temporal built-in's window, state and warm-up,
    # an analysis model's output kind (without them the file ran differently, or not)
    spec = spec_to_dict(builtin_spec(name))
    sidecars = sidecar_paths(args.path)
    sidecar = sidecars[0] if spec else ""
    _check_local_parent(args.path)
    # an earlier model's spec beside the file would be read as this one's: an exported
    # image model over an analysis one ran as an analysis model (a sweep)
    stale = [p for p in sidecars if p != sidecar and storage.exists(p)]
    for path in [p for p in (args.path, sidecar) if p and storage.exists(p)] + stale:
        if not args.overwrite:
            raise OutputExistsError(f"'{path}' exists; pass --overwrite to replace it")
    storage.write_bytes(args.path, data)
    for path in stale:
        storage.remove_file(path)
    if sidecar:
        storage.write_bytes(sidecar, (json.dumps(spec, indent=1) + "\n").encode())
    beside = f" and its spec to {sidecar}" if sidecar else ""
    print(f"wrote builtin:{name} to {args.path} ({len(data)} bytes){beside}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from raypipe.distributed.pipeline import process_video
    from raypipe.infer.model_info import describe
    from raypipe.media.sample import write_sample

    if os.path.exists(args.output_dir) and not os.path.isdir(args.output_dir):
        raise ConfigError(f"--output-dir '{args.output_dir}' is a file; give a directory")
    # the model first: a missing one left the new folder behind (a sweep)
    table = describe(args.model, measure_scale=False).kind == "tensor"  # not a video
    os.makedirs(args.output_dir, exist_ok=True)
    source = os.path.join(args.output_dir, "sample.mp4")
    output = os.path.join(args.output_dir, "sample.table" if table else "sample.processed.mp4")
    stats_path = os.path.join(args.output_dir, "stats.json")
    write_sample(source, n_frames=120, width=320, height=180, gop=24)
    stats = process_video(
        source,
        output,
        model=args.model,
        chunk_frames=24,
        overwrite=True,
        stats_path=stats_path,
        quiet=args.quiet,
        verbose=args.verbose,
    )
    print(
        f"demo: made {source} (120 frames with audio), ran {args.model} over it in "
        f"{counted(stats.chunks, 'chunk')} on {counted(stats.workers, 'worker')} "
        f"[{', '.join(stats.providers)}]"
    )
    if table:
        print(f"demo: output {output} (Parquet: pandas.read_parquet({output!r}))")
    else:
        print(f"demo: output {output}")
    report = os.path.join(args.output_dir, "report.png")
    # quoted where a shell needs it: a folder with a space broke the pasted command
    redraw = shlex.join(["raypipe", "report", stats_path, "-o", report])
    try:
        from raypipe.report import draw_report

        draw_report(stats_path, report)
    except ImportError:  # matplotlib is an extra
        print(f"demo: stats {stats_path}; draw them with `{redraw}`")
    else:
        print(f"demo: stats {stats_path}, run report {report} (redraw: `{redraw}`)")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from raypipe.doctor import examine, format_report
    from raypipe.errors import ClusterError, DeviceUnavailableError

    report = examine(engine_cache=args.engine_cache)
    problem = report["verdicts"][args.device]
    temp = report["ray"]["temp_problem"]
    if args.json:
        print(
            json.dumps({"device": args.device, "ok": not problem and not temp, **report}, indent=1)
        )
    else:
        print(format_report(report, args.device))
    if problem:
        raise DeviceUnavailableError(f"--device {args.device} would fail here: {problem}")
    if temp:
        raise ClusterError(f"a local Ray would not start here: {temp}")
    return EXIT_OK
