"""Test helpers shipped with raypipe: synthetic clips, broken inputs, reference readers.

Needs only PyAV, numpy and (for :mod:`raypipe.testing.reference`) the ffmpeg/ffprobe CLIs.
"""

from raypipe.testing.bad_inputs import (
    write_audio_only,
    write_corrupt_packets,
    write_empty_file,
    write_text_as_video,
    write_truncated_header,
    write_truncated_tail,
    write_zero_frames,
)
from raypipe.testing.media import (
    CLIP_KINDS,
    CLIP_SUFFIX,
    ClipSpec,
    clip_kind_names,
    frame_pattern,
    make_clip,
    make_named_clip,
    read_index,
)
from raypipe.testing.reference import (
    audio_packets,
    decode_all,
    ffmpeg_decode_errors,
    ffprobe_frame_count,
    start_offset_seconds,
)

__all__ = [
    "CLIP_KINDS",
    "CLIP_SUFFIX",
    "ClipSpec",
    "audio_packets",
    "clip_kind_names",
    "decode_all",
    "ffmpeg_decode_errors",
    "ffprobe_frame_count",
    "frame_pattern",
    "make_clip",
    "make_named_clip",
    "read_index",
    "start_offset_seconds",
    "write_audio_only",
    "write_corrupt_packets",
    "write_empty_file",
    "write_text_as_video",
    "write_truncated_header",
    "write_truncated_tail",
    "write_zero_frames",
]
