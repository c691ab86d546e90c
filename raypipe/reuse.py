"""What may be reused on a rerun: the reuse key, the source's identity, output provenance.

A resumed run reuses two kinds of earlier work, and both are trusted only when they were
made by exactly what the new run would use:

- the encoded segments of a cut-off video (in its work directory, with ``run.json``);
- a finished output (it records what made it: a container tag or Parquet metadata).

"What made it" is the :class:`ReuseKey`, built in :func:`reuse_key` and nowhere else, plus
the source's identity (:func:`source_identity`). The key has named parts so that a
mismatch can say what changed (``segments not reused: model spec changed``):

==============  ===========================================================================
part            what it holds
==============  ===========================================================================
``model``       sha256 of the model bytes (a simulated model: its name)
``spec``        every field of the resolved :class:`~raypipe.infer.sidecar.ModelSpec`,
                whether it came from a sidecar, a built-in, the CLI or Python
``processor``   the user processor's identity (empty without one)
``precision``   fp32 / fp16 (TensorRT engines)
``device``      ``gpu`` when the inference actors hold GPUs, else ``cpu``
``batch``       frames per model call
``chunking``    chunk size, GOP splitting, frame sampling (which frames a chunk holds)
``encoder``     codec, pixel format and the options the encoder gets (crf, preset and the
                user's, after NVENC fallback)
``format``      the format versions of raypipe's segments and provenance records, and
                for tensor outputs of its analysis tables (:data:`TABLE_FORMAT`)
==============  ===========================================================================

The decoder (CPU or NVDEC) is not a part: H.264/HEVC/AV1 decoding is bit-exact by the
standards, so both give the same frames. Nor is the hand-off (``--handoff``): frames handed
to the actors as YUV are converted to the bits the RGB hand-off gives
(:mod:`raypipe.media.yuv`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from raypipe import storage
from raypipe.config import RunConfig
from raypipe.media.encode import SEGMENT_FORMAT, encoder_options
from raypipe.media.source import is_local, local_path

FORMAT_VERSION = 1
"""Bumped when provenance records change meaning (segments have their own
:data:`~raypipe.media.encode.SEGMENT_FORMAT`, also in the key)."""
TABLE_FORMAT = 2
"""The analysis tables' layout, in the key of tensor outputs only (video outputs keep
their key): 2 keeps ``video_id`` in the partition path only (1 had it as a column too,
which pandas and pyarrow refuse to merge with the partition), so tables of 1 are redone."""
PROVENANCE_TAG = "raypipe"
"""The container tag (format metadata) a finished output carries its provenance in."""
_REMOTE_IDENTITY_KEYS = (
    "ETag", "etag", "Content-MD5", "Digest", "md5Hash", "crc32c", "generation",
    "Last-Modified", "LastModified", "last_modified", "mtime", "updated",
)  # fmt: skip
_EDGE_BYTES = 1 << 16  # head and tail hashed when a remote store gives no version


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _short_digests(parts: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Each key part's digest in 8 characters: what an output's record holds of them."""
    return {name: _digest(value)[:8] for name, value in parts}


@dataclass(frozen=True)
class ReuseKey:
    """Everything that changes a segment or an output, as named parts (canonical JSON)."""

    parts: tuple[tuple[str, str], ...]

    @property
    def digest(self) -> str:
        return _digest(_canonical(dict(self.parts)))

    def as_dict(self) -> dict[str, str]:
        return dict(self.parts)

    def changed(self, recorded: Mapping[str, str]) -> list[str]:
        """Names of the parts that differ from ``recorded`` (a previous key's parts)."""
        names = dict(self.parts).keys() | recorded.keys()
        mine = dict(self.parts)
        return sorted(n for n in names if mine.get(n) != recorded.get(n))


