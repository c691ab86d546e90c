"""What an archive run processes: inputs listed from a folder, glob, URI list or manifest.

``INPUTS`` is one of:

- a directory or fsspec prefix (``s3://bucket/videos/``): every file below it whose name
  ends in a video extension (entries so named that are not files are listed too, and fail
  as typed errors rather than vanish);
- a glob (``s3://bucket/videos/**/*.mp4``), unless a file or folder has that very name
  (``Season [2020]``, a download named ``Title [id].mp4``);
- a text file (``.txt``, ``.lst``) with one URI per line (``#`` comments);
- a CSV or Parquet manifest with a ``uri`` column and an optional ``output`` column.

From a directory or a glob, hidden entries (a name starting with ``.``: the ``._`` files
macOS writes beside each file it copies to exFAT, FAT or network drives, a drive's
``.Trashes``) are left out, as a shell's ``*`` leaves them out, unless the glob spells the
dot; so is everything below OUTPUT_DIR when it lies inside the inputs (the outputs of an
earlier run are not inputs). A line says how many of either were named as videos.

Each input gets an output path relative to OUTPUT_DIR that mirrors its path relative to the
listing's base (the directory, the glob's fixed prefix, or the URIs' common parent; URIs
that share none mirror their whole path: ``bucket/key``, ``host/path``), with
``.mp4`` for an extension raypipe does not write (``.wmv``, ``.flv``, ``.mpg``, ``.mts``;
a manifest's own ``output`` is kept as named). A relative output that would escape
OUTPUT_DIR (``..``, absolute) is rejected for that input.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import posixpath
import urllib.parse
from dataclasses import dataclass

import fsspec

from raypipe import storage
from raypipe.config import LISTED_OUTPUT_EXTENSION, OUTPUT_FORMATS
from raypipe.errors import (
    ConfigError,
    InputNotFoundError,
    InputPermissionError,
    RaypipeError,
    StorageError,
)
from raypipe.media.source import is_local, local_path

log = logging.getLogger("raypipe")

VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg",
    ".mpeg", ".flv", ".wmv", ".3gp", ".nut", ".ogv",
    # broadcast and camcorder masters, DVDs, older downloads
    ".mxf", ".dv", ".vob", ".mod", ".tod", ".f4v", ".asf", ".divx", ".rm", ".rmvb",
)  # fmt: skip
IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".gif", ".webp", ".apng", ".bmp", ".tif", ".tiff", ".avif",
    ".heic",
)  # fmt: skip
"""Pictures a folder's archive leaves out (with a line): FFmpeg reads them, as videos of
one frame (or, animated, of several), but a folder of photos beside videos is not work."""
_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class InputItem:
    """One input URI, its output path relative to OUTPUT_DIR, and why it is invalid (if).
    ``renamed``: the output's extension is not the input's (:func:`_item`); ``named``: a
    manifest's ``output`` column named the output."""

    uri: str
    relative_output: str
    error: str = ""
    renamed: bool = False
    named: bool = False


def not_one_video(uri: str) -> str:
    """Why ``uri``, given to ``raypipe run`` (one video), names more than one, with the
    ``raypipe archive`` command that takes it; ``""`` when it does not: a local folder, a
    glob that no file is named as (a folder named ``Season [2020]`` is a folder), or a
    URI that ends with ``/``."""
    if any(c in uri for c in _GLOB_CHARS) and not storage.exists(uri):
        kind = "a pattern"
    elif uri.endswith("/") or (is_local(uri) and os.path.isdir(local_path(uri))):
        kind = "a folder"
    else:
        return ""
    return (
        f"input '{uri}' is {kind}; `raypipe run` processes one video. "
        f"`raypipe archive '{uri}' OUTPUT_DIR` processes every video it names (resumable)"
    )


def list_inputs(inputs: str, output_dir: str = "") -> list[InputItem]:
    """The inputs named by ``inputs`` (see the module docstring), in a stable order; from a
    directory or glob, none below ``output_dir``. An object store that refuses the
    credentials, or cannot be reached, is a typed error (it was "PermissionError:
    Forbidden (unexpected ...)": a sweep)."""
    try:
        return _listed(inputs, output_dir)
    except RaypipeError:
        raise
    except PermissionError as e:
        raise InputPermissionError(
            f"inputs '{inputs}': access denied ({e}); these credentials need to list and read them"
        ) from e
    except Exception as e:
        if is_local(inputs):
            raise
        raise StorageError(f"cannot list inputs '{inputs}': {type(e).__name__}: {e}") from e


