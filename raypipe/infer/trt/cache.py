"""A cluster-wide TensorRT engine cache: build once per key, publish atomically, copy locally.

ONNX Runtime's TensorRT EP caches engines in a directory (``trt_engine_cache_path``), but
it writes them non-atomically and names them after the model, not after everything an
engine depends on. Sharing that directory between machines would hand an engine built for
one GPU or TensorRT version to another, and a half-written file to anyone who reads it
mid-build. This module keys a directory per :class:`EngineKey` (model sha256, GPU name and
compute capability, TensorRT/ORT/CUDA versions, precision, shape profile) on any fsspec
URL, and:

- builds each key once: a lock (``fcntl.flock`` on a lock file for local and POSIX paths,
  an object created with exclusive-create semantics for object stores) lets one process
  build while the others wait and poll;
- publishes atomically: files go to ``{url}/.tmp-{uuid}/`` first; on local paths that
  directory is renamed into place with one ``os.rename``; on object stores each file is
  moved into place and ``MANIFEST.json`` is written last;
- verifies everything it reads: an entry is complete only when its ``MANIFEST.json``
  exists, names this key, and every file it lists has the listed size and sha256. A
  missing manifest, a truncated file or a wrong hash is logged, removed and rebuilt;
- hands ONNX Runtime a *local* copy (``{local_root}/{digest}``), copied and verified the
  same way, so ORT never reads shared storage and whatever ORT writes stays local.

Layout::

    {url}/{digest}/MANIFEST.json       the key, each file's name, size (bytes), sha256
    {url}/{digest}/<engine files>      as the TensorRT EP wrote them (.engine, .profile, .timing)
    {url}/.locks/{digest}.lock         held while one process builds
    {url}/.tmp-{uuid}/                 a publication in progress (never read)

Object-store locks are best effort (an exclusive create, broken after ``stale_lock_s``);
a duplicate build can happen after a crash or a very long build, but never a torn entry,
since readers verify every byte against the manifest.

This module imports neither ``ray`` nor ``onnxruntime`` at import time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec

from raypipe.errors import ConfigError, EngineCacheError, RaypipeError
from raypipe.infer.trt.files import (
    MANIFEST,
    EntryState,
    copy_hashing,
    copy_local_durably,
    flock,
    fsync_dir,
    install_local,
    local_files,
    local_state,
    manifest_for,
    parse_manifest,
    write_json_durably,
)
from raypipe.infer.trt.key import EngineKey

logger = logging.getLogger("raypipe.infer")

DEFAULT_LOCAL_ROOT = Path.home() / ".cache" / "raypipe" / "engines"


class EngineCache:
    """Engine directories on an fsspec URL, one per :class:`EngineKey`; see the module docs.

    ``url``: a local directory, ``file://``, ``s3://bucket/prefix``, ``memory://...`` or any
    fsspec URL (``storage_options`` go to the filesystem). ``local_root``: where verified
    local copies go (default ``~/.cache/raypipe/engines``). ``wait_timeout_s``: how long to
    wait for another process's build before giving up. ``poll_interval_s``: how often a
    waiting process looks for the published entry. ``stale_lock_s``: age after which an
    object-store lock counts as abandoned (local locks die with their process).
    """

    def __init__(
        self,
        url: str,
        *,
        storage_options: dict[str, Any] | None = None,
        local_root: str | os.PathLike[str] | None = None,
        wait_timeout_s: float = 3600.0,
        poll_interval_s: float = 0.5,
        stale_lock_s: float = 3600.0,
    ) -> None:
        if not isinstance(url, str) or not url:
            raise ConfigError(f"engine cache url must be a path or fsspec URL, got {url!r}")
        for name, value in (
            ("wait_timeout_s", wait_timeout_s),
            ("poll_interval_s", poll_interval_s),
            ("stale_lock_s", stale_lock_s),
        ):
            if not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"{name} must be a number of seconds > 0, got {value!r}")
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        except (ImportError, ValueError) as e:
            raise ConfigError(
                f"cannot open engine cache {url!r}: {e}; install the fsspec backend for "
                "this URL (s3fs for s3://, gcsfs for gs://) or pass a local directory"
            ) from e
        self.url = url
        self.root = root.rstrip("/") or "/"
        self.local_root = Path(local_root) if local_root is not None else DEFAULT_LOCAL_ROOT
        self.wait_timeout_s = float(wait_timeout_s)
        self.poll_interval_s = float(poll_interval_s)
        self.stale_lock_s = float(stale_lock_s)
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.is_local = "file" in protocols or "local" in protocols

    # --- paths --------------------------------------------------------------------------

    def entry_path(self, key: EngineKey) -> str:
        """The shared directory/prefix of ``key``'s entry (a filesystem path, no protocol)."""
        return f"{self.root}/{key.digest()}"

    def _lock_path(self, key: EngineKey) -> str:
        return f"{self.root}/.locks/{key.digest()}.lock"

    # --- reading ------------------------------------------------------------------------

    def check(self, key: EngineKey) -> EntryState:
        """Whether the shared entry is complete: manifest present, every file as listed.

        Reads every byte (sha256), so it costs one download of the entry.
        """
        return self._download(key, None)

    def _download(self, key: EngineKey, target: Path | None) -> EntryState:
        """Verify the shared entry, copying it into ``target`` (a new local directory) if given.

        On success ``target`` holds the files and then the manifest, written last.
        """
        entry = self.entry_path(key)
        self.fs.invalidate_cache(entry)
        try:
            raw = self.fs.cat_file(f"{entry}/{MANIFEST}")
        except FileNotFoundError:
            return EntryState(False, f"{MANIFEST} is missing")
        try:
            files = parse_manifest(raw, key)
        except (ValueError, AttributeError, TypeError) as e:
            return EntryState(False, f"{MANIFEST} is unreadable: {e}")
        for item in files:
            name = item["name"]
            try:
                with self.fs.open(f"{entry}/{name}", "rb") as src:
                    if target is None:
                        size, sha = copy_hashing(src, None)
                    else:
                        (target / name).parent.mkdir(parents=True, exist_ok=True)
                        with open(target / name, "wb") as dst:
                            size, sha = copy_hashing(src, dst)
            except FileNotFoundError:
                return EntryState(False, f"{name} is missing")
            if (size, sha) != (item["size"], item["sha256"]):
                return EntryState(
                    False,
                    f"{name} has {size} bytes (sha256 {sha[:12]}...), the manifest says "
                    f"{item['size']} bytes ({item['sha256'][:12]}...)",
                )
        if target is not None:
            (target / MANIFEST).write_bytes(raw)
        return EntryState(True)

    # --- the public entry point -----------------------------------------------------------

    def ensure(
        self,
        key: EngineKey,
        build: Callable[[str], None],
        *,
        local_dir: str | os.PathLike[str] | None = None,
    ) -> str:
        """A local directory holding a verified copy of ``key``'s entry; builds it if needed.

        ``build(directory)`` must write the engine files into ``directory`` (an empty local
        directory), e.g. by creating an ONNX Runtime session whose ``trt_engine_cache_path``
        is ``directory`` and running one batch. It is called at most once per key across
        every process sharing the cache, unless a lock goes stale. ``local_dir`` defaults to
        ``{local_root}/{digest}``; an existing verified copy there is used as it is.
        """
        target = Path(local_dir) if local_dir is not None else self.local_root / key.digest()
        if local_state(target, key).complete:
            return str(target)
        deadline = time.monotonic() + self.wait_timeout_s
        waited_for: str | None = None
        while True:
            if self._copy_to_local(key, target):
                return str(target)
            with self._try_lock(key) as locked:
                if locked:
                    # Re-check under the lock: the previous holder may just have published.
                    if self._copy_to_local(key, target):
                        return str(target)
                    return self._build_and_publish(key, build, target)
            if waited_for is None:
                waited_for = self._lock_path(key)
                logger.info("engine %s: another process is building it; waiting", key.digest()[:12])
            if time.monotonic() > deadline:
                raise EngineCacheError(
                    f"waited {self.wait_timeout_s:g} s for engine {key.digest()} to be built by "
                    f"another process (lock {waited_for}) and it did not appear; expected a "
                    f"complete entry under {self.url}. If no build is running, delete the lock "
                    "file, or raise wait_timeout_s for very slow builds"
                )
            time.sleep(self.poll_interval_s)

    def _copy_to_local(self, key: EngineKey, target: Path) -> bool:
        """Download and verify the shared entry into ``target``; False when it is not complete."""
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key.digest()[:12]}-", dir=target.parent))
        try:
            state = self._download(key, tmp)
            if not state.complete:
                if state.reason != f"{MANIFEST} is missing":
                    logger.warning(
                        "engine cache entry %s is corrupt (%s); it will be rebuilt",
                        self.entry_path(key),
                        state.reason,
                    )
                return False
            install_local(tmp, target, key)
            return True
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _build_and_publish(self, key: EngineKey, build: Callable[[str], None], target: Path) -> str:
        """Under the lock: remove a bad entry, build locally, publish, install the local copy."""
        entry = self.entry_path(key)
        self.fs.invalidate_cache(entry)
        if self.fs.exists(entry):
            logger.warning("removing incomplete engine cache entry %s", entry)
            self._remove(entry)
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".build-{key.digest()[:12]}-", dir=target.parent))
        try:
            start = time.monotonic()
            try:
                build(str(work))
            except RaypipeError:
                raise  # already typed and worded (DeviceUnavailableError, ModelLoadError, ...)
            except Exception as e:
                raise EngineCacheError(
                    f"building engine {key.digest()} failed: {type(e).__name__}: {e}; nothing "
                    "was published. Check that TensorRT was granted and the profile fits the model"
                ) from e
            if not local_files(str(work)):
                raise EngineCacheError(
                    f"build for engine {key.digest()} wrote no files into {work}; expected the "
                    "TensorRT EP's .engine/.profile files there (trt_engine_cache_path must be "
                    "that directory and TensorRT must be granted)"
                )
            manifest = manifest_for(str(work), key)
            write_json_durably(str(work / MANIFEST), manifest)
            logger.info(
                "engine %s built in %.1f s; publishing to %s",
                key.digest()[:12],
                time.monotonic() - start,
                self.url,
            )
            self._publish(work, key, manifest)
            install_local(work, target, key)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return str(target)

    # --- publishing -----------------------------------------------------------------------

    def _publish(self, work: Path, key: EngineKey, manifest: dict[str, Any]) -> None:
        entry = self.entry_path(key)
        tmp = f"{self.root}/.tmp-{uuid.uuid4().hex}"
        names = [item["name"] for item in manifest["files"]]
        try:
            if self.is_local:
                os.makedirs(tmp)
                for name in names:
                    copy_local_durably(work / name, Path(tmp) / name)
                write_json_durably(f"{tmp}/{MANIFEST}", manifest)
                fsync_dir(tmp)
                os.rename(tmp, entry)  # atomic: the entry appears complete or not at all
                fsync_dir(self.root)
                return
            for name in names:
                self.fs.put_file(str(work / name), f"{tmp}/{name}")
            for name in names:
                self.fs.mv(f"{tmp}/{name}", f"{entry}/{name}")
            self.fs.put_file(str(work / MANIFEST), f"{entry}/{MANIFEST}")  # last
        except OSError as e:
            raise EngineCacheError(
                f"cannot publish engine {key.digest()} to {self.url}: {e}; check that the "
                "cache URL is writable from this machine"
            ) from e
        finally:
            with contextlib.suppress(Exception):
                if self.fs.exists(tmp):
                    self.fs.rm(tmp, recursive=True)

    def _remove(self, entry: str) -> None:
        if self.is_local:
            trash = f"{self.root}/.trash-{uuid.uuid4().hex}"
            with contextlib.suppress(FileNotFoundError):
                os.rename(entry, trash)  # readers never see a half-deleted entry
                shutil.rmtree(trash, ignore_errors=True)
            return
        with contextlib.suppress(FileNotFoundError):
            # Manifest first, so the entry stops counting as complete before files go.
            self.fs.rm_file(f"{entry}/{MANIFEST}")
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(entry, recursive=True)

    # --- locking --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _try_lock(self, key: EngineKey) -> Iterator[bool]:
        """Yield whether this process now holds ``key``'s build lock (non-blocking)."""
        path = self._lock_path(key)
        if self.is_local:
            with flock(path) as held:
                yield held
            return
        owner = self._create_lock_object(path)
        try:
            yield owner is not None
        finally:
            if owner is not None:
                self._release_lock_object(path, owner)

    def _create_lock_object(self, path: str) -> str | None:
        """Create the lock object exclusively; its owner id, or None when someone holds it."""
        owner = uuid.uuid4().hex
        body = json.dumps(
            {
                "owner": owner,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "created_s": time.time(),
            }
        ).encode()
        self.fs.invalidate_cache(path)
        try:
            _exclusive_create(self.fs, path, body)
        except FileExistsError:
            pass
        else:
            # Read back: a filesystem that ignored the exclusive mode shows the last writer.
            with contextlib.suppress(FileNotFoundError, ValueError):
                if json.loads(self.fs.cat_file(path)).get("owner") == owner:
                    return owner
            return None
        # Held: break it only when it is older than stale_lock_s and still the same lock.
        try:
            held = json.loads(self.fs.cat_file(path))
            age_s = time.time() - float(held["created_s"])
        except FileNotFoundError:
            return None  # released meanwhile; the next poll takes it
        except (ValueError, KeyError, TypeError):
            held, age_s = {}, self.stale_lock_s + 1  # unreadable: treat as abandoned
        if age_s <= self.stale_lock_s:
            return None
        logger.warning(
            "engine cache lock %s is %.0f s old (holder %s); breaking it",
            path,
            age_s,
            {k: held.get(k) for k in ("host", "pid")},
        )
        with contextlib.suppress(FileNotFoundError):
            again = json.loads(self.fs.cat_file(path))
            if again.get("owner") == held.get("owner"):
                self.fs.rm_file(path)
        return None  # take it on the next poll, by exclusive create like anyone else

    def _release_lock_object(self, path: str, owner: str) -> None:
        with contextlib.suppress(Exception):
            held = json.loads(self.fs.cat_file(path))
            if held.get("owner") == owner:
                self.fs.rm_file(path)


def _exclusive_create(fs: Any, path: str, body: bytes) -> None:
    """Write ``path`` only if it does not exist (FileExistsError otherwise)."""
    try:
        fs.pipe_file(path, body, mode="create")
        return
    except TypeError:
        pass  # this filesystem's pipe_file has no mode: open with "xb"
    try:
        with fs.open(path, "xb") as f:
            f.write(body)
    except (NotImplementedError, ValueError) as e:
        raise EngineCacheError(
            f"the filesystem of {path!r} ({type(fs).__name__}) cannot create a file "
            f"exclusively ({e}); use a local/shared directory or an object store with "
            "conditional writes (S3, GCS) for the engine cache"
        ) from e
