"""The files of an engine cache entry: manifests, hashes, durable copies, local locks.

An entry is a directory of engine files plus ``MANIFEST.json`` (the key, each file's name,
size in bytes and sha256). Whatever reads an entry checks every byte against its manifest;
whatever writes one fsyncs files and directories before it is published.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from raypipe.errors import EngineCacheError
from raypipe.infer.trt.key import FORMAT, SHA256_HEX, EngineKey

MANIFEST = "MANIFEST.json"
CHUNK_BYTES = 8 << 20


@dataclass(frozen=True)
class EntryState:
    """Whether an entry is complete; ``reason`` says why not (empty when complete)."""

    complete: bool
    reason: str = ""


def sha256_file(path: str) -> tuple[int, str]:
    """(size in bytes, sha256 hex) of a local file."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def local_files(directory: str) -> list[str]:
    """Relative paths (with '/') of every file under ``directory``, manifest excluded."""
    names = []
    for parent, _, files in os.walk(directory):
        for name in files:
            rel = os.path.relpath(os.path.join(parent, name), directory).replace(os.sep, "/")
            if rel != MANIFEST:
                names.append(rel)
    return sorted(names)


def manifest_for(directory: str, key: EngineKey) -> dict[str, Any]:
    files = []
    for name in local_files(directory):
        size, sha = sha256_file(os.path.join(directory, name))
        files.append({"name": name, "size": size, "sha256": sha})
    return {
        "format": FORMAT,
        "digest": key.digest(),
        "key": key.to_dict(),
        "files": files,
        "created_s": time.time(),
        "builder": {"host": socket.gethostname(), "pid": os.getpid()},
    }


def parse_manifest(raw: bytes, key: EngineKey) -> list[dict[str, Any]]:
    """The manifest's file list, or ValueError saying what is wrong with it."""
    data = json.loads(raw)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"manifest format is {data.get('format')!r}, expected {FORMAT!r}")
    if data.get("key") != key.to_dict():
        raise ValueError("manifest names another key")
    files = data.get("files")
    if not isinstance(files, list) or not files:
        raise ValueError("manifest lists no files")
    for item in files:
        name = item.get("name") if isinstance(item, dict) else None
        if (
            not isinstance(name, str)
            or not name
            or name.startswith("/")
            or ".." in name.split("/")
            or not isinstance(item.get("size"), int)
            or not SHA256_HEX.match(str(item.get("sha256")))
        ):
            raise ValueError(f"manifest has a bad file record {item!r}")
    return files


def write_json_durably(path: str, data: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def flock(path: str) -> Iterator[bool]:
    """A non-blocking ``fcntl.flock`` on ``path`` (created if needed); yields whether held.

    The kernel drops the lock when the process dies, so a local lock never goes stale.
    On NFS, Linux maps flock to POSIX byte-range locks (NFSv4 or NLM), which also works.
    """
    import fcntl

    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def copy_hashing(src: IO[bytes], dst: IO[bytes] | None) -> tuple[int, str]:
    """Stream ``src`` (into ``dst`` when given); (bytes read, sha256 hex)."""
    digest = hashlib.sha256()
    size = 0
    while chunk := src.read(CHUNK_BYTES):
        digest.update(chunk)
        size += len(chunk)
        if dst is not None:
            dst.write(chunk)
    return size, digest.hexdigest()


def copy_local_durably(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, CHUNK_BYTES)
        fout.flush()
        os.fsync(fout.fileno())


def local_state(directory: Path, key: EngineKey) -> EntryState:
    """Whether a local copy is complete: its manifest names ``key`` and every file matches."""
    try:
        files = parse_manifest((directory / MANIFEST).read_bytes(), key)
    except FileNotFoundError:
        return EntryState(False, f"{MANIFEST} is missing")
    except (ValueError, AttributeError, TypeError, OSError) as e:
        return EntryState(False, f"{MANIFEST} is unreadable: {e}")
    for item in files:
        try:
            size, sha = sha256_file(str(directory / item["name"]))
        except OSError:
            return EntryState(False, f"{item['name']} is missing")
        if (size, sha) != (item["size"], item["sha256"]):
            return EntryState(False, f"{item['name']} does not match the manifest")
    return EntryState(True)


def install_local(source: Path, target: Path, key: EngineKey) -> None:
    """Move ``source`` (a complete, verified local directory beside ``target``) to ``target``.

    A broken ``target`` is moved aside first; when another process installed a complete copy
    first, that copy stays and ``source`` is left for the caller to delete.
    """
    for _ in range(5):
        if local_state(target, key).complete:
            return
        if target.exists():
            trash = target.with_name(f".trash-{target.name}-{uuid.uuid4().hex[:8]}")
            with contextlib.suppress(FileNotFoundError):
                os.rename(target, trash)
                shutil.rmtree(trash, ignore_errors=True)
        with contextlib.suppress(OSError):  # lost a race: look at the winner's copy
            os.rename(source, target)
            return
    raise EngineCacheError(
        f"cannot install engine {key.digest()} at {target}: another process keeps replacing "
        "it; pass a local_dir per process"
    )
