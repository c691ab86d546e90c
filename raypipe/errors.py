"""The raypipe exception tree.

Every error raypipe raises on purpose derives from :class:`RaypipeError`. Leaves also
inherit the matching builtin (``CorruptVideoError`` is a ``ValueError``, ``InputNotFoundError``
a ``FileNotFoundError``) so callers can catch either. Messages say what was got, what was
expected and what to try.
"""

from __future__ import annotations


class RaypipeError(Exception):
    """Base class of every error raypipe raises on purpose.

    ``detail``: for an error raised on a Ray worker, its traceback there (``""`` otherwise),
    which is also the error's cause (a :class:`WorkerTraceback`), so that Python shows it
    under the error (a notebook, an uncaught exception); the command shows it with
    ``--verbose``."""

    detail: str = ""


class WorkerTraceback(Exception):
    """Where an error raised on a Ray worker came from: its traceback there, as text (the
    cause of the :class:`RaypipeError` the driver raises for it, as ``multiprocessing``
    gives a worker's traceback)."""

    def __str__(self) -> str:
        return "where it failed (on a worker):\n" + "".join(map(str, self.args)).rstrip()


def with_worker_traceback(error: BaseException, detail: str) -> BaseException:
    """``error`` with the worker's traceback ``detail`` as its ``detail`` and its cause."""
    error.detail = detail  # type: ignore[attr-defined]
    if detail:
        error.__cause__ = WorkerTraceback(detail)
    return error


class ConfigError(RaypipeError, ValueError):
    """An option has a value raypipe cannot use."""


# --- inputs -------------------------------------------------------------------------------


class InputError(RaypipeError):
    """A video input cannot be processed."""


class InputNotFoundError(InputError, FileNotFoundError):
    """The input path or URL does not exist."""


class InputPermissionError(InputError, PermissionError):
    """The input exists but cannot be read."""


class CorruptVideoError(InputError, ValueError):
    """The input is not a readable video: not a media file, truncated or corrupt."""


class NoVideoStreamError(InputError, ValueError):
    """The input is a media file without a video stream (audio only, say)."""


class EmptyVideoError(InputError, ValueError):
    """The video stream has no frames."""


class UnsupportedVideoError(InputError, ValueError):
    """The video uses something raypipe cannot handle (a codec with no decoder, no timestamps)."""


# --- processing ---------------------------------------------------------------------------


class DecodeError(RaypipeError, RuntimeError):
    """Decoding a chunk gave other frames than its plan says (count or timestamps)."""


class EncodeError(RaypipeError, RuntimeError):
    """Encoding a chunk failed, or segments do not concatenate."""


class MuxError(RaypipeError, RuntimeError):
    """Assembling segments and copied streams into the output failed."""


class OutputExistsError(RaypipeError, FileExistsError):
    """The output exists and overwriting was not asked for."""


class StorageError(RaypipeError, OSError):
    """A file system or object store refused raypipe (no permission) or cannot be reached."""


# --- models and devices -------------------------------------------------------------------


class ModelError(RaypipeError):
    """A model cannot be used: raised as it is when the model fails on the frames it is given
    (a shape rule, NaN output), with what it said and what to try."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """The model path/URL does not exist, or the built-in name is unknown."""


class ModelLoadError(ModelError, ValueError):
    """The model exists but ONNX Runtime cannot load it, or its inputs/outputs do not fit."""


class ProcessorError(RaypipeError, RuntimeError):
    """A user :class:`raypipe.Processor` cannot be loaded, or raised in ``setup``/``__call__``,
    or returned something raypipe cannot write (the message carries the processor's own)."""


class DeviceUnavailableError(RaypipeError, RuntimeError):
    """A GPU was asked for but ONNX Runtime, the driver or the cluster cannot give one."""


class EngineCacheError(RaypipeError, RuntimeError):
    """The engine cache cannot give a verified entry (build failed, wait timed out, I/O)."""


class ClusterError(RaypipeError, RuntimeError):
    """The Ray cluster cannot run the pipeline (too few resources, unreachable address)."""


def counted(n: int, noun: str) -> str:
    """``1 chunk``, ``4 chunks``: how messages count ("1 chunks" read wrong: a sweep)."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def one_line(error: BaseException) -> str:
    """``error``'s message on one line (runs of whitespace, newlines included, become one
    space): how reports, rows and the command line show an error."""
    return " ".join(str(error).split())


__all__ = [
    "RaypipeError",
    "ConfigError",
    "InputError",
    "InputNotFoundError",
    "InputPermissionError",
    "CorruptVideoError",
    "NoVideoStreamError",
    "EmptyVideoError",
    "UnsupportedVideoError",
    "DecodeError",
    "EncodeError",
    "MuxError",
    "OutputExistsError",
    "StorageError",
    "ModelError",
    "ModelNotFoundError",
    "ModelLoadError",
    "ProcessorError",
    "DeviceUnavailableError",
    "EngineCacheError",
    "ClusterError",
    "WorkerTraceback",
]  # the public error tree (``from raypipe.errors import *``)
