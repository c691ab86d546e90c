"""An AVI file's copied MP3 and AC-3 audio headers, mended as ``ffmpeg``'s stream copy writes them.

An AVI demuxer gives MP3 audio the ``block_align`` of its stream header: 1152 (a frame's
samples), as most AVI writers put it (VBR MP3), and AC-3 its frame size. FFmpeg's AVI muxer
writes ``block_align`` as the stream's sample size (``strh.dwSampleSize``), which says the
stream is made of blocks of that many bytes, and its length as the bytes over it: a
2-second MP3 track of 78 packets of about 209 bytes read as 14 blocks, 0.37 s (``ffprobe``:
no stream duration; players that trust the header show and seek the sound wrongly).
``ffmpeg``'s own stream copy clears ``block_align`` of MP3 (1, 576 or 1152) and AC-3 before
it writes the file, so that the header counts packets. PyAV copies the stream's parameters
with no way to change ``block_align``, so :func:`mend_copied_audio` writes what FFmpeg's
muxer would have written with it cleared, in the closed file: the sample size 0 and the
length in packets (``strh.dwLength``), and in an OpenDML file (past 1 GiB) each index
segment's duration in packets (``indx`` entries' ``dwDuration``). Nothing else in the file
depends on it (the ``strf`` format header of these codecs does not: FFmpeg's
``ff_put_wav_header``), and nothing moves.

Copied Microsoft or IMA ADPCM (an old digital camera's AVI) has no frame size FFmpeg's
muxer knows, so it times the blocks by the bit rate, and the sound plays at the wrong
speed (``ffmpeg -c copy`` in FFmpeg 5.1 too): its scale and rate are written as the
samples of a block (the format header's ``wSamplesPerBlock``) over the sample rate.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import BinaryIO

_MP3, _AC3, _EXTENSIBLE = 0x0055, 0x2000, 0xFFFE  # WAVEFORMATEX wFormatTag
_ADPCM = (0x0002, 0x0011)  # Microsoft's and IMA's (old digital cameras' AVIs)
_MP3_BLOCKS = (1, 576, 1152)  # ffmpeg's stream copy clears these (fftools' streamcopy_init)
_STRH_SCALE, _STRH_LENGTH, _STRH_SAMPLE_SIZE = 20, 32, 44  # byte offsets in strh's data
_HEAD_BYTES = 1 << 20  # the header list is read whole; FFmpeg's is a few KiB per stream


@dataclass
class _AudioHeader:
    stream: int  # the stream's number in chunk ids (``01wb``)
    strh: int  # file offset of the strh chunk's data
    indx: int  # file offset of the indx chunk's data (an OpenDML file's), else -1
    packets: bool  # its sample size is to be cleared, its lengths counted in packets
    rate: tuple[int, int] | None  # its (scale, rate) where they are to be written


def mend_copied_audio(path: str) -> int:
    """Mend, in place, the stream headers of the AVI file at ``path`` whose MP3 or AC-3
    audio carries a sample size ``ffmpeg``'s stream copy would have cleared, or whose
    ADPCM audio is timed by its bit rate instead of its blocks' samples (the module
    docstring); the number of streams mended (0: none needed it, or the file is not laid
    out as FFmpeg's muxer writes it, and is left as it is)."""
    with open(path, "r+b") as f:
        head = f.read(_HEAD_BYTES)
        streams = _audio_to_mend(head)
        counted = [s for s in streams if s.packets]
        counts = _packet_counts(f, head, counted) if counted else {}
        if counts is None:
            streams = [s for s in streams if not s.packets]
        for s in streams:
            if s.packets and counts is not None:
                f.seek(s.strh + _STRH_LENGTH)
                f.write(struct.pack("<I", counts[s.stream]))
                f.seek(s.strh + _STRH_SAMPLE_SIZE)
                f.write(struct.pack("<I", 0))
            if s.rate is not None:
                f.seek(s.strh + _STRH_SCALE)
                f.write(struct.pack("<II", *s.rate))
    return len(streams)


def _chunks(data: bytes, start: int, end: int) -> list[tuple[bytes, int, int]]:
    """The chunks between ``start`` and ``end`` of ``data``: (id, data offset, data size);
    a ``LIST``'s id is its list type (its data then starts after the type)."""
    found = []
    at = start
    while at + 8 <= end:
        ckid, size = data[at : at + 4], struct.unpack_from("<I", data, at + 4)[0]
        if ckid == b"LIST" and at + 12 <= end:
            found.append((data[at + 8 : at + 12], at + 12, size - 4))
        else:
            found.append((ckid, at + 8, size))
        at += 8 + size + (size & 1)
    return found


def _audio_to_mend(head: bytes) -> list[_AudioHeader]:
    if head[:4] != b"RIFF" or head[8:12] != b"AVI ":
        return []
    hdrl = [c for c in _chunks(head, 12, len(head)) if c[0] == b"hdrl"]
    if not hdrl or hdrl[0][1] + hdrl[0][2] > len(head):
        return []
    _, start, size = hdrl[0]
    streams = []
    strls = [c for c in _chunks(head, start, start + size) if c[0] == b"strl"]
    for number, (_, at, length) in enumerate(strls):
        parts = {ckid: (offset, n) for ckid, offset, n in _chunks(head, at, at + length)}
        strh, strf = parts.get(b"strh"), parts.get(b"strf")
        if strh is None or strf is None or strh[1] < 48 or strf[1] < 2:
            continue
        if head[strh[0] : strh[0] + 4] != b"auds":
            continue
        sample_size = struct.unpack_from("<I", head, strh[0] + _STRH_SAMPLE_SIZE)[0]
        tag = _format_tag(head, *strf)
        packets = (tag == _MP3 and sample_size in _MP3_BLOCKS) or (tag == _AC3 and sample_size)
        rate = _block_rate(head, strh[0], *strf) if tag in _ADPCM else None
        if packets or rate is not None:
            indx = parts.get(b"indx", (-1, 0))[0]
            streams.append(
                _AudioHeader(stream=number, strh=strh[0], indx=indx, packets=packets, rate=rate)
            )
    return streams


def _block_rate(head: bytes, strh: int, at: int, size: int) -> tuple[int, int] | None:
    """The (scale, rate) of ADPCM audio timed by its blocks: each of ``block_align`` bytes
    (its sample size) holds ``wSamplesPerBlock`` samples (the format's extra bytes), where
    the header says otherwise (FFmpeg's muxer, not knowing the samples of a copied
    stream's blocks, timed them by the bit rate: an MS ADPCM track's 8/125 s a block
    against 1018/11025, the sound at 1.4 times its speed; ``ffmpeg -c copy`` too)."""
    if size < 20 or struct.unpack_from("<H", head, at + 16)[0] < 2:  # cbSize: no extra bytes
        return None
    sample_rate = struct.unpack_from("<I", head, at + 4)[0]
    per_block = struct.unpack_from("<H", head, at + 18)[0]
    scale, rate = struct.unpack_from("<II", head, strh + _STRH_SCALE)
    if not sample_rate or not per_block or scale * sample_rate == rate * per_block:
        return None
    common = math.gcd(per_block, sample_rate)
    return per_block // common, sample_rate // common


def _format_tag(head: bytes, at: int, size: int) -> int:
    """The audio format of a ``strf`` (WAVEFORMATEX) chunk: its ``wFormatTag``, or for
    WAVE_FORMAT_EXTENSIBLE (FFmpeg's for more than 2 channels: a 5.1 AC-3's) the format in
    its sub-format GUID's first field (5.1 AC-3 went unmended: a sweep)."""
    tag = struct.unpack_from("<H", head, at)[0]
    if tag == _EXTENSIBLE and size >= 40:  # WAVEFORMATEX (18), samples, mask, the GUID
        return int(struct.unpack_from("<I", head, at + 24)[0])
    return int(tag)


def _packet_counts(f: BinaryIO, head: bytes, streams: list[_AudioHeader]) -> dict[int, int] | None:
    """Each stream's packets, from the OpenDML index (whose segment durations are mended
    on the way) or the ``idx1`` index; ``None`` where neither is there."""
    if all(s.indx >= 0 for s in streams):
        return {s.stream: _count_odml(f, head, s) for s in streams}
    if any(s.indx >= 0 for s in streams):
        return None  # not as FFmpeg's muxer lays an OpenDML file out
    idx1 = _idx1(f, head)
    if idx1 is None:
        return None
    ids = {f"{s.stream:02d}wb".encode(): s.stream for s in streams}
    counts = dict.fromkeys(ids.values(), 0)
    for (ckid,) in struct.iter_unpack("<4s12x", idx1):
        if ckid in ids:
            counts[ids[ckid]] += 1
    return counts


def _count_odml(f: BinaryIO, head: bytes, stream: _AudioHeader) -> int:
    """The packets of ``stream`` over its OpenDML segments, each super index entry's
    duration written as its segment's packets (FFmpeg's muxer wrote bytes over the
    sample size there too)."""
    in_use = struct.unpack_from("<I", head, stream.indx + 4)[0]
    total = 0
    for i in range(in_use):
        entry = stream.indx + 24 + 16 * i  # qwOffset, dwSize, dwDuration
        offset = struct.unpack_from("<Q", head, entry)[0]
        f.seek(offset + 8 + 4)  # the ix## chunk: id, size, wLongsPerEntry and the types
        entries = struct.unpack("<I", f.read(4))[0]
        f.seek(entry + 12)
        f.write(struct.pack("<I", entries))
        total += entries
    return total


def _idx1(f: BinaryIO, head: bytes) -> bytes | None:
    """The ``idx1`` chunk's entries of the file's first RIFF (after its ``movi`` list)."""
    f.seek(0, 2)
    end = min(f.tell(), 8 + struct.unpack_from("<I", head, 4)[0])
    at = 12
    while at + 8 <= end:
        f.seek(at)
        ckid, size = struct.unpack("<4sI", f.read(8))
        if ckid == b"idx1":
            return f.read(size)
        at += 8 + size + (size & 1)
    return None