def _listed(inputs: str, output_dir: str) -> list[InputItem]:
    lower = inputs.lower()
    if lower.endswith((".txt", ".lst")):
        return _from_uris(_read_uri_list(inputs))
    if lower.endswith(".csv"):
        return _from_manifest(_read_csv(inputs))
    if lower.endswith(".parquet"):
        return _from_manifest(_read_parquet(inputs))
    fs, path = storage.filesystem(inputs)
    if any(c in inputs for c in _GLOB_CHARS) and not fs.exists(path):
        return _from_glob(inputs, output_dir)  # a folder named "Season [2020]" is a folder
    if not fs.exists(path):
        raise InputNotFoundError(
            f"inputs '{inputs}' do not exist; pass a directory, glob, "
            "URI list (.txt) or manifest (.csv/.parquet)"
        )
    if fs.isdir(path):
        if output_dir and _same_folder(inputs, output_dir):
            raise ConfigError(
                f"OUTPUT_DIR '{output_dir}' is the inputs' folder itself: the outputs would go "
                "among the inputs (x.flv's x.mp4 beside it) and be taken for inputs by the "
                "next run; give another OUTPUT_DIR, or a folder inside this one (its videos "
                "are left out of the inputs)"
            )
        return _from_directory(inputs, output_dir)
    return [_item(inputs, posixpath.basename(path))]


def _same_folder(inputs: str, output_dir: str) -> bool:
    """Whether ``output_dir`` is the folder ``inputs`` (by real path where both are local;
    a sweep wrote outputs among the inputs, and the rerun failed every video)."""
    if is_local(inputs) and is_local(output_dir):
        return os.path.realpath(local_path(inputs)) == os.path.realpath(local_path(output_dir))
    same = storage.filesystem(inputs)[1].rstrip("/")
    return same == storage.filesystem(output_dir)[1].rstrip("/")


def safe_relative(relative: str) -> str:
    """``relative`` normalised, or :class:`ConfigError` when it would escape OUTPUT_DIR."""
    if (
        not relative
        or relative.startswith(("/", "\\"))
        or "://" in relative
        or (len(relative) > 1 and relative[1] == ":")
    ):
        raise ConfigError(f"output '{relative}' is not a relative path inside OUTPUT_DIR")
    parts = relative.replace("\\", "/").split("/")
    if ".." in parts:
        raise ConfigError(f"output '{relative}' would escape OUTPUT_DIR ('..' is not allowed)")
    clean = posixpath.normpath("/".join(p for p in parts if p not in ("", ".")))
    if clean in ("", "."):
        raise ConfigError(f"output '{relative}' names no file")
    return clean


def _item(uri: str, relative: str, *, named: bool = False) -> InputItem:
    """The item for ``uri`` with the output ``relative``; unless a manifest ``named`` that
    output, an extension raypipe does not write (an old ``.wmv``, ``.flv`` or ``.mpg``, a
    camcorder's ``.mts``) becomes :data:`~raypipe.config.LISTED_OUTPUT_EXTENSION`."""
    problem = storage.not_utf8(uri)
    if problem:  # the row fails alone, its path written so that a table holds it
        shown = storage.absolute(storage.shown_path(uri))
        return InputItem(uri=shown, relative_output="", error=f"input {problem}")
    stem, ext = posixpath.splitext(relative)
    renamed = not named and bool(stem) and ext.lower() not in OUTPUT_FORMATS
    if renamed:
        relative = stem + LISTED_OUTPUT_EXTENSION
    try:
        return InputItem(
            uri=storage.absolute(uri),
            relative_output=safe_relative(relative),
            renamed=renamed,
            named=named,
        )
    except ConfigError as e:
        return InputItem(uri=storage.absolute(uri), relative_output="", error=str(e))


def _protocol_prefix(url: str) -> str:
    return url.split("://", 1)[0] + "://" if "://" in url else ""


def _from_directory(inputs: str, output_dir: str) -> list[InputItem]:
    fs, base = storage.filesystem(inputs)
    prefix = _protocol_prefix(inputs)
    found = _walk_local(base) if is_local(inputs) else fs.find(base, withdirs=True, detail=True)
    named = []
    for path, info in sorted(found.items()):
        if not path.lower().endswith(VIDEO_EXTENSIONS) or path.rstrip("/") == base.rstrip("/"):
            continue
        if info.get("type") == "directory" and _has_video_below(path, found):
            continue  # a folder of videos, not a video: its files are listed themselves
        named.append(path)
    kept = _left_out(named, base, inputs, output_dir, dots_spelled=False)
    images = [
        p
        for p, info in sorted(found.items())
        if p.lower().endswith(IMAGE_EXTENSIONS)
        and info.get("type") != "directory"
        and not _hidden(p, base)
    ]
    if images:  # left out without a word, though a still image is a video of one frame
        log.warning(
            "left out %d image file(s) in '%s' ('%s'%s): a folder's archive takes its videos; "
            "list images in a .txt file, or name them with a glob, to process each as a video",
            len(images),
            inputs,
            _relative_to(images[0], base),
            ", ..." if len(images) > 1 else "",
        )
    return [_item(_uri(prefix, path, inputs), _relative_to(path, base)) for path in kept]


