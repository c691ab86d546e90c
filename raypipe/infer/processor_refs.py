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
qualified name, the sha256 of the file that defines it (of its methods' source for a
notebook cell's class) and its optional ``version`` class attribute, so editing the file
(or bumping ``version``) makes earlier work stale; what an instance holds and the values a
class made at run time closes over count too (``Scale(4)`` is not ``Scale(2)``);
a temporal processor's ``window``, ``warmup_frames`` and ``interpolate`` are named in it
too, so they count even where they were set without editing a file (a subclass made at
run time).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import inspect
import os
import re
import sys
import types
import uuid
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
    base_dir: str = ""  # the driver's working directory: ctx.session's relative paths


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
    module.__dict__["__raypipe_source__"] = source  # the model files it names (_named_models)
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
            where = module.__name__  # a file's module is named here: the user knows its file
            if where.startswith("raypipe_processor_") and getattr(module, "__file__", None):
                where = os.path.basename(str(module.__file__))
            raise ConfigError(
                f"processor {target!r}: no {name!r} in {where}; classes there: "
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
    if isinstance(obj, type):
        _check_constructible(cls, target)
    return cls


def _check_constructible(cls: type, target: str) -> None:
    """A class is built by each actor with no arguments: one whose ``__init__`` needs some
    failed in the first chunk's actor, after Ray's start, as if its ``setup`` had raised."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):  # a builtin's or extension's: Python cannot say
        return
    try:
        signature.bind()
    except TypeError:
        needed = [
            p.name
            for p in signature.parameters.values()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        raise ConfigError(
            f"processor {target!r}: {cls.__qualname__}() needs {', '.join(needed)}, and each "
            "actor builds it with no arguments; give them defaults, or in Python pass an "
            f"instance ({cls.__qualname__}({', '.join(f'{n}=...' for n in needed)}))"
        ) from None


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
        identity=processor_identity(cls if ref.obj is None else ref.obj),
        temporal=processor_temporal(cls, ref.target),
        base_dir=os.getcwd(),
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
    try:  # no file (an interactive session): the class's own source
        return hashlib.sha256(inspect.getsource(cls).encode()).hexdigest()
    except (OSError, TypeError):
        pass
    # a notebook cell: Python before 3.13 finds no source for a class of ``__main__``, but
    # finds its methods' (their code names the cell, which the kernel keeps)
    methods = []
    for name, member in sorted(vars(cls).items()):
        function = _function_of(member)
        if function is not None:
            try:
                methods.append(f"{name}\n{inspect.getsource(function)}")
            except (OSError, TypeError):
                return UNKNOWN
    if not methods:
        return UNKNOWN
    return hashlib.sha256("\n".join(methods).encode()).hexdigest()


UNKNOWN = "unknown"


def _named_models(cls: type) -> str:
    """A digest of the local ``.onnx`` files the processor's module names in its string
    literals (``ctx.session("/models/m.onnx")``, ``MODEL = "m.onnx"``; relative ones from
    the driver's working directory, as ``ctx.session`` finds them), ``""`` for none. A
    model overwritten in place left the processor's identity as it was, and a resumed run
    reused the old model's segments and outputs: one output of two models' frames (a
    sweep). A model found otherwise (a path built at run time, a helper module's) is not
    seen: bump ``version`` when it changes."""
    module = sys.modules.get(cls.__module__)
    source = getattr(module, "__raypipe_source__", None)
    for of in (module, cls):
        if isinstance(source, str):
            break
        try:
            source = inspect.getsource(of) if of is not None else None
        except (OSError, TypeError):
            source = None
    if not isinstance(source, str):
        return ""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ""
    named = sorted(
        {
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.endswith(".onnx")
            and "\n" not in node.value
        }
    )
    parts = []
    for name in named:
        path = os.path.abspath(os.path.expanduser(name))
        if os.path.isfile(path):
            parts.append(f"{name}={_model_sha256(path)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16] if parts else ""


def _model_sha256(path: str) -> str:
    """The sha256 of the model file ``path``, with the weights it keeps in files beside it
    (ONNX's external data) where it has them, as ``ctx.session`` loads it: new weights in
    ``m.onnx.data`` beside an unchanged ``m.onnx`` were reused as the old (a sweep)."""
    stat = os.stat(path)
    digest, external = _file_sha256(path, stat.st_size, stat.st_mtime_ns)
    if not external:
        return digest
    from raypipe.infer.sidecar import resolve_model

    try:
        return resolve_model(path)[1]
    except Exception:  # noqa: BLE001 - a model that does not load: the session says why
        return digest


@functools.lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> tuple[str, bool]:
    """The sha256 of the file ``path`` as it is at ``size`` and ``mtime_ns`` (read once),
    and whether it may name external data (``location``, the key ONNX names files by)."""
    digest, external = hashlib.sha256(), False
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            external = external or b"location" in block
    return digest.hexdigest(), external


def _function_of(member: Any) -> types.FunctionType | None:
    """The function a class member is (a method, static or class method), or ``None``."""
    if isinstance(member, (staticmethod, classmethod)):
        member = member.__func__
    return member if isinstance(member, types.FunctionType) else None


_DECLARED = frozenset({"version", "output", "window", "warmup_frames", "interpolate"})
"""Class attributes the identity names otherwise (its version, its temporal needs) or that
change no frame (its output kind is checked on its own)."""


def _state_digest(cls: type, instance: Any = None) -> str:
    """A digest of what a processor's code alone does not say: the values its class holds
    and the variables its methods close over (a class made by a function, ``make(k=2)``),
    and an instance's attributes (``Scale(4)`` is not ``Scale(2)``); ``""`` when there are
    none, :data:`UNKNOWN` when an instance attribute cannot be written down (a class's own
    values that cannot, a compiled pattern or a logger, are its source's: left out)."""
    values: list[tuple[str, bytes]] = []
    for name, member in sorted(vars(cls).items()):
        function = _function_of(member)
        if function is not None:
            for i, cell in enumerate(function.__closure__ or ()):
                try:
                    written = _canonical(cell.cell_contents)
                except ValueError:  # an empty cell
                    continue
                if written is not None:
                    values.append((f"{name}.closure{i}", written))
            for read, written in _globals_read(function, 0):
                if written is not None:
                    values.append((f"{name}.global.{read}", written))
        elif not (name.startswith("__") and name.endswith("__")) and name not in _DECLARED:
            written = _canonical(member)
            if written is not None:
                values.append((name, written))
    if instance is not None and not isinstance(instance, type):
        for name, value in sorted(getattr(instance, "__dict__", {}).items()):
            written = _canonical(value)
            if written is None:
                return UNKNOWN
            values.append((f"self.{name}", written))
    if not values:
        return ""
    digest = hashlib.sha256()
    for name, written in values:
        digest.update(name.encode() + b"=" + written + b";")
    return digest.hexdigest()[:16]


def _canonical(value: Any, depth: int = 0) -> bytes | None:
    """``value`` as bytes that are the same in every process for equal values (no memory
    addresses, no hash order), or ``None`` when there are none: plain data, containers of
    it, NumPy arrays, paths, classes and functions (by name or source), and objects whose
    attributes are such (a dataclass of settings)."""
    if depth > 8:
        return None
    kind = type(value).__name__.encode()
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return kind + b":" + repr(value).encode()
    if isinstance(value, (list, tuple, set, frozenset)):
        parts = [_canonical(v, depth + 1) for v in value]
        if any(p is None for p in parts):
            return None
        ordered = sorted(parts) if isinstance(value, (set, frozenset)) else parts
        return kind + b"[" + b",".join(ordered) + b"]"  # type: ignore[arg-type]
    if isinstance(value, dict):
        items = [(_canonical(k, depth + 1), _canonical(v, depth + 1)) for k, v in value.items()]
        if any(k is None or v is None for k, v in items):
            return None
        return kind + b"{" + b",".join(sorted(k + b":" + v for k, v in items)) + b"}"  # type: ignore[operator]
    if type(value).__module__ == "numpy" and hasattr(value, "tobytes"):
        data = hashlib.sha256(value.tobytes()).hexdigest()
        return f"ndarray:{value.dtype}:{getattr(value, 'shape', ())}:{data}".encode()
    if isinstance(value, os.PathLike):
        path = os.fspath(value)
        return b"path:" + (path.encode() if isinstance(path, str) else path)
    if isinstance(value, type):
        return f"class:{value.__module__}:{value.__qualname__}".encode()
    if isinstance(value, types.ModuleType):
        return f"module:{value.__name__}".encode()
    if isinstance(value, types.FunctionType):
        return _canonical_function(value, depth)
    attributes = getattr(value, "__dict__", None)
    if isinstance(attributes, dict) and not callable(value):
        inner = _canonical(attributes, depth + 1)
        cls = type(value)
        return None if inner is None else f"{cls.__module__}.{cls.__qualname__}".encode() + inner
    return None


def _canonical_function(function: types.FunctionType, depth: int) -> bytes | None:
    """A function written down: its source, the values it closes over and its defaults
    (``make_fn(2)`` is not ``make_fn(8)``; ``None`` where one of them cannot be written
    down), and the globals it reads where no hashed file says them (:func:`_globals_read`).
    Before, the source alone: a lambda that closed over another value was the same
    processor, and a resumed archive kept the outputs the old value made."""
    try:
        parts = [b"function:" + inspect.getsource(function).encode()]
    except (OSError, TypeError):
        return None
    held = [*(function.__defaults__ or ()), *sorted((function.__kwdefaults__ or {}).items())]
    for cell in function.__closure__ or ():
        try:
            held.append(cell.cell_contents)
        except ValueError:  # an empty cell
            continue
    for value in held:
        written = _canonical(value, depth + 1)
        if written is None:
            return None
        parts.append(written)
    for read, written in _globals_read(function, depth + 1):
        if written is not None:  # a logger, a compiled pattern: its source's, left out
            parts.append(read.encode() + b"=" + written)
    return b";".join(parts)


def _file_says(module_name: str) -> bool:
    """Whether the source digest covers ``module_name``'s globals as written: a file target's
    text, or a module file that exists (not a notebook's ``__main__``)."""
    module = sys.modules.get(module_name)
    if getattr(module, "__raypipe_source_sha256__", None):
        return True
    path = getattr(module, "__file__", None)
    return isinstance(path, str) and os.path.isfile(path)


def _names_read(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):  # a comprehension's, a nested function's
            names |= _names_read(const)
    return names


def _globals_read(function: types.FunctionType, depth: int) -> list[tuple[str, bytes | None]]:
    """The globals ``function`` reads, each written down (``None`` where it cannot be),
    where no hashed file says them: a notebook cell's ``LEVEL = 8`` after ``LEVEL = 2``
    changes what a method does and was in no identity, so a rerun reused the old outputs.
    A module file's own globals are its digest's (:func:`_file_says`); values made at run
    time in a module file (a timestamp) would name the processor anew every run."""
    if _file_says(function.__module__) or depth > 8:
        return []
    found = function.__globals__
    return [
        (name, _canonical(found[name], depth))
        for name in sorted(_names_read(function.__code__))
        if name in found and not name.startswith("__")
    ]


def processor_identity(processor: Any) -> str:
    """What names a processor's code: ``module:qualname sha256=<defining file> version=<v>``,
    then ``state=<digest>`` where the class or instance holds values its code does not
    say (:func:`_state_digest`).

    Takes a class, an instance, a target string or a :class:`ProcessorRef`. A file target's
    module is named by the file (``file.py``), not by where it was loaded from. Code that
    cannot be read, or a value that cannot be written down, without a ``version`` to
    stand for them, gives an identity of its own every time (:func:`identity_is_unique`):
    earlier work made with it is never reused.
    """
    if isinstance(processor, ProcessorRef) and processor.identity:
        return processor.identity
    if isinstance(processor, ProcessorRef) and processor.obj is not None:
        return processor_identity(processor.obj)
    if isinstance(processor, (str, ProcessorRef)):
        ref = processor if isinstance(processor, ProcessorRef) else processor_ref(processor)
        return ref.identity or processor_identity(resolve_target(ref))
    cls = processor if isinstance(processor, type) else type(processor)
    module = sys.modules.get(cls.__module__)
    name = cls.__module__
    if getattr(module, "__raypipe_source_sha256__", None):
        name = str(getattr(module, "__file__", name)).rstrip("/").rsplit("/", 1)[-1]
    version = getattr(cls, "version", "")
    digest, state = _source_digest(cls), _state_digest(cls, processor)
    identity = f"{name}:{cls.__qualname__} sha256={digest} version={version}"
    if state:
        identity += f" state={state}"
    models = _named_models(cls)
    if models:
        identity += f" models={models}"
    if UNKNOWN in (digest, state) and version in ("", None):
        identity += f" run={uuid.uuid4().hex}"  # nothing to compare: never the same twice
    temporal = processor_temporal(cls, identity)
    return f"{identity} {temporal.describe()}" if temporal.active else identity


def identity_is_unique(identity: str) -> bool:
    """Whether ``identity`` is one of a kind (:func:`processor_identity`): nothing made with
    it is reused."""
    return " run=" in identity
