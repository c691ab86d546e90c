"""Shared libraries of the GPU stack: what a library needs, where the loader finds it, whether
it loads, and the pip-installed CUDA/cuDNN/TensorRT libraries loaded before ONNX Runtime's.

- :func:`elf_needed` reads an ELF file's ``DT_NEEDED`` entries (``readelf -d``'s NEEDED
  lines) and ``DT_RUNPATH``/``DT_RPATH``, in pure Python.
- :func:`find_library` looks a file name (``libnvinfer.so.10``) up the way the dynamic loader
  would for raypipe's process: the library's own ``$ORIGIN`` run path, ``LD_LIBRARY_PATH``,
  the directories of pip-installed NVIDIA wheels (``nvidia/*/lib``, ``tensorrt_libs``), the
  ``ldconfig`` cache and the system directories, and libraries already loaded.
- :func:`load_problem` loads a library with ``dlopen`` (as ONNX Runtime loads its provider
  libraries) and returns the loader's one-line error, or ``""``.
- :func:`preload_gpu_libraries` loads the libraries pip puts outside the loader's path
  (``onnxruntime-gpu[cuda,cudnn]``'s CUDA and cuDNN wheels through ONNX Runtime's own
  ``preload_dlls``, TensorRT's ``tensorrt_libs``) into the process, so that ONNX Runtime's
  ``dlopen`` of its CUDA and TensorRT providers finds them by name. Called once per process
  before the first GPU session and by ``raypipe doctor``.

Linux only (ELF); imports neither ``onnxruntime`` nor ``ray`` at module level.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import io
import logging
import os
import re
import struct
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from raypipe.errors import one_line

log = logging.getLogger("raypipe.infer")

_DT_NEEDED, _DT_STRTAB, _DT_RPATH, _DT_RUNPATH = 1, 5, 15, 29
# The loader's default directories (x86-64); /etc/ld.so.conf's come from the ldconfig cache.
_SYSTEM_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
                "/lib", "/usr/lib")  # fmt: skip
# TensorRT's pip wheels: tensorrt-cuNN-libs installs its libraries in a package named like
# this (``tensorrt_libs`` for TensorRT 10; a flavoured name is matched too).
TENSORRT_LIB_PACKAGES = "tensorrt*_libs"
TENSORRT_LIBRARIES = ("libnvinfer.so", "libnvinfer_plugin.so", "libnvonnxparser.so")


@dataclass(frozen=True, kw_only=True)
class ElfDynamic:
    """What an ELF file's dynamic section says about its dependencies."""

    needed: tuple[str, ...]  # DT_NEEDED, in order
    runpath: tuple[str, ...]  # DT_RUNPATH, else DT_RPATH, split on ':'


