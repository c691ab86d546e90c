"""Closed captions carried inside the video stream, kept from the source to the output.

TV recordings carry their captions (CEA-608 and CEA-708, ATSC A/53) inside the video, in
each picture: an H.264 or HEVC SEI message (ITU-T T.35, user identifier ``GA94``) or MPEG-2
picture user data. ``ffmpeg``'s transcode keeps them: its decoder hands each frame's
``cc_data`` to the encoder, and libx264 and libx265 write it back into that picture. A
model sees pixels only, so raypipe's mux step takes the captions from the source's video
packets (demuxed, not decoded) and writes each picture's into the output packet of the
same presentation time, as an SEI message of FFmpeg's own form. Frames a model adds (an
interpolated frame) get none, as in ``ffmpeg -vf minterpolate``, where they keep the
caption byte rate. Encoders without such a message (VP9, AV1, ProRes...) lose them, as
with ``ffmpeg``, and the run says so.

Source packets are in decode order and their pictures' times rise only within the
reordering depth, so :class:`CaptionTrack` reads the source a few seconds ahead of the
output's packets and holds only that window.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import av

CARRIERS = {"h264": 6, "hevc": 39}
"""Codecs whose pictures carry captions in an SEI NAL unit, and that NAL unit's type
(HEVC's prefix SEI). MPEG-2 sources carry them in picture user data; outputs are written
in these two only (FFmpeg's MPEG-2 encoder writes its own from frame side data, which
raypipe's frames do not have)."""
READ_FROM = frozenset({*CARRIERS, "mpeg2video"})
"""Source codecs whose captions are read."""
_T35_GA94 = b"\xb5\x00\x31GA94"  # United States, ATSC, user identifier "GA94"
_CC_DATA = 0x03  # ATSC user_data_type_code: cc_data
_SEI_USER_DATA_REGISTERED = 4
_MPEG2_USER_DATA = b"\x00\x00\x01\xb2"
READ_AHEAD_S = Fraction(3)
"""How far past an output picture's time the source is read before its captions count as
absent: more than any decoder's reordering delay (B-frame pyramids reorder within a
fraction of a second)."""


def cc_data(payload: bytes) -> bytes | None:
    """The ``cc_data`` triplets of an ATSC ``GA94`` user data payload (from its
    ``user_data_type_code`` on), or None when it holds no captions to process."""
    if len(payload) < 3 or payload[0] != _CC_DATA or not payload[1] & 0x40:
        return None  # not cc_data, or process_cc_data_flag off (FFmpeg's decoders skip it)
    count = payload[1] & 0x1F
    data = payload[3 : 3 + 3 * count]
    return data if len(data) == 3 * count and count else None


def picture_captions(data: bytes, codec: str, length_size: int) -> bytes | None:
    """The ``cc_data`` a source video packet's picture carries, or None. ``length_size``:
    the bytes of each NAL unit's length (MP4/Matroska H.264 and HEVC), 0 for start codes
    (MPEG-TS, and MPEG-2 in any container)."""
    if codec == "mpeg2video":
        return _mpeg2_captions(data)
    sei_type = CARRIERS.get(codec)
    if sei_type is None:
        return None
    found = []
    for nal in _nal_units(data, length_size):
        if nal and _nal_type(nal, codec) == sei_type:
            header = 1 if codec == "h264" else 2
            for kind, payload in _sei_messages(_unescaped(nal[header:])):
                if kind == _SEI_USER_DATA_REGISTERED and payload.startswith(_T35_GA94):
                    cc = cc_data(payload[len(_T35_GA94) :])
                    if cc:
                        found.append(cc)
    return b"".join(found) or None


def with_captions(data: bytes, cc: bytes, codec: str) -> bytes:
    """``data``, an encoder's Annex B packet (libx264 and libx265 write start codes), with
    an SEI NAL unit holding ``cc`` inserted before its first slice, in the form
    FFmpeg's ``ff_alloc_a53_sei`` writes."""
    count = len(cc) // 3
    payload = _T35_GA94 + bytes([_CC_DATA, 0x40 | count, 0xFF]) + cc[: 3 * count] + b"\xff"
    message = _sei_number(_SEI_USER_DATA_REGISTERED) + _sei_number(len(payload)) + payload
    header = b"\x06" if codec == "h264" else bytes([CARRIERS["hevc"] << 1, 1])
    nal = b"\x00\x00\x00\x01" + header + _escaped(message + b"\x80")
    at = _first_slice(data, codec)
    return data[:at] + nal + data[at:]


def captioned_packet(packet: Any, cc: bytes, codec: str) -> Any:
    """A new packet: an encoder's ``packet`` with ``cc`` (:func:`with_captions`), on its
    times, with its keyframe flag."""
    new = av.Packet(with_captions(bytes(packet), cc, codec))
    new.time_base = packet.time_base
    new.pts, new.dts, new.duration = packet.pts, packet.dts, packet.duration
    new.is_keyframe = packet.is_keyframe
    return new


class CaptionTrack:
    """The captions of a source's video stream by picture time, read ahead as asked."""

    def __init__(self, packets: Iterator[Any], codec: str, length_size: int) -> None:
        self._packets: Iterator[Any] | None = packets
        self._codec = codec
        self._length_size = length_size
        self._pending: dict[Fraction, bytes] = {}
        self._horizon: Fraction | None = None  # the latest picture time read so far
        self.found = 0  # pictures with captions handed out

    def prefetch(self, count: int) -> bool:
        """Read the next ``count`` packets; whether any picture read so far has captions."""
        for _ in range(count):
            if not self._read_one():
                break
        return bool(self._pending)

    def at(self, seconds: Fraction) -> bytes | None:
        """The ``cc_data`` of the source picture shown at ``seconds``, once; None if none."""
        while self._horizon is None or self._horizon < seconds + READ_AHEAD_S:
            if not self._read_one():
                break
        for stale in [t for t in self._pending if t < seconds - READ_AHEAD_S]:
            del self._pending[stale]  # pictures no output frame shows (dropped ones)
        cc = self._pending.pop(seconds, None)
        self.found += cc is not None
        return cc

    def _read_one(self) -> bool:
        """Read one source packet; False once they are all read."""
        packet = next(self._packets, None) if self._packets is not None else None
        if packet is None:
            self._packets = None
            return False
        if packet.pts is not None:
            t = packet.pts * packet.time_base
            self._horizon = t if self._horizon is None else max(self._horizon, t)
            cc = picture_captions(bytes(packet), self._codec, self._length_size)
            if cc:
                self._pending[t] = cc
        return True


def nal_length_size(codec: str, extradata: bytes | None) -> int:
    """The NAL unit length field's size of a stream whose headers are ``extradata``: the
    avcC/hvcC record's, or 0 for start codes (no such record)."""
    if not extradata or extradata[0] != 1:
        return 0
    if codec == "h264" and len(extradata) > 4:
        return (extradata[4] & 3) + 1
    if codec == "hevc" and len(extradata) > 21:
        return (extradata[21] & 3) + 1
    return 0


def _nal_units(data: bytes, length_size: int) -> Iterator[bytes]:
    if length_size:
        i = 0
        while i + length_size <= len(data):
            n = int.from_bytes(data[i : i + length_size], "big")
            yield data[i + length_size : i + length_size + n]
            i += length_size + n
        return
    starts = _start_codes(data)
    for (_, begin), (end, _) in zip(starts, [*starts[1:], (len(data), len(data))]):
        yield data[begin:end].rstrip(b"\x00")  # trailing zeros belong to the next prefix


def _start_codes(data: bytes) -> list[tuple[int, int]]:
    """(where the prefix starts, where the NAL unit after it starts) for each 00 00 01."""
    found, i = [], data.find(b"\x00\x00\x01")
    while i >= 0:
        prefix = i - 1 if i and data[i - 1] == 0 else i
        found.append((prefix, i + 3))
        i = data.find(b"\x00\x00\x01", i + 3)
    return found


def _nal_type(nal: bytes, codec: str) -> int:
    return nal[0] & 0x1F if codec == "h264" else (nal[0] >> 1) & 0x3F


def _first_slice(data: bytes, codec: str) -> int:
    """Where the prefix of ``data``'s first slice NAL unit (a picture's coded data) starts:
    H.264 types 1-5, HEVC's 0-31. SEI must come before it; the encoder's parameter sets
    and its own SEI stay in front."""
    for prefix, begin in _start_codes(data):
        if begin < len(data):
            kind = _nal_type(data[begin:], codec)
            if (1 <= kind <= 5) if codec == "h264" else kind <= 31:
                return prefix
    return len(data)


def _sei_messages(rbsp: bytes) -> Iterator[tuple[int, bytes]]:
    i = 0
    while i < len(rbsp) and rbsp[i] != 0x80:  # 0x80: the RBSP's trailing bits
        kind, i = _sei_read_number(rbsp, i)
        size, i = _sei_read_number(rbsp, i)
        if i + size > len(rbsp):
            return
        yield kind, rbsp[i : i + size]
        i += size


def _sei_read_number(rbsp: bytes, i: int) -> tuple[int, int]:
    value = 0
    while i < len(rbsp) and rbsp[i] == 0xFF:
        value += 255
        i += 1
    return value + (rbsp[i] if i < len(rbsp) else 0), i + 1


def _sei_number(value: int) -> bytes:
    return b"\xff" * (value // 255) + bytes([value % 255])


def _unescaped(ebsp: bytes) -> bytes:
    """A NAL unit's payload without its emulation prevention bytes (00 00 03 -> 00 00)."""
    if b"\x00\x00\x03" not in ebsp:
        return ebsp
    out, zeros = bytearray(), 0
    for b in ebsp:
        if zeros >= 2 and b == 3:
            zeros = 0
            continue
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def _escaped(rbsp: bytes) -> bytes:
    """An RBSP with emulation prevention bytes: 00 00 followed by 00-03 gets a 03 between."""
    out, zeros = bytearray(), 0
    for b in rbsp:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


def _mpeg2_captions(data: bytes) -> bytes | None:
    found = []
    i = data.find(_MPEG2_USER_DATA)
    while i >= 0:
        end = data.find(b"\x00\x00\x01", i + 4)
        body = data[i + 4 : end if end >= 0 else len(data)]
        if body.startswith(b"GA94"):
            cc = cc_data(body[4:])
            if cc:
                found.append(cc)
        i = data.find(_MPEG2_USER_DATA, i + 4)
    return b"".join(found) or None
