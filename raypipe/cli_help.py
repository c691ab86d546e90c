"""How the ``raypipe`` command presents itself: every subcommand's help ends with
examples (:data:`EXAMPLES`), bad usage is one line (:class:`Parser`), and raypipe's own
warnings never land glued onto a progress line drawn in place (:class:`TerminalHandler`).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any, NoReturn

EXIT_USAGE = 2

EXAMPLES: dict[str, list[str]] = {
    "run": [
        "raypipe run in.mp4 out.mp4 --model builtin:sharpen",
        "raypipe run in.mp4 out.mkv --model model.onnx --device gpu --chunk-frames 32",
        "raypipe run in.mp4 hashes/ --model builtin:phash --sample-fps 1",
        "raypipe run s3://bucket/film.mp4 film.mp4 --model builtin:upscale2x --address head:6379",
    ],
    "archive": [
        "raypipe archive videos/ processed/ --model builtin:sharpen",
        "raypipe archive 's3://bucket/videos/**/*.mp4' s3://bucket/out/ --device gpu",
        "raypipe archive list.txt out/ --no-resume --report out/report.parquet",
    ],
    "build-engines": [
        "raypipe build-engines model.onnx",
        "raypipe build-engines s3://bucket/models/restore.onnx --cache s3://bucket/engines "
        "--size 3840x2160 --precision fp16",
    ],
    "report": [
        "raypipe report processed/_raypipe-report.parquet",
        "raypipe report stats.json -o report.png",
    ],
    "probe": ["raypipe probe in.mp4", "raypipe probe in.mp4 --json --chunk-frames 32"],
    "model": [
        "raypipe model list",
        "raypipe model show builtin:phash",
        "raypipe model show models/unet.onnx",
        "raypipe model export builtin:upscale2x upscale2x.onnx",
    ],
    "model list": ["raypipe model list", "raypipe model list | grep tensor"],
    "model show": ["raypipe model show builtin:upscale2x", "raypipe model show s3://b/m.onnx"],
    "model export": [
        "raypipe model export builtin:sharpen sharpen.onnx",
        "raypipe model export builtin:phash phash.onnx",
    ],
    "serve": [
        "raypipe serve --address 127.0.0.1:6379",
        "raypipe serve --address head-node:6379 --verbose",
    ],
    "demo": ["raypipe demo", "raypipe demo --output-dir /tmp/demo --model builtin:sharpen"],
    "doctor": ["raypipe doctor", "raypipe doctor --device gpu", "raypipe doctor --json"],
}
"""What each subcommand's ``--help`` ends with (tests/test_cli_help.py parses every one)."""


class Parser(argparse.ArgumentParser):
    """Bad usage is one line (argparse's own prints the whole usage first: 15 lines for
    ``run``), with where to look."""

    def error(self, message: str) -> NoReturn:
        self.exit(
            EXIT_USAGE,
            f"{self.prog}: error: {message}; `{self.prog} --help` shows the options and examples\n",
        )

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:  # type: ignore[override]
        """As argparse's, but arguments no parser took are the subcommand's error, with the
        option meant where one is close: ``run ... --modle X`` said "raypipe: error:
        unrecognized arguments" and pointed at ``raypipe --help`` (a sweep)."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            parser = _chosen(self, parsed)
            parser.error(f"unrecognized arguments: {' '.join(extras)}{_meant(extras, parser)}")
        return parsed


def _chosen(parser: argparse.ArgumentParser, parsed: argparse.Namespace) -> Any:
    """The (sub)command parser that ``parsed`` went down to."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            name = getattr(parsed, action.dest, None)
            if name in action.choices:
                return _chosen(action.choices[name], parsed)
    return parser


def _meant(extras: list[str], parser: argparse.ArgumentParser) -> str:
    """``" (did you mean --model?)"`` for the first unknown option close to one of
    ``parser``'s, else ``""``."""
    import difflib

    known = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    for extra in extras:
        name = extra.split("=", 1)[0]
        if name in known:  # one of its own: it came after `--` ("did you mean --model?")
            return f" (arguments after `--` are file names: put {name} before the `--`)"
        if extra.startswith("--"):
            close = difflib.get_close_matches(extra.split("=", 1)[0], known, n=1, cutoff=0.7)
            if close:
                return f" (did you mean {close[0]}?)"
    return ""


def subcommand(
    sub: Any, name: str, summary: str, *, description: str = "", key: str = ""
) -> argparse.ArgumentParser:
    """A subcommand whose help ends with its examples; every one takes ``-v``."""
    examples = "\n".join(f"  {e}" for e in EXAMPLES[key or name])
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=f"{summary[:1].upper()}{summary[1:]}. {description}".strip(),
        epilog=f"examples:\n{examples}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="on errors print the traceback (the worker's too); leave Ray's own log lines on "
        "the terminal",
    )
    return parser


class TerminalHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """raypipe's own warnings on stderr; on a terminal each clears the line first, so none
    is glued onto a progress line drawn in place (the progress comes back on its next
    update)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        isatty = getattr(self.stream, "isatty", lambda: False)
        return f"\r\x1b[K{text}" if isatty() else text
