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
from raypipe.testing.judge import ProbedStream, ProbedVideo, ffprobe_video, pix_fmt_layout
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
    audio_packet_times,
    audio_packets,
    decode_all,
    decode_upright,
    ffmpeg_decode_errors,
    ffprobe_frame_count,
    first_frame_hdr,
    psnr,
    start_offset_seconds,
    subtitle_cues,
    yuv_planes,
)
from raypipe.testing.traits import TRAIT_CLIPS, make_trait_clip, trait_names

__all__ = [
    "CLIP_KINDS",
    "CLIP_SUFFIX",
    "TRAIT_CLIPS",
    "ClipSpec",
    "ProbedStream",
    "ProbedVideo",
    "audio_packet_times",
    "audio_packets",
    "clip_kind_names",
    "decode_all",
    "decode_upright",
    "ffmpeg_decode_errors",
    "ffprobe_frame_count",
    "ffprobe_video",
    "first_frame_hdr",
    "frame_pattern",
    "make_clip",
    "make_named_clip",
    "make_trait_clip",
    "pix_fmt_layout",
    "psnr",
    "read_index",
    "start_offset_seconds",
    "subtitle_cues",
    "trait_names",
    "yuv_planes",
    "write_audio_only",
    "write_corrupt_packets",
    "write_empty_file",
    "write_text_as_video",
    "write_truncated_header",
    "write_truncated_tail",
    "write_zero_frames",
]