def reuse_key(
    cfg: RunConfig,
    *,
    model_bytes: bytes,
    spec: Any = None,
    uses_gpu: bool,
    processor: str = "",
    tensor: bool = False,
) -> ReuseKey:
    """The key of a run: see the module docstring for its parts. ``spec`` is the resolved
    model spec (a dataclass, ``None`` for a simulated model); ``processor`` the identity of
    a user processor; ``uses_gpu`` whether the inference actors hold GPUs; ``tensor``
    whether the run writes analysis tables instead of video."""
    chunk, encode = cfg.chunk, cfg.encode
    parts = {
        "model": hashlib.sha256(model_bytes).hexdigest() if model_bytes else cfg.model.model,
        "spec": _canonical(dataclasses.asdict(spec) if spec is not None else None),
        "processor": processor,
        "precision": cfg.model.precision,
        "device": "gpu" if uses_gpu and cfg.model.device != "cpu" else "cpu",
        "batch": str(cfg.model.batch_size),
        "chunking": _canonical(
            [
                chunk.chunk_frames,
                None if chunk.chunk_mib is None else float(chunk.chunk_mib),
                chunk.split_gops,
                chunk.every_n_frames,
                chunk.sample_fps,
            ]
        ),
        # the options the encoder gets, so settings it ignores (crf next to qp) change nothing;
        # codec "auto": those of each encoder it may pick (libx264, libvpx-vp9 for WebM)
        "encoder": _canonical(
            [
                encode.codec,
                encode.pix_fmt,
                *(sorted(encoder_options(e).items()) for e in encode.candidates()),
            ]
        ),
        "format": f"provenance {FORMAT_VERSION}, segments {SEGMENT_FORMAT}"
        + (f", tables {TABLE_FORMAT}" if tensor else ""),
    }
    return ReuseKey(parts=tuple(sorted(parts.items())))


def source_identity(uri: str) -> str:
    """What identifies the source's content without reading it all: size and mtime for a
    local file; size and the store's version fields (ETag, Last-Modified, generation, ...)
    for a URL, or a hash of its first and last 64 KiB where the store gives none."""
    if is_local(uri):
        st = os.stat(local_path(uri))
        return f"size={st.st_size};mtime_ns={st.st_mtime_ns}"
    fs, path = storage.filesystem(uri)
    info = fs.info(path)
    size = int(info.get("size") or 0)
    versions = [f"{k}={info[k]}" for k in _REMOTE_IDENTITY_KEYS if info.get(k)]
    if not versions:
        edges = hashlib.sha256()
        with fs.open(path, "rb") as f:
            edges.update(f.read(_EDGE_BYTES))
            if size > 2 * _EDGE_BYTES:
                f.seek(size - _EDGE_BYTES)
                edges.update(f.read(_EDGE_BYTES))
        versions = [f"edges={edges.hexdigest()[:32]}"]
    return ";".join([f"size={size}", *versions])


