"""Media stages, PyAV only (no Ray): probe → plan → decode → encode → mux."""

from raypipe.media.colour import ColourTags, HdrMetadata
from raypipe.media.decode import DecodedChunk, decode_chunk
from raypipe.media.encode import Segment, check_encoder, encode_segment, encoder_available
from raypipe.media.mux import assemble, output_format
from raypipe.media.picture import PictureFormat
from raypipe.media.plan import Chunk, ChunkPlan, plan_chunks
from raypipe.media.probe import StreamInfo, VideoInfo, make_video_id, probe
from raypipe.media.source import open_input

__all__ = [
    "Chunk",
    "ChunkPlan",
    "ColourTags",
    "DecodedChunk",
    "HdrMetadata",
    "PictureFormat",
    "Segment",
    "StreamInfo",
    "VideoInfo",
    "assemble",
    "check_encoder",
    "decode_chunk",
    "encode_segment",
    "encoder_available",
    "make_video_id",
    "open_input",
    "output_format",
    "plan_chunks",
    "probe",
]
