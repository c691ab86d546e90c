"""Media stages, PyAV only (no Ray): probe → plan → decode → encode → mux."""

from raypipe.media.colour import ColourTags, HdrMetadata
from raypipe.media.containers import output_format
from raypipe.media.decode import DecodedChunk, decode_chunk
from raypipe.media.encode import Segment, check_encoder, encode_segment, encoder_available
from raypipe.media.mux import assemble
from raypipe.media.picture import PictureFormat
from raypipe.media.plan import Chunk, ChunkPlan, Context, plan_chunks
from raypipe.media.probe import StreamInfo, VideoInfo, make_video_id, probe
from raypipe.media.retime import doubled_timing
from raypipe.media.source import open_input

__all__ = [
    "Chunk",
    "ChunkPlan",
    "ColourTags",
    "Context",
    "DecodedChunk",
    "HdrMetadata",
    "PictureFormat",
    "Segment",
    "StreamInfo",
    "VideoInfo",
    "assemble",
    "check_encoder",
    "decode_chunk",
    "doubled_timing",
    "encode_segment",
    "encoder_available",
    "make_video_id",
    "open_input",
    "output_format",
    "plan_chunks",
    "probe",
]
