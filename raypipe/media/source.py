"""Opening inputs: local paths and fsspec URLs, with typed errors.

Every container raypipe opens goes through :func:`open_input`, so a missing file, a
directory, a permission problem or a file FFmpeg cannot read always become the same
:mod:`raypipe.errors` types, and every container is closed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Iterator
from typing import Any

import av

from raypipe.errors import (
    CorruptVideoError,
    InputError,
    InputNotFoundError,
    InputPermissionError,
    UnsupportedVideoError,
)


def is_local(uri: str) -> bool:
    """Whether ``uri`` names a local file (a plain path or ``file://``)."""
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    """The filesystem path of a local ``uri``: a ``file://`` URL percent-decoded, as
    ``Path.as_uri()`` and file managers encode it (``file:///a%20b/c%231.mp4`` is
    ``/a b/c#1.mp4``), a plain path as it is."""
    if not uri.startswith("file://"):
        return uri
    from urllib.parse import unquote

    path = uri[len("file://") :]
    if path.startswith("localhost/"):  # file://localhost/path, RFC 8089's other form
        path = path[len("localhost") :]
    return unquote(path)


_NOT_FILES = {
    stat.S_IFIFO: "a pipe (FIFO, or a shell's <(...))",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
}
"""Local inputs that cannot be read twice or sought in (a block device, a DVD drive's,
can)."""


def check_local(path: str) -> None:
    """Raise the typed error of a local input ``path`` that cannot be read as a file."""
    mode = None  # (unknown where the folder may not be searched: EACCES)
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputNotFoundError(
                f"input '{path}' is a symbolic link that loops (it leads back to itself); "
                "point it at the video"
            ) from None
        if os.path.islink(path):
            raise InputNotFoundError(
                f"input '{path}' is a symbolic link to '{os.readlink(path)}', which does "
                "not exist; check the link"
            ) from None
        if e.errno != errno.EACCES and re.search(r"%0?\d*d", os.path.basename(path)):
            raise UnsupportedVideoError(  # "does not exist" (a sweep): FFmpeg reads these
                f"input '{path}' is an image-sequence pattern, which raypipe does not read: "
                "make one video of the images first, losslessly: ffmpeg -framerate FPS -i "
                f"'{os.path.basename(path)}' -c:v ffv1 sequence.mkv"
            ) from None
        if e.errno != errno.EACCES:
            raise InputNotFoundError(f"input '{path}' does not exist; check the path") from None
    if os.path.isdir(path):
        raise CorruptVideoError(f"input '{path}' is a directory, expected a video file")
    kind = None if mode is None else _NOT_FILES.get(stat.S_IFMT(mode))
    if kind:  # a pipe was "an empty file (0 bytes)", and its writer blocked for good (a sweep)
        raise UnsupportedVideoError(
            f"input '{path}' is {kind}, not a file: raypipe reads a video's chunks apart, "
            "seeking in it; save the stream to a file first"
        )
    if not os.access(path, os.R_OK):
        raise InputPermissionError(
            f"input '{path}' exists but is not readable by this user; check its permissions"
        )
    if os.path.getsize(path) == 0:
        raise CorruptVideoError(f"input '{path}' is an empty file (0 bytes), expected a video")


@contextlib.contextmanager
def open_input(
    uri: str, *, hwaccel: Any = None, block_size: int | None = None, **options: Any
) -> Iterator[av.container.InputContainer]:
    """Open ``uri`` for demuxing and close it on exit, raising raypipe errors.

    Local paths are handed to FFmpeg directly; anything else is opened with fsspec and read
    through a file object (``block_size``: bytes fsspec fetches per read miss; ``None``:
    fsspec's default, megabytes, right for reading on; small for a probe that jumps
    between a header and an index). ``hwaccel``: a PyAV ``HWAccel`` for the decoders;
    ``options``: FFmpeg format options.
    """
    fileobj = None
    try:
        if is_local(uri):
            path = local_path(uri)
            check_local(path)
            target: Any = path
        else:
            fileobj = _open_remote(uri, block_size)
            target = fileobj
        try:
            container = av.open(target, mode="r", options=options or None, hwaccel=hwaccel)
        except av.error.FileNotFoundError as e:
            raise InputNotFoundError(f"input '{uri}' does not exist; check the path") from e
        except av.error.PermissionError as e:
            raise InputPermissionError(f"input '{uri}' is not readable: {e}") from e
        except (av.error.FFmpegError, OSError) as e:
            said = getattr(e, "strerror", None) or e  # not "...: '<none>'" for a URL's file
            raise CorruptVideoError(
                f"input '{uri}' is not a readable media file ({said}); "
                "check that it plays, e.g. with `ffprobe`"
            ) from e
        try:
            yield container
        finally:
            container.close()
    finally:
        if fileobj is not None:
            fileobj.close()


def _root_causes(e: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    err: BaseException | None = e
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


@contextlib.contextmanager
def open_binary(uri: str, *, block_size: int | None = None) -> Iterator[Any]:
    """``uri`` as a seekable binary file object (local or fsspec), with raypipe's errors."""
    if is_local(uri):
        path = local_path(uri)
        check_local(path)
        with open(path, "rb") as f:
            yield f
        return
    f = _open_remote(uri, block_size)
    try:
        yield f
    finally:
        f.close()


def _open_remote(uri: str, block_size: int | None = None) -> Any:
    """Open an fsspec URL; backends wrap the real cause (HTTP status, refused connection)
    in FileNotFoundError or their own types, so the whole chain is looked at."""
    import fsspec

    try:
        if block_size is None:
            f = fsspec.open(uri, "rb").open()
        else:
            # fsspec.open hands extra keywords to the filesystem's constructor; the block
            # size is an argument of the file, so it goes through fs.open
            fs, path = fsspec.core.url_to_fs(uri)
            f = fs.open(path, "rb", block_size=block_size)
    except Exception as e:  # noqa: BLE001 - fsspec backends raise many types (aiohttp, botocore)
        chain = _root_causes(e)
        status = next(
            (getattr(c, "status", None) for c in chain if getattr(c, "status", None)), None
        )
        if status in (401, 403) or any(isinstance(c, PermissionError) for c in chain):
            raise InputPermissionError(
                f"input '{uri}' is refused by its server "
                f"({f'HTTP {status}' if status else 'access denied'}); "
                "check access rights, credentials or that a signed URL has not expired"
            ) from e
        if any(isinstance(c, ConnectionError) for c in chain):
            raise InputError(
                f"input '{uri}' cannot be reached (connection refused or reset); check the host"
            ) from e
        if isinstance(e, IsADirectoryError):
            raise CorruptVideoError(f"input '{uri}' is a directory, expected a video file") from e
        if (
            status == 404
            or isinstance(e, FileNotFoundError)
            or (isinstance(e, OSError) and e.errno == errno.ENOENT)
        ):
            raise InputNotFoundError(f"input '{uri}' does not exist; check the URL") from e
        raise InputError(
            f"input '{uri}' cannot be opened: {type(e).__name__}: {e}; "
            "check the URL and that its fsspec backend (s3fs, gcsfs, aiohttp) is installed"
        ) from e
    if getattr(f, "size", None) == 0:  # as a local empty file is told (a server may not say)
        f.close()
        raise CorruptVideoError(f"input '{uri}' is an empty file (0 bytes), expected a video")
    if uri.lower().startswith(("http://", "https://")):
        _check_ranges(f, uri)
    return f


def _check_ranges(f: Any, uri: str) -> None:
    """Refuse, as it opens, a file whose HTTP server ignores byte ranges (``python -m
    http.server``): fsspec raised ValueError from inside PyAV's reads and the index
    readers, PyAV printed each as a dropped exception's traceback, and the command ended
    with "unexpected" (a sweep). One read of the last byte asks for a range; a file that
    one block holds (fsspec's first read, 5 MB) needs none, and is read as before."""
    size = getattr(f, "size", None)
    if not size or size <= (getattr(f, "blocksize", 0) or 0):
        return
    try:
        f.seek(size - 1)
        f.read(1)
        f.seek(0)
    except ValueError as e:
        if "range" not in str(e).lower():
            raise
        f.close()
        raise InputError(
            f"input '{uri}' is served by a server that does not answer byte-range requests "
            "(it sends the whole file for every read); raypipe reads videos in ranges: "
            "download it first (curl -O URL), or serve it from a server that does (nginx, "
            "Apache, object storage)"
        ) from e
