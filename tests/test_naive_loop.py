"""benchmarks/pipeline.py's naive loop, the other side of issue 15's ``sharpen`` ratios: with
PyAV's defaults it writes colours a player shows shifted at HD sizes; with
``source_colours`` it writes the source's, as raypipe and ffmpeg do."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import pipeline  # noqa: E402

from raypipe.infer.models import resolve_model  # noqa: E402
from raypipe.testing import ClipSpec, decode_upright, ffprobe_video, make_clip, psnr  # noqa: E402


def test_the_naive_loop_with_source_colours_writes_what_a_player_shows_right(
    tmp_path: Path,
) -> None:
    spec = ClipSpec(width=1280, height=720, n_frames=4, fps=30, gop=4, crf=23, seed=7,
                    colour=("bt709", "bt709", "bt709", "tv"))  # fmt: skip
    clip = make_clip(tmp_path / "source.mp4", spec)
    setup = pipeline.Setup(frames=0, width=1280, height=720, gop=0, model="builtin:identity",
                           codec="libx264", crf=23, preset="veryfast", batch_size=8,
                           chunk_frames=0, workers=0, ray_num_cpus=0, pool_processes=0)  # fmt: skip
    model = resolve_model("builtin:identity")[0]
    source = decode_upright(clip)[0]  # as a player shows it
    first, pts, _ = decode_upright(clip, limit=2)  # what the benchmark's PSNR gate reads
    assert len(pts) == 2 and (first == source[:2]).all()
    shown = {}
    for colours in (False, True):
        out = tmp_path / f"out-{colours}.mp4"
        pipeline.run_naive(clip, out, setup, model, source_colours=colours)
        tags = ffprobe_video(out)
        assert (tags.primaries, tags.transfer, tags.matrix, tags.range) == (
            ("bt709", "bt709", "bt709", "tv") if colours else ("unknown",) * 4
        )
        shown[colours] = psnr(decode_upright(out)[0], source)
    # PyAV's defaults: BT.601 colours, untagged, which a player reads as BT.709 at 720p
    # (27.6 dB here); the source's colours: 30.6 dB, the encoder's loss alone
    assert shown[True] > shown[False] + 2.0, shown
