"""Naming a user processor, carrying it to the actors, and its identity.

A processor is named by a target string, ``path/to/file.py:Class`` (a local path or fsspec
URL of a Python file) or ``package.module:Class`` (importable where the actors run), or
given in Python as a :class:`~raypipe.infer.processors.Processor` subclass or instance.
:func:`processor_ref` checks it on the driver, before any cluster work, and returns a
:class:`ProcessorRef`: for a file, the file's text travels with it and each actor runs it
as a module of its own (the file need not exist where the actors run, and ``ray job
submit --working-dir`` carries it for the driver); a module is imported again by name in
the actor; a class or instance is pickled to the actors as Ray pickles any callable.

:func:`processor_identity` names a processor's code for resume keys: its module and
qualified name, the sha256 of the file that defines it and its optional ``version``
class attribute, so editing the file (or bumping ``version``) makes earlier work stale;
a temporal processor's ``window``, ``warmup_frames`` and ``interpolate`` are named in it
too, so they count even where they were set without editing a file (a subclass made at
run time).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import re
import sys
import types
from dataclasses import dataclass
from typing import Any

from raypipe.errors import ConfigError, ProcessorError
from raypipe.infer.processor_base import Processor
from raypipe.infer.temporal import NONE, Temporal, processor_temporal

_TARGET = re.compile(r"^(?P<where>.+):(?P<name>[A-Za-z_][\w.]*)$")
_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


@dataclass(frozen=True)
class ProcessorRef:
    """A processor as it travels from the driver to the actors (see the module docstring)."""

    target: str  # what the user named: "file.py:Class", "pkg.mod:Class" or "module:Qualname"
    source: str = ""  # a file target's text ("" otherwise)
    obj: Any = None  # a class or instance given in Python (None for targets)
    output: str = "image"  # the class's declared output kind: "image" or "tensor"
    identity: str = ""  # processor_identity(), computed on the driver
    temporal: Temporal = NONE  # what the class declares it needs around each frame


def _is_file(where: str) -> bool:
    return where.endswith(".py") or "/" in where or "\\" in where


def _split(target: str) -> tuple[str, str]:
    match = _TARGET.match(target)
    if not match or not (_is_file(match["where"]) or _MODULE.match(match["where"])):
        raise ConfigError(
            f"processor must be 'path/to/file.py:Class' or 'package.module:Class', got {target!r}"
        )
    return match["where"], match["name"]


def _read_source(path: str) -> str:
    import fsspec

    try:
        with fsspec.open(path, "r", encoding="utf-8") as f:
            text: str = f.read()
    except FileNotFoundError as e:
        raise ConfigError(f"processor file {path!r} does not exist; check the path") from e
    except (OSError, ValueError, ImportError, UnicodeDecodeError) as e:
        raise ProcessorError(f"cannot read processor file {path!r}: {e}") from e
    return text


def module_from_source(path: str, source: str) -> types.ModuleType:
    """The module a processor file defines, run once per process (cached by content)."""
    digest = hashlib.sha256(source.encode()).hexdigest()
    stem = re.sub(r"\W", "_", path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".py")) or "file"
    name = f"raypipe_processor_{stem}_{digest[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    module = types.ModuleType(name)
    module.__file__ = path
    module.__dict__["__raypipe_source_sha256__"] = digest
    sys.modules[name] = module  # dataclasses, typing and pickle look classes up here
    try:
        exec(compile(source, path, "exec"), module.__dict__)  # noqa: S102 - the user's code
    except BaseException as e:
        del sys.modules[name]
        raise ProcessorError(
            f"processor file {path!r} raised {type(e).__name__} when loaded: "
            f"{' '.join(str(e).split())}; fix the file"
        ) from e
    return module


def _attribute(module: types.ModuleType, name: str, target: str) -> Any:
    obj: Any = module
    for part in name.split("."):
        if not hasattr(obj, part):
            defined = sorted(
                n for n, v in vars(module).items() if isinstance(v, type) and not n.startswith("_")
            )
            raise ConfigError(
                f"processor {target!r}: no {name!r} in {module.__name__}; classes there: "
                f"{', '.join(defined) or 'none'}"
            )
        obj = getattr(obj, part)
    return obj


def _check_class(obj: Any, target: str) -> type:
    cls = obj if isinstance(obj, type) else type(obj)
    if not issubclass(cls, Processor):
        raise ConfigError(
            f"processor {target!r} is {cls.__module__}.{cls.__qualname__}, not a subclass of "
            "raypipe.Processor; subclass it and define setup(self, ctx) and __call__(self, frames)"
        )
    output = getattr(cls, "output", "image")
    if output not in ("image", "tensor"):
        raise ConfigError(
            f"processor {target!r} declares output = {output!r}; expected 'image' (frames: a "
            "video comes out) or 'tensor' (a dict of arrays: a Parquet table comes out)"
        )
    temporal = processor_temporal(cls, target)
    if temporal.active and output != "image":
        raise ConfigError(
            f"processor {target!r} declares {temporal.describe()} and output = {output!r}; "
            "temporal processors output frames (output = 'image')"
        )
    return cls


def resolve_target(ref: ProcessorRef) -> Any:
    """The class (or instance) ``ref`` names, loaded in this process."""
    if ref.obj is not None:
        return ref.obj
    where, name = _split(ref.target)
    if ref.source or _is_file(where):
        module = module_from_source(where, ref.source or _read_source(where))
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise ConfigError(
                f"processor {ref.target!r}: cannot import {where!r} ({e}); install the package "
                "where the actors run, or name a file: path/to/file.py:Class"
            ) from e
        except Exception as e:  # noqa: BLE001 - the module's own top-level code failed
            raise ProcessorError(
                f"processor module {where!r} raised {type(e).__name__} when imported: "
                f"{' '.join(str(e).split())}; fix the module"
            ) from e
    return _attribute(module, name, ref.target)


def processor_ref(processor: Any) -> ProcessorRef:
    """``processor`` (a target string, a Processor subclass or instance) checked and ready to
    travel to the actors; raises :class:`ConfigError`/:class:`ProcessorError` on the driver."""
    if isinstance(processor, ProcessorRef):
        return processor
    if isinstance(processor, str):
        where, _ = _split(processor)
        source = _read_source(where) if _is_file(where) else ""
        ref = ProcessorRef(target=processor, source=source)
        cls = _check_class(resolve_target(ref), processor)
    else:
        cls = _check_class(processor, repr(processor))
        target = f"{cls.__module__}:{cls.__qualname__}"
        ref = ProcessorRef(target=target, obj=processor)
    return ProcessorRef(
        target=ref.target,
        source=ref.source,
        obj=ref.obj,
        output=getattr(cls, "output", "image"),
        identity=processor_identity(cls),
        temporal=processor_temporal(cls, ref.target),
    )


def _source_digest(cls: type) -> str:
    module = sys.modules.get(cls.__module__)
    recorded = getattr(module, "__raypipe_source_sha256__", None)
    if isinstance(recorded, str):
        return recorded
    try:
        path = inspect.getsourcefile(cls)
        if path:
            with open(path, "rb") as f:
                return hashlib.sha256(f.read()).hexdigest()
    except (OSError, TypeError):
        pass
    try:  # no file (a notebook cell, an interactive session): the class's own source
        return hashlib.sha256(inspect.getsource(cls).encode()).hexdigest()
    except (OSError, TypeError):
        return "unknown"


def processor_identity(processor: Any) -> str:
    """What names a processor's code: ``module:qualname sha256=<defining file> version=<v>``.

    Takes a class, an instance, a target string or a :class:`ProcessorRef`. A file target's
    module is named by the file (``file.py``), not by where it was loaded from.
    """
    if isinstance(processor, ProcessorRef) and processor.identity:
        return processor.identity
    if isinstance(processor, (str, ProcessorRef)):
        ref = processor if isinstance(processor, ProcessorRef) else processor_ref(processor)
        return ref.identity or processor_identity(resolve_target(ref))
    cls = processor if isinstance(processor, type) else type(processor)
    module = sys.modules.get(cls.__module__)
    name = cls.__module__
    if getattr(module, "__raypipe_source_sha256__", None):
        name = str(getattr(module, "__file__", name)).rstrip("/").rsplit("/", 1)[-1]
    version = getattr(cls, "version", "")
    identity = f"{name}:{cls.__qualname__} sha256={_source_digest(cls)} version={version}"
    temporal = processor_temporal(cls, identity)
    return f"{identity} {temporal.describe()}" if temporal.active else identity