def _walk_local(base: str) -> dict[str, dict[str, str]]:
    """Every file and folder below the local folder ``base`` as ``fs.find(...,
    detail=True)`` gives them (``{path: {"type": ...}}``), links to folders followed, each
    real folder once: fsspec's ``find`` does not follow them, and the videos in a linked
    folder were left out without a word (a sweep); a link back up is walked no further."""
    found: dict[str, dict[str, str]] = {}
    seen: set[str] = set()
    for folder, dirs, files in os.walk(base, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        for name in dirs:
            found[os.path.join(folder, name)] = {"type": "directory"}
        for name in files:
            found[os.path.join(folder, name)] = {"type": "file"}
    return found


def _outputs_below(base: str, inputs: str, output_dir: str) -> str:
    """``output_dir`` as the listed paths below ``base`` spell it (with a closing ``/``),
    or ``""`` when it is not inside the inputs (the same folder is refused:
    :func:`_same_folder`). A local one is compared by its real path: OUTPUT_DIR inside the
    inputs named through a link (or the inputs through one) was taken for another folder, and every
    rerun processed the last run's outputs again, one folder deeper (a sweep)."""
    if not output_dir:
        return ""
    head = base.rstrip("/") + "/"
    outputs = storage.filesystem(output_dir)[1].rstrip("/") + "/"
    if is_local(inputs) and is_local(output_dir):
        real_base, real_out = os.path.realpath(base), os.path.realpath(outputs)
        if real_out == real_base:
            return ""
        if real_out.startswith(real_base.rstrip("/") + "/"):
            outputs = head + os.path.relpath(real_out, real_base) + "/"
    if not outputs.startswith(head) or outputs == head:
        return ""
    return outputs


def _left_out(
    paths: list[str], base: str, inputs: str, output_dir: str, *, dots_spelled: bool
) -> list[str]:
    """``paths`` (below ``base``, named as videos) less the hidden ones (a part of the path
    below ``base`` starts with ``.``; kept where ``dots_spelled``: a glob that names them)
    and those below ``output_dir``, with a line for each kind left out."""
    outputs = _outputs_below(base, inputs, output_dir)
    hidden, earlier, kept = [], [], []
    for path in paths:
        if outputs and path.startswith(outputs):
            earlier.append(path)
        elif not dots_spelled and _hidden(path, base):
            hidden.append(path)
        else:
            kept.append(path)
    if hidden:
        log.warning(
            "left out %d hidden file(s) named as videos in '%s' (a name starting with '.', "
            "such as the ._ files macOS writes beside copies on exFAT and network drives: "
            "'%s'); list them in a .txt file to process them",
            len(hidden),
            inputs,
            _relative_to(hidden[0], base),
        )
    if earlier:
        log.warning(
            "left out %d video(s) below the output directory '%s', which lies inside the "
            "inputs: outputs of an earlier run, not inputs",
            len(earlier),
            output_dir,
        )
    return kept


def _hidden(path: str, base: str) -> bool:
    """Whether a part of ``path`` below ``base`` starts with ``.``."""
    return any(part.startswith(".") for part in _relative_to(path, base).split("/"))


def _has_video_below(directory: str, found: dict[str, dict[str, object]]) -> bool:
    head = directory.rstrip("/") + "/"
    return any(p.startswith(head) for p in found)


def _from_glob(pattern: str, output_dir: str) -> list[InputItem]:
    fs, path = storage.filesystem(pattern)
    prefix = _protocol_prefix(pattern)
    fixed = path[: min(path.find(c) for c in _GLOB_CHARS if c in path)]
    base = fixed if fixed.endswith("/") else posixpath.dirname(fixed)
    dots = any(part.startswith(".") for part in _relative_to(path, base).split("/"))
    found = fs.glob(path, detail=True)
    # a folder the pattern matches (``videos/**`` matches ``videos`` and every folder below
    # it) is not an input, unless it is named as a video: that one fails as a typed error
    named = [
        p
        for p, info in sorted(found.items())
        if info.get("type") != "directory" or p.lower().endswith(VIDEO_EXTENSIONS)
    ]
    kept = _left_out(named, base, pattern, output_dir, dots_spelled=dots)
    return [_item(_uri(prefix, p, pattern), _relative_to(p, base)) for p in kept]


def _uri(prefix: str, path: str, original: str) -> str:
    if prefix and prefix != "file://":
        return prefix + path
    return path if not original.startswith("file://") else "file://" + path


def _relative_to(path: str, base: str) -> str:
    base = base.rstrip("/")
    return path[len(base) + 1 :] if base and path.startswith(base + "/") else path.lstrip("/")


def _read_text(uri: str) -> str:
    try:
        with fsspec.open(uri, "rt", encoding="utf-8-sig") as f:  # Excel's "CSV UTF-8": a BOM
            return str(f.read())
    except FileNotFoundError as e:
        raise InputNotFoundError(f"input list '{uri}' does not exist") from e


def _read_uri_list(uri: str) -> list[str]:
    lines = (line.strip() for line in _read_text(uri).splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _read_csv(uri: str) -> list[dict[str, str]]:
    rows = list(csv.DictReader(io.StringIO(_read_text(uri))))
    if rows and "uri" not in rows[0]:
        raise ConfigError(f"manifest '{uri}' has columns {list(rows[0])}; it needs a 'uri' column")
    return rows


def _read_parquet(uri: str) -> list[dict[str, str]]:
    import pyarrow.parquet as pq

    try:
        with fsspec.open(uri, "rb") as f:
            table = pq.read_table(f)
    except FileNotFoundError as e:
        raise InputNotFoundError(f"manifest '{uri}' does not exist") from e
    except (OSError, ValueError) as e:  # not Parquet (ArrowInvalid is a ValueError), a folder
        raise ConfigError(f"manifest '{uri}' is not a readable Parquet file: {e}") from e
    if "uri" not in table.column_names:
        raise ConfigError(f"manifest '{uri}' has columns {table.column_names}; it needs 'uri'")
    return [{k: "" if v is None else str(v) for k, v in row.items()} for row in table.to_pylist()]


def _common_parent(uris: list[str]) -> str:
    """The deepest folder (or bucket prefix, or URL path) holding every one of ``uris``;
    ``""`` when they share none: different schemes, buckets or hosts, or local paths
    whose only common folder is ``/``."""
    schemes = {_protocol_prefix(u) for u in uris}
    if len(schemes) != 1:
        return ""
    scheme = schemes.pop()
    folders = [u[len(scheme) :].split("/")[:-1] for u in uris]
    common: list[str] = []
    for parts in zip(*folders):
        if any(p != parts[0] for p in parts):
            break
        common.append(parts[0])
    if not any(common):  # nothing, or the root alone
        return ""
    return scheme + "/".join(common)


def _from_uris(uris: list[str]) -> list[InputItem]:
    """Items for listed URIs, each output mirroring its path below the URIs' common parent,
    or, where they share none, its whole path (``bucket/key``, ``host/path``,
    ``home/me/a.mp4``)."""
    absolute = [storage.absolute(u) for u in uris]  # local paths normalised: no "..", "."
    named = [_web_path(a) for a in absolute]
    base = _common_parent(named)
    return [
        _item(a, _relative_to(n, base) if base else n[len(_protocol_prefix(n)) :].lstrip("/"))
        for a, n in zip(absolute, named)
    ]


def _web_path(uri: str) -> str:
    """A web address as the file it names: its path decoded, without its query or fragment
    (``.../get?id=5`` made the output ``get?id=5.mp4``, ``sp%20ace.mp4`` kept its ``%20``,
    and ``x.mp4?token=abc`` was said to have an extension raypipe does not write; a sweep).
    Any other URI as it is (an object store's key may hold a ``?``)."""
    if not uri.lower().startswith(("http://", "https://")):
        return uri
    parts = urllib.parse.urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}{urllib.parse.unquote(parts.path)}"


def _from_manifest(rows: list[dict[str, str]]) -> list[InputItem]:
    rows = [r for r in rows if any((v or "").strip() for v in r.values())]  # ",,": no row
    for n, row in enumerate(rows, 1):
        if not (row.get("uri") or "").strip():  # it was the working directory (a sweep)
            raise ConfigError(
                f"the manifest's row {n} has no uri (its other values: "
                f"{', '.join(repr(v) for v in row.values() if (v or '').strip())}); fill it "
                "in, or delete the row"
            )
    uris = [r["uri"].strip() for r in rows]
    items = []
    for row, uri, mirrored in zip(rows, uris, _from_uris(uris)):
        output = (row.get("output") or "").strip()
        items.append(_item(uri, output, named=True) if output else mirrored)
    return items
