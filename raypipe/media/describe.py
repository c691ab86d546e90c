"""What ``raypipe probe`` prints about a video: streams, pictures (size as shown, rotation,
depth, chroma, colour, HDR) and the chunk plan, as text lines. Pure: no I/O."""

from __future__ import annotations

from raypipe.errors import counted
from raypipe.media.mux import container_tags
from raypipe.media.picture import PictureFormat
from raypipe.media.pixfmt import layout_of
from raypipe.media.plan import ChunkPlan
from raypipe.media.probe import VideoInfo


def probe_lines(info: VideoInfo, plan: ChunkPlan, chunk_frames: int) -> list[str]:
    """The text of ``raypipe probe`` for ``info`` and its ``plan``."""
    lines = [
        f"{info.uri}: {info.format_name}, video stream {info.stream_index}: {info.codec} "
        f"{info.width}x{info.height} {info.pix_fmt}, {float(info.rate):.3f} fps "
        f"({info.rate_num}/{info.rate_den}), time base {info.time_base_num}/{info.time_base_den}",
        f"  {info.n_frames} frames, {len(info.keyframe_pts)} keyframes, "
        f"{info.duration_seconds:.3f}s from {info.start_seconds:.3f}s, "
        f"rotation {info.rotation_degrees}°"
        + (", mirrored" if info.picture_format.mirrored else ""),
    ]
    lines += [f"  {line}" for line in picture_lines(info.picture_format)]
    facts = [f"{k} {v!r}" for k, v in info.video_tags if v and v != "und"]
    if info.timecode:
        facts.append(f"timecode {info.timecode}")
    if facts:
        lines.append(f"  video {', '.join(facts)} (kept)")
    if info.field_order not in ("", "progressive"):  # "(kept)" in every output (a sweep)
        lines.append(
            f"  video field order {info.field_order} (kept in .mkv, and in .mov with ProRes; "
            "other outputs are coded progressive)"
        )
    if info.chapters:
        listed = ", ".join(f"{t!r} {a:.3f}-{b:.3f}s" for a, b, t in info.chapters)
        lines.append(f"  {len(info.chapters)} chapters: {listed} (kept)")
    kept = container_tags(dict(info.tags), {})
    if kept:
        listed = ", ".join(f"{k} {v!r}" for k, v in kept.items())
        lines.append(f"  container tags: {listed} (kept where the output container holds them)")
    for s in info.streams:
        tags = ", ".join(
            x
            for x in (
                s.language and f"language {s.language}",
                # an attachment's ``title`` is its file name (FFmpeg's filename tag)
                s.title and f"{'file' if s.kind == 'attachment' else 'title'} {s.title!r}",
                *s.dispositions,
            )
            if x
        )
        lines.append(f"  stream {s.index}: {s.kind} {s.codec} (kept{'; ' + tags if tags else ''})")
    lines += [f"  left out: {left}" for left in info.left_out]
    lines.append(f"  plan: {counted(len(plan), 'chunk')} of about {chunk_frames} frames")
    for c in plan.chunks:  # half-open display ranges [start_pts, end_pts)
        seek = "start" if c.seek_pts is None else c.seek_pts
        lines.append(
            f"    {c.chunk_id}: [{c.start_pts}, {c.end_pts}) {c.n_frames} frames, seek {seek}"
        )
    return lines


def picture_lines(picture: PictureFormat) -> list[str]:
    """What `raypipe probe` says of the pictures: size as shown, depth, chroma, colour, HDR."""
    width, height = picture.upright_size
    c = picture.colour
    conversion = f"converted as {picture.matrix}, {picture.range}"
    if layout_of(picture.pix_fmt).rgb:  # nothing to convert on decode
        conversion = f"RGB, read as it is; a YUV output is {conversion}"
    lines = [
        f"shown {width}x{height} (coded {picture.coded_width}x{picture.coded_height}, "
        f"{picture.describe_orientation()}), "
        f"{picture.bit_depth}-bit {picture.chroma}"
        + (" with alpha (not kept: outputs have none)" if picture.alpha else "")
        + (", interlaced (each field's chroma converted apart)" if picture.interlaced else ""),
        f"colour: primaries {c.primaries}, transfer {c.transfer}, matrix {c.matrix}, "
        f"range {c.range} ({conversion})",
    ]
    hdr = picture.hdr
    if hdr is not None:
        parts = []
        if hdr.has_mastering:
            parts.append(
                f"mastering display {(hdr.max_luminance or 0) / 10000:g}/"
                f"{(hdr.min_luminance or 0) / 10000:g} cd/m2"
            )
        if hdr.has_light_level:
            parts.append(f"MaxCLL {hdr.max_cll}, MaxFALL {hdr.max_fall}")
        lines.append(f"HDR10: {', '.join(parts)}")
    if picture.stereo:
        lines.append(f"stereo 3D: {picture.stereo} (kept in .mkv outputs)")
    if picture.projection:
        lines.append(f"360° video: {picture.projection} projection (not kept: outputs are flat)")
    return lines
