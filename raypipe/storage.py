"""fsspec helpers: atomic writes and commits for local paths and object stores.

Nothing half-written is ever visible at an output path. Local files are written under a
temporary name in the same directory and renamed; object stores (``s3://``, ``gs://``)
make an object visible only when its upload completes, so a single put is atomic there.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import socket
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import fsspec

from raypipe.errors import ConfigError, StorageError
from raypipe.media.source import is_local, local_path


def filesystem(uri: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``uri`` and the path within it."""
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def path_text(value: Any, what: str) -> str:
    """``value``, a path or URL (``str`` or ``os.PathLike``), as text; a
    :class:`ConfigError` naming ``what`` (``input``, ``output``, ...) for anything else and
    for an empty one: ``5`` raised a bare TypeError from ``os.fspath``, and ``""`` was read
    as the working directory (a sweep)."""
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"{what} must be a path or URL (str or os.PathLike), got {value!r}")
    text = os.fspath(value)
    if not isinstance(text, str):
        raise ConfigError(f"{what} must be a path or URL as text, got {value!r}")
    if not text.strip():
        raise ConfigError(f"{what} is empty: give a path or URL")
    problem = not_utf8(text)
    if problem:
        raise ConfigError(f"{what} {problem}")
    return text


def not_utf8(path: str) -> str:
    """Why the path ``path`` (a name from the OS: bytes it could not decode are kept as
    surrogates) cannot be processed, ``""`` when it can: a name that is not UTF-8 (Latin-1
    from an old disk) cannot go into Ray's rows and tables, or the command line Ray gives
    its workers (an archive ended as an "unexpected" UnicodeEncodeError; a sweep)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return (
            f"'{shown_path(path)}' is not valid UTF-8 (its bytes shown as \\xNN): raypipe "
            "keeps paths as UTF-8 text; rename it in UTF-8 (convmv -f latin1 -t utf8 does)"
        )
    return ""


def shown_path(path: str) -> str:
    """``path`` as UTF-8 text, the bytes it does not decode written ``\\xNN``."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def absolute(uri: str) -> str:
    """A local path made absolute, URLs as they are. The driver resolves relative paths
    against its own working directory before any task sees them: the tasks and actors of a
    running cluster (``--address``) have another one, where a relative output would land
    unseen (an archive's ``out/`` in the directory ``ray start`` ran in)."""
    return os.path.abspath(local_path(uri)) if is_local(uri) else uri


def join(base: str, *parts: str) -> str:
    """Join URI/path parts with ``/`` (or the OS separator for local paths)."""
    if is_local(base):
        return os.path.join(local_path(base), *parts)
    return posixpath.join(base, *parts)


def split(uri: str) -> tuple[str, str]:
    """(parent, name) of a URI or path."""
    if is_local(uri):
        return os.path.split(local_path(uri))
    parent, _, name = uri.rstrip("/").rpartition("/")
    return parent, name


def exists(uri: str) -> bool:
    if is_local(uri):
        return os.path.exists(local_path(uri))
    fs, path = filesystem(uri)
    return bool(fs.exists(path))


def is_file(uri: str) -> bool:
    """Whether ``uri`` is a file (an object store's key), not a folder or nothing."""
    if is_local(uri):
        return os.path.isfile(local_path(uri))
    fs, path = filesystem(uri)
    try:
        return bool(fs.isfile(path))
    except (FileNotFoundError, PermissionError):
        return False


def makedirs(uri: str) -> None:
    """Make the local directory ``uri`` (and its parents); a file in its place is a typed
    error. Object stores have no directories: nothing to do."""
    if is_local(uri):
        path = local_path(uri)
        if os.path.exists(path) and not os.path.isdir(path):
            raise ConfigError(f"'{uri}' is a file, expected a directory (or a path to make one)")
        os.makedirs(path, exist_ok=True)
    # object stores have no directories


_BUCKETS = ("s3", "s3a", "gs", "gcs")
"""Object stores whose first path part is a bucket, which must exist to be written to."""