def elf_needed(path: str | os.PathLike[str]) -> ElfDynamic:
    """The ``DT_NEEDED`` and run-path entries of the ELF file at ``path``.

    Reads the program headers and the dynamic segment only (a 300 MB provider library costs a
    few reads). Raises ``ValueError`` for a file that is not a dynamically linked ELF object.
    """
    with open(path, "rb") as f:
        ident = f.read(16)
        if len(ident) < 16 or ident[:4] != b"\x7fELF" or ident[4] not in (1, 2):
            raise ValueError(f"{os.fspath(path)!r} is not an ELF file")
        wide, order = ident[4] == 2, "<" if ident[5] == 1 else ">"
        if wide:
            phoff, phentsize, phnum = (
                _unpack(f, order + "Q", 0x20)[0],
                *_unpack(f, order + "HH", 0x36),
            )
            phdr, dyn = order + "IIQQQQQQ", order + "qQ"
        else:
            phoff, phentsize, phnum = (
                _unpack(f, order + "I", 0x1C)[0],
                *_unpack(f, order + "HH", 0x2A),
            )
            phdr, dyn = order + "IIIIIIII", order + "iI"
        loads, dynamic = [], None
        for i in range(phnum):
            fields = _unpack(f, phdr, phoff + i * phentsize)
            if wide:
                p_type, _, p_offset, p_vaddr, _, p_filesz, _, _ = fields
            else:
                p_type, p_offset, p_vaddr, _, p_filesz, _, _, _ = fields
            if p_type == 1:
                loads.append((p_vaddr, p_offset, p_filesz))
            elif p_type == 2:
                dynamic = (p_offset, p_filesz)
        if dynamic is None:
            raise ValueError(f"{os.fspath(path)!r} has no dynamic section (a static binary?)")
        f.seek(dynamic[0])
        raw = f.read(dynamic[1])
        step = struct.calcsize(dyn)
        entries = []
        for at in range(0, len(raw) - step + 1, step):
            tag, value = struct.unpack_from(dyn, raw, at)
            if tag == 0:
                break
            entries.append((tag, value))
        strtab = next((v for t, v in entries if t == _DT_STRTAB), None)
        if strtab is None:
            raise ValueError(f"{os.fspath(path)!r} has no dynamic string table")
        base = next(
            (off + strtab - va for va, off, size in loads if va <= strtab < va + size), strtab
        )

        def string(offset: int) -> str:
            f.seek(base + offset)
            data = f.read(4096)
            return data.split(b"\0", 1)[0].decode(errors="replace")

        needed = tuple(string(v) for t, v in entries if t == _DT_NEEDED)
        paths = [string(v) for t, v in entries if t == _DT_RUNPATH] or [
            string(v) for t, v in entries if t == _DT_RPATH
        ]
    runpath = tuple(p for joined in paths for p in joined.split(":") if p)
    return ElfDynamic(needed=needed, runpath=runpath)


def _unpack(f: io.BufferedReader, fmt: str, at: int) -> tuple[int, ...]:
    f.seek(at)
    return struct.unpack(fmt, f.read(struct.calcsize(fmt)))


def pip_library_dirs() -> list[str]:
    """Directories pip-installed NVIDIA libraries live in (``site-packages/nvidia/*/lib``,
    ``nvidia/cu13/lib``, TensorRT's ``tensorrt_libs``), existing ones only."""
    dirs: list[str] = []
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        dirs.extend(sorted(glob.glob(os.path.join(entry, "nvidia", "*", "lib"))))
        dirs.extend(sorted(glob.glob(os.path.join(entry, TENSORRT_LIB_PACKAGES))))
    return [d for d in dict.fromkeys(dirs) if os.path.isdir(d)]


