"""The ``raypipe`` command's entry point: its signal handling in place before the heavy
imports of :mod:`raypipe.cli` (Ray's, fsspec's, PyAV's: 0.3-0.5 s). A Ctrl-C while they
ran ended the command with a Python traceback from an import, and a SIGTERM with no line
at all and the signal's death instead of status 143 (a sweep); now both are the one line
and the status of an interrupted run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

from raypipe.exiting import end_process, interrupted_status, raise_on_sigterm


def entry(argv: Sequence[str] | None = None) -> NoReturn:
    """:func:`raypipe.cli.entry`, SIGTERM handled from the start."""
    raise_on_sigterm()
    try:
        from raypipe.cli import entry as command
    except KeyboardInterrupt:
        end_process(interrupted_status())
    command(argv)