@dataclass(frozen=True)
class Provenance:
    """What made a finished output or a work directory: the run's key and the source.

    ``key`` is :attr:`ReuseKey.digest`, ``source`` a digest of :func:`source_identity`;
    ``parts`` (work directories only) the key's parts, so a mismatch can name them.
    """

    key: str
    source: str
    parts: tuple[tuple[str, str], ...] = ()
    part_digests: tuple[tuple[str, str], ...] = ()  # an output's: each part's, in short

    @classmethod
    def of(cls, key: ReuseKey, source_identity: str) -> Provenance:
        return cls(key=key.digest, source=_digest(source_identity), parts=key.parts)

    def same_source(self, source_identity: str) -> bool:
        """Whether :func:`source_identity`'s ``source_identity`` is the recorded source's."""
        return self.source == _digest(source_identity)

    def to_text(self, *, with_parts: bool = False, part_digests: bool = False) -> str:
        """The record: key and source, with the key's ``parts`` (a work directory's), or
        each part's short digest (``part_digests``: an output's tag, so that a rerun names
        what changed, "redone: the settings changed (model)", in a few bytes a part)."""
        doc: dict[str, Any] = {"v": FORMAT_VERSION, "key": self.key, "source": self.source}
        if with_parts:
            doc["parts"] = dict(self.parts)
        if part_digests:  # from the parts, or as a parsed record holds them
            digests = _short_digests(self.parts) or dict(self.part_digests)
            if digests:
                doc["pd"] = digests
        return _canonical(doc)

    @staticmethod
    def parse(text: str | bytes | None) -> Provenance | None:
        """The record :meth:`to_text` wrote, or ``None`` (absent, damaged, other format);
        also a comment's last line (:func:`provenance_tags`: the user's comment above it)."""
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        text = (text or "").rsplit("\n", 1)[-1]
        try:
            doc = json.loads(text)
            if doc.get("v") != FORMAT_VERSION:
                return None
            parts = tuple(sorted((str(k), str(v)) for k, v in doc.get("parts", {}).items()))
            digests = tuple(sorted((str(k), str(v)) for k, v in doc.get("pd", {}).items()))
            return Provenance(
                key=str(doc["key"]), source=str(doc["source"]), parts=parts, part_digests=digests
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def why_not(self, recorded: Provenance | None, *, what: str = "output") -> str:
        """Why work recording ``recorded`` is not this run's (``""`` when it is)."""
        if recorded is None:
            return f"the {what} does not record what made it"
        if recorded.source != self.source:
            return "the source changed"
        if recorded.key != self.key:
            changed: list[str] = []
            if recorded.parts:
                changed = ReuseKey(self.parts).changed(dict(recorded.parts))
            elif recorded.part_digests:  # an output's record (the redo said no more; a sweep)
                changed = ReuseKey(tuple(_short_digests(self.parts).items())).changed(
                    dict(recorded.part_digests)
                )
            return "the settings changed" + (f" ({', '.join(changed)})" if changed else "")
        return ""


_TAG_BY_FORMAT = {"avi": "comment", "mp4": "comment", "mov": "comment", "mpegts": ""}
"""AVI keeps only its INFO keys; MPEG-TS none. MP4/MOV keep any key only with
``movflags=use_metadata_tags``, and that drops the iTunes tags cover art lives in, so they
use the standard comment (``©cmt``)."""


def provenance_tags(
    provenance: Provenance, muxer: str, source: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The container tags that record ``provenance`` in an output written by ``muxer``
    (FFmpeg's format name), and the ``source``'s comment without an earlier run's record.
    Where the record goes into the comment (MP4, MOV, AVI), the source's comment stays
    above it, on lines of its own: it was replaced by the record (a sweep). MPEG-TS holds
    no free-form tags: its outputs record nothing and a resumed run redoes them."""
    tag = _TAG_BY_FORMAT.get(muxer, PROVENANCE_TAG)
    said = user_comment(next((v for k, v in (source or {}).items() if k.lower() == "comment"), ""))
    tags = {"comment": said} if said else {}
    if tag:
        record = provenance.to_text(part_digests=True)
        tags[tag] = f"{said}\n{record}" if tag == "comment" and said else record
    return tags


def user_comment(text: str) -> str:
    """A comment without the provenance record an earlier run put on its last line."""
    if Provenance.parse(text) is None:
        return text
    return text.rsplit("\n", 1)[0] if "\n" in text else ""


def not_provenance(key: str, value: str) -> bool:
    """Whether a source's container tag may be copied into an output as it is: any tag but
    a provenance record (raypipe's own tag, or a comment holding one, which
    :func:`provenance_tags` gives back without it), so that an output made from an
    earlier output records only the run that made it."""
    return key.lower() != PROVENANCE_TAG and Provenance.parse(value) is None


def provenance_from_tags(tags: Mapping[str, str]) -> Provenance | None:
    """The provenance an output's container tags record (Matroska upper-cases tag names)."""
    lower = {k.lower(): v for k, v in tags.items()}
    for tag in (PROVENANCE_TAG, "comment"):
        found = Provenance.parse(lower.get(tag))
        if found is not None:
            return found
    return None