@functools.lru_cache(maxsize=1)
def _ldconfig_cache() -> dict[str, str]:
    """``ldconfig -p``: library file name -> path, for this machine's architecture."""
    try:
        text = subprocess.run(
            ["ldconfig", "-p"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    cache: dict[str, str] = {}
    for line in text.splitlines()[1:]:
        name, _, rest = line.strip().partition(" (")
        flags, _, path = rest.partition(") => ")
        if path and ("x86-64" in flags or "64" not in flags):
            cache.setdefault(name, path)
    return cache


def search_dirs(origin: str | None = None, runpath: Iterable[str] = ()) -> list[str]:
    """Where :func:`find_library` looks, in order: ``runpath`` (``$ORIGIN`` = ``origin``),
    ``LD_LIBRARY_PATH``, pip's NVIDIA wheel directories, the system directories."""
    dirs = [p.replace("$ORIGIN", origin or "").replace("${ORIGIN}", origin or "") for p in runpath]
    dirs += [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    dirs += pip_library_dirs()
    dirs += list(_SYSTEM_DIRS)
    return list(dict.fromkeys(dirs))


def find_library(name: str, dirs: Sequence[str] | None = None) -> str:
    """Where ``name`` (``libcudart.so.13``) is found: a path, ``"loaded"`` when a library of
    that name is already in the process, or ``""`` when it cannot be found.

    ``dirs=None`` searches as the loader would (:func:`search_dirs`, the ``ldconfig`` cache,
    the libraries already loaded); given ``dirs`` are the only places looked at.
    """
    for directory in search_dirs() if dirs is None else dirs:
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    if dirs is not None:
        return ""
    cached = _ldconfig_cache().get(name)
    if cached:
        return cached
    return "loaded" if _loaded(name) else ""


def _loaded(name: str) -> bool:
    """Whether a library with file name or soname ``name`` is mapped into this process."""
    try:
        with open("/proc/self/maps") as f:
            return any(line.rstrip().endswith("/" + name) for line in f)
    except OSError:
        return False


def missing_libraries(path: str | os.PathLike[str], dirs: Sequence[str] | None = None) -> list[str]:
    """The ``DT_NEEDED`` libraries of ``path`` that :func:`find_library` cannot find
    (direct dependencies only: their own dependencies show up when they are loaded)."""
    info = elf_needed(path)
    where = (
        search_dirs(os.path.dirname(os.path.abspath(path)), info.runpath) if dirs is None else dirs
    )
    return [name for name in info.needed if not find_library(name, where)]


def load_problem(path: str | os.PathLike[str], *, preload: Sequence[str] = ()) -> str:
    """``""`` when ``dlopen(path)`` succeeds, else the loader's error on one line.

    ``preload``: libraries loaded first with ``RTLD_GLOBAL`` (ONNX Runtime loads
    ``libonnxruntime_providers_shared.so`` so before a provider library); their failures are
    returned too. A library that loads stays loaded (``dlclose`` is unreliable).
    """
    for first in preload:
        try:
            ctypes.CDLL(os.fspath(first), mode=ctypes.RTLD_GLOBAL)
        except OSError as e:
            return one_line(e)
    try:
        ctypes.CDLL(os.fspath(path))
    except OSError as e:
        return one_line(e)
    return ""


@dataclass(frozen=True, kw_only=True)
class Preloaded:
    """What :func:`preload_gpu_libraries` loaded (paths) and what it could not (messages)."""

    loaded: tuple[str, ...]
    failed: tuple[str, ...]


@functools.lru_cache(maxsize=1)
def preload_gpu_libraries() -> Preloaded:
    """Load pip's CUDA/cuDNN/TensorRT libraries into this process, once (see the module doc).

    CUDA and cuDNN: ``onnxruntime.preload_dlls()`` where this ONNX Runtime has it (1.21+),
    its printed messages captured and logged at debug level. TensorRT: every
    ``libnvinfer``, ``libnvinfer_plugin`` and ``libnvonnxparser`` of a pip ``tensorrt_libs``
    directory, loaded with ``RTLD_GLOBAL``. Libraries already on the loader's path need none
    of this and are left to the loader. Never raises.
    """
    loaded: list[str] = []
    failed: list[str] = []
    with contextlib.suppress(Exception):
        import onnxruntime

        preload = getattr(onnxruntime, "preload_dlls", None)
        from onnxruntime.capi import build_and_package_info as info

        if preload is not None and getattr(info, "cuda_version", None):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                preload()
            if out.getvalue().strip():
                log.debug("onnxruntime.preload_dlls: %s", out.getvalue().strip())
            loaded.append("onnxruntime.preload_dlls")
    tensorrt_dirs = [d for d in pip_library_dirs() if os.path.basename(d).startswith("tensorrt")]
    for directory in tensorrt_dirs:
        for stem in TENSORRT_LIBRARIES:
            for path in sorted(glob.glob(os.path.join(directory, stem + ".*"))):
                if not re.fullmatch(r"\.\d+", path[len(os.path.join(directory, stem)) :]):
                    continue  # libnvinfer.so.10 only, not a versioned twin of it
                try:
                    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                    loaded.append(path)
                except OSError as e:
                    failed.append(f"{path}: {one_line(e)}")
    if failed:
        log.warning("could not preload TensorRT libraries: %s", "; ".join(failed))
    return Preloaded(loaded=tuple(loaded), failed=tuple(failed))