@contextlib.contextmanager
def held(lock_path: str, busy: str) -> Iterator[None]:
    """Hold the local file ``lock_path`` for this process while the block runs: an
    advisory lock (``flock``) on it, released when the block ends or the process dies
    (the file, with this process's pid and host in it, is removed as the block ends).
    Where another process (or another run of this one: a service's threads) holds it,
    raise :class:`ConfigError` with ``busy`` formatted with ``who``, the holder's line."""
    import fcntl

    with writing(lock_path):
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            raise ConfigError(busy.format(who=who)) from None
        try:  # unbuffered: a full disk fails here, not again as the file closes
            with writing(lock_path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        except BaseException:  # a full disk: the lock file stayed beside the output (a sweep)
            with contextlib.suppress(OSError):
                os.unlink(lock_path)
            raise
        _HELD.add(lock_path)
        try:
            yield
        finally:
            _HELD.discard(lock_path)
            with contextlib.suppress(OSError):
                os.unlink(lock_path)  # (before the lock goes with the file's closing)
    finally:
        os.close(fd)


_HELD: set[str] = set()
"""The lock files :func:`held` holds now, for :func:`remove_held_locks`."""


def remove_held_locks() -> None:
    """Remove the lock files this process holds, before it ends without unwinding (its
    cluster lost: ``os._exit``); the locks themselves go with the process. They stayed
    beside the output (a test)."""
    for path in list(_HELD):
        with contextlib.suppress(OSError):
            os.unlink(path)


NAME_MAX = 255
"""The longest file name (bytes) of Linux's and macOS's filesystems."""
NAME_EXTRA = 24
"""What raypipe's names beside an output add to its name at most: its work folder
(``.NAME.raypipe-work``, 14), lock (``.NAME.raypipe-lock``, 14) and staging files
(``.NAME.XXXXXXXX.part.mp4``, 19-24)."""


def check_file_path(label: str, path: str) -> None:
    """Fail before any work where a file cannot be written at ``path`` (a run's output, its
    stats or report, an exported model): its folder missing or not writable
    (:func:`writable_dir_problem`), or a folder in its place (found only as a run ended,
    after its work, with the temporary file's name in the message). ``label``: the option's
    name in the message."""
    if is_local(path) and os.path.isdir(local_path(absolute(path))):
        raise ConfigError(f"{label} '{path}' is a directory; give a file path")
    folder, name = split(absolute(path))
    size = len(os.fsencode(name))
    if is_local(path) and size > NAME_MAX - NAME_EXTRA:
        raise ConfigError(  # it failed after the whole run, as an OSError (a sweep)
            f"{label} '{path}': its name is {size} bytes long; raypipe's "
            f"work folder and staging files beside it add up to {NAME_EXTRA} to it, over "
            f"the file system's {NAME_MAX}: name it at most {NAME_MAX - NAME_EXTRA} bytes long"
        )
    problem = writable_dir_problem(folder)
    if problem:
        raise ConfigError(f"{label} '{path}': {problem}")


def writable_dir_problem(uri: str, *, make: bool = False) -> str:
    """Why files cannot be written in the directory ``uri`` (``""``: they can), checked
    before any work: a local one that is missing (made first when ``make``) or a file, or
    where a file cannot be created (a read-only file system, no permission, ``/proc``),
    and an object store's bucket that does not exist. Each failed at the run's first
    write, after Ray's start and the first chunks, as an error the CLI called unexpected
    (an archive's as a Ray traceback several kB long)."""
    if not is_local(uri):
        scheme = uri.split("://", 1)[0].lower()
        if scheme in ("http", "https"):  # PUTs after the whole run (a sweep)
            return (
                "raypipe reads from web addresses (http, https) but does not write to them: "
                "write to a local folder or an object store (s3://BUCKET/...)"
            )
        if scheme == "memory":  # "the work folder ... was removed"
            return (
                "memory:// is the memory of one process, and raypipe's tasks and actors "
                "write from their own: write to a local folder or an object store"
            )
        fs, path = filesystem(uri)
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        bucket = path.strip("/").split("/")[0]
        if protocol in _BUCKETS and bucket:
            # info, not exists: exists says False for refused credentials and an endpoint
            # that does not answer, which read "bucket does not exist; create it" (a sweep)
            try:
                fs.info(bucket)
            except FileNotFoundError:
                return f"bucket '{bucket}' does not exist; create it first"
            except PermissionError as e:
                return (
                    f"bucket '{bucket}' refuses these credentials ({e}): check them "
                    "(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE); raypipe "
                    "lists, reads, writes and deletes under OUTPUT_DIR"
                )
            except Exception as e:  # noqa: BLE001 - no endpoint, no network: the answer
                return f"cannot reach bucket '{bucket}': {type(e).__name__}: {e}"
            if path.strip("/") != bucket and fs.isfile(path):  # a key that is a video
                return f"'{uri}' is a file, not a directory"
        return ""
    path = local_path(uri)
    if os.path.exists(path) and not os.path.isdir(path):
        return f"'{path}' is a file, not a directory"
    made = not os.path.isdir(path)
    if made:
        if not make:
            return f"directory '{path}' does not exist; create it first"
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            return f"cannot make directory '{path}': {e.strerror or e}"
    try:
        # a byte written: a full disk still takes an empty file (a run then failed at its
        # first lock or segment, as an error the CLI called unexpected; a sweep)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".raypipe-probe-")
        try:
            os.write(fd, b"\0")
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        if made:  # not left behind by a run that did nothing
            with contextlib.suppress(OSError):
                os.rmdir(path)
        problem = _WRITE_PROBLEMS.get(e.errno or 0)
        return f"cannot write in '{path}': {problem or e.strerror or e}"
    return ""


_WRITE_PROBLEMS = {
    errno.ENOSPC: "its disk is full; free space there, or write to another folder",
    errno.EDQUOT: "the disk quota there is used up; free space, or write to another folder",
    errno.EROFS: "its file system is read-only; write to another folder",
}
"""Why a local write failed, where the OS's own words name no path and say nothing to do."""


@contextlib.contextmanager
def writing(path: str) -> Iterator[None]:
    """Writes to the local ``path`` (a file, or one in its folder) in the block: a full disk,
    a used-up quota or a read-only file system is a :class:`StorageError` naming the path
    (it came out as "RaypipeError: OSError: [Errno 28] No space left on device", naming
    nothing; a sweep)."""
    try:
        yield
    except StorageError:
        raise
    except OSError as e:
        problem = _WRITE_PROBLEMS.get(e.errno or 0)
        if problem is None:
            raise
        raise StorageError(f"cannot write {path}: {problem}") from e


def write_bytes(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri`` atomically: a hidden temporary file renamed over the
    target locally (readers see the old file or the new one, never part of one; the
    temporary file is removed on failure), one put on an object store. raypipe's one
    writer of whole files (outputs are staged and committed: :func:`commit`)."""
    if is_local(uri):
        path = local_path(uri)
        directory, name = os.path.split(os.path.abspath(path))
        tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:8]}.part")
        try:
            with writing(path):
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return
    fs, path = filesystem(uri)
    fs.pipe_file(path, data)


def write_text(uri: str, text: str) -> None:
    """:func:`write_bytes` of ``text`` in UTF-8."""
    write_bytes(uri, text.encode())


def read_bytes(uri: str) -> bytes:
    if is_local(uri):
        with open(local_path(uri), "rb") as f:
            return f.read()
    fs, path = filesystem(uri)
    return bytes(fs.cat_file(path))


def read_head(uri: str, n: int) -> bytes:
    """The first ``n`` bytes of ``uri`` (all of it when shorter), without reading the rest."""
    if is_local(uri):
        with open(local_path(uri), "rb") as f:
            return f.read(n)
    fs, path = filesystem(uri)
    with fs.open(path, "rb", block_size=max(n, 1 << 16)) as f:
        return bytes(f.read(n))


def list_names(uri: str) -> list[str]:
    """Names of the entries directly under ``uri`` ([] when it does not exist)."""
    if is_local(uri):
        path = local_path(uri)
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    fs, path = filesystem(uri)
    try:
        return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False))
    except FileNotFoundError:
        return []


def remove_tree(uri: str) -> int:
    """Delete ``uri`` and everything under it; missing is fine. Returns how many files are
    left (a store whose credentials may not delete: its bulk delete reports each refused
    key in its answer, which s3fs does not raise)."""
    if is_local(uri):
        import shutil

        path = local_path(uri)
        shutil.rmtree(path, ignore_errors=True)
        return sum(len(files) for _, _, files in os.walk(path))
    fs, path = filesystem(uri)
    with contextlib.suppress(FileNotFoundError, PermissionError):  # what is left: counted
        if _GLOB_CHARS.isdisjoint(path):
            fs.rm(path, recursive=True)  # one bulk delete per thousand keys
        else:  # fsspec's rm reads "[", "*", "?" as a glob: each key by its own name
            for key in fs.find(path):
                with contextlib.suppress(FileNotFoundError):
                    fs.rm_file(key)
    fs.invalidate_cache(path)
    try:
        return len(fs.find(path))
    except (FileNotFoundError, PermissionError):
        return 0


_GLOB_CHARS = frozenset("*?[")
"""What fsspec's ``rm`` (``expand_path``) takes for a glob in a path: ``take[1].mp4``'s work
folder matched only ``take1.mp4``'s, so nothing was deleted, and the warning blamed the
credentials (a sweep)."""


def remove_file(uri: str) -> None:
    """Delete the file ``uri``; missing is fine."""
    fs, path = filesystem(uri)
    try:
        fs.rm_file(path)
    except FileNotFoundError:
        pass


def remove_empty_dirs(uri: str, up_to: str = "") -> None:
    """Remove the local directory ``uri`` if it is empty, then each parent up to ``up_to``
    (included; ``""``: ``uri`` alone) while they are empty. Object stores have no empty
    directories to leave: nothing to do there."""
    if not is_local(uri):
        return
    folder, last = os.path.abspath(local_path(uri)), os.path.abspath(local_path(up_to or uri))
    while folder.startswith(last):
        try:
            os.rmdir(folder)
        except FileNotFoundError:  # gone already: its parent may be empty now
            pass
        except OSError:  # not empty
            return
        if folder == last:
            return
        folder = os.path.dirname(folder)


_REMOTE_STAGING = "raypipe-staging-"


def remove_stale_staging(uri: str) -> int:
    """Remove what crashed writers of ``uri`` left next to it (:func:`local_staging` and
    :func:`write_bytes` temporaries); returns how many. An object store's upload that never
    completed is never visible, but its staged file in this machine's temp directory was
    left there for good when a killed process staged it: any whose process is gone goes
    (an interrupted archive left them in every worker's /tmp: a sweep)."""
    import glob

    if not is_local(uri):
        return remove_orphans(tempfile.gettempdir(), _REMOTE_STAGING)
    directory, name = os.path.split(os.path.abspath(local_path(uri)))
    stem = glob.escape(name)
    patterns = (f".{stem}.*.part*", f"{stem}.*.part")
    stale = {p for pattern in patterns for p in glob.glob(os.path.join(directory, pattern))}
    for path in stale:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return len(stale)


def remove_orphans(directory: str, prefix: str, suffix: str = "") -> int:
    """Remove the files ``{prefix}{PID}-...{suffix}`` in ``directory`` whose process PID no
    longer runs on this machine (a process killed before it could remove its own); returns
    how many. Another user's files, or ones gone meanwhile, are left to their owners."""
    import psutil

    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    removed = 0
    for name in names:
        if not (name.startswith(prefix) and name.endswith(suffix)):
            continue
        pid = name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))
                removed += 1
    return removed


def local_staging(uri: str, suffix: str) -> str:
    """A temporary local path to build ``uri``'s content in before :func:`commit`.

    For a local ``uri`` it sits in the same directory (so the commit is a rename, never a
    copy across filesystems) under a hidden name; for a remote one in the temp directory.
    """
    if is_local(uri):
        directory, name = os.path.split(os.path.abspath(local_path(uri)))
        with writing(local_path(uri)):
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=f".part{suffix}", dir=directory)
    else:
        fd, tmp = tempfile.mkstemp(prefix=f"{_REMOTE_STAGING}{os.getpid()}-", suffix=suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual mode
    return tmp


def commit(staged: str, uri: str) -> None:
    """Move the finished local file ``staged`` to ``uri`` atomically, then drop ``staged``."""
    if is_local(uri):
        os.replace(staged, local_path(uri))
        return
    try:
        fs, path = filesystem(uri)
        fs.put_file(staged, path)
    finally:
        if os.path.exists(staged):
            os.unlink(staged)
